// SPDX-License-Identifier: GPL-2.0-only
/*
 * Jobs, shared by the bench's entry points (run.ts: the suite; targets.ts:
 * the issue's targets, repeated): how big a job's device and cache are, at
 * which node size a cold job runs, and running one job in a fresh child
 * process (bench/worker.ts) with a time limit, in its own directory that is
 * removed after the child exits.
 */

import { execFileSync, fork } from 'node:child_process';
import { mkdtempSync, rmSync, statfsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuShares, cpuSnapshot, machineInfo, type CpuShares } from './report.js';
import type { Job, WorkerMessage } from './worker.js';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');

/** sixtree cache that holds the whole tree, inserts included (~400 bytes per key of node memory, generous). */
export function cachedCacheBytes(keyCount: number): number {
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

export function coldNodeSize(keyCount: number, nodeSizeBytes: number): number {
  const treeBytes = keyCount * treeBytesPerKey;
  let size = nodeSizeBytes;
  while (size > coldNodeSizeMin && cacheFloorNodes * cacheFloorPerNodeBytes * size > coldCacheShareMax * treeBytes) size >>= 1;
  return size;
}

/** Size of sixtree's file-backed device: room for the tree, its doubling by inserts, and the journal. */
export function deviceBytes(keyCount: number): number {
  return Math.max(256 << 20, keyCount * 1024);
}

export function jobTimeoutMs(job: Job): number {
  if (job.kind === 'limit') return 120_000 + job.durationMs;
  return 120_000 + job.timeMs * 2 + job.warmupMs + job.keyCount * 0.5;
}

/**
 * Run one job in a fresh child; resolves to its one message (errors become messages too) once
 * the child has exited, so that no two jobs ever overlap. Also measures the share of the
 * machine's CPU that others (processes, kernel threads, the hypervisor) used meanwhile.
 */
export async function runInChild(job: Job, keepFiles: boolean, cpuProfDir?: string, cpuProfIntervalUs?: number): Promise<{ msg: WorkerMessage; shares?: CpuShares }> {
  const name = job.kind === 'limit' ? `limit-${job.queueDepth}` : `${job.workload}-${job.store}`;
  const dir = mkdtempSync(path.join(job.dir, `sixtree-bench-${name}-`));
  const prof = cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', cpuProfDir, '--cpu-prof-name', `${profileName(job)}.cpuprofile`] : [];
  if (cpuProfIntervalUs !== undefined) prof.push(`--cpu-prof-interval=${cpuProfIntervalUs}`);
  try {
    return await runForked({ ...job, dir }, prof);
  } finally {
    if (keepFiles) process.stderr.write(`  files kept in ${dir}\n`);
    else rmSync(dir, { recursive: true, force: true });
  }
}

/** A job's CPU profile file name (--cpu-prof): what ran, where. */
export function profileName(job: Job): string {
  if (job.kind === 'limit') return `device-limit-qd${job.queueDepth}-${job.blockBytes >> 10}k`;
  const parts: string[] = [job.workload, job.store];
  if (job.store === 'sixtree') parts.push(job.regime, `${job.nodeSizeBytes >> 10}k`, job.io);
  parts.push(String(job.keyCount));
  return parts.join('-');
}

export function runForked(job: Job, extraExecArgv: string[] = []): Promise<{ msg: WorkerMessage; shares?: CpuShares }> {
  return new Promise((resolve) => {
    const cpuStart = cpuSnapshot();
    const child = fork(path.join(here, 'worker.js'), [], {
      execArgv: extraExecArgv,
      stdio: ['ignore', 2, 'inherit', 'ipc'],
      serialization: 'json',
    });
    let received: WorkerMessage | undefined;
    let settled = false;
    const finish = (msg: WorkerMessage) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const shares = cpuShares(cpuStart, cpuSnapshot());
      resolve(shares === undefined ? { msg } : { msg, shares });
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

/** Where the run's stores live, for the report. */
export function targetText(o: { dir: string; devicePath?: string }): string {
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

/** What every report says of its run: when, the command line, the commit, the machine. */
export function runMeta(startedAt: Date, finishedAt: Date) {
  const git = gitInfo();
  return {
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    durationMs: finishedAt.getTime() - startedAt.getTime(),
    argv: process.argv.slice(2),
    ...(git ? { git } : {}),
    machine: machineInfo(),
  };
}

/** Why a job's child did not send the result wanted, in one line (an error's first line, a skip's reason, a limit's n/a). */
export function failureText(msg: WorkerMessage): string {
  switch (msg.type) {
    case 'error':
      return msg.message.split('\n')[0]!;
    case 'skipped':
      return `skipped: ${msg.reason}`;
    case 'limit':
      return msg.result.reason ?? 'n/a';
    default:
      return `unexpected message ${msg.type}`;
  }
}
