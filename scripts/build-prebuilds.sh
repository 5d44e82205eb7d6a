#!/usr/bin/env bash
# `npm run build:prebuilds` (and `prepack`): build the addon with prebuildify
# into prebuilds/linux-x64/, which the npm tarball ships so that installing
# iobuf needs no compiler (node-gyp-build finds it there).
#
# prebuildify runs node-gyp in build/ and then moves the binary out of
# build/Release/ into prebuilds/: a local build is gone afterwards (the
# package then loads the prebuild), so don't run this while tests are running.
# test/package.test.ts packs a scratch copy of the repository for that reason.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build against the headers next to `node`: with --napi, prebuildify would
# otherwise download the newest Node's headers, and there is no internet.
export npm_config_nodedir="${npm_config_nodedir:-$(dirname "$(dirname "$(command -v node)")")}"
node_modules/.bin/prebuildify --napi --strip
ls -l prebuilds/linux-x64/*.node
