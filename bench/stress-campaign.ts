// SPDX-License-Identifier: GPL-2.0-only
/*
 * Stress campaign: the transaction guarantees of docs/api.md (transact() is
 * atomic and serializable: concurrent read-modify-write transactions never
 * lose an update; a callback that throws commits nothing), checked under many
 * concurrent transactions on a real file-backed store.
 *
 *   node dist/bench/stress-campaign.js --count N [--seed S] [--workers W] [--ops O]
 *        [--seconds T] [--node-size B] [--cache-mib M] [--accounts A] [--chains C]
 *        [--io-delay SHARE] [--io-delay-ms MS] [--faults RATE] [--fault-ops N]
 *        [--faults-spare-journal] [--fault-kinds K,K] [--closes K] [--dir DIR | --device /dev/loopN]
 *
 * runs N independent runs (seeds S, S+1, ...), prints one line per run and a
 * summary, and exits 1 on any violation (2 on a usage error). The sizes of a
 * run (node size, cache, key counts, workers, value sizes) are drawn from its
 * seed unless given; every choice of the workload comes from the seeded PRNG,
 * so a failure replays with --seed (the interleaving follows the device's
 * timing, so a replay is likely, not certain, to fail the same way).
 *
 * One run: a store is formatted on a file in os.tmpdir() (ext4 here: O_DIRECT
 * is real), or on the whole of --device, with btrees `bank` and `chain`, opened with a small cache (with
 * --io-delay, through a DelayDevice: every device operation may wait before
 * and after, so reads complete late and out of order), and W
 * async workers each run O operations (or until T seconds pass), drawn from:
 *
 *   Workload 1, bank. Accounts 0..A-1 at bank 1:(i*STRIDE) hold an i64
 *   balance (initially BALANCE_INITIAL) plus padding; an absent account holds
 *   0. Filler keys between the accounts (1:(i*STRIDE+j)) are inserted and
 *   deleted in runs, so leaves split and merge under the transfers.
 *     - transfer: read two (or 3-4) accounts, move planned amounts (never
 *       below 0), write them back; some reads take intent. The committed
 *       attempt returns the amounts it moved.
 *     - close: move an account's whole balance to another and delete it;
 *       reopen: create an absent account with 0.
 *     - abort: a transfer that writes both accounts, then throws: must leave
 *       no trace (transact rejects with that error).
 *     - readers, each one transaction: a forward iterator scan, a reverse
 *       scan, or one tx.get per account: the total of what the committed
 *       attempt read equals A * BALANCE_INITIAL (serializable, so a
 *       transaction's reads are one consistent state; what a callback saw in
 *       an attempt that then restarted is not promised, only counted). Half
 *       the scans throw from the callback on a wrong total: that error must
 *       never reach the caller (docs/api.md: an error thrown by the callback
 *       is the caller's only if the attempt's reads still held).
 *   Workload 2, version chains. Chain keys 0..C-1 at chain 1:(c*STRIDE) hold
 *   the ids of the transactions that appended to them, oldest first; a full
 *   list moves to an archive key (chain 2:(c*2^16+segment)) in the same
 *   transaction. Each append transaction (id planned before transact, kept
 *   across restarts) appends its id to 2-6 keys; some then throw (aborted).
 *     - chain readers read every entry of 2-4 keys in one transaction: an id
 *       seen on one key whose transaction also appended to another read key
 *       must be on that one too (atomic visibility), and no aborted id shows.
 *   Also: point reads outside transactions (getSync, get, a short
 *   store.range: each value must parse), and now and then an fsck() under
 *   load, which must report nothing (it freezes the topology for its walk:
 *   splits and merges wait, commits into leaves go on), and a flush() under
 *   load, which must end (every dirty node written while the others write).
 *
 * At the end, and again after close and reopen (with another cache size):
 *   - each account's balance is BALANCE_INITIAL plus the deltas of every
 *     acknowledged transaction touching it (so a single lost write shows,
 *     even where the total would not), it exists iff its closes and reopens
 *     balance out, and the total is A * BALANCE_INITIAL;
 *   - each chain key holds exactly the acknowledged appends that planned it,
 *     each once, none from an aborted transaction (lost update / dirty
 *     write), and the per-key orders agree with one serial order (the graph
 *     of consecutive entries is acyclic);
 *   - every value parses (its key's index and padding are its own);
 *   - fsck() returns [].
 * A worker's unexpected error, a transaction that rejects with anything but
 * its own planned abort, or a run that makes no progress for a minute (hang)
 * is a violation too.
 *
 * With --faults RATE the device fails: from an operation count drawn from
 * the seed, for N operations (--fault-ops), every read, write and flush of
 * the store fails with EIO with probability RATE (a FaultDevice over the
 * file). Then:
 *   - a writing transaction may reject with ERR_IO only. If the error's
 *     details.committed is false it must not have landed; else its outcome
 *     is unknown (docs/api.md, ERR_IO). Each one writes a marker key
 *     (chain 3:id for bank transactions, 4:id for chain appends) in the same
 *     transaction, so the checks read which of them landed: their effects
 *     (the amounts moved in their last attempt) are added to the model, and
 *     an acknowledged transaction's marker must be there. A journal failure
 *     makes the store refuse every write from then on (ERR_IO);
 *   - a read-only operation may reject with ERR_IO (fsck may report nodes
 *     unreadable with ERR_IO) only if a failure was injected while it ran;
 *   - with --faults-spare-journal only node reads and writes fail: the
 *     journal goes on, so the store keeps taking writes through the failures
 *     (a failed node write is retried; a failed read fails its transaction);
 *     with --fault-kinds read only reads fail (--fault-kinds picks any of
 *     read, write, flush): the failures land in lookups, scans, commits'
 *     reads, splits and merges, and the store must keep taking writes (a
 *     refusal after a failed read is a violation);
 *   - close() may reject with ERR_IO; the reopen (without faults) must hold
 *     every acknowledged transaction and each unknown one wholly or not at
 *     all. If any failure was injected, the workers then run again on the
 *     reopened store, which is checked again, and again after a reopen.
 *
 * With --closes K the store is closed under load K times during the first
 * workload (at operation counts drawn from the seed: a server shutting down
 * with requests in flight) and opened again at once, the workers going on
 * with the new store. close() waits for the operations in flight and must
 * resolve; a call that starts on the closing store may reject with
 * ERR_CLOSED only, and a writing transaction that did must not have landed
 * (writing transactions write marker keys in this mode too). On a violation the seed, the parameters, the invariant
 * and the store's toText() and stats() are printed.
 */

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Prng } from './prng.js';
import { SixtreeError } from '../src/errors.js';
import { Store, type Transaction } from '../src/store.js';
import { pos } from '../src/index.js';
import { lockingCounters } from '../src/btree/locking.js';
import { BlockDevice } from '../src/io/block-device.js';
import { DelayDevice } from '../src/io/delay-device.js';
import { FaultDevice, type FaultKind, type FaultRules } from '../src/io/fault-device.js';
import { layoutFromSuperblock, readSuperblock } from '../src/format/superblock.js';
import type { Device } from '../src/io/device.js';

/* ------------------------------------------------------------------ options */

export interface StressOpts {
  seed: number;
  /** Concurrent async workers. */
  workers: number;
  /** Operations per worker (each one transaction, or an fsck). */
  opsPerWorker: number;
  /** Workers start no operation after this many seconds. */
  secondsMax: number;
  nodeSizeBytes: number;
  blockSizeBytes: number;
  cacheBytes: number;
  /** Cache of the reopen at the end. */
  reopenCacheBytes: number;
  accounts: number;
  chains: number;
  /** Entries a chain key holds before they move to an archive key. */
  chainEntriesMax: number;
  /** Padding of account values: [0, this] bytes. */
  accountPadMax: number;
  /** Filler value sizes: [8, this] bytes. */
  fillerBytesMax: number;
  /** Probability a read of a read-modify-write takes intent. */
  intentProbability: number;
  deviceBytes: number;
  /**
   * Random I/O waits (src/io/delay-device.ts): each device operation waits,
   * with probability `share`, before it reaches the file and again after it
   * completed (a promise tick, 1-3 loop turns, or a timer up to maxMs), drawn
   * from the run's seed. Absent: the file as it is.
   */
  ioDelay?: { share: number; maxMs: number };
  /**
   * Device failures (the header): for `ops` operations from a point drawn
   * from the seed, each read, write and flush fails with EIO with
   * probability `rate`; with `spareJournal`, only node reads and writes
   * (the journal's writes and every flush succeed, so the store goes on
   * writing); with `kinds`, only operations of those kinds (default all).
   * Absent: none.
   */
  faults?: { rate: number; ops: number; spareJournal?: boolean; kinds?: FaultKind[] };
  /** Closes (and reopens) of the store under load during the first workload (the header). */
  closes?: number;
  /** Where the store file goes (a fresh directory under it). */
  dir?: string;
  /** A block device (e.g. /dev/loopN) to format for each run instead of a file: ITS CONTENTS ARE DESTROYED. */
  device?: string;
  log?: (line: string) => void;
}

export interface StressResult {
  seed: number;
  /** Violations found: [] means clean. */
  violations: string[];
  commits: number;
  aborts: number;
  transfers: number;
  closes: number;
  reopens: number;
  fillerTxns: number;
  chainAppends: number;
  readers: number;
  readersTooBig: number;
  /** Callback attempts that saw a total other than the invariant and then restarted (not a violation: not promised). */
  attemptsInconsistent: number;
  fscks: number;
  /** store.flush() calls under load. */
  flushes: number;
  restarts: number;
  splits: number;
  merges: number;
  evictions: number;
  /** Waits the DelayDevice took during the workload (0 without ioDelay). */
  ioWaits: number;
  /** Device failures injected (0 without faults). */
  faultsInjected: number;
  /** Operations that rejected with ERR_IO (allowed only with faults), and the first few messages. */
  ioErrors: number;
  ioErrorsFirst: string[];
  /** Writing transactions whose outcome ERR_IO left unknown, and how many of them the reopened store holds. */
  unknownOutcomes: number;
  unknownLanded: number;
  /** Operations of the second workload (after faults, on the reopened store). */
  secondOps: number;
  /** Closes under load done, and the calls that met ERR_CLOSED on a closing store. */
  closesUnderLoad: number;
  closedErrors: number;
  depthBank: number;
  ms: number;
  /** toText() and stats() of the store when a violation was found (empty otherwise). */
  dump: string;
}

const BALANCE_INITIAL = 1000n;
/** Account / chain key i sits at offset i * STRIDE; filler keys in between. */
const STRIDE = 1024;
const BANK = 'bank';
const CHAIN = 'chain';
const ACCOUNT_MAGIC = 0x41434354; // "ACCT"
const FILLER_MAGIC = 0x46494c4c; // "FILL"
const CHAIN_MAGIC = 0x43484e4b; // "CHNK"
const ARCHIVE_MAGIC = 0x41524348; // "ARCH"
const SEGMENTS_MAX = 1 << 16;
/** A run with no operation finishing for this long is a hang. */
const PROGRESS_TIMEOUT_MS = 60_000;

/**
 * The sizes of run `seed`, drawn from it: node sizes from 4 KiB (splits and
 * merges all the time) up, caches from a little above the reserve (evictions
 * under every transaction) up, key counts from 64 (hot keys) to 4096.
 */
export function stressRunOpts(seed: number, over: Partial<StressOpts> = {}): StressOpts {
  // every size is drawn, given or not, so overriding one leaves the others as the seed has them
  const r = new Prng(seed ^ 0x57e55);
  const drawn = {
    nodeSizeBytes: r.pick([4096, 4096, 4096, 8192, 16384, 65536]),
    blockSizeBytes: r.pick([512, 4096]),
    cacheFactor: r.pick([1.3, 1.6, 2, 4, 64]),
    reopenCacheFactor: r.pick([1.3, 8]),
    workers: r.pick([8, 16, 32, 64]),
    accounts: r.pick([64, 256, 1024, 4096]),
    chains: r.pick([16, 64, 256, 1024]),
    chainEntriesMax: r.pick([4, 8, 32, 100]),
    accountPadMax: r.pick([0, 32, 200]),
    fillerBytesMax: r.pick([16, 100, 400]),
    intentProbability: r.pick([0, 0.3, 1]),
  };
  const nodeSizeBytes = over.nodeSizeBytes ?? drawn.nodeSizeBytes;
  // the reserve is (24 + 8 x btrees) nodes (docs/api.md, cacheSize): 40 for two btrees
  const reserveBytes = 40 * (nodeSizeBytes + nodeSizeBytes / 4);
  const maxValue = Math.min(nodeSizeBytes / 8, 524280) - 44;
  return {
    seed,
    workers: over.workers ?? drawn.workers,
    opsPerWorker: over.opsPerWorker ?? 200,
    secondsMax: over.secondsMax ?? 60,
    nodeSizeBytes,
    blockSizeBytes: over.blockSizeBytes ?? drawn.blockSizeBytes,
    cacheBytes: over.cacheBytes ?? Math.ceil(reserveBytes * drawn.cacheFactor),
    reopenCacheBytes: over.reopenCacheBytes ?? Math.ceil(reserveBytes * drawn.reopenCacheFactor),
    accounts: over.accounts ?? drawn.accounts,
    chains: over.chains ?? drawn.chains,
    chainEntriesMax: over.chainEntriesMax ?? Math.min(drawn.chainEntriesMax, Math.floor((maxValue - 12) / 4)),
    accountPadMax: over.accountPadMax ?? Math.min(drawn.accountPadMax, maxValue - 24),
    fillerBytesMax: over.fillerBytesMax ?? Math.min(drawn.fillerBytesMax, maxValue),
    intentProbability: over.intentProbability ?? drawn.intentProbability,
    deviceBytes: over.deviceBytes ?? 256 << 20,
    ...(over.ioDelay !== undefined ? { ioDelay: over.ioDelay } : {}),
    ...(over.faults !== undefined ? { faults: over.faults } : {}),
    ...(over.closes !== undefined ? { closes: over.closes } : {}),
    ...(over.dir !== undefined ? { dir: over.dir } : {}),
    ...(over.device !== undefined ? { device: over.device } : {}),
    ...(over.log !== undefined ? { log: over.log } : {}),
  };
}

export function optsText(o: StressOpts): string {
  return (
    `seed ${o.seed}: workers ${o.workers}, ops/worker ${o.opsPerWorker}, seconds ${o.secondsMax}, node ${o.nodeSizeBytes} B, block ${o.blockSizeBytes} B, ` +
    `cache ${(o.cacheBytes / 1024).toFixed(0)} KiB (reopen ${(o.reopenCacheBytes / 1024).toFixed(0)} KiB), accounts ${o.accounts}, chains ${o.chains} ` +
    `(${o.chainEntriesMax} entries before archiving), account pad <= ${o.accountPadMax} B, filler <= ${o.fillerBytesMax} B, intent ${o.intentProbability}` +
    (o.ioDelay ? `, I/O waits share ${o.ioDelay.share} up to ${o.ioDelay.maxMs} ms` : '') +
    (o.faults ? `, device failures at rate ${o.faults.rate} for ${o.faults.ops} operations${o.faults.spareJournal ? ' (nodes only)' : ''}${o.faults.kinds ? ` (${o.faults.kinds.join(', ')} only)` : ''}` : '') +
    (o.closes ? `, ${o.closes} closes under load` : '')
  );
}

/* ------------------------------------------------------------------ values */

function accountPos(i: number) {
  return pos(1, i * STRIDE);
}

function fillerPos(i: number, j: number) {
  return pos(1, i * STRIDE + j);
}

function chainPos(c: number) {
  return pos(1, c * STRIDE);
}

function archivePos(c: number, segment: number) {
  return pos(2, c * SEGMENTS_MAX + segment);
}

/** Marker keys (fault mode): written by transaction `id` with its updates, so its outcome can be read back. */
const MARKER_BANK = 3;
const MARKER_CHAIN = 4;
const MARKER_MAGIC = 0x4d41524b; // "MARK"

function markerPos(kind: number, id: number) {
  return pos(kind, id);
}

function markerValue(kind: number, id: number): Uint8Array {
  const b = new Uint8Array(12);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, MARKER_MAGIC, true);
  dv.setUint32(4, kind, true);
  dv.setUint32(8, id, true);
  return b;
}

function padByte(tag: number, i: number): number {
  return (tag * 131 + i * 7 + 3) & 0xff;
}

/** Account value: magic, index, balance (i64), pad length, the id of the transaction that wrote it, pad. */
function accountValue(i: number, balance: bigint, pad: number, writer: number): Uint8Array {
  const b = new Uint8Array(24 + pad);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, ACCOUNT_MAGIC, true);
  dv.setUint32(4, i, true);
  dv.setBigInt64(8, balance, true);
  dv.setUint32(16, pad, true);
  dv.setUint32(20, writer, true);
  for (let k = 0; k < pad; k++) b[24 + k] = padByte(i, k);
  return b;
}

class Violation extends Error {}

interface Account {
  balance: bigint;
  pad: number;
  /** Id of the transaction that wrote this value (0: populate). */
  writer: number;
}

function accountParse(i: number, v: Uint8Array): Account {
  const dv = new DataView(v.buffer, v.byteOffset, v.byteLength);
  if (v.length < 24 || dv.getUint32(0, true) !== ACCOUNT_MAGIC) throw new Violation(`account ${i}: not an account value (${v.length} B)`);
  if (dv.getUint32(4, true) !== i) throw new Violation(`account ${i}: holds account ${dv.getUint32(4, true)}'s value`);
  const pad = dv.getUint32(16, true);
  if (v.length !== 24 + pad) throw new Violation(`account ${i}: value length ${v.length}, pad says ${pad}`);
  for (let k = 0; k < pad; k++) if (v[24 + k] !== padByte(i, k)) throw new Violation(`account ${i}: padding byte ${k} corrupt`);
  return { balance: dv.getBigInt64(8, true), pad, writer: dv.getUint32(20, true) };
}

function fillerValue(offset: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, FILLER_MAGIC, true);
  dv.setUint32(4, offset, true);
  for (let k = 8; k < len; k++) b[k] = padByte(offset, k);
  return b;
}

function fillerCheck(offset: number, v: Uint8Array): void {
  const dv = new DataView(v.buffer, v.byteOffset, v.byteLength);
  if (v.length < 8 || dv.getUint32(0, true) !== FILLER_MAGIC || dv.getUint32(4, true) !== offset) throw new Violation(`filler at offset ${offset}: foreign value (${v.length} B)`);
  for (let k = 8; k < v.length; k++) if (v[k] !== padByte(offset, k)) throw new Violation(`filler at offset ${offset}: byte ${k} corrupt`);
}

/** Chain key value: magic, key index, archived segments, ids. */
function chainValue(magic: number, c: number, segments: number, ids: readonly number[]): Uint8Array {
  const b = new Uint8Array(12 + 4 * ids.length);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, magic, true);
  dv.setUint32(4, c, true);
  dv.setUint32(8, segments, true);
  ids.forEach((id, k) => dv.setUint32(12 + 4 * k, id, true));
  return b;
}

function chainParse(magic: number, c: number, segments: number | null, v: Uint8Array): { segments: number; ids: number[] } {
  const dv = new DataView(v.buffer, v.byteOffset, v.byteLength);
  const what = magic === CHAIN_MAGIC ? `chain key ${c}` : `chain key ${c} archive ${segments}`;
  if (v.length < 12 || (v.length - 12) % 4 !== 0 || dv.getUint32(0, true) !== magic) throw new Violation(`${what}: foreign value (${v.length} B)`);
  if (dv.getUint32(4, true) !== c) throw new Violation(`${what}: holds key ${dv.getUint32(4, true)}'s value`);
  const seg = dv.getUint32(8, true);
  if (segments !== null && seg !== segments) throw new Violation(`${what}: says archive ${seg}`);
  const ids: number[] = [];
  for (let k = 12; k < v.length; k += 4) ids.push(dv.getUint32(k, true));
  return { segments: seg, ids };
}

/* ------------------------------------------------------------------ the run */

/** The operations of a worker and their weights (per 1000). */
const OP_WEIGHTS = [
  ['transfer', 380],
  ['transfer to several', 70],
  ['close or reopen', 30],
  ['aborted transfer', 30],
  ['filler', 90],
  ['chain append', 200],
  ['bank scan', 50],
  ['bank reverse scan', 20],
  ['bank gets', 20],
  ['chain read', 70],
  ['point reads', 38],
  ['fsck', 2],
  ['flush', 3],
] as const;
type OpKind = (typeof OP_WEIGHTS)[number][0];
const OP_WEIGHT_TOTAL = OP_WEIGHTS.reduce((a, [, w]) => a + w, 0);

function opPick(x: number): OpKind {
  for (const [kind, w] of OP_WEIGHTS) {
    if (x < w) return kind;
    x -= w;
  }
  return OP_WEIGHTS[0][0];
}

/**
 * A read-only callback whose checks throw Violation returns it instead: the
 * commit then validates its reads, so only what a committed attempt saw is
 * reported (an attempt that restarts may have seen anything: not promised).
 */
function readOnlyChecked<T>(fn: (tx: Transaction) => Promise<T>): (tx: Transaction) => Promise<T | Violation> {
  return async (tx) => {
    try {
      return await fn(tx);
    } catch (e) {
      if (e instanceof Violation) return e;
      throw e;
    }
  };
}

/** Thrown by a bank scan's callback that saw a total other than the invariant. */
class TotalSeen extends Error {
  constructor(readonly total: bigint) {
    super(`total ${total}`);
  }
}

class PlannedAbort extends Error {
  constructor() {
    super('planned abort');
  }
}

interface BankReadResult {
  total: bigint;
  present: number;
}

/** What a bank transaction does to the model if it landed. */
interface BankEffect {
  what: string;
  deltas: Array<[number, bigint]>;
  close?: number;
  reopen?: number;
}

/** The state the checks compare the store with. */
interface Model {
  delta: bigint[];
  closes: number[];
  reopens: number[];
  chainAcked: Set<number>;
}

/** A writing transaction's fate: committed with its value, or rejected with ERR_IO (outcome unknown). */
type WriteOutcome<T> = { ok: true; value: T } | { ok: false; notCommitted?: true };

class Run {
  private store!: Store;
  private readonly rng: Prng;
  private readonly file: string;
  private readonly dir: string;
  private readonly r: StressResult;
  private readonly violations: string[] = [];
  private readonly total: bigint;
  /** Per account: sum of acknowledged deltas; closes and reopens acknowledged. */
  private readonly delta: bigint[];
  private readonly closes: number[];
  private readonly reopens: number[];
  /** Per chain transaction id: its keys, and its fate. */
  private readonly chainPlan = new Map<number, number[]>();
  private readonly chainAcked = new Set<number>();
  private readonly chainAborted = new Set<number>();
  private chainIdNext = 1;
  /** Bank transaction ids (written into the values), and which transaction replaced each (account, writer) value. */
  private bankIdNext = 1;
  private readonly overwrites = new Map<string, { what: string; ackAt: number }>();
  private readonly t0 = performance.now();
  private lastProgress = performance.now();
  private stopAt = 0;
  private stopped = false;
  private opens = 0;
  private delayDevice: DelayDevice | null = null;
  /** Fault mode: the device that fails, whether it fails now, and the operation counts bounding that. */
  private faultDevice: FaultDevice | null = null;
  /** The store open now is on the FaultDevice: ERR_IO is allowed once a failure was injected. */
  private faultsLive = false;
  private faultsArmed = false;
  /** With reads alone failing, the store refused a write (a violation, recorded once). */
  private readsStoppedWrites = false;
  private faultStartOp = Number.POSITIVE_INFINITY;
  private faultEndOp = Number.POSITIVE_INFINITY;
  private opsDone = 0;
  private readonly faultRng: Prng;
  /** Fault mode: acknowledged bank transactions that wrote (their markers must be there), and transactions of unknown outcome. */
  private readonly bankAcked = new Set<number>();
  private readonly bankUnknown = new Map<number, BankEffect>();
  private readonly chainUnknown = new Set<number>();
  /** Marker keys are written (fault mode, closes under load). */
  private readonly markers: boolean;
  /** Closes under load: the operation counts they start at, how many started (each op notes it at its start), the one under way. */
  private readonly closeAtOps: number[] = [];
  private closeGen = 0;
  private closing: Promise<void> | null = null;
  /** Bank transactions that rejected with ERR_CLOSED or an ERR_IO saying committed false: they must not have landed. */
  private readonly bankNotCommitted = new Set<number>();
  /** Failures injected by FaultDevices replaced since (a reopen under load makes a new one). */
  private injectedPast = 0;

  constructor(private readonly o: StressOpts) {
    this.rng = new Prng(o.seed);
    this.faultRng = new Prng((o.seed ^ 0xfa017) >>> 0);
    this.markers = !!o.faults || !!o.closes;
    // in the first 60% of the operations (a run cut short by --seconds still meets them, mostly)
    for (let i = 0; i < (o.closes ?? 0); i++) this.closeAtOps.push(1 + this.faultRng.int(Math.ceil(o.workers * o.opsPerWorker * 0.6)));
    this.closeAtOps.sort((a, b) => b - a);
    if (o.faults) {
      const total = o.workers * o.opsPerWorker;
      this.faultStartOp = Math.floor(total * (0.1 + 0.5 * this.faultRng.int(1000) / 1000));
      this.faultEndOp = this.faultStartOp + o.faults.ops;
    }
    this.dir = o.device ? '' : mkdtempSync(path.join(o.dir ?? tmpdir(), 'sixtree-stress-'));
    this.file = o.device ?? path.join(this.dir, 'store.img');
    this.total = BigInt(o.accounts) * BALANCE_INITIAL;
    this.delta = Array.from({ length: o.accounts }, () => 0n);
    this.closes = new Array<number>(o.accounts).fill(0);
    this.reopens = new Array<number>(o.accounts).fill(0);
    this.r = {
      seed: o.seed,
      violations: this.violations,
      commits: 0,
      aborts: 0,
      transfers: 0,
      closes: 0,
      reopens: 0,
      fillerTxns: 0,
      chainAppends: 0,
      readers: 0,
      readersTooBig: 0,
      attemptsInconsistent: 0,
      fscks: 0,
      flushes: 0,
      restarts: 0,
      splits: 0,
      merges: 0,
      evictions: 0,
      ioWaits: 0,
      faultsInjected: 0,
      ioErrors: 0,
      ioErrorsFirst: [],
      unknownOutcomes: 0,
      unknownLanded: 0,
      secondOps: 0,
      closesUnderLoad: 0,
      closedErrors: 0,
      depthBank: 0,
      ms: 0,
      dump: '',
    };
  }

  private violation(msg: string): void {
    this.violations.push(msg);
    this.stopped = true;
  }

  async run(): Promise<StressResult> {
    const t0 = performance.now();
    const o = this.o;
    try {
      await Store.format(this.file, {
        // a block device: all of it, whatever an earlier run left there
        ...(o.device ? { force: true } : { size: o.deviceBytes }),
        nodeSize: o.nodeSizeBytes,
        blockSize: o.blockSizeBytes,
        btrees: [{ name: BANK }, { name: CHAIN }],
      });
      this.store = await this.open(o.cacheBytes, !!o.faults);
      await this.populate();
      o.log?.(`seed ${o.seed}: populated, ${o.workers} workers start`);
      if (!(await this.workload(0))) return this.finish(t0, false);
      // a close under load the last operations started
      while (this.closing) await this.closing;
      this.collectStats();
      o.log?.(`seed ${o.seed}: workers done, checking`);
      // checked even after a violation: whether the store itself is damaged
      await this.checkAll('at the end', true);
      await this.closeAndReopen(o.reopenCacheBytes);
      await this.checkAll('after close and reopen', false);
      if (this.faultDevice) {
        this.r.faultsInjected = this.injectedNow();
        this.r.unknownOutcomes = this.bankUnknown.size + this.chainUnknown.size;
      }
      if (this.r.faultsInjected > 0 && !this.stopped) {
        // the outcomes the reopened store holds are the model from here; the workers run again on it
        this.r.unknownLanded = this.adoptLanded(await this.markersRead());
        o.log?.(`seed ${o.seed}: ${this.r.faultsInjected} device failures, ${this.r.unknownOutcomes} outcomes unknown (${this.r.unknownLanded} landed); the workers run again`);
        const before = this.opsDone;
        if (!(await this.workload(1))) return this.finish(t0, false);
        this.r.secondOps = this.opsDone - before;
        await this.checkAll('after the second workload', false);
        await this.closeAndReopen(o.cacheBytes);
        await this.checkAll('after the second workload and a reopen', false);
      }
    } catch (e) {
      this.violation(`unexpected error: ${errText(e)}`);
    }
    if (this.violations.length && this.store?.isOpen()) this.r.dump = this.dumpText();
    return this.finish(t0, true);
  }

  /**
   * The store on its file, through a DelayDevice when the run has I/O waits
   * (their PRNG drawn from the seed, one per open), and through a FaultDevice
   * when `failing` (it fails only while the fault window is open).
   */
  private async open(cacheSize: number, failing = false): Promise<Store> {
    const d = this.o.ioDelay;
    if (!d && !failing) return Store.open(this.file, { cacheSize });
    let dev: Device = BlockDevice.open(this.file);
    if (d) {
      const rng = new Prng((this.o.seed * 31337 + ++this.opens) >>> 0);
      dev = this.delayDevice = new DelayDevice(dev, { share: d.share, maxMs: d.maxMs, random: () => rng.u32() / 0x1_0000_0000 });
    }
    if (failing) {
      const f = this.o.faults!;
      const fail = () => this.faultsArmed && this.faultRng.u32() / 0x1_0000_0000 < f.rate;
      const kinds = f.kinds ?? ['read', 'write', 'flush'];
      let rules: FaultRules = {
        ...(kinds.includes('read') ? { failRead: fail } : {}),
        ...(kinds.includes('write') ? { failWrite: fail } : {}),
        ...(kinds.includes('flush') ? { failFlush: fail } : {}),
      };
      if (f.spareJournal) {
        const l = layoutFromSuperblock(await readSuperblock(dev));
        const inJournal = (off: number) => off >= l.journalOffsetBytes && off < l.journalOffsetBytes + l.journalBytes;
        rules = {
          ...(kinds.includes('read') ? { failRead: (off: number) => !inJournal(off) && fail() } : {}),
          ...(kinds.includes('write') ? { failWrite: (off: number) => !inJournal(off) && fail() } : {}),
        };
      }
      this.injectedPast = this.injectedNow();
      dev = this.faultDevice = await FaultDevice.wrap(dev, rules);
    }
    this.faultsLive = failing;
    try {
      return await Store.openDevice(dev, { cacheSize });
    } catch (e) {
      // a device handed to openDevice stays the caller's: release it (and its lock) for the next open
      await dev.close().catch(() => {});
      throw e;
    }
  }

  /** Close (with faults injected, ERR_IO is allowed: the store may have stopped) and open again without faults. */
  private async closeAndReopen(cacheSize: number): Promise<void> {
    try {
      await this.store.close();
    } catch (e) {
      if (!(this.ioAllowed() && isIoError(e))) throw e;
      this.ioErrorSeen(e);
    }
    this.store = await this.open(cacheSize);
  }

  /** The workers, W of them (pass 0: the first workload; 1: the second, after faults): false on a hang (recorded). */
  private async workload(pass: number): Promise<boolean> {
    const o = this.o;
    this.stopAt = performance.now() + o.secondsMax * 1000;
    this.lastProgress = performance.now();
    const workers = Array.from({ length: o.workers }, (_, w) => this.worker(w, new Prng((o.seed * 7919 + w * 104729 + pass * 0x9e3779b1) >>> 0)));
    const hang = await this.watchProgress(Promise.all(workers));
    // a workload cut short by its time limit ends the fault window too
    this.faultEndOp = Math.min(this.faultEndOp, this.opsDone);
    this.faultsArmed = false;
    if (!hang) return true;
    this.violation(hang);
    this.r.dump = this.dumpText();
    return false;
  }

  private ioErrorSeen(e: unknown): void {
    this.r.ioErrors++;
    const msg = e instanceof Error ? e.message : String(e);
    if (this.r.ioErrorsFirst.length < 3) this.r.ioErrorsFirst.push(msg);
    // only a failed write or flush stops the store's writes (docs/api.md, ERR_IO): never a failed read
    const kinds = this.o.faults?.kinds;
    if (kinds && !kinds.includes('write') && !kinds.includes('flush') && msg.includes('refuses writes') && !this.readsStoppedWrites) {
      this.readsStoppedWrites = true;
      this.violation(`only reads failed, yet the store stopped taking writes: ${msg}`);
    }
  }

  /** May an operation reject with ERR_IO? Only on the failing store, once a failure was injected (since `before`, for a read). */
  private ioAllowed(before = 0): boolean {
    return this.faultsLive && this.injectedNow() > before;
  }

  private injectedNow(): number {
    const i = this.faultDevice?.injected;
    return this.injectedPast + (i ? i.read + i.write + i.flush : 0);
  }

  /** An operation finished (or failed): the fault window opens and closes at operation counts. */
  private opDone(): void {
    this.opsDone++;
    this.faultsArmed = this.opsDone >= this.faultStartOp && this.opsDone < this.faultEndOp;
    if (this.closeAtOps.length && this.opsDone >= this.closeAtOps[this.closeAtOps.length - 1]! && !this.closing && !this.stopped) {
      this.closeAtOps.pop();
      this.closing = this.closeUnderLoad().finally(() => (this.closing = null));
    }
  }

  /**
   * Close the store while the workers run, then open it again (with the
   * same faults, if any) for them to go on with: close must resolve (or,
   * once failures were injected, reject with ERR_IO).
   */
  private async closeUnderLoad(): Promise<void> {
    const old = this.store;
    this.closeGen++;
    try {
      await old.close();
    } catch (e) {
      if (!(this.ioAllowed() && isIoError(e))) {
        this.violation(`close under load (${this.r.closesUnderLoad + 1}): ${errText(e)}`);
        return;
      }
      this.ioErrorSeen(e);
    }
    this.r.closesUnderLoad++;
    try {
      this.store = await this.open(this.o.cacheBytes, this.faultsLive);
    } catch (e) {
      // recovery on a failing device may fail with ERR_IO: open again on the device as it is, without faults
      if (!(this.ioAllowed() && isIoError(e))) {
        this.violation(`open after a close under load: ${errText(e)}`);
        return;
      }
      this.ioErrorSeen(e);
      try {
        this.store = await this.open(this.o.cacheBytes);
      } catch (e2) {
        this.violation(`open after a close under load, again after ERR_IO (${errText(e)}): ${errText(e2)}`);
      }
    }
  }

  /** A call that began in close generation `gen` met ERR_CLOSED: allowed if a close under load started since, or is under way (the old store is the current one until the new one is open). */
  private closedAllowed(e: unknown, gen: number): boolean {
    if (!(e instanceof SixtreeError && e.code === 'ERR_CLOSED' && (this.closeGen !== gen || this.closing !== null))) return false;
    this.r.closedErrors++;
    return true;
  }

  /**
   * transact(fn) for a transaction that writes. With failures injected, a
   * rejection with ERR_IO is allowed: the outcome is unknown ({ ok: false }).
   * On a store a close under load began closing, ERR_CLOSED is allowed: it
   * did not land ({ ok: false, notCommitted: true }), nor did one whose
   * ERR_IO says details.committed false.
   */
  private async transactWrite<T>(fn: (tx: Transaction) => Promise<T> | T): Promise<WriteOutcome<T>> {
    const gen = this.closeGen;
    try {
      return { ok: true, value: await this.store.transact(fn) };
    } catch (e) {
      if (this.closedAllowed(e, gen)) return { ok: false, notCommitted: true };
      if (!(this.ioAllowed() && isIoError(e))) throw e;
      this.ioErrorSeen(e);
      // ERR_IO says whether the write was applied (details.committed): false is a promise that it did not land
      return (e as SixtreeError).details.committed === false ? { ok: false, notCommitted: true } : { ok: false };
    }
  }

  /**
   * A read-only operation: ERR_IO is allowed only if a failure was injected
   * while it ran (or, for one that `flushes` the journal, at all). Returns
   * false when it failed that way (nothing to check).
   */
  private async readOp(fn: () => Promise<void>, flushes = false): Promise<boolean> {
    const before = flushes ? 0 : this.injectedNow();
    const gen = this.closeGen;
    try {
      await fn();
      return true;
    } catch (e) {
      if (this.closedAllowed(e, gen)) return false;
      if (!(this.ioAllowed(before) && isIoError(e))) throw e;
      this.ioErrorSeen(e);
      return false;
    }
  }

  private async finish(t0: number, close: boolean): Promise<StressResult> {
    if (close && this.store?.isOpen()) {
      try {
        await this.store.close();
      } catch (e) {
        this.violation(`close: ${errText(e)}`);
      }
    }
    this.r.ms = performance.now() - t0;
    // a hung store cannot be closed: its file stays (the process exits soon)
    if (close && this.dir) rmSync(this.dir, { recursive: true, force: true });
    return this.r;
  }

  private dumpText(): string {
    try {
      return `${this.store.toText()}\nstats: ${JSON.stringify(this.store.stats())}`;
    } catch (e) {
      return `(no dump: ${errText(e)})`;
    }
  }

  private collectStats(): void {
    const s = this.store.stats() as unknown as Record<string, Record<string, unknown>>;
    const num = (o: unknown, k: string) => (o && typeof o === 'object' && typeof (o as Record<string, unknown>)[k] === 'number' ? ((o as Record<string, unknown>)[k] as number) : 0);
    this.r.restarts = num(s.transactions, 'restarts');
    this.r.splits = num(s.interior, 'splits');
    this.r.merges = num(s.interior, 'merges');
    this.r.evictions = num(s.cache, 'evictions');
    const c = this.delayDevice?.counters;
    if (c) this.r.ioWaits = c.hops + c.turns + c.timers;
  }

  /** Resolves with a hang message if no operation finished for PROGRESS_TIMEOUT_MS, else null when p settles. */
  private async watchProgress(p: Promise<unknown>): Promise<string | null> {
    let timer: NodeJS.Timeout | undefined;
    const hang = new Promise<string>((resolve) => {
      const tick = () => {
        const idle = performance.now() - this.lastProgress;
        if (idle > PROGRESS_TIMEOUT_MS) resolve(`hang: no operation finished for ${(idle / 1000).toFixed(0)} s`);
        else timer = setTimeout(tick, 1000);
      };
      timer = setTimeout(tick, 1000);
    });
    try {
      return await Promise.race([p.then(() => null), hang]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async populate(): Promise<void> {
    const o = this.o;
    const batch = 64;
    for (let i = 0; i < o.accounts; i += batch) {
      await this.store.transact((tx) => {
        for (let k = i; k < Math.min(o.accounts, i + batch); k++) tx.put(BANK, accountPos(k), accountValue(k, BALANCE_INITIAL, this.rng.int(o.accountPadMax + 1), 0));
      });
    }
    for (let c = 0; c < o.chains; c += batch) {
      await this.store.transact((tx) => {
        for (let k = c; k < Math.min(o.chains, c + batch); k++) tx.put(CHAIN, chainPos(k), chainValue(CHAIN_MAGIC, k, 0, []));
      });
    }
  }

  /* ---------------------------------------------------------------- workers */

  private async worker(w: number, rng: Prng): Promise<void> {
    for (let op = 0; op < this.o.opsPerWorker && !this.stopped && performance.now() < this.stopAt; op++) {
      const kind = opPick(rng.int(OP_WEIGHT_TOTAL));
      // during a close under load half the operations wait for the reopened store, half meet the closing one
      if (this.closing && rng.bool()) await this.closing;
      try {
        switch (kind) {
          case 'transfer':
            await this.transfer(rng, 2);
            break;
          case 'transfer to several':
            await this.transfer(rng, rng.range(3, 4));
            break;
          case 'close or reopen':
            await this.closeOrReopen(rng);
            break;
          case 'aborted transfer':
            await this.abortTransfer(rng);
            break;
          case 'filler':
            await this.filler(rng);
            break;
          case 'chain append':
            await this.chainAppend(rng);
            break;
          case 'bank scan':
            await this.readOp(() => this.bankReadScan(rng, false));
            break;
          case 'bank reverse scan':
            await this.readOp(() => this.bankReadScan(rng, true));
            break;
          case 'bank gets':
            await this.readOp(() => this.bankReadGets(rng));
            break;
          case 'chain read':
            await this.readOp(() => this.chainRead(rng));
            break;
          case 'point reads':
            await this.readOp(() => this.pointReads(rng));
            break;
          case 'fsck':
            // fsck flushes the journal first: once the journal stopped, it rejects with ERR_IO as a write does
            await this.readOp(() => this.fsckNow(), true);
            break;
          case 'flush':
            // every dirty node written while the others keep writing: it must end (and, with faults, may reject with ERR_IO)
            await this.readOp(() => this.flushNow(), true);
            break;
        }
      } catch (e) {
        if (e instanceof Violation) this.violation(`worker ${w} op ${op} (${kind}): ${e.message}`);
        else this.violation(`worker ${w} op ${op} (${kind}): unexpected error: ${errText(e)}`);
        return;
      }
      this.opDone();
      this.lastProgress = performance.now();
    }
  }

  private async getAccount(tx: Transaction, i: number, intent: boolean): Promise<Account | null> {
    const v = await tx.get(BANK, accountPos(i), intent ? { intent: true } : undefined);
    return v ? accountParse(i, v) : null;
  }

  private pickDistinct(rng: Prng, n: number, count: number): number[] {
    const out: number[] = [];
    while (out.length < Math.min(count, n)) {
      const k = rng.int(n);
      if (!out.includes(k)) out.push(k);
    }
    return out;
  }

  /** Move planned amounts from the first account to the others (capped by its balance). */
  private async transfer(rng: Prng, n: number): Promise<void> {
    const ids = this.pickDistinct(rng, this.o.accounts, n);
    const want = ids.slice(1).map(() => BigInt(rng.range(1, 300)));
    const intent = rng.bool(this.o.intentProbability);
    const padNew = rng.bool(0.2) ? rng.int(this.o.accountPadMax + 1) : -1;
    const yieldBetween = rng.bool(0.3);
    const id = this.bankIdNext++;
    let attemptAt = 0;
    let last: { amounts: bigint[] } | null = null;
    const out = await this.transactWrite(async (tx) => {
      attemptAt = performance.now();
      last = null;
      const accts = [];
      for (const i of ids) {
        accts.push(await this.getAccount(tx, i, intent));
        if (yieldBetween) await new Promise((r) => setImmediate(r));
      }
      if (accts.some((a) => a === null)) return null;
      let from = accts[0]!.balance;
      const amounts: bigint[] = [];
      for (let k = 1; k < ids.length; k++) {
        const amt = want[k - 1]! <= from ? want[k - 1]! : from;
        from -= amt;
        amounts.push(amt);
      }
      tx.put(BANK, accountPos(ids[0]!), accountValue(ids[0]!, from, padNew >= 0 ? padNew : accts[0]!.pad, id));
      for (let k = 1; k < ids.length; k++) tx.put(BANK, accountPos(ids[k]!), accountValue(ids[k]!, accts[k]!.balance + amounts[k - 1]!, accts[k]!.pad, id));
      if (this.markers) tx.put(CHAIN, markerPos(MARKER_BANK, id), markerValue(MARKER_BANK, id));
      last = { amounts };
      return { amounts, readFrom: accts.map((a) => a!.writer) };
    });
    const transferEffect = (amounts: bigint[]): BankEffect => ({
      what: `transfer ${ids.join(' -> ')}`,
      deltas: ids.slice(1).flatMap((to, k): Array<[number, bigint]> => [[ids[0]!, -amounts[k]!], [to, amounts[k]!]]),
    });
    if (!out.ok) {
      const l = last as { amounts: bigint[] } | null;
      if (out.notCommitted) this.bankNotCommitted.add(id);
      else if (l) this.bankUnknown.set(id, transferEffect(l.amounts));
      return;
    }
    const moved = out.value;
    this.r.commits++;
    if (!moved) return;
    if (this.markers) this.bankAcked.add(id);
    this.r.transfers++;
    this.overwrote(id, `transfer ${ids.join(' -> ')}`, ids, moved.readFrom, attemptAt);
    for (let k = 1; k < ids.length; k++) {
      this.delta[ids[0]!] -= moved.amounts[k - 1]!;
      this.delta[ids[k]!] += moved.amounts[k - 1]!;
    }
  }

  private async closeOrReopen(rng: Prng): Promise<void> {
    let [a, b] = this.pickDistinct(rng, this.o.accounts, 2) as [number, number];
    // half the time an account closed by now (if any): reopens happen at every size
    const closed = this.closedAccounts();
    if (closed.length && rng.bool()) {
      a = rng.pick(closed);
      if (b === a) b = (a + 1) % this.o.accounts;
    }
    const intent = rng.bool(this.o.intentProbability);
    const pad = rng.int(this.o.accountPadMax + 1);
    const id = this.bankIdNext++;
    let attemptAt = 0;
    let last: BankEffect | null = null;
    const marker = (tx: Transaction) => {
      if (this.markers) tx.put(CHAIN, markerPos(MARKER_BANK, id), markerValue(MARKER_BANK, id));
    };
    const out = await this.transactWrite(async (tx) => {
      attemptAt = performance.now();
      last = null;
      const va = await this.getAccount(tx, a, intent);
      if (!va) {
        tx.put(BANK, accountPos(a), accountValue(a, 0n, pad, id));
        marker(tx);
        last = { what: `reopen ${a}`, deltas: [], reopen: a };
        return { kind: 'reopen' as const, moved: 0n, readFrom: [] };
      }
      const vb = await this.getAccount(tx, b, intent);
      if (!vb) return null;
      tx.put(BANK, accountPos(b), accountValue(b, vb.balance + va.balance, vb.pad, id));
      tx.del(BANK, accountPos(a));
      marker(tx);
      last = { what: `close ${a} into ${b}`, deltas: [[a, -va.balance], [b, va.balance]], close: a };
      return { kind: 'close' as const, moved: va.balance, readFrom: [va.writer, vb.writer] };
    });
    if (!out.ok) {
      if (out.notCommitted) this.bankNotCommitted.add(id);
      else if (last) this.bankUnknown.set(id, last);
      return;
    }
    const done = out.value;
    this.r.commits++;
    if (!done) return;
    if (this.markers) this.bankAcked.add(id);
    if (done.kind === 'close') this.overwrote(id, `close ${a} into ${b}`, [a, b], done.readFrom, attemptAt);
    if (done.kind === 'reopen') {
      this.reopens[a]!++;
      this.r.reopens++;
    } else {
      this.closes[a]!++;
      this.r.closes++;
      this.delta[a] -= done.moved;
      this.delta[b] += done.moved;
    }
  }

  /**
   * Acknowledged transaction `id` read the values of `accts` written by
   * `readFrom` and replaced them: no other acknowledged transaction may have
   * replaced the same value of an account (that is a lost update, whatever
   * the balances say).
   */
  private overwrote(id: number, what: string, accts: readonly number[], readFrom: readonly number[], attemptAt: number): void {
    const now = performance.now();
    accts.forEach((a, k) => {
      const key = `${a}:${readFrom[k]}`;
      const other = this.overwrites.get(key);
      if (other !== undefined) {
        const ms = (t: number) => `${(t - this.t0).toFixed(1)} ms`;
        throw new Violation(
          `lost update: account ${a}'s value written by transaction ${readFrom[k]} was read and replaced by both transaction ${other.what} ` +
            `(acknowledged at ${ms(other.ackAt)}) and transaction ${id} (${what}; its committed attempt began at ${ms(attemptAt)}, acknowledged at ${ms(now)}), each acknowledged` +
            (attemptAt > other.ackAt ? ': the second began after the first was acknowledged, so it read a value the tree should no longer have held (a lost write or a stale node)' : ': they overlapped (the read check at commit missed a change)'),
        );
      }
      this.overwrites.set(key, { what: `${id} (${what})`, ackAt: now });
    });
  }

  private closedAccounts(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.o.accounts; i++) if (this.closes[i]! > this.reopens[i]!) out.push(i);
    return out;
  }

  /** A transfer that writes both accounts, then throws: transact must reject with that error and commit nothing. */
  private async abortTransfer(rng: Prng): Promise<void> {
    const [a, b] = this.pickDistinct(rng, this.o.accounts, 2) as [number, number];
    const amt = BigInt(rng.range(1, 1_000_000));
    const late = rng.bool();
    try {
      // ERR_IO / ERR_CLOSED as any write (transactWrite): nothing to record, it never commits
      const out = await this.transactWrite(async (tx) => {
        const va = await this.getAccount(tx, a, false);
        const vb = await this.getAccount(tx, b, false);
        tx.put(BANK, accountPos(a), accountValue(a, (va?.balance ?? 0n) - amt, 0, 0xffffffff));
        tx.put(BANK, accountPos(b), accountValue(b, (vb?.balance ?? 0n) + amt * 2n, 0, 0xffffffff));
        if (late) await new Promise((r) => setImmediate(r));
        throw new PlannedAbort();
      });
      if (!out.ok) return;
    } catch (e) {
      if (e instanceof PlannedAbort) {
        this.r.aborts++;
        return;
      }
      throw e;
    }
    throw new Violation(`abort transfer ${a} -> ${b}: transact() resolved although the callback threw`);
  }

  /** Insert a run of filler keys between two accounts, or delete the filler of several gaps (merges). */
  private async filler(rng: Prng): Promise<void> {
    const btree = rng.bool(0.7) ? BANK : CHAIN;
    const slots = btree === BANK ? this.o.accounts : this.o.chains;
    const gap = rng.int(slots);
    const wipe = rng.bool(0.4);
    const span = rng.range(1, 8);
    const count = rng.range(1, 48);
    const first = rng.range(1, STRIDE - count);
    const sizes = Array.from({ length: count }, () => rng.range(8, this.o.fillerBytesMax));
    const out = await this.transactWrite((tx) => {
      if (wipe) {
        for (let g = gap; g < Math.min(slots, gap + span); g++) tx.delRange(btree, fillerPos(g, 1), fillerPos(g + 1, 0));
      } else {
        for (let j = 0; j < count; j++) {
          const p = fillerPos(gap, first + j);
          tx.put(btree, p, fillerValue(Number(p.offset), sizes[j]!));
        }
      }
    });
    if (!out.ok) return;
    this.r.commits++;
    this.r.fillerTxns++;
  }

  /** Append this transaction's id to 2-6 chain keys (archiving full lists); some abort after writing. */
  private async chainAppend(rng: Prng): Promise<void> {
    const id = this.chainIdNext++;
    const keys = this.pickDistinct(rng, this.o.chains, rng.range(2, 6));
    const intent = rng.bool(this.o.intentProbability);
    const abort = rng.bool(0.05);
    const yieldBetween = rng.bool(0.3);
    this.chainPlan.set(id, keys);
    let out: WriteOutcome<void>;
    try {
      out = await this.transactWrite(async (tx) => {
        for (const c of keys) {
          const v = await tx.get(CHAIN, chainPos(c), intent ? { intent: true } : undefined);
          if (!v) throw new Violation(`chain key ${c} is missing (read in chain transaction ${id})`);
          let { segments, ids } = chainParse(CHAIN_MAGIC, c, null, v);
          if (ids.length >= this.o.chainEntriesMax) {
            tx.put(CHAIN, archivePos(c, segments), chainValue(ARCHIVE_MAGIC, c, segments, ids));
            segments++;
            ids = [];
          }
          ids.push(id);
          tx.put(CHAIN, chainPos(c), chainValue(CHAIN_MAGIC, c, segments, ids));
          if (yieldBetween) await new Promise((r) => setImmediate(r));
        }
        if (this.markers) tx.put(CHAIN, markerPos(MARKER_CHAIN, id), markerValue(MARKER_CHAIN, id));
        if (abort) throw new PlannedAbort();
      });
    } catch (e) {
      if (e instanceof PlannedAbort) {
        this.chainAborted.add(id);
        this.r.aborts++;
        return;
      }
      throw e;
    }
    if (!out.ok) {
      // a planned abort never commits, nor does one the store says it did not; any other append may have landed
      if (abort || out.notCommitted) this.chainAborted.add(id);
      else this.chainUnknown.add(id);
      return;
    }
    if (abort) throw new Violation(`chain transaction ${id}: transact() resolved although the callback threw`);
    this.chainAcked.add(id);
    this.r.commits++;
    this.r.chainAppends++;
  }

  /** Every id of chain key c, oldest first (archives, then the key), read in tx. */
  private async chainEntries(tx: Transaction, c: number): Promise<number[]> {
    const v = await tx.get(CHAIN, chainPos(c));
    if (!v) throw new Violation(`chain key ${c} is missing`);
    const head = chainParse(CHAIN_MAGIC, c, null, v);
    const out: number[] = [];
    let seg = 0;
    for await (const e of tx.iter(CHAIN, archivePos(c, 0), { end: archivePos(c, SEGMENTS_MAX) })) {
      if (Number(e.pos.offset) !== c * SEGMENTS_MAX + seg) throw new Violation(`chain key ${c}: archive ${seg} missing (found ${Number(e.pos.offset) - c * SEGMENTS_MAX})`);
      out.push(...chainParse(ARCHIVE_MAGIC, c, seg, e.value).ids);
      seg++;
    }
    if (seg !== head.segments) throw new Violation(`chain key ${c}: ${seg} archive keys, the key says ${head.segments}`);
    out.push(...head.ids);
    return out;
  }

  /** Read every entry of 2-4 chain keys in one transaction: each transaction seen is seen on every read key it appended to. */
  private async chainRead(rng: Prng): Promise<void> {
    const keys = this.pickDistinct(rng, this.o.chains, rng.range(2, 4));
    const seen = await this.store.transact(
      readOnlyChecked(async (tx) => {
        const out = new Map<number, number[]>();
        for (const c of keys) out.set(c, await this.chainEntries(tx, c));
        return out;
      }),
    );
    this.r.readers++;
    if (seen instanceof Violation) throw seen;
    const sets = new Map([...seen].map(([c, ids]) => [c, new Set(ids)]));
    for (const [c, ids] of seen) {
      for (const id of ids) {
        if (this.chainAborted.has(id)) throw new Violation(`chain reader: key ${c} holds aborted transaction ${id} (dirty write)`);
        const plan = this.chainPlan.get(id);
        if (!plan) throw new Violation(`chain reader: key ${c} holds id ${id}, never planned`);
        if (!plan.includes(c)) throw new Violation(`chain reader: key ${c} holds transaction ${id}, which appended to keys [${plan.join(',')}] only`);
        for (const d of plan) {
          if (d !== c && sets.has(d) && !sets.get(d)!.has(id)) {
            throw new Violation(`chain reader: transaction ${id} (keys [${plan.join(',')}]) is visible on key ${c} but not on key ${d} in one transaction (not atomic / not serializable)`);
          }
        }
      }
    }
  }

  /** All accounts in one transaction by iterator (forward or reverse): the total is invariant. */
  private async bankReadScan(rng: Prng, reverse: boolean): Promise<void> {
    const slowly = rng.bool(0.2);
    const prefetch = rng.bool();
    // half the scans throw on a wrong total from inside the callback: the
    // error may reach the caller only if the attempt's reads still held
    // (docs/api.md, transact()), which they cannot have
    const throwing = rng.bool();
    const got = await this.store.transact(readOnlyChecked(async (tx) => {
      const it = tx.iter(BANK, pos(1, 0), { end: pos(2, 0), prefetch });
      const res: BankReadResult = { total: 0n, present: 0 };
      let n = 0;
      const take = (e: { pos: { offset: bigint; inode: bigint }; value: Uint8Array }) => {
        if (e.pos.inode !== 1n) throw new Violation(`bank scan: key ${e.pos.inode}:${e.pos.offset} outside the bank's inode`);
        const off = Number(e.pos.offset);
        if (off % STRIDE === 0) {
          res.total += accountParse(off / STRIDE, e.value).balance;
          res.present++;
        } else fillerCheck(off, e.value);
      };
      if (!reverse) {
        for (let e = await it.peek(); e; e = await it.next()) {
          take(e);
          if (slowly && ++n % 64 === 0) await new Promise((r) => setImmediate(r));
        }
      } else {
        it.setPos(pos(1, this.o.accounts * STRIDE));
        for (let e = await it.peekPrev(); e && e.pos.inode === 1n; e = await it.prev()) {
          take(e);
          if (slowly && ++n % 64 === 0) await new Promise((r) => setImmediate(r));
        }
      }
      if (res.total !== this.total) {
        this.r.attemptsInconsistent++;
        if (throwing) throw new TotalSeen(res.total);
      }
      return res;
    })).catch((e: unknown) => {
      if (e instanceof TotalSeen) {
        throw new Violation(`bank ${reverse ? 'reverse' : 'forward'} scan: the callback threw on a total of ${e.total} (invariant ${this.total}) and transact() rejected with it: the attempt's reads cannot have held`);
      }
      throw e;
    });
    this.r.readers++;
    if (got instanceof Violation) throw got;
    if (got.total !== this.total) {
      throw new Violation(`bank ${reverse ? 'reverse' : 'forward'} scan: total ${got.total} over ${got.present} accounts in one transaction, invariant ${this.total} (a transfer seen half done, lost or doubled)`);
    }
  }

  /** All accounts in one transaction by tx.get: the total is invariant (over the path limit: counted, not checked). */
  private async bankReadGets(rng: Prng): Promise<void> {
    const order = rng.bool() ? 'up' : 'random';
    const idx = Array.from({ length: this.o.accounts }, (_, i) => i);
    if (order === 'random') {
      for (let i = idx.length - 1; i > 0; i--) {
        const j = rng.int(i + 1);
        [idx[i], idx[j]] = [idx[j]!, idx[i]!];
      }
    }
    let got: BankReadResult | Violation;
    try {
      got = await this.store.transact(readOnlyChecked(async (tx) => {
        const res: BankReadResult = { total: 0n, present: 0 };
        for (const i of idx) {
          const a = await this.getAccount(tx, i, false);
          if (a) {
            res.total += a.balance;
            res.present++;
          }
        }
        if (res.total !== this.total) this.r.attemptsInconsistent++;
        return res;
      }));
    } catch (e) {
      if (e instanceof SixtreeError && e.code === 'ERR_INVALID_ARG' && /split it into smaller transactions/.test(e.message)) {
        this.r.readersTooBig++;
        return;
      }
      throw e;
    }
    this.r.readers++;
    if (got instanceof Violation) throw got;
    if (got.total !== this.total) throw new Violation(`bank gets (${order} order): total ${got.total} over ${got.present} accounts in one transaction, invariant ${this.total}`);
  }

  /** Single reads outside transactions (store.get, getSync, store.range): no invariant across keys, each value must parse. */
  private async pointReads(rng: Prng): Promise<void> {
    const i = rng.int(this.o.accounts);
    let v: Uint8Array | undefined;
    try {
      v = this.store.getSync(BANK, accountPos(i));
    } catch (e) {
      if (!(e instanceof SixtreeError && e.code === 'ERR_WOULD_BLOCK')) throw e;
      v = await this.store.get(BANK, accountPos(i));
    }
    if (v) {
      const a = accountParse(i, v);
      if (a.balance < 0n) throw new Violation(`account ${i}: negative balance ${a.balance}`);
    }
    const c = rng.int(this.o.chains);
    const cv = await this.store.get(CHAIN, chainPos(c));
    if (!cv) throw new Violation(`chain key ${c} is missing (store.get)`);
    chainParse(CHAIN_MAGIC, c, null, cv);
    const from = rng.int(this.o.accounts);
    for await (const e of this.store.range(BANK, { start: accountPos(from), end: pos(2, 0), limit: 50 })) {
      const off = Number(e.pos.offset);
      if (off % STRIDE === 0) accountParse(off / STRIDE, e.value);
      else fillerCheck(off, e.value);
    }
  }

  private async flushNow(): Promise<void> {
    await this.store.flush();
    this.r.flushes++;
  }

  private async fsckNow(): Promise<void> {
    const before = this.injectedNow();
    const problems = await this.store.fsck();
    this.r.fscks++;
    // a node the device failed to read is reported unreadable, with its code
    if (problems.length && this.ioAllowed(before) && problems.every((p) => p.includes('ERR_IO'))) {
      this.ioErrorSeen(`fsck: ${problems[0]}`);
      return;
    }
    if (problems.length) throw new Violation(`fsck under load: ${problems.slice(0, 10).join('; ')}`);
  }

  /* ---------------------------------------------------------------- final checks */

  /**
   * Bank, chains and fsck against the model; with faults, the model plus the
   * unknown transactions whose markers this store holds. `live`: the store
   * the faults hit (its fsck may reject with ERR_IO: a stopped journal
   * refuses the flush fsck starts with).
   */
  private async checkAll(when: string, live: boolean): Promise<void> {
    try {
      const model = this.markers ? this.modelWith(await this.markersRead()) : { delta: this.delta, closes: this.closes, reopens: this.reopens, chainAcked: this.chainAcked };
      await this.checkBank(when, model);
      await this.checkChains(when, model);
      let problems: string[];
      try {
        problems = await this.store.fsck();
      } catch (e) {
        if (!(live && this.ioAllowed() && isIoError(e))) throw e;
        this.ioErrorSeen(e);
        problems = [];
      }
      if (problems.length) this.violation(`${when}: fsck: ${problems.slice(0, 10).join('; ')}`);
      this.r.depthBank = Math.max(this.r.depthBank, this.depthOf(BANK));
    } catch (e) {
      if (e instanceof Violation) this.violation(`${when}: ${e.message}`);
      else throw e;
    }
  }

  /** The marker keys the store holds: bank and chain transaction ids. */
  private async markersRead(): Promise<{ bank: Set<number>; chain: Set<number> }> {
    const out = { bank: new Set<number>(), chain: new Set<number>() };
    for await (const e of this.store.range(CHAIN, { start: pos(MARKER_BANK, 0), end: pos(MARKER_CHAIN + 1, 0) })) {
      const kind = Number(e.pos.inode);
      const id = Number(e.pos.offset);
      const v = e.value;
      const dv = new DataView(v.buffer, v.byteOffset, v.byteLength);
      if (v.length !== 12 || dv.getUint32(0, true) !== MARKER_MAGIC || dv.getUint32(4, true) !== kind || dv.getUint32(8, true) !== id) {
        throw new Violation(`marker ${kind}:${id}: foreign value (${v.length} B)`);
      }
      (kind === MARKER_BANK ? out.bank : out.chain).add(id);
    }
    return out;
  }

  /**
   * The model plus the unknown transactions whose markers `m` holds. Every
   * acknowledged transaction's marker must be there, and no marker of one
   * that was neither acknowledged nor unknown (an abort's).
   */
  private modelWith(m: { bank: Set<number>; chain: Set<number> }): Model {
    const wrong: string[] = [];
    for (const id of this.bankAcked) if (!m.bank.has(id)) wrong.push(`acknowledged bank transaction ${id}: its marker is missing`);
    for (const id of this.chainAcked) if (!m.chain.has(id)) wrong.push(`acknowledged chain transaction ${id}: its marker is missing`);
    for (const id of m.bank) {
      if (this.bankNotCommitted.has(id)) wrong.push(`bank transaction ${id}: rejected with ERR_CLOSED or with ERR_IO saying it was not committed, but its marker is there (it landed)`);
      else if (!this.bankAcked.has(id) && !this.bankUnknown.has(id)) wrong.push(`bank transaction ${id}: its marker is there, but it was neither acknowledged nor of unknown outcome`);
    }
    for (const id of m.chain) if (!this.chainAcked.has(id) && !this.chainUnknown.has(id)) wrong.push(`chain transaction ${id}: its marker is there, but it was neither acknowledged nor of unknown outcome`);
    if (wrong.length) throw new Violation(`markers (${wrong.length} problems): ${wrong.slice(0, 12).join('; ')}`);
    const model: Model = { delta: [...this.delta], closes: [...this.closes], reopens: [...this.reopens], chainAcked: new Set(this.chainAcked) };
    for (const [id, e] of this.bankUnknown) {
      if (!m.bank.has(id)) continue;
      for (const [a, d] of e.deltas) model.delta[a] = model.delta[a]! + d;
      if (e.close !== undefined) model.closes[e.close]!++;
      if (e.reopen !== undefined) model.reopens[e.reopen]!++;
    }
    for (const id of this.chainUnknown) if (m.chain.has(id)) model.chainAcked.add(id);
    return model;
  }

  /** Make the outcomes `m` holds the model's (after the reopen): returns how many unknown transactions landed. */
  private adoptLanded(m: { bank: Set<number>; chain: Set<number> }): number {
    const model = this.modelWith(m);
    let landed = 0;
    for (let i = 0; i < this.o.accounts; i++) {
      this.delta[i] = model.delta[i]!;
      this.closes[i] = model.closes[i]!;
      this.reopens[i] = model.reopens[i]!;
    }
    for (const id of this.bankUnknown.keys()) {
      if (m.bank.has(id)) {
        this.bankAcked.add(id);
        landed++;
      }
    }
    for (const id of this.chainUnknown) {
      if (m.chain.has(id)) {
        this.chainAcked.add(id);
        landed++;
      } else this.chainAborted.add(id);
    }
    this.bankUnknown.clear();
    this.chainUnknown.clear();
    return landed;
  }

  private depthOf(btree: string): number {
    const m = new RegExp(`${btree}[^\\n]*?depth (\\d+)`).exec(this.store.toText());
    return m ? Number(m[1]) : 0;
  }

  private async checkBank(when: string, model: Model): Promise<void> {
    const o = this.o;
    const actual = new Map<number, bigint>();
    for await (const e of this.store.range(BANK)) {
      const off = Number(e.pos.offset);
      if (e.pos.inode !== 1n) throw new Violation(`bank: key ${e.pos.inode}:${off} outside the bank's inode`);
      if (off % STRIDE === 0) actual.set(off / STRIDE, accountParse(off / STRIDE, e.value).balance);
      else fillerCheck(off, e.value);
    }
    const wrong: string[] = [];
    let total = 0n;
    for (let i = 0; i < o.accounts; i++) {
      const exists = model.closes[i] === model.reopens[i];
      const want = BALANCE_INITIAL + model.delta[i]!;
      const got = actual.get(i);
      if (got !== undefined) total += got;
      if (!exists && want !== 0n) wrong.push(`account ${i}: closed with ${want} left in the model`);
      if (exists !== (got !== undefined)) wrong.push(`account ${i}: ${got === undefined ? 'absent' : 'present'}, but ${model.closes[i]} closes and ${model.reopens[i]} reopens were acknowledged`);
      else if (got !== undefined && got !== want) wrong.push(`account ${i}: balance ${got}, the acknowledged transfers make it ${want} (${got - want > 0n ? '+' : ''}${got - want})`);
      if (got !== undefined && got < 0n) wrong.push(`account ${i}: negative balance ${got}`);
    }
    for (const i of actual.keys()) if (i >= o.accounts) wrong.push(`account ${i}: never created`);
    if (total !== this.total) wrong.unshift(`total ${total}, invariant ${this.total}`);
    if (wrong.length) throw new Violation(`bank (${wrong.length} problems): ${wrong.slice(0, 12).join('; ')}`);
  }

  private async checkChains(when: string, model: Model): Promise<void> {
    const o = this.o;
    const entries = new Map<number, number[]>();
    // in transactions of a few keys (the path limit)
    for (let c = 0; c < o.chains; c += 16) {
      const part = await this.store.transact(async (tx) => {
        const m = new Map<number, number[]>();
        for (let k = c; k < Math.min(o.chains, c + 16); k++) m.set(k, await this.chainEntries(tx, k));
        return m;
      });
      for (const [k, v] of part) entries.set(k, v);
    }
    const wrong: string[] = [];
    const expected = new Map<number, Set<number>>();
    for (const id of model.chainAcked) for (const c of this.chainPlan.get(id)!) (expected.get(c) ?? expected.set(c, new Set()).get(c)!).add(id);
    for (let c = 0; c < o.chains; c++) {
      const ids = entries.get(c)!;
      const seen = new Set<number>();
      for (const id of ids) {
        if (seen.has(id)) wrong.push(`chain key ${c}: transaction ${id} appended twice`);
        seen.add(id);
        if (this.chainAborted.has(id)) wrong.push(`chain key ${c}: holds aborted transaction ${id} (dirty write)`);
        else if (!model.chainAcked.has(id)) wrong.push(`chain key ${c}: holds transaction ${id}, ${this.chainUnknown.has(id) ? 'of unknown outcome, whose marker is missing (not atomic)' : 'never acknowledged'}`);
        else if (!this.chainPlan.get(id)!.includes(c)) wrong.push(`chain key ${c}: holds transaction ${id}, which never appended to it`);
      }
      for (const id of expected.get(c) ?? []) if (!seen.has(id)) wrong.push(`chain key ${c}: acknowledged transaction ${id} (keys [${this.chainPlan.get(id)!.join(',')}]) is missing (lost update)`);
    }
    // one serial order: the graph of consecutive entries on each key is acyclic
    const succ = new Map<number, Set<number>>();
    const indeg = new Map<number, number>();
    for (const ids of entries.values()) {
      for (let k = 0; k < ids.length; k++) {
        if (!indeg.has(ids[k]!)) indeg.set(ids[k]!, 0);
        if (k === 0) continue;
        const s = succ.get(ids[k - 1]!) ?? succ.set(ids[k - 1]!, new Set()).get(ids[k - 1]!)!;
        if (!s.has(ids[k]!)) {
          s.add(ids[k]!);
          indeg.set(ids[k]!, (indeg.get(ids[k]!) ?? 0) + 1);
        }
      }
    }
    const ready = [...indeg].filter(([, d]) => d === 0).map(([id]) => id);
    let ordered = 0;
    while (ready.length) {
      const id = ready.pop()!;
      ordered++;
      for (const n of succ.get(id) ?? []) {
        const d = indeg.get(n)! - 1;
        indeg.set(n, d);
        if (d === 0) ready.push(n);
      }
    }
    if (ordered !== indeg.size) {
      const cyc = [...indeg].filter(([, d]) => d > 0).map(([id]) => id);
      wrong.push(`the chains' orders admit no serial order: ${cyc.length} transactions on a cycle (e.g. ${cyc.slice(0, 8).join(',')}: ${cyc
        .slice(0, 3)
        .map((id) => `${id} on keys [${this.chainPlan.get(id)!.join(',')}]`)
        .join('; ')})`);
    }
    if (wrong.length) throw new Violation(`chains (${wrong.length} problems): ${wrong.slice(0, 12).join('; ')}`);
  }
}

export async function runStress(o: StressOpts): Promise<StressResult> {
  return new Run(o).run();
}

export function resultText(r: StressResult): string {
  return (
    `${r.violations.length ? 'FAIL' : 'ok'}  ${r.commits} commits (${r.transfers} transfers, ${r.closes} closes, ${r.reopens} reopens, ${r.chainAppends} chain appends, ${r.fillerTxns} filler), ` +
    `${r.aborts} aborts, ${r.readers} readers (${r.readersTooBig} over the path limit), ${r.attemptsInconsistent} restarted attempts saw another total, ${r.fscks} fscks and ${r.flushes} flushes under load, ` +
    `${r.restarts} restarts, ${r.splits} splits, ${r.merges} merges, ${r.evictions} evictions, ${r.ioWaits ? `${r.ioWaits} I/O waits, ` : ''}${r.faultsInjected ? `${r.faultsInjected} device failures (${r.ioErrors} ERR_IO, ${r.unknownOutcomes} outcomes unknown, ${r.unknownLanded} of them landed; ${r.secondOps} operations after; first ERR_IO: ${r.ioErrorsFirst.map((m) => JSON.stringify(m.slice(0, 160))).join(', ')}), ` : ''}${r.closesUnderLoad ? `${r.closesUnderLoad} closes under load (${r.closedErrors} calls met ERR_CLOSED), ` : ''}bank depth ${r.depthBank}, ${(r.ms / 1000).toFixed(1)} s`
  );
}

function isIoError(e: unknown): boolean {
  return e instanceof SixtreeError && e.code === 'ERR_IO';
}

function errText(e: unknown): string {
  if (e instanceof SixtreeError && e.code === 'ERR_TOO_MANY_RESTARTS') return `${e.code}: ${e.message}; the last lock cycle or chain broken: ${lockingCounters.lastCycle}`;
  if (e instanceof SixtreeError) return `${e.code}: ${e.message}${e.stack ? `\n      ${e.stack.split('\n').slice(1, 8).join('\n      ')}` : ''}`;
  if (e instanceof Error) return `${e.name}: ${e.message}${e.stack ? `\n      ${e.stack.split('\n').slice(1, 8).join('\n      ')}` : ''}`;
  return String(e);
}

/* ------------------------------------------------------------------ command line */

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      count: { type: 'string', default: '4' },
      seed: { type: 'string' },
      workers: { type: 'string' },
      ops: { type: 'string' },
      seconds: { type: 'string' },
      'node-size': { type: 'string' },
      'block-size': { type: 'string' },
      'cache-mib': { type: 'string' },
      accounts: { type: 'string' },
      chains: { type: 'string' },
      dir: { type: 'string' },
      device: { type: 'string' },
      'io-delay': { type: 'string' },
      'io-delay-ms': { type: 'string' },
      faults: { type: 'string' },
      'fault-ops': { type: 'string' },
      'faults-spare-journal': { type: 'boolean', default: false },
      'fault-kinds': { type: 'string' },
      closes: { type: 'string' },
      quiet: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: node dist/bench/stress-campaign.js [--count N] [--seed S] [--workers W] [--ops O] [--seconds T]\n' +
        '         [--node-size B] [--block-size B] [--cache-mib M] [--accounts A] [--chains C] [--dir DIR]\n' +
        '         [--device /dev/loopN] (formatted for each run: ITS CONTENTS ARE DESTROYED)\n' +
        '         [--io-delay SHARE] [--io-delay-ms MS] [--faults RATE] [--fault-ops N]\n' +
        '         [--faults-spare-journal] [--fault-kinds read,write,flush] [--closes K] [--quiet]\n' +
        '  N runs with seeds S, S+1, ... (default S: random); each run draws the sizes not given from its seed.\n' +
        '  W workers x O operations each (default 200), a run stops starting operations after T seconds (default 60).\n' +
        '  --io-delay SHARE: each device operation waits, with probability SHARE (0..1), before it reaches the file\n' +
        '  and again after it completed (a promise tick, 1-3 loop turns or a timer up to MS ms, default 2), so\n' +
        '  reads and writes complete late and out of order (src/io/delay-device.ts).\n' +
        '  --faults RATE: for N operations (--fault-ops, default 100) from a point drawn from the seed, each read,\n' +
        '  write and flush fails with EIO with probability RATE; writes of unknown outcome are read back, the\n' +
        '  store is reopened and the workers run again (the header of bench/stress-campaign.ts).\n' +
        '  --faults-spare-journal: only node reads and writes fail (the store goes on writing through them).\n' +
        '  --fault-kinds K,K: only these kinds of operation fail (read, write, flush; default all): with read\n' +
        '  alone the store keeps taking writes, and reads fail in lookups, scans, commits, splits and merges.\n' +
        '  --closes K: close the store K times under load and open it again at once, the workers going on.\n' +
        '  Exits 1 if any run breaks an invariant (bank totals and balances, chain lost updates / dirty writes /\n' +
        '  serial order, fsck), printing the seed, the parameters, the invariant and the store\'s toText() and stats().\n',
    );
    return;
  }
  const int = (name: string, v: string | undefined, min: number): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min) throw new Error(`--${name}: ${v} is not an integer >= ${min}`);
    return n;
  };
  const count = int('count', values.count, 1)!;
  const over: Partial<StressOpts> = {};
  const set = <K extends keyof StressOpts>(k: K, v: StressOpts[K] | undefined) => {
    if (v !== undefined) over[k] = v;
  };
  set('workers', int('workers', values.workers, 1));
  set('opsPerWorker', int('ops', values.ops, 1));
  set('secondsMax', int('seconds', values.seconds, 1));
  set('nodeSizeBytes', int('node-size', values['node-size'], 4096));
  set('blockSizeBytes', int('block-size', values['block-size'], 512));
  const cacheMib = values['cache-mib'] !== undefined ? Number(values['cache-mib']) : undefined;
  if (cacheMib !== undefined && !(cacheMib > 0)) throw new Error(`--cache-mib: ${values['cache-mib']} is not a positive number`);
  if (cacheMib !== undefined) over.cacheBytes = Math.ceil(cacheMib * 1024 * 1024);
  set('accounts', int('accounts', values.accounts, 2));
  set('chains', int('chains', values.chains, 2));
  set('closes', int('closes', values.closes, 1));
  if (values.dir !== undefined) over.dir = values.dir;
  if (values.device !== undefined) over.device = values.device;
  if (values['io-delay'] !== undefined || values['io-delay-ms'] !== undefined) {
    const share = Number(values['io-delay'] ?? '0.5');
    const maxMs = Number(values['io-delay-ms'] ?? '2');
    if (!(share >= 0 && share <= 1)) throw new Error(`--io-delay: ${values['io-delay']} is not a number in [0, 1]`);
    if (!(maxMs >= 0 && maxMs <= 1000)) throw new Error(`--io-delay-ms: ${values['io-delay-ms']} is not a number of milliseconds in [0, 1000]`);
    over.ioDelay = { share, maxMs };
  }
  if (values.faults !== undefined || values['fault-ops'] !== undefined || values['faults-spare-journal'] || values['fault-kinds'] !== undefined) {
    const rate = Number(values.faults ?? '0.05');
    if (!(rate > 0 && rate <= 1)) throw new Error(`--faults: ${values.faults} is not a number in (0, 1]`);
    let kinds: FaultKind[] | undefined;
    if (values['fault-kinds'] !== undefined) {
      kinds = values['fault-kinds'].split(',') as FaultKind[];
      if (!kinds.length || kinds.some((k) => k !== 'read' && k !== 'write' && k !== 'flush')) throw new Error(`--fault-kinds: ${values['fault-kinds']} is not a list of read, write, flush`);
    }
    over.faults = { rate, ops: int('fault-ops', values['fault-ops'], 1) ?? 100, ...(values['faults-spare-journal'] ? { spareJournal: true } : {}), ...(kinds ? { kinds } : {}) };
  }
  const seed0 = values.seed !== undefined ? Number(values.seed) >>> 0 : (Math.random() * 0x1_0000_0000) >>> 0;
  // the sizes given on the command line (a replay needs them: the others are drawn from the seed)
  const sizeOpts = ['workers', 'ops', 'seconds', 'node-size', 'block-size', 'cache-mib', 'accounts', 'chains'] as const;
  const sizesGiven = sizeOpts.map((k) => (values[k] !== undefined ? ` --${k} ${values[k]}` : '')).join('');
  if (!values.quiet) over.log = (l: string) => process.stderr.write(`${l}\n`);
  process.stdout.write(`stress campaign: ${count} runs, seeds ${seed0}..${(seed0 + count - 1) >>> 0}\n`);
  const t0 = performance.now();
  let finished = false;
  process.on('beforeExit', () => {
    if (finished) return;
    process.stdout.write('stress campaign: the event loop drained before the campaign finished: a promise of the store never settled (hang)\n');
    process.exit(1);
  });
  const failures: Array<{ o: StressOpts; r: StressResult }> = [];
  for (let i = 0; i < count; i++) {
    const o = stressRunOpts((seed0 + i) >>> 0, over);
    const r = await runStress(o);
    process.stdout.write(`run ${i + 1}/${count} ${optsText(o)}\n    ${resultText(r)}\n`);
    if (r.violations.length) {
      failures.push({ o, r });
      process.stdout.write(`    VIOLATION: ${r.violations.join('\n    VIOLATION: ')}\n`);
      // a hung store keeps its promises pending: stop here with what we have
      if (r.violations.some((v) => v.startsWith('hang'))) break;
    }
  }
  const secs = (performance.now() - t0) / 1000;
  process.stdout.write(`\nsummary: ${count} runs, ${failures.length} failing, ${secs.toFixed(1)} s\n`);
  for (const { o, r } of failures) {
    process.stdout.write(`\nFAILED ${optsText(o)}\n  replay: node dist/bench/stress-campaign.js --count 1 --seed ${o.seed}${sizesGiven}${o.ioDelay ? ` --io-delay ${o.ioDelay.share} --io-delay-ms ${o.ioDelay.maxMs}` : ''}${o.faults ? ` --faults ${o.faults.rate} --fault-ops ${o.faults.ops}${o.faults.spareJournal ? ' --faults-spare-journal' : ''}${o.faults.kinds ? ` --fault-kinds ${o.faults.kinds.join(',')}` : ''}` : ''}${o.closes ? ` --closes ${o.closes}` : ''}${o.device ? ` --device ${o.device}` : ''}\n  ${r.violations.join('\n  ')}\n--- store ---\n${r.dump}\n`);
  }
  finished = true;
  process.exit(failures.length ? 1 : 0);
}

const invokedAs = process.argv[1] ? pathToFileURL(path.resolve(process.argv[1])).href : '';
if (invokedAs === import.meta.url || invokedAs === pathToFileURL(fileURLToPath(import.meta.url)).href) {
  main().catch((e) => {
    process.stderr.write(`stress campaign: ${errText(e)}\n`);
    process.exit(2);
  });
}
