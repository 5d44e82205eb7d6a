// The addon's copyBytes (the payload copy of lib/frames/parser.ts) against
// Buffer#copy, whose semantics it promises: a differential test over sizes
// and offsets at and around every boundary, overlapping ranges, and views
// that are detached or offset into a larger ArrayBuffer.
import { describe, expect, it } from 'vitest';
import { native } from '../lib/binding';
import { allocAligned, free } from '../lib/index';

function pattern(length: number, seed: number): Buffer {
  const buffer = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) buffer[i] = (i * 31 + seed) & 0xff;
  return buffer;
}

describe('copyBytes (native) behaves as Buffer#copy', () => {
  it('over every combination of boundary offsets: same bytes, same count', () => {
    const lengths = [0, 1, 7, 64, 65];
    let cases = 0;
    for (const sourceLength of lengths) {
      for (const targetLength of lengths) {
        const points = (n: number) => [...new Set([0, 1, n - 1, n, n + 1, n + 5].filter((v) => v >= 0))];
        for (const targetStart of points(targetLength)) {
          for (const sourceStart of points(sourceLength)) {
            for (const sourceEnd of points(sourceLength)) {
              // Offsets into a larger ArrayBuffer, so a copy that ignored byteOffset would show.
              const source = pattern(sourceLength + 9, sourceLength).subarray(3, 3 + sourceLength);
              const expected = pattern(targetLength + 9, 200).subarray(5, 5 + targetLength);
              const actual = Buffer.from(expected);
              let copiedByNode: number;
              try {
                copiedByNode = source.copy(expected, targetStart, sourceStart, sourceEnd);
              } catch {
                continue; // Buffer#copy refuses a sourceStart past the end; lib/frames/parser.ts never passes one
              }
              const copied = native.copyBytes(source, actual, targetStart, sourceStart, sourceEnd);
              expect(
                { copied, bytes: actual.toString('hex') },
                JSON.stringify({ sourceLength, targetLength, targetStart, sourceStart, sourceEnd }),
              ).toEqual({ copied: copiedByNode, bytes: expected.toString('hex') });
              cases++;
            }
          }
        }
      }
    }
    expect(cases).toBeGreaterThan(800);
  });

  it('overlapping ranges of one buffer move like memmove', () => {
    const expected = pattern(100, 3);
    const actual = Buffer.from(expected);
    expect(native.copyBytes(actual, actual, 10, 0, 50)).toBe(expected.copy(expected, 10, 0, 50));
    expect(actual.equals(expected)).toBe(true);
    expect(native.copyBytes(actual, actual, 0, 10, 60)).toBe(expected.copy(expected, 0, 10, 60));
    expect(actual.equals(expected)).toBe(true);
  });

  it('a freed (detached) source or target copies nothing', () => {
    const gone = allocAligned(4096);
    free(gone);
    const target = pattern(64, 1);
    expect(native.copyBytes(gone, target, 0, 0, 64)).toBe(0);
    expect(target.equals(pattern(64, 1))).toBe(true);
    expect(native.copyBytes(pattern(64, 2), gone, 0, 0, 64)).toBe(0);
  });
});
