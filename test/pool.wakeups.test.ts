// Wake-ups across threads. A budget of one buffer that a worker (blocking
// acquireSync) and the main thread (async acquire) take in turns, the
// worker's release landing at a different moment inside the main thread's
// acquire() each round: a waiter that slept through a release would fail with
// ERR_IOBUF_BUDGET_TIMEOUT. (The race once in the code, reading the epoch
// after the failed attempt, had a window of about 100 ns; bench/pool.mjs's
// wake-up table hit it a few times in a thousand rounds, this test rarely.)
// And a worker whose only pending work is an awaited acquire stays alive.
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { BufferPool } from '../lib/index';

const HELD = 0;
const GO = 1;
const TAKEN = 2;

describe('BufferPool wake-ups across threads', () => {
  it('a release that lands anywhere inside acquire() wakes the waiter: 400 rounds, none lost', async () => {
    const size = 4096;
    const rounds = 400;
    const pool = new BufferPool({ sizeClasses: [size], maxMemory: size, retainIdle: 0, leakDetection: 'off' });
    const words = new Int32Array(new SharedArrayBuffer(12));
    const worker = new Worker(path.join(__dirname, 'fixtures', 'pool-pingpong-worker.js'), {
      workerData: { handle: pool.handle, size, rounds, control: words.buffer },
    });
    const done = new Promise<{ error: unknown }>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    const failures: string[] = [];
    for (let round = 0; round < rounds && failures.length === 0; round++) {
      while (Atomics.load(words, HELD) < round + 1) {
        const wait = Atomics.waitAsync(words, HELD, round, 10_000);
        if (wait.async) await wait.value;
      }
      Atomics.store(words, GO, round + 1);
      Atomics.notify(words, GO);
      try {
        const buffer = await pool.acquire(size, { timeout: 3000 });
        Atomics.store(words, TAKEN, round + 1);
        Atomics.notify(words, TAKEN);
        buffer.fill(0x11);
        pool.release(buffer);
      } catch (error) {
        failures.push(`round ${round}: ${(error as { code?: string }).code}`);
      }
    }
    if (failures.length > 0) {
      Atomics.store(words, GO, rounds);
      Atomics.store(words, TAKEN, rounds);
      Atomics.notify(words, GO);
      Atomics.notify(words, TAKEN);
      await worker.terminate();
    }
    expect(failures).toEqual([]);
    expect(await done).toEqual({ error: null });
    expect(pool.stats()).toMatchObject({ acquires: 2 * rounds, releases: 2 * rounds, inUse: 0, waiters: 0 });
    await pool.close();
  });

  it('a worker whose only pending work is `await pool.acquire()` stays alive until it is served', async () => {
    const pool = new BufferPool({ sizeClasses: [4096], maxMemory: 4096, retainIdle: 0 });
    const held = pool.tryAcquire(4096)!;
    // Nothing but the acquire keeps this worker's event loop busy (no message
    // listener): a pending Atomics.waitAsync alone would let the thread end.
    const worker = new Worker(
      `
      const { parentPort, workerData } = require('node:worker_threads');
      const { BufferPool } = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))});
      const pool = BufferPool.attach(workerData);
      parentPort.postMessage('waiting');
      pool.acquire(4096).then((buffer) => {
        parentPort.postMessage({ got: buffer.length });
        pool.release(buffer);
        return pool.close();
      }, (error) => parentPort.postMessage({ error: error.code }));
    `,
      { eval: true, workerData: pool.handle },
    );
    const messages: unknown[] = [];
    const exited = new Promise<number>((resolve) => worker.once('exit', resolve));
    worker.on('message', (message) => {
      messages.push(message);
      // Give it back only once the worker waits, a few turns later.
      if (message === 'waiting') setTimeout(() => pool.release(held), 50);
    });
    worker.on('error', (error) => messages.push({ uncaught: (error as { code?: string }).code }));
    expect(await exited).toBe(0);
    expect(messages).toEqual(['waiting', { got: 4096 }]);
    expect(pool.stats()).toMatchObject({ inUse: 0, waiters: 0, threads: 1 });
    await pool.close();
  });
});
