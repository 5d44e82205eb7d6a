// The iovec entry codec, and every number this side shares with
// native/iovec.h (which draws both blocks).
//
// Entry i is bytes [16 i, 16 i + 16) of IoVecArray#buffer: iov_base (u64)
// then iov_len (u64), each in the platform's byte order (little-endian on
// every target). JS reads and writes them as Uint32 halves of a Uint32Array
// over the buffer: no BigInt, no DataView. The halves are stored and loaded
// here only; every value is an integer in [0, 2^53) (addresses fit in 47
// bits, lengths are checked), so a double holds it exactly.
import os from 'node:os';

/** Bytes per entry in `IoVecArray#buffer`: sizeof(struct iovec). */
export const IOVEC_ENTRY_BYTES = 16;
/** The largest capacity an IoVecArray takes (native/iovec.h kMaxCapacity). */
export const MAX_IOVEC_CAPACITY = 2 ** 20;
/**
 * native/iovec.h kBoundsHeaderBytes: the private bounds block starts with the
 * native state's address; the [start, end) doubles of entry i follow at
 * [2 i, 2 i + 1] of a Float64Array from this byte on.
 */
export const BOUNDS_HEADER_BYTES = 16;

/** The operations of native/iovec.h IoVecOp. */
export const enum Op {
  READV = 0,
  WRITEV = 1,
  PREADV = 2,
  PWRITEV = 3,
  WRITEV_ALL = 4,
  PWRITEV_ALL = 5,
}

// Which Uint32 of a 64-bit field holds its low half.
const LOW = os.endianness() === 'LE' ? 0 : 1;
const HIGH = 1 - LOW;
const TWO_32 = 2 ** 32;
/** Uint32 words per entry; iov_base is at word 0 of an entry, iov_len at word 2. */
const ENTRY_WORDS = IOVEC_ENTRY_BYTES / 4;
const LENGTH_WORD = 2;

/** The 64-bit field at words[at, at + 1] := value (an integer in [0, 2^53)). */
function store64(words: Uint32Array, at: number, value: number): void {
  const low = value >>> 0;
  words[at + LOW] = low;
  words[at + HIGH] = (value - low) / TWO_32;
}

function load64(words: Uint32Array, at: number): number {
  return words[at + LOW] + words[at + HIGH] * TWO_32;
}

/** Entry `index` := { iov_base: base, iov_len: length }. */
export function storeEntry(words: Uint32Array, index: number, base: number, length: number): void {
  const at = ENTRY_WORDS * index;
  store64(words, at, base);
  store64(words, at + LENGTH_WORD, length);
}

/** Entry `index`'s iov_base. */
export function entryBase(words: Uint32Array, index: number): number {
  return load64(words, ENTRY_WORDS * index);
}

/** Entry `index`'s iov_len. */
export function entryLength(words: Uint32Array, index: number): number {
  return load64(words, ENTRY_WORDS * index + LENGTH_WORD);
}

/** Moves entries [from, to) down to index 0 (what advance() drops from the front). */
export function shiftEntries(words: Uint32Array, from: number, to: number): void {
  words.copyWithin(0, ENTRY_WORDS * from, ENTRY_WORDS * to);
}
