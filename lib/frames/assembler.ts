// FrameAssembler: the receive path. Length-prefixed frames are assembled
// straight into pooled buffers and handed to the consumer, who owns each one
// until frame.release() gives its memory back to the pool.
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
// Frame is a handle (SharedBuffer, shared-buffer.ts): a new one per frame,
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
import { EventEmitter } from 'node:events';
import type net from 'node:net';
import { native } from '../binding';
import {
  IobufError,
  codedError,
  describeValue,
  invalidValue,
  outOfRange,
  validateInteger,
  validateOneOf,
  validateOptions,
  validateView,
} from '../errors';
import type { Gatherer } from '../gather/gatherer';
import { type Borrower, type Loan, lend, repayAll } from '../lending';
import { BufferPool } from '../pool';
import { SharedBuffer } from '../pool/shared-buffer';
import type { SharedReturn } from '../pool/shared-buffer';
import { readsThrough, takeOverReads } from './socket-takeover';
import type { OnreadTarget } from './socket-takeover';
import { maxAllocationSize } from '../memory';
import {
  type DecodedHeader,
  FIXED_LENGTH_PREFIX_NAMES,
  type LengthPrefix,
  type LengthPrefixFormat,
  LENGTH_PREFIX_NAMES,
  NEED_MORE,
  lengthPrefixFormat,
  lengthPrefixNamed,
  malformedReason,
  quotedNames,
} from '../length-prefixes';

/**
 * What a custom length decoder found: the header's own length, the
 * payload's, and a tag the frame carries to the consumer (e.g. a message
 * type from the header; an integer, default 0).
 */
export interface FrameHeader {
  headerLength: number;
  payloadLength: number;
  tag?: number;
}

/**
 * A custom header reader. The header starts at bytes[start]; the decoder may
 * read bytes[start] to bytes[end - 1] (at least 1, at most MAX_HEADER_LENGTH
 * bytes; often more than the header) and returns the header it found, or null
 * when it needs more bytes. It may return the same object every time (its
 * fields are read at once). A decoder declared with one parameter is called
 * with a view that starts at the header instead (one allocation per call).
 * The full contract is in docs/api.md ("Custom decoders").
 */
export type LengthDecoder =
  | ((bytes: Buffer, start: number, end: number) => FrameHeader | null | undefined)
  | ((bytes: Buffer) => FrameHeader | null | undefined);

export interface FrameAssemblerOptions {
  /** Where frame buffers (and the read buffer) come from. */
  pool: BufferPool;
  /** The length prefix before each payload. Default 'u32be'. */
  lengthPrefix?: LengthPrefix | LengthDecoder;
  /** Largest payload accepted (at most pool.maxMemory and maxAllocationSize); a larger length is ERR_IOBUF_FRAME_TOO_LARGE. Default 16 MiB, at most a quarter of pool.maxMemory. */
  maxFrameSize?: number;
  /** Reading stops while unreleased frames hold more than this many bytes. Default 4 MiB. */
  highWaterMark?: number;
  /** Bytes of the read buffer the kernel writes into (one per assembler). Default 64 KiB. */
  readBufferSize?: number;
  /** Called with each frame as it completes (instead of the async iterator). The frame is yours: release it. */
  onFrame?: (frame: Frame) => void;
  /** Called with the error that ended the assembler (besides the 'error' event and the iterator). */
  onError?: (error: Error) => void;
}

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

/** Header bytes a custom decoder may look at before it must have decided. */
export const MAX_HEADER_LENGTH = 64;

const KiB = 1024;
const MiB = 1024 * KiB;
const EMPTY = Buffer.alloc(0);

/** Where the next socket read lands. */
const INTO_STAGING = 0;
const INTO_FRAME = 1;
const INTO_SPARE = 2;

/** decodeHeader(): the header was malformed (and reported). Besides a length, it also returns NEED_MORE. */
const INVALID = -2;

// ---------------------------------------------------------------------------
// One copy per payload byte, without garbage
// ---------------------------------------------------------------------------

/**
 * The payload copy. Node 20's Buffer#copy from an offset makes a Uint8Array
 * view of the source range first (lib/buffer.js _copyActual): one
 * young-generation object per frame, as much garbage for 1 KiB frames as the
 * plain 'data' path makes. The addon's copyBytes has the same semantics
 * (clamped to both views) and allocates nothing.
 */
const copyBytes = native.copyBytes;

/**
 * Payload copies up to this many bytes are a JS loop: below it the loop
 * costs less than a native call's fixed cost (bench: frames of a mix of
 * 5-200 bytes, ~10-20 ns per frame less than copyBytes for every frame).
 */
const SMALL_COPY = 32;

/** target[at, at + length) = src[from, from + length); both ranges lie inside their views. */
function copyPayload(src: Buffer, from: number, target: Buffer, at: number, length: number): void {
  if (length <= SMALL_COPY) {
    for (let i = 0; i < length; i++) target[at + i] = src[from + i];
  } else {
    copyBytes(src, target, at, from, from + length);
  }
}

// ---------------------------------------------------------------------------
// Frame
// ---------------------------------------------------------------------------

/**
 * A completed frame: a handle on a pooled Buffer of exactly the payload
 * (`data`), with the `tag` its decoder gave (0 for the built-in prefixes).
 * release() (or the end of a `using` scope) gives this handle up, and a second
 * call does nothing; retain() makes another handle (a Frame with the same data
 * and tag) to be released on its own. The memory goes back to the pool when
 * every handle has been released. A zero-length frame's data is an empty
 * Buffer that is not pooled.
 */
export class Frame extends SharedBuffer {
  /** What the decoder returned as `tag` for this frame's header; 0 for the built-in prefixes. */
  readonly tag: number;

  /** @internal Frames are made by a FrameAssembler. */
  constructor(data: Buffer, tag: number, returnTo: SharedReturn | null) {
    super(data, returnTo);
    this.tag = tag;
  }

  protected newHandle(): Frame {
    return new Frame(this.data, this.tag, this.returnTo);
  }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

function frameError(code: string, message: string, details: Record<string, unknown> = {}): IobufError {
  return Object.assign(new IobufError(message, code), details);
}

/** What a decoder threw, for a message (whatever it threw: reading it must not throw again). */
function messageOf(thrown: unknown): string {
  try {
    return String((thrown as Error | null | undefined)?.message ?? thrown);
  } catch {
    return 'a value that cannot be shown';
  }
}

// ---------------------------------------------------------------------------
// FrameAssembler
// ---------------------------------------------------------------------------

type Waiter = { resolve(result: IteratorResult<Frame>): void; reject(error: Error): void };

export class FrameAssembler extends EventEmitter implements AsyncIterable<Frame> {
  readonly pool: BufferPool;
  readonly maxFrameSize: number;
  readonly highWaterMark: number;
  readonly readBufferSize: number;

  /** The built-in length prefix; null with a custom decoder. */
  private readonly format: LengthPrefixFormat | null;
  /** The prefix is u32be: the parse loop decodes a whole one inline. */
  private readonly inlineU32BE: boolean;
  private readonly decoder: ((bytes: Buffer, start: number, end: number) => FrameHeader | null | undefined) | null;
  /** The decoder takes one argument: it is given a view from the header's first byte. */
  private readonly viewDecoder: boolean;
  private readonly onFrame: ((frame: Frame) => void) | null;
  private readonly onError: ((error: Error) => void) | null;
  /** Reading starts again when held bytes fall to this (half the mark: no stop/start per frame). */
  private readonly resumeMark: number;
  /** A read goes straight into the frame when at least this much of it is outstanding. */
  private readonly directThreshold: number;

  // Header bytes split across chunks are gathered here (headers only: payload
  // bytes never pass through it).
  private readonly scratch = Buffer.alloc(MAX_HEADER_LENGTH);
  private scratchFill = 0;
  /** Set by decodeHeader(): the length of the header it decoded. */
  private readonly decoded: DecodedHeader = { headerLength: 0 };
  /** Set by a custom decoder's header: the tag of the frame being assembled (0 for built-in prefixes). */
  private headerTag = 0;
  /** Where released frames' memory goes (Frame.release() of the last handle). */
  private readonly frameReturn: SharedReturn = { release: (data) => this.frameReleased(data) };

  // The frame being assembled.
  private frame: Buffer | null = null;
  private frameLength = 0;
  private frameFill = 0;
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

  // Completed frames not yet handed out (async iterator), as a queue.
  private queue: (Frame | undefined)[] = [];
  private queueHead = 0;
  private waiter: Waiter | null = null;

  private inputEnded = false;
  private done = false;
  private isClosed = false;
  private errorDelivered = false;
  private failure: Error | null = null;

  private counters = { frames: 0, bytes: 0, heldBytes: 0, reads: 0, directReads: 0, directBytes: 0, pauses: 0 };

  // Bound once: Node calls these for every read.
  // (After close the buffer function returns undefined: Node then keeps the old buffer, and no read comes.)
  private readonly onreadBuffer = () => this.nextReadBuffer() as Uint8Array;
  private readonly onreadCallback = (nread: number, buffer: Uint8Array) => this.onRead(nread, buffer);
  private readonly onreadTarget: OnreadTarget = { buffer: () => this.nextReadBuffer(), callback: this.onreadCallback };

  constructor(options: FrameAssemblerOptions) {
    super();
    validateOptions(options, 'options');
    if (options === undefined || !(options.pool instanceof BufferPool)) {
      throw codedError(
        TypeError,
        'ERR_INVALID_ARG_TYPE',
        `Expected a BufferPool for options.pool but received ${describeValue(options?.pool)}`,
      );
    }
    const { pool, lengthPrefix = 'u32be', highWaterMark = 4 * MiB, readBufferSize = 64 * KiB } = options;
    this.pool = pool;
    if (typeof lengthPrefix === 'function') {
      this.format = null;
      this.inlineU32BE = false;
      this.decoder = lengthPrefix as (bytes: Buffer, start: number, end: number) => FrameHeader | null | undefined;
      this.viewDecoder = lengthPrefix.length === 1;
    } else {
      const format = lengthPrefixNamed(lengthPrefix);
      if (format === undefined) {
        throw invalidValue(`one of ${quotedNames(LENGTH_PREFIX_NAMES)} or a function`, 'options.lengthPrefix', lengthPrefix);
      }
      this.format = format;
      this.inlineU32BE = format.name === 'u32be';
      this.decoder = null;
      this.viewDecoder = false;
    }
    // A quarter of the budget by default: a frame as large as the budget could never be
    // served while the read buffer (and the consumer's frames) hold part of it.
    const { maxFrameSize = Math.min(16 * MiB, Math.floor(pool.maxMemory / 4)) } = options;
    validateInteger(maxFrameSize, 'options.maxFrameSize', 0, Math.min(pool.maxMemory, maxAllocationSize));
    validateInteger(highWaterMark, 'options.highWaterMark', 0, Number.MAX_SAFE_INTEGER);
    validateInteger(readBufferSize, 'options.readBufferSize', 1 * KiB, 16 * MiB);
    for (const name of ['onFrame', 'onError'] as const) {
      if (options[name] !== undefined && typeof options[name] !== 'function') {
        throw codedError(
          TypeError,
          'ERR_INVALID_ARG_TYPE',
          `Expected a function for options.${name} but received ${describeValue(options[name])}`,
        );
      }
    }
    this.maxFrameSize = maxFrameSize;
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
      throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected a net.Socket for socket but received ${describeValue(socket)}`);
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
  // Parsing
  // -------------------------------------------------------------------------

  /**
   * Consumes src[pos, end): headers into lengths, payloads copied into their
   * frames. Returns where it stopped: `end`, or earlier when the pool had no
   * memory for a frame (the rest waits), or -1 when the assembler was closed.
   *
   * scratch[0, scratchFill) holds stream bytes that come before src[pos]:
   * the start of a header split across chunks, or — when a custom decoder
   * looked past its header into bytes gathered there — the bytes after that
   * header (payload, maybe further headers). They are consumed first, so a
   * decoder sees the same bytes whatever the chunk boundaries.
   */
  private parse(src: Buffer, pos: number, end: number): number {
    for (;;) {
      if (this.frame === null) {
        let length: number;
        if (this.scratchFill > 0) {
          const before = this.scratchFill;
          const taken = Math.min(end - pos, MAX_HEADER_LENGTH - before);
          if (taken > 0) copyBytes(src, this.scratch, before, pos, pos + taken);
          length = this.decodeHeader(this.scratch, 0, before + taken);
          if (length === NEED_MORE) {
            this.scratchFill = before + taken;
            if (this.scratchFill === MAX_HEADER_LENGTH) return this.headerInvalid(`no header found in ${MAX_HEADER_LENGTH} bytes`);
            return pos + taken; // = end
          }
          if (length === INVALID) return -1;
          const headerLength = this.decoded.headerLength;
          if (headerLength >= before) {
            this.scratchFill = 0;
            pos += headerLength - before;
          } else {
            // The header ends inside the gathered bytes: the rest of them is what follows it.
            this.scratch.copyWithin(0, headerLength, before);
            this.scratchFill = before - headerLength;
          }
        } else if (pos === end) {
          return pos;
        } else if (this.inlineU32BE && end - pos >= 4) {
          // The common case inline (the hot path): a whole u32be header in this chunk.
          length = ((src[pos] << 24) | (src[pos + 1] << 16) | (src[pos + 2] << 8) | src[pos + 3]) >>> 0;
          pos += 4;
        } else {
          length = this.decodeHeader(src, pos, end);
          if (length === NEED_MORE) return this.gatherHeader(src, pos, end);
          if (length === INVALID) return -1;
          pos += this.decoded.headerLength;
        }
        if (length > this.maxFrameSize) {
          this.destroy(
            frameError('ERR_IOBUF_FRAME_TOO_LARGE', `A frame of ${length} bytes is larger than maxFrameSize (${this.maxFrameSize})`, {
              frameLength: length,
              maxFrameSize: this.maxFrameSize,
            }),
          );
          return -1;
        }
        if (length === 0) {
          this.deliver(new Frame(EMPTY, this.headerTag, null));
          if (this.isClosed) return -1;
          continue;
        }
        if (length <= end - pos && this.scratchFill === 0) {
          // The whole payload is in this chunk (small frames): straight into its buffer and out.
          const buffer = this.takeFrameBuffer(length);
          if (buffer === null) return this.isClosed ? -1 : pos;
          copyPayload(src, pos, buffer, 0, length);
          pos += length;
          this.counters.heldBytes += length;
          this.deliver(new Frame(buffer, this.headerTag, this.frameReturn));
          if (this.isClosed) return -1;
          continue;
        }
        if (!this.startFrame(length)) return this.isClosed ? -1 : pos;
      }
      let take: number;
      const want = this.frameLength - this.frameFill;
      const kept = this.scratchFill;
      if (kept > 0) {
        // Bytes after a header, gathered in scratch: they come before src[pos].
        take = kept < want ? kept : want;
        copyBytes(this.scratch, this.frame!, this.frameFill, 0, take);
        if (take < kept) this.scratch.copyWithin(0, take, kept);
        this.scratchFill = kept - take;
      } else {
        if (pos === end) return pos;
        take = end - pos < want ? end - pos : want;
        copyPayload(src, pos, this.frame!, this.frameFill, take);
        pos += take;
      }
      this.frameFill += take;
      if (take === want) {
        this.completeFrame();
        if (this.isClosed) return -1;
      }
    }
  }

  /** A NEED_MORE header at the end of a chunk: keep its bytes for the next one. Returns `end` (or -1). */
  private gatherHeader(src: Buffer, pos: number, end: number): number {
    const taken = Math.min(end - pos, MAX_HEADER_LENGTH);
    copyBytes(src, this.scratch, 0, pos, pos + taken);
    this.scratchFill = taken;
    if (taken === MAX_HEADER_LENGTH) return this.headerInvalid(`no header found in ${MAX_HEADER_LENGTH} bytes`);
    return pos + taken;
  }

  /**
   * The payload length of the header at bytes[pos, end), setting
   * decoded.headerLength; NEED_MORE when the header is not complete yet;
   * INVALID after reporting a malformed header.
   */
  private decodeHeader(bytes: Buffer, pos: number, end: number): number {
    const format = this.format;
    if (format === null) return this.decodeCustom(bytes, pos, end - pos > MAX_HEADER_LENGTH ? pos + MAX_HEADER_LENGTH : end);
    const length = format.decode(bytes, pos, end, this.decoded);
    return length < NEED_MORE ? this.headerInvalid(malformedReason(length)) : length;
  }

  /**
   * Calls the custom decoder on bytes[start, end) and reads its result at
   * once (the decoder may reuse the object); sets decoded.headerLength and headerTag.
   * Anything that throws, and any result that cannot be a header, ends the
   * assembler with ERR_IOBUF_FRAME_INVALID (the thrown error as `cause`).
   */
  private decodeCustom(bytes: Buffer, start: number, end: number): number {
    let header: FrameHeader | null | undefined;
    try {
      header = this.viewDecoder ? this.decoder!(bytes.subarray(start, end), 0, end - start) : this.decoder!(bytes, start, end);
    } catch (error) {
      return this.headerInvalid(`the length decoder threw: ${messageOf(error)}`, error);
    }
    if (header === null || header === undefined) return NEED_MORE;
    if (typeof header !== 'object') {
      return this.headerInvalid(
        `the length decoder returned ${describeValue(header)} (expected { headerLength, payloadLength, tag? } or null)`,
      );
    }
    let headerLength: unknown;
    let payloadLength: unknown;
    let tag: unknown;
    try {
      headerLength = header.headerLength;
      payloadLength = header.payloadLength;
      tag = header.tag;
    } catch (error) {
      return this.headerInvalid(`reading the length decoder's result threw: ${messageOf(error)}`, error);
    }
    if (typeof headerLength !== 'number' || !Number.isSafeInteger(headerLength) || headerLength < 1 || headerLength > end - start) {
      return this.headerInvalid(`the length decoder returned headerLength ${describeValue(headerLength)} for ${end - start} bytes`);
    }
    if (typeof payloadLength !== 'number' || !Number.isSafeInteger(payloadLength) || payloadLength < 0) {
      return this.headerInvalid(`the length decoder returned payloadLength ${describeValue(payloadLength)}`);
    }
    if (tag === undefined) {
      tag = 0;
    } else if (typeof tag !== 'number' || !Number.isSafeInteger(tag)) {
      return this.headerInvalid(`the length decoder returned tag ${describeValue(tag)} (expected an integer)`);
    }
    this.decoded.headerLength = headerLength;
    this.headerTag = tag as number;
    return payloadLength;
  }

  private headerInvalid(reason: string, cause?: unknown): number {
    const error = frameError('ERR_IOBUF_FRAME_INVALID', `Malformed frame header: ${reason}`);
    if (cause !== undefined) (error as Error & { cause?: unknown }).cause = cause;
    this.destroy(error);
    return INVALID;
  }

  /**
   * A buffer for a payload of `length` bytes; null when the pool has none now
   * (a wait for memory has begun) or failed (the assembler is closed).
   */
  private takeFrameBuffer(length: number): Buffer | null {
    let buffer: Buffer | null;
    try {
      buffer = this.pool.tryAcquire(length);
    } catch (error) {
      this.destroy(error as Error);
      return null;
    }
    if (buffer === null) this.waitForMemory(length);
    return buffer;
  }

  /** Takes the payload's memory; false (and a wait for memory begins) when the pool has none now. */
  private startFrame(length: number): boolean {
    const buffer = this.takeFrameBuffer(length);
    if (buffer === null) return false;
    this.frame = buffer;
    this.frameLength = length;
    this.frameFill = 0;
    return true;
  }

  private completeFrame(): void {
    const buffer = this.frame!;
    this.frame = null;
    this.counters.heldBytes += this.frameLength;
    this.deliver(new Frame(buffer, this.headerTag, this.frameReturn));
  }

  /** Hands a complete frame over: to onFrame now, or to the iterator's queue. */
  private deliver(frame: Frame): void {
    this.counters.frames++;
    if (this.onFrame !== null) {
      this.onFrame(frame);
    } else if (this.waiter !== null) {
      const waiter = this.waiter;
      this.waiter = null;
      waiter.resolve({ value: frame, done: false });
    } else {
      this.queue.push(frame);
    }
  }

  // -------------------------------------------------------------------------
  // Memory and backpressure
  // -------------------------------------------------------------------------

  /** The pool had no memory for a payload of `length` bytes: wait for it in the pool's FIFO queue. */
  private waitForMemory(length: number): void {
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
  private frameReleased(data: Buffer): void {
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

  /** Frames completed but not handed out go back to the pool (destroy only: a clean end keeps them for the iterator). */
  private discardQueue(): void {
    for (let i = this.queueHead; i < this.queue.length; i++) {
      try {
        this.queue[i]!.release();
      } catch (error) {
        // A pool closed with force has freed the memory already.
        if ((error as { code?: string }).code !== 'ERR_IOBUF_POOL_CLOSED') throw error;
      }
    }
    this.queue = [];
    this.queueHead = 0;
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

  // -------------------------------------------------------------------------
  // Async iteration
  // -------------------------------------------------------------------------

  /**
   * `for await (const frame of assembler)`: frames in order; each is yours to
   * release. Ends when the input ends cleanly; rejects with the error that
   * ended the assembler. Leaving the loop early (break, throw) destroys the
   * assembler, and the frames it still owns go back to the pool.
   */
  [Symbol.asyncIterator](): AsyncIterableIterator<Frame> {
    if (this.onFrame !== null) {
      throw codedError(Error, 'ERR_INVALID_STATE', 'Frames go to options.onFrame; an assembler with onFrame cannot be iterated');
    }
    const iterator: AsyncIterableIterator<Frame> = {
      next: () => this.nextFrame(),
      return: () => {
        this.destroy();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  private nextFrame(): Promise<IteratorResult<Frame>> {
    if (this.queueHead < this.queue.length) {
      const frame = this.queue[this.queueHead]!;
      this.queue[this.queueHead++] = undefined;
      if (this.queueHead === this.queue.length) {
        this.queue.length = 0;
        this.queueHead = 0;
      }
      return Promise.resolve({ value: frame, done: false });
    }
    if (this.failure !== null && this.isClosed && !this.errorDelivered) {
      this.errorDelivered = true;
      return Promise.reject(this.failure);
    }
    if (this.done || this.isClosed) return Promise.resolve({ value: undefined, done: true });
    if (this.waiter !== null) {
      return Promise.reject(codedError(Error, 'ERR_INVALID_STATE', 'next() was called while an earlier next() is still pending'));
    }
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }
}

// ---------------------------------------------------------------------------
// The send side: frames into a Gatherer
// ---------------------------------------------------------------------------

export interface EncodeFrameOptions {
  /** Default 'u32be'. */
  lengthPrefix?: LengthPrefix;
  /** Parts of at most this many bytes are copied into the gatherer's scratch; longer ones go by reference. Default 512. */
  copyBelow?: number;
}

function checkGatherer(gatherer: Gatherer): void {
  if (gatherer === null || typeof gatherer !== 'object' || typeof (gatherer as Partial<Gatherer>).putU32BE !== 'function') {
    throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected a Gatherer for gatherer but received ${describeValue(gatherer)}`);
  }
}

/** The prefix encodeFrame() puts, encoded here first (at most 5 bytes), and a view of each width. */
const prefixBytes = Buffer.alloc(5);
const prefixViews = [0, 1, 2, 3, 4, 5].map((width) => prefixBytes.subarray(0, width));

function payloadTooLarge(format: LengthPrefixFormat, length: number): RangeError {
  return outOfRange(`a payload of at most ${format.limit} bytes`, `a '${format.name}' length prefix`, length, `${length} bytes`);
}

/**
 * Appends one frame to `gatherer`: the length prefix, then the payload (one
 * view, or several parts that make one payload). Parts up to `copyBelow`
 * bytes are copied into scratch; longer ones are added by reference
 * (gatherer.putBytes): they must not change until the gatherer's write has
 * completed. A received Frame's `data` can be sent back this way, and
 * released once writeTo() has resolved.
 */
export function encodeFrame(
  gatherer: Gatherer,
  payload: ArrayBufferView | readonly ArrayBufferView[],
  options: EncodeFrameOptions = {},
): Gatherer {
  checkGatherer(gatherer);
  validateOptions(options, 'options');
  const { lengthPrefix = 'u32be', copyBelow = 512 } = options;
  const format = lengthPrefixFormat(lengthPrefix, 'options.lengthPrefix');
  validateInteger(copyBelow, 'options.copyBelow', 0, 2 ** 30);
  const parts = ArrayBuffer.isView(payload) ? [payload] : payload;
  if (!Array.isArray(parts)) validateView(payload, 'payload');
  let length = 0;
  for (let i = 0; i < parts.length; i++) {
    validateView(parts[i], `payload[${i}]`);
    length += parts[i].byteLength;
  }
  if (length > format.limit) throw payloadTooLarge(format, length);
  gatherer.putSlice(prefixViews[format.encode(prefixBytes, 0, length)]);
  for (const part of parts) {
    if (part.byteLength <= copyBelow) gatherer.putSlice(part);
    else gatherer.putBytes(part);
  }
  return gatherer;
}

/**
 * Starts a frame whose payload is put next (fixed-width prefixes only): the
 * prefix is reserved now and filled in by endFrame(gatherer, position).
 *   const at = beginFrame(g); g.putU8(op).putU32BE(id).putBytes(body); endFrame(g, at);
 */
export function beginFrame(gatherer: Gatherer, lengthPrefix: Exclude<LengthPrefix, 'varint'> = 'u32be'): number {
  checkGatherer(gatherer);
  validateOneOf(lengthPrefix, 'lengthPrefix', FIXED_LENGTH_PREFIX_NAMES);
  return gatherer.reserve(lengthPrefixNamed(lengthPrefix)!.width);
}

/** Fills in the prefix beginFrame() reserved at `position` with the bytes put since. */
export function endFrame(gatherer: Gatherer, position: number, lengthPrefix: Exclude<LengthPrefix, 'varint'> = 'u32be'): Gatherer {
  checkGatherer(gatherer);
  validateOneOf(lengthPrefix, 'lengthPrefix', FIXED_LENGTH_PREFIX_NAMES);
  const format = lengthPrefixNamed(lengthPrefix)!;
  const width = format.width;
  validateInteger(position, 'position', 0, Math.max(0, gatherer.byteLength - width));
  const length = gatherer.byteLength - position - width;
  if (length < 0 || length > format.limit) throw payloadTooLarge(format, length);
  // The table writes the prefix in its byte order; its bytes go into the reserved ones as they
  // are, read as one big-endian integer of their width (one patch: one reserved region).
  format.encode(prefixBytes, 0, length);
  if (width === 1) gatherer.patchU8(position, prefixBytes[0]);
  else if (width === 2) gatherer.patchU16BE(position, prefixBytes.readUInt16BE(0));
  else gatherer.patchU32BE(position, prefixBytes.readUInt32BE(0));
  return gatherer;
}
