// FrameAssembler bad input and misuse: exact codes, the connection destroyed,
// every pooled buffer back (pool inUse 0), and no error ever thrown from a
// socket callback.
import type net from 'node:net';
import { describe, expect, it } from 'vitest';
import { type BufferPool, FrameAssembler, IobufError } from '../lib/index';
import type { Frame, FrameAssemblerOptions, LengthPrefix } from '../lib/index';
import { expectCode, rejection, thrown, usePools } from './fixtures/pool-helpers';
import { KiB, MiB, closeOf, closeServer, connect, encodeLength, encodeStream, listen, makePayloads } from './fixtures/frames-helpers';

const pools = usePools();
const makePool = (maxMemory = 64 * MiB) => pools({ maxMemory });

interface Outcome {
  frames: Buffer[];
  error: (Error & { code?: string }) | null;
  /** Whether the server side destroyed the connection (the client saw it close without ending it). */
  clientClosed: boolean;
  assembler: FrameAssembler;
}

/**
 * Sends `bytes` from a real client to a server-side assembler (onFrame) and
 * waits until the assembler has closed and the client socket too.
 */
async function serve(pool: BufferPool, bytes: Buffer, options: Partial<FrameAssemblerOptions> = {}, endClient = true): Promise<Outcome> {
  const frames: Buffer[] = [];
  let assembler!: FrameAssembler;
  let closed!: Promise<unknown>;
  const { server, port } = await listen((socket) => {
    assembler = new FrameAssembler({
      pool,
      ...options,
      onFrame: (frame) => {
        frames.push(Buffer.from(frame.data));
        frame.release();
      },
    }).attach(socket);
    closed = closeOf(assembler);
  });
  const client = await connect(port);
  client.on('error', () => {}); // a reset from the server is expected in some cases
  const clientClose = closeOf(client);
  client.write(bytes);
  if (endClient) client.end();
  await clientClose.catch(() => {});
  while (closed === undefined) await new Promise((resolve) => setImmediate(resolve));
  await closed;
  await closeServer(server);
  return { frames, error: assembler.error as Outcome['error'], clientClosed: true, assembler };
}

describe('FrameAssembler bad input', () => {
  it('a length above maxFrameSize: ERR_IOBUF_FRAME_TOO_LARGE, connection destroyed, frames before it delivered, every buffer back', async () => {
    const pool = makePool();
    const good = makePayloads(3, (i) => 1000 * (i + 1));
    const bytes = Buffer.concat([encodeStream('u32be', good), encodeLength('u32be', 64 * KiB + 1), Buffer.alloc(100)]);
    const outcome = await serve(pool, bytes, { maxFrameSize: 64 * KiB }, false);
    expect(outcome.frames.map((f) => f.length)).toEqual([1000, 2000, 3000]);
    expect(outcome.error).toBeInstanceOf(IobufError);
    expectCode(outcome.error!, 'IobufError', 'ERR_IOBUF_FRAME_TOO_LARGE');
    expect(outcome.error!.message).toBe('A frame of 65537 bytes is larger than maxFrameSize (65536)');
    expect(outcome.assembler.closed).toBe(true);
    expect(pool.stats().inUse).toBe(0);
  });

  it('EOF inside a payload: ERR_IOBUF_FRAME_TRUNCATED and the partial frame buffer released', async () => {
    const pool = makePool();
    const bytes = Buffer.concat([
      encodeStream('u32be', [Buffer.from('whole')]),
      encodeLength('u32be', 300 * KiB),
      Buffer.alloc(100 * KiB, 1),
    ]);
    const outcome = await serve(pool, bytes);
    expect(outcome.frames.map((f) => f.toString())).toEqual(['whole']);
    expectCode(outcome.error!, 'IobufError', 'ERR_IOBUF_FRAME_TRUNCATED');
    expect(outcome.error!.message).toBe(`The stream ended inside a frame: ${100 * KiB} of its ${300 * KiB} payload bytes arrived`);
    expect(pool.stats().inUse).toBe(0);
  });

  it('EOF inside a header: ERR_IOBUF_FRAME_TRUNCATED', async () => {
    const pool = makePool();
    const outcome = await serve(pool, Buffer.concat([encodeStream('u32be', [Buffer.alloc(10)]), Buffer.from([0, 0])]));
    expect(outcome.frames.length).toBe(1);
    expectCode(outcome.error!, 'IobufError', 'ERR_IOBUF_FRAME_TRUNCATED');
    expect(outcome.error!.message).toBe('The stream ended inside a frame header (2 bytes of it arrived)');
    expect(pool.stats().inUse).toBe(0);
  });

  it('a varint running past 5 bytes, or above 2^32 - 1: ERR_IOBUF_FRAME_INVALID', async () => {
    const pool = makePool();
    const cases: Array<[Buffer, string]> = [
      [Buffer.from([0x80, 0x80, 0x80, 0x80, 0x80, 0x01]), 'Malformed frame header: the varint length runs past 5 bytes'],
      [Buffer.from([0xff, 0xff, 0xff, 0xff, 0x1f]), 'Malformed frame header: the varint length is above 2^32 - 1'],
    ];
    for (const [header, message] of cases) {
      const outcome = await serve(
        pool,
        Buffer.concat([encodeStream('varint', [Buffer.from('ok')]), header, Buffer.alloc(10)]),
        { lengthPrefix: 'varint' },
        false,
      );
      expect(outcome.frames.map((f) => f.toString())).toEqual(['ok']);
      expectCode(outcome.error!, 'IobufError', 'ERR_IOBUF_FRAME_INVALID');
      expect(outcome.error!.message).toBe(message);
      expect(pool.stats().inUse).toBe(0);
    }
  });

  it('a custom decoder that throws, or returns a header it does not have: ERR_IOBUF_FRAME_INVALID (with the cause)', async () => {
    const pool = makePool();
    const cause = new Error('bad magic');
    const throwing = (bytes: Buffer) => {
      if (bytes[0] !== 0xab) throw cause;
      return bytes.length < 2 ? null : { headerLength: 2, payloadLength: bytes[1] };
    };
    const outcome = await serve(pool, Buffer.from([0xab, 1, 9, 0xcd, 0]), { lengthPrefix: throwing }, false);
    expect(outcome.frames.map((f) => [...f])).toEqual([[9]]);
    expectCode(outcome.error!, 'IobufError', 'ERR_IOBUF_FRAME_INVALID');
    expect(outcome.error!.message).toBe('Malformed frame header: the length decoder threw: bad magic');
    expect((outcome.error as Error & { cause?: unknown }).cause).toBe(cause);

    const lying = () => ({ headerLength: 100, payloadLength: 1 });
    const second = await serve(pool, Buffer.from([1, 2, 3]), { lengthPrefix: lying }, false);
    expectCode(second.error!, 'IobufError', 'ERR_IOBUF_FRAME_INVALID');
    expect(second.error!.message).toBe('Malformed frame header: the length decoder returned headerLength 100 for 3 bytes');
    expect(pool.stats().inUse).toBe(0);
  });

  it('zero-length frames are valid, for every prefix', async () => {
    const pool = makePool();
    for (const prefix of ['u8', 'u16be', 'u16le', 'u32be', 'u32le', 'varint'] as LengthPrefix[]) {
      const payloads = [Buffer.alloc(0), Buffer.from('x'), Buffer.alloc(0), Buffer.alloc(0)];
      const outcome = await serve(pool, encodeStream(prefix, payloads), { lengthPrefix: prefix });
      expect(outcome.error, prefix).toBe(null);
      expect(
        outcome.frames.map((f) => f.toString()),
        prefix,
      ).toEqual(['', 'x', '', '']);
    }
    expect(pool.stats().inUse).toBe(0);
  });
});

describe('FrameAssembler error delivery', () => {
  const tooLarge = () => Buffer.concat([encodeStream('u32be', [Buffer.from('a'), Buffer.from('b')]), encodeLength('u32be', 1000)]);

  it('rejects the async iterator with the error, after the frames it handed out; queued frames go back to the pool', async () => {
    const pool = makePool();
    const assembler = new FrameAssembler({ pool, maxFrameSize: 100 });
    assembler.push(tooLarge());
    expect(assembler.closed).toBe(true);
    expect(pool.stats().inUse).toBe(0); // 'a' and 'b' were queued, never handed out: released
    const iterator = assembler[Symbol.asyncIterator]();
    const error = await rejection(iterator.next());
    expectCode(error, 'IobufError', 'ERR_IOBUF_FRAME_TOO_LARGE');
    expect(await iterator.next()).toEqual({ value: undefined, done: true });
  });

  it('a pending next() rejects when the error comes', async () => {
    const pool = makePool();
    const assembler = new FrameAssembler({ pool, maxFrameSize: 100 });
    const iterator = assembler[Symbol.asyncIterator]();
    const pending = iterator.next();
    assembler.push(encodeLength('u32be', 101));
    expectCode(await rejection(pending), 'IobufError', 'ERR_IOBUF_FRAME_TOO_LARGE');
  });

  it('reports to onError and to error listeners, on a later tick, never by throwing', async () => {
    const pool = makePool();
    const seen: string[] = [];
    const assembler = new FrameAssembler({
      pool,
      maxFrameSize: 100,
      onFrame: (frame) => frame.release(),
      onError: (error) => seen.push(`onError ${(error as IobufError).code}`),
    });
    assembler.on('error', (error) => seen.push(`event ${(error as IobufError).code}`));
    expect(assembler.push(tooLarge())).toBe(false);
    expect(seen).toEqual([]);
    await closeOf(assembler);
    expect(seen).toEqual(['onError ERR_IOBUF_FRAME_TOO_LARGE', 'event ERR_IOBUF_FRAME_TOO_LARGE']);
  });

  it('with nobody listening, an error on a socket is kept in assembler.error and nothing is thrown', async () => {
    const pool = makePool();
    const uncaught: unknown[] = [];
    const onUncaught = (error: unknown) => uncaught.push(error);
    process.on('uncaughtException', onUncaught);
    try {
      let assembler!: FrameAssembler;
      const { server, port } = await listen((socket) => {
        assembler = new FrameAssembler({ pool, maxFrameSize: 10 }).attach(socket);
      });
      const client = await connect(port);
      client.on('error', () => {});
      client.write(encodeLength('u32be', 11));
      await closeOf(client);
      await closeOf(assembler);
      await closeServer(server);
      expectCode(assembler.error!, 'IobufError', 'ERR_IOBUF_FRAME_TOO_LARGE');
    } finally {
      process.off('uncaughtException', onUncaught);
    }
    expect(uncaught).toEqual([]);
    expect(pool.stats().inUse).toBe(0);
  });

  it("an onFrame that throws destroys the assembler with that error (the frame stays the consumer's)", async () => {
    const pool = makePool();
    const failure = new Error('consumer failed');
    let held: Frame | null = null;
    const errors: Error[] = [];
    const assembler = new FrameAssembler({
      pool,
      onFrame: (frame) => {
        held = frame;
        throw failure;
      },
      onError: (error) => errors.push(error),
    });
    assembler.push(encodeStream('u32be', [Buffer.alloc(50), Buffer.alloc(60)]));
    expect(assembler.closed).toBe(true);
    expect(assembler.error).toBe(failure);
    expect(pool.stats().inUse).toBe(1);
    held!.release();
    expect(pool.stats().inUse).toBe(0);
    await closeOf(assembler);
    expect(errors).toEqual([failure]);
  });

  it('leaving for-await early destroys the assembler and the connection; queued frames go back', async () => {
    const pool = makePool();
    const payloads = makePayloads(100, () => 2000);
    let assembler!: FrameAssembler;
    let first: Buffer | null = null;
    let done!: Promise<void>;
    const { server, port } = await listen((socket) => {
      assembler = new FrameAssembler({ pool }).attach(socket);
      done = (async () => {
        for await (const frame of assembler) {
          first = Buffer.from(frame.data);
          frame.release();
          // let the rest arrive and queue up before leaving
          while (assembler.stats().frames < payloads.length) await new Promise((resolve) => setImmediate(resolve));
          break;
        }
      })();
    });
    const client = await connect(port);
    client.on('error', () => {});
    client.write(encodeStream('u32be', payloads));
    await closeOf(client);
    await done;
    await closeOf(assembler);
    await closeServer(server);
    expect(first!.equals(payloads[0])).toBe(true);
    expect(assembler.error).toBe(null);
    expect(pool.stats().inUse).toBe(0);
  });
});

describe('FrameAssembler arguments', () => {
  it('checks its options with exact codes and messages', () => {
    const pool = makePool(8 * MiB);
    const make = (options: unknown) => () => new FrameAssembler(options as FrameAssemblerOptions);
    let error = thrown(make({}));
    expectCode(error, 'TypeError', 'ERR_INVALID_ARG_TYPE');
    expect(error.message).toBe('Expected a BufferPool for options.pool but received undefined');
    error = thrown(make({ pool, lengthPrefix: 'u24' }));
    expectCode(error, 'TypeError', 'ERR_INVALID_ARG_VALUE');
    expect(error.message).toBe(
      "Expected one of 'u8', 'u16be', 'u16le', 'u32be', 'u32le', 'varint' or a function for options.lengthPrefix but received \"u24\"",
    );
    error = thrown(make({ pool, maxFrameSize: 8 * MiB + 1 }));
    expectCode(error, 'RangeError', 'ERR_OUT_OF_RANGE');
    expect(error.message).toBe(`Expected an integer from 0 to ${8 * MiB} for options.maxFrameSize but received ${8 * MiB + 1}`);
    expectCode(thrown(make({ pool, highWaterMark: -1 })), 'RangeError', 'ERR_OUT_OF_RANGE');
    expectCode(thrown(make({ pool, readBufferSize: 100 })), 'RangeError', 'ERR_OUT_OF_RANGE');
    expectCode(thrown(make({ pool, onFrame: 'no' })), 'TypeError', 'ERR_INVALID_ARG_TYPE');
    const assembler = new FrameAssembler({ pool });
    expectCode(
      thrown(() => assembler.push('text' as unknown as Buffer)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    expectCode(
      thrown(() => assembler.attach(null as unknown as net.Socket)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    expect(new FrameAssembler({ pool }).maxFrameSize).toBe(2 * MiB); // default: 16 MiB, at most a quarter of the budget
  });

  it('after destroy, push() returns false and takes nothing', () => {
    const pool = makePool();
    const assembler = new FrameAssembler({ pool });
    assembler.destroy();
    expect(assembler.push(encodeStream('u32be', [Buffer.alloc(10)]))).toBe(false);
    expect(assembler.stats().frames).toBe(0);
    expect(pool.stats().inUse).toBe(0);
  });
});
