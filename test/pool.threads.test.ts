// Threads that die: a worker can end by return, process.exit, an uncaught
// error or terminate() (which runs no JavaScript in the worker). Whatever it
// held — pages of the budget, a place in the waiting queue, a statistics
// region, in-flight I/O — comes back in every case, and the shared state
// stays exact for the threads still alive. Also: handles from code the
// attaching thread does not own are checked, and the queue's tickets wrap.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BufferPool, type BufferPoolHandle } from '../lib/index';
import { native } from '../lib/binding';
import { layout } from '../lib/pool/shared';
import { makeFifo } from './fixtures/iovec-helpers';
import { KiB, PoolWorker, expectCode, rejection, thrown, until, usePools } from './fixtures/pool-helpers';
import { NEEDS, itNative } from './helpers/portable';

const makePool = usePools();
const workers: PoolWorker[] = [];
afterEach(async () => {
  for (const worker of workers.splice(0)) await worker.stop();
});

let dir = '';
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iobuf-threads-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** 64 KiB slots, one per slab, `slots` of them in the budget; nothing idle is retained. */
function sharedPool(slots: number, options: ConstructorParameters<typeof BufferPool>[0] = {}): BufferPool {
  return makePool({ sizeClasses: [4096, 65536], maxMemory: slots * 64 * KiB, retainIdle: 0, ...options });
}

async function startWorker(pool: BufferPool, name: string): Promise<PoolWorker> {
  const worker = new PoolWorker(pool.handle, name);
  workers.push(worker);
  await worker.ready;
  return worker;
}

/** Ends a worker the way a watchdog does, and forgets it. */
async function terminate(worker: PoolWorker): Promise<void> {
  workers.splice(workers.indexOf(worker), 1);
  await worker.stop();
}

const MAIN_ONLY = { threads: 1, waiters: 0 };

describe('a terminated worker gives back what it held', () => {
  itNative(NEEDS.terminate)('its pooled buffers: the budget, its statistics and its thread slot come back', async () => {
    const pool = sharedPool(4);
    const worker = await startWorker(pool, 'W');
    for (let i = 0; i < 3; i++) expect(await worker.call('tryAcquire', { size: 65536 })).not.toBeNull();
    expect(pool.stats()).toMatchObject({ inUse: 3, osBytes: 192 * KiB, threads: 2 });
    await terminate(worker);
    expect(pool.stats()).toMatchObject({ ...MAIN_ONLY, inUse: 0, osBytes: 0 });
    // The whole budget is there for the threads still alive.
    const all = [0, 1, 2, 3].map(() => pool.tryAcquire(65536));
    expect(all.every((buffer) => buffer !== null)).toBe(true);
    // Its counters still add up: 3 acquires of the dead thread, 4 of this one.
    expect(pool.stats()).toMatchObject({ acquires: 7, inUse: 4 });
  });

  itNative(NEEDS.terminate)('its place at the head of the queue (acquireSync): the queue moves on for every thread', async () => {
    const pool = sharedPool(2);
    const held = [pool.tryAcquire(65536)!, pool.tryAcquire(65536)!];
    const worker = await startWorker(pool, 'W');
    const request = worker.send('acquireSync', { size: 65536 });
    await request.blocking;
    await until(() => pool.stats().waiters === 1, 'the worker to wait');
    const mine = pool.acquire(65536); // queued behind the worker's ticket
    await terminate(worker);
    pool.release(held[0]);
    const buffer = await mine;
    expect(buffer.length).toBe(65536);
    expect(pool.stats()).toMatchObject({ ...MAIN_ONLY, inUse: 2 });
    pool.release(buffer);
    pool.release(held[1]);
    // Nobody waits: tryAcquire takes new budget again.
    expect(pool.tryAcquire(65536)).not.toBeNull();
  });

  itNative(NEEDS.terminate)('its pending acquire() (the async waiter): later waiters are served', async () => {
    const pool = sharedPool(2);
    const held = [pool.tryAcquire(65536)!, pool.tryAcquire(65536)!];
    const worker = await startWorker(pool, 'W');
    const request = worker.send('acquire', { size: 65536 });
    await until(() => pool.stats().waiters === 1, 'the worker to wait');
    const mine = pool.acquire(65536);
    await terminate(worker);
    void request.reply;
    pool.release(held[0]);
    expect((await mine).length).toBe(65536);
    expect(pool.stats()).toMatchObject({ ...MAIN_ONLY, inUse: 2 });
    pool.release(held[1]);
  });

  itNative(NEEDS.terminate)("while the main thread waits with no budget left: the dead holder's pages wake it", async () => {
    const pool = sharedPool(2);
    const worker = await startWorker(pool, 'W');
    await worker.call('tryAcquire', { size: 65536 });
    await worker.call('tryAcquire', { size: 65536 });
    const mine = pool.acquire(65536);
    await until(() => pool.stats().waiters === 1, 'the main thread to wait');
    await terminate(worker);
    // Woken by the native side through this thread's event loop; no release happens here.
    expect((await mine).length).toBe(65536);
    expect(pool.stats()).toMatchObject({ ...MAIN_ONLY, inUse: 1, osBytes: 64 * KiB });
  });

  it('a worker that ends by return, process.exit() or an uncaught error gives everything back too', async () => {
    const pool = sharedPool(4);
    const script = `
      const { workerData } = require('node:worker_threads');
      const { BufferPool } = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))});
      const pool = BufferPool.attach(workerData.handle);
      pool.tryAcquire(65536); pool.tryAcquire(4096);
      if (workerData.how === 'exit') process.exit(3);
      if (workerData.how === 'throw') throw new Error('boom');`;
    for (const how of ['return', 'exit', 'throw']) {
      const worker = new Worker(script, { eval: true, workerData: { handle: pool.handle, how } });
      worker.on('error', () => {});
      await new Promise((resolve) => worker.on('exit', resolve));
      expect({ how, ...pool.stats() }).toMatchObject({ how, ...MAIN_ONLY, inUse: 0, osBytes: 0 });
    }
    expect(pool.stats().acquires).toBe(6);
  });
});

describe('in-flight I/O of a terminated worker', () => {
  itNative(NEEDS.iovec)('the process lives: late completions are dropped and their memory returned (child process)', () => {
    const file = path.join(dir, 'data.bin');
    fs.writeFileSync(file, Buffer.alloc(16 * 65536, 7));
    const fifo = makeFifo(dir);
    const child = spawnSync(process.execPath, [path.join(__dirname, 'fixtures', 'pool-terminate-io.js'), file, fifo, '12'], {
      encoding: 'utf8',
      timeout: 50_000,
    });
    expect({ status: child.status, signal: child.signal, stderr: child.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
    expect(JSON.parse(child.stdout)).toEqual({ terminated: 13 });
  });
});

describe('membership is per thread now, not per attach in a lifetime', () => {
  itNative(NEEDS.terminate)(
    '70 short-lived workers attach and leave one after another: only 64 at once is a limit',
    async () => {
      const pool = sharedPool(8);
      for (let i = 0; i < 70; i++) {
        const worker = await startWorker(pool, `W${i}`);
        expect(await worker.call('tryAcquire', { size: 4096 })).not.toBeNull();
        if (i % 2 === 0) await worker.call('close', { force: true });
        await terminate(worker);
      }
      expect(pool.stats()).toMatchObject({ ...MAIN_ONLY, inUse: 0, acquires: 70, releases: 0 });
    },
    120_000,
  );

  it('attach and close in one thread leave no listener behind, and the counters still add up', async () => {
    const pool = sharedPool(8);
    const listeners = process.listenerCount('exit');
    for (let i = 0; i < 20; i++) {
      const attached = BufferPool.attach(pool.handle);
      attached.release(attached.tryAcquire(4096)!);
      await attached.close();
    }
    expect(process.listenerCount('exit')).toBe(listeners);
    expect(pool.stats()).toMatchObject({ ...MAIN_ONLY, acquires: 20, releases: 20, inUse: 0 });
  });

  it('the 65th thread attached at once gets ERR_IOBUF_UNSUPPORTED, and nothing is counted for it', () => {
    const pool = sharedPool(8);
    const attached = Array.from({ length: 63 }, () => BufferPool.attach(pool.handle));
    expect(pool.stats().threads).toBe(64);
    expectCode(
      thrown(() => BufferPool.attach(pool.handle)),
      'IobufError',
      'ERR_IOBUF_UNSUPPORTED',
    );
    expect(pool.stats().threads).toBe(64);
    void attached.pop()!.close();
    expect(BufferPool.attach(pool.handle)).toBeInstanceOf(BufferPool);
    for (const other of attached) void other.close();
  });
});

describe('tickets wrap', () => {
  it('waits served in FIFO order across the int32 wrap; the budget is usable afterwards', async () => {
    const pool = sharedPool(2);
    const control = new Int32Array(pool.handle.shared);
    // 4 tickets before 2^31 - 1 wraps to -2^31.
    control[layout.words.nextTicket] = 2 ** 31 - 4;
    control[layout.words.headTicket] = 2 ** 31 - 4;
    const held = [pool.tryAcquire(65536)!, pool.tryAcquire(65536)!];
    for (let round = 0; round < 3; round++) {
      const order: number[] = [];
      const waits = Array.from({ length: 5 }, (_, i) =>
        pool.acquire(65536).then((buffer) => {
          order.push(i);
          return buffer;
        }),
      );
      for (let i = 0; i < 5; i++) {
        pool.release(held.pop()!);
        held.unshift(await waits[i]);
      }
      expect(order).toEqual([0, 1, 2, 3, 4]);
      held.splice(2);
      for (const extra of held.splice(0)) pool.release(extra);
      held.push(pool.tryAcquire(65536)!, pool.tryAcquire(65536)!);
    }
    expect(control[layout.words.nextTicket]).toBeLessThan(0); // it did wrap
    expect(pool.stats()).toMatchObject({ waiters: 0, inUse: 2 });
    for (const buffer of held) pool.release(buffer);
    expect(pool.tryAcquire(65536)).not.toBeNull();
  });
});

describe('attach() trusts nothing it is given', () => {
  const garbage: [string, (handle: BufferPoolHandle) => unknown, string][] = [
    ['null', () => null, 'ERR_INVALID_ARG_TYPE'],
    ['a number for shared', (h) => ({ ...h, shared: 42 }), 'ERR_INVALID_ARG_TYPE'],
    ['an empty SharedArrayBuffer', (h) => ({ ...h, shared: new SharedArrayBuffer(0) }), 'ERR_INVALID_ARG_VALUE'],
    ['a tiny SharedArrayBuffer', (h) => ({ ...h, shared: new SharedArrayBuffer(64) }), 'ERR_INVALID_ARG_VALUE'],
    [
      'a block of the right size with no magic',
      (h) => ({ ...h, shared: new SharedArrayBuffer(h.shared.byteLength) }),
      'ERR_INVALID_ARG_VALUE',
    ],
    ['sizeClasses: []', (h) => ({ ...h, options: { ...h.options, sizeClasses: [] } }), 'ERR_INVALID_ARG_VALUE'],
    ['sizeClasses: [NaN, 65536]', (h) => ({ ...h, options: { ...h.options, sizeClasses: [NaN, 65536] } }), 'ERR_OUT_OF_RANGE'],
    ['sizeClasses: [4096, 2 ** 40]', (h) => ({ ...h, options: { ...h.options, sizeClasses: [4096, 2 ** 40] } }), 'ERR_OUT_OF_RANGE'],
    ['sizeClasses of another length', (h) => ({ ...h, options: { ...h.options, sizeClasses: [4096] } }), 'ERR_INVALID_ARG_VALUE'],
    ['sizeClasses out of order', (h) => ({ ...h, options: { ...h.options, sizeClasses: [65536, 4096] } }), 'ERR_OUT_OF_RANGE'],
    ['strict: "yes"', (h) => ({ ...h, options: { ...h.options, strict: 'yes' } }), 'ERR_INVALID_ARG_TYPE'],
  ];
  for (const [what, forge, code] of garbage) {
    it(`${what}: ${code}, and no shared state is touched`, () => {
      const pool = sharedPool(2);
      const before = new Int32Array(pool.handle.shared.slice(0));
      const error = thrown(() => BufferPool.attach(forge(pool.handle) as BufferPoolHandle));
      expect(error.code).toBe(code);
      expect(new Int32Array(pool.handle.shared)).toEqual(before);
      // Still the only thread: acquireSync refuses rather than blocking forever.
      pool.tryAcquire(65536);
      pool.tryAcquire(65536);
      expectCode(
        thrown(() => pool.acquireSync(65536)),
        'IobufError',
        'ERR_IOBUF_WOULD_DEADLOCK',
      );
    });
  }

  it('a block from another layout version is refused with a message that says so', () => {
    const pool = sharedPool(2);
    const copy = new SharedArrayBuffer(pool.handle.shared.byteLength);
    new Uint8Array(copy).set(new Uint8Array(pool.handle.shared));
    new Int32Array(copy)[1] = layout.version - 1;
    const error = thrown(() => BufferPool.attach({ ...pool.handle, shared: copy }));
    expect(error.code).toBe('ERR_INVALID_ARG_VALUE');
    expect(error.message).toMatch(/layout version/);
  });

  it('options altered after attach() checked them change nothing: views stay inside their slabs', () => {
    const pool = sharedPool(4, { strict: true });
    const handle = { shared: pool.handle.shared, options: { ...pool.handle.options, sizeClasses: [4096, 65536] } };
    const attached = BufferPool.attach(handle);
    handle.options.sizeClasses[0] = 1 << 20; // too late: attach() copied them
    const buffer = attached.tryAcquire(4096)!;
    expect(buffer.length).toBe(4096);
    buffer.fill(1);
    attached.release(buffer);
    void attached.close();
  });

  it('the native view maker checks its range itself', () => {
    const slab = new ArrayBuffer(4096);
    expectCode(
      thrown(() => native.viewOf(slab, 4096 - 16, 1 << 20)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => native.viewOf(slab, -1, 16)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expect(native.viewOf(slab, 4080, 16).length).toBe(16);
  });

  it('a pool shared by nobody else: attach() of a closed pool throws ERR_IOBUF_POOL_CLOSED', async () => {
    const pool = sharedPool(2);
    const handle = pool.handle;
    await pool.close();
    expectCode(
      thrown(() => BufferPool.attach(handle)),
      'IobufError',
      'ERR_IOBUF_POOL_CLOSED',
    );
    expectCode(await rejection(pool.acquire(4096)), 'IobufError', 'ERR_IOBUF_POOL_CLOSED');
  });
});

describe('churn', () => {
  itNative(NEEDS.terminate)(
    '200 short-lived workers hold, wait and read, and end every way at random moments: stats stay exact',
    async () => {
      const file = path.join(dir, 'churn.bin');
      fs.writeFileSync(file, Buffer.alloc(16 * 65536, 3));
      const pool = makePool({ sizeClasses: [4096, 65536, 131072], maxMemory: 8 * 1024 * KiB, retainIdle: 0 });
      const endings = ['terminate', 'terminate', 'terminate', 'return', 'exit', 'throw', 'close'];
      let seed = 7;
      const random = (n: number) => {
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        return seed % n;
      };
      for (let round = 0; round < 25; round++) {
        // The main thread keeps using the pool meanwhile.
        let running = true;
        const mainHeld: Buffer[] = [];
        const mainLoop = (async () => {
          while (running) {
            try {
              mainHeld.push(await pool.acquire(65536, { timeout: 20 }));
            } catch (error) {
              expect((error as { code?: string }).code).toBe('ERR_IOBUF_BUDGET_TIMEOUT');
            }
            if (mainHeld.length > 4) pool.release(mainHeld.shift()!);
            await new Promise((resolve) => setImmediate(resolve));
          }
        })();
        const exits = Array.from({ length: 8 }, async () => {
          const ending = endings[random(endings.length)];
          const worker = new Worker(path.join(__dirname, 'fixtures', 'pool-churn-worker.js'), {
            workerData: { handle: pool.handle, file, seed: random(2 ** 30) + 1, ending },
          });
          worker.on('error', () => {}); // 'throw' ends with an uncaught error on purpose
          const exited = new Promise<number>((resolve) => worker.on('exit', resolve));
          if (ending === 'terminate') {
            const when = random(3);
            if (when > 0) await new Promise((resolve) => worker.once('message', resolve));
            for (let i = random(when === 2 ? 40 : 1); i > 0; i--) await new Promise((resolve) => setImmediate(resolve));
            await worker.terminate();
          }
          return exited;
        });
        await Promise.all(exits);
        running = false;
        await mainLoop;
        for (const buffer of mainHeld.splice(0)) pool.release(buffer);
        expect({ round, ...pool.stats() }).toMatchObject({ round, threads: 1, waiters: 0, inUse: 0 });
        // The whole budget can be taken by the one thread left.
        const all = await pool.acquireMany(64, 131072, { timeout: 10_000 });
        expect(all.length).toBe(64);
        for (const buffer of all) pool.release(buffer);
      }
    },
    120_000,
  );
});
