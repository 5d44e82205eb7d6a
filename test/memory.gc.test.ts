// Allocations that are never freed are released by their finalizers once the
// garbage collector finds them unreachable (and the event loop turns: Node
// runs finalizers after it). Runs under --expose-gc (vitest.config.ts).
import { describe, expect, test } from 'vitest';
import { allocAligned, allocHuge } from '../lib/index';
import { MiB, collectGarbage, sanitized, statusBytes } from './helpers/memory-proc';

const COUNT = 200;
const SIZE = 4 * MiB;
const TOTAL = COUNT * SIZE;

/** gc() and event-loop turns until `done()` or 20 rounds; returns how many rounds it took. */
async function collectUntil(done: () => boolean): Promise<number> {
  for (let round = 1; round <= 20; round++) {
    await collectGarbage(1);
    if (done()) return round;
  }
  return Infinity;
}

describe('finalizers release unreachable allocations', () => {
  test('mapped: 200 × 4 MiB (alignment 2 MiB), touched, dropped → RSS and external fall back', async () => {
    await collectGarbage();
    const rss0 = statusBytes('VmRSS');
    const external0 = process.memoryUsage().external;
    let buffers: Buffer[] | null = [];
    for (let i = 0; i < COUNT; i++) {
      const buffer = allocAligned(SIZE, { alignment: 2 * MiB });
      buffer.fill(i & 0xff);
      buffers.push(buffer);
    }
    expect(statusBytes('VmRSS') - rss0).toBeGreaterThanOrEqual(TOTAL * 0.95);
    expect(process.memoryUsage().external - external0).toBeGreaterThanOrEqual(TOTAL - 1 * MiB);
    expect(buffers[COUNT - 1][SIZE - 1]).toBe((COUNT - 1) & 0xff);

    buffers = null;
    // Under AddressSanitizer the shadow memory of 800 MiB of mappings (~100 MiB)
    // stays resident after they are unmapped: RSS is checked in a plain build only.
    const rssFell = () => sanitized || statusBytes('VmRSS') - rss0 < 64 * MiB;
    const rounds = await collectUntil(() => rssFell() && process.memoryUsage().external - external0 < 64 * MiB);
    expect(rounds).toBeLessThanOrEqual(20);
    expect(rssFell()).toBe(true);
    expect(process.memoryUsage().external - external0).toBeLessThan(64 * MiB);
  });

  test.skipIf(sanitized)('heap path: 200 × 4 MiB, touched, dropped → RSS and arrayBuffers fall back', async () => {
    await collectGarbage();
    const rss0 = statusBytes('VmRSS');
    const arrayBuffers0 = process.memoryUsage().arrayBuffers;
    let buffers: Buffer[] | null = [];
    for (let i = 0; i < COUNT; i++) {
      const buffer = allocAligned(SIZE);
      buffer.fill(1);
      buffers.push(buffer);
    }
    expect(statusBytes('VmRSS') - rss0).toBeGreaterThanOrEqual(TOTAL * 0.95);
    expect(process.memoryUsage().arrayBuffers - arrayBuffers0).toBeGreaterThanOrEqual(TOTAL - 1 * MiB);

    buffers = null;
    const rounds = await collectUntil(
      () => statusBytes('VmRSS') - rss0 < 64 * MiB && process.memoryUsage().arrayBuffers - arrayBuffers0 < 64 * MiB,
    );
    expect(rounds).toBeLessThanOrEqual(20);
    expect(process.memoryUsage().arrayBuffers - arrayBuffers0).toBeLessThan(64 * MiB);
  });

  test('allocHuge: 32 × 4 MiB, touched, dropped → RSS (and hugetlb use) fall back', async () => {
    await collectGarbage();
    const used = () => statusBytes('VmRSS') + statusBytes('HugetlbPages');
    const used0 = used();
    let buffers: Buffer[] | null = [];
    for (let i = 0; i < 32; i++) {
      const buffer = allocHuge(SIZE, { fallback: 'normal' });
      buffer.fill(1);
      buffers.push(buffer);
    }
    expect(used() - used0).toBeGreaterThanOrEqual(32 * SIZE * 0.95);
    buffers = null;
    const rounds = await collectUntil(() => used() - used0 < 32 * MiB);
    expect(rounds).toBeLessThanOrEqual(20);
  });

  test('views kept alive keep the memory: a subarray alone holds its allocation', async () => {
    let buffer: Buffer | null = allocAligned(SIZE, { alignment: 2 * MiB });
    buffer.fill(0x5c);
    const tail = buffer.subarray(SIZE - 16);
    buffer = null;
    await collectGarbage(5);
    expect(tail.length).toBe(16);
    expect(tail.every((byte) => byte === 0x5c)).toBe(true);
  });
});
