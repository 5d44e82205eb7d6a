// NodeBuffer (lib/node-buffer.ts): how the pool and the frame receiver make a
// Buffer view of memory that exists. On Node it is Buffer[Symbol.species]; on
// a runtime without it (Bun) the stand-in BufferFrom, which callers construct
// with `new` — so it must stay constructible (an arrow function is not).
import { describe, expect, it } from 'vitest';
import { BufferFrom, NodeBuffer } from '../lib/node-buffer';

describe('NodeBuffer', () => {
  for (const [name, ViewClass] of [
    ['NodeBuffer', NodeBuffer],
    ['BufferFrom (the stand-in for runtimes without a species)', BufferFrom as unknown as typeof NodeBuffer],
  ] as const) {
    it(`${name}: new makes a Buffer over the given range of the ArrayBuffer, sharing its bytes`, () => {
      const arrayBuffer = new ArrayBuffer(16);
      const view = new ViewClass(arrayBuffer, 3, 5);
      expect(Buffer.isBuffer(view)).toBe(true);
      expect(view.buffer).toBe(arrayBuffer);
      expect(view.byteOffset).toBe(3);
      expect(view.length).toBe(5);
      view[0] = 0xab;
      expect(new Uint8Array(arrayBuffer)[3]).toBe(0xab);
    });
  }
});
