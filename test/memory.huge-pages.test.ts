// allocHuge and pageKind against the real kernel: hugetlb pages reserved for
// this file in /proc/sys/vm/nr_hugepages, none reserved, and THP switched off.
//
// These settings are system-wide. Only this file changes them, every change is
// restored in afterAll (and on process exit should afterAll never run), and
// the other memory test files ask allocHuge for fallback 'normal', which works
// under every setting used here.
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { BufferPool, IobufError, addressOf, allocAligned, allocHuge, free, hugePageSize, isAligned, pageKind } from '../lib/index';
import { MiB, expectThrowsCode, isRoot, statusBytes, vmaAt } from './helpers/memory-proc';

const NR_HUGEPAGES = '/proc/sys/vm/nr_hugepages';
const NR_OVERCOMMIT = '/proc/sys/vm/nr_overcommit_hugepages';
const THP_ENABLED = '/sys/kernel/mm/transparent_hugepage/enabled';
const RESERVE = 32;

const saved = new Map<string, string>();
const read = (file: string) => readFileSync(file, 'utf8').trim();
/** The selected word of a sysfs choice file: "always [madvise] never" → "madvise". */
const selected = (text: string) => /\[(\w+)\]/.exec(text)?.[1] ?? text;

function set(file: string, value: string): void {
  if (!saved.has(file)) saved.set(file, file === THP_ENABLED ? selected(read(file)) : read(file));
  writeFileSync(file, value);
}

function restoreAll(): void {
  for (const [file, value] of saved) {
    try {
      writeFileSync(file, value);
    } catch (error) {
      process.stderr.write(`could not restore ${file} to ${value}: ${String(error)}\n`);
    }
  }
  saved.clear();
}

const reason = 'changing nr_hugepages and THP needs root; skipped';
if (!isRoot) console.warn(`memory.huge-pages: ${reason}`);

beforeAll(() => {
  if (isRoot) process.once('exit', restoreAll);
});
const original = isRoot ? { hugepages: read(NR_HUGEPAGES), overcommit: read(NR_OVERCOMMIT), thp: selected(read(THP_ENABLED)) } : undefined;
afterAll(() => {
  restoreAll();
  if (original) {
    expect({ hugepages: read(NR_HUGEPAGES), overcommit: read(NR_OVERCOMMIT), thp: selected(read(THP_ENABLED)) }).toEqual(original);
  }
});

const hugetlbInUse = () => statusBytes('HugetlbPages');

describe.skipIf(!isRoot)('with hugetlb pages reserved', () => {
  beforeAll(() => {
    set(NR_HUGEPAGES, String(Number(read(NR_HUGEPAGES)) + RESERVE));
    // The kernel may grant fewer than asked when memory is fragmented.
    expect(Number(/^HugePages_Free:\s+(\d+)$/m.exec(readFileSync('/proc/meminfo', 'utf8'))![1])).toBeGreaterThanOrEqual(8);
  });
  afterAll(restoreAll);

  test("fallback 'none' gives hugetlb pages: pageKind, KernelPageSize, VmFlags ht", () => {
    const buffer = allocHuge(1, { fallback: 'none' });
    expect(buffer.length).toBe(1);
    expect(isAligned(buffer, hugePageSize)).toBe(true);
    expect(pageKind(buffer)).toBe('hugetlb');
    const vma = vmaAt(addressOf(buffer))!;
    expect(vma.sizes.KernelPageSize).toBe(hugePageSize);
    expect(vma.flags).toContain('ht');
    expect(buffer[0]).toBe(0);
    buffer[0] = 0xab;
    expect(buffer[0]).toBe(0xab);
    free(buffer);
  });

  test('5 MiB takes three huge pages of this process and gives them back on free', () => {
    const before = hugetlbInUse();
    const size = 5 * MiB;
    const buffer = allocHuge(size, { fallback: 'none' });
    expect(buffer.length).toBe(size);
    let nonZero = 0;
    for (let i = 0; i < size; i += 512) nonZero += buffer[i];
    expect(nonZero).toBe(0);
    for (let i = 0; i < size; i++) buffer[i] = i % 251;
    let wrong = 0;
    for (let i = 0; i < size; i++) if (buffer[i] !== i % 251) wrong++;
    expect(wrong).toBe(0);
    expect(hugetlbInUse() - before).toBe(3 * hugePageSize);
    free(buffer);
    expect(hugetlbInUse()).toBe(before);
  });

  test('the default fallback and the others all take hugetlb pages first', () => {
    for (const options of [{}, { fallback: 'thp' as const }, { fallback: 'normal' as const }]) {
      const buffer = allocHuge(2 * MiB, options);
      expect(pageKind(buffer)).toBe('hugetlb');
      free(buffer);
    }
  });

  test('dontFork and dontDump apply to hugetlb mappings; lock: true succeeds there', () => {
    const before = statusBytes('VmLck');
    const buffer = allocHuge(4 * MiB, { fallback: 'none', dontFork: true, dontDump: true, lock: true });
    expect(pageKind(buffer)).toBe('hugetlb');
    expect(vmaAt(addressOf(buffer))!.flags).toEqual(expect.arrayContaining(['ht', 'dc', 'dd']));
    // mlock() succeeds but the kernel leaves hugetlb VMAs unmarked (no "lo",
    // no VmLck): hugetlb pages are never swapped, so there is nothing to lock.
    expect(vmaAt(addressOf(buffer))!.flags).not.toContain('lo');
    expect(statusBytes('VmLck')).toBe(before);
    free(buffer);
  });

  test('allocAligned never uses hugetlb pages, even at 2 MiB alignment', () => {
    const buffer = allocAligned(4 * MiB, { alignment: 2 * MiB });
    buffer.fill(1);
    expect(pageKind(buffer)).toBe('normal');
    free(buffer);
  });

  // The iovec part's io_uring registration lives here because only this file may reserve hugetlb pages.
  test('pool.registration() of a hugetlb slab that ends inside its last huge page (acquireMany) marks the whole mapping DONTFORK', async () => {
    const pool = new BufferPool({ maxMemory: 64 * MiB, retainIdle: 0 });
    try {
      // 9 × 256 KiB = 2.25 MiB of slots: one hugetlb mapping of two huge pages under a shorter slab.
      const buffers = pool.tryAcquireMany(9, 256 * 1024)!;
      buffers[0][0] = 1;
      expect(pageKind(buffers[0])).toBe('hugetlb');
      const registration = pool.registration();
      expect(registration.length).toBe(1);
      expect(pool.fixedBufferOf(buffers[8])).toEqual({ index: 0, offset: 8 * 256 * 1024 });
      expect(vmaAt(addressOf(buffers[0]))!.flags).toEqual(expect.arrayContaining(['ht', 'dc']));
      for (const buffer of buffers) pool.release(buffer);
      expect(pool.stats().inUse).toBe(0);
    } finally {
      await pool.close({ force: true });
    }
  });
});

describe.skipIf(!isRoot)('with no hugetlb page reserved', () => {
  beforeAll(() => {
    set(NR_OVERCOMMIT, '0');
    set(NR_HUGEPAGES, '0');
  });
  afterAll(restoreAll);

  test("fallback 'none' → ERR_IOBUF_HUGE_PAGES_UNAVAILABLE, errno -12, syscall mmap", () => {
    const error = expectThrowsCode(
      () => allocHuge(2 * MiB, { fallback: 'none' }),
      IobufError,
      'ERR_IOBUF_HUGE_PAGES_UNAVAILABLE',
      'ERR_IOBUF_HUGE_PAGES_UNAVAILABLE: Cannot allocate memory, mmap ' +
        '(no hugetlb pages free; reserve them in /proc/sys/vm/nr_hugepages)',
    );
    expect(error.errno).toBe(-12);
    expect(error.syscall).toBe('mmap');
    expect(error.name).toBe('IobufError');
  });

  test("fallback 'thp' (the default) → transparent huge pages once touched", () => {
    for (const options of [{ fallback: 'thp' as const }, {}]) {
      const buffer = allocHuge(4 * MiB, options);
      expect(buffer.length).toBe(4 * MiB);
      expect(isAligned(buffer, hugePageSize)).toBe(true);
      expect(vmaAt(addressOf(buffer))!.flags).toContain('hg');
      buffer.fill(7);
      expect(pageKind(buffer)).toBe('thp');
      expect(vmaAt(addressOf(buffer))!.sizes.AnonHugePages).toBeGreaterThanOrEqual(hugePageSize);
      free(buffer);
    }
  });

  test("fallback 'normal' works (and still asks for THP while THP is in madvise mode)", () => {
    const buffer = allocHuge(3 * MiB + 1, { fallback: 'normal' });
    expect(buffer.length).toBe(3 * MiB + 1);
    expect(isAligned(buffer, hugePageSize)).toBe(true);
    buffer.fill(3);
    expect(buffer[3 * MiB]).toBe(3);
    expect(['thp', 'normal']).toContain(pageKind(buffer));
    free(buffer);
  });

  test("with THP off: fallback 'thp' → ERR_IOBUF_HUGE_PAGES_UNAVAILABLE, 'normal' → normal pages", () => {
    set(THP_ENABLED, 'never');
    try {
      const error = expectThrowsCode(
        () => allocHuge(2 * MiB),
        IobufError,
        'ERR_IOBUF_HUGE_PAGES_UNAVAILABLE',
        'ERR_IOBUF_HUGE_PAGES_UNAVAILABLE: Cannot allocate memory, mmap ' +
          '(no hugetlb pages free and transparent huge pages are disabled)',
      );
      expect(error.errno).toBe(-12);
      expect(error.syscall).toBe('mmap');
      const buffer = allocHuge(4 * MiB, { fallback: 'normal' });
      buffer.fill(1);
      expect(pageKind(buffer)).toBe('normal');
      expect(vmaAt(addressOf(buffer))!.flags).not.toContain('hg');
      free(buffer);
    } finally {
      writeFileSync(THP_ENABLED, saved.get(THP_ENABLED)!);
      saved.delete(THP_ENABLED);
    }
    expect(selected(read(THP_ENABLED))).not.toBe('never');
  });

  test('a normal allocAligned buffer reports normal; a THP one reports thp', () => {
    const plain = allocAligned(4 * MiB, { alignment: 2 * MiB });
    plain.fill(1);
    expect(pageKind(plain)).toBe('normal');
    const huge = allocHuge(4 * MiB, { fallback: 'thp' });
    huge.fill(1);
    expect(pageKind(huge)).toBe('thp');
    free(plain);
    free(huge);
  });
});

if (!isRoot) test.skip(`huge-page settings: ${reason}`, () => {});
