// SPDX-License-Identifier: GPL-2.0-only
/*
 * Shared helpers of the iterator model tests (iter-model.test.ts, normal
 * btree; iter-model-extents.test.ts and iter-model-extents-snapshots.test.ts,
 * extents btree): encoded positions, tagged values, the seeded random source,
 * the call trace printed when a check fails, and the checks the two extents
 * tests share (whole walks both ways, one random iterator call against a
 * model).
 *
 * Positions are encoded as one bigint (inode << 96 | offset << 32 | snapshot),
 * so bpos order is bigint order and bpos successor/predecessor are +1/-1.
 *
 * SIXTREE_ITER_SEED=<n>[,<n>...] replays seeds instead of a test's own list (a
 * failure prints its seed with the calls of the failing sequence);
 * SIXTREE_ITER_TX sets the number of checking transactions.
 */

import { expect } from 'vitest';
import type { Bpos, Entry, Hole, Iter, Store, Transaction } from '../../src/index.js';
import { prng } from '../helpers/store.js';

export const SEED_DEFAULT = 0x5eed1;
/** The seeds to run: SIXTREE_ITER_SEED if given, else the test's own list. */
export function seedsToRun(own: readonly number[]): number[] {
  const env = process.env.SIXTREE_ITER_SEED;
  if (env === undefined || env === '') return own.slice();
  return env.split(',').map((x) => Number(x.trim()));
}
export const TXS = Number(process.env.SIXTREE_ITER_TX ?? 100);

export const U32_MAX = 0xffff_ffffn;
export const U64_MAX = 0xffff_ffff_ffff_ffffn;
export const ENC_MAX = (1n << 160n) - 1n;

/* ------------------------------------------------------------------------
 * Positions and values.
 */

export function enc(inode: bigint, offset: bigint, snapshot: bigint | number): bigint {
  return (inode << 96n) | (offset << 32n) | BigInt(snapshot);
}
export function dec(x: bigint): Bpos {
  return { inode: x >> 96n, offset: (x >> 32n) & U64_MAX, snapshot: Number(x & U32_MAX) };
}
export function fmtEnc(x: bigint): string {
  const p = dec(x);
  return `${p.inode}:${p.offset}:${p.snapshot}`;
}
export function fmtPos(p: Bpos): string {
  return `${p.inode}:${p.offset}:${p.snapshot}`;
}

/** The value written with a tag: 4-byte tag, then a tag-dependent tail of tag-dependent length. */
export function val(tag: number): Uint8Array {
  const b = new Uint8Array(4 + (tag % 29));
  new DataView(b.buffer).setUint32(0, tag, true);
  for (let i = 4; i < b.length; i++) b[i] = (tag * 7 + i) & 0xff;
  return b;
}
export function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}

/** Random helpers over the shared seeded PRNG. Each transaction body draws from its own
 *  Rand seeded outside it, so a restarted transaction replays the same calls. */
export class Rand {
  readonly f: () => number;
  constructor(seed: number) {
    this.f = prng(seed);
  }
  r(): number {
    return this.f();
  }
  int(n: number): number {
    return Math.floor(this.f() * n);
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!;
  }
  seed(): number {
    return this.int(0x1_0000_0000);
  }
}

/** Index of the first element >= x. */
export function lowerBound(a: readonly bigint[], x: bigint): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Call trace of the current sequence, printed with the seed when a check fails. */
export class Trace {
  lines: string[] = [];
  constructor(readonly seed: number) {}
  reset(head: string): void {
    this.lines = [head];
  }
  add(s: string): void {
    this.lines.push(s);
  }
  msg(): string {
    return `seed=${this.seed} (replay: SIXTREE_ITER_SEED=${this.seed})\n  ${this.lines.slice(-60).join('\n  ')}`;
  }
}

/** An iterator's calls as docs/api.md defines them, answered from a model (each answer formatted as the test formats entries). */
export interface IterCallModel {
  cur: bigint;
  peek(): string;
  next(): string;
  peekPrev(): string;
  prev(): string;
  setPos(p: bigint): void;
}

/** tx.iter walked whole, forward (peek/next) and back from the end (peekPrev/prev): the model's entries, in order and reversed. */
export async function expectWholeWalks(tx: Transaction, btree: string, want: string[], fmt: (e: Entry | null) => string, trace: Trace): Promise<void> {
  const fw: string[] = [];
  const f = tx.iter(btree);
  for (let e = await f.peek(); e; e = await f.next()) fw.push(fmt(e));
  expect(fw, `forward walk\n${trace.msg()}`).toEqual(want);
  const rev: string[] = [];
  const r = tx.iter(btree, dec(ENC_MAX));
  for (let e = await r.peekPrev(); e; e = await r.prev()) rev.push(fmt(e));
  expect(rev, `reverse walk\n${trace.msg()}`).toEqual(want.slice().reverse());
}

/**
 * One random call on `it` and on its model `mi` (setPos to randPos(), peek,
 * next, peekPrev or prev, by where x falls among the cumulative
 * thresholds): the answers and the positions after it must agree.
 */
export async function expectIterCall(
  x: number,
  thresholds: { setPos: number; peek: number; next: number; peekPrev: number },
  it: Iter,
  mi: IterCallModel,
  randPos: () => bigint,
  fmt: (e: Entry | null) => string,
  trace: Trace,
): Promise<void> {
  let op: string;
  let got: string;
  let want: string;
  if (x < thresholds.setPos) {
    const p = randPos();
    op = `setPos(${fmtEnc(p)})`;
    it.setPos(dec(p));
    mi.setPos(p);
    got = want = '';
  } else if (x < thresholds.peek) {
    op = 'peek';
    got = fmt(await it.peek());
    want = mi.peek();
  } else if (x < thresholds.next) {
    op = 'next';
    got = fmt(await it.next());
    want = mi.next();
  } else if (x < thresholds.peekPrev) {
    op = 'peekPrev';
    got = fmt(await it.peekPrev());
    want = mi.peekPrev();
  } else {
    op = 'prev';
    got = fmt(await it.prev());
    want = mi.prev();
  }
  trace.add(`${op} -> ${want}`);
  expect(got, trace.msg()).toBe(want);
  expect(fmtPos(it.pos), `pos after ${op}\n${trace.msg()}`).toBe(fmtEnc(mi.cur));
}

/** Of pieces sorted by end (ends: their encoded ends), the first ending after x. */
export function pieceAfter<P>(ps: readonly P[], ends: readonly bigint[], x: bigint): P | null {
  const i = lowerBound(ends, x + 1n);
  return i < ps.length ? ps[i]! : null;
}

/** Of pieces sorted by end, the last ending at or before x. */
export function pieceEndingBy<P>(ps: readonly P[], ends: readonly bigint[], x: bigint): P | null {
  const i = lowerBound(ends, x + 1n) - 1;
  return i >= 0 ? ps[i]! : null;
}

/** A model of an extents btree as the iterator models need it: pieces by encoded start s and end e. */
export interface ExtentPieces<P extends { s: bigint; e: bigint }> {
  /** The first piece ending after x. */
  after(x: bigint): P | null;
  /** The last piece ending at or before x. */
  endingBy(x: bigint): P | null;
}

/**
 * peek, next, peekPrev, setPos and slots mode of an extents iterator on a
 * model (docs/api.md): the two extents model tests share them; prev is each
 * test's own.
 */
export abstract class ExtentIterModelBase<P extends { s: bigint; e: bigint; inode: bigint; start: bigint }> implements IterCallModel {
  last: P | null = null;
  lastHoleEnd: bigint | null = null;
  constructor(
    readonly m: ExtentPieces<P>,
    public cur: bigint,
    readonly end: bigint | null,
    readonly fmt: (p: P | null) => string,
  ) {}
  peek(): string {
    // end bound: extents starting at or after end are out of range, but a
    // later piece (another snapshot's, reaching back over them) may start before it
    let p = this.m.after(this.cur);
    while (p && this.end !== null && p.s >= this.end) p = this.m.after(p.e);
    this.last = p;
    return this.fmt(this.last);
  }
  next(): string {
    if (this.last === null && this.peek() === 'null') return 'null';
    this.cur = this.last!.e;
    this.last = null;
    return this.peek();
  }
  peekPrev(): string {
    const f = this.m.after(this.cur);
    this.last = f && f.s <= this.cur ? f : this.m.endingBy(this.cur);
    return this.fmt(this.last);
  }
  abstract prev(): string;
  setPos(p: bigint): void {
    this.cur = p;
    this.last = null;
    this.lastHoleEnd = null;
  }
  /**
   * The piece of pos's snapshot covering pos, else the hole from pos to the
   * start of that snapshot's next piece in pos's inode (the end of the inode
   * if none), at most 2^32-1 long; other snapshots' pieces are passed over.
   */
  peekSlot(): string {
    const c = dec(this.cur);
    let endOff = U64_MAX;
    for (let f = this.m.after(this.cur); f && f.inode === c.inode; f = this.m.after(f.e)) {
      if (dec(f.e).snapshot !== c.snapshot) continue;
      if (f.start <= c.offset) {
        this.last = f;
        this.lastHoleEnd = null;
        return this.fmt(f);
      }
      endOff = f.start;
      break;
    }
    let size = endOff - c.offset;
    if (size > U32_MAX) size = U32_MAX;
    const he = enc(c.inode, c.offset + size, c.snapshot);
    this.last = null;
    this.lastHoleEnd = he;
    return `hole [${fmtEnc(this.cur)}..${fmtEnc(he)}) size=${size}`;
  }
  nextSlot(): string {
    if (this.last) this.cur = this.last.e;
    else if (this.lastHoleEnd !== null) this.cur = this.lastHoleEnd;
    else {
      this.peekSlot();
      return this.nextSlot();
    }
    if (dec(this.cur).offset === U64_MAX) return 'null';
    return this.peekSlot();
  }
}

/**
 * The build phase of the extents model tests: `txs` transactions of
 * `opsPerTx` random updates each (`apply`, on a clone of the model that
 * replaces it once the transaction committed); every `flushEvery`, a flush
 * and a shrink of the cache.
 */
export async function buildByTransactions<M extends { clone(): M }>(
  store: Store,
  top: Rand,
  from: { model: M; tag: number },
  o: { txs: number; opsPerTx: number; flushEvery: number },
  apply: (R: Rand, tx: Transaction, m: M, n: number, tag: number) => number,
): Promise<{ model: M; tag: number }> {
  let { model, tag } = from;
  for (let b = 0; b < o.txs; b++) {
    const txSeed = top.seed();
    let m = model;
    let tg = tag;
    await store.transact((tx) => {
      m = model.clone();
      tg = apply(new Rand(txSeed), tx, m, o.opsPerTx, tag);
    });
    model = m;
    tag = tg;
    if (b % o.flushEvery === o.flushEvery - 1) {
      await store.flush();
      store.shrink(64);
    }
  }
  return { model, tag };
}

/** How the extents model tests draw a random iterator sequence. */
export interface ExtentIterSeqPlan {
  /** Share of the sequences in slots mode (without an end bound). */
  slotsShare: number;
  /** An end bound after `start`, for 40% of the other sequences (clamped to ENC_MAX). */
  endAfter: (R: Rand, start: bigint) => bigint;
  /** Calls per sequence: callsMin + R.int(callsSpan). */
  callsMin: number;
  callsSpan: number;
  /** expectIterCall's thresholds; setPos's is also the slots mode's. */
  thresholds: { setPos: number; peek: number; next: number; peekPrev: number };
}

/**
 * One random sequence of the extents model tests: tx.iter at `start`, in
 * slots mode or with an end bound or neither (plan), then random calls,
 * each checked against the model iterator made for it. `title` gets the
 * iter call as text, for the trace. Returns the number of calls made.
 */
export async function expectRandomExtentIterSeq<P extends { s: bigint; e: bigint; inode: bigint; start: bigint }>(
  R: Rand,
  tx: Transaction,
  btree: string,
  start: bigint,
  plan: ExtentIterSeqPlan,
  model: (end: bigint | null) => ExtentIterModelBase<P>,
  randPos: () => bigint,
  fmt: (e: Entry | Hole | null) => string,
  trace: Trace,
  title: (iterCall: string) => string,
): Promise<number> {
  const slots = R.r() < plan.slotsShare;
  let end: bigint | null = null;
  if (!slots && R.r() < 0.4) {
    end = plan.endAfter(R, start);
    if (end > ENC_MAX) end = ENC_MAX;
  }
  const it: Iter = tx.iter(btree, dec(start), end === null ? { slots } : { slots, end: dec(end) });
  const mi = model(end);
  trace.reset(title(`iter(${btree}, ${fmtEnc(start)}${end !== null ? `, end ${fmtEnc(end)}` : ''}${slots ? ', slots' : ''})`));
  const len = plan.callsMin + R.int(plan.callsSpan);
  for (let c = 0; c < len; c++) {
    const r = R.r();
    if (slots && r >= plan.thresholds.setPos) await expectSlotCall(r, 0.25, it, mi, fmt, trace);
    else await expectIterCall(r, plan.thresholds, it, mi, randPos, fmt, trace);
  }
  return len;
}

/** A random peekSlot (x < peekShare) or nextSlot on the iterator and the model: same answer, same pos. */
async function expectSlotCall(
  x: number,
  peekShare: number,
  it: Iter,
  mi: { peekSlot(): string; nextSlot(): string; readonly cur: bigint },
  fmt: (e: Entry | Hole | null) => string,
  trace: Trace,
): Promise<void> {
  const op = x < peekShare ? 'peekSlot' : 'nextSlot';
  const got = fmt(op === 'peekSlot' ? await it.peekSlot() : await it.nextSlot());
  const want = op === 'peekSlot' ? mi.peekSlot() : mi.nextSlot();
  trace.add(`${op} -> ${want}`);
  expect(got, trace.msg()).toBe(want);
  expect(fmtPos(it.pos), `pos after ${op}\n${trace.msg()}`).toBe(fmtEnc(mi.cur));
}
