// Check 1 of the iovec part's safety (lib/iovec/array.ts, file comment): what
// an entry remembers of the view it was made from, and the test, before every
// syscall, that the view is still what it was at push time.
//
// A pooled Buffer is still out: pooledAddressOf gives the same address (not
// released, slab not unmapped). A foreign view still has its length (a
// detached or shrunk buffer reads 0 or less). A property load and a compare
// per entry. `length`, not `byteLength`: V8 inlines the first and calls out
// for the second (measured: 0.8 vs 8 ns per view), and `view.buffer` is
// dearer still; a DataView, which has no `length`, pays for byteLength (it
// throws once detached).
import { IobufError } from '../errors';
import { pooledAddressOf } from '../pooled';

/** How an entry's view is checked. */
export const enum ViewKind {
  TYPED_ARRAY = 0,
  POOLED = 1,
  DATA_VIEW = 2,
}

/** A DataView's byteLength, or -1 once its buffer is detached (or shrunk out of reach: the getter throws then). */
export function dataViewLength(view: DataView): number {
  try {
    return view.byteLength;
  } catch {
    return -1;
  }
}

/**
 * The first of entries [0, count) whose view is no longer what it was at
 * push time, or -1. Entry i's view is views[i], checked as kinds[i] says,
 * against the start it had (starts[2 i]: the bounds) or its length then
 * (lengths[i]; a TypedArray's `length`, a DataView's byteLength).
 */
export function firstStaleView(
  views: readonly (ArrayBufferView | undefined)[],
  kinds: Uint8Array,
  starts: Float64Array,
  lengths: Float64Array,
  count: number,
): number {
  for (let i = 0; i < count; i++) {
    const view = views[i]!;
    const kind = kinds[i];
    if (kind === ViewKind.POOLED) {
      if (pooledAddressOf(view) !== starts[2 * i]) return i;
    } else if (kind === ViewKind.TYPED_ARRAY) {
      if ((view as Uint8Array).length !== lengths[i]) return i;
    } else if (dataViewLength(view as DataView) !== lengths[i]) {
      return i;
    }
  }
  return -1;
}

export function staleError(index: number, kind: ViewKind): IobufError {
  const what =
    kind === ViewKind.POOLED
      ? 'the pooled Buffer it was made from was released to its pool (or the pool freed its memory)'
      : 'the view it was made from was detached or changed length';
  return new IobufError(`iovec entry ${index} is stale: ${what}; no syscall was made`, 'ERR_IOBUF_IOVEC_INVALID');
}
