// FrameAssembler fuzz over real loopback connections: streams of frames with
// corrupted header bytes, cut short, or reset by the peer, written in random
// pieces. Each connection must deliver exactly the frames an independent
// reference parser finds before the first fault, end with exactly the code
// the reference expects, never throw, and leave the pool's inUse at 0.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BufferPool, FrameAssembler } from '../lib/index';
import type { LengthPrefix } from '../lib/index';
import { KiB, MiB, closeOf, closeServer, connect, encodeStream, listen, makePayloads, prng } from './fixtures/frames-helpers';

const MAX_FRAME = 40 * KiB;

/** What a correct assembler must do with `bytes`: the frames, then a clean end or the first fault's code. */
function reference(prefix: LengthPrefix, bytes: Buffer): { frames: Buffer[]; code: string | null } {
  const frames: Buffer[] = [];
  let at = 0;
  for (;;) {
    if (at === bytes.length) return { frames, code: null };
    let length: number;
    let headerLength: number;
    if (prefix === 'varint') {
      length = 0;
      headerLength = 0;
      for (let i = 0; ; i++) {
        if (i === 5) return { frames, code: 'ERR_IOBUF_FRAME_INVALID' };
        if (at + i >= bytes.length) return { frames, code: 'ERR_IOBUF_FRAME_TRUNCATED' };
        length += (bytes[at + i] & 0x7f) * 2 ** (7 * i);
        if (bytes[at + i] < 0x80) {
          headerLength = i + 1;
          break;
        }
      }
      if (length > 0xffffffff) return { frames, code: 'ERR_IOBUF_FRAME_INVALID' };
    } else {
      headerLength = { u8: 1, u16be: 2, u16le: 2, u32be: 4, u32le: 4 }[prefix];
      if (at + headerLength > bytes.length) return { frames, code: 'ERR_IOBUF_FRAME_TRUNCATED' };
      const header = bytes.subarray(at, at + headerLength);
      length = {
        u8: () => header[0],
        u16be: () => header.readUInt16BE(),
        u16le: () => header.readUInt16LE(),
        u32be: () => header.readUInt32BE(),
        u32le: () => header.readUInt32LE(),
      }[prefix]();
    }
    if (length > MAX_FRAME) return { frames, code: 'ERR_IOBUF_FRAME_TOO_LARGE' };
    if (at + headerLength + length > bytes.length) return { frames, code: 'ERR_IOBUF_FRAME_TRUNCATED' };
    frames.push(bytes.subarray(at + headerLength, at + headerLength + length));
    at += headerLength + length;
  }
}

interface Case {
  prefix: LengthPrefix;
  bytes: Buffer;
  pieces: number[];
  /** 'end': a FIN after the bytes; 'reset': an RST after them. */
  finish: 'end' | 'reset';
}

function makeCase(seed: number): Case {
  const random = prng(seed);
  const prefixes: LengthPrefix[] = ['u8', 'u16be', 'u16le', 'u32be', 'u32le', 'varint'];
  const prefix = prefixes[seed % prefixes.length];
  const limit = prefix === 'u8' ? 255 : prefix.startsWith('u16') ? 20000 : MAX_FRAME;
  const payloads = makePayloads(5 + Math.floor(random() * 40), () => Math.floor(random() ** 3 * limit));
  const bytes = Buffer.from(encodeStream(prefix, payloads));
  // Corrupt a few bytes (often inside a header: the first bytes of the stream are one).
  const corruptions = Math.floor(random() * 3);
  for (let i = 0; i < corruptions; i++) {
    const at = random() < 0.5 ? Math.floor(random() * Math.min(8, bytes.length)) : Math.floor(random() * bytes.length);
    bytes[at] = Math.floor(random() * 256);
  }
  const cut = random() < 0.5 ? bytes.length : Math.floor(random() * bytes.length);
  const pieces = Array.from({ length: 200 }, () => 1 + Math.floor(random() ** 2 * 20 * KiB));
  return { prefix, bytes: bytes.subarray(0, cut), pieces, finish: random() < 0.15 ? 'reset' : 'end' };
}

let pool: BufferPool;
beforeAll(() => {
  pool = new BufferPool({ maxMemory: 32 * MiB });
});
afterAll(async () => {
  await pool.close({ force: true });
});

describe('FrameAssembler fuzz (real sockets)', () => {
  it('corrupted headers, truncated streams and resets: the right frames, the right code, nothing thrown, nothing leaked', async () => {
    const uncaught: unknown[] = [];
    const onUncaught = (error: unknown) => uncaught.push(error);
    process.on('uncaughtException', onUncaught);
    process.on('unhandledRejection', onUncaught);
    const codes = new Map<string, number>();
    try {
      for (let seed = 1; seed <= 400; seed++) {
        const testCase = makeCase(seed);
        const expected = reference(testCase.prefix, testCase.bytes);
        const frames: Buffer[] = [];
        let assembler!: FrameAssembler;
        let closed!: Promise<void>;
        const { server, port } = await listen((socket) => {
          assembler = new FrameAssembler({
            pool,
            lengthPrefix: testCase.prefix,
            maxFrameSize: MAX_FRAME,
            readBufferSize: 8 * KiB,
            onFrame: (frame) => {
              frames.push(Buffer.from(frame.data));
              frame.release();
            },
          }).attach(socket);
          closed = closeOf(assembler);
        });
        const client = await connect(port);
        client.on('error', () => {});
        let at = 0;
        for (const size of testCase.pieces) {
          if (at >= testCase.bytes.length || client.destroyed) break;
          const piece = testCase.bytes.subarray(at, at + size);
          at += piece.length;
          await new Promise<void>((resolve) => client.write(piece, () => resolve()));
        }
        if (testCase.finish === 'reset') client.resetAndDestroy();
        else client.end();
        await closeOf(client);
        while (closed === undefined) await new Promise((resolve) => setImmediate(resolve));
        await closed;
        await closeServer(server);

        const label = `seed ${seed} (${testCase.prefix}, ${testCase.bytes.length} bytes, ${testCase.finish})`;
        const code = (assembler.error as { code?: string } | null)?.code ?? null;
        if (testCase.finish === 'reset') {
          // An RST can overtake data still in flight: the receiver sees a prefix of the
          // stream, then ECONNRESET or an EOF (the kernel may drop what it had queued).
          expect(
            expected.frames.slice(0, frames.length).map((f) => f.toString('hex')),
            label,
          ).toEqual(frames.map((f) => f.toString('hex')));
          expect(['ECONNRESET', 'ERR_IOBUF_FRAME_TRUNCATED', expected.code], label).toContain(code);
        } else {
          expect(frames.length, label).toBe(expected.frames.length);
          expect(Buffer.concat(frames).equals(Buffer.concat(expected.frames)), label).toBe(true);
          expect(code, label).toBe(expected.code);
        }
        codes.set(String(code), (codes.get(String(code)) ?? 0) + 1);
        expect(pool.stats().inUse, label).toBe(0);
      }
    } finally {
      process.off('uncaughtException', onUncaught);
      process.off('unhandledRejection', onUncaught);
    }
    expect(uncaught).toEqual([]);
    // The fuzz reached every outcome.
    for (const code of ['null', 'ERR_IOBUF_FRAME_TOO_LARGE', 'ERR_IOBUF_FRAME_TRUNCATED', 'ERR_IOBUF_FRAME_INVALID']) {
      expect(codes.get(code) ?? 0, `${code} in ${JSON.stringify([...codes])}`).toBeGreaterThan(0);
    }
  });
});
