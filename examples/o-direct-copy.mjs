// Copies a file with O_DIRECT through huge-page buffers. O_DIRECT bypasses
// the page cache and so needs memory aligned to the block size, which Node's
// own Buffers are not.
//   node examples/o-direct-copy.mjs SOURCE TARGET           one 4 MiB buffer, a read then a write
//   node examples/o-direct-copy.mjs SOURCE TARGET --uring   io_uring: 4 chunks in flight at once, read
//                                                           and written in place in registered pool memory
import fs from 'node:fs';
import { BufferPool, IoRing, allocHuge, free, pageKind } from 'iobuf';

const [source, target, mode] = process.argv.slice(2);
const { O_RDONLY, O_WRONLY, O_CREAT, O_TRUNC, O_DIRECT } = fs.constants;
const input = fs.openSync(source, O_RDONLY | O_DIRECT);
const output = fs.openSync(target, O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT);
const CHUNK = 4 << 20;
const wholeBlocks = (n) => Math.ceil(n / 4096) * 4096; // O_DIRECT writes whole blocks: round up, trim after

let copied = 0;
let pages;
if (mode === '--uring' && IoRing.supported().ok) {
  const pool = new BufferPool({ maxMemory: 64 << 20 });
  const chunks = await pool.acquireMany(4, CHUNK); // mapped first, so the ring registers them
  const ring = new IoRing({ pool }); // a read into a chunk is a READ_FIXED
  const size = fs.fstatSync(input).size;
  let next = 0;
  await Promise.all(
    chunks.map(async (chunk) => {
      // each chunk: read, write, next position
      while (next < size) {
        const position = next;
        next += CHUNK;
        const n = await ring.read(input, chunk, position);
        await ring.write(output, chunk.subarray(0, wholeBlocks(n)), position);
        copied += n;
      }
    }),
  );
  pages = `${pageKind(chunks[0])} pages, ${ring.stats().fixed} fixed-buffer operations`;
  await ring.close();
  for (const chunk of chunks) pool.release(chunk);
  await pool.close();
} else {
  if (mode === '--uring') console.log(`io_uring is not available (${IoRing.supported().reason}): copying with read/write`);
  const chunk = allocHuge(CHUNK, { fallback: 'normal' }); // 4 MiB, 2 MiB-aligned
  for (let n; (n = fs.readSync(input, chunk, 0, chunk.length, null)) > 0; copied += n) {
    fs.writeSync(output, chunk, 0, wholeBlocks(n));
  }
  pages = `${pageKind(chunk)} pages`;
  free(chunk);
}
fs.ftruncateSync(output, copied);
console.log(`copied ${copied} bytes through ${pages}`);
fs.closeSync(input);
fs.closeSync(output);
