// Benchmarks of the iovec part: writev of 16 × 4 KiB to /dev/null
// (prepared IoVecArray, an array rebuilt from pooled buffers each time, and
// the promise version) against fs.writevSync and 16 × fs.writeSync; and
// O_DIRECT preadv of 1 MiB per call into huge-page pooled buffers against
// fs.readSync into an aligned buffer. Both tables have the C floor in the
// same run (bench/floor.c: the same system call on the same kind of memory),
// and each competitor's overhead above it.
import { openSync, readSync, writeSync, writev as fsWritevCallback, writevSync as fsWritevSync } from 'node:fs';
import { promisify } from 'node:util';
import { coldReadPasses, ensureDataFile, ensureFloorBinary, formatBytes, formatNs, iobuf, median, runFloor, timeOps } from './harness.mjs';

const KiB = 1024;
const MiB = 1024 * KiB;

// ---------------------------------------------------------------------------
// writev of ENTRIES × SIZE to /dev/null
// ---------------------------------------------------------------------------

const ENTRIES = 16;
const SIZE = 4 * KiB;

const FS_WRITEV = 'fs.writevSync';
const FS_WRITE_LOOP = '16 × fs.writeSync';
const PREPARED = 'writevSync (prepared array)';
const REBUILT = 'writevSync (array rebuilt from 16 pooled buffers)';
const REBUILT_FOREIGN = 'writevSync (array rebuilt from 16 plain Buffers)';
const FS_WRITEV_ASYNC = 'fs.writev (callback, promisified)';
const ASYNC = 'await writev (thread pool)';
const C_WRITEV = 'C writev (floor)';

const timing = (ctx) => (ctx.full ? { samples: 11, sampleMs: 40, warmupMs: 150 } : { samples: 7, sampleMs: 20, warmupMs: 80 });

/** The buffers every competitor writes: pooled ones (a pool is what the iovec part is for). */
function setup() {
  const { BufferPool } = iobuf();
  const pool = new BufferPool({ maxMemory: 16 * MiB, leakDetection: 'off' });
  const buffers = Array.from({ length: ENTRIES }, (_, i) => pool.tryAcquire(SIZE).fill(i));
  const fd = openSync('/dev/null', 'w');
  return { pool, buffers, fd };
}

/** Median ns per awaited op, in samples of `batch` sequential awaits. */
async function timeAsync(op, ctx) {
  const { samples, warmupMs } = timing(ctx);
  const warmupEnd = performance.now() + warmupMs;
  let ops = 0;
  const start = performance.now();
  while (performance.now() < warmupEnd) {
    await op();
    ops++;
  }
  const batch = Math.max(1, Math.ceil(20 / ((performance.now() - start) / ops)));
  const results = [];
  for (let s = 0; s < samples; s++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < batch; i++) await op();
    results.push(Number(process.hrtime.bigint() - t0) / batch);
  }
  return { value: median(results) };
}

/** A competitor that refills an IoVecArray from `buffers(setup())` (16 views) before every writevSync. */
const rebuilt = (name, buffers) => ({
  name,
  run: async (_, ctx) => {
    const { IoVecArray, writevSync } = iobuf();
    const prepared = setup();
    const { fd } = prepared;
    const views = buffers(prepared);
    const iov = new IoVecArray(ENTRIES);
    return timeOps(() => {
      iov.clear();
      for (let i = 0; i < ENTRIES; i++) iov.push(views[i]);
      return expectBytes(writevSync(fd, iov));
    }, timing(ctx));
  },
});

const expectBytes = (written) => {
  if (written !== ENTRIES * SIZE) throw new Error(`wrote ${written} of ${ENTRIES * SIZE} bytes`);
  return written;
};

const writevTable = {
  id: 'writev',
  title: `writev of ${ENTRIES} × ${formatBytes(SIZE)} to /dev/null`,
  unit: 'time per call',
  better: 'lower',
  params: { quick: [ENTRIES], full: [ENTRIES] },
  paramLabel: (n) => `${n} × ${formatBytes(SIZE)}`,
  processes: { quick: 3, full: 7 },
  baseline: FS_WRITEV,
  floor: C_WRITEV,
  competitors: [
    {
      name: C_WRITEV,
      run: async (_, ctx) => {
        const { samples, sampleMs, warmupMs } = timing(ctx);
        return runFloor(['writev', samples, sampleMs, warmupMs]);
      },
    },
    {
      name: FS_WRITEV,
      run: async (_, ctx) => {
        const { buffers, fd } = setup();
        return timeOps(() => expectBytes(fsWritevSync(fd, buffers)), timing(ctx));
      },
    },
    {
      name: FS_WRITE_LOOP,
      run: async (_, ctx) => {
        const { buffers, fd } = setup();
        return timeOps(() => {
          let written = 0;
          for (let i = 0; i < ENTRIES; i++) written += writeSync(fd, buffers[i]);
          return expectBytes(written);
        }, timing(ctx));
      },
    },
    {
      name: PREPARED,
      run: async (_, ctx) => {
        const { IoVecArray, writevSync } = iobuf();
        const { buffers, fd } = setup();
        const iov = IoVecArray.from(buffers);
        return timeOps(() => expectBytes(writevSync(fd, iov)), timing(ctx));
      },
    },
    rebuilt(REBUILT, (prepared) => prepared.buffers),
    rebuilt(REBUILT_FOREIGN, () => Array.from({ length: ENTRIES }, (_, i) => Buffer.alloc(SIZE, i))),
    {
      name: FS_WRITEV_ASYNC,
      run: async (_, ctx) => {
        const { buffers, fd } = setup();
        const writev = promisify(fsWritevCallback);
        return timeAsync(async () => expectBytes((await writev(fd, buffers)).bytesWritten), ctx);
      },
    },
    {
      name: ASYNC,
      vs: FS_WRITEV_ASYNC,
      run: async (_, ctx) => {
        const { IoVecArray, writev } = iobuf();
        const { buffers, fd } = setup();
        const iov = IoVecArray.from(buffers);
        return timeAsync(async () => expectBytes(await writev(fd, iov)), ctx);
      },
    },
  ],
  targets: [
    {
      name: `${PREPARED} ≥ 2× faster than ${FS_WRITEV}`,
      check: (get) => ratioTarget(get(PREPARED, ENTRIES), get(FS_WRITEV, ENTRIES), 2),
    },
    {
      name: `${REBUILT} ≥ 1.5× faster than ${FS_WRITEV}`,
      check: (get) => ratioTarget(get(REBUILT, ENTRIES), get(FS_WRITEV, ENTRIES), 1.5),
    },
    ...[PREPARED, REBUILT].map((name) => ({
      name: `${name}: overhead above the C floor ≤ 0.25× ${FS_WRITEV}'s`,
      check: (get) => floorTarget(get(name, ENTRIES), get(FS_WRITEV, ENTRIES), get(C_WRITEV, ENTRIES), 0.25),
    })),
  ],
};

/** overhead(cell) ≤ factor × overhead(base), both above `floor` (the harness computed overFloor). */
function floorTarget(cell, base, floor, factor) {
  if (![cell, base, floor].every((c) => c && !c.skip && Number.isFinite(c.value))) {
    return { pass: null, detail: cell?.skip ?? base?.skip ?? floor?.skip ?? 'not measured' };
  }
  const ratio = cell.overFloor / base.overFloor;
  return {
    pass: ratio <= factor,
    detail:
      `${formatNs(cell.value)} − ${formatNs(floor.value)} = ${formatNs(cell.overFloor)} above the floor, ` +
      `vs ${formatNs(base.value)} − ${formatNs(floor.value)} = ${formatNs(base.overFloor)}: ${ratio.toFixed(2)}×`,
  };
}

function ratioTarget(cell, base, factor) {
  if (!cell || cell.skip || !base || base.skip) return { pass: null, detail: cell?.skip ?? base?.skip ?? 'not measured' };
  const speedup = base.value / cell.value;
  return { pass: speedup >= factor, detail: `${formatNs(cell.value)} vs ${formatNs(base.value)} = ${speedup.toFixed(2)}× faster` };
}

// ---------------------------------------------------------------------------
// O_DIRECT: a cold 256 MiB file in 1 MiB reads
// ---------------------------------------------------------------------------

const FILE_SIZE = 256 * MiB;
const READ_SIZE = MiB;

/** A trial: `prepare()` → { read(fd, position), note?(), done?() }, timed by the harness's cold passes. */
async function readPasses(prepare, ctx) {
  const { read, note, done } = prepare();
  const result = await coldReadPasses(ensureDataFile(FILE_SIZE), {
    size: FILE_SIZE,
    readSize: READ_SIZE,
    samples: ctx.full ? 5 : 3,
    read,
  });
  done?.();
  const notes = [note?.(), result.note].filter(Boolean);
  return { value: result.value, note: notes.join('; ') || undefined };
}

/** A pool whose 1 MiB class lives in 2 MiB huge-page slabs; the buffer is touched first. */
function pooled(pieces) {
  const { BufferPool, IoVecArray, pageKind } = iobuf();
  const pool = new BufferPool({ maxMemory: 64 * MiB, hugePages: true, leakDetection: 'off' });
  const buffers = Array.from({ length: pieces }, () => pool.tryAcquire(READ_SIZE / pieces).fill(0));
  const iov = IoVecArray.from(buffers);
  return { iov, note: () => `pages: ${pageKind(buffers[0])}` };
}

const READ_BASELINE = 'fs.readSync → allocAligned (4 KiB pages)';
const PREADV_HUGE = 'preadvSync → pooled 1 MiB (huge pages)';
const C_PREAD_4K = 'C pread → 4 KiB pages (floor)';
const C_PREAD_THP = 'C pread → THP (floor)';
const C_PREAD_HUGETLB = 'C pread → hugetlb (floor)';

/** The C floor: O_DIRECT pread passes over the same file into one READ_SIZE buffer of `memory` (bench/floor.c). */
const cPread = (name, memory, hugetlb) => ({
  name,
  hugetlb,
  run: (_, ctx) => runFloor(['pread', ensureDataFile(FILE_SIZE), FILE_SIZE, READ_SIZE, memory, ctx.full ? 5 : 3]),
});

/** A competitor reading into `pieces` pooled buffers per call with iobuf's `call` (preadvSync or preadv). */
const pooledRead = (name, pieces, hugetlb, call = 'preadvSync', floor = hugetlb === 'need' ? C_PREAD_HUGETLB : C_PREAD_THP) => ({
  name,
  hugetlb,
  floor,
  run: (_, ctx) =>
    readPasses(() => {
      const read = iobuf()[call];
      const { iov, note } = pooled(pieces);
      return { read: (fd, position) => read(fd, iov, position), note };
    }, ctx),
});

const directTable = {
  id: 'o-direct',
  title: `O_DIRECT: reading a cold ${formatBytes(FILE_SIZE)} file in ${formatBytes(READ_SIZE)} calls`,
  unit: 'GB/s',
  better: 'higher',
  format: (v) => (Number.isFinite(v) ? `${v.toFixed(2)} GB/s` : '–'),
  params: { quick: [FILE_SIZE], full: [FILE_SIZE] },
  paramLabel: formatBytes,
  processes: { quick: 1, full: 3 },
  hugetlb: 8,
  baseline: READ_BASELINE,
  // Overhead above the floor as time per 1 MiB read: READ_SIZE / GB/s is ns per read.
  floorOverhead: (value, floorValue) => READ_SIZE / value - READ_SIZE / floorValue,
  floorFormat: (ns) => `${formatNs(ns)} per read`,
  competitors: [
    cPread(C_PREAD_4K, '4k'),
    cPread(C_PREAD_THP, 'thp', 'avoid'),
    cPread(C_PREAD_HUGETLB, 'hugetlb', 'need'),
    {
      name: READ_BASELINE,
      floor: C_PREAD_4K,
      run: (_, ctx) =>
        readPasses(() => {
          const buffer = iobuf().allocAligned(READ_SIZE);
          return { read: (fd, position) => readSync(fd, buffer, 0, READ_SIZE, position) };
        }, ctx),
    },
    {
      name: 'fs.readSync → allocHuge',
      hugetlb: 'avoid',
      floor: C_PREAD_THP,
      run: (_, ctx) =>
        readPasses(() => {
          const buffer = iobuf().allocHuge(READ_SIZE).fill(0);
          return { read: (fd, position) => readSync(fd, buffer, 0, READ_SIZE, position), note: () => `pages: ${iobuf().pageKind(buffer)}` };
        }, ctx),
    },
    pooledRead(PREADV_HUGE, 1, 'avoid'),
    pooledRead('preadvSync → 4 pooled × 256 KiB (huge pages)', 4, 'avoid'),
    pooledRead('await preadv → pooled 1 MiB (huge pages)', 1, 'avoid', 'preadv'),
    pooledRead('preadvSync → pooled 1 MiB (hugetlb)', 1, 'need'),
  ],
  targets: [
    {
      name: `${PREADV_HUGE} vs ${READ_BASELINE} (report; huge pages doubled O_DIRECT reads in the memory suite)`,
      check: (get) => {
        const cell = get(PREADV_HUGE, FILE_SIZE);
        const base = get(READ_BASELINE, FILE_SIZE);
        if (!cell || cell.skip || !base || base.skip) return { pass: null, detail: cell?.skip ?? base?.skip ?? 'not measured' };
        return {
          pass: cell.ratio >= 1.5,
          detail: `${cell.value.toFixed(2)} vs ${base.value.toFixed(2)} GB/s = ${cell.ratio.toFixed(2)}× (target ≥ 1.5×)`,
        };
      },
    },
    {
      name: `${PREADV_HUGE} and ${READ_BASELINE}: time per read above their C floors (report)`,
      check: (get) => {
        const cells = [get(PREADV_HUGE, FILE_SIZE), get(C_PREAD_THP, FILE_SIZE), get(READ_BASELINE, FILE_SIZE), get(C_PREAD_4K, FILE_SIZE)];
        if (!cells.every((c) => c && !c.skip && Number.isFinite(c.value))) return { pass: null, detail: 'not measured' };
        const [pooledCell, thp, readCell, pages4k] = cells;
        const perRead = (c) => formatNs(READ_SIZE / c.value);
        return {
          pass: null,
          detail:
            `preadvSync ${perRead(pooledCell)} per read vs C ${perRead(thp)} (THP): ${formatNs(pooledCell.overFloor)}; ` +
            `fs.readSync ${perRead(readCell)} vs C ${perRead(pages4k)} (4 KiB pages): ${formatNs(readCell.overFloor)}`,
        };
      },
    },
  ],
};

export default {
  name: 'iovec',
  title: 'IoVecArray and vectored I/O',
  setup() {
    ensureDataFile(FILE_SIZE);
    ensureFloorBinary();
  },
  tables: [writevTable, directTable],
};
