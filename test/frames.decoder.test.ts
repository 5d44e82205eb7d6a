// The custom decoder contract: what a decoder is shown, that the same bytes
// give the same frames however they are split (including a decoder that must
// see bytes past its own header before it decides), the tag it returns
// reaching the consumer in every mode, a reused result object, and what a
// decoder that throws (or returns something that throws) does: always
// ERR_IOBUF_FRAME_INVALID with the cause, every buffer back.
import { describe, expect, it } from 'vitest';
import { FrameAssembler, IobufError, MAX_HEADER_LENGTH } from '../lib/index';
import type { BufferPool, Frame, FrameHeader, LengthDecoder } from '../lib/index';
import { expectCode, usePools } from './fixtures/pool-helpers';
import { MiB, closeOf, closeServer, connect, encodeStream, listen, makePayloads, writeInPieces } from './fixtures/frames-helpers';

const pools = usePools();
const makePool = (maxMemory = 64 * MiB) => pools({ maxMemory });

interface Received {
  payloads: Buffer[];
  tags: number[];
  error: (Error & { code?: string; cause?: unknown }) | null;
}

/** Pushes `chunks` into an assembler (frames through onFrame), ends it, and returns what came out. */
function assemble(pool: BufferPool, decoder: LengthDecoder, chunks: Buffer[]): Received {
  const payloads: Buffer[] = [];
  const tags: number[] = [];
  const assembler = new FrameAssembler({
    pool,
    lengthPrefix: decoder,
    onFrame: (frame) => {
      payloads.push(Buffer.from(frame.data));
      tags.push(frame.tag);
      frame.release();
    },
  });
  for (const chunk of chunks) assembler.push(chunk);
  assembler.end();
  return { payloads, tags, error: assembler.error as Received['error'] };
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

function expectSame(got: Received, want: Received, label: string): void {
  expect(got.error?.message ?? null, label).toBe(want.error?.message ?? null);
  expect(got.tags, label).toEqual(want.tags);
  expect(
    got.payloads.map((b) => b.length),
    label,
  ).toEqual(want.payloads.map((b) => b.length));
  expect(Buffer.concat(got.payloads).equals(Buffer.concat(want.payloads)), label).toBe(true);
}

// A PostgreSQL-like server stream. The first message has no type byte: a u32be
// length (counting itself) and a u32be code. The decoder must see the code (4
// bytes past its 4-byte header) to tell an SSLRequest (code 80877103, tag 1)
// from a StartupMessage (tag 2). Every later message is a type byte and a u32be
// length counting itself (tag = the type byte). The decoder is stateful: the
// first header it returns switches it to the typed form.
const SSL_REQUEST = 80877103;

function postgresDecoder(): { decoder: LengthDecoder; calls: () => number } {
  let started = false;
  let calls = 0;
  const header = { headerLength: 0, payloadLength: 0, tag: 0 }; // one object for every call
  const decoder = (bytes: Buffer, start: number, end: number): FrameHeader | null => {
    calls++;
    if (!started) {
      if (end - start < 8) return null; // the code is past the header
      const length = bytes.readUInt32BE(start);
      header.headerLength = 4;
      header.payloadLength = length - 4;
      header.tag = bytes.readUInt32BE(start + 4) === SSL_REQUEST ? 1 : 2;
      started = true;
      return header;
    }
    if (end - start < 5) return null;
    header.headerLength = 5;
    header.payloadLength = bytes.readUInt32BE(start + 1) - 4;
    header.tag = bytes[start];
    return header;
  };
  return { decoder, calls: () => calls };
}

function postgresStream(first: 'ssl' | 'startup'): { stream: Buffer; payloads: Buffer[]; tags: number[] } {
  const firstPayload =
    first === 'ssl'
      ? Buffer.from([0x04, 0xd2, 0x16, 0x2f]) // 80877103
      : Buffer.concat([Buffer.from([0, 3, 0, 0]), Buffer.from('user\0alice\0\0')]);
  const typed: Array<[number, Buffer]> = [
    [0x51, Buffer.from('SELECT 1\0')], // 'Q'
    [0x58, Buffer.alloc(0)], // 'X', empty: the next header follows at once
    [0x70, Buffer.from('pw\0')], // 'p', shorter than the 5-byte lookahead
    [0x53, Buffer.from([1])], // 'S'
    [0x51, Buffer.alloc(300, 7)],
  ];
  const parts: Buffer[] = [];
  const head = Buffer.alloc(4);
  head.writeUInt32BE(4 + firstPayload.length);
  parts.push(head, firstPayload);
  for (const [type, payload] of typed) {
    const header = Buffer.alloc(5);
    header[0] = type;
    header.writeUInt32BE(4 + payload.length, 1);
    parts.push(header, payload);
  }
  return {
    stream: Buffer.concat(parts),
    payloads: [firstPayload, ...typed.map(([, payload]) => payload)],
    tags: [first === 'ssl' ? 1 : 2, ...typed.map(([type]) => type)],
  };
}

describe('a custom decoder sees the same bytes however they are split', () => {
  for (const first of ['ssl', 'startup'] as const) {
    it(`a decoder that decides only after seeing bytes past its header (${first}): the same frames at every split point, every pair of split points, one byte at a time`, () => {
      const pool = makePool();
      const { stream, payloads, tags } = postgresStream(first);
      const want: Received = { payloads, tags, error: null };
      expectSame(assemble(pool, postgresDecoder().decoder, [stream]), want, 'one chunk');
      for (let point = 0; point <= stream.length; point++) {
        expectSame(assemble(pool, postgresDecoder().decoder, splitAt(stream, [point])), want, `split at ${point}`);
      }
      for (let a = 0; a <= 40; a++) {
        for (let b = a; b <= Math.min(stream.length, a + MAX_HEADER_LENGTH); b++) {
          expectSame(assemble(pool, postgresDecoder().decoder, splitAt(stream, [a, b])), want, `split at ${a} and ${b}`);
        }
      }
      const bytes = Array.from({ length: stream.length }, (_, i) => stream.subarray(i, i + 1));
      expectSame(assemble(pool, postgresDecoder().decoder, bytes), want, 'one byte at a time');
      expect(pool.stats().inUse).toBe(0);
    });
  }

  it('a lookahead of up to MAX_HEADER_LENGTH bytes, with frames shorter than the lookahead, at every split point', () => {
    const pool = makePool();
    // 1-byte header = payload length; the decoder answers only once it sees 64
    // bytes (or, as nothing says more will come, never: the stream is padded).
    const decoder: LengthDecoder = (bytes, start, end) => {
      if (end - start < MAX_HEADER_LENGTH) return null;
      return { headerLength: 1, payloadLength: bytes[start], tag: bytes[start] & 3 };
    };
    const payloads = makePayloads(40, (i) => (i * 7) % 23);
    const stream = Buffer.concat([encodeStream('u8', payloads), Buffer.alloc(MAX_HEADER_LENGTH, 0)]);
    // The padding is 64 zero-length frames; the last 63 bytes can never be decided.
    const whole = assemble(pool, decoder, [stream]);
    expectCode(whole.error!, 'IobufError', 'ERR_IOBUF_FRAME_TRUNCATED');
    expect(whole.payloads.length).toBe(payloads.length + 1);
    for (let i = 0; i < payloads.length; i++) expect(whole.payloads[i].equals(payloads[i])).toBe(true);
    for (let point = 0; point <= stream.length; point++) {
      expectSame(assemble(pool, decoder, splitAt(stream, [point])), whole, `split at ${point}`);
    }
    for (let point = 0; point + 70 <= stream.length; point += 5) {
      for (const gap of [1, 2, 17, 63, 64, 65]) {
        expectSame(assemble(pool, decoder, splitAt(stream, [point, point + gap])), whole, `split at ${point} and ${point + gap}`);
      }
    }
    expect(pool.stats().inUse).toBe(0);
  });

  it('the same over a real socket, written in pieces at every offset of the first 48 bytes', async () => {
    const pool = makePool();
    const { stream, payloads, tags } = postgresStream('startup');
    for (let point = 1; point < 48; point++) {
      const got: Received = { payloads: [], tags: [], error: null };
      let closed!: Promise<void>;
      let assembler!: FrameAssembler;
      const { server, port } = await listen((socket) => {
        assembler = new FrameAssembler({
          pool,
          lengthPrefix: postgresDecoder().decoder,
          onFrame: (frame) => {
            got.payloads.push(Buffer.from(frame.data));
            got.tags.push(frame.tag);
            frame.release();
          },
        }).attach(socket);
        closed = closeOf(assembler);
      });
      const client = await connect(port);
      await writeInPieces(client, stream, [point, 3]);
      client.end();
      while (closed === undefined) await new Promise((resolve) => setImmediate(resolve));
      await closed;
      await closeServer(server);
      got.error = assembler.error;
      expectSame(got, { payloads, tags, error: null }, `pieces at ${point}`);
      expect(assembler.stats().readMode).toBe('onread');
    }
    expect(pool.stats().inUse).toBe(0);
  });
});

describe('the MQTT decoder of docs/api.md', () => {
  // Copied from docs/api.md ("Custom decoders").
  const header = { headerLength: 0, payloadLength: 0, tag: 0 };
  function mqttHeader(bytes: Buffer, start: number, end: number) {
    let length = 0;
    for (let i = 1; i <= 4; i++) {
      if (start + i >= end) return null;
      const byte = bytes[start + i];
      length += (byte & 0x7f) * 128 ** (i - 1);
      if (byte < 0x80) {
        header.headerLength = i + 1;
        header.payloadLength = length;
        header.tag = bytes[start];
        return header;
      }
    }
    throw new Error('remaining length longer than 4 bytes');
  }

  it('reads MQTT packets (remaining lengths of 1 to 3 bytes, empty ones) at every split point, with the packet type as tag', () => {
    const pool = makePool();
    const packets: Array<[number, Buffer]> = [
      [0x10, Buffer.alloc(20, 1)],
      [0x30, Buffer.alloc(200, 2)],
      [0xc0, Buffer.alloc(0)],
      [0x32, Buffer.alloc(20000, 3)],
      [0xe0, Buffer.alloc(0)],
    ];
    const stream = Buffer.concat(
      packets.flatMap(([type, payload]) => {
        const length: number[] = [];
        let rest = payload.length;
        do {
          length.push((rest % 128) | (rest >= 128 ? 0x80 : 0));
          rest = Math.floor(rest / 128);
        } while (rest > 0);
        return [Buffer.from([type, ...length]), payload];
      }),
    );
    const want: Received = { payloads: packets.map(([, payload]) => payload), tags: packets.map(([type]) => type), error: null };
    for (let point = 0; point <= 260; point++) expectSame(assemble(pool, mqttHeader, splitAt(stream, [point])), want, `split at ${point}`);
    const tooLong = assemble(pool, mqttHeader, [Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01])]);
    expectCode(tooLong.error!, 'IobufError', 'ERR_IOBUF_FRAME_INVALID');
    expect(pool.stats().inUse).toBe(0);
  });
});

describe('what a decoder is shown', () => {
  it("(bytes, start, end): bytes[start] is the header's first byte, 1 to MAX_HEADER_LENGTH bytes, no view made per call", () => {
    const pool = makePool();
    const seen: Array<{ isChunk: boolean; first: number; available: number }> = [];
    const payloads = makePayloads(30, (i) => (i * 13) % 90);
    const stream = encodeStream('u16be', payloads);
    const chunks = splitAt(stream, [1, 50, 51, 700, 1200]);
    const decoder = (bytes: Buffer, start: number, end: number) => {
      seen.push({ isChunk: chunks.includes(bytes), first: bytes[start], available: end - start });
      return end - start < 2 ? null : { headerLength: 2, payloadLength: bytes.readUInt16BE(start) };
    };
    const got = assemble(pool, decoder, chunks);
    expect(got.error).toBe(null);
    expect(got.payloads.map((p) => p.length)).toEqual(payloads.map((p) => p.length));
    for (const call of seen) {
      expect(call.available).toBeGreaterThanOrEqual(1);
      expect(call.available).toBeLessThanOrEqual(MAX_HEADER_LENGTH);
    }
    // Headers inside a chunk are read in place: the decoder is given the chunk itself.
    expect(seen.filter((call) => call.isChunk).length).toBeGreaterThan(25);
    expect(Math.max(...seen.map((call) => call.available))).toBe(MAX_HEADER_LENGTH);
    expect(pool.stats().inUse).toBe(0);
  });

  it('a decoder declared with one parameter is given a view that starts at the header (the older form)', () => {
    const pool = makePool();
    const payloads = makePayloads(10, (i) => i * 5);
    const decoder = (bytes: Buffer) => (bytes.length < 4 ? null : { headerLength: 4, payloadLength: bytes.readUInt32BE(0) });
    const got = assemble(pool, decoder, splitAt(encodeStream('u32be', payloads), [3, 10, 11]));
    expect(got.error).toBe(null);
    expect(Buffer.concat(got.payloads).equals(Buffer.concat(payloads))).toBe(true);
  });
});

describe('the tag', () => {
  const typedDecoder: LengthDecoder = (bytes, start, end) =>
    end - start < 2 ? null : { headerLength: 2, payloadLength: bytes[start + 1], tag: bytes[start] };
  const typedStream = (messages: Array<[number, Buffer]>) =>
    Buffer.concat(messages.flatMap(([type, payload]) => [Buffer.from([type, payload.length]), payload]));

  it('reaches the consumer with its frame through onFrame, for await, and after retain(); built-in prefixes give 0', async () => {
    const pool = makePool();
    const messages: Array<[number, Buffer]> = [
      [0x30, Buffer.from('publish')],
      [0xc0, Buffer.alloc(0)],
      [0x82, Buffer.from('sub')],
      [0xe0, Buffer.alloc(0)],
    ];
    const stream = typedStream(messages);
    const viaOnFrame = assemble(pool, typedDecoder, splitAt(stream, [1, 5]));
    expect(viaOnFrame.tags).toEqual([0x30, 0xc0, 0x82, 0xe0]);

    const iterated = new FrameAssembler({ pool, lengthPrefix: typedDecoder });
    iterated.push(stream);
    iterated.end();
    const kept: Frame[] = [];
    const tags: number[] = [];
    for await (const frame of iterated) {
      tags.push(frame.tag);
      kept.push(frame.retain());
      frame.release();
    }
    expect(tags).toEqual([0x30, 0xc0, 0x82, 0xe0]);
    expect(kept.map((frame) => [frame.tag, frame.data.toString()])).toEqual([
      [0x30, 'publish'],
      [0xc0, ''],
      [0x82, 'sub'],
      [0xe0, ''],
    ]);
    expect(pool.stats().inUse).toBe(2);
    for (const frame of kept) frame.release();
    expect(pool.stats().inUse).toBe(0);

    const builtIn: number[] = [];
    const plain = new FrameAssembler({
      pool,
      onFrame: (frame) => {
        builtIn.push(frame.tag);
        frame.release();
      },
    });
    plain.push(encodeStream('u32be', [Buffer.from('a'), Buffer.alloc(0)]));
    expect(builtIn).toEqual([0, 0]);
  });

  it('a decoder may return the same object every time: its fields are read at once, frames keep their own tag', () => {
    const pool = makePool();
    const result = { headerLength: 2, payloadLength: 0, tag: 0 };
    let returned = 0;
    const reused: LengthDecoder = (bytes, start, end) => {
      if (end - start < 2) return null;
      result.tag = bytes[start];
      result.payloadLength = bytes[start + 1];
      returned++;
      return result;
    };
    const messages: Array<[number, Buffer]> = Array.from({ length: 50 }, (_, i) => [i + 1, Buffer.alloc(i % 9, i)]);
    const stream = typedStream(messages);
    for (const points of [[], [1], [3, 4, 5], [17, 90]]) {
      const frames: Frame[] = [];
      const assembler = new FrameAssembler({ pool, lengthPrefix: reused, onFrame: (frame) => frames.push(frame) });
      for (const chunk of splitAt(stream, points)) assembler.push(chunk);
      assembler.end();
      expect(frames.map((frame) => frame.tag)).toEqual(messages.map(([tag]) => tag));
      expect(frames.map((frame) => frame.length)).toEqual(messages.map(([, payload]) => payload.length));
      for (const frame of frames) frame.release();
    }
    expect(returned).toBe(200);
    expect(pool.stats().inUse).toBe(0);
  });
});

describe('a decoder that fails', () => {
  const cases: Array<[string, LengthDecoder, string]> = [
    [
      'throws',
      () => {
        throw new RangeError('bad magic');
      },
      'Malformed frame header: the length decoder threw: bad magic',
    ],
    [
      'returns a result whose payloadLength getter throws',
      () => ({
        headerLength: 1,
        get payloadLength(): number {
          throw new TypeError('no length');
        },
      }),
      "Malformed frame header: reading the length decoder's result threw: no length",
    ],
    [
      'returns a result whose tag getter throws',
      () => ({
        headerLength: 1,
        payloadLength: 0,
        get tag(): number {
          throw new Error('no tag');
        },
      }),
      "Malformed frame header: reading the length decoder's result threw: no tag",
    ],
    [
      'returns a Proxy whose every read throws',
      () =>
        new Proxy(
          {},
          {
            get() {
              throw new Error('trap');
            },
          },
        ) as FrameHeader,
      "Malformed frame header: reading the length decoder's result threw: trap",
    ],
  ];
  for (const [what, decoder, message] of cases) {
    it(`${what}: ERR_IOBUF_FRAME_INVALID with the thrown error as cause, frames before it delivered, every buffer back`, async () => {
      const pool = makePool();
      let calls = 0;
      // The first header is fine (a 2-byte header, 3 payload bytes); the second fails.
      const first: LengthDecoder = (bytes, start, end) =>
        calls++ === 0 ? (end - start < 2 ? (calls--, null) : { headerLength: 2, payloadLength: 3 }) : decoder(bytes, start, end);
      const errors: Error[] = [];
      const frames: string[] = [];
      const assembler = new FrameAssembler({
        pool,
        lengthPrefix: first,
        onFrame: (frame) => {
          frames.push(frame.data.toString());
          frame.release();
        },
        onError: (error) => errors.push(error),
      });
      assembler.push(Buffer.from('\0\0abc\x01\x02\x03'));
      expect(frames).toEqual(['abc']);
      expect(assembler.closed).toBe(true);
      const error = assembler.error as Error & { code?: string; cause?: unknown };
      expect(error).toBeInstanceOf(IobufError);
      expectCode(error, 'IobufError', 'ERR_IOBUF_FRAME_INVALID');
      expect(error.message).toBe(message);
      expect(error.cause).toBeInstanceOf(Error);
      await closeOf(assembler);
      expect(errors).toEqual([error]);
      expect(pool.stats().inUse).toBe(0);
    });
  }

  it('throws something that cannot even be shown: still ERR_IOBUF_FRAME_INVALID, with it as cause', () => {
    const pool = makePool();
    const unshowable = Object.create(null);
    const assembler = new FrameAssembler({
      pool,
      lengthPrefix: () => {
        throw unshowable;
      },
    });
    assembler.push(Buffer.from([1]));
    const error = assembler.error as Error & { code?: string; cause?: unknown };
    expectCode(error, 'IobufError', 'ERR_IOBUF_FRAME_INVALID');
    expect(error.message).toBe('Malformed frame header: the length decoder threw: a value that cannot be shown');
    expect(error.cause).toBe(unshowable);
  });

  it('returns something that is not a header, or a header with a bad tag: ERR_IOBUF_FRAME_INVALID', () => {
    const pool = makePool();
    const bad: Array<[unknown, string]> = [
      [5, 'Malformed frame header: the length decoder returned 5 (expected { headerLength, payloadLength, tag? } or null)'],
      [
        { headerLength: 1, payloadLength: 1, tag: 1.5 },
        'Malformed frame header: the length decoder returned tag 1.5 (expected an integer)',
      ],
      [
        { headerLength: 1, payloadLength: 1, tag: '1' },
        'Malformed frame header: the length decoder returned tag "1" (expected an integer)',
      ],
      [{ headerLength: 0, payloadLength: 1 }, 'Malformed frame header: the length decoder returned headerLength 0 for 3 bytes'],
      [{ headerLength: 1, payloadLength: -1 }, 'Malformed frame header: the length decoder returned payloadLength -1'],
    ];
    for (const [result, message] of bad) {
      const assembler = new FrameAssembler({ pool, lengthPrefix: () => result as FrameHeader });
      assembler.push(Buffer.from([1, 2, 3]));
      expectCode(assembler.error as Error, 'IobufError', 'ERR_IOBUF_FRAME_INVALID');
      expect(assembler.error!.message).toBe(message);
    }
    expect(pool.stats().inUse).toBe(0);
  });
});
