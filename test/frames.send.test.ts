// The send side and the example server: frames put into a Gatherer with
// encodeFrame / beginFrame+endFrame, written in one writev, read back by a
// FrameAssembler over a real socket; and examples/rpc-server.ts answering
// echo and "give me n bytes" requests, with its pool back to 0 afterwards.
import { describe, expect, it } from 'vitest';
import { FrameAssembler, Gatherer, beginFrame, encodeFrame, endFrame } from '../lib/index';
import type { LengthPrefix } from '../lib/index';
import { startServer } from '../examples/rpc-server';
import { expectCode, thrown, usePools } from './fixtures/pool-helpers';
import { KiB, MiB, closeOf, closeServer, connect, encodeStream, listen, makePayloads } from './fixtures/frames-helpers';

const pools = usePools();
const makePool = (maxMemory = 64 * MiB) => pools({ maxMemory });

function bytesOf(gatherer: Gatherer): Buffer {
  return Buffer.concat(gatherer.segments());
}

describe('encodeFrame, beginFrame, endFrame', () => {
  it('encode exactly what the reference encoder writes, for every prefix', () => {
    const pool = makePool();
    const payloads = [Buffer.alloc(0), Buffer.from('hi'), Buffer.alloc(200, 3), Buffer.alloc(5000, 4)];
    for (const prefix of ['u8', 'u16be', 'u16le', 'u32be', 'u32le', 'varint'] as LengthPrefix[]) {
      const gatherer = new Gatherer({ pool });
      const fitting = prefix === 'u8' ? payloads.slice(0, 3) : payloads;
      for (const payload of fitting) encodeFrame(gatherer, payload, { lengthPrefix: prefix });
      expect(bytesOf(gatherer).equals(encodeStream(prefix, fitting)), prefix).toBe(true);
      gatherer.reset();
    }
    const gatherer = new Gatherer({ pool });
    // Several parts make one payload; the large one goes by reference (not copied).
    const large = Buffer.alloc(4096, 9);
    encodeFrame(gatherer, [Buffer.from([1, 2]), large]);
    expect(bytesOf(gatherer).equals(encodeStream('u32be', [Buffer.concat([Buffer.from([1, 2]), large])]))).toBe(true);
    expect(gatherer.segments().some((segment) => segment.buffer === large.buffer)).toBe(true);
    gatherer.reset();
    for (const prefix of ['u8', 'u16be', 'u16le', 'u32be', 'u32le'] as const) {
      const at = beginFrame(gatherer, prefix);
      gatherer.putU8(7).putBytes(Buffer.alloc(100, 1));
      endFrame(gatherer, at, prefix);
    }
    expect(
      bytesOf(gatherer).equals(
        Buffer.concat(
          (['u8', 'u16be', 'u16le', 'u32be', 'u32le'] as const).map((prefix) =>
            encodeStream(prefix, [Buffer.concat([Buffer.from([7]), Buffer.alloc(100, 1)])]),
          ),
        ),
      ),
    ).toBe(true);
    gatherer.reset();
    expect(pool.stats().inUse).toBe(0);
  });

  it('refuse a payload the prefix cannot express, and what is not a gatherer', () => {
    const pool = makePool();
    const gatherer = new Gatherer({ pool });
    const error = thrown(() => encodeFrame(gatherer, Buffer.alloc(256), { lengthPrefix: 'u8' }));
    expectCode(error, 'RangeError', 'ERR_OUT_OF_RANGE');
    expect(error.message).toBe("Expected a payload of at most 255 bytes for a 'u8' length prefix but received 256 bytes");
    expect(gatherer.byteLength).toBe(0);
    const at = beginFrame(gatherer, 'u8');
    gatherer.putBytes(Buffer.alloc(300));
    expectCode(
      thrown(() => endFrame(gatherer, at, 'u8')),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    // A position that is not one beginFrame could have returned.
    const bigint = thrown(() => endFrame(gatherer, 10n as unknown as number));
    expectCode(bigint, 'TypeError', 'ERR_INVALID_ARG_TYPE');
    expect(bigint.message).toBe('Expected an integer for position but received 10n');
    expectCode(
      thrown(() => endFrame(gatherer, '0' as unknown as number)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    for (const position of [-1, 1.5, 298, 1e9]) {
      const error = thrown(() => endFrame(gatherer, position));
      expectCode(error, 'RangeError', 'ERR_OUT_OF_RANGE');
      expect(error.message).toBe(`Expected an integer from 0 to 297 for position but received ${position}`);
    }
    expectCode(
      thrown(() => encodeFrame({} as Gatherer, Buffer.alloc(1))),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    expectCode(
      thrown(() => encodeFrame(gatherer, 'text' as unknown as Buffer)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    gatherer.reset();
  });

  it('round trip: frames gathered, one writeTo(), a FrameAssembler on the other end gets them all', async () => {
    const pool = makePool();
    const payloads = makePayloads(200, (i) => (i * 997) % (100 * KiB));
    const received: Buffer[] = [];
    let assembler!: FrameAssembler;
    let closed!: Promise<void>;
    const { server, port } = await listen((socket) => {
      assembler = new FrameAssembler({
        pool,
        lengthPrefix: 'varint',
        onFrame: (frame) => {
          received.push(Buffer.from(frame.data));
          frame.release();
        },
      }).attach(socket);
      closed = closeOf(assembler);
    });
    const client = await connect(port);
    const gatherer = new Gatherer({ pool });
    for (const payload of payloads) encodeFrame(gatherer, payload, { lengthPrefix: 'varint' });
    await gatherer.writeTo(client);
    client.end();
    while (closed === undefined) await new Promise((resolve) => setImmediate(resolve));
    await closed;
    await closeServer(server);
    expect(received.map((b) => b.length)).toEqual(payloads.map((b) => b.length));
    expect(Buffer.concat(received).equals(Buffer.concat(payloads))).toBe(true);
    expect(pool.stats().inUse).toBe(0);
  });
});

describe('examples/rpc-server.ts', () => {
  it('answers echo and "give me n bytes" requests, pipelined, in order; its pool is back to 0 when the client leaves', async () => {
    const server = await startServer(0);
    const pool = makePool();
    const assembler = new FrameAssembler({ pool });
    const client = await connect(server.port, assembler.socketOptions());
    assembler.attach(client);
    const request = (op: number, id: number, body: Buffer) => {
      const head = Buffer.alloc(5);
      head[0] = op;
      head.writeUInt32BE(id, 1);
      return encodeStream('u32be', [Buffer.concat([head, body])]);
    };
    const sizes = [0, 1, 100, 4096, 4097, 70000, 1 * MiB];
    const bodies = sizes.map((size, i) => Buffer.alloc(size, i + 1));
    client.write(
      Buffer.concat([
        ...bodies.map((body, i) => request(1, i, body)),
        request(2, 100, Buffer.from([0, 0, 0x10, 0])), // give me 4096 bytes
        request(2, 101, Buffer.from([0, 0, 0, 0])),
      ]),
    );
    const responses: Array<{ op: number; id: number; body: Buffer }> = [];
    for await (const frame of assembler) {
      responses.push({ op: frame.data[0], id: frame.data.readUInt32BE(1), body: Buffer.from(frame.data.subarray(5)) });
      frame.release();
      if (responses.length === sizes.length + 2) break;
    }
    expect(responses.map((r) => [r.op, r.id])).toEqual([...sizes.map((_, i) => [1, i]), [2, 100], [2, 101]]);
    responses.slice(0, sizes.length).forEach((r, i) => expect(r.body.equals(bodies[i]), `echo ${sizes[i]}`).toBe(true));
    expect(responses[sizes.length].body.equals(Buffer.from(Array.from({ length: 4096 }, (_, i) => i & 0xff)))).toBe(true);
    expect(responses[sizes.length + 1].body.length).toBe(0);
    // Leaving the loop destroyed the client; the server's connection ends and gives everything back.
    for (let i = 0; i < 200 && server.pool.stats().inUse > 0; i++) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(server.pool.stats().inUse).toBe(0);
    expect(pool.stats().inUse).toBe(0);
    await server.close();
  });

  it('drops a connection that sends a malformed request, and gives its memory back', async () => {
    const server = await startServer(0);
    const client = await connect(server.port);
    client.on('error', () => {});
    client.write(Buffer.concat([encodeStream('u32be', [Buffer.from([9, 0, 0, 0, 1])])]));
    await closeOf(client);
    for (let i = 0; i < 200 && server.pool.stats().inUse > 0; i++) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(server.pool.stats().inUse).toBe(0);
    await server.close();
  });
});
