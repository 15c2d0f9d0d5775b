// SPDX-License-Identifier: GPL-2.0-only
/*
 * sixtree adapter: the public Store API (API.md) and nothing else.
 *
 * Device: a fresh file of deviceSizeBytes in the run's directory, or the block
 * device given with --device (formatted with force: its contents are lost).
 * One btree, 'main'; key index i is { inode: 0n, offset: key(i), snapshot: 0 }.
 *
 * Calls, as a user writes them:
 *  - get: cached regime store.getSync (a synchronous answer from cached
 *    nodes; ERR_WOULD_BLOCK falls back to await store.get), cold regime
 *    await store.get;
 *  - put/del: store.put/del (one-operation transactions; a write resolves
 *    once its journal entry is on stable storage);
 *  - commit: store.transact(tx => tx.put/tx.del ...), one atomic commit;
 *  - getThenPut: store.transact(async tx => { await tx.get(); tx.put() });
 *  - scan: store.range() (async iterator);
 *  - deleteRange: store.transact(tx => tx.delRange(start, end)).
 * Durability is sixtree's own: transact() resolves once the journal entry
 * holding the commit is flushed; concurrent commits share a flush.
 *
 * Cache regimes (prepareRegime):
 *  - cached: the store stays open with the cache it was loaded with, sized by
 *    the harness to hold the whole tree;
 *  - cold: the store is closed and reopened with cacheSize = 5% of the tree
 *    (tree = leaf nodes x nodeSize, counted by a node walk), raised to the
 *    smallest size open() accepts when 5% is below the cache reserve, plus
 *    one node per operation the workload keeps in flight (its queue depth:
 *    each read in flight needs a buffer, as each of the device limit's
 *    reads has one; without them 64 lookups share a handful of buffers and
 *    qd64 runs at the cache's depth, not the workload's). The
 *    regime records what it got; when the cache is more than a quarter of the
 *    tree, it carries a warning (the report marks the row): with few keys and
 *    large nodes the reserve alone holds much of the tree.
 * Cache hits/misses come from store.stats(), so the report can show what a
 * lookup actually cost (misses per op), not what the regime intended.
 */

import path from 'node:path';
import { Store, pos } from '../../src/index.js';
import type { KeySet } from '../keys.js';
import { valueOf } from '../keys.js';
import type { CacheCounters, IoBackend, MaybePromise, OpenOptions, Regime, RegimeInfo, StoreAdapter, StoreInfo, WriteOp } from './adapter.js';
import { packageVersion } from './version.js';

/** The part of API.md's Transaction this adapter uses, structurally: the adapter imports only what API.md's import line names (Store, pos). */
type Bpos = ReturnType<typeof pos>;
interface NodeInfoLike {
  level: number;
  bytes: number;
}
interface Tx {
  get(btree: string, p: Bpos): Promise<Uint8Array | undefined>;
  put(btree: string, p: Bpos, value: Uint8Array): void;
  del(btree: string, p: Bpos): void;
  delRange(btree: string, start: Bpos, end: Bpos): void;
  iter(btree: string): { peekNode(): Promise<NodeInfoLike | null>; nextNode(): Promise<NodeInfoLike | null> };
}

const btree = 'main';
const coldCacheFraction = 0.05;
const coldWarningFraction = 0.25;
const loadCommitKeys = 1000;

interface Stats {
  cache?: { nodes?: number; bytes?: number; budgetBytes?: number; reserve?: number; hits?: number; misses?: number; evictions?: number };
}

function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

class SixtreeAdapter implements StoreAdapter {
  readonly info: StoreInfo;
  /** Set by prepareRegime: cached reads use store.getSync (no promise), cold ones await store.get. */
  syncReads = false;
  private store!: Store;
  private keys!: KeySet;
  private devicePath!: string;
  private io!: IoBackend;
  private nodeSizeBytes!: number;
  private cacheSizeBytes!: number;
  private inlineFlush = false;

  constructor(version: string) {
    this.info = {
      name: 'sixtree',
      version,
      durability: 'durable: transact() resolves once its journal entry is flushed (fdatasync; group commit across concurrent commits)',
      caching: 'own node cache of cacheSize bytes; O_DIRECT, no page cache',
      notes: [],
    };
  }

  async open(opts: OpenOptions): Promise<void> {
    this.keys = opts.keys;
    this.io = opts.io;
    this.nodeSizeBytes = opts.nodeSizeBytes;
    this.cacheSizeBytes = opts.cacheSizeBytes;
    this.inlineFlush = opts.inlineFlush === true;
    this.devicePath = opts.devicePath ?? path.join(opts.dir, 'sixtree.img');
    await Store.format(this.devicePath, {
      btrees: [{ name: btree }],
      nodeSize: opts.nodeSizeBytes,
      force: true,
      ...(opts.devicePath ? {} : { size: opts.deviceSizeBytes }),
    });
    this.store = await Store.open(this.devicePath, { cacheSize: this.cacheSizeBytes, io: this.io, inlineFlush: this.inlineFlush });
  }

  /** A plain position object (API.md PosLike), as a caller holding u64 keys writes it. */
  private p(index: number): Bpos {
    return { inode: 0n, offset: this.keys.key(index), snapshot: 0 };
  }

  async load(from: number, to: number): Promise<void> {
    for (let start = from; start < to; start += loadCommitKeys) {
      const end = Math.min(to, start + loadCommitKeys);
      await this.store.transact((tx: Tx) => {
        for (let i = start; i < end; i++) tx.put(btree, this.p(i), valueOf(i, 0));
      });
    }
    await this.store.flush();
  }

  /** Leaf nodes and the bytes their keys use, from a walk of the leaf level. */
  private async leafWalk(): Promise<{ leafNodes: number; leafBytesUsed: number } | undefined> {
    try {
      return await this.store.transact(async (tx: Tx) => {
        const it = tx.iter(btree);
        let leafNodes = 0;
        let leafBytesUsed = 0;
        for (let node = await it.peekNode(); node; node = await it.nextNode()) {
          if (node.level !== 0) break;
          leafNodes++;
          leafBytesUsed += node.bytes;
        }
        return { leafNodes, leafBytesUsed };
      });
    } catch {
      return undefined;
    }
  }

  async prepareRegime(regime: Regime, queueDepth = 1): Promise<RegimeInfo> {
    const walk = await this.leafWalk();
    const before = this.store.stats() as Stats;
    const treeBytes = walk ? walk.leafNodes * this.nodeSizeBytes : (before.cache?.nodes ?? 0) * this.nodeSizeBytes;
    const treeText = walk
      ? `tree ${walk.leafNodes} leaves = ${mib(treeBytes)} (keys use ${mib(walk.leafBytesUsed)})`
      : `tree ~${mib(treeBytes)} (cached nodes x nodeSize; node walk unavailable)`;
    this.syncReads = regime !== 'cold';
    if (regime !== 'cold') {
      const evictions = before.cache?.evictions ?? 0;
      return {
        regime: 'cached',
        cacheSizeBytes: this.cacheSizeBytes,
        treeBytes,
        description: `cache ${mib(this.cacheSizeBytes)}, ${treeText}`,
        ...(this.inlineFlush ? { options: ['inlineFlush'] } : {}),
        ...(evictions > 0 ? { warning: `${evictions} evictions while loading: the tree may not fit the cache` } : {}),
      };
    }

    const reserveNodes = before.cache?.reserve ?? 0;
    await this.store.close();
    // the 5% (raised to what open() accepts), then room for the reads in flight (see the header)
    let baseBytes = Math.max(this.nodeSizeBytes, Math.floor(treeBytes * coldCacheFraction));
    const inFlightBytes = Math.max(0, queueDepth) * this.nodeSizeBytes;
    let lastError: unknown;
    for (let attempt = 0; attempt < 12; attempt++) {
      try {
        this.store = await Store.open(this.devicePath, { cacheSize: baseBytes + inFlightBytes, io: this.io, inlineFlush: this.inlineFlush });
        lastError = undefined;
        break;
      } catch (err) {
        lastError = err;
        const e = err as { code?: string; details?: { min?: unknown } };
        if (e.code !== 'ERR_CACHE_TOO_SMALL') throw err;
        // The engine names the smallest budget it accepts (details.min, beyond API.md); without it, grow.
        const minBytes = typeof e.details?.min === 'number' && e.details.min > baseBytes ? e.details.min : 0;
        baseBytes = minBytes || Math.max(baseBytes * 2, Math.ceil(reserveNodes * 1.25) * this.nodeSizeBytes);
      }
    }
    if (lastError) throw lastError;
    const cacheSizeBytes = baseBytes + inFlightBytes;
    this.cacheSizeBytes = cacheSizeBytes;
    const fraction = treeBytes > 0 ? cacheSizeBytes / treeBytes : Infinity;
    const info: RegimeInfo = {
      regime: 'cold',
      cacheSizeBytes,
      treeBytes,
      ...(this.inlineFlush ? { options: ['inlineFlush'] } : {}),
      description: `cache ${mib(cacheSizeBytes)} = ${(fraction * 100).toFixed(1)}% of the tree (${mib(baseBytes)} + ${queueDepth} node${queueDepth === 1 ? '' : 's'} for operations in flight), ${treeText}; reopened (cache empty)`,
    };
    if (fraction > coldWarningFraction) {
      info.warning = `not cold: smallest cache open() accepts = ${(fraction * 100).toFixed(0)}% of the tree`;
    }
    return info;
  }

  /**
   * Cached regime: store.getSync, a synchronous answer from cached nodes;
   * when that would block (a node to read, a lock to wait for) it throws
   * ERR_WOULD_BLOCK and the call falls back to await store.get, as a caller
   * using getSync does. Cold regime: await store.get.
   */
  get(index: number): MaybePromise<Uint8Array | undefined> {
    const p = this.p(index);
    if (!this.syncReads) return this.store.get(btree, p);
    try {
      return this.store.getSync(btree, p);
    } catch (err) {
      if ((err as { code?: string }).code !== 'ERR_WOULD_BLOCK') throw err;
      this.getSyncFallbacks++;
      return this.store.get(btree, p);
    }
  }

  /** getSync calls that fell back to get() (reported by the lookup workloads). */
  getSyncFallbacks = 0;

  put(index: number, value: Uint8Array): Promise<void> {
    return this.store.put(btree, this.p(index), value);
  }

  del(index: number): Promise<void> {
    return this.store.del(btree, this.p(index));
  }

  commit(ops: readonly WriteOp[]): Promise<void> {
    return this.store.transact((tx: Tx) => {
      for (const op of ops) {
        if (op.value) tx.put(btree, this.p(op.index), op.value);
        else tx.del(btree, this.p(op.index));
      }
    });
  }

  getThenPut(index: number, value: Uint8Array): Promise<void> {
    const p = this.p(index);
    return this.store.transact(async (tx: Tx) => {
      await tx.get(btree, p);
      tx.put(btree, p, value);
    });
  }

  async scan(from: number, to: number, onEntry: () => boolean): Promise<number> {
    let entries = 0;
    for await (const entry of this.store.range(btree, { start: this.p(from), end: this.p(to) })) {
      void entry;
      entries++;
      if (!onEntry()) break;
    }
    return entries;
  }

  deleteRange(from: number, to: number): Promise<void> {
    const start = this.p(from);
    const end = this.p(to);
    return this.store.transact((tx: Tx) => {
      tx.delRange(btree, start, end);
    });
  }

  cacheCounters(): CacheCounters | undefined {
    const s = this.store.stats() as Stats;
    if (typeof s.cache?.hits !== 'number' || typeof s.cache?.misses !== 'number') return undefined;
    return { hits: s.cache.hits, misses: s.cache.misses };
  }

  stats(): unknown {
    return this.store.stats();
  }

  async close(): Promise<void> {
    await this.store.close();
  }
}

export async function createAdapter(): Promise<StoreAdapter> {
  return new SixtreeAdapter(packageVersion('sixtree'));
}
