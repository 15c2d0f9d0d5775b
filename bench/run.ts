// SPDX-License-Identifier: GPL-2.0-only
/*
 * `npm run bench`: the entry point. Owns the command line, the plan (which
 * jobs, in which order, with which sizes; the sizes and running each job in a
 * fresh child process of bench/worker.ts are bench/jobs.ts's, shared with
 * bench/targets.ts), and writing the outputs: the table on stdout,
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

import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { UsageError, commonOptionSpecs, runEntryPoint, parseCount, parseList, parseMs, parseSize } from './options.js';
import { cachedCacheBytes, coldNodeSize, deviceBytes, failureText, repoRoot, runInChild, runMeta, targetText } from './jobs.js';
import type { LimitJob, LimitResult } from './limit.js';
import type { JobError, Report, Skipped } from './report.js';
import { buildRows, cpuShares, cpuSnapshot, formatRate, formatTable, shareFields, sizeLabel } from './report.js';
import type { IoBackend, Regime, StoreInfo, StoreName } from './stores/adapter.js';
import { storeNames } from './stores/adapter.js';
import { renderSvg } from './svg.js';
import type { WorkloadResult } from './worker.js';
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

function parseOptions(argv: string[]): Options | 'help' {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      ...commonOptionSpecs,
      full: { type: 'boolean' },
      'inline-flush': { type: 'boolean' },
      workloads: { type: 'string' },
      stores: { type: 'string' },
      regimes: { type: 'string' },
      'cold-node-size': { type: 'string' },
      device: { type: 'string' },
      keep: { type: 'boolean' },
      'cpu-prof': { type: 'string' },
      'cpu-prof-interval': { type: 'string' },
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

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

async function main(o: Options): Promise<number> {
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
      const reason = failureText(msg);
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
    const { msg, shares } = await runInChild(job, o.keep, o.cpuProfDir, o.cpuProfIntervalUs);
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    if (msg.type === 'result') {
      const r = { ...msg.result, ...shareFields(shares) };
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
  const runShares = cpuShares(cpuStart, cpuSnapshot());
  const report: Report = {
    schema: 'sixtree-bench/1',
    meta: {
      ...runMeta(startedAt, finishedAt),
      ...shareFields(runShares),
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

runEntryPoint('bench', help, parseOptions, main);
