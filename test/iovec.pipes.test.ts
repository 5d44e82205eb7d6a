// Pipes: a non-blocking FIFO filled until writev is short and then refused
// with EAGAIN; writevAll (promise: the waiting happens in a pool thread) and
// writevAllSync (this thread blocks in poll while `cat` drains) still deliver
// every byte, in order.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BufferPool, IoVecArray, readv, readvSync, writevAll, writevAllSync, writevSync } from '../lib/index';
import { KiB, MiB, thrown } from './fixtures/pool-helpers';
import { makeFifo, openFifo, random, randomSplit } from './fixtures/iovec-helpers';

const { O_NONBLOCK, O_WRONLY } = fs.constants;

let dir = '';
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iobuf-iovec-pipes-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** `payload` cut into `pieces` entries over pooled buffers at random offsets. */
function layout(pool: BufferPool, payload: Buffer, pieces: number, seed: number): { iov: IoVecArray; held: Buffer[] } {
  const next = random(seed);
  const lengths = randomSplit(next, payload.length, pieces);
  const iov = new IoVecArray(pieces);
  const held: Buffer[] = [];
  let at = 0;
  for (const length of lengths) {
    const pad = next(32);
    const buffer = pool.tryAcquire(length + pad + 1)!;
    held.push(buffer);
    payload.copy(buffer, pad, at, at + length);
    iov.push(buffer, pad, length);
    at += length;
  }
  return { iov, held };
}

describe('non-blocking pipes', () => {
  it('writev is short when the pipe fills, then EAGAIN (code, errno, syscall); readv of an empty pipe is EAGAIN', () => {
    const { reader, writer } = openFifo(dir);
    try {
      const chunk = Buffer.alloc(30_000, 0x61);
      const iov = IoVecArray.from([chunk, chunk, chunk]);
      let total = 0;
      let short = false;
      let again: (Error & { code?: string; errno?: number; syscall?: string }) | undefined;
      for (let i = 0; i < 1000 && again === undefined; i++) {
        try {
          const written = writevSync(writer, iov);
          total += written;
          if (written < iov.byteLength) short = true;
        } catch (error) {
          again = error as typeof again;
        }
      }
      expect(short).toBe(true);
      expect({ code: again?.code, errno: again?.errno, syscall: again?.syscall }).toEqual({
        code: 'EAGAIN',
        errno: -11,
        syscall: 'writev',
      });
      // Everything that was reported written is in the pipe, and nothing more.
      const drain = Buffer.alloc(total + 1);
      const into = IoVecArray.from([drain]);
      expect(readvSync(reader, into)).toBe(total);
      expect(drain.subarray(0, total).every((byte) => byte === 0x61)).toBe(true);
      const error = thrown(() => readvSync(reader, into)) as Error & { code?: string; syscall?: string };
      expect({ code: error.code, syscall: error.syscall }).toEqual({ code: 'EAGAIN', syscall: 'readv' });
    } finally {
      fs.closeSync(reader);
      fs.closeSync(writer);
    }
  });

  it('a promise readv on a blocking pipe waits in the thread pool while the event loop runs on', async () => {
    const file = makeFifo(dir);
    // A blocking read end (opened in the thread pool: open blocks until a writer comes),
    // and a non-blocking write end (ENXIO until the reader is there).
    const opening = fs.promises.open(file, 'r');
    let writer = -1;
    while (writer < 0) {
      try {
        writer = fs.openSync(file, O_WRONLY | O_NONBLOCK);
      } catch (error) {
        if ((error as { code?: string }).code !== 'ENXIO') throw error;
        await nextTurn();
      }
    }
    const handle = await opening;
    try {
      const parts = [Buffer.alloc(3), Buffer.alloc(5)];
      const iov = IoVecArray.from(parts);
      const pending = readv(handle.fd, iov);
      let settled = false;
      void pending.then(() => {
        settled = true;
      });
      let turns = 0;
      for (; turns < 50; turns++) await nextTurn();
      expect({ settled, turns }).toEqual({ settled: false, turns: 50 });
      expect(writevSync(writer, IoVecArray.from([Buffer.from('abcdefgh')]))).toBe(8);
      expect(await pending).toBe(8);
      expect(parts.map(String)).toEqual(['abc', 'defgh']);
    } finally {
      fs.closeSync(writer);
      await handle.close();
    }
  });

  it('writevAll delivers 8 MiB in 300 entries, in order, to a reader on this thread', async () => {
    const pool = new BufferPool({ maxMemory: 64 * MiB });
    const { reader, writer } = openFifo(dir);
    const payload = randomBytes(8 * MiB);
    const { iov, held } = layout(pool, payload, 300, 7);
    try {
      const pending = writevAll(writer, iov);
      let settled = false;
      void pending.then(
        () => {
          settled = true;
        },
        () => {
          settled = true;
        },
      );
      // Read it all back in small, differently-cut reads while the pool thread writes.
      const received = Buffer.alloc(payload.length);
      let at = 0;
      let settledEarly = false;
      const piece = Buffer.alloc(48 * KiB + 5);
      const into = IoVecArray.from([piece]);
      while (at < payload.length) {
        let got = 0;
        try {
          got = readvSync(reader, into);
        } catch (error) {
          if ((error as { code?: string }).code !== 'EAGAIN') throw error;
          await nextTurn();
          continue;
        }
        piece.copy(received, at, 0, got);
        at += got;
        // The pipe holds 64 KiB: the call cannot have finished before most of it was read here.
        if (at < payload.length - MiB && settled) settledEarly = true;
      }
      expect(await pending).toBe(payload.length);
      expect(settled).toBe(true);
      expect(received.equals(payload)).toBe(true);
      expect(iov.length).toBe(0);
      expect(settledEarly).toBe(false);
    } finally {
      fs.closeSync(reader);
      fs.closeSync(writer);
      for (const buffer of held) pool.release(buffer);
      expect(pool.stats().inUse).toBe(0);
      await pool.close();
    }
  });

  it('writevAllSync delivers every byte while `cat` drains the pipe in another process', async () => {
    const pool = new BufferPool({ maxMemory: 64 * MiB });
    const { file, reader, writer } = openFifo(dir);
    const out = path.join(dir, 'cat.out');
    const payload = randomBytes(4 * MiB + 12345);
    const { iov, held } = layout(pool, payload, 2500, 11); // more than IOV_MAX entries, too
    const cat = spawn('sh', ['-c', 'exec cat "$1" > "$2"', 'sh', file, out], { stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => cat.on('exit', resolve));
    try {
      // Fill the pipe first, so the call below must wait for cat (our own reader never reads).
      expect(writevAllSync(writer, iov)).toBe(payload.length);
      expect(iov.length).toBe(0);
    } finally {
      fs.closeSync(writer);
      fs.closeSync(reader);
      for (const buffer of held) pool.release(buffer);
    }
    expect(await exited).toBe(0);
    expect(fs.readFileSync(out).equals(payload)).toBe(true);
    expect(pool.stats().inUse).toBe(0);
    await pool.close();
  });

  it('EPIPE when the reader goes away midway: the error says how much was written, the array was advanced past it', async () => {
    const { reader, writer } = openFifo(dir);
    const payload = randomBytes(1 * MiB);
    const iov = IoVecArray.from([payload.subarray(0, 300 * KiB), payload.subarray(300 * KiB)]);
    const pending = writevAll(writer, iov);
    // Take at least 100 KiB out, then close the only reader: the rest cannot go anywhere.
    const received: Buffer[] = [];
    let got = 0;
    const piece = Buffer.alloc(16 * KiB);
    const into = IoVecArray.from([piece]);
    while (got < 100 * KiB) {
      try {
        const n = readvSync(reader, into);
        received.push(Buffer.from(piece.subarray(0, n)));
        got += n;
      } catch (error) {
        if ((error as { code?: string }).code !== 'EAGAIN') throw error;
        await nextTurn();
      }
    }
    fs.closeSync(reader);
    let error: (Error & { code?: string; bytesWritten?: number; syscall?: string }) | undefined;
    try {
      await pending;
    } catch (caught) {
      error = caught as typeof error;
    }
    fs.closeSync(writer);
    expect({ code: error?.code, syscall: error?.syscall }).toEqual({ code: 'EPIPE', syscall: 'writev' });
    const written = error!.bytesWritten!;
    expect(written).toBeGreaterThanOrEqual(got);
    expect(written).toBeLessThan(payload.length);
    expect(Buffer.concat(received).equals(payload.subarray(0, got))).toBe(true);
    // What is left in the array is exactly the bytes that were not written.
    expect(iov.byteLength).toBe(payload.length - written);
    expect(Buffer.concat(iov.entries()).equals(payload.subarray(written))).toBe(true);
  });
});
