// Leak detection under --expose-gc: an unreleased buffer that is garbage-
// collected is reported (with the acquiring stack in 'full' mode) and its
// slot is reclaimed.
import { describe, expect, it } from 'vitest';
import { type BufferPool, addressOf, type LeakReport } from '../lib/index';
import { MiB, turns, usePools } from './fixtures/pool-helpers';
import { portable } from './helpers/portable';

const gc = (globalThis as { gc?: () => void }).gc;

const makePool = usePools();

/** Collects garbage and lets finalizers run, until `done` or a few rounds. */
async function collect(done: () => boolean = () => false): Promise<void> {
  for (let round = 0; round < 10 && !done(); round++) {
    gc!();
    await turns(3);
  }
}

// Not inlined into the tests, so the buffer is unreachable once it returns.
// Its address (none in portable mode, where the checks of it are left out).
function dropOne(pool: BufferPool, size: number): bigint | null {
  const buffer = pool.tryAcquire(size)!;
  buffer.fill(1);
  return portable ? null : addressOf(buffer);
}

describe.skipIf(!gc)('BufferPool leak detection (--expose-gc)', () => {
  it("'full': reports size and the acquiring stack, counts the leak and reclaims the slot", async () => {
    const leaks: LeakReport[] = [];
    const pool = makePool({ maxMemory: 4 * MiB, leakDetection: 'full', onLeak: (leak) => leaks.push(leak) });
    const kept = pool.tryAcquire(1000)!;
    const address = dropOne(pool, 1000);
    const before = pool.stats();
    expect(before.inUse).toBe(2);
    await collect(() => leaks.length > 0);
    expect(leaks).toHaveLength(1);
    expect(leaks[0].size).toBe(1000);
    expect(leaks[0].stack).toContain('pool.leaks.test');
    expect(leaks[0].stack).toContain('dropOne');
    const stats = pool.stats();
    expect(stats).toMatchObject({ leaks: 1, inUse: 1, acquires: 2, releases: 0 });
    expect(stats.classes.find((row) => row.size === 1024)).toMatchObject({ leaks: 1, inUse: 1 });
    // The slot is free again: the next acquire of the class gets it without new memory.
    const again = pool.tryAcquire(1000)!;
    if (!portable) expect(addressOf(again)).toBe(address);
    expect(pool.stats()).toMatchObject({ misses: before.misses, inUse: 2 });
    pool.release(again);
    pool.release(kept);
    expect(pool.stats()).toMatchObject({ inUse: 0, leaks: 1 });
    // A close now has nothing to wait for.
    await pool.close();
  });

  it('reclaims a leaked oversize buffer (its mapping and budget)', async () => {
    const leaks: LeakReport[] = [];
    const pool = makePool({ maxMemory: 16 * MiB, leakDetection: 'full', onLeak: (leak) => leaks.push(leak) });
    dropOne(pool, 5 * MiB);
    expect(pool.stats().osBytes).toBe(5 * MiB);
    await collect(() => leaks.length > 0);
    expect(leaks.map((leak) => leak.size)).toEqual([5 * MiB]);
    expect(pool.stats()).toMatchObject({ leaks: 1, inUse: 0, osBytes: 0 });
  });

  it('released buffers and buffers still referenced are never reported', async () => {
    const leaks: LeakReport[] = [];
    const pool = makePool({ maxMemory: 4 * MiB, leakDetection: 'full', onLeak: (leak) => leaks.push(leak) });
    const kept = Array.from({ length: 20 }, () => pool.tryAcquire(4096)!);
    for (let i = 0; i < 50; i++) pool.release(pool.tryAcquire(2000)!);
    await collect();
    expect(leaks).toEqual([]);
    expect(pool.stats()).toMatchObject({ leaks: 0, inUse: 20 });
    for (const buffer of kept) pool.release(buffer);
    expect(pool.stats().inUse).toBe(0);
  });

  it('without onLeak, emits a process warning with code IOBUF_LEAK', async () => {
    const warnings: Array<Error & { code?: string }> = [];
    const onWarning = (warning: Error & { code?: string }) => {
      if (warning.code === 'IOBUF_LEAK') warnings.push(warning);
    };
    process.on('warning', onWarning);
    try {
      const pool = makePool({ maxMemory: 4 * MiB, leakDetection: 'full' });
      dropOne(pool, 3000);
      await collect(() => warnings.length > 0);
      await turns(3); // warnings are emitted on the next tick
      expect(warnings).toHaveLength(1);
      expect(warnings[0].message).toContain('3000 bytes');
      expect(warnings[0].message).toContain('pool.leaks.test');
      expect(pool.stats()).toMatchObject({ leaks: 1, inUse: 0 });
    } finally {
      process.off('warning', onWarning);
    }
  });

  it("'sample' reports some of many leaked buffers; 'off' reports none and keeps them counted in use", async () => {
    const sampled: LeakReport[] = [];
    const sample = makePool({ maxMemory: 16 * MiB, onLeak: (leak) => sampled.push(leak) });
    const off: LeakReport[] = [];
    const none = makePool({ maxMemory: 16 * MiB, leakDetection: 'off', onLeak: (leak) => off.push(leak) });
    for (let i = 0; i < 512; i++) {
      dropOne(sample, 256);
      dropOne(none, 256);
    }
    await collect(() => sampled.length > 0);
    await collect();
    expect(sampled.length).toBeGreaterThanOrEqual(1);
    expect(sampled.length).toBeLessThanOrEqual(4); // 1 in 128 or 256, not every one
    expect(sampled.every((leak) => leak.size === 256 && leak.stack === undefined)).toBe(true);
    expect(sample.stats()).toMatchObject({ leaks: sampled.length, inUse: 512 - sampled.length });
    expect(off).toEqual([]);
    expect(none.stats()).toMatchObject({ leaks: 0, inUse: 512 });
  });

  it('a leak-tracked buffer that is released normally is fine, and its double release is still caught', async () => {
    const leaks: LeakReport[] = [];
    const pool = makePool({ maxMemory: 4 * MiB, leakDetection: 'full', onLeak: (leak) => leaks.push(leak) });
    const a = pool.tryAcquire(4096)!;
    pool.release(a);
    expect(() => pool.release(a)).toThrow(expect.objectContaining({ code: 'ERR_IOBUF_DOUBLE_RELEASE' }));
    await collect();
    expect(leaks).toEqual([]);
    expect(pool.stats()).toMatchObject({ inUse: 0, leaks: 0, releases: 1 });
  });

  it('strict mode: a leaked buffer is reclaimed too', async () => {
    const leaks: LeakReport[] = [];
    const pool = makePool({ maxMemory: 4 * MiB, strict: true, leakDetection: 'full', onLeak: (leak) => leaks.push(leak) });
    const address = dropOne(pool, 8192);
    await collect(() => leaks.length > 0);
    expect(leaks.map((leak) => leak.size)).toEqual([8192]);
    expect(pool.stats()).toMatchObject({ leaks: 1, inUse: 0 });
    const again = pool.tryAcquire(8192)!;
    if (!portable) expect(addressOf(again)).toBe(address);
    pool.release(again);
  });
});
