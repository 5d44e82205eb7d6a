// The same server as rpc-server.ts in plain Node, for comparison: 'data'
// events, Buffer.concat for frames that span reads, a Buffer per response.
// The writes of one 'data' event are corked into one; a client that does not
// read its responses is not read from until the socket drains.
//
//   npx tsx examples/rpc-server-plain.ts [--port 7071] [--host 127.0.0.1]
import net from 'node:net';
import path from 'node:path';
import { BYTES, ECHO, HEAD, MAX_BYTES, MAX_REQUEST, listenAddress, patternBytes } from './rpc-protocol';

/** Responses queued (bytes) at which the server stops reading a client's requests until the socket drains. */
const PAUSE_AT = 1024 * 1024;

export interface PlainRpcServer {
  port: number;
  close(): Promise<void>;
}

function serveConnection(socket: net.Socket): void {
  socket.setNoDelay(true);
  let pending: Buffer | null = null;
  let pausedForWrites = false;

  socket.on('data', (chunk: Buffer) => {
    const data = pending === null ? chunk : Buffer.concat([pending, chunk]);
    pending = null;
    socket.cork();
    let at = 0;
    while (data.length - at >= 4) {
      const length = data.readUInt32BE(at);
      if (length > MAX_REQUEST || length < HEAD) {
        socket.destroy();
        return;
      }
      if (data.length - at - 4 < length) break;
      const request = data.subarray(at + 4, at + 4 + length);
      at += 4 + length;
      const op = request[0];
      let body: Buffer;
      if (op === ECHO) body = request.subarray(HEAD);
      else if (op === BYTES && length === HEAD + 4 && request.readUInt32BE(HEAD) <= MAX_BYTES)
        body = patternBytes(request.readUInt32BE(HEAD));
      else {
        socket.destroy();
        return;
      }
      const head = Buffer.allocUnsafe(4 + HEAD);
      head.writeUInt32BE(HEAD + body.length, 0);
      head[4] = op;
      head.writeUInt32BE(request.readUInt32BE(1), 5);
      socket.write(Buffer.concat([head, body]));
    }
    process.nextTick(() => socket.uncork());
    if (at < data.length) pending = data.subarray(at);
    // The same bound as the iobuf server's writer (its highWaterMark).
    if (!pausedForWrites && socket.writableLength >= PAUSE_AT) {
      pausedForWrites = true;
      socket.pause();
    }
  });
  socket.on('drain', () => {
    if (!pausedForWrites) return;
    pausedForWrites = false;
    socket.resume();
  });
  socket.on('error', () => {});
}

export async function startServer(port = 0, host = '127.0.0.1'): Promise<PlainRpcServer> {
  const server = net.createServer((socket) => serveConnection(socket));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === __filename) {
  const { port, host } = listenAddress(process.argv.includes('--port') ? process.argv : [...process.argv, '--port', '7071']);
  void startServer(port, host).then((server) => {
    console.log(`rpc-server-plain listening on ${host}:${server.port}`);
    process.once('SIGTERM', () => void server.close().then(() => process.exit(0)));
  });
}
