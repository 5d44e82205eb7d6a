// FrameAssembler backpressure and teardown on real loopback sockets: a slow
// consumer reading 256 MiB from a fast sender in another process keeps the
// process's memory within the pool budget plus a fixed margin; a pool too
// small for the frames in flight makes the assembler wait, not fail; a peer
// that resets mid-frame leaves nothing behind.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { BufferPool, FrameAssembler } from '../lib/index';
import type { Frame } from '../lib/index';
import { sanitized } from './helpers/memory-proc';
import { KiB, MiB, closeOf, closeServer, connect, encodeLength, listen } from './fixtures/frames-helpers';

const SENDER = path.join(__dirname, 'fixtures', 'frames-sender.js');
const pools: BufferPool[] = [];
function makePool(maxMemory: number): BufferPool {
  const pool = new BufferPool({ maxMemory, leakDetection: 'off' });
  pools.push(pool);
  return pool;
}
afterEach(async () => {
  for (const pool of pools.splice(0)) await pool.close({ force: true });
});

/** The payload frames-sender.js sends as frame `index`. */
function expectedPayload(frameSize: number, index: number): Buffer {
  const payload = Buffer.alloc(frameSize);
  for (let j = 0; j < frameSize; j++) payload[j] = (j * 7 + 3) & 0xff;
  payload.writeUInt32BE(index, 0);
  return payload;
}

/** Starts frames-sender.js against a server whose accepted socket goes to `onSocket`. */
async function fromSender(frameSize: number, total: number, onSocket: (socket: import('node:net').Socket) => void) {
  let connected!: () => void;
  const connection = new Promise<void>((resolve) => {
    connected = resolve;
  });
  const { server, port } = await listen((socket) => {
    onSocket(socket);
    connected();
  });
  const child = spawn(process.execPath, [SENDER, String(port), String(frameSize), String(total)], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  await connection;
  return { server, exited };
}

describe('FrameAssembler backpressure', () => {
  it('a slow consumer reading 256 MiB from a fast sender: memory stays under the budget plus a fixed margin, every byte arrives', async () => {
    const frameSize = 64 * KiB;
    const total = 256 * MiB;
    const budget = 16 * MiB;
    const highWaterMark = 2 * MiB;
    const pool = makePool(budget);
    const template = expectedPayload(frameSize, 0);
    global.gc?.();
    const rssBefore = process.memoryUsage().rss;
    let rssPeak = rssBefore;
    let assembler!: FrameAssembler;
    let received = 0;
    let bad = 0;
    let maxHeld = 0;
    let consumed!: Promise<void>;
    const started = performance.now();
    const { server, exited } = await fromSender(frameSize, total, (socket) => {
      assembler = new FrameAssembler({ pool, highWaterMark }).attach(socket);
      consumed = (async () => {
        // Slow: hold 16 frames (1 MiB) and release them only after a timer: 4 ms, so at
        // most ~250 MiB/s, slower than any sender on loopback; 16 ms under AddressSanitizer,
        // where the sender (sanitized too) managed ~80 MiB/s against a 4 ms pace and reading
        // paused only 6 times. (A consumer that waits for more frames while holding more
        // than highWaterMark waits forever.)
        let batch: Frame[] = [];
        for await (const frame of assembler) {
          if (frame.data.readUInt32BE(0) !== received || frame.data.compare(template, 4, frameSize, 4, frameSize) !== 0) bad++;
          received++;
          batch.push(frame);
          if (batch.length === 16) {
            maxHeld = Math.max(maxHeld, assembler.stats().heldBytes);
            await sleep(sanitized ? 16 : 4);
            for (const held of batch) held.release();
            batch = [];
            if ((received & 1023) === 0) rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
          }
        }
        for (const held of batch) held.release();
      })();
    });
    await consumed;
    await closeOf(assembler);
    expect(await exited).toBe(0);
    await closeServer(server);
    const seconds = (performance.now() - started) / 1000;
    const growth = rssPeak - rssBefore;
    console.log(
      `256 MiB slow consumer: ${seconds.toFixed(1)} s, RSS growth ${(growth / MiB).toFixed(1)} MiB (budget ${budget / MiB} MiB), held at most ${(maxHeld / MiB).toFixed(1)} MiB, ${assembler.stats().pauses} pauses, pool high water ${(pool.stats().highWaterBytes / MiB).toFixed(1)} MiB`,
    );

    expect(received).toBe(total / frameSize);
    expect(bad).toBe(0);
    expect(assembler.error).toBe(null);
    expect(assembler.stats().bytes).toBe(total + 4 * received);
    // Reading really stopped, repeatedly: the sender was held back by the kernel's
    // window.
    expect(assembler.stats().pauses).toBeGreaterThan(10);
    // Held frames: the consumer's batch plus at most one read buffer's worth of frames.
    expect(maxHeld).toBeLessThanOrEqual(highWaterMark + 2 * frameSize);
    expect(pool.stats().highWaterBytes).toBeLessThanOrEqual(budget);
    // Measured here: 10-25 MiB of growth (pool budget and V8's young generation); an
    // unbounded receiver would grow towards the 256 MiB sent. (Not under ASan: its
    // allocator keeps freed heap memory in quarantine, so RSS says nothing there.)
    if (!sanitized) expect(growth).toBeLessThan(budget + 48 * MiB);
    expect(pool.stats().inUse).toBe(0);
  });

  it('waits for the pool when its budget is spent (reading paused), then carries on: all frames arrive', async () => {
    // 1 MiB budget: three 192 KiB frames (in 256 KiB slots) and the 16 KiB read buffers'
    // slab fill it, so while the consumer holds three, the fourth waits for memory.
    // (An odd frame size puts headers mid-read, so bytes wait in the read buffer too.)
    const frameSize = 192 * KiB + 100;
    const pool = makePool(1 * MiB);
    let assembler!: FrameAssembler;
    let received = 0;
    let bad = 0;
    let consumed!: Promise<void>;
    const total = 40 * frameSize;
    const { server, exited } = await fromSender(frameSize, total, (socket) => {
      assembler = new FrameAssembler({ pool, readBufferSize: 16 * KiB, highWaterMark: 16 * MiB }).attach(socket);
      consumed = (async () => {
        const held: Frame[] = [];
        for await (const frame of assembler) {
          if (!frame.data.equals(expectedPayload(frameSize, received))) bad++;
          received++;
          held.push(frame);
          if (held.length === 3) {
            // The assembler waits in the pool's queue for the next frame's memory.
            for (let i = 0; i < 2000 && pool.stats().waiters === 0; i++) await sleep(1);
            expect(pool.stats().waiters).toBe(1);
            for (const buffer of held.splice(0)) buffer.release();
          }
        }
        for (const buffer of held) buffer.release();
      })();
    });
    await consumed;
    await closeOf(assembler);
    expect(await exited).toBe(0);
    await closeServer(server);
    expect(received).toBe(40);
    expect(bad).toBe(0);
    expect(assembler.error).toBe(null);
    expect(assembler.stats().pauses).toBeGreaterThan(5);
    expect(pool.stats().waits).toBeGreaterThan(5);
    expect(pool.stats().inUse).toBe(0);
  });
});

describe('FrameAssembler teardown', () => {
  it('a peer that resets mid-frame: ECONNRESET (or a truncated frame) reported, the partial frame and the read buffer back in the pool', async () => {
    const pool = makePool(16 * MiB);
    let assembler!: FrameAssembler;
    let closed!: Promise<void>;
    const frames: number[] = [];
    const { server, port } = await listen((socket) => {
      assembler = new FrameAssembler({
        pool,
        onFrame: (frame) => {
          frames.push(frame.length);
          frame.release();
        },
      }).attach(socket);
      closed = closeOf(assembler);
    });
    const client = await connect(port);
    client.on('error', () => {});
    client.write(Buffer.concat([encodeLength('u32be', 3), Buffer.from('abc'), encodeLength('u32be', 1 * MiB), Buffer.alloc(300 * KiB, 9)]));
    // Let the server read the first frame and part of the second, then reset.
    while (assembler === undefined || assembler.stats().bytes < 100 * KiB) await sleep(1);
    expect(pool.stats().inUse).toBe(2); // the read buffer and the 1 MiB frame being assembled
    client.resetAndDestroy();
    await closed;
    await closeServer(server);
    expect(frames).toEqual([3]);
    // Linux reports an RST to the next read as ECONNRESET, or as EOF when it arrived
    // while unread data was queued: mid-frame, that EOF is a truncated frame.
    expect(['ECONNRESET', 'ERR_IOBUF_FRAME_TRUNCATED']).toContain((assembler.error as { code?: string }).code);
    expect(pool.stats().inUse).toBe(0);
  });

  it('destroy() mid-frame ends the connection and gives back everything the assembler owned', async () => {
    const pool = makePool(16 * MiB);
    let assembler!: FrameAssembler;
    const { server, port } = await listen((socket) => {
      assembler = new FrameAssembler({ pool }).attach(socket);
    });
    const client = await connect(port);
    client.on('error', () => {});
    client.write(
      Buffer.concat([
        encodeLength('u32be', 10),
        Buffer.alloc(10),
        encodeLength('u32be', 10),
        Buffer.alloc(10),
        encodeLength('u32be', 500 * KiB),
        Buffer.alloc(1000),
      ]),
    );
    while (assembler === undefined || assembler.stats().frames < 2 || assembler.stats().bytes < 1028) await sleep(1);
    expect(pool.stats().inUse).toBe(2); // the read buffer (the two queued frames are views of it), the frame being assembled
    assembler.destroy();
    expect(pool.stats().inUse).toBe(0);
    await closeOf(client);
    await closeServer(server);
    expect(assembler.error).toBe(null);
  });
});
