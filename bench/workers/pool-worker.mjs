// Worker side of bench/pool.mjs (kept out of bench/*.mjs, which run-bench
// loads as suites). One role per worker, chosen by workerData.role; the main
// thread and the workers meet through a SharedArrayBuffer of control words
// (see CONTROL in bench/pool.mjs) and write their timestamps into a shared
// BigInt64Array, so no message passing sits inside anything timed.
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { workerData } from 'node:worker_threads';

// The same build as the parent loaded (harness.mjs: DIST, IOBUF_BENCH_DIST).
const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const DIST = path.resolve(process.env.IOBUF_BENCH_DIST ?? path.join(ROOT, 'dist'));
// workerData.portable: the package in portable mode, as the parent's iobufPortable() loads it.
if (workerData.portable) process.env.IOBUF_PORTABLE = '1';
const { BufferPool, native } = createRequire(import.meta.url)(path.join(DIST, 'index.js'));
if (workerData.portable && native !== false) throw new Error('the worker was to load iobuf in portable mode');

// Control words: the same indices as CONTROL in bench/pool.mjs.
const READY = 0;
const GO = 1;
const DONE = 2;
const FLAG = 3;
const HELD = 4;

const { role, ctrlBuffer, timesBuffer, index = 0 } = workerData;
const ctrl = new Int32Array(ctrlBuffer);
const times = new BigInt64Array(timesBuffer);
const now = process.hrtime.bigint;

const signal = (word) => {
  Atomics.add(ctrl, word, 1);
  Atomics.notify(ctrl, word);
};

/** Blocks until ctrl[word] >= value (the main thread never takes long; the bound catches a dead parent). */
function waitAtLeast(word, value) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const seen = Atomics.load(ctrl, word);
    if (seen >= value) return;
    if (Date.now() > deadline) throw new Error(`worker: timed out waiting for word ${word} to reach ${value}`);
    Atomics.wait(ctrl, word, seen, 1000);
  }
}

/** Busy-waits `ms`: the peer thread gets time to park (in epoll or a futex) before we wake it. */
function spin(ms) {
  const end = now() + BigInt(Math.round(ms * 1e6));
  while (now() < end);
}

const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

// ---------------------------------------------------------------------------
// Throughput: warm up, then per round meet at a barrier and time `count` pairs
// ---------------------------------------------------------------------------

function makeLoop(kind, size) {
  if (kind === 'pool') {
    const pool = BufferPool.attach(workerData.handle);
    return (count) => {
      let last;
      for (let i = 0; i < count; i++) {
        last = pool.tryAcquire(size);
        pool.release(last);
      }
      return last;
    };
  }
  // The pure-JS free list: an array used as a stack of pre-made views.
  const slab = Buffer.allocUnsafeSlow(size * 32).buffer;
  const free = [];
  for (let i = 0; i < 32; i++) free.push(Buffer.from(slab, i * size, size));
  return (count) => {
    let last;
    for (let i = 0; i < count; i++) {
      last = free.pop();
      free.push(last);
    }
    return last;
  };
}

function throughput() {
  const { kind, size, count, rounds, warmup } = workerData;
  const loop = makeLoop(kind, size);
  loop(warmup);
  for (let round = 0; round < rounds; round++) {
    signal(READY);
    waitAtLeast(GO, round + 1);
    const start = now();
    loop(count);
    const end = now();
    times[(round * workerData.threads + index) * 2] = start;
    times[(round * workerData.threads + index) * 2 + 1] = end;
    signal(DONE);
  }
}

// ---------------------------------------------------------------------------
// Waiting latency
// ---------------------------------------------------------------------------

/** This worker blocks in acquireSync; the main thread's release wakes it. times[2r+1] = resumed. */
async function poolSyncWaiter() {
  const { size, rounds } = workerData;
  const pool = BufferPool.attach(workerData.handle);
  for (let round = 0; round < rounds; round++) {
    waitAtLeast(GO, round + 1); // the main thread holds the whole budget now
    const buffer = pool.acquireSync(size, { timeout: 30_000 });
    times[round * 2 + 1] = now();
    signal(DONE);
    pool.release(buffer);
    await nextTurn(); // housekeeping gives the idle slab back to the budget
  }
  await pool.close();
}

/** This worker holds the budget and releases it; the main thread waits in acquire(). times[2r] = release. */
async function poolReleaser() {
  const { size, rounds } = workerData;
  const pool = BufferPool.attach(workerData.handle);
  for (let round = 0; round < rounds; round++) {
    const buffer = pool.acquireSync(size, { timeout: 30_000 }); // once the main thread gave it back
    signal(HELD);
    waitAtLeast(GO, round + 1); // the main thread's acquire() is pending
    spin(1); // and its event loop is parked
    times[round * 2] = now();
    pool.release(buffer);
  }
  await pool.close();
}

/** Floor for the blocking case: a bare Atomics.wait woken by Atomics.notify. */
function floorSyncWaiter() {
  for (let round = 0; round < workerData.rounds; round++) {
    signal(READY);
    while (Atomics.load(ctrl, FLAG) < round + 1) Atomics.wait(ctrl, FLAG, round, 30_000);
    times[round * 2 + 1] = now();
    signal(DONE);
  }
}

/** Floor for the async case: this worker notifies a main thread parked in Atomics.waitAsync. */
function floorNotifier() {
  for (let round = 0; round < workerData.rounds; round++) {
    waitAtLeast(GO, round + 1);
    spin(1);
    times[round * 2] = now();
    Atomics.store(ctrl, FLAG, round + 1);
    Atomics.notify(ctrl, FLAG);
  }
}

const roles = { throughput, poolSyncWaiter, poolReleaser, floorSyncWaiter, floorNotifier };
await roles[role]();
