// SPDX-License-Identifier: GPL-2.0-only
/*
 * Commit (bcachefs btree_trans_commit / btree_update_leaf).
 *
 *  1. Expand the overlays into concrete keys (overlay.ts): range deletions
 *     become whiteouts of the live keys in range, extent overwrites become the
 *     trimmed/split pieces of the extents they overlap (bch2_trans_update_extent).
 *     Reading here goes through the transaction's paths like any read.
 *  2. Sort the keys by (btree, pos); one intent-locked leaf path per leaf.
 *  3. If leaves lack room: split or rewrite each (interior.ts), then restart the round.
 *     Room is counted as insertKey takes it: a deletion needs a whiteout only
 *     over a live key a written (read-only) set holds.
 *  4. Write locks on the leaves in sorted order: trylock; on contention drop
 *     the write locks taken, wait for that leaf's readers without holding any
 *     write lock, retry (so write locks never wait while held).
 *  5. Re-validate: every path that returned a key must still be locked.
 *  6. Journal reservation (never waited for under a write lock).
 *  7. Apply (synchronous): copy the keys into the reservation and release
 *     it (the entry's write may start now); insert each leaf's run of keys
 *     at once (NodeKeys.insertKeys), mark dirty, pin the journal entry; move
 *     each leaf's merge estimates (sibU64s) by its change of live u64s;
 *     unlock.
 * The caller awaits the entry's durability before transact() resolves, then
 * queues the merge checks the commit asked for: a leaf its deletions left
 * empty, or underfull with a sibling estimate that may fit
 * (Interior.nodeWantsMerge; bcachefs runs bch2_foreground_maybe_merge for
 * every leaf a commit shrank).
 */

import { ERR, SixtreeError } from '../errors.js';
import { countRestart, nodeLockWrite, nodeTryLockWrite, nodeUnlockWrite } from './locking.js';
import { KEY_TYPE, type BkeyI } from './bkey.js';
import { BPOS_WORDS, wordsClone, wordsCmp, wordsCopy, wordsIsMax, wordsSuccessor } from './bpos.js';
import { nodeSibU64sAdd, type Node } from './node.js';
import {
  extentMinus,
  extentOfKey,
  extentPiece,
  xcmp,
  xFromWords,
  xToWords,
  type BtreeOverlay,
} from './overlay.js';
import { EXTENT_SCAN_SKIP_AFTER, extentScanSkip, leafRead } from './iter.js';
import { UPTODATE, pathSetPos, type BtreePath } from './path.js';
import type { BtreeTrans } from './trans.js';
import type { JournalRes } from '../journal/journal.js';
import type { MergeCheckPos } from './interior.js';
import { formatVersionFits, type BkeyFormat } from '../format/bkey-format.js';

export interface Update {
  btreeId: number;
  level: number;
  key: BkeyI;
  path: BtreePath | null;
}

function posKey(btreeId: number, p: Uint32Array): string {
  return `${btreeId}:${p[0]}:${p[1]}:${p[2]}:${p[3]}:${p[4]}`;
}

/* a whiteout has no value: one empty array serves them all (nothing writes into a value) */
const NO_VALUE = new Uint8Array(0);

/** A whiteout at p (a copy of p's words). */
function deletedKey(p: Uint32Array): BkeyI {
  const q = new Uint32Array(BPOS_WORDS);
  wordsCopy(q, 0, p, 0);
  return { type: KEY_TYPE.deleted, p: q, size: 0, version: 0, value: NO_VALUE };
}

/**
 * A normal btree's overlay -> its updates, appended to `out` in position
 * order: each live btree key inside a range deletion becomes a whiteout,
 * merged with the overlay's own keys (which win at their positions: each
 * is newer than every range deletion covering it). The ranges (merged,
 * sorted and disjoint) are read leaf by leaf: one traversal per leaf, then
 * its keys in one synchronous pass under its lock, and the leaf noted in the
 * read set as any read notes it (bcachefs bch2_btree_delete_range_trans
 * peeks key by key; a peek per key here cost a traversal, a re-seek of the
 * leaf and an unpacked key each).
 */
async function overlayExpandKeys(trans: BtreeTrans, btreeId: number, ov: BtreeOverlay, out: Update[]): Promise<void> {
  const tombs = ov.mergedTombstones();
  const keys = ov.keys;
  let ki = 0;
  /* each live key's position, copied into its whiteout */
  const p = new Uint32Array(BPOS_WORDS);
  if (tombs.length) {
    const path = trans.pathNew(btreeId, xToWords(tombs[0]![0]), 0, 0, 0);
    path.ref++;
    try {
      for (let ti = 0; ti < tombs.length; ti++) {
        const cur = xToWords(tombs[ti]![0]);
        const end = xToWords(tombs[ti]![1]);
        for (;;) {
          pathSetPos(path, cur, 0);
          trans.throwIfRestart(await trans.traverse(path));
          const leaf = leafRead(trans, path);
          const it = path.l[0]!.iter;
          let h = it.peek();
          for (; h >= 0 && leaf.keyCmpPos(h, end, 0) < 0; it.advance(), h = it.peek()) {
            if (leaf.keyType(h) === KEY_TYPE.deleted) continue;
            leaf.keyPosTo(h, p, 0);
            while (ki < keys.length && wordsCmp(keys[ki]!.p, 0, p, 0) < 0) out.push({ btreeId, level: 0, key: keys[ki++]!, path: null });
            // the overlay's own key at p replaces the btree's: it goes out in its turn
            if (ki < keys.length && wordsCmp(keys[ki]!.p, 0, p, 0) === 0) continue;
            out.push({ btreeId, level: 0, key: deletedKey(p), path: null });
          }
          // a key at or past the end, or no leaf after this one that could hold keys before it
          if (h >= 0 || wordsCmp(leaf.maxKey, 0, end, 0) >= 0 || wordsIsMax(leaf.maxKey, 0)) break;
          wordsCopy(cur, 0, leaf.maxKey, 0);
          wordsSuccessor(cur, 0);
        }
      }
    } finally {
      path.ref--;
    }
  }
  while (ki < keys.length) out.push({ btreeId, level: 0, key: keys[ki++]!, path: null });
}

/**
 * An extents btree's overlay -> concrete keys (keyed by position in `out`):
 * the extents its ranges overlap are read and replaced by whiteouts and the
 * pieces left outside the ranges (bch2_trans_update_extent), then the
 * overlay's own extents. Read leaf by leaf as overlayExpandKeys does, each
 * extent unpacked (a piece keeps part of its value).
 */
async function overlayExpandExtents(trans: BtreeTrans, btreeId: number, ov: BtreeOverlay, out: Map<string, Update>): Promise<void> {
  const tombs = ov.mergedTombstones();
  const bound = BigInt(trans.extentBoundUse());
  if (tombs.length) {
    const path = trans.pathNew(btreeId, xToWords(tombs[0]![0]), 0, 0, 0);
    path.ref++;
    try {
      for (const [s, t, snapshot] of tombs) {
        // where the walk goes on: keys after `cur` (strict: an extent ending at s does not reach into the range), or at it
        const cur = xToWords(s);
        let strict = true;
        let pastEnd = 0;
        tomb: for (;;) {
          pathSetPos(path, cur, 0);
          trans.throwIfRestart(await trans.traverse(path));
          const leaf = leafRead(trans, path);
          const it = path.l[0]!.iter;
          let h = it.peek();
          if (strict && h >= 0 && leaf.keyCmpPos(h, cur, 0) <= 0) {
            it.advance();
            h = it.peek();
          }
          // the leaf's keys in order, under its lock
          for (; h >= 0; it.advance(), h = it.peek()) {
            if (leaf.keyType(h) === KEY_TYPE.deleted) continue;
            const k = leaf.keyUnpack(h);
            const kp = xFromWords(k.p);
            const e = extentOfKey(k);
            /*
             * Keys sit at their extent's end, so an extent starting before t can
             * come after one starting past it: one of another snapshot ends in
             * between (extents of one snapshot do not overlap). No extent is
             * longer than the store's extent size bound, so none ending more
             * than that past t starts before t: the scan stops there. A write's
             * range (one snapshot) ends sooner, at the first of its snapshot's
             * extents starting at or past t (none of that snapshot after it can
             * start before t); the others are passed over. A delRange's (every
             * snapshot) passes over every extent starting at or past t up to
             * the bound: one of another snapshot may come after them, reaching
             * back over them into the range.
             */
            if (e.inode > t.inode || (e.inode === t.inode && kp.offset > t.offset + bound)) break tomb;
            if (e.inode === t.inode && xcmp({ inode: e.inode, offset: e.start, snapshot: e.snapshot }, t) >= 0) {
              if (e.snapshot === snapshot) break tomb;
              // the rest of this leaf ends no sooner: past its longest key, none reaches back into the range
              const skip = ++pastEnd >= EXTENT_SCAN_SKIP_AFTER ? extentScanSkip(path, e.end, t.offset) : null;
              if (skip) {
                // (skip is this leaf's max key, and not the largest position)
                wordsCopy(cur, 0, skip, 0);
                wordsSuccessor(cur, 0);
                strict = false;
                continue tomb;
              }
              continue;
            }
            const pieces = extentMinus(e, tombs);
            // untouched (another snapshot's extent inside an extent write's range): nothing to rewrite
            if (pieces.length === 1 && pieces[0]![0] === e.start && pieces[0]![1] === e.end) continue;
            out.set(posKey(btreeId, k.p), { btreeId, level: 0, key: deletedKey(k.p), path: null });
            for (const [lo, hi] of pieces) {
              const piece = extentPiece(k, e, lo, hi);
              out.set(posKey(btreeId, piece.p), { btreeId, level: 0, key: piece, path: null });
            }
          }
          // the leaf is done: on in the next one
          if (wordsIsMax(leaf.maxKey, 0)) break;
          wordsCopy(cur, 0, leaf.maxKey, 0);
          wordsSuccessor(cur, 0);
          strict = false;
        }
      }
    } finally {
      path.ref--;
    }
  }
  for (const k of ov.keys) out.set(posKey(btreeId, k.p), { btreeId, level: 0, key: k, path: null });
}

function updateCmp(a: Update, b: Update): number {
  if (a.btreeId !== b.btreeId) return a.btreeId - b.btreeId;
  if (a.level !== b.level) return b.level - a.level;
  return wordsCmp(a.key.p, 0, b.key.p, 0);
}

/**
 * Drop the write locks of leaves[0, count), newest first: the owner's list of
 * holds finds each at its end then (oldest first shifted the list once per
 * leaf: quadratic in the leaves of a big commit).
 */
function unlockLeaves(trans: BtreeTrans, leaves: readonly Node[], count = leaves.length): void {
  for (let i = count - 1; i >= 0; i--) nodeUnlockWrite(trans, leaves[i]!.lock);
}

/** The result of a commit attempt. */
/** Rounds of one commit attempt that may end with nothing gained before it restarts instead. */
export const COMMIT_FRUITLESS_ROUNDS_MAX = 64;

export interface CommitResult {
  /** 0, or a restart code. */
  ret: number;
  /** Journal seq to wait for (0: nothing written). */
  seq: number;
  /** Merge checks for the leaves the commit's deletions left empty or underfull (their positions at commit). */
  shrunk: MergeCheckPos[];
}

/**
 * Commit the transaction's updates, or extra ones given (journal replay and
 * interior updates pass their keys directly; `journal: false` for replay,
 * whose keys are in the journal already and pin their original seqs).
 */
export async function transCommit(
  trans: BtreeTrans,
  extra?: {
    updates: Update[];
    journal: boolean;
    pinSeq?: number;
    /**
     * Checked under the nodes' write locks, right before anything is
     * journaled or changed (each update's node is u.path.l[u.level].node):
     * false ends the commit with nothing done (ret 0, seq 0). Pointer
     * updates (engine.ts) check there that the pointer is still the one
     * they update.
     */
    validate?: (updates: readonly Update[]) => boolean;
    /** The engine's own bookkeeping (pointer updates), not a transaction's: not counted in commits and keysCommitted. */
    internal?: boolean;
  },
): Promise<CommitResult> {
  const engine = trans.engine;
  const none: CommitResult = { ret: 0, seq: 0, shrunk: [] };
  if (trans.restartPending) return { ...none, ret: trans.restartPending };
  if (trans.restartThrown) return { ...none, ret: trans.restartThrown };

  // 0. an extent larger than the store's extent size bound: the bound is
  // raised (a superblock write, locks dropped meanwhile) before anything of
  // this commit can be journaled, so every extent key on disk is within it
  if (!extra) {
    let big = 0;
    for (let id = 0; id < trans.overlays.length; id++) {
      const ov = trans.overlays[id];
      if (ov && ov.extentSizeMax > big) big = ov.extentSizeMax;
    }
    if (big > engine.extentSizeBound) {
      trans.unlock();
      await engine.extentSizeBoundRaise(big);
      const ret = trans.relock();
      if (ret) return { ...none, ret };
    }
  }

  // 1. expand
  let updates: Update[];
  let sorted = false;
  if (extra) updates = extra.updates;
  else if (!trans.overlays.some((ov) => ov !== null && ov.tombstones.length > 0)) {
    // no range to expand: the overlays' keys are the updates, one per
    // position, already in (btree, pos) order
    updates = [];
    for (let id = 0; id < trans.overlays.length; id++) {
      const ov = trans.overlays[id];
      if (!ov) continue;
      // indexed loops on the per-key paths here: a for-of in this async function allocates its iterator results
      const keys = ov.keys;
      for (let i = 0; i < keys.length; i++) updates.push({ btreeId: id, level: 0, key: keys[i]!, path: null });
    }
    sorted = true;
  } else {
    // each overlay's updates come out sorted: the btrees in order make them all so
    updates = [];
    for (let id = 0; id < trans.overlays.length; id++) {
      const ov = trans.overlays[id];
      if (!ov || ov.empty) continue;
      if (!ov.extents) {
        await overlayExpandKeys(trans, id, ov, updates);
        continue;
      }
      const map = new Map<string, Update>();
      await overlayExpandExtents(trans, id, ov, map);
      const part = [...map.values()].sort(updateCmp);
      for (let i = 0; i < part.length; i++) updates.push(part[i]!);
    }
    sorted = true;
  }
  if (updates.length === 0) {
    // read-only: what we read must still hold
    return { ...none, ret: trans.readsValidate() };
  }
  if (!sorted) updates.sort(updateCmp);
  // A key's version is the journal seq it is committed at, and whether it
  // packs into a node's format depends on it: the room is counted with the
  // version the key will carry. Without a journal entry (replay, internal
  // updates) that is pinSeq, known now. A journaled commit learns its seq
  // only at its reservation: step 7 checks that seq against the formats the
  // room was counted in. (Replay gives a group of pointer keys the oldest seq
  // among them; counted with their own, a key below a level-1 node's version
  // base was counted packed and inserted unpacked: "keys did not fit ...
  // after the space check" at open, found by the kill -9 test.)
  if (extra && !extra.journal && extra.pinSeq !== undefined) for (let i = 0; i < updates.length; i++) updates[i]!.key.version = extra.pinSeq;

  let splits = 0;
  let staleRounds = 0;
  // rounds that ended with nothing gained (paths lost again, room lost under
  // the write locks): past the bound the transaction restarts, which counts
  // toward the starvation gate; looping here, it never would (a writer under
  // a transaction larger than the cache looped 10,000 rounds in one test run)
  let fruitless = 0;
  const giveUp = (): CommitResult => {
    trans.unlock();
    engine.counters.commitRoundsGivenUp++;
    return { ...none, ret: countRestart(ERR.transaction_restart_relock_path) };
  };
  round: for (let round = 0; ; round++) {
    if (round > 10_000) throw new Error(`commit: too many retries (${splits} splits)`);
    // (round first: reading process.env costs a microsecond or more, on every commit)
    if (round > 20 && process.env.SIXTREE_DEBUG) console.error(`commit round ${round} splits ${splits}`);
    // paths left behind by the last round (replaced leaves) are no one's
    if (round > 0) trans.pathsGc();
    // 2. paths: one intent path per leaf
    let prev: Update | null = null;
    const findPath = trans.pathFinder();
    for (let i = 0; i < updates.length; i++) {
      const u = updates[i]!;
      const n = prev?.path?.l[u.level]?.node;
      if (prev && prev.btreeId === u.btreeId && prev.level === u.level && n && prev.path!.uptodate === UPTODATE && wordsCmp(u.key.p, 0, n.keys.maxKey, 0) <= 0 && wordsCmp(u.key.p, 0, n.keys.minKey, 0) >= 0) {
        u.path = prev.path;
      } else {
        u.path = findPath(u.btreeId, u.key.p, 0, u.level, u.level + 1);
        u.path.leafIterLazy = true;
        const ret = await trans.traverse(u.path);
        if (ret) return { ...none, ret };
      }
      prev = u;
    }
    // traversals may have dropped locks for I/O: make sure every path still holds
    // (a commit that keeps losing paths this way - its leaves do not fit in
    // the cache together - keeps its locks across reads from then on)
    if (staleRounds >= 2) trans.keepLocksForIo = true;
    let stale = false;
    for (let i = 0; i < updates.length; i++) {
      const u = updates[i]!;
      if (u.path!.uptodate !== UPTODATE) {
        const ret = await trans.traverse(u.path!);
        if (ret) return { ...none, ret };
        stale = true;
      }
    }
    if (stale) {
      staleRounds++;
      if (++fruitless > COMMIT_FRUITLESS_ROUNDS_MAX) return giveUp();
      continue;
    }

    // 3. room in each leaf. The updates are sorted and each leaf holds a
    // range, so each leaf's updates are one run: runEnd[l] ends leaf l's.
    const leaves: Node[] = [];
    const runEnd: number[] = [];
    const need: number[] = [];
    // each key's u64s, and the format they were counted in: the check under
    // the write locks below recounts only deletions (what they need depends
    // on the node's sets; any other key's on the format alone)
    const u64sOf = new Int32Array(updates.length);
    const formatOf: BkeyFormat[] = [];
    for (let i = 0; i < updates.length; i++) {
      const u = updates[i]!;
      const n = u.path!.l[u.level]!.node!;
      if (leaves.length === 0 || leaves[leaves.length - 1] !== n) {
        if (leaves.length > 0) {
          // a leaf in two runs would be write-locked twice below (a self-deadlock)
          const prev = leaves[leaves.length - 1]!;
          if (prev.btreeId === n.btreeId && prev.level === n.level && wordsCmp(n.keys.minKey, 0, prev.keys.maxKey, 0) <= 0) {
            throw new SixtreeError('ERR_TOPOLOGY', `internal: commit's leaves out of order in btree ${engine.btrees[n.btreeId]!.name} level ${n.level}`);
          }
          runEnd.push(i);
        }
        leaves.push(n);
        formatOf.push(n.keys.format);
        need.push(0);
      }
      u64sOf[i] = n.keys.insertU64s(u.key);
      need[leaves.length - 1] += u64sOf[i]!;
    }
    runEnd.push(updates.length);
    // every leaf short of room is split (or rewritten) before the round
    // starts over: a round costs a walk to every leaf and a recount of every
    // key (a commit of 1,000 random keys splitting three leaves paid four
    // rounds). splitForInsert walks its path again, so a leaf whose path an
    // earlier split made stale (their parent changed) is split all the same;
    // one that has room by then is left alone.
    let splitHere = false;
    for (let l = 0; l < leaves.length; l++) {
      const n = leaves[l]!;
      if (need[l]! > n.keys.u64sRemaining()) {
        const from = l === 0 ? 0 : runEnd[l - 1]!;
        const u = updates[from]!;
        const mine: BkeyI[] = [];
        for (let i = from; i < runEnd[l]!; i++) mine.push(updates[i]!.key);
        // journal replay restores what the tree held before the crash: its
        // splits may take the buckets held back from growth (alloc.ts), so a
        // store that crashed full still opens
        const ret = await engine.interior.splitForInsert(trans, u.path!, u.level, need[l]!, mine, { noGrowth: extra?.journal === false });
        if (ret) return { ...none, ret };
        splits++;
        splitHere = true;
      }
    }
    if (splitHere) {
      engine.counters.commitSplitRounds++;
      continue round;
    }

    // 4. write locks, in sorted order. Waiting for a leaf's readers while
    // holding the write locks of earlier leaves is covered by the cycle check
    // (a reader waiting on one of those is a cycle; the youngest restarts);
    // nothing is modified until all are held, and nothing awaits after.
    for (let i = 0; i < leaves.length; i++) {
      const n = leaves[i]!;
      if (nodeTryLockWrite(trans, n.lock)) continue;
      engine.counters.commitWriteLockWaits++;
      const ret = await nodeLockWrite(trans, n.lock);
      if (ret) {
        unlockLeaves(trans, leaves, i);
        return { ...none, ret };
      }
    }

    // the space check ran before the write locks: a writeback may have sealed
    // a leaf's bset since (less room, and deleting the keys it held now takes
    // whiteouts). Check again now that nothing can change.
    let roomLost = false;
    for (let l = 0, i = 0; l < leaves.length; l++) {
      const n = leaves[l]!;
      engine.nodeCompactPending(n);
      const same = formatOf[l] === n.keys.format;
      let room = 0;
      for (; i < runEnd[l]!; i++) {
        const k = updates[i]!.key;
        room += same && k.type !== KEY_TYPE.deleted ? u64sOf[i]! : n.keys.insertU64s(k);
      }
      if (room > n.keys.u64sRemaining()) roomLost = true;
    }
    if (roomLost) {
      unlockLeaves(trans, leaves);
      engine.counters.commitRoomLost++;
      if (++fruitless > COMMIT_FRUITLESS_ROUNDS_MAX) return giveUp();
      continue round;
    }

    // 5. re-validate what we read: paths still locked, and every leaf read
    // (also by the range expansion above) unchanged since
    let ret = trans.relock();
    if (!ret && !trans.readSetValid()) ret = countRestart(ERR.transaction_restart_relock_path);
    if (!ret) ret = trans.extentBoundValidate();
    if (ret) {
      unlockLeaves(trans, leaves);
      return { ...none, ret };
    }
    if (extra?.validate && !extra.validate(updates)) {
      unlockLeaves(trans, leaves);
      return none;
    }

    // 6. journal reservation
    const journal = extra ? extra.journal : true;
    let res: JournalRes | null = null;
    if (journal) {
      const bytes = engine.journalKeysBytes(updates);
      res = engine.journalTryReserve(bytes, updates.length);
      if (!res) {
        unlockLeaves(trans, leaves);
        trans.unlock();
        // A transaction holding interior updates open (its update groups)
        // waits without reclaim first; if only reclaim can make room, it
        // completes them before waiting again: a full ring is freed by writing
        // nodes they keep write_blocked.
        const groupsOpen = (trans.txCtx?.groups.size ?? 0) > 0;
        if (!(await engine.journalReserveWait(bytes, updates.length, !groupsOpen))) {
          engine.counters.commitGroupsClosedForJournal++;
          trans.txCtx.finish();
          await engine.journalReserveWait(bytes, updates.length);
        }
        ret = trans.relock();
        if (ret) return { ...none, ret };
        continue;
      }
    }

    // 7. apply: no await from here to the unlock. The keys go into the
    // journal entry first: if that fails, no node has changed. The
    // reservation is released at once, so the entry's write can start
    // (submitted synchronously) while the leaves take the keys: the entry
    // holds a pin on itself until durable, so its last_seq covers these keys
    // whether or not the leaves have pinned them yet, and nobody sees the
    // leaves before we unlock them.
    const seq = res ? res.seq : extra!.pinSeq!;
    for (let i = 0; i < updates.length; i++) updates[i]!.key.version = seq;
    if (res && !versionsStillFit(leaves, runEnd, updates, seq)) {
      // a leaf's format cannot pack this seq (its version field's headroom is
      // used up): keys counted packed take more room; count again next round
      engine.journalRelease(res);
      unlockLeaves(trans, leaves);
      engine.counters.commitRoomLost++;
      if (++fruitless > COMMIT_FRUITLESS_ROUNDS_MAX) return giveUp();
      continue round;
    }
    if (res) {
      try {
        engine.journalAddKeys(res, updates);
      } catch (e) {
        engine.journalRelease(res);
        unlockLeaves(trans, leaves);
        throw e;
      }
      engine.journalRelease(res);
    }
    // a post-write merge left pending (the writer could not lock) happens now, under our write locks
    for (const n of leaves) engine.nodeCompactPending(n);
    const liveBefore = leaves.map((n) => n.keys.liveU64s);
    const deletedFrom = new Set<Node>();
    // each leaf's keys are one run of the sorted updates: inserted together
    const keys = updates.map((u) => u.key);
    for (let l = 0, i = 0; l < leaves.length; l++) {
      const n = leaves[l]!;
      const j = runEnd[l]!;
      let deletes = false;
      for (let x = i; x < j; x++) if (keys[x]!.type === KEY_TYPE.deleted) deletes = true;
      if (!n.keys.insertKeys(keys, i, j)) {
        // cannot happen (room checked under the write locks); never leave them held
        unlockLeaves(trans, leaves);
        throw new SixtreeError('ERR_TOPOLOGY', `internal: keys did not fit in btree ${engine.btrees[updates[i]!.btreeId]!.name} level ${updates[i]!.level} after the space check`);
      }
      engine.nodeDirtied(n, seq);
      if (deletes) deletedFrom.add(n);
      i = j;
    }
    const shrunk: MergeCheckPos[] = [];
    for (let i = 0; i < leaves.length; i++) {
      const n = leaves[i]!;
      const delta = n.keys.liveU64s - liveBefore[i]!;
      if (delta !== 0) nodeSibU64sAdd(n, delta);
      if ((delta < 0 || deletedFrom.has(n)) && engine.interior.nodeWantsMerge(n)) {
        shrunk.push({ btreeId: n.btreeId, level: n.level, pos: wordsClone(n.keys.minKey) });
      }
    }
    unlockLeaves(trans, leaves);
    trans.nodesModified(leaves);
    if (!extra?.internal) {
      engine.counters.commits++;
      engine.counters.keysCommitted += updates.length;
    }
    return { ret: 0, seq: res ? res.seq : 0, shrunk };
  }
}

/**
 * After a journaled commit's keys took their seq as version: does each leaf
 * still have room for them? Only a leaf whose format cannot pack `seq` can
 * need more than was counted (a key fits its format when its position, size
 * and version do; the version is the only field that changed), and only
 * then are its keys counted again.
 */
function versionsStillFit(leaves: readonly Node[], runEnd: readonly number[], updates: readonly Update[], seq: number): boolean {
  for (let l = 0, i = 0; l < leaves.length; l++) {
    const keys = leaves[l]!.keys;
    const j = runEnd[l]!;
    if (!formatVersionFits(keys.format, seq)) {
      let room = 0;
      for (let x = i; x < j; x++) room += keys.insertU64s(updates[x]!.key);
      if (room > keys.u64sRemaining()) return false;
    }
    i = j;
  }
  return true;
}
