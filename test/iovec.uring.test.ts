// io_uring registration, for real: pool.registration() goes to
// IORING_REGISTER_BUFFERS (through a test-only addon, test/fixtures/
// iovec-uring.c, compiled here with plain cc: raw io_uring syscalls and
// <linux/io_uring.h>, no liburing, so it builds on a fresh CI machine and the
// tests run there instead of skipping), then READ_FIXED /
// WRITE_FIXED at pool.fixedBufferOf() move bytes into and out of pooled
// buffers. Registered slabs stay mapped (trim skips them) and are
// MADV_DONTFORK; the registration is append-only.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BufferPool, addressOf, writevSync } from '../lib/index';
import { KiB, MiB, expectCode, thrown, turns } from './fixtures/pool-helpers';
import { rawEntry } from './fixtures/iovec-helpers';
import { distDir, isRoot, lastJsonLine, nodeRunnableByOthers, runFixture, sanitized } from './helpers/memory-proc';

const NOBODY = 65534;

interface Uring {
  create(entries: number): object | number;
  destroy(ring: object): void;
  register(ring: object, address: bigint, count: number): number;
  unregister(ring: object): number;
  readFixed(ring: object, fd: number, address: bigint, length: number, position: number, index: number): number;
  writeFixed(ring: object, fd: number, address: bigint, length: number, position: number, index: number): number;
}

let dir = '';
let uring: Uring | null = null;
let skipReason = '';

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iobuf-iovec-uring-'));
  const headers = path.join(path.dirname(path.dirname(process.execPath)), 'include', 'node');
  const output = path.join(dir, 'iovec-uring.node');
  try {
    // LD_PRELOAD is dropped: under `npm run test:asan` the compiler must not load the ASan runtime.
    execFileSync('cc', ['-shared', '-fPIC', '-O1', `-I${headers}`, '-o', output, path.join(__dirname, 'fixtures', 'iovec-uring.c')], {
      stdio: 'pipe',
      env: { ...process.env, LD_PRELOAD: '' },
    });
  } catch (error) {
    skipReason = `cannot build the io_uring test helper (needs cc): ${String((error as { stderr?: Buffer }).stderr ?? error).split('\n')[0]}`;
    return;
  }
  fs.chmodSync(dir, 0o755); // the RLIMIT_MEMLOCK test's child runs as nobody and loads the helper
  uring = require(output) as Uring;
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** The smaps VmFlags of the mapping that holds `address`. */
function vmFlags(address: bigint): string[] {
  let inside = false;
  for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const range = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (range) {
      inside = address >= BigInt(`0x${range[1]}`) && address < BigInt(`0x${range[2]}`);
      continue;
    }
    if (inside && line.startsWith('VmFlags:')) return line.slice(8).trim().split(/\s+/);
  }
  return [];
}

describe('io_uring registration', () => {
  it('IORING_REGISTER_BUFFERS over pool.registration(), then READ_FIXED/WRITE_FIXED at fixedBufferOf()', (context) => {
    if (uring === null) {
      context.skip(skipReason);
      return;
    }
    const created = uring.create(8);
    expect(typeof created).toBe('object');
    const ring = created as object;
    const pool = new BufferPool({ maxMemory: 32 * MiB, retainIdle: 0, hugePages: false });
    const file = path.join(dir, 'data.bin');
    const data = randomBytes(4 * MiB);
    fs.writeFileSync(file, data);
    const fd = fs.openSync(file, 'r+');
    try {
      // Three size classes: three slabs.
      const buffers = [pool.tryAcquire(4 * KiB)!, pool.tryAcquire(4 * KiB)!, pool.tryAcquire(64 * KiB)!, pool.tryAcquire(300 * KiB)!];
      const registration = pool.registration();
      expect(registration.length).toBe(3);
      // Each entry is one whole slab: page-aligned base, page-multiple length, DONTFORK ("dc").
      for (let i = 0; i < registration.length; i++) {
        const [base, length] = rawEntry(registration, i);
        expect(base % 4096n).toBe(0n);
        expect(length % 4096n).toBe(0n);
        expect(vmFlags(base)).toContain('dc');
      }
      for (const buffer of buffers) {
        const fixed = pool.fixedBufferOf(buffer)!;
        expect(fixed).not.toBeNull();
        const [base, length] = rawEntry(registration, fixed.index);
        expect(base + BigInt(fixed.offset)).toBe(addressOf(buffer));
        expect(BigInt(fixed.offset + buffer.length) <= length).toBe(true);
      }
      expect(pool.fixedBufferOf(buffers[0].subarray(1))).toBeNull();
      expect(pool.fixedBufferOf(Buffer.alloc(10))).toBeNull();

      expect(uring.register(ring, registration.address, registration.length)).toBe(0);
      // READ_FIXED into every pooled buffer, at different file positions.
      buffers.forEach((buffer, i) => {
        const fixed = pool.fixedBufferOf(buffer)!;
        const position = (i + 1) * 100 * KiB;
        expect(uring!.readFixed(ring, fd, addressOf(buffer), buffer.length, position, fixed.index)).toBe(buffer.length);
        expect(buffer.equals(data.subarray(position, position + buffer.length))).toBe(true);
      });
      // WRITE_FIXED from a pooled buffer; the file has the bytes.
      const patch = buffers[2];
      patch.fill(0x7e);
      expect(uring.writeFixed(ring, fd, addressOf(patch), patch.length, 8192, pool.fixedBufferOf(patch)!.index)).toBe(patch.length);
      const back = Buffer.alloc(patch.length);
      fs.readSync(fd, back, 0, back.length, 8192);
      expect(back.equals(patch)).toBe(true);
      // Outside the registered range: the kernel refuses (EFAULT), the process lives.
      const wrongIndex = pool.fixedBufferOf(buffers[3])!.index === 0 ? 1 : 0;
      expect(uring.readFixed(ring, fd, addressOf(buffers[3]), buffers[3].length, 0, wrongIndex)).toBe(-14);
      expect(uring.unregister(ring)).toBe(0);
      for (const buffer of buffers) pool.release(buffer);
      expect(pool.stats().inUse).toBe(0);
    } finally {
      fs.closeSync(fd);
      uring.destroy(ring);
      void pool.close({ force: true });
    }
  });

  it('registered slabs are never trimmed; the registration is append-only; close() ends it', async (context) => {
    if (uring === null) {
      context.skip(skipReason);
      return;
    }
    const pool = new BufferPool({ maxMemory: 32 * MiB, retainIdle: 0, hugePages: false });
    const empty = pool.registration();
    expect(empty.length).toBe(0);

    const first = pool.tryAcquire(16 * KiB)!;
    const registration = pool.registration();
    expect(registration.length).toBe(1);
    const [base, length] = rawEntry(registration, 0);
    pool.release(first);
    // An unregistered slab of another class, released too: retainIdle 0 gives it back at once.
    const other = pool.tryAcquire(128 * KiB)!;
    expect(pool.fixedBufferOf(other)).toBeNull();
    pool.release(other);
    await turns();
    // Only the registered slab is still mapped.
    expect(pool.stats().osBytes).toBe(Number(length));
    expect(vmFlags(base)).toContain('dc');

    // New slabs after registration: a later call keeps index 0 and appends.
    const again = pool.tryAcquire(16 * KiB)!;
    expect(pool.fixedBufferOf(again)).toEqual({ index: 0, offset: Number(addressOf(again) - base) });
    const newer = pool.tryAcquire(256 * KiB)!;
    expect(pool.fixedBufferOf(newer)).toBeNull();
    const grown = pool.registration();
    expect(grown.length).toBe(2);
    expect(rawEntry(grown, 0)).toEqual([base, length]);
    expect(pool.fixedBufferOf(newer)).toEqual({ index: 1, offset: Number(addressOf(newer) - rawEntry(grown, 1)[0]) });

    // A real ring takes the grown array too, and READ_FIXED works at index 1.
    const ring = uring.create(4) as object;
    const file = path.join(dir, 'grown.bin');
    const data = randomBytes(newer.length);
    fs.writeFileSync(file, data);
    const fd = fs.openSync(file, 'r');
    try {
      expect(uring.register(ring, grown.address, grown.length)).toBe(0);
      expect(uring.readFixed(ring, fd, addressOf(newer), newer.length, 0, 1)).toBe(newer.length);
      expect(newer.equals(data)).toBe(true);
      expect(uring.unregister(ring)).toBe(0);
    } finally {
      fs.closeSync(fd);
      uring.destroy(ring);
    }
    pool.release(again);
    pool.release(newer);
    expect(pool.stats().inUse).toBe(0);

    // close() unmaps everything: the registration's entries are stale from then on.
    await pool.close();
    expectCode(
      thrown(() => writevSync(1, grown)),
      'IobufError',
      'ERR_IOBUF_IOVEC_INVALID',
    );
    expectCode(
      thrown(() => pool.registration()),
      'IobufError',
      'ERR_IOBUF_POOL_CLOSED',
    );
  });

  // Skipped under ASan like test/memory.lock.test.ts: the preloaded runtime does not
  // follow a child that drops to another user.
  it.skipIf(sanitized)('RLIMIT_MEMLOCK: an unprivileged user registers 6 MiB of slabs, and gets ENOMEM for 12 MiB', (context) => {
    if (uring === null) {
      context.skip(skipReason);
      return;
    }
    const limit = Number(/^Max locked memory\s+(\d+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'))?.[1]);
    expect(limit, 'RLIMIT_MEMLOCK must be 8 MiB for this test').toBe(8 * MiB);
    if (isRoot) {
      for (const file of [path.join(distDir, 'index.js'), path.join(distDir, 'iovec'), path.join(distDir, 'iovec', 'array.js')]) {
        expect((fs.statSync(file).mode & 0o004) !== 0, `${file} must be world-readable for the nobody child`).toBe(true);
      }
    }
    const result = runFixture(
      'iovec-memlock.js',
      [path.join(dir, 'iovec-uring.node')],
      isRoot ? { uid: NOBODY, gid: NOBODY, cwd: '/', execPath: nodeRunnableByOthers() } : {},
    );
    expect({ status: result.status, signal: result.signal, stderr: result.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
    const report = lastJsonLine<Record<string, unknown>>(result);
    expect(report).toEqual({
      uid: isRoot ? NOBODY : process.getuid!(),
      ring: 'ok',
      smallBytes: 6 * MiB,
      small: 0,
      readFixed: true,
      largeBytes: 12 * MiB,
      large: -12,
    });
  });
});
