// Slow subscribers cannot make the example brokers buffer without bound.
// A raw subscriber that connects, subscribes and then reads nothing more is
// put beside a fast subscriber (the mqtt package) under a publisher's flood:
//   - QoS 0: messages past maxQueuedBytes are dropped for the stalled one
//     only, at packet boundaries; the fast one gets every message.
//   - QoS 0: a subscriber whose socket has taken nothing for
//     slowClientTimeoutMs is disconnected.
//   - QoS 1: the stalled one is disconnected as soon as a message would go
//     past maxQueuedBytes; every publish is still acknowledged.
//   - iobuf, a budget smaller than what the stalled one would hold: the
//     broker never holds more than the budget; it stops reading the
//     publisher instead, and the flow resumes once the stalled one is gone.
// The broker, its clients and the test share one event loop, so the flood is
// paced by what the fast subscriber has received (publishPaced): "fast" then
// means fast whatever order the loop serves the sockets in, and nothing here
// depends on timing. What the stalled one is sent is past the kernel's socket
// buffers and the bound together (12.5 / 9.4 MiB against at most 4 MiB of
// send buffer, tcp_wmem's maximum, and a receive buffer that does not grow
// while nothing reads it).
import { once } from 'node:events';
import type net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { BROKERS, connect, eventually, payload, publishPaced, stalledSubscriber } from './fixtures/mqtt-helpers';

const KiB = 1024;
const MiB = 1024 * KiB;
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** What the fast subscriber may have waiting at the broker: 8 × 64 KiB, half the 1 MiB bound. */
const WINDOW = 8;

/** Everything `socket` still has to read, once the broker has closed it. */
async function drain(socket: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', () => {});
  socket.resume();
  await once(socket, 'close');
  return Buffer.concat(chunks);
}

/** Reads `socket` (resuming it) until `count` PUBLISH packets have arrived; returns them. */
async function readPublishes(socket: net.Socket, count: number): Promise<Array<[string, Buffer]>> {
  const chunks: Buffer[] = [];
  let found: Array<[string, Buffer]> = [];
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      found = publishes(Buffer.concat(chunks));
      if (found.length >= count) {
        socket.removeListener('data', onData);
        socket.pause();
        resolve();
      }
    };
    socket.on('data', onData);
    socket.once('close', () => reject(new Error(`the socket closed after ${found.length} of ${count} packets`)));
    if (count === 0) resolve();
    else socket.resume();
  });
  return found;
}

/** Each of `received` is one of `sent` (by payload), in the order they were sent. */
function inSentOrder(received: Array<[string, Buffer]>, sent: (i: number) => Buffer, count: number): boolean {
  let next = 0;
  for (const [, body] of received) {
    while (next < count && !sent(next).equals(body)) next++;
    if (next === count) return false;
    next++;
  }
  return true;
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

  it('QoS 0: drops what is past maxQueuedBytes for it alone, whole packets only', async () => {
    // A long stall timeout: only the bound acts here.
    const running = await broker({ maxQueuedBytes: 1 * MiB, slowClientTimeoutMs: 600_000 });
    const stalled = await stalledSubscriber(running.port, 'flood', 0);
    cleanups.push(() => {
      stalled.destroy();
    });
    const fast = await connect(running.port, { clientId: 'fast' }, cleanups);
    await fast.client.subscribeAsync('flood');
    const publisher = await connect(running.port, { clientId: 'flooder' }, cleanups);
    const count = 200;
    const message = (i: number) => payload(64 * KiB, i);
    await publishPaced(publisher, fast, 'flood', count, WINDOW, message, 0);
    const got = await fast.received(count);
    got.forEach((m, i) => expect(m.payload.equals(message(i))).toBe(true));
    const { dropped, delivered, slowDisconnects } = running.stats();
    expect(slowDisconnects).toBe(0);
    // Every message went to the fast one, and to the stalled one or was dropped for it.
    expect(delivered + dropped).toBe(2 * count);
    expect(dropped).toBeGreaterThan(0);
    if (running.pool !== undefined) {
      // What the broker holds now: the stalled one's bound (pinned frames of 64 KiB
      // + 7 bytes sit in the pool's 128 KiB class: twice that), read buffers, scratch.
      expect(running.pool.stats().inUseBytes).toBeLessThanOrEqual(2 * (1 * MiB + 64 * KiB) + 1 * MiB);
    }
    // What was not dropped reaches it once it reads: a run of whole packets, in publish order, byte for byte.
    const received = await readPublishes(stalled, delivered - count);
    expect(received.length).toBe(delivered - count);
    expect(received.every(([topic]) => topic === 'flood')).toBe(true);
    expect(inSentOrder(received, message, count)).toBe(true);
  });

  it('QoS 0: disconnects it once its socket has taken nothing for slowClientTimeoutMs', async () => {
    const running = await broker({ maxQueuedBytes: 1 * MiB, slowClientTimeoutMs: 300 });
    const stalled = await stalledSubscriber(running.port, 'flood', 0);
    cleanups.push(() => {
      stalled.destroy();
    });
    const publisher = await connect(running.port, { clientId: 'flooder' }, cleanups);
    const count = 100; // 6.4 MiB: bytes wait for it at the broker whatever the kernel buffers
    const message = (i: number) => payload(64 * KiB, i);
    for (let i = 0; i < count; i++) void publisher.client.publishAsync('flood', message(i));
    await eventually(() => running.stats().slowDisconnects === 1);
    const received = publishes(await drain(stalled));
    const { dropped, delivered } = running.stats();
    // Each message went to it or was dropped for it, unless it was gone by then.
    expect(delivered + dropped).toBeLessThanOrEqual(count);
    expect(received.length).toBeLessThanOrEqual(delivered);
    expect(inSentOrder(received, message, count)).toBe(true);
  });

  it('QoS 1: disconnects it as soon as a message would go past maxQueuedBytes; every publish is acknowledged', async () => {
    // A long stall timeout: what disconnects it here is the bound.
    const running = await broker({ maxQueuedBytes: 1 * MiB, slowClientTimeoutMs: 600_000 });
    const stalled = await stalledSubscriber(running.port, 'acked', 1);
    cleanups.push(() => {
      stalled.destroy();
    });
    const fast = await connect(running.port, { clientId: 'fast1' }, cleanups);
    await fast.client.subscribeAsync('acked', { qos: 1 });
    const publisher = await connect(running.port, { clientId: 'publisher1' }, cleanups);
    const count = 150;
    const message = (i: number) => payload(64 * KiB, i);
    await publishPaced(publisher, fast, 'acked', count, WINDOW, message, 1); // resolves once every PUBACK is in
    const got = await fast.received(count);
    got.forEach((m, i) => expect([m.qos, m.payload.equals(message(i))]).toEqual([1, true]));
    // Every publish was routed before its PUBACK: the bound was met by then.
    expect(running.stats().slowDisconnects).toBe(1);
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
    cleanups.push(() => {
      stalled.destroy();
    });
    const fast = await connect(running.port, { clientId: 'fast-tight' }, cleanups);
    await fast.client.subscribeAsync('tight');
    const publisher = await connect(running.port, { clientId: 'publisher-tight' }, cleanups);
    const count = 150; // 9.4 MiB through a 4 MiB budget
    let highest = 0;
    const sampler = setInterval(() => {
      highest = Math.max(highest, pool.stats().inUseBytes);
    }, 5);
    cleanups.push(() => clearInterval(sampler));
    for (let i = 0; i < count; i++) void publisher.client.publishAsync('tight', payload(64 * KiB, 1000 + i));
    // Every publish is read once the stalled subscriber is gone and its memory is back.
    await eventually(() => running.stats().published === count);
    clearInterval(sampler);
    expect(running.stats().slowDisconnects).toBe(1);
    expect(highest).toBeLessThanOrEqual(4 * MiB);
    // The budget was what stopped it: a frame found no memory (a read pause), with more
    // than 4 MiB less one slab of the frames' class (512 KiB) taken from the OS.
    expect(running.stats().readPauses).toBeGreaterThan(0);
    expect(pool.stats().highWaterBytes).toBeGreaterThan(3 * MiB);
    // Whatever the fast one got (a packet finding no scratch while the budget was spent is dropped), it got in order.
    const indexes = fast.messages.map((m) => m.payload.readUInt32LE(0));
    const expectedOrder = Array.from({ length: count }, (_, i) => payload(64 * KiB, 1000 + i).readUInt32LE(0));
    const positions = indexes.map((first) => expectedOrder.indexOf(first));
    expect(positions.every((p, n) => p >= 0 && (n === 0 || p > positions[n - 1]))).toBe(true);
    await drain(stalled);
  });
});
