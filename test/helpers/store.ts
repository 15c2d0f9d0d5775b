// SPDX-License-Identifier: GPL-2.0-only
/*
 * Test helpers: a fresh file-backed store per test on the real file system
 * (/tmp is ext4 here; tmpfs would hide O_DIRECT alignment bugs).
 */

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../../src/index.js';
import { Prng } from '../format/prng.js';

export interface TmpStoreOpts {
  btrees?: Array<{ name: string; extents?: boolean }>;
  sizeBytes?: number;
  nodeSize?: number;
  blockSize?: number;
  cacheSize?: number;
  journalSize?: number;
  io?: 'napi' | 'koffi';
}

export interface TmpStore {
  store: Store;
  path: string;
  dir: string;
  reopen(opts?: { cacheSize?: number; readOnly?: boolean }): Promise<Store>;
  cleanup(): Promise<void>;
}

export const DEFAULT_BTREES = [
  { name: 'kv' },
  { name: 'ext', extents: true },
];

export async function tmpStore(opts: TmpStoreOpts = {}): Promise<TmpStore> {
  const dir = mkdtempSync(join(tmpdir(), 'sixtree-test-'));
  const path = join(dir, 'store.img');
  await Store.format(path, {
    btrees: opts.btrees ?? DEFAULT_BTREES,
    size: opts.sizeBytes ?? 64 * 1024 * 1024,
    nodeSize: opts.nodeSize ?? 4096,
    blockSize: opts.blockSize ?? 512,
    ...(opts.journalSize ? { journalSize: opts.journalSize } : {}),
  });
  const openOpts = { ...(opts.cacheSize ? { cacheSize: opts.cacheSize } : {}), ...(opts.io ? { io: opts.io } : {}) };
  const t: TmpStore = {
    store: await Store.open(path, openOpts),
    path,
    dir,
    async reopen(o = {}) {
      try {
        await t.store.close();
      } catch {
        /* already closed */
      }
      t.store = await Store.open(path, { ...openOpts, ...o });
      return t.store;
    },
    async cleanup() {
      try {
        await t.store.close();
      } catch {
        /* already closed */
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return t;
}

/** Deterministic PRNG (the shared mulberry32 of test/format/prng.ts) as a [0, 1) function, so failures reproduce. */
export function prng(seed: number): () => number {
  const p = new Prng(seed);
  return () => p.u32() / 0x1_0000_0000;
}

export function u64le(n: number | bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
  return b;
}

export function readU64le(b: Uint8Array): bigint {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(0, true);
}
