// The README's example: a length-prefixed echo server in 15 lines.
//   node examples/echo-server.mjs      (after `npm install`; listens on 127.0.0.1:7070)
import net from 'node:net';
import { BufferPool, FrameAssembler, Gatherer, encodeFrame } from 'iobuf';

const pool = new BufferPool({ maxMemory: 256 << 20 });     // one byte budget for the process
async function serve(socket) {
  const frames = new FrameAssembler({ pool }).attach(socket); // the kernel reads into pooled memory
  for await (const frame of frames) {                       // each frame is yours until release()
    const reply = encodeFrame(new Gatherer({ pool }), frame.data); // 4-byte length + payload by reference
    await reply.writeTo(socket);                            // one writev; scratch goes back after it
    frame.release();
  }
}
net.createServer((socket) => serve(socket).catch(() => socket.destroy())).listen(7070, '127.0.0.1');
