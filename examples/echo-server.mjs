// The README's example: a length-prefixed echo server in 15 lines.
//   node examples/echo-server.mjs      (after `npm install`; listens on 127.0.0.1:7070)
import net from 'node:net';
import { BufferPool, FrameAssembler, SocketWriter, encodeFrame } from 'iobuf';

const pool = new BufferPool({ maxMemory: 256 << 20 }); // one byte budget for the process
async function serve(socket) {
  const frames = new FrameAssembler({ pool }).attach(socket); // the kernel reads into pooled memory
  const writer = new SocketWriter(socket, { pool }); // a tick's replies leave in one writev
  for await (const frame of frames) {
    // each frame is yours until release()
    encodeFrame(writer.batch(), frame.data); // 4-byte length + payload by reference
    writer.releaseAfterWrite(frame); // back to the pool once the kernel has it
  }
  await writer.end(); // ends the socket after the last reply
}
net.createServer((socket) => serve(socket).catch(() => socket.destroy())).listen(7070, '127.0.0.1');
