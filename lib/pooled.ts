// What "a pooled buffer" is, for every part: a Buffer that a BufferPool
// (lib/pool/) handed out carries its slot under kSlot, and the slot knows its
// slab (one mapping of native memory) and the pool it belongs to. This module
// sits below the pool and the parts that take pooled buffers (iovec, io_uring,
// gather, frames), so they can look at one without importing the pool, and
// the pool's memory can be lent (lib/lending.ts) from any view of it.
//
// A slot's `owner` is the Buffer now out (null when the slot is free, and
// while a leak-tracked Buffer is out: then `tracked` holds it weakly). A
// Buffer is "still out" while it is its slot's owner (or tracked Buffer) and
// its slab is mapped.
import { type Borrower, type Loan, registerLender } from './lending';

/** The key under which every view a pool hands out carries its slot: one property load finds it again. */
export const kSlot = Symbol('iobuf.slot');

/** The BufferPool a slot belongs to, as the code below the pool sees it. */
export interface SlotPool {
  /** Takes back a Buffer it handed out. */
  release(buffer: Buffer): void;
  /** Lends the memory of `slot` (see lib/lending.ts); the pool counts the loan and pins the slab. */
  lendSlot(slot: PooledSlot, borrower: Borrower | null): Loan;
}

/** One mapping of native memory that a pool carves into slots. */
export interface PooledSlab {
  readonly pool: SlotPool;
  readonly arrayBuffer: ArrayBuffer;
  /** The slab's first byte in this process (pointers fit in a double: < 2^53). */
  readonly address: number;
  /** Bytes between slots. */
  readonly stride: number;
  readonly slots: readonly PooledSlot[];
  /** The slab of one oversize allocation (a size above every class): unmapped when its buffers come back. */
  readonly dedicated: boolean;
  unmapped: boolean;
  /** Its io_uring fixed-buffer index once the pool's registration() registered it, else -1 (lib/uring/registration.ts). */
  fixedIndex: number;
}

/** One buffer's place in a slab. */
export interface PooledSlot {
  readonly pool: SlotPool;
  readonly slab: PooledSlab;
  /** Bytes from the slab's start. */
  readonly offset: number;
  /** The Buffer now out; null when free, and while a leak-tracked Buffer is out (held weakly in `tracked`). */
  owner: Buffer | null;
  tracked: WeakRef<Buffer> | null;
  /** Loans of this slot's memory now (lib/lending.ts): while any, the kernel or libuv may use it. */
  readonly loans: number;
}

/** A view the pool handed out. */
export type PooledView = Buffer & { [kSlot]?: PooledSlot };

/** Slabs by their ArrayBuffer, and strict views' own ArrayBuffers by their slot: to find the memory behind any view (lending). */
const slabOfMemory = new WeakMap<ArrayBuffer, PooledSlab>();
const slotOfStrictView = new WeakMap<ArrayBuffer, PooledSlot>();

/** For the pool: `slab` was mapped (its memory can be lent through any view of it). */
export function rememberSlab(slab: PooledSlab): void {
  slabOfMemory.set(slab.arrayBuffer, slab);
}

/** For the pool: `slab` is unmapped. */
export function forgetSlab(slab: PooledSlab): void {
  slabOfMemory.delete(slab.arrayBuffer);
}

/** For the pool: `arrayBuffer` is the own ArrayBuffer of a strict-mode view of `slot`. */
export function rememberStrictView(arrayBuffer: ArrayBuffer, slot: PooledSlot): void {
  slotOfStrictView.set(arrayBuffer, slot);
}

/** The slot whose memory `view` starts in (the very Buffer an acquire returned, or any view of pooled memory), or null. */
export function slotOfView(view: ArrayBufferView): PooledSlot | null {
  const slot = (view as PooledView)[kSlot];
  if (slot !== undefined) return slot;
  const arrayBuffer = view.buffer as ArrayBuffer;
  const strictSlot = slotOfStrictView.get(arrayBuffer);
  if (strictSlot !== undefined) return strictSlot;
  const slab = slabOfMemory.get(arrayBuffer);
  if (slab === undefined) return null;
  return slab.slots[Math.min(slab.slots.length - 1, Math.floor(view.byteOffset / slab.stride))];
}

/** Loans of the memory of the slot `view` lies in, now; 0 for memory no pool lends (the heap). */
export function loansOf(view: ArrayBufferView): number {
  const slot = slotOfView(view);
  return slot === null ? 0 : slot.loans;
}

/**
 * The address of view[0] when `view` is a Buffer that a BufferPool in this
 * thread handed out and that is still out (not released, pool not freed);
 * -1 otherwise (a slice of a pooled Buffer, a foreign view, a released one).
 * A property load and a few compares, no allocation: the parts that take
 * pooled buffers use it instead of a native call.
 */
export function pooledAddressOf(view: ArrayBufferView): number {
  const slot = (view as PooledView | null | undefined)?.[kSlot]; // null/undefined: not a view, the caller reports it
  if (slot === undefined || slot.slab.unmapped) return -1;
  if (slot.owner !== view && !(slot.tracked !== null && slot.tracked.deref() === view)) return -1;
  // Detached behind the pool's back (Node 22+: ArrayBuffer.prototype.transfer
  // detaches even a slab): the cached address is no longer this view's.
  if ((view as Buffer).length === 0) return -1;
  return slot.slab.address + slot.offset;
}

/** The pool that handed `view` out, or null when it is not a pooled Buffer that is still out. */
export function poolOf(view: ArrayBufferView): SlotPool | null {
  return pooledAddressOf(view) < 0 ? null : (view as PooledView)[kSlot]!.pool;
}

// Pooled memory is lent by its pool: any view of a mapped slab finds its slot.
registerLender((view, borrower) => {
  const slot = slotOfView(view);
  return slot === null || slot.slab.unmapped ? null : slot.pool.lendSlot(slot, borrower);
});
