// `npm run bench [-- [--full] [suite[/table] …]]`: runs the suites in bench/
// (every bench/*.mjs but the harness) and prints their comparison tables.
// Quick mode by default; `--full` or BENCH_FULL=1 for more repetitions and
// bigger sizes. Each suite's tables are also written, as Markdown and JSON,
// to bench/results/<suite>-<mode>.{md,json} (not committed; docs/benchmark.md
// holds the figures the project keeps).
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { BENCH_DIR, ROOT, renderTable, runSuite } from '../bench/harness.mjs';

const args = process.argv.slice(2);
const full = args.includes('--full') || process.env.BENCH_FULL === '1';
const filters = args.filter((a) => !a.startsWith('--'));
const mode = full ? 'full' : 'quick';

// dist/ is what the suites load: rebuild it, from scratch, when anything in lib/
// is newer (a file left from an older layout, dist/pool.js beside dist/pool/,
// would be loaded instead of the folder).
const newest = (dir) => Math.max(0, ...readdirSync(dir, { recursive: true }).map((f) => statSync(path.join(dir, f)).mtimeMs));
let distTime = 0;
try { distTime = statSync(path.join(ROOT, 'dist', 'index.js')).mtimeMs; } catch { /* not built yet */ }
if (newest(path.join(ROOT, 'lib')) > distTime) {
  rmSync(path.join(ROOT, 'dist'), { recursive: true, force: true });
  const tsc = spawnSync(path.join(ROOT, 'node_modules', '.bin', 'tsc'), ['-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
  if (tsc.status !== 0) process.exit(1);
}

function machine() {
  const cpu = /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? os.cpus()[0]?.model;
  return {
    date: new Date().toISOString(),
    cpus: os.availableParallelism(),
    cpu,
    memory: `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    user: process.getuid?.() === 0 ? 'root' : 'not root (no hugetlb reservation, no cache dropping)',
  };
}

const info = machine();
const headline = `${info.date} · ${info.cpus} × ${info.cpu} · ${info.memory} · ${info.kernel} · Node ${info.node} · ${info.user} · ${mode} mode`;
console.log(`iobuf benchmarks — ${headline}\n`);

const suiteFiles = readdirSync(BENCH_DIR)
  .filter((f) => f.endsWith('.mjs') && f !== 'harness.mjs')
  .sort()
  .map((f) => path.join(BENCH_DIR, f));

const started = Date.now();
const verdicts = [];
let ran = 0;
for (const file of suiteFiles) {
  const suite = (await import(pathToFileURL(file).href)).default;
  const wanted = filters.length === 0 ? null
    : filters.map((f) => f.split('/')).filter(([name]) => name === suite.name);
  if (wanted && wanted.length === 0) continue;
  const tableIds = wanted?.every(([, table]) => table) ? new Set(wanted.map(([, table]) => table)) : null;
  const selected = tableIds ? { ...suite, tables: suite.tables.filter((t) => tableIds.has(t.id)) } : suite;
  console.log(`# ${suite.title}\n`);
  const result = await runSuite(selected, file, { full });
  ran++;
  console.log(`(${suite.name}: ${result.seconds.toFixed(1)} s)\n`);
  for (const table of result.tables) for (const t of table.targets) verdicts.push({ suite: suite.name, ...t });

  const resultsDir = path.join(BENCH_DIR, 'results');
  mkdirSync(resultsDir, { recursive: true });
  const markdown = [`### ${suite.title} — ${mode} mode, ${result.seconds.toFixed(0)} s`, '', headline, '',
    ...result.tables.map((t) => `${renderTable(t, 'markdown')}\n`)].join('\n');
  writeFileSync(path.join(resultsDir, `${suite.name}-${mode}.md`), markdown);
  writeFileSync(path.join(resultsDir, `${suite.name}-${mode}.json`),
    JSON.stringify({ machine: info, mode, ...result }, (k, v) => (k === 'format' ? undefined : v), 2));
}

if (ran === 0) {
  console.error(`No suite matches ${filters.join(', ')}`);
  process.exit(1);
}
const verdict = (t) => (t.pass === null ? 'n/a ' : t.pass ? 'PASS' : 'MISS');
console.log('Targets:');
for (const t of verdicts) console.log(`  [${verdict(t)}] ${t.suite}: ${t.name} — ${t.detail}`);
console.log(`\nTotal ${((Date.now() - started) / 1000).toFixed(1)} s (${mode} mode)`);
