// The published package: `npm pack` (prepack builds prebuilds/ with
// prebuildify), install the tarball into a scratch project with no compiler on
// PATH, and load it in a child process. This is what `npm install iobuf` does
// for a user, so it must work from the prebuilt binary alone. Where the addon
// cannot load (a corrupt binary; no prebuild for the platform and no compiler)
// the install still succeeds and the package runs in portable mode.
//
// Other test files load the repo's build/Release/iobuf.node while this runs,
// so packing happens in a scratch copy of the repository (tracked and
// untracked-but-not-ignored files, node_modules symlinked): prebuildify's
// build/ and prebuilds/ are written there, never in the repo.
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repo = path.resolve(__dirname, '..');
// Packing builds three prebuilds (x64, arm64 cross, musl with Zig). Measured:
// ~1 min alone, ~3 min beside the other test files; the first musl build on a
// machine also compiles Zig's libc++ once (3.5 min, 8 min while other builds
// ran; then cached in ~/.cache/zig).
const SETUP_TIMEOUT = 900_000;

// Children get a clean environment: no sanitizer preload or sanitizer addon
// (npm, node-gyp and g++ would run under ASan and the installed package would
// load build-asan/), and no npm_* variables from an enclosing `npm test`.
function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (/^(LD_PRELOAD|[A-Z]+SAN_OPTIONS|IOBUF_.*|NODE_OPTIONS|INIT_CWD)$/.test(name)) continue;
    if (/^npm_/i.test(name)) continue;
    env[name] = value;
  }
  return { ...env, ...extra };
}

// Runs a command and returns its stdout; any other exit is an error that shows the output.
function run(command: string, args: string[], options: SpawnSyncOptions & { cwd: string }): string {
  const result = spawnSync(command, args, { encoding: 'utf8', env: childEnv(), ...options });
  if (result.error) throw result.error;
  if (result.status !== 0) {
    throw new Error(
      `\`${command} ${args.join(' ')}\` in ${options.cwd} exited with ` +
        `${result.status ?? result.signal}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`,
    );
  }
  return String(result.stdout);
}

// What `npm run build:prebuilds` puts in the tarball (scripts/build-prebuilds.sh).
const PREBUILDS = [
  { file: 'prebuilds/linux-x64/iobuf.node', machine: 'Advanced Micro Devices X86-64', libc: 'glibc' },
  { file: 'prebuilds/linux-arm64/iobuf.node', machine: 'AArch64', libc: 'glibc' },
  { file: 'prebuilds/linux-x64/iobuf.musl.node', machine: 'Advanced Micro Devices X86-64', libc: 'musl' },
];

describe('npm package', () => {
  let scratch = '';
  let tarball = '';
  let tarballFiles: string[] = [];
  let installed = ''; // <app>/node_modules/iobuf
  let app = '';
  let noCompilerPath = '';

  beforeAll(() => {
    scratch = mkdtempSync(path.join(os.tmpdir(), 'iobuf-package-test-'));
    // IOBUF_PACKAGE_TARBALL (set by .ci/run, a path of its own per CI run):
    // the first run packs and keeps the tarball there; the runs on the other
    // Node majors install that same tarball, so one build of the addon is
    // what each of them loads.
    const kept = process.env.IOBUF_PACKAGE_TARBALL;
    tarball = kept !== undefined && existsSync(kept) ? kept : pack();
    if (kept !== undefined && tarball !== kept) copyFileSync(tarball, kept);
    tarballFiles = run('tar', ['-tzf', tarball], { cwd: scratch }).split('\n').filter(Boolean);
    install();
  }, SETUP_TIMEOUT);

  /** A tarball made by `npm pack` from a copy of the working tree; returns its path. */
  function pack(): string {
    // 1. A copy of the working tree, without build/, dist/, prebuilds/ (all ignored).
    const source = path.join(scratch, 'source');
    const listed = run('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: repo });
    for (const file of new Set(listed.split('\0').filter(Boolean))) {
      if (file === 'node_modules' || !existsSync(path.join(repo, file))) continue; // (deleted in the working tree)
      mkdirSync(path.dirname(path.join(source, file)), { recursive: true });
      cpSync(path.join(repo, file), path.join(source, file));
    }
    symlinkSync(path.join(repo, 'node_modules'), path.join(source, 'node_modules'), 'dir');

    // 2. Pack it: prepack builds prebuilds/ and dist/ in the copy.
    const packed = path.join(scratch, 'packed');
    mkdirSync(packed);
    run('npm', ['pack', '--pack-destination', packed], { cwd: source });
    const tarballs = readdirSync(packed);
    expect(tarballs).toEqual([expect.stringMatching(/^iobuf-.*\.tgz$/)]);
    return path.join(packed, tarballs[0]);
  }

  function install(): void {
    // 3. A PATH with node, npm and sh (npm runs install scripts with `sh -c`)
    // and nothing else: no cc, c++, g++, make, python.
    noCompilerPath = path.join(scratch, 'bin');
    mkdirSync(noCompilerPath);
    symlinkSync(process.execPath, path.join(noCompilerPath, 'node'));
    const npm = run('sh', ['-c', 'command -v npm'], { cwd: scratch }).trim();
    symlinkSync(realpathSync(npm), path.join(noCompilerPath, 'npm'));
    symlinkSync('/bin/sh', path.join(noCompilerPath, 'sh'));

    // 4. Install the tarball into a fresh project.
    app = path.join(scratch, 'app');
    mkdirSync(app);
    writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
    run('npm', ['install', tarball, '--prefer-offline', '--no-audit', '--no-fund'], {
      cwd: app,
      env: childEnv({ PATH: noCompilerPath }),
    });
    installed = path.join(app, 'node_modules', 'iobuf');
  }

  afterAll(() => {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('the scratch PATH holds no compiler', () => {
    expect(readdirSync(noCompilerPath).sort()).toEqual(['node', 'npm', 'sh']);
    for (const tool of ['cc', 'c++', 'gcc', 'g++', 'make', 'python3']) {
      const found = spawnSync('/bin/sh', ['-c', `command -v ${tool}`], { env: { PATH: noCompilerPath } });
      expect(found.status, `${tool} is on the scratch PATH`).not.toBe(0);
    }
  });

  it('the tarball holds dist/, the linux-x64, linux-arm64 and linux-x64-musl prebuilds and no build/', () => {
    expect(tarballFiles).toContain('package/package.json');
    expect(tarballFiles).toContain('package/dist/index.js');
    expect(tarballFiles).toContain('package/dist/index.d.ts');
    expect(tarballFiles).toContain('package/binding.gyp');
    expect(tarballFiles.filter((file) => file.endsWith('.node')).sort()).toEqual(PREBUILDS.map(({ file }) => `package/${file}`).sort());
    expect(tarballFiles.filter((file) => file.startsWith('package/build/'))).toEqual([]);
    expect(tarballFiles.filter((file) => file.startsWith('package/build-asan/'))).toEqual([]);
  });

  it.each(PREBUILDS)('$file is a shared object for $machine that needs no newer glibc than Node 20 does', ({ file, machine, libc }) => {
    const binary = path.join(installed, file);
    expect(run('readelf', ['-h', binary], { cwd: scratch })).toMatch(new RegExp(`Machine:\\s+${machine}`));
    const needed = [...run('readelf', ['-d', binary], { cwd: scratch }).matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map(
      (match) => match[1],
    );
    const symbols = run('readelf', ['-W', '--dyn-syms', binary], { cwd: scratch });
    const glibcVersions = [...symbols.matchAll(/@GLIBC_(\d+)\.(\d+)/g)].map((match) => [Number(match[1]), Number(match[2])]);
    if (libc === 'musl') {
      // musl's libc only (its loader answers "libc.so" with itself); the C++ runtime is inside.
      expect(needed).toEqual(['libc.so']);
      expect(glibcVersions).toEqual([]);
      // Only the Node-API entry points are exported: the C++ runtime inside stays private.
      const exported = symbols
        .split('\n')
        .filter((line) => /\s(GLOBAL|WEAK)\s/.test(line) && !/\sUND\s/.test(line))
        .map((line) => line.trim().split(/\s+/).pop())
        .sort();
      expect(exported).toEqual(['napi_register_module_v1', 'node_api_module_get_api_version_v1']);
    } else {
      expect(needed).toContain('libc.so.6');
      // Node 20's own binaries need glibc 2.28; the addon must not ask for more.
      expect(glibcVersions.length).toBeGreaterThan(0);
      for (const [major, minor] of glibcVersions) expect(major * 1000 + minor).toBeLessThanOrEqual(2028);
    }
  });

  it('installs without building: no build/ in the installed package', () => {
    expect(existsSync(path.join(installed, 'prebuilds', 'linux-x64', 'iobuf.node'))).toBe(true);
    expect(existsSync(path.join(installed, 'build'))).toBe(false);
  });

  it('loads the prebuilt binary and allocates page-aligned memory', () => {
    const script = `
      const iobuf = require('iobuf');
      const buffer = iobuf.allocAligned(4096);
      console.log(JSON.stringify({
        length: buffer.length,
        isBuffer: Buffer.isBuffer(buffer),
        offsetInPage: String(iobuf.addressOf(buffer) % 4096n),
        addons: Object.keys(require.cache).filter((file) => file.endsWith('.node')),
      }));
    `;
    const stdout = run(path.join(noCompilerPath, 'node'), ['-e', script], {
      cwd: app,
      env: childEnv({ PATH: noCompilerPath }),
    });
    expect(JSON.parse(stdout)).toEqual({
      length: 4096,
      isBuffer: true,
      offsetInPage: '0',
      addons: [realpathSync(path.join(installed, 'prebuilds', 'linux-x64', 'iobuf.node'))],
    });
  });

  it('where the addon cannot load (a corrupt .node) it still imports: native false, the reason, one warning, a working pool', () => {
    const copy = path.join(app, 'node_modules', 'iobuf-corrupt');
    cpSync(installed, copy, { recursive: true });
    for (const { file } of PREBUILDS) writeFileSync(path.join(copy, file), 'not a shared object');
    const script = `
      const iobuf = require(${JSON.stringify(copy)});
      const pool = new iobuf.BufferPool({ maxMemory: 65536 });
      const buffer = pool.tryAcquire(1000);
      buffer.fill(7);
      pool.release(buffer);
      console.log(JSON.stringify({ native: iobuf.native, reason: iobuf.portableReason, inUse: pool.stats().inUse, aligned: iobuf.allocAligned(4096).length }));
    `;
    const result = spawnSync(path.join(noCompilerPath, 'node'), ['-e', script], {
      cwd: app,
      encoding: 'utf8',
      env: childEnv({ PATH: noCompilerPath }),
    });
    expect(result.status, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual({
      native: false,
      reason: expect.stringMatching(/^the native addon did not load for linux-x64: /),
      inUse: 0,
      aligned: 4096,
    });
    expect(
      result.stderr.match(/\[IOBUF_PORTABLE_MODE\] Warning: iobuf runs in portable mode: the native addon did not load/g),
    ).toHaveLength(1);
  });

  it('without a prebuild for the platform and without a compiler, npm install succeeds with one line, and iobuf runs in portable mode', () => {
    // The same tarball without prebuilds/: what a platform with no prebuild gets.
    const unpacked = path.join(scratch, 'unpacked');
    mkdirSync(unpacked);
    run('tar', ['-xzf', tarball, '-C', unpacked], { cwd: scratch });
    rmSync(path.join(unpacked, 'package', 'prebuilds'), { recursive: true, force: true });
    const bare = path.join(scratch, 'iobuf-without-prebuilds.tgz');
    run('tar', ['-czf', bare, '-C', unpacked, 'package'], { cwd: scratch });

    const portableApp = path.join(scratch, 'app-portable');
    mkdirSync(portableApp);
    writeFileSync(path.join(portableApp, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
    const install = spawnSync('npm', ['install', bare, '--prefer-offline', '--no-audit', '--no-fund', '--foreground-scripts'], {
      cwd: portableApp,
      encoding: 'utf8',
      env: childEnv({ PATH: noCompilerPath }),
    });
    const output = `${install.stdout}\n${install.stderr}`;
    expect(install.status, output).toBe(0);
    expect(output.match(/^iobuf: .*$/gm)).toEqual([
      expect.stringMatching(
        /^iobuf: no prebuild for linux-x64 loaded and building the native addon from source failed \(.+\); iobuf will run in portable mode/,
      ),
    ]);
    const stdout = run(
      path.join(noCompilerPath, 'node'),
      [
        '-e',
        'const iobuf = require("iobuf"); console.log(JSON.stringify({ native: iobuf.native, supported: iobuf.IoRing.supported().code }))',
      ],
      {
        cwd: portableApp,
        env: childEnv({ PATH: noCompilerPath }),
      },
    );
    expect(JSON.parse(stdout)).toEqual({ native: false, supported: 'ERR_IOBUF_UNSUPPORTED' });
  });
});
