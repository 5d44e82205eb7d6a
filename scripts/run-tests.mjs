// `npm test`: compile the TypeScript (worker-thread tests and the package test
// load dist/), run the checks, run vitest, and end with the plain line
// "N passed, N failed" that CI reads. Extra arguments go to vitest (e.g.
// `npm test -- test/memory`).
//
// The checks, each counted as one test in the closing line:
//   typecheck     tsc -p tsconfig.json --noEmit: lib/, test/, bench/, examples/
//   biome         biome check (lint, with the import-cycle rule, and format) of
//                 lib/, test/, bench/, examples/, scripts/ (biome.json)
//   clang-format  clang-format --dry-run -Werror of native/ (.clang-format)
// A run given test files skips them, and so do sanitizer runs (IOBUF_ASAN) and
// IOBUF_NO_CHECKS=1 (CI runs them once, not under every Node major).
//
// Two vitest runs, one summary: every test file with the native addon, then
// the pure-JS parts' test files (PORTABLE_FILES) again in portable mode
// (IOBUF_PORTABLE=1: lib/portable.ts instead of the addon). With arguments,
// only the first run, over them; `npm test -- --portable [files…]` runs only
// the portable run (over the given files, else PORTABLE_FILES). Sanitizer runs
// skip the portable run: it loads no native code.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name) => path.join(root, 'node_modules', '.bin', name);
const run = (command, args) => spawnSync(command, args, { cwd: root, stdio: 'inherit' }).status ?? 1;

// From scratch: a file left from an older layout (dist/pool.js beside
// dist/pool/) would be loaded instead of the folder that replaced it.
rmSync(path.join(root, 'dist'), { recursive: true, force: true });
if (run(bin('tsc'), ['-p', 'tsconfig.build.json']) !== 0) {
  console.log('0 passed, 1 failed');
  writeFileSync(path.join(root, '.test-summary'), '0 passed, 1 failed\n');
  process.exit(1);
}

/** The pure-JS parts' test files that run a second time in portable mode. */
const PORTABLE_FILES = [
  'test/portable.test.ts',
  'test/pool.basic.test.ts',
  'test/pool.close.test.ts',
  'test/pool.errors.test.ts',
  'test/pool.leaks.test.ts',
  'test/pool.strict.test.ts',
  'test/pool.waiting.test.ts',
  'test/pool.wakeups.test.ts',
  'test/pool.workers.test.ts',
  'test/pool.threads.test.ts',
  'test/gather.socket.test.ts',
  'test/gather.puts.test.ts',
  'test/gather.strings.test.ts',
  'test/gather.ownership.test.ts',
  'test/frames.order.test.ts',
  'test/frames.split.test.ts',
  'test/frames.takeover.test.ts',
  'test/frames.backpressure.test.ts',
  'test/frames.errors.test.ts',
  'test/frames.sharing.test.ts',
  'test/socket-writer.test.ts',
  'test/lending.sockets.test.ts',
  'test/mqtt.backpressure.test.ts',
];

const given = process.argv.slice(2);
const portableOnly = given.includes('--portable');
const vitestArgs = given.filter((arg) => arg !== '--portable');
const selection = vitestArgs.some((arg) => !arg.startsWith('-'));

const nativeSources = readdirSync(path.join(root, 'native'))
  .filter((name) => /\.(cc|h)$/.test(name))
  .map((name) => path.join('native', name));
const checks = [
  { name: 'typecheck (tsc -p tsconfig.json: lib, test, bench, examples)', command: bin('tsc'), args: ['-p', 'tsconfig.json', '--noEmit'] },
  {
    name: 'biome check (lint incl. no import cycles, format)',
    command: bin('biome'),
    args: ['check', 'lib', 'test', 'bench', 'examples', 'scripts'],
  },
  { name: 'clang-format --dry-run -Werror native/', command: bin('clang-format'), args: ['--dry-run', '-Werror', ...nativeSources] },
];
let checksPassed = 0;
let checksFailed = 0;
if (selection || portableOnly || process.env.IOBUF_ASAN || process.env.IOBUF_NO_CHECKS === '1') {
  console.log('checks: skipped (test files given, a sanitizer or portable-only run, or IOBUF_NO_CHECKS=1)');
} else {
  for (const check of checks) {
    console.log(`\ncheck: ${check.name}`);
    if (run(check.command, check.args) === 0) {
      checksPassed++;
      console.log(`check passed: ${check.name}`);
    } else {
      checksFailed++;
      console.log(`CHECK FAILED: ${check.name}`);
    }
  }
  console.log(`\nchecks: ${checksPassed} passed, ${checksFailed} failed\n`);
}

const runs = [];
if (!portableOnly) runs.push({ env: {}, args: vitestArgs });
if (portableOnly || (given.length === 0 && !process.env.IOBUF_ASAN)) {
  runs.push({ env: { IOBUF_PORTABLE: '1' }, args: portableOnly && vitestArgs.length > 0 ? vitestArgs : PORTABLE_FILES });
}

const results = path.join(root, '.vitest-results.json');
let passed = checksPassed;
let failed = checksFailed;
let skipped = 0;
let allOk = checksFailed === 0;
for (const { env, args } of runs) {
  if (env.IOBUF_PORTABLE) console.log("\n=== portable mode (IOBUF_PORTABLE=1): the pure-JS parts' tests again");
  rmSync(results, { force: true });
  const status =
    spawnSync(bin('vitest'), ['run', '--reporter=default', '--reporter=json', `--outputFile.json=${results}`, ...args], {
      cwd: root,
      stdio: 'inherit',
      env: { ...process.env, ...env },
    }).status ?? 1;
  let runFailed = 0;
  try {
    const report = JSON.parse(readFileSync(results, 'utf8'));
    passed += report.numPassedTests;
    runFailed = report.numFailedTests;
    skipped += report.numPendingTests + report.numTodoTests;
    // A file that failed to load has no tests in the count: count it as a failure.
    runFailed += report.testResults.filter((file) => file.status === 'failed' && file.assertionResults.length === 0).length;
  } catch {
    runFailed = Math.max(runFailed, 1);
  }
  if (status !== 0 && runFailed === 0) runFailed = 1;
  failed += runFailed;
  if (status !== 0 || runFailed !== 0) allOk = false;
}
const summary = `${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`;
console.log(summary);
// .ci/run prints this file as its own closing line.
writeFileSync(path.join(root, '.test-summary'), `${summary}\n`);
process.exit(allOk && failed === 0 ? 0 : 1);
