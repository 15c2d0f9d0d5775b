// SPDX-License-Identifier: GPL-2.0-only
/*
 * Interior updates (bcachefs btree_update_interior.c): split, rewrite (compact
 * into a new bucket), merge with a sibling, new root, root collapse.
 *
 * An update (struct btree_update) has a synchronous part and an ordered,
 * asynchronous completion:
 *
 *   in memory, under intent locks on the node(s) and the parent, write locks
 *   for the swap itself:
 *     new nodes built from the old ones' live keys, hashed, marked
 *     will_make_reachable; pointer keys inserted into the parent (or a new root
 *     installed); the parent marked write_blocked (it points at unwritten
 *     nodes); old nodes dropped from the hash (paths holding them fail their
 *     relock; fast-path pointers fail the hash_val recheck); old nodes'
 *     journal pins move to the update.
 *
 *   completion (updates of one btree complete in the order they were made,
 *   one at a time: the per-btree interior lock is held from the start of an
 *   update until its pointer keys are journaled, so a parent can never be
 *   split while it points at nodes not yet written):
 *     1. write the new nodes (each waits for the journal to be durable up to
 *        its keys' seq: log before data);
 *     2. journal the pointer keys at level+1 and the roots (the journal's
 *        roots are the written ones); pin that entry on the parent (or, if
 *        a later update replaced the parent meanwhile, on that update until
 *        its own entry is durable: only its new nodes hold the keys now);
 *        clear write_blocked;
 *     3. once that entry is durable: drop the pins taken from the old nodes,
 *        give the old buckets back to the allocator.
 *   An old node that was itself a new node of an update not yet complete
 *   (will_make_reachable) is written by that update before its memory goes.
 *   The per-btree interior lock only serialises the in-memory part.
 *   Recovery replays pointer keys (higher levels first) before leaf keys, so a
 *   crash anywhere leaves a tree that reaches only written nodes.
 *
 * Split or rewrite (splitForInsert): split when the keys the node keeps once
 * the commit's keys are applied (its deletions take keys out) pass 3/4 of a
 * node and the commit adds keys, or when a compacted copy could not take what
 * the commit adds; else rewrite (compact) into a new bucket. A commit that
 * only deletes never splits: halves of a shrinking node would only have to
 * merge again. Where: about half the live keys each side (splitPivot), except
 * for a sequential stream, whose nodes are split where the stream is so that
 * those it leaves behind stay full (streamPivot).
 *
 * Merges (bcachefs __bch2_foreground_maybe_merge), the shrinking half:
 *   - who asks: a commit whose deletions left a leaf empty, or under the
 *     threshold (1/3 node) with a sibling estimate (Node.sibU64s) that may
 *     fit; every merge for the merged node, its parent (one child less) and,
 *     above the leaves, the children that met at the seam; an only child for
 *     its parent; a root collapse for the new root. The engine queues these
 *     checks (engine.queueMerge) and runs them one at a time, each in its own
 *     internal transaction (engine.runMerges).
 *   - the check: the node at (level, pos) and both siblings under the same
 *     parent (previous and next); the smaller one that fits merges: together
 *     under the threshold minus the hysteresis (1/3 - 1/8 node), or, with a
 *     degenerate node (nodeDegenerate: a leaf without keys, an interior node
 *     with one child), under the split threshold; a leaf without keys merges
 *     whenever the result fits at all. Interior levels merge the same way.
 *     The sizes seen become both nodes' estimates.
 *   - the update: one new node with both siblings' live keys (a format fitted
 *     to both), a whiteout for the left pointer and the new pointer in the
 *     parent, both old nodes out; a parent without room is compacted (or
 *     split) first and the check runs again.
 *   - a root above the leaves with one child collapses: the child becomes
 *     the root (then is checked the same way).
 * Deleting every key so ends with the tree as one leaf and every other
 * bucket free (test/btree/shrink.test.ts, bench/fill-delete.ts).
 */

import { ERR } from '../errors.js';
import { Printbuf } from '../util/printbuf.js';
import { countRestart, nodeLockWrite, nodeUnlockWrite } from './locking.js';
import { KEY_TYPE, bkeyWhiteout, type BkeyI } from './bkey.js';
import { NodeIter, type NodeKeys } from './bset.js';
import { BPOS_WORDS, wordsClone, wordsCmp, wordsCopy, wordsPredecessor, wordsSuccessor } from './bpos.js';
import { NodeFlag, SIB_NEXT, SIB_PREV, SIB_U64S_NONE, nodeSibU64sAdd, type Node } from './node.js';
import { BTREE_MAX_DEPTH } from './path.js';
import { type BtreePath, UPTODATE } from './path.js';
import type { BtreeTrans } from './trans.js';
import type { Engine } from '../engine.js';
import type { AllocWatermark } from '../alloc.js';
import type { JournalPin } from '../journal/reclaim.js';
import { JournalPreres } from '../journal/journal.js';
import { jsetEntryBytes } from '../format/journal-format.js';
import { BSET_HDR_BYTES, NODE_HDR_BYTES } from '../format/btree-node.js';

/** Split when live keys pass this fraction of the node (else compact into a new bucket). */
export const SPLIT_THRESHOLD_NUM = 3;
export const SPLIT_THRESHOLD_DEN = 4;
/** Merge two siblings when together they stay under this fraction (bcachefs: 1/3, with hysteresis). */
export const MERGE_THRESHOLD_NUM = 1;
export const MERGE_THRESHOLD_DEN = 3;
/** Hysteresis: merged node must stay under threshold minus this fraction of a node. */
export const MERGE_HYSTERESIS_DEN = 8;

/** rewriteNode: rounds (each may split one ancestor instead) before giving up on a node. */
const BTREE_MAX_DEPTH_REWRITE = 8;
/** A merge check: the node at (btree, level) holding pos (engine.queueMerge). */
export interface MergeCheckPos {
  btreeId: number;
  level: number;
  pos: Uint32Array;
}

/** An async mutex with FIFO hand-off: the per-btree interior update lock. */
export class InteriorLock {
  private held = false;
  private waiters: Array<() => void> = [];

  tryAcquire(): boolean {
    if (this.held) return false;
    this.held = true;
    return true;
  }

  acquire(): Promise<void> {
    if (this.tryAcquire()) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(): void {
    const w = this.waiters.shift();
    if (w) w();
    else this.held = false;
  }

  get isHeld(): boolean {
    return this.held;
  }

  get waiting(): number {
    return this.waiters.length;
  }
}

let updateIdNext = 1;

/**
 * The interior updates one transact() call (all its attempts) made on one
 * btree. They complete together: new nodes written, then every update's
 * pointer keys in one journal entry, so a node made by one update and changed
 * by a later one is only ever written in its final form.
 */
export class UpdateGroup {
  readonly updates: BtreeUpdate[] = [];
  /** Ring space held for the group's journal entry (taken before each update changes anything). */
  readonly preres = new JournalPreres();
  /** Sub-entry bytes the pre-reservation covers. */
  keysBytes = 0;
  constructor(readonly btreeId: number) {}
}

/** One transact() call, across its attempts: the groups it owns (and the btrees' interior locks). */
export class TxCtx {
  readonly groups = new Map<number, UpdateGroup>();
  constructor(readonly interior: Interior) {}

  /** The call ended (committed, failed or gave up): close its groups. */
  finish(): void {
    for (const g of this.groups.values()) this.interior.groupClose(g);
    this.groups.clear();
  }

}

export class BtreeUpdate {
  readonly id = updateIdNext++;
  readonly newNodes: Node[] = [];
  readonly oldNodes: Node[] = [];
  /** Buckets of the old nodes, taken at swap time (Node objects are reused once freed). */
  readonly oldBuckets: number[] = [];
  /** Writes of the old nodes already under way at swap time: their buckets are freed only after these land. */
  readonly oldWrites: Promise<void>[] = [];
  /** Pointer keys to journal at parentLevel (inserts and whiteouts). */
  readonly parentKeys: BkeyI[] = [];
  parent: Node | null = null;
  parentLevel = 0;
  newRoot: Node | null = null;
  readonly pins: JournalPin[] = [];
  /**
   * The update that replaced `parent` while this one's pointer keys were
   * there in memory only (bcachefs btree_update_reparent): they live on in
   * its new nodes, reachable once it is journaled, so it holds this one's
   * entry in the journal until then.
   */
  reparentedTo: BtreeUpdate | null = null;
  state: 'in_memory' | 'writing' | 'journaled' | 'done' | 'failed' = 'in_memory';
  /** Once its group completes: what it waits for (toText, for hang reports). */
  waitingFor = '';

  constructor(
    readonly btreeId: number,
    readonly kind: 'split' | 'rewrite' | 'merge' | 'new_root' | 'collapse',
  ) {}

  toText(): string {
    const pins = this.pins.filter((p) => p.active).map((p) => p.seq);
    return `update ${this.id} ${this.kind} btree ${this.btreeId} ${this.state}${this.waitingFor ? ` (waiting for ${this.waitingFor})` : ''}: new [${this.newNodes.map((n) => n.bucket).join(',')}] old [${this.oldBuckets.join(',')}]${pins.length ? ` pins [${pins.join(',')}]` : ''}`;
  }
}

export class Interior {
  readonly locks: InteriorLock[];
  /** Per btree: the completion of the newest update (the next one waits for it to journal). */
  private readonly chain: Promise<void>[];
  /** Updates whose completion is under way, oldest first. */
  readonly pending: BtreeUpdate[] = [];
  readonly counters = {
    splits: 0,
    rewrites: 0,
    merges: 0,
    newRoots: 0,
    collapses: 0,
    updatesFailed: 0,
    preresWaits: 0,
    groupsClosedForLock: 0,
    /** A split found its node replaced (by another transaction's split or merge) so that the commit's keys fell outside it: the commit counted again. */
    splitRangeMoved: 0,
    /** Merge checks run (engine.runMerges; restarts not counted again): each ends merged or in one of the outcomes below. */
    mergeChecks: 0,
    /** The node was neither under the threshold nor degenerate. */
    mergeSkipNotUnderfull: 0,
    /** No sibling fit (sizes, or a degenerate node beside one too full). */
    mergeSkipSiblingTooBig: 0,
    /** An only child (no sibling under its parent): its parent was checked instead. */
    mergeSkipOnlyChild: 0,
    /** The level checked is no longer in the tree (a root collapsed since). */
    mergeSkipGone: 0,
    /** The merged keys did not fit in one node once repacked. */
    mergeSkipNoFit: 0,
    /** Interior updates failed earlier (device error): no merges. */
    mergeSkipFailed: 0,
    /** A root check found more than one child (or a leaf root). */
    mergeSkipRootOk: 0,
    /** Parents compacted (or split) to take a merge's pointer, the merge then run again. */
    mergeParentRewrites: 0,
  };
  /** Merges by the level of the merged nodes (stats: mergesLevel<l>). */
  readonly mergesByLevel: number[] = new Array<number>(BTREE_MAX_DEPTH).fill(0);
  /** Set when an update could not complete (device error): further updates refuse. */
  failed: Error | null = null;

  constructor(readonly engine: Engine) {
    this.locks = engine.btrees.map(() => new InteriorLock());
    this.chain = engine.btrees.map(() => Promise.resolve());
  }

  /**
   * Take the btree's interior lock for this transact() call (re-entrant: it
   * stays with the call until it ends, see TxCtx); 0 or a restart code.
   */
  private async lockInterior(trans: BtreeTrans, btreeId: number): Promise<number> {
    const ctx = trans.txCtx;
    if (ctx.groups.has(btreeId)) return 0;
    const lock = this.locks[btreeId]!;
    if (!lock.tryAcquire()) {
      trans.unlock();
      // never wait for one btree's interior lock while holding another's (a
      // transaction updating two btrees against one doing the same in the
      // other order would wait forever; these locks are not in the lock
      // graph): complete this transaction's groups first
      if (ctx.groups.size) {
        this.counters.groupsClosedForLock++;
        ctx.finish();
      }
      await lock.acquire();
      ctx.groups.set(btreeId, new UpdateGroup(btreeId));
      const ret = trans.relock();
      if (ret) return ret;
      return 0;
    }
    ctx.groups.set(btreeId, new UpdateGroup(btreeId));
    return 0;
  }

  /** Journal sub-entry bytes one update may add: up to three pointer keys or whiteouts at one level. */
  private get updateJournalBytes(): number {
    return jsetEntryBytes(3 * this.engine.ptrKeyU64s * 8);
  }

  /**
   * Pre-reserve the journal space one more update of this transaction's group
   * needs (bcachefs takes it in btree_update_start), before anything changes.
   * Without room: complete the group's updates so far (the nodes they keep
   * write_blocked may be what reclaim must write), wait for room, restart.
   */
  private async preresForUpdate(trans: BtreeTrans, btreeId: number): Promise<number> {
    const g = trans.txCtx.groups.get(btreeId)!;
    const journal = this.engine.journal;
    const add = this.updateJournalBytes;
    if (journal.preresTryGet(g.preres, journal.entryBytesFor(g.keysBytes + add))) {
      g.keysBytes += add;
      return 0;
    }
    this.counters.preresWaits++;
    trans.unlock();
    // every group of this transaction: reclaim may need nodes any of them blocks
    trans.txCtx.finish();
    const p = new JournalPreres();
    await journal.preresWait(p, journal.entryBytesFor(add));
    return countRestart(ERR.transaction_restart_journal_preres_get);
  }

  /**
   * The leaf (or interior node) at path level `level` lacks room for `u64s`:
   * split it, or rewrite it compacted. Returns 0 (the caller restarts its
   * commit) or a restart code. `force`: rewrite although it has room
   * (rewriteNode). `noGrowth`: the update serves one that adds no node to
   * the tree (a merge's or a rewrite's parent room), or journal replay
   * (restoring what the tree held before a crash): even a split may then
   * take the allocator's reserve, as a rewrite always may and a split for a
   * commit that only deletes (alloc.ts, watermarks).
   */
  async splitForInsert(
    trans: BtreeTrans,
    path: BtreePath,
    level: number,
    u64s: number,
    incoming: readonly BkeyI[] = [],
    opts: { force?: boolean; noGrowth?: boolean } = {},
  ): Promise<number> {
    const force = !!opts.force;
    // a failed update stopped the store's writes: say so, not just the old error
    if (this.failed) this.engine.checkWritable();
    let ret = await this.lockInterior(trans, path.btreeId);
    if (ret) return ret;
    try {
      // intent on the node and its parent
      trans.pathSetLocksWant(path, level + 2);
      ret = await trans.traverse(path);
      if (ret) return ret;
      const n = path.l[level]!.node!;
      // someone else split it meanwhile?
      if (!force && u64s <= n.keys.u64sRemaining()) return 0;
      // or replaced it with nodes of other ranges: the commit's keys, counted
      // for the leaf it had, may now fall outside n (a pivot chosen among
      // them could then lie outside n's range): the commit counts again
      if (incoming.length && !keysInsideNode(n, incoming)) {
        this.counters.splitRangeMoved++;
        return 0;
      }
      const parent = level + 1 < path.l.length ? path.l[level + 1]!.node : null;
      const isRoot = this.engine.roots[path.btreeId]!.node === n;
      if (!isRoot && !parent) throw new Error('interior: non-root node without parent on path');

      // what the commit adds (its deletions add nothing to a compacted copy:
      // the keys they delete are unwritten there), and what the node keeps
      const nodeU64s = this.engine.nodeSizeBytes / 8;
      let added = u64s;
      if (incoming.length) {
        added = 0;
        for (const k of incoming) if (k.type !== KEY_TYPE.deleted) added += n.keys.keyU64sPacked(k);
      }
      const liveAfter = incoming.length ? liveU64sAfter(n.keys, incoming) : n.keys.liveU64s + u64s;
      // a compacted copy has this much room (and gains some over n only if n has written or dead keys)
      const rewriteRoom = this.nodeU64sFresh - n.keys.liveU64s;
      // it does when it has more room than n; and always for a commit that
      // only deletes: in the copy the keys it deletes are unwritten, so they
      // go without whiteouts (a full node written whole, then emptied by one
      // delRange, has no room for whiteouts and no key to split at)
      const rewriteHelps = rewriteRoom > n.keys.u64sRemaining() || (incoming.length > 0 && added === 0);
      let split = (added > 0 && liveAfter * SPLIT_THRESHOLD_DEN > nodeU64s * SPLIT_THRESHOLD_NUM) || added > rewriteRoom || !rewriteHelps;
      // a forced rewrite (blacklist gc) wants a new bucket, room or not: split only a node past the threshold
      if (force) split = liveAfter * SPLIT_THRESHOLD_DEN > nodeU64s * SPLIT_THRESHOLD_NUM;
      // (n cannot change while we hold its intent lock: a relock after any
      // unlock below fails if it did)
      const pivot = split ? splitPivot(n.keys, incoming) : null;
      if (split && !pivot) {
        if (!rewriteHelps || added > rewriteRoom) throw this.engine.topologyError(n, 'cannot split: no key to split at (a single update larger than a node?)');
        split = false;
      }
      // a rewrite adds no node (one bucket taken, one given back): it may take
      // the reserve (alloc.ts), as may a split for a commit that only deletes
      // or one serving an update that adds no node
      const watermark: AllocWatermark = !split || opts.noGrowth || (incoming.length > 0 && added === 0) ? 'no_growth' : 'normal';

      // the parent needs room for one more pointer (split) or a replaced one
      if (!isRoot && parent!.keys.u64sRemaining() < 2 * this.engine.ptrKeyU64s) {
        return this.splitForInsert(trans, path, level + 1, 2 * this.engine.ptrKeyU64s, [], { noGrowth: watermark === 'no_growth' });
      }

      ret = await this.preresForUpdate(trans, path.btreeId);
      if (ret) return ret;
      ret = trans.relock();
      if (ret) return ret;
      if (path.uptodate !== UPTODATE || path.l[level]!.node !== n) return countRestart(ERR.transaction_restart_split_race);

      // what the split decision and pivot were made on
      const decidedHash = n.hashVal;
      const decidedMod = n.keys.modSeq;
      const upd = new BtreeUpdate(path.btreeId, split ? 'split' : 'rewrite');
      // new nodes
      const nrNew = split ? 2 : 1;
      const news: Node[] = [];
      let newRoot: Node | null = null;
      // allocation may drop our locks to wait for the cannibalize lock: n and
      // its parent must not be the nodes cannibalized meanwhile (the commit
      // that needs the split then lost its leaf on every attempt)
      // (nor the nodes below n on the path: splitting a parent for a leaf,
      // the path is walked again without waiting only if its leaf is still
      // cached; a leaf cannibalized on every attempt restarted it forever)
      const pinned: Node[] = [n];
      if (parent) pinned.push(parent);
      for (let l = 0; l < level; l++) {
        const below = path.l[l]?.node;
        if (below) pinned.push(below);
      }
      for (const m of pinned) m.readPins++;
      try {
        for (let i = 0; i < nrNew; i++) news.push(await this.engine.nodeAllocNew(trans, path.btreeId, level, news, watermark));
        if (isRoot && split) newRoot = await this.engine.nodeAllocNew(trans, path.btreeId, level + 1, news, watermark);
      } catch (e) {
        for (const m of news) this.engine.nodeFreeNew(trans, m);
        throw e;
      } finally {
        for (const m of pinned) m.readPins--;
      }

      // relock after possible waits in allocation; a lock seq that moved
      // while we waited (a node write's in-memory merge) is no race if the
      // node is the same and unchanged: walk to it again without waiting (a
      // commit that had to wait for node memory under steady writeback
      // otherwise restarted every time, 10,000 times)
      ret = trans.relock();
      if (!ret && path.uptodate !== UPTODATE && n.hashVal === decidedHash && n.keys.modSeq === decidedMod) trans.traverseNowait(path);
      if (ret || path.uptodate !== UPTODATE || path.l[level]!.node !== n || n.hashVal === 0 || n.hashVal !== decidedHash || n.keys.modSeq !== decidedMod) {
        for (const m of news) this.engine.nodeFreeNew(trans, m);
        if (newRoot) this.engine.nodeFreeNew(trans, newRoot);
        return ret || countRestart(ERR.transaction_restart_split_race);
      }

      // write locks for the swap (n, then its parent) before building, so a
      // restart here backs out new nodes nobody has seen
      ret = await nodeLockWrite(trans, n.lock);
      if (ret) {
        for (const m of news) this.engine.nodeFreeNew(trans, m);
        if (newRoot) this.engine.nodeFreeNew(trans, newRoot);
        return ret;
      }
      if (parent) {
        ret = await nodeLockWrite(trans, parent.lock);
        if (ret) {
          nodeUnlockWrite(trans, n.lock);
          for (const m of news) this.engine.nodeFreeNew(trans, m);
          if (newRoot) this.engine.nodeFreeNew(trans, newRoot);
          return ret;
        }
      }
      // a node write completing while we waited for allocation seals the
      // parent's writable set (room lost without a seq change): check again
      // under the write lock, when no write can start
      if (parent && parent.keys.u64sRemaining() < 2 * this.engine.ptrKeyU64s) {
        nodeUnlockWrite(trans, parent.lock);
        nodeUnlockWrite(trans, n.lock);
        for (const m of news) this.engine.nodeFreeNew(trans, m);
        if (newRoot) this.engine.nodeFreeNew(trans, newRoot);
        return countRestart(ERR.transaction_restart_split_race);
      }
      // fill the new nodes from n (an error leaves n as it was: the new nodes go back, the locks go)
      try {
        if (pivot) {
          const right = new Uint32Array(BPOS_WORDS);
          wordsCopy(right, 0, pivot, 0);
          wordsSuccessor(right, 0);
          this.engine.nodeBuildFrom(trans, news[0]!, n, n.keys.minKey, pivot);
          this.engine.nodeBuildFrom(trans, news[1]!, n, right, n.keys.maxKey);
        } else {
          this.engine.nodeBuildFrom(trans, news[0]!, n, n.keys.minKey, n.keys.maxKey);
        }
      } catch (e) {
        if (parent) nodeUnlockWrite(trans, parent.lock);
        nodeUnlockWrite(trans, n.lock);
        for (const m of news) this.engine.nodeFreeNew(trans, m);
        if (newRoot) this.engine.nodeFreeNew(trans, newRoot);
        throw e;
      }
      // ---- synchronous from here ----
      upd.newNodes.push(...news);
      upd.oldNodes.push(n);
      if (newRoot) {
        this.engine.nodeInitEmpty(trans, newRoot, posMin(), posMax());
        for (const m of news) this.engine.nodeInsertPtr(newRoot, m);
        upd.newNodes.push(newRoot);
        upd.newRoot = newRoot;
        this.counters.newRoots++;
      } else if (isRoot) {
        upd.newRoot = news[0]!;
      } else {
        upd.parent = parent;
        upd.parentLevel = level + 1;
        const parentLive = parent!.keys.liveU64s;
        for (const m of news) {
          const k = this.engine.ptrKeyFor(m);
          upd.parentKeys.push(k);
          this.engine.nodeInsertKeyInMemory(parent!, k);
        }
        nodeSibU64sAdd(parent!, parent!.keys.liveU64s - parentLive);
        blockWrites(parent!);
        this.engine.nodeDirtied(parent!, 0);
      }
      const nHash = n.hashId;
      this.swapOut(trans, upd, n);
      if (upd.newRoot) this.engine.setRoot(path.btreeId, upd.newRoot);
      if (parent) {
        nodeUnlockWrite(trans, parent.lock);
        trans.nodeModified(parent);
      }
      nodeUnlockWrite(trans, n.lock);
      trans.nodeReplaced(n, news, nHash);
      this.engine.nodeFreeOld(n);
      if (split) this.counters.splits++;
      else this.counters.rewrites++;
      this.complete(trans, upd);
      return 0;
    } finally {
      // the interior lock stays with the transact() call (TxCtx.finish releases it)
    }
  }

  /**
   * Rewrite the node at path level `level` into a new bucket although it has
   * room (blacklist gc: its bucket holds bsets with blacklisted seqs). A node
   * no longer in the tree, or no longer at `bucket`, was replaced already:
   * nothing to do. Returns 0 (done or nothing to do) or a restart code;
   * `rewritten` tells which.
   */
  async rewriteNode(trans: BtreeTrans, path: BtreePath, level: number, bucket: number, rewritten: { done: boolean }): Promise<number> {
    // a call may split the parent instead (no room for the new pointer): go again
    for (let i = 0; i < BTREE_MAX_DEPTH_REWRITE; i++) {
      const ret = await trans.traverse(path);
      if (ret) return ret;
      const n = path.l[level]?.node;
      if (!n || n.bucket !== bucket) return 0;
      const r = await this.splitForInsert(trans, path, level, 0, [], { force: true });
      if (r) return r;
      rewritten.done = true;
    }
    return 0;
  }

  /** Old node leaves the tree: unhash, take its pins, mark dying. */
  private swapOut(trans: BtreeTrans, upd: BtreeUpdate, n: Node): void {
    // updates whose pointer keys n holds, not journaled yet: n's pin cannot
    // cover them (it has no seq for them), and their entry may otherwise
    // leave the window before upd's makes the new nodes holding them reachable
    if (n.has(NodeFlag.write_blocked)) {
      for (const u of this.pending) if (u.parent === n && (u.state === 'in_memory' || u.state === 'writing')) u.reparentedTo = upd;
    }
    this.engine.cache.hashRemove(n);
    upd.oldBuckets.push(n.bucket);
    // a write of the old node already issued must land before its bucket can
    // be reused (later writes of a dying node are skipped: nodeWriteIo)
    if (n.has(NodeFlag.write_in_flight) && n.writeDone) upd.oldWrites.push(n.writeDone.catch(() => {}));
    n.set(NodeFlag.dying);
    if (n.journalPin) {
      upd.pins.push(n.journalPin);
      n.journalPin = null;
    }
    this.engine.nodeCleanForDrop(n);
    void trans;
  }

  /** u64s of keys a fresh node holds (header and one bset header taken off). */
  get nodeU64sFresh(): number {
    return (this.engine.nodeSizeBytes - NODE_HDR_BYTES - BSET_HDR_BYTES) >>> 3;
  }

  /** Live u64s under which a node looks for a sibling to merge with (bcachefs btree_foreground_merge_threshold). */
  get mergeThresholdU64s(): number {
    return ((this.engine.nodeSizeBytes / 8) * MERGE_THRESHOLD_NUM) / MERGE_THRESHOLD_DEN;
  }

  /** Two siblings merge when together they stay under this: the threshold minus the hysteresis. */
  get mergeMaxU64s(): number {
    return this.mergeThresholdU64s - this.engine.nodeSizeBytes / 8 / MERGE_HYSTERESIS_DEN;
  }

  /** With a degenerate node (an interior node with one child) they merge while the result would not split. */
  get mergeDegenerateMaxU64s(): number {
    return ((this.engine.nodeSizeBytes / 8) * SPLIT_THRESHOLD_NUM) / SPLIT_THRESHOLD_DEN;
  }

  /**
   * Should n, just shrunk by a commit (under its write lock), be checked for
   * a merge? Never the root; always when degenerate; when under the threshold, if a side's
   * estimate may fit (bcachefs bch2_foreground_maybe_merge_sibling looks at
   * b->sib_u64s first, so most deletions cost no check).
   */
  nodeWantsMerge(n: Node): boolean {
    if (this.engine.roots[n.btreeId]!.node === n) return false;
    if (nodeDegenerate(n)) return true;
    if (n.keys.liveU64s >= this.mergeThresholdU64s) return false;
    const max = this.mergeMaxU64s;
    return n.sibU64s[SIB_PREV]! <= max || n.sibU64s[SIB_NEXT]! <= max;
  }

  /**
   * Foreground merge (bcachefs __bch2_foreground_maybe_merge, for the previous
   * and the next sibling): the node at `level` holding pos merges with the
   * smaller of its siblings under the same parent that fits (see the notes at
   * the top: under the threshold minus the hysteresis; degenerate nodes
   * further). A root, or a check for the root's level, is a collapse check.
   *
   * Nothing is left for good:
   *   - a parent without room for the new pointer is compacted (or split)
   *     first, then the check runs again;
   *   - an only child has no sibling under its parent: the parent (one
   *     child: degenerate) is checked instead; merging it gives the child
   *     siblings (the children at the seam are checked again);
   *   - siblings too big: both estimates record the size; the next deletion
   *     that brings one under asks again.
   * Looks without the interior lock and takes it only to merge. Returns 0
   * (merged, or nothing to do: counted by reason) or a restart code.
   */
  async maybeMerge(trans: BtreeTrans, btreeId: number, level: number, pos: Uint32Array): Promise<number> {
    const engine = this.engine;
    const c = this.counters;
    if (this.failed) {
      c.mergeSkipFailed++;
      return 0;
    }
    const rootLevel = engine.roots[btreeId]!.node!.level;
    if (level > rootLevel) {
      c.mergeSkipGone++;
      return 0;
    }
    if (level === rootLevel) return this.maybeCollapseRoot(trans, btreeId);
    const path = trans.pathNew(btreeId, pos, 0, level, level + 2);
    let ret = await trans.traverse(path);
    if (ret) {
      // the tree lost levels while we waited (a path deeper than the tree)
      if (ret === ERR.node_read_error && level >= engine.roots[btreeId]!.node!.level) return this.maybeMerge(trans, btreeId, level, pos);
      return ret;
    }
    const n = path.l[level]!.node!;
    const parent = path.l[level + 1]?.node ?? null;
    if (!parent) return this.maybeCollapseRoot(trans, btreeId);

    // the siblings under the same parent: the parent's range says which exist
    const hasSib = [wordsCmp(n.keys.minKey, 0, parent.keys.minKey, 0) > 0, wordsCmp(n.keys.maxKey, 0, parent.keys.maxKey, 0) < 0];
    for (const side of [SIB_PREV, SIB_NEXT]) {
      if (!hasSib[side]) n.sibU64s[side] = SIB_U64S_NONE;
      else if (n.sibU64s[side] === SIB_U64S_NONE) n.sibU64s[side] = 0; // the parent changed since: unknown
    }
    const degenerate = nodeDegenerate(n);
    if (!degenerate && n.keys.liveU64s >= this.mergeThresholdU64s) {
      c.mergeSkipNotUnderfull++;
      return 0;
    }
    if (!hasSib[SIB_PREV] && !hasSib[SIB_NEXT]) {
      c.mergeSkipOnlyChild++;
      engine.queueMerge(btreeId, level + 1, parent.keys.minKey);
      return 0;
    }
    const sibPaths: Array<BtreePath | null> = [null, null];
    for (const side of [SIB_PREV, SIB_NEXT]) {
      if (!hasSib[side]) continue;
      const p = side === SIB_PREV ? wordsClone(n.keys.minKey) : wordsClone(n.keys.maxKey);
      if (side === SIB_PREV) wordsPredecessor(p, 0);
      else wordsSuccessor(p, 0);
      const sp = trans.pathNew(btreeId, p, 0, level, level + 1);
      ret = await trans.traverse(sp);
      if (ret) return ret;
      sibPaths[side] = sp;
    }
    // the traversals may have dropped our locks for I/O
    ret = trans.relock();
    if (ret) return ret;
    if (path.uptodate !== UPTODATE || path.l[level]!.node !== n || path.l[level + 1]!.node !== parent) return countRestart(ERR.transaction_restart_relock_path_intent);

    let sib: Node | null = null;
    let sibPath: BtreePath | null = null;
    let best = Infinity;
    for (const side of [SIB_PREV, SIB_NEXT]) {
      const sp = sibPaths[side];
      if (!sp) continue;
      if (sp.uptodate !== UPTODATE) return countRestart(ERR.transaction_restart_relock_path_intent);
      const s = sp.l[level]!.node!;
      if (sp.l[level + 1]!.node !== parent) return countRestart(ERR.transaction_restart_relock_path_intent);
      const u64s = n.keys.liveU64s + s.keys.liveU64s;
      const withDegenerate = degenerate || nodeDegenerate(s);
      const empty = (n.level === 0 && n.keys.nrKeys === 0) || (s.level === 0 && s.keys.nrKeys === 0);
      // the estimates of both: beside a degenerate node 0 ("check on the next
      // deletion"), since it merges further than the estimate says
      n.sibU64s[side] = s.sibU64s[1 - side] = withDegenerate ? 0 : Math.min(u64s, SIB_U64S_NONE - 1);
      const ok = u64s <= this.mergeMaxU64s || (withDegenerate && u64s <= this.mergeDegenerateMaxU64s) || (empty && u64s <= this.nodeU64sFresh);
      if (ok && u64s < best) {
        sib = s;
        sibPath = sp;
        best = u64s;
      }
    }
    if (!sib || !sibPath) {
      c.mergeSkipSiblingTooBig++;
      return 0;
    }

    // merging: the interior lock (waiting for it drops our locks: relocked, or a restart)
    ret = await this.lockInterior(trans, btreeId);
    if (ret) return ret;
    if (path.uptodate !== UPTODATE || sibPath.uptodate !== UPTODATE || n.hashVal === 0 || sib.hashVal === 0) return countRestart(ERR.transaction_restart_relock_path_intent);
    const right = wordsCmp(sib.keys.minKey, 0, n.keys.maxKey, 0) > 0;
    const left = right ? n : sib;
    const rightNode = right ? sib : n;
    const seam = wordsClone(left.keys.maxKey);
    // the parent takes a whiteout (the left pointer goes) and a new pointer at the right one's position
    const parentNeedU64s = parent.keys.keyU64sPacked(bkeyWhiteout(seam)) + 2 * engine.ptrKeyU64s;
    if (parent.keys.u64sRemaining() < parentNeedU64s) {
      c.mergeParentRewrites++;
      ret = await this.splitForInsert(trans, path, level + 1, parentNeedU64s, [], { noGrowth: true });
      return ret || countRestart(ERR.transaction_restart_split_race);
    }
    ret = await this.preresForUpdate(trans, btreeId);
    if (ret) return ret;

    // (kept cached while allocation may wait with our locks dropped, as in splitForInsert)
    const pinned = [n, sib, parent];
    for (const x of pinned) x.readPins++;
    let m: Node;
    try {
      m = await engine.nodeAllocNew(trans, btreeId, level, [], 'no_growth');
    } finally {
      for (const x of pinned) x.readPins--;
    }
    // allocation may have waited (and dropped our locks): everything must still hold
    ret = trans.relock();
    if (ret || n.hashVal === 0 || sib.hashVal === 0 || path.uptodate !== UPTODATE || sibPath.uptodate !== UPTODATE) {
      engine.nodeFreeNew(trans, m);
      return ret || countRestart(ERR.transaction_restart_relock_path_intent);
    }
    const locked = [left, rightNode, parent];
    for (let i = 0; i < locked.length; i++) {
      ret = await nodeLockWrite(trans, locked[i]!.lock);
      if (ret) {
        for (let j = i - 1; j >= 0; j--) nodeUnlockWrite(trans, locked[j]!.lock);
        engine.nodeFreeNew(trans, m);
        return ret;
      }
    }
    // room re-checked under the write lock (a completed write may have sealed
    // the parent's writable set): the next attempt compacts the parent first
    if (parent.keys.u64sRemaining() < parentNeedU64s) {
      for (const y of [parent, rightNode, left]) nodeUnlockWrite(trans, y.lock);
      engine.nodeFreeNew(trans, m);
      return countRestart(ERR.transaction_restart_split_race);
    }
    // a post-write merge left pending happens now (we hold the write locks)
    engine.nodeCompactPending(left);
    engine.nodeCompactPending(rightNode);
    if (!engine.nodeBuildMerged(trans, m, left, rightNode)) {
      for (const y of [parent, rightNode, left]) nodeUnlockWrite(trans, y.lock);
      engine.nodeFreeNew(trans, m);
      c.mergeSkipNoFit++;
      return 0;
    }
    // ---- synchronous from here ----
    const upd = new BtreeUpdate(btreeId, 'merge');
    upd.newNodes.push(m);
    upd.oldNodes.push(left, rightNode);
    upd.parent = parent;
    upd.parentLevel = level + 1;
    const wo = bkeyWhiteout(wordsClone(seam));
    const pk = engine.ptrKeyFor(m);
    upd.parentKeys.push(wo, pk);
    const parentLive = parent.keys.liveU64s;
    engine.nodeInsertKeyInMemory(parent, wo);
    engine.nodeInsertKeyInMemory(parent, pk);
    nodeSibU64sAdd(parent, parent.keys.liveU64s - parentLive);
    blockWrites(parent);
    engine.nodeDirtied(parent, 0);
    const leftHash = left.hashId;
    const rightHash = rightNode.hashId;
    this.swapOut(trans, upd, left);
    this.swapOut(trans, upd, rightNode);
    nodeUnlockWrite(trans, parent.lock);
    trans.nodeModified(parent);
    nodeUnlockWrite(trans, rightNode.lock);
    nodeUnlockWrite(trans, left.lock);
    trans.nodeReplaced(left, [m], leftHash);
    trans.nodeReplaced(rightNode, [m], rightHash);
    engine.nodeFreeOld(left);
    engine.nodeFreeOld(rightNode);
    c.merges++;
    this.mergesByLevel[level]!++;
    this.complete(trans, upd);

    // what the merge may have made worth checking: the merged node (two
    // empty leaves make an empty one), the parent (one child less, maybe a
    // root with one child), and above the leaves the children that met at
    // the seam (siblings under one parent now)
    if (this.nodeWantsMerge(m)) engine.queueMerge(btreeId, level, m.keys.minKey);
    engine.queueMerge(btreeId, level + 1, parent.keys.minKey);
    if (level > 0) {
      engine.queueMerge(btreeId, level - 1, seam);
      const next = wordsClone(seam);
      wordsSuccessor(next, 0);
      engine.queueMerge(btreeId, level - 1, next);
    }
    return 0;
  }

  /**
   * A root above the leaves with one child: the child becomes the root
   * (journaled as the group's root; the old root's bucket is freed once that
   * entry is durable), then is checked the same way.
   */
  private async maybeCollapseRoot(trans: BtreeTrans, btreeId: number): Promise<number> {
    const engine = this.engine;
    const root = engine.roots[btreeId]!.node!;
    if (root.level === 0 || root.keys.nrKeys !== 1) {
      this.counters.mergeSkipRootOk++;
      return 0;
    }
    let ret = await this.lockInterior(trans, btreeId);
    if (ret) return ret;
    // intent on the child and the root
    const path = trans.pathNew(btreeId, root.keys.minKey, 0, root.level - 1, root.level + 1);
    ret = await trans.traverse(path);
    if (ret) return ret;
    if (engine.roots[btreeId]!.node !== root || root.keys.nrKeys !== 1) return countRestart(ERR.transaction_restart_split_race);
    const child = path.l[root.level - 1]!.node!;
    ret = await this.preresForUpdate(trans, btreeId);
    if (ret) return ret;
    ret = trans.relock();
    if (ret) return ret;
    if (engine.roots[btreeId]!.node !== root || root.keys.nrKeys !== 1 || path.uptodate !== UPTODATE || path.l[root.level - 1]!.node !== child || path.l[root.level]!.node !== root) {
      return countRestart(ERR.transaction_restart_split_race);
    }
    ret = await nodeLockWrite(trans, root.lock);
    if (ret) return ret;
    const upd = new BtreeUpdate(btreeId, 'collapse');
    upd.oldNodes.push(root);
    upd.newRoot = child;
    const rootHash = root.hashId;
    this.swapOut(trans, upd, root);
    engine.setRoot(btreeId, child);
    child.sibU64s.fill(SIB_U64S_NONE);
    nodeUnlockWrite(trans, root.lock);
    trans.nodeReplaced(root, [], rootHash);
    engine.nodeFreeOld(root);
    this.counters.collapses++;
    this.complete(trans, upd);
    if (child.level > 0) engine.queueMerge(btreeId, child.level, child.keys.minKey);
    return 0;
  }

  /** An update's in-memory part is done: it joins its transact() call's group. */
  private complete(trans: BtreeTrans, upd: BtreeUpdate): void {
    this.pending.push(upd);
    trans.txCtx.groups.get(upd.btreeId)!.updates.push(upd);
  }

  /**
   * The transact() call that owns group g ended: seal the new nodes' contents
   * now (synchronously, before anyone else may change them), release the
   * interior lock, and complete in chain order: write, journal, free.
   */
  groupClose(g: UpdateGroup): void {
    const lock = this.locks[g.btreeId]!;
    if (g.updates.length === 0) {
      this.engine.journal.preresPut(g.preres);
      lock.release();
      return;
    }
    const newNodes: Node[] = [];
    const deadNew: Node[] = [];
    for (const u of g.updates) {
      for (const n of u.newNodes) {
        if (newNodes.includes(n) || deadNew.includes(n)) continue;
        if (n.has(NodeFlag.dying)) deadNew.push(n);
        else newNodes.push(n);
      }
      u.state = 'writing';
    }
    // created and replaced within the group: never written
    for (const n of deadNew) n.clear(NodeFlag.will_make_reachable);
    // keys committed into the new nodes since the update pinned their journal
    // entries on those nodes; the nodes become reachable only with the group's
    // entry, so the group holds those pins until that entry is durable
    const last = g.updates[g.updates.length - 1]!;
    for (const n of [...newNodes, ...deadNew]) {
      if (n.journalPin?.active) last.pins.push(n.journalPin);
      n.journalPin = null;
    }
    const prev = this.chain[g.btreeId]!;
    const sealed = newNodes.map((n) => this.engine.nodeWriteSealed(n, prev));
    // who they are: by the time the group journals, a new node replaced by a
    // later update may have been freed and its Node object reused
    const newSeqs = newNodes.map((n) => n.hashVal);
    // the root as of the group (the last new root it made), captured now:
    // by the time the group journals, the Node object may hold another node
    let root: Node | null = null;
    for (const u of g.updates) if (u.newRoot) root = u.newRoot;
    const rootPtr = root ? this.engine.rootPtrOf(root) : null;
    lock.release();

    let journaled!: () => void;
    this.chain[g.btreeId] = new Promise<void>((r) => (journaled = r));
    const waiting = (what: string) => {
      for (const u of g.updates) u.waitingFor = what;
    };
    const run = async () => {
      try {
        waiting('the previous group to journal');
        await prev;
        waiting('its new nodes written');
        await Promise.all(sealed);
        if (this.failed) throw this.failed;
        waiting(`journal room (pre-reserved ${g.preres.bytes} bytes)`);
        const seq = await this.engine.journalInteriorUpdates(g.btreeId, g.updates, rootPtr, g.preres, (s) => {
          // their pointers are journaled (without a length): record how far
          // their first writes went, and later writes may record theirs
          newNodes.forEach((n, i) => {
            if (n.hashVal !== newSeqs[i]) return;
            n.clear(NodeFlag.ptr_unjournaled);
            this.engine.ptrUpdateAfterJournaled(n);
          });
          for (const u of g.updates) {
            u.state = 'journaled';
            if (u.parent) {
              unblockWrites(u.parent);
              // a parent written by this group holds the keys on disk already
              if (u.parent.hashVal !== 0 && !u.parent.has(NodeFlag.dying) && !newNodes.includes(u.parent)) this.engine.nodeDirtied(u.parent, s);
              // a parent replaced since: the keys are in the replacing update's new nodes (see reparentedTo)
              else if (u.reparentedTo) u.reparentedTo.pins.push(this.engine.journal.pinAdd(s));
            }
          }
          // parents writeback wanted while they were blocked (their writes wait for this entry)
          for (const u of g.updates) if (u.parent) this.engine.nodeWriteIfNeeded(u.parent);
        });
        journaled();
        waiting(`entry ${seq} durable`);
        await this.engine.journal.waitDurable(seq);
        waiting('writes to the old nodes');
        for (const u of g.updates) if (u.oldWrites.length) await Promise.all(u.oldWrites);
        waiting('');
        for (const u of g.updates) {
          for (const pin of u.pins) this.engine.journal.pinDrop(pin);
          for (const b of u.oldBuckets) this.engine.bucketFreeAfter(b, seq);
          u.state = 'done';
        }
      } catch (e) {
        for (const u of g.updates) u.state = 'failed';
        this.counters.updatesFailed++;
        this.failed = e instanceof Error ? e : new Error(String(e));
        journaled();
      } finally {
        this.engine.journal.preresPut(g.preres);
        for (const u of g.updates) {
          const i = this.pending.indexOf(u);
          if (i >= 0) this.pending.splice(i, 1);
        }
        this.engine.updateFinished();
      }
    };
    void run();
  }

  toText(): string {
    const out = new Printbuf();
    out.line(`interior updates: ${this.pending.length} pending${this.failed ? `, failed: ${this.failed.message}` : ''}`);
    out.nested((o) => {
      this.locks.forEach((l, id) => {
        if (l.isHeld || l.waiting) o.line(`btree ${this.engine.btrees[id]!.name}: interior lock held, ${l.waiting} waiting`);
      });
      for (const u of this.pending.slice(0, 16)) o.line(u.toText());
      if (this.pending.length > 16) o.line(`... ${this.pending.length - 16} more`);
      o.field('counters', JSON.stringify(this.counters));
      o.field('merges by level', this.mergesByLevel.join(' '));
    });
    return out.toString();
  }

  /**
   * Updates completing (their transactions ended: written, journaled, then
   * their old buckets freed), which need nothing of any transaction. Those
   * still in memory wait for their transaction, maybe the caller's own.
   */
  get completing(): number {
    let n = 0;
    for (const u of this.pending) if (u.state === 'writing' || u.state === 'journaled') n++;
    return n;
  }

  /**
   * Freeze every btree's topology: take all interior locks, in btree order,
   * then let the updates under way complete. Until the returned release
   * runs, no split, merge, rewrite or new root starts (their transactions
   * wait for the lock, holding no node locks), so pointers, roots and the
   * allocator's node buckets stay as they are; commits into leaves go on.
   * Safe against deadlock because no one waits for an interior lock while
   * holding another (lockInterior completes its groups first).
   */
  async freezeTopology(): Promise<() => void> {
    const held: InteriorLock[] = [];
    const release = () => {
      for (const l of held.splice(0).reverse()) l.release();
    };
    try {
      for (const l of this.locks) {
        await l.acquire();
        held.push(l);
      }
      // every group is closed now (an open one holds its lock): what is pending is completing
      await this.drain();
    } catch (e) {
      release();
      throw e;
    }
    return release;
  }

  /** Wait until every update under way has completed (flush/close). */
  async drain(): Promise<void> {
    while (this.pending.length) await new Promise<void>((r) => this.engine.onUpdateFinished(r));
    if (this.failed) throw this.failed;
  }
}

/**
 * Where to split node n so both halves get about half of its live keys once
 * the keys about to go in are applied (by u64s; deletions take keys out):
 * the last position of the first half. A sequential stream's keys into a
 * leaf split elsewhere (streamPivot). Never n's max key (the right half must
 * not be empty).
 * null: nothing to split at.
 */
export function splitPivot(keys: NodeKeys, incoming: readonly BkeyI[]): Uint32Array | null {
  // leaves only: the stream rule may split just before a key, and an interior
  // node must split at a live pointer (journal replay streams pointer keys in)
  const stream = keys.level === 0 ? streamPivot(keys, incoming) : null;
  if (stream) return stream;
  return splitPivotBySets(keys, incoming) ?? splitPivotByWalk(keys, incoming);
}

/** splitPivotBySets: candidates are the largest set's keys this many bytes apart. */
const PIVOT_CANDIDATE_BYTES = 256;
/** splitPivotBySets gives up (for the walk) when its first half is off the middle by more than this fraction of a node. */
export const PIVOT_SLACK_DEN = 16;

/**
 * splitPivot without walking the node: the bytes at or below a position are
 * the bytes of each set below it (one search per set: its keys are sorted
 * and contiguous) plus the incoming keys' below it, so a binary search over
 * candidate positions, keys of the largest set PIVOT_CANDIDATE_BYTES apart
 * (found by their headers alone), finds the first one with half the bytes
 * at or below it in a dozen steps, where the walk merged and unpacked every
 * key up to the middle. Bytes count every key the sets hold (whiteouts and
 * keys newer sets replace too): the halves are as even as the sets are
 * mixed. Any position splits a leaf; for an interior node (null) the walk
 * finds a live pointer. null too when the candidate lands more than
 * 1/PIVOT_SLACK_DEN of a node from the middle (other sets' keys crowd
 * between two candidates, or the largest set is not where the keys are) or
 * at an end: the walk decides.
 */
export function splitPivotBySets(keys: NodeKeys, incoming: readonly BkeyI[]): Uint32Array | null {
  // an interior node must split at a live pointer (a child's max key); a
  // candidate may be a deleted one: the walk, which skips them, decides
  // (interior splits are rare)
  if (keys.level > 0) return null;
  const nsets = keys.nsets;
  const inBelow = new Float64Array(incoming.length + 1);
  for (let i = 0; i < incoming.length; i++) {
    const k = incoming[i]!;
    inBelow[i + 1] = inBelow[i]! + (k.type === KEY_TYPE.deleted ? 0 : keys.keyU64sPacked(k) * 8);
  }
  let total = inBelow[incoming.length]!;
  let big = -1;
  let bigBytes = 0;
  for (let s = 0; s < nsets; s++) {
    const b = keys.setEndOf(s) - keys.setStartOf(s);
    total += b;
    if (b > bigBytes) {
      bigBytes = b;
      big = s;
    }
  }
  if (big < 0) return null;
  const start = keys.setStartOf(big);
  const end = keys.setEndOf(big);
  const cands: number[] = [];
  for (let k = start, g = -PIVOT_CANDIDATE_BYTES; k < end; k = keys.keyNext(k)) {
    if (k - g >= PIVOT_CANDIDATE_BYTES) {
      cands.push(k);
      g = k;
    }
  }
  const pos = new Uint32Array(BPOS_WORDS);
  /* bytes of the keys at or below candidate c's position, its own included */
  const upTo = (c: number): number => {
    const k = cands[c]!;
    keys.keyPosTo(k, pos, 0);
    let b = keys.keyNext(k) - start;
    keys.prepareSearch(pos, 0);
    for (let s = 0; s < nsets; s++) if (s !== big) b += keys.lowerBound(s, pos, 0, true) - keys.setStartOf(s);
    let lo = 0;
    let hi = incoming.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (wordsCmp(incoming[mid]!.p, 0, pos, 0) <= 0) lo = mid + 1;
      else hi = mid;
    }
    return b + inBelow[lo]!;
  };
  const half = total / 2;
  let lo = 0;
  let hi = cands.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (upTo(mid) < half) lo = mid + 1;
    else hi = mid;
  }
  if (lo >= cands.length) return null;
  const slack = keys.nodeSizeBytes / PIVOT_SLACK_DEN;
  if (upTo(lo) - half > slack) return null;
  /* pos holds candidate lo's position (upTo's last call) */
  if (wordsCmp(pos, 0, keys.minKey, 0) < 0 || wordsCmp(pos, 0, keys.maxKey, 0) >= 0) return null;
  return pos;
}

/** splitPivot by walking the node's keys (and the incoming ones) in order up to the middle. */
export function splitPivotByWalk(keys: NodeKeys, incoming: readonly BkeyI[]): Uint32Array | null {
  const total = liveU64sAfter(keys, incoming);
  const it = new NodeIter();
  it.initStart(keys);
  let h = it.peek();
  let i = 0;
  let acc = 0;
  const cur = new Uint32Array(BPOS_WORDS);
  const last = new Uint32Array(BPOS_WORDS);
  let have = false;
  for (;;) {
    while (h >= 0 && keys.keyIsWhiteout(h)) {
      it.advance();
      h = it.peek();
    }
    // the node key's position, unpacked once for both compares
    if (h >= 0) keys.keyPosTo(h, cur, 0);
    const c = h < 0 ? 1 : i < incoming.length ? wordsCmp(cur, 0, incoming[i]!.p, 0) : -1;
    if (c <= 0) {
      const replaced = c === 0 ? incoming[i++]! : null;
      const u64s = replaced ? keys.keyU64sPacked(replaced) : keys.keyU64s(h);
      it.advance();
      h = it.peek();
      if (replaced?.type === KEY_TYPE.deleted) continue;
      acc += u64s;
    } else if (i < incoming.length) {
      const k = incoming[i++]!;
      if (k.type === KEY_TYPE.deleted) continue;
      wordsCopy(cur, 0, k.p, 0);
      acc += keys.keyU64sPacked(k);
    } else break;
    if (wordsCmp(cur, 0, keys.maxKey, 0) >= 0) break;
    wordsCopy(last, 0, cur, 0);
    have = true;
    if (acc * 2 >= total) break;
  }
  return have ? last : null;
}

/**
 * A split for a sequential stream of keys: inserts that all go into one gap
 * of n's keys, right after n's newest key (so the commit before put a key
 * there too: a log, a time series, an id counter per inode). Split in halves,
 * every node such keys fill stays at half of what the split threshold let it
 * reach, and nothing ever goes into it again: measured 37% full with one key
 * per commit, 31% in 4 KiB nodes, 41% with 1,000 keys per commit into
 * 256 KiB nodes. Here (bcachefs splits at 3/5; SQLite's balance_quick and
 * InnoDB's split point for sequential inserts do the like):
 *   - nothing, or little (under a quarter of n's live u64s), after the gap:
 *     split just before the key before the gap; the left node keeps the
 *     rest, as full as n got, and the right one takes the stream, with the
 *     few keys after it riding along (a trailer: left behind alone they
 *     would be a stub that never fills). The right node is never empty (an
 *     empty leaf is merged straight back);
 *   - more after the gap (the stream runs into another range's keys, the
 *     next inode's, say): split just before the first of them; the left node
 *     takes the keys up to the gap and the stream, and keeps taking it (its
 *     range ends right before those keys), so its next split is the first
 *     case.
 * Halves after all when the stream is bounded: the node it goes on in ends
 * in the stream's own inode, before the next key there, with room (at the
 * stream's spacing) for fewer keys than half of n (a gap being filled: split
 * before its last key, the right node would keep the gap's tail, a stub).
 * The split point is one of n's keys or just before one, so the halves are
 * built from n's keys alone. null: halves (one of n's keys among the
 * commit's, deletions in the commit, no key before the gap or that key not
 * the newest, a bounded stream, a split that would leave a side empty).
 */
/** Keys after a stream's gap under 1/STREAM_TRAILER_DEN of the node's live u64s ride along with the stream (streamPivot). */
const STREAM_TRAILER_DEN = 4;

function streamPivot(keys: NodeKeys, incoming: readonly BkeyI[]): Uint32Array | null {
  if (incoming.length === 0) return null;
  for (const k of incoming) if (k.type === KEY_TYPE.deleted) return null;
  const first = incoming[0]!.p;
  const lastIn = incoming[incoming.length - 1]!.p;
  const it = new NodeIter();
  /* a key of n among the incoming ones: not one gap (found by one search, before any walk) */
  it.init(keys, first, 0);
  let h0 = it.peek();
  while (h0 >= 0 && keys.keyIsWhiteout(h0)) {
    it.advance();
    h0 = it.peek();
  }
  if (h0 >= 0 && keys.keyCmpPos(h0, lastIn, 0) <= 0) return null;
  it.initStart(keys);
  /* one walk: the keys before the gap (the last two), the key after it, the u64s each side, and the newest version */
  const beforeLast = new Uint32Array(BPOS_WORDS);
  const last = new Uint32Array(BPOS_WORDS);
  let nBefore = 0;
  let lastVersion = -1;
  let newest = -1;
  let after = -1;
  let u64sBefore = 0;
  let u64sAfter = 0;
  for (let h = it.peek(); h >= 0; it.advance(), h = it.peek()) {
    if (keys.keyIsWhiteout(h)) continue;
    const v = keys.keyVersion(h);
    if (v > newest) newest = v;
    if (after >= 0) {
      u64sAfter += keys.keyU64s(h);
      continue;
    }
    if (keys.keyCmpPos(h, first, 0) < 0) {
      wordsCopy(beforeLast, 0, last, 0);
      keys.keyPosTo(h, last, 0);
      lastVersion = v;
      nBefore++;
      u64sBefore += keys.keyU64s(h);
    } else if (keys.keyCmpPos(h, lastIn, 0) <= 0) {
      return null; // a key of n among the incoming ones: not one gap
    } else {
      after = h;
      u64sAfter += keys.keyU64s(h);
    }
  }
  if (nBefore === 0 || lastVersion < newest) return null;
  /* where the stream can go on: up to the key after the gap, else to n's end */
  const streamEnd = new Uint32Array(BPOS_WORDS);
  if (after >= 0) {
    keys.keyPosTo(after, streamEnd, 0);
    wordsPredecessor(streamEnd, 0);
  } else {
    wordsCopy(streamEnd, 0, keys.maxKey, 0);
  }
  if (streamRoom(last, lastIn, incoming.length, streamEnd) < keys.nrKeys / 2) return null;
  if (after < 0 || u64sAfter * STREAM_TRAILER_DEN < u64sBefore + u64sAfter) return nBefore >= 2 ? beforeLast : null;
  return streamEnd;
}

/**
 * How many more keys fit between the stream's last key and `end`, at the
 * spacing the stream went at from `prev` (its key before this commit) over
 * `nr` keys: Infinity when `end` is in another inode (the stream's own inode
 * has no end in sight).
 */
function streamRoom(prev: Uint32Array, lastIn: Uint32Array, nr: number, end: Uint32Array): number {
  /* positions: inode (words 0-1), offset (2-3), snapshot (4) */
  if (end[0] !== lastIn[0] || end[1] !== lastIn[1]) return Infinity;
  const off = (w: Uint32Array) => w[2]! * 0x1_0000_0000 + w[3]!;
  const sameInode = prev[0] === lastIn[0] && prev[1] === lastIn[1];
  const spacing = sameInode ? Math.max(1, (off(lastIn) - off(prev)) / nr) : 1;
  return (off(end) - off(lastIn)) / spacing;
}

/** Whether every key of `keys` (sorted) lies inside n's range. */
function keysInsideNode(n: Node, keys: readonly BkeyI[]): boolean {
  return wordsCmp(keys[0]!.p, 0, n.keys.minKey, 0) >= 0 && wordsCmp(keys[keys.length - 1]!.p, 0, n.keys.maxKey, 0) <= 0;
}

function liveU64sAfter(keys: NodeKeys, incoming: readonly BkeyI[]): number {
  let live = keys.liveU64s;
  const it = new NodeIter();
  for (const k of incoming) {
    it.init(keys, k.p, 0);
    const h = it.peek();
    if (h >= 0 && !keys.keyIsWhiteout(h) && keys.keyCmpPos(h, k.p, 0) === 0) live -= keys.keyU64s(h);
    if (k.type !== KEY_TYPE.deleted) live += keys.keyU64sPacked(k);
  }
  return Math.max(0, live);
}

/** A leaf without keys, an interior node with one child: always worth merging away. */
export function nodeDegenerate(n: Node): boolean {
  return n.keys.nrKeys <= (n.level === 0 ? 0 : 1);
}

function blockWrites(n: Node): void {
  n.writeBlockedCount++;
  n.set(NodeFlag.write_blocked);
}

function unblockWrites(n: Node): void {
  if (--n.writeBlockedCount <= 0) {
    n.writeBlockedCount = 0;
    n.clear(NodeFlag.write_blocked);
  }
}

function posMin(): Uint32Array {
  return new Uint32Array(BPOS_WORDS);
}

function posMax(): Uint32Array {
  return new Uint32Array(BPOS_WORDS).fill(0xffffffff);
}

