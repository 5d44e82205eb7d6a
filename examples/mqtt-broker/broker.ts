// An MQTT 3.1.1 broker on iobuf: packets are read straight into pooled
// memory (FrameAssembler with a decoder for MQTT's fixed header), and what
// goes to each client leaves through its SocketWriter, one vectored write per
// tick. broker-plain.ts is the same broker in plain Node; protocol.ts is what
// they share (packet parsing off the hot path, the subscription tree).
//
//   npx tsx examples/mqtt-broker/broker.ts [--port 1883] [--host 127.0.0.1]
//
// What it does: CONNECT/CONNACK, SUBSCRIBE/SUBACK ('+' and '#' wildcards),
// PUBLISH at QoS 0 and 1 (PUBACK), UNSUBSCRIBE/UNSUBACK, PINGREQ/PINGRESP,
// DISCONNECT, wills, keep-alive (a client silent for 1.5 × its keep-alive is
// disconnected). What it does not: retained messages (a retained PUBLISH is
// delivered to current subscribers, with RETAIN 0, and not kept), persistent
// sessions (every session is clean: CONNACK says "no session present"), QoS 2
// (a QoS 2 PUBLISH closes the connection; subscriptions are granted QoS 1 at
// most).
//
// Fan-out. A PUBLISH is one pooled frame (frame.tag: its first byte). A
// small QoS 0 packet is encoded once into the tick's shared block (pooled,
// pool.share()); a subscriber's packets of one tick lie back to back there
// and go into its batch as one range (putShared(handle, offset, length)), so
// its batch is one iovec entry however many messages it got. Anything larger
// goes as a prefix in the subscriber's scratch (fixed header; for QoS 1 the
// topic and its own packet id too) and the rest of the frame by reference —
// another handle on the frame (frame.retain()), released when that
// subscriber's write is done; the memory goes back at the last release.
// (Small QoS 1 packets carry a packet id per subscriber: they are copied
// into each subscriber's scratch.)
//
// Slow subscribers, by three rules (broker-plain.ts keeps the first two):
//   1. At most maxQueuedBytes wait to be sent to a client (its writer's
//      queuedBytes, a shared body counted in full; a single packet of any
//      size may go to a client that has nothing waiting): a QoS 0 message
//      that would go past it is dropped for that client; a QoS 1 message
//      closes the client's connection (at-least-once could not be kept).
//   2. A client with bytes waiting whose socket takes none of them for
//      slowClientTimeoutMs is disconnected, and what it held goes back.
//   3. All memory — frames in, scratch out — comes from one pool, and its
//      budget is the limit: writers do not fall back to the heap. A packet
//      that finds no scratch is treated as in rule 1 (the put is one, so
//      nothing half-written reaches the stream); a frame that finds no
//      memory stops reading from its client until memory comes back (its
//      FrameAssembler waits in the pool's queue; TCP pushes back on the
//      publisher).
import net from 'node:net';
import path from 'node:path';
import { BufferPool, FrameAssembler, SocketWriter } from '../../lib/index';
import type { Frame, Gatherer, SharedBuffer } from '../../lib/index';
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
  decodeFixedHeader,
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

/**
 * How a QoS 0 packet reaches each subscriber's batch, by its size:
 *   - up to SHARE_BELOW: encoded once per message into the tick's shared
 *     block (pooled memory every batch refers to). A subscriber's packets of
 *     one tick lie back to back in the block, so they go into its batch as
 *     one range: one iovec entry per subscriber per tick, however many
 *     messages, and no JavaScript work per message and subscriber beyond
 *     moving the range's end;
 *   - larger: its fixed header into the batch's scratch, its body by
 *     reference to the frame it was received in (no copy at all).
 * QoS 1 packets up to SHARE_BELOW are copied into each subscriber's scratch
 * (their packet ids differ); the payloads of larger ones go by reference.
 */
const SHARE_BELOW = 4096;
/** Bytes of a shared block (a pool size class); a larger packet gets a block of its own size. */
const BLOCK_BYTES = 64 * 1024;

/** Largest staged prefix: fixed header, topic (u16 length + up to 65535 bytes), packet id, a body copied along. */
const STAGE_BYTES = 5 + 2 + 0xffff + 2 + SHARE_BELOW;

const EMPTY = Buffer.alloc(0);

/**
 * The message being routed, and what every subscriber of it gets, staged
 * once per message and outgoing QoS, lazily: a small QoS 0 packet whole, in
 * the tick's shared block; otherwise a prefix put into each subscriber's
 * scratch (one put) and, for large packets, the rest of the received bytes
 * by reference.
 */
class Outgoing {
  qos = 0;
  data: Buffer = EMPTY;
  topicEnd = 0;
  /** The frame `data` is (null: a heap Buffer, a will). */
  frame: Frame | null = null;
  /** The block the QoS 0 packet was encoded in, and where (null: not staged, too large, or no memory). */
  block0: SharedBuffer | null = null;
  start0 = 0;
  end0 = 0;
  /** The pool had no memory for the packet: every QoS 0 subscriber misses this message (rule 3). */
  noMemory0 = false;
  private readonly stage0 = Buffer.allocUnsafeSlow(STAGE_BYTES);
  private readonly stage1 = Buffer.allocUnsafeSlow(STAGE_BYTES);
  /** The prefix for QoS 0 / QoS 1 subscribers (null: not staged yet for this message). */
  prefix0: Buffer | null = null;
  prefix1: Buffer | null = null;
  /** Where in `data` the bytes that follow the prefix by reference start (-1: the prefix is the whole packet). */
  bodyAt0 = -1;
  bodyAt1 = -1;
  /** Where the packet id sits in prefix1. */
  idAt = 0;

  /** The broker's handle on the block packets of this tick go into (null: none yet this tick), and its bytes filled. */
  private block: SharedBuffer | null = null;
  private blockUsed = 0;

  constructor(private readonly pool: BufferPool) {}

  start(qos: number, data: Buffer, topicEnd: number, frame: Frame | null): void {
    this.qos = qos;
    this.data = data;
    this.topicEnd = topicEnd;
    this.frame = frame;
    this.prefix0 = this.prefix1 = null;
    this.bodyAt0 = this.bodyAt1 = -1;
    this.block0 = null;
    this.noMemory0 = false;
  }

  /** The tick is over: the broker lets go of its block (the ranges that refer to it hold handles of their own). */
  endTick(): void {
    this.block?.release();
    this.block = null;
  }

  /** `length` bytes at the end of this tick's block (a new block when they do not fit); null when the pool has none. */
  private room(length: number): SharedBuffer | null {
    let block = this.block;
    if (block === null || this.blockUsed + length > block.length) {
      const bytes = this.pool.tryAcquire(length > BLOCK_BYTES ? length : BLOCK_BYTES);
      if (bytes === null) return null;
      block?.release();
      block = this.block = this.pool.share(bytes);
      this.blockUsed = 0;
    }
    return block;
  }

  /** Stages the packet for QoS 0 subscribers: without the packet id if it came at QoS 1; DUP 0, RETAIN 0 (3.3.1.3). */
  stageQos0(): void {
    const { data, topicEnd } = this;
    const length = this.qos === 0 ? data.length : data.length - 2;
    const bodyStart = this.qos === 0 ? 0 : topicEnd + 2; // the bytes after the topic that go as they are
    if (length <= SHARE_BELOW) {
      const size = 1 + varintLength(length) + length;
      const block = this.room(size);
      if (block === null) {
        this.noMemory0 = true;
      } else {
        const bytes = block.data;
        const start = this.blockUsed;
        let at = writeHeader(bytes, PUBLISH << 4, length, start);
        if (this.qos !== 0) at += data.copy(bytes, at, 0, topicEnd);
        data.copy(bytes, at, bodyStart);
        this.blockUsed = start + size;
        this.block0 = block;
        this.start0 = start;
        this.end0 = start + size;
      }
      this.prefix0 = EMPTY; // staged (empty: the packet is in block0)
      return;
    }
    let at = writeHeader(this.stage0, PUBLISH << 4, length);
    if (this.qos !== 0) at += data.copy(this.stage0, at, 0, topicEnd);
    this.bodyAt0 = bodyStart;
    this.prefix0 = this.stage0.subarray(0, at);
  }

  /** Stages the packet for QoS 1 subscribers (it came at QoS 1): the packet id is filled in per subscriber. */
  stageQos1(): void {
    const { data, topicEnd } = this;
    let at = writeHeader(this.stage1, (PUBLISH << 4) | 0b0010, data.length);
    at += data.copy(this.stage1, at, 0, topicEnd);
    this.idAt = at;
    at += 2;
    if (data.length <= SHARE_BELOW) at += data.copy(this.stage1, at, topicEnd + 2);
    else this.bodyAt1 = topicEnd + 2; // the payload, after the packet id
    this.prefix1 = this.stage1.subarray(0, at);
  }

  end(): void {
    this.block0 = null;
    this.data = EMPTY;
    this.frame = null;
    this.prefix0 = this.prefix1 = null;
  }
}

/** Writes a fixed header (first byte, Remaining Length) at `at`; returns the offset after it. */
function writeHeader(buffer: Buffer, first: number, length: number, at = 0): number {
  buffer[at++] = first;
  for (; length >= 0x80; length >>>= 7) buffer[at++] = (length & 0x7f) | 0x80;
  buffer[at++] = length;
  return at;
}

class Client {
  /** Set by CONNECT; null until then. */
  clientId: string | null = null;
  readonly filters = new Set<string>();
  will: { body: Buffer; topicEnd: number; will: Will } | null = null;
  /** The last packet id used for a QoS 1 PUBLISH to this client. */
  packetId = 0;
  /** The connect timeout, then the keep-alive timer (null: keep-alive 0). */
  timer: NodeJS.Timeout | null = null;
  /** The writer's bytesWritten at the last sweep, and when it last moved (or nothing waited). */
  lastWritten = 0;
  progressAt = Date.now();
  closed = false;
  assembler: FrameAssembler | null = null;
  /**
   * Packets routed to this client this tick, not yet in its batch: bytes
   * [rangeStart, rangeEnd) of a shared block, held by a handle of the
   * client's own, put into the batch as one range before anything else is
   * (out()) or at the end of the tick.
   */
  range: SharedBuffer | null = null;
  rangeStart = 0;
  rangeEnd = 0;
  /** Its writer was ended (DISCONNECT, a refused CONNECT): nothing more is sent to it. */
  ending = false;

  constructor(
    readonly socket: net.Socket,
    readonly writer: SocketWriter,
  ) {}

  /** The client's batch, with its pending range put first: everything it is sent stays in order. */
  out(): Gatherer {
    if (this.range !== null) this.commit();
    return this.writer.batch();
  }

  /** Puts the pending range into the batch (by reference, the handle with it; no scratch, so it cannot fail). */
  commit(): void {
    const range = this.range!;
    this.range = null;
    if (this.socket.destroyed || this.ending) range.release();
    else this.writer.batch().putShared(range, this.rangeStart, this.rangeEnd - this.rangeStart);
  }

  /** Drops the pending range (the client is gone). */
  dropPending(): void {
    this.range?.release();
    this.range = null;
  }
}

export interface IobufBroker extends RunningBroker {
  pool: BufferPool;
}

class Broker {
  readonly pool: BufferPool;
  private readonly maxPacketSize: number;
  private readonly maxQueuedBytes: number;
  private readonly slowClientTimeoutMs: number;
  private readonly tree = new TopicTree<Client>();
  private readonly byId = new Map<string, Client>();
  readonly connections = new Set<Client>();
  private nextAnonymous = 0;
  private readonly outgoing: Outgoing;
  /** Clients given a range this tick (see Client.range), committed at the end of the tick. */
  private withRanges: Client[] = [];
  private tickScheduled = false;
  /**
   * The end of a tick that routed shared packets: every pending range goes into
   * its client's batch (before the writers flush: their ticks are scheduled
   * by these puts, so they run after this one), and the broker lets go of the block.
   */
  private readonly endTick = () => {
    this.tickScheduled = false;
    const clients = this.withRanges;
    this.withRanges = [];
    for (let i = 0; i < clients.length; i++) if (clients[i].range !== null) clients[i].commit();
    this.outgoing.endTick();
  };
  readonly counters = { published: 0, delivered: 0, dropped: 0, slowDisconnects: 0 };
  /** Read pauses of the connections that have closed. */
  private closedReadPauses = 0;
  readonly sweeper: NodeJS.Timeout;

  constructor(options: BrokerOptions) {
    this.pool = new BufferPool({ maxMemory: options.maxMemory ?? DEFAULTS.maxMemory });
    this.maxPacketSize = Math.min(options.maxPacketSize ?? DEFAULTS.maxPacketSize, Math.floor(this.pool.maxMemory / 4));
    this.maxQueuedBytes = options.maxQueuedBytes ?? DEFAULTS.maxQueuedBytes;
    this.slowClientTimeoutMs = options.slowClientTimeoutMs ?? DEFAULTS.slowClientTimeoutMs;
    this.sweeper = setInterval(() => this.sweep(), Math.min(1000, Math.ceil(this.slowClientTimeoutMs / 4))).unref();
    this.outgoing = new Outgoing(this.pool);
  }

  accept(socket: net.Socket): void {
    socket.setNoDelay(true);
    const writer = new SocketWriter(socket, {
      pool: this.pool,
      chunkSize: 32 * 1024,
      highWaterMark: this.maxQueuedBytes,
      onBudgetExhausted: 'throw',
    });
    const client = new Client(socket, writer);
    this.connections.add(client);
    client.assembler = new FrameAssembler({
      pool: this.pool,
      lengthPrefix: decodeFixedHeader,
      maxFrameSize: this.maxPacketSize,
      // Subscribers hold handles on a publisher's frames until their writes are
      // done; maxQueuedBytes bounds that per subscriber, and the budget bounds
      // it all. A held-bytes limit here would let one stalled subscriber stop a publisher.
      highWaterMark: Number.MAX_SAFE_INTEGER,
      onFrame: (frame) => this.packet(client, frame),
      onError: () => {}, // a malformed stream or a reset: the socket is destroyed, 'close' cleans up
    }).attach(socket);
    socket.on('close', () => this.disconnected(client));
    client.timer = setTimeout(expire, CONNECT_TIMEOUT_MS, client);
  }

  // -------------------------------------------------------------------------
  // Packets from a client
  // -------------------------------------------------------------------------

  private packet(client: Client, frame: Frame): void {
    const tag = frame.tag; // the packet's first byte: type << 4 | flags
    const type = tag >> 4;
    client.timer?.refresh();
    if (!validFlags(type, tag & 0x0f) || (client.clientId === null) !== (type === CONNECT)) {
      frame.release();
      client.socket.destroy(); // malformed, or CONNECT not first / not once
      return;
    }
    try {
      if (type === PUBLISH) {
        this.publish(client, tag, frame); // takes the frame over
        return;
      }
      const out = client.out();
      switch (type) {
        case CONNECT:
          this.connect(client, frame.data, out);
          break;
        case SUBSCRIBE:
          this.subscribe(client, frame.data, out);
          break;
        case UNSUBSCRIBE: {
          const { packetId, filters } = parseUnsubscribe(frame.data);
          for (const filter of filters) if (client.filters.delete(filter)) this.tree.unsubscribe(client, filter);
          out
            .putU8(UNSUBACK << 4)
            .putU8(2)
            .putU16BE(packetId);
          break;
        }
        case PINGREQ:
          out.putU8(PINGRESP << 4).putU8(0);
          break;
        case PUBACK:
          break; // every session is clean: nothing to redeliver, nothing to forget
        case DISCONNECT:
          client.will = null; // a clean disconnect: no will
          client.ending = true;
          void client.writer.end().catch(() => {});
          break;
        default:
          throw new ProtocolError(`packet type ${type} is not supported`);
      }
      frame.release();
    } catch (error) {
      if (!(error instanceof ProtocolError) && (error as { code?: string }).code !== 'ERR_IOBUF_BUDGET_EXHAUSTED') throw error;
      if (type !== PUBLISH) frame.release();
      client.socket.destroy();
    }
  }

  private connect(client: Client, body: Buffer, out: Gatherer): void {
    const connect = parseConnect(body);
    out
      .putU8(CONNACK << 4)
      .putU8(2)
      .putU8(0)
      .putU8(connect.returnCode); // session present: never
    if (connect.returnCode !== ACCEPTED) {
      client.ending = true;
      void client.writer.end().catch(() => {});
      return;
    }
    const clientId = connect.clientId.length > 0 ? connect.clientId : `iobuf-${++this.nextAnonymous}`;
    this.byId.get(clientId)?.socket.destroy(); // a second connection with the same id takes over
    this.byId.set(clientId, client);
    client.clientId = clientId;
    client.will = connect.will === null ? null : { ...willBody(connect.will), will: connect.will };
    clearTimeout(client.timer!);
    client.timer = connect.keepAlive > 0 ? setTimeout(expire, connect.keepAlive * 1500, client) : null;
  }

  private subscribe(client: Client, body: Buffer, out: Gatherer): void {
    const { packetId, filters } = parseSubscribe(body);
    out
      .putU8(SUBACK << 4)
      .putVarint(2 + filters.length)
      .putU16BE(packetId);
    for (const { filter, qos } of filters) {
      if (!validTopicFilter(filter)) {
        out.putU8(SUBSCRIBE_FAILURE);
        continue;
      }
      const granted = Math.min(qos, MAX_QOS);
      this.tree.subscribe(client, filter, granted);
      client.filters.add(filter);
      out.putU8(granted);
    }
  }

  /** A PUBLISH from `client`: route it, acknowledge QoS 1, let go of the frame. */
  private publish(client: Client, tag: number, frame: Frame): void {
    const data = frame.data;
    const qos = (tag >> 1) & 0x03;
    const topicEnd = data.length >= 2 ? 2 + ((data[0] << 8) | data[1]) : Infinity;
    if (qos === 2 || topicEnd + (qos > 0 ? 2 : 0) > data.length) {
      frame.release();
      throw new ProtocolError(qos === 2 ? 'QoS 2 is not supported' : 'PUBLISH too short');
    }
    const topic = data.toString('latin1', 2, topicEnd);
    if (!validTopicName(topic)) {
      frame.release();
      throw new ProtocolError('invalid topic name');
    }
    try {
      this.route(topic, qos, data, topicEnd, frame);
      if (qos === 1)
        client
          .out()
          .putU8(PUBACK << 4)
          .putU8(2)
          .putU16BE((data[topicEnd] << 8) | data[topicEnd + 1]);
    } finally {
      frame.release(); // the subscribers that refer to its bytes hold handles of their own
    }
  }

  // -------------------------------------------------------------------------
  // Fan-out
  // -------------------------------------------------------------------------

  /**
   * Queues a PUBLISH body (`data`: topic, packet id for QoS 1, payload) to
   * every subscriber of `topic`. `frame` holds `data` (null: a heap Buffer,
   * e.g. a will); the caller keeps its own handle on it.
   */
  private route(topic: string, qos: number, data: Buffer, topicEnd: number, frame: Frame | null): void {
    this.counters.published++;
    const routes = this.tree.match(topic);
    if (routes.length === 0) return;
    const message = this.outgoing;
    message.start(qos, data, topicEnd, frame);
    for (let i = 0; i < routes.length; i++) {
      const route = routes[i];
      this.deliver(route.client, route.qos < qos ? route.qos : qos, message);
    }
    if (message.block0 !== null && !this.tickScheduled) {
      this.tickScheduled = true;
      process.nextTick(this.endTick);
    }
    message.end();
  }

  private deliver(to: Client, qos: number, message: Outgoing): void {
    if (to.socket.destroyed || to.ending) return; // leaving: its 'close' (and leaving the tree) still to come
    // The Remaining Length: the received body, less the packet id when it goes out at QoS 0.
    const length = qos === message.qos ? message.data.length : message.data.length - 2;
    const writer = to.writer;
    const queued = writer.queuedBytes + (to.range === null ? 0 : to.rangeEnd - to.rangeStart);
    if (queued > 0 && queued + length > this.maxQueuedBytes) {
      this.overQueued(to, qos);
      return;
    }
    let prefix: Buffer;
    let bodyAt: number;
    if (qos === 0) {
      if (message.prefix0 === null) message.stageQos0();
      const block = message.block0;
      if (block !== null) {
        // The packet every QoS 0 subscriber gets, by reference to the tick's block:
        // it extends the client's pending range when it follows it there.
        // (A range's handle keeps its block out of the pool: the same data is the same block.)
        if (to.range !== null && to.range.data === block.data && to.rangeEnd === message.start0) {
          to.rangeEnd = message.end0;
        } else {
          if (to.range !== null) to.commit();
          else this.withRanges.push(to);
          to.range = block.retain();
          to.rangeStart = message.start0;
          to.rangeEnd = message.end0;
        }
        this.counters.delivered++;
        return;
      }
      if (message.noMemory0) {
        this.overQueued(to, qos);
        return;
      }
      prefix = message.prefix0!;
      bodyAt = message.bodyAt0;
    } else {
      if (message.prefix1 === null) message.stageQos1();
      prefix = message.prefix1!;
      bodyAt = message.bodyAt1;
      to.packetId = to.packetId === 0xffff ? 1 : to.packetId + 1;
      prefix[message.idAt] = to.packetId >> 8;
      prefix[message.idAt + 1] = to.packetId & 0xff;
    }
    const out = to.out();
    try {
      out.putSlice(prefix); // one put: it takes its scratch whole, or throws having written nothing
    } catch (error) {
      if ((error as { code?: string }).code !== 'ERR_IOBUF_BUDGET_EXHAUSTED') throw error;
      this.overQueued(to, qos);
      return;
    }
    if (bodyAt >= 0) {
      // The rest of the received bytes by reference: no scratch, nothing left to fail.
      const frame = message.frame;
      if (frame !== null)
        out.putShared(frame.retain(), bodyAt); // released after this subscriber's write
      else out.putBytes(message.data.subarray(bodyAt)); // a will: a heap Buffer nobody changes
    }
    this.counters.delivered++;
  }

  /** Rules 1 and 3: no room for a message to `to`. */
  private overQueued(to: Client, qos: number): void {
    if (qos === 0) {
      this.counters.dropped++;
      return;
    }
    this.counters.slowDisconnects++;
    to.socket.destroy();
  }

  /** Rule 2, every second or so: a client whose socket has taken nothing of what waits for slowClientTimeoutMs goes. */
  private sweep(): void {
    const now = Date.now();
    for (const client of this.connections) {
      const written = client.writer.bytesWritten;
      if (client.writer.queuedBytes === 0 || written !== client.lastWritten) {
        client.lastWritten = written;
        client.progressAt = now;
      } else if (now - client.progressAt >= this.slowClientTimeoutMs) {
        this.counters.slowDisconnects++;
        client.socket.destroy();
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
    this.closedReadPauses += client.assembler!.stats().pauses;
    if (client.timer !== null) clearTimeout(client.timer);
    client.dropPending();
    for (const filter of client.filters) this.tree.unsubscribe(client, filter);
    client.filters.clear();
    if (client.clientId !== null && this.byId.get(client.clientId) === client) this.byId.delete(client.clientId);
    const will = client.will;
    client.will = null;
    if (will !== null) this.route(will.will.topic, will.will.qos, will.body, will.topicEnd, null);
  }

  stats(): BrokerStats {
    let readPauses = this.closedReadPauses;
    for (const client of this.connections) readPauses += client.assembler!.stats().pauses;
    return { connections: this.connections.size, ...this.counters, readPauses };
  }
}

/** The connect timeout or the keep-alive ran out (1.5 × keep-alive since the last packet, 3.1.2.10). */
function expire(client: Client): void {
  client.socket.destroy();
}

/** Starts a broker; `port` 0 picks a free one. */
export async function startBroker(options: BrokerOptions = {}): Promise<IobufBroker> {
  const broker = new Broker(options);
  // pauseOnConnect: nothing is read before the assembler takes the socket over.
  const server = net.createServer({ pauseOnConnect: true }, (socket) => broker.accept(socket));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 1883, options.host ?? '127.0.0.1', resolve);
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    pool: broker.pool,
    stats: () => broker.stats(),
    close: async () => {
      clearInterval(broker.sweeper);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const client of broker.connections) client.socket.destroy();
      await closed;
      await broker.pool.close({ timeout: 5000 }).catch(() => broker.pool.close({ force: true }));
    },
  };
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === __filename) {
  const { port, host } = listenAddress(process.argv);
  void startBroker({ port, host }).then((broker) => {
    console.log(`mqtt-broker (iobuf) listening on ${host}:${broker.port}`);
    process.once('SIGTERM', () => void broker.close().then(() => process.exit(0)));
  });
}
