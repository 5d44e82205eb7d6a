// IoRing on real files (ext4, with and without O_DIRECT): the bytes, the
// counts (fixed / in place / bounced, submissions per tick) and the error
// codes, for every kind of memory a read or write can be given.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BufferPool, IoRing, IoVecArray, allocAligned, allocHuge, free, pageSize } from '../lib/index';
import { KiB, MiB, expectCode, rejection, thrown } from './fixtures/pool-helpers';
import { random } from './fixtures/iovec-helpers';
import { dataFile, submitted, uringSkip, useRings, useScratchDir } from './fixtures/uring-helpers';

const scratch = useScratchDir('uring-files');
const makeRing = useRings();
const { O_RDONLY, O_RDWR, O_DIRECT, O_CREAT, O_TRUNC } = fs.constants;

describe.skipIf(uringSkip !== '')('IoRing on real files', () => {
  it('reads into V8-heap views through a bounce buffer: the bytes of the file at each position', async () => {
    const { file, data } = dataFile(scratch(), 'heap.bin', 256 * KiB);
    const fd = fs.openSync(file, O_RDONLY);
    const ring = makeRing();
    try {
      const buffer = Buffer.alloc(5000);
      expect(await ring.read(fd, buffer, 12345)).toBe(5000);
      expect(buffer.equals(data.subarray(12345, 17345))).toBe(true);
      // Other view types: whole bytes of the view, wherever it starts in its ArrayBuffer.
      const words = new Uint32Array(new ArrayBuffer(64 * 4 + 8), 8, 64);
      expect(await ring.read(fd, words, 100)).toBe(256);
      expect(Buffer.from(words.buffer, 8, 256).equals(data.subarray(100, 356))).toBe(true);
      const view = new DataView(new ArrayBuffer(300), 20, 200);
      expect(await ring.read(fd, view, 7)).toBe(200);
      expect(Buffer.from(view.buffer, 20, 200).equals(data.subarray(7, 207))).toBe(true);
      expect(ring.stats()).toMatchObject({ operations: 3, completions: 3, bounced: 3, fixed: 0, inPlace: 0, pending: 0 });
    } finally {
      fs.closeSync(fd);
    }
  });

  it("reads into the pool's registered slabs are READ_FIXED, subarrays too; indices are the pool's", async () => {
    const { file, data } = dataFile(scratch(), 'fixed.bin', 1 * MiB);
    const fd = fs.openSync(file, O_RDONLY);
    const pool = new BufferPool({ maxMemory: 32 * MiB, hugePages: false });
    const small = pool.tryAcquire(4 * KiB)!;
    const large = pool.tryAcquire(64 * KiB)!;
    const ring = makeRing({ pool });
    try {
      expect(ring.stats().fixedBuffers).toBe(2);
      expect(pool.fixedBufferOf(small)!.index).not.toBe(pool.fixedBufferOf(large)!.index);
      expect(await ring.read(fd, small, 4096)).toBe(4 * KiB);
      expect(await ring.read(fd, large, 65536)).toBe(64 * KiB);
      expect(await ring.read(fd, large.subarray(100, 200), 0)).toBe(100);
      expect(small.equals(data.subarray(4096, 8192))).toBe(true);
      expect(large.subarray(100, 200).equals(data.subarray(0, 100))).toBe(true);
      expect(large.subarray(200).equals(data.subarray(65536 + 200, 131072))).toBe(true);
      expect(ring.stats()).toMatchObject({ fixed: 3, inPlace: 0, bounced: 0 });
      pool.release(small);
      pool.release(large);
      expect(pool.stats().inUse).toBe(0);
    } finally {
      fs.closeSync(fd);
      await ring.close();
      await pool.close({ force: true });
    }
  });

  it('a slab mapped after the ring was made is registered at its first operation, READ_FIXED from then on', async () => {
    const { file, data } = dataFile(scratch(), 'late.bin', 512 * KiB);
    const fd = fs.openSync(file, O_RDONLY);
    const pool = new BufferPool({ maxMemory: 32 * MiB, hugePages: false });
    const early = pool.tryAcquire(4 * KiB)!;
    const ring = makeRing({ pool }); // registers the one slab mapped so far, as index 0
    try {
      expect(ring.stats().fixedBuffers).toBe(1);
      const buffer = pool.tryAcquire(128 * KiB)!;
      expect(await ring.read(fd, buffer, 0)).toBe(128 * KiB); // in place (pinned), and registers the slab
      expect(ring.stats()).toMatchObject({ inPlace: 1, fixed: 0, fixedBuffers: 2 });
      expect(pool.fixedBufferOf(buffer)!.index).toBe(1);
      expect(await ring.read(fd, buffer, 128 * KiB)).toBe(128 * KiB);
      expect(await ring.read(fd, early, 256 * KiB)).toBe(4 * KiB);
      expect(ring.stats()).toMatchObject({ inPlace: 1, fixed: 2 });
      expect(buffer.equals(data.subarray(128 * KiB, 256 * KiB))).toBe(true);
      expect(early.equals(data.subarray(256 * KiB, 260 * KiB))).toBe(true);
      pool.release(early);
      // A dedicated (oversize) allocation is never registered: in place, every time.
      const oversize = pool.tryAcquire(8 * MiB)!;
      expect(await ring.read(fd, oversize.subarray(0, 1000), 5)).toBe(1000);
      expect(await ring.read(fd, oversize, 0)).toBe(512 * KiB);
      expect(ring.stats()).toMatchObject({ inPlace: 3, fixed: 2, fixedBuffers: 2 });
      expect(oversize.subarray(0, 512 * KiB).equals(data)).toBe(true);
      pool.release(buffer);
      pool.release(oversize);
    } finally {
      fs.closeSync(fd);
      await ring.close();
      await pool.close({ force: true });
    }
  });

  it('unregistered native memory (mapped allocAligned, allocHuge) is used in place', async () => {
    const { file, data } = dataFile(scratch(), 'native.bin', 4 * MiB);
    const fd = fs.openSync(file, O_RDONLY);
    const ring = makeRing();
    const mapped = allocAligned(64 * KiB, { alignment: 64 * KiB });
    const huge = allocHuge(2 * MiB, { fallback: 'normal' });
    try {
      expect(await ring.read(fd, mapped, 3)).toBe(64 * KiB);
      expect(await ring.read(fd, huge, MiB)).toBe(2 * MiB);
      expect(mapped.equals(data.subarray(3, 3 + 64 * KiB))).toBe(true);
      expect(huge.equals(data.subarray(MiB, 3 * MiB))).toBe(true);
      expect(ring.stats()).toMatchObject({ inPlace: 2, bounced: 0, fixed: 0 });
    } finally {
      fs.closeSync(fd);
      free(mapped);
      free(huge);
    }
  });

  it('O_DIRECT: aligned memory of every kind reads the file; misaligned memory or offsets are EINVAL', async () => {
    const { file, data } = dataFile(scratch(), 'direct.bin', 1 * MiB);
    const fd = fs.openSync(file, O_RDONLY | O_DIRECT);
    const pool = new BufferPool({ maxMemory: 32 * MiB, hugePages: false });
    const pooled = pool.tryAcquire(64 * KiB)!;
    const ring = makeRing({ pool });
    const mapped = allocAligned(64 * KiB, { alignment: 64 * KiB });
    const heapAligned = allocAligned(64 * KiB); // V8 heap, page-aligned: bounced at the same alignment
    try {
      expect(await ring.read(fd, pooled, 0)).toBe(64 * KiB);
      expect(await ring.read(fd, mapped, 64 * KiB)).toBe(64 * KiB);
      expect(await ring.read(fd, heapAligned, 128 * KiB)).toBe(64 * KiB);
      expect(pooled.equals(data.subarray(0, 64 * KiB))).toBe(true);
      expect(mapped.equals(data.subarray(64 * KiB, 128 * KiB))).toBe(true);
      expect(heapAligned.equals(data.subarray(128 * KiB, 192 * KiB))).toBe(true);
      expect(ring.stats()).toMatchObject({ fixed: 1, inPlace: 1, bounced: 1 });

      // Misaligned memory, in place and through a bounce buffer (which keeps the
      // address modulo 4096, so the kernel refuses it exactly as it would in place).
      for (const view of [pooled.subarray(1, 4097), mapped.subarray(512 + 1, 4096 + 513), heapAligned.subarray(3, 4099)]) {
        const error = await rejection(ring.read(fd, view, 0));
        expect({
          name: error.name,
          code: error.code,
          errno: (error as { errno?: number }).errno,
          syscall: (error as { syscall?: string }).syscall,
        }).toEqual({ name: 'IobufError', code: 'EINVAL', errno: -22, syscall: 'read' });
      }
      // A misaligned file offset, and a length that is not a multiple of the block size.
      expectCode(await rejection(ring.read(fd, pooled.subarray(0, 4096), 100)), 'IobufError', 'EINVAL');
      expectCode(await rejection(ring.read(fd, mapped.subarray(0, 1000), 0)), 'IobufError', 'EINVAL');
      // The heap view's bytes were not touched by the refused read.
      expect(heapAligned.equals(data.subarray(128 * KiB, 192 * KiB))).toBe(true);
      pool.release(pooled);
      expect(pool.stats().inUse).toBe(0);
    } finally {
      fs.closeSync(fd);
      free(mapped);
      await ring.close();
      await pool.close({ force: true });
    }
  });

  it('short reads and end of file, buffered and O_DIRECT', async () => {
    const { file, data } = dataFile(scratch(), 'short.bin', 10000);
    const buffered = fs.openSync(file, O_RDONLY);
    const direct = fs.openSync(file, O_RDONLY | O_DIRECT);
    const ring = makeRing();
    const aligned = allocAligned(8192, { alignment: 8192 });
    try {
      const heap = Buffer.alloc(8192, 0xee);
      expect(await ring.read(buffered, heap, 8192)).toBe(10000 - 8192);
      expect(heap.subarray(0, 1808).equals(data.subarray(8192))).toBe(true);
      expect(heap.subarray(1808).every((byte) => byte === 0xee)).toBe(true); // beyond the bytes read: untouched
      expect(await ring.read(buffered, heap, 10000)).toBe(0);
      expect(await ring.read(buffered, heap, 1 << 30)).toBe(0);
      expect(await ring.read(direct, aligned, 8192)).toBe(1808);
      expect(aligned.subarray(0, 1808).equals(data.subarray(8192))).toBe(true);
      expect(await ring.read(direct, aligned, 12288)).toBe(0);
      expect(await ring.read(buffered, Buffer.alloc(0), 0)).toBe(0);
    } finally {
      fs.closeSync(buffered);
      fs.closeSync(direct);
      free(aligned);
    }
  });

  it('writes from heap, pooled (WRITE_FIXED) and mapped memory, buffered and O_DIRECT; fsync and fdatasync', async () => {
    const file = path.join(scratch(), 'written.bin');
    const fd = fs.openSync(file, O_RDWR | O_CREAT | O_TRUNC);
    const pool = new BufferPool({ maxMemory: 32 * MiB, hugePages: false });
    const pooled = pool.tryAcquire(8 * KiB)!.fill(0x11);
    const ring = makeRing({ pool });
    const mapped = allocAligned(8 * KiB, { alignment: 8 * KiB }).fill(0x22);
    try {
      const heap = Buffer.alloc(8 * KiB, 0x33);
      expect(await ring.write(fd, pooled, 0)).toBe(8 * KiB);
      expect(await ring.write(fd, mapped, 8 * KiB)).toBe(8 * KiB);
      expect(await ring.write(fd, heap, 16 * KiB)).toBe(8 * KiB);
      heap.fill(0x44); // after the write settled: the bytes written were a copy made at the call
      expect(await ring.fsync(fd)).toBe(0);
      expect(await ring.fsync(fd, { datasync: true })).toBe(0);
      const back = fs.readFileSync(file);
      expect(back.length).toBe(24 * KiB);
      expect(back.subarray(0, 8 * KiB).every((byte) => byte === 0x11)).toBe(true);
      expect(back.subarray(8 * KiB, 16 * KiB).every((byte) => byte === 0x22)).toBe(true);
      expect(back.subarray(16 * KiB).every((byte) => byte === 0x33)).toBe(true);
      expect(ring.stats()).toMatchObject({ fixed: 1, inPlace: 1, bounced: 1, operations: 5 });

      const direct = fs.openSync(file, fs.constants.O_WRONLY | O_DIRECT);
      try {
        expect(await ring.write(direct, mapped, 4096)).toBe(8 * KiB);
        expectCode(await rejection(ring.write(direct, mapped.subarray(1, 4097), 0)), 'IobufError', 'EINVAL');
      } finally {
        fs.closeSync(direct);
      }
      expect(
        fs
          .readFileSync(file)
          .subarray(4096, 12288)
          .every((byte) => byte === 0x22),
      ).toBe(true);
      pool.release(pooled);
    } finally {
      fs.closeSync(fd);
      free(mapped);
      await ring.close();
      await pool.close({ force: true });
    }
  });

  it('readv/writev over an IoVecArray of pooled, mapped and heap views; the array is lent until settled', async () => {
    const { file, data } = dataFile(scratch(), 'vectored.bin', 256 * KiB);
    const fd = fs.openSync(file, O_RDWR);
    const pool = new BufferPool({ maxMemory: 32 * MiB, hugePages: false });
    const pooled = pool.tryAcquire(4 * KiB)!;
    const ring = makeRing({ pool });
    const mapped = allocAligned(10000, { alignment: 64 * KiB });
    const heap = Buffer.alloc(3000);
    try {
      const iov = IoVecArray.from([pooled, heap, mapped.subarray(0, 5000)]);
      const reading = ring.readv(fd, iov, 1000);
      expectCode(
        (() => {
          try {
            iov.push(heap);
          } catch (error) {
            return error as Error & { code?: string };
          }
          throw new Error('no throw');
        })(),
        'IobufError',
        'ERR_IOBUF_IOVEC_BUSY',
      );
      expect(await reading).toBe(4096 + 3000 + 5000);
      expect(Buffer.concat([pooled, heap, mapped.subarray(0, 5000)]).equals(data.subarray(1000, 1000 + 12096))).toBe(true);
      expect(ring.stats()).toMatchObject({ inPlace: 1, bounced: 1 }); // one call: registered and mapped in place, heap bounced
      // A short readv at the end of the file fills the entries in order.
      heap.fill(0);
      expect(await ring.readv(fd, iov, 256 * KiB - 5000)).toBe(5000);
      expect(pooled.equals(data.subarray(256 * KiB - 5000, 256 * KiB - 904))).toBe(true);
      expect(heap.subarray(0, 904).equals(data.subarray(256 * KiB - 904))).toBe(true);
      expect(heap.subarray(904).every((byte) => byte === 0)).toBe(true);

      pooled.fill(1);
      heap.fill(2);
      mapped.fill(3);
      expect(await ring.writev(fd, iov, 0)).toBe(12096);
      iov.clear(); // repaid: usable again
      const back = fs.readFileSync(file).subarray(0, 12096);
      expect(back.equals(Buffer.concat([Buffer.alloc(4096, 1), Buffer.alloc(3000, 2), Buffer.alloc(5000, 3)]))).toBe(true);
      iov.close();
      pool.release(pooled);
    } finally {
      fs.closeSync(fd);
      free(mapped);
      await ring.close();
      await pool.close({ force: true });
    }
  });

  it('position null reads and writes at the file position and advances it', async () => {
    const { file, data } = dataFile(scratch(), 'cursor.bin', 10000);
    const fd = fs.openSync(file, O_RDONLY);
    const ring = makeRing();
    try {
      const first = Buffer.alloc(3000);
      const second = Buffer.alloc(3000);
      expect(await ring.read(fd, first)).toBe(3000);
      expect(await ring.read(fd, second, null)).toBe(3000);
      expect(Buffer.concat([first, second]).equals(data.subarray(0, 6000))).toBe(true);
      expect(await ring.read(fd, first, 0)).toBe(3000); // a position leaves the file position alone
      expect(await ring.read(fd, second)).toBe(3000);
      expect(second.equals(data.subarray(6000, 9000))).toBe(true);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('operations started in one tick go to the kernel in one io_uring_enter', async () => {
    const { file, data } = dataFile(scratch(), 'batch.bin', 1 * MiB);
    const fd = fs.openSync(file, O_RDONLY);
    const pool = new BufferPool({ maxMemory: 32 * MiB, hugePages: false });
    const buffers = Array.from({ length: 64 }, () => pool.tryAcquire(4 * KiB)!);
    const ring = makeRing({ pool });
    try {
      const before = ring.stats();
      const reads = buffers.map((buffer, i) => ring.read(fd, buffer, i * 8192));
      expect(ring.stats().submitCalls).toBe(before.submitCalls); // nothing submitted yet in this tick
      expect(ring.pending).toBe(64);
      await submitted();
      expect(ring.stats().submitCalls).toBe(before.submitCalls + 1);
      expect(await Promise.all(reads)).toEqual(buffers.map(() => 4 * KiB));
      buffers.forEach((buffer, i) => expect(buffer.equals(data.subarray(i * 8192, i * 8192 + 4096))).toBe(true));
      const after = ring.stats();
      expect(after.submitCalls).toBe(before.submitCalls + 1);
      expect(after).toMatchObject({ operations: 64, completions: 64, fixed: 64, pending: 0 });
      expect(after.wakeups).toBeGreaterThanOrEqual(1);
      expect(after.wakeups).toBeLessThanOrEqual(64);
      for (const buffer of buffers) pool.release(buffer);
    } finally {
      fs.closeSync(fd);
      await ring.close();
      await pool.close({ force: true });
    }
  });

  it('more operations than entries wait in a queue, in order, and every one completes', async () => {
    const { file, data } = dataFile(scratch(), 'queue.bin', 256 * KiB);
    const fd = fs.openSync(file, O_RDONLY);
    const ring = makeRing({ entries: 4 });
    try {
      expect(ring.entries).toBe(4);
      const buffers = Array.from({ length: 200 }, () => Buffer.alloc(1000));
      const results = await Promise.all(buffers.map((buffer, i) => ring.read(fd, buffer, i * 1000)));
      expect(results).toEqual(buffers.map((_, i) => Math.min(1000, 256 * KiB - i * 1000)));
      buffers.forEach((buffer, i) =>
        expect(buffer.subarray(0, results[i]).equals(data.subarray(i * 1000, i * 1000 + results[i]))).toBe(true),
      );
      expect(ring.stats()).toMatchObject({ operations: 200, completions: 200, pending: 0 });
    } finally {
      fs.closeSync(fd);
    }
  });

  it('errors carry code, errno and syscall like fs: EBADF for a closed fd, EISDIR, EBADF for a read-only fd written', async () => {
    const { file } = dataFile(scratch(), 'errors.bin', 4096);
    const ring = makeRing();
    const closedFd = fs.openSync(file, O_RDONLY);
    fs.closeSync(closedFd);
    const error = await rejection(ring.read(closedFd, Buffer.alloc(10), 0));
    expect(error).toBeInstanceOf(Error);
    expect({
      name: error.name,
      code: error.code,
      errno: (error as { errno?: number }).errno,
      syscall: (error as { syscall?: string }).syscall,
      message: error.message,
    }).toEqual({ name: 'IobufError', code: 'EBADF', errno: -9, syscall: 'read', message: 'EBADF: Bad file descriptor, read' });
    // (Before anything else is opened: the next open would reuse the number.)
    const syncError = await rejection(ring.fsync(closedFd, { datasync: true }));
    expect({ code: syncError.code, syscall: (syncError as { syscall?: string }).syscall }).toEqual({ code: 'EBADF', syscall: 'fdatasync' });
    const dirFd = fs.openSync(scratch(), O_RDONLY);
    const readOnly = fs.openSync(file, O_RDONLY);
    try {
      expectCode(await rejection(ring.read(dirFd, Buffer.alloc(10), 0)), 'IobufError', 'EISDIR');
      const writeError = await rejection(ring.write(readOnly, Buffer.alloc(10), 0));
      expect({ code: writeError.code, syscall: (writeError as { syscall?: string }).syscall }).toEqual({ code: 'EBADF', syscall: 'write' });
    } finally {
      fs.closeSync(dirFd);
      fs.closeSync(readOnly);
    }
    expect(ring.stats()).toMatchObject({ operations: 4, completions: 4, pending: 0 });
  });

  it('argument errors reject before anything starts', async () => {
    const ring = makeRing();
    const cases: [Promise<unknown>, string, string][] = [
      [ring.read(-1, Buffer.alloc(1), 0), 'RangeError', 'ERR_OUT_OF_RANGE'],
      [ring.read(1.5, Buffer.alloc(1), 0), 'RangeError', 'ERR_OUT_OF_RANGE'],
      [ring.read('3' as unknown as number, Buffer.alloc(1), 0), 'TypeError', 'ERR_INVALID_ARG_TYPE'],
      [ring.read(0, 'text' as unknown as Buffer, 0), 'TypeError', 'ERR_INVALID_ARG_TYPE'],
      [ring.read(0, new ArrayBuffer(8) as unknown as Buffer, 0), 'TypeError', 'ERR_INVALID_ARG_TYPE'],
      [ring.read(0, Buffer.alloc(1), -1), 'RangeError', 'ERR_OUT_OF_RANGE'],
      [ring.write(0, Buffer.alloc(1), 2 ** 53), 'RangeError', 'ERR_OUT_OF_RANGE'],
      [ring.read(0, Buffer.alloc(1), 0, { signal: 'no' as unknown as AbortSignal }), 'TypeError', 'ERR_INVALID_ARG_TYPE'],
      [ring.read(0, Buffer.alloc(1), 0, 5 as unknown as object), 'TypeError', 'ERR_INVALID_ARG_TYPE'],
      [ring.readv(0, [Buffer.alloc(1)] as unknown as IoVecArray, 0), 'TypeError', 'ERR_INVALID_ARG_TYPE'],
      [ring.fsync(0, { datasync: 1 as unknown as boolean }), 'TypeError', 'ERR_INVALID_ARG_TYPE'],
      [ring.close({ force: 'yes' as unknown as boolean }), 'TypeError', 'ERR_INVALID_ARG_TYPE'],
    ];
    for (const [promise, name, code] of cases) expectCode(await rejection(promise), name, code);
    // One shape for every argument error (lib/errors.ts).
    expect((await rejection(ring.read(0, Buffer.alloc(1), 0, { signal: 'no' as unknown as AbortSignal }))).message).toBe(
      'Expected an AbortSignal for options.signal but received "no"',
    );
    expect((await rejection(ring.writev(0, null as unknown as IoVecArray))).message).toBe(
      'Expected an IoVecArray for iov but received null',
    );
    expect(thrown(() => new IoRing({ pool: {} as BufferPool })).message).toBe(
      'Expected a BufferPool for options.pool but received an instance of Object',
    );
    expect(ring.closed).toBe(false);
    expect(ring.stats()).toMatchObject({ operations: 0, pending: 0 });
    expect(() => new IoRing({ entries: 0 })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => new IoRing({ entries: 4097 })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => new IoRing({ pool: {} as BufferPool })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => new IoRing(null as unknown as object)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    // A closed pool: the ring is not made (and leaves no fd behind).
    const pool = new BufferPool({ maxMemory: 8 * MiB });
    await pool.close();
    const fds = fs.readdirSync('/proc/self/fd').length;
    expect(() => new IoRing({ pool })).toThrow(expect.objectContaining({ name: 'IobufError', code: 'ERR_IOBUF_POOL_CLOSED' }));
    expect(fs.readdirSync('/proc/self/fd').length).toBe(fds);
  });

  it('a freed or transferred buffer is refused before the kernel sees it (ERR_IOBUF_DETACHED)', async () => {
    const { file } = dataFile(scratch(), 'detached.bin', 4096);
    const fd = fs.openSync(file, O_RDONLY);
    const ring = makeRing();
    try {
      const mapped = allocAligned(4096, { alignment: 8192 });
      free(mapped);
      expectCode(await rejection(ring.read(fd, mapped, 0)), 'IobufError', 'ERR_IOBUF_DETACHED');
      const heap = new Uint8Array(4096);
      structuredClone(heap.buffer, { transfer: [heap.buffer] });
      expectCode(await rejection(ring.read(fd, heap, 0)), 'IobufError', 'ERR_IOBUF_DETACHED');
      expect(ring.stats()).toMatchObject({ operations: 0, pending: 0 });
    } finally {
      fs.closeSync(fd);
    }
  });

  it('differential: 300 random reads over every kind of memory equal the file bytes', async () => {
    const { file, data } = dataFile(scratch(), 'random.bin', 2 * MiB);
    const fd = fs.openSync(file, O_RDONLY);
    const pool = new BufferPool({ maxMemory: 64 * MiB, hugePages: false });
    const next = random(0x5eed);
    const mapped = allocAligned(300 * 16 * KiB, { alignment: 64 * KiB }); // one 16 KiB region per read
    const pooled: Buffer[] = [];
    try {
      const reads = Array.from({ length: 300 }, (_, i) => {
        const length = 1 + next(16 * KiB);
        const position = next(2 * MiB + 100);
        let view: Buffer;
        if (i % 3 === 0) pooled.push((view = pool.tryAcquire(length)!));
        else if (i % 3 === 1) view = mapped.subarray(i * 16 * KiB, i * 16 * KiB + length);
        else view = Buffer.alloc(length);
        return { view, position, length };
      });
      const ring = makeRing({ pool, entries: 16 }); // after the pool mapped its slabs: all registered
      const results = await Promise.all(reads.map(({ view, position }) => ring.read(fd, view, position)));
      reads.forEach(({ view, position, length }, i) => {
        const expected = Math.max(0, Math.min(length, 2 * MiB - position));
        expect(results[i]).toBe(expected);
        expect(view.subarray(0, expected).equals(data.subarray(position, position + expected))).toBe(true);
      });
      expect(ring.stats()).toMatchObject({ completions: 300, fixed: 100, inPlace: 100, bounced: 100 });
      for (const buffer of pooled) pool.release(buffer);
      expect(pool.stats().inUse).toBe(0);
    } finally {
      fs.closeSync(fd);
      free(mapped);
      await pool.close({ force: true });
    }
  });
});
