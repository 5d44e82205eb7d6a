// A smoke suite of every part of iobuf, small enough to run under emulation
// (qemu-user runs it against the linux-arm64 prebuild in scripts/ci-arm64.sh)
// and under other runtimes (Bun). Plain JavaScript on the built package: no
// vitest, no TypeScript.
//
//   node scripts/smoke-arm64.mjs [PACKAGE_DIR] [--expect-addon prebuilds/linux-arm64/iobuf.node]
//
// PACKAGE_DIR is an installed iobuf (node_modules/iobuf) or this repository
// (default; needs `npm run build:ts`). --expect-addon makes the first check
// fail unless that file, relative to PACKAGE_DIR, is the addon that loaded.
// Ends with the line "N passed, N failed"; exits 1 when anything failed.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

const argv = process.argv.slice(2);
const expectIndex = argv.indexOf('--expect-addon');
const expectedAddon = expectIndex >= 0 ? argv.splice(expectIndex, 2)[1] : null;
const packageDir = path.resolve(argv[0] ?? path.join(path.dirname(fileURLToPath(import.meta.url)), '..'));
const require = createRequire(path.join(packageDir, 'package.json'));
const iobuf = require(packageDir);
const {
  BufferPool,
  FrameAssembler,
  Gatherer,
  IoVecArray,
  allocAligned,
  allocHuge,
  encodeFrame,
  free,
  hugePageSize,
  isAligned,
  pageKind,
  pageSize,
  preadv,
  pwritevAllSync,
  readvSync,
  writevSync,
} = iobuf;

const KiB = 1024;
const MiB = 1024 * KiB;
const runtime = process.versions.bun ? `bun ${process.versions.bun}` : `node ${process.version}`;
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'iobuf-smoke-'));
let passed = 0;
let failed = 0;

/** A hang is a failure, not a stuck CI run: no check takes near this long, even under emulation. */
const CHECK_LIMIT_MS = 60_000;

async function check(name, body) {
  const started = Date.now();
  let timer;
  try {
    await Promise.race([
      body(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no result after ${CHECK_LIMIT_MS} ms`)), CHECK_LIMIT_MS);
      }),
    ]);
    passed++;
    console.log(`ok ${passed + failed} - ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    failed++;
    console.log(`not ok ${passed + failed} - ${name}\n  ${String(error?.stack ?? error).replace(/\n/g, '\n  ')}`);
  } finally {
    clearTimeout(timer);
  }
}

/** Bytes 0..255 repeating from `seed`: any misplaced or missing byte shows. */
function pattern(length, seed) {
  const bytes = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 31 + seed) & 0xff;
  return bytes;
}

function assertCode(fn, code) {
  assert.throws(fn, (error) => {
    assert.equal(error.code, code, `expected code ${code}, got ${error.code}: ${error.message}`);
    return true;
  });
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

console.log(`# iobuf smoke: ${runtime}, ${process.platform}-${process.arch}, package ${packageDir}`);

await check('the addon is the expected prebuild, and it is loaded', () => {
  const resolved = require('node-gyp-build').resolve(packageDir);
  console.log(`# addon: ${resolved}`);
  if (expectedAddon !== null) {
    assert.equal(path.relative(packageDir, resolved), expectedAddon);
    assert.equal(fs.existsSync(path.join(packageDir, 'build')), false, 'a build/ folder: something compiled');
  }
  const maps = fs.readFileSync('/proc/self/maps', 'utf8');
  assert.ok(maps.includes(fs.realpathSync(resolved)), `${resolved} is not mapped into this process`);
});

await check('page and huge-page sizes come from this kernel', () => {
  console.log(`# pageSize ${pageSize}, hugePageSize ${hugePageSize}, cacheLineSize ${iobuf.cacheLineSize}`);
  assert.ok(pageSize >= 4 * KiB && Number.isInteger(Math.log2(pageSize)), `pageSize ${pageSize}`);
  const kib = /^Hugepagesize:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'))?.[1];
  if (kib !== undefined) assert.equal(hugePageSize, Number(kib) * KiB);
  assert.ok(hugePageSize >= pageSize);
});

await check('allocAligned + free: alignment, zeroed, bytes kept, detached after free', () => {
  for (const [size, alignment] of [
    [1000, 256],
    [3 * pageSize + 5, pageSize],
    [MiB, 64 * KiB],
  ]) {
    const buffer = allocAligned(size, { alignment });
    assert.equal(buffer.length, size);
    assert.ok(isAligned(buffer, alignment), `${size} B at alignment ${alignment}`);
    assert.equal(
      buffer.every((byte) => byte === 0),
      true,
      'not zeroed',
    );
    const bytes = pattern(size, size);
    bytes.copy(buffer);
    assert.equal(Buffer.compare(buffer, bytes), 0);
    free(buffer);
    assert.equal(buffer.length, 0, 'still attached after free');
    assertCode(() => free(buffer), 'ERR_IOBUF_DOUBLE_FREE');
  }
  assertCode(() => free(Buffer.alloc(16)), 'ERR_IOBUF_FOREIGN_BUFFER');
});

await check('allocHuge falls back (hugetlb → THP → normal) and the memory works', () => {
  const size = 2 * hugePageSize + 123;
  const huge = allocHuge(size, { fallback: 'normal' });
  assert.equal(huge.length, size);
  assert.ok(isAligned(huge, pageSize));
  const bytes = pattern(size, 7);
  bytes.copy(huge);
  assert.equal(Buffer.compare(huge, bytes), 0);
  const kind = pageKind(huge);
  console.log(`# allocHuge(${size}) got '${kind}' pages`);
  assert.ok(['hugetlb', 'thp', 'normal'].includes(kind), kind);
  free(huge);
  const freeHugetlb = Number(/^HugePages_Free:\s+(\d+)$/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0);
  if (freeHugetlb === 0) {
    assertCode(() => allocHuge(hugePageSize, { fallback: 'none' }), 'ERR_IOBUF_HUGE_PAGES_UNAVAILABLE');
  }
});

await check('pool: acquire/release counts, FIFO wait for budget, timeout, close', async () => {
  const pool = new BufferPool({ sizeClasses: [64 * KiB], maxMemory: 256 * KiB, hugePages: false, leakDetection: 'off' });
  const held = [];
  for (let buffer; (buffer = pool.tryAcquire(64 * KiB)) !== null; ) held.push(buffer);
  assert.equal(held.length, 4);
  for (const buffer of held) assert.ok(isAligned(buffer, 4096));
  held.forEach((buffer, i) => buffer.fill(i + 1));
  assert.equal(pool.stats().inUse, 4);
  const order = [];
  const first = pool.acquire(64 * KiB).then((buffer) => {
    order.push('first');
    return buffer;
  });
  const second = pool.acquire(64 * KiB).then((buffer) => {
    order.push('second');
    return buffer;
  });
  await tick();
  assert.equal(pool.stats().waiters, 2);
  await assert.rejects(pool.acquire(64 * KiB, { timeout: 20 }), { code: 'ERR_IOBUF_BUDGET_TIMEOUT' });
  pool.release(held.pop());
  const got = await first;
  assert.deepEqual(order, ['first']);
  pool.release(held.pop());
  const next = await second;
  assert.deepEqual(order, ['first', 'second']);
  assert.equal(got.length, 64 * KiB);
  assertCode(() => pool.release(Buffer.alloc(10)), 'ERR_IOBUF_FOREIGN_BUFFER');
  for (const buffer of [...held, got, next]) pool.release(buffer);
  assertCode(() => pool.release(got), 'ERR_IOBUF_DOUBLE_RELEASE');
  const stats = pool.stats();
  assert.equal(stats.inUse, 0);
  assert.equal(stats.acquires, 6);
  assert.equal(stats.releases, 6);
  assert.equal(stats.waiters, 0);
  await pool.close();
  assertCode(() => pool.tryAcquire(64 * KiB), 'ERR_IOBUF_POOL_CLOSED');
});

await check('pool shared by two worker threads: one budget, a blocked worker served by a release', async () => {
  // retainIdle 0: a released slot goes back to the shared budget, so the
  // workers hand the one free slot back and forth through the budget.
  const pool = new BufferPool({
    sizeClasses: [64 * KiB],
    maxMemory: 256 * KiB,
    retainIdle: 0,
    hugePages: false,
    leakDetection: 'off',
  });
  const workerCode = `
    const { parentPort, workerData } = require('node:worker_threads');
    const { BufferPool } = require(workerData.packageDir);
    const pool = BufferPool.attach(workerData.handle);
    let sum = 0;
    for (let i = 0; i < workerData.rounds; i++) {
      const buffer = pool.acquireSync(64 * 1024, { timeout: 20000 });
      buffer.fill(workerData.id);
      for (let j = 0; j < buffer.length; j += 4096) sum += buffer[j];
      pool.release(buffer);
    }
    pool.close().then(() => parentPort.postMessage({ id: workerData.id, sum }));
  `;
  // The main thread holds all but one slot: the workers take turns on it
  // (acquireSync blocks while the other has it).
  const held = [pool.tryAcquire(64 * KiB), pool.tryAcquire(64 * KiB), pool.tryAcquire(64 * KiB)];
  const rounds = 50;
  const results = await Promise.all(
    [1, 2].map(
      (id) =>
        new Promise((resolve, reject) => {
          const worker = new Worker(workerCode, { eval: true, workerData: { packageDir, handle: pool.handle, rounds, id } });
          worker.once('message', resolve);
          worker.once('error', reject);
          worker.once('exit', (code) => {
            if (code !== 0) reject(new Error(`worker ${id} exited with ${code}`));
          });
        }),
    ),
  );
  for (const { id, sum } of results) assert.equal(sum, id * rounds * 16);
  const stats = pool.stats();
  assert.equal(stats.acquires, 3 + 2 * rounds);
  assert.equal(stats.inUse, 3);
  for (const buffer of held) pool.release(buffer);
  assert.equal(pool.stats().inUse, 0);
  await pool.close();
});

await check('writev/readv through a pipe (FIFO) with pooled buffers', async () => {
  const fifo = path.join(scratch, 'fifo');
  // A clean environment: a musl run's LD_* variables must not reach this (glibc) tool.
  execFileSync('mkfifo', [fifo], { env: { PATH: process.env.PATH } });
  const reader = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const writer = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  const pool = new BufferPool({ maxMemory: 4 * MiB, leakDetection: 'off' });
  try {
    const parts = [pattern(100, 1), pattern(4096, 2), pattern(20_000, 3)];
    const out = new IoVecArray(4);
    const sent = parts.map((bytes) => {
      const buffer = pool.tryAcquire(bytes.length);
      bytes.copy(buffer);
      return buffer;
    });
    for (const buffer of sent) out.push(buffer);
    assert.equal(writevSync(writer, out), 24_196);
    const into = [pool.tryAcquire(50), pool.tryAcquire(24_146)];
    const inIov = new IoVecArray(2);
    inIov.push(into[0]);
    inIov.push(into[1]);
    assert.equal(readvSync(reader, inIov), 24_196);
    assert.equal(Buffer.compare(Buffer.concat(into), Buffer.concat(parts)), 0);
    assertCode(() => readvSync(reader, inIov), 'EAGAIN');
    for (const buffer of [...sent, ...into]) pool.release(buffer);
    out.close();
    inIov.close();
    const closed = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    fs.closeSync(closed);
    const bad = new IoVecArray(1);
    bad.push(Buffer.alloc(8));
    assert.throws(
      () => writevSync(closed, bad),
      (error) => error.code === 'EBADF' && error.errno === -9 && error.syscall === 'writev',
    );
    assert.equal(pool.stats().inUse, 0);
  } finally {
    fs.closeSync(reader);
    fs.closeSync(writer);
    await pool.close();
  }
});

await check('pwritevAllSync + await preadv on a file: bytes and offsets', async () => {
  const file = path.join(scratch, 'data');
  const fd = fs.openSync(file, 'w+');
  try {
    const a = allocAligned(8192);
    const b = allocAligned(3000, { alignment: 64 });
    pattern(8192, 11).copy(a);
    pattern(3000, 12).copy(b);
    const iov = IoVecArray.from([a, b]);
    assert.equal(pwritevAllSync(fd, iov, 4096), 11_192);
    assert.equal(iov.length, 0);
    assert.equal(fs.fstatSync(fd).size, 4096 + 11_192);
    const back = allocAligned(11_192);
    const readIov = IoVecArray.from([back]);
    assert.equal(await preadv(fd, readIov, 4096), 11_192);
    assert.equal(Buffer.compare(back, Buffer.concat([a, b])), 0);
    const head = fs.readFileSync(file).subarray(0, 4096);
    assert.equal(
      head.every((byte) => byte === 0),
      true,
      'bytes before the position were written',
    );
    for (const buffer of [a, b, back]) free(buffer);
  } finally {
    fs.closeSync(fd);
  }
});

/** A TCP server on 127.0.0.1 and a connected client; `onConnection` gets the server side. */
async function tcpPair(serverOptions, onConnection) {
  const server = net.createServer(serverOptions, onConnection);
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const client = net.connect(server.address().port, '127.0.0.1');
  await new Promise((resolve, reject) => {
    client.once('connect', resolve);
    client.once('error', reject);
  });
  return { server, client };
}

await check('Gatherer.writeTo over TCP: header fields + a blob by reference arrive intact', async () => {
  const pool = new BufferPool({ maxMemory: 8 * MiB, leakDetection: 'off' });
  let received;
  const done = new Promise((resolve) => {
    received = resolve;
  });
  const { server, client } = await tcpPair({}, (socket) => {
    const chunks = [];
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('end', () => {
      received(Buffer.concat(chunks));
      socket.end();
    });
  });
  try {
    const blob = pattern(300_000, 5);
    const expected = [];
    for (let message = 0; message < 3; message++) {
      const g = new Gatherer({ pool });
      const at = g.reserve(4);
      g.putU16BE(0xbeef).putU32LE(message).putString('héllo').putBytes(blob);
      g.patchU32BE(at, g.byteLength - 4);
      assert.equal(g.segmentCount, 2);
      const header = Buffer.alloc(4 + 2 + 4 + 6);
      header.writeUInt32BE(2 + 4 + 6 + blob.length, 0);
      header.writeUInt16BE(0xbeef, 4);
      header.writeUInt32LE(message, 6);
      header.write('héllo', 10);
      expected.push(header, blob);
      await g.writeTo(client);
      assert.equal(pool.stats().inUse, 0, 'scratch not back after the write');
      g.reset();
    }
    client.end();
    const bytes = await done;
    assert.equal(bytes.length, 3 * (16 + 300_000));
    assert.equal(Buffer.compare(bytes, Buffer.concat(expected)), 0);
  } finally {
    client.destroy();
    server.close();
    await pool.close();
  }
});

await check("FrameAssembler over TCP: every frame's bytes and count, memory back in the pool", async () => {
  const pool = new BufferPool({ maxMemory: 16 * MiB, leakDetection: 'off' });
  const sizes = [0, 1, 100, 4096, 65_535, 65_536, 300_000, 17, 1_000_000, 3];
  let assembler;
  let finished;
  const result = new Promise((resolve, reject) => {
    finished = { resolve, reject };
  });
  const { server, client } = await tcpPair({ pauseOnConnect: true }, (socket) => {
    assembler = new FrameAssembler({ pool, maxFrameSize: 2 * MiB }).attach(socket);
    (async () => {
      const frames = [];
      for await (const frame of assembler) {
        frames.push({ length: frame.length, ok: Buffer.compare(frame.data, pattern(frame.length, frame.length)) === 0 });
        frame.release();
      }
      return frames;
    })().then(finished.resolve, finished.reject);
  });
  try {
    const sender = new BufferPool({ maxMemory: 8 * MiB, leakDetection: 'off' });
    for (const size of sizes) {
      const g = new Gatherer({ pool: sender });
      encodeFrame(g, pattern(size, size));
      await g.writeTo(client);
    }
    client.end();
    const frames = await result;
    assert.deepEqual(
      frames.map((frame) => frame.length),
      sizes,
    );
    assert.deepEqual(
      frames.filter((frame) => !frame.ok),
      [],
    );
    const stats = assembler.stats();
    assert.equal(stats.frames, sizes.length);
    assert.equal(
      stats.bytes,
      sizes.reduce((sum, size) => sum + 4 + size, 0),
    );
    if (!process.versions.bun) assert.equal(stats.readMode, 'onread');
    await new Promise((resolve) => (assembler.closed ? resolve() : assembler.once('close', resolve)));
    assert.equal(pool.stats().inUse, 0);
    assert.equal(sender.stats().inUse, 0);
    await sender.close();
  } finally {
    client.destroy();
    server.close();
    await pool.close();
  }
});

fs.rmSync(scratch, { recursive: true, force: true });
console.log(`${passed} passed, ${failed} failed`);
// A check that hung may have left sockets or workers open: leave anyway.
process.exit(failed === 0 ? 0 : 1);
