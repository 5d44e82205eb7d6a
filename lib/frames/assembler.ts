// FrameAssembler: the receive path. Length-prefixed frames are assembled
// straight into pooled buffers and handed to the consumer, who owns each one
// until frame.release() gives its memory back to the pool.
//
// This file is the input side: sockets (onread or 'data'), push()/end(),
// waiting for memory, backpressure and the end. Turning bytes into frames (the
// parse loop, headers, delivery, the async iterator) is its base class,
// FrameParser (parser.ts); Frame is frame.ts; the send side is encode.ts.
//
// Where the bytes go (a payload byte is copied at most once after the kernel):
//   - A socket is read through net's `onread` option: the kernel writes into a
//     pooled read buffer ("staging", one per assembler), and each payload is
//     copied once from there into its frame's buffer.
//   - While the rest of a large payload is outstanding (at least half a read
//     buffer), the next read goes straight into the frame's buffer instead (a
//     view of its unfilled tail): no copy at all.
//   - push(chunk) takes bytes from anywhere and copies each payload byte once.
//   - When the pool has no memory for a frame, the bytes after its header stay
//     in the read buffer until memory comes; the read Node already has a
//     buffer for then goes to a second ("spare") read buffer.
// A Frame's `data` is the very Buffer pool.tryAcquire(length) returned. A
// Frame is a handle (SharedBuffer, lib/pool/shared-buffer.ts): a new one per frame,
// never recycled, so a late second release() cannot reach a later frame;
// retain() makes more handles, and the memory goes back with the last one.
//
// How Node (20 to 26) calls `onread` (lib/net.js, lib/internal/stream_base_commons.js):
// `buffer()` is called once when the socket's handle is set up, then right
// after every `callback(nread, buf)`; what it returns is where the *next* read
// lands. The callback returning false stops reading (handle.readStop);
// socket.resume() starts it again, and socket.pause() stops it too.
// net.createServer() has no `onread` option, so attach() takes over an
// accepted socket's reading through the same per-socket fields the option
// sets (socket-takeover.ts: Node internals, kept apart); sockets of other
// kinds, and runtimes without those fields, are read through 'data'.
//
// Ownership. The assembler owns: the read buffer, the frame being assembled,
// and completed frames queued for the async iterator. It hands a frame over
// when onFrame is called with it or next() resolves with it, and never touches
// it after that. destroy() (and every error) releases what it still owns.
//
// Backpressure. Reading stops while the pool cannot give a frame's memory
// (the assembler waits in the pool's FIFO queue) and while completed but
// unreleased frames hold more than highWaterMark bytes; it starts again once
// memory came and the held bytes fell to half the mark.
import type net from 'node:net';
import { codedError, validateInteger, validateView, invalidType } from '../errors';
import { type Borrower, type Loan, lend, repayAll } from '../lending';
import { frameError } from './frame';
import { EMPTY, type FrameAssemblerOptions, FrameParser, KiB, MiB } from './parser';
import { readsThrough, takeOverReads } from './socket-takeover';
import type { OnreadTarget } from './socket-takeover';

export interface FrameAssemblerStats {
  /** Frames completed. */
  frames: number;
  /** Bytes taken in (headers and payloads). */
  bytes: number;
  /** Bytes of completed frames not yet released (queued or with the consumer). */
  heldBytes: number;
  /** Socket reads, and those that landed directly in a frame's buffer (and their bytes). */
  reads: number;
  directReads: number;
  directBytes: number;
  /** Times reading was stopped: memory short, or held bytes above highWaterMark. */
  pauses: number;
  /** How the attached socket is read: 'onread' (into pooled memory), 'data' (events), or null. */
  readMode: 'onread' | 'data' | null;
}

/** Where the next socket read lands. */
const INTO_STAGING = 0;
const INTO_FRAME = 1;
const INTO_SPARE = 2;

// ---------------------------------------------------------------------------
// FrameAssembler
// ---------------------------------------------------------------------------

export class FrameAssembler extends FrameParser {
  readonly highWaterMark: number;
  readonly readBufferSize: number;

  private readonly onError: ((error: Error) => void) | null;
  /** Reading starts again when held bytes fall to this (half the mark: no stop/start per frame). */
  private readonly resumeMark: number;
  /** A read goes straight into the frame when at least this much of it is outstanding. */
  private readonly directThreshold: number;

  /** A header was read but the pool had no memory for its payload: its length, else -1. */
  private waitingFor = -1;
  private readonly memoryAbort = new AbortController();

  // Socket reading. The unparsed bytes of the read buffer are [parsePos, fillEnd):
  // empty except while waiting for memory (the socket is paused then).
  private socket: net.Socket | null = null;
  private readMode: 'onread' | 'data' | null = null;
  private staging: Buffer | null = null;
  /** A second read buffer, taken only when bytes had to wait for memory (see nextReadBuffer). */
  private spare: Buffer | null = null;
  private readonly pooledReadBuffers = new Set<Buffer>();
  /**
   * Memory the socket may read into is lent to it (lib/lending.ts): the read
   * buffers for as long as the assembler reads, a frame's buffer while it is
   * the next read's target. A pool that closes with { force } ends the
   * assembler (ERR_IOBUF_POOL_CLOSED) and gets the memory back once the
   * socket no longer reads.
   */
  private readonly readLoans: Loan[] = [];
  private targetLoan: Loan | null = null;
  private readonly borrower: Borrower = { stopBorrowing: (reason) => this.destroy(reason) };
  private parsePos = 0;
  private fillEnd = 0;
  private readTarget = INTO_STAGING;
  private paused = false;
  /**
   * Bytes to parse after the current ones, in order: chunks given to push()
   * while waiting for memory (held by reference), and copies of chunks
   * pushed from inside onFrame while a chunk was being parsed.
   */
  private backlog: Buffer[] = [];
  /** A chunk is being parsed (onFrame may be running): push() and end() queue behind it. */
  private parsing = false;
  private needDrain = false;

  private inputEnded = false;

  // Bound once: Node calls these for every read.
  // (After close the buffer function returns undefined: Node then keeps the old buffer, and no read comes.)
  private readonly onreadBuffer = () => this.nextReadBuffer() as Uint8Array;
  private readonly onreadCallback = (nread: number, buffer: Uint8Array) => this.onRead(nread, buffer);
  private readonly onreadTarget: OnreadTarget = { buffer: () => this.nextReadBuffer(), callback: this.onreadCallback };

  constructor(options: FrameAssemblerOptions) {
    super(options);
    const { highWaterMark = 4 * MiB, readBufferSize = 64 * KiB } = options;
    validateInteger(highWaterMark, 'options.highWaterMark', 0, Number.MAX_SAFE_INTEGER);
    validateInteger(readBufferSize, 'options.readBufferSize', 1 * KiB, 16 * MiB);
    for (const name of ['onFrame', 'onError'] as const) {
      if (options[name] !== undefined && typeof options[name] !== 'function') {
        throw invalidType('a function', `options.${name}`, options[name]);
      }
    }
    this.highWaterMark = highWaterMark;
    this.resumeMark = Math.floor(highWaterMark / 2);
    this.readBufferSize = readBufferSize;
    this.directThreshold = Math.max(1, readBufferSize >> 1);
    this.onFrame = options.onFrame ?? null;
    this.onError = options.onError ?? null;
  }

  /** Whether the assembler has ended (cleanly or by an error) and released what it owned. */
  get closed(): boolean {
    return this.isClosed;
  }

  /** The error that ended the assembler, if one did (it is never thrown). */
  get error(): Error | null {
    return this.failure;
  }

  stats(): FrameAssemblerStats {
    return { ...this.counters, readMode: this.readMode };
  }

  // -------------------------------------------------------------------------
  // Input
  // -------------------------------------------------------------------------

  /**
   * Options for net.connect() / new net.Socket() that read into this
   * assembler's pooled memory; then attach() the socket:
   *   const socket = net.connect({ port, ...assembler.socketOptions() });
   *   assembler.attach(socket);
   */
  socketOptions(): { onread: { buffer: () => Uint8Array; callback: (nread: number, buffer: Uint8Array) => boolean } } {
    return { onread: { buffer: this.onreadBuffer, callback: this.onreadCallback } };
  }

  /**
   * Reads frames from `socket` until it ends. A net.Socket made with
   * socketOptions() is read through `onread`; so is a TCP or pipe socket that
   * has not been read from yet (e.g. in the 'connection' listener, best with
   * `pauseOnConnect: true`): attach() takes over its reading. Anything else is
   * read through 'data' events, with one more copy. The assembler handles the
   * socket's errors and destroys it when the assembler is destroyed.
   */
  attach(socket: net.Socket): this {
    if (socket === null || typeof socket !== 'object' || typeof (socket as { on?: unknown }).on !== 'function') {
      throw invalidType('a net.Socket', 'socket', socket);
    }
    if (this.socket !== null || this.isClosed) {
      throw codedError(Error, 'ERR_INVALID_STATE', this.isClosed ? 'The assembler is closed' : 'The assembler already has a socket');
    }
    this.socket = socket;
    socket.on('error', (error) => this.destroy(error));
    socket.on('end', () => this.endInput());
    socket.on('close', () => this.socketClosed());
    if (readsThrough(socket, this.onreadCallback)) {
      this.readMode = 'onread';
    } else if (takeOverReads(socket, this.onreadTarget, (chunk) => this.push(chunk))) {
      this.readMode = 'onread';
      if (!this.paused) socket.resume();
    } else {
      // Another kind of stream, or a runtime without the fields (socket-takeover.ts): the same frames, one copy more.
      this.readMode = 'data';
      socket.on('data', (chunk: Buffer) => {
        if (!this.push(chunk) && !this.isClosed) this.pauseSocket();
      });
      this.on('drain', () => this.resumeSocket());
      // A 'data' listener does not start a stream that was paused (pauseOnConnect,
      // Bun's sockets, any paused Duplex): attach() reads it from now on.
      if (!this.paused && !this.isClosed) socket.resume();
    }
    return this;
  }

  /**
   * Takes bytes from anywhere. The payloads are copied out before push()
   * returns, except while the pool has no memory for a frame: then the rest of
   * `chunk` is kept by reference until memory comes (do not reuse it before
   * 'drain'). Returns false when the caller should wait for 'drain': memory is
   * short or unreleased frames hold more than highWaterMark bytes.
   *
   * Called from inside onFrame (while a chunk is being parsed), the bytes are
   * copied and parsed after the rest of that chunk: frames come out in the
   * order their bytes went in.
   */
  push(chunk: Uint8Array): boolean {
    validateView(chunk, 'chunk');
    if (this.isClosed || this.inputEnded) return false;
    const bytes = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    this.counters.bytes += bytes.length;
    if (this.parsing) {
      if (bytes.length > 0) this.backlog.push(Buffer.from(bytes));
    } else if (this.waitingFor >= 0) {
      if (bytes.length > 0) this.backlog.push(bytes);
    } else {
      this.parsing = true;
      try {
        const end = bytes.length;
        const stop = this.parse(bytes, 0, end);
        // The rest waits for memory, ahead of what onFrame pushed meanwhile
        // (the backlog was empty before: it is parsed whenever memory is there).
        if (stop >= 0 && stop < end && !this.isClosed) this.backlog.unshift(bytes.subarray(stop));
        this.parseBacklog();
      } catch (error) {
        this.destroy(error as Error); // a throwing onFrame
      } finally {
        this.parsing = false;
      }
      this.endIfAsked();
    }
    const ok = !this.isClosed && this.waitingFor < 0 && this.counters.heldBytes <= this.highWaterMark;
    if (!ok) this.needDrain = true;
    return ok;
  }

  /** No more input: ends cleanly at a frame boundary, else ERR_IOBUF_FRAME_TRUNCATED. */
  end(): void {
    this.endInput();
  }

  // -------------------------------------------------------------------------
  // onread: Node calls nextReadBuffer() for the next read's memory and
  // onRead() with what the kernel wrote there
  // -------------------------------------------------------------------------

  private nextReadBuffer(): Uint8Array | undefined {
    if (this.isClosed) return undefined;
    this.targetLoan?.repay(); // the last read into a frame landed; the next one goes where this says
    this.targetLoan = null;
    const frame = this.frame;
    if (frame !== null && this.parsePos === this.fillEnd && this.frameLength - this.frameFill >= this.directThreshold) {
      this.readTarget = INTO_FRAME;
      this.targetLoan = lend(frame, this.borrower);
      return frame.subarray(this.frameFill);
    }
    if (this.parsePos < this.fillEnd) {
      // Unparsed bytes wait in the read buffer for the pool's memory, and reading
      // is stopped. Node asks for the next read's buffer now, before they are
      // parsed: give it the spare, so that read cannot land on them.
      this.readTarget = INTO_SPARE;
      this.spare ??= this.takeReadBuffer();
      return this.spare;
    }
    this.readTarget = INTO_STAGING;
    this.staging ??= this.takeReadBuffer();
    this.parsePos = 0;
    this.fillEnd = 0;
    return this.staging;
  }

  /** A read buffer from the pool; from the heap when the pool has none (or is closed: the first frame reports that). */
  private takeReadBuffer(): Buffer {
    let buffer: Buffer | null = null;
    try {
      buffer = this.pool.tryAcquire(this.readBufferSize);
    } catch {
      // a closed pool: the first frame will report it
    }
    if (buffer !== null) {
      this.pooledReadBuffers.add(buffer);
      this.readLoans.push(lend(buffer, this.borrower));
    }
    return buffer ?? Buffer.allocUnsafeSlow(this.readBufferSize);
  }

  private onRead(nread: number, _buffer: Uint8Array): boolean {
    if (this.isClosed) return false;
    const counters = this.counters;
    counters.reads++;
    counters.bytes += nread;
    this.parsing = true;
    try {
      if (this.readTarget === INTO_FRAME) {
        counters.directReads++;
        counters.directBytes += nread;
        this.frameFill += nread;
        if (this.frameFill === this.frameLength) this.completeFrame();
      } else if (this.readTarget === INTO_STAGING) {
        this.fillEnd += nread;
        if (this.waitingFor < 0) this.parsePos = this.parse(this.staging!, this.parsePos, this.fillEnd);
      } else if (this.waitingFor < 0 && this.parsePos === this.fillEnd) {
        // The first read after a wait for memory: the spare becomes the read buffer.
        const spare = this.spare!;
        this.spare = this.staging;
        this.staging = spare;
        this.parsePos = 0;
        this.fillEnd = nread;
        this.parsePos = this.parse(spare, 0, nread);
      } else {
        // Reading should be stopped while bytes wait (someone resumed the socket):
        // keep these too, in order, in a copy of their own.
        this.backlog.push(Buffer.from(this.spare!.subarray(0, nread)));
      }
      this.parseBacklog();
    } catch (error) {
      // Only a throwing onFrame gets here: the parser itself reports, never throws.
      this.destroy(error as Error);
    } finally {
      this.parsing = false;
    }
    this.endIfAsked();
    if (this.isClosed) return false;
    if (this.waitingFor >= 0 || counters.heldBytes > this.highWaterMark) {
      // Returning false stops reading (handle.readStop); resumeSocket() restarts it.
      if (!this.paused) {
        this.paused = true;
        counters.pauses++;
      }
      return false;
    }
    return true;
  }

  // -------------------------------------------------------------------------
  // Memory and backpressure
  // -------------------------------------------------------------------------

  /** The pool had no memory for a payload of `length` bytes: wait for it in the pool's FIFO queue. */
  protected waitForMemory(length: number): void {
    this.waitingFor = length;
    this.pauseSocket();
    this.pool.acquire(length, { signal: this.memoryAbort.signal }).then(
      (buffer) => {
        if (this.isClosed) {
          this.releaseQuietly(buffer);
          return;
        }
        this.waitingFor = -1;
        this.frame = buffer;
        this.frameLength = length;
        this.frameFill = 0;
        this.drainWaiting();
      },
      (error: Error) => {
        if (!this.isClosed) this.destroy(error);
      },
    );
  }

  /**
   * Memory came: parse what waited, in stream order (bytes kept in scratch,
   * the read buffer's rest, the backlog), then read on.
   */
  private drainWaiting(): void {
    this.parsing = true;
    try {
      if (this.scratchFill > 0) this.parse(EMPTY, 0, 0);
      if (!this.isClosed && this.waitingFor < 0 && this.parsePos < this.fillEnd) {
        const stop = this.parse(this.staging!, this.parsePos, this.fillEnd);
        if (!this.isClosed) this.parsePos = stop;
      }
      this.parseBacklog();
    } catch (error) {
      this.destroy(error as Error);
    } finally {
      this.parsing = false;
    }
    if (this.isClosed || this.waitingFor >= 0) return;
    if (this.inputEnded) this.finish();
    else this.maybeResume();
  }

  /** Parses the backlog in order, until it is empty or memory is short again. */
  private parseBacklog(): void {
    while (this.waitingFor < 0 && this.backlog.length > 0 && !this.isClosed) {
      const chunk = this.backlog.shift()!;
      const stop = this.parse(chunk, 0, chunk.length);
      if (stop >= 0 && stop < chunk.length && !this.isClosed) this.backlog.unshift(chunk.subarray(stop));
    }
  }

  private pauseSocket(): void {
    if (this.paused) return;
    this.paused = true;
    this.counters.pauses++;
    if (this.socket !== null && !this.socket.destroyed) this.socket.pause();
  }

  private resumeSocket(): void {
    if (this.socket !== null && !this.socket.destroyed && !this.isClosed) this.socket.resume();
  }

  /** Reading may start again: memory is there and the held bytes fell to the resume mark. */
  private maybeResume(): void {
    if (this.isClosed || this.waitingFor >= 0 || this.counters.heldBytes > this.resumeMark) return;
    if (this.paused) {
      this.paused = false;
      if (this.readMode === 'onread') this.resumeSocket();
    }
    if (this.needDrain) {
      this.needDrain = false;
      this.emit('drain');
    }
  }

  /** The last handle of a frame was released: its memory goes back. */
  protected frameReleased(data: Buffer): void {
    this.counters.heldBytes -= data.length;
    if (this.paused || this.needDrain) this.maybeResume();
    this.pool.release(data);
  }

  // -------------------------------------------------------------------------
  // Ending
  // -------------------------------------------------------------------------

  private endInput(): void {
    if (this.inputEnded || this.isClosed) return;
    this.inputEnded = true;
    // From inside onFrame: the bytes pushed before end() are parsed first (endIfAsked).
    if (this.waitingFor < 0 && !this.parsing) this.finish();
  }

  /** end() came while a chunk was being parsed: finish now that it (and the backlog) is parsed. */
  private endIfAsked(): void {
    if (this.inputEnded && !this.done && !this.isClosed && this.waitingFor < 0) this.finish();
  }

  /** Input ended and everything was parsed: a clean end at a frame boundary, or a truncated frame. */
  private finish(): void {
    if (this.isClosed) return;
    if (this.frame !== null || this.scratchFill > 0 || this.waitingFor >= 0) {
      const message =
        this.frame !== null
          ? `The stream ended inside a frame: ${this.frameFill} of its ${this.frameLength} payload bytes arrived`
          : this.waitingFor >= 0
            ? `The stream ended inside a frame of ${this.waitingFor} bytes`
            : `The stream ended inside a frame header (${this.scratchFill} bytes of it arrived)`;
      this.destroy(frameError('ERR_IOBUF_FRAME_TRUNCATED', message));
      return;
    }
    this.done = true;
    if (this.waiter !== null && this.queueHead === this.queue.length) {
      const waiter = this.waiter;
      this.waiter = null;
      waiter.resolve({ value: undefined, done: true });
    }
    process.nextTick(() => this.emit('end'));
    if (this.socket === null || this.socket.destroyed) this.close();
  }

  /** The socket closed. Without a clean end first, that ends the assembler too. */
  private socketClosed(): void {
    if (this.isClosed) return;
    if (!this.done) {
      this.inputEnded = true;
      if (this.waitingFor >= 0) {
        this.destroy(frameError('ERR_IOBUF_FRAME_TRUNCATED', `The stream ended inside a frame of ${this.waitingFor} bytes`));
        return;
      }
      this.finish();
      if (this.isClosed) return;
    }
    this.close();
  }

  /**
   * Ends the assembler now: the socket (if attached) is destroyed, and every
   * buffer the assembler still owns goes back to the pool — the frame being
   * assembled, the read buffer, frames queued for the iterator. Frames already
   * handed out stay the consumer's. With `error`, it is reported to onError,
   * to 'error' listeners and to the iterator; it is never thrown.
   */
  destroy(error?: Error | null): void {
    this.discardQueue(); // also after a clean end: frames the iterator did not take
    if (this.isClosed) return;
    if (error !== undefined && error !== null) this.failure = error;
    this.socket?.destroy();
    this.close();
  }

  private close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.memoryAbort.abort();
    // The socket is closed or destroyed (libuv stops reading at once), or was
    // never attached: no read can land in these any more.
    this.targetLoan?.repay();
    this.targetLoan = null;
    repayAll(this.readLoans);
    if (this.frame !== null) this.releaseQuietly(this.frame);
    this.frame = null;
    for (const buffer of this.pooledReadBuffers) this.releaseQuietly(buffer);
    this.pooledReadBuffers.clear();
    this.staging = null;
    this.spare = null;
    this.backlog.length = 0;
    const error = this.failure;
    if (this.waiter !== null) {
      const waiter = this.waiter;
      this.waiter = null;
      if (error !== null) {
        this.errorDelivered = true;
        waiter.reject(error);
      } else {
        waiter.resolve({ value: undefined, done: true });
      }
    }
    process.nextTick(() => {
      if (error !== null) {
        this.onError?.(error);
        if (this.listenerCount('error') > 0) this.emit('error', error);
      }
      this.emit('close');
    });
  }

  /** Gives a buffer the assembler owns back; a pool closed with force has freed it already. */
  private releaseQuietly(buffer: Buffer): void {
    try {
      this.pool.release(buffer);
    } catch (error) {
      if ((error as { code?: string }).code !== 'ERR_IOBUF_POOL_CLOSED') throw error;
    }
  }
}
