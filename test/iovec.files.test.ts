// Files: preadv/pwritev round trips at offsets (sync and on the thread pool),
// arrays longer than IOV_MAX, and O_DIRECT preadv/pwritev into pooled
// page-aligned (and huge-page) buffers on the ext4 disk, bytes compared end to end.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BufferPool,
  IOV_MAX,
  IoVecArray,
  addressOf,
  preadv,
  preadvSync,
  pwritev,
  pwritevAll,
  pwritevAllSync,
  pwritevSync,
  readvSync,
  writevAllSync,
} from '../lib/index';
import { KiB, MiB } from './fixtures/pool-helpers';
import { diskScratchDir, random, randomSplit } from './fixtures/iovec-helpers';

const { O_CREAT, O_DIRECT, O_RDWR, O_TRUNC } = fs.constants;

let dir = '';
beforeAll(() => {
  dir = diskScratchDir('iovec-files');
});
afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

function open(name: string, flags = O_RDWR | O_CREAT | O_TRUNC): number {
  return fs.openSync(path.join(dir, name), flags, 0o600);
}

describe('preadv/pwritev round trips', () => {
  it('random layouts over pooled and plain buffers, at random offsets, sync and promise', async () => {
    const pool = new BufferPool({ maxMemory: 32 * MiB });
    const fd = open('round-trip.bin');
    const next = random(0x10ec);
    const FILE = 512 * KiB;
    const truth = Buffer.alloc(FILE);
    try {
      for (let round = 0; round < 60; round++) {
        const total = 1 + next(64 * KiB);
        const position = next(FILE - total);
        const lengths = randomSplit(next, total, 1 + next(24));
        const payload = randomBytes(total);
        // Write: each piece from a pooled buffer or a plain one, at a random offset inside it.
        const held: Buffer[] = [];
        const out = new IoVecArray(lengths.length);
        let at = 0;
        for (const length of lengths) {
          const pad = next(64);
          const pooled = next(2) === 0;
          const buffer = pooled ? pool.tryAcquire(length + pad + 1)! : Buffer.alloc(length + pad + 1);
          if (pooled) held.push(buffer);
          payload.copy(buffer, pad, at, at + length);
          out.push(buffer, pad, length);
          at += length;
        }
        const written = round % 2 === 0 ? pwritevSync(fd, out, position) : await pwritev(fd, out, position);
        expect(written).toBe(total);
        payload.copy(truth, position);
        // Read back through another layout, and compare with a plain read of the file.
        const readLengths = randomSplit(next, total, 1 + next(24));
        const back = readLengths.map((length) => Buffer.alloc(length));
        const into = IoVecArray.from(back);
        const read = round % 3 === 0 ? preadvSync(fd, into, position) : await preadv(fd, into, position);
        expect(read).toBe(total);
        expect(Buffer.concat(back).equals(payload)).toBe(true);
        expect(pool.stats().inUse).toBe(held.length);
        for (const buffer of held) pool.release(buffer);
        expect(pool.stats().inUse).toBe(0);
      }
      // The file as a whole is what the writes put there; the file offset never moved.
      const whole = Buffer.alloc(FILE);
      fs.readSync(fd, whole, 0, FILE, 0);
      const size = fs.fstatSync(fd).size;
      expect(whole.subarray(0, size).equals(truth.subarray(0, size))).toBe(true);
      const probe = IoVecArray.from([Buffer.alloc(16)]);
      expect(readvSync(fd, probe)).toBe(16); // offset 0: preadv/pwritev left it there
      expect(probe.entries()[0].equals(truth.subarray(0, 16))).toBe(true);
    } finally {
      fs.closeSync(fd);
      await pool.close({ force: true });
    }
  });

  it('preadv past the end reads 0; a short file gives a short read', () => {
    const fd = open('short.bin');
    try {
      fs.writeSync(fd, Buffer.from('0123456789'));
      const parts = [Buffer.alloc(4), Buffer.alloc(4), Buffer.alloc(4)];
      const iov = IoVecArray.from(parts);
      expect(preadvSync(fd, iov, 3)).toBe(7);
      expect(Buffer.concat(parts).toString('latin1')).toBe('3456789\0\0\0\0\0');
      expect(preadvSync(fd, iov, 100)).toBe(0);
    } finally {
      fs.closeSync(fd);
    }
  });

  it(`more than IOV_MAX (${IOV_MAX}) entries: pwritevAll splits them, pwritev writes the first IOV_MAX`, async () => {
    const count = IOV_MAX * 2 + 77;
    const pieces = Array.from({ length: count }, (_, i) => Buffer.from(`<${i}>`));
    const expected = Buffer.concat(pieces);
    for (const mode of ['sync', 'promise', 'writevAllSync'] as const) {
      const fd = open(`split-${mode}.bin`);
      try {
        const iov = IoVecArray.from(pieces);
        const written =
          mode === 'sync' ? pwritevAllSync(fd, iov, 5) : mode === 'promise' ? await pwritevAll(fd, iov, 5) : writevAllSync(fd, iov);
        expect(written).toBe(expected.length);
        expect(iov.length).toBe(0);
        const start = mode === 'writevAllSync' ? 0 : 5;
        expect(
          fs
            .readFileSync(path.join(dir, `split-${mode}.bin`))
            .subarray(start)
            .equals(expected),
        ).toBe(true);
      } finally {
        fs.closeSync(fd);
      }
    }
    const fd = open('split-once.bin');
    try {
      const iov = IoVecArray.from(pieces);
      const firstMax = Buffer.concat(pieces.slice(0, IOV_MAX));
      expect(pwritevSync(fd, iov, 0)).toBe(firstMax.length);
      expect(fs.readFileSync(path.join(dir, 'split-once.bin')).equals(firstMax)).toBe(true);
      expect(iov.length).toBe(count); // plain calls never advance
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe('O_DIRECT', () => {
  const SIZE = 8 * MiB;
  const data = randomBytes(SIZE);

  it('pwritevAll then preadv into pooled page-aligned buffers, bytes compared end to end', async () => {
    const pool = new BufferPool({ maxMemory: 64 * MiB, hugePages: false });
    const fd = open('direct.bin', O_RDWR | O_CREAT | O_TRUNC | O_DIRECT);
    try {
      // Write 8 MiB as 16 pooled 512 KiB buffers per call.
      const chunk = 512 * KiB;
      for (let position = 0; position < SIZE; position += 16 * chunk) {
        const buffers = Array.from({ length: 16 }, (_, i) => {
          const buffer = pool.tryAcquire(chunk)!;
          expect(addressOf(buffer) % 4096n).toBe(0n);
          data.copy(buffer, 0, position + i * chunk, position + (i + 1) * chunk);
          return buffer;
        });
        const iov = IoVecArray.from(buffers);
        expect(await pwritevAll(fd, iov, position)).toBe(16 * chunk);
        for (const buffer of buffers) pool.release(buffer);
      }
      expect(fs.fstatSync(fd).size).toBe(SIZE);
      // Read back with scatter layouts of 4 KiB-multiple pieces at 4 KiB-multiple positions.
      const next = random(0xd1ec7);
      for (let round = 0; round < 40; round++) {
        const pages = 1 + next(256);
        const position = 4096 * next(SIZE / 4096 - pages + 1);
        const lengths = randomSplit(next, pages, 1 + next(8))
          .filter((n) => n > 0)
          .map((n) => n * 4096);
        const buffers = lengths.map((length) => pool.tryAcquire(length)!);
        const iov = IoVecArray.from(buffers);
        const read = round % 2 === 0 ? preadvSync(fd, iov, position) : await preadv(fd, iov, position);
        expect(read).toBe(pages * 4096);
        expect(Buffer.concat(buffers).equals(data.subarray(position, position + pages * 4096))).toBe(true);
        for (const buffer of buffers) pool.release(buffer);
      }
      // The control: a misaligned view of the same memory is refused by the kernel, with its errno.
      const buffer = pool.tryAcquire(8192)!;
      const iov = new IoVecArray(1);
      iov.push(buffer, 1, 4096);
      let error: (Error & { code?: string; syscall?: string }) | undefined;
      try {
        preadvSync(fd, iov, 0);
      } catch (caught) {
        error = caught as Error & { code?: string; syscall?: string };
      }
      expect({ code: error?.code, syscall: error?.syscall }).toEqual({ code: 'EINVAL', syscall: 'preadv' });
      pool.release(buffer);
      expect(pool.stats().inUse).toBe(0);
    } finally {
      fs.closeSync(fd);
      await pool.close({ force: true });
    }
  });

  it('1 MiB preadv into huge-page pooled buffers', async () => {
    const pool = new BufferPool({ maxMemory: 64 * MiB, hugePages: true });
    const fd = open('direct-huge.bin', O_RDWR | O_CREAT | O_TRUNC | O_DIRECT);
    try {
      const staging = pool.tryAcquire(SIZE)!;
      data.copy(staging);
      expect(pwritevAllSync(fd, IoVecArray.from([staging]), 0)).toBe(SIZE);
      pool.release(staging);
      const halves = [pool.tryAcquire(512 * KiB)!, pool.tryAcquire(512 * KiB)!];
      const iov = IoVecArray.from(halves);
      for (let position = 0; position < SIZE; position += MiB) {
        expect(await preadv(fd, iov, position)).toBe(MiB);
        expect(halves[0].equals(data.subarray(position, position + 512 * KiB))).toBe(true);
        expect(halves[1].equals(data.subarray(position + 512 * KiB, position + MiB))).toBe(true);
      }
      for (const buffer of halves) pool.release(buffer);
      expect(pool.stats().inUse).toBe(0);
    } finally {
      fs.closeSync(fd);
      await pool.close({ force: true });
    }
  });
});
