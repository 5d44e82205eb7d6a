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
// This module owns the layout: every read and write of the regions (publish,
// recordWait, stats) goes through SharedState. Only the pool's hot path reads
// two control words itself (CLOSED, WAITERS: a typed-array load, no call).
//
// Why tickets: waiters in any thread are served budget in the order they
// arrived. A waiter takes ticket NEXT_TICKET++; HEAD_TICKET is the oldest
// ticket not yet done. Only the head may take new budget while anyone waits,
// so a large request is never starved by a stream of small ones. Tickets are
// int32 and wrap; they are only ever compared for equality.
import { native } from '../binding';
import { IobufError, invalidValue } from '../errors';
import { pageSize } from '../memory';

// Control words (Int32). const enums: tsc inlines them, so the hot path loads no module property.
// native/pool.h Word; test/native.constants.test.ts checks they agree.
export const enum Word {
  MAGIC = 0,
  VERSION = 1,
  CLOSED = 2, // 1 once close() began on the owning thread
  RESERVED_PAGES = 3, // pages taken from the OS, all threads
  MAX_PAGES = 4, // the budget, in pages
  EPOCH = 5, // bumped (and notified) whenever waiters should look again
  NEXT_TICKET = 6,
  HEAD_TICKET = 7,
  THREADS = 8, // threads that are members now
  HIGH_WATER_PAGES = 9, // most pages ever reserved at once
  WAITERS = 10, // tickets out, all threads
  CLASS_ROWS = 11, // size classes + 1 (the oversize row)
}

// Per size class, in a thread's region (doubles).
export const enum Field {
  ACQUIRES = 0,
  RELEASES = 1,
  MISSES = 2,
  IN_USE = 3,
  IN_USE_BYTES = 4, // kept for the oversize row only; other rows derive it
  OS_BYTES = 5,
  IDLE_BYTES = 6, // kept for the oversize row only; other rows derive it
  LEAKS = 7,
  CLASS_FIELDS = 8,
}

// Per thread, after the class rows.
export const enum ThreadField {
  WAITS = 0,
  WAIT_TOTAL_MS = 1,
  WAIT_MAX_MS = 2,
  WAIT_SAMPLES = 3, // how many of the samples below are filled
  WAIT_SAMPLE_NEXT = 4, // next index to overwrite
  WAIT_SAMPLES_START = 5,
  WAIT_SAMPLE_COUNT = 512, // the p99 is taken over the last 512 waits of each thread
}

export const MAGIC = 0x696f6266; // "iobf"
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
  magic: MAGIC,
  version: LAYOUT_VERSION,
  controlWords: CONTROL_WORDS,
  ring: RING,
  maxThreads: MAX_THREADS,
  regionStates: REGION_STATES,
  statsOffset: STATS_OFFSET,
  classFields: Field.CLASS_FIELDS,
  threadFields: THREAD_FIELDS,
  words: {
    closed: Word.CLOSED,
    reservedPages: Word.RESERVED_PAGES,
    maxPages: Word.MAX_PAGES,
    epoch: Word.EPOCH,
    nextTicket: Word.NEXT_TICKET,
    headTicket: Word.HEAD_TICKET,
    threads: Word.THREADS,
    highWaterPages: Word.HIGH_WATER_PAGES,
    waiters: Word.WAITERS,
    classRows: Word.CLASS_ROWS,
  },
};

/** An acquire, release or attach of a pool that was closed (CLOSED is set, or this thread closed it). */
export function closedError(): IobufError {
  return new IobufError('The pool is closed', 'ERR_IOBUF_POOL_CLOSED');
}

function invalidHandle(why: string): TypeError {
  return invalidValue('a BufferPool handle', 'handle', undefined, `one whose shared block ${why}`);
}

/** What publish() writes of one size class and adoptCounters() reads back (SizeClass, size-classes.ts). */
export interface ClassCounters {
  readonly row: number;
  acquires: number;
  releases: number;
  misses: number;
  leaks: number;
  readonly inUse: number;
  readonly inUseBytes: number;
  readonly osBytes: number;
  readonly idleBytes: number;
}

export interface SizeClassStats {
  /** Slot size in bytes; `Infinity` for the row of dedicated (oversize) allocations. */
  size: number;
  acquires: number;
  releases: number;
  /** Acquires served from a free list. */
  recycles: number;
  /** Acquires that had to take new memory from the OS. */
  misses: number;
  /** recycles / acquires (1 when there were none). */
  recycleRate: number;
  inUse: number;
  /** Bytes of the slots handed out (class size × inUse). */
  inUseBytes: number;
  /** Bytes mapped but not handed out. */
  idleBytes: number;
  /** Bytes of slabs mapped for this class. */
  osBytes: number;
  leaks: number;
}

export interface PoolStats extends Omit<SizeClassStats, 'size'> {
  maxMemory: number;
  /** Most bytes ever taken from the OS at once. */
  highWaterBytes: number;
  waiters: number;
  waits: number;
  waitTimeTotalMs: number;
  waitTimeMaxMs: number;
  waitTimeP99Ms: number;
  threads: number;
  classes: SizeClassStats[];
}

/** Told when another thread left a pool without JavaScript (native/pool.cc woke this thread). */
export interface PoolMember {
  peerDeparted(): void;
}

/** The members of pools in this thread that have not left: woken when another thread departs. */
const members = new Map<SharedState, PoolMember>();

// Runs on this thread when another thread left a pool without JavaScript.
native.poolSetWakeHandler(() => {
  for (const member of [...members.values()]) member.peerDeparted();
});

/**
 * One thread's view of the shared block, and its membership: made by
 * create() (the owning thread) or open() (an attaching thread), then join().
 */
export class SharedState {
  /** The whole block as Int32 words (control words, ring, region states). */
  readonly control: Int32Array;
  readonly classRows: number;
  readonly statsLength: number;
  /** This thread's member id and statistics region, once joined. */
  private member = -1;
  private own: Float64Array | null = null;
  private regionViews: Float64Array[] = [];

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
    if (Atomics.load(control, Word.MAGIC) !== MAGIC) throw invalidHandle("is not a BufferPool's");
    const version = Atomics.load(control, Word.VERSION);
    if (version !== LAYOUT_VERSION) {
      throw invalidHandle(
        `has layout version ${version} (this iobuf uses ${LAYOUT_VERSION}); share pools only between threads that load the same iobuf`,
      );
    }
    if (Atomics.load(control, Word.CLASS_ROWS) !== classRows || buffer.byteLength !== blockBytes(classRows)) {
      throw invalidHandle('does not match its options.sizeClasses');
    }
    return new SharedState(buffer);
  }

  /**
   * Becomes a member (ERR_IOBUF_UNSUPPORTED when MAX_THREADS threads are
   * members now); `member` is told whenever another thread departs.
   */
  join(member: PoolMember): void {
    const [id, region] = native.poolJoin(this.control);
    this.member = id;
    this.own = this.regionView(region);
    members.set(this, member);
  }

  /** Gives back whatever this thread still holds (pages, tickets, its region). */
  leave(): void {
    if (this.member < 0) return;
    native.poolLeave(this.member);
    this.member = -1;
    // The region may be another thread's from now on: nothing more is written to it from here.
    this.own = null;
    this.notify();
    members.delete(this);
  }

  get closed(): boolean {
    return this.control[Word.CLOSED] !== 0;
  }

  /** Closes the pool for every thread (the owning thread's close()). */
  markClosed(): void {
    Atomics.store(this.control, Word.CLOSED, 1);
  }

  /** Whether waiters in any thread hold tickets. */
  get waiting(): boolean {
    return this.control[Word.WAITERS] !== 0;
  }

  /** Threads that are members now. */
  get threads(): number {
    return Atomics.load(this.control, Word.THREADS);
  }

  /** The budget in bytes. */
  get maxMemory(): number {
    return Atomics.load(this.control, Word.MAX_PAGES) * pageSize;
  }

  /** The epoch now: read it before looking, then wait for it to move (afterEpoch, waitEpoch). */
  epoch(): number {
    return Atomics.load(this.control, Word.EPOCH);
  }

  /** Runs `then` once the epoch is no longer `epoch` (soon, if it has moved already). */
  afterEpoch(epoch: number, then: () => void): void {
    const result = Atomics.waitAsync(this.control, Word.EPOCH, epoch);
    if (result.async) void result.value.then(then);
    else queueMicrotask(then);
  }

  /** Blocks this thread until the epoch is no longer `epoch`, at most `milliseconds`. */
  waitEpoch(epoch: number, milliseconds: number): void {
    Atomics.wait(this.control, Word.EPOCH, epoch, milliseconds);
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
    if (ticket !== null) this.notify(); // threads holding idle slabs look again (watchIdle)
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

  // -------------------------------------------------------------------------
  // Statistics: this thread's region, and every region for stats()
  // -------------------------------------------------------------------------

  /** Writes this thread's counters of every class into its region (nothing once it left). */
  publish(classes: readonly ClassCounters[]): void {
    const region = this.own;
    if (region === null) return;
    for (const counters of classes) {
      const base = counters.row * Field.CLASS_FIELDS;
      region[base + Field.ACQUIRES] = counters.acquires;
      region[base + Field.RELEASES] = counters.releases;
      region[base + Field.MISSES] = counters.misses;
      region[base + Field.IN_USE] = counters.inUse;
      region[base + Field.IN_USE_BYTES] = counters.inUseBytes;
      region[base + Field.OS_BYTES] = counters.osBytes;
      region[base + Field.IDLE_BYTES] = counters.idleBytes;
      region[base + Field.LEAKS] = counters.leaks;
    }
  }

  /**
   * Reads back the counters this thread's region holds: it may have belonged
   * to a thread that left, whose counters carry on here.
   */
  adoptCounters(classes: readonly ClassCounters[]): void {
    const region = this.own!;
    for (const counters of classes) {
      const base = counters.row * Field.CLASS_FIELDS;
      counters.acquires = region[base + Field.ACQUIRES];
      counters.releases = region[base + Field.RELEASES];
      counters.misses = region[base + Field.MISSES];
      counters.leaks = region[base + Field.LEAKS];
    }
  }

  /** Counts one wait of this thread that ended after `milliseconds`. */
  recordWait(milliseconds: number): void {
    const region = this.own;
    if (region === null) return;
    const base = this.classRows * Field.CLASS_FIELDS;
    region[base + ThreadField.WAITS]++;
    region[base + ThreadField.WAIT_TOTAL_MS] += milliseconds;
    if (milliseconds > region[base + ThreadField.WAIT_MAX_MS]) region[base + ThreadField.WAIT_MAX_MS] = milliseconds;
    const next = region[base + ThreadField.WAIT_SAMPLE_NEXT];
    region[base + ThreadField.WAIT_SAMPLES_START + next] = milliseconds;
    region[base + ThreadField.WAIT_SAMPLE_NEXT] = (next + 1) % ThreadField.WAIT_SAMPLE_COUNT;
    region[base + ThreadField.WAIT_SAMPLES] = Math.min(region[base + ThreadField.WAIT_SAMPLES] + 1, ThreadField.WAIT_SAMPLE_COUNT);
  }

  /**
   * Counters for the whole pool (every region), in total and per size class
   * (`classSizes`: the size of each row, Infinity for the oversize row).
   * Counters add up over every thread that ever used the pool; what is held
   * now only over the threads that are members now.
   */
  stats(classSizes: readonly number[]): PoolStats {
    const classes: SizeClassStats[] = classSizes.map((size, row) => {
      const counter = (field: number) => this.sum(field, row);
      const held = (field: number) => this.sumHeld(field, row);
      const acquires = counter(Field.ACQUIRES);
      const misses = counter(Field.MISSES);
      return {
        size,
        acquires,
        releases: counter(Field.RELEASES),
        recycles: acquires - misses,
        misses,
        recycleRate: acquires === 0 ? 1 : (acquires - misses) / acquires,
        inUse: held(Field.IN_USE),
        inUseBytes: held(Field.IN_USE_BYTES),
        idleBytes: held(Field.IDLE_BYTES),
        osBytes: held(Field.OS_BYTES),
        leaks: counter(Field.LEAKS),
      };
    });
    const total = (key: keyof SizeClassStats) => classes.reduce((sum, row) => sum + (row[key] as number), 0);
    const threadBase = this.classRows * Field.CLASS_FIELDS;
    const samples: number[] = [];
    let waitTimeMaxMs = 0;
    for (let index = 0; index < MAX_THREADS; index++) {
      const region = this.regionView(index);
      waitTimeMaxMs = Math.max(waitTimeMaxMs, region[threadBase + ThreadField.WAIT_MAX_MS]);
      for (let i = 0; i < region[threadBase + ThreadField.WAIT_SAMPLES]; i++)
        samples.push(region[threadBase + ThreadField.WAIT_SAMPLES_START + i]);
    }
    samples.sort((a, b) => a - b);
    const acquires = total('acquires');
    const misses = total('misses');
    return {
      maxMemory: this.maxMemory,
      acquires,
      releases: total('releases'),
      recycles: acquires - misses,
      misses,
      recycleRate: acquires === 0 ? 1 : (acquires - misses) / acquires,
      inUse: total('inUse'),
      inUseBytes: total('inUseBytes'),
      idleBytes: total('idleBytes'),
      osBytes: Atomics.load(this.control, Word.RESERVED_PAGES) * pageSize,
      highWaterBytes: Atomics.load(this.control, Word.HIGH_WATER_PAGES) * pageSize,
      leaks: total('leaks'),
      waiters: Atomics.load(this.control, Word.WAITERS),
      waits: this.sum(ThreadField.WAITS, this.classRows),
      waitTimeTotalMs: this.sum(ThreadField.WAIT_TOTAL_MS, this.classRows),
      waitTimeMaxMs,
      waitTimeP99Ms: samples.length === 0 ? 0 : samples[Math.ceil(samples.length * 0.99) - 1],
      threads: this.threads,
      classes,
    };
  }

  /** Sum of a counter field (acquires, releases, waits, …) over every region: a thread that left still counts. */
  private sum(field: number, row: number): number {
    let total = 0;
    for (let index = 0; index < MAX_THREADS; index++) total += this.regionView(index)[row * Field.CLASS_FIELDS + field];
    return total;
  }

  /** Sum of a field that says what a thread holds now (in use, idle, mapped) over the members. */
  private sumHeld(field: number, row: number): number {
    let total = 0;
    for (let index = 0; index < MAX_THREADS; index++) {
      if (this.regionTaken(index)) total += this.regionView(index)[row * Field.CLASS_FIELDS + field];
    }
    return total;
  }

  /** Whether region `index` belongs to a member now. */
  private regionTaken(index: number): boolean {
    return Atomics.load(this.control, REGION_STATES + index) !== 0;
  }

  /** The statistics region of thread slot `index`. */
  private regionView(index: number): Float64Array {
    return (this.regionViews[index] ??= new Float64Array(this.buffer, STATS_OFFSET + index * this.statsLength * 8, this.statsLength));
  }
}
