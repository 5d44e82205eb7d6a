// Frames come out in the order their bytes went in: when the pool runs out in
// the middle of a chunk of small frames, and when onFrame feeds the assembler
// itself (push() or end() from inside onFrame), with push() keeping its
// promise that the caller may reuse a chunk once push() returned.
import { describe, expect, it } from 'vitest';
import { FrameAssembler } from '../lib/index';
import type { Frame } from '../lib/index';
import { expectCode, usePools } from './fixtures/pool-helpers';
import { MiB, closeOf, closeServer, connect, encodeLength, encodeStream, listen } from './fixtures/frames-helpers';

const pools = usePools();
const makePool = () => pools({ maxMemory: 64 * MiB });

const frameOf = (n: number) => encodeStream('u8', [Buffer.from([n])]);

describe('small frames and a pool that runs out', () => {
  it('a chunk of 1000 small frames, memory for 256: the rest waits, and comes out in order, byte-exact, once memory is back', async () => {
    const pool = pools({ maxMemory: 64 * 1024, sizeClasses: [256] });
    const payloads = Array.from({ length: 1000 }, (_, i) => Buffer.alloc(1 + (i % 200), i & 0xff));
    const held: Frame[] = [];
    const got: Buffer[] = [];
    const assembler = new FrameAssembler({
      pool,
      lengthPrefix: 'u16be',
      onFrame: (frame) => {
        got.push(Buffer.from(frame.data));
        held.push(frame);
      },
    });
    let drains = 0;
    assembler.on('drain', () => {
      drains++;
    });
    const ok = assembler.push(encodeStream('u16be', payloads));
    expect(ok).toBe(false);
    expect(got.length).toBeLessThan(1000);
    while (got.length < 1000) {
      const before = got.length;
      for (const frame of held.splice(0)) frame.release();
      for (let i = 0; i < 100 && got.length === before; i++) await new Promise((resolve) => setImmediate(resolve));
      expect(got.length).toBeGreaterThan(before);
    }
    expect(Buffer.concat(got).equals(Buffer.concat(payloads))).toBe(true);
    expect(got.map((payload) => payload.length)).toEqual(payloads.map((payload) => payload.length));
    for (const frame of held.splice(0)) frame.release();
    expect(drains).toBeGreaterThan(0);
    expect(pool.stats().inUse).toBe(0);
    expect(pool.stats().waits).toBeGreaterThan(0);
  });
});

describe('push() from inside onFrame', () => {
  it('frames come out in the order their bytes went in: 5, 6, 7 (not 5, 7, 6)', () => {
    const pool = makePool();
    const order: number[] = [];
    const assembler = new FrameAssembler({
      pool,
      lengthPrefix: 'u8',
      onFrame: (frame) => {
        const n = frame.data[0];
        order.push(n);
        frame.release();
        if (n === 5) expect(assembler.push(frameOf(7))).toBe(true);
      },
    });
    assembler.push(Buffer.concat([frameOf(5), frameOf(6)]));
    expect(order).toEqual([5, 6, 7]);
    expect(pool.stats().inUse).toBe(0);
  });

  it('deeper: each frame pushes the next two; the caller reuses its chunk as soon as push() returned', () => {
    const pool = makePool();
    const order: number[] = [];
    const scratch = Buffer.alloc(4);
    const assembler = new FrameAssembler({
      pool,
      lengthPrefix: 'u8',
      onFrame: (frame) => {
        const n = frame.data[0];
        order.push(n);
        frame.release();
        if (n < 40) {
          // One reused chunk: its bytes must have been taken when push() returned.
          scratch.set([1, 2 * n, 1, 2 * n + 1]);
          assembler.push(scratch);
          scratch.fill(0xee);
        }
      },
    });
    assembler.push(Buffer.from([1, 1]));
    // Breadth-first by bytes: 1 pushes 2,3; 2 pushes 4,5; 3 pushes 6,7; …
    expect(order).toEqual(Array.from({ length: 79 }, (_, i) => i + 1));
    expect(pool.stats().inUse).toBe(0);
  });

  it('a push from onFrame while the outer chunk still holds a split header and payload bytes', () => {
    const pool = makePool();
    const got: string[] = [];
    const assembler = new FrameAssembler({
      pool,
      onFrame: (frame) => {
        got.push(frame.data.toString());
        frame.release();
        if (got.length === 1) assembler.push(Buffer.from('d')); // the last byte of 'abcd', after the outer chunk's 'abc'
      },
    });
    const stream = encodeStream('u32be', [Buffer.from('x'), Buffer.from('abcd')]);
    assembler.push(stream.subarray(0, stream.length - 1));
    expect(got).toEqual(['x', 'abcd']);
    expect(pool.stats().inUse).toBe(0);
  });

  it('end() from inside onFrame ends after the bytes already pushed: the rest of the chunk still comes out', async () => {
    const pool = makePool();
    const got: number[] = [];
    const assembler = new FrameAssembler({
      pool,
      lengthPrefix: 'u8',
      onFrame: (frame) => {
        got.push(frame.data[0]);
        frame.release();
        if (frame.data[0] === 1) assembler.end();
      },
    });
    let ended = false;
    assembler.on('end', () => {
      ended = true;
    });
    assembler.push(Buffer.concat([frameOf(1), frameOf(2), frameOf(3)]));
    await closeOf(assembler);
    expect(got).toEqual([1, 2, 3]);
    expect(ended).toBe(true);
    expect(assembler.error).toBe(null);

    // end() inside a frame whose successor is cut short: truncated, as if end() came after the chunk.
    const cut = new FrameAssembler({
      pool,
      lengthPrefix: 'u8',
      onFrame: (frame) => {
        frame.release();
        cut.end();
      },
    });
    cut.push(Buffer.concat([frameOf(1), encodeLength('u8', 3), Buffer.from('a')]));
    expectCode(cut.error as Error, 'IobufError', 'ERR_IOBUF_FRAME_TRUNCATED');
    expect(pool.stats().inUse).toBe(0);
  });

  it("over a socket: onFrame pushing extra frames (a local loopback) keeps them behind the socket's bytes that were already read", async () => {
    const pool = makePool();
    const got: number[] = [];
    let assembler!: FrameAssembler;
    let closed!: Promise<void>;
    const { server, port } = await listen((socket) => {
      assembler = new FrameAssembler({
        pool,
        lengthPrefix: 'u8',
        onFrame: (frame: Frame) => {
          const n = frame.data[0];
          got.push(n);
          frame.release();
          if (n < 100) assembler.push(frameOf(n + 100));
        },
      }).attach(socket);
      closed = closeOf(assembler);
    });
    const client = await connect(port);
    client.end(Buffer.concat([frameOf(1), frameOf(2), frameOf(3)]));
    while (closed === undefined) await new Promise((resolve) => setImmediate(resolve));
    await closed;
    await closeServer(server);
    // Each read's frames come first, then what their onFrame calls pushed, in that order
    // (the socket decides how its bytes are split into reads).
    const firsts = got.filter((n) => n < 100);
    const echoes = got.filter((n) => n >= 100);
    expect(firsts).toEqual([1, 2, 3]);
    expect(echoes).toEqual([101, 102, 103]);
    for (const n of firsts) expect(got.indexOf(n + 100)).toBeGreaterThan(got.indexOf(n));
    expect(pool.stats().inUse).toBe(0);
  });
});
