// FrameAssembler input boundaries: whatever the chunk boundaries (every split
// point of a stream, random splits of long streams, real socket reads), the
// frames that come out are exactly the frames sent, byte for byte, each in a
// pooled Buffer of exactly its payload.
import { describe, expect, it } from 'vitest';
import { type BufferPool, Frame, FrameAssembler, MAX_HEADER_LENGTH } from '../lib/index';
import type { FrameHeader, LengthPrefix } from '../lib/index';
import { pooledAddressOf } from '../lib/pooled';
import { usePools } from './fixtures/pool-helpers';
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

const pools = usePools();
const makePool = (maxMemory = 64 * MiB) => pools({ maxMemory });

const PREFIXES: LengthPrefix[] = ['u8', 'u16be', 'u16le', 'u32be', 'u32le', 'varint'];
const MAX_FOR: Record<LengthPrefix, number> = { u8: 255, u16be: 2000, u16le: 2000, u32be: 5000, u32le: 5000, varint: 5000 };

/** Pushes `chunks`, ends, and returns the payloads (copied) and what the frames looked like. */
async function assemble(pool: BufferPool, prefix: LengthPrefix | ((bytes: Buffer) => FrameHeader | null), chunks: Buffer[]) {
  const assembler = new FrameAssembler({ pool, lengthPrefix: prefix });
  for (const chunk of chunks) assembler.push(chunk);
  assembler.end();
  const payloads: Buffer[] = [];
  let allPooled = true;
  for await (const frame of assembler) {
    expect(frame).toBeInstanceOf(Frame);
    if (frame.length > 0 && pooledAddressOf(frame.data) < 0) allPooled = false;
    payloads.push(Buffer.from(frame.data));
    frame.release();
  }
  return { payloads, allPooled };
}

/** Same frames, byte for byte (Buffer#equals: toEqual walks Buffers element by element, far too slowly here). */
function expectSameFrames(got: Buffer[], want: Buffer[], label: string): void {
  expect(
    got.map((b) => b.length),
    label,
  ).toEqual(want.map((b) => b.length));
  expect(Buffer.concat(got).equals(Buffer.concat(want)), label).toBe(true);
}

function splitAt(data: Buffer, points: number[]): Buffer[] {
  const chunks: Buffer[] = [];
  let from = 0;
  for (const point of [...points].sort((a, b) => a - b)) {
    chunks.push(data.subarray(from, point));
    from = point;
  }
  chunks.push(data.subarray(from));
  return chunks;
}

describe('FrameAssembler with push()', () => {
  for (const prefix of PREFIXES) {
    it(`${prefix}: every single split point (and every pair of nearby ones) gives exactly the frames sent`, async () => {
      const pool = makePool();
      // Lengths around the prefix's byte boundaries, zero-length frames between.
      const lengths = prefix === 'varint' ? [0, 1, 127, 128, 300, 0, 16384, 5] : [0, 1, 200, 0, 255, 3, 17];
      const payloads = makePayloads(lengths.length, (i) => lengths[i]);
      const stream = encodeStream(prefix, payloads);
      for (let point = 0; point <= stream.length; point++) {
        const { payloads: got, allPooled } = await assemble(pool, prefix, splitAt(stream, [point]));
        expectSameFrames(got, payloads, `split at ${point}`);
        expect(allPooled).toBe(true);
      }
      // Two nearby split points: headers cut into three pieces.
      for (let point = 0; point + 3 <= stream.length; point += 7) {
        for (const gap of [1, 2, 3]) {
          const { payloads: got } = await assemble(pool, prefix, splitAt(stream, [point, point + gap]));
          expectSameFrames(got, payloads, `split at ${point} and ${point + gap}`);
        }
      }
      expect(pool.stats().inUse).toBe(0);
    });
  }

  it('one byte at a time, for every prefix', async () => {
    const pool = makePool();
    for (const prefix of PREFIXES) {
      const payloads = makePayloads(40, (i) => (i * 37) % (MAX_FOR[prefix] >> 2));
      const stream = encodeStream(prefix, payloads);
      const chunks = Array.from({ length: stream.length }, (_, i) => stream.subarray(i, i + 1));
      expectSameFrames((await assemble(pool, prefix, chunks)).payloads, payloads, prefix);
    }
    expect(pool.stats().inUse).toBe(0);
  });

  it('random splits of long streams (seeded), every prefix', async () => {
    const pool = makePool();
    for (const prefix of PREFIXES) {
      for (let seed = 1; seed <= 12; seed++) {
        const random = prng(seed * 1000 + PREFIXES.indexOf(prefix));
        const payloads = makePayloads(300, () => (random() < 0.1 ? 0 : Math.floor(random() ** 3 * MAX_FOR[prefix])));
        const stream = encodeStream(prefix, payloads);
        const chunks: Buffer[] = [];
        for (let at = 0; at < stream.length; ) {
          const size = 1 + Math.floor(random() ** 2 * 3000);
          chunks.push(stream.subarray(at, at + size));
          at += size;
        }
        expectSameFrames((await assemble(pool, prefix, chunks)).payloads, payloads, `${prefix} seed ${seed}`);
      }
    }
    expect(pool.stats().inUse).toBe(0);
  });

  it('a custom decoder (2-byte type + u24be length) at every split point', async () => {
    const pool = makePool();
    const decoder = (bytes: Buffer): FrameHeader | null => {
      if (bytes.length < 5) return null;
      return { headerLength: 5, payloadLength: (bytes[2] << 16) | (bytes[3] << 8) | bytes[4] };
    };
    const payloads = makePayloads(6, (i) => [0, 10, 70000, 1, 0, 300][i]);
    const stream = Buffer.concat(
      payloads.flatMap((payload, i) => [
        Buffer.from([0xab, i, payload.length >> 16, (payload.length >> 8) & 0xff, payload.length & 0xff]),
        payload,
      ]),
    );
    for (let point = 0; point <= stream.length; point += point < 40 ? 1 : 997) {
      expectSameFrames((await assemble(pool, decoder, splitAt(stream, [point]))).payloads, payloads, `split at ${point}`);
    }
    // The decoder sees at most MAX_HEADER_LENGTH bytes at a time.
    let largest = 0;
    await assemble(
      pool,
      (bytes) => {
        largest = Math.max(largest, bytes.length);
        return decoder(bytes);
      },
      [stream],
    );
    expect(largest).toBe(MAX_HEADER_LENGTH);
    expect(pool.stats().inUse).toBe(0);
  });

  it('hands out frames whose data is the pooled Buffer of exactly the payload, and zero-length frames as an empty Buffer', async () => {
    const pool = makePool();
    const frames: Frame[] = [];
    const assembler = new FrameAssembler({ pool, onFrame: (frame) => frames.push(frame) });
    assembler.push(encodeStream('u32be', [Buffer.from('abc'), Buffer.alloc(0), Buffer.alloc(5000, 7)]));
    expect(frames.map((frame) => frame.length)).toEqual([3, 0, 5000]);
    expect(frames[0].data.toString()).toBe('abc');
    expect(pooledAddressOf(frames[0].data)).toBeGreaterThan(0);
    expect(pooledAddressOf(frames[2].data)).toBeGreaterThan(0);
    expect(frames[1].data.length).toBe(0);
    expect(pool.stats().inUse).toBe(2);
    expect(assembler.stats().heldBytes).toBe(5003);
    frames[1].release(); // zero-length: nothing to give back
    frames[0].release();
    frames[0].release(); // twice: harmless
    expect(pool.stats().inUse).toBe(1);
    {
      using last = frames[2];
      expect(last.data[4999]).toBe(7);
    }
    expect(pool.stats().inUse).toBe(0);
    expect(assembler.stats().heldBytes).toBe(0);
  });
});

describe('FrameAssembler on a real socket', () => {
  it('reads an accepted socket through onread and gets every frame across random write boundaries', async () => {
    const pool = makePool();
    const random = prng(77);
    const payloads = makePayloads(400, () => (random() < 0.05 ? 0 : Math.floor(random() ** 3 * 200 * KiB)));
    const stream = encodeStream('u32be', payloads);
    const received: Buffer[] = [];
    let assembler!: FrameAssembler;
    let consumed!: Promise<void>;
    let closed!: Promise<unknown>;
    const { server, port } = await listen((socket) => {
      assembler = new FrameAssembler({ pool, readBufferSize: 16 * KiB }).attach(socket);
      closed = closeOf(assembler);
      consumed = (async () => {
        for await (const frame of assembler) {
          received.push(Buffer.from(frame.data));
          frame.release();
        }
      })();
    });
    const client = await connect(port);
    const sizes = Array.from({ length: 3000 }, () => 1 + Math.floor(random() ** 2 * 40 * KiB));
    await writeInPieces(client, stream, sizes);
    client.end();
    await consumed;
    await closed; // the read buffer goes back when the socket has closed
    await closeServer(server);
    expectSameFrames(received, payloads, 'socket');
    const stats = assembler.stats();
    expect(stats.readMode).toBe('onread');
    expect(stats.bytes).toBe(stream.length);
    expect(stats.frames).toBe(payloads.length);
    // Large payloads were read straight into their frames: those bytes never went through a copy.
    expect(stats.directReads).toBeGreaterThan(0);
    expect(stats.directBytes).toBeGreaterThan(stream.length / 4);
    expect(pool.stats().inUse).toBe(0);
  });

  it('takes over a socket Node is already reading (no pauseOnConnect), even one that has buffered bytes already', async () => {
    const net = await import('node:net');
    const pool = makePool();
    const payloads = makePayloads(60, (i) => (i * 4099) % (90 * KiB));
    const stream = encodeStream('u32be', payloads);
    for (const buffering of [false, true]) {
      const received: Buffer[] = [];
      let assembler!: FrameAssembler;
      let closed!: Promise<void>;
      let buffered = -1;
      const server = net.createServer((socket) => {
        const take = () => {
          buffered = socket.readableLength;
          assembler = new FrameAssembler({
            pool,
            onFrame: (frame) => {
              received.push(Buffer.from(frame.data));
              frame.release();
            },
          }).attach(socket);
          closed = closeOf(assembler);
        };
        if (!buffering) {
          take();
          return;
        }
        // Attach only once Node has read some bytes into the stream's buffer.
        const poll = () => (socket.readableLength > 0 ? take() : setImmediate(poll));
        poll();
      });
      server.listen(0, '127.0.0.1');
      await new Promise((resolve) => server.once('listening', resolve));
      const client = await connect((server.address() as import('node:net').AddressInfo).port);
      client.end(stream);
      while (closed === undefined) await new Promise((resolve) => setTimeout(resolve, 5));
      await closed;
      await closeServer(server);
      expectSameFrames(received, payloads, buffering ? 'attach with bytes buffered' : 'attach at once');
      expect(assembler.stats().readMode).toBe('onread');
      if (buffering) expect(buffered).toBeGreaterThan(0);
      expect(pool.stats().inUse).toBe(0);
    }
  });

  it('reads a client socket made with socketOptions() through onread', async () => {
    const pool = makePool();
    const payloads = makePayloads(50, (i) => i * 1000);
    const { server, port } = await listen((socket) => {
      socket.resume();
      socket.end(encodeStream('u32be', payloads));
    });
    const assembler = new FrameAssembler({ pool });
    const socket = await connect(port, assembler.socketOptions());
    assembler.attach(socket);
    const received: Buffer[] = [];
    for await (const frame of assembler) {
      received.push(Buffer.from(frame.data));
      frame.release();
    }
    expectSameFrames(received, payloads, 'client socket');
    expect(assembler.stats().readMode).toBe('onread');
    await closeOf(assembler);
    await closeServer(server);
    expect(pool.stats().inUse).toBe(0);
  });

  it('falls back to data events for a stream that is not a TCP or pipe socket, with the same frames', async () => {
    const { PassThrough } = await import('node:stream');
    const pool = makePool();
    const payloads = makePayloads(30, (i) => i * 333);
    const stream = new PassThrough();
    const assembler = new FrameAssembler({ pool });
    assembler.attach(stream as unknown as import('node:net').Socket);
    const data = encodeStream('u32be', payloads);
    for (let at = 0; at < data.length; at += 1000) stream.write(data.subarray(at, at + 1000));
    stream.end();
    const received: Buffer[] = [];
    for await (const frame of assembler) {
      received.push(Buffer.from(frame.data));
      frame.release();
    }
    expectSameFrames(received, payloads, 'data events');
    expect(assembler.stats().readMode).toBe('data');
    expect(pool.stats().inUse).toBe(0);
  });
});
