// SPDX-License-Identifier: GPL-2.0-only
/*
 * `npm run bench`: the entry point. Owns the command line, the plan (which
 * jobs, in which order, with which sizes), running each job in a fresh child
 * process (bench/worker.ts), and writing the outputs: the table on stdout,
 * bench/results/<timestamp>.json and bench/results/<timestamp>.svg.
 *
 * Plan: device-limit jobs first (the device is otherwise idle), then for each
 * key count and workload, every store: sixtree once per node size x I/O
 * backend x cache regime, each peer once (node size and backend are sixtree's
 * knobs); cold jobs at the node size that can be cold at their key count
 * (coldNodeSize). Jobs run one at a time; a store that cannot load is skipped after
 * its first attempt, with the reason in the report.
 *
 * Sizes: the default suite (100k keys, 2 s per workload) fits in 5 minutes on
 * a 2-core machine; --quick (5k keys, 0.2 s) is the CI smoke run (< 60 s).
 */

import { execFileSync, fork } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { LimitJob, LimitResult } from './limit.js';
import type { JobError, Report, Skipped } from './report.js';
import { buildRows, cpuSnapshot, formatRate, formatTable, machineInfo, otherCpuShare, sizeLabel } from './report.js';
import type { IoBackend, Regime, StoreInfo, StoreName } from './stores/adapter.js';
import { storeNames } from './stores/adapter.js';
import { renderSvg } from './svg.js';
import type { Job, WorkerMessage, WorkloadResult } from './worker.js';
import type { WorkloadJob, WorkloadName } from './workloads.js';
import { workloadDef, workloadNames } from './workloads.js';

function wrap(text: string, widthChars: number, indentChars: number): string {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line && line.length + 1 + word.length > widthChars) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines.map((l) => ' '.repeat(indentChars) + l).join('\n');
}

const help = `Usage: npm run bench -- [options]
       node dist/bench/run.js [options]

Runs each workload in a fresh child process on a fresh store, for sixtree and
the peer stores, next to the device's own random-read limit, and prints a
table; writes bench/results/<timestamp>.json and .svg.

Options:
  --quick               CI smoke run: 5k keys, 0.2 s per workload (< 60 s)
  --full                whole matrix: keys 100k,1M; node sizes 16k,64k,256k;
                        I/O napi,koffi (long: tens of minutes)
  --keys N[,N]          keys preloaded per workload (default 100k; k/M = 10^3/10^6)
  --node-size S[,S]     sixtree node size (default 256k; k/M = KiB/MiB)
  --io B[,B]            sixtree I/O backend: napi, koffi (default napi)
  --inline-flush        sixtree opens with inlineFlush: a commit alone in
                        flight writes and flushes its journal entry on the
                        event loop's thread (rows say so in their notes)
  --workloads a,b       subset of (default all):
${wrap(workloadNames.join(', '), 54, 24)}
  --stores a,b          subset of: ${storeNames.join(', ')} (default all;
                        a store that cannot load is skipped with the reason)
  --regimes a,b         sixtree cache regimes: cached, cold (default both)
  --cold-node-size M    auto (default): cold jobs run at the largest node size
                        (<= --node-size) whose smallest cache is <= 8% of the
                        tree, so lookups miss at the leaf; same: keep --node-size
  --time MS             measured time per workload (default 2000; quick 200)
  --warmup MS           warmup per workload (default 250; quick 50)
  --limit-time MS       device-limit measurement per queue depth (default 1000; quick 300)
  --device PATH         format this block/loop device for sixtree instead of a
                        fresh file (ITS CONTENTS ARE DESTROYED); the device limit
                        is measured on it (reads only); peers still use --dir
  --dir DIR             where fresh files and directories go (default ${os.tmpdir()};
                        must support O_DIRECT, so not tmpfs)
  --out DIR             results directory (default bench/results)
  --json OUT            also write the JSON report to OUT ('-' = stdout; the table
                        then goes to stderr)
  --keep                keep each job's files (for inspection)
  --cpu-prof DIR        each job's child writes a V8 CPU profile to DIR
                        (<workload>-<store>[-<regime>-<node size>].cpuprofile; load
                        and measured phases both; open in Chrome DevTools)
  --cpu-prof-interval US  sampling interval of --cpu-prof (default 1000 us, V8's;
                        100 gives per-call costs of the hot paths)
  --help                this text

Exit status: 0 all jobs ran; 1 a job failed, a store did not hold what was
written, or sixtree could not load; 2 bad options.
`;

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..', '..');

interface Options {
  keyCounts: number[];
  nodeSizes: number[];
  io: IoBackend[];
  /** sixtree's open option inlineFlush (--inline-flush). */
  inlineFlush: boolean;
  workloads: WorkloadName[];
  stores: StoreName[];
  regimes: Regime[];
  /** --cold-node-size same: cold jobs keep the node size asked for, cold or not. */
  coldSameNodeSize: boolean;
  timeMs: number;
  warmupMs: number;
  limitTimeMs: number;
  devicePath?: string;
  dir: string;
  outDir: string;
  jsonOut?: string;
  keep: boolean;
  /** --cpu-prof: where each child writes its CPU profile. */
  cpuProfDir?: string;
  /** --cpu-prof-interval: V8's sampling interval for it, microseconds. */
  cpuProfIntervalUs?: number;
  mode: 'quick' | 'default' | 'full';
}

class UsageError extends Error {}

function parseCount(s: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)([kKmM]?)$/.exec(s.trim());
  if (!m) throw new UsageError(`${what}: "${s}" is not a count (e.g. 100000, 100k, 1M)`);
  const n = Number(m[1]) * (m[2] === '' ? 1 : /k/i.test(m[2]!) ? 1e3 : 1e6);
  if (!Number.isInteger(n) || n < 100 || n > 1e9) throw new UsageError(`${what}: ${s} must be an integer in 100..10^9`);
  return n;
}

function parseSize(s: string, what: string): number {
  const m = /^(\d+)([kKmM]?)(?:i?[bB])?$/.exec(s.trim());
  if (!m) throw new UsageError(`${what}: "${s}" is not a size (e.g. 16k, 256k, 1M)`);
  const n = Number(m[1]) * (m[2] === '' ? 1 : /k/i.test(m[2]!) ? 1024 : 1 << 20);
  if (n < 4096 || n > 1 << 20 || (n & (n - 1)) !== 0) throw new UsageError(`${what}: ${s} must be a power of two from 4k to 1M`);
  return n;
}

function parseMs(s: string | undefined, what: string, dflt: number): number {
  if (s === undefined) return dflt;
  const n = Number(s);
  if (!Number.isFinite(n) || n < 0 || n > 3_600_000) throw new UsageError(`${what}: ${s} must be milliseconds in 0..3600000`);
  return n;
}

function parseList<T extends string>(s: string, allowed: readonly T[], what: string): T[] {
  const items = s.split(',').map((x) => x.trim()).filter(Boolean);
  for (const x of items) if (!(allowed as readonly string[]).includes(x)) throw new UsageError(`${what}: unknown "${x}"; expected one of ${allowed.join(', ')}`);
  if (!items.length) throw new UsageError(`${what}: empty list`);
  return [...new Set(items)] as T[];
}

function parseOptions(argv: string[]): Options | 'help' {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      quick: { type: 'boolean' },
      full: { type: 'boolean' },
      keys: { type: 'string' },
      'node-size': { type: 'string' },
      io: { type: 'string' },
      'inline-flush': { type: 'boolean' },
      workloads: { type: 'string' },
      stores: { type: 'string' },
      regimes: { type: 'string' },
      'cold-node-size': { type: 'string' },
      time: { type: 'string' },
      warmup: { type: 'string' },
      'limit-time': { type: 'string' },
      device: { type: 'string' },
      dir: { type: 'string' },
      out: { type: 'string' },
      json: { type: 'string' },
      keep: { type: 'boolean' },
      'cpu-prof': { type: 'string' },
      'cpu-prof-interval': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  if (values.quick && values.full) throw new UsageError('--quick and --full exclude each other');
  const mode = values.quick ? 'quick' : values.full ? 'full' : 'default';
  const opts: Options = {
    mode,
    keyCounts: (values.keys ?? (mode === 'quick' ? '5k' : mode === 'full' ? '100k,1M' : '100k')).split(',').map((k) => parseCount(k, '--keys')),
    nodeSizes: (values['node-size'] ?? (mode === 'full' ? '16k,64k,256k' : '256k')).split(',').map((s) => parseSize(s, '--node-size')),
    io: parseList(values.io ?? (mode === 'full' ? 'napi,koffi' : 'napi'), ['napi', 'koffi'] as const, '--io'),
    inlineFlush: values['inline-flush'] === true,
    workloads: parseList(values.workloads ?? workloadNames.join(','), workloadNames, '--workloads'),
    stores: parseList(values.stores ?? storeNames.join(','), storeNames, '--stores'),
    regimes: parseList(values.regimes ?? 'cached,cold', ['cached', 'cold'] as const, '--regimes'),
    coldSameNodeSize: parseList(values['cold-node-size'] ?? 'auto', ['auto', 'same'] as const, '--cold-node-size')[0] === 'same',
    timeMs: parseMs(values.time, '--time', mode === 'quick' ? 200 : 2000),
    warmupMs: parseMs(values.warmup, '--warmup', mode === 'quick' ? 50 : 250),
    limitTimeMs: parseMs(values['limit-time'], '--limit-time', mode === 'quick' ? 300 : 1000),
    dir: path.resolve(values.dir ?? os.tmpdir()),
    outDir: path.resolve(values.out ?? path.join(repoRoot, 'bench', 'results')),
    keep: values.keep ?? false,
  };
  if (opts.timeMs <= 0) throw new UsageError('--time must be > 0');
  if (values.device) opts.devicePath = path.resolve(values.device);
  if (values['cpu-prof']) {
    opts.cpuProfDir = path.resolve(values['cpu-prof']);
    mkdirSync(opts.cpuProfDir, { recursive: true });
  }
  if (values['cpu-prof-interval'] !== undefined) {
    const us = Number(values['cpu-prof-interval']);
    if (!Number.isInteger(us) || us < 1) throw new UsageError('--cpu-prof-interval must be a whole number of microseconds >= 1');
    if (!opts.cpuProfDir) throw new UsageError('--cpu-prof-interval needs --cpu-prof DIR');
    opts.cpuProfIntervalUs = us;
  }
  if (values.json) opts.jsonOut = values.json === '-' ? '-' : path.resolve(values.json);
  return opts;
}

/** sixtree cache that holds the whole tree, inserts included (~400 bytes per key of node memory, generous). */
function cachedCacheBytes(keyCount: number): number {
  return Math.max(64 << 20, keyCount * 400);
}

/**
 * The cold regime wants a cache of about 5% of the tree (coldCacheFraction in
 * stores/sixtree.ts), but sixtree's cache has a floor: a reserve of 32 nodes
 * plus their aux search trees (about 1.22 x the node size each, one btree).
 * With large nodes and few keys that floor holds the whole tree, and nothing
 * misses. So cold jobs run at the largest node size, at most the one asked for
 * and at least 16k (coldNodeSizeMin), whose floor is at most coldCacheShareMax (8%) of the tree as
 * estimated from the key count (leaves hold about treeBytesPerKey per key
 * after random inserts; the job reports the share it really got). The row
 * names the node size it ran at ("cold 8K"), and the device limit is measured
 * at that size too. With too few keys for any size (--quick) the row is
 * flagged "not cold" as before. --cold-node-size same keeps the size asked for.
 */
const coldCacheShareMax = 0.08;
const treeBytesPerKey = 90;
const cacheFloorNodes = 32;
const cacheFloorPerNodeBytes = 1.22;
/** Smallest cold node size: 4 blocks of 4 KiB (nodes of fewer blocks are rewritten on nearly every change, README). */
const coldNodeSizeMin = 16384;

function coldNodeSize(keyCount: number, nodeSizeBytes: number): number {
  const treeBytes = keyCount * treeBytesPerKey;
  let size = nodeSizeBytes;
  while (size > coldNodeSizeMin && cacheFloorNodes * cacheFloorPerNodeBytes * size > coldCacheShareMax * treeBytes) size >>= 1;
  return size;
}

/** Size of sixtree's file-backed device: room for the tree, its doubling by inserts, and the journal. */
function deviceBytes(keyCount: number): number {
  return Math.max(256 << 20, keyCount * 1024);
}

function planJobs(o: Options): { limits: LimitJob[]; workloads: WorkloadJob[] } {
  const limits: LimitJob[] = [];
  const queueDepths = [...new Set(o.workloads.map(workloadDef).filter((d) => d.limitPattern === 'randread').map((d) => d.queueDepth))].sort((a, b) => a - b);
  const limitSizes = new Set(o.nodeSizes);
  if (o.regimes.includes('cold') && o.stores.includes('sixtree')) for (const k of o.keyCounts) for (const n of o.nodeSizes) limitSizes.add(o.coldSameNodeSize ? n : coldNodeSize(k, n));
  for (const blockBytes of [...limitSizes].sort((a, b) => a - b)) {
    for (const io of o.io) {
      for (const queueDepth of queueDepths) {
        limits.push({
          kind: 'limit',
          pattern: 'randread',
          blockBytes,
          queueDepth,
          io,
          durationMs: o.limitTimeMs,
          dir: o.dir,
          fileSizeBytes: o.mode === 'quick' ? 64 << 20 : 256 << 20,
          ...(o.devicePath ? { devicePath: o.devicePath } : {}),
        });
      }
    }
  }
  const jobs: WorkloadJob[] = [];
  for (const keyCount of o.keyCounts) {
    for (const workload of o.workloads) {
      for (const store of o.stores) {
        const base = {
          kind: 'workload' as const,
          workload,
          store,
          keyCount,
          dir: o.dir,
          deviceSizeBytes: deviceBytes(keyCount),
          cacheSizeBytes: cachedCacheBytes(keyCount),
          timeMs: o.timeMs,
          warmupMs: o.warmupMs,
          ...(o.devicePath ? { devicePath: o.devicePath } : {}),
        };
        if (store !== 'sixtree') {
          jobs.push({ ...base, regime: 'page-cache', nodeSizeBytes: o.nodeSizes[0]!, io: o.io[0]! });
          continue;
        }
        for (const nodeSizeBytes of o.nodeSizes) {
          for (const io of o.io) {
            for (const regime of o.regimes) {
              const size = regime === 'cold' && !o.coldSameNodeSize ? coldNodeSize(keyCount, nodeSizeBytes) : nodeSizeBytes;
              jobs.push({ ...base, regime, nodeSizeBytes: size, io, ...(o.inlineFlush ? { inlineFlush: true } : {}) });
            }
          }
        }
      }
    }
  }
  return { limits, workloads: jobs };
}

function jobTimeoutMs(job: Job): number {
  if (job.kind === 'limit') return 120_000 + job.durationMs;
  return 120_000 + job.timeMs * 2 + job.warmupMs + job.keyCount * 0.5;
}

/**
 * Run one job in a fresh child; resolves to its one message (errors become messages too) once
 * the child has exited, so that no two jobs ever overlap. Also measures the share of the
 * machine's CPU that other processes used meanwhile.
 */
async function runInChild(job: Job, keepFiles: boolean, cpuProfDir?: string, cpuProfIntervalUs?: number): Promise<{ msg: WorkerMessage; otherCpuShare?: number }> {
  const name = job.kind === 'limit' ? `limit-${job.queueDepth}` : `${job.workload}-${job.store}`;
  const dir = mkdtempSync(path.join(job.dir, `sixtree-bench-${name}-`));
  const prof = cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', cpuProfDir, '--cpu-prof-name', `${profileName(job)}.cpuprofile`] : [];
  if (cpuProfIntervalUs !== undefined) prof.push(`--cpu-prof-interval=${cpuProfIntervalUs}`);
  try {
    return await runForked({ ...job, dir }, prof);
  } finally {
    if (keepFiles) log(`  files kept in ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
}

/** A job's CPU profile file name (--cpu-prof): what ran, where. */
function profileName(job: Job): string {
  if (job.kind === 'limit') return `device-limit-qd${job.queueDepth}-${job.blockBytes >> 10}k`;
  const parts: string[] = [job.workload, job.store];
  if (job.store === 'sixtree') parts.push(job.regime, `${job.nodeSizeBytes >> 10}k`, job.io);
  parts.push(String(job.keyCount));
  return parts.join('-');
}

function runForked(job: Job, extraExecArgv: string[] = []): Promise<{ msg: WorkerMessage; otherCpuShare?: number }> {
  return new Promise((resolve) => {
    const cpuStart = cpuSnapshot();
    const child = fork(path.join(here, 'worker.js'), [], {
      execArgv: ['--expose-gc', ...extraExecArgv],
      stdio: ['ignore', 2, 'inherit', 'ipc'],
      serialization: 'json',
    });
    let received: WorkerMessage | undefined;
    let settled = false;
    const finish = (msg: WorkerMessage) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const share = otherCpuShare(cpuStart, cpuSnapshot());
      resolve(share === undefined ? { msg } : { msg, otherCpuShare: share });
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish({ type: 'error', message: `timed out after ${(jobTimeoutMs(job) / 1000).toFixed(0)} s (child ${child.pid} killed)` });
    }, jobTimeoutMs(job));
    child.on('message', (msg: WorkerMessage) => {
      received ??= msg;
    });
    child.on('error', (err) => finish({ type: 'error', message: `child process: ${err.message}` }));
    child.on('exit', (code, signal) => finish(received ?? { type: 'error', message: `child exited (${signal ?? `code ${code}`}) without a result` }));
    child.send(job);
  });
}

function gitInfo(): { commit: string; dirty: boolean } | undefined {
  try {
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain'], { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() !== '';
    return { commit, dirty };
  } catch {
    return undefined;
  }
}

const fsTypes: Record<number, string> = { 0xef53: 'ext4', 0x58465342: 'xfs', 0x9123683e: 'btrfs', 0x01021994: 'tmpfs', 0x794c7630: 'overlayfs', 0xca451a4e: 'bcachefs' };

function targetText(o: Options): string {
  let fsType = 'unknown fs';
  try {
    const t = statfsSync(o.dir).type;
    fsType = fsTypes[t] ?? `fs 0x${t.toString(16)}`;
  } catch {
    /* reported as unknown */
  }
  if (o.devicePath) return `sixtree on block device ${o.devicePath}; peers in ${o.dir} (${fsType})`;
  return `fresh files in ${o.dir} (${fsType})`;
}

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

async function main(): Promise<number> {
  let opts: Options | 'help';
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (err) {
    log(`bench: ${(err as Error).message} (see --help)`);
    return 2;
  }
  if (opts === 'help') {
    process.stdout.write(help);
    return 0;
  }
  const o = opts;
  const startedAt = new Date();
  const cpuStart = cpuSnapshot();
  const { limits: limitJobs, workloads: jobs } = planJobs(o);
  const target = targetText(o);
  log(`bench: ${jobs.length} workload jobs + ${limitJobs.length} device-limit jobs; ${target}`);

  const limits: LimitResult[] = [];
  for (const job of limitJobs) {
    const { msg } = await runInChild(job, o.keep, o.cpuProfDir, o.cpuProfIntervalUs);
    const what = `device limit ${sizeLabel(job.blockBytes)} qd${job.queueDepth} ${job.io}`;
    if (msg.type === 'limit') {
      limits.push(msg.result);
      log(`  ${what}: ${msg.result.available ? `${formatRate(msg.result.opsPerSec!)} reads/s` : `n/a (${msg.result.reason})`}`);
    } else {
      const reason = msg.type === 'skipped' ? msg.reason : msg.type === 'error' ? msg.message.split('\n')[0]! : `unexpected message ${msg.type}`;
      limits.push({ pattern: 'randread', blockBytes: job.blockBytes, queueDepth: job.queueDepth, io: job.io, target: job.devicePath ?? 'file', available: false, reason });
      log(`  ${what}: n/a (${reason})`);
    }
  }

  const results: WorkloadResult[] = [];
  const skipped: Skipped[] = [];
  const errors: JobError[] = [];
  const stores: Partial<Record<StoreName, StoreInfo>> = {};
  let n = 0;
  for (const job of jobs) {
    n++;
    const label = `[${n}/${jobs.length}] ${job.workload} ${job.store}${job.store === 'sixtree' ? ` ${job.regime} ${sizeLabel(job.nodeSizeBytes)} ${job.io}` : ''} ${job.keyCount} keys`;
    if (skipped.some((s) => s.store === job.store)) continue;
    const t0 = performance.now();
    const { msg, otherCpuShare: share } = await runInChild(job, o.keep, o.cpuProfDir, o.cpuProfIntervalUs);
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    if (msg.type === 'result') {
      const r = share === undefined ? msg.result : { ...msg.result, otherCpuShare: share };
      results.push(r);
      stores[r.store.name] = r.store;
      const flags = [r.regime.warning ? 'regime warning' : '', r.measurement.exhausted ? 'used all its keys' : '', r.verifyError ? `VERIFY FAILED: ${r.verifyError}` : ''].filter(Boolean).join('; ');
      log(`${label}: ${formatRate(r.measurement.opsPerSec)} ops/s, p99 ${r.measurement.latency.p99Us.toFixed(0)} us (load ${(r.loadMs / 1000).toFixed(1)} s, job ${secs} s)${flags ? ` [${flags}]` : ''}`);
    } else if (msg.type === 'skipped') {
      skipped.push({ store: job.store, reason: msg.reason });
      log(`${label}: ${job.store} skipped: ${msg.reason}`);
    } else {
      const message = msg.type === 'error' ? msg.message : `unexpected message ${msg.type}`;
      errors.push({ job, message });
      log(`${label}: ERROR ${message.split('\n')[0]} (${secs} s)`);
    }
  }

  const finishedAt = new Date();
  const runCpuShare = otherCpuShare(cpuStart, cpuSnapshot());
  const report: Report = {
    schema: 'sixtree-bench/1',
    meta: {
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      durationMs: finishedAt.getTime() - startedAt.getTime(),
      argv: process.argv.slice(2),
      ...(gitInfo() ? { git: gitInfo()! } : {}),
      machine: machineInfo(),
      ...(runCpuShare !== undefined ? { otherCpuShare: runCpuShare } : {}),
      options: { ...o },
      target,
    },
    stores,
    skipped,
    errors,
    limits,
    rows: buildRows(results, limits, o.nodeSizes.length > 1, o.io.length > 1, o.nodeSizes[0]!, o.io[0]!),
    results,
  };

  const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
  mkdirSync(o.outDir, { recursive: true });
  const jsonPath = path.join(o.outDir, `${stamp}.json`);
  const svgPath = path.join(o.outDir, `${stamp}.svg`);
  const json = JSON.stringify(report, null, 2) + '\n';
  writeFileSync(jsonPath, json);
  writeFileSync(svgPath, renderSvg(report));
  const tableOut = o.jsonOut === '-' ? process.stderr : process.stdout;
  tableOut.write(formatTable(report) + '\n\n');
  if (o.jsonOut === '-') process.stdout.write(json);
  else if (o.jsonOut) writeFileSync(o.jsonOut, json);
  log(`wrote ${path.relative(process.cwd(), jsonPath)}, ${path.relative(process.cwd(), svgPath)}${o.jsonOut && o.jsonOut !== '-' ? `, ${o.jsonOut}` : ''}`);
  // sixtree is what is under test: when it was asked for and could not load, the run failed.
  const failed = errors.length > 0 || results.some((r) => r.verifyError) || skipped.some((s) => s.store === 'sixtree');
  return failed ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    log(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exitCode = 1;
  },
);
