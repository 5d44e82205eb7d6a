// FrameAssembler: the receive path. Length-prefixed frames are assembled
// straight into pooled buffers and handed to the consumer, who owns each one
// until frame.release() gives its memory back to the pool.
//
// Three layers make one FrameAssembler object: FrameParser (parser.ts) turns
// bytes into frames (the parse loop, headers, delivery, the async iterator);
// FrameInput (input.ts) takes bytes in (push()/end(), waiting for memory,
// backpressure, the end); this file reads them from a socket (onread or
// 'data', the read buffers, attach(), close). Frame is frame.ts; the send side
// is encode.ts.
//
// Where the bytes go (a payload byte is copied at most once after the kernel):
//   - A socket is read through net's `onread` option: the kernel writes into a
//     pooled read buffer ("staging"), and each payload is copied once from
//     there into its frame's buffer — except a small one (up to VIEW_MAX) that
//     lies whole in it: that frame is a view of the read buffer, which is then
//     kept from later reads until the frame is released (read-block.ts).
//   - While the rest of a large payload is outstanding (at least half a read
//     buffer), the next read goes straight into the frame's buffer instead (a
//     view of its unfilled tail): no copy at all.
//   - push(chunk) takes bytes from anywhere and copies each payload byte once.
//   - When the pool has no memory for a frame, the bytes after its header stay
//     in the read buffer until memory comes; the read Node already has a
//     buffer for then goes to a second ("spare") read buffer.
// A Frame's `data` is the very Buffer pool.tryAcquire(length) returned, or a
// view of a read buffer (above). A
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
// and completed frames queued for the async iterator. A read buffer that
// frames handed out are views of becomes theirs when reading moves on (the
// last one's release gives it back). It hands a frame over
// when onFrame is called with it or next() resolves with it, and never touches
// it after that. destroy() (and every error) releases what it still owns.
//
// Backpressure. Reading stops while the pool cannot give a frame's memory
// (the assembler waits in the pool's FIFO queue) and while completed but
// unreleased frames hold more than highWaterMark bytes; it starts again once
// memory came and the held bytes fell to half the mark.
import type net from 'node:net';
import { codedError, invalidType, validateInteger } from '../errors';
import { type Borrower, type Loan, UNLENT, lend } from '../lending';
import { loansOf } from '../pooled';
import { frameError } from './frame';
import { FrameInput } from './input';
import { type FrameAssemblerOptions, KiB, MiB } from './parser';
import { ReadBlock, type ReadBlockOwner } from './read-block';
import { readsThrough, takeOverReads } from './socket-takeover';
import type { OnreadTarget } from './socket-takeover';

export interface FrameAssemblerStats {
  /** Frames completed. */
  frames: number;
  /** Bytes taken in (headers and payloads). */
  bytes: number;
  /** Payload bytes of completed frames not yet released (queued or with the consumer): what highWaterMark bounds. */
  heldBytes: number;
  /**
   * Bytes of read buffers kept from reuse because unreleased frames are views
   * of them. Views are made only while this is below highWaterMark; past it,
   * small payloads are copied as larger ones are.
   */
  keptReadBytes: number;
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

export class FrameAssembler extends FrameInput implements ReadBlockOwner {
  readonly readBufferSize: number;

  private readonly onError: ((error: Error) => void) | null;
  /** A read goes straight into the frame when at least this much of it is outstanding. */
  private readonly directThreshold: number;

  // Socket reading. The unparsed bytes of the read buffer are [parsePos, fillEnd):
  // empty except while waiting for memory (the socket is paused then).
  private socket: net.Socket | null = null;
  private readMode: 'onread' | 'data' | null = null;
  private staging: ReadBlock | null = null;
  /** A second read buffer, taken only when bytes had to wait for memory (see nextReadBuffer). */
  private spare: ReadBlock | null = null;
  /**
   * Memory the socket may read into is lent to it (lib/lending.ts): a read
   * buffer until it is retired (read-block.ts) or the assembler closes, a
   * frame's buffer while it is the next read's target. A pool that closes
   * with { force } ends the assembler (ERR_IOBUF_POOL_CLOSED) and gets the
   * memory back once the socket no longer reads.
   */
  private targetLoan: Loan | null = null;
  private readonly borrower: Borrower = { stopBorrowing: (reason) => this.destroy(reason) };
  private parsePos = 0;
  private fillEnd = 0;
  private readTarget = INTO_STAGING;

  // Bound once: Node calls these for every read.
  // (After close the buffer function returns undefined: Node then keeps the old buffer, and no read comes.)
  private readonly onreadBuffer = () => this.nextReadBuffer() as Uint8Array;
  private readonly onreadCallback = (nread: number, buffer: Uint8Array) => this.onRead(nread, buffer);
  private readonly onreadTarget: OnreadTarget = { buffer: () => this.nextReadBuffer(), callback: this.onreadCallback };

  constructor(options: FrameAssemblerOptions) {
    super(options);
    const { readBufferSize = 64 * KiB } = options;
    validateInteger(readBufferSize, 'options.readBufferSize', 1 * KiB, 16 * MiB);
    for (const name of ['onFrame', 'onError'] as const) {
      if (options[name] !== undefined && typeof options[name] !== 'function') {
        throw invalidType('a function', `options.${name}`, options[name]);
      }
    }
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
        if (!this.push(chunk) && !this.isClosed) this.pauseInput();
      });
      this.on('drain', () => this.resumeSocket());
      // A 'data' listener does not start a stream that was paused (pauseOnConnect,
      // Bun's sockets, any paused Duplex): attach() reads it from now on.
      if (!this.paused && !this.isClosed) socket.resume();
    }
    return this;
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
      this.spare = this.readable(this.spare);
      return this.spare.buffer;
    }
    this.readTarget = INTO_STAGING;
    this.staging = this.readable(this.staging);
    this.parsePos = 0;
    this.fillEnd = 0;
    return this.staging.buffer;
  }

  /**
   * `block` when the next read may land in it; else it is retired (frames
   * that are views of it are out) or given back (see reusable), and a new
   * block is taken.
   */
  private readable(block: ReadBlock | null): ReadBlock {
    if (block !== null) {
      if (block.frames === 0 && this.reusable(block)) return block;
      if (block.frames > 0) this.retire(block);
      else this.giveBack(block);
    }
    return this.takeReadBlock();
  }

  /**
   * Whether a read may land in `block`, whose frames are all released. Not
   * while a released frame's data is still lent (put in a write libuv has not
   * finished): the pool keeps lent memory from reuse, and so must the
   * assembler. Heap memory cannot tell (nobody lends it), and in a strict pool
   * a released view must read as empty before its memory is reused: such a
   * block that handed out views goes back instead (detached, in a strict pool).
   */
  private reusable(block: ReadBlock): boolean {
    if (!block.viewed) return true;
    if (!block.pooled || this.pool.strict) return false;
    return loansOf(block.buffer) <= 1; // the socket's own loan
  }

  /** A block no frame is out of goes back to the pool (the pool keeps it until any other loan of it is repaid). */
  private giveBack(block: ReadBlock): void {
    block.loan.repay();
    if (block.pooled) this.releaseQuietly(block.buffer);
  }

  /** A read buffer from the pool; from the heap when the pool has none (or is closed: the first frame reports that, see parseBlock). */
  private takeReadBlock(): ReadBlock {
    let buffer: Buffer | null = null;
    try {
      buffer = this.pool.tryAcquire(this.readBufferSize);
    } catch {
      // a closed pool: the first frame will report it
    }
    if (buffer === null) return new ReadBlock(Buffer.allocUnsafeSlow(this.readBufferSize), false, UNLENT, this);
    return new ReadBlock(buffer, true, lend(buffer, this.borrower), this);
  }

  /** No read lands in `block` any more; it goes back when its last frame is released. */
  private retire(block: ReadBlock): void {
    block.retired = true;
    block.loan.repay();
    this.counters.keptReadBytes += block.buffer.length;
  }

  /** @internal ReadBlockOwner: a frame that is a view of `block` was released. */
  blockFrameReleased(block: ReadBlock, length: number): void {
    this.counters.heldBytes -= length;
    if (block.retired && block.frames === 0) {
      this.counters.keptReadBytes -= block.buffer.length;
      if (block.pooled) this.releaseQuietly(block.buffer);
    }
    if (this.paused || this.needDrain) this.maybeResume();
  }

  /**
   * Parses block.buffer[from, to); payloads that lie whole in it become views
   * of it, unless the read buffers kept for views already reach highWaterMark
   * (read-block.ts, Accounting) or the pool is closing: a frame then needs
   * memory of its own, and the first one ends the assembler with
   * ERR_IOBUF_POOL_CLOSED (its read buffer goes back to the pool, which waits
   * for it), as a copied one does.
   */
  private parseBlock(block: ReadBlock, from: number, to: number): number {
    const viewsAllowed = this.counters.keptReadBytes < this.highWaterMark && !this.pool.closing;
    this.readBlock = viewsAllowed ? block : null;
    try {
      return this.parse(block.buffer, from, to);
    } finally {
      this.readBlock = null;
    }
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
        if (this.waitingFor < 0) this.parsePos = this.parseBlock(this.staging!, this.parsePos, this.fillEnd);
      } else if (this.waitingFor < 0 && this.parsePos === this.fillEnd) {
        // The first read after a wait for memory: the spare becomes the read buffer.
        const spare = this.spare!;
        this.spare = this.staging;
        this.staging = spare;
        this.parsePos = 0;
        this.fillEnd = nread;
        this.parsePos = this.parseBlock(spare, 0, nread);
      } else {
        // Reading should be stopped while bytes wait (someone resumed the socket):
        // keep these too, in order, in a copy of their own.
        this.backlog.push(Buffer.from(this.spare!.buffer.subarray(0, nread)));
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
  // The source of bytes, for FrameInput
  // -------------------------------------------------------------------------

  protected stopReading(): void {
    if (this.socket !== null && !this.socket.destroyed) this.socket.pause();
  }

  protected restartReading(): void {
    if (this.readMode === 'onread') this.resumeSocket();
  }

  private resumeSocket(): void {
    if (this.socket !== null && !this.socket.destroyed && !this.isClosed) this.socket.resume();
  }

  protected parseWaitingRead(): void {
    if (this.parsePos < this.fillEnd) {
      const stop = this.parseBlock(this.staging!, this.parsePos, this.fillEnd);
      if (!this.isClosed) this.parsePos = stop;
    }
  }

  protected inputFinished(): void {
    if (this.socket === null || this.socket.destroyed) this.close();
  }

  // -------------------------------------------------------------------------
  // Ending
  // -------------------------------------------------------------------------

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
    if (this.frame !== null) this.releaseQuietly(this.frame);
    this.frame = null;
    for (const block of [this.staging, this.spare]) {
      if (block === null) continue;
      if (block.frames > 0)
        this.retire(block); // frames out keep it until their release
      else this.giveBack(block);
    }
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
}
