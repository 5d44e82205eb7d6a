// Closing: close() on the pool made with `new` closes it for every thread
// (the CLOSED word); on an attached one, for this thread, which so leaves the
// pool. Either way this thread's free slots are dropped, its waiters reject,
// and its memory is unmapped once its buffers are back (or at once with
// `force`, detaching them) and whatever is lent of it has been repaid. Then
// this thread leaves the pool's membership and close() resolves.
import { native } from '../binding';
import { IobufError, validateBoolean, validateInteger, validateOptions } from '../errors';
import type { LeakTracker } from './leaks';
import type { SharedState } from './shared';
import { type SizeClass, viewOfSlot } from './size-classes';
import type { SlabStore } from './slabs';

export interface CloseOptions {
  /** Milliseconds to wait for outstanding buffers before rejecting with ERR_IOBUF_CLOSE_TIMEOUT. */
  timeout?: number;
  /** Free the memory now, detaching every outstanding buffer. */
  force?: boolean;
}

/** What closing needs of its pool (BufferPool). */
export interface ClosingPool {
  readonly shared: SharedState;
  /** The size classes, then the oversize row. */
  readonly classes: readonly SizeClass[];
  readonly oversize: SizeClass;
  /** This thread's slabs. */
  readonly slabs: SlabStore;
  readonly strict: boolean;
  /** Made by `new BufferPool` (its close() closes the pool for every thread), not by attach(). */
  readonly owner: boolean;
  readonly leaks: LeakTracker | null;
  /** This thread's waiters (WaitQueue). */
  readonly queue: { rejectAll(): void };
  /** Loans of this thread's memory (PoolLoans). */
  readonly loans: { stopBorrowers(): void };
  /** close() was called on this pool object (in this thread). */
  closedHere: boolean;
  /** close() unmapped (or deferred) everything: no acquire, no release from here on. */
  freed: boolean;
  updateQuiet(): void;
  publish(): void;
}

export class PoolCloser {
  /** What close() returns: resolves once this thread left the pool. */
  private done: Promise<void> | null = null;
  private resolveDone: (() => void) | null = null;
  /** close() waits for this thread's buffers: everything is unmapped when the last is back. */
  private draining = false;
  /** Every slab is unmapped and this thread left the pool's membership. */
  left = false;

  constructor(private readonly pool: ClosingPool) {}

  close(options: CloseOptions = {}): Promise<void> {
    const pool = this.pool;
    try {
      validateOptions(options, 'options');
      const { timeout, force = false } = options;
      if (timeout !== undefined) validateInteger(timeout, 'options.timeout', 0, 2 ** 31 - 1);
      validateBoolean(force, 'options.force');
      if (pool.owner) pool.shared.markClosed();
      pool.closedHere = true;
      for (const sizeClass of pool.classes) if (sizeClass.free !== null) sizeClass.free.length = 0;
      pool.updateQuiet();
      pool.queue.rejectAll();
      pool.shared.wake();
      this.done ??= new Promise<void>((resolve) => {
        this.resolveDone = resolve;
      });
      if (force) {
        pool.loans.stopBorrowers();
        this.freeAll();
      } else if (this.inUse() === 0) {
        this.freeAll();
      } else {
        this.draining = true;
      }
      if (timeout === undefined) return this.done;
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () =>
            reject(
              new IobufError(
                `${this.inUse()} buffers were still out after ${timeout} ms; close({ force: true }) frees them anyway`,
                'ERR_IOBUF_CLOSE_TIMEOUT',
              ),
            ),
          timeout,
        );
        void this.done!.then(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** A slot came back to a closing pool: when it was the last out, everything is unmapped. */
  slotReturned(): void {
    if (this.draining && this.inUse() === 0) {
      this.draining = false;
      this.freeAll();
    }
  }

  /** After the last slab is unmapped (a lent one is unmapped when repaid): this thread leaves the pool and close() resolves. */
  finishIfDone(): void {
    const pool = this.pool;
    if (!pool.freed || pool.slabs.size > 0 || this.left) return;
    this.left = true;
    pool.oversize.oversizeInUseBytes = 0;
    pool.oversize.oversizeIdleBytes = 0;
    pool.publish();
    pool.shared.leave();
    this.resolveDone?.();
    this.resolveDone = null;
  }

  /** Unmaps every slab (a lent one when its loans are repaid); outstanding buffers become forced. */
  private freeAll(): void {
    const pool = this.pool;
    if (pool.freed) return;
    pool.freed = true;
    for (const slab of [...pool.slabs]) {
      for (const slot of slab.slots) {
        pool.leaks?.forget(slot);
        slot.owner = null; // a release after this finds no owner: ERR_IOBUF_POOL_CLOSED
        // Strict views have ArrayBuffers of their own; the others go with the
        // slab's. A lent one stays attached (libuv may still send from it)
        // until its loans are repaid. A leak-tracked one is found through its
        // WeakRef (slot.view is null then): left attached, it would read the
        // unmapped pages.
        const view = pool.strict && slot.loans === 0 ? viewOfSlot(slot) : null;
        if (view !== null) native.detach(view.buffer as ArrayBuffer);
      }
      pool.slabs.unmap(slab);
    }
    for (const sizeClass of pool.classes) {
      sizeClass.forced += sizeClass.inUse;
      if (sizeClass.free !== null) sizeClass.free.length = 0;
    }
    this.finishIfDone();
    this.draining = false;
  }

  /** Buffers this thread has out. */
  private inUse(): number {
    let inUse = 0;
    for (const sizeClass of this.pool.classes) inUse += sizeClass.inUse;
    return inUse;
  }
}
