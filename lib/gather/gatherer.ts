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
//
// The class is layered, one object: GatherSegments (segments.ts: what the
// gatherer holds, reading it, reset and release) <- GatherPuts (puts.ts: the
// fixed-width puts and reserve/patch) <- GatherBytes (bytes.ts: strings,
// varints, bytes by copy, reference or handover) <- Gatherer (this file:
// putGatherer and the writes; socket-write.ts has the socket side).
import type { Writable } from 'node:stream';
import { isNative, portableReason } from '../binding';
import { IobufError, validateInteger, invalidType, invalidValue } from '../errors';
import { IoVecArray } from '../iovec/array';
import { IOV_MAX, writevAll, writevAllSync, writevSync } from '../iovec/calls';
import { type Borrower, type Loan, lend, repayAll } from '../lending';
import { OPEN, SPENT, WRITING, empty } from './segments';
import { GatherBytes } from './bytes';
import { SocketWatch, type NodeSocket, directDescriptor, directIoVec, directWritten, failureOf } from './socket-write';

export type { GathererOptions } from './segments';
export type { NulStringEncoding } from './bytes';

export class Gatherer extends GatherBytes {
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
      throw invalidType('a Gatherer', 'other', other);
    }
    if (other === this) {
      throw invalidValue('another Gatherer', 'other', other, 'this one');
    }
    this.checkOpen();
    other.checkOpen();
    const base = this.byteLength;
    const length = other.byteLength;
    if (length === 0) {
      other.reset(); // it may hold a chunk all the same (putString of bad hex writes nothing)
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
      return Promise.reject(invalidType('a net.Socket or stream.Writable', 'socket', socket));
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
  protected writeDirect(socket: NodeSocket, fd: number): boolean {
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
      iov.clear(); // the kernel has copied what it took: nothing is lent past this call
    }
    if (written === 0) return false;
    directWritten(socket, written);
    if (written === this.closedBytes) return true;
    this.dropSent(written);
    return false;
  }

  /** Drops the first `bytes` of the segments (fewer than all of them): whole segments, then the start of the next. */
  protected dropSent(bytes: number): void {
    let sent = 0;
    while (bytes >= this.ends[sent] - this.starts[sent]) (bytes -= this.ends[sent] - this.starts[sent]), sent++;
    this.starts[sent] += bytes;
    if (sent === 0) return;
    // Their memory stays held (released with the rest at the end); only the list forgets them.
    this.bufs.splice(0, sent);
    this.starts.splice(0, sent);
    this.ends.splice(0, sent);
    this.kinds.splice(0, sent);
  }

  protected startSocketWrite(socket: Writable, resolve: () => void, reject: (error: Error) => void, directError: Error | null): void {
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
          return; // onClose finishes
        }
      }
      done = true;
      watch.remove(onClose, writeAll);
      repayAll(loans);
      this.settle(failure, resolve, reject);
    };
    const onClose = () =>
      finish(
        watch.error ??
          failureOf(socket.errored) ??
          new IobufError('The socket closed before the write completed', 'ERR_IOBUF_SOCKET_CLOSED'),
      );
    // A write that destroy() cancelled reports no error on Node 20 and
    // ECANCELED on Node 22 and later: either way a destroyed socket means
    // failure, and the reason is the socket's own error, if it had one.
    const onWritten = (error?: Error | null) => {
      if (error || socket.destroyed)
        finish(
          failureOf(error) ??
            watch.error ??
            failureOf(socket.errored) ??
            new IobufError('The socket was destroyed before the write completed', 'ERR_IOBUF_SOCKET_CLOSED'),
        );
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

  /** The write is over: every pooled buffer back, the gatherer spent. */
  protected settle(error: Error | null, resolve: () => void, reject: (error: Error) => void): void {
    const releaseError = this.spend(); // always: the pooled buffers go back on failure too
    const reason = error ?? releaseError;
    if (reason === null) resolve();
    else reject(reason);
  }

  /** Releases everything and marks the gatherer spent; returns a release error (other than a closed pool), if any. */
  protected spend(): Error | null {
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
  protected beginFdWrite(fd: number): IoVecArray | null {
    validateInteger(fd, 'fd', 0, 2 ** 31 - 1);
    if (!isNative) {
      // Nothing changes: the gatherer keeps its message, which writeTo(socket) can still send.
      throw new IobufError(
        `Not supported in portable mode: writeToFd() and writeToFdSync() (writev(2) needs the native addon; writeTo(socket) works). Portable mode because ${portableReason}`,
        'ERR_IOBUF_UNSUPPORTED',
      );
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

  protected endFdWrite(iov: IoVecArray | null, error: Error | null, written: number): number {
    iov?.clear(); // drop its references to the views before they go back to the pool
    const releaseError = this.spend();
    if (error !== null) throw error;
    if (releaseError !== null) throw releaseError;
    return written;
  }
}
