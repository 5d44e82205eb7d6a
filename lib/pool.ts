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
import { native } from './binding';
import {
  IobufError, validateBoolean, validateInteger, validateOneOf, validateOptions,
} from './errors';
import { hugePageSize, pageSize } from './memory';
import { Field, MAX_THREADS, SharedState, ThreadField, Word } from './pool-shared';

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
  /** 'sample' (default) tracks 1 acquire in 128, 'full' tracks every acquire with its stack. */
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

const kSlot = Symbol('iobuf.slot');
/** slot.owner while a leak-tracked buffer is out: the pool holds it only weakly. */
const TRACKED = Symbol('iobuf.tracked');
/** On a strict-mode view's own ArrayBuffer: the slab's ArrayBuffer, kept reachable. */
const kSlabKeepAlive = Symbol('iobuf.slabKeepAlive');
const SAMPLE_INTERVAL = 128;

/** Every view the pool hands out carries its slot: one property load finds it again (see release). */
type PooledView = Buffer & { [kSlot]?: Slot };

interface Slab {
  readonly pool: BufferPool;
  readonly arrayBuffer: ArrayBuffer;
  readonly row: number;          // size class index, or the oversize row
  readonly stride: number;       // bytes between slots
  readonly slots: Slot[];
  readonly bytes: number;        // bytes mapped (a multiple of the page size)
  free: number;                  // slots not handed out
  unmapped: boolean;
}

interface Slot {
  readonly pool: BufferPool;
  readonly slab: Slab;
  readonly offset: number;
  /** The view handed out last; handed out again when the size matches (never in strict mode). */
  view: Buffer | null;
  /** view.length, kept here because a field load is cheaper than the typed-array getter. */
  viewLength: number;
  /** The buffer now out (null when free, TRACKED when only weakly held). */
  owner: Buffer | null | typeof TRACKED;
  tracked: WeakRef<Buffer> | null;
  stack: string | undefined;
  /** Bumped at every hand-out, so a late leak report for an earlier owner is ignored. */
  generation: number;
}

interface Waiter {
  ticket: number;
  size: number;
  count: number;   // > 1 for acquireMany
  row: number;     // the class row its memory comes from
  /** The row whose released slots may go straight to it; -1 for acquireMany. */
  handoffRow: number;
  start: number;
  resolve(value: Buffer | Buffer[]): void;
  reject(error: Error): void;
  cleanup(): void;
}

const DEFAULT_CLASSES = Array.from({ length: 15 }, (_, i) => 256 << i);  // 256 B .. 4 MiB
const SMALL_SLAB = 64 * 1024;
const SLOTS_PER_SLAB = 32;

function defaultMaxMemory(): number {
  const constrained = (process as { constrainedMemory?: () => number | undefined }).constrainedMemory?.();
  const memory = constrained && constrained > 0 ? Math.min(constrained, os.totalmem()) : os.totalmem();
  return Math.max(pageSize, Math.min(2 ** 30, Math.floor(memory / 4 / pageSize) * pageSize));
}

function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
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

function argumentError<E extends Error>(Kind: new (message: string) => E, code: string, message: string): E {
  return Object.assign(new Kind(message), { code });
}

/** Checks the options of a new pool and makes the state its threads share. */
function createHandle(options: BufferPoolOptions): BufferPoolHandle {
  validateOptions(options, 'options');
  const {
    sizeClasses = DEFAULT_CLASSES, maxMemory = defaultMaxMemory(), hugePages = true,
    strict = false, poison = false, leakDetection = 'sample',
  } = options;
  if (!Array.isArray(sizeClasses) || sizeClasses.length === 0 || sizeClasses.length > 64) {
    throw argumentError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected an array of 1 to 64 sizes for options.sizeClasses but received ${String(sizeClasses)}`);
  }
  sizeClasses.forEach((size, i) => {
    validateInteger(size, `options.sizeClasses[${i}]`, i === 0 ? 1 : sizeClasses[i - 1] + 1, 2 ** 30);
  });
  validateInteger(maxMemory, 'options.maxMemory', pageSize, (2 ** 31 - 1) * pageSize);
  const maxPages = Math.floor(maxMemory / pageSize);
  if (roundUp(sizeClasses[0], pageSize) > maxPages * pageSize) {
    throw argumentError(RangeError, 'ERR_OUT_OF_RANGE', `Expected options.maxMemory to hold at least one slab of the smallest size class (${roundUp(sizeClasses[0], pageSize)} bytes) but received ${maxMemory}`);
  }
  const { retainIdle = Math.floor(maxMemory / 4) } = options;
  validateInteger(retainIdle, 'options.retainIdle', 0, Number.MAX_SAFE_INTEGER);
  validateBoolean(hugePages, 'options.hugePages');
  validateBoolean(strict, 'options.strict');
  if (typeof poison !== 'boolean') validateInteger(poison, 'options.poison', 0, 255);
  validateOneOf(leakDetection, 'options.leakDetection', ['off', 'sample', 'full'] as const);
  if (options.onLeak !== undefined && typeof options.onLeak !== 'function') {
    throw argumentError(TypeError, 'ERR_INVALID_ARG_TYPE', 'Expected a function for options.onLeak');
  }
  const shared = SharedState.create(sizeClasses.length + 1, maxPages);
  return {
    shared: shared.buffer,
    options: { sizeClasses: [...sizeClasses], retainIdle, hugePages, strict, poison, leakDetection },
  };
}

/** Set by BufferPool.attach() for the constructor it calls. */
let attaching: BufferPoolHandle | null = null;

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
  private readonly counters: Float64Array;
  /** Free slots per size class, used as stacks (the most recently released slot is the warmest); null for the oversize row. */
  private readonly freeSlots: (Slot[] | null)[];
  private readonly strides: number[];
  private readonly slabBytes: number[];
  private readonly largest: number;
  /** log2 of the smallest class when the ladder is consecutive powers of two, else -1. */
  private readonly powerShift: number;
  /** The statistics row of dedicated allocations above the largest class. */
  private readonly oversizeRow: number;
  private readonly hugePages: boolean;
  private readonly poisonByte: number;
  private readonly leakDetection: LeakDetection;
  private readonly onLeak: ((leak: LeakReport) => void) | undefined;
  private readonly leakRegistry: FinalizationRegistry<{ slot: Slot; generation: number }> | null;
  private leakCountdown: number;
  private readonly slabs = new Set<Slab>();
  /** This thread's waiters, in ticket order. */
  private readonly waiters: Waiter[] = [];
  private readonly waitingByRow: Int32Array;
  private idleBytes = 0;
  /** No waiters on this thread and not closing: release() pushes straight onto a free list. */
  private quiet = true;
  private trimScheduled = false;
  private watching = false;
  private closing: Promise<void> | null = null;
  private drained: (() => void) | null = null;
  private freed = false;

  constructor(options: BufferPoolOptions = {}) {
    const handle = attaching ?? createHandle(options);
    attaching = null;
    const { sizeClasses, retainIdle, hugePages, strict, poison, leakDetection } = handle.options;
    this.handle = handle;
    this.shared = new SharedState(handle.shared, sizeClasses.length + 1);
    this.control = this.shared.control;
    const region = this.shared.claimRegion();
    if (region < 0) throw new IobufError(`A pool is shared by at most ${MAX_THREADS} threads`, 'ERR_IOBUF_UNSUPPORTED');
    this.counters = this.shared.region(region);
    Atomics.add(this.control, Word.THREADS, 1);

    this.sizeClasses = Object.freeze([...sizeClasses]);
    this.maxMemory = this.control[Word.MAX_PAGES] * pageSize;
    this.retainIdle = retainIdle;
    this.strict = strict;
    this.hugePages = hugePages;
    this.poisonByte = poison === true ? 0xa5 : poison === false ? -1 : poison;
    this.leakDetection = leakDetection;
    this.onLeak = options.onLeak;
    this.leakCountdown = leakDetection === 'full' ? 1 : leakDetection === 'sample' ? SAMPLE_INTERVAL : -1;
    this.leakRegistry = leakDetection === 'off'
      ? null
      : new FinalizationRegistry((held) => this.leaked(held.slot, held.generation));
    this.largest = sizeClasses[sizeClasses.length - 1];
    this.oversizeRow = sizeClasses.length;
    this.freeSlots = [...sizeClasses.map(() => []), null];
    this.waitingByRow = new Int32Array(sizeClasses.length + 1);
    // Slots of a page and more start on page boundaries (O_DIRECT); smaller
    // ones on cache-line boundaries once they are that big.
    this.strides = sizeClasses.map((size) => (size >= pageSize ? roundUp(size, pageSize) : size >= 64 ? roundUp(size, 64) : size));
    // A slab holds SLOTS_PER_SLAB slots, from 64 KiB up to one huge page, and
    // at most an eighth of the budget unless a single slot needs more.
    this.slabBytes = this.strides.map((stride) => {
      const wanted = Math.min(Math.max(stride * SLOTS_PER_SLAB, SMALL_SLAB), hugePageSize);
      const capped = Math.max(stride, Math.min(wanted, Math.floor(this.maxMemory / 8)));
      return roundUp(Math.floor(capped / stride) * stride, pageSize);
    });
    const powers = sizeClasses.every((size, i) => Number.isInteger(Math.log2(size)) && (i === 0 || size === sizeClasses[i - 1] * 2));
    this.powerShift = powers ? Math.log2(sizeClasses[0]) : -1;
  }

  /**
   * Joins, from another thread, the pool whose `handle` was passed in: the
   * same budget, waiting queue and statistics. Buffers stay with the thread
   * that acquired them (postMessage would copy a Buffer anyway); release them
   * there. Call close() before the thread ends; if it ends without, its memory
   * and budget are given back when it exits.
   */
  static attach(handle: BufferPoolHandle, options: Pick<BufferPoolOptions, 'onLeak'> = {}): BufferPool {
    if (handle === null || typeof handle !== 'object' || !(handle.shared instanceof SharedArrayBuffer) || !Array.isArray(handle.options?.sizeClasses)) {
      throw argumentError(TypeError, 'ERR_INVALID_ARG_TYPE', 'Expected a BufferPool handle (pool.handle) for handle');
    }
    if (new Int32Array(handle.shared, 0, 1)[Word.CLOSED] !== 0) throw closedError();
    attaching = handle;
    const pool = new BufferPool({ onLeak: options.onLeak });
    process.once('exit', () => pool.abandon());
    return pool;
  }

  // -------------------------------------------------------------------------
  // Hot path: plain JS on this thread's own objects
  // -------------------------------------------------------------------------

  /** A Buffer of exactly `size` bytes, or null when the budget is spent. Never waits. */
  tryAcquire(size: number): Buffer | null {
    if (this.control[Word.CLOSED] !== 0) throw closedError();
    const row = this.rowOf(size);
    if (row >= 0) {
      const slot = this.freeSlots[row]!.pop();
      if (slot !== undefined) return this.handOut(slot, size, row);
    }
    return this.acquireNew(size, row, -1, 1) as Buffer | null;
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
    if (this.strict) {
      native.detach(buffer.buffer as ArrayBuffer);
      owned.view = null;
    } else if (this.poisonByte >= 0) {
      buffer.fill(this.poisonByte);
    }
    this.counters[owned.slab.row * Field.CLASS_FIELDS + Field.RELEASES]++;
    this.returnSlot(owned);
  }

  /** Accounts a slot coming back and passes it on: to a free list, a waiter, or the OS. */
  private returnSlot(slot: Slot): void {
    const slab = slot.slab;
    const row = slab.row;
    this.counters[row * Field.CLASS_FIELDS + Field.IN_USE]--;
    this.idleBytes += slab.stride;
    slab.free++;
    const list = this.freeSlots[row];
    if (this.quiet && list !== null) list.push(slot);
    else this.returnSlotSlowly(slot, row, list);
    if (this.idleBytes > this.retainIdle || this.control[Word.WAITERS] !== 0) this.scheduleTrim();
  }

  /** returnSlot while this thread has waiters or is closing, or for an oversize slot. */
  private returnSlotSlowly(slot: Slot, row: number, list: Slot[] | null): void {
    const slab = slot.slab;
    if (this.waitingByRow[row] !== 0) {
      this.handToWaiter(slot, row);
    } else if (list === null) {
      const base = row * Field.CLASS_FIELDS;
      this.counters[base + Field.IN_USE_BYTES] -= slab.stride;
      this.counters[base + Field.IDLE_BYTES] += slab.stride;  // (ordinary rows derive both in stats())
      if (slab.free === slab.slots.length) this.unmap(slab);
    } else {
      list.push(slot);
    }
    if (this.drained !== null && this.inUseHere() === 0) this.drained();
  }

  private handOut(slot: Slot, size: number, row: number): Buffer {
    let view = slot.view;
    if (view === null || slot.viewLength !== size) view = this.makeView(slot, size);
    const counters = this.counters;
    const base = row * Field.CLASS_FIELDS;
    counters[base + Field.ACQUIRES]++;
    counters[base + Field.IN_USE]++;
    this.idleBytes -= slot.slab.stride;
    slot.slab.free--;
    // With leak detection off the countdown starts below zero and never reaches it.
    if (--this.leakCountdown === 0) this.track(slot, view);
    else slot.owner = view;
    return view;
  }

  /** Buffers this thread has out. */
  private inUseHere(): number {
    let inUse = 0;
    for (let row = 0; row <= this.oversizeRow; row++) inUse += this.counters[row * Field.CLASS_FIELDS + Field.IN_USE];
    return inUse;
  }

  /** Whether release() can take the plain path: no waiters here and not closing. */
  private updateQuiet(): void {
    this.quiet = this.waiters.length === 0 && this.drained === null;
  }

  /** The size-class row for `size`, or -1 when `size` needs the slow path (oversize or invalid). */
  private rowOf(size: number): number {
    if ((size | 0) !== size || size <= 0 || size > this.largest) return -1;
    const classes = this.sizeClasses;
    if (this.powerShift >= 0) {
      return size <= classes[0] ? 0 : 32 - Math.clz32(size - 1) - this.powerShift;
    }
    let row = 0;
    while (classes[row] < size) row++;
    return row;
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
    } else {
      view = Buffer.from(slab.arrayBuffer, slot.offset, size);
    }
    (view as PooledView)[kSlot] = slot;
    slot.view = view;
    slot.viewLength = size;
    return view;
  }

  // -------------------------------------------------------------------------
  // Slow path: new slabs, oversize allocations, misuse
  // -------------------------------------------------------------------------

  /**
   * Maps new memory for `count` buffers of `size` bytes (row -1: validate
   * `size` first). `ticket` is the caller's place in the waiting queue, -1
   * for a caller that does not wait. Returns null when the budget does not
   * allow it now; nothing is counted then.
   */
  private acquireNew(size: number, row: number, ticket: number, count: number): Buffer | Buffer[] | null {
    if (row < 0) {
      validateInteger(size, 'size', 1, this.maxMemory);
      row = this.rowFor(size);
    }
    if (this.freed) throw closedError();
    const oversize = row === this.oversizeRow;
    if (!oversize && count === 1) {
      const slot = this.freeSlots[row]!.pop();
      if (slot !== undefined) return this.handOut(slot, size, row);
    }
    if (!this.shared.mayTakeBudget(ticket)) return null;
    const stride = oversize ? roundUp(size, pageSize) : this.strides[row];
    const bytes = count > 1 || oversize ? roundUp(stride * count, pageSize) : this.slabBytes[row];
    if (bytes > this.maxMemory) {
      throw argumentError(RangeError, 'ERR_OUT_OF_RANGE', `Expected at most ${this.maxMemory} bytes (options.maxMemory) for count × size but received ${stride * count}`);
    }
    const pages = bytes / pageSize;
    if (!this.shared.reserve(pages)) {
      this.trim(0, row);  // this thread's idle slabs of other classes are budget too
      if (!this.shared.reserve(pages)) return null;
    }
    let arrayBuffer: ArrayBuffer;
    try {
      const memory = this.hugePages && bytes >= hugePageSize
        ? native.mapHuge(bytes, 2 /* down to normal pages */, 0)
        : native.mapAligned(bytes, pageSize, 0);
      arrayBuffer = memory.buffer as ArrayBuffer;
    } catch (error) {
      this.shared.unreserve(pages);
      throw error;
    }
    const slab: Slab = { pool: this, arrayBuffer, row, stride, slots: [], bytes, free: 0, unmapped: false };
    const slotCount = count > 1 || oversize ? count : Math.floor(bytes / stride);
    for (let i = 0; i < slotCount; i++) {
      slab.slots.push({ pool: this, slab, offset: i * stride, view: null, viewLength: 0, owner: null, tracked: null, stack: undefined, generation: 0 });
    }
    slab.free = slotCount;
    this.slabs.add(slab);
    const base = row * Field.CLASS_FIELDS;
    this.counters[base + Field.OS_BYTES] += bytes;
    this.counters[base + Field.MISSES] += count;
    if (oversize) this.counters[base + Field.IN_USE_BYTES] += count * stride;
    this.idleBytes += slotCount * stride;
    // Hand out the first `count` slots; the rest (of a shared slab) are free, highest last out.
    for (let i = slotCount - 1; i >= count; i--) this.freeSlots[row]!.push(slab.slots[i]);
    const views = slab.slots.slice(0, count).map((slot) => this.handOut(slot, size, row));
    return count > 1 ? views : views[0];
  }

  private rowFor(size: number): number {
    return size > this.largest ? this.oversizeRow : this.rowOf(size);
  }

  /** Throws the right error for a release that failed the fast checks, unless it is a leak-tracked buffer. */
  private checkUnusualRelease(buffer: Buffer, slot: Slot | undefined): void {
    if (!ArrayBuffer.isView(buffer)) {
      throw argumentError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected a Buffer from this pool for buffer but received ${buffer === null ? 'null' : typeof buffer}`);
    }
    if (this.freed) throw closedError();
    if (slot !== undefined && slot.pool === this) {
      if (slot.owner === TRACKED && slot.tracked!.deref() === buffer) {
        this.leakRegistry!.unregister(slot);
        slot.tracked = null;
        slot.stack = undefined;
        slot.view = buffer;
        slot.viewLength = buffer.length;
        slot.owner = buffer;
        return;
      }
      const detached = buffer.buffer.byteLength === 0;
      if ((this.strict && detached) || (!this.strict && slot.owner === null && buffer.byteOffset === slot.offset)) {
        throw new IobufError('This buffer was released already', 'ERR_IOBUF_DOUBLE_RELEASE');
      }
    }
    throw new IobufError('This buffer did not come from this pool, or is a slice of a pooled buffer (release the Buffer that acquire returned)', 'ERR_IOBUF_FOREIGN_BUFFER');
  }

  // -------------------------------------------------------------------------
  // Idle memory
  // -------------------------------------------------------------------------

  /** Trims once per event-loop turn at most, off the release path. */
  private scheduleTrim(): void {
    if (this.trimScheduled) return;
    this.trimScheduled = true;
    setImmediate(() => {
      this.trimScheduled = false;
      if (!this.freed) this.trim(this.control[Word.WAITERS] !== 0 ? 0 : this.retainIdle, -1);
    });
  }

  /** Unmaps wholly idle slabs, except of row `keepRow`, until at most `retain` idle bytes are left. */
  private trim(retain: number, keepRow: number): void {
    for (const slab of this.slabs) {
      if (this.idleBytes <= retain) break;
      if (slab.free !== slab.slots.length || slab.row === keepRow) continue;
      const list = this.freeSlots[slab.row];
      if (list !== null) {
        let kept = 0;
        for (let i = 0; i < list.length; i++) if (list[i].slab !== slab) list[kept++] = list[i];
        list.length = kept;
      }
      this.unmap(slab);
    }
  }

  private unmap(slab: Slab): void {
    const base = slab.row * Field.CLASS_FIELDS;
    const idle = slab.free * slab.stride;
    this.counters[base + Field.OS_BYTES] -= slab.bytes;
    if (slab.row === this.oversizeRow) this.counters[base + Field.IDLE_BYTES] -= idle;
    this.idleBytes -= idle;
    this.slabs.delete(slab);
    slab.unmapped = true;
    native.free(slab.arrayBuffer);
    this.shared.unreserve(slab.bytes / pageSize);
    this.serveWaiters();
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
    validateInteger(size, 'size', 1, this.maxMemory);
    if (count === 1) {
      const buffer = this.tryAcquire(size);
      return buffer === null ? null : [buffer];
    }
    return this.acquireNew(size, this.rowFor(size), -1, count) as Buffer[] | null;
  }

  private enqueue(size: number, count: number, options: AcquireOptions = {}): Promise<Buffer | Buffer[]> {
    try {
      validateOptions(options, 'options');
      const { signal, timeout } = options;
      if (timeout !== undefined) validateInteger(timeout, 'options.timeout', 0, 2 ** 31 - 1);
      if (signal !== undefined && !(signal instanceof AbortSignal)) {
        throw argumentError(TypeError, 'ERR_INVALID_ARG_TYPE', 'Expected an AbortSignal for options.signal');
      }
      if (signal?.aborted) throw abortError(signal);
      const ready = count === 1 ? this.tryAcquire(size) : this.tryAcquireMany(count, size);
      if (ready !== null) return Promise.resolve(ready);
      const ticket = this.shared.takeTicket();
      if (ticket < 0) throw new IobufError('Too many waiters on this pool', 'ERR_IOBUF_UNSUPPORTED');
      return new Promise((resolve, reject) => {
        let timer: NodeJS.Timeout | undefined;
        const row = this.rowFor(size);
        const waiter: Waiter = {
          ticket, size, count, row, handoffRow: count === 1 ? row : -1, start: performance.now(),
          resolve, reject,
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
        this.updateQuiet();
        if (waiter.handoffRow >= 0) this.waitingByRow[waiter.handoffRow]++;
        this.serveWaiters();
        this.watch();
      });
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Takes `waiter` out of the queue; false when it was served or removed already. */
  private removeWaiter(waiter: Waiter): boolean {
    const index = this.waiters.indexOf(waiter);
    if (index < 0) return false;
    this.waiters.splice(index, 1);
    this.updateQuiet();
    if (waiter.handoffRow >= 0) this.waitingByRow[waiter.handoffRow]--;
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
    const counters = this.counters;
    const base = (this.oversizeRow + 1) * Field.CLASS_FIELDS;
    counters[base + ThreadField.WAITS]++;
    counters[base + ThreadField.WAIT_TOTAL_MS] += milliseconds;
    if (milliseconds > counters[base + ThreadField.WAIT_MAX_MS]) counters[base + ThreadField.WAIT_MAX_MS] = milliseconds;
    const next = counters[base + ThreadField.WAIT_SAMPLE_NEXT];
    counters[base + ThreadField.WAIT_SAMPLES_START + next] = milliseconds;
    counters[base + ThreadField.WAIT_SAMPLE_NEXT] = (next + 1) % ThreadField.WAIT_SAMPLE_COUNT;
    counters[base + ThreadField.WAIT_SAMPLES] = Math.min(counters[base + ThreadField.WAIT_SAMPLES] + 1, ThreadField.WAIT_SAMPLE_COUNT);
  }

  /** A released slot goes straight to this thread's earliest waiter of its class. */
  private handToWaiter(slot: Slot, row: number): void {
    const waiter = this.waiters.find((candidate) => candidate.handoffRow === row)!;
    this.settle(waiter, this.handOut(slot, waiter.size, row));
  }

  /** Serves this thread's waiters in ticket order for as long as memory allows. */
  private serveWaiters(): void {
    while (this.waiters.length > 0 && !this.freed) {
      const waiter = this.waiters[0];
      let value: Buffer | Buffer[] | null;
      try {
        value = this.acquireNew(waiter.size, waiter.row, waiter.ticket, waiter.count);
      } catch (error) {
        if (this.removeWaiter(waiter)) waiter.reject(error as Error);
        continue;
      }
      if (value === null) return;
      this.settle(waiter, value);
    }
  }

  /** While this thread has waiters, look again whenever any thread frees budget or a ticket finishes. */
  private watch(): void {
    if (this.watching || this.waiters.length === 0) return;
    const result = Atomics.waitAsync(this.control, Word.EPOCH, Atomics.load(this.control, Word.EPOCH));
    this.watching = true;
    const again = () => {
      this.watching = false;
      if (this.control[Word.CLOSED] !== 0) this.rejectWaiters();
      else this.serveWaiters();
      this.watch();
    };
    if (result.async) result.value.then(again);
    else queueMicrotask(again);
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
    if (ticket < 0) throw new IobufError('Too many waiters on this pool', 'ERR_IOBUF_UNSUPPORTED');
    const start = performance.now();
    const row = this.rowFor(size);
    try {
      for (;;) {
        const epoch = Atomics.load(this.control, Word.EPOCH);
        if (this.control[Word.CLOSED] !== 0) throw closedError();
        const buffer = this.acquireNew(size, row, ticket, 1) as Buffer | null;
        if (buffer !== null) {
          this.recordWait(performance.now() - start);
          return buffer;
        }
        const remaining = start + timeout - performance.now();
        if (remaining <= 0) throw new IobufError(`No memory became free within ${timeout} ms`, 'ERR_IOBUF_BUDGET_TIMEOUT');
        Atomics.wait(this.control, Word.EPOCH, epoch, remaining);
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
    slot.owner = TRACKED;
    slot.generation++;
    slot.view = null;
    slot.tracked = new WeakRef(view);
    slot.stack = this.leakDetection === 'full' ? new Error('acquired here').stack : undefined;
    this.leakRegistry!.register(view, { slot, generation: slot.generation }, slot);
  }

  /**
   * A tracked buffer was garbage-collected while out: report it and take its
   * slot back. (A slice of the lost buffer that is still alive would now see
   * the next owner's bytes; strict mode rules that out.)
   */
  private leaked(slot: Slot, generation: number): void {
    if (slot.owner !== TRACKED || slot.generation !== generation || slot.slab.unmapped) return;
    const report: LeakReport = { size: slot.viewLength };
    if (slot.stack !== undefined) report.stack = slot.stack;
    this.counters[slot.slab.row * Field.CLASS_FIELDS + Field.LEAKS]++;
    slot.owner = null;
    slot.tracked = null;
    slot.stack = undefined;
    this.returnSlot(slot);
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

  /** Counters for the whole pool (every thread sharing it), in total and per size class. */
  stats(): PoolStats {
    const shared = this.shared;
    const classes: SizeClassStats[] = [];
    for (let row = 0; row <= this.oversizeRow; row++) {
      const field = (name: number) => shared.sum(name, row);
      const acquires = field(Field.ACQUIRES);
      const misses = field(Field.MISSES);
      const inUse = field(Field.IN_USE);
      const osBytes = field(Field.OS_BYTES);
      classes.push({
        size: row < this.oversizeRow ? this.sizeClasses[row] : Infinity,
        acquires, releases: field(Field.RELEASES), recycles: acquires - misses, misses,
        recycleRate: acquires === 0 ? 1 : (acquires - misses) / acquires,
        inUse, inUseBytes: row < this.oversizeRow ? inUse * this.sizeClasses[row] : field(Field.IN_USE_BYTES),
        idleBytes: row < this.oversizeRow ? osBytes - inUse * this.strides[row] : field(Field.IDLE_BYTES),
        osBytes, leaks: field(Field.LEAKS),
      });
    }
    const total = (key: keyof SizeClassStats) => classes.reduce((sum, row) => sum + (row[key] as number), 0);
    const threadRow = this.oversizeRow + 1;
    const regions = Math.min(Atomics.load(this.control, Word.REGIONS), MAX_THREADS);
    const samples: number[] = [];
    let waitTimeMaxMs = 0;
    for (let index = 0; index < regions; index++) {
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
      inUse: total('inUse'), inUseBytes: total('inUseBytes'),
      idleBytes: total('idleBytes'),
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
   * Closes the pool for every thread: from now on acquires throw
   * ERR_IOBUF_POOL_CLOSED and pending waiters reject with it. Resolves once
   * every buffer this thread handed out is released and its memory unmapped.
   * `force` unmaps at once and detaches every outstanding buffer (they read as
   * empty), so no view can reach freed memory.
   */
  close(options: CloseOptions = {}): Promise<void> {
    try {
      validateOptions(options, 'options');
      const { timeout, force = false } = options;
      if (timeout !== undefined) validateInteger(timeout, 'options.timeout', 0, 2 ** 31 - 1);
      validateBoolean(force, 'options.force');
      Atomics.store(this.control, Word.CLOSED, 1);
      this.rejectWaiters();
      this.shared.wake();
      if (force || this.inUseHere() === 0) {
        this.freeAll();
        return Promise.resolve();
      }
      this.closing ??= new Promise<void>((resolve) => {
        this.drained = () => {
          this.drained = null;
          this.freeAll();
          resolve();
        };
        this.updateQuiet();
      });
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

  private freeAll(): void {
    if (this.freed) return;
    this.freed = true;
    let pages = 0;
    for (const slab of this.slabs) {
      slab.unmapped = true;
      if (this.strict) {
        for (const slot of slab.slots) if (slot.view !== null) native.detach(slot.view.buffer as ArrayBuffer);
      }
      native.free(slab.arrayBuffer);  // detaches every non-strict view of the slab
      pages += slab.bytes / pageSize;
    }
    this.slabs.clear();
    for (const list of this.freeSlots) if (list !== null) list.length = 0;
    const counters = this.counters;
    for (let row = 0; row <= this.oversizeRow; row++) {
      const base = row * Field.CLASS_FIELDS;
      counters[base + Field.IN_USE] = 0;
      counters[base + Field.IN_USE_BYTES] = 0;
      counters[base + Field.OS_BYTES] = 0;
      counters[base + Field.IDLE_BYTES] = 0;
    }
    this.idleBytes = 0;
    Atomics.sub(this.control, Word.THREADS, 1);
    if (pages > 0) this.shared.unreserve(pages);
    if (this.drained !== null) this.drained();
  }

  /** The thread is exiting without close(): give its memory and budget back. */
  private abandon(): void {
    if (this.freed) return;
    this.rejectWaiters();
    this.freeAll();
  }
}
