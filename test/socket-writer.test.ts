// SocketWriter over real loopback TCP: one tick's messages leave in one
// write, batches keep their order while the peer does not read, end() ends
// the socket only after the last byte, needDrain/'drain' bound what a slow
// peer makes the writer hold, and a peer that resets or a destroy() rejects
// what is pending and leaves every pooled buffer back in the pool.
import { once } from 'node:events';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { BufferPool } from '../lib/pool';
import { SocketWriter } from '../lib/gather/socket-writer';
import { expectCode, rejection, settled, thrown, until } from './fixtures/pool-helpers';
import { pattern, readBytes, socketPair } from './fixtures/gather-helpers';
import { NEEDS, itNative } from './helpers/portable';

const KiB = 1024;
const MiB = 1024 * KiB;
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

// poison: a buffer released while the kernel may still read it would be
// filled with 0xA5, and the receiver would see that.
function makePool(maxMemory = 64 * MiB): BufferPool {
  const pool = new BufferPool({ maxMemory, leakDetection: 'off', poison: true });
  cleanups.push(() => pool.close({ force: true }));
  return pool;
}

async function connected() {
  const pair = await socketPair();
  cleanups.push(() => pair.close());
  return pair;
}

/** A stand-in for a Frame: counts its releases. */
function counted() {
  return {
    releases: 0,
    release() {
      this.releases++;
    },
  };
}

/** Message `i`: a u32be sequence number and `size` pattern bytes. */
function message(i: number, size: number): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(i);
  return Buffer.concat([head, pattern(size, i + 1)]);
}

describe('SocketWriter: batching and order', () => {
  itNative(NEEDS.writev)('sends everything put in one tick in one write, byte for byte', async () => {
    const pool = makePool();
    const { client, server } = await connected();
    const writer = new SocketWriter(client, { pool });
    const expected: Buffer[] = [];
    for (let i = 0; i < 100; i++) {
      writer.batch().putU32BE(i).putStringPrefixed(`message ${i}`, 'u16be');
      const head = Buffer.alloc(6);
      head.writeUInt32BE(i);
      head.writeUInt16BE(Buffer.byteLength(`message ${i}`), 4);
      expected.push(head, Buffer.from(`message ${i}`));
    }
    const bytes = Buffer.concat(expected);
    expect(writer.queuedBytes).toBe(bytes.length);
    const received = readBytes(server, bytes.length);
    await writer.flushed();
    expect((await received).equals(bytes)).toBe(true);
    // One writev(2) on the socket's descriptor took it all (the direct path).
    expect(writer.stats()).toEqual({ writes: 1, directWrites: 1, bytesWritten: bytes.length, queuedBytes: 0 });
    expect(pool.stats().inUse).toBe(0);
  });

  it('keeps order across ticks while the peer does not read, merging what waits into fewer writes', async () => {
    const pool = makePool();
    const { client, server } = await connected();
    const writer = new SocketWriter(client, { pool, highWaterMark: 64 * MiB });
    const blob = pattern(256 * KiB, 9);
    const expected: Buffer[] = [];
    const ticks = 20;
    for (let tick = 0; tick < ticks; tick++) {
      for (let i = 0; i < 5; i++) {
        const n = tick * 5 + i;
        // A small header in scratch and a 256 KiB body by reference: the
        // socket's buffer fills after a few, so later batches wait.
        writer.batch().putU32BE(n).putBytes(blob);
        expected.push(message(n, 0), blob);
      }
      await nextTurn();
    }
    const bytes = Buffer.concat(expected);
    expect(writer.stats().writes).toBeLessThan(ticks); // the peer is not reading: batches merged while they waited
    // The kernel took part of a batch directly; the rest went through the stream, in order.
    expect(writer.stats().directWrites).toBeLessThan(writer.stats().writes);
    const received = readBytes(server, bytes.length);
    await writer.flushed();
    expect((await received).equals(bytes)).toBe(true);
    expect(writer.stats().bytesWritten).toBe(bytes.length);
    expect(pool.stats().inUse).toBe(0);
  });

  it('releases what releaseAfterWrite() was given only once its batch is with the kernel', async () => {
    const pool = makePool();
    const { client, server } = await connected();
    const writer = new SocketWriter(client, { pool });
    const body = pool.tryAcquire(200 * KiB)!;
    body.fill(0x42);
    const frame = {
      releases: 0,
      release() {
        this.releases++;
        pool.release(body);
      },
    };
    writer.batch().putU8(7).putBytes(body);
    writer.releaseAfterWrite(frame);
    const next = counted();
    await nextTurn(); // the batch has left (the write is in flight or done)
    writer.batch().putU8(8);
    writer.releaseAfterWrite(next); // belongs to the second batch
    expect(next.releases).toBe(0);
    const received = readBytes(server, 1 + body.length + 1);
    await writer.flushed();
    const bytes = await received;
    expect(bytes[0]).toBe(7);
    expect(bytes.subarray(1, 1 + 200 * KiB).every((b) => b === 0x42)).toBe(true);
    expect(bytes[bytes.length - 1]).toBe(8);
    expect([frame.releases, next.releases]).toEqual([1, 1]);
    expect(pool.stats().inUse).toBe(0);
  });

  it('end() ends the socket after the last byte, also when writes wait for the peer', async () => {
    const pool = makePool();
    const { client, server } = await connected();
    const writer = new SocketWriter(client, { pool });
    const blob = pattern(512 * KiB, 3);
    for (let i = 0; i < 8; i++) writer.batch().putU32BE(i).putBytes(blob);
    const ended = writer.end();
    expectCode(
      thrown(() => writer.batch()),
      'IobufError',
      'ERR_IOBUF_WRITER_CLOSED',
    );
    // The peer reads only now: everything must arrive, then the end of the stream.
    const chunks: Buffer[] = [];
    server.on('data', (chunk: Buffer) => chunks.push(chunk));
    server.resume();
    await once(server, 'end');
    await ended;
    const expected = Buffer.concat(Array.from({ length: 8 }, (_, i) => Buffer.concat([message(i, 0), blob])));
    expect(Buffer.concat(chunks).equals(expected)).toBe(true);
    expect(writer.end()).toBe(ended);
    expect(pool.stats().inUse).toBe(0);
  });
});

describe('SocketWriter: backpressure', () => {
  it('needDrain turns true at highWaterMark and "drain" comes once the peer has read enough', async () => {
    const pool = makePool();
    const { client, server } = await connected();
    // 32 MiB: far more than the kernel takes off a socket whose peer does not
    // read (its send buffer grows to tcp_wmem's max, 4 MiB by default; a receive
    // buffer that is never read from keeps about its initial size).
    const writer = new SocketWriter(client, { pool, highWaterMark: 32 * MiB });
    const blob = pattern(64 * KiB, 5);
    let produced = 0;
    // A producer that follows the rule: put while !needDrain.
    while (!writer.needDrain) {
      writer.batch().putBytes(blob);
      produced++;
    }
    expect(writer.queuedBytes).toBeGreaterThanOrEqual(32 * MiB);
    expect(produced).toBe(512);
    const drained = writer.drained();
    const drainEvent = once(writer, 'drain');
    await nextTurn();
    expect(await settled(drained)).toBe(false); // the peer is not reading yet
    const received = readBytes(server, produced * blob.length);
    await drained;
    await drainEvent;
    expect(writer.queuedBytes).toBeLessThanOrEqual(16 * MiB);
    await writer.flushed();
    expect((await received).length).toBe(produced * blob.length);
    expect(writer.needDrain).toBe(false);
    expect(pool.stats().inUse).toBe(0);
  });

  it('with onBudgetExhausted "throw", the pool budget bounds what a producer that ignores needDrain can queue', async () => {
    const pool = makePool(1 * MiB);
    const { client } = await connected();
    const writer = new SocketWriter(client, { pool, chunkSize: 64 * KiB, onBudgetExhausted: 'throw' });
    const slice = pattern(32 * KiB, 2);
    let error: (Error & { code?: string }) | null = null;
    for (let i = 0; i < 1000 && error === null; i++) {
      try {
        writer.batch().putSlice(slice); // copies into pooled scratch
      } catch (caught) {
        error = caught as Error;
      }
      if (i % 8 === 7) await nextTurn();
    }
    expect(error).not.toBeNull();
    expectCode(error!, 'IobufError', 'ERR_IOBUF_BUDGET_EXHAUSTED');
    expect(pool.stats().inUseBytes).toBeLessThanOrEqual(1 * MiB);
    writer.destroy();
    await until(() => pool.stats().inUse === 0, 'the pooled scratch to come back');
  });
});

describe('SocketWriter: errors and close', () => {
  it('a peer that resets rejects what is pending and every pooled buffer comes back', async () => {
    const pool = makePool();
    const { client, server } = await connected();
    const writer = new SocketWriter(client, { pool });
    const closed = once(writer, 'close');
    const held = counted();
    const blob = pattern(4 * MiB, 8);
    writer
      .batch()
      .putU32BE(1)
      .putSlice(blob.subarray(0, 100 * KiB))
      .putBytes(blob);
    writer.releaseAfterWrite(held);
    const pending = writer.flushed();
    await nextTurn();
    writer
      .batch()
      .putU32BE(2)
      .putSlice(blob.subarray(0, 300 * KiB)); // waits behind the first
    const alsoPending = writer.flushed();
    server.resetAndDestroy();
    const error = await rejection(pending);
    expect(['ECONNRESET', 'EPIPE', 'ERR_IOBUF_SOCKET_CLOSED']).toContain(error.code);
    expect((await rejection(alsoPending)).code).toBe(error.code);
    const [reason] = await closed;
    expect(reason).toBe(error);
    expect(writer.closed).toBe(true);
    expect(held.releases).toBe(1);
    expectCode(
      thrown(() => writer.batch()),
      error.name,
      error.code!,
    );
    expect(pool.stats().inUse).toBe(0);
  });

  it('destroy() discards the batch, rejects end(), and releases everything once', async () => {
    const pool = makePool();
    const { client } = await connected();
    const writer = new SocketWriter(client, { pool });
    const held = counted();
    writer
      .batch()
      .putU32BE(1)
      .putSlice(pattern(10 * KiB, 1));
    writer.releaseAfterWrite(held);
    const ending = writer.end();
    writer.destroy();
    expectCode(await rejection(ending), 'IobufError', 'ERR_IOBUF_SOCKET_CLOSED');
    // end() had sent the batch: it is released once libuv has let go of it (after 'close').
    await until(() => held.releases > 0 && pool.stats().inUse === 0, 'the batch to come back');
    expect(held.releases).toBe(1);
    const late = counted();
    writer.releaseAfterWrite(late); // closed: released at once
    expect(late.releases).toBe(1);
    expectCode(await rejection(writer.drained()), 'IobufError', 'ERR_IOBUF_SOCKET_CLOSED');
  });

  it('a writer whose socket closes with nothing queued closes cleanly, and handles a late socket error', async () => {
    const pool = makePool();
    const { client, server } = await connected();
    const writer = new SocketWriter(client, { pool });
    const closed = once(writer, 'close');
    server.destroy();
    client.resume();
    const [reason] = await closed;
    expect(reason).toBeNull();
    expect(writer.error).toBeNull();
    expectCode(
      thrown(() => writer.batch()),
      'IobufError',
      'ERR_IOBUF_WRITER_CLOSED',
    );
    client.emit('error', new Error('late')); // the writer's listener keeps it from going unhandled
    await expect(writer.flushed()).resolves.toBeUndefined(); // nothing was queued
  });

  it('bad arguments get exact codes', () => {
    const pool = makePool();
    const sink = new Writable({
      write(_chunk, _encoding, callback) {
        callback();
      },
    });
    expectCode(
      thrown(() => new SocketWriter(null as unknown as Writable, { pool })),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    expectCode(
      thrown(() => new SocketWriter(sink, {} as { pool: BufferPool })),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    expectCode(
      thrown(() => new SocketWriter(sink, { pool, highWaterMark: 0 })),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => new SocketWriter(sink, { pool, chunkSize: 8 })),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => new SocketWriter(sink, { pool, onBudgetExhausted: 'drop' as 'heap' })),
      'TypeError',
      'ERR_INVALID_ARG_VALUE',
    );
    const writer = new SocketWriter(sink, { pool });
    expectCode(
      thrown(() => writer.releaseAfterWrite({} as { release(): void })),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    writer.destroy();
  });

  it('works on any stream.Writable, in order, ending it after the last write', async () => {
    const pool = makePool();
    const chunks: Buffer[] = [];
    const sink = new Writable({
      highWaterMark: 1024,
      writev(entries, callback) {
        for (const { chunk } of entries) chunks.push(Buffer.from(chunk as Buffer));
        setTimeout(callback, 1); // slow: later batches queue behind
      },
    });
    const writer = new SocketWriter(sink, { pool, chunkSize: 256 });
    const expected: Buffer[] = [];
    for (let tick = 0; tick < 20; tick++) {
      for (let i = 0; i < 30; i++) {
        writer
          .batch()
          .putU16BE(tick * 30 + i)
          .putStringNul('x'.repeat(i));
        expected.push(Buffer.from([(tick * 30 + i) >> 8, (tick * 30 + i) & 0xff]), Buffer.from(`${'x'.repeat(i)}\0`));
      }
      await nextTurn();
    }
    await writer.end();
    expect(Buffer.concat(chunks).equals(Buffer.concat(expected))).toBe(true);
    expect(writer.stats().directWrites).toBe(0); // no descriptor: every batch through the stream
    expect(pool.stats().inUse).toBe(0);
  });
});
