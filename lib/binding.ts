// The one typed edge to the native addon. Every other module imports `native`
// from here; nothing else calls require() on a .node file.
import path from 'node:path';
import loadAddon from 'node-gyp-build';
import { IobufError } from './errors';

export interface NativeBinding {
  setErrorClass(errorClass: typeof IobufError): void;
  /** Sanitizer builds only (IOBUF_ASAN): run LeakSanitizer now; nonzero = leaks found. */
  leakCheck?(): number;

  // memory (native/memory.cc)
  readonly pageSize: number;
  readonly hugePageSize: number;
  readonly cacheLineSize: number;
  /** A Buffer of `size` bytes over a fresh mapping aligned to `alignment` (>= page). */
  mapAligned(size: number, alignment: number, flags: number): Buffer;
  /** hugetlb, else THP (fallback >= 1), else normal pages (fallback 2). */
  mapHuge(size: number, fallback: number, flags: number): Buffer;
  /** The ArrayBuffer's data address as a number (0 when detached). */
  addressOf(arrayBuffer: ArrayBuffer): number;
  /** Detach, and unmap when the memory is a native mapping. */
  free(arrayBuffer: ArrayBuffer): void;
  pageKind(address: number): 'hugetlb' | 'thp' | 'normal' | 'unknown';

  // pool (native/pool.cc)
  /** A Buffer with an ArrayBuffer of its own over slab bytes [offset, offset + length). */
  viewOf(slab: ArrayBuffer, offset: number, length: number): Buffer;
  detach(arrayBuffer: ArrayBuffer): void;
}

// IOBUF_ADDON_PATH loads a specific build (the sanitizer build uses it).
const packageRoot = path.join(__dirname, '..');
export const native = (process.env.IOBUF_ADDON_PATH
  ? require(path.resolve(process.env.IOBUF_ADDON_PATH))
  : loadAddon(packageRoot)) as NativeBinding;

native.setErrorClass(IobufError);
