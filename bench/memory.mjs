// Benchmarks of the memory part: allocation cost against Node's own
// Buffers, huge vs normal pages (first touch, dependent random reads), and
// O_DIRECT reads into huge-page vs 4 KiB-page memory.
import { readFileSync, readSync } from 'node:fs';
import { coldReadPasses, ensureDataFile, formatBytes, formatNs, iobuf, median, timeOps } from './harness.mjs';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const PAGE = 4096;

// ---------------------------------------------------------------------------
// What the kernel gave: /proc/self/smaps for the mapping holding `buf`
// ---------------------------------------------------------------------------

/** { kernelPageKiB, rssKiB, anonHugeKiB } of the mapping that holds buf[0]. */
function mappingOf(buf) {
  const address = iobuf().addressOf(buf);
  let inside = false;
  const found = { kernelPageKiB: 0, rssKiB: 0, anonHugeKiB: 0 };
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const range = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (range) {
      if (inside) break;
      inside = address >= BigInt(`0x${range[1]}`) && address < BigInt(`0x${range[2]}`);
      continue;
    }
    if (!inside) continue;
    const field = /^(\w+):\s+(\d+) kB/.exec(line);
    if (field?.[1] === 'KernelPageSize') found.kernelPageKiB = Number(field[2]);
    if (field?.[1] === 'Rss') found.rssKiB = Number(field[2]);
    if (field?.[1] === 'AnonHugePages') found.anonHugeKiB = Number(field[2]);
  }
  return found;
}

/** 'hugetlb', 'THP n%' or '4 KiB pages', for the table's notes. */
function describePages(buf) {
  const m = mappingOf(buf);
  if (m.kernelPageKiB > 4) return 'hugetlb';
  if (m.anonHugeKiB > 0) return `THP ${Math.round((100 * m.anonHugeKiB) / Math.max(m.rssKiB, 1))}% of RSS`;
  return '4 KiB pages';
}

const expectPages = (got, wanted) => (got.startsWith(wanted) ? undefined : `got ${got}, not ${wanted}`);

// The three ways to get memory the huge-page tables compare.
const MEMORY_KINDS = [
  { name: 'allocAligned (4 KiB pages)', pages: '4 KiB', alloc: (size) => iobuf().allocAligned(size) },
  { name: 'allocHuge → THP', pages: 'THP', hugetlb: 'avoid', alloc: (size) => iobuf().allocHuge(size, { fallback: 'thp' }) },
  { name: 'allocHuge → hugetlb', pages: 'hugetlb', hugetlb: 'need', alloc: (size) => iobuf().allocHuge(size, { fallback: 'none' }) },
];

// ---------------------------------------------------------------------------
// allocate + release
// ---------------------------------------------------------------------------

const allocTrial = (make) => async (size, ctx) => {
  const op = make(size);
  return timeOps(op, ctx.full ? { samples: 11, sampleMs: 30, warmupMs: 100 } : { samples: 7, sampleMs: 15, warmupMs: 50 });
};

const allocTable = {
  id: 'alloc',
  title: 'allocate + release',
  unit: 'time per op',
  better: 'lower',
  params: { quick: [4 * KiB, 64 * KiB, MiB, 2 * MiB], full: [4 * KiB, 64 * KiB, 256 * KiB, MiB, 2 * MiB, 8 * MiB] },
  paramLabel: formatBytes,
  // 3, not 2: Buffer.allocUnsafeSlow's figure is mostly GC (a scavenge every
  // few hundred 64 KiB allocations), and two processes swung it 2× on a busy machine.
  processes: { quick: 3, full: 5 },
  nodeArgs: ['--expose-gc'],
  baseline: 'Buffer.allocUnsafeSlow',
  competitors: [
    { name: 'Buffer.allocUnsafeSlow', run: allocTrial((size) => () => Buffer.allocUnsafeSlow(size)) },
    {
      name: 'allocAligned(zero:false)+free',
      run: allocTrial((size) => {
        const { allocAligned, free } = iobuf();
        const options = { zero: false };
        return () => {
          const b = allocAligned(size, options);
          free(b);
          return b;
        };
      }),
    },
    { name: 'Buffer.alloc', run: allocTrial((size) => () => Buffer.alloc(size)) },
    {
      name: 'allocAligned()+free',
      vs: 'Buffer.alloc',
      run: allocTrial((size) => {
        const { allocAligned, free } = iobuf();
        return () => {
          const b = allocAligned(size);
          free(b);
          return b;
        };
      }),
    },
  ],
  extras: [
    { key: 'scavenges', label: 'GC scavenges per 1000 ops' },
    { key: 'markSweeps', label: 'GC mark-sweeps per 1000 ops' },
    { key: 'gcShare', label: 'share of the time in GC', format: (v) => `${(100 * v).toFixed(0)}%` },
    { key: 'exGcNs', label: 'time per op without the GC share (approximate: the allocation alone)', format: formatNs },
    { key: 'cpuNs', label: 'CPU time per op (every thread of the process, GC helpers included)', format: formatNs },
  ],
  targets: [64 * KiB, MiB].flatMap((size) => [
    {
      name: `allocAligned(zero:false)+free ≤ 1.5× Buffer.allocUnsafeSlow at ${formatBytes(size)}`,
      check: (get) => {
        const cell = get('allocAligned(zero:false)+free', size);
        if (!cell || cell.skip) return { pass: null, detail: 'not measured' };
        const base = get('Buffer.allocUnsafeSlow', size);
        const exGc = cell.extras.exGcNs / base.extras.exGcNs;
        return {
          pass: cell.ratio <= 1.5,
          detail: `${formatNs(cell.value)} vs ${formatNs(base.value)} = ${cell.ratio.toFixed(2)}× (GC time left out of both: ${exGc.toFixed(2)}×)`,
        };
      },
    },
    {
      name: `allocAligned()+free (zeroed) ≤ 1.5× Buffer.allocUnsafeSlow at ${formatBytes(size)}`,
      check: (get) => {
        const cell = get('allocAligned()+free', size);
        const base = get('Buffer.allocUnsafeSlow', size);
        if (!cell || cell.skip) return { pass: null, detail: 'not measured' };
        const ratio = cell.value / base.value;
        return {
          pass: ratio <= 1.5,
          detail: `${formatNs(cell.value)} vs ${formatNs(base.value)} = ${ratio.toFixed(2)}× (and ${cell.ratio.toFixed(2)}× Buffer.alloc)`,
        };
      },
    },
  ]),
};

// ---------------------------------------------------------------------------
// first touch: one byte written per 4 KiB page of a fresh allocation
// ---------------------------------------------------------------------------

// Two passes in one process. The first ("cold") takes whatever physical pages
// the kernel hands out; on a VM whose host discards free guest memory (virtio
// balloon free-page reporting, as on the machine in docs/benchmark.md) a huge
// page fresh from the buddy allocator then costs a host fault per 4 KiB. The
// pass's buffers are then freed and the second ("warm") pass allocates again,
// getting the same, host-backed pages back: that is the guest kernel's own
// cost, and the figure the table reports.
const firstTouchTrial = (kind) => async (size, ctx) => {
  const samples = ctx.full ? 24 : 12;
  const pass = () => {
    const keep = []; // held until the pass ends, so no allocation reuses touched pages
    const touch = [];
    const alloc = [];
    for (let s = 0; s < samples; s++) {
      const t0 = process.hrtime.bigint();
      const buf = kind.alloc(size);
      const t1 = process.hrtime.bigint();
      for (let offset = 0; offset < size; offset += PAGE) buf[offset] = 1;
      const t2 = process.hrtime.bigint();
      keep.push(buf);
      alloc.push(Number(t1 - t0));
      touch.push(Number(t2 - t1));
    }
    const pages = describePages(keep[0]);
    for (const buf of keep) iobuf().free(buf);
    return { touch: median(touch), alloc: median(alloc), pages };
  };
  const cold = pass();
  const warm = pass();
  return {
    value: warm.touch,
    extras: { coldNs: cold.touch, allocNs: warm.alloc },
    note: expectPages(warm.pages, kind.pages),
  };
};

const firstTouchTable = {
  id: 'first-touch',
  title: 'first touch, warm (one byte written per 4 KiB page of a fresh allocation)',
  unit: 'time per region',
  better: 'lower',
  params: { quick: [2 * MiB], full: [2 * MiB, 32 * MiB] },
  paramLabel: formatBytes,
  processes: { quick: 2, full: 5 },
  hugetlb: 600,
  baseline: MEMORY_KINDS[0].name,
  competitors: MEMORY_KINDS.map((kind) => ({ name: kind.name, hugetlb: kind.hugetlb, run: firstTouchTrial(kind) })),
  extras: [
    { key: 'coldNs', label: 'cold: first use of pages the VM host had discarded (first pass of each process)', format: formatNs },
    { key: 'allocNs', label: 'the allocation call itself (warm pass; not in the figures above)', format: formatNs },
  ],
  targets: MEMORY_KINDS.slice(1).map((kind) => ({
    name: `${kind.name}: first touch of 2 MiB ≥ 5× faster than 4 KiB pages`,
    check: (get) => {
      const cell = get(kind.name, 2 * MiB);
      if (!cell || cell.skip) return { pass: null, detail: cell?.skip ?? 'not measured' };
      const speedup = 1 / cell.ratio;
      return {
        pass: speedup >= 5,
        detail: `${formatNs(cell.value)} vs ${formatNs(get(MEMORY_KINDS[0].name, 2 * MiB).value)} = ${speedup.toFixed(1)}× faster`,
      };
    },
  })),
};

// ---------------------------------------------------------------------------
// dependent random reads: a pointer chase through one cycle over every
// 64-byte line of the region, so each read needs the one before it
// ---------------------------------------------------------------------------

// A bijection on [0, 2^bits): odd multiplies and xor-shifts, each invertible.
// Slot s points to the slot that follows it in the order mix(0), mix(1), …,
// i.e. next(s) = mix(unmix(s) + 1): one cycle through all slots, in an order
// no prefetcher can guess, written sequentially (fast) rather than at random.
const MULTIPLIERS = [0x2545f491, 0x9e3779b1, 0x85ebca6b];
const SHIFTS = [13, 11, 12];

function inverseOdd(a) {
  let inverse = a; // Newton: each step doubles the correct low bits
  for (let i = 0; i < 5; i++) inverse = Math.imul(inverse, 2 - Math.imul(a, inverse));
  return inverse;
}

function makeMixer(bits) {
  const mask = bits === 32 ? -1 : (1 << bits) - 1;
  const inverses = MULTIPLIERS.map(inverseOdd);
  const mix = (x) => {
    for (let r = 0; r < 3; r++) {
      x = Math.imul(x, MULTIPLIERS[r]) & mask;
      x ^= x >>> SHIFTS[r];
    }
    return x >>> 0;
  };
  const unmix = (y) => {
    for (let r = 2; r >= 0; r--) {
      let x = y;
      for (let shift = SHIFTS[r]; shift < bits; shift += SHIFTS[r]) x ^= y >>> shift;
      y = Math.imul(x, inverses[r]) & mask;
    }
    return y >>> 0;
  };
  return { mix, unmix };
}

const LINE_WORDS = 16; // 64-byte lines of 4-byte words

function chase(words, start, reads) {
  let p = start;
  for (let i = 0; i < reads; i++) p = words[p];
  return p;
}

const randomReadTrial = (kind) => async (size, ctx) => {
  const buf = kind.alloc(size);
  const words = new Uint32Array(buf.buffer, buf.byteOffset, size / 4);
  const slots = size / 64;
  const bits = Math.log2(slots);
  const { mix, unmix } = makeMixer(bits);
  const mask = slots - 1;
  const t0 = process.hrtime.bigint();
  for (let s = 0; s < slots; s++) words[s * LINE_WORDS] = mix((unmix(s) + 1) & mask) * LINE_WORDS;
  const fillNs = Number(process.hrtime.bigint() - t0);
  const reads = ctx.full ? slots : 1 << 21; // full: the whole cycle per sample
  const samples = ctx.full ? 2 : 3;
  chase(words, 0, 1 << 16); // warm up the JIT
  const results = [];
  let p = 0;
  for (let s = 0; s < samples; s++) {
    const start = process.hrtime.bigint();
    p = chase(words, p, reads);
    results.push(Number(process.hrtime.bigint() - start) / reads);
  }
  return {
    value: median(results),
    extras: { fillMs: fillNs / 1e6, reads },
    note: expectPages(describePages(buf), kind.pages),
  };
};

const randomReadTable = {
  id: 'random-read',
  title: 'dependent random reads over the region (pointer chase, one read per 64-byte line)',
  unit: 'time per read',
  better: 'lower',
  params: { quick: [GiB], full: [GiB] },
  paramLabel: formatBytes,
  processes: { quick: 1, full: 2 },
  hugetlb: 600,
  baseline: MEMORY_KINDS[0].name,
  competitors: MEMORY_KINDS.map((kind) => ({ name: kind.name, hugetlb: kind.hugetlb, run: randomReadTrial(kind) })),
  extras: [
    { key: 'reads', label: 'reads per sample', format: (v) => `${(v / 2 ** 20).toFixed(0)} Mi` },
    {
      key: 'fillMs',
      label: 'building the chain (first touch of the region + one sequential write per line)',
      format: (v) => `${v.toFixed(0)} ms`,
    },
  ],
};

// ---------------------------------------------------------------------------
// O_DIRECT: a 256 MiB file read in 1 MiB reads, caches dropped before each pass
// ---------------------------------------------------------------------------

const FILE_SIZE = 256 * MiB;
const READ_SIZE = MiB;

const readTrial =
  ({ direct, alloc, pages }) =>
  async (size, ctx) => {
    const buf = alloc(READ_SIZE);
    buf.fill(0); // fault the pages in (and let THP assign a huge page) before timing
    const { value, note } = await coldReadPasses(ensureDataFile(size), {
      size,
      readSize: READ_SIZE,
      samples: ctx.full ? 5 : 3,
      direct,
      read: (fd, position) => readSync(fd, buf, 0, READ_SIZE, position),
    });
    const notes = [note, pages && expectPages(describePages(buf), pages)].filter(Boolean);
    return { value, note: notes.join('; ') || undefined };
  };

const O_DIRECT_BASELINE = 'O_DIRECT → allocAligned';

const readTable = {
  id: 'o-direct',
  title: `reading a cold ${formatBytes(FILE_SIZE)} file in ${formatBytes(READ_SIZE)} reads`,
  unit: 'GB/s',
  better: 'higher',
  format: (v) => (Number.isFinite(v) ? `${v.toFixed(2)} GB/s` : '–'),
  params: { quick: [FILE_SIZE], full: [FILE_SIZE] },
  paramLabel: formatBytes,
  processes: { quick: 1, full: 3 },
  hugetlb: 8,
  baseline: O_DIRECT_BASELINE,
  competitors: [
    { name: 'buffered → Buffer.allocUnsafeSlow', run: readTrial({ direct: false, alloc: (n) => Buffer.allocUnsafeSlow(n) }) },
    { name: O_DIRECT_BASELINE, run: readTrial({ direct: true, pages: '4 KiB', alloc: (n) => iobuf().allocAligned(n) }) },
    {
      name: 'O_DIRECT → allocHuge → THP',
      hugetlb: 'avoid',
      run: readTrial({ direct: true, pages: 'THP', alloc: (n) => iobuf().allocHuge(n) }),
    },
    {
      name: 'O_DIRECT → allocHuge → hugetlb',
      hugetlb: 'need',
      run: readTrial({ direct: true, pages: 'hugetlb', alloc: (n) => iobuf().allocHuge(n, { fallback: 'none' }) }),
    },
  ],
  targets: ['O_DIRECT → allocHuge → hugetlb', 'O_DIRECT → allocHuge → THP'].map((name) => ({
    name: `${name} ≥ 1.8× ${O_DIRECT_BASELINE}`,
    check: (get) => {
      const cell = get(name, FILE_SIZE);
      if (!cell || cell.skip) return { pass: null, detail: cell?.skip ?? 'not measured' };
      return {
        pass: cell.ratio >= 1.8,
        detail: `${cell.value.toFixed(2)} vs ${get(O_DIRECT_BASELINE, FILE_SIZE).value.toFixed(2)} GB/s = ${cell.ratio.toFixed(2)}×`,
      };
    },
  })),
};

export default {
  name: 'memory',
  title: 'Memory: aligned and huge-page allocations',
  setup() {
    ensureDataFile(FILE_SIZE);
  },
  tables: [allocTable, firstTouchTable, randomReadTable, readTable],
};
