// SPDX-License-Identifier: GPL-2.0-only
/*
 * Iterator model test, normal btree: random keys, random positions, every
 * iterator call (peek/next/peekPrev/prev/setPos, with and without an end
 * bound, slots mode peekSlot/nextSlot) checked against a sorted-array model,
 * with 4 KiB nodes and a small cache so trees are deep, nodes are evicted and
 * iterators cross many nodes. Deleted keys leave whiteouts (the nodes were
 * written first), and some updates are pending in the same transaction as the
 * iterator calls. The extents btree has its own model test
 * (iter-model-extents.test.ts); the shared helpers are in iter-model-helpers.ts.
 *
 * SIXTREE_ITER_SEED=<n>[,<n>...] replays seeds (a failure prints its seed with
 * the calls of the failing sequence); SIXTREE_ITER_TX sets the number of
 * checking transactions.
 */

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Entry, type Hole, type Iter, type Transaction } from '../../src/index.js';
import { tmpStore, type TmpStore } from '../helpers/store.js';
import {
  ENC_MAX,
  SEED_DEFAULT,
  TXS,
  U32_MAX,
  U64_MAX,
  Rand,
  Trace,
  dec,
  enc,
  fmtEnc,
  fmtPos,
  hex,
  lowerBound,
  seedsToRun,
  val,
} from './iter-model-helpers.js';

let t: TmpStore;
beforeEach(async () => {
  t = await tmpStore({ cacheSize: 512 * 1024, sizeBytes: 128 * 1024 * 1024 });
});
afterEach(async () => {
  await t.cleanup();
});

/* ------------------------------------------------------------------------
 * Normal btree model: a sorted array of encoded positions and their tags.
 */

class KvModel {
  keys: bigint[] = [];
  tags = new Map<bigint, number>();

  clone(): KvModel {
    const m = new KvModel();
    m.keys = this.keys.slice();
    m.tags = new Map(this.tags);
    return m;
  }
  put(k: bigint, tag: number): void {
    if (!this.tags.has(k)) this.keys.splice(lowerBound(this.keys, k), 0, k);
    this.tags.set(k, tag);
  }
  del(k: bigint): void {
    if (!this.tags.has(k)) return;
    this.tags.delete(k);
    this.keys.splice(lowerBound(this.keys, k), 1);
  }
  delRange(s: bigint, e: bigint): void {
    if (s >= e) return;
    const i = lowerBound(this.keys, s);
    const j = lowerBound(this.keys, e);
    for (const k of this.keys.slice(i, j)) this.tags.delete(k);
    this.keys.splice(i, j - i);
  }
  /** First key >= x. */
  ge(x: bigint): bigint | null {
    const i = lowerBound(this.keys, x);
    return i < this.keys.length ? this.keys[i]! : null;
  }
  /** Last key <= x. */
  le(x: bigint): bigint | null {
    const i = lowerBound(this.keys, x + 1n) - 1;
    return i >= 0 ? this.keys[i]! : null;
  }
  fmt(k: bigint | null): string {
    return k === null ? 'null' : `${fmtEnc(k)}=${hex(val(this.tags.get(k)!))}`;
  }
}

function fmtEntry(e: Entry | null): string {
  return e === null ? 'null' : `${fmtPos(e.pos)}=${hex(e.value)}`;
}
function fmtSlot(s: Entry | Hole | null): string {
  if (s === null) return 'null';
  if ('hole' in s && s.hole) {
    let r = `hole@${fmtPos(s.pos)}`;
    if (s.start !== undefined) r += ` start=${fmtPos(s.start)}`;
    if (s.size !== undefined) r += ` size=${s.size}`;
    return r;
  }
  return fmtEntry(s as Entry);
}

/** Model of the iterator state (API.md / docs/api.md): the position and the last key returned. */
class KvIterModel {
  last: bigint | null = null;
  constructor(
    readonly m: KvModel,
    public cur: bigint,
    readonly end: bigint | null,
  ) {}
  peek(): bigint | null {
    const k = this.m.ge(this.cur);
    this.last = k !== null && (this.end === null || k < this.end) ? k : null;
    return this.last;
  }
  next(): bigint | null {
    if (this.last === null && this.peek() === null) return null;
    const l = this.last!;
    this.last = null;
    if (l === ENC_MAX) return null;
    this.cur = l + 1n;
    return this.peek();
  }
  peekPrev(): bigint | null {
    // the end bound applies to peek/next only
    this.last = this.m.le(this.cur);
    return this.last;
  }
  prev(): bigint | null {
    if (this.last === null && this.peekPrev() === null) return null;
    const l = this.last!;
    this.last = null;
    if (l === 0n) return null;
    this.cur = l - 1n;
    return this.peekPrev();
  }
  setPos(p: bigint): void {
    this.cur = p;
    this.last = null;
  }
  peekSlot(): string {
    return this.m.tags.has(this.cur) ? this.m.fmt(this.cur) : `hole@${fmtEnc(this.cur)}`;
  }
  nextSlot(): string {
    const p = dec(this.cur);
    if (p.offset === U64_MAX) {
      if (p.inode === U64_MAX) return 'null';
      this.cur = enc(p.inode + 1n, 0n, p.snapshot);
    } else this.cur = enc(p.inode, p.offset + 1n, p.snapshot);
    return this.peekSlot();
  }
}

/* ------------------------------------------------------------------------
 * Tests.
 */

describe('iterator model', () => {
  it.each(seedsToRun([SEED_DEFAULT]))('normal btree: every iterator call matches a sorted-array model (seed %i)', async (SEED) => {
    const s = t.store;
    const top = new Rand(SEED);
    const trace = new Trace(SEED);
    let tag = 1;
    let model = new KvModel();

    const INODES = [0n, 1n, 2n, 3n, 4n, 1n << 40n, U64_MAX];
    const SNAPS = [0n, 0n, 0n, 1n, 2n, 7n, U32_MAX];
    const randKey = (R: Rand): bigint => {
      const r = R.r();
      const inode = r < 0.02 ? U64_MAX : r < 0.04 ? 1n << 40n : BigInt(R.int(5));
      const off = R.r() < 0.02 ? R.pick([0n, U64_MAX, U64_MAX - 1n, 1n << 63n]) : BigInt(R.int(3000));
      return enc(inode, off, R.pick(SNAPS));
    };
    /** A position near the keys: exact, just before or after one, neighbouring offsets, edges, random. */
    const randPos = (R: Rand, m: KvModel): bigint => {
      const r = R.r();
      if (r < 0.05) return R.pick([0n, ENC_MAX, ENC_MAX - 1n, 1n, enc(U64_MAX, 0n, 0), enc(0n, U64_MAX, U32_MAX)]);
      if (r < 0.6 && m.keys.length) {
        const k = R.pick(m.keys);
        const d = R.pick([0n, 0n, 1n, -1n, 1n << 32n, -(1n << 32n), 2n]);
        const x = k + d;
        return x < 0n ? 0n : x > ENC_MAX ? ENC_MAX : x;
      }
      return enc(R.pick(INODES), BigInt(R.int(3100)), R.pick(SNAPS));
    };

    // -- build: a few thousand keys in batches, flushed so later deletes leave whiteouts
    for (let b = 0; b < 24; b++) {
      const txSeed = top.seed();
      let m = model;
      let tg = tag;
      await s.transact((tx) => {
        const R = new Rand(txSeed);
        m = model.clone();
        tg = tag;
        for (let i = 0; i < 250; i++) {
          const k = randKey(R);
          tx.put('kv', dec(k), val(tg));
          m.put(k, tg++);
        }
      });
      model = m;
      tag = tg;
      if (b % 6 === 5) await s.flush();
    }
    // both ends of the key space
    await s.transact((tx) => {
      tx.put('kv', dec(0n), val(tag));
      tx.put('kv', dec(ENC_MAX), val(tag + 1));
    });
    model.put(0n, tag++);
    model.put(ENC_MAX, tag++);
    await s.flush();
    // delete ~1/4 of the keys (single keys and ranges), overwrite some, flush in between
    for (let b = 0; b < 10; b++) {
      const txSeed = top.seed();
      let m = model;
      let tg = tag;
      await s.transact((tx) => {
        const R = new Rand(txSeed);
        m = model.clone();
        tg = tag;
        for (let i = 0; i < 120 && m.keys.length; i++) {
          const k = R.pick(m.keys);
          tx.del('kv', dec(k));
          m.del(k);
        }
        const a = randPos(R, m);
        let e = a + BigInt(R.int(40)) * (1n << 32n);
        if (e > ENC_MAX) e = ENC_MAX;
        tx.delRange('kv', dec(a), dec(e));
        m.delRange(a, e);
        for (let i = 0; i < 30; i++) {
          const k = R.pick(m.keys);
          tx.put('kv', dec(k), val(tg));
          m.put(k, tg++);
        }
      });
      model = m;
      tag = tg;
      if (b % 3 === 2) await s.flush();
      s.shrink(64);
    }
    expect(model.keys.length).toBeGreaterThan(3000);

    // -- check: transactions of random iterator sequences, most with pending updates.
    // No pending update at POS_MAX itself: with a committed key at POS_MAX and a pending
    // put/del there, a peek that reaches it never returns (MergedView.peek steps to
    // succ(POS_MAX) == POS_MAX forever, starving the event loop, so no test timeout fires).
    const noMax = (k: bigint): bigint => (k === ENC_MAX ? ENC_MAX - 1n : k);
    let calls = 0;
    const ABORT = new Error('abort');
    for (let txi = 0; txi < TXS; txi++) {
      const txSeed = top.seed();
      const abort = top.r() < 0.15;
      let after = model;
      let tg = tag;
      try {
        await s.transact(async (tx: Transaction) => {
          const R = new Rand(txSeed);
          const m = model.clone();
          tg = tag;
          const pendingOps: string[] = [];
          if (R.r() < 0.6) {
            const n = 1 + R.int(60);
            for (let i = 0; i < n; i++) {
              const r = R.r();
              if (r < 0.45) {
                const k = noMax(R.r() < 0.5 && m.keys.length ? R.pick(m.keys) : randKey(R));
                tx.put('kv', dec(k), val(tg));
                pendingOps.push(`put ${fmtEnc(k)} tag=${tg}`);
                m.put(k, tg++);
              } else if (r < 0.9) {
                const k = noMax(m.keys.length ? R.pick(m.keys) : randKey(R));
                tx.del('kv', dec(k));
                pendingOps.push(`del ${fmtEnc(k)}`);
                m.del(k);
              } else {
                const a = randPos(R, m);
                let e = a + BigInt(1 + R.int(20)) * (1n << 32n) + BigInt(R.int(3));
                if (e > ENC_MAX) e = ENC_MAX;
                tx.delRange('kv', dec(a), dec(e));
                pendingOps.push(`delRange ${fmtEnc(a)} ${fmtEnc(e)}`);
                m.delRange(a, e);
              }
            }
          }
          for (let sq = 0; sq < 8; sq++) {
            const start = randPos(R, m);
            const slots = R.r() < 0.25;
            let end: bigint | null = null;
            if (!slots && R.r() < 0.4) {
              const d = BigInt(R.int(200)) * (1n << 32n) + BigInt(R.int(8));
              end = R.r() < 0.1 ? start : start + d > ENC_MAX ? ENC_MAX : start + d;
            }
            const it: Iter = tx.iter('kv', dec(start), end === null ? { slots } : { slots, end: dec(end) });
            const mi = new KvIterModel(m, start, end);
            trace.reset(
              `tx ${txi} seq ${sq}: iter(kv, ${fmtEnc(start)}${end !== null ? `, end ${fmtEnc(end)}` : ''}${slots ? ', slots' : ''})` +
                (pendingOps.length ? `\n  pending in this tx: ${pendingOps.join('; ')}` : ''),
            );
            expect(fmtPos(it.pos), trace.msg()).toBe(fmtEnc(start));
            const len = 10 + R.int(50);
            for (let c = 0; c < len; c++) {
              const r = R.r();
              let op: string;
              let got: string;
              let want: string;
              if (r < (slots ? 0.08 : 0.07)) {
                const p = randPos(R, m);
                op = `setPos(${fmtEnc(p)})`;
                it.setPos(dec(p));
                mi.setPos(p);
                got = want = '';
              } else if (slots) {
                if (r < 0.25) {
                  op = 'peekSlot';
                  got = fmtSlot(await it.peekSlot());
                  want = mi.peekSlot();
                } else {
                  op = 'nextSlot';
                  got = fmtSlot(await it.nextSlot());
                  want = mi.nextSlot();
                }
              } else if (r < 0.2) {
                op = 'peek';
                got = fmtEntry(await it.peek());
                want = m.fmt(mi.peek());
              } else if (r < 0.55) {
                op = 'next';
                got = fmtEntry(await it.next());
                want = m.fmt(mi.next());
              } else if (r < 0.65) {
                op = 'peekPrev';
                got = fmtEntry(await it.peekPrev());
                want = m.fmt(mi.peekPrev());
              } else {
                op = 'prev';
                got = fmtEntry(await it.prev());
                want = m.fmt(mi.prev());
              }
              calls++;
              trace.add(`${op} -> ${want}`);
              expect(got, trace.msg()).toBe(want);
              expect(fmtPos(it.pos), `pos after ${op}\n${trace.msg()}`).toBe(fmtEnc(mi.cur));
            }
          }
          after = m;
          if (abort) throw ABORT;
        });
      } catch (e) {
        if (e !== ABORT) throw e;
        continue; // rolled back: the model stays as it was
      }
      model = after;
      tag = tg;
      if (txi % 5 === 4) s.shrink(64);
    }

    // the committed result matches the model too (an iterator walk: range() stops before
    // its default end POS_MAX, and the model holds a key at POS_MAX), the tree was deep and evicted
    const got = await s.transact(async (tx) => {
      const out: string[] = [];
      for await (const e of tx.iter('kv')) out.push(fmtEntry(e));
      return out;
    });
    expect(got.length).toBe(model.keys.length);
    expect(got).toEqual(model.keys.map((k) => model.fmt(k)));
    const st = s.stats();
    expect(st.cache.evictions).toBeGreaterThan(0);
    expect(st.btrees.kv!.depth).toBeGreaterThanOrEqual(2);
    expect(calls).toBeGreaterThan(TXS * 8 * 10);
    expect(await s.fsck()).toEqual([]);
  });
});
