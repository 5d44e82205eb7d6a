// Sizes the runtime cannot represent. The largest Buffer differs between
// runtimes (buffer.constants.MAX_LENGTH, iobuf's maxAllocationSize): 2^32 on
// Node 20, 2^53 - 1 on Node 22 and later. The rule, in every part: a size
// above it is a RangeError ERR_OUT_OF_RANGE before anything is mapped; a size
// up to it goes to the kernel, which maps it or says ENOMEM. The same tests
// run on every major; where the two limits lead to different outcomes, each
// test says which it expects for which limit.
import { constants as bufferConstants } from 'node:buffer';
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, test } from 'vitest';
import { native } from '../lib/binding';
import { BufferPool, FrameAssembler, Gatherer, IoVecArray, IobufError, allocAligned, allocHuge, maxAllocationSize } from '../lib/index';
import { closeOf, connect, listen } from './fixtures/frames-helpers';
import { GiB, KiB, MiB, expectThrowsCode, lastJsonLine, runFixture, sanitized, statusBytes } from './helpers/memory-proc';
import { rejection } from './fixtures/pool-helpers';

const TiB = 1024 * GiB;
/** Node 20 (and Bun): 4 GiB. Node 22+: 2^53 - 1, so sizes the machine cannot map reach the kernel. */
const largeLimit = maxAllocationSize > 2 ** 47;
/** The largest budget a pool takes: (2^31 - 1) pages. */
const MAX_POOL_MEMORY = (2 ** 31 - 1) * 4096;
/**
 * With overcommit_memory 1 ("always") the kernel maps any size that fits the
 * address space, so a few TiB would not be refused; the default heuristic (0)
 * and strict accounting (2) refuse a mapping larger than RAM + swap.
 */
const overcommitAlways = readFileSync('/proc/sys/vm/overcommit_memory', 'utf8').trim() === '1';

type Coded = Error & { code?: string; errno?: number; syscall?: string };

const pools: BufferPool[] = [];
function makePool(maxMemory: number): BufferPool {
  const pool = new BufferPool({ maxMemory, hugePages: false, leakDetection: 'off' });
  pools.push(pool);
  return pool;
}
afterEach(async () => {
  for (const pool of pools.splice(0)) await pool.close({ force: true });
});

/** Runs `fn` and asserts that the process's address space did not grow by `bytes` or more meanwhile. */
function mapsNothing<T>(bytes: number, fn: () => T): T {
  const before = statusBytes('VmSize');
  const result = fn();
  expect(statusBytes('VmSize') - before).toBeLessThan(bytes);
  return result;
}

test("maxAllocationSize is the runtime's largest Buffer", () => {
  expect(maxAllocationSize).toBe(bufferConstants.MAX_LENGTH);
  expect([2 ** 32, Number.MAX_SAFE_INTEGER]).toContain(maxAllocationSize);
});

describe('memory', () => {
  test('maxAllocationSize + 1 is a RangeError on both paths, before anything is mapped', () => {
    const message = `Expected an integer from 1 to ${maxAllocationSize} for size but received ${maxAllocationSize + 1}`;
    mapsNothing(GiB, () => {
      expectThrowsCode(() => allocAligned(maxAllocationSize + 1), RangeError, 'ERR_OUT_OF_RANGE', message);
      expectThrowsCode(() => allocAligned(maxAllocationSize + 1, { alignment: 2 * MiB }), RangeError, 'ERR_OUT_OF_RANGE', message);
      expectThrowsCode(() => allocHuge(maxAllocationSize + 1, { fallback: 'normal' }), RangeError, 'ERR_OUT_OF_RANGE', message);
    });
  });

  test('native code refuses it too (mapAligned, mapHuge, viewOf), before mapping', () => {
    // On Node 20 the kernel would map 4 GiB + 4 KiB: the RangeError (not a
    // Buffer) shows native code checked. On Node 22+ it would say ENOMEM.
    const size = maxAllocationSize + 4096;
    const message = `Expected at most ${maxAllocationSize} bytes (the largest Buffer) for size but received ${size}`;
    mapsNothing(GiB, () => {
      expectThrowsCode(() => native.mapAligned(size, 4096, 0), RangeError, 'ERR_OUT_OF_RANGE', message);
      expectThrowsCode(() => native.mapHuge(size, 2, 0), RangeError, 'ERR_OUT_OF_RANGE', message);
      const slab = new ArrayBuffer(4096);
      expectThrowsCode(
        () => native.viewOf(slab, 0, size),
        RangeError,
        'ERR_OUT_OF_RANGE',
        `Expected at most ${maxAllocationSize} bytes (the largest Buffer) for length but received ${size}`,
      );
    });
  });

  test.runIf(largeLimit)('Node 22+: a size the address space cannot hold is ENOMEM from mmap on every path', () => {
    for (const alloc of [
      () => allocAligned(2 ** 47), // heap path first: V8 refuses, then the kernel
      () => allocAligned(2 ** 47, { zero: false }),
      () => allocAligned(2 ** 47, { alignment: 2 * MiB }),
      () => allocHuge(2 ** 47, { fallback: 'normal' }),
    ]) {
      const error = mapsNothing(GiB, () => expectThrowsCode(alloc, IobufError, 'ENOMEM'));
      expect({ errno: error.errno, syscall: error.syscall }).toEqual({ errno: -12, syscall: 'mmap' });
    }
  });

  test('in a child: a pool above 4 GiB asked for 4 GiB + 4 KiB, and Node refusing a Buffer native code asked for, end cleanly', () => {
    const result = runFixture('sizes-limits.js');
    expect({ status: result.status, signal: result.signal, stderr: result.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
    const report = lastJsonLine<{
      maxLength: number;
      tryAcquire: { value?: number; error?: { name: string; code: string } };
      pool: { inUse: number; osBytes: number };
      beyondNode: { value?: number; error?: { name: string; code: string } };
      vmGrowth: number;
    }>(result);
    expect(report.maxLength).toBe(maxAllocationSize);
    if (4 * GiB + 4096 > maxAllocationSize) {
      expect(report.tryAcquire.error).toMatchObject({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
    } else {
      expect(report.tryAcquire).toEqual({ value: 4 * GiB + 4096 });
    }
    expect(report.pool).toEqual({ inUse: 0, osBytes: 0 });
    // Node 20 maps 4 GiB + 8 KiB, refuses the Buffer (ERR_BUFFER_TOO_LARGE)
    // and runs the finalizer, which unmaps it; Node 22+ cannot map 2^53 bytes.
    expect(report.beyondNode.error?.code).toBe(largeLimit ? 'ENOMEM' : 'ERR_BUFFER_TOO_LARGE');
    expect(report.vmGrowth).toBeLessThan(GiB);
  });
});

describe('pool', () => {
  test('every acquire refuses a size above min(maxMemory, maxAllocationSize) with a RangeError, and counts nothing', async () => {
    const pool = makePool(8 * GiB); // a budget above Node 20's largest Buffer
    const limit = Math.min(pool.maxMemory, maxAllocationSize);
    const size = limit + 1;
    const message = `Expected an integer from 1 to ${limit} for size but received ${size}`;
    mapsNothing(GiB, () => {
      expectThrowsCode(() => pool.tryAcquire(size), RangeError, 'ERR_OUT_OF_RANGE', message);
      expectThrowsCode(() => pool.tryAcquireMany(2, size), RangeError, 'ERR_OUT_OF_RANGE', message);
      expectThrowsCode(() => pool.acquireSync(size), RangeError, 'ERR_OUT_OF_RANGE', message);
    });
    for (const pending of [pool.acquire(size), pool.acquireMany(1, size), pool.acquireMany(3, size)]) {
      const error = await rejection(pending);
      expect(error).toBeInstanceOf(RangeError);
      expect({ code: error.code, message: error.message }).toEqual({ code: 'ERR_OUT_OF_RANGE', message });
    }
    expect(pool.stats()).toMatchObject({ inUse: 0, osBytes: 0, waiters: 0 });
  });

  test('4 GiB + 4 KiB on a budget of 8 GiB: a RangeError where the largest Buffer is 4 GiB, else a Buffer (virtual only)', () => {
    const pool = makePool(8 * GiB);
    const size = 4 * GiB + 4 * KiB;
    if (size > maxAllocationSize) {
      mapsNothing(GiB, () => expectThrowsCode(() => pool.tryAcquire(size), RangeError, 'ERR_OUT_OF_RANGE'));
    } else {
      const buffer = pool.tryAcquire(size)!;
      expect(buffer.length).toBe(size);
      buffer[size - 1] = 0x5a;
      expect(buffer[size - 1]).toBe(0x5a);
      pool.release(buffer);
    }
    expect(pool.stats()).toMatchObject({ inUse: 0, osBytes: 0 });
  });

  test('acquireMany: buffers that share one region are refused when the region is above the largest Buffer', () => {
    const pool = makePool(8 * GiB);
    const count = 3;
    const size = 2 * GiB; // 6 GiB in one region
    if (count * size > maxAllocationSize) {
      mapsNothing(GiB, () =>
        expectThrowsCode(
          () => pool.tryAcquireMany(count, size),
          RangeError,
          'ERR_OUT_OF_RANGE',
          `Expected at most ${maxAllocationSize} bytes (the largest Buffer) for count × size but received ${count * size}`,
        ),
      );
    } else {
      const buffers = pool.tryAcquireMany(count, size)!;
      expect(buffers.map((buffer) => buffer.length)).toEqual([size, size, size]);
      for (const buffer of buffers) pool.release(buffer);
    }
    expect(pool.stats()).toMatchObject({ inUse: 0 });
  });

  test.runIf(largeLimit && !overcommitAlways)(
    'Node 22+: a size within budget that the machine cannot map is ENOMEM, and the budget is given back',
    async () => {
      const pool = makePool(MAX_POOL_MEMORY);
      const error = mapsNothing(GiB, () => expectThrowsCode(() => pool.tryAcquire(4 * TiB), IobufError, 'ENOMEM'));
      expect(error.syscall).toBe('mmap');
      const rejected = await rejection(pool.acquire(4 * TiB));
      expect({ code: rejected.code, syscall: (rejected as Coded).syscall }).toEqual({ code: 'ENOMEM', syscall: 'mmap' });
      expect(pool.stats()).toMatchObject({ inUse: 0, osBytes: 0, waiters: 0 });
      const buffer = pool.tryAcquire(64 * KiB)!; // the budget still works
      expect(buffer.length).toBe(64 * KiB);
      pool.release(buffer);
    },
  );
});

describe('frames', () => {
  test('maxFrameSize above min(pool.maxMemory, maxAllocationSize) is a RangeError; that limit itself is accepted', () => {
    const pool = makePool(8 * GiB);
    const limit = Math.min(pool.maxMemory, maxAllocationSize);
    expectThrowsCode(
      () => new FrameAssembler({ pool, maxFrameSize: limit + 1 }),
      RangeError,
      'ERR_OUT_OF_RANGE',
      `Expected an integer from 0 to ${limit} for options.maxFrameSize but received ${limit + 1}`,
    );
    expect(new FrameAssembler({ pool, maxFrameSize: limit }).maxFrameSize).toBe(limit);
  });

  test('a decoder that reports maxAllocationSize + 1 never reaches the pool: FRAME_TOO_LARGE (or FRAME_INVALID when not a safe integer)', async () => {
    const pool = makePool(8 * GiB);
    const assembler = new FrameAssembler({
      pool,
      maxFrameSize: Math.min(pool.maxMemory, maxAllocationSize),
      lengthPrefix: () => ({ headerLength: 1, payloadLength: maxAllocationSize + 1 }),
    });
    assembler.on('error', () => {});
    mapsNothing(GiB, () => assembler.push(Buffer.from([1, 2, 3])));
    await closeOf(assembler);
    expect((assembler.error as Coded).code).toBe(
      Number.isSafeInteger(maxAllocationSize + 1) ? 'ERR_IOBUF_FRAME_TOO_LARGE' : 'ERR_IOBUF_FRAME_INVALID',
    );
    expect(pool.stats()).toMatchObject({ inUse: 0, osBytes: 0 });
  });

  test('from the network: a decoder reporting 4 GiB + 4 KiB on a budget of 8 GiB — refused on a 4 GiB limit, else a frame the input truncates', async () => {
    const pool = makePool(8 * GiB);
    const frameLength = 4 * GiB + 4 * KiB;
    let assembler: FrameAssembler | undefined;
    const { server, port } = await listen((socket) => {
      assembler = new FrameAssembler({
        pool,
        maxFrameSize: Math.min(pool.maxMemory, maxAllocationSize),
        lengthPrefix: (bytes: Buffer) => (bytes.length >= 1 ? { headerLength: 1, payloadLength: frameLength } : null),
      });
      assembler.on('error', () => {});
      assembler.attach(socket);
    });
    try {
      const client = await connect(port);
      client.end(Buffer.from('h' + 'payload'.repeat(100)));
      while (assembler === undefined) await new Promise((resolve) => setImmediate(resolve));
      await closeOf(assembler);
      expect((assembler.error as Coded).code).toBe(
        frameLength > maxAllocationSize ? 'ERR_IOBUF_FRAME_TOO_LARGE' : 'ERR_IOBUF_FRAME_TRUNCATED',
      );
      expect(pool.stats()).toMatchObject({ inUse: 0 });
      client.destroy();
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  test.runIf(largeLimit && !overcommitAlways)(
    'Node 22+: a frame length the machine cannot map ends the assembler with ENOMEM',
    async () => {
      const pool = makePool(MAX_POOL_MEMORY);
      const assembler = new FrameAssembler({
        pool,
        maxFrameSize: Math.min(pool.maxMemory, maxAllocationSize),
        lengthPrefix: () => ({ headerLength: 1, payloadLength: 4 * TiB }),
      });
      assembler.on('error', () => {});
      mapsNothing(GiB, () => assembler.push(Buffer.from([1, 2, 3])));
      await closeOf(assembler);
      const error = assembler.error as Coded;
      expect([error.code, error.syscall]).toEqual(['ENOMEM', 'mmap']);
      expect(pool.stats()).toMatchObject({ inUse: 0, osBytes: 0 });
    },
  );
});

/**
 * A Float64Array and a DataView longer than the largest Buffer: possible
 * where V8's largest ArrayBuffer is above it (Node 20: an ArrayBuffer of
 * 4 GiB + 8 bytes, calloc'ed and never touched). Not on Node 22+, whose
 * largest Buffer is V8's largest ArrayBuffer.
 */
function viewsLongerThanABuffer(): { floats: Float64Array; dataView: DataView } | null {
  try {
    const arrayBuffer = new ArrayBuffer(maxAllocationSize + 8);
    return { floats: new Float64Array(arrayBuffer), dataView: new DataView(arrayBuffer) };
  } catch {
    return null;
  }
}

describe('views longer than a Buffer (Node 20)', () => {
  // Not under the sanitizer: its calloc writes the 4 GiB (about 10 s), and
  // what these tests check is TypeScript only.
  const longer = sanitized ? null : viewsLongerThanABuffer();

  test.skipIf(sanitized)('only where the runtime allows them', () => {
    expect(longer === null).toBe(largeLimit);
  });

  test.runIf(longer !== null)('Gatherer putBytes/putSlice refuse them with a RangeError and stay usable', async () => {
    const pool = makePool(64 * MiB);
    const gatherer = new Gatherer({ pool });
    gatherer.putU32BE(7);
    const message = `Expected an integer from 0 to ${maxAllocationSize} for view.byteLength but received ${maxAllocationSize + 8}`;
    for (const view of [longer!.floats, longer!.dataView]) {
      expectThrowsCode(() => gatherer.putBytes(view), RangeError, 'ERR_OUT_OF_RANGE', message);
      expectThrowsCode(() => gatherer.putSlice(view), RangeError, 'ERR_OUT_OF_RANGE', message);
    }
    expect(gatherer.byteLength).toBe(4);
    expect(Buffer.concat(gatherer.segments())).toEqual(Buffer.from([0, 0, 0, 7]));
    gatherer.reset();
    expect(pool.stats().inUse).toBe(0);
  });

  test.runIf(longer !== null)('IoVecArray push/set refuse an entry above the largest Buffer; one of exactly that length is taken', () => {
    const iov = new IoVecArray(4);
    const message = `Expected an integer from 0 to ${maxAllocationSize} for length but received ${maxAllocationSize + 8}`;
    expectThrowsCode(() => iov.push(longer!.dataView), RangeError, 'ERR_OUT_OF_RANGE', message);
    expectThrowsCode(() => iov.push(longer!.floats), RangeError, 'ERR_OUT_OF_RANGE', message);
    expect(iov.length).toBe(0);
    iov.push(longer!.dataView, 8);
    expectThrowsCode(() => iov.set(0, longer!.dataView), RangeError, 'ERR_OUT_OF_RANGE', message);
    expect(iov.byteLength).toBe(maxAllocationSize);
    expect(iov.entries().map((entry) => entry.length)).toEqual([maxAllocationSize]);
    iov.close();
  });
});

test('IoVecArray: a length above the view (and so above any Buffer) is a RangeError on every runtime', () => {
  const iov = new IoVecArray(1);
  const view = Buffer.alloc(16);
  expectThrowsCode(
    () => iov.push(view, 0, maxAllocationSize + 1),
    RangeError,
    'ERR_OUT_OF_RANGE',
    `Expected an integer from 0 to 16 for length but received ${maxAllocationSize + 1}`,
  );
  iov.close();
});
