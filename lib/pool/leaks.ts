// Leak tracking: a pool holds a tracked Buffer only weakly while it is out
// (slot.tracked, a WeakRef), with a FinalizationRegistry entry, so that a
// Buffer garbage-collected without release() is noticed, reported and its
// slot taken back. 'sample' tracks 1 acquire in 256, 'full' every acquire
// with its stack. The pool counts acquires down to the next tracked one on
// its hot path (leakCountdown); this tracker does the rest.
import path from 'node:path';
import type { LeakDetection, LeakReport, Slot } from './size-classes';

const SAMPLE_INTERVAL = 256;

/** Acquires from one tracked acquire to the next; -1 (never) with detection off. */
export function trackingInterval(mode: LeakDetection): number {
  return mode === 'full' ? 1 : mode === 'sample' ? SAMPLE_INTERVAL : -1;
}

/** What the tracker needs of its pool (BufferPool). */
export interface LeakingPool {
  /** A slot is back (released, or reclaimed from a leak): to a waiter, a free list, or the OS. */
  returnSlot(slot: Slot): void;
  /** Copies this thread's counters into the shared block. */
  publish(): void;
}

/** The pool's own frames, left out of an acquire's stack: every file of lib/pool/. */
const POOL_DIRECTORY = `${__dirname}${path.sep}`;

/** The caller's stack, without the pool's own frames. */
function acquireStack(): string {
  const lines = (new Error('acquired here').stack ?? '').split('\n');
  return [lines[0], ...lines.slice(1).filter((line) => !line.includes(POOL_DIRECTORY))].join('\n');
}

export class LeakTracker {
  private readonly registry: FinalizationRegistry<{ slot: Slot; generation: number }>;
  /** Acquires from one tracked acquire to the next. */
  readonly interval: number;

  constructor(
    private readonly pool: LeakingPool,
    private readonly mode: Exclude<LeakDetection, 'off'>,
    private readonly onLeak: ((leak: LeakReport) => void) | undefined,
  ) {
    this.interval = trackingInterval(mode);
    this.registry = new FinalizationRegistry((held) => this.leaked(held.slot, held.generation));
  }

  /** `view` goes out of `slot` tracked: the pool holds it only weakly until it is released. */
  track(slot: Slot, view: Buffer): void {
    slot.owner = null; // held weakly through slot.tracked
    slot.view = null;
    slot.stack = this.mode === 'full' ? acquireStack() : undefined;
    // A view is registered once, the first time it goes out tracked, and stays
    // registered: tracking the same view again (one size, handed out again)
    // costs a deref and a few stores, not a register/unregister pair per
    // sample. A view the slot has replaced (another size) is garbage; its entry
    // goes with it, its late report carries an old generation and is ignored.
    // So the registry holds about one entry per slot, plus the sampled views
    // of varying sizes that the next collections have not reached yet.
    let registered = slot.registered;
    if (registered === null || registered.deref() !== view) {
      slot.generation++;
      registered = slot.registered = new WeakRef(view);
      this.registry.register(view, { slot, generation: slot.generation }, slot);
    }
    slot.tracked = registered;
  }

  /**
   * When `buffer` is the tracked Buffer of `slot` (a release of it), makes it
   * the slot's owner again, as an untracked one would be, and returns true.
   * (Its registry entry stays: a collection of it while untracked cannot
   * happen, the slot holds it strongly as its view.)
   */
  untrack(slot: Slot, buffer: Buffer): boolean {
    if (slot.tracked === null || slot.tracked.deref() !== buffer) return false;
    slot.tracked = null;
    slot.stack = undefined;
    slot.view = buffer;
    slot.owner = buffer;
    return true;
  }

  /** The slot's memory is gone (close): none of its views is watched any more. */
  forget(slot: Slot): void {
    if (slot.registered !== null) this.registry.unregister(slot);
    slot.registered = null;
  }

  /**
   * A tracked buffer was garbage-collected while out: report it and take its
   * slot back. (A slice of the lost buffer that is still alive would now see
   * the next owner's bytes; strict mode rules that out.)
   */
  private leaked(slot: Slot, generation: number): void {
    if (slot.tracked === null || slot.generation !== generation || slot.slab.unmapped) return;
    const report: LeakReport = { size: slot.viewLength };
    if (slot.stack !== undefined) report.stack = slot.stack;
    slot.sizeClass.leaks++;
    slot.owner = null;
    slot.tracked = null;
    slot.stack = undefined;
    this.pool.returnSlot(slot);
    this.pool.publish();
    if (this.onLeak !== undefined) {
      this.onLeak(report);
    } else {
      const where = report.stack !== undefined ? `\n${report.stack}` : " (leakDetection: 'full' records where it was acquired)";
      process.emitWarning(`A pooled buffer of ${report.size} bytes was garbage-collected without release()${where}`, {
        code: 'IOBUF_LEAK',
      });
    }
  }
}
