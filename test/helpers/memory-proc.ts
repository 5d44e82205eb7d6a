// Reading what the kernel says about this process (or another one) from /proc,
// and running small node scripts in child processes. Shared by the memory tests.
import { spawn, spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { chmodSync, copyFileSync, linkSync, mkdtempSync, readFileSync, realpathSync, renameSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { expect } from 'vitest';

/** The compiled package (`npm test` builds it before vitest starts). */
export const distDir = path.join(__dirname, '..', '..', 'dist');
export const fixturesDir = path.join(__dirname, '..', 'fixtures');

export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/**
 * `npm run test:asan`: AddressSanitizer replaces two things these tests
 * observe. Its mlock interceptor does nothing (VmLck stays 0, no ENOMEM), and
 * its allocator keeps freed heap memory in quarantine (RSS does not fall).
 * Tests of exactly those effects skip there; every other test runs.
 */
export const sanitized = process.env.IOBUF_ASAN !== undefined;

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/** A field of /proc/<pid>/status in bytes ("VmRSS", "VmLck", "HugetlbPages"). */
export function statusBytes(field: string, pid: number | 'self' = 'self'): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status);
  if (!match) throw new Error(`/proc/${pid}/status has no ${field} line`);
  return Number(match[1]) * KiB;
}

/** A field of /proc/meminfo in bytes (or a plain count for HugePages_*). */
export function meminfo(field: string): number {
  const match = new RegExp(`^${field}:\\s+(\\d+)( kB)?$`, 'm').exec(readFileSync('/proc/meminfo', 'utf8'));
  if (!match) throw new Error(`/proc/meminfo has no ${field} line`);
  return Number(match[1]) * (match[2] ? KiB : 1);
}

export interface Vma {
  start: bigint;
  end: bigint;
  perms: string;
  /** "Rss", "KernelPageSize", "AnonHugePages", "Private_Hugetlb", … in bytes. */
  sizes: Record<string, number>;
  /** The two-letter VmFlags ("rd", "wr", "dc", "dd", "lo", "hg", "ht", …). */
  flags: string[];
}

/** Every mapping in /proc/<pid>/smaps. */
export function readSmaps(pid: number | 'self' = 'self'): Vma[] {
  const vmas: Vma[] = [];
  let current: Vma | undefined;
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'latin1').split('\n')) {
    const header = /^([0-9a-f]+)-([0-9a-f]+) (\S+) /.exec(line);
    if (header) {
      current = { start: BigInt(`0x${header[1]}`), end: BigInt(`0x${header[2]}`), perms: header[3], sizes: {}, flags: [] };
      vmas.push(current);
      continue;
    }
    if (!current) continue;
    const size = /^(\w+):\s+(\d+) kB$/.exec(line);
    if (size) current.sizes[size[1]] = Number(size[2]) * KiB;
    else if (line.startsWith('VmFlags:')) current.flags = line.slice('VmFlags:'.length).trim().split(/\s+/);
  }
  return vmas;
}

/** The mapping that holds `address`, or undefined when nothing is mapped there. */
export function vmaAt(address: bigint, pid: number | 'self' = 'self'): Vma | undefined {
  return readSmaps(pid).find((vma) => address >= vma.start && address < vma.end);
}

/** Bytes of [start, start + length) that some mapping covers. */
export function mappedBytesIn(start: bigint, length: number, pid: number | 'self' = 'self'): number {
  const end = start + BigInt(length);
  let covered = 0n;
  for (const vma of readSmaps(pid)) {
    const from = vma.start > start ? vma.start : start;
    const to = vma.end < end ? vma.end : end;
    if (to > from) covered += to - from;
  }
  return Number(covered);
}

/** Lets finalizers run: Node calls them only after the event loop turns. */
export async function collectGarbage(turns = 3): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (typeof gc !== 'function') throw new Error('these tests need node --expose-gc (see vitest.config.ts)');
  for (let i = 0; i < turns; i++) {
    gc();
    await nextTurn();
  }
}

/** Asserts that `fn` throws an instance of `Kind` with this `code` (and message, when given). */
export function expectThrowsCode(
  fn: () => unknown,
  Kind: new (...args: never[]) => Error,
  code: string,
  message?: string,
): Error & { code: string; errno?: number; syscall?: string } {
  let thrown: unknown;
  try {
    fn();
  } catch (error) {
    thrown = error;
  }
  expect(thrown, 'expected a throw').toBeInstanceOf(Kind);
  const error = thrown as Error & { code: string; errno?: number; syscall?: string };
  expect(error.code).toBe(code);
  if (message !== undefined) expect(error.message).toBe(message);
  return error;
}

/**
 * A clean environment for child node processes (no vitest or npm variables).
 * Under `npm run test:asan` the children load the sanitizer build too, so they
 * keep its preload and options (without them ASan aborts at start-up).
 */
export function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  const sanitized = process.env.IOBUF_ASAN !== undefined;
  for (const [name, value] of Object.entries(process.env)) {
    if (!sanitized && /^(LD_PRELOAD|[A-Z]+SAN_OPTIONS)$/.test(name)) continue;
    if (/^(NODE_OPTIONS|VITEST.*|INIT_CWD)$/.test(name)) continue;
    if (/^npm_/i.test(name)) continue;
    env[name] = value;
  }
  return { ...env, ...extra };
}

export interface ChildResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs test/fixtures/<fixture> in a fresh node process and waits for it.
 * `execPath`: another node binary (default: this one).
 */
export function runFixture(fixture: string, args: string[] = [], options: SpawnSyncOptions & { execPath?: string } = {}): ChildResult {
  const { execPath = process.execPath, ...spawnOptions } = options;
  const result = spawnSync(execPath, [path.join(fixturesDir, fixture), ...args], {
    encoding: 'utf8',
    env: childEnv(),
    timeout: 60_000,
    ...spawnOptions,
  });
  if (result.error) throw result.error;
  return { status: result.status, signal: result.signal, stdout: String(result.stdout), stderr: String(result.stderr) };
}

/** Whether a user other than the owner can run `file`: it and every folder above it allow others in. */
function runnableByOthers(file: string): boolean {
  const real = realpathSync(file);
  if ((statSync(real).mode & 0o001) === 0) return false;
  for (let dir = path.dirname(real); ; dir = path.dirname(dir)) {
    if ((statSync(dir).mode & 0o001) === 0) return false;
    if (dir === path.dirname(dir)) return true;
  }
}

let nodeForOthers: string | undefined;

/**
 * This node binary, at a path an unprivileged child (`nobody`) can run. The
 * official binaries of other majors that CI installs live under root's home
 * (mode 700, closed to others): such a binary is hard-linked (or copied) into
 * <tmp>/iobuf-node-<version>/, which later runs reuse (vitest ends its test
 * processes without their exit handlers, so nothing would remove it).
 */
export function nodeRunnableByOthers(): string {
  if (nodeForOthers !== undefined) return nodeForOthers;
  if (runnableByOthers(process.execPath)) return (nodeForOthers = process.execPath);
  const dir = path.join(os.tmpdir(), `iobuf-node-${process.version}`);
  const target = path.join(dir, 'node');
  const ready = () => {
    try {
      return statSync(target).size === statSync(process.execPath).size && runnableByOthers(target);
    } catch {
      return false;
    }
  };
  if (!ready()) {
    // Made aside and renamed into place: test files run in parallel.
    const staging = mkdtempSync(path.join(os.tmpdir(), 'iobuf-node-'));
    try {
      chmodSync(staging, 0o755);
      try {
        linkSync(process.execPath, path.join(staging, 'node'));
      } catch {
        copyFileSync(process.execPath, path.join(staging, 'node'));
      }
      chmodSync(path.join(staging, 'node'), 0o755);
      try {
        renameSync(staging, dir);
      } catch {
        if (!ready()) {
          // a stale folder (not one another test file just made)
          rmSync(dir, { recursive: true, force: true });
          renameSync(staging, dir);
        }
      }
    } finally {
      rmSync(staging, { recursive: true, force: true });
    }
  }
  return (nodeForOthers = target);
}

/** The last line of a child's stdout, parsed as JSON; fails with the child's output otherwise. */
export function lastJsonLine<T>(result: ChildResult): T {
  const lines = result.stdout.trim().split('\n');
  try {
    return JSON.parse(lines[lines.length - 1]) as T;
  } catch {
    throw new Error(
      `child printed no JSON (status ${result.status}, signal ${result.signal})\n` +
        `--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`,
    );
  }
}

/**
 * A child that speaks in lines: it prints a JSON line, then blocks until the
 * parent writes a line to its stdin. Lets the parent inspect /proc/<pid> while
 * the child is stopped at a known point and allocates nothing.
 */
export class LineChild {
  readonly pid: number;
  private readonly lines: string[] = [];
  private waiting: ((line: string) => void) | undefined;
  private readonly child;
  private stderr = '';
  readonly exited: Promise<{ status: number | null; signal: NodeJS.Signals | null; stderr: string }>;

  constructor(fixture: string, args: string[] = []) {
    this.child = spawn(process.execPath, [path.join(fixturesDir, fixture), ...args], {
      env: childEnv(),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.pid = this.child.pid!;
    let partial = '';
    this.child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      partial += chunk;
      let newline: number;
      while ((newline = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, newline);
        partial = partial.slice(newline + 1);
        if (this.waiting) {
          const resolve = this.waiting;
          this.waiting = undefined;
          resolve(line);
        } else {
          this.lines.push(line);
        }
      }
    });
    this.child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr += chunk;
    });
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (status, signal) => {
        if (this.waiting) this.waiting(`EXITED ${status ?? signal}: ${this.stderr}`);
        resolve({ status, signal, stderr: this.stderr });
      });
    });
  }

  /** The next line the child prints. */
  next(): Promise<string> {
    const line = this.lines.shift();
    if (line !== undefined) return Promise.resolve(line);
    return new Promise((resolve) => {
      this.waiting = resolve;
    });
  }

  /** Lets the child go on past its current stop. */
  resume(): void {
    this.child.stdin.write('go\n');
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}
