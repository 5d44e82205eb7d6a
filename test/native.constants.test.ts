// The numbers lib/ and native/ both know, written once on each side: the
// iovec entry layout (lib/iovec/entries.ts, native/iovec.h) and the pool's
// shared-block layout (lib/pool/shared.ts, native/pool.h). The addon reports
// its side; a change on one side only fails here, not as corrupted memory.
import { describe, expect, it } from 'vitest';
import { native } from '../lib/binding';
import { BOUNDS_HEADER_BYTES, IOVEC_ENTRY_BYTES, MAX_IOVEC_CAPACITY, Op } from '../lib/iovec/entries';
import { LAYOUT_VERSION, MAGIC, MAX_CLASS_ROWS, MAX_THREADS, RING, layout } from '../lib/pool/shared';

describe('constants mirrored between lib/ and native/', () => {
  it('the iovec entry layout: entry size, bounds header, largest capacity and the operation numbers', () => {
    expect(native.iovecLayout).toEqual({
      entryBytes: IOVEC_ENTRY_BYTES,
      boundsHeaderBytes: BOUNDS_HEADER_BYTES,
      maxCapacity: MAX_IOVEC_CAPACITY,
      ops: {
        readv: Op.READV,
        writev: Op.WRITEV,
        preadv: Op.PREADV,
        pwritev: Op.PWRITEV,
        writevAll: Op.WRITEV_ALL,
        pwritevAll: Op.PWRITEV_ALL,
      },
    });
    expect(native.iovecEntryBytes).toBe(16);
  });

  it("the pool's shared block: magic, version, word indexes, region offsets and sizes", () => {
    expect(native.poolLayout).toEqual(layout);
    expect(layout.magic).toBe(MAGIC);
    expect(layout.version).toBe(LAYOUT_VERSION);
    expect(layout.ring).toBe(RING);
    expect(layout.maxThreads).toBe(MAX_THREADS);
    expect(MAX_CLASS_ROWS).toBe(65);
  });
});
