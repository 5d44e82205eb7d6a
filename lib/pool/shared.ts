// The part of a BufferPool that every thread sharing it sees: one
// SharedArrayBuffer holding the budget, the close flag, the FIFO ticket queue
// of waiters, which threads are members, and one statistics region per member.
//
// The layout is native/pool.h's (drawn there); the native side validates a
// block before any thread joins it and keeps each thread's membership — its
// reserved pages, its tickets, its region — so that a thread that ends
// without running JavaScript (worker.terminate()) still gives them back.
// Everything that changes what a thread holds (reserve, unreserve, take and
// finish a ticket, join, leave) is therefore one native call; JS reads the
// words with Atomics and waits on EPOCH.
//
// Why tickets: waiters in any thread are served budget in the order they
// arrived. A waiter takes ticket NEXT_TICKET++; HEAD_TICKET is the oldest
// ticket not yet done. Only the head may take new budget while anyone waits,
// so a large request is never starved by a stream of small ones. Tickets are
// int32 and wrap; they are only ever compared for equality.
import { native } from '../binding';
import { codedError } from '../errors';

// Control words (Int32). const enums: tsc inlines them, so the hot path loads no module property.
// native/pool.h Word; test/pool.layout.test.ts checks they agree.
export const enum Word {
  MAGIC = 0,
  VERSION = 1,
  CLOSED = 2,            // 1 once close() began on the owning thread
  RESERVED_PAGES = 3,    // pages taken from the OS, all threads
  MAX_PAGES = 4,         // the budget, in pages
  EPOCH = 5,             // bumped (and notified) whenever waiters should look again
  NEXT_TICKET = 6,
  HEAD_TICKET = 7,
  THREADS = 8,           // threads that are members now
  HIGH_WATER_PAGES = 9,  // most pages ever reserved at once
  WAITERS = 10,          // tickets out, all threads
  CLASS_ROWS = 11,       // size classes + 1 (the oversize row)
}

// Per size class, in a thread's region (doubles).
export const enum Field {
  ACQUIRES = 0,
  RELEASES = 1,
  MISSES = 2,
  IN_USE = 3,
  IN_USE_BYTES = 4,     // kept for the oversize row only; other rows derive it
  OS_BYTES = 5,
  IDLE_BYTES = 6,       // kept for the oversize row only; other rows derive it
  LEAKS = 7,
  CLASS_FIELDS = 8,
}

// Per thread, after the class rows.
export const enum ThreadField {
  WAITS = 0,
  WAIT_TOTAL_MS = 1,
  WAIT_MAX_MS = 2,
  WAIT_SAMPLES = 3,          // how many of the samples below are filled
  WAIT_SAMPLE_NEXT = 4,      // next index to overwrite
  WAIT_SAMPLES_START = 5,
  WAIT_SAMPLE_COUNT = 512,   // the p99 is taken over the last 512 waits of each thread
}

export const MAGIC = 0x696f6266;  // "iobf"
export const LAYOUT_VERSION = 2;
const CONTROL_WORDS = 16;
export const RING = 1 << 14;
export const MAX_THREADS = 64;
/** The Int32 word holding region i's state (1 while a member holds it). */
const REGION_STATES = CONTROL_WORDS + RING;
const STATS_OFFSET = (CONTROL_WORDS + RING + MAX_THREADS) * 4;
const THREAD_FIELDS = ThreadField.WAIT_SAMPLES_START + ThreadField.WAIT_SAMPLE_COUNT;
/** Class rows a block may have: 1 to 64 size classes, plus the oversize row. */
export const MAX_CLASS_ROWS = 65;

export function regionLength(classRows: number): number {
  return classRows * Field.CLASS_FIELDS + THREAD_FIELDS;
}

function blockBytes(classRows: number): number {
  return STATS_OFFSET + MAX_THREADS * regionLength(classRows) * 8;
}

/** This module's layout as numbers, for the test that checks them against native/pool.h. */
export const layout = {
  magic: MAGIC, version: LAYOUT_VERSION, controlWords: CONTROL_WORDS, ring: RING, maxThreads: MAX_THREADS,
  regionStates: REGION_STATES, statsOffset: STATS_OFFSET, classFields: Field.CLASS_FIELDS, threadFields: THREAD_FIELDS,
  words: {
    closed: Word.CLOSED, reservedPages: Word.RESERVED_PAGES, maxPages: Word.MAX_PAGES, epoch: Word.EPOCH,
    nextTicket: Word.NEXT_TICKET, headTicket: Word.HEAD_TICKET, threads: Word.THREADS,
    highWaterPages: Word.HIGH_WATER_PAGES, waiters: Word.WAITERS, classRows: Word.CLASS_ROWS,
  },
};

function invalidHandle(why: string): TypeError {
  return codedError(TypeError, 'ERR_INVALID_ARG_VALUE', `Expected a BufferPool handle for handle but received one whose shared block ${why}`);
}

/**
 * One thread's view of the shared block, and its membership: made by
 * create() (the owning thread) or open() (an attaching thread), then join().
 */
export class SharedState {
  /** The whole block as Int32 words (control words, ring, region states). */
  readonly control: Int32Array;
  readonly classRows: number;
  readonly statsLength: number;
  /** This thread's member id and region, once joined. */
  private member = -1;
  regionIndex = -1;

  private constructor(readonly buffer: SharedArrayBuffer) {
    this.control = new Int32Array(buffer);
    this.classRows = this.control[Word.CLASS_ROWS];
    this.statsLength = regionLength(this.classRows);
  }

  static create(classRows: number, maxPages: number): SharedState {
    const buffer = new SharedArrayBuffer(blockBytes(classRows));
    const control = new Int32Array(buffer);
    control[Word.MAGIC] = MAGIC;
    control[Word.VERSION] = LAYOUT_VERSION;
    control[Word.MAX_PAGES] = maxPages;
    control[Word.CLASS_ROWS] = classRows;
    return new SharedState(buffer);
  }

  /**
   * The block of a handle another thread passed: checked before anything is
   * written to it (a forged or foreign block throws ERR_INVALID_ARG_VALUE and
   * touches no shared state). `classRows` is what the handle's options say.
   */
  static open(buffer: SharedArrayBuffer, classRows: number): SharedState {
    if (buffer.byteLength < CONTROL_WORDS * 4) throw invalidHandle('is too small');
    const control = new Int32Array(buffer, 0, CONTROL_WORDS);
    if (Atomics.load(control, Word.MAGIC) !== MAGIC) throw invalidHandle('is not a BufferPool\'s');
    const version = Atomics.load(control, Word.VERSION);
    if (version !== LAYOUT_VERSION) {
      throw invalidHandle(`has layout version ${version} (this iobuf uses ${LAYOUT_VERSION}); share pools only between threads that load the same iobuf`);
    }
    if (Atomics.load(control, Word.CLASS_ROWS) !== classRows || buffer.byteLength !== blockBytes(classRows)) {
      throw invalidHandle('does not match its options.sizeClasses');
    }
    return new SharedState(buffer);
  }

  /** Becomes a member (ERR_IOBUF_UNSUPPORTED when MAX_THREADS threads are members now). */
  join(): void {
    const [member, region] = native.poolJoin(this.control);
    this.member = member;
    this.regionIndex = region;
  }

  /** Gives back whatever this thread still holds (pages, tickets, its region). */
  leave(): void {
    if (this.member < 0) return;
    native.poolLeave(this.member);
    this.member = -1;
    this.notify();
  }

  /** The statistics region of thread slot `index`. */
  region(index: number): Float64Array {
    return new Float64Array(this.buffer, STATS_OFFSET + index * this.statsLength * 8, this.statsLength);
  }

  /** Whether region `index` belongs to a member now. */
  regionTaken(index: number): boolean {
    return Atomics.load(this.control, REGION_STATES + index) !== 0;
  }

  get closed(): boolean {
    return this.control[Word.CLOSED] !== 0;
  }

  /** Takes `pages` from the budget if they fit. */
  reserve(pages: number): boolean {
    return native.poolReserve(this.member, pages);
  }

  /** Gives `pages` back to the budget and wakes every waiter to look again. */
  unreserve(pages: number): void {
    native.poolUnreserve(this.member, pages);
    this.notify();
  }

  /** Bumps the epoch and wakes everyone waiting on it. */
  wake(): void {
    Atomics.add(this.control, Word.EPOCH, 1);
    this.notify();
  }

  /** Wakes everyone waiting on the epoch (after a native call bumped it). */
  notify(): void {
    Atomics.notify(this.control, Word.EPOCH);
  }

  /** A place in the FIFO queue, or null when RING waiters already wait. */
  takeTicket(): number | null {
    const ticket = native.poolTakeTicket(this.member);
    if (ticket !== null) this.notify();  // threads holding idle slabs look again (watchIdle)
    return ticket;
  }

  /** Ticket `ticket` was served or gave up; the head moves past every done ticket. */
  finishTicket(ticket: number): void {
    native.poolFinishTicket(this.member, ticket);
    this.notify();
  }

  /** Whether a request holding `ticket` (null: not waiting) may take new budget now. */
  mayTakeBudget(ticket: number | null): boolean {
    const head = Atomics.load(this.control, Word.HEAD_TICKET);
    return ticket === null ? head === Atomics.load(this.control, Word.NEXT_TICKET) : head === ticket;
  }

  /** Sum of a counter field (acquires, releases, waits, …) over every region: a thread that left still counts. */
  sum(field: number, row: number): number {
    let total = 0;
    for (let index = 0; index < MAX_THREADS; index++) total += this.regionView(index)[row * Field.CLASS_FIELDS + field];
    return total;
  }

  /** Sum of a field that says what a thread holds now (in use, idle, mapped) over the members. */
  sumHeld(field: number, row: number): number {
    let total = 0;
    for (let index = 0; index < MAX_THREADS; index++) {
      if (this.regionTaken(index)) total += this.regionView(index)[row * Field.CLASS_FIELDS + field];
    }
    return total;
  }

  private regionViews: Float64Array[] = [];

  private regionView(index: number): Float64Array {
    return this.regionViews[index] ??= this.region(index);
  }
}
