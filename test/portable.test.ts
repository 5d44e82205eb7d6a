// Portable mode (IOBUF_PORTABLE=1, or wherever the native addon does not
// load): what throws ERR_IOBUF_UNSUPPORTED and why, and what behaves
// differently on purpose — memory without addresses, free() by transfer,
// strict views with an ArrayBuffer per slot, a pool shared by workers over
// Atomics whose members give back what they hold when they exit, except a
// terminate()d one (the documented limit). scripts/run-tests.mjs runs this
// file in portable mode; in the native run only the first test runs.
import { once } from 'node:events';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import * as iobuf from '../lib/index';
import {
  BufferPool,
  FrameAssembler,
  Gatherer,
  IoRing,
  IoVecArray,
  addressOf,
  allocAligned,
  allocHuge,
  free,
  isAligned,
  pageKind,
} from '../lib/index';
import { KiB, PoolWorker, expectCode, rejection, thrown, until } from './fixtures/pool-helpers';
import { portable } from './helpers/portable';

function expectUnsupported(error: Error & { code?: string }, what: RegExp): void {
  expectCode(error, 'IobufError', 'ERR_IOBUF_UNSUPPORTED');
  expect(error.message).toMatch(/^Not supported in portable mode: /);
  expect(error.message).toMatch(what);
  expect(error.message).toMatch(/Portable mode because IOBUF_PORTABLE=1 is set$/);
}

describe('the mode', () => {
  it.skipIf(portable)('with the addon loaded: native is true and portableReason null', () => {
    expect(iobuf.native).toBe(true);
    expect(iobuf.portableReason).toBeNull();
  });

  it.skipIf(!portable)('with IOBUF_PORTABLE=1: native is false and portableReason says why', () => {
    expect(iobuf.native).toBe(false);
    expect(iobuf.portableReason).toBe('IOBUF_PORTABLE=1 is set');
    expect([iobuf.pageSize, iobuf.hugePageSize, iobuf.cacheLineSize]).toEqual([4096, 2 * 1024 * 1024, 64]);
  });
});

describe.skipIf(!portable)('portable mode: what throws ERR_IOBUF_UNSUPPORTED', () => {
  it('addressOf, isAligned and pageKind: no addresses in JavaScript', () => {
    const buffer = allocAligned(4096);
    for (const call of [() => addressOf(buffer), () => isAligned(buffer, 4096), () => pageKind(buffer)]) {
      expectUnsupported(thrown(call), /addressOf\(\), isAligned\(\) and pageKind\(\) \(JavaScript cannot see addresses\)/);
    }
  });

  it('allocAligned with lock, dontFork or dontDump: no mlock/madvise', () => {
    for (const option of ['lock', 'dontFork', 'dontDump']) {
      expectUnsupported(
        thrown(() => allocAligned(4096, { [option]: true })),
        new RegExp(`options\\.${option} \\(mlock and madvise`),
      );
    }
  });

  it("allocHuge unless fallback is 'normal'", () => {
    for (const fallback of [undefined, 'thp', 'none'] as const) {
      expectUnsupported(
        thrown(() => allocHuge(4096, fallback === undefined ? {} : { fallback })),
        /Huge pages \(hugetlbfs and transparent huge pages need the native addon; pass \{ fallback: 'normal' \}/,
      );
    }
    expectUnsupported(
      thrown(() => allocHuge(4096, { fallback: 'normal', lock: true })),
      /options\.lock/,
    );
  });

  it('IoVecArray and so every vectored call', () => {
    expectUnsupported(
      thrown(() => new IoVecArray(4)),
      /IoVecArray \(readv\/writev over native iovec arrays need the native addon\)/,
    );
    expectUnsupported(
      thrown(() => IoVecArray.from([Buffer.alloc(8)])),
      /IoVecArray/,
    );
  });

  it('Gatherer.writeToFd and writeToFdSync, which leave the gatherer as it was (writeTo(socket) still sends it)', async () => {
    const pool = new BufferPool();
    const gatherer = new Gatherer({ pool });
    gatherer.putU32BE(7).putBytes(Buffer.from('hello'));
    expectUnsupported(
      thrown(() => gatherer.writeToFdSync(1)),
      /writeToFd\(\) and writeToFdSync\(\) \(writev\(2\) needs the native addon; writeTo\(socket\) works\)/,
    );
    expectUnsupported(await rejection(gatherer.writeToFd(1)), /writeToFd\(\)/);
    expect(gatherer.byteLength).toBe(9);

    const server = net.createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const accepted = once(server, 'connection');
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    const [peer] = (await accepted) as [net.Socket];
    const chunks: Buffer[] = [];
    peer.on('data', (chunk: Buffer) => chunks.push(chunk));
    await gatherer.writeTo(client);
    await until(() => Buffer.concat(chunks).length === 9, 'the message to arrive');
    expect(Buffer.concat(chunks)).toEqual(Buffer.from([0, 0, 0, 7, ...Buffer.from('hello')]));
    expect(pool.stats().inUse).toBe(0);
    client.destroy();
    peer.destroy();
    server.close();
    await pool.close();
  });

  it('IoRing: supported() says why; the constructor throws', () => {
    const support = IoRing.supported();
    expect(support).toEqual({
      ok: false,
      code: 'ERR_IOBUF_UNSUPPORTED',
      reason: expect.stringMatching(/^Not supported in portable mode: io_uring \(io_uring is a Linux kernel interface/),
    });
    expectCode(
      thrown(() => new IoRing()),
      'IobufError',
      'ERR_IOBUF_UNSUPPORTED',
    );
  });

  it('BufferPool.registration(): io_uring registration', async () => {
    const pool = new BufferPool();
    pool.release(pool.tryAcquire(4096)!);
    expectUnsupported(
      thrown(() => pool.registration()),
      /madvise\(MADV_DONTFORK\)/,
    );
    expect(pool.fixedBufferOf(pool.tryAcquire(4096)!)).toBeNull();
    await pool.close({ force: true });
  });
});

describe.skipIf(!portable)('portable mode: what differs on purpose', () => {
  it('allocAligned: a zeroed Buffer that is its whole ArrayBuffer, for every alignment; arguments are checked as natively', () => {
    for (const alignment of [8, 64, 4096, 65536, 2 ** 21, 2 ** 30]) {
      const buffer = allocAligned(5000, { alignment, zero: false });
      expect([buffer.length, buffer.byteOffset, buffer.buffer.byteLength]).toEqual([5000, 0, 5000]);
      expect(buffer.every((byte) => byte === 0)).toBe(true);
      free(buffer);
    }
    expectCode(
      thrown(() => allocAligned(4096, { alignment: 3000 })),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => allocAligned(0)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
  });

  it('free() detaches by transfer: every view reads as empty; a second free and a foreign view are refused', () => {
    const buffer = allocAligned(4096);
    const other = new Uint8Array(buffer.buffer, 100, 10);
    buffer.fill(1);
    free(buffer);
    expect([buffer.length, other.length, buffer.buffer.byteLength]).toEqual([0, 0, 0]);
    expectCode(
      thrown(() => free(buffer)),
      'IobufError',
      'ERR_IOBUF_DOUBLE_FREE',
    );
    expectCode(
      thrown(() => free(Buffer.alloc(16))),
      'IobufError',
      'ERR_IOBUF_FOREIGN_BUFFER',
    );
    const huge = allocHuge(3 * 4096, { fallback: 'normal' });
    expect([huge.length, huge.byteOffset]).toEqual([3 * 4096, 0]);
    free(huge);
    expect(huge.length).toBe(0);
  });

  it('strict pool: a released view detaches; its bytes move to a new ArrayBuffer for the next owner', async () => {
    const pool = new BufferPool({ strict: true, sizeClasses: [4096], maxMemory: 4096 });
    const first = pool.tryAcquire(4096)!;
    const firstMemory = first.buffer;
    first.fill(0x5a);
    pool.release(first);
    expect([first.length, firstMemory.byteLength]).toEqual([0, 0]);
    expectCode(
      thrown(() => pool.release(first)),
      'IobufError',
      'ERR_IOBUF_DOUBLE_RELEASE',
    );
    const second = pool.tryAcquire(1000)!;
    expect(second.buffer).not.toBe(firstMemory);
    expect([second.length, second.buffer.byteLength]).toEqual([1000, 1000]);
    expect(second[0]).toBe(0x5a); // the same slot's bytes, as natively (strict detaches; it does not clear)
    expect(pool.stats()).toMatchObject({ inUse: 1, osBytes: 4096 });
    pool.release(second);
    await pool.close();
  });

  describe('a pool shared by workers', () => {
    const workers: PoolWorker[] = [];
    const pools: BufferPool[] = [];
    afterEach(async () => {
      for (const worker of workers.splice(0)) await worker.stop();
      for (const pool of pools.splice(0)) await pool.close({ force: true });
    });
    async function setUp(slots: number): Promise<[BufferPool, PoolWorker]> {
      const pool = new BufferPool({ sizeClasses: [4096, 65536], maxMemory: slots * 64 * KiB, retainIdle: 0 });
      pools.push(pool);
      const worker = new PoolWorker(pool.handle, 'W');
      workers.push(worker);
      await worker.ready;
      return [pool, worker];
    }

    it('a worker that calls process.exit() holding a buffer and a place in the queue gives both back', async () => {
      const [pool, worker] = await setUp(2);
      expect(await worker.call('tryAcquire', { size: 65536 })).not.toBeNull();
      const held = pool.tryAcquire(65536)!;
      // The budget is spent: the worker waits (acquire(), a ticket in the shared queue), then the main thread behind it.
      void worker.send('acquire', { size: 65536 });
      await until(() => pool.stats().waiters === 1, 'the worker to wait');
      const mine = pool.acquire(65536);
      await until(() => pool.stats().waiters === 2, 'the main thread to wait');
      worker.worker.postMessage({ id: 999, op: 'exit' });
      const [code] = await once(worker.worker, 'exit');
      expect(code).toBe(0);
      // Its ticket is done and its pages are back: the main thread's waiter is served.
      const got = await mine;
      expect(got.length).toBe(65536);
      expect(pool.stats()).toMatchObject({ threads: 1, waiters: 0, inUse: 2, osBytes: 128 * KiB });
      pool.release(got);
      pool.release(held);
    });

    it('a terminate()d worker keeps what it held: its thread slot and its pages stay taken (the documented limit)', async () => {
      const [pool, worker] = await setUp(2);
      expect(await worker.call('tryAcquire', { size: 65536 })).not.toBeNull();
      expect(pool.stats()).toMatchObject({ threads: 2, inUse: 1, osBytes: 64 * KiB });
      await worker.stop();
      // Its region is still taken, so its counts still show (natively: threads 1, inUse 0, osBytes 0).
      expect(pool.stats()).toMatchObject({ threads: 2, inUse: 1, osBytes: 64 * KiB });
      const mine = pool.tryAcquire(65536)!;
      expect(pool.tryAcquire(65536)).toBeNull(); // the dead worker's 64 KiB are gone for this pool's life
      pool.release(mine);
    });
  });
});

describe.skipIf(!portable)('portable mode: FrameAssembler', () => {
  it('assembles length-prefixed frames from a real socket into pooled memory', async () => {
    const pool = new BufferPool();
    const server = net.createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const accepted = once(server, 'connection');
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    const [peer] = (await accepted) as [net.Socket];
    const frames: string[] = [];
    const assembler = new FrameAssembler({
      pool,
      lengthPrefix: 'u32be',
      onFrame: (frame) => {
        frames.push(frame.data.toString());
        frame.release();
      },
    });
    assembler.attach(peer);
    for (const text of ['one', 'two', 'x'.repeat(100_000)]) {
      const header = Buffer.alloc(4);
      header.writeUInt32BE(text.length);
      client.write(Buffer.concat([header, Buffer.from(text)]));
    }
    await until(() => frames.length === 3, 'three frames');
    expect(frames.map((frame) => frame.length)).toEqual([3, 3, 100_000]);
    expect(frames.slice(0, 2)).toEqual(['one', 'two']);
    client.destroy();
    peer.destroy();
    server.close();
    await pool.close({ force: true });
  });
});
