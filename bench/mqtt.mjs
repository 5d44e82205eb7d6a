// MQTT fan-out: the example broker on iobuf (examples/mqtt-broker/broker.ts)
// against its plain-Node twin (broker-plain.ts), aedes (the broker Node users
// pick; its default in-memory setup) and mosquitto (the C broker from Debian,
// started on a free port with a minimal config). Every broker sends with
// TCP_NODELAY (the example brokers set it; aedes's server and mosquitto are
// configured to): otherwise Nagle's algorithm and delayed ACKs cap a
// windowed load like this one at some 20,000 messages per second whatever the broker.
//
// One publisher, 1 / 10 / 100 subscribers of its topic, QoS 0, payloads of
// 64 B / 1 KiB / 64 KiB, driven by bench/mqtt/load.mjs in the trial process;
// each broker runs in a process of its own, started afresh per trial.
// Measured: messages delivered per second (all subscribers together), and the
// broker process's CPU time (user + system, /proc/<pid>/stat: every thread,
// the kernel's share of its sends included) per GiB of payload delivered.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { BENCH_DIR, ROOT, formatBytes } from './harness.mjs';
import { freePort, runFanout, startProcess, stopProcess } from './mqtt/load.mjs';

const KiB = 1024;
const MOSQUITTO = '/usr/sbin/mosquitto';

// The example brokers are TypeScript. They run compiled by tsc (as the
// package's dist/ is), not through tsx: tsx's module output reaches every
// cross-module function through a getter, which showed up in profiles of the
// broker on iobuf (that imports lib/) and not of the plain twin.
const BUILD = path.join(BENCH_DIR, '.build', 'mqtt');
const ADDON = createRequire(import.meta.url)('node-gyp-build').path(ROOT);

const compiledBroker = (file) => (port) =>
  startProcess(process.execPath, [path.join(BUILD, 'examples', 'mqtt-broker', file), '--port', String(port)], port, {
    cwd: ROOT,
    env: { ...process.env, IOBUF_ADDON_PATH: ADDON },
  });

const BROKERS = {
  'plain twin': compiledBroker('broker-plain.js'),
  'iobuf broker': compiledBroker('broker.js'),
  aedes: (port) =>
    startProcess(process.execPath, [path.join(ROOT, 'bench', 'mqtt', 'aedes-broker.mjs'), String(port)], port, { cwd: ROOT }),
  mosquitto: async (port) => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'iobuf-mosquitto-'));
    const config = path.join(dir, 'mosquitto.conf');
    // set_tcp_nodelay: as every other broker here (and the load generator) does, so
    // no run measures Nagle's algorithm waiting for delayed ACKs.
    writeFileSync(
      config,
      [
        `listener ${port} 127.0.0.1`,
        'allow_anonymous true',
        'persistence false',
        'set_tcp_nodelay true',
        'log_dest stderr',
        'log_type error',
        '',
      ].join('\n'),
    );
    const child = await startProcess(MOSQUITTO, ['-c', config], port);
    child.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    return child;
  },
};

/** '100:1024' → 100 subscribers, 1 KiB payloads. */
const parse = (param) => param.split(':').map(Number);

async function fanoutTrial(name, param, ctx) {
  const [subscribers, size] = parse(param);
  if (name === 'mosquitto' && !existsSync(MOSQUITTO))
    return { skip: `${MOSQUITTO} is not installed (scripts/ci-mqtt-deps.sh installs it)` };
  const port = await freePort();
  const child = await BROKERS[name](port);
  try {
    const result = await runFanout({
      port,
      subscribers,
      size,
      brokerPid: child.pid,
      seconds: ctx.full ? 4 : 2,
      warmupSeconds: ctx.full ? 1 : 0.5,
    });
    return {
      value: result.messagesPerSecond,
      extras: { cpuMsPerGiB: result.cpuMsPerGiB, cpuShare: result.brokerCpuShare, undelivered: result.undelivered },
    };
  } finally {
    await stopProcess(child);
  }
}

const PARAMS = [1, 10, 100].flatMap((subscribers) => [64, KiB, 64 * KiB].map((size) => `${subscribers}:${size}`));
const TARGET_PARAM = `100:${KiB}`;
const ratio = (a, b) => (a && b && Number.isFinite(a.value) && Number.isFinite(b.value) ? a.value / b.value : NaN);
const show = (r) => (Number.isFinite(r) ? `${r.toFixed(2)}×` : 'not measured');

const fanoutTable = {
  id: 'fanout',
  title: 'MQTT fan-out: one publisher, N subscribers, QoS 0',
  unit: 'messages delivered per second',
  better: 'higher',
  format: (v) => (Number.isFinite(v) ? `${Math.round(v).toLocaleString('en-US')}/s` : '–'),
  params: { quick: PARAMS, full: PARAMS },
  paramLabel: (param) => {
    const [subscribers, size] = parse(param);
    return `${subscribers} sub × ${formatBytes(size)}`;
  },
  processes: { quick: 2, full: 5 },
  baseline: 'plain twin',
  extras: [
    { key: 'cpuShare', label: 'broker CPU, share of one core', format: (v) => (Number.isFinite(v) ? `${(100 * v).toFixed(0)}%` : '–') },
    {
      key: 'undelivered',
      label: 'sent × subscribers but not delivered during the window (in flight, or dropped)',
      format: (v) => (Number.isFinite(v) ? `${(100 * v).toFixed(1)}%` : '–'),
    },
  ],
  competitors: Object.keys(BROKERS).map((name) => ({ name, run: (param, ctx) => fanoutTrial(name, param, ctx) })),
  targets: [
    {
      name: 'iobuf broker delivered msgs/s ≥ 1.5× plain twin, 100 subscribers × 1 KiB',
      check: (get) => {
        const r = ratio(get('iobuf broker', TARGET_PARAM), get('plain twin', TARGET_PARAM));
        return { pass: Number.isFinite(r) ? r >= 1.5 : null, detail: show(r) };
      },
    },
    {
      name: 'iobuf broker delivered msgs/s ≥ 2× aedes, 100 subscribers × 1 KiB',
      check: (get) => {
        const r = ratio(get('iobuf broker', TARGET_PARAM), get('aedes', TARGET_PARAM));
        return { pass: Number.isFinite(r) ? r >= 2 : null, detail: show(r) };
      },
    },
    {
      name: 'iobuf broker ÷ mosquitto, delivered msgs/s, 100 subscribers × 1 KiB (reported)',
      check: (get) => ({ pass: null, detail: show(ratio(get('iobuf broker', TARGET_PARAM), get('mosquitto', TARGET_PARAM))) }),
    },
  ],
  derived: [
    {
      id: 'fanout-cpu',
      title: 'MQTT fan-out: broker CPU per GiB of payload delivered',
      unit: 'broker CPU ms per GiB delivered',
      better: 'lower',
      extra: 'cpuMsPerGiB',
      format: (ms) => (Number.isFinite(ms) ? `${ms.toFixed(0)} ms` : '–'),
      targets: [1, 10, 100].flatMap((subscribers) => {
        const param = `${subscribers}:${64 * KiB}`;
        return [
          {
            name: `iobuf broker CPU per delivered GiB ≤ 0.5× plain twin, ${subscribers} subscriber${subscribers > 1 ? 's' : ''} × 64 KiB`,
            check: (get) => {
              const r = ratio(get('iobuf broker', param), get('plain twin', param));
              return { pass: Number.isFinite(r) ? r <= 0.5 : null, detail: show(r) };
            },
          },
          {
            name: `iobuf broker ÷ mosquitto, CPU per delivered GiB, ${subscribers} subscriber${subscribers > 1 ? 's' : ''} × 64 KiB (reported)`,
            check: (get) => ({ pass: null, detail: show(ratio(get('iobuf broker', param), get('mosquitto', param))) }),
          },
        ];
      }),
    },
  ],
};

export default {
  name: 'mqtt',
  title: 'MQTT broker example: fan-out against the plain twin, aedes and mosquitto',
  setup() {
    // From scratch: a file left from an older layout (lib/gather.js beside lib/gather/)
    // would be loaded instead of the folder that replaced it.
    rmSync(BUILD, { recursive: true, force: true });
    const tsc = spawnSync(path.join(ROOT, 'node_modules', '.bin', 'tsc'), ['-p', path.join(BENCH_DIR, 'mqtt', 'tsconfig.json')], {
      cwd: ROOT,
      stdio: 'inherit',
    });
    if (tsc.status !== 0) throw new Error('compiling examples/mqtt-broker failed');
  },
  tables: [fanoutTable],
};
