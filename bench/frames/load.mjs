// Load generator for the example RPC servers (examples/rpc-server*.ts):
// `connections` loopback connections, each keeping `depth` requests in flight
// (pipelined: a new request goes out as each response arrives), for a fixed
// time. Returns requests per second and latency percentiles.
//
// The client must not be what limits the run (client and server share the
// two cores here), so it is lean: one request Buffer per in-flight slot,
// made once; responses are read through `onread` into one reused buffer and
// only their headers are looked at; the requests a read answered go out
// corked, in one writev.
import net from 'node:net';
import { spawn, spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const ECHO = 1;
const BYTES = 2;

/**
 * The example servers are TypeScript. They run compiled by tsc (as the package's
 * dist/ is; compileServers() at the suite's setup), not through tsx: tsx's module
 * output reaches every cross-module function through a getter, which cost the
 * server on iobuf (lib/ is many modules) more than half its requests per second
 * at 1 KiB echo and the plain twin (one module) nothing.
 */
const BUILD = path.join(ROOT, 'bench', '.build', 'frames');
const ADDON = createRequire(import.meta.url)('node-gyp-build').path(ROOT);

/** Compiles examples/rpc-*.ts and the lib/ they import into bench/.build/frames/. */
export function compileServers() {
  // From scratch: a file left from an older layout (lib/gather.js beside lib/gather/)
  // would be loaded instead of the folder that replaced it.
  rmSync(BUILD, { recursive: true, force: true });
  const tsc = spawnSync(path.join(ROOT, 'node_modules', '.bin', 'tsc'), ['-p', path.join(ROOT, 'bench', 'frames', 'tsconfig.json')], {
    cwd: ROOT,
    stdio: 'inherit',
  });
  if (tsc.status !== 0) throw new Error('compiling examples/rpc-server*.ts failed');
}

/** Starts the compiled `examples/<file>` (a .ts name) in a child process and resolves with its port and the child. */
export function startServerProcess(file) {
  const compiled = path.join(BUILD, 'examples', file.replace(/\.ts$/, '.js'));
  const child = spawn(process.execPath, [compiled, '--port', '0'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, IOBUF_ADDON_PATH: ADDON },
  });
  return new Promise((resolve, reject) => {
    let output = '';
    child.stdout.on('data', (chunk) => {
      output += chunk;
      const match = /listening on [\d.]+:(\d+)/.exec(output);
      if (match) resolve({ port: Number(match[1]), child });
    });
    child.on('exit', (code) => reject(new Error(`${file} exited with ${code} before listening`)));
  });
}

export async function stopServerProcess(child) {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
  await exited;
  clearTimeout(timer);
}

/**
 * Drives the server at `port`: op 'echo' (request and response bodies of
 * `size` bytes) or 'bytes' (a small request for `size` bytes). Measures for
 * `seconds` after `warmupSeconds`.
 */
export async function runLoad({ port, op, size, connections, depth, seconds, warmupSeconds }) {
  const latencies = new Float64Array(2_000_000);
  let recorded = 0;
  let completed = 0;
  let measuring = false;
  let stopped = false;
  let failure = null;

  const clients = [];
  for (let c = 0; c < connections; c++) {
    const sentAt = new Float64Array(depth);
    const requests = [];
    for (let slot = 0; slot < depth; slot++) {
      const body = op === 'echo' ? size : 4;
      const request = Buffer.alloc(4 + 5 + body, 0x5a);
      request.writeUInt32BE(5 + body, 0);
      request[4] = op === 'echo' ? ECHO : BYTES;
      request.writeUInt32BE(slot, 5);
      if (op === 'bytes') request.writeUInt32BE(size, 9);
      requests.push(request);
    }
    // Response parser state: header bytes (length u32 + op + id u32) then a body to skip.
    const header = Buffer.alloc(9);
    let headerFill = 0;
    let skip = 0;
    let socket;
    const answered = (slot) => {
      const now = performance.now();
      if (measuring) {
        completed++;
        if (recorded < latencies.length) latencies[recorded++] = now - sentAt[slot];
      }
      if (stopped) return;
      sentAt[slot] = performance.now();
      socket.write(requests[slot]);
    };
    const readBuffer = Buffer.allocUnsafe(256 * 1024);
    socket = net.connect({
      port,
      host: '127.0.0.1',
      noDelay: true,
      onread: {
        buffer: readBuffer,
        callback(nread, buffer) {
          // The requests answered by this read go out in one writev.
          socket.cork();
          let at = 0;
          while (at < nread) {
            if (skip > 0) {
              const take = Math.min(skip, nread - at);
              skip -= take;
              at += take;
              continue;
            }
            if (headerFill === 0 && nread - at >= 9) {
              const length = buffer.readUInt32BE(at);
              const slot = buffer.readUInt32BE(at + 5);
              at += 9;
              skip = length - 5;
              answered(slot);
              continue;
            }
            header[headerFill++] = buffer[at++];
            if (headerFill === 9) {
              headerFill = 0;
              skip = header.readUInt32BE(0) - 5;
              answered(header.readUInt32BE(5));
            }
          }
          socket.uncork();
        },
      },
    });
    socket.on('error', (error) => {
      failure ??= error;
    });
    clients.push(
      new Promise((resolve) => {
        socket.once('connect', () => {
          socket.cork();
          for (let slot = 0; slot < depth; slot++) {
            sentAt[slot] = performance.now();
            socket.write(requests[slot]);
          }
          socket.uncork();
          resolve(socket);
        });
      }),
    );
  }
  const sockets = await Promise.all(clients);
  await new Promise((resolve) => setTimeout(resolve, warmupSeconds * 1000));
  measuring = true;
  const start = performance.now();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  measuring = false;
  const elapsed = (performance.now() - start) / 1000;
  stopped = true;
  for (const socket of sockets) socket.destroy();
  if (failure) throw failure;
  const sorted = latencies.subarray(0, recorded).sort();
  const percentile = (p) => (recorded === 0 ? NaN : sorted[Math.min(recorded - 1, Math.floor(recorded * p))]);
  return { requestsPerSecond: completed / elapsed, p50Ms: percentile(0.5), p99Ms: percentile(0.99), completed };
}
