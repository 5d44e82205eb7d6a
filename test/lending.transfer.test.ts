// An ArrayBuffer transferred away (structuredClone with transfer, postMessage
// with a transfer list, ArrayBuffer.prototype.transfer on Node 22+) while a
// promise readv/preadv/pwritev still uses it. Before, the kernel wrote into
// freed heap memory (corrupting other ArrayBuffers) or the process crashed.
// Now the kernel never uses V8 heap memory in place from the thread pool (a
// native bounce block stands in: native/iovec.cc), and iobuf's own memory is
// pinned: transferred or not, its pages stay mapped until the call is done.
// Real kernel: the readv is blocked on a FIFO until the test writes into it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { MessageChannel } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IoVecArray, addressOf, allocAligned, free, preadv, pwritev, readv } from '../lib/index';
import { makeFifo } from './fixtures/iovec-helpers';
import { rejection } from './fixtures/pool-helpers';
import { mappedBytesIn } from './helpers/memory-proc';

const KiB = 1024;
let dir = '';
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iobuf-transfer-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function fifo(): { reader: number; writer: number; close(): void } {
  const file = makeFifo(dir);
  const reader = fs.openSync(file, fs.constants.O_RDWR);
  const writer = fs.openSync(file, fs.constants.O_WRONLY);
  return {
    reader,
    writer,
    close() {
      fs.closeSync(reader);
      fs.closeSync(writer);
    },
  };
}

type Transfer = (buffer: ArrayBuffer) => ArrayBuffer;
const transfers: [string, Transfer | null][] = [
  ['structuredClone with transfer', (buffer) => structuredClone(buffer, { transfer: [buffer] })],
  [
    'postMessage with a transfer list',
    (buffer) => {
      const { port1, port2 } = new MessageChannel();
      port1.postMessage(buffer, [buffer]);
      port1.close();
      port2.close();
      return new ArrayBuffer(0); // gone to the other port (and dropped with it)
    },
  ],
  [
    'ArrayBuffer.prototype.transfer',
    typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === 'function'
      ? (buffer) => (buffer as ArrayBuffer & { transfer(): ArrayBuffer }).transfer()
      : null,
  ],
];

describe('heap memory transferred while a promise read is pending', () => {
  for (const [how, transfer] of transfers) {
    for (const size of [16, 64 * KiB]) {
      it.skipIf(transfer === null)(`${how}, ${size} bytes: ERR_IOBUF_DETACHED, the bytes dropped, no other memory written`, async () => {
        const pipe = fifo();
        try {
          const view = Buffer.alloc(size);
          const pending = readv(pipe.reader, IoVecArray.from([view]));
          await delay(20); // in readv now
          const moved = transfer!(view.buffer as ArrayBuffer);
          expect(view.length).toBe(0);
          // Fresh heap memory that freed backing stores would be recycled into.
          const fresh = Array.from({ length: 64 }, () => new Uint8Array(size));
          fs.writeSync(pipe.writer, Buffer.alloc(size, 0x5a));
          const error = await rejection(pending);
          expect(error).toMatchObject({ code: 'ERR_IOBUF_DETACHED', bytesRead: size });
          expect(fresh.every((array) => array.every((byte) => byte === 0))).toBe(true);
          // The memory that moved was not written either: the kernel read into a bounce block.
          expect(new Uint8Array(moved).every((byte) => byte === 0)).toBe(true);
        } finally {
          pipe.close();
        }
      });
    }
  }

  it('a read that completes normally still lands in heap memory (copied out of the bounce block)', async () => {
    const pipe = fifo();
    try {
      const views = [Buffer.alloc(10), new Uint16Array(8), new DataView(new ArrayBuffer(7))];
      const pending = readv(pipe.reader, IoVecArray.from(views));
      fs.writeSync(pipe.writer, Buffer.from(Array.from({ length: 33 }, (_, i) => i + 1)));
      expect(await pending).toBe(33);
      expect([...(views[0] as Buffer)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      expect(Buffer.from((views[1] as Uint16Array).buffer)[0]).toBe(11);
      expect((views[2] as DataView).getUint8(6)).toBe(33);
    } finally {
      pipe.close();
    }
  });

  it('pwritev from heap memory transferred after the call: the file gets the bytes as they were at the call', async () => {
    const file = path.join(dir, 'out.bin');
    const fd = fs.openSync(file, 'w+');
    try {
      const view = Buffer.alloc(64 * KiB, 0x41);
      const pending = pwritev(fd, IoVecArray.from([view]), 0);
      const moved = structuredClone(view.buffer, { transfer: [view.buffer as ArrayBuffer] });
      new Uint8Array(moved).fill(0x42);
      expect(await pending).toBe(64 * KiB);
      expect(fs.readFileSync(file).equals(Buffer.alloc(64 * KiB, 0x41))).toBe(true);
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe('iobuf memory transferred while a promise read is pending', () => {
  it('its pages stay mapped until the call is done; new mappings are never written', async () => {
    const pipe = fifo();
    try {
      const buffer = allocAligned(64 * KiB, { alignment: 64 * KiB });
      const address = addressOf(buffer);
      const pending = readv(pipe.reader, IoVecArray.from([buffer]));
      await delay(20);
      // Node 22+: transfer() detaches even an external ArrayBuffer (Node 20
      // has no transfer(), and structuredClone copies external memory).
      const transfer = transfers[2][1] ?? transfers[0][1]!;
      let moved: ArrayBuffer | null = transfer(buffer.buffer as ArrayBuffer);
      moved = null;
      globalThis.gc?.();
      expect(mappedBytesIn(address, 64 * KiB)).toBe(64 * KiB);
      const fresh = Array.from({ length: 8 }, () => allocAligned(64 * KiB, { alignment: 64 * KiB }));
      fs.writeSync(pipe.writer, Buffer.alloc(64 * KiB, 0x5a));
      expect(await pending).toBe(64 * KiB);
      expect(fresh.every((other) => other.every((byte) => byte === 0))).toBe(true);
      for (const other of fresh) free(other);
      void moved;
    } finally {
      pipe.close();
    }
  });

  it('preadv into a file region works as before (native memory is used in place)', async () => {
    const file = path.join(dir, 'in.bin');
    fs.writeFileSync(file, Buffer.alloc(8 * KiB, 0x61));
    const fd = fs.openSync(file, 'r');
    try {
      const buffer = allocAligned(8 * KiB);
      expect(await preadv(fd, IoVecArray.from([buffer]), 0)).toBe(8 * KiB);
      expect(buffer.every((byte) => byte === 0x61)).toBe(true);
    } finally {
      fs.closeSync(fd);
    }
  });
});
