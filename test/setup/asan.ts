// Vitest setup file for `npm run test:asan` (vitest.config.ts adds it when
// IOBUF_ASAN is set). Vitest kills its fork workers before LeakSanitizer's
// exit-time check would run, so each test file ends with an explicit check
// through the sanitizer build's test-only export. Reports go to stderr;
// test/setup/lsan.supp says what is not ours to fix.
import path from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { afterAll } from 'vitest';
import type { NativeBinding } from '../../lib/binding';

// The same module object lib/binding.ts gets (Node caches addons by path);
// loaded directly so that this file does not change which IobufError class
// the addon was last given.
const addonPath = process.env.IOBUF_ADDON_PATH;
if (!addonPath) throw new Error('IOBUF_ASAN is set but IOBUF_ADDON_PATH is not: run `npm run test:asan`');
const native = require(path.resolve(addonPath)) as NativeBinding;
if (typeof native.leakCheck !== 'function') {
  throw new Error(`${addonPath} has no leakCheck(): it is not the sanitizer build (build-asan/Release/iobuf.node)`);
}

afterAll(async () => {
  // Let unreachable Buffers go first: their finalizers run only after the
  // event loop turns.
  for (let i = 0; i < 2; i++) {
    globalThis.gc?.();
    await nextTurn();
  }
  if (native.leakCheck!() !== 0) {
    throw new Error('LeakSanitizer found leaks: see its report on stderr');
  }
});
