// SocketWriter: the output side of one connection. What a server sends to a
// socket during one tick of the event loop is gathered into one Gatherer (the
// "batch") and leaves in one vectored write (Gatherer.writeTo: cork, writes,
// uncork, which libuv turns into one writev).
//
// At most one write is in flight. While it is, the next batch keeps
// collecting, and it leaves as soon as the write before it has completed:
// when the peer reads slowly, batches grow and writes get fewer, instead of
// a queue of small writes waiting for 'drain'. Two Gatherers take turns (one
// collecting, one being written), so a busy gatherer is never put into.
//
// Ownership. The writer owns its gatherers and what they hold (scratch, owned
// buffers); releaseAfterWrite() hands it anything else with a release() (a
// Frame whose bytes a response refers to), released once the batch it came
// with is with the kernel, or has failed. On a socket error or close,
// everything not yet written is released at once, and the batch in flight
// as soon as libuv has let go of it (Gatherer.writeTo settles after 'close').
//
// Order. Batches leave in the order they were collected; end() ends the
// socket only after the last batch has been handed to the kernel
// (socket.end() on its own can overtake writes that wait for 'drain').
//
// Each batch leaves through Gatherer.writeTo, whose direct path makes the
// common case one writev(2) on the socket's descriptor during the call (a
// TCP or pipe net.Socket with nothing queued), and sends what the kernel did
// not take through the stream, behind nothing.
import { EventEmitter } from 'node:events';
import type { Writable } from 'node:stream';
import { IobufError, validateInteger, validateOneOf, invalidType } from '../errors';
import { Gatherer } from './gatherer';
import { firstReleaseError, validatePoolOption } from './segments';
import type { BufferPool } from '../pool';

export interface SocketWriterOptions {
  /** Where the gatherers' scratch memory comes from. */
  pool: BufferPool;
  /** Scratch chunk size of the gatherers (see GathererOptions.chunkSize). Default 16 KiB. */
  chunkSize?: number;
  /** queuedBytes at which needDrain turns true. Default 1 MiB. */
  highWaterMark?: number;
  /** What a put does when the pool's budget is spent (see GathererOptions). Default 'heap'. */
  onBudgetExhausted?: 'heap' | 'throw';
}

export interface SocketWriterStats {
  /** Batches written (one vectored write each). */
  writes: number;
  /** Of those, batches the kernel took whole during the write call (Gatherer.writeTo's direct path). */
  directWrites: number;
  /** Bytes handed to the kernel. */
  bytesWritten: number;
  /** Bytes put but not handed to the kernel yet (the batch collecting and the one in flight). */
  queuedBytes: number;
}

/** Anything with a release(): a Frame, a pool lease. */
export interface Releasable {
  release(): void;
}

const OPEN = 0;
const ENDING = 1;
const CLOSED = 2;

const KiB = 1024;

interface FlushWaiter {
  /** Resolved once bytesWritten reaches this. */
  target: number;
  resolve(): void;
  reject(error: Error): void;
}

interface Waiter {
  resolve(): void;
  reject(error: Error): void;
}

function flushOnTick(writer: SocketWriter): void {
  writer[kTick]();
}

const kTick = Symbol('iobuf.socketWriter.tick');

export class SocketWriter extends EventEmitter {
  readonly socket: Writable;
  readonly pool: BufferPool;
  readonly highWaterMark: number;
  private readonly lowWaterMark: number;
  private readonly gathererOptions: { pool: BufferPool; chunkSize: number; onBudgetExhausted: 'heap' | 'throw' };

  /** The batch collecting, and what to release once it has been written. */
  private open: Gatherer;
  private openHeld: Releasable[] = [];
  /** The batch in flight (null: none), its byte count and what to release after it. */
  private writing: Gatherer | null = null;
  private writingBytes = 0;
  private writingHeld: Releasable[] = [];
  /** The batch in flight settled during writeTo() (the direct path took it whole, or it failed at once). */
  private writingSettled = false;
  /** A gatherer that finished its write and was reset, for the next rotation. */
  private idle: Gatherer | null = null;

  private scheduled = false;
  private state = OPEN;
  /** 'finish' was seen: the end() was clean. */
  private finished = false;
  private failure: Error | null = null;
  /** needDrain was seen true: 'drain' is owed once queuedBytes falls to the low mark. */
  private drainOwed = false;

  private writes = 0;
  private directWrites = 0;
  private written = 0;
  private flushWaiters: FlushWaiter[] = [];
  private drainWaiters: Waiter[] = [];
  private endWaiter: Waiter | null = null;
  private endPromise: Promise<void> | null = null;
  private endSent = false;

  // Bound once: one pair of handlers for every write.
  private readonly onWritten = () => this.writeDone(null);
  private readonly onWriteFailed = (error: Error) => this.writeDone(error);
  private readonly onSocketError = (error: Error) => {
    this.failure ??= error;
  };
  private readonly onSocketFinish = () => {
    this.finished = true;
    if (this.endWaiter !== null && this.state !== CLOSED) {
      const waiter = this.endWaiter;
      this.endWaiter = null;
      waiter.resolve();
    }
  };
  private readonly onSocketClose = () => this.close(null);

  constructor(socket: Writable, options: SocketWriterOptions) {
    super();
    if (
      socket === null ||
      typeof socket !== 'object' ||
      typeof (socket as Writable).write !== 'function' ||
      typeof (socket as Writable).on !== 'function'
    ) {
      throw invalidType('a net.Socket or stream.Writable', 'socket', socket);
    }
    validatePoolOption(options);
    const { chunkSize = 16 * KiB, highWaterMark = 1024 * KiB, onBudgetExhausted = 'heap' } = options;
    validateInteger(chunkSize, 'options.chunkSize', 64, 2 ** 30);
    validateInteger(highWaterMark, 'options.highWaterMark', 1, Number.MAX_SAFE_INTEGER);
    validateOneOf(onBudgetExhausted, 'options.onBudgetExhausted', ['heap', 'throw'] as const);
    this.socket = socket;
    this.pool = options.pool;
    this.highWaterMark = highWaterMark;
    this.lowWaterMark = Math.floor(highWaterMark / 2);
    this.gathererOptions = { pool: options.pool, chunkSize, onBudgetExhausted };
    this.open = new Gatherer(this.gathererOptions);
    // For the writer's lifetime: a socket error must not go unhandled while
    // no write is pending (Gatherer.writeTo listens only during a write).
    socket.on('error', this.onSocketError);
    socket.on('finish', this.onSocketFinish);
    socket.on('close', this.onSocketClose);
    if (socket.destroyed) this.close(null);
  }

  // -------------------------------------------------------------------------
  // Sending
  // -------------------------------------------------------------------------

  /**
   * The gatherer collecting this tick's output: put a whole message into it
   * (in one synchronous run: the batch may leave at any await), and it leaves
   * with everything else put this tick, in one vectored write, once the
   * current JavaScript work is done (process.nextTick) or at flush(). Do not
   * keep it past that: the writer rotates its gatherers. Throws
   * ERR_IOBUF_WRITER_CLOSED after end(), destroy() or the socket's close.
   */
  batch(): Gatherer {
    if (this.state !== OPEN) throw this.closedError();
    if (!this.scheduled) {
      this.scheduled = true;
      process.nextTick(flushOnTick, this);
    }
    return this.open;
  }

  /**
   * Releases `resource` once the batch collecting now has been written (or
   * has failed, or was discarded): for a Frame whose bytes the batch refers
   * to with putBytes. On a closed writer it is released at once.
   */
  releaseAfterWrite(resource: Releasable): void {
    if (resource === null || typeof resource !== 'object' || typeof resource.release !== 'function') {
      throw invalidType('an object with a release() method', 'resource', resource);
    }
    if (this.state === CLOSED) {
      resource.release();
      return;
    }
    this.openHeld.push(resource);
  }

  /** Sends the batch now rather than at the end of the tick (if no write is in flight; else right after it). */
  flush(): void {
    if (this.writing === null && this.state !== CLOSED && this.open.byteLength > 0) this.startWrite();
  }

  /** Resolves once every byte put so far has been handed to the kernel; rejects if the socket fails first. */
  flushed(): Promise<void> {
    const target = this.written + this.writingBytes + this.open.byteLength;
    if (target === this.written) return Promise.resolve();
    if (this.state === CLOSED) return Promise.reject(this.closedError());
    this.flush();
    return new Promise((resolve, reject) => this.flushWaiters.push({ target, resolve, reject }));
  }

  // -------------------------------------------------------------------------
  // Backpressure
  // -------------------------------------------------------------------------

  /** Bytes handed to the kernel so far. */
  get bytesWritten(): number {
    return this.written;
  }

  /** Bytes put but not yet handed to the kernel: the batch collecting plus the one in flight. */
  get queuedBytes(): number {
    return this.open.byteLength + this.writingBytes;
  }

  /**
   * True while queuedBytes is at or above highWaterMark: stop producing for
   * this connection until 'drain' (or drained()). The writer itself never
   * refuses or drops bytes.
   */
  get needDrain(): boolean {
    if (this.open.byteLength + this.writingBytes < this.highWaterMark) return false;
    this.drainOwed = true;
    return true;
  }

  /** Resolves at once when needDrain is false, else at the next 'drain'; rejects if the writer closes first. */
  drained(): Promise<void> {
    if (this.state === CLOSED) return Promise.reject(this.closedError());
    if (!this.needDrain) return Promise.resolve();
    return new Promise((resolve, reject) => this.drainWaiters.push({ resolve, reject }));
  }

  // -------------------------------------------------------------------------
  // Ending
  // -------------------------------------------------------------------------

  /**
   * No more batches: writes what is queued, then ends the socket
   * (socket.end()) after the last write has completed. Resolves at the
   * socket's 'finish'; rejects if the socket fails first. Calling it again
   * returns the same promise.
   */
  end(): Promise<void> {
    if (this.endPromise !== null) return this.endPromise;
    if (this.state === CLOSED) {
      this.endPromise = this.finished && this.failure === null ? Promise.resolve() : Promise.reject(this.closedError());
      return this.endPromise;
    }
    this.state = ENDING;
    this.endPromise = new Promise<void>((resolve, reject) => {
      this.endWaiter = { resolve, reject };
    });
    this.flush();
    if (this.writing === null) this.endSocket();
    return this.endPromise;
  }

  /**
   * Destroys the socket (with `error`, if given). What was not written is
   * discarded and released; pending flushed()/drained()/end() promises reject.
   */
  destroy(error?: Error): void {
    if (error !== undefined) this.failure ??= error;
    if (!this.socket.destroyed) this.socket.destroy(error);
    if (this.state !== CLOSED) this.close(null);
  }

  /** True once the socket has closed (or the writer was destroyed). */
  get closed(): boolean {
    return this.state === CLOSED;
  }

  /** The error that ended the writer: the socket's, or ERR_IOBUF_SOCKET_CLOSED when it closed with bytes unwritten; null otherwise. */
  get error(): Error | null {
    return this.failure;
  }

  stats(): SocketWriterStats {
    return { writes: this.writes, directWrites: this.directWrites, bytesWritten: this.written, queuedBytes: this.queuedBytes };
  }

  // -------------------------------------------------------------------------
  // Internals
  // -------------------------------------------------------------------------

  /** The end-of-tick flush batch() scheduled. */
  [kTick](): void {
    this.scheduled = false;
    this.flush();
  }

  private startWrite(): void {
    const gatherer = this.open;
    this.open = this.idle ?? new Gatherer(this.gathererOptions);
    this.idle = null;
    // writingHeld is empty here (writeDone emptied it): the two arrays swap roles.
    const held = this.writingHeld;
    this.writingHeld = this.openHeld;
    this.openHeld = held;
    this.writing = gatherer;
    this.writingBytes = gatherer.byteLength;
    if (this.writingBytes + this.open.byteLength >= this.highWaterMark) this.drainOwed = true;
    this.writes++;
    const written = gatherer.writeTo(this.socket);
    this.writingSettled = !gatherer.writing;
    written.then(this.onWritten, this.onWriteFailed);
  }

  /** The write in flight settled: its memory is back in the pool (writeTo released it). */
  private writeDone(error: Error | null): void {
    const gatherer = this.writing!;
    this.writing = null;
    const releaseError = releaseAll(this.writingHeld);
    if (error === null) {
      this.written += this.writingBytes;
      if (this.writingSettled) this.directWrites++;
    }
    this.writingBytes = 0;
    gatherer.reset();
    this.idle = gatherer;
    if (error !== null) {
      this.close(error);
    } else {
      const waiters = this.flushWaiters;
      while (waiters.length > 0 && waiters[0].target <= this.written) waiters.shift()!.resolve();
      if (this.state !== CLOSED) {
        if (this.open.byteLength > 0) this.startWrite();
        else if (this.state === ENDING) this.endSocket();
        if (this.drainOwed && this.queuedBytes <= this.lowWaterMark) {
          this.drainOwed = false;
          for (const waiter of this.drainWaiters.splice(0)) waiter.resolve();
          this.emit('drain');
        }
      }
    }
    // A resource that failed to release (a double release elsewhere) is a bug
    // to surface, once every other resource is back and the writer is consistent.
    if (releaseError !== null) throw releaseError;
  }

  /** Everything is written: end the socket (once). end() resolves at its 'finish' (onSocketFinish). */
  private endSocket(): void {
    if (this.endSent) return;
    this.endSent = true;
    this.socket.end();
  }

  /**
   * The socket closed (or errored, or a write failed): nothing more is sent.
   * The batch collecting is discarded and released now; the one in flight
   * when its writeTo settles (after 'close', once libuv has let go of it).
   */
  private close(error: Error | null): void {
    if (this.state === CLOSED) return;
    const ending = this.state === ENDING;
    this.state = CLOSED;
    const unwritten = this.writing !== null || this.open.byteLength > 0;
    if (error !== null) this.failure ??= error;
    else if (this.failure === null && (unwritten || (ending && !this.finished))) {
      this.failure = new IobufError('The socket closed before everything queued was written', 'ERR_IOBUF_SOCKET_CLOSED');
    }
    this.open.reset();
    const releaseError = releaseAll(this.openHeld);
    this.socket.removeListener('finish', this.onSocketFinish);
    // The 'error' listener stays: a late error on a dead socket must not crash the process.
    this.socket.removeListener('close', this.onSocketClose);
    const reason = this.closedError();
    for (const waiter of this.flushWaiters.splice(0)) waiter.reject(reason);
    for (const waiter of this.drainWaiters.splice(0)) waiter.reject(reason);
    if (this.endWaiter !== null) {
      const waiter = this.endWaiter;
      this.endWaiter = null;
      if (this.finished && this.failure === null) waiter.resolve();
      else waiter.reject(reason);
    }
    this.emit('close', this.failure);
    if (releaseError !== null) throw releaseError;
  }

  private closedError(): Error {
    if (this.failure !== null) return this.failure;
    return new IobufError(
      this.endPromise !== null ? 'The writer was ended; nothing more can be sent' : 'The writer is closed; nothing more can be sent',
      'ERR_IOBUF_WRITER_CLOSED',
    );
  }
}

/**
 * Releases every resource (each once, even if one throws) and empties the
 * array. Returns the first error to rethrow (see firstReleaseError), or null.
 */
function releaseAll(resources: Releasable[]): unknown {
  let first: unknown = null;
  for (let i = 0; i < resources.length; i++) {
    try {
      resources[i].release();
    } catch (error) {
      first = firstReleaseError(error, first);
    }
  }
  while (resources.length > 0) resources.pop();
  return first;
}
