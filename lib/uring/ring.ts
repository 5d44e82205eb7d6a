// IoRing: file I/O through io_uring, on the event loop of the thread that
// makes the ring (native/uring.h draws the whole path).
//
// This side validates arguments, makes and settles the promises and keeps
// every in-flight operation's view reachable; native code owns the ring and
// the memory lent to the kernel. Per operation: one native call that writes
// an SQE (no syscall), and a slot in #operations. Per tick in which
// operations started: one microtask that submits them all with one
// io_uring_enter. Per batch of completions: one call from native code into
// #settle, which reads {slot, result} pairs from the control block.
//
// Memory that is not native iobuf memory (a V8-heap Buffer) goes through a
// native bounce buffer; after a read, its bytes are copied to the view only
// if the view is still attached at the same address (uringCopyOut checks).
import { native } from '../binding';
import {
  IobufError,
  abortError,
  validateAbortSignal,
  validateBoolean,
  validateInstance,
  validateInteger,
  validateOptions,
  validateView,
} from '../errors';
import { IoVecArray, kLend, kRepay, kViewsIntact } from '../iovec/array';
import { IOV_MAX } from '../iovec/calls';
import { type Loan, lend } from '../lending';
import { BufferPool } from '../pool';
import { inUnregisteredSlab } from './registration';

// native/uring.h UringOp.
const enum Op {
  READ = 0,
  WRITE = 1,
  READV = 2,
  WRITEV = 3,
  FSYNC = 4,
}

// native/uring.h UringCounter: doubles after the control block's 16-byte header.
const enum Counter {
  OPERATIONS = 0,
  ENTER_CALLS = 1,
  WAKEUPS = 2,
  COMPLETIONS = 3,
  FIXED = 4,
  IN_PLACE = 5,
  BOUNCED = 6,
  CANCELS = 7,
  COUNT = 8,
}
const CONTROL_HEADER_BYTES = 16;

// native/uring.h UringSubmitFlags: what a submission returns is (slot << 3) | flags.
const SUBMIT_BOUNCED = 2;
const SUBMIT_IN_PLACE = 4;
const SLOT_SHIFT = 3;

const MAX_POSITION = Number.MAX_SAFE_INTEGER;
const DEFAULT_ENTRIES = 256;
const MAX_ENTRIES = 4096;
/** The most fixed buffers a ring registers (the kernel's IORING_MAX_REG_BUFFERS). */
const MAX_FIXED_BUFFERS = 16384;
/** The smallest slab a pool maps for a size class (64 KiB unless the budget is tiny). */
const SMALL_SLAB = 64 * 1024;

export type IoRingSupport =
  | { ok: true }
  | {
      ok: false;
      /** The errno's name (`EPERM`, `ENOSYS`, …), or `ERR_IOBUF_UNSUPPORTED` for a kernel too old. */
      code: string;
      /** Negative, as Node reports it, when the kernel refused. */
      errno?: number;
      /** Why, in words: what switched io_uring off, or what is missing. */
      reason: string;
    };

export interface IoRingOptions {
  /** Submission queue entries: operations in the kernel at once (more wait in a queue). 1–4096, default 256. */
  entries?: number;
  /** Register this pool's slabs as fixed buffers: a read or write of one of its Buffers is READ_FIXED/WRITE_FIXED. */
  pool?: BufferPool;
}

export interface IoRingOperationOptions {
  /** Cancels the operation (IORING_OP_ASYNC_CANCEL); the promise rejects with ABORT_ERR once the kernel is done. */
  signal?: AbortSignal;
}

export interface IoRingFsyncOptions extends IoRingOperationOptions {
  /** fdatasync(2) instead of fsync(2). Default false. */
  datasync?: boolean;
}

export interface IoRingCloseOptions {
  /** Cancel the operations in flight instead of waiting for them. Default false. */
  force?: boolean;
}

export interface IoRingStats {
  /** Operations started. */
  operations: number;
  /** Operations completed. */
  completions: number;
  /** Operations started and not yet settled. */
  pending: number;
  /** io_uring_enter calls made to submit (one per tick that started operations, when nothing overflows). */
  submitCalls: number;
  /** Times the ring's eventfd woke the event loop with completions. */
  wakeups: number;
  /** Reads/writes into registered memory (READ_FIXED/WRITE_FIXED). */
  fixed: number;
  /** Operations on native memory that is not registered (pinned, used in place). */
  inPlace: number;
  /** Operations whose memory went through a bounce buffer (V8-heap memory). */
  bounced: number;
  /** ASYNC_CANCEL requests sent (aborts, close({ force })). */
  cancels: number;
  /** The pool's slabs registered as fixed buffers. */
  fixedBuffers: number;
}

/** An operation between its start and its settling. */
class Operation {
  resolve!: (bytes: number) => void;
  reject!: (error: Error) => void;
  aborted = false;
  onAbort: (() => void) | null = null;
  /** The loan of `view`'s memory (lib/lending.ts; a vectored call's views are lent by its IoVecArray). */
  loan: Loan | null = null;

  constructor(
    readonly syscall: string,
    /** The view read into or written from (null for fsync and vectored calls): kept reachable. */
    readonly view: ArrayBufferView | null,
    /** The lent IoVecArray of readv/writev. */
    readonly iov: IoVecArray | null,
    /** A read through a bounce buffer: its bytes are copied out at completion. */
    readonly copyOut: boolean,
    readonly signal: AbortSignal | undefined,
  ) {}
}

/**
 * Why this runtime cannot drive a ring, or null. The ring's completions are
 * watched with libuv (uv_poll on the loop Node-API hands out); Bun and Deno
 * load the addon but their libuv is a stub that aborts the process on uv_poll.
 */
function runtimeProblem(): string | null {
  const versions = process.versions as Record<string, string | undefined>;
  if (versions.bun !== undefined) return 'Bun gives addons no libuv event loop to watch the ring with (uv_poll)';
  if (versions.deno !== undefined) return 'Deno gives addons no libuv event loop to watch the ring with (uv_poll)';
  return null;
}

function closedError(): IobufError {
  return new IobufError('This IoRing is closed', 'ERR_IOBUF_URING_CLOSED');
}

function forcedError(syscall: string): IobufError {
  return new IobufError(
    `The IoRing was closed with { force: true } while this ${syscall} was in flight; it may or may not have transferred bytes`,
    'ERR_IOBUF_URING_CLOSED',
  );
}

function detachedError(): IobufError {
  return new IobufError(
    'The buffer was detached (transferred or freed) while the read was in flight; the bytes read were dropped',
    'ERR_IOBUF_DETACHED',
  );
}

function validatePosition(position: unknown): number {
  if (position === null || position === undefined) return -1;
  validateInteger(position, 'position', 0, MAX_POSITION);
  return position;
}

function validateSignal(options: IoRingOperationOptions | undefined): AbortSignal | undefined {
  if (options === undefined) return undefined;
  validateOptions(options, 'options');
  const { signal } = options;
  validateAbortSignal(signal, 'options.signal');
  return signal;
}

export class IoRing {
  /**
   * Whether a ring can be made here: the kernel may be too old, io_uring
   * switched off (sysctl kernel.io_uring_disabled), or blocked by a seccomp
   * profile (container runtimes' defaults do). Makes and closes a small ring.
   */
  static supported(): IoRingSupport {
    const problem = runtimeProblem();
    if (problem !== null) return { ok: false, code: 'ERR_IOBUF_UNSUPPORTED', reason: problem };
    const failure = native.uringProbe();
    if (failure === null) return { ok: true };
    const [code, errno, reason] = failure;
    return errno !== 0 ? { ok: false, code, errno, reason } : { ok: false, code, reason };
  }

  /** Submission queue entries, as the kernel sized the ring (a power of two). */
  readonly entries: number;
  /** The pool whose slabs are registered, or null. */
  readonly pool: BufferPool | null;

  #handle: ArrayBuffer;
  #counters: Float64Array;
  #completions: Int32Array;
  /** By slot: the operations in flight. */
  #operations: (Operation | undefined)[] = [];
  #pending = 0;
  #flushQueued = false;
  #closing = false;
  #forced = false;
  #shut = false;
  #closed: Promise<void> | null = null;
  #resolveClosed: (() => void) | null = null;
  #fixedBuffers = 0;
  /** No more registrations: one failed (RLIMIT_MEMLOCK) or the table is full. */
  #registrationStopped = false;
  /** #submit for queueMicrotask, and #settle for native code (the ring's dispatcher), bound to this ring. */
  #flush = (): void => this.#submit();
  #dispatch = (count: number): void => this.#settle(count);

  constructor(options: IoRingOptions = {}) {
    validateOptions(options, 'options');
    const { entries = DEFAULT_ENTRIES, pool } = options;
    validateInteger(entries, 'options.entries', 1, MAX_ENTRIES);
    if (pool !== undefined) validateInstance(pool, BufferPool, 'options.pool', 'a BufferPool');
    // Registered slabs are never unmapped while the pool lives, so the
    // budget bounds how many there can be.
    const problem = runtimeProblem();
    if (problem !== null) {
      throw Object.assign(new IobufError(`ERR_IOBUF_URING_UNAVAILABLE: ${problem}`, 'ERR_IOBUF_URING_UNAVAILABLE'), { reason: problem });
    }
    const tableSize = pool === undefined ? 0 : Math.min(MAX_FIXED_BUFFERS, Math.ceil(pool.maxMemory / SMALL_SLAB) + 64);
    const [handle, sqEntries, capacity] = native.uringCreate(entries, tableSize, this.#dispatch);
    this.#handle = handle;
    this.#counters = new Float64Array(handle, CONTROL_HEADER_BYTES, Counter.COUNT);
    this.#completions = new Int32Array(handle, CONTROL_HEADER_BYTES + 8 * Counter.COUNT, 2 * capacity);
    this.entries = sqEntries;
    this.pool = pool ?? null;
    if (pool !== undefined) {
      try {
        this.#register(pool);
      } catch (error) {
        this.#shut = true;
        native.uringClose(handle);
        throw error;
      }
    }
  }

  /** Operations started and not yet settled. */
  get pending(): number {
    return this.#pending;
  }

  /** True once close() was called. */
  get closed(): boolean {
    return this.#closing;
  }

  /**
   * Reads into the whole `buffer` at `position` (null or omitted: at the
   * file position, as read(2) does; for pipes and sockets). Resolves with
   * the bytes read: fewer than asked at the end of the file, 0 past it.
   */
  read(fd: number, buffer: ArrayBufferView, position?: number | null, options?: IoRingOperationOptions): Promise<number> {
    return this.#transfer(Op.READ, 'read', fd, buffer, position, options);
  }

  /** Writes the whole `buffer` at `position` (null or omitted: at the file position). Resolves with the bytes written. */
  write(fd: number, buffer: ArrayBufferView, position?: number | null, options?: IoRingOperationOptions): Promise<number> {
    return this.#transfer(Op.WRITE, 'write', fd, buffer, position, options);
  }

  /**
   * readv into the live entries of `iov` (at most IOV_MAX of them). The array
   * is lent to the operation until it settles (ERR_IOBUF_IOVEC_BUSY for
   * changes meanwhile); it is not advanced.
   */
  readv(fd: number, iov: IoVecArray, position?: number | null, options?: IoRingOperationOptions): Promise<number> {
    return this.#vectored(Op.READV, 'readv', fd, iov, position, options);
  }

  /** writev of the live entries of `iov` (at most IOV_MAX). May write less than `iov.byteLength`. */
  writev(fd: number, iov: IoVecArray, position?: number | null, options?: IoRingOperationOptions): Promise<number> {
    return this.#vectored(Op.WRITEV, 'writev', fd, iov, position, options);
  }

  /** fsync(2), or fdatasync(2) with `datasync`. Resolves with 0. */
  fsync(fd: number, options?: IoRingFsyncOptions): Promise<number> {
    try {
      validateInteger(fd, 'fd', 0, 2 ** 31 - 1);
      const signal = validateSignal(options);
      const datasync = options?.datasync ?? false;
      validateBoolean(datasync, 'options.datasync');
      const early = this.#refuse(signal);
      if (early !== null) return early;
      const submitted = native.uringFsync(this.#handle, fd, datasync);
      return this.#started(submitted, new Operation(datasync ? 'fdatasync' : 'fsync', null, null, false, signal));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * No new operations from now on (ERR_IOBUF_URING_CLOSED); resolves once
   * every operation in flight has settled and the ring is gone. With
   * `force`, the operations in flight are cancelled: each rejects with
   * ERR_IOBUF_URING_CLOSED (ABORT_ERR if its signal aborted first) — when the
   * kernel has given its memory back, never before.
   */
  close(options: IoRingCloseOptions = {}): Promise<void> {
    try {
      validateOptions(options, 'options');
      const { force = false } = options;
      validateBoolean(force, 'options.force');
      this.#closing = true;
      if (force && !this.#forced && !this.#shut) {
        this.#forced = true;
        for (let dropped: number; (dropped = native.uringCancelAll(this.#handle)) > 0; ) this.#settle(dropped);
        this.#scheduleFlush();
      }
      if (this.#pending === 0) {
        this.#shutdown();
        return Promise.resolve();
      }
      return (this.#closed ??= new Promise<void>((resolve) => {
        this.#resolveClosed = resolve;
      }));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** `await using ring = new IoRing()`: close() at scope exit (waits for operations in flight). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  stats(): IoRingStats {
    const counters = this.#counters;
    return {
      operations: counters[Counter.OPERATIONS],
      completions: counters[Counter.COMPLETIONS],
      pending: this.#pending,
      submitCalls: counters[Counter.ENTER_CALLS],
      wakeups: counters[Counter.WAKEUPS],
      fixed: counters[Counter.FIXED],
      inPlace: counters[Counter.IN_PLACE],
      bounced: counters[Counter.BOUNCED],
      cancels: counters[Counter.CANCELS],
      fixedBuffers: this.#fixedBuffers,
    };
  }

  // -------------------------------------------------------------------------
  // Internals
  // -------------------------------------------------------------------------

  #transfer(
    op: Op,
    syscall: string,
    fd: number,
    buffer: ArrayBufferView,
    position: number | null | undefined,
    options: IoRingOperationOptions | undefined,
  ): Promise<number> {
    try {
      validateInteger(fd, 'fd', 0, 2 ** 31 - 1);
      validateView(buffer, 'buffer');
      const offset = validatePosition(position);
      const signal = validateSignal(options);
      const early = this.#refuse(signal);
      if (early !== null) return early;
      const submitted = native.uringTransfer(this.#handle, op, fd, buffer, offset);
      if (
        (submitted & SUBMIT_IN_PLACE) !== 0 &&
        this.pool !== null &&
        !this.#registrationStopped &&
        inUnregisteredSlab(this.pool, buffer)
      ) {
        // A slab mapped since the last registration: register it for the next operations.
        this.#registerLater(this.pool);
      }
      const operation = new Operation(syscall, buffer, null, op === Op.READ && (submitted & SUBMIT_BOUNCED) !== 0, signal);
      operation.loan = lend(buffer); // release()/free()/a pool's close of it wait for the kernel
      return this.#started(submitted, operation);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  #vectored(
    op: Op,
    syscall: string,
    fd: number,
    iov: IoVecArray,
    position: number | null | undefined,
    options: IoRingOperationOptions | undefined,
  ): Promise<number> {
    try {
      validateInteger(fd, 'fd', 0, 2 ** 31 - 1);
      validateInstance(iov, IoVecArray, 'iov', 'an IoVecArray');
      const offset = validatePosition(position);
      const signal = validateSignal(options);
      const early = this.#refuse(signal);
      if (early !== null) return early;
      const [bounds, length] = iov[kLend]();
      let submitted: number;
      try {
        submitted = native.uringVectored(this.#handle, op, fd, bounds, Math.min(length, IOV_MAX), offset);
      } catch (error) {
        iov[kRepay]();
        throw error;
      }
      return this.#started(submitted, new Operation(syscall, null, iov, op === Op.READV && (submitted & SUBMIT_BOUNCED) !== 0, signal));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** A rejection for an operation that must not start (closed ring, aborted signal), else null. */
  #refuse(signal: AbortSignal | undefined): Promise<number> | null {
    if (this.#closing) return Promise.reject(closedError());
    if (signal?.aborted) return Promise.reject(abortError(signal));
    return null;
  }

  /** Records an operation the native side accepted; its promise. */
  #started(submitted: number, operation: Operation): Promise<number> {
    const slot = submitted >>> SLOT_SHIFT;
    const promise = new Promise<number>((resolve, reject) => {
      operation.resolve = resolve;
      operation.reject = reject;
    });
    this.#operations[slot] = operation;
    this.#pending++;
    const signal = operation.signal;
    if (signal !== undefined) {
      operation.onAbort = () => this.#abort(slot, operation);
      signal.addEventListener('abort', operation.onAbort, { once: true });
    }
    this.#scheduleFlush();
    return promise;
  }

  #scheduleFlush(): void {
    if (this.#flushQueued) return;
    this.#flushQueued = true;
    queueMicrotask(this.#flush);
  }

  /** Every operation started in this tick goes to the kernel in one io_uring_enter. */
  #submit(): void {
    this.#flushQueued = false;
    if (!this.#shut) native.uringSubmit(this.#handle);
  }

  #abort(slot: number, operation: Operation): void {
    if (this.#operations[slot] !== operation || operation.aborted) return;
    operation.aborted = true;
    const dropped = native.uringCancel(this.#handle, slot);
    if (dropped > 0) this.#settle(dropped);
    else this.#scheduleFlush();
  }

  /**
   * Settles `count` completed operations, whose {slot, result} pairs native
   * code wrote into the control block. Called by native code (one call per
   * batch reaped after a wakeup) and by cancellations of queued operations.
   */
  #settle(count: number): void {
    const completions = this.#completions;
    for (let i = 0; i < count; i++) {
      const slot = completions[2 * i];
      const result = completions[2 * i + 1];
      const operation = this.#operations[slot];
      if (operation === undefined) continue;
      this.#operations[slot] = undefined;
      this.#pending--;
      let failure: Error | null = null;
      if (operation.copyOut && result > 0) {
        const iov = operation.iov;
        const target = iov === null ? operation.view! : iov[kViewsIntact]();
        if (native.uringCopyOut(this.#handle, slot, target) < 0) failure = detachedError();
      }
      if (operation.iov !== null) operation.iov[kRepay]();
      operation.loan?.repay();
      if (operation.onAbort !== null) operation.signal!.removeEventListener('abort', operation.onAbort);
      if (operation.aborted) failure = abortError(operation.signal!);
      else if (this.#forced) failure = forcedError(operation.syscall);
      else if (result < 0) failure = native.uringError(-result, operation.syscall);
      if (failure !== null) operation.reject(failure);
      else operation.resolve(result);
    }
    if (this.#pending === 0 && this.#closing) this.#shutdown();
  }

  #shutdown(): void {
    if (this.#shut) return;
    this.#shut = true;
    native.uringClose(this.#handle);
    this.#resolveClosed?.();
  }

  /** Registers the pool's slabs that are not registered yet (append-only, so the indices match the pool's). */
  #register(pool: BufferPool): void {
    const registration = pool.registration();
    try {
      const wanted = registration.length - this.#fixedBuffers;
      if (wanted <= 0) return;
      const [registered, error] = native.uringRegister(this.#handle, registration.buffer, this.#fixedBuffers, wanted);
      this.#fixedBuffers += registered;
      if (error !== null) throw error;
      if (registered < wanted) this.#registrationStopped = true; // the table is full
    } finally {
      registration.close();
    }
  }

  /** #register for a slab met in an operation: a failure leaves its operations unregistered (plain READ/WRITE). */
  #registerLater(pool: BufferPool): void {
    try {
      this.#register(pool);
    } catch (error) {
      this.#registrationStopped = true;
      process.emitWarning(
        `IoRing: registering the pool's new slabs failed (${(error as Error).message}); operations on them use plain READ/WRITE`,
        { code: 'IOBUF_URING_REGISTRATION' },
      );
    }
  }
}
