// The length prefixes a frame or a string may carry: the one table of what
// each is (its width, the largest length it can say) and how it is read and
// written. The frame parser decodes with it, encodeFrame/beginFrame/endFrame
// and Gatherer#putStringPrefixed encode with it; nothing else knows a prefix.
//
//   name     bytes   largest length   layout
//   u8       1       2^8 - 1
//   u16be    2       2^16 - 1         most significant byte first
//   u16le    2       2^16 - 1         least significant byte first
//   u32be    4       2^32 - 1         most significant byte first
//   u32le    4       2^32 - 1         least significant byte first
//   varint   1 to 5  2^32 - 1         unsigned LEB128: 7 bits a byte, least
//                                     significant first, the high bit set on
//                                     every byte but the last
//
// A varint may be written longer than it needs (0x80 0x00 is 0 in two bytes):
// decode() accepts that, as LEB128 readers do; encode() writes the shortest.

import { invalidValue } from './errors';

export type LengthPrefix = 'u8' | 'u16be' | 'u16le' | 'u32be' | 'u32le' | 'varint';

/** Where decode() puts the width of the prefix it read. */
export interface DecodedHeader {
  headerLength: number;
}

export interface LengthPrefixFormat {
  readonly name: LengthPrefix;
  /** Bytes of the prefix; for 'varint' the most it may take. */
  readonly width: number;
  /** Whether every length takes `width` bytes ('varint' does not). */
  readonly fixedWidth: boolean;
  /** The largest length the prefix can say. */
  readonly limit: number;
  /** Bytes encode() writes for `length` (0 to limit). */
  widthOf(length: number): number;
  /**
   * The length in the prefix at bytes[pos, end), its width stored in
   * `into.headerLength`; NEED_MORE when the prefix is not complete yet; a
   * MALFORMED_* status (below NEED_MORE) when it can never be one.
   */
  decode(bytes: Uint8Array, pos: number, end: number, into: DecodedHeader): number;
  /** Writes `length` (0 to limit) at bytes[at]; returns the bytes written (widthOf(length)). */
  encode(bytes: Uint8Array, at: number, length: number): number;
}

/** decode(): the prefix continues past `end`. */
export const NEED_MORE = -1;
/** decode(): a varint still continued after 5 bytes. */
export const MALFORMED_TOO_LONG = -2;
/** decode(): a 5-byte varint above the largest length. */
export const MALFORMED_TOO_LARGE = -3;

/** Why decode() returned a MALFORMED_* status, for an error message. */
export function malformedReason(status: number): string {
  return status === MALFORMED_TOO_LARGE ? 'the varint length is above 2^32 - 1' : 'the varint length runs past 5 bytes';
}

// A fixed-width prefix's reader and writer, one per width and byte order,
// picked once by fixedPrefix(): decode() makes one call, with no loop over
// the bytes. The caller has checked that bytes[at, at + width) is there. A
// write stores each byte unmasked: a Uint8Array keeps the low 8 bits.
type ReadFixed = (bytes: Uint8Array, at: number) => number;
type WriteFixed = (bytes: Uint8Array, at: number, length: number) => void;

const readU8: ReadFixed = (bytes, at) => bytes[at];
const readU16BE: ReadFixed = (bytes, at) => (bytes[at] << 8) | bytes[at + 1];
const readU16LE: ReadFixed = (bytes, at) => bytes[at] | (bytes[at + 1] << 8);
const readU32BE: ReadFixed = (bytes, at) => ((bytes[at] << 24) | (bytes[at + 1] << 16) | (bytes[at + 2] << 8) | bytes[at + 3]) >>> 0;
const readU32LE: ReadFixed = (bytes, at) => (bytes[at] | (bytes[at + 1] << 8) | (bytes[at + 2] << 16) | (bytes[at + 3] << 24)) >>> 0;

const writeU8: WriteFixed = (bytes, at, length) => {
  bytes[at] = length;
};
const writeU16BE: WriteFixed = (bytes, at, length) => {
  bytes[at] = length >>> 8;
  bytes[at + 1] = length;
};
const writeU16LE: WriteFixed = (bytes, at, length) => {
  bytes[at] = length;
  bytes[at + 1] = length >>> 8;
};
const writeU32BE: WriteFixed = (bytes, at, length) => {
  bytes[at] = length >>> 24;
  bytes[at + 1] = length >>> 16;
  bytes[at + 2] = length >>> 8;
  bytes[at + 3] = length;
};
const writeU32LE: WriteFixed = (bytes, at, length) => {
  bytes[at] = length;
  bytes[at + 1] = length >>> 8;
  bytes[at + 2] = length >>> 16;
  bytes[at + 3] = length >>> 24;
};

/** The prefix `name`: every length in `width` bytes, least significant first if `littleEndian` (ignored for 1 byte). */
function fixedPrefix(name: Exclude<LengthPrefix, 'varint'>, width: 1 | 2 | 4, littleEndian: boolean): LengthPrefixFormat {
  const read = width === 1 ? readU8 : width === 2 ? (littleEndian ? readU16LE : readU16BE) : littleEndian ? readU32LE : readU32BE;
  const write = width === 1 ? writeU8 : width === 2 ? (littleEndian ? writeU16LE : writeU16BE) : littleEndian ? writeU32LE : writeU32BE;
  return {
    name,
    width,
    fixedWidth: true,
    limit: 2 ** (8 * width) - 1,
    widthOf: () => width,
    decode(bytes, pos, end, into) {
      if (end - pos < width) return NEED_MORE;
      into.headerLength = width;
      return read(bytes, pos);
    },
    encode(bytes, at, length) {
      write(bytes, at, length);
      return width;
    },
  };
}

const U8 = fixedPrefix('u8', 1, false);
const U16BE = fixedPrefix('u16be', 2, false);
const U16LE = fixedPrefix('u16le', 2, true);
const U32BE = fixedPrefix('u32be', 4, false);
const U32LE = fixedPrefix('u32le', 4, true);

const VARINT: LengthPrefixFormat = {
  name: 'varint',
  width: 5,
  fixedWidth: false,
  limit: 0xffffffff,
  widthOf(length) {
    let width = 1;
    for (let rest = length; rest >= 0x80; rest = Math.floor(rest / 0x80)) width++;
    return width;
  },
  decode(bytes, pos, end, into) {
    const available = end - pos;
    let value = 0;
    for (let i = 0; i < 5; i++) {
      if (i === available) return NEED_MORE;
      const byte = bytes[pos + i];
      value += (byte & 0x7f) * 2 ** (7 * i);
      if (byte < 0x80) {
        if (value > 0xffffffff) return MALFORMED_TOO_LARGE;
        into.headerLength = i + 1;
        return value;
      }
    }
    return MALFORMED_TOO_LONG;
  },
  encode(bytes, at, length) {
    // length ≤ 2^32 - 1: >>> 7 is exact.
    const start = at;
    for (; length >= 0x80; length >>>= 7) bytes[at++] = (length & 0x7f) | 0x80;
    bytes[at] = length;
    return at - start + 1;
  },
};

/** Every prefix, in the order error messages list them. */
export const LENGTH_PREFIXES: readonly LengthPrefixFormat[] = [U8, U16BE, U16LE, U32BE, U32LE, VARINT];

/** The names of every prefix, and of the fixed-width ones (those beginFrame() can reserve). */
export const LENGTH_PREFIX_NAMES: readonly LengthPrefix[] = LENGTH_PREFIXES.map((format) => format.name);
export const FIXED_LENGTH_PREFIX_NAMES = LENGTH_PREFIXES.filter((format) => format.fixedWidth).map(
  (format) => format.name,
) as readonly Exclude<LengthPrefix, 'varint'>[];

/** The format called `name`; undefined for anything else (the caller reports it). */
export function lengthPrefixNamed(name: unknown): LengthPrefixFormat | undefined {
  switch (name) {
    case 'u8':
      return U8;
    case 'u16be':
      return U16BE;
    case 'u16le':
      return U16LE;
    case 'u32be':
      return U32BE;
    case 'u32le':
      return U32LE;
    case 'varint':
      return VARINT;
    default:
      return undefined;
  }
}

/** The format called `name`; anything else is an ERR_INVALID_ARG_VALUE TypeError for the argument `argument`. */
export function lengthPrefixFormat(name: unknown, argument: string): LengthPrefixFormat {
  const format = lengthPrefixNamed(name);
  if (format === undefined) throw invalidValue(`one of ${quotedNames(LENGTH_PREFIX_NAMES)}`, argument, name);
  return format;
}

/** 'u8', 'u16be', … as error messages list choices. */
export function quotedNames(names: readonly string[]): string {
  return names.map((name) => `'${name}'`).join(', ');
}
