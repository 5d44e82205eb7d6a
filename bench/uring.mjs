// Benchmarks of IoRing (io_uring file I/O) against Node's own file I/O (the
// libuv thread pool), iobuf's thread-pool preadv, and fio — the C ceiling of
// this machine with the same engine (io_uring), file, block size and depth.
// A 1 GiB file on the disk under bench/.data; O_DIRECT tables drop the page
// cache before every pass (root); the page-cache table reads the file once
// first. Each trial is a fresh process; `depth` workers each keep one read in
// flight (queue depth = workers). CPU per operation is the whole process's
// user + system time over the timed window (thread-pool threads included;
// for fio, its own usr + sys).
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, constants, existsSync, openSync, readSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { ROOT, dropCaches, ensureDataFile, formatBytes, iobuf, isRoot, median } from './harness.mjs';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const FILE_SIZE = GiB;
const SMALL = 4 * KiB;
const LARGE = MiB;

// Every Node competitor reads into the same pooled buffers.
const RING = 'IoRing, registered'; // READ_FIXED into the ring's pool
const RING_UNREGISTERED = 'IoRing, unregistered'; // plain READ: a ring made without the pool
const FS_PROMISES = 'fs.promises (4 threads)'; // FileHandle.read, libuv's default thread pool
const FS_PROMISES_32 = 'fs.promises (32 threads)'; // the same with UV_THREADPOOL_SIZE=32
const PREADV = 'iobuf preadv (4 threads)'; // await preadv over a one-entry IoVecArray
const FIO = 'fio (io_uring, C)'; // --ioengine=io_uring, fixed buffers, batched (runFio)

const dataFile = () => ensureDataFile(FILE_SIZE);

/** fio from Debian, installed by scripts/install-fio.sh; null when it is missing. */
function fioPath() {
  const found = spawnSync('sh', ['-c', 'command -v fio'], { encoding: 'utf8' }).stdout.trim();
  return found === '' ? null : found;
}

// ---------------------------------------------------------------------------
// Trials
// ---------------------------------------------------------------------------

/** xorshift32: the same block offsets in every process. */
function blockPicker(seed, blocks) {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state % blocks;
  };
}

/**
 * Random reads of `blockSize` at queue depth `depth` for `seconds` (after a
 * short warm-up): `read(worker, position)` → bytes. → { value: ops/s, extras }.
 */
async function randomReads({ depth, blockSize, seconds, read, stats }) {
  const blocks = FILE_SIZE / blockSize;
  const pick = blockPicker(0x9e3779b9 ^ depth, blocks);
  let timing = false;
  let ops = 0;
  let stop = false;
  const worker = async (index) => {
    while (!stop) {
      const bytes = await read(index, pick() * blockSize);
      if (bytes !== blockSize) throw new Error(`read ${bytes} of ${blockSize} bytes`);
      if (timing) ops++;
    }
  };
  const running = Promise.all(Array.from({ length: depth }, (_, i) => worker(i)));
  await new Promise((resolve) => setTimeout(resolve, seconds * 150)); // warm-up: 15% of the time
  const statsBefore = stats?.();
  timing = true;
  const cpuStart = process.cpuUsage();
  const start = process.hrtime.bigint();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  timing = false;
  const ns = Number(process.hrtime.bigint() - start);
  const cpu = process.cpuUsage(cpuStart);
  const counted = ops;
  const statsAfter = stats?.();
  stop = true;
  await running;
  const extras = { cpuUs: (cpu.user + cpu.system) / counted };
  if (statsBefore) extras.enterPerOp = (statsAfter.submitCalls - statsBefore.submitCalls) / counted;
  return { value: (counted / ns) * 1e9, extras };
}

/**
 * Sequential passes over the whole file in `blockSize` reads, `depth` in
 * flight, the page cache dropped before each: `read(worker, position)` →
 * bytes. → { value: GB/s (median), extras }.
 */
async function sequentialPasses({ depth, blockSize, passes, read }) {
  const results = [];
  const cpuPerOp = [];
  let dropped = true;
  for (let pass = 0; pass < passes; pass++) {
    dropped = dropCaches() && dropped;
    let next = 0;
    let total = 0;
    let ops = 0;
    const worker = async (index) => {
      while (next < FILE_SIZE) {
        const position = next;
        next += blockSize;
        const bytes = await read(index, position);
        if (bytes !== blockSize) throw new Error(`read ${bytes} of ${blockSize} bytes at ${position}`);
        total += bytes;
        ops++;
      }
    };
    const cpuStart = process.cpuUsage();
    const start = process.hrtime.bigint();
    await Promise.all(Array.from({ length: depth }, (_, i) => worker(i)));
    const ns = Number(process.hrtime.bigint() - start);
    const cpu = process.cpuUsage(cpuStart);
    if (total !== FILE_SIZE) throw new Error(`read ${total} of ${FILE_SIZE} bytes`);
    results.push(FILE_SIZE / ns);
    cpuPerOp.push((cpu.user + cpu.system) / ops);
  }
  return { value: median(results), extras: { cpuUs: median(cpuPerOp) }, note: dropped ? undefined : 'page cache NOT dropped (needs root)' };
}

/** Reads the file once so that the page-cache table finds it cached. */
function warmPageCache(file) {
  const fd = openSync(file, constants.O_RDONLY);
  const buffer = Buffer.allocUnsafe(MiB);
  while (readSync(fd, buffer, 0, MiB, null) > 0);
  closeSync(fd);
}

/**
 * `depth` buffers of `size` from a pool: every competitor reads into the same
 * kind of memory (slabs of 2 MiB and up are huge pages: hugetlb when the
 * table reserved some, else THP).
 */
function pooledBuffers(depth, size) {
  const { BufferPool } = iobuf();
  const pool = new BufferPool({ maxMemory: Math.max(64 * MiB, 4 * depth * size), leakDetection: 'off' });
  const buffers = Array.from({ length: depth }, () => pool.tryAcquire(size).fill(0));
  return { pool, buffers };
}

/**
 * The Node competitors: open(file, flags, depth, blockSize) →
 * { read(worker, position) → bytes, stats?(), pages, close() }.
 */
const openers = {
  [RING]: async (file, flags, depth, size) => {
    const fd = openSync(file, flags);
    const { pool, buffers } = pooledBuffers(depth, size);
    const ring = new (iobuf().IoRing)({ pool, entries: Math.max(8, depth) });
    return {
      read: (i, position) => ring.read(fd, buffers[i], position),
      stats: () => ring.stats(),
      pages: iobuf().pageKind(buffers[0]),
      close: async () => {
        await ring.close();
        closeSync(fd);
      },
    };
  },
  [RING_UNREGISTERED]: async (file, flags, depth, size) => {
    const fd = openSync(file, flags);
    const { buffers } = pooledBuffers(depth, size);
    const ring = new (iobuf().IoRing)({ entries: Math.max(8, depth) });
    return {
      read: (i, position) => ring.read(fd, buffers[i], position),
      stats: () => ring.stats(),
      pages: iobuf().pageKind(buffers[0]),
      close: async () => {
        await ring.close();
        closeSync(fd);
      },
    };
  },
  [FS_PROMISES]: async (file, flags, depth, size) => {
    const handle = await fs.open(file, flags);
    const { buffers } = pooledBuffers(depth, size);
    return {
      read: async (i, position) => (await handle.read(buffers[i], 0, size, position)).bytesRead,
      pages: iobuf().pageKind(buffers[0]),
      close: () => handle.close(),
    };
  },
  [PREADV]: async (file, flags, depth, size) => {
    const { IoVecArray, preadv } = iobuf();
    const fd = openSync(file, flags);
    const { buffers } = pooledBuffers(depth, size);
    const arrays = buffers.map((buffer) => IoVecArray.from([buffer]));
    return {
      read: (i, position) => preadv(fd, arrays[i], position),
      pages: iobuf().pageKind(buffers[0]),
      close: () => closeSync(fd),
    };
  },
};
openers[FS_PROMISES_32] = openers[FS_PROMISES];

/** A random-read trial of one Node competitor. */
const randomTrial =
  (name, { direct }) =>
  async (depth, ctx) => {
    const file = dataFile();
    if (direct) dropCaches();
    else warmPageCache(file);
    const reader = await openers[name](file, constants.O_RDONLY | (direct ? constants.O_DIRECT : 0), depth, SMALL);
    const result = await randomReads({ depth, blockSize: SMALL, seconds: ctx.full ? 4 : 1.5, read: reader.read, stats: reader.stats });
    await reader.close();
    return result;
  };

/** A sequential-read trial of one Node competitor. */
const sequentialTrial = (name) => async (depth, ctx) => {
  const reader = await openers[name](dataFile(), constants.O_RDONLY | constants.O_DIRECT, depth, LARGE);
  const result = await sequentialPasses({ depth, blockSize: LARGE, passes: ctx.full ? 5 : 3, read: reader.read });
  await reader.close();
  return { ...result, note: [result.note, `pages: ${reader.pages}`].filter(Boolean).join('; ') };
};

/**
 * fio with the same file, block size, depth and engine, set up to be as fast
 * as it gets without a polling kernel thread: registered buffers and file,
 * submissions and completions batched up to the depth (fio's defaults submit
 * one I/O per syscall, which costs it 2× the CPU per read at depth 32).
 * → { job, ios, cpuUs } (CPU per op from its usr + sys), or { skip }.
 */
function runFio(depth, args) {
  const fio = fioPath();
  if (fio === null) return { skip: 'fio is not installed (scripts/install-fio.sh)' };
  const output = execFileSync(
    fio,
    [
      '--name=iobuf',
      `--filename=${dataFile()}`,
      '--ioengine=io_uring',
      '--fixedbufs=1',
      '--registerfiles=1',
      `--iodepth=${depth}`,
      `--iodepth_batch_submit=${depth}`,
      `--iodepth_batch_complete_max=${depth}`,
      '--output-format=json',
      ...args,
    ],
    { encoding: 'utf8', maxBuffer: 64 * MiB },
  );
  const job = JSON.parse(output.slice(output.indexOf('{'))).jobs[0];
  const ios = job.read.total_ios;
  const cpuUs = (((job.usr_cpu + job.sys_cpu) / 100) * job.job_runtime * 1000) / ios;
  return { job, ios, cpuUs };
}

const fioRandomTrial =
  ({ direct }) =>
  async (depth, ctx) => {
    if (direct) dropCaches();
    else warmPageCache(dataFile());
    const seconds = ctx.full ? 4 : 1.5;
    const result = runFio(depth, [
      '--rw=randread',
      `--bs=${SMALL}`,
      `--direct=${direct ? 1 : 0}`,
      '--invalidate=0',
      '--norandommap',
      '--randrepeat=0',
      '--time_based',
      `--runtime=${seconds}`,
      `--ramp_time=${seconds * 0.15}`,
    ]);
    if (result.skip) return result;
    return { value: result.job.read.iops, extras: { cpuUs: result.cpuUs } };
  };

const fioSequentialTrial = async (depth, ctx) => {
  const values = [];
  const cpu = [];
  let dropped = true;
  for (let pass = 0; pass < (ctx.full ? 5 : 3); pass++) {
    dropped = dropCaches() && dropped;
    // hugetlb buffers (the table reserves them), as the pool's 1 MiB slabs get.
    const result = runFio(depth, ['--rw=read', `--bs=${LARGE}`, '--direct=1', '--invalidate=0', `--size=${FILE_SIZE}`, '--mem=shmhuge']);
    if (result.skip) return result;
    values.push(result.job.read.bw_bytes / 1e9);
    cpu.push(result.cpuUs);
  }
  return {
    value: median(values),
    extras: { cpuUs: median(cpu) },
    note: dropped ? 'fio buffers: hugetlb (shmhuge)' : 'page cache NOT dropped (needs root)',
  };
};

// ---------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------

const formatIops = (v) => (Number.isFinite(v) ? (v >= 1e5 ? `${(v / 1e3).toFixed(0)} k/s` : `${(v / 1e3).toFixed(1)} k/s`) : '–');
const cpuExtra = {
  key: 'cpuUs',
  label: 'CPU µs per operation (whole process: user + system)',
  format: (v) => (Number.isFinite(v) ? v.toFixed(2) : '–'),
};
const enterExtra = {
  key: 'enterPerOp',
  label: 'io_uring_enter calls per operation (IoRing: one per tick that started operations)',
  format: (v) => (Number.isFinite(v) ? v.toFixed(3) : '–'),
};

function ratioTarget(get, name, base, param, factor) {
  const cell = get(name, param);
  const baseline = get(base, param);
  if (!cell || cell.skip || !baseline || baseline.skip) return { pass: null, detail: cell?.skip ?? baseline?.skip ?? 'not measured' };
  const ratio = cell.value / baseline.value;
  return { pass: ratio >= factor, detail: `${ratio.toFixed(2)}× (target ≥ ${factor}×)` };
}

const nodeCompetitors = (direct) => [
  { name: RING, vs: FS_PROMISES, run: randomTrial(RING, { direct }) },
  { name: RING_UNREGISTERED, vs: FS_PROMISES, run: randomTrial(RING_UNREGISTERED, { direct }) },
  { name: FS_PROMISES, run: randomTrial(FS_PROMISES, { direct }) },
  { name: FS_PROMISES_32, env: { UV_THREADPOOL_SIZE: '32' }, run: randomTrial(FS_PROMISES_32, { direct }) },
  { name: PREADV, run: randomTrial(PREADV, { direct }) },
  { name: FIO, vs: FS_PROMISES, run: fioRandomTrial({ direct }) },
];

const randomDirect = {
  id: 'random-direct',
  title: `random ${formatBytes(SMALL)} O_DIRECT reads of a ${formatBytes(FILE_SIZE)} file`,
  unit: 'reads per second',
  better: 'higher',
  format: formatIops,
  params: { quick: [1, 8, 32, 128], full: [1, 8, 32, 128] },
  paramLabel: (depth) => `QD ${depth}`,
  processes: { quick: 1, full: 3 },
  baseline: FS_PROMISES,
  extras: [cpuExtra, enterExtra],
  competitors: nodeCompetitors(true),
  targets: [
    { name: `QD 32: ${RING} ≥ 3× ${FS_PROMISES}`, check: (get) => ratioTarget(get, RING, FS_PROMISES, 32, 3) },
    { name: `QD 32: ${RING} ≥ 0.8× ${FIO}`, check: (get) => ratioTarget(get, RING, FIO, 32, 0.8) },
  ],
};

const randomCached = {
  id: 'random-cached',
  title: `random ${formatBytes(SMALL)} buffered reads of a ${formatBytes(FILE_SIZE)} file in the page cache`,
  unit: 'reads per second',
  better: 'higher',
  format: formatIops,
  params: { quick: [1, 32], full: [1, 8, 32] },
  paramLabel: (depth) => `QD ${depth}`,
  processes: { quick: 1, full: 3 },
  baseline: FS_PROMISES,
  extras: [cpuExtra, enterExtra],
  competitors: nodeCompetitors(false),
  targets: [1, 32].map((depth) => ({
    name: `QD ${depth}: ${RING} ≥ 2× ${FS_PROMISES}`,
    check: (get) => ratioTarget(get, RING, FS_PROMISES, depth, 2),
  })),
};

const sequentialDirect = {
  id: 'sequential-direct',
  title: `sequential ${formatBytes(LARGE)} O_DIRECT reads of a cold ${formatBytes(FILE_SIZE)} file, hugetlb buffers`,
  unit: 'GB/s',
  better: 'higher',
  format: (v) => (Number.isFinite(v) ? `${v.toFixed(2)} GB/s` : '–'),
  params: { quick: [1, 4], full: [1, 4, 16] },
  paramLabel: (depth) => `QD ${depth}`,
  processes: { quick: 1, full: 3 },
  hugetlb: 40,
  baseline: FIO,
  extras: [cpuExtra],
  competitors: [
    { name: RING, hugetlb: 'need', run: sequentialTrial(RING) },
    { name: RING_UNREGISTERED, hugetlb: 'need', run: sequentialTrial(RING_UNREGISTERED) },
    { name: FS_PROMISES, hugetlb: 'need', run: sequentialTrial(FS_PROMISES) },
    { name: PREADV, hugetlb: 'need', run: sequentialTrial(PREADV) },
    { name: FIO, hugetlb: 'need', run: fioSequentialTrial },
  ],
  targets: [1, 4].map((depth) => ({
    name: `QD ${depth}: ${RING} ≥ 0.9× ${FIO}`,
    check: (get) => ratioTarget(get, RING, FIO, depth, 0.9),
  })),
};

export default {
  name: 'uring',
  title: 'IoRing (io_uring file I/O)',
  setup() {
    if (fioPath() === null && isRoot && existsSync(path.join(ROOT, 'scripts', 'install-fio.sh'))) {
      console.log('fio is missing: installing it (scripts/install-fio.sh)');
      spawnSync('bash', [path.join(ROOT, 'scripts', 'install-fio.sh')], { stdio: 'inherit' });
    }
    if (!iobuf().IoRing.supported().ok) console.log(`io_uring is not available: ${iobuf().IoRing.supported().reason}`);
    dataFile();
  },
  tables: [randomDirect, sequentialDirect, randomCached],
};
