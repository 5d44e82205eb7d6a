// The send side: frames into a Gatherer (encodeFrame, beginFrame/endFrame),
// with the length prefixes of lib/length-prefixes.ts.
import { outOfRange, validateInteger, validateOneOf, validateOptions, validateView, invalidType } from '../errors';
import type { Gatherer } from '../gather/gatherer';
import {
  FIXED_LENGTH_PREFIX_NAMES,
  type LengthPrefix,
  type LengthPrefixFormat,
  lengthPrefixFormat,
  lengthPrefixNamed,
} from '../length-prefixes';

export interface EncodeFrameOptions {
  /** Default 'u32be'. */
  lengthPrefix?: LengthPrefix;
  /** Parts of at most this many bytes are copied into the gatherer's scratch; longer ones go by reference. Default 512. */
  copyBelow?: number;
}

function checkGatherer(gatherer: Gatherer): void {
  if (gatherer === null || typeof gatherer !== 'object' || typeof (gatherer as Partial<Gatherer>).putU32BE !== 'function') {
    throw invalidType('a Gatherer', 'gatherer', gatherer);
  }
}

/** The prefix encodeFrame() puts, encoded here first (at most 5 bytes), and a view of each width. */
const prefixBytes = Buffer.alloc(5);
const prefixViews = [0, 1, 2, 3, 4, 5].map((width) => prefixBytes.subarray(0, width));

function payloadTooLarge(format: LengthPrefixFormat, length: number): RangeError {
  return outOfRange(`a payload of at most ${format.limit} bytes`, `a '${format.name}' length prefix`, length, `${length} bytes`);
}

/**
 * Appends one frame to `gatherer`: the length prefix, then the payload (one
 * view, or several parts that make one payload). Parts up to `copyBelow`
 * bytes are copied into scratch; longer ones are added by reference
 * (gatherer.putBytes): they must not change until the gatherer's write has
 * completed. A received Frame's `data` can be sent back this way, and
 * released once writeTo() has resolved.
 */
export function encodeFrame(
  gatherer: Gatherer,
  payload: ArrayBufferView | readonly ArrayBufferView[],
  options: EncodeFrameOptions = {},
): Gatherer {
  checkGatherer(gatherer);
  validateOptions(options, 'options');
  const { lengthPrefix = 'u32be', copyBelow = 512 } = options;
  const format = lengthPrefixFormat(lengthPrefix, 'options.lengthPrefix');
  validateInteger(copyBelow, 'options.copyBelow', 0, 2 ** 30);
  const parts = ArrayBuffer.isView(payload) ? [payload] : payload;
  if (!Array.isArray(parts)) validateView(payload, 'payload');
  let length = 0;
  for (let i = 0; i < parts.length; i++) {
    validateView(parts[i], `payload[${i}]`);
    length += parts[i].byteLength;
  }
  if (length > format.limit) throw payloadTooLarge(format, length);
  gatherer.putSlice(prefixViews[format.encode(prefixBytes, 0, length)]);
  for (const part of parts) {
    if (part.byteLength <= copyBelow) gatherer.putSlice(part);
    else gatherer.putBytes(part);
  }
  return gatherer;
}

/**
 * Starts a frame whose payload is put next (fixed-width prefixes only): the
 * prefix is reserved now and filled in by endFrame(gatherer, position).
 *   const at = beginFrame(g); g.putU8(op).putU32BE(id).putBytes(body); endFrame(g, at);
 */
export function beginFrame(gatherer: Gatherer, lengthPrefix: Exclude<LengthPrefix, 'varint'> = 'u32be'): number {
  checkGatherer(gatherer);
  validateOneOf(lengthPrefix, 'lengthPrefix', FIXED_LENGTH_PREFIX_NAMES);
  return gatherer.reserve(lengthPrefixNamed(lengthPrefix)!.width);
}

/** Fills in the prefix beginFrame() reserved at `position` with the bytes put since. */
export function endFrame(gatherer: Gatherer, position: number, lengthPrefix: Exclude<LengthPrefix, 'varint'> = 'u32be'): Gatherer {
  checkGatherer(gatherer);
  validateOneOf(lengthPrefix, 'lengthPrefix', FIXED_LENGTH_PREFIX_NAMES);
  const format = lengthPrefixNamed(lengthPrefix)!;
  const width = format.width;
  validateInteger(position, 'position', 0, Math.max(0, gatherer.byteLength - width));
  const length = gatherer.byteLength - position - width;
  if (length < 0 || length > format.limit) throw payloadTooLarge(format, length);
  // The table writes the prefix in its byte order; its bytes go into the reserved ones as they
  // are, read as one big-endian integer of their width (one patch: one reserved region).
  format.encode(prefixBytes, 0, length);
  if (width === 1) gatherer.patchU8(position, prefixBytes[0]);
  else if (width === 2) gatherer.patchU16BE(position, prefixBytes.readUInt16BE(0));
  else gatherer.patchU32BE(position, prefixBytes.readUInt32BE(0));
  return gatherer;
}
