// Gatherer puts: every width and byte order against the Buffer method that
// writes the same bytes, range and type errors with exact codes, strings in
// every encoding, chunk boundaries, and reserve/patch for length prefixes.
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { BufferPool } from '../lib/pool';
import { Gatherer } from '../lib/gather';
import { expectCode, thrown } from './fixtures/pool-helpers';
import { WIDTHS, bytesOf, patch, pattern, put, referenceBytes } from './fixtures/gather-helpers';

const pool = new BufferPool({ maxMemory: 64 << 20, leakDetection: 'off' });
afterAll(() => pool.close({ force: true }));
const gatherers: Gatherer[] = [];
function make(chunkSize?: number): Gatherer {
  const gatherer = new Gatherer({ pool, chunkSize });
  gatherers.push(gatherer);
  return gatherer;
}
afterEach(() => {
  for (const gatherer of gatherers.splice(0)) gatherer.reset();
  expect(pool.stats().inUse).toBe(0);
});

/** Values worth trying for a width: its ends, zero, one, and (for 64 bits) numbers as well as bigints. */
function samples(width: (typeof WIDTHS)[number]): Array<number | bigint> {
  if (width.kind === 'float') return [0, -0, 1.5, -2.25, 1e-40, 3.4e38, Infinity, -Infinity, Math.PI, Number.MAX_VALUE];
  if (width.kind === 'int64') {
    const min = width.min as bigint;
    const max = width.max as bigint;
    const numbers =
      min < 0n
        ? [-1, Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, -(2 ** 32), 2 ** 32 + 5]
        : [Number.MAX_SAFE_INTEGER, 2 ** 32, 2 ** 32 - 1];
    return [min, max, 0n, 1n, 0, 1, ...numbers];
  }
  return [width.min as number, width.max as number, 0, 1, Math.floor((width.max as number) / 2)];
}

describe('fixed-width puts', () => {
  for (const width of WIDTHS) {
    it(`put${width.name} writes what Buffer#write… writes`, () => {
      const gatherer = make();
      const expected: Buffer[] = [];
      for (const value of samples(width)) {
        put(gatherer, width, value);
        expected.push(referenceBytes(width, value));
      }
      expect(bytesOf(gatherer).equals(Buffer.concat(expected))).toBe(true);
      expect(gatherer.segments()).toHaveLength(1);
    });
  }

  it('NaN goes through putF32/putF64 as a NaN', () => {
    const gatherer = make();
    gatherer.putF32BE(NaN).putF64LE(NaN);
    const bytes = bytesOf(gatherer);
    expect(bytes.readFloatBE(0)).toBeNaN();
    expect(bytes.readDoubleLE(4)).toBeNaN();
  });

  it('chains: every put returns the gatherer', () => {
    const gatherer = make();
    expect(
      gatherer
        .putU8(1)
        .putU16LE(2)
        .putI32BE(-3)
        .putString('x')
        .putSlice(Buffer.from([4])),
    ).toBe(gatherer);
    expect(bytesOf(gatherer)).toEqual(Buffer.from([1, 2, 0, 0xff, 0xff, 0xff, 0xfd, 0x78, 4]));
  });

  it('starts a new chunk when a put does not fit; the bytes run on unbroken', () => {
    const gatherer = make(64);
    for (let i = 0; i < 63; i++) gatherer.putU8(i);
    gatherer.putU32BE(0xa1b2c3d4); // 63 + 4 > 64: a new chunk
    const segments = gatherer.segments();
    expect(segments.map((s) => s.length)).toEqual([63, 4]);
    expect(segments[1].byteOffset).not.toBe(segments[0].byteOffset + 63); // another chunk, not the next bytes
    const expected = Buffer.alloc(67);
    for (let i = 0; i < 63; i++) expected[i] = i;
    expected.writeUInt32BE(0xa1b2c3d4, 63);
    expect(bytesOf(gatherer).equals(expected)).toBe(true);
    expect(pool.stats().inUse).toBe(2);
    gatherer.compact(100);
    expect(gatherer.segments()).toHaveLength(1);
    expect(bytesOf(gatherer).equals(expected)).toBe(true);
  });

  it('scratch comes from the pool: nothing until the first put, then one 4 KiB chunk', () => {
    const before = pool.stats();
    const gatherer = make();
    expect(pool.stats().acquires).toBe(before.acquires);
    gatherer.putU8(1);
    const after = pool.stats();
    expect(after.acquires - before.acquires).toBe(1);
    expect(after.classes.find((row) => row.size === 4096)!.inUse).toBe(1);
    for (let i = 0; i < 1000; i++) gatherer.putU32BE(i); // 4001 bytes: still the one chunk
    expect(pool.stats().acquires - before.acquires).toBe(1);
    expect(gatherer.segments()).toHaveLength(1);
  });
});

describe('put errors', () => {
  const message = (fn: () => unknown) => thrown(fn).message;

  it('a value out of range for its width is a RangeError (ERR_OUT_OF_RANGE) and writes nothing', () => {
    const gatherer = make();
    for (const width of WIDTHS) {
      if (width.kind === 'float') continue;
      const outside =
        width.kind === 'int64'
          ? [(width.max as bigint) + 1n, (width.min as bigint) - 1n, 1.5, 2 ** 53, NaN]
          : [(width.max as number) + 1, (width.min as number) - 1, 1.5, NaN, Infinity];
      for (const value of outside) {
        expectCode(
          thrown(() => put(gatherer, width, value)),
          'RangeError',
          'ERR_OUT_OF_RANGE',
        );
        expectCode(
          thrown(() => patch(gatherer, width, 0, value)),
          'RangeError',
          'ERR_OUT_OF_RANGE',
        );
      }
    }
    expect(gatherer.byteLength).toBe(0);
    expect(pool.stats().inUse).toBe(0); // a rejected put took no chunk either
  });

  it('a value of the wrong type is a TypeError (ERR_INVALID_ARG_TYPE)', () => {
    const gatherer = make();
    for (const width of WIDTHS) {
      for (const value of ['1', null, undefined, {}]) {
        expectCode(
          thrown(() => put(gatherer, width, value as any)),
          'TypeError',
          'ERR_INVALID_ARG_TYPE',
        );
      }
    }
    expectCode(
      thrown(() => gatherer.putU32BE(1n as any)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    expect(gatherer.byteLength).toBe(0);
  });

  it('says what it expected and what it got', () => {
    const gatherer = make();
    expect(message(() => gatherer.putU32BE(2 ** 32))).toBe('Expected an integer from 0 to 4294967295 for value but received 4294967296');
    expect(message(() => gatherer.putI8(128))).toBe('Expected an integer from -128 to 127 for value but received 128');
    expect(message(() => gatherer.putU16LE('7' as any))).toBe('Expected an integer for value but received "7"');
    expect(message(() => gatherer.putU64BE(2n ** 64n))).toBe(
      'Expected a bigint from 0 to 18446744073709551615 for value but received 18446744073709551616n',
    );
    expect(message(() => gatherer.putI64LE(2 ** 53))).toBe(
      'Expected an integer from -9007199254740991 to 9007199254740991 (a bigint for the full 64-bit range) for value but received 9007199254740992',
    );
    expect(message(() => gatherer.putF64BE('1' as any))).toBe('Expected a number for value but received "1"');
  });
});

describe('variable-length puts', () => {
  it('putString encodes like Buffer.from(text, encoding), in every encoding', () => {
    const text = 'héllo wörld € 😀 0123 abcdef';
    for (const encoding of [
      'utf8',
      'utf-8',
      'utf16le',
      'ucs2',
      'latin1',
      'binary',
      'ascii',
      'base64',
      'base64url',
      'hex',
    ] as BufferEncoding[]) {
      const gatherer = make(64);
      gatherer.putU8(0xee).putString(text, encoding).putString('deadbeef', encoding).putU8(0xff);
      const expected = Buffer.concat([
        Buffer.from([0xee]),
        Buffer.from(text, encoding),
        Buffer.from('deadbeef', encoding),
        Buffer.from([0xff]),
      ]);
      expect(bytesOf(gatherer).equals(expected), encoding).toBe(true);
    }
  });

  it('putString of a text longer than a chunk takes a chunk of its own size', () => {
    const gatherer = make();
    const text = 'ab€'.repeat(5000); // 25,000 bytes of UTF-8
    gatherer.putU8(1).putString(text).putU8(2);
    expect(bytesOf(gatherer).equals(Buffer.concat([Buffer.from([1]), Buffer.from(text), Buffer.from([2])]))).toBe(true);
    expect(gatherer.segments().map((s) => s.length)).toEqual([1, 25_000, 1]);
  });

  it('putString rejects a non-string and an unknown encoding', () => {
    const gatherer = make();
    expectCode(
      thrown(() => gatherer.putString(42 as any)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    expectCode(
      thrown(() => gatherer.putString('x', 'klingon' as any)),
      'TypeError',
      'ERR_INVALID_ARG_VALUE',
    );
    expect(gatherer.byteLength).toBe(0);
  });

  it('putSlice copies: later changes to the source do not reach the gatherer', () => {
    const gatherer = make();
    const source = pattern(100, 3);
    const copy = Buffer.from(source);
    gatherer.putSlice(source);
    source.fill(0);
    expect(bytesOf(gatherer).equals(copy)).toBe(true);
    expect(gatherer.segments()[0].buffer).not.toBe(source.buffer);
  });

  it('putSlice takes any view: the bytes it covers, not its elements', () => {
    const gatherer = make();
    const words = new Uint16Array([0x0102, 0x0304, 0x0506]);
    const view = new DataView(words.buffer, 2, 4);
    gatherer.putSlice(words.subarray(1)).putSlice(view).putSlice(new Uint8Array(0));
    const bytes = Buffer.from(words.buffer);
    expect(bytesOf(gatherer).equals(Buffer.concat([bytes.subarray(2), bytes.subarray(2, 6)]))).toBe(true);
    expectCode(
      thrown(() => gatherer.putSlice('abc' as any)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
  });
});

describe('reserve and patch', () => {
  it('reserve returns the position; a patch fills in a length prefix known only at the end', () => {
    const gatherer = make();
    gatherer.putU8(0x7f);
    const at = gatherer.reserve(4);
    expect(at).toBe(1);
    const body = pattern(10_000, 4);
    gatherer.putString('body:').putBytes(body).putU16BE(0xbeef);
    gatherer.patchU32BE(at, gatherer.byteLength - at - 4);
    const expected = Buffer.concat([Buffer.from([0x7f, 0, 0, 0x27, 0x17]), Buffer.from('body:'), body, Buffer.from([0xbe, 0xef])]);
    expect(bytesOf(gatherer).equals(expected)).toBe(true);
  });

  it('reserved bytes are zero until patched, and every patch width lands where it is asked to', () => {
    const gatherer = make(64);
    gatherer.putString('x'.repeat(60));
    const at = gatherer.reserve(8); // does not fit the first 64-byte chunk: a new one
    expect(at).toBe(60);
    expect(bytesOf(gatherer).subarray(60).equals(Buffer.alloc(8))).toBe(true);
    for (const width of WIDTHS) {
      const value = width.kind === 'float' ? -1.25 : width.kind === 'int64' ? (width.min as bigint) + 3n : (width.max as number) - 1;
      for (let offset = 0; offset + width.bytes <= 8; offset++) {
        patch(gatherer, width, at + offset, value);
        const expected = Buffer.alloc(8);
        width.write(expected, value, offset);
        const got = bytesOf(gatherer).subarray(at + offset, at + offset + width.bytes);
        expect(got.equals(expected.subarray(offset, offset + width.bytes)), `${width.name} at +${offset}`).toBe(true);
      }
    }
  });

  it('patching outside reserved bytes is a RangeError (ERR_OUT_OF_RANGE), and changes nothing', () => {
    const gatherer = make();
    gatherer.putU32BE(0xffffffff);
    const at = gatherer.reserve(4);
    gatherer.putU32BE(0xffffffff);
    const zero = gatherer.reserve(0);
    expect(zero).toBe(12);
    const before = bytesOf(gatherer);
    expectCode(
      thrown(() => gatherer.patchU32BE(0, 1)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    ); // put bytes, not reserved
    expectCode(
      thrown(() => gatherer.patchU32BE(at + 1, 1)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    ); // runs past the reservation
    expectCode(
      thrown(() => gatherer.patchU16BE(at - 1, 1)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    ); // starts before it
    expectCode(
      thrown(() => gatherer.patchU8(zero, 1)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    ); // reserve(0) reserves nothing
    expectCode(
      thrown(() => gatherer.patchU8(1000, 1)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => gatherer.patchU8(-1, 1)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => gatherer.patchU8('4' as any, 1)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    expect(thrown(() => gatherer.patchU32BE(at + 1, 1)).message).toBe(
      'Expected the position of 4 bytes inside a region reserve() returned for at but received 5',
    );
    expect(bytesOf(gatherer).equals(before)).toBe(true);
    gatherer.patchU8(at + 3, 9);
    expect(bytesOf(gatherer)[at + 3]).toBe(9);
  });

  it('a reservation can be patched after blobs, compact() and putGatherer() moved its bytes', () => {
    const inner = make();
    const innerAt = inner.reserve(2);
    inner.putBytes(Buffer.from('blob'));
    const outer = make();
    outer.putU8(1);
    const outerAt = outer.reserve(4);
    outer.putBytes(Buffer.from('ab')).putBytes(Buffer.from('cd'));
    outer.putGatherer(inner);
    outer.compact(1000); // everything into one scratch segment: the reserved bytes moved
    expect(outer.segments()).toHaveLength(1);
    outer.patchU32LE(outerAt, 0x04030201);
    outer.patchU16BE(1 + 4 + 4 + innerAt, 0xcafe);
    expect(bytesOf(outer)).toEqual(Buffer.from([1, 1, 2, 3, 4, ...Buffer.from('abcd'), 0xca, 0xfe, ...Buffer.from('blob')]));
  });

  it('rejects a bad length', () => {
    const gatherer = make();
    expectCode(
      thrown(() => gatherer.reserve(-1)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => gatherer.reserve(1.5)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => gatherer.reserve('4' as any)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
  });
});
