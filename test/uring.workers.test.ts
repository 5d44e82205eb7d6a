// IoRing in worker threads: each thread makes its own ring (here over a pool
// attached from the main thread), and a thread that ends with reads in
// flight — terminate(), process.exit() inside it, an uncaught error — gives
// everything back from native code (JS does not run then): the kernel's
// reads are cancelled and waited for, the ring's fds are closed, the memory
// lent to the kernel is unmapped, and no forgotten read consumes data later.
import fs from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { BufferPool, IoRing } from '../lib/index';
import { KiB, MiB } from './fixtures/pool-helpers';
import { blockingFifo, dataFile, drainFifo, uringSkip, useScratchDir } from './fixtures/uring-helpers';
import { fixturesDir, mappedBytesIn, sanitized } from './helpers/memory-proc';

const scratch = useScratchDir('uring-workers');
const workerFile = path.join(fixturesDir, 'uring-worker.js');

/** How many of this process's fds are of each anonymous kind ('io_uring', 'eventfd'). */
function anonymousFds(kind: string): number {
  let count = 0;
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`) === `anon_inode:[${kind}]`) count++;
    } catch {
      // closed meanwhile (the readdir's own fd)
    }
  }
  return count;
}

interface InFlightReport {
  verified: number;
  pending: number;
  mapped: string;
  slab: string;
  stats: { fixed: number };
}

function startWorker(workerData: Record<string, unknown>): {
  worker: Worker;
  message: Promise<Record<string, unknown>>;
  exit: Promise<number>;
} {
  const worker = new Worker(workerFile, { workerData });
  const message = new Promise<Record<string, unknown>>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', (error) => (error.message.includes('reads in flight') ? undefined : reject(error)));
  });
  const exit = new Promise<number>((resolve) => worker.once('exit', resolve));
  return { worker, message, exit };
}

describe.skipIf(uringSkip !== '')('IoRing in worker threads', () => {
  it('four workers, one ring each over an attached pool: READ_FIXED reads verified, rings closed', async () => {
    const { file } = dataFile(scratch(), 'shared.bin', 128 * KiB);
    const pool = new BufferPool({ maxMemory: 64 * MiB, hugePages: false });
    try {
      const workers = Array.from({ length: 4 }, () => startWorker({ handle: pool.handle, file, inFlight: false }));
      const messages = await Promise.all(workers.map((w) => w.message));
      expect(await Promise.all(workers.map((w) => w.exit))).toEqual([0, 0, 0, 0]);
      for (const message of messages) {
        expect(message.done).toMatchObject({ verified: 8, stats: { operations: 8, completions: 8, fixed: 8, pending: 0 } });
      }
      expect(pool.stats().inUse).toBe(0);
    } finally {
      await pool.close({ force: true });
    }
  });

  for (const end of ['terminate', 'exit', 'throw'] as const) {
    it(`a worker that ends (${end}) with reads in flight: fds closed, memory unmapped, the reads cancelled`, async () => {
      const { file } = dataFile(scratch(), `${end}.bin`, 128 * KiB);
      const fifo = blockingFifo(scratch());
      const pool = new BufferPool({ maxMemory: 64 * MiB, hugePages: false });
      const rings = anonymousFds('io_uring');
      const eventFds = anonymousFds('eventfd');
      try {
        const { worker, message, exit } = startWorker({ handle: pool.handle, file, fifoFd: fifo.reader, inFlight: true, end });
        const report = (await message).inFlight as InFlightReport;
        expect(report).toMatchObject({ verified: 8, pending: 3, stats: { fixed: 8 } });
        // (Node 22+ builds libuv with io_uring: the worker's own loop may hold a ring too.)
        expect(anonymousFds('io_uring')).toBeGreaterThanOrEqual(rings + 1);
        const mapped = BigInt(report.mapped);
        const slab = BigInt(report.slab);
        expect(mappedBytesIn(mapped, 64 * KiB)).toBe(64 * KiB);
        if (end === 'terminate') await worker.terminate();
        else worker.postMessage('end');
        expect(await exit).toBe(end === 'exit' ? 3 : 1);

        // The process lives, and the thread gave back what the kernel had.
        expect(anonymousFds('io_uring')).toBe(rings);
        expect(anonymousFds('eventfd')).toBe(eventFds);
        if (!sanitized) {
          expect(mappedBytesIn(mapped, 64 * KiB)).toBe(0);
          expect(mappedBytesIn(slab, 16 * KiB)).toBe(0);
        }
        fs.writeSync(fifo.writer, Buffer.from('still here'));
        expect(drainFifo(fifo.reader).toString()).toBe('still here');
        // io_uring still works in this thread.
        const ring = new IoRing();
        const buffer = Buffer.alloc(10);
        const fd = fs.openSync(file, 'r');
        try {
          expect(await ring.read(fd, buffer, 0)).toBe(10);
        } finally {
          fs.closeSync(fd);
          await ring.close();
        }
      } finally {
        fifo.close();
        await pool.close({ force: true });
      }
    });
  }
});
