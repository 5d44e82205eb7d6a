// Cancellation and close, with operations really in flight: a read from a
// FIFO that has no data stays in the kernel (poll-armed) until it is
// cancelled or the test writes. After a cancel, bytes written into the FIFO
// must still be there: no forgotten read took them.
import { getEventListeners } from 'node:events';
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BufferPool, allocAligned, free } from '../lib/index';
import { KiB, MiB, expectCode, rejection, settled } from './fixtures/pool-helpers';
import { blockingFifo, dataFile, drainFifo, submitted, uringSkip, useRings, useScratchDir } from './fixtures/uring-helpers';

const scratch = useScratchDir('uring-cancel');
const makeRing = useRings();

describe.skipIf(uringSkip !== '')('IoRing cancellation', () => {
  it('a signal aborted before the call: ABORT_ERR at once, nothing starts', async () => {
    const ring = makeRing();
    const controller = new AbortController();
    controller.abort('stop');
    const error = await rejection(ring.read(0, Buffer.alloc(1), 0, { signal: controller.signal }));
    expect({ name: error.name, code: error.code, cause: error.cause }).toEqual({ name: 'AbortError', code: 'ABORT_ERR', cause: 'stop' });
    expectCode(await rejection(ring.fsync(0, { signal: controller.signal })), 'AbortError', 'ABORT_ERR');
    expect(ring.stats()).toMatchObject({ operations: 0, cancels: 0, pending: 0 });
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  });

  it('abort during a read from a FIFO: the kernel cancels it, ABORT_ERR once it is done, later bytes stay in the FIFO', async () => {
    const fifo = blockingFifo(scratch());
    const ring = makeRing();
    try {
      const controller = new AbortController();
      const buffer = Buffer.alloc(64);
      const reading = ring.read(fifo.reader, buffer, null, { signal: controller.signal });
      await submitted();
      expect(await settled(reading)).toBe(false); // in the kernel, waiting for data
      expect(ring.pending).toBe(1);
      controller.abort(new Error('enough'));
      const error = await rejection(reading);
      expect({ name: error.name, code: error.code, cause: (error.cause as Error).message }).toEqual({
        name: 'AbortError',
        code: 'ABORT_ERR',
        cause: 'enough',
      });
      expect(ring.stats()).toMatchObject({ operations: 1, completions: 1, cancels: 1, pending: 0 });
      expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
      fs.writeSync(fifo.writer, Buffer.from('late bytes'));
      expect(drainFifo(fifo.reader).toString()).toBe('late bytes');
      expect(buffer.every((byte) => byte === 0)).toBe(true);
    } finally {
      fifo.close();
    }
  });

  it('abort of pooled and mapped reads in flight: the memory comes back and is usable', async () => {
    const fifo = blockingFifo(scratch());
    const pool = new BufferPool({ maxMemory: 8 * MiB, hugePages: false });
    const pooled = pool.tryAcquire(4 * KiB)!;
    const ring = makeRing({ pool });
    const mapped = allocAligned(4 * KiB, { alignment: 64 * KiB });
    try {
      const controller = new AbortController();
      const reads = [
        ring.read(fifo.reader, pooled, null, { signal: controller.signal }),
        ring.read(fifo.reader, mapped, null, { signal: controller.signal }),
      ];
      await submitted();
      controller.abort();
      for (const read of reads) expectCode(await rejection(read), 'AbortError', 'ABORT_ERR');
      expect(ring.stats()).toMatchObject({ fixed: 1, inPlace: 1, cancels: 2, pending: 0 });
      fs.writeSync(fifo.writer, Buffer.from('again'));
      expect(await ring.read(fifo.reader, pooled, null)).toBe(5);
      expect(pooled.subarray(0, 5).toString()).toBe('again');
      pool.release(pooled);
      expect(pool.stats().inUse).toBe(0);
    } finally {
      fifo.close();
      free(mapped);
      await ring.close();
      await pool.close({ force: true });
    }
  });

  it('abort of an operation still queued (the ring is full): rejected without a cancel request', async () => {
    const fifo = blockingFifo(scratch());
    const ring = makeRing({ entries: 1 });
    try {
      const first = ring.read(fifo.reader, Buffer.alloc(4), null);
      const controller = new AbortController();
      const second = ring.read(fifo.reader, Buffer.alloc(4), null, { signal: controller.signal });
      await submitted();
      expect(ring.pending).toBe(2);
      controller.abort();
      expectCode(await rejection(second), 'AbortError', 'ABORT_ERR');
      expect(ring.stats()).toMatchObject({ cancels: 0, pending: 1 });
      fs.writeSync(fifo.writer, Buffer.from('abcd'));
      await expect(first).resolves.toBe(4);
      expect(ring.stats()).toMatchObject({ operations: 2, completions: 1, pending: 0 });
    } finally {
      fifo.close();
    }
  });

  it('an abort after the operation settled changes nothing', async () => {
    const { file, data } = dataFile(scratch(), 'done.bin', 100);
    const fd = fs.openSync(file, 'r');
    const ring = makeRing();
    try {
      const controller = new AbortController();
      const buffer = Buffer.alloc(100);
      expect(await ring.read(fd, buffer, 0, { signal: controller.signal })).toBe(100);
      controller.abort();
      expect(buffer.equals(data)).toBe(true);
      expect(ring.stats()).toMatchObject({ cancels: 0, pending: 0 });
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe.skipIf(uringSkip !== '')('IoRing close', () => {
  it('close() waits for the operations in flight and refuses new ones', async () => {
    const fifo = blockingFifo(scratch());
    const ring = makeRing();
    try {
      const buffer = Buffer.alloc(16);
      const reading = ring.read(fifo.reader, buffer, null);
      await submitted();
      const closing = ring.close();
      expect(ring.closed).toBe(true);
      expectCode(await rejection(ring.read(fifo.reader, Buffer.alloc(1), null)), 'IobufError', 'ERR_IOBUF_URING_CLOSED');
      expectCode(await rejection(ring.fsync(fifo.reader)), 'IobufError', 'ERR_IOBUF_URING_CLOSED');
      expect(await settled(closing)).toBe(false);
      fs.writeSync(fifo.writer, Buffer.from('the last read'));
      expect(await reading).toBe(13);
      expect(buffer.subarray(0, 13).toString()).toBe('the last read');
      await closing;
      expect(await settled(ring.close())).toBe(true); // idempotent
      expect(ring.stats()).toMatchObject({ operations: 1, completions: 1, pending: 0 });
    } finally {
      fifo.close();
    }
  });

  it('close({ force }) cancels the operations in flight and queued: ERR_IOBUF_URING_CLOSED once the kernel is done', async () => {
    const fifo = blockingFifo(scratch());
    const ring = makeRing({ entries: 2 });
    const mapped = allocAligned(4 * KiB, { alignment: 64 * KiB });
    try {
      const reads = [
        ring.read(fifo.reader, Buffer.alloc(8), null),
        ring.read(fifo.reader, mapped, null),
        ring.read(fifo.reader, Buffer.alloc(8), null),
        ring.read(fifo.reader, Buffer.alloc(8), null),
      ];
      await submitted();
      expect(ring.pending).toBe(4);
      const outcomes = reads.map(rejection); // the queued ones reject inside close()
      await ring.close({ force: true });
      for (const outcome of outcomes) {
        const error = await outcome;
        expectCode(error, 'IobufError', 'ERR_IOBUF_URING_CLOSED');
        expect(error.message).toMatch(/closed with \{ force: true \} while this read was in flight/);
      }
      expect(ring.stats()).toMatchObject({ operations: 4, pending: 0, cancels: 2 });
      fs.writeSync(fifo.writer, Buffer.from('nobody read this'));
      expect(drainFifo(fifo.reader).toString()).toBe('nobody read this');
      expectCode(await rejection(ring.read(fifo.reader, Buffer.alloc(1), null)), 'IobufError', 'ERR_IOBUF_URING_CLOSED');
    } finally {
      fifo.close();
      free(mapped);
    }
  });

  it('close() and then close({ force }): the forced one cancels what the first was waiting for', async () => {
    const fifo = blockingFifo(scratch());
    const ring = makeRing();
    try {
      const controller = new AbortController();
      const aborted = ring.read(fifo.reader, Buffer.alloc(8), null, { signal: controller.signal });
      const plain = ring.read(fifo.reader, Buffer.alloc(8), null);
      await submitted();
      const waiting = ring.close();
      controller.abort(); // its own signal first: ABORT_ERR
      expectCode(await rejection(aborted), 'AbortError', 'ABORT_ERR');
      expect(await settled(waiting)).toBe(false);
      const forced = ring.close({ force: true });
      expectCode(await rejection(plain), 'IobufError', 'ERR_IOBUF_URING_CLOSED');
      await Promise.all([waiting, forced]);
      fs.writeSync(fifo.writer, Buffer.from('x'));
      expect(drainFifo(fifo.reader).toString()).toBe('x');
    } finally {
      fifo.close();
    }
  });

  it('close() with nothing in flight resolves at once; a closed ring still reports its stats', async () => {
    const { file } = dataFile(scratch(), 'closing.bin', 10);
    const fd = fs.openSync(file, 'r');
    const ring = makeRing();
    try {
      expect(await ring.read(fd, Buffer.alloc(10), 0)).toBe(10);
      expect(await settled(ring.close())).toBe(true);
      expect(ring.stats()).toMatchObject({ operations: 1, completions: 1, pending: 0 });
      expectCode(await rejection(ring.read(fd, Buffer.alloc(1), 0)), 'IobufError', 'ERR_IOBUF_URING_CLOSED');
    } finally {
      fs.closeSync(fd);
    }
  });
});
