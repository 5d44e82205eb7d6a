// Stress: a tight budget shared by the main thread (many async waiters) and
// several workers (blocking acquireSync), random sizes and release timing.
// Checks: no deadlock, FIFO per size class among this thread's waiters, no
// buffer held by two owners at once (each owner's signature survives until
// its release), the budget never exceeded, and every count back to 0.
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { BufferPool, addressOf } from '../lib/index';
import { KiB, turns } from './fixtures/pool-helpers';
import { NEEDS, itNative } from './helpers/portable';

const SIZES = [300, 4096, 10_000, 65536, 200_000];
const CLASSES = [4096, 65536, 262144];

function xorshift(seed: number): (limit: number) => number {
  let state = seed >>> 0;
  return (limit) => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state % limit;
  };
}

describe('BufferPool under stress', () => {
  itNative(NEEDS.addresses)(
    'async waiters and blocking workers on a tight budget: FIFO, one owner per buffer, counts back to 0',
    async () => {
      const maxMemory = 1024 * KiB;
      const pool = new BufferPool({ sizeClasses: CLASSES, maxMemory, retainIdle: 0 });
      const random = xorshift(0x5eed);
      const workerRounds = 300;
      const workers = [1, 2, 3].map(
        (n) =>
          new Worker(path.join(__dirname, 'fixtures', 'pool-stress-worker.js'), {
            workerData: { handle: pool.handle, rounds: workerRounds, sizes: SIZES, seed: 1000 + n, signatureBase: n * 50 },
          }),
      );
      const workerResults = workers.map(
        (worker) =>
          new Promise<{ served: number; overwritten: unknown[] }>((resolve, reject) => {
            worker.once('message', resolve);
            worker.once('error', reject);
          }),
      );

      // Main thread: 40 tasks, each cycling acquire → sign → hold for a random
      // number of turns → check → release.
      const classOf = (size: number) => CLASSES.find((c) => c >= size)!;
      const servedOrder = new Map<number, number[]>(CLASSES.map((c) => [c, []]));
      const live = new Set<bigint>();
      const problems: string[] = [];
      let calls = 0;
      let overBudget = 0;
      const task = async (id: number) => {
        for (let round = 0; round < 40; round++) {
          const size = SIZES[random(SIZES.length)];
          const call = calls++;
          const buffer = await pool.acquire(size, { timeout: 20_000 });
          servedOrder.get(classOf(size))!.push(call);
          const address = addressOf(buffer);
          if (live.has(address)) problems.push(`address ${address} handed to two owners`);
          live.add(address);
          if (pool.stats().osBytes > maxMemory) overBudget++;
          const signature = (id * 7 + round) & 0xff;
          buffer.fill(signature);
          await turns(random(4));
          if (!buffer.every((byte) => byte === signature)) problems.push(`task ${id} round ${round}: signature overwritten`);
          live.delete(address);
          pool.release(buffer);
        }
      };
      await Promise.all(Array.from({ length: 40 }, (_, id) => task(id)));
      const results = await Promise.all(workerResults);

      expect(problems).toEqual([]);
      expect(overBudget).toBe(0);
      for (const result of results) expect(result).toEqual({ served: workerRounds, overwritten: [] });
      // FIFO within each class: the calls of one class were served in the order they were made.
      for (const [size, order] of servedOrder) {
        expect(order, `served order of the ${size}-byte class`).toEqual([...order].sort((a, b) => a - b));
      }
      expect(calls).toBe(40 * 40);
      await turns();
      const stats = pool.stats();
      expect(stats).toMatchObject({ inUse: 0, waiters: 0, threads: 1 });
      expect(stats.acquires).toBe(40 * 40 + 3 * workerRounds);
      expect(stats.releases).toBe(stats.acquires);
      expect(stats.highWaterBytes).toBeLessThanOrEqual(maxMemory);
      expect(stats.waits).toBeGreaterThan(0); // the budget really was tight
      await pool.close();
      expect(pool.stats().osBytes).toBe(0);
    },
  );
});
