// The benchmark harness every suite in bench/ uses. No dependencies.
//
// A suite is a plain module (bench/<part>.mjs) whose default export is
//
//   { name, title, setup?(ctx), tables: [Table] }
//
//   Table = { id, title, unit, better: 'lower' | 'higher', format?(value),
//             params: { quick: [...], full: [...] }, paramLabel?(param),
//             baseline: competitor name,
//             processes: { quick, full },    // fresh processes per trial
//             nodeArgs?: [...],              // e.g. ['--expose-gc']
//             hugetlb?: number,              // pages this table's 'need' trials reserve
//             extras?: [{ key, label, format?(value) }],
//             competitors: [{ name, vs?, hugetlb?: 'need' | 'avoid',
//                             env?: { NAME: value },   // set in the trial process
//                             run(param, ctx) -> { value, extras?, note? } | { skip } }],
//             targets?: [{ name, check(get) -> { pass: boolean | null, detail } }],
//             derived?: [{ id, title, unit, better, format?, extra, targets? }],
//             floor?: competitor name,       // the C floor of every other competitor
//             floorOverhead?(value, floorValue) -> number, floorFormat?(n) }
//
// A floor is a competitor doing the same system call (or copy) in C, with
// nothing in between (bench/floor.c). For every other competitor (or only
// those naming one: competitor.floor, when kinds of memory need floors of
// their own) the table then also shows its overhead above its floor — value −
// floor for time tables, floorOverhead(value, floor) otherwise — and that
// overhead ÷ the overhead of the competitor's baseline: the part of a figure
// that the host's syscall cost, which moves from week to week, cannot move.
//
// A derived table is a second table made from the same trials: its value is
// the trial's extras[extra] (e.g. CPU per GiB beside a throughput table), with
// its own ratios and targets, so one run measures both.
//
// A trial is one competitor at one param. Each trial runs in a fresh `node`
// process (this file, spawned with --trial); a trial function takes several
// samples in its process and reports their median, and the parent runs
// `processes` such processes, round-robin across competitors so a slow patch
// of the machine hits every competitor alike, and reports the median of them.
// Ratios are value ÷ the value of the competitor's baseline (`vs`, else the
// table's `baseline`) at the same param.
import { spawn, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import {
  closeSync,
  constants,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { PerformanceObserver, performance } from 'node:perf_hooks';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const HARNESS = fileURLToPath(import.meta.url);
export const BENCH_DIR = path.dirname(HARNESS);
export const ROOT = path.join(BENCH_DIR, '..');
const RESULT_MARK = '@@bench-result ';

/**
 * The built package's directory: dist/, or IOBUF_BENCH_DIST to measure another
 * build of it (e.g. a candidate change compiled elsewhere) with the same suites.
 */
export const DIST = path.resolve(process.env.IOBUF_BENCH_DIST ?? path.join(ROOT, 'dist'));

/** The built package (DIST), loaded lazily so the parent never maps the addon. */
let iobufModule;
export function iobuf() {
  iobufModule ??= createRequire(import.meta.url)(path.join(DIST, 'index.js'));
  return iobufModule;
}

let portableModule;
/**
 * The built package again, in portable mode (lib/portable.ts instead of the
 * addon): a second copy of DIST's modules, loaded with IOBUF_PORTABLE=1 set
 * for the moment it takes, so that both modes run in one process and one run.
 */
export function iobufPortable() {
  if (portableModule) return portableModule;
  const load = createRequire(import.meta.url);
  iobuf();
  const inDist = (file) => file.startsWith(DIST + path.sep);
  const nativeCopy = Object.fromEntries(Object.entries(load.cache).filter(([file]) => inDist(file)));
  for (const file of Object.keys(nativeCopy)) delete load.cache[file];
  const before = process.env.IOBUF_PORTABLE;
  process.env.IOBUF_PORTABLE = '1';
  try {
    portableModule = load(path.join(DIST, 'index.js'));
  } finally {
    if (before === undefined) delete process.env.IOBUF_PORTABLE;
    else process.env.IOBUF_PORTABLE = before;
    for (const file of Object.keys(load.cache)) if (inDist(file)) delete load.cache[file];
    Object.assign(load.cache, nativeCopy);
  }
  if (portableModule.native !== false) throw new Error('the portable copy of iobuf loaded the native addon');
  return portableModule;
}

export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

// ---------------------------------------------------------------------------
// The C floor (bench/floor.c), compiled on first use with the system's cc
// ---------------------------------------------------------------------------

const FLOOR_SOURCE = path.join(BENCH_DIR, 'floor.c');
const FLOOR_BINARY = path.join(BENCH_DIR, '.build', 'floor');

/**
 * bench/.build/floor, compiled from bench/floor.c when missing or older than
 * the source (into a temporary name, then renamed: trial processes may race).
 * Returns { binary } or { skip: reason } when there is no C compiler.
 */
export function ensureFloorBinary() {
  try {
    if (statSync(FLOOR_BINARY).mtimeMs >= statSync(FLOOR_SOURCE).mtimeMs) return { binary: FLOOR_BINARY };
  } catch {
    /* not built yet */
  }
  mkdirSync(path.dirname(FLOOR_BINARY), { recursive: true });
  const temporary = `${FLOOR_BINARY}.${process.pid}`;
  const cc = process.env.CC || 'cc';
  const built = spawnSync(cc, ['-O2', '-std=gnu11', '-Wall', '-o', temporary, FLOOR_SOURCE], { encoding: 'utf8' });
  if (built.error || built.status !== 0) {
    return { skip: `the C floor could not be compiled (${cc}: ${built.error?.message ?? built.stderr.trim().split('\n')[0]})` };
  }
  renameSync(temporary, FLOOR_BINARY);
  return { binary: FLOOR_BINARY };
}

/**
 * Runs `bench/.build/floor ...args` (see bench/floor.c) and returns its
 * result line: { value, extras?, note? } | { skip } | { error }.
 */
export function runFloor(args) {
  const { binary, skip } = ensureFloorBinary();
  if (skip) return { skip };
  const run = spawnSync(binary, args.map(String), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const line = run.stdout?.trim().split('\n').pop();
  if (run.status !== 0 || !line) return { error: `floor ${args.join(' ')} exited with ${run.signal ?? run.status}` };
  return JSON.parse(line);
}

// ---------------------------------------------------------------------------
// Numbers and formatting
// ---------------------------------------------------------------------------

export function median(values) {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export function formatBytes(bytes) {
  for (const [unit, scale] of [
    ['GiB', 2 ** 30],
    ['MiB', 2 ** 20],
    ['KiB', 2 ** 10],
  ]) {
    if (bytes >= scale && bytes % scale === 0) return `${bytes / scale} ${unit}`;
  }
  return `${bytes} B`;
}

const sig = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2));

/** Nanoseconds as ns / µs / ms with three significant figures (negative: an overhead below a floor). */
export function formatNs(ns) {
  if (!Number.isFinite(ns)) return '–';
  if (Math.abs(ns) < 1e3) return `${sig(ns)} ns`;
  if (Math.abs(ns) < 1e6) return `${sig(ns / 1e3)} µs`;
  return `${sig(ns / 1e6)} ms`;
}

export const formatRatio = (r) => (Number.isFinite(r) ? `${r >= 10 ? r.toFixed(1) : r.toFixed(2)}×` : '–');

// ---------------------------------------------------------------------------
// Child-side helpers for trial functions
// ---------------------------------------------------------------------------

// PerformanceObserver 'gc' entry kinds (perf_hooks constants).
const GC_MINOR = 1;
const GC_MAJOR = 4;

/** Counts GCs by kind between start() and stop(); entries arrive after a tick. */
export function gcCounter() {
  const entries = [];
  const observer = new PerformanceObserver((list) => entries.push(...list.getEntries()));
  observer.observe({ entryTypes: ['gc'] });
  let from = 0;
  let to = Infinity;
  return {
    start() {
      from = performance.now();
    },
    stop() {
      to = performance.now();
    },
    async counts() {
      await new Promise((resolve) => setTimeout(resolve, 20));
      entries.push(...observer.takeRecords());
      observer.disconnect();
      const inside = entries.filter((e) => e.startTime >= from && e.startTime <= to);
      const kind = (e) => e.detail?.kind ?? e.kind;
      return {
        scavenges: inside.filter((e) => kind(e) === GC_MINOR).length,
        markSweeps: inside.filter((e) => kind(e) === GC_MAJOR).length,
        gcMs: inside.reduce((sum, e) => sum + e.duration, 0),
      };
    },
  };
}

let sink;

// The loop that calls `op`, compiled afresh for every timeOps call (new
// Function, not a closure: closures from one literal share type feedback). So
// the warm-up and the samples run the very same optimized code, `op` is
// inlined at one call site only, and V8's inlining budget for that loop (about
// 920 bytes of bytecode) is spent on `op` alone — not halved between two
// loops in timeOps, which left a large op out of line in some processes and
// inlined in others (bimodal figures).
const opLoopSource = 'let last; for (let i = 0; i < count; i++) last = op(); return last;';

/**
 * Times `op` in a tight loop: warms it up for `warmupMs`, sizes the batch so a
 * sample lasts about `sampleMs`, takes `samples` samples and returns the median
 * ns per op, with GCs per 1000 ops and the share of time spent in GC, and the
 * median CPU time per op (extras.cpuNs: user + system time of the whole
 * process, GC helper threads included; steadier than the wall clock when other
 * processes compete for the cores, since time spent descheduled is left out).
 */
export async function timeOps(op, { samples = 7, sampleMs = 20, warmupMs = 60 } = {}) {
  // eslint-disable-next-line no-new-func
  const loop = new Function('op', 'count', opLoopSource);
  let ops = 0;
  const warmupEnd = performance.now() + warmupMs;
  const warmupStart = performance.now();
  while (performance.now() < warmupEnd) {
    sink = loop(op, 64);
    ops += 64;
  }
  const perOp = (performance.now() - warmupStart) / ops;
  const batch = Math.max(1, Math.ceil(sampleMs / perOp));
  globalThis.gc?.();
  const gc = gcCounter();
  const results = [];
  gc.start();
  const t0 = performance.now();
  const cpu = [];
  for (let s = 0; s < samples; s++) {
    const cpuStart = process.cpuUsage();
    const start = process.hrtime.bigint();
    sink = loop(op, batch);
    results.push(Number(process.hrtime.bigint() - start) / batch);
    const used = process.cpuUsage(cpuStart);
    cpu.push(((used.user + used.system) * 1e3) / batch);
  }
  const elapsed = performance.now() - t0;
  gc.stop();
  const { scavenges, markSweeps, gcMs } = await gc.counts();
  const total = batch * samples;
  const value = median(results);
  return {
    value,
    extras: {
      exGcNs: value * Math.max(0, 1 - gcMs / elapsed),
      cpuNs: median(cpu),
      scavenges: (scavenges * 1000) / total,
      markSweeps: (markSweeps * 1000) / total,
      gcShare: gcMs / elapsed,
    },
  };
}

/** `sync; echo 3 > /proc/sys/vm/drop_caches`; false when not allowed. */
export function dropCaches() {
  if (!isRoot) return false;
  spawnSync('sync');
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch {
    return false;
  }
}

/**
 * A file of `size` random bytes under bench/.data for the O_DIRECT tables
 * (written once; every suite reads the same file). Returns its path.
 */
export function ensureDataFile(size) {
  const file = path.join(BENCH_DIR, '.data', `read-${size / 2 ** 20}MiB.bin`);
  if (existsSync(file) && statSync(file).size === size) return file;
  mkdirSync(path.dirname(file), { recursive: true });
  const chunk = randomFillSync(Buffer.allocUnsafe(2 ** 20));
  const fd = openSync(file, 'w');
  for (let offset = 0; offset < size; offset += chunk.length) {
    chunk.writeUInt32LE(offset / chunk.length, 0); // no two chunks alike
    writeSync(fd, chunk, 0, chunk.length, offset);
  }
  fsyncSync(fd);
  closeSync(fd);
  return file;
}

/**
 * Reads `file` (`size` bytes) front to back with `read(fd, position) → bytes`
 * (sync or async; a read shorter than `readSize` ends a pass), `samples`
 * times, the page cache dropped before each pass. → { value: median GB/s,
 * note } (the note says when caches could not be dropped).
 */
export async function coldReadPasses(file, { size, readSize, samples, direct = true, read }) {
  const results = [];
  let dropped = true;
  for (let s = 0; s < samples; s++) {
    dropped = dropCaches() && dropped;
    const start = process.hrtime.bigint();
    const fd = openSync(file, constants.O_RDONLY | (direct ? constants.O_DIRECT : 0));
    let total = 0;
    for (;;) {
      const n = await read(fd, total);
      total += n;
      if (n < readSize) break;
    }
    closeSync(fd);
    const ns = Number(process.hrtime.bigint() - start);
    if (total !== size) throw new Error(`read ${total} of ${size} bytes`);
    results.push(size / ns); // bytes per ns = GB/s
  }
  return { value: median(results), note: dropped ? undefined : 'page cache NOT dropped (needs root)' };
}

// ---------------------------------------------------------------------------
// hugetlb reservation (parent side): set for the trials that need it, back to
// the old value for the ones that must not get it, and always restored at exit.
// ---------------------------------------------------------------------------

const NR_HUGEPAGES = '/proc/sys/vm/nr_hugepages';
const readHugePages = () => Number(readFileSync(NR_HUGEPAGES, 'utf8').trim());
let originalHugePages = null;
let currentChild = null;

export function restoreHugePages() {
  if (originalHugePages === null) return;
  try {
    writeFileSync(NR_HUGEPAGES, String(originalHugePages));
  } catch (error) {
    process.stderr.write(`bench: could not restore ${NR_HUGEPAGES} to ${originalHugePages}: ${error.message}\n`);
  }
  originalHugePages = null;
}

function installRestoreHandlers() {
  process.on('exit', restoreHugePages);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(signal, () => {
      if (currentChild && currentChild.exitCode === null) currentChild.kill('SIGKILL');
      restoreHugePages();
      process.exit(128 + { SIGINT: 2, SIGTERM: 15, SIGHUP: 1 }[signal]);
    });
  }
}

/**
 * Sets nr_hugepages to `pages` (or back to the original value when `pages` is
 * null). Returns { ok, reserved, reason }.
 */
function setHugePages(pages) {
  if (!isRoot) return { ok: false, reason: 'not root: cannot reserve hugetlb pages' };
  try {
    if (originalHugePages === null) {
      if (pages === null) return { ok: true, reserved: readHugePages() };
      originalHugePages = readHugePages();
      installRestoreHandlers();
    }
    const wanted = pages ?? originalHugePages;
    if (readHugePages() !== wanted) writeFileSync(NR_HUGEPAGES, String(wanted));
    const reserved = readHugePages();
    if (pages !== null && reserved < pages) {
      return { ok: false, reserved, reason: `only ${reserved} of ${pages} hugetlb pages could be reserved` };
    }
    return { ok: true, reserved };
  } catch (error) {
    return { ok: false, reason: `cannot write ${NR_HUGEPAGES}: ${error.message}` };
  }
}

// ---------------------------------------------------------------------------
// Parent side: run a suite
// ---------------------------------------------------------------------------

function runTrialProcess(suiteFile, table, competitor, param, mode) {
  const args = [...(table.nodeArgs ?? []), HARNESS, '--trial', suiteFile, table.id, competitor.name, JSON.stringify(param), mode];
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, ...competitor.env },
    });
    currentChild = child;
    let stdout = '';
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
    });
    child.on('close', (code, signal) => {
      currentChild = null;
      const line = stdout.split('\n').find((l) => l.startsWith(RESULT_MARK));
      if (line) resolve(JSON.parse(line.slice(RESULT_MARK.length)));
      else resolve({ error: `trial process exited with ${signal ?? code} and no result` });
    });
  });
}

/** Runs every table of `suite`; returns its results for printing and saving. */
export async function runSuite(suite, suiteFile, { full, log = console.log }) {
  const mode = full ? 'full' : 'quick';
  const started = performance.now();
  const ctx = { full, mode, isRoot };
  await suite.setup?.(ctx);
  const tables = [];
  for (const table of suite.tables) {
    const params = table.params[mode];
    const processes = table.processes[mode];
    // cells[competitor][paramIndex] = { values: [], extras: {key: []}, notes: Set, skip, error }
    const cells = new Map(
      table.competitors.map((c) => [
        c.name,
        params.map(() => ({
          values: [],
          extras: {},
          notes: new Set(),
          skip: null,
          error: null,
        })),
      ]),
    );
    // 'avoid' and unmarked trials first, then the ones that need hugetlb pages,
    // so the reservation is changed at most twice per table.
    const order = [...table.competitors].sort((a, b) => (a.hugetlb === 'need') - (b.hugetlb === 'need'));
    for (let round = 0; round < processes; round++) {
      for (const competitor of order) {
        const hugetlb =
          competitor.hugetlb === 'need'
            ? setHugePages(table.hugetlb ?? 0)
            : competitor.hugetlb === 'avoid'
              ? setHugePages(null)
              : { ok: true };
        for (let p = 0; p < params.length; p++) {
          const cell = cells.get(competitor.name)[p];
          if (cell.skip) continue;
          if (!hugetlb.ok) {
            cell.skip = hugetlb.reason;
            continue;
          }
          const result = await runTrialProcess(suiteFile, table, competitor, params[p], mode);
          if (result.skip) {
            cell.skip = result.skip;
            continue;
          }
          if (result.error) {
            cell.error = result.error;
            cell.skip = `error: ${result.error}`;
            continue;
          }
          cell.values.push(result.value);
          for (const [key, v] of Object.entries(result.extras ?? {})) (cell.extras[key] ??= []).push(v);
          if (result.note) cell.notes.add(result.note);
        }
      }
    }
    restoreHugePages();
    const summary = summarize(table, params, cells);
    tables.push(summary);
    log(renderTable(summary, 'text'));
    log('');
    for (const derived of table.derived ?? []) {
      const derivedCells = new Map(
        [...cells].map(([name, row]) => [
          name,
          row.map((cell) => ({
            ...cell,
            values: cell.extras[derived.extra] ?? [],
            extras: {},
          })),
        ]),
      );
      const derivedSummary = summarize({ ...table, extras: [], targets: [], ...derived }, params, derivedCells);
      tables.push(derivedSummary);
      log(renderTable(derivedSummary, 'text'));
      log('');
    }
  }
  return { name: suite.name, title: suite.title, mode, seconds: (performance.now() - started) / 1000, tables };
}

function summarize(table, params, cells) {
  const rows = params.map((param, p) => {
    const row = { param, label: (table.paramLabel ?? String)(param), cells: {} };
    for (const competitor of table.competitors) {
      const cell = cells.get(competitor.name)[p];
      const extras = Object.fromEntries(Object.entries(cell.extras).map(([k, v]) => [k, median(v)]));
      row.cells[competitor.name] = cell.values.length
        ? { value: median(cell.values), runs: cell.values, extras, notes: [...cell.notes] }
        : { value: NaN, skip: cell.skip ?? 'no result', extras: {}, notes: [] };
    }
    for (const competitor of table.competitors) {
      const base = row.cells[competitor.vs ?? table.baseline]; // absent from a narrowed table (--headline)
      const cell = row.cells[competitor.name];
      cell.baseline = competitor.vs ?? table.baseline;
      cell.ratio = base ? cell.value / base.value : NaN;
    }
    return row;
  });
  // Overheads above the C floor (see the table fields at the top of this file).
  const floorNames = new Set([table.floor, ...table.competitors.map((c) => c.floor)].filter(Boolean));
  const floorOf = (c) => c.floor ?? (table.floor && !floorNames.has(c.name) ? table.floor : null);
  const overhead = table.floorOverhead ?? ((value, floorValue) => value - floorValue);
  const floored = table.competitors.filter((c) => floorOf(c) && table.competitors.some((f) => f.name === floorOf(c)));
  for (const row of rows) {
    for (const c of floored) {
      const cell = row.cells[c.name];
      cell.floor = floorOf(c);
      cell.overFloor = overhead(cell.value, row.cells[cell.floor].value);
    }
    for (const c of floored) {
      const cell = row.cells[c.name];
      cell.overFloorRatio = cell.overFloor / (row.cells[cell.baseline]?.overFloor ?? NaN);
    }
  }
  const get = (name, param) => rows.find((r) => r.param === param)?.cells[name];
  // A check that reads a cell this run did not measure (a table narrowed to a
  // few competitors or params) says so instead of failing the run.
  const targets = (table.targets ?? []).map((t) => {
    try {
      return { name: t.name, ...t.check(get) };
    } catch (error) {
      return { name: t.name, pass: null, detail: `not measured in this run (${error.message})` };
    }
  });
  // A baseline that is not in the table (narrowed) gets no ratio column.
  const present = new Set(table.competitors.map((c) => c.name));
  const vsOf = (c) => (present.has(c.vs ?? table.baseline) ? (c.vs ?? table.baseline) : c.name);
  return {
    id: table.id,
    title: table.title,
    unit: table.unit,
    better: table.better,
    baseline: table.baseline,
    competitors: table.competitors.map((c) => ({ name: c.name, vs: vsOf(c) })),
    floored: floored.map((c) => ({ name: c.name, vs: vsOf(c), floor: floorOf(c) })),
    floorFormat: table.floorFormat ?? table.format ?? formatNs,
    extras: table.extras ?? [],
    rows,
    targets,
    format: table.format ?? formatNs,
  };
}

// ---------------------------------------------------------------------------
// Rendering: aligned text for the terminal, Markdown for results/ and docs
// ---------------------------------------------------------------------------

function grid(header, body, kind) {
  if (kind === 'markdown') {
    const line = (cells) => `| ${cells.join(' | ')} |`;
    return [line(header), line(header.map((_, i) => (i === 0 ? '---' : '---:'))), ...body.map(line)].join('\n');
  }
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)));
  const line = (cells) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

export function renderTable(summary, kind = 'text') {
  const out = [];
  const heading = `${summary.title} (${summary.unit}, median; ratio = value ÷ baseline, ${summary.better} is better)`;
  out.push(kind === 'markdown' ? `#### ${heading}` : `== ${heading}`);
  if (kind === 'markdown') out.push('');
  const header = [''];
  for (const c of summary.competitors) {
    header.push(c.name);
    if (c.vs !== c.name) header.push(`÷ ${c.vs}`);
  }
  const body = summary.rows.map((row) => {
    const line = [row.label];
    for (const c of summary.competitors) {
      const cell = row.cells[c.name];
      line.push(cell.skip ? 'skipped' : summary.format(cell.value));
      if (c.vs !== c.name) line.push(cell.skip ? '' : formatRatio(cell.ratio));
    }
    return line;
  });
  out.push(grid(header, body, kind));
  if (summary.floored?.length) {
    const floors = [...new Set(summary.floored.map((c) => c.floor))].join(', ');
    const flooredNames = new Set(summary.floored.map((c) => c.name));
    out.push('');
    const label = `above the C floor (${floors}): overhead = value − floor; ÷ = overhead ÷ the baseline's overhead`;
    out.push(kind === 'markdown' ? `${label}:` : `-- ${label}`);
    if (kind === 'markdown') out.push('');
    const floorHeader = [''];
    for (const c of summary.floored) {
      floorHeader.push(c.name);
      if (c.vs !== c.name && flooredNames.has(c.vs)) floorHeader.push(`÷ ${c.vs}`);
    }
    out.push(
      grid(
        floorHeader,
        summary.rows.map((row) => {
          const line = [row.label];
          for (const c of summary.floored) {
            const cell = row.cells[c.name];
            line.push(Number.isFinite(cell.overFloor) ? summary.floorFormat(cell.overFloor) : '–');
            if (c.vs !== c.name && flooredNames.has(c.vs)) line.push(formatRatio(cell.overFloorRatio));
          }
          return line;
        }),
        kind,
      ),
    );
  }
  for (const extra of summary.extras) {
    const present = summary.rows.some((r) => Object.values(r.cells).some((c) => c.extras[extra.key] !== undefined));
    if (!present) continue;
    out.push('');
    out.push(kind === 'markdown' ? `${extra.label}:` : `-- ${extra.label}`);
    if (kind === 'markdown') out.push('');
    const format = extra.format ?? ((v) => (Number.isFinite(v) ? sig(v) : '–'));
    out.push(
      grid(
        ['', ...summary.competitors.map((c) => c.name)],
        summary.rows.map((row) => [
          row.label,
          ...summary.competitors.map((c) => {
            const v = row.cells[c.name].extras[extra.key];
            return v === undefined ? '–' : format(v);
          }),
        ]),
        kind,
      ),
    );
  }
  const notes = [];
  for (const row of summary.rows) {
    for (const c of summary.competitors) {
      const cell = row.cells[c.name];
      if (cell.skip) notes.push(`${c.name} @ ${row.label}: skipped — ${cell.skip}`);
      for (const n of cell.notes) notes.push(`${c.name} @ ${row.label}: ${n}`);
    }
  }
  if (notes.length) {
    out.push('');
    out.push(...notes.map((n) => (kind === 'markdown' ? `- ${n}` : `   ${n}`)));
  }
  if (summary.targets.length) {
    out.push('');
    for (const t of summary.targets) {
      const verdict = t.pass === null ? 'n/a ' : t.pass ? 'PASS' : 'MISS';
      out.push(kind === 'markdown' ? `- **${verdict}** ${t.name}: ${t.detail}` : `   [${verdict}] ${t.name}: ${t.detail}`);
    }
  }
  return out.join('\n');
}

// ---------------------------------------------------------------------------
// Child side: `node harness.mjs --trial <suite file> <table> <competitor> <param> <mode>`
// ---------------------------------------------------------------------------

async function runTrial([suiteFile, tableId, competitorName, paramJson, mode]) {
  let result;
  try {
    const suite = (await import(pathToFileURL(suiteFile).href)).default;
    const table = suite.tables.find((t) => t.id === tableId);
    const competitor = table.competitors.find((c) => c.name === competitorName);
    result = await competitor.run(JSON.parse(paramJson), { full: mode === 'full', mode, isRoot });
  } catch (error) {
    result = { error: error?.code ? `${error.code}: ${error.message}` : String(error?.message ?? error) };
  }
  process.stdout.write(`${RESULT_MARK}${JSON.stringify(result)}\n`);
}

// Not awaited at the top level: the suite module imports this one, and a
// top-level await here would make that import wait for itself.
if (process.argv[1] === HARNESS && process.argv[2] === '--trial') {
  runTrial(process.argv.slice(3));
}
