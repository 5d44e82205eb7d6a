// Gatherer.writeTo over real loopback TCP: the receiver gets exactly the
// bytes, pooled memory is released only once the write completed, socket
// backpressure is honoured, and a peer that resets mid-write leaves nothing
// leaked (every pooled byte back in the pool, the promise rejected). The
// direct path (one writev(2) on the descriptor during the call) is checked
// whole, split with the stream, behind what is queued, and failing.
import { once } from 'node:events';
import type net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { BufferPool } from '../lib/pool';
import { Gatherer } from '../lib/gather';
import { expectCode, rejection, settled } from './fixtures/pool-helpers';
import { pattern, readBytes, socketPair } from './fixtures/gather-helpers';
import { NEEDS, itNative } from './helpers/portable';

const MiB = 1 << 20;
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

// poison: a buffer released too early (while the kernel may still read it)
// would be filled with 0xA5 and the receiver would see it.
function makePool(): BufferPool {
  const pool = new BufferPool({ maxMemory: 64 * MiB, leakDetection: 'off', poison: true });
  cleanups.push(() => pool.close({ force: true }));
  return pool;
}

async function connected() {
  const pair = await socketPair();
  cleanups.push(() => pair.close());
  return pair;
}

/** The seed case: a ~300-byte header (length prefix patched at the end) and a 500 KB blob by reference. */
function seedMessage(gatherer: Gatherer, blob: Buffer): Buffer {
  const at = gatherer.reserve(4);
  gatherer.putU16BE(200).putU32BE(blob.length).putU64BE(0x0102030405060708n);
  gatherer.putString(`content-type: application/octet-stream\r\nx-request-id: ${'7'.repeat(200)}\r\n`);
  gatherer.putF64LE(Math.PI);
  gatherer.putBytes(blob);
  gatherer.patchU32BE(at, gatherer.byteLength - 4);

  const header = Buffer.alloc(4 + 2 + 4 + 8);
  header.writeUInt32BE(gatherer.byteLength - 4, 0);
  header.writeUInt16BE(200, 4);
  header.writeUInt32BE(blob.length, 6);
  header.writeBigUInt64BE(0x0102030405060708n, 10);
  const text = Buffer.from(`content-type: application/octet-stream\r\nx-request-id: ${'7'.repeat(200)}\r\n`);
  const pi = Buffer.alloc(8);
  pi.writeDoubleLE(Math.PI);
  return Buffer.concat([header, text, pi, blob]);
}

describe('Gatherer.writeTo(socket)', () => {
  it('sends the seed case (300-byte header + 500 KB blob) and the receiver gets exactly those bytes', async () => {
    const pool = makePool();
    const { client, server } = await connected();
    const blob = pattern(500_000, 7);
    const gatherer = new Gatherer({ pool });
    const expected = seedMessage(gatherer, blob);
    expect(gatherer.byteLength).toBe(expected.length);
    expect(expected.length - blob.length).toBeGreaterThan(280);
    expect(gatherer.segments()).toHaveLength(2);

    const received = readBytes(server, expected.length);
    await gatherer.writeTo(client);
    expect((await received).equals(expected)).toBe(true);
    expect(pool.stats().inUse).toBe(0);
    expect(gatherer.byteLength).toBe(0);
  });

  it('sends many messages back to back, each gatherer reset and reused, with owned buffers released after each write', async () => {
    const pool = makePool();
    const { client, server } = await connected();
    const gatherer = new Gatherer({ pool });
    const expected: Buffer[] = [];
    let total = 0;
    for (let i = 0; i < 20; i++) total += 8 + 1000 * i + 3000;
    const received = readBytes(server, total);
    for (let i = 0; i < 20; i++) {
      const owned = pool.tryAcquire(3000)!;
      owned.fill(i);
      const blob = pattern(1000 * i, i);
      gatherer.reset().putU32BE(i).putU32LE(blob.length).putBytes(blob).putOwned(owned);
      expected.push(
        Buffer.concat([Buffer.from([0, 0, 0, i, blob.length & 0xff, (blob.length >> 8) & 0xff, 0, 0]), blob, Buffer.alloc(3000, i)]),
      );
      await gatherer.writeTo(client);
      expect(pool.stats().inUse).toBe(0);
    }
    expect((await received).equals(Buffer.concat(expected))).toBe(true);
  });

  it('keeps scratch and owned buffers out of the pool while the kernel may still read them', async () => {
    const pool = makePool();
    const { client, server } = await connected();
    // More than the socket buffers hold while nobody reads: the write stays pending.
    const blob = pattern(32 * MiB, 3);
    const owned = pool.tryAcquire(64 * 1024)!;
    owned.fill(0x42);
    const gatherer = new Gatherer({ pool });
    gatherer.putU32BE(1).putBytes(blob).putOwned(owned).putU32BE(2);
    // One scratch chunk (both u32s: the second continues it after the blobs) and the owned buffer.
    const inUse = pool.stats().inUse;
    expect(inUse).toBe(2);

    const write = gatherer.writeTo(client);
    expect(await settled(write)).toBe(false);
    expect(gatherer.writing).toBe(true);
    expect(pool.stats().inUse).toBe(inUse);
    expect(client.writableLength).toBeGreaterThan(0);

    const expected = Buffer.concat([Buffer.from([0, 0, 0, 1]), blob, Buffer.alloc(64 * 1024, 0x42), Buffer.from([0, 0, 0, 2])]);
    const received = readBytes(server, expected.length);
    await write;
    expect(pool.stats().inUse).toBe(0);
    expect((await received).equals(expected)).toBe(true);
  });

  it('rejects a put, a patch, compact and reset while the write is in progress (ERR_IOBUF_GATHERER_BUSY), and puts after it (ERR_IOBUF_GATHERER_SPENT)', async () => {
    const pool = makePool();
    const { client, server } = await connected();
    const gatherer = new Gatherer({ pool });
    const at = gatherer.reserve(4);
    gatherer.putBytes(pattern(16 * MiB, 1));
    const write = gatherer.writeTo(client);
    for (const attempt of [
      () => gatherer.putU8(1),
      () => gatherer.putU32BE(1),
      () => gatherer.putF64BE(1),
      () => gatherer.putU64LE(1n),
      () => gatherer.putString('x'),
      () => gatherer.putSlice(Buffer.from('x')),
      () => gatherer.putBytes(Buffer.from('x')),
      () => gatherer.reserve(2),
      () => gatherer.patchU32BE(at, 1),
      () => gatherer.compact(100),
      () => gatherer.reset(),
      () => gatherer.putGatherer(new Gatherer({ pool })),
    ]) {
      let error: any;
      try {
        attempt();
      } catch (caught) {
        error = caught;
      }
      expectCode(error, 'IobufError', 'ERR_IOBUF_GATHERER_BUSY');
    }
    expectCode(await rejection(gatherer.writeTo(client)), 'IobufError', 'ERR_IOBUF_GATHERER_BUSY');

    const received = readBytes(server, 4 + 16 * MiB);
    await write;
    await received;
    let error: any;
    try {
      gatherer.putU8(1);
    } catch (caught) {
      error = caught;
    }
    expectCode(error, 'IobufError', 'ERR_IOBUF_GATHERER_SPENT');
    expectCode(await rejection(gatherer.writeTo(client)), 'IobufError', 'ERR_IOBUF_GATHERER_SPENT');
    gatherer.reset().putU8(9);
    expect(gatherer.byteLength).toBe(1);
    gatherer.reset();
    expect(pool.stats().inUse).toBe(0);
  });

  it('a peer that resets mid-write: the promise rejects with the socket error and every pooled buffer is back', async () => {
    const pool = makePool();
    const { client, server } = await connected();
    const owned = pool.tryAcquire(1 * MiB)!;
    const gatherer = new Gatherer({ pool });
    gatherer
      .putU32BE(7)
      .putString('header')
      .putBytes(pattern(32 * MiB, 9))
      .putOwned(owned)
      .putU8(1);
    expect(pool.stats().inUse).toBe(2); // one scratch chunk and the owned buffer

    const write = gatherer.writeTo(client);
    expect(await settled(write)).toBe(false);
    // The peer reads a little, then resets the connection (RST).
    server.resume();
    await once(server, 'data');
    server.resetAndDestroy();
    const error = await rejection(write);
    expect(['ECONNRESET', 'EPIPE']).toContain(error.code);
    expect(client.destroyed).toBe(true);
    expect(pool.stats().inUse).toBe(0);
    expect(gatherer.writing).toBe(false);
    expectCode(await rejection(gatherer.writeTo(client)), 'IobufError', 'ERR_IOBUF_GATHERER_SPENT');
    // The pool can close without force: nothing is out.
    await pool.close({ timeout: 1000 });
  });

  it('a socket destroyed by the application mid-write: rejects, releases after close', async () => {
    const pool = makePool();
    const { client } = await connected();
    const gatherer = new Gatherer({ pool });
    gatherer
      .putU32BE(1)
      .putBytes(pattern(32 * MiB, 2))
      .putU32BE(2);
    const write = gatherer.writeTo(client);
    expect(await settled(write)).toBe(false);
    client.destroy();
    const error = await rejection(write);
    expectCode(error, 'IobufError', 'ERR_IOBUF_SOCKET_CLOSED');
    expect(pool.stats().inUse).toBe(0);
  });

  it('a socket destroyed before writeTo: rejects at once and releases', async () => {
    const pool = makePool();
    const { client } = await connected();
    client.destroy();
    const gatherer = new Gatherer({ pool });
    gatherer.putU32BE(1);
    expectCode(await rejection(gatherer.writeTo(client)), 'IobufError', 'ERR_IOBUF_SOCKET_CLOSED');
    expect(pool.stats().inUse).toBe(0);
  });

  it('waits for drain before writing when the socket already needs one', async () => {
    const pool = makePool();
    const { client, server } = await connected();
    // Fill the socket until write() says to wait, with more than the kernel's
    // buffers can take while nobody reads (so 'drain' cannot come early).
    const filler = Buffer.alloc(64 * MiB, 0x11);
    let queued = 0;
    while (client.write(filler)) queued += filler.length;
    queued += filler.length;
    expect(client.writableNeedDrain).toBe(true);

    const gatherer = new Gatherer({ pool });
    gatherer.putString('after-drain');
    const pending = client.writableLength;
    const write = gatherer.writeTo(client);
    expect(await settled(write)).toBe(false);
    // Nothing of the message was handed to the socket yet (nobody reads, so nothing drained either).
    expect(client.writableLength).toBeLessThanOrEqual(pending);
    expect(pool.stats().inUse).toBe(1);

    const received = readBytes(server, queued + 11);
    await write;
    const all = await received;
    expect(all.subarray(queued).toString()).toBe('after-drain');
    expect(pool.stats().inUse).toBe(0);
  });

  itNative(NEEDS.writev)(
    'pipelined: 30 gatherers written without waiting arrive in order, on one shared listener per event, all released',
    async () => {
      const pool = makePool();
      const { client, server } = await connected();
      const warnings: Error[] = [];
      const onWarning = (warning: Error) => warnings.push(warning);
      process.on('warning', onWarning);
      const count = () => ['error', 'close', 'drain'].map((event) => client.listenerCount(event));
      const listeners = count();
      const expected: Buffer[] = [];
      const writes: Promise<void>[] = [];
      // 30 MB to a peer that reads nothing yet: more than the kernel's socket buffers
      // take, so most writes are pending (the first ones may go directly, with no listener).
      for (let i = 0; i < 30; i++) {
        const blob = pattern(1_000_000 + i, i);
        const gatherer = new Gatherer({ pool });
        gatherer.putU32BE(i).putBytes(blob);
        expected.push(Buffer.from([0, 0, 0, i]), blob);
        writes.push(gatherer.writeTo(client));
      }
      expect(client.writableLength).toBeGreaterThan(0);
      // Each listener once, however many writes are pending.
      expect(count()).toEqual(listeners.map((n) => n + 1));
      const all = Buffer.concat(expected);
      const received = readBytes(server, all.length);
      await Promise.all(writes);
      expect((await received).equals(all)).toBe(true);
      expect(pool.stats().inUse).toBe(0);
      expect(count()).toEqual(listeners);
      await new Promise((resolve) => setImmediate(resolve));
      process.off('warning', onWarning);
      expect(warnings.map((w) => w.name)).toEqual([]);
    },
  );

  it('pipelined writes and a peer reset: every write not completed before it rejects, every pooled buffer is back', async () => {
    const pool = makePool();
    const { client, server } = await connected();
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 10; i++) {
      const gatherer = new Gatherer({ pool });
      gatherer
        .putU32BE(i)
        .putBytes(pattern(4 * MiB, i))
        .putOwned(pool.tryAcquire(8192)!);
      writes.push(gatherer.writeTo(client));
    }
    expect(pool.stats().inUse).toBe(20);
    server.resume();
    await once(server, 'data');
    server.resetAndDestroy();
    const outcomes = await Promise.allSettled(writes);
    // The first messages may have gone wholly into the kernel's socket
    // buffers (a few MiB on loopback) before the reset, and so completed
    // (seen under load); every write from the first unfinished one on rejects
    // with the reset. 40 MiB cannot all be in those buffers.
    const completed = outcomes.findIndex((o) => o.status === 'rejected');
    expect(completed).toBeGreaterThanOrEqual(0);
    for (const outcome of outcomes.slice(completed)) {
      expect(outcome.status).toBe('rejected');
      expect(['ECONNRESET', 'EPIPE']).toContain((outcome as PromiseRejectedResult).reason.code);
    }
    expect(pool.stats().inUse).toBe(0);
  });

  it('an empty gatherer resolves without writing', async () => {
    const pool = makePool();
    const { client } = await connected();
    const gatherer = new Gatherer({ pool });
    await gatherer.writeTo(client);
    expect(client.bytesWritten).toBe(0);
    expect(client.writableLength).toBe(0);
  });

  it('rejects a non-socket with ERR_INVALID_ARG_TYPE and stays usable', async () => {
    const pool = makePool();
    const gatherer = new Gatherer({ pool });
    gatherer.putU8(1);
    expectCode(await rejection(gatherer.writeTo({} as any)), 'TypeError', 'ERR_INVALID_ARG_TYPE');
    gatherer.putU8(2);
    expect(gatherer.byteLength).toBe(2);
    gatherer.reset();
  });
});

describe('Gatherer.writeTo(socket): the direct path', () => {
  const listeners = (socket: net.Socket) => ['error', 'close', 'drain'].map((event) => socket.listenerCount(event));

  itNative(NEEDS.writev)(
    'a message the kernel takes whole leaves during the call: settled and released before the promise is returned, no listener attached, socket.bytesWritten counts it',
    async () => {
      const pool = makePool();
      const { client, server } = await connected();
      const before = listeners(client);
      const owned = pool.tryAcquire(3000)!.fill(0x42);
      const blob = pattern(10_000, 4);
      const gatherer = new Gatherer({ pool }).putU32BE(7).putBytes(blob).putOwned(owned).putStringNul('end');
      const expected = Buffer.concat([Buffer.from([0, 0, 0, 7]), blob, Buffer.alloc(3000, 0x42), Buffer.from('end\0')]);
      const write = gatherer.writeTo(client);
      expect(gatherer.writing).toBe(false);
      expect(pool.stats().inUse).toBe(0);
      expect(listeners(client)).toEqual(before);
      expect(client.writableLength).toBe(0);
      expect(client.bytesWritten).toBe(expected.length);
      await write;
      expect((await readBytes(server, expected.length)).equals(expected)).toBe(true);
      // Node's own writes count on top, and the count outlives the handle.
      client.end('!');
      await once(client, 'close');
      expect(client.bytesWritten).toBe(expected.length + 1);
    },
  );

  itNative(NEEDS.writev)(
    'more than the kernel takes: the rest goes through the stream, in order, byte-exact, and each byte is counted once',
    async () => {
      const pool = makePool();
      const { client, server } = await connected();
      const owned = pool.tryAcquire(MiB)!.fill(0x24);
      const blob = pattern(16 * MiB, 5);
      const gatherer = new Gatherer({ pool }).putString('head').putBytes(blob).putOwned(owned).putU8(9);
      const expected = Buffer.concat([Buffer.from('head'), blob, Buffer.alloc(MiB, 0x24), Buffer.from([9])]);
      const write = gatherer.writeTo(client);
      expect(gatherer.writing).toBe(true);
      // The kernel took a part (a fresh socket has room), the stream holds the rest.
      expect(client.writableLength).toBeGreaterThan(0);
      expect(client.writableLength).toBeLessThan(expected.length);
      expect(client.bytesWritten).toBe(expected.length);
      const received = readBytes(server, expected.length);
      await write;
      expect(pool.stats().inUse).toBe(0);
      expect((await received).equals(expected)).toBe(true); // the pool poisons released memory: an early release would show
    },
  );

  it('more segments than IOV_MAX: the first 1024 leave directly, the rest through the stream, in order', async () => {
    const pool = makePool();
    const { client, server } = await connected();
    const gatherer = new Gatherer({ pool });
    const parts = Array.from({ length: 1500 }, (_, i) => pattern(100, i));
    for (const part of parts) gatherer.putBytes(part);
    const expected = Buffer.concat(parts);
    const received = readBytes(server, expected.length);
    const write = gatherer.writeTo(client);
    expect(gatherer.writing).toBe(true); // the last 476 segments went to the stream
    await write;
    expect((await received).equals(expected)).toBe(true);
    expect(client.bytesWritten).toBe(expected.length);
  });

  it('never overtakes: a pending socket.write() and a corked socket keep their place', async () => {
    const pool = makePool();
    const { client, server } = await connected();
    const filler = pattern(8 * MiB, 6); // more than the kernel takes while nobody reads: it stays queued
    client.write(filler);
    const first = new Gatherer({ pool }).putString('first');
    const firstWrite = first.writeTo(client);
    expect(first.writing).toBe(true); // behind the filler, through the stream
    const expected = Buffer.concat([filler, Buffer.from('firstcorkedafter')]);
    const received = readBytes(server, expected.length);
    await firstWrite;
    client.cork();
    const corked = new Gatherer({ pool }).putString('corked');
    const corkedWrite = corked.writeTo(client);
    expect(corked.writing).toBe(true); // into the corked stream, not around it
    client.write('after');
    client.uncork();
    await corkedWrite;
    expect((await received).equals(expected)).toBe(true);
    expect(pool.stats().inUse).toBe(0);
  });

  it('while an earlier writeTo is pending, a later one waits its turn: the promises settle in call order', async () => {
    const pool = makePool();
    const { client, server } = await connected();
    const settledOrder: number[] = [];
    const big = new Gatherer({ pool }).putBytes(pattern(16 * MiB, 7));
    const small = new Gatherer({ pool }).putString('small');
    const first = big.writeTo(client).then(() => settledOrder.push(1));
    const second = small.writeTo(client).then(() => settledOrder.push(2));
    expect(small.writing).toBe(true); // not around the first: through the stream, behind it
    const received = readBytes(server, 16 * MiB + 5);
    await Promise.all([first, second]);
    expect(settledOrder).toEqual([1, 2]);
    expect((await received).equals(Buffer.concat([pattern(16 * MiB, 7), Buffer.from('small')]))).toBe(true);
  });

  itNative(NEEDS.writev)(
    "a reset the socket has not noticed yet: the kernel's error rejects the write and destroys the socket with it; nothing unhandled, every pooled buffer back",
    async () => {
      const pool = makePool();
      const { client, server } = await connected();
      // The accepted side was paused on connect: libuv does not poll it, so it learns of the reset only by writing.
      client.resetAndDestroy();
      await once(client, 'close');
      await new Promise((resolve) => setImmediate(resolve));
      const gatherer = new Gatherer({ pool }).putU32BE(1).putOwned(pool.tryAcquire(4096)!);
      const error = (await rejection(gatherer.writeTo(server))) as Error & { code?: string; errno?: number; syscall?: string };
      expect(['ECONNRESET', 'EPIPE']).toContain(error.code);
      expect(typeof error.errno).toBe('number');
      expect(error.syscall).toBe('writev');
      expect(server.destroyed).toBe(true);
      expect(server.errored).toBe(error);
      expect(pool.stats().inUse).toBe(0);
      expect(listeners(server)).toEqual([0, 0, 0]); // the watch let go once the socket closed
    },
  );
});
