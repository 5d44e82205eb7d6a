// lock: true (mlock). Root holds CAP_IPC_LOCK and may lock beyond
// RLIMIT_MEMLOCK; an unprivileged user gets ENOMEM from mlock.
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { addressOf, allocAligned, allocHuge, free, pageKind } from '../lib/index';
import { MiB, distDir, isRoot, lastJsonLine, nodeRunnableByOthers, runFixture, sanitized, statusBytes, vmaAt } from './helpers/memory-proc';

const NOBODY = 65534;

describe('lock', () => {
  test.skipIf(!isRoot || sanitized)('lock: true as root: VmLck grows by at least the size and falls back after free', () => {
    // (skipped without root: RLIMIT_MEMLOCK here is 8 MiB)
    const size = 16 * MiB;
    const before = statusBytes('VmLck');
    const buffer = allocAligned(size, { lock: true });
    const locked = statusBytes('VmLck');
    expect(locked - before).toBeGreaterThanOrEqual(size);
    expect(vmaAt(addressOf(buffer))!.flags).toContain('lo');
    // Locked pages are resident at once (mlock faults them in), and zero.
    expect(vmaAt(addressOf(buffer))!.sizes.Rss).toBeGreaterThanOrEqual(size);
    expect(buffer.every((byte) => byte === 0)).toBe(true);
    free(buffer);
    expect(locked - statusBytes('VmLck')).toBeGreaterThanOrEqual(size);
  });

  test.skipIf(!isRoot || sanitized)('allocHuge with lock: true locks too', () => {
    const before = statusBytes('VmLck');
    const buffer = allocHuge(4 * MiB, { lock: true, fallback: 'normal' });
    // hugetlb pages (reserved system-wide while test/memory.huge-pages runs,
    // in any checkout on the machine) are never swapped out; mlock leaves such
    // mappings alone and the kernel does not count them in VmLck.
    const hugetlb = pageKind(buffer) === 'hugetlb';
    expect(statusBytes('VmLck') - before).toBeGreaterThanOrEqual(hugetlb ? 0 : 4 * MiB);
    free(buffer);
    expect(statusBytes('VmLck')).toBe(before);
  });

  test.skipIf(sanitized)(
    'beyond RLIMIT_MEMLOCK as an unprivileged user (nobody when we are root): ENOMEM, errno -12, syscall mlock',
    () => {
      // As root the child runs as uid/gid 65534 (the spawn option needs root);
      // otherwise it runs as we do, which is unprivileged already. The nobody
      // child must be able to read dist/ and the addon.
      if (isRoot) {
        const addon = path.join(distDir, '..', 'build', 'Release', 'iobuf.node');
        for (const file of [path.join(distDir, 'index.js'), path.join(distDir, 'memory.js'), addon]) {
          expect((statSync(file).mode & 0o004) !== 0, `${file} must be world-readable for the nobody child`).toBe(true);
        }
      }
      const limit = Number(/^Max locked memory\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1]);
      expect(limit, 'RLIMIT_MEMLOCK must be below 16 MiB for this test').toBeLessThan(16 * MiB);

      const result = runFixture(
        'memory-mlock-limit.js',
        [],
        isRoot ? { uid: NOBODY, gid: NOBODY, cwd: '/', execPath: nodeRunnableByOthers() } : {},
      );
      expect({ status: result.status, signal: result.signal, stderr: result.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
      const report = lastJsonLine<Record<string, unknown>>(result);
      expect(report.uid).toBe(isRoot ? NOBODY : process.getuid!());
      expect(report.small).toBe(1 * MiB);
      for (const failure of [report.large, report.huge]) {
        expect(failure).toEqual({
          name: 'IobufError',
          isIobufError: true,
          code: 'ENOMEM',
          errno: -12,
          syscall: 'mlock',
          message: 'ENOMEM: Cannot allocate memory, mlock (locking beyond RLIMIT_MEMLOCK needs CAP_IPC_LOCK)',
        });
      }
      expect(report.afterwards).toBe(2);
    },
  );
});
