// Housekeeping: once per event-loop turn with releases, a pool publishes this
// thread's counters to the shared block and gives idle slabs back to the OS
// (and so to the budget) when this thread keeps more than retainIdle, or when
// another thread waits for budget. While it keeps idle slabs it also watches
// the epoch, so that a waiter that comes later still gets them back.
import type { SharedState } from './shared';
import type { SizeClass, Slab } from './size-classes';

/** What housekeeping needs of its pool (BufferPool). */
export interface HousekeptPool {
  readonly shared: SharedState;
  /** The size classes, then the oversize row. */
  readonly classes: readonly SizeClass[];
  readonly retainIdle: number;
  /** close() unmapped (or deferred) everything. */
  readonly freed: boolean;
  /** This thread's waiters (WaitQueue). */
  readonly queue: { readonly length: number; serve(): void };
  /** This thread's slabs (SlabStore). */
  readonly slabs: { unmap(slab: Slab): void };
  publish(): void;
}

export class Housekeeper {
  /** An Atomics.waitAsync on the epoch is armed because this thread holds idle slabs (see watchIdle). */
  private watchingIdle = false;

  constructor(private readonly pool: HousekeptPool) {}

  /** Publishes this thread's counters; gives idle slabs back when over retainIdle or other threads wait. */
  run(): void {
    const pool = this.pool;
    pool.publish();
    const waiting = pool.shared.waiting;
    if (waiting) this.orderFreeLists();
    if ((waiting || this.idleBytes() > pool.retainIdle) && this.trim(waiting ? 0 : pool.retainIdle, undefined)) {
      pool.queue.serve();
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
  watchIdle(): void {
    const pool = this.pool;
    if (this.watchingIdle || pool.freed) return;
    // The epoch is read before the waiters are looked at: a waiter that comes
    // after the look has bumped it, so the wait below returns at once.
    const epoch = pool.shared.epoch();
    if (pool.shared.waiting && pool.queue.length === 0) this.trim(0, undefined);
    if (this.idleBytes() === 0) return;
    this.watchingIdle = true;
    pool.shared.afterEpoch(epoch, () => {
      this.watchingIdle = false;
      this.watchIdle();
    });
  }

  /** Orders every free list so that pop() takes the lowest address (see BufferPool.returnSlot). */
  orderFreeLists(): void {
    for (const sizeClass of this.pool.classes) sizeClass.orderByAddress();
  }

  /** Bytes this thread has mapped and not handed out. */
  idleBytes(): number {
    let idle = 0;
    for (const sizeClass of this.pool.classes) idle += sizeClass.idleBytes;
    return idle;
  }

  /**
   * Unmaps wholly idle slabs, except of `keep`, until at most `retain` idle
   * bytes are left; true when it unmapped any. It serves no waiter itself
   * (callers do, once it returns): serving from inside the loop would re-enter
   * SlabStore.take → trim while this loop still holds its list of slabs.
   */
  trim(retain: number, keep: SizeClass | undefined): boolean {
    let idle = this.idleBytes();
    if (idle <= retain) return false;
    let unmapped = false;
    // Free slots per slab, counted here rather than on every acquire and release.
    const freeCounts = new Map<Slab, number>();
    for (const sizeClass of this.pool.classes) {
      if (sizeClass === keep || sizeClass.free === null) continue;
      for (const slot of sizeClass.free) freeCounts.set(slot.slab, (freeCounts.get(slot.slab) ?? 0) + 1);
    }
    for (const [slab, free] of freeCounts) {
      if (idle <= retain) break;
      // Lent memory stays; registered slabs stay mapped until the pool closes.
      if (free !== slab.slots.length || slab.loans > 0 || slab.fixedIndex >= 0) continue;
      const list = slab.sizeClass.free!;
      let kept = 0;
      for (let i = 0; i < list.length; i++) if (list[i].slab !== slab) list[kept++] = list[i];
      list.length = kept;
      slab.free = free;
      idle -= slab.bytes;
      this.pool.slabs.unmap(slab);
      unmapped = true;
    }
    return unmapped;
  }
}
