// SPDX-License-Identifier: GPL-2.0-only
/*
 * Recovery's order for the journal's pointer keys (engine.ts
 * replayPointerOrder): the newest key per position, deletions before
 * insertions, top level first, in position order; and the crash image that
 * showed why (the crash campaign, seed 1717010 with wipes: a root split during
 * a seq-order replay, at a pointer a later merge of the window removed,
 * left a merged leaf's range across two parents; the open failed with
 * ERR_TOPOLOGY "no child pointer covers the position").
 */
import { describe, expect, it, vi } from 'vitest';
import { NodeKeys } from '../../src/btree/bset.js';
import { SixtreeError } from '../../src/errors.js';
import { KEY_TYPE, bkeyNew, type BkeyI } from '../../src/btree/bkey.js';
import { posWords, wordsToText } from '../../src/btree/bpos.js';
import { replayPointerOrder } from '../../src/engine.js';
import { MemDevice } from '../../src/io/mem-device.js';
import { pos } from '../../src/index.js';
import { Store } from '../../src/store.js';
import { expectRecovered, fixtureImage } from './fixture-images.js';

function key(offset: number, deleted = false): BkeyI {
  return bkeyNew(deleted ? KEY_TYPE.deleted : KEY_TYPE.btree_ptr, posWords(pos(0n, BigInt(offset))), deleted ? {} : { value: new Uint8Array(36) });
}

describe('replayPointerOrder', () => {
  it('keeps the newest key per (btree, level, position), pinned at the oldest, and orders btree, level (top first), deletions, insertions, position', () => {
    const keys = [
      { seq: 10, btreeId: 0, level: 1, key: key(50), tag: 'a' },
      { seq: 10, btreeId: 0, level: 1, key: key(20), tag: 'b' },
      { seq: 11, btreeId: 0, level: 1, key: key(20, true), tag: 'c' }, // merge: 20 goes
      { seq: 11, btreeId: 0, level: 1, key: key(30), tag: 'd' },
      { seq: 12, btreeId: 0, level: 1, key: key(30, true), tag: 'e' }, // and again
      { seq: 12, btreeId: 0, level: 1, key: key(40), tag: 'f' },
      { seq: 12, btreeId: 0, level: 1, key: key(40, true), tag: 'g' }, // same entry: the later one wins
      { seq: 12, btreeId: 0, level: 1, key: key(40), tag: 'h' },
      { seq: 9, btreeId: 0, level: 2, key: key(99), tag: 'i' },
      { seq: 13, btreeId: 1, level: 1, key: key(5, true), tag: 'j' },
    ];
    const out = replayPointerOrder(keys);
    expect(out.map((k) => k.tag)).toEqual(['i', 'c', 'e', 'h', 'a', 'j']);
    expect(out.map((k) => wordsToText(k.key.p))).toEqual(['0:99:0', '0:20:0', '0:30:0', '0:40:0', '0:50:0', '0:5:0']);
    /* each pinned at the oldest seq its position had in the window (a torn append's keys keep the window back) */
    expect(out.map((k) => k.pinSeq)).toEqual([9, 10, 11, 12, 10, 13]);
  });
});

describe('a crash image whose window merged across a pointer a seq-order replay split at', () => {
  it('recovers: opens, fsck clean, every key readable', async () => {
    const store = await Store.openDevice(MemDevice.fromImage(fixtureImage('crash-wipe-merges-replay.img.gz')), { cacheSize: 512 << 10 });
    try {
      expect(store.stats().writeback.replayedKeys).toBeGreaterThan(500);
      /* what the campaign's store held at the crash (59 keys; the ext btree's extents) */
      await expectRecovered(store, { kv: 59, ext: 40 });
    } finally {
      await store.close();
    }
  });
});

describe('a replay that fails an internal check', () => {
  it('ends the open with ERR_TOPOLOGY naming the entry, the internal error as its cause', async () => {
    const img = fixtureImage('crash-wipe-merges-replay.img.gz');
    // what a tree whose pointers send a key to a node not holding it makes insertKey throw
    const spy = vi.spyOn(NodeKeys.prototype, 'insertKey').mockImplementationOnce(function (this: NodeKeys) {
      throw new RangeError('insertKey: 1:2632:0 outside node range 1:740:1..1:1480:0');
    });
    try {
      const err = await Store.openDevice(MemDevice.fromImage(img), { cacheSize: 512 << 10 }).then(
        async (s) => {
          await s.close();
          return null;
        },
        (e: unknown) => e,
      );
      expect(spy).toHaveBeenCalled();
      expect(err).toBeInstanceOf(SixtreeError);
      const e = err as SixtreeError;
      expect(e.code).toBe('ERR_TOPOLOGY');
      expect(e.message).toMatch(/^recovery: replaying journal entry \d+ \(btree \w+ level \d, \d+ keys from [\d:]+\) failed on .*: insertKey: 1:2632:0 outside node range/);
      expect(e.cause).toBeInstanceOf(RangeError);
    } finally {
      spy.mockRestore();
    }
    // the image itself is untouched by the failed open: it opens
    const store = await Store.openDevice(MemDevice.fromImage(img), { cacheSize: 512 << 10 });
    expect(await store.fsck()).toEqual([]);
    await store.close();
  });
});
