// `npm test`: compile the TypeScript (worker-thread tests and the package test
// load dist/), run the checks, run vitest, and end with the plain line
// "N passed, N failed" that CI reads. Extra arguments go to vitest (e.g.
// `npm test -- test/memory`); a run given test files skips the checks.
//
// The checks, each counted as one test in the closing line:
//   typecheck     tsc -p tsconfig.json --noEmit: lib/, test/, bench/, examples/
//   biome         biome check (lint, with the import-cycle rule, and format) of
//                 lib/, test/, bench/, examples/, scripts/ (biome.json)
//   clang-format  clang-format --dry-run -Werror of native/ (.clang-format)
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

const vitestArgs = process.argv.slice(2);
const selection = vitestArgs.some((arg) => !arg.startsWith('-'));
const native = readdirSync(path.join(root, 'native'))
  .filter((name) => /\.(cc|h)$/.test(name))
  .map((name) => path.join('native', name));
const checks = [
  { name: 'typecheck (tsc -p tsconfig.json: lib, test, bench, examples)', command: bin('tsc'), args: ['-p', 'tsconfig.json', '--noEmit'] },
  {
    name: 'biome check (lint incl. no import cycles, format)',
    command: bin('biome'),
    args: ['check', 'lib', 'test', 'bench', 'examples', 'scripts'],
  },
  { name: 'clang-format --dry-run -Werror native/', command: bin('clang-format'), args: ['--dry-run', '-Werror', ...native] },
];
let checksPassed = 0;
let checksFailed = 0;
if (selection) {
  console.log('checks: skipped (test files were given; the full `npm test` runs them)');
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

const results = path.join(root, '.vitest-results.json');
rmSync(results, { force: true });
const status = run(bin('vitest'), ['run', '--reporter=default', '--reporter=json', `--outputFile.json=${results}`, ...vitestArgs]);

let passed = 0;
let failed = 0;
let skipped = 0;
try {
  const report = JSON.parse(readFileSync(results, 'utf8'));
  passed = report.numPassedTests;
  failed = report.numFailedTests;
  skipped = report.numPendingTests + report.numTodoTests;
  // A file that failed to load has no tests in the count: count it as a failure.
  failed += report.testResults.filter((file) => file.status === 'failed' && file.assertionResults.length === 0).length;
} catch {
  failed = Math.max(failed, 1);
}
if (status !== 0 && failed === 0) failed = 1;
passed += checksPassed;
failed += checksFailed;
const summary = `${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`;
console.log(summary);
// .ci/run prints this file as its own closing line.
writeFileSync(path.join(root, '.test-summary'), `${summary}\n`);
process.exit(status === 0 && failed === 0 ? 0 : 1);
