// SPDX-License-Identifier: GPL-2.0-only
/*
 * Btree node cache (bcachefs btree_cache.c, translated).
 *
 * What this file owns
 *   Every in-memory btree node: the Node objects (never freed, reused; each has
 *   a stable slot number), their buffers (node data: aligned native memory
 *   from device.allocBuffer; aux search trees: auxAlloc, mmap'd native memory
 *   in the engine), the hash table from node seq to Node, the three lists, the
 *   counters used / dirty / reserve, the byte budget, the shrinker, the
 *   cannibalize lock, and the protocol that reads a node in (nodeFill) and
 *   hands it out locked (nodeGet).
 *
 * Node states (bcachefs DOC: FREED / FREEABLE / CLEAN / DIRTY)
 *
 *   FREED      on `freed`; no buffers, not hashed. Only the object (and its
 *              lock) is kept, for reuse by nodeMemAlloc.
 *   FREEABLE   on `freeable`; buffers attached, not hashed. Kept so that a
 *              split does not have to allocate; the shrinker keeps 3.
 *   CLEAN      on `live`, hashed (hashVal = node seq), buffers, not dirty.
 *   DIRTY      on `live`, hashed, dirty flag set (counted in `dirty`).
 *   (owned)    on no list: returned by nodeMemAlloc, intent+write locked by
 *              its caller, buffers attached, not hashed; becomes CLEAN/DIRTY
 *              through hashInsert, or FREEABLE through freeInmem.
 *
 *   FREED    --nodeMemAlloc-->              (owned)   buffers from a FREEABLE node, new, or a reclaimed CLEAN one
 *   FREEABLE --nodeMemAlloc (donor)-->      FREED     its buffers move to the new node
 *   FREEABLE --cacheScan-->                 FREED     buffers released (past the 3 kept)
 *   (owned)  --hashInsert-->                CLEAN     nodeFill, or a new node of an interior update
 *   (owned)  --hash race (nodeFill)-->      FREEABLE
 *   CLEAN    <--setDirty / clearDirty-->    DIRTY     the engine's inserts and node writes
 *   CLEAN    --cacheScan / nodeEvict-->     FREED     hash removed, buffers released
 *   CLEAN    --reclaim for a new node-->    FREEABLE  hash removed, buffers reused at once (or by the next read: spareRefill)
 *   CLEAN    --cannibalize-->               (owned)   hash removed, buffers reused
 *   CLEAN    --read error-->                FREEABLE  hash removed; read_error kept until reuse
 *   CLEAN    --freeInmem-->                 FREEABLE  node freed by an interior update
 *
 * Invariants (asserted where cheap)
 *   - used = nodes holding buffers = live + freeable + owned; bytes = used *
 *     (nodeSize + auxBytes) <= budgetBytes, always: past the budget a buffer
 *     is reused (reclaim, cannibalize), never allocated.
 *   - hashed (hashVal != 0) <=> in the table <=> on `live` (owned nodes are
 *     hashed only between hashInsert and the list add, in one call).
 *   - dirty = nodes with the dirty flag; only setDirty/clearDirty change it.
 *   - a node loses its buffers or its hash entry only while this cache holds
 *     intent + write on it and none of dirty / read_in_flight /
 *     write_in_flight / noevict / write_blocked / will_make_reachable is set
 *     (nodeReclaim); the pinned range keeps hashed nodes too.
 *   - every buffer is freed exactly once: buffersAllocated == buffersFreed
 *     after cacheExit.
 *   - the shrinker never frees below `reserve` nodes (cacheCanFree).
 *
 * Reserve (recalcReserve): 16 nodes, +8 while btree 0 has no known root, +8
 * per btree whose root is above level 0: enough for a split at every level.
 * The budget must hold the largest reserve possible (24 + 8 per btree), else
 * ERR_CACHE_TOO_SMALL (budgetBytesMin).
 *
 * Budget and reclaim. bcachefs asks the kernel for memory and lets the kernel's
 * shrinker call cacheScan under pressure. Here the byte budget plays the
 * kernel: nodeMemAlloc takes buffers from a FREEABLE node, else new ones while
 * under the budget, else runs the shrinker's clock (cacheScan: accessed bit =
 * second chance, 3/4-dirty write trigger) over `live` to reclaim one CLEAN
 * node and reuse its buffers, else (only for the holder of the cannibalize
 * lock) cannibalizes: takes any reclaimable live node, writing dirty ones and
 * waiting. Without the cannibalize lock a failed allocation is a value
 * (nodeFill: transaction_restart_fill_mem_alloc_fail); the transaction drops
 * its locks, takes the lock (cannibalizeLockWait) and retries, as in bcachefs.
 * Each read, once issued, runs the same clock (over at most 64 nodes, no
 * writes started) for one clean node if no FREEABLE buffers are left
 * (spareRefill): the next miss then takes buffers waiting on FREEABLE, and
 * the clock's walk over cold nodes is off its latency (a cold lookup at
 * queue depth 1 waits for nothing but its read).
 * Memory is returned to the system only by cacheScan (store.shrink(),
 * memoryPressure(), the memory watch) and cacheExit.
 *
 * Memory pressure: a Node process has no shrinker callback. memoryWatchStart()
 * polls, once a second by default on an unref'd timer, the memory the system
 * can still give (process.availableMemory() where Node has it, which also
 * honours a cgroup limit; else os.freemem(), which libuv reads from
 * MemAvailable in /proc/meminfo) and, under a cgroup limit
 * (process.constrainedMemory()), the process RSS against that limit; below
 * the low-water mark it calls memoryPressure(), which scans a share of
 * what can be freed (an eighth; half when critical).
 *
 * Locking protocol of a fill (bch2_btree_node_fill), across `await`
 *   allocate (intent+write held) -> hash insert (a lost race: back to FREEABLE,
 *   caller looks up again) -> read_in_flight -> drop write -> drop intent and
 *   every lock of the transaction (trans.unlock) -> read + validate -> clear
 *   read_in_flight, resolve readDone -> relock the node by seq (fails: look up
 *   again) -> trans.relock() (fails: restart relock_after_fill). Lookups that
 *   find a node with read_in_flight drop their lock and the transaction's,
 *   await readDone, relock by seq. Every lookup rechecks hashVal and level
 *   after its lock is taken: a node evicted and reused meanwhile is caught
 *   there (node_reused).
 *
 * Error convention
 *   Restarts and expected failures are returned as internal codes (numbers,
 *   errors.ts); a node is returned locked. A node that cannot be read is
 *   thrown as SixtreeError ERR_IO / ERR_CHECKSUM / ERR_TOPOLOGY naming btree,
 *   level, bucket and offset, with no lock on that node held; the node is left
 *   out of the hash table (FREEABLE, read_error), so the next lookup reads it
 *   again, and the cache stays consistent. The transaction's other locks may
 *   have been dropped for the read (it ends or restarts anyway). A pointer
 *   the cache cannot use (level >= BTREE_MAX_DEPTH, level disagreeing with
 *   the pointer, unknown btree, bad seq) is ERR_TOPOLOGY too, thrown before
 *   anything changes. Pointer objects passed in may be reused by the caller
 *   once the call returns (reads copy what they check against).
 *
 * The nodeWrite callback (the engine's node write)
 *   Called with this cache holding the node locked (read, or intent+write);
 *   it must do synchronously, before returning its promise, everything that
 *   needs the lock: set write_in_flight and node.writeDone, take the bytes
 *   (nodeWritePrepare), clearDirty(). The cache releases its lock as soon as
 *   the call returns and may then await the promise; it must resolve once the
 *   write finished and write_in_flight is clear. A rejection is counted
 *   (writeErrors) and the node stays dirty.
 *
 * Kernel mechanisms with no counterpart here
 *   - bc->lock mutex: one JS thread; the cache's state changes only in
 *     synchronous code, so every "recheck under the mutex" collapses into the
 *     first check unless an await lies between (and then it is kept).
 *   - rhashtable and its params / cmp_fn: a Map<number, Node>.
 *   - memalloc_nofs_save/restore, GFP_NOWAIT vs GFP_KERNEL retries: no
 *     reclaim recursion into a file system; one allocation attempt.
 *   - freed_pcpu / freed_nonpcpu: six locks have no percpu reader mode; one
 *     freed list.
 *   - RCU, prefetch() of aux data, cond_resched, lockdep: not needed.
 *   - shrinker_alloc/register, seeks: the budget plus memoryWatchStart.
 *   - verify_data / verify_ondisk (bch2_verify_btree_ondisk): no debug
 *     re-read of written nodes here.
 *   - trace_and_count: the counters of CACHE_COUNTERS and NOT_FREED_REASONS.
 *   - bch2_btree_node_flags: node.ts NODE_FLAGS (one table, flagsToText).
 *   - bch2_btree_id_str: the engine owns btree names; the btreeName option.
 *   - __bch2_btree_node_hash_insert: folded into hashInsert (the list add is
 *     all it leaves out, and no caller here wants that).
 */

import * as os from 'node:os';
import { ERR, SixtreeError } from '../errors.js';
import type { Device } from '../io/device.js';
import { Printbuf, bytesToText } from '../util/printbuf.js';
import { SixLock, SixLockCounters, SixLockType } from '../util/six.js';
import { BPOS_WORDS, wordsCmp, wordsToText } from './bpos.js';
import { KeyBuffers, NodeKeys } from './bset.js';
import { LockOwnerBase, countRestart, nodeDowngrade, nodeLock, nodeLockWrite, nodeRelock, nodeTryLock, nodeUnlock, type LockOwner } from './locking.js';
import { Node, NodeFlag, NodeList, SIB_U64S_NONE, flagsToText, type NodeListName } from './node.js';
import { nodeReadValidate, type NodeReadExpect } from './node-io.js';
import { BTREE_MAX_DEPTH } from './path.js';
import { LOCK_READ, type BtreePtr, type CacheTrans, type LockType } from './types.js';

/* ---------------------------------------------------------------------------
 * Limits and defaults.
 */

/** Default byte budget of node memory (store option cacheSize). */
export const cacheSizeBytesDefault = 64 << 20;
/** recalcReserve: base, without a root for btree 0, per btree whose root is an interior node. */
export const reserveNodesBase = 16;
export const reserveNodesNoRoot = 8;
export const reserveNodesPerInteriorRoot = 8;
/** The shrinker leaves this many FREEABLE nodes so a split need not allocate. */
export const freeableKeepNr = 3;
/** Read-aheads in flight at once (nodePrefetch skips past it). */
export const prefetchInFlightMaxDefault = 16;
/** Nodes a spare refill's clock looks at, at most (it goes on from there next time; the allocation sweeps the rest if it must). */
const spareRefillTouchMax = 64;
/** Demand reads without a transaction held at once, in flight or pinned (nodeReadNowait); past it, lookups take the transaction path. */
const readsNowaitHeldMax = 256;
const noop = (): void => {};

/** A read nodeReadNowait started or found in flight: wait on done; release it with readNowaitRelease when pinned. */
export interface ReadNowait {
  readonly node: Node;
  done: Promise<unknown>;
  /** readPins taken on node for the caller, until readNowaitRelease. */
  pinned: boolean;
  /** Counted in readsNowaitHeld (a read this call started). */
  held: boolean;
}
/** Entries of the slot hint table (cache.slotHint), a power of two. */
const slotHintSize = 4096;
/** Lookup retries (node reused / lost a fill race) before a restart. */
const nodeGetRetriesMax = 16;
/** Write-and-wait rounds of one flush reclaim before it gives up on a node. */
const reclaimFlushRoundsMax = 4;
/** Rounds over the whole live list by a cannibalize that keeps finding nothing. */
const cannibalizeRoundsMax = 3;
/** Bitmasks of btrees are numbers: at most this many btrees. */
const btreesMax = 31;

const READ = SixLockType.read;
const INTENT = SixLockType.intent;
const WRITE = SixLockType.write;

/* ---------------------------------------------------------------------------
 * Counters: one table each; names, indexes and stats() derive from them.
 */

export const CACHE_COUNTERS = [
  ['hits', 'lookups that found the node cached'],
  ['hitsFast', 'of those, found through a slot hint (slotHint, our btree_node_mem_ptr) rather than the hash table'],
  ['misses', 'lookups that had to read the node'],
  ['reads', 'node reads issued (fills and prefetches)'],
  ['readErrors', 'node reads that failed: I/O, checksum or topology'],
  ['tornBsets', 'node reads that ended at a torn last bset (an append a crash interrupted; the journal replays its keys)'],
  ['prefetches', 'read-aheads started'],
  ['prefetchSkipped', 'read-aheads not started: too many in flight, or no memory without cannibalizing'],
  ['fillRaces', 'fills that lost the hash insert to another fill'],
  ['fillParentLost', 'lookups that read nothing because the parent they took the pointer from was no longer locked (the walk reads the pointer again)'],
  ['nodeReused', 'lookups whose node was evicted and reused while they locked it'],
  ['evictions', 'cached nodes dropped: shrinker, reclaim for a new node, nodeEvict'],
  ['cannibalized', 'cached nodes taken by cannibalize'],
  ['freeableFreed', 'FREEABLE nodes whose buffers the shrinker released'],
  ['scans', 'shrinker scans'],
  ['scanWrites', 'node writes started by the shrinker (3/4 of the cache dirty)'],
  ['reclaimWrites', 'node writes started by flush reclaim (cannibalize, nodeEvict)'],
  ['writeErrors', 'node writes started by the cache that failed'],
  ['memAllocFail', 'node allocations that failed: over budget, nothing reclaimable, no cannibalize lock'],
  ['overBudget', 'buffers allocated past the budget by the cannibalize-lock holder when nothing could be cannibalized'],
  ['cannibalizeLock', 'cannibalize lock taken'],
  ['cannibalizeLockFail', 'cannibalize lock wanted while another transaction held it'],
  ['buffersAllocated', 'native buffers allocated (data and aux count one each)'],
  ['buffersFreed', 'native buffers freed'],
  ['memoryPressure', 'memory pressure events handled'],
  ['readsNowait', 'of the misses, reads started without a transaction (nodeReadNowait: store.get)'],
  ['spareRefills', 'nodes reclaimed to FREEABLE right after a read was issued, so the next miss finds buffers (spareRefill)'],
] as const;

export type CacheCounterName = (typeof CACHE_COUNTERS)[number][0];
const C = Object.freeze(Object.fromEntries(CACHE_COUNTERS.map(([name], i) => [name, i])) as { readonly [K in CacheCounterName]: number });

/** Why a node was not freed (bcachefs BCH_BTREE_CACHE_NOT_FREED_REASONS, plus pinned). */
export const NOT_FREED_REASONS = [
  ['cache_reserve', 'the shrinker was asked for more than the reserve allows'],
  ['pinned', 'inside the pinned range (setPinned)'],
  ['lock_intent', 'intent lock held by someone'],
  ['lock_write', 'read locks held: write lock not available'],
  ['dirty', 'has unwritten keys'],
  ['read_in_flight', 'a read is under way'],
  ['write_in_flight', 'a write is under way'],
  ['noevict', 'marked noevict (root, or held by an update)'],
  ['write_blocked', 'must not be written yet: points to unwritten nodes'],
  ['will_make_reachable', 'new node an interior update waits to write'],
  ['access_bit', 'used since the last scan: second chance'],
  ['read_set', 'in a running transaction\'s read set'],
] as const;

export type NotFreedReason = (typeof NOT_FREED_REASONS)[number][0];
const NF = Object.freeze(Object.fromEntries(NOT_FREED_REASONS.map(([name], i) => [name, i])) as { readonly [K in NotFreedReason]: number });

/* ---------------------------------------------------------------------------
 * Options and shapes.
 */

/** Anonymous memory for aux search trees (the engine wires the native mmapAnon/munmap). */
export interface AuxAllocator {
  auxAlloc(sizeBytes: number): Uint8Array;
  auxFree(buf: Uint8Array): void;
}

/** A btree + position (bcachefs struct bbpos); pos is 5 u32 words. */
export interface Bbpos {
  btreeId: number;
  pos: Uint32Array;
}

export interface BtreeCacheOptions {
  device: Device;
  nodeSizeBytes: number;
  blockSizeBytes: number;
  /** Byte budget for node data + aux (store option cacheSize); default cacheSizeBytesDefault. */
  budgetBytes?: number;
  /** Number of btrees (reserve, pinned masks). */
  nrBtrees: number;
  /** Byte offset of a bucket on the device. */
  bucketOffset: (bucket: number) => number;
  /** The engine's node write; see the notes at the top for its contract. */
  nodeWrite: (node: Node) => Promise<void>;
  /** Passed to nodeReadValidate: bsets with a blacklisted journal seq are ignored. */
  isSeqBlacklisted?: (seq: number) => boolean;
  /** Told of every node read that skipped blacklisted bsets (their seqs), before anyone can use the node. */
  onBlacklistedBsets?: (node: Node, seqs: number[]) => void;
  /** Passed to nodeReadValidate: bsets newer than this journal seq are ignored. */
  maxJournalSeq?: () => number;
  /** Passed to nodeReadValidate: a failing last bset holding keys older than this journal seq is damage (ERR_CHECKSUM), not a torn append. */
  tornFloor?: () => number;
  /** Aux memory; default: plain Uint8Array (the engine passes mmapAnon/munmap). */
  auxAlloc?: AuxAllocator['auxAlloc'];
  auxFree?: AuxAllocator['auxFree'];
  /** Btree names for messages; default "btree <id>". */
  btreeName?: (btreeId: number) => string;
  /** Counters for the node locks; default: six.ts's process-wide ones. */
  lockCounters?: SixLockCounters;
  prefetchInFlightMax?: number;
  /** Debug switch (bch2_btree_shrinker_disabled): cacheScan frees nothing. */
  shrinkerDisabled?: boolean;
}

export interface CacheStats {
  nodes: number;
  dirty: number;
  bytes: number;
  budgetBytes: number;
  reserve: number;
  freeable: number;
  freed: number;
  hits: number;
  misses: number;
  evictions: number;
  cannibalized: number;
  reads: number;
  readErrors: number;
  prefetches: number;
  /** Microseconds spent validating node reads (checksums, headers, keys, search trees), all reads together. */
  readValidateUs: number;
  notFreed: Record<NotFreedReason, number>;
  counters: Record<CacheCounterName, number>;
}

export interface MemoryWatchOptions {
  /** Poll period; default 1000 ms. */
  intervalMs?: number;
  /** Pressure when the system has less available than this; default max(64 MiB, 5% of total memory). */
  availableBytesLow?: number;
  /** Under a cgroup limit: pressure when RSS is above this fraction of it; default 0.9. */
  rssFractionHigh?: number;
}

export type MemoryPressureLevel = 'moderate' | 'critical';

interface WaitList {
  promise: Promise<void>;
  resolve: () => void;
}

const resolvedPromise: Promise<void> = Promise.resolve();

/* ---------------------------------------------------------------------------
 * The cache.
 */

/** The last Node.hashId given (process-wide: unique across caches too). */
let hashIdLast = 0;

export class BtreeCache {
  readonly device: Device;
  readonly nodeSizeBytes: number;
  readonly blockSizeBytes: number;
  readonly auxBytes: number;
  /** Memory of one node: data + aux. */
  readonly nodeBytes: number;
  readonly budgetBytes: number;
  /** Nodes with buffers the budget allows. */
  readonly usedMax: number;
  readonly nrBtrees: number;

  /** Nodes holding buffers (bcachefs bc->used). */
  used = 0;
  /** Nodes with the dirty flag (bc->dirty). */
  dirty = 0;
  /** The shrinker never frees below this many nodes (bc->reserve). */
  reserve = 0;

  /** Time spent in nodeReadValidate, all reads (stats().readValidateUs). */
  private readValidateMs = 0;

  /** Microseconds spent validating node reads, unrounded (stats().readValidateUs; bench/cold-phases.ts reads it per lookup without building the rest of stats()). */
  get readValidateUs(): number {
    return this.readValidateMs * 1000;
  }

  readonly live = new NodeList('live');
  readonly freeable = new NodeList('freeable');
  readonly freed = new NodeList('freed');

  /** Hash table: node seq (btree_ptr_hash_val) -> node. */
  private readonly table = new Map<number, Node>();

  /** Every hashed node (debug checks). */
  hashedNodes(): IterableIterator<Node> {
    return this.table.values();
  }
  /** Every Node object ever made, by slot. Never shrinks: slots are stable. */
  private readonly nodes: Node[] = [];
  /**
   * The slot of the node last hashed under each value of a seq's low bits:
   * a hint, checked against hashVal like the slot a parent key would keep
   * (btree_node_mem_ptr, which our packed parent keys have no room for).
   * Lookups try it before the hash table (counted as hitsFast).
   */
  private readonly slotHint = new Int32Array(slotHintSize).fill(-1);
  /** Buffers (with their views) by slot; null while the node is FREED. The cache owns them, keys borrows them. */
  private readonly bufs: (KeyBuffers | null)[] = [];

  /** Root level per btree, -1 when the root is not known (bcachefs btree_roots_known). */
  private readonly rootLevels: Int8Array;

  /* pinned range (bcachefs pinned_nodes_*) */
  private pinnedLeafMask = 0;
  private pinnedInteriorMask = 0;
  private readonly pinnedStart: Bbpos = { btreeId: 0, pos: new Uint32Array(BPOS_WORDS) };
  private readonly pinnedEnd: Bbpos = { btreeId: 0, pos: new Uint32Array(BPOS_WORDS) };

  /* cannibalize lock (bc->alloc_lock, bc->alloc_wait) */
  private allocLock: LockOwner | null = null;
  private allocWait: WaitList | null = null;

  /** The cache's own lock owner: reclaim, prefetch, evict without a transaction. Youngest of all: never wins a deadlock. */
  readonly owner: LockOwner = new LockOwnerBase(-1, Number.MAX_SAFE_INTEGER);

  private readonly readsInFlight = new Set<Promise<SixtreeError | null>>();
  private prefetchInFlight = 0;
  /** Reads nodeReadNowait started: in flight, or done and pinned until released. */
  private readsNowaitHeld = 0;
  readonly prefetchInFlightMax: number;
  shrinkerDisabled: boolean;

  private readonly counters = new Float64Array(CACHE_COUNTERS.length);
  private readonly notFreed = new Float64Array(NOT_FREED_REASONS.length);

  private readonly bucketOffset: (bucket: number) => number;
  private readonly nodeWrite: (node: Node) => Promise<void>;
  private readonly isSeqBlacklisted: ((seq: number) => boolean) | undefined;
  private readonly onBlacklistedBsets: ((node: Node, seqs: number[]) => void) | undefined;
  private readonly maxJournalSeq: (() => number) | undefined;
  private readonly tornFloor: (() => number) | undefined;
  private readonly auxAllocFn: AuxAllocator['auxAlloc'];
  private readonly auxFreeFn: AuxAllocator['auxFree'];
  private readonly btreeName: (btreeId: number) => string;
  private readonly lockCounters: SixLockCounters | undefined;
  private memoryWatch: NodeJS.Timeout | null = null;
  private exited = false;

  /** Largest reserve a store with nrBtrees btrees can need (every root interior, btree 0 unknown). */
  static reserveMax(nrBtrees: number): number {
    return reserveNodesBase + reserveNodesNoRoot + reserveNodesPerInteriorRoot * nrBtrees;
  }

  /** Smallest budget that holds reserveMax nodes; Store.open checks cacheSize against it. */
  static budgetBytesMin(nodeSizeBytes: number, nrBtrees: number): number {
    return BtreeCache.reserveMax(nrBtrees) * (nodeSizeBytes + NodeKeys.auxBytes(nodeSizeBytes));
  }

  /** Throws ERR_CACHE_TOO_SMALL if budgetBytes cannot hold the largest reserve. */
  static checkBudget(budgetBytes: number, nodeSizeBytes: number, nrBtrees: number): void {
    const min = BtreeCache.budgetBytesMin(nodeSizeBytes, nrBtrees);
    if (budgetBytes < min) {
      throw new SixtreeError(
        'ERR_CACHE_TOO_SMALL',
        `cacheSize: got ${budgetBytes} bytes; the node cache needs at least ${min} (${bytesToText(min)}): a reserve of ${BtreeCache.reserveMax(nrBtrees)} nodes of ${nodeSizeBytes} bytes plus aux search trees`,
        { argument: 'cacheSize', min },
      );
    }
  }

  /** bch2_fs_btree_cache_init_early + bch2_fs_btree_cache_init. */
  constructor(opts: BtreeCacheOptions) {
    const budgetBytes = opts.budgetBytes ?? cacheSizeBytesDefault;
    if (!Number.isInteger(opts.nrBtrees) || opts.nrBtrees < 1 || opts.nrBtrees > btreesMax) throw new Error(`btree cache: nrBtrees ${opts.nrBtrees} outside 1..${btreesMax}`);
    BtreeCache.checkBudget(budgetBytes, opts.nodeSizeBytes, opts.nrBtrees);

    this.device = opts.device;
    this.nodeSizeBytes = opts.nodeSizeBytes;
    this.blockSizeBytes = opts.blockSizeBytes;
    this.auxBytes = NodeKeys.auxBytes(opts.nodeSizeBytes);
    this.nodeBytes = this.nodeSizeBytes + this.auxBytes;
    this.budgetBytes = budgetBytes;
    this.usedMax = Math.floor(budgetBytes / this.nodeBytes);
    this.nrBtrees = opts.nrBtrees;
    this.rootLevels = new Int8Array(opts.nrBtrees).fill(-1);
    this.bucketOffset = opts.bucketOffset;
    this.nodeWrite = opts.nodeWrite;
    this.isSeqBlacklisted = opts.isSeqBlacklisted;
    this.onBlacklistedBsets = opts.onBlacklistedBsets;
    this.maxJournalSeq = opts.maxJournalSeq;
    this.tornFloor = opts.tornFloor;
    this.auxAllocFn = opts.auxAlloc ?? ((n) => new Uint8Array(n));
    this.auxFreeFn = opts.auxFree ?? (() => {});
    this.btreeName = opts.btreeName ?? ((id) => `btree ${id}`);
    this.lockCounters = opts.lockCounters;
    this.prefetchInFlightMax = opts.prefetchInFlightMax ?? prefetchInFlightMaxDefault;
    this.shrinkerDisabled = opts.shrinkerDisabled ?? false;

    this.cacheInit();
  }

  /** bch2_fs_btree_cache_init: compute the reserve and allocate it, FREEABLE. */
  private cacheInit(): void {
    this.recalcReserve();
    for (let i = 0; i < this.reserve; i++) {
      if (!this.nodeMemAllocFreeable()) throw new SixtreeError('ERR_CACHE_TOO_SMALL', `btree cache: could not allocate the reserve of ${this.reserve} nodes`);
    }
    /* the seed splices live into freeable here: ours went to freeable directly */
  }

  /* ------------------------------------------------------------- reserve */

  /** bch2_recalc_btree_reserve. */
  recalcReserve(): void {
    let reserve = reserveNodesBase;
    if (this.rootLevels[0]! < 0) reserve += reserveNodesNoRoot;
    for (let i = 0; i < this.nrBtrees; i++) {
      const level = this.rootLevels[i]!;
      if (level >= 0) reserve += Math.min(1, level) * reserveNodesPerInteriorRoot;
    }
    this.reserve = reserve;
  }

  /**
   * Tell the cache a btree's root level (null: root unknown). The engine calls
   * it whenever a root is read or replaced. Root nodes themselves must carry
   * noevict (bcachefs keeps roots off the live list; here they stay on it).
   */
  setRootInfo(btreeId: number, level: number | null): void {
    if (btreeId < 0 || btreeId >= this.nrBtrees) throw new Error(`btree cache: btree id ${btreeId} outside 0..${this.nrBtrees - 1}`);
    this.rootLevels[btreeId] = level === null ? -1 : level;
    this.recalcReserve();
  }

  /** btree_cache_can_free. */
  private cacheCanFree(): number {
    return Math.max(0, this.used - this.reserve);
  }

  /* ------------------------------------------------------ buffers, lists */

  /** btree_node_to_freedlist (one freed list: no percpu read locks here). */
  private nodeToFreedList(b: Node): void {
    listMoveHead(b, this.freed, this);
  }

  /** btree_node_data_free: release buffers, FREED. The caller holds intent+write (or the node is unreachable). */
  private nodeDataFree(b: Node): void {
    if (b.has(NodeFlag.write_in_flight)) throw new Error(`btree cache: freeing node slot ${b.slot} with a write in flight`);
    if (b.has(NodeFlag.dirty)) throw new Error(`btree cache: freeing dirty node slot ${b.slot}`);
    b.clear(NodeFlag.just_written);
    const bufs = this.bufs[b.slot];
    if (!bufs) throw new Error(`btree cache: node slot ${b.slot} has no buffers to free`);
    b.keys.detach();
    this.bufs[b.slot] = null;
    this.device.freeBuffer(bufs.data);
    this.auxFreeFn(bufs.aux);
    this.counters[C.buffersFreed]! += 2;
    this.used--;
    this.nodeToFreedList(b);
  }

  /** btree_node_data_alloc: false when the allocators fail (the budget is checked by the caller). */
  private nodeDataAlloc(b: Node): boolean {
    if (this.bufs[b.slot]) throw new Error(`btree cache: node slot ${b.slot} already has buffers`);
    let data: Uint8Array;
    let aux: Uint8Array;
    try {
      data = this.device.allocBuffer(this.nodeSizeBytes);
    } catch {
      return false;
    }
    try {
      aux = this.auxAllocFn(this.auxBytes);
    } catch {
      this.device.freeBuffer(data);
      return false;
    }
    let bufs: KeyBuffers;
    try {
      bufs = new KeyBuffers(data, aux, this.nodeSizeBytes);
    } catch (e) {
      this.device.freeBuffer(data);
      this.auxFreeFn(aux);
      throw e;
    }
    this.counters[C.buffersAllocated]! += 2;
    this.bufs[b.slot] = bufs;
    b.keys.attachBuffers(bufs);
    return true;
  }

  /** Move b2's buffers to b (the seed's swap(b->data, b2->data), b2 had them, b had none). */
  private nodeBuffersTake(b: Node, b2: Node): void {
    const bufs = this.bufs[b2.slot];
    if (this.bufs[b.slot] || !bufs) throw new Error(`btree cache: buffer move slot ${b2.slot} -> ${b.slot} from a node without / to a node with buffers`);
    b2.keys.detach();
    this.bufs[b2.slot] = null;
    this.bufs[b.slot] = bufs;
    b.keys.attachBuffers(bufs);
  }

  /** __btree_node_mem_alloc: a new Node object, FREED state, no list. */
  private nodeObjectAlloc(): Node {
    const slot = this.nodes.length;
    const b = new Node(slot, new NodeKeys(this.nodeSizeBytes, this.blockSizeBytes), new SixLock(this.lockCounters));
    this.nodes.push(b);
    this.bufs.push(null);
    return b;
  }

  /** __bch2_btree_node_mem_alloc: object + buffers, FREEABLE (used for the reserve at init). */
  private nodeMemAllocFreeable(): Node | null {
    if (this.used >= this.usedMax) return null;
    const b = this.nodeObjectAlloc();
    if (!this.nodeDataAlloc(b)) {
      this.nodeToFreedList(b);
      return null;
    }
    this.used++;
    this.freeable.addHead(b);
    return b;
  }

  /* ----------------------------------------------------------- hash table */

  /** bch2_btree_node_hash_remove: later lookups of this node miss. The list is left alone. */
  hashRemove(b: Node): void {
    if (b.hashVal === 0 || this.table.get(b.hashVal) !== b) throw new Error(`btree cache: node slot ${b.slot} seq ${b.hashVal} is not in the hash table`);
    this.table.delete(b.hashVal);
    b.hashVal = 0;
    b.hashId = 0;
  }

  /**
   * bch2_btree_node_hash_insert: hash `b` (owned: on no list, btreeId, level
   * and bucket set) under node seq `seq` and put it on the live list. False
   * when another node already has that seq (a fill raced in).
   */
  hashInsert(b: Node, seq: number): boolean {
    if (b.hashVal !== 0) throw new Error(`btree cache: node slot ${b.slot} already hashed (seq ${b.hashVal})`);
    if (seq === 0) throw new Error('btree cache: node seq 0 cannot be hashed');
    if (this.table.has(seq)) return false;
    b.hashVal = seq;
    b.hashId = ++hashIdLast;
    // a node new to the hash (read, or built by an interior update): its merge estimates are unknown
    b.sibU64s.fill(0);
    this.table.set(seq, b);
    this.slotHint[(seq >>> 0) & (slotHintSize - 1)] = b.slot;
    if (b.list !== 'none') this.listOf(b.list).remove(b);
    this.live.addTail(b);
    return true;
  }

  /** btree_cache_find. */
  cacheFind(seq: number): Node | undefined {
    return this.table.get(seq);
  }

  /** The node object in a slot (the in-memory pointer key's fast path), or undefined. */
  nodeBySlot(slot: number): Node | undefined {
    return this.nodes[slot];
  }

  /* ----------------------------------------------------- dirty, listing */

  /** Mark a node dirty, keeping the dirty counter right (the only way the flag may be set). */
  setDirty(b: Node): void {
    if (b.has(NodeFlag.dirty)) return;
    b.set(NodeFlag.dirty);
    this.dirty++;
  }

  /** Clear the dirty flag (the node write does it when it takes the bytes). */
  clearDirty(b: Node): void {
    if (!b.has(NodeFlag.dirty)) return;
    b.clear(NodeFlag.dirty);
    this.dirty--;
  }

  /** Live nodes, oldest first in clock order; the current node may be removed while iterating. */
  liveNodes(): IterableIterator<Node> {
    return this.live[Symbol.iterator]();
  }

  nodeCountOnList(name: NodeListName): number {
    if (name === 'none') return this.nodes.length - this.live.count - this.freeable.count - this.freed.count;
    return this.listOf(name).count;
  }

  private listOf(name: NodeListName): NodeList {
    switch (name) {
      case 'live':
        return this.live;
      case 'freeable':
        return this.freeable;
      case 'freed':
        return this.freed;
      default:
        throw new Error('btree cache: no list "none"');
    }
  }

  /**
   * An interior update is done with `b` (bcachefs btree_node_free_inmem):
   * unhash it and keep its buffers, FREEABLE. The caller holds intent+write
   * and releases them afterwards; the node must be clean.
   */
  freeInmem(b: Node): void {
    const busy = NodeFlag.dirty | NodeFlag.write_in_flight | NodeFlag.read_in_flight | NodeFlag.noevict | NodeFlag.write_blocked | NodeFlag.will_make_reachable;
    if (b.flags & busy) throw new Error(`btree cache: freeInmem of node slot ${b.slot} with flags ${flagsToText(b.flags & busy)}`);
    if (b.hashVal !== 0) this.hashRemove(b);
    listMoveHead(b, this.freeable, this);
  }

  /* -------------------------------------------------------------- pinned */

  /**
   * Keep nodes of the given btrees (bit i = btree i) whose max key is in
   * (start, end] from being reclaimed: leaves for btreeMaskLeaf, interior
   * nodes for btreeMaskInterior (bcachefs pinned_nodes_*, used by fsck passes
   * walking a range).
   */
  setPinned(btreeMaskLeaf: number, btreeMaskInterior: number, start: Bbpos, end: Bbpos): void {
    this.pinnedLeafMask = btreeMaskLeaf >>> 0;
    this.pinnedInteriorMask = btreeMaskInterior >>> 0;
    this.pinnedStart.btreeId = start.btreeId;
    this.pinnedStart.pos.set(start.pos.subarray(0, BPOS_WORDS));
    this.pinnedEnd.btreeId = end.btreeId;
    this.pinnedEnd.pos.set(end.pos.subarray(0, BPOS_WORDS));
  }

  clearPinned(): void {
    this.pinnedLeafMask = 0;
    this.pinnedInteriorMask = 0;
  }

  private nodePinned(b: Node): boolean {
    const mask = b.level !== 0 ? this.pinnedInteriorMask : this.pinnedLeafMask;
    if ((mask & (1 << b.btreeId)) === 0) return false;
    const max = b.keys.maxKey;
    return bbposCmp(this.pinnedStart, b.btreeId, max) < 0 && bbposCmp(this.pinnedEnd, b.btreeId, max) >= 0;
  }

  /* ------------------------------------------------------------- reclaim */

  private refuse(reason: number, count: boolean): number {
    if (count) this.notFreed[reason]!++;
    return ERR.btree_node_reclaim_refused;
  }

  /** Take intent + write for `owner` without waiting: 0, or the refusal reason + 1. */
  private reclaimLock(b: Node, owner: LockOwner): number {
    /* raw trylock: an intent the owner already holds must fail, not recurse */
    if (!b.lock.tryLock(INTENT, owner)) return NF.lock_intent + 1;
    if (!b.lock.tryLock(WRITE, owner)) {
      b.lock.unlock(INTENT, owner);
      return NF.lock_write + 1;
    }
    owner.locksHeld.add(b.lock, INTENT);
    owner.locksHeld.add(b.lock, WRITE);
    return 0;
  }

  /** Release what reclaimLock / nodeReclaim took. */
  private reclaimUnlock(b: Node, owner: LockOwner): void {
    nodeUnlock(owner, b.lock, WRITE);
    nodeUnlock(owner, b.lock, INTENT);
  }

  /** The flag checks of __btree_node_reclaim that do not depend on flush: a reason, or -1. */
  private reclaimBlockedBy(b: Node): number {
    if (b.has(NodeFlag.noevict)) return NF.noevict;
    if (b.readPins > 0 && b.hashVal !== 0) return NF.read_set;
    if (b.has(NodeFlag.write_blocked)) return NF.write_blocked;
    if (b.has(NodeFlag.will_make_reachable)) return NF.will_make_reachable;
    return -1;
  }

  private ioReason(b: Node): number {
    if (b.has(NodeFlag.dirty)) return NF.dirty;
    if (b.has(NodeFlag.read_in_flight)) return NF.read_in_flight;
    if (b.has(NodeFlag.write_in_flight)) return NF.write_in_flight;
    return -1;
  }

  /**
   * btree_node_reclaim (__btree_node_reclaim without flush): 0 with intent +
   * write held by `owner`, or ERR.btree_node_reclaim_refused with the reason
   * counted when `count`. The seed's recheck under the lock is the first
   * check here: nothing can run between them.
   */
  private nodeReclaim(b: Node, owner: LockOwner, count: boolean): number {
    /* pinned only matters for a hashed node: an unhashed one cannot be found */
    if (b.hashVal !== 0 && this.nodePinned(b)) return this.refuse(NF.pinned, count);
    const io = this.ioReason(b);
    if (io >= 0) return this.refuse(io, count);
    const l = this.reclaimLock(b, owner);
    if (l !== 0) return this.refuse(l - 1, count);
    const blocked = this.reclaimBlockedBy(b);
    if (blocked >= 0) {
      this.reclaimUnlock(b, owner);
      return this.refuse(blocked, count);
    }
    return 0;
  }

  /**
   * btree_node_write_and_reclaim (__btree_node_reclaim with flush): waits for
   * I/O in flight and writes the node if dirty, then reclaims. Bounded: after
   * reclaimFlushRoundsMax write/wait rounds it refuses.
   */
  private async nodeWriteAndReclaim(b: Node, owner: LockOwner, seq: number): Promise<number> {
    for (let round = 0; round < reclaimFlushRoundsMax; round++) {
      if (b.hashVal !== seq) return ERR.btree_node_reclaim_refused; /* changed identity while we waited */
      if (b.hashVal !== 0 && this.nodePinned(b)) return this.refuse(NF.pinned, true);
      if (b.flags & (NodeFlag.read_in_flight | NodeFlag.write_in_flight)) {
        await waitOnRead(b);
        await waitOnWrite(b);
        continue;
      }
      const l = this.reclaimLock(b, owner);
      if (l !== 0) return this.refuse(l - 1, true);
      const blocked = this.reclaimBlockedBy(b);
      if (blocked >= 0) {
        this.reclaimUnlock(b, owner);
        return this.refuse(blocked, true);
      }
      if (b.has(NodeFlag.dirty)) {
        this.counters[C.reclaimWrites]!++;
        const w = this.nodeWriteStart(b);
        this.reclaimUnlock(b, owner);
        await w;
        await waitOnWrite(b);
        continue;
      }
      return 0;
    }
    return this.refuse(NF.dirty, true);
  }

  /** Start the engine's write of `b` (caller holds a lock on it); the promise never rejects. */
  private nodeWriteStart(b: Node): Promise<void> {
    let p: Promise<void>;
    try {
      p = this.nodeWrite(b);
    } catch (e) {
      p = Promise.reject(e);
    }
    return p.then(undefined, () => {
      this.counters[C.writeErrors]!++;
    });
  }

  /* ------------------------------------------------------------ shrinker */

  /** bch2_btree_cache_count: how many nodes the shrinker may free. */
  cacheCount(): number {
    if (this.shrinkerDisabled) return 0;
    return this.cacheCanFree();
  }

  /**
   * bch2_btree_cache_scan: free up to nr nodes' memory, touching at most nr
   * (beyond the 3 FREEABLE nodes kept). Live nodes used since the last scan
   * lose their accessed bit instead (second chance); when dirty + nr >= 3/4
   * of the cache, dirty nodes it passes get their writes started. The live
   * list is rotated so the next scan starts where this one stopped (clock).
   * Synchronous; returns the number freed.
   */
  cacheScan(nr: number): number {
    if (this.shrinkerDisabled) return 0;
    this.counters[C.scans]!++;
    const canFree = this.cacheCanFree();
    if (nr > canFree) this.notFreed[NF.cache_reserve]! += nr - canFree;
    /* the write trigger uses the request as asked, the limits are clamped (the seed's nr_to_scan vs nr) */
    const nrClamped = Math.min(nr, canFree);
    return this.cacheScanInner(nr, nrClamped, nrClamped, false);
  }

  /**
   * The scan loop. `nrToScan` is the caller's request (for the write
   * trigger); it stops after freeing `nrFree` or touching `nrTouch` nodes
   * (the seed: both are nr). toFreeable: reclaimed live nodes keep their
   * buffers and go to FREEABLE, for nodeMemAlloc to reuse at once (reclaim on
   * the allocation path); the FREEABLE loop is skipped then. mayWrite false:
   * never start a node write (the 3/4-dirty trigger is the allocation's).
   */
  private cacheScanInner(nrToScan: number, nrFree: number, nrTouch: number, toFreeable: boolean, mayWrite = true): number {
    if (nrFree <= 0) return 0;
    const triggerWrites = mayWrite && this.dirty + nrToScan >= Math.floor((this.used * 3) / 4);
    const owner = this.owner;
    let freed = 0;
    let touched = 0;

    if (!toFreeable) {
      let i = 0;
      for (let b = this.freeable.head; b !== null; ) {
        const next: Node | null = b.next; // b may leave the list
        /* leave a few nodes FREEABLE so a split does not hit the allocator */
        if (++i <= freeableKeepNr) {
          b = next;
          continue;
        }
        touched++;
        if (touched >= nrTouch) return freed;
        if (this.nodeReclaim(b, owner, true) === 0) {
          this.nodeDataFree(b);
          this.reclaimUnlock(b, owner);
          this.counters[C.freeableFreed]!++;
          freed++;
        }
        b = next;
      }
    }

    let stop: Node | null = null;
    for (let b = this.live.head; b !== null; ) {
      const next: Node | null = b.next;
      touched++;
      if (b.has(NodeFlag.accessed)) {
        b.clear(NodeFlag.accessed);
        this.notFreed[NF.access_bit]!++;
      } else if (this.nodeReclaim(b, owner, true) === 0) {
        freed++;
        this.counters[C.evictions]!++;
        if (b.hashVal !== 0) this.hashRemove(b); // unhashed: an old node an interior update replaced
        if (toFreeable) listMoveHead(b, this.freeable, this);
        else this.nodeDataFree(b);
        this.reclaimUnlock(b, owner);
        if (freed >= nrFree) {
          stop = next;
          break;
        }
      } else if (
        triggerWrites &&
        b.has(NodeFlag.dirty) &&
        !b.has(NodeFlag.will_make_reachable) &&
        !b.has(NodeFlag.write_blocked) &&
        !b.has(NodeFlag.write_in_flight) &&
        b.lock.tryLock(READ, owner)
      ) {
        /* the seed drops bc->lock here and restarts the walk after b; nothing can move under us, so walk on */
        this.counters[C.scanWrites]!++;
        void this.nodeWriteStart(b);
        b.lock.unlock(READ, owner);
      }
      if (touched >= nrTouch) {
        stop = next;
        break;
      }
      b = next;
    }
    /* out_rotate: the next scan starts at `stop` */
    if (stop !== null && stop.list === 'live') while (this.live.head !== stop) this.live.moveTail(this.live.head!, this.live);
    return freed;
  }

  /**
   * store.shrink(): free up to nr nodes (default: all the reserve allows), in
   * at most two scans so nodes spared by their accessed bit in the first can
   * go in the second. Writes it starts finish in the background.
   */
  shrink(nr: number = this.cacheCount()): number {
    let freed = 0;
    for (let pass = 0; pass < 2 && freed < nr; pass++) freed += this.cacheScan(nr - freed);
    return freed;
  }

  /** The system is short of memory: give back a share of what can be freed. */
  memoryPressure(level: MemoryPressureLevel = 'moderate'): number {
    this.counters[C.memoryPressure]!++;
    const can = this.cacheCount();
    const nr = level === 'critical' ? Math.ceil(can / 2) : Math.ceil(can / 8);
    return nr > 0 ? this.cacheScan(nr) : 0;
  }

  /**
   * Poll the system's available memory and call memoryPressure() when it runs
   * low (see the notes at the top). The timer is unref'd; returns a stop
   * function (cacheExit stops it too).
   */
  memoryWatchStart(opts: MemoryWatchOptions = {}): () => void {
    this.memoryWatchStop();
    const intervalMs = opts.intervalMs ?? 1000;
    const low = opts.availableBytesLow ?? Math.max(64 << 20, Math.floor(os.totalmem() * 0.05));
    const rssFraction = opts.rssFractionHigh ?? 0.9;
    const proc = process as NodeJS.Process & { availableMemory?: () => number; constrainedMemory?: () => number | undefined };
    const timer = setInterval(() => {
      const available = typeof proc.availableMemory === 'function' ? proc.availableMemory() : os.freemem();
      let level: MemoryPressureLevel | null = available < low / 2 ? 'critical' : available < low ? 'moderate' : null;
      const limit = typeof proc.constrainedMemory === 'function' ? proc.constrainedMemory() : undefined;
      if (level === null && limit !== undefined && limit > 0 && limit < Number.MAX_SAFE_INTEGER) {
        const rss = process.memoryUsage.rss();
        if (rss > limit * rssFraction) level = rss > limit * (1 - (1 - rssFraction) / 2) ? 'critical' : 'moderate';
      }
      if (level !== null) this.memoryPressure(level);
    }, intervalMs);
    timer.unref();
    this.memoryWatch = timer;
    return () => this.memoryWatchStop();
  }

  memoryWatchStop(): void {
    if (this.memoryWatch !== null) clearInterval(this.memoryWatch);
    this.memoryWatch = null;
  }

  /* --------------------------------------------------- cannibalize lock */

  /**
   * bch2_btree_cache_cannibalize_lock: 0 if `trans` holds the lock now (taken
   * or already its own). Else ERR.btree_cache_cannibalize_lock_blocked; with
   * `wait`, the caller is also on the wait list: it drops its locks and awaits
   * cannibalizeWait(), then tries again (the seed's closure_wait; the
   * "we raced" recheck cannot happen in one thread).
   */
  cannibalizeLock(trans: LockOwner, wait = false): number {
    if (this.allocLock === null || this.allocLock === trans) {
      this.allocLock = trans;
      this.counters[C.cannibalizeLock]!++;
      return 0;
    }
    this.counters[C.cannibalizeLockFail]!++;
    if (wait && this.allocWait === null) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => {
        resolve = r;
      });
      this.allocWait = { promise, resolve };
    }
    return ERR.btree_cache_cannibalize_lock_blocked;
  }

  /** Resolves when the cannibalize lock is released (at once if it is free). */
  cannibalizeWait(): Promise<void> {
    return this.allocWait?.promise ?? resolvedPromise;
  }

  /** Take the cannibalize lock, waiting as long as needed. The caller holds no node locks. */
  async cannibalizeLockWait(trans: LockOwner): Promise<void> {
    while (this.cannibalizeLock(trans, true) !== 0) await this.cannibalizeWait();
  }

  /** bch2_btree_cache_cannibalize_unlock: release if `trans` holds it, wake the waiters. */
  cannibalizeUnlock(trans: LockOwner): void {
    if (this.allocLock !== trans) return;
    this.allocLock = null;
    const w = this.allocWait;
    this.allocWait = null;
    if (w !== null) w.resolve();
  }

  /** Who holds the cannibalize lock (tests, toText). */
  get cannibalizeLockOwner(): LockOwner | null {
    return this.allocLock;
  }

  /**
   * btree_node_cannibalize: take a live node for `owner`, intent+write
   * locked, still hashed and on `live` (the caller unhashes it). First any
   * node reclaimable as it is, from the head: the clock hand, the node
   * looked at longest ago (the seed walks from the tail, where its
   * rotation puts the nodes it just looked at); then writing dirty nodes
   * and waiting for I/O. Where the seed busy-waits forever when every node
   * is locked, this gives up after cannibalizeRoundsMax rounds (null).
   */
  private async nodeCannibalize(owner: LockOwner): Promise<Node | null> {
    for (let b = this.live.head; b !== null; b = b.next) if (this.nodeReclaim(b, owner, true) === 0) return b;
    for (let round = 0; round < cannibalizeRoundsMax; round++) {
      /* the list can change at every await: take a snapshot of candidates */
      const candidates: Node[] = [];
      const seqs: number[] = [];
      for (const b of this.live) {
        candidates.push(b);
        seqs.push(b.hashVal);
      }
      for (let i = 0; i < candidates.length; i++) {
        const b = candidates[i]!;
        if (b.list !== 'live' || b.hashVal !== seqs[i]) continue;
        if ((await this.nodeWriteAndReclaim(b, owner, seqs[i]!)) === 0) {
          if (b.list === 'live' && b.hashVal === seqs[i]) return b;
          this.reclaimUnlock(b, owner);
        }
      }
      await new Promise<void>((r) => setImmediate(r));
    }
    return null;
  }

  /* ------------------------------------------------------------ allocate */

  /**
   * The allocation steps that never wait (bch2_btree_node_mem_alloc up to its
   * err: label): a Node object (FREED list or new), then buffers from a
   * FREEABLE node, new buffers within the budget, or (reclaim) the clock
   * taking one CLEAN live node's. Returns the node intent+write locked by
   * `owner`, on no list, or null (over budget, nothing reclaimable).
   */
  private nodeMemAllocNowait(owner: LockOwner, reclaim: boolean, overBudget = false): Node | null {
    let b: Node | null = null;
    /* we never free Node objects, only their buffers: look on the FREED list first */
    for (let x = this.freed.head; x !== null; x = x.next) {
      if (this.nodeReclaim(x, owner, false) === 0) {
        this.freed.remove(x);
        b = x;
        break;
      }
    }
    if (b === null) {
      b = this.nodeObjectAlloc();
      if (this.reclaimLock(b, owner) !== 0) throw new Error('btree cache: new node lock not free');
    }

    if (this.nodeBuffersFromFreeable(b) || this.nodeBuffersNew(b, overBudget)) return this.nodeMemAllocDone(b);
    if (reclaim) {
      /* over budget: the shrinker's clock, up to two sweeps (the first may only clear accessed bits) */
      for (let pass = 0; pass < 2; pass++) {
        if (this.cacheScanInner(1, 1, this.live.count, true) !== 0 && this.nodeBuffersFromFreeable(b)) return this.nodeMemAllocDone(b);
      }
    }
    /* no memory: the object goes back to FREED */
    this.reclaimUnlock(b, owner);
    this.nodeToFreedList(b);
    return null;
  }

  /** Buffers from a reclaimable FREEABLE node, which becomes FREED. */
  private nodeBuffersFromFreeable(b: Node): boolean {
    const owner = this.owner;
    // a plain walk of the list: its generator cost more than the rest of a node read's allocation
    for (let b2 = this.freeable.head; b2 !== null; b2 = b2.next) {
      if (this.nodeReclaim(b2, owner, false) !== 0) continue;
      this.nodeBuffersTake(b, b2);
      this.nodeToFreedList(b2);
      this.reclaimUnlock(b2, owner);
      return true;
    }
    return false;
  }

  /** New buffers, if the budget allows. */
  private nodeBuffersNew(b: Node, overBudget = false): boolean {
    if ((this.used >= this.usedMax && !overBudget) || !this.nodeDataAlloc(b)) return false;
    if (this.used >= this.usedMax) this.counters[C.overBudget]!++;
    this.used++;
    return true;
  }

  /** got_mem / out: reset the node for its new life. */
  private nodeMemAllocDone(b: Node): Node {
    if (b.hashVal !== 0) throw new Error(`btree cache: allocated node slot ${b.slot} is hashed`);
    if (b.flags & (NodeFlag.dirty | NodeFlag.write_in_flight | NodeFlag.read_in_flight)) {
      throw new Error(`btree cache: allocated node slot ${b.slot} has flags ${flagsToText(b.flags)}`);
    }
    b.flags = NodeFlag.accessed;
    b.bucket = -1;
    b.readErr = null;
    b.readDone = null;
    b.writeDone = null;
    b.journalPin = null;
    b.writeBlockedCount = 0;
    /* bch2_btree_keys_init: re-attaching resets the key storage */
    b.keys.detach();
    b.keys.attachBuffers(this.bufs[b.slot]!);
    return b;
  }

  /**
   * bch2_btree_node_mem_alloc: a node for `owner` (a transaction; interior
   * updates allocate new nodes with it), intent+write locked through
   * locking.ts, on no list, buffers attached, flags = accessed. When every
   * non-waiting step fails and `owner` holds the cannibalize lock, a live node
   * is cannibalized (may await I/O). null: no memory; take the cannibalize
   * lock (cannibalizeLockWait, holding no node locks) and try again.
   */
  async nodeMemAlloc(owner: LockOwner): Promise<Node | null> {
    const b = this.nodeMemAllocNowait(owner, true);
    if (b !== null) return b;
    return this.nodeMemAllocCannibalize(owner);
  }

  /** The err: label of bch2_btree_node_mem_alloc. */
  private async nodeMemAllocCannibalize(owner: LockOwner): Promise<Node | null> {
    if (this.allocLock !== owner) {
      this.counters[C.memAllocFail]!++;
      return null;
    }
    const b = await this.nodeCannibalize(owner);
    if (b === null) {
      // Nothing can be cannibalized: every node is locked, dirty or in flight,
      // i.e. the working set of the transactions running now is larger than
      // the budget. Like bcachefs (which has no hard limit, only the
      // shrinker), the cannibalize-lock holder goes over the budget rather
      // than failing; cacheScan brings the cache back under it afterwards.
      const over = this.nodeMemAllocNowait(owner, false, true);
      if (over !== null) return over;
      this.counters[C.memAllocFail]!++;
      return null;
    }
    this.counters[C.cannibalized]!++;
    b.clear(NodeFlag.just_written);
    if (b.hashVal !== 0) this.hashRemove(b); // unhashed: an old node an interior update replaced
    this.live.remove(b);
    return this.nodeMemAllocDone(b);
  }

  /* ------------------------------------------------------------------ read */

  /**
   * Start the read of a hashed node; the promise resolves to null or the
   * error (never rejects). The expectation is copied from `ptr` first: the
   * caller may reuse its pointer object (prefetch returns at once).
   */
  private nodeReadStart(b: Node, ptr: BtreePtr): Promise<SixtreeError | null> {
    b.set(NodeFlag.read_in_flight);
    this.counters[C.reads]!++;
    const p = this.nodeRead(b, ptr);
    if (b.has(NodeFlag.read_in_flight)) b.readDone = p as Promise<unknown> as Promise<void>;
    this.readsInFlight.add(p);
    void p.then(() => this.readsInFlight.delete(p));
    this.spareRefill();
    return p;
  }

  /**
   * With the cache at its budget and no FREEABLE buffers left, reclaim one
   * clean node now, while a read is in flight, so the next miss finds
   * buffers waiting: the clock's walk (and the cold memory it touches) then
   * costs no miss its latency. Called right after a read is issued. It only
   * takes what the clock finds clean among the next spareRefillTouchMax
   * nodes (bounded work per read, whatever the cache's size): writing dirty
   * nodes, and sweeping the whole list, stay the allocation's
   * (nodeMemAllocNowait) to do when it comes to that.
   */
  private spareRefill(): void {
    if (this.freeable.count === 0 && this.used >= this.usedMax) {
      if (this.cacheScanInner(1, 1, Math.min(this.live.count, spareRefillTouchMax), true, false) !== 0) this.counters[C.spareRefills]!++;
    }
  }

  /**
   * bch2_btree_node_read for the cache: one aligned read of the whole bucket,
   * then nodeReadValidate against the pointer. On failure: read_error, the
   * error kept in readErr, hash entry removed, FREEABLE. Then read_in_flight
   * is cleared and readDone resolves (waking the waiters). The read is
   * issued before anything else is done (the pointer's expectation is
   * copied while it is in flight: the caller may reuse `ptr` once this
   * returns).
   */
  private async nodeRead(b: Node, ptr: BtreePtr): Promise<SixtreeError | null> {
    const data = this.bufs[b.slot]!.data;
    let offset = -1;
    let err: SixtreeError | null = null;
    let io: Promise<void> | null = null;
    try {
      offset = this.bucketOffset(b.bucket);
      io = this.device.read(data, offset);
    } catch (e) {
      err = this.nodeReadIoError(b, e, offset);
    }
    const expect: NodeReadExpect = { btreeId: ptr.btreeId, level: ptr.level, minKey: ptr.minKey.slice(0, BPOS_WORDS), maxKey: ptr.maxKey.slice(0, BPOS_WORDS), seq: ptr.seq, sectorsWritten: ptr.sectorsWritten ?? 0 };
    if (io !== null) {
      try {
        await io;
      } catch (e) {
        err = this.nodeReadIoError(b, e, offset);
      }
    }
    if (err === null) {
      const t0 = performance.now();
      const r = nodeReadValidate(b.keys, expect, { isSeqBlacklisted: this.isSeqBlacklisted, maxJournalSeq: this.maxJournalSeq?.(), tornFloor: this.tornFloor?.() });
      this.readValidateMs += performance.now() - t0;
      if (!r.ok) err = this.nodeReadError(b, r.code, r.message, offset);
      else {
        if (r.torn) this.counters[C.tornBsets]!++;
        if (r.blacklistedSeqs !== null) this.onBlacklistedBsets?.(b, r.blacklistedSeqs);
      }
    }
    if (err !== null) {
      this.counters[C.readErrors]!++;
      b.set(NodeFlag.read_error);
      b.readErr = err;
      if (b.hashVal !== 0) this.hashRemove(b);
      if (b.list === 'live') listMoveHead(b, this.freeable, this);
    }
    b.clear(NodeFlag.read_in_flight);
    b.readDone = null;
    return err;
  }

  private nodeReadIoError(b: Node, e: unknown, offset: number): SixtreeError {
    const err = this.nodeReadError(b, 'ERR_IO', `read failed: ${e instanceof Error ? e.message : String(e)}`, offset, e);
    const errno = (e as { code?: unknown; details?: { errno?: unknown } }).details?.errno ?? (e as { code?: unknown }).code;
    if (typeof errno === 'string') err.details.errno = errno;
    return err;
  }

  private nodeReadError(b: Node, code: 'ERR_IO' | 'ERR_CHECKSUM' | 'ERR_TOPOLOGY', message: string, offset: number, cause?: unknown): SixtreeError {
    const btree = this.btreeName(b.btreeId);
    return new SixtreeError(
      code,
      `btree node read error: ${btree} level ${b.level} bucket ${b.bucket} offset ${offset}: ${message}`,
      { btree, level: b.level, bucket: b.bucket, offset, length: this.nodeSizeBytes },
      cause === undefined ? undefined : { cause },
    );
  }

  private topologyError(btreeId: number, level: number, bucket: number, message: string): SixtreeError {
    const btree = this.btreeName(btreeId);
    return new SixtreeError('ERR_TOPOLOGY', `btree topology error: ${btree} level ${level} bucket ${bucket}: ${message}`, { btree, level, bucket });
  }

  /** The seed's argument checks of bch2_btree_node_fill: a bad pointer is a topology error. */
  private ptrCheck(ptr: BtreePtr, level: number): void {
    if (level >= BTREE_MAX_DEPTH || level < 0) {
      throw this.topologyError(ptr.btreeId, level, ptr.bucket, `attempting to get btree node at level ${level}, >= max depth ${BTREE_MAX_DEPTH}`);
    }
    if (ptr.level !== level) throw this.topologyError(ptr.btreeId, level, ptr.bucket, `pointer to a level ${ptr.level} node used at level ${level}`);
    if (ptr.btreeId < 0 || ptr.btreeId >= this.nrBtrees) throw this.topologyError(ptr.btreeId, level, ptr.bucket, `pointer to unknown btree id ${ptr.btreeId}`);
    if (ptr.seq <= 0 || !Number.isSafeInteger(ptr.seq)) throw this.topologyError(ptr.btreeId, level, ptr.bucket, `pointer with bad node seq ${ptr.seq}`);
  }

  /**
   * bch2_btree_node_fill: read the node `ptr` points to into the cache.
   * With a transaction: returns the node locked `lockType` by it; null when
   * the caller must look it up again (lost the hash race, or the relock by
   * seq after the read failed); a restart code (fill_mem_alloc_fail: no
   * memory; take the cannibalize lock and retry). The transaction's locks are
   * dropped for the read; the caller relocks them (nodeGet does). Without
   * one (trans null; `owner` takes the locks, held through the read):
   * returns the node locked, null, or fill_mem_alloc_fail. Read errors throw
   * (see the notes), once the transaction relocked with the parent held; a
   * parent not held (trans.parentHeld) before or after the read returns
   * btree_node_fill_parent_lost (fillParentLost): its pointer may be stale.
   */
  async nodeFill(trans: CacheTrans | null, ptr: BtreePtr, level: number, lockType: LockType, owner: LockOwner = trans ?? this.owner): Promise<Node | null | number> {
    this.ptrCheck(ptr, level);

    /* the parent must be locked, else we could read in a node that has been freed */
    if (trans !== null) {
      if (trans.relock() !== 0) return countRestart(ERR.transaction_restart_relock_parent_for_fill);
      if (!trans.parentHeld()) return this.fillParentLost();
    }

    let b = this.nodeMemAllocNowait(owner, true);
    if (b === null) {
      b = await this.nodeMemAllocCannibalize(owner);
      if (b === null) return trans !== null ? countRestart(ERR.transaction_restart_fill_mem_alloc_fail) : ERR.transaction_restart_fill_mem_alloc_fail;
    }

    b.btreeId = ptr.btreeId;
    b.level = level;
    b.bucket = ptr.bucket;
    if (!this.hashInsert(b, ptr.seq)) {
      /* raced with another fill: keep the buffers FREEABLE, look the node up again */
      this.counters[C.fillRaces]!++;
      this.freeable.addHead(b);
      this.reclaimUnlock(b, owner);
      return null;
    }

    const read = this.nodeReadStart(b, ptr);
    nodeUnlock(owner, b.lock, WRITE);

    if (trans !== null) {
      const seq = b.lock.seq;
      /* unlock before doing I/O */
      nodeUnlock(owner, b.lock, INTENT);
      if (!trans.keepLocksForIo) trans.unlock();
      const err = await read;
      if (err !== null) {
        // relock before believing the error (the seed relocks after a fill
        // first): the pointer may have gone stale while the locks were off,
        // its bucket reused; then the walk reads the pointer again, and a
        // node that is really bad fails again with its parent held
        const ret = trans.relock();
        if (ret !== 0) return ret;
        if (!trans.parentHeld()) return this.fillParentLost();
        throw err;
      }
      if (!nodeRelock(trans, b.lock, lockType as SixLockType, seq)) return null;
      return b;
    }

    const err = await read;
    if (err !== null) {
      nodeUnlock(owner, b.lock, INTENT);
      throw err;
    }
    if (lockType === LOCK_READ) nodeDowngrade(owner, b.lock);
    return b;
  }

  /**
   * The parent a traversal took its pointer from was unlocked and changed
   * (trans.parentHeld): the pointer may name a node replaced since, whose
   * bucket may already hold another node. Read nothing through it; the
   * traversal walks from what still holds and reads the pointer again.
   */
  private fillParentLost(): number {
    this.counters[C.fillParentLost]!++;
    return ERR.btree_node_fill_parent_lost;
  }

  /* ------------------------------------------------------------------- get */

  /** btree_bad_header. */
  private badHeader(b: Node, ptr: BtreePtr): SixtreeError {
    const k = b.keys;
    return this.topologyError(
      ptr.btreeId,
      ptr.level,
      ptr.bucket,
      `btree node header doesn't match ptr: ptr ${this.btreeName(ptr.btreeId)} level ${ptr.level} ${wordsToText(ptr.minKey)} - ${wordsToText(ptr.maxKey)} seq ${ptr.seq}; ` +
        `header ${this.btreeName(k.btreeId)} level ${k.level} ${wordsToText(k.minKey)} - ${wordsToText(k.maxKey)}`,
    );
  }

  /**
   * The hit path without waiting: the node through `slot` (the parent key's
   * in-memory pointer) or the hash, trylocked for `trans`; null when it needs
   * nodeGet (not cached, lock busy, read in flight, header mismatch). All in
   * one synchronous step, so no recheck is needed. Lets a traversal skip the
   * await on a hit.
   */
  nodeGetNowait(trans: LockOwner, ptr: BtreePtr, level: number, lockType: LockType, slot = -1): Node | null {
    const hint = slot >= 0 ? slot : this.slotHint[(ptr.seq >>> 0) & (slotHintSize - 1)]!;
    let b: Node | undefined = hint >= 0 ? this.nodes[hint] : undefined;
    let fast = true;
    if (b === undefined || b.hashVal !== ptr.seq) {
      b = this.table.get(ptr.seq);
      fast = false;
      if (b === undefined) return null;
    }
    if (b.level !== level || b.has(NodeFlag.read_in_flight) || !this.headerMatches(b, ptr)) return null;
    if (!nodeTryLock(trans, b.lock, lockType as SixLockType)) return null;
    b.set(NodeFlag.accessed);
    this.counters[C.hits]!++;
    if (fast) this.counters[C.hitsFast]!++;
    return b;
  }

  /**
   * btree_check_header: the node's header must agree with the pointer. On a
   * mismatch callers drop their lock and throw badHeader (ERR_TOPOLOGY: the
   * seed reports a topology error; the node is not used).
   */
  private headerMatches(b: Node, ptr: BtreePtr): boolean {
    const k = b.keys;
    return k.btreeId === ptr.btreeId && k.level === ptr.level && wordsCmp(k.maxKey, 0, ptr.maxKey, 0) === 0 && wordsCmp(k.minKey, 0, ptr.minKey, 0) === 0;
  }

  /**
   * bch2_btree_node_get: find the node `ptr` points to and lock it
   * `lockType` for `trans`, reading it if needed. `slot`: the node slot the
   * parent's in-memory pointer key keeps (btree_node_mem_ptr), -1 if none;
   * always rechecked against hashVal and level after locking. Returns the
   * node, or a restart code. Throws SixtreeError on a read or header error.
   */
  async nodeGet(trans: CacheTrans, ptr: BtreePtr, level: number, lockType: LockType, slot = -1): Promise<Node | number> {
    const hint = slot >= 0 ? slot : this.slotHint[(ptr.seq >>> 0) & (slotHintSize - 1)]!;
    let b: Node | undefined = hint >= 0 ? this.nodes[hint] : undefined;
    let fast = true;
    /* check hashVal before locking: this might not be our node any more, and locking it could cost a restart */
    if (b === undefined || b.hashVal !== ptr.seq) {
      /* the hit half of __bch2_btree_node_get, inline: one await on a hit either way */
      b = this.table.get(ptr.seq);
      if (b === undefined) return this.nodeGetSlowpath(trans, ptr, level, lockType);
      fast = false;
    }

    const ret = await trans.lockNode(b, lockType);
    if (ret !== 0) return ret;

    if (b.hashVal !== ptr.seq || b.level !== level) {
      trans.unlockNode(b, lockType);
      this.counters[C.nodeReused]!++;
      if (trans.relock() === 0) return this.nodeGetSlowpath(trans, ptr, level, lockType);
      return countRestart(ERR.transaction_restart_lock_node_reused);
    }
    if (b.has(NodeFlag.read_in_flight)) {
      trans.unlockNode(b, lockType);
      return this.nodeGetSlowpath(trans, ptr, level, lockType);
    }
    if (!b.has(NodeFlag.accessed)) b.set(NodeFlag.accessed);
    this.counters[C.hits]!++;
    if (fast) this.counters[C.hitsFast]!++;
    if (b.has(NodeFlag.read_error)) {
      trans.unlockNode(b, lockType);
      throw b.readErr ?? this.nodeReadError(b, 'ERR_IO', 'node read error', -1);
    }
    if (!this.headerMatches(b, ptr)) {
      trans.unlockNode(b, lockType);
      throw this.badHeader(b, ptr);
    }
    return b;
  }

  /** __bch2_btree_node_get: the lookup through the hash table. */
  private async nodeGetSlowpath(trans: CacheTrans, ptr: BtreePtr, level: number, lockType: LockType): Promise<Node | number> {
    this.ptrCheck(ptr, level);
    let needRelock = false;
    for (let retry = 0; retry < nodeGetRetriesMax; retry++) {
      let b = this.table.get(ptr.seq);
      if (b === undefined) {
        /* the parent is locked by the caller (nodeFill rechecks), else we could read a freed node */
        this.counters[C.misses]!++;
        const r = await this.nodeFill(trans, ptr, level, lockType);
        needRelock = true;
        /* we raced and found the node in the cache, or lost it again */
        if (r === null) continue;
        if (typeof r === 'number') return r;
        b = r;
      } else {
        const ret = await trans.lockNode(b, lockType);
        if (ret !== 0) return ret;
        if (b.hashVal !== ptr.seq || b.level !== level) {
          trans.unlockNode(b, lockType);
          this.counters[C.nodeReused]!++;
          if (trans.relock() === 0) continue;
          return countRestart(ERR.transaction_restart_lock_node_reused);
        }
        this.counters[C.hits]!++;
        if (!b.has(NodeFlag.accessed)) b.set(NodeFlag.accessed);
      }

      if (b.has(NodeFlag.read_in_flight)) {
        const seq = b.lock.seq;
        const done = b.readDone;
        trans.unlockNode(b, lockType);
        if (!trans.keepLocksForIo) trans.unlock();
        needRelock = true;
        await (done ?? waitOnRead(b));
        /* not on a path yet: relock it specifically */
        if (!nodeRelock(trans, b.lock, lockType as SixLockType, seq)) continue;
      }

      if (needRelock && trans.relock() !== 0) {
        /* not counted here: trans.relock() counted the restart that made it fail */
        trans.unlockNode(b, lockType);
        return ERR.transaction_restart_relock_after_fill;
      }
      /* our pointer may be stale now: an error read through it (by whoever read it) proves nothing */
      if (needRelock && !trans.parentHeld()) {
        trans.unlockNode(b, lockType);
        return this.fillParentLost();
      }

      if (b.has(NodeFlag.read_error)) {
        trans.unlockNode(b, lockType);
        throw b.readErr ?? this.nodeReadError(b, 'ERR_IO', 'node read error', -1);
      }
      if (!this.headerMatches(b, ptr)) {
        trans.unlockNode(b, lockType);
        throw this.badHeader(b, ptr);
      }
      return b;
    }
    return countRestart(ERR.transaction_restart_lock_node_reused);
  }

  /**
   * bch2_btree_node_get_noiter: lookup without a transaction (open,
   * recovery, fsck). The node comes back read locked by `owner`; null only
   * with nofill when it is not cached; ERR.transaction_restart_fill_mem_alloc_fail
   * when there is no memory and another transaction holds the cannibalize
   * lock. Waits on a read in flight with `owner`'s locks held (as the seed).
   * Releases the cannibalize lock if `owner` holds it, always.
   */
  async nodeGetNoiter(owner: LockOwner, ptr: BtreePtr, level: number, opts: { nofill?: boolean; slot?: number } = {}): Promise<Node | null | number> {
    try {
      return await this.nodeGetNoiterInner(owner, ptr, level, opts);
    } finally {
      this.cannibalizeUnlock(owner);
    }
  }

  private async nodeGetNoiterInner(owner: LockOwner, ptr: BtreePtr, level: number, opts: { nofill?: boolean; slot?: number }): Promise<Node | null | number> {
    this.ptrCheck(ptr, level);
    const slot = opts.slot ?? -1;
    let b: Node | undefined = slot >= 0 ? this.nodes[slot] : undefined;
    if (b !== undefined && b.hashVal !== ptr.seq) b = undefined;
    for (let retry = 0; retry < nodeGetRetriesMax; retry++) {
      if (b === undefined) b = this.table.get(ptr.seq);
      if (b === undefined) {
        if (opts.nofill) return null;
        this.counters[C.misses]!++;
        const r = await this.nodeFill(null, ptr, level, LOCK_READ, owner);
        if (r === null) continue;
        if (typeof r === 'number') {
          if (this.cannibalizeLock(owner) === 0) continue;
          return r;
        }
        b = r;
      } else {
        const ret = await nodeLock(owner, b.lock, READ);
        if (ret !== 0) return ret;
        if (b.hashVal !== ptr.seq || b.btreeId !== ptr.btreeId || b.level !== level) {
          nodeUnlock(owner, b.lock, READ);
          this.counters[C.nodeReused]!++;
          b = undefined;
          continue;
        }
        this.counters[C.hits]!++;
      }

      /* XXX (as the seed): waiting on I/O with btree locks held */
      await waitOnRead(b);
      if (!b.has(NodeFlag.accessed)) b.set(NodeFlag.accessed);
      if (b.has(NodeFlag.read_error)) {
        nodeUnlock(owner, b.lock, READ);
        throw b.readErr ?? this.nodeReadError(b, 'ERR_IO', 'node read error', -1);
      }
      if (!this.headerMatches(b, ptr)) {
        nodeUnlock(owner, b.lock, READ);
        throw this.badHeader(b, ptr);
      }
      return b;
    }
    return ERR.transaction_restart_lock_node_reused;
  }

  /**
   * bch2_btree_node_prefetch: start reading `ptr`'s node if it is not cached,
   * and return at once (0). Never waits, never drops the caller's locks
   * (nothing runs before the caller's next await), never cannibalizes: when
   * prefetchInFlightMax reads are in flight or no memory is to be had
   * without cannibalizing, it does nothing. A failed read-ahead leaves no
   * trace but the counter: the next lookup reads the node again and reports.
   */
  nodePrefetch(_trans: CacheTrans | null, ptr: BtreePtr, level: number): number {
    if (level >= BTREE_MAX_DEPTH || ptr.level !== level || ptr.seq <= 0) return 0;
    if (this.table.has(ptr.seq)) return 0;
    if (this.prefetchInFlight >= this.prefetchInFlightMax) {
      this.counters[C.prefetchSkipped]!++;
      return 0;
    }
    const owner = this.owner;
    const b = this.nodeMemAllocNowait(owner, true);
    if (b === null) {
      this.counters[C.prefetchSkipped]!++;
      return 0;
    }
    b.btreeId = ptr.btreeId;
    b.level = level;
    b.bucket = ptr.bucket;
    if (!this.hashInsert(b, ptr.seq)) throw new Error('btree cache: prefetch lost a hash race it cannot lose');
    /* a read-ahead has not been used yet: no accessed bit, the clock may take it first */
    b.clear(NodeFlag.accessed);
    this.counters[C.prefetches]!++;
    this.prefetchInFlight++;
    const read = this.nodeReadStart(b, ptr);
    this.reclaimUnlock(b, owner);
    // a failed read-ahead only leaves the node out of the cache (read_error): whoever
    // needs it reads it again and gets the error then
    void read.then(
      () => {
        this.prefetchInFlight--;
      },
      () => {
        this.prefetchInFlight--;
      },
    );
    return 0;
  }

  /**
   * A demand read without a transaction (store.get's fast path, iter.ts
   * LookupNowait): like nodePrefetch, but the node counts as used (accessed
   * bit) and the read is returned to wait on; a read already in flight is
   * returned as is. The caller holds the parent's lock, so the pointer is
   * current when the read starts. null: cached already, too many such reads
   * held (see below), or no memory without cannibalizing (the caller takes
   * the transaction path, which can). Never waits, never throws for the
   * node: a failed read leaves it out of the cache (read_error), and the
   * transaction path reads it again and reports.
   *
   * pin: the caller will walk to the node once the read is done (store.get).
   * Nothing locks it between the read and that walk, so the node is pinned
   * (readPins: reclaim refuses it while hashed) until the caller hands the
   * result to readNowaitRelease, which it must do exactly once. Without the
   * pin, reads finishing together evict each other's nodes before their
   * walks reach them and read them again. Pinned reads, in flight or done
   * and not yet released, are held to what the cache has beyond its
   * reserve; past that the caller takes the transaction path.
   */
  nodeReadNowait(ptr: BtreePtr, level: number, pin = false): ReadNowait | null {
    if (level >= BTREE_MAX_DEPTH || ptr.level !== level || ptr.seq <= 0) return null;
    const cached = this.table.get(ptr.seq);
    if (cached !== undefined) {
      if (!cached.has(NodeFlag.read_in_flight) || !cached.readDone) return null;
      if (pin) cached.readPins++;
      /* its reader reports a failure; this caller only waits for it */
      return { node: cached, done: cached.readDone.then(noop, noop), pinned: pin, held: false };
    }
    if (this.readsNowaitHeld >= Math.min(readsNowaitHeldMax, Math.max(1, this.usedMax - this.reserve))) return null;
    const owner = this.owner;
    const b = this.nodeMemAllocNowait(owner, true);
    if (b === null) return null;
    b.btreeId = ptr.btreeId;
    b.level = level;
    b.bucket = ptr.bucket;
    if (!this.hashInsert(b, ptr.seq)) throw new Error('btree cache: demand read lost a hash race it cannot lose');
    this.counters[C.misses]!++;
    this.counters[C.readsNowait]!++;
    this.readsNowaitHeld++;
    if (pin) b.readPins++;
    const read = this.nodeReadStart(b, ptr);
    this.reclaimUnlock(b, owner);
    const r: ReadNowait = { node: b, done: read, pinned: pin, held: true };
    /* unpinned: held only while in flight; pinned: until readNowaitRelease */
    const settled = (): void => {
      if (!r.pinned && r.held) {
        r.held = false;
        this.readsNowaitHeld--;
      }
    };
    r.done = read.then(settled, settled);
    return r;
  }

  /** The caller of nodeReadNowait(pin) has walked to the node (or given up): unpin it. */
  readNowaitRelease(r: ReadNowait): void {
    if (!r.pinned) return;
    r.pinned = false;
    r.node.readPins--;
    if (r.held) {
      r.held = false;
      this.readsNowaitHeld--;
    }
  }

  /**
   * bch2_btree_node_evict: drop `ptr`'s node from the cache, writing it first
   * if dirty. Locks with `trans` when given (deadlock detection sees it),
   * else with the cache's own owner. Returns 0 (evicted or not cached) or a
   * restart code from locking, or btree_node_reclaim_refused (noevict,
   * pinned by an update, or still dirty after the write rounds).
   */
  async nodeEvict(trans: CacheTrans | null, ptr: BtreePtr): Promise<number> {
    const owner: LockOwner = trans ?? this.owner;
    const b = this.table.get(ptr.seq);
    if (b === undefined) return 0;
    if (b.has(NodeFlag.noevict)) return this.refuse(NF.noevict, true);
    for (let round = 0; round < reclaimFlushRoundsMax; round++) {
      /* not allowed to wait on I/O with btree locks held */
      await waitOnRead(b);
      await waitOnWrite(b);
      let ret = await nodeLock(owner, b.lock, INTENT);
      if (ret !== 0) return ret;
      ret = await nodeLockWrite(owner, b.lock);
      if (ret !== 0) {
        nodeUnlock(owner, b.lock, INTENT);
        return ret;
      }
      if (b.hashVal !== ptr.seq) {
        this.reclaimUnlock(b, owner);
        return 0;
      }
      if (b.flags & (NodeFlag.read_in_flight | NodeFlag.write_in_flight)) {
        this.reclaimUnlock(b, owner);
        continue;
      }
      if (b.has(NodeFlag.dirty)) {
        this.counters[C.reclaimWrites]!++;
        const w = this.nodeWriteStart(b);
        this.reclaimUnlock(b, owner);
        await w;
        continue;
      }
      const blocked = this.reclaimBlockedBy(b);
      if (blocked >= 0) {
        this.reclaimUnlock(b, owner);
        return this.refuse(blocked, true);
      }
      this.counters[C.evictions]!++;
      if (b.hashVal !== 0) this.hashRemove(b); // unhashed: an old node an interior update replaced
      this.nodeDataFree(b);
      this.reclaimUnlock(b, owner);
      return 0;
    }
    return this.refuse(NF.dirty, true);
  }

  /* ------------------------------------------------------------------ exit */

  /**
   * bch2_fs_btree_cache_exit: wait for reads and writes in flight (a buffer
   * under I/O is never freed), free every buffer, drop every node. Asserts
   * (throws, after freeing) that nothing was dirty or being written unless
   * `journalFailed` (the journal or device failed, so dirty nodes are lost
   * anyway), and that every buffer was freed exactly once.
   */
  async cacheExit(opts: { journalFailed?: boolean } = {}): Promise<void> {
    if (this.exited) return;
    this.memoryWatchStop();
    /* what the seed BUG_ONs, unless the journal failed */
    const ioProblems: string[] = [];

    await Promise.all([...this.readsInFlight]);
    for (const b of this.nodes) {
      if (!b.has(NodeFlag.write_in_flight)) continue;
      ioProblems.push(`node slot ${b.slot} (${this.btreeName(b.btreeId)} level ${b.level} bucket ${b.bucket}) had a write in flight`);
      await waitOnWrite(b);
    }
    this.exited = true;
    if (this.dirty !== 0) ioProblems.push(`${this.dirty} dirty nodes`);

    for (const b of this.nodes) {
      if (b.hashVal !== 0) this.hashRemove(b);
      this.clearDirty(b);
      b.clear(NodeFlag.write_in_flight);
      if (this.bufs[b.slot]) this.nodeDataFree(b);
    }
    this.table.clear();

    const problems = opts.journalFailed ? [] : ioProblems;
    const alloc = this.counters[C.buffersAllocated]!;
    const freed = this.counters[C.buffersFreed]!;
    if (this.used !== 0 || alloc !== freed) problems.push(`buffers allocated ${alloc}, freed ${freed}, nodes still holding buffers ${this.used}`);
    if (problems.length !== 0) throw new Error(`btree cache exit: ${problems.join('; ')}`);
  }

  /* ----------------------------------------------------------- printing */

  /** bch2_btree_pos_to_text. */
  posToText(b: Node): string {
    const root = this.rootLevels[b.btreeId];
    return `${this.btreeName(b.btreeId)} level ${b.level}/${root === undefined || root < 0 ? '?' : root}\n  bucket ${b.bucket} seq ${b.hashVal}`;
  }

  /**
   * bch2_btree_node_to_text: level, key range, pointer, flags, then the key
   * storage's fields (format, bytes written and used, packed / unpacked
   * counts), and the merge estimates (sibU64s: previous, next; set by merge checks).
   */
  nodeToText(b: Node, out: Printbuf = new Printbuf()): string {
    const k = b.keys;
    const hasData = this.bufs[b.slot] !== null;
    out.line(`l ${b.level} ${hasData ? `${wordsToText(k.minKey)} - ${wordsToText(k.maxKey)}` : '(no buffers)'}:`);
    out.nested((o) => {
      o.field('ptr', `${this.btreeName(b.btreeId)} bucket ${b.bucket} seq ${b.hashVal.toString(16)} (slot ${b.slot}, list ${b.list})`);
      o.field('flags', flagsToText(b.flags));
      if (!hasData) return;
      o.field('bytes used', `${k.liveU64s * 8}/${this.nodeSizeBytes} (${Math.floor((k.liveU64s * 800) / this.nodeSizeBytes)}% full)`);
      o.field('sib u64s', [...b.sibU64s].map((v) => (v === SIB_U64S_NONE ? 'none' : String(v))).join(', '));
      o.field('nr packed keys', k.packedKeys);
      o.field('nr unpacked keys', k.unpackedKeys);
      k.toTextFields(o);
    });
    return out.toString();
  }

  /** bch2_btree_cache_to_text. */
  toText(): string {
    const out = new Printbuf();
    out.line('btree cache');
    out.nested((o) => {
      o.field('nr nodes', this.used);
      o.field('nr dirty', this.dirty);
      o.field('reserve', this.reserve);
      o.field('live / freeable / freed', `${this.live.count} / ${this.freeable.count} / ${this.freed.count}`);
      o.field('memory', `${bytesToText(this.used * this.nodeBytes)} of ${bytesToText(this.budgetBytes)} (node ${bytesToText(this.nodeSizeBytes)} + aux ${bytesToText(this.auxBytes)})`);
      o.field('cannibalize lock', this.allocLock === null ? 'free' : `owner#${this.allocLock.ownerId}`);
      o.field('reads in flight', this.readsInFlight.size);
      if (this.counters[C.reads] !== 0) o.field('read validation', `${Math.round(this.readValidateUs / this.counters[C.reads]!)} us per read`);
      CACHE_COUNTERS.forEach(([name], i) => {
        if (this.counters[i] !== 0) o.field(name, this.counters[i]);
      });
      const nf = NOT_FREED_REASONS.filter((_, i) => this.notFreed[i] !== 0).map(([name]) => `${name} ${this.notFreed[NF[name]]}`);
      o.field('not freed', nf.length === 0 ? 'none' : nf.join(', '));
    });
    return out.toString();
  }

  /* ---------------------------------------------------------------- stats */

  stats(): CacheStats {
    const counters = {} as Record<CacheCounterName, number>;
    CACHE_COUNTERS.forEach(([name], i) => {
      counters[name] = this.counters[i]!;
    });
    const notFreed = {} as Record<NotFreedReason, number>;
    NOT_FREED_REASONS.forEach(([name], i) => {
      notFreed[name] = this.notFreed[i]!;
    });
    return {
      nodes: this.used,
      dirty: this.dirty,
      bytes: this.used * this.nodeBytes,
      budgetBytes: this.budgetBytes,
      reserve: this.reserve,
      freeable: this.freeable.count,
      freed: this.freed.count,
      hits: counters.hits,
      misses: counters.misses,
      evictions: counters.evictions,
      cannibalized: counters.cannibalized,
      reads: counters.reads,
      readErrors: counters.readErrors,
      prefetches: counters.prefetches,
      readValidateUs: Math.round(this.readValidateUs),
      notFreed,
      counters,
    };
  }
}

/* ---------------------------------------------------------------------------
 * Helpers.
 */

/** list_move(&b->list, list): off whatever list b is on, onto the head of `to`. */
function listMoveHead(b: Node, to: NodeList, cache: BtreeCache): void {
  if (b.list !== 'none') {
    const from = b.list === 'live' ? cache.live : b.list === 'freeable' ? cache.freeable : cache.freed;
    from.remove(b);
  }
  to.addHead(b);
}

/** bch2_btree_node_wait_on_read. */
async function waitOnRead(b: Node): Promise<void> {
  while (b.has(NodeFlag.read_in_flight) && b.readDone !== null) await b.readDone;
}

/** bch2_btree_node_wait_on_write. */
async function waitOnWrite(b: Node): Promise<void> {
  while (b.has(NodeFlag.write_in_flight) && b.writeDone !== null) await b.writeDone;
}

/** bbpos_cmp(a, (btreeId, pos)). */
function bbposCmp(a: Bbpos, btreeId: number, pos: Uint32Array): number {
  if (a.btreeId !== btreeId) return a.btreeId < btreeId ? -1 : 1;
  return wordsCmp(a.pos, 0, pos, 0);
}
