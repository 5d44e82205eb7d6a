// The memory part: aligned, huge-page and locked allocations as Buffers.
//
// Two ways to get aligned memory, chosen per call:
// - heap: for alignments up to the page size with no lock/dontFork/dontDump,
//   a V8-owned ArrayBuffer of size + alignment - 1 bytes and an aligned view
//   into it. Creating an external ArrayBuffer costs 1–2.5 µs here, more than
//   Buffer.allocUnsafeSlow itself, so this path keeps allocAligned close to
//   allocUnsafeSlow (see docs/benchmark.md). The pages may be shared with other
//   heap allocations, which is why madvise/mlock options take the other path.
// - mapped: a native mmap of whole pages, trimmed to the alignment, wrapped in
//   an external Buffer. Used for larger alignments, the lock/dontFork/dontDump
//   options and every huge-page allocation.
import { constants as bufferConstants } from 'node:buffer';
import { isNative, native, portableReason } from './binding';
import { registerLender } from './lending';
import {
  IobufError,
  invalidValue,
  validateBoolean,
  validateInteger,
  validateOneOf,
  validateOptions,
  validatePowerOfTwo,
  validateView,
} from './errors';

/** Bytes in a base page, from sysconf(_SC_PAGESIZE). */
export const pageSize: number = native.pageSize;
/** Bytes in a huge page (hugetlb and THP), from /proc/meminfo. */
export const hugePageSize: number = native.hugePageSize;
/** Bytes in an L1 data cache line, from sysconf or sysfs. */
export const cacheLineSize: number = native.cacheLineSize;
/**
 * The largest `size` any allocation accepts: the largest Buffer the running
 * runtime can make (buffer.constants.MAX_LENGTH: 2^32 on Node 20 and Bun,
 * 2^53 - 1 on Node 22 and later). Larger sizes are a RangeError in every part;
 * sizes up to it go to the kernel, which may refuse them (ENOMEM).
 */
export const maxAllocationSize: number = bufferConstants.MAX_LENGTH;

const MIN_ALIGNMENT = 8;
const MAX_ALIGNMENT = 2 ** 30;

// Bits of native/memory.h MapFlags.
const LOCK = 1;
const DONT_FORK = 2;
const DONT_DUMP = 4;

export interface AllocAlignedOptions {
  /** Power of two from 8 to 1 GiB. Default: `pageSize`. */
  alignment?: number;
  /** Zero the bytes. Default true. Mapped memory is always zero. */
  zero?: boolean;
  /** mlock the pages (needs CAP_IPC_LOCK beyond RLIMIT_MEMLOCK). Default false. */
  lock?: boolean;
  /** madvise(MADV_DONTFORK): a forked child does not inherit the pages. Default false. */
  dontFork?: boolean;
  /** madvise(MADV_DONTDUMP): the pages are left out of core dumps. Default false. */
  dontDump?: boolean;
}

export type HugePageFallback = 'thp' | 'normal' | 'none';

export interface AllocHugeOptions {
  /**
   * How far to fall back when no hugetlb page is free: `'thp'` (default) to
   * transparent huge pages, `'normal'` further to normal pages, `'none'` not at all.
   */
  fallback?: HugePageFallback;
  lock?: boolean;
  dontFork?: boolean;
  dontDump?: boolean;
}

export type PageKind = 'hugetlb' | 'thp' | 'normal';

const FALLBACKS: readonly HugePageFallback[] = ['none', 'thp', 'normal'];

/** What this module knows of an allocation it handed out (keyed by its ArrayBuffer). */
interface AllocationRecord {
  /** Loans of its memory now (lib/lending.ts). */
  loans: number;
  /** native.lend()'s token while lent (0 for heap memory: V8 keeps it alive). */
  pinToken: number;
  /** free() was called: done at once, or when the last loan is repaid. */
  freeRequested: boolean;
}

// Every ArrayBuffer this module handed out, so free() can tell ours from
// foreign memory (and a second free from a first) without a native call.
const allocations = new WeakMap<ArrayBuffer, AllocationRecord>();

registerLender((view) => {
  const arrayBuffer = view.buffer as ArrayBuffer;
  const record = allocations.get(arrayBuffer);
  if (record === undefined || (record.freeRequested && record.loans === 0)) return null;
  // Native mappings are pinned too (heap memory has nothing to pin: the
  // iovec part never lets the kernel use it in place from another thread).
  if (record.loans++ === 0) record.pinToken = native.lend(arrayBuffer);
  let repaid = false;
  return {
    repay() {
      if (repaid) throw new IobufError('A loan of allocated memory was repaid twice', 'ERR_IOBUF_INTERNAL');
      repaid = true;
      if (--record.loans !== 0) return;
      if (record.pinToken !== 0) native.repay(record.pinToken);
      record.pinToken = 0;
      if (record.freeRequested) native.free(arrayBuffer);
    },
  };
});

function mapFlags(options: AllocAlignedOptions | AllocHugeOptions): number {
  const { lock = false, dontFork = false, dontDump = false } = options;
  validateBoolean(lock, 'options.lock');
  validateBoolean(dontFork, 'options.dontFork');
  validateBoolean(dontDump, 'options.dontDump');
  return (lock ? LOCK : 0) | (dontFork ? DONT_FORK : 0) | (dontDump ? DONT_DUMP : 0);
}

/** A Buffer of exactly `size` bytes whose address is a multiple of `alignment`. */
export function allocAligned(size: number, options: AllocAlignedOptions = {}): Buffer {
  validateInteger(size, 'size', 1, maxAllocationSize);
  validateOptions(options, 'options');
  const { alignment = pageSize, zero = true } = options;
  validatePowerOfTwo(alignment, 'options.alignment', MIN_ALIGNMENT, MAX_ALIGNMENT);
  validateBoolean(zero, 'options.zero');
  const flags = mapFlags(options);

  let buffer: Buffer | undefined;
  if (!isNative) {
    // Portable mode cannot see addresses: the Buffer is a whole ArrayBuffer of its own (docs/api.md, "Portable mode").
    buffer = native.mapAligned(size, alignment, flags);
  } else if (flags === 0 && alignment <= pageSize && size + alignment - 1 <= maxAllocationSize) {
    const total = size + alignment - 1;
    const arrayBuffer = heapArrayBuffer(total, zero);
    if (arrayBuffer !== null) {
      const misalignment = native.addressOf(arrayBuffer) % alignment;
      buffer = Buffer.from(arrayBuffer, misalignment === 0 ? 0 : alignment - misalignment, size);
    }
  }
  buffer ??= native.mapAligned(size, alignment, flags);
  allocations.set(buffer.buffer as ArrayBuffer, { loans: 0, pinToken: 0, freeRequested: false });
  return buffer;
}

/**
 * A V8-owned ArrayBuffer of `length` bytes, or null when V8 cannot allocate
 * it (a RangeError without a code, for sizes Node 22+ accepts and the machine
 * cannot hold): the mapped path then asks the kernel, which answers with an errno.
 */
function heapArrayBuffer(length: number, zero: boolean): ArrayBuffer | null {
  try {
    return zero ? new ArrayBuffer(length) : (Buffer.allocUnsafeSlow(length).buffer as ArrayBuffer);
  } catch (error) {
    if (error instanceof RangeError) return null;
    throw error;
  }
}

/** A Buffer of exactly `size` bytes in huge pages, falling back as `options.fallback` allows. */
export function allocHuge(size: number, options: AllocHugeOptions = {}): Buffer {
  validateInteger(size, 'size', 1, maxAllocationSize);
  validateOptions(options, 'options');
  const { fallback = 'thp' } = options;
  validateOneOf(fallback, 'options.fallback', FALLBACKS);
  const buffer = native.mapHuge(size, FALLBACKS.indexOf(fallback), mapFlags(options));
  allocations.set(buffer.buffer as ArrayBuffer, { loans: 0, pinToken: 0, freeRequested: false });
  return buffer;
}

function attachedArrayBuffer(view: ArrayBufferView | ArrayBuffer, name: string): ArrayBuffer {
  const arrayBuffer = view instanceof ArrayBuffer ? view : (validateView(view, name), view.buffer);
  if (!(arrayBuffer instanceof ArrayBuffer)) {
    throw new IobufError(`${name} is backed by a SharedArrayBuffer, which iobuf does not manage`, 'ERR_IOBUF_FOREIGN_BUFFER');
  }
  if (arrayBuffer.byteLength === 0 && native.addressOf(arrayBuffer) === 0) {
    if (isDetached(arrayBuffer)) throw new IobufError(`${name} was freed or detached`, 'ERR_IOBUF_DETACHED');
    throw invalidValue('a view with memory behind it', name, view, 'an empty ArrayBuffer (it has no memory, so no address)');
  }
  return arrayBuffer;
}

/**
 * Whether `arrayBuffer` was detached (freed, transferred), as opposed to
 * empty from the start: both read byteLength 0. Node 22+ says so itself
 * (`detached`); on Node 20 only a detached one refuses a new view.
 */
export function isDetached(arrayBuffer: ArrayBuffer): boolean {
  if (arrayBuffer.byteLength !== 0) return false;
  const detached = (arrayBuffer as { detached?: boolean }).detached;
  if (typeof detached === 'boolean') return detached;
  try {
    new Uint8Array(arrayBuffer);
    return false;
  } catch {
    return true;
  }
}

/** The address of the view's first byte. */
export function addressOf(view: ArrayBufferView | ArrayBuffer): bigint {
  if (!isNative) {
    throw new IobufError(
      `Not supported in portable mode: addressOf(), isAligned() and pageKind() (JavaScript cannot see addresses). Portable mode because ${portableReason}`,
      'ERR_IOBUF_UNSUPPORTED',
    );
  }
  const arrayBuffer = attachedArrayBuffer(view, 'view');
  const offset = ArrayBuffer.isView(view) ? view.byteOffset : 0;
  return BigInt(native.addressOf(arrayBuffer) + offset);
}

/** True when the view's first byte lies at a multiple of `alignment`. */
export function isAligned(view: ArrayBufferView | ArrayBuffer, alignment: number): boolean {
  validatePowerOfTwo(alignment, 'alignment', 1, MAX_ALIGNMENT);
  return addressOf(view) % BigInt(alignment) === 0n;
}

/**
 * The kind of page the kernel reports (in /proc/self/smaps) for the mapping
 * that holds the view's first byte. Transparent huge pages are assigned when
 * memory is first touched: write to it before asking.
 */
export function pageKind(view: ArrayBufferView | ArrayBuffer): PageKind {
  const kind = native.pageKind(Number(addressOf(view)));
  if (kind === 'unknown') {
    throw new IobufError('/proc/self/smaps does not describe this memory', 'ERR_IOBUF_UNSUPPORTED');
  }
  return kind;
}

/**
 * Gives the memory of an allocation back now. Takes any view of memory that
 * allocAligned or allocHuge returned; detaches its ArrayBuffer, so every view
 * of it reads as empty and nothing can reach the freed memory. Memory lent to
 * the kernel or libuv (a pending promise readv/writev, a queued socket write:
 * see lib/lending.ts) is freed when it comes back; until then it stays as it is.
 */
export function free(view: ArrayBufferView | ArrayBuffer): void {
  const arrayBuffer = view instanceof ArrayBuffer ? view : (validateView(view, 'view'), view.buffer as ArrayBuffer);
  const record = allocations.get(arrayBuffer);
  if (record === undefined) {
    throw new IobufError('free() takes memory from allocAligned() or allocHuge(); this view is not', 'ERR_IOBUF_FOREIGN_BUFFER');
  }
  if (record.freeRequested || native.addressOf(arrayBuffer) === 0) {
    throw new IobufError('This memory was freed already', 'ERR_IOBUF_DOUBLE_FREE');
  }
  record.freeRequested = true;
  if (record.loans === 0) native.free(arrayBuffer);
}
