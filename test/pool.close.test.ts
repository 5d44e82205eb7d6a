// close(): waits for outstanding buffers, timeout, force (outstanding views read
// as empty), and idle memory beyond retainIdle going back to the OS.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { addressOf } from '../lib/index';
import { KiB, MiB, expectCode, rejection, settled, thrown, turns, usePools } from './fixtures/pool-helpers';
import { sanitized } from './helpers/memory-proc';
import { NEEDS, itNative } from './helpers/portable';

const makePool = usePools();

/** Whether `address` lies in any mapping of this process (/proc/self/maps). */
/**
 * The /proc/self/maps range ("start-end") holding `address`, or null. Tests
 * compare it before and after an unmap rather than asking "is anything mapped
 * here": the freed hole may be reused at once. Under ASan even that cannot
 * tell: its allocator refills the hole and the kernel merges it back into a
 * range identical to the old one, so there the check is skipped (osBytes,
 * the detached views and every count are still checked).
 */
function mappingAt(address: bigint): string | null {
  for (const line of readFileSync('/proc/self/maps', 'latin1').split('\n')) {
    const match = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (match && BigInt(`0x${match[1]}`) <= address && address < BigInt(`0x${match[2]}`)) return `${match[1]}-${match[2]}`;
  }
  return null;
}

/** Whether any mapping holds `address` (for counting slabs still mapped). */
function isMapped(address: bigint): boolean {
  return mappingAt(address) !== null;
}

function rss(): number {
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]) * KiB;
}

describe('BufferPool close', () => {
  itNative(NEEDS.addresses)('waits until every outstanding buffer is released, then unmaps', async () => {
    const pool = makePool({ maxMemory: 16 * MiB });
    const a = pool.tryAcquire(4096)!;
    const b = pool.tryAcquire(5 * MiB)!; // oversize
    const c = pool.tryAcquire(100)!;
    const address = addressOf(a);
    const closing = pool.close();
    // Closed at once for new acquires, but the memory stays while buffers are out.
    expectCode(
      thrown(() => pool.tryAcquire(4096)),
      'IobufError',
      'ERR_IOBUF_POOL_CLOSED',
    );
    expect(await settled(closing)).toBe(false);
    a.fill(7);
    expect(a[4095]).toBe(7);
    pool.release(a);
    expect(await settled(closing)).toBe(false);
    expect(pool.stats().inUse).toBe(2);
    pool.release(b);
    expect(await settled(closing)).toBe(false);
    const mapped = mappingAt(address);
    expect(mapped).not.toBeNull();
    pool.release(c);
    await closing;
    expect(pool.stats()).toMatchObject({ inUse: 0, osBytes: 0, idleBytes: 0, acquires: 3, releases: 3 });
    if (!sanitized) expect(mappingAt(address)).not.toBe(mapped); // see mappingAt
  });

  itNative(NEEDS.addresses)('a close with nothing out resolves at once and unmaps the idle slabs', async () => {
    const pool = makePool({ maxMemory: 16 * MiB });
    const a = pool.tryAcquire(65536)!;
    const address = addressOf(a);
    pool.release(a);
    await turns();
    expect(pool.stats().osBytes).toBeGreaterThan(0);
    const mapped = mappingAt(address);
    expect(mapped).not.toBeNull();
    await pool.close();
    expect(pool.stats().osBytes).toBe(0);
    if (!sanitized) expect(mappingAt(address)).not.toBe(mapped); // see mappingAt
  });

  itNative(NEEDS.addresses)('times out with ERR_IOBUF_CLOSE_TIMEOUT; then force detaches outstanding buffers', async () => {
    const pool = makePool({ maxMemory: 16 * MiB });
    const held = [pool.tryAcquire(4096)!, pool.tryAcquire(300)!, pool.tryAcquire(5 * MiB)!];
    held.forEach((buffer) => buffer.fill(9));
    const slice = held[0].subarray(10, 20);
    const address = addressOf(held[0]);
    const mapped = mappingAt(address);
    expectCode(await rejection(pool.close({ timeout: 5 })), 'IobufError', 'ERR_IOBUF_CLOSE_TIMEOUT');
    expect(pool.stats()).toMatchObject({ inUse: 3 });
    expect(held.every((buffer) => buffer.length > 0 && buffer[0] === 9)).toBe(true);
    await pool.close({ force: true });
    // No view can reach the freed memory: each reads as empty, a slice too.
    for (const buffer of held) {
      expect(buffer.length).toBe(0);
      expect(buffer.byteLength).toBe(0);
      expect(buffer[0]).toBeUndefined();
    }
    expect(slice.length).toBe(0);
    if (!sanitized) expect(mappingAt(address)).not.toBe(mapped); // see mappingAt
    expect(pool.stats()).toMatchObject({ inUse: 0, osBytes: 0, inUseBytes: 0 });
    // Releasing one of them now is a clear error, not a crash or a count change.
    expectCode(
      thrown(() => pool.release(held[0])),
      'IobufError',
      'ERR_IOBUF_POOL_CLOSED',
    );
    expect(pool.stats().inUse).toBe(0);
  });

  it('a pending close resolves when force-closed meanwhile', async () => {
    const pool = makePool({ maxMemory: MiB });
    const a = pool.tryAcquire(4096)!;
    const waiting = pool.close();
    expect(await settled(waiting)).toBe(false);
    await pool.close({ force: true });
    await expect(waiting).resolves.toBeUndefined();
    expect(a.length).toBe(0);
  });

  it('Symbol.dispose force-closes', async () => {
    const pool = makePool({ maxMemory: MiB });
    const a = pool.tryAcquire(4096)!;
    pool[Symbol.dispose]();
    await turns();
    expect(a.length).toBe(0);
    expectCode(
      thrown(() => pool.tryAcquire(1)),
      'IobufError',
      'ERR_IOBUF_POOL_CLOSED',
    );
    expect(pool.stats()).toMatchObject({ inUse: 0, osBytes: 0 });
  });
});

describe('BufferPool retainIdle', () => {
  itNative(NEEDS.addresses)('unmaps idle slabs beyond retainIdle after release (gone from /proc/self/maps, osBytes drops)', async () => {
    // 1 MiB class: slabs of 2 MiB (two slots) capped at maxMemory / 8 = 1 MiB here: one slot per slab.
    const pool = makePool({ sizeClasses: [4096, MiB], maxMemory: 8 * MiB, retainIdle: MiB, hugePages: false });
    const held = Array.from({ length: 4 }, () => pool.tryAcquire(MiB)!);
    const addresses = held.map((b) => addressOf(b));
    expect(pool.stats().osBytes).toBe(4 * MiB);
    for (const address of addresses) expect(isMapped(address)).toBe(true);
    for (const buffer of held) pool.release(buffer);
    await turns(3);
    const stats = pool.stats();
    expect(stats.osBytes).toBe(MiB);
    expect(stats.idleBytes).toBe(MiB);
    expect(addresses.filter((address) => isMapped(address))).toHaveLength(1);
    // The retained slab is the one handed out next (a recycle, not a miss).
    const again = pool.tryAcquire(MiB)!;
    expect(addresses).toContain(addressOf(again));
    expect(pool.stats().classes[1]).toMatchObject({ misses: 4, recycles: 1 });
    pool.release(again);
  });

  itNative(NEEDS.addresses)('keeps idle slabs mapped within retainIdle', async () => {
    const pool = makePool({ sizeClasses: [4096, MiB], maxMemory: 8 * MiB, retainIdle: 8 * MiB, hugePages: false });
    const held = Array.from({ length: 4 }, () => pool.tryAcquire(MiB)!);
    const addresses = held.map((b) => addressOf(b));
    for (const buffer of held) pool.release(buffer);
    await turns(3);
    expect(pool.stats()).toMatchObject({ osBytes: 4 * MiB, idleBytes: 4 * MiB });
    expect(addresses.every((address) => isMapped(address))).toBe(true);
  });

  itNative(NEEDS.kernel)('gives touched memory back to the OS: RSS drops with retainIdle 0', async () => {
    // hugePages: false — hugetlb pages (reserved system-wide while
    // test/memory.huge-pages runs, in any checkout on the machine) are not counted in RSS.
    const pool = makePool({ sizeClasses: [4 * MiB], maxMemory: 64 * MiB, retainIdle: 0, hugePages: false });
    const held = Array.from({ length: 8 }, () => pool.tryAcquire(4 * MiB)!);
    for (const buffer of held) buffer.fill(0x77);
    const touched = rss();
    for (const buffer of held) pool.release(buffer);
    await turns(3);
    expect(pool.stats()).toMatchObject({ osBytes: 0, idleBytes: 0, inUse: 0 });
    const after = rss();
    expect(touched - after).toBeGreaterThan(24 * MiB);
  });
});
