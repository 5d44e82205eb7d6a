// Slow subscribers cannot make the example brokers buffer without bound.
// A raw subscriber that connects, subscribes and then reads nothing more is
// put beside a fast subscriber (the mqtt package) under a publisher's flood:
//   - QoS 0: messages past maxQueuedBytes are dropped for the stalled one
//     only, at packet boundaries; the fast one gets every message; the
//     stalled one is disconnected once its socket has taken nothing for
//     slowClientTimeoutMs.
//   - QoS 1: the stalled one is disconnected as soon as a message would go
//     past maxQueuedBytes; every publish is still acknowledged.
//   - iobuf, a budget smaller than what the stalled one would hold: the
//     broker never holds more than the budget; it stops reading the
//     publisher instead, and the flow resumes once the stalled one is gone.
import { once } from 'node:events';
import type net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { until } from './fixtures/pool-helpers';
import { BROKERS, connect, payload, stalledSubscriber } from './fixtures/mqtt-helpers';

const KiB = 1024;
const MiB = 1024 * KiB;
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Everything `socket` still has to read, once the broker has closed it. */
async function drain(socket: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', () => {});
  socket.resume();
  await once(socket, 'close');
  return Buffer.concat(chunks);
}

/** The QoS 0 PUBLISH packets in `bytes` (after CONNACK and SUBACK), as [topic, payload]; a cut-off last one is left out. */
function publishes(bytes: Buffer): Array<[string, Buffer]> {
  const found: Array<[string, Buffer]> = [];
  let at = 0;
  while (at < bytes.length) {
    let length = 0;
    let scale = 1;
    let header = 1;
    for (; at + header < bytes.length; header++) {
      length += (bytes[at + header] & 0x7f) * scale;
      scale *= 128;
      if (bytes[at + header] < 0x80) break;
    }
    const end = at + header + 1 + length;
    if (at + header >= bytes.length || end > bytes.length) break;
    if (bytes[at] >> 4 === 3) {
      const body = bytes.subarray(at + header + 1, end);
      const topicEnd = 2 + body.readUInt16BE(0);
      found.push([body.toString('utf8', 2, topicEnd), body.subarray(topicEnd)]);
    }
    at = end;
  }
  return found;
}

describe.each(BROKERS)('$name broker: a stalled subscriber', (kind) => {
  async function broker(options: Parameters<typeof kind.start>[0]) {
    const running = await kind.start(options);
    cleanups.push(async () => {
      await running.close();
      if (running.pool !== undefined) expect(running.pool.stats().inUse).toBe(0);
    });
    return running;
  }

  it('QoS 0: drops what is past maxQueuedBytes for it alone, whole packets only, then disconnects it', async () => {
    const running = await broker({ maxQueuedBytes: 1 * MiB, slowClientTimeoutMs: 1500 });
    const stalled = await stalledSubscriber(running.port, 'flood', 0);
    cleanups.push(() => { stalled.destroy(); });
    const fast = await connect(running.port, { clientId: 'fast' }, cleanups);
    await fast.client.subscribeAsync('flood');
    const publisher = await connect(running.port, { clientId: 'flooder' }, cleanups);
    const count = 200;  // 12.5 MiB: more than the kernel's socket buffers and the 1 MiB bound together
    for (let i = 0; i < count; i++) void publisher.client.publishAsync('flood', payload(64 * KiB, i));
    const got = await fast.received(count);
    got.forEach((m, i) => expect(m.payload.equals(payload(64 * KiB, i))).toBe(true));
    const { dropped, delivered } = running.stats();
    expect(dropped).toBeGreaterThan(0);
    if (running.pool !== undefined) {
      // What the broker holds now: the stalled one's bound (pinned frames of 64 KiB
      // + 7 bytes sit in the pool's 128 KiB class: twice that), read buffers, scratch.
      expect(running.pool.stats().inUseBytes).toBeLessThanOrEqual(2 * (1 * MiB + 64 * KiB) + 1 * MiB);
    }
    // Rule 2: its socket takes nothing, so it goes after slowClientTimeoutMs.
    await until(() => running.stats().slowDisconnects === 1, 'the stalled subscriber to be disconnected', 1_000_000);
    const received = publishes(await drain(stalled));
    // What reached it is a run of whole packets, in publish order, byte for byte, with the rest dropped.
    const indexes = received.map(([, body]) => got.findIndex((m) => m.payload.equals(body)));
    expect(indexes.length).toBeGreaterThan(0);
    expect(indexes.every((index, n) => index >= 0 && (n === 0 || index > indexes[n - 1]))).toBe(true);
    // Every message went to the fast one; each went to the stalled one or was dropped for it
    // (fewer, if the stall timeout cut it off before the flood ended).
    expect(delivered + dropped).toBeLessThanOrEqual(2 * count);
    expect(delivered - count).toBeGreaterThanOrEqual(indexes.length);
  });

  it('QoS 1: disconnects it as soon as a message would go past maxQueuedBytes; every publish is acknowledged', async () => {
    // A long stall timeout: what disconnects it here is the bound.
    const running = await broker({ maxQueuedBytes: 1 * MiB, slowClientTimeoutMs: 600_000 });
    const stalled = await stalledSubscriber(running.port, 'acked', 1);
    cleanups.push(() => { stalled.destroy(); });
    const fast = await connect(running.port, { clientId: 'fast1' }, cleanups);
    await fast.client.subscribeAsync('acked', { qos: 1 });
    const publisher = await connect(running.port, { clientId: 'publisher1' }, cleanups);
    const count = 150;
    await Promise.all(Array.from({ length: count }, (_, i) => publisher.client.publishAsync('acked', payload(64 * KiB, i), { qos: 1 })));
    const got = await fast.received(count);
    got.forEach((m, i) => expect([m.qos, m.payload.equals(payload(64 * KiB, i))]).toEqual([1, true]));
    await until(() => running.stats().slowDisconnects === 1, 'the stalled subscriber to be disconnected');
    expect(running.stats().dropped).toBe(0);
    await drain(stalled);
  });
});

describe('iobuf broker: the pool budget is the limit', () => {
  it('holds no more than its budget for a stalled subscriber: it stops reading the publisher, and resumes once the stalled one is gone', async () => {
    const running = await BROKERS[0].start({ maxMemory: 4 * MiB, maxQueuedBytes: 64 * MiB, slowClientTimeoutMs: 1500 });
    const pool = running.pool!;
    cleanups.push(async () => {
      await running.close();
      expect(pool.stats().inUse).toBe(0);
    });
    const stalled = await stalledSubscriber(running.port, 'tight', 0);
    cleanups.push(() => { stalled.destroy(); });
    const fast = await connect(running.port, { clientId: 'fast-tight' }, cleanups);
    await fast.client.subscribeAsync('tight');
    const publisher = await connect(running.port, { clientId: 'publisher-tight' }, cleanups);
    const count = 150;  // 9.4 MiB through a 4 MiB budget
    let highest = 0;
    const sampler = setInterval(() => { highest = Math.max(highest, pool.stats().inUseBytes); }, 5);
    cleanups.push(() => clearInterval(sampler));
    for (let i = 0; i < count; i++) void publisher.client.publishAsync('tight', payload(64 * KiB, 1000 + i));
    // The last message gets through once the stalled subscriber is gone and its memory is back.
    await until(() => fast.messages.some((m) => m.payload.equals(payload(64 * KiB, 1000 + count - 1))), 'the last message', 1_000_000);
    clearInterval(sampler);
    expect(running.stats().slowDisconnects).toBe(1);
    expect(highest).toBeLessThanOrEqual(4 * MiB);
    expect(highest).toBeGreaterThan(3 * MiB);  // the budget was what stopped it
    expect(running.stats().readPauses).toBeGreaterThan(0);  // the publisher was not read while memory was short
    // Whatever the fast one got (a packet finding no scratch while the budget was spent is dropped), it got in order.
    const indexes = fast.messages.map((m) => m.payload.readUInt32LE(0));
    const expectedOrder = Array.from({ length: count }, (_, i) => payload(64 * KiB, 1000 + i).readUInt32LE(0));
    const positions = indexes.map((first) => expectedOrder.indexOf(first));
    expect(positions.every((p, n) => p >= 0 && (n === 0 || p > positions[n - 1]))).toBe(true);
    await drain(stalled);
  });
});
