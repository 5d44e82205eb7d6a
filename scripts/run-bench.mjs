// `npm run bench [-- [--full] [--headline] [--runtimes 20,22,24,26] [suite[/table] …]]`:
// runs the suites in bench/ (every bench/*.mjs but the harness) and prints
// their comparison tables.
//
//   --full          more repetitions and bigger sizes (also BENCH_FULL=1);
//                   quick mode by default
//   suite[/table]   only these suites, or tables of them (e.g. pool/varying)
//   --headline      only the rows of the README's table (bench/run/runtimes.mjs
//                   HEADLINES): their tables, params and competitors
//   --runtimes L    the same selection under each Node major in L (a comma
//                   list), each in a `node` of that major (trials too), then a
//                   table of the headline rows side by side
//
// Every run records the machine, the Node version, the kernel, and what else
// used the CPU meanwhile (bench/run/conditions.mjs): a run during which other
// processes loaded the machine is marked NOISY RUN in the output and in the
// results. Each suite's tables are also written, as Markdown and JSON, to
// bench/results/<suite>-<mode>[-node<major>].{md,json} (not committed;
// docs/benchmark.md holds the figures the project keeps), and a --runtimes
// run's comparison to bench/results/runtimes-<mode>.md.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { BENCH_DIR, ROOT, renderTable, runSuite } from '../bench/harness.mjs';
import { describeConditions, describeStart, watchConditions } from '../bench/run/conditions.mjs';
import { comparisonTable, narrowToHeadlines, resolveRuntime } from '../bench/run/runtimes.mjs';

const args = process.argv.slice(2);
const valueAfter = (flag) => {
  const at = args.indexOf(flag);
  return at >= 0 ? args[at + 1] : undefined;
};
const VALUED = ['--runtimes', '--results-tag'];
const full = args.includes('--full') || process.env.BENCH_FULL === '1';
const headline = args.includes('--headline');
const runtimes = valueAfter('--runtimes');
const resultsTag = valueAfter('--results-tag'); // set by a --runtimes parent for its children
const filters = args.filter((a, i) => !a.startsWith('--') && !VALUED.includes(args[i - 1]));
const mode = full ? 'full' : 'quick';
const resultsDir = path.join(BENCH_DIR, 'results');

// dist/ is what the suites load: rebuild it, from scratch, when anything in lib/
// is newer (a file left from an older layout, dist/pool.js beside dist/pool/,
// would be loaded instead of the folder).
const newest = (dir) => Math.max(0, ...readdirSync(dir, { recursive: true }).map((f) => statSync(path.join(dir, f)).mtimeMs));
let distTime = 0;
try {
  distTime = statSync(path.join(ROOT, 'dist', 'index.js')).mtimeMs;
} catch {
  /* not built yet */
}
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
    v8: process.versions.v8,
    bufferPoolSize: Buffer.poolSize,
    user: process.getuid?.() === 0 ? 'root' : 'not root (no hugetlb reservation, no cache dropping)',
  };
}

const info = machine();
const headlineText = `${info.date} · ${info.cpus} × ${info.cpu} · ${info.memory} · ${info.kernel} · Node ${info.node} · ${info.user} · ${mode} mode`;
const watch = watchConditions();
const runStart = watch.mark();
console.log(`iobuf benchmarks — ${headlineText}`);
console.log(`${describeStart(runStart.load, watch.cores)}\n`);

if (runtimes) await runUnderEachRuntime();
else await runHere();

// ---------------------------------------------------------------------------
// One runtime: this process's
// ---------------------------------------------------------------------------

async function runHere() {
  const suiteFiles = readdirSync(BENCH_DIR)
    .filter((f) => f.endsWith('.mjs') && f !== 'harness.mjs')
    .sort()
    .map((f) => path.join(BENCH_DIR, f));

  const started = Date.now();
  const verdicts = [];
  let ran = 0;
  const suffix = resultsTag ? `-${resultsTag}` : '';
  for (const file of suiteFiles) {
    const suite = (await import(pathToFileURL(file).href)).default;
    const wanted = filters.length === 0 ? null : filters.map((f) => f.split('/')).filter(([name]) => name === suite.name);
    if (wanted && wanted.length === 0) continue;
    const tableIds = wanted?.every(([, table]) => table) ? new Set(wanted.map(([, table]) => table)) : null;
    let selected = tableIds ? { ...suite, tables: suite.tables.filter((t) => tableIds.has(t.id)) } : suite;
    if (headline) selected = narrowToHeadlines(selected, mode);
    if (!selected || selected.tables.length === 0) continue;
    console.log(`# ${suite.title}\n`);
    const suiteStart = watch.mark();
    const result = await runSuite(selected, file, { full });
    const conditions = watch.report(suiteStart);
    ran++;
    console.log(`(${suite.name}: ${result.seconds.toFixed(1)} s)`);
    for (const line of describeConditions(conditions, 'suite')) console.log(`(${line})`);
    console.log('');
    for (const table of result.tables) for (const t of table.targets) verdicts.push({ suite: suite.name, ...t });

    mkdirSync(resultsDir, { recursive: true });
    const markdown = [
      `### ${suite.title} — ${mode} mode, ${result.seconds.toFixed(0)} s`,
      '',
      headlineText,
      '',
      ...describeConditions(conditions, 'suite')
        .map((line) => (line.startsWith('NOISY') ? `**${line}**` : line))
        .flatMap((line) => [line, '']),
      ...result.tables.map((t) => `${renderTable(t, 'markdown')}\n`),
    ].join('\n');
    writeFileSync(path.join(resultsDir, `${suite.name}-${mode}${suffix}.md`), markdown);
    writeFileSync(
      path.join(resultsDir, `${suite.name}-${mode}${suffix}.json`),
      JSON.stringify({ machine: info, conditions, mode, ...result }, (k, v) => (k === 'format' || k === 'floorFormat' ? undefined : v), 2),
    );
  }

  if (ran === 0) {
    console.error(`No suite matches ${filters.join(', ') || '(every suite)'}${headline ? ' with --headline' : ''}`);
    process.exit(1);
  }
  const verdict = (t) => (t.pass === null ? 'n/a ' : t.pass ? 'PASS' : 'MISS');
  if (verdicts.length) console.log('Targets:');
  for (const t of verdicts) console.log(`  [${verdict(t)}] ${t.suite}: ${t.name} — ${t.detail}`);
  console.log(`\nTotal ${((Date.now() - started) / 1000).toFixed(1)} s (${mode} mode)`);
  finish();
}

/** The run's conditions, printed last (so a NOISY RUN note is the last thing on the screen). */
function finish() {
  const conditions = watch.report(runStart);
  watch.stop();
  console.log('');
  for (const line of describeConditions(conditions, 'run')) console.log(line);
  return conditions;
}

// ---------------------------------------------------------------------------
// --runtimes: each major in a node of its own, then the comparison
// ---------------------------------------------------------------------------

async function runUnderEachRuntime() {
  const majors = runtimes.split(',').map((m) => Number(m.trim()));
  if (majors.some((m) => !Number.isInteger(m))) {
    console.error(`--runtimes takes a comma list of Node majors, e.g. 20,22,24,26 (got ${runtimes})`);
    process.exit(1);
  }
  const childArgs = args.filter((a, i) => a !== '--runtimes' && args[i - 1] !== '--runtimes');
  const runs = [];
  for (const major of majors) {
    const runtime = resolveRuntime(major);
    const tag = `node${major}`;
    console.log(`## Node ${major}: ${runtime.version} (${runtime.node})\n`);
    const child = spawn(runtime.node, [path.join(ROOT, 'scripts', 'run-bench.mjs'), ...childArgs, '--results-tag', tag], {
      cwd: ROOT,
      stdio: 'inherit',
      env: { ...process.env, PATH: `${path.dirname(runtime.node)}${path.delimiter}${process.env.PATH}` },
    });
    const code = await new Promise((resolve) => child.on('close', resolve));
    if (code !== 0) {
      console.error(`Node ${major}: the run exited with ${code}`);
      continue;
    }
    const suites = readdirSync(resultsDir)
      .filter((f) => f.endsWith(`-${mode}-${tag}.json`))
      .map((f) => JSON.parse(readFileSync(path.join(resultsDir, f), 'utf8')))
      .filter((r) => Date.parse(r.machine.date) >= Date.parse(info.date)); // this run's, not an older one's
    const conditions = suites.find((s) => s.conditions?.noisy)?.conditions ?? suites[0]?.conditions;
    runs.push({ runtime, suites, machine: suites[0]?.machine, conditions });
    console.log('');
  }
  const table = comparisonTable(runs);
  console.log(`# The headline rows on each runtime (${mode} mode)\n`);
  console.log(table);
  const conditions = finish();
  mkdirSync(resultsDir, { recursive: true });
  writeFileSync(
    path.join(resultsDir, `runtimes-${mode}.md`),
    [
      `### The headline rows on each runtime — ${mode} mode`,
      '',
      headlineText,
      '',
      ...describeConditions(conditions, 'run')
        .map((line) => (line.startsWith('NOISY') ? `**${line}**` : line))
        .flatMap((line) => [line, '']),
      table,
      '',
    ].join('\n'),
  );
}
