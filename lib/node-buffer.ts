// NodeBuffer: the cheapest way to make a Buffer view of memory that exists
// (a pool's slab, a frame receiver's read buffer).

/**
 * Node's own Buffer class (Buffer[Symbol.species]): `new NodeBuffer(ab, offset,
 * length)` is what Buffer.from(ab, offset, length) does after its argument
 * checks, at about half the cost. Falls back to Buffer.from where a runtime
 * does not expose it.
 */
export const NodeBuffer: new (arrayBuffer: ArrayBuffer, offset: number, length: number) => Buffer = (() => {
  const species = (Buffer as unknown as Record<symbol, unknown>)[Symbol.species];
  if (typeof species === 'function' && species !== Buffer) {
    const Species = species as new (arrayBuffer: ArrayBuffer, offset: number, length: number) => Buffer;
    const probe = new Species(new ArrayBuffer(2), 1, 1);
    if (Buffer.isBuffer(probe) && probe.length === 1 && probe.byteOffset === 1) return Species;
  }
  return ((arrayBuffer: ArrayBuffer, offset: number, length: number) => Buffer.from(arrayBuffer, offset, length)) as unknown as new (
    arrayBuffer: ArrayBuffer,
    offset: number,
    length: number,
  ) => Buffer;
})();
