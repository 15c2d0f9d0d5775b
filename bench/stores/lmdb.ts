// SPDX-License-Identifier: GPL-2.0-only
/*
 * Peer adapter: lmdb (lmdb-js, LMDB's copy-on-write B+tree, memory-mapped).
 *
 * Opened with lmdb-js defaults for a durable database (no noSync): on Linux
 * that means overlappingSync, where a write's promise resolves once the
 * transaction is committed and visible, and the fsync of that transaction
 * follows. A durable write therefore awaits `db.flushed` after its commit
 * (the promise lmdb-js documents as "committed and fully flushed/synced to
 * disk"); until then a crash may lose it. Concurrent writes in one event turn
 * share a transaction and a flush (lmdb-js batching = group commit).
 *
 * Reads are synchronous (lmdb-js's design): get() returns the value, it is not
 * wrapped in a promise. Keys are the 8-byte big-endian keys (keyEncoding
 * 'binary'), values raw bytes (encoding 'binary'). Caching: the OS page cache
 * via mmap; lmdb-js's own object cache is off (its default).
 */

import { open, type RootDatabase } from 'lmdb';
import type { KeySet } from '../keys.js';
import { valueOf } from '../keys.js';
import type { OpenOptions, Regime, RegimeInfo, StoreAdapter, StoreInfo, WriteOp } from './adapter.js';
import { packageVersion } from './version.js';

class LmdbAdapter implements StoreAdapter {
  readonly info: StoreInfo;
  readonly syncReads = true;
  private db!: RootDatabase<Buffer, Buffer>;
  private keys!: KeySet;

  constructor(version: string) {
    this.info = {
      name: 'lmdb',
      version,
      durability: 'durable: each commit awaits db.flushed (fsync after commit; lmdb-js default overlappingSync, group commit across concurrent writes)',
      caching: 'OS page cache (mmap); no own cache',
      notes: ['reads are synchronous calls', 'getThenPut runs in one write transaction (db.transaction)'],
    };
  }

  async open(opts: OpenOptions): Promise<void> {
    this.keys = opts.keys;
    this.db = open<Buffer, Buffer>({ path: opts.dir, keyEncoding: 'binary', encoding: 'binary' });
  }

  async load(from: number, to: number): Promise<void> {
    const chunkKeys = 10_000;
    for (let start = from; start < to; start += chunkKeys) {
      const end = Math.min(to, start + chunkKeys);
      await this.db.transaction(() => {
        for (let i = start; i < end; i++) this.db.put(this.keys.keyBytes(i), valueOf(i, 0));
      });
    }
    await this.db.flushed;
  }

  async prepareRegime(regime: Regime): Promise<RegimeInfo> {
    return { regime, description: 'OS page cache (data fits in RAM)' };
  }

  get(index: number): Uint8Array | undefined {
    return this.db.get(this.keys.keyBytes(index));
  }

  async put(index: number, value: Uint8Array): Promise<void> {
    await this.db.put(this.keys.keyBytes(index), value as Buffer);
    await this.db.flushed;
  }

  async del(index: number): Promise<void> {
    await this.db.remove(this.keys.keyBytes(index));
    await this.db.flushed;
  }

  async commit(ops: readonly WriteOp[]): Promise<void> {
    await this.db.transaction(() => {
      for (const op of ops) {
        if (op.value) this.db.put(this.keys.keyBytes(op.index), op.value as Buffer);
        else this.db.remove(this.keys.keyBytes(op.index));
      }
    });
    await this.db.flushed;
  }

  async getThenPut(index: number, value: Uint8Array): Promise<void> {
    const key = this.keys.keyBytes(index);
    await this.db.transaction(() => {
      this.db.get(key);
      this.db.put(key, value as Buffer);
    });
    await this.db.flushed;
  }

  async scan(from: number, to: number, onEntry: () => boolean): Promise<number> {
    let entries = 0;
    for (const entry of this.db.getRange({ start: this.keys.keyBytes(from), end: this.keys.keyBytes(to) })) {
      void entry;
      entries++;
      if (!onEntry()) break;
    }
    return entries;
  }

  async deleteRange(from: number, to: number): Promise<void> {
    const start = this.keys.keyBytes(from);
    const end = this.keys.keyBytes(to);
    await this.db.transaction(() => {
      for (const key of this.db.getKeys({ start, end })) this.db.remove(key);
    });
    await this.db.flushed;
  }

  cacheCounters(): undefined {
    return undefined;
  }

  stats(): unknown {
    const s = this.db.getStats() as Record<string, unknown>;
    return { entryCount: s['entryCount'], pageSize: s['pageSize'], treeDepth: s['treeDepth'], leafPages: s['treeLeafPageCount'], mapSize: s['mapSize'] };
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}

export async function createAdapter(): Promise<StoreAdapter> {
  return new LmdbAdapter(packageVersion('lmdb'));
}
