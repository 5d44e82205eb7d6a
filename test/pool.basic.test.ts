// BufferPool basics: exact sizes, class choice, page alignment (and a real
// O_DIRECT round trip through pooled memory), recycling, exact statistics.
import { closeSync, constants, mkdtempSync, openSync, readSync, rmSync, statfsSync, writeSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { addressOf, pageSize } from '../lib/index';
import { KiB, MiB, thrown, turns, usePools } from './fixtures/pool-helpers';
import { NEEDS, itNative } from './helpers/portable';

const makePool = usePools();

const DEFAULT_CLASSES = Array.from({ length: 15 }, (_, i) => 256 << i);

describe('BufferPool sizes and classes', () => {
  it('has the documented default ladder: 256 B to 4 MiB, powers of two', () => {
    const pool = makePool({ maxMemory: 64 * MiB });
    expect(pool.sizeClasses).toEqual(DEFAULT_CLASSES);
    expect(pool.maxMemory).toBe(64 * MiB);
    expect(pool.retainIdle).toBe(16 * MiB);
    expect(pool.strict).toBe(false);
    const stats = pool.stats();
    expect(stats.classes.map((row) => row.size)).toEqual([...DEFAULT_CLASSES, Infinity]);
  });

  it('returns a Buffer of exactly the requested size, from the smallest class that holds it', () => {
    const pool = makePool({ maxMemory: 64 * MiB });
    const cases: Array<[number, number]> = [
      [1, 256],
      [255, 256],
      [256, 256],
      [257, 512],
      [1000, 1024],
      [4095, 4096],
      [4096, 4096],
      [4097, 8192],
      [65536, 65536],
      [65537, 131072],
      [3 * MiB, 4 * MiB],
      [4 * MiB, 4 * MiB],
    ];
    const held: Buffer[] = [];
    for (const [size, classSize] of cases) {
      const before = pool.stats().classes.find((row) => row.size === classSize)!.acquires;
      const buffer = pool.tryAcquire(size)!;
      expect(Buffer.isBuffer(buffer)).toBe(true);
      expect(buffer.length).toBe(size);
      expect(buffer.byteLength).toBe(size);
      const after = pool.stats().classes.find((row) => row.size === classSize)!.acquires;
      expect(after - before, `size ${size} -> class ${classSize}`).toBe(1);
      held.push(buffer);
    }
    expect(pool.stats().inUse).toBe(cases.length);
    for (const buffer of held) pool.release(buffer);
    expect(pool.stats().inUse).toBe(0);
  });

  itNative(NEEDS.addresses)('gives a size above the largest class a dedicated mapping, counted as a miss in the oversize row', () => {
    const pool = makePool({ maxMemory: 64 * MiB });
    const size = 4 * MiB + 1;
    const buffer = pool.tryAcquire(size)!;
    expect(buffer.length).toBe(size);
    expect(addressOf(buffer) % BigInt(pageSize)).toBe(0n);
    buffer.fill(0x5a);
    expect(buffer[size - 1]).toBe(0x5a);
    let stats = pool.stats();
    const oversize = stats.classes[stats.classes.length - 1];
    expect(oversize.size).toBe(Infinity);
    expect(oversize).toMatchObject({ acquires: 1, misses: 1, recycles: 0, inUse: 1, releases: 0 });
    expect(oversize.inUseBytes).toBe(Math.ceil(size / pageSize) * pageSize);
    expect(oversize.osBytes).toBe(Math.ceil(size / pageSize) * pageSize);
    expect(stats.osBytes).toBe(Math.ceil(size / pageSize) * pageSize);
    pool.release(buffer);
    stats = pool.stats();
    // Unmapped at release: nothing of it stays mapped or counted.
    expect(stats.classes[stats.classes.length - 1]).toMatchObject({ releases: 1, inUse: 0, inUseBytes: 0, osBytes: 0, idleBytes: 0 });
    expect(stats.osBytes).toBe(0);
    // A second one is a miss again, not a recycle.
    pool.release(pool.tryAcquire(size)!);
    stats = pool.stats();
    expect(stats.classes[stats.classes.length - 1]).toMatchObject({ acquires: 2, misses: 2, recycles: 0 });
  });

  it('serves sizes whose class cannot fit the budget as dedicated allocations, up to maxMemory', () => {
    // Default classes go up to 4 MiB; with an 800 KiB budget the 1 MiB class could never map a slab.
    const pool = makePool({ maxMemory: 800 * KiB, retainIdle: 0 });
    const big = pool.tryAcquire(700 * KiB)!;
    expect(big.length).toBe(700 * KiB);
    expect(pool.stats().classes.at(-1)).toMatchObject({ size: Infinity, acquires: 1, misses: 1, inUse: 1 });
    expect(pool.tryAcquire(200 * KiB)).toBeNull(); // 700 KiB of 800 are taken: the budget holds
    pool.release(big);
    const whole = pool.tryAcquire(800 * KiB)!;
    expect(whole.length).toBe(800 * KiB);
    pool.release(whole);
    expect(thrown(() => pool.tryAcquire(800 * KiB + 1))).toMatchObject({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
    // Classes that fit are still classes.
    const small = pool.tryAcquire(100 * KiB)!;
    expect(pool.stats().classes.find((row) => row.size === 128 * KiB)).toMatchObject({ inUse: 1 });
    pool.release(small);
    expect(pool.stats().inUse).toBe(0);
  });

  it('honours custom (non-power-of-two) size classes', () => {
    const pool = makePool({ sizeClasses: [100, 1500, 9000], maxMemory: 4 * MiB });
    const held = [
      pool.tryAcquire(1)!,
      pool.tryAcquire(100)!,
      pool.tryAcquire(101)!,
      pool.tryAcquire(1500)!,
      pool.tryAcquire(1501)!,
      pool.tryAcquire(9000)!,
    ];
    expect(held.map((b) => b.length)).toEqual([1, 100, 101, 1500, 1501, 9000]);
    const rows = pool.stats().classes;
    expect(rows.map((row) => [row.size, row.acquires])).toEqual([
      [100, 2],
      [1500, 2],
      [9000, 2],
      [Infinity, 0],
    ]);
    for (const buffer of held) pool.release(buffer);
  });
});

describe('BufferPool alignment', () => {
  itNative(NEEDS.addresses)('page-aligns every buffer of 4 KiB and more, in every slot of a slab', () => {
    const pool = makePool({ maxMemory: 256 * MiB });
    for (const size of [4096, 4097, 6000, 8192, 65536, 100_000, MiB, 4 * MiB]) {
      const held = Array.from({ length: 5 }, () => pool.tryAcquire(size)!);
      for (const buffer of held) {
        expect(addressOf(buffer) % 4096n, `size ${size}`).toBe(0n);
      }
      // Distinct, non-overlapping slots.
      const addresses = held.map((b) => addressOf(b)).sort((a, b) => (a < b ? -1 : 1));
      for (let i = 1; i < addresses.length; i++) expect(addresses[i] - addresses[i - 1] >= BigInt(size)).toBe(true);
      for (const buffer of held) pool.release(buffer);
    }
  });

  itNative(NEEDS.kernel)('does a real O_DIRECT write and read through pooled buffers on the repository disk', () => {
    const dir = mkdtempSync(path.join(__dirname, '.pool-odirect-'));
    try {
      // 0x01021994 is tmpfs, which does not support O_DIRECT; this must be a real disk.
      expect(statfsSync(dir).type).not.toBe(0x01021994);
      const pool = makePool({ maxMemory: 16 * MiB });
      const file = path.join(dir, 'data');
      const fd = openSync(file, constants.O_RDWR | constants.O_CREAT | constants.O_DIRECT, 0o600);
      try {
        // Control: a Buffer that is not page-aligned is refused by this file system under O_DIRECT.
        const misaligned = Buffer.alloc(64 * KiB + 1).subarray(1);
        expect(thrown(() => writeSync(fd, misaligned, 0, 64 * KiB, 0)).code).toBe('EINVAL');

        const out = pool.tryAcquire(64 * KiB)!;
        for (let i = 0; i < out.length; i++) out[i] = (i * 7 + 3) & 0xff;
        expect(writeSync(fd, out, 0, out.length, 0)).toBe(64 * KiB);
        const back = pool.tryAcquire(64 * KiB)!;
        back.fill(0);
        expect(readSync(fd, back, 0, back.length, 0)).toBe(64 * KiB);
        expect(back.equals(out)).toBe(true);
        pool.release(out);
        pool.release(back);
        expect(pool.stats().inUse).toBe(0);
      } finally {
        closeSync(fd);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('BufferPool recycling', () => {
  itNative(NEEDS.addresses)('hands the same memory out again after release (most recently released first)', () => {
    const pool = makePool({ maxMemory: 16 * MiB });
    const first = pool.tryAcquire(64 * KiB)!;
    const second = pool.tryAcquire(64 * KiB)!;
    const a1 = addressOf(first);
    const a2 = addressOf(second);
    expect(a1).not.toBe(a2);
    first.fill(0x11);
    pool.release(second);
    pool.release(first);
    const again = pool.tryAcquire(60 * KiB)!; // same class, other size: same slot, new view
    expect(addressOf(again)).toBe(a1);
    expect(again.length).toBe(60 * KiB);
    expect(again[0]).toBe(0x11); // the default mode does not clear recycled memory
    const third = pool.tryAcquire(64 * KiB)!;
    expect(addressOf(third)).toBe(a2);
    const stats = pool.stats().classes.find((row) => row.size === 64 * KiB)!;
    expect(stats).toMatchObject({ acquires: 4, misses: 1, recycles: 3, releases: 2, inUse: 2 });
    expect(stats.recycleRate).toBe(0.75);
    pool.release(again);
    pool.release(third);
  });

  it('counts exactly after a scripted sequence', async () => {
    const pool = makePool({ sizeClasses: [1024, 8192], maxMemory: MiB });
    // Slabs: 1024-byte class 64 KiB (64 slots), 8192-byte class capped at maxMemory/8 = 128 KiB (16 slots).
    const a = pool.tryAcquire(1000)!;
    const b = pool.tryAcquire(1024)!;
    const c = pool.tryAcquire(5000)!;
    pool.release(a);
    const d = pool.tryAcquire(600)!;
    const e = pool.tryAcquire(20_000)!; // oversize: a dedicated 20480-byte mapping
    expect([a, b, c, d, e].map((x) => x.length)).toEqual([1000, 1024, 5000, 600, 20_000]);

    let stats = pool.stats();
    const [small, large, oversize] = stats.classes;
    expect(small).toEqual({
      size: 1024,
      acquires: 3,
      releases: 1,
      recycles: 2,
      misses: 1,
      recycleRate: 2 / 3,
      inUse: 2,
      inUseBytes: 2048,
      idleBytes: 65536 - 2048,
      osBytes: 65536,
      leaks: 0,
    });
    expect(large).toEqual({
      size: 8192,
      acquires: 1,
      releases: 0,
      recycles: 0,
      misses: 1,
      recycleRate: 0,
      inUse: 1,
      inUseBytes: 8192,
      idleBytes: 131072 - 8192,
      osBytes: 131072,
      leaks: 0,
    });
    expect(oversize).toMatchObject({ size: Infinity, acquires: 1, releases: 0, misses: 1, inUse: 1, inUseBytes: 20480, osBytes: 20480 });
    expect(stats).toMatchObject({
      maxMemory: MiB,
      acquires: 5,
      releases: 1,
      misses: 3,
      recycles: 2,
      inUse: 4,
      osBytes: 65536 + 131072 + 20480,
      highWaterBytes: 65536 + 131072 + 20480,
      leaks: 0,
      waiters: 0,
      waits: 0,
      threads: 1,
    });
    expect(stats.recycleRate).toBe(2 / 5);

    for (const x of [b, c, d, e]) pool.release(x);
    await turns();
    stats = pool.stats();
    expect(stats).toMatchObject({ acquires: 5, releases: 5, inUse: 0, inUseBytes: 0 });
    // Class slabs stay mapped (idle, within retainIdle = 256 KiB); the oversize mapping is gone.
    expect(stats.osBytes).toBe(65536 + 131072);
    expect(stats.idleBytes).toBe(65536 + 131072);
    expect(stats.highWaterBytes).toBe(65536 + 131072 + 20480);
  });

  it('leases release at the end of a using-style scope, once', async () => {
    const pool = makePool({ maxMemory: 4 * MiB });
    const lease = pool.tryLease(3000)!;
    expect(lease.buffer.length).toBe(3000);
    expect(pool.stats().inUse).toBe(1);
    lease[Symbol.dispose]();
    expect(pool.stats().inUse).toBe(0);
    lease.release(); // a second release of a lease is a no-op
    expect(pool.stats()).toMatchObject({ inUse: 0, releases: 1 });

    const awaited = await pool.lease(5000);
    expect(awaited.buffer.length).toBe(5000);
    expect(pool.stats().inUse).toBe(1);
    awaited.release();
    expect(pool.stats().inUse).toBe(0);

    const tight = makePool({ sizeClasses: [65536], maxMemory: 65536 });
    const hold = tight.tryAcquire(65536)!;
    expect(tight.tryLease(65536)).toBeNull();
    expect(tight.stats().inUse).toBe(1);
    tight.release(hold);
  });

  it('tryAcquire returns null when the budget is spent, leaving the counts alone', () => {
    const pool = makePool({ sizeClasses: [65536], maxMemory: 256 * KiB });
    const held = Array.from({ length: 4 }, () => pool.tryAcquire(65536)!);
    const before = pool.stats();
    expect(before.osBytes).toBe(256 * KiB);
    expect(pool.tryAcquire(65536)).toBeNull();
    expect(pool.tryAcquire(100_000)).toBeNull(); // oversize needs budget too
    expect(pool.stats()).toEqual(before);
    for (const buffer of held) pool.release(buffer);
  });
});
