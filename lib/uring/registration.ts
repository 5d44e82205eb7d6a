// The pool's side of io_uring: which of a pool's slabs are registered as
// fixed buffers (IORING_REGISTER_BUFFERS), at which buffer index, and where a
// pooled Buffer lies in that registration (READ_FIXED / WRITE_FIXED). A
// BufferPool keeps one of these once its registration() is first called;
// IoRing (lib/uring/ring.ts) registers what it returns.
//
// A registered slab stays mapped at the same address until the pool is
// closed: trim() skips it (slab.fixedIndex >= 0). Registration is
// append-only, so the indices an IoRing has registered stay true.
import { native } from '../binding';
import { validateView } from '../errors';
import { IoVecArray } from '../iovec/array';
import { kSlot, pooledAddressOf, type PooledSlab, type PooledView, type SlotPool } from '../pooled';

/** One pool's slabs registered so far, in buffer-index order. */
export class FixedBufferRegistration {
  private readonly slabs: PooledSlab[] = [];

  /**
   * Registers every slab of `mapped` not registered before (oversize ones
   * never: they are unmapped when their buffer comes back) and marks it
   * MADV_DONTFORK; returns an IoVecArray with one entry per registered slab,
   * in index order, in the form IORING_REGISTER_BUFFERS takes.
   */
  update(mapped: Iterable<PooledSlab>): IoVecArray {
    for (const slab of mapped) {
      if (slab.dedicated || slab.fixedIndex >= 0) continue;
      native.adviseDontFork(slab.arrayBuffer);
      slab.fixedIndex = this.slabs.length;
      this.slabs.push(slab);
    }
    const iov = new IoVecArray(Math.max(1, this.slabs.length));
    for (const slab of this.slabs) iov.push(new Uint8Array(slab.arrayBuffer));
    return iov;
  }
}

/**
 * Where `buffer` lies in `pool`'s registration: `index` (the io_uring buffer
 * index) and `offset` of buffer[0] from that buffer's start. Null when
 * `buffer` is not a Buffer `pool` has out, or its slab was mapped after the
 * last registration.
 */
export function fixedBufferOf(pool: SlotPool, buffer: Buffer): { index: number; offset: number } | null {
  validateView(buffer, 'buffer');
  if (pooledAddressOf(buffer) < 0) return null;
  const slot = (buffer as PooledView)[kSlot]!;
  if (slot.pool !== pool || slot.slab.fixedIndex < 0) return null;
  return { index: slot.slab.fixedIndex, offset: slot.offset };
}

/**
 * True when `view` is a Buffer that `pool` has out from a size-class slab
 * that is not registered yet (a slab mapped since), so that a new
 * registration() would give it an index.
 */
export function inUnregisteredSlab(pool: SlotPool, view: ArrayBufferView): boolean {
  if (pooledAddressOf(view) < 0) return false;
  const slab = (view as PooledView)[kSlot]!.slab;
  return slab.pool === pool && !slab.dedicated && slab.fixedIndex < 0;
}
