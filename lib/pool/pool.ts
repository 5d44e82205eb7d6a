// BufferPool: tiered size classes over page-aligned slabs, one byte budget,
// FIFO waiting when the budget is spent, shared by worker threads.
//
// The hot path (tryAcquire / release of a recycled slot) is plain JS on
// objects this thread owns: a native call alone costs as much as a whole
// pure-JS acquire+release here (docs/benchmark.md). Each slot keeps the Buffer
// view it last handed out and hands it out again when the size matches, so
// steady-state acquires create nothing for the GC.
//
// Threads: every thread maps its own slabs and keeps its own free lists (a
// Buffer cannot move between threads anyway: postMessage copies it). What the
// threads share is in pool-shared.ts: the budget, the waiting queue, the close
// flag and the statistics.
import os from 'node:os';
import { native } from '../binding';
import { IobufError, codedError, describeValue, validateBoolean, validateInteger, validateOneOf, validateOptions, validateView } from '../errors';
import type { IoVecArray } from '../iovec/array';
import type { Borrower, Loan } from '../lending';
import { cacheLineSize, hugePageSize, maxAllocationSize, pageSize } from '../memory';
import {
  type PooledSlab, type PooledSlot, forgetSlab, kSlot as pooledSlotKey, poolOf, rememberSlab, rememberStrictView,
} from '../pooled';
import { FixedBufferRegistration, fixedBufferOf } from '../uring/registration';
import { Field, MAX_CLASS_ROWS, MAX_THREADS, SharedState, ThreadField, Word } from './shared';
import { SharedBuffer } from './shared-buffer';

export type LeakDetection = 'off' | 'sample' | 'full';

export interface BufferPoolOptions {
  /** Ascending slot sizes in bytes. Default: powers of two from 256 B to 4 MiB. */
  sizeClasses?: number[];
  /** The budget: bytes the pool may take from the OS. Default: a quarter of RAM, at most 1 GiB. */
  maxMemory?: number;
  /** Idle bytes a thread keeps mapped for reuse; beyond it, idle slabs are unmapped. Default: maxMemory / 4. */
  retainIdle?: number;
  /** Slabs of 2 MiB and more use huge pages (hugetlb, else THP). Default true. */
  hugePages?: boolean;
  /** release() detaches the handed-out view. Default false. */
  strict?: boolean;
  /** Fill released buffers with this byte (true: 0xA5) to surface use after release. Default false. */
  poison?: boolean | number;
  /** 'sample' (default) tracks 1 acquire in 256, 'full' tracks every acquire with its stack. */
  leakDetection?: LeakDetection;
  /** Called for each leak found; default: a process warning with code IOBUF_LEAK. */
  onLeak?: (leak: LeakReport) => void;
}

export interface LeakReport {
  /** Bytes of the leaked buffer. */
  size: number;
  /** The stack of the acquire, when leakDetection is 'full'. */
  stack?: string;
}

export interface AcquireOptions {
  signal?: AbortSignal;
  /** Milliseconds to wait before rejecting with ERR_IOBUF_BUDGET_TIMEOUT. */
  timeout?: number;
}

export interface CloseOptions {
  /** Milliseconds to wait for outstanding buffers before rejecting with ERR_IOBUF_CLOSE_TIMEOUT. */
  timeout?: number;
  /** Free the memory now, detaching every outstanding buffer. */
  force?: boolean;
}

export interface SizeClassStats {
  /** Slot size in bytes; `Infinity` for the row of dedicated (oversize) allocations. */
  size: number;
  acquires: number;
  releases: number;
  /** Acquires served from a free list. */
  recycles: number;
  /** Acquires that had to take new memory from the OS. */
  misses: number;
  /** recycles / acquires (1 when there were none). */
  recycleRate: number;
  inUse: number;
  /** Bytes of the slots handed out (class size × inUse). */
  inUseBytes: number;
  /** Bytes mapped but not handed out. */
  idleBytes: number;
  /** Bytes of slabs mapped for this class. */
  osBytes: number;
  leaks: number;
}

export interface PoolStats extends Omit<SizeClassStats, 'size'> {
  maxMemory: number;
  /** Most bytes ever taken from the OS at once. */
  highWaterBytes: number;
  waiters: number;
  waits: number;
  waitTimeTotalMs: number;
  waitTimeMaxMs: number;
  waitTimeP99Ms: number;
  threads: number;
  classes: SizeClassStats[];
}

/** What a worker needs to share a pool: pass it with postMessage, then BufferPool.attach(handle). */
export interface BufferPoolHandle {
  readonly shared: SharedArrayBuffer;
  readonly options: Required<Omit<BufferPoolOptions, 'onLeak' | 'maxMemory'>>;
}

/** A pooled buffer that releases itself at the end of a `using` scope. */
export interface Lease extends Disposable {
  readonly buffer: Buffer;
  release(): void;
}

// ---------------------------------------------------------------------------
// Slabs and slots
// ---------------------------------------------------------------------------

/** lib/pooled.ts's key, as a constant of this module (release() reads it on every call). */
const kSlot = pooledSlotKey;
/** On a strict-mode view's own ArrayBuffer: the slab's ArrayBuffer, kept reachable. */
const kSlabKeepAlive = Symbol('iobuf.slabKeepAlive');
const SAMPLE_INTERVAL = 256;
/** The longest a blocked acquireSync sleeps before it looks at the queue again (see acquireSync). */
const WAIT_SLICE_MS = 1000;

/** Every view the pool hands out carries its slot: one property load finds it again (see release). */
type PooledView = Buffer & { [kSlot]?: Slot };

/**
 * Node's own Buffer class (Buffer[Symbol.species]): `new NodeBuffer(ab, offset,
 * length)` is what Buffer.from(ab, offset, length) does after its argument
 * checks, at about half the cost — the view made when an acquire's size
 * differs from the slot's last one. Falls back to Buffer.from where a runtime
 * does not expose it.
 */
const NodeBuffer: new (arrayBuffer: ArrayBuffer, offset: number, length: number) => Buffer = (() => {
  const species = (Buffer as unknown as Record<symbol, unknown>)[Symbol.species];
  if (typeof species === 'function' && species !== Buffer) {
    const Species = species as new (arrayBuffer: ArrayBuffer, offset: number, length: number) => Buffer;
    const probe = new Species(new ArrayBuffer(2), 1, 1);
    if (Buffer.isBuffer(probe) && probe.length === 1 && probe.byteOffset === 1) return Species;
  }
  return function (arrayBuffer: ArrayBuffer, offset: number, length: number) {
    return Buffer.from(arrayBuffer, offset, length);
  } as unknown as new (arrayBuffer: ArrayBuffer, offset: number, length: number) => Buffer;
})();

/**
 * One size class as this thread sees it. The counters are plain fields (the
 * cheapest thing to bump); housekeeping() copies them into this thread's
 * region of the shared block, where stats() in any thread reads them.
 */
class SizeClass {
  /** Free slots, used as a stack (the last released is the warmest); null for the oversize row. */
  readonly free: Slot[] | null;
  acquires = 0;
  releases = 0;
  misses = 0;
  leaks = 0;
  /** Buffers that were out when close({ force: true }) freed the memory. */
  forced = 0;
  osBytes = 0;
  /** Oversize row only: bytes of slots out, and of slots released but not yet unmapped. */
  oversizeInUseBytes = 0;
  oversizeIdleBytes = 0;
  /** Waiters on this thread that a released slot of this class may go to directly. */
  waiting = 0;
  /** Slots released while lent (see lib/lending.ts): out of the caller's hands, not yet reusable. */
  awaitingRepay = 0;

  constructor(
    readonly row: number,
    readonly size: number,      // Infinity for the oversize row
    readonly stride: number,    // bytes between slots (0 for the oversize row: per slab)
    readonly slabBytes: number,
  ) {
    this.free = Number.isFinite(size) ? [] : null;
  }

  get inUse(): number {
    return this.acquires - this.releases - this.leaks - this.forced;
  }

  /** Slots not free: handed out, or released but still lent. */
  get busySlots(): number {
    return this.inUse + this.awaitingRepay;
  }
}

interface Slab extends PooledSlab {
  readonly sizeClass: SizeClass;
  readonly slots: Slot[];
  readonly bytes: number;        // bytes mapped (a multiple of the page size)
  /** Slots not handed out; kept up to date for oversize slabs only (others count in trim()). */
  free: number;
  /** Loans of this slab's memory now (lib/lending.ts); while any, it is not unmapped. */
  loans: number;
  /** native.lend()'s token while loans > 0. */
  pinToken: number;
  /** Unmap it when the last loan is repaid (trim, close or an oversize return came while lent). */
  unmapWhenRepaid: boolean;
}

interface Slot extends PooledSlot {
  readonly sizeClass: SizeClass;
  readonly slab: Slab;
  /** The view handed out last; handed out again when the size matches (never in strict mode). */
  view: Buffer | null;
  /** view.length, kept here because a field load is cheaper than the typed-array getter. */
  viewLength: number;
  stack: string | undefined;
  /** Bumped whenever the slot is tracked, so a late leak report for an earlier owner is ignored. */
  generation: number;
  /** Loans of this slot's memory now; release() while lent defers the slot's return (see lib/lending.ts). */
  loans: number;
  /** The owner released it while lent: back to the pool when the last loan is repaid. */
  returnWhenRepaid: boolean;
}

interface Waiter {
  /** Its place in the pool's FIFO queue (an int32 that wraps: compare with ===). */
  ticket: number;
  size: number;
  count: number;   // > 1 for acquireMany
  sizeClass: SizeClass;
  /** Whether a released slot of its class may go straight to it (not for acquireMany). */
  takesHandoff: boolean;
  start: number;
  resolve(value: Buffer | Buffer[]): void;
  reject(error: Error): void;
  cleanup(): void;
}

const DEFAULT_CLASSES = Array.from({ length: 15 }, (_, i) => 256 << i);  // 256 B .. 4 MiB
const SMALL_SLAB = 64 * 1024;
const SLOTS_PER_SLAB = 32;
/**
 * The alignment O_DIRECT asks of memory: the device's logical block size,
 * 4096 bytes at most on the disks in use. Kept apart from the page size, which
 * is 16 or 64 KiB on some arm64 kernels.
 */
const DIRECT_IO_ALIGNMENT = 4096;
/** Slabs grow up to one huge page when huge pages are this big at most (2 MiB on x86-64, 32 MiB on 16 KiB-page arm64)… */
const LARGEST_HUGE_PAGE_SLAB = 32 * 1024 * 1024;
/** …and up to this otherwise (no huge pages, or the 512 MiB ones of 64 KiB-page arm64, too big for a slab). */
const PLAIN_SLAB_LIMIT = 2 * 1024 * 1024;

/** What the layout of a pool depends on in the machine (lib/memory.ts reads each from the kernel). */
export interface PageGeometry {
  pageSize: number;
  hugePageSize: number;
  cacheLineSize: number;
}

const systemGeometry: PageGeometry = { pageSize, hugePageSize, cacheLineSize };

/** Whether huge pages exist and are small enough for pool slabs to use. */
function slabsMayBeHuge(system: PageGeometry): boolean {
  return system.hugePageSize > system.pageSize && system.hugePageSize <= LARGEST_HUGE_PAGE_SLAB;
}

/**
 * The slot stride and slab bytes of the size class `size` in a pool of
 * `maxMemory` bytes. Slots of a page and more start on page boundaries, slots
 * of 4 KiB and more on multiples of 4096 (O_DIRECT, whatever the page size),
 * smaller ones on cache-line boundaries once they are that big. A slab holds
 * SLOTS_PER_SLAB slots, from 64 KiB up to one huge page (or PLAIN_SLAB_LIMIT),
 * and at most an eighth of the budget unless a single slot needs more.
 */
export function classLayout(size: number, maxMemory: number, system: PageGeometry = systemGeometry): { stride: number; slabBytes: number } {
  const stride = size >= system.pageSize ? roundUp(size, system.pageSize)
    : size >= DIRECT_IO_ALIGNMENT ? roundUp(size, DIRECT_IO_ALIGNMENT)
    : size >= system.cacheLineSize ? roundUp(size, system.cacheLineSize)
    : size;
  const limit = slabsMayBeHuge(system) ? Math.max(system.hugePageSize, SMALL_SLAB) : PLAIN_SLAB_LIMIT;
  const wanted = Math.min(Math.max(stride * SLOTS_PER_SLAB, SMALL_SLAB), limit);
  const capped = Math.max(stride, Math.min(wanted, Math.floor(maxMemory / 8)));
  return { stride, slabBytes: roundUp(Math.floor(capped / stride) * stride, system.pageSize) };
}

function defaultMaxMemory(): number {
  const constrained = (process as { constrainedMemory?: () => number | undefined }).constrainedMemory?.();
  const memory = constrained && constrained > 0 ? Math.min(constrained, os.totalmem()) : os.totalmem();
  return Math.max(pageSize, Math.min(2 ** 30, Math.floor(memory / 4 / pageSize) * pageSize));
}

function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}

const slotAddress = (slot: Slot) => slot.slab.address + slot.offset;
const byAddressDescending = (a: Slot, b: Slot) => slotAddress(b) - slotAddress(a);

/** Puts `slot` into a free list kept in descending address order (pop() takes the lowest). */
function insertByAddress(free: Slot[], slot: Slot): void {
  const address = slotAddress(slot);
  let low = 0;
  let high = free.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (slotAddress(free[middle]) > address) low = middle + 1;
    else high = middle;
  }
  free.splice(low, 0, slot);
}

function closedError(): IobufError {
  return new IobufError('The pool is closed', 'ERR_IOBUF_POOL_CLOSED');
}

function abortError(signal: AbortSignal): Error {
  const error = new Error('The operation was aborted', { cause: signal.reason }) as Error & { code: string };
  error.name = 'AbortError';
  error.code = 'ABORT_ERR';
  return error;
}

/** The caller's stack, without the pool's own frames. */
function acquireStack(): string {
  const lines = (new Error('acquired here').stack ?? '').split('\n');
  return [lines[0], ...lines.slice(1).filter((line) => !line.includes(__filename))].join('\n');
}


type SharedOptions = BufferPoolHandle['options'];

/**
 * Checks the options every thread of a pool shares and returns a copy: the
 * constructor's, and attach()'s from a handle that came through code the
 * attaching thread does not own (the copy is what is used, so a handle
 * altered after the check changes nothing).
 */
function checkSharedOptions(options: Partial<SharedOptions>, maxMemory: number, name: string): SharedOptions {
  validateOptions(options, name);
  const {
    sizeClasses = DEFAULT_CLASSES, hugePages = true, strict = false, poison = false, leakDetection = 'sample',
  } = options;
  if (!Array.isArray(sizeClasses) || sizeClasses.length === 0 || sizeClasses.length > MAX_CLASS_ROWS - 1) {
    throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected an array of 1 to ${MAX_CLASS_ROWS - 1} sizes for ${name}.sizeClasses but received ${describeValue(sizeClasses)}`);
  }
  const classes = [...sizeClasses];
  classes.forEach((size, i) => {
    validateInteger(size, `${name}.sizeClasses[${i}]`, i === 0 ? 1 : classes[i - 1] + 1, 2 ** 30);
  });
  if (roundUp(classes[0], pageSize) > maxMemory) {
    throw codedError(RangeError, 'ERR_OUT_OF_RANGE', `Expected options.maxMemory to hold at least one slab of the smallest size class (${roundUp(classes[0], pageSize)} bytes) but received ${maxMemory}`);
  }
  const { retainIdle = Math.floor(maxMemory / 4) } = options;
  validateInteger(retainIdle, `${name}.retainIdle`, 0, Number.MAX_SAFE_INTEGER);
  validateBoolean(hugePages, `${name}.hugePages`);
  validateBoolean(strict, `${name}.strict`);
  if (typeof poison !== 'boolean') validateInteger(poison, `${name}.poison`, 0, 255);
  validateOneOf(leakDetection, `${name}.leakDetection`, ['off', 'sample', 'full'] as const);
  return { sizeClasses: classes, retainIdle, hugePages, strict, poison, leakDetection };
}

/** What the constructor is given by attach(): a checked block and a checked copy of the options. */
interface Attaching {
  shared: SharedState;
  options: SharedOptions;
}

/** Set by BufferPool.attach() for the constructor it calls. */
let attaching: Attaching | null = null;

/** The pools this thread is a member of and has not left (woken when another thread departs). */
const memberPools = new Set<BufferPool>();

export class BufferPool {
  /** Slot sizes, ascending. */
  readonly sizeClasses: readonly number[];
  readonly maxMemory: number;
  readonly retainIdle: number;
  readonly strict: boolean;
  /** Pass to a worker with postMessage; `BufferPool.attach(handle)` there shares this pool. */
  readonly handle: BufferPoolHandle;

  private readonly shared: SharedState;
  private readonly control: Int32Array;
  /** This thread's statistics region in the shared block. */
  private readonly region: Float64Array;
  /** The size classes, then the oversize row. */
  private readonly classes: SizeClass[];
  private readonly oversize: SizeClass;
  /** The largest class whose slab fits the budget; bigger sizes get dedicated allocations. */
  private readonly largest: number;
  /** log2 of the smallest class when the ladder is consecutive powers of two, else -1. */
  private readonly powerShift: number;
  /** Power-of-two ladders: the class for sizes in (2^(k-1), 2^k] at index k; otherwise null. */
  private readonly classByLog2: (SizeClass | undefined)[] | null;
  private readonly hugePages: boolean;
  private readonly poisonByte: number;
  private readonly leakDetection: LeakDetection;
  private readonly onLeak: ((leak: LeakReport) => void) | undefined;
  private readonly leakRegistry: FinalizationRegistry<{ slot: Slot; generation: number }> | null;
  /** Counts acquires down to the next leak-tracked one; never reaches 0 with detection off. */
  private leakCountdown: number;
  /** Housekeeping (publishing counters, trimming idle memory) runs once per event-loop turn with releases. */
  private housekeepingScheduled = false;
  private readonly slabs = new Set<Slab>();
  /** This thread's waiters, in ticket order. */
  private readonly waiters: Waiter[] = [];
  /** True while release() may push straight onto a free list: no waiters here, not closing, no strict/poison work. */
  private quiet: boolean;
  private watching = false;
  /**
   * A ref'd timer held while this thread has waiters: a pending
   * Atomics.waitAsync does not keep a Node thread alive, so a worker whose
   * only pending work is `await pool.acquire()` would otherwise exit mid-wait.
   */
  private keepAlive: NodeJS.Timeout | null = null;
  /** An Atomics.waitAsync on the epoch is armed because this thread holds idle slabs (see watchIdle). */
  private watchingIdle = false;
  private closing: Promise<void> | null = null;
  /** Resolves `closing`. */
  private closed: (() => void) | null = null;
  private drained: (() => void) | null = null;
  /** close() unmapped (or deferred) everything: no acquire, no release from here on. */
  private freed = false;
  /** Every slab is unmapped and this thread left the pool's membership. */
  private left = false;
  /** close() was called on this pool object (in this thread). */
  private closedHere = false;
  /** Made by `new BufferPool` (its close() closes the pool for every thread), not by attach(). */
  private readonly owner: boolean;

  constructor(options: BufferPoolOptions = {}) {
    const attached = attaching;
    attaching = null;
    this.owner = attached === null;
    let shared: SharedState;
    let sharedOptions: SharedOptions;
    if (attached === null) {
      validateOptions(options, 'options');
      const { maxMemory = defaultMaxMemory() } = options;
      validateInteger(maxMemory, 'options.maxMemory', pageSize, (2 ** 31 - 1) * pageSize);
      const maxPages = Math.floor(maxMemory / pageSize);
      sharedOptions = checkSharedOptions(options, maxPages * pageSize, 'options');
      shared = SharedState.create(sharedOptions.sizeClasses.length + 1, maxPages);
    } else {
      ({ shared, options: sharedOptions } = attached);
    }
    if (options.onLeak !== undefined && typeof options.onLeak !== 'function') {
      throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected a function for options.onLeak but received ${describeValue(options.onLeak)}`);
    }
    const { sizeClasses, retainIdle, hugePages, strict, poison, leakDetection } = sharedOptions;
    this.handle = { shared: shared.buffer, options: { ...sharedOptions, sizeClasses: [...sizeClasses] } };
    this.shared = shared;
    this.control = shared.control;
    shared.join();  // from here on, the native side gives back what this thread holds if it dies
    this.region = shared.region(shared.regionIndex);

    this.sizeClasses = Object.freeze([...sizeClasses]);
    this.maxMemory = this.control[Word.MAX_PAGES] * pageSize;
    this.retainIdle = retainIdle;
    this.strict = strict;
    this.hugePages = hugePages;
    this.poisonByte = poison === true ? 0xa5 : poison === false ? -1 : poison;
    this.quiet = !strict && this.poisonByte < 0;
    this.leakDetection = leakDetection;
    this.onLeak = options.onLeak;
    this.leakCountdown = leakDetection === 'full' ? 1 : leakDetection === 'sample' ? SAMPLE_INTERVAL : -1;
    this.leakRegistry = leakDetection === 'off'
      ? null
      : new FinalizationRegistry((held) => this.leaked(held.slot, held.generation));
    this.classes = sizeClasses.map((size, row) => {
      const { stride, slabBytes } = classLayout(size, this.maxMemory);
      return new SizeClass(row, size, stride, slabBytes);
    });
    // A class whose slab cannot fit the budget (one slot of it is bigger than
    // maxMemory) could never be served: sizes above the largest class that
    // fits get a dedicated allocation instead, like sizes above every class.
    const fitting = this.classes.filter((sizeClass) => sizeClass.slabBytes <= this.maxMemory);
    this.largest = fitting[fitting.length - 1].size;
    this.oversize = new SizeClass(sizeClasses.length, Infinity, 0, 0);
    this.classes.push(this.oversize);
    const powers = sizeClasses.every((size, i) => Number.isInteger(Math.log2(size)) && (i === 0 || size === sizeClasses[i - 1] * 2));
    this.powerShift = powers ? Math.log2(sizeClasses[0]) : -1;
    this.classByLog2 = powers
      ? Array.from({ length: 33 }, (_, k) => this.classes.slice(0, -1).find((c) => c.size >= 2 ** k))
      : null;
    this.adoptRegion();
    memberPools.add(this);
  }

  /**
   * The region may have belonged to a thread that left: its counters carry
   * on here (they still add up in stats()), what it held does not. Buffers it
   * never released count as forced (gone with their thread).
   */
  private adoptRegion(): void {
    const region = this.region;
    for (const sizeClass of this.classes) {
      const base = sizeClass.row * Field.CLASS_FIELDS;
      sizeClass.acquires = region[base + Field.ACQUIRES];
      sizeClass.releases = region[base + Field.RELEASES];
      sizeClass.misses = region[base + Field.MISSES];
      sizeClass.leaks = region[base + Field.LEAKS];
      sizeClass.forced = sizeClass.acquires - sizeClass.releases - sizeClass.leaks;
    }
    this.publish();
  }

  /**
   * Joins, from another thread, the pool whose `handle` was passed in: the
   * same budget, waiting queue and statistics. Buffers stay with the thread
   * that acquired them (postMessage would copy a Buffer anyway); release them
   * there. Call close() before the thread ends; however it ends without
   * (return, process.exit(), an uncaught error, worker.terminate()), its
   * budget, its place in the queue and its statistics slot are given back.
   * The handle is checked (a forged or altered one throws
   * ERR_INVALID_ARG_TYPE / ERR_INVALID_ARG_VALUE and touches no shared state).
   */
  static attach(handle: BufferPoolHandle, options: Pick<BufferPoolOptions, 'onLeak'> = {}): BufferPool {
    if (handle === null || typeof handle !== 'object') {
      throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected a BufferPool handle (pool.handle) for handle but received ${describeValue(handle)}`);
    }
    const { shared, options: sharedOptions } = handle;
    if (!(shared instanceof SharedArrayBuffer)) {
      throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected a SharedArrayBuffer for handle.shared but received ${describeValue(shared)}`);
    }
    if (sharedOptions === null || typeof sharedOptions !== 'object' || !Array.isArray(sharedOptions.sizeClasses)) {
      throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected the options of a BufferPool for handle.options but received ${describeValue(sharedOptions)}`);
    }
    validateOptions(options, 'options');
    const copy = { ...sharedOptions, sizeClasses: [...sharedOptions.sizeClasses] };
    const block = SharedState.open(shared, copy.sizeClasses.length + 1);
    const maxMemory = Atomics.load(block.control, Word.MAX_PAGES) * pageSize;
    if (maxMemory < pageSize) throw codedError(TypeError, 'ERR_INVALID_ARG_VALUE', 'Expected a BufferPool handle for handle but received one whose budget is empty');
    const checked = checkSharedOptions(copy, maxMemory, 'handle.options');
    if (block.closed) throw closedError();
    attaching = { shared: block, options: checked };
    try {
      return new BufferPool({ onLeak: options.onLeak });
    } finally {
      attaching = null;
    }
  }

  // -------------------------------------------------------------------------
  // Hot path: plain JS on this thread's own objects
  // -------------------------------------------------------------------------

  /** A Buffer of exactly `size` bytes, or null when the budget is spent. Never waits. */
  tryAcquire(size: number): Buffer | null {
    if (this.control[Word.CLOSED] !== 0) throw closedError();
    const table = this.classByLog2;
    const sizeClass = table !== null && typeof size === 'number' && (size | 0) === size && size > 0 && size <= this.largest
      ? table[32 - Math.clz32(size - 1)] : this.classOf(size);
    if (sizeClass !== undefined) {
      const slot = sizeClass.free!.pop();
      if (slot !== undefined) {
        const view = slot.view;
        if (view !== null && slot.viewLength === size && this.leakCountdown !== 1) {
          this.leakCountdown--;
          sizeClass.acquires++;
          slot.owner = view;
          return view;
        }
        return this.handOut(slot, size);
      }
    }
    return this.acquireNew(size, sizeClass, null, 1) as Buffer | null;
  }

  /** Gives `buffer` back. It must be the very Buffer an acquire returned, not a slice of it. */
  release(buffer: Buffer): void {
    // Not buffer.buffer/byteOffset: on a Buffer those getters cost more than the whole release.
    const slot = (buffer as PooledView | null | undefined)?.[kSlot];
    if (slot === undefined || slot.owner !== buffer || slot.pool !== this) {
      this.checkUnusualRelease(buffer, slot);  // throws, or re-arms a leak-tracked slot
    }
    const owned = slot!;
    owned.owner = null;
    const sizeClass = owned.sizeClass;
    sizeClass.releases++;
    const free = sizeClass.free;
    if (this.quiet && free !== null && owned.loans === 0 && this.control[Word.WAITERS] === 0) free.push(owned);
    else this.releaseSlowly(owned, buffer);
    if (!this.housekeepingScheduled) this.scheduleHousekeeping();
  }

  private handOut(slot: Slot, size: number): Buffer {
    let view = slot.view;
    if (view === null || slot.viewLength !== size) view = this.makeView(slot, size);
    slot.sizeClass.acquires++;
    if (--this.leakCountdown === 0) this.track(slot, view);
    else slot.owner = view;
    return view;
  }

  /** The size class for `size`, or undefined when `size` needs the slow path (oversize or invalid). */
  private classOf(size: number): SizeClass | undefined {
    // typeof first: `size | 0` throws a code-less TypeError for a BigInt.
    if (typeof size !== 'number' || (size | 0) !== size || size <= 0 || size > this.largest) return undefined;
    const classes = this.classes;
    if (this.powerShift >= 0) {
      return classes[size <= this.sizeClasses[0] ? 0 : 32 - Math.clz32(size - 1) - this.powerShift];
    }
    let row = 0;
    while (classes[row].size < size) row++;
    return classes[row];
  }

  private makeView(slot: Slot, size: number): Buffer {
    const slab = slot.slab;
    let view: Buffer;
    if (this.strict) {
      // A view with an ArrayBuffer of its own, which release() detaches. That
      // ArrayBuffer owns no memory; it holds the slab's ArrayBuffer, so the
      // slab cannot be unmapped while the view is reachable.
      view = native.viewOf(slab.arrayBuffer, slot.offset, size);
      Object.defineProperty(view.buffer, kSlabKeepAlive, { value: slab.arrayBuffer });
      rememberStrictView(view.buffer as ArrayBuffer, slot);
    } else {
      view = new NodeBuffer(slab.arrayBuffer, slot.offset, size);
    }
    (view as PooledView)[kSlot] = slot;
    slot.view = view;
    slot.viewLength = size;
    return view;
  }

  // -------------------------------------------------------------------------
  // Slow path: releases with work to do, new slabs, oversize allocations, misuse
  // -------------------------------------------------------------------------

  /** release() for strict or poisoning pools, oversize slots, and while waiters (in any thread) or close() wait. */
  private releaseSlowly(slot: Slot, buffer: Buffer): void {
    if (slot.loans > 0) {
      // Lent to the kernel or libuv (lib/lending.ts): the caller's ownership
      // ended above, but the memory is neither detached, poisoned nor reused
      // until the last loan is repaid (repaySlot finishes the release then).
      slot.view = buffer;
      slot.returnWhenRepaid = true;
      slot.sizeClass.awaitingRepay++;
      return;
    }
    this.finishRelease(slot, buffer);
  }

  private finishRelease(slot: Slot, buffer: Buffer): void {
    if (this.strict) {
      native.detach(buffer.buffer as ArrayBuffer);
      slot.view = null;
    } else if (this.poisonByte >= 0) {
      buffer.fill(this.poisonByte);
    }
    this.returnSlot(slot);
    // Another thread waits for budget: if this release left its slab wholly
    // idle, unmap it now rather than at the end of the turn.
    if (this.control[Word.WAITERS] !== 0 && this.waiters.length === 0) this.trim(0, undefined);
  }

  /** A slot is back (released, or reclaimed from a leak): to a waiter, a free list, or the OS. */
  private returnSlot(slot: Slot): void {
    const sizeClass = slot.sizeClass;
    if (sizeClass.waiting !== 0) {
      this.handToWaiter(slot, sizeClass);
    } else if (sizeClass.free === null) {
      const slab = slot.slab;
      slab.free++;
      sizeClass.oversizeInUseBytes -= slab.stride;
      sizeClass.oversizeIdleBytes += slab.stride;
      if (slab.free === slab.slots.length) {
        this.unmap(slab);
        this.serveWaiters();
      }
    } else if (!this.closedHere) {
      // Someone waits for budget: reuse lowest addresses first, so that
      // the slabs at the top drain under churn and can be given back.
      if (this.control[Word.WAITERS] !== 0) insertByAddress(sizeClass.free, slot);
      else sizeClass.free.push(slot);
    }
    if (this.drained !== null && this.inUseHere() === 0) this.drained();
  }

  /**
   * Maps new memory for `count` buffers of `size` bytes (`sizeClass`
   * undefined: validate `size` first). `ticket` is the caller's place in the
   * waiting queue, null for a caller that does not wait. Returns null when the
   * budget does not allow it now; nothing is counted then.
   */
  private acquireNew(size: number, sizeClass: SizeClass | undefined, ticket: number | null, count: number): Buffer | Buffer[] | null {
    if (sizeClass === undefined) {
      validateInteger(size, 'size', 1, Math.min(this.maxMemory, maxAllocationSize));
      sizeClass = this.classFor(size);
    }
    if (this.closedHere) throw closedError();
    const oversize = sizeClass === this.oversize;
    if (!oversize && count === 1) {
      const slot = sizeClass.free!.pop();
      if (slot !== undefined) return this.handOut(slot, size);
    }
    if (!this.shared.mayTakeBudget(ticket)) return null;
    const stride = oversize ? roundUp(size, pageSize) : sizeClass.stride;
    const bytes = count > 1 || oversize ? roundUp(stride * count, pageSize) : sizeClass.slabBytes;
    if (bytes > this.maxMemory) {
      throw codedError(RangeError, 'ERR_OUT_OF_RANGE', `Expected at most ${this.maxMemory} bytes (options.maxMemory) for count × size but received ${stride * count}`);
    }
    if (bytes > maxAllocationSize) {  // the buffers share one region, which is one Buffer
      throw codedError(RangeError, 'ERR_OUT_OF_RANGE', `Expected at most ${maxAllocationSize} bytes (the largest Buffer) for count × size but received ${stride * count}`);
    }
    const pages = bytes / pageSize;
    if (!this.shared.reserve(pages)) {
      this.trim(0, sizeClass);  // this thread's idle slabs of other classes are budget too
      if (!this.shared.reserve(pages)) return null;
    }
    let arrayBuffer: ArrayBuffer;
    try {
      // Any slab as large as a huge page asks for huge pages (when the kernel has any).
      const memory = this.hugePages && hugePageSize > pageSize && bytes >= hugePageSize
        ? native.mapHuge(bytes, 2 /* down to normal pages */, 0)
        : native.mapAligned(bytes, pageSize, 0);
      arrayBuffer = memory.buffer as ArrayBuffer;
    } catch (error) {
      this.shared.unreserve(pages);
      throw error;
    }
    const slab: Slab = {
      pool: this, arrayBuffer, address: native.addressOf(arrayBuffer), sizeClass, stride, slots: [], bytes,
      free: 0, unmapped: false, loans: 0, pinToken: 0, unmapWhenRepaid: false, dedicated: oversize, fixedIndex: -1,
    };
    rememberSlab(slab);
    const slotCount = count > 1 || oversize ? count : Math.floor(bytes / stride);
    for (let i = 0; i < slotCount; i++) {
      slab.slots.push({
        pool: this, sizeClass, slab, offset: i * stride, view: null, viewLength: 0, owner: null,
        tracked: null, stack: undefined, generation: 0,
        loans: 0, returnWhenRepaid: false,
      });
    }
    this.slabs.add(slab);
    sizeClass.osBytes += bytes;
    sizeClass.misses += count;
    if (oversize) sizeClass.oversizeInUseBytes += count * stride;
    // Hand out the first `count` slots; the rest (of a shared slab) are free, lowest on top.
    for (let i = slotCount - 1; i >= count; i--) sizeClass.free!.push(slab.slots[i]);
    const views = slab.slots.slice(0, count).map((slot) => this.handOut(slot, size));
    this.publish();
    return count > 1 ? views : views[0];
  }

  private classFor(size: number): SizeClass {
    return size > this.largest ? this.oversize : this.classOf(size)!;
  }

  /** Throws the right error for a release that failed the fast checks, unless it is a leak-tracked buffer. */
  private checkUnusualRelease(buffer: Buffer, slot: Slot | undefined): void {
    if (!ArrayBuffer.isView(buffer)) {
      throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected a Buffer from this pool for buffer but received ${buffer === null ? 'null' : typeof buffer}`);
    }
    if (this.freed) throw closedError();
    if (slot !== undefined && slot.pool === this) {
      if (slot.tracked !== null && slot.tracked.deref() === buffer) {
        this.leakRegistry!.unregister(slot);
        slot.tracked = null;
        slot.stack = undefined;
        slot.view = buffer;
        slot.owner = buffer;
        return;
      }
      // (In the default mode the same Buffer object is handed out again, so a
      // second release is recognised only while its slot is still free.)
      if ((slot.owner === null && slot.tracked === null) || (this.strict && buffer.buffer.byteLength === 0)) {
        throw new IobufError('This buffer was released already', 'ERR_IOBUF_DOUBLE_RELEASE');
      }
    }
    throw new IobufError('This buffer did not come from this pool, or is a slice of a pooled buffer (release the Buffer that acquire returned)', 'ERR_IOBUF_FOREIGN_BUFFER');
  }

  // -------------------------------------------------------------------------
  // Housekeeping: counters to the shared block, idle memory back to the OS
  // -------------------------------------------------------------------------

  private scheduleHousekeeping(): void {
    this.housekeepingScheduled = true;
    setImmediate(() => {
      this.housekeepingScheduled = false;
      if (!this.freed) this.housekeeping();
    });
  }

  /** Publishes this thread's counters; gives idle slabs back when over retainIdle or other threads wait. */
  private housekeeping(): void {
    this.publish();
    const waiting = this.control[Word.WAITERS] !== 0;
    if (waiting) this.orderFreeLists();
    if ((waiting || this.idleHere() > this.retainIdle) && this.trim(waiting ? 0 : this.retainIdle, undefined)) {
      this.serveWaiters();
    }
    this.watchIdle();
  }

  /**
   * While this thread keeps idle slabs (within retainIdle), a waiter in
   * another thread may need that budget, and this thread may have nothing
   * else to do (no release, so no housekeeping). So it waits, asynchronously,
   * on the epoch word that every new waiter bumps, and gives its wholly idle
   * slabs back when someone waits. The epoch moves only when budget is
   * returned or a waiter comes or goes, never per acquire/release.
   */
  private watchIdle(): void {
    if (this.watchingIdle || this.freed) return;
    // The epoch is read before WAITERS is looked at: a waiter that comes after
    // the look has bumped it, so the wait below returns at once.
    const epoch = Atomics.load(this.control, Word.EPOCH);
    if (this.control[Word.WAITERS] !== 0 && this.waiters.length === 0) this.trim(0, undefined);
    if (this.idleHere() === 0) return;
    this.watchingIdle = true;
    this.afterEpoch(epoch, () => {
      this.watchingIdle = false;
      this.watchIdle();
    });
  }

  /** Runs `then` once the epoch word is no longer `epoch` (soon, if it has moved already). */
  private afterEpoch(epoch: number, then: () => void): void {
    const result = Atomics.waitAsync(this.control, Word.EPOCH, epoch);
    if (result.async) void result.value.then(then);
    else queueMicrotask(then);
  }

  /** Orders every free list so that pop() takes the lowest address (see returnSlot). */
  private orderFreeLists(): void {
    for (const sizeClass of this.classes) sizeClass.free?.sort(byAddressDescending);
  }

  private publish(): void {
    const region = this.region;
    for (const sizeClass of this.classes) {
      const base = sizeClass.row * Field.CLASS_FIELDS;
      const oversize = sizeClass === this.oversize;
      region[base + Field.ACQUIRES] = sizeClass.acquires;
      region[base + Field.RELEASES] = sizeClass.releases;
      region[base + Field.MISSES] = sizeClass.misses;
      region[base + Field.IN_USE] = sizeClass.inUse;
      region[base + Field.IN_USE_BYTES] = oversize ? sizeClass.oversizeInUseBytes : sizeClass.inUse * sizeClass.size;
      region[base + Field.OS_BYTES] = sizeClass.osBytes;
      region[base + Field.IDLE_BYTES] = oversize ? sizeClass.oversizeIdleBytes : sizeClass.osBytes - sizeClass.busySlots * sizeClass.stride;
      region[base + Field.LEAKS] = sizeClass.leaks;
    }
  }

  /** Buffers this thread has out. */
  private inUseHere(): number {
    let inUse = 0;
    for (const sizeClass of this.classes) inUse += sizeClass.inUse;
    return inUse;
  }

  /** Bytes this thread has mapped and not handed out. */
  private idleHere(): number {
    let idle = this.oversize.oversizeIdleBytes;
    for (const sizeClass of this.classes) {
      if (sizeClass !== this.oversize) idle += sizeClass.osBytes - sizeClass.busySlots * sizeClass.stride;
    }
    return idle;
  }

  /**
   * Unmaps wholly idle slabs, except of `keep`, until at most `retain` idle
   * bytes are left; true when it unmapped any. It serves no waiter itself
   * (callers do, once it returns): serving from inside the loop would re-enter
   * acquireNew → trim while this loop still holds its list of slabs.
   */
  private trim(retain: number, keep: SizeClass | undefined): boolean {
    let idle = this.idleHere();
    if (idle <= retain) return false;
    let unmapped = false;
    // Free slots per slab, counted here rather than on every acquire and release.
    const freeCounts = new Map<Slab, number>();
    for (const sizeClass of this.classes) {
      if (sizeClass === keep || sizeClass.free === null) continue;
      for (const slot of sizeClass.free) freeCounts.set(slot.slab, (freeCounts.get(slot.slab) ?? 0) + 1);
    }
    for (const [slab, free] of freeCounts) {
      if (idle <= retain) break;
      // Lent memory stays; registered slabs are pinned until freeAll.
      if (free !== slab.slots.length || slab.loans > 0 || slab.fixedIndex >= 0) continue;
      const list = slab.sizeClass.free!;
      let kept = 0;
      for (let i = 0; i < list.length; i++) if (list[i].slab !== slab) list[kept++] = list[i];
      list.length = kept;
      slab.free = free;
      idle -= slab.bytes;
      this.unmap(slab);
      unmapped = true;
    }
    return unmapped;
  }

  /** Gives a slab back to the OS and its pages to the budget; a lent slab goes when its last loan is repaid. */
  private unmap(slab: Slab): void {
    if (slab.loans > 0) {
      slab.unmapWhenRepaid = true;
      return;
    }
    const sizeClass = slab.sizeClass;
    sizeClass.osBytes -= slab.bytes;
    if (sizeClass === this.oversize) sizeClass.oversizeIdleBytes -= slab.free * slab.stride;
    this.slabs.delete(slab);
    slab.unmapped = true;
    forgetSlab(slab);
    native.free(slab.arrayBuffer);
    this.publish();
    this.shared.unreserve(slab.bytes / pageSize);
  }

  // -------------------------------------------------------------------------
  // Waiting
  // -------------------------------------------------------------------------

  /** A Buffer of exactly `size` bytes; waits (FIFO) while the budget is spent. */
  acquire(size: number, options?: AcquireOptions): Promise<Buffer> {
    return this.enqueue(size, 1, options) as Promise<Buffer>;
  }

  /** `count` Buffers of `size` bytes carved from one contiguous region, reserved at once; waits like acquire. */
  acquireMany(count: number, size: number, options?: AcquireOptions): Promise<Buffer[]> {
    try {
      validateInteger(count, 'count', 1, 2 ** 20);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.enqueue(size, count, options) as Promise<Buffer[]>;
  }

  /** acquireMany without waiting: null when the budget does not allow it now. */
  tryAcquireMany(count: number, size: number): Buffer[] | null {
    if (this.control[Word.CLOSED] !== 0) throw closedError();
    validateInteger(count, 'count', 1, 2 ** 20);
    validateInteger(size, 'size', 1, Math.min(this.maxMemory, maxAllocationSize));
    if (count === 1) {
      const buffer = this.tryAcquire(size);
      return buffer === null ? null : [buffer];
    }
    return this.acquireNew(size, this.classFor(size), null, count) as Buffer[] | null;
  }

  private enqueue(size: number, count: number, options: AcquireOptions = {}): Promise<Buffer | Buffer[]> {
    try {
      validateOptions(options, 'options');
      const { signal, timeout } = options;
      if (timeout !== undefined) validateInteger(timeout, 'options.timeout', 0, 2 ** 31 - 1);
      if (signal !== undefined && !(signal instanceof AbortSignal)) {
        throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected an AbortSignal for options.signal but received ${describeValue(signal)}`);
      }
      if (signal?.aborted) throw abortError(signal);
      const ready = count === 1 ? this.tryAcquire(size) : this.tryAcquireMany(count, size);
      if (ready !== null) return Promise.resolve(ready);
      const ticket = this.shared.takeTicket();
      if (ticket === null) throw new IobufError('Too many waiters on this pool', 'ERR_IOBUF_UNSUPPORTED');
      this.orderFreeLists();
      return new Promise((resolve, reject) => {
        let timer: NodeJS.Timeout | undefined;
        const sizeClass = this.classFor(size);
        const waiter: Waiter = {
          ticket, size, count, sizeClass, takesHandoff: count === 1 && sizeClass !== this.oversize,
          start: performance.now(), resolve, reject,
          cleanup: () => {
            if (timer !== undefined) clearTimeout(timer);
            signal?.removeEventListener('abort', onAbort);
          },
        };
        const giveUp = (error: Error) => {
          if (this.removeWaiter(waiter)) reject(error);
        };
        const onAbort = () => giveUp(abortError(signal!));
        if (timeout !== undefined) {
          timer = setTimeout(() => giveUp(new IobufError(`No memory became free within ${timeout} ms`, 'ERR_IOBUF_BUDGET_TIMEOUT')), timeout);
        }
        signal?.addEventListener('abort', onAbort, { once: true });
        this.waiters.push(waiter);
        if (waiter.takesHandoff) sizeClass.waiting++;
        this.updateQuiet();
        this.serveWaiters();
        this.watch();
      });
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Whether release() can take the plain path. */
  private updateQuiet(): void {
    this.quiet = this.waiters.length === 0 && !this.closedHere && !this.strict && this.poisonByte < 0;
  }

  /** Takes `waiter` out of the queue; false when it was served or removed already. */
  private removeWaiter(waiter: Waiter): boolean {
    const index = this.waiters.indexOf(waiter);
    if (index < 0) return false;
    this.waiters.splice(index, 1);
    if (waiter.takesHandoff) waiter.sizeClass.waiting--;
    this.updateQuiet();
    waiter.cleanup();
    this.shared.finishTicket(waiter.ticket);
    return true;
  }

  private settle(waiter: Waiter, value: Buffer | Buffer[]): void {
    this.removeWaiter(waiter);
    this.recordWait(performance.now() - waiter.start);
    waiter.resolve(value);
  }

  private recordWait(milliseconds: number): void {
    const region = this.region;
    const base = this.classes.length * Field.CLASS_FIELDS;
    region[base + ThreadField.WAITS]++;
    region[base + ThreadField.WAIT_TOTAL_MS] += milliseconds;
    if (milliseconds > region[base + ThreadField.WAIT_MAX_MS]) region[base + ThreadField.WAIT_MAX_MS] = milliseconds;
    const next = region[base + ThreadField.WAIT_SAMPLE_NEXT];
    region[base + ThreadField.WAIT_SAMPLES_START + next] = milliseconds;
    region[base + ThreadField.WAIT_SAMPLE_NEXT] = (next + 1) % ThreadField.WAIT_SAMPLE_COUNT;
    region[base + ThreadField.WAIT_SAMPLES] = Math.min(region[base + ThreadField.WAIT_SAMPLES] + 1, ThreadField.WAIT_SAMPLE_COUNT);
  }

  /** A released slot goes straight to this thread's earliest waiter of its class. */
  private handToWaiter(slot: Slot, sizeClass: SizeClass): void {
    const waiter = this.waiters.find((candidate) => candidate.takesHandoff && candidate.sizeClass === sizeClass)!;
    this.settle(waiter, this.handOut(slot, waiter.size));
  }

  /** Serves this thread's waiters in ticket order for as long as memory allows. */
  private serveWaiters(): void {
    while (this.waiters.length > 0 && !this.freed) {
      const waiter = this.waiters[0];
      let value: Buffer | Buffer[] | null;
      try {
        value = this.acquireNew(waiter.size, waiter.sizeClass, waiter.ticket, waiter.count);
      } catch (error) {
        if (this.removeWaiter(waiter)) waiter.reject(error as Error);
        continue;
      }
      if (value === null) break;
      this.settle(waiter, value);
    }
    // The head waits for new budget; free slots need none, and go to the
    // earliest waiter of their class behind it (a newcomer would otherwise
    // take them first).
    for (let i = 1; i < this.waiters.length; i++) {
      const waiter = this.waiters[i];
      const free = waiter.sizeClass.free;
      if (!waiter.takesHandoff || free === null || free.length === 0) continue;
      this.settle(waiter, this.handOut(free.pop()!, waiter.size));
      i--;  // settle() took it out of the queue
    }
  }

  /** While this thread has waiters, look again whenever any thread frees budget or a ticket finishes. */
  private watch(): void {
    if (this.waiters.length === 0) {
      if (this.keepAlive !== null) clearInterval(this.keepAlive);
      this.keepAlive = null;
      return;
    }
    if (this.watching) return;
    // The epoch is read before the attempt: budget given back after the
    // attempt has bumped it, so the wait below returns at once (reading it
    // after the attempt could sleep through that release until a timeout).
    const epoch = Atomics.load(this.control, Word.EPOCH);
    if (this.control[Word.CLOSED] !== 0) this.rejectWaiters();
    else this.serveWaiters();
    if (this.waiters.length === 0) {
      this.watch();
      return;
    }
    this.keepAlive ??= setInterval(() => {}, 2 ** 30);
    this.watching = true;
    this.afterEpoch(epoch, () => {
      this.watching = false;
      this.watch();
    });
  }

  private rejectWaiters(): void {
    for (const waiter of [...this.waiters]) {
      if (this.removeWaiter(waiter)) waiter.reject(closedError());
    }
  }

  /**
   * Blocks this thread until a Buffer of exactly `size` bytes is free; meant
   * for worker threads. Only another thread can free memory while this one is
   * blocked, so when no other thread shares the pool (as on a main thread
   * with no workers attached), or when this thread's own acquire() calls are
   * queued ahead, it throws ERR_IOBUF_WOULD_DEADLOCK at once instead of hanging.
   */
  acquireSync(size: number, options: Pick<AcquireOptions, 'timeout'> = {}): Buffer {
    validateOptions(options, 'options');
    const { timeout = Infinity } = options;
    if (timeout !== Infinity) validateInteger(timeout, 'options.timeout', 0, 2 ** 31 - 1);
    const ready = this.tryAcquire(size);
    if (ready !== null) return ready;
    if (this.waiters.length > 0) {
      throw new IobufError('acquireSync would wait behind this thread\'s own pending acquire() calls, which cannot run while it blocks', 'ERR_IOBUF_WOULD_DEADLOCK');
    }
    if (Atomics.load(this.control, Word.THREADS) <= 1) {
      throw new IobufError('acquireSync would wait forever: no other thread shares this pool, so nothing can free memory while this thread blocks', 'ERR_IOBUF_WOULD_DEADLOCK');
    }
    const ticket = this.shared.takeTicket();
    if (ticket === null) throw new IobufError('Too many waiters on this pool', 'ERR_IOBUF_UNSUPPORTED');
    this.orderFreeLists();
    const start = performance.now();
    const sizeClass = this.classFor(size);
    try {
      for (;;) {
        const epoch = Atomics.load(this.control, Word.EPOCH);
        if (this.control[Word.CLOSED] !== 0) throw closedError();
        const buffer = this.acquireNew(size, sizeClass, ticket, 1) as Buffer | null;
        if (buffer !== null) {
          this.recordWait(performance.now() - start);
          return buffer;
        }
        const remaining = start + timeout - performance.now();
        if (remaining <= 0) throw new IobufError(`No memory became free within ${timeout} ms`, 'ERR_IOBUF_BUDGET_TIMEOUT');
        if (Atomics.load(this.control, Word.THREADS) <= 1) {
          throw new IobufError('acquireSync would wait forever: every other thread sharing this pool has left it', 'ERR_IOBUF_WOULD_DEADLOCK');
        }
        // A thread that dies without JavaScript is woken for by native code
        // through the others' event loops; if every other thread is blocked
        // too, nobody can, so no single wait lasts longer than a slice.
        Atomics.wait(this.control, Word.EPOCH, epoch, Math.min(remaining, WAIT_SLICE_MS));
      }
    } finally {
      this.shared.finishTicket(ticket);
    }
  }

  // -------------------------------------------------------------------------
  // Scoped use and leaks
  // -------------------------------------------------------------------------

  /** tryAcquire as a Lease, for `using lease = pool.tryLease(n)`: released at scope exit. */
  tryLease(size: number): Lease | null {
    const buffer = this.tryAcquire(size);
    return buffer === null ? null : this.leaseOf(buffer);
  }

  /** acquire as a Lease: `using lease = await pool.lease(4096)`. */
  async lease(size: number, options?: AcquireOptions): Promise<Lease> {
    return this.leaseOf(await this.acquire(size, options));
  }

  /**
   * Makes `buffer` (a Buffer this pool has out, the very one an acquire
   * returned) shareable: the caller's ownership moves to the returned handle,
   * `handle.retain()` makes more handles, and the buffer comes back to the
   * pool when every handle has been released. Throws
   * ERR_IOBUF_FOREIGN_BUFFER for anything else (a slice, a released buffer,
   * another pool's).
   */
  share(buffer: Buffer): SharedBuffer {
    validateView(buffer, 'buffer');
    if (poolOf(buffer) !== this || !Buffer.isBuffer(buffer)) {
      throw new IobufError('share() takes a Buffer this pool has out (the very Buffer an acquire returned, not a slice)', 'ERR_IOBUF_FOREIGN_BUFFER');
    }
    return new SharedBuffer(buffer, this);
  }

  private leaseOf(buffer: Buffer): Lease {
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.release(buffer);
    };
    return { buffer, release, [Symbol.dispose]: release };
  }

  /** The pool holds this buffer only weakly while it is out, so losing it can be noticed. */
  private track(slot: Slot, view: Buffer): void {
    this.leakCountdown = this.leakDetection === 'full' ? 1 : SAMPLE_INTERVAL;
    slot.owner = null;  // held weakly through slot.tracked
    slot.view = null;
    slot.stack = this.leakDetection === 'full' ? acquireStack() : undefined;
    // Registered only while this tracked acquire is out (release unregisters
    // it): the registry holds as many entries as tracked buffers are out,
    // however many views varying sizes make. 1 acquire in 256 pays for it.
    slot.generation++;
    slot.tracked = new WeakRef(view);
    this.leakRegistry!.register(view, { slot, generation: slot.generation }, slot);
  }

  /**
   * A tracked buffer was garbage-collected while out: report it and take its
   * slot back. (A slice of the lost buffer that is still alive would now see
   * the next owner's bytes; strict mode rules that out.)
   */
  private leaked(slot: Slot, generation: number): void {
    if (slot.tracked === null || slot.generation !== generation || slot.slab.unmapped) return;
    const report: LeakReport = { size: slot.viewLength };
    if (slot.stack !== undefined) report.stack = slot.stack;
    slot.sizeClass.leaks++;
    slot.owner = null;
    slot.tracked = null;
    slot.stack = undefined;
    this.returnSlot(slot);
    this.publish();
    if (this.onLeak !== undefined) {
      this.onLeak(report);
    } else {
      const where = report.stack !== undefined ? `\n${report.stack}` : " (leakDetection: 'full' records where it was acquired)";
      process.emitWarning(`A pooled buffer of ${report.size} bytes was garbage-collected without release()${where}`, { code: 'IOBUF_LEAK' });
    }
  }

  // -------------------------------------------------------------------------
  // Statistics and close
  // -------------------------------------------------------------------------

  /**
   * Counters for the whole pool (every thread sharing it), in total and per
   * size class. This thread's are exact; another thread's are as of the end
   * of its last event-loop turn (or its last miss, wait or close).
   */
  stats(): PoolStats {
    this.publish();
    const shared = this.shared;
    const classes: SizeClassStats[] = this.classes.map((sizeClass) => {
      // Counters add up over every thread that ever used the pool; what is
      // held now only over the threads that are members now.
      const counter = (name: number) => shared.sum(name, sizeClass.row);
      const held = (name: number) => shared.sumHeld(name, sizeClass.row);
      const acquires = counter(Field.ACQUIRES);
      const misses = counter(Field.MISSES);
      return {
        size: sizeClass.size,
        acquires, releases: counter(Field.RELEASES), recycles: acquires - misses, misses,
        recycleRate: acquires === 0 ? 1 : (acquires - misses) / acquires,
        inUse: held(Field.IN_USE), inUseBytes: held(Field.IN_USE_BYTES),
        idleBytes: held(Field.IDLE_BYTES), osBytes: held(Field.OS_BYTES), leaks: counter(Field.LEAKS),
      };
    });
    const total = (key: keyof SizeClassStats) => classes.reduce((sum, row) => sum + (row[key] as number), 0);
    const threadRow = this.classes.length;
    const samples: number[] = [];
    let waitTimeMaxMs = 0;
    for (let index = 0; index < MAX_THREADS; index++) {
      const region = shared.region(index);
      const base = threadRow * Field.CLASS_FIELDS;
      waitTimeMaxMs = Math.max(waitTimeMaxMs, region[base + ThreadField.WAIT_MAX_MS]);
      for (let i = 0; i < region[base + ThreadField.WAIT_SAMPLES]; i++) samples.push(region[base + ThreadField.WAIT_SAMPLES_START + i]);
    }
    samples.sort((a, b) => a - b);
    const acquires = total('acquires');
    const misses = total('misses');
    return {
      maxMemory: this.maxMemory,
      acquires, releases: total('releases'), recycles: acquires - misses, misses,
      recycleRate: acquires === 0 ? 1 : (acquires - misses) / acquires,
      inUse: total('inUse'), inUseBytes: total('inUseBytes'), idleBytes: total('idleBytes'),
      osBytes: Atomics.load(this.control, Word.RESERVED_PAGES) * pageSize,
      highWaterBytes: Atomics.load(this.control, Word.HIGH_WATER_PAGES) * pageSize,
      leaks: total('leaks'),
      waiters: Atomics.load(this.control, Word.WAITERS),
      waits: shared.sum(ThreadField.WAITS, threadRow),
      waitTimeTotalMs: shared.sum(ThreadField.WAIT_TOTAL_MS, threadRow),
      waitTimeMaxMs,
      waitTimeP99Ms: samples.length === 0 ? 0 : samples[Math.ceil(samples.length * 0.99) - 1],
      threads: Atomics.load(this.control, Word.THREADS),
      classes,
    };
  }

  /**
   * Closes the pool: from now on acquires throw ERR_IOBUF_POOL_CLOSED and
   * pending waiters reject with it — in every thread when called on the pool
   * made with `new`, in this thread only when called on an attached one
   * (which so leaves the pool). Resolves once every buffer this thread handed
   * out is released and its memory unmapped. `force` does not wait for the
   * buffers: it tells the borrowers of this thread's memory to stop (a
   * FrameAssembler reading into it ends with ERR_IOBUF_POOL_CLOSED, a
   * Gatherer write not yet handed to its socket rejects with it), unmaps
   * every slab nothing is lent from and detaches its outstanding buffers (they
   * read as empty), and resolves when the memory still lent to the kernel or
   * libuv (a socket write in flight, a pending vectored call) has come back
   * and been unmapped too.
   */
  close(options: CloseOptions = {}): Promise<void> {
    try {
      validateOptions(options, 'options');
      const { timeout, force = false } = options;
      if (timeout !== undefined) validateInteger(timeout, 'options.timeout', 0, 2 ** 31 - 1);
      validateBoolean(force, 'options.force');
      if (this.owner) Atomics.store(this.control, Word.CLOSED, 1);
      this.closedHere = true;
      for (const sizeClass of this.classes) if (sizeClass.free !== null) sizeClass.free.length = 0;
      this.updateQuiet();
      this.rejectWaiters();
      this.shared.wake();
      this.closing ??= new Promise<void>((resolve) => {
        this.closed = resolve;
      });
      if (force) {
        for (const borrower of [...this.borrowers.keys()]) borrower.stopBorrowing(closedError());
        this.freeAll();
      } else if (this.inUseHere() === 0) {
        this.freeAll();
      } else {
        this.drained ??= () => {
          this.drained = null;
          this.freeAll();
        };
      }
      if (timeout === undefined) return this.closing;
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new IobufError(`${this.inUseHere()} buffers were still out after ${timeout} ms; close({ force: true }) frees them anyway`, 'ERR_IOBUF_CLOSE_TIMEOUT')), timeout);
        void this.closing!.then(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** `using pool = new BufferPool()`: force-closes at scope exit. */
  [Symbol.dispose](): void {
    void this.close({ force: true });
  }

  /** Unmaps every slab (a lent one when its loans are repaid); outstanding buffers become forced. */
  private freeAll(): void {
    if (this.freed) return;
    this.freed = true;
    for (const slab of [...this.slabs]) {
      for (const slot of slab.slots) {
        if (slot.tracked !== null) this.leakRegistry!.unregister(slot);
        slot.owner = null;  // a release after this finds no owner: ERR_IOBUF_POOL_CLOSED
        // Strict views have ArrayBuffers of their own; the others go with the
        // slab's. A lent one stays attached (libuv may still send from it)
        // until its loans are repaid.
        if (this.strict && slot.view !== null && slot.loans === 0) native.detach(slot.view.buffer as ArrayBuffer);
      }
      this.unmap(slab);
    }
    for (const sizeClass of this.classes) {
      sizeClass.forced += sizeClass.inUse;
      if (sizeClass.free !== null) sizeClass.free.length = 0;
    }
    this.finishCloseIfDone();
    if (this.drained !== null) this.drained();
  }

  /** After freeAll, once no slab is left: this thread leaves the pool and close() resolves. */
  private finishCloseIfDone(): void {
    if (!this.freed || this.slabs.size > 0 || this.left) return;
    this.left = true;
    this.oversize.oversizeInUseBytes = 0;
    this.oversize.oversizeIdleBytes = 0;
    this.publish();
    this.shared.leave();
    memberPools.delete(this);
    this.closed?.();
    this.closed = null;
  }

  /** Another thread left the pool without a word (native/pool.cc woke this thread): look at the queue again. */
  private peerDeparted(): void {
    if (this.left) return;
    this.shared.notify();
    if (this.waiters.length > 0) this.watch();
    else this.watchIdle();
  }

  // -------------------------------------------------------------------------
  // Lending (lib/lending.ts): memory the kernel or libuv is using
  // -------------------------------------------------------------------------

  /** Borrowers of this thread's memory now, and how many loans each holds. */
  private readonly borrowers = new Map<Borrower, number>();

  static {
    // Runs on this thread when another thread left a pool without JavaScript.
    native.poolSetWakeHandler(() => {
      for (const pool of [...memberPools]) pool.peerDeparted();
    });
  }

  /** @internal Lends the memory of `slot` (lib/pooled.ts finds the slot of a view to lend). */
  lendSlot(slot: Slot, borrower: Borrower | null): Loan {
    slot.loans++;
    const slab = slot.slab;
    // Pinned natively too: whatever JS does to the slab's ArrayBuffer (a
    // transfer, a forced close), its pages stay mapped until the loan ends.
    if (slab.loans++ === 0) slab.pinToken = native.lend(slab.arrayBuffer);
    if (borrower !== null) this.borrowers.set(borrower, (this.borrowers.get(borrower) ?? 0) + 1);
    let repaid = false;
    return {
      repay: () => {
        if (repaid) throw new IobufError('A loan of pooled memory was repaid twice', 'ERR_IOBUF_INTERNAL');
        repaid = true;
        this.repaySlot(slot, borrower);
      },
    };
  }

  private repaySlot(slot: Slot, borrower: Borrower | null): void {
    if (borrower !== null) {
      const count = this.borrowers.get(borrower)! - 1;
      if (count === 0) this.borrowers.delete(borrower);
      else this.borrowers.set(borrower, count);
    }
    const slab = slot.slab;
    slot.loans--;
    if (--slab.loans === 0 && slab.pinToken !== 0) {
      native.repay(slab.pinToken);
      slab.pinToken = 0;
    }
    if (slot.loans === 0) {
      if (slot.returnWhenRepaid) {
        // Released while lent: the release finishes now.
        slot.returnWhenRepaid = false;
        slot.sizeClass.awaitingRepay--;
        if (!this.freed) this.finishRelease(slot, slot.view!);
      }
      if (this.freed && this.strict && slot.view !== null) native.detach(slot.view.buffer as ArrayBuffer);
    }
    if (slab.loans === 0 && slab.unmapWhenRepaid) {
      slab.unmapWhenRepaid = false;
      this.unmap(slab);
      this.serveWaiters();
      this.finishCloseIfDone();
    }
  }

  // -------------------------------------------------------------------------
  // io_uring registration (lib/uring/registration.ts; docs/api.md "IoVecArray and vectored I/O")
  // -------------------------------------------------------------------------

  /** Made by the first registration() call. */
  private fixedBuffers: FixedBufferRegistration | null = null;

  /**
   * An IoVecArray with one entry per slab of this thread's size classes, in
   * the form IORING_REGISTER_BUFFERS takes (pass `address` and `length`).
   * Registers every slab mapped now that was not registered before: from
   * now on it is never unmapped or moved until the pool is closed, and it is
   * marked MADV_DONTFORK. Append-only: a later call returns the same entries
   * at the same indices plus the slabs mapped since (for
   * IORING_REGISTER_BUFFERS_UPDATE). May be empty when nothing is mapped yet.
   */
  registration(): IoVecArray {
    // control[CLOSED]: the owning thread closed the pool (an attached one is then closed too).
    if (this.freed || this.closedHere || this.control[Word.CLOSED] !== 0) throw closedError();
    return (this.fixedBuffers ??= new FixedBufferRegistration()).update(this.slabs);
  }

  /**
   * Where a pooled buffer lies in the registration: `index` (the io_uring
   * buffer index) and `offset` of buffer[0] from that buffer's start, for
   * READ_FIXED/WRITE_FIXED. Null when `buffer` is not a Buffer this pool has
   * out, or its slab was mapped after the last registration() call.
   */
  fixedBufferOf(buffer: Buffer): { index: number; offset: number } | null {
    return fixedBufferOf(this, buffer);
  }
}
