// The part of a BufferPool that every thread sharing it sees: one
// SharedArrayBuffer holding the budget, the close flag, the FIFO ticket queue
// of waiters, and one statistics region per thread.
//
// Layout (Int32 words unless noted):
//
//   control[0..15]                 see the word indices below
//   control[16 .. 16+RING)         ticket ring: ring[t % RING] === t + 1 once ticket t is done
//   stats (Float64), from byte STATS_OFFSET: MAX_THREADS regions of regionLength doubles,
//                                  each written only by its own thread (plain stores),
//                                  read by anyone for stats()
//
// Why tickets: waiters in any thread are served budget in the order they
// arrived. A waiter takes ticket NEXT_TICKET++; HEAD_TICKET is the oldest
// ticket not yet done. Only the head may take new budget while anyone waits,
// so a large request is never starved by a stream of small ones.

// Control words (Int32). const enums: tsc inlines them, so the hot path loads no module property.
export const enum Word {
  CLOSED = 0,            // 1 once close() began
  RESERVED_PAGES = 1,    // pages taken from the OS, all threads
  MAX_PAGES = 2,         // the budget, in pages
  EPOCH = 3,             // bumped (and notified) whenever waiters should look again
  NEXT_TICKET = 4,
  HEAD_TICKET = 5,
  THREADS = 6,           // threads attached and not yet detached
  HIGH_WATER_PAGES = 7,  // most pages ever reserved at once
  REGIONS = 8,           // statistics regions handed out so far
  WAITERS = 9,           // waiters now, all threads
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

const CONTROL_WORDS = 16;
export const RING = 1 << 14;
export const MAX_THREADS = 64;

const THREAD_FIELDS = ThreadField.WAIT_SAMPLES_START + ThreadField.WAIT_SAMPLE_COUNT;

const STATS_OFFSET = (CONTROL_WORDS + RING) * 4;

export function regionLength(classRows: number): number {
  return classRows * Field.CLASS_FIELDS + THREAD_FIELDS;
}

export class SharedState {
  readonly control: Int32Array;
  readonly statsLength: number;

  constructor(readonly buffer: SharedArrayBuffer, readonly classRows: number) {
    this.control = new Int32Array(buffer, 0, CONTROL_WORDS + RING);
    this.statsLength = regionLength(classRows);
  }

  static create(classRows: number, maxPages: number): SharedState {
    const bytes = STATS_OFFSET + MAX_THREADS * regionLength(classRows) * 8;
    const state = new SharedState(new SharedArrayBuffer(bytes), classRows);
    state.control[Word.MAX_PAGES] = maxPages;
    return state;
  }

  /** The statistics region of thread slot `index`. */
  region(index: number): Float64Array {
    return new Float64Array(this.buffer, STATS_OFFSET + index * this.statsLength * 8, this.statsLength);
  }

  claimRegion(): number {
    const index = Atomics.add(this.control, Word.REGIONS, 1);
    if (index >= MAX_THREADS) {
      Atomics.sub(this.control, Word.REGIONS, 1);
      return -1;
    }
    return index;
  }

  get closed(): boolean {
    return this.control[Word.CLOSED] !== 0;
  }

  /** Takes `pages` from the budget if they fit. */
  reserve(pages: number): boolean {
    const control = this.control;
    for (;;) {
      const reserved = Atomics.load(control, Word.RESERVED_PAGES);
      if (reserved + pages > control[Word.MAX_PAGES]) return false;
      if (Atomics.compareExchange(control, Word.RESERVED_PAGES, reserved, reserved + pages) === reserved) {
        const total = reserved + pages;
        let high = Atomics.load(control, Word.HIGH_WATER_PAGES);
        while (total > high) {
          const seen = Atomics.compareExchange(control, Word.HIGH_WATER_PAGES, high, total);
          if (seen === high) break;
          high = seen;
        }
        return true;
      }
    }
  }

  /** Gives `pages` back to the budget and wakes every waiter to look again. */
  unreserve(pages: number): void {
    Atomics.sub(this.control, Word.RESERVED_PAGES, pages);
    this.wake();
  }

  wake(): void {
    Atomics.add(this.control, Word.EPOCH, 1);
    Atomics.notify(this.control, Word.EPOCH);
  }

  /** A place in the FIFO queue, or -1 when RING waiters already wait. */
  takeTicket(): number {
    const control = this.control;
    for (;;) {
      const next = Atomics.load(control, Word.NEXT_TICKET);
      if (next - Atomics.load(control, Word.HEAD_TICKET) >= RING) return -1;
      if (Atomics.compareExchange(control, Word.NEXT_TICKET, next, next + 1) === next) {
        Atomics.add(control, Word.WAITERS, 1);
        return next;
      }
    }
  }

  /** Ticket `ticket` was served or gave up; the head moves past every done ticket. */
  finishTicket(ticket: number): void {
    const control = this.control;
    Atomics.store(control, CONTROL_WORDS + (ticket % RING), ticket + 1);
    Atomics.sub(control, Word.WAITERS, 1);
    for (;;) {
      const head = Atomics.load(control, Word.HEAD_TICKET);
      if (head === Atomics.load(control, Word.NEXT_TICKET)) break;
      if (Atomics.load(control, CONTROL_WORDS + (head % RING)) !== head + 1) break;
      Atomics.compareExchange(control, Word.HEAD_TICKET, head, head + 1);
    }
    this.wake();
  }

  /** Whether a request holding `ticket` (-1: not waiting) may take new budget now. */
  mayTakeBudget(ticket: number): boolean {
    const head = Atomics.load(this.control, Word.HEAD_TICKET);
    return ticket < 0 ? head === Atomics.load(this.control, Word.NEXT_TICKET) : head === ticket;
  }

  /** Sum of one field over every thread's region, for one class row or all. */
  sum(field: number, row: number): number {
    let total = 0;
    const regions = Math.min(Atomics.load(this.control, Word.REGIONS), MAX_THREADS);
    for (let index = 0; index < regions; index++) {
      total += this.region(index)[row * Field.CLASS_FIELDS + field];
    }
    return total;
  }
}
