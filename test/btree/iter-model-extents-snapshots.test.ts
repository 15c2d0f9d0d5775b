// SPDX-License-Identifier: GPL-2.0-only
/*
 * Model test of an extents btree whose inodes hold extents of several
 * snapshots (their keys interleave: a key sits at its extent's end, and keys
 * sort by inode, offset, snapshot). Random putExtent in 3 snapshots and
 * delRange (every snapshot), committed or pending in the transaction that
 * iterates, checked against a model of per-snapshot offset maps:
 *  - store.range() forward and reverse, with random bounds and limits;
 *  - tx.iter() walks: forward (peek/next, with and without an end bound),
 *    reverse (peekPrev/prev), and random mixes of calls with setPos,
 *    checking the iterator's pos after each call;
 *  - what delRange and putExtent leave after commit.
 * The ordering the model defines (docs/api.md): pieces in key order (end
 * offset, then snapshot); prev() returns the piece before the last one in
 * that order and moves pos before the last one's start.
 *
 * Seeds: SEEDS below, or SIXTREE_ITER_SEED=<n>[,<n>...]; SIXTREE_ITER_TX=<n>
 * sets the checking transactions per seed (default 100 -> 40 here).
 */

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Entry, type Hole, type Transaction } from '../../src/index.js';
import { tmpStore, type TmpStore } from '../helpers/store.js';
import { ENC_MAX, TXS, U32_MAX, Rand, Trace, dec, enc, ExtentIterModelBase, buildByTransactions, expectRandomExtentIterSeq, expectWholeWalks, type ExtentIterSeqPlan, pieceAfter, pieceEndingBy, fmtEnc, fmtPos, hex, seedsToRun, val } from './iter-model-helpers.js';

const SEEDS = seedsToRun([11, 12, 13, 14]);
const CHECK_TXS = Math.max(1, Math.round((TXS * 2) / 5));

let t: TmpStore;
beforeEach(async () => {
  t = await tmpStore({ cacheSize: 512 * 1024, sizeBytes: 128 * 1024 * 1024 });
});
afterEach(async () => {
  await t.cleanup();
});

const SNAPS = [0, 3, 7];
/** An inode with extents of one snapshot only (the usual case), where delRange is not restricted. */
const ONE_SNAP_INODE = 4n;
const ONE_SNAP = 3;

interface Piece {
  inode: bigint;
  snapshot: number;
  start: bigint;
  end: bigint;
  tag: number;
  vo: bigint;
  /** Encoded start and end positions (in the piece's snapshot). */
  s: bigint;
  e: bigint;
}

/** Per-snapshot offset maps: enc(inode, offset, snapshot) -> [tag, offset within the original write]. */
class SnapModel {
  cells = new Map<bigint, [number, number]>();
  private cache: Piece[] | null = null;
  private ends: bigint[] = [];

  clone(): SnapModel {
    const m = new SnapModel();
    m.cells = new Map(this.cells);
    return m;
  }
  put(inode: bigint, start: bigint, size: number, snapshot: number, tag: number): void {
    for (let i = 0; i < size; i++) this.cells.set(enc(inode, start + BigInt(i), snapshot), [tag, i]);
    this.cache = null;
  }
  /** delRange: [start, end) of the inode in every snapshot. */
  delRange(inode: bigint, start: bigint, end: bigint): void {
    for (let o = start; o < end; o++) for (const sn of SNAPS) this.cells.delete(enc(inode, o, sn));
    this.cache = null;
  }
  /** Maximal runs of one write in one snapshot, in key order (end offset, then snapshot). */
  pieces(): Piece[] {
    if (this.cache) return this.cache;
    const bySnap = [...this.cells.keys()].sort((a, b) => {
      const pa = dec(a);
      const pb = dec(b);
      if (pa.inode !== pb.inode) return pa.inode < pb.inode ? -1 : 1;
      if (pa.snapshot !== pb.snapshot) return pa.snapshot - pb.snapshot;
      return pa.offset < pb.offset ? -1 : pa.offset > pb.offset ? 1 : 0;
    });
    const out: Piece[] = [];
    let cur: Piece | null = null;
    for (const k of bySnap) {
      const [tag, vo] = this.cells.get(k)!;
      const p = dec(k);
      if (cur && cur.inode === p.inode && cur.snapshot === p.snapshot && cur.end === p.offset && cur.tag === tag && cur.vo + (cur.end - cur.start) === BigInt(vo)) {
        cur.end++;
        cur.e = enc(cur.inode, cur.end, cur.snapshot);
        continue;
      }
      cur = { inode: p.inode, snapshot: p.snapshot, start: p.offset, end: p.offset + 1n, tag, vo: BigInt(vo), s: k, e: enc(p.inode, p.offset + 1n, p.snapshot) };
      out.push(cur);
    }
    out.sort((a, b) => (a.e < b.e ? -1 : 1));
    this.cache = out;
    this.ends = out.map((x) => x.e);
    return out;
  }
  /** First piece ending after x. */
  after(x: bigint): Piece | null {
    return pieceAfter(this.pieces(), this.ends, x);
  }
  /** Last piece ending at or before x. */
  endingBy(x: bigint): Piece | null {
    return pieceEndingBy(this.pieces(), this.ends, x);
  }
  /** store.range(): every piece overlapping [start, end), in key order. */
  range(start: bigint, end: bigint): Piece[] {
    return this.pieces().filter((p) => p.e > start && p.s < end);
  }
}

function fmtPiece(p: Piece | null): string {
  if (p === null) return 'null';
  return `[${fmtEnc(p.s)}..${fmtEnc(p.e)}) vo=${p.vo} v=${hex(val(p.tag))}`;
}
function fmtExt(e: Entry | Hole | null): string {
  if (e === null) return 'null';
  if ('hole' in e && e.hole) return `hole [${e.start ? fmtPos(e.start) : '?'}..${fmtPos(e.pos)}) size=${e.size}`;
  const x = e as Entry;
  return `[${x.start ? fmtPos(x.start) : '?'}..${fmtPos(x.pos)}) vo=${x.valueOffset} v=${hex(x.value)}`;
}

/** Random iterator sequences: 30% in slots mode, some with an end, 10-39 calls. */
const SEQ_PLAN: ExtentIterSeqPlan = {
  slotsShare: 0.3,
  endAfter: (R, start) => start + BigInt(R.int(120)) * (1n << 32n) + BigInt(R.int(8)),
  callsMin: 10,
  callsSpan: 30,
  thresholds: { setPos: 0.06, peek: 0.2, next: 0.5, peekPrev: 0.62 },
};

/** The iterator calls as docs/api.md defines them, on the model. */
class IterModel extends ExtentIterModelBase<Piece> {
  constructor(m: SnapModel, cur: bigint, end: bigint | null) {
    super(m, cur, end, fmtPiece);
  }
  /** The piece before the last one in key order; pos moves before the last one's start (not below POS_MIN). */
  prev(): string {
    if (this.last === null && this.peekPrev() === 'null') return 'null';
    const l = this.last!;
    if (l.s > 0n) this.cur = l.s - 1n;
    this.last = this.m.endingBy(l.e - 1n);
    return fmtPiece(this.last);
  }
}

describe('extents btree, several snapshots per inode: model of per-snapshot offset maps', () => {
  it.each(SEEDS)('range, tx.iter walks and calls, delRange and putExtent (seed %i)', async (SEED) => {
    const s = t.store;
    const top = new Rand((SEED * 0x9e3779b1) >>> 0);
    const trace = new Trace(SEED);
    let tag = 1;
    let model = new SnapModel();
    const INODES = [1n, 1n, 1n, 2n, ONE_SNAP_INODE];
    const SPAN = 400;

    const randPos = (R: Rand, m: SnapModel): bigint => {
      const r = R.r();
      if (r < 0.04) return R.pick([0n, ENC_MAX, enc(1n, 0n, 0), enc(3n, 0n, 0)]);
      const ps = m.pieces();
      if (r < 0.65 && ps.length) {
        const p = R.pick(ps);
        const base = R.r() < 0.5 ? p.s : p.e;
        const d = R.pick([0n, 0n, 1n, -1n, 2n, -2n, 1n << 32n, -(1n << 32n), 5n << 32n]);
        const x = base + d;
        return x < 0n ? 0n : x > ENC_MAX ? ENC_MAX : x;
      }
      return enc(R.pick(INODES), BigInt(R.int(SPAN + 60)), R.pick([0, 0, 1, 3, 5, 7, Number(U32_MAX)]));
    };
    /**
     * Random putExtent and delRange; returns the next tag. A delRange may start inside
     * committed extents of several snapshots: tx.iter must see the pieces it leaves before
     * its start (MergedView.spanningKeys), the commit must cut them.
     */
    const applyRandom = (R: Rand, tx: Transaction, m: SnapModel, n: number, tg: number, log: string[] | null): number => {
      for (let i = 0; i < n; i++) {
        const ino = R.pick(INODES);
        if (R.r() < 0.75) {
          const sn = ino === ONE_SNAP_INODE ? ONE_SNAP : R.pick(SNAPS);
          const st = BigInt(R.int(SPAN));
          const size = 1 + R.int(R.r() < 0.7 ? 20 : 120);
          tx.putExtent('ext', { inode: ino, offset: st, snapshot: sn }, size, val(tg));
          log?.push(`putExtent ${ino}:${st}:${sn} size=${size} tag=${tg}`);
          m.put(ino, st, size, sn, tg++);
        } else {
          const a = BigInt(R.int(SPAN));
          const e = a + BigInt(1 + R.int(R.r() < 0.8 ? 30 : 150));
          tx.delRange('ext', { inode: ino, offset: a }, { inode: ino, offset: e });
          log?.push(`delRange ${ino}:${a}..${e}`);
          m.delRange(ino, a, e);
        }
      }
      return tg;
    };
    const checkRange = async (R: Rand, m: SnapModel, what: string): Promise<void> => {
      const all: string[] = [];
      for await (const e of s.range('ext')) all.push(fmtExt(e));
      expect(all, `${what}: range()\nseed=${SEED}`).toEqual(m.pieces().map(fmtPiece));
      for (let i = 0; i < 4; i++) {
        const a = randPos(R, m);
        let b = R.r() < 0.2 ? ENC_MAX : randPos(R, m);
        if (b < a) b = a + BigInt(R.int(3));
        if (b > ENC_MAX) b = ENC_MAX;
        const limit = R.r() < 0.3 ? 1 + R.int(4) : undefined;
        const want = m.range(a, b).map(fmtPiece);
        const opts = { start: dec(a), end: dec(b), ...(limit ? { limit } : {}) };
        const fw: string[] = [];
        for await (const e of s.range('ext', opts)) fw.push(fmtExt(e));
        const msg = `${what}: range(${fmtEnc(a)}..${fmtEnc(b)}${limit ? ` limit ${limit}` : ''})\nseed=${SEED}`;
        expect(fw, msg).toEqual(limit ? want.slice(0, limit) : want);
        const rev: string[] = [];
        for await (const e of s.range('ext', { ...opts, reverse: true })) rev.push(fmtExt(e));
        const wr = want.slice().reverse();
        expect(rev, `reverse ${msg}`).toEqual(limit ? wr.slice(0, limit) : wr);
      }
    };

    // -- build: overlapping extents of three snapshots in the same inodes
    ({ model, tag } = await buildByTransactions(s, top, { model, tag }, { txs: 12, opsPerTx: 20, flushEvery: 4 }, (R, tx, m, n, tg) => applyRandom(R, tx, m, n, tg, null)));
    expect(new Set(model.pieces().map((p) => p.snapshot)).size).toBe(SNAPS.length);
    await checkRange(new Rand(top.seed()), model, 'after build');

    let calls = 0;
    for (let txi = 0; txi < CHECK_TXS; txi++) {
      const txSeed = top.seed();
      let after = model;
      let tg = tag;
      await s.transact(async (tx: Transaction) => {
        const R = new Rand(txSeed);
        const m = model.clone();
        const pendingOps: string[] = [];
        tg = R.r() < 0.6 ? applyRandom(R, tx, m, 1 + R.int(8), tag, pendingOps) : tag;
        const head = (x: string): string => `tx ${txi}: ${x}` + (pendingOps.length ? `\n  pending in this tx: ${pendingOps.join('; ')}` : '');
        // whole walks of the merged view, both ways
        trace.reset(head('full walks'));
        await expectWholeWalks(tx, 'ext', m.pieces().map(fmtPiece), fmtExt, trace);
        // random calls
        for (let sq = 0; sq < 4; sq++) {
          const start = randPos(R, m);
          calls += await expectRandomExtentIterSeq(R, tx, 'ext', start, SEQ_PLAN, (end) => new IterModel(m, start, end), () => randPos(R, m), fmtExt, trace, (call) => head(`seq ${sq}: ${call}`));
        }
        after = m;
      });
      model = after;
      tag = tg;
      if (txi % 4 === 3) {
        await s.flush();
        s.shrink(64);
      }
      if (txi % 5 === 4) await checkRange(new Rand(top.seed()), model, `after tx ${txi}`);
    }
    await checkRange(new Rand(top.seed()), model, 'at the end');
    expect(calls).toBeGreaterThan(100);
    expect(await s.fsck()).toEqual([]);
  });
});
