// IoVecArray itself: the entry layout in `buffer`, push/set/clear/advance/
// entries, capacity, close, and keeping pushed views reachable.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { BufferPool, IOVEC_ENTRY_BYTES, IoVecArray, MAX_IOVEC_CAPACITY, addressOf, allocAligned, free, pwritevAllSync } from '../lib/index';
import { native } from '../lib/binding';
import { MiB, expectCode, thrown } from './fixtures/pool-helpers';

/** Entry i of `iov.buffer` as [base, length]. */
function rawEntry(iov: IoVecArray, index: number): [bigint, bigint] {
  const words = new BigUint64Array(iov.buffer, index * IOVEC_ENTRY_BYTES, 2);
  return [words[0], words[1]];
}

describe('IoVecArray layout', () => {
  it('writes struct iovec entries (base, then length; 16 bytes each) into buffer', () => {
    const iov = new IoVecArray(4);
    expect(iov.capacity).toBe(4);
    expect(iov.buffer.byteLength).toBe(4 * 16);
    expect(IOVEC_ENTRY_BYTES).toBe(16);
    const a = Buffer.from('abcdefgh');
    const b = new Uint8Array(1000);
    const c = new DataView(new ArrayBuffer(64), 8, 32);
    expect(iov.push(a)).toBe(1);
    expect(iov.push(b, 10, 20)).toBe(2);
    expect(iov.push(c, 4)).toBe(3);
    expect(iov.length).toBe(3);
    expect(rawEntry(iov, 0)).toEqual([addressOf(a), 8n]);
    expect(rawEntry(iov, 1)).toEqual([addressOf(b) + 10n, 20n]);
    expect(rawEntry(iov, 2)).toEqual([addressOf(c) + 4n, 28n]);
    expect(iov.byteLength).toBe(8 + 20 + 28);
    // address is where entry 0 lives: typed-array views of `buffer` see the same memory.
    expect(typeof iov.address).toBe('bigint');
    expect(iov.address % 16n).toBe(0n);
    expect(iov.address).toBe(addressOf(new Uint8Array(iov.buffer)));
  });

  it('a pooled Buffer gets the address the pool knows, with offset and length', () => {
    const pool = new BufferPool({ maxMemory: 4 * MiB });
    const buffer = pool.tryAcquire(4096)!;
    const iov = new IoVecArray(2);
    iov.push(buffer, 100, 200);
    iov.push(buffer);
    expect(rawEntry(iov, 0)).toEqual([addressOf(buffer) + 100n, 200n]);
    expect(rawEntry(iov, 1)).toEqual([addressOf(buffer), 4096n]);
    pool.release(buffer);
    void pool.close({ force: true });
  });

  it('pushing pooled Buffers makes no native call; a foreign view makes one', () => {
    const pool = new BufferPool({ maxMemory: 4 * MiB });
    const buffers = Array.from({ length: 16 }, () => pool.tryAcquire(4096)!);
    const iov = new IoVecArray(17);
    const calls: string[] = [];
    const binding = native as unknown as Record<string, unknown>;
    const originals = new Map<string, (...args: unknown[]) => unknown>();
    for (const [name, value] of Object.entries(binding)) {
      if (typeof value !== 'function') continue;
      originals.set(name, value as (...args: unknown[]) => unknown);
      binding[name] = (...args: unknown[]) => {
        calls.push(name);
        return (value as (...args: unknown[]) => unknown)(...args);
      };
    }
    try {
      for (const buffer of buffers) iov.push(buffer, 0, 4000);
      iov.set(3, buffers[3]);
      iov.clear();
      for (const buffer of buffers) iov.push(buffer);
      expect(calls).toEqual([]);
      iov.push(Buffer.alloc(10));
      expect(calls).toEqual(['viewAddress']);
    } finally {
      for (const [name, original] of originals) binding[name] = original;
    }
    expect(iov.byteLength).toBe(16 * 4096 + 10);
    for (const buffer of buffers) pool.release(buffer);
    void pool.close();
  });

  it('entries() gives views of what each entry holds, sharing memory', () => {
    const a = Buffer.from('0123456789');
    const b = Buffer.from('abcdefghij');
    const iov = IoVecArray.from([a, b]);
    iov.set(1, b, 2, 3);
    const [ea, eb] = iov.entries();
    expect(ea.toString()).toBe('0123456789');
    expect(eb.toString()).toBe('cde');
    eb[0] = 0x43;
    expect(b.toString()).toBe('abCdefghij');
  });

  it('advance drops whole entries, then trims the first', () => {
    const parts = ['aaaa', 'bbb', 'cc', 'd'].map((s) => Buffer.from(s));
    const iov = IoVecArray.from(parts);
    expect(iov.byteLength).toBe(10);
    iov.advance(0);
    expect(iov.entries().map(String)).toEqual(['aaaa', 'bbb', 'cc', 'd']);
    iov.advance(2);
    expect(iov.entries().map(String)).toEqual(['aa', 'bbb', 'cc', 'd']);
    iov.advance(2);
    expect(iov.length).toBe(3);
    expect(iov.entries().map(String)).toEqual(['bbb', 'cc', 'd']);
    iov.advance(4);
    expect(iov.entries().map(String)).toEqual(['c', 'd']);
    expect(rawEntry(iov, 0)).toEqual([addressOf(parts[2]) + 1n, 1n]);
    expectCode(
      thrown(() => iov.advance(3)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    iov.advance(2);
    expect(iov.length).toBe(0);
    expect(iov.byteLength).toBe(0);
  });

  it('clear, set and argument errors', () => {
    const iov = new IoVecArray(2);
    const view = Buffer.alloc(10);
    expectCode(
      thrown(() => iov.push('text' as never)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    expectCode(
      thrown(() => iov.push(view, 11)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => iov.push(view, 5, 6)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => iov.push(view, 1.5)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expect(iov.length).toBe(0);
    expectCode(
      thrown(() => iov.set(0, view)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    iov.push(view);
    iov.set(0, view, 3);
    expect(iov.byteLength).toBe(7);
    iov.clear();
    expect(iov.length).toBe(0);
    expect(iov.entries()).toEqual([]);
    expectCode(
      thrown(() => new IoVecArray(0)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => new IoVecArray(MAX_IOVEC_CAPACITY + 1)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expect(MAX_IOVEC_CAPACITY).toBe(2 ** 20);
    expectCode(
      thrown(() => new IoVecArray('4' as never)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
  });

  it('capacity overflow throws ERR_IOBUF_IOVEC_FULL and leaves the array as it was', () => {
    const iov = new IoVecArray(3);
    const view = Buffer.from('xyz');
    for (let i = 0; i < 3; i++) iov.push(view, i, 1);
    const error = thrown(() => iov.push(view));
    expectCode(error, 'IobufError', 'ERR_IOBUF_IOVEC_FULL');
    expect(iov.length).toBe(3);
    expect(iov.entries().map(String)).toEqual(['x', 'y', 'z']);
  });

  it('a detached view cannot be pushed', () => {
    const view = allocAligned(4096);
    const dataView = new DataView(view.buffer, 100, 200);
    free(view);
    const iov = new IoVecArray(2);
    // A freed view reads as empty, but it is not an empty view: ERR_IOBUF_DETACHED, not an empty entry.
    for (const [what, push] of [
      ['push', () => iov.push(view)],
      ['push(view, 0, 0)', () => iov.push(view, 0, 0)],
      ['push(view, 0, 1)', () => iov.push(view, 0, 1)],
      ['a DataView', () => iov.push(dataView)],
      ['IoVecArray.from', () => IoVecArray.from([view])],
    ] as const) {
      const error = thrown(push);
      expectCode(error, 'IobufError', 'ERR_IOBUF_DETACHED');
      expect(error.message, what).toBe('view was freed or detached');
    }
    expect(iov.length).toBe(0);
    iov.push(Buffer.from('ab'));
    expectCode(
      thrown(() => iov.set(0, view)),
      'IobufError',
      'ERR_IOBUF_DETACHED',
    );
    expect(iov.entries().map(String)).toEqual(['ab']);
    // Views that are empty without being freed are still taken, as empty entries.
    iov.push(Buffer.alloc(0));
    iov.set(1, new Uint8Array(new ArrayBuffer(0)));
    expect(iov.length).toBe(2);
    expect(iov.byteLength).toBe(2);
  });

  it('null, undefined and other non-views: ERR_INVALID_ARG_TYPE from push, set and from', () => {
    const iov = new IoVecArray(2);
    iov.push(Buffer.from('x'));
    for (const value of [null, undefined, 7, {}, new ArrayBuffer(4)]) {
      for (const call of [() => iov.push(value as never), () => iov.set(0, value as never), () => IoVecArray.from([value as never])]) {
        const error = thrown(call);
        expectCode(error, 'TypeError', 'ERR_INVALID_ARG_TYPE');
        expect(error.message).toMatch(/^Expected a Buffer, TypedArray or DataView for view but received /);
      }
    }
    expect(iov.entries().map(String)).toEqual(['x']);
  });

  it('close() detaches buffer, lets the views go and refuses every later use', () => {
    const iov = IoVecArray.from([Buffer.from('abc')]);
    iov.close();
    expect(iov.closed).toBe(true);
    expect(iov.length).toBe(0);
    expect(iov.buffer.byteLength).toBe(0);
    for (const use of [
      () => iov.push(Buffer.from('x')),
      () => iov.set(0, Buffer.from('x')),
      () => iov.clear(),
      () => iov.advance(0),
      () => iov.entries(),
    ]) {
      expectCode(thrown(use), 'IobufError', 'ERR_IOBUF_IOVEC_CLOSED');
    }
    iov.close(); // idempotent
    {
      using scoped = new IoVecArray(1);
      scoped.push(Buffer.from('x'));
      expect(scoped.closed).toBe(false);
    }
  });
});

describe('IoVecArray keeps its views reachable', () => {
  it('while an entry refers to a view, and not after', async () => {
    if (typeof globalThis.gc !== 'function') throw new Error('needs --expose-gc (vitest.config.ts sets it)');
    const iov = new IoVecArray(2);
    // Made in a function of its own: a suspended async function's frame would hold it.
    const pushNew = (): WeakRef<Uint8Array> => {
      const view = new Uint8Array(1 << 20).fill(7);
      iov.push(view);
      return new WeakRef(view);
    };
    const ref = pushNew();
    // (A deref() keeps its target alive until the current job ends: collect in a later one.)
    const collect = async () => {
      for (let i = 0; i < 3; i++) {
        await new Promise((resolve) => setImmediate(resolve));
        globalThis.gc!();
      }
      await new Promise((resolve) => setImmediate(resolve));
    };
    await collect();
    expect(ref.deref() !== undefined).toBe(true);
    expect(iov.entries()[0][12345]).toBe(7);
    iov.clear();
    await collect();
    expect(ref.deref() === undefined).toBe(true);
  });
});

describe('IoVecArray with other views', () => {
  it('offsets and lengths are in bytes for any TypedArray or DataView', () => {
    const words = new Uint16Array([0x4241, 0x4443, 0x4645]); // "ABCDEF" little-endian
    const doubles = new Float64Array(2);
    const view = new DataView(new ArrayBuffer(16), 4, 8);
    const iov = new IoVecArray(3);
    iov.push(words, 1, 4);
    iov.push(doubles);
    iov.push(view, 2, 3);
    expect(rawEntry(iov, 0)).toEqual([addressOf(words) + 1n, 4n]);
    expect(rawEntry(iov, 1)).toEqual([addressOf(doubles), 16n]);
    expect(rawEntry(iov, 2)).toEqual([addressOf(view) + 2n, 3n]);
    expect(iov.entries()[0].toString('latin1')).toBe('BCDE');
    expectCode(
      thrown(() => new IoVecArray(1).push(words, 0, 7)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
  });

  it('small typed arrays (kept inside the V8 heap) still point at their bytes after GCs move things', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iobuf-iovec-small-'));
    const fd = fs.openSync(path.join(dir, 'out.bin'), 'w+');
    try {
      const smalls = Array.from({ length: 32 }, (_, i) => new Uint8Array(8).fill(0x41 + (i % 26)));
      const iov = IoVecArray.from(smalls);
      const addresses = smalls.map((small) => addressOf(small));
      for (let round = 0; round < 5; round++) {
        let garbage: unknown[] = [];
        for (let i = 0; i < 20_000; i++) garbage.push(new Uint8Array(16), { i });
        garbage = [];
        globalThis.gc!();
      }
      expect(smalls.map((small) => addressOf(small))).toEqual(addresses);
      expect(pwritevAllSync(fd, iov, 0)).toBe(32 * 8);
      const back = Buffer.alloc(32 * 8);
      fs.readSync(fd, back, 0, back.length, 0);
      expect(back.equals(Buffer.concat(smalls))).toBe(true);
    } finally {
      fs.closeSync(fd);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('works in a worker thread, and arrays left open are freed when it exits', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iobuf-iovec-worker-'));
    const file = path.join(dir, 'out.bin');
    try {
      const worker = new Worker(path.join(__dirname, 'fixtures', 'iovec-worker.js'), { workerData: { file } });
      const exited = new Promise<number>((resolve) => worker.once('exit', resolve));
      const message = await new Promise<{ written: number; inUse: number; left: number }>((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
      // It ends on its own, its open arrays finalized at the environment's teardown.
      expect(await exited).toBe(0);
      const expected = Buffer.concat(Array.from({ length: 8 }, (_, i) => Buffer.alloc(1000 + i, 0x30 + i)));
      expect(message).toEqual({ written: expected.length, inUse: 0, left: 100 });
      expect(fs.readFileSync(file).equals(expected)).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
