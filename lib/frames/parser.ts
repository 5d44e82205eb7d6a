// FrameParser: the half of FrameAssembler that turns bytes into frames.
// Headers are decoded (a built-in length prefix from lib/length-prefixes.ts,
// or a custom decoder), each payload is copied once into a pooled buffer of
// its exact length, and complete frames go to onFrame or to the async
// iterator's queue. The parse loop is the hot path: it runs on the
// FrameAssembler object itself (this is its base class), and asks the
// assembler, through the abstract methods at the end, to wait for memory and
// to end. Where the bytes come from (sockets, push(), backpressure) is
// assembler.ts.
import { EventEmitter } from 'node:events';
import { native } from '../binding';
import { codedError, describeValue, invalidValue, validateInteger, validateOptions, invalidType } from '../errors';
import {
  type DecodedHeader,
  type LengthPrefix,
  type LengthPrefixFormat,
  LENGTH_PREFIX_NAMES,
  NEED_MORE,
  lengthPrefixNamed,
  malformedReason,
  quotedNames,
} from '../length-prefixes';
import { maxAllocationSize } from '../memory';
import { NodeBuffer } from '../node-buffer';
import { BufferPool } from '../pool';
import type { SharedReturn } from '../pool/shared-buffer';
import { Frame, frameError, messageOf } from './frame';
import type { ReadBlock } from './read-block';

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

/** Header bytes a custom decoder may look at before it must have decided. */
export const MAX_HEADER_LENGTH = 64;

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const EMPTY = Buffer.alloc(0);

/**
 * Payloads up to this size that arrive whole in the assembler's read buffer
 * are handed out as views of it (read-block.ts); larger ones are copied into
 * a pooled buffer of their own. Below it a frame's fixed costs (a pool pair of
 * a varying size, a native copy) outweigh its bytes: bench/frames.mjs, mix of
 * 5-200 B frames, 0.73x the plain twin's CPU per GiB as views against 1.8x
 * copied. Above it the copy is cheap per byte, a same-size pooled buffer makes
 * no garbage, and a frame kept long does not keep a whole read buffer.
 */
export const VIEW_MAX = 512;

/** decodeHeader(): the header was malformed (and reported). Besides a length, it also returns NEED_MORE. */
const INVALID = -2;

// ---------------------------------------------------------------------------
// One copy per payload byte, without garbage
// ---------------------------------------------------------------------------

/**
 * The payload copy: `target[targetStart...] = source[sourceStart, sourceEnd)`,
 * clamped to both views, as Buffer#copy. Node 20's Buffer#copy from an offset
 * makes a Uint8Array view of the source range first (lib/buffer.js
 * _copyActual): one young-generation object per frame, as much garbage for
 * 1 KiB frames as the plain 'data' path makes; there the addon's copyBytes
 * (no allocation) is used. From Node 22 on, Buffer#copy allocates nothing and
 * costs 11-35 ns from 41 B to 1 KiB against the native call's 27-97 ns
 * (bench/frames.mjs, payload copy, Node 22/24/26): Buffer#copy is used.
 */
const copyBytes: (source: Buffer, target: Buffer, targetStart: number, sourceStart: number, sourceEnd: number) => number =
  Number(process.versions.node.split('.')[0]) >= 22 && process.versions.bun === undefined
    ? (source, target, targetStart, sourceStart, sourceEnd) => source.copy(target, targetStart, sourceStart, sourceEnd)
    : native.copyBytes;

/**
 * Payload copies up to this many bytes are a JS loop: below it the loop
 * costs less than a native call's fixed cost (bench: frames of a mix of
 * 5-200 bytes, ~10-20 ns per frame less than copyBytes for every frame).
 */
const SMALL_COPY = 32;

/** @internal target[at, at + length) = src[from, from + length); both ranges lie inside their views. (Exported for bench/frames.mjs.) */
export function copyPayload(src: Buffer, from: number, target: Buffer, at: number, length: number): void {
  if (length <= SMALL_COPY) {
    for (let i = 0; i < length; i++) target[at + i] = src[from + i];
  } else {
    copyBytes(src, target, at, from, from + length);
  }
}

// ---------------------------------------------------------------------------
// FrameParser
// ---------------------------------------------------------------------------

type Waiter = { resolve(result: IteratorResult<Frame>): void; reject(error: Error): void };

export abstract class FrameParser extends EventEmitter implements AsyncIterable<Frame> {
  readonly pool: BufferPool;
  readonly maxFrameSize: number;

  /** The built-in length prefix; null with a custom decoder. */
  private readonly format: LengthPrefixFormat | null;
  /** The prefix is u32be: the parse loop decodes a whole one inline. */
  private readonly inlineU32BE: boolean;
  private readonly decoder: ((bytes: Buffer, start: number, end: number) => FrameHeader | null | undefined) | null;
  /** The decoder takes one argument: it is given a view from the header's first byte. */
  private readonly viewDecoder: boolean;
  /** Where completed frames go instead of the iterator's queue (options.onFrame, set by FrameAssembler). */
  protected onFrame: ((frame: Frame) => void) | null = null;

  // Header bytes split across chunks are gathered here (headers only: payload
  // bytes never pass through it).
  private readonly scratch = Buffer.alloc(MAX_HEADER_LENGTH);
  protected scratchFill = 0;
  /** Set by decodeHeader(): the length of the header it decoded. */
  private readonly decoded: DecodedHeader = { headerLength: 0 };
  /** Set by a custom decoder's header: the tag of the frame being assembled (0 for built-in prefixes). */
  private headerTag = 0;
  /** Where released frames' memory goes (Frame.release() of the last handle). */
  private readonly frameReturn: SharedReturn = { release: (data, length = 0) => this.frameReleased(data, length) };

  /**
   * Set while the parse loop reads the assembler's own read buffer (and only
   * then): a payload that lies whole in it is handed out as a view of it.
   */
  protected readBlock: ReadBlock | null = null;

  // The frame being assembled.
  protected frame: Buffer | null = null;
  protected frameLength = 0;
  protected frameFill = 0;

  // Completed frames not yet handed out (async iterator), as a queue.
  protected queue: (Frame | undefined)[] = [];
  protected queueHead = 0;
  protected waiter: Waiter | null = null;

  protected done = false;
  protected isClosed = false;
  protected errorDelivered = false;
  protected failure: Error | null = null;

  protected counters = { frames: 0, bytes: 0, heldBytes: 0, keptReadBytes: 0, reads: 0, directReads: 0, directBytes: 0, pauses: 0 };

  constructor(options: FrameAssemblerOptions) {
    super();
    validateOptions(options, 'options');
    if (options === undefined || !(options.pool instanceof BufferPool)) {
      throw invalidType('a BufferPool', 'options.pool', options?.pool);
    }
    const { pool, lengthPrefix = 'u32be' } = options;
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
    this.maxFrameSize = maxFrameSize;
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
  protected parse(src: Buffer, pos: number, end: number): number {
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
          const block = this.readBlock;
          if (block !== null && length <= VIEW_MAX) {
            // The whole payload is in the assembler's read buffer: the frame is a view of it (read-block.ts).
            const view = new NodeBuffer(block.arrayBuffer, block.byteOffset + pos, length);
            block.frames++;
            block.frameBytes += length;
            block.viewed = true;
            pos += length;
            this.counters.heldBytes += length;
            this.deliver(new Frame(view, this.headerTag, block));
            if (this.isClosed) return -1;
            continue;
          }
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

  protected completeFrame(): void {
    const buffer = this.frame!;
    this.frame = null;
    this.counters.heldBytes += this.frameLength;
    this.deliver(new Frame(buffer, this.headerTag, this.frameReturn));
  }

  /** Hands a complete frame over: to onFrame now, or to the iterator's queue. */
  protected deliver(frame: Frame): void {
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

  /** Frames completed but not handed out go back to the pool (destroy only: a clean end keeps them for the iterator). */
  protected discardQueue(): void {
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

  // -------------------------------------------------------------------------
  // What the assembler provides
  // -------------------------------------------------------------------------

  /** Ends the parser now, reporting `error` if given (FrameAssembler#destroy). */
  abstract destroy(error?: Error | null): void;

  /** The pool had no memory for a payload of `length` bytes: wait for it (reading stops meanwhile). */
  protected abstract waitForMemory(length: number): void;

  /** The last handle of a frame was released: its memory goes back. */
  protected abstract frameReleased(data: Buffer, length: number): void;
}
