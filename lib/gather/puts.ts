// GatherPuts: the hot path — fixed-width puts straight into the open scratch
// chunk (a range check, a compare against the chunk's limit, a DataView
// store) — and reserve()/patch*(), which write into bytes reserved earlier.
import { validateInteger, invalidType, outOfRange } from '../errors';
import { GatherSegments, dataViewOf } from './segments';

// ---------------------------------------------------------------------------
// Argument errors (off the hot path: a put calls these only when its one-line check failed)
// ---------------------------------------------------------------------------

export function badInteger(value: unknown, min: number, max: number): never {
  validateInteger(value, 'value', min, max);
  throw new RangeError(`Expected an integer from ${min} to ${max} for value`); // not reached
}

function check64(value: unknown, signed: boolean): void {
  const min = signed ? -(2n ** 63n) : 0n;
  const max = signed ? 2n ** 63n - 1n : 2n ** 64n - 1n;
  if (typeof value === 'bigint') {
    if (value >= min && value <= max) return;
    throw outOfRange(`a bigint from ${min} to ${max}`, 'value', value, `${value}n`);
  }
  if (typeof value !== 'number') {
    throw invalidType('a bigint or a safe integer', 'value', value);
  }
  if (!Number.isSafeInteger(value) || (!signed && value < 0)) {
    const range = signed ? `${Number.MIN_SAFE_INTEGER} to ${Number.MAX_SAFE_INTEGER}` : `0 to ${Number.MAX_SAFE_INTEGER}`;
    throw outOfRange(`an integer from ${range} (a bigint for the full 64-bit range)`, 'value', value, `${value}`);
  }
}

function badFloat(value: unknown): never {
  throw invalidType('a number', 'value', value);
}

const TWO_32 = 4294967296;

/** Writes a validated 64-bit value: a bigint directly, a safe integer as two 32-bit halves (no BigInt made). */
function write64(view: DataView, at: number, value: bigint | number, signed: boolean, littleEndian: boolean): void {
  if (typeof value === 'bigint') {
    if (signed) view.setBigInt64(at, value, littleEndian);
    else view.setBigUint64(at, value, littleEndian);
    return;
  }
  // Math.floor keeps the sign for negative values; `>>> 0` is value mod 2^32.
  const high = Math.floor(value / TWO_32);
  const low = value >>> 0;
  if (littleEndian) {
    view.setUint32(at, low, true);
    view.setInt32(at + 4, high | 0, true);
  } else {
    view.setInt32(at, high | 0);
    view.setUint32(at + 4, low);
  }
}

// ---------------------------------------------------------------------------
// GatherPuts
// ---------------------------------------------------------------------------

export class GatherPuts extends GatherSegments {
  /** Set by locate(): the byte offset, in the DataView it returned, of the position asked for. */
  protected patchOffset = 0;

  // -------------------------------------------------------------------------
  // Hot path: fixed-width puts straight into the open chunk
  // -------------------------------------------------------------------------

  putU8(value: number): this {
    if (typeof value !== 'number' || (value & 0xff) !== value) badInteger(value, 0, 0xff);
    let at = this.cursor;
    if (at + 1 > this.limit) at = this.grow(1);
    this.chunk[at] = value;
    this.cursor = at + 1;
    return this;
  }

  putI8(value: number): this {
    if (typeof value !== 'number' || (value << 24) >> 24 !== value) badInteger(value, -0x80, 0x7f);
    let at = this.cursor;
    if (at + 1 > this.limit) at = this.grow(1);
    this.chunk[at] = value & 0xff;
    this.cursor = at + 1;
    return this;
  }

  putU16BE(value: number): this {
    if (typeof value !== 'number' || (value & 0xffff) !== value) badInteger(value, 0, 0xffff);
    let at = this.cursor;
    if (at + 2 > this.limit) at = this.grow(2);
    this.view.setUint16(at, value);
    this.cursor = at + 2;
    return this;
  }

  putU16LE(value: number): this {
    if (typeof value !== 'number' || (value & 0xffff) !== value) badInteger(value, 0, 0xffff);
    let at = this.cursor;
    if (at + 2 > this.limit) at = this.grow(2);
    this.view.setUint16(at, value, true);
    this.cursor = at + 2;
    return this;
  }

  putI16BE(value: number): this {
    if (typeof value !== 'number' || (value << 16) >> 16 !== value) badInteger(value, -0x8000, 0x7fff);
    let at = this.cursor;
    if (at + 2 > this.limit) at = this.grow(2);
    this.view.setInt16(at, value);
    this.cursor = at + 2;
    return this;
  }

  putI16LE(value: number): this {
    if (typeof value !== 'number' || (value << 16) >> 16 !== value) badInteger(value, -0x8000, 0x7fff);
    let at = this.cursor;
    if (at + 2 > this.limit) at = this.grow(2);
    this.view.setInt16(at, value, true);
    this.cursor = at + 2;
    return this;
  }

  putU32BE(value: number): this {
    if (typeof value !== 'number' || value >>> 0 !== value) badInteger(value, 0, 0xffffffff);
    let at = this.cursor;
    if (at + 4 > this.limit) at = this.grow(4);
    this.view.setUint32(at, value);
    this.cursor = at + 4;
    return this;
  }

  putU32LE(value: number): this {
    if (typeof value !== 'number' || value >>> 0 !== value) badInteger(value, 0, 0xffffffff);
    let at = this.cursor;
    if (at + 4 > this.limit) at = this.grow(4);
    this.view.setUint32(at, value, true);
    this.cursor = at + 4;
    return this;
  }

  putI32BE(value: number): this {
    if (typeof value !== 'number' || (value | 0) !== value) badInteger(value, -0x80000000, 0x7fffffff);
    let at = this.cursor;
    if (at + 4 > this.limit) at = this.grow(4);
    this.view.setInt32(at, value);
    this.cursor = at + 4;
    return this;
  }

  putI32LE(value: number): this {
    if (typeof value !== 'number' || (value | 0) !== value) badInteger(value, -0x80000000, 0x7fffffff);
    let at = this.cursor;
    if (at + 4 > this.limit) at = this.grow(4);
    this.view.setInt32(at, value, true);
    this.cursor = at + 4;
    return this;
  }

  /** A bigint from 0 to 2^64-1, or a number from 0 to Number.MAX_SAFE_INTEGER. */
  putU64BE(value: bigint | number): this {
    return this.put64(value, false, false);
  }

  putU64LE(value: bigint | number): this {
    return this.put64(value, false, true);
  }

  /** A bigint from -2^63 to 2^63-1, or a safe integer. */
  putI64BE(value: bigint | number): this {
    return this.put64(value, true, false);
  }

  putI64LE(value: bigint | number): this {
    return this.put64(value, true, true);
  }

  putF32BE(value: number): this {
    if (typeof value !== 'number') badFloat(value);
    let at = this.cursor;
    if (at + 4 > this.limit) at = this.grow(4);
    this.view.setFloat32(at, value);
    this.cursor = at + 4;
    return this;
  }

  putF32LE(value: number): this {
    if (typeof value !== 'number') badFloat(value);
    let at = this.cursor;
    if (at + 4 > this.limit) at = this.grow(4);
    this.view.setFloat32(at, value, true);
    this.cursor = at + 4;
    return this;
  }

  putF64BE(value: number): this {
    if (typeof value !== 'number') badFloat(value);
    let at = this.cursor;
    if (at + 8 > this.limit) at = this.grow(8);
    this.view.setFloat64(at, value);
    this.cursor = at + 8;
    return this;
  }

  putF64LE(value: number): this {
    if (typeof value !== 'number') badFloat(value);
    let at = this.cursor;
    if (at + 8 > this.limit) at = this.grow(8);
    this.view.setFloat64(at, value, true);
    this.cursor = at + 8;
    return this;
  }

  protected put64(value: bigint | number, signed: boolean, littleEndian: boolean): this {
    check64(value, signed);
    let at = this.cursor;
    if (at + 8 > this.limit) at = this.grow(8);
    write64(this.view, at, value, signed, littleEndian);
    this.cursor = at + 8;
    return this;
  }

  // -------------------------------------------------------------------------
  // Reserve now, patch later (length prefixes)
  // -------------------------------------------------------------------------

  /**
   * Reserves `length` zeroed scratch bytes and returns their position (the
   * byte offset from the start of the message), for patch*() once the value
   * is known.
   */
  reserve(length: number): number {
    validateInteger(length, 'length', 0, 2 ** 30);
    const position = this.byteLength;
    if (length === 0) {
      this.checkOpen();
      return position;
    }
    const at = this.allocate(length);
    this.chunk.fill(0, at, at + length);
    this.reservedStarts.push(position);
    this.reservedEnds.push(position + length);
    return position;
  }

  patchU8(at: number, value: number): this {
    if (typeof value !== 'number' || (value & 0xff) !== value) badInteger(value, 0, 0xff);
    this.locate(at, 1).setUint8(this.patchOffset, value);
    return this;
  }

  patchI8(at: number, value: number): this {
    if (typeof value !== 'number' || (value << 24) >> 24 !== value) badInteger(value, -0x80, 0x7f);
    this.locate(at, 1).setInt8(this.patchOffset, value);
    return this;
  }

  patchU16BE(at: number, value: number): this {
    return this.patch16(at, value, false, false);
  }
  patchU16LE(at: number, value: number): this {
    return this.patch16(at, value, false, true);
  }
  patchI16BE(at: number, value: number): this {
    return this.patch16(at, value, true, false);
  }
  patchI16LE(at: number, value: number): this {
    return this.patch16(at, value, true, true);
  }
  patchU32BE(at: number, value: number): this {
    return this.patch32(at, value, false, false);
  }
  patchU32LE(at: number, value: number): this {
    return this.patch32(at, value, false, true);
  }
  patchI32BE(at: number, value: number): this {
    return this.patch32(at, value, true, false);
  }
  patchI32LE(at: number, value: number): this {
    return this.patch32(at, value, true, true);
  }
  patchU64BE(at: number, value: bigint | number): this {
    return this.patch64(at, value, false, false);
  }
  patchU64LE(at: number, value: bigint | number): this {
    return this.patch64(at, value, false, true);
  }
  patchI64BE(at: number, value: bigint | number): this {
    return this.patch64(at, value, true, false);
  }
  patchI64LE(at: number, value: bigint | number): this {
    return this.patch64(at, value, true, true);
  }
  patchF32BE(at: number, value: number): this {
    return this.patchFloat(at, value, 4, false);
  }
  patchF32LE(at: number, value: number): this {
    return this.patchFloat(at, value, 4, true);
  }
  patchF64BE(at: number, value: number): this {
    return this.patchFloat(at, value, 8, false);
  }
  patchF64LE(at: number, value: number): this {
    return this.patchFloat(at, value, 8, true);
  }

  protected patch16(at: number, value: number, signed: boolean, littleEndian: boolean): this {
    if (typeof value !== 'number' || (signed ? (value << 16) >> 16 !== value : (value & 0xffff) !== value)) {
      badInteger(value, signed ? -0x8000 : 0, signed ? 0x7fff : 0xffff);
    }
    this.locate(at, 2).setUint16(this.patchOffset, value & 0xffff, littleEndian);
    return this;
  }

  protected patch32(at: number, value: number, signed: boolean, littleEndian: boolean): this {
    if (typeof value !== 'number' || (signed ? (value | 0) !== value : value >>> 0 !== value)) {
      badInteger(value, signed ? -0x80000000 : 0, signed ? 0x7fffffff : 0xffffffff);
    }
    this.locate(at, 4).setUint32(this.patchOffset, value >>> 0, littleEndian);
    return this;
  }

  protected patch64(at: number, value: bigint | number, signed: boolean, littleEndian: boolean): this {
    check64(value, signed);
    write64(this.locate(at, 8), this.patchOffset, value, signed, littleEndian);
    return this;
  }

  protected patchFloat(at: number, value: number, width: 4 | 8, littleEndian: boolean): this {
    if (typeof value !== 'number') badFloat(value);
    const view = this.locate(at, width);
    if (width === 4) view.setFloat32(this.patchOffset, value, littleEndian);
    else view.setFloat64(this.patchOffset, value, littleEndian);
    return this;
  }

  /** The DataView over the scratch bytes at message position `at`, which must lie in one reserve()d region. */
  protected locate(at: number, width: number): DataView {
    validateInteger(at, 'at', 0, Number.MAX_SAFE_INTEGER);
    this.checkOpen();
    let inside = false;
    for (let i = this.reservedStarts.length - 1; i >= 0; i--) {
      if (this.reservedStarts[i] <= at && at + width <= this.reservedEnds[i]) {
        inside = true;
        break;
      }
    }
    if (!inside) {
      throw outOfRange(`the position of ${width} bytes inside a region reserve() returned`, 'at', at, `${at}`);
    }
    // A reserved region never straddles two segments: reserve() takes it in
    // one piece, and compact() / putGatherer() only join segments.
    if (at >= this.closedBytes) {
      this.patchOffset = this.segBegin + at - this.closedBytes;
      return this.view;
    }
    let position = 0;
    for (let i = 0; ; i++) {
      const length = this.ends[i] - this.starts[i];
      if (at < position + length) {
        this.patchOffset = this.starts[i] + at - position;
        return dataViewOf(this.bufs[i]);
      }
      position += length;
    }
  }
}
