// SPDX-License-Identifier: GPL-2.0-only
/*
 * Peer adapter: better-sqlite3 (SQLite's B-tree), optional.
 *
 * better-sqlite3 needs a native build (its newest version also Node 22), so it
 * is not a dependency: it is imported dynamically and, when missing, the
 * store is skipped with that reason. Nothing here is typed against its
 * package; the few calls used are described by the local interfaces below.
 *
 * Schema: one WITHOUT ROWID table kv(k BLOB PRIMARY KEY, v BLOB); keys are the
 * 8-byte big-endian keys (BLOBs compare with memcmp, so byte order = key
 * order). journal_mode=WAL, synchronous=FULL: every commit fsyncs the WAL
 * before it returns. better-sqlite3 is synchronous: calls block the event
 * loop, so "concurrent" variants run one commit at a time (no group commit).
 * Caching: SQLite's page cache (cache_size default, 2 MB) + OS page cache.
 */

import path from 'node:path';
import type { KeySet } from '../keys.js';
import { valueOf } from '../keys.js';
import type { OpenOptions, Regime, RegimeInfo, StoreAdapter, StoreInfo, WriteOp } from './adapter.js';
import { packageVersion } from './version.js';

interface Statement {
  run(...params: unknown[]): unknown;
  get(...params: unknown[]): unknown;
  iterate(...params: unknown[]): IterableIterator<unknown>;
  raw(raw?: boolean): Statement;
}
interface Database {
  pragma(source: string): unknown;
  exec(source: string): unknown;
  prepare(source: string): Statement;
  transaction<A extends unknown[]>(fn: (...args: A) => void): (...args: A) => void;
  close(): unknown;
}
type DatabaseConstructor = new (file: string) => Database;

class SqliteAdapter implements StoreAdapter {
  readonly info: StoreInfo;
  readonly syncReads = true;
  private readonly Database: DatabaseConstructor;
  private db!: Database;
  private keys!: KeySet;
  private stmtGet!: Statement;
  private stmtPut!: Statement;
  private stmtDel!: Statement;
  private stmtScan!: Statement;
  private stmtDelRange!: Statement;
  private txCommit!: (ops: readonly WriteOp[]) => void;
  private txGetThenPut!: (key: Buffer, value: Uint8Array) => void;

  constructor(Database: DatabaseConstructor, version: string) {
    this.Database = Database;
    this.info = {
      name: 'sqlite',
      version,
      durability: 'durable: journal_mode=WAL, synchronous=FULL (WAL fsync per commit; synchronous API, one commit at a time)',
      caching: 'SQLite page cache (2 MB default) + OS page cache',
      notes: ['better-sqlite3 calls are synchronous: concurrent variants do not overlap'],
    };
  }

  async open(opts: OpenOptions): Promise<void> {
    this.keys = opts.keys;
    this.db = new this.Database(path.join(opts.dir, 'bench.sqlite'));
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.exec('CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID');
    this.stmtGet = this.db.prepare('SELECT v FROM kv WHERE k = ?').raw(true);
    this.stmtPut = this.db.prepare('INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)');
    this.stmtDel = this.db.prepare('DELETE FROM kv WHERE k = ?');
    this.stmtScan = this.db.prepare('SELECT k, v FROM kv WHERE k >= ? AND k < ? ORDER BY k').raw(true);
    this.stmtDelRange = this.db.prepare('DELETE FROM kv WHERE k >= ? AND k < ?');
    this.txCommit = this.db.transaction((ops: readonly WriteOp[]) => {
      for (const op of ops) {
        if (op.value) this.stmtPut.run(this.keys.keyBytes(op.index), op.value);
        else this.stmtDel.run(this.keys.keyBytes(op.index));
      }
    });
    this.txGetThenPut = this.db.transaction((key: Buffer, value: Uint8Array) => {
      this.stmtGet.get(key);
      this.stmtPut.run(key, value);
    });
  }

  async load(from: number, to: number): Promise<void> {
    const load = this.db.transaction((start: number, end: number) => {
      for (let i = start; i < end; i++) this.stmtPut.run(this.keys.keyBytes(i), valueOf(i, 0));
    });
    const chunkKeys = 10_000;
    for (let start = from; start < to; start += chunkKeys) load(start, Math.min(to, start + chunkKeys));
  }

  async prepareRegime(regime: Regime): Promise<RegimeInfo> {
    return { regime, description: 'SQLite page cache 2 MB + OS page cache (data fits in RAM)' };
  }

  get(index: number): Uint8Array | undefined {
    const row = this.stmtGet.get(this.keys.keyBytes(index)) as [Uint8Array] | undefined;
    return row?.[0];
  }

  async put(index: number, value: Uint8Array): Promise<void> {
    this.stmtPut.run(this.keys.keyBytes(index), value);
  }

  async del(index: number): Promise<void> {
    this.stmtDel.run(this.keys.keyBytes(index));
  }

  async commit(ops: readonly WriteOp[]): Promise<void> {
    this.txCommit(ops);
  }

  async getThenPut(index: number, value: Uint8Array): Promise<void> {
    this.txGetThenPut(this.keys.keyBytes(index), value);
  }

  async scan(from: number, to: number, onEntry: () => boolean): Promise<number> {
    let entries = 0;
    const it = this.stmtScan.iterate(this.keys.keyBytes(from), this.keys.keyBytes(to));
    for (const row of it) {
      void row;
      entries++;
      if (!onEntry()) {
        it.return?.();
        break;
      }
    }
    return entries;
  }

  async deleteRange(from: number, to: number): Promise<void> {
    this.stmtDelRange.run(this.keys.keyBytes(from), this.keys.keyBytes(to));
  }

  cacheCounters(): undefined {
    return undefined;
  }

  stats(): unknown {
    return {};
  }

  async close(): Promise<void> {
    this.db.close();
  }
}

export async function createAdapter(): Promise<StoreAdapter> {
  const spec = 'better-sqlite3';
  let mod: { default?: DatabaseConstructor };
  try {
    mod = (await import(spec)) as { default?: DatabaseConstructor };
  } catch (err) {
    throw new Error(`better-sqlite3 is not installed or did not load (${(err as Error).message.split('\n')[0]})`);
  }
  if (typeof mod.default !== 'function') throw new Error('better-sqlite3 loaded but has no default export');
  return new SqliteAdapter(mod.default, packageVersion('better-sqlite3'));
}
