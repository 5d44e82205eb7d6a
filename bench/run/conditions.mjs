// What else the machine was doing while the benchmarks ran.
//
// Recorded for every run (scripts/run-bench.mjs) and for each suite in it:
//   - the load average (os.loadavg(): 1, 5 and 15 minutes) at the start and
//     at the end;
//   - the CPU time every other process used meanwhile: the busy time of all
//     CPUs (/proc/stat) less the CPU time of the bench's own processes (this
//     one and every descendant: trials, senders, servers; /proc/<pid>/stat
//     utime + stime + cutime + cstime), in cores on average; and the share of
//     time the VM's host took the CPUs away (steal);
//   - the bench's own CPU use over the last minute before the end, which the
//     1-minute load average at the end includes.
//
// A run (or suite) is NOISY when, per core:
//   - the 1-minute load average at the start was above 0.5, or
//   - the 1-minute load average at the end, less the bench's own processes'
//     CPU use over that last minute, was above 0.5, or
//   - other processes used more than 0.5 of the CPU time on average.
// Its figures are then indicative only, and the output and results say so.
import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';

export const NOISY_LOAD_PER_CORE = 0.5;
const SAMPLE_EVERY_MS = 2000;
const LAST_MINUTE_MS = 60_000;

/** Aggregate CPU time of all CPUs from /proc/stat, in clock ticks. */
function cpuTicks() {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = fields;
  return { busy: user + nice + system + irq + softirq, total: user + nice + system + idle + iowait + irq + softirq + steal, steal };
}

/** CPU ticks used by process `root` and all its live descendants, their reaped children included. */
function treeTicks(root = process.pid) {
  const children = new Map();
  const ticks = new Map();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    // "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const pid = Number(entry);
    const ppid = Number(fields[1]);
    ticks.set(pid, Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]));
    if (!children.has(ppid)) children.set(ppid, []);
    children.get(ppid).push(pid);
  }
  let sum = 0;
  const stack = [root];
  while (stack.length) {
    const pid = stack.pop();
    sum += ticks.get(pid) ?? 0;
    stack.push(...(children.get(pid) ?? []));
  }
  return sum;
}

function sample() {
  return { at: Date.now(), load: os.loadavg(), cpu: cpuTicks(), own: treeTicks() };
}

const round = (v, digits = 2) => Number(v.toFixed(digits));

/**
 * Starts watching. `mark()` returns a point to measure from; `report(from)`
 * describes the machine between that point and now.
 */
export function watchConditions() {
  const cores = os.availableParallelism();
  const samples = [sample()];
  const timer = setInterval(() => samples.push(sample()), SAMPLE_EVERY_MS);
  timer.unref();
  return {
    cores,
    mark() {
      const point = sample();
      samples.push(point);
      return point;
    },
    report(from) {
      const to = sample();
      samples.push(to);
      const total = to.cpu.total - from.cpu.total;
      const othersTicks = Math.max(0, to.cpu.busy - from.cpu.busy - (to.own - from.own));
      // The bench's own CPU use over (at most) the last minute, from the sample nearest a minute back.
      const minuteAgo =
        samples.filter((s) => s.at >= from.at && s.at <= to.at - LAST_MINUTE_MS).pop() ?? samples.find((s) => s.at >= from.at) ?? from;
      const window = to.cpu.total - minuteAgo.cpu.total;
      const ownLastMinute = window > 0 ? ((to.own - minuteAgo.own) / window) * cores : 0;
      const conditions = {
        cores,
        seconds: round((to.at - from.at) / 1000, 1),
        loadStart: from.load.map((v) => round(v)),
        loadEnd: to.load.map((v) => round(v)),
        ownCoresLastMinute: round(ownLastMinute),
        othersCores: total > 0 ? round((othersTicks / total) * cores) : 0,
        stealShare: total > 0 ? round((to.cpu.steal - from.cpu.steal) / total, 3) : 0,
      };
      const reasons = [];
      const limit = NOISY_LOAD_PER_CORE * cores;
      if (conditions.loadStart[0] > limit) reasons.push(`load average ${conditions.loadStart[0]} at the start`);
      const endLoadOfOthers = conditions.loadEnd[0] - ownLastMinute;
      if (endLoadOfOthers > limit) {
        reasons.push(`load average ${conditions.loadEnd[0]} at the end, ${round(endLoadOfOthers)} of it not the bench's`);
      }
      if (conditions.othersCores > limit) reasons.push(`other processes used ${conditions.othersCores} cores on average`);
      conditions.noisy = reasons.length > 0;
      conditions.reasons = reasons;
      return conditions;
    },
    stop() {
      clearInterval(timer);
    },
  };
}

/** One line for the start of a run. */
export function describeStart(load, cores) {
  return `load average ${load.map((v) => v.toFixed(2)).join(' / ')} (1 / 5 / 15 min) on ${cores} cores at the start`;
}

/** Lines describing `conditions` (from report()), ending with the NOISY RUN note when it applies. */
export function describeConditions(conditions, what = 'run') {
  const lines = [
    `load average at the start ${conditions.loadStart.join(' / ')}, at the end ${conditions.loadEnd.join(' / ')} ` +
      `(1 / 5 / 15 min, ${conditions.cores} cores; the bench itself kept ${conditions.ownCoresLastMinute} cores busy over its last minute)`,
    `other processes used ${conditions.othersCores} cores on average over the ${conditions.seconds} s` +
      (conditions.stealShare > 0 ? `; the VM's host took ${(100 * conditions.stealShare).toFixed(1)}% of the CPU time (steal)` : ''),
  ];
  lines.push(
    conditions.noisy
      ? `NOISY RUN (this ${what}): ${conditions.reasons.join('; ')} (limit: ${NOISY_LOAD_PER_CORE} per core) — the figures are indicative only`
      : `quiet ${what}: the load of other processes stayed at or below ${NOISY_LOAD_PER_CORE} per core`,
  );
  return lines;
}
