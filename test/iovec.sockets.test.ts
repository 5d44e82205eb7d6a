// Sockets: a loopback TCP pair. 1,000 random scatter/gather layouts (pooled
// and plain buffers, empty pieces, offsets) give the same bytes as one
// contiguous write or read. The fds are libuv's own (non-blocking); the
// accepted side is created paused, so libuv never reads from it.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BufferPool, IoVecArray, readv, readvSync, writevAll, writevAllSync } from '../lib/index';
import { MiB, thrown } from './fixtures/pool-helpers';
import { random, randomSplit } from './fixtures/iovec-helpers';

let server: net.Server;
let client: net.Socket;
let accepted: net.Socket;
let writer = -1;
let reader = -1;

const fdOf = (socket: net.Socket) => (socket as unknown as { _handle: { fd: number } })._handle.fd;

beforeAll(async () => {
  server = net.createServer({ pauseOnConnect: true });
  const connection = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  client = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve) => client.once('connect', () => resolve()));
  accepted = await connection;
  writer = fdOf(client);
  reader = fdOf(accepted);
  expect(writer).toBeGreaterThan(2);
  expect(reader).toBeGreaterThan(2);
});

afterAll(async () => {
  client.destroy();
  accepted.destroy();
  await new Promise((resolve) => server.close(resolve));
});

/** Retries `op` while the non-blocking socket says EAGAIN (loopback data arrives at once; a few spins at most). */
function retry<T>(op: () => T): T {
  for (let spins = 0; ; spins++) {
    try {
      return op();
    } catch (error) {
      if ((error as { code?: string }).code !== 'EAGAIN' || spins > 1_000_000) throw error;
    }
  }
}

/** Reads exactly `length` bytes with plain fs.readSync calls into one contiguous buffer. */
function readContiguous(length: number): Buffer {
  const into = Buffer.alloc(length);
  let at = 0;
  while (at < length) at += retry(() => fs.readSync(reader, into, at, length - at, null));
  return into;
}

function writeContiguous(data: Buffer): void {
  let at = 0;
  while (at < data.length) at += retry(() => fs.writeSync(writer, data, at, data.length - at));
}

describe('loopback TCP', () => {
  it('1,000 random scatter/gather layouts give the same bytes as contiguous writes and reads', async () => {
    const pool = new BufferPool({ maxMemory: 16 * MiB });
    const next = random(0x5ca7);
    let layouts = 0;
    for (let round = 0; round < 1000; round++) {
      const total = next(5) === 0 ? next(64) : 1 + next(32 * 1024);
      const payload = randomBytes(total);
      const mode = round % 3; // 0: gather → contiguous, 1: contiguous → scatter, 2: gather → scatter
      const held: Buffer[] = [];
      const piece = (length: number): [Buffer, number] => {
        const pad = next(16);
        if (next(2) === 0) {
          const buffer = pool.tryAcquire(length + pad + 1)!;
          held.push(buffer);
          return [buffer, pad];
        }
        return [Buffer.alloc(length + pad), pad];
      };

      if (mode === 1) {
        writeContiguous(payload);
      } else {
        const lengths = randomSplit(next, total, 1 + next(40));
        const iov = new IoVecArray(lengths.length);
        let at = 0;
        for (const length of lengths) {
          const [buffer, pad] = piece(length);
          payload.copy(buffer, pad, at, at + length);
          iov.push(buffer, pad, length);
          at += length;
        }
        const written = round % 10 === 2 ? await writevAll(writer, iov) : writevAllSync(writer, iov);
        expect(written).toBe(total);
        expect(iov.length).toBe(0);
      }

      let received: Buffer;
      if (mode === 0) {
        received = readContiguous(total);
      } else {
        const lengths = randomSplit(next, total, 1 + next(40));
        const targets: Buffer[] = [];
        const iov = new IoVecArray(lengths.length);
        for (const length of lengths) {
          const [buffer, pad] = piece(length);
          targets.push(buffer.subarray(pad, pad + length));
          iov.push(buffer, pad, length);
        }
        // A read may stop short at a segment boundary: advance and read on.
        while (iov.byteLength > 0) {
          const got =
            round % 10 === 1
              ? await readv(reader, iov).catch((error) => (error.code === 'EAGAIN' ? 0 : Promise.reject(error)))
              : retry(() => readvSync(reader, iov));
          expect(got).toBeGreaterThanOrEqual(0);
          iov.advance(got);
        }
        received = Buffer.concat(targets);
      }
      expect(received.length).toBe(total);
      if (!received.equals(payload)) throw new Error(`layout ${round} (mode ${mode}, ${total} bytes) changed the bytes`);
      expect(pool.stats().inUse).toBe(held.length);
      for (const buffer of held) pool.release(buffer);
      layouts++;
    }
    expect(layouts).toBe(1000);
    expect(pool.stats().inUse).toBe(0);
    // Nothing left over in the socket.
    expect(thrown(() => readvSync(reader, IoVecArray.from([Buffer.alloc(1)]))).code).toBe('EAGAIN');
    await pool.close();
  });
});
