// allocAligned: alignment × size on both paths, zeroing, the constants, and
// every argument error with its constructor, code and message.
import { execFileSync } from 'node:child_process';
import { constants as bufferConstants } from 'node:buffer';
import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import {
  IobufError,
  addressOf,
  allocAligned,
  allocHuge,
  cacheLineSize,
  free,
  hugePageSize,
  isAligned,
  maxAllocationSize,
  pageKind,
  pageSize,
} from '../lib/index';
import { GiB, KiB, MiB, expectThrowsCode, vmaAt } from './helpers/memory-proc';

describe('constants', () => {
  test('pageSize is getconf PAGESIZE', () => {
    expect(pageSize).toBe(Number(execFileSync('getconf', ['PAGESIZE'], { encoding: 'utf8' })));
  });

  test('cacheLineSize is getconf LEVEL1_DCACHE_LINESIZE', () => {
    expect(cacheLineSize).toBe(Number(execFileSync('getconf', ['LEVEL1_DCACHE_LINESIZE'], { encoding: 'utf8' })));
  });

  test('hugePageSize is Hugepagesize in /proc/meminfo', () => {
    const kib = Number(/^Hugepagesize:\s+(\d+) kB$/m.exec(readFileSync('/proc/meminfo', 'utf8'))![1]);
    expect(hugePageSize).toBe(kib * KiB);
  });

  test('maxAllocationSize is buffer.constants.MAX_LENGTH', () => {
    expect(maxAllocationSize).toBe(bufferConstants.MAX_LENGTH);
  });
});

// Heap path: alignment <= page and no flags. Mapped path: the rest.
const ALIGNMENTS = [8, 16, 64, 512, 4 * KiB, 64 * KiB, 2 * MiB];
const SIZES = [1, 7, 63, 4095, 4 * KiB, 4097, 12_345, 3 * 64 * KiB, 1 * MiB + 1];

/** Fills with a pattern that depends on the offset and reads it back; returns mismatches. */
function writeAndVerify(buffer: Buffer, seed: number): number {
  for (let i = 0; i < buffer.length; i++) buffer[i] = (i * 31 + seed) & 0xff;
  let mismatches = 0;
  for (let i = 0; i < buffer.length; i++) if (buffer[i] !== ((i * 31 + seed) & 0xff)) mismatches++;
  return mismatches;
}

function nonZeroBytes(buffer: Buffer): number {
  let count = 0;
  for (let i = 0; i < buffer.length; i++) if (buffer[i] !== 0) count++;
  return count;
}

describe('allocAligned: every alignment × size', () => {
  for (const alignment of ALIGNMENTS) {
    test(`alignment ${alignment}: exact length, aligned address, zeroed, writable`, () => {
      for (const size of SIZES) {
        const buffer = allocAligned(size, { alignment });
        expect(buffer).toBeInstanceOf(Buffer);
        expect(buffer.length).toBe(size);
        expect(buffer.byteLength).toBe(size);
        expect(addressOf(buffer) % BigInt(alignment)).toBe(0n);
        expect(isAligned(buffer, alignment)).toBe(true);
        expect(nonZeroBytes(buffer)).toBe(0);
        expect(writeAndVerify(buffer, size)).toBe(0);
        // The last byte really is the last one: the view ends where the size says.
        expect(buffer[size]).toBeUndefined();
        free(buffer);
      }
    });
  }

  test('the default alignment is pageSize', () => {
    for (const size of [1, 100, pageSize + 1]) {
      const buffer = allocAligned(size);
      expect(buffer.length).toBe(size);
      expect(addressOf(buffer) % BigInt(pageSize)).toBe(0n);
      free(buffer);
    }
  });

  test('alignment 1 GiB (mapped, virtual only) and a 1 GiB + 1 size at 2 MiB', () => {
    const one = allocAligned(1, { alignment: GiB });
    expect(one.length).toBe(1);
    expect(addressOf(one) % BigInt(GiB)).toBe(0n);
    expect(isAligned(one, GiB)).toBe(true);
    expect(one[0]).toBe(0);
    one[0] = 0x5a;
    expect(one[0]).toBe(0x5a);
    free(one);

    const big = allocAligned(GiB + 1, { alignment: 2 * MiB });
    expect(big.length).toBe(GiB + 1);
    expect(isAligned(big, 2 * MiB)).toBe(true);
    // Touch one byte per 64 MiB and the last: all zero, all writable.
    for (let offset = 0; offset < GiB; offset += 64 * MiB) {
      expect(big[offset]).toBe(0);
      big[offset] = 1;
      expect(big[offset]).toBe(1);
    }
    expect(big[GiB]).toBe(0);
    big[GiB] = 9;
    expect(big[GiB]).toBe(9);
    free(big);
  });

  test('isAligned answers false for a view one byte in', () => {
    const buffer = allocAligned(8192, { alignment: 4096 });
    expect(isAligned(buffer.subarray(1), 2)).toBe(false);
    expect(isAligned(buffer.subarray(8), 8)).toBe(true);
    expect(isAligned(buffer.subarray(8), 16)).toBe(false);
    expect(addressOf(buffer.subarray(100))).toBe(addressOf(buffer) + 100n);
    free(buffer);
  });

  // maxAllocationSize is the largest Buffer the runtime makes: 4 GiB on Node 20,
  // 2^53 - 1 on Node 22 and later. Sizes up to it go to the kernel.
  test('the largest size up to 4 GiB + 4 KiB that maxAllocationSize allows is accepted (virtual only)', () => {
    const size = Math.min(maxAllocationSize, 4 * GiB + 4 * KiB);
    for (const alignment of [64, 2 * MiB]) {
      // the heap path and the mapped path
      const buffer = allocAligned(size, { alignment });
      expect(buffer.length).toBe(size);
      expect(isAligned(buffer, alignment)).toBe(true);
      buffer[size - 1] = 0xee;
      expect(buffer[size - 1]).toBe(0xee);
      free(buffer);
    }
  });

  test('maxAllocationSize itself is a Buffer, or ENOMEM from mmap when the machine cannot map that much (Node 22+)', () => {
    for (const alloc of [
      (size: number) => allocAligned(size, { alignment: 64 }),
      (size: number) => allocHuge(size, { fallback: 'normal' }),
    ]) {
      let buffer: Buffer | undefined;
      let error: (Error & { code?: string; errno?: number; syscall?: string }) | undefined;
      try {
        buffer = alloc(maxAllocationSize);
      } catch (caught) {
        error = caught as typeof error;
      }
      // 2^53 - 1 bytes are more than a 47-bit address space holds.
      if (maxAllocationSize >= 2 ** 47) {
        expect(buffer).toBeUndefined();
        expect(error).toBeInstanceOf(IobufError);
        expect({ code: error!.code, errno: error!.errno, syscall: error!.syscall }).toEqual({
          code: 'ENOMEM',
          errno: -12,
          syscall: 'mmap',
        });
      } else {
        expect(error).toBeUndefined();
        expect(buffer!.length).toBe(maxAllocationSize);
        buffer![maxAllocationSize - 1] = 0xee;
        expect(buffer![maxAllocationSize - 1]).toBe(0xee);
        free(buffer!);
      }
    }
  });
});

describe('allocAligned: zeroing', () => {
  for (const alignment of [64, 4 * KiB, 64 * KiB]) {
    test(`alignment ${alignment}: zeroed even right after a dirty allocation of the same size was freed`, () => {
      for (const size of [4 * KiB, 100_000, 1 * MiB]) {
        for (let round = 0; round < 20; round++) {
          const dirty = allocAligned(size, { alignment, zero: false });
          dirty.fill(0xa5);
          free(dirty);
          const clean = allocAligned(size, { alignment });
          expect(nonZeroBytes(clean)).toBe(0);
          clean.fill(0xff);
          free(clean);
        }
      }
    });
  }

  test('zero: false gives an aligned, writable buffer of the exact size on both paths', () => {
    for (const alignment of [8, 64, 4 * KiB, 2 * MiB]) {
      for (const size of [1, 4097, 65_536]) {
        const buffer = allocAligned(size, { alignment, zero: false });
        expect(buffer.length).toBe(size);
        expect(isAligned(buffer, alignment)).toBe(true);
        expect(writeAndVerify(buffer, 3)).toBe(0);
        free(buffer);
      }
    }
  });

  test('mapped memory is zero even with zero: false (fresh pages)', () => {
    const buffer = allocAligned(256 * KiB, { alignment: 64 * KiB, zero: false });
    expect(nonZeroBytes(buffer)).toBe(0);
    free(buffer);
  });

  test('an allocAligned buffer lies in normal pages', () => {
    for (const options of [{}, { alignment: 2 * MiB }, { alignment: 64, lock: false }]) {
      const buffer = allocAligned(4 * MiB, options);
      buffer.fill(1);
      expect(pageKind(buffer)).toBe('normal');
      free(buffer);
    }
  });
});

describe('madvise flags', () => {
  test('dontFork marks the mapping dc, dontDump dd; neither is set without them', () => {
    const plain = allocAligned(1 * MiB, { alignment: 64 * KiB });
    const noFork = allocAligned(1 * MiB, { dontFork: true });
    const noDump = allocAligned(1 * MiB, { alignment: 64, dontDump: true });
    const both = allocAligned(3 * pageSize, { dontFork: true, dontDump: true });
    const huge = allocHuge(2 * MiB, { fallback: 'normal', dontFork: true, dontDump: true });

    const flagsOf = (buffer: Buffer) => vmaAt(addressOf(buffer))!.flags;
    expect(flagsOf(plain)).not.toContain('dc');
    expect(flagsOf(plain)).not.toContain('dd');
    expect(flagsOf(noFork)).toContain('dc');
    expect(flagsOf(noFork)).not.toContain('dd');
    expect(flagsOf(noDump)).toContain('dd');
    expect(flagsOf(noDump)).not.toContain('dc');
    expect(flagsOf(both)).toEqual(expect.arrayContaining(['dc', 'dd']));
    expect(flagsOf(huge)).toEqual(expect.arrayContaining(['dc', 'dd']));
    // The flags cover the whole allocation, not only its first page.
    const lastPage = vmaAt(addressOf(both) + BigInt(both.length - 1))!;
    expect(lastPage.flags).toEqual(expect.arrayContaining(['dc', 'dd']));
    for (const buffer of [plain, noFork, noDump, both, huge]) free(buffer);
  });
});

describe('argument errors', () => {
  const sizeMessage = (received: string) => `Expected an integer from 1 to ${maxAllocationSize} for size but received ${received}`;

  test('size: not a number is a TypeError ERR_INVALID_ARG_TYPE', () => {
    for (const alloc of [allocAligned, allocHuge]) {
      expectThrowsCode(() => alloc('1' as never), TypeError, 'ERR_INVALID_ARG_TYPE', 'Expected an integer for size but received "1"');
      expectThrowsCode(() => alloc(undefined as never), TypeError, 'ERR_INVALID_ARG_TYPE');
      expectThrowsCode(() => alloc(1n as never), TypeError, 'ERR_INVALID_ARG_TYPE', 'Expected an integer for size but received 1n');
      expectThrowsCode(() => alloc(new Number(1) as never), TypeError, 'ERR_INVALID_ARG_TYPE');
    }
  });

  test('size: 0, -1, 1.5, NaN, Infinity, maxAllocationSize + 1 are RangeError ERR_OUT_OF_RANGE; 2**32 + 1 too where it is above maxAllocationSize', () => {
    for (const alloc of [allocAligned, allocHuge]) {
      expectThrowsCode(() => alloc(0), RangeError, 'ERR_OUT_OF_RANGE', sizeMessage('0'));
      expectThrowsCode(() => alloc(-1), RangeError, 'ERR_OUT_OF_RANGE', sizeMessage('-1'));
      expectThrowsCode(() => alloc(1.5), RangeError, 'ERR_OUT_OF_RANGE', sizeMessage('1.5'));
      expectThrowsCode(() => alloc(NaN), RangeError, 'ERR_OUT_OF_RANGE', sizeMessage('NaN'));
      expectThrowsCode(() => alloc(Infinity), RangeError, 'ERR_OUT_OF_RANGE', sizeMessage('Infinity'));
      expectThrowsCode(() => alloc(maxAllocationSize + 1), RangeError, 'ERR_OUT_OF_RANGE', sizeMessage(String(maxAllocationSize + 1)));
      if (2 ** 32 + 1 > maxAllocationSize) {
        // Node 20; Node 22+ accepts it (the test above)
        expectThrowsCode(() => alloc(2 ** 32 + 1), RangeError, 'ERR_OUT_OF_RANGE', sizeMessage(String(2 ** 32 + 1)));
      }
    }
  });

  test('alignment: 3, 4, 2**31, 0, 6000, 1.5 are RangeError; a string is a TypeError', () => {
    const message = (received: string) => `Expected a power of two from 8 to 1073741824 for options.alignment but received ${received}`;
    expectThrowsCode(() => allocAligned(16, { alignment: 3 }), RangeError, 'ERR_OUT_OF_RANGE', message('3'));
    expectThrowsCode(() => allocAligned(16, { alignment: 4 }), RangeError, 'ERR_OUT_OF_RANGE', message('4'));
    expectThrowsCode(() => allocAligned(16, { alignment: 2 ** 31 }), RangeError, 'ERR_OUT_OF_RANGE', message('2147483648'));
    for (const alignment of [0, -8, 6000, 1.5, NaN, 3 * 2 ** 20]) {
      expectThrowsCode(() => allocAligned(16, { alignment }), RangeError, 'ERR_OUT_OF_RANGE');
    }
    expectThrowsCode(
      () => allocAligned(16, { alignment: '64' as never }),
      TypeError,
      'ERR_INVALID_ARG_TYPE',
      'Expected a power of two for options.alignment but received "64"',
    );
  });

  test('options: null, a number or a string is a TypeError', () => {
    for (const alloc of [allocAligned, allocHuge]) {
      expectThrowsCode(
        () => alloc(16, null as never),
        TypeError,
        'ERR_INVALID_ARG_TYPE',
        'Expected an object for options but received null',
      );
      expectThrowsCode(
        () => alloc(16, 4096 as never),
        TypeError,
        'ERR_INVALID_ARG_TYPE',
        'Expected an object for options but received 4096',
      );
      expectThrowsCode(() => alloc(16, 'x' as never), TypeError, 'ERR_INVALID_ARG_TYPE');
    }
  });

  test('boolean options reject non-booleans', () => {
    expectThrowsCode(
      () => allocAligned(16, { lock: 'yes' as never }),
      TypeError,
      'ERR_INVALID_ARG_TYPE',
      'Expected a boolean for options.lock but received "yes"',
    );
    expectThrowsCode(
      () => allocAligned(16, { zero: 0 as never }),
      TypeError,
      'ERR_INVALID_ARG_TYPE',
      'Expected a boolean for options.zero but received 0',
    );
    expectThrowsCode(
      () => allocAligned(16, { dontFork: 1 as never }),
      TypeError,
      'ERR_INVALID_ARG_TYPE',
      'Expected a boolean for options.dontFork but received 1',
    );
    expectThrowsCode(
      () => allocAligned(16, { dontDump: null as never }),
      TypeError,
      'ERR_INVALID_ARG_TYPE',
      'Expected a boolean for options.dontDump but received null',
    );
    expectThrowsCode(
      () => allocHuge(16, { lock: 'yes' as never }),
      TypeError,
      'ERR_INVALID_ARG_TYPE',
      'Expected a boolean for options.lock but received "yes"',
    );
  });

  test('fallback must be one of none, thp, normal', () => {
    const message = (received: string) => `Expected one of 'none', 'thp', 'normal' for options.fallback but received ${received}`;
    expectThrowsCode(() => allocHuge(16, { fallback: 'x' as never }), TypeError, 'ERR_INVALID_ARG_VALUE', message('"x"'));
    expectThrowsCode(() => allocHuge(16, { fallback: 'THP' as never }), TypeError, 'ERR_INVALID_ARG_VALUE', message('"THP"'));
    expectThrowsCode(() => allocHuge(16, { fallback: 1 as never }), TypeError, 'ERR_INVALID_ARG_VALUE', message('1'));
  });

  test('isAligned validates its alignment (1 is allowed there)', () => {
    const buffer = allocAligned(64);
    expect(isAligned(buffer, 1)).toBe(true);
    expectThrowsCode(
      () => isAligned(buffer, 3),
      RangeError,
      'ERR_OUT_OF_RANGE',
      'Expected a power of two from 1 to 1073741824 for alignment but received 3',
    );
    expectThrowsCode(() => isAligned(buffer, 2 ** 31), RangeError, 'ERR_OUT_OF_RANGE');
    expectThrowsCode(() => isAligned(buffer, '8' as never), TypeError, 'ERR_INVALID_ARG_TYPE');
    free(buffer);
  });

  test('addressOf, isAligned, pageKind and free reject non-views with a TypeError', () => {
    for (const value of [undefined, null, 42, 'abc', {}, [1, 2]]) {
      expectThrowsCode(() => addressOf(value as never), TypeError, 'ERR_INVALID_ARG_TYPE');
      expectThrowsCode(() => pageKind(value as never), TypeError, 'ERR_INVALID_ARG_TYPE');
      expectThrowsCode(() => free(value as never), TypeError, 'ERR_INVALID_ARG_TYPE');
    }
    expectThrowsCode(
      () => free('abc' as never),
      TypeError,
      'ERR_INVALID_ARG_TYPE',
      'Expected a Buffer, TypedArray or DataView for view but received "abc"',
    );
  });

  test('addressOf of an empty view that was never freed says so (it has no memory), not "freed or detached"', () => {
    for (const value of [Buffer.alloc(0), new Uint8Array(0), new ArrayBuffer(0)]) {
      expectThrowsCode(
        () => addressOf(value),
        TypeError,
        'ERR_INVALID_ARG_VALUE',
        'Expected a view with memory behind it for view but received an empty ArrayBuffer (it has no memory, so no address)',
      );
    }
    const freed = allocAligned(4096);
    free(freed);
    expectThrowsCode(() => addressOf(freed), IobufError, 'ERR_IOBUF_DETACHED', 'view was freed or detached');
  });

  // Counted in address space, not in mapping lines: the V8 heap and the sanitizer's allocator add
  // and merge mappings on their own (51 lines under ASan once), while a leak here would be
  // 2000 calls x 4 MiB = 8 GiB of address space.
  test('a failed call allocates nothing: 2000 bad calls leave the address space as it was', () => {
    const mappedBytes = (): number => {
      const match = /^VmSize:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'));
      if (!match) throw new Error('no VmSize in /proc/self/status');
      return Number(match[1]) * 1024;
    };
    const before = mappedBytes();
    for (let i = 0; i < 1000; i++) {
      expect(() => allocAligned(4 * MiB, { alignment: 2 * MiB, lock: 'no' as never })).toThrow(TypeError);
      expect(() => allocHuge(4 * MiB, { fallback: 'bad' as never })).toThrow(TypeError);
    }
    expect(mappedBytes() - before).toBeLessThan(256 * MiB);
  });
});
