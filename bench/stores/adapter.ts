// SPDX-License-Identifier: GPL-2.0-only
/*
 * The store-adapter interface: what a workload may ask of a store, and the
 * loader that maps a store name to its adapter module.
 *
 * Rules every adapter keeps (they are what makes the numbers comparable):
 *  - Keys are addressed by index into the KeySet given at open; the adapter
 *    turns an index into its own key form (sixtree: pos(0, u64); peers: the
 *    8-byte big-endian bytes). Values are the bytes handed in, unchanged.
 *  - Every write method resolves only when its commit is durable (on stable
 *    storage, fsync/fdatasync or the store's equivalent). `info.durability`
 *    says how, in words that appear in the report.
 *  - commit() is one atomic commit of all its operations.
 *  - get() may return a value (stores whose reads are synchronous) or a
 *    promise; `syncReads` (read after prepareRegime) says which, so the
 *    harness measures the call the way a user makes it. A synchronous get may
 *    still return a promise when it cannot answer at once (sixtree's getSync
 *    falling back to get on a cache miss): the harness counts those.
 *  - load() is the untimed preload: any batching the store likes, durable at
 *    the end.
 *  - Adapters are loaded by dynamic import, one module per store, so a store
 *    that cannot load (sixtree before its engine exists, better-sqlite3 not
 *    installed) is skipped with a message instead of failing the run.
 */

import type { KeySet } from '../keys.js';

export const storeNames = ['sixtree', 'lmdb', 'classic-level', 'sqlite'] as const;
export type StoreName = (typeof storeNames)[number];

/** sixtree: 'cached' (tree fits the cache) or 'cold' (cache ~5% of the tree); peers: 'page-cache'. */
export type Regime = 'cached' | 'cold' | 'page-cache';

export type IoBackend = 'napi' | 'koffi';

export interface StoreInfo {
  name: StoreName;
  version: string;
  /** When a write resolves, in words: "fdatasync per commit (journal flush, group commit)". */
  durability: string;
  /** Where reads come from: "own node cache (O_DIRECT, no page cache)". */
  caching: string;
  notes: string[];
}

export interface OpenOptions {
  /** A fresh, empty directory for this run (file-backed stores put their files here). */
  dir: string;
  keys: KeySet;
  /** sixtree: a block device to format; without it, a fresh file in dir. */
  devicePath?: string;
  /** sixtree: size of the file-backed device. */
  deviceSizeBytes: number;
  /** sixtree: node size. */
  nodeSizeBytes: number;
  /** sixtree: I/O backend. */
  io: IoBackend;
  /** sixtree: the open option inlineFlush. */
  inlineFlush?: boolean;
  /** sixtree: node cache used while loading and in the 'cached' regime. */
  cacheSizeBytes: number;
}

export interface RegimeInfo {
  regime: Regime;
  /** Memory the store may use for its own cache, when it has a bound we set. */
  cacheSizeBytes?: number;
  /** Bytes of the tree (sixtree: leaf nodes x nodeSize, from a node walk). */
  treeBytes?: number;
  /** Human-readable, for the report ("cache 5.0% of the tree: 3.2 MiB of 64 MiB"). */
  description: string;
  /** Set when the requested regime could not be reached; the report flags the row. */
  warning?: string;
  /** Store options off their defaults, named in the row's notes (sixtree: 'inlineFlush'). */
  options?: string[];
}

export interface CacheCounters {
  hits: number;
  misses: number;
}

/** One operation of a commit: a put when value is set, else a delete. */
export interface WriteOp {
  index: number;
  value?: Uint8Array;
}

export type MaybePromise<T> = T | Promise<T>;

export interface StoreAdapter {
  readonly info: StoreInfo;
  readonly syncReads: boolean;

  open(opts: OpenOptions): Promise<void>;
  /** Untimed preload of keys [from, to) at value version 0; durable when it resolves. */
  load(from: number, to: number): Promise<void>;
  /**
   * Put the store in a cache regime after load (sixtree reopens with a small
   * cache for 'cold'). queueDepth: operations the workload keeps in flight
   * (a cold cache gets one node buffer for each, as the device limit has one
   * buffer per read in flight).
   */
  prepareRegime(regime: Regime, queueDepth?: number): Promise<RegimeInfo>;

  /** Point lookup; resolves to the value or undefined. */
  get(index: number): MaybePromise<Uint8Array | undefined>;
  /** One key, one durable commit. */
  put(index: number, value: Uint8Array): Promise<void>;
  /** One key deleted, one durable commit. */
  del(index: number): Promise<void>;
  /** Several operations, one atomic durable commit. */
  commit(ops: readonly WriteOp[]): Promise<void>;
  /** Read key `index`, then write `value` to it, in one transaction where the store has them. */
  getThenPut(index: number, value: Uint8Array): Promise<void>;
  /**
   * Ordered scan of keys in [key(from), key(to)) of a 'seq' KeySet, calling onEntry per key
   * until it returns false; resolves to the number of entries visited.
   */
  scan(from: number, to: number, onEntry: () => boolean): Promise<number>;
  /** Delete every key in [key(from), key(to)) as a range, one durable commit. */
  deleteRange(from: number, to: number): Promise<void>;

  /** Cache hit/miss counters, for stores that expose them (sixtree). */
  cacheCounters(): CacheCounters | undefined;
  /** Anything worth keeping in the JSON report (sixtree: stats()). */
  stats(): unknown;
  close(): Promise<void>;
}

/** Load a store's adapter module; rejects with the loader's reason when the store is unavailable. */
export async function loadAdapter(name: StoreName): Promise<StoreAdapter> {
  const spec = `./${name}.js`;
  const mod = (await import(spec)) as { createAdapter: () => Promise<StoreAdapter> };
  return mod.createAdapter();
}
