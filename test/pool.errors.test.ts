// Every error the pool raises, with its exact `code`; after each error path,
// stats().inUse equals what the caller still holds and the pool still works.
import { describe, expect, it } from 'vitest';
import { BufferPool, IobufError } from '../lib/index';
import { KiB, MiB, expectCode, rejection, thrown, turns, usePools } from './fixtures/pool-helpers';

const makePool = usePools();

/** acquire/release still exact: a fresh acquire of `size` works and is counted once. */
function stillExact(pool: BufferPool, held: number, size = 4096): void {
  expect(pool.stats().inUse).toBe(held);
  const before = pool.stats();
  const buffer = pool.tryAcquire(size)!;
  expect(buffer.length).toBe(size);
  buffer.fill(0x3c);
  expect(pool.stats().inUse).toBe(held + 1);
  pool.release(buffer);
  const after = pool.stats();
  expect(after.inUse).toBe(held);
  expect(after.acquires - before.acquires).toBe(1);
  expect(after.releases - before.releases).toBe(1);
}

const BAD_SIZES: Array<[unknown, string, string]> = [
  [0, 'RangeError', 'ERR_OUT_OF_RANGE'],
  [-1, 'RangeError', 'ERR_OUT_OF_RANGE'],
  [-4096, 'RangeError', 'ERR_OUT_OF_RANGE'],
  [NaN, 'RangeError', 'ERR_OUT_OF_RANGE'],
  [1.5, 'RangeError', 'ERR_OUT_OF_RANGE'],
  [Infinity, 'RangeError', 'ERR_OUT_OF_RANGE'],
  ['1', 'TypeError', 'ERR_INVALID_ARG_TYPE'],
  [undefined, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
  [null, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
  [1n, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
];

describe('BufferPool argument errors', () => {
  it.each(BAD_SIZES)('tryAcquire(%s) throws %s %s and counts nothing', (size, name, code) => {
    const pool = makePool({ maxMemory: 4 * MiB });
    const held = pool.tryAcquire(100)!;
    const error = thrown(() => pool.tryAcquire(size as number));
    expectCode(error, name, code);
    expect(error.message).toMatch(/^Expected .* for size but received /);
    stillExact(pool, 1);
    pool.release(held);
  });

  it.each(BAD_SIZES)('acquire/acquireSync/tryLease/lease/acquireMany(%s) fail with %s %s', async (size, name, code) => {
    const pool = makePool({ maxMemory: 4 * MiB });
    const held = pool.tryAcquire(100)!;
    expectCode(await rejection(pool.acquire(size as number)), name, code);
    expectCode(
      thrown(() => pool.acquireSync(size as number)),
      name,
      code,
    );
    expectCode(
      thrown(() => pool.tryLease(size as number)),
      name,
      code,
    );
    expectCode(await rejection(pool.lease(size as number)), name, code);
    expectCode(await rejection(pool.acquireMany(2, size as number)), name, code);
    expectCode(
      thrown(() => pool.tryAcquireMany(2, size as number)),
      name,
      code,
    );
    expect(pool.stats()).toMatchObject({ inUse: 1, waiters: 0, acquires: 1 });
    stillExact(pool, 1);
    pool.release(held);
  });

  it('fixedBufferOf(null) and other non-views: ERR_INVALID_ARG_TYPE; a view that is not a pooled Buffer: null', () => {
    const pool = makePool({ maxMemory: 4 * MiB });
    for (const value of [null, undefined, 5, 'buffer', {}]) {
      const error = thrown(() => pool.fixedBufferOf(value as never));
      expectCode(error, 'TypeError', 'ERR_INVALID_ARG_TYPE');
      expect(error.message).toMatch(/^Expected a Buffer, TypedArray or DataView for buffer but received /);
    }
    expect(pool.fixedBufferOf(Buffer.alloc(4))).toBeNull();
  });

  it('a size above maxMemory is a RangeError, for a class size and an oversize one', async () => {
    const pool = makePool({ maxMemory: MiB });
    for (const size of [MiB + 1, 2 * MiB, 4 * MiB, 4 * MiB + 1, 64 * MiB]) {
      expectCode(
        thrown(() => pool.tryAcquire(size)),
        'RangeError',
        'ERR_OUT_OF_RANGE',
      );
      expectCode(await rejection(pool.acquire(size)), 'RangeError', 'ERR_OUT_OF_RANGE');
      expectCode(
        thrown(() => pool.acquireSync(size)),
        'RangeError',
        'ERR_OUT_OF_RANGE',
      );
    }
    expect(pool.stats()).toMatchObject({ inUse: 0, acquires: 0, osBytes: 0, waiters: 0 });
    // Exactly maxMemory still fits (as one dedicated mapping or one slab).
    const whole = pool.tryAcquire(MiB)!;
    expect(whole.length).toBe(MiB);
    pool.release(whole);
    stillExact(pool, 0);
  });

  it('acquireMany: bad counts and count × size above maxMemory', async () => {
    const pool = makePool({ maxMemory: MiB });
    for (const count of [0, -1, 1.5, NaN, 2 ** 20 + 1]) {
      expectCode(await rejection(pool.acquireMany(count, 4096)), 'RangeError', 'ERR_OUT_OF_RANGE');
      expectCode(
        thrown(() => pool.tryAcquireMany(count, 4096)),
        'RangeError',
        'ERR_OUT_OF_RANGE',
      );
    }
    expectCode(await rejection(pool.acquireMany('2' as unknown as number, 4096)), 'TypeError', 'ERR_INVALID_ARG_TYPE');
    expectCode(await rejection(pool.acquireMany(257, 4096)), 'RangeError', 'ERR_OUT_OF_RANGE');
    expectCode(
      thrown(() => pool.tryAcquireMany(257, 4096)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expect(pool.stats()).toMatchObject({ inUse: 0, acquires: 0, osBytes: 0, waiters: 0 });
    const all = pool.tryAcquireMany(256, 4096)!; // exactly the budget
    expect(all).toHaveLength(256);
    expect(pool.stats().inUse).toBe(256);
    for (const buffer of all) pool.release(buffer);
    stillExact(pool, 0);
  });

  it('bad acquire options', async () => {
    const pool = makePool({ maxMemory: MiB });
    expectCode(await rejection(pool.acquire(10, { timeout: -1 })), 'RangeError', 'ERR_OUT_OF_RANGE');
    expectCode(await rejection(pool.acquire(10, { timeout: 1.5 })), 'RangeError', 'ERR_OUT_OF_RANGE');
    expectCode(await rejection(pool.acquire(10, { timeout: '5' as unknown as number })), 'TypeError', 'ERR_INVALID_ARG_TYPE');
    expectCode(await rejection(pool.acquire(10, { signal: {} as AbortSignal })), 'TypeError', 'ERR_INVALID_ARG_TYPE');
    expectCode(await rejection(pool.acquire(10, null as unknown as object)), 'TypeError', 'ERR_INVALID_ARG_TYPE');
    expectCode(
      thrown(() => pool.acquireSync(10, { timeout: -5 })),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expect(pool.stats()).toMatchObject({ inUse: 0, acquires: 0, waiters: 0 });
  });
});

describe('BufferPool constructor errors', () => {
  it('a budget smaller than one slab (or one page) of the smallest class', () => {
    expectCode(
      thrown(() => new BufferPool({ maxMemory: 100 })),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => new BufferPool({ maxMemory: 4095 })),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    const error = thrown(() => new BufferPool({ sizeClasses: [8192, 16384], maxMemory: 4096 }));
    expectCode(error, 'RangeError', 'ERR_OUT_OF_RANGE');
    expect(error.message).toContain('options.maxMemory');
    // One page holds one slab of a 4 KiB class: allowed, and it works.
    const pool = makePool({ sizeClasses: [4096], maxMemory: 4096 });
    const buffer = pool.tryAcquire(4096)!;
    expect(buffer.length).toBe(4096);
    expect(pool.tryAcquire(1)).toBeNull();
    pool.release(buffer);
  });

  it.each<[string, object, string, string]>([
    ['options not an object', 5 as unknown as object, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
    ['empty sizeClasses', { sizeClasses: [] }, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
    ['sizeClasses not an array', { sizeClasses: 4096 }, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
    ['descending sizeClasses', { sizeClasses: [4096, 1024] }, 'RangeError', 'ERR_OUT_OF_RANGE'],
    ['duplicate sizeClasses', { sizeClasses: [1024, 1024] }, 'RangeError', 'ERR_OUT_OF_RANGE'],
    ['zero size class', { sizeClasses: [0, 1024] }, 'RangeError', 'ERR_OUT_OF_RANGE'],
    ['fractional size class', { sizeClasses: [1000.5] }, 'RangeError', 'ERR_OUT_OF_RANGE'],
    ['maxMemory as a string', { maxMemory: '1000000' }, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
    ['negative retainIdle', { maxMemory: MiB, retainIdle: -1 }, 'RangeError', 'ERR_OUT_OF_RANGE'],
    ['hugePages not boolean', { hugePages: 1 }, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
    ['strict not boolean', { strict: 'yes' }, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
    ['poison above 255', { poison: 256 }, 'RangeError', 'ERR_OUT_OF_RANGE'],
    ['poison as a string', { poison: 'a5' }, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
    ['unknown leakDetection', { leakDetection: 'paranoid' }, 'TypeError', 'ERR_INVALID_ARG_VALUE'],
    ['onLeak not a function', { onLeak: 'log' }, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
  ])('%s', (_what, options, name, code) => {
    expectCode(
      thrown(() => new BufferPool(options)),
      name,
      code,
    );
  });

  it('attach() refuses anything but a handle', () => {
    expectCode(
      thrown(() => BufferPool.attach({} as never)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    const error = thrown(() => BufferPool.attach(null as never));
    expectCode(error, 'TypeError', 'ERR_INVALID_ARG_TYPE');
    expect(error.message).toBe('Expected a BufferPool handle (pool.handle) for handle but received null');
  });

  it('onLeak must be a function', () => {
    const error = thrown(() => new BufferPool({ onLeak: 5 as never }));
    expectCode(error, 'TypeError', 'ERR_INVALID_ARG_TYPE');
    expect(error.message).toBe('Expected a function for options.onLeak but received 5');
  });
});

describe('BufferPool release errors never corrupt the pool', () => {
  it('TypeError for values that are not views', () => {
    const pool = makePool({ maxMemory: MiB });
    const held = pool.tryAcquire(4096)!;
    for (const value of [undefined, null, 42, 'buffer', {}, new ArrayBuffer(8)]) {
      expectCode(
        thrown(() => pool.release(value as Buffer)),
        'TypeError',
        'ERR_INVALID_ARG_TYPE',
      );
    }
    stillExact(pool, 1);
    pool.release(held);
  });

  it("ERR_IOBUF_FOREIGN_BUFFER for a plain Buffer, a typed array, another pool's buffer, a slice or a copy", () => {
    const pool = makePool({ maxMemory: MiB });
    const other = makePool({ maxMemory: MiB });
    const held = pool.tryAcquire(4096)!;
    const theirs = other.tryAcquire(4096)!;
    const foreign: Array<[string, ArrayBufferView]> = [
      ['Buffer.alloc', Buffer.alloc(4096)],
      ['Uint8Array', new Uint8Array(4096)],
      ['other pool', theirs],
      ['subarray', held.subarray(0, 100)],
      ['subarray of all', held.subarray(0)],
      ['slice', held.slice(10)],
      ['Buffer.from(arrayBuffer) over the same memory', Buffer.from(held.buffer, held.byteOffset, held.length)],
      ['copy', Buffer.from(held)],
    ];
    for (const [what, value] of foreign) {
      const error = thrown(() => pool.release(value as Buffer));
      expect(error, what).toBeInstanceOf(IobufError);
      expect(error.code, what).toBe('ERR_IOBUF_FOREIGN_BUFFER');
      expect(pool.stats().inUse, what).toBe(1);
    }
    // The real owners are untouched and still release normally.
    expect(other.stats().inUse).toBe(1);
    other.release(theirs);
    expect(other.stats().inUse).toBe(0);
    stillExact(pool, 1);
    pool.release(held);
    expect(pool.stats().inUse).toBe(0);
  });

  it('ERR_IOBUF_DOUBLE_RELEASE while the slot is free, and the slot is handed out once only', () => {
    const pool = makePool({ maxMemory: MiB });
    const a = pool.tryAcquire(4096)!;
    const b = pool.tryAcquire(4096)!;
    pool.release(a);
    const error = thrown(() => pool.release(a));
    expectCode(error, 'IobufError', 'ERR_IOBUF_DOUBLE_RELEASE');
    expect(pool.stats()).toMatchObject({ inUse: 1, releases: 1 });
    // The double release did not put the slot on the free list twice: two acquires get two slots.
    const c = pool.tryAcquire(4096)!;
    const d = pool.tryAcquire(4096)!;
    expect(c.byteOffset === d.byteOffset && c.buffer === d.buffer).toBe(false);
    c.fill(1);
    d.fill(2);
    expect(c.every((x) => x === 1)).toBe(true);
    expect(pool.stats().inUse).toBe(3);
    for (const x of [b, c, d]) pool.release(x);
    expect(pool.stats().inUse).toBe(0);
    stillExact(pool, 0);
  });

  it('double release of an oversize buffer', () => {
    const pool = makePool({ maxMemory: 16 * MiB });
    const big = pool.tryAcquire(5 * MiB)!;
    pool.release(big);
    expectCode(
      thrown(() => pool.release(big)),
      'IobufError',
      'ERR_IOBUF_DOUBLE_RELEASE',
    );
    expect(pool.stats()).toMatchObject({ inUse: 0, osBytes: 0 });
    stillExact(pool, 0, 5 * MiB);
  });

  it('a bad release while the budget is spent changes neither the budget nor waiters', async () => {
    const pool = makePool({ sizeClasses: [65536], maxMemory: 128 * KiB });
    const a = pool.tryAcquire(65536)!;
    const b = pool.tryAcquire(65536)!;
    const waiting = pool.acquire(65536);
    expect(pool.stats().waiters).toBe(1);
    expectCode(
      thrown(() => pool.release(a.subarray(1))),
      'IobufError',
      'ERR_IOBUF_FOREIGN_BUFFER',
    );
    expectCode(
      thrown(() => pool.release(Buffer.alloc(65536))),
      'IobufError',
      'ERR_IOBUF_FOREIGN_BUFFER',
    );
    await turns();
    expect(pool.stats()).toMatchObject({ inUse: 2, waiters: 1, osBytes: 128 * KiB });
    pool.release(a);
    const c = await waiting;
    expect(c.length).toBe(65536);
    expect(pool.stats()).toMatchObject({ inUse: 2, waiters: 0 });
    pool.release(b);
    pool.release(c);
    expect(pool.stats().inUse).toBe(0);
  });
});

describe('BufferPool after close', () => {
  it('every call fails with ERR_IOBUF_POOL_CLOSED; stats still answer', async () => {
    const pool = makePool({ maxMemory: MiB });
    const a = pool.tryAcquire(4096)!;
    pool.release(a);
    await pool.close();
    const closed = (error: Error & { code?: string }) => expectCode(error, 'IobufError', 'ERR_IOBUF_POOL_CLOSED');
    closed(thrown(() => pool.tryAcquire(4096)));
    closed(thrown(() => pool.tryAcquire(10 * MiB)));
    closed(await rejection(pool.acquire(4096)));
    closed(thrown(() => pool.acquireSync(4096)));
    closed(await rejection(pool.acquireMany(2, 4096)));
    closed(thrown(() => pool.tryAcquireMany(2, 4096)));
    closed(thrown(() => pool.tryLease(4096)));
    closed(await rejection(pool.lease(4096)));
    closed(thrown(() => pool.release(a)));
    closed(thrown(() => BufferPool.attach(pool.handle)));
    expect(pool.stats()).toMatchObject({ inUse: 0, osBytes: 0, acquires: 1, releases: 1 });
    // A second close is harmless.
    await expect(pool.close()).resolves.toBeUndefined();
    await expect(pool.close({ force: true })).resolves.toBeUndefined();
  });

  it('bad close options', async () => {
    const pool = makePool({ maxMemory: MiB });
    expectCode(await rejection(pool.close({ timeout: -1 })), 'RangeError', 'ERR_OUT_OF_RANGE');
    expectCode(await rejection(pool.close({ force: 1 as unknown as boolean })), 'TypeError', 'ERR_INVALID_ARG_TYPE');
    expectCode(await rejection(pool.close(7 as unknown as object)), 'TypeError', 'ERR_INVALID_ARG_TYPE');
    // None of them closed the pool.
    stillExact(pool, 0);
  });
});
