// Gatherer.writeToFd / writeToFdSync / toIoVec over real file descriptors: a
// FIFO drained by `cat` in another process (short writes, EAGAIN, more
// segments than IOV_MAX), a regular file, a reader that goes away (EPIPE),
// a closed fd (EBADF) — and every pooled buffer back in the pool afterwards.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BufferPool } from '../lib/pool';
import { IoVecArray } from '../lib/iovec/array';
import { IOV_MAX } from '../lib/iovec/calls';
import { Gatherer } from '../lib/gather';
import { allocAligned, free } from '../lib/memory';
import { expectCode, rejection, settled, thrown } from './fixtures/pool-helpers';
import { pattern } from './fixtures/gather-helpers';
import { openFifo } from './fixtures/iovec-helpers';

const MiB = 1 << 20;
let dir = '';
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iobuf-gather-fd-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

// poison: a buffer released before the kernel has read it would reach the file as 0xA5 bytes.
const pool = new BufferPool({ maxMemory: 64 * MiB, leakDetection: 'off', poison: true });
afterAll(() => pool.close({ force: true }));
afterEach(() => expect(pool.stats().inUse).toBe(0));

/** A message of scratch fields, a large blob by reference, an owned buffer and `small` tiny blobs; returns the reference bytes. */
function buildMessage(gatherer: Gatherer, small: number): Buffer {
  const parts: Buffer[] = [];
  const at = gatherer.reserve(4);
  parts.push(Buffer.alloc(4));
  gatherer.putString('header\r\n');
  parts.push(Buffer.from('header\r\n'));
  const blob = pattern(4 * MiB + 123, 5);
  gatherer.putBytes(blob);
  parts.push(blob);
  const owned = pool.tryAcquire(100_000)!;
  pattern(100_000, 6).copy(owned);
  gatherer.putOwned(owned);
  parts.push(pattern(100_000, 6));
  for (let i = 0; i < small; i++) {
    const tiny = pattern(1 + (i % 7), i);
    gatherer.putBytes(tiny).putU16BE(i);
    const field = Buffer.alloc(2);
    field.writeUInt16BE(i);
    parts.push(tiny, field);
  }
  const expected = Buffer.concat(parts);
  gatherer.patchU32BE(at, expected.length);
  expected.writeUInt32BE(expected.length, 0);
  return expected;
}

describe('Gatherer.writeToFd', () => {
  it('delivers every byte through a full FIFO while cat drains it, across more segments than IOV_MAX', async () => {
    const { file, reader, writer } = openFifo(dir);
    const out = path.join(dir, 'cat-1.out');
    const gatherer = new Gatherer({ pool });
    const expected = buildMessage(gatherer, 600);
    expect(gatherer.segmentCount).toBeGreaterThan(IOV_MAX);
    const inUse = pool.stats().inUse;
    expect(inUse).toBeGreaterThanOrEqual(2);

    const write = gatherer.writeToFd(writer);
    // Nobody reads yet: the pipe is full, the write waits (in a pool thread), and the memory stays out.
    expect(await settled(write)).toBe(false);
    expect(gatherer.writing).toBe(true);
    expect(pool.stats().inUse).toBe(inUse);
    expectCode(
      thrown(() => gatherer.putU8(1)),
      'IobufError',
      'ERR_IOBUF_GATHERER_BUSY',
    );

    const cat = spawn('sh', ['-c', 'exec cat "$1" > "$2"', 'sh', file, out], { stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => cat.on('exit', resolve));
    try {
      expect(await write).toBe(expected.length);
    } finally {
      fs.closeSync(writer);
      fs.closeSync(reader);
    }
    expect(await exited).toBe(0);
    expect(fs.readFileSync(out).equals(expected)).toBe(true);
    expect(pool.stats().inUse).toBe(0);
    expect(gatherer.writing).toBe(false);
    expectCode(await rejection(gatherer.writeToFd(1)), 'IobufError', 'ERR_IOBUF_GATHERER_SPENT');
  });

  it('writeToFdSync writes a regular file; the gatherer is reusable after reset()', () => {
    const file = path.join(dir, 'sync.out');
    const fd = fs.openSync(file, 'w');
    const gatherer = new Gatherer({ pool });
    try {
      const first = buildMessage(gatherer, 10);
      expect(gatherer.writeToFdSync(fd)).toBe(first.length);
      expect(pool.stats().inUse).toBe(0);
      gatherer.reset().putString('second');
      expect(gatherer.writeToFdSync(fd)).toBe(6);
      expect(fs.readFileSync(file).equals(Buffer.concat([first, Buffer.from('second')]))).toBe(true);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('a reader that goes away mid-write: EPIPE with bytesWritten, every pooled buffer back', async () => {
    const { reader, writer } = openFifo(dir);
    const gatherer = new Gatherer({ pool });
    buildMessage(gatherer, 0);
    const write = gatherer.writeToFd(writer);
    expect(await settled(write)).toBe(false);
    // Wait until the pool thread has written something (a busy machine may not have run
    // the work yet; closing the reader before that gives EPIPE with bytesWritten 0).
    const piece = Buffer.alloc(4096);
    let got = 0;
    while (got === 0) {
      try {
        got = fs.readSync(reader, piece);
      } catch (error) {
        if ((error as { code?: string }).code !== 'EAGAIN') throw error;
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    }
    fs.closeSync(reader);
    const error = (await rejection(write)) as Error & { code?: string; bytesWritten?: number };
    fs.closeSync(writer);
    expect(error.code).toBe('EPIPE');
    expect(error.bytesWritten).toBeGreaterThanOrEqual(got);
    expect(error.bytesWritten).toBeLessThan(4 * MiB);
    expect(pool.stats().inUse).toBe(0);
    expectCode(
      thrown(() => gatherer.putU8(1)),
      'IobufError',
      'ERR_IOBUF_GATHERER_SPENT',
    );
  });

  it('a closed fd: EBADF, released (promise and sync forms)', async () => {
    const fd = fs.openSync(path.join(dir, 'closed.out'), 'w');
    fs.closeSync(fd);
    const gatherer = new Gatherer({ pool });
    gatherer.putU32BE(1).putOwned(pool.tryAcquire(10)!);
    expect((await rejection(gatherer.writeToFd(fd))).code).toBe('EBADF');
    expect(pool.stats().inUse).toBe(0);
    gatherer.reset().putU32BE(1);
    expect(thrown(() => gatherer.writeToFdSync(fd)).code).toBe('EBADF');
    expect(pool.stats().inUse).toBe(0);
  });

  it('a putBytes view freed before the write: ERR_IOBUF_IOVEC_INVALID, no syscall, released once, spent (promise and sync forms)', async () => {
    const file = path.join(dir, 'stale.out');
    const fd = fs.openSync(file, 'w');
    try {
      for (const form of ['promise', 'sync'] as const) {
        const gatherer = new Gatherer({ pool });
        const borrowed = allocAligned(5000, { alignment: 64 * 1024 }); // mapped: free() unmaps it
        gatherer.putU32BE(7).putOwned(pool.tryAcquire(1000)!).putBytes(borrowed).putString('tail');
        expect(pool.stats().inUse).toBe(2); // the scratch chunk and the owned buffer
        free(borrowed);
        const error = form === 'promise' ? await rejection(gatherer.writeToFd(fd)) : thrown(() => gatherer.writeToFdSync(fd));
        expectCode(error, 'IobufError', 'ERR_IOBUF_IOVEC_INVALID');
        expect(error.message).toMatch(/segment 2 is stale: the view passed to putBytes was freed or detached.*no syscall/);
        expect(fs.fstatSync(fd).size).toBe(0);
        expect(pool.stats().inUse).toBe(0);
        expect((gatherer as unknown as { iov: IoVecArray }).iov.length).toBe(0);
        expectCode(
          thrown(() => gatherer.putU8(1)),
          'IobufError',
          'ERR_IOBUF_GATHERER_SPENT',
        );
        expectCode(await rejection(gatherer.writeToFd(fd)), 'IobufError', 'ERR_IOBUF_GATHERER_SPENT');
        gatherer.reset(); // releases nothing a second time
        expect(pool.stats().inUse).toBe(0);
        expect(gatherer.putString('again').writeToFdSync(fd)).toBe(5);
        fs.ftruncateSync(fd, 0);
      }
    } finally {
      fs.closeSync(fd);
    }
  });

  it('an empty gatherer writes nothing and resolves 0; a bad fd is a RangeError and changes nothing', async () => {
    const gatherer = new Gatherer({ pool });
    expect(await gatherer.writeToFd(1)).toBe(0);
    gatherer.reset().putU8(1);
    expectCode(await rejection(gatherer.writeToFd(-1)), 'RangeError', 'ERR_OUT_OF_RANGE');
    expectCode(
      thrown(() => gatherer.writeToFdSync('1' as any)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    expect(gatherer.byteLength).toBe(1);
    gatherer.reset();
  });
});

describe('Gatherer.toIoVec', () => {
  it('fills an IoVecArray with the segments: the same memory, in order', () => {
    const gatherer = new Gatherer({ pool });
    const blob = pattern(10_000, 1);
    gatherer.putU32BE(5).putBytes(blob).putString('tail');
    using iov = new IoVecArray(8);
    iov.push(Buffer.from('before'));
    expect(gatherer.toIoVec(iov)).toBe(iov);
    expect(iov.length).toBe(4);
    expect(iov.byteLength).toBe(6 + gatherer.byteLength);
    const entries = iov.entries();
    const segments = gatherer.segments();
    for (let i = 0; i < segments.length; i++) {
      expect(entries[i + 1].buffer).toBe(segments[i].buffer);
      expect(entries[i + 1].byteOffset).toBe(segments[i].byteOffset);
      expect(entries[i + 1].length).toBe(segments[i].length);
    }
    expect(entries[2].buffer).toBe(blob.buffer); // the blob by reference
    iov.clear();
    gatherer.reset();
  });

  it('a segment whose view was detached: ERR_IOBUF_IOVEC_INVALID, adding none; the gatherer stays open', () => {
    const gatherer = new Gatherer({ pool });
    const borrowed = allocAligned(100);
    gatherer.putU8(1).putBytes(borrowed).putU8(2);
    free(borrowed);
    using iov = new IoVecArray(8);
    expectCode(
      thrown(() => gatherer.toIoVec(iov)),
      'IobufError',
      'ERR_IOBUF_IOVEC_INVALID',
    );
    expect(iov.length).toBe(0);
    gatherer.reset();
    expect(pool.stats().inUse).toBe(0);
  });

  it('refuses an array without room for every segment (ERR_IOBUF_IOVEC_FULL), adding none', () => {
    const gatherer = new Gatherer({ pool });
    gatherer.putU8(1).putBytes(Buffer.from('a')).putU8(2);
    using iov = new IoVecArray(2);
    expectCode(
      thrown(() => gatherer.toIoVec(iov)),
      'IobufError',
      'ERR_IOBUF_IOVEC_FULL',
    );
    expect(iov.length).toBe(0);
    expectCode(
      thrown(() => gatherer.toIoVec([] as any)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    gatherer.reset();
  });
});
