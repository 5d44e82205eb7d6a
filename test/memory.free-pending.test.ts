// free() (and a pool's close({ force })) while a promise call of the iovec
// part still has the memory in the kernel: the memory is lent (lib/lending.ts),
// so the free takes effect when the call is done — the view stays attached and
// receives the bytes, the pages stay mapped, and the kernel never writes into
// a range that a new mapping reused. Real kernel: a readv from a FIFO that has
// no data yet blocks in a libuv pool thread until this test writes into it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { BufferPool, IoVecArray, addressOf, allocAligned, allocHuge, free, readv } from '../lib/index';
import { makeFifo } from './fixtures/iovec-helpers';
import { KiB, collectGarbage, mappedBytesIn, sanitized } from './helpers/memory-proc';

let dir = '';
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iobuf-free-pending-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A FIFO with a blocking reader (O_RDWR: the open does not wait for a writer) and a writer. */
function fifo(): { reader: number; writer: number; close(): void } {
  const file = makeFifo(dir);
  const reader = fs.openSync(file, fs.constants.O_RDWR);
  const writer = fs.openSync(file, fs.constants.O_WRONLY);
  return {
    reader,
    writer,
    close: () => {
      fs.writeSync(writer, Buffer.alloc(1)); // ends a readv still blocked after a failed assertion
      fs.closeSync(reader);
      fs.closeSync(writer);
    },
  };
}

const SIZE = 64 * KiB;

/**
 * After the call settled the range is unmapped. Under AddressSanitizer its
 * allocator maps small regions all the time and may already have reused the
 * range, so the check is made only in a plain build.
 */
function expectUnmapped(address: bigint): void {
  if (!sanitized) expect(mappedBytesIn(address, SIZE)).toBe(0);
}

describe('free() during a pending readv', () => {
  const kinds: Record<string, () => Buffer> = {
    mapped: () => allocAligned(SIZE, { alignment: 64 * KiB }),
    dontDump: () => allocAligned(SIZE, { dontDump: true }),
    huge: () => allocHuge(SIZE, { fallback: 'normal' }),
  };
  for (const [kind, alloc] of Object.entries(kinds)) {
    test(`${kind}: free() takes effect once the call is done; new mappings are not written`, async () => {
      const pipe = fifo();
      try {
        const buffer = alloc();
        const address = addressOf(buffer);
        const iov = IoVecArray.from([buffer.subarray(0, SIZE)]);
        const pending = readv(pipe.reader, iov);
        await delay(20); // the pool thread is in readv now
        free(buffer);
        // Lent: still attached and mapped, nothing else can be placed there while the kernel may write.
        expect(buffer.length).toBe(SIZE);
        expect(mappedBytesIn(address, SIZE)).toBe(SIZE);
        expect(() => free(buffer)).toThrow(expect.objectContaining({ code: 'ERR_IOBUF_DOUBLE_FREE' }));
        const fresh = Array.from({ length: 8 }, alloc);
        for (const other of fresh) {
          const start = addressOf(other);
          expect(start + BigInt(SIZE) <= address || start >= address + BigInt(SIZE)).toBe(true);
        }
        fs.writeSync(pipe.writer, Buffer.alloc(SIZE, 0x5a));
        const settled = pending.then((bytes) => ({ bytes, length: buffer.length, first: buffer[0] }));
        // The bytes landed in the view; the free took effect as the call settled.
        await expect(settled).resolves.toEqual({ bytes: SIZE, length: 0, first: undefined });
        expect(buffer.buffer.byteLength).toBe(0);
        for (const other of fresh) expect(other.every((byte) => byte === 0)).toBe(true);
        expectUnmapped(address);
        for (const other of fresh) free(other);
      } finally {
        pipe.close();
      }
    });
  }

  test('heap-backed allocAligned: free() takes effect once the call is done', async () => {
    const pipe = fifo();
    try {
      const buffer = allocAligned(SIZE);
      const iov = IoVecArray.from([buffer]);
      const pending = readv(pipe.reader, iov);
      await delay(20);
      free(buffer);
      expect(buffer.length).toBe(SIZE);
      // Were the memory given back to malloc, these would likely get it.
      const fresh = Array.from({ length: 16 }, () => allocAligned(SIZE));
      fs.writeSync(pipe.writer, Buffer.alloc(SIZE, 0x5a));
      await expect(pending).resolves.toBe(SIZE);
      expect(buffer.length).toBe(0);
      for (const other of fresh) expect(other.every((byte) => byte === 0)).toBe(true);
    } finally {
      pipe.close();
    }
  });

  test('two pending calls over one allocation: unmapped after the second is done', async () => {
    const first = fifo();
    const second = fifo();
    try {
      const buffer = allocAligned(SIZE, { alignment: 64 * KiB });
      const address = addressOf(buffer);
      const a = readv(first.reader, IoVecArray.from([buffer.subarray(0, 100)]));
      const b = readv(second.reader, IoVecArray.from([buffer.subarray(100, 200)]));
      await delay(20);
      free(buffer);
      fs.writeSync(first.writer, Buffer.alloc(100, 1));
      await expect(a).resolves.toBe(100);
      expect(mappedBytesIn(address, SIZE)).toBe(SIZE);
      fs.writeSync(second.writer, Buffer.alloc(100, 2));
      await expect(b).resolves.toBe(100);
      expectUnmapped(address);
    } finally {
      first.close();
      second.close();
    }
  });

  test('the pending call keeps the views reachable: GC does not unmap them meanwhile', async () => {
    const pipe = fifo();
    try {
      let buffer: Buffer | null = allocAligned(SIZE, { alignment: 64 * KiB });
      const address = addressOf(buffer);
      let iov: IoVecArray | null = IoVecArray.from([buffer]);
      const pending = readv(pipe.reader, iov);
      buffer = null;
      iov = null;
      await collectGarbage();
      expect(mappedBytesIn(address, SIZE)).toBe(SIZE);
      fs.writeSync(pipe.writer, Buffer.alloc(SIZE, 0x5a));
      await expect(pending).resolves.toBe(SIZE);
      await collectGarbage();
      expectUnmapped(address);
    } finally {
      pipe.close();
    }
  });

  test('pool close({ force }) during a pending readv into a pooled buffer: resolves, and unmaps, after the call', async () => {
    const pipe = fifo();
    try {
      const pool = new BufferPool({ maxMemory: 1024 * KiB });
      const buffer = pool.tryAcquire(SIZE)!;
      const other = pool.tryAcquire(SIZE)!; // another slot of the same slab, not lent
      const address = addressOf(buffer);
      const pending = readv(pipe.reader, IoVecArray.from([buffer]));
      await delay(20);
      let closed = false;
      const closing = pool.close({ force: true }).then(() => {
        closed = true;
      });
      await delay(20);
      // The slab is lent: mapped, attached, close() still waiting for the kernel.
      expect({ closed, length: buffer.length, other: other.length }).toEqual({ closed: false, length: SIZE, other: SIZE });
      expect(mappedBytesIn(address, SIZE)).toBe(SIZE);
      const fresh = Array.from({ length: 8 }, () => allocAligned(SIZE, { alignment: 64 * KiB }));
      fs.writeSync(pipe.writer, Buffer.alloc(SIZE, 0x5a));
      await expect(pending).resolves.toBe(SIZE);
      await closing;
      expect({ length: buffer.length, other: other.length }).toEqual({ length: 0, other: 0 });
      for (const other of fresh) expect(other.every((byte) => byte === 0)).toBe(true);
    } finally {
      pipe.close();
    }
  });
});
