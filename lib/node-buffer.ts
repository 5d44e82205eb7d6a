// NodeBuffer: the cheapest way to make a Buffer view of memory that exists
// (a pool's slab, a frame receiver's read buffer).

/**
 * Node's own Buffer class (Buffer[Symbol.species]): `new NodeBuffer(ab, offset,
 * length)` is what Buffer.from(ab, offset, length) does after its argument
 * checks, at about half the cost. Falls back to Buffer.from where a runtime
 * does not expose it.
 */
type BufferViewClass = new (arrayBuffer: ArrayBuffer, offset: number, length: number) => Buffer;

export const NodeBuffer: BufferViewClass = (() => {
  const species = (Buffer as unknown as Record<symbol, unknown>)[Symbol.species];
  if (typeof species === 'function' && species !== Buffer) {
    const Species = species as BufferViewClass;
    const probe = new Species(new ArrayBuffer(2), 1, 1);
    if (Buffer.isBuffer(probe) && probe.length === 1 && probe.byteOffset === 1) return Species;
  }
  return BufferFrom as unknown as BufferViewClass;
})();

/**
 * @internal The stand-in where there is no species (Bun): callers use `new` on it, so it
 * must stay a function declaration (an arrow function is not a constructor;
 * Biome's useArrowFunction fix made it one once, and Bun's smoke test failed).
 */
export function BufferFrom(arrayBuffer: ArrayBuffer, offset: number, length: number): Buffer {
  return Buffer.from(arrayBuffer, offset, length);
}
