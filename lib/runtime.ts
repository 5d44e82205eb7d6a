// The runtimes iobuf is tested on, and a one-time note for any other. CI
// (.ci/run) runs the whole test suite on each Node major below, and a smoke
// test of every part (scripts/smoke.mjs) on Bun. A runtime outside that list
// may well work (the addon is plain Node-API), but what differs there is
// unknown: rather than let it differ silently, loading iobuf emits one
// process warning with the code IOBUF_UNTESTED_RUNTIME.
import { isMainThread } from 'node:worker_threads';

/** The Node majors the whole test suite runs on. */
export const TESTED_NODE_MAJORS: readonly number[] = [20, 22, 24, 26];

const TESTED = `iobuf is tested on Node ${TESTED_NODE_MAJORS.slice(0, -1).join(', ')} and ${TESTED_NODE_MAJORS.at(-1)}`;

/** The note for a runtime the test suite does not run on; null for a tested one. */
export function untestedRuntimeNote(versions: { node?: string; bun?: string; deno?: string }): string | null {
  // Bun and Deno report a Node version too (Bun 1.4: 26.3.0): check them first.
  if (versions.bun !== undefined) {
    return (
      `${TESTED}; on Bun ${versions.bun} only a smoke test of every part runs. Known difference: ` +
      "FrameAssembler reads sockets through 'data' events (one copy more, stats().readMode 'data'). See docs/api.md, \"Runtimes\"."
    );
  }
  if (versions.deno !== undefined) {
    return `${TESTED}; Deno ${versions.deno} is not tested. See docs/api.md, "Runtimes".`;
  }
  const major = Number(versions.node?.split('.')[0]);
  if (TESTED_NODE_MAJORS.includes(major)) return null;
  return (
    `${TESTED}; Node ${versions.node ?? '(unknown)'} is not tested: behaviour that differs between majors ` +
    '(error codes, the largest Buffer, how sockets read) may differ here. See docs/api.md, "Runtimes".'
  );
}

// Once per process, however many copies of iobuf it loads: not in workers,
// and not again from a second copy (the flag is on the main thread's global).
const NOTED = Symbol.for('iobuf.untestedRuntimeNoted');

/** Emits the note (a process warning, code IOBUF_UNTESTED_RUNTIME) once, on the main thread. */
export function noteUntestedRuntime(): void {
  const global = globalThis as { [NOTED]?: boolean };
  if (!isMainThread || global[NOTED]) return;
  global[NOTED] = true;
  const note = untestedRuntimeNote(process.versions);
  if (note !== null) process.emitWarning(note, { code: 'IOBUF_UNTESTED_RUNTIME' });
}
