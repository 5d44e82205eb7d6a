// The iovec part: IoVecArray (a `struct iovec[]` in native memory that JS
// fills in place) and vectored syscalls over it.
//
// Entry layout (native/iovec.h has the full drawing): entry i is bytes
// [16 i, 16 i + 16) of `buffer`: iov_base (u64) then iov_len (u64), little-
// endian. push() writes each as two Uint32 halves: no BigInt, no native call
// for a pooled Buffer (the pool knows its slab addresses), one native call to
// learn a foreign view's address.
//
// Safety. Users may write anything into `buffer`. Two checks stand between
// those bytes and the kernel, both before every syscall:
// 1. here, checkViews(): every view an entry was made from is still what it
//    was at push time: a pooled Buffer is still out (pooledAddressOf gives the
//    same address: not released, slab not unmapped), a foreign view still has
//    its length (a detached or shrunk buffer reads 0 or less). A property
//    load and a compare per entry. `length`, not `byteLength`: V8 inlines the
//    first and calls out for the second (measured: 0.8 vs 8 ns per view), and
//    `view.buffer` is dearer still; a DataView, which has no `length`, pays
//    for byteLength (it throws once detached).
// 2. native/iovec.cc: every entry lies inside the [start, end) recorded at
//    push time for its view, in a bounds array that only this module writes
//    (a #private field; never exposed).
// Together: the kernel only ever sees memory of views this array holds, that
// are alive and attached right now.
import os from 'node:os';
import { native } from './binding';
import { IobufError, codedError, describeValue, validateInteger, validateView } from './errors';
import { type Loan, lend, repayAll } from './lending';
import { isDetached, maxAllocationSize } from './memory';
import { pooledAddressOf } from './pooled';

/** The most entries one readv/writev syscall takes (IOV_MAX, 1024 on Linux). */
export const IOV_MAX: number = native.iovMax;
/** Bytes per entry in `IoVecArray#buffer`: sizeof(struct iovec). */
export const IOVEC_ENTRY_BYTES = 16;
/** The largest capacity an IoVecArray takes. */
export const MAX_IOVEC_CAPACITY = 2 ** 20;


// Which Uint32 of a 64-bit field holds its low half.
const LOW = os.endianness() === 'LE' ? 0 : 1;
const HIGH = 1 - LOW;
const TWO_32 = 2 ** 32;

// The operations of native/iovec.h IoVecOp.
const enum Op {
  READV = 0,
  WRITEV = 1,
  PREADV = 2,
  PWRITEV = 3,
  WRITEV_ALL = 4,
  PWRITEV_ALL = 5,
}

const MAX_POSITION = Number.MAX_SAFE_INTEGER;
/** native/iovec.h kBoundsHeaderBytes: the bounds block starts with the native state's address. */
const BOUNDS_HEADER_BYTES = 16;

// How an entry's view is checked before a syscall (see checkViews).
const enum Kind {
  TYPED_ARRAY = 0,
  POOLED = 1,
  DATA_VIEW = 2,
}

/** A DataView's byteLength, or -1 once its buffer is detached (the getter throws then). */
function dataViewLength(view: DataView): number {
  try {
    return view.byteLength;
  } catch {
    return -1;
  }
}

/** A DataView's byteLength throws once its buffer is detached (or shrunk out of reach). */
function dataViewIntact(view: DataView, byteLength: number): boolean {
  try {
    return view.byteLength === byteLength;
  } catch {
    return false;
  }
}

/** An `errno` error from an All call also says how much was written before it. */
export interface IoVecWriteError extends IobufError {
  /** Bytes written before the error; the array was advanced past them. */
  bytesWritten: number;
}

function closedError(): IobufError {
  return new IobufError('This IoVecArray is closed', 'ERR_IOBUF_IOVEC_CLOSED');
}

function busyError(): IobufError {
  return new IobufError('This IoVecArray is lent to a pending promise call (readv/writev/…) until it settles', 'ERR_IOBUF_IOVEC_BUSY');
}

function staleError(index: number, pooled: boolean): IobufError {
  const what = pooled
    ? 'the pooled Buffer it was made from was released to its pool (or the pool freed its memory)'
    : 'the view it was made from was detached or changed length';
  return new IobufError(`iovec entry ${index} is stale: ${what}; no syscall was made`, 'ERR_IOBUF_IOVEC_INVALID');
}

/** Internal entry points of IoVecArray for this module's functions (not exported from the package). */
const kTransferSync = Symbol('iobuf.iovec.transferSync');
const kTransferAsync = Symbol('iobuf.iovec.transferAsync');
/**
 * Internal entry points for a part that hands the array to the kernel itself
 * (lib/uring.ts; not exported from the package): kLend checks the views and
 * lends the array (busy, as a promise call does) and the views' memory
 * (lib/lending.ts) until kRepay; kViewsIntact says whether every view is
 * still attached and unchanged.
 */
export const kLend = Symbol('iobuf.iovec.lend');
export const kRepay = Symbol('iobuf.iovec.repay');
export const kViewsIntact = Symbol('iobuf.iovec.viewsIntact');

export class IoVecArray {
  /** The most entries this array holds. */
  readonly capacity: number;
  /**
   * The raw entries, `struct iovec[capacity]`: 16 bytes each, iov_base then
   * iov_len (64-bit, little-endian). Entries [0, length) are live. Writable,
   * but every call checks the entries against the views they were made from.
   * Detached (byteLength 0) after close().
   */
  readonly buffer: ArrayBuffer;
  /** The address of entry 0 (of `buffer`), for a binding that hands it to the kernel. */
  readonly address: bigint;

  /** `buffer` as Uint32 halves: entry i's base at [4i + LOW, 4i + HIGH], its length at [4i + 2 + LOW, 4i + 2 + HIGH]. */
  #words: Uint32Array;
  /**
   * Private bounds in native memory, and the array's handle for native calls:
   * [start, end) of entry i's view at [2i, 2i + 1] of #bounds, which starts
   * 16 bytes in (native/iovec.h draws the block).
   */
  #boundsBuffer: ArrayBuffer;
  #bounds: Float64Array;
  /** The view each entry was made from: keeps it reachable while the array refers to it. */
  #views: (ArrayBufferView | undefined)[];
  /** A foreign view's `length` (a DataView's byteLength) at push time. */
  #viewLengths: Float64Array;
  /** How entry i's view is checked: Kind.TYPED_ARRAY, POOLED or DATA_VIEW. */
  #kinds: Uint8Array;
  #length = 0;
  #closed = false;
  /** Lent to a pending promise call: no changes until it settles. */
  #busy = false;
  /** While busy: the loans of the views' memory (lib/lending.ts). */
  #loans: Loan[] = [];
  /** #closed || #busy: one load on the hot paths. */
  #unusable = false;

  constructor(capacity: number) {
    validateInteger(capacity, 'capacity', 1, MAX_IOVEC_CAPACITY);
    if (native.iovecEntryBytes !== IOVEC_ENTRY_BYTES) {
      throw new IobufError(`IoVecArray needs a 64-bit platform (sizeof(struct iovec) is ${native.iovecEntryBytes})`, 'ERR_IOBUF_UNSUPPORTED');
    }
    const [entries, bounds, address] = native.iovecCreate(capacity);
    this.capacity = capacity;
    this.buffer = entries;
    this.address = BigInt(address);
    this.#words = new Uint32Array(entries);
    this.#boundsBuffer = bounds;
    this.#bounds = new Float64Array(bounds, BOUNDS_HEADER_BYTES);
    this.#views = new Array(capacity).fill(undefined);
    this.#viewLengths = new Float64Array(capacity);
    this.#kinds = new Uint8Array(capacity);
  }

  /** An array holding `views` (whole), with room for exactly them. */
  static from(views: readonly ArrayBufferView[]): IoVecArray {
    if (!Array.isArray(views)) {
      throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected an array of views for views but received ${describeValue(views)}`);
    }
    const array = new IoVecArray(Math.max(1, views.length));
    for (const view of views) array.push(view);
    return array;
  }

  /** Live entries. */
  get length(): number {
    return this.#length;
  }

  /** The sum of the live entries' lengths, as `buffer` holds them now. */
  get byteLength(): number {
    const words = this.#words;
    let total = 0;
    for (let i = 0, w = 2; i < this.#length; i++, w += 4) total += words[w + LOW] + words[w + HIGH] * TWO_32;
    return total;
  }

  /** True after close(). */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Appends an entry for view[offset, offset + length) (default: the rest of
   * the view) and keeps `view` reachable until the entry is dropped. A pooled
   * Buffer (the very Buffer acquire returned) costs no native call; pass
   * offset/length rather than a subarray to keep it that way, and to have a
   * release of the Buffer caught before the next syscall. Returns the new length.
   */
  push(view: ArrayBufferView, offset?: number, length?: number): number {
    if (this.#unusable) this.#throwUnusable();
    const index = this.#length;
    if (index === this.capacity) {
      throw new IobufError(`This IoVecArray is full (capacity ${this.capacity})`, 'ERR_IOBUF_IOVEC_FULL');
    }
    const start = pooledAddressOf(view);
    if (start >= 0 && offset === undefined && length === undefined) {
      // The common case, inline: a whole pooled Buffer (#write does the same, and the rest).
      const bytes = (view as Buffer).length;
      const words = this.#words;
      const w = 4 * index;
      const startLow = start >>> 0;
      words[w + LOW] = startLow;
      words[w + HIGH] = (start - startLow) / TWO_32;
      const bytesLow = bytes >>> 0;
      words[w + 2 + LOW] = bytesLow;
      words[w + 2 + HIGH] = (bytes - bytesLow) / TWO_32;
      const bounds = this.#bounds;
      bounds[2 * index] = start;
      bounds[2 * index + 1] = start + bytes;
      this.#views[index] = view;
      this.#kinds[index] = Kind.POOLED;
    } else {
      this.#write(index, view, offset, length);
    }
    this.#length = index + 1;
    return index + 1;
  }

  /** Replaces entry `index` (< length). */
  set(index: number, view: ArrayBufferView, offset?: number, length?: number): void {
    if (this.#unusable) this.#throwUnusable();
    validateInteger(index, 'index', 0, this.#length - 1);
    this.#write(index, view, offset, length);
  }

  /** Drops every entry (and the references to their views). */
  clear(): void {
    if (this.#unusable) this.#throwUnusable();
    this.#views.fill(undefined, 0, this.#length);
    this.#length = 0;
  }

  /**
   * Drops what a transfer of `bytes` consumed: whole entries from the front,
   * then the first remaining entry is trimmed. `bytes` may not exceed byteLength.
   */
  advance(bytes: number): void {
    if (this.#unusable) this.#throwUnusable();
    validateInteger(bytes, 'bytes', 0, this.byteLength);
    this.#advance(bytes);
  }

  /**
   * Buffers over what the live entries hold now (sharing memory with the
   * views they were made from). Throws ERR_IOBUF_IOVEC_INVALID for an entry
   * that does not lie inside its view or whose view is stale.
   */
  entries(): Buffer[] {
    if (this.#closed) throw closedError();
    const result: Buffer[] = [];
    const words = this.#words;
    const bounds = this.#bounds;
    this.#checkViews(this.#length);
    for (let i = 0; i < this.#length; i++) {
      const base = words[4 * i + LOW] + words[4 * i + HIGH] * TWO_32;
      const length = words[4 * i + 2 + LOW] + words[4 * i + 2 + HIGH] * TWO_32;
      const start = bounds[2 * i];
      if (base < start || base + length > bounds[2 * i + 1]) {
        throw new IobufError(`iovec entry ${i} is not inside the view it was made from`, 'ERR_IOBUF_IOVEC_INVALID');
      }
      const view = this.#views[i]!;
      result.push(Buffer.from(view.buffer, view.byteOffset + (base - start), length));
    }
    return result;
  }

  /**
   * Frees the native entries now: `buffer` is detached, the views are let
   * go, and every later call throws ERR_IOBUF_IOVEC_CLOSED. Idempotent.
   * (Without close(), the memory goes when the array and `buffer` are collected.)
   */
  close(): void {
    if (this.#closed) return;
    if (this.#busy) throw busyError();
    this.#closed = true;
    this.#unusable = true;
    this.#views.fill(undefined, 0, this.#length);
    this.#length = 0;
    native.iovecClose(this.#boundsBuffer, this.buffer);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  // -------------------------------------------------------------------------
  // Internals
  // -------------------------------------------------------------------------

  #throwUnusable(): never {
    throw this.#closed ? closedError() : busyError();
  }

  /** Writes entry `index` and its private record. Validates everything first. */
  #write(index: number, view: ArrayBufferView, offset: number | undefined, length: number | undefined): void {
    let start = pooledAddressOf(view);
    let viewLength: number;
    let kind: Kind;
    let checkLength = 0;
    if (start >= 0) {
      viewLength = (view as Buffer).length;  // a pooled view is a Buffer: length is bytes
      kind = Kind.POOLED;
    } else {
      validateView(view, 'view');
      viewLength = view instanceof DataView ? dataViewLength(view) : view.byteLength;
      // Freed or transferred memory reads as empty, but is not an empty view.
      if (viewLength <= 0 && (viewLength < 0 || isDetached(view.buffer as ArrayBuffer))) {
        throw new IobufError('view was freed or detached', 'ERR_IOBUF_DETACHED');
      }
      if (view instanceof DataView) {
        kind = Kind.DATA_VIEW;
        checkLength = viewLength;
      } else {
        kind = Kind.TYPED_ARRAY;
        checkLength = (view as Uint8Array).length;
      }
      // An empty view needs no address: its entry is {0, 0}, bounds [0, 0).
      start = viewLength === 0 ? 0 : native.viewAddress(view);
      if (start === 0 && viewLength !== 0) {
        throw new IobufError('view is detached', 'ERR_IOBUF_DETACHED');
      }
    }
    if (offset === undefined) offset = 0;
    else validateInteger(offset, 'offset', 0, viewLength);
    if (length === undefined) length = viewLength - offset;
    else validateInteger(length, 'length', 0, viewLength - offset);
    // entries() gives each entry back as a Buffer (a DataView can be longer on Node 20).
    if (length > maxAllocationSize) validateInteger(length, 'length', 0, maxAllocationSize);

    const base = start + offset;
    const words = this.#words;
    const w = 4 * index;
    const baseLow = base >>> 0;
    words[w + LOW] = baseLow;
    words[w + HIGH] = (base - baseLow) / TWO_32;
    const lengthLow = length >>> 0;
    words[w + 2 + LOW] = lengthLow;
    words[w + 2 + HIGH] = (length - lengthLow) / TWO_32;
    const bounds = this.#bounds;
    bounds[2 * index] = start;
    bounds[2 * index + 1] = start + viewLength;
    this.#views[index] = view;
    this.#viewLengths[index] = checkLength;
    this.#kinds[index] = kind;
  }

  /**
   * Check 1 of the file comment: every view is still what it was at push
   * time. Throws ERR_IOBUF_IOVEC_INVALID for the first stale one.
   */
  #checkViews(count: number): void {
    const views = this.#views;
    const kinds = this.#kinds;
    const bounds = this.#bounds;
    const lengths = this.#viewLengths;
    for (let i = 0; i < count; i++) {
      const view = views[i]!;
      const kind = kinds[i];
      if (kind === Kind.POOLED) {
        if (pooledAddressOf(view) !== bounds[2 * i]) throw staleError(i, true);
      } else if (kind === Kind.TYPED_ARRAY) {
        if ((view as Uint8Array).length !== lengths[i]) throw staleError(i, false);
      } else if (!dataViewIntact(view as DataView, lengths[i])) {
        throw staleError(i, false);
      }
    }
  }

  #advance(bytes: number): void {
    const words = this.#words;
    const count = this.#length;
    let left = bytes;
    let dropped = 0;
    while (dropped < count) {
      const w = 4 * dropped + 2;
      const length = words[w + LOW] + words[w + HIGH] * TWO_32;
      if (left < length) break;  // (zero-length entries at the front go too)
      left -= length;
      dropped++;
    }
    if (dropped > 0) {
      words.copyWithin(0, 4 * dropped, 4 * count);
      this.#bounds.copyWithin(0, 2 * dropped, 2 * count);
      this.#viewLengths.copyWithin(0, dropped, count);
      this.#kinds.copyWithin(0, dropped, count);
      const views = this.#views;
      for (let i = dropped; i < count; i++) views[i - dropped] = views[i];
      views.fill(undefined, count - dropped, count);
      this.#length = count - dropped;
    }
    if (left > 0) {
      const base = words[LOW] + words[HIGH] * TWO_32 + left;
      const length = words[2 + LOW] + words[2 + HIGH] * TWO_32 - left;
      const baseLow = base >>> 0;
      words[LOW] = baseLow;
      words[HIGH] = (base - baseLow) / TWO_32;
      const lengthLow = length >>> 0;
      words[2 + LOW] = lengthLow;
      words[2 + HIGH] = (length - lengthLow) / TWO_32;
    }
  }

  /** After an All call: success empties the array; a failure drops what was written. */
  #settleAll(bytes: number): void {
    if (bytes === -1) {
      this.#views.fill(undefined, 0, this.#length);
      this.#length = 0;
    } else if (bytes > 0) {
      this.#advance(bytes);
    }
  }

  /** See kLend: → [the bounds buffer (the native handle), live entries]. */
  [kLend](): [ArrayBuffer, number] {
    if (this.#unusable) this.#throwUnusable();
    const count = this.#length;
    this.#checkViews(count);
    this.#busy = true;
    this.#unusable = true;
    for (let i = 0; i < count; i++) this.#loans.push(lend(this.#views[i]!));
    return [this.#boundsBuffer, count];
  }

  [kRepay](): void {
    repayAll(this.#loans);
    this.#busy = false;
    this.#unusable = this.#closed;
  }

  [kViewsIntact](): boolean {
    try {
      this.#checkViews(this.#length);
      return true;
    } catch {
      return false;
    }
  }

  /** The body of every sync call (see readvSync etc. below). */
  [kTransferSync](op: Op, fd: number, position: number): number {
    if (this.#unusable) this.#throwUnusable();
    const count = this.#length;
    this.#checkViews(count);
    if (op < Op.WRITEV_ALL) return native.iovecTransfer(this.#boundsBuffer, op, fd, count, position);
    let bytes: number;
    try {
      bytes = native.iovecTransfer(this.#boundsBuffer, op, fd, count, position);
    } catch (error) {
      this.#settleAll((error as Partial<IoVecWriteError>).bytesWritten ?? 0);
      throw error;
    }
    this.#settleAll(-1);
    return bytes;
  }

  /**
   * The body of every promise call. The array is lent to the call (busy)
   * until it settles: that keeps its views reachable and unchanged, and
   * lets an All call advance it afterwards. The views' memory is lent to the
   * kernel for as long (lib/lending.ts): a release() or free() meanwhile
   * takes effect when the call has settled. (Natively, iobuf memory is
   * pinned and other memory goes through bounce blocks: native/iovec.cc.)
   */
  [kTransferAsync](op: Op, fd: number, position: number): Promise<number> {
    if (this.#unusable) this.#throwUnusable();
    let done!: (error: Error | null, bytes: number) => void;
    const pending = new Promise<number>((resolve, reject) => {
      done = (error, bytes) => (error === null ? resolve(bytes) : reject(error));
    });
    const [bounds, count] = this[kLend]();
    try {
      native.iovecTransferAsync(bounds, op, fd, count, position, this.#views, done);
    } catch (error) {
      this[kRepay]();
      throw error;
    }
    return pending.then((bytes) => {
      this[kRepay]();
      if (op >= Op.WRITEV_ALL) this.#settleAll(-1);
      return bytes;
    }, (error: Partial<IoVecWriteError>) => {
      this[kRepay]();
      if (op >= Op.WRITEV_ALL) this.#settleAll(error.bytesWritten ?? 0);
      throw error;
    });
  }
}

// ---------------------------------------------------------------------------
// Vectored I/O. Sync calls run on this thread; promise calls on the libuv
// thread pool (the event loop never blocks). Each returns bytes transferred.
// ---------------------------------------------------------------------------

function checkArguments(fd: unknown, iov: unknown): void {
  validateInteger(fd, 'fd', 0, 2 ** 31 - 1);
  if (!(iov instanceof IoVecArray)) {
    throw codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `Expected an IoVecArray for iov but received ${describeValue(iov)}`);
  }
}

function sync(op: Op, fd: number, iov: IoVecArray, position: number): number {
  checkArguments(fd, iov);
  if (op === Op.PREADV || op === Op.PWRITEV || op === Op.PWRITEV_ALL) validateInteger(position, 'position', 0, MAX_POSITION);
  return iov[kTransferSync](op, fd, position);
}

function async(op: Op, fd: number, iov: IoVecArray, position: number): Promise<number> {
  try {
    checkArguments(fd, iov);
    if (op === Op.PREADV || op === Op.PWRITEV || op === Op.PWRITEV_ALL) validateInteger(position, 'position', 0, MAX_POSITION);
    return iov[kTransferAsync](op, fd, position);
  } catch (error) {
    return Promise.reject(error);
  }
}

/**
 * readv(2) into the live entries (at most IOV_MAX of them per call). EINTR is
 * retried; EAGAIN on a non-blocking fd throws with code 'EAGAIN' (as
 * fs.readSync does); 0 means end of file.
 */
export function readvSync(fd: number, iov: IoVecArray): number {
  return sync(Op.READV, fd, iov, 0);
}

/** writev(2) of the live entries (at most IOV_MAX). May write less than byteLength; EAGAIN throws. */
export function writevSync(fd: number, iov: IoVecArray): number {
  return sync(Op.WRITEV, fd, iov, 0);
}

/** preadv(2) at `position`; the file offset is not changed. */
export function preadvSync(fd: number, iov: IoVecArray, position: number): number {
  return sync(Op.PREADV, fd, iov, position);
}

/** pwritev(2) at `position`; the file offset is not changed. */
export function pwritevSync(fd: number, iov: IoVecArray, position: number): number {
  return sync(Op.PWRITEV, fd, iov, position);
}

/**
 * Writes every byte of the live entries, in order: resumes after short
 * writes, splits arrays of more than IOV_MAX entries, and on EAGAIN (a
 * non-blocking fd that is full) waits in poll() for room — blocking this
 * thread. Returns the bytes written (= byteLength before the call) and leaves
 * the array empty. On an error the array is advanced past what was written
 * and the error carries `bytesWritten`.
 */
export function writevAllSync(fd: number, iov: IoVecArray): number {
  return sync(Op.WRITEV_ALL, fd, iov, 0);
}

/** writevAllSync with pwritev at position, position + written so far, … */
export function pwritevAllSync(fd: number, iov: IoVecArray, position: number): number {
  return sync(Op.PWRITEV_ALL, fd, iov, position);
}

/** readvSync on the libuv thread pool. The array is busy until the promise settles. */
export function readv(fd: number, iov: IoVecArray): Promise<number> {
  return async(Op.READV, fd, iov, 0);
}

/** writevSync on the libuv thread pool. */
export function writev(fd: number, iov: IoVecArray): Promise<number> {
  return async(Op.WRITEV, fd, iov, 0);
}

/** preadvSync on the libuv thread pool. */
export function preadv(fd: number, iov: IoVecArray, position: number): Promise<number> {
  return async(Op.PREADV, fd, iov, position);
}

/** pwritevSync on the libuv thread pool. */
export function pwritev(fd: number, iov: IoVecArray, position: number): Promise<number> {
  return async(Op.PWRITEV, fd, iov, position);
}

/**
 * writevAllSync on the libuv thread pool: the waiting for room on a
 * non-blocking fd happens in a pool thread (poll), never on the event loop.
 */
export function writevAll(fd: number, iov: IoVecArray): Promise<number> {
  return async(Op.WRITEV_ALL, fd, iov, 0);
}

/** pwritevAllSync on the libuv thread pool. */
export function pwritevAll(fd: number, iov: IoVecArray, position: number): Promise<number> {
  return async(Op.PWRITEV_ALL, fd, iov, position);
}
