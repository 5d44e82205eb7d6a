// strict mode (release detaches the handed-out view) and poisoning.
import { describe, expect, it } from 'vitest';
import { addressOf } from '../lib/index';
import { MiB, expectCode, thrown, usePools } from './fixtures/pool-helpers';
import { NEEDS, itNative, portable } from './helpers/portable';

const makePool = usePools();

describe('BufferPool strict mode', () => {
  it('a released view (and any slice of it) reads as empty', () => {
    const pool = makePool({ maxMemory: 16 * MiB, strict: true });
    expect(pool.strict).toBe(true);
    for (const size of [100, 4096, 65536, 5 * MiB]) {
      const buffer = pool.tryAcquire(size)!;
      expect(buffer.length).toBe(size);
      buffer.fill(0x21);
      const slice = buffer.subarray(1, 50);
      pool.release(buffer);
      expect(buffer.length).toBe(0);
      expect(buffer.byteLength).toBe(0);
      expect(buffer[0]).toBeUndefined();
      expect(slice.length).toBe(0);
      expect(pool.stats().inUse).toBe(0);
    }
  });

  it("a use after release can neither read nor write the next owner's bytes", () => {
    const pool = makePool({ maxMemory: 4 * MiB, strict: true });
    const old = pool.tryAcquire(4096)!;
    const address = portable ? null : addressOf(old);
    old.fill(0x11);
    pool.release(old);
    const next = pool.tryAcquire(4096)!;
    if (portable)
      expect(next[0]).toBe(0x11); // the same slot's bytes (moved to a new ArrayBuffer: no addresses here)
    else expect(addressOf(next)).toBe(address); // the same memory, a new view
    expect(next === old).toBe(false);
    next.fill(0x42);
    expect(old.length).toBe(0);
    expect(old[0]).toBeUndefined();
    old[0] = 0x99; // silently ignored on a detached view
    try {
      old.fill(0x99);
    } catch {
      /* a detached view may refuse; either way it must not reach next */
    }
    expect(next.every((byte) => byte === 0x42)).toBe(true);
    pool.release(next);
  });

  it('detects a double release always, even after the slot went to a new owner', () => {
    const pool = makePool({ maxMemory: 4 * MiB, strict: true });
    const a = pool.tryAcquire(4096)!;
    pool.release(a);
    expectCode(
      thrown(() => pool.release(a)),
      'IobufError',
      'ERR_IOBUF_DOUBLE_RELEASE',
    );
    const b = pool.tryAcquire(4096)!; // same slot
    expectCode(
      thrown(() => pool.release(a)),
      'IobufError',
      'ERR_IOBUF_DOUBLE_RELEASE',
    );
    // b is untouched by a's bad release.
    expect(pool.stats().inUse).toBe(1);
    b.fill(3);
    expect(b[4095]).toBe(3);
    pool.release(b);
    expectCode(
      thrown(() => pool.release(b)),
      'IobufError',
      'ERR_IOBUF_DOUBLE_RELEASE',
    );
    expect(pool.stats()).toMatchObject({ inUse: 0, acquires: 2, releases: 2 });
    // A slice of a live strict buffer is still foreign.
    const c = pool.tryAcquire(4096)!;
    expectCode(
      thrown(() => pool.release(c.subarray(0, 10))),
      'IobufError',
      'ERR_IOBUF_FOREIGN_BUFFER',
    );
    expect(pool.stats().inUse).toBe(1);
    pool.release(c);
  });

  itNative(NEEDS.addresses)('strict buffers are page-aligned and recycled like the others', () => {
    const pool = makePool({ maxMemory: 4 * MiB, strict: true });
    const a = pool.tryAcquire(8192)!;
    expect(addressOf(a) % 4096n).toBe(0n);
    const address = addressOf(a);
    pool.release(a);
    const b = pool.tryAcquire(8000)!;
    expect(addressOf(b)).toBe(address);
    expect(pool.stats().classes.find((row) => row.size === 8192)).toMatchObject({ misses: 1, recycles: 1, inUse: 1 });
    pool.release(b);
  });

  it('in the default mode the same Buffer object comes back for the same size (the documented limit)', () => {
    const pool = makePool({ maxMemory: 4 * MiB });
    const a = pool.tryAcquire(4096)!;
    pool.release(a);
    const b = pool.tryAcquire(4096)!;
    expect(b).toBe(a);
    pool.release(b);
    expectCode(
      thrown(() => pool.release(a)),
      'IobufError',
      'ERR_IOBUF_DOUBLE_RELEASE',
    );
    expect(pool.stats().inUse).toBe(0);
  });
});

describe('BufferPool poison', () => {
  it.each<[boolean | number, number]>([
    [true, 0xa5],
    [0, 0],
    [0x3c, 0x3c],
  ])('poison %s fills released bytes with 0x%s', (poison, byte) => {
    const pool = makePool({ maxMemory: 16 * MiB, poison });
    for (const size of [100, 4096, 5 * MiB]) {
      const buffer = pool.tryAcquire(size)!;
      buffer.fill(0x5a);
      const view = Buffer.from(buffer.buffer, buffer.byteOffset, buffer.length); // what a stale reader still sees
      pool.release(buffer);
      if (size <= 4096)
        expect(
          view.every((x) => x === byte),
          `size ${size}`,
        ).toBe(true);
      expect(pool.stats().inUse).toBe(0);
    }
  });

  it('without poison the released bytes are left as they were', () => {
    const pool = makePool({ maxMemory: 4 * MiB });
    const buffer = pool.tryAcquire(4096)!;
    buffer.fill(0x5a);
    pool.release(buffer);
    expect(buffer.every((x) => x === 0x5a)).toBe(true);
  });

  it('a poisoned slot handed out again works normally', () => {
    const pool = makePool({ maxMemory: 4 * MiB, poison: true });
    const a = pool.tryAcquire(1000)!;
    pool.release(a);
    const b = pool.tryAcquire(1000)!;
    expect(b.every((x) => x === 0xa5)).toBe(true);
    b.fill(1);
    expect(b.every((x) => x === 1)).toBe(true);
    pool.release(b);
    expect(pool.stats()).toMatchObject({ inUse: 0, acquires: 2, releases: 2 });
  });
});
