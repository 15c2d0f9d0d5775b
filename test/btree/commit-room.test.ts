// SPDX-License-Identifier: GPL-2.0-only
/*
 * transCommit counts a leaf's room with the version each key will carry.
 * A key's version is the journal seq of its commit, and whether it packs into
 * the node's format depends on it: a key counted packed and inserted unpacked
 * does not fit, and the commit threw "keys did not fit ... after the space
 * check". Journal replay commits without a journal entry at a pinned seq (for
 * a group of pointer keys, the oldest of their seqs): found by the kill -9
 * test as an open that failed on a level-1 node. Here the same on a leaf: a
 * leaf whose format's versions start above seq 1, filled to just under the
 * room of one unpacked key, takes a key committed at that seq.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { KEY_TYPE, type BkeyI } from '../../src/btree/bkey.js';
import { posWords } from '../../src/btree/bpos.js';
import { transCommit } from '../../src/btree/commit.js';
import type { Node } from '../../src/btree/node.js';
import { formatVersionFits } from '../../src/format/bkey-format.js';
import { pos } from '../../src/index.js';
import { tmpStore, type TmpStore } from '../helpers/store.js';

let t: TmpStore | null = null;
afterEach(async () => {
  await t?.cleanup();
  t = null;
});

function valueKey(offset: number, valueBytes: number, version: number): BkeyI {
  return { type: KEY_TYPE.value, p: posWords(pos(1, offset)), size: 0, version, value: new Uint8Array(valueBytes).fill(7) };
}

describe('transCommit: room for keys at a pinned seq', () => {
  it('a key that packs at its own version but not at the pinned seq is counted unpacked: the leaf splits instead of the commit failing', async () => {
    t = await tmpStore({ btrees: [{ name: 'kv' }], nodeSize: 4096, sizeBytes: 32 << 20 });
    const s = t.store;
    const e = s.engine;
    // seqs first (another inode), then inode 1's keys in batches: its leaves are
    // built by splits at seqs > 300, in formats whose versions start there
    for (let i = 0; i < 300; i++) await s.put('kv', pos(2, i), new Uint8Array(8));
    for (let b = 0; b < 8; b++) {
      await s.transact((tx) => {
        for (let i = 0; i < 100; i++) tx.put('kv', pos(1, 1000 + (b * 100 + i) * 16), new Uint8Array(24));
      });
    }
    // the pinned seq: the oldest the journal still holds (a pin must be in its live window)
    const pinSeq = s.stats().journal.lastSeq;
    const leaves: Node[] = [];
    for (const n of e.cache.liveNodes()) {
      if (n.level === 0 && n.btreeId === 0 && n.keys.minKey[1] === 1 && n.keys.maxKey[1] === 1 && !formatVersionFits(n.keys.format, pinSeq)) leaves.push(n);
    }
    expect(leaves.length, `a leaf of inode 1 whose format cannot pack version ${pinSeq}`).toBeGreaterThan(0);
    const leaf = leaves[0]!;
    const seqNow = e.journal.seq;
    // a free offset inside the leaf (keys are 16 apart)
    const lo = Number(leaf.keys.minKey[3]!) + 1;
    const probe = valueKey(lo + 1, 8, seqNow);
    const packed = leaf.keys.keyU64sPacked(probe);
    const unpacked = leaf.keys.keyU64sPacked({ ...probe, version: pinSeq });
    expect(unpacked, 'the pinned seq does not pack').toBeGreaterThan(packed);

    const commit = async (keys: BkeyI[], pinSeq: number) => {
      await (e as unknown as { runInternal(fn: (bt: unknown) => Promise<number>): Promise<void> }).runInternal(async (bt) => {
        const r = await transCommit(bt as never, { updates: keys.map((key) => ({ btreeId: 0, level: 0, key, path: null })), journal: false, pinSeq });
        return r.ret;
      });
    };
    // fill the leaf to `packed` u64s of room with one key (sized to the room), at the current seq
    const room = leaf.keys.u64sRemaining();
    const fillerHdr = leaf.keys.keyU64sPacked(valueKey(lo, 0, seqNow));
    const fillerU64s = room - packed;
    expect(fillerU64s, 'the leaf has room for a filler and the key').toBeGreaterThan(fillerHdr);
    await commit([valueKey(lo, (fillerU64s - fillerHdr) * 8, seqNow)], seqNow);
    expect(e.cache.cacheFind(leaf.hashVal) === leaf && leaf.keys.u64sRemaining(), 'the leaf has room for the key packed, not unpacked').toBe(packed);

    // the key, carrying a version that packs, committed at the pinned seq (as replay does)
    await commit([valueKey(lo + 1, 8, seqNow)], pinSeq);
    expect(await s.get('kv', pos(1, lo + 1))).toEqual(new Uint8Array(8).fill(7));
    expect(await s.get('kv', pos(1, lo))).toBeDefined();
    expect(await s.fsck()).toEqual([]);
  });
});
