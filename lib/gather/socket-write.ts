// Writing a Gatherer to a socket: the per-socket SocketWatch (one set of
// listeners shared by every pending writeTo, and their order), and the direct
// path (a TCP or pipe net.Socket with nothing queued gets the message with one
// writev(2) on its descriptor during the call).
import net from 'node:net';
import type { Writable } from 'node:stream';
import { isNative } from '../binding';
import { IoVecArray } from '../iovec/array';

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
export class SocketWatch {
  /** The first 'error' the socket emitted while watched. */
  error: Error | null = null;
  /** 'close' was emitted: libuv has finished or cancelled every write on it. */
  closed = false;
  private readonly onClose = new Set<() => void>();
  private readonly waiting: Array<() => void> = [];
  private readonly errorListener = (error: Error) => {
    this.error ??= error;
  };
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
export function failureOf(error: Error | null | undefined): Error | null {
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

export type NodeSocket = net.Socket & {
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
export function directDescriptor(socket: Writable): number {
  if (!isNative) return -1; // portable mode has no writev: every message goes through the stream
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
export function directWritten(socket: NodeSocket, bytes: number): void {
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

export function directIoVec(entries: number): IoVecArray {
  if (directIov === null || directIov.capacity < entries) {
    directIov?.close();
    directIov = new IoVecArray(Math.max(64, 2 ** Math.ceil(Math.log2(entries))));
  }
  return directIov;
}
