// Who owns what: putBytes keeps the caller's memory (no copy), putOwned takes
// a pooled buffer over and releases it exactly once, putGatherer moves
// ownership, compact releases what it copied, reset/dispose give everything
// back, a spent budget falls back to the heap (or throws, if asked), and bad
// options and misuse get exact codes.
import { afterEach, describe, expect, it } from 'vitest';
import { BufferPool } from '../lib/pool';
import { Gatherer } from '../lib/gather';
import { expectCode, thrown } from './fixtures/pool-helpers';
import { bytesOf, pattern } from './fixtures/gather-helpers';

const MiB = 1 << 20;
const pools: BufferPool[] = [];
function makePool(options: ConstructorParameters<typeof BufferPool>[0] = {}): BufferPool {
  const pool = new BufferPool({ maxMemory: 64 * MiB, leakDetection: 'off', ...options });
  pools.push(pool);
  return pool;
}
afterEach(async () => {
  for (const pool of pools.splice(0)) await pool.close({ force: true });
});

describe('putBytes copies nothing', () => {
  it("the segment is the caller's Buffer itself; a change to it shows in the message", () => {
    const gatherer = new Gatherer({ pool: makePool() });
    const blob = pattern(500_000, 1);
    gatherer.putU32BE(1).putBytes(blob).putU32BE(2);
    const segments = gatherer.segments();
    expect(segments).toHaveLength(3);
    expect(segments[1]).toBe(blob);
    blob[0] ^= 0xff;
    expect(bytesOf(gatherer)[4]).toBe(blob[0]);
    gatherer.reset();
  });

  it('a Uint8Array or a DataView: the segment has the same ArrayBuffer and offset', () => {
    const gatherer = new Gatherer({ pool: makePool() });
    const memory = new ArrayBuffer(1000);
    const bytes = new Uint8Array(memory, 100, 300);
    const view = new DataView(memory, 600, 50);
    const words = new Uint32Array(memory, 800, 10);
    gatherer.putBytes(bytes).putBytes(view).putBytes(words);
    const segments = gatherer.segments();
    expect(segments.map((s) => [s.buffer, s.byteOffset, s.length])).toEqual([
      [memory, 100, 300],
      [memory, 600, 50],
      [memory, 800, 40],
    ]);
    expect(segments.every((s) => s.buffer === memory)).toBe(true);
    gatherer.reset();
  });

  it('a borrowed blob is never released or touched by the gatherer', () => {
    const pool = makePool();
    const mine = pool.tryAcquire(4096)!; // pooled, but lent by reference, not owned
    mine.fill(7);
    const gatherer = new Gatherer({ pool });
    gatherer.putBytes(mine);
    gatherer.reset();
    expect(pool.stats().inUse).toBe(1);
    expect(mine.every((b) => b === 7)).toBe(true);
    pool.release(mine);
  });

  it('an empty view adds no segment; a non-view is a TypeError', () => {
    const gatherer = new Gatherer({ pool: makePool() });
    gatherer.putBytes(new Uint8Array(0));
    expect(gatherer.segmentCount).toBe(0);
    expectCode(
      thrown(() => gatherer.putBytes('text' as any)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    expectCode(
      thrown(() => gatherer.putBytes(new ArrayBuffer(4) as any)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
  });
});

describe('putOwned', () => {
  it('takes the pooled buffer by reference and releases it on reset(), once', () => {
    const pool = makePool();
    const owned = pool.tryAcquire(70_000)!;
    owned.fill(3);
    const gatherer = new Gatherer({ pool });
    gatherer.putOwned(owned);
    expect(gatherer.segments()[0]).toBe(owned);
    expect(pool.stats().inUse).toBe(1);
    const releases = pool.stats().releases;
    gatherer.reset();
    expect(pool.stats().inUse).toBe(0);
    expect(pool.stats().releases - releases).toBe(1);
    gatherer.reset(); // nothing twice
    expect(pool.stats().releases - releases).toBe(1);
  });

  it('releases into the pool the buffer came from, which may be another than the scratch pool', () => {
    const scratch = makePool();
    const other = makePool();
    const gatherer = new Gatherer({ pool: scratch });
    gatherer.putU8(1).putOwned(other.tryAcquire(1000)!);
    expect([scratch.stats().inUse, other.stats().inUse]).toEqual([1, 1]);
    gatherer.reset();
    expect([scratch.stats().inUse, other.stats().inUse]).toEqual([0, 0]);
  });

  it('refuses memory that is not a pooled buffer still out (ERR_IOBUF_FOREIGN_BUFFER), and the same buffer twice', () => {
    const pool = makePool();
    const gatherer = new Gatherer({ pool });
    const pooled = pool.tryAcquire(512)!;
    expectCode(
      thrown(() => gatherer.putOwned(Buffer.alloc(10))),
      'IobufError',
      'ERR_IOBUF_FOREIGN_BUFFER',
    );
    expectCode(
      thrown(() => gatherer.putOwned(pooled.subarray(1))),
      'IobufError',
      'ERR_IOBUF_FOREIGN_BUFFER',
    );
    expectCode(
      thrown(() => gatherer.putOwned(new Uint8Array(pooled.buffer, pooled.byteOffset, 512) as Buffer)),
      'IobufError',
      'ERR_IOBUF_FOREIGN_BUFFER',
    );
    gatherer.putOwned(pooled);
    expectCode(
      thrown(() => gatherer.putOwned(pooled)),
      'IobufError',
      'ERR_IOBUF_DOUBLE_RELEASE',
    );
    expectCode(
      thrown(() => gatherer.putOwned(null as any)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    expect(gatherer.segmentCount).toBe(1);
    gatherer.reset();
    expect(pool.stats().inUse).toBe(0);
    expectCode(
      thrown(() => gatherer.putOwned(pooled)),
      'IobufError',
      'ERR_IOBUF_FOREIGN_BUFFER',
    ); // released: no longer out
  });
});

describe('putGatherer', () => {
  it('with blobs: moves segments and ownership; the other is left empty and owns nothing', () => {
    const pool = makePool();
    const a = new Gatherer({ pool });
    const b = new Gatherer({ pool });
    const blob = pattern(10_000, 2);
    const owned = pool.tryAcquire(2000)!;
    owned.fill(9);
    a.putString('a:');
    b.putString('b:').putBytes(blob).putOwned(owned).putU8(0xbb);
    const inUse = pool.stats().inUse; // a's chunk, b's chunk, owned
    expect(inUse).toBe(3);
    a.putGatherer(b).putString(':end');
    expect(b.byteLength).toBe(0);
    expect(b.segmentCount).toBe(0);
    b.reset(); // b owns nothing now: releases nothing
    expect(pool.stats().inUse).toBe(inUse);
    const segments = a.segments();
    expect(segments.some((s) => s === blob)).toBe(true);
    expect(segments.some((s) => s === owned)).toBe(true);
    expect(
      bytesOf(a).equals(Buffer.concat([Buffer.from('a:b:'), blob, Buffer.alloc(2000, 9), Buffer.from([0xbb]), Buffer.from(':end')])),
    ).toBe(true);
    a.reset();
    expect(pool.stats().inUse).toBe(0);
    b.putU8(1); // b stays usable
    b.reset();
  });

  it("with scratch bytes only: they join the current scratch (one segment) and the other's chunk goes back at once", () => {
    const pool = makePool();
    const a = new Gatherer({ pool });
    const b = new Gatherer({ pool });
    a.putU32BE(1);
    b.putU32BE(2).putString('two');
    expect(pool.stats().inUse).toBe(2);
    a.putGatherer(b).putU32BE(3);
    expect(pool.stats().inUse).toBe(1);
    expect(a.segments()).toHaveLength(1);
    expect(bytesOf(a)).toEqual(Buffer.from([0, 0, 0, 1, 0, 0, 0, 2, 0x74, 0x77, 0x6f, 0, 0, 0, 3]));
    a.reset();
  });

  it('refuses itself and a non-gatherer', () => {
    const pool = makePool();
    const a = new Gatherer({ pool });
    expectCode(
      thrown(() => a.putGatherer(a)),
      'TypeError',
      'ERR_INVALID_ARG_VALUE',
    );
    expectCode(
      thrown(() => a.putGatherer({} as any)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
  });
});

describe('compact', () => {
  it('merges adjacent small segments into one, leaves large ones where they are, releases owned buffers it copied', () => {
    const pool = makePool();
    const gatherer = new Gatherer({ pool });
    const large = pattern(5000, 3);
    const owned = pool.tryAcquire(100)!;
    owned.fill(4);
    gatherer.putU8(1).putBytes(Buffer.from('ab')).putOwned(owned).putBytes(Buffer.from('cd'));
    gatherer.putBytes(large).putBytes(Buffer.from('ef')).putU8(2);
    const expected = bytesOf(gatherer);
    expect(gatherer.segments().map((s) => s.length)).toEqual([1, 2, 100, 2, 5000, 2, 1]);
    expect(pool.stats().inUse).toBe(2);
    gatherer.compact(1000);
    const segments = gatherer.segments();
    expect(segments.map((s) => s.length)).toEqual([105, 5000, 3]);
    expect(segments[1]).toBe(large);
    expect(bytesOf(gatherer).equals(expected)).toBe(true);
    expect(pool.stats().inUse).toBe(1); // the owned buffer was copied and released
    gatherer.reset();
    expect(pool.stats().inUse).toBe(0);
  });

  it('64 small puts and compact: one segment, one chunk', () => {
    const pool = makePool();
    const gatherer = new Gatherer({ pool });
    for (let i = 0; i < 16; i++)
      gatherer
        .putU8(i)
        .putU16BE(i)
        .putU32LE(i)
        .putF64BE(i / 3);
    gatherer.compact(4096);
    expect(gatherer.segments()).toHaveLength(1);
    expect(gatherer.byteLength).toBe(16 * 15);
    expect(pool.stats().inUse).toBe(1);
    gatherer.reset();
  });

  it('frees scratch chunks no segment uses any more', () => {
    const pool = makePool();
    const gatherer = new Gatherer({ pool, chunkSize: 64 });
    for (let i = 0; i < 10; i++) gatherer.putString('x'.repeat(40)).putBytes(Buffer.from([i]));
    expect(pool.stats().inUse).toBe(10);
    const expected = bytesOf(gatherer);
    gatherer.compact(100);
    expect(bytesOf(gatherer).equals(expected)).toBe(true);
    expect(gatherer.segments()).toHaveLength(1);
    // Everything now lives in one 410-byte scratch chunk.
    expect(pool.stats().inUse).toBe(1);
    gatherer.reset();
  });

  it("a compact that fails midway (onBudgetExhausted: 'throw') changes nothing: blobs merged later still go by reference", () => {
    const pool = makePool({ maxMemory: 64 * 1024, sizeClasses: [4096] });
    const gatherer = new Gatherer({ pool, chunkSize: 64, onBudgetExhausted: 'throw' });
    const a = Buffer.from('aa');
    const b = Buffer.from('bb');
    // Run 1: two small blobs; a large scratch segment; run 2: two small scratch segments in two chunks.
    gatherer.putBytes(a).putBytes(b).putSlice(pattern(1200, 1)).putSlice(pattern(50, 2)).putSlice(pattern(50, 3));
    const expected = bytesOf(gatherer);
    const hog: Buffer[] = [];
    for (let buffer = pool.tryAcquire(4096); buffer !== null; buffer = pool.tryAcquire(4096)) hog.push(buffer);
    // Run 1 fits in the last chunk's room; run 2 needs a new chunk the budget cannot give.
    expectCode(
      thrown(() => gatherer.compact(1000)),
      'IobufError',
      'ERR_IOBUF_BUDGET_EXHAUSTED',
    );
    expect(bytesOf(gatherer).equals(expected)).toBe(true);
    const into = new Gatherer({ pool: makePool() });
    into.putGatherer(gatherer);
    const segments = into.segments();
    expect(segments.some((segment) => segment === a)).toBe(true); // by reference, not copied as scratch
    expect(segments.some((segment) => segment === b)).toBe(true);
    expect(bytesOf(into).equals(expected)).toBe(true);
    into.reset();
    for (const buffer of hog) pool.release(buffer);
    expect(pool.stats().inUse).toBe(0);
  });

  it('rejects a bad threshold', () => {
    const gatherer = new Gatherer({ pool: makePool() });
    expectCode(
      thrown(() => gatherer.compact(-1)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => gatherer.compact('8' as any)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
  });
});

describe('reset, dispose, budget, pool state', () => {
  it('`using` gives every pooled buffer back at scope exit', () => {
    const pool = makePool();
    {
      using gatherer = new Gatherer({ pool });
      gatherer.putU64BE(1n).putOwned(pool.tryAcquire(300)!);
      expect(pool.stats().inUse).toBe(2);
    }
    expect(pool.stats().inUse).toBe(0);
  });

  it('a spent budget: puts go on in heap chunks by default, the pool untouched', () => {
    const pool = makePool({ maxMemory: 64 * 1024, sizeClasses: [4096] });
    const hog: Buffer[] = [];
    for (let b = pool.tryAcquire(4096); b !== null; b = pool.tryAcquire(4096)) hog.push(b);
    const inUse = pool.stats().inUse;
    const gatherer = new Gatherer({ pool });
    for (let i = 0; i < 3000; i++) gatherer.putU32BE(i); // 12,000 bytes: three heap chunks
    expect(pool.stats().inUse).toBe(inUse);
    const expected = Buffer.alloc(12_000);
    for (let i = 0; i < 3000; i++) expected.writeUInt32BE(i, 4 * i);
    expect(bytesOf(gatherer).equals(expected)).toBe(true);
    gatherer.reset();
    expect(pool.stats().inUse).toBe(inUse);
    for (const b of hog) pool.release(b);
  });

  it("a spent budget with onBudgetExhausted: 'throw': ERR_IOBUF_BUDGET_EXHAUSTED and the put has no effect", () => {
    const pool = makePool({ maxMemory: 64 * 1024, sizeClasses: [4096] });
    const gatherer = new Gatherer({ pool, onBudgetExhausted: 'throw' });
    gatherer.putU8(1);
    const hog: Buffer[] = [];
    for (let b = pool.tryAcquire(4096); b !== null; b = pool.tryAcquire(4096)) hog.push(b);
    gatherer.putString('x'.repeat(4095)); // fills the chunk it has
    expectCode(
      thrown(() => gatherer.putU16BE(2)),
      'IobufError',
      'ERR_IOBUF_BUDGET_EXHAUSTED',
    );
    expect(gatherer.byteLength).toBe(4096);
    pool.release(hog.pop()!);
    gatherer.putU16BE(2); // memory again: the put works
    expect(gatherer.byteLength).toBe(4098);
    gatherer.reset();
    for (const b of hog) pool.release(b);
    expect(pool.stats().inUse).toBe(0);
  });

  it("a chunk larger than the whole budget: a heap chunk by default, ERR_IOBUF_BUDGET_EXHAUSTED with 'throw' (not a RangeError about a size the caller never passed)", () => {
    const pool = makePool({ maxMemory: 1 * MiB });
    const big = pattern(MiB + 1, 4);
    const gatherer = new Gatherer({ pool });
    gatherer.putU8(7).putSlice(big);
    expect(gatherer.reserve(MiB + 1)).toBe(1 + big.length);
    expect(bytesOf(gatherer).equals(Buffer.concat([Buffer.from([7]), big, Buffer.alloc(MiB + 1)]))).toBe(true);
    expect(pool.stats().inUse).toBe(1); // the first chunk (for the u8); the large ones are heap chunks
    gatherer.reset();
    const wide = new Gatherer({ pool, chunkSize: 2 * MiB });
    wide.putU32BE(1);
    expect(bytesOf(wide)).toEqual(Buffer.from([0, 0, 0, 1]));
    wide.reset();
    const strict = new Gatherer({ pool, onBudgetExhausted: 'throw' });
    strict.putU8(1);
    expectCode(
      thrown(() => strict.putSlice(big)),
      'IobufError',
      'ERR_IOBUF_BUDGET_EXHAUSTED',
    );
    expect(strict.byteLength).toBe(1);
    strict.reset();
    expect(pool.stats().inUse).toBe(0);
  });

  it('a pool closed with force: puts throw ERR_IOBUF_POOL_CLOSED, reset() still succeeds', async () => {
    const pool = makePool();
    const gatherer = new Gatherer({ pool, chunkSize: 64 });
    gatherer.putString('x'.repeat(64));
    await pool.close({ force: true });
    expectCode(
      thrown(() => gatherer.putU8(1)),
      'IobufError',
      'ERR_IOBUF_POOL_CLOSED',
    );
    gatherer.reset();
    expect(gatherer.byteLength).toBe(0);
  });

  it('a strict pool: scratch and owned buffers are detached when released, and a reused gatherer still writes the right bytes', () => {
    const pool = makePool({ strict: true });
    const gatherer = new Gatherer({ pool, chunkSize: 64 });
    const owned = pool.tryAcquire(100)!;
    owned.fill(1);
    gatherer.putString('a'.repeat(50)).putOwned(owned).putU32BE(7);
    const segments = gatherer.segments();
    expect(
      Buffer.concat(segments).equals(Buffer.concat([Buffer.from('a'.repeat(50)), Buffer.alloc(100, 1), Buffer.from([0, 0, 0, 7])])),
    ).toBe(true);
    gatherer.reset();
    expect(pool.stats().inUse).toBe(0);
    expect(owned.length).toBe(0); // detached by the release
    expect(segments.every((s) => s.length === 0 || s.buffer.byteLength === 0)).toBe(true);
    for (let round = 0; round < 3; round++) {
      gatherer.reset().putU16LE(round).putString('xyz');
      expect(bytesOf(gatherer)).toEqual(Buffer.from([round, 0, 0x78, 0x79, 0x7a]));
    }
    gatherer.reset();
    expect(pool.stats().inUse).toBe(0);
  });

  it('checks its options', () => {
    const pool = makePool();
    expectCode(
      thrown(() => new Gatherer(undefined as any)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    expectCode(
      thrown(() => new Gatherer({} as any)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    expectCode(
      thrown(() => new Gatherer({ pool: {} as any })),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    expectCode(
      thrown(() => new Gatherer({ pool, chunkSize: 16 })),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => new Gatherer({ pool, onBudgetExhausted: 'wait' as any })),
      'TypeError',
      'ERR_INVALID_ARG_VALUE',
    );
    expect(new Gatherer({ pool }).chunkSize).toBe(4096);
  });
});
