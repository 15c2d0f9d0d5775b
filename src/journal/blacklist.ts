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
 * Dropping: a range can go once no btree node holds a bset with a seq in it
 * (bcachefs drops them after a full btree walk). dropBefore(seq) drops every
 * range ending before seq. Ranges are never merged across non-blacklisted
 * seqs: that would blacklist real, durable updates.
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
        `journal seq blacklist is full (${BLACKLIST_RANGES_MAX} ranges) adding ${start}..${end}: run fsck to drop ranges no btree node uses any more`,
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
