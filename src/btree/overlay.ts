// SPDX-License-Identifier: GPL-2.0-only
/*
 * Overlay: a transaction's pending updates for one btree, before commit.
 *
 * The transaction's own reads must see its updates (API.md), and put/del/
 * putExtent/delRange are synchronous while reading the btree is not, so
 * updates are kept here in a form reads can merge with the btree cheaply, and
 * turned into concrete btree keys at commit (commit.ts), where reading the
 * btree is allowed.
 *
 * State:
 *   keys        sorted by position, at most one per position: values and
 *               deletions (normal btrees), or value extents keyed at their end
 *               (extents btrees; they never overlap each other).
 *   tombstones  position ranges [start, end) whose btree contents are gone:
 *               delRange, and (extents btrees) the range each putExtent covers.
 * Invariant: every key here is newer than every tombstone that covers it: a
 * new tombstone removes or trims the keys it covers when it is added. So a
 * read is: overlay key at pos if any; else deleted if a tombstone covers pos;
 * else whatever the btree has.
 *
 * putKey appends: keys put out of order wait in a pending list, merged into
 * `keys` (sorted once, the last put at a position winning) before anything
 * reads the overlay or a tombstone is added, so a transaction putting many
 * keys in random order costs one sort, not a search and a shift per key.
 *
 * Keys are ordered and searched by their position words (k.p). The API's
 * bigint positions (XPos) of keys are made only when asked for (posAt:
 * iterators); tombstones keep theirs. A put makes no bigint position.
 */

import { KEY_TYPE, type BkeyI } from './bkey.js';
import { type Bpos, U64_WORD_HI, U64_WORD_LO, wordsCmp, wordsToBpos, posWords } from './bpos.js';

export interface XPos {
  inode: bigint;
  offset: bigint;
  snapshot: number;
}

export function xcmp(a: XPos, b: XPos): number {
  if (a.inode !== b.inode) return a.inode < b.inode ? -1 : 1;
  if (a.offset !== b.offset) return a.offset < b.offset ? -1 : 1;
  if (a.snapshot !== b.snapshot) return a.snapshot < b.snapshot ? -1 : 1;
  return 0;
}

export function xFromWords(w: Uint32Array, i = 0): XPos {
  return wordsToBpos(w, i);
}

export function xToWords(p: XPos): Uint32Array {
  return posWords(p as Bpos);
}

/** An extent: inode and snapshot fixed, offsets [start, end). */
export interface ExtentRange {
  inode: bigint;
  snapshot: number;
  start: bigint;
  end: bigint;
}

/** Tombstones reaching every snapshot in their range (delRange). */
export const ANY_SNAPSHOT = -1;

/**
 * A deleted range [s, t) of a transaction: every position in it (snapshot
 * ANY_SNAPSHOT: delRange), or only the extents of one snapshot (an extent
 * write replacing what it overlaps in its own snapshot; the positions of
 * other snapshots between s and t are not its to delete).
 */
export type Tombstone = [XPos, XPos, number];

/**
 * The part of extent e that lies inside the position range [s, t), as an
 * offset range [lo, hi) within e (lo >= hi: nothing). Positions inside e are
 * (e.inode, x, e.snapshot) for x in [e.start, e.end).
 * A tombstone of one snapshot clips only that snapshot's extents.
 */
export function extentClip(e: ExtentRange, s: XPos, t: XPos, snapshot = ANY_SNAPSHOT): [bigint, bigint] {
  /* an extent write's overwrite range reaches only its own snapshot (Tombstone) */
  if (snapshot !== ANY_SNAPSHOT && e.snapshot !== snapshot) return [0n, 0n];
  let lo: bigint;
  if (e.inode > s.inode) lo = e.start;
  else if (e.inode < s.inode) return [0n, 0n];
  else lo = s.offset + (e.snapshot >= s.snapshot ? 0n : 1n);
  if (lo < e.start) lo = e.start;

  let hi: bigint;
  if (e.inode < t.inode) hi = e.end;
  else if (e.inode > t.inode) return [0n, 0n];
  else hi = t.offset + (e.snapshot < t.snapshot ? 1n : 0n);
  if (hi > e.end) hi = e.end;
  return lo < hi ? [lo, hi] : [0n, 0n];
}

/**
 * Subtract a set of position ranges (sorted, disjoint) from extent e:
 * the visible offset pieces, in order.
 */
export function extentMinus(e: ExtentRange, ranges: ReadonlyArray<Tombstone>): Array<[bigint, bigint]> {
  const out: Array<[bigint, bigint]> = [];
  let cur = e.start;
  for (const [s, t, snapshot] of ranges) {
    const [lo, hi] = extentClip(e, s, t, snapshot);
    if (lo >= hi) continue;
    if (lo > cur) out.push([cur, lo]);
    if (hi > cur) cur = hi;
  }
  if (cur < e.end) out.push([cur, e.end]);
  return out;
}

/** Extent value layout: [valueOffset u64 LE][user value]. */
export const EXTENT_VALUE_HEADER_BYTES = 8;

export function extentValueOffset(value: Uint8Array): bigint {
  const dv = new DataView(value.buffer, value.byteOffset, value.byteLength);
  return dv.getBigUint64(0, true);
}

export function extentValueMake(valueOffset: bigint, user: Uint8Array): Uint8Array {
  const v = new Uint8Array(EXTENT_VALUE_HEADER_BYTES + user.length);
  new DataView(v.buffer).setBigUint64(0, valueOffset, true);
  v.set(user, EXTENT_VALUE_HEADER_BYTES);
  return v;
}

export function extentValueWithOffset(value: Uint8Array, valueOffset: bigint): Uint8Array {
  const v = value.slice();
  new DataView(v.buffer, v.byteOffset, v.byteLength).setBigUint64(0, valueOffset, true);
  return v;
}

/** Make the key for a piece [lo, hi) of an extent key k (bcachefs bch2_cut_front + bch2_cut_back). */
export function extentPiece(k: BkeyI, e: ExtentRange, lo: bigint, hi: bigint): BkeyI {
  const vo = extentValueOffset(k.value) + (lo - e.start);
  const p = posWords({ inode: e.inode, offset: hi, snapshot: e.snapshot });
  return { type: KEY_TYPE.extent, p, size: Number(hi - lo), version: k.version, value: extentValueWithOffset(k.value, vo) };
}

export function extentOfKey(k: BkeyI): ExtentRange {
  const end = xFromWords(k.p);
  return { inode: end.inode, snapshot: end.snapshot, start: end.offset - BigInt(k.size), end: end.offset };
}

/** putKey order: a key's position in word form, then the order it came in (a stable sort's tie break). */
function pendingCmp(a: BkeyI, b: BkeyI): number {
  return wordsCmp(a.p, 0, b.p, 0);
}

/* settleOrder's sort keys, grown as needed (a BigUint64Array sorted natively, written through its u32 view). */
let settleKeys = new BigUint64Array(0);
let settleWords = new Uint32Array(0);

/**
 * The order of keys by position, equal positions in call order (a stable
 * sort). Each key gets one u64: the first bits of its position from the
 * first word where the keys differ (a summary: positions below compare
 * below or equal), then its index; a native sort of those orders by summary
 * and index, and runs of equal summaries (rare: positions closer than the
 * bits kept) are sorted again by the words, stably. About ten times faster
 * than a comparator sort of 1,000 keys.
 */
function settleOrder(pend: readonly BkeyI[]): Uint32Array {
  const n = pend.length;
  if (settleKeys.length < n) {
    settleKeys = new BigUint64Array(Math.max(n, 2 * settleKeys.length, 64));
    settleWords = new Uint32Array(settleKeys.buffer);
  }
  const u = settleWords;
  /* the first word where positions differ, and the bits the index takes */
  let d = 0;
  const p0 = pend[0]!.p;
  while (d < 4 && pend.every((k) => k.p[d] === p0[d])) d++;
  const idxBits = n > 1 ? 32 - Math.clz32(n - 1) : 0;
  const idxSpan = 2 ** idxBits;
  /* summary: 53 bits from word d, less the bits past 64 - idxBits */
  const drop = 2 ** Math.max(0, idxBits - 11);
  const loSpan = 2 ** (32 - idxBits);
  for (let i = 0; i < n; i++) {
    const w = pend[i]!.p;
    const pre = Math.floor((w[d]! * 2 ** 21 + (d < 4 ? w[d + 1]! >>> 11 : 0)) / drop);
    const hi = Math.floor(pre / loSpan);
    u[2 * i + U64_WORD_HI] = hi;
    u[2 * i + U64_WORD_LO] = (pre - hi * loSpan) * idxSpan + i;
  }
  const keys = settleKeys.subarray(0, n);
  keys.sort();
  const order = new Uint32Array(n);
  const hiOf = (j: number): number => u[2 * j + U64_WORD_HI]!;
  const loOf = (j: number): number => u[2 * j + U64_WORD_LO]!;
  for (let j = 0; j < n; j++) order[j] = loOf(j) % idxSpan;
  /* runs of one summary: by the words, call order kept (Array sort is stable) */
  for (let j = 0; j + 1 < n; ) {
    let e = j + 1;
    while (e < n && hiOf(e) === hiOf(j) && Math.floor(loOf(e) / idxSpan) === Math.floor(loOf(j) / idxSpan)) e++;
    if (e - j > 1) {
      const run = Array.from(order.subarray(j, e)).sort((a, b) => pendingCmp(pend[a]!, pend[b]!));
      order.set(run, j);
    }
    j = e;
  }
  return order;
}

/** The overlay of one btree in one transaction. */
export class BtreeOverlay {
  /** Sorted by position (settled: see pending). */
  private sorted: BkeyI[] = [];
  /**
   * Each sorted key's position as bigints, made when first asked for
   * (posAt): searches compare the keys' words (k.p), so a put need not
   * make one.
   */
  private keyPos: (XPos | undefined)[] = [];
  /**
   * putKey's keys that did not come in ascending order, in call order, not
   * yet merged into sorted: a transaction putting many keys in random order
   * sorts them once (settle(), before anything reads the overlay) instead
   * of searching and shifting the sorted array per key.
   */
  private pending: BkeyI[] = [];
  private pendingPos: (XPos | undefined)[] = [];
  /** Position ranges [start, end), in insertion order. */
  tombstones: Tombstone[] = [];
  /** Bumped on every change: iterators over the overlay re-search when it moved. */
  gen = 0;
  /** The largest extent put (its commit first raises the store's extent size bound to cover it). */
  extentSizeMax = 0;

  constructor(readonly extents: boolean) {}

  /** Drop every update, keeping this object (BtreeTrans.shed). */
  clear(): void {
    this.sorted.length = 0;
    this.keyPos.length = 0;
    this.pending.length = 0;
    this.pendingPos.length = 0;
    this.tombstones.length = 0;
    this.extentSizeMax = 0;
    this.gen++;
  }

  get empty(): boolean {
    return this.sorted.length === 0 && this.pending.length === 0 && this.tombstones.length === 0;
  }

  /** The keys, sorted by position, at most one per position. */
  get keys(): BkeyI[] {
    if (this.pending.length) this.settle();
    return this.sorted;
  }

  /** Merge the pending keys in: sorted by position, the last put at a position wins. */
  private settle(): void {
    const pend = this.pending;
    const pendPos = this.pendingPos;
    this.pending = [];
    this.pendingPos = [];
    const idx = settleOrder(pend);
    const keys: BkeyI[] = [];
    const pos: (XPos | undefined)[] = [];
    const old = this.sorted;
    const oldPos = this.keyPos;
    let i = 0;
    for (let j = 0; j < idx.length; j++) {
      const x = idx[j]!;
      if (j + 1 < idx.length && pendingCmp(pend[x]!, pend[idx[j + 1]!]!) === 0) continue;
      const k = pend[x]!;
      while (i < old.length && wordsCmp(old[i]!.p, 0, k.p, 0) < 0) {
        keys.push(old[i]!);
        pos.push(oldPos[i++]);
      }
      if (i < old.length && wordsCmp(old[i]!.p, 0, k.p, 0) === 0) i++;
      keys.push(k);
      pos.push(pendPos[x]);
    }
    while (i < old.length) {
      keys.push(old[i]!);
      pos.push(oldPos[i++]);
    }
    this.sorted = keys;
    this.keyPos = pos;
  }

  /** Index of the first key with pos >= p (or > p when strict). */
  lowerBound(p: XPos, strict = false): number {
    if (this.pending.length) this.settle();
    return this.lowerBoundWords(xToWords(p), strict);
  }

  /** lowerBound for a position in word form (settled). */
  private lowerBoundWords(w: Uint32Array, strict: boolean): number {
    const keys = this.sorted;
    const lim = strict ? 1 : 0;
    let lo = 0;
    let hi = keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (wordsCmp(keys[mid]!.p, 0, w, 0) < lim) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  posAt(i: number): XPos {
    if (this.pending.length) this.settle();
    return (this.keyPos[i] ??= xFromWords(this.sorted[i]!.p));
  }

  /** The overlay key exactly at p, if any. */
  keyAt(p: XPos): BkeyI | undefined {
    if (this.pending.length) this.settle();
    const w = xToWords(p);
    const i = this.lowerBoundWords(w, false);
    return i < this.sorted.length && wordsCmp(this.sorted[i]!.p, 0, w, 0) === 0 ? this.sorted[i] : undefined;
  }

  /** True if a tombstone covers p. */
  covered(p: XPos): boolean {
    for (const [s, t, snapshot] of this.tombstones) if (xcmp(s, p) <= 0 && xcmp(p, t) < 0 && (snapshot === ANY_SNAPSHOT || p.snapshot === snapshot)) return true;
    return false;
  }

  /** Tombstones merged into sorted disjoint ranges. */
  mergedTombstones(): Tombstone[] {
    if (this.tombstones.length === 0) return [];
    const r = this.tombstones.slice().sort((a, b) => xcmp(a[0], b[0]));
    const out: Tombstone[] = [];
    /* ranges merge with the last one of the same reach (all snapshots, or the same one) */
    const lastOf = new Map<number, Tombstone>();
    for (const [s, t, snapshot] of r) {
      const last = lastOf.get(snapshot);
      if (last && xcmp(s, last[1]) <= 0) {
        if (xcmp(t, last[1]) > 0) last[1] = t;
      } else {
        const m: Tombstone = [s, t, snapshot];
        out.push(m);
        lastOf.set(snapshot, m);
      }
    }
    return out;
  }

  private insertAt(i: number, k: BkeyI, p: XPos | undefined): void {
    this.sorted.splice(i, 0, k);
    this.keyPos.splice(i, 0, p);
  }

  private removeAt(i: number): void {
    this.sorted.splice(i, 1);
    this.keyPos.splice(i, 1);
  }

  /** A value or a deletion at one position (normal btrees); `at`: k.p as a position, when the caller has it. */
  putKey(k: BkeyI, at?: XPos): void {
    const p = at;
    this.gen++;
    /* appending in order (a batch of ascending keys): straight to the sorted keys */
    const n = this.sorted.length;
    if (this.pending.length === 0 && (n === 0 || wordsCmp(this.sorted[n - 1]!.p, 0, k.p, 0) < 0)) {
      this.sorted.push(k);
      this.keyPos.push(p);
      return;
    }
    this.pending.push(k);
    this.pendingPos.push(p);
  }

  /**
   * Delete [s, t): keys inside go, extents are trimmed, btree contents hidden
   * by a tombstone. `snapshot`: only extents of that snapshot (an extent
   * write's overwrite), else every position in the range.
   */
  addTombstone(s: XPos, t: XPos, snapshot = ANY_SNAPSHOT): void {
    if (xcmp(s, t) >= 0) return;
    if (this.pending.length) this.settle();
    if (!this.extents) {
      let i = this.lowerBound(s);
      const tw = xToWords(t);
      while (i < this.sorted.length && wordsCmp(this.sorted[i]!.p, 0, tw, 0) < 0) this.removeAt(i);
    } else {
      // value extents overlapping [s, t): trim or split them. Extents are
      // sorted by end; with several snapshots in one inode, start order can
      // differ, so scan to the end of t's inode rather than stopping at t.
      const hits: number[] = [];
      for (let i = this.lowerBound(s, true); i < this.sorted.length; i++) {
        if (this.posAt(i).inode > t.inode) break;
        const [lo, hi] = extentClip(extentOfKey(this.sorted[i]!), s, t, snapshot);
        if (lo < hi) hits.push(i);
      }
      const pieces: BkeyI[] = [];
      for (let j = hits.length - 1; j >= 0; j--) {
        const i = hits[j]!;
        const k = this.sorted[i]!;
        const e = extentOfKey(k);
        const [lo, hi] = extentClip(e, s, t, snapshot);
        this.removeAt(i);
        if (e.start < lo) pieces.push(extentPiece(k, e, e.start, lo));
        if (hi < e.end) pieces.push(extentPiece(k, e, hi, e.end));
      }
      for (const piece of pieces) {
        const pp = xFromWords(piece.p);
        this.insertAt(this.lowerBound(pp), piece, pp);
      }
    }
    this.tombstones.push([s, t, snapshot]);
    this.gen++;
  }

  /** A new extent: it replaces whatever it overlaps (extents btrees). */
  putExtent(k: BkeyI): void {
    const e = extentOfKey(k);
    const s = { inode: e.inode, offset: e.start, snapshot: e.snapshot };
    const t = { inode: e.inode, offset: e.end, snapshot: e.snapshot };
    this.addTombstone(s, t, e.snapshot);
    if (k.size > this.extentSizeMax) this.extentSizeMax = k.size;
    const p = xFromWords(k.p);
    this.insertAt(this.lowerBound(p), k, p);
    this.gen++;
  }
}

/** Extent end position for (inode, start + size, snapshot), checked against u64 overflow by the caller. */
export function extentEnd(start: XPos, size: bigint): XPos {
  return { inode: start.inode, offset: start.offset + size, snapshot: start.snapshot };
}

