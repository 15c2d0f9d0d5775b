// SPDX-License-Identifier: GPL-2.0-only
/*
 * Crash campaign: the durability invariant of DESIGN.md ("Durability"),
 * checked on crash images of a store under a random concurrent workload.
 *
 *   node dist/bench/crash-campaign.js --count N [--seed S] [--rounds R] [--quiet]
 *        [--like-ci] [--block B] [--wipe P] [--io-delay SHARE] [--io-delay-ms MS]
 *        [--faults P] [--fault-rate R]
 *
 * runs N independent runs (seeds S, S+1, ...) with bigger workloads than the
 * CI test (test/journal/crash-store.test.ts imports runCrashCheck from here),
 * prints one line per run and a summary, and exits 1 on any failure.
 *
 * One run:
 *   - a store is formatted on a MemDevice (btrees kv and ext, the latter with
 *     extents) and opened through a FaultDevice with a small cache (nodes are
 *     evicted and written back) and a small journal (it wraps); with ioDelay
 *     a DelayDevice sits under the FaultDevice, so writes complete out of
 *     issue order and the pending writes of a crash point follow completion
 *     order (and the images are recovered through one too); with
 *     faultProbability some rounds run on a failing device (random EIO on
 *     reads, writes and flushes): calls may fail only with ERR_IO, and after
 *     the round the store is closed and opened again from what the device
 *     holds (and its durable image is checked as a crash image);
 *   - the workload is a sequence of rounds. A round launches a few
 *     transactions at once (Promise.all): single-key puts/deletes, multi-key
 *     transactions (puts, overwrites, deletes, delRange, putExtent, extent
 *     delRange), big transactions (many keys: splits, large journal entries)
 *     and read-modify-write increments of one shared counter key; with
 *     wipeProbability, some rounds start with a wipe (delRange over a large
 *     part of a key space: merges of leaves and interior nodes, root
 *     collapses, every bucket freed and reused under the crash points). The
 *     transactions of one round never touch the same key or extent unit
 *     (except the counter, whose increments commute), so the state a crash
 *     may leave is known exactly whichever of them made it;
 *   - crash points are taken while the round runs: after a device write,
 *     before and after a device flush, when a transaction resolves, and at
 *     the end of the round; and after the rounds, during the final close
 *     (its node writes, journal close and clean superblock), where every
 *     image must hold exactly what the rounds acknowledged. At each, crash images are built: all flushed
 *     writes only; all unflushed writes too; a prefix of the unflushed writes
 *     in issue order; a random subset (a device may reorder unflushed writes);
 *     a prefix whose last write is torn at a 512-byte boundary; a prefix
 *     ending in a node append of several blocks torn after its first
 *     block(s) (a bset header intact over keys that are not);
 *   - after the round (before the model moves on) every image is opened
 *     (MemDevice.fromImage -> Store.openDevice: recovery) and checked:
 *       * each transaction of the round is either wholly visible or wholly
 *         absent (its keys hold the values it wrote, or the values they had
 *         before the round); anything else is a partly visible transaction;
 *       * each acknowledged transaction (transact() resolved before the
 *         crash point) is visible;
 *       * every key outside the round's transactions holds the value of the
 *         last acknowledged write (nothing lost, nothing from a transaction
 *         that had not started);
 *       * the counter equals its value before the round plus the number of
 *         counter transactions found visible;
 *       * fsck() returns [];
 *     and, while the run goes, every store it opens checks at each journal
 *     write that the last_seq recorded passes no key still unwritten and
 *     unpinned (SIXTREE_DEBUG_PIN_CHECK: engine.ts pinCheck): a lost write
 *     seen as it becomes possible, not only when an image happens to show it;
 *     a sample of the recovered stores then takes more transactions, is
 *     crashed again and recovered again (recovery after recovery).
 *
 * A failure names the seed, round, crash point, image variant and the first
 * mismatching keys, and (with dumpDir) writes the image so it can be opened
 * again. Runs are deterministic in their workload plan and crash-image
 * choices for a seed; the engine's own timers and random node seqs make the
 * interleaving only mostly reproducible.
 */

import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Prng } from './prng.js';
import { SixtreeError } from '../src/errors.js';
import { DelayDevice } from '../src/io/delay-device.js';
import type { Device } from '../src/io/device.js';
import { FaultDevice } from '../src/io/fault-device.js';
import { MemDevice } from '../src/io/mem-device.js';
import { Store } from '../src/store.js';
import { BtreeCache } from '../src/btree/cache.js';
import { journalEntryBytesMax } from '../src/layout.js';

/* ------------------------------------------------------------------ options */

export interface CrashCheckOpts {
  seed: number;
  /** Workload rounds (each: a few concurrent transactions and its crash points). */
  rounds: number;
  /** Transactions launched together per round: [min, max]. */
  txnsPerRound?: [number, number];
  /** Crash points per round at most (each gives up to 5 images). */
  crashPointsPerRound?: number;
  /** Probability that a device operation or a resolution is taken as a crash point. */
  crashPointProbability?: number;
  deviceBytes?: number;
  journalBytes?: number;
  cacheBytes?: number;
  nodeBytes?: number;
  blockBytes?: number;
  /** Offsets per random-key inode of kv. */
  kvSpace?: number;
  /** Units per inode of ext. */
  extSpace?: number;
  valueBytesMax?: number;
  /** Transactions may write kv and ext together (default true; false keeps each transaction in one btree). */
  mixBtrees?: boolean;
  /** Fraction of recovered images that also take writes and a second crash. */
  reopenWriteProbability?: number;
  /** Probability that a round is followed by a clean close (crash points during it) and a reopen (default 0). */
  closeProbability?: number;
  /** Fraction of rounds that run a store.flush() alongside the transactions. */
  flushProbability?: number;
  /** Fraction of rounds that start with a wipe transaction (delRange over a quarter to all of a key space; default 0). */
  wipeProbability?: number;
  /** Compare the live store with the model every this many rounds (0: never). */
  liveCheckEvery?: number;
  /** Stop the run after this many failing images (default 1). */
  maxFailures?: number;
  /** Write failing images here (file names in the failure). */
  dumpDir?: string;
  /** Timeout for one image's recovery + check. */
  imageTimeoutMs?: number;
  /**
   * Random I/O waits under the live store's FaultDevice (src/io/delay-device.ts,
   * drawn from the seed): writes reach the device late and complete out of
   * order, so the unflushed writes of a crash point come in completion order,
   * not issue order, and reads complete after other transactions moved on.
   * Recoveries of the crash images (and the transactions a recovered store
   * takes, and its second recovery) wait the same way. Absent: the memory
   * device completes everything at once.
   */
  ioDelay?: { share: number; maxMs: number };
  /**
   * Fraction of rounds run on a failing device: each read, write and flush
   * of the live store fails with EIO with probability faultRate (default
   * 0.05) while the round's transactions run. Every error a call then gets
   * must be a SixtreeError ERR_IO. After the round the store is closed
   * (close may fail the same way) and opened again from what the device
   * holds: every acknowledged transaction there, each other one wholly or
   * not at all, fsck clean; the durable image as of that moment (a power
   * loss right after the failures) is checked the same way. The run goes on
   * with the reopened store. Default 0.
   */
  faultProbability?: number;
  faultRate?: number;
  log?: (line: string) => void;
}

export interface CrashFailure {
  seed: number;
  round: number;
  crashPoint: number;
  reason: string;
  variant: string;
  message: string;
  imagePath?: string;
}

export interface CrashCheckResult {
  seed: number;
  rounds: number;
  txns: number;
  acked: number;
  crashPoints: number;
  images: number;
  /** Images on which some transaction in flight at the crash point was found visible. */
  imagesWithInFlightVisible: number;
  /** Node appends of several blocks torn after their first block(s), one image each. */
  appendTears: number;
  /** Crash points taken during clean closes (the final one, and mid-run ones: checked like a round's, against the model). */
  closeCrashPoints: number;
  /** Clean closes and reopens between rounds (closeProbability). */
  midRunCloses: number;
  /** Torn last bsets the recoveries read past (stats().cache.counters.tornBsets, summed over the images). */
  tornBsets: number;
  reopenWrites: number;
  /** Rounds run on a failing device; the failures injected; calls that got ERR_IO from them. */
  faultRounds: number;
  faultsInjected: number;
  callsFailedIo: number;
  failures: CrashFailure[];
  /** Depth of kv at the end (splits happened when > 1). */
  kvDepth: number;
  /** The live store's merges (all levels) and root collapses over the run. */
  merges: number;
  collapses: number;
  keys: number;
  ms: number;
  imageMs: number;
}

/* ------------------------------------------------------------------ PRNG */

export { Prng };

/* ------------------------------------------------------------------ keys and values */

/** kv inodes: random keys in 1 and 2, appends (always new, growing offsets) in 3. */
const KV_RANDOM_INODES = [1, 2] as const;
const KV_APPEND_INODE = 3;
/** Journal bytes a wipe budgets per key it deletes (a whiteout, with room to spare). */
const WIPE_KEY_BYTES = 64;
/** One marker key per counter transaction: (MARKER_INODE, txn id). */
const MARKER_INODE = 100;
const COUNTER_INODE = 200;
const COUNTER_KEY = `${COUNTER_INODE}:0`;
const EXT_INODES = [1, 2] as const;

const KV_MAGIC = 0x53585456; // "VTXS"
const EXT_MAGIC = 0x53585845; // "EXXS"
const COUNTER_MAGIC = 0x53584e43; // "CNXS"

function kvKey(inode: number, offset: number): string {
  return `${inode}:${offset}`;
}

function fill(b: Uint8Array, from: number, seed: number): void {
  for (let i = from; i < b.length; i++) b[i] = (seed + i * 131 + (i >>> 8)) & 0xff;
}

/** A kv value: magic, txn id, inode, offset, then bytes derived from them. */
function kvValue(txnId: number, inode: number, offset: number, len: number): Uint8Array {
  const b = new Uint8Array(Math.max(16, len));
  const dv = new DataView(b.buffer);
  dv.setUint32(0, KV_MAGIC, true);
  dv.setUint32(4, txnId, true);
  dv.setUint32(8, inode, true);
  dv.setUint32(12, offset, true);
  fill(b, 16, txnId * 7 + offset);
  return b;
}

/** An extent value: magic, txn id, inode, start offset of the extent as written, then filler. */
function extValue(txnId: number, inode: number, start: number, len: number): Uint8Array {
  const b = new Uint8Array(Math.max(16, len));
  const dv = new DataView(b.buffer);
  dv.setUint32(0, EXT_MAGIC, true);
  dv.setUint32(4, txnId, true);
  dv.setUint32(8, inode, true);
  dv.setUint32(12, start, true);
  fill(b, 16, txnId * 13 + start);
  return b;
}

function counterValue(n: number): Uint8Array {
  const b = new Uint8Array(8);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, COUNTER_MAGIC, true);
  dv.setUint32(4, n, true);
  return b;
}

function counterOf(v: Uint8Array | undefined): number {
  if (!v) return 0;
  const dv = new DataView(v.buffer, v.byteOffset, v.byteLength);
  if (v.length !== 8 || dv.getUint32(0, true) !== COUNTER_MAGIC) throw new Error(`counter key holds a foreign value (${v.length} bytes)`);
  return dv.getUint32(4, true);
}

/** Txn id written in a value (kv, ext or marker), or -1. */
function txnOfValue(v: Uint8Array): number {
  if (v.length < 8) return -1;
  const dv = new DataView(v.buffer, v.byteOffset, v.byteLength);
  const m = dv.getUint32(0, true);
  if (m !== KV_MAGIC && m !== EXT_MAGIC) return -1;
  return dv.getUint32(4, true);
}

function bytesEqual(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  if (a === b) return true;
  if (!a || !b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/* ------------------------------------------------------------------ transactions */

type Op =
  | { kind: 'put'; inode: number; offset: number; value: Uint8Array }
  | { kind: 'del'; inode: number; offset: number }
  | { kind: 'delRange'; inode: number; offset: number; end: number }
  | { kind: 'putExtent'; inode: number; offset: number; size: number; ref: number; value: Uint8Array }
  | { kind: 'delRangeExt'; inode: number; offset: number; end: number }
  | { kind: 'counter' };

interface TxnPlan {
  id: number;
  round: number;
  shape: 'single' | 'multi' | 'big' | 'counter' | 'wipe';
  ops: Op[];
  counter: boolean;
}

/** An extent as written: which transaction, where it started. */
interface ExtRef {
  txnId: number;
  inode: number;
  start: number;
  value: Uint8Array;
}

/** The state the store must hold: kv keys, ext units (ref per unit, 0 = hole). */
class Model {
  kv: Map<string, Uint8Array>;
  ext: Map<number, Int32Array>;

  constructor(kv: Map<string, Uint8Array>, ext: Map<number, Int32Array>) {
    this.kv = kv;
    this.ext = ext;
  }

  static empty(extSpace: number): Model {
    return new Model(new Map(), new Map(EXT_INODES.map((i) => [i, new Int32Array(extSpace)])));
  }

  clone(): Model {
    return new Model(new Map(this.kv), new Map([...this.ext].map(([i, a]) => [i, a.slice()])));
  }
}

/** Footprint of a transaction: what it may change (counter aside). */
interface Footprint {
  kvKeys: Set<string>;
  /** Expected value per footprint key if the transaction is visible (undefined: absent). */
  kvAfter: Map<string, Uint8Array | undefined>;
  /** ext: inode -> unit -> ref after the transaction. */
  extAfter: Map<number, Map<number, number>>;
}

/** Apply plan's ops in order over base (read only), giving its footprint and after-values. */
function footprintOf(plan: TxnPlan, base: Model, extSpace: number): Footprint {
  const kvAfter = new Map<string, Uint8Array | undefined>();
  const extAfter = new Map<number, Map<number, number>>();
  const kvGet = (k: string): Uint8Array | undefined => (kvAfter.has(k) ? kvAfter.get(k) : base.kv.get(k));
  const extUnits = (inode: number): Map<number, number> => {
    let m = extAfter.get(inode);
    if (!m) extAfter.set(inode, (m = new Map()));
    return m;
  };
  for (const op of plan.ops) {
    switch (op.kind) {
      case 'put':
        kvAfter.set(kvKey(op.inode, op.offset), op.value);
        break;
      case 'del':
        kvAfter.set(kvKey(op.inode, op.offset), undefined);
        break;
      case 'delRange':
        for (let o = op.offset; o < op.end; o++) {
          const k = kvKey(op.inode, o);
          if (kvGet(k) !== undefined || base.kv.has(k)) kvAfter.set(k, undefined);
        }
        break;
      case 'putExtent': {
        const m = extUnits(op.inode);
        for (let u = op.offset; u < op.offset + op.size && u < extSpace; u++) m.set(u, op.ref);
        break;
      }
      case 'delRangeExt': {
        const m = extUnits(op.inode);
        for (let u = op.offset; u < op.end && u < extSpace; u++) m.set(u, 0);
        break;
      }
      case 'counter':
        break;
    }
  }
  return { kvKeys: new Set(kvAfter.keys()), kvAfter, extAfter };
}

/** Apply a whole transaction to the model (the round's transactions are disjoint). */
function applyFootprint(m: Model, fp: Footprint): void {
  for (const [k, v] of fp.kvAfter) {
    if (v === undefined) m.kv.delete(k);
    else m.kv.set(k, v);
  }
  for (const [inode, units] of fp.extAfter) {
    const a = m.ext.get(inode)!;
    for (const [u, r] of units) a[u] = r;
  }
}

/** Per-round reservation: no two transactions of a round touch the same key or unit. */
class RoundKeys {
  private kv = new Map<string, number>();
  private ext = new Map<number, Int32Array>();
  constructor(private readonly extSpace: number) {}

  takeKv(txn: number, inode: number, offset: number): boolean {
    const k = kvKey(inode, offset);
    const o = this.kv.get(k);
    if (o !== undefined && o !== txn) return false;
    this.kv.set(k, txn);
    return true;
  }

  takeKvRange(txn: number, inode: number, from: number, end: number): boolean {
    for (let o = from; o < end; o++) {
      const x = this.kv.get(kvKey(inode, o));
      if (x !== undefined && x !== txn) return false;
    }
    for (let o = from; o < end; o++) this.kv.set(kvKey(inode, o), txn);
    return true;
  }

  takeExt(txn: number, inode: number, from: number, end: number): boolean {
    let a = this.ext.get(inode);
    if (!a) this.ext.set(inode, (a = new Int32Array(this.extSpace)));
    for (let u = from; u < end; u++) if (a[u] !== 0 && a[u] !== txn) return false;
    for (let u = from; u < end; u++) a[u] = txn;
    return true;
  }
}

/* ------------------------------------------------------------------ the run */

interface Settings {
  seed: number;
  rounds: number;
  txnsPerRound: [number, number];
  crashPointsPerRound: number;
  crashPointProbability: number;
  deviceBytes: number;
  journalBytes: number;
  cacheBytes: number;
  nodeBytes: number;
  blockBytes: number;
  kvSpace: number;
  extSpace: number;
  valueBytesMax: number;
  mixBtrees: boolean;
  reopenWriteProbability: number;
  closeProbability: number;
  flushProbability: number;
  wipeProbability: number;
  liveCheckEvery: number;
  maxFailures: number;
  dumpDir: string | undefined;
  imageTimeoutMs: number;
  ioDelay: { share: number; maxMs: number } | undefined;
  faultProbability: number;
  faultRate: number;
  log: (line: string) => void;
}

function settingsOf(o: CrashCheckOpts): Settings {
  return {
    seed: o.seed >>> 0,
    rounds: o.rounds,
    txnsPerRound: o.txnsPerRound ?? [1, 6],
    crashPointsPerRound: o.crashPointsPerRound ?? 3,
    crashPointProbability: o.crashPointProbability ?? 0.25,
    deviceBytes: o.deviceBytes ?? 8 << 20,
    journalBytes: o.journalBytes ?? 256 << 10,
    // never below what the store accepts (the smallest cache a seed picks is meant to be about that)
    cacheBytes: Math.max(o.cacheBytes ?? 512 << 10, BtreeCache.budgetBytesMin(o.nodeBytes ?? 4096, BTREES.length)),
    nodeBytes: o.nodeBytes ?? 4096,
    blockBytes: o.blockBytes ?? 512,
    kvSpace: o.kvSpace ?? 2000,
    extSpace: o.extSpace ?? 4000,
    valueBytesMax: o.valueBytesMax ?? 200,
    mixBtrees: o.mixBtrees ?? true,
    reopenWriteProbability: o.reopenWriteProbability ?? 0.1,
    closeProbability: o.closeProbability ?? 0,
    flushProbability: o.flushProbability ?? 0.1,
    wipeProbability: o.wipeProbability ?? 0,
    liveCheckEvery: o.liveCheckEvery ?? 10,
    maxFailures: o.maxFailures ?? 1,
    dumpDir: o.dumpDir,
    imageTimeoutMs: o.imageTimeoutMs ?? 30_000,
    ioDelay: o.ioDelay,
    faultProbability: o.faultProbability ?? 0,
    faultRate: o.faultRate ?? 0.05,
    log: o.log ?? (() => {}),
  };
}

const BTREES = [{ name: 'kv' }, { name: 'ext', extents: true }];

/** One crash point: its images and what was acknowledged / in flight then. */
interface CrashPoint {
  index: number;
  reason: string;
  pending: number;
  /** The unflushed writes, in order: where they went (journal or bucket) and how long. */
  pendingText?: string;
  acked: Set<number>;
  images: Array<{ variant: string; img: Uint8Array }>;
}

class Run {
  readonly s: Settings;
  /** The live workload's plan: draws happen only while planning a round, so a seed plans the same rounds every run. */
  private plan: Prng;
  /** Draws whose number depends on timing (crash points, and what planAside plans). */
  readonly pick: Prng;
  /** Draws for the torn-append images only (not the plan's generator: adding them changed no plan). */
  private readonly tearPick: Prng;
  model: Model;
  readonly refs: ExtRef[] = [{ txnId: 0, inode: 0, start: 0, value: new Uint8Array(0) }];
  readonly refByKey = new Map<string, number>();
  nextTxn = 1;
  appendNext = 0;
  /** Ids of the transactions planAside makes: far above the live workload's. */
  private asideTxnNext = 1 << 30;
  readonly result: CrashCheckResult;

  // set while a round runs
  private points: CrashPoint[] = [];
  private roundAcked = new Set<number>();
  private roundActive = false;
  private fd!: FaultDevice;
  private delayedDevices = 0;
  /** Draws of the failing device (fault rounds): which operations fail. */
  private readonly faultPick: Prng;
  private layout: { journalOffsetBytes: number; journalBytes: number; bucketOffsetBytes: number; nodeBytes: number } | null = null;

  constructor(o: CrashCheckOpts) {
    this.s = settingsOf(o);
    this.plan = new Prng(this.s.seed);
    this.pick = new Prng(this.s.seed ^ 0x5bd1e995);
    this.tearPick = new Prng(this.s.seed ^ 0x7ea2a99e);
    this.faultPick = new Prng(this.s.seed ^ 0xfa017);
    this.model = Model.empty(this.s.extSpace);
    this.result = {
      seed: this.s.seed,
      rounds: 0,
      txns: 0,
      acked: 0,
      crashPoints: 0,
      images: 0,
      imagesWithInFlightVisible: 0,
      appendTears: 0,
      closeCrashPoints: 0,
      midRunCloses: 0,
      tornBsets: 0,
      reopenWrites: 0,
      faultRounds: 0,
      faultsInjected: 0,
      callsFailedIo: 0,
      failures: [],
      kvDepth: 0,
      merges: 0,
      collapses: 0,
      keys: 0,
      ms: 0,
      imageMs: 0,
    };
  }

  /* ---------------------------------------------------------------- plans */

  /** store.maxValueSize (values up to it are allowed; some transactions use the largest). */
  private valueBytesLimit = 256;

  private valueLen(): number {
    const r = this.plan;
    const n = r.bool(0.05) ? r.range(this.s.valueBytesMax, this.s.valueBytesMax * 4) : r.range(16, this.s.valueBytesMax);
    return Math.min(n, this.valueBytesLimit);
  }

  private extRef(txnId: number, inode: number, start: number): { ref: number; value: Uint8Array } {
    const value = extValue(txnId, inode, start, this.plan.range(16, 64));
    const ref = this.refs.length;
    this.refs.push({ txnId, inode, start, value });
    this.refByKey.set(`${txnId}:${inode}:${start}`, ref);
    return { ref, value };
  }

  /** A random offset of the kv key space (about half of them hold a key once the store has filled). */
  private someKvOffset(): number {
    return this.plan.int(this.s.kvSpace);
  }

  private addPut(t: TxnPlan, keys: RoundKeys, inode: number, offset: number): void {
    if (!keys.takeKv(t.id, inode, offset)) return;
    t.ops.push({ kind: 'put', inode, offset, value: kvValue(t.id, inode, offset, this.valueLen()) });
  }

  private addRandomOp(t: TxnPlan, keys: RoundKeys, only: 'kv' | 'ext' | null): void {
    const r = this.plan;
    const x = only === 'kv' ? r.int(75) : only === 'ext' ? r.range(75, 99) : r.int(100);
    const inode = KV_RANDOM_INODES[r.int(KV_RANDOM_INODES.length)]!;
    if (x < 50) this.addPut(t, keys, inode, this.someKvOffset());
    else if (x < 65) {
      const offset = this.someKvOffset();
      if (keys.takeKv(t.id, inode, offset)) t.ops.push({ kind: 'del', inode, offset });
    } else if (x < 75) {
      const offset = r.int(this.s.kvSpace);
      const end = Math.min(this.s.kvSpace, offset + r.range(1, 24));
      if (keys.takeKvRange(t.id, inode, offset, end)) t.ops.push({ kind: 'delRange', inode, offset, end });
    } else if (x < 90) {
      const ei = EXT_INODES[r.int(EXT_INODES.length)]!;
      const size = r.bool(0.1) ? r.range(64, 300) : r.range(1, 48);
      const offset = r.int(this.s.extSpace - size);
      if (!this.refByKey.has(`${t.id}:${ei}:${offset}`) && keys.takeExt(t.id, ei, offset, offset + size)) {
        const { ref, value } = this.extRef(t.id, ei, offset);
        t.ops.push({ kind: 'putExtent', inode: ei, offset, size, ref, value });
      }
    } else {
      const ei = EXT_INODES[r.int(EXT_INODES.length)]!;
      const size = r.range(1, 80);
      const offset = r.int(this.s.extSpace - size);
      if (keys.takeExt(t.id, ei, offset, offset + size)) t.ops.push({ kind: 'delRangeExt', inode: ei, offset, end: offset + size });
    }
  }

  /**
   * Wipes, planned first in their round so they claim their ranges before
   * the others: either delRange over a quarter to all of one kv random
   * inode's key space (and, when transactions may mix btrees, sometimes of
   * an ext inode too), or (one in three) of every kv key but the counter:
   * both random inodes, the appends and the markers, in as many
   * transactions as the journal needs (the tree shrinks to a leaf or two:
   * root collapses).
   */
  private planWipes(round: number, keys: RoundKeys): TxnPlan[] {
    const r = this.plan;
    // the deletions one transaction expands to must fit one journal entry
    // (as for big transactions: half of the largest)
    const keysMax = Math.floor(journalEntryBytesMax(this.s.journalBytes, this.s.blockBytes) / 2 / WIPE_KEY_BYTES);
    const txns: TxnPlan[] = [];
    let t: TxnPlan | null = null;
    let keysLeft = 0;
    const txn = (): TxnPlan => {
      if (!t || keysLeft <= 0) {
        t = { id: this.nextTxn++, round, shape: 'wipe', ops: [], counter: false };
        txns.push(t);
        keysLeft = keysMax;
      }
      return t;
    };
    /** delRange over [from, end) of a kv inode, cut where a transaction's budget ends. */
    const wipeKv = (inode: number, from: number, end: number) => {
      let o = from;
      while (o < end) {
        const w = txn();
        const a = o;
        for (; o < end && keysLeft > 0; o++) if (this.model.kv.has(kvKey(inode, o))) keysLeft--;
        if (o > a && keys.takeKvRange(w.id, inode, a, o)) w.ops.push({ kind: 'delRange', inode, offset: a, end: o });
      }
    };
    if (r.bool(1 / 3)) {
      for (const inode of KV_RANDOM_INODES) wipeKv(inode, 0, this.s.kvSpace);
      wipeKv(KV_APPEND_INODE, 0, this.appendNext);
      wipeKv(MARKER_INODE, 0, this.nextTxn);
    } else {
      const inode = KV_RANDOM_INODES[r.int(KV_RANDOM_INODES.length)]!;
      const span = r.range(Math.ceil(this.s.kvSpace / 4), this.s.kvSpace);
      const offset = r.int(this.s.kvSpace - span + 1);
      wipeKv(inode, offset, offset + span);
      if (this.s.mixBtrees && r.bool(0.3)) {
        const ei = EXT_INODES[r.int(EXT_INODES.length)]!;
        const size = r.range(Math.ceil(this.s.extSpace / 4), this.s.extSpace);
        const start = r.int(this.s.extSpace - size + 1);
        // extents in the range: a new one wherever the unit's extent changes (and two trimmed pieces)
        const units = this.model.ext.get(ei)!;
        const w = txn();
        keysLeft -= 2;
        let stop = start;
        for (; stop < start + size && keysLeft > 0; stop++) if (units[stop] !== 0 && (stop === start || units[stop] !== units[stop - 1])) keysLeft--;
        if (stop > start && keys.takeExt(w.id, ei, start, stop)) w.ops.push({ kind: 'delRangeExt', inode: ei, offset: start, end: stop });
      }
    }
    for (const w of txns) if (w.ops.length === 0) this.addPut(w, keys, KV_APPEND_INODE, this.appendNext++);
    return txns;
  }

  private planTxn(round: number, keys: RoundKeys): TxnPlan {
    const r = this.plan;
    const id = this.nextTxn++;
    const x = r.int(100);
    const shape: TxnPlan['shape'] = x < 35 ? 'single' : x < 75 ? 'multi' : x < 85 ? 'big' : 'counter';
    const t: TxnPlan = { id, round, shape, ops: [], counter: false };
    if (shape === 'single') {
      const inode = KV_RANDOM_INODES[r.int(KV_RANDOM_INODES.length)]!;
      const offset = this.someKvOffset();
      if (r.bool(0.75)) this.addPut(t, keys, inode, offset);
      else if (keys.takeKv(t.id, inode, offset)) t.ops.push({ kind: 'del', inode, offset });
    } else if (shape === 'multi') {
      const n = r.range(2, 8);
      const only = this.s.mixBtrees ? null : r.bool(0.3) ? 'ext' : 'kv';
      for (let i = 0; i < n; i++) this.addRandomOp(t, keys, only);
      // sometimes overwrite a key this transaction already wrote (the last write wins)
      const first = t.ops[0];
      if (first && first.kind === 'put' && r.bool(0.2)) this.addPut(t, keys, first.inode, first.offset);
    } else if (shape === 'big') {
      const n = r.range(15, 60);
      const appends = r.bool(0.5);
      const inode = KV_RANDOM_INODES[r.int(KV_RANDOM_INODES.length)]!;
      // within what one journal entry takes (a bigger transaction is refused
      // with ERR_INVALID_ARG by design): half of it, keys included
      const budget = journalEntryBytesMax(this.s.journalBytes, this.s.blockBytes) / 2;
      let bytes = 0;
      for (let i = 0; i < n && bytes < budget; i++) {
        if (appends) this.addPut(t, keys, KV_APPEND_INODE, this.appendNext++);
        else this.addPut(t, keys, inode, this.someKvOffset());
        const last = t.ops[t.ops.length - 1];
        bytes += (last && last.kind === 'put' ? last.value.length : 0) + 64;
      }
    } else {
      const n = r.range(0, 3);
      for (let i = 0; i < n; i++) this.addRandomOp(t, keys, this.s.mixBtrees ? null : 'kv');
    }
    if (shape === 'counter' || (shape === 'multi' && r.bool(0.15) && (this.s.mixBtrees || !t.ops.some((o) => o.kind === 'putExtent' || o.kind === 'delRangeExt')))) {
      t.counter = true;
      t.ops.push({ kind: 'counter' });
      // the marker makes the transaction's visibility decidable even when its other ops change nothing
      t.ops.push({ kind: 'put', inode: MARKER_INODE, offset: id, value: kvValue(id, MARKER_INODE, id, 16) });
    }
    if (t.ops.length === 0) this.addPut(t, keys, KV_APPEND_INODE, this.appendNext++);
    return t;
  }

  /* ---------------------------------------------------------------- executing */

  private async execute(store: Store, t: TxnPlan): Promise<void> {
    await store.transact(async (tx) => {
      for (const op of t.ops) {
        switch (op.kind) {
          case 'put':
            tx.put('kv', { inode: op.inode, offset: op.offset }, op.value);
            break;
          case 'del':
            tx.del('kv', { inode: op.inode, offset: op.offset });
            break;
          case 'delRange':
            tx.delRange('kv', { inode: op.inode, offset: op.offset }, { inode: op.inode, offset: op.end });
            break;
          case 'putExtent':
            tx.putExtent('ext', { inode: op.inode, offset: op.offset }, op.size, op.value);
            break;
          case 'delRangeExt':
            tx.delRange('ext', { inode: op.inode, offset: op.offset }, { inode: op.inode, offset: op.end });
            break;
          case 'counter': {
            const v = await tx.get('kv', { inode: COUNTER_INODE, offset: 0 });
            tx.put('kv', { inode: COUNTER_INODE, offset: 0 }, counterValue(counterOf(v) + 1));
            break;
          }
        }
      }
    });
  }

  /* ---------------------------------------------------------------- crash points */

  private hookDevice(fd: FaultDevice): void {
    const write = fd.write.bind(fd);
    const submit = fd.submit.bind(fd);
    const flush = fd.flush.bind(fd);
    const writeSync = fd.writeSync.bind(fd);
    // A real device completes I/O from the event loop, not from a microtask:
    // give timers and other transactions their turn (group commit, write
    // completions racing with commits), as a disk would.
    const later = (): Promise<void> => new Promise((r) => setImmediate(r));
    fd.write = async (buf, off) => {
      await write(buf, off);
      this.maybeCrashPoint('write');
      if (this.pick.bool(0.5)) await later();
    };
    fd.submit = async (ops) => {
      await submit(ops);
      if (ops.some((o) => o.op === 'write')) this.maybeCrashPoint('submit');
      await later();
    };
    fd.writeSync = (buf, off) => {
      writeSync(buf, off);
      this.maybeCrashPoint('writeSync');
    };
    fd.flush = async () => {
      this.maybeCrashPoint('before-flush');
      await later();
      await flush();
      this.maybeCrashPoint('after-flush');
    };
  }

  private maybeCrashPoint(reason: string): void {
    if (!this.roundActive || this.points.length >= this.s.crashPointsPerRound) return;
    if (!this.pick.bool(this.s.crashPointProbability)) return;
    this.crashPoint(reason);
  }

  /** Capture the images of a crash now (synchronous: nothing moves meanwhile). */
  private crashPoint(reason: string): void {
    const fd = this.fd;
    const n = fd.pendingWrites;
    const r = this.pick;
    const images: CrashPoint['images'] = [{ variant: 'flushed only', img: fd.crashImage() }];
    if (n > 0) {
      images.push({ variant: `all ${n} unflushed`, img: fd.crashImage({ include: () => true }) });
      if (n > 1) {
        const p = r.range(1, n - 1);
        images.push({ variant: `unflushed prefix 0..${p - 1} of ${n}`, img: fd.crashImage({ include: (i) => i < p }) });
        const subset: number[] = [];
        for (let i = 0; i < n; i++) if (r.bool()) subset.push(i);
        images.push({ variant: `unflushed subset [${subset.join(',')}] of ${n}`, img: fd.crashImage({ include: subset }) });
      }
      const list = fd.pendingList();
      const t = r.int(n);
      const len = list[t]!.lengthBytes;
      const keep = 512 * r.int(len / 512);
      images.push({ variant: `unflushed prefix 0..${t - 1} of ${n}, write ${t} (${len} B at ${list[t]!.offsetBytes}) torn after ${keep} B`, img: fd.crashImage({ include: (i) => i < t, torn: { index: t, keepBytes: keep } }) });
      // a node append of several blocks torn after its first block(s): the bset's header is
      // intact and its keys are not; the read must take it for a tear (its keys are in the
      // journal), never for damage. Drawn from its own generator: the plan stays the same.
      const layout = this.layout;
      const appends: number[] = [];
      list.forEach((w, i) => {
        const rel = layout ? w.offsetBytes - layout.bucketOffsetBytes : -1;
        if (layout && rel > 0 && rel % layout.nodeBytes !== 0 && w.lengthBytes >= 1024) appends.push(i);
      });
      if (appends.length) {
        const a = this.tearPick.pick(appends);
        const alen = list[a]!.lengthBytes;
        const akeep = 512 * this.tearPick.range(1, alen / 512 - 1);
        this.result.appendTears++;
        images.push({ variant: `unflushed prefix 0..${a - 1} of ${n}, node append ${a} (${alen} B at ${list[a]!.offsetBytes}) torn after ${akeep} B`, img: fd.crashImage({ include: (i) => i < a, torn: { index: a, keepBytes: akeep } }) });
      }
    }
    this.points.push({ index: this.result.crashPoints++, reason, pending: n, pendingText: this.pendingText(), acked: new Set(this.roundAcked), images });
  }

  /** "[i] journal +off len" / "[i] bucket b +off len" for each unflushed write. */
  private pendingText(): string {
    const layout = this.layout;
    return this.fd
      .pendingList()
      .map((w, i) => {
        if (!layout) return `[${i}] ${w.lengthBytes} B at ${w.offsetBytes}`;
        if (w.offsetBytes >= layout.journalOffsetBytes && w.offsetBytes < layout.journalOffsetBytes + layout.journalBytes) return `[${i}] journal +${w.offsetBytes - layout.journalOffsetBytes} ${w.lengthBytes} B`;
        if (w.offsetBytes >= layout.bucketOffsetBytes) {
          const rel = w.offsetBytes - layout.bucketOffsetBytes;
          return `[${i}] bucket ${Math.floor(rel / layout.nodeBytes)} +${rel % layout.nodeBytes} ${w.lengthBytes} B`;
        }
        return `[${i}] superblock area ${w.offsetBytes} ${w.lengthBytes} B`;
      })
      .join(', ');
  }

  /* ---------------------------------------------------------------- checking */

  private failure(round: number, p: CrashPoint, variant: string, message: string, img: Uint8Array | null): void {
    const f: CrashFailure = { seed: this.s.seed, round, crashPoint: p.index, reason: p.reason, variant, message: p.pendingText ? `${message}\n  unflushed writes at the crash point: ${p.pendingText}` : message };
    if (img && this.s.dumpDir) {
      mkdirSync(this.s.dumpDir, { recursive: true });
      f.imagePath = path.join(this.s.dumpDir, `sixtree-crash-seed${this.s.seed}-round${round}-point${p.index}-${this.result.images}.img`);
      writeFileSync(f.imagePath, img);
    }
    this.result.failures.push(f);
    this.s.log(`FAIL ${describeFailure(f)}`);
  }

  /** Check every image of the round's crash points against base + the round's transactions. */
  private async checkRound(round: number, base: Model, txns: TxnPlan[], fps: Map<number, Footprint>): Promise<void> {
    const baseCounter = counterOf(base.kv.get(COUNTER_KEY));
    for (const p of this.points) {
      for (const { variant, img } of p.images) {
        if (this.result.failures.length >= this.s.maxFailures) return;
        const t0 = performance.now();
        this.result.images++;
        let msg: string | null;
        try {
          msg = await withTimeout(this.checkImage(img, base, baseCounter, txns, fps, p), this.s.imageTimeoutMs, 'recovery and check');
        } catch (e) {
          msg = `threw ${errText(e)}`;
        }
        this.result.imageMs += performance.now() - t0;
        if (msg !== null) this.failure(round, p, variant, msg, img);
      }
    }
  }

  /** Failures the live store's FaultDevice injected so far (this run's devices together). */
  private faultsInjected(): number {
    const i = this.fd.injected;
    return this.result.faultsInjected + i.read + i.write + i.flush;
  }

  /**
   * After a round on a failing device (some operation failed): the durable
   * image as of now is checked as a crash image (a power loss right after the
   * failures); the live store is closed (ERR_IO or nothing), and opened again
   * from what the device holds, which must hold every acknowledged
   * transaction of the round and each other one wholly or not at all, and
   * pass fsck. Returns the reopened store, its device and the state it holds
   * (the run's model from here), or null after recording a failure.
   */
  private async faultRoundEnd(round: number, store: Store, mem: MemDevice, base: Model, txns: TxnPlan[], fps: Map<number, Footprint>): Promise<{ store: Store; mem: MemDevice; model: Model } | null> {
    const s = this.s;
    const baseCounter = counterOf(base.kv.get(COUNTER_KEY));
    const acked = new Set(this.roundAcked);
    const point = (reason: string): CrashPoint => ({ index: this.result.crashPoints, reason, pending: 0, acked, images: [] });
    const i = this.fd.injected;
    this.result.faultsInjected += i.read + i.write + i.flush;
    const durable = this.fd.durableImage();
    const closeErr: unknown = await withTimeout(store.close(), s.imageTimeoutMs, 'close after device failures').then(
      () => null,
      (e: unknown) => e,
    );
    if (closeErr !== null && !(closeErr instanceof SixtreeError && closeErr.code === 'ERR_IO')) {
      this.failure(round, point('close after device failures'), 'live store', `close() after device failures: ${errText(closeErr)}`, null);
      return null;
    }
    this.result.images++;
    const m = await withTimeout(this.checkImage(durable, base, baseCounter, txns, fps, point('power loss after device failures')), s.imageTimeoutMs, 'recovery and check').catch(
      (e: unknown) => `threw ${errText(e)}`,
    );
    if (m !== null) {
      this.failure(round, point('power loss after device failures'), 'durable image', m, durable);
      return null;
    }
    const img = mem.image();
    const mem2 = MemDevice.fromImage(img);
    const fd = await FaultDevice.wrap(s.ioDelay ? this.delayed(mem2) : mem2);
    this.hookDevice(fd);
    const p = point('reopened after device failures');
    let store2: Store;
    try {
      store2 = await withTimeout(Store.openDevice(fd, { cacheSize: s.cacheBytes }), s.imageTimeoutMs, 'open after device failures');
    } catch (e) {
      this.failure(round, p, 'device as it is', `open after device failures failed: ${errText(e)}`, img);
      return null;
    }
    this.result.images++;
    const j = await this.judge(store2, base, baseCounter, txns, fps, acked, 'after device failures');
    if (typeof j !== 'string') {
      this.fd = fd;
      return { store: store2, mem: mem2, model: j.expected };
    }
    await store2.close().catch(() => {});
    this.failure(round, p, 'device as it is', j, img);
    return null;
  }

  /**
   * Reads `store` whole and judges it against the round (`verdict`), then
   * runs fsck: the verdict when the store holds base plus a valid choice of
   * the round's transactions and fsck is clean, else what is wrong. `when`
   * names the moment in the messages ("after recovery").
   */
  private async judge(store: Store, base: Model, baseCounter: number, txns: TxnPlan[], fps: Map<number, Footprint>, acked: Set<number>, when: string): Promise<Verdict | string> {
    let actual: ActualState;
    try {
      actual = await readState(store, this.s.extSpace, this.refByKey, this.refs);
    } catch (e) {
      return `reading the store ${when} (range) failed: ${errText(e)}`;
    }
    if (actual.problems.length) return `unreadable or foreign entries ${when}:\n  ${actual.problems.slice(0, 10).join('\n  ')}`;
    const v = verdict(actual, base, baseCounter, txns, fps, acked, this.s.extSpace);
    if (v.message) return v.message;
    let problems: string[];
    try {
      problems = await store.fsck();
    } catch (e) {
      return `fsck ${when} threw: ${errText(e)}`;
    }
    if (problems.length) return `fsck ${when}:\n  ${problems.slice(0, 10).join('\n  ')}`;
    return v;
  }

  /** dev through a DelayDevice with the run's I/O waits, its PRNG drawn from the seed and a count of the devices made so far. */
  private delayed(dev: Device): Device {
    const d = this.s.ioDelay!;
    const rng = new Prng((this.s.seed ^ 0x0de1a7) + ++this.delayedDevices);
    return new DelayDevice(dev, { share: d.share, maxMs: d.maxMs, random: () => rng.u32() / 0x1_0000_0000 });
  }

  /** null when the image satisfies the invariant, else what is wrong. */
  private async checkImage(img: Uint8Array, base: Model, baseCounter: number, txns: TxnPlan[], fps: Map<number, Footprint>, p: CrashPoint): Promise<string | null> {
    const reopenWrite = this.pick.bool(this.s.reopenWriteProbability);
    const mem = MemDevice.fromImage(img);
    // with I/O waits, recovery and what follows it (the blacklist gc's walk, the reopened store's writes) wait too
    const inner: Device = this.s.ioDelay ? this.delayed(mem) : mem;
    const dev = reopenWrite ? await FaultDevice.wrap(inner) : inner;
    let store: Store;
    try {
      store = await Store.openDevice(dev, { cacheSize: this.s.cacheBytes });
    } catch (e) {
      return `recovery (open) failed: ${errText(e)}`;
    }
    let closed = false;
    try {
      const v = await this.judge(store, base, baseCounter, txns, fps, p.acked, 'after recovery');
      if (typeof v === 'string') return v;
      if (v.inFlightVisible) this.result.imagesWithInFlightVisible++;
      this.result.tornBsets += store.stats().cache.counters.tornBsets ?? 0;
      if (reopenWrite) {
        this.result.reopenWrites++;
        const m = await this.recoverAgain(store, dev as FaultDevice, v.expected);
        closed = true;
        if (m) return `after recovery, more writes and a second crash: ${m}`;
      }
      return null;
    } finally {
      if (!closed) await store.close().catch(() => {});
    }
  }

  /**
   * Plan transactions for a recovered copy of a crash image without moving
   * the live workload's plan: how many images a round checks depends on
   * timing, and drawing their transactions from `plan` (and taking the live
   * workload's transaction ids and append offsets) made every later round
   * differ from run to run of one seed. Draws come from `pick`, ids from a
   * range of their own; append offsets are given back.
   */
  private planAside<T>(fn: () => T): T {
    const plan = this.plan, nextTxn = this.nextTxn, appendNext = this.appendNext;
    this.plan = this.pick;
    this.nextTxn = this.asideTxnNext;
    try {
      return fn();
    } finally {
      this.asideTxnNext = this.nextTxn;
      this.plan = plan;
      this.nextTxn = nextTxn;
      this.appendNext = appendNext;
    }
  }

  /**
   * The recovered store takes a few transactions (all acknowledged), then
   * crashes again (flushed writes only, and all writes): recovery must find
   * them, and the state before them.
   */
  private async recoverAgain(store: Store, fd: FaultDevice, expected: Model): Promise<string | null> {
    const keys = new RoundKeys(this.s.extSpace);
    const ts: TxnPlan[] = [];
    for (let i = 0, n = this.pick.range(1, 4); i < n; i++) {
      const t = this.planAside(() => this.planTxn(-1, keys));
      // the counter moves on its own: keep it out of this check
      t.ops = t.ops.filter((o) => o.kind !== 'counter');
      t.counter = false;
      ts.push(t);
    }
    const fps = ts.map((t) => footprintOf(t, expected, this.s.extSpace));
    try {
      await Promise.all(ts.map((t) => this.execute(store, t)));
    } catch (e) {
      await store.close().catch(() => {});
      return `a transaction on the recovered store failed: ${errText(e)}`;
    }
    const after = expected.clone();
    for (const fp of fps) applyFootprint(after, fp);
    const images = [fd.crashImage(), fd.crashImage({ include: () => true })];
    const pins = pinCheckText(store);
    if (pins) {
      await store.close().catch(() => {});
      return `the recovered store, taking more transactions: ${pins}`;
    }
    await store.close().catch(() => {});
    for (const [i, img] of images.entries()) {
      let s2: Store;
      try {
        const mem = MemDevice.fromImage(img);
        s2 = await Store.openDevice(this.s.ioDelay ? this.delayed(mem) : mem, { cacheSize: this.s.cacheBytes });
      } catch (e) {
        return `second recovery (${i ? 'all writes' : 'flushed only'}) failed: ${errText(e)}`;
      }
      try {
        const actual = await readState(s2, this.s.extSpace, this.refByKey, this.refs);
        if (actual.problems.length) return `second recovery: ${actual.problems.slice(0, 5).join('; ')}`;
        const diff = diffState(actual, after, this.s.extSpace, 8);
        if (diff.length) return `second recovery (${i ? 'all writes' : 'flushed only'}) differs from the acknowledged state:\n  ${diff.join('\n  ')}`;
        const problems = await s2.fsck();
        if (problems.length) return `fsck after second recovery: ${problems.slice(0, 10).join('; ')}`;
      } finally {
        await s2.close().catch(() => {});
      }
    }
    return null;
  }

  /* ---------------------------------------------------------------- main loop */

  async run(): Promise<CrashCheckResult> {
    // every store this run opens checks at each journal write that no unwritten key is left unpinned
    const pinCheckWas = process.env['SIXTREE_DEBUG_PIN_CHECK'];
    process.env['SIXTREE_DEBUG_PIN_CHECK'] = '1';
    try {
      return await this.runChecked();
    } finally {
      if (pinCheckWas === undefined) delete process.env['SIXTREE_DEBUG_PIN_CHECK'];
      else process.env['SIXTREE_DEBUG_PIN_CHECK'] = pinCheckWas;
    }
  }

  private async runChecked(): Promise<CrashCheckResult> {
    const t0 = performance.now();
    const s = this.s;
    let mem = MemDevice.create(s.deviceBytes);
    await Store.formatDevice(mem, { btrees: BTREES, nodeSize: s.nodeBytes, blockSize: s.blockBytes, journalSize: s.journalBytes });
    this.fd = await FaultDevice.wrap(s.ioDelay ? this.delayed(mem) : mem);
    this.hookDevice(this.fd);
    let store = await Store.openDevice(this.fd, { cacheSize: s.cacheBytes });
    this.valueBytesLimit = store.maxValueSize;
    this.layout = store.engine.layout;
    try {
      for (let round = 0; round < s.rounds && this.result.failures.length < s.maxFailures; round++) {
        const base = this.model;
        const keys = new RoundKeys(s.extSpace);
        const n = this.plan.range(s.txnsPerRound[0], s.txnsPerRound[1]);
        const txns: TxnPlan[] = [];
        if (s.wipeProbability > 0 && this.plan.bool(s.wipeProbability)) txns.push(...this.planWipes(round, keys));
        for (let i = 0; i < n; i++) txns.push(this.planTxn(round, keys));
        const fps = new Map(txns.map((t) => [t.id, footprintOf(t, base, s.extSpace)]));
        const withFlush = this.plan.bool(s.flushProbability);
        const endPoint = this.plan.bool(0.3);
        // (drawn only when asked for: the plans of runs without faults stay as they were)
        const faulty = s.faultProbability > 0 && this.plan.bool(s.faultProbability);

        this.points = [];
        this.roundAcked = new Set();
        this.roundActive = true;
        const errors: string[] = [];
        const injectedBefore = this.faultsInjected();
        if (faulty) {
          this.result.faultRounds++;
          const rate = s.faultRate;
          this.fd.rules = { failRead: () => this.faultPick.bool(rate), failWrite: () => this.faultPick.bool(rate), failFlush: () => this.faultPick.bool(rate) };
        }
        // on a failing device a call may fail, with ERR_IO and nothing else
        const failedIo = (e: unknown): boolean => {
          if (!faulty || !(e instanceof SixtreeError) || e.code !== 'ERR_IO') return false;
          this.result.callsFailedIo++;
          return true;
        };
        const running = txns.map((t) =>
          this.execute(store, t).then(
            () => {
              this.roundAcked.add(t.id);
              this.maybeCrashPoint('resolved');
            },
            (e) => {
              if (!failedIo(e)) errors.push(`txn ${t.id} ${planText(t)}: ${errText(e)}`);
            },
          ),
        );
        if (withFlush) running.push(store.flush().catch((e) => void (failedIo(e) || errors.push(`flush: ${errText(e)}`))));
        try {
          await withTimeout(Promise.all(running), s.imageTimeoutMs, `round ${round} (${txns.length} transactions${withFlush ? ' and a flush' : ''})`);
        } catch (e) {
          const acked = txns.filter((t) => this.roundAcked.has(t.id)).map((t) => t.id);
          // a hang: what the store is waiting for
          errors.push(`${errText(e)}; resolved: [${acked.join(',')}] of [${txns.map((t) => `${t.id} ${t.shape}`).join(', ')}]\n${store.engine.toText()}`);
        }
        if (endPoint && this.points.length < s.crashPointsPerRound) this.crashPoint('round end');
        this.roundActive = false;
        if (faulty) this.fd.clearFaults();
        const faulted = this.faultsInjected() > injectedBefore;

        this.result.rounds++;
        this.result.txns += txns.length;
        this.result.acked += this.roundAcked.size;
        if (errors.length) {
          const what = faulty ? 'on a failing device, with something other than ERR_IO' : '(no fault injected)';
          this.failure(round, { index: -1, reason: 'workload', pending: 0, acked: new Set(), images: [] }, 'live store', `transactions failed on the live store ${what}:\n  ${errors.join('\n  ')}`, null);
          break;
        }
        await this.checkRound(round, base, txns, fps);
        this.points = [];

        if (faulted) {
          // the store after device failures: closed, and opened again from what the device holds
          const r = await this.faultRoundEnd(round, store, mem, base, txns, fps);
          if (r === null) break;
          store = r.store;
          mem = r.mem;
          this.model = r.model;
        } else {
          const next = base.clone();
          for (const t of txns) applyFootprint(next, fps.get(t.id)!);
          const c = txns.filter((t) => t.counter).length;
          if (c) next.kv.set(COUNTER_KEY, counterValue(counterOf(base.kv.get(COUNTER_KEY)) + c));
          this.model = next;
        }

        const pins = pinCheckText(store);
        if (pins) {
          this.failure(round, { index: -1, reason: 'pin check', pending: 0, acked: new Set(), images: [] }, 'live store', pins, null);
          break;
        }
        if (s.liveCheckEvery > 0 && (round + 1) % s.liveCheckEvery === 0) {
          const actual = await readState(store, s.extSpace, this.refByKey, this.refs);
          const diff = actual.problems.concat(diffState(actual, this.model, s.extSpace, 8));
          if (diff.length) {
            this.failure(round, { index: -1, reason: 'live check', pending: 0, acked: new Set(), images: [] }, 'live store', `the live store differs from the model (not a crash problem: transaction semantics):\n  ${diff.join('\n  ')}`, null);
            break;
          }
        }
        if (s.closeProbability > 0 && round + 1 < s.rounds && this.plan.bool(s.closeProbability)) {
          // a clean close between rounds (crash points during it), and the run goes on from the clean image
          if (!(await this.closeChecked(store, mem, `close after round ${round}`))) break;
          this.result.midRunCloses++;
          mem = MemDevice.fromImage(mem.image());
          this.fd = await FaultDevice.wrap(s.ioDelay ? this.delayed(mem) : mem);
          this.hookDevice(this.fd);
          store = await Store.openDevice(this.fd, { cacheSize: s.cacheBytes });
        }
        if (round % 20 === 19) s.log(`seed ${s.seed}: round ${round + 1}/${s.rounds}, ${this.result.images} images, ${this.model.kv.size} keys`);
      }
      const st = store.stats();
      this.result.kvDepth = st.btrees.kv?.depth ?? 0;
      this.result.merges = st.interior.merges ?? 0;
      this.result.collapses = st.interior.collapses ?? 0;
      this.result.keys = this.model.kv.size;
      // a clean close must keep everything too, and so must a crash during it
      if (this.result.failures.length < s.maxFailures) await this.closeChecked(store, mem, 'final close');
    } catch (e) {
      if (!(e instanceof CloseFailed)) throw e;
    } finally {
      await withTimeout(store.close(), s.imageTimeoutMs, 'close of the live store').catch(() => {});
      store = null as unknown as Store;
    }
    this.result.ms = performance.now() - t0;
    return this.result;
  }

  /**
   * Close the live store (clean): crash points are taken during the close as
   * in a round (its node writes, journal close and clean superblock), and
   * each image must hold exactly the model (every transaction was
   * acknowledged); then the clean image must open to the model with fsck
   * clean. Throws CloseFailed (recorded) if close() fails. Returns whether
   * the images passed.
   */
  private async closeChecked(store: Store, mem: MemDevice, what: string): Promise<boolean> {
    const s = this.s;
    const failuresBefore = this.result.failures.length;
    this.points = [];
    this.roundAcked = new Set();
    this.roundActive = true;
    try {
      await withTimeout(store.close(), s.imageTimeoutMs, `${what} of the live store`);
    } catch (e) {
      const p: CrashPoint = { index: this.result.crashPoints, reason: what, pending: 0, acked: new Set(), images: [] };
      this.failure(this.result.rounds, p, 'live store', `close() of the live store failed: ${errText(e)}`, null);
      throw new CloseFailed();
    } finally {
      this.roundActive = false;
    }
    this.result.closeCrashPoints += this.points.length;
    await this.checkRound(this.result.rounds, this.model, [], new Map());
    this.points = [];
    const cleanImg = mem.image();
    const p: CrashPoint = { index: this.result.crashPoints, reason: what, pending: 0, acked: new Set(), images: [] };
    const m = await this.checkClean(cleanImg);
    this.result.images++;
    if (m) this.failure(this.result.rounds, p, `after ${what}`, m, cleanImg);
    return this.result.failures.length === failuresBefore;
  }

  private async checkClean(img: Uint8Array): Promise<string | null> {
    let store: Store;
    try {
      store = await Store.openDevice(MemDevice.fromImage(img), { cacheSize: this.s.cacheBytes });
    } catch (e) {
      return `open after a clean close failed: ${errText(e)}`;
    }
    try {
      const actual = await readState(store, this.s.extSpace, this.refByKey, this.refs);
      const diff = actual.problems.concat(diffState(actual, this.model, this.s.extSpace, 8));
      if (diff.length) return `state after a clean close differs from the model:\n  ${diff.join('\n  ')}`;
      const problems = await store.fsck();
      if (problems.length) return `fsck after a clean close:\n  ${problems.slice(0, 10).join('\n  ')}`;
      return null;
    } finally {
      await store.close().catch(() => {});
    }
  }
}

/** close() of the live store failed (already recorded as a failure). */
class CloseFailed extends Error {}

/* ------------------------------------------------------------------ reading and comparing */

interface ActualState {
  kv: Map<string, Uint8Array>;
  /** ext inode -> unit -> ref (0 hole); units outside [0, extSpace) are problems. */
  ext: Map<number, Int32Array>;
  problems: string[];
}

async function readState(store: Store, extSpace: number, refByKey: Map<string, number>, refs: ExtRef[]): Promise<ActualState> {
  const kv = new Map<string, Uint8Array>();
  const problems: string[] = [];
  for await (const e of store.range('kv')) {
    if (e.pos.snapshot !== 0) problems.push(`kv ${e.pos.inode}:${e.pos.offset}:${e.pos.snapshot}: a snapshot nobody wrote`);
    kv.set(`${e.pos.inode}:${e.pos.offset}`, e.value.slice());
  }
  const ext = new Map<number, Int32Array>(EXT_INODES.map((i) => [i, new Int32Array(extSpace)]));
  for await (const e of store.range('ext')) {
    const inode = Number(e.pos.inode);
    const a = ext.get(inode);
    const start = Number(e.start!.offset);
    const end = Number(e.pos.offset);
    const vo = Number(e.valueOffset ?? 0n);
    const where = `ext ${inode}:${start}..${end}`;
    if (!a || start < 0 || end > extSpace || start >= end) {
      problems.push(`${where}: outside anything written`);
      continue;
    }
    const v = e.value;
    const dv = new DataView(v.buffer, v.byteOffset, v.byteLength);
    if (v.length < 16 || dv.getUint32(0, true) !== EXT_MAGIC) {
      problems.push(`${where}: value is not an extent value (${v.length} bytes)`);
      continue;
    }
    const txnId = dv.getUint32(4, true);
    const origStart = dv.getUint32(12, true);
    const ref = refByKey.get(`${txnId}:${inode}:${origStart}`);
    if (ref === undefined) {
      problems.push(`${where}: value of txn ${txnId} extent at ${origStart}, which was never written`);
      continue;
    }
    if (!bytesEqual(v, refs[ref]!.value)) problems.push(`${where}: value bytes of txn ${txnId} extent at ${origStart} are corrupt`);
    if (start - vo !== origStart) problems.push(`${where}: valueOffset ${vo} does not place it in txn ${txnId}'s extent starting at ${origStart}`);
    for (let u = start; u < end; u++) {
      if (a[u] !== 0) problems.push(`${where}: unit ${u} covered twice`);
      a[u] = ref;
    }
  }
  return { kv, ext, problems };
}

function valueText(v: Uint8Array | undefined): string {
  if (v === undefined) return 'absent';
  const t = txnOfValue(v);
  if (t >= 0) return `txn ${t}'s value (${v.length} B)`;
  if (v.length === 8) {
    try {
      return `counter ${counterOf(v)}`;
    } catch {
      /* foreign */
    }
  }
  return `${v.length} foreign bytes`;
}

function refText(refs: number, refTable?: ExtRef[]): string {
  if (refs === 0) return 'hole';
  const r = refTable?.[refs];
  return r ? `txn ${r.txnId}'s extent at ${r.start}` : `extent ref ${refs}`;
}

/** Differences between actual and the model, at most max lines. */
function diffState(actual: ActualState, m: Model, extSpace: number, max: number): string[] {
  const out: string[] = [];
  const keys = new Set([...m.kv.keys(), ...actual.kv.keys()]);
  for (const k of [...keys].sort()) {
    if (out.length >= max) break;
    const want = m.kv.get(k);
    const got = actual.kv.get(k);
    if (!bytesEqual(want, got)) out.push(`kv ${k}: expected ${valueText(want)}, found ${valueText(got)}`);
  }
  for (const [inode, a] of m.ext) {
    const b = actual.ext.get(inode)!;
    for (let u = 0; u < extSpace && out.length < max; u++) {
      if (a[u] !== b[u]) {
        let e = u;
        while (e + 1 < extSpace && a[e + 1] === a[u] && b[e + 1] === b[u]) e++;
        out.push(`ext ${inode}:${u}..${e + 1}: expected ${refText(a[u]!)}, found ${refText(b[u]!)}`);
        u = e;
      }
    }
  }
  return out;
}

interface Verdict {
  message: string | null;
  inFlightVisible: boolean;
  /** The state the image holds (base + visible transactions) when message is null. */
  expected: Model;
}

/**
 * Decide which of the round's transactions the image holds, then compare the
 * whole state with base + those transactions.
 */
function verdict(actual: ActualState, base: Model, baseCounter: number, txns: TxnPlan[], fps: Map<number, Footprint>, acked: Set<number>, extSpace: number): Verdict {
  const problems: string[] = [];
  const visible: TxnPlan[] = [];
  let inFlightVisible = false;
  for (const t of txns) {
    const fp = fps.get(t.id)!;
    let isAfter = true;
    let isBefore = true;
    const mism: string[] = [];
    for (const [k, after] of fp.kvAfter) {
      const got = actual.kv.get(k);
      const before = base.kv.get(k);
      const a = bytesEqual(got, after);
      const b = bytesEqual(got, before);
      isAfter &&= a;
      isBefore &&= b;
      if (!a || !b) mism.push(`kv ${k}: found ${valueText(got)}, before ${valueText(before)}, txn writes ${valueText(after)}`);
    }
    for (const [inode, units] of fp.extAfter) {
      const got = actual.ext.get(inode)!;
      const before = base.ext.get(inode)!;
      for (const [u, r] of units) {
        const a = got[u] === r;
        const b = got[u] === before[u];
        isAfter &&= a;
        isBefore &&= b;
        if ((!a || !b) && mism.length < 40) mism.push(`ext ${inode}:${u}: found ref ${got[u]}, before ref ${before[u]}, txn writes ref ${r}`);
      }
    }
    const state = acked.has(t.id) ? 'acknowledged' : 'in flight';
    if (!isAfter && !isBefore) {
      problems.push(`txn ${t.id} (${t.shape}, ${state}) is partly visible:\n    ${mism.filter((x) => x.includes('found')).slice(0, 8).join('\n    ')}`);
      continue;
    }
    if (isAfter && !isBefore) {
      visible.push(t);
      if (!acked.has(t.id)) inFlightVisible = true;
    } else if (!isAfter && acked.has(t.id)) {
      problems.push(`txn ${t.id} (${t.shape}) was acknowledged but is not visible:\n    ${mism.slice(0, 8).join('\n    ')}`);
    }
  }
  const expected = base.clone();
  for (const t of visible) applyFootprint(expected, fps.get(t.id)!);
  const counterTxns = visible.filter((t) => t.counter).length;
  if (counterTxns || base.kv.has(COUNTER_KEY)) expected.kv.set(COUNTER_KEY, counterValue(baseCounter + counterTxns));
  if (!problems.length) {
    const diff = diffState(actual, expected, extSpace, 10);
    if (diff.length) {
      const idsOf = (pred: (t: TxnPlan) => boolean) => txns.filter(pred).map((t) => t.id).join(',') || '-';
      problems.push(
        `state differs from (state before the round + visible txns [${visible.map((t) => t.id).join(',') || '-'}]); round txns: acknowledged [${idsOf((t) => acked.has(t.id))}], in flight [${idsOf((t) => !acked.has(t.id))}]; counter transactions visible ${counterTxns}:\n    ${diff.join('\n    ')}`,
      );
    }
  }
  return { message: problems.length ? problems.join('\n  ') : null, inFlightVisible, expected };
}

/* ------------------------------------------------------------------ helpers */

/** The fault rounds of a run, for its line (empty without them). */
function faultsText(r: CrashCheckResult): string {
  return r.faultRounds ? `, ${r.faultRounds} rounds on a failing device (${r.faultsInjected} failures injected, ${r.callsFailedIo} calls failed with ERR_IO)` : '';
}

/** A transaction's ops, short. */
export function planText(t: TxnPlan): string {
  const ops = t.ops.map((o) => {
    switch (o.kind) {
      case 'put':
        return `put ${o.inode}:${o.offset} (${o.value.length} B)`;
      case 'del':
        return `del ${o.inode}:${o.offset}`;
      case 'delRange':
        return `delRange kv ${o.inode}:${o.offset}..${o.end}`;
      case 'putExtent':
        return `putExtent ${o.inode}:${o.offset}+${o.size} (${o.value.length} B)`;
      case 'delRangeExt':
        return `delRange ext ${o.inode}:${o.offset}..${o.end}`;
      case 'counter':
        return 'counter += 1';
    }
  });
  return `(${t.shape}: ${ops.join(', ')})`;
}

function errText(e: unknown): string {
  const stack = (x: Error): string => (x.stack ? `\n      ${x.stack.split('\n').slice(1, 7).join('\n      ')}` : '');
  if (e instanceof SixtreeError) return `${e.code}: ${e.message}${e.code === 'ERR_INVALID_ARG' || e.code === 'ERR_TOPOLOGY' ? stack(e) : ''}`;
  if (e instanceof Error) return `${e.name}: ${e.message}${stack(e)}`;
  return String(e);
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms (hang?)`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export function describeFailure(f: CrashFailure): string {
  return `seed ${f.seed} round ${f.round} crash point ${f.crashPoint} (${f.reason}), image "${f.variant}"${f.imagePath ? ` [image: ${f.imagePath}]` : ''}:\n  ${f.message}`;
}

/** One run of the crash check (a fresh store, the workload, every crash image checked). */
/**
 * One run of the campaign (not --like-ci) for seed: bigger and more varied
 * than CI (more rounds, more transactions in flight, caches and journals of
 * several sizes), its sizes drawn from the seed so a run can be repeated.
 */
export function campaignRunOpts(seed: number, rounds: number, wipeProbability: number): CrashCheckOpts {
  const r = new Prng(seed ^ 0xc0ffee);
  return {
    seed,
    rounds,
    txnsPerRound: [1, r.range(6, 16)],
    crashPointsPerRound: 3,
    deviceBytes: 16 << 20,
    journalBytes: [128 << 10, 256 << 10, 1 << 20][r.int(3)]!,
    cacheBytes: [192 << 10, 512 << 10, 2 << 20][r.int(3)]!,
    kvSpace: r.range(1000, 8000),
    extSpace: 8000,
    valueBytesMax: r.range(64, 400),
    reopenWriteProbability: 0.15,
    mixBtrees: true,
    wipeProbability,
  };
}

export async function runCrashCheck(o: CrashCheckOpts): Promise<CrashCheckResult> {
  return new Run(o).run();
}

/**
 * The engine's pin check (SIXTREE_DEBUG_PIN_CHECK, engine.ts pinCheck): a
 * journal entry whose last_seq passed a key no node write has taken to disk
 * and no pin holds back: a crash from then on loses an acknowledged write.
 * Seen when it happens, not only when a crash image shows it.
 */
function pinCheckText(store: Store): string | null {
  const n = store.stats().writeback.pinCheckViolations;
  return n ? `journal pin check: ${n} violation(s); first: ${store.engine.pinCheckFirst}` : null;
}

/* ------------------------------------------------------------------ command line */

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      count: { type: 'string', default: '10' },
      seed: { type: 'string' },
      rounds: { type: 'string', default: '150' },
      dump: { type: 'string' },
      'separate-btrees': { type: 'boolean', default: false },
      block: { type: 'string' },
      'like-ci': { type: 'boolean', default: false },
      wipe: { type: 'string' },
      'io-delay': { type: 'string' },
      'io-delay-ms': { type: 'string' },
      faults: { type: 'string' },
      'fault-rate': { type: 'string' },
      closes: { type: 'string' },
      quiet: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: node dist/bench/crash-campaign.js --count N [--seed S] [--rounds R] [--block BYTES] [--like-ci] [--wipe P] [--io-delay SHARE] [--io-delay-ms MS]\n' +
        '         [--faults P] [--fault-rate R] [--closes P] [--dump DIR] [--separate-btrees] [--quiet]\n' +
        '  N runs with seeds S, S+1, ... (default S: random); exits 1 if any crash image breaks the invariant.\n' +
        '  --dump DIR: write failing crash images there; --separate-btrees: no transaction writes both kv and ext.\n' +
        '  --like-ci: the workload of the CI test (test/journal/crash-store.test.ts) instead of the bigger campaign one\n' +
        '    (with --block 4096: its blockSize = nodeSize configuration).\n' +
        '  --wipe P: a fraction P of the rounds start with a delRange over much of a key space (merges, root collapses).\n' +
        '  --io-delay SHARE: each device operation of the live store waits, with probability SHARE, before it reaches\n' +
        '    the device and after it completed (a promise tick, 1-3 loop turns or a timer up to MS ms, default 1):\n' +
        '    writes complete out of issue order, and the crash images follow their completion order.\n' +
        '  --faults P: a fraction P of the rounds run on a failing device (each read, write and flush fails with EIO\n' +
        '    with probability R, default 0.05): calls may fail only with ERR_IO; then the store is closed and opened\n' +
        '    again from what the device holds (and from its durable image): nothing acknowledged lost, fsck clean.\n' +
        '  --closes P: a fraction P of the rounds are followed by a clean close, with crash points during it (every\n' +
        '    image must hold what was acknowledged), and the run goes on with the store opened again.\n',
    );
    return;
  }
  const count = Number(values.count);
  const rounds = Number(values.rounds);
  if (!Number.isSafeInteger(count) || count < 1) throw new Error(`--count: ${values.count} is not a positive integer`);
  if (!Number.isSafeInteger(rounds) || rounds < 1) throw new Error(`--rounds: ${values.rounds} is not a positive integer`);
  const wipe = values.wipe !== undefined ? Number(values.wipe) : 0;
  if (!(wipe >= 0 && wipe <= 1)) throw new Error(`--wipe: ${values.wipe} is not a probability in [0, 1]`);
  let ioDelay: { share: number; maxMs: number } | undefined;
  if (values['io-delay'] !== undefined || values['io-delay-ms'] !== undefined) {
    const share = Number(values['io-delay'] ?? '0.5');
    const maxMs = Number(values['io-delay-ms'] ?? '1');
    if (!(share >= 0 && share <= 1)) throw new Error(`--io-delay: ${values['io-delay']} is not a number in [0, 1]`);
    if (!(maxMs >= 0 && maxMs <= 1000)) throw new Error(`--io-delay-ms: ${values['io-delay-ms']} is not a number of milliseconds in [0, 1000]`);
    ioDelay = { share, maxMs };
  }
  const faults = values.faults !== undefined ? Number(values.faults) : 0;
  const faultRate = values['fault-rate'] !== undefined ? Number(values['fault-rate']) : 0.05;
  if (!(faults >= 0 && faults <= 1)) throw new Error(`--faults: ${values.faults} is not a probability in [0, 1]`);
  if (!(faultRate > 0 && faultRate <= 1)) throw new Error(`--fault-rate: ${values['fault-rate']} is not a probability in (0, 1]`);
  const closes = values.closes !== undefined ? Number(values.closes) : 0;
  if (!(closes >= 0 && closes <= 1)) throw new Error(`--closes: ${values.closes} is not a probability in [0, 1]`);
  const faultOpts = { ...(faults > 0 ? { faultProbability: faults, faultRate } : {}), ...(closes > 0 ? { closeProbability: closes } : {}) };
  const seed0 = values.seed !== undefined ? Number(values.seed) >>> 0 : (Math.random() * 0x1_0000_0000) >>> 0;
  const log = values.quiet ? () => {} : (l: string) => process.stderr.write(`${l}\n`);
  process.stdout.write(`crash campaign: ${count} runs x ${rounds} rounds, seeds ${seed0}..${(seed0 + count - 1) >>> 0}\n`);
  const t0 = performance.now();
  let finished = false;
  process.on('beforeExit', () => {
    if (finished) return;
    process.stdout.write('crash campaign: the event loop drained before the campaign finished: a promise of the store never settled (hang)\n');
    process.exit(1);
  });
  let images = 0;
  let failed = 0;
  const failures: CrashFailure[] = [];
  for (let i = 0; i < count; i++) {
    const seed = (seed0 + i) >>> 0;
    if (values['like-ci']) {
      const block = values.block !== undefined ? Number(values.block) : 512;
      const res = await runCrashCheck({ seed, rounds, cacheBytes: 512 << 10, journalBytes: block === 4096 ? 1 << 20 : 256 << 10, blockBytes: block, wipeProbability: wipe, ...(ioDelay ? { ioDelay } : {}), ...faultOpts, ...(values.dump ? { dumpDir: values.dump } : {}) });
      images += res.images;
      if (res.failures.length) {
        failed++;
        failures.push(...res.failures);
        process.stdout.write(`run ${i + 1}/${count} seed ${seed}: FAILED: ${describeFailure(res.failures[0]!)}\n`);
      } else process.stdout.write(`run ${i + 1}/${count} seed ${seed}: ok, ${res.images} images${faultsText(res)}\n`);
      continue;
    }
    const res = await runCrashCheck({
      ...campaignRunOpts(seed, rounds, wipe),
      ...(values.block !== undefined ? { blockBytes: Number(values.block) } : {}),
      mixBtrees: !values['separate-btrees'],
      ...(ioDelay ? { ioDelay } : {}),
      ...faultOpts,
      dumpDir: values.dump,
      log,
    });
    images += res.images;
    if (res.failures.length) {
      failed++;
      failures.push(...res.failures);
    }
    process.stdout.write(
      `run ${i + 1}/${count} seed ${seed}: ${res.failures.length ? 'FAIL' : 'ok'}  ${res.rounds} rounds, ${res.txns} txns (${res.acked} acknowledged), ` +
        `${res.crashPoints} crash points, ${res.images} images (${res.imagesWithInFlightVisible} with in-flight txns visible, ${res.appendTears} with a node append torn, ${res.closeCrashPoints} crash points during clean closes${res.midRunCloses ? ` (${res.midRunCloses} closes mid-run)` : ''}, ${res.tornBsets} torn bsets read past, ${res.reopenWrites} recovered twice)${faultsText(res)}, ` +
        `kv depth ${res.kvDepth}, ${res.keys} keys, ${res.merges} merges, ${res.collapses} root collapses, ${(res.ms / 1000).toFixed(1)} s\n`,
    );
  }
  const secs = (performance.now() - t0) / 1000;
  process.stdout.write(`\nsummary: ${count} runs, ${images} crash images, ${failed} failing runs, ${secs.toFixed(1)} s\n`);
  for (const f of failures) process.stdout.write(`\n${describeFailure(f)}\n`);
  finished = true;
  process.exitCode = failed ? 1 : 0;
}

const invokedAs = process.argv[1] ? pathToFileURL(path.resolve(process.argv[1])).href : '';
if (invokedAs === import.meta.url || invokedAs === pathToFileURL(fileURLToPath(import.meta.url)).href) {
  main().catch((e) => {
    process.stderr.write(`crash campaign: ${errText(e)}\n`);
    process.exit(2);
  });
}
