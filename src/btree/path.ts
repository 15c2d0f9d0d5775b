// SPDX-License-Identifier: GPL-2.0-only
/*
 * Paths and traversal (bcachefs btree_path, from the seed's btree_iter.c on
 * the newer transaction model).
 *
 * A path is (btree, pos, level) plus, for each level from `level` up to the
 * root, the node, a node iterator positioned at pos, and the lock held (or the
 * sequence number to relock it by). A path belongs to one transaction.
 *
 * Locks wanted per level (bcachefs btree_lock_want):
 *   level <  path.level                      none
 *   level <  path.locksWant (absolute)       intent
 *   level == path.level                      read
 *   above                                    none after traversal (kept by seq)
 *
 * uptodate state machine:
 *   UPTODATE       every wanted level locked, iterators valid
 *   NEED_RELOCK    locks were dropped (trans.unlock before I/O); relocking by
 *                  sequence numbers makes it UPTODATE again if nothing changed
 *   NEED_TRAVERSE  position moved out of a node, or a relock failed
 *
 * Traverse: go up until a node that (re)locks and contains pos, lock the
 * root if none does (with the seed's race check: the root may change while we
 * wait for its lock), then walk down with nodeGet. nodeGet may drop every
 * lock of the transaction for I/O and relock afterwards; a relock failure of a
 * path whose key was already returned (shouldBeLocked) restarts the
 * transaction (bcachefs should_be_locked).
 *
 * Node changes under a path (the seed's node_iter_fix / node_replace /
 * node_drop / reinit_node): this transaction's own inserts re-search the node
 * iterators of its paths on that node (pathsReinitNode); other transactions
 * see the node's lock seq move and fail their relock, which sends them to
 * NEED_TRAVERSE (or restart when they depended on the node). A node replaced
 * by a split or merge is write-locked and dropped from the hash first, so a
 * path holding it fails its relock and its fast-path pointer fails the
 * hash_val recheck (pathsNodeDrop).
 */

import { ERR } from '../errors.js';
import { BPOS_WORDS, wordsCmp, wordsCopy } from './bpos.js';
import { NodeIter } from './bset.js';
import { KEY_TYPE, btreePtrDecode } from './bkey.js';
import type { Node } from './node.js';
import type { BtreePtr } from './types.js';
import { LOCK_INTENT, LOCK_READ } from './types.js';

export const BTREE_MAX_DEPTH = 8;
/** Paths one transaction may hold at once (bcachefs BTREE_ITER_MAX, 1 << 10): past it, too_many_iters. */
export const PATHS_PER_TRANS_MAX = 1024;

export const UPTODATE = 0;
export const NEED_RELOCK = 1;
export const NEED_TRAVERSE = 2;
const UPTODATE_NAMES = ['uptodate', 'need_relock', 'need_traverse'];

export const UNLOCKED = -1;

export class PathLevel {
  node: Node | null = null;
  private iterLazy: NodeIter | null = null;
  /** The node iterator, made on first use: most levels of most paths are never searched, and a path is made per lookup. */
  get iter(): NodeIter {
    return (this.iterLazy ??= new NodeIter());
  }
  /** Lock seq when we last held the lock: relock succeeds only if it is unchanged. */
  lockSeq = 0;
  /**
   * The node's identity (hashId: unique to one hashing of one Node object) when this level took it. Node objects are
   * reused for other nodes; a lock seq alone does not tell a path that its
   * node became another one if someone refreshes the seq (nodeModified).
   */
  nodeHash = 0;
  /** Lock type held now, or UNLOCKED. */
  held: number = UNLOCKED;
  /** Lock type to take back on relock after trans.unlock(), or UNLOCKED. */
  relockType: number = UNLOCKED;
  /** The node iterator must be re-searched before use (node modified, or pos moved). */
  iterStale = true;

  /** This level now holds `node`, locked `type` (lock seq and identity taken now; iterator to re-search). */
  take(node: Node, type: number): void {
    this.node = node;
    this.held = type;
    this.lockSeq = node.lock.seq;
    this.nodeHash = node.hashId;
    this.iterStale = true;
  }
}

export class BtreePath {
  btreeId = 0;
  readonly pos = new Uint32Array(BPOS_WORDS);
  level = 0;
  /** Levels below this (absolute) are intent locked. 0: read-only path. */
  locksWant = 0;
  uptodate = NEED_TRAVERSE;
  /** A key was returned through this path: its locks must hold until commit. */
  shouldBeLocked = false;
  /** Iterators / updates using this path. */
  ref = 0;
  /**
   * A commit's path: it needs the leaf and its locks, not a position in it,
   * so traversals leave the leaf's iterator unsearched (iterStale; a search
   * there is cache misses in a big leaf, once per leaf per round). getPath
   * clears it when it hands the path to anyone else.
   */
  leafIterLazy = false;
  readonly l: PathLevel[] = [];

  constructor(readonly idx: number) {
    for (let i = 0; i < BTREE_MAX_DEPTH; i++) this.l.push(new PathLevel());
  }

  /** The lock type this path wants at level l (btree_lock_want). */
  lockWant(l: number): number {
    if (l < this.level) return UNLOCKED;
    if (l < this.locksWant) return LOCK_INTENT;
    if (l === this.level) return LOCK_READ;
    return UNLOCKED;
  }

  leaf(): Node | null {
    return this.l[this.level]!.node;
  }

  toText(): string {
    const levels: string[] = [];
    for (let i = this.level; i < BTREE_MAX_DEPTH; i++) {
      const lv = this.l[i]!;
      if (!lv.node) continue;
      levels.push(`L${i}:slot ${lv.node.slot}${lv.held === UNLOCKED ? '' : lv.held === LOCK_READ ? ' r' : ' i'}`);
    }
    return `path ${this.idx} btree ${this.btreeId} level ${this.level} locksWant ${this.locksWant} ${UPTODATE_NAMES[this.uptodate]}${this.shouldBeLocked ? ' should_be_locked' : ''} [${levels.join(' ')}]`;
  }
}

/** Does node n's key range contain pos? (btree_path_pos_in_node) */
export function posInNode(n: Node, pos: Uint32Array): boolean {
  return wordsCmp(pos, 0, n.keys.minKey, 0) >= 0 && wordsCmp(pos, 0, n.keys.maxKey, 0) <= 0;
}

/** pathLevelInit at the path's own level, the end of a traversal: left stale for a commit's path (leafIterLazy). */
export function pathLeafInit(path: BtreePath): void {
  if (path.leafIterLazy) path.l[path.level]!.iterStale = true;
  else if (path.l[path.level]!.iterStale) pathLevelInit(path, path.level);
}

/** Re-search the node iterator of level l at the path's position. */
export function pathLevelInit(path: BtreePath, l: number): void {
  const lv = path.l[l]!;
  lv.iter.init(lv.node!.keys, path.pos, 0);
  lv.iterStale = false;
}

/**
 * The child pointer at level l for the path's position: the first pointer
 * key >= pos (pointer keys sit at their child's max key). Decoded into `out`.
 * Returns the key handle, or -1 if the node has no key covering pos (a
 * topology error the caller reports).
 */
export function pathChildPtr(path: BtreePath, l: number, out: BtreePtr): number {
  const lv = path.l[l]!;
  if (lv.iterStale) pathLevelInit(path, l);
  const keys = lv.node!.keys;
  let h = lv.iter.peek();
  while (h >= 0 && keys.keyType(h) !== KEY_TYPE.btree_ptr) {
    lv.iter.advance();
    h = lv.iter.peek();
  }
  if (h < 0) return -1;
  btreePtrDecode(keys.keyValue(h), out);
  keys.keyPosTo(h, out.maxKey, 0);
  out.btreeId = path.btreeId;
  out.level = l - 1;
  return h;
}

/** Set the path's position; keep what can be kept (bch2_btree_path_set_pos). */
export function pathSetPos(path: BtreePath, pos: Uint32Array, pi = 0): void {
  if (wordsCmp(path.pos, 0, pos, pi) === 0) return;
  wordsCopy(path.pos, 0, pos, pi);
  path.shouldBeLocked = false;
  for (let l = path.level; l < BTREE_MAX_DEPTH; l++) path.l[l]!.iterStale = true;
  const leaf = path.l[path.level]!.node;
  if (!leaf || !posInNode(leaf, path.pos)) {
    if (path.uptodate === UPTODATE) path.uptodate = NEED_TRAVERSE;
  }
}

export const TOPOLOGY_NO_CHILD = ERR.node_read_error;
