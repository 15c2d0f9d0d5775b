// SPDX-License-Identifier: GPL-2.0-only
/*
 * `npm run bench:targets`: where sixtree stands against the project's
 * performance targets, measured several times, so that a ratio comes with
 * its run-to-run spread (on a noisy machine one run can land anywhere in a
 * band 2x wide; a single run's ratio is not a result).
 *
 * The targets (issue 10), each a ratio of two rates measured in the same
 * repetition, on the same keys:
 *   cached rand_lookup       sixtree (cached, getSync) / lmdb get             >= 1
 *   seq_lookup (full scan)   sixtree range / lmdb getRange                     >= 1
 *   batched inserts          sixtree rand_insert_batch / classic-level batch   >= 1
 *   64 commits in flight     sixtree rand_insert_qd64 / lmdb rand_insert       >= 5
 *                            (durable single-key commits; lmdb's durable puts, one at a time)
 *   cold rand_lookup         sixtree (cold) / the device's random reads of the
 *                            cold node size at the same queue depth (1, 8
 *                            and 64: rand_lookup, _qd8, _qd64)                >= 0.8
 *
 * One repetition runs every job once, each in a fresh child (jobs.ts, as
 * `npm run bench` does); repetitions follow one another, so slow drift of
 * the machine spreads over all targets alike. A cold job's reference is
 * the device limit at its queue depth measured right before and right after
 * it (the mean of the two): this VM's disk moved 2x within a minute (qd64:
 * 11.7k-24.1k reads/s between repetitions), so a limit measured a minute
 * earlier said little about the seconds the job ran. A
 * target's verdict is its median ratio; the table also prints every
 * repetition's ratio, min and max, the median rates and sixtree's CPU time
 * per op. Everything goes to bench/results/targets-<timestamp>.json.
 *
 *   npm run bench:targets -- [--repeat 5] [--keys 100k] [--node-size 256k]
 *       [--io napi|koffi] [--time MS] [--quick] [--json OUT] [--dir DIR]
 *
 * Exit status: 0 when every job ran (a missed target is a result, not a
 * failure); 1 when a job failed or a store did not hold what was written;
 * 2 for bad options.
 */

import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { median } from './measure.js';
import { UsageError, commonOptionSpecs, runEntryPoint, parseCount, parseMs, parseSize } from './options.js';
import { cachedCacheBytes, coldNodeSize, deviceBytes, failureText, repoRoot, runInChild, runMeta, targetText } from './jobs.js';
import type { LimitJob, LimitResult } from './limit.js';
import { busyNote, formatRate, otherCpuShareWarning, shareFields, sizeLabel } from './report.js';
import type { IoBackend, Regime, StoreName } from './stores/adapter.js';
import type { WorkloadResult } from './worker.js';
import type { WorkloadJob, WorkloadName } from './workloads.js';

const help = `Usage: npm run bench:targets -- [options]

Runs the jobs behind the performance targets --repeat times and prints, per
target, the ratio in every repetition, its median (the verdict), min and max.

Options:
  --repeat N        repetitions (default 3; 1 with --quick)
  --keys N          keys preloaded (default 100k; k, M = 10^3, 10^6)
  --node-size S     sixtree node size of the cached jobs (default 256k); cold
                    jobs use the largest size <= S that can be cold (as npm run bench)
  --io B            sixtree I/O backend: napi (default) or koffi
  --time MS         measured time per job (default 2000)
  --warmup MS       warmup per job (default 250)
  --limit-time MS   device-limit measurement (default 1000)
  --quick           5k keys, 0.2 s per job: a smoke run of the script
  --device PATH     run sixtree's jobs and the device limit on this block or loop
                    device (ITS CONTENTS ARE DESTROYED) instead of fresh files
  --dir DIR         where fresh files go (default: the OS temp dir; not tmpfs)
  --out DIR         results directory (default bench/results)
  --json OUT        also write the JSON report to OUT
  --help            this text
`;

interface Options {
  repeat: number;
  keyCount: number;
  nodeSizeBytes: number;
  io: IoBackend;
  timeMs: number;
  warmupMs: number;
  limitTimeMs: number;
  quick: boolean;
  dir: string;
  devicePath?: string;
  outDir: string;
  jsonOut?: string;
}

function parseOptions(argv: string[]): Options | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: { ...commonOptionSpecs, repeat: { type: 'string' }, device: { type: 'string' } },
  });
  if (values.help) return 'help';
  const quick = values.quick === true;
  const repeat = values.repeat === undefined ? (quick ? 1 : 3) : Number(values.repeat);
  if (!Number.isInteger(repeat) || repeat < 1 || repeat > 100) throw new UsageError(`--repeat: a whole number in 1..100, not ${values.repeat}`);
  const io = values.io ?? 'napi';
  if (io !== 'napi' && io !== 'koffi') throw new UsageError(`--io: napi or koffi, not ${io}`);
  return {
    repeat,
    keyCount: parseCount(values.keys ?? (quick ? '5k' : '100k'), '--keys'),
    nodeSizeBytes: parseSize(values['node-size'] ?? '256k', '--node-size'),
    io,
    timeMs: parseMs(values.time, '--time', quick ? 200 : 2000),
    warmupMs: parseMs(values.warmup, '--warmup', quick ? 50 : 250),
    limitTimeMs: parseMs(values['limit-time'], '--limit-time', quick ? 300 : 1000),
    quick,
    dir: path.resolve(values.dir ?? os.tmpdir()),
    ...(values.device ? { devicePath: path.resolve(values.device) } : {}),
    outDir: path.resolve(values.out ?? path.join(repoRoot, 'bench', 'results')),
    ...(values.json ? { jsonOut: path.resolve(values.json) } : {}),
  };
}

/** One job a target reads: a workload on a store in a regime. */
interface JobSpec {
  workload: WorkloadName;
  store: StoreName;
  regime: Regime;
}

/** A target: ours / reference >= goal, where the reference is a peer's job or the device's limit. */
interface Target {
  name: string;
  goal: number;
  ours: JobSpec;
  ref: JobSpec | { limitQueueDepth: number };
  /** What the two rates are, for the table. */
  text: string;
}

/** A target against a peer store's job (its regime: the page cache). */
function vsPeer(name: string, goal: number, workload: WorkloadName, peerWorkload: WorkloadName, peer: StoreName, text: string): Target {
  return { name, goal, ours: { workload, store: 'sixtree', regime: 'cached' }, ref: { workload: peerWorkload, store: peer, regime: 'page-cache' }, text };
}

const targets: Target[] = [
  vsPeer('cached rand_lookup', 1, 'rand_lookup', 'rand_lookup', 'lmdb', "sixtree getSync / lmdb's get"),
  vsPeer('seq_lookup (scan)', 1, 'seq_lookup', 'seq_lookup', 'lmdb', "sixtree range / lmdb's getRange"),
  vsPeer('batched inserts', 1, 'rand_insert_batch', 'rand_insert_batch', 'classic-level', "1,000 keys per durable commit / classic-level's batch"),
  vsPeer('64 commits in flight', 5, 'rand_insert_qd64', 'rand_insert', 'lmdb', "durable single-key commits, 64 in flight / lmdb's durable puts"),
  ...([1, 8, 64] as const).map(
    (qd): Target => ({
      name: `cold rand_lookup qd${qd}`,
      goal: 0.8,
      ours: { workload: qd === 1 ? 'rand_lookup' : `rand_lookup_qd${qd}`, store: 'sixtree', regime: 'cold' },
      ref: { limitQueueDepth: qd },
      text: `lookups missing at the leaf, ${qd} in flight / the device's node-sized random reads at queue depth ${qd}`,
    }),
  ),
];

/** The device-limit queue depths the targets read. */
const limitQueueDepths = [...new Set(targets.flatMap((t) => ('limitQueueDepth' in t.ref ? [t.ref.limitQueueDepth] : [])))];

function refKey(t: Target): string {
  return 'limitQueueDepth' in t.ref ? `device-limit-qd${t.ref.limitQueueDepth}` : specKey(t.ref);
}

function specKey(s: JobSpec): string {
  return `${s.workload}/${s.store}/${s.regime}`;
}

/** The distinct jobs of one repetition, in the order they run. */
function jobSpecs(): JobSpec[] {
  const seen = new Map<string, JobSpec>();
  for (const t of targets) {
    for (const s of 'limitQueueDepth' in t.ref ? [t.ours] : [t.ours, t.ref]) if (!seen.has(specKey(s))) seen.set(specKey(s), s);
  }
  return [...seen.values()];
}

function workloadJob(o: Options, s: JobSpec): WorkloadJob {
  const cold = s.regime === 'cold';
  return {
    kind: 'workload',
    workload: s.workload,
    store: s.store,
    regime: s.regime,
    keyCount: o.keyCount,
    nodeSizeBytes: cold ? coldNodeSize(o.keyCount, o.nodeSizeBytes) : o.nodeSizeBytes,
    io: o.io,
    dir: o.dir,
    deviceSizeBytes: deviceBytes(o.keyCount),
    cacheSizeBytes: cachedCacheBytes(o.keyCount),
    timeMs: o.timeMs,
    warmupMs: o.warmupMs,
    ...(o.devicePath && s.store === 'sixtree' ? { devicePath: o.devicePath } : {}),
  };
}

function limitJob(o: Options, queueDepth: number): LimitJob {
  return {
    kind: 'limit',
    pattern: 'randread',
    blockBytes: coldNodeSize(o.keyCount, o.nodeSizeBytes),
    queueDepth,
    io: o.io,
    durationMs: o.limitTimeMs,
    dir: o.dir,
    fileSizeBytes: o.quick ? 64 << 20 : 256 << 20,
    ...(o.devicePath ? { devicePath: o.devicePath } : {}),
  };
}

/** What one repetition measured: rates by job key (and 'device-limit-qd<N>'), sixtree's CPU per op. */
interface Repetition {
  rates: Record<string, number>;
  cpuUsPerOp: Record<string, number>;
  /** A job whose regime is not what its target needs (e.g. "not cold": the cache holds the tree). */
  regimeWarnings: Record<string, string>;
  /** Shares of the machine's CPU other processes used, and the hypervisor took (steal), while each job ran (report.ts CpuShares). */
  otherCpuShare: Record<string, number>;
  stealCpuShare: Record<string, number>;
  results: WorkloadResult[];
  /** Each limit measured, in order, with which side of its cold job it was taken on. */
  limits: (LimitResult & { when: 'before' | 'after' })[];
}

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** The queue depth of the device limit a job is held against (cold jobs), by job key. */
const limitQueueDepthOf = new Map(targets.flatMap((t) => ('limitQueueDepth' in t.ref ? [[specKey(t.ours), t.ref.limitQueueDepth] as const] : [])));

async function runRepetition(o: Options, rep: number, errors: string[]): Promise<Repetition> {
  const r: Repetition = { rates: {}, cpuUsPerOp: {}, regimeWarnings: {}, otherCpuShare: {}, stealCpuShare: {}, results: [], limits: [] };
  /* one device-limit measurement (when: 'before' or 'after' the job it brackets): reads/s, or undefined */
  const limit = async (qd: number, when: 'before' | 'after'): Promise<number | undefined> => {
    const lj = limitJob(o, qd);
    const { msg: lm } = await runInChild(lj, false);
    const what = `device limit ${sizeLabel(lj.blockBytes)} qd${qd} (${when})`;
    if (lm.type === 'limit' && lm.result.available) {
      r.limits.push({ ...lm.result, when });
      log(`  [${rep}] ${what}: ${formatRate(lm.result.opsPerSec!)} reads/s`);
      return lm.result.opsPerSec!;
    }
    const why = failureText(lm);
    errors.push(`repetition ${rep}: ${what}: ${why}`);
    log(`  [${rep}] ${what}: n/a (${why})`);
    return undefined;
  };
  for (const s of jobSpecs()) {
    const job = workloadJob(o, s);
    const qd = limitQueueDepthOf.get(specKey(s));
    const before = qd === undefined ? undefined : await limit(qd, 'before');
    const { msg, shares } = await runInChild(job, false);
    const after = qd === undefined ? undefined : await limit(qd, 'after');
    if (qd !== undefined) {
      const got = [before, after].filter((x): x is number => x !== undefined);
      if (got.length) r.rates[`device-limit-qd${qd}`] = got.reduce((a, b) => a + b, 0) / got.length;
    }
    const label = `${s.workload} ${s.store}${s.store === 'sixtree' ? ` ${s.regime} ${sizeLabel(job.nodeSizeBytes)}` : ''}`;
    if (msg.type !== 'result') {
      const why = failureText(msg);
      errors.push(`repetition ${rep}: ${label}: ${why}`);
      log(`  [${rep}] ${label}: ERROR ${why}`);
      continue;
    }
    const res = { ...msg.result, ...shareFields(shares) };
    if (res.verifyError) errors.push(`repetition ${rep}: ${label}: store did not hold what was written: ${res.verifyError}`);
    r.results.push(res);
    r.rates[specKey(s)] = res.measurement.opsPerSec;
    if (res.cpu) r.cpuUsPerOp[specKey(s)] = res.cpu.usPerOp;
    if (res.regime.warning) r.regimeWarnings[specKey(s)] = res.regime.warning;
    if (shares !== undefined) {
      r.otherCpuShare[specKey(s)] = shares.others;
      r.stealCpuShare[specKey(s)] = shares.steal;
    }
    const note = busyNote(res);
    const busy = note ? `; ${note}` : '';
    log(`  [${rep}] ${label}: ${formatRate(res.measurement.opsPerSec)} ops/s${res.cpu ? `, ${res.cpu.usPerOp.toPrecision(3)} us CPU/op` : ''}${res.regime.warning ? ` (${res.regime.warning})` : ''}${busy}`);
  }
  return r;
}

interface TargetOutcome {
  name: string;
  goal: number;
  text: string;
  ratios: number[];
  ratioMedian: number;
  ratioMin: number;
  ratioMax: number;
  /** Repetitions in which the machine was busy (others used, or the hypervisor took, > 10% of the CPU) while sixtree's job ran. */
  busyRuns: number;
  /** null: not measured as the target needs (regimeWarning says why). */
  met: boolean | null;
  regimeWarning?: string;
  oursRateMedian: number;
  refRateMedian: number;
  oursCpuUsPerOpMedian?: number;
}

function outcomes(reps: Repetition[]): TargetOutcome[] {
  const out: TargetOutcome[] = [];
  for (const t of targets) {
    const ok = specKey(t.ours);
    const rk = refKey(t);
    const ratios: number[] = [];
    const ours: number[] = [];
    const refs: number[] = [];
    const cpu: number[] = [];
    let regimeWarning: string | undefined;
    let busyRuns = 0;
    for (const r of reps) {
      regimeWarning ??= r.regimeWarnings[ok];
      if ((r.otherCpuShare[ok] ?? 0) > otherCpuShareWarning || (r.stealCpuShare?.[ok] ?? 0) > otherCpuShareWarning) busyRuns++;
      const a = r.rates[ok];
      const b = r.rates[rk];
      if (a !== undefined) ours.push(a);
      if (b !== undefined) refs.push(b);
      if (r.cpuUsPerOp[ok] !== undefined) cpu.push(r.cpuUsPerOp[ok]!);
      if (a !== undefined && b !== undefined && b > 0) ratios.push(a / b);
    }
    if (ratios.length === 0) continue;
    const m = median(ratios);
    out.push({
      name: t.name,
      goal: t.goal,
      text: t.text,
      ratios,
      ratioMedian: m,
      ratioMin: Math.min(...ratios),
      ratioMax: Math.max(...ratios),
      busyRuns,
      met: regimeWarning !== undefined ? null : m >= t.goal,
      ...(regimeWarning !== undefined ? { regimeWarning } : {}),
      oursRateMedian: median(ours),
      refRateMedian: median(refs),
      ...(cpu.length ? { oursCpuUsPerOpMedian: median(cpu) } : {}),
    });
  }
  return out;
}

function ratioText(x: number): string {
  return `${x >= 10 ? x.toFixed(1) : x.toPrecision(3)}x`;
}

function formatOutcomes(o: Options, list: TargetOutcome[]): string {
  const lines: string[] = [];
  lines.push(`targets: ${o.repeat} repetition${o.repeat === 1 ? '' : 's'}, ${o.keyCount} keys, node ${sizeLabel(o.nodeSizeBytes)} (cold: ${sizeLabel(coldNodeSize(o.keyCount, o.nodeSizeBytes))}), ${o.io}`);
  const head = ['target', 'goal', 'median', 'min-max', 'verdict', 'each run', 'sixtree/s', 'reference/s', 'sixtree cpu us/op'];
  const rows = list.map((t) => [
    t.name,
    `>= ${ratioText(t.goal)}`,
    ratioText(t.ratioMedian),
    `${ratioText(t.ratioMin)}-${ratioText(t.ratioMax)}`,
    t.met === null ? 'n/a (regime)' : t.met ? 'met' : `missed (${((t.ratioMedian / t.goal) * 100).toFixed(1)}% of goal)`,
    t.ratios.map(ratioText).join(' '),
    formatRate(t.oursRateMedian),
    formatRate(t.refRateMedian),
    t.oursCpuUsPerOpMedian !== undefined ? t.oursCpuUsPerOpMedian.toPrecision(3) : '-',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const fmt = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  lines.push(fmt(head));
  for (const r of rows) lines.push(fmt(r));
  for (const t of list) {
    const busy = t.busyRuns > 0 ? `; busy machine (others or hypervisor steal > ${otherCpuShareWarning * 100}% CPU) in ${t.busyRuns} of its ${t.ratios.length} runs` : '';
    lines.push(`  ${t.name}: ${t.text}${t.regimeWarning ? `; n/a: ${t.regimeWarning}` : ''}${busy}`);
  }
  lines.push('Rates and CPU are medians over the repetitions; the verdict is the median ratio against the goal.');
  return lines.join('\n');
}

async function main(o: Options): Promise<number> {
  const startedAt = new Date();
  const where = targetText(o);
  log(`bench:targets: ${o.repeat} repetition(s) of ${jobSpecs().length} jobs + ${limitQueueDepths.length} device limits (each before and after its job); ${where}`);
  const errors: string[] = [];
  const reps: Repetition[] = [];
  for (let rep = 1; rep <= o.repeat; rep++) reps.push(await runRepetition(o, rep, errors));
  const list = outcomes(reps);
  const finishedAt = new Date();
  const report = {
    schema: 'sixtree-bench-targets/1',
    meta: {
      ...runMeta(startedAt, finishedAt),
      options: o,
      target: where,
    },
    targets: list,
    errors,
    repetitions: reps,
  };
  const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
  mkdirSync(o.outDir, { recursive: true });
  const jsonPath = path.join(o.outDir, `targets-${stamp}.json`);
  const json = JSON.stringify(report, null, 2) + '\n';
  writeFileSync(jsonPath, json);
  if (o.jsonOut) writeFileSync(o.jsonOut, json);
  process.stdout.write(formatOutcomes(o, list) + '\n');
  for (const e of errors) log(`error: ${e}`);
  log(`wrote ${path.relative(process.cwd(), jsonPath)}${o.jsonOut ? `, ${o.jsonOut}` : ''}`);
  return errors.length > 0 ? 1 : 0;
}

runEntryPoint('bench:targets', help, parseOptions, main);
