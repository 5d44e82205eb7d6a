// A length-prefixed request/response server on iobuf: requests are assembled
// straight into pooled buffers (FrameAssembler), the responses of one read
// leave in one vectored write (SocketWriter), and the memory goes back to one
// pool. The protocol is in rpc-protocol.ts; rpc-server-plain.ts is the same
// server in plain Node, for comparison (bench/frames.mjs drives both).
//
//   npx tsx examples/rpc-server.ts [--port 7070] [--host 127.0.0.1]
//
// Ownership, request by request: the assembler hands each request frame to
// onFrame; an echo response refers to the request's bytes (no copy), so the
// frame is released only once the write that carries them has completed
// (writer.releaseAfterWrite). Frames held that way count against the
// assembler's highWaterMark: a client that sends but does not read its
// responses is stopped from sending. Responses that hold no frame (BYTES)
// are bounded by the writer's needDrain: reading stops until 'drain'.
import net from 'node:net';
import path from 'node:path';
import { BufferPool, FrameAssembler, SocketWriter } from '../lib/index';
import { BYTES, ECHO, HEAD, MAX_BYTES, MAX_REQUEST, listenAddress, patternBytes } from './rpc-protocol';

export interface RpcServer {
  port: number;
  pool: BufferPool;
  close(): Promise<void>;
}

/**
 * Echo bodies up to this size are copied into the writer's scratch: a batch
 * of small responses then leaves as a few large iovec entries, which the
 * kernel walks faster than one entry per response (measured here: 4 KiB
 * beats 512 B at 1 KiB echo); larger bodies go by reference.
 */
const COPY_BELOW = 4096;

function serveConnection(socket: net.Socket, pool: BufferPool): void {
  socket.setNoDelay(true);
  // The responses to the requests of one read go out together, in one write.
  const writer = new SocketWriter(socket, { pool, chunkSize: 64 * 1024 });
  let pausedForWriter = false;
  writer.on('drain', () => {
    if (!pausedForWriter) return;
    pausedForWriter = false;
    socket.resume();
  });

  const assembler = new FrameAssembler({
    pool,
    maxFrameSize: MAX_REQUEST,
    onFrame(frame) {
      const request = frame.data;
      if (request.length < HEAD || writer.closed) {
        frame.release();
        socket.destroy();
        return;
      }
      const op = request[0];
      const id = request.readUInt32BE(1);
      const out = writer.batch();
      if (op === ECHO) {
        const length = request.length - HEAD;
        out
          .putU32BE(HEAD + length)
          .putU8(op)
          .putU32BE(id); // the response frame's prefix and head
        if (length <= COPY_BELOW) {
          out.putSlice(request.subarray(HEAD)); // small: a copy beats an iovec entry
          frame.release();
        } else {
          out.putBytes(request.subarray(HEAD));
          writer.releaseAfterWrite(frame);
        }
      } else if (op === BYTES && request.length === HEAD + 4 && request.readUInt32BE(HEAD) <= MAX_BYTES) {
        const length = request.readUInt32BE(HEAD);
        frame.release();
        out
          .putU32BE(HEAD + length)
          .putU8(op)
          .putU32BE(id)
          .putBytes(patternBytes(length));
      } else {
        frame.release();
        socket.destroy();
        return;
      }
      // A client that asks for more than it reads: stop reading its requests until the writer drains.
      if (!pausedForWriter && writer.needDrain) {
        pausedForWriter = true;
        socket.pause();
      }
    },
    onError(error) {
      // A client going away mid-request is normal; a malformed stream is worth a line.
      if ((error as { code?: string }).code?.startsWith('ERR_IOBUF_FRAME')) console.error(`rpc-server: ${error.message}`);
    },
  });
  assembler.attach(socket);
}

/** Starts the server; `port` 0 picks a free one. */
export async function startServer(port = 0, host = '127.0.0.1'): Promise<RpcServer> {
  const pool = new BufferPool({ maxMemory: 256 * 1024 * 1024 });
  // pauseOnConnect: nothing is read before the assembler takes the socket over.
  const server = net.createServer({ pauseOnConnect: true }, (socket) => serveConnection(socket, pool));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    pool,
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await pool.close({ force: true });
    },
  };
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === __filename) {
  const { port, host } = listenAddress(process.argv);
  void startServer(port, host).then((server) => {
    console.log(`rpc-server (iobuf) listening on ${host}:${server.port}`);
    process.once('SIGTERM', () => void server.close().then(() => process.exit(0)));
  });
}
