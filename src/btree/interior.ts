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
 *        roots are the written ones); pin that entry on the parent; clear
 *        write_blocked;
 *     3. once that entry is durable: drop the pins taken from the old nodes,
 *        give the old buckets back to the allocator.
 *   Recovery replays pointer keys (higher levels first) before leaf keys, so a
 *   crash anywhere leaves a tree that reaches only written nodes.
 */

import { ERR, SixtreeError } from '../errors.js';
import { countRestart, nodeLockWrite, nodeUnlockWrite } from './locking.js';
import { KEY_TYPE, bkeyBtreePtr, bkeyWhiteout, type BkeyI } from './bkey.js';
import { BPOS_WORDS, wordsCmp, wordsCopy, wordsIsMax, wordsIsMin, wordsPredecessor, wordsSuccessor } from './bpos.js';
import { NodeFlag, type Node } from './node.js';
import { type BtreePath, NEED_TRAVERSE } from './path.js';
import type { BtreeTrans } from './trans.js';
import type { Engine } from '../engine.js';
import type { BtreePtr } from './types.js';
import type { JournalPin } from '../journal/reclaim.js';

/** Split when live keys pass this fraction of the node (else compact into a new bucket). */
export const SPLIT_THRESHOLD_NUM = 3;
export const SPLIT_THRESHOLD_DEN = 4;
/** Merge two siblings when together they stay under this fraction (bcachefs: 1/3, with hysteresis). */
export const MERGE_THRESHOLD_NUM = 1;
export const MERGE_THRESHOLD_DEN = 3;
/** Hysteresis: merged node must stay under threshold minus this fraction of a node. */
export const MERGE_HYSTERESIS_DEN = 8;

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

export class BtreeUpdate {
  readonly id = updateIdNext++;
  readonly newNodes: Node[] = [];
  readonly oldNodes: Node[] = [];
  /** Pointer keys to journal at parentLevel (inserts and whiteouts). */
  readonly parentKeys: BkeyI[] = [];
  parent: Node | null = null;
  parentLevel = 0;
  newRoot: Node | null = null;
  readonly pins: JournalPin[] = [];
  state: 'in_memory' | 'writing' | 'journaled' | 'done' | 'failed' = 'in_memory';

  constructor(
    readonly btreeId: number,
    readonly kind: 'split' | 'rewrite' | 'merge' | 'new_root' | 'collapse',
  ) {}

  toText(): string {
    return `update ${this.id} ${this.kind} btree ${this.btreeId} ${this.state}: new [${this.newNodes.map((n) => n.bucket).join(',')}] old [${this.oldNodes.map((n) => n.bucket).join(',')}]`;
  }
}

export class Interior {
  readonly locks: InteriorLock[];
  /** Updates whose completion is under way, oldest first. */
  readonly pending: BtreeUpdate[] = [];
  readonly counters = { splits: 0, rewrites: 0, merges: 0, newRoots: 0, collapses: 0, updatesFailed: 0 };
  /** Set when an update could not complete (device error): further updates refuse. */
  failed: Error | null = null;

  constructor(readonly engine: Engine) {
    this.locks = engine.btrees.map(() => new InteriorLock());
  }

  /** Take the btree's interior lock for this transaction; 0 or a restart code. */
  private async lockInterior(trans: BtreeTrans, btreeId: number): Promise<number> {
    const lock = this.locks[btreeId]!;
    if (lock.tryAcquire()) return 0;
    trans.unlock();
    await lock.acquire();
    const ret = trans.relock();
    if (ret) {
      lock.release();
      return ret;
    }
    return 0;
  }

  /**
   * The leaf (or interior node) at path level `level` lacks room for `u64s`:
   * split it, or rewrite it compacted. Returns 0 (the caller restarts its
   * commit) or a restart code.
   */
  async splitForInsert(trans: BtreeTrans, path: BtreePath, level: number, u64s: number): Promise<number> {
    if (this.failed) throw this.failed;
    let ret = await this.lockInterior(trans, path.btreeId);
    if (ret) return ret;
    let handedOff = false;
    try {
      // intent on the node and its parent
      if (path.locksWant < level + 2) {
        path.locksWant = level + 2;
        path.uptodate = NEED_TRAVERSE;
      }
      ret = await trans.traverse(path);
      if (ret) return ret;
      const n = path.l[level]!.node!;
      // someone else split it meanwhile?
      if (u64s <= n.keys.u64sRemaining()) return 0;
      const parent = level + 1 < path.l.length ? path.l[level + 1]!.node : null;
      const isRoot = this.engine.roots[path.btreeId]!.node === n;
      if (!isRoot && !parent) throw new Error('interior: non-root node without parent on path');

      const live = n.keys.liveU64s;
      const nodeU64s = this.engine.nodeSizeBytes / 8;
      const split = live * SPLIT_THRESHOLD_DEN > nodeU64s * SPLIT_THRESHOLD_NUM || live + u64s > (nodeU64s * SPLIT_THRESHOLD_NUM) / SPLIT_THRESHOLD_DEN;

      // the parent needs room for one more pointer (split) or a replaced one
      if (!isRoot && parent!.keys.u64sRemaining() < 2 * this.engine.ptrKeyU64s) {
        this.locks[path.btreeId]!.release();
        handedOff = true; // released above
        const pret = await this.splitForInsert(trans, path, level + 1, 2 * this.engine.ptrKeyU64s);
        return pret || countRestart(ERR.transaction_restart_split_race);
      }

      const upd = new BtreeUpdate(path.btreeId, split ? 'split' : 'rewrite');
      // new nodes
      const nrNew = split ? 2 : 1;
      const news: Node[] = [];
      for (let i = 0; i < nrNew; i++) news.push(await this.engine.nodeAllocNew(trans, path.btreeId, level));
      let newRoot: Node | null = null;
      if (isRoot && split) newRoot = await this.engine.nodeAllocNew(trans, path.btreeId, level + 1);

      // relock after possible waits in allocation
      ret = trans.relock();
      if (ret || path.l[level]!.node !== n || n.hashVal === 0) {
        for (const m of news) this.engine.nodeFreeNew(m);
        if (newRoot) this.engine.nodeFreeNew(newRoot);
        return ret || countRestart(ERR.transaction_restart_split_race);
      }

      // fill the new nodes from n
      if (split) {
        const pivot = new Uint32Array(BPOS_WORDS);
        n.keys.liveKeysMedian(pivot);
        const right = new Uint32Array(BPOS_WORDS);
        wordsCopy(right, 0, pivot, 0);
        if (!wordsSuccessor(right, 0) || wordsCmp(pivot, 0, n.keys.maxKey, 0) >= 0) throw new Error('interior: bad split pivot');
        this.engine.nodeBuildFrom(news[0]!, n, n.keys.minKey, pivot);
        this.engine.nodeBuildFrom(news[1]!, n, right, n.keys.maxKey);
      } else {
        this.engine.nodeBuildFrom(news[0]!, n, n.keys.minKey, n.keys.maxKey);
      }

      // write locks for the swap: n, and the parent
      ret = await nodeLockWrite(trans, n.lock);
      if (ret) {
        for (const m of news) this.engine.nodeFreeNew(m);
        if (newRoot) this.engine.nodeFreeNew(newRoot);
        return ret;
      }
      if (parent) {
        ret = await nodeLockWrite(trans, parent.lock);
        if (ret) {
          nodeUnlockWrite(trans, n.lock);
          for (const m of news) this.engine.nodeFreeNew(m);
          if (newRoot) this.engine.nodeFreeNew(newRoot);
          return ret;
        }
      }
      // ---- synchronous from here ----
      upd.newNodes.push(...news);
      upd.oldNodes.push(n);
      if (newRoot) {
        for (const m of news) this.engine.nodeInsertPtr(newRoot, m, 0);
        upd.newNodes.push(newRoot);
        upd.newRoot = newRoot;
        this.counters.newRoots++;
      } else if (isRoot) {
        upd.newRoot = news[0]!;
      } else {
        upd.parent = parent;
        upd.parentLevel = level + 1;
        for (const m of news) {
          const k = this.engine.ptrKeyFor(m);
          upd.parentKeys.push(k);
          this.engine.nodeInsertKeyInMemory(parent!, k);
        }
        parent!.set(NodeFlag.write_blocked);
        parent!.updateRef = upd;
        this.engine.nodeDirtied(parent!, 0);
      }
      this.swapOut(trans, upd, n);
      if (upd.newRoot) this.engine.setRoot(path.btreeId, upd.newRoot);
      if (parent) {
        nodeUnlockWrite(trans, parent.lock);
        trans.nodeModified(parent);
      }
      nodeUnlockWrite(trans, n.lock);
      trans.nodeDropped(n);
      this.engine.nodeFreeOld(n);
      if (split) this.counters.splits++;
      else this.counters.rewrites++;
      // ---- completion runs on, holding the interior lock until journaled ----
      handedOff = true;
      this.complete(upd);
      return 0;
    } finally {
      if (!handedOff) this.locks[path.btreeId]!.release();
    }
  }

  /** Old node leaves the tree: unhash, take its pins, mark dying. */
  private swapOut(trans: BtreeTrans, upd: BtreeUpdate, n: Node): void {
    this.engine.cache.hashRemove(n);
    n.set(NodeFlag.dying);
    if (n.journalPin) {
      upd.pins.push(n.journalPin);
      n.journalPin = null;
    }
    this.engine.nodeCleanForDrop(n);
    void trans;
  }

  /**
   * Foreground merge (bcachefs btree_foreground_maybe_merge): if node n (level
   * `level`, reached at pos) and a sibling fit together under the threshold,
   * replace both by one new node. Best effort: returns 0 or a restart code.
   */
  async maybeMerge(trans: BtreeTrans, btreeId: number, level: number, pos: Uint32Array): Promise<number> {
    if (this.failed) return 0;
    const nodeU64s = this.engine.nodeSizeBytes / 8;
    const threshold = (nodeU64s * MERGE_THRESHOLD_NUM) / MERGE_THRESHOLD_DEN;
    let ret = await this.lockInterior(trans, btreeId);
    if (ret) return ret;
    let handedOff = false;
    try {
      const path = trans.pathNew(btreeId, pos, 0, level, level + 2);
      ret = await trans.traverse(path);
      if (ret) return ret;
      const n = path.l[level]!.node!;
      const parent = path.l[level + 1]?.node ?? null;
      if (!parent) return this.collapseHandoff(trans, btreeId, () => (handedOff = true));
      if (n.keys.liveU64s >= threshold) return 0;
      // sibling: next if n is not the parent's last child, else prev
      const sibPos = new Uint32Array(BPOS_WORDS);
      let right: boolean;
      if (!wordsIsMax(n.keys.maxKey, 0) && wordsCmp(n.keys.maxKey, 0, parent.keys.maxKey, 0) < 0) {
        wordsCopy(sibPos, 0, n.keys.maxKey, 0);
        wordsSuccessor(sibPos, 0);
        right = true;
      } else if (!wordsIsMin(n.keys.minKey, 0) && wordsCmp(n.keys.minKey, 0, parent.keys.minKey, 0) > 0) {
        wordsCopy(sibPos, 0, n.keys.minKey, 0);
        wordsPredecessor(sibPos, 0);
        right = false;
      } else return this.collapseHandoff(trans, btreeId, () => (handedOff = true));
      const sibPath = trans.pathNew(btreeId, sibPos, 0, level, level + 1);
      ret = await trans.traverse(sibPath);
      if (ret) return ret;
      ret = trans.relock();
      if (ret) return ret;
      const sib = sibPath.l[level]!.node!;
      if (path.l[level]!.node !== n || path.l[level + 1]!.node !== parent || sibPath.l[level + 1]!.node !== parent) return 0;
      if (n.keys.liveU64s + sib.keys.liveU64s > threshold - nodeU64s / MERGE_HYSTERESIS_DEN) return 0;
      const left = right ? n : sib;
      const rightNode = right ? sib : n;

      const m = await this.engine.nodeAllocNew(trans, btreeId, level);
      ret = trans.relock();
      if (ret || n.hashVal === 0 || sib.hashVal === 0) {
        this.engine.nodeFreeNew(m);
        return ret;
      }
      this.engine.nodeBuildFrom2(m, left, rightNode);
      for (const x of [left, rightNode, parent]) {
        ret = await nodeLockWrite(trans, x.lock);
        if (ret) {
          for (const y of [left, rightNode, parent]) {
            if (y === x) break;
            nodeUnlockWrite(trans, y.lock);
          }
          this.engine.nodeFreeNew(m);
          return ret;
        }
      }
      // ---- synchronous ----
      const upd = new BtreeUpdate(btreeId, 'merge');
      upd.newNodes.push(m);
      upd.oldNodes.push(left, rightNode);
      upd.parent = parent;
      upd.parentLevel = level + 1;
      const wo = bkeyWhiteout(copyWords(left.keys.maxKey));
      const pk = this.engine.ptrKeyFor(m);
      upd.parentKeys.push(wo, pk);
      this.engine.nodeInsertKeyInMemory(parent, wo);
      this.engine.nodeInsertKeyInMemory(parent, pk);
      parent.set(NodeFlag.write_blocked);
      parent.updateRef = upd;
      this.engine.nodeDirtied(parent, 0);
      this.swapOut(trans, upd, left);
      this.swapOut(trans, upd, rightNode);
      nodeUnlockWrite(trans, parent.lock);
      trans.nodeModified(parent);
      nodeUnlockWrite(trans, rightNode.lock);
      nodeUnlockWrite(trans, left.lock);
      trans.nodeDropped(left);
      trans.nodeDropped(rightNode);
      this.engine.nodeFreeOld(left);
      this.engine.nodeFreeOld(rightNode);
      this.counters.merges++;
      handedOff = true;
      this.complete(upd);
      return 0;
    } finally {
      if (!handedOff) this.locks[btreeId]!.release();
    }
  }

  private async collapseHandoff(trans: BtreeTrans, btreeId: number, handOff: () => void): Promise<number> {
    const r = await this.maybeCollapseRoot(trans, btreeId);
    if (r === -1) {
      handOff();
      return 0;
    }
    return r;
  }

  /** A root above level 0 with one child: the child becomes the root. Called with the interior lock held. */
  private async maybeCollapseRoot(trans: BtreeTrans, btreeId: number): Promise<number> {
    const root = this.engine.roots[btreeId]!.node!;
    if (root.level === 0 || root.keys.nrKeys !== 1) return 0;
    const path = trans.pathNew(btreeId, root.keys.minKey, 0, root.level - 1, root.level + 1);
    let ret = await trans.traverse(path);
    if (ret) return ret;
    const child = path.l[root.level - 1]!.node!;
    if (this.engine.roots[btreeId]!.node !== root || root.keys.nrKeys !== 1) return 0;
    ret = await nodeLockWrite(trans, root.lock);
    if (ret) return ret;
    const upd = new BtreeUpdate(btreeId, 'collapse');
    upd.oldNodes.push(root);
    upd.newRoot = child;
    this.swapOut(trans, upd, root);
    this.engine.setRoot(btreeId, child);
    nodeUnlockWrite(trans, root.lock);
    trans.nodeDropped(root);
    this.engine.nodeFreeOld(root);
    this.counters.collapses++;
    // hand the interior lock to the completion
    this.complete(upd);
    return -1; // tells maybeMerge's finally the lock is handed off
  }

  /** Ordered completion: write new nodes, journal pointers + roots, free old buckets once durable. */
  private complete(upd: BtreeUpdate): void {
    this.pending.push(upd);
    upd.state = 'writing';
    const run = async () => {
      try {
        await Promise.all(upd.newNodes.map((m) => this.engine.nodeWriteNew(m)));
        const seq = await this.engine.journalInteriorUpdate(upd);
        upd.state = 'journaled';
        if (upd.parent) {
          upd.parent.clear(NodeFlag.write_blocked);
          upd.parent.updateRef = null;
          this.engine.nodeDirtied(upd.parent, seq);
        }
        this.locks[upd.btreeId]!.release();
        await this.engine.journal.waitDurable(seq);
        for (const pin of upd.pins) this.engine.journal.pinDrop(pin);
        for (const n of upd.oldNodes) this.engine.bucketFreeAfter(n.bucket, seq);
        upd.state = 'done';
      } catch (e) {
        upd.state = 'failed';
        this.counters.updatesFailed++;
        this.failed = e instanceof Error ? e : new Error(String(e));
        if (this.locks[upd.btreeId]!.isHeld) this.locks[upd.btreeId]!.release();
      } finally {
        const i = this.pending.indexOf(upd);
        if (i >= 0) this.pending.splice(i, 1);
        this.engine.updateFinished();
      }
    };
    void run();
  }

  /** Wait until every update under way has completed (flush/close). */
  async drain(): Promise<void> {
    while (this.pending.length) await new Promise<void>((r) => this.engine.onUpdateFinished(r));
    if (this.failed) throw this.failed;
  }
}

function copyWords(w: Uint32Array): Uint32Array {
  const c = new Uint32Array(BPOS_WORDS);
  wordsCopy(c, 0, w, 0);
  return c;
}

export type { BtreePtr, BkeyI };
export { KEY_TYPE, bkeyBtreePtr, SixtreeError };
