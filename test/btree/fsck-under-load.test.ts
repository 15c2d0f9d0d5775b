// SPDX-License-Identifier: GPL-2.0-only
/*
 * fsck() on a busy store: writers split, merge and grow two btrees while
 * fsck runs again and again. fsck freezes the topology for its walk
 * (Interior.freezeTopology), so every report must be clean: before, it
 * reported buckets "marked used but not in the tree" and nodes replaced under
 * its walk.
 */

import { afterEach, beforeEach, expect, it } from 'vitest';
import { pos } from '../../src/index.js';
import { prng, tmpStore, type TmpStore } from '../helpers/store.js';

let t: TmpStore;
beforeEach(async () => {
  t = await tmpStore({ btrees: [{ name: 'a' }, { name: 'b' }], nodeSize: 4096, sizeBytes: 64 * 1024 * 1024 });
});
afterEach(async () => {
  await t.cleanup();
});

it('fsck() under concurrent splits and merges in two btrees reports nothing', async () => {
  const s = t.store;
  const FSCKS = 25;
  const value = new Uint8Array(96).fill(7);
  let stop = false;
  const writer = async (w: number) => {
    const rnd = prng(1000 + w);
    while (!stop) {
      const btree = rnd() < 0.5 ? 'a' : 'b';
      if (rnd() < 0.15) {
        // a range delete empties leaves: merges (and root collapses)
        const from = Math.floor(rnd() * 4000);
        await s.transact((tx) => tx.delRange(btree, pos(1, from), pos(1, from + 200 + Math.floor(rnd() * 600))));
      } else {
        await s.transact((tx) => {
          for (let i = 0; i < 16; i++) tx.put(btree, pos(1, Math.floor(rnd() * 4000)), value);
        });
      }
    }
  };
  const writers = Array.from({ length: 6 }, (_, w) => writer(w));
  const reports: string[][] = [];
  let commitsDuringFsck = 0;
  try {
    // let the trees grow a few levels first
    while (s.stats().btrees.a!.depth < 2 || s.stats().btrees.b!.depth < 2) await new Promise((r) => setTimeout(r, 5));
    for (let i = 0; i < FSCKS; i++) {
      const before = s.stats().transactions.commits;
      reports.push(await s.fsck());
      commitsDuringFsck += s.stats().transactions.commits - before;
      await new Promise((r) => setTimeout(r, 10));
    }
  } finally {
    stop = true;
    await Promise.all(writers);
  }
  const st = s.stats().interior;
  // the load really changed the topology around the fscks, and commits went on during them
  expect(st.splits).toBeGreaterThan(20);
  expect(st.merges).toBeGreaterThan(5);
  expect(commitsDuringFsck).toBeGreaterThan(0);
  expect(reports.filter((r) => r.length)).toEqual([]);
  expect(await s.fsck()).toEqual([]);
}, 60_000);
