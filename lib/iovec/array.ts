// The iovec part's array: IoVecArray, a `struct iovec[]` in native memory that
// JS fills in place (the vectored syscalls over it: lib/iovec/calls.ts).
//
// Entry layout (native/iovec.h has the full drawing; lib/iovec/entries.ts
// reads and writes it): entry i is bytes [16 i, 16 i + 16) of `buffer`:
// iov_base (u64) then iov_len (u64). push() needs no native call for a pooled
// Buffer (the pool knows its slab addresses), and one to learn a foreign
// view's address.
//
// Safety. Users may write anything into `buffer`. Two checks stand between
// those bytes and the kernel, both before every syscall:
// 1. here, #checkViews() (lib/iovec/views.ts): every view an entry was made
//    from is still what it was at push time: a pooled Buffer is still out, a
//    foreign view is attached and has its length. A load and a compare per entry.
// 2. native/iovec.cc: every entry lies inside the [start, end) recorded at
//    push time for its view, in a bounds array that only this module writes
//    (a #private field; never exposed).
// Together: the kernel only ever sees memory of views this array holds, that
// are alive and attached right now.
import { native } from '../binding';
import { IobufError, validateArray, validateInteger, validateView } from '../errors';
import { type Loan, lend, repayAll } from '../lending';
import { isDetached, maxAllocationSize } from '../memory';
import { pooledAddressOf } from '../pooled';
import {
  BOUNDS_HEADER_BYTES,
  IOVEC_ENTRY_BYTES,
  MAX_IOVEC_CAPACITY,
  Op,
  entryBase,
  entryLength,
  shiftEntries,
  storeEntry,
} from './entries';
import { ViewKind, dataViewLength, firstStaleView, staleError } from './views';

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

/** Internal entry points of IoVecArray for the vectored calls (lib/iovec/calls.ts; not exported from the package). */
export const kTransferSync = Symbol('iobuf.iovec.transferSync');
export const kTransferAsync = Symbol('iobuf.iovec.transferAsync');
/**
 * Internal entry points for a part that hands the array to the kernel itself
 * (lib/uring/ring.ts; not exported from the package): kLend checks the views and
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

  /** `buffer` as Uint32 words (lib/iovec/entries.ts reads and writes entries through it). */
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
  /** How entry i's view is checked: a ViewKind. */
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
      throw new IobufError(
        `IoVecArray needs a 64-bit platform (sizeof(struct iovec) is ${native.iovecEntryBytes})`,
        'ERR_IOBUF_UNSUPPORTED',
      );
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
    validateArray(views, 'views', 'views');
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
    for (let i = 0; i < this.#length; i++) total += entryLength(words, i);
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
      storeEntry(this.#words, index, start, bytes);
      const bounds = this.#bounds;
      bounds[2 * index] = start;
      bounds[2 * index + 1] = start + bytes;
      this.#views[index] = view;
      this.#kinds[index] = ViewKind.POOLED;
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
      const base = entryBase(words, i);
      const length = entryLength(words, i);
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
    let kind: ViewKind;
    let checkLength = 0;
    if (start >= 0) {
      viewLength = (view as Buffer).length; // a pooled view is a Buffer: length is bytes
      kind = ViewKind.POOLED;
    } else {
      validateView(view, 'view');
      viewLength = view instanceof DataView ? dataViewLength(view) : view.byteLength;
      // Freed or transferred memory reads as empty, but is not an empty view.
      if (viewLength <= 0 && (viewLength < 0 || isDetached(view.buffer as ArrayBuffer))) {
        throw new IobufError('view was freed or detached', 'ERR_IOBUF_DETACHED');
      }
      if (view instanceof DataView) {
        kind = ViewKind.DATA_VIEW;
        checkLength = viewLength;
      } else {
        kind = ViewKind.TYPED_ARRAY;
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

    storeEntry(this.#words, index, start + offset, length);
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
    const stale = firstStaleView(this.#views, this.#kinds, this.#bounds, this.#viewLengths, count);
    if (stale >= 0) throw staleError(stale, this.#kinds[stale]);
  }

  #advance(bytes: number): void {
    const words = this.#words;
    const count = this.#length;
    let left = bytes;
    let dropped = 0;
    while (dropped < count) {
      const length = entryLength(words, dropped);
      if (left < length) break; // (zero-length entries at the front go too)
      left -= length;
      dropped++;
    }
    if (dropped > 0) {
      shiftEntries(words, dropped, count);
      this.#bounds.copyWithin(0, 2 * dropped, 2 * count);
      this.#viewLengths.copyWithin(0, dropped, count);
      this.#kinds.copyWithin(0, dropped, count);
      const views = this.#views;
      for (let i = dropped; i < count; i++) views[i - dropped] = views[i];
      views.fill(undefined, count - dropped, count);
      this.#length = count - dropped;
    }
    if (left > 0) storeEntry(words, 0, entryBase(words, 0) + left, entryLength(words, 0) - left);
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

  /** The body of every sync call (readvSync etc., lib/iovec/calls.ts). */
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
    return pending.then(
      (bytes) => {
        this[kRepay]();
        if (op >= Op.WRITEV_ALL) this.#settleAll(-1);
        return bytes;
      },
      (error: Partial<IoVecWriteError>) => {
        this[kRepay]();
        if (op >= Op.WRITEV_ALL) this.#settleAll(error.bytesWritten ?? 0);
        throw error;
      },
    );
  }
}
