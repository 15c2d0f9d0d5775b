// SPDX-License-Identifier: GPL-2.0-only
/*
 * Reporting: from the jobs' raw results to the rows everyone reads (stdout
 * table, JSON file, chart). One place computes the derived numbers:
 *  - ratio to the best peer: ops/s / the highest ops/s among the peer stores
 *    (lmdb, classic-level, sqlite) for the same workload and key count;
 *  - ratio to the device: ops/s / the device's node-sized random-read limit at
 *    the row's queue depth, only for workloads whose access pattern is that
 *    (point lookups); '-' elsewhere, rather than a ratio against a pattern the
 *    workload does not have.
 * Rows carry notes for anything that qualifies a number: a regime that was
 * not reached, a workload that ran out of keys before its time budget, a
 * store that did not hold what was written (verify).
 */

import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import type { LimitResult } from './limit.js';
import type { StoreInfo, StoreName } from './stores/adapter.js';
import type { WorkloadResult } from './worker.js';
import type { WorkloadJob } from './workloads.js';
import { workloadDef, workloadNames } from './workloads.js';

export interface Row {
  keyCount: number;
  workload: string;
  store: StoreName | 'device';
  /** Series label: "sixtree cached 256K", "lmdb", "device qd1 256K". */
  series: string;
  regime: string;
  nodeSizeBytes?: number;
  io?: string;
  queueDepth: number;
  opsPerSec: number;
  p50Us: number;
  p99Us: number;
  vsBestPeer?: number;
  vsDevice?: number;
  cacheMissesPerCall?: number;
  /** CPU time (us, all threads of the process) per op, and event-loop busy share (0..1), in the measured phase. */
  cpuUsPerOp?: number;
  loopBusy?: number;
  notes: string[];
}

export interface Skipped {
  store: StoreName;
  reason: string;
}

export interface JobError {
  job: WorkloadJob;
  message: string;
}

export interface RunMeta {
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  argv: string[];
  git?: { commit: string; dirty: boolean };
  machine: ReturnType<typeof machineInfo>;
  /** Shares of the machine's CPU time during the run (0..1; report.ts CpuShares): other processes, kernel threads and interrupts, hypervisor steal. */
  otherCpuShare?: number;
  kernelCpuShare?: number;
  stealCpuShare?: number;
  options: Record<string, unknown>;
  target: string;
}

export interface Report {
  schema: 'sixtree-bench/1';
  meta: RunMeta;
  stores: Partial<Record<StoreName, StoreInfo>>;
  skipped: Skipped[];
  errors: JobError[];
  limits: LimitResult[];
  rows: Row[];
  results: WorkloadResult[];
}

const peerNames: ReadonlySet<string> = new Set(['lmdb', 'classic-level', 'sqlite']);
const storeOrder = ['sixtree', 'lmdb', 'classic-level', 'sqlite', 'device'];

/** Past this share of the machine's CPU used by other processes (or taken by the hypervisor), a row is marked "busy machine". */
export const otherCpuShareWarning = 0.1;

export interface CpuSnapshot {
  /** user + nice + system ticks of all CPUs (/proc/stat): time processes and kernel threads ran. */
  taskTicks: number;
  /** irq + softirq ticks (/proc/stat): interrupt work, most of it our own I/O's completions. */
  irqTicks: number;
  /** steal ticks (/proc/stat): time a virtual CPU was ready and the hypervisor ran something else. */
  stealTicks: number;
  totalTicks: number;
  /** This process and its reaped children (/proc/self/stat utime+stime+cutime+cstime). */
  ownTicks: number;
  /** utime+stime of each kernel thread (PF_KTHREAD) by pid: loop device workers, kworkers, ksoftirqd. */
  kthreadTicks: Map<number, number>;
}

/**
 * Where the machine's CPU time went while a job ran, as shares of all of it
 * (0..1), besides the job itself:
 *  - others: user-space processes other than this one and its children
 *    (what the "busy machine" note means);
 *  - kernel: kernel threads and interrupts (a loop device's workers, block
 *    completions: mostly the job's own I/O, so not counted as others);
 *  - steal: the hypervisor running something else on this VM's CPUs.
 */
export interface CpuShares {
  others: number;
  kernel: number;
  steal: number;
}

const PF_KTHREAD = 0x00200000;

/** Fields after the command name of a /proc/<pid>/stat line: [0] is state (field 3), [6] flags, [11]/[12] utime/stime. */
function statFields(text: string): string[] {
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}

function kernelThreadTicks(): Map<number, number> {
  const out = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    try {
      const f = statFields(readFileSync(`/proc/${pid}/stat`, 'utf8'));
      if ((Number(f[6]) & PF_KTHREAD) !== 0) out.set(pid, Number(f[11]) + Number(f[12]));
    } catch {
      /* the process exited meanwhile */
    }
  }
  return out;
}

/** CPU tick counters, to tell afterwards how much of the machine others used. Linux only; undefined elsewhere. ~4 ms (reads /proc/<pid>/stat of every process). */
export function cpuSnapshot(): CpuSnapshot | undefined {
  try {
    const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = cpu;
    const f = statFields(readFileSync('/proc/self/stat', 'utf8'));
    // utime..cstime are fields 14..17, i.e. indices 11..14 here.
    const ownTicks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    const taskTicks = user + nice + system;
    const irqTicks = irq + softirq;
    return { taskTicks, irqTicks, stealTicks: steal, totalTicks: taskTicks + irqTicks + steal + idle + iowait, ownTicks, kthreadTicks: kernelThreadTicks() };
  } catch {
    return undefined;
  }
}

export function cpuShares(a: CpuSnapshot | undefined, b: CpuSnapshot | undefined): CpuShares | undefined {
  if (!a || !b || b.totalTicks <= a.totalTicks) return undefined;
  const total = b.totalTicks - a.totalTicks;
  let kthreads = 0;
  for (const [pid, t] of b.kthreadTicks) kthreads += Math.max(0, t - (a.kthreadTicks.get(pid) ?? 0));
  const others = b.taskTicks - a.taskTicks - (b.ownTicks - a.ownTicks) - kthreads;
  return {
    others: Math.max(0, others) / total,
    kernel: (kthreads + b.irqTicks - a.irqTicks) / total,
    steal: (b.stealTicks - a.stealTicks) / total,
  };
}

/** The note a row (or a run) gets when others or the hypervisor took more than otherCpuShareWarning of the CPU; undefined otherwise. */
export function busyNote(s: { otherCpuShare?: number; stealCpuShare?: number }): string | undefined {
  const parts: string[] = [];
  if (s.otherCpuShare !== undefined && s.otherCpuShare > otherCpuShareWarning) parts.push(`others used ${(s.otherCpuShare * 100).toFixed(0)}% CPU`);
  if (s.stealCpuShare !== undefined && s.stealCpuShare > otherCpuShareWarning) parts.push(`hypervisor steal ${(s.stealCpuShare * 100).toFixed(0)}%`);
  return parts.length ? `busy machine: ${parts.join(', ')}` : undefined;
}

/** The shares as the fields results and reports carry. */
export function shareFields(s: CpuShares | undefined): { otherCpuShare?: number; kernelCpuShare?: number; stealCpuShare?: number } {
  return s === undefined ? {} : { otherCpuShare: s.others, kernelCpuShare: s.kernel, stealCpuShare: s.steal };
}

export function machineInfo() {
  const cpus = os.cpus();
  return {
    cpuModel: cpus[0]?.model ?? 'unknown',
    cpuCount: cpus.length,
    memBytes: os.totalmem(),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    uvThreadpoolSize: Number(process.env['UV_THREADPOOL_SIZE'] ?? 4),
  };
}

export function sizeLabel(bytes: number): string {
  if (bytes % (1 << 20) === 0) return `${bytes >> 20}M`;
  if (bytes % 1024 === 0) return `${bytes >> 10}K`;
  return `${bytes}B`;
}

function findLimit(limits: readonly LimitResult[], blockBytes: number, io: string, queueDepth: number): LimitResult | undefined {
  return limits.find((l) => l.blockBytes === blockBytes && l.io === io && l.queueDepth === queueDepth && l.available);
}

/** The table rows: every result, derived ratios, and the device limits as rows of their own. */
export function buildRows(results: readonly WorkloadResult[], limits: readonly LimitResult[], multiNodeSize: boolean, multiIo: boolean, defaultNodeSizeBytes: number, defaultIo: string): Row[] {
  const rows: Row[] = [];
  for (const r of results) {
    const m = r.measurement;
    const isSixtree = r.job.store === 'sixtree';
    const shape = [multiNodeSize || isSixtree ? sizeLabel(r.job.nodeSizeBytes) : '', multiIo ? r.job.io : ''].filter(Boolean).join(' ');
    const regime = isSixtree ? r.regime.regime : 'page cache';
    const notes: string[] = [];
    if (r.regime.warning) notes.push(`regime: ${r.regime.warning}`);
    if (r.regime.options?.length) notes.push(r.regime.options.join(', '));
    if (m.asyncFallbacks) notes.push(`${m.asyncFallbacks} of ${m.calls} sync calls fell back to async (wait not timed)`);
    if (m.exhausted) notes.push(`used all its keys in ${(m.elapsedMs / 1000).toFixed(2)} s (${m.calls} calls)`);
    if (r.verifyError) notes.push(`VERIFY FAILED: ${r.verifyError}`);
    const busy = busyNote(r);
    if (busy) notes.push(busy);
    rows.push({
      keyCount: r.job.keyCount,
      workload: r.job.workload,
      store: r.job.store,
      series: isSixtree ? `sixtree ${regime} ${shape}`.trim() : r.job.store,
      regime: isSixtree ? `${regime} ${shape}`.trim() : regime,
      ...(isSixtree ? { nodeSizeBytes: r.job.nodeSizeBytes, io: r.job.io } : {}),
      queueDepth: r.queueDepth,
      opsPerSec: m.opsPerSec,
      p50Us: m.latency.p50Us,
      p99Us: m.latency.p99Us,
      ...(r.cacheMissesPerCall !== undefined ? { cacheMissesPerCall: r.cacheMissesPerCall } : {}),
      ...(r.cpu ? { cpuUsPerOp: r.cpu.usPerOp, loopBusy: r.cpu.loopBusy } : {}),
      notes,
    });
  }

  for (const row of rows) {
    const best = Math.max(0, ...rows.filter((o) => o.keyCount === row.keyCount && o.workload === row.workload && peerNames.has(o.store)).map((o) => o.opsPerSec));
    if (best > 0) row.vsBestPeer = row.opsPerSec / best;
    const def = workloadDef(row.workload as (typeof workloadNames)[number]);
    if (def.limitPattern === 'randread') {
      const limit = findLimit(limits, row.nodeSizeBytes ?? defaultNodeSizeBytes, row.io ?? defaultIo, row.queueDepth);
      if (limit?.opsPerSec) row.vsDevice = row.opsPerSec / limit.opsPerSec;
    }
  }

  // Device limit rows, under every workload they bound, so the chart groups them with it.
  const keyCounts = [...new Set(rows.map((r) => r.keyCount))];
  for (const keyCount of keyCounts) {
    for (const name of workloadNames) {
      const def = workloadDef(name);
      if (def.limitPattern !== 'randread' || !rows.some((r) => r.keyCount === keyCount && r.workload === name)) continue;
      for (const l of limits) {
        if (!l.available || l.queueDepth !== def.queueDepth) continue;
        const shape = [sizeLabel(l.blockBytes), multiIo ? l.io : ''].filter(Boolean).join(' ');
        rows.push({
          keyCount,
          workload: name,
          store: 'device',
          series: `device ${shape}`,
          regime: `randread ${shape} qd${l.queueDepth}`,
          nodeSizeBytes: l.blockBytes,
          io: l.io,
          queueDepth: l.queueDepth,
          opsPerSec: l.opsPerSec!,
          p50Us: l.p50Us!,
          p99Us: l.p99Us!,
          vsDevice: 1,
          ...(l.cpu ? { cpuUsPerOp: l.cpu.usPerOp, loopBusy: l.cpu.loopBusy } : {}),
          notes: l.latencyPer === 'batch' ? [`latency per batch of ${l.queueDepth} reads (${l.engine ?? l.mode ?? 'batch'})`] : [],
        });
      }
    }
  }

  const wIndex = (w: string) => (workloadNames as readonly string[]).indexOf(w);
  rows.sort((a, b) => a.keyCount - b.keyCount || wIndex(a.workload) - wIndex(b.workload) || storeOrder.indexOf(a.store) - storeOrder.indexOf(b.store) || a.series.localeCompare(b.series));
  return rows;
}

export function formatRate(x: number): string {
  if (!Number.isFinite(x)) return 'n/a';
  if (x >= 1e6) return `${(x / 1e6).toPrecision(3)}M`;
  if (x >= 1e3) return `${(x / 1e3).toPrecision(3)}k`;
  return x.toPrecision(3);
}

export function formatUs(x: number): string {
  if (!Number.isFinite(x)) return 'n/a';
  if (x < 10) return x.toFixed(2);
  if (x < 100) return x.toFixed(1);
  return Math.round(x).toLocaleString('en-US');
}

function formatRatio(x: number | undefined): string {
  if (x === undefined) return '-';
  return x >= 10 ? `${x.toFixed(0)}x` : `${x.toFixed(2)}x`;
}

function table(header: string[], body: string[][], rightAlign: ReadonlySet<number>): string {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (rightAlign.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

/** One row's cells, as both tables show them: workload .. notes. */
function rowCells(row: Row): string[] {
  return [
    row.workload,
    row.store,
    row.regime,
    formatRate(row.opsPerSec),
    formatUs(row.p50Us),
    formatUs(row.p99Us),
    row.store === 'device' ? '' : formatRatio(row.vsBestPeer),
    row.store === 'device' ? '' : formatRatio(row.vsDevice),
    row.cacheMissesPerCall === undefined ? '' : row.cacheMissesPerCall.toFixed(2),
    row.cpuUsPerOp === undefined ? '' : formatUs(row.cpuUsPerOp),
    row.loopBusy === undefined ? '' : `${Math.round(row.loopBusy * 100)}%`,
    row.notes.join('; '),
  ];
}

/**
 * The rows as a Markdown table (docs/benchmarks.md, README): the same cells
 * as the text table, from the JSON report, so docs quote a run verbatim.
 */
export function formatMarkdown(report: Report): string {
  const out: string[] = [];
  const multiKeys = new Set(report.rows.map((r) => r.keyCount)).size > 1;
  const head = [...(multiKeys ? ['keys'] : []), 'workload', 'store', 'regime', 'ops/s', 'p50 us', 'p99 us', 'vs best peer', 'vs device', 'miss/call', 'cpu us/op', 'loop busy', 'notes'];
  out.push(`| ${head.join(' | ')} |`);
  out.push(`|${head.map(() => '---').join('|')}|`);
  const cell = (x: string): string => x.replace(/\|/g, '\\|');
  for (const row of report.rows) {
    const cells = [...(multiKeys ? [row.keyCount.toLocaleString('en-US')] : []), ...rowCells(row)];
    out.push(`| ${cells.map(cell).join(' | ')} |`);
  }
  return out.join('\n');
}

export function formatTable(report: Report): string {
  const out: string[] = [];
  const { meta } = report;
  out.push(`sixtree bench  ${meta.startedAt}  (${(meta.durationMs / 1000).toFixed(0)} s)`);
  out.push(`machine: ${meta.machine.cpuCount} x ${meta.machine.cpuModel}, ${(meta.machine.memBytes / 2 ** 30).toFixed(0)} GiB, ${meta.machine.os}, Node ${meta.machine.node}`);
  out.push(`target:  ${meta.target}`);
  const busy = busyNote(meta);
  if (busy) out.push(`WARNING: ${busy} (shares of the machine's CPU time during the run): numbers are noisy.`);
  out.push('');
  out.push('stores (durability / caching):');
  for (const info of Object.values(report.stores)) {
    out.push(`  ${info.name} ${info.version}: ${info.durability}`);
    out.push(`  ${' '.repeat(info.name.length + info.version.length + 1)}  ${info.caching}`);
  }
  for (const s of report.skipped) out.push(`  ${s.store}: skipped (${s.reason})`);
  out.push('');

  let keysSeen = -1;
  const body: string[][] = [];
  for (const row of report.rows) {
    if (row.keyCount !== keysSeen) {
      if (body.length) body.push(['', '', '', '', '', '', '', '', '', '', '', '']);
      body.push([`-- ${row.keyCount.toLocaleString('en-US')} keys --`, '', '', '', '', '', '', '', '', '', '', '']);
      keysSeen = row.keyCount;
    }
    body.push(rowCells(row));
  }
  out.push(table(['workload', 'store', 'regime', 'ops/s', 'p50 us', 'p99 us', 'vs peer', 'vs device', 'miss/call', 'cpu us/op', 'loop', 'notes'], body, new Set([3, 4, 5, 6, 7, 8, 9, 10])));
  out.push('');
  out.push('ops = keys (inserted, looked up, deleted, scanned); latency per call:');
  for (const name of workloadNames) {
    if (!report.rows.some((r) => r.workload === name)) continue;
    const def = workloadDef(name);
    out.push(`  ${name.padEnd(18)} ${def.description}; latency per ${def.latencyPer}`);
  }
  out.push('vs peer = ops/s / best peer store (lmdb, classic-level, sqlite) on the same workload.');
  out.push('vs device = ops/s / device random reads of one node at the same queue depth (lookup workloads only).');
  out.push('miss/call = sixtree node-cache misses per call in the measured phase.');
  out.push('cpu us/op = CPU time of the benchmarking process (all its threads) per op; loop = share of the time its event loop was busy');
  out.push('  (JavaScript and the system calls made from it): near 100% the store is bound by its JavaScript thread, not the device.');

  if (report.limits.length) {
    out.push('');
    out.push('device limit (node-sized random reads, O_DIRECT, bench/device.ts):');
    for (const l of report.limits) {
      const what = `  ${sizeLabel(l.blockBytes)} qd${l.queueDepth} ${l.io}`;
      const how = [l.mode, l.engine && l.engine !== l.mode ? l.engine : ''].filter(Boolean).join(' ');
      const per = l.latencyPer === 'batch' ? ` per batch of ${l.queueDepth}` : '';
      const both = l.byMode?.async !== undefined && l.byMode.batch !== undefined ? `; the faster of async ${formatRate(l.byMode.async)} and batch ${formatRate(l.byMode.batch)}` : '';
      out.push(
        l.available
          ? `${what}: ${formatRate(l.opsPerSec!)} reads/s, p50 ${formatUs(l.p50Us!)} us, p99 ${formatUs(l.p99Us!)} us${per}${how ? `, ${how}` : ''}${both} (${l.target})`
          : `${what}: n/a (${l.reason})`,
      );
    }
  }
  if (report.errors.length) {
    out.push('');
    out.push('errors:');
    for (const e of report.errors) out.push(`  ${e.job.workload} ${e.job.store} ${e.job.regime}: ${e.message.split('\n')[0]}`);
  }
  return out.join('\n');
}
