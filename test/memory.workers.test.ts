// The memory part in worker threads: the addon loads in every worker, four
// workers allocate on every path at once, and workers coming and going do not
// break the main thread's allocations.
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, expect, test } from 'vitest';
import { allocAligned, allocHuge, free, isAligned, pageSize } from '../lib/index';
import { MiB, collectGarbage, fixturesDir, lastJsonLine, runFixture, sanitized, statusBytes } from './helpers/memory-proc';

interface Report {
  id: number;
  allocated: number;
  verified: number;
  freed: number;
  misaligned: number;
  corrupt: number;
  errors: string[];
  kept: number;
}

function startWorkers(count: number, rounds: number, keep = false): Promise<{ reports: Report[]; exitCodes: number[] }> {
  const barrier = new SharedArrayBuffer(8);
  new Int32Array(barrier)[1] = count;
  const reports: Report[] = [];
  const exits = Array.from(
    { length: count },
    (_, id) =>
      new Promise<number>((resolve, reject) => {
        const worker = new Worker(path.join(fixturesDir, 'memory-worker.js'), { workerData: { id, rounds, barrier, keep } });
        worker.on('message', (report: Report) => reports.push(report));
        worker.on('error', reject);
        worker.on('exit', resolve);
      }),
  );
  return Promise.all(exits).then((exitCodes) => ({ reports, exitCodes }));
}

describe('worker threads', () => {
  test('4 workers allocate, write, verify and free on every path at once', async () => {
    const rounds = 25;
    const { reports, exitCodes } = await startWorkers(4, rounds);
    expect(exitCodes).toEqual([0, 0, 0, 0]);
    expect(reports.map((r) => r.id).sort()).toEqual([0, 1, 2, 3]);
    for (const report of reports) {
      expect(report).toEqual({
        id: report.id,
        allocated: 3 * rounds,
        verified: 3 * rounds,
        freed: 3 * rounds,
        misaligned: 0,
        corrupt: 0,
        errors: [],
        kept: 0,
      });
    }
  });

  test('the main thread allocates and frees normally after the workers are gone', () => {
    for (const options of [{}, { alignment: 64 }, { alignment: 2 * MiB }]) {
      const buffer = allocAligned(3 * MiB, options);
      buffer.fill(0x3c);
      expect(buffer[3 * MiB - 1]).toBe(0x3c);
      expect(isAligned(buffer, options.alignment ?? 4096)).toBe(true);
      free(buffer);
      expect(buffer.length).toBe(0);
    }
    const huge = allocHuge(2 * MiB, { fallback: 'normal' });
    huge.fill(1);
    free(huge);
  });

  test.skipIf(sanitized)('mappings a worker never freed are released when the worker exits', async () => {
    await collectGarbage();
    const before = statusBytes('VmRSS');
    // 4 workers × 25 kept 1 MiB mapped buffers, all touched (every 97th byte: every page).
    const { reports, exitCodes } = await startWorkers(4, 25, true);
    expect(exitCodes).toEqual([0, 0, 0, 0]);
    expect(reports.map((r) => r.kept)).toEqual([25, 25, 25, 25]);
    await collectGarbage();
    // 100 MiB were kept at exit; worker heaps themselves are gone too.
    expect(statusBytes('VmRSS') - before).toBeLessThan(48 * MiB);
  });

  test('the addon loads in a worker, again in a second worker after the first exited, then in the main thread', () => {
    const result = runFixture('memory-worker-reload.js');
    expect({ status: result.status, signal: result.signal, stderr: result.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
    const report = lastJsonLine<Record<string, unknown>>(result);
    const worker = { code: 0, message: { ok: [true, true, true], pageSize } };
    expect(report).toEqual({ first: worker, second: worker, third: worker, main: true });
  });
});
