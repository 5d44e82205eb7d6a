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

const U8: LengthPrefixFormat = {
  name: 'u8',
  width: 1,
  fixedWidth: true,
  limit: 0xff,
  widthOf: () => 1,
  decode(bytes, pos, end, into) {
    if (end - pos < 1) return NEED_MORE;
    into.headerLength = 1;
    return bytes[pos];
  },
  encode(bytes, at, length) {
    bytes[at] = length;
    return 1;
  },
};

const U16BE: LengthPrefixFormat = {
  name: 'u16be',
  width: 2,
  fixedWidth: true,
  limit: 0xffff,
  widthOf: () => 2,
  decode(bytes, pos, end, into) {
    if (end - pos < 2) return NEED_MORE;
    into.headerLength = 2;
    return (bytes[pos] << 8) | bytes[pos + 1];
  },
  encode(bytes, at, length) {
    bytes[at] = length >>> 8;
    bytes[at + 1] = length;
    return 2;
  },
};

const U16LE: LengthPrefixFormat = {
  name: 'u16le',
  width: 2,
  fixedWidth: true,
  limit: 0xffff,
  widthOf: () => 2,
  decode(bytes, pos, end, into) {
    if (end - pos < 2) return NEED_MORE;
    into.headerLength = 2;
    return bytes[pos] | (bytes[pos + 1] << 8);
  },
  encode(bytes, at, length) {
    bytes[at] = length;
    bytes[at + 1] = length >>> 8;
    return 2;
  },
};

const U32BE: LengthPrefixFormat = {
  name: 'u32be',
  width: 4,
  fixedWidth: true,
  limit: 0xffffffff,
  widthOf: () => 4,
  decode(bytes, pos, end, into) {
    if (end - pos < 4) return NEED_MORE;
    into.headerLength = 4;
    return ((bytes[pos] << 24) | (bytes[pos + 1] << 16) | (bytes[pos + 2] << 8) | bytes[pos + 3]) >>> 0;
  },
  encode(bytes, at, length) {
    bytes[at] = length >>> 24;
    bytes[at + 1] = length >>> 16;
    bytes[at + 2] = length >>> 8;
    bytes[at + 3] = length;
    return 4;
  },
};

const U32LE: LengthPrefixFormat = {
  name: 'u32le',
  width: 4,
  fixedWidth: true,
  limit: 0xffffffff,
  widthOf: () => 4,
  decode(bytes, pos, end, into) {
    if (end - pos < 4) return NEED_MORE;
    into.headerLength = 4;
    return (bytes[pos] | (bytes[pos + 1] << 8) | (bytes[pos + 2] << 16) | (bytes[pos + 3] << 24)) >>> 0;
  },
  encode(bytes, at, length) {
    bytes[at] = length;
    bytes[at + 1] = length >>> 8;
    bytes[at + 2] = length >>> 16;
    bytes[at + 3] = length >>> 24;
    return 4;
  },
};

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
