// Waiting: a pool's FIFO queue of this thread's waiters (acquire() and
// acquireMany() when the budget is spent), and acquireSync() for workers that
// block. Every waiter holds a ticket of the shared queue (shared.ts), so that
// waiters in all threads are served in the order they came: only the head
// ticket may take new budget. A slot released in this thread goes straight to
// this thread's earliest waiter of its class (it needs no new budget).
//
// Waiters look again whenever the shared epoch moves (budget given back, a
// ticket done, a thread gone): asynchronously with Atomics.waitAsync here,
// blocking with Atomics.wait in acquireSync.
import { IobufError, abortError, validateAbortSignal, validateInteger, validateOptions } from '../errors';
import type { SizeClass, Slot } from './size-classes';
import { type SharedState, closedError } from './shared';

export interface AcquireOptions {
  signal?: AbortSignal;
  /** Milliseconds to wait before rejecting with ERR_IOBUF_BUDGET_TIMEOUT. */
  timeout?: number;
}

/** The longest a blocked acquireSync sleeps before it looks at the queue again (see acquireSync). */
const WAIT_SLICE_MS = 1000;

interface Waiter {
  /** Its place in the pool's FIFO queue (an int32 that wraps: compare with ===). */
  ticket: number;
  size: number;
  count: number; // > 1 for acquireMany
  sizeClass: SizeClass;
  /** Whether a released slot of its class may go straight to it (not for acquireMany, nor oversize). */
  takesHandoff: boolean;
  start: number;
  resolve(value: Buffer | Buffer[]): void;
  reject(error: Error): void;
  cleanup(): void;
}

/** What the queue needs of its pool (BufferPool). */
export interface WaitingPool {
  readonly shared: SharedState;
  /** close() unmapped (or deferred) everything: nobody is served any more. */
  readonly freed: boolean;
  tryAcquire(size: number): Buffer | null;
  tryAcquireMany(count: number, size: number): Buffer[] | null;
  /** This thread's slabs (SlabStore): new memory for `count` buffers, taken with `ticket`; null when the budget does not allow it now. */
  readonly slabs: { take(size: number, sizeClass: SizeClass | undefined, ticket: number | null, count: number): Buffer | Buffer[] | null };
  handOut(slot: Slot, size: number): Buffer;
  classFor(size: number): SizeClass;
  /** Orders every free list so that pop() takes the lowest address (while anyone waits, see returnSlot). */
  readonly housekeeper: { orderFreeLists(): void };
  /** The queue went from empty to not, or back: release() may change paths. */
  updateQuiet(): void;
}

function tooManyWaiters(): IobufError {
  return new IobufError('Too many waiters on this pool', 'ERR_IOBUF_UNSUPPORTED');
}

function timedOut(timeout: number): IobufError {
  return new IobufError(`No memory became free within ${timeout} ms`, 'ERR_IOBUF_BUDGET_TIMEOUT');
}

export class WaitQueue {
  /** This thread's waiters, in ticket order. */
  private readonly waiters: Waiter[] = [];
  private watching = false;
  /**
   * A ref'd timer held while this thread has waiters: a pending
   * Atomics.waitAsync does not keep a Node thread alive, so a worker whose
   * only pending work is `await pool.acquire()` would otherwise exit mid-wait.
   */
  private keepAlive: NodeJS.Timeout | null = null;

  constructor(private readonly pool: WaitingPool) {}

  /** This thread's waiters now. */
  get length(): number {
    return this.waiters.length;
  }

  /** `count` Buffers (a Buffer when count is 1) of `size` bytes; waits (FIFO) while the budget is spent. */
  enqueue(size: number, count: number, options: AcquireOptions = {}): Promise<Buffer | Buffer[]> {
    const pool = this.pool;
    try {
      validateOptions(options, 'options');
      const { signal, timeout } = options;
      if (timeout !== undefined) validateInteger(timeout, 'options.timeout', 0, 2 ** 31 - 1);
      validateAbortSignal(signal, 'options.signal');
      if (signal?.aborted) throw abortError(signal);
      const ready = count === 1 ? pool.tryAcquire(size) : pool.tryAcquireMany(count, size);
      if (ready !== null) return Promise.resolve(ready);
      const ticket = pool.shared.takeTicket();
      if (ticket === null) throw tooManyWaiters();
      pool.housekeeper.orderFreeLists();
      return new Promise((resolve, reject) => {
        let timer: NodeJS.Timeout | undefined;
        const sizeClass = pool.classFor(size);
        const waiter: Waiter = {
          ticket,
          size,
          count,
          sizeClass,
          takesHandoff: count === 1 && sizeClass.free !== null,
          start: performance.now(),
          resolve,
          reject,
          cleanup: () => {
            if (timer !== undefined) clearTimeout(timer);
            signal?.removeEventListener('abort', onAbort);
          },
        };
        const giveUp = (error: Error) => {
          if (this.remove(waiter)) reject(error);
        };
        const onAbort = () => giveUp(abortError(signal!));
        if (timeout !== undefined) timer = setTimeout(() => giveUp(timedOut(timeout)), timeout);
        signal?.addEventListener('abort', onAbort, { once: true });
        this.waiters.push(waiter);
        if (waiter.takesHandoff) sizeClass.waiting++;
        pool.updateQuiet();
        this.serve();
        this.watch();
      });
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Blocks this thread until a Buffer of exactly `size` bytes is free (see
   * BufferPool.acquireSync): throws ERR_IOBUF_WOULD_DEADLOCK when no other
   * thread could free memory meanwhile.
   */
  acquireSync(size: number, options: { timeout?: number } = {}): Buffer {
    const pool = this.pool;
    const shared = pool.shared;
    validateOptions(options, 'options');
    const { timeout = Infinity } = options;
    if (timeout !== Infinity) validateInteger(timeout, 'options.timeout', 0, 2 ** 31 - 1);
    const ready = pool.tryAcquire(size);
    if (ready !== null) return ready;
    if (this.waiters.length > 0) {
      throw new IobufError(
        "acquireSync would wait behind this thread's own pending acquire() calls, which cannot run while it blocks",
        'ERR_IOBUF_WOULD_DEADLOCK',
      );
    }
    if (shared.threads <= 1) {
      throw new IobufError(
        'acquireSync would wait forever: no other thread shares this pool, so nothing can free memory while this thread blocks',
        'ERR_IOBUF_WOULD_DEADLOCK',
      );
    }
    const ticket = shared.takeTicket();
    if (ticket === null) throw tooManyWaiters();
    pool.housekeeper.orderFreeLists();
    const start = performance.now();
    const sizeClass = pool.classFor(size);
    try {
      for (;;) {
        const epoch = shared.epoch();
        if (shared.closed) throw closedError();
        const buffer = pool.slabs.take(size, sizeClass, ticket, 1) as Buffer | null;
        if (buffer !== null) {
          shared.recordWait(performance.now() - start);
          return buffer;
        }
        const remaining = start + timeout - performance.now();
        if (remaining <= 0) throw timedOut(timeout);
        if (shared.threads <= 1) {
          throw new IobufError(
            'acquireSync would wait forever: every other thread sharing this pool has left it',
            'ERR_IOBUF_WOULD_DEADLOCK',
          );
        }
        // A thread that dies without JavaScript is woken for by native code
        // through the others' event loops; if every other thread is blocked
        // too, nobody can, so no single wait lasts longer than a slice.
        shared.waitEpoch(epoch, Math.min(remaining, WAIT_SLICE_MS));
      }
    } finally {
      shared.finishTicket(ticket);
    }
  }

  /** A released slot goes straight to this thread's earliest waiter of its class. */
  handTo(slot: Slot, sizeClass: SizeClass): void {
    const waiter = this.waiters.find((candidate) => candidate.takesHandoff && candidate.sizeClass === sizeClass)!;
    this.settle(waiter, this.pool.handOut(slot, waiter.size));
  }

  /** Serves this thread's waiters in ticket order for as long as memory allows. */
  serve(): void {
    const pool = this.pool;
    while (this.waiters.length > 0 && !pool.freed) {
      const waiter = this.waiters[0];
      let value: Buffer | Buffer[] | null;
      try {
        value = pool.slabs.take(waiter.size, waiter.sizeClass, waiter.ticket, waiter.count);
      } catch (error) {
        if (this.remove(waiter)) waiter.reject(error as Error);
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
      this.settle(waiter, pool.handOut(free.pop()!, waiter.size));
      i--; // settle() took it out of the queue
    }
  }

  /** While this thread has waiters, look again whenever any thread frees budget or a ticket finishes. */
  watch(): void {
    if (this.waiters.length === 0) {
      if (this.keepAlive !== null) clearInterval(this.keepAlive);
      this.keepAlive = null;
      return;
    }
    if (this.watching) return;
    const shared = this.pool.shared;
    // The epoch is read before the attempt: budget given back after the
    // attempt has bumped it, so the wait below returns at once (reading it
    // after the attempt could sleep through that release until a timeout).
    const epoch = shared.epoch();
    if (shared.closed) this.rejectAll();
    else this.serve();
    if (this.waiters.length === 0) {
      this.watch();
      return;
    }
    this.keepAlive ??= setInterval(() => {}, 2 ** 30);
    this.watching = true;
    shared.afterEpoch(epoch, () => {
      this.watching = false;
      this.watch();
    });
  }

  /** The pool closed: every waiter of this thread rejects with ERR_IOBUF_POOL_CLOSED. */
  rejectAll(): void {
    for (const waiter of [...this.waiters]) {
      if (this.remove(waiter)) waiter.reject(closedError());
    }
  }

  /** Takes `waiter` out of the queue; false when it was served or removed already. */
  private remove(waiter: Waiter): boolean {
    const index = this.waiters.indexOf(waiter);
    if (index < 0) return false;
    this.waiters.splice(index, 1);
    if (waiter.takesHandoff) waiter.sizeClass.waiting--;
    this.pool.updateQuiet();
    waiter.cleanup();
    this.pool.shared.finishTicket(waiter.ticket);
    return true;
  }

  private settle(waiter: Waiter, value: Buffer | Buffer[]): void {
    this.remove(waiter);
    this.pool.shared.recordWait(performance.now() - waiter.start);
    waiter.resolve(value);
  }
}
