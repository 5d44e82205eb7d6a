// What stands between bytes JS wrote into `buffer` and the kernel: forged and
// stale entries are refused before any syscall, for every call; bad fds,
// closed and busy arrays; pool counts stay true after every error.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BufferPool,
  IoVecArray,
  addressOf,
  allocAligned,
  free,
  preadv,
  preadvSync,
  pwritev,
  pwritevAll,
  pwritevAllSync,
  pwritevSync,
  readv,
  readvSync,
  writev,
  writevAll,
  writevAllSync,
  writevSync,
} from '../lib/index';
import { MiB, expectCode, rejection, thrown } from './fixtures/pool-helpers';
import { forgeEntry, rawEntry } from './fixtures/iovec-helpers';

let dir = '';
let file = '';
let fd = -1;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iobuf-iovec-safety-'));
  file = path.join(dir, 'target.bin');
  fd = fs.openSync(file, 'w+');
});

afterAll(() => {
  fs.closeSync(fd);
  fs.rmSync(dir, { recursive: true, force: true });
});

type Call = [name: string, run: (iov: IoVecArray) => unknown];

/** Every call that reaches the kernel, sync and promise. */
const CALLS: Call[] = [
  ['readvSync', (iov) => readvSync(fd, iov)],
  ['writevSync', (iov) => writevSync(fd, iov)],
  ['preadvSync', (iov) => preadvSync(fd, iov, 0)],
  ['pwritevSync', (iov) => pwritevSync(fd, iov, 0)],
  ['writevAllSync', (iov) => writevAllSync(fd, iov)],
  ['pwritevAllSync', (iov) => pwritevAllSync(fd, iov, 0)],
  ['readv', (iov) => readv(fd, iov)],
  ['writev', (iov) => writev(fd, iov)],
  ['preadv', (iov) => preadv(fd, iov, 0)],
  ['pwritev', (iov) => pwritev(fd, iov, 0)],
  ['writevAll', (iov) => writevAll(fd, iov)],
  ['pwritevAll', (iov) => pwritevAll(fd, iov, 0)],
];

/** The error a call gives, thrown or as a rejection. */
async function failure(run: () => unknown): Promise<Error & { code?: string }> {
  let result: unknown;
  try {
    result = run();
  } catch (error) {
    return error as Error & { code?: string };
  }
  if (!(result instanceof Promise)) throw new Error(`expected a failure, got ${String(result)}`);
  return rejection(result);
}

/** Expects every call to refuse `iov` with `code` and the file to be untouched. */
async function expectAllRefuse(iov: IoVecArray, code: string, name = 'IobufError'): Promise<void> {
  const before = fs.fstatSync(fd).size;
  const length = iov.length;
  for (const [callName, run] of CALLS) {
    const error = await failure(() => run(iov));
    expect({ call: callName, name: error.name, code: error.code }).toEqual({ call: callName, name, code });
    expect(iov.length).toBe(length); // an All call advanced nothing
  }
  expect(fs.fstatSync(fd).size).toBe(before);
}

describe('forged entries', () => {
  it('a wild address is refused by every call with ERR_IOBUF_IOVEC_INVALID; the process lives', async () => {
    const view = Buffer.alloc(4096, 0x41);
    const iov = IoVecArray.from([Buffer.from('fine'), view]);
    for (const wild of [0xdeadbeefn, 0n, 8n, (1n << 64n) - 1n, addressOf(view) - 1n, addressOf(view) + 4097n]) {
      forgeEntry(iov, 1, wild, 1n);
      await expectAllRefuse(iov, 'ERR_IOBUF_IOVEC_INVALID');
      const error = thrown(() => writevSync(fd, iov));
      expect(error.message).toContain('iovec entry 1');
    }
    // The other entry is checked too: an address inside *another* entry's view is not enough.
    forgeEntry(iov, 1, addressOf(view), 4096n);
    forgeEntry(iov, 0, addressOf(view), 4n);
    await expectAllRefuse(iov, 'ERR_IOBUF_IOVEC_INVALID');
    expectCode(
      thrown(() => iov.entries()),
      'IobufError',
      'ERR_IOBUF_IOVEC_INVALID',
    );
  });

  it('a length beyond the view (by one byte, or wrapping around) is refused', async () => {
    const view = Buffer.alloc(100);
    const iov = new IoVecArray(1);
    iov.push(view, 10, 50);
    const base = addressOf(view);
    for (const [b, l] of [
      [base, 101n],
      [base + 99n, 2n],
      [base + 10n, (1n << 64n) - 5n],
      [base + 100n, 1n],
    ] as const) {
      forgeEntry(iov, 0, b, l);
      await expectAllRefuse(iov, 'ERR_IOBUF_IOVEC_INVALID');
    }
    // Anything inside the view is the caller's to choose: the whole view, or its empty end.
    forgeEntry(iov, 0, base, 100n);
    expect(pwritevSync(fd, iov, 0)).toBe(100);
    forgeEntry(iov, 0, base + 100n, 0n);
    expect(pwritevSync(fd, iov, 0)).toBe(0);
  });

  it('the snapshot: bytes forged while a promise call runs cannot change what it writes', async () => {
    const view = Buffer.alloc(64 * 1024, 0x5a);
    const iov = IoVecArray.from([view]);
    const pending = pwritev(fd, iov, 0);
    forgeEntry(iov, 0, 0xdeadbeefn, 1n << 40n);
    expect(await pending).toBe(64 * 1024);
    expect(rawEntry(iov, 0)).toEqual([0xdeadbeefn, 1n << 40n]);
    const back = Buffer.alloc(64 * 1024);
    expect(fs.readSync(fd, back, 0, back.length, 0)).toBe(back.length);
    expect(back.equals(view)).toBe(true);
  });
});

describe('stale entries', () => {
  it('a pooled Buffer released after it was pushed is refused; inUse stays what the caller holds', async () => {
    for (const strict of [false, true]) {
      const pool = new BufferPool({ maxMemory: 4 * MiB, strict });
      const kept = pool.tryAcquire(4096)!;
      const released = pool.tryAcquire(4096)!;
      const iov = new IoVecArray(2);
      iov.push(kept);
      iov.push(released, 8, 100);
      pool.release(released);
      await expectAllRefuse(iov, 'ERR_IOBUF_IOVEC_INVALID');
      expect(thrown(() => writevSync(fd, iov)).message).toContain('entry 1 is stale');
      expect(pool.stats().inUse).toBe(1);
      // Replacing the stale entry makes the array usable again.
      iov.set(1, kept, 0, 10);
      expect(pwritevSync(fd, iov, 0)).toBe(4096 + 10);
      pool.release(kept);
      expect(pool.stats().inUse).toBe(0);
      await pool.close();
    }
  });

  it('pooled Buffers of a pool closed with force are refused', async () => {
    const pool = new BufferPool({ maxMemory: 4 * MiB });
    const buffer = pool.tryAcquire(100_000)!;
    const iov = IoVecArray.from([buffer]);
    await pool.close({ force: true });
    await expectAllRefuse(iov, 'ERR_IOBUF_IOVEC_INVALID');
  });

  it('TypedArrays of any kind and DataViews detached after they were pushed are refused', async () => {
    for (const make of [
      (memory: Buffer) => new Uint32Array(memory.buffer, memory.byteOffset, 1024),
      (memory: Buffer) => new DataView(memory.buffer, memory.byteOffset, 4096),
    ]) {
      const memory = allocAligned(4096);
      const view = make(memory);
      const iov = IoVecArray.from([Buffer.from('ok'), view]);
      expect(pwritevSync(fd, iov, 0)).toBe(4098);
      free(memory);
      await expectAllRefuse(iov, 'ERR_IOBUF_IOVEC_INVALID');
      expect(thrown(() => writevSync(fd, iov)).message).toContain('entry 1 is stale');
    }
  });

  it('a foreign view detached (freed) after it was pushed is refused', async () => {
    const view = allocAligned(8192);
    const iov = IoVecArray.from([Buffer.from('x'), view]);
    free(view);
    await expectAllRefuse(iov, 'ERR_IOBUF_IOVEC_INVALID');
    expect(thrown(() => writevSync(fd, iov)).message).toContain('entry 1 is stale');
  });
});

describe('bad fds, closed and busy arrays', () => {
  it('EBADF carries code, errno and syscall', async () => {
    const iov = IoVecArray.from([Buffer.from('data')]);
    const closedFd = fs.openSync(file, 'r');
    fs.closeSync(closedFd);
    const syscalls: Record<string, string> = {
      readvSync: 'readv',
      writevSync: 'writev',
      preadvSync: 'preadv',
      pwritevSync: 'pwritev',
      writevAllSync: 'writev',
      pwritevAllSync: 'pwritev',
      readv: 'readv',
      writev: 'writev',
      preadv: 'preadv',
      pwritev: 'pwritev',
      writevAll: 'writev',
      pwritevAll: 'pwritev',
    };
    const calls: Call[] = [
      ['readvSync', (v) => readvSync(closedFd, v)],
      ['writevSync', (v) => writevSync(closedFd, v)],
      ['preadvSync', (v) => preadvSync(closedFd, v, 0)],
      ['pwritevSync', (v) => pwritevSync(closedFd, v, 0)],
      ['writevAllSync', (v) => writevAllSync(closedFd, v)],
      ['pwritevAllSync', (v) => pwritevAllSync(closedFd, v, 0)],
      ['readv', (v) => readv(closedFd, v)],
      ['writev', (v) => writev(closedFd, v)],
      ['preadv', (v) => preadv(closedFd, v, 0)],
      ['pwritev', (v) => pwritev(closedFd, v, 0)],
      ['writevAll', (v) => writevAll(closedFd, v)],
      ['pwritevAll', (v) => pwritevAll(closedFd, v, 0)],
    ];
    for (const [name, run] of calls) {
      const error = (await failure(() => run(iov))) as Error & { code?: string; errno?: number; syscall?: string; bytesWritten?: number };
      expect({ name, error: error.name, code: error.code, errno: error.errno, syscall: error.syscall }).toEqual({
        name,
        error: 'IobufError',
        code: 'EBADF',
        errno: -9,
        syscall: syscalls[name],
      });
      if (name.includes('All')) expect(error.bytesWritten).toBe(0);
      expect(iov.length).toBe(1);
    }
  });

  it('argument errors', async () => {
    const iov = IoVecArray.from([Buffer.from('data')]);
    expectCode(
      thrown(() => writevSync(-1, iov)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => writevSync('1' as never, iov)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    expectCode(
      thrown(() => writevSync(fd, [Buffer.from('x')] as never)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    expectCode(
      thrown(() => pwritevSync(fd, iov, -1)),
      'RangeError',
      'ERR_OUT_OF_RANGE',
    );
    expectCode(
      thrown(() => preadvSync(fd, iov, undefined as never)),
      'TypeError',
      'ERR_INVALID_ARG_TYPE',
    );
    expectCode(await rejection(writev(fd, null as never)), 'TypeError', 'ERR_INVALID_ARG_TYPE');
    expectCode(await rejection(pwritev(fd, iov, 2 ** 53)), 'RangeError', 'ERR_OUT_OF_RANGE');
    // One shape for every argument error (lib/errors.ts).
    expect(thrown(() => writevSync(fd, [Buffer.from('x')] as never)).message).toBe(
      'Expected an IoVecArray for iov but received an instance of Array',
    );
    expect(thrown(() => IoVecArray.from(5 as never)).message).toBe('Expected an array of views for views but received 5');
  });

  it('a closed array is refused by every call', async () => {
    const iov = IoVecArray.from([Buffer.from('data')]);
    iov.close();
    await expectAllRefuse(iov, 'ERR_IOBUF_IOVEC_CLOSED');
  });

  it('an array lent to a pending promise call is busy until it settles', async () => {
    const view = Buffer.alloc(1 << 20, 1);
    const iov = IoVecArray.from([view]);
    const pending = pwritevAll(fd, iov, 0);
    expectCode(
      thrown(() => iov.push(view)),
      'IobufError',
      'ERR_IOBUF_IOVEC_BUSY',
    );
    expectCode(
      thrown(() => iov.clear()),
      'IobufError',
      'ERR_IOBUF_IOVEC_BUSY',
    );
    expectCode(
      thrown(() => iov.close()),
      'IobufError',
      'ERR_IOBUF_IOVEC_BUSY',
    );
    expectCode(
      thrown(() => writevSync(fd, iov)),
      'IobufError',
      'ERR_IOBUF_IOVEC_BUSY',
    );
    expectCode(await rejection(writev(fd, iov)), 'IobufError', 'ERR_IOBUF_IOVEC_BUSY');
    expect(iov.length).toBe(1);
    expect(await pending).toBe(1 << 20);
    expect(iov.length).toBe(0);
    iov.push(view, 0, 3);
    expect(await pwritev(fd, iov, 0)).toBe(3);
    iov.close();
  });
});
