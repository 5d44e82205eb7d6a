#!/usr/bin/env bash
# `npm run test:asan`: build the addon with AddressSanitizer + UBSan (cmake-js,
# CMakeLists.txt, into build-asan/) and run the whole vitest suite against it.
# Ends with the same "N passed, N failed" line as `npm test`.
#
# The ASan runtime must be the first library in any process that loads the
# addon, so it is preloaded into every process of the run (node, tsc, vitest
# and its workers; test/package.test.ts clears it for the npm/node-gyp/g++ it
# starts). Exit-time leak checks are off: they would only check processes that
# never load the addon (tsc and run-tests.mjs leave through process.exit() with
# V8 alive, and LSan then spends a minute reporting V8's heap as ~1000 leaks).
# The real check runs at the end of each test file in its worker, called by
# test/setup/asan.ts.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

# Build against the headers next to `node`; there is nothing to download them from.
export npm_config_nodedir="${npm_config_nodedir:-$(dirname "$(dirname "$(command -v node)")")}"
node_modules/.bin/cmake-js compile --out build-asan --CDIOBUF_SANITIZE=ON
addon="$root/build-asan/Release/iobuf.node"

export IOBUF_ASAN=1
export IOBUF_ADDON_PATH="$addon"
export LD_PRELOAD="$(g++ -print-file-name=libasan.so)"
export ASAN_OPTIONS="detect_leaks=1:leak_check_at_exit=0:strict_string_checks=1:check_initialization_order=1"
export LSAN_OPTIONS="suppressions=$root/test/setup/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
exec node scripts/run-tests.mjs "$@"
