// The example MQTT brokers driven by Debian's mosquitto clients
// (mosquitto_sub, mosquitto_pub: C, libmosquitto), both brokers through the
// same tests. The clients are installed by scripts/ci-mqtt-deps.sh when
// missing; without apt the file is skipped with the reason printed.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { BROKERS, connect, mosquittoClientsMissing, payload } from './fixtures/mqtt-helpers';

const missing = mosquittoClientsMissing();
const KiB = 1024;
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
const scratch = mkdtempSync(path.join(os.tmpdir(), 'iobuf-mqtt-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** The format mosquitto_sub prints each message in: topic, QoS, RETAIN, length, payload as hex. */
const FORMAT = 'MSG %t|%q|%r|%l|%x';

interface Subscriber {
  child: ChildProcess;
  /** Resolves once the broker's SUBACK has arrived (mosquitto_sub -d says so). */
  ready: Promise<void>;
  /** Resolves with the MSG lines once mosquitto_sub exits (after -C messages). */
  lines: Promise<string[]>;
}

function mosquittoSub(port: number, args: string[]): Subscriber {
  // stdbuf: mosquitto_sub prints through stdio, which a pipe would buffer until exit.
  const child = spawn('stdbuf', ['-oL', 'mosquitto_sub', '-h', '127.0.0.1', '-p', String(port), '-d', '-F', FORMAT, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  cleanups.push(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let output = '';
  let readyResolve: () => void;
  const ready = new Promise<void>((resolve) => {
    readyResolve = resolve;
  });
  child.stdout!.on('data', (chunk: Buffer) => {
    output += chunk.toString();
    if (output.includes('received SUBACK')) readyResolve();
  });
  child.stderr!.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  // 'close', not 'exit': the output may still be in the pipe at 'exit'.
  const lines = once(child, 'close').then(([code]) => {
    if (code !== 0) throw new Error(`mosquitto_sub exited with ${code}:\n${output}`);
    return output
      .split('\n')
      .filter((line) => line.startsWith('MSG '))
      .map((line) => line.slice(4));
  });
  lines.catch(() => {}); // a subscriber a test kills on purpose: its lines are never awaited
  return { child, ready, lines };
}

async function mosquittoPub(port: number, args: string[]): Promise<string> {
  const child = spawn('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(port), '-d', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr!.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  const [code] = await once(child, 'close'); // 'close': after the last output
  if (code !== 0) throw new Error(`mosquitto_pub exited with ${code}:\n${output}`);
  return output;
}

/** What FORMAT prints for a message. */
const line = (topic: string, qos: number, bytes: Buffer) => `${topic}|${qos}|0|${bytes.length}|${bytes.toString('hex')}`;

describe.skipIf(missing !== null).each(BROKERS)('$name broker with mosquitto_sub / mosquitto_pub', (kind) => {
  async function broker() {
    const running = await kind.start();
    cleanups.push(async () => {
      await running.close();
      if (running.pool !== undefined) expect(running.pool.stats().inUse).toBe(0);
    });
    return running;
  }

  it('routes by + and # wildcards', async () => {
    const { port } = await broker();
    const plus = mosquittoSub(port, ['-t', 'm/+/temp', '-t', 'sync', '-C', '3']);
    const hash = mosquittoSub(port, ['-t', 'm/#', '-t', 'sync', '-C', '5']);
    await Promise.all([plus.ready, hash.ready]);
    for (const topic of ['m/1/temp', 'm/2/hum', 'm/1/temp/deep', 'x/1/temp', 'm/3/temp', 'sync']) {
      await mosquittoPub(port, ['-t', topic, '-m', topic, '-q', '1']);
    }
    const text = (topic: string) => line(topic, 0, Buffer.from(topic));
    expect(await plus.lines).toEqual(['m/1/temp', 'm/3/temp', 'sync'].map(text));
    expect(await hash.lines).toEqual(['m/1/temp', 'm/2/hum', 'm/1/temp/deep', 'm/3/temp', 'sync'].map(text));
  });

  it('acknowledges QoS 1 both ways and downgrades to the subscription QoS', async () => {
    const { port } = await broker();
    const atOne = mosquittoSub(port, ['-t', 'q', '-q', '1', '-C', '2']);
    const atZero = mosquittoSub(port, ['-t', 'q', '-q', '0', '-C', '2']);
    await Promise.all([atOne.ready, atZero.ready]);
    const sent = await mosquittoPub(port, ['-t', 'q', '-m', 'once', '-q', '1']);
    expect(sent).toMatch(/received PUBACK \(Mid: 1/);
    await mosquittoPub(port, ['-t', 'q', '-m', 'twice', '-q', '0']);
    expect(await atOne.lines).toEqual([line('q', 1, Buffer.from('once')), line('q', 0, Buffer.from('twice'))]);
    expect(await atZero.lines).toEqual([line('q', 0, Buffer.from('once')), line('q', 0, Buffer.from('twice'))]);
  });

  it('carries payloads of 64 KiB and more unchanged', async () => {
    const { port } = await broker();
    const sizes = [64 * KiB, 300 * KiB + 5, 2048 * KiB];
    const subscriber = mosquittoSub(port, ['-t', 'big/#', '-q', '1', '-C', String(sizes.length)]);
    await subscriber.ready;
    for (const [i, size] of sizes.entries()) {
      const file = path.join(scratch, `payload-${kind.name}-${i}`);
      writeFileSync(file, payload(size, i + 7));
      await mosquittoPub(port, ['-t', `big/${i}`, '-f', file, '-q', String(i % 2)]);
    }
    const expected = sizes.map((size, i) => line(`big/${i}`, i % 2, payload(size, i + 7)));
    expect(await subscriber.lines).toEqual(expected);
  });

  it('keeps no retained message', async () => {
    const { port } = await broker();
    await mosquittoPub(port, ['-t', 'r/state', '-m', 'kept?', '-r', '-q', '1']);
    const late = mosquittoSub(port, ['-t', 'r/state', '-C', '1']);
    await late.ready;
    await mosquittoPub(port, ['-t', 'r/state', '-m', 'now', '-q', '1']);
    expect(await late.lines).toEqual([line('r/state', 0, Buffer.from('now'))]);
  });

  it('fans out to 20 mosquitto_sub processes', async () => {
    const { port } = await broker();
    const subscribers = Array.from({ length: 20 }, (_, i) =>
      mosquittoSub(port, ['-t', i % 2 ? 'many/+' : 'many/#', '-q', String(i % 2), '-C', '3']),
    );
    await Promise.all(subscribers.map((s) => s.ready));
    const bodies = [payload(10, 1), payload(5000, 2), payload(70_000, 3)];
    for (const [i, body] of bodies.entries()) {
      const file = path.join(scratch, `many-${kind.name}-${i}`);
      writeFileSync(file, body);
      await mosquittoPub(port, ['-t', `many/${i}`, '-f', file, '-q', '1']);
    }
    for (const [i, subscriber] of subscribers.entries()) {
      expect(await subscriber.lines).toEqual(bodies.map((body, n) => line(`many/${n}`, i % 2, body)));
    }
  });

  it('disconnects a frozen mosquitto_sub after 1.5 × its keep-alive and publishes its will', async () => {
    const { port } = await broker();
    const observer = await connect(port, { clientId: 'observer' }, cleanups);
    await observer.client.subscribeAsync('wills/#');
    const spawnedAt = performance.now(); // before its CONNECT: the broker's clock for it starts later
    const sleepy = mosquittoSub(port, ['-t', 'nothing', '-k', '5', '--will-topic', 'wills/sleepy', '--will-payload', 'gone']);
    await sleepy.ready;
    sleepy.child.kill('SIGSTOP');
    const [will] = await observer.received(1);
    expect([will.topic, will.payload.toString()]).toEqual(['wills/sleepy', 'gone']);
    expect(performance.now() - spawnedAt).toBeGreaterThanOrEqual(7450); // never before 1.5 × 5 s after the CONNECT
  });
});
