// SPDX-License-Identifier: GPL-2.0-only
/*
 * Journal pins and ring space (bcachefs journal_reclaim.c).
 *
 * Pins. Every journal seq from the oldest still needed to the newest opened
 * has a pin count (bcachefs's journal_entry_pin_list fifo). Whoever holds
 * updates from entry S that are not yet in a written btree node holds a pin on
 * S: a dirty node pins the oldest entry with keys it hasn't written; an open
 * (not yet durable) entry pins itself; after recovery each replayed entry is
 * pinned until replay has put its keys in dirty nodes. last_seq, the oldest
 * seq with a pin (or the next seq when nothing is pinned), is what every
 * written entry records, and what recovery replays from.
 *
 *   pinAdd(seq)         a new pin on seq
 *   pinAdd(seq, pin)    keep pin at the older of its seq and seq (a node that
 *                       gets keys from a newer entry keeps its oldest pin)
 *   pinUpdate(pin, seq) move pin to the newer seq (a node written up to seq)
 *   pinCopy(src, dst?)  dst pins what src pins (pins passed from old nodes to
 *                       an interior update)
 *   pinDrop(pin)        release
 *
 * A pin may only be taken on a seq that is still pinned or open (>= the current
 * last_seq): an older entry may already be overwritten.
 *
 * Ring space. The journal area is a ring of entries placed one after another,
 * each starting on a block boundary; an entry that doesn't fit before the end of
 * the area goes to offset 0 (the tail of the area is skipped). The occupied
 * part is the cyclic interval [tail, head): tail = the oldest entry still needed
 * on disk (seq >= last_seq of the newest DURABLE entry: only that one counts, a
 * crash reads it), head = where the next entry goes. Space behind tail is
 * reclaimed as soon as a durable entry records a newer last_seq.
 *
 * Reserve. A regular entry is opened only if one minimal entry (header, roots,
 * blacklist) still fits after it. That reserve is what lets a full journal
 * write the empty entry that records a newer last_seq once reclaim has dropped
 * pins; without it a full ring could never advance.
 */

import { SixtreeError } from '../errors.js';

export class JournalPin {
  /** Seq pinned; 0 when inactive. */
  seq = 0;
  get active(): boolean {
    return this.seq !== 0;
  }
}

/** Pin counts for a window of seqs [front, front + counts.length). */
export class JournalPins {
  private counts: number[] = [];
  private head = 0;
  private frontSeq: number;
  /** Total active pins (all seqs). */
  nrPins = 0;

  constructor(frontSeq: number) {
    this.frontSeq = frontSeq;
  }

  /** First seq covered. */
  get front(): number {
    return this.frontSeq;
  }

  /** One past the last seq covered. */
  get end(): number {
    return this.frontSeq + (this.counts.length - this.head);
  }

  /** Cover seqs up to and including seq (new seqs start unpinned). */
  extendTo(seq: number): void {
    while (this.end <= seq) this.counts.push(0);
  }

  count(seq: number): number {
    if (seq < this.frontSeq || seq >= this.end) return 0;
    return this.counts[this.head + seq - this.frontSeq]!;
  }

  get(seq: number): void {
    if (seq < this.frontSeq || seq >= this.end) {
      throw new SixtreeError('ERR_INVALID_ARG', `journal pin on seq ${seq} outside the live window [${this.frontSeq}, ${this.end - 1}]: that entry may already be reclaimed`);
    }
    this.counts[this.head + seq - this.frontSeq]++;
    this.nrPins++;
  }

  put(seq: number): void {
    const i = this.head + seq - this.frontSeq;
    if (seq < this.frontSeq || seq >= this.end || this.counts[i]! <= 0) throw new Error(`journal pin put on seq ${seq} which holds no pin`);
    this.counts[i]--;
    this.nrPins--;
    if (seq === this.frontSeq) this.popFront();
  }

  private popFront(): void {
    while (this.head < this.counts.length && this.counts[this.head] === 0) {
      this.head++;
      this.frontSeq++;
    }
    if (this.head > 4096 && this.head * 2 > this.counts.length) {
      this.counts = this.counts.slice(this.head);
      this.head = 0;
    }
  }

  /** "seq:count ..." of the pinned seqs (the first 16). */
  toText(): string {
    const out: string[] = [];
    for (let i = this.head; i < this.counts.length && out.length < 16; i++) if (this.counts[i]! > 0) out.push(`${this.frontSeq + i - this.head}:${this.counts[i]}`);
    return out.join(' ') || '(none)';
  }

  /** Oldest pinned seq, or `fallback` when nothing is pinned. */
  oldest(fallback: number): number {
    this.popFront();
    return this.head < this.counts.length ? this.frontSeq : fallback;
  }
}

/* ---------------------------------------------------------------------------
 * Ring space.
 */

export interface RingEntry {
  seq: number;
  offsetBytes: number;
  sizeBytes: number;
}

export interface Placement {
  offsetBytes: number;
  /** The entry goes to offset 0, skipping the end of the area. */
  wrap: boolean;
  /** End of the free region the entry sits in. */
  regionEndBytes: number;
}

/**
 * Where an entry of needBytes can go given the occupied cyclic interval
 * [tail, head) (empty: nothing occupied). null if nowhere.
 */
export function ringFit(journalBytes: number, head: number, tail: number, empty: boolean, needBytes: number): Placement | null {
  if (empty) {
    if (journalBytes - head >= needBytes) return { offsetBytes: head, wrap: false, regionEndBytes: journalBytes };
    if (journalBytes >= needBytes) return { offsetBytes: 0, wrap: true, regionEndBytes: journalBytes };
    return null;
  }
  if (head > tail) {
    if (journalBytes - head >= needBytes) return { offsetBytes: head, wrap: false, regionEndBytes: journalBytes };
    if (tail >= needBytes) return { offsetBytes: 0, wrap: true, regionEndBytes: tail };
    return null;
  }
  if (head < tail) {
    if (tail - head >= needBytes) return { offsetBytes: head, wrap: false, regionEndBytes: tail };
    return null;
  }
  return null; // head === tail, not empty: full
}

/**
 * Bytes of entries that can still go in after `head`, given the occupied
 * cyclic interval [tail, head) (empty: nothing occupied, the ring free from
 * head round to head): the free bytes, less what the end of the area may
 * waste when an entry does not fit before the end and goes to offset 0 (at
 * most wasteBytes: an entry of s bytes, in blocks, wastes at most s - block).
 * Entries no bigger than wasteBytes + a block that add up to this many bytes
 * fit one after another, and placing one of s bytes takes at most s from it:
 * the journal admits an entry only if the room left behind it holds what it
 * must keep free (pre-reserved entries, an empty entry). A free region that
 * the end of the area splits counts as one, less the waste; asking for the
 * reserve in one contiguous span refused entries into a nearly empty ring.
 */
export function ringRoom(journalBytes: number, head: number, tail: number, empty: boolean, wasteBytes: number): number {
  if (!empty && head < tail) return tail - head;
  if (!empty && head === tail) return 0;
  const toEnd = journalBytes - head;
  const fromStart = empty ? head : tail;
  return Math.max(toEnd, toEnd + fromStart - Math.min(toEnd, wasteBytes));
}

export interface RingPlacement extends Placement {
  /** Largest size (blocks, at most maxEntryBytes) the entry may grow to and still leave keepBytes of ringRoom behind it. */
  capacityBytes: number;
}

/**
 * Where an entry of needBytes goes (ringFit) so that at least keepBytes of
 * ringRoom (with wasteBytes) stay behind it, and how far it may grow (up to
 * maxEntryBytes) keeping them. null: it does not fit, or does not leave that
 * room.
 */
export function ringPlace(
  journalBytes: number,
  head: number,
  tail: number,
  empty: boolean,
  needBytes: number,
  keepBytes: number,
  maxEntryBytes: number,
  wasteBytes: number,
  blockBytes: number,
): RingPlacement | null {
  const p = ringFit(journalBytes, head, tail, empty, needBytes);
  if (!p) return null;
  // the ring once an entry of `size` bytes sits at p
  const start = p.wrap ? 0 : head;
  const tailAfter = empty ? (p.wrap ? 0 : head) : tail;
  const roomAfter = (size: number) => ringRoom(journalBytes, start + size, tailAfter, false, wasteBytes);
  if (roomAfter(needBytes) < keepBytes) return null;
  // roomAfter falls as the entry grows: the largest size in blocks that keeps the room
  let lo = needBytes / blockBytes;
  let hi = Math.floor(Math.min(maxEntryBytes, p.regionEndBytes - p.offsetBytes) / blockBytes);
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (roomAfter(mid * blockBytes) >= keepBytes) lo = mid;
    else hi = mid - 1;
  }
  return { ...p, capacityBytes: lo * blockBytes };
}

/** The entries on disk that are still needed, in seq order (= ring order), and the write position. */
export class JournalRing {
  readonly journalBytes: number;
  private live: RingEntry[] = [];
  private liveHead = 0;
  /** End of the last entry placed (where the next one goes unless it wraps). */
  writeOffsetBytes: number;

  constructor(journalBytes: number, writeOffsetBytes: number, live: readonly RingEntry[]) {
    this.journalBytes = journalBytes;
    this.writeOffsetBytes = writeOffsetBytes;
    for (const e of live) this.live.push({ ...e });
  }

  get nrLive(): number {
    return this.live.length - this.liveHead;
  }

  liveEntries(): RingEntry[] {
    return this.live.slice(this.liveHead);
  }

  oldest(): RingEntry | undefined {
    return this.live[this.liveHead];
  }

  /** An entry was placed (its write issued). */
  push(e: RingEntry): void {
    const last = this.live[this.live.length - 1];
    if (last && this.live.length > this.liveHead && e.seq <= last.seq) throw new Error(`journal ring: entry ${e.seq} placed after ${last.seq}`);
    this.live.push(e);
    this.writeOffsetBytes = e.offsetBytes + e.sizeBytes;
  }

  /** A durable entry recorded lastSeq: entries before it are free space. */
  dropBefore(lastSeq: number): void {
    while (this.liveHead < this.live.length - 1 && this.live[this.liveHead]!.seq < lastSeq) this.liveHead++;
    if (this.liveHead > 1024 && this.liveHead * 2 > this.live.length) {
      this.live = this.live.slice(this.liveHead);
      this.liveHead = 0;
    }
  }

  /** Bytes occupied from the oldest live entry to `head` (cyclic), skipped end included. */
  usedBytes(head = this.writeOffsetBytes): number {
    const o = this.oldest();
    if (!o) return 0;
    const d = head - o.offsetBytes;
    return d > 0 ? d : d + this.journalBytes;
  }

  /**
   * Would [off, off+size) overlap a live entry? (An assertion before every
   * write.) The live entries are in ring order: offsets rise, fall once to 0
   * where the ring wrapped, and rise again; in each rising run the first
   * entry ending after `off` is the only one that can overlap first, found
   * by bisection (a walk of every live entry cost a commit about 10 us with
   * thousands of small entries live).
   */
  overlapsLive(off: number, size: number): RingEntry | null {
    const live = this.live;
    for (let from = this.liveHead; from < live.length; ) {
      // the rising run [from, to): entries whose offset is above live[from]'s
      const start = live[from]!.offsetBytes;
      let lo = from;
      let hi = live.length;
      while (lo + 1 < hi) {
        const mid = (lo + hi) >>> 1;
        if (live[mid]!.offsetBytes > start) lo = mid;
        else hi = mid;
      }
      const to = lo + 1;
      // its first entry ending after off
      let a = from;
      let b = to;
      while (a < b) {
        const mid = (a + b) >>> 1;
        const e = live[mid]!;
        if (e.offsetBytes + e.sizeBytes <= off) a = mid + 1;
        else b = mid;
      }
      if (a < to && live[a]!.offsetBytes < off + size) return live[a]!;
      from = to;
    }
    return null;
  }
}
