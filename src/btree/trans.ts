// SPDX-License-Identifier: GPL-2.0-only
/*
 * Transactions (bcachefs struct btree_trans).
 *
 * A BtreeTrans is one run of a user's transact() callback: it owns paths
 * (path.ts), the pending updates (one Overlay per btree it writes), the
 * iterators it opened, and the node locks it holds (it is the LockOwner).
 * On a restart everything is dropped and the callback runs again with a new
 * BtreeTrans that keeps the old startSeq (so it ages and wins deadlocks).
 *
 * Lock discipline (DESIGN.md):
 *  - read locks on the nodes keys were read from are held until the end, so
 *    what the transaction read cannot change under it (serializable);
 *  - before any I/O the transaction unlocks everything (unlock()), keeping
 *    lock sequence numbers, and relocks after (relock()); a path that already
 *    returned a key (shouldBeLocked) and cannot be relocked means restart;
 *  - no await between a lock or seq check and the use that depends on it.
 *
 * Traversal tries traverseNowait() first: with every node on the way cached
 * and its lock free, the path is walked from the root in one synchronous step
 * (no promise, no await); otherwise the awaiting traversal takes over.
 *
 * Restarts travel as internal codes; when one has to leave through user
 * code, it is thrown as TransactionRestart and caught by transact()'s loop.
 */

import { ERR, RESTART, SixtreeError, TransactionRestart, errMatches, errName } from '../errors.js';
import { Printbuf } from '../util/printbuf.js';
import { SixLockType, type SixLock, type SixLockWaiter } from '../util/six.js';
import { LocksHeld, countRestart, nodeLock, nodeRelock, nodeTryLock, nodeTryUpgrade, nodeUnlock, nodeUnlockAll, type LockOwner, type LockWaitWatch } from './locking.js';
import { BPOS_WORDS, wordsCmp, wordsCopy } from './bpos.js';
import type { Node } from './node.js';
import { BtreeOverlay } from './overlay.js';
import {
  BTREE_MAX_DEPTH,
  BtreePath,
  NEED_RELOCK,
  NEED_TRAVERSE,
  PATHS_PER_TRANS_MAX,
  UNLOCKED,
  UPTODATE,
  pathChildPtr,
  pathLeafInit,
  posInNode,
} from './path.js';
import { LOCK_INTENT, LOCK_READ, type BtreePtr, type CacheTrans, type LockType } from './types.js';
import type { Engine } from '../engine.js';
import type { TxCtx } from './interior.js';
import type { ShapeKeeper } from '../util/shapes.js';

let ownerIdNext = 1;
let startSeqNext = 1;

export function transStartSeqNew(): number {
  return startSeqNext++;
}

const traverseOkPromise: Promise<number> = Promise.resolve(0);

/** How many traverse retries (parent changed during a fill) before restarting the transaction. */
const TRAVERSE_RETRIES_MAX = 64;

/**
 * Attempts after which a transaction keeps its locks across node reads
 * (CacheTrans.keepLocksForIo): restarts because the nodes it had were evicted
 * or changed while it read others.
 */
export const KEEP_LOCKS_AFTER_RESTARTS = 4;

export class BtreeTrans implements LockOwner, CacheTrans {
  readonly ownerId = ownerIdNext++;
  waitingOn: SixLockWaiter | null = null;
  restartPending = 0;
  readonly locksHeld = new LocksHeld();

  readonly paths: BtreePath[] = [];
  /** Pending updates per btree id (null: none yet). */
  readonly overlays: (BtreeOverlay | null)[];
  /** The transact() call this attempt belongs to (shared by its attempts): interior update groups. */
  txCtx!: TxCtx;
  /** Set when the callback returned or threw: further use is ERR_TX_DONE. */
  done = false;
  /** Store's check of lock waits that last (a write made from inside a transact() callback of the same store). */
  waitWatch: LockWaitWatch | null = null;
  /** Set by that check: the transaction fails with this instead of restarting. */
  nestedError: Error | null = null;
  /** See LockOwner.watchEpoch, watchIndex. */
  watchEpoch = 0;
  watchIndex = -1;
  /** The path being traversed (its relock failure during a fill retries the traversal, not the transaction). */
  private traversing: BtreePath | null = null;
  /** The level of `traversing` whose pointer the traversal follows (parentHeld). */
  private traversingParent = 0;
  private readonly ptrScratch: BtreePtr = {
    btreeId: 0,
    level: 0,
    bucket: 0,
    seq: 0,
    minKey: new Uint32Array(BPOS_WORDS),
    maxKey: new Uint32Array(BPOS_WORDS),
    sectorsWritten: 0,
  };

  /** See CacheTrans.keepLocksForIo: from the KEEP_LOCKS_AFTER_RESTARTS-th attempt on, or set by a commit that keeps losing its paths. */
  keepLocksForIo: boolean;

  constructor(
    readonly engine: Engine,
    readonly startSeq: number,
    readonly restartCount: number,
  ) {
    this.overlays = engine.btrees.map(() => null);
    this.keepLocksForIo = restartCount >= KEEP_LOCKS_AFTER_RESTARTS;
  }

  /* ---------------------------------------------------------------- locks */

  /** See LockOwner.runsAlone: this transaction holds the starvation gate. */
  runsAlone(): boolean {
    return this.engine.starvationGateHeldBy(this.startSeq);
  }

  lockNode(node: Node, type: LockType): Promise<number> {
    return nodeLock(this, node.lock, type as SixLockType);
  }

  unlockNode(node: Node, type: LockType): void {
    nodeUnlock(this, node.lock, type as SixLockType);
  }

  /**
   * Drop every node lock, keeping sequence numbers to relock
   * (bch2_trans_unlock). keep: locks held on that are on no path (new nodes
   * nobody else can reach: dropped, a waiter still holding the recycled node
   * from its earlier life could take them in between).
   */
  unlock(keep?: ReadonlySet<SixLock>): void {
    for (const path of this.paths) {
      let had = false;
      for (let l = 0; l < BTREE_MAX_DEPTH; l++) {
        const lv = path.l[l]!;
        if (lv.held !== UNLOCKED) {
          lv.relockType = lv.held;
          lv.held = UNLOCKED;
          had = true;
        }
      }
      if (had && path.uptodate === UPTODATE) path.uptodate = NEED_RELOCK;
    }
    nodeUnlockAll(this, keep);
  }

  /**
   * Relock every path by sequence number (bch2_trans_relock). A path whose
   * node changed goes to NEED_TRAVERSE; if it had returned a key
   * (shouldBeLocked), the transaction must restart: the code is returned.
   */
  relock(): number {
    if (this.restartPending) return this.restartPending;
    for (const path of this.paths) {
      // a path that returned a key and lost its node (replaced, upgrade
      // failed): what it read may have changed since
      if (path.shouldBeLocked && path.uptodate === NEED_TRAVERSE && path.l[path.level]!.held === UNLOCKED && path !== this.traversing) {
        return countRestart(ERR.transaction_restart_relock_path);
      }
      if (path.uptodate !== NEED_RELOCK && path !== this.traversing) continue;
      if (!this.pathRelock(path)) {
        // a lock seq moves without the content changing (a node write's
        // in-memory merge takes the write lock): if the read set vouches for
        // what the path read, it only has to traverse again
        if (path.shouldBeLocked && !this.readSetVouches(path)) return countRestart(ERR.transaction_restart_relock_path);
        path.shouldBeLocked = false;
        path.uptodate = NEED_TRAVERSE;
      }
    }
    return 0;
  }

  parentHeld(): boolean {
    const path = this.traversing;
    return path === null || path.l[this.traversingParent]!.held !== UNLOCKED;
  }

  /** Relock the levels of one path that were locked before unlock(). */
  private pathRelock(path: BtreePath): boolean {
    let ok = true;
    for (let l = 0; l < BTREE_MAX_DEPTH; l++) {
      const lv = path.l[l]!;
      if (lv.relockType === UNLOCKED) continue;
      const type = lv.relockType;
      lv.relockType = UNLOCKED;
      if (ok && lv.node && lv.node.hashId !== 0 && lv.node.hashId === lv.nodeHash && nodeRelock(this, lv.node.lock, type as SixLockType, lv.lockSeq)) {
        lv.held = type;
      } else {
        ok = false;
      }
    }
    if (!ok) {
      this.pathUnlockLevels(path, 0);
      return false;
    }
    if (path.uptodate === NEED_RELOCK) path.uptodate = UPTODATE;
    return true;
  }

  private levelUnlock(path: BtreePath, l: number): void {
    const lv = path.l[l]!;
    if (lv.held !== UNLOCKED) {
      nodeUnlock(this, lv.node!.lock, lv.held as SixLockType);
      lv.held = UNLOCKED;
    }
    lv.relockType = UNLOCKED;
  }

  private pathUnlockLevels(path: BtreePath, from: number): void {
    for (let l = from; l < BTREE_MAX_DEPTH; l++) this.levelUnlock(path, l);
  }

  /** This transaction holds the cache's cannibalize lock (released in unlockAll). */
  holdsCannibalize = false;

  /** Drop every lock and forget every path (end of transaction, or restart). */
  unlockAll(): void {
    for (const r of this.readSet) r.node.readPins--;
    this.readSet.length = 0;
    if (this.holdsCannibalize) {
      this.engine.cache.cannibalizeUnlock(this);
      this.holdsCannibalize = false;
    }
    for (const path of this.paths) {
      for (let l = 0; l < BTREE_MAX_DEPTH; l++) {
        const lv = path.l[l]!;
        lv.held = UNLOCKED;
        lv.relockType = UNLOCKED;
      }
      path.uptodate = NEED_TRAVERSE;
    }
    nodeUnlockAll(this);
  }

  /* ---------------------------------------------------------------- read set */

  /**
   * The leaves this transaction read from (a key returned, a range scanned,
   * a commit's range expansion), each with its identity and lock seq then.
   * bcachefs keeps a path per read (should_be_locked) and relocks them all at
   * commit; our iterators move their one path on, so the leaves behind are
   * remembered here and checked at commit (readSetValid): a leaf changed by
   * anyone else since means what we read may be stale - restart.
   */
  readonly readSet: Array<{ node: Node; hash: number; mod: number }> = [];
  /** The extent size bound a scan of this attempt stopped at; -1: none (extentBoundUse). */
  extentBoundSeen = -1;

  /** The leaf of `path` was just read from (a key returned or a range found empty). */
  readNoted(path: BtreePath): void {
    const lv = path.l[path.level]!;
    const n = lv.node;
    if (!n) return;
    for (const r of this.readSet) if (r.node === n && r.hash === n.hashId) return; // the first read is the one to check
    if (this.readSet.length >= PATHS_PER_TRANS_MAX) {
      throw new SixtreeError('ERR_INVALID_ARG', `transaction reads more than ${PATHS_PER_TRANS_MAX} leaves; split it into smaller transactions (or scan with store.range)`);
    }
    this.readSet.push({ node: n, hash: n.hashId, mod: n.keys.modSeq });
    n.readPins++;
  }

  /**
   * Every leaf read is unchanged: same node, no key inserted since (lock
   * seqs would also move on compaction after a write, which changes nothing).
   * Checked with the commit's write locks held, synchronously before its keys
   * go in.
   */
  readSetValid(): boolean {
    for (const r of this.readSet) if (r.node.hashId !== r.hash || r.node.keys.modSeq !== r.mod) return false;
    return true;
  }

  /**
   * Everything this attempt read still holds: its paths relock and every
   * leaf it read is unchanged. 0, or the restart code. A read-only commit's
   * check; also made before an error the callback threw goes to the caller
   * (the callback may have thrown on reads that no serial order has).
   */
  readsValidate(): number {
    const ret = this.relock();
    if (ret) return ret;
    if (!this.readSetValid()) return countRestart(ERR.transaction_restart_relock_path);
    return this.extentBoundValidate();
  }

  /**
   * The store's extent size bound, for a scan that stops that far past a
   * position (the extents crossing it: overlayExpand, MergedView); the
   * attempt remembers it (extentBoundValidate).
   */
  extentBoundUse(): number {
    const b = this.engine.extentSizeBound;
    this.extentBoundSeen = b;
    return b;
  }

  /**
   * 0, or a restart if the bound a scan of this attempt stopped at was
   * raised since: an extent that long may have gone in past where the scan
   * stopped, into a leaf the read set does not cover.
   */
  extentBoundValidate(): number {
    return this.extentBoundSeen < 0 || this.extentBoundSeen === this.engine.extentSizeBound ? 0 : countRestart(ERR.transaction_restart_relock_path);
  }

  /** The path's node is in the read set, still the same node, unchanged since it was read: the commit's check covers it. */
  private readSetVouches(path: BtreePath): boolean {
    const lv = path.l[path.level]!;
    const n = lv.node;
    if (!n || n.hashId === 0 || n.hashId !== lv.nodeHash) return false;
    for (const r of this.readSet) if (r.node === n && r.hash === n.hashId) return n.keys.modSeq === r.mod;
    return false;
  }

  /** n was replaced by our own update: if unchanged since we read it, what we read lives on in `news`. */
  private readSetReplaced(n: Node, hash: number, news: readonly Node[]): boolean {
    let moved = false;
    for (let i = this.readSet.length - 1; i >= 0; i--) {
      const r = this.readSet[i]!;
      if (r.node !== n || r.hash !== hash || n.keys.modSeq !== r.mod) continue;
      moved = true;
      this.readSet.splice(i, 1);
      n.readPins--;
      for (const m of news) {
        if (m.hashId === 0 || this.readSet.some((x) => x.node === m && x.hash === m.hashId)) continue;
        this.readSet.push({ node: m, hash: m.hashId, mod: m.keys.modSeq });
        m.readPins++;
      }
    }
    return moved;
  }

  /* ---------------------------------------------------------------- paths */

  /** Paths made by this transaction (path ids). */
  private pathsMade = 0;

  /**
   * Forget the paths nobody uses any more (bcachefs frees a path when its
   * last reference goes): no iterator or update holds them (ref 0), no key
   * was returned through them, and they would have to traverse or relock
   * anyway. Their locks are dropped. A commit calls this between rounds, so
   * a big commit that splits many times does not pile up dead paths.
   */
  pathsGc(): number {
    let j = 0;
    let freed = 0;
    for (const path of this.paths) {
      if (path.ref === 0 && !path.shouldBeLocked && path.uptodate !== UPTODATE && path !== this.traversing) {
        this.pathUnlockLevels(path, 0);
        path.uptodate = NEED_TRAVERSE;
        freed++;
        continue;
      }
      this.paths[j++] = path;
    }
    this.paths.length = j;
    return freed;
  }

  /**
   * A path for (btree, pos, level) with at least `locksWant`: reuse one whose
   * node at `level` already contains pos (bcachefs shares paths the same way),
   * else a new one.
   */
  getPath(btreeId: number, pos: Uint32Array, pi: number, level: number, locksWant: number): BtreePath {
    for (const path of this.paths) {
      if (path.btreeId !== btreeId || path.level !== level || path.locksWant !== locksWant) continue;
      if (pathReuseAt(path, level, pos, pi)) {
        // not a commit's any more: its next traversal searches the leaf (still stale, if a commit's was lazy)
        path.leafIterLazy = false;
        return path;
      }
    }
    return this.pathNew(btreeId, pos, pi, level, locksWant);
  }

  /**
   * getPath for many positions (a commit round's sorted updates): the paths
   * that could be reused are indexed once by their node's min key, so each
   * lookup is a binary search instead of a scan of every path (a commit of
   * 1000 keys over 1000 leaves scanned half a million paths). Candidates are
   * re-checked at lookup; paths made after the index are not in it (the
   * caller reuses its previous path for sorted neighbours).
   */
  pathFinder(): (btreeId: number, pos: Uint32Array, pi: number, level: number, locksWant: number) => BtreePath {
    const index = new Map<number, BtreePath[]>();
    const classOf = (btreeId: number, level: number, locksWant: number) => (btreeId * BTREE_MAX_DEPTH + level) * (BTREE_MAX_DEPTH + 1) + locksWant;
    for (const path of this.paths) {
      if (path.ref !== 0 || path.uptodate === NEED_TRAVERSE || !path.l[path.level]?.node) continue;
      const c = classOf(path.btreeId, path.level, path.locksWant);
      let list = index.get(c);
      if (!list) index.set(c, (list = []));
      list.push(path);
    }
    for (const [c, list] of index) {
      const keyed = list.map((path) => ({ path, min: path.l[path.level]!.node!.keys.minKey }));
      keyed.sort((a, b) => wordsCmp(a.min, 0, b.min, 0));
      index.set(c, keyed.map((k) => k.path));
    }
    return (btreeId, pos, pi, level, locksWant) => {
      const list = index.get(classOf(btreeId, level, locksWant));
      if (list) {
        // last path whose node starts at or before pos
        let lo = 0;
        let hi = list.length - 1;
        let at = -1;
        while (lo <= hi) {
          const mid = (lo + hi) >>> 1;
          const n = list[mid]!.l[level]!.node;
          if (n && wordsCmp(n.keys.minKey, 0, pos, pi) <= 0) {
            at = mid;
            lo = mid + 1;
          } else hi = mid - 1;
        }
        for (let i = at; i >= 0 && i > at - 4; i--) if (pathReuseAt(list[i]!, level, pos, pi)) return list[i]!;
      }
      return this.pathNew(btreeId, pos, pi, level, locksWant);
    };
  }

  pathNew(btreeId: number, pos: Uint32Array, pi: number, level: number, locksWant: number): BtreePath {
    if (this.paths.length >= PATHS_PER_TRANS_MAX) {
      throw new SixtreeError(
        'ERR_INVALID_ARG',
        `transaction uses more than ${PATHS_PER_TRANS_MAX} btree paths (one per node it reads or writes); split it into smaller transactions`,
      );
    }
    const path = new BtreePath(this.pathsMade++);
    path.btreeId = btreeId;
    path.level = level;
    path.locksWant = locksWant;
    wordsCopy(path.pos, 0, pos, pi);
    this.paths.push(path);
    return path;
  }

  /**
   * Raise a path's locksWant (bch2_btree_path_upgrade): levels below it are
   * upgraded read -> intent where possible, else the path must traverse again.
   */
  pathSetLocksWant(path: BtreePath, locksWant: number): void {
    if (path.locksWant >= locksWant) return;
    path.locksWant = locksWant;
    for (let l = path.level; l < locksWant && l < BTREE_MAX_DEPTH; l++) {
      const lv = path.l[l]!;
      if (!lv.node) {
        path.uptodate = NEED_TRAVERSE;
        continue;
      }
      if (lv.held === LOCK_READ) {
        if (nodeTryUpgrade(this, lv.node.lock)) lv.held = LOCK_INTENT;
        else {
          this.levelUnlock(path, l);
          path.uptodate = NEED_TRAVERSE;
        }
      } else if (lv.held === UNLOCKED) {
        if (lv.relockType !== UNLOCKED) lv.relockType = LOCK_INTENT;
        else path.uptodate = NEED_TRAVERSE;
      }
    }
  }

  /** Take the path's lock at level l by relocking; false if the node changed. */
  private levelRelockForTraverse(path: BtreePath, l: number): boolean {
    const lv = path.l[l]!;
    if (lv.held === LOCK_READ && path.lockWant(l) === LOCK_INTENT) {
      if (!nodeTryUpgrade(this, lv.node!.lock)) return false;
      lv.held = LOCK_INTENT;
      return true;
    }
    if (lv.held !== UNLOCKED) return true;
    const n = lv.node!;
    const type = path.lockWant(l) === LOCK_INTENT ? LOCK_INTENT : LOCK_READ;
    if (n.hashId === 0 || n.hashId !== lv.nodeHash || n.level !== l || !nodeRelock(this, n.lock, type as SixLockType, lv.lockSeq)) return false;
    lv.held = type;
    return true;
  }

  /** Lock the root (btree_path_lock_root), with the race check: the root may change while we wait. */
  private async lockRoot(path: BtreePath): Promise<number> {
    const root = this.engine.roots[path.btreeId]!;
    for (;;) {
      const b = root.node!;
      const level = b.level;
      if (level < path.level) return ERR.node_read_error; // path deeper than tree: caller handles
      const type = path.lockWant(level) === LOCK_INTENT ? LOCK_INTENT : LOCK_READ;
      const ret = await nodeLock(this, b.lock, type as SixLockType);
      if (ret) return ret;
      if (root.node === b && b.level === level) {
        for (let l = level + 1; l < BTREE_MAX_DEPTH; l++) {
          this.levelUnlock(path, l);
          path.l[l]!.node = null;
        }
        const lv = path.l[level]!;
        if (lv.held !== UNLOCKED) this.levelUnlock(path, level);
        lv.take(b, type);
        return 0;
      }
      nodeUnlock(this, b.lock, type as SixLockType);
    }
  }

  /**
   * Traverse a path to its level at its position (bch2_btree_path_traverse).
   * Returns 0 or a restart code. May drop and retake all of the
   * transaction's locks (I/O in nodeGet).
   */
  traverse(path: BtreePath): Promise<number> {
    if (this.traverseNowait(path) === 0) return traverseOkPromise;
    return this.traverseSlowpath(path);
  }

  /**
   * traverse() without waiting, when everything it needs is cached and
   * unlocked: an UPTODATE path, or a path that must traverse again (and
   * returned no key through its current position) walked from the root with
   * trylocks (nodeGetNowait), in one synchronous step. 0: the path is
   * UPTODATE; -1: something would wait (a lock, a read, the cannibalize
   * lock, a topology error to report), and traverse()'s slow path takes
   * over from the levels already locked.
   */
  traverseNowait(path: BtreePath): number {
    if (this.restartPending) return -1;
    if (path.uptodate === UPTODATE) {
      pathLeafInit(path);
      return 0;
    }
    if (path.uptodate !== NEED_TRAVERSE || path.shouldBeLocked) return -1;
    const root = this.engine.roots[path.btreeId]!.node;
    if (root === null || root.level < path.level) return -1;
    /* what the slow path would drop on its way up, all of it: we restart from the root */
    for (let l = path.level; l < BTREE_MAX_DEPTH; l++) {
      const lv = path.l[l]!;
      if (lv.held !== UNLOCKED || lv.relockType !== UNLOCKED) this.levelUnlock(path, l);
    }
    let l = root.level;
    const type = path.lockWant(l) === LOCK_INTENT ? LOCK_INTENT : LOCK_READ;
    if (!nodeTryLock(this, root.lock, type as SixLockType)) return -1;
    for (let k = l + 1; k < BTREE_MAX_DEPTH; k++) path.l[k]!.node = null;
    const rlv = path.l[l]!;
    rlv.take(root, type);
    const ptr = this.ptrScratch;
    const cache = this.engine.cache;
    while (l > path.level) {
      if (pathChildPtr(path, l, ptr) < 0) return -1;
      const childLevel = l - 1;
      const ctype = path.lockWant(childLevel) === LOCK_INTENT ? LOCK_INTENT : LOCK_READ;
      const child = cache.nodeGetNowait(this, ptr, childLevel, ctype);
      if (child === null) return -1;
      const clv = path.l[childLevel]!;
      clv.take(child, ctype);
      if (path.lockWant(l) === UNLOCKED) this.levelUnlock(path, l);
      l = childLevel;
    }
    path.l[path.level]!.iterStale = true;
    pathLeafInit(path);
    path.uptodate = UPTODATE;
    this.engine.counters.traverses++;
    this.engine.counters.traversesNowait++;
    return 0;
  }

  /** traverse() past a failed traverseNowait(): may wait, read, and drop and retake every lock. */
  async traverseSlowpath(path: BtreePath): Promise<number> {
    if (this.restartPending) return this.restartPending;
    if (path.uptodate === UPTODATE) {
      pathLeafInit(path);
      return 0;
    }
    if (path.uptodate === NEED_RELOCK && this.pathRelock(path)) {
      const leaf = path.l[path.level]!.node!;
      if (posInNode(leaf, path.pos)) {
        pathLeafInit(path);
        return 0;
      }
      path.uptodate = NEED_TRAVERSE;
    }
    this.engine.counters.traverses++;
    try {
      for (let attempt = 0; attempt < TRAVERSE_RETRIES_MAX; attempt++) {
        const ret = await this.traverseOnce(path);
        if (ret !== -1) return ret;
      }
      return countRestart(ERR.transaction_restart_relock_parent_for_fill);
    } finally {
      // the cannibalize lock is for the fill that needed it, not for the rest of
      // the transaction: held longer, it waits in cycles no lock graph sees
      // (an interior update waiting for it while this transaction waits for the
      // interior lock)
      if (this.holdsCannibalize) {
        this.engine.cache.cannibalizeUnlock(this);
        this.holdsCannibalize = false;
      }
    }
  }

  /** One traversal attempt: 0, a restart code, or -1 to try again (the parent moved during a fill). */
  private async traverseOnce(path: BtreePath): Promise<number> {
    // up until a good node (btree_path_up_until_good_node); levels that
    // must be intent locked (below locksWant) are taken on the way down
    let l = path.level;
    const top = Math.max(path.level, path.locksWant - 1);
    for (; l < top && l < BTREE_MAX_DEPTH; l++) {
      if (path.l[l]!.held !== UNLOCKED && path.l[l]!.held === path.lockWant(l)) continue;
      break;
    }
    for (let k = l; k < top; k++) this.levelUnlock(path, k);
    l = top;
    while (l < BTREE_MAX_DEPTH) {
      const lv = path.l[l]!;
      if (!lv.node) break;
      if (this.levelRelockForTraverse(path, l) && posInNode(lv.node, path.pos)) break;
      this.levelUnlock(path, l);
      lv.node = null;
      l++;
    }
    if (l >= BTREE_MAX_DEPTH || !path.l[l]!.node) {
      const ret = await this.lockRoot(path);
      if (ret) return ret;
      l = this.engine.roots[path.btreeId]!.node!.level;
    }
    path.l[l]!.iterStale = true;

    // walk down (btree_path_down)
    const ptr = this.ptrScratch;
    while (l > path.level) {
      const h = pathChildPtr(path, l, ptr);
      if (h < 0) {
        const n = path.l[l]!.node!;
        throw this.engine.topologyError(n, `no child pointer covers the position at level ${l}`);
      }
      const childLevel = l - 1;
      const type = path.lockWant(childLevel) === LOCK_INTENT ? LOCK_INTENT : LOCK_READ;
      // relock failures of this path during a fill mean "traverse again", not restart
      this.traversing = path;
      this.traversingParent = l;
      let child: Node | number;
      try {
        child = await this.engine.cache.nodeGet(this, ptr, childLevel, type);
      } finally {
        this.traversing = null;
      }
      if (typeof child === 'number') {
        // the parent was unlocked and changed while the cache waited: its
        // pointer may be stale; walk again from what still holds (not a restart)
        if (child === ERR.btree_node_fill_parent_lost) return -1;
        if (child === ERR.transaction_restart_fill_mem_alloc_fail) {
          // no node memory without cannibalizing: take the cannibalize lock
          // (holding no node locks while waiting), then try again. A
          // transaction keeping its locks for I/O takes it without waiting
          // if it is free: unlocked, its own nodes would be the ones
          // cannibalized (a transaction larger than the cache then evicted
          // its own leaves and restarted forever); locked, they cannot be,
          // and the lock holder goes over the budget instead.
          if (this.keepLocksForIo && this.engine.cache.cannibalizeLock(this) === 0) {
            this.holdsCannibalize = true;
            return -1;
          }
          this.unlock();
          await this.engine.cache.cannibalizeLockWait(this);
          this.holdsCannibalize = true;
          const ret = this.relock();
          if (ret) return ret;
          return -1;
        }
        return child;
      }
      const clv = path.l[childLevel]!;
      if (clv.held !== UNLOCKED) this.levelUnlock(path, childLevel);
      if (path.l[l]!.held === UNLOCKED && path.uptodate === NEED_TRAVERSE) {
        // the parent could not be relocked after the fill (or the wait for
        // another's read): its pointer may be stale, and so may the child,
        // a node an interior update replaced meanwhile, read back from its
        // old bucket. Not taken: start over from what still holds, and the
        // walk down reads the pointer again. (Taken, the retry found the
        // child locked and covering the position and stopped there, on a
        // node no longer in the tree: its reads went unchecked, since
        // nobody changes a replaced node, and read-modify-write lost
        // updates - the stress campaign, seed 1041: 4 KiB nodes of one
        // block, so every commit to a written leaf replaces it, and a cache
        // small enough to read leaves back all the time)
        this.unlockNode(child, type);
        return -1;
      }
      clv.take(child, type);
      // drop the parent's lock unless wanted (btree_path_drop_extra_locks); keep node + seq
      if (path.lockWant(l) === UNLOCKED) this.levelUnlock(path, l);
      l = childLevel;
    }
    path.l[path.level]!.iterStale = true;
    pathLeafInit(path);
    path.uptodate = UPTODATE;
    return 0;
  }

  /**
   * After this transaction modified node n under its write lock: its own
   * paths on n keep their locks valid (the seq moved by our own unlock) and
   * re-search their node iterators (the seed's node_iter_fix, by re-search).
   * Only paths that took this node: a path left holding the same Node object
   * from an earlier life (freed and reused since) must fail its relock, not
   * be handed the new node's seq - it would walk another btree's node.
   */
  /** nodeModified for many nodes: one pass over the paths. */
  nodesModified(nodes: readonly Node[]): void {
    if (nodes.length <= 4) {
      for (const n of nodes) this.nodeModified(n);
      return;
    }
    const set = new Set(nodes);
    for (const path of this.paths) {
      for (let level = 0; level < path.l.length; level++) {
        const lv = path.l[level];
        const n = lv?.node;
        if (lv && n && n.level === level && set.has(n) && lv.nodeHash === n.hashId) {
          lv.lockSeq = n.lock.seq;
          lv.iterStale = true;
        }
      }
    }
  }

  nodeModified(n: Node): void {
    for (const path of this.paths) {
      const lv = path.l[n.level];
      if (lv && lv.node === n && lv.nodeHash === n.hashId) {
        lv.lockSeq = n.lock.seq;
        lv.iterStale = true;
      }
    }
  }

  /**
   * n was replaced by an interior update of this transaction (the seed's
   * node_drop). A path on n at its own level moves to the new node covering
   * its position, locked as it held n (bcachefs bch2_trans_node_add): what it
   * read stays locked, so nobody can change it before our commit. `news` are
   * the replacements (just built by us, so the locks are free). A path that
   * cannot move traverses again; if it had returned a key, that read is no
   * longer protected and relock() restarts the transaction. A path on n above
   * its own level only forgets that level (its leaf lock still protects it).
   */
  nodeReplaced(n: Node, news: readonly Node[] = [], hash = 0): void {
    // what we read of n, unchanged, now lives in `news`, and the read set checks them at commit
    const readMoved = hash !== 0 && this.readSetReplaced(n, hash, news);
    for (const path of this.paths) {
      const lv = path.l[n.level];
      if (!lv || lv.node !== n) continue;
      const held = lv.held;
      if (held !== UNLOCKED) nodeUnlock(this, n.lock, held as SixLockType);
      lv.held = UNLOCKED;
      lv.relockType = UNLOCKED;
      lv.node = null;
      if (n.level !== path.level) {
        // an upper level it wants locked: traverse again (its leaf lock still protects what it read)
        if (n.level < path.locksWant) path.uptodate = NEED_TRAVERSE;
        continue;
      }
      const m = held !== UNLOCKED ? news.find((x) => x.level === n.level && posInNode(x, path.pos)) : undefined;
      if (m && m.hashId !== 0 && nodeTryLock(this, m.lock, held as SixLockType)) {
        lv.take(m, held);
        continue;
      }
      path.uptodate = NEED_TRAVERSE;
      // it could not move with a lock (it had dropped it for I/O or a wait):
      // its reads stay protected by the read set, so losing n is no reason
      // to restart (a commit rewriting the leaves its own range deletes had
      // scanned restarted on every attempt)
      if (readMoved) path.shouldBeLocked = false;
    }
  }

  /** A restart already thrown into user code (if the callback swallows it, the attempt still restarts). */
  restartThrown = 0;

  /** Throw a restart code out through user code. */
  throwIfRestart(ret: number): void {
    if (ret === 0) return;
    if (errMatches(ret, RESTART)) this.restartThrown = ret;
    if (errMatches(ret, RESTART)) throw new TransactionRestart(ret);
    throw new Error(`internal error: ${errName(ret)}`);
  }

  overlay(btreeId: number): BtreeOverlay {
    let o = this.overlays[btreeId];
    if (!o) {
      o = new BtreeOverlay(this.engine.btrees[btreeId]!.extents);
      this.overlays[btreeId] = o;
    }
    return o;
  }

  /**
   * After the attempt's end: drop what could be big (its updates, its read
   * set), keeping the objects themselves: the store keeps its last finished
   * attempt, and `shapes` the overlays, for their hidden classes
   * (src/util/shapes.ts).
   */
  shed(shapes: ShapeKeeper): void {
    for (const o of this.overlays) {
      if (!o) continue;
      o.clear();
      shapes.keep(o);
    }
    this.readSet.length = 0;
  }

  hasUpdates(): boolean {
    for (const o of this.overlays) if (o && !o.empty) return true;
    return false;
  }

  toText(): string {
    const out = new Printbuf();
    out.line(`transaction owner#${this.ownerId} start seq ${this.startSeq} restarts ${this.restartCount}${this.done ? ' done' : ''}`);
    out.nested((o) => {
      for (const p of this.paths) o.line(p.toText());
      o.print(this.locksHeld.toText());
      this.overlays.forEach((ov, id) => {
        if (ov && !ov.empty) o.line(`btree ${this.engine.btrees[id]!.name}: ${ov.keys.length} pending keys, ${ov.tombstones.length} ranges`);
      });
    });
    return out.toString();
  }
}

/** A free path whose node at `level` covers pos is moved there (true); else false. */
function pathReuseAt(path: BtreePath, level: number, pos: Uint32Array, pi: number): boolean {
  const n = path.l[level]!.node;
  if (path.ref !== 0 || path.uptodate === NEED_TRAVERSE || !n || !posInNodeAt(n, pos, pi)) return false;
  if (wordsCmp(path.pos, 0, pos, pi) !== 0) {
    wordsCopy(path.pos, 0, pos, pi);
    path.l[level]!.iterStale = true;
  }
  return true;
}

function posInNodeAt(n: Node, pos: Uint32Array, pi: number): boolean {
  return wordsCmp(pos, pi, n.keys.minKey, 0) >= 0 && wordsCmp(pos, pi, n.keys.maxKey, 0) <= 0;
}

