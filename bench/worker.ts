// SPDX-License-Identifier: GPL-2.0-only
/*
 * The benchmark child process: runs exactly one job and exits.
 *
 * run.ts forks this module once per job (child_process.fork), sends the job
 * over IPC, and receives one message back: { type: 'result', result } or
 * { type: 'skipped', reason } (the store cannot load) or { type: 'error',
 * message }. A fresh process per job means no JIT state, heap, native cache
 * or open file carries over from one measurement to the next.
 *
 * A workload job: load the adapter -> open on a fresh device/file in the
 * job's fresh directory (run.ts creates it and removes it after this process
 * has exited, crash or not) -> preload (untimed) -> put the store in its cache
 * regime -> measure -> verify what the store holds -> close.
 * A limit job: bench/limit.ts.
 *
 * No forced garbage collection between the preload and the measurement: a
 * gc() at that quiet moment, with no transaction alive, frees the hidden
 * classes the JIT compiled the engine's hot functions against, and V8 throws
 * that optimized code away ("weak objects": 20 functions of the commit path)
 * and compiles it again during the measured phase. The 95 commits of the
 * batched-insert job then cost 30-60% more CPU and ran 15-20% slower (alternating
 * runs, docs/benchmarks.md). A running server does not force collections;
 * the preload's garbage is collected when V8 chooses, in every store alike.
 */

import { KeySet, Rng } from './keys.js';
import type { LimitJob, LimitResult } from './limit.js';
import { measureDeviceLimit } from './limit.js';
import type { CpuTotals, CpuUse, Driver, Measurement, ScanDriver } from './measure.js';
import { cpuPerOp, cpuProbe, measureLanes, measureScan, measureSerial } from './measure.js';
import type { CacheCounters, RegimeInfo, StoreAdapter, StoreInfo } from './stores/adapter.js';
import { loadAdapter } from './stores/adapter.js';
import type { WorkloadJob } from './workloads.js';
import { keysetCount, workloadDef } from './workloads.js';

export type Job = WorkloadJob | LimitJob;

export interface WorkloadResult {
  job: WorkloadJob;
  store: StoreInfo;
  regime: RegimeInfo;
  queueDepth: number;
  keysPerCall: number;
  latencyPer: string;
  loadMs: number;
  measurement: Measurement;
  /** Node-cache misses per call during the measurement (sixtree), when the store counts them. */
  cacheMissesPerCall?: number;
  cacheHitRatio?: number;
  /** undefined when the store held what the workload wrote; otherwise what was wrong. */
  verifyError?: string;
  storeStats: unknown;
  /** Set by run.ts / targets.ts: shares of the machine's CPU time while the job ran (report.ts CpuShares): other processes, kernel threads and interrupts, hypervisor steal. */
  otherCpuShare?: number;
  kernelCpuShare?: number;
  stealCpuShare?: number;
  /** The measured phase's CPU time per op and event-loop busy share (measure.ts cpuProbe). */
  cpu?: CpuUse;
}

export type WorkerMessage =
  | { type: 'result'; result: WorkloadResult }
  | { type: 'limit'; result: LimitResult }
  | { type: 'skipped'; reason: string }
  | { type: 'error'; message: string };

/** What the job was doing, so that an error says where it happened (open, load, regime, measure, verify, close). */
let phase = 'start';

async function runWorkload(job: WorkloadJob): Promise<WorkerMessage> {
  const def = workloadDef(job.workload);
  let store: StoreAdapter;
  try {
    store = await loadAdapter(job.store);
  } catch (err) {
    return { type: 'skipped', reason: (err as Error).message.split('\n')[0]! };
  }
  const dir = job.dir;
  let opened = false;
  try {
    const keys = new KeySet(def.keyset, keysetCount(def, job.keyCount));
    phase = 'open';
    await store.open({
      dir,
      keys,
      deviceSizeBytes: job.deviceSizeBytes,
      nodeSizeBytes: job.nodeSizeBytes,
      io: job.io,
      cacheSizeBytes: job.cacheSizeBytes,
      ...(job.inlineFlush ? { inlineFlush: true } : {}),
      ...(job.devicePath ? { devicePath: job.devicePath } : {}),
    });
    opened = true;
    phase = 'load';
    const loadStart = performance.now();
    await store.load(0, job.keyCount);
    const loadMs = performance.now() - loadStart;
    phase = 'regime';
    const regime = await store.prepareRegime(job.regime, def.queueDepth);
    phase = 'measure';

    const { driver, checker } = def.build({ store, keys, loaded: job.keyCount, rng: new Rng(0x5eed + job.keyCount) });
    let before: CacheCounters | undefined;
    let after: CacheCounters | undefined;
    let cpuRead: (() => CpuTotals) | undefined;
    let cpuTotals: CpuTotals | undefined;
    const budget = {
      timeMs: job.timeMs,
      warmupMs: job.warmupMs,
      onRunStart: () => {
        before = store.cacheCounters();
        cpuRead = cpuProbe();
      },
      onRunEnd: () => {
        after = store.cacheCounters();
        cpuTotals = cpuRead?.();
      },
    };
    let measurement: Measurement;
    if ('scan' in driver) measurement = await measureScan(driver as ScanDriver, budget);
    else if (def.queueDepth > 1) measurement = await measureLanes(driver as Driver, def.queueDepth, budget);
    else measurement = await measureSerial(`${job.workload}/${job.store}`, driver as Driver, budget);
    phase = 'verify';
    const verifyError = await checker.verify();

    const result: WorkloadResult = {
      job,
      store: store.info,
      regime,
      queueDepth: def.queueDepth,
      keysPerCall: def.keysPerCall,
      latencyPer: def.latencyPer,
      loadMs,
      measurement,
      storeStats: store.stats(),
      ...(verifyError ? { verifyError } : {}),
    };
    const cpu = cpuPerOp(cpuTotals, measurement.ops);
    if (cpu) result.cpu = cpu;
    if (before && after) {
      const misses = after.misses - before.misses;
      const lookups = misses + (after.hits - before.hits);
      result.cacheMissesPerCall = measurement.calls > 0 ? misses / measurement.calls : undefined;
      result.cacheHitRatio = lookups > 0 ? 1 - misses / lookups : undefined;
    }
    opened = false;
    phase = 'close';
    await store.close();
    return { type: 'result', result };
  } finally {
    if (opened) await store.close().catch(() => undefined);
  }
}

async function runJob(job: Job): Promise<WorkerMessage> {
  if (job.kind === 'limit') return { type: 'limit', result: await measureDeviceLimit(job) };
  return runWorkload(job);
}

function reply(msg: WorkerMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) {
      console.log(JSON.stringify(msg));
      resolve();
      return;
    }
    process.send(msg, undefined, {}, () => resolve());
  });
}

process.once('message', (job: Job) => {
  runJob(job)
    .catch((err: unknown): WorkerMessage => ({ type: 'error', message: `${phase}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}` }))
    .then(reply)
    .then(() => process.exit(0));
});
