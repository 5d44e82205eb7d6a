// Slabs: a pool's mappings of native memory in this thread, each carved into
// slots of one size class (or holding the buffers of one oversize or
// acquireMany request). New memory is taken from the shared budget here, in
// ticket order (shared.ts), when no free slot serves an acquire; mapping asks
// for huge pages when a slab is as large as one; unmapping gives the pages
// back to the budget, and waits for the last loan of a lent slab
// (lib/lending.ts) to be repaid.
import { native } from '../binding';
import { outOfRange, validateInteger } from '../errors';
import { hugePageSize, maxAllocationSize, pageSize } from '../memory';
import { type SlotPool, forgetSlab, rememberSlab } from '../pooled';
import { type SharedState, closedError } from './shared';
import { type SizeClass, type Slab, type Slot, roundUp } from './size-classes';

/** What the slabs need of their pool (BufferPool). */
export interface SlabbingPool extends SlotPool {
  readonly shared: SharedState;
  readonly maxMemory: number;
  readonly oversize: SizeClass;
  /** close() was called on this pool object (in this thread). */
  readonly closedHere: boolean;
  /** Housekeeping (Housekeeper): idle slabs of other classes are budget too. */
  readonly housekeeper: { trim(retain: number, keep: SizeClass | undefined): boolean };
  /** The size class for a valid `size`. */
  classFor(size: number): SizeClass;
  /** `slot`'s memory as a Buffer of `size` bytes, now out. */
  handOut(slot: Slot, size: number): Buffer;
  publish(): void;
}

export class SlabStore implements Iterable<Slab> {
  private readonly mapped = new Set<Slab>();

  constructor(
    private readonly pool: SlabbingPool,
    private readonly hugePages: boolean,
  ) {}

  /** Slabs mapped now. */
  get size(): number {
    return this.mapped.size;
  }

  [Symbol.iterator](): Iterator<Slab> {
    return this.mapped.values();
  }

  /**
   * New memory for `count` buffers of `size` bytes (`sizeClass` undefined:
   * validate `size` first) — or a free slot, when one came back meanwhile.
   * `ticket` is the caller's place in the waiting queue, null for a caller
   * that does not wait. Returns null when the budget does not allow it now;
   * nothing is counted then.
   */
  take(size: number, sizeClass: SizeClass | undefined, ticket: number | null, count: number): Buffer | Buffer[] | null {
    const pool = this.pool;
    if (sizeClass === undefined) {
      validateInteger(size, 'size', 1, Math.min(pool.maxMemory, maxAllocationSize));
      sizeClass = pool.classFor(size);
    }
    if (pool.closedHere) throw closedError();
    const oversize = sizeClass === pool.oversize;
    if (!oversize && count === 1) {
      const slot = sizeClass.free!.pop();
      if (slot !== undefined) return pool.handOut(slot, size);
    }
    const shared = pool.shared;
    if (!shared.mayTakeBudget(ticket)) return null;
    const stride = oversize ? roundUp(size, pageSize) : sizeClass.stride;
    const bytes = count > 1 || oversize ? roundUp(stride * count, pageSize) : sizeClass.slabBytes;
    if (bytes > pool.maxMemory) throw outOfRange(`at most ${pool.maxMemory} bytes (options.maxMemory)`, 'count × size', stride * count);
    if (bytes > maxAllocationSize) {
      // the buffers share one region, which is one Buffer
      throw outOfRange(`at most ${maxAllocationSize} bytes (the largest Buffer)`, 'count × size', stride * count);
    }
    const pages = bytes / pageSize;
    if (!shared.reserve(pages)) {
      pool.housekeeper.trim(0, sizeClass); // this thread's idle slabs of other classes are budget too
      if (!shared.reserve(pages)) return null;
    }
    const slotCount = count > 1 || oversize ? count : Math.floor(bytes / stride);
    let slab: Slab;
    try {
      slab = this.map(sizeClass, stride, bytes, slotCount, oversize);
    } catch (error) {
      shared.unreserve(pages);
      throw error;
    }
    sizeClass.misses += count;
    if (oversize) sizeClass.oversizeInUseBytes += count * stride;
    // Hand out the first `count` slots; the rest (of a shared slab) are free, lowest on top.
    for (let i = slotCount - 1; i >= count; i--) sizeClass.free!.push(slab.slots[i]);
    const views = slab.slots.slice(0, count).map((slot) => pool.handOut(slot, size));
    pool.publish();
    return count > 1 ? views : views[0];
  }

  /**
   * Maps `bytes` (pages already reserved from the budget) as a slab of
   * `slotCount` slots `stride` bytes apart, all free; `dedicated` for an
   * oversize request's own slab.
   */
  private map(sizeClass: SizeClass, stride: number, bytes: number, slotCount: number, dedicated: boolean): Slab {
    // Any slab as large as a huge page asks for huge pages (when the kernel has any).
    const memory =
      this.hugePages && hugePageSize > pageSize && bytes >= hugePageSize
        ? native.mapHuge(bytes, 2 /* down to normal pages */, 0)
        : native.mapAligned(bytes, pageSize, 0);
    const arrayBuffer = memory.buffer as ArrayBuffer;
    const pool = this.pool;
    const slab: Slab = {
      pool,
      arrayBuffer,
      address: native.addressOf(arrayBuffer),
      sizeClass,
      stride,
      slots: [],
      bytes,
      free: 0,
      unmapped: false,
      loans: 0,
      pinToken: 0,
      unmapWhenRepaid: false,
      dedicated,
      fixedIndex: -1,
    };
    rememberSlab(slab);
    for (let i = 0; i < slotCount; i++) {
      slab.slots.push({
        pool,
        sizeClass,
        slab,
        offset: i * stride,
        view: null,
        viewLength: 0,
        owner: null,
        tracked: null,
        registered: null,
        stack: undefined,
        generation: 0,
        loans: 0,
        returnWhenRepaid: false,
      });
    }
    this.mapped.add(slab);
    sizeClass.osBytes += bytes;
    return slab;
  }

  /** Gives a slab back to the OS and its pages to the budget; a lent slab goes when its last loan is repaid. */
  unmap(slab: Slab): void {
    if (slab.loans > 0) {
      slab.unmapWhenRepaid = true;
      return;
    }
    const sizeClass = slab.sizeClass;
    sizeClass.osBytes -= slab.bytes;
    if (slab.dedicated) sizeClass.oversizeIdleBytes -= slab.free * slab.stride;
    this.mapped.delete(slab);
    slab.unmapped = true;
    forgetSlab(slab);
    native.free(slab.arrayBuffer);
    this.pool.publish();
    this.pool.shared.unreserve(slab.bytes / pageSize);
  }
}
