// Which read mode FrameAssembler.attach() gets on this runtime, proved on
// real sockets rather than assumed: 'onread' means the kernel wrote into the
// assembler's pooled memory (stats().reads counts those reads; 'data' mode
// never counts one). For an accepted socket attach() takes over reading
// through Node internals found by symbol description; the first test names
// exactly which of them this major lacks, if any. Every tested Node major
// (20, 22, 24, 26) gets 'onread' in the three socket cases; Bun, which has
// none of those internals, reads through 'data' (scripts/smoke.mjs checks it there).
import net from 'node:net';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { BufferPool, FrameAssembler, type Frame } from '../lib/index';
import { closeOf, closeServer, connect, encodeStream, listen, makePayloads, KiB } from './fixtures/frames-helpers';

const pools: BufferPool[] = [];
function makePool(): BufferPool {
  const pool = new BufferPool({ maxMemory: 32 << 20, leakDetection: 'off' });
  pools.push(pool);
  return pool;
}
afterEach(async () => {
  for (const pool of pools.splice(0)) await pool.close({ force: true });
});

// Small and large payloads: a large one (at least half the 64 KiB read
// buffer outstanding) is read straight into its frame (directReads).
const payloads = makePayloads(12, (i) => (i === 5 ? 200 * KiB : 100 + i * 3000));
const stream = encodeStream('u32be', payloads);

/** Collects every frame's bytes until the assembler ends; resolves with them once it has closed. */
function collect(assembler: FrameAssembler): Promise<Buffer[]> {
  const received: Buffer[] = [];
  assembler.on('error', () => {});
  return (async () => {
    for await (const frame of assembler as AsyncIterable<Frame>) {
      received.push(Buffer.from(frame.data));
      frame.release();
    }
    await closeOf(assembler);
    return received;
  })();
}

function expectOnread(assembler: FrameAssembler, received: Buffer[], pool: BufferPool): void {
  expect(received.map((frame) => frame.length)).toEqual(payloads.map((payload) => payload.length));
  expect(Buffer.concat(received).equals(Buffer.concat(payloads))).toBe(true);
  const stats = assembler.stats();
  expect(stats.readMode).toBe('onread');
  expect(stats.reads).toBeGreaterThan(0); // the kernel wrote into the assembler's memory
  expect(stats.directReads).toBeGreaterThan(0); // and, for the large frame, into the frame itself
  expect(pool.stats().inUse).toBe(0);
}

describe(`read modes on ${process.release.name} ${process.version}`, () => {
  it('the Node internals attach() takes over an accepted socket with are all here', async () => {
    const missing: string[] = [];
    const descriptions = Object.getOwnPropertySymbols(new net.Socket()).map((symbol) => symbol.description);
    for (const name of ['kBuffer', 'kBufferCb', 'kBufferGen']) {
      if (!descriptions.includes(name)) missing.push(`net.Socket own symbol ${name}`);
    }
    let handle: { constructor: { name: string }; useUserBuffer?: unknown } | undefined;
    const { server, port } = await listen((socket) => {
      handle = (socket as unknown as { _handle: typeof handle })._handle;
      socket.destroy();
    });
    const client = await connect(port);
    while (handle === undefined) await new Promise((resolve) => setImmediate(resolve));
    client.destroy();
    await closeServer(server);
    if (handle.constructor.name !== 'TCP') missing.push(`accepted socket's _handle is a ${handle.constructor.name}, not a TCP`);
    if (typeof handle.useUserBuffer !== 'function') missing.push('_handle.useUserBuffer()');
    expect(missing).toEqual([]);
  });

  it('(a) a client socket made with socketOptions(): onread', async () => {
    const pool = makePool();
    const { server, port } = await listen((socket) => {
      socket.resume();
      socket.end(stream);
    });
    const assembler = new FrameAssembler({ pool });
    assembler.attach(await connect(port, assembler.socketOptions()));
    const received = await collect(assembler);
    await closeServer(server);
    expectOnread(assembler, received, pool);
  });

  it('(b) an accepted server socket (pauseOnConnect): onread, by the takeover', async () => {
    const pool = makePool();
    let assembler: FrameAssembler | undefined;
    let done: Promise<Buffer[]> | undefined;
    const { server, port } = await listen((socket) => {
      assembler = new FrameAssembler({ pool }).attach(socket);
      done = collect(assembler);
    });
    (await connect(port)).end(stream);
    while (done === undefined) await new Promise((resolve) => setImmediate(resolve));
    const received = await done;
    await closeServer(server);
    expectOnread(assembler!, received, pool);
  });

  it('(c) an accepted socket that already emitted data to the application: onread for what follows', async () => {
    const pool = makePool();
    const greeting = Buffer.from('HELLO iobuf\n');
    let assembler: FrameAssembler | undefined;
    let done: Promise<Buffer[]> | undefined;
    let greeted: Buffer | undefined;
    const { server, port } = await listen((socket) => {
      socket.once('data', (chunk: Buffer) => {
        // The application read a greeting through 'data'; frames follow.
        greeted = chunk;
        socket.pause();
        assembler = new FrameAssembler({ pool }).attach(socket);
        done = collect(assembler);
        socket.write('OK\n');
      });
      socket.resume();
    });
    const client = await connect(port);
    client.write(greeting);
    await new Promise((resolve) => client.once('data', resolve)); // the reply: the server has attached
    client.end(stream);
    while (done === undefined) await new Promise((resolve) => setImmediate(resolve));
    const received = await done;
    await closeServer(server);
    expect(greeted).toEqual(greeting);
    expectOnread(assembler!, received, pool);
  });

  it("a stream that is not a net.Socket reads through 'data': the same frames, no onread reads", async () => {
    const pool = makePool();
    const duplex = new PassThrough();
    const assembler = new FrameAssembler({ pool }).attach(duplex as unknown as net.Socket);
    const done = collect(assembler);
    duplex.end(stream);
    const received = await done;
    expect(Buffer.concat(received).equals(Buffer.concat(payloads))).toBe(true);
    expect(assembler.stats()).toMatchObject({ readMode: 'data', reads: 0, directReads: 0 });
    expect(pool.stats().inUse).toBe(0);
  });

  it("a paused stream attached in 'data' mode is read too (as Bun's pauseOnConnect sockets are)", async () => {
    const pool = makePool();
    const duplex = new PassThrough();
    duplex.pause();
    duplex.end(stream);
    const assembler = new FrameAssembler({ pool }).attach(duplex as unknown as net.Socket);
    const received = await collect(assembler);
    expect(Buffer.concat(received).equals(Buffer.concat(payloads))).toBe(true);
    expect(assembler.stats().readMode).toBe('data');
    expect(pool.stats().inUse).toBe(0);
  });
});
