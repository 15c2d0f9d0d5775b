// SPDX-License-Identifier: GPL-2.0-only
/*
 * Extent overwrites (bcachefs tests.c test_extent_overwrite_*): a new extent
 * replaces the overlapped part of older ones, which are trimmed or split,
 * keeping their value and adjusting valueOffset. Then reverse walks over
 * committed extents with range deletions pending in the same transaction.
 */

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { pos, type Bpos, type Entry, type Transaction } from '../../src/index.js';
import { tmpStore, type TmpStore } from '../helpers/store.js';

let t: TmpStore;
beforeEach(async () => {
  t = await tmpStore();
});
afterEach(async () => {
  await t.cleanup();
});

const A = new Uint8Array([0xaa]);
const B = new Uint8Array([0xbb]);

async function extents(): Promise<Array<[number, number, number, number]>> {
  const out: Array<[number, number, number, number]> = [];
  for await (const e of t.store.range('ext')) out.push(shape(e));
  return out;
}

function shape(e: Entry): [number, number, number, number] {
  return [Number(e.start!.offset), Number(e.pos.offset), Number(e.valueOffset), e.value[0]!];
}

async function overwrite(s1: number, l1: number, s2: number, l2: number): Promise<Array<[number, number, number, number]>> {
  await t.store.transact((tx) => tx.putExtent('ext', pos(1, s1), l1, A));
  await t.store.transact((tx) => tx.putExtent('ext', pos(1, s2), l2, B));
  return extents();
}

describe('Transaction#putExtent() overwrites', () => {
  it('overwrite_front', async () => {
    expect(await overwrite(0, 64, 0, 32)).toEqual([
      [0, 32, 0, 0xbb],
      [32, 64, 32, 0xaa],
    ]);
  });
  it('overwrite_back', async () => {
    expect(await overwrite(0, 64, 32, 32)).toEqual([
      [0, 32, 0, 0xaa],
      [32, 64, 0, 0xbb],
    ]);
  });
  it('overwrite_middle', async () => {
    expect(await overwrite(0, 64, 16, 32)).toEqual([
      [0, 16, 0, 0xaa],
      [16, 48, 0, 0xbb],
      [48, 64, 48, 0xaa],
    ]);
  });
  it('overwrite_all', async () => {
    expect(await overwrite(32, 32, 0, 128)).toEqual([[0, 128, 0, 0xbb]]);
  });
  it('create_overlapping: one new extent over several', async () => {
    await t.store.transact((tx) => {
      tx.putExtent('ext', pos(1, 0), 16, A);
      tx.putExtent('ext', pos(1, 32), 16, A);
      tx.putExtent('ext', pos(1, 64), 16, A);
    });
    await t.store.transact((tx) => tx.putExtent('ext', pos(1, 8), 64, B));
    expect(await extents()).toEqual([
      [0, 8, 0, 0xaa],
      [8, 72, 0, 0xbb],
      [72, 80, 8, 0xaa],
    ]);
  });
  it('overwrite written extents after reopen, and delRange trims the edges', async () => {
    await t.store.transact((tx) => tx.putExtent('ext', pos(1, 0), 100, A));
    await t.store.flush();
    await t.reopen();
    await t.store.transact((tx) => tx.delRange('ext', pos(1, 10), pos(1, 20)));
    await t.store.transact((tx) => tx.putExtent('ext', pos(1, 90), 20, B));
    expect(await extents()).toEqual([
      [0, 10, 0, 0xaa],
      [20, 90, 20, 0xaa],
      [90, 110, 0, 0xbb],
    ]);
    await t.reopen();
    expect(await extents()).toEqual([
      [0, 10, 0, 0xaa],
      [20, 90, 20, 0xaa],
      [90, 110, 0, 0xbb],
    ]);
  });
  it('extents in the same transaction overwrite each other', async () => {
    await t.store.transact((tx) => {
      tx.putExtent('ext', pos(2, 0), 64, A);
      tx.putExtent('ext', pos(2, 16), 16, B);
    });
    expect(await extents()).toEqual([
      [0, 16, 0, 0xaa],
      [16, 32, 0, 0xbb],
      [32, 64, 32, 0xaa],
    ]);
  });

  it('an extent replaces only what it overlaps in its own snapshot: other snapshots of the inode keep theirs (committed, pending, in the transaction view)', async () => {
    const snaps = async (): Promise<string[]> => {
      const out: string[] = [];
      for await (const e of t.store.range('ext', { end: pos(2, 0) })) out.push(`${e.start!.snapshot}:${e.start!.offset}..${e.pos.offset}+${e.valueOffset}=${e.value[0]}`);
      return out;
    };
    await t.store.transact((tx) => tx.putExtent('ext', pos(1, 0, 1), 100, new Uint8Array([1])));
    await t.store.transact((tx) => tx.putExtent('ext', pos(1, 0, 3), 100, new Uint8Array([3])));
    expect(await snaps()).toEqual(['1:0..100+0=1', '3:0..100+0=3']);
    // committed extents of snapshots 1 and 3 around a write in snapshot 2
    await t.store.transact((tx) => tx.putExtent('ext', pos(1, 50, 2), 10, new Uint8Array([2])));
    expect(await snaps()).toEqual(['2:50..60+0=2', '1:0..100+0=1', '3:0..100+0=3']);
    // pending ones in the same transaction, and what the transaction sees
    await t.store.transact(async (tx) => {
      tx.putExtent('ext', pos(5, 0, 1), 40, new Uint8Array([1]));
      tx.putExtent('ext', pos(5, 10, 2), 5, new Uint8Array([2]));
      tx.putExtent('ext', pos(5, 20, 1), 5, new Uint8Array([9]));
      const seen: string[] = [];
      for await (const e of tx.iter('ext', pos(5, 0))) seen.push(`${e.start!.snapshot}:${e.start!.offset}..${e.pos.offset}`);
      expect(seen).toEqual(['2:10..15', '1:0..20', '1:20..25', '1:25..40']);
    });
    const inode5: string[] = [];
    for await (const e of t.store.range('ext', { start: pos(5, 0) })) inode5.push(`${e.start!.snapshot}:${e.start!.offset}..${e.pos.offset}+${e.valueOffset}=${e.value[0]}`);
    expect(inode5).toEqual(['2:10..15+0=2', '1:0..20+0=1', '1:20..25+0=9', '1:25..40+25=1']);
    // delRange still deletes every position in its range, all snapshots
    await t.store.transact((tx) => tx.delRange('ext', pos(1, 55, 0), pos(1, 57, 0)));
    expect(await snaps()).toEqual(['1:0..55+0=1', '2:50..55+0=2', '3:0..55+0=3', '2:57..60+7=2', '1:57..100+57=1', '3:57..100+57=3']);
  });
});

describe('Iter#prev() on extents with a pending delRange', () => {
  async function reverse(from: Bpos, pending: (tx: Transaction) => void): Promise<Array<[number, number, number, number]>> {
    return t.store.transact(async (tx) => {
      pending(tx);
      const out: Array<[number, number, number, number]> = [];
      const it = tx.iter('ext', from);
      for (let e = await it.peekPrev(); e; e = await it.prev()) out.push(shape(e));
      return out;
    });
  }

  it('a wholly deleted extent does not hide the one ending at its start', async () => {
    await t.store.transact((tx) => {
      tx.putExtent('ext', pos(1, 10), 10, A);
      tx.putExtent('ext', pos(1, 20), 10, B);
      tx.putExtent('ext', pos(1, 40), 10, A);
    });
    expect(await reverse(pos(1, 100), (tx) => tx.delRange('ext', pos(1, 20), pos(1, 30)))).toEqual([
      [40, 50, 0, 0xaa],
      [10, 20, 0, 0xaa],
    ]);
  });

  it('the lower piece of the extent before a wholly deleted one (issue 6)', async () => {
    // the model test's layout: [215..219) vo 9 then [219..225), delRange [217..247)
    await t.store.transact((tx) => {
      tx.putExtent('ext', pos(3, 206), 13, A);
      tx.putExtent('ext', pos(3, 214), 1, B);
      tx.putExtent('ext', pos(3, 219), 6, B);
      tx.putExtent('ext', pos(3, 258), 1, A);
    });
    await t.store.flush();
    expect(await reverse(pos(3, 300), (tx) => tx.delRange('ext', pos(3, 217), pos(3, 247)))).toEqual([
      [258, 259, 0, 0xaa],
      [215, 217, 9, 0xaa],
      [214, 215, 0, 0xbb],
      [206, 214, 0, 0xaa],
    ]);
  });
});
