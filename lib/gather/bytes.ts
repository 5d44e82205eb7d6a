// GatherBytes: the variable-length puts — bytes copied (putSlice), strings
// (plain, NUL-terminated, length-prefixed with lib/length-prefixes.ts),
// varints, and bytes by reference or handed over (putBytes, putOwned,
// putShared).
import type { BufferPool } from '../pool';
import { poolOf } from '../pooled';
import { IobufError, outOfRange, validateInteger, validateOneOf, validateView, invalidType, invalidValue } from '../errors';
import { type LengthPrefix, lengthPrefixFormat } from '../length-prefixes';
import { SharedBuffer, kTakeOver } from '../pool/shared-buffer';
import { maxAllocationSize } from '../memory';
import { BORROWED, OWNED } from './segments';
import { GatherPuts, badInteger } from './puts';

export function validateEncoding(encoding: unknown): asserts encoding is BufferEncoding {
  if (typeof encoding !== 'string' || !Buffer.isEncoding(encoding)) {
    validateOneOf(encoding, 'encoding', ['utf8', 'utf16le', 'latin1', 'ascii', 'base64', 'base64url', 'hex'] as const);
  }
}

/** Encodings putStringNul() takes: those where a 0 byte can only come from a NUL character. */
export type NulStringEncoding = 'utf8' | 'utf-8' | 'latin1' | 'binary' | 'ascii';
const NUL_ENCODINGS: readonly NulStringEncoding[] = ['utf8', 'utf-8', 'latin1', 'binary', 'ascii'];

/** Text up to this many UTF-16 units is tried as ASCII in JS before Buffer#write (see Gatherer#encode). */
const SHORT_TEXT = 32;

function badText(text: unknown): never {
  throw invalidType('a string', 'text', text);
}

/** latin1 and ascii write the low byte of each UTF-16 unit: U+0000, U+0100, … all become a 0 byte. */
function hasLowZeroByte(text: string): boolean {
  for (let i = 0; i < text.length; i++) if ((text.charCodeAt(i) & 0xff) === 0) return true;
  return false;
}

/** Bytes of the unsigned LEB128 encoding of `value` (0 to 2^53 - 1). */
function varintWidth(value: number): number {
  let width = 1;
  for (let rest = value; rest >= 0x80; rest = Math.floor(rest / 0x80)) width++;
  return width;
}

/** Writes `value` as unsigned LEB128 at `at` (varintWidth(value) bytes). */
function writeVarint(chunk: Buffer, at: number, value: number): void {
  while (value > 0xffffffff) {
    chunk[at++] = (value % 0x80) | 0x80;
    value = Math.floor(value / 0x80);
  }
  while (value >= 0x80) {
    chunk[at++] = (value & 0x7f) | 0x80;
    value >>>= 7;
  }
  chunk[at] = value;
}

// ---------------------------------------------------------------------------
// GatherBytes
// ---------------------------------------------------------------------------

export class GatherBytes extends GatherPuts {
  // -------------------------------------------------------------------------
  // Variable-length bytes
  // -------------------------------------------------------------------------

  /** Copies `view`'s bytes into scratch (for small bytes; see putBytes for large ones). */
  putSlice(view: ArrayBufferView): this {
    validateView(view, 'view');
    const length = view.byteLength;
    if (length > maxAllocationSize) validateInteger(length, 'view.byteLength', 0, maxAllocationSize);
    if (length === 0) return this.checkOpen();
    const source = view instanceof Uint8Array ? view : new Uint8Array(view.buffer, view.byteOffset, length);
    const at = this.allocate(length);
    this.chunk.set(source, at);
    return this;
  }

  /** Encodes `text` into scratch; the bytes are those of Buffer.from(text, encoding). */
  putString(text: string, encoding: BufferEncoding = 'utf8'): this {
    if (typeof text !== 'string') {
      throw invalidType('a string', 'text', text);
    }
    if (encoding !== 'utf8') validateEncoding(encoding);
    if (text.length === 0) return this.checkOpen();
    // utf8 needs at most 3 bytes per UTF-16 unit: when that fits, write
    // without measuring first (one pass over the text instead of two).
    const room = this.limit - this.cursor;
    const bound = encoding === 'utf8' && text.length * 3 <= room ? text.length * 3 : Buffer.byteLength(text, encoding);
    const at = this.allocate(bound);
    // `write` returns what it wrote, which for hex with a bad digit is less than the bound.
    this.cursor = at + this.chunk.write(text, at, bound, encoding);
    return this;
  }

  /**
   * Encodes `text` followed by a 0 byte (a C string). Only byte encodings
   * ('utf8', 'latin1', 'ascii') make sense here; text that would encode to a
   * 0 byte of its own is an ERR_INVALID_ARG_VALUE (a reader would stop there).
   * The text's byte length is in lastStringBytes afterwards.
   */
  putStringNul(text: string, encoding: NulStringEncoding = 'utf8'): this {
    if (typeof text !== 'string') badText(text);
    const utf8 = encoding === 'utf8' || encoding === 'utf-8';
    if (!utf8) validateOneOf(encoding, 'encoding', NUL_ENCODINGS);
    if (utf8 ? text.indexOf('\0') !== -1 : hasLowZeroByte(text)) {
      throw invalidValue('a string without NUL characters', 'text', text);
    }
    const length = text.length;
    // latin1/ascii write one byte per UTF-16 unit; utf8 at most three.
    let bound = length;
    if (utf8) bound = 3 * length + 1 <= this.limit - this.cursor ? 3 * length : Buffer.byteLength(text, 'utf8');
    const at = this.allocate(bound + 1);
    const written = this.encode(text, at, bound, encoding);
    this.chunk[at + written] = 0;
    this.cursor = at + written + 1;
    this.stringBytes = written;
    return this;
  }

  /**
   * Encodes `text` after its byte length, as `prefix` says: 'u8', 'u16be',
   * 'u16le', 'u32be', 'u32le' or 'varint' (unsigned LEB128, as putVarint).
   * The text is encoded once, straight into scratch, and the prefix filled in
   * after it (no Buffer.byteLength pass for utf8 text that fits the chunk).
   * Text longer than the prefix can say is a RangeError (ERR_OUT_OF_RANGE)
   * that writes nothing. The text's byte length is in lastStringBytes afterwards.
   */
  putStringPrefixed(text: string, prefix: LengthPrefix, encoding: BufferEncoding = 'utf8'): this {
    if (typeof text !== 'string') badText(text);
    const format = lengthPrefixFormat(prefix, 'prefix');
    const max = format.limit;
    const utf8 = encoding === 'utf8';
    if (!utf8) validateEncoding(encoding);
    const length = text.length;
    // `least`..`bound`: the byte length the text can have. Exact for latin1 and
    // ascii; for utf8 one to three bytes per UTF-16 unit (a surrogate pair is
    // four bytes for two); other encodings are measured (Buffer.byteLength:
    // hex with a bad digit then writes fewer bytes, and the prefix says so).
    let least: number;
    let bound: number;
    if (utf8) {
      least = length;
      bound = 3 * length;
      if (bound > max || bound + 8 > this.limit - this.cursor) least = bound = Buffer.byteLength(text, 'utf8');
    } else if (encoding === 'latin1' || encoding === 'binary' || encoding === 'ascii') {
      least = bound = length;
    } else {
      least = bound = Buffer.byteLength(text, encoding);
    }
    if (least > max) {
      throw outOfRange(`a string of at most ${max} bytes for a '${prefix}' prefix`, 'text', text, `${least} bytes`);
    }
    const width = format.widthOf(bound);
    const at = this.allocate(width + bound);
    const chunk = this.chunk;
    const written = this.encode(text, at + width, bound, encoding);
    const used = format.widthOf(written);
    if (used < width) {
      // A varint: fewer bytes than the bound, and a shorter prefix: move the text up against it.
      chunk.copyWithin(at + used, at + width, at + width + written);
    }
    format.encode(chunk, at, written);
    this.cursor = at + used + written;
    this.stringBytes = written;
    return this;
  }

  /**
   * Encodes `text` at `at` of the open chunk (at most `bound` bytes); returns
   * the bytes written. Short ASCII text is stored by a JS loop: Buffer#write
   * is a native call of ~50 ns, a loop stores a character in ~1 ns (a topic
   * name, a header key). Anything else goes to Buffer#write.
   */
  protected encode(text: string, at: number, bound: number, encoding: BufferEncoding): number {
    const length = text.length;
    if (length <= SHORT_TEXT && (encoding === 'utf8' || encoding === 'latin1' || encoding === 'ascii')) {
      const chunk = this.chunk;
      let i = 0;
      for (; i < length; i++) {
        const code = text.charCodeAt(i);
        if (code > 0x7f) break;
        chunk[at + i] = code;
      }
      if (i === length) return length;
    }
    return length === 0 ? 0 : this.chunk.write(text, at, bound, encoding);
  }

  /**
   * Bytes of text the last putStringNul() or putStringPrefixed() encoded
   * (without the prefix or terminator): the byte length, without a separate
   * Buffer.byteLength. (For putString, `byteLength` after minus before.)
   */
  get lastStringBytes(): number {
    return this.stringBytes;
  }

  /**
   * An unsigned LEB128 varint: 7 bits a byte, least significant first, the
   * high bit set on every byte but the last (MQTT's Remaining Length,
   * protobuf's varint). 0 to Number.MAX_SAFE_INTEGER, 1 to 8 bytes.
   */
  putVarint(value: number): this {
    if (typeof value === 'number' && value >= 0 && value < 0x80 && (value | 0) === value) {
      let at = this.cursor;
      if (at + 1 > this.limit) at = this.grow(1);
      this.chunk[at] = value;
      this.cursor = at + 1;
      return this;
    }
    if (!Number.isSafeInteger(value) || value < 0) badInteger(value, 0, Number.MAX_SAFE_INTEGER);
    const width = varintWidth(value);
    let at = this.cursor;
    if (at + width > this.limit) at = this.grow(width);
    writeVarint(this.chunk, at, value);
    this.cursor = at + width;
    return this;
  }

  /**
   * Adds `view` by reference: no byte is copied, and the memory stays the
   * caller's. It must not change until the write has completed (or reset()).
   */
  putBytes(view: ArrayBufferView): this {
    validateView(view, 'view');
    this.checkOpen();
    const length = view.byteLength;
    if (length > maxAllocationSize) validateInteger(length, 'view.byteLength', 0, maxAllocationSize);
    if (length === 0) return this;
    const buffer = Buffer.isBuffer(view) ? view : Buffer.from(view.buffer, view.byteOffset, length);
    this.flush();
    this.pushSegment(buffer, 0, length, BORROWED);
    return this;
  }

  /**
   * Adds a pooled Buffer (the very one an acquire returned) by reference and
   * takes ownership of it: the gatherer releases it to its pool after the
   * write, on reset(), or when compact() has copied it. If putOwned throws,
   * the caller still owns the buffer.
   */
  putOwned(buffer: Buffer): this {
    validateView(buffer, 'buffer');
    this.checkOpen();
    const pool = poolOf(buffer);
    if (pool === null || !Buffer.isBuffer(buffer)) {
      throw new IobufError(
        'putOwned takes a pooled Buffer that is still out (the very Buffer an acquire returned, not a slice)',
        'ERR_IOBUF_FOREIGN_BUFFER',
      );
    }
    if (this.held.includes(buffer)) {
      throw new IobufError(
        'This buffer is owned by this gatherer already; a second putOwned would release it twice',
        'ERR_IOBUF_DOUBLE_RELEASE',
      );
    }
    this.flush();
    this.pushSegment(buffer, 0, buffer.length, OWNED);
    this.held.push(buffer);
    this.heldPools.push(pool);
    return this;
  }

  /**
   * Adds a shared pooled buffer's data (a Frame, or a pool.share() handle)
   * by reference and takes that handle over: from now on only the gatherer
   * can release it, which it does after the write, on reset(), or when
   * compact() has copied it; the caller's handle reads `released` and its
   * release() does nothing. To keep the data too, put `handle.retain()`.
   * `offset` and `length` put a range of the data instead of all of it (a
   * payload after a header the message rewrites; packets lying back to back
   * in a shared block); the whole handle is taken over all the same.
   * If putShared throws, the caller still holds the handle.
   */
  putShared(handle: SharedBuffer, offset = 0, length?: number): this {
    if (!(handle instanceof SharedBuffer)) {
      throw invalidType('a SharedBuffer (a Frame, or pool.share())', 'handle', handle);
    }
    // (A released handle's range is not checked: kTakeOver refuses the handle itself.)
    const size = handle.data.length;
    if (offset !== 0 && !handle.released) validateInteger(offset, 'offset', 0, size);
    if (length === undefined) length = size - offset;
    else if (!handle.released) validateInteger(length, 'length', 0, size - offset);
    this.checkOpen();
    const own = handle[kTakeOver](); // throws ERR_IOBUF_RELEASED for a released handle
    if (length === 0) {
      own.release();
      return this;
    }
    const data = own.data;
    // The held list and compact() find a segment's owner by its Buffer: a second
    // handle of data held already gets a Buffer object of its own over the same bytes.
    const segment = this.held.includes(data) ? data.subarray(0) : data;
    this.flush();
    this.pushSegment(segment, offset, offset + length, OWNED);
    this.held.push(segment);
    // release(buffer, pool) calls pool.release(buffer): the handle's release() takes (and ignores) the argument.
    this.heldPools.push(own as unknown as BufferPool);
    return this;
  }
}
