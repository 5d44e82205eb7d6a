// Frames that are views of the read buffer (lib/frames/read-block.ts): a
// payload that arrives whole in one socket read is handed out without a copy,
// as a view of the pooled read buffer. The read buffer is then not read into
// again while such a frame is out: the next read goes to a fresh buffer, and
// the old one goes back to the pool with the last frame that is a view of it.
// Over real loopback sockets; bytes, pool counts and heldBytes checked.
// (Sent on by reference with putShared: the fan-out tests in
// frames.sharing.test.ts, whose small frames are such views.)
import { describe, expect, it } from 'vitest';
import { type BufferPool, type Frame, FrameAssembler } from '../lib/index';
import {
  KiB,
  MiB,
  closeOf,
  closeServer,
  connect,
  encodeStream,
  listen,
  makePayloads,
  prng,
  writeInPieces,
} from './fixtures/frames-helpers';
import { usePools } from './fixtures/pool-helpers';

const pools = usePools();

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(condition: () => boolean, what: string): Promise<void> {
  for (let waited = 0; !condition(); waited += 2) {
    if (waited > 10_000) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

/** Small payloads of varying sizes (5-200 B), every byte distinct by frame and position. */
function smallPayloads(count: number, seed: number): Buffer[] {
  const random = prng(seed);
  return makePayloads(count, () => 5 + Math.floor(random() * 196));
}

/** Pieces of 1-8 KiB: many separate socket reads. */
function pieceSizes(total: number, seed: number): number[] {
  const random = prng(seed);
  const sizes: number[] = [];
  for (let sum = 0; sum < total; ) {
    const size = KiB + Math.floor(random() * 7 * KiB);
    sizes.push(size);
    sum += size;
  }
  return sizes;
}

/**
 * A server whose FrameAssembler keeps every frame it gets, and a client that
 * sent `payloads` (u32be frames); resolves once every frame has arrived.
 */
async function keepFrames(pool: BufferPool, payloads: Buffer[]) {
  const frames: Frame[] = [];
  let assembler!: FrameAssembler;
  const { server, port } = await listen((socket) => {
    assembler = new FrameAssembler({ pool, onFrame: (frame) => frames.push(frame) }).attach(socket);
  });
  const client = await connect(port);
  client.on('error', () => {});
  client.write(encodeStream('u32be', payloads));
  await until(() => frames.length === payloads.length, 'every frame');
  return { frames, assembler, client, server };
}

describe('frames that are views of the read buffer', () => {
  it('are views of pooled memory: no frame buffer is acquired for a payload that arrived whole', async () => {
    const pool = pools({ maxMemory: 16 * MiB });
    const payloads = smallPayloads(40, 1);
    const { frames, client, server } = await keepFrames(pool, payloads);
    // One read buffer holds all 40 frames, and the next read goes to a second one
    // (the first is kept for the frames): two slots out, not 41.
    expect(pool.stats().inUse).toBe(2);
    const readBuffer = frames[0].data.buffer;
    for (const [i, frame] of frames.entries()) {
      expect(frame.data.equals(payloads[i])).toBe(true);
      expect(frame.data.buffer).toBe(readBuffer);
    }
    for (const frame of frames) frame.release();
    expect(pool.stats().inUse).toBe(1); // the read buffer of the next read
    client.end();
    await closeServer(server);
    await until(() => pool.stats().inUse === 0, 'the read buffer back at the end');
  });

  it('kept across hundreds of later reads, they stay byte-exact; each read buffer goes back with its last frame', async () => {
    const pool = pools({ maxMemory: 64 * MiB });
    const payloads = smallPayloads(12_000, 2); // ~1.2 MiB
    const stream = encodeStream('u32be', payloads);
    const kept: { index: number; frame: Frame }[] = [];
    let assembler!: FrameAssembler;
    let index = 0;
    const { server, port } = await listen((socket) => {
      assembler = new FrameAssembler({
        pool,
        readBufferSize: 4 * KiB,
        highWaterMark: 32 * MiB,
        onFrame(frame) {
          const i = index++;
          if (i % 50 === 0) kept.push({ index: i, frame });
          else frame.release();
        },
      }).attach(socket);
    });
    const client = await connect(port);
    await writeInPieces(client, stream, pieceSizes(stream.length, 3));
    client.end();
    await closeOf(assembler);
    expect(index).toBe(payloads.length);
    expect(assembler.stats().reads).toBeGreaterThan(100);
    // Every kept frame pins its own read buffer (they arrived ~100 KiB apart) and nothing else is out.
    const buffersOut = pool.stats().inUse;
    expect(buffersOut).toBeGreaterThan(kept.length / 2);
    expect(buffersOut).toBeLessThanOrEqual(kept.length);
    for (const { index: i, frame } of kept) expect(frame.data.equals(payloads[i])).toBe(true);
    for (const { frame } of kept) frame.release();
    expect(pool.stats().inUse).toBe(0);
    expect(assembler.stats().heldBytes).toBe(0);
    await closeServer(server);
  });

  it('a consumer that keeps every frame: read buffers kept for views stop at highWaterMark (then frames are copies), reading stops when the frames hold highWaterMark bytes, releasing restarts it', async () => {
    const pool = pools({ maxMemory: 64 * MiB });
    const payloads = smallPayloads(8000, 4); // ~800 KiB
    const stream = encodeStream('u32be', payloads);
    const kept: Frame[] = [];
    let assembler!: FrameAssembler;
    const highWaterMark = 64 * KiB;
    const readBufferSize = 4 * KiB;
    const { server, port } = await listen((socket) => {
      assembler = new FrameAssembler({ pool, readBufferSize, highWaterMark, onFrame: (frame) => kept.push(frame) }).attach(socket);
    });
    const client = await connect(port);
    client.write(stream);
    await until(() => assembler !== undefined && assembler.stats().pauses > 0, 'a pause');
    await sleep(50);
    const { bytes, heldBytes, keptReadBytes } = assembler.stats();
    expect(bytes).toBeLessThan(stream.length);
    expect(heldBytes).toBeGreaterThan(highWaterMark);
    expect(heldBytes).toBeLessThanOrEqual(highWaterMark + readBufferSize); // at most the read that crossed it
    // Views until the kept read buffers reached the mark (the read that crossed it retires one more).
    expect(keptReadBytes).toBeGreaterThanOrEqual(highWaterMark);
    expect(keptReadBytes).toBeLessThanOrEqual(highWaterMark + readBufferSize);
    await sleep(50);
    expect(assembler.stats().bytes).toBe(bytes); // reading stopped

    let released = 0;
    while (released < payloads.length) {
      await until(() => kept.length > released || assembler.closed, 'more frames');
      for (; released < kept.length; released++) {
        expect(kept[released].data.equals(payloads[released])).toBe(true);
        kept[released].release();
      }
      if (released === payloads.length) break;
    }
    client.end();
    await closeOf(assembler);
    expect(assembler.error).toBe(null);
    expect(pool.stats().inUse).toBe(0);
    expect(assembler.stats().heldBytes).toBe(0);
    await closeServer(server);
  });

  it('destroy() with frames out: the read buffer stays theirs and goes back with the last one', async () => {
    const pool = pools({ maxMemory: 16 * MiB });
    const payloads = smallPayloads(10, 5);
    const { frames, assembler, server } = await keepFrames(pool, payloads);
    assembler.destroy();
    await closeOf(assembler);
    expect(pool.stats().inUse).toBe(1);
    for (const [i, frame] of frames.entries()) {
      expect(frame.data.equals(payloads[i])).toBe(true);
      frame.release();
      expect(pool.stats().inUse).toBe(i === frames.length - 1 ? 0 : 1);
    }
    frames[0].release(); // a second release does nothing
    expect(pool.stats().inUse).toBe(0);
    expect(assembler.stats().heldBytes).toBe(0);
    await closeServer(server);
  });

  it('in a strict pool, every view is detached when the read buffer goes back (after the last frame)', async () => {
    const pool = pools({ maxMemory: 16 * MiB, strict: true });
    const payloads = smallPayloads(3, 6);
    const { frames, assembler, client, server } = await keepFrames(pool, payloads);
    const [a, b, c] = frames;
    client.destroy();
    await closeOf(assembler); // the read buffer the next read would have used is back
    a.release();
    b.release();
    expect(c.data.equals(payloads[2])).toBe(true); // still held by c
    c.release();
    expect(a.data.byteLength).toBe(0);
    expect(c.data.byteLength).toBe(0);
    expect(pool.stats().inUse).toBe(0);
    await closeServer(server);
  });

  it('pool.close({ force }) with frames out (views and copies): their data is detached, their release is harmless, heldBytes ends at 0', async () => {
    const pool = pools({ maxMemory: 16 * MiB });
    // 20 small frames (views of the read buffer) and 3 of 1 KiB (copied into buffers of their own).
    const payloads = [...smallPayloads(20, 8), ...makePayloads(3, () => KiB)];
    const { frames, assembler, server } = await keepFrames(pool, payloads);
    expect(assembler.stats().heldBytes).toBeGreaterThanOrEqual(payloads.reduce((sum, payload) => sum + payload.length, 0));
    await pool.close({ force: true });
    await closeOf(assembler);
    expect((assembler.error as { code?: string } | null)?.code).toBe('ERR_IOBUF_POOL_CLOSED');
    for (const frame of frames) expect(frame.data.length).toBe(0);
    for (const frame of frames) frame.release();
    expect(assembler.stats().heldBytes).toBe(0);
    await closeServer(server);
  });
});
