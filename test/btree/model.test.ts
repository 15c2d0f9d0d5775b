// SPDX-License-Identifier: GPL-2.0-only
/*
 * Differential test: random operations (put, del, putExtent, delRange, get,
 * range scans, iterator calls) against an in-memory model, with 4 KiB nodes
 * and a small cache so splits, merges and evictions happen constantly;
 * compared every 1,000 operations and after close/reopen; topology checked.
 * SIXTREE_MODEL_OPS sets the operation count (default below).
 */

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { pos } from '../../src/index.js';
import { prng, tmpStore, type TmpStore } from '../helpers/store.js';

const OPS = Number(process.env.SIXTREE_MODEL_OPS ?? 20_000);
const KEYSPACE = 20_000;

let t: TmpStore;
beforeEach(async () => {
  t = await tmpStore({ cacheSize: 512 * 1024, sizeBytes: 128 * 1024 * 1024 });
});
afterEach(async () => {
  await t.cleanup();
});

/** Model of an extents btree: one value byte per covered offset (inode 0). */
class ExtentModel {
  cells = new Map<number, [number, number]>(); // offset -> [value tag, offset within original]
  put(start: number, size: number, tag: number): void {
    for (let i = 0; i < size; i++) this.cells.set(start + i, [tag, i]);
  }
  del(start: number, end: number): void {
    for (let i = start; i < end; i++) this.cells.delete(i);
  }
}

describe('differential model', () => {
  it(`${OPS} random operations match a sorted model`, async () => {
    const rand = prng(12345);
    const model = new Map<number, number>();
    const ext = new ExtentModel();
    let tag = 1;

    const compare = async () => {
      const s = t.store;
      const want = [...model.entries()].sort((a, b) => a[0] - b[0]);
      const got: Array<[number, number]> = [];
      for await (const e of s.range('kv')) got.push([Number(e.pos.offset), e.value[0]! | (e.value[1]! << 8)]);
      expect(got.length).toBe(want.length);
      expect(got).toEqual(want);
      // reverse scan
      const rev: number[] = [];
      for await (const e of s.range('kv', { reverse: true, limit: 50 })) rev.push(Number(e.pos.offset));
      expect(rev).toEqual(want.slice(-50).map((x) => x[0]).reverse());
      // extents: expand to cells
      const cells = new Map<number, [number, number]>();
      for await (const e of s.range('ext')) {
        const st = Number(e.start!.offset);
        const end = Number(e.pos.offset);
        const t0 = e.value[0]! | (e.value[1]! << 8);
        for (let i = st; i < end; i++) {
          expect(cells.has(i)).toBe(false);
          cells.set(i, [t0, Number(e.valueOffset!) + (i - st)]);
        }
      }
      expect(cells.size).toBe(ext.cells.size);
      for (const [k, v] of ext.cells) expect(cells.get(k)).toEqual(v);
      expect(await s.fsck()).toEqual([]);
    };

    const val = (n: number) => {
      const b = new Uint8Array(2 + (n % 40));
      b[0] = n & 0xff;
      b[1] = (n >> 8) & 0xff;
      return b;
    };

    for (let op = 1; op <= OPS; op++) {
      const r = rand();
      const k = Math.floor(rand() * KEYSPACE);
      if (r < 0.45) {
        const n = Math.floor(rand() * 65536);
        const batch = rand() < 0.1 ? 20 : 1;
        await t.store.transact((tx) => {
          for (let i = 0; i < batch; i++) {
            const kk = (k + i * 7) % KEYSPACE;
            tx.put('kv', pos(0, kk), val(n));
            model.set(kk, n & 0xffff);
          }
        });
      } else if (r < 0.65) {
        await t.store.del('kv', pos(0, k));
        model.delete(k);
      } else if (r < 0.7) {
        const len = 1 + Math.floor(rand() * 200);
        await t.store.transact((tx) => tx.delRange('kv', pos(0, k), pos(0, k + len)));
        for (let i = k; i < k + len; i++) model.delete(i);
      } else if (r < 0.8) {
        const size = 1 + Math.floor(rand() * 64);
        const tg = tag++ & 0xffff;
        await t.store.transact((tx) => tx.putExtent('ext', pos(0, k), size, val(tg)));
        ext.put(k, size, tg);
      } else if (r < 0.83) {
        const len = 1 + Math.floor(rand() * 100);
        await t.store.transact((tx) => tx.delRange('ext', pos(0, k), pos(0, k + len)));
        ext.del(k, k + len);
      } else {
        const v = await t.store.get('kv', pos(0, k));
        const m = model.get(k);
        if (m === undefined) expect(v).toBeUndefined();
        else expect(v![0]! | (v![1]! << 8)).toBe(m);
      }
      if (op % 1000 === 0) await compare();
      if (op % 5000 === 0) {
        await t.reopen({ cacheSize: 512 * 1024 });
        await compare();
      }
    }
    await compare();
    const st = t.store.stats();
    expect(st.cache.evictions).toBeGreaterThan(0);
    expect(st.btrees.kv!.depth).toBeGreaterThanOrEqual(2);
  });
});
