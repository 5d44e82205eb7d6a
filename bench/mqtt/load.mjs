// Load generator for MQTT brokers (bench/mqtt.mjs): one publisher and N
// subscribers of one topic, QoS 0, in this process; the broker in another.
//
// The client side must not be what limits the run (it shares the machine's
// two cores with the broker), so it is lean: packets are made by hand once;
// subscribers read through `onread` into one reused buffer each and only look
// at fixed headers (bodies are skipped, not copied); the publisher writes a
// ready-made burst of packets.
//
// Flow control: every payload starts with a u32be sequence number; the
// publisher keeps at most `window` messages in flight, counted from the
// newest sequence number the slowest subscriber has seen (so a broker that
// drops messages cannot stall the window). That keeps each broker's queues
// short, so what is measured is the rate at which the broker moves messages,
// not how much it can hold. Messages a broker dropped are reported.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';

const TOPIC = 'bench/fanout';

function mqttString(text) {
  const bytes = Buffer.from(text);
  return Buffer.concat([Buffer.from([bytes.length >> 8, bytes.length & 0xff]), bytes]);
}

function packet(first, body) {
  const length = [];
  let rest = body.length;
  do {
    length.push((rest & 0x7f) | (rest >= 0x80 ? 0x80 : 0));
    rest >>>= 7;
  } while (rest > 0);
  return Buffer.concat([Buffer.from([first, ...length]), body]);
}

const connectPacket = (clientId) => packet(0x10, Buffer.concat([mqttString('MQTT'), Buffer.from([4, 0x02, 0, 0]), mqttString(clientId)]));
const subscribePacket = () => packet(0x82, Buffer.concat([Buffer.from([0, 1]), mqttString(TOPIC), Buffer.from([0])]));
const publishPacket = (size) => packet(0x30, Buffer.concat([mqttString(TOPIC), Buffer.alloc(size, 0x5a)]));

/** Where a PUBLISH body holds the payload's sequence number: after the topic (u16 length + bytes). */
const SEQ_AT = 2 + Buffer.byteLength(TOPIC);

/**
 * A connection that counts the packets it receives by type, skipping their
 * bodies but for the sequence number of each PUBLISH. `onPublish` is called
 * after each read that brought PUBLISH packets.
 */
function counter(port, clientId, onPublish) {
  const counts = { publish: 0, other: 0, lastSeq: -1 };
  let headerFill = 0;
  let lengthValue = 0;
  let lengthScale = 1;
  let first = 0;
  let skip = 0;
  let bodyAt = 0;
  let seq = 0;
  let waiters = [];
  const socket = net.connect({
    port,
    host: '127.0.0.1',
    noDelay: true,
    onread: {
      buffer: Buffer.allocUnsafe(256 * 1024),
      callback(nread, buffer) {
        const before = counts.publish;
        let at = 0;
        while (at < nread) {
          if (skip > 0) {
            const take = Math.min(skip, nread - at);
            if (first >> 4 === 3) {
              // Pick the sequence number's bytes out of what passes by.
              for (let b = Math.max(bodyAt, SEQ_AT); b < Math.min(bodyAt + take, SEQ_AT + 4); b++) {
                seq = seq * 256 + buffer[at + (b - bodyAt)];
              }
            }
            bodyAt += take;
            skip -= take;
            at += take;
            if (skip === 0 && first >> 4 === 3) counts.lastSeq = seq;
            continue;
          }
          const byte = buffer[at++];
          if (headerFill === 0) {
            first = byte;
            headerFill = 1;
            lengthValue = 0;
            lengthScale = 1;
            continue;
          }
          lengthValue += (byte & 0x7f) * lengthScale;
          lengthScale *= 128;
          if (byte >= 0x80) continue;
          headerFill = 0;
          skip = lengthValue;
          bodyAt = 0;
          seq = 0;
          if (first >> 4 === 3) counts.publish++;
          else counts.other++;
        }
        if (counts.publish !== before) onPublish?.();
        if (waiters.length > 0) {
          const ready = waiters.filter((w) => counts.other >= w.others);
          waiters = waiters.filter((w) => counts.other < w.others);
          for (const w of ready) w.resolve();
        }
      },
    },
  });
  const failure = new Promise((_, reject) => socket.on('error', reject));
  failure.catch(() => {});
  return {
    socket,
    counts,
    /** Resolves once `others` non-PUBLISH packets (CONNACK, SUBACK) have arrived. */
    acked: (others) =>
      Promise.race([
        failure,
        new Promise((resolve) => {
          if (counts.other >= others) resolve();
          else waiters.push({ others, resolve });
        }),
      ]),
    connected: Promise.race([failure, new Promise((resolve) => socket.once('connect', resolve))]),
  };
}

/**
 * Runs the fan-out load against the broker at `port`: `subscribers`
 * subscribers, `size`-byte payloads. Measures for `seconds` after
 * `warmupSeconds`; `brokerPid` is read from /proc for the broker's CPU time.
 * Returns delivered messages per second and broker CPU ms per delivered GiB.
 */
export async function runFanout({ port, subscribers, size, seconds, warmupSeconds, brokerPid }) {
  const subs = [];
  let received = 0;
  let publisher = null;
  const pump = () => publisher?.pump();
  for (let i = 0; i < subscribers; i++) {
    const sub = counter(port, `sub-${i}`, () => {
      received += sub.counts.publish - sub.seen;
      sub.seen = sub.counts.publish;
      pump();
    });
    sub.seen = 0;
    subs.push(sub);
  }
  await Promise.all(subs.map((s) => s.connected));
  for (const sub of subs) sub.socket.write(Buffer.concat([connectPacket(`sub-${subs.indexOf(sub)}`), subscribePacket()]));
  await Promise.all(subs.map((s) => s.acked(2))); // CONNACK, SUBACK

  const one = publishPacket(size);
  const seqAt = one.length - size; // the payload's first byte
  // Bytes per subscriber in flight: about 2 MiB (below the example brokers'
  // 4 MiB per-client bound), at least 32 messages.
  const window = Math.max(32, Math.min(8192, Math.floor((2 * 1024 * 1024) / one.length)));
  const perBurst = Math.max(1, Math.min(64, Math.floor((16 * 1024) / one.length)));
  const template = Buffer.concat(Array.from({ length: perBurst }, () => one));
  // Bursts are written with their own sequence numbers; one goes back to this
  // list when its write has completed (libuv may still read it before that).
  const bursts = [];
  const pub = counter(port, 'publisher');
  await pub.connected;
  pub.socket.write(connectPacket('publisher'));
  await pub.acked(1);
  let sent = 0;
  let stopped = false;
  publisher = {
    pump() {
      if (stopped) return;
      // In flight: sent minus the messages through the newest one the slowest subscriber has seen.
      let slowest = Infinity;
      for (let i = 0; i < subs.length; i++) if (subs[i].counts.lastSeq < slowest) slowest = subs[i].counts.lastSeq;
      let room = window - (sent - (slowest + 1));
      if (room < perBurst) return;
      pub.socket.cork();
      for (; room >= perBurst; room -= perBurst) {
        const burst = bursts.pop() ?? Buffer.from(template);
        for (let i = 0; i < perBurst; i++) burst.writeUInt32BE(sent++ >>> 0, i * one.length + seqAt);
        pub.socket.write(burst, () => bursts.push(burst));
      }
      pub.socket.uncork();
    },
  };
  publisher.pump();

  await new Promise((resolve) => setTimeout(resolve, warmupSeconds * 1000));
  const cpu0 = brokerCpuMs(brokerPid);
  const received0 = received;
  const sent0 = sent;
  const t0 = performance.now();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = brokerCpuMs(brokerPid) - cpu0;
  const delivered = received - received0;
  const expected = (sent - sent0) * subscribers;
  stopped = true;
  for (const s of [...subs, pub]) s.socket.destroy();
  return {
    messagesPerSecond: delivered / elapsed,
    cpuMsPerGiB: delivered === 0 ? NaN : cpu / ((delivered * size) / 2 ** 30),
    brokerCpuShare: cpu / 1000 / elapsed,
    // Sent in the window but not delivered (in flight at either end, or dropped): about 0 for a broker that drops nothing.
    undelivered: expected === 0 ? NaN : Math.max(0, 1 - delivered / expected),
  };
}

const TICKS_PER_SECOND = 100; // USER_HZ: what /proc reports utime/stime in on Linux

/** User + system CPU time of process `pid` (all its threads), in ms. */
export function brokerCpuMs(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // After the command: state is field 3, utime field 14, stime field 15 (1-based, proc(5)).
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS_PER_SECOND;
}

/** A free TCP port on 127.0.0.1 (closed again; a broker binds it right after). */
export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Resolves once something accepts connections on `port` (tries for `timeoutMs`). */
export async function waitForPort(port, timeoutMs = 20_000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listens on ${port} after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Starts `command args` and resolves with the child once `port` accepts connections. */
export async function startProcess(command, args, port, options = {}) {
  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'inherit'], ...options });
  const exited = new Promise((_, reject) =>
    child.once('exit', (code) => reject(new Error(`${command} exited with ${code} before listening`))),
  );
  exited.catch(() => {});
  await Promise.race([waitForPort(port), exited]);
  return child;
}

export async function stopProcess(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
}
