// SPDX-License-Identifier: GPL-2.0-only
/*
 * Journal seq blacklist (bcachefs journal_seq_blacklist.c).
 *
 * Why: a btree node write may carry keys from journal entries that were not
 * yet durable when it was written (bsets record the highest journal seq of
 * their keys). After a crash, recovery finds the newest durable entry N; a bset
 * whose seq is newer than N holds updates the journal never made durable, and
 * must be ignored. But the journal continues after N, so seq N+1 would be
 * reused for different updates and such a bset would look valid again. So the
 * seqs that may have been used in memory before the crash, N+1 ..
 * N+BLACKLIST_SPAN, are blacklisted: never used by the journal again, bsets
 * carrying them ignored, and the reader accepts them missing inside an entry's
 * [last_seq, seq] window.
 *
 * Persistence: the ranges live in the superblock (BLACKLIST_RANGES_MAX of
 * them). The engine writes the superblock with the new range BEFORE the journal
 * writes its first entry after recovery. As a second line, every journal entry
 * also carries the ranges that intersect its own [last_seq, seq] window
 * (write.ts), so the reader can explain a gap even from the journal alone.
 *
 * Dropping (blacklist-gc.ts; bcachefs bch2_blacklist_entries_gc): a range can
 * go once no node reachable on disk holds a bset with a seq in it, and the
 * journal on disk no longer needs it to explain a gap (its end is below the
 * durable last_seq). BlacklistHolders below is the first half: every node
 * read that skipped a blacklisted bset registers its bucket with those seqs;
 * the bucket leaves the registry when the update that unlinked it is durable
 * (a node's bsets stay in its bucket until it is rewritten into another).
 * Ranges are never merged across non-blacklisted seqs: that would blacklist
 * real, durable updates.
 *
 * Invariant: ranges sorted by start, disjoint, not adjacent (adjacent ranges
 * are merged), at most BLACKLIST_RANGES_MAX.
 */

import { SixtreeError } from '../errors.js';
import { BLACKLIST_RANGES_MAX, type SeqRange } from '../format/superblock.js';

/**
 * Seqs blacklisted after the newest durable entry at recovery. The journal
 * keeps at most JOURNAL_BUFS_MAX entries not yet durable (journal.ts), so no
 * node can hold a seq more than that far past the newest durable one; the span
 * leaves room (bcachefs uses 8 too).
 */
export const BLACKLIST_SPAN = 8;

export class JournalSeqBlacklist {
  private ranges: SeqRange[] = [];

  constructor(ranges: readonly SeqRange[] = []) {
    for (const r of ranges) this.add(r.start, r.end);
  }

  get length(): number {
    return this.ranges.length;
  }

  /** A copy of the ranges, for the superblock. */
  toArray(): SeqRange[] {
    return this.ranges.map((r) => ({ start: r.start, end: r.end }));
  }

  /** Binary search; no allocation. */
  isBlacklisted(seq: number): boolean {
    const r = this.ranges;
    let lo = 0;
    let hi = r.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const m = r[mid]!;
      if (seq < m.start) hi = mid - 1;
      else if (seq > m.end) lo = mid + 1;
      else return true;
    }
    return false;
  }

  /** The ranges that intersect [start, end]. */
  intersecting(start: number, end: number): SeqRange[] {
    return this.ranges.filter((r) => r.end >= start && r.start <= end).map((r) => ({ start: r.start, end: r.end }));
  }

  /** Blacklist [start, end] (inclusive), merging with overlapping or adjacent ranges. ERR_NO_SPACE when the bounded list is full. */
  add(start: number, end: number): void {
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 1 || start > end) {
      throw new SixtreeError('ERR_INVALID_ARG', `journal seq blacklist: invalid range ${start}..${end}`);
    }
    const out: SeqRange[] = [];
    let s = start;
    let e = end;
    let placed = false;
    for (const r of this.ranges) {
      if (r.end + 1 < s) out.push(r);
      else if (r.start > e + 1) {
        if (!placed) {
          out.push({ start: s, end: e });
          placed = true;
        }
        out.push(r);
      } else {
        s = Math.min(s, r.start);
        e = Math.max(e, r.end);
      }
    }
    if (!placed) out.push({ start: s, end: e });
    if (out.length > BLACKLIST_RANGES_MAX) {
      throw new SixtreeError(
        'ERR_NO_SPACE',
        `journal seq blacklist is full (${BLACKLIST_RANGES_MAX} ranges) adding ${start}..${end}: ranges are dropped by the blacklist gc once a read-write open has walked the tree; ${BLACKLIST_RANGES_MAX} unclean opens in a row ended before it did`,
        { ranges: this.ranges.length },
      );
    }
    this.ranges = out;
  }

  /** Blacklist the seqs after the newest durable entry found at recovery; returns the range. */
  addAfterRecovery(newestSeq: number): SeqRange {
    const r = { start: newestSeq + 1, end: newestSeq + BLACKLIST_SPAN };
    this.add(r.start, r.end);
    return r;
  }

  /** Drop one range exactly as stored; returns whether it was there. */
  drop(start: number, end: number): boolean {
    const i = this.ranges.findIndex((r) => r.start === start && r.end === end);
    if (i < 0) return false;
    this.ranges.splice(i, 1);
    return true;
  }

  /** Drop every range that ends before seq; returns how many were dropped. */
  dropBefore(seq: number): number {
    const n = this.ranges.length;
    this.ranges = this.ranges.filter((r) => r.end >= seq);
    return n - this.ranges.length;
  }

  toText(): string {
    return this.ranges.length ? this.ranges.map((r) => `${r.start}..${r.end}`).join(', ') : '(none)';
  }
}

/** A node read since open that still has bsets with blacklisted seqs in its bucket. */
export interface BlacklistHolder {
  bucket: number;
  btreeId: number;
  level: number;
  /** The node's min key (where a path finds it again for a rewrite). */
  minKey: Uint32Array;
  /** The node's seq (its identity: the bucket may hold another node later). */
  nodeSeq: number;
  /** Blacklisted journal seqs of the bsets skipped (sorted, distinct). */
  seqs: number[];
}

/**
 * Nodes whose buckets hold blacklisted bsets, learned from reads since open.
 * Exact for every node read since open; a node never read since open is not
 * known: blacklist-gc walks the whole tree before trusting it.
 */
export class BlacklistHolders {
  private readonly byBucket = new Map<number, BlacklistHolder>();

  get size(): number {
    return this.byBucket.size;
  }

  /** A read of this node skipped bsets with these seqs (idempotent: re-reads after eviction). */
  note(h: BlacklistHolder): void {
    const seqs = [...new Set(h.seqs)].sort((a, b) => a - b);
    this.byBucket.set(h.bucket, { ...h, minKey: h.minKey.slice(), seqs });
  }

  /** The bucket is unlinked durably (or was never reachable): its node holds nothing any more. */
  gone(bucket: number): boolean {
    return this.byBucket.delete(bucket);
  }

  /** Does any registered node hold a seq in [start, end]? */
  holds(start: number, end: number): boolean {
    for (const h of this.byBucket.values()) for (const s of h.seqs) if (s >= start && s <= end) return true;
    return false;
  }

  list(): BlacklistHolder[] {
    return [...this.byBucket.values()];
  }

  toText(): string {
    if (!this.byBucket.size) return '(none)';
    return this.list()
      .slice(0, 16)
      .map((h) => `bucket ${h.bucket} (btree ${h.btreeId} level ${h.level} node ${h.nodeSeq.toString(16)}): seqs ${h.seqs.join(',')}`)
      .join('; ')
      .concat(this.byBucket.size > 16 ? `; ... ${this.byBucket.size - 16} more` : '');
  }
}
