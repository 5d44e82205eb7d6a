// Waiting for budget: FIFO order, large requests not starved, abort, timeout,
// close, and acquireMany (contiguous, reserved all at once).
import { describe, expect, it } from 'vitest';
import { type BufferPool, addressOf } from '../lib/index';
import { KiB, MiB, expectCode, rejection, settled, thrown, turns, until, usePools } from './fixtures/pool-helpers';
import { NEEDS, itNative } from './helpers/portable';

const makePool = usePools();

/** A pool whose 64 KiB class has one slot per slab, with a budget of `slots` such slabs. */
function oneSlotPool(slots: number): BufferPool {
  return makePool({ sizeClasses: [4096, 65536], maxMemory: slots * 64 * KiB, retainIdle: 0 });
}

describe('BufferPool waiting order', () => {
  it('serves waiters of one class in FIFO order as buffers come back', async () => {
    const pool = oneSlotPool(2);
    const held = [pool.tryAcquire(65536)!, pool.tryAcquire(65536)!];
    const order: number[] = [];
    const waiters = [0, 1, 2, 3].map((i) =>
      pool.acquire(65536).then((buffer) => {
        order.push(i);
        return buffer;
      }),
    );
    await turns();
    expect(pool.stats()).toMatchObject({ waiters: 4, inUse: 2 });
    pool.release(held[1]);
    await turns();
    expect(order).toEqual([0]);
    pool.release(held[0]);
    await turns();
    expect(order).toEqual([0, 1]);
    const [w0, w1] = await Promise.all(waiters.slice(0, 2));
    pool.release(w1);
    pool.release(w0);
    const [w2, w3] = await Promise.all(waiters.slice(2));
    expect(order).toEqual([0, 1, 2, 3]);
    expect(pool.stats()).toMatchObject({ waiters: 0, inUse: 2, waits: 4 });
    pool.release(w2);
    pool.release(w3);
    expect(pool.stats().inUse).toBe(0);
  });

  it('grants new budget in FIFO order: a large request before smaller ones of other classes that queued after it', async () => {
    const pool = makePool({ sizeClasses: [4096, 65536, 262144], maxMemory: 512 * KiB, retainIdle: 0 });
    // Fill the budget with small buffers (4 KiB slots in 64 KiB slabs).
    const small: Buffer[] = [];
    for (let b = pool.tryAcquire(4096); b !== null; b = pool.tryAcquire(4096)) small.push(b);
    expect(small).toHaveLength(128);
    const order: string[] = [];
    const big = pool.acquire(262144).then((buffer) => {
      order.push('big');
      return buffer;
    });
    const later = Array.from({ length: 4 }, (_, i) =>
      pool.acquire(65536).then((buffer) => {
        order.push(`medium${i}`);
        return buffer;
      }),
    );
    await turns();
    expect(pool.stats().waiters).toBe(5);
    // One whole slab (64 KiB) back: enough for a medium request, not for the large one queued first.
    for (const buffer of small.splice(0, 16)) pool.release(buffer);
    await turns(5);
    expect(order).toEqual([]);
    expect(pool.stats()).toMatchObject({ waiters: 5, inUse: 112 });
    // Three more slabs: now the large request fits, and it goes first.
    for (const buffer of small.splice(0, 48)) pool.release(buffer);
    await until(() => order.length > 0, 'a waiter to be served');
    await turns();
    // The budget is spent again (64 small buffers in 4 slabs + the large one): nobody else fits,
    // and the per-class mapped bytes add up to what was taken from the OS.
    const stats = pool.stats();
    expect(stats.classes.map((row) => row.osBytes)).toEqual([256 * KiB, 0, 256 * KiB, 0]);
    expect(stats.osBytes).toBe(512 * KiB);
    expect(order).toEqual(['big']);
    const bigBuffer = await big;
    expect(bigBuffer.length).toBe(262144);
    for (const buffer of small.splice(0)) pool.release(buffer);
    const rest = await Promise.all(later);
    expect(order).toEqual(['big', 'medium0', 'medium1', 'medium2', 'medium3']);
    pool.release(bigBuffer);
    for (const buffer of rest) pool.release(buffer);
    expect(pool.stats()).toMatchObject({ inUse: 0, waiters: 0 });
  });

  itNative(NEEDS.addresses)('a large request is not starved by a steady stream of small acquire/release cycles', async () => {
    // 4 KiB slots in 64 KiB slabs (16 each), a 512 KiB budget: 8 small slabs fill it.
    const pool = makePool({ sizeClasses: [4096, 262144], maxMemory: 512 * KiB, retainIdle: 0 });
    const all: Buffer[] = [];
    for (let b = pool.tryAcquire(4096); b !== null; b = pool.tryAcquire(4096)) all.push(b);
    expect(all).toHaveLength(128);
    // Keep every other buffer: 64 small users, every slab half used, nothing to unmap.
    const small = all.filter((_, i) => i % 2 === 0);
    for (const buffer of all.filter((_, i) => i % 2 === 1)) pool.release(buffer);
    let bigServedAtRound = -1;
    let round = 0;
    const big = pool.acquire(262144).then((buffer) => {
      bigServedAtRound = round;
      return buffer;
    });
    await turns();
    expect(pool.stats()).toMatchObject({ waiters: 1, osBytes: 512 * KiB, inUse: 64 });
    // The users keep cycling: each releases its buffer and takes another, so
    // 64 buffers are out at all times: half the budget. Reusing the slot just
    // released (LIFO) would keep all eight slabs half used forever; reusing
    // the lowest free address lets the upper slabs drain and be given back.
    const ROUNDS = 512;
    for (; round < ROUNDS && bigServedAtRound < 0; round++) {
      const index = round % small.length;
      pool.release(small[index]);
      small[index] = await pool.acquire(4096);
      await turns(1);
    }
    expect(bigServedAtRound, 'round at which the large request was served').toBeGreaterThanOrEqual(0);
    expect(bigServedAtRound).toBeLessThan(ROUNDS);
    // Every small buffer is still distinct memory.
    expect(new Set(small.map((buffer) => addressOf(buffer))).size).toBe(64);
    const bigBuffer = await big;
    for (const buffer of small) pool.release(buffer);
    pool.release(bigBuffer);
    expect(pool.stats()).toMatchObject({ inUse: 0, waiters: 0 });
  });
});

describe('BufferPool abort and timeout', () => {
  it('an already aborted signal rejects at once with AbortError ABORT_ERR, taking nothing', async () => {
    const pool = oneSlotPool(1);
    const controller = new AbortController();
    controller.abort(new Error('why'));
    const before = pool.stats();
    const error = await rejection(pool.acquire(65536, { signal: controller.signal }));
    expectCode(error, 'AbortError', 'ABORT_ERR');
    expect((error as Error).cause).toBe(controller.signal.reason);
    // Even though memory was free, nothing was taken or counted.
    expect(pool.stats()).toEqual(before);
    expect(pool.stats()).toMatchObject({ inUse: 0, acquires: 0, waiters: 0 });
    expectCode(await rejection(pool.lease(10, { signal: controller.signal })), 'AbortError', 'ABORT_ERR');
    expectCode(await rejection(pool.acquireMany(2, 10, { signal: controller.signal })), 'AbortError', 'ABORT_ERR');
    expect(pool.stats().inUse).toBe(0);
  });

  it('aborting during a wait rejects, leaves no trace, and the next release goes to the free list', async () => {
    const pool = oneSlotPool(1);
    const held = pool.tryAcquire(65536)!;
    const controller = new AbortController();
    const waiting = pool.acquire(65536, { signal: controller.signal });
    await turns();
    expect(await settled(waiting)).toBe(false);
    const before = pool.stats();
    expect(before).toMatchObject({ waiters: 1, inUse: 1 });
    controller.abort();
    expectCode(await rejection(waiting), 'AbortError', 'ABORT_ERR');
    const after = pool.stats();
    expect(after).toMatchObject({ waiters: 0, inUse: 1, acquires: 1, waits: 0 });
    pool.release(held);
    expect(pool.stats()).toMatchObject({ inUse: 0, releases: 1, acquires: 1 });
    // The slot is free for a new owner; a later abort of the old signal changes nothing.
    const next = pool.tryAcquire(65536)!;
    expect(next.length).toBe(65536);
    controller.abort();
    await turns();
    expect(pool.stats()).toMatchObject({ inUse: 1, waiters: 0 });
    pool.release(next);
  });

  it('aborting one of several waiters keeps the others in order', async () => {
    const pool = oneSlotPool(1);
    const held = pool.tryAcquire(65536)!;
    const controllers = [0, 1, 2].map(() => new AbortController());
    const order: number[] = [];
    const waiters = controllers.map((c, i) =>
      pool.acquire(65536, { signal: c.signal }).then((b) => {
        order.push(i);
        return b;
      }),
    );
    await turns();
    controllers[0].abort();
    expectCode(await rejection(waiters[0]), 'AbortError', 'ABORT_ERR');
    expect(pool.stats()).toMatchObject({ waiters: 2, inUse: 1 });
    pool.release(held);
    const b1 = await waiters[1];
    expect(order).toEqual([1]);
    pool.release(b1);
    const b2 = await waiters[2];
    expect(order).toEqual([1, 2]);
    pool.release(b2);
    expect(pool.stats()).toMatchObject({ inUse: 0, waiters: 0, waits: 2 });
  });

  it('a timeout rejects with ERR_IOBUF_BUDGET_TIMEOUT and leaves the counts unchanged', async () => {
    const pool = oneSlotPool(1);
    const held = pool.tryAcquire(65536)!;
    const before = pool.stats();
    expectCode(await rejection(pool.acquire(65536, { timeout: 5 })), 'IobufError', 'ERR_IOBUF_BUDGET_TIMEOUT');
    expectCode(await rejection(pool.acquire(65536, { timeout: 0 })), 'IobufError', 'ERR_IOBUF_BUDGET_TIMEOUT');
    expectCode(await rejection(pool.acquireMany(2, 4096, { timeout: 1 })), 'IobufError', 'ERR_IOBUF_BUDGET_TIMEOUT');
    expectCode(await rejection(pool.lease(65536, { timeout: 1 })), 'IobufError', 'ERR_IOBUF_BUDGET_TIMEOUT');
    const after = pool.stats();
    expect(after).toEqual({ ...before, waitTimeP99Ms: after.waitTimeP99Ms });
    expect(after).toMatchObject({ inUse: 1, waiters: 0, waits: 0, acquires: 1 });
    pool.release(held);
    expect(pool.stats().inUse).toBe(0);
  });

  it('a waiter served before its timeout stays served; the wait is counted', async () => {
    const pool = oneSlotPool(1);
    const held = pool.tryAcquire(65536)!;
    const waiting = pool.acquire(65536, { timeout: 60_000 });
    await turns();
    pool.release(held);
    const buffer = await waiting;
    expect(buffer.length).toBe(65536);
    const stats = pool.stats();
    expect(stats).toMatchObject({ waits: 1, waiters: 0, inUse: 1 });
    expect(stats.waitTimeTotalMs).toBeGreaterThanOrEqual(0);
    expect(stats.waitTimeMaxMs).toBe(stats.waitTimeTotalMs);
    expect(stats.waitTimeP99Ms).toBe(stats.waitTimeTotalMs);
    pool.release(buffer);
  });

  it('acquireSync on this thread throws ERR_IOBUF_WOULD_DEADLOCK instead of blocking', async () => {
    const pool = oneSlotPool(1);
    // Memory is free: it simply succeeds.
    const held = pool.acquireSync(65536);
    expect(held.length).toBe(65536);
    // Spent, and no other thread attached.
    expectCode(
      thrown(() => pool.acquireSync(65536)),
      'IobufError',
      'ERR_IOBUF_WOULD_DEADLOCK',
    );
    expectCode(
      thrown(() => pool.acquireSync(65536, { timeout: 10 })),
      'IobufError',
      'ERR_IOBUF_WOULD_DEADLOCK',
    );
    expect(pool.stats()).toMatchObject({ inUse: 1, waiters: 0 });
    // With this thread's own acquire() queued.
    const waiting = pool.acquire(65536);
    expectCode(
      thrown(() => pool.acquireSync(65536)),
      'IobufError',
      'ERR_IOBUF_WOULD_DEADLOCK',
    );
    expect(pool.stats()).toMatchObject({ inUse: 1, waiters: 1 });
    pool.release(held);
    pool.release(await waiting);
    expect(pool.stats()).toMatchObject({ inUse: 0, waiters: 0 });
  });
});

describe('BufferPool close and waiters', () => {
  it('close() rejects every waiter with ERR_IOBUF_POOL_CLOSED', async () => {
    const pool = makePool({ sizeClasses: [4096, 65536], maxMemory: 128 * KiB, retainIdle: 0 });
    const held = [pool.tryAcquire(65536)!, pool.tryAcquire(65536)!];
    const waiters = [pool.acquire(65536), pool.acquire(4096 * 20), pool.acquireMany(3, 4096), pool.lease(65536)];
    await turns();
    expect(pool.stats().waiters).toBe(4);
    const closing = pool.close();
    for (const waiter of waiters) expectCode(await rejection(waiter), 'IobufError', 'ERR_IOBUF_POOL_CLOSED');
    expect(pool.stats()).toMatchObject({ waiters: 0, inUse: 2 });
    pool.release(held[0]);
    expect(await settled(closing)).toBe(false);
    pool.release(held[1]);
    await closing;
    expect(pool.stats()).toMatchObject({ inUse: 0, osBytes: 0 });
  });
});

describe('BufferPool acquireMany', () => {
  itNative(NEEDS.addresses)('carves count buffers from one contiguous region: buffer i+1 starts one stride after buffer i', () => {
    const pool = makePool({ maxMemory: 16 * MiB });
    for (const [count, size, stride] of [
      [8, 4096, 4096],
      [5, 4000, 4096],
      [4, 65536, 65536],
      [3, 100_000, 131072],
      [16, 300, 512],
    ]) {
      const buffers = pool.tryAcquireMany(count, size)!;
      expect(buffers).toHaveLength(count);
      const base = addressOf(buffers[0]);
      buffers.forEach((buffer, i) => {
        expect(buffer.length).toBe(size);
        expect(addressOf(buffer) - base, `${count}×${size} #${i}`).toBe(BigInt(i * stride));
        buffer.fill(i + 1);
      });
      // Writes do not overlap.
      buffers.forEach((buffer, i) => expect(buffer.every((x) => x === i + 1)).toBe(true));
      expect(pool.stats().inUse).toBe(count);
      for (const buffer of buffers) pool.release(buffer);
      expect(pool.stats().inUse).toBe(0);
    }
  });

  itNative(NEEDS.addresses)('page-aligns acquireMany buffers of 4 KiB and more, and oversize ones are contiguous too', () => {
    const pool = makePool({ sizeClasses: [4096, 8192], maxMemory: 16 * MiB });
    const buffers = pool.tryAcquireMany(3, 10_000)!;
    const base = addressOf(buffers[0]);
    expect(base % 4096n).toBe(0n);
    buffers.forEach((buffer, i) => expect(addressOf(buffer) - base).toBe(BigInt(i * 12288)));
    const oversize = pool.stats().classes.at(-1)!;
    expect(oversize).toMatchObject({ inUse: 3, misses: 3, acquires: 3 });
    for (const buffer of buffers) pool.release(buffer);
    expect(pool.stats()).toMatchObject({ inUse: 0, osBytes: 0 });
  });

  itNative(NEEDS.addresses)('reserves the whole region at once: nothing partial is handed out while it waits', async () => {
    const pool = oneSlotPool(4);
    const held = [pool.tryAcquire(65536)!, pool.tryAcquire(65536)!];
    expect(pool.tryAcquireMany(4, 65536)).toBeNull();
    expect(pool.stats()).toMatchObject({ inUse: 2, osBytes: 128 * KiB });
    const many = pool.acquireMany(4, 65536);
    await turns();
    // Half the budget is free, but none of it is taken for a partial grant.
    expect(pool.stats()).toMatchObject({ inUse: 2, waiters: 1, osBytes: 128 * KiB });
    pool.release(held[0]);
    await turns();
    expect(await settled(many)).toBe(false);
    expect(pool.stats()).toMatchObject({ inUse: 1, waiters: 1 });
    pool.release(held[1]);
    const buffers = await many;
    expect(buffers).toHaveLength(4);
    const base = addressOf(buffers[0]);
    buffers.forEach((buffer, i) => expect(addressOf(buffer) - base).toBe(BigInt(i * 65536)));
    expect(pool.stats()).toMatchObject({ inUse: 4, waiters: 0, osBytes: 256 * KiB, waits: 1 });
    for (const buffer of buffers) pool.release(buffer);
    expect(pool.stats().inUse).toBe(0);
  });

  it('a queued acquireMany keeps its FIFO place ahead of later single acquires', async () => {
    const pool = oneSlotPool(4);
    const held = Array.from({ length: 4 }, () => pool.tryAcquire(65536)!);
    const order: string[] = [];
    const many = pool.acquireMany(3, 65536).then((b) => {
      order.push('many');
      return b;
    });
    const single = pool.acquire(4096).then((b) => {
      order.push('single');
      return b;
    });
    await turns();
    for (const buffer of held.splice(0, 3)) pool.release(buffer);
    const buffers = await many;
    expect(order[0]).toBe('many');
    pool.release(held[0]);
    const one = await single;
    expect(order).toEqual(['many', 'single']);
    // Exactly one buffer went to the single waiter.
    expect(pool.stats().classes[0]).toMatchObject({ size: 4096, acquires: 1, inUse: 1 });
    expect(pool.stats()).toMatchObject({ inUse: 4, waits: 2 });
    for (const buffer of [...buffers, one]) pool.release(buffer);
    expect(pool.stats()).toMatchObject({ inUse: 0, waiters: 0 });
  });
});
