// SPDX-License-Identifier: GPL-2.0-only
/*
 * Types shared between the node cache, iterators and transactions, kept apart
 * so that cache.ts does not import trans.ts (and the other way round).
 */

import type { LockOwner } from './locking.js';
import type { Node } from './node.js';

/** A decoded btree pointer (the value of a btree_ptr key, plus the key's position = child's max key). */
export interface BtreePtr {
  btreeId: number;
  level: number;
  bucket: number;
  /** The child's node seq: the cache's hash value. 52-bit integer. */
  seq: number;
  minKey: Uint32Array;
  maxKey: Uint32Array;
  /** Sectors (512 B) of the child on disk as of the pointer (bkey.ts); 0: not known. */
  sectorsWritten: number;
}

/** Lock types, as numbers for the hot path (six.ts has the table). */
export const LOCK_READ = 0;
export const LOCK_INTENT = 1;
export const LOCK_WRITE = 2;
export type LockType = 0 | 1 | 2;

/**
 * What the cache needs from a transaction (bcachefs struct btree_trans as
 * nodeFill/nodeGet see it).
 */
export interface CacheTrans extends LockOwner {
  /** Drop every node lock (bch2_trans_unlock) keeping the sequence numbers, before I/O or a wait. */
  unlock(): void;
  /** Relock every path by sequence number (bch2_trans_relock): 0, or a restart code from errors.ts. */
  relock(): number;
  /** Take `type` on `node` for this transaction, with deadlock detection (locking.ts nodeLock): 0 or a restart code. */
  lockNode(node: Node, type: LockType): Promise<number>;
  /** Release one hold of `type` on `node`. */
  unlockNode(node: Node, type: LockType): void;
  /**
   * The node whose pointer a traversal follows is still locked (the seed's
   * bch2_btree_node_relock(trans, path, level + 1) in bch2_btree_node_fill):
   * relock() also succeeds when the traversing path lost its locks, since
   * that path only has to walk again, but then its pointer may be stale.
   * True when no traversal is under way.
   */
  parentHeld(): boolean;
  /** A restart this transaction was told to take (deadlock victim), 0 if none. */
  readonly restartPending: number;
  /**
   * Keep the transaction's locks across node reads (default: drop them, as
   * bcachefs does, so a read never blocks writers). Set when dropping them
   * keeps failing: a working set larger than the cache budget is evicted
   * during each read and the transaction would never get all of it at once.
   * Locked nodes cannot be evicted; the cache goes over its budget instead.
   */
  readonly keepLocksForIo?: boolean;
}
