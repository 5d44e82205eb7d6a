// The one typed edge to the native addon. Every other module imports `native`
// from here; nothing else calls require() on a .node file. The interface both
// bindings implement is lib/native-api.ts.
//
// This is also the one place that chooses the mode: the native addon
// (node-gyp-build finds build/Release or the prebuild for this platform), or
// — when IOBUF_PORTABLE=1 is set, or the addon does not load (another OS, no
// prebuild and no build, a corrupt file) — the portable binding of
// lib/portable.ts, which implements the same interface in JavaScript or throws
// ERR_IOBUF_UNSUPPORTED. A load that fails without IOBUF_PORTABLE says so once,
// as a process warning with the code IOBUF_PORTABLE_MODE.
import { constants as bufferConstants } from 'node:buffer';
import path from 'node:path';
import loadAddon from 'node-gyp-build';
import { isMainThread } from 'node:worker_threads';
import { IobufError } from './errors';
import type { NativeBinding } from './native-api';
import { portableBinding } from './portable';
import { noteUntestedRuntime } from './runtime';

export type { NativeBinding } from './native-api';

function loadNative(): { binding: NativeBinding | null; why: string } {
  if (process.env.IOBUF_PORTABLE === '1') return { binding: null, why: 'IOBUF_PORTABLE=1 is set' };
  try {
    // IOBUF_ADDON_PATH loads a specific build (the sanitizer build uses it).
    const packageRoot = path.join(__dirname, '..');
    const binding = (
      process.env.IOBUF_ADDON_PATH ? require(path.resolve(process.env.IOBUF_ADDON_PATH)) : loadAddon(packageRoot)
    ) as NativeBinding;
    return { binding, why: '' };
  } catch (error) {
    const message = String((error as Error)?.message ?? error).split('\n')[0];
    return { binding: null, why: `the native addon did not load for ${process.platform}-${process.arch}: ${message}` };
  }
}

const loaded = loadNative();
/** True when the native addon runs; false in portable mode. */
export const isNative: boolean = loaded.binding !== null;
/** Why portable mode runs (IOBUF_PORTABLE=1, or the addon's load error); null when native. */
export const portableReason: string | null = isNative ? null : loaded.why;
export const native: NativeBinding = loaded.binding ?? portableBinding(loaded.why);

native.setErrorClass(IobufError);
native.setMaxBufferLength(bufferConstants.MAX_LENGTH);
noteUntestedRuntime();
if (!isNative && process.env.IOBUF_PORTABLE !== '1' && isMainThread) {
  process.emitWarning(`iobuf runs in portable mode: ${loaded.why}. See docs/api.md, "Portable mode".`, { code: 'IOBUF_PORTABLE_MODE' });
}
