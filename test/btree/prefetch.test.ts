// SPDX-License-Identifier: GPL-2.0-only
/*
 * Iterator read-ahead (engine.maybePrefetch, tx.iter's prefetch option) reads
 * the child after the path's leaf from the path's parent. A read path does
 * not hold its parent's lock, so the parent's Node object may have become
 * another node since, even one of another btree. Reading ahead from it
 * labelled with the path's btree read that btree's child as ours: the read
 * failed its header check, and a transaction reading that child, waiting on
 * the read, got ERR_TOPOLOGY "btree id 1 does not match the pointer's 0"
 * (the stress campaign, seed 27604: bank scans with prefetch beside chain
 * appends; store.get reads again after a failed read and did not show it).
 * Here the reuse is staged: the path's parent is swapped for the other
 * btree's level-1 node, as a reused Node object would be. Without the fix
 * the b transaction rejects with that error (checked).
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { BtreePath } from '../../src/btree/path.js';
import { pos } from '../../src/index.js';
import type { BtreeTrans } from '../../src/btree/trans.js';
import { tmpStore, type TmpStore } from '../helpers/store.js';

let t: TmpStore | null = null;
afterEach(async () => {
  await t?.cleanup();
  t = null;
});

function val(i: number): Uint8Array {
  return new Uint8Array(40).fill(i & 0xff);
}

describe('iterator read-ahead from a parent that became another node', () => {
  it('reads nothing ahead, and a reader of the other btree gets its node', async () => {
    t = await tmpStore({ btrees: [{ name: 'a' }, { name: 'b' }], nodeSize: 4096, cacheSize: 1 << 20 });
    const s = t.store;
    for (const name of ['a', 'b']) {
      for (let i = 0; i < 3000; i += 100) {
        await s.transact((tx) => {
          for (let k = i; k < i + 100; k++) tx.put(name, pos(1, k), val(k));
        });
      }
    }
    const e = s.engine;
    expect(e.roots[0]!.node!.level, 'btree a has interior nodes').toBeGreaterThanOrEqual(1);
    expect(e.roots[1]!.node!.level, 'btree b too').toBeGreaterThanOrEqual(1);
    await s.flush();
    s.shrink();
    const prefetchesBefore = e.counters.prefetches;
    const staleBefore = e.counters.prefetchesStale;
    // a's iterator at its first leaf; its path's parent swapped for b's root
    let bKeyAhead = -1;
    let bRead: Promise<Uint8Array | undefined> | null = null;
    await s.transact(async (tx) => {
      const internalsOf = (x: unknown) => x as { trans: BtreeTrans; view: { btreePath: BtreePath } };
      // b's level-1 node over its first leaves
      const itB = tx.iter('b', pos(1, 0));
      await itB.peek();
      const parentB = internalsOf(itB).view.btreePath.l[1]!.node!;
      expect(parentB.btreeId).toBe(1);
      const it = tx.iter('a', pos(1, 0));
      await it.peek();
      const internals = internalsOf(it);
      const path = internals.view.btreePath;
      const leafMax = path.l[0]!.node!.keys.maxKey;
      bKeyAhead = leafMax[3]! + 1; // the first key of the next leaf, were it b's
      const parentWas = path.l[1]!.node;
      expect(parentWas!.btreeId).toBe(0);
      path.l[1]!.node = parentB;
      try {
        e.maybePrefetch(internals.trans, path, true);
        // b's reader of that leaf (a transaction, as the campaign's) starts at once: it would wait on a read-ahead had one started
        bRead = s.transact((tx2) => tx2.get('b', pos(1, bKeyAhead)));
      } finally {
        path.l[1]!.node = parentWas;
      }
    });
    // b's reader gets b's node
    expect(await bRead!).toEqual(val(bKeyAhead));
    expect(e.counters.prefetches, 'no read-ahead from a parent that is not the one the path took').toBe(prefetchesBefore);
    expect(e.counters.prefetchesStale).toBe(staleBefore + 1);
    expect(await s.fsck()).toEqual([]);
  });
});
