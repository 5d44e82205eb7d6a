// The iovec part's vectored calls over an IoVecArray: readv/writev/preadv/
// pwritev and the All variants, each sync (on this thread) and as a promise
// (on the libuv thread pool). Arguments are validated here; the array checks
// its views and lends itself (lib/iovec/array.ts).
import { native } from '../binding';
import { validateInstance, validateInteger } from '../errors';
import { IoVecArray, kTransferAsync, kTransferSync } from './array';
import { Op } from './entries';

/** The most entries one readv/writev syscall takes (IOV_MAX, 1024 on Linux). */
export const IOV_MAX: number = native.iovMax;

const MAX_POSITION = Number.MAX_SAFE_INTEGER;

// ---------------------------------------------------------------------------
// Vectored I/O. Sync calls run on this thread; promise calls on the libuv
// thread pool (the event loop never blocks). Each returns bytes transferred.
// ---------------------------------------------------------------------------

function checkArguments(fd: unknown, iov: unknown): void {
  validateInteger(fd, 'fd', 0, 2 ** 31 - 1);
  validateInstance(iov, IoVecArray, 'iov', 'an IoVecArray');
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
