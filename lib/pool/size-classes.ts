// Size classes: what a pool's slots and slabs look like, the class table
// (which class serves which size, how big its slots and slabs are on this
// machine), and the pool's options with the checks of those every thread of
// a pool shares.
import os from 'node:os';
import { invalidType, invalidValue, outOfRange, validateBoolean, validateInteger, validateOneOf, validateOptions } from '../errors';
import { cacheLineSize, hugePageSize, pageSize } from '../memory';
import type { PooledSlab, PooledSlot } from '../pooled';
import { MAX_CLASS_ROWS, SharedState, closedError } from './shared';

export type LeakDetection = 'off' | 'sample' | 'full';

export interface LeakReport {
  /** Bytes of the leaked buffer. */
  size: number;
  /** The stack of the acquire, when leakDetection is 'full'. */
  stack?: string;
}

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

/** What a worker needs to share a pool: pass it with postMessage, then BufferPool.attach(handle). */
export interface BufferPoolHandle {
  readonly shared: SharedArrayBuffer;
  readonly options: Required<Omit<BufferPoolOptions, 'onLeak' | 'maxMemory'>>;
}

/** The options every thread of a pool shares (the handle carries them). */
export type SharedOptions = BufferPoolHandle['options'];

// ---------------------------------------------------------------------------
// Slabs, slots and classes
// ---------------------------------------------------------------------------

/** A slab as the pool keeps it: lib/pooled.ts's shape, plus its class and what the pool counts on it. */
export interface Slab extends PooledSlab {
  readonly sizeClass: SizeClass;
  readonly slots: Slot[];
  readonly bytes: number; // bytes mapped (a multiple of the page size)
  /** Slots not handed out; kept up to date for oversize slabs only (others count in trim()). */
  free: number;
  /** Loans of this slab's memory now (lib/lending.ts); while any, it is not unmapped. */
  loans: number;
  /** native.lend()'s token while loans > 0. */
  pinToken: number;
  /** Unmap it when the last loan is repaid (trim, close or an oversize return came while lent). */
  unmapWhenRepaid: boolean;
}

/** A slot as the pool keeps it: lib/pooled.ts's shape, plus its class, its view and its leak and loan state. */
export interface Slot extends PooledSlot {
  readonly sizeClass: SizeClass;
  readonly slab: Slab;
  /** The view handed out last; handed out again when the size matches (never in strict mode). */
  view: Buffer | null;
  /** view.length, kept here because a field load is cheaper than the typed-array getter. */
  viewLength: number;
  stack: string | undefined;
  /**
   * The view registered with the leak registry, held weakly: a later tracked
   * acquire of the same view registers nothing again.
   */
  registered: WeakRef<Buffer> | null;
  /** Bumped whenever another view is registered, so a late leak report for an earlier view is ignored. */
  generation: number;
  /** Loans of this slot's memory now; release() while lent defers the slot's return (see lib/lending.ts). */
  loans: number;
  /** The owner released it while lent: back to the pool when the last loan is repaid. */
  returnWhenRepaid: boolean;
}

/**
 * The Buffer `slot` has out (or handed out last), also while it is
 * leak-tracked: the slot then holds it only weakly (slot.view is null), and a
 * strict pool must still find it to detach it. Null when none is known.
 */
export function viewOfSlot(slot: Slot): Buffer | null {
  return slot.view ?? slot.tracked?.deref() ?? null;
}

const slotAddress = (slot: Slot) => slot.slab.address + slot.offset;
const byAddressDescending = (a: Slot, b: Slot) => slotAddress(b) - slotAddress(a);

/**
 * One size class as this thread sees it. The counters are plain fields (the
 * cheapest thing to bump); housekeeping copies them into this thread's
 * region of the shared block (SharedState.publish), where stats() in any
 * thread reads them.
 */
export class SizeClass {
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
    readonly size: number, // Infinity for the oversize row
    readonly stride: number, // bytes between slots (0 for the oversize row: per slab)
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

  /** Bytes of the slots handed out. */
  get inUseBytes(): number {
    return this.free === null ? this.oversizeInUseBytes : this.inUse * this.size;
  }

  /** Bytes mapped and not busy. */
  get idleBytes(): number {
    return this.free === null ? this.oversizeIdleBytes : this.osBytes - this.busySlots * this.stride;
  }

  /** Puts `slot` into the free list kept in descending address order (pop() takes the lowest). */
  insertByAddress(slot: Slot): void {
    const free = this.free!;
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

  /** Orders the free list so that pop() takes the lowest address. */
  orderByAddress(): void {
    this.free?.sort(byAddressDescending);
  }
}

/** A pool's classes as the hot path looks them up: built once, copied into the pool's own fields. */
export interface ClassTable {
  /** The size classes, then the oversize row. */
  readonly classes: SizeClass[];
  readonly oversize: SizeClass;
  /** The largest class whose slab fits the budget; bigger sizes get dedicated allocations. */
  readonly largest: number;
  /** log2 of the smallest class when the ladder is consecutive powers of two, else -1. */
  readonly powerShift: number;
  /** Power-of-two ladders: the class for sizes in (2^(k-1), 2^k] at index k; otherwise null. */
  readonly classByLog2: (SizeClass | undefined)[] | null;
}

export function classTable(sizeClasses: readonly number[], maxMemory: number): ClassTable {
  const classes = sizeClasses.map((size, row) => {
    const { stride, slabBytes } = classLayout(size, maxMemory);
    return new SizeClass(row, size, stride, slabBytes);
  });
  // A class whose slab cannot fit the budget (one slot of it is bigger than
  // maxMemory) could never be served: sizes above the largest class that
  // fits get a dedicated allocation instead, like sizes above every class.
  const fitting = classes.filter((sizeClass) => sizeClass.slabBytes <= maxMemory);
  const largest = fitting[fitting.length - 1].size;
  const powers = sizeClasses.every((size, i) => Number.isInteger(Math.log2(size)) && (i === 0 || size === sizeClasses[i - 1] * 2));
  const classByLog2 = powers ? Array.from({ length: 33 }, (_, k) => classes.find((c) => c.size >= 2 ** k)) : null;
  const oversize = new SizeClass(sizeClasses.length, Infinity, 0, 0);
  classes.push(oversize);
  return { classes, oversize, largest, powerShift: powers ? Math.log2(sizeClasses[0]) : -1, classByLog2 };
}

// ---------------------------------------------------------------------------
// Layout on this machine
// ---------------------------------------------------------------------------

const DEFAULT_CLASSES = Array.from({ length: 15 }, (_, i) => 256 << i); // 256 B .. 4 MiB
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
  const stride =
    size >= system.pageSize
      ? roundUp(size, system.pageSize)
      : size >= DIRECT_IO_ALIGNMENT
        ? roundUp(size, DIRECT_IO_ALIGNMENT)
        : size >= system.cacheLineSize
          ? roundUp(size, system.cacheLineSize)
          : size;
  const limit = slabsMayBeHuge(system) ? Math.max(system.hugePageSize, SMALL_SLAB) : PLAIN_SLAB_LIMIT;
  const wanted = Math.min(Math.max(stride * SLOTS_PER_SLAB, SMALL_SLAB), limit);
  const capped = Math.max(stride, Math.min(wanted, Math.floor(maxMemory / 8)));
  return { stride, slabBytes: roundUp(Math.floor(capped / stride) * stride, system.pageSize) };
}

export function defaultMaxMemory(): number {
  const constrained = (process as { constrainedMemory?: () => number | undefined }).constrainedMemory?.();
  const memory = constrained && constrained > 0 ? Math.min(constrained, os.totalmem()) : os.totalmem();
  return Math.max(pageSize, Math.min(2 ** 30, Math.floor(memory / 4 / pageSize) * pageSize));
}

export function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/**
 * Checks the options every thread of a pool shares and returns a copy: the
 * constructor's, and attach()'s from a handle that came through code the
 * attaching thread does not own (the copy is what is used, so a handle
 * altered after the check changes nothing).
 */
export function checkSharedOptions(options: Partial<SharedOptions>, maxMemory: number, name: string): SharedOptions {
  validateOptions(options, name);
  const { sizeClasses = DEFAULT_CLASSES, hugePages = true, strict = false, poison = false, leakDetection = 'sample' } = options;
  if (!Array.isArray(sizeClasses) || sizeClasses.length === 0 || sizeClasses.length > MAX_CLASS_ROWS - 1) {
    throw invalidType(`an array of 1 to ${MAX_CLASS_ROWS - 1} sizes`, `${name}.sizeClasses`, sizeClasses);
  }
  const classes = [...sizeClasses];
  classes.forEach((size, i) => {
    validateInteger(size, `${name}.sizeClasses[${i}]`, i === 0 ? 1 : classes[i - 1] + 1, 2 ** 30);
  });
  const smallestSlab = roundUp(classes[0], pageSize);
  if (smallestSlab > maxMemory) {
    throw outOfRange(`at least ${smallestSlab} bytes (one slab of the smallest size class)`, 'options.maxMemory', maxMemory);
  }
  const { retainIdle = Math.floor(maxMemory / 4) } = options;
  validateInteger(retainIdle, `${name}.retainIdle`, 0, Number.MAX_SAFE_INTEGER);
  validateBoolean(hugePages, `${name}.hugePages`);
  validateBoolean(strict, `${name}.strict`);
  if (typeof poison !== 'boolean') validateInteger(poison, `${name}.poison`, 0, 255);
  validateOneOf(leakDetection, `${name}.leakDetection`, ['off', 'sample', 'full'] as const);
  return { sizeClasses: classes, retainIdle, hugePages, strict, poison, leakDetection };
}

/** A pool's shared block and the options its threads share. */
export interface SharedSetup {
  shared: SharedState;
  options: SharedOptions;
}

/** The shared block and checked options of a new pool (`new BufferPool(options)`). */
export function createShared(options: BufferPoolOptions): SharedSetup {
  validateOptions(options, 'options');
  const { maxMemory = defaultMaxMemory() } = options;
  validateInteger(maxMemory, 'options.maxMemory', pageSize, (2 ** 31 - 1) * pageSize);
  const maxPages = Math.floor(maxMemory / pageSize);
  const checked = checkSharedOptions(options, maxPages * pageSize, 'options');
  return { shared: SharedState.create(checked.sizeClasses.length + 1, maxPages), options: checked };
}

/**
 * The shared block and a checked copy of the options of a handle another
 * thread passed (BufferPool.attach); `checkOwnOptions` checks attach()'s own
 * options once the handle's shape is known good. A forged or altered handle
 * throws ERR_INVALID_ARG_TYPE / ERR_INVALID_ARG_VALUE and touches no shared
 * state; a closed pool throws ERR_IOBUF_POOL_CLOSED.
 */
export function openHandle(handle: BufferPoolHandle, checkOwnOptions: () => void): SharedSetup {
  if (handle === null || typeof handle !== 'object') throw invalidType('a BufferPool handle (pool.handle)', 'handle', handle);
  const { shared, options } = handle;
  if (!(shared instanceof SharedArrayBuffer)) throw invalidType('a SharedArrayBuffer', 'handle.shared', shared);
  if (options === null || typeof options !== 'object' || !Array.isArray(options.sizeClasses)) {
    throw invalidType('the options of a BufferPool', 'handle.options', options);
  }
  checkOwnOptions();
  const copy = { ...options, sizeClasses: [...options.sizeClasses] };
  const block = SharedState.open(shared, copy.sizeClasses.length + 1);
  const maxMemory = block.maxMemory;
  if (maxMemory < pageSize) throw invalidValue('a BufferPool handle', 'handle', handle, 'one whose budget is empty');
  const checked = checkSharedOptions(copy, maxMemory, 'handle.options');
  if (block.closed) throw closedError();
  return { shared: block, options: checked };
}
