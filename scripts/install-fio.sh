#!/usr/bin/env bash
# Installs fio (Debian package `fio`), the C ceiling of `npm run bench -- uring`
# (bench/uring.mjs runs it with the io_uring engine on the same file, block
# size and queue depth as IoRing). Needs root and apt; does nothing when fio
# is already there.
set -euo pipefail
if command -v fio >/dev/null 2>&1; then
  echo "fio is installed: $(fio --version)"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/install-fio.sh: installing fio needs root (apt-get install -y fio)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y fio || { apt-get update && apt-get install -y fio; }
fio --version
