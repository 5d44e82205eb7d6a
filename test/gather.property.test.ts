// Property tests: random sequences of puts, blobs by reference, owned pooled
// buffers, merges, reserves/patches and compacts produce exactly the bytes of
// a reference built with Buffer writes + Buffer.concat, at every chunk size,
// and leave every pooled buffer back in the pool.
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { BufferPool } from '../lib/pool';
import { Gatherer } from '../lib/gather';
import { WIDTHS, type Width, bytesOf, patch, put, referenceBytes } from './fixtures/gather-helpers';

const pool = new BufferPool({ maxMemory: 64 << 20, leakDetection: 'off' });
afterAll(() => pool.close({ force: true }));

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------

type Op =
  | { op: 'put'; width: Width; value: number | bigint }
  | { op: 'slice'; bytes: Uint8Array }
  | { op: 'string'; text: string; encoding: BufferEncoding }
  | { op: 'bytes'; bytes: Uint8Array }
  | { op: 'owned'; bytes: Uint8Array }
  | { op: 'reserve'; length: number }
  | { op: 'patch'; pick: number; offset: number; width: Width; value: number | bigint }
  | { op: 'compact'; threshold: number }
  | { op: 'segments' }
  | { op: 'merge'; ops: Op[] };

function arbitraryFor(width: Width): fc.Arbitrary<number | bigint> {
  if (width.kind === 'int') return fc.integer({ min: width.min as number, max: width.max as number });
  if (width.kind === 'float') return width.bytes === 4 ? fc.float({ noNaN: true }) : fc.double({ noNaN: true });
  const big = fc.bigInt({ min: width.min as bigint, max: width.max as bigint });
  // Numbers are accepted too when they are safe integers (written without BigInt).
  const small = (width.min as bigint) < 0n ? fc.maxSafeInteger() : fc.maxSafeNat();
  return fc.oneof(big, small);
}

const widthValue = fc.constantFrom(...WIDTHS).chain((width) => arbitraryFor(width).map((value) => ({ width, value })));

const leafOp: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: widthValue.map(({ width, value }) => ({ op: 'put' as const, width, value })) },
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 300 }).map((bytes) => ({ op: 'slice' as const, bytes })) },
  {
    weight: 2,
    arbitrary: fc
      .record({
        text: fc.string({ unit: fc.constantFrom('a', 'é', '€', '😀', 'Z', '0') as fc.Arbitrary<string>, maxLength: 40 }),
        encoding: fc.constantFrom<BufferEncoding>('utf8', 'latin1', 'utf16le', 'ascii', 'base64', 'hex'),
      })
      .map(({ text, encoding }) => ({ op: 'string' as const, text, encoding })),
  },
  { weight: 2, arbitrary: fc.uint8Array({ minLength: 0, maxLength: 2000 }).map((bytes) => ({ op: 'bytes' as const, bytes })) },
  { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 700 }).map((bytes) => ({ op: 'owned' as const, bytes })) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 16 }).map((length) => ({ op: 'reserve' as const, length })) },
  {
    weight: 3,
    arbitrary: fc
      .record({ pick: fc.nat(), offset: fc.nat(), wv: widthValue })
      .map(({ pick, offset, wv }) => ({ op: 'patch' as const, pick, offset, width: wv.width, value: wv.value })),
  },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 3000 }).map((threshold) => ({ op: 'compact' as const, threshold })) },
  { weight: 1, arbitrary: fc.constant({ op: 'segments' as const }) },
);

const opSequence: fc.Arbitrary<Op[]> = fc.array(
  fc.oneof(
    { weight: 12, arbitrary: leafOp },
    { weight: 1, arbitrary: fc.array(leafOp, { maxLength: 20 }).map((ops) => ({ op: 'merge' as const, ops })) },
  ),
  { maxLength: 60 },
);

// ---------------------------------------------------------------------------
// The reference: Buffer writes, Buffer.concat, patches applied to the result
// ---------------------------------------------------------------------------

class Reference {
  parts: Buffer[] = [];
  length = 0;
  reservations: Array<[number, number]> = [];
  patches: Array<[number, Buffer]> = [];

  append(bytes: Uint8Array): void {
    this.parts.push(Buffer.from(bytes));
    this.length += bytes.length;
  }

  bytes(): Buffer {
    const all = Buffer.concat(this.parts);
    for (const [at, bytes] of this.patches) bytes.copy(all, at);
    return all;
  }
}

const bufferIds = new WeakMap<ArrayBufferLike, number>();
let nextId = 0;
/** Which memory a segment is: its ArrayBuffer, offset and length. */
function where(segment: Buffer): string {
  let id = bufferIds.get(segment.buffer);
  if (id === undefined) bufferIds.set(segment.buffer, (id = nextId++));
  return `${id}:${segment.byteOffset}:${segment.length}`;
}

/** Applies `ops` to both (a patch with no reserved region to land in is skipped). */
function run(gatherer: Gatherer, reference: Reference, ops: Op[]): void {
  for (const step of ops) {
    switch (step.op) {
      case 'put':
        put(gatherer, step.width, step.value);
        reference.append(referenceBytes(step.width, step.value));
        break;
      case 'slice':
        gatherer.putSlice(step.bytes);
        reference.append(step.bytes);
        break;
      case 'string':
        gatherer.putString(step.text, step.encoding);
        reference.append(Buffer.from(step.text, step.encoding));
        break;
      case 'bytes':
        gatherer.putBytes(step.bytes);
        reference.append(step.bytes);
        break;
      case 'owned': {
        const buffer = pool.tryAcquire(step.bytes.length)!;
        buffer.set(step.bytes);
        gatherer.putOwned(buffer);
        reference.append(step.bytes);
        break;
      }
      case 'reserve': {
        const at = gatherer.reserve(step.length);
        expect(at).toBe(reference.length);
        if (step.length > 0) reference.reservations.push([at, at + step.length]);
        reference.append(Buffer.alloc(step.length));
        break;
      }
      case 'patch': {
        const fitting = reference.reservations.filter(([start, end]) => end - start >= step.width.bytes);
        if (fitting.length === 0) break;
        const [start, end] = fitting[step.pick % fitting.length];
        const at = start + (step.offset % (end - start - step.width.bytes + 1));
        patch(gatherer, step.width, at, step.value);
        reference.patches.push([at, referenceBytes(step.width, step.value)]);
        break;
      }
      case 'compact': {
        const before = gatherer.segments();
        gatherer.compact(step.threshold);
        const after = gatherer.segments();
        // Segments of threshold bytes or more are untouched: the same memory, in the same order.
        const large = (segments: Buffer[]) => segments.filter((s) => s.length >= step.threshold).map(where);
        expect(large(after).filter((key) => large(before).includes(key))).toEqual(large(before));
        expect(after.length).toBeLessThanOrEqual(before.length);
        break;
      }
      case 'segments': {
        // (Reading the segments closes the open one: only here, so puts and patches also meet an open segment.)
        const count = gatherer.segmentCount;
        expect(gatherer.segments().length).toBe(count);
        expect(bytesOf(gatherer).equals(reference.bytes())).toBe(true);
        break;
      }
      case 'merge': {
        const other = new Gatherer({ pool, chunkSize: gatherer.chunkSize });
        const sub = new Reference();
        run(other, sub, step.ops);
        const base = reference.length;
        gatherer.putGatherer(other);
        expect(other.byteLength).toBe(0);
        const subBytes = sub.bytes();
        reference.append(subBytes);
        for (const [start, end] of sub.reservations) reference.reservations.push([base + start, base + end]);
        break;
      }
    }
    expect(gatherer.byteLength).toBe(reference.length);
  }
}

describe('Gatherer bytes equal the Buffer.concat reference', () => {
  it('for random sequences of puts, blobs, owned buffers, merges, reserves/patches and compacts', () => {
    fc.assert(
      fc.property(fc.constantFrom(64, 100, 4096), opSequence, (chunkSize, ops) => {
        const before = pool.stats().inUse; // relative, so a failing run cannot mislead the shrinker
        const gatherer = new Gatherer({ pool, chunkSize });
        try {
          const reference = new Reference();
          run(gatherer, reference, ops);
          const expected = reference.bytes();
          expect(bytesOf(gatherer).equals(expected)).toBe(true);
          // A compact that merges everything small still gives the same bytes.
          gatherer.compact(1 << 20);
          expect(gatherer.segments().length).toBeLessThanOrEqual(1);
          expect(bytesOf(gatherer).equals(expected)).toBe(true);
        } finally {
          gatherer.reset();
        }
        expect(pool.stats().inUse).toBe(before);
      }),
      { numRuns: 300 },
    );
  });

  it('compact(threshold) leaves no two adjacent segments both shorter than threshold', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ minLength: 1, maxLength: 200 }), { maxLength: 30 }),
        fc.integer({ min: 1, max: 250 }),
        (blobs, threshold) => {
          const before = pool.stats().inUse;
          const gatherer = new Gatherer({ pool });
          try {
            for (const blob of blobs) gatherer.putBytes(blob);
            gatherer.compact(threshold);
            const lengths = gatherer.segments().map((s) => s.length);
            for (let i = 1; i < lengths.length; i++) {
              expect(lengths[i - 1] < threshold && lengths[i] < threshold).toBe(false);
            }
            expect(bytesOf(gatherer).equals(Buffer.concat(blobs))).toBe(true);
          } finally {
            gatherer.reset();
          }
          expect(pool.stats().inUse).toBe(before);
        },
      ),
      { numRuns: 200 },
    );
  });
});
