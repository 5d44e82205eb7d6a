#!/usr/bin/env bash
# `npm run build:prebuilds` (and `prepack`): build the addon with prebuildify
# for every platform the npm tarball ships, so that installing iobuf needs no
# compiler (node-gyp-build finds the binary in prebuilds/ at run time):
#
#   prebuilds/linux-x64/iobuf.node        glibc x86-64 (the host's g++)
#   prebuilds/linux-arm64/iobuf.node      glibc arm64 (Debian's g++-aarch64-linux-gnu)
#   prebuilds/linux-x64/iobuf.musl.node   musl x86-64, e.g. Alpine (zig c++, from npm)
#
# IOBUF_PREBUILD_TARGETS="linux-x64 linux-arm64 linux-x64-musl" (the default)
# picks targets. Missing tools are installed (scripts/platform-tools.sh). The
# host must be x86-64 or arm64; a target of the other architecture is
# cross-compiled.
#
# A Node-API addon needs only the Node-API headers, which are the same for
# every architecture: each build uses the headers next to the `node` that runs
# this script (with --napi, prebuildify would otherwise download the newest
# Node's headers, and there is no internet). No arm64 Node headers are needed.
#
# prebuildify runs node-gyp in build/ and then moves the binary out of
# build/Release/ into prebuilds/: a local build is gone afterwards (the
# package then loads the prebuild), so don't run this while tests are running.
# test/package.test.ts packs a scratch copy of the repository for that reason.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/platform-tools.sh

export npm_config_nodedir="${npm_config_nodedir:-$(dirname "$(dirname "$(command -v node)")")}"
targets="${IOBUF_PREBUILD_TARGETS:-linux-x64 linux-arm64 linux-x64-musl}"
host_arch="$(node -p process.arch)"
prebuildify=node_modules/.bin/prebuildify

# A glibc build for ARCH; TRIPLE names the cross toolchain when ARCH is not the host's.
build_glibc() {
  local arch="$1" triple="$2" package="$3"
  if [ "$arch" = "$host_arch" ]; then
    "$prebuildify" --napi --strip --arch "$arch"
    return
  fi
  ensure_apt "$triple-g++" "$package"
  # node-gyp's make files compile with $CC/$CXX and link with $LINK.
  CC="$triple-gcc" CXX="$triple-g++" LINK="$triple-g++" AR="$triple-ar" \
    PREBUILD_STRIP_BIN="$triple-strip" \
    "$prebuildify" --napi --strip --arch "$arch"
}

# musl: Zig's clang with its own musl headers and libc++ (linked into the
# addon, so it needs no C++ library on the target; it needs musl's libc only,
# which it names libc.so: musl's loader answers that name with itself).
build_musl() {
  local arch="$1" zig_target="$2"
  if [ "$host_arch" != x64 ]; then
    echo "the musl prebuild is built on x86-64 hosts only (the Zig package used is x86-64)" >&2
    return 1
  fi
  local zig
  zig="$(zig_binary)"
  # The version script keeps the C++ runtime linked in (libc++, libc++abi,
  # libunwind) private to the addon. Exported, its _Unwind_* and operator new
  # would be bound to the process's libgcc_s and libstdc++ (Node on Alpine
  # loads both), and a C++ exception thrown in the addon aborted the process.
  CC="$zig cc -target $zig_target" CXX="$zig c++ -target $zig_target" \
    LINK="$zig c++ -target $zig_target -Wl,--version-script=$PWD/scripts/addon-exports.map" \
    AR="$zig ar" PREBUILD_LIBC=musl \
    "$prebuildify" --napi --strip --arch "$arch" --tag-libc
}

for target in $targets; do
  echo "--- prebuild $target" >&2
  case "$target" in
    linux-x64) build_glibc x64 x86_64-linux-gnu g++-x86-64-linux-gnu ;;
    linux-arm64) build_glibc arm64 aarch64-linux-gnu g++-aarch64-linux-gnu ;;
    linux-x64-musl) build_musl x64 x86_64-linux-musl ;;
    *) echo "unknown prebuild target '$target' (known: linux-x64 linux-arm64 linux-x64-musl)" >&2; exit 1 ;;
  esac
done
ls -l prebuilds/*/*.node
