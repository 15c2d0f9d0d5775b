// SPDX-License-Identifier: GPL-2.0-only
/*
 * Peer adapter: classic-level (LevelDB, an LSM tree, behind abstract-level).
 *
 * Durability: every write passes `sync: true`, so LevelDB fsyncs its log
 * before the write completes; concurrent writers are grouped by LevelDB's
 * writer queue (group commit), but they reach it through the libuv thread
 * pool (UV_THREADPOOL_SIZE, default 4 threads), which bounds the writes in
 * flight. db.clear() has no sync option: deleteRange follows it with a
 * synced delete of a key that is never written, which fsyncs the log holding
 * the clear's deletions.
 *
 * Reads use the asynchronous db.get() (the thread pool; classic-level also
 * has getSync(), not used here). Caching: LevelDB's block cache (8 MiB
 * default) plus the OS page cache. No transactions: getThenPut is a get
 * followed by a synced put, not atomic.
 */

import { ClassicLevel } from 'classic-level';
import type { KeySet } from '../keys.js';
import { valueOf } from '../keys.js';
import type { OpenOptions, Regime, RegimeInfo, StoreAdapter, StoreInfo, WriteOp } from './adapter.js';
import { packageVersion } from './version.js';

const sync = { sync: true } as const;
/** Never written by any workload (keys are 8 bytes): the target of the flushing delete. */
const syncKey = Buffer.from('~sync~');

type Batch = Array<{ type: 'put'; key: Buffer; value: Buffer } | { type: 'del'; key: Buffer }>;

class ClassicLevelAdapter implements StoreAdapter {
  readonly info: StoreInfo;
  readonly syncReads = false;
  private db!: ClassicLevel<Buffer, Buffer>;
  private keys!: KeySet;

  constructor(version: string) {
    this.info = {
      name: 'classic-level',
      version,
      durability: 'durable: sync: true on every write (LevelDB fsyncs its log per write; group commit across concurrent writers)',
      caching: 'LevelDB block cache (8 MiB default) + OS page cache',
      notes: ['reads: async db.get() through the libuv thread pool (4 threads)', 'getThenPut is not atomic (no transactions)', 'deleteRange = db.clear() + a synced delete'],
    };
  }

  async open(opts: OpenOptions): Promise<void> {
    this.keys = opts.keys;
    this.db = new ClassicLevel<Buffer, Buffer>(opts.dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await this.db.open();
  }

  async load(from: number, to: number): Promise<void> {
    const chunkKeys = 10_000;
    for (let start = from; start < to; start += chunkKeys) {
      const end = Math.min(to, start + chunkKeys);
      const ops: Batch = [];
      for (let i = start; i < end; i++) ops.push({ type: 'put', key: this.keys.keyBytes(i), value: valueOf(i, 0) });
      await this.db.batch(ops);
    }
    await this.db.del(syncKey, sync);
  }

  async prepareRegime(regime: Regime): Promise<RegimeInfo> {
    return { regime, description: 'LevelDB block cache 8 MiB + OS page cache (data fits in RAM)' };
  }

  get(index: number): Promise<Uint8Array | undefined> {
    return this.db.get(this.keys.keyBytes(index));
  }

  put(index: number, value: Uint8Array): Promise<void> {
    return this.db.put(this.keys.keyBytes(index), value as Buffer, sync);
  }

  del(index: number): Promise<void> {
    return this.db.del(this.keys.keyBytes(index), sync);
  }

  commit(ops: readonly WriteOp[]): Promise<void> {
    const batch: Batch = ops.map((op) =>
      op.value ? { type: 'put' as const, key: this.keys.keyBytes(op.index), value: op.value as Buffer } : { type: 'del' as const, key: this.keys.keyBytes(op.index) },
    );
    return this.db.batch(batch, sync);
  }

  async getThenPut(index: number, value: Uint8Array): Promise<void> {
    const key = this.keys.keyBytes(index);
    await this.db.get(key);
    await this.db.put(key, value as Buffer, sync);
  }

  async scan(from: number, to: number, onEntry: () => boolean): Promise<number> {
    let entries = 0;
    const it = this.db.iterator({ gte: this.keys.keyBytes(from), lt: this.keys.keyBytes(to) });
    try {
      for await (const entry of it) {
        void entry;
        entries++;
        if (!onEntry()) break;
      }
    } finally {
      await it.close();
    }
    return entries;
  }

  async deleteRange(from: number, to: number): Promise<void> {
    await this.db.clear({ gte: this.keys.keyBytes(from), lt: this.keys.keyBytes(to) });
    await this.db.del(syncKey, sync);
  }

  cacheCounters(): undefined {
    return undefined;
  }

  stats(): unknown {
    return {};
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}

export async function createAdapter(): Promise<StoreAdapter> {
  return new ClassicLevelAdapter(packageVersion('classic-level'));
}
