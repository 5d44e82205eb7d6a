// O_DIRECT needs the buffer's address (and offset and length) aligned to the
// device's logical block size; Node's own Buffers are not. A real file on a
// real disk (not tmpfs, which refuses O_DIRECT or ignores it).
import { execFileSync } from 'node:child_process';
import { randomBytes, randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { addressOf, allocAligned, allocHuge, free, isAligned } from '../lib/index';
import { KiB, MiB } from './helpers/memory-proc';

const { O_RDWR, O_CREAT, O_DIRECT, O_RDONLY } = fs.constants;

/** A directory on a disk file system: os.tmpdir() unless it is tmpfs, then one under the repo. */
function scratchParent(): string {
  const type = (dir: string) => execFileSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' }).trim();
  const tmp = os.tmpdir();
  if (type(tmp) !== 'tmpfs') return tmp;
  return __dirname;
}

let dir = '';
let file = '';
const SIZE = 8 * MiB;
const data = randomBytes(SIZE);

beforeAll(() => {
  const parent = scratchParent();
  dir = fs.mkdtempSync(path.join(parent, `.tmp-iobuf-o-direct-${process.pid}-`));
  file = path.join(dir, 'data.bin');
  const type = execFileSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' }).trim();
  expect(type).not.toBe('tmpfs');
});

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('O_DIRECT', () => {
  test('aligned buffers round-trip 8 MiB of random bytes at offsets that are multiples of 4096', () => {
    const fd = fs.openSync(file, O_RDWR | O_CREAT | O_DIRECT, 0o600);
    try {
      // Write in chunks of mixed sizes through the heap path (alignment 4096).
      const chunkSizes = [4 * KiB, 64 * KiB, 1 * MiB, 12 * KiB];
      let offset = 0;
      let chunk = 0;
      while (offset < SIZE) {
        const length = Math.min(chunkSizes[chunk++ % chunkSizes.length], SIZE - offset);
        const buffer = allocAligned(length, { alignment: 4096 });
        data.copy(buffer, 0, offset, offset + length);
        expect(fs.writeSync(fd, buffer, 0, length, offset)).toBe(length);
        free(buffer);
        offset += length;
      }
      expect(fs.fstatSync(fd).size).toBe(SIZE);

      // Read back whole through the mapped path, then in pieces into allocHuge memory.
      const whole = allocAligned(SIZE, { alignment: 2 * MiB });
      expect(fs.readSync(fd, whole, 0, SIZE, 0)).toBe(SIZE);
      expect(whole.equals(data)).toBe(true);
      free(whole);

      const huge = allocHuge(2 * MiB, { fallback: 'normal' });
      for (let position = 0; position < SIZE; position += 2 * MiB - 4096) {
        const length = Math.min(2 * MiB, SIZE - position);
        expect(fs.readSync(fd, huge, 0, length, position)).toBe(length);
        expect(huge.subarray(0, length).equals(data.subarray(position, position + length))).toBe(true);
      }
      free(huge);
    } finally {
      fs.closeSync(fd);
    }
  });

  // Uses the file the first test wrote (tests in a file run in order).
  test('overwriting in place at 4096-multiples reads back the new bytes', () => {
    const fd = fs.openSync(file, O_RDWR | O_DIRECT);
    try {
      const patch = allocAligned(64 * KiB, { alignment: 512 * 8 });
      randomFillSync(patch);
      const position = 4096 * 37;
      expect(fs.writeSync(fd, patch, 0, patch.length, position)).toBe(patch.length);
      const check = allocAligned(128 * KiB, { alignment: 64 * KiB });
      expect(fs.readSync(fd, check, 0, check.length, position - 32 * KiB)).toBe(check.length);
      expect(check.subarray(0, 32 * KiB).equals(data.subarray(position - 32 * KiB, position))).toBe(true);
      expect(check.subarray(32 * KiB, 96 * KiB).equals(patch)).toBe(true);
      expect(check.subarray(96 * KiB).equals(data.subarray(position + 64 * KiB, position + 96 * KiB))).toBe(true);
      free(patch);
      free(check);
    } finally {
      fs.closeSync(fd);
    }
  });

  test('the same read into a misaligned Node Buffer fails with EINVAL', () => {
    const fd = fs.openSync(file, O_RDONLY | O_DIRECT);
    try {
      const misaligned = Buffer.allocUnsafeSlow(64 * KiB + 1).subarray(1);
      expect(isAligned(misaligned, 512)).toBe(false);
      let thrown: NodeJS.ErrnoException | undefined;
      try {
        fs.readSync(fd, misaligned, 0, misaligned.length, 0);
      } catch (error) {
        thrown = error as NodeJS.ErrnoException;
      }
      expect(thrown?.code).toBe('EINVAL');
      expect(thrown?.syscall).toBe('read');

      // The control: an aligned buffer of the same length on the same fd works.
      const aligned = allocAligned(64 * KiB);
      expect(addressOf(aligned) % 4096n).toBe(0n);
      expect(fs.readSync(fd, aligned, 0, aligned.length, 0)).toBe(aligned.length);
      expect(aligned.equals(data.subarray(0, 64 * KiB))).toBe(true);
      free(aligned);
    } finally {
      fs.closeSync(fd);
    }
  });
});
