// The read takeover (lib/socket-takeover.ts) and its fallback. attach() reads
// an accepted TCP socket through Node's onread fields when the runtime has
// them, else through 'data' events; the fallback must behave the same: the
// same frames, the same errors, the same waiting for memory, every buffer back.
// A runtime without the fields (Bun, a future Node) is stood in for by an
// accepted socket whose fields were deleted before attach().
import type net from 'node:net';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { FrameAssembler } from '../lib/index';
import type { BufferPool, FrameAssemblerOptions } from '../lib/index';
import { readsThrough, takeOverReads } from '../lib/frames/socket-takeover';
import { usePools } from './fixtures/pool-helpers';
import {
  KiB,
  MiB,
  closeOf,
  closeServer,
  connect,
  encodeLength,
  encodeStream,
  listen,
  makePayloads,
  prng,
  writeInPieces,
} from './fixtures/frames-helpers';

const pools = usePools();

/** Removes the per-socket fields net's `onread` option uses, as a runtime without them would have. */
function withoutOnreadFields(socket: net.Socket): net.Socket {
  for (const symbol of Object.getOwnPropertySymbols(socket)) {
    if (['kBuffer', 'kBufferCb', 'kBufferGen'].includes(symbol.description ?? ''))
      delete (socket as unknown as Record<symbol, unknown>)[symbol];
  }
  return socket;
}

interface Run {
  frames: Buffer[];
  error: string | null;
  readMode: string | null;
  inUseAfter: number;
}

/** One connection: `send` writes to the client socket; the server side attaches an assembler (fields deleted first when `fallback`). */
async function run(
  pool: BufferPool,
  fallback: boolean,
  send: (client: net.Socket) => Promise<void>,
  options: Partial<FrameAssemblerOptions> = {},
  hold = 0,
): Promise<Run> {
  const frames: Buffer[] = [];
  let assembler!: FrameAssembler;
  let closed!: Promise<void>;
  const held: Array<{ release(): void }> = [];
  const { server, port } = await listen((socket) => {
    assembler = new FrameAssembler({
      pool,
      ...options,
      onFrame: (frame) => {
        frames.push(Buffer.from(frame.data));
        held.push(frame);
        // Hold `hold` frames at a time, released a little later: memory runs short meanwhile.
        if (held.length > hold)
          setImmediate(() => {
            for (const h of held.splice(0)) h.release();
          });
      },
    }).attach(fallback ? withoutOnreadFields(socket) : socket);
    closed = closeOf(assembler);
  });
  const client = await connect(port);
  client.on('error', () => {});
  await send(client);
  while (closed === undefined) await new Promise((resolve) => setImmediate(resolve));
  await closed;
  for (const h of held.splice(0)) h.release();
  await closeServer(server);
  return {
    frames,
    error: (assembler.error as { code?: string } | null)?.code ?? null,
    readMode: assembler.stats().readMode,
    inUseAfter: pool.stats().inUse,
  };
}

describe('takeOverReads()', () => {
  it('takes over an accepted TCP socket; refuses (changing nothing) without the fields, for other streams, and for a socket with an onread of its own', async () => {
    const target = { buffer: () => Buffer.alloc(1024), callback: () => true };
    const accepted: net.Socket[] = [];
    const { server, port } = await listen((socket) => accepted.push(socket));
    const clients = [await connect(port), await connect(port), await connect(port)];
    while (accepted.length < 3) await new Promise((resolve) => setImmediate(resolve));
    expect(takeOverReads(accepted[0], target, () => {})).toBe(true);
    expect(readsThrough(accepted[0], target.callback)).toBe(true);
    expect(takeOverReads(accepted[0], target, () => {})).toBe(false); // reads through an onread already
    expect(takeOverReads(withoutOnreadFields(accepted[1]), target, () => {})).toBe(false);
    expect(readsThrough(accepted[1], target.callback)).toBe(false);
    expect(takeOverReads(new PassThrough() as unknown as net.Socket, target, () => {})).toBe(false);
    // Bytes Node read already go to takeBuffered first.
    clients[2].write('early');
    while (accepted[2].readableLength === 0) {
      accepted[2].resume();
      accepted[2].pause();
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const early: string[] = [];
    expect(takeOverReads(accepted[2], target, (chunk) => early.push(chunk.toString()))).toBe(true);
    expect(early.join('')).toBe('early');
    for (const socket of [...accepted, ...clients]) socket.destroy();
    await closeServer(server);
  });
});

describe('attach() without the onread fields reads through data events, with the same behaviour', () => {
  it('the same frames across random write boundaries', async () => {
    const pool = pools({ maxMemory: 64 * MiB });
    const random = prng(5);
    const payloads = makePayloads(300, () => (random() < 0.05 ? 0 : Math.floor(random() ** 3 * 100 * KiB)));
    const stream = encodeStream('u32be', payloads);
    const sizes = Array.from({ length: 2000 }, () => 1 + Math.floor(random() ** 2 * 30 * KiB));
    const send = async (client: net.Socket) => {
      await writeInPieces(client, stream, sizes);
      client.end();
    };
    const [onread, data] = [await run(pool, false, send), await run(pool, true, send)];
    expect([onread.readMode, data.readMode]).toEqual(['onread', 'data']);
    for (const result of [onread, data]) {
      expect(result.error).toBe(null);
      expect(result.frames.length).toBe(payloads.length);
      expect(Buffer.concat(result.frames).equals(Buffer.concat(payloads))).toBe(true);
      expect(result.inUseAfter).toBe(0);
    }
  });

  it('the same errors: a frame above maxFrameSize, a stream ending inside a frame', async () => {
    const pool = pools({ maxMemory: 64 * MiB });
    const good = makePayloads(3, (i) => 100 * (i + 1));
    const tooLarge = async (client: net.Socket) => {
      client.write(Buffer.concat([encodeStream('u32be', good), encodeLength('u32be', 5000)]));
    };
    const truncated = async (client: net.Socket) => {
      client.end(Buffer.concat([encodeStream('u32be', good), encodeLength('u32be', 5000), Buffer.alloc(10)]));
    };
    for (const [send, code] of [
      [tooLarge, 'ERR_IOBUF_FRAME_TOO_LARGE'],
      [truncated, 'ERR_IOBUF_FRAME_TRUNCATED'],
    ] as const) {
      for (const fallback of [false, true]) {
        const result = await run(pool, fallback, send, { maxFrameSize: 4 * KiB * (code === 'ERR_IOBUF_FRAME_TRUNCATED' ? 4 : 1) });
        expect(result.error, `${code}, fallback ${fallback}`).toBe(code);
        expect(result.frames.map((frame) => frame.length)).toEqual([100, 200, 300]);
        expect(result.inUseAfter).toBe(0);
      }
    }
  });

  it('the same waiting for memory: a pool too small for the frames in flight makes both wait, not fail', async () => {
    // 1 MiB budget, 200 KiB frames held two at a time: the third waits for the pool.
    const pool = pools({ maxMemory: 1 * MiB });
    const payloads = makePayloads(24, () => 200 * KiB);
    const send = async (client: net.Socket) => {
      client.end(encodeStream('u32be', payloads));
    };
    for (const fallback of [false, true]) {
      const waitsBefore = pool.stats().waits;
      const result = await run(pool, fallback, send, { readBufferSize: 16 * KiB }, 2);
      expect(result.error).toBe(null);
      expect(result.frames.length).toBe(payloads.length);
      expect(Buffer.concat(result.frames).equals(Buffer.concat(payloads))).toBe(true);
      expect(pool.stats().waits - waitsBefore, `fallback ${fallback}`).toBeGreaterThan(0);
      expect(result.inUseAfter).toBe(0);
    }
  });
});
