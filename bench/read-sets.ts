// SPDX-License-Identifier: GPL-2.0-only
/*
 * Cold lookups with a node read's bsets kept as sets (the default) against the
 * same reads merged into one set (bcachefs's way; bsetDebug.keepReadSets =
 * false), alternating, each run in a fresh process on the same store.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/read-sets.js [--pairs 3]
 *       [--qd 1,64] [--seconds 4] [--keys 100k] [--dir /tmp]
 *
 * The store (bench/cold-store.ts): 16 KiB nodes, `--keys` random keys with 8..64-byte values
 * (bench/keys.ts) loaded 1,000 per commit, so most leaves end up written in
 * one to three appends (this is how the cold rand_lookup jobs' trees look:
 * about a quarter one, a third two, the rest three). Every run reopens
 * it with a cache of ~600 KiB (about 7% of the tree) plus a node per lookup
 * in flight and does `--qd` lanes of awaited store.get() of random loaded
 * keys for `--seconds`. Printed per run: lookups/s, user and system CPU per
 * lookup (process.cpuUsage), node-cache misses per lookup, and how many reads kept
 * their sets. One line per mode at the end: the medians over the pairs.
 * Timing only, nothing asserted; on a noisy machine compare the CPU columns.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Store } from '../src/index.js';
import { bsetDebug, readSetCounters } from '../src/btree/bset.js';
import { loadToolStore, toolArgs, toolCacheBaseBytes, toolNodeSize, toolPos } from './cold-store.js';
import { KeySet } from './keys.js';
import { median } from './measure.js';

interface RunResult {
  mode: 'sets' | 'merged';
  qd: number;
  opsPerSec: number;
  userUs: number;
  sysUs: number;
  readsPerOp: number;
  kept: number;
}

/** One measured run (in this process): reopen, lookups for `seconds`, close. */
async function runOne(file: string, keyCount: number, mode: 'sets' | 'merged', qd: number, seconds: number): Promise<RunResult> {
  bsetDebug.keepReadSets = mode === 'sets';
  const keys = new KeySet('rand', keyCount);
  const s = await Store.open(file, { cacheSize: toolCacheBaseBytes + qd * toolNodeSize });
  const reads0 = s.stats().cache.misses;
  const kept0 = readSetCounters.kept;
  let x = 0x2545f491;
  let ops = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  const lane = async (): Promise<void> => {
    while (performance.now() < end) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      const i = x % keyCount;
      if ((await s.get('b', toolPos(keys, i))) === undefined) throw new Error(`key ${i} missing`);
      ops++;
    }
  };
  await Promise.all(Array.from({ length: qd }, lane));
  const elapsed = performance.now() - t0;
  const c = process.cpuUsage(c0);
  const reads = s.stats().cache.misses - reads0;
  await s.close();
  return { mode, qd, opsPerSec: (ops * 1000) / elapsed, userUs: c.user / ops, sysUs: c.system / ops, readsPerOp: reads / ops, kept: readSetCounters.kept - kept0 };
}

function line(r: RunResult): string {
  return `${r.mode.padEnd(6)} qd${String(r.qd).padEnd(3)} ${Math.round(r.opsPerSec).toString().padStart(6)} lookups/s  user ${r.userUs.toFixed(1).padStart(5)} us  sys ${r.sysUs.toFixed(1).padStart(5)} us  misses/lookup ${r.readsPerOp.toFixed(2)}  reads kept as sets ${r.kept}`;
}

async function main(): Promise<void> {
  const args = toolArgs('node dist/bench/read-sets.js [--pairs 3] [--qd 1,64] [--seconds 4] [--keys 100k] [--dir /tmp]', { pairs: '3', qd: '1,64' });
  if (args === null) return;
  const { keyCount, seconds } = args;
  if (args.child) {
    /* a run in a fresh process: file,mode,qd */
    const [file, mode, qd] = args.child.split(',');
    const r = await runOne(file!, keyCount, mode as 'sets' | 'merged', Number(qd), seconds);
    process.stdout.write(JSON.stringify(r));
    return;
  }
  const pairs = Number(args.own.pairs);
  const depths = args.own.qd!.split(',').map(Number);
  const dir = mkdtempSync(join(args.dir, 'sixtree-read-sets-'));
  const file = join(dir, 'store.img');
  try {
    await loadToolStore(file, keyCount);
    console.log(`store: ${keyCount} keys, 16 KiB nodes, in ${file}; ${pairs} alternating pairs per queue depth, ${seconds} s each`);
    const self = fileURLToPath(import.meta.url);
    const results: RunResult[] = [];
    for (const qd of depths) {
      for (let p = 0; p < pairs; p++) {
        for (const mode of p % 2 === 0 ? (['sets', 'merged'] as const) : (['merged', 'sets'] as const)) {
          const out = execFileSync(process.execPath, [self, '--child', `${file},${mode},${qd}`, '--keys', String(keyCount), '--seconds', String(seconds)], { encoding: 'utf8' });
          const r = JSON.parse(out) as RunResult;
          results.push(r);
          console.log(line(r));
        }
      }
    }
    console.log('medians:');
    for (const qd of depths) {
      for (const mode of ['sets', 'merged'] as const) {
        const rs = results.filter((r) => r.qd === qd && r.mode === mode);
        console.log(line({ mode, qd, opsPerSec: median(rs.map((r) => r.opsPerSec)), userUs: median(rs.map((r) => r.userUs)), sysUs: median(rs.map((r) => r.sysUs)), readsPerOp: median(rs.map((r) => r.readsPerOp)), kept: median(rs.map((r) => r.kept)) }));
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
