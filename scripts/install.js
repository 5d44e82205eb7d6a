// npm's `install` step for iobuf. It never fails the install: where the
// native addon cannot be had, iobuf runs in portable mode (docs/api.md,
// "Portable mode"), and this step says so in one line.
//
// - Linux: node-gyp-build, as before — it keeps a prebuild that loads
//   (prebuilds/linux-x64, linux-arm64, linux-x64 musl), else builds from
//   source with node-gyp (which needs python3, make and a C++ compiler).
// - Any other OS, or IOBUF_PORTABLE=1: nothing to build.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const platform = `${process.platform}-${process.arch}`;
const portable = (why) => {
  console.error(`iobuf: ${why}; iobuf will run in portable mode (no native addon: see the README, "Install").`);
  process.exit(0);
};

if (process.env.IOBUF_PORTABLE === '1') portable('IOBUF_PORTABLE=1 is set, so the native addon is not built');
if (process.platform !== 'linux') portable(`the native addon is for Linux only and this is ${platform}`);

let loadAddon;
let bin;
try {
  loadAddon = require('node-gyp-build');
  bin = require.resolve('node-gyp-build/bin.js');
} catch {
  portable('node-gyp-build is not installed');
}
// A build (build/Release) or a prebuild that loads here: done. In this
// process, as node-gyp-build's own check does (it loads the addon), and
// without starting another node: under an emulator (qemu-user, no binfmt)
// process.execPath cannot be started directly.
try {
  loadAddon(path.join(__dirname, '..'));
  process.exit(0);
} catch {
  // none loads: build from source
}
const result = spawnSync(process.execPath, [bin], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
if (result.status === 0) process.exit(0);
const output = `${result.stderr ?? ''}\n${result.stdout ?? ''}`;
const lastError =
  output
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => /err/i.test(line))
    .pop() ?? `exit ${result.status ?? result.signal}`;
portable(`no prebuild for ${platform} loaded and building the native addon from source failed (${lastError.slice(0, 200)})`);
