// Taking over an accepted socket's reads: the one place iobuf relies on
// Node's internals, kept apart because it may change with any Node release.
//
// net.connect() and new net.Socket() take an `onread` option: libuv reads
// into a Buffer the caller supplies (`buffer()`, asked again after every read)
// and `callback(nread, buffer)` gets each read instead of a 'data' event.
// net.createServer() has no such option (Node 20 to 26), so for an accepted
// socket we set what the option would have set: three own properties of every
// net.Socket, keyed by symbols whose descriptions are 'kBuffer', 'kBufferCb'
// and 'kBufferGen' (lib/net.js, lib/internal/stream_base_commons.js), and the
// handle's useUserBuffer(buffer) for the first read.
//
// Contract: takeOverReads() returns true when from now on every read of the
// socket goes into our buffers and to our callback; false when it changed
// nothing — the runtime does not have those fields (Bun; a Node release that
// renamed them), the handle is not a TCP or pipe handle, or the socket reads
// through an `onread` of its own already. The caller then reads through
// 'data' events: the same bytes in the same order, one copy more.
import net from 'node:net';

/** What net's `onread` option holds. */
export interface OnreadTarget {
  /** Where the next read lands; undefined when no read should come (the reader has closed). */
  buffer: () => Uint8Array | undefined;
  /** Each read: `nread` bytes at the start of the last buffer given. Returning false stops reading. */
  callback: (nread: number, buffer: Uint8Array) => boolean;
}

/** Node's own symbols for the per-socket fields that the `onread` option sets. */
interface OnreadFields {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

interface ReadHandle {
  useUserBuffer?: (buffer: Uint8Array) => void;
  constructor: { name: string };
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

/** Whether `socket` was made with `onread: { callback }` (e.g. from FrameAssembler.socketOptions()). */
export function readsThrough(socket: net.Socket, callback: OnreadTarget['callback']): boolean {
  if (!(socket instanceof net.Socket)) return false;
  const fields = onreadFields(socket);
  return fields !== null && (socket as unknown as Record<symbol, unknown>)[fields.callback] === callback;
}

/**
 * Makes a TCP or pipe socket that reads through 'data' (an accepted one) read
 * through `target` instead, as if it had been made with `onread: target`.
 * Bytes Node has read already (socket.readableLength) go to `takeBuffered`
 * first, in order. True when it took over; false when nothing was changed
 * (see the contract above), except for bytes taken out and handed to
 * `takeBuffered` before `target.buffer()` returned undefined.
 * The socket's flowing state is the caller's: resume() it to start reading.
 */
export function takeOverReads(socket: net.Socket, target: OnreadTarget, takeBuffered: (chunk: Buffer) => void): boolean {
  if (!(socket instanceof net.Socket)) return false;
  const fields = onreadFields(socket);
  if (fields === null) return false;
  const record = socket as unknown as Record<symbol, unknown>;
  const handle = (socket as unknown as { _handle?: ReadHandle | null })._handle;
  if (handle === undefined || handle === null || typeof handle.useUserBuffer !== 'function') return false;
  if (handle.constructor.name !== 'TCP' && handle.constructor.name !== 'Pipe') return false;
  if (record[fields.buffer] !== null || record[fields.callback] !== null) return false;
  while (socket.readableLength > 0) {
    const chunk = socket.read() as Buffer | null;
    if (chunk === null) break;
    takeBuffered(chunk);
  }
  const first = target.buffer();
  if (first === undefined) return false;
  // `true` (not a Buffer) in kBuffer tells net.js to ask kBufferGen for each read's buffer.
  record[fields.buffer] = true;
  record[fields.generator] = target.buffer;
  record[fields.callback] = target.callback;
  handle.useUserBuffer(first);
  return true;
}
