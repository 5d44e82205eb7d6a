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
// A Frame's `data` is the very Buffer pool.tryAcquire(length) returned, so
// release() is one pool.release().
//
// How Node 20 calls `onread` (lib/net.js, lib/internal/stream_base_commons.js):
// `buffer()` is called once when the socket's handle is set up, then right
// after every `callback(nread, buf)`; what it returns is where the *next* read
// lands. The callback returning false stops reading (handle.readStop);
// socket.resume() starts it again, and socket.pause() stops it too.
// net.createServer() has no `onread` option in Node 20, so attach() takes over
// an accepted socket's reading through the same per-socket fields the option
// sets (see takeOverReading); sockets of other kinds are read through 'data'.
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
import net from 'node:net';
import { native } from './binding';
import { IobufError, codedError, describeValue, validateInteger, validateOneOf, validateOptions, validateView } from './errors';
import type { Gatherer } from './gather';
import { BufferPool } from './pool';
import { maxAllocationSize } from './memory';

export type LengthPrefix = 'u8' | 'u16be' | 'u16le' | 'u32be' | 'u32le' | 'varint';

/** What a custom length decoder found: the header's own length and the payload's. */
export interface FrameHeader {
  headerLength: number;
  payloadLength: number;
}

/**
 * A custom header reader. It is given the bytes from the header's start (at
 * least 1, at most MAX_HEADER_LENGTH; often more than the header) and returns
 * the header it found, or null when it needs more bytes.
 */
export type LengthDecoder = (bytes: Buffer) => FrameHeader | null | undefined;

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

const U8 = 0;
const U16BE = 1;
const U16LE = 2;
const U32BE = 3;
const U32LE = 4;
const VARINT = 5;
const CUSTOM = 6;
const PREFIXES: readonly LengthPrefix[] = ['u8', 'u16be', 'u16le', 'u32be', 'u32le', 'varint'];

/** Where the next socket read lands. */
const INTO_STAGING = 0;
const INTO_FRAME = 1;
const INTO_SPARE = 2;

/** decodeHeader() results besides a length. */
const NEED_MORE = -1;
const INVALID = -2;

const kOwner = Symbol('iobuf.frames.owner');
const kReleased = Symbol('iobuf.frames.released');
const kFrame = Symbol('iobuf.frames.frame');
type FrameView = Buffer & { [kFrame]?: Frame };

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

// ---------------------------------------------------------------------------
// Frame
// ---------------------------------------------------------------------------

/**
 * A completed frame, owned by whoever received it. `data` is a pooled Buffer
 * of exactly the payload; release() (or the end of a `using` scope) gives it
 * back. Releasing twice is harmless. After release the frame is the pool's:
 * like a pooled Buffer in the pool's default mode, the same Frame object (and
 * Buffer) is handed out again for a later frame of the same size.
 */
export class Frame implements Disposable {
  /** The payload: exactly its bytes. Empty (and not pooled) for a zero-length frame. */
  readonly data: Buffer;
  [kOwner]: FrameAssembler | null = null;

  constructor(data: Buffer) {
    this.data = data;
  }

  /** The payload length (data.length). */
  get length(): number {
    return this.data.length;
  }

  /** Gives the memory back to the pool; a second call does nothing. */
  release(): void {
    const owner = this[kOwner];
    if (owner === null) return;
    this[kOwner] = null;
    owner[kReleased](this.data);
  }

  [Symbol.dispose](): void {
    this.release();
  }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

function frameError(code: string, message: string, details: Record<string, unknown> = {}): IobufError {
  return Object.assign(new IobufError(message, code), details);
}


/** Node's own symbols for the fields the `onread` option sets on a net.Socket. */
interface OnreadFields {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

function onreadFields(socket: net.Socket): OnreadFields | null {
  const symbols = Object.getOwnPropertySymbols(socket);
  const find = (description: string) => symbols.find((symbol) => symbol.description === description);
  const buffer = find('kBuffer');
  const callback = find('kBufferCb');
  const generator = find('kBufferGen');
  if (buffer === undefined || callback === undefined || generator === undefined) return null;
  return { buffer, callback, generator };
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

  private readonly prefix: number;
  private readonly decoder: LengthDecoder | null;
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
  private headerLength = 0;

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
  private parsePos = 0;
  private fillEnd = 0;
  private readTarget = INTO_STAGING;
  private paused = false;
  /** Chunks given to push() while waiting for memory (held by reference). */
  private backlog: Buffer[] = [];
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

  constructor(options: FrameAssemblerOptions) {
    super();
    validateOptions(options, 'options');
    if (options === undefined || !(options.pool instanceof BufferPool)) {
      throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected a BufferPool for options.pool but received ${describeValue(options?.pool)}`);
    }
    const {
      pool, lengthPrefix = 'u32be', highWaterMark = 4 * MiB, readBufferSize = 64 * KiB,
    } = options;
    this.pool = pool;
    if (typeof lengthPrefix === 'function') {
      this.prefix = CUSTOM;
      this.decoder = lengthPrefix;
    } else {
      const index = PREFIXES.indexOf(lengthPrefix);
      if (index < 0) {
        throw codedError(TypeError, 'ERR_INVALID_ARG_VALUE', `Expected one of ${PREFIXES.map((p) => `'${p}'`).join(', ')} or a function for options.lengthPrefix but received ${describeValue(lengthPrefix)}`);
      }
      this.prefix = index;
      this.decoder = null;
    }
    // A quarter of the budget by default: a frame as large as the budget could never be
    // served while the read buffer (and the consumer's frames) hold part of it.
    const { maxFrameSize = Math.min(16 * MiB, Math.floor(pool.maxMemory / 4)) } = options;
    validateInteger(maxFrameSize, 'options.maxFrameSize', 0, Math.min(pool.maxMemory, maxAllocationSize));
    validateInteger(highWaterMark, 'options.highWaterMark', 0, Number.MAX_SAFE_INTEGER);
    validateInteger(readBufferSize, 'options.readBufferSize', 1 * KiB, 16 * MiB);
    for (const name of ['onFrame', 'onError'] as const) {
      if (options[name] !== undefined && typeof options[name] !== 'function') {
        throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected a function for options.${name} but received ${describeValue(options[name])}`);
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
    const fields = socket instanceof net.Socket ? onreadFields(socket) : null;
    const record = socket as unknown as Record<symbol, unknown>;
    if (fields !== null && record[fields.callback] === this.onreadCallback) {
      this.readMode = 'onread';
    } else if (fields !== null && this.takeOverReading(socket, fields)) {
      this.readMode = 'onread';
    } else {
      this.readMode = 'data';
      socket.on('data', (chunk: Buffer) => {
        if (!this.push(chunk) && !this.isClosed) this.pauseSocket();
      });
      this.on('drain', () => this.resumeSocket());
      // A 'data' listener does not start a stream that was paused (Bun's
      // sockets from pauseOnConnect, any paused Duplex): attach() reads it.
      if (!this.paused) socket.resume();
    }
    return this;
  }

  /**
   * Makes an accepted socket read through onread: sets the fields Node's
   * `onread` option would have set (the same own symbols on every net.Socket
   * in Node 20) and points the handle at our buffer. Only for TCP and pipe
   * handles; bytes Node read already are parsed first.
   */
  private takeOverReading(socket: net.Socket, fields: OnreadFields): boolean {
    const record = socket as unknown as Record<symbol, unknown>;
    const handle = (socket as unknown as { _handle?: { useUserBuffer?: (buffer: Uint8Array) => void; constructor: { name: string } } })._handle;
    if (handle === undefined || handle === null || typeof handle.useUserBuffer !== 'function') return false;
    if (handle.constructor.name !== 'TCP' && handle.constructor.name !== 'Pipe') return false;
    if (record[fields.buffer] !== null || record[fields.callback] !== null) return false;
    while (socket.readableLength > 0) {
      const chunk = socket.read() as Buffer | null;
      if (chunk === null) break;
      this.push(chunk);
    }
    const buffer = this.nextReadBuffer();
    if (buffer === undefined) return false;
    record[fields.buffer] = true;
    record[fields.generator] = this.onreadBuffer;
    record[fields.callback] = this.onreadCallback;
    handle.useUserBuffer(buffer);
    if (!this.paused) socket.resume();
    return true;
  }

  /**
   * Takes bytes from anywhere. The payloads are copied out before push()
   * returns, except while the pool has no memory for a frame: then the rest of
   * `chunk` is kept by reference until memory comes (do not reuse it before
   * 'drain'). Returns false when the caller should wait for 'drain': memory is
   * short or unreleased frames hold more than highWaterMark bytes.
   */
  push(chunk: Uint8Array): boolean {
    validateView(chunk, 'chunk');
    if (this.isClosed || this.inputEnded) return false;
    const bytes = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    this.counters.bytes += bytes.length;
    if (this.waitingFor >= 0) {
      if (bytes.length > 0) this.backlog.push(bytes);
    } else {
      try {
        const end = bytes.length;
        const stop = this.parse(bytes, 0, end);
        if (stop < end && !this.isClosed) this.backlog.push(bytes.subarray(stop));
      } catch (error) {
        this.destroy(error as Error);  // a throwing onFrame
      }
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
    const frame = this.frame;
    if (frame !== null && this.parsePos === this.fillEnd && this.frameLength - this.frameFill >= this.directThreshold) {
      this.readTarget = INTO_FRAME;
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
    if (buffer !== null) this.pooledReadBuffers.add(buffer);
    return buffer ?? Buffer.allocUnsafeSlow(this.readBufferSize);
  }

  private onRead(nread: number, _buffer: Uint8Array): boolean {
    if (this.isClosed) return false;
    const counters = this.counters;
    counters.reads++;
    counters.bytes += nread;
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
    } catch (error) {
      // Only a throwing onFrame gets here: the parser itself reports, never throws.
      this.destroy(error as Error);
    }
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
   * memory for a frame (the rest waits) or the assembler was closed.
   */
  private parse(src: Buffer, pos: number, end: number): number {
    while (pos < end) {
      if (this.frame === null) {
        let length: number;
        if (this.scratchFill === 0 && this.prefix === U32BE && end - pos >= 4) {
          // The common case inline: a whole u32be header in this chunk.
          length = ((src[pos] << 24) | (src[pos + 1] << 16) | (src[pos + 2] << 8) | src[pos + 3]) >>> 0;
          pos += 4;
        } else if (this.scratchFill === 0) {
          length = this.decodeHeader(src, pos, end);
          if (length === NEED_MORE) {
            pos = this.gatherHeader(src, pos, end);
            continue;
          }
          if (length === INVALID) return -1;
          pos += this.headerLength;
        } else {
          // Part of the header came with an earlier chunk.
          const before = this.scratchFill;
          const taken = Math.min(end - pos, MAX_HEADER_LENGTH - before);
          src.copy(this.scratch, before, pos, pos + taken);
          length = this.decodeHeader(this.scratch, 0, before + taken);
          if (length === NEED_MORE) {
            this.scratchFill = before + taken;
            pos += taken;
            if (this.scratchFill === MAX_HEADER_LENGTH) return this.headerInvalid(`no header found in ${MAX_HEADER_LENGTH} bytes`);
            continue;
          }
          if (length === INVALID) return -1;
          if (this.headerLength <= before) return this.headerInvalid('the length decoder asked for more bytes than its header has');
          this.scratchFill = 0;
          pos += this.headerLength - before;
        }
        if (length > this.maxFrameSize) {
          this.destroy(frameError('ERR_IOBUF_FRAME_TOO_LARGE',
            `A frame of ${length} bytes is larger than maxFrameSize (${this.maxFrameSize})`,
            { frameLength: length, maxFrameSize: this.maxFrameSize }));
          return -1;
        }
        if (length === 0) {
          this.deliver(new Frame(EMPTY));
          if (this.isClosed) return -1;
          continue;
        }
        if (!this.startFrame(length)) return this.isClosed ? -1 : pos;
      }
      const want = this.frameLength - this.frameFill;
      const take = end - pos < want ? end - pos : want;
      copyBytes(src, this.frame!, this.frameFill, pos, pos + take);
      pos += take;
      this.frameFill += take;
      if (take === want) {
        this.completeFrame();
        if (this.isClosed) return -1;
      }
    }
    return pos;
  }

  /** A NEED_MORE header at the end of a chunk: keep its bytes for the next one. */
  private gatherHeader(src: Buffer, pos: number, end: number): number {
    const taken = Math.min(end - pos, MAX_HEADER_LENGTH);
    src.copy(this.scratch, 0, pos, pos + taken);
    this.scratchFill = taken;
    if (taken === MAX_HEADER_LENGTH) return this.headerInvalid(`no header found in ${MAX_HEADER_LENGTH} bytes`);
    return pos + taken;
  }

  /**
   * The payload length of the header at bytes[pos, end), setting
   * this.headerLength; NEED_MORE when the header is not complete yet;
   * INVALID after reporting a malformed header.
   */
  private decodeHeader(bytes: Buffer, pos: number, end: number): number {
    const available = end - pos;
    switch (this.prefix) {
      case U8:
        this.headerLength = 1;
        return bytes[pos];
      case U16BE:
        if (available < 2) return NEED_MORE;
        this.headerLength = 2;
        return (bytes[pos] << 8) | bytes[pos + 1];
      case U16LE:
        if (available < 2) return NEED_MORE;
        this.headerLength = 2;
        return bytes[pos] | (bytes[pos + 1] << 8);
      case U32BE:
        if (available < 4) return NEED_MORE;
        this.headerLength = 4;
        return ((bytes[pos] << 24) | (bytes[pos + 1] << 16) | (bytes[pos + 2] << 8) | bytes[pos + 3]) >>> 0;
      case U32LE:
        if (available < 4) return NEED_MORE;
        this.headerLength = 4;
        return (bytes[pos] | (bytes[pos + 1] << 8) | (bytes[pos + 2] << 16) | (bytes[pos + 3] << 24)) >>> 0;
      case VARINT: {
        // Unsigned LEB128, at most 5 bytes, at most 2^32 - 1.
        let value = 0;
        for (let i = 0; i < 5; i++) {
          if (i === available) return NEED_MORE;
          const byte = bytes[pos + i];
          value += (byte & 0x7f) * 2 ** (7 * i);
          if (byte < 0x80) {
            if (value > 0xffffffff) return this.headerInvalid('the varint length is above 2^32 - 1');
            this.headerLength = i + 1;
            return value;
          }
        }
        return this.headerInvalid('the varint length runs past 5 bytes');
      }
      default:
        return this.decodeCustom(bytes.subarray(pos, Math.min(end, pos + MAX_HEADER_LENGTH)));
    }
  }

  private decodeCustom(bytes: Buffer): number {
    let header: FrameHeader | null | undefined;
    try {
      header = this.decoder!(bytes);
    } catch (error) {
      return this.headerInvalid(`the length decoder threw: ${(error as Error)?.message ?? error}`, error);
    }
    if (header === null || header === undefined) return NEED_MORE;
    const { headerLength, payloadLength } = header;
    if (!Number.isSafeInteger(headerLength) || headerLength < 1 || headerLength > bytes.length) {
      return this.headerInvalid(`the length decoder returned headerLength ${String(headerLength)} for ${bytes.length} bytes`);
    }
    if (!Number.isSafeInteger(payloadLength) || payloadLength < 0) {
      return this.headerInvalid(`the length decoder returned payloadLength ${String(payloadLength)}`);
    }
    this.headerLength = headerLength;
    return payloadLength;
  }

  private headerInvalid(reason: string, cause?: unknown): number {
    const error = frameError('ERR_IOBUF_FRAME_INVALID', `Malformed frame header: ${reason}`);
    if (cause !== undefined) (error as Error & { cause?: unknown }).cause = cause;
    this.destroy(error);
    return INVALID;
  }

  /** Takes the payload's memory; false (and a wait for memory begins) when the pool has none now. */
  private startFrame(length: number): boolean {
    let buffer: Buffer | null;
    try {
      buffer = this.pool.tryAcquire(length);
    } catch (error) {
      this.destroy(error as Error);
      return false;
    }
    if (buffer === null) {
      this.waitForMemory(length);
      return false;
    }
    this.frame = buffer;
    this.frameLength = length;
    this.frameFill = 0;
    return true;
  }

  private completeFrame(): void {
    const buffer = this.frame! as FrameView;
    this.frame = null;
    let frame = buffer[kFrame];
    if (frame === undefined) {
      frame = new Frame(buffer);
      buffer[kFrame] = frame;
    }
    this.counters.heldBytes += this.frameLength;
    this.deliver(frame);
  }

  /** Hands a complete frame over: to onFrame now, or to the iterator's queue. */
  private deliver(frame: Frame): void {
    this.counters.frames++;
    frame[kOwner] = frame.data.length === 0 ? null : this;
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
    this.pool.acquire(length, { signal: this.memoryAbort.signal }).then((buffer) => {
      if (this.isClosed) {
        this.releaseQuietly(buffer);
        return;
      }
      this.waitingFor = -1;
      this.frame = buffer;
      this.frameLength = length;
      this.frameFill = 0;
      this.drainWaiting();
    }, (error: Error) => {
      if (!this.isClosed) this.destroy(error);
    });
  }

  /** Memory came: parse what waited (the read buffer's rest, push() backlog), then read on. */
  private drainWaiting(): void {
    try {
      if (this.parsePos < this.fillEnd) {
        const stop = this.parse(this.staging!, this.parsePos, this.fillEnd);
        if (this.isClosed) return;
        this.parsePos = stop;
      }
      while (this.waitingFor < 0 && this.backlog.length > 0 && !this.isClosed) {
        const chunk = this.backlog.shift()!;
        const stop = this.parse(chunk, 0, chunk.length);
        if (stop >= 0 && stop < chunk.length && !this.isClosed) this.backlog.unshift(chunk.subarray(stop));
      }
    } catch (error) {
      this.destroy(error as Error);
    }
    if (this.isClosed || this.waitingFor >= 0) return;
    if (this.inputEnded) this.finish();
    else this.maybeResume();
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

  /** Frame.release(): the consumer gave a frame's memory back. */
  [kReleased](data: Buffer): void {
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
    if (this.waitingFor < 0) this.finish();
  }

  /** Input ended and everything was parsed: a clean end at a frame boundary, or a truncated frame. */
  private finish(): void {
    if (this.isClosed) return;
    if (this.frame !== null || this.scratchFill > 0 || this.waitingFor >= 0) {
      const message = this.frame !== null
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
    this.discardQueue();  // also after a clean end: frames the iterator did not take
    if (this.isClosed) return;
    if (error !== undefined && error !== null) this.failure = error;
    this.socket?.destroy();
    this.close();
  }

  /** Frames completed but not handed out go back to the pool (destroy only: a clean end keeps them for the iterator). */
  private discardQueue(): void {
    for (let i = this.queueHead; i < this.queue.length; i++) {
      const frame = this.queue[i]!;
      frame[kOwner] = null;
      if (frame.data.length > 0) {
        this.counters.heldBytes -= frame.data.length;
        this.releaseQuietly(frame.data);
      }
    }
    this.queue = [];
    this.queueHead = 0;
  }

  private close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.memoryAbort.abort();
    // The socket is closed (or was never attached): no read can land in these any more.
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

const PREFIX_LIMIT = [0xff, 0xffff, 0xffff, 0xffffffff, 0xffffffff, 0xffffffff];

function checkGatherer(gatherer: Gatherer): void {
  if (gatherer === null || typeof gatherer !== 'object' || typeof (gatherer as Partial<Gatherer>).putU32BE !== 'function') {
    throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected a Gatherer for gatherer but received ${describeValue(gatherer)}`);
  }
}

function putLength(gatherer: Gatherer, prefix: number, length: number): void {
  switch (prefix) {
    case U8: gatherer.putU8(length); break;
    case U16BE: gatherer.putU16BE(length); break;
    case U16LE: gatherer.putU16LE(length); break;
    case U32BE: gatherer.putU32BE(length); break;
    case U32LE: gatherer.putU32LE(length); break;
    default:
      for (; length >= 0x80; length = Math.floor(length / 128)) gatherer.putU8((length % 128) | 0x80);
      gatherer.putU8(length);
  }
}

/**
 * Appends one frame to `gatherer`: the length prefix, then the payload (one
 * view, or several parts that make one payload). Parts up to `copyBelow`
 * bytes are copied into scratch; longer ones are added by reference
 * (gatherer.putBytes): they must not change until the gatherer's write has
 * completed. A received Frame's `data` can be sent back this way, and
 * released once writeTo() has resolved.
 */
export function encodeFrame(gatherer: Gatherer, payload: ArrayBufferView | readonly ArrayBufferView[], options: EncodeFrameOptions = {}): Gatherer {
  checkGatherer(gatherer);
  validateOptions(options, 'options');
  const { lengthPrefix = 'u32be', copyBelow = 512 } = options;
  validateOneOf(lengthPrefix, 'options.lengthPrefix', PREFIXES);
  validateInteger(copyBelow, 'options.copyBelow', 0, 2 ** 30);
  const prefix = PREFIXES.indexOf(lengthPrefix);
  const parts = ArrayBuffer.isView(payload) ? [payload] : payload;
  if (!Array.isArray(parts)) validateView(payload, 'payload');
  let length = 0;
  for (let i = 0; i < parts.length; i++) {
    validateView(parts[i], `payload[${i}]`);
    length += parts[i].byteLength;
  }
  if (length > PREFIX_LIMIT[prefix]) {
    throw codedError(RangeError, 'ERR_OUT_OF_RANGE', `Expected a payload of at most ${PREFIX_LIMIT[prefix]} bytes for a '${lengthPrefix}' length prefix but received ${length} bytes`);
  }
  putLength(gatherer, prefix, length);
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
  validateOneOf(lengthPrefix, 'lengthPrefix', ['u8', 'u16be', 'u16le', 'u32be', 'u32le'] as const);
  return gatherer.reserve(lengthPrefix === 'u8' ? 1 : lengthPrefix.startsWith('u16') ? 2 : 4);
}

/** Fills in the prefix beginFrame() reserved at `position` with the bytes put since. */
export function endFrame(gatherer: Gatherer, position: number, lengthPrefix: Exclude<LengthPrefix, 'varint'> = 'u32be'): Gatherer {
  checkGatherer(gatherer);
  validateOneOf(lengthPrefix, 'lengthPrefix', ['u8', 'u16be', 'u16le', 'u32be', 'u32le'] as const);
  const width = lengthPrefix === 'u8' ? 1 : lengthPrefix.startsWith('u16') ? 2 : 4;
  const length = gatherer.byteLength - position - width;
  const prefix = PREFIXES.indexOf(lengthPrefix);
  if (length < 0 || length > PREFIX_LIMIT[prefix]) {
    throw codedError(RangeError, 'ERR_OUT_OF_RANGE', `Expected a payload of at most ${PREFIX_LIMIT[prefix]} bytes for a '${lengthPrefix}' length prefix but received ${length} bytes`);
  }
  switch (prefix) {
    case U8: gatherer.patchU8(position, length); break;
    case U16BE: gatherer.patchU16BE(position, length); break;
    case U16LE: gatherer.patchU16LE(position, length); break;
    case U32BE: gatherer.patchU32BE(position, length); break;
    default: gatherer.patchU32LE(position, length);
  }
  return gatherer;
}

