// IoRing and the rest of the system: whether io_uring is available (and a
// clear error when sysctl switched it off), the event loop (an idle ring
// lets a program exit, an operation in flight keeps it alive), a ring that
// is never closed, and RLIMIT_MEMLOCK for registered buffers as an
// unprivileged user.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BufferPool, IoRing } from '../lib/index';
import { MiB } from './fixtures/pool-helpers';
import { dataFile, blockingFifo, uring, uringSkip, useScratchDir } from './fixtures/uring-helpers';
import { makeFifo } from './fixtures/iovec-helpers';
import { childEnv, collectGarbage, distDir, fixturesDir, isRoot, lastJsonLine, runFixture, sanitized } from './helpers/memory-proc';

const scratch = useScratchDir('uring-system');
const NOBODY = 65534;
const IO_URING_DISABLED = '/proc/sys/kernel/io_uring_disabled';

/** Whether a user other than the owner can run `file`: every directory on its path searchable, the file executable. */
function runnableByOthers(file: string): boolean {
  const real = fs.realpathSync(file);
  if ((fs.statSync(real).mode & 0o001) === 0) return false;
  for (let dir = path.dirname(real); dir !== path.dirname(dir); dir = path.dirname(dir)) {
    if ((fs.statSync(dir).mode & 0o001) === 0) return false;
  }
  return true;
}

function ringFds(): number {
  return fs.readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:[io_uring]';
    } catch {
      return false;
    }
  }).length;
}

describe('IoRing.supported()', () => {
  it('says ok here, or why not, in the documented shape', () => {
    if (uring.ok) {
      expect(uring).toEqual({ ok: true });
    } else {
      expect(typeof uring.code).toBe('string');
      expect(uring.reason.length).toBeGreaterThan(10);
    }
  });

  // The sysctl is machine-wide: it is switched off for as short a time as
  // possible (synchronously, a few syscalls) and always restored.
  it.skipIf(!isRoot || !fs.existsSync(IO_URING_DISABLED) || uringSkip !== '')(
    'sysctl kernel.io_uring_disabled=2: supported() says so, new IoRing() throws ERR_IOBUF_URING_UNAVAILABLE; restored after',
    () => {
      const original = fs.readFileSync(IO_URING_DISABLED, 'utf8').trim();
      let support: ReturnType<typeof IoRing.supported>;
      let failure: unknown = null;
      fs.writeFileSync(IO_URING_DISABLED, '2');
      try {
        support = IoRing.supported();
        try {
          new IoRing();
        } catch (error) {
          failure = error;
        }
      } finally {
        fs.writeFileSync(IO_URING_DISABLED, original);
      }
      expect(fs.readFileSync(IO_URING_DISABLED, 'utf8').trim()).toBe(original);
      expect(support).toEqual({
        ok: false,
        code: 'EPERM',
        errno: -1,
        reason: 'io_uring is switched off (sysctl kernel.io_uring_disabled=2)',
      });
      const error = failure as Error & { code?: string; errno?: number; syscall?: string; reason?: string };
      expect(error).toBeInstanceOf(Error);
      expect({ name: error.name, code: error.code, errno: error.errno, syscall: error.syscall, reason: error.reason }).toEqual({
        name: 'IobufError',
        code: 'ERR_IOBUF_URING_UNAVAILABLE',
        errno: -1,
        syscall: 'io_uring_setup',
        reason: 'io_uring is switched off (sysctl kernel.io_uring_disabled=2)',
      });
      expect(error.message).toContain('kernel.io_uring_disabled=2');
      // Back on: a ring works again.
      expect(IoRing.supported()).toEqual({ ok: true });
      void new IoRing().close();
    },
  );
});

describe.skipIf(uringSkip !== '')('IoRing and the event loop', () => {
  it('an idle ring that is never closed lets the program exit', () => {
    const { file } = dataFile(scratch(), 'idle.bin', 1000);
    const result = runFixture('uring-child.js', ['idle', file], { timeout: 30_000 });
    expect({ status: result.status, signal: result.signal, stderr: result.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
    expect(lastJsonLine(result)).toEqual({ read: 100 });
  });

  it('a read in flight keeps the program alive until it completes', async () => {
    const fifo = makeFifo(scratch());
    const child = spawn(process.execPath, [path.join(fixturesDir, 'uring-child.js'), 'inflight', fifo], {
      env: childEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    await new Promise<void>((resolve) => {
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        stdout += chunk;
        if (stdout.includes('waiting\n')) resolve();
      });
      child.on('exit', () => resolve());
    });
    // The child waits in the kernel now; only the ring's handle keeps its loop alive.
    const writer = fs.openSync(fifo, fs.constants.O_WRONLY);
    fs.writeSync(writer, 'from the parent');
    fs.closeSync(writer);
    expect(await exited).toBe(0);
    expect(stderr).toBe('');
    expect(stdout.trim().split('\n')).toEqual(['waiting', JSON.stringify({ read: 15, text: 'from the parent' })]);
  });

  it('a ring that is collected without close() closes its fds', async () => {
    const { file } = dataFile(scratch(), 'collected.bin', 1000);
    const fd = fs.openSync(file, 'r');
    const before = ringFds();
    await (async () => {
      const ring = new IoRing();
      expect(await ring.read(fd, Buffer.alloc(10), 0)).toBe(10);
      expect(ringFds()).toBe(before + 1);
    })();
    fs.closeSync(fd);
    for (let i = 0; i < 20 && ringFds() > before; i++) await collectGarbage();
    expect(ringFds()).toBe(before);
  });

  it('a ring with a read in flight is not collected, and completes', async () => {
    const fifo = blockingFifo(scratch());
    try {
      const before = ringFds();
      let buffer: Buffer | null = Buffer.alloc(8);
      const reading = new IoRing().read(fifo.reader, buffer, null);
      buffer = null;
      await collectGarbage();
      expect(ringFds()).toBe(before + 1);
      fs.writeSync(fifo.writer, 'complete');
      expect(await reading).toBe(8);
      for (let i = 0; i < 20 && ringFds() > before; i++) await collectGarbage();
      expect(ringFds()).toBe(before);
    } finally {
      fifo.close();
    }
  });
});

describe.skipIf(uringSkip !== '')('examples/o-direct-copy.mjs', () => {
  for (const mode of [[], ['--uring']]) {
    it(`copies a file byte for byte (an odd size, O_DIRECT)${mode.length ? ' with io_uring' : ''}`, () => {
      const { file, data } = dataFile(scratch(), `copy-source-${mode.length}.bin`, 9 * MiB + 12345);
      const copy = path.join(scratch(), `copy-target-${mode.length}.bin`);
      const result = spawnSync(process.execPath, [path.join(__dirname, '..', 'examples', 'o-direct-copy.mjs'), file, copy, ...mode], {
        encoding: 'utf8',
        env: childEnv(),
        timeout: 60_000,
      });
      expect({ status: result.status, stderr: result.stderr }).toEqual({ status: 0, stderr: '' });
      const said = /^copied (\d+) bytes through \w+ pages(, (\d+) fixed-buffer operations)?\n$/.exec(result.stdout);
      expect(said?.[1]).toBe(String(data.length));
      expect(said?.[3]).toBe(mode.length ? '6' : undefined); // 3 chunks of 4 MiB, each read and written
      expect(fs.readFileSync(copy).equals(data)).toBe(true);
    });
  }
});

// Skipped under ASan like test/iovec.uring.test.ts: the preloaded runtime does
// not follow a child that drops to another user.
describe.skipIf(uringSkip !== '' || sanitized)('registered buffers and RLIMIT_MEMLOCK', () => {
  it('an unprivileged user: 4 MiB of slabs register; the pool growing past 8 MiB registers what fits and reads the rest in place; 12 MiB at once is ENOMEM', (context) => {
    if (isRoot && !runnableByOthers(process.execPath)) {
      context.skip(`${process.execPath} cannot be run by nobody (a directory on its path is private)`);
      return;
    }
    const limit = Number(/^Max locked memory\s+(\d+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'))?.[1]);
    expect(limit, 'RLIMIT_MEMLOCK must be 8 MiB for this test').toBe(8 * MiB);
    const { file } = dataFile(scratch(), 'memlock.bin', 4 * MiB);
    if (isRoot) {
      fs.chmodSync(scratch(), 0o755);
      fs.chmodSync(file, 0o644);
      for (const name of ['index.js', 'uring', 'uring/ring.js', 'uring/registration.js', 'pool', 'pool/pool.js', 'pooled.js']) {
        const built = path.join(distDir, name);
        expect((fs.statSync(built).mode & 0o004) !== 0, `${built} must be world-readable for the nobody child`).toBe(true);
      }
    }
    // NODE_NO_WARNINGS: the child counts the warning itself instead of printing it.
    const env = childEnv({ NODE_NO_WARNINGS: '1' });
    const result = runFixture('uring-child.js', ['memlock', file], isRoot ? { uid: NOBODY, gid: NOBODY, cwd: '/', env } : { env });
    expect({ status: result.status, signal: result.signal, stderr: result.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
    expect(lastJsonLine(result)).toEqual({
      uid: isRoot ? NOBODY : process.getuid!(),
      smallBytes: 4 * MiB,
      smallFixedBuffers: 2,
      smallVerified: true,
      smallStats: { fixed: 2, inPlace: 0 },
      grownVerified: true,
      grownStats: { fixed: 3, inPlace: 2, fixedBuffers: 3 },
      warnings: ['IOBUF_URING_REGISTRATION'],
      largeBytes: 12 * MiB,
      large: { name: 'IobufError', code: 'ENOMEM', errno: -12, syscall: 'io_uring_register', memlock: true },
    });
  });

  it('as root (CAP_IPC_LOCK) the same 12 MiB register', (context) => {
    if (!isRoot) {
      context.skip('needs root');
      return;
    }
    const pool = new BufferPool({ maxMemory: 64 * MiB, hugePages: false, retainIdle: 64 * MiB });
    const held = [64, 128, 256, 512, 1024, 2048].map((kib) => pool.tryAcquire(kib * 1024)!);
    const ring = new IoRing({ pool });
    expect(ring.stats().fixedBuffers).toBe(6);
    for (const buffer of held) pool.release(buffer);
    void ring.close().then(() => pool.close());
  });
});
