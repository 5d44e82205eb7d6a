// The string and varint puts protocols use everywhere: putStringNul (a C
// string), putStringPrefixed (the byte length, then the text) and putVarint
// (unsigned LEB128), each against a reference built with Buffer.from /
// Buffer#write and a plain-JS LEB128 encoder, at chunk sizes that make the
// puts straddle chunk ends; lastStringBytes against Buffer.byteLength; bad
// input with exact codes and no bytes or memory taken.
import fc from 'fast-check';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { BufferPool } from '../lib/pool';
import { Gatherer } from '../lib/gather';
import type { LengthPrefix } from '../lib/index';
import { expectCode, thrown } from './fixtures/pool-helpers';
import { bytesOf } from './fixtures/gather-helpers';

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

// ---------------------------------------------------------------------------
// References
// ---------------------------------------------------------------------------

/** Unsigned LEB128 with BigInt arithmetic (no shared code with the gatherer's encoder). */
function leb128(value: number): Buffer {
  const bytes: number[] = [];
  let rest = BigInt(value);
  do {
    const low = Number(rest & 0x7fn);
    rest >>= 7n;
    bytes.push(rest > 0n ? low | 0x80 : low);
  } while (rest > 0n);
  return Buffer.from(bytes);
}

function prefixBytes(prefix: LengthPrefix, length: number): Buffer {
  const buffer = Buffer.alloc(4);
  switch (prefix) {
    case 'u8':
      buffer.writeUInt8(length);
      return buffer.subarray(0, 1);
    case 'u16be':
      buffer.writeUInt16BE(length);
      return buffer.subarray(0, 2);
    case 'u16le':
      buffer.writeUInt16LE(length);
      return buffer.subarray(0, 2);
    case 'u32be':
      buffer.writeUInt32BE(length);
      return buffer;
    case 'u32le':
      buffer.writeUInt32LE(length);
      return buffer;
    default:
      return leb128(length);
  }
}

const PREFIXES: LengthPrefix[] = ['u8', 'u16be', 'u16le', 'u32be', 'u32le', 'varint'];
const PREFIX_MAX: Record<LengthPrefix, number> = {
  u8: 0xff,
  u16be: 0xffff,
  u16le: 0xffff,
  u32be: 0xffffffff,
  u32le: 0xffffffff,
  varint: Number.MAX_SAFE_INTEGER,
};

// Text with one-, two-, three- and four-byte UTF-8 characters, a lone surrogate
// (encoded as U+FFFD) and characters whose low byte is 0 in latin1.
const unit = fc.constantFrom('a', 'Z', '/', '+', '#', '0', 'é', 'ÿ', 'Ā', '€', '中', '😀', '\ud800', ' ') as fc.Arbitrary<string>;
const text = fc.oneof(
  fc.string({ unit, maxLength: 60 }),
  // Lengths around the points where a varint prefix grows a byte (127/128 bytes, 16383/16384).
  fc
    .tuple(fc.constantFrom(40, 42, 43, 63, 64, 126, 127, 128, 129, 5461, 16383, 16384), fc.constantFrom('a', 'é', '€'))
    .map(([count, char]) => char.repeat(count)),
);

type Op =
  | { op: 'nul'; text: string; encoding: 'utf8' | 'latin1' | 'ascii' }
  | { op: 'prefixed'; text: string; prefix: LengthPrefix; encoding: BufferEncoding }
  | { op: 'varint'; value: number }
  | { op: 'u8'; value: number };

const ops = fc.array(
  fc.oneof(
    text.chain((t) =>
      fc.constantFrom('utf8', 'latin1', 'ascii').map((encoding) => ({ op: 'nul' as const, text: t, encoding: encoding as 'utf8' })),
    ),
    fc
      .record({
        text,
        prefix: fc.constantFrom(...PREFIXES),
        encoding: fc.constantFrom<BufferEncoding>('utf8', 'utf8', 'latin1', 'ascii', 'utf16le', 'hex', 'base64'),
      })
      .map((r) => ({ op: 'prefixed' as const, ...r })),
    fc
      .oneof(fc.nat(300), fc.nat(), fc.maxSafeNat(), fc.constantFrom(127, 128, 16383, 16384, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1))
      .map((value) => ({ op: 'varint' as const, value })),
    fc.nat(255).map((value) => ({ op: 'u8' as const, value })),
  ),
  { maxLength: 25 },
);

/**
 * The bytes the reference writes for `step`, and the text's byte length;
 * textBytes -1: the put must throw `rejects`; -2: not a string put.
 */
function reference(step: Op): { bytes: Buffer; textBytes: number; rejects?: [string, string] } {
  switch (step.op) {
    case 'nul': {
      const encoded = Buffer.from(step.text, step.encoding);
      // A 0 byte inside the text ('Ā' and the second half of '😀' in latin1, say) would end the string early.
      if (encoded.includes(0)) return { bytes: Buffer.alloc(0), textBytes: -1, rejects: ['TypeError', 'ERR_INVALID_ARG_VALUE'] };
      return { bytes: Buffer.concat([encoded, Buffer.from([0])]), textBytes: encoded.length };
    }
    case 'prefixed': {
      const encoded = Buffer.from(step.text, step.encoding);
      if (Buffer.byteLength(step.text, step.encoding) > PREFIX_MAX[step.prefix])
        return { bytes: Buffer.alloc(0), textBytes: -1, rejects: ['RangeError', 'ERR_OUT_OF_RANGE'] };
      return { bytes: Buffer.concat([prefixBytes(step.prefix, encoded.length), encoded]), textBytes: encoded.length };
    }
    case 'varint':
      return { bytes: leb128(step.value), textBytes: -2 };
    default:
      return { bytes: Buffer.from([step.value]), textBytes: -2 };
  }
}

function apply(gatherer: Gatherer, step: Op): void {
  switch (step.op) {
    case 'nul':
      gatherer.putStringNul(step.text, step.encoding);
      break;
    case 'prefixed':
      gatherer.putStringPrefixed(step.text, step.prefix, step.encoding);
      break;
    case 'varint':
      gatherer.putVarint(step.value);
      break;
    default:
      gatherer.putU8(step.value);
  }
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

describe('string and varint puts equal the Buffer reference', () => {
  it('for random sequences, at chunk sizes that split them', () => {
    fc.assert(
      fc.property(fc.constantFrom(64, 100, 4096, 65536), ops, (chunkSize, steps) => {
        const before = pool.stats().inUse;
        const gatherer = new Gatherer({ pool, chunkSize });
        try {
          const expected: Buffer[] = [];
          for (const step of steps) {
            const { bytes, textBytes, rejects } = reference(step);
            const length = gatherer.byteLength;
            if (rejects !== undefined) {
              expectCode(
                thrown(() => apply(gatherer, step)),
                ...rejects,
              );
              expect(gatherer.byteLength).toBe(length);
              continue;
            }
            apply(gatherer, step);
            expected.push(bytes);
            expect(gatherer.byteLength - length).toBe(bytes.length);
            if (textBytes >= 0) expect(gatherer.lastStringBytes).toBe(textBytes);
          }
          expect(bytesOf(gatherer).equals(Buffer.concat(expected))).toBe(true);
        } finally {
          gatherer.reset();
        }
        expect(pool.stats().inUse).toBe(before);
      }),
      { numRuns: 400 },
    );
  });

  it('putVarint writes LEB128 for every safe integer', () => {
    fc.assert(
      fc.property(fc.maxSafeNat(), (value) => {
        const gatherer = new Gatherer({ pool, chunkSize: 64 });
        try {
          gatherer.putVarint(value);
          expect(bytesOf(gatherer).equals(leb128(value))).toBe(true);
        } finally {
          gatherer.reset();
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('string puts: edges', () => {
  it('an empty string is its prefix (zero) or a lone terminator', () => {
    const gatherer = make();
    gatherer.putStringNul('').putStringPrefixed('', 'u16be').putStringPrefixed('', 'varint').putStringPrefixed('', 'u32le');
    expect(bytesOf(gatherer)).toEqual(Buffer.from([0, 0, 0, 0, 0, 0, 0, 0]));
    expect(gatherer.lastStringBytes).toBe(0);
  });

  it('the largest string a prefix can say fits; one byte more is a RangeError that writes nothing and takes no memory', () => {
    const gatherer = make(64);
    gatherer.putStringPrefixed('x'.repeat(255), 'u8');
    expect(gatherer.lastStringBytes).toBe(255);
    const length = gatherer.byteLength;
    const inUse = pool.stats().inUse;
    const error = thrown(() => gatherer.putStringPrefixed('x'.repeat(256), 'u8'));
    expectCode(error, 'RangeError', 'ERR_OUT_OF_RANGE');
    expect(error.message).toBe("Expected a string of at most 255 bytes for a 'u8' prefix for text but received 256 bytes");
    // 86 '€' are 258 UTF-8 bytes though only 86 UTF-16 units.
    expectCode(
      thrown(() => gatherer.putStringPrefixed('€'.repeat(86), 'u8')),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expect(gatherer.byteLength).toBe(length);
    expect(pool.stats().inUse).toBe(inUse);
    gatherer.putStringPrefixed('€'.repeat(85), 'u8');
    expect(gatherer.lastStringBytes).toBe(255);
    const big = 'y'.repeat(0x10000);
    expectCode(
      thrown(() => gatherer.putStringPrefixed(big, 'u16le')),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    gatherer.putStringPrefixed(big.slice(1), 'u16le');
    expect(bytesOf(gatherer).subarray(-0x10001, -0xffff)).toEqual(Buffer.from([0xff, 0xff]));
  });

  it('a varint prefix whose bound is a byte longer than the text needs still comes out minimal', () => {
    // 50 ASCII characters could be 150 UTF-8 bytes (a 2-byte varint) but are 50 (1 byte).
    const gatherer = make();
    gatherer.putStringPrefixed('a'.repeat(50), 'varint').putU8(0xee);
    expect(bytesOf(gatherer)).toEqual(Buffer.concat([Buffer.from([50]), Buffer.alloc(50, 'a'), Buffer.from([0xee])]));
  });

  it('putStringNul rejects text that would carry a 0 byte of its own', () => {
    const gatherer = make();
    for (const [text, encoding] of [
      ['a\0b', 'utf8'],
      ['\0', 'latin1'],
      ['xĀ', 'latin1'],
      ['Ā', 'ascii'],
    ] as const) {
      const error = thrown(() => gatherer.putStringNul(text, encoding));
      expectCode(error, 'TypeError', 'ERR_INVALID_ARG_VALUE');
      expect(error.message).toMatch(/^Expected a string without NUL characters for text but received /);
    }
    expect(gatherer.byteLength).toBe(0);
    expect(pool.stats().inUse).toBe(0);
  });

  it('bad arguments: exact codes, nothing written', () => {
    const gatherer = make();
    expectCode(
      thrown(() => gatherer.putStringNul(5 as unknown as string)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    expectCode(
      thrown(() => gatherer.putStringNul('a', 'hex' as 'utf8')),
      'TypeError',
      'ERR_INVALID_ARG_VALUE',
    );
    expectCode(
      thrown(() => gatherer.putStringPrefixed(null as unknown as string, 'u8')),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    expectCode(
      thrown(() => gatherer.putStringPrefixed('a', 'u24' as LengthPrefix)),
      'TypeError',
      'ERR_INVALID_ARG_VALUE',
    );
    expectCode(
      thrown(() => gatherer.putStringPrefixed('a', 'u8', 'klingon' as BufferEncoding)),
      'TypeError',
      'ERR_INVALID_ARG_VALUE',
    );
    expectCode(
      thrown(() => gatherer.putVarint(-1)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => gatherer.putVarint(1.5)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => gatherer.putVarint(2 ** 53)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => gatherer.putVarint('1' as unknown as number)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    expect(gatherer.byteLength).toBe(0);
    expect(pool.stats().inUse).toBe(0);
  });

  it('the puts refuse a gatherer that is writing or spent, like every put', async () => {
    const gatherer = make();
    gatherer.putU8(1);
    const { Writable } = await import('node:stream');
    const sink = new Writable({
      write(_chunk, _encoding, callback) {
        setImmediate(callback);
      },
    });
    const writing = gatherer.writeTo(sink);
    expectCode(
      thrown(() => gatherer.putStringNul('a')),
      'IobufError',
      'ERR_IOBUF_GATHERER_BUSY',
    );
    expectCode(
      thrown(() => gatherer.putStringPrefixed('a', 'u16be')),
      'IobufError',
      'ERR_IOBUF_GATHERER_BUSY',
    );
    expectCode(
      thrown(() => gatherer.putVarint(1000)),
      'IobufError',
      'ERR_IOBUF_GATHERER_BUSY',
    );
    await writing;
    expectCode(
      thrown(() => gatherer.putVarint(1)),
      'IobufError',
      'ERR_IOBUF_GATHERER_SPENT',
    );
  });
});
