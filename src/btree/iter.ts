// SPDX-License-Identifier: GPL-2.0-only
/*
 * Iterators (the seed's btree_iter peek/next/prev/slots/extents/node walk).
 *
 * Two layers:
 *  - btreePeek / btreePeekPrev: live keys of the btree itself, through a path
 *    at level 0, crossing leaf boundaries both ways, whiteouts skipped.
 *  - Iter (public): merges the btree with the transaction's own pending
 *    updates (overlay.ts) and implements the API's peek/next/prev, slots mode
 *    (holes), extents mode (keys at their end position; an extent may
 *    straddle pos) and node walks (peekNode/nextNode). With extents of
 *    several snapshots in one inode, keys interleave (one snapshot's
 *    extent can come after another's lying inside it): walks go in key
 *    order both ways (Iter.prev), and pieces cut by pending updates are
 *    looked for beyond the first key (MergedView.peek).
 * And LookupNowait: store.get's point read without a transaction, one
 * synchronous root-to-leaf walk under read trylocks (see the class).
 *
 * Every value handed out is a copy: node buffers are reused by the cache.
 * A key returned marks its path shouldBeLocked (transaction consistency).
 */

import {
  BPOS_WORDS,
  POS_MIN,
  U32_MAX,
  U64_MAX,
  type Bpos,
  bposToWords,
  posWords,
  toBpos,
  wordsClone,
  wordsCmp,
  wordsCopy,
  wordsIsMax,
  wordsIsMin,
  wordsPredecessor,
  wordsSuccessor,
  wordsToBpos } from './bpos.js';
import { KEY_TYPE, type BkeyI } from './bkey.js';
import {
  ANY_SNAPSHOT,
  EXTENT_VALUE_HEADER_BYTES,
  extentMinus,
  extentOfKey,
  extentValueOffset,
  xcmp,
  xFromWords,
  type BtreeOverlay,
  type XPos } from './overlay.js';
import { BtreePath, pathLevelInit, pathSetPos } from './path.js';
import type { BtreeTrans } from './trans.js';
import { NodeIter, type NodeKeys } from './bset.js';
import type { BtreeCache, ReadNowait } from './cache.js';
import { LockOwnerBase, nodeTryLock, nodeUnlock } from './locking.js';
import { NodeFlag, type Node } from './node.js';
import { LOCK_READ, type BtreePtr } from './types.js';
import { SixLockType } from '../util/six.js';

export interface Entry {
  pos: Bpos;
  value: Uint8Array;
  start?: Bpos;
  size?: bigint;
  valueOffset?: bigint;
}

export interface Hole {
  hole: true;
  pos: Bpos;
  start?: Bpos;
  size?: bigint;
}

export interface NodeInfo {
  level: number;
  minKey: Bpos;
  maxKey: Bpos;
  keys: number;
  bytes: number;
}

/** Largest extent size a key holds (bcachefs KEY_SIZE_MAX: u32). */
export const KEY_SIZE_MAX = U32_MAX;

/* ------------------------------------------------------------------------
 * Btree level: live keys through a path.
 */

function isLive(type: number): boolean {
  return type !== KEY_TYPE.deleted;
}

/**
 * The leaf a just traversed path (at level 0) stands on, its iterator
 * (path.l[0].iter) searched again from the path's position (an earlier call
 * at the same position may have moved it: pathSetPos keeps it), and the leaf
 * noted as read: marked shouldBeLocked and put in the transaction's read set.
 */
export function leafRead(trans: BtreeTrans, path: BtreePath): NodeKeys {
  pathLevelInit(path, 0);
  path.shouldBeLocked = true;
  trans.readNoted(path);
  return path.l[0]!.node!.keys;
}

/**
 * First live key at or after pos (strict: after pos) in the path's btree, or
 * null. The path ends on the leaf holding the answer (or the last leaf).
 */
export async function btreePeek(trans: BtreeTrans, path: BtreePath, pos: Uint32Array, strict: boolean): Promise<BkeyI | null> {
  const p = new Uint32Array(BPOS_WORDS);
  wordsCopy(p, 0, pos, 0);
  for (;;) {
    pathSetPos(path, p, 0);
    trans.throwIfRestart(await trans.traverse(path));
    const keys = leafRead(trans, path);
    const it = path.l[0]!.iter;
    let h = it.peek();
    while (h >= 0 && (!isLive(keys.keyType(h)) || (strict && keys.keyCmpPos(h, p, 0) <= 0))) {
      it.advance();
      h = it.peek();
    }
    if (h >= 0) return keys.keyUnpack(h);
    if (wordsIsMax(keys.maxKey, 0)) return null;
    wordsCopy(p, 0, keys.maxKey, 0);
    wordsSuccessor(p, 0);
    strict = false;
  }
}

/** Keys a scan for extents reaching back over a position reads one by one before it looks at extentScanSkip. */
export const EXTENT_SCAN_SKIP_AFTER = 8;

/**
 * Scans for extents reaching back over offset `at` (starting at or before
 * it) read keys in key order past it, up to the store's extent size bound.
 * btreePeek just returned a key ending at `keyEnd` from path's leaf: the
 * keys after it in that leaf end no sooner (or lie in a later inode), so
 * none reaches back to `at` once keyEnd - at exceeds the longest key of the
 * leaf (NodeKeys.keySizeMax). Then the scan goes on strictly after the
 * leaf's max key, returned; else null. (The leaf is in the transaction's
 * read set: btreePeek noted it.)
 */
export function extentScanSkip(path: BtreePath, keyEnd: bigint, at: bigint): Uint32Array | null {
  const n = path.l[0]?.node;
  if (!n || keyEnd - at <= BigInt(n.keys.keySizeMax()) || wordsIsMax(n.keys.maxKey, 0)) return null;
  return wordsClone(n.keys.maxKey);
}

/** Last live key at or before pos in the path's btree, or null. */
export async function btreePeekPrev(trans: BtreeTrans, path: BtreePath, pos: Uint32Array): Promise<BkeyI | null> {
  const p = new Uint32Array(BPOS_WORDS);
  wordsCopy(p, 0, pos, 0);
  for (;;) {
    pathSetPos(path, p, 0);
    trans.throwIfRestart(await trans.traverse(path));
    const keys = leafRead(trans, path);
    const it = path.l[0]!.iter;
    let h = it.peek();
    if (h >= 0 && keys.keyCmpPos(h, p, 0) === 0 && isLive(keys.keyType(h))) return keys.keyUnpack(h);
    h = it.peekPrev();
    while (h >= 0) {
      it.rewind();
      if (isLive(keys.keyType(h))) return keys.keyUnpack(h);
      h = it.peekPrev();
    }
    if (wordsIsMin(keys.minKey, 0)) return null;
    wordsCopy(p, 0, keys.minKey, 0);
    wordsPredecessor(p, 0);
  }
}

/** Exact lookup of a live key; null if absent. */
export async function btreeLookup(trans: BtreeTrans, btreeId: number, pos: Uint32Array, intent = false): Promise<BkeyI | null> {
  const path = trans.getPath(btreeId, pos, 0, 0, intent ? 1 : 0);
  if (trans.traverseNowait(path) !== 0) trans.throwIfRestart(await trans.traverseSlowpath(path));
  const lv = path.l[0]!;
  const keys = lv.node!.keys;
  path.shouldBeLocked = true;
  trans.readNoted(path);
  const h = lv.iter.peek();
  if (h >= 0 && keys.keyCmpPos(h, pos, 0) === 0 && isLive(keys.keyType(h))) return keys.keyUnpack(h);
  return null;
}

/* ------------------------------------------------------------------------
 * Point lookup without a transaction (store.get's fast path).
 */

/** LookupNowait.lookup() could not answer without waiting: use a transaction. */
export const LOOKUP_FALLBACK = false;

/** Counters of the fast path (stats().lookups): one per outcome. */
export const LOOKUP_COUNTERS = [
  ['fast', 'store.get and store.getSync calls answered by the synchronous walk, everything cached'],
  ['fallbackLocked', 'walks that fell back: a node on the way was cached but its lock busy (write held or a writer queued: a commit or interior update under way)'],
  ['fallbackUncached', 'walks that fell back: a node on the way was not cached, being read, or failed its last read'],
  ['fastAfterRead', 'answered by the synchronous walk after waiting for the read it started (nodeReadNowait), with no transaction'],
  ['syncWouldBlock', 'store.getSync calls that threw ERR_WOULD_BLOCK (a fallback above; the read of a missing node was started)'],
  ['childIndexBuilds', "interior nodes' child pointers decoded for the walk (ChildIndex): once per node and change of its keys"],
  ['yields', 'store.get and range answers that waited for a turn of the event loop (setImmediate) after many answered from cache without one'],
] as const;
export type LookupCounter = (typeof LOOKUP_COUNTERS)[number][0];

/**
 * An interior node's live child pointers, decoded once for LookupNowait:
 * their max keys as words in one array (a binary search finds the child
 * covering a position) and a BtreePtr each, ready for nodeGetNowait. bcachefs
 * searches the bset and unpacks the pointer key at every descent; here that
 * decode costs more than the search, and a node's pointers change only with
 * splits, merges and rewrites below it. Valid while the node holds the same
 * on-disk node (hashVal) with the same keys (NodeKeys.contentGen); checked
 * under the node's read lock, so nothing changes between check and use.
 */
function ptrCopy(dst: BtreePtr, src: BtreePtr): void {
  dst.btreeId = src.btreeId;
  dst.level = src.level;
  dst.bucket = src.bucket;
  dst.seq = src.seq;
  dst.sectorsWritten = src.sectorsWritten ?? 0;
  wordsCopy(dst.minKey, 0, src.minKey, 0);
  wordsCopy(dst.maxKey, 0, src.maxKey, 0);
}

export class ChildIndex {
  hash = 0;
  gen = -1;
  /** Live child pointers, in key order. */
  n = 0;
  private max = new Uint32Array(0);
  readonly ptrs: BtreePtr[] = [];
  private static readonly iter = new NodeIter();

  valid(b: Node): boolean {
    return this.hash === b.hashVal && this.gen === b.keys.contentGen;
  }

  /** Decode b's pointers (b read locked, an interior node of btree btreeId). */
  build(b: Node, btreeId: number): void {
    const keys = b.keys;
    const it = ChildIndex.iter;
    it.initStart(keys);
    let n = 0;
    for (let h = it.peek(); h >= 0; it.advance(), h = it.peek()) {
      if (keys.keyType(h) !== KEY_TYPE.btree_ptr) continue;
      if ((n + 1) * BPOS_WORDS > this.max.length) {
        const grown = new Uint32Array(Math.max(64, this.max.length * 2));
        grown.set(this.max);
        this.max = grown;
      }
      const ptr = (this.ptrs[n] ??= { btreeId: 0, level: 0, bucket: 0, seq: 0, minKey: new Uint32Array(BPOS_WORDS), maxKey: new Uint32Array(BPOS_WORDS), sectorsWritten: 0 });
      keys.keyBtreePtr(h, ptr);
      keys.keyPosTo(h, ptr.maxKey, 0);
      ptr.btreeId = btreeId;
      ptr.level = b.level - 1;
      wordsCopy(this.max, n * BPOS_WORDS, ptr.maxKey, 0);
      n++;
    }
    this.n = n;
    this.hash = b.hashVal;
    this.gen = keys.contentGen;
  }

  /** The first child whose max key is >= pos, or -1 (pos beyond the node: a topology error). */
  find(pos: Uint32Array): number {
    const max = this.max;
    let lo = 0, hi = this.n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (wordsCmp(max, mid * BPOS_WORDS, pos, 0) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo < this.n ? lo : -1;
  }
}

/**
 * A single point read, done synchronously from the root to the leaf
 * (bcachefs: a read-only btree_trans of one path, traversed with read locks).
 * One get is trivially serializable, so it needs no read set, no path kept
 * and no transaction: each node is read locked (six trylock, by this
 * object's own lock owner) while it is searched, the child is trylocked
 * before the parent's lock is dropped, and the value is copied out before
 * the leaf's lock goes. Nothing awaits, so nothing can change, be evicted or
 * reused between a lock, the identity check (root still the root, hashVal
 * and header matching the parent's pointer: nodeGetNowait) and the copy.
 * Anything that would wait (a write lock held, a node not cached or being
 * read, a read error to report) returns LOOKUP_FALLBACK. A node not cached
 * is read first (readStarted; store.get waits for it and walks again, still
 * without a transaction); otherwise, or if the second walk misses too, the
 * caller runs the ordinary transaction, which waits, reads, restarts and
 * throws.
 * Allocates only the returned value.
 */
export class LookupNowait {
  readonly owner = new LockOwnerBase(-3, Number.MAX_SAFE_INTEGER - 2);
  readonly counters: Record<LookupCounter, number> = { fast: 0, fallbackLocked: 0, fallbackUncached: 0, fastAfterRead: 0, syncWouldBlock: 0, childIndexBuilds: 0, yields: 0 };
  /** The position being looked up, in words (lookupAt reads it). */
  readonly pos = new Uint32Array(BPOS_WORDS);
  private readonly ptr: BtreePtr = { btreeId: 0, level: 0, bucket: 0, seq: 0, minKey: new Uint32Array(BPOS_WORDS), maxKey: new Uint32Array(BPOS_WORDS), sectorsWritten: 0 };

  constructor(
    private readonly cache: BtreeCache,
    private readonly roots: readonly { node: Node | null }[],
  ) {}

  /**
   * The read a first walk's LOOKUP_FALLBACK started (or found in flight) for
   * the node it missed, to wait on (done) before walking again; null if none.
   * Valid until the next lookup(). A walk with pinRead leaves the node pinned
   * until the caller passes this to readRelease (BtreeCache.nodeReadNowait).
   */
  readStarted: ReadNowait | null = null;

  /** Unpin the node of a read a walk with pinRead started (once, after the walk that follows it). */
  readRelease(r: ReadNowait): void {
    this.cache.readNowaitRelease(r);
  }

  /**
   * The value at p (a copy), null if there is no live key there, or
   * LOOKUP_FALLBACK. The first walk (afterRead false) starts reading a node
   * that is not cached (readStarted); a walk after that read (afterRead,
   * counted as fastAfterRead) starts the next one only with pinRead, for a
   * caller that waits on it and releases it (store.get).
   */
  lookup(btreeId: number, p: Bpos, afterRead = false, pinRead = false): Uint8Array | null | typeof LOOKUP_FALLBACK {
    bposToWords(p, this.pos, 0);
    return this.lookupAt(btreeId, afterRead, pinRead);
  }

  /** lookup() of the position already written into `pos` (posLikeToWords). */
  lookupAt(btreeId: number, afterRead = false, pinRead = false): Uint8Array | null | typeof LOOKUP_FALLBACK {
    /* a walk after a read starts the next only for a caller that waits on it (pinRead: store.get's walk per level) */
    const readOk = !afterRead || pinRead;
    this.readStarted = null;
    const pos = this.pos;
    const owner = this.owner;
    const root = this.roots[btreeId]!;
    let b = root.node;
    if (b === null) return this.fallback('fallbackUncached');
    if (!nodeTryLock(owner, b.lock, SixLockType.read)) return this.fallback('fallbackLocked');
    if (root.node !== b || b.hashVal === 0 || b.has(NodeFlag.read_in_flight) || b.has(NodeFlag.read_error)) {
      nodeUnlock(owner, b.lock, SixLockType.read);
      return this.fallback('fallbackUncached');
    }
    while (b.level > 0) {
      /* the child pointer covering pos: the first pointer key >= pos (pathChildPtr), from the node's decoded index */
      let index = b.childIndex;
      if (index === null) index = b.childIndex = new ChildIndex();
      if (!index.valid(b)) {
        index.build(b, btreeId);
        this.counters.childIndexBuilds++;
      }
      const i = index.find(pos);
      if (i < 0) {
        /* a topology error: the transaction reports it */
        nodeUnlock(owner, b.lock, SixLockType.read);
        return this.fallback('fallbackUncached');
      }
      const child = this.cache.nodeGetNowait(owner, index.ptrs[i]!, b.level - 1, LOCK_READ);
      if (child === null) {
        const ptr = this.ptr;
        ptrCopy(ptr, index.ptrs[i]!);
        /* cached and readable: its lock was busy (or its header disagrees: the transaction reports that) */
        const c = this.cache.cacheFind(ptr.seq);
        const locked = c !== undefined && !c.has(NodeFlag.read_in_flight) && !c.has(NodeFlag.read_error);
        // not cached (or being read): start the read while the parent's lock keeps the pointer current
        if (!locked && readOk) this.readStarted = this.cache.nodeReadNowait(ptr, b.level - 1, pinRead);
        nodeUnlock(owner, b.lock, SixLockType.read);
        return this.fallback(locked ? 'fallbackLocked' : 'fallbackUncached');
      }
      nodeUnlock(owner, b.lock, SixLockType.read);
      b = child;
    }
    const keys = b.keys;
    const h = keys.findExact(pos, 0);
    let v: Uint8Array | null = null;
    if (h >= 0 && isLive(keys.keyType(h))) {
      const start = keys.keyValueStart(h);
      v = keys.data.slice(start, start + keys.keyValueBytes(h));
    }
    nodeUnlock(owner, b.lock, SixLockType.read);
    if (afterRead) this.counters.fastAfterRead++;
    else this.counters.fast++;
    return v;
  }

  private fallback(c: LookupCounter): typeof LOOKUP_FALLBACK {
    this.counters[c]++;
    return LOOKUP_FALLBACK;
  }
}

/* ------------------------------------------------------------------------
 * Entries.
 */

/**
 * The entry of k. copy: hand out a copy of its value (k may be the
 * transaction's own update, which the caller must not reach); a key just
 * unpacked from a node (keyUnpack: already a copy) passes false.
 */
export function keyToEntry(k: BkeyI, extents: boolean, copy = true): Entry {
  if (!extents) return { pos: wordsToBpos(k.p, 0), value: copy ? k.value.slice() : k.value };
  const end = wordsToBpos(k.p, 0);
  const size = BigInt(k.size);
  return {
    pos: end,
    start: { inode: end.inode, offset: end.offset - size, snapshot: end.snapshot },
    size,
    valueOffset: extentValueOffset(k.value),
    value: copy ? k.value.slice(EXTENT_VALUE_HEADER_BYTES) : k.value.subarray(EXTENT_VALUE_HEADER_BYTES),
  };
}

const entryPos = new Uint32Array(BPOS_WORDS);

/** keyToEntry(keys.keyUnpack(h), false) for a key of a non-extents node, without the BkeyI in between. */
export function keyToEntryAt(keys: NodeKeys, h: number): Entry {
  keys.keyPosTo(h, entryPos, 0);
  const start = keys.keyValueStart(h);
  return { pos: wordsToBpos(entryPos, 0), value: keys.data.slice(start, start + keys.keyValueBytes(h)) };
}

function xToBpos(p: XPos): Bpos {
  return Object.freeze({ inode: p.inode, offset: p.offset, snapshot: p.snapshot });
}

/* ------------------------------------------------------------------------
 * Merged view: btree + the transaction's overlay.
 */

interface Visible {
  /** End position (extents) or position. */
  p: XPos;
  key: BkeyI;
  /** Extents: the visible piece [lo, hi) of key. */
  lo?: bigint;
  hi?: bigint;
}

function pieceEntry(v: Visible): Entry {
  const k = v.key;
  if (v.lo === undefined) return keyToEntry(k, true);
  const e = extentOfKey(k);
  const lo = v.lo;
  const hi = v.hi!;
  return {
    pos: xToBpos({ inode: e.inode, offset: hi, snapshot: e.snapshot }),
    start: xToBpos({ inode: e.inode, offset: lo, snapshot: e.snapshot }),
    size: hi - lo,
    valueOffset: extentValueOffset(k.value) + (lo - e.start),
    value: k.value.slice(EXTENT_VALUE_HEADER_BYTES),
  };
}

function entryOf(v: Visible, extents: boolean): Entry {
  return extents ? pieceEntry(v) : keyToEntry(v.key, false);
}

function startOf(v: Visible, extents: boolean): XPos {
  if (!extents) return v.p;
  const e = extentOfKey(v.key);
  return { inode: e.inode, offset: v.lo ?? e.start, snapshot: e.snapshot };
}

/**
 * An upper bound on where the piece a pending range starting at s leaves of
 * an extent crossing s ends: s itself for an extent write's range (its own
 * snapshot's extents, cut at s); for a delRange's, s's offset for snapshots
 * at or above s's, one past it for those below (extentClip).
 */
function cutEndMax(s: XPos, snapshot: number): XPos {
  return snapshot === ANY_SNAPSHOT ? { inode: s.inode, offset: s.offset + 1n, snapshot: U32_MAX } : s;
}

export class MergedView {
  private path: BtreePath;
  private scratch = new Uint32Array(BPOS_WORDS);

  constructor(
    readonly trans: BtreeTrans,
    readonly btreeId: number,
    readonly extents: boolean,
    intent: boolean,
  ) {
    this.path = trans.pathNew(btreeId, posWords(POS_MIN), 0, 0, intent ? 1 : 0);
    this.path.ref++;
  }

  private get ov(): BtreeOverlay | null {
    const o = this.trans.overlays[this.btreeId];
    return o && !o.empty ? o : null;
  }

  /**
   * First visible item with p >= pos (normal) or end > pos (extents).
   */
  async peek(pos: XPos): Promise<Visible | null> {
    const ov = this.ov;
    const w = this.scratch;
    let cur = pos;
    let b: Visible | null = null;
    const merged = ov ? ov.mergedTombstones() : [];
    for (;;) {
      bposToWords(cur as Bpos, w, 0);
      const k = await btreePeek(this.trans, this.path, w, this.extents);
      if (!k) break;
      const kp = xFromWords(k.p);
      if (!ov) {
        b = { p: kp, key: k };
        break;
      }
      if (!this.extents) {
        const tomb = merged.find(([s, t]) => xcmp(s, kp) <= 0 && xcmp(kp, t) < 0);
        if (tomb) {
          cur = tomb[1];
          continue;
        }
        if (ov.keyAt(kp)) {
          if (isPosMax(kp)) break; // nothing after POS_MAX
          cur = succ(kp);
          continue;
        }
        b = { p: kp, key: k };
        break;
      }
      const e = extentOfKey(k);
      const pieces = extentMinus(e, merged).filter(([, hi]) => xcmp({ inode: e.inode, offset: hi, snapshot: e.snapshot }, pos) > 0);
      if (pieces.length === 0) {
        cur = kp;
        continue;
      }
      const [lo, hi] = pieces[0]!;
      b = { p: { inode: e.inode, offset: hi, snapshot: e.snapshot }, key: k, lo, hi };
      break;
    }
    let o: Visible | null = null;
    if (ov) {
      for (let i = ov.lowerBound(pos, this.extents); i < ov.keys.length; i++) {
        const k = ov.keys[i]!;
        if (k.type === KEY_TYPE.deleted) continue;
        o = { p: ov.posAt(i), key: k };
        break;
      }
    }
    let best = !b ? o : !o ? b : xcmp(o.p, b.p) <= 0 ? o : b;
    if (!this.extents || !ov) return best;
    // The extent found above is the first one whose key has a visible piece
    // after pos, but a later key (another snapshot's extent, reaching back
    // over it) can have a piece that ends first: cut at a pending range's
    // start. An extent write's range (one snapshot) cuts that snapshot's one
    // extent spanning its start; a delRange's cuts every snapshot's (their
    // pieces end at the start, or one past it for snapshots below the
    // start's). Only ends before the best so far need a look.
    for (const [s, , snapshot] of merged) {
      if (xcmp(cutEndMax(s, snapshot), pos) <= 0) continue;
      if (best && xcmp(s, best.p) >= 0) break;
      for (const k of await this.spanningKeys(s, snapshot)) {
        const e = extentOfKey(k);
        const piece = extentMinus(e, merged).find(([, hi]) => xcmp({ inode: e.inode, offset: hi, snapshot: e.snapshot }, pos) > 0);
        if (!piece) continue;
        const p = { inode: e.inode, offset: piece[1], snapshot: e.snapshot };
        if (!best || xcmp(p, best.p) < 0) best = { p, key: k, lo: piece[0], hi: piece[1] };
      }
    }
    return best;
  }

  /**
   * The committed extents a pending range starting at s cuts there: of
   * `snapshot` (an extent write's range), the one spanning s's offset (it
   * starts before it and ends after it; extents of one snapshot do not
   * overlap, so it is the first key of that snapshot after s); of every
   * snapshot (ANY_SNAPSHOT, a delRange's), each key of s's inode starting
   * at or before s's offset and ending after it. Either way the keys read
   * end at most the store's extent size bound past s (no extent is longer);
   * keys of other snapshots on the way are passed over (none with one
   * snapshot per inode).
   */
  private async spanningKeys(s: XPos, snapshot: number): Promise<BkeyI[]> {
    const w = new Uint32Array(BPOS_WORDS);
    const bound = BigInt(this.trans.extentBoundUse());
    const at = s.offset;
    bposToWords({ inode: s.inode, offset: at, snapshot: snapshot === ANY_SNAPSHOT ? 0 : snapshot } as Bpos, w, 0);
    const out: BkeyI[] = [];
    for (let read = 1; ; read++) {
      const k = await btreePeek(this.trans, this.path, w, true);
      if (!k) return out;
      const e = extentOfKey(k);
      if (e.inode !== s.inode || e.end - at > bound) return out;
      if (snapshot === ANY_SNAPSHOT) {
        if (e.start <= at && e.end > at) out.push(k);
      } else if (e.snapshot === snapshot) {
        if (e.start < at) out.push(k);
        return out;
      }
      // (of one snapshot, its first key ends the scan anyway)
      const skip = snapshot === ANY_SNAPSHOT && read >= EXTENT_SCAN_SKIP_AFTER ? extentScanSkip(this.path, e.end, at) : null;
      wordsCopy(w, 0, skip ?? k.p, 0);
    }
  }

  /**
   * The first visible piece in key order after `after` that starts before
   * `end` (an Iter's end, in end's inode): with `after` at or past the end
   * of a piece starting at or after `end`, such a piece reaches over `end`
   * (another snapshot's extent, its key after ones starting past `end`): a
   * committed extent spanning end's offset (spanningKeys: keys up to the
   * extent size bound past it), cut by the pending ranges, or a pending
   * extent ending at most the bound past it.
   */
  async firstStartingBefore(end: XPos, after: XPos): Promise<Visible | null> {
    const ov = this.ov;
    const merged = ov ? ov.mergedTombstones() : [];
    let best: Visible | null = null;
    const consider = (v: Visible): void => {
      if (xcmp(v.p, after) > 0 && xcmp(startOf(v, true), end) < 0 && (!best || xcmp(v.p, best.p) < 0)) best = v;
    };
    for (const k of await this.spanningKeys(end, ANY_SNAPSHOT)) {
      const e = extentOfKey(k);
      for (const [lo, hi] of extentMinus(e, merged)) consider({ p: { inode: e.inode, offset: hi, snapshot: e.snapshot }, key: k, lo, hi });
    }
    if (ov) {
      const bound = BigInt(this.trans.extentBoundUse());
      for (let i = ov.lowerBound(after, true); i < ov.keys.length; i++) {
        const k = ov.keys[i]!;
        const p = ov.posAt(i);
        if (p.inode !== end.inode || p.offset - end.offset > bound) break;
        if (k.type !== KEY_TYPE.deleted) consider({ p, key: k });
      }
    }
    return best;
  }

  /**
   * Last visible item with p <= pos (normal) or, for extents, the extent
   * containing pos or else the last one ending at or before pos.
   */
  async peekPrev(pos: XPos): Promise<Visible | null> {
    if (this.extents) {
      const f = await this.peek(pos);
      if (f && xcmp(startOf(f, true), pos) <= 0) return f;
    }
    return this.lastEndingBy(pos);
  }

  /**
   * Last visible item with p <= pos (extents: ending at or before pos), the
   * extent containing pos or not: the item before the one at pos's
   * successor in key order (Iter.prev).
   */
  async lastEndingBy(pos: XPos): Promise<Visible | null> {
    // extents: the lower pieces of a committed extent that ends after pos but
    // is split by pending tombstones (the one straddling pos)
    let straddle: Visible | null = null;
    if (this.extents) {
      const ov0 = this.ov;
      if (ov0) {
        bposToWords(pos as Bpos, this.scratch, 0);
        const k0 = await btreePeek(this.trans, this.path, this.scratch, true);
        if (k0) {
          const e = extentOfKey(k0);
          // positions compare fully (prev() steps back to (inode, start - 1, U32_MAX))
          if (xcmp({ inode: e.inode, offset: e.start, snapshot: e.snapshot }, pos) <= 0) {
            const pieces = extentMinus(e, ov0.mergedTombstones()).filter(([, hi]) => xcmp({ inode: e.inode, offset: hi, snapshot: e.snapshot }, pos) <= 0);
            const last = pieces[pieces.length - 1];
            if (last) straddle = { p: { inode: e.inode, offset: last[1], snapshot: e.snapshot }, key: k0, lo: last[0], hi: last[1] };
          }
        }
      }
    }
    const r = await this.peekPrevInner(pos);
    let best = !straddle ? r : !r ? straddle : xcmp(straddle.p, r.p) >= 0 ? straddle : r;
    const ov = this.ov;
    if (!this.extents || !ov) return best;
    // Other keys after pos with a piece ending at or before it: cut at a
    // pending range's start, as in peek. Latest starts first.
    const merged = ov.mergedTombstones();
    const pw = posWords(pos as Bpos);
    for (let j = merged.length - 1; j >= 0; j--) {
      const [s, , snapshot] = merged[j]!;
      if (xcmp(s, pos) > 0) continue;
      // starts only fall from here on, but a delRange's cut may end one past
      // its start: done once even that cannot beat the best
      if (best && xcmp(cutEndMax(s, ANY_SNAPSHOT), best.p) <= 0) break;
      if (best && xcmp(cutEndMax(s, snapshot), best.p) <= 0) continue;
      for (const k of await this.spanningKeys(s, snapshot)) {
        if (wordsCmp(k.p, 0, pw, 0) <= 0) continue;
        const e = extentOfKey(k);
        const pieces = extentMinus(e, merged).filter(([, hi]) => xcmp({ inode: e.inode, offset: hi, snapshot: e.snapshot }, pos) <= 0);
        const last = pieces[pieces.length - 1];
        if (!last) continue;
        const p = { inode: e.inode, offset: last[1], snapshot: e.snapshot };
        if (!best || xcmp(p, best.p) > 0) best = { p, key: k, lo: last[0], hi: last[1] };
      }
    }
    return best;
  }

  private async peekPrevInner(pos: XPos): Promise<Visible | null> {
    const ov = this.ov;
    const merged = ov ? ov.mergedTombstones() : [];
    const w = this.scratch;
    let cur = pos;
    let b: Visible | null = null;
    for (;;) {
      bposToWords(cur as Bpos, w, 0);
      const k = await btreePeekPrev(this.trans, this.path, w);
      if (!k) break;
      const kp = xFromWords(k.p);
      if (!ov) {
        b = { p: kp, key: k };
        break;
      }
      if (!this.extents) {
        const tomb = merged.find(([s, t]) => xcmp(s, kp) <= 0 && xcmp(kp, t) < 0);
        if (tomb || ov.keyAt(kp)) {
          const s = tomb ? tomb[0] : kp;
          if (s.inode === 0n && s.offset === 0n && s.snapshot === 0) break;
          cur = pred(s);
          continue;
        }
        b = { p: kp, key: k };
        break;
      }
      const e = extentOfKey(k);
      const pieces = extentMinus(e, merged);
      if (pieces.length === 0) {
        // wholly deleted: go on from the key before it (not from its start:
        // keys of other snapshots' extents may end inside it, and a pending
        // extent write in its snapshot leaves them)
        if (isPosMin(kp)) break;
        cur = pred(kp);
        continue;
      }
      const [lo, hi] = pieces[pieces.length - 1]!;
      b = { p: { inode: e.inode, offset: hi, snapshot: e.snapshot }, key: k, lo, hi };
      if (hi < e.end) {
        // its tail is deleted: an earlier key (another snapshot's extent
        // ending inside this one) may have a piece ending after hi. Only
        // keys after that piece's end can; with one snapshot per inode the
        // key before this one is not.
        let back = kp;
        while (!isPosMin(back)) {
          bposToWords(pred(back) as Bpos, w, 0);
          const k3 = await btreePeekPrev(this.trans, this.path, w);
          if (!k3) break;
          back = xFromWords(k3.p);
          if (xcmp(back, b.p) <= 0) break;
          const e3 = extentOfKey(k3);
          const p3 = extentMinus(e3, merged);
          const last = p3[p3.length - 1];
          if (!last) continue;
          const at = { inode: e3.inode, offset: last[1], snapshot: e3.snapshot };
          if (xcmp(at, b.p) > 0) b = { p: at, key: k3, lo: last[0], hi: last[1] };
        }
      }
      break;
    }
    let o: Visible | null = null;
    if (ov) {
      for (let i = ov.lowerBound(pos, true) - 1; i >= 0; i--) {
        const k = ov.keys[i]!;
        if (k.type === KEY_TYPE.deleted) continue;
        o = { p: ov.posAt(i), key: k };
        break;
      }
    }
    if (!b) return o;
    if (!o) return b;
    return xcmp(o.p, b.p) >= 0 ? o : b;
  }

  /** Exact lookup (normal btrees). */
  async get(pos: XPos): Promise<BkeyI | null> {
    const ov = this.ov;
    if (ov) {
      const k = ov.keyAt(pos);
      if (k) return k.type === KEY_TYPE.deleted ? null : k;
      if (ov.covered(pos)) return null;
    }
    bposToWords(pos as Bpos, this.scratch, 0);
    return btreeLookup(this.trans, this.btreeId, this.scratch);
  }

  release(): void {
    this.path.ref--;
  }

  get btreePath(): BtreePath {
    return this.path;
  }
}

function isPosMax(p: XPos): boolean {
  return p.inode === U64_MAX && p.offset === U64_MAX && p.snapshot === U32_MAX;
}

function isPosMin(p: XPos): boolean {
  return p.inode === 0n && p.offset === 0n && p.snapshot === 0;
}

function succ(p: XPos): XPos {
  const w = posWords(p as Bpos);
  wordsSuccessor(w, 0);
  return xFromWords(w);
}

function pred(p: XPos): XPos {
  const w = posWords(p as Bpos);
  wordsPredecessor(w, 0);
  return xFromWords(w);
}

/* ------------------------------------------------------------------------
 * Public iterator.
 */

export interface IterOpts {
  slots?: boolean;
  intent?: boolean;
  prefetch?: boolean;
  end?: Bpos;
}

export class Iter {
  private cur: XPos;
  /** The last item returned by peek/peekPrev (next/prev move past it). */
  private last: Visible | null = null;
  private lastWasHole: { end: XPos } | null = null;
  private readonly view: MergedView;
  private readonly end: XPos | null;
  private nodeWalk: { level: number; minKey: Uint32Array; done: boolean } | null = null;

  constructor(
    private readonly trans: BtreeTrans,
    private readonly checkLive: () => void,
    readonly btreeId: number,
    private readonly extents: boolean,
    start: Bpos,
    private readonly opts: IterOpts,
  ) {
    this.cur = start;
    this.end = opts.end ? opts.end : null;
    this.view = new MergedView(trans, btreeId, extents, !!opts.intent);
  }

  get pos(): Bpos {
    return xToBpos(this.cur);
  }

  setPos(p: unknown): void {
    this.checkLive();
    this.cur = toBpos(p, 'pos');
    this.last = null;
    this.lastWasHole = null;
    this.nodeWalk = null;
  }

  private inRange(v: Visible): boolean {
    if (!this.end) return true;
    return xcmp(startOf(v, this.extents), this.end) < 0;
  }

  async peek(): Promise<Entry | null> {
    this.checkLive();
    let v = await this.view.peek(this.cur);
    this.trans.engine.maybePrefetch(this.trans, this.view.btreePath, !!this.opts.prefetch);
    if (v && !this.inRange(v) && this.extents) v = await this.inRangeAfter(v);
    if (!v || !this.inRange(v)) {
      this.last = null;
      return null;
    }
    this.last = v;
    return entryOf(v, this.extents);
  }

  /**
   * Extents: v starts at or after `end`, but a later key can still start
   * before it (another snapshot's extent reaching back over v: keys sit at
   * their extent's end), spanning end (MergedView.firstStartingBefore).
   */
  private async inRangeAfter(v: Visible): Promise<Visible | null> {
    const end = this.end!;
    // v starts at or after end, so it is in end's inode or a later one
    return v.p.inode === end.inode ? this.view.firstStartingBefore(end, v.p) : null;
  }

  async next(): Promise<Entry | null> {
    this.checkLive();
    if (!this.last) {
      const e = await this.peek();
      if (!e) return null;
    }
    const v = this.last!;
    if (this.extents) this.cur = v.p;
    else {
      if (v.p.inode === U64_MAX && v.p.offset === U64_MAX && v.p.snapshot === U32_MAX) {
        this.last = null;
        return null;
      }
      this.cur = succ(v.p);
    }
    this.last = null;
    return this.peek();
  }

  async peekPrev(): Promise<Entry | null> {
    this.checkLive();
    const v = await this.view.peekPrev(this.cur);
    if (!v) {
      this.last = null;
      return null;
    }
    this.last = v;
    return entryOf(v, this.extents);
  }

  async prev(): Promise<Entry | null> {
    this.checkLive();
    if (!this.last) {
      const e = await this.peekPrev();
      if (!e) return null;
    }
    const l = this.last!;
    const s = startOf(l, this.extents);
    this.last = null;
    if (!this.extents) {
      if (isPosMin(s)) return null;
      this.cur = pred(s);
      return this.peekPrev();
    }
    // Extents: the piece before l in key order (a reverse walk returns what
    // a forward one does, reversed). pos still moves before l's start, but
    // the answer is not peekPrev() there: with several snapshots in one
    // inode, pieces of other snapshots end between l's start and its end
    // (inside l, or overlapping it), and peekPrev() at l's start would
    // skip them. With one snapshot per inode the two agree.
    if (!isPosMin(s)) this.cur = pred(s);
    if (isPosMin(l.p)) return null;
    const v = await this.view.lastEndingBy(pred(l.p));
    if (!v) return null;
    this.last = v;
    return entryOf(v, true);
  }

  /** Slots mode: the key at pos, or a hole (extents: pos's snapshot's extent covering pos, or the hole up to its next one, capped at KEY_SIZE_MAX). */
  async peekSlot(): Promise<Entry | Hole> {
    this.checkLive();
    const pos = this.cur;
    if (!this.extents) {
      const k = await this.view.get(pos);
      this.lastWasHole = null;
      if (k) return keyToEntry(k, false);
      return { hole: true, pos: xToBpos(pos) };
    }
    // The extent of pos's snapshot covering pos, else the hole from pos to
    // the start of that snapshot's next extent in this inode (to the end of
    // the inode if none), as a normal btree's slots are pos's snapshot's:
    // other snapshots' keys on the way are passed over. That snapshot's
    // extents do not overlap, so its first key after pos is the one. An
    // extent of it starting within KEY_SIZE_MAX of pos ends at most the
    // store's extent size bound past that: the scan stops there (the hole
    // is at most KEY_SIZE_MAX long).
    const capOffset = pos.offset + BigInt(KEY_SIZE_MAX) + BigInt(this.trans.extentBoundUse());
    let endOffset = U64_MAX;
    for (let v = await this.view.peek(pos); v && v.p.inode === pos.inode && v.p.offset <= capOffset; v = await this.view.peek(v.p)) {
      if (v.p.snapshot !== pos.snapshot) continue;
      const vs = startOf(v, true);
      if (vs.offset <= pos.offset) {
        this.last = v;
        this.lastWasHole = null;
        return pieceEntry(v);
      }
      endOffset = vs.offset;
      break;
    }
    let size = endOffset - pos.offset;
    if (size > BigInt(KEY_SIZE_MAX)) size = BigInt(KEY_SIZE_MAX);
    const holeEnd = { inode: pos.inode, offset: pos.offset + size, snapshot: pos.snapshot };
    this.lastWasHole = { end: holeEnd };
    this.last = null;
    return { hole: true, pos: xToBpos(holeEnd), start: xToBpos(pos), size };
  }

  async nextSlot(): Promise<Entry | Hole | null> {
    this.checkLive();
    if (!this.extents) {
      // the next slot is the next offset in the same snapshot (bpos_nosnap_successor)
      const p = this.cur;
      if (p.offset === U64_MAX) {
        if (p.inode === U64_MAX) return null;
        this.cur = { inode: p.inode + 1n, offset: 0n, snapshot: p.snapshot };
      } else this.cur = { inode: p.inode, offset: p.offset + 1n, snapshot: p.snapshot };
      return this.peekSlot();
    }
    if (this.last) this.cur = this.last.p;
    else if (this.lastWasHole) this.cur = this.lastWasHole.end;
    else {
      await this.peekSlot();
      return this.nextSlot();
    }
    if (this.cur.offset === U64_MAX) return null;
    return this.peekSlot();
  }

  /** The node at the iterator's level holding pos (level 0 unless set by nextNode). */
  async peekNode(): Promise<NodeInfo | null> {
    this.checkLive();
    const level = this.nodeWalk?.level ?? 0;
    if (this.nodeWalk?.done) return null;
    return this.trans.engine.peekNodeInfo(this.trans, this.btreeId, level, this.cur);
  }

  async nextNode(): Promise<NodeInfo | null> {
    this.checkLive();
    const cur = await this.peekNode();
    if (!cur) return null;
    if (cur.maxKey.inode === U64_MAX && cur.maxKey.offset === U64_MAX && cur.maxKey.snapshot === U32_MAX) {
      this.nodeWalk = { level: cur.level, minKey: posWords(cur.maxKey), done: true };
      return null;
    }
    this.cur = succ(cur.maxKey);
    this.nodeWalk = { level: cur.level, minKey: posWords(this.cur as Bpos), done: false };
    return this.peekNode();
  }

  /** Walk nodes of another level: peekNode/nextNode then work on that level. */
  setNodeLevel(level: number): void {
    this.nodeWalk = { level, minKey: posWords(this.cur as Bpos), done: false };
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Entry> {
    let e = await this.peek();
    while (e) {
      yield e;
      e = await this.next();
    }
  }

  release(): void {
    this.view.release();
  }
}

