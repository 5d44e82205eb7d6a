// What the addon reads from the machine instead of assuming x86-64's values,
// and how the pool lays out memory on machines with other page sizes (arm64
// kernels run with 4, 16 or 64 KiB base pages, whose PMD huge pages are 2 MiB,
// 32 MiB and 512 MiB). The live values are checked against what the kernel
// says here; the other page sizes through the pool's layout function.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { describe, expect, it } from 'vitest';
import { native } from '../lib/binding';
import { BufferPool, cacheLineSize, hugePageSize, isAligned, pageSize } from '../lib/index';
import { classLayout, type PageGeometry } from '../lib/pool';

const KiB = 1024;
const MiB = 1024 * KiB;
const DEFAULT_CLASSES = Array.from({ length: 15 }, (_, i) => 256 << i);

const readNumber = (file: string): number | undefined => (existsSync(file) ? Number.parseInt(readFileSync(file, 'utf8'), 10) : undefined);

describe('errno names (no strerrorname_np: musl has none, glibc only from 2.32)', () => {
  // glibc's strerrorname_np names the primary of each alias pair.
  const PRIMARY: Record<string, string> = { EWOULDBLOCK: 'EAGAIN', ENOTSUP: 'EOPNOTSUPP', EDEADLOCK: 'EDEADLK' };

  it('names every errno Node knows the way glibc does', () => {
    const entries = Object.entries(os.constants.errno);
    expect(entries.length).toBeGreaterThan(70);
    for (const [name, value] of entries) {
      expect([value, native.errnoName(value)]).toEqual([value, PRIMARY[name] ?? name]);
    }
  });

  it('names the Linux-only errnos Node does not list', () => {
    // Values from the kernel's asm-generic/errno.h (the same on x86-64 and arm64).
    expect(native.errnoName(133)).toBe('EHWPOISON');
    expect(native.errnoName(132)).toBe('ERFKILL');
    expect(native.errnoName(121)).toBe('EREMOTEIO');
    expect(native.errnoName(62)).toBe('ETIME');
  });

  it('gives no name to numbers that are not errnos', () => {
    expect(native.errnoName(0)).toBeUndefined();
    expect(native.errnoName(-1)).toBeUndefined();
    expect(native.errnoName(4095)).toBeUndefined();
  });
});

describe('sizes read from the system', () => {
  it('pageSize is what getconf PAGESIZE says', () => {
    expect(pageSize).toBe(Number(execFileSync('getconf', ['PAGESIZE'], { encoding: 'utf8' })));
  });

  it('hugePageSize is /proc/meminfo Hugepagesize (else the THP PMD size)', () => {
    const kib = /^Hugepagesize:\s+(\d+) kB$/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1];
    const thp = readNumber('/sys/kernel/mm/transparent_hugepage/hpage_pmd_size');
    expect(hugePageSize).toBe(kib !== undefined ? Number(kib) * KiB : (thp ?? pageSize));
    expect(hugePageSize).toBeGreaterThanOrEqual(pageSize);
  });

  it('cacheLineSize is the level-1 data cache line of cpu0 when sysfs lists it', () => {
    const base = '/sys/devices/system/cpu/cpu0/cache';
    let expected: number | undefined;
    for (let index = 0; index < 8 && expected === undefined; index++) {
      const directory = `${base}/index${index}`;
      if (readNumber(`${directory}/level`) !== 1) continue;
      const type = readFileSync(`${directory}/type`, 'utf8').trim();
      if (type === 'Data' || type === 'Unified') expected = readNumber(`${directory}/coherency_line_size`);
    }
    if (expected !== undefined) expect(cacheLineSize).toBe(expected);
    expect(Number.isInteger(Math.log2(cacheLineSize))).toBe(true);
    expect(cacheLineSize).toBeGreaterThanOrEqual(16);
  });
});

describe('pool layout on other page sizes', () => {
  const X86_64: PageGeometry = { pageSize: 4 * KiB, hugePageSize: 2 * MiB, cacheLineSize: 64 };
  const ARM64_16K: PageGeometry = { pageSize: 16 * KiB, hugePageSize: 32 * MiB, cacheLineSize: 64 };
  const ARM64_64K: PageGeometry = { pageSize: 64 * KiB, hugePageSize: 512 * MiB, cacheLineSize: 64 };
  const APPLE_LINES: PageGeometry = { pageSize: 16 * KiB, hugePageSize: 32 * MiB, cacheLineSize: 128 };
  const NO_HUGE_PAGES: PageGeometry = { pageSize: 4 * KiB, hugePageSize: 4 * KiB, cacheLineSize: 64 };
  const BUDGET = 1024 * MiB;
  const layout = (system: PageGeometry, sizes = DEFAULT_CLASSES) =>
    sizes.map((size) => {
      const { stride, slabBytes } = classLayout(size, BUDGET, system);
      return [size, stride, slabBytes];
    });

  it('x86-64: 4 KiB pages, slabs up to one 2 MiB huge page', () => {
    expect(layout(X86_64)).toEqual([
      [256, 256, 64 * KiB],
      [512, 512, 64 * KiB],
      [1 * KiB, 1 * KiB, 64 * KiB],
      [2 * KiB, 2 * KiB, 64 * KiB],
      [4 * KiB, 4 * KiB, 128 * KiB],
      [8 * KiB, 8 * KiB, 256 * KiB],
      [16 * KiB, 16 * KiB, 512 * KiB],
      [32 * KiB, 32 * KiB, 1 * MiB],
      [64 * KiB, 64 * KiB, 2 * MiB],
      [128 * KiB, 128 * KiB, 2 * MiB],
      [256 * KiB, 256 * KiB, 2 * MiB],
      [512 * KiB, 512 * KiB, 2 * MiB],
      [1 * MiB, 1 * MiB, 2 * MiB],
      [2 * MiB, 2 * MiB, 2 * MiB],
      [4 * MiB, 4 * MiB, 4 * MiB],
    ]);
  });

  it("the live layout is the one for this machine's sizes", () => {
    const here: PageGeometry = { pageSize, hugePageSize, cacheLineSize };
    for (const size of DEFAULT_CLASSES) expect(classLayout(size, BUDGET)).toEqual(classLayout(size, BUDGET, here));
  });

  it('arm64 with 16 KiB pages: slabs grow to one 32 MiB huge page, every slab whole pages', () => {
    const rows = layout(ARM64_16K);
    expect(rows.find(([size]) => size === 4 * KiB)).toEqual([4 * KiB, 4 * KiB, 128 * KiB]);
    expect(rows.find(([size]) => size === 1 * MiB)).toEqual([1 * MiB, 1 * MiB, 32 * MiB]);
    expect(rows.find(([size]) => size === 4 * MiB)).toEqual([4 * MiB, 4 * MiB, 32 * MiB]);
    for (const [, , slabBytes] of rows) expect(slabBytes % ARM64_16K.pageSize).toBe(0);
  });

  it('arm64 with 64 KiB pages: 512 MiB huge pages are no slab size; slabs stop at 2 MiB', () => {
    const rows = layout(ARM64_64K);
    expect(rows.find(([size]) => size === 256)).toEqual([256, 256, 64 * KiB]);
    expect(rows.find(([size]) => size === 64 * KiB)).toEqual([64 * KiB, 64 * KiB, 2 * MiB]);
    expect(rows.find(([size]) => size === 4 * MiB)).toEqual([4 * MiB, 4 * MiB, 4 * MiB]);
    for (const [, , slabBytes] of rows) {
      expect(slabBytes % ARM64_64K.pageSize).toBe(0);
      expect(slabBytes).toBeLessThanOrEqual(4 * MiB);
    }
  });

  it('slots of 4 KiB and more start on multiples of 4096 (O_DIRECT) whatever the page size', () => {
    const odd = [4096, 5000, 12_000, 20_000, 70_000, 100_000];
    for (const system of [X86_64, ARM64_16K, ARM64_64K]) {
      for (const [size, stride] of layout(system, odd)) {
        expect(stride % 4096, `${size} B on ${system.pageSize} B pages`).toBe(0);
        expect(stride).toBeGreaterThanOrEqual(size);
        // Strides below a page waste less than 4 KiB; from a page on, less than a page.
        expect(stride - size).toBeLessThan(size >= system.pageSize ? system.pageSize : 4096);
      }
    }
  });

  it('small slots round up to the cache line the machine has', () => {
    expect(classLayout(100, BUDGET, X86_64).stride).toBe(128);
    expect(classLayout(200, BUDGET, X86_64).stride).toBe(256);
    expect(classLayout(200, BUDGET, APPLE_LINES).stride).toBe(256);
    expect(classLayout(130, BUDGET, APPLE_LINES).stride).toBe(256);
    expect(classLayout(48, BUDGET, APPLE_LINES).stride).toBe(48);
  });

  it('without huge pages (hugePageSize == pageSize) slabs still reach 2 MiB', () => {
    expect(classLayout(64 * KiB, BUDGET, NO_HUGE_PAGES)).toEqual({ stride: 64 * KiB, slabBytes: 2 * MiB });
    expect(classLayout(256, BUDGET, NO_HUGE_PAGES)).toEqual({ stride: 256, slabBytes: 64 * KiB });
  });

  it('a small budget caps every slab at an eighth of it', () => {
    for (const system of [X86_64, ARM64_16K, ARM64_64K]) {
      const { slabBytes } = classLayout(64 * KiB, 8 * MiB, system);
      expect(slabBytes).toBe(1 * MiB);
    }
  });

  it('a live pool hands out 4 KiB-and-up buffers 4096-aligned and counts whole pages', async () => {
    const pool = new BufferPool({ maxMemory: 64 * MiB, leakDetection: 'off' });
    try {
      const buffers = [4096, 5000, 65_536, 1 << 20].map((size) => pool.tryAcquire(size)!);
      for (const buffer of buffers) expect(isAligned(buffer, 4096)).toBe(true);
      expect(pool.stats().osBytes % pageSize).toBe(0);
      for (const buffer of buffers) pool.release(buffer);
    } finally {
      await pool.close();
    }
  });
});
