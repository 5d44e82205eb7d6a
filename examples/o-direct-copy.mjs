// Copies a file with O_DIRECT through one huge-page buffer. O_DIRECT bypasses
// the page cache and so needs memory aligned to the block size, which Node's
// own Buffers are not.  Run: node examples/o-direct-copy.mjs SOURCE TARGET
import fs from 'node:fs';
import { allocHuge, free, pageKind } from 'iobuf';

const [source, target] = process.argv.slice(2);
const { O_RDONLY, O_WRONLY, O_CREAT, O_TRUNC, O_DIRECT } = fs.constants;
const input = fs.openSync(source, O_RDONLY | O_DIRECT);
const output = fs.openSync(target, O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT);
const chunk = allocHuge(4 << 20, { fallback: 'normal' }); // 4 MiB, 2 MiB-aligned

let copied = 0;
for (let n; (n = fs.readSync(input, chunk, 0, chunk.length, null)) > 0; copied += n) {
  // O_DIRECT writes whole blocks: round the last one up, then trim the file.
  fs.writeSync(output, chunk, 0, Math.ceil(n / 4096) * 4096);
}
fs.ftruncateSync(output, copied);
console.log(`copied ${copied} bytes through ${pageKind(chunk)} pages`);
free(chunk);
fs.closeSync(input);
fs.closeSync(output);
