// SPDX-License-Identifier: GPL-2.0-only
/*
 * kill -9: a child process (dist/test/helpers/crash-child.js) commits
 * numbered transactions to a store on a real file (O_DIRECT, ext4 under
 * os.tmpdir()) and prints each seq as soon as transact() resolved; the
 * parent SIGKILLs it at a random moment (sometimes while it is still opening
 * and recovering from the previous kill), reopens the store (recovery) and
 * checks:
 *   - every acknowledged transaction is present with all its keys and values;
 *   - every transaction present is complete (never partly visible), and was
 *     started by the child (at most `concurrency` beyond the acknowledged);
 *   - the overwritten LAST key holds the value of a present transaction
 *     (with one worker: the newest one);
 *   - everything verified after earlier kills is still there;
 *   - fsck() returns [].
 * Two stores (the default format, where blockSize = nodeSize so every node
 * write is a rewrite, and blockSize 512, where nodes take appends) each go
 * through KILLS_PER_STORE kills, so recovery also runs over stores that were
 * themselves recovered. Every other child opens with inlineFlush. SIXTREE_KILL_SEED=<n> fixes the kill plan (timing
 * still varies). Needs the build (npx tsc -p tsconfig.json).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { Store } from '../../src/index.js';
import { KEYS_PER_TXN, LAST_K, LAST_KEY, parseValue, valueOf } from '../helpers/crash-child.js';
import { Prng } from '../../bench/crash-campaign.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CHILD = join(ROOT, 'dist/test/helpers/crash-child.js');
/** Kills per store (two stores, two formats); CI needs at least KILLS_MIN in all. */
const KILLS_PER_STORE = 12;
const KILLS_MIN = 20;
const SEED = process.env.SIXTREE_KILL_SEED !== undefined ? Number(process.env.SIXTREE_KILL_SEED) >>> 0 : (Date.now() & 0xffffff) >>> 0;
/** Seqs of kill i are (i + 1) * SEQ_SPAN + j. */
const SEQ_SPAN = 1_000_000;

let child: ChildProcess | null = null;
let dir: string | null = null;
let kills = 0;

function killChild(): void {
  if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

afterAll(() => {
  killChild();
  child = null;
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface ChildRun {
  acked: number[];
  ready: boolean;
  how: string;
  errors: string[];
  stderr: string;
  signal: string | null;
  exitCode: number | null;
}

type KillPlan = { kind: 'early'; ms: number } | { kind: 'after-ready'; ms: number } | { kind: 'after-acks'; acks: number };

/** Run the child until the plan says kill (SIGKILL); resolves once its pipes are closed. */
function runChild(path: string, first: number, concurrency: number, plan: KillPlan, inlineFlush: boolean): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    const args = [CHILD, path, String(first), String(concurrency), String(4 << 20), ...(inlineFlush ? ['inline'] : [])];
    const c = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    const run: ChildRun = { acked: [], ready: false, how: '', errors: [], stderr: '', signal: null, exitCode: null };
    let buf = '';
    let killed = false;
    const timers: NodeJS.Timeout[] = [];
    const kill = (how: string) => {
      if (killed) return;
      killed = true;
      run.how = how;
      c.kill('SIGKILL');
    };
    // never wait forever: a child that stops acknowledging is killed (and the run reports it)
    timers.push(setTimeout(() => kill('watchdog (10 s)'), 10_000));
    if (plan.kind === 'early') timers.push(setTimeout(() => kill(`${plan.ms} ms after spawn${run.ready ? '' : ' (before ready)'}`), plan.ms));
    c.stdout!.setEncoding('utf8');
    c.stdout!.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line === 'ready') {
          run.ready = true;
          if (plan.kind === 'after-ready') timers.push(setTimeout(() => kill(`${plan.ms} ms after ready`), plan.ms));
        } else if (line.startsWith('ack ')) {
          run.acked.push(Number(line.slice(4)));
          if (plan.kind === 'after-acks' && run.acked.length === plan.acks) kill(`right after ack #${plan.acks}`);
        } else if (line.length) run.errors.push(line);
      }
    });
    c.stderr!.setEncoding('utf8');
    c.stderr!.on('data', (d: string) => {
      run.stderr += d;
    });
    c.on('error', reject);
    c.on('close', (code, signal) => {
      for (const t of timers) clearTimeout(t);
      run.exitCode = code;
      run.signal = signal;
      if (child === c) child = null;
      resolve(run);
    });
  });
}

interface Verified {
  /** Every complete transaction seen so far. */
  seqs: Set<number>;
  /** The seq whose value LAST held at the previous check (0: none yet). */
  lastSeq: number;
}

/** Recover the store and check it; returns the seqs present (complete) in [first, first + SEQ_SPAN). */
async function recoverAndCheck(path: string, first: number, concurrency: number, run: ChildRun, verified: Verified, what: string): Promise<{ present: number[]; recoveryMs: number }> {
  const t0 = performance.now();
  let store: Store;
  try {
    store = await Store.open(path, { cacheSize: 4 << 20 });
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    err.message = `${what}: recovery (open) failed after ${run.acked.length} acknowledged transactions: ${err.message}`;
    throw err;
  }
  const recoveryMs = performance.now() - t0;
  try {
    // every key of kv: (seq, k) keys grouped by seq, plus LAST
    const bySeq = new Map<number, Set<number>>();
    let last: Uint8Array | undefined;
    const bad: string[] = [];
    for await (const e of store.range('kv')) {
      const inode = Number(e.pos.inode);
      const k = Number(e.pos.offset);
      if (inode === LAST_KEY.inode && k === LAST_KEY.offset) {
        last = e.value;
        continue;
      }
      const pv = parseValue(e.value);
      if (!pv || pv.seq !== inode || pv.k !== k || k >= KEYS_PER_TXN) {
        if (bad.length < 10) bad.push(`key ${inode}:${k}: unexpected value (${e.value.length} bytes)`);
        continue;
      }
      let s = bySeq.get(inode);
      if (!s) bySeq.set(inode, (s = new Set()));
      s.add(k);
    }
    expect(bad, `${what}: foreign or corrupt values`).toEqual([]);
    const partial = [...bySeq].filter(([, ks]) => ks.size !== KEYS_PER_TXN).map(([seq, ks]) => `seq ${seq}: keys [${[...ks].join(',')}] of ${KEYS_PER_TXN}`);
    expect(partial, `${what}: partly visible transactions`).toEqual([]);
    const lost = run.acked.filter((s) => !bySeq.has(s));
    expect(lost, `${what}: acknowledged transactions lost (acked ${run.acked.length}, last acked ${run.acked[run.acked.length - 1]})`).toEqual([]);
    const lostEarlier = [...verified.seqs].filter((s) => !bySeq.has(s));
    expect(lostEarlier.slice(0, 20), `${what}: transactions verified after earlier kills are gone (${lostEarlier.length})`).toEqual([]);
    const present = [...bySeq.keys()].filter((s) => s >= first && s < first + SEQ_SPAN).sort((a, b) => a - b);
    const foreign = [...bySeq.keys()].filter((s) => !(s >= first && s < first + SEQ_SPAN) && !verified.seqs.has(s));
    expect(foreign, `${what}: transactions from an earlier child that were not there after its kill`).toEqual([]);
    // started: the child hands out seqs in order; at most `concurrency` beyond the acknowledged ones can be in flight
    const started = first + run.acked.length + concurrency;
    expect(present.filter((s) => s >= started), `${what}: transactions that were never started`).toEqual([]);
    if (concurrency === 1 && present.length) expect(present[present.length - 1]! - first + 1, `${what}: one worker commits in seq order: no gaps`).toBe(present.length);
    // LAST: overwritten by every transaction, so it holds the value of the
    // last one committed: one of this child's if any is present (with one
    // worker, the newest), else the same as at the previous check
    let lastSeq = 0;
    if (last !== undefined) {
      const pv = parseValue(last);
      expect(pv !== null && pv.k === LAST_K, `${what}: LAST holds a value written by a child`).toBe(true);
      lastSeq = pv!.seq;
      expect(bySeq.has(lastSeq), `${what}: LAST holds seq ${lastSeq}'s value but that transaction is not present`).toBe(true);
    } else {
      expect(bySeq.size, `${what}: transactions present but LAST is absent`).toBe(0);
    }
    if (present.length === 0) expect(lastSeq, `${what}: nothing of this child is present, LAST must be unchanged`).toBe(verified.lastSeq);
    else if (concurrency === 1) expect(lastSeq, `${what}: one worker: LAST must hold the newest transaction's value`).toBe(present[present.length - 1]);
    else expect(present.includes(lastSeq), `${what}: LAST must hold the value of one of this child's transactions (holds seq ${lastSeq})`).toBe(true);
    expect(await store.fsck(), `${what}: fsck`).toEqual([]);
    for (const s of bySeq.keys()) verified.seqs.add(s);
    verified.lastSeq = lastSeq;
    // spot-check values through get() too (point lookups, not only the range scan)
    for (const s of run.acked.slice(-3)) for (let k = 0; k < KEYS_PER_TXN; k++) expect(Buffer.compare(Buffer.from((await store.get('kv', { inode: s, offset: k }))!), Buffer.from(valueOf(s, k)))).toBe(0);
    return { present, recoveryMs };
  } finally {
    await store.close();
  }
}

describe('kill -9 of a process committing transactions', () => {
  const formats = [
    { name: 'default format (blockSize 4096 = nodeSize: every node write is a rewrite)', format: {} },
    { name: 'blockSize 512 (nodes take appends)', format: { blockSize: 512 } },
  ];
  for (const [fi, { name, format }] of formats.entries()) {
    it(`${KILLS_PER_STORE} kills at random moments, recovery after each: ${name} (seed ${SEED + fi})`, { timeout: 120_000 }, async () => {
      expect(existsSync(CHILD), `${CHILD} is missing: build first (npx tsc -p tsconfig.json)`).toBe(true);
      dir ??= mkdtempSync(join(tmpdir(), 'sixtree-kill9-'));
      const path = join(dir, `store-${fi}.img`);
      await Store.format(path, { btrees: [{ name: 'kv' }], size: 64 << 20, nodeSize: 4096, journalSize: 1 << 20, ...format });
      const rng = new Prng(SEED + fi);
      const verified: Verified = { seqs: new Set(), lastSeq: 0 };
      const lines: string[] = [];
      let acked = 0;
      let earlyKills = 0;
      for (let i = 0; i < KILLS_PER_STORE; i++) {
        const first = (i + 1) * SEQ_SPAN;
        const concurrency = i % 3 === 0 ? 1 : rng.range(2, 8);
        const x = rng.int(100);
        const plan: KillPlan = x < 15 ? { kind: 'early', ms: rng.range(20, 400) } : x < 60 ? { kind: 'after-ready', ms: rng.range(0, 250) } : { kind: 'after-acks', acks: rng.range(1, 300) };
        // every other child opens with inlineFlush (a lone commit's journal write and flush on its own thread)
        const inlineFlush = i % 2 === 1;
        const run = await runChild(path, first, concurrency, plan, inlineFlush);
        const what = `kill ${i + 1}/${KILLS_PER_STORE} (seed ${SEED + fi}, ${concurrency} worker${concurrency > 1 ? 's' : ''}${inlineFlush ? ', inlineFlush' : ''}, killed ${run.how || 'never: the child exited'})`;
        expect(run.errors, `${what}: the child reported errors; stderr: ${run.stderr}`).toEqual([]);
        expect(run.signal, `${what}: the child must die by SIGKILL (exit code ${run.exitCode}); stderr: ${run.stderr}`).toBe('SIGKILL');
        expect(run.how.startsWith('watchdog'), `${what}: the child stopped making progress`).toBe(false);
        kills++;
        if (!run.ready) earlyKills++;
        acked += run.acked.length;
        const { present, recoveryMs } = await recoverAndCheck(path, first, concurrency, run, verified, what);
        lines.push(`${what}: ${run.acked.length} acked, ${present.length} present, recovery ${recoveryMs.toFixed(0)} ms`);
      }
      // informative: how the kills fell
      console.log(`kill -9, ${name}: ${KILLS_PER_STORE} kills (${earlyKills} before the child was ready), ${acked} acknowledged transactions, ${verified.seqs.size} verified\n  ${lines.join('\n  ')}`);
      expect(acked, 'the children must have committed something').toBeGreaterThan(0);
    });
  }

  it(`killed at least ${KILLS_MIN} times`, () => {
    expect(kills).toBeGreaterThanOrEqual(KILLS_MIN);
  });
});
