// What both example brokers share (broker.ts on iobuf, broker-plain.ts in
// plain Node): MQTT 3.1.1's packet types, the parsing of the packets that are
// not on the hot path (CONNECT, SUBSCRIBE, UNSUBSCRIBE), and the subscription
// tree that routes a PUBLISH. Sharing them keeps the comparison about moving
// bytes, not about two ways of matching topics.
//
// Wire format (MQTT 3.1.1, section 2): every packet starts with a fixed
// header, one byte of type (high nibble) and flags (low nibble), then the
// Remaining Length, a varint of 1 to 4 bytes (7 bits a byte, least
// significant first, high bit = more), then that many bytes. Strings are a
// u16be byte length and UTF-8 bytes.
//
// Topic names and filters are handled as latin1 strings of their raw bytes:
// one character per byte, so '/' '+' '#' (ASCII) split and match exactly as
// the UTF-8 bytes would, without decoding.

export const CONNECT = 1;
export const CONNACK = 2;
export const PUBLISH = 3;
export const PUBACK = 4;
export const PUBREC = 5;
export const PUBREL = 6;
export const PUBCOMP = 7;
export const SUBSCRIBE = 8;
export const SUBACK = 9;
export const UNSUBSCRIBE = 10;
export const UNSUBACK = 11;
export const PINGREQ = 12;
export const PINGRESP = 13;
export const DISCONNECT = 14;

/** CONNACK return codes. */
export const ACCEPTED = 0;
export const UNACCEPTABLE_PROTOCOL_VERSION = 1;
export const IDENTIFIER_REJECTED = 2;

/** SUBACK return code for a filter the broker refuses. */
export const SUBSCRIBE_FAILURE = 0x80;

/** The highest QoS this broker grants (QoS 2 is not supported). */
export const MAX_QOS = 1;

/** The largest Remaining Length MQTT can express (4 varint bytes). */
export const MAX_REMAINING_LENGTH = 268_435_455;

/** A client has this long to send CONNECT after its TCP connection is up. */
export const CONNECT_TIMEOUT_MS = 10_000;

/** The flags nibble each packet type must carry (section 2.2.2); PUBLISH's flags are its own. */
export function validFlags(type: number, flags: number): boolean {
  if (type === PUBLISH) return (flags & 0b0110) !== 0b0110; // QoS 3 is malformed
  if (type === SUBSCRIBE || type === UNSUBSCRIBE || type === PUBREL) return flags === 0b0010;
  return flags === 0;
}

// ---------------------------------------------------------------------------
// The fixed header, as a FrameAssembler length decoder
// ---------------------------------------------------------------------------

export interface FixedHeader {
  headerLength: number;
  payloadLength: number;
  /** The packet's first byte: type << 4 | flags. */
  tag: number;
}

// One result object, reused: the assembler reads its fields before it calls
// the decoder again.
const decoded: FixedHeader = { headerLength: 0, payloadLength: 0, tag: 0 };

/**
 * Reads a fixed header at bytes[start] (the assembler shows it bytes[start]
 * to bytes[end - 1]): null while its Remaining Length is incomplete; throws
 * for one longer than 4 bytes (the assembler reports that as
 * ERR_IOBUF_FRAME_INVALID). The tag, the packet's first byte, reaches the
 * consumer as frame.tag.
 */
export function decodeFixedHeader(bytes: Buffer, start: number, end: number): FixedHeader | null {
  let length = 0;
  let scale = 1;
  for (let i = 1; i < 5; i++) {
    if (start + i >= end) return null;
    const byte = bytes[start + i];
    length += (byte & 0x7f) * scale;
    if (byte < 0x80) {
      decoded.headerLength = i + 1;
      decoded.payloadLength = length;
      decoded.tag = bytes[start];
      return decoded;
    }
    scale *= 128;
  }
  throw new Error('the Remaining Length runs past 4 bytes');
}

/** Bytes of `length` as a Remaining Length varint. */
export function varintLength(length: number): number {
  return length < 0x80 ? 1 : length < 0x4000 ? 2 : length < 0x200000 ? 3 : 4;
}

// ---------------------------------------------------------------------------
// Packets off the hot path
// ---------------------------------------------------------------------------

export class ProtocolError extends Error {}

/** Reads the UTF-8 strings and u16 fields of a packet body, throwing ProtocolError past its end. */
class Reader {
  at = 0;
  constructor(readonly bytes: Buffer) {}

  get left(): number {
    return this.bytes.length - this.at;
  }

  u8(): number {
    if (this.at + 1 > this.bytes.length) throw new ProtocolError('packet too short');
    return this.bytes[this.at++];
  }

  u16(): number {
    if (this.at + 2 > this.bytes.length) throw new ProtocolError('packet too short');
    const value = this.bytes.readUInt16BE(this.at);
    this.at += 2;
    return value;
  }

  /** A u16-prefixed byte string. */
  binary(): Buffer {
    const length = this.u16();
    if (this.at + length > this.bytes.length) throw new ProtocolError('string past the end of the packet');
    const value = this.bytes.subarray(this.at, this.at + length);
    this.at += length;
    return value;
  }

  /** A u16-prefixed string as latin1 (its raw bytes, one character each). */
  raw(): string {
    return this.binary().toString('latin1');
  }
}

export interface Will {
  /** latin1, like every topic here. */
  topic: string;
  payload: Buffer;
  qos: number;
}

export interface ConnectPacket {
  /** The CONNACK return code to answer with (ACCEPTED, or why not). */
  returnCode: number;
  clientId: string;
  cleanSession: boolean;
  /** Seconds; 0 turns the keep-alive off. */
  keepAlive: number;
  will: Will | null;
}

/** Parses a CONNECT body (section 3.1). Throws ProtocolError for a malformed one. */
export function parseConnect(body: Buffer): ConnectPacket {
  const reader = new Reader(body);
  const protocol = reader.raw();
  const level = reader.u8();
  const flags = reader.u8();
  const keepAlive = reader.u16();
  if ((flags & 0x01) !== 0) throw new ProtocolError('reserved CONNECT flag set');
  const cleanSession = (flags & 0x02) !== 0;
  const clientId = reader.raw();
  let will: Will | null = null;
  if ((flags & 0x04) !== 0) {
    const topic = reader.raw();
    const payload = Buffer.from(reader.binary()); // a copy: the CONNECT's memory goes back now
    const qos = (flags >> 3) & 0x03;
    if (qos === 3 || !validTopicName(topic)) throw new ProtocolError('malformed will');
    will = { topic, payload, qos: Math.min(qos, MAX_QOS) };
  } else if ((flags & 0x38) !== 0) {
    throw new ProtocolError('will QoS or retain without a will');
  }
  if ((flags & 0x80) !== 0) reader.binary(); // user name: accepted, not checked
  if ((flags & 0x40) !== 0) reader.binary(); // password
  let returnCode = ACCEPTED;
  if (!((protocol === 'MQTT' && level === 4) || (protocol === 'MQIsdp' && level === 3))) returnCode = UNACCEPTABLE_PROTOCOL_VERSION;
  else if (clientId.length === 0 && !cleanSession) returnCode = IDENTIFIER_REJECTED;
  return { returnCode, clientId, cleanSession, keepAlive, will };
}

export interface SubscribePacket {
  packetId: number;
  filters: Array<{ filter: string; qos: number }>;
}

/** Parses a SUBSCRIBE body (section 3.8). */
export function parseSubscribe(body: Buffer): SubscribePacket {
  const reader = new Reader(body);
  const packetId = reader.u16();
  const filters: SubscribePacket['filters'] = [];
  while (reader.left > 0) {
    const filter = reader.raw();
    const qos = reader.u8();
    if (qos > 2) throw new ProtocolError('SUBSCRIBE QoS above 2');
    filters.push({ filter, qos });
  }
  if (filters.length === 0) throw new ProtocolError('SUBSCRIBE without a filter');
  return { packetId, filters };
}

/** Parses an UNSUBSCRIBE body (section 3.10). */
export function parseUnsubscribe(body: Buffer): { packetId: number; filters: string[] } {
  const reader = new Reader(body);
  const packetId = reader.u16();
  const filters: string[] = [];
  while (reader.left > 0) filters.push(reader.raw());
  if (filters.length === 0) throw new ProtocolError('UNSUBSCRIBE without a filter');
  return { packetId, filters };
}

/** A PUBLISH topic name: not empty, no wildcard, no NUL (section 4.7.3). */
export function validTopicName(topic: string): boolean {
  return topic.length > 0 && !/[+#\0]/.test(topic);
}

/** A topic filter: '+' and '#' only as whole levels, '#' only last (section 4.7.1). */
export function validTopicFilter(filter: string): boolean {
  if (filter.length === 0 || filter.includes('\0')) return false;
  const levels = filter.split('/');
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i];
    if (level.length > 1 && (level.includes('+') || level.includes('#'))) return false;
    if (level === '#' && i !== levels.length - 1) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Subscriptions
// ---------------------------------------------------------------------------

/** One subscriber of a topic, with the QoS granted to it. */
export interface Route<C> {
  client: C;
  qos: number;
}

class Level<C> {
  readonly children = new Map<string, Level<C>>();
  /** Clients whose filter ends at this level, with their QoS. */
  readonly subscribers = new Map<C, number>();
}

/**
 * A tree of topic filters, one level per node ('+' and '#' are children like
 * any other level). match() walks it for a topic and caches the result per
 * topic until the subscriptions change: a broker's publishers use a few
 * topics over and over.
 */
export class TopicTree<C> {
  private readonly root = new Level<C>();
  private readonly cache = new Map<string, Route<C>[]>();
  private static readonly CACHE_LIMIT = 10_000;

  /** Adds (or updates the QoS of) `client`'s subscription to `filter` (a valid filter). */
  subscribe(client: C, filter: string, qos: number): void {
    let level = this.root;
    for (const name of filter.split('/')) {
      let child = level.children.get(name);
      if (child === undefined) level.children.set(name, (child = new Level<C>()));
      level = child;
    }
    level.subscribers.set(client, qos);
    this.cache.clear();
  }

  /** Removes `client`'s subscription to `filter`; false if it had none. */
  unsubscribe(client: C, filter: string): boolean {
    const path: Array<[Level<C>, string]> = [];
    let level = this.root;
    for (const name of filter.split('/')) {
      const child = level.children.get(name);
      if (child === undefined) return false;
      path.push([level, name]);
      level = child;
    }
    if (!level.subscribers.delete(client)) return false;
    // Prune levels nothing hangs from any more.
    for (let i = path.length - 1; i >= 0; i--) {
      const [parent, name] = path[i];
      const child = parent.children.get(name)!;
      if (child.subscribers.size > 0 || child.children.size > 0) break;
      parent.children.delete(name);
    }
    this.cache.clear();
    return true;
  }

  /**
   * Every client with a filter matching `topic`, once each, with the highest
   * QoS among its matching filters (section 3.3.5). Wildcards at the first
   * level do not match topics starting with '$' (section 4.7.2). The array is
   * shared (cached): do not change it.
   */
  match(topic: string): readonly Route<C>[] {
    const cached = this.cache.get(topic);
    if (cached !== undefined) return cached;
    const found = new Map<C, number>();
    this.collect(this.root, topic.split('/'), 0, topic.startsWith('$'), found);
    const routes = Array.from(found, ([client, qos]) => ({ client, qos }));
    if (this.cache.size >= TopicTree.CACHE_LIMIT) this.cache.clear();
    this.cache.set(topic, routes);
    return routes;
  }

  private collect(level: Level<C>, names: string[], depth: number, system: boolean, found: Map<C, number>): void {
    const wildcards = !(system && depth === 0);
    const multi = wildcards ? level.children.get('#') : undefined;
    if (multi !== undefined) add(found, multi.subscribers); // 'a/#' matches 'a/b/c' and 'a' itself
    if (depth === names.length) {
      add(found, level.subscribers);
      return;
    }
    const exact = level.children.get(names[depth]);
    if (exact !== undefined) this.collect(exact, names, depth + 1, system, found);
    const single = wildcards ? level.children.get('+') : undefined;
    if (single !== undefined) this.collect(single, names, depth + 1, system, found);
  }
}

function add<C>(found: Map<C, number>, subscribers: Map<C, number>): void {
  for (const [client, qos] of subscribers) {
    const known = found.get(client);
    if (known === undefined || qos > known) found.set(client, qos);
  }
}

// ---------------------------------------------------------------------------
// What both brokers offer
// ---------------------------------------------------------------------------

export interface BrokerOptions {
  /** Default 1883; 0 picks a free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** The iobuf broker's pool budget: every byte it holds for packets, in and out. Default 256 MiB. */
  maxMemory?: number;
  /** The largest packet (Remaining Length) accepted; a larger one closes the connection. Default 16 MiB. */
  maxPacketSize?: number;
  /**
   * Bytes that may wait to be sent to one client (one packet of any size
   * may go to a client with nothing waiting). A QoS 0 message that would go
   * past it is dropped for that client; a QoS 1 message closes the client's
   * connection. Default 4 MiB.
   */
  maxQueuedBytes?: number;
  /** A client that keeps dropping QoS 0 messages (over maxQueuedBytes) for this long is disconnected. Default 10 s. */
  slowClientTimeoutMs?: number;
}

export interface BrokerStats {
  /** Open connections. */
  connections: number;
  /** PUBLISH packets received (wills included). */
  published: number;
  /** PUBLISH packets queued to subscribers. */
  delivered: number;
  /** QoS 0 messages not sent to a subscriber that was over maxQueuedBytes. */
  dropped: number;
  /** Connections closed because they did not keep up (or, on iobuf, because the budget was spent). */
  slowDisconnects: number;
  /** iobuf: times a client was not read from because the pool had no memory for its packet. */
  readPauses?: number;
}

export interface RunningBroker {
  port: number;
  stats(): BrokerStats;
  /** Closes every connection and stops listening. */
  close(): Promise<void>;
}

export const DEFAULTS = {
  maxMemory: 256 * 1024 * 1024,
  maxPacketSize: 16 * 1024 * 1024,
  maxQueuedBytes: 4 * 1024 * 1024,
  slowClientTimeoutMs: 10_000,
};

/**
 * A will as the body of the PUBLISH that carries it (topic, a packet id slot
 * for QoS 1, payload): the brokers route it like a received one.
 */
export function willBody(will: Will): { body: Buffer; topicEnd: number } {
  const topic = Buffer.from(will.topic, 'latin1');
  const body = Buffer.alloc(2 + topic.length + (will.qos > 0 ? 2 : 0) + will.payload.length);
  body.writeUInt16BE(topic.length, 0);
  topic.copy(body, 2);
  will.payload.copy(body, body.length - will.payload.length);
  return { body, topicEnd: 2 + topic.length };
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

/** `--port N` (default 1883; 0 picks one) and `--host H` (default 127.0.0.1). */
export function listenAddress(argv: string[]): { port: number; host: string } {
  const value = (name: string) => {
    const index = argv.indexOf(name);
    return index >= 0 ? argv[index + 1] : undefined;
  };
  return { port: Number(value('--port') ?? 1883), host: value('--host') ?? '127.0.0.1' };
}
