// Gatherer: a scatter-gather writer. Small fields are written into pooled
// scratch chunks, large blobs are held by reference, and the whole message
// leaves in one vectored write (socket: cork + writes + uncork, which libuv
// turns into one writev; fd: the native writev of the iovec part).
//
// The hot path (the put* methods) is plain JS on purpose: a put is a range
// check, one compare against the chunk's limit and a DataView store — about a
// nanosecond — where one native call would cost 10-20 ns (DESIGN.md).
//
// Layout. The message is an ordered list of segments, each (buffer, start,
// end, kind):
//   SCRATCH   bytes in a scratch chunk (pooled, owned by the gatherer)
//   BORROWED  putBytes(): the caller's memory, never copied, never released
//   OWNED     putOwned(): a pooled buffer handed over, released after the write
// The last scratch segment is kept "open" outside the list, as
// [segBegin, cursor) of `chunk`, so a put only moves `cursor`. It is closed
// (flush) when a blob is added or the segments are read; a later put then
// starts a new segment in the same chunk, and flush() joins two segments that
// are adjacent both in the list and in memory, so the list stays minimal.
//
// Ownership. `held` lists every pooled buffer the gatherer owns (scratch
// chunks and owned buffers) with the pool it came from. They are released
// exactly once: when a write has completed (the kernel no longer reads
// them), on reset(), or on a failed write once the socket is closed.
//
// Writing to a socket. A plain TCP or pipe net.Socket with nothing queued
// gets the message with one writev(2) on its descriptor, synchronously (the
// direct path: the kernel copies during the call, so nothing stays lent);
// whatever the kernel did not take goes through the stream (cork, a write()
// per segment, uncork), lent to libuv until the write's callback.
import net from 'node:net';
import type { Writable } from 'node:stream';
import { isNative, portableReason } from './binding';
import type { BufferPool } from './pool';
import { poolOf } from './pool';
import { IobufError, codedError, describeValue, validateInteger, validateOneOf, validateOptions, validateView } from './errors';
import { IOV_MAX, IoVecArray, writevAll, writevAllSync, writevSync } from './iovec';
import type { LengthPrefix } from './frames';
import { type Borrower, type Loan, lend, repayAll } from './lending';
import { SharedBuffer, kTakeOver } from './shared-buffer';
import { maxAllocationSize } from './memory';

export interface GathererOptions {
  /** Where scratch memory comes from. */
  pool: BufferPool;
  /** Bytes of one scratch chunk (a larger put gets a chunk of its own size). Default 4096. */
  chunkSize?: number;
  /**
   * When the pool's budget is spent and a put needs a new chunk: 'heap'
   * (default) takes an unpooled Buffer.allocUnsafeSlow chunk so a put never
   * fails; 'throw' throws ERR_IOBUF_BUDGET_EXHAUSTED (the put has no effect).
   */
  onBudgetExhausted?: 'heap' | 'throw';
}


const SCRATCH = 0;
const BORROWED = 1;
const OWNED = 2;

const OPEN = 0;
const WRITING = 1;
const SPENT = 2;

const EMPTY = Buffer.alloc(0);
const EMPTY_VIEW = new DataView(new ArrayBuffer(0));
const TWO_32 = 4294967296;

/** A chunk's DataView, made once per Buffer object (the pool hands the same object out again). */
const kDataView = Symbol('iobuf.gather.dataView');
type ChunkBuffer = Buffer & { [kDataView]?: DataView };

function dataViewOf(chunk: ChunkBuffer): DataView {
  return chunk[kDataView] ??= new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}

// ---------------------------------------------------------------------------
// Argument errors (off the hot path: a put calls these only when its one-line check failed)
// ---------------------------------------------------------------------------

function badInteger(value: unknown, min: number, max: number): never {
  validateInteger(value, 'value', min, max);
  throw new RangeError(`Expected an integer from ${min} to ${max} for value`);  // not reached
}

function check64(value: unknown, signed: boolean): void {
  const min = signed ? -(2n ** 63n) : 0n;
  const max = signed ? 2n ** 63n - 1n : 2n ** 64n - 1n;
  if (typeof value === 'bigint') {
    if (value >= min && value <= max) return;
    throw codedError(RangeError, 'ERR_OUT_OF_RANGE', `Expected a bigint from ${min} to ${max} for value but received ${value}n`);
  }
  if (typeof value !== 'number') {
    throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected a bigint or a safe integer for value but received ${describeValue(value)}`);
  }
  if (!Number.isSafeInteger(value) || (!signed && value < 0)) {
    const range = signed ? `${Number.MIN_SAFE_INTEGER} to ${Number.MAX_SAFE_INTEGER}` : `0 to ${Number.MAX_SAFE_INTEGER}`;
    throw codedError(RangeError, 'ERR_OUT_OF_RANGE', `Expected an integer from ${range} (a bigint for the full 64-bit range) for value but received ${value}`);
  }
}


function badFloat(value: unknown): never {
  throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected a number for value but received ${describeValue(value)}`);
}

function validateEncoding(encoding: unknown): asserts encoding is BufferEncoding {
  if (typeof encoding !== 'string' || !Buffer.isEncoding(encoding)) {
    validateOneOf(encoding, 'encoding', ['utf8', 'utf16le', 'latin1', 'ascii', 'base64', 'base64url', 'hex'] as const);
  }
}

/** Encodings putStringNul() takes: those where a 0 byte can only come from a NUL character. */
export type NulStringEncoding = 'utf8' | 'utf-8' | 'latin1' | 'binary' | 'ascii';
const NUL_ENCODINGS: readonly NulStringEncoding[] = ['utf8', 'utf-8', 'latin1', 'binary', 'ascii'];
const STRING_PREFIXES: readonly LengthPrefix[] = ['u8', 'u16be', 'u16le', 'u32be', 'u32le', 'varint'];

/** Text up to this many UTF-16 units is tried as ASCII in JS before Buffer#write (see Gatherer#encode). */
const SHORT_TEXT = 32;

function badText(text: unknown): never {
  throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected a string for text but received ${describeValue(text)}`);
}

/** latin1 and ascii write the low byte of each UTF-16 unit: U+0000, U+0100, … all become a 0 byte. */
function hasLowZeroByte(text: string): boolean {
  for (let i = 0; i < text.length; i++) if ((text.charCodeAt(i) & 0xff) === 0) return true;
  return false;
}

/** Bytes of the unsigned LEB128 encoding of `value` (0 to 2^53 - 1). */
function varintWidth(value: number): number {
  let width = 1;
  for (let rest = value; rest >= 0x80; rest = Math.floor(rest / 0x80)) width++;
  return width;
}

/** Writes `value` as unsigned LEB128 at `at` (varintWidth(value) bytes). */
function writeVarint(chunk: Buffer, at: number, value: number): void {
  while (value > 0xffffffff) {
    chunk[at++] = (value % 0x80) | 0x80;
    value = Math.floor(value / 0x80);
  }
  while (value >= 0x80) {
    chunk[at++] = (value & 0x7f) | 0x80;
    value >>>= 7;
  }
  chunk[at] = value;
}

/**
 * One 'error', one 'close' and one 'drain' listener per socket, shared by
 * every writeTo() pending on it (so pipelined writes add no listeners each),
 * attached only while some write is pending: between writes the socket's
 * own error handling is the application's again. While attached, a socket
 * error rejects the pending writes instead of going unhandled.
 *
 * Writes that must wait for 'drain' queue here in call order; each 'drain'
 * lets them write until the socket needs a 'drain' again, so messages keep
 * their order and the socket's buffer is not flooded.
 */
class SocketWatch {
  /** The first 'error' the socket emitted while watched. */
  error: Error | null = null;
  /** 'close' was emitted: libuv has finished or cancelled every write on it. */
  closed = false;
  private readonly onClose = new Set<() => void>();
  private readonly waiting: Array<() => void> = [];
  private readonly errorListener = (error: Error) => { this.error ??= error; };
  private readonly closeListener = () => {
    this.closed = true;
    this.detach();
    for (const callback of [...this.onClose]) callback();
  };

  private readonly drainListener = () => {
    while (this.waiting.length > 0 && !this.socket.writableNeedDrain) this.waiting.shift()!();
  };

  private constructor(private readonly socket: Writable) {
    socket.on('error', this.errorListener);
    socket.on('close', this.closeListener);
    socket.on('drain', this.drainListener);
    watches.set(socket, this);
  }

  /** Whether earlier writeTo() calls on `socket` are still pending (a watch exists only while they are). */
  static watching(socket: Writable): boolean {
    return watches.has(socket);
  }

  /** Runs `write` now, or after the writes queued before it once the socket has drained. */
  writeInOrder(write: () => void): void {
    if (this.waiting.length > 0 || this.socket.writableNeedDrain) this.waiting.push(write);
    else write();
  }

  static of(socket: Writable): SocketWatch {
    return watches.get(socket) ?? new SocketWatch(socket);
  }

  add(onClose: () => void): void {
    this.onClose.add(onClose);
  }

  /** `write` (if still queued) and `onClose` belong to a write that has ended. */
  remove(onClose: () => void, write: () => void): void {
    const queued = this.waiting.indexOf(write);
    if (queued >= 0) this.waiting.splice(queued, 1);
    this.onClose.delete(onClose);
    if (this.onClose.size === 0 && !this.closed) this.detach();
  }

  private detach(): void {
    this.socket.removeListener('error', this.errorListener);
    this.socket.removeListener('close', this.closeListener);
    this.socket.removeListener('drain', this.drainListener);
    if (watches.get(this.socket) === this) watches.delete(this.socket);
  }
}

const watches = new WeakMap<Writable, SocketWatch>();

/**
 * A socket error that says why a write failed: not the ECANCELED with which
 * Node 22 and later complete a write that destroy() cancelled (and which
 * becomes `socket.errored` when the socket had no error of its own), nor the
 * ERR_SOCKET_CLOSED of a write after the handle closed (Bun gives a write
 * that destroy() cancelled that one).
 */
function failureOf(error: Error | null | undefined): Error | null {
  const code = (error as NodeJS.ErrnoException | null | undefined)?.code;
  return error != null && code !== 'ECANCELED' && code !== 'ERR_SOCKET_CLOSED' ? error : null;
}

// ---------------------------------------------------------------------------
// The direct path (see writeTo)
// ---------------------------------------------------------------------------

/** A socket's handle, as far as the direct path reads it (Node's TCPWrap / PipeWrap). */
interface StreamHandle {
  fd?: number;
  writeQueueSize?: number;
  constructor: { name: string };
}

type NodeSocket = net.Socket & {
  _handle?: StreamHandle | null;
  _write?: unknown;
  _writev?: unknown;
  _unrefTimer?: () => void;
  encrypted?: boolean;
};

const socketWrite = net.Socket.prototype._write;
const socketWritev = (net.Socket.prototype as NodeSocket)._writev;
const socketBytesWritten = Object.getOwnPropertyDescriptor(net.Socket.prototype, 'bytesWritten')?.get;
/** Bytes a socket's direct writes sent: an own property of sockets that had one. */
const kDirectBytes = Symbol('iobuf.gather.directBytes');

/**
 * The descriptor to write `socket`'s next message to directly, or -1 when
 * the message must go through the stream: anything but a TCP or pipe
 * net.Socket of Node's own (TLS encrypts; a subclass's _write may transform),
 * one that is connecting, ended or destroyed, and one with anything queued
 * (buffered or corked in the stream, waiting in libuv), which the message
 * would overtake. Nor while earlier writeTo calls on it are pending (waiting
 * for 'drain', or for their callback): writeTo promises settle in call order.
 */
function directDescriptor(socket: Writable): number {
  if (!isNative) return -1;  // portable mode has no writev: every message goes through the stream
  const candidate = socket as NodeSocket;
  if (!(candidate instanceof net.Socket) || candidate.connecting || candidate.encrypted === true) return -1;
  if (candidate.writableLength !== 0 || candidate.writableCorked !== 0 || !candidate.writable || candidate.destroyed) return -1;
  const handle = candidate._handle;
  if (handle === undefined || handle === null || handle.writeQueueSize !== 0) return -1;
  if (candidate._write !== socketWrite || candidate._writev !== socketWritev) return -1;
  const kind = handle.constructor.name;
  if (kind !== 'TCP' && kind !== 'Pipe') return -1;
  const fd = handle.fd;
  if (typeof fd !== 'number' || fd < 0 || SocketWatch.watching(socket)) return -1;
  return fd;
}

/**
 * What the stream would have done for bytes it wrote: count them in
 * socket.bytesWritten (an own getter over the prototype's, installed at the
 * first direct write), and refresh the socket's idle timer (setTimeout()).
 */
function directWritten(socket: NodeSocket, bytes: number): void {
  const counted = socket as NodeSocket & { [kDirectBytes]?: number };
  if (counted[kDirectBytes] !== undefined) {
    counted[kDirectBytes] += bytes;
  } else if (socketBytesWritten !== undefined && Object.getOwnPropertyDescriptor(socket, 'bytesWritten') === undefined) {
    counted[kDirectBytes] = bytes;
    Object.defineProperty(socket, 'bytesWritten', {
      configurable: true,
      enumerable: true,
      get(this: NodeSocket & { [kDirectBytes]: number }) {
        return (socketBytesWritten.call(this) as number) + this[kDirectBytes];
      },
    });
  }
  if (typeof socket._unrefTimer === 'function') socket._unrefTimer();
}

/** The direct path's IoVecArray: one per thread, filled and emptied within one synchronous call. */
let directIov: IoVecArray | null = null;

function directIoVec(entries: number): IoVecArray {
  if (directIov === null || directIov.capacity < entries) {
    directIov?.close();
    directIov = new IoVecArray(Math.max(64, 2 ** Math.ceil(Math.log2(entries))));
  }
  return directIov;
}

export class Gatherer {
  readonly pool: BufferPool;
  readonly chunkSize: number;
  private readonly heapFallback: boolean;

  // The open scratch segment: [segBegin, cursor) of `chunk`. `limit` is the
  // chunk's length while the gatherer accepts puts and -1 otherwise, so the
  // one fit check of every put also catches a put after writeTo began.
  private chunk: ChunkBuffer = EMPTY;
  private view: DataView = EMPTY_VIEW;
  private segBegin = 0;
  private cursor = 0;
  private limit = 0;

  // Closed segments, in order (parallel arrays: no object per segment).
  private bufs: Buffer[] = [];
  private starts: number[] = [];
  private ends: number[] = [];
  private kinds: number[] = [];
  /** Bytes in the closed segments. */
  private closedBytes = 0;
  /** BORROWED and OWNED segments among the closed ones. */
  private blobs = 0;

  /** Pooled buffers this gatherer owns, and the pool each goes back to. */
  private held: Buffer[] = [];
  private heldPools: BufferPool[] = [];

  /** reserve()d regions as absolute byte positions [start, end). */
  private reservedStarts: number[] = [];
  private reservedEnds: number[] = [];

  /** lastStringBytes: set by putStringNul() and putStringPrefixed(). */
  private stringBytes = 0;

  private state = OPEN;
  /** writeToFd's IoVecArray, made at the first fd write. */
  private iov: IoVecArray | null = null;

  constructor(options: GathererOptions) {
    validateOptions(options, 'options');
    if (options === undefined || options.pool === null || typeof options.pool !== 'object' || typeof options.pool.tryAcquire !== 'function') {
      throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected a BufferPool for options.pool but received ${describeValue(options?.pool)}`);
    }
    const { chunkSize = 4096, onBudgetExhausted = 'heap' } = options;
    validateInteger(chunkSize, 'options.chunkSize', 64, 2 ** 30);
    validateOneOf(onBudgetExhausted, 'options.onBudgetExhausted', ['heap', 'throw'] as const);
    this.pool = options.pool;
    this.chunkSize = chunkSize;
    this.heapFallback = onBudgetExhausted === 'heap';
  }

  /** Bytes gathered so far. */
  get byteLength(): number {
    return this.closedBytes + this.cursor - this.segBegin;
  }

  /** True from writeTo()/writeToFd() until that write has settled. */
  get writing(): boolean {
    return this.state === WRITING;
  }

  // -------------------------------------------------------------------------
  // Hot path: fixed-width puts straight into the open chunk
  // -------------------------------------------------------------------------

  putU8(value: number): this {
    if (typeof value !== 'number' || (value & 0xff) !== value) badInteger(value, 0, 0xff);
    let at = this.cursor;
    if (at + 1 > this.limit) at = this.grow(1);
    this.chunk[at] = value;
    this.cursor = at + 1;
    return this;
  }

  putI8(value: number): this {
    if (typeof value !== 'number' || ((value << 24) >> 24) !== value) badInteger(value, -0x80, 0x7f);
    let at = this.cursor;
    if (at + 1 > this.limit) at = this.grow(1);
    this.chunk[at] = value & 0xff;
    this.cursor = at + 1;
    return this;
  }

  putU16BE(value: number): this {
    if (typeof value !== 'number' || (value & 0xffff) !== value) badInteger(value, 0, 0xffff);
    let at = this.cursor;
    if (at + 2 > this.limit) at = this.grow(2);
    this.view.setUint16(at, value);
    this.cursor = at + 2;
    return this;
  }

  putU16LE(value: number): this {
    if (typeof value !== 'number' || (value & 0xffff) !== value) badInteger(value, 0, 0xffff);
    let at = this.cursor;
    if (at + 2 > this.limit) at = this.grow(2);
    this.view.setUint16(at, value, true);
    this.cursor = at + 2;
    return this;
  }

  putI16BE(value: number): this {
    if (typeof value !== 'number' || ((value << 16) >> 16) !== value) badInteger(value, -0x8000, 0x7fff);
    let at = this.cursor;
    if (at + 2 > this.limit) at = this.grow(2);
    this.view.setInt16(at, value);
    this.cursor = at + 2;
    return this;
  }

  putI16LE(value: number): this {
    if (typeof value !== 'number' || ((value << 16) >> 16) !== value) badInteger(value, -0x8000, 0x7fff);
    let at = this.cursor;
    if (at + 2 > this.limit) at = this.grow(2);
    this.view.setInt16(at, value, true);
    this.cursor = at + 2;
    return this;
  }

  putU32BE(value: number): this {
    if (typeof value !== 'number' || (value >>> 0) !== value) badInteger(value, 0, 0xffffffff);
    let at = this.cursor;
    if (at + 4 > this.limit) at = this.grow(4);
    this.view.setUint32(at, value);
    this.cursor = at + 4;
    return this;
  }

  putU32LE(value: number): this {
    if (typeof value !== 'number' || (value >>> 0) !== value) badInteger(value, 0, 0xffffffff);
    let at = this.cursor;
    if (at + 4 > this.limit) at = this.grow(4);
    this.view.setUint32(at, value, true);
    this.cursor = at + 4;
    return this;
  }

  putI32BE(value: number): this {
    if (typeof value !== 'number' || (value | 0) !== value) badInteger(value, -0x80000000, 0x7fffffff);
    let at = this.cursor;
    if (at + 4 > this.limit) at = this.grow(4);
    this.view.setInt32(at, value);
    this.cursor = at + 4;
    return this;
  }

  putI32LE(value: number): this {
    if (typeof value !== 'number' || (value | 0) !== value) badInteger(value, -0x80000000, 0x7fffffff);
    let at = this.cursor;
    if (at + 4 > this.limit) at = this.grow(4);
    this.view.setInt32(at, value, true);
    this.cursor = at + 4;
    return this;
  }

  /** A bigint from 0 to 2^64-1, or a number from 0 to Number.MAX_SAFE_INTEGER. */
  putU64BE(value: bigint | number): this {
    return this.put64(value, false, false);
  }

  putU64LE(value: bigint | number): this {
    return this.put64(value, false, true);
  }

  /** A bigint from -2^63 to 2^63-1, or a safe integer. */
  putI64BE(value: bigint | number): this {
    return this.put64(value, true, false);
  }

  putI64LE(value: bigint | number): this {
    return this.put64(value, true, true);
  }

  putF32BE(value: number): this {
    if (typeof value !== 'number') badFloat(value);
    let at = this.cursor;
    if (at + 4 > this.limit) at = this.grow(4);
    this.view.setFloat32(at, value);
    this.cursor = at + 4;
    return this;
  }

  putF32LE(value: number): this {
    if (typeof value !== 'number') badFloat(value);
    let at = this.cursor;
    if (at + 4 > this.limit) at = this.grow(4);
    this.view.setFloat32(at, value, true);
    this.cursor = at + 4;
    return this;
  }

  putF64BE(value: number): this {
    if (typeof value !== 'number') badFloat(value);
    let at = this.cursor;
    if (at + 8 > this.limit) at = this.grow(8);
    this.view.setFloat64(at, value);
    this.cursor = at + 8;
    return this;
  }

  putF64LE(value: number): this {
    if (typeof value !== 'number') badFloat(value);
    let at = this.cursor;
    if (at + 8 > this.limit) at = this.grow(8);
    this.view.setFloat64(at, value, true);
    this.cursor = at + 8;
    return this;
  }

  private put64(value: bigint | number, signed: boolean, littleEndian: boolean): this {
    check64(value, signed);
    let at = this.cursor;
    if (at + 8 > this.limit) at = this.grow(8);
    write64(this.view, at, value, signed, littleEndian);
    this.cursor = at + 8;
    return this;
  }

  // -------------------------------------------------------------------------
  // Variable-length bytes
  // -------------------------------------------------------------------------

  /** Copies `view`'s bytes into scratch (for small bytes; see putBytes for large ones). */
  putSlice(view: ArrayBufferView): this {
    validateView(view, 'view');
    const length = view.byteLength;
    if (length > maxAllocationSize) validateInteger(length, 'view.byteLength', 0, maxAllocationSize);
    if (length === 0) return this.checkOpen();
    const source = view instanceof Uint8Array ? view : new Uint8Array(view.buffer, view.byteOffset, length);
    const at = this.allocate(length);
    this.chunk.set(source, at);
    return this;
  }

  /** Encodes `text` into scratch; the bytes are those of Buffer.from(text, encoding). */
  putString(text: string, encoding: BufferEncoding = 'utf8'): this {
    if (typeof text !== 'string') {
      throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected a string for text but received ${describeValue(text)}`);
    }
    if (encoding !== 'utf8') validateEncoding(encoding);
    if (text.length === 0) return this.checkOpen();
    // utf8 needs at most 3 bytes per UTF-16 unit: when that fits, write
    // without measuring first (one pass over the text instead of two).
    const room = this.limit - this.cursor;
    const bound = encoding === 'utf8' && text.length * 3 <= room ? text.length * 3 : Buffer.byteLength(text, encoding);
    const at = this.allocate(bound);
    // `write` returns what it wrote, which for hex with a bad digit is less than the bound.
    this.cursor = at + this.chunk.write(text, at, bound, encoding);
    return this;
  }

  /**
   * Encodes `text` followed by a 0 byte (a C string). Only byte encodings
   * ('utf8', 'latin1', 'ascii') make sense here; text that would encode to a
   * 0 byte of its own is an ERR_INVALID_ARG_VALUE (a reader would stop there).
   * The text's byte length is in lastStringBytes afterwards.
   */
  putStringNul(text: string, encoding: NulStringEncoding = 'utf8'): this {
    if (typeof text !== 'string') badText(text);
    const utf8 = encoding === 'utf8' || encoding === 'utf-8';
    if (!utf8) validateOneOf(encoding, 'encoding', NUL_ENCODINGS);
    if (utf8 ? text.indexOf('\0') !== -1 : hasLowZeroByte(text)) {
      throw codedError(TypeError, 'ERR_INVALID_ARG_VALUE', `Expected a string without NUL characters for text but received ${describeValue(text)}`);
    }
    const length = text.length;
    // latin1/ascii write one byte per UTF-16 unit; utf8 at most three.
    let bound = length;
    if (utf8) bound = 3 * length + 1 <= this.limit - this.cursor ? 3 * length : Buffer.byteLength(text, 'utf8');
    const at = this.allocate(bound + 1);
    const written = this.encode(text, at, bound, encoding);
    this.chunk[at + written] = 0;
    this.cursor = at + written + 1;
    this.stringBytes = written;
    return this;
  }

  /**
   * Encodes `text` after its byte length, as `prefix` says: 'u8', 'u16be',
   * 'u16le', 'u32be', 'u32le' or 'varint' (unsigned LEB128, as putVarint).
   * The text is encoded once, straight into scratch, and the prefix filled in
   * after it (no Buffer.byteLength pass for utf8 text that fits the chunk).
   * Text longer than the prefix can say is a RangeError (ERR_OUT_OF_RANGE)
   * that writes nothing. The text's byte length is in lastStringBytes afterwards.
   */
  putStringPrefixed(text: string, prefix: LengthPrefix, encoding: BufferEncoding = 'utf8'): this {
    if (typeof text !== 'string') badText(text);
    let max: number;
    switch (prefix) {
      case 'u8': max = 0xff; break;
      case 'u16be': case 'u16le': max = 0xffff; break;
      case 'u32be': case 'u32le': max = 0xffffffff; break;
      case 'varint': max = Number.MAX_SAFE_INTEGER; break;
      default: validateOneOf(prefix, 'prefix', STRING_PREFIXES); max = 0;
    }
    const utf8 = encoding === 'utf8';
    if (!utf8) validateEncoding(encoding);
    const length = text.length;
    // `least`..`bound`: the byte length the text can have. Exact for latin1 and
    // ascii; for utf8 one to three bytes per UTF-16 unit (a surrogate pair is
    // four bytes for two); other encodings are measured (Buffer.byteLength:
    // hex with a bad digit then writes fewer bytes, and the prefix says so).
    let least: number;
    let bound: number;
    if (utf8) {
      least = length;
      bound = 3 * length;
      if (bound > max || bound + 8 > this.limit - this.cursor) least = bound = Buffer.byteLength(text, 'utf8');
    } else if (encoding === 'latin1' || encoding === 'binary' || encoding === 'ascii') {
      least = bound = length;
    } else {
      least = bound = Buffer.byteLength(text, encoding);
    }
    if (least > max) {
      throw codedError(RangeError, 'ERR_OUT_OF_RANGE', `Expected a string of at most ${max} bytes for a '${prefix}' prefix for text but received ${least} bytes`);
    }
    const width = prefix === 'varint' ? varintWidth(bound) : max === 0xff ? 1 : max === 0xffff ? 2 : 4;
    const at = this.allocate(width + bound);
    const chunk = this.chunk;
    let written = this.encode(text, at + width, bound, encoding);
    if (prefix === 'varint') {
      const used = varintWidth(written);
      if (used < width) {
        // Fewer bytes than the bound, and a shorter varint: move the text up against it.
        chunk.copyWithin(at + used, at + width, at + width + written);
        written += used;
        writeVarint(chunk, at, written - used);
        this.cursor = at + written;
        this.stringBytes = written - used;
        return this;
      }
      writeVarint(chunk, at, written);
    } else if (max === 0xff) {
      chunk[at] = written;
    } else if (max === 0xffff) {
      this.view.setUint16(at, written, prefix === 'u16le');
    } else {
      this.view.setUint32(at, written, prefix === 'u32le');
    }
    this.cursor = at + width + written;
    this.stringBytes = written;
    return this;
  }

  /**
   * Encodes `text` at `at` of the open chunk (at most `bound` bytes); returns
   * the bytes written. Short ASCII text is stored by a JS loop: Buffer#write
   * is a native call of ~50 ns, a loop stores a character in ~1 ns (a topic
   * name, a header key). Anything else goes to Buffer#write.
   */
  private encode(text: string, at: number, bound: number, encoding: BufferEncoding): number {
    const length = text.length;
    if (length <= SHORT_TEXT && (encoding === 'utf8' || encoding === 'latin1' || encoding === 'ascii')) {
      const chunk = this.chunk;
      let i = 0;
      for (; i < length; i++) {
        const code = text.charCodeAt(i);
        if (code > 0x7f) break;
        chunk[at + i] = code;
      }
      if (i === length) return length;
    }
    return length === 0 ? 0 : this.chunk.write(text, at, bound, encoding);
  }

  /**
   * Bytes of text the last putStringNul() or putStringPrefixed() encoded
   * (without the prefix or terminator): the byte length, without a separate
   * Buffer.byteLength. (For putString, `byteLength` after minus before.)
   */
  get lastStringBytes(): number {
    return this.stringBytes;
  }

  /**
   * An unsigned LEB128 varint: 7 bits a byte, least significant first, the
   * high bit set on every byte but the last (MQTT's Remaining Length,
   * protobuf's varint). 0 to Number.MAX_SAFE_INTEGER, 1 to 8 bytes.
   */
  putVarint(value: number): this {
    if (typeof value === 'number' && value >= 0 && value < 0x80 && (value | 0) === value) {
      let at = this.cursor;
      if (at + 1 > this.limit) at = this.grow(1);
      this.chunk[at] = value;
      this.cursor = at + 1;
      return this;
    }
    if (!Number.isSafeInteger(value) || value < 0) badInteger(value, 0, Number.MAX_SAFE_INTEGER);
    const width = varintWidth(value);
    let at = this.cursor;
    if (at + width > this.limit) at = this.grow(width);
    writeVarint(this.chunk, at, value);
    this.cursor = at + width;
    return this;
  }

  /**
   * Adds `view` by reference: no byte is copied, and the memory stays the
   * caller's. It must not change until the write has completed (or reset()).
   */
  putBytes(view: ArrayBufferView): this {
    validateView(view, 'view');
    this.checkOpen();
    const length = view.byteLength;
    if (length > maxAllocationSize) validateInteger(length, 'view.byteLength', 0, maxAllocationSize);
    if (length === 0) return this;
    const buffer = Buffer.isBuffer(view) ? view : Buffer.from(view.buffer, view.byteOffset, length);
    this.flush();
    this.pushSegment(buffer, 0, length, BORROWED);
    return this;
  }

  /**
   * Adds a pooled Buffer (the very one an acquire returned) by reference and
   * takes ownership of it: the gatherer releases it to its pool after the
   * write, on reset(), or when compact() has copied it. If putOwned throws,
   * the caller still owns the buffer.
   */
  putOwned(buffer: Buffer): this {
    validateView(buffer, 'buffer');
    this.checkOpen();
    const pool = poolOf(buffer);
    if (pool === null || !Buffer.isBuffer(buffer)) {
      throw new IobufError('putOwned takes a pooled Buffer that is still out (the very Buffer an acquire returned, not a slice)', 'ERR_IOBUF_FOREIGN_BUFFER');
    }
    if (this.held.includes(buffer)) {
      throw new IobufError('This buffer is owned by this gatherer already; a second putOwned would release it twice', 'ERR_IOBUF_DOUBLE_RELEASE');
    }
    this.flush();
    this.pushSegment(buffer, 0, buffer.length, OWNED);
    this.held.push(buffer);
    this.heldPools.push(pool);
    return this;
  }

  /**
   * Adds a shared pooled buffer's data (a Frame, or a pool.share() handle)
   * by reference and takes that handle over: from now on only the gatherer
   * can release it, which it does after the write, on reset(), or when
   * compact() has copied it; the caller's handle reads `released` and its
   * release() does nothing. To keep the data too, put `handle.retain()`.
   * `offset` and `length` put a range of the data instead of all of it (a
   * payload after a header the message rewrites; packets lying back to back
   * in a shared block); the whole handle is taken over all the same.
   * If putShared throws, the caller still holds the handle.
   */
  putShared(handle: SharedBuffer, offset = 0, length?: number): this {
    if (!(handle instanceof SharedBuffer)) {
      throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected a SharedBuffer (a Frame, or pool.share()) for handle but received ${describeValue(handle)}`);
    }
    // (A released handle's range is not checked: kTakeOver refuses the handle itself.)
    const size = handle.data.length;
    if (offset !== 0 && !handle.released) validateInteger(offset, 'offset', 0, size);
    if (length === undefined) length = size - offset;
    else if (!handle.released) validateInteger(length, 'length', 0, size - offset);
    this.checkOpen();
    const own = handle[kTakeOver]();  // throws ERR_IOBUF_RELEASED for a released handle
    if (length === 0) {
      own.release();
      return this;
    }
    const data = own.data;
    // The held list and compact() find a segment's owner by its Buffer: a second
    // handle of data held already gets a Buffer object of its own over the same bytes.
    const segment = this.held.includes(data) ? data.subarray(0) : data;
    this.flush();
    this.pushSegment(segment, offset, offset + length, OWNED);
    this.held.push(segment);
    // release(buffer, pool) calls pool.release(buffer): the handle's release() takes (and ignores) the argument.
    this.heldPools.push(own as unknown as BufferPool);
    return this;
  }

  /**
   * Appends everything `other` gathered and empties it (it stays open, as if
   * reset). Blobs move by reference, and ownership of `other`'s scratch and
   * owned buffers moves to this gatherer. When `other` holds only scratch
   * bytes they are copied into this gatherer's scratch (one segment, not
   * two) and `other`'s chunks go back to the pool. Reserved regions move
   * along, at their new positions.
   */
  putGatherer(other: Gatherer): this {
    if (!(other instanceof Gatherer)) {
      throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected a Gatherer for other but received ${describeValue(other)}`);
    }
    if (other === this) {
      throw codedError(TypeError, 'ERR_INVALID_ARG_VALUE', 'Expected another Gatherer for other but received this one');
    }
    this.checkOpen();
    other.checkOpen();
    const base = this.byteLength;
    const length = other.byteLength;
    if (length === 0) {
      other.reset();  // it may hold a chunk all the same (putString of bad hex writes nothing)
      return this;
    }
    other.flush();
    if (other.blobs === 0) {
      const at = this.allocate(length);
      let offset = at;
      for (let i = 0; i < other.bufs.length; i++) {
        other.bufs[i].copy(this.chunk, offset, other.starts[i], other.ends[i]);
        offset += other.ends[i] - other.starts[i];
      }
      this.adoptReservations(other, base);
      other.reset();
      return this;
    }
    this.flush();
    for (let i = 0; i < other.bufs.length; i++) {
      this.bufs.push(other.bufs[i]);
      this.starts.push(other.starts[i]);
      this.ends.push(other.ends[i]);
      this.kinds.push(other.kinds[i]);
    }
    this.closedBytes += other.closedBytes;
    this.blobs += other.blobs;
    for (let i = 0; i < other.held.length; i++) {
      this.held.push(other.held[i]);
      this.heldPools.push(other.heldPools[i]);
    }
    this.adoptReservations(other, base);
    empty(other.held);
    empty(other.heldPools);
    other.clear();
    return this;
  }

  // -------------------------------------------------------------------------
  // Reserve now, patch later (length prefixes)
  // -------------------------------------------------------------------------

  /**
   * Reserves `length` zeroed scratch bytes and returns their position (the
   * byte offset from the start of the message), for patch*() once the value
   * is known.
   */
  reserve(length: number): number {
    validateInteger(length, 'length', 0, 2 ** 30);
    const position = this.byteLength;
    if (length === 0) {
      this.checkOpen();
      return position;
    }
    const at = this.allocate(length);
    this.chunk.fill(0, at, at + length);
    this.reservedStarts.push(position);
    this.reservedEnds.push(position + length);
    return position;
  }

  patchU8(at: number, value: number): this {
    if (typeof value !== 'number' || (value & 0xff) !== value) badInteger(value, 0, 0xff);
    this.locate(at, 1).setUint8(this.patchOffset, value);
    return this;
  }

  patchI8(at: number, value: number): this {
    if (typeof value !== 'number' || ((value << 24) >> 24) !== value) badInteger(value, -0x80, 0x7f);
    this.locate(at, 1).setInt8(this.patchOffset, value);
    return this;
  }

  patchU16BE(at: number, value: number): this { return this.patch16(at, value, false, false); }
  patchU16LE(at: number, value: number): this { return this.patch16(at, value, false, true); }
  patchI16BE(at: number, value: number): this { return this.patch16(at, value, true, false); }
  patchI16LE(at: number, value: number): this { return this.patch16(at, value, true, true); }
  patchU32BE(at: number, value: number): this { return this.patch32(at, value, false, false); }
  patchU32LE(at: number, value: number): this { return this.patch32(at, value, false, true); }
  patchI32BE(at: number, value: number): this { return this.patch32(at, value, true, false); }
  patchI32LE(at: number, value: number): this { return this.patch32(at, value, true, true); }
  patchU64BE(at: number, value: bigint | number): this { return this.patch64(at, value, false, false); }
  patchU64LE(at: number, value: bigint | number): this { return this.patch64(at, value, false, true); }
  patchI64BE(at: number, value: bigint | number): this { return this.patch64(at, value, true, false); }
  patchI64LE(at: number, value: bigint | number): this { return this.patch64(at, value, true, true); }
  patchF32BE(at: number, value: number): this { return this.patchFloat(at, value, 4, false); }
  patchF32LE(at: number, value: number): this { return this.patchFloat(at, value, 4, true); }
  patchF64BE(at: number, value: number): this { return this.patchFloat(at, value, 8, false); }
  patchF64LE(at: number, value: number): this { return this.patchFloat(at, value, 8, true); }

  private patch16(at: number, value: number, signed: boolean, littleEndian: boolean): this {
    if (typeof value !== 'number' || (signed ? ((value << 16) >> 16) !== value : (value & 0xffff) !== value)) {
      badInteger(value, signed ? -0x8000 : 0, signed ? 0x7fff : 0xffff);
    }
    this.locate(at, 2).setUint16(this.patchOffset, value & 0xffff, littleEndian);
    return this;
  }

  private patch32(at: number, value: number, signed: boolean, littleEndian: boolean): this {
    if (typeof value !== 'number' || (signed ? (value | 0) !== value : (value >>> 0) !== value)) {
      badInteger(value, signed ? -0x80000000 : 0, signed ? 0x7fffffff : 0xffffffff);
    }
    this.locate(at, 4).setUint32(this.patchOffset, value >>> 0, littleEndian);
    return this;
  }

  private patch64(at: number, value: bigint | number, signed: boolean, littleEndian: boolean): this {
    check64(value, signed);
    write64(this.locate(at, 8), this.patchOffset, value, signed, littleEndian);
    return this;
  }

  private patchFloat(at: number, value: number, width: 4 | 8, littleEndian: boolean): this {
    if (typeof value !== 'number') badFloat(value);
    const view = this.locate(at, width);
    if (width === 4) view.setFloat32(this.patchOffset, value, littleEndian);
    else view.setFloat64(this.patchOffset, value, littleEndian);
    return this;
  }

  /** Set by locate(): the byte offset, in the DataView it returned, of the position asked for. */
  private patchOffset = 0;

  /** The DataView over the scratch bytes at message position `at`, which must lie in one reserve()d region. */
  private locate(at: number, width: number): DataView {
    validateInteger(at, 'at', 0, Number.MAX_SAFE_INTEGER);
    this.checkOpen();
    let inside = false;
    for (let i = this.reservedStarts.length - 1; i >= 0; i--) {
      if (this.reservedStarts[i] <= at && at + width <= this.reservedEnds[i]) {
        inside = true;
        break;
      }
    }
    if (!inside) {
      throw codedError(RangeError, 'ERR_OUT_OF_RANGE', `Expected the position of ${width} bytes inside a region reserve() returned for at but received ${at}`);
    }
    // A reserved region never straddles two segments: reserve() takes it in
    // one piece, and compact() / putGatherer() only join segments.
    if (at >= this.closedBytes) {
      this.patchOffset = this.segBegin + at - this.closedBytes;
      return this.view;
    }
    let position = 0;
    for (let i = 0; ; i++) {
      const length = this.ends[i] - this.starts[i];
      if (at < position + length) {
        this.patchOffset = this.starts[i] + at - position;
        return dataViewOf(this.bufs[i]);
      }
      position += length;
    }
  }

  // -------------------------------------------------------------------------
  // Reading the segments
  // -------------------------------------------------------------------------

  /**
   * The message as Buffers, in order: views of the scratch bytes, and the
   * caller's own Buffer for putBytes/putOwned (the very object, when a
   * Buffer was passed). Valid until the write completes or reset().
   */
  segments(): Buffer[] {
    if (this.state === OPEN) this.flush();
    const count = this.bufs.length;
    const out = new Array<Buffer>(count);
    for (let i = 0; i < count; i++) out[i] = this.segment(i);
    return out;
  }

  /** Number of segments (what segments().length would be). */
  get segmentCount(): number {
    const count = this.bufs.length;
    if (this.cursor === this.segBegin) return count;
    // flush() would join the open segment to the last one when they touch.
    const last = count - 1;
    return last >= 0 && this.bufs[last] === this.chunk && this.ends[last] === this.segBegin ? count : count + 1;
  }

  /**
   * Appends one entry per segment to `iov` (an IoVecArray). The memory stays
   * this gatherer's: write with it before reset(), and do not put more into
   * the gatherer while the iovec is in use. A segment whose memory was freed
   * or detached since its put (a putBytes view passed to free(), a pool
   * closed with force) throws ERR_IOBUF_IOVEC_INVALID, and nothing is appended.
   */
  toIoVec(iov: IoVecArray): IoVecArray {
    if (!(iov instanceof IoVecArray)) {
      throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected an IoVecArray for iov but received ${describeValue(iov)}`);
    }
    if (this.state === OPEN) this.flush();
    if (iov.length + this.bufs.length > iov.capacity) {
      throw new IobufError(`The IoVecArray has room for ${iov.capacity - iov.length} more entries; this gatherer has ${this.bufs.length} segments`, 'ERR_IOBUF_IOVEC_FULL');
    }
    // Scratch chunks and owned buffers are the very Buffers the pool handed
    // out, passed with offset/length (not as subarrays): IoVecArray then finds
    // their address without a native call, and would catch a release before the syscall.
    // Check all first, so that no entry is appended when one is stale.
    const stale = this.staleSegmentError();
    if (stale !== null) throw stale;
    for (let i = 0; i < this.bufs.length; i++) iov.push(this.bufs[i], this.starts[i], this.ends[i] - this.starts[i]);
    return iov;
  }

  private segment(i: number): Buffer {
    const buffer = this.bufs[i];
    const start = this.starts[i];
    const end = this.ends[i];
    return start === 0 && end === buffer.length && this.kinds[i] !== SCRATCH ? buffer : buffer.subarray(start, end);
  }

  /**
   * Merges every run of two or more adjacent segments that are each shorter
   * than `threshold` bytes into one scratch segment (a copy). Longer
   * segments are not touched. Owned buffers whose bytes were copied go back
   * to the pool at once. The bytes of the message do not change.
   */
  compact(threshold: number): this {
    validateInteger(threshold, 'threshold', 0, 2 ** 30);
    this.checkOpen();
    this.flush();
    const count = this.bufs.length;
    if (count < 2) return this;
    const { bufs, starts, ends, kinds } = this;
    const newBufs: Buffer[] = [];
    const newStarts: number[] = [];
    const newEnds: number[] = [];
    const newKinds: number[] = [];
    const copiedOwned: Buffer[] = [];
    let copiedBlobs = 0;  // counted off `blobs` only once the new list is in place (allocate may throw)
    let merged = false;
    let i = 0;
    while (i < count) {
      let j = i;
      let total = 0;
      // (A run's copy is one scratch Buffer: it stops before the largest Buffer.)
      while (j < count && ends[j] - starts[j] < threshold && total + ends[j] - starts[j] <= maxAllocationSize) total += ends[j] - starts[j], j++;
      if (j - i >= 2) {
        // Scratch for the run comes from the open chunk like any put.
        const at = this.allocate(total);
        this.segBegin = this.cursor;  // the run is placed in the list here, not in the open segment
        let offset = at;
        for (let k = i; k < j; k++) {
          bufs[k].copy(this.chunk, offset, starts[k], ends[k]);
          offset += ends[k] - starts[k];
          if (kinds[k] !== SCRATCH) copiedBlobs++;
          if (kinds[k] === OWNED) copiedOwned.push(bufs[k]);
        }
        // Its own segment even when it lands right after a scratch segment
        // in memory: segments of threshold bytes or more stay as they were.
        newBufs.push(this.chunk);
        newStarts.push(at);
        newEnds.push(at + total);
        newKinds.push(SCRATCH);
        merged = true;
        i = j;
      } else {
        const end = j === i ? i + 1 : j;
        for (let k = i; k < end; k++) {
          newBufs.push(bufs[k]);
          newStarts.push(starts[k]);
          newEnds.push(ends[k]);
          newKinds.push(kinds[k]);
        }
        i = end;
      }
    }
    if (!merged) return this;
    this.blobs -= copiedBlobs;
    this.bufs = newBufs;
    this.starts = newStarts;
    this.ends = newEnds;
    this.kinds = newKinds;
    this.releaseUnused(copiedOwned);
    return this;
  }

  // -------------------------------------------------------------------------
  // Writing
  // -------------------------------------------------------------------------

  /**
   * Writes the message to a socket: cork, one write() per segment, uncork —
   * libuv sends the segments with one writev and no copy. Resolves when the
   * last write's callback has run (the bytes are with the kernel); then the
   * scratch and owned buffers go back to the pool and the gatherer is spent
   * until reset().
   *
   * The direct path: a TCP or pipe net.Socket with nothing queued gets the
   * message with one writev(2) on its descriptor, during the call. What the
   * kernel took is done (a message it took whole settles the gatherer at
   * once, before the promise is returned); the rest, if any, goes through
   * the stream as above, behind nothing. The kernel's error (EPIPE,
   * ECONNRESET, …) is the socket's: it is destroyed with it.
   *
   * Backpressure: when the socket already needs a 'drain' at the call (or
   * earlier writeTo() calls on it are waiting for one), the write waits for
   * it, behind those calls. The message itself is always written in full (a
   * write() returning false does not split it), so it is the next writeTo()
   * that waits. Messages leave in call order, however many are pending.
   *
   * Lending: from the call until the write is over, every segment's memory is
   * lent (lib/lending.ts): a release() of a putBytes'd pooled Buffer, a free()
   * of a putBytes'd allocation, or a pool's close takes effect only after it.
   * A segment whose memory was already freed or detached at the call, or
   * before the write could be handed to the socket, fails the write with
   * ERR_IOBUF_IOVEC_INVALID and nothing is written. A pool closed with
   * { force } before the write was handed to the socket fails it with
   * ERR_IOBUF_POOL_CLOSED (nothing written); once handed over, it completes.
   *
   * A socket error or close before completion rejects (with the socket's
   * error, else ERR_IOBUF_SOCKET_CLOSED), after the socket is destroyed and
   * closed (libuv no longer reads the memory) and every pooled buffer is
   * back in the pool.
   */
  writeTo(socket: Writable): Promise<void> {
    if (socket === null || typeof socket !== 'object' || typeof (socket as Writable).write !== 'function') {
      return Promise.reject(codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected a net.Socket or stream.Writable for socket but received ${describeValue(socket)}`));
    }
    if (this.state !== OPEN) return Promise.reject(this.stateError());
    this.flush();
    const stale = this.staleSegmentError();
    if (stale !== null) {
      this.spend();
      return Promise.reject(stale);
    }
    this.state = WRITING;
    this.limit = -1;
    let directError: Error | null = null;
    const fd = this.bufs.length > 0 ? directDescriptor(socket) : -1;
    if (fd >= 0) {
      try {
        if (this.writeDirect(socket as NodeSocket, fd)) {
          const releaseError = this.spend();
          return releaseError === null ? Promise.resolve() : Promise.reject(releaseError);
        }
      } catch (error) {
        if (typeof (error as { errno?: unknown }).errno !== 'number') {
          // Not the kernel's: the iovec's own checks refused a segment's memory (no syscall, nothing sent).
          this.spend();
          return Promise.reject(error);
        }
        directError = error as Error;
      }
    }
    return new Promise<void>((resolve, reject) => this.startSocketWrite(socket, resolve, reject, directError));
  }

  /**
   * One writev(2) of the segments (at most IOV_MAX) on `fd`, a non-blocking
   * socket whose stream has nothing queued. Returns true when the kernel took
   * the whole message; otherwise drops what it took from the segments (none
   * on EAGAIN) and returns false. Throws the kernel's error (nothing was sent).
   */
  private writeDirect(socket: NodeSocket, fd: number): boolean {
    const count = this.bufs.length < IOV_MAX ? this.bufs.length : IOV_MAX;
    const iov = directIoVec(count);
    let written = 0;
    try {
      // The very Buffers the pool handed out, with offset and length: no native call per entry.
      for (let i = 0; i < count; i++) iov.push(this.bufs[i], this.starts[i], this.ends[i] - this.starts[i]);
      written = writevSync(fd, iov);
    } catch (error) {
      if ((error as { code?: string }).code !== 'EAGAIN') throw error;
    } finally {
      iov.clear();  // the kernel has copied what it took: nothing is lent past this call
    }
    if (written === 0) return false;
    directWritten(socket, written);
    if (written === this.closedBytes) return true;
    this.dropSent(written);
    return false;
  }

  /** Drops the first `bytes` of the segments (fewer than all of them): whole segments, then the start of the next. */
  private dropSent(bytes: number): void {
    let sent = 0;
    while (bytes >= this.ends[sent] - this.starts[sent]) bytes -= this.ends[sent] - this.starts[sent], sent++;
    this.starts[sent] += bytes;
    if (sent === 0) return;
    // Their memory stays held (released with the rest at the end); only the list forgets them.
    this.bufs.splice(0, sent);
    this.starts.splice(0, sent);
    this.ends.splice(0, sent);
    this.kinds.splice(0, sent);
  }

  private startSocketWrite(socket: Writable, resolve: () => void, reject: (error: Error) => void, directError: Error | null): void {
    if (socket.destroyed) {
      // Nothing reaches libuv: the memory is free to go at once.
      this.settle(failureOf(socket.errored) ?? new IobufError('The socket is destroyed', 'ERR_IOBUF_SOCKET_CLOSED'), resolve, reject);
      return;
    }
    const count = this.bufs.length;
    if (count === 0) {
      this.settle(null, resolve, reject);
      return;
    }
    const watch = SocketWatch.of(socket);
    let failure: Error | null = null;
    let done = false;
    /** The segments were given to the socket: from then on only the socket can end the write. */
    let handedOver = false;
    // Ends the write once it is safe to release: at success, before the
    // hand-over, or on failure once the socket has closed (its pending writes
    // are finished or cancelled).
    const finish = (error: Error | null) => {
      if (done) return;
      if (error !== null) {
        failure ??= error;
        if (handedOver && !watch.closed) {
          if (!socket.destroyed) socket.destroy(failure);
          return;  // onClose finishes
        }
      }
      done = true;
      watch.remove(onClose, writeAll);
      repayAll(loans);
      this.settle(failure, resolve, reject);
    };
    const onClose = () => finish(watch.error ?? failureOf(socket.errored) ?? new IobufError('The socket closed before the write completed', 'ERR_IOBUF_SOCKET_CLOSED'));
    // A write that destroy() cancelled reports no error on Node 20 and
    // ECANCELED on Node 22 and later: either way a destroyed socket means
    // failure, and the reason is the socket's own error, if it had one.
    const onWritten = (error?: Error | null) => {
      if (error || socket.destroyed) finish(failureOf(error) ?? watch.error ?? failureOf(socket.errored) ?? new IobufError('The socket was destroyed before the write completed', 'ERR_IOBUF_SOCKET_CLOSED'));
      else finish(null);
    };
    const writeAll = () => {
      // Runs now or from the socket's 'drain' listener: nothing may throw out of it.
      const stale = this.staleSegmentError();
      if (stale !== null) {
        finish(stale);
        return;
      }
      handedOver = true;
      socket.cork();
      try {
        for (let i = 0; i < count - 1; i++) socket.write(this.segment(i));
        socket.write(this.segment(count - 1), onWritten);
      } catch (error) {
        finish(error as Error);
      } finally {
        socket.uncork();
      }
    };
    // A lender (a pool) that closes before the hand-over fails the write; after it, the write completes.
    const borrower: Borrower = {
      stopBorrowing: (reason) => {
        if (!handedOver) finish(reason);
      },
    };
    const loans: Loan[] = [];
    watch.add(onClose);
    if (directError !== null) {
      // The kernel refused the direct writev: the socket failed. Destroyed with
      // that error, it closes; the watch reports the error to this write and
      // keeps it from going unhandled meanwhile.
      handedOver = true;
      finish(directError);
      return;
    }
    for (let i = 0; i < count; i++) {
      if (i === 0 || this.bufs[i] !== this.bufs[i - 1]) loans.push(lend(this.bufs[i], borrower));
    }
    watch.writeInOrder(writeAll);
  }

  /** ERR_IOBUF_IOVEC_INVALID for the first segment whose memory was freed or detached since its put, else null. */
  private staleSegmentError(): IobufError | null {
    for (let i = 0; i < this.bufs.length; i++) {
      // A detached Buffer reads length 0.
      if (this.bufs[i].length < this.ends[i]) {
        const what = this.kinds[i] === BORROWED ? 'the view passed to putBytes' : this.kinds[i] === SCRATCH ? 'its scratch chunk' : 'the Buffer passed to putOwned';
        return new IobufError(`Gatherer segment ${i} is stale: ${what} was freed or detached since the put; no syscall was made`, 'ERR_IOBUF_IOVEC_INVALID');
      }
    }
    return null;
  }

  /** The write is over: every pooled buffer back, the gatherer spent. */
  private settle(error: Error | null, resolve: () => void, reject: (error: Error) => void): void {
    const releaseError = this.spend();  // always: the pooled buffers go back on failure too
    const reason = error ?? releaseError;
    if (reason === null) resolve();
    else reject(reason);
  }

  /** Releases everything and marks the gatherer spent; returns a release error (other than a closed pool), if any. */
  private spend(): Error | null {
    let releaseError: Error | null = null;
    try {
      this.releaseAll();
    } catch (caught) {
      releaseError = caught as Error;
    }
    this.clear();
    this.state = SPENT;
    this.limit = -1;
    return releaseError;
  }

  /**
   * Writes the message to a file descriptor with the iovec part's writevAll
   * on the libuv thread pool: one writev(2) for the whole message (split only
   * beyond IOV_MAX segments), continued after short writes, waiting in poll()
   * on a full non-blocking fd. Resolves with the bytes written (byteLength)
   * once every byte is out; then, or on an error (an IobufError with errno
   * and `bytesWritten`), the pooled buffers go back and the gatherer is spent.
   */
  writeToFd(fd: number): Promise<number> {
    let iov: IoVecArray | null;
    try {
      iov = this.beginFdWrite(fd);
    } catch (error) {
      return Promise.reject(error);
    }
    if (iov === null) return Promise.resolve(this.endFdWrite(null, null, 0));
    const filled = iov;
    return writevAll(fd, filled).then(
      (written) => this.endFdWrite(filled, null, written),
      (error: Error) => this.endFdWrite(filled, error, 0),
    );
  }

  /** writeToFd on this thread (blocks it until every byte is out); returns the bytes written. */
  writeToFdSync(fd: number): number {
    const iov = this.beginFdWrite(fd);
    if (iov === null) return this.endFdWrite(null, null, 0);
    let written: number;
    try {
      written = writevAllSync(fd, iov);
    } catch (error) {
      return this.endFdWrite(iov, error as Error, 0);
    }
    return this.endFdWrite(iov, null, written);
  }

  /** Validates, marks the gatherer busy and fills its IoVecArray; null when there is nothing to write. */
  private beginFdWrite(fd: number): IoVecArray | null {
    validateInteger(fd, 'fd', 0, 2 ** 31 - 1);
    if (!isNative) {
      // Nothing changes: the gatherer keeps its message, which writeTo(socket) can still send.
      throw new IobufError(`Not supported in portable mode: writeToFd() and writeToFdSync() (writev(2) needs the native addon; writeTo(socket) works). Portable mode because ${portableReason}`, 'ERR_IOBUF_UNSUPPORTED');
    }
    if (this.state !== OPEN) throw this.stateError();
    this.flush();
    const count = this.bufs.length;
    if (count === 0) return null;
    let iov = this.iov;
    if (iov === null || iov.capacity < count) {
      // One array per gatherer, grown to a power of two and kept across
      // reset(): native memory of 16 bytes an entry, freed with the gatherer.
      iov?.close();
      iov = this.iov = new IoVecArray(Math.max(16, 2 ** Math.ceil(Math.log2(count))));
    }
    iov.clear();
    try {
      this.toIoVec(iov);
    } catch (error) {
      // A stale segment: no syscall. The pooled buffers go back (once) and the gatherer is spent, as after a failed write.
      iov.clear();
      this.spend();
      throw error;
    }
    this.state = WRITING;
    this.limit = -1;
    return iov;
  }

  private endFdWrite(iov: IoVecArray | null, error: Error | null, written: number): number {
    iov?.clear();  // drop its references to the views before they go back to the pool
    const releaseError = this.spend();
    if (error !== null) throw error;
    if (releaseError !== null) throw releaseError;
    return written;
  }

  // -------------------------------------------------------------------------
  // Reuse
  // -------------------------------------------------------------------------

  /**
   * Releases every pooled buffer and empties the gatherer, which accepts puts
   * again. Throws ERR_IOBUF_GATHERER_BUSY while a write is in progress.
   */
  reset(): this {
    if (this.state === WRITING) throw this.stateError();
    try {
      this.releaseAll();
    } finally {
      this.clear();
      this.state = OPEN;
    }
    return this;
  }

  /** `using g = new Gatherer(…)`: reset at scope exit (a write in progress releases when it ends). */
  [Symbol.dispose](): void {
    if (this.state !== WRITING) this.reset();
  }

  // -------------------------------------------------------------------------
  // Internals
  // -------------------------------------------------------------------------

  private checkOpen(): this {
    if (this.state !== OPEN) throw this.stateError();
    return this;
  }

  private stateError(): IobufError {
    return this.state === WRITING
      ? new IobufError('The gatherer is being written; wait for the write to finish, then reset() it', 'ERR_IOBUF_GATHERER_BUSY')
      : new IobufError('The gatherer was written and is spent; reset() it to use it again', 'ERR_IOBUF_GATHERER_SPENT');
  }

  /** `length` contiguous scratch bytes at the cursor (a new chunk when they do not fit); returns their offset in `chunk`. */
  private allocate(length: number): number {
    let at = this.cursor;
    if (at + length > this.limit) at = this.grow(length);
    this.cursor = at + length;
    return at;
  }

  /**
   * A put did not fit (or the gatherer is not open): close the open segment
   * and start a new chunk of at least `length` bytes. Returns the cursor (0).
   */
  private grow(length: number): number {
    if (this.state !== OPEN) throw this.stateError();
    this.flush();
    const chunk = this.takeScratch(length > this.chunkSize ? length : this.chunkSize);
    this.chunk = chunk;
    this.view = dataViewOf(chunk);
    this.segBegin = 0;
    this.cursor = 0;
    this.limit = chunk.length;
    return 0;
  }

  private takeScratch(size: number): Buffer {
    let buffer: Buffer | null;
    try {
      buffer = this.pool.tryAcquire(size);
    } catch (error) {
      // A chunk the budget can never hold (above maxMemory, or a size class whose
      // slot is): the pool calls `size` out of range. For a put that is a spent
      // budget, not a bad argument of the caller's.
      if ((error as { code?: string }).code !== 'ERR_OUT_OF_RANGE') throw error;
      buffer = null;
    }
    if (buffer !== null) {
      this.held.push(buffer);
      this.heldPools.push(this.pool);
      return buffer;
    }
    if (!this.heapFallback) {
      throw new IobufError(`The pool's budget is spent: no ${size}-byte scratch chunk (onBudgetExhausted: 'throw')`, 'ERR_IOBUF_BUDGET_EXHAUSTED');
    }
    return Buffer.allocUnsafeSlow(size);
  }

  /** Closes the open scratch segment into the list. */
  private flush(): void {
    const begin = this.segBegin;
    const end = this.cursor;
    if (end === begin) return;
    this.closedBytes += end - begin;
    this.segBegin = end;
    const last = this.bufs.length - 1;
    if (last >= 0 && this.bufs[last] === this.chunk && this.ends[last] === begin) this.ends[last] = end;
    else this.pushSegment(this.chunk, begin, end, SCRATCH, false);
  }

  private pushSegment(buffer: Buffer, start: number, end: number, kind: number, count = true): void {
    this.bufs.push(buffer);
    this.starts.push(start);
    this.ends.push(end);
    this.kinds.push(kind);
    if (count) this.closedBytes += end - start;
    if (kind !== SCRATCH) this.blobs++;
  }

  private adoptReservations(other: Gatherer, base: number): void {
    for (let i = 0; i < other.reservedStarts.length; i++) {
      this.reservedStarts.push(base + other.reservedStarts[i]);
      this.reservedEnds.push(base + other.reservedEnds[i]);
    }
  }

  /** Releases `owned` (copied by compact) and every scratch chunk no segment uses any more. */
  private releaseUnused(owned: Buffer[]): void {
    const used = new Set<Buffer>(this.bufs);
    used.add(this.chunk);
    const held: Buffer[] = [];
    const heldPools: BufferPool[] = [];
    let first: unknown = null;
    for (let i = 0; i < this.held.length; i++) {
      if (used.has(this.held[i]) && !owned.includes(this.held[i])) {
        held.push(this.held[i]);
        heldPools.push(this.heldPools[i]);
      } else {
        first = release(this.held[i], this.heldPools[i], first);
      }
    }
    this.held = held;
    this.heldPools = heldPools;
    if (first !== null) throw first;
  }

  private releaseAll(): void {
    const held = this.held;
    const pools = this.heldPools;
    let first: unknown = null;
    for (let i = 0; i < held.length; i++) first = release(held[i], pools[i], first);
    empty(held);
    empty(pools);
    if (first !== null) throw first;
  }

  /** Forgets every segment, reservation and chunk (after they were released or handed on). Keeps the arrays: reset() allocates nothing. */
  private clear(): void {
    this.chunk = EMPTY;
    this.view = EMPTY_VIEW;
    this.segBegin = 0;
    this.cursor = 0;
    this.limit = 0;
    empty(this.bufs);
    empty(this.starts);
    empty(this.ends);
    empty(this.kinds);
    this.closedBytes = 0;
    this.blobs = 0;
    empty(this.reservedStarts);
    empty(this.reservedEnds);
  }
}

/** Empties an array in place. (`array.length = 0` costs ~30 ns in V8; pops keep the backing store and cost ~1 ns.) */
function empty(array: unknown[]): void {
  while (array.length > 0) array.pop();
}

/**
 * Releases one buffer; returns the first error to rethrow once every buffer
 * is released. A pool that was force-closed has freed the memory already
 * (ERR_IOBUF_POOL_CLOSED): nothing to give back, not an error here.
 */
function release(buffer: Buffer, pool: BufferPool, first: unknown): unknown {
  try {
    pool.release(buffer);
  } catch (error) {
    if (first === null && (error as { code?: string }).code !== 'ERR_IOBUF_POOL_CLOSED') return error;
  }
  return first;
}

/** Writes a validated 64-bit value: a bigint directly, a safe integer as two 32-bit halves (no BigInt made). */
function write64(view: DataView, at: number, value: bigint | number, signed: boolean, littleEndian: boolean): void {
  if (typeof value === 'bigint') {
    if (signed) view.setBigInt64(at, value, littleEndian);
    else view.setBigUint64(at, value, littleEndian);
    return;
  }
  // Math.floor keeps the sign for negative values; `>>> 0` is value mod 2^32.
  const high = Math.floor(value / TWO_32);
  const low = value >>> 0;
  if (littleEndian) {
    view.setUint32(at, low, true);
    view.setInt32(at + 4, high | 0, true);
  } else {
    view.setInt32(at, high | 0);
    view.setUint32(at + 4, low);
  }
}
