// SPDX-License-Identifier: GPL-2.0-only
/*
 * Journal (bcachefs journal.c): reservations, entries, group commit, flush.
 *
 * A transaction's keys all go into ONE entry (atomicity): reserve(bytes) takes
 * room in the open entry, res.add() appends sub-entries (in call order, which
 * is commit order: the engine adds while it holds the leaf's write lock),
 * release(res) says the transaction is done filling, waitDurable(res.seq)
 * resolves once that entry is on stable storage.
 *
 * Entry (JournalBuf) states:
 *
 *   open --seal--> sealed --(no open reservations, no write in flight)--> writing --write+flush--> done
 *
 *   open     reservations may join; sealed when a reservation doesn't fit, or
 *            when the write slot is free and someone waits for it (waitDurable,
 *            flush), or when its last reservation is released with the slot free.
 *   sealed   no new reservations; written once its reservations are released
 *            and every earlier entry is durable.
 *   writing  one at a time: the next entry's write starts only after this
 *            one's flush (write.ts explains why).
 *
 * Group commit: while a write is in flight, commits pile into the open entry;
 * when the write completes the open entry (all of them) goes in the next write.
 * With no write in flight an entry is written as soon as its reservations are
 * released (writeDelayMs, default 0, can hold it a little longer).
 *
 * Bounds: at most JOURNAL_BUFS_MAX entries not yet durable (open + sealed +
 * writing); an entry is at most layout.journalEntryBytesMax; a reservation at
 * most maxReservationBytes. reserve() waits when buffers or ring space run out:
 * space comes back when a durable entry records a newer last_seq (reclaim.ts);
 * when nothing pending would give any, it asks onReclaimNeeded(targetSeq) to
 * write the dirty nodes pinning entries older than targetSeq, and fails with
 * ERR_NO_SPACE only when that makes no progress, or after reclaimWaitMs.
 *
 * A write error puts the journal in an error state (bcachefs goes emergency
 * read-only): every waiter and every later call fails with that error.
 */

import { SixtreeError } from '../errors.js';
import { JSET_ENTRY, JSET_ENTRY_TYPE_NAMES, JSET_HEADER_BYTES, jsetEntryBytes, jsetEntryWrite, type JsetEntryTypeName } from '../format/journal-format.js';
import type { SeqRange, Superblock } from '../format/superblock.js';
import type { Device } from '../io/device.js';
import { roundUp, type Layout } from '../layout.js';
import { Printbuf, bytesToText } from '../util/printbuf.js';
import { BLACKLIST_SPAN, JournalSeqBlacklist } from './blacklist.js';
import type { JournalReadResult } from './read.js';
import { JournalPin, JournalPins, JournalRing, ringPlace, ringRoom, type RingEntry, type RingPlacement } from './reclaim.js';
import { blacklistEntriesBytes, journalEntryFinish, journalEntryWrite, journalEntryWriteSync, rootsBytesMax, type EntryFinishCtx, type JournalRoot } from './write.js';
import { ShapeKeeper } from '../util/shapes.js';

export { JournalPin } from './reclaim.js';
export type { JournalRoot } from './write.js';

/** Entries not yet durable (open + sealed + writing), at most. */
export const JOURNAL_BUFS_MAX = 4;
if (BLACKLIST_SPAN < JOURNAL_BUFS_MAX + 1) throw new Error('journal: BLACKLIST_SPAN must cover every entry that may be open or in flight at a crash');
export const ROOT_PTR_BYTES_MAX_DEFAULT = 64;
export const RECLAIM_WAIT_MS_DEFAULT = 30_000;
export const WRITE_DELAY_MS_MAX = 10;

/**
 * Who a reservation is for (bcachefs journal watermarks). Ordinary commits
 * leave a share of the ring free for interior updates: a split's pointer keys
 * must be journaled before its parent can be written again, and writing that
 * parent is what frees the ring when commits fill it (without the share, the
 * commits waiting for space would starve the very update that gives it back).
 *   normal    commits: leave the interior share, the recovery reserve and
 *             one empty entry free
 *   interior  interior-update entries: may use the share; during a
 *             recovery's replay also the recovery reserve
 *   reserve   empty entries recording a newer last_seq: may use everything
 */
export type JournalWatermark = 'normal' | 'interior' | 'reserve';

/** reserveLocked's answer in check mode (nothing reserved). */
const CHECK_OK = Object.freeze({ check: true }) as unknown as JournalRes;
/** Group-commit histogram buckets: commits per write in [1], [2,3], [4,7], ... [64, inf). */
const COMMITS_HIST_LABELS = ['1', '2-3', '4-7', '8-15', '16-31', '32-63', '64+'] as const;
const COMMITS_HIST_BUCKETS = COMMITS_HIST_LABELS.length;

export interface JournalStart {
  /** Seq of the first entry this journal opens. */
  nextSeq: number;
  /** Where the next entry goes, relative to the journal area. */
  writeOffsetBytes: number;
  /** Entries on disk still needed (the recovered window), seq order. */
  live: RingEntry[];
  /** last_seq recorded by the newest entry on disk (0: none). */
  lastSeqOndisk: number;
  /** Newest entry on disk (0: none). */
  durableSeq: number;
  /** Seqs pinned until replayDone() (the replayed entries). */
  replaySeqs: number[];
}

/** A journal with nothing on disk (fresh store). */
export function journalStartEmpty(nextSeq = 1, writeOffsetBytes = 0): JournalStart {
  return { nextSeq, writeOffsetBytes, live: [], lastSeqOndisk: 0, durableSeq: 0, replaySeqs: [] };
}

/**
 * Start after readJournal(). The recovered entries stay protected on disk until
 * a new entry records a newer last_seq; with replayPins each recovered entry is
 * pinned until replayDone(), so the engine can pin the seqs of the keys it
 * replays into dirty nodes.
 */
export function journalStartAfterRead(r: JournalReadResult, nextSeq: number, opts: { replayPins: boolean }): JournalStart {
  if (r.newestSeq !== 0 && nextSeq <= r.newestSeq) throw new SixtreeError('ERR_INVALID_ARG', `journal start: next seq ${nextSeq} must be after the newest entry ${r.newestSeq}`);
  return {
    nextSeq,
    writeOffsetBytes: r.nextWriteOffsetBytes,
    live: r.entries.map((e) => ({ seq: e.seq, offsetBytes: e.offsetBytes, sizeBytes: e.sizeBytes })),
    lastSeqOndisk: r.lastSeq,
    durableSeq: r.newestSeq,
    replaySeqs: opts.replayPins ? r.entries.map((e) => e.seq) : [],
  };
}

/**
 * Decide where the journal continues after open (bcachefs recovery):
 *  - clean shutdown and the journal's newest entry is the one the superblock
 *    recorded: continue at newest + 1, nothing to replay;
 *  - otherwise (crash): blacklist newest+1 .. newest+BLACKLIST_SPAN (seqs that
 *    may sit in node bsets without a durable entry) and continue after them.
 * The caller must persist blacklist (superblock) before the journal writes.
 */
export function journalRecoveryPlan(
  sb: Pick<Superblock, 'clean' | 'cleanJournalSeq'>,
  r: JournalReadResult,
  blacklist: JournalSeqBlacklist,
): { nextSeq: number; clean: boolean; blacklisted: SeqRange | null; replay: boolean } {
  const base = Math.max(r.newestSeq, sb.cleanJournalSeq);
  if (sb.clean && sb.cleanJournalSeq === r.newestSeq) {
    return { nextSeq: base + 1, clean: true, blacklisted: null, replay: false };
  }
  const range = blacklist.addAfterRecovery(base);
  return { nextSeq: range.end + 1, clean: false, blacklisted: range, replay: r.entries.length > 0 };
}

export interface ReclaimInfo {
  /** true: reserve() is blocked on space; false: background (journal past reclaimThreshold). */
  urgent: boolean;
  bytesUsed: number;
  bytesTotal: number;
}

export interface JournalOptions {
  uuid: Uint8Array;
  /** Number of btrees: every entry has room for this many roots. */
  nrBtrees: number;
  /** Current root of every btree; called when an entry is written. */
  /** The roots as of entry `seq` (see write.ts). */
  getRoots: (seq: number) => readonly JournalRoot[];
  /** Largest encoded root pointer (default 64). */
  rootPtrBytesMax?: number;
  /**
   * Write the dirty nodes that pin entries older than targetSeq (drop their
   * pins). Resolves true if it made progress. Must not take journal
   * reservations (it runs while reserve() waits for space).
   */
  onReclaimNeeded?: (targetSeq: number, info: ReclaimInfo) => Promise<boolean | void> | boolean | void;
  /** An entry became durable (drive Allocator.journalDurable from here). */
  onDurable?: (seq: number) => void;
  /** Shared with the superblock; the journal never uses a blacklisted seq and embeds the ranges in its window. */
  blacklist?: JournalSeqBlacklist;
  /** Keeps the last released reservation for its hidden class (src/util/shapes.ts); default: the journal's own. */
  shapes?: ShapeKeeper;
  start?: JournalStart;
  reclaimWaitMs?: number;
  /** Hold an entry up to this long after it opened before writing it (0..10 ms; default 0). */
  writeDelayMs?: number;
  /** Call onReclaimNeeded in the background after a write once the ring is fuller than this (0..1; default 0.5). */
  reclaimThreshold?: number;
  /**
   * Asked as each entry's write starts: true writes and flushes it on this
   * thread (the device's writeFlushSync), its completion still delivered
   * asynchronously. For a commit with nothing else in flight (Store open
   * option inlineFlush): no worker-thread hand-off, the event loop blocked
   * meanwhile.
   */
  writeInline?: () => boolean;
  /**
   * Debug: called as each entry's write starts with the last_seq it records
   * (the engine's pin check: no unwritten key older than that may be left
   * unpinned).
   */
  onLastSeq?: (lastSeq: number, seq: number) => void;
}

export interface JournalCounters {
  entriesWritten: number;
  bytesWritten: number;
  flushes: number;
  commits: number;
  /** Histogram of commits per written entry: [1], [2-3], [4-7], [8-15], [16-31], [32-63], [64+]. */
  commitsPerWrite: number[];
  emptyEntries: number;
  reservationWaits: number;
  reclaimWaits: number;
  reclaimCalls: number;
  reclaimBackgroundCalls: number;
  reclaimErrors: number;
  noSpace: number;
  writeErrors: number;
  /** Pre-reservations taken / that had to wait. */
  preres: number;
  preresWaits: number;
  /** Recovered entries whose replay pins were dropped while replay went on (replayedBefore). */
  replayPinsDroppedEarly: number;
  /** Entries written and flushed on the calling thread (writeInline). */
  inlineWrites: number;
}

export interface JournalStats {
  seq: number;
  lastSeq: number;
  bytesUsed: number;
  bytesTotal: number;
}

interface Deferred {
  promise: Promise<void>;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/** Wait for p, or until performance.now() reaches deadline (rejects if p rejects first). */
async function waitUntil(p: Promise<unknown>, deadline: number): Promise<void> {
  const left = deadline - performance.now();
  if (left <= 0) return;
  let t: NodeJS.Timeout | undefined;
  try {
    await Promise.race([p, new Promise<void>((r) => (t = setTimeout(r, Math.ceil(left))))]);
  } finally {
    clearTimeout(t);
  }
}

function deferred(): Deferred {
  let resolve!: () => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {}); // a rejection nobody waits for must not crash the process
  return { promise, resolve, reject };
}

type BufState = 'open' | 'sealed' | 'writing' | 'done';

/** One journal entry being filled or written (bcachefs struct journal_buf). */
class JournalBuf {
  state: BufState = 'open';
  /** Bytes filled: header space + sub-entries added. */
  usedBytes = JSET_HEADER_BYTES;
  /** Reserved and not yet used. */
  reservedBytes = 0;
  nrRes = 0;
  nrCommits = 0;
  /** Someone waits for this entry: seal it as soon as the write slot is free. */
  flushWanted = false;
  /** Written even with no commits (records a newer last_seq). */
  forceWrite = false;
  offsetBytes = -1;
  sizeBytes = 0;
  readonly durable = deferred();
  readonly openedMs = performance.now();
  constructor(
    readonly seq: number,
    readonly data: Uint8Array,
    readonly view: DataView,
    /** Limit for usedBytes + reservedBytes. */
    readonly keysLimitBytes: number,
    /** Roots + blacklist budget. */
    readonly overheadBytes: number,
    readonly blacklistRangesMax: number,
    readonly wrap: boolean,
  ) {}

  /** Upper bound of the entry's size on disk. */
  boundBytes(blockBytes: number): number {
    return roundUp(this.usedBytes + this.reservedBytes + this.overheadBytes, blockBytes);
  }
}

/**
 * Ring space held for an entry to come (bcachefs journal_preres): an interior
 * update takes one before it changes anything, so the entry recording its
 * pointer keys can always be written, however full ordinary commits made the
 * ring. Converted by reserve(bytes, 'interior', preres); put back when done.
 */
export class JournalPreres {
  /** Ring bytes held. */
  bytes = 0;
}

/** A reservation in one entry (bcachefs struct journal_res). */
export class JournalRes {
  /** Bytes still available to add(). */
  bytesRemaining: number;
  released = false;
  constructor(
    private readonly journal: Journal,
    /** @internal */ readonly buf: JournalBuf,
    bytes: number,
  ) {
    this.bytesRemaining = bytes;
  }

  /** The seq of the entry this reservation's keys go in. */
  get seq(): number {
    return this.buf.seq;
  }

  /** Append a sub-entry (type: 'btree_keys' | 'btree_root' or its code). */
  add(type: JsetEntryTypeName | number, btreeId: number, level: number, payload: Uint8Array): void {
    const code = typeof type === 'number' ? type : JSET_ENTRY[type];
    if (this.released) throw new Error(`journal res (seq ${this.seq}): add after release`);
    if (!(code >= 1 && code <= JSET_ENTRY_TYPE_NAMES.length) || code === JSET_ENTRY.blacklist) throw new Error(`journal res: cannot add sub-entry type ${String(type)}`);
    if (!Number.isInteger(btreeId) || btreeId < 0 || btreeId > 0xffff || !Number.isInteger(level) || level < 0 || level > 0xff)
      throw new Error(`journal res: btreeId ${btreeId} / level ${level} out of range`);
    const n = jsetEntryBytes(payload.length);
    if (n > this.bytesRemaining) throw new Error(`journal res (seq ${this.seq}): adding ${n} bytes with ${this.bytesRemaining} left of the reservation`);
    const b = this.buf;
    b.usedBytes = jsetEntryWrite(b.data, b.usedBytes, code, btreeId, level, payload, b.view);
    b.reservedBytes -= n;
    this.bytesRemaining -= n;
  }

  release(): void {
    this.journal.release(this);
  }
}

export class Journal {
  readonly dev: Device;
  readonly layout: Layout;
  readonly blacklist: JournalSeqBlacklist;
  /** Keeps the last reservation released (src/util/shapes.ts). */
  private readonly shapes: ShapeKeeper;
  readonly counters: JournalCounters = {
    entriesWritten: 0,
    bytesWritten: 0,
    flushes: 0,
    commits: 0,
    commitsPerWrite: new Array(COMMITS_HIST_BUCKETS).fill(0),
    emptyEntries: 0,
    inlineWrites: 0,
    reservationWaits: 0,
    reclaimWaits: 0,
    reclaimCalls: 0,
    reclaimBackgroundCalls: 0,
    reclaimErrors: 0,
    noSpace: 0,
    preres: 0,
    preresWaits: 0,
    writeErrors: 0,
    replayPinsDroppedEarly: 0,
  };
  /** Largest reservation reserve() accepts. */
  readonly maxReservationBytes: number;

  private readonly opts: JournalOptions;
  private readonly ctx: EntryFinishCtx;
  private readonly rootsBytes: number;
  private readonly pins: JournalPins;
  private readonly ring: JournalRing;
  /** Entries not yet durable, seq order. */
  private bufs: JournalBuf[] = [];
  private writing: JournalBuf | null = null;
  private freeData: Array<{ data: Uint8Array; view: DataView }> = [];
  private nextSeqToOpen: number;
  /** Newest seq opened by this journal (0: none yet). */
  private newestOpened = 0;
  private durable: number;
  private lastSeqOndiskValue: number;
  private replaySeqs: number[];
  /** replaySeqs[0, replayPinsPut) had their pins dropped already (replayedBefore). */
  private replayPinsPut = 0;
  /** Between open and replayDone() (or recoveryDone()) of a recovery: interior updates may use the recovery reserve. */
  private replaying = false;
  private closed = false;
  private error: unknown = null;
  /** Resolved (and replaced) whenever an entry becomes durable or the journal fails. */
  private progress = deferred();
  private reclaimInFlight: Promise<boolean> | null = null;
  /** Ring bytes held by pre-reservations. */
  private preresTotal = 0;
  /** Held pre-reservations by size (ring bytes), for the largest (wasteBytes). */
  private readonly preresBySize = new Map<number, number>();
  private preresLargest = 0;
  private reclaimUrgent = false;
  private delayTimer: NodeJS.Timeout | null = null;
  private pinWaiters: Deferred | null = null;

  constructor(dev: Device, layout: Layout, opts: JournalOptions) {
    this.dev = dev;
    this.layout = layout;
    this.opts = opts;
    if (!(opts.uuid instanceof Uint8Array) || opts.uuid.length !== 16) throw new SixtreeError('ERR_INVALID_ARG', 'journal: uuid must be 16 bytes');
    if (!Number.isInteger(opts.nrBtrees) || opts.nrBtrees < 0 || opts.nrBtrees > 0xffff) throw new SixtreeError('ERR_INVALID_ARG', `journal: nrBtrees ${opts.nrBtrees} invalid`);
    const rootPtrBytesMax = opts.rootPtrBytesMax ?? ROOT_PTR_BYTES_MAX_DEFAULT;
    const delay = opts.writeDelayMs ?? 0;
    if (!(delay >= 0 && delay <= WRITE_DELAY_MS_MAX)) throw new SixtreeError('ERR_INVALID_ARG', `journal: writeDelayMs ${delay} outside [0, ${WRITE_DELAY_MS_MAX}]`);
    if (layout.blockBytes % dev.alignBytes !== 0) throw new SixtreeError('ERR_INVALID_ARG', `journal: block size ${layout.blockBytes} is not a multiple of the device alignment ${dev.alignBytes}`);
    this.blacklist = opts.blacklist ?? new JournalSeqBlacklist();
    this.shapes = opts.shapes ?? new ShapeKeeper();
    this.ctx = { uuid: opts.uuid, blockBytes: layout.blockBytes, nrBtrees: opts.nrBtrees, rootPtrBytesMax, getRoots: opts.getRoots, blacklist: this.blacklist };
    this.rootsBytes = rootsBytesMax(opts.nrBtrees, rootPtrBytesMax);
    const start = opts.start ?? journalStartEmpty();
    this.nextSeqToOpen = this.skipBlacklisted(start.nextSeq);
    this.durable = start.durableSeq;
    this.lastSeqOndiskValue = start.lastSeqOndisk;
    this.ring = new JournalRing(layout.journalBytes, start.writeOffsetBytes, start.live);
    this.replaySeqs = [...start.replaySeqs];
    this.replaying = this.replaySeqs.length > 0;
    this.pins = new JournalPins(this.replaySeqs.length ? this.replaySeqs[0]! : this.nextSeqToOpen);
    for (const s of this.replaySeqs) {
      this.pins.extendTo(s);
      this.pins.get(s);
    }
    // The largest entry minus its fixed part (header, every root, every blacklist range) is what one reservation may use.
    const overheadMax = this.rootsBytes + blacklistEntriesBytes(this.blacklist.length);
    this.maxReservationBytes = layout.journalEntryBytesMax - JSET_HEADER_BYTES - overheadMax;
    if (this.maxReservationBytes < layout.blockBytes / 2 || 2 * layout.journalEntryBytesMax > layout.journalBytes)
      throw new SixtreeError('ERR_INVALID_ARG', `journal: entries of ${layout.journalEntryBytesMax} bytes leave ${this.maxReservationBytes} bytes for keys after ${overheadMax} bytes of roots and blacklist; use a bigger journal`);
  }

  /* ------------------------------------------------------------------ state */

  /** Newest seq opened (or durable when nothing was opened yet). */
  get seq(): number {
    return Math.max(this.newestOpened, this.durable);
  }

  /** The error that stopped the journal, or null. */
  get failed(): unknown {
    return this.error;
  }

  /** Newest durable seq. */
  get durableSeq(): number {
    return this.durable;
  }

  /**
   * Oldest seq still pinned, or the next seq to open when nothing is pinned:
   * what the next entry written would record as last_seq (stats().lastSeq
   * reports the newest entry instead when nothing is pinned).
   */
  get lastSeq(): number {
    return this.pins.oldest(this.nextSeqToOpen);
  }

  /** last_seq of the newest durable entry (space behind it is free). */
  get lastSeqOndisk(): number {
    return this.lastSeqOndiskValue;
  }

  /** Where the next entry goes (journal-relative); for the superblock at clean shutdown. */
  get writeOffsetBytes(): number {
    const w = this.ring.writeOffsetBytes;
    return w >= this.layout.journalBytes ? 0 : w;
  }

  stats(): JournalStats {
    // Nothing pinned: the newest entry is the oldest one needed.
    return { seq: this.seq, lastSeq: Math.min(this.lastSeq, this.seq), bytesUsed: this.ring.usedBytes(), bytesTotal: this.layout.journalBytes };
  }

  private skipBlacklisted(seq: number): number {
    while (this.blacklist.isBlacklisted(seq)) seq++;
    return seq;
  }

  private checkUsable(): void {
    if (this.error) throw this.error;
    if (this.closed) throw new SixtreeError('ERR_CLOSED', `journal on ${this.dev.path} is closed`, { path: this.dev.path });
  }

  /* ------------------------------------------------------------------ pins */

  /** Pin seq (a new pin, or keep `pin` at the older of its seq and seq). */
  pinAdd(seq: number, pin: JournalPin = new JournalPin()): JournalPin {
    if (pin.active && pin.seq <= seq) return pin;
    this.pinSet(pin, seq);
    return pin;
  }

  /** Move pin to seq if that is newer (or pin is inactive). */
  pinUpdate(pin: JournalPin, seq: number): JournalPin {
    if (pin.active && pin.seq >= seq) return pin;
    this.pinSet(pin, seq);
    return pin;
  }

  /** dst (new if omitted) also pins what src pins, keeping dst's older pin. */
  pinCopy(src: JournalPin, dst: JournalPin = new JournalPin()): JournalPin {
    if (src.active) this.pinAdd(src.seq, dst);
    return dst;
  }

  pinDrop(pin: JournalPin): void {
    if (!pin.active) return;
    const s = pin.seq;
    pin.seq = 0;
    this.pins.put(s);
    this.wakePinWaiters();
  }

  private pinSet(pin: JournalPin, seq: number): void {
    if (seq > this.seq) throw new SixtreeError('ERR_INVALID_ARG', `journal pin on seq ${seq}, newer than the newest entry ${this.seq}`);
    this.pins.get(seq); // first: throws if seq is already reclaimed, leaving pin untouched
    if (pin.active) {
      this.pins.put(pin.seq);
      this.wakePinWaiters();
    }
    pin.seq = seq;
  }

  /**
   * Replay has put every key of the recovered entries before seq into the
   * nodes (which pin what they hold unwritten): drop those entries' own pins,
   * so reclaim can free them while replay goes on (bcachefs replay_now_at).
   * A full journal could not be replayed otherwise: replay's splits need
   * journal space, which only reclaiming the replayed entries can give.
   */
  replayedBefore(seq: number): void {
    const seqs = this.replaySeqs;
    const from = this.replayPinsPut;
    while (this.replayPinsPut < seqs.length && seqs[this.replayPinsPut]! < seq) this.pins.put(seqs[this.replayPinsPut++]!);
    if (this.replayPinsPut === from) return;
    this.counters.replayPinsDroppedEarly += this.replayPinsPut - from;
    this.wakePinWaiters();
  }

  /**
   * Replay finished: drop the pins held on the recovered entries.
   * keepRecoveryReserve: the interior updates replay started may still use
   * the recovery reserve until recoveryDone(). They pin the recovered
   * entries whose keys went into their new nodes until their own entries
   * are durable, so reclaim frees nothing for them: with the reserve taken
   * away as replay's last commit ended, a recovery whose keys caused many
   * rewrites waited for ring space that only those updates could give back
   * (crash campaign seed 2001001, the store did not open).
   */
  replayDone(keepRecoveryReserve = false): void {
    const seqs = this.replaySeqs;
    for (let i = this.replayPinsPut; i < seqs.length; i++) this.pins.put(seqs[i]!);
    this.replaySeqs = [];
    this.replayPinsPut = 0;
    if (!keepRecoveryReserve) this.replaying = false;
    this.wakePinWaiters();
  }

  /** The interior updates replay started are journaled: the recovery reserve is kept for the next recovery again. */
  recoveryDone(): void {
    this.replaying = false;
  }

  /* ------------------------------------------------------------------ reservations */

  private bytesOk(bytes: number): number {
    if (!Number.isInteger(bytes) || bytes < 0) throw new SixtreeError('ERR_INVALID_ARG', `journal reservation: ${bytes} bytes is not a non-negative integer`);
    const b = roundUp(bytes, 8);
    if (b > this.maxReservationBytes) {
      throw new SixtreeError(
        'ERR_INVALID_ARG',
        `journal reservation of ${bytes} bytes exceeds the largest entry payload (${this.maxReservationBytes} bytes: entries of ${bytesToText(this.layout.journalEntryBytesMax)} in a ${bytesToText(this.layout.journalBytes)} journal); commit fewer keys per transaction or use a bigger journal`,
        { bytes, maxBytes: this.maxReservationBytes },
      );
    }
    return b;
  }

  /** Reserve without waiting: null when that would need a wait (buffers or ring space). */
  tryReserve(bytes: number): JournalRes | null {
    this.checkUsable();
    return this.reserveLocked(this.bytesOk(bytes));
  }

  /**
   * Reserve `bytes` (sum of jsetEntryBytes(payload) of the adds to come) in
   * the open entry, waiting for room if needed. Interior updates pass
   * 'interior' (see JournalWatermark).
   */
  async reserve(bytes: number, watermark: 'normal' | 'interior' = 'normal', preres?: JournalPreres): Promise<JournalRes> {
    this.checkUsable();
    const b = this.bytesOk(bytes);
    const own = preres?.bytes ?? 0;
    const res = this.reserveLocked(b, watermark, false, own) ?? ((await this.reserveSlowpath(b, watermark, true, false, own)) as JournalRes);
    if (preres) this.preresPut(preres);
    return res;
  }

  /* ------------------------------------------------------------------ pre-reservations */

  /** Ring bytes of an entry carrying `keysBytes` of sub-entries (what a pre-reservation holds for it). */
  entryBytesFor(keysBytes: number): number {
    return roundUp(JSET_HEADER_BYTES + this.rootsBytes + blacklistEntriesBytes(this.blacklist.length) + keysBytes, this.layout.blockBytes);
  }

  get preresBytes(): number {
    return this.preresTotal;
  }

  /**
   * Grow p to hold `bytes` of ring (no wait). Admitted while the ring ahead
   * has room for every pre-reservation plus one empty entry; may use the
   * interior share ordinary commits leave free.
   */
  preresTryGet(p: JournalPreres, bytes: number): boolean {
    this.checkUsable();
    const more = bytes - p.bytes;
    if (more <= 0) return true;
    if (!this.preresFits(more, bytes)) return false;
    this.preresResized(p.bytes, bytes);
    p.bytes += more;
    this.preresTotal += more;
    this.counters.preres++;
    return true;
  }

  /** Would `more` bytes of pre-reservation fit (one pre-reservation growing to `size` bytes)? */
  private preresFits(more: number, size = more): boolean {
    // the open entry at the size it may still grow to: what it leaves behind
    // was counted when it opened, without this pre-reservation
    const { head, tail, empty } = this.nearHead(true);
    const waste = this.wasteBytes(size);
    return ringRoom(this.layout.journalBytes, head, tail, empty, waste) >= this.preresTotal + more + this.minEntryBytes() + this.recoveryReserveNow() + waste;
  }

  private preresResized(from: number, to: number): void {
    const m = this.preresBySize;
    if (from > 0) {
      const n = m.get(from)! - 1;
      if (n > 0) m.set(from, n);
      else {
        m.delete(from);
        if (from === this.preresLargest) this.preresLargest = m.size ? Math.max(...m.keys()) : 0;
      }
    }
    if (to > 0) {
      m.set(to, (m.get(to) ?? 0) + 1);
      if (to > this.preresLargest) this.preresLargest = to;
    }
  }

  /** Ring bytes of an empty entry (header, roots, blacklist). */
  private minEntryBytes(): number {
    return roundUp(JSET_HEADER_BYTES + this.rootsBytes + blacklistEntriesBytes(this.blacklist.length), this.layout.blockBytes);
  }

  /**
   * The most the end of the ring area may waste before the entries the ring
   * keeps room for are in: less than the largest of them (one that does not
   * fit before the end goes to offset 0). They are the pre-reserved
   * interior-update entries and empty ones (`largest`: one about to be
   * pre-reserved); entries outside the reserve (ordinary commits, up to
   * journalEntryBytesMax) are placed against the ring as it is (ringPlace).
   * With entries of one block it is 0 and the room is every free byte.
   *
   * It is also the slack ordinary commits and pre-reservations leave on top:
   * an empty entry may take its block from before the end while the entries
   * it frees lie in a region the waste may hide, so the room can dip by up to
   * this much until more is freed (the crash campaign, 4 KiB blocks, seed
   * 2100302: interior updates holding pre-reservations could not journal).
   */
  private wasteBytes(largest = 0): number {
    return Math.max(this.minEntryBytes(), this.preresLargest, largest) - this.layout.blockBytes;
  }

  /** Wait until preresTryGet(p, bytes) would succeed (entries landing, reclaim). ERR_NO_SPACE as reserve(). */
  async preresWait(p: JournalPreres, bytes: number): Promise<void> {
    this.checkUsable();
    this.counters.preresWaits++;
    const waitMs = this.opts.reclaimWaitMs ?? RECLAIM_WAIT_MS_DEFAULT;
    const deadline = performance.now() + waitMs;
    for (;;) {
      this.checkUsable();
      if (this.preresFits(bytes - p.bytes)) return;
      if (performance.now() >= deadline) {
        this.counters.noSpace++;
        throw this.noSpaceError(`waited ${waitMs} ms for a journal pre-reservation of ${bytes} bytes (${this.preresTotal} held)`);
      }
      const landing = this.spaceFromEntries(deadline);
      if (landing) {
        await landing;
        continue;
      }
      const before = this.lastSeq;
      const pinWait = this.pinProgress();
      const progress = await this.reclaim(this.reclaimTarget(bytes, 'interior'), true);
      if (this.lastSeq > before) continue;
      if (!progress) {
        // pre-reservations put back give room too
        if (this.preresTotal > 0) {
          await waitUntil(this.preresProgress(), deadline);
          continue;
        }
        this.counters.noSpace++;
        throw this.noSpaceError(`reclaim could not free any journal entry for a pre-reservation of ${bytes} bytes`);
      }
      await waitUntil(pinWait, deadline);
    }
  }

  /** Give p's ring space back. */
  preresPut(p: JournalPreres): void {
    if (p.bytes === 0) return;
    this.preresResized(p.bytes, 0);
    this.preresTotal -= p.bytes;
    p.bytes = 0;
    const w = this.preresWaiters;
    this.preresWaiters = null;
    w?.resolve();
  }

  private preresWaiters: Deferred | null = null;
  private preresProgress(): Promise<void> {
    this.preresWaiters ??= deferred();
    return this.preresWaiters.promise;
  }

  /**
   * Wait until a reservation of `bytes` would succeed, without taking it
   * (bcachefs JOURNAL_RES_GET_CHECK: a commit that found no room unlocks,
   * waits here, relocks and tries again; taking a reservation here would
   * write an entry for nothing). withReclaim false: never ask for reclaim,
   * only wait for entries under way to land; false when only reclaim could
   * make room (the caller frees what it holds - a commit closes its interior
   * updates - and waits again with reclaim). ERR_NO_SPACE as reserve().
   */
  async waitForRoom(bytes: number, withReclaim = true): Promise<boolean> {
    this.checkUsable();
    const b = this.bytesOk(bytes);
    if (this.reserveLocked(b, 'normal', true)) return true;
    return (await this.reserveSlowpath(b, 'normal', withReclaim, true)) !== null;
  }

  /**
   * Ring bytes no entry but an empty one may use outside recovery: the room
   * a recovery's first interior updates need. Replay pins every recovered
   * entry until its keys are in nodes (replayedBefore), so the splits those
   * keys cause must find journal space that reclaim cannot give yet; without
   * this reserve a crash with the ring full left a store that could not open
   * (ERR_NO_SPACE at recovery). It must hold the interior updates the
   * oldest entry's keys cause (nothing is freed before they are all in):
   * half the interior share (4 entries of a 1 MiB journal of 4 KiB blocks),
   * at least two entries.
   */
  get recoveryReserveBytes(): number {
    const block = this.layout.blockBytes;
    const minEntry = roundUp(JSET_HEADER_BYTES + this.rootsBytes, block);
    return Math.max(2 * minEntry, roundUp(Math.floor(this.interiorShareBytes / 2), block));
  }

  /** The recovery reserve as it applies now (0 while replaying: replay's interior updates may use it). */
  private recoveryReserveNow(): number {
    return this.replaying ? 0 : this.recoveryReserveBytes;
  }

  /** Ring bytes ordinary commits leave free for interior-update entries. */
  get interiorShareBytes(): number {
    const block = this.layout.blockBytes;
    const minEntry = roundUp(JSET_HEADER_BYTES + this.rootsBytes, block);
    // a few entries' worth: pointer keys are small, but each entry carries the roots
    return Math.min(roundUp(Math.floor(this.layout.journalBytes / 32), block), Math.max(8 * minEntry, roundUp(Math.floor(this.layout.journalBytes / 64), block)));
  }

  private openBuf(): JournalBuf | null {
    const last = this.bufs[this.bufs.length - 1];
    return last && last.state === 'open' ? last : null;
  }

  private reserveLocked(bytes: number, watermark: 'normal' | 'interior' = 'normal', checkOnly = false, ownPreres = 0): JournalRes | null {
    let b = this.openBuf();
    if (checkOnly) {
      // would a reservation succeed now? (bcachefs JOURNAL_RES_GET_CHECK): nothing changes
      if (b && b.usedBytes + b.reservedBytes + bytes <= b.keysLimitBytes) return CHECK_OK;
      return this.entryPlacement(bytes, watermark, ownPreres) ? CHECK_OK : null;
    }
    if (b && b.usedBytes + b.reservedBytes + bytes > b.keysLimitBytes) {
      this.seal(b);
      this.kick();
      b = null;
    }
    if (!b) {
      b = this.openEntry(bytes, watermark, ownPreres);
      if (!b) return null;
    }
    b.reservedBytes += bytes;
    b.nrRes++;
    b.nrCommits++;
    this.counters.commits++;
    return new JournalRes(this, b, bytes);
  }

  /** Done filling: unused reserved bytes go back; the entry may now be written. */
  release(res: JournalRes): void {
    if (res.released) throw new Error(`journal res (seq ${res.seq}) released twice`);
    res.released = true;
    this.shapes.keep(res);
    const b = res.buf;
    b.reservedBytes -= res.bytesRemaining;
    res.bytesRemaining = 0;
    b.nrRes--;
    if (b.nrRes === 0) this.kick();
  }

  /**
   * The occupied interval of the ring with the entries not yet placed laid
   * after the last one placed: [tail, head). openAtCapacity: the open entry
   * at the size it may grow to, not the size it has.
   */
  private nearHead(openAtCapacity = false): { head: number; tail: number; empty: boolean } {
    const block = this.layout.blockBytes;
    let head = this.ring.writeOffsetBytes;
    let first: number | null = null;
    for (const b of this.bufs) {
      if (b.state === 'writing' || b.state === 'done') continue;
      const pos = b.wrap ? 0 : head;
      if (first === null) first = pos;
      head = pos + (openAtCapacity && b.state === 'open' ? roundUp(b.keysLimitBytes + b.overheadBytes, block) : b.boundBytes(block));
    }
    const oldest = this.ring.oldest();
    const tail = oldest ? oldest.offsetBytes : (first ?? head);
    const empty = !oldest && first === null;
    return { head, tail, empty };
  }

  /**
   * Open a new entry with room for `bytes` of keys, or null (too many buffers,
   * or no ring space at this watermark). Entries opened below 'normal' get
   * just the room asked for, so ordinary commits cannot join them and eat the
   * share.
   */
  private openEntry(bytes: number, watermark: JournalWatermark, ownPreres = 0): JournalBuf | null {
    const pl = this.entryPlacement(bytes, watermark, ownPreres);
    if (!pl) return null;
    const { p, overhead, nrRanges, seq } = pl;
    const capacity = p.capacityBytes;
    const mem = this.freeData.pop() ?? this.newEntryBuffer();
    const keysLimit = watermark === 'normal' ? capacity - overhead : Math.min(capacity - overhead, JSET_HEADER_BYTES + bytes);
    const b = new JournalBuf(seq, mem.data, mem.view, keysLimit, overhead, nrRanges, p.wrap);
    this.nextSeqToOpen = this.skipBlacklisted(seq + 1);
    this.newestOpened = seq;
    this.pins.extendTo(seq);
    this.pins.get(seq); // an entry pins itself until durable
    this.bufs.push(b);
    return b;
  }

  /** Where a new entry with room for `bytes` would go at this watermark (null: no buffer or no ring space). No side effects. */
  private entryPlacement(bytes: number, watermark: JournalWatermark, ownPreres = 0): { p: RingPlacement; reserve: number; overhead: number; nrRanges: number; seq: number } | null {
    if (this.bufs.length >= JOURNAL_BUFS_MAX) return null;
    const block = this.layout.blockBytes;
    const seq = this.nextSeqToOpen;
    const nrRanges = this.blacklist.intersecting(Math.min(this.lastSeq, seq), seq).length;
    const overhead = this.rootsBytes + blacklistEntriesBytes(nrRanges);
    const minEntry = roundUp(JSET_HEADER_BYTES + overhead, block);
    const need = roundUp(JSET_HEADER_BYTES + overhead + bytes, block);
    // what must stay free behind this entry: one empty entry (records a newer
    // last_seq), the other pre-reservations, and for ordinary commits the
    // interior share and the slack for the waste (wasteBytes)
    const others = Math.max(0, this.preresTotal - ownPreres);
    const waste = this.wasteBytes();
    const reserve = watermark === 'reserve' ? 0 : minEntry + others + this.recoveryReserveNow() + (watermark === 'interior' ? 0 : this.interiorShareBytes + waste);
    const { head, tail, empty } = this.nearHead();
    const p = ringPlace(this.layout.journalBytes, head, tail, empty, need, reserve, this.layout.journalEntryBytesMax, waste, block);
    return p ? { p, reserve, overhead, nrRanges, seq } : null;
  }

  private newEntryBuffer(): { data: Uint8Array; view: DataView } {
    const data = this.dev.allocBuffer(this.layout.journalEntryBytesMax);
    return { data, view: new DataView(data.buffer, data.byteOffset, data.byteLength) };
  }

  private seal(b: JournalBuf): void {
    if (b.state === 'open') b.state = 'sealed';
  }

  private async reserveSlowpath(bytes: number, watermark: 'normal' | 'interior', reclaim: boolean, checkOnly = false, ownPreres = 0): Promise<JournalRes | null> {
    const waitMs = this.opts.reclaimWaitMs ?? RECLAIM_WAIT_MS_DEFAULT;
    const deadline = performance.now() + waitMs;
    let countedBufs = false;
    let countedSpace = false;
    for (;;) {
      this.checkUsable();
      const r = this.reserveLocked(bytes, watermark, checkOnly, ownPreres);
      if (r) return r;
      if (performance.now() >= deadline) {
        this.counters.noSpace++;
        throw this.noSpaceError(`waited ${waitMs} ms for journal space`);
      }
      if (this.bufs.length >= JOURNAL_BUFS_MAX) {
        if (!countedBufs) this.counters.reservationWaits++;
        countedBufs = true;
        this.kickFlush();
        await waitUntil(this.progress.promise, deadline);
        continue;
      }
      // Ring space. Entries still pending record a newer last_seq when they land.
      if (!countedSpace) this.counters.reclaimWaits++;
      countedSpace = true;
      const landing = this.spaceFromEntries(deadline);
      if (landing) {
        await landing;
        continue;
      }
      if (!reclaim) return null;
      const before = this.lastSeq;
      const pinWait = this.pinProgress();
      const progress = await this.reclaim(this.reclaimTarget(bytes, watermark), true);
      if (this.lastSeq > before) continue;
      if (!progress && this.preresTotal > ownPreres) {
        // interior updates hold ring space they give back when they journal
        await waitUntil(this.preresProgress(), deadline);
        continue;
      }
      if (!progress) {
        this.counters.noSpace++;
        throw this.noSpaceError('reclaim could not free any journal entry');
      }
      // The engine is writing nodes; wait for their pins to drop.
      await waitUntil(pinWait, deadline);
    }
  }

  /**
   * Ring space that needs no reclaim: entries under way record a newer
   * last_seq when they land; if pins moved since the last write, an empty
   * entry (in the reserve) records it. The wait, or null (synchronously: the
   * caller goes on to reclaim without yielding, so no pin drop slips between
   * its checks and its reclaim call).
   */
  private spaceFromEntries(deadline: number): Promise<void> | null {
    if (this.bufs.length) {
      this.kickFlush();
      return waitUntil(this.progress.promise, deadline);
    }
    if (this.canAdvanceLastSeq()) {
      const e = this.openEntry(0, 'reserve');
      if (e) {
        e.forceWrite = true;
        e.flushWanted = true;
        this.counters.emptyEntries++;
        this.kick();
        return waitUntil(e.durable.promise, deadline);
      }
    }
    return null;
  }

  /**
   * Would an empty entry free ring space? Only if entries older than the newest
   * durable one are no longer pinned (the newest is always kept).
   */
  private canAdvanceLastSeq(): boolean {
    return this.durable > 0 && Math.min(this.lastSeq, this.durable) > this.lastSeqOndiskValue;
  }

  /** Resolves the next time a pin is dropped or moved. */
  private pinProgress(): Promise<void> {
    this.pinWaiters ??= deferred();
    return this.pinWaiters.promise;
  }

  private wakePinWaiters(): void {
    const w = this.pinWaiters;
    if (w) {
      this.pinWaiters = null;
      w.resolve();
    }
  }

  private noSpaceError(why: string): SixtreeError {
    const s = this.stats();
    return new SixtreeError(
      'ERR_NO_SPACE',
      `journal full on ${this.dev.path}: ${why}: ${bytesToText(s.bytesUsed)} of ${bytesToText(s.bytesTotal)} used, ` +
        `oldest pinned seq ${this.lastSeq}, last_seq on disk ${this.lastSeqOndiskValue}, newest seq ${this.seq}, ${this.pins.nrPins} pins`,
      { path: this.dev.path, ...s },
    );
  }

  /** Smallest seq such that reclaiming every pin before it lets an entry with `bytes` of keys fit. */
  private reclaimTarget(bytes: number, watermark: 'normal' | 'interior'): number {
    const block = this.layout.blockBytes;
    const need = roundUp(JSET_HEADER_BYTES + this.rootsBytes + blacklistEntriesBytes(this.blacklist.length) + bytes, block);
    const minEntry = this.minEntryBytes();
    const w = this.wasteBytes();
    const share = (watermark === 'normal' ? this.interiorShareBytes + w : 0) + this.preresTotal + this.recoveryReserveNow();
    const waste = Math.max(w, need - block);
    const live = this.ring.liveEntries();
    const head = this.ring.writeOffsetBytes;
    // An empty entry (minEntry) is written first to record the new last_seq, then the reservation's entry.
    for (let i = 1; i < live.length; i++) {
      const room = ringRoom(this.layout.journalBytes, head, live[i]!.offsetBytes, false, waste);
      if (room >= minEntry + need + minEntry + share) return live[i]!.seq;
    }
    return this.nextSeqToOpen;
  }

  /** Call onReclaimNeeded, one call at a time. Resolves whether it reported progress. */
  private reclaim(targetSeq: number, urgent: boolean): Promise<boolean> {
    const fn = this.opts.onReclaimNeeded;
    if (!fn) return Promise.resolve(false);
    if (this.reclaimInFlight) {
      // a background pass aims elsewhere and may report no progress: an urgent
      // caller runs its own pass after it (urgent callers join each other)
      if (!urgent || this.reclaimUrgent) return this.reclaimInFlight;
      return this.reclaimInFlight.catch(() => false).then(() => this.reclaim(targetSeq, urgent));
    }
    this.reclaimUrgent = urgent;
    if (urgent) this.counters.reclaimCalls++;
    else this.counters.reclaimBackgroundCalls++;
    const info: ReclaimInfo = { urgent, bytesUsed: this.ring.usedBytes(), bytesTotal: this.layout.journalBytes };
    const p = (async () => {
      try {
        return (await fn(targetSeq, info)) === true;
      } catch (e) {
        this.counters.reclaimErrors++;
        if (urgent) throw e;
        return false;
      } finally {
        this.reclaimInFlight = null;
      }
    })();
    this.reclaimInFlight = p;
    return p;
  }

  private maybeBackgroundReclaim(): void {
    if (!this.opts.onReclaimNeeded || this.reclaimInFlight || this.closed) return;
    const threshold = this.opts.reclaimThreshold ?? 0.5;
    const used = this.ring.usedBytes();
    if (used <= threshold * this.layout.journalBytes) return;
    // Aim at half the threshold: the oldest live entry past which the rest fits.
    const live = this.ring.liveEntries();
    const goal = (threshold / 2) * this.layout.journalBytes;
    let target = this.nextSeqToOpen;
    for (const e of live) {
      if (this.ring.usedBytes() - this.distanceFromTail(e.offsetBytes) <= goal) {
        target = e.seq;
        break;
      }
    }
    void this.reclaim(target, false).catch(() => {});
  }

  private distanceFromTail(off: number): number {
    const o = this.ring.oldest();
    if (!o) return 0;
    const d = off - o.offsetBytes;
    return d >= 0 ? d : d + this.layout.journalBytes;
  }

  /* ------------------------------------------------------------------ writing */

  /**
   * No pressure: nothing pre-reserved, under half the ring in use, and the
   * entry about to be written the only one open or in flight.
   */
  calmForInlineWrite(): boolean {
    return this.preresTotal === 0 && this.bufs.length <= 1 && this.ring.usedBytes() * 2 < this.layout.journalBytes;
  }

  /**
   * The entry's write and flush: on this thread when writeInline says so and
   * the device can (a failure then rejects the promise all the same), else
   * asynchronously. Either way the caller hears of it in a later microtask.
   */
  private entryWrite(data: Uint8Array, offsetBytes: number, sizeBytes: number): Promise<void> {
    if (this.dev.writeFlushSync && this.opts.writeInline?.() === true) {
      try {
        journalEntryWriteSync(this.dev, this.layout.journalOffsetBytes, data, offsetBytes, sizeBytes);
        this.counters.inlineWrites++;
        return Promise.resolve();
      } catch (e) {
        return Promise.reject(e);
      }
    }
    return journalEntryWrite(this.dev, this.layout.journalOffsetBytes, data, offsetBytes, sizeBytes);
  }

  /** Someone waits: seal the open entry as soon as the write slot is free. */
  private kickFlush(): void {
    const b = this.openBuf();
    if (b) b.flushWanted = true;
    this.kick();
  }

  /** Start the next write if the slot is free and the oldest unwritten entry is ready. */
  private kick(): void {
    if (this.writing || this.error) return;
    const b = this.bufs[0];
    if (!b) return;
    if (b.state === 'open') {
      if (b.nrCommits === 0 && !b.forceWrite) return;
      if (b.nrRes > 0 && !b.flushWanted) return; // more commits may join until it's released or waited on
      const delay = this.opts.writeDelayMs ?? 0;
      if (delay > 0 && !b.forceWrite) {
        const left = b.openedMs + delay - performance.now();
        if (left > 0) {
          if (!this.delayTimer) {
            this.delayTimer = setTimeout(() => {
              this.delayTimer = null;
              this.kick();
            }, Math.ceil(left));
          }
          return;
        }
      }
      this.seal(b);
    }
    if (b.nrRes > 0) return; // written on the last release
    this.startWrite(b);
  }

  private startWrite(b: JournalBuf): void {
    b.state = 'writing';
    this.writing = b;
    let lastSeq: number;
    let size: number;
    try {
      lastSeq = this.pins.oldest(b.seq);
      this.opts.onLastSeq?.(lastSeq, b.seq);
      if (lastSeq > b.seq) throw new Error(`journal entry ${b.seq}: last_seq ${lastSeq} after its own seq`);
      const off = b.wrap ? 0 : this.ring.writeOffsetBytes;
      const fin = journalEntryFinish(b.data, b.usedBytes, b.seq, lastSeq, this.ctx, b.blacklistRangesMax);
      size = fin.sizeBytes;
      if (off + size > this.layout.journalBytes) throw new Error(`journal entry ${b.seq} (${size} bytes) at ${off} runs past the journal end ${this.layout.journalBytes}`);
      const hit = this.ring.overlapsLive(off, size);
      if (hit) throw new Error(`journal entry ${b.seq} at ${off}+${size} would overwrite live entry ${hit.seq} at ${hit.offsetBytes}+${hit.sizeBytes}`);
      b.offsetBytes = off;
      b.sizeBytes = size;
      this.ring.push({ seq: b.seq, offsetBytes: off, sizeBytes: size });
    } catch (e) {
      this.fail(e);
      return;
    }
    this.entryWrite(b.data, b.offsetBytes, size).then(
      () => this.writeDone(b, lastSeq),
      (e) => {
        this.counters.writeErrors++;
        this.fail(e);
      },
    );
  }

  private writeDone(b: JournalBuf, lastSeq: number): void {
    if (this.error) return;
    const c = this.counters;
    c.entriesWritten++;
    c.bytesWritten += b.sizeBytes;
    c.flushes++;
    if (b.nrCommits > 0) {
      const i = Math.min(31 - Math.clz32(b.nrCommits), COMMITS_HIST_BUCKETS - 1);
      c.commitsPerWrite[i] = c.commitsPerWrite[i]! + 1;
    }
    b.state = 'done';
    this.writing = null;
    if (this.bufs[0] !== b) throw new Error(`journal: entry ${b.seq} completed out of order`);
    this.bufs.shift();
    this.durable = b.seq;
    if (lastSeq > this.lastSeqOndiskValue) this.lastSeqOndiskValue = lastSeq;
    this.ring.dropBefore(this.lastSeqOndiskValue);
    this.pins.put(b.seq);
    this.freeData.push({ data: b.data, view: b.view });
    b.durable.resolve();
    this.wakeProgress();
    try {
      this.opts.onDurable?.(b.seq);
    } catch (e) {
      this.fail(e);
      return;
    }
    this.kick();
    this.maybeBackgroundReclaim();
  }

  private wakeProgress(): void {
    const p = this.progress;
    this.progress = deferred();
    p.resolve();
  }

  private fail(e: unknown): void {
    if (this.error) return;
    this.error =
      e instanceof SixtreeError
        ? e
        : new SixtreeError('ERR_IO', `journal on ${this.dev.path} failed and stopped: ${e instanceof Error ? e.message : String(e)}`, { path: this.dev.path }, { cause: e });
    this.writing = null;
    for (const b of this.bufs) b.durable.reject(this.error);
    this.pinWaiters?.reject(this.error);
    this.pinWaiters = null;
    const p = this.progress;
    this.progress = deferred();
    p.reject(this.error);
  }

  /** The error that stopped the journal (a failed entry write or flush), or null. */
  get failure(): SixtreeError | null {
    return this.error as SixtreeError | null;
  }

  /* ------------------------------------------------------------------ waiting, flush, close */

  /** Resolves once entry seq is on stable storage. */
  waitDurable(seq: number): Promise<void> {
    if (this.error) return Promise.reject(this.error);
    if (seq <= this.durable) return Promise.resolve();
    const b = this.bufs.find((x) => x.seq === seq);
    if (!b) return Promise.reject(new SixtreeError('ERR_INVALID_ARG', `journal: waitDurable(${seq}): no such entry (newest ${this.seq}, durable ${this.durable})`));
    b.flushWanted = true;
    this.kick();
    return b.durable.promise;
  }

  /**
   * Make everything reserved so far durable. With nothing new, an empty entry
   * is written only if it records a newer last_seq (frees ring space, shortens
   * the next recovery); otherwise this returns at once (the last written entry
   * is already durable: every write is followed by a flush).
   */
  async flush(): Promise<void> {
    this.checkUsable();
    const last = this.bufs[this.bufs.length - 1];
    if (last) {
      if (this.delayTimer) {
        clearTimeout(this.delayTimer);
        this.delayTimer = null;
      }
      last.forceWrite = true; // skip writeDelayMs
      return this.waitDurable(last.seq);
    }
    if (this.canAdvanceLastSeq()) {
      const e = this.openEntry(0, 'normal') ?? this.openEntry(0, 'reserve');
      if (e) {
        e.forceWrite = true;
        e.flushWanted = true;
        this.counters.emptyEntries++;
        this.kick();
        await e.durable.promise;
      }
    }
  }

  /** Flush, then refuse further use. Returns what the superblock records at clean shutdown. */
  async close(): Promise<{ seq: number; writeOffsetBytes: number }> {
    if (this.closed) return { seq: this.durable, writeOffsetBytes: this.writeOffsetBytes };
    if (!this.error) await this.flush();
    this.closed = true;
    if (this.delayTimer) clearTimeout(this.delayTimer);
    for (const d of this.freeData) this.dev.freeBuffer(d.data);
    this.freeData = [];
    return { seq: this.durable, writeOffsetBytes: this.writeOffsetBytes };
  }

  /* ------------------------------------------------------------------ printing */

  toText(): string {
    const out = new Printbuf();
    const s = this.stats();
    const c = this.counters;
    out.line(`journal ${this.dev.path}:`);
    out.nested((o) => {
      o.field('seq', `${s.seq} (durable ${this.durable}, next ${this.nextSeqToOpen})`);
      o.field('last_seq', `${this.lastSeq} (on disk ${this.lastSeqOndiskValue})`);
      const nh = this.nearHead(true);
      const waste = this.wasteBytes();
      const room = ringRoom(this.layout.journalBytes, nh.head, nh.tail, nh.empty, waste);
      o.field('space', `${bytesToText(s.bytesUsed)} of ${bytesToText(s.bytesTotal)} used, write offset ${this.ring.writeOffsetBytes}, ${this.ring.nrLive} live entries; room ${bytesToText(room)} (the open entry at its capacity, the end wasting up to ${bytesToText(waste)})`);
      o.field('pins by seq', this.pins.toText());
      o.field('pins', this.pins.nrPins + (this.replaySeqs.length > this.replayPinsPut ? ` (${this.replaySeqs.length - this.replayPinsPut} replay)` : ''));
      o.field('blacklist', this.blacklist.toText());
      o.field('buffers', this.bufs.map((b) => `${b.seq}:${b.state}(${b.nrRes} res, ${b.nrCommits} commits, ${b.usedBytes}+${b.reservedBytes} bytes)`).join(' ') || '(none)');
      o.field('entries written', `${c.entriesWritten} (${bytesToText(c.bytesWritten)}, ${c.emptyEntries} empty)`);
      o.field('flushes', c.flushes);
      o.field('commits', `${c.commits}, per write: ${c.commitsPerWrite.map((n, i) => `${COMMITS_HIST_LABELS[i]}:${n}`).join(' ')}`);
      o.field('waits', `buffers ${c.reservationWaits}, reclaim ${c.reclaimWaits}`);
      o.field('reclaim calls', `${c.reclaimCalls} urgent, ${c.reclaimBackgroundCalls} background, ${c.reclaimErrors} errors`);
      o.field('no space', c.noSpace);
      o.field('pre-reservations', `${bytesToText(this.preresTotal)} held (${c.preres} taken, ${c.preresWaits} waited), interior share ${bytesToText(this.interiorShareBytes)}, recovery reserve ${bytesToText(this.recoveryReserveBytes)}${this.replaying ? ' (replaying: usable)' : ''}`);
      if (this.error) o.field('error', this.error instanceof Error ? this.error.message : String(this.error));
      if (this.closed) o.line('closed');
    });
    return out.toString();
  }
}
