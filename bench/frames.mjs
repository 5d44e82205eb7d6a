// Benchmarks of the frames part (issue 6): the receive path, and the example
// RPC server built on it, each against the same thing in plain Node.
//
//   receive: receiver CPU per GiB of length-prefixed frames sent by another
//            process over loopback (test/fixtures/frames-sender.js), for
//            FrameAssembler, the plain 'data' + Buffer.concat receiver, and
//            onread into one reused buffer parsing headers only (the floor:
//            no frame is handed to anyone). Frames of one size, and a
//            protocol-like mix of small varying frames (5-200 B payloads),
//            and 41-byte frames (the mix's mean size, one size);
//            for the mix also the assembler with a custom decoder (the
//            same u32be header, read by a function returning a tag) and with
//            the pool's leak detection off (the pool's own per-size cost
//            apart from the assembler's).
//   push:    the same mix (and 41-byte frames, its mean size) given to push()
//            in process: CPU per frame without the socket, so the assembler's
//            per-frame work and the decoder call show apart from syscalls.
//   copy:    the payload copy of the receive path (lib/frames/parser.ts
//            copyPayload: a JS loop up to 32 bytes, above it Buffer#copy
//            from Node 22 on, else the addon's copyBytes) from a read
//            buffer into a pooled frame, beside
//            Buffer#copy and Uint8Array#set, with C memcpy of the same sizes
//            as the floor (bench/floor.c).
//   rpc:     examples/rpc-server.ts vs examples/rpc-server-plain.ts under the
//            load generator in bench/frames/load.mjs (4 connections,
//            pipelined): requests per second, p50/p99 latency.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { DIST, ROOT, ensureFloorBinary, formatBytes, formatNs, gcCounter, iobuf, median, runFloor, timeOps } from './harness.mjs';
import { compileServers, runLoad, startServerProcess, stopServerProcess } from './frames/load.mjs';

const { mixBatch } = createRequire(import.meta.url)('../test/fixtures/frames-mix.js');

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const SENDER = path.join(ROOT, 'test', 'fixtures', 'frames-sender.js');

let sink = 0;

// ---------------------------------------------------------------------------
// Receivers: each takes the accepted socket and calls done() when it closed
// ---------------------------------------------------------------------------

/** Plain Node: 'data' events, Buffer.concat when a frame spans reads, a view per frame. */
function plainReceiver(socket, done) {
  let pending = null;
  let frames = 0;
  socket.on('data', (chunk) => {
    const data = pending === null ? chunk : Buffer.concat([pending, chunk]);
    pending = null;
    let at = 0;
    while (data.length - at >= 4) {
      const length = data.readUInt32BE(at);
      if (data.length - at - 4 < length) break;
      const frame = data.subarray(at + 4, at + 4 + length);
      sink ^= frame[0];
      frames++;
      at += 4 + length;
    }
    if (at < data.length) pending = data.subarray(at);
  });
  socket.on('close', () => done(frames));
  socket.resume();
}

/** FrameAssembler: onread into pooled memory, one pooled Buffer per frame, released at once. */
function assemblerReceiver(socket, done, { poolOptions = {}, lengthPrefix } = {}) {
  const { BufferPool, FrameAssembler } = iobuf();
  const pool = new BufferPool({ maxMemory: 64 * MiB, ...poolOptions });
  const assembler = new FrameAssembler({
    pool,
    lengthPrefix,
    onFrame(frame) {
      sink ^= frame.data[0] ^ frame.tag;
      frame.release();
    },
  }).attach(socket);
  assembler.on('close', () => done(assembler.stats().frames));
}

/**
 * A custom decoder for the same u32be header, as a protocol would write one:
 * one result object reused for every call, the tag set from the header.
 */
function u32beDecoder() {
  const header = { headerLength: 4, payloadLength: 0, tag: 0 };
  return (bytes, start, end) => {
    if (end - start < 4) return null;
    header.payloadLength = bytes.readUInt32BE(start);
    header.tag = bytes[start + 3];
    return header;
  };
}

const RECEIVERS = {
  plain: plainReceiver,
  assembler: assemblerReceiver,
  decoder: (socket, done) => assemblerReceiver(socket, done, { lengthPrefix: u32beDecoder() }),
  leaksOff: (socket, done) => assemblerReceiver(socket, done, { poolOptions: { leakDetection: 'off' } }),
  floor: takeOverFloor,
};

/**
 * One transfer of `total` bytes of `frameSize`-byte frames from a sender
 * process to an accepted socket; returns the receiver's CPU time (user +
 * system, this process only) per GiB, GC scavenges per GiB and throughput.
 */
async function receiveTrial(kind, frameSize, ctx) {
  // Small frames cost far more per byte: a smaller transfer for them.
  const small = frameSize === 'mix' || frameSize < 256;
  const total = small ? (ctx.full ? 512 * MiB : 128 * MiB) : ctx.full ? GiB : 512 * MiB;
  if (kind !== 'plain' && kind !== 'floor') iobuf(); // load the addon and dist/ before anything is counted
  const gc = gcCounter();
  let started = null;
  let finished;
  const result = new Promise((resolve) => {
    finished = resolve;
  });
  const server = net.createServer({ pauseOnConnect: true }, (socket) => {
    started = { cpu: process.cpuUsage(), wall: performance.now() };
    gc.start();
    const done = (frames) => {
      const cpu = process.cpuUsage(started.cpu);
      gc.stop();
      finished({ cpuMs: (cpu.user + cpu.system) / 1000, seconds: (performance.now() - started.wall) / 1000, frames });
    };
    RECEIVERS[kind](socket, done);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const child = spawn(process.execPath, [SENDER, String(server.address().port), String(frameSize), String(total)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let report = '';
  child.stdout.on('data', (chunk) => {
    report += chunk;
  });
  const { cpuMs, seconds, frames } = await result;
  await new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', resolve)));
  server.close();
  // A mix reports what it sent ("FRAMES BYTES"); one size sends ceil(total / size) frames.
  const [expected, wireBytes] =
    frameSize === 'mix' ? report.trim().split(' ').map(Number) : [Math.ceil(total / frameSize), total + 4 * Math.ceil(total / frameSize)];
  if (frames !== expected) return { error: `received ${frames} frames, expected ${expected}` };
  const { scavenges } = await gc.counts();
  const gib = wireBytes / GiB;
  return {
    value: cpuMs / gib,
    extras: { scavenges: scavenges / gib, throughput: total / MiB / seconds },
  };
}

/**
 * The floor on an accepted socket: Node 20's net.createServer has no onread
 * option, so this sets the fields the option sets, as FrameAssembler.attach()
 * does (lib/frames.ts takeOverReading), with one reused 64 KiB buffer.
 */
function takeOverFloor(socket, done) {
  const symbols = Object.getOwnPropertySymbols(socket);
  const field = (name) => symbols.find((symbol) => symbol.description === name);
  const buffer = Buffer.allocUnsafe(64 * KiB);
  const header = Buffer.alloc(4);
  let headerFill = 0;
  let skip = 0;
  let frames = 0;
  socket[field('kBuffer')] = buffer;
  socket[field('kBufferCb')] = (nread, data) => {
    let at = 0;
    while (at < nread) {
      if (skip > 0) {
        const take = Math.min(skip, nread - at);
        sink ^= data[at];
        skip -= take;
        at += take;
        if (skip === 0) frames++;
        continue;
      }
      if (headerFill === 0 && nread - at >= 4) {
        skip = data.readUInt32BE(at);
        at += 4;
        if (skip === 0) frames++;
        continue;
      }
      header[headerFill++] = data[at++];
      if (headerFill === 4) {
        headerFill = 0;
        skip = header.readUInt32BE(0);
        if (skip === 0) frames++;
      }
    }
  };
  socket._handle.useUserBuffer(buffer);
  socket.on('close', () => done(frames));
  socket.resume();
}

const receiveTable = {
  id: 'receive',
  title: 'receiver CPU per GiB of frames from another process (loopback)',
  unit: 'CPU ms per GiB',
  better: 'lower',
  format: (ms) => (Number.isFinite(ms) ? `${ms.toFixed(0)} ms` : '–'),
  // 41 B: the mix's mean payload, in one size (the pool's per-size cost left out).
  params: { quick: ['mix', 41, KiB, 64 * KiB], full: ['mix', 41, 64, KiB, 64 * KiB, MiB] },
  paramLabel: (size) => (size === 'mix' ? 'mix of 5-200 B frames' : `${formatBytes(size)} frames`),
  processes: { quick: 2, full: 5 },
  baseline: 'plain data + Buffer.concat',
  extras: [
    { key: 'scavenges', label: 'GC scavenges per GiB', format: (v) => v.toFixed(1) },
    { key: 'throughput', label: 'throughput (MiB/s, wall)', format: (v) => v.toFixed(0) },
  ],
  competitors: [
    { name: 'plain data + Buffer.concat', run: (size, ctx) => receiveTrial('plain', size, ctx) },
    { name: 'FrameAssembler', run: (size, ctx) => receiveTrial('assembler', size, ctx) },
    {
      name: 'FrameAssembler, custom decoder',
      run: (size, ctx) => (size === 'mix' ? receiveTrial('decoder', size, ctx) : { skip: 'the mix only' }),
    },
    {
      name: 'FrameAssembler, pool leakDetection off',
      run: (size, ctx) => (size === 'mix' ? receiveTrial('leaksOff', size, ctx) : { skip: 'the mix only' }),
    },
    { name: 'onread, one buffer (floor)', run: (size, ctx) => receiveTrial('floor', size, ctx) },
  ],
  targets: [
    {
      name: 'FrameAssembler CPU per GiB ≤ 0.8× plain, mix of 5-200 B frames',
      check: (get) => {
        const cell = get('FrameAssembler', 'mix');
        if (!cell || !Number.isFinite(cell.ratio)) return { pass: null, detail: 'no result' };
        return { pass: cell.ratio <= 0.8, detail: `${cell.ratio.toFixed(2)}×` };
      },
    },
    ...[KiB, 64 * KiB].flatMap((size) => [
      {
        name: `FrameAssembler CPU per GiB ≤ 0.75× plain, ${formatBytes(size)} frames`,
        check: (get) => {
          const cell = get('FrameAssembler', size);
          if (!cell || !Number.isFinite(cell.ratio)) return { pass: null, detail: 'no result' };
          return { pass: cell.ratio <= 0.75, detail: `${cell.ratio.toFixed(2)}×` };
        },
      },
      {
        name: `FrameAssembler GC scavenges ≤ 0.1× plain, ${formatBytes(size)} frames`,
        check: (get) => {
          const ours = get('FrameAssembler', size)?.extras.scavenges;
          const theirs = get('plain data + Buffer.concat', size)?.extras.scavenges;
          if (!Number.isFinite(ours) || !Number.isFinite(theirs)) return { pass: null, detail: 'no result' };
          return {
            pass: ours <= 0.1 * theirs,
            detail: `${ours.toFixed(1)} vs ${theirs.toFixed(1)} per GiB (${theirs > 0 ? (ours / theirs).toFixed(3) : '–'}×)`,
          };
        },
      },
    ]),
  ],
};

// ---------------------------------------------------------------------------
// push(): per-frame CPU in process
// ---------------------------------------------------------------------------

/** 64 KiB chunks of one batch of frames: the mix, or every payload `size` bytes (the mix's count of frames). */
function pushChunks(param) {
  let { batch, frames } = mixBatch();
  if (param !== 'mix') {
    const frame = Buffer.alloc(4 + param, 7);
    frame.writeUInt32BE(param, 0);
    batch = Buffer.concat(Array.from({ length: frames }, () => frame));
  }
  const chunks = [];
  for (let at = 0; at < batch.length; at += 64 * KiB) chunks.push(batch.subarray(at, at + 64 * KiB));
  return { chunks, frames };
}

/** The plain receiver's parse (as in plainReceiver) on chunks. */
function plainFeed() {
  let pending = null;
  return (chunk) => {
    const data = pending === null ? chunk : Buffer.concat([pending, chunk]);
    pending = null;
    let at = 0;
    while (data.length - at >= 4) {
      const length = data.readUInt32BE(at);
      if (data.length - at - 4 < length) break;
      sink ^= data.subarray(at + 4, at + 4 + length)[0];
      at += 4 + length;
    }
    if (at < data.length) pending = data.subarray(at);
  };
}

function assemblerFeed({ poolOptions = {}, lengthPrefix } = {}) {
  const { BufferPool, FrameAssembler } = iobuf();
  const pool = new BufferPool({ maxMemory: 64 * MiB, ...poolOptions });
  const assembler = new FrameAssembler({
    pool,
    lengthPrefix,
    onFrame(frame) {
      sink ^= frame.data[0] ^ frame.tag;
      frame.release();
    },
  });
  return (chunk) => assembler.push(chunk);
}

/** The u32be decoder in its older form: declared with one parameter, given a view per call. */
function u32beViewDecoder() {
  const header = { headerLength: 4, payloadLength: 0, tag: 0 };
  return (bytes) => {
    if (bytes.length < 4) return null;
    header.payloadLength = bytes.readUInt32BE(0);
    header.tag = bytes[3];
    return header;
  };
}

const FEEDS = {
  plain: plainFeed,
  assembler: () => assemblerFeed(),
  leaksOff: () => assemblerFeed({ poolOptions: { leakDetection: 'off' } }),
  decoder: () => assemblerFeed({ poolOptions: { leakDetection: 'off' }, lengthPrefix: u32beDecoder() }),
  viewDecoder: () => assemblerFeed({ poolOptions: { leakDetection: 'off' }, lengthPrefix: u32beViewDecoder() }),
};

/** CPU per frame over rounds of the batch (median of 7 rounds), and scavenges per million frames. */
async function pushTrial(kind, param, ctx) {
  const { chunks, frames } = pushChunks(param);
  const feed = FEEDS[kind]();
  const rounds = ctx.full ? 60 : 20;
  for (let r = 0; r < rounds; r++) for (const chunk of chunks) feed(chunk); // warm up
  const gc = gcCounter();
  gc.start();
  const samples = [];
  for (let sample = 0; sample < 7; sample++) {
    const start = process.cpuUsage();
    for (let r = 0; r < rounds; r++) for (const chunk of chunks) feed(chunk);
    const cpu = process.cpuUsage(start);
    samples.push(((cpu.user + cpu.system) * 1000) / (rounds * frames));
  }
  gc.stop();
  const { scavenges } = await gc.counts();
  return { value: median(samples), extras: { scavenges: scavenges / ((7 * rounds * frames) / 1e6) } };
}

const mixOnly = (kind) => (param, ctx) => (param === 'mix' ? pushTrial(kind, param, ctx) : { skip: 'the mix only' });

const pushTable = {
  id: 'push',
  title: 'push() in process: CPU per frame, no socket',
  unit: 'CPU per frame',
  better: 'lower',
  format: formatNs,
  params: { quick: ['mix', 41], full: ['mix', 41] },
  paramLabel: (param) => (param === 'mix' ? 'mix of 5-200 B frames' : `${param} B frames (the mix's mean)`),
  processes: { quick: 2, full: 3 },
  baseline: 'plain parse, a view per frame',
  extras: [{ key: 'scavenges', label: 'GC scavenges per million frames', format: (v) => v.toFixed(1) }],
  competitors: [
    { name: 'plain parse, a view per frame', run: (param, ctx) => pushTrial('plain', param, ctx) },
    { name: 'FrameAssembler', run: (param, ctx) => pushTrial('assembler', param, ctx) },
    { name: 'FrameAssembler, pool leakDetection off', run: (param, ctx) => pushTrial('leaksOff', param, ctx) },
    { name: 'custom decoder (bytes, start, end), leakDetection off', run: mixOnly('decoder') },
    { name: 'custom decoder (bytes), a view per call, leakDetection off', run: mixOnly('viewDecoder') },
  ],
};

// ---------------------------------------------------------------------------
// The payload copy: memcpy-bound, with the C floor
// ---------------------------------------------------------------------------

/** lib/frames/parser.ts copyPayload, the receive path's own (exported for this bench). */
const framesCopy = () => createRequire(import.meta.url)(path.join(DIST, 'frames', 'parser.js')).copyPayload;

const COPIES = {
  framesCopy: () => {
    const copy = framesCopy();
    return (src, target, size) => copy(src, 4, target, 0, size);
  },
  bufferCopy: () => (src, target, size) => src.copy(target, 0, 4, 4 + size),
  set: () => (src, target, size) => target.set(src.subarray(4, 4 + size)),
};

/**
 * `size` payload bytes from offset 4 of a 64 KiB read buffer (after a 4-byte
 * length, as frames arrive) into a pooled Buffer of exactly `size` (a frame);
 * the same layout as bench/floor.c memcpy.
 */
const copyTrial = (kind) => async (size, ctx) => {
  const { BufferPool } = iobuf();
  const pool = new BufferPool({ maxMemory: 64 * MiB, leakDetection: 'off' });
  const src = Buffer.allocUnsafeSlow(Math.max(64 * KiB, size + 4)).fill(7);
  const target = pool.tryAcquire(size);
  const copy = COPIES[kind]();
  const result = await timeOps(() => {
    copy(src, target, size);
    return target;
  }, copyTiming(ctx));
  if (target[size - 1] !== 7) return { error: 'the copy did not copy' };
  return result;
};

const copyTiming = (ctx) => (ctx.full ? { samples: 11, sampleMs: 20, warmupMs: 100 } : { samples: 7, sampleMs: 10, warmupMs: 40 });
const C_MEMCPY = 'C memcpy (floor)';
const FRAMES_COPY = 'FrameAssembler payload copy';
const BUFFER_COPY = 'Buffer#copy';

const copyTable = {
  id: 'copy',
  title: 'payload copy from the read buffer into a pooled frame',
  unit: 'time per copy',
  better: 'lower',
  params: { quick: [16, 41, KiB, 64 * KiB], full: [16, 41, 200, KiB, 64 * KiB, MiB] },
  paramLabel: formatBytes,
  processes: { quick: 3, full: 5 },
  nodeArgs: ['--expose-gc'],
  baseline: BUFFER_COPY,
  floor: C_MEMCPY,
  extras: [
    { key: 'cpuNs', label: 'CPU time per copy', format: formatNs },
    { key: 'scavenges', label: 'GC scavenges per 1000 copies' },
  ],
  competitors: [
    {
      name: C_MEMCPY,
      run: async (size, ctx) => {
        const { samples, sampleMs, warmupMs } = copyTiming(ctx);
        return runFloor(['memcpy', size, samples, sampleMs, warmupMs]);
      },
    },
    { name: BUFFER_COPY, run: copyTrial('bufferCopy') },
    { name: 'Uint8Array#set(subarray)', run: copyTrial('set') },
    { name: FRAMES_COPY, run: copyTrial('framesCopy') },
  ],
  targets: [
    {
      name: `${FRAMES_COPY}: overhead above C memcpy (report)`,
      check: (get) => {
        const parts = copyTable.params.full
          .map((size) => [size, get(FRAMES_COPY, size), get(C_MEMCPY, size), get(BUFFER_COPY, size)])
          .filter(([, cell, floor, base]) => [cell, floor, base].every((c) => c && !c.skip && Number.isFinite(c.value)));
        if (parts.length === 0) return { pass: null, detail: 'not measured' };
        return {
          pass: null,
          detail: parts
            .map(
              ([size, cell, floor, base]) =>
                `${formatBytes(size)}: ${formatNs(cell.value)} vs C ${formatNs(floor.value)} ` +
                `(+${formatNs(cell.overFloor)}; ${BUFFER_COPY} +${formatNs(base.overFloor)})`,
            )
            .join(', '),
        };
      },
    },
  ],
};

// ---------------------------------------------------------------------------
// The example servers under load
// ---------------------------------------------------------------------------

/** 'echo-1024' → { op: 'echo', size: 1024 } */
const parseRpcParam = (param) => {
  const [op, size] = param.split('-');
  return { op, size: Number(size) };
};

const rpcTrial = (file) => async (param, ctx) => {
  const { op, size } = parseRpcParam(param);
  const { port, child } = await startServerProcess(file);
  try {
    const depth = size <= 4 * KiB ? 32 : size <= 64 * KiB ? 8 : 2;
    const result = await runLoad({
      port,
      op,
      size,
      connections: 4,
      depth,
      seconds: ctx.full ? 4 : 1.5,
      warmupSeconds: ctx.full ? 1 : 0.4,
    });
    return { value: result.requestsPerSecond, extras: { p50: result.p50Ms * 1000, p99: result.p99Ms * 1000 } };
  } finally {
    await stopServerProcess(child);
  }
};

const rpcTable = {
  id: 'rpc',
  title: 'example RPC server under the load generator (4 connections, pipelined)',
  unit: 'requests per second',
  better: 'higher',
  format: (v) => (Number.isFinite(v) ? `${Math.round(v).toLocaleString('en-US')}/s` : '–'),
  params: {
    quick: ['echo-64', 'echo-1024', 'echo-65536', 'echo-1048576', 'bytes-65536'],
    full: ['echo-64', 'echo-1024', 'echo-65536', 'echo-1048576', 'bytes-1024', 'bytes-65536', 'bytes-1048576'],
  },
  paramLabel: (param) => {
    const { op, size } = parseRpcParam(param);
    return op === 'echo' ? `echo ${formatBytes(size)}` : `get ${formatBytes(size)}`;
  },
  processes: { quick: 2, full: 3 },
  baseline: 'plain twin',
  extras: [
    { key: 'p50', label: 'latency p50 (µs)', format: (v) => v.toFixed(0) },
    { key: 'p99', label: 'latency p99 (µs)', format: (v) => v.toFixed(0) },
  ],
  competitors: [
    { name: 'plain twin', run: rpcTrial('rpc-server-plain.ts') },
    { name: 'iobuf server', run: rpcTrial('rpc-server.ts') },
  ],
  targets: [
    {
      name: 'iobuf server requests/s ≥ 1.2× plain twin, echo 1 KiB',
      check: (get) => {
        const cell = get('iobuf server', 'echo-1024');
        if (!cell || !Number.isFinite(cell.ratio)) return { pass: null, detail: 'no result' };
        return { pass: cell.ratio >= 1.2, detail: `${cell.ratio.toFixed(2)}×` };
      },
    },
  ],
};

export default {
  name: 'frames',
  title: 'frames: FrameAssembler receive path and the example RPC server',
  setup() {
    ensureFloorBinary();
    compileServers();
  },
  tables: [receiveTable, pushTable, copyTable, rpcTable],
};
