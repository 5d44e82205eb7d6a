// One pool shared by worker_threads: one budget, blocking acquireSync in a
// worker ordered by messages (never by time), FIFO across threads, close.
import { afterEach, describe, expect, it } from 'vitest';
import { BufferPool, addressOf } from '../lib/index';
import { KiB, PoolWorker, expectCode, thrown, turns, until } from './fixtures/pool-helpers';
import { NEEDS, itNative, portable } from './helpers/portable';

const pools: BufferPool[] = [];
const workers: PoolWorker[] = [];
function makePool(options: ConstructorParameters<typeof BufferPool>[0] = {}): BufferPool {
  const pool = new BufferPool(options);
  pools.push(pool);
  return pool;
}
async function startWorker(pool: BufferPool, name: string, events: string[] = []): Promise<PoolWorker> {
  const worker = new PoolWorker(pool.handle, name, events);
  workers.push(worker);
  await worker.ready;
  return worker;
}
afterEach(async () => {
  for (const worker of workers.splice(0)) await worker.stop();
  for (const pool of pools.splice(0)) await pool.close({ force: true });
});

/** 64 KiB slots, one per slab, `slots` of them in the budget; nothing idle is retained. */
function sharedPool(slots: number): BufferPool {
  return makePool({ sizeClasses: [4096, 65536], maxMemory: slots * 64 * KiB, retainIdle: 0 });
}

describe('BufferPool shared by worker threads', () => {
  it('one budget limits every thread; stats cover them all', async () => {
    const pool = sharedPool(8);
    const a = await startWorker(pool, 'A');
    const b = await startWorker(pool, 'B');
    expect(pool.stats().threads).toBe(3);
    const mine = Array.from({ length: 4 }, () => pool.tryAcquire(65536)!);
    const got = [
      await a.call('tryAcquire', { size: 65536 }),
      await a.call('tryAcquire', { size: 65536 }),
      await b.call('tryAcquire', { size: 65536 }),
      await b.call('tryAcquire', { size: 65536 }),
    ];
    expect(got.every((x) => x !== null && x.length === 65536)).toBe(true);
    // Distinct memory in each thread.
    expect(mine.every((buffer) => buffer.length === 65536)).toBe(true);
    if (!portable) {
      // portable mode has no addresses: each thread's slabs are ArrayBuffers of its own anyway
      expect(new Set([...got.map((x) => x.address), ...mine.map((buffer) => String(addressOf(buffer)))]).size).toBe(8);
    }
    // The budget is spent for everyone.
    expect(await a.call('tryAcquire', { size: 65536 })).toBeNull();
    expect(await b.call('tryAcquire', { size: 4096 })).toBeNull();
    expect(pool.tryAcquire(65536)).toBeNull();
    const stats = pool.stats();
    expect(stats).toMatchObject({ inUse: 8, osBytes: 512 * KiB, threads: 3 });
    expect(await a.call('stats')).toMatchObject({ inUse: 8, osBytes: 512 * KiB, threads: 3 });
    // A release in a worker frees budget for the main thread.
    await a.call('release', { key: got[0].key });
    await until(() => pool.tryAcquire(65536) !== null, 'budget freed by worker A to reach the main thread');
    expect(pool.stats().inUse).toBe(8);
  });

  itNative(NEEDS.registration)(
    'registration() in an attached worker throws ERR_IOBUF_POOL_CLOSED once the owning thread closed the pool',
    async () => {
      const pool = sharedPool(4);
      const worker = await startWorker(pool, 'W');
      const got = await worker.call('tryAcquire', { size: 65536 });
      expect(got).not.toBeNull();
      expect(await worker.call('registration')).toBe(1);
      await pool.close({ force: true });
      const reply = await worker.send('registration', {}).reply;
      expect(reply).toMatchObject({ ok: false, error: { name: 'IobufError', code: 'ERR_IOBUF_POOL_CLOSED' } });
    },
  );

  it('acquireSync in a worker blocks until the main thread releases (ordered by messages)', async () => {
    const pool = sharedPool(2);
    const events: string[] = [];
    const worker = await startWorker(pool, 'W', events);
    const held = [pool.tryAcquire(65536)!, pool.tryAcquire(65536)!];
    const request = worker.send('acquireSync', { size: 65536, signature: 0x77 });
    request.reply.then(() => events.push('W acquired'));
    await request.blocking;
    // The worker is now inside acquireSync: it shows up as a waiter and has not acquired.
    await until(() => pool.stats().waiters === 1, 'the worker to wait');
    await turns(5);
    expect(events).toEqual(['W blocking']);
    events.push('main releases');
    pool.release(held[0]);
    const reply = await request.reply;
    expect(reply).toMatchObject({ ok: true });
    expect(reply.value.length).toBe(65536);
    expect(events).toEqual(['W blocking', 'main releases', 'W acquired']);
    await until(() => pool.stats().inUse === 2 && pool.stats().waits === 1, 'the worker to publish its counts');
    expect(pool.stats()).toMatchObject({ waiters: 0, inUse: 2, waits: 1 });
    await worker.call('release', { key: reply.value.key });
    pool.release(held[1]);
  });

  it('serves blocked workers in FIFO order', async () => {
    const pool = sharedPool(2);
    const events: string[] = [];
    const a = await startWorker(pool, 'A', events);
    const b = await startWorker(pool, 'B', events);
    const held = [pool.tryAcquire(65536)!, pool.tryAcquire(65536)!];
    const first = a.send('acquireSync', { size: 65536 });
    await first.blocking;
    await until(() => pool.stats().waiters === 1, 'A to wait');
    const second = b.send('acquireSync', { size: 65536 });
    await second.blocking;
    await until(() => pool.stats().waiters === 2, 'B to wait');
    first.reply.then(() => events.push('A acquired'));
    second.reply.then(() => events.push('B acquired'));
    pool.release(held[0]); // room for exactly one
    const fromA = await first.reply;
    expect(fromA.ok).toBe(true);
    await turns(5);
    expect(events).toEqual(['A blocking', 'B blocking', 'A acquired']);
    expect(pool.stats().waiters).toBe(1);
    pool.release(held[1]);
    expect((await second.reply).ok).toBe(true);
    expect(events).toEqual(['A blocking', 'B blocking', 'A acquired', 'B acquired']);
  });

  it('acquireSync timeout in a worker: ERR_IOBUF_BUDGET_TIMEOUT, no waiter left', async () => {
    const pool = sharedPool(1);
    const worker = await startWorker(pool, 'W');
    const held = pool.tryAcquire(65536)!;
    const reply = await worker.send('acquireSync', { size: 65536, timeout: 20 }).reply;
    expect(reply.ok).toBe(false);
    expect(reply.error).toMatchObject({ name: 'IobufError', code: 'ERR_IOBUF_BUDGET_TIMEOUT' });
    expect(pool.stats()).toMatchObject({ waiters: 0, inUse: 1 });
    pool.release(held);
    expect((await worker.send('acquireSync', { size: 65536 }).reply).ok).toBe(true);
  });

  it('ERR_IOBUF_WOULD_DEADLOCK on the main thread only without workers', async () => {
    const pool = sharedPool(1);
    const held = pool.tryAcquire(65536)!;
    expectCode(
      thrown(() => pool.acquireSync(65536)),
      'IobufError',
      'ERR_IOBUF_WOULD_DEADLOCK',
    );
    expect(pool.stats()).toMatchObject({ waiters: 0, inUse: 1 });
    // With a worker attached, the main thread may block (with a timeout here, as nothing releases).
    await startWorker(pool, 'W');
    expectCode(
      thrown(() => pool.acquireSync(65536, { timeout: 10 })),
      'IobufError',
      'ERR_IOBUF_BUDGET_TIMEOUT',
    );
    expect(pool.stats()).toMatchObject({ waiters: 0, inUse: 1 });
    pool.release(held);
  });

  it('budget idle in another thread is given back to a waiting worker', async () => {
    // The main thread used a slab and released it; it stays idle (within retainIdle) while the main
    // thread has nothing else to do. A worker that needs the whole budget must still get it.
    const pool = makePool({ sizeClasses: [4096, 65536, 262144], maxMemory: 256 * KiB });
    pool.release(pool.tryAcquire(65536)!);
    await turns(3);
    expect(pool.stats()).toMatchObject({ inUse: 0, osBytes: 64 * KiB });
    const worker = await startWorker(pool, 'W');
    // The timeout only keeps a failure from hanging the suite.
    const reply = await worker.send('acquireSync', { size: 262144, timeout: 3000 }).reply;
    expect(reply.error).toBeUndefined();
    expect(reply.ok).toBe(true);
  });

  it("the owner's close() rejects a worker's blocked acquireSync with ERR_IOBUF_POOL_CLOSED", async () => {
    const pool = sharedPool(1);
    const worker = await startWorker(pool, 'W');
    const held = pool.tryAcquire(65536)!;
    const request = worker.send('acquireSync', { size: 65536 });
    await request.blocking;
    await until(() => pool.stats().waiters === 1, 'the worker to wait');
    await pool.close({ force: true });
    const reply = await request.reply;
    expect(reply.error).toMatchObject({ name: 'IobufError', code: 'ERR_IOBUF_POOL_CLOSED' });
    expect(held.length).toBe(0);
    expect((await worker.send('tryAcquire', { size: 10 }).reply).error).toMatchObject({ code: 'ERR_IOBUF_POOL_CLOSED' });
  });

  it("a worker's close() leaves the pool for that thread only and gives its memory back", async () => {
    const pool = sharedPool(2);
    const worker = await startWorker(pool, 'W');
    const got = await worker.call('tryAcquire', { size: 65536 });
    expect(got.length).toBe(65536);
    await worker.call('release', { key: got.key });
    expect(await worker.call('close', {})).toBe('closed');
    await until(() => pool.stats().threads === 1, 'the worker to leave');
    expect(pool.stats()).toMatchObject({ osBytes: 0, inUse: 0 });
    const mine = [pool.tryAcquire(65536)!, pool.tryAcquire(65536)!];
    expect(mine.every((b) => b.length === 65536)).toBe(true);
    expect((await worker.send('tryAcquire', { size: 10 }).reply).error).toMatchObject({ code: 'ERR_IOBUF_POOL_CLOSED' });
  });
});
