// The one typed edge to the native addon. Every other module imports `native`
// from here; nothing else calls require() on a .node file.
import { constants as bufferConstants } from 'node:buffer';
import path from 'node:path';
import loadAddon from 'node-gyp-build';
import { IobufError } from './errors';
import { noteUntestedRuntime } from './runtime';

export interface NativeBinding {
  setErrorClass(errorClass: typeof IobufError): void;
  /** The longest Buffer this runtime makes: native code refuses longer ones before mapping anything. */
  setMaxBufferLength(length: number): void;
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
  /**
   * memmove of source[sourceStart, sourceEnd) to target[targetStart…), clamped
   * to both views; returns the bytes copied. Buffer#copy's semantics without
   * the view Node 20 allocates per call. Offsets: integers >= 0.
   */
  copyBytes(source: Uint8Array, target: Uint8Array, targetStart: number, sourceStart: number, sourceEnd: number): number;

  // pool (native/pool.cc)
  /** A Buffer with an ArrayBuffer of its own over slab bytes [offset, offset + length). */
  viewOf(slab: ArrayBuffer, offset: number, length: number): Buffer;
  detach(arrayBuffer: ArrayBuffer): void;

  // iovec (native/iovec.cc)
  /** IOV_MAX: the most entries one readv/writev takes. */
  readonly iovMax: number;
  /** sizeof(struct iovec): 16 on 64-bit platforms. */
  readonly iovecEntryBytes: number;
  /** [entries, private bounds (also the array's handle), address of entries] for `capacity` entries. */
  iovecCreate(capacity: number): [ArrayBuffer, ArrayBuffer, number];
  /** Detaches both buffers and frees the native blocks now (no-op when closed already). */
  iovecClose(bounds: ArrayBuffer, entries: ArrayBuffer): void;
  /** Checks entries [0, count) against their bounds, then one transfer (op: native/iovec.h IoVecOp). */
  iovecTransfer(bounds: ArrayBuffer, op: number, fd: number, count: number, position: number): number;
  /** The same, checked and snapshotted now, run on the libuv thread pool. */
  iovecTransferAsync(bounds: ArrayBuffer, op: number, fd: number, count: number, position: number): Promise<number>;
  /** The address of a TypedArray's or DataView's first byte (0 when detached). */
  viewAddress(view: ArrayBufferView): number;
  /** madvise(MADV_DONTFORK) over the whole (page-aligned) ArrayBuffer. */
  adviseDontFork(arrayBuffer: ArrayBuffer): void;
}

// IOBUF_ADDON_PATH loads a specific build (the sanitizer build uses it).
const packageRoot = path.join(__dirname, '..');
export const native = (process.env.IOBUF_ADDON_PATH
  ? require(path.resolve(process.env.IOBUF_ADDON_PATH))
  : loadAddon(packageRoot)) as NativeBinding;

native.setErrorClass(IobufError);
native.setMaxBufferLength(bufferConstants.MAX_LENGTH);
noteUntestedRuntime();
