// The portable binding: the same interface as the native addon (lib/native-api.ts
// NativeBinding), in JavaScript, for where the addon is not loaded — another
// OS, a Linux where loading it failed, or IOBUF_PORTABLE=1. lib/binding.ts
// chooses between the two; the parts call whichever it exports.
//
// Each function either does the same in JavaScript or throws IobufError
// ERR_IOBUF_UNSUPPORTED with a message naming what is missing:
// - memory: ordinary ArrayBuffers (V8's, zeroed). No mmap, so no
//   mlock/madvise, no huge pages (allocHuge's fallback 'normal' degrades to
//   ordinary memory), no page kinds. free() detaches by transferring.
// - pool: the membership calls of native/pool.cc over the same shared block
//   (native/pool.h), with Atomics; strict-mode views get an ArrayBuffer per
//   slot (see "Strict-mode views").
// - iovec and io_uring: unsupported (they are system calls).
//
// Addresses. JavaScript cannot see where V8 put an ArrayBuffer. The parts
// still use addressOf() internally — to tell a detached ArrayBuffer from an
// attached one (0 = detached) and to order a pool's free slots — so this
// binding gives each attached ArrayBuffer a fictitious address: a multiple of
// 2^30, distinct per ArrayBuffer (until 2^22 of them were numbered, then it
// wraps: order only, never identity, depends on it). lib/memory.ts refuses to
// show these to users (addressOf, isAligned and pageKind throw in portable mode).
import { getSystemErrorName } from 'node:util';
import { isMainThread } from 'node:worker_threads';
import type { NativeBinding } from './native-api';
import { IobufError, codedError } from './errors';
import { IOVEC_ENTRY_BYTES } from './iovec/entries';

/** What portable mode reports for the sizes the native addon reads from the system. */
export const PORTABLE_PAGE_SIZE = 4096;
export const PORTABLE_HUGE_PAGE_SIZE = 2 * 1024 * 1024;
export const PORTABLE_CACHE_LINE_SIZE = 64;

const ADDRESS_STEP = 2 ** 30;
const ADDRESS_SLOTS = 2 ** 22; // ADDRESS_STEP * ADDRESS_SLOTS = 2^52 < Number.MAX_SAFE_INTEGER

// native/pool.h, mirrored. lib/pool/shared.ts mirrors it too, but cannot be
// imported here: it imports lib/binding.ts, which imports this file.
// test/native.constants.test.ts checks both against the addon and native/pool.h.
const MAGIC = 0x696f6266;
const VERSION = 2;
const CONTROL_WORDS = 16;
const RING = 1 << 14;
const MAX_THREADS = 64;
const REGION_STATES = CONTROL_WORDS + RING;
const CLASS_FIELDS = 8;
const THREAD_FIELDS = 5 + 512;
export const MIN_CLASS_ROWS = 2;
export const MAX_CLASS_ROWS = 65;
const STATS_OFFSET = (CONTROL_WORDS + RING + MAX_THREADS) * 4;
const W = {
  magic: 0,
  version: 1,
  closed: 2,
  reservedPages: 3,
  maxPages: 4,
  epoch: 5,
  nextTicket: 6,
  headTicket: 7,
  threads: 8,
  highWaterPages: 9,
  waiters: 10,
  classRows: 11,
} as const;
const blockBytes = (classRows: number) => STATS_OFFSET + MAX_THREADS * (classRows * CLASS_FIELDS + THREAD_FIELDS) * 8;

/** One thread's membership in one shared pool (native/pool.cc PoolMember). */
interface PoolMember {
  words: Int32Array;
  region: number;
  pages: number;
  tickets: number[];
}

/** Bits of native/memory.h MapFlags, by the option that sets them. */
const MAP_FLAG_OPTIONS: readonly [number, string][] = [
  [1, 'lock'],
  [2, 'dontFork'],
  [4, 'dontDump'],
];

/**
 * The portable binding. `why` says why the native addon is not in use
 * ("IOBUF_PORTABLE=1 is set", or its load error): every ERR_IOBUF_UNSUPPORTED
 * message ends with it.
 */
export function portableBinding(why: string): NativeBinding {
  const unsupported = (what: string, reason: string): IobufError =>
    new IobufError(`Not supported in portable mode: ${what} (${reason}). Portable mode because ${why}`, 'ERR_IOBUF_UNSUPPORTED');
  const thrower = (what: string, reason: string) => (): never => {
    throw unsupported(what, reason);
  };
  const SYSCALLS = 'it makes system calls, which need the native addon';

  let errorClass: typeof IobufError = IobufError;
  let maxBufferLength = Number.MAX_SAFE_INTEGER;

  // -------------------------------------------------------------------------
  // Memory
  // -------------------------------------------------------------------------

  const addresses = new WeakMap<ArrayBuffer, number>();
  let nextAddressSlot = 1;
  /** The fictitious address (see the head of this file); 0 when detached or empty, as natively. */
  function addressOf(arrayBuffer: ArrayBuffer): number {
    if (arrayBuffer.byteLength === 0) return 0;
    let address = addresses.get(arrayBuffer);
    if (address === undefined) {
      address = nextAddressSlot * ADDRESS_STEP;
      nextAddressSlot = (nextAddressSlot % (ADDRESS_SLOTS - 1)) + 1;
      addresses.set(arrayBuffer, address);
    }
    return address;
  }

  /**
   * Moves the memory to a new ArrayBuffer (returned): every view of
   * `arrayBuffer` reads as empty. ArrayBuffer#transfer where the runtime has
   * it (Node 22 and later), else a structuredClone that transfers (Node 20).
   */
  const transfer: (arrayBuffer: ArrayBuffer) => ArrayBuffer =
    typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === 'function'
      ? (arrayBuffer) => (arrayBuffer as ArrayBuffer & { transfer(): ArrayBuffer }).transfer()
      : (arrayBuffer) => structuredClone(arrayBuffer, { transfer: [arrayBuffer] });

  function checkLength(length: number, name: string): void {
    if (length > maxBufferLength) {
      throw codedError(
        RangeError,
        'ERR_OUT_OF_RANGE',
        `Expected at most ${maxBufferLength} bytes (the largest Buffer) for ${name} but received ${length}`,
      );
    }
  }

  /** A zeroed Buffer of `size` bytes over an ArrayBuffer of its own; ENOMEM when V8 cannot make it. */
  function ordinaryMemory(size: number, flags: number): Buffer {
    for (const [bit, option] of MAP_FLAG_OPTIONS) {
      if ((flags & bit) !== 0) throw unsupported(`options.${option}`, 'mlock and madvise need the native addon');
    }
    checkLength(size, 'size');
    let arrayBuffer: ArrayBuffer;
    try {
      arrayBuffer = new ArrayBuffer(size);
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
      const failure = new errorClass(`Cannot allocate ${size} bytes: the JavaScript engine refused (${error.message})`, 'ENOMEM');
      failure.errno = -12;
      throw failure;
    }
    return Buffer.from(arrayBuffer, 0, size);
  }

  function copyBytes(source: Uint8Array, target: Uint8Array, targetStart: number, sourceStart: number, sourceEnd: number): number {
    const end = Math.min(sourceEnd, source.length);
    if (sourceStart >= end || targetStart >= target.length) return 0;
    const count = Math.min(end - sourceStart, target.length - targetStart);
    // TypedArray#set copies as memmove does when both views share memory.
    target.set(source.subarray(sourceStart, sourceStart + count), targetStart);
    return count;
  }

  // -------------------------------------------------------------------------
  // Strict-mode views. Natively, viewOf makes an ArrayBuffer of its own over
  // slab bytes; JavaScript cannot put two ArrayBuffers over the same memory.
  // So in portable mode each slot's bytes live in an ArrayBuffer of their own
  // (kept by slab and offset), handed out whole; detach() of a handed-out one
  // transfers its memory to a fresh ArrayBuffer that the next viewOf of the
  // slot hands out. The slab's own bytes go unused in strict mode.
  // -------------------------------------------------------------------------

  const slotMemory = new WeakMap<ArrayBuffer, Map<number, ArrayBuffer>>();
  const homeOfView = new WeakMap<ArrayBuffer, { slab: ArrayBuffer; offset: number }>();

  function viewOf(slab: ArrayBuffer, offset: number, length: number): Buffer {
    if (slab.byteLength === 0) throw new errorClass('The slab was detached', 'ERR_IOBUF_DETACHED');
    checkLength(length, 'length');
    if (!(offset >= 0 && length >= 0 && offset + length <= slab.byteLength)) {
      throw codedError(
        RangeError,
        'ERR_OUT_OF_RANGE',
        `Expected a view inside the slab's ${slab.byteLength} bytes for offset + length but received ${offset + length}`,
      );
    }
    let slots = slotMemory.get(slab);
    if (slots === undefined) slotMemory.set(slab, (slots = new Map()));
    let memory = slots.get(offset);
    slots.delete(offset);
    if (memory === undefined || memory.byteLength !== length) {
      const sized = new ArrayBuffer(length);
      if (memory !== undefined) new Uint8Array(sized).set(new Uint8Array(memory, 0, Math.min(length, memory.byteLength)));
      memory = sized;
    }
    homeOfView.set(memory, { slab, offset });
    return Buffer.from(memory, 0, length);
  }

  function detach(arrayBuffer: ArrayBuffer): void {
    if (arrayBuffer.byteLength === 0) return;
    const moved = transfer(arrayBuffer);
    const home = homeOfView.get(arrayBuffer);
    if (home === undefined) return;
    homeOfView.delete(arrayBuffer);
    const slots = slotMemory.get(home.slab);
    if (slots !== undefined && home.slab.byteLength !== 0) slots.set(home.offset, moved);
  }

  // -------------------------------------------------------------------------
  // Pool membership: native/pool.cc's calls over the same words. The native
  // side keeps memberships out of JavaScript so that an environment cleanup
  // hook can give back what a terminate()d worker held; JavaScript has no such
  // hook. Here a worker gives everything back from process 'exit' (a worker
  // that returns, calls process.exit or throws); one that is terminate()d
  // keeps its pages, tickets and region for the rest of the process.
  // -------------------------------------------------------------------------

  const members: (PoolMember | null)[] = [];
  let exitHook = false;

  const plus = (value: number, delta: number) => (value + delta) | 0;
  const ringWord = (ticket: number) => CONTROL_WORDS + (ticket & (RING - 1));

  function invalidBlock(why: string): TypeError {
    return codedError(
      TypeError,
      'ERR_INVALID_ARG_VALUE',
      `Expected a BufferPool handle for handle but received one whose shared block ${why}`,
    );
  }

  function checkedBlock(block: Int32Array): Int32Array {
    if (!(block instanceof Int32Array) || !(block.buffer instanceof SharedArrayBuffer))
      throw invalidBlock('is not an Int32Array over a SharedArrayBuffer');
    if (block.byteOffset !== 0 || block.length < CONTROL_WORDS) throw invalidBlock('is too small');
    if (Atomics.load(block, W.magic) !== MAGIC) throw invalidBlock("is not a BufferPool's");
    const version = Atomics.load(block, W.version);
    if (version !== VERSION) throw invalidBlock(`has layout version ${version} (this iobuf uses ${VERSION})`);
    const rows = Atomics.load(block, W.classRows);
    if (rows < MIN_CLASS_ROWS || rows > MAX_CLASS_ROWS || block.byteLength !== blockBytes(rows)) {
      throw invalidBlock('has the wrong size for its class rows');
    }
    return block;
  }

  function memberOf(id: number): PoolMember {
    const member = members[id];
    if (member === undefined || member === null) throw new errorClass('This thread is not a member of that pool', 'ERR_IOBUF_POOL_CLOSED');
    return member;
  }

  function finishTicket(words: Int32Array, ticket: number): void {
    Atomics.store(words, ringWord(ticket), plus(ticket, 1));
    Atomics.sub(words, W.waiters, 1);
    for (;;) {
      const head = Atomics.load(words, W.headTicket);
      if (head === Atomics.load(words, W.nextTicket)) break;
      if (Atomics.load(words, ringWord(head)) !== plus(head, 1)) break;
      Atomics.compareExchange(words, W.headTicket, head, plus(head, 1));
    }
  }

  function depart(member: PoolMember): void {
    const words = member.words;
    if (member.pages !== 0) Atomics.sub(words, W.reservedPages, member.pages);
    member.pages = 0;
    for (const ticket of member.tickets) finishTicket(words, ticket);
    member.tickets.length = 0;
    Atomics.sub(words, W.threads, 1);
    Atomics.store(words, REGION_STATES + member.region, 0);
    Atomics.add(words, W.epoch, 1);
  }

  /** A worker ending with JavaScript still running gives back every membership it has. */
  function departAll(): void {
    for (let id = 0; id < members.length; id++) {
      const member = members[id];
      if (member === null) continue;
      members[id] = null;
      depart(member);
      Atomics.notify(member.words, W.epoch);
    }
  }

  const pool = {
    poolJoin(block: Int32Array): [number, number] {
      const words = checkedBlock(block);
      let region = -1;
      for (let i = 0; i < MAX_THREADS && region < 0; i++) {
        if (Atomics.compareExchange(words, REGION_STATES + i, 0, 1) === 0) region = i;
      }
      if (region < 0) throw new errorClass(`A pool is shared by at most ${MAX_THREADS} threads at once`, 'ERR_IOBUF_UNSUPPORTED');
      Atomics.add(words, W.threads, 1);
      let id = members.indexOf(null);
      if (id < 0) id = members.length;
      members[id] = { words, region, pages: 0, tickets: [] };
      if (!isMainThread && !exitHook) {
        exitHook = true;
        process.on('exit', departAll);
      }
      return [id, region];
    },
    poolLeave(id: number): void {
      const member = memberOf(id);
      members[id] = null;
      depart(member);
    },
    poolReserve(id: number, pages: number): boolean {
      const member = memberOf(id);
      const words = member.words;
      for (;;) {
        const reserved = Atomics.load(words, W.reservedPages);
        const total = reserved + pages;
        if (pages < 0 || total > Atomics.load(words, W.maxPages)) return false;
        if (Atomics.compareExchange(words, W.reservedPages, reserved, total) !== reserved) continue;
        member.pages += pages;
        let high = Atomics.load(words, W.highWaterPages);
        while (total > high) {
          const seen = Atomics.compareExchange(words, W.highWaterPages, high, total);
          if (seen === high) break;
          high = seen;
        }
        return true;
      }
    },
    poolUnreserve(id: number, pages: number): void {
      const member = memberOf(id);
      if (pages < 0 || pages > member.pages) {
        throw new errorClass(`poolUnreserve: ${pages} pages, but this thread holds ${member.pages}`, 'ERR_IOBUF_INTERNAL');
      }
      member.pages -= pages;
      Atomics.sub(member.words, W.reservedPages, pages);
      Atomics.add(member.words, W.epoch, 1);
    },
    poolTakeTicket(id: number): number | null {
      const member = memberOf(id);
      const words = member.words;
      for (;;) {
        const next = Atomics.load(words, W.nextTicket);
        if ((next - Atomics.load(words, W.headTicket)) >>> 0 >= RING) return null;
        if (Atomics.compareExchange(words, W.nextTicket, next, plus(next, 1)) !== next) continue;
        member.tickets.push(next);
        Atomics.add(words, W.waiters, 1);
        Atomics.add(words, W.epoch, 1);
        return next;
      }
    },
    poolFinishTicket(id: number, ticket: number): void {
      const member = memberOf(id);
      const held = member.tickets.indexOf(ticket);
      if (held < 0) throw new errorClass('poolFinishTicket: this thread does not hold that ticket', 'ERR_IOBUF_INTERNAL');
      member.tickets.splice(held, 1);
      finishTicket(member.words, ticket);
      Atomics.add(member.words, W.epoch, 1);
    },
    // Natively, a thread that departs without JavaScript wakes the others
    // through this handler; here the departing thread notifies them itself.
    poolSetWakeHandler(): void {},
    poolLayout: {
      magic: MAGIC,
      version: VERSION,
      controlWords: CONTROL_WORDS,
      ring: RING,
      maxThreads: MAX_THREADS,
      regionStates: REGION_STATES,
      statsOffset: STATS_OFFSET,
      classFields: CLASS_FIELDS,
      threadFields: THREAD_FIELDS,
      words: {
        closed: W.closed,
        reservedPages: W.reservedPages,
        maxPages: W.maxPages,
        epoch: W.epoch,
        nextTicket: W.nextTicket,
        headTicket: W.headTicket,
        threads: W.threads,
        highWaterPages: W.highWaterPages,
        waiters: W.waiters,
        classRows: W.classRows,
      },
    } as Record<string, unknown>,
  };

  // -------------------------------------------------------------------------
  // The binding
  // -------------------------------------------------------------------------

  const IOVEC = 'readv/writev over native iovec arrays need the native addon';
  const URING = 'io_uring is a Linux kernel interface, reached through the native addon';
  return {
    setErrorClass(errorClassIn: typeof IobufError): void {
      errorClass = errorClassIn;
    },
    errnoName(error: number): string | undefined {
      try {
        const name = getSystemErrorName(-Math.abs(error));
        return name.startsWith('Unknown') ? undefined : name;
      } catch {
        return undefined;
      }
    },
    setMaxBufferLength(length: number): void {
      maxBufferLength = length;
    },

    pageSize: PORTABLE_PAGE_SIZE,
    hugePageSize: PORTABLE_HUGE_PAGE_SIZE,
    cacheLineSize: PORTABLE_CACHE_LINE_SIZE,
    mapAligned: (size: number, _alignment: number, flags: number) => ordinaryMemory(size, flags),
    mapHuge(size: number, fallback: number, flags: number): Buffer {
      // fallback 2 ('normal'): the caller accepts normal pages, which is all JavaScript has.
      if (fallback === 2) return ordinaryMemory(size, flags);
      throw unsupported(
        'Huge pages',
        "hugetlbfs and transparent huge pages need the native addon; pass { fallback: 'normal' } to get ordinary memory instead",
      );
    },
    addressOf,
    free(arrayBuffer: ArrayBuffer): void {
      if (arrayBuffer.byteLength !== 0) transfer(arrayBuffer);
    },
    // JavaScript memory is V8's, which keeps it alive for whoever holds a view: nothing to pin.
    lend: () => 0,
    repay: () => {},
    pageKind: thrower('pageKind()', 'page kinds are read from /proc/self/smaps by the native addon'),
    copyBytes,

    viewOf,
    detach,
    ...pool,

    iovMax: 1024,
    iovecEntryBytes: IOVEC_ENTRY_BYTES,
    // No iovec arrays in portable mode; test/native.constants.test.ts checks the addon's layout.
    iovecLayout: {},
    iovecCreate: thrower('IoVecArray', IOVEC),
    iovecClose: () => {},
    iovecTransfer: thrower('Vectored I/O', IOVEC),
    iovecTransferAsync: thrower('Vectored I/O', IOVEC),
    viewAddress: thrower('The address of a view', 'JavaScript cannot see addresses'),
    adviseDontFork: thrower('madvise(MADV_DONTFORK)', SYSCALLS),

    uringProbe: () => ['ERR_IOBUF_UNSUPPORTED', 0, unsupported('io_uring', URING).message],
    uringCreate: thrower('IoRing', URING),
    uringTransfer: thrower('IoRing', URING),
    uringVectored: thrower('IoRing', URING),
    uringFsync: thrower('IoRing', URING),
    uringSubmit: thrower('IoRing', URING),
    uringCancel: thrower('IoRing', URING),
    uringCancelAll: thrower('IoRing', URING),
    uringCopyOut: thrower('IoRing', URING),
    uringRegister: thrower('IoRing', URING),
    uringClose: () => {},
    uringError(errno: number, syscall: string): IobufError {
      const error = new errorClass(`${syscall} failed`, this.errnoName(errno) ?? `E${errno}`);
      error.errno = -errno;
      error.syscall = syscall;
      return error;
    },
  };
}
