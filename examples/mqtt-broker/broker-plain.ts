// The broker of broker.ts in plain Node (net + Buffer), for comparison: the
// same protocol, the same rules for slow subscribers, the same subscription
// tree (protocol.ts), written as one would without iobuf:
//
//   - 'data' events; a packet that spans reads is collected as a list of
//     chunks and joined once (Buffer.concat) when it is complete.
//   - What goes to a client in one tick is corked and leaves in one writev
//     (uncork on process.nextTick).
//   - Fan-out: to one subscriber, the header is written and then the received
//     bytes themselves (no copy); to several, the outgoing packet is encoded
//     once and the same Buffer is written to each of them.
//   - Slow subscribers: socket.writableLength is what waits for a client, and
//     the iobuf broker's rules 1 and 2 hold: past maxQueuedBytes a QoS 0
//     message is dropped for the client and a QoS 1 message disconnects it; a
//     client whose socket takes nothing for slowClientTimeoutMs is
//     disconnected. Memory is the heap's: nothing bounds it beyond that.
//
//   npx tsx examples/mqtt-broker/broker-plain.ts [--port 1883] [--host 127.0.0.1]
import net from 'node:net';
import path from 'node:path';
import {
  ACCEPTED,
  CONNACK,
  CONNECT,
  CONNECT_TIMEOUT_MS,
  DEFAULTS,
  DISCONNECT,
  MAX_QOS,
  PINGREQ,
  PINGRESP,
  PUBACK,
  PUBLISH,
  ProtocolError,
  SUBACK,
  SUBSCRIBE,
  SUBSCRIBE_FAILURE,
  TopicTree,
  UNSUBACK,
  UNSUBSCRIBE,
  listenAddress,
  parseConnect,
  parseSubscribe,
  parseUnsubscribe,
  validFlags,
  validTopicFilter,
  validTopicName,
  varintLength,
  willBody,
} from './protocol';
import type { BrokerOptions, BrokerStats, RunningBroker, Will } from './protocol';

const PINGRESP_PACKET = Buffer.from([PINGRESP << 4, 0]);

class Client {
  clientId: string | null = null;
  readonly filters = new Set<string>();
  will: { body: Buffer; topicEnd: number; will: Will } | null = null;
  packetId = 0;
  timer: NodeJS.Timeout | null = null;
  /** Bytes the kernel has taken, at the last sweep, and when that last moved (or nothing waited). */
  lastWritten = 0;
  progressAt = Date.now();
  closed = false;
  /** The start of a packet that has not fully arrived: its chunks, their bytes, and the bytes it needs. */
  readonly pending: Buffer[] = [];
  pendingBytes = 0;
  needed = 0;
  private corked = false;

  constructor(readonly socket: net.Socket) {}

  /** Writes `buffer`; everything written in one tick leaves in one writev. */
  send(buffer: Buffer): void {
    if (this.closed) return;
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(uncork, this);
    }
    this.socket.write(buffer);
  }

  uncork(): void {
    this.corked = false;
    this.socket.uncork();
  }
}

function uncork(client: Client): void {
  client.uncork();
}

class Broker {
  private readonly maxPacketSize: number;
  private readonly maxQueuedBytes: number;
  private readonly slowClientTimeoutMs: number;
  private readonly tree = new TopicTree<Client>();
  private readonly byId = new Map<string, Client>();
  readonly connections = new Set<Client>();
  private nextAnonymous = 0;
  readonly counters = { published: 0, delivered: 0, dropped: 0, slowDisconnects: 0 };
  readonly sweeper: NodeJS.Timeout;

  constructor(options: BrokerOptions) {
    this.maxPacketSize = options.maxPacketSize ?? DEFAULTS.maxPacketSize;
    this.maxQueuedBytes = options.maxQueuedBytes ?? DEFAULTS.maxQueuedBytes;
    this.slowClientTimeoutMs = options.slowClientTimeoutMs ?? DEFAULTS.slowClientTimeoutMs;
    this.sweeper = setInterval(() => this.sweep(), Math.min(1000, Math.ceil(this.slowClientTimeoutMs / 4))).unref();
  }

  accept(socket: net.Socket): void {
    socket.setNoDelay(true);
    const client = new Client(socket);
    this.connections.add(client);
    socket.on('data', (chunk: Buffer) => this.data(client, chunk));
    socket.on('error', () => {}); // a reset: 'close' follows and cleans up
    socket.on('close', () => this.disconnected(client));
    client.timer = setTimeout(expire, CONNECT_TIMEOUT_MS, client);
  }

  // -------------------------------------------------------------------------
  // Reading packets
  // -------------------------------------------------------------------------

  private data(client: Client, chunk: Buffer): void {
    if (client.pending.length > 0) {
      client.pending.push(chunk);
      client.pendingBytes += chunk.length;
      if (client.pendingBytes < client.needed) return; // still incomplete: join once, when it is whole
      chunk = Buffer.concat(client.pending, client.pendingBytes);
      client.pending.length = 0;
      client.pendingBytes = 0;
    }
    let at = 0;
    while (at < chunk.length && !client.closed) {
      // The fixed header: type and flags, then a Remaining Length of 1 to 4 bytes.
      let length = 0;
      let scale = 1;
      let header = 0;
      for (let i = 1; i < 5 && at + i < chunk.length; i++) {
        const byte = chunk[at + i];
        length += (byte & 0x7f) * scale;
        scale *= 128;
        if (byte < 0x80) {
          header = i + 1;
          break;
        }
        if (i === 4) {
          client.socket.destroy(); // a Remaining Length past 4 bytes
          return;
        }
      }
      if (header > 0 && length > this.maxPacketSize) {
        client.socket.destroy();
        return;
      }
      const end = at + header + length;
      if (header === 0 || end > chunk.length) {
        client.pending.push(chunk.subarray(at));
        client.pendingBytes = chunk.length - at;
        client.needed = header === 0 ? client.pendingBytes + 1 : end - at;
        return;
      }
      this.packet(client, chunk[at], chunk.subarray(at + header, end));
      at = end;
    }
  }

  private packet(client: Client, tag: number, body: Buffer): void {
    const type = tag >> 4;
    client.timer?.refresh();
    if (!validFlags(type, tag & 0x0f) || (client.clientId === null) !== (type === CONNECT)) {
      client.socket.destroy();
      return;
    }
    try {
      switch (type) {
        case PUBLISH:
          this.publish(client, tag, body);
          break;
        case CONNECT:
          this.connect(client, body);
          break;
        case SUBSCRIBE:
          this.subscribe(client, body);
          break;
        case UNSUBSCRIBE: {
          const { packetId, filters } = parseUnsubscribe(body);
          for (const filter of filters) if (client.filters.delete(filter)) this.tree.unsubscribe(client, filter);
          client.send(Buffer.from([UNSUBACK << 4, 2, packetId >> 8, packetId & 0xff]));
          break;
        }
        case PINGREQ:
          client.send(PINGRESP_PACKET);
          break;
        case PUBACK:
          break;
        case DISCONNECT:
          client.will = null;
          client.socket.end();
          break;
        default:
          throw new ProtocolError(`packet type ${type} is not supported`);
      }
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      client.socket.destroy();
    }
  }

  private connect(client: Client, body: Buffer): void {
    const connect = parseConnect(body);
    client.send(Buffer.from([CONNACK << 4, 2, 0, connect.returnCode]));
    if (connect.returnCode !== ACCEPTED) {
      client.socket.end();
      return;
    }
    const clientId = connect.clientId.length > 0 ? connect.clientId : `plain-${++this.nextAnonymous}`;
    this.byId.get(clientId)?.socket.destroy();
    this.byId.set(clientId, client);
    client.clientId = clientId;
    client.will = connect.will === null ? null : { ...willBody(connect.will), will: connect.will };
    clearTimeout(client.timer!);
    client.timer = connect.keepAlive > 0 ? setTimeout(expire, connect.keepAlive * 1500, client) : null;
  }

  private subscribe(client: Client, body: Buffer): void {
    const { packetId, filters } = parseSubscribe(body);
    const ack = Buffer.allocUnsafe(1 + varintLength(2 + filters.length) + 2 + filters.length);
    let at = writeHeader(ack, SUBACK << 4, 2 + filters.length);
    at = ack.writeUInt16BE(packetId, at);
    for (const { filter, qos } of filters) {
      if (!validTopicFilter(filter)) {
        ack[at++] = SUBSCRIBE_FAILURE;
        continue;
      }
      const granted = Math.min(qos, MAX_QOS);
      this.tree.subscribe(client, filter, granted);
      client.filters.add(filter);
      ack[at++] = granted;
    }
    client.send(ack);
  }

  private publish(client: Client, tag: number, body: Buffer): void {
    const qos = (tag >> 1) & 0x03;
    const topicEnd = body.length >= 2 ? 2 + body.readUInt16BE(0) : Infinity;
    if (qos === 2) throw new ProtocolError('QoS 2 is not supported');
    if (topicEnd + (qos > 0 ? 2 : 0) > body.length) throw new ProtocolError('PUBLISH too short');
    const topic = body.toString('latin1', 2, topicEnd);
    if (!validTopicName(topic)) throw new ProtocolError('invalid topic name');
    this.route(topic, qos, body, topicEnd);
    if (qos === 1) client.send(Buffer.from([PUBACK << 4, 2, body[topicEnd], body[topicEnd + 1]]));
  }

  // -------------------------------------------------------------------------
  // Fan-out
  // -------------------------------------------------------------------------

  private route(topic: string, qos: number, body: Buffer, topicEnd: number): void {
    this.counters.published++;
    const routes = this.tree.match(topic);
    if (routes.length === 0) return;
    const topicPart = body.subarray(0, topicEnd);
    const payload = qos === 0 ? body : body.subarray(topicEnd + 2);
    /** The QoS 0 packet, encoded once for every QoS 0 subscriber. */
    let atQos0: Buffer | null = null;
    for (const route of routes) {
      const to = route.client;
      if (to.socket.destroyed) continue; // disconnected, its 'close' (and leaving the tree) still to come
      const outQos = route.qos < qos ? route.qos : qos;
      const length = outQos === qos ? body.length : body.length - 2;
      const queued = to.socket.writableLength;
      if (queued > 0 && queued + length > this.maxQueuedBytes) {
        this.overQueued(to, outQos);
        continue;
      }
      if (outQos === 1) {
        to.packetId = to.packetId === 0xffff ? 1 : to.packetId + 1;
        const head = Buffer.allocUnsafe(1 + varintLength(length) + topicPart.length + 2);
        topicPart.copy(head, writeHeader(head, (PUBLISH << 4) | 0b0010, length));
        head.writeUInt16BE(to.packetId, head.length - 2);
        to.send(head);
        to.send(payload);
      } else if (routes.length === 1) {
        // One subscriber: header, then the received bytes as they are.
        const head = Buffer.allocUnsafe(1 + varintLength(length));
        writeHeader(head, PUBLISH << 4, length);
        to.send(head);
        if (qos === 1) to.send(topicPart);
        to.send(payload);
      } else {
        atQos0 ??= encodeQos0(qos, body, topicPart, payload, length);
        to.send(atQos0);
      }
      this.counters.delivered++;
    }
  }

  private overQueued(to: Client, qos: number): void {
    if (qos === 0) {
      this.counters.dropped++;
      return;
    }
    this.counters.slowDisconnects++;
    to.socket.destroy();
  }

  /** Every second or so: a client whose socket has taken nothing of what waits for slowClientTimeoutMs goes. */
  private sweep(): void {
    const now = Date.now();
    for (const client of this.connections) {
      const { socket } = client;
      // bytesWritten counts what was handed to libuv plus what is still buffered;
      // writableLength is what has not completed: the difference is what the kernel took.
      const written = socket.bytesWritten - socket.writableLength;
      if (socket.writableLength === 0 || written !== client.lastWritten) {
        client.lastWritten = written;
        client.progressAt = now;
      } else if (now - client.progressAt >= this.slowClientTimeoutMs) {
        this.counters.slowDisconnects++;
        socket.destroy();
      }
    }
  }

  // -------------------------------------------------------------------------
  // Leaving
  // -------------------------------------------------------------------------

  private disconnected(client: Client): void {
    if (client.closed) return;
    client.closed = true;
    this.connections.delete(client);
    if (client.timer !== null) clearTimeout(client.timer);
    for (const filter of client.filters) this.tree.unsubscribe(client, filter);
    client.filters.clear();
    client.pending.length = 0;
    if (client.clientId !== null && this.byId.get(client.clientId) === client) this.byId.delete(client.clientId);
    const will = client.will;
    client.will = null;
    if (will !== null) this.route(will.will.topic, will.will.qos, will.body, will.topicEnd);
  }

  stats(): BrokerStats {
    return { connections: this.connections.size, ...this.counters };
  }
}

/** Writes a fixed header (first byte, Remaining Length) at 0; returns the offset after it. */
function writeHeader(buffer: Buffer, first: number, length: number): number {
  buffer[0] = first;
  let at = 1;
  for (; length >= 0x80; length >>>= 7) buffer[at++] = (length & 0x7f) | 0x80;
  buffer[at++] = length;
  return at;
}

/** A QoS 0 PUBLISH of a received body (its packet id left out when it came at QoS 1). */
function encodeQos0(receivedQos: number, body: Buffer, topicPart: Buffer, payload: Buffer, length: number): Buffer {
  const packet = Buffer.allocUnsafe(1 + varintLength(length) + length);
  const at = writeHeader(packet, PUBLISH << 4, length);
  if (receivedQos === 0) body.copy(packet, at);
  else payload.copy(packet, at + topicPart.copy(packet, at));
  return packet;
}

function expire(client: Client): void {
  client.socket.destroy();
}

export async function startBroker(options: BrokerOptions = {}): Promise<RunningBroker> {
  const broker = new Broker(options);
  const server = net.createServer((socket) => broker.accept(socket));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 1883, options.host ?? '127.0.0.1', resolve);
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    stats: () => broker.stats(),
    close: async () => {
      clearInterval(broker.sweeper);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const client of broker.connections) client.socket.destroy();
      await closed;
    },
  };
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === __filename) {
  const { port, host } = listenAddress(process.argv);
  void startBroker({ port, host }).then((broker) => {
    console.log(`mqtt-broker (plain) listening on ${host}:${broker.port}`);
    process.once('SIGTERM', () => void broker.close().then(() => process.exit(0)));
  });
}
