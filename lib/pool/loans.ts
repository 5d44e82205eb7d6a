// A pool's side of lending (lib/lending.ts): memory of this thread's slabs
// that the kernel or libuv is using. A lent slot released by its owner
// returns to the pool only when its last loan is repaid; a lent slab is
// pinned natively (native/memory.cc) and unmapped — by trim, close or an
// oversize return — only when its last loan is repaid. The borrowers are
// remembered, so that a forced close can tell them to stop.
import { native } from '../binding';
import { IobufError } from '../errors';
import type { Borrower, Loan } from '../lending';
import { closedError } from './shared';
import { type Slab, type Slot, viewOfSlot } from './size-classes';

/** What lending needs of its pool (BufferPool). */
export interface LendingPool {
  readonly strict: boolean;
  /** close() unmapped (or deferred) everything. */
  readonly freed: boolean;
  /** Ends a release that came while the slot was lent: detach or poison, then back to the pool. */
  finishRelease(slot: Slot, buffer: Buffer): void;
  /** This thread's slabs (SlabStore). */
  readonly slabs: { unmap(slab: Slab): void };
  /** This thread's waiters (WaitQueue). */
  readonly queue: { serve(): void };
  /** Closing (PoolCloser): the last lent slab of a closed pool was unmapped. */
  readonly closer: { finishIfDone(): void };
}

export class PoolLoans {
  /** Borrowers of this thread's memory now, and how many loans each holds. */
  private readonly borrowers = new Map<Borrower, number>();

  constructor(private readonly pool: LendingPool) {}

  lend(slot: Slot, borrower: Borrower | null): Loan {
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
        this.repay(slot, borrower);
      },
    };
  }

  /** A forced close: every borrower of this thread's memory is told to stop (ERR_IOBUF_POOL_CLOSED). */
  stopBorrowers(): void {
    for (const borrower of [...this.borrowers.keys()]) borrower.stopBorrowing(closedError());
  }

  private repay(slot: Slot, borrower: Borrower | null): void {
    const pool = this.pool;
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
        if (!pool.freed) pool.finishRelease(slot, slot.view!);
      }
      if (pool.freed && pool.strict) {
        const view = viewOfSlot(slot); // also a leak-tracked one (held weakly)
        if (view !== null) native.detach(view.buffer as ArrayBuffer);
      }
    }
    if (slab.loans === 0 && slab.unmapWhenRepaid) {
      slab.unmapWhenRepaid = false;
      pool.slabs.unmap(slab);
      pool.queue.serve();
      pool.closer.finishIfDone();
    }
  }
}
