// SPDX-License-Identifier: GPL-2.0-only
/*
 * Timing: how a workload's calls become ops/s and latency percentiles.
 *
 * A Driver is one workload bound to one store: call() does one unit of work
 * (a lookup, a commit, a range delete) and returns how many keys it handled;
 * callsLeft() says how many more calls are possible (workloads that consume
 * keys, such as deletes, run out; Infinity for the others).
 *
 * Warmup is ours, the same for every method: calls at the measured queue depth
 * for warmupMs, but never more than 5% of the calls a consuming workload has,
 * so that warmup cannot eat the measurement. Then one of:
 *
 *  - measureSerial: one call at a time, with tinybench 6 (its time budget,
 *    sampling and latency percentiles). ops/s is ours: keys handled in the run
 *    phase divided by the wall time of the run phase, measured around it
 *    (tinybench's own throughput is a mean of per-sample rates, which is not
 *    ops/s when latencies vary).
 *  - measureLanes: `queueDepth` async loops sharing one driver, each timing
 *    its own calls with hrtime: N calls in flight, a latency sample per call.
 *    Loops check the clock after every call, so synchronous stores (whose
 *    calls never yield) still stop on time; they are then effectively serial,
 *    which is the truth about them.
 *  - measureScan: full ordered scans repeated until the time budget, one
 *    latency sample per key (the time between consecutive keys: where a scan
 *    waits for a node read shows up in p99).
 *
 * Latency samples are kept in a bounded reservoir (uniform sample of all
 * calls), so memory stays bounded on fast stores.
 */

import { Bench } from 'tinybench';
import type { MaybePromise } from './stores/adapter.js';

export interface Driver {
  call(): MaybePromise<number>;
  callsLeft(): number;
  /** Whether call() returns a promise (tinybench measures sync and async calls differently). */
  async: boolean;
}

export interface ScanDriver {
  /** One full scan; calls onEntry per key until it returns false; resolves to keys visited. */
  scan(onEntry: () => boolean): Promise<number>;
}

export interface LatencySummary {
  p50Us: number;
  p99Us: number;
  /** In the JSON only: the tail the table does not show (a mean far above p99 lives here). */
  p999Us: number;
  maxUs: number;
  meanUs: number;
  samples: number;
}

export interface Measurement {
  method: 'tinybench' | 'lanes' | 'scan';
  /** Keys handled in the measured phase. */
  ops: number;
  /** Calls (commits, lookups, range deletes) in the measured phase. */
  calls: number;
  elapsedMs: number;
  opsPerSec: number;
  latency: LatencySummary;
  /** True when the workload ran out of keys before the time budget. */
  exhausted: boolean;
  /** Synchronous calls that returned a promise instead (counted; their wait is not in the latency). */
  asyncFallbacks?: number;
}

export interface Budget {
  timeMs: number;
  warmupMs: number;
  /** Called right before and right after the measured phase (warmup excluded). */
  onRunStart?: () => void;
  onRunEnd?: () => void;
}

/**
 * What the measured phase cost the benchmarking process: CPU time (user +
 * system, every thread of the process: a store's own worker threads count)
 * per op, and the share of the wall time the event loop was busy
 * (performance.eventLoopUtilization: JavaScript and the system calls made
 * from it). A store whose loop is busy ~100% of the time is CPU-bound on
 * its JavaScript thread; one far below waits for the device.
 */
export interface CpuUse {
  usPerOp: number;
  userUsPerOp: number;
  systemUsPerOp: number;
  /** 0..1 */
  loopBusy: number;
}

/** CPU time (us) and event-loop busy share since a cpuProbe() started. */
export interface CpuTotals {
  userUs: number;
  systemUs: number;
  loopBusy: number;
}

/** Start measuring; the returned function reads the totals since. */
export function cpuProbe(): () => CpuTotals {
  const cpu0 = process.cpuUsage();
  const elu0 = performance.eventLoopUtilization();
  return () => {
    const cpu = process.cpuUsage(cpu0);
    return { userUs: cpu.user, systemUs: cpu.system, loopBusy: performance.eventLoopUtilization(elu0).utilization };
  };
}

/** Totals over `ops` ops (undefined without ops). */
export function cpuPerOp(t: CpuTotals | undefined, ops: number): CpuUse | undefined {
  if (!t || !(ops > 0)) return undefined;
  return { usPerOp: (t.userUs + t.systemUs) / ops, userUsPerOp: t.userUs / ops, systemUsPerOp: t.systemUs / ops, loopBusy: t.loopBusy };
}

const reservoirSamplesMax = 1 << 21;
const warmupCallsFraction = 0.05;

function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

function isPromise<T>(v: MaybePromise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown } | undefined)?.then === 'function';
}

/** Uniform sample of latencies (Algorithm R), in microseconds. */
class Reservoir {
  private readonly samples = new Float64Array(reservoirSamplesMax);
  private seen = 0;
  private sumUs = 0;
  private maxUs = 0;
  private rng = 0x2545f491;

  add(us: number): void {
    this.sumUs += us;
    if (us > this.maxUs) this.maxUs = us;
    if (this.seen < reservoirSamplesMax) {
      this.samples[this.seen++] = us;
      return;
    }
    this.seen++;
    this.rng ^= this.rng << 13;
    this.rng ^= this.rng >>> 17;
    this.rng ^= this.rng << 5;
    const j = Math.floor(((this.rng >>> 0) / 0x1_0000_0000) * this.seen);
    if (j < reservoirSamplesMax) this.samples[j] = us;
  }

  summary(): LatencySummary {
    const n = Math.min(this.seen, reservoirSamplesMax);
    if (n === 0) return { p50Us: NaN, p99Us: NaN, p999Us: NaN, maxUs: NaN, meanUs: NaN, samples: 0 };
    const sorted = this.samples.slice(0, n).sort();
    return {
      p50Us: quantile(sorted, 0.5),
      p99Us: quantile(sorted, 0.99),
      p999Us: quantile(sorted, 0.999),
      maxUs: Math.max(this.maxUs, sorted[n - 1]!),
      meanUs: this.sumUs / this.seen,
      samples: this.seen,
    };
  }
}

/** The median of xs (the mean of the middle two for an even count); xs is not changed. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Linear interpolation between closest ranks (the same definition tinybench uses). */
export function quantile(sorted: Float64Array, q: number): number {
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.min(sorted.length - 1, lo + 1);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

export async function measureSerial(name: string, driver: Driver, budget: Budget): Promise<Measurement> {
  await warmup(driver, 1, budget.warmupMs);
  const abort = new AbortController();
  let keys = 0;
  let calls = 0;
  let runStartMs = 0;
  let runEndMs = 0;
  if (driver.callsLeft() <= 0) throw new Error(`${name}: nothing left to measure after warmup`);
  let exhausted = false;
  let asyncFallbacks = 0;
  const pending: Promise<void>[] = [];
  const after = (n: number): void => {
    keys += n;
    calls++;
    if (driver.callsLeft() <= 0) {
      exhausted = true;
      abort.abort();
    }
  };
  const fn = driver.async
    ? async () => {
        after(await driver.call());
      }
    : () => {
        const r = driver.call();
        if (isPromise(r)) {
          /* a synchronous call that could not answer at once (sixtree getSync -> get): counted, its wait not timed */
          asyncFallbacks++;
          pending.push(r.then(after));
        } else after(r);
      };
  const bench = new Bench({
    name,
    time: budget.timeMs,
    iterations: 16,
    warmup: false,
    throws: true,
    signal: abort.signal,
    timestampProvider: 'hrtimeNow',
  });
  bench.add(name, fn, {
    async: driver.async,
    beforeAll() {
      budget.onRunStart?.();
      runStartMs = nowMs();
    },
    afterAll() {
      runEndMs = nowMs();
      budget.onRunEnd?.();
    },
  });
  await bench.run();
  await Promise.all(pending);
  if (runEndMs === 0) {
    runEndMs = nowMs();
    budget.onRunEnd?.();
  }
  const result = bench.tasks[0]!.result;
  if (result.state === 'errored') throw result.error;
  if (result.state !== 'completed' && result.state !== 'aborted-with-statistics') throw new Error(`${name}: no measurement (tinybench state ${result.state})`);
  const elapsedMs = runEndMs - runStartMs;
  return {
    method: 'tinybench',
    ops: keys,
    calls,
    elapsedMs,
    opsPerSec: (keys * 1000) / elapsedMs,
    latency: {
      p50Us: result.latency.p50 * 1000,
      p99Us: result.latency.p99 * 1000,
      p999Us: result.latency.p999 * 1000,
      maxUs: result.latency.max * 1000,
      meanUs: result.latency.mean * 1000,
      samples: result.latency.samplesCount,
    },
    exhausted,
    ...(asyncFallbacks > 0 ? { asyncFallbacks } : {}),
  };
}

/** Warmup calls at the given queue depth: warmupMs, capped at a fraction of a consuming workload's calls. */
async function warmup(driver: Driver, queueDepth: number, warmupMs: number): Promise<void> {
  if (warmupMs <= 0) return;
  const left = driver.callsLeft();
  const maxCalls = Number.isFinite(left) ? Math.floor(left * warmupCallsFraction) : Infinity;
  if (maxCalls <= 0) return;
  await runLanes(driver, queueDepth, warmupMs, undefined, maxCalls);
}

async function runLanes(driver: Driver, queueDepth: number, durationMs: number, reservoir: Reservoir | undefined, maxCalls = Infinity) {
  let keys = 0;
  let calls = 0;
  let started = 0;
  const deadlineMs = nowMs() + durationMs;
  const lane = async (): Promise<void> => {
    while (driver.callsLeft() > 0 && started < maxCalls) {
      started++;
      const t0 = process.hrtime.bigint();
      const r = driver.call();
      const n = isPromise(r) ? await r : r;
      const t1 = process.hrtime.bigint();
      reservoir?.add(Number(t1 - t0) / 1000);
      keys += n;
      calls++;
      if (Number(t1) / 1e6 >= deadlineMs) break;
    }
  };
  await Promise.all(Array.from({ length: queueDepth }, lane));
  return { keys, calls };
}

export async function measureLanes(driver: Driver, queueDepth: number, budget: Budget): Promise<Measurement> {
  await warmup(driver, queueDepth, budget.warmupMs);
  const reservoir = new Reservoir();
  budget.onRunStart?.();
  const t0 = nowMs();
  const { keys, calls } = await runLanes(driver, queueDepth, budget.timeMs, reservoir);
  const elapsedMs = nowMs() - t0;
  budget.onRunEnd?.();
  return { method: 'lanes', ops: keys, calls, elapsedMs, opsPerSec: (keys * 1000) / elapsedMs, latency: reservoir.summary(), exhausted: driver.callsLeft() <= 0 };
}

export async function measureScan(driver: ScanDriver, budget: Budget): Promise<Measurement> {
  if (budget.warmupMs > 0) {
    const deadlineMs = nowMs() + budget.warmupMs;
    await driver.scan(() => nowMs() < deadlineMs);
  }
  const reservoir = new Reservoir();
  budget.onRunStart?.();
  const t0 = nowMs();
  const deadlineMs = t0 + budget.timeMs;
  let keys = 0;
  let calls = 0;
  while (nowMs() < deadlineMs) {
    let last = process.hrtime.bigint();
    let stopped = false;
    keys += await driver.scan(() => {
      const t = process.hrtime.bigint();
      reservoir.add(Number(t - last) / 1000);
      last = t;
      if (Number(t) / 1e6 >= deadlineMs) stopped = true;
      return !stopped;
    });
    calls++;
    if (stopped) break;
  }
  const elapsedMs = nowMs() - t0;
  budget.onRunEnd?.();
  return { method: 'scan', ops: keys, calls, elapsedMs, opsPerSec: (keys * 1000) / elapsedMs, latency: reservoir.summary(), exhausted: false };
}
