// SPDX-License-Identifier: GPL-2.0-only
/*
 * Engine (bcachefs struct bch_fs): one open store. Owns the device, the
 * superblock, the node cache, the journal, the allocator, the btree roots,
 * interior updates and writeback, and wires them together. Store (store.ts)
 * is the public face; transactions (btree/trans.ts) call in here.
 *
 * Open (recovery, bcachefs recovery.c):
 *   1. superblock (the newer valid copy) -> layout, btree table, blacklist;
 *   2. read the journal: the newest valid entry and the window
 *      [its last_seq, newest]; roots from it (else from the superblock);
 *   3. plan: clean shutdown -> nothing to replay; else blacklist the seqs
 *      after the newest entry (persisted in the superblock before any new
 *      journal write) and replay;
 *   4. allocator: walk every interior node from the roots, marking child
 *      buckets, plus every pointer in the replay window (conservative);
 *   5. replay the window's keys: higher levels first (pointer keys rebuild
 *      the topology without reading the children they point to), then leaf
 *      keys in seq order; each replayed key pins its original seq until the
 *      node holding it is written, so the recovered entries stay on disk
 *      until nothing needs them;
 *   6. recompute the allocator from the tree (exact), mark the superblock
 *      unclean, start writeback.
 *
 * Node writes (btree_node_write): log before data - a node's bset is written
 * only once the journal is durable up to the highest seq of its keys, so no
 * node on disk holds a key from an entry that could be lost (the blacklist
 * covers the rest). Writes append a bset; a node too full to append is
 * rewritten into a new bucket by the next insert that does not fit. A journal
 * write flushes first (REQ_PREFLUSH) if a node write completed that no
 * completed flush covers yet; node writes still in flight are not waited for:
 * no entry relies on them (journalDevice).
 *
 * Writeback: dirty nodes are written by journal reclaim (the journal asks for
 * the nodes pinning its oldest entries), by the cache shrinker (dirty past
 * 3/4), by flush()/close(), and by a background pass when dirty nodes pass
 * 3/4 of the cache (WRITEBACK_DIRTY_NUM/DEN). At most WRITEBACK_INFLIGHT_MAX writes are in flight.
 *
 * Merge checks (interior.ts maybeMerge): commits that shrank leaves, and
 * interior updates, queue (btree, level, pos) checks (queueMerge: one per
 * position until it runs); one runner takes them in order, each in its own
 * internal transaction (runMerges). A deleting transact() waits while more
 * than MERGE_QUEUE_MAX are queued, so deletions never outrun their merges
 * without bound; a check that failed (an I/O error) is queued again by the
 * periodic writeback pass. flush(), close() and fsck() wait for the queue to
 * empty (mergesIdle).
 *
 * Counters: everything stats() reports is counted here or in the parts.
 */

import { existsSync, rmSync } from 'node:fs';
import { randomInt } from 'node:crypto';
import { ERR, SixtreeError, errMatches, errName, RESTART } from './errors.js';
import { Printbuf, bytesToText } from './util/printbuf.js';
import { writeThenFlush, type Device } from './io/device.js';
import { BlockDevice } from './io/block-device.js';
import { loadBackend, type IoBackendName } from './native/index.js';
import { computeLayout, bucketToOffset, type Layout } from './layout.js';
import {
  EXTENT_SIZE_BOUND_UNKNOWN,
  newSuperblock,
  layoutFromSuperblock,
  readSuperblock,
  readSuperblockCopies,
  writeSuperblock,
  type Superblock,
  type SbRoot } from './format/superblock.js';
import { Allocator, allocReserveFor, type AllocWatermark } from './alloc.js';
import { Journal, JournalPin, journalRecoveryPlan, journalStartAfterRead, journalStartEmpty } from './journal/journal.js';
import type { JournalPreres, JournalRes, JournalRoot } from './journal/journal.js';
import { readJournal } from './journal/read.js';
import { BlacklistHolders, JournalSeqBlacklist, type BlacklistHolder } from './journal/blacklist.js';
import { BlacklistGc } from './journal/blacklist-gc.js';
import { JSET_ENTRY, jsetEntryBytes } from './format/journal-format.js';
import type { BkeyFormat } from './format/bkey-format.js';
import { BtreeCache, cacheSizeBytesDefault } from './btree/cache.js';
import { NodeIter, NodeKeys, readSetCounters, roFilterCounters } from './btree/bset.js';
import { nodeWritePrepare, nodeWriteDone, type NodeWrite } from './btree/node-io.js';
import { Node, NodeFlag } from './btree/node.js';
import {
  KEY_TYPE,
  bkeyBtreePtr,
  bkeyDecode,
  bkeyEncode,
  bkeyEncodedBytes,
  btreePtrDecode,
  btreePtrEncode,
  maxValueBytesForNode,
  PTR_SECTOR_BYTES,
  type BkeyI,
  type BtreePtr as BtreePtrValue } from './btree/bkey.js';
import {
  BPOS_WORDS,
  POS_MAX,
  POS_MIN,
  type Bpos,
    posWords,
  wordsClone,
  wordsCmp,
  wordsCopy,
  wordsIsMax,
  wordsIsMin,
  wordsPredecessor,
  wordsSuccessor,
  wordsToBpos,
  wordsToText } from './btree/bpos.js';
import { LockOwnerBase, lockingStats, nodeTryLock, nodeUnlock } from './btree/locking.js';
import { SixLockType } from './util/six.js';
import { BtreeTrans, transStartSeqNew } from './btree/trans.js';
import { transCommit, type Update } from './btree/commit.js';
import { Interior, TxCtx, type BtreeUpdate, type MergeCheckPos } from './btree/interior.js';
import { EXTENT_SCAN_SKIP_AFTER, LookupNowait, btreeLookup, keyToEntry, keyToEntryAt, type Entry, type NodeInfo } from './btree/iter.js';
import { EXTENT_VALUE_HEADER_BYTES, extentOfKey, xFromWords, type XPos } from './btree/overlay.js';
import { BTREE_MAX_DEPTH } from './btree/path.js';
import { type BtreePtr } from './btree/types.js';
import { ShapeKeeper } from './util/shapes.js';

export const NODE_SIZE_BYTES_DEFAULT = 256 * 1024;
export const BLOCK_SIZE_BYTES_DEFAULT = 4096;
/** Format writes a file's journal ring with zeros this much at a time. */
export const JOURNAL_ZERO_CHUNK_BYTES = 1024 * 1024;
/** Writes of dirty nodes in flight at once (writeback, reclaim, flush). */
export const WRITEBACK_INFLIGHT_MAX = 8;
/**
 * Background writeback starts when dirty nodes pass this fraction of the nodes
 * the cache can hold (bcachefs's shrinker trigger is the same 3/4). Lower
 * fractions wrote every leaf after nearly every commit of a batched random
 * insert load (each write appends a small bset, then re-sorts the node in
 * memory), for nothing: journal reclaim and the periodic pass write them anyway.
 */
export const WRITEBACK_DIRTY_NUM = 3;
export const WRITEBACK_DIRTY_DEN = 4;
/** Restarts after which a transaction closes the starvation gate and runs alone (see Engine.starvationGateClose). */
export const STARVATION_RESTARTS = 64;
/** Background writeback also runs on this period while anything is dirty. */
export const WRITEBACK_PERIOD_MS = 1000;
/** Journal seqs a rebuilt node's key format leaves room for before new keys are stored unpacked. */
export const NODE_FORMAT_VERSION_HEADROOM = 1 << 24;
/** Foreground merges of underfull siblings (interior.ts maybeMerge); SIXTREE_MERGES=0 turns them off (debugging). */
export const MERGES_ENABLED = process.env.SIXTREE_MERGES !== "0";
/** Merge checks queued before a deleting transact() waits for the runner. */
export const MERGE_QUEUE_MAX = 1024;
/** Failed merge checks kept for the periodic retry. */
export const MERGE_RETRY_MAX = 256;
/** bucketAlloc: waits for buckets being given back before ERR_NO_SPACE (each wait ends when an update completes or an entry is durable). */
export const BUCKET_WAIT_ROUNDS_MAX = 64;

/** A queued merge check, with its key (one per btree, level and position). */
interface MergeCheck extends MergeCheckPos {
  key: string;
}

/** A node write completed: its pointer should record that the node is written up to `sectors` (ptrUpdateQueue). */
interface PtrUpdate {
  node: Node;
  btreeId: number;
  level: number;
  bucket: number;
  seq: number;
  sectors: number;
}

export interface BtreeInfo {
  name: string;
  extents: boolean;
}

export interface FormatOpts {
  btrees: BtreeInfo[];
  sizeBytes?: number;
  nodeSizeBytes?: number;
  blockSizeBytes?: number;
  journalSizeBytes?: number;
  force: boolean;
  io?: IoBackendName;
  /** Tests: format onto this device instead of opening path. */
  device?: Device;
}

export interface EngineOpenOpts {
  cacheSizeBytes?: number;
  readOnly: boolean;
  io?: IoBackendName;
  /** Tests (crash images, fault injection): open this device instead of path. */
  device?: Device;
}

export interface BtreeRoot {
  node: Node | null;
  /** The root as the journal records it: only written nodes. */
  journalPtr: Uint8Array;
  journalLevel: number;
  /**
   * Root changes journaled in entries not yet durable, oldest first, each
   * with the seq of the entry that carries the update's keys: an entry
   * records the newest change at or below its own seq (rootAsOf).
   */
  journalChanges: Array<{ seq: number; ptr: Uint8Array; level: number }>;
  /** Seq of the entry carrying the newest root change (0: none since open). */
  lastChangeSeq: number;
}

export interface StoreStats {
  cache: {
    nodes: number;
    dirty: number;
    bytes: number;
    budgetBytes: number;
    reserve: number;
    hits: number;
    misses: number;
    evictions: number;
    cannibalized: number;
    notFreed: Record<string, number>;
    /** Every cache counter by name (CACHE_COUNTERS in btree/cache.ts). */
    counters: Record<string, number>;
    /** Microseconds spent validating node reads, all reads together. */
    readValidateUs: number;
    [k: string]: unknown;
  };
  io: { reads: number; writes: number; bytesRead: number; bytesWritten: number; flushes: number };
  journal: { seq: number; lastSeq: number; bytesUsed: number; bytesTotal: number; entriesWritten: number; inlineWrites: number; [k: string]: unknown };
  transactions: {
    commits: number;
    restarts: number;
    restartReasons: Record<string, number>;
    keysCommitted: number;
    /** Commits that waited for a leaf's readers before write-locking it. */
    writeLockWaits: number;
    /** Commit rounds redone because a node write sealed a leaf between the room check and the write locks. */
    roomLost: number;
    roundsGivenUp: number;
    /** Commit rounds that split or rewrote leaves short of room (all of them) and started over. */
    splitRounds: number;
    /** Commits that completed their interior updates early to let journal reclaim write the nodes they blocked. */
    groupsClosedForJournal: number;
    /** Transactions that kept restarting and were then run alone (the starvation gate). */
    starvationGates: number;
    /** Transaction attempts that waited at the starvation gate for another to finish. */
    starvationWaits: number;
    /** Store calls refused with ERR_TX_NESTED (made by a transact() callback of the same store). */
    nestedCallsRefused: number;
    /** Callback errors not handed to the caller: the attempt's reads no longer held, so it ran again. */
    callbackErrorsRestarted: number;
    /** No extent key in the store is larger (the superblock's bound; 2^32-1 for a store written before it was kept). */
    extentSizeBound: number;
    /** Superblock writes that raised it (a commit with a larger extent waits for one). */
    extentSizeBoundRaises: number;
    /** store.clear(): commits made, and commits the journal refused and tried again with half the keys. */
    clearCommits: number;
    clearCommitsHalved: number;
  };
  /** store.get: answered by the synchronous walk, or fallen back to a transaction (and why). */
  lookups: { fast: number; fallbackLocked: number; fallbackUncached: number; fastAfterRead: number; syncWouldBlock: number; childIndexBuilds: number; yields: number };
  btrees: Record<string, { depth: number; rootLevel: number }>;
  interior: Record<string, number>;
  alloc: Record<string, number>;
  writeback: Record<string, number>;
  locks: Record<string, number>;
  /** Puts' search for the key they shadow in a leaf's read-only sets, cut short by the nodes' filters (bset.ts RO_FILTER_AFTER; every store in this process). */
  putFilter: { skips: number; passes: number; builds: number; unfilterable: number; carried: number };
  /** Node reads that kept their 2..3 bsets as sets instead of merging them (process-wide, like putFilter), and how many of those nodes were merged later for an insert. */
  readSets: { kept: number; merged: number };
  /** Journal seq blacklist: ranges kept, nodes holding them, gc progress (journal/blacklist-gc.ts). */
  blacklist: { ranges: number; holders: number; walkDone: boolean; running: boolean; [k: string]: number | boolean };
}

/** store.maxValueSize for a node size: one limit for every btree (an extent key also carries its 8-byte valueOffset). */
export function maxValueSizeFor(nodeBytes: number): number {
  return maxValueBytesForNode(nodeBytes) - EXTENT_VALUE_HEADER_BYTES;
}

function randomNodeSeq(): number {
  // 52-bit, never 0 (0 means "not hashed")
  return randomInt(1, 2 ** 47) * 32 + randomInt(0, 32);
}

function ptrBytes(bucket: number, seq: number, level: number, minKey: Uint32Array): Uint8Array {
  return btreePtrEncode({ bucket, seq, level, minKey });
}

export class Engine {
  readonly dev: Device;
  readonly path: string;
  sb: Superblock;
  readonly layout: Layout;
  readonly btrees: BtreeInfo[];
  readonly nodeSizeBytes: number;
  readonly blockSizeBytes: number;
  readonly maxValueBytes: number;
  /** u64s a pointer key takes, unpacked (the space check for parents). */
  readonly ptrKeyU64s: number;
  readonly readOnly: boolean;
  cache!: BtreeCache;
  /** store.get's synchronous fast path (iter.ts LookupNowait). */
  lookupNowait!: LookupNowait;
  journal!: Journal;
  alloc!: Allocator;
  interior!: Interior;
  readonly roots: BtreeRoot[] = [];
  readonly blacklist: JournalSeqBlacklist;
  /** Nodes read since open whose buckets still hold blacklisted bsets. */
  readonly blacklistHolders = new BlacklistHolders();
  /** The last object of each per-operation class, kept for V8's sake (src/util/shapes.ts). */
  readonly shapes = new ShapeKeeper();
  /**
   * Node reads take a failing last bset for a torn append only if its keys
   * are this journal seq or newer (node-io.ts): the replay window's start,
   * or past the newest entry after a clean shutdown (nothing was in flight).
   * Fixed for the whole open: tears only come from the crash before it.
   */
  private tornFloor = 0;
  readonly blacklistGc: BlacklistGc;
  /** Lock owner for engine-internal node locking (writeback completion, fsck walk). */
  private readonly owner = new LockOwnerBase(-2, Number.MAX_SAFE_INTEGER - 1);

  readonly counters = {
    /** Superblock writes that raised the extent size bound (extentSizeBoundRaise). */
    extentSizeBoundRaises: 0,
    /** store.clear(): commits made; commits the journal refused, tried again with half the keys. */
    clearCommits: 0,
    clearCommitsHalved: 0,
    commits: 0,
    restarts: 0,
    keysCommitted: 0,
    traverses: 0,
    /** Of those, done synchronously (BtreeTrans.traverseNowait: all cached, no lock busy). */
    traversesNowait: 0,
    commitWriteLockWaits: 0,
    commitRoomLost: 0,
    /** Commits that restarted after COMMIT_FRUITLESS_ROUNDS_MAX rounds that gained nothing (btree/commit.ts). */
    commitRoundsGivenUp: 0,
    commitSplitRounds: 0,
    /** A commit waiting for journal room completed its interior updates first (only reclaim could make room). */
    commitGroupsClosedForJournal: 0,
    starvationGates: 0,
    starvationWaits: 0,
    /** Store calls refused with ERR_TX_NESTED: made by a transact() callback of the same store (Store.nestedCheck). */
    nestedCallsRefused: 0,
    /** An error thrown by a transact() callback whose reads no longer held: the attempt restarted instead (Store.transactGated). */
    callbackErrorsRestarted: 0,
    nodeWrites: 0,
    nodeWriteErrors: 0,
    nodeWritesNew: 0,
    /** Writes of a node replaced while the write waited (skipped: see nodeWriteIo). */
    nodeWritesSkippedDying: 0,
    compactionsDeferred: 0,
    /** New nodes built in their source's format: the fitted one took more words per key and the keys did not fit (nodeBuildFrom). */
    nodeBuildFormatFallbacks: 0,
    journalPreflushes: 0,
    nodeAppendPreflushes: 0,
    writebackPasses: 0,
    reclaimCalls: 0,
    /** Writeback wanted a write_blocked node (need_write set; written when unblocked). */
    nodeWritesWanted: 0,
    /** Journal reclaim found only write_blocked nodes and waited for an interior update. */
    reclaimWaitsForUpdates: 0,
    /** A new node found no free bucket and waited for buckets being given back (bucketAlloc). */
    bucketWaits: 0,
    /** Merge checks that failed with an error (queued again by the periodic pass). */
    mergeErrors: 0,
    /** Failed checks queued again. */
    mergeRetries: 0,
    /** Failed checks not kept for a retry (MERGE_RETRY_MAX reached). */
    mergeRetriesDropped: 0,
    /** Deleting transactions that waited for room in the merge queue. */
    mergeQueueWaits: 0,
    /** Checks not queued again: one for that position was queued already. */
    mergeQueueDups: 0,
    /** Pointer updates journaled: a parent's pointer (or a root's) now records how far its node is written (bcachefs btree_ptr_v2.sectors_written). */
    ptrUpdates: 0,
    /** Of those, roots (recorded in the journal's root entries). */
    ptrUpdatesRoot: 0,
    /** Of those, interior nodes below the root (their parents are interior nodes too). */
    ptrUpdatesInterior: 0,
    /** Pointer updates with nothing to do: the node was replaced, or its pointer already reached as far. */
    ptrUpdatesStale: 0,
    /** Writes of new nodes whose pointer was not journaled yet: their length is recorded once their update journals (ptrUpdateAfterJournaled). */
    ptrUpdatesUnjournaled: 0,
    /** Pointer updates left undone (no journal room for a root, an error): the pointer keeps the shorter length, which reads check less strictly, never wrongly. */
    ptrUpdatesDropped: 0,
    replayedKeys: 0,
    /** Pointer keys not replayed: their level was collapsed away after them (rootLevelMinFrom). */
    replayedKeysStale: 0,
    /** Root changes that waited for a new journal entry (the btree's previous root change was in the open one). */
    rootChangeEntryBreaks: 0,
    replayedEntries: 0,
    prefetches: 0,
    /** Iterator read-aheads not made: the path's parent (or leaf) Node object had become another node (maybePrefetch). */
    prefetchesStale: 0,
    /** Debug pin check (SIXTREE_DEBUG_PIN_CHECK=1): journal entries whose last_seq passed an unwritten, unpinned key. */
    pinCheckViolations: 0,
    /** Node reads without a transaction (open, fsck, the blacklist gc's walk) that found no node memory and waited for the cannibalize lock (readNodeNoiter). */
    walkCannibalizeWaits: 0,
  };
  /** The first pin check violation, described (debug). */
  pinCheckFirst: string | null = null;
  readonly restartReasons = new Map<number, number>();

  private writesInFlight = 0;
  /**
   * The number a flush must have (devFlush counts them from 1) to cover every
   * node write completed so far: a flush started after the newest completion
   * (see journalDevice). 0: none completed.
   */
  private nodeWritesFlushNeed = 0;
  /** Flushes started / the newest started one that completed (devFlush). */
  private flushStarted = 0;
  private flushDone = 0;
  /** Per node: a flush must complete whose start number is at least this before the node's next append. */
  private readonly nodeFlushNeeded = new WeakMap<Node, number>();
  /** Node writes that failed: retried (same bytes) by the next write of the node. */
  private readonly pendingWrites = new Map<Node, NodeWrite>();
  /** The error of the newest node write that failed (flush() rejects with it when nodes stay unwritten). */
  private lastNodeWriteError: unknown = null;
  private writeSlotWaiters: Array<() => void> = [];
  private updateWaiters: Array<() => void> = [];
  private writebackTimer: NodeJS.Timeout | null = null;
  private writebackRunning = false;
  /** Times writeback marked a write_blocked node need_write (journalReclaim compares). */
  private writesWanted = 0;
  /** Merge checks to run (runMerges), and their keys. */
  private mergeQueue: MergeCheck[] = [];
  private mergeQueueHead = 0;
  private readonly mergeQueued = new Set<string>();
  private mergeRunning = false;
  /** Pointer updates waiting (ptrUpdateQueue), by node seq. */
  private readonly ptrUpdateQueued = new Map<number, PtrUpdate>();
  private ptrUpdateRunning = false;
  private ptrUpdateIdleWaiters: Array<() => void> = [];
  /** On once open is done: node writes of recovery's replay leave their pointers as they are. */
  private ptrUpdatesOn = false;
  /** Runtime superblock writes, one at a time (sbUpdate). */
  private sbWriting: Promise<void> = Promise.resolve();
  /** Transactions waiting for room in the merge queue; flushes waiting for it to empty. */
  private mergeRoomWaiters: Array<() => void> = [];
  private mergeIdleWaiters: Array<() => void> = [];
  /** Checks that failed, queued again by the periodic pass. */
  private mergeRetry: MergeCheck[] = [];
  /**
   * The device error that stopped the store's writes, or null: the one that
   * stopped the journal (an entry's write or flush failed), or the one that
   * failed an interior update (a write of a node a split, merge or new root
   * made: its pointers can never be journaled, its parent never written).
   * bcachefs goes emergency read-only on either. Reads go on; close() then
   * skips the clean mark, and the next open replays the journal.
   */
  private get failed(): Error | null {
    return this.journal?.failure ?? this.interior?.failed ?? null;
  }
  private closed = false;
  private stopMemoryWatch: (() => void) | null = null;

  private constructor(dev: Device, path: string, sb: Superblock, readOnly: boolean) {
    this.dev = dev;
    this.path = path;
    this.sb = sb;
    this.layout = layoutFromSuperblock(sb);
    this.btrees = sb.btrees.map((b) => ({ name: b.name, extents: b.extents }));
    this.nodeSizeBytes = sb.nodeBytes;
    this.blockSizeBytes = sb.blockBytes;
    this.maxValueBytes = maxValueSizeFor(sb.nodeBytes);
    this.ptrKeyU64s = bkeyEncodedBytes(bkeyBtreePtr(posWords(POS_MAX), { bucket: 0, seq: 1, level: 0, minKey: posWords(POS_MAX) })) / 8 + 1;
    this.readOnly = readOnly;
    this.blacklist = new JournalSeqBlacklist(sb.blacklist);
    this.blacklistGc = new BlacklistGc({
      blacklist: this.blacklist,
      holders: this.blacklistHolders,
      nrBtrees: this.btrees.length,
      walkBtreeFrozen: (id, visit, stop) => this.walkBtreeFrozen(id, visit, stop),
      rewriteNode: (h) => this.rewriteForBlacklist(h),
      makeDurable: async () => {
        await this.interior.drain();
        await this.journal.flush();
        await this.interior.drain();
      },
      lastSeqOndisk: () => this.journal.lastSeqOndisk,
      persist: () => this.sbUpdate(() => ({ blacklist: this.blacklist.toArray() })),
    });
  }

  /* ================================================================ format */

  static async format(path: string, o: FormatOpts): Promise<void> {
    const dev = o.device ?? (await Engine.openDeviceForFormat(path, o));
    try {
      const sectorBytes = dev.alignBytes;
      const blockBytes = o.blockSizeBytes ?? Math.max(BLOCK_SIZE_BYTES_DEFAULT, sectorBytes);
      if (blockBytes < sectorBytes) throw new SixtreeError('ERR_INVALID_ARG', `opts.blockSize: ${blockBytes} is below the logical sector size ${sectorBytes} of ${path}`, { path });
      const nodeBytes = o.nodeSizeBytes ?? NODE_SIZE_BYTES_DEFAULT;
      if (nodeBytes % blockBytes !== 0) throw new SixtreeError('ERR_INVALID_ARG', `opts.nodeSize: ${nodeBytes} is not a multiple of blockSize ${blockBytes}`, { path });
      if (!o.force) {
        const copies = await readSuperblockCopies(dev);
        if (copies.some((c) => c.status !== 'no_magic')) {
          throw new SixtreeError('ERR_EXISTS', `${path} already holds a sixtree store (pass force: true to format over it)`, { path });
        }
      }
      const layout = computeLayout({ deviceBytes: dev.sizeBytes, nodeBytes, blockBytes, ...(o.journalSizeBytes ? { journalBytes: o.journalSizeBytes } : {}) });
      if (layout.nrBuckets < o.btrees.length) throw new SixtreeError('ERR_TOO_SMALL', `${path}: ${layout.nrBuckets} buckets cannot hold ${o.btrees.length} btree roots`, { path });
      // one empty leaf per btree, buckets 0..n-1
      const buf = dev.allocBuffer(nodeBytes);
      const aux = new Uint8Array(NodeKeys.auxBytes(nodeBytes));
      const roots: SbRoot[] = [];
      try {
        for (let id = 0; id < o.btrees.length; id++) {
          const keys = new NodeKeys(nodeBytes, blockBytes);
          buf.fill(0);
          keys.attach(buf, aux);
          const seq = randomNodeSeq();
          keys.initEmpty({ btreeId: id, level: 0, minKey: posWords(POS_MIN), maxKey: posWords(POS_MAX), seq });
          keys.noteJournalSeq(0);
          const w = forceWritePrepare(keys);
          await dev.write(w.bytes, bucketToOffset(layout, id) + w.offsetBytes);
          nodeWriteDone(keys);
          keys.detach();
          roots.push({ bucket: id, seq, level: 0 });
        }
      } finally {
        dev.freeBuffer(buf);
      }
      // wipe the journal's first block so no entry of an earlier store is
      // taken for ours (uuids differ anyway). In a file, all of the ring: a
      // file system allocates a file's blocks unwritten (fallocate, or holes),
      // and the first write to each converts it, a metadata change the
      // write's fdatasync then commits too. Written once here, every journal
      // entry's write is data only: a single-key commit measured 663 -> 462
      // us on ext4.
      const wipeBytes = dev.kind === 'file' ? layout.journalBytes : layout.blockBytes;
      const chunkBytes = Math.min(wipeBytes, JOURNAL_ZERO_CHUNK_BYTES);
      const zero = dev.allocBuffer(chunkBytes);
      try {
        for (let off = 0; off < wipeBytes; off += chunkBytes) {
          const n = Math.min(chunkBytes, wipeBytes - off);
          await dev.write(n === chunkBytes ? zero : zero.subarray(0, n), layout.journalOffsetBytes + off);
        }
      } finally {
        dev.freeBuffer(zero);
      }
      await dev.flush();
      const sb = newSuperblock(layout, o.btrees.map((b, i) => ({ name: b.name, extents: b.extents, root: roots[i]! })));
      await writeSuperblock(dev, sb);
    } finally {
      if (!o.device) await dev.close();
    }
  }

  private static async openDeviceForFormat(path: string, o: FormatOpts): Promise<Device> {
    const existed = existsSync(path);
    try {
      return await BlockDevice.openWaiting(path, { readOnly: false, io: o.io, ...(o.sizeBytes !== undefined ? { createSizeBytes: o.sizeBytes } : {}) });
    } catch (e) {
      // a file the open created before refusing (e.g. a size the device's alignment does not divide) goes again
      if (!existed && existsSync(path)) rmSync(path, { force: true });
      if (e instanceof SixtreeError && e.code === 'ERR_NOT_FOUND_DEVICE' && o.sizeBytes === undefined) {
        throw new SixtreeError('ERR_NOT_FOUND_DEVICE', `${path} does not exist; pass size to create it`, { path });
      }
      // the device layer's name for the size is not the caller's
      if (e instanceof SixtreeError && e.code === 'ERR_INVALID_ARG' && e.message.includes('opts.createSizeBytes')) {
        throw new SixtreeError('ERR_INVALID_ARG', e.message.replaceAll('opts.createSizeBytes', 'opts.size').replaceAll('createSizeBytes', 'size'), { ...e.details, argument: 'opts.size' }, { cause: e });
      }
      throw e;
    }
  }

  /* ================================================================ open */

  static async open(path: string, o: EngineOpenOpts): Promise<Engine> {
    const dev = o.device ?? (await BlockDevice.openWaiting(path, { readOnly: o.readOnly, io: o.io }));
    let engine: Engine | null = null;
    try {
      const sb = await readSuperblock(dev);
      engine = new Engine(dev, path, sb, o.readOnly);
      const budget = o.cacheSizeBytes ?? cacheSizeBytesDefault;
      BtreeCache.checkBudget(budget, sb.nodeBytes, sb.btrees.length);
      await engine.start(budget);
      return engine;
    } catch (e) {
      if (engine) await engine.abortOpen();
      if (!o.device) await dev.close().catch(() => {});
      throw e;
    }
  }

  private async abortOpen(): Promise<void> {
    this.closed = true;
    if (this.writebackTimer) clearInterval(this.writebackTimer);
    this.stopMemoryWatch?.();
    try {
      if (this.cache) await this.cache.cacheExit({ journalFailed: true });
    } catch {
      /* best effort */
    }
  }

  private async start(budgetBytes: number): Promise<void> {
    const sb = this.sb;
    const backend = this.dev.kind === 'memory' ? null : safeBackend();
    this.cache = new BtreeCache({
      device: this.dev,
      nodeSizeBytes: sb.nodeBytes,
      blockSizeBytes: sb.blockBytes,
      budgetBytes,
      nrBtrees: sb.btrees.length,
      bucketOffset: (b) => bucketToOffset(this.layout, b),
      nodeWrite: (n) => this.nodeWrite(n),
      isSeqBlacklisted: (s) => this.blacklist.isBlacklisted(s),
      tornFloor: () => this.tornFloor,
      onBlacklistedBsets: (n, seqs) => this.blacklistHolders.note({ bucket: n.bucket, btreeId: n.btreeId, level: n.level, minKey: n.keys.minKey, nodeSeq: n.keys.seq, seqs }),
      btreeName: (id) => this.btrees[id]?.name ?? `btree ${id}`,
      ...(backend
        ? {
            auxAlloc: (size: number) => new Uint8Array(backend.mmapAnon(size)),
            auxFree: (buf: Uint8Array) => backend.munmap(buf.buffer as ArrayBuffer),
          }
        : {}),
    });
    this.lookupNowait = new LookupNowait(this.cache, this.roots);
    this.alloc = new Allocator(sb.nrBuckets, { deviceName: this.path, reserve: allocReserveFor(sb.nrBuckets) });
    this.interior = new Interior(this);

    // journal window
    const jr = await readJournal(this.dev, this.layout, { uuid: sb.uuid, blacklist: this.blacklist });
    for (const r of jr.blacklist) this.blacklist.add(r.start, r.end);
    const plan = journalRecoveryPlan(sb, jr, this.blacklist);
    // no node is read before this: a torn append can only hold keys from the replay window on
    this.tornFloor = plan.clean ? plan.nextSeq : jr.lastSeq;

    // roots: newest journal entry, else the superblock
    for (let id = 0; id < sb.btrees.length; id++) {
      const jroot = jr.roots.find((r) => r.btreeId === id);
      let ptr: Uint8Array;
      let level: number;
      if (jroot) {
        ptr = jroot.ptr.slice();
        level = jroot.level;
      } else {
        const r = sb.btrees[id]!.root;
        if (!r) throw new SixtreeError('ERR_TOPOLOGY', `btree ${sb.btrees[id]!.name} has no root in the superblock or journal`, { path: this.path, btree: sb.btrees[id]!.name });
        ptr = ptrBytes(r.bucket, r.seq, r.level, posWords(POS_MIN));
        level = r.level;
      }
      this.roots.push({ node: null, journalPtr: ptr, journalLevel: level, journalChanges: [], lastChangeSeq: 0 });
    }
    for (let id = 0; id < this.roots.length; id++) {
      const root = this.roots[id]!;
      const n = await this.readNodeNoiter(id, root.journalPtr, root.journalLevel, posWords(POS_MAX));
      this.setRoot(id, n);
    }

    // allocator: the tree as the replay window leaves it, plus every pointer in the window
    const replayKeys: Array<{ seq: number; btreeId: number; level: number; key: BkeyI; order: number }> = [];
    let order = 0;
    const rootLevelMin = rootLevelMinFrom(jr.entries, sb.btrees.length);
    for (const e of jr.entries) {
      for (const se of e.entries) {
        if (se.type === JSET_ENTRY.btree_keys) {
          for (let off = 0; off < se.payload.length; ) {
            const k = bkeyDecode(se.payload, off);
            off += bkeyEncodedBytes(k);
            if (se.level > 0 && se.level > rootLevelMin.get(e.seq)![se.btreeId]!) {
              // pointer keys of a level a later root collapse took away (the
              // level may exist again, made of other nodes: not theirs)
              this.counters.replayedKeysStale++;
              continue;
            }
            replayKeys.push({ seq: e.seq, btreeId: se.btreeId, level: se.level, key: k, order: order++ });
            if (k.type === KEY_TYPE.btree_ptr) this.markUsedQuiet(btreePtrDecode(k.value).bucket);
          }
        } else if (se.type === JSET_ENTRY.btree_root) {
          this.markUsedQuiet(btreePtrDecode(se.payload).bucket);
        }
      }
    }

    // the window's keys in journal order; of the pointer keys the newest per
    // position, in the order replay applies them (replayPointerOrder)
    replayKeys.sort((a, b) => a.seq - b.seq || a.order - b.order);
    const pointerKeys = replayPointerOrder(replayKeys.filter((r) => r.level > 0));
    const overlay: PtrOverlay = new Map();
    for (const r of pointerKeys) {
      const k = `${r.btreeId}:${r.level}`;
      let m = overlay.get(k);
      if (!m) overlay.set(k, (m = new Map()));
      m.set(wordsToText(r.key.p), r.key);
    }
    await this.markTreeBuckets(overlay);

    // journal writer
    const start = jr.entries.length || jr.newestSeq ? journalStartAfterRead(jr, plan.nextSeq, { replayPins: true }) : journalStartEmpty(plan.nextSeq, jr.nextWriteOffsetBytes);
    if (!this.readOnly && plan.blacklisted) {
      this.sb = { ...this.sb, blacklist: this.blacklist.toArray() };
      await writeSuperblock(this.dev, this.sb);
    }
    this.journal = new Journal(this.journalDevice(), this.layout, {
      uuid: sb.uuid,
      nrBtrees: sb.btrees.length,
      getRoots: (seq) => this.roots.map((r, id) => this.rootAsOf(id, r, seq)),
      onReclaimNeeded: (target) => this.journalReclaim(target),
      writeInline: () => this.journalWriteInline(),
      onDurable: (seq) => {
        this.alloc.journalDurable(seq);
        this.rootChangesDurable(seq);
      },
      blacklist: this.blacklist,
      shapes: this.shapes,
      start,
      ...(process.env['SIXTREE_DEBUG_PIN_CHECK'] === '1' ? { onLastSeq: (lastSeq: number, seq: number) => this.pinCheck(lastSeq, seq) } : {}),
    });

    // replay: pointer keys level by level from the top, then leaf keys in seq order
    if (replayKeys.length) {
      await this.replay([...pointerKeys, ...replayKeys.filter((r) => r.level === 0)]);
      this.counters.replayedEntries = jr.entries.length;
    }
    // the interior updates replay started journal with the recovery reserve
    // still usable (replayDone explains why)
    this.journal.replayDone(true);
    await this.interior.drain().catch(() => {});
    this.journal.recoveryDone();
    await this.recomputeAllocator();

    if (!this.readOnly) {
      // mark unclean before anything new is written
      this.sb = { ...this.sb, clean: false, blacklist: this.blacklist.toArray() };
      await writeSuperblock(this.dev, this.sb);
      this.writebackTimer = setInterval(() => {
        void this.writebackPass(false);
        if (this.blacklist.length && this.blacklistGc.walkDone && !this.blacklistGc.isRunning) void this.blacklistGc.dropCheck().catch(() => {});
        this.mergeRetryKick();
      }, WRITEBACK_PERIOD_MS);
      this.writebackTimer.unref();
      // blacklisted ranges (this open's or older ones still held): find what holds them, rewrite it, drop what nothing needs
      this.blacklistGc.start();
      this.ptrUpdatesOn = true;
    }
    this.stopMemoryWatch = this.cache.memoryWatchStart();
  }

  /**
   * Blacklist gc step 1: read every node of one btree with its topology
   * frozen (the btree's interior lock held: splits and merges wait, leaf
   * commits go on). Node reads register blacklist holders (cache hook).
   */
  private async walkBtreeFrozen(btreeId: number, visit: () => void, stop: () => boolean): Promise<void> {
    const lock = this.interior.locks[btreeId]!;
    await lock.acquire();
    try {
      await this.walkTree(btreeId, 0, () => visit(), undefined, stop);
    } finally {
      lock.release();
    }
  }

  /** Blacklist gc step 2: rewrite a holder still in the tree into a new bucket; true if it was. */
  private async rewriteForBlacklist(h: BlacklistHolder): Promise<boolean> {
    const done = { done: false };
    if (this.closed || this.failed) return false;
    await this.runInternal(async (bt) => {
      const root = this.roots[h.btreeId]!.node!;
      if (h.level > root.level) return 0;
      const path = bt.pathNew(h.btreeId, h.minKey, 0, h.level, h.level + 1);
      return this.interior.rewriteNode(bt, path, h.level, h.bucket, done);
    });
    return done.done;
  }

  /** Run the journal seq blacklist gc now (normally it runs in the background after an unclean open). */
  async blacklistGcRun(): Promise<void> {
    this.checkWritable();
    if (this.readOnly) return;
    await this.blacklistGc.runNow();
  }

  /**
   * The device as the journal sees it: a journal write that follows node
   * writes not yet flushed is preceded by a flush (bcachefs REQ_PREFLUSH), so
   * an entry that makes new nodes reachable, or moves last_seq past keys that
   * only written nodes hold, never reaches the disk before those nodes.
   */
  private journalDevice(): Device {
    const dev = this.dev;
    const engine = this;
    return Object.create(dev, {
      write: {
        value: async (buf: Uint8Array, off: number) => {
          // An entry relies only on node writes that completed before it
          // was sealed: its last_seq passes a node's keys only once the
          // node's write completed (the pin drops at completion), and an
          // interior update journals its pointers only after its new nodes'
          // writes completed. Those must be durable before the entry can
          // reach the disk: unless a flush started after the newest
          // completion has completed, flush first. (Checked synchronously
          // when the journal starts the write, right after it computed
          // last_seq.) Node writes still in flight are not waited for: no
          // entry relies on them, and a crash that keeps the entry without
          // them finds their keys in the journal still.
          await engine.journalPreflush();
          return dev.write(buf, off);
        },
      },
      flush: {
        value: () => engine.devFlush(),
      },
      // Submitted before returning when no preflush is needed: an await
      // first (even of nothing) would hold the write back until the
      // committing transaction's synchronous apply ended (inserting 1,000
      // keys into their leaves: ~2 ms the flush could have overlapped).
      writeFlush: {
        value: (buf: Uint8Array, off: number): Promise<void> => {
          const write = () => engine.devFlush(() => writeThenFlush(dev, buf, off));
          if (!engine.journalPreflushNeeded()) return write();
          return engine.journalPreflush().then(write);
        },
      },
      // inline (Journal writeInline): only asked when no preflush is needed
      writeFlushSync: {
        value: dev.writeFlushSync
          ? (buf: Uint8Array, off: number) => {
              const started = ++engine.flushStarted;
              dev.writeFlushSync!(buf, off);
              if (started > engine.flushDone) engine.flushDone = started;
            }
          : undefined,
      },
    }) as Device;
  }

  /**
   * Every device flush goes through here: it counts flushes started and
   * completed, so a node write knows whether a flush has covered the node's
   * previous write (see nodeWriteIo). `flush` may be a write and a flush in
   * one (the journal's writeFlush): it covers what completed before the call.
   */
  async devFlush(flush: () => Promise<void> = () => this.dev.flush()): Promise<void> {
    const started = ++this.flushStarted;
    await flush();
    if (started > this.flushDone) this.flushDone = started;
  }

  /**
   * Store open option inlineFlush: true while the store has one call in
   * flight (set by Store). A journal entry written then goes out on this
   * thread, unless node writes need a flush first.
   */
  inlineFlushWhen: (() => boolean) | null = null;

  /**
   * Journal writeInline: see inlineFlushWhen. Only while the journal is calm
   * (journal.calmForInlineWrite) and no interior update is pending: writes
   * completing at once change no rule, but they change the timing a
   * journal under pressure sees (commits waiting for room find no write
   * in flight and write empty entries instead). With a 1 MiB journal and
   * node-sized blocks (an interior update per node write), inline writes
   * under pressure left ~90 interior updates holding ~380 KiB of
   * pre-reservations that the first of them could not get past. Not fully
   * explained: a placement rule counting free room on both sides of the
   * ring's wrap still froze (500 KiB free, 408 KiB needed), so room is
   * lost elsewhere (a tail pinned by nodes the pending updates keep
   * write_blocked, empty entries written at the reserve watermark).
   */
  private journalWriteInline(): boolean {
    return (
      this.inlineFlushWhen !== null &&
      !this.journalPreflushNeeded() &&
      this.interior.pending.length === 0 &&
      this.journal.calmForInlineWrite() &&
      this.inlineFlushWhen()
    );
  }

  /** Node writes completed that no completed flush covers yet (see journalDevice). */
  private journalPreflushNeeded(): boolean {
    return this.nodeWritesFlushNeed > this.flushDone;
  }

  /** Before a journal write: flush node writes it may rely on, unless a flush since covers them (journalDevice). */
  private async journalPreflush(): Promise<void> {
    if (this.journalPreflushNeeded()) {
      this.counters.journalPreflushes++;
      await this.devFlush();
    }
  }

  private markUsedQuiet(b: number): void {
    if (b >= 0 && b < this.sb.nrBuckets && this.alloc.stateOf(b) === 'free') this.alloc.markUsed(b);
  }

  /** Read a node without a transaction (open, recovery walk, fsck); returned unlocked. */
  private async readNodeNoiter(btreeId: number, ptrValue: Uint8Array, level: number, maxKey: Uint32Array, keepLocked = false): Promise<Node> {
    const p = btreePtrDecode(ptrValue);
    const ptr: BtreePtr = { btreeId, level, bucket: p.bucket, seq: p.seq, minKey: p.minKey, maxKey, sectorsWritten: p.sectorsWritten ?? 0 };
    for (let attempt = 0; ; attempt++) {
      const r = await this.cache.nodeGetNoiter(this.owner, ptr, level);
      if (r instanceof Node) {
        if (!keepLocked) nodeUnlock(this.owner, r.lock, SixLockType.read);
        return r;
      }
      if (r === ERR.transaction_restart_fill_mem_alloc_fail) {
        // No node memory, and another holds the cannibalize lock (a fill
        // writing dirty nodes back and waiting for them). Wait for the lock,
        // as a transaction does: its holder's fill may go over the budget,
        // so the next try gets its node. Counting loop turns instead gave up
        // (ERR_IO "no cache memory") under a slow device: an fsck under load
        // with writes taking milliseconds (the stress campaign, --io-delay).
        // nodeGetNoiter releases the lock when it returns. This holds no
        // node lock while it waits (walkTree unlocks each node first).
        this.counters.walkCannibalizeWaits++;
        await this.cache.cannibalizeLockWait(this.owner);
        continue;
      }
      if (attempt > 1000) throw new SixtreeError('ERR_IO', `could not read node at bucket ${p.bucket} (btree ${this.btrees[btreeId]?.name}, level ${level}): the cache kept refusing it (${r === null ? 'null' : errName(r)})`);
      await new Promise((res) => setImmediate(res));
    }
  }

  /**
   * Walk a btree from its root: every node at levels >= minLevel is read and
   * handed to `visit` read-locked (valid only during the call); nodes below
   * minLevel are only reported as pointers. The stack holds pointers, never
   * Node objects: a Node may be evicted and reused while we await a read.
   */
  private async walkTree(
    btreeId: number,
    minLevel: number,
    visit: (n: Node | null, info: { bucket: number; level: number; ptr: Uint8Array; maxKey: Uint32Array; parentBucket: number }) => void,
    overlay?: PtrOverlay,
    stop?: () => boolean,
    onReadError?: (e: SixtreeError, info: { bucket: number; level: number }) => void,
  ): Promise<void> {
    const root = this.roots[btreeId]!;
    const rootNode = root.node!;
    const stack: Array<{ ptr: Uint8Array; level: number; maxKey: Uint32Array; parentBucket: number }> = [
      { ptr: ptrBytes(rootNode.bucket, rootNode.hashVal, rootNode.level, rootNode.keys.minKey), level: rootNode.level, maxKey: posWords(POS_MAX), parentBucket: -1 },
    ];
    const it = new NodeIter();
    while (stack.length) {
      if (stop?.()) return;
      const e = stack.pop()!;
      const bucket = btreePtrDecode(e.ptr).bucket;
      if (e.level < minLevel) {
        visit(null, { bucket, level: e.level, ptr: e.ptr, maxKey: e.maxKey, parentBucket: e.parentBucket });
        continue;
      }
      let n: Node;
      try {
        n = await this.readNodeNoiter(btreeId, e.ptr, e.level, e.maxKey, true);
      } catch (err) {
        // the caller reports an unreadable node and the walk goes on past its subtree
        if (!onReadError || !(err instanceof SixtreeError) || err.code === 'ERR_CLOSED') throw err;
        onReadError(err, { bucket, level: e.level });
        continue;
      }
      try {
        visit(n, { bucket, level: e.level, ptr: e.ptr, maxKey: e.maxKey, parentBucket: e.parentBucket });
        if (n.level === 0) continue;
        let kids: typeof stack = [];
        it.initStart(n.keys);
        for (let h = it.peek(); h >= 0; it.advance(), h = it.peek()) {
          if (n.keys.keyType(h) !== KEY_TYPE.btree_ptr) continue;
          const max = new Uint32Array(BPOS_WORDS);
          n.keys.keyPosTo(h, max, 0);
          kids.push({ ptr: n.keys.keyValue(h).slice(), level: n.level - 1, maxKey: max, parentBucket: n.bucket });
        }
        // before replay the node on disk may be stale: the journal's pointer
        // keys for this level and range win (bcachefs overlays journal keys)
        const ov = overlay?.get(`${btreeId}:${n.level}`);
        if (ov) kids = overlayKids(kids, ov, n);
        for (let i = kids.length - 1; i >= 0; i--) stack.push(kids[i]!);
      } finally {
        nodeUnlock(this.owner, n.lock, SixLockType.read);
      }
    }
  }

  /** Buckets of every node reachable from the roots; leaves counted from their parents' pointers. */
  private async reachableBuckets(): Promise<Set<number>> {
    const used = new Set<number>();
    for (let id = 0; id < this.roots.length; id++) {
      await this.walkTree(id, 1, (_n, info) => {
        used.add(info.bucket);
      });
    }
    return used;
  }

  /** Before replay: buckets of the tree as the journal window will leave it (pointer keys overlaid). */
  private async markTreeBuckets(overlay: PtrOverlay): Promise<void> {
    for (let id = 0; id < this.roots.length; id++) {
      await this.walkTree(id, 1, (_n, info) => this.markUsedQuiet(info.bucket), overlay);
    }
  }

  /** After replay: buckets marked only for stale pointers go back (pending frees stay). */
  private async recomputeAllocator(): Promise<void> {
    await this.interior.drain().catch(() => {});
    const used = await this.reachableBuckets();
    for (const u of this.interior.pending) for (const b of u.oldBuckets) used.add(b);
    for (let b = 0; b < this.sb.nrBuckets; b++) {
      if (this.alloc.stateOf(b) === 'used' && !used.has(b)) {
        this.alloc.free(b);
        this.blacklistHolders.gone(b);
      } else if (this.alloc.stateOf(b) === 'free' && used.has(b)) this.alloc.markUsed(b);
    }
  }

  /**
   * Apply the window's keys: `keys` is the pointer keys as replayPointerOrder
   * gives them, then the leaf keys in seq order. One commit per run of pointer
   * keys of one btree, level and kind, or of leaf keys of one seq (at most 256).
   */
  private async replay(keys: ReplayKey[]): Promise<void> {
    let i = 0;
    while (i < keys.length) {
      let j = i + 1;
      while (j < keys.length && keys[j]!.level === keys[i]!.level && (keys[i]!.level > 0 ? replayGroupOf(keys[j]!) === replayGroupOf(keys[i]!) : keys[j]!.seq === keys[i]!.seq) && j - i < 256) j++;
      const group = keys.slice(i, j);
      i = j;
      const level = group[0]!.level;
      // (pointer keys are grouped by btree, level and kind, not seq: pin the oldest seq any of their positions had)
      const seq = level === 0 ? group[0]!.seq : Math.min(...group.map((g) => g.pinSeq ?? g.seq));
      // leaf keys come last, in seq order: every key of an entry before seq is in a node now
      if (level === 0) this.journal.replayedBefore(seq);
      const updates: Update[] = [];
      for (const g of group) {
        const root = this.roots[g.btreeId]!.node!;
        if (g.level > root.level) continue; // pointer keys of a level the tree no longer has (the root collapsed since)
        if (g.level > 0 && g.key.type === KEY_TYPE.btree_ptr) {
          // a pointer replayed into a level whose nodes we are about to read: keep the child unread
        }
        updates.push({ btreeId: g.btreeId, level: g.level, key: { ...g.key }, path: null });
      }
      if (!updates.length) continue;
      try {
        await this.runInternal(async (bt) => {
          const ups = updates.map((u) => ({ ...u, key: { ...u.key }, path: null }));
          const r = await transCommit(bt, { updates: ups, journal: false, pinSeq: seq });
          return r.ret;
        });
      } catch (e) {
        if (e instanceof SixtreeError) throw e;
        // an internal check failed (a key the tree's pointers send to a node
        // whose range does not hold it, ...): the journal and the tree on disk disagree
        const u = updates[0]!;
        const where = `btree ${this.btrees[u.btreeId]!.name} level ${u.level}, ${updates.length} keys from ${wordsToText(u.key.p)}`;
        throw new SixtreeError('ERR_TOPOLOGY', `recovery: replaying journal entry ${seq} (${where}) failed on ${this.path}: ${e instanceof Error ? e.message : String(e)}`, { path: this.path, btree: this.btrees[u.btreeId]!.name, level: u.level, pos: wordsToText(u.key.p), seq }, { cause: e });
      }
      this.counters.replayedKeys += updates.length;
    }
  }

  /**
   * The starvation gate. A transaction is restarted whenever something it
   * read changed before its commit; one whose leaves do not fit in the cache
   * together (or that waits for the journal, memory or an interior lock) has
   * to drop its locks on the way, and under a steady stream of writers over
   * the same leaves it can restart forever (the crash campaign's wipes did,
   * 10,000 times). Once a transaction has restarted STARVATION_RESTARTS times
   * it closes the gate: every other transaction (user and internal) waits at
   * the start of its next attempt until the starving one has finished, so it
   * soon runs alone. One at a time: a second starving transaction waits for
   * the first like everyone else.
   */
  private starving: { startSeq: number; done: Promise<void>; open: () => void } | null = null;

  /** Before each attempt: wait while another transaction holds the gate. Sync (no await) when it is open. */
  starvationGateWait(startSeq: number): Promise<void> | null {
    const g = this.starving;
    if (g === null || g.startSeq === startSeq) return null;
    this.counters.starvationWaits++;
    return (async () => {
      while (this.starving !== null && this.starving.startSeq !== startSeq) await this.starving.done;
    })();
  }

  /** A transaction restarted too often: close the gate for it (false if another holds it). */
  starvationGateClose(startSeq: number): boolean {
    if (this.starving !== null) return this.starving.startSeq === startSeq;
    let open!: () => void;
    const done = new Promise<void>((r) => (open = r));
    this.starving = { startSeq, done, open };
    this.counters.starvationGates++;
    return true;
  }

  /** The transaction of startSeq holds the gate (locking.ts never makes it a deadlock victim while another can be). */
  starvationGateHeldBy(startSeq: number): boolean {
    return this.starving !== null && this.starving.startSeq === startSeq;
  }

  starvationGateOpen(startSeq: number): void {
    const g = this.starving;
    if (g === null || g.startSeq !== startSeq) return;
    this.starving = null;
    g.open();
  }

  /** Run fn in a fresh internal transaction until it does not restart. */
  async runInternal(fn: (bt: BtreeTrans) => Promise<number>): Promise<void> {
    const startSeq = transStartSeqNew();
    const made = new TxCtx(this.interior);
    try {
      await this.runInternalAttempts(fn, startSeq, made);
    } finally {
      made.finish();
    }
  }

  private async runInternalAttempts(fn: (bt: BtreeTrans) => Promise<number>, startSeq: number, made: TxCtx): Promise<void> {
    let gate = false;
    try {
      await this.runInternalGated(fn, startSeq, made, (g) => (gate = g));
    } finally {
      if (gate) this.starvationGateOpen(startSeq);
    }
  }

  private async runInternalGated(fn: (bt: BtreeTrans) => Promise<number>, startSeq: number, made: TxCtx, gated: (g: boolean) => void): Promise<void> {
    let gate = false;
    for (let r = 0; ; r++) {
      if (r > 100_000) throw new Error('internal transaction restarted too often');
      if (!gate && r >= STARVATION_RESTARTS) gated((gate = this.starvationGateClose(startSeq)));
      if (!gate) {
        const w = this.starvationGateWait(startSeq);
        if (w) {
          // never wait holding interior locks the starving one may need
          made.finish();
          await w;
        }
      }
      const bt = new BtreeTrans(this, startSeq, r);
      bt.txCtx = made;
      try {
        const ret = await fn(bt);
        if (ret === 0) return;
        if (!errMatches(ret, RESTART)) throw new Error(`internal: ${errName(ret)}`);
        this.countRestart(ret);
      } catch (e) {
        if (e instanceof Error && e.name === 'TransactionRestart') {
          this.countRestart((e as unknown as { restartCode: number }).restartCode);
          continue;
        }
        throw e;
      } finally {
        bt.unlockAll();
      }
    }
  }

  /* ================================================================ roots */

  setRoot(btreeId: number, n: Node): void {
    const root = this.roots[btreeId]!;
    if (root.node && root.node !== n) root.node.clear(NodeFlag.noevict);
    n.set(NodeFlag.noevict);
    root.node = n;
    this.cache.setRootInfo(btreeId, n.level);
  }

  /** A root as the journal records it: pointer bytes and level. */
  rootPtrOf(n: Node): { ptr: Uint8Array; level: number } {
    return { ptr: ptrBytes(n.bucket, n.keys.seq, n.level, n.keys.minKey), level: n.level };
  }

  /** A new root, journaled with the keys of entry `seq`: entries from `seq` on record it. */
  rootJournalUpdate(btreeId: number, r: { ptr: Uint8Array; level: number }, seq: number): void {
    this.roots[btreeId]!.journalChanges.push({ seq, ptr: r.ptr, level: r.level });
  }

  /** The root of btree id as entry `seq` records it. */
  private rootAsOf(btreeId: number, r: BtreeRoot, seq: number): JournalRoot {
    let ptr = r.journalPtr;
    let level = r.journalLevel;
    for (const c of r.journalChanges) {
      if (c.seq > seq) break;
      ptr = c.ptr;
      level = c.level;
    }
    return { btreeId, level, ptr };
  }

  /** Entries up to `seq` are durable: their root changes become the base. */
  private rootChangesDurable(seq: number): void {
    for (const r of this.roots) {
      while (r.journalChanges.length && r.journalChanges[0]!.seq <= seq) {
        const c = r.journalChanges.shift()!;
        r.journalPtr = c.ptr;
        r.journalLevel = c.level;
      }
    }
  }

  /* ================================================================ nodes */

  /**
   * Debug (SIXTREE_DEBUG_PIN_CHECK=1; the crash campaign turns it on): as a
   * journal entry's write starts, every key not yet on disk whose journal seq
   * is below the last_seq the entry records must be held back by its node's
   * pin; otherwise a crash after this entry loses it (recovery replays from
   * last_seq). Nodes of an interior update (new or dying) are covered by the
   * update's pins. Walks every unwritten key of every hashed node.
   */
  private pinCheck(lastSeq: number, seq: number): void {
    for (const n of this.cache.hashedNodes()) {
      if (n.has(NodeFlag.dying) || n.has(NodeFlag.will_make_reachable)) continue;
      const v = n.keys.unwrittenVersionMin();
      if (v === 0 || v >= lastSeq) continue;
      if (n.journalPin?.active && n.journalPin.seq <= v) continue;
      this.counters.pinCheckViolations++;
      this.pinCheckFirst ??=
        `journal entry ${seq} records last_seq ${lastSeq}, but btree ${this.btrees[n.btreeId]?.name} level ${n.level} node at bucket ${n.bucket} ` +
        `holds an unwritten key of seq ${v} (pin ${n.journalPin?.active ? n.journalPin.seq : 'none'}, flags ${n.flags.toString(16)})`;
    }
  }

  topologyError(n: Node, what: string): SixtreeError {
    return new SixtreeError(
      'ERR_TOPOLOGY',
      `btree ${this.btrees[n.btreeId]?.name} level ${n.level} node at bucket ${n.bucket} (${wordsToText(n.keys.minKey)}..${wordsToText(n.keys.maxKey)}): ${what}`,
      { path: this.path, btree: this.btrees[n.btreeId]?.name, level: n.level, offset: bucketToOffset(this.layout, n.bucket) },
    );
  }

  /**
   * A bucket for a new node. With none free to the watermark, buckets other
   * updates are giving back (their old nodes' buckets come free once their
   * entry is durable: Allocator PENDING, or an interior update still
   * completing; not one still in memory, which waits for its transaction,
   * maybe this one) are waited for, our locks dropped (the update's new nodes,
   * `keep`, stay locked: see nodeAllocNew), before ERR_NO_SPACE (bcachefs
   * waits on its freelist the same way). The caller relocks.
   */
  private async bucketAlloc(trans: BtreeTrans, keep: readonly Node[], watermark: AllocWatermark): Promise<number> {
    for (let round = 0; ; round++) {
      const b = this.alloc.tryAlloc(watermark);
      if (b >= 0) return b;
      const pendingSeq = this.alloc.pendingSeqOldest;
      const updates = this.interior.completing;
      if (round >= BUCKET_WAIT_ROUNDS_MAX || (!pendingSeq && !updates)) return this.alloc.alloc(watermark); // throws ERR_NO_SPACE
      this.counters.bucketWaits++;
      trans.unlock(new Set(keep.map((m) => m.lock)));
      if (pendingSeq) await this.journal.waitDurable(pendingSeq);
      else await new Promise<void>((r) => this.onUpdateFinished(r));
    }
  }

  /**
   * A new node for an interior update: bucket + memory, intent+write held by
   * trans, not hashed. `watermark` 'no_growth' for updates that add no node
   * to the tree (alloc.ts: they may take the buckets held back from growth).
   */
  async nodeAllocNew(trans: BtreeTrans, btreeId: number, level: number, alsoHeld: readonly Node[] = [], watermark: AllocWatermark = 'normal'): Promise<Node> {
    const bucket = await this.bucketAlloc(trans, alsoHeld, watermark);
    let n: Node | null = null;
    try {
      n = await this.cache.nodeMemAlloc(trans);
      if (!n && trans.keepLocksForIo && this.cache.cannibalizeLock(trans) === 0) {
        // free now: take it without dropping our locks (a transaction larger
        // than the cache would otherwise lose its leaves on every attempt)
        try {
          n = await this.cache.nodeMemAlloc(trans);
        } finally {
          this.cache.cannibalizeUnlock(trans);
        }
      }
      if (!n) {
        // never wait for the cannibalize lock holding node locks: its holder
        // may be traversing, waiting for one of them (a cycle the lock graph
        // cannot see). The caller relocks (and restarts if a node changed).
        // New nodes already allocated (alsoHeld) stay locked: nobody can
        // reach them through the tree, but a transaction that found the
        // recycled node in its earlier life may be waiting on its lock, and
        // an unlock hands the lock straight to waiters.
        trans.unlock(new Set(alsoHeld.map((m) => m.lock)));
        await this.cache.cannibalizeLockWait(trans);
        try {
          n = await this.cache.nodeMemAlloc(trans);
        } finally {
          this.cache.cannibalizeUnlock(trans);
        }
      }
      if (!n) throw new SixtreeError('ERR_CACHE_TOO_SMALL', `no node memory for a new node (cache budget ${bytesToText(this.cache.budgetBytes)})`);
    } catch (e) {
      this.alloc.free(bucket);
      throw e;
    }
    n.btreeId = btreeId;
    n.level = level;
    n.bucket = bucket;
    n.hashVal = 0;
    n.hashId = 0;
    return n;
  }

  /** A new node that will not be used (an update backed out): memory and bucket back. */
  nodeFreeNew(trans: BtreeTrans, n: Node): void {
    const bucket = n.bucket;
    // built and hashed in already (nodeInstallNew unlocked it): a split failing after its first half
    const installed = n.has(NodeFlag.will_make_reachable);
    if (n.has(NodeFlag.dirty)) this.cache.clearDirty(n);
    n.flags = 0;
    n.writeBlockedCount = 0;
    this.nodeMemFree(n);
    if (!installed) nodeUnlockOwned(trans, n);
    if (bucket >= 0) this.alloc.free(bucket);
    n.bucket = -1;
  }

  /** Fill new node dst with the live keys of src in [from, to], and hash it in. */
  nodeBuildFrom(trans: BtreeTrans, dst: Node, src: Node, from: Uint32Array, to: Uint32Array): void {
    // a format fitted to the keys it will hold (and its range, so later
    // inserts pack too); src's own instead when it packs every key into as
    // many words (a split, usually: keys then copy as they are), decided
    // from the range alone when it can be (no walk over the keys)
    const sizeMax = this.btrees[dst.btreeId]!.extents ? 0xffffffff : 0;
    const versionMax = this.journal.seq + NODE_FORMAT_VERSION_HEADROOM;
    const versionMin = this.journal.seq + NODE_FORMAT_VERSION_HEADROOM / 2;
    let format: BkeyFormat;
    if (src.keys.formatReusableForRange(from, to, this.journal.seq, versionMax, sizeMax, versionMin)) {
      format = src.keys.format;
    } else {
      const fitted = src.keys.computeFormat(from, to, { versionNow: this.journal.seq, versionMax, positions: [from, to], ...(sizeMax ? { sizeMax } : {}) });
      format = src.keys.formatReusable(fitted, versionMin) ? src.keys.format : fitted;
    }
    const seq = randomNodeSeq();
    dst.keys.initEmpty({ btreeId: dst.btreeId, level: dst.level, minKey: from, maxKey: to, seq, format });
    // in src's own format the keys are merged as spans (buildFromRange); another one repacks them one by one
    const copied = format === src.keys.format ? dst.keys.buildFromRange(src.keys, from, to) : src.keys.sortInto(dst.keys, from, to);
    if (copied < 0) {
      // the fitted format can take more words per key than src's (its fields
      // reach the range's ends, the size and version headroom): a full node
      // rewritten whole then overflows. src's own format holds them, as src does.
      if (format === src.keys.format) throw this.topologyError(src, 'keys do not fit in a new node');
      this.counters.nodeBuildFormatFallbacks++;
      dst.keys.initEmpty({ btreeId: dst.btreeId, level: dst.level, minKey: from, maxKey: to, seq, format: src.keys.format });
      if (dst.keys.buildFromRange(src.keys, from, to) < 0) throw this.topologyError(src, 'keys do not fit in a new node');
    }
    this.nodeInstallNew(trans, dst);
  }

  /**
   * Fill new node dst with the live keys of two siblings (a merge), in a
   * format fitted to both and to the merged range (bcachefs computes it over
   * both nodes the same way), and hash it in. false: they do not fit in one
   * node (dst is left owned and unhashed: free it).
   */
  nodeBuildMerged(trans: BtreeTrans, dst: Node, left: Node, right: Node): boolean {
    const minKey = left.keys.minKey;
    const maxKey = right.keys.maxKey;
    const format = NodeKeys.computeFormatOf([left.keys, right.keys], {
      versionNow: this.journal.seq,
      versionMax: this.journal.seq + NODE_FORMAT_VERSION_HEADROOM,
      positions: [minKey, maxKey],
      ...(this.btrees[dst.btreeId]!.extents ? { sizeMax: 0xffffffff } : {}),
    });
    dst.keys.initEmpty({ btreeId: dst.btreeId, level: dst.level, minKey, maxKey, seq: randomNodeSeq(), format });
    if (left.keys.sortInto(dst.keys) < 0 || right.keys.sortInto(dst.keys, undefined, undefined, true) < 0) return false;
    this.nodeInstallNew(trans, dst);
    return true;
  }

  /** Initialise a new node empty over [minKey, maxKey] and hash it in (a new root). */
  nodeInitEmpty(trans: BtreeTrans, n: Node, minKey: Uint32Array, maxKey: Uint32Array): void {
    n.keys.initEmpty({ btreeId: n.btreeId, level: n.level, minKey, maxKey, seq: randomNodeSeq() });
    this.nodeInstallNew(trans, n);
  }

  /** Hash a freshly built node in, dirty and will_make_reachable, and release our locks on it. */
  private nodeInstallNew(trans: BtreeTrans, n: Node): void {
    const seq = n.keys.seq;
    if (!this.cache.hashInsert(n, seq)) throw new Error(`node seq collision ${seq}`);
    n.set(NodeFlag.will_make_reachable);
    n.set(NodeFlag.ptr_unjournaled);
    this.cache.setDirty(n);
    // keys copied from older nodes carry their seqs; the node is pinned by the update (old node pins moved there)
    nodeUnlockOwned(trans, n);
  }

  /** The in-memory pointer key for child n (at n's max key). */
  ptrKeyFor(n: Node): BkeyI {
    const max = new Uint32Array(BPOS_WORDS);
    wordsCopy(max, 0, n.keys.maxKey, 0);
    const min = new Uint32Array(BPOS_WORDS);
    wordsCopy(min, 0, n.keys.minKey, 0);
    return bkeyBtreePtr(max, { bucket: n.bucket, seq: n.hashVal, level: n.level, minKey: min });
  }

  nodeInsertPtr(parent: Node, child: Node): void {
    this.nodeInsertKeyInMemory(parent, this.ptrKeyFor(child));
  }

  /** Insert into a node the caller holds write-locked (or owns). */
  nodeInsertKeyInMemory(n: Node, k: BkeyI): void {
    if (!n.keys.insertKey(k)) throw this.topologyError(n, 'pointer key does not fit after the space check');
    if (!n.has(NodeFlag.dirty)) this.cache.setDirty(n);
  }

  /** A commit (or update) put keys of journal seq `seq` into n (seq 0: no pin yet). */
  nodeDirtied(n: Node, seq: number): void {
    if (!n.has(NodeFlag.dirty)) this.cache.setDirty(n);
    if (seq > 0) {
      if (n.keys.hasWritable()) n.keys.noteJournalSeq(seq);
      n.journalPin = this.journal.pinAdd(seq, n.journalPin ?? new JournalPin());
    }
    // background writeback once dirty nodes fill a share of what the cache can hold
    // (journal reclaim and the periodic pass take care of the rest)
    if (!this.writebackRunning && this.cache.dirty * WRITEBACK_DIRTY_DEN > this.cache.usedMax * WRITEBACK_DIRTY_NUM) {
      queueMicrotask(() => this.writebackPass(false));
    }
  }

  /** Old node leaving the tree: its keys live on in the new nodes. */
  nodeCleanForDrop(n: Node): void {
    if (n.has(NodeFlag.dirty)) this.cache.clearDirty(n);
    n.clear(NodeFlag.need_write);
  }

  /** Old node replaced by an update: give its memory back once no write is in flight. Called with intent+write held. */
  nodeFreeOld(n: Node): void {
    n.clear(NodeFlag.noevict);
    if (n.flags & (NodeFlag.write_in_flight | NodeFlag.read_in_flight | NodeFlag.will_make_reachable | NodeFlag.dirty | NodeFlag.write_blocked)) {
      // a write still has to happen or finish (an unwritten new node of an
      // earlier update is written by that update): free it afterwards
      setTimeout(() => this.nodeFreeOldLater(n), 1).unref();
      return;
    }
    this.nodeMemFree(n);
  }

  /** A node's memory back to the cache, with the record of a write of it that failed (never retried now). */
  private nodeMemFree(n: Node): void {
    this.pendingWrites.delete(n);
    this.cache.freeInmem(n);
  }

  private nodeFreeOldLater(n: Node): void {
    if (this.closed || n.hashVal !== 0 || n.list !== 'live') return; // already reused or moved
    if (n.flags & (NodeFlag.write_in_flight | NodeFlag.will_make_reachable | NodeFlag.write_blocked)) {
      setTimeout(() => this.nodeFreeOldLater(n), 5).unref();
      return;
    }
    if (!nodeTryLock(this.owner, n.lock, SixLockType.intent)) {
      setTimeout(() => this.nodeFreeOldLater(n), 1).unref();
      return;
    }
    if (!nodeTryLock(this.owner, n.lock, SixLockType.write)) {
      nodeUnlock(this.owner, n.lock, SixLockType.intent);
      setTimeout(() => this.nodeFreeOldLater(n), 1).unref();
      return;
    }
    try {
      if (n.has(NodeFlag.dirty)) this.cache.clearDirty(n);
      if (!(n.flags & NodeFlag.write_in_flight)) this.nodeMemFree(n);
    } finally {
      nodeUnlock(this.owner, n.lock, SixLockType.write);
      nodeUnlock(this.owner, n.lock, SixLockType.intent);
    }
  }

  /* ============================================================ node write */

  /**
   * Write a node's unwritten keys (the cache's nodeWrite contract: the
   * synchronous part runs before the promise is returned). Log before data:
   * the journal must be durable up to the bset's seq first.
   */
  nodeWrite(n: Node): Promise<void> {
    if (n.has(NodeFlag.write_in_flight)) return n.writeDone ?? Promise.resolve();
    // new nodes are written by their update group; blocked ones wait for theirs
    if (n.flags & (NodeFlag.write_blocked | NodeFlag.never_write | NodeFlag.will_make_reachable)) return Promise.resolve();
    if (this.readOnly) return Promise.resolve();
    const w = this.nodeWriteSeal(n);
    if (!w) return Promise.resolve();
    const p = this.nodeWriteIo(n, w);
    n.writeDone = p;
    return p;
  }

  /** The synchronous half of a node write: seal the unwritten keys (null: nothing to write). */
  private nodeWriteSeal(n: Node): NodeWrite | null {
    // a write that failed earlier: its sealed bytes are still in the node, retry them
    const retry = this.pendingWrites.get(n);
    const w = retry ?? nodeWritePrepare(n.keys);
    this.pendingWrites.delete(n);
    if (!w) {
      if (n.has(NodeFlag.dirty)) this.cache.clearDirty(n);
      if (n.journalPin) this.journal.pinDrop(n.journalPin);
      n.clear(NodeFlag.will_make_reachable);
      return null;
    }
    n.set(NodeFlag.write_in_flight);
    // A retry writes only what the failed attempt sealed: keys inserted since
    // then are in the writable set after it and keep the node dirty, so the
    // completion moves the journal pin to them and a later write takes them.
    if (n.has(NodeFlag.dirty) && !(retry && n.keys.hasUnwrittenKeys())) this.cache.clearDirty(n);
    return w;
  }

  /**
   * Seal a new node of an update group now and write it once `gate` (the
   * previous group's journal entry) resolves. Resolves when written.
   */
  nodeWriteSealed(n: Node, gate: Promise<void>): Promise<void> {
    if (n.has(NodeFlag.write_in_flight)) {
      // a write of an earlier state is under way: seal the rest after it
      const p = (n.writeDone ?? Promise.resolve()).then(() => this.nodeWriteSealed(n, gate));
      return p;
    }
    const w = this.nodeWriteSeal(n);
    if (!w) return Promise.resolve();
    const p = gate.then(() => this.nodeWriteIo(n, w));
    n.writeDone = p;
    this.counters.nodeWritesNew++;
    return p;
  }

  private async nodeWriteIo(n: Node, w: NodeWrite): Promise<void> {
    let wroteEnd = 0;
    await this.writeSlot();
    try {
      if (w.journalSeq > this.journal.durableSeq) await this.journal.waitDurable(w.journalSeq);
      // an append must not reach the disk before the node's previous write
      // (a device may persist unflushed writes in any order, and the reader
      // takes a gap between bsets for corruption): flush first if no flush
      // has covered that write yet
      if (w.offsetBytes > 0 && (this.nodeFlushNeeded.get(n) ?? 0) > this.flushDone) {
        this.counters.nodeAppendPreflushes++;
        await this.devFlush();
      }
      if (n.has(NodeFlag.dying) && !n.has(NodeFlag.will_make_reachable)) {
        // replaced by an interior update while this write waited: its keys
        // live on in the new nodes (and its journal pins with the update), and
        // its bucket is freed once that update is durable: writing now could
        // land on the bucket's next owner. (A new node's first write always
        // happens: an earlier update's entry may point to it.)
        this.counters.nodeWritesSkippedDying++;
      } else {
        await this.dev.write(w.bytes, bucketToOffset(this.layout, n.bucket) + w.offsetBytes);
        this.nodeFlushNeeded.set(n, this.flushStarted + 1);
        this.nodeWritesFlushNeed = this.flushStarted + 1;
        this.counters.nodeWrites++;
        wroteEnd = w.offsetBytes + w.bytes.length;
      }
    } catch (e) {
      this.counters.nodeWriteErrors++;
      this.lastNodeWriteError = e;
      // the sealed bytes stay in the node until a later write gets them out
      this.pendingWrites.set(n, w);
      n.clear(NodeFlag.write_in_flight);
      if (!n.has(NodeFlag.dirty)) this.cache.setDirty(n);
      n.writeDone = null;
      this.writeSlotRelease();
      throw e;
    }
    this.writeSlotRelease();
    // the written sets are merged in memory (keys move): only under the
    // node's write lock, so no reader holds handles into it. A completion
    // never waits for locks (whoever holds the node may be waiting for this
    // write): if the lock is busy the merge is left to the next writer of
    // the node (just_written, see nodeCompactPending).
    if (this.nodeTryLockForCompaction(n)) {
      try {
        nodeWriteDone(n.keys);
        n.clear(NodeFlag.just_written);
      } finally {
        nodeUnlock(this.owner, n.lock, SixLockType.write);
        nodeUnlock(this.owner, n.lock, SixLockType.intent);
      }
    } else {
      n.keys.writeDoneDeferred();
      n.set(NodeFlag.just_written);
      this.counters.compactionsDeferred++;
    }
    n.clear(NodeFlag.write_in_flight);
    n.clear(NodeFlag.will_make_reachable);
    n.writeDone = null;
    // pin: keys that arrived during the write keep the node dirty
    if (n.has(NodeFlag.dirty)) {
      // move the pin to the keys still unwritten: take the new pin before
      // dropping the old one, or the window could pass them in between
      const min = n.keys.unwrittenJournalSeqMin;
      const old = n.journalPin;
      if (min > 0) n.journalPin = this.journal.pinAdd(min, new JournalPin());
      else n.journalPin = null;
      if (old) this.journal.pinDrop(old);
    } else if (n.journalPin) {
      this.journal.pinDrop(n.journalPin);
    }
    if (wroteEnd > 0) this.ptrUpdateQueue(n, wroteEnd / PTR_SECTOR_BYTES);
  }

  /** Intent + write on n for the engine's owner, now or not at all. */
  private nodeTryLockForCompaction(n: Node): boolean {
    if (!nodeTryLock(this.owner, n.lock, SixLockType.intent)) return false;
    if (nodeTryLock(this.owner, n.lock, SixLockType.write)) return true;
    nodeUnlock(this.owner, n.lock, SixLockType.intent);
    return false;
  }

  /** A writer holding n's write lock finishes a deferred post-write merge first. */
  nodeCompactPending(n: Node): void {
    if (!n.has(NodeFlag.just_written) || n.has(NodeFlag.write_in_flight)) return;
    n.keys.compactWritten();
    n.clear(NodeFlag.just_written);
  }

  private writeSlot(): Promise<void> {
    if (this.writesInFlight < WRITEBACK_INFLIGHT_MAX) {
      this.writesInFlight++;
      return Promise.resolve();
    }
    return new Promise((r) => this.writeSlotWaiters.push(r));
  }

  private writeSlotRelease(): void {
    const w = this.writeSlotWaiters.shift();
    if (w) w();
    else this.writesInFlight--;
  }

  /** Write dirty nodes: all (flush) or those pinning the oldest entries (background). */
  private async writebackPass(all: boolean, targetSeq = Infinity): Promise<number> {
    if (this.writebackRunning && !all) return 0;
    this.writebackRunning = true;
    this.counters.writebackPasses++;
    let started = 0;
    try {
      const dirty: Node[] = [];
      for (const n of this.cache.liveNodes()) {
        if (!n.has(NodeFlag.dirty) || n.has(NodeFlag.will_make_reachable)) continue;
        if (!all && targetSeq !== Infinity && !(n.journalPin?.active && n.journalPin.seq < targetSeq)) continue;
        if (n.has(NodeFlag.write_blocked)) {
          // written the moment its interior updates journal (nodeWriteIfNeeded)
          if (!n.has(NodeFlag.need_write)) this.counters.nodeWritesWanted++;
          n.set(NodeFlag.need_write);
          this.writesWanted++;
          continue;
        }
        dirty.push(n);
      }
      dirty.sort((a, b) => (a.journalPin?.seq ?? Infinity) - (b.journalPin?.seq ?? Infinity));
      const writes: Promise<void>[] = [];
      for (const n of dirty) {
        if (!nodeTryLock(this.owner, n.lock, SixLockType.read)) continue;
        try {
          writes.push(this.nodeWrite(n).catch(() => {}));
          started++;
        } finally {
          nodeUnlock(this.owner, n.lock, SixLockType.read);
        }
      }
      await Promise.all(writes);
    } finally {
      this.writebackRunning = false;
    }
    return started;
  }

  private async journalReclaim(targetSeq: number): Promise<boolean> {
    this.counters.reclaimCalls++;
    const wantedBefore = this.writesWanted;
    const n = await this.writebackPass(true, targetSeq);
    if (n > 0) return true;
    // writes already under way release their pins when they complete
    const inFlight: Promise<void>[] = [];
    for (const m of this.cache.liveNodes()) {
      if (m.has(NodeFlag.write_in_flight) && m.writeDone && m.journalPin?.active && m.journalPin.seq < targetSeq) inFlight.push(m.writeDone);
    }
    if (inFlight.length) {
      await Promise.race(inFlight).catch(() => {});
      return true;
    }
    // nodes pinning old entries are write_blocked by interior updates under
    // way: they are written when those journal (their entries use the
    // interior share of the ring, so they can); wait for one to finish
    // interior updates completing (their new nodes being written, their entry
    // journaled) hold pins of the entries they replace until they are done
    const updatesPinning = this.interior.pending.some((u) => u.state !== 'in_memory' && u.pins.some((p) => p.active && p.seq < targetSeq));
    if ((this.writesWanted > wantedBefore || updatesPinning) && this.interior.pending.length) {
      this.counters.reclaimWaitsForUpdates++;
      await new Promise<void>((r) => this.onUpdateFinished(r));
      return true;
    }
    return false;
  }

  /**
   * A write_blocked node writeback wanted (need_write) was just unblocked:
   * write it now (bcachefs btree_node_write_if_need), unless it is locked for
   * writing (then the next writeback pass takes it).
   */
  nodeWriteIfNeeded(n: Node): void {
    if (!n.has(NodeFlag.need_write) || n.has(NodeFlag.write_blocked)) return;
    if (n.hashVal === 0 || n.has(NodeFlag.dying) || !n.has(NodeFlag.dirty)) {
      n.clear(NodeFlag.need_write);
      return;
    }
    if (!nodeTryLock(this.owner, n.lock, SixLockType.read)) return;
    try {
      n.clear(NodeFlag.need_write);
      void this.nodeWrite(n).catch(() => {});
    } finally {
      nodeUnlock(this.owner, n.lock, SixLockType.read);
    }
  }

  /* ================================================================ journal glue */

  /** Journal bytes a commit's keys take: one btree_keys sub-entry per run of (btree, level), as journalAddKeys writes them. */
  journalKeysBytes(updates: readonly Update[]): number {
    let total = 0;
    let i = 0;
    while (i < updates.length) {
      let j = i;
      let bytes = 0;
      while (j < updates.length && updates[j]!.btreeId === updates[i]!.btreeId && updates[j]!.level === updates[i]!.level) bytes += bkeyEncodedBytes(updates[j++]!.key);
      total += jsetEntryBytes(bytes);
      i = j;
    }
    return total;
  }

  /** Reserve `bytes` (journalKeysBytes) in the open journal entry, or null if that would wait. */
  journalTryReserve(bytes: number, _nrKeys: number): JournalRes | null {
    this.checkWritable();
    return this.journal.tryReserve(bytes);
  }

  /**
   * Wait until the journal has room for `bytes`. withReclaim false: do not
   * ask for reclaim, return false instead (a commit holding interior updates
   * open closes them first: reclaim may need the nodes they block).
   */
  async journalReserveWait(bytes: number, _nrKeys: number, withReclaim = true): Promise<boolean> {
    return this.journal.waitForRoom(bytes, withReclaim);
  }

  journalAddKeys(res: JournalRes, updates: Update[]): void {
    // one btree_keys sub-entry for the whole commit: (btree, level) are per key in the key list order;
    // group runs of the same (btree, level)
    let i = 0;
    while (i < updates.length) {
      let j = i + 1;
      while (j < updates.length && updates[j]!.btreeId === updates[i]!.btreeId && updates[j]!.level === updates[i]!.level) j++;
      let bytes = 0;
      for (let k = i; k < j; k++) bytes += bkeyEncodedBytes(updates[k]!.key);
      const payload = new Uint8Array(bytes);
      let off = 0;
      for (let k = i; k < j; k++) off += bkeyEncode(updates[k]!.key, payload, off);
      res.add(JSET_ENTRY.btree_keys, updates[i]!.btreeId, updates[i]!.level, payload);
      i = j;
    }
  }

  journalRelease(res: JournalRes): void {
    this.journal.release(res);
  }

  async journalWaitDurable(seq: number): Promise<void> {
    await this.journal.waitDurable(seq);
  }

  /** Journal an update group's pointer keys, in order, and its root; returns the entry's seq. */
  async journalInteriorUpdates(
    btreeId: number,
    updates: readonly BtreeUpdate[],
    newRoot: { ptr: Uint8Array; level: number } | null,
    preres: JournalPreres,
    beforeRelease: (seq: number) => void,
  ): Promise<number> {
    let bytes = 0;
    for (const u of updates) {
      if (!u.parentKeys.length) continue;
      let b = 0;
      for (const k of u.parentKeys) b += bkeyEncodedBytes(k);
      bytes += jsetEntryBytes(b);
    }
    // two root changes of a btree never share an entry: each entry records
    // only the newest root, and recovery must see every level a collapse took
    // away to tell stale pointer keys (rootLevelMinFrom)
    if (newRoot && this.roots[btreeId]!.lastChangeSeq >= this.journal.seq) {
      this.counters.rootChangeEntryBreaks++;
      await this.journal.flush();
    }
    const res = await this.journal.reserve(bytes, 'interior', preres);
    const seq = res.seq;
    if (newRoot) {
      this.rootJournalUpdate(btreeId, newRoot, seq);
      this.roots[btreeId]!.lastChangeSeq = seq;
    }
    for (const u of updates) {
      if (!u.parentKeys.length) continue;
      let b = 0;
      for (const k of u.parentKeys) b += bkeyEncodedBytes(k);
      const payload = new Uint8Array(b);
      let off = 0;
      for (const k of u.parentKeys) {
        k.version = seq;
        off += bkeyEncode(k, payload, off);
      }
      res.add(JSET_ENTRY.btree_keys, btreeId, u.parentLevel, payload);
    }
    // pins on the entry must exist before it can be written and reclaimed
    beforeRelease(seq);
    this.journal.release(res);
    return seq;
  }

  bucketFreeAfter(bucket: number, seq: number): void {
    // called once the update unlinking the bucket is durable: its bsets are unreachable
    this.blacklistHolders.gone(bucket);
    if (this.alloc.stateOf(bucket) === 'used') this.alloc.freeAfter(bucket, seq);
  }

  updateFinished(): void {
    for (const w of this.updateWaiters.splice(0)) w();
  }

  onUpdateFinished(cb: () => void): void {
    this.updateWaiters.push(cb);
  }

  /* ================================================================ transactions glue */

  countRestart(code: number): void {
    this.counters.restarts++;
    this.restartReasons.set(code, (this.restartReasons.get(code) ?? 0) + 1);
  }

  /** Writes (commits, flush) after the journal or an interior update failed: ERR_IO. Reads go on. */
  checkWritable(): void {
    if (this.failed) throw new SixtreeError('ERR_IO', `store refuses writes after a device error: ${this.failed.message}`, { path: this.path });
  }

  async txGet(bt: BtreeTrans, btreeId: number, pos: Bpos, intent = false): Promise<BkeyI | null> {
    const ov = bt.overlays[btreeId];
    const x = pos as XPos;
    if (ov && !ov.empty) {
      const k = ov.keyAt(x);
      if (k) return k.type === KEY_TYPE.deleted ? null : k;
      if (ov.covered(x)) return null;
    }
    const w = posWords(pos);
    // a transaction that already restarted is contended: its reads take intent
    // like its updates will, so it queues behind other writers of the leaf
    // instead of deadlocking with them again
    return btreeLookup(bt, btreeId, w, intent || bt.restartCount > 0);
  }

  /**
   * After a commit whose deletions shrank leaves (its transact() call's
   * interior lock released): queue the merge checks it asked for. Past
   * MERGE_QUEUE_MAX checks queued the caller waits for the runner to catch up.
   */
  async scheduleMerges(checks: readonly MergeCheckPos[]): Promise<void> {
    if (!MERGES_ENABLED) return;
    for (const c of checks) this.queueMerge(c.btreeId, c.level, c.pos);
    while (this.mergesQueued > MERGE_QUEUE_MAX && !this.closed) {
      this.counters.mergeQueueWaits++;
      await new Promise<void>((r) => this.mergeRoomWaiters.push(r));
    }
  }

  /** Merge checks waiting in the queue. */
  get mergesQueued(): number {
    return this.mergeQueue.length - this.mergeQueueHead;
  }

  /** Check the node at (btreeId, level) holding pos for a merge soon (once per position until it runs). */
  queueMerge(btreeId: number, level: number, pos: Uint32Array): void {
    if (!MERGES_ENABLED || level >= BTREE_MAX_DEPTH || this.closed) return;
    const key = `${btreeId}:${level}:${pos[0]}:${pos[1]}:${pos[2]}:${pos[3]}:${pos[4]}`;
    if (this.mergeQueued.has(key)) {
      this.counters.mergeQueueDups++;
      return;
    }
    this.mergeQueued.add(key);
    this.mergeQueue.push({ btreeId, level, pos: wordsClone(pos), key });
    if (!this.mergeRunning) queueMicrotask(() => void this.runMerges());
  }

  /** The merge runner: one check at a time, each in its own internal transaction. */
  private async runMerges(): Promise<void> {
    if (this.mergeRunning) return;
    this.mergeRunning = true;
    try {
      while (this.mergesQueued && !this.closed) {
        const m = this.mergeQueue[this.mergeQueueHead++]!;
        if (this.mergeQueueHead > 1024 && this.mergeQueueHead * 2 > this.mergeQueue.length) {
          this.mergeQueue = this.mergeQueue.slice(this.mergeQueueHead);
          this.mergeQueueHead = 0;
        }
        this.mergeQueued.delete(m.key);
        if (this.mergesQueued <= MERGE_QUEUE_MAX) for (const w of this.mergeRoomWaiters.splice(0)) w();
        try {
          this.interior.counters.mergeChecks++;
          await this.runInternal((bt) => this.interior.maybeMerge(bt, m.btreeId, m.level, m.pos));
        } catch (e) {
          // not lost: the periodic pass queues it again
          this.counters.mergeErrors++;
          if (this.mergeRetry.length < MERGE_RETRY_MAX) this.mergeRetry.push(m);
          else this.counters.mergeRetriesDropped++;
          if (process.env.SIXTREE_DEBUG) console.error('sixtree: merge check failed:', e);
        }
      }
    } finally {
      this.mergeRunning = false;
      for (const w of this.mergeRoomWaiters.splice(0)) w();
      for (const w of this.mergeIdleWaiters.splice(0)) w();
    }
  }

  /** Checks that failed (an I/O or allocation error) go back in the queue (the periodic pass). */
  private mergeRetryKick(): void {
    if (this.interior.failed || this.failed) return;
    for (const m of this.mergeRetry.splice(0)) {
      this.counters.mergeRetries++;
      this.queueMerge(m.btreeId, m.level, m.pos);
    }
  }

  /** Resolves once no merge check is queued or running (or the store closed). */
  private async mergesIdle(): Promise<void> {
    while ((this.mergeRunning || this.mergesQueued) && !this.closed) {
      if (!this.mergeRunning) void this.runMerges();
      await new Promise<void>((r) => this.mergeIdleWaiters.push(r));
    }
  }

  /* ============================================================ pointer updates */

  /*
   * After a node write, its parent's pointer (a root's: the journal's root
   * entries) records how far the node is now written (bcachefs
   * btree_node_write_work -> bch2_btree_node_update_key_get_iter with
   * btree_ptr_v2.sectors_written), so a read that finds less (a damaged or
   * lost bset) fails instead of returning the node's older self
   * (node-io.ts). The update is a commit of the pointer key at the parent's
   * level, checked under the parent's write lock (the pointer is still this
   * node's and records less). Its journal entry is written after the node
   * write completed, and the journal flushes before writing an entry when a
   * node write completed since the last flush (journalPreflush): a recorded
   * length is always on stable storage. Best effort: an update not made
   * leaves the older, shorter length, which checks less, never wrongly. Not
   * for a new node whose pointer its interior update has not journaled yet
   * (ptr_unjournaled): journaling a pointer to it first would make it
   * reachable early; its first write's length is recorded once the update
   * has journaled (ptrUpdateAfterJournaled).
   *
   * Every level: a leaf's write updates its parent, whose own write then
   * updates the grandparent, and so on up to the root, whose length goes in
   * the journal; each level's writes coalesce its children's updates. (The
   * churn this adds to small-node trees, parents rewritten more often,
   * exposed a traversal reading a reused bucket through a stale pointer,
   * fixed in the cache: cache.ts fillParentLost, docs/cache.md.)
   */

  /** A write of n ended at `sectors`: record it in n's pointer soon. */
  private ptrUpdateQueue(n: Node, sectors: number): void {
    if (!this.ptrUpdatesOn || this.closed || this.readOnly) return;
    if (n.has(NodeFlag.ptr_unjournaled)) {
      this.counters.ptrUpdatesUnjournaled++;
      return;
    }
    const seq = n.hashVal;
    if (seq === 0 || n.has(NodeFlag.dying)) return;
    const q = this.ptrUpdateQueued.get(seq);
    if (q) {
      if (sectors > q.sectors) q.sectors = sectors;
      return;
    }
    this.ptrUpdateQueued.set(seq, { node: n, btreeId: n.btreeId, level: n.level, bucket: n.bucket, seq, sectors });
    if (!this.ptrUpdateRunning) queueMicrotask(() => void this.runPtrUpdates());
  }

  /**
   * A new node's pointer was just journaled by its interior update, which
   * wrote the node first: record that write's length too (its entry comes
   * after the update's).
   */
  ptrUpdateAfterJournaled(n: Node): void {
    // writtenBytes counts completed writes only; ptrUpdateQueue skips a dying node
    if (n.keys.writtenBytes > 0) this.ptrUpdateQueue(n, n.keys.writtenBytes / PTR_SECTOR_BYTES);
  }

  /** The pointer update runner: one at a time, each in its own internal transaction. */
  private async runPtrUpdates(): Promise<void> {
    if (this.ptrUpdateRunning) return;
    this.ptrUpdateRunning = true;
    try {
      while (this.ptrUpdateQueued.size && !this.closed) {
        const [seq, u] = this.ptrUpdateQueued.entries().next().value as [number, PtrUpdate];
        this.ptrUpdateQueued.delete(seq);
        if (this.failed || this.interior.failed) {
          this.counters.ptrUpdatesDropped++;
          continue;
        }
        try {
          await this.ptrUpdateOne(u);
        } catch (e) {
          this.counters.ptrUpdatesDropped++;
          if (process.env.SIXTREE_DEBUG) console.error('sixtree: pointer update failed:', e);
        }
      }
    } finally {
      this.ptrUpdateRunning = false;
      for (const w of this.ptrUpdateIdleWaiters.splice(0)) w();
    }
  }

  /** Resolves once no pointer update is queued or running (or the store closed). */
  private async ptrUpdatesIdle(): Promise<void> {
    while ((this.ptrUpdateRunning || this.ptrUpdateQueued.size) && !this.closed) {
      if (!this.ptrUpdateRunning) void this.runPtrUpdates();
      await new Promise<void>((r) => this.ptrUpdateIdleWaiters.push(r));
    }
  }

  /** Is u's node still the one written, in the tree, with its pointer journaled? */
  private ptrUpdateLive(u: PtrUpdate): boolean {
    const n = u.node;
    return n.hashVal === u.seq && !n.has(NodeFlag.dying) && !n.has(NodeFlag.ptr_unjournaled);
  }

  private async ptrUpdateOne(u: PtrUpdate): Promise<void> {
    const n = u.node;
    if (!this.ptrUpdateLive(u)) {
      this.counters.ptrUpdatesStale++;
      return;
    }
    if (this.roots[u.btreeId]!.node === n) {
      this.ptrUpdateRoot(u);
      return;
    }
    const minKey = wordsClone(n.keys.minKey);
    const key = bkeyBtreePtr(wordsClone(n.keys.maxKey), { bucket: u.bucket, seq: u.seq, level: u.level, minKey, sectorsWritten: u.sectors });
    const cur: BtreePtrValue = { bucket: 0, seq: 0, level: 0, minKey: new Uint32Array(BPOS_WORDS), sectorsWritten: 0 };
    let done = false;
    await this.runInternal(async (bt) => {
      done = false;
      const root = this.roots[u.btreeId]!.node!;
      // replaced, or the root now (a collapse): nothing to update here
      if (!this.ptrUpdateLive(u) || root === n || root.level <= u.level) return 0;
      const r = await transCommit(bt, {
        updates: [{ btreeId: u.btreeId, level: u.level + 1, key, path: null }],
        journal: true,
        internal: true,
        validate: (ups) => {
          const parent = ups[0]!.path!.l[u.level + 1]!.node!;
          if (!this.ptrUpdateLive(u)) return false;
          const h = parent.keys.findExact(key.p);
          if (h < 0 || parent.keys.keyType(h) !== KEY_TYPE.btree_ptr) return false;
          parent.keys.keyBtreePtr(h, cur);
          if (cur.bucket !== u.bucket || cur.seq !== u.seq || (cur.sectorsWritten ?? 0) >= u.sectors || wordsCmp(cur.minKey, 0, minKey, 0) !== 0) return false;
          done = true;
          return true;
        },
      });
      if (r.ret) done = false;
      return r.ret;
    });
    if (done) {
      this.counters.ptrUpdates++;
      if (u.level > 0) this.counters.ptrUpdatesInterior++;
    } else this.counters.ptrUpdatesStale++;
  }

  /**
   * n is a root: its length goes in the journal's root entries, from the open
   * entry on (rootAsOf), if the newest root recorded is n and records less.
   */
  private ptrUpdateRoot(u: PtrUpdate): void {
    const r = this.roots[u.btreeId]!;
    const last = r.journalChanges.length ? r.journalChanges[r.journalChanges.length - 1]! : { ptr: r.journalPtr, level: r.journalLevel };
    const cur = btreePtrDecode(last.ptr);
    if (cur.bucket !== u.bucket || cur.seq !== u.seq || (cur.sectorsWritten ?? 0) >= u.sectors) {
      this.counters.ptrUpdatesStale++;
      return;
    }
    const res = this.journal.tryReserve(0);
    if (!res) {
      this.counters.ptrUpdatesDropped++;
      return;
    }
    cur.sectorsWritten = u.sectors;
    this.rootJournalUpdate(u.btreeId, { ptr: btreePtrEncode(cur), level: last.level }, res.seq);
    this.journal.release(res);
    this.counters.ptrUpdates++;
    this.counters.ptrUpdatesRoot++;
  }

  /**
   * Iterator read-ahead: start reading the leaf after the path's
   * (bch2_btree_node_prefetch). A read path does not hold its parent's lock,
   * so the parent's Node object may have become another node since the path
   * took it, of this btree or another: read ahead only from the node the
   * path took (its identity, hashId), as that node's btree. (Reading a child
   * of another btree's node labelled with this btree failed the read's
   * header check, and a reader of that child waiting on the read got the
   * error: ERR_TOPOLOGY "btree id 1 does not match the pointer's 0", found
   * by the stress campaign, seed 27604.)
   */
  maybePrefetch(_trans: BtreeTrans, path: import('./btree/path.js').BtreePath, enabled: boolean): void {
    if (enabled) this.prefetchNextLeaf(path);
  }

  /** Read ahead the leaf after the path's, from the parent the path took (see maybePrefetch). */
  private prefetchNextLeaf(path: import('./btree/path.js').BtreePath): void {
    const pl = path.l[1];
    const parent = pl?.node;
    const leaf = path.l[0]?.node;
    if (!parent || !leaf || wordsIsMax(leaf.keys.maxKey, 0) || parent.hashVal === 0) return;
    if (parent.hashId !== pl!.nodeHash || parent.btreeId !== path.btreeId || parent.level !== 1 || leaf.hashId !== path.l[0]!.nodeHash) {
      this.counters.prefetchesStale++;
      return;
    }
    this.prefetchAfter(parent.btreeId, parent, leaf.keys.maxKey);
  }

  /** Prefetch the child of `parent` after the one ending at `max`. */
  private prefetchAfter(btreeId: number, parent: Node, max: Uint32Array): void {
    if (parent.level === 0 || wordsIsMax(max, 0)) return;
    const pos = this.prefetchPos;
    wordsCopy(pos, 0, max, 0);
    wordsSuccessor(pos, 0);
    const iterMod = this.iterScratch;
    iterMod.init(parent.keys, pos, 0);
    const h = iterMod.peek();
    if (h < 0 || parent.keys.keyType(h) !== KEY_TYPE.btree_ptr) return;
    const p = btreePtrDecode(parent.keys.keyValue(h));
    const childMax = new Uint32Array(BPOS_WORDS);
    parent.keys.keyPosTo(h, childMax, 0);
    this.cache.nodePrefetch(null, { btreeId, level: parent.level - 1, bucket: p.bucket, seq: p.seq, minKey: p.minKey, maxKey: childMax, sectorsWritten: p.sectorsWritten ?? 0 }, parent.level - 1);
    this.counters.prefetches++;
  }

  private readonly prefetchPos = new Uint32Array(BPOS_WORDS);
  private readonly iterScratch = new NodeIter();

  async peekNodeInfo(trans: BtreeTrans, btreeId: number, level: number, pos: Bpos): Promise<NodeInfo | null> {
    const root = this.roots[btreeId]!.node!;
    if (level > root.level) return null;
    const w = posWords(pos);
    const path = trans.getPath(btreeId, w, 0, level, 0);
    trans.throwIfRestart(await trans.traverse(path));
    const n = path.l[level]!.node!;
    path.shouldBeLocked = true;
    return { level, minKey: wordsToBpos(n.keys.minKey), maxKey: wordsToBpos(n.keys.maxKey), keys: n.keys.nrKeys, bytes: n.keys.usedBytes() };
  }

  /**
   * store.range(): the entries of one leaf from the cursor on, in one short
   * read-only transaction (no per-entry await); advances the cursor.
   */
  async rangeBatch(
    btreeId: number,
    cursor: { pos: Bpos; done: boolean; first: boolean },
    start: Bpos,
    end: Bpos,
    reverse: boolean,
    max: number,
    endGiven: boolean,
  ): Promise<Entry[]> {
    const extents = this.btrees[btreeId]!.extents;
    const out: Entry[] = [];
    const endW = posWords(end);
    const startW = posWords(start);
    const startX = start as XPos;
    const endX = end as XPos;
    /** One leaf's worth; `bound`: how far past end an extent starting before it can end. */
    const batch = async (bt: BtreeTrans, bound: bigint): Promise<number> => {
      const w = posWords(cursor.pos);
      if (reverse && cursor.first) {
        // start at the last position before `end` (extents: the extent straddling end, if any)
        if (wordsIsMin(w, 0)) {
          cursor.done = true;
          return 0;
        }
        // no end given: everything, POS_MAX included; else end is exclusive
        if (!extents) {
          if (endGiven) wordsPredecessor(w, 0);
        }
        else {
          // The walk back starts the bound past end and skips what starts at
          // or after end, as the forward walk looks that far past end.
          if (endGiven) {
            const far = endX.offset + bound;
            wordsCopy(w, 0, posWords({ inode: endX.inode, offset: far > U64_MAX ? U64_MAX : far, snapshot: 0xffffffff }), 0);
          }
        }
      }
      const path = bt.pathNew(btreeId, w, 0, 0, 0);
      const ret = await bt.traverse(path);
      if (ret) return ret;
      const leaf = path.l[0]!.node!;
      const keys = leaf.keys;
      const it = path.l[0]!.iter;
      if (!reverse) {
        // (the traversal may have waited for the leaf with the parent unlocked: the parent is checked)
        this.prefetchNextLeaf(path);
        let pastEnd = 0;
        for (let h = it.peek(); h >= 0 && out.length < max; it.advance(), h = it.peek()) {
          if (keys.keyType(h) === KEY_TYPE.deleted) continue;
          if (extents) {
            if (keys.keyCmpPos(h, startW, 0) <= 0) continue;
            const k = keys.keyUnpack(h);
            const e = extentOfKey(k);
            const s: XPos = { inode: e.inode, offset: e.start, snapshot: e.snapshot };
            if (cmpX(s, endX) >= 0) {
              // extents are sorted by end; a later one can still start before end only in another snapshot
              if (e.inode > endX.inode || (e.inode === endX.inode && xFromWords(k.p).offset > endX.offset + bound)) {
                cursor.done = true;
                return 0;
              }
              // the rest of this leaf ends no sooner: none of it reaches back to end
              // once this key ends further past it than the leaf's longest key
              if (++pastEnd >= EXTENT_SCAN_SKIP_AFTER && e.end - endX.offset > BigInt(keys.keySizeMax())) break;
              continue;
            }
            out.push(keyToEntry(k, true, false));
          } else {
            if (endGiven && keys.keyCmpPos(h, endW, 0) >= 0) {
              cursor.done = true;
              return 0;
            }
            out.push(keyToEntryAt(keys, h));
          }
        }
        if (out.length >= max) {
          // continue after the last entry
          const last = out[out.length - 1]!;
          const lw = posWords(last.pos);
          if (wordsIsMax(lw, 0)) cursor.done = true;
          else {
            // keys sit at their end position (extents too): go past the last one
            wordsSuccessor(lw, 0);
            cursor.pos = wordsToBpos(lw);
          }
          cursor.first = false;
          return 0;
        }
        if (wordsIsMax(keys.maxKey, 0)) cursor.done = true;
        else {
          const nw = new Uint32Array(BPOS_WORDS);
          wordsCopy(nw, 0, keys.maxKey, 0);
          wordsSuccessor(nw, 0);
          cursor.pos = wordsToBpos(nw);
        }
        cursor.first = false;
        return 0;
      }
      // reverse: keys <= w in this leaf, newest first
      let h = it.peek();
      if (!(h >= 0 && keys.keyCmpPos(h, w, 0) === 0)) {
        h = it.peekPrev();
        if (h >= 0) it.rewind();
      }
      let pastEnd = 0;
      for (; h >= 0 && out.length < max; ) {
        if (keys.keyType(h) !== KEY_TYPE.deleted) {
          if (extents) {
            const k = keys.keyUnpack(h);
            if (cmpX(xFromWords(k.p), startX) <= 0) {
              cursor.done = true;
              return 0;
            }
            // past end (the first batch starts up to the bound beyond it): only those starting before end
            if (keys.keyCmpPos(h, endW, 0) <= 0 || extentStartsBefore(k, endX)) out.push(keyToEntry(k, true, false));
            else if (++pastEnd >= EXTENT_SCAN_SKIP_AFTER) {
              // keys of this leaf ending further past end than its longest key
              // do not reach back to end: go on below them (or below the leaf)
              const longest = BigInt(keys.keySizeMax());
              const e = extentOfKey(k);
              if (e.end - endX.offset > longest) {
                const to = posWords({ inode: endX.inode, offset: endX.offset + longest, snapshot: 0xffffffff });
                if (wordsCmp(to, 0, keys.minKey, 0) < 0) break;
                cursor.pos = wordsToBpos(to);
                cursor.first = false;
                return 0;
              }
            }
          } else {
            if (keys.keyCmpPos(h, startW, 0) < 0) {
              cursor.done = true;
              return 0;
            }
            out.push(keyToEntryAt(keys, h));
          }
        }
        h = it.peekPrev();
        if (h >= 0) it.rewind();
      }
      if (out.length >= max) {
        const lw = posWords(out[out.length - 1]!.pos);
        if (wordsIsMin(lw, 0)) cursor.done = true;
        else {
          wordsPredecessor(lw, 0);
          cursor.pos = wordsToBpos(lw);
        }
        cursor.first = false;
        return 0;
      }
      if (wordsIsMin(keys.minKey, 0)) cursor.done = true;
      else {
        const nw = new Uint32Array(BPOS_WORDS);
        wordsCopy(nw, 0, keys.minKey, 0);
        wordsPredecessor(nw, 0);
        cursor.pos = wordsToBpos(nw);
      }
      cursor.first = false;
      return 0;
    };
    await this.runInternal(async (bt) => {
      out.length = 0;
      if (!extents) return batch(bt, 0n);
      // Keys sit at their extent's end: one ending past end may start before
      // it (in end's snapshot or any other), at most the store's extent size
      // bound past it. A bound raised while this batch ran (another commit's
      // longer extent, maybe in a leaf read past that far) runs it again.
      const saved = { ...cursor };
      const ret = await batch(bt, BigInt(bt.extentBoundUse()));
      if (ret) return ret;
      const stale = bt.extentBoundValidate();
      if (stale) Object.assign(cursor, saved);
      return stale;
    });
    if (reverse) cursor.first = false;
    return out;
  }

  /* ================================================================ flush, close */

  /**
   * Everything committed on stable storage and every dirty node written. A
   * node write failing on the way rejects it with that write's error
   * (ERR_IO) once the round it failed in ends with nodes unwritten: the
   * node stays dirty and its keys pinned in the journal (nothing is lost;
   * its next write retries), and retrying here would only repeat the
   * failure.
   */
  async flush(): Promise<void> {
    this.checkWritable();
    await this.mergesIdle();
    await this.interior.drain();
    const writeErrorsBefore = this.counters.nodeWriteErrors;
    for (let round = 0; round < 1000; round++) {
      await this.journal.flush();
      await this.mergesIdle();
      await this.interior.drain();
      await this.writebackPass(true);
      // the writes' pointer updates dirty their parents: written next round
      await this.ptrUpdatesIdle();
      let dirty = 0;
      for (const n of this.cache.liveNodes()) if (n.has(NodeFlag.dirty) || n.has(NodeFlag.write_in_flight)) dirty++;
      if (dirty === 0 && this.interior.pending.length === 0 && !this.mergeRunning && this.mergesQueued === 0 && !this.ptrUpdateRunning && this.ptrUpdateQueued.size === 0) break;
      if (this.counters.nodeWriteErrors !== writeErrorsBefore && this.pendingWrites.size > 0) throw this.lastNodeWriteError;
      await new Promise((r) => setImmediate(r));
    }
    await this.journal.flush();
    await this.devFlush();
  }

  shrink(nr: number): number {
    return this.cache.shrink(nr);
  }

  /**
   * Flush and mark the superblock clean, then release the device, whatever
   * failed on the way: a store whose journal stopped (or whose flush fails
   * here) skips the clean mark (the next open recovers from the journal),
   * still gives back its memory and its device (and so the lock), and
   * rejects with that error.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    let error: unknown = null;
    try {
      await this.blacklistGc.stop();
      if (!this.readOnly && !this.failed) {
        await this.flush();
        const j = await this.journal.close();
        // ranges nothing needs any more leave with the clean superblock
        await this.blacklistGc.dropCheck({ persist: false });
        this.rootChangesDurable(Infinity);
        this.sb = {
          ...this.sb,
          clean: true,
          cleanJournalSeq: j.seq,
          cleanJournalOffsetBytes: j.writeOffsetBytes,
          blacklist: this.blacklist.toArray(),
          btrees: this.sb.btrees.map((b, id) => {
            const p = btreePtrDecode(this.roots[id]!.journalPtr);
            return { ...b, root: { bucket: p.bucket, seq: p.seq, level: this.roots[id]!.journalLevel } };
          }),
        };
        await writeSuperblock(this.dev, this.sb);
      }
    } catch (e) {
      error = e;
    }
    error ??= this.failed;
    this.closed = true;
    if (this.writebackTimer) clearInterval(this.writebackTimer);
    this.stopMemoryWatch?.();
    try {
      // dirty nodes are expected when the close did not get through: their keys are in the journal
      await this.cache.cacheExit({ journalFailed: error !== null || this.readOnly });
    } catch (e) {
      error ??= e;
    }
    try {
      await this.dev.close();
    } catch (e) {
      error ??= e;
    }
    if (error !== null) throw error;
  }

  /* ================================================================ superblock at runtime */

  /**
   * Write the superblock with `change` applied to the newest one, after the
   * writes already queued (the blacklist gc and the extent size bound both
   * write it while the store runs; each builds on what the one before
   * wrote). Nothing on a read-only or closed store.
   */
  sbUpdate(change: () => Partial<Superblock>): Promise<void> {
    const run = async () => {
      if (this.closed || this.readOnly) return;
      // taken as the store's only once written: a failed write changes nothing
      const next = { ...this.sb, ...change() };
      await writeSuperblock(this.dev, next);
      this.sb = next;
    };
    const p = this.sbWriting.then(run, run);
    this.sbWriting = p.catch(() => {});
    return p;
  }

  /**
   * No extent key in the store is larger than this (offsets): the
   * superblock's bound, raised by extentSizeBoundRaise before a commit with
   * a larger extent is journaled. Scans for the extents crossing a position
   * stop this far past it (overlayExpand, MergedView.spanningKeys).
   */
  get extentSizeBound(): number {
    return this.sb.extentSizeBound;
  }

  /**
   * Make the bound cover an extent of `size` before any key of that size can
   * be journaled: the superblock with the new bound is durable when this
   * resolves (journal entries, and so nodes and replay, come after). Rounded
   * up to a power of two, so the superblock is written at most 33 times in a
   * store's life.
   */
  async extentSizeBoundRaise(size: number): Promise<void> {
    if (size <= this.sb.extentSizeBound) return;
    let bound = 1;
    while (bound < size && bound < EXTENT_SIZE_BOUND_UNKNOWN) bound = Math.min(bound * 2, EXTENT_SIZE_BOUND_UNKNOWN);
    this.counters.extentSizeBoundRaises++;
    await this.sbUpdate(() => ({ extentSizeBound: Math.max(bound, this.sb.extentSizeBound) }));
    if (size > this.sb.extentSizeBound) throw new SixtreeError(this.closed ? 'ERR_CLOSED' : 'ERR_READ_ONLY', `extent of size ${size}: the store's extent size bound could not be raised (${this.closed ? 'closed' : 'read-only'})`, { path: this.path });
  }

  /* ================================================================ fsck */

  /** Topology, key order, bucket accounting, journal consistency. Problems as lines; [] = clean. */
  async fsck(): Promise<string[]> {
    const problems: string[] = [];
    // updates under way hold buckets in two places at once: let them (and the merges that make them) finish,
    // and start no more until the walk is done (commits into leaves go on: they change no pointer or bucket)
    await this.mergesIdle();
    const thaw = await this.interior.freezeTopology();
    try {
      await this.journal.flush();
      await this.fsckFrozen(problems);
    } finally {
      thaw();
    }
    return problems;
  }

  /** fsck's walk and bucket check, with the topology frozen. */
  private async fsckFrozen(problems: string[]): Promise<void> {
    const used = new Set<number>();
    /* interior nodes that could not be read, and walks that failed: the buckets below are not known (the first one's code) */
    let unknownBelow = 0;
    let unknownCode = '';
    for (let id = 0; id < this.roots.length; id++) {
      const name = this.btrees[id]!.name;
      const root = this.roots[id]!.node!;
      if (!wordsIsMin(root.keys.minKey, 0) || !wordsIsMax(root.keys.maxKey, 0)) problems.push(`btree ${name}: root does not span POS_MIN..POS_MAX`);
      const it = new NodeIter();
      try {
        await this.walkTree(id, 0, (n, info) => {
          if (used.has(info.bucket)) problems.push(`btree ${name}: bucket ${info.bucket} referenced twice`);
          used.add(info.bucket);
          if (!n) return;
          if (n.level !== info.level) problems.push(`btree ${name}: node at bucket ${info.bucket} has level ${n.level}, expected ${info.level}`);
          if (wordsCmp(n.keys.maxKey, 0, info.maxKey, 0) !== 0) problems.push(`btree ${name}: node at bucket ${info.bucket} max key ${wordsToText(n.keys.maxKey)} disagrees with its pointer ${wordsToText(info.maxKey)}`);
          const pmin = btreePtrDecode(info.ptr).minKey;
          if (info.parentBucket >= 0 && wordsCmp(n.keys.minKey, 0, pmin, 0) !== 0) problems.push(`btree ${name}: node at bucket ${info.bucket} min key ${wordsToText(n.keys.minKey)} disagrees with its pointer ${wordsToText(pmin)}`);
          try {
            n.keys.verify();
          } catch (e) {
            problems.push(`btree ${name} level ${n.level} bucket ${info.bucket}: ${(e as Error).message}`);
          }
          if (n.level === 0) {
            // the extent size bound covers every extent (scans for the extents crossing a position rely on it)
            if (!this.btrees[id]!.extents) return;
            const bound = this.sb.extentSizeBound;
            it.initStart(n.keys);
            for (let h = it.peek(); h >= 0; it.advance(), h = it.peek()) {
              if (n.keys.keyType(h) !== KEY_TYPE.extent || n.keys.keySize(h) <= bound) continue;
              const at = new Uint32Array(BPOS_WORDS);
              n.keys.keyPosTo(h, at, 0);
              problems.push(`btree ${name} level 0 bucket ${info.bucket}: extent ending at ${wordsToText(at)} of size ${n.keys.keySize(h)} above the store's extent size bound ${bound}`);
            }
            return;
          }
          // children tile the node: first starts at its min, each next at the successor of the previous max, last ends at its max
          const expectMin = new Uint32Array(BPOS_WORDS);
          wordsCopy(expectMin, 0, n.keys.minKey, 0);
          const lastMax = new Uint32Array(BPOS_WORDS);
          let kids = 0;
          it.initStart(n.keys);
          for (let h = it.peek(); h >= 0; it.advance(), h = it.peek()) {
            const t = n.keys.keyType(h);
            if (t === KEY_TYPE.deleted) continue;
            if (t !== KEY_TYPE.btree_ptr) {
              problems.push(`btree ${name} level ${n.level} bucket ${info.bucket}: non-pointer key in an interior node`);
              continue;
            }
            const p = btreePtrDecode(n.keys.keyValue(h));
            if (wordsCmp(p.minKey, 0, expectMin, 0) !== 0)
              problems.push(`btree ${name} level ${n.level} bucket ${info.bucket}: child at bucket ${p.bucket} starts at ${wordsToText(p.minKey)}, expected ${wordsToText(expectMin)} (children must tile the parent)`);
            n.keys.keyPosTo(h, lastMax, 0);
            wordsCopy(expectMin, 0, lastMax, 0);
            wordsSuccessor(expectMin, 0);
            kids++;
          }
          if (!kids) problems.push(`btree ${name} level ${n.level} bucket ${info.bucket}: interior node without children`);
          else if (wordsCmp(lastMax, 0, n.keys.maxKey, 0) !== 0) problems.push(`btree ${name} level ${n.level} bucket ${info.bucket}: last child ends at ${wordsToText(lastMax)}, node ends at ${wordsToText(n.keys.maxKey)}`);
        }, undefined, undefined, (e, info) => {
          // an unreadable node: reported with its code; its bucket is in the tree, what is below it not walked
          problems.push(`btree ${name} level ${info.level} bucket ${info.bucket}: ${e.code}: ${e.message}`);
          used.add(info.bucket);
          if (info.level > 0 && unknownBelow++ === 0) unknownCode = e.code;
        });
      } catch (e) {
        problems.push(`btree ${name}: ${(e as Error).message}`);
        if (unknownBelow++ === 0) unknownCode = e instanceof SixtreeError ? e.code : 'a failed walk';
      }
    }
    // buckets: everything reachable is used; nothing used is unreachable (pending frees aside; no update is
    // under way). Below an unreadable interior node the tree is not known: the second half is not checked
    for (let b = 0; b < this.sb.nrBuckets; b++) {
      const st = this.alloc.stateOf(b);
      if (used.has(b) && st !== 'used') problems.push(`bucket ${b}: in the tree but ${st} in the allocator`);
      if (!used.has(b) && st === 'used' && !unknownBelow) problems.push(`bucket ${b}: marked used but not in the tree`);
    }
    if (unknownBelow) problems.push(`buckets: used buckets not checked against the tree: the tree below ${unknownBelow} node(s) could not be walked (${unknownCode})`);
    const js = this.journal.stats();
    if (js.lastSeq > js.seq) problems.push(`journal: last_seq ${js.lastSeq} after seq ${js.seq}`);
  }

  /* ================================================================ stats, text */

  stats(): StoreStats {
    const c = this.cache.stats();
    const js = this.journal.stats();
    const restartReasons: Record<string, number> = {};
    for (const [code, n] of this.restartReasons) restartReasons[errName(code)] = n;
    const btrees: StoreStats['btrees'] = {};
    this.btrees.forEach((b, id) => {
      const lvl = this.roots[id]!.node!.level;
      btrees[b.name] = { depth: lvl + 1, rootLevel: lvl };
    });
    const a = this.alloc.stats();
    return {
      cache: { ...c, walkCannibalizeWaits: this.counters.walkCannibalizeWaits },
      io: { ...this.dev.stats },
      journal: { ...js, entriesWritten: this.journal.counters.entriesWritten, inlineWrites: this.journal.counters.inlineWrites },
      transactions: {
        commits: this.counters.commits,
        restarts: this.counters.restarts,
        restartReasons,
        keysCommitted: this.counters.keysCommitted,
        writeLockWaits: this.counters.commitWriteLockWaits,
        roomLost: this.counters.commitRoomLost,
        roundsGivenUp: this.counters.commitRoundsGivenUp,
        splitRounds: this.counters.commitSplitRounds,
        groupsClosedForJournal: this.counters.commitGroupsClosedForJournal,
        starvationGates: this.counters.starvationGates,
        starvationWaits: this.counters.starvationWaits,
        nestedCallsRefused: this.counters.nestedCallsRefused,
        callbackErrorsRestarted: this.counters.callbackErrorsRestarted,
        extentSizeBound: this.sb.extentSizeBound,
        extentSizeBoundRaises: this.counters.extentSizeBoundRaises,
        clearCommits: this.counters.clearCommits,
        clearCommitsHalved: this.counters.clearCommitsHalved,
      },
      lookups: { ...this.lookupNowait.counters },
      btrees,
      blacklist: this.blacklistGc.stats(),
      interior: {
        ...this.interior.counters,
        ...mergesByLevelStats(this.interior.mergesByLevel),
        pending: this.interior.pending.length,
        mergesQueued: this.mergesQueued,
        mergeErrors: this.counters.mergeErrors,
        mergeRetries: this.counters.mergeRetries,
        mergeRetriesDropped: this.counters.mergeRetriesDropped,
        mergeQueueWaits: this.counters.mergeQueueWaits,
        mergeQueueDups: this.counters.mergeQueueDups,
        nodeBuildFormatFallbacks: this.counters.nodeBuildFormatFallbacks,
      },
      alloc: { ...a, bucketWaits: this.counters.bucketWaits },
      writeback: {
        nodeWrites: this.counters.nodeWrites,
        nodeWriteErrors: this.counters.nodeWriteErrors,
        nodeWritesNew: this.counters.nodeWritesNew,
        nodeWritesSkippedDying: this.counters.nodeWritesSkippedDying,
        ptrUpdates: this.counters.ptrUpdates,
        ptrUpdatesRoot: this.counters.ptrUpdatesRoot,
        ptrUpdatesStale: this.counters.ptrUpdatesStale,
        ptrUpdatesUnjournaled: this.counters.ptrUpdatesUnjournaled,
        ptrUpdatesDropped: this.counters.ptrUpdatesDropped,
        ptrUpdatesInterior: this.counters.ptrUpdatesInterior,
        ptrUpdatesQueued: this.ptrUpdateQueued.size,
        passes: this.counters.writebackPasses,
        reclaimCalls: this.counters.reclaimCalls,
        nodeWritesWanted: this.counters.nodeWritesWanted,
        reclaimWaitsForUpdates: this.counters.reclaimWaitsForUpdates,
        inFlight: this.writesInFlight,
        replayedKeys: this.counters.replayedKeys,
        replayedKeysStale: this.counters.replayedKeysStale,
        rootChangeEntryBreaks: this.counters.rootChangeEntryBreaks,
        replayedEntries: this.counters.replayedEntries,
        prefetches: this.counters.prefetches,
        prefetchesStale: this.counters.prefetchesStale,
        pinCheckViolations: this.counters.pinCheckViolations,
        traverses: this.counters.traverses,
        traversesNowait: this.counters.traversesNowait,
      },
      locks: lockingStats(),
      putFilter: { ...roFilterCounters },
      readSets: { ...readSetCounters },
    };
  }

  toText(): string {
    const out = new Printbuf();
    out.line(`sixtree store ${this.path}${this.readOnly ? ' (read-only)' : ''}`);
    out.nested((o) => {
      o.field('device', `${this.dev.kind} ${bytesToText(this.dev.sizeBytes)}, block ${this.blockSizeBytes}, node ${bytesToText(this.nodeSizeBytes)}, ${this.sb.nrBuckets} buckets${this.dev.backend ? `, io ${this.dev.backend.name}` : ''}`);
      o.line('btrees:');
      o.nested((b) => {
        this.btrees.forEach((bt, id) => {
          const r = this.roots[id]!.node!;
          b.line(`${bt.name}${bt.extents ? ' (extents)' : ''}: depth ${r.level + 1}, root bucket ${r.bucket}, root keys ${r.keys.nrKeys}`);
        });
      });
      o.line('cache:');
      o.nested((x) => x.print(this.cache.toText()));
      o.line('journal:');
      o.nested((x) => x.print(this.journal.toText()));
      o.line('allocator:');
      o.nested((x) => x.print(this.alloc.toText()));
      o.field('commits', this.counters.commits);
      o.field('restarts', this.counters.restarts);
      o.print(this.interior.toText());
      o.print(this.blacklistGc.toText());
      o.line(this.shapes.toText());
      o.field('node writes in flight', this.writesInFlight);
      o.field('pointer updates', `${this.counters.ptrUpdates} (roots ${this.counters.ptrUpdatesRoot}, interior ${this.counters.ptrUpdatesInterior}), stale ${this.counters.ptrUpdatesStale}, dropped ${this.counters.ptrUpdatesDropped}, queued ${this.ptrUpdateQueued.size}${this.ptrUpdateRunning ? ', running' : ''}`);
    });
    return out.toString();
  }
}

type ReplayKey = { seq: number; btreeId: number; level: number; key: BkeyI; pinSeq?: number };

/**
 * The journal's pointer keys (level > 0) in the order recovery applies them:
 * the newest key of each (btree, level, position) only, then per btree and
 * level (top first) the deletions before the insertions, each in position
 * order.
 *
 * Replayed in seq order instead, a node could be split partway (its
 * on-disk copy plus keys it already holds again, or keys of a state between
 * two seqs, can pass the split threshold where the node never did), at a
 * pivot a later merge in the window took away: a merged child's range would
 * then straddle two parents (the crash campaign found it: a wipe's merges
 * replayed after a split at one of the pointers they removed; recovery then
 * failed with ERR_TOPOLOGY). In this order every key a node holds during the
 * replay is at a position the final pointer set has (the deletions leave
 * the on-disk keys the window kept; the insertions bring the final ones), so
 * a split at any of them divides the final ranges cleanly. bcachefs applies
 * the newest key per position too (journal keys sorted and deduplicated).
 *
 * Each key kept carries as pinSeq the oldest seq of its position in the
 * window: the node it goes to is pinned there, as if every version had been
 * replayed. A torn append accepted at this recovery stays in its bucket until
 * the node's next write, and a later recovery tells it from damage only while
 * the journal still holds its oldest key (node-io.ts, tornFloor); pinned at
 * the newest version only, the window could pass it first (found by the
 * crash campaign: a second recovery read the torn append as damage).
 */
export function replayPointerOrder<T extends ReplayKey>(keys: readonly T[]): Array<T & { pinSeq: number }> {
  // keys come in journal order (seq, then order within the entry): the last one per position wins
  const newest = new Map<string, T>();
  const oldestSeq = new Map<string, number>();
  for (const k of keys) {
    const id = `${k.btreeId}:${k.level}:${wordsToText(k.key.p)}`;
    newest.set(id, k);
    if (!oldestSeq.has(id)) oldestSeq.set(id, k.seq);
  }
  for (const [id, k] of newest) k.pinSeq = oldestSeq.get(id)!;
  const isDel = (k: T) => (k.key.type === KEY_TYPE.deleted ? 0 : 1);
  return ([...newest.values()] as Array<T & { pinSeq: number }>).sort((a, b) => a.btreeId - b.btreeId || b.level - a.level || isDel(a) - isDel(b) || wordsCmp(a.key.p, 0, b.key.p, 0));
}

/** Pointer keys of one replay commit: same btree, level and kind (deletion or insertion). */
function replayGroupOf(k: ReplayKey): string {
  return `${k.btreeId}:${k.level}:${k.key.type === KEY_TYPE.deleted ? 'del' : 'ins'}`;
}

/**
 * For each entry of the replay window (by seq), the lowest root level per
 * btree that it or any later entry records. A pointer key at level L of
 * entry s is stale when that is below L: a root collapse after it took level
 * L away, and a level L there at the end is made of newer nodes (the keys
 * would point into freed buckets). Two root changes never share an entry
 * (journalInteriorUpdates), so every collapse is recorded by some entry.
 */
function rootLevelMinFrom(entries: readonly { seq: number; entries: ReadonlyArray<{ type: number; btreeId: number; level: number }> }[], nrBtrees: number): Map<number, number[]> {
  const out = new Map<number, number[]>();
  const min = new Array<number>(nrBtrees).fill(Infinity);
  const sorted = [...entries].sort((a, b) => b.seq - a.seq);
  for (const e of sorted) {
    for (const se of e.entries) if (se.type === JSET_ENTRY.btree_root && se.btreeId < nrBtrees) min[se.btreeId] = Math.min(min[se.btreeId]!, se.level);
    out.set(e.seq, min.slice());
  }
  return out;
}

/** Merges by level as stats fields: mergesLevel0 always, higher levels once they merged. */
function mergesByLevelStats(byLevel: readonly number[]): Record<string, number> {
  const out: Record<string, number> = {};
  byLevel.forEach((n, l) => {
    if (l === 0 || n > 0) out[`mergesLevel${l}`] = n;
  });
  return out;
}

/** Journal pointer keys by (btree:level), then by position text: the last one in seq order. */
type PtrOverlay = Map<string, Map<string, BkeyI>>;

/** Children of n with the journal's pointer keys in n's range applied (insert, replace, delete). */
function overlayKids<T extends { ptr: Uint8Array; level: number; maxKey: Uint32Array; parentBucket: number }>(kids: T[], ov: Map<string, BkeyI>, n: Node): T[] {
  const byPos = new Map<string, T | null>();
  for (const k of kids) byPos.set(wordsToText(k.maxKey), k);
  for (const [pk, key] of ov) {
    if (wordsCmp(key.p, 0, n.keys.minKey, 0) < 0 || wordsCmp(key.p, 0, n.keys.maxKey, 0) > 0) continue;
    if (key.type === KEY_TYPE.btree_ptr) {
      const max = new Uint32Array(BPOS_WORDS);
      wordsCopy(max, 0, key.p, 0);
      byPos.set(pk, { ptr: key.value.slice(), level: n.level - 1, maxKey: max, parentBucket: n.bucket } as T);
    } else byPos.set(pk, null);
  }
  const out = [...byPos.values()].filter((k): k is T => k !== null);
  out.sort((a, b) => wordsCmp(a.maxKey, 0, b.maxKey, 0));
  return out;
}

const U64_MAX = 0xffff_ffff_ffff_ffffn;

/** Does extent key k start before p (positions compare fully)? */
function extentStartsBefore(k: BkeyI, p: XPos): boolean {
  const e = extentOfKey(k);
  return cmpX({ inode: e.inode, offset: e.start, snapshot: e.snapshot }, p) < 0;
}

function cmpX(a: XPos, b: XPos): number {
  if (a.inode !== b.inode) return a.inode < b.inode ? -1 : 1;
  if (a.offset !== b.offset) return a.offset < b.offset ? -1 : 1;
  if (a.snapshot !== b.snapshot) return a.snapshot < b.snapshot ? -1 : 1;
  return 0;
}

function safeBackend(): ReturnType<typeof loadBackend> | null {
  try {
    return loadBackend();
  } catch {
    return null;
  }
}

/** The first write of a freshly initialised node (format): header + empty bset. */
function forceWritePrepare(keys: NodeKeys): NodeWrite {
  const w = nodeWritePrepare(keys);
  if (!w) throw new Error('format: empty root node produced nothing to write');
  return w;
}

/** A node from nodeMemAlloc is intent+write locked by the allocating transaction: release both. */
function nodeUnlockOwned(trans: BtreeTrans, n: Node): void {
  nodeUnlock(trans, n.lock, SixLockType.write);
  nodeUnlock(trans, n.lock, SixLockType.intent);
}


