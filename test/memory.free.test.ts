// free(): detaching, unmapping at once, every misuse, and use after free in a
// child process (a crash there is the failure these tests rule out).
import { describe, expect, test } from 'vitest';
import { IobufError, addressOf, allocAligned, allocHuge, free, isAligned, pageKind } from '../lib/index';
import {
  KiB,
  LineChild,
  MiB,
  expectThrowsCode,
  isRoot,
  lastJsonLine,
  mappedBytesIn,
  runFixture,
  sanitized,
  statusBytes,
  vmaAt,
} from './helpers/memory-proc';

describe('free: detaches every view', () => {
  const kinds: Record<string, () => Buffer> = {
    heap: () => allocAligned(10_000, { alignment: 64 }),
    mapped: () => allocAligned(10_000, { alignment: 64 * KiB }),
    huge: () => allocHuge(10_000, { fallback: 'normal' }),
  };
  for (const [kind, alloc] of Object.entries(kinds)) {
    test(`${kind}: the buffer and views made before free read as empty; writes are no-ops`, () => {
      const buffer = alloc();
      buffer.fill(0x33);
      const subarray = buffer.subarray(10, 20);
      const words = new Uint32Array(buffer.buffer, buffer.byteOffset, 100);
      free(buffer);
      for (const view of [buffer, subarray, words]) {
        expect(view.length).toBe(0);
        expect(view.byteLength).toBe(0);
        expect(view[0]).toBeUndefined();
        view[0] = 5;
        expect(view[0]).toBeUndefined();
      }
      expect(buffer.buffer.byteLength).toBe(0);
      expect(buffer.toString('hex')).toBe('');
      expect(buffer.indexOf(0x33)).toBe(-1);
    });

    test(`${kind}: a second free is ERR_IOBUF_DOUBLE_FREE (through any view)`, () => {
      const buffer = alloc();
      const view = new Uint16Array(buffer.buffer, buffer.byteOffset, 8);
      free(buffer);
      const error = expectThrowsCode(() => free(buffer), IobufError, 'ERR_IOBUF_DOUBLE_FREE', 'This memory was freed already');
      expect(error.name).toBe('IobufError');
      expectThrowsCode(() => free(view), IobufError, 'ERR_IOBUF_DOUBLE_FREE');
      expectThrowsCode(() => free(buffer.buffer as ArrayBuffer), IobufError, 'ERR_IOBUF_DOUBLE_FREE');
    });

    test(`${kind}: addressOf, isAligned and pageKind of a freed buffer are ERR_IOBUF_DETACHED`, () => {
      const buffer = alloc();
      const subarray = buffer.subarray(100);
      free(buffer);
      for (const view of [buffer, subarray]) {
        expectThrowsCode(() => addressOf(view), IobufError, 'ERR_IOBUF_DETACHED', 'view was freed or detached');
        expectThrowsCode(() => isAligned(view, 8), IobufError, 'ERR_IOBUF_DETACHED');
        expectThrowsCode(() => pageKind(view), IobufError, 'ERR_IOBUF_DETACHED');
      }
    });

    test(`${kind}: free(subarray) frees the whole allocation`, () => {
      const buffer = alloc();
      const other = buffer.subarray(5000);
      free(buffer.subarray(1, 2));
      expect(buffer.length).toBe(0);
      expect(other.length).toBe(0);
      expectThrowsCode(() => free(buffer), IobufError, 'ERR_IOBUF_DOUBLE_FREE');
    });
  }

  test('free takes a DataView and the ArrayBuffer itself', () => {
    const first = allocAligned(4096, { alignment: 64 * KiB });
    free(new DataView(first.buffer, first.byteOffset, 16));
    expect(first.length).toBe(0);
    const second = allocAligned(4096, { alignment: 64 });
    free(second.buffer as ArrayBuffer);
    expect(second.length).toBe(0);
  });
});

describe('free: foreign memory', () => {
  test('Buffer.from, Uint8Array, Buffer.alloc, a pooled Buffer are ERR_IOBUF_FOREIGN_BUFFER and stay usable', () => {
    const message = 'free() takes memory from allocAligned() or allocHuge(); this view is not';
    const pooled = Buffer.from('abc');
    const typed = new Uint8Array(4).fill(9);
    const alone = Buffer.alloc(8192, 1);
    const unsafe = Buffer.allocUnsafe(16).fill(2);
    for (const view of [pooled, typed, alone, unsafe, new DataView(new ArrayBuffer(8))]) {
      expectThrowsCode(() => free(view), IobufError, 'ERR_IOBUF_FOREIGN_BUFFER', message);
    }
    expect(pooled.toString()).toBe('abc');
    expect([...typed]).toEqual([9, 9, 9, 9]);
    expect(alone.length).toBe(8192);
    expect(unsafe[15]).toBe(2);
    expectThrowsCode(() => free(new ArrayBuffer(8)), IobufError, 'ERR_IOBUF_FOREIGN_BUFFER');
  });

  test('a view of a SharedArrayBuffer is foreign; the SharedArrayBuffer itself is not a view', () => {
    const shared = new SharedArrayBuffer(64);
    const view = new Int32Array(shared);
    view[0] = 7;
    expectThrowsCode(() => free(view), IobufError, 'ERR_IOBUF_FOREIGN_BUFFER');
    expectThrowsCode(() => free(shared as never), TypeError, 'ERR_INVALID_ARG_TYPE');
    expectThrowsCode(
      () => addressOf(view),
      IobufError,
      'ERR_IOBUF_FOREIGN_BUFFER',
      'view is backed by a SharedArrayBuffer, which iobuf does not manage',
    );
    expect(view[0]).toBe(7);
  });

  test('a copy of an allocation is foreign', () => {
    const buffer = allocAligned(64, { alignment: 64 * KiB });
    const copy = Buffer.from(buffer);
    expectThrowsCode(() => free(copy), IobufError, 'ERR_IOBUF_FOREIGN_BUFFER');
    free(buffer);
    expect(copy.length).toBe(64);
  });
});

describe('free: use after free in a child process', () => {
  for (const kind of ['heap', 'mapped', 'locked', 'huge']) {
    test(`${kind}: every access after free is empty or an error, never a crash`, () => {
      const result = runFixture('memory-use-after-free.js', [kind]);
      expect({ status: result.status, signal: result.signal, stderr: result.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
      const outcomes = lastJsonLine<Record<string, string>>(result);
      expect(Object.keys(outcomes).length).toBeGreaterThan(100);
      for (const [name, outcome] of Object.entries(outcomes)) {
        if (/\.(length|byteLength)$/.test(name) && !name.startsWith('dataView')) expect(outcome, name).toBe('value:0');
        if (/\[\d+\]( = x)?$/.test(name)) expect(outcome, name).toBe('value:undefined');
        if (/^new Uint8Array\(arrayBuffer/.test(name)) expect(outcome, name).toBe('throws:TypeError:');
        // Nothing reads the 0x77 bytes written before the free.
        expect(outcome, name).not.toMatch(/77/);
      }
      expect(outcomes['dataView.getUint8(0)']).toBe('throws:TypeError:');
      expect(outcomes['buffer.toString(hex)']).toBe('value:""');
      expect(outcomes['buffer.readUInt32LE(0)']).toBe('throws:RangeError:ERR_BUFFER_OUT_OF_BOUNDS');
      expect(outcomes['buffer.copy(target)']).toBe('value:0');
      expect(outcomes['target.copy(buffer)']).toBe('value:0');
      expect(outcomes['fs.readSync into it']).toBe('value:0');
      expect(outcomes['fs.writeSync from it']).toBe('value:0');
      expect(outcomes.sha256).toBe('value:"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"');
      expect(outcomes.afterwards).toBe('ok');
    });
  }
});

describe('free: gives the memory back now', () => {
  async function probe(kind: string, size: number) {
    const child = new LineChild('memory-free-probe.js', [kind, String(size)]);
    try {
      const allocated = JSON.parse(await child.next()) as { address: string; length: number; kind: string };
      const address = BigInt(allocated.address);
      expect(allocated.length).toBe(size);
      const before = {
        vma: vmaAt(address, child.pid),
        mapped: mappedBytesIn(address, size, child.pid),
        rss: statusBytes('VmRSS', child.pid),
        locked: statusBytes('VmLck', child.pid),
        hugetlb: statusBytes('HugetlbPages', child.pid),
      };
      child.resume();
      expect(JSON.parse(await child.next())).toEqual({ freed: true });
      const after = {
        vma: vmaAt(address, child.pid),
        mapped: mappedBytesIn(address, size, child.pid),
        rss: statusBytes('VmRSS', child.pid),
        locked: statusBytes('VmLck', child.pid),
        hugetlb: statusBytes('HugetlbPages', child.pid),
      };
      child.resume();
      const exit = await child.exited;
      expect(exit).toEqual({ status: 0, signal: null, stderr: '' });
      return { allocated, before, after };
    } finally {
      child.kill();
    }
  }

  test('a 64 MiB mapped allocation (alignment 2 MiB): its VMA disappears and RSS falls by 64 MiB', async () => {
    const { before, after } = await probe('mapped', 64 * MiB);
    expect(before.mapped).toBe(64 * MiB);
    expect(before.vma!.sizes.Rss).toBeGreaterThanOrEqual(64 * MiB);
    expect(after.mapped).toBe(0);
    expect(after.vma).toBeUndefined();
    expect(before.rss - after.rss).toBeGreaterThanOrEqual(64 * MiB - 1 * MiB);
  });

  test('an allocHuge allocation: its range is unmapped after free', async () => {
    const { allocated, before, after } = await probe('huge', 8 * MiB);
    expect(['hugetlb', 'thp', 'normal']).toContain(allocated.kind);
    expect(before.mapped).toBe(8 * MiB);
    expect(after.mapped).toBe(0);
    expect(before.rss + before.hugetlb - after.rss - after.hugetlb).toBeGreaterThanOrEqual(7 * MiB);
  });

  test.skipIf(!isRoot || sanitized)('a locked allocation: VmLck falls back after free (needs root for 16 MiB)', async () => {
    const { before, after } = await probe('locked', 16 * MiB);
    expect(before.locked).toBeGreaterThanOrEqual(16 * MiB);
    expect(before.locked - after.locked).toBeGreaterThanOrEqual(16 * MiB);
    expect(after.mapped).toBe(0);
  });

  test.skipIf(sanitized)('a heap-path allocation: RSS falls after free', async () => {
    const { before, after } = await probe('heap', 64 * MiB);
    expect(before.rss - after.rss).toBeGreaterThanOrEqual(63 * MiB);
  });

  test('process.memoryUsage().external rises by the size and falls back after free', () => {
    // Measured on Node 20: mapped allocations count in `external` only; heap
    // allocations count in both `external` and `arrayBuffers`. The counters
    // are process-wide, and a 64 MiB allocation may itself trigger a GC that
    // frees unrelated buffers between two readings (V8 sweeps ArrayBuffer
    // memory concurrently, so even after gc() the counters keep settling,
    // by a few MiB on a loaded machine). Garbage is collected first, and the
    // check is "about the size", ±1/8: what it rules out is an allocation
    // that is not counted, or counted twice.
    globalThis.gc!();
    const size = 64 * MiB;
    const expectAbout = (delta: number, what: string) => {
      expect(delta, what).toBeGreaterThan(size - size / 8);
      expect(delta, what).toBeLessThan(size + size / 8);
    };
    const start = process.memoryUsage();
    const mapped = allocAligned(size, { alignment: 2 * MiB });
    const withMapped = process.memoryUsage();
    expectAbout(withMapped.external - start.external, 'external after a mapped allocation');
    free(mapped);
    const afterMapped = process.memoryUsage();
    expectAbout(withMapped.external - afterMapped.external, 'external after its free');

    globalThis.gc!();
    const beforeHeap = process.memoryUsage();
    const heap = allocAligned(size);
    const withHeap = process.memoryUsage();
    expectAbout(withHeap.arrayBuffers - beforeHeap.arrayBuffers, 'arrayBuffers after a heap allocation');
    expectAbout(withHeap.external - beforeHeap.external, 'external after a heap allocation');
    free(heap);
    const afterHeap = process.memoryUsage();
    expectAbout(withHeap.arrayBuffers - afterHeap.arrayBuffers, 'arrayBuffers after its free');
    expectAbout(withHeap.external - afterHeap.external, 'external after its free');
  });
});
