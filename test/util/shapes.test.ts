// SPDX-License-Identifier: GPL-2.0-only
/*
 * The objects a store keeps for V8's hidden classes (src/util/shapes.ts):
 * what is kept holds none of a finished transaction's data, and with them
 * kept a full garbage collection while the store is idle throws away no
 * optimized function (V8's --trace-deopt "weak objects" lines, counted in a
 * real child process running bench/idle-burst.ts (its runChild); the same child with the
 * keeping off shows that the collection does throw code away there, so the
 * check is not empty). npm test runs tsc first, so dist/ holds this tree.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { Transaction, type Store } from '../../src/index.js';
import { BtreeOverlay } from '../../src/btree/overlay.js';
import { Iter } from '../../src/btree/iter.js';
import { JournalRes } from '../../src/journal/journal.js';
import { shapeKeeping } from '../../src/util/shapes.js';
import { tmpStore, type TmpStore } from '../helpers/store.js';
import { runChild } from '../../bench/idle-burst.js';

const IDLE_BURST = fileURLToPath(new URL('../../dist/bench/idle-burst.js', import.meta.url));

const pos = (offset: number) => ({ inode: 1n, offset: BigInt(offset), snapshot: 0 });
const value = (i: number) => new Uint8Array(200).fill(i & 0xff);

let t: TmpStore | null = null;
afterEach(async () => {
  shapeKeeping.on = true;
  await t?.cleanup();
  t = null;
});

function shapes(store: Store) {
  return store.engine.shapes;
}

describe('objects kept for their hidden classes', () => {
  it('keeps the last transaction, overlay and journal reservation, emptied of the updates', async () => {
    t = await tmpStore();
    const s = t.store;
    await s.transact((tx) => {
      for (let i = 0; i < 1500; i++) tx.put('kv', pos(i), value(i));
      tx.delRange('kv', pos(10_000), pos(20_000));
    });
    const tx = shapes(s).kept(Transaction);
    expect(tx).toBeDefined();
    expect(tx!.bt.done).toBe(true);
    expect(tx!.bt.hasUpdates()).toBe(false);
    expect(tx!.bt.readSet.length).toBe(0);
    const ov = shapes(s).kept(BtreeOverlay);
    expect(ov).toBeDefined();
    expect(ov!.empty).toBe(true);
    expect(ov!.keys.length).toBe(0);
    expect(shapes(s).kept(JournalRes)?.released).toBe(true);
    // what the transaction wrote is in the store all the same
    expect(await s.get('kv', pos(1499))).toEqual(value(1499));
    expect(s.engine.toText()).toMatch(/shapes kept: .*Transaction/);
  });

  it('sheds an attempt whose callback failed as well', async () => {
    t = await tmpStore();
    const s = t.store;
    await expect(
      s.transact((tx) => {
        for (let i = 0; i < 100; i++) tx.put('kv', pos(i), value(i));
        throw new Error('callback failed');
      }),
    ).rejects.toThrow('callback failed');
    expect(shapes(s).kept(Transaction)!.bt.hasUpdates()).toBe(false);
    expect(await s.get('kv', pos(0))).toBeUndefined();
  });

  it('keeps the last tx.iter() and range() iterators; nothing when keeping is off', async () => {
    t = await tmpStore();
    const s = t.store;
    await s.transact((tx) => {
      for (let i = 0; i < 50; i++) tx.put('kv', pos(i), value(i));
    });
    await s.transact(async (tx) => {
      const it = tx.iter('kv');
      expect(await it.peek()).not.toBeNull();
    });
    expect(shapes(s).kept(Iter)).toBeDefined();
    let n = 0;
    for await (const e of s.range('kv')) n += e.value.length > 0 ? 1 : 0;
    expect(n).toBe(50);
    expect(shapes(s).toText()).toMatch(/RangeIterator/);

    await t.cleanup();
    shapeKeeping.on = false;
    t = await tmpStore();
    await t.store.put('kv', pos(1), value(1));
    expect(shapes(t.store).toText()).toBe('shapes kept: none');
  });

  it('a full collection while idle throws away no optimized code (--trace-deopt, in a child)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sixtree-shapes-'));
    try {
      const weakDeopts = (mode: 'keep' | 'off'): number =>
        runChild({ script: IDLE_BURST, file: join(dir, `${mode}.img`), mode, keyCount: 20_000, rounds: 2, idleMs: 100, gcInIdle: true }).deoptsInIdle;
      // without the keeping the collection frees maps that optimized code named
      expect(weakDeopts('off')).toBeGreaterThan(5);
      expect(weakDeopts('keep')).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
