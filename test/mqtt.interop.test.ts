// The example MQTT brokers (examples/mqtt-broker: on iobuf, and its plain-Node
// twin) driven by clients nobody here wrote: the `mqtt` package (this file)
// and Debian's mosquitto clients (mqtt.mosquitto.test.ts). Both brokers pass
// the same tests: wildcard routing, QoS 1 acknowledgements, no retained
// messages, unsubscribe, keep-alive expiry and wills, many subscribers, large
// payloads. The iobuf broker's pool is back to zero buffers in use once its
// clients have gone.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { until } from './fixtures/pool-helpers';
import { BROKERS, ROOT, connect, connectPacket, packet, payload } from './fixtures/mqtt-helpers';
import type { TestClient } from './fixtures/mqtt-helpers';

const KiB = 1024;
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe.each(BROKERS)('$name broker with the mqtt package', (kind) => {
  async function broker(options = {}) {
    const running = await kind.start(options);
    cleanups.push(async () => {
      await running.close();
      if (running.pool !== undefined) expect(running.pool.stats().inUse).toBe(0);
    });
    return running;
  }

  it('routes by + and # wildcards, and leaves $ topics to filters that name them', async () => {
    const { port } = await broker();
    const filters = {
      plus: 'sensors/+/temp',
      hash: 'sensors/#',
      exact: 'sensors/room1/temp',
      levels: '+/+/+',
      all: '#',
      system: '$SYS/#',
    };
    const subscribers: Record<string, TestClient> = Object.fromEntries(
      await Promise.all(
        Object.entries(filters).map(async ([name, filter]) => {
          const subscriber = await connect(port, { clientId: `sub-${name}` }, cleanups);
          const granted = await subscriber.client.subscribeAsync([filter, 'sync']);
          expect(granted.map((g) => g.qos)).toEqual([0, 0]);
          return [name, subscriber] as const;
        }),
      ),
    );
    const publisher = await connect(port, { clientId: 'pub' }, cleanups);
    const topics = [
      'sensors/room1/temp',
      'sensors/room2/temp',
      'sensors/room1/humidity',
      'sensors',
      'other/x/y',
      '$SYS/x/y',
      'sensors/a/b/temp',
    ];
    for (const topic of topics) await publisher.client.publishAsync(topic, `on ${topic}`);
    await publisher.client.publishAsync('sync', 'end');
    const expected: Record<string, string[]> = {
      plus: ['sensors/room1/temp', 'sensors/room2/temp'],
      hash: ['sensors/room1/temp', 'sensors/room2/temp', 'sensors/room1/humidity', 'sensors', 'sensors/a/b/temp'],
      exact: ['sensors/room1/temp'],
      levels: ['sensors/room1/temp', 'sensors/room2/temp', 'sensors/room1/humidity', 'other/x/y'],
      all: ['sensors/room1/temp', 'sensors/room2/temp', 'sensors/room1/humidity', 'sensors', 'other/x/y', 'sensors/a/b/temp'],
      system: ['$SYS/x/y'],
    };
    for (const [name, subscriber] of Object.entries(subscribers)) {
      const before = await subscriber.before('sync');
      expect({ name, topics: before.map((m) => m.topic) }).toEqual({ name, topics: expected[name] });
      for (const message of before) expect(message.payload.toString()).toBe(`on ${message.topic}`);
    }
  });

  it('acknowledges QoS 1, delivers at the lower of the two QoS, grants at most QoS 1', async () => {
    const { port } = await broker();
    const atOne = await connect(port, { clientId: 'q1' }, cleanups);
    const atZero = await connect(port, { clientId: 'q0' }, cleanups);
    expect((await atOne.client.subscribeAsync('q/#', { qos: 2 })).map((g) => g.qos)).toEqual([1]);
    expect((await atZero.client.subscribeAsync('q/#', { qos: 0 })).map((g) => g.qos)).toEqual([0]);
    const publisher = await connect(port, { clientId: 'qpub' }, cleanups);
    // publishAsync at QoS 1 resolves on the PUBACK.
    const acked = await publisher.client.publishAsync('q/one', Buffer.from('at least once'), { qos: 1 });
    expect(acked?.cmd).toBe('publish');
    await publisher.client.publishAsync('q/zero', 'at most once', { qos: 0 });
    await publisher.client.publishAsync('q/big', payload(100 * KiB, 3), { qos: 1 });
    const one = await atOne.received(3);
    expect(one.map((m) => [m.topic, m.qos])).toEqual([
      ['q/one', 1],
      ['q/zero', 0],
      ['q/big', 1],
    ]);
    expect(one[0].messageId).toBeGreaterThan(0);
    expect(one[2].messageId).not.toBe(one[0].messageId);
    expect(one[2].payload.equals(payload(100 * KiB, 3))).toBe(true);
    const zero = await atZero.received(3);
    expect(zero.map((m) => [m.topic, m.qos])).toEqual([
      ['q/one', 0],
      ['q/zero', 0],
      ['q/big', 0],
    ]);
    expect(zero[0].payload.toString()).toBe('at least once');
    expect(zero[2].payload.equals(payload(100 * KiB, 3))).toBe(true);
  });

  it('keeps no retained message: current subscribers get it with RETAIN 0, later ones never', async () => {
    const { port } = await broker();
    const early = await connect(port, { clientId: 'early' }, cleanups);
    await early.client.subscribeAsync('r/+');
    const publisher = await connect(port, { clientId: 'rpub' }, cleanups);
    await publisher.client.publishAsync('r/state', 'on', { retain: true, qos: 1 });
    const [message] = await early.received(1);
    expect([message.topic, message.payload.toString(), message.retain]).toEqual(['r/state', 'on', false]);
    const late = await connect(port, { clientId: 'late' }, cleanups);
    await late.client.subscribeAsync(['r/+', 'sync']);
    await publisher.client.publishAsync('sync', 'end');
    expect(await late.before('sync')).toEqual([]);
  });

  it('stops delivering after UNSUBSCRIBE, for that filter only', async () => {
    const { port } = await broker();
    const subscriber = await connect(port, { clientId: 'unsub' }, cleanups);
    await subscriber.client.subscribeAsync(['u/a', 'u/+', 'sync']);
    const publisher = await connect(port, { clientId: 'upub' }, cleanups);
    // QoS 1: publishAsync resolves at the PUBACK, once the broker has routed the
    // message; the UNSUBSCRIBE that follows cannot overtake it.
    await publisher.client.publishAsync('u/a', '1', { qos: 1 });
    await subscriber.received(1); // once: two matching filters, one delivery (3.3.5)
    await subscriber.client.unsubscribeAsync('u/+');
    await publisher.client.publishAsync('u/a', '2', { qos: 1 });
    await publisher.client.publishAsync('u/b', '3', { qos: 1 });
    await subscriber.client.unsubscribeAsync('u/a');
    await publisher.client.publishAsync('u/a', '4', { qos: 1 });
    await publisher.client.publishAsync('sync', 'end');
    const before = await subscriber.before('sync');
    expect(before.map((m) => `${m.topic}=${m.payload}`)).toEqual(['u/a=1', 'u/a=2']);
  });

  it('fans one publisher out to 60 subscribers, each getting every message, in order, byte for byte', async () => {
    const running = await broker();
    const subscribers = await Promise.all(
      Array.from({ length: 60 }, async (_, i) => {
        const subscriber = await connect(running.port, { clientId: `fan-${i}` }, cleanups);
        await subscriber.client.subscribeAsync(i % 2 === 0 ? 'fan/#' : 'fan/+/data', { qos: i % 3 === 0 ? 1 : 0 });
        return subscriber;
      }),
    );
    const publisher = await connect(running.port, { clientId: 'fan-pub' }, cleanups);
    const sizes = [0, 1, 100, 4096, 4097, 20_000, 70_000, 3, 200_000, 64 * KiB];
    for (let i = 0; i < sizes.length; i++) {
      void publisher.client.publishAsync(`fan/${i}/data`, payload(sizes[i], i), { qos: i % 2 === 0 ? 1 : 0 });
    }
    for (const [i, subscriber] of subscribers.entries()) {
      const got = await subscriber.received(sizes.length);
      expect(got.map((m) => m.topic)).toEqual(sizes.map((_, n) => `fan/${n}/data`));
      got.forEach((m, n) => {
        expect(m.payload.equals(payload(sizes[n], n))).toBe(true);
        expect(m.qos).toBe(i % 3 === 0 && n % 2 === 0 ? 1 : 0);
      });
    }
    expect(running.stats().delivered).toBe(60 * sizes.length);
  });

  it('carries large payloads (64 KiB to 4 MiB) at QoS 0 and 1 unchanged', async () => {
    const { port } = await broker();
    const subscribers = await Promise.all(
      [0, 1, 2].map(async (i) => {
        const subscriber = await connect(port, { clientId: `big-${i}` }, cleanups);
        await subscriber.client.subscribeAsync('big', { qos: i === 0 ? 0 : 1 });
        return subscriber;
      }),
    );
    const publisher = await connect(port, { clientId: 'big-pub' }, cleanups);
    const sizes = [64 * KiB, 64 * KiB + 1, 256 * KiB, 1024 * KiB + 7, 4096 * KiB];
    for (const [i, size] of sizes.entries())
      await publisher.client.publishAsync('big', payload(size, 100 + i), { qos: i % 2 === 0 ? 1 : 0 });
    for (const subscriber of subscribers) {
      const got = await subscriber.received(sizes.length);
      got.forEach((m, i) => expect(m.payload.equals(payload(sizes[i], 100 + i))).toBe(true));
    }
  });

  it('disconnects a client that goes silent for 1.5 × its keep-alive, and publishes its will', async () => {
    const running = await broker();
    const observer = await connect(running.port, { clientId: 'observer' }, cleanups);
    await observer.client.subscribeAsync('wills/#', { qos: 1 });
    // A real client in a process of its own, frozen with SIGSTOP once connected: it stops pinging.
    const script = `
      const mqtt = require('mqtt');
      const client = mqtt.connect('mqtt://127.0.0.1:${running.port}', {
        protocolVersion: 4, keepalive: 1, reconnectPeriod: 0, clientId: 'sleepy',
        will: { topic: 'wills/sleepy', payload: Buffer.from('gone'), qos: 1 },
      });
      client.on('connect', () => console.log('connected'));`;
    const spawnedAt = performance.now(); // before its CONNECT: the broker's clock for it starts later
    const child = spawn(process.execPath, ['-e', script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    cleanups.push(() => {
      child.kill('SIGKILL');
    });
    await once(child.stdout!, 'data');
    child.kill('SIGSTOP');
    const [will] = await observer.received(1);
    expect([will.topic, will.payload.toString(), will.qos]).toEqual(['wills/sleepy', 'gone', 1]);
    // Timers never fire early: the broker cannot have given up before 1.5 s after the CONNECT.
    expect(performance.now() - spawnedAt).toBeGreaterThanOrEqual(1450);
    expect(running.stats().connections).toBe(1);
  });

  it('keeps a client that pings, sends no will on DISCONNECT, and closes the connection', async () => {
    const running = await broker();
    const observer = await connect(running.port, { clientId: 'watcher' }, cleanups);
    await observer.client.subscribeAsync(['wills/#', 'sync']);
    const pinger = await connect(running.port, {
      clientId: 'pinger',
      keepalive: 2,
      will: { topic: 'wills/pinger', payload: Buffer.from('gone'), qos: 0, retain: false },
    });
    await pinger.client.subscribeAsync('to/pinger');
    await new Promise((resolve) => setTimeout(resolve, 4500)); // past 1.5 × 2 s: only its PINGREQs keep it
    await observer.client.publishAsync('to/pinger', 'still there?');
    expect((await pinger.received(1))[0].payload.toString()).toBe('still there?');
    await pinger.client.endAsync(); // DISCONNECT
    await until(() => running.stats().connections === 1, 'the broker to drop the connection');
    await observer.client.publishAsync('sync', 'end');
    expect(await observer.before('sync')).toEqual([]);
  });

  it('a second connection with the same client id takes over; the first one is closed', async () => {
    const { port } = await broker();
    const first = await connect(port, { clientId: 'twin' });
    cleanups.push(() => first.client.endAsync(true));
    const closed = new Promise<void>((resolve) => first.client.once('close', () => resolve()));
    const second = await connect(port, { clientId: 'twin' }, cleanups);
    await closed;
    await second.client.subscribeAsync('t');
    await second.client.publishAsync('t', 'x');
    expect((await second.received(1))[0].payload.toString()).toBe('x');
  });

  it('answers a bad protocol level with CONNACK 1 and closes; closes a connection whose first packet is not CONNECT', async () => {
    const { port } = await broker();
    const old = net.connect(port, '127.0.0.1');
    old.write(connectPacket('old', { level: 5 }));
    const chunks: Buffer[] = [];
    old.on('data', (chunk: Buffer) => chunks.push(chunk));
    await once(old, 'close');
    expect(Buffer.concat(chunks)).toEqual(Buffer.from([0x20, 2, 0, 1]));

    const rude = net.connect(port, '127.0.0.1');
    rude.write(packet(0xc0, Buffer.alloc(0))); // PINGREQ before CONNECT
    const data: Buffer[] = [];
    rude.on('data', (chunk: Buffer) => data.push(chunk));
    await once(rude, 'close');
    expect(data).toEqual([]);

    const garbage = net.connect(port, '127.0.0.1');
    garbage.on('error', () => {});
    garbage.write(Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0x7f])); // a Remaining Length of 5 bytes
    await once(garbage, 'close');
  });
});
