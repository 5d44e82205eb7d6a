// Memory lent to libuv on the socket paths (lib/lending.ts): a FrameAssembler's
// read buffer, a Gatherer write in libuv's queue or waiting for 'drain'. A
// pool's forced close, a free() or a release() must never let the kernel read
// or write memory that was unmapped or handed to another owner; what a peer
// receives is exactly what the writer put, and nothing is lost from the counts.
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { BufferPool, FrameAssembler, Gatherer, allocAligned, free } from '../lib/index';
import { closeOf, connect, listen } from './fixtures/frames-helpers';
import { pattern, readBytes, socketPair } from './fixtures/gather-helpers';
import { rejection, until } from './fixtures/pool-helpers';
import { NEEDS, itNative } from './helpers/portable';

const KiB = 1024;
const MiB = 1024 * KiB;

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function track<T extends { close(options?: { force: boolean }): Promise<void> }>(pool: T): T {
  cleanups.push(() => pool.close({ force: true }));
  return pool;
}

/** Mapped allocations that must stay all zero (a stray kernel write would show). */
function sentinels(count: number, size = 64 * KiB): Buffer[] {
  const buffers = Array.from({ length: count }, () => allocAligned(size, { alignment: size }));
  cleanups.push(() => {
    for (const buffer of buffers) free(buffer);
  });
  return buffers;
}

const untouched = (buffers: Buffer[]) => buffers.every((buffer) => buffer.every((byte) => byte === 0));

describe('a FrameAssembler reading into pooled memory', () => {
  it('pool.close({ force }) ends it (ERR_IOBUF_POOL_CLOSED) and its socket: later bytes land nowhere', async () => {
    const pool = track(new BufferPool({ maxMemory: 4 * MiB }));
    const frames: string[] = [];
    const assembler = new FrameAssembler({
      pool,
      onFrame: (frame) => {
        frames.push(frame.data.toString());
        frame.release();
      },
    });
    const { server, port } = await listen((socket) => assembler.attach(socket));
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const client = await connect(port);
    client.on('error', () => {});
    cleanups.push(() => {
      client.destroy();
    });
    const header = Buffer.alloc(4);
    header.writeUInt32BE(5);
    client.write(Buffer.concat([header, Buffer.from('hello')]));
    await until(() => frames.length === 1, 'the first frame');
    expect(assembler.stats().readMode).toBe('onread');

    const closing = pool.close({ force: true });
    await closeOf(assembler);
    expect(assembler.error).toMatchObject({ code: 'ERR_IOBUF_POOL_CLOSED' });
    await closing;
    expect(pool.stats()).toMatchObject({ osBytes: 0, inUse: 0 });
    // New mappings may take the freed range; the peer keeps writing into the
    // connection, which is closed: nothing can reach them.
    const fresh = sentinels(32);
    client.write(Buffer.alloc(512 * KiB, 0x77));
    await closeOf(client);
    expect(untouched(fresh)).toBe(true);
  });
});

describe('a Gatherer write in flight', () => {
  it('pool.close({ force }): the write handed to libuv completes byte-exact; one waiting for drain fails with nothing sent', async () => {
    const pool = track(new BufferPool({ maxMemory: 64 * MiB }));
    const pair = await socketPair();
    cleanups.push(() => pair.close());
    const first = new Gatherer({ pool });
    const body = pool.tryAcquire(8 * MiB)!;
    body.set(pattern(8 * MiB, 3));
    first.putString('first:').putOwned(body);
    const expected = Buffer.concat([Buffer.from('first:'), pattern(8 * MiB, 3)]);
    // Through the stream to libuv (corked: not the direct path, which would leave nothing lent);
    // more than the kernel buffers take, so the rest stays in libuv's queue.
    pair.client.cork();
    const writing = first.writeTo(pair.client);
    pair.client.uncork();
    expect(pair.client.writableNeedDrain).toBe(true);
    const second = new Gatherer({ pool });
    second.putString('second:').putOwned(pool.tryAcquire(MiB)!.fill(0x22));
    const queued = second.writeTo(pair.client); // waits for 'drain' behind the first

    let closed = false;
    const closing = pool.close({ force: true }).then(() => {
      closed = true;
    });
    expect(await rejection(queued)).toMatchObject({ code: 'ERR_IOBUF_POOL_CLOSED' });
    const fresh = sentinels(16, MiB);
    for (const buffer of fresh) buffer.fill(0xee);
    expect(closed).toBe(false); // the first write's memory is still with libuv

    const received = readBytes(pair.server, expected.length);
    await writing;
    pair.client.end();
    const bytes = await received;
    expect(bytes.length).toBe(expected.length);
    expect(bytes.equals(expected)).toBe(true);
    await closing;
    expect(pool.stats()).toMatchObject({ osBytes: 0, inUse: 0 });
  });

  it("free() of a putBytes view after the write was queued: the peer gets the view's bytes, then it is freed", async () => {
    const pool = track(new BufferPool({ maxMemory: 16 * MiB }));
    const pair = await socketPair();
    cleanups.push(() => pair.close());
    const filler = Buffer.alloc(8 * MiB, 1);
    pair.client.write(filler); // the socket needs a drain: the gatherer's write waits
    const blob = allocAligned(MiB, { alignment: 64 * KiB });
    blob.set(pattern(MiB, 9));
    const gatherer = new Gatherer({ pool }).putString('blob:').putBytes(blob);
    const writing = gatherer.writeTo(pair.client);
    free(blob); // lent: takes effect after the write
    expect(blob.length).toBe(MiB);
    const fresh = sentinels(16);
    for (const buffer of fresh) buffer.fill(0xee);
    const bytes = await readBytes(pair.server, filler.length + 5 + MiB);
    await writing;
    expect(bytes.subarray(filler.length).equals(Buffer.concat([Buffer.from('blob:'), pattern(MiB, 9)]))).toBe(true);
    expect(blob.length).toBe(0); // freed once libuv was done
    expect(pool.stats().inUse).toBe(0);
  });

  it('release() of a putBytes pooled Buffer while libuv sends it: the slot is not reused until the write is done', async () => {
    const pool = track(new BufferPool({ sizeClasses: [4 * MiB], maxMemory: 8 * MiB, retainIdle: 0 }));
    const pair = await socketPair();
    cleanups.push(() => pair.close());
    const buffer = pool.tryAcquire(4 * MiB)!;
    buffer.set(pattern(4 * MiB, 5));
    const gatherer = new Gatherer({ pool, chunkSize: 64 }).putBytes(buffer);
    // Through the stream to libuv (corked: not the direct path, which would leave nothing lent).
    pair.client.cork();
    const writing = gatherer.writeTo(pair.client);
    pair.client.uncork();
    pool.release(buffer);
    expect(pool.stats().inUse).toBe(0); // the caller's ownership ended
    // The released slot is still lent: a new acquire gets other memory, and writes there change nothing sent.
    const other = pool.tryAcquire(4 * MiB);
    expect(other).not.toBe(buffer);
    other?.fill(0xee);
    const bytes = await readBytes(pair.server, 4 * MiB);
    await writing;
    expect(bytes.equals(pattern(4 * MiB, 5))).toBe(true);
    if (other !== null) pool.release(other);
    expect(pool.stats().inUse).toBe(0);
  });
});

describe('a Gatherer write on the direct path', () => {
  itNative(NEEDS.writev)(
    'a message the kernel took whole is not lent after the call (free() takes effect at once); the rest of one it took in part is lent until sent',
    async () => {
      const pool = track(new BufferPool({ maxMemory: 16 * MiB }));
      const pair = await socketPair();
      cleanups.push(() => pair.close());
      const small = allocAligned(64 * KiB);
      small.set(pattern(64 * KiB, 11));
      const whole = new Gatherer({ pool }).putString('small:').putBytes(small);
      const first = whole.writeTo(pair.client);
      expect(whole.writing).toBe(false); // the kernel copied it during the call
      free(small);
      expect(small.length).toBe(0); // nothing lent: freed now
      await first;

      const big = allocAligned(16 * MiB, { alignment: 64 * KiB });
      big.set(pattern(16 * MiB, 12));
      const split = new Gatherer({ pool }).putString('big:').putBytes(big);
      const second = split.writeTo(pair.client);
      expect(split.writing).toBe(true); // the kernel took a part; the stream holds the rest
      free(big);
      expect(big.length).toBe(16 * MiB); // lent: freed once the stream is done with it
      const fresh = sentinels(16, MiB);
      for (const buffer of fresh) buffer.fill(0xee);
      const bytes = await readBytes(pair.server, 6 + 64 * KiB + 4 + 16 * MiB);
      await second;
      expect(bytes.equals(Buffer.concat([Buffer.from('small:'), pattern(64 * KiB, 11), Buffer.from('big:'), pattern(16 * MiB, 12)]))).toBe(
        true,
      );
      expect(big.length).toBe(0);
      expect(pool.stats().inUse).toBe(0);
    },
  );
});

describe('a freed segment before the write is handed over', () => {
  it('fails with ERR_IOBUF_IOVEC_INVALID from writeTo: no uncaught error, nothing sent, the socket usable, the scratch back', async () => {
    const pool = track(new BufferPool({ maxMemory: 16 * MiB }));
    const pair = await socketPair();
    cleanups.push(() => pair.close());
    const blob = allocAligned(64 * KiB);
    const gatherer = new Gatherer({ pool }).putString('head').putBytes(blob);
    free(blob);
    expect(await rejection(gatherer.writeTo(pair.client))).toMatchObject({ code: 'ERR_IOBUF_IOVEC_INVALID' });
    expect(pool.stats().inUse).toBe(0);
    expect(() => gatherer.putU8(1)).toThrow(expect.objectContaining({ code: 'ERR_IOBUF_GATHERER_SPENT' }));
    pair.client.end('after');
    expect((await readBytes(pair.server, 5)).toString()).toBe('after');
  });

  it('queued for drain when its view is detached (transfer or free before the queue reaches it): rejects, the queue moves on', async () => {
    const pool = track(new BufferPool({ maxMemory: 32 * MiB }));
    const pair = await socketPair();
    cleanups.push(() => pair.close());
    const filler = Buffer.alloc(8 * MiB, 1);
    const errors: unknown[] = [];
    process.on('uncaughtException', (error) => errors.push(error));
    cleanups.push(() => {
      process.removeAllListeners('uncaughtException');
    });
    pair.client.write(filler);
    // A plain heap view, detached behind the gatherer's back while its write waits for 'drain'.
    const view = new Uint8Array(new ArrayBuffer(64 * KiB)).fill(0x33);
    const doomed = new Gatherer({ pool }).putString('doomed').putBytes(view);
    const failing = doomed.writeTo(pair.client);
    const next = new Gatherer({ pool }).putString('next');
    const succeeding = next.writeTo(pair.client);
    structuredClone(view.buffer, { transfer: [view.buffer] });
    const bytes = readBytes(pair.server, filler.length + 4);
    expect(await rejection(failing)).toMatchObject({ code: 'ERR_IOBUF_IOVEC_INVALID' });
    await succeeding;
    expect((await bytes).subarray(filler.length).toString()).toBe('next');
    expect(errors).toEqual([]);
    expect(pool.stats().inUse).toBe(0);
    expect(pair.client.writableCorked).toBe(0);
  });
});

describe('randomized: lenders close mid-flight', () => {
  it('many sockets, forced closes and frees at random moments: every byte received is one the sender put', async () => {
    let seed = 12345;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let round = 0; round < 6; round++) {
      const pool = new BufferPool({ maxMemory: 64 * MiB, retainIdle: 0 });
      const pairs = await Promise.all(Array.from({ length: 4 }, () => socketPair()));
      const expected: Buffer[][] = pairs.map(() => []);
      const received = pairs.map((pair) => {
        const chunks: Buffer[] = [];
        pair.server.on('data', (chunk: Buffer) => chunks.push(chunk));
        pair.server.on('error', () => {});
        pair.client.on('error', () => {});
        if (random(2) === 0) pair.server.resume();
        return chunks;
      });
      const writes: Promise<unknown>[] = [];
      const allocations: Buffer[] = [];
      for (let i = 0; i < 24; i++) {
        const index = random(pairs.length);
        const gatherer = new Gatherer({ pool });
        const size = 1 + random(3 * MiB);
        const seedOf = round * 100 + i;
        const message = Buffer.concat([Buffer.from(`#${seedOf}:`), pattern(size, seedOf)]);
        gatherer.putString(`#${seedOf}:`);
        const kind = random(3);
        if (kind === 0) {
          const owned = pool.tryAcquire(size);
          if (owned === null) continue;
          owned.set(pattern(size, seedOf));
          gatherer.putOwned(owned);
        } else if (kind === 1) {
          const blob = allocAligned(size, { alignment: 64 * KiB });
          blob.set(pattern(size, seedOf));
          gatherer.putBytes(blob);
          allocations.push(blob);
        } else {
          gatherer.putSlice(pattern(size, seedOf));
        }
        const write = gatherer.writeTo(pairs[index].client).then(
          () => 'sent',
          (error: { code?: string }) => error.code,
        );
        // What is sent must be a whole message: remember it when it was.
        writes.push(
          write.then((outcome) => {
            if (outcome === 'sent') expected[index].push(message);
            return outcome;
          }),
        );
        if (random(4) === 0 && allocations.length > 0) {
          const blob = allocations.splice(random(allocations.length), 1)[0];
          free(blob);
        }
      }
      const closing = pool.close({ force: true });
      const fresh = sentinels(8, MiB);
      for (const buffer of fresh) buffer.fill(0xee);
      for (const pair of pairs) pair.server.resume();
      const outcomes = await Promise.all(writes);
      await closing;
      for (const blob of allocations) free(blob);
      for (const outcome of outcomes) expect(['sent', 'ERR_IOBUF_POOL_CLOSED']).toContain(outcome);
      for (const pair of pairs) pair.client.end();
      await Promise.all(pairs.map((pair) => once(pair.server, 'end')));
      for (let i = 0; i < pairs.length; i++) {
        const bytes = Buffer.concat(received[i]);
        expect(bytes.equals(Buffer.concat(expected[i]))).toBe(true);
      }
      expect(pool.stats()).toMatchObject({ osBytes: 0, inUse: 0 });
      await Promise.all(pairs.map((pair) => pair.close()));
    }
  }, 60_000);
});
