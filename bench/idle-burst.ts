// SPDX-License-Identifier: GPL-2.0-only
/*
 * A burst after an idle spell, with and without the store keeping its last
 * finished objects reachable (src/util/shapes.ts), alternating, each run in
 * a fresh process.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/idle-burst.js [--pairs 3]
 *       [--idle 1000] [--gc yes|no] [--rounds 6] [--keys 100k] [--dir /tmp]
 *
 * A run formats a store (256 KiB nodes, a cache that holds the tree), loads
 * `--keys` random keys 1,000 per commit, then does `--rounds` rounds of the
 * same mix, each:
 *   - batch: 60 durable commits of 1,000 fresh random keys;
 *   - put: 300 durable single-key store.put of loaded keys;
 *   - getSync: 100,000 cached lookups of random loaded keys;
 *   - range: store.range() over the first 20,000 keys;
 *   - iter: a transaction walking the same keys with tx.iter().
 * Then it idles for `--idle` ms; by default a full garbage collection runs
 * at the start of it (`gc()`, the process runs with --expose-gc), standing
 * in for the one V8's memory reducer runs after an idle spell (`--gc no`:
 * only the idle, whatever V8 does in it). Then one more round: the burst.
 * Printed per run: how many optimized functions V8 threw away during the
 * idle spell because a hidden class they named was freed (the child runs
 * with --trace-deopt; its "weak objects" lines are counted), then each
 * part's rate in the last round before the idle (warm) and in the burst,
 * and the burst's share of warm; one line per mode at the end: medians over
 * the pairs. Timing only, nothing asserted; the rates are noisy on a shared
 * machine, the counts are not.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Store, type Bpos } from '../src/index.js';
import { shapeKeeping } from '../src/util/shapes.js';
import { toolArgs } from './cold-store.js';
import { KeySet, valueOf } from './keys.js';
import { median } from './measure.js';
import { formatRate } from './report.js';

const PARTS = ['batch', 'put', 'getSync', 'range', 'iter'] as const;
type Part = (typeof PARTS)[number];
const BATCH_COMMITS = 60;
const BATCH_KEYS = 1000;
const PUTS = 300;
const GETS = 100_000;
const SCAN_KEYS = 20_000;
const IDLE_MARK = '=== idle';
const BURST_MARK = '=== burst';

type Rates = Record<Part, number>;

export interface RunResult {
  mode: 'keep' | 'off';
  /** Optimized functions V8 threw away during the idle spell because a map they named was freed (`--trace-deopt`: "weak objects"). */
  deoptsInIdle: number;
  /** Per part, ops/s in the last round before the idle. */
  warm: Rates;
  /** Per part, ops/s in the round after it. */
  burst: Rates;
}

/** One run (in this process). */
async function runOne(file: string, keyCount: number, mode: 'keep' | 'off', rounds: number, idleMs: number, gcInIdle: boolean): Promise<RunResult> {
  shapeKeeping.on = mode === 'keep';
  const fresh = BATCH_COMMITS * BATCH_KEYS * (rounds + 1);
  const keys = new KeySet('rand', keyCount + fresh);
  const pos = (i: number): Bpos => ({ inode: 0n, offset: keys.u64[i]!, snapshot: 0 });
  await Store.format(file, { btrees: [{ name: 'b' }], nodeSize: 256 << 10, force: true, size: 1 << 30 });
  const s = await Store.open(file, { cacheSize: Math.max(64 << 20, (keyCount + fresh) * 400) });
  let next = 0;
  const commit = async (n: number): Promise<void> => {
    const from = next;
    next += n;
    await s.transact((tx) => {
      for (let i = from; i < from + n; i++) tx.put('b', pos(i), valueOf(i, 0));
    });
  };
  let x = 0x2545f491;
  const loaded = (): number => {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    return x % keyCount;
  };
  const timed = async (ops: number, fn: () => Promise<void> | void): Promise<number> => {
    const t0 = performance.now();
    await fn();
    return (ops * 1000) / (performance.now() - t0);
  };
  const round = async (version: number): Promise<Rates> => ({
    batch: await timed(BATCH_COMMITS * BATCH_KEYS, async () => {
      for (let c = 0; c < BATCH_COMMITS; c++) await commit(BATCH_KEYS);
    }),
    put: await timed(PUTS, async () => {
      for (let p = 0; p < PUTS; p++) {
        const i = loaded();
        await s.put('b', pos(i), valueOf(i, version));
      }
    }),
    getSync: await timed(GETS, () => {
      for (let g = 0; g < GETS; g++) if (s.getSync('b', pos(loaded())) === undefined) throw new Error('a loaded key is missing');
    }),
    range: await timed(SCAN_KEYS, async () => {
      let n = 0;
      for await (const e of s.range('b', { limit: SCAN_KEYS })) {
        void e;
        n++;
      }
      if (n !== SCAN_KEYS) throw new Error(`the scan returned ${n} keys`);
    }),
    iter: await timed(SCAN_KEYS, async () => {
      const n = await s.transact(async (tx) => {
        const it = tx.iter('b');
        let seen = 0;
        for (let e = await it.peek(); e && seen < SCAN_KEYS; e = await it.next()) seen++;
        return seen;
      });
      if (n !== SCAN_KEYS) throw new Error(`the iterator returned ${n} keys`);
    }),
  });
  while (next < keyCount) await commit(Math.min(BATCH_KEYS, keyCount - next));
  await s.flush();
  next = keyCount;
  let warm: Rates | undefined;
  for (let r = 0; r < rounds; r++) warm = await round(r + 1);
  // the parent counts V8's --trace-deopt lines (on stdout) between the marks
  process.stdout.write(`\n${IDLE_MARK}\n`);
  if (gcInIdle) (globalThis as { gc?: () => void }).gc!();
  await new Promise((r) => setTimeout(r, idleMs));
  process.stdout.write(`\n${BURST_MARK}\n`);
  const burst = await round(rounds + 1);
  await s.close();
  return { mode, deoptsInIdle: 0, warm: warm!, burst };
}

function line(r: RunResult): string {
  return `${r.mode.padEnd(4)} deopts ${String(r.deoptsInIdle).padStart(2)}  ` + PARTS.map((p) => `${p} ${formatRate(r.warm[p]).padStart(6)} -> ${formatRate(r.burst[p]).padStart(6)} (${((r.burst[p] / r.warm[p]) * 100).toFixed(0).padStart(3)}%)`).join('  ');
}

/** One run in a fresh process: `script` is this tool's compiled file (dist/bench/idle-burst.js), `file` the store's. */
export interface ChildRun {
  script: string;
  file: string;
  mode: 'keep' | 'off';
  keyCount: number;
  rounds: number;
  idleMs: number;
  gcInIdle: boolean;
}

/** Run one child under --trace-deopt; its result, with the "weak objects" deopts between its marks counted. */
export function runChild(c: ChildRun): RunResult {
  const args = [c.script, '--child', c.file, '--keys', String(c.keyCount), '--rounds', String(c.rounds), '--idle', String(c.idleMs), '--gc', c.gcInIdle ? 'yes' : 'no'];
  const v8Flags = c.gcInIdle ? ['--trace-deopt', '--expose-gc'] : ['--trace-deopt'];
  const out = execFileSync(process.execPath, [...v8Flags, ...args], { encoding: 'utf8', maxBuffer: 1 << 28, env: { ...process.env, SIXTREE_IDLE_MODE: c.mode } });
  const lines = out.split('\n');
  const from = lines.indexOf(IDLE_MARK);
  const to = lines.indexOf(BURST_MARK);
  if (from < 0 || to < from) throw new Error(`idle-burst child: its idle marks are missing from its output`);
  const r = JSON.parse(lines.filter((l) => l.startsWith('{')).pop()!) as RunResult;
  r.deoptsInIdle = lines.slice(from, to).filter((l) => l.includes('for deoptimization, reason: weak objects')).length;
  return r;
}

async function main(): Promise<void> {
  const args = toolArgs('node dist/bench/idle-burst.js [--pairs 3] [--idle 1000] [--gc yes|no] [--rounds 6] [--keys 100k] [--dir /tmp]', {
    pairs: '3',
    idle: '1000',
    rounds: '6',
    gc: 'yes',
  });
  if (args === null) return;
  const rounds = Number(args.own.rounds);
  const idleMs = Number(args.own.idle);
  if (args.own.gc !== 'yes' && args.own.gc !== 'no') throw new Error(`--gc: yes or no, not ${args.own.gc}`);
  const gcInIdle = args.own.gc === 'yes';
  if (args.child) {
    const r = await runOne(args.child, args.keyCount, process.env.SIXTREE_IDLE_MODE === 'off' ? 'off' : 'keep', rounds, idleMs, gcInIdle);
    process.stdout.write(`\n${JSON.stringify(r)}\n`);
    return;
  }
  const pairs = Number(args.own.pairs);
  const dir = mkdtempSync(join(args.dir, 'sixtree-idle-burst-'));
  const file = join(dir, 'store.img');
  try {
    console.log(`${args.keyCount} keys loaded, ${rounds} rounds, then ${idleMs} ms idle ${gcInIdle ? 'starting with a full gc()' : 'without a forced collection'}, then the burst; ${pairs} alternating pairs; rates warm -> burst`);
    const self = fileURLToPath(import.meta.url);
    const results: RunResult[] = [];
    for (let p = 0; p < pairs; p++) {
      for (const mode of p % 2 === 0 ? (['keep', 'off'] as const) : (['off', 'keep'] as const)) {
        const r = runChild({ script: self, file, mode, keyCount: args.keyCount, rounds, idleMs, gcInIdle });
        results.push(r);
        console.log(line(r));
      }
    }
    console.log('medians:');
    for (const mode of ['keep', 'off'] as const) {
      const rs = results.filter((r) => r.mode === mode);
      const med = (pick: (r: RunResult) => Rates): Rates => Object.fromEntries(PARTS.map((p) => [p, median(rs.map((r) => pick(r)[p]))])) as Rates;
      console.log(line({ mode, deoptsInIdle: median(rs.map((r) => r.deoptsInIdle)), warm: med((r) => r.warm), burst: med((r) => r.burst) }));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const invokedAs = process.argv[1] ? pathToFileURL(resolve(process.argv[1])).href : '';
if (invokedAs === import.meta.url) await main();
