// Frames and pooled buffers shared by reference: a Frame is never recycled
// (a second release() is a no-op on that frame and touches no other),
// retain() makes another handle over the same memory, which goes back to the
// pool when every handle has been released; pool.share() does the same for
// any pooled Buffer; Gatherer.putShared() takes a handle over and releases it
// after the write. Over real sockets, with pool.stats().inUse checked after
// every path, errors included.
import { once } from 'node:events';
import type net from 'node:net';
import { describe, expect, it } from 'vitest';
import { Frame, FrameAssembler, Gatherer, SharedBuffer } from '../lib/index';
import { expectCode, thrown, usePools } from './fixtures/pool-helpers';
import { KiB, MiB, closeOf, closeServer, connect, encodeStream, listen, makePayloads } from './fixtures/frames-helpers';

const pools = usePools();
const makePool = (options: { strict?: boolean } = {}) => pools({ maxMemory: 64 * MiB, ...options });

/** Reads everything a socket receives until it ends. */
function collect(socket: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  return new Promise((resolve) => socket.on('end', () => resolve(Buffer.concat(chunks))));
}

describe('a Frame is released once, and never releases another', () => {
  it('`using` plus an early release(), with later frames queued in the same memory: the consumer sees A, B, C', async () => {
    const pool = makePool();
    const assembler = new FrameAssembler({ pool });
    const chunks = [0x41, 0x42, 0x43].map((byte) => encodeStream('u32be', [Buffer.alloc(100, byte)]));
    assembler.push(chunks[0]);
    let fed = 1;
    // Declared before `frame`, so disposed after it: the next chunk arrives once the frame's scope has ended.
    const feeder = { [Symbol.dispose]: () => (fed < 3 ? assembler.push(chunks[fed++]) : assembler.end()) };
    const seen: string[] = [];
    for await (const next of assembler) {
      using _feed = feeder;
      using frame = next;
      seen.push(String.fromCharCode(frame.data[0], frame.data[99]));
      frame.release(); // early; `using` releases again at the end of the block
      if (fed === 1) assembler.push(chunks[fed++]); // B arrives while A is still in scope
    }
    expect(seen).toEqual(['AA', 'BB', 'CC']);
    expect(pool.stats().inUse).toBe(0);
    expect(assembler.stats().heldBytes).toBe(0);
  });

  it('a second release() of an onFrame frame after the memory went to the next frame leaves that frame alone', () => {
    const pool = makePool();
    const frames: Frame[] = [];
    const assembler = new FrameAssembler({ pool, onFrame: (frame) => frames.push(frame) });
    assembler.push(encodeStream('u32be', [Buffer.alloc(64, 1)]));
    frames[0].release();
    assembler.push(encodeStream('u32be', [Buffer.alloc(64, 2)]));
    expect(frames[1]).not.toBe(frames[0]);
    frames[0].release();
    frames[0].release();
    expect(frames[0].released).toBe(true);
    expect(frames[1].released).toBe(false);
    expect(pool.stats().inUse).toBe(1);
    assembler.push(encodeStream('u32be', [Buffer.alloc(64, 3)]));
    expect(frames[1].data.every((byte) => byte === 2)).toBe(true);
    frames[1].release();
    frames[2].release();
    expect(pool.stats().inUse).toBe(0);
    expect(assembler.stats().heldBytes).toBe(0);
  });
});

describe('retain()', () => {
  it('returns a new handle over the same data and tag; the memory goes back when every handle is released, in any order', () => {
    const pool = makePool();
    const frames: Frame[] = [];
    const assembler = new FrameAssembler({ pool, onFrame: (frame) => frames.push(frame) });
    assembler.push(encodeStream('u32be', [Buffer.from('hello')]));
    const [frame] = frames;
    const second = frame.retain();
    const third = second.retain();
    expect(second).toBeInstanceOf(Frame);
    expect(second).not.toBe(frame);
    expect(second.data).toBe(frame.data);
    expect([second.tag, third.tag, third.length]).toEqual([0, 0, 5]);
    expect(pool.stats().inUse).toBe(1);
    frame.release();
    frame.release(); // per handle: once
    third.release();
    expect(pool.stats().inUse).toBe(1);
    expect(assembler.stats().heldBytes).toBe(5);
    expect(second.data.toString()).toBe('hello');
    {
      using last = second;
      expect(last.released).toBe(false);
    }
    expect(second.released).toBe(true);
    expect(pool.stats().inUse).toBe(0);
    expect(assembler.stats().heldBytes).toBe(0);
  });

  it('of a released handle: ERR_IOBUF_RELEASED, nothing counted', () => {
    const pool = makePool();
    const frames: Frame[] = [];
    const assembler = new FrameAssembler({ pool, onFrame: (frame) => frames.push(frame) });
    assembler.push(encodeStream('u32be', [Buffer.from('x'), Buffer.alloc(0)]));
    const kept = frames[0].retain();
    frames[0].release();
    expectCode(
      thrown(() => frames[0].retain()),
      'IobufError',
      'ERR_IOBUF_RELEASED',
    );
    kept.release();
    expect(pool.stats().inUse).toBe(0);
    // A zero-length frame has no pooled memory: retain and release work all the same.
    const empty = frames[1].retain();
    expect([empty.length, empty.tag]).toEqual([0, 0]);
    frames[1].release();
    empty.release();
    expectCode(
      thrown(() => empty.retain()),
      'IobufError',
      'ERR_IOBUF_RELEASED',
    );
  });

  it('in a strict pool the memory is detached only when the last handle is released', () => {
    const pool = makePool({ strict: true });
    const frames: Frame[] = [];
    const assembler = new FrameAssembler({ pool, onFrame: (frame) => frames.push(frame) });
    assembler.push(encodeStream('u32be', [Buffer.alloc(3000, 9)]));
    const kept = frames[0].retain();
    frames[0].release();
    expect(kept.data.length).toBe(3000);
    expect(kept.data[2999]).toBe(9);
    kept.release();
    expect(kept.data.length).toBe(0);
    expect(pool.stats().inUse).toBe(0);
  });
});

describe('pool.share()', () => {
  it('makes a SharedBuffer of a pooled Buffer: retain/release count handles, the last release gives it back', () => {
    const pool = makePool();
    const buffer = pool.tryAcquire(5000)!;
    const shared = pool.share(buffer);
    expect(shared).toBeInstanceOf(SharedBuffer);
    expect(shared.data).toBe(buffer);
    expect(shared.length).toBe(5000);
    const other = shared.retain();
    expect(other).toBeInstanceOf(SharedBuffer);
    shared.release();
    expect(pool.stats().inUse).toBe(1);
    other.release();
    other.release();
    expect(pool.stats().inUse).toBe(0);
    // The buffer went back once: releasing it by hand now is the pool's double release.
    expectCode(
      thrown(() => pool.release(buffer)),
      'IobufError',
      'ERR_IOBUF_DOUBLE_RELEASE',
    );
  });

  it('refuses what is not a Buffer this pool has out', () => {
    const pool = makePool();
    const other = makePool();
    const foreign = other.tryAcquire(100)!;
    expectCode(
      thrown(() => pool.share(foreign)),
      'IobufError',
      'ERR_IOBUF_FOREIGN_BUFFER',
    );
    expectCode(
      thrown(() => pool.share(Buffer.alloc(10))),
      'IobufError',
      'ERR_IOBUF_FOREIGN_BUFFER',
    );
    const mine = pool.tryAcquire(100)!;
    expectCode(
      thrown(() => pool.share(mine.subarray(1))),
      'IobufError',
      'ERR_IOBUF_FOREIGN_BUFFER',
    );
    expectCode(
      thrown(() => pool.share(null as unknown as Buffer)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    pool.release(mine);
    expectCode(
      thrown(() => pool.share(mine)),
      'IobufError',
      'ERR_IOBUF_FOREIGN_BUFFER',
    );
    other.release(foreign);
    expect(pool.stats().inUse).toBe(0);
  });
});

describe('Gatherer.putShared()', () => {
  it("puts the data by reference and takes the handle over: the caller's handle is spent, the gatherer releases after the write", async () => {
    const pool = makePool();
    const { server, port } = await listen((socket) => socket.resume());
    const client = await connect(port);
    const shared = pool.share(pool.tryAcquire(70_000)!.fill(5));
    const gatherer = new Gatherer({ pool });
    gatherer.putU32BE(7).putShared(shared);
    expect(gatherer.segments()[1]).toBe(shared.data);
    expect(shared.released).toBe(true);
    shared.release(); // spent: a no-op, the gatherer still holds the memory
    expectCode(
      thrown(() => shared.retain()),
      'IobufError',
      'ERR_IOBUF_RELEASED',
    );
    expect(pool.stats().inUse).toBe(2); // the data and a scratch chunk
    await gatherer.writeTo(client);
    expect(pool.stats().inUse).toBe(0);
    client.end();
    await closeServer(server);
  });

  it('released on reset(), when compact() copied it, and on a failed write', async () => {
    const pool = makePool();
    const gatherer = new Gatherer({ pool });
    gatherer.putShared(pool.share(pool.tryAcquire(100)!));
    gatherer.reset();
    expect(pool.stats().inUse).toBe(0);

    const small = pool.share(pool.tryAcquire(10)!.fill(1));
    gatherer.putU8(9).putShared(small).putU8(9);
    gatherer.compact(64);
    expect(pool.stats().inUse).toBe(1); // only the scratch chunk
    expect(Buffer.concat(gatherer.segments())).toEqual(Buffer.from([9, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 9]));
    gatherer.reset();

    const { server, port } = await listen((socket) => socket.destroy());
    const client = await connect(port);
    client.on('error', () => {});
    await once(client, 'close');
    gatherer.putShared(pool.share(pool.tryAcquire(5000)!));
    await expect(gatherer.writeTo(client)).rejects.toThrow();
    expect(pool.stats().inUse).toBe(0);
    await closeServer(server);
  });

  it('the same data through two handles in one gatherer, one copied by compact(): still held until the write', () => {
    const pool = makePool();
    const first = pool.share(pool.tryAcquire(10)!.fill(4));
    const second = first.retain();
    const gatherer = new Gatherer({ pool });
    gatherer.putU8(1).putShared(first).putBytes(Buffer.alloc(200, 0)).putShared(second);
    gatherer.compact(64); // copies [1, first] (a run of two small segments), not the lone `second`
    expect(pool.stats().inUse).toBe(2);
    const bytes = Buffer.concat(gatherer.segments());
    expect(bytes.subarray(211)).toEqual(Buffer.alloc(10, 4));
    gatherer.reset();
    expect(pool.stats().inUse).toBe(0);
  });

  it('refuses a non-handle (ERR_INVALID_ARG_TYPE) and a released handle (ERR_IOBUF_RELEASED); the caller keeps it', () => {
    const pool = makePool();
    const gatherer = new Gatherer({ pool });
    const plain = pool.tryAcquire(10)!;
    expectCode(
      thrown(() => gatherer.putShared(plain as unknown as SharedBuffer)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    expectCode(
      thrown(() => gatherer.putShared(null as unknown as SharedBuffer)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    pool.release(plain);
    const shared = pool.share(pool.tryAcquire(10)!);
    const kept = shared.retain();
    shared.release();
    expectCode(
      thrown(() => gatherer.putShared(shared)),
      'IobufError',
      'ERR_IOBUF_RELEASED',
    );
    expect(kept.released).toBe(false);
    kept.release();
    gatherer.reset();
    expect(pool.stats().inUse).toBe(0);
  });
});

describe('Gatherer.putShared(handle, offset, length): a range of the data', () => {
  it('sends just the range, by reference; the whole handle is taken over and released after the write', async () => {
    const pool = makePool();
    const received: Buffer[] = [];
    const { server, port } = await listen((socket) => {
      socket.on('data', (chunk: Buffer) => received.push(chunk)).resume();
    });
    const client = await connect(port);
    const bytes = pool.tryAcquire(70_000)!;
    for (let i = 0; i < bytes.length; i++) bytes[i] = i % 251;
    const shared = pool.share(bytes);
    const gatherer = new Gatherer({ pool });
    gatherer.putU8(0xee).putShared(shared, 1000, 60_000).putU8(0xff);
    expect(shared.released).toBe(true);
    expect(gatherer.byteLength).toBe(60_002);
    const segments = gatherer.segments();
    expect(segments[1].buffer).toBe(bytes.buffer); // the pooled memory itself, not a copy
    expect(segments[1]).toEqual(bytes.subarray(1000, 61_000));
    await gatherer.writeTo(client);
    expect(pool.stats().inUse).toBe(0);
    client.end();
    await closeOf(client);
    await closeServer(server);
    expect(Buffer.concat(received)).toEqual(
      Buffer.concat([Buffer.from([0xee]), Buffer.from(Array.from({ length: 60_000 }, (_, i) => (i + 1000) % 251)), Buffer.from([0xff])]),
    );
  });

  it('the offset alone puts the rest of the data (a payload after a header)', () => {
    const pool = makePool();
    const data = pool.tryAcquire(10)!;
    data.set([1, 2, 3, 4, 7, 7, 7, 7, 7, 7]);
    const shared = pool.share(data);
    const gatherer = new Gatherer({ pool });
    gatherer.putShared(shared, 4);
    expect(Buffer.concat(gatherer.segments())).toEqual(Buffer.alloc(6, 7));
    gatherer.reset();
    expect(pool.stats().inUse).toBe(0);
  });

  it('ranges of one block in one batch, back to back and apart, one copied by compact(): each handle released once, the block after the last', async () => {
    const pool = makePool();
    const block = pool.share(pool.tryAcquire(4096)!);
    for (let i = 0; i < 4096; i++) block.data[i] = i & 0xff;
    const gatherer = new Gatherer({ pool });
    gatherer.putShared(block.retain(), 0, 100).putShared(block.retain(), 100, 50).putU8(1).putShared(block.retain(), 3000, 1000);
    block.release(); // the gatherer's three handles keep it
    expect(pool.stats().inUse).toBe(2); // the block and a scratch chunk
    gatherer.compact(64); // copies [100, 150) and the byte after it (a run of two small segments)
    expect(pool.stats().inUse).toBe(2);
    expect(Buffer.concat(gatherer.segments())).toEqual(
      Buffer.concat([
        Buffer.from(Array.from({ length: 150 }, (_, i) => i & 0xff)),
        Buffer.from([1]),
        Buffer.from(Array.from({ length: 1000 }, (_, i) => (3000 + i) & 0xff)),
      ]),
    );
    const { server, port } = await listen((socket) => socket.resume());
    const client = await connect(port);
    await gatherer.writeTo(client);
    expect(pool.stats().inUse).toBe(0);
    client.end();
    await closeServer(server);
  });

  it('a zero-length range releases the handle at once', () => {
    const pool = makePool();
    const shared = pool.share(pool.tryAcquire(100)!);
    const gatherer = new Gatherer({ pool });
    gatherer.putShared(shared, 100).putShared(pool.share(pool.tryAcquire(100)!), 10, 0);
    expect(shared.released).toBe(true);
    expect(gatherer.byteLength).toBe(0);
    expect(pool.stats().inUse).toBe(0);
  });

  it('refuses a range outside the data (ERR_OUT_OF_RANGE) or not an integer (ERR_INVALID_ARG_TYPE): nothing put, the caller keeps the handle', () => {
    const pool = makePool();
    const shared = pool.share(pool.tryAcquire(100)!);
    const gatherer = new Gatherer({ pool });
    expectCode(
      thrown(() => gatherer.putShared(shared, 101)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => gatherer.putShared(shared, -1)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => gatherer.putShared(shared, 50, 51)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => gatherer.putShared(shared, 0, -1)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => gatherer.putShared(shared, 1.5)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => gatherer.putShared(shared, '1' as unknown as number)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    expect(thrown(() => gatherer.putShared(shared, 50, 51)).message).toBe('Expected an integer from 0 to 50 for length but received 51');
    expect(shared.released).toBe(false);
    expect(gatherer.byteLength).toBe(0);
    gatherer.putShared(shared, 50, 50);
    expect(gatherer.byteLength).toBe(50);
    gatherer.reset();
    expect(pool.stats().inUse).toBe(0);
  });
});

describe('sharing over real sockets', () => {
  it('fan-out: every frame a publisher sends goes to 5 subscribers by reference (retain + putShared); every byte arrives, counts back to 0', async () => {
    const pool = makePool();
    const subscribers = 5;
    const payloads = makePayloads(200, (i) => ((i * 997) % (20 * KiB)) + (i % 3 === 0 ? 40 * KiB : 0));
    const outs: net.Socket[] = [];
    const received: Promise<Buffer>[] = [];
    const { server, port } = await listen((socket) => {
      if (outs.length < subscribers) {
        outs.push(socket);
        socket.resume();
        return;
      }
      // The publisher.
      const assembler = new FrameAssembler({
        pool,
        onFrame: (frame) => {
          for (const out of outs) {
            const gatherer = new Gatherer({ pool });
            gatherer.putU32BE(frame.length).putShared(frame.retain());
            void gatherer.writeTo(out);
          }
          frame.release();
        },
      }).attach(socket);
      assembler.on('close', () => {
        for (const out of outs) out.end();
      });
    });
    for (let i = 0; i < subscribers; i++) {
      const client = await connect(port);
      received.push(collect(client));
    }
    while (outs.length < subscribers) await new Promise((resolve) => setImmediate(resolve));
    const publisher = await connect(port);
    publisher.end(encodeStream('u32be', payloads));
    const streams = await Promise.all(received);
    const want = encodeStream('u32be', payloads);
    for (const stream of streams) expect(stream.equals(want)).toBe(true);
    await closeServer(server);
    expect(pool.stats().inUse).toBe(0);
  });

  it('fan-out with a subscriber that resets mid-stream: its writes fail, the others get every byte, every handle comes back', async () => {
    const pool = makePool();
    const payloads = makePayloads(300, (i) => 60 * KiB + i);
    const outs: net.Socket[] = [];
    const failures: string[] = [];
    let publisherDone!: Promise<void>;
    const received: Promise<Buffer>[] = [];
    const { server, port } = await listen((socket) => {
      if (outs.length < 3) {
        outs.push(socket);
        socket.on('error', () => {});
        socket.resume();
        return;
      }
      const writes: Promise<void>[] = [];
      const assembler = new FrameAssembler({
        pool,
        onFrame: (frame) => {
          for (const out of outs) {
            const gatherer = new Gatherer({ pool });
            gatherer.putU32BE(frame.length).putShared(frame.retain());
            writes.push(
              gatherer.writeTo(out).catch((error) => {
                failures.push(error.code ?? error.message);
              }),
            );
          }
          frame.release();
        },
      }).attach(socket);
      publisherDone = new Promise((resolve) =>
        assembler.on('close', () => {
          void Promise.all(writes).then(() => {
            for (const out of outs) out.end();
            resolve();
          });
        }),
      );
    });
    const victim = await connect(port);
    victim.on('error', () => {});
    let victimBytes = 0;
    victim.on('data', (chunk: Buffer) => {
      victimBytes += chunk.length;
      if (victimBytes > 100 * KiB && !victim.destroyed) victim.resetAndDestroy();
    });
    for (let i = 0; i < 2; i++) received.push(collect(await connect(port)));
    while (outs.length < 3) await new Promise((resolve) => setImmediate(resolve));
    const publisher = await connect(port);
    publisher.end(encodeStream('u32be', payloads));
    const streams = await Promise.all(received);
    while (publisherDone === undefined) await new Promise((resolve) => setImmediate(resolve));
    await publisherDone;
    const want = encodeStream('u32be', payloads);
    for (const stream of streams) expect(stream.equals(want)).toBe(true);
    expect(failures.length).toBeGreaterThan(0);
    await closeServer(server);
    expect(pool.stats().inUse).toBe(0);
  });

  it('for await: frames kept past the loop by retain() stay intact while later frames arrive, and an error ending the assembler leaves only what the consumer holds', async () => {
    const pool = makePool();
    const payloads = makePayloads(50, (i) => 100 + i);
    let assembler!: FrameAssembler;
    const kept: Frame[] = [];
    let seen = 0;
    let consumed!: Promise<unknown>;
    const { server, port } = await listen((socket) => {
      assembler = new FrameAssembler({ pool, maxFrameSize: 4 * KiB }).attach(socket);
      consumed = (async () => {
        for await (const frame of assembler) {
          seen++;
          if (frame.data[0] % 2 === 0) kept.push(frame.retain());
          frame.release();
        }
      })().catch((error) => error);
    });
    const client = await connect(port);
    client.on('error', () => {});
    client.write(encodeStream('u32be', payloads));
    while (seen < payloads.length) await new Promise((resolve) => setImmediate(resolve));
    client.write(Buffer.from([0, 1, 0, 0])); // 65536: too large
    const error = (await consumed) as Error & { code?: string };
    expectCode(error, 'IobufError', 'ERR_IOBUF_FRAME_TOO_LARGE');
    await closeOf(assembler);
    expect(kept.length).toBe(payloads.filter((payload) => payload[0] % 2 === 0).length);
    // The kept frames arrived whole in socket reads: they are views of the read buffers
    // they arrived in, which stay out of the pool until the last such frame is released.
    expect(pool.stats().inUse).toBeGreaterThan(0);
    expect(pool.stats().inUse).toBeLessThanOrEqual(kept.length);
    for (const frame of kept) {
      const i = frame.length - 100;
      expect(frame.data.equals(payloads[i])).toBe(true);
      frame.release();
    }
    expect(pool.stats().inUse).toBe(0);
    expect(assembler.stats().heldBytes).toBe(0);
    await closeServer(server);
  });
});
