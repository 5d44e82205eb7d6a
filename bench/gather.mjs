// Benchmarks of the gather part: a message built of puts and blobs, written against what plain Node does for the same bytes.
//
// Table 1, the seed case: a 300-byte header plus a 500 KB blob that is
// already in memory, sent over loopback TCP (127.0.0.1) again and again until
// the byte target is reached, by four senders:
//   Buffer.concat+write   the baseline: header Buffer, concat with the blob, one write
//   cork+writes+uncork    plain Node: header Buffer, cork, write both, uncork
//   bl                    BufferList: append header and blob, write list.slice() (bl's way out is a copy)
//   Gatherer.writeTo      reserve+patch a length prefix, header fields into pooled scratch,
//                         putBytes(blob), writeTo(socket), reset
// Every sender waits for 'drain' when write() says so (writeTo does it itself),
// so all four keep the same amount of data queued.
//
// Table 1b, small messages: the same senders with an 18-byte header (the
// fixed fields only) and a 1 KiB blob, where the cost per write call shows
// rather than the copy: Gatherer.writeTo's direct path (one writev(2) on the
// descriptor during the call, when the socket has nothing queued) against
// Node's Writable machinery (a write() per part, a write request, a callback).
//
// What is measured: CPU time of the sender process per GiB sent
// (process.cpuUsage, user + system: the kernel's share of a TCP send is
// system time and counts), and GC scavenges per GiB (PerformanceObserver
// 'gc' entries, via the harness's gcCounter). The receiver is a separate
// `node` process (spawned per trial), so its CPU and GCs are not in the
// figures; it reads with `onread` into one reused 64 KiB buffer, the cheapest
// receiver Node has, and reports the byte count it got, which the trial
// checks. The first 32 MiB of each trial are warm-up and not measured.
// CPU per GiB is the figure that holds still on these machines; wall-clock
// throughput is shown as an extra but swings ±30%.
//
// Table 2: 64 small fixed-width puts (16 × u8, u16 BE, u32 LE, f64 BE) then
// compact(), against writing the same fields into one pre-allocated Buffer
// with Buffer#write… methods (and, for reference, with a DataView, the floor
// the Gatherer builds on). The Gatherer's op includes reset(), which releases
// its scratch chunk to the pool, and the first put, which acquires one.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { BufferList } from 'bl';
import { formatBytes, formatNs, gcCounter, iobuf, timeOps } from './harness.mjs';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

const HEADER_BYTES = 300;
const BLOB_BYTES = 500_000;
const WARMUP_BYTES = 32 * MiB;
// The header's text: fixed fields take 18 bytes, the text the other 282.
const HEADER_TEXT =
  `content-type: application/octet-stream\r\ncache-control: max-age=3600\r\nx-request-id: ${'r'.repeat(150)}\r\nserver: iobuf-bench\r\n`.padEnd(
    HEADER_BYTES - 18,
    '.',
  );

// ---------------------------------------------------------------------------
// Table 1: the seed case over loopback TCP
// ---------------------------------------------------------------------------

// The receiver: connects to the sender, counts bytes, prints the count at the end.
const RECEIVER = `
const net = require('node:net');
let total = 0;
const socket = net.connect({
  port: Number(process.argv[1]), host: '127.0.0.1',
  onread: { buffer: Buffer.allocUnsafe(65536), callback(n) { total += n; } },
});
socket.on('end', () => { process.stdout.write(String(total)); socket.end(); });
`;

/** A message: a header of 18 bytes of fixed fields and `text`, then a blob by reference. */
const SEED_SHAPE = { header: HEADER_BYTES, blob: BLOB_BYTES, text: HEADER_TEXT };
const SMALL_SHAPE = { header: 18, blob: KiB, text: '' };

/** The header of message `seq` as a new Buffer (what the Buffer-based senders do). */
function headerBuffer(seq, shape) {
  const header = Buffer.allocUnsafe(shape.header);
  header.writeUInt32BE(shape.header + shape.blob - 4, 0);
  header.writeUInt16BE(200, 4);
  header.writeUInt32BE(seq >>> 0, 6);
  header.writeUInt32BE(Math.floor(seq / 2 ** 32), 10);
  header.writeUInt32BE(seq >>> 0, 14);
  if (shape.text.length > 0) header.write(shape.text, 18, 'latin1');
  return header;
}

const waitDrain = (socket) => new Promise((resolve) => socket.once('drain', resolve));

/** Each maker returns send(seq) for one connected socket; send returns a promise only when it must wait. */
const SENDERS = {
  'Buffer.concat+write': (socket, blob, pool, shape) => (seq) => {
    if (!socket.write(Buffer.concat([headerBuffer(seq, shape), blob]))) return waitDrain(socket);
    return undefined;
  },
  'cork+writes+uncork': (socket, blob, pool, shape) => (seq) => {
    socket.cork();
    socket.write(headerBuffer(seq, shape));
    const ok = socket.write(blob);
    socket.uncork();
    return ok ? undefined : waitDrain(socket);
  },
  bl: (socket, blob, pool, shape) => (seq) => {
    const list = new BufferList();
    list.append(headerBuffer(seq, shape));
    list.append(blob);
    if (!socket.write(list.slice())) return waitDrain(socket);
    return undefined;
  },
  'Gatherer.writeTo': (socket, blob, pool, shape) => {
    const { Gatherer } = iobuf();
    const gatherer = new Gatherer({ pool });
    return (seq) => {
      gatherer.reset();
      const at = gatherer.reserve(4);
      gatherer
        .putU16BE(200)
        .putU32BE(seq >>> 0)
        .putU32BE(Math.floor(seq / 2 ** 32))
        .putU32BE(seq >>> 0);
      if (shape.text.length > 0) gatherer.putString(shape.text, 'latin1');
      gatherer.putBytes(blob);
      gatherer.patchU32BE(at, gatherer.byteLength - 4);
      return gatherer.writeTo(socket);
    };
  },
};

async function seedTrial(name, target, shape = SEED_SHAPE) {
  const pool = name === 'Gatherer.writeTo' ? new (iobuf().BufferPool)({ maxMemory: 64 * MiB }) : null;
  const blob = Buffer.alloc(shape.blob, 0x5a);
  const messageBytes = shape.header + shape.blob;
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const receiver = spawn(process.execPath, ['-e', RECEIVER, String(server.address().port)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let report = '';
  receiver.stdout.on('data', (chunk) => {
    report += chunk;
  });
  const exited = once(receiver, 'exit');
  let socket = null;
  try {
    [socket] = await once(server, 'connection');
    server.close();
    const send = SENDERS[name](socket, blob, pool, shape);

    let seq = 0;
    let sent = 0;
    while (sent < WARMUP_BYTES) {
      const wait = send(seq++);
      if (wait) await wait;
      sent += messageBytes;
    }
    globalThis.gc?.();
    const gc = gcCounter();
    gc.start();
    const start = performance.now();
    const cpu = process.cpuUsage();
    let measured = 0;
    while (measured < target) {
      const wait = send(seq++);
      if (wait) await wait;
      measured += messageBytes;
    }
    // Everything handed to the kernel: 'finish' after the last write.
    await new Promise((resolve) => socket.end(resolve));
    const used = process.cpuUsage(cpu);
    const seconds = (performance.now() - start) / 1000;
    gc.stop();
    const { scavenges, markSweeps } = await gc.counts();
    await exited;
    const received = Number(report);
    const gib = measured / GiB;
    const result = {
      value: (used.user + used.system) / 1000 / gib, // ms of CPU per GiB
      extras: {
        scavenges: scavenges / gib,
        markSweeps: markSweeps / gib,
        systemShare: used.system / (used.user + used.system),
        throughput: measured / MiB / seconds,
      },
    };
    if (received !== sent + measured) result.note = `receiver got ${received} bytes, ${sent + measured} were sent`;
    if (pool && pool.stats().inUse !== 0) result.note = `${pool.stats().inUse} pooled buffers still out after the run`;
    return result;
  } finally {
    // Whatever happened, leave nothing that keeps this trial process alive.
    socket?.destroy();
    server.close();
    if (receiver.exitCode === null) receiver.kill();
    await pool?.close({ force: true });
  }
}

const SEED = ['Buffer.concat+write', 'cork+writes+uncork', 'bl', 'Gatherer.writeTo'];
const formatMs = (ms) => (Number.isFinite(ms) ? `${ms.toFixed(0)} ms` : '–');

const seedTable = {
  id: 'seed',
  title: 'seed case over loopback TCP: 300 B header + 500 KB blob, sender CPU',
  unit: 'sender CPU ms per GiB',
  better: 'lower',
  format: formatMs,
  params: { quick: [512 * MiB], full: [2 * GiB] },
  paramLabel: (bytes) => `${formatBytes(bytes)} sent`,
  // Kernel time dominates and the machine is shared: more processes, not longer ones, steady the medians.
  processes: { quick: 5, full: 7 },
  nodeArgs: ['--expose-gc'],
  baseline: 'Buffer.concat+write',
  extras: [
    { key: 'scavenges', label: 'GC scavenges per GiB (sender)', format: (v) => (Number.isFinite(v) ? v.toFixed(1) : '–') },
    { key: 'markSweeps', label: 'GC mark-sweeps per GiB (sender)', format: (v) => (Number.isFinite(v) ? v.toFixed(1) : '–') },
    {
      key: 'systemShare',
      label: 'share of sender CPU in the kernel',
      format: (v) => (Number.isFinite(v) ? `${(100 * v).toFixed(0)}%` : '–'),
    },
    { key: 'throughput', label: 'throughput, MiB/s (wall clock; noisy)', format: (v) => (Number.isFinite(v) ? v.toFixed(0) : '–') },
  ],
  competitors: SEED.map((name) => ({ name, run: (target) => seedTrial(name, target) })),
  targets: [
    {
      name: 'Gatherer.writeTo sender CPU per GiB ≤ 0.8× Buffer.concat+write',
      check: (get) => {
        const param = seedTable.params.quick.concat(seedTable.params.full);
        const row = param.map((p) => [get('Gatherer.writeTo', p), get('Buffer.concat+write', p)]).find(([g]) => g && !g.skip);
        if (!row) return { pass: null, detail: 'not measured' };
        const [gatherer, concat] = row;
        return {
          pass: gatherer.ratio <= 0.8,
          detail: `${formatMs(gatherer.value)} vs ${formatMs(concat.value)} = ${gatherer.ratio.toFixed(2)}×`,
        };
      },
    },
    {
      name: 'Gatherer.writeTo GC scavenges ≤ ¼ of Buffer.concat+write',
      check: (get) => {
        const param = seedTable.params.quick.concat(seedTable.params.full);
        const row = param.map((p) => [get('Gatherer.writeTo', p), get('Buffer.concat+write', p)]).find(([g]) => g && !g.skip);
        if (!row) return { pass: null, detail: 'not measured' };
        const [gatherer, concat] = row.map((cell) => cell.extras.scavenges);
        return { pass: gatherer <= concat / 4, detail: `${gatherer.toFixed(1)} vs ${concat.toFixed(1)} per GiB` };
      },
    },
  ],
};

const SMALL = ['cork+writes+uncork', 'Buffer.concat+write', 'Gatherer.writeTo'];

const smallTable = {
  id: 'small',
  title: 'small messages over loopback TCP: 18 B header + 1 KiB blob, sender CPU',
  unit: 'sender CPU ms per GiB',
  better: 'lower',
  format: formatMs,
  params: { quick: [128 * MiB], full: [512 * MiB] },
  paramLabel: (bytes) => `${formatBytes(bytes)} sent`,
  processes: { quick: 5, full: 7 },
  nodeArgs: ['--expose-gc'],
  baseline: 'cork+writes+uncork',
  extras: seedTable.extras,
  competitors: SMALL.map((name) => ({ name, run: (target) => seedTrial(name, target, SMALL_SHAPE) })),
  targets: [],
};

// ---------------------------------------------------------------------------
// Table 2: 64 small puts + compact vs one pre-allocated Buffer
// ---------------------------------------------------------------------------

let counter = 0;

const PUTS = {
  'Buffer#write… (pre-allocated)': () => {
    const buffer = Buffer.allocUnsafe(4096);
    return () => {
      const base = counter++ & 0xffff;
      let at = 0;
      for (let i = 0; i < 16; i++) {
        at = buffer.writeUInt8((base + i) & 0xff, at);
        at = buffer.writeUInt16BE((base + i) & 0xffff, at);
        at = buffer.writeUInt32LE(base * i, at);
        at = buffer.writeDoubleBE(base / (i + 1), at);
      }
      return at;
    };
  },
  'DataView (pre-allocated)': () => {
    const buffer = Buffer.allocUnsafe(4096);
    const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.length);
    return () => {
      const base = counter++ & 0xffff;
      let at = 0;
      for (let i = 0; i < 16; i++) {
        view.setUint8(at, (base + i) & 0xff);
        view.setUint16(at + 1, (base + i) & 0xffff);
        view.setUint32(at + 3, base * i, true);
        view.setFloat64(at + 7, base / (i + 1));
        at += 15;
      }
      return at;
    };
  },
  'Gatherer 64 puts + compact': () => {
    const { BufferPool, Gatherer } = iobuf();
    const gatherer = new Gatherer({ pool: new BufferPool({ maxMemory: 16 * MiB }) });
    return () => {
      const base = counter++ & 0xffff;
      gatherer.reset();
      for (let i = 0; i < 16; i++) {
        gatherer
          .putU8((base + i) & 0xff)
          .putU16BE((base + i) & 0xffff)
          .putU32LE(base * i)
          .putF64BE(base / (i + 1));
      }
      gatherer.compact(4096);
      return gatherer.byteLength;
    };
  },
};

const putsTable = {
  id: 'puts',
  title: '64 small puts (+ compact) into one segment',
  unit: 'time per 64 puts',
  better: 'lower',
  params: { quick: [64], full: [64] },
  paramLabel: () => '16 × (u8, u16 BE, u32 LE, f64 BE)',
  processes: { quick: 3, full: 5 },
  nodeArgs: ['--expose-gc'],
  baseline: 'Buffer#write… (pre-allocated)',
  extras: [{ key: 'scavenges', label: 'GC scavenges per 1000 ops' }],
  competitors: Object.entries(PUTS).map(([name, make]) => ({
    name,
    run: async (_param, ctx) =>
      timeOps(make(), ctx.full ? { samples: 11, sampleMs: 30, warmupMs: 150 } : { samples: 9, sampleMs: 20, warmupMs: 100 }),
  })),
  targets: [
    {
      name: 'Gatherer 64 puts + compact ≤ 1.5× Buffer#write… into a pre-allocated Buffer',
      check: (get) => {
        const cell = get('Gatherer 64 puts + compact', 64);
        if (!cell || cell.skip) return { pass: null, detail: 'not measured' };
        const base = get('Buffer#write… (pre-allocated)', 64);
        return { pass: cell.ratio <= 1.5, detail: `${formatNs(cell.value)} vs ${formatNs(base.value)} = ${cell.ratio.toFixed(2)}×` };
      },
    },
  ],
};

// ---------------------------------------------------------------------------
// Table 3: length-prefixed and NUL-terminated strings
// ---------------------------------------------------------------------------

// Topic-like ASCII names (3 to 27 characters), and the same with accents (UTF-8, 2-byte characters).
const STRING_SETS = {
  ascii: ['sensors/room-12/temperature', 'a/b', 'devices/7f3a/status/online', 'home/kitchen/light'],
  utf8: ['capteurs/salle-12/température', 'é/ü', 'appareils/7f3a/état/connecté', 'maison/cuisine/lumière'],
};

const STRINGS = {
  'Buffer.byteLength + writeUInt16BE + write (pre-allocated)': (texts) => {
    const buffer = Buffer.allocUnsafe(4096);
    return () => {
      let at = 0;
      for (let i = 0; i < 16; i++) {
        const text = texts[i & 3];
        at = buffer.writeUInt16BE(Buffer.byteLength(text), at);
        at += buffer.write(text, at);
      }
      return at;
    };
  },
  'Gatherer putU16BE(Buffer.byteLength) + putString': (texts) => {
    const { BufferPool, Gatherer } = iobuf();
    const gatherer = new Gatherer({ pool: new BufferPool({ maxMemory: 16 * MiB }) });
    return () => {
      gatherer.reset();
      for (let i = 0; i < 16; i++) {
        const text = texts[i & 3];
        gatherer.putU16BE(Buffer.byteLength(text)).putString(text);
      }
      return gatherer.byteLength;
    };
  },
  'Gatherer putStringPrefixed(u16be)': (texts) => {
    const { BufferPool, Gatherer } = iobuf();
    const gatherer = new Gatherer({ pool: new BufferPool({ maxMemory: 16 * MiB }) });
    return () => {
      gatherer.reset();
      for (let i = 0; i < 16; i++) gatherer.putStringPrefixed(texts[i & 3], 'u16be');
      return gatherer.byteLength;
    };
  },
  'Gatherer putStringPrefixed(varint)': (texts) => {
    const { BufferPool, Gatherer } = iobuf();
    const gatherer = new Gatherer({ pool: new BufferPool({ maxMemory: 16 * MiB }) });
    return () => {
      gatherer.reset();
      for (let i = 0; i < 16; i++) gatherer.putStringPrefixed(texts[i & 3], 'varint');
      return gatherer.byteLength;
    };
  },
  'Gatherer putStringNul': (texts) => {
    const { BufferPool, Gatherer } = iobuf();
    const gatherer = new Gatherer({ pool: new BufferPool({ maxMemory: 16 * MiB }) });
    return () => {
      gatherer.reset();
      for (let i = 0; i < 16; i++) gatherer.putStringNul(texts[i & 3]);
      return gatherer.byteLength;
    };
  },
};

const stringsTable = {
  id: 'strings',
  title: '16 strings, each with its byte length before it (or a NUL after it)',
  unit: 'time per 16 strings',
  better: 'lower',
  params: { quick: ['ascii', 'utf8'], full: ['ascii', 'utf8'] },
  paramLabel: (set) => (set === 'ascii' ? 'ASCII names, 3–27 chars' : 'UTF-8 names, 3–29 chars'),
  processes: { quick: 3, full: 5 },
  nodeArgs: ['--expose-gc'],
  baseline: 'Buffer.byteLength + writeUInt16BE + write (pre-allocated)',
  extras: [{ key: 'cpuNs', label: 'CPU time per 16 strings (steadier than the wall clock on a busy machine)', format: formatNs }],
  competitors: Object.entries(STRINGS).map(([name, make]) => ({
    name,
    run: async (set, ctx) =>
      timeOps(
        make(STRING_SETS[set]),
        ctx.full ? { samples: 11, sampleMs: 30, warmupMs: 150 } : { samples: 9, sampleMs: 20, warmupMs: 100 },
      ),
  })),
  targets: ['ascii', 'utf8'].map((set) => ({
    name: `putStringPrefixed(u16be) ≤ putU16BE(Buffer.byteLength) + putString, ${set}`,
    check: (get) => {
      const ours = get('Gatherer putStringPrefixed(u16be)', set);
      const before = get('Gatherer putU16BE(Buffer.byteLength) + putString', set);
      if (!ours || ours.skip || !before || before.skip) return { pass: null, detail: 'not measured' };
      return {
        pass: ours.value <= before.value,
        detail: `${formatNs(ours.value)} vs ${formatNs(before.value)} = ${(ours.value / before.value).toFixed(2)}×`,
      };
    },
  })),
};

export default {
  name: 'gather',
  title: 'Gatherer: scatter-gather writes',
  tables: [seedTable, smallTable, putsTable, stringsTable],
};
