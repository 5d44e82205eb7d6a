// BufferPool: tiered size classes over page-aligned slabs, one byte budget,
// FIFO waiting when the budget is spent, shared by worker threads.
//
// The hot path (tryAcquire / release of a recycled slot) is plain JS on
// objects this thread owns: a native call alone costs as much as a whole
// pure-JS acquire+release here (docs/benchmark.md). Each slot keeps the Buffer
// view it last handed out and hands it out again when the size matches, so
// steady-state acquires create nothing for the GC. That path, the slabs and
// their slots stay on this class; the rest is done by objects the pool owns,
// each in its file: the waiting queue (waiting.ts), leak tracking (leaks.ts),
// housekeeping and trimming (housekeeping.ts), close (closing.ts), lending
// (loans.ts) and io_uring registration (lib/uring/registration.ts). They reach
// the members marked @internal: lib/pool/ only, not part of the API.
//
// Threads: every thread maps its own slabs and keeps its own free lists (a
// Buffer cannot move between threads anyway: postMessage copies it). What the
// threads share is in shared.ts: the budget, the waiting queue, the close
// flag and the statistics.
import { native } from '../binding';
import { IobufError, invalidType, validateFunction, validateInteger, validateOptions, validateView } from '../errors';
import type { IoVecArray } from '../iovec/array';
import type { Borrower, Loan } from '../lending';
import { maxAllocationSize } from '../memory';
import { NodeBuffer } from '../node-buffer';
import { kSlot as pooledSlotKey, poolOf, rememberStrictView } from '../pooled';
import { FixedBufferRegistration, fixedBufferOf } from '../uring/registration';
import { type CloseOptions, PoolCloser } from './closing';
import { Housekeeper } from './housekeeping';
import { LeakTracker, trackingInterval } from './leaks';
import { PoolLoans } from './loans';
import { type PoolStats, type SharedState, Word, closedError } from './shared';
import { SharedBuffer } from './shared-buffer';
import { SlabStore } from './slabs';
import {
  type BufferPoolHandle,
  type BufferPoolOptions,
  type SharedSetup,
  type SizeClass,
  type Slot,
  classTable,
  createShared,
  openHandle,
} from './size-classes';
import { type AcquireOptions, WaitQueue } from './waiting';

/** A pooled buffer that releases itself at the end of a `using` scope. */
export interface Lease extends Disposable {
  readonly buffer: Buffer;
  release(): void;
}

/** lib/pooled.ts's key, as a constant of this module (release() reads it on every call). */
const kSlot = pooledSlotKey;
/** On a strict-mode view's own ArrayBuffer: the slab's ArrayBuffer, kept reachable. */
const kSlabKeepAlive = Symbol('iobuf.slabKeepAlive');

/** Every view the pool hands out carries its slot: one property load finds it again (see release). */
type PooledView = Buffer & { [kSlot]?: Slot };

/** `buffer` as a Lease: its release() (or the end of its scope) releases it to `pool` once. */
function leaseOf(pool: BufferPool, buffer: Buffer): Lease {
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    pool.release(buffer);
  };
  return { buffer, release, [Symbol.dispose]: release };
}

/** Set by BufferPool.attach() for the constructor it calls: a checked block and a checked copy of the options. */
let attaching: SharedSetup | null = null;

export class BufferPool {
  /** Slot sizes, ascending. */
  readonly sizeClasses: readonly number[];
  readonly maxMemory: number;
  readonly retainIdle: number;
  readonly strict: boolean;
  /** Pass to a worker with postMessage; `BufferPool.attach(handle)` there shares this pool. */
  readonly handle: BufferPoolHandle;

  /** @internal */ readonly shared: SharedState;
  /** @internal The size classes, then the oversize row. */
  readonly classes: SizeClass[];
  /** @internal */ readonly oversize: SizeClass;
  /** @internal This thread's slabs. */
  readonly slabs: SlabStore;
  /** @internal Made by `new BufferPool` (its close() closes the pool for every thread), not by attach(). */
  readonly owner: boolean;
  /** @internal Null with leakDetection 'off'. */
  readonly leaks: LeakTracker | null;
  /** @internal */ readonly queue: WaitQueue;
  /** @internal */ readonly housekeeper: Housekeeper;
  /** @internal */ readonly closer: PoolCloser;
  /** @internal */ readonly loans: PoolLoans;
  /** @internal close() unmapped (or deferred) everything: no acquire, no release from here on. */
  freed = false;
  /** @internal close() was called on this pool object (in this thread). */
  closedHere = false;

  private readonly control: Int32Array;
  /** The largest class whose slab fits the budget; bigger sizes get dedicated allocations. */
  private readonly largest: number;
  /** log2 of the smallest class when the ladder is consecutive powers of two, else -1. */
  private readonly powerShift: number;
  /** Power-of-two ladders: the class for sizes in (2^(k-1), 2^k] at index k; otherwise null. */
  private readonly classByLog2: (SizeClass | undefined)[] | null;
  private readonly poisonByte: number;
  /** Counts acquires down to the next leak-tracked one; never reaches 0 with detection off. */
  private leakCountdown: number;
  /** Housekeeping (publishing counters, trimming idle memory) runs once per event-loop turn with releases. */
  private housekeepingScheduled = false;
  /** True while release() may push straight onto a free list: no waiters here, not closing, no strict/poison work. */
  private quiet: boolean;
  /** Made by the first registration() call. */
  private fixedBuffers: FixedBufferRegistration | null = null;

  constructor(options: BufferPoolOptions = {}) {
    const attached = attaching;
    attaching = null;
    this.owner = attached === null;
    const { shared, options: sharedOptions } = attached ?? createShared(options);
    if (options.onLeak !== undefined) validateFunction(options.onLeak, 'options.onLeak');
    const { sizeClasses, retainIdle, hugePages, strict, poison, leakDetection } = sharedOptions;
    this.handle = { shared: shared.buffer, options: { ...sharedOptions, sizeClasses: [...sizeClasses] } };
    this.shared = shared;
    this.control = shared.control;
    shared.join(this); // from here on, the native side gives back what this thread holds if it dies

    this.sizeClasses = Object.freeze([...sizeClasses]);
    this.maxMemory = shared.maxMemory;
    this.retainIdle = retainIdle;
    this.strict = strict;
    this.slabs = new SlabStore(this, hugePages);
    this.poisonByte = poison === true ? 0xa5 : poison === false ? -1 : poison;
    this.quiet = !strict && this.poisonByte < 0;
    this.leakCountdown = trackingInterval(leakDetection);
    this.leaks = leakDetection === 'off' ? null : new LeakTracker(this, leakDetection, options.onLeak);
    ({
      classes: this.classes,
      oversize: this.oversize,
      largest: this.largest,
      powerShift: this.powerShift,
      classByLog2: this.classByLog2,
    } = classTable(sizeClasses, this.maxMemory));
    this.queue = new WaitQueue(this);
    this.housekeeper = new Housekeeper(this);
    this.closer = new PoolCloser(this);
    this.loans = new PoolLoans(this);
    // The region may have belonged to a thread that left: its counters carry
    // on here (they still add up in stats()), what it held does not. Buffers
    // it never released count as forced (gone with their thread).
    shared.adoptCounters(this.classes);
    for (const sizeClass of this.classes) sizeClass.forced = sizeClass.acquires - sizeClass.releases - sizeClass.leaks;
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
    attaching = openHandle(handle, () => validateOptions(options, 'options'));
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
    const sizeClass =
      table !== null && typeof size === 'number' && (size | 0) === size && size > 0 && size <= this.largest
        ? table[32 - Math.clz32(size - 1)]
        : this.classOf(size);
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
    return this.slabs.take(size, sizeClass, null, 1) as Buffer | null;
  }

  /** Gives `buffer` back. It must be the very Buffer an acquire returned, not a slice of it. */
  release(buffer: Buffer): void {
    // Not buffer.buffer/byteOffset: on a Buffer those getters cost more than the whole release.
    const slot = (buffer as PooledView | null | undefined)?.[kSlot];
    if (slot === undefined || slot.owner !== buffer || slot.pool !== this) {
      this.checkUnusualRelease(buffer, slot); // throws, or re-arms a leak-tracked slot
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

  /** @internal `slot`'s memory as a Buffer of `size` bytes, now out. */
  handOut(slot: Slot, size: number): Buffer {
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

  /** release() for strict or poisoning pools, oversize slots, lent slots, and while waiters (in any thread) or close() wait. */
  private releaseSlowly(slot: Slot, buffer: Buffer): void {
    if (slot.loans > 0) {
      // Lent to the kernel or libuv (lib/lending.ts): the caller's ownership
      // ended above, but the memory is neither detached, poisoned nor reused
      // until the last loan is repaid (PoolLoans finishes the release then).
      slot.view = buffer;
      slot.returnWhenRepaid = true;
      slot.sizeClass.awaitingRepay++;
      return;
    }
    this.finishRelease(slot, buffer);
  }

  /** @internal Detaches or poisons `buffer` as the options say, and gives its slot back. */
  finishRelease(slot: Slot, buffer: Buffer): void {
    if (this.strict) {
      native.detach(buffer.buffer as ArrayBuffer);
      slot.view = null;
    } else if (this.poisonByte >= 0) {
      buffer.fill(this.poisonByte);
    }
    this.returnSlot(slot);
    // Another thread waits for budget: if this release left its slab wholly
    // idle, unmap it now rather than at the end of the turn.
    if (this.control[Word.WAITERS] !== 0 && this.queue.length === 0) this.housekeeper.trim(0, undefined);
  }

  /** @internal A slot is back (released, or reclaimed from a leak): to a waiter, a free list, or the OS. */
  returnSlot(slot: Slot): void {
    const sizeClass = slot.sizeClass;
    if (sizeClass.waiting !== 0) {
      this.queue.handTo(slot, sizeClass);
    } else if (sizeClass.free === null) {
      const slab = slot.slab;
      slab.free++;
      sizeClass.oversizeInUseBytes -= slab.stride;
      sizeClass.oversizeIdleBytes += slab.stride;
      if (slab.free === slab.slots.length) {
        this.slabs.unmap(slab);
        this.queue.serve();
      }
    } else if (!this.closedHere) {
      // Someone waits for budget: reuse lowest addresses first, so that
      // the slabs at the top drain under churn and can be given back.
      if (this.control[Word.WAITERS] !== 0) sizeClass.insertByAddress(slot);
      else sizeClass.free.push(slot);
    }
    if (this.closedHere) this.closer.slotReturned();
  }

  /** @internal The size class for a valid `size` (the oversize row above the largest class). */
  classFor(size: number): SizeClass {
    return size > this.largest ? this.oversize : this.classOf(size)!;
  }

  /** Throws the right error for a release that failed the fast checks, unless it is a leak-tracked buffer. */
  private checkUnusualRelease(buffer: Buffer, slot: Slot | undefined): void {
    if (!ArrayBuffer.isView(buffer)) throw invalidType('a Buffer from this pool', 'buffer', buffer);
    if (this.freed) throw closedError();
    if (slot !== undefined && slot.pool === this) {
      if (slot.tracked !== null && this.leaks!.untrack(slot, buffer)) return;
      // (In the default mode the same Buffer object is handed out again, so a
      // second release is recognised only while its slot is still free.)
      if ((slot.owner === null && slot.tracked === null) || (this.strict && buffer.buffer.byteLength === 0)) {
        throw new IobufError('This buffer was released already', 'ERR_IOBUF_DOUBLE_RELEASE');
      }
    }
    throw new IobufError(
      'This buffer did not come from this pool, or is a slice of a pooled buffer (release the Buffer that acquire returned)',
      'ERR_IOBUF_FOREIGN_BUFFER',
    );
  }

  /** The acquire the countdown reached goes out tracked (leaks.ts). */
  private track(slot: Slot, view: Buffer): void {
    const leaks = this.leaks!;
    this.leakCountdown = leaks.interval;
    leaks.track(slot, view);
  }

  // -------------------------------------------------------------------------
  // Waiting (waiting.ts), scoped use and sharing
  // -------------------------------------------------------------------------

  /** A Buffer of exactly `size` bytes; waits (FIFO) while the budget is spent. */
  acquire(size: number, options?: AcquireOptions): Promise<Buffer> {
    return this.queue.enqueue(size, 1, options) as Promise<Buffer>;
  }

  /** `count` Buffers of `size` bytes carved from one contiguous region, reserved at once; waits like acquire. */
  acquireMany(count: number, size: number, options?: AcquireOptions): Promise<Buffer[]> {
    try {
      validateInteger(count, 'count', 1, 2 ** 20);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.queue.enqueue(size, count, options) as Promise<Buffer[]>;
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
    return this.slabs.take(size, this.classFor(size), null, count) as Buffer[] | null;
  }

  /**
   * Blocks this thread until a Buffer of exactly `size` bytes is free; meant
   * for worker threads. Only another thread can free memory while this one is
   * blocked, so when no other thread shares the pool (as on a main thread
   * with no workers attached), or when this thread's own acquire() calls are
   * queued ahead, it throws ERR_IOBUF_WOULD_DEADLOCK at once instead of hanging.
   */
  acquireSync(size: number, options: Pick<AcquireOptions, 'timeout'> = {}): Buffer {
    return this.queue.acquireSync(size, options);
  }

  /**
   * @internal close() has begun — on this pool object, or on the one made
   * with `new` (in any thread): every acquire throws ERR_IOBUF_POOL_CLOSED.
   */
  get closing(): boolean {
    return this.control[Word.CLOSED] !== 0 || this.closedHere;
  }

  /** @internal Whether release() can take the plain path. */
  updateQuiet(): void {
    this.quiet = this.queue.length === 0 && !this.closedHere && !this.strict && this.poisonByte < 0;
  }

  /** tryAcquire as a Lease, for `using lease = pool.tryLease(n)`: released at scope exit. */
  tryLease(size: number): Lease | null {
    const buffer = this.tryAcquire(size);
    return buffer === null ? null : leaseOf(this, buffer);
  }

  /** acquire as a Lease: `using lease = await pool.lease(4096)`. */
  async lease(size: number, options?: AcquireOptions): Promise<Lease> {
    return leaseOf(this, await this.acquire(size, options));
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
      throw new IobufError(
        'share() takes a Buffer this pool has out (the very Buffer an acquire returned, not a slice)',
        'ERR_IOBUF_FOREIGN_BUFFER',
      );
    }
    return new SharedBuffer(buffer, this);
  }

  // -------------------------------------------------------------------------
  // Statistics, housekeeping, close, lending
  // -------------------------------------------------------------------------

  /**
   * Counters for the whole pool (every thread sharing it), in total and per
   * size class. This thread's are exact; another thread's are as of the end
   * of its last event-loop turn (or its last miss, wait or close).
   */
  stats(): PoolStats {
    this.publish();
    return this.shared.stats(this.classes.map((sizeClass) => sizeClass.size));
  }

  /** @internal Copies this thread's counters into its region of the shared block. */
  publish(): void {
    this.shared.publish(this.classes);
  }

  private scheduleHousekeeping(): void {
    this.housekeepingScheduled = true;
    setImmediate(() => {
      this.housekeepingScheduled = false;
      if (!this.freed) this.housekeeper.run();
    });
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
    return this.closer.close(options);
  }

  /** `using pool = new BufferPool()`: force-closes at scope exit. */
  [Symbol.dispose](): void {
    void this.close({ force: true });
  }

  /** @internal Another thread left the pool without a word (native/pool.cc woke this thread): look at the queue again. */
  peerDeparted(): void {
    if (this.closer.left) return;
    this.shared.notify();
    if (this.queue.length > 0) this.queue.watch();
    else this.housekeeper.watchIdle();
  }

  /** @internal Lends the memory of `slot` (lib/pooled.ts finds the slot of a view to lend). */
  lendSlot(slot: Slot, borrower: Borrower | null): Loan {
    return this.loans.lend(slot, borrower);
  }

  // -------------------------------------------------------------------------
  // io_uring registration (lib/uring/registration.ts; docs/api.md "IoVecArray and vectored I/O")
  // -------------------------------------------------------------------------

  /**
   * An IoVecArray with one entry per slab of this thread's size classes, for
   * IORING_REGISTER_BUFFERS (`address`, `length`). A registered slab stays
   * mapped at the same address (and MADV_DONTFORK) until the pool is closed.
   * Append-only: a later call returns the same entries at the same indices
   * plus the slabs mapped since. May be empty when nothing is mapped yet.
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
