// Memory lent to the kernel by an IoRing operation stays mapped and unused
// by anyone else until the kernel is done, whatever JS does meanwhile:
// free(), a pool's close({ force }), a transfer of the ArrayBuffer, dropping
// every reference. Real kernel: a read from a FIFO without data stays in
// flight until the test writes, and then the kernel writes into the memory.
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BufferPool, IoVecArray, addressOf, allocAligned, allocHuge, free } from '../lib/index';
import { KiB, MiB, expectCode, rejection, settled } from './fixtures/pool-helpers';
import { collectGarbage, mappedBytesIn, sanitized } from './helpers/memory-proc';
import { blockingFifo, drainFifo, submitted, uringSkip, useRings, useScratchDir } from './fixtures/uring-helpers';

const scratch = useScratchDir('uring-lending');
const makeRing = useRings();
const SIZE = 64 * KiB;

/**
 * Once the memory came back it is unmapped. Under AddressSanitizer its
 * allocator maps small regions all the time and may have reused the range,
 * so the check is made only in a plain build.
 */
function expectUnmapped(address: bigint, size = SIZE): void {
  if (!sanitized) expect(mappedBytesIn(address, size)).toBe(0);
}

/** Transfers (detaches) the ArrayBuffer: ArrayBuffer.prototype.transfer where Node has it (22+), else structuredClone. */
function transferAway(arrayBuffer: ArrayBuffer): ArrayBuffer {
  const transfer = (arrayBuffer as { transfer?: () => ArrayBuffer }).transfer;
  return transfer !== undefined ? transfer.call(arrayBuffer) : structuredClone(arrayBuffer, { transfer: [arrayBuffer] });
}

describe.skipIf(uringSkip !== '')('memory under an IoRing operation', () => {
  for (const [kind, alloc] of Object.entries({
    mapped: () => allocAligned(SIZE, { alignment: 64 * KiB }),
    huge: () => allocHuge(SIZE, { fallback: 'normal' }),
  })) {
    it(`free() of ${kind} memory under a read: takes effect (detached, unmapped) only when the kernel is done`, async () => {
      const fifo = blockingFifo(scratch());
      const ring = makeRing();
      try {
        const buffer = alloc();
        const address = addressOf(buffer);
        const reading = ring.read(fifo.reader, buffer, null);
        await submitted();
        free(buffer); // lent to the kernel: deferred (lib/lending.ts)
        expect(buffer.length).toBe(SIZE);
        expect(mappedBytesIn(address, SIZE)).toBe(SIZE); // nothing else can be placed there
        const fresh = Array.from({ length: 8 }, alloc);
        for (const other of fresh) {
          const start = addressOf(other);
          expect(start + BigInt(SIZE) <= address || start >= address + BigInt(SIZE)).toBe(true);
        }
        fs.writeSync(fifo.writer, Buffer.alloc(SIZE, 0x5a));
        expect(await reading).toBe(SIZE); // the kernel wrote into the memory, then it was freed
        expect(buffer.length).toBe(0);
        for (const other of fresh) expect(other.every((byte) => byte === 0)).toBe(true);
        expectUnmapped(address);
        for (const other of fresh) free(other);
      } finally {
        fifo.close();
      }
    });
  }

  it("a pool's close({ force }) under a READ_FIXED: waits for the read; the registered slab stays mapped until the ring is closed", async () => {
    const fifo = blockingFifo(scratch());
    const pool = new BufferPool({ maxMemory: 8 * MiB, hugePages: false });
    const buffer = pool.tryAcquire(SIZE)!;
    const slabBytes = pool.stats().osBytes; // the one slab
    const ring = makeRing({ pool });
    try {
      const base = addressOf(buffer) - BigInt(pool.fixedBufferOf(buffer)!.offset);
      const reading = ring.read(fifo.reader, buffer, null);
      await submitted();
      let closed = false;
      const closing = pool.close({ force: true }).then(() => {
        closed = true;
      });
      await submitted();
      expect({ closed, length: buffer.length }).toEqual({ closed: false, length: SIZE }); // lent to the kernel
      expect(mappedBytesIn(base, slabBytes)).toBe(slabBytes);
      const fresh = Array.from({ length: 8 }, () => allocAligned(SIZE, { alignment: 64 * KiB }));
      fs.writeSync(fifo.writer, Buffer.alloc(SIZE, 0x5a));
      expect(await reading).toBe(SIZE);
      await closing;
      expect(buffer.length).toBe(0);
      for (const other of fresh) expect(other.every((byte) => byte === 0)).toBe(true);
      expect(ring.stats().fixed).toBe(1);
      expect(mappedBytesIn(base, slabBytes)).toBe(slabBytes); // still registered with the ring
      await ring.close();
      expectUnmapped(base, slabBytes);
      for (const other of fresh) free(other);
    } finally {
      fifo.close();
    }
  });

  it('a heap ArrayBuffer transferred under a bounced read: the bytes are dropped (ERR_IOBUF_DETACHED), the new owner sees none', async () => {
    const fifo = blockingFifo(scratch());
    const ring = makeRing();
    try {
      const view = new Uint8Array(new ArrayBuffer(SIZE));
      const reading = ring.read(fifo.reader, view, null);
      await submitted();
      const moved = new Uint8Array(transferAway(view.buffer as ArrayBuffer));
      expect(view.length).toBe(0);
      fs.writeSync(fifo.writer, Buffer.alloc(SIZE, 0x5a));
      expectCode(await rejection(reading), 'IobufError', 'ERR_IOBUF_DETACHED');
      expect(moved.length).toBe(SIZE);
      expect(moved.every((byte) => byte === 0)).toBe(true);
      expect(ring.stats()).toMatchObject({ bounced: 1, pending: 0 });
    } finally {
      fifo.close();
    }
  });

  it('a heap ArrayBuffer transferred under a bounced write: the bytes of the call are written', async () => {
    const fifo = blockingFifo(scratch());
    const ring = makeRing();
    try {
      const view = new Uint8Array(new ArrayBuffer(16)).fill(0x61);
      const writing = ring.write(fifo.writer, view, null);
      const moved = new Uint8Array(transferAway(view.buffer as ArrayBuffer));
      moved.fill(0x62);
      expect(await writing).toBe(16);
      expect(drainFifo(fifo.reader).equals(Buffer.alloc(16, 0x61))).toBe(true);
      expect(ring.stats().bounced).toBe(1);
    } finally {
      fifo.close();
    }
  });

  it('a readv whose heap view is transferred meanwhile: ERR_IOBUF_DETACHED, in-place entries still got their bytes', async () => {
    const fifo = blockingFifo(scratch());
    const ring = makeRing();
    const mapped = allocAligned(8, { alignment: 64 * KiB });
    try {
      const heap = new Uint8Array(new ArrayBuffer(8));
      const iov = IoVecArray.from([mapped, heap]);
      const reading = ring.readv(fifo.reader, iov, null);
      await submitted();
      const moved = new Uint8Array(transferAway(heap.buffer as ArrayBuffer));
      fs.writeSync(fifo.writer, Buffer.from('0123456789abcdef'));
      expectCode(await rejection(reading), 'IobufError', 'ERR_IOBUF_DETACHED');
      expect(mapped.toString()).toBe('01234567');
      expect(moved.every((byte) => byte === 0)).toBe(true);
      iov.clear(); // repaid
      iov.close();
    } finally {
      fifo.close();
      free(mapped);
    }
  });

  it('dropping every reference under a read: the operation keeps the view reachable, GC unmaps nothing', async () => {
    const fifo = blockingFifo(scratch());
    const ring = makeRing();
    try {
      let buffer: Buffer | null = allocAligned(SIZE, { alignment: 64 * KiB });
      const address = addressOf(buffer);
      const reading = ring.read(fifo.reader, buffer, null);
      buffer = null;
      await submitted();
      await collectGarbage();
      expect(mappedBytesIn(address, SIZE)).toBe(SIZE);
      expect(await settled(reading)).toBe(false);
      fs.writeSync(fifo.writer, Buffer.alloc(SIZE, 1));
      expect(await reading).toBe(SIZE);
      await collectGarbage();
      expectUnmapped(address);
    } finally {
      fifo.close();
    }
  });
});
