// GatherSegments: what a Gatherer holds — the segments of its message (scratch
// chunks, borrowed views, owned buffers), the open scratch segment the puts
// write into, the reservations, and the memory it must give back — read as a
// list (segments(), toIoVec(), compact()), reset and released. The base class
// of the puts (puts.ts, bytes.ts) and of Gatherer (gatherer.ts): one object.
import type { BufferPool } from '../pool';
import { IobufError, validateInteger, validateOneOf, validateOptions, invalidType } from '../errors';
import { IoVecArray } from '../iovec/array';
import type { SharedReturn } from '../pool/shared-buffer';
import { maxAllocationSize } from '../memory';

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

export const SCRATCH = 0;
export const BORROWED = 1;
export const OWNED = 2;

export const OPEN = 0;
export const WRITING = 1;
export const SPENT = 2;

export const EMPTY = Buffer.alloc(0);
export const EMPTY_VIEW = new DataView(new ArrayBuffer(0));

/** A chunk's DataView, made once per Buffer object (the pool hands the same object out again). */
const kDataView = Symbol('iobuf.gather.dataView');
export type ChunkBuffer = Buffer & { [kDataView]?: DataView };

export function dataViewOf(chunk: ChunkBuffer): DataView {
  return (chunk[kDataView] ??= new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength));
}

// ---------------------------------------------------------------------------
// GatherSegments
// ---------------------------------------------------------------------------

export class GatherSegments {
  readonly pool: BufferPool;
  readonly chunkSize: number;
  protected readonly heapFallback: boolean;

  // The open scratch segment: [segBegin, cursor) of `chunk`. `limit` is the
  // chunk's length while the gatherer accepts puts and -1 otherwise, so the
  // one fit check of every put also catches a put after writeTo began.
  protected chunk: ChunkBuffer = EMPTY;
  protected view: DataView = EMPTY_VIEW;
  protected segBegin = 0;
  protected cursor = 0;
  protected limit = 0;

  // Closed segments, in order (parallel arrays: no object per segment).
  protected bufs: Buffer[] = [];
  protected starts: number[] = [];
  protected ends: number[] = [];
  protected kinds: number[] = [];
  /** Bytes in the closed segments. */
  protected closedBytes = 0;
  /** BORROWED and OWNED segments among the closed ones. */
  protected blobs = 0;

  /** Pooled buffers this gatherer owns, and the pool each goes back to. */
  protected held: Buffer[] = [];
  protected heldPools: SharedReturn[] = [];

  /** reserve()d regions as absolute byte positions [start, end). */
  protected reservedStarts: number[] = [];
  protected reservedEnds: number[] = [];

  /** lastStringBytes: set by putStringNul() and putStringPrefixed(). */
  protected stringBytes = 0;

  protected state = OPEN;
  /** writeToFd's IoVecArray, made at the first fd write. */
  protected iov: IoVecArray | null = null;

  constructor(options: GathererOptions) {
    validatePoolOption(options);
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
      throw invalidType('an IoVecArray', 'iov', iov);
    }
    if (this.state === OPEN) this.flush();
    if (iov.length + this.bufs.length > iov.capacity) {
      throw new IobufError(
        `The IoVecArray has room for ${iov.capacity - iov.length} more entries; this gatherer has ${this.bufs.length} segments`,
        'ERR_IOBUF_IOVEC_FULL',
      );
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

  /** ERR_IOBUF_IOVEC_INVALID for the first segment whose memory was freed or detached since its put, else null. */
  protected staleSegmentError(): IobufError | null {
    for (let i = 0; i < this.bufs.length; i++) {
      // A detached Buffer reads length 0.
      if (this.bufs[i].length < this.ends[i]) {
        const what =
          this.kinds[i] === BORROWED
            ? 'the view passed to putBytes'
            : this.kinds[i] === SCRATCH
              ? 'its scratch chunk'
              : 'the Buffer passed to putOwned';
        return new IobufError(
          `Gatherer segment ${i} is stale: ${what} was freed or detached since the put; no syscall was made`,
          'ERR_IOBUF_IOVEC_INVALID',
        );
      }
    }
    return null;
  }

  protected segment(i: number): Buffer {
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
    let copiedBlobs = 0; // counted off `blobs` only once the new list is in place (allocate may throw)
    let merged = false;
    let i = 0;
    while (i < count) {
      let j = i;
      let total = 0;
      // (A run's copy is one scratch Buffer: it stops before the largest Buffer.)
      while (j < count && ends[j] - starts[j] < threshold && total + ends[j] - starts[j] <= maxAllocationSize)
        (total += ends[j] - starts[j]), j++;
      if (j - i >= 2) {
        // Scratch for the run comes from the open chunk like any put.
        const at = this.allocate(total);
        this.segBegin = this.cursor; // the run is placed in the list here, not in the open segment
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

  protected checkOpen(): this {
    if (this.state !== OPEN) throw this.stateError();
    return this;
  }

  protected stateError(): IobufError {
    return this.state === WRITING
      ? new IobufError('The gatherer is being written; wait for the write to finish, then reset() it', 'ERR_IOBUF_GATHERER_BUSY')
      : new IobufError('The gatherer was written and is spent; reset() it to use it again', 'ERR_IOBUF_GATHERER_SPENT');
  }

  /** `length` contiguous scratch bytes at the cursor (a new chunk when they do not fit); returns their offset in `chunk`. */
  protected allocate(length: number): number {
    let at = this.cursor;
    if (at + length > this.limit) at = this.grow(length);
    this.cursor = at + length;
    return at;
  }

  /**
   * A put did not fit (or the gatherer is not open): close the open segment
   * and start a new chunk of at least `length` bytes. Returns the cursor (0).
   */
  protected grow(length: number): number {
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

  protected takeScratch(size: number): Buffer {
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
      throw new IobufError(
        `The pool's budget is spent: no ${size}-byte scratch chunk (onBudgetExhausted: 'throw')`,
        'ERR_IOBUF_BUDGET_EXHAUSTED',
      );
    }
    return Buffer.allocUnsafeSlow(size);
  }

  /** Closes the open scratch segment into the list. */
  protected flush(): void {
    const begin = this.segBegin;
    const end = this.cursor;
    if (end === begin) return;
    this.closedBytes += end - begin;
    this.segBegin = end;
    const last = this.bufs.length - 1;
    if (last >= 0 && this.bufs[last] === this.chunk && this.ends[last] === begin) this.ends[last] = end;
    else this.pushSegment(this.chunk, begin, end, SCRATCH, false);
  }

  protected pushSegment(buffer: Buffer, start: number, end: number, kind: number, count = true): void {
    this.bufs.push(buffer);
    this.starts.push(start);
    this.ends.push(end);
    this.kinds.push(kind);
    if (count) this.closedBytes += end - start;
    if (kind !== SCRATCH) this.blobs++;
  }

  protected adoptReservations(other: GatherSegments, base: number): void {
    for (let i = 0; i < other.reservedStarts.length; i++) {
      this.reservedStarts.push(base + other.reservedStarts[i]);
      this.reservedEnds.push(base + other.reservedEnds[i]);
    }
  }

  /** Releases `owned` (copied by compact) and every scratch chunk no segment uses any more. */
  protected releaseUnused(owned: Buffer[]): void {
    const used = new Set<Buffer>(this.bufs);
    used.add(this.chunk);
    const held: Buffer[] = [];
    const heldPools: SharedReturn[] = [];
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

  protected releaseAll(): void {
    const held = this.held;
    const pools = this.heldPools;
    let first: unknown = null;
    for (let i = 0; i < held.length; i++) first = release(held[i], pools[i], first);
    empty(held);
    empty(pools);
    if (first !== null) throw first;
  }

  /** Forgets every segment, reservation and chunk (after they were released or handed on). Keeps the arrays: reset() allocates nothing. */
  protected clear(): void {
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
/**
 * `options` is an options object whose `pool` is a BufferPool. Checked by shape
 * (tryAcquire), not instanceof: a pool from another copy of iobuf serves too.
 */
export function validatePoolOption(options: { pool: BufferPool } | undefined): void {
  validateOptions(options, 'options');
  if (options === undefined || options.pool === null || typeof options.pool !== 'object' || typeof options.pool.tryAcquire !== 'function') {
    throw invalidType('a BufferPool', 'options.pool', options?.pool);
  }
}

export function empty(array: unknown[]): void {
  while (array.length > 0) array.pop();
}

/** Releases one buffer; returns the first error to rethrow once every buffer is released (see firstReleaseError). */
export function release(buffer: Buffer, pool: SharedReturn, first: unknown): unknown {
  try {
    pool.release(buffer);
  } catch (error) {
    return firstReleaseError(error, first);
  }
  return first;
}

/**
 * For a loop that releases everything it holds, each once, even after one
 * throws: given the error a release threw and the first error kept so far
 * (null for none), the first error to rethrow once the loop is done. A pool
 * that was force-closed has freed the memory already (ERR_IOBUF_POOL_CLOSED):
 * nothing to give back, not an error here.
 */
export function firstReleaseError(error: unknown, first: unknown): unknown {
  return first === null && (error as { code?: string }).code !== 'ERR_IOBUF_POOL_CLOSED' ? error : first;
}
