// What the native addon exports (native/addon.cc), as one TypeScript interface:
// lib/binding.ts loads the addon as this, and lib/portable.ts implements it in
// JavaScript. A type only: this file imports nothing but types.
import type { IobufError } from './errors';

export interface NativeBinding {
  setErrorClass(errorClass: typeof IobufError): void;
  /** The name the addon gives errno `error` in a `code` ("ENOMEM"); undefined when Linux defines none. */
  errnoName(error: number): string | undefined;
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
  /** Detach, and unmap when the memory is a native mapping (at the last repay() if it is lent). */
  free(arrayBuffer: ArrayBuffer): void;
  /** Pins the native allocation holding the ArrayBuffer's memory; a token for repay(), or 0 for non-native memory. */
  lend(arrayBuffer: ArrayBuffer): number;
  /** Ends a lend(): the last one of a freed allocation unmaps it. */
  repay(token: number): void;
  pageKind(address: number): 'hugetlb' | 'thp' | 'normal' | 'unknown';
  /**
   * memmove of source[sourceStart, sourceEnd) to target[targetStart…), clamped
   * to both views; returns the bytes copied. Buffer#copy's semantics without
   * the view Node 20 allocates per call. Offsets: integers >= 0.
   */
  copyBytes(source: Uint8Array, target: Uint8Array, targetStart: number, sourceStart: number, sourceEnd: number): number;

  // pool (native/pool.cc; the shared block's layout is native/pool.h)
  /** A Buffer with an ArrayBuffer of its own over slab bytes [offset, offset + length) (checked natively). */
  viewOf(slab: ArrayBuffer, offset: number, length: number): Buffer;
  detach(arrayBuffer: ArrayBuffer): void;
  /** Joins the pool whose shared block `block` covers (an Int32Array over the whole SharedArrayBuffer): [memberId, region]. */
  poolJoin(block: Int32Array): [number, number];
  /** Gives back what the member holds (pages, tickets, region) and ends the membership. */
  poolLeave(member: number): void;
  /** Takes pages from the budget if they fit. */
  poolReserve(member: number, pages: number): boolean;
  /** Gives pages back (bumps the epoch; the caller notifies). */
  poolUnreserve(member: number, pages: number): void;
  /** A ticket in the FIFO queue, or null when the ring is full (bumps the epoch). */
  poolTakeTicket(member: number): number | null;
  /** The ticket is done (bumps the epoch; the caller notifies). */
  poolFinishTicket(member: number, ticket: number): void;
  /** Runs on this thread when another thread left a pool without JavaScript (worker.terminate()). */
  poolSetWakeHandler(handler: () => void): void;
  /** native/pool.h's layout, for the test that checks lib/pool/shared.ts against it. */
  readonly poolLayout: Record<string, unknown>;

  // iovec (native/iovec.cc)
  /** IOV_MAX: the most entries one readv/writev takes. */
  readonly iovMax: number;
  /** sizeof(struct iovec): 16 on 64-bit platforms. */
  readonly iovecEntryBytes: number;
  /** native/iovec.h's numbers (entry size, bounds header, capacity, ops), for the test that checks lib/iovec/entries.ts against them. */
  readonly iovecLayout: Record<string, unknown>;
  /** [entries, private bounds (also the array's handle), address of entries] for `capacity` entries. */
  iovecCreate(capacity: number): [ArrayBuffer, ArrayBuffer, number];
  /** Detaches both buffers and frees the native blocks now (no-op when closed already). */
  iovecClose(bounds: ArrayBuffer, entries: ArrayBuffer): void;
  /** Checks entries [0, count) against their bounds, then one transfer (op: native/iovec.h IoVecOp). */
  iovecTransfer(bounds: ArrayBuffer, op: number, fd: number, count: number, position: number): number;
  /**
   * The same, checked and snapshotted now, run on the libuv thread pool; `done` is called
   * once on completion (never, if this thread is torn down first). Entries in
   * non-native memory go through bounce blocks; `views` (entry i's view at i) lets a
   * read copy out only into views still attached where they were.
   */
  iovecTransferAsync(
    bounds: ArrayBuffer,
    op: number,
    fd: number,
    count: number,
    position: number,
    views: readonly (ArrayBufferView | undefined)[],
    done: (error: Error | null, bytes: number) => void,
  ): void;
  /** The address of a TypedArray's or DataView's first byte (0 when detached). */
  viewAddress(view: ArrayBufferView): number;
  /** madvise(MADV_DONTFORK) over the whole (page-aligned) ArrayBuffer. */
  adviseDontFork(arrayBuffer: ArrayBuffer): void;

  // uring (native/uring.cc; the control block and flags: native/uring.h)
  /** null when a ring can be made here, else [code, errno (negative; 0 for none), reason]. */
  uringProbe(): null | [string, number, string];
  /**
   * A ring of `entries` SQEs with a sparse fixed-buffer table of `tableSize`
   * slots (0: none); `dispatcher(count)` is called with completions in the
   * control block. → [control block (the handle), SQ entries, completion capacity].
   */
  uringCreate(entries: number, tableSize: number, dispatcher: (count: number) => void): [ArrayBuffer, number, number];
  /** A read/write of the whole view at position (-1: the file position). → (slot << 3) | flags. */
  uringTransfer(handle: ArrayBuffer, op: number, fd: number, view: ArrayBufferView, position: number): number;
  /** readv/writev over an IoVecArray's first `count` entries (its bounds buffer). → (slot << 3) | flags. */
  uringVectored(handle: ArrayBuffer, op: number, fd: number, bounds: ArrayBuffer, count: number, position: number): number;
  uringFsync(handle: ArrayBuffer, fd: number, datasync: boolean): number;
  /** One io_uring_enter for every SQE published since the last. */
  uringSubmit(handle: ArrayBuffer): void;
  /** → completions written now (a queued operation dropped), or 0 (an ASYNC_CANCEL is prepared). */
  uringCancel(handle: ArrayBuffer, slot: number): number;
  /** Drops queued operations (→ completions written; call until 0), cancels submitted ones. */
  uringCancelAll(handle: ArrayBuffer): number;
  /** Copies a completed bounced read out (a view, or for readv whether its views are intact); → bytes, or -1. */
  uringCopyOut(handle: ArrayBuffer, slot: number, view: ArrayBufferView | boolean): number;
  /**
   * Registers iovec entries [first, first + count) of `entries` at the same table slots (those that fit the table).
   * → [how many were registered, the error that stopped the kernel (RLIMIT_MEMLOCK: ENOMEM) or null].
   */
  uringRegister(handle: ArrayBuffer, entries: ArrayBuffer, first: number, count: number): [number, IobufError | null];
  uringClose(handle: ArrayBuffer): void;
  /** An IobufError for errno (positive) in syscall. */
  uringError(errno: number, syscall: string): IobufError;
}
