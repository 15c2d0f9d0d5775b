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
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { KEY_TYPE, bkeyNew, type BkeyI } from '../../src/btree/bkey.js';
import { posWords, wordsToText } from '../../src/btree/bpos.js';
import { replayPointerOrder } from '../../src/engine.js';
import { MemDevice } from '../../src/io/mem-device.js';
import { pos } from '../../src/index.js';
import { Store } from '../../src/store.js';

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
    const img = new Uint8Array(gunzipSync(readFileSync(new URL('./fixtures/crash-wipe-merges-replay.img.gz', import.meta.url))));
    const store = await Store.openDevice(MemDevice.fromImage(img), { cacheSize: 512 << 10 });
    try {
      expect(store.stats().writeback.replayedKeys).toBeGreaterThan(500);
      expect(await store.fsck()).toEqual([]);
      let kv = 0;
      for await (const e of store.range('kv')) {
        expect(await store.get('kv', e.pos)).toEqual(e.value);
        kv++;
      }
      let ext = 0;
      for await (const _ of store.range('ext')) ext++;
      /* what the campaign's store held at the crash (59 keys; the ext btree's extents) */
      expect([kv, ext]).toEqual([59, 40]);
      await store.put('kv', pos(7n, 7n), new Uint8Array([7]));
      expect(await store.get('kv', pos(7n, 7n))).toEqual(new Uint8Array([7]));
    } finally {
      await store.close();
    }
  });
});
