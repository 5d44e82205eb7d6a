// SharedBuffer: one pooled Buffer held by several owners at once. Each owner
// holds a handle of its own and releases that handle once; the memory goes
// back when the last handle is released. A FrameAssembler's frames are such
// handles (Frame, in lib/frames/frame.ts); pool.share(buffer) makes one of any pooled
// Buffer; Gatherer.putShared(handle) sends one by reference.
//
// Why handles and not a count on the Buffer: a release() on a handle is
// idempotent and can only ever give back what that handle held, so a second
// release (an explicit one, then the end of a `using` scope) never touches
// memory that has moved on to another owner.
//
// Layout: a handle is { data, returnTo, holders, spent }. `holders` is null
// while a handle is the only one (nothing allocated for the common case of a
// frame released by the one consumer it went to); the first retain() makes one
// small { count } object shared by every handle over the same data.
import { IobufError } from '../errors';

/** What takes the memory back when the last handle is released: a BufferPool, or a FrameAssembler for its frames. */
export interface SharedReturn {
  /** `length`: the buffer's length when the handle was made (its memory may be detached by now: a pool closed with force). */
  release(buffer: Buffer, length?: number): void;
}

/** The number of unreleased handles over one Buffer. */
interface Holders {
  count: number;
}

/**
 * Gives a handle's hold to a new handle and spends the old one (for
 * Gatherer.putShared, which must be the only one able to release what it
 * took over). Not exported from the package.
 */
export const kTakeOver = Symbol('iobuf.sharedBuffer.takeOver');

function releasedError(): IobufError {
  return new IobufError(
    "This handle was released: its memory may be another owner's by now (retain() before releasing, to keep it)",
    'ERR_IOBUF_RELEASED',
  );
}

/**
 * A handle on a pooled Buffer that may have other handles: `retain()` makes
 * another, `release()` (or the end of a `using` scope) gives this one up, and
 * the Buffer goes back to its pool when every handle has been released.
 * Made by `pool.share(buffer)` (and, as Frame, by a FrameAssembler), not by `new`.
 */
export class SharedBuffer implements Disposable {
  /** The bytes: the pooled Buffer itself (the same object for every handle). Do not use it after release(). */
  readonly data: Buffer;
  /** Null when there is nothing to give back (an empty frame's data is not pooled). */
  protected readonly returnTo: SharedReturn | null;
  /** Shared by every handle over `data`; null while this is the only one. */
  protected holders: Holders | null;
  protected spent: boolean;
  /** data.length when the first handle was made, for returnTo (data reads 0 once detached). */
  protected readonly size: number;

  /** @internal pool.share() and FrameAssembler make handles; the constructor is not part of the API. */
  constructor(data: Buffer, returnTo: SharedReturn | null, size = data.length) {
    this.data = data;
    this.returnTo = returnTo;
    this.holders = null;
    this.spent = false;
    this.size = size;
  }

  /** data.length. */
  get length(): number {
    return this.data.length;
  }

  /** Whether this handle was released (or handed over to a Gatherer with putShared). */
  get released(): boolean {
    return this.spent;
  }

  /**
   * Another handle over the same data, to be released on its own. Throws
   * ERR_IOBUF_RELEASED on a handle that was released already.
   */
  retain(): this {
    if (this.spent) throw releasedError();
    const holders = (this.holders ??= { count: 1 });
    holders.count++;
    const handle = this.newHandle();
    handle.holders = holders;
    return handle as this;
  }

  /** Gives this handle up; the memory goes back when it was the last. A second call does nothing. */
  release(): void {
    if (this.spent) return;
    this.spent = true;
    const holders = this.holders;
    if (holders !== null && --holders.count > 0) return;
    if (this.returnTo !== null) this.returnTo.release(this.data, this.size);
  }

  [Symbol.dispose](): void {
    this.release();
  }

  /** A new handle with this one's hold; this one is spent. */
  [kTakeOver](): SharedBuffer {
    if (this.spent) throw releasedError();
    const handle = this.newHandle();
    handle.holders = this.holders;
    this.spent = true;
    return handle;
  }

  /** A fresh handle of the same kind over the same data (holders set by the caller). */
  protected newHandle(): SharedBuffer {
    return new SharedBuffer(this.data, this.returnTo, this.size);
  }
}
