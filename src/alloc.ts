// SPDX-License-Identifier: GPL-2.0-only
/*
 * Bucket allocator: which node buckets are free.
 *
 * Nothing is persisted. At open the engine walks the tree and markUsed()s every
 * bucket a node pointer references; everything else is free. A rebuilt map
 * cannot disagree with the tree (bcachefs persists alloc keys and needs gc to
 * repair them; we trade an O(nodes) walk at open for having no such state).
 *
 * Bucket states:
 *
 *   FREE --alloc()--> USED --freeAfter(b, seq)--> PENDING --journalDurable(>= seq)--> FREE
 *                      \--free(b)----------------------------------------------------> FREE
 *
 * PENDING is bcachefs's "reuse only once the update that unlinked it is
 * durable": the old node's bucket is still what the on-disk tree points at until
 * the journal entry carrying the new pointer is on stable storage; overwriting
 * it earlier would make a crash lose the old node. free(b) is for buckets never
 * made reachable (a split that failed before its parent update).
 *
 * Allocation order: the lowest free bucket. Reasons: file-backed stores (sparse
 * image files, loop devices, thin volumes) stay as small as the data; data stays
 * next to the journal and superblock on rotating disks; the high-water mark is
 * the store's real footprint, which is what `sixtree info` reports. Round-robin
 * would spread wear and delay reuse, neither of which matters here: SSDs remap
 * internally, and reuse safety comes from PENDING, not from luck. Finding the
 * lowest free bucket is a two-level bitmap search: a summary bit per 32-bucket
 * word that has any free bucket, so one alloc scans at most nrBuckets/1024
 * summary words plus one word.
 *
 * Pending frees are a FIFO of (bucket, seq). freeAfter with a seq already
 * durable frees at once. Seqs normally arrive in order; one out of order only
 * waits for the entries queued before it (later, never earlier: safe).
 *
 * Watermarks (bcachefs enum bch_watermark, reduced to two): the last
 * `reserve` free buckets are held back from updates that add nodes to the
 * tree ('normal': splits and new roots for inserts); updates that do not
 * ('no_growth': rewrites, which compact a node into a new bucket and give
 * the old one back, merges, the parent room those need, a split for a
 * commit that only deletes, journal replay) may take them. So a store whose writes ran into
 * ERR_NO_SPACE can still delete, and rewrite its nodes to use the room the
 * deletions left; merges give buckets back for new splits. Each such update
 * takes its bucket before it gives the old one(s) back (PENDING until its
 * journal entry is durable): the engine waits for buckets being given back
 * before it gives up (Engine.bucketAlloc).
 */

import { SixtreeError } from './errors.js';
import { Printbuf } from './util/printbuf.js';

export const BUCKET_FREE = 0;
export const BUCKET_USED = 1;
export const BUCKET_PENDING = 2;
const BUCKET_STATE_NAMES = ['free', 'used', 'pending'] as const;

/** Who may take the reserve (see the top of this file). */
export type AllocWatermark = 'normal' | 'no_growth';
/** Buckets a store holds back from growth: enough for a few deletions' rewrites up a tree of BTREE_MAX_DEPTH... */
export const ALLOC_RESERVE_MAX = 16;
/** ...and never more than this fraction of the device (1/8: 8 of the smallest store's 64 buckets). */
const ALLOC_RESERVE_DEN = 8;

/** The reserve of a store of nrBuckets buckets. */
export function allocReserveFor(nrBuckets: number): number {
  return Math.min(ALLOC_RESERVE_MAX, Math.floor(nrBuckets / ALLOC_RESERVE_DEN));
}

export interface AllocatorCounters {
  allocs: number;
  frees: number;
  freesDeferred: number;
  pendingReleased: number;
  noSpace: number;
  /** Allocations that took a bucket of the reserve ('no_growth' with no more than `reserve` free). */
  reserveAllocs: number;
}

export interface AllocatorCheck {
  ok: boolean;
  /** Buckets the tree references that the allocator considers free or pending (would be handed out twice). */
  referencedNotUsed: number[];
  /** Buckets the allocator considers used that the tree doesn't reference (leaked). */
  leaked: number[];
  /** Total counts (the lists are bounded). */
  nrReferencedNotUsed: number;
  nrLeaked: number;
}

const CHECK_LIST_MAX = 64;

export class Allocator {
  readonly nrBuckets: number;
  readonly deviceName: string;
  private readonly state: Uint8Array;
  /** Bit set = bucket free. */
  private readonly freeBits: Uint32Array;
  /** Bit set = freeBits word has a free bucket. */
  private readonly summary: Uint32Array;
  private nrFreeBuckets: number;
  private nrPendingBuckets = 0;
  /** FIFO of pending buckets and the journal seq each waits for. */
  private pendingBuckets: number[] = [];
  private pendingSeqs: number[] = [];
  private pendingHead = 0;
  private durableSeq = 0;
  /** Free buckets only WATERMARK_SHRINK allocations may take. */
  readonly reserve: number;
  readonly counters: AllocatorCounters = { allocs: 0, frees: 0, freesDeferred: 0, pendingReleased: 0, noSpace: 0, reserveAllocs: 0 };

  /** All buckets start free; markUsed() the ones the tree references. */
  constructor(nrBuckets: number, opts: { deviceName?: string; journalDurableSeq?: number; reserve?: number } = {}) {
    if (!Number.isInteger(nrBuckets) || nrBuckets < 1 || nrBuckets > 0xffff_fffe) throw new SixtreeError('ERR_INVALID_ARG', `Allocator: nrBuckets ${nrBuckets} invalid`);
    this.nrBuckets = nrBuckets;
    this.deviceName = opts.deviceName ?? 'device';
    this.durableSeq = opts.journalDurableSeq ?? 0;
    this.state = new Uint8Array(nrBuckets);
    const words = Math.ceil(nrBuckets / 32);
    this.freeBits = new Uint32Array(words);
    this.summary = new Uint32Array(Math.ceil(words / 32));
    for (let b = 0; b < nrBuckets; b++) this.setFreeBit(b);
    this.nrFreeBuckets = nrBuckets;
    this.reserve = opts.reserve ?? 0;
    if (!Number.isInteger(this.reserve) || this.reserve < 0 || this.reserve >= nrBuckets) throw new SixtreeError('ERR_INVALID_ARG', `Allocator: reserve ${this.reserve} invalid for ${nrBuckets} buckets`);
  }

  get nrFree(): number {
    return this.nrFreeBuckets;
  }

  get nrPending(): number {
    return this.nrPendingBuckets;
  }

  get nrUsed(): number {
    return this.nrBuckets - this.nrFreeBuckets - this.nrPendingBuckets;
  }

  /** The journal seq the allocator knows to be durable. */
  get journalDurableSeq(): number {
    return this.durableSeq;
  }

  stateOf(b: number): 'free' | 'used' | 'pending' {
    this.checkBucket(b, 'stateOf');
    return BUCKET_STATE_NAMES[this.state[b]!]!;
  }

  isFree(b: number): boolean {
    this.checkBucket(b, 'isFree');
    return this.state[b] === BUCKET_FREE;
  }

  private checkBucket(b: number, op: string): void {
    if (!Number.isInteger(b) || b < 0 || b >= this.nrBuckets)
      throw new SixtreeError('ERR_INVALID_ARG', `Allocator.${op}: bucket ${b} outside [0, ${this.nrBuckets}) on ${this.deviceName}`);
  }

  private setFreeBit(b: number): void {
    const w = b >>> 5;
    this.freeBits[w] |= 1 << (b & 31);
    this.summary[w >>> 5] |= 1 << (w & 31);
  }

  private clearFreeBit(b: number): void {
    const w = b >>> 5;
    const v = (this.freeBits[w]! & ~(1 << (b & 31))) >>> 0;
    this.freeBits[w] = v;
    if (v === 0) this.summary[w >>> 5] = (this.summary[w >>> 5]! & ~(1 << (w & 31))) >>> 0;
  }

  /** Rebuild at open: the tree references bucket b. Returns false if it was already marked (a bucket referenced twice). */
  markUsed(b: number): boolean {
    this.checkBucket(b, 'markUsed');
    const s = this.state[b]!;
    if (s === BUCKET_USED) return false;
    if (s === BUCKET_PENDING) throw new SixtreeError('ERR_INVALID_ARG', `Allocator.markUsed: bucket ${b} on ${this.deviceName} is waiting for a journal flush; markUsed is for rebuilding at open`);
    this.state[b] = BUCKET_USED;
    this.clearFreeBit(b);
    this.nrFreeBuckets--;
    return true;
  }

  /** The journal seq the oldest pending bucket waits for; 0 when none is pending. */
  get pendingSeqOldest(): number {
    return this.pendingHead < this.pendingSeqs.length ? this.pendingSeqs[this.pendingHead]! : 0;
  }

  /** The lowest free bucket, now used; -1 when none is free to this watermark. */
  tryAlloc(watermark: AllocWatermark = 'normal'): number {
    if (this.nrFreeBuckets <= this.reserve) {
      if (watermark !== 'no_growth' || this.nrFreeBuckets === 0) return -1;
      this.counters.reserveAllocs++;
    }
    const s = this.summary;
    for (let i = 0; i < s.length; i++) {
      const sw = s[i]!;
      if (sw === 0) continue;
      const w = i * 32 + (31 - Math.clz32(sw & -sw));
      const fw = this.freeBits[w]!;
      const b = w * 32 + (31 - Math.clz32(fw & -fw));
      this.state[b] = BUCKET_USED;
      this.clearFreeBit(b);
      this.nrFreeBuckets--;
      this.counters.allocs++;
      return b;
    }
    return -1;
  }

  /** The lowest free bucket, now used; ERR_NO_SPACE when none is free to this watermark. */
  alloc(watermark: AllocWatermark = 'normal'): number {
    const b = this.tryAlloc(watermark);
    if (b >= 0) return b;
    this.counters.noSpace++;
    const held =
      watermark === 'normal'
        ? this.nrFreeBuckets > 0
          ? ` (the last ${this.nrFreeBuckets} free are held back for updates that add no node: rewrites, merges, deletions)`
          : ''
        : ` (the ${this.reserve} held back for rewrites and merges are taken too; a transaction's rewrites give their old buckets back when it ends: delete in smaller transactions)`;
    throw new SixtreeError(
      'ERR_NO_SPACE',
      `no free bucket on ${this.deviceName}: ${this.nrBuckets} buckets, ${this.nrUsed} used${held}, ${this.nrPendingBuckets} waiting for journal seq ` +
        `${this.pendingSeqOldest || '-'} to be durable (durable: ${this.durableSeq})`,
      { path: this.deviceName, nrBuckets: this.nrBuckets, used: this.nrUsed, pending: this.nrPendingBuckets, free: this.nrFreeBuckets, reserve: this.reserve },
    );
  }

  /** Free a bucket that never became reachable on disk: reusable at once. */
  free(b: number): void {
    this.checkBucket(b, 'free');
    if (this.state[b] !== BUCKET_USED) throw new SixtreeError('ERR_INVALID_ARG', `Allocator.free: bucket ${b} on ${this.deviceName} is ${this.stateOf(b)}, not used`);
    this.makeFree(b);
    this.counters.frees++;
  }

  private makeFree(b: number): void {
    this.state[b] = BUCKET_FREE;
    this.setFreeBit(b);
    this.nrFreeBuckets++;
  }

  /**
   * The update that unlinked bucket b is in journal entry journalSeq: b becomes
   * free once that entry is durable (journalDurable(seq >= journalSeq)).
   */
  freeAfter(b: number, journalSeq: number): void {
    this.checkBucket(b, 'freeAfter');
    if (this.state[b] !== BUCKET_USED) throw new SixtreeError('ERR_INVALID_ARG', `Allocator.freeAfter: bucket ${b} on ${this.deviceName} is ${this.stateOf(b)}, not used`);
    if (journalSeq <= this.durableSeq) {
      this.makeFree(b);
      this.counters.frees++;
      return;
    }
    this.state[b] = BUCKET_PENDING;
    this.nrPendingBuckets++;
    this.pendingBuckets.push(b);
    this.pendingSeqs.push(journalSeq);
    this.counters.freesDeferred++;
  }

  /** The journal is durable through seq: release pending frees waiting for it. Returns how many buckets became free. */
  journalDurable(seq: number): number {
    if (seq > this.durableSeq) this.durableSeq = seq;
    let n = 0;
    while (this.pendingHead < this.pendingSeqs.length && this.pendingSeqs[this.pendingHead]! <= this.durableSeq) {
      const b = this.pendingBuckets[this.pendingHead]!;
      this.pendingHead++;
      this.nrPendingBuckets--;
      this.makeFree(b);
      n++;
    }
    if (this.pendingHead > 1024 && this.pendingHead * 2 > this.pendingSeqs.length) {
      this.pendingBuckets = this.pendingBuckets.slice(this.pendingHead);
      this.pendingSeqs = this.pendingSeqs.slice(this.pendingHead);
      this.pendingHead = 0;
    }
    this.counters.pendingReleased += n;
    this.counters.frees += n;
    return n;
  }

  /**
   * fsck: compare with the set of buckets the tree references. Pending buckets
   * are neither referenced nor leaked (their unlinking update isn't durable yet).
   */
  checkAgainst(used: Iterable<number>): AllocatorCheck {
    const ref = new Uint8Array(this.nrBuckets);
    const r: AllocatorCheck = { ok: true, referencedNotUsed: [], leaked: [], nrReferencedNotUsed: 0, nrLeaked: 0 };
    for (const b of used) {
      if (!Number.isInteger(b) || b < 0 || b >= this.nrBuckets) {
        r.nrReferencedNotUsed++;
        if (r.referencedNotUsed.length < CHECK_LIST_MAX) r.referencedNotUsed.push(b);
        continue;
      }
      ref[b] = 1;
      if (this.state[b] !== BUCKET_USED) {
        r.nrReferencedNotUsed++;
        if (r.referencedNotUsed.length < CHECK_LIST_MAX) r.referencedNotUsed.push(b);
      }
    }
    for (let b = 0; b < this.nrBuckets; b++) {
      if (this.state[b] === BUCKET_USED && !ref[b]) {
        r.nrLeaked++;
        if (r.leaked.length < CHECK_LIST_MAX) r.leaked.push(b);
      }
    }
    r.ok = r.nrReferencedNotUsed === 0 && r.nrLeaked === 0;
    return r;
  }

  /** Debug: recount states and bitmaps; returns a problem or null. */
  verify(): string | null {
    let free = 0;
    let pending = 0;
    for (let b = 0; b < this.nrBuckets; b++) {
      const s = this.state[b]!;
      const bit = (this.freeBits[b >>> 5]! >>> (b & 31)) & 1;
      if ((s === BUCKET_FREE) !== (bit === 1)) return `bucket ${b}: state ${BUCKET_STATE_NAMES[s]} but free bit ${bit}`;
      if (s === BUCKET_FREE) free++;
      if (s === BUCKET_PENDING) pending++;
    }
    for (let w = 0; w < this.freeBits.length; w++) {
      const sbit = (this.summary[w >>> 5]! >>> (w & 31)) & 1;
      if ((this.freeBits[w] !== 0) !== (sbit === 1)) return `word ${w}: summary bit ${sbit} disagrees`;
    }
    if (free !== this.nrFreeBuckets) return `free count ${this.nrFreeBuckets}, counted ${free}`;
    if (pending !== this.nrPendingBuckets) return `pending count ${this.nrPendingBuckets}, counted ${pending}`;
    return null;
  }

  stats(): { buckets: number; free: number; used: number; pending: number; reserve: number } & AllocatorCounters {
    return { buckets: this.nrBuckets, free: this.nrFree, used: this.nrUsed, pending: this.nrPending, reserve: this.reserve, ...this.counters };
  }

  toText(): string {
    const out = new Printbuf();
    out.line(`allocator ${this.deviceName}:`);
    out.nested((o) => {
      o.field('buckets', this.nrBuckets);
      o.field('free', `${this.nrFree} (the last ${this.reserve} held back for updates that add no node)`);
      o.field('used', this.nrUsed);
      o.field('pending', this.nrPending + (this.nrPending ? ` (oldest waits for journal seq ${this.pendingSeqs[this.pendingHead]})` : ''));
      o.field('journal durable seq', this.durableSeq);
      o.field('allocs', this.counters.allocs);
      o.field('frees', `${this.counters.frees} (${this.counters.freesDeferred} deferred)`);
      o.field('from the reserve', this.counters.reserveAllocs);
      o.field('no space', this.counters.noSpace);
    });
    return out.toString();
  }
}
