// `node scripts/smoke.mjs` or `bun scripts/smoke.mjs`: a smoke test of every
// part of iobuf on a runtime the vitest suite does not run on (Bun; an
// emulated architecture). Plain JavaScript over the built package (dist/, run
// `npm install` or `npm run build` first) and the real kernel: files, a FIFO,
// loopback TCP, a worker thread. Each check asserts bytes, codes and counts.
// Ends with the line "N passed, N failed" and exits non-zero on any failure.
//
// What is expected to differ by runtime is written down here, not discovered:
// a FrameAssembler reads through 'onread' on Node and through 'data' events on
// Bun (see docs/api.md, "Runtimes").
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { constants as bufferConstants } from 'node:buffer';
import { once } from 'node:events';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

const require = createRequire(import.meta.url);
const distDir = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist');
const isBun = process.versions.bun !== undefined;
const runtime = isBun ? `Bun ${process.versions.bun}` : `Node ${process.version}`;

// ---------------------------------------------------------------------------
// The worker half: attaches to the pool the main thread shares, takes memory
// from the same budget, proves it can write it, and gives it back.
// ---------------------------------------------------------------------------
if (!isMainThread) {
  const { BufferPool } = require(distDir);
  const pool = BufferPool.attach(workerData.handle);
  const buffers = [];
  for (let i = 0; i < 4; i++) {
    const buffer = pool.tryAcquire(64 * 1024);
    buffer.fill(0x40 + i);
    buffers.push(buffer);
  }
  const during = pool.stats();
  const ok = buffers.every((buffer, i) => buffer.every((byte) => byte === 0x40 + i));
  for (const buffer of buffers) pool.release(buffer);
  await pool.close();
  parentPort.postMessage({ ok, threads: during.threads, inUse: during.inUse });
} else {
  await main();
}

async function main() {
  // The note a runtime other than the tested Node majors gets, once, at load.
  const warnings = [];
  process.on('warning', (warning) => warnings.push(warning));
  const iobuf = require(distDir);
  const {
    BufferPool,
    FrameAssembler,
    Gatherer,
    IoVecArray,
    allocAligned,
    allocHuge,
    addressOf,
    free,
    pageKind,
    maxAllocationSize,
    pageSize,
    preadvSync,
    pwritevSync,
    readvSync,
    writevSync,
    preadv,
    pwritev,
    encodeFrame,
  } = iobuf;

  const results = { passed: 0, failed: 0, skipped: 0 };
  async function check(name, fn, timeoutMs = 30_000) {
    let timer;
    try {
      await Promise.race([
        fn(),
        new Promise((resolve, reject) => {
          timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
      results.passed++;
      console.log(`ok      ${name}`);
    } catch (error) {
      results.failed++;
      console.log(
        `FAILED  ${name}\n        ${String(error?.stack ?? error)
          .split('\n')
          .slice(0, 6)
          .join('\n        ')}`,
      );
    } finally {
      clearTimeout(timer);
    }
  }
  function skip(name, reason) {
    results.skipped++;
    console.log(`skip    ${name}: ${reason}`);
  }
  const codeOf = (fn) => {
    try {
      fn();
    } catch (error) {
      return `${error.constructor.name} ${error.code}`;
    }
    return 'no error';
  };
  const pattern = (length, seed) => {
    const bytes = Buffer.allocUnsafe(length);
    for (let i = 0; i < length; i++) bytes[i] = (i * 31 + seed) & 0xff;
    return bytes;
  };
  const nextTurn = () => new Promise((resolve) => setImmediate(resolve));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'iobuf-smoke-'));

  console.log(`iobuf smoke test on ${runtime} (${process.arch}, ${os.release()})`);

  await check('load: the untested-runtime note is emitted exactly when the runtime is not a tested Node major', async () => {
    await nextTurn();
    const notes = warnings.filter((warning) => warning.code === 'IOBUF_UNTESTED_RUNTIME');
    const testedNode =
      !isBun && process.versions.deno === undefined && [20, 22, 24, 26].includes(Number(process.versions.node.split('.')[0]));
    assert.equal(notes.length, testedNode ? 0 : 1);
    if (isBun) assert.match(notes[0].message, /Bun .* only a smoke test/);
  });

  // -------------------------------------------------------------------------
  // memory
  // -------------------------------------------------------------------------
  await check('memory: allocAligned on both paths is aligned, holds bytes, and free() detaches it', () => {
    for (const alignment of [64, pageSize, 2 * 1024 * 1024]) {
      const buffer = allocAligned(100_000, { alignment });
      assert.equal(buffer.length, 100_000);
      assert.equal(addressOf(buffer) % BigInt(alignment), 0n);
      assert.ok(
        buffer.every((byte) => byte === 0),
        'zeroed',
      );
      buffer.set(pattern(100_000, 3));
      assert.ok(buffer.equals(pattern(100_000, 3)));
      const view = buffer.subarray(10, 20);
      free(buffer);
      assert.equal(buffer.length, 0);
      assert.equal(view.length, 0);
      assert.equal(
        codeOf(() => free(buffer)),
        'IobufError ERR_IOBUF_DOUBLE_FREE',
      );
    }
  });

  await check('memory: allocHuge falls back (hugetlb → THP → normal) and reports what the kernel gave', () => {
    const size = 4 * 1024 * 1024;
    const buffer = allocHuge(size, { fallback: 'normal' });
    assert.equal(buffer.length, size);
    assert.equal(addressOf(buffer) % BigInt(pageSize), 0n);
    buffer.fill(0x77);
    assert.ok(['hugetlb', 'thp', 'normal'].includes(pageKind(buffer)));
    assert.equal(buffer[size - 1], 0x77);
    free(buffer);
    assert.equal(buffer.length, 0);
  });

  await check('memory: sizes above the largest Buffer are a RangeError ERR_OUT_OF_RANGE', () => {
    assert.equal(maxAllocationSize, bufferConstants.MAX_LENGTH);
    assert.equal(
      codeOf(() => allocAligned(maxAllocationSize + 1)),
      'RangeError ERR_OUT_OF_RANGE',
    );
    assert.equal(
      codeOf(() => allocHuge(maxAllocationSize + 1)),
      'RangeError ERR_OUT_OF_RANGE',
    );
    assert.equal(
      codeOf(() => free(Buffer.alloc(8))),
      'IobufError ERR_IOBUF_FOREIGN_BUFFER',
    );
  });

  // -------------------------------------------------------------------------
  // pool
  // -------------------------------------------------------------------------
  await check('pool: tryAcquire/release recycle the same memory; errors carry codes', async () => {
    const pool = new BufferPool({ maxMemory: 4 * 1024 * 1024 });
    const first = pool.tryAcquire(65536);
    assert.equal(first.length, 65536);
    assert.equal(addressOf(first) % BigInt(pageSize), 0n);
    const address = addressOf(first);
    pool.release(first);
    const again = pool.tryAcquire(65536);
    assert.equal(addressOf(again), address);
    assert.equal(
      codeOf(() => pool.release(Buffer.alloc(65536))),
      'IobufError ERR_IOBUF_FOREIGN_BUFFER',
    );
    pool.release(again);
    assert.equal(
      codeOf(() => pool.release(again)),
      'IobufError ERR_IOBUF_DOUBLE_RELEASE',
    );
    assert.deepEqual([pool.stats().acquires, pool.stats().releases, pool.stats().inUse], [2, 2, 0]);
    await pool.close();
    assert.equal(
      codeOf(() => pool.tryAcquire(10)),
      'IobufError ERR_IOBUF_POOL_CLOSED',
    );
  });

  await check('pool: acquire() waits while the budget is spent and a release serves it (FIFO)', async () => {
    const pool = new BufferPool({ maxMemory: 1024 * 1024, retainIdle: 0 });
    const held = [];
    for (;;) {
      const buffer = pool.tryAcquire(256 * 1024);
      if (buffer === null) break;
      held.push(buffer);
    }
    assert.ok(held.length >= 1);
    assert.equal(pool.tryAcquire(256 * 1024), null);
    let served = null;
    const first = pool.acquire(256 * 1024).then((buffer) => {
      served ??= 'first';
      return buffer;
    });
    const second = pool.acquire(256 * 1024).then((buffer) => {
      served ??= 'second';
      return buffer;
    });
    for (let i = 0; i < 5; i++) await nextTurn();
    assert.equal(served, null, 'nobody served before a release');
    assert.equal(pool.stats().waiters, 2);
    pool.release(held.pop());
    const buffer = await first;
    assert.equal(served, 'first');
    assert.equal(buffer.length, 256 * 1024);
    pool.release(held.pop() ?? buffer);
    const next = await second;
    assert.equal(next.length, 256 * 1024);
    const timedOut = await pool.acquire(256 * 1024, { timeout: 20 }).catch((error) => error);
    assert.equal(timedOut.code, 'ERR_IOBUF_BUDGET_TIMEOUT');
    for (const b of [...held, next]) pool.release(b);
    if (buffer !== next && !held.includes(buffer)) pool.release(buffer);
    assert.equal(pool.stats().inUse, 0);
    assert.equal(pool.stats().waiters, 0);
    await pool.close();
  });

  await check('pool: a worker thread attaches to the same pool (one budget, one set of stats)', async () => {
    const pool = new BufferPool({ maxMemory: 8 * 1024 * 1024 });
    const mine = pool.tryAcquire(64 * 1024);
    const worker = new Worker(new URL(import.meta.url), { workerData: { handle: pool.handle } });
    const [report] = await once(worker, 'message');
    await once(worker, 'exit');
    assert.deepEqual(report, { ok: true, threads: 2, inUse: 5 });
    pool.release(mine);
    const stats = pool.stats();
    assert.equal(stats.acquires, 5);
    assert.equal(stats.inUse, 0);
    await pool.close();
  });

  // -------------------------------------------------------------------------
  // iovec
  // -------------------------------------------------------------------------
  await check('iovec: writev/pwritev to a file and readv/preadv back, sync and promise', async () => {
    const pool = new BufferPool({ maxMemory: 4 * 1024 * 1024 });
    const file = path.join(tmp, 'iovec.bin');
    const fd = fs.openSync(file, 'w+');
    try {
      const parts = [pattern(4096, 1), pattern(100, 2), pattern(65536, 3)];
      const pooled = parts.map((part) => {
        const buffer = pool.tryAcquire(part.length);
        part.copy(buffer);
        return buffer;
      });
      const out = IoVecArray.from(pooled);
      const total = parts.reduce((sum, part) => sum + part.length, 0);
      assert.equal(writevSync(fd, out), total);
      assert.equal(await pwritev(fd, out, total), total);
      assert.ok(fs.readFileSync(file).equals(Buffer.concat([...parts, ...parts])));
      const into = [pool.tryAcquire(5000), pool.tryAcquire(total - 5000)];
      const inIov = IoVecArray.from(into);
      assert.equal(preadvSync(fd, inIov, 0), total);
      assert.ok(Buffer.concat(into).equals(Buffer.concat(parts)));
      for (const buffer of into) buffer.fill(0);
      assert.equal(await preadv(fd, inIov, total), total);
      assert.ok(Buffer.concat(into).equals(Buffer.concat(parts)));
      out.close();
      inIov.close();
      for (const buffer of [...pooled, ...into]) pool.release(buffer);
      assert.equal(pool.stats().inUse, 0);
    } finally {
      fs.closeSync(fd);
      await pool.close();
    }
  });

  await check('iovec: writev and readv through a FIFO', () => {
    const fifo = path.join(tmp, 'fifo');
    execFileSync('mkfifo', [fifo]);
    // O_RDWR on a FIFO (Linux): one descriptor is both ends, nothing blocks.
    const fd = fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    try {
      const parts = [pattern(10, 4), pattern(3000, 5), pattern(1, 6)];
      assert.equal(writevSync(fd, IoVecArray.from(parts)), 3011);
      const into = [Buffer.alloc(11), Buffer.alloc(3000)];
      assert.equal(readvSync(fd, IoVecArray.from(into)), 3011);
      assert.ok(Buffer.concat(into).equals(Buffer.concat(parts)));
      const empty = Buffer.alloc(16);
      assert.equal(
        codeOf(() => readvSync(fd, IoVecArray.from([empty]))),
        'IobufError EAGAIN',
      );
    } finally {
      fs.closeSync(fd);
    }
  });

  // -------------------------------------------------------------------------
  // gather and frames over loopback TCP
  // -------------------------------------------------------------------------
  async function loopback(onSocket, options = {}) {
    const server = net.createServer(options, onSocket);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return { server, port: server.address().port };
  }
  const connect = async (port, options = {}) => {
    const socket = net.connect({ port, host: '127.0.0.1', ...options });
    await once(socket, 'connect');
    return socket;
  };

  await check('gather: Gatherer.writeTo(socket) sends header, owned and borrowed bytes in order; pooled memory comes back', async () => {
    const pool = new BufferPool({ maxMemory: 16 * 1024 * 1024, poison: true });
    const blob = pattern(500_000, 8);
    const gatherer = new Gatherer({ pool });
    const at = gatherer.reserve(4);
    gatherer.putU16BE(200).putString('content-type: x\r\n').putBytes(blob);
    const owned = pool.tryAcquire(3000);
    owned.fill(9);
    gatherer.putOwned(owned);
    gatherer.patchU32BE(at, gatherer.byteLength - 4);
    const expected = Buffer.concat([
      Buffer.alloc(4),
      Buffer.from([0, 200]),
      Buffer.from('content-type: x\r\n'),
      blob,
      Buffer.alloc(3000, 9),
    ]);
    expected.writeUInt32BE(expected.length - 4, 0);
    const chunks = [];
    let done;
    const received = new Promise((resolve) => {
      done = resolve;
    });
    const { server, port } = await loopback((socket) => {
      socket.on('data', (chunk) => chunks.push(chunk));
      socket.on('end', () => {
        done(Buffer.concat(chunks));
        socket.end();
      });
    });
    const client = await connect(port);
    await gatherer.writeTo(client);
    assert.equal(pool.stats().inUse, 0, 'scratch and the owned buffer are back after the write');
    client.end();
    assert.ok((await received).equals(expected));
    client.destroy();
    server.close();
    await pool.close();
  });

  await check('gather: a socket destroyed mid-write rejects with ERR_IOBUF_SOCKET_CLOSED and gives everything back', async () => {
    const pool = new BufferPool({ maxMemory: 64 * 1024 * 1024 });
    const { server, port } = await loopback((socket) => socket.pause()); // reads nothing
    const client = await connect(port);
    const gatherer = new Gatherer({ pool });
    gatherer
      .putU32BE(1)
      .putBytes(pattern(32 * 1024 * 1024, 1))
      .putOwned(pool.tryAcquire(8192));
    const write = gatherer.writeTo(client);
    for (let i = 0; i < 3; i++) await nextTurn();
    client.destroy();
    const error = await write.then(
      () => null,
      (caught) => caught,
    );
    assert.ok(error !== null, 'the write rejected');
    assert.equal(error.code, 'ERR_IOBUF_SOCKET_CLOSED');
    assert.equal(pool.stats().inUse, 0);
    server.close();
    await pool.close();
  });

  const expectedMode = isBun ? 'data' : 'onread';
  const payloads = Array.from({ length: 20 }, (_, i) => pattern(i === 7 ? 300_000 : 50 + i * 1500, i));
  const encoded = Buffer.concat(
    payloads.flatMap((payload) => {
      const length = Buffer.alloc(4);
      length.writeUInt32BE(payload.length);
      return [length, payload];
    }),
  );
  async function collect(assembler) {
    const received = [];
    for await (const frame of assembler) {
      received.push(Buffer.from(frame.data));
      frame.release();
    }
    return received;
  }

  await check(`frames: FrameAssembler on an accepted TCP socket gets every frame (reads through '${expectedMode}')`, async () => {
    const pool = new BufferPool({ maxMemory: 32 * 1024 * 1024 });
    let result;
    const { server, port } = await loopback(
      (socket) => {
        const assembler = new FrameAssembler({ pool }).attach(socket);
        const closed = once(assembler, 'close'); // every buffer it owned is back by then
        result = collect(assembler).then(async (frames) => {
          await closed;
          return { frames, stats: assembler.stats() };
        });
      },
      { pauseOnConnect: true },
    );
    const client = await connect(port);
    client.end(encoded);
    while (result === undefined) await nextTurn();
    const { frames, stats } = await result;
    assert.deepEqual(
      frames.map((frame) => frame.length),
      payloads.map((payload) => payload.length),
    );
    assert.ok(Buffer.concat(frames).equals(Buffer.concat(payloads)));
    assert.equal(stats.readMode, expectedMode);
    if (expectedMode === 'onread') assert.ok(stats.reads > 0 && stats.directReads > 0);
    assert.equal(pool.stats().inUse, 0);
    server.close();
    await pool.close();
  });

  await check(
    `frames: a client socket with socketOptions() and an echo through encodeFrame + writeTo (reads through '${expectedMode}')`,
    async () => {
      const pool = new BufferPool({ maxMemory: 32 * 1024 * 1024 });
      // The server echoes every frame back with encodeFrame (payload by reference).
      const { server, port } = await loopback(
        (socket) => {
          const assembler = new FrameAssembler({ pool }).attach(socket);
          (async () => {
            for await (const frame of assembler) {
              const reply = encodeFrame(new Gatherer({ pool }), frame.data);
              await reply.writeTo(socket);
              frame.release();
            }
            socket.end();
          })().catch(() => socket.destroy());
        },
        { pauseOnConnect: true },
      );
      const assembler = new FrameAssembler({ pool });
      const client = await connect(port, assembler.socketOptions());
      assembler.attach(client);
      const closed = once(assembler, 'close');
      const echoed = collect(assembler);
      client.end(encoded);
      const frames = await echoed;
      await closed;
      assert.ok(Buffer.concat(frames).equals(Buffer.concat(payloads)));
      assert.equal(frames.length, payloads.length);
      assert.equal(assembler.stats().readMode, expectedMode);
      assert.equal(pool.stats().inUse, 0);
      server.close();
      await pool.close();
    },
  );

  fs.rmSync(tmp, { recursive: true, force: true });
  const skipped = results.skipped ? `, ${results.skipped} skipped` : '';
  console.log(`${results.passed} passed, ${results.failed} failed${skipped}`);
  process.exit(results.failed === 0 ? 0 : 1);
}
