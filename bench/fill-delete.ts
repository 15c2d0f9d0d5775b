// SPDX-License-Identifier: GPL-2.0-only
/*
 * Fill a store to millions of keys, delete everything, and check that the
 * tree shrinks back to one leaf with every node bucket but the roots' free
 * again (interior.ts maybeMerge: both siblings, interior levels, degenerate
 * nodes past the hysteresis, root collapse). Exits 1 when it does not.
 *
 * Runs one after the other on one store (each must end empty), chosen by
 * --runs (comma separated, default asc,desc):
 *   asc     kv: keys filled in ascending order, deleted in ascending order
 *   desc    kv: keys filled in descending order, deleted in descending order
 *   random  kv: keys filled at random, deleted at random, at most
 *           RANDOM_BATCH_MAX keys per transaction (random keys each need
 *           their own leaf's path, and a transaction holds at most 1024)
 *   range   kv: keys filled in ascending order, deleted by delRange over
 *           --batch keys at a time, the ranges in descending order
 *   ext     extents of 8 filled in ascending order, deleted by delRange over
 *           --batch extents at a time, in ascending order
 * --batch keys (or ranges) per transaction. After each run: flush (merge
 * checks and interior updates complete), then depth, buckets in use and
 * pending, fsck, nothing left to iterate; then close, reopen, the same again.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/fill-delete.js [--keys 2000000]
 *       [--runs asc,desc] [--node-size 4096] [--batch 1000] [--cache-mib 64] [--path FILE]
 *   npm run bench:fill-delete -- --keys 1000000
 */

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Store, type StoreStats } from '../src/index.js';
import { Prng } from './prng.js';

/** Keys per run: at most this many (the permutations live in memory). */
const KEYS_MAX = 50_000_000;
const RUNS = ['asc', 'desc', 'random', 'range', 'ext'] as const;
type RunName = (typeof RUNS)[number];
/** Keys per transaction in the random run, at most: each key may fall in a leaf of its own (one path each, 1024 per transaction). */
const RANDOM_BATCH_MAX = 256;
/** Extent size (and key spacing) in the extents btree. */
const EXTENT_SIZE = 8;
const VALUE = new Uint8Array(16).fill(0x5a);

const { values } = parseArgs({
  strict: true,
  options: {
    keys: { type: 'string', default: '2000000' },
    runs: { type: 'string', default: 'asc,desc' },
    'node-size': { type: 'string', default: '4096' },
    'block-size': { type: 'string', default: '512' },
    batch: { type: 'string', default: '1000' },
    'cache-mib': { type: 'string', default: '64' },
    path: { type: 'string' },
    seed: { type: 'string', default: '1' },
  },
});

function intArg(name: string, v: string | undefined, min: number, max: number): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new Error(`--${name}: ${v}; expected an integer in [${min}, ${max}]`);
  return n;
}

const keysNr = intArg('keys', values.keys, 1, KEYS_MAX);
const nodeSizeBytes = intArg('node-size', values['node-size'], 4096, 1 << 20);
const blockSizeBytes = intArg('block-size', values['block-size'], 512, 1 << 20);
const batchNr = intArg('batch', values.batch, 1, 100_000);
const cacheSizeBytes = intArg('cache-mib', values['cache-mib'], 1, 1 << 16) * (1 << 20);
const seed = intArg('seed', values.seed, 0, 0xffffffff);
const runs = values.runs.split(',').map((r) => r.trim()) as RunName[];
for (const r of runs) if (!RUNS.includes(r)) throw new Error(`--runs: ${r}; expected a comma-separated list of ${RUNS.join(', ')}`);

/** 0..n-1: ascending, descending, or a seeded permutation. */
function keysIn(n: number, order: 'asc' | 'desc' | 'random', prng: Prng): Uint32Array {
  const a = new Uint32Array(n);
  for (let i = 0; i < n; i++) a[i] = order === 'desc' ? n - 1 - i : i;
  if (order === 'random') {
    for (let i = n - 1; i > 0; i--) {
      const j = prng.int(i + 1);
      const t = a[i]!;
      a[i] = a[j]!;
      a[j] = t;
    }
  }
  return a;
}

function p(i: number): { inode: number; offset: number } {
  return { inode: 1, offset: i };
}

function secs(t0: number): number {
  return (performance.now() - t0) / 1000;
}

function treeText(st: StoreStats, btree: string, usedEmpty: number): string {
  return `depth ${st.btrees[btree]!.depth}, nodes ${st.alloc.used! - usedEmpty + 1}, buckets in use ${st.alloc.used} (pending ${st.alloc.pending})`;
}

/** After deleting everything: flushed, depth 1, the empty store's buckets in use, fsck clean, nothing to iterate. */
async function check(store: Store, btree: string, usedEmpty: number): Promise<{ ok: boolean; text: string }> {
  await store.flush();
  const st = store.stats();
  const problems = await store.fsck();
  let left = 0;
  const firstLeft: string[] = [];
  for await (const e of store.range(btree)) {
    if (left++ < 5) firstLeft.push(`${e.pos.inode}:${e.pos.offset}`);
  }
  const ok = st.btrees[btree]!.depth === 1 && st.alloc.used === usedEmpty && st.alloc.pending === 0 && problems.length === 0 && left === 0;
  let text = `${treeText(st, btree, usedEmpty)}, empty store ${usedEmpty}; fsck ${problems.length ? problems.slice(0, 5).join('; ') : 'clean'}`;
  if (left) text += `; ${left} entries left (${firstLeft.join(' ')} ...)`;
  return { ok, text };
}

function batchOf(run: RunName): number {
  return run === 'random' ? Math.min(batchNr, RANDOM_BATCH_MAX) : batchNr;
}

async function fill(store: Store, run: RunName, prng: Prng): Promise<void> {
  const extents = run === 'ext';
  const btree = extents ? 'ext' : 'kv';
  const keys = keysIn(keysNr, run === 'desc' ? 'desc' : run === 'random' ? 'random' : 'asc', prng);
  const batch = batchOf(run);
  for (let i = 0; i < keysNr; i += batch) {
    const end = Math.min(keysNr, i + batch);
    await store.transact((tx) => {
      for (let j = i; j < end; j++) {
        const k = keys[j]!;
        if (extents) tx.putExtent(btree, p(k * EXTENT_SIZE), EXTENT_SIZE, VALUE);
        else tx.put(btree, p(k), VALUE);
      }
    });
  }
}

async function deleteAll(store: Store, run: RunName, prng: Prng): Promise<void> {
  if (run === 'range' || run === 'ext') {
    const btree = run === 'ext' ? 'ext' : 'kv';
    const scale = run === 'ext' ? EXTENT_SIZE : 1;
    const chunks = Math.ceil(keysNr / batchNr);
    for (let i = 0; i < chunks; i++) {
      const c = run === 'range' ? chunks - 1 - i : i;
      await store.transact((tx) => tx.delRange(btree, p(c * batchNr * scale), p(Math.min(keysNr, (c + 1) * batchNr) * scale)));
    }
    return;
  }
  const keys = keysIn(keysNr, run, prng);
  const batch = batchOf(run);
  for (let i = 0; i < keysNr; i += batch) {
    const end = Math.min(keysNr, i + batch);
    await store.transact((tx) => {
      for (let j = i; j < end; j++) tx.del('kv', p(keys[j]!));
    });
  }
}

async function runOne(store: Store, run: RunName, usedEmpty: number, storePath: string): Promise<{ store: Store; ok: boolean }> {
  const btree = run === 'ext' ? 'ext' : 'kv';
  const prng = new Prng(seed + RUNS.indexOf(run));
  console.log(`${run}: ${keysNr} ${run === 'ext' ? 'extents' : 'keys'}, ${batchOf(run)} per transaction`);

  let t0 = performance.now();
  await fill(store, run, prng);
  await store.flush();
  const tFill = secs(t0);
  const full = store.stats();
  console.log(`  fill    ${tFill.toFixed(1)} s (${Math.round(keysNr / tFill)} keys/s): ${treeText(full, btree, usedEmpty)}`);

  t0 = performance.now();
  await deleteAll(store, run, prng);
  const tDel = secs(t0);
  t0 = performance.now();
  let r = await check(store, btree, usedEmpty);
  const tCheck = secs(t0);
  const st = store.stats();
  const d = (k: string) => (st.interior[k] ?? 0) - (full.interior[k] ?? 0);
  console.log(`  delete  ${tDel.toFixed(1)} s (${Math.round(keysNr / tDel)} keys/s; + ${tCheck.toFixed(1)} s flush, fsck, scan): ${r.text}`);
  const levels = Object.keys(st.interior).filter((k) => k.startsWith('mergesLevel')).map((k) => `${k.slice('mergesLevel'.length)}: ${d(k)}`);
  console.log(`          merges ${d('merges')} (by level ${levels.join(', ')}), root collapses ${d('collapses')}, rewrites ${d('rewrites')}, splits ${d('splits')}, parent rewrites for merges ${d('mergeParentRewrites')}`);
  console.log(
    `          merge checks ${d('mergeChecks')}: skipped not underfull ${d('mergeSkipNotUnderfull')}, sibling too big ${d('mergeSkipSiblingTooBig')}, only child ${d('mergeSkipOnlyChild')}, level gone ${d('mergeSkipGone')}, no fit ${d('mergeSkipNoFit')}, root kept ${d('mergeSkipRootOk')}; errors ${d('mergeErrors')}, queue waits ${d('mergeQueueWaits')}; restarts ${st.transactions.restarts - full.transactions.restarts}`,
  );
  let ok = r.ok && d('mergeErrors') === 0;

  t0 = performance.now();
  await store.close();
  store = await Store.open(storePath, { cacheSize: cacheSizeBytes });
  r = await check(store, btree, usedEmpty);
  console.log(`  reopen  ${secs(t0).toFixed(1)} s: ${r.text}`);
  ok &&= r.ok;
  console.log(`  ${ok ? 'ok' : 'FAILED'}`);
  return { store, ok };
}

const dir = values.path ? null : mkdtempSync(join(tmpdir(), 'sixtree-fill-delete-'));
const storePath = values.path ?? join(dir!, 'store.img');
// room for the filled tree three times over (a 4 KiB leaf holds about 100 of these keys when full)
const sizeBytes = Math.max(64 << 20, Math.ceil((keysNr * 40 * 3) / (1 << 20)) * (1 << 20));
let ok = true;
let stalled = false;
let onStall: (() => void) | null = null;
try {
  await Store.format(storePath, {
    btrees: [{ name: 'kv' }, { name: 'ext', extents: true }],
    size: sizeBytes,
    nodeSize: nodeSizeBytes,
    blockSize: blockSizeBytes,
    force: true,
  });
  let store = await Store.open(storePath, { cacheSize: cacheSizeBytes });
  // A stall (a promise nobody will settle, nothing left for the event loop to
  // do) ends the process with code 13 and no word of where: say what the
  // store was doing (seen once under load in the koffi suite, desc delete).
  onStall = (): void => {
    if (stalled) return;
    stalled = true;
    console.log(`STALLED: the event loop ran out of work with the run unfinished; the store:\n${store.toText()}`);
  };
  process.on('beforeExit', onStall);
  const usedEmpty = store.stats().alloc.used!;
  console.log(
    `store ${storePath}: ${(sizeBytes / (1 << 20)).toFixed(0)} MiB, node ${nodeSizeBytes} bytes, block ${blockSizeBytes}, cache ${cacheSizeBytes >> 20} MiB; ${usedEmpty} buckets in use when empty (the roots)`,
  );
  const t0 = performance.now();
  for (const run of runs) {
    const r = await runOne(store, run, usedEmpty, storePath);
    store = r.store;
    ok &&= r.ok;
  }
  await store.close();
  console.log(`total ${secs(t0).toFixed(1)} s: ${ok ? 'every run shrank back to one leaf with every other bucket free' : 'FAILED'}`);
} catch (e) {
  ok = false;
  console.error(e);
} finally {
  if (onStall) process.off('beforeExit', onStall);
  if (dir) rmSync(dir, { recursive: true, force: true });
}
process.exitCode = ok ? 0 : 1;
