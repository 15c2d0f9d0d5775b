// SPDX-License-Identifier: GPL-2.0-only
/*
 * Node: the in-memory btree node (bcachefs struct btree).
 *
 * A Node object is reused across its life in the cache; only its buffers come
 * and go (data: aligned native memory, aux: mmap'd native memory, both held by
 * `keys`, the NodeKeys key storage). Identity of the on-disk node it currently
 * holds is `hashVal` (the node seq from the pointer to it; 0 = not hashed).
 *
 * Flags are defined once in NODE_FLAGS; bit values, names and flagsToText
 * derive from that table (bcachefs BTREE_FLAGS() x-macro).
 *
 * List membership (bcachefs: b->list on live / freeable / freed lists) is an
 * intrusive doubly linked list: prev/next/list fields on the node, O(1) moves,
 * no allocation.
 */

import type { SixLock } from '../util/six.js';
import type { NodeKeys } from './bset.js';
import type { ChildIndex } from './iter.js';
import type { JournalPin } from '../journal/reclaim.js';
import { Printbuf } from '../util/printbuf.js';

/** One table: name and meaning. Bit i is 1 << i in table order. */
export const NODE_FLAGS = [
  ['read_in_flight', 'a read of this node is under way'],
  ['read_error', 'the last read failed (checksum, topology or I/O)'],
  ['dirty', 'has keys not yet written'],
  ['need_write', 'should be written soon (writeback asked for it)'],
  ['write_blocked', 'must not be written: it points to nodes not yet written'],
  ['will_make_reachable', 'a new node: an interior update waits for its write'],
  ['noevict', 'must not be evicted (root, or pinned by an update)'],
  ['write_idx', 'which of the two journal pin slots the current write uses'],
  ['accessed', 'used since the shrinker last looked (second chance)'],
  ['write_in_flight', 'a write of this node is under way'],
  ['just_written', 'written, in-memory compaction pending'],
  ['dying', 'being freed by an interior update'],
  ['fake', 'placeholder with no on-disk node'],
  ['need_rewrite', 'should be rewritten into a new bucket'],
  ['never_write', 'must never be written (device failed / shutting down)'],
  ['ptr_unjournaled', 'a new node whose pointer is not journaled yet: how far it is written is not recorded'],
] as const;

export type NodeFlagName = (typeof NODE_FLAGS)[number][0];

export const NodeFlag = Object.freeze(
  Object.fromEntries(NODE_FLAGS.map(([name], i) => [name, 1 << i])) as { readonly [K in NodeFlagName]: number },
);

export function flagsToText(flags: number): string {
  const names: string[] = [];
  NODE_FLAGS.forEach(([name], i) => {
    if (flags & (1 << i)) names.push(name);
  });
  return names.join(',') || '-';
}

/** sibU64s: no sibling under the same parent on that side (bcachefs U16_MAX). */
export const SIB_U64S_NONE = 0xffffffff;

/** Sides of sibU64s (bcachefs enum btree_node_sibling). */
export const SIB_PREV = 0;
export const SIB_NEXT = 1;

/**
 * A commit or an interior update changed n's live u64s by delta: move its
 * merge estimates along (bcachefs adjusts b->sib_u64s on each insert).
 * "No sibling" stays as it is.
 */
export function nodeSibU64sAdd(n: Node, delta: number): void {
  for (let i = 0; i < 2; i++) {
    const v = n.sibU64s[i]!;
    if (v !== SIB_U64S_NONE) n.sibU64s[i] = Math.max(0, v + delta);
  }
}

export type NodeListName = 'live' | 'freeable' | 'freed' | 'none';

export class Node {
  /** Node seq of the on-disk node held (hash key); 0 when not in the hash table. */
  hashVal = 0;
  /**
   * Identity of this hashing of this Node object: a number never used
   * before, set by hashInsert, 0 when unhashed. Paths and read sets compare
   * it, not hashVal: a replaced node read back from its old bucket (a walk
   * by a pointer read before its parent changed: fsck, prefetch) is hashed
   * again under its old seq, often into the very Node object it had, and
   * hashVal alone then vouched for a read of stale keys.
   */
  hashId = 0;
  /** Bucket index on the device; -1 when none. */
  bucket = -1;
  btreeId = 0;
  level = 0;
  flags = 0;
  /** Key storage; buffers attached while the node is live or freeable. */
  readonly keys: NodeKeys;
  readonly lock: SixLock;
  /** Slot index in the cache's node table, stable for the object's life (the btree_node_mem_ptr fast path). */
  readonly slot: number;

  /** Journal pin for the oldest unwritten key (bcachefs b->writes[].journal). */
  journalPin: JournalPin | null = null;
  /** Resolves when the read in flight finishes (read_in_flight). */
  readDone: Promise<void> | null = null;
  /** Resolves when the write in flight finishes (write_in_flight). */
  writeDone: Promise<void> | null = null;
  /** Error of the last failed read (read_error), kept so waiters see it. */
  readErr: Error | null = null;

  /** Interior update groups that block this node's writes (write_blocked while > 0). */
  writeBlockedCount = 0;
  /**
   * Transactions holding this node in their read set (BtreeTrans.readSet):
   * the cache does not evict it meanwhile (bcachefs keeps such nodes locked
   * through should_be_locked paths; an evicted and re-read node could not be
   * checked for changes). Splits and merges also pin the nodes they replace
   * while their allocation may wait with the transaction's locks dropped.
   */
  readPins = 0;

  /**
   * Estimated live u64s of this node merged with its previous / next sibling
   * (bcachefs b->sib_u64s): set by merge checks (interior.ts maybeMerge),
   * moved by every change of the node's live u64s, SIB_U64S_NONE when that
   * sibling is under another parent (or there is none). Reset to 0 ("check
   * and see") whenever the node is hashed: a node read or built afresh. A
   * commit that shrinks the node asks for a merge check only when a side may
   * fit (Interior.nodeWantsMerge).
   */
  readonly sibU64s = new Uint32Array(2);

  /** Interior nodes: the child pointers decoded for point lookups (iter.ts ChildIndex), built on first use. */
  childIndex: ChildIndex | null = null;

  // intrusive list links
  list: NodeListName = 'none';
  prev: Node | null = null;
  next: Node | null = null;

  constructor(slot: number, keys: NodeKeys, lock: SixLock) {
    this.slot = slot;
    this.keys = keys;
    this.lock = lock;
  }

  has(flag: number): boolean {
    return (this.flags & flag) !== 0;
  }

  set(flag: number): void {
    this.flags |= flag;
  }

  clear(flag: number): void {
    this.flags &= ~flag;
  }

  /** Test and clear; returns the old value. */
  testAndClear(flag: number): boolean {
    const old = (this.flags & flag) !== 0;
    this.flags &= ~flag;
    return old;
  }

  toText(): string {
    const out = new Printbuf();
    out.line(`node slot ${this.slot} btree ${this.btreeId} level ${this.level} bucket ${this.bucket} seq ${this.hashVal}`);
    out.nested((o) => {
      o.field('flags', flagsToText(this.flags));
      o.field('list', this.list);
      o.print(this.keys.toText());
    });
    return out.toString();
  }
}

/** Intrusive doubly linked list of nodes (bcachefs list_head), with a count. */
export class NodeList {
  head: Node | null = null;
  tail: Node | null = null;
  count = 0;

  constructor(readonly name: NodeListName) {}

  /** Add at the tail (most recently added). */
  addTail(n: Node): void {
    if (n.list !== 'none') throw new Error(`node slot ${n.slot} already on list ${n.list}`);
    n.list = this.name;
    n.prev = this.tail;
    n.next = null;
    if (this.tail) this.tail.next = n;
    else this.head = n;
    this.tail = n;
    this.count++;
  }

  addHead(n: Node): void {
    if (n.list !== 'none') throw new Error(`node slot ${n.slot} already on list ${n.list}`);
    n.list = this.name;
    n.next = this.head;
    n.prev = null;
    if (this.head) this.head.prev = n;
    else this.tail = n;
    this.head = n;
    this.count++;
  }

  remove(n: Node): void {
    if (n.list !== this.name) throw new Error(`node slot ${n.slot} is on list ${n.list}, not ${this.name}`);
    if (n.prev) n.prev.next = n.next;
    else this.head = n.next;
    if (n.next) n.next.prev = n.prev;
    else this.tail = n.prev;
    n.prev = n.next = null;
    n.list = 'none';
    this.count--;
  }

  /** Move n from whatever list it is on to the tail of this one. */
  moveTail(n: Node, from: NodeList): void {
    from.remove(n);
    this.addTail(n);
  }

  *[Symbol.iterator](): IterableIterator<Node> {
    for (let n = this.head; n; ) {
      const next = n.next; // allow removal of n while iterating
      yield n;
      n = next;
    }
  }
}
