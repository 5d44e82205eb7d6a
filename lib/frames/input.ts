// FrameInput: the middle layer of FrameAssembler, between turning bytes into
// frames (FrameParser, parser.ts) and reading them from a socket
// (FrameAssembler, assembler.ts). It owns what every source of bytes shares:
// push()/end(), waiting in the pool's queue for a frame's memory (the bytes
// after its header wait, in stream order), backpressure (reading stops while
// memory is short or unreleased frames hold more than highWaterMark bytes, and
// starts again at half the mark) and the clean or truncated end. What reading
// means (a socket's pause/resume, the read buffer's unparsed bytes) is the
// subclass's, through the abstract methods at the end.
import { validateView, validateInteger } from '../errors';
import { frameError } from './frame';
import { EMPTY, type FrameAssemblerOptions, FrameParser, MiB } from './parser';

export abstract class FrameInput extends FrameParser {
  readonly highWaterMark: number;
  /** Reading starts again when held bytes fall to this (half the mark: no stop/start per frame). */
  protected readonly resumeMark: number;
  /** A header was read but the pool had no memory for its payload: its length, else -1. */
  protected waitingFor = -1;
  protected readonly memoryAbort = new AbortController();
  protected paused = false;
  /**
   * Bytes to parse after the current ones, in order: chunks given to push()
   * while waiting for memory (held by reference), and copies of chunks
   * pushed from inside onFrame while a chunk was being parsed.
   */
  protected backlog: Buffer[] = [];
  /** A chunk is being parsed (onFrame may be running): push() and end() queue behind it. */
  protected parsing = false;
  protected needDrain = false;
  protected inputEnded = false;

  constructor(options: FrameAssemblerOptions) {
    super(options);
    const { highWaterMark = 4 * MiB } = options;
    validateInteger(highWaterMark, 'options.highWaterMark', 0, Number.MAX_SAFE_INTEGER);
    this.highWaterMark = highWaterMark;
    this.resumeMark = Math.floor(highWaterMark / 2);
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
  // Memory and backpressure
  // -------------------------------------------------------------------------

  /** The pool had no memory for a payload of `length` bytes: wait for it in the pool's FIFO queue. */
  protected waitForMemory(length: number): void {
    this.waitingFor = length;
    this.pauseInput();
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
  protected drainWaiting(): void {
    this.parsing = true;
    try {
      if (this.scratchFill > 0) this.parse(EMPTY, 0, 0);
      if (!this.isClosed && this.waitingFor < 0) this.parseWaitingRead();
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
  protected parseBacklog(): void {
    while (this.waitingFor < 0 && this.backlog.length > 0 && !this.isClosed) {
      const chunk = this.backlog.shift()!;
      const stop = this.parse(chunk, 0, chunk.length);
      if (stop >= 0 && stop < chunk.length && !this.isClosed) this.backlog.unshift(chunk.subarray(stop));
    }
  }

  /** Stops reading (memory short, or held bytes above the mark): one pause counted per stop. */
  protected pauseInput(): void {
    if (this.paused) return;
    this.paused = true;
    this.counters.pauses++;
    this.stopReading();
  }

  /** Reading may start again: memory is there and the held bytes fell to the resume mark. */
  protected maybeResume(): void {
    if (this.isClosed || this.waitingFor >= 0 || this.counters.heldBytes > this.resumeMark) return;
    if (this.paused) {
      this.paused = false;
      this.restartReading();
    }
    if (this.needDrain) {
      this.needDrain = false;
      this.emit('drain');
    }
  }

  /** The last handle of a frame was released: its memory goes back. */
  protected frameReleased(data: Buffer, length: number): void {
    this.counters.heldBytes -= length;
    if (this.paused || this.needDrain) this.maybeResume();
    this.releaseQuietly(data); // after a forced close there is nothing to give back, and no error
  }

  // -------------------------------------------------------------------------
  // Ending
  // -------------------------------------------------------------------------

  protected endInput(): void {
    if (this.inputEnded || this.isClosed) return;
    this.inputEnded = true;
    // From inside onFrame: the bytes pushed before end() are parsed first (endIfAsked).
    if (this.waitingFor < 0 && !this.parsing) this.finish();
  }

  /** end() came while a chunk was being parsed: finish now that it (and the backlog) is parsed. */
  protected endIfAsked(): void {
    if (this.inputEnded && !this.done && !this.isClosed && this.waitingFor < 0) this.finish();
  }

  /** Input ended and everything was parsed: a clean end at a frame boundary, or a truncated frame. */
  protected finish(): void {
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
    this.inputFinished();
  }

  /** Gives a buffer the assembler owns back; a pool closed with force has freed it already. */
  protected releaseQuietly(buffer: Buffer): void {
    try {
      this.pool.release(buffer);
    } catch (error) {
      if ((error as { code?: string }).code !== 'ERR_IOBUF_POOL_CLOSED') throw error;
    }
  }

  // -------------------------------------------------------------------------
  // What the source of bytes does
  // -------------------------------------------------------------------------

  /** Stop reading from the source (pauseInput() has counted the pause). */
  protected abstract stopReading(): void;
  /** Read from the source again: memory is there and the held bytes fell to the resume mark. */
  protected abstract restartReading(): void;
  /** Memory came: parse the bytes that waited for it in the read buffer (the backlog follows). */
  protected abstract parseWaitingRead(): void;
  /** The input ended cleanly and everything was parsed. */
  protected abstract inputFinished(): void;
}
