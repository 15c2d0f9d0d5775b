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
 *
 * A journaled commit learns its seq only at its reservation, after the room
 * was counted: a leaf whose format cannot pack that seq (the version field's
 * headroom used up) needs its keys counted again (commit.ts
 * versionsStillFit). Reached here by opening a store whose superblock says
 * the journal was at seq 2^32 + 5: a fresh store's first leaf packs versions
 * up to 2^32 - 1 only.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { KEY_TYPE, type BkeyI } from '../../src/btree/bkey.js';
import { posWords } from '../../src/btree/bpos.js';
import { transCommit } from '../../src/btree/commit.js';
import type { Node } from '../../src/btree/node.js';
import { formatVersionFits } from '../../src/format/bkey-format.js';
import { pos, Store } from '../../src/index.js';
import { readSuperblock, writeSuperblock } from '../../src/format/superblock.js';
import { MemDevice } from '../../src/io/mem-device.js';
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

  it('a journaled commit whose seq the leaf cannot pack counts its keys again: the leaf splits, nothing throws', async () => {
    const mem = MemDevice.create(16 << 20);
    await Store.formatDevice(mem, { btrees: [{ name: 'kv' }], nodeSize: 4096, blockSize: 512, journalSize: 1 << 20 });
    let img = mem.image();
    const sb = await readSuperblock(MemDevice.fromImage(img));
    const far = 2 ** 32 + 5;
    sb.cleanJournalSeq = far;
    const d = MemDevice.fromImage(img);
    await writeSuperblock(d, sb);
    img = d.image();
    const dev = MemDevice.fromImage(img);
    const s = await Store.openDevice(dev, { cacheSize: 2 << 20 });
    try {
      const e = s.engine;
      const root = e.roots[0]!.node!;
      expect(root.level).toBe(0);
      expect(formatVersionFits(root.keys.format, 0), 'the first leaf packs version 0 (a key is counted with it)').toBe(true);
      expect(formatVersionFits(root.keys.format, far + 1), 'but not the seqs commits now take').toBe(false);
      // fill the leaf to exactly the room of one key packed; each filler, committed
      // at a seq the format cannot pack, is stored unpacked
      const probe = valueKey(1, 8, 0);
      const packed = root.keys.keyU64sPacked(probe);
      const unpacked = root.keys.keyU64sPacked({ ...probe, version: far + 1 });
      expect(unpacked).toBeGreaterThan(packed);
      const fillerHdr = unpacked - 1;
      await s.put('kv', pos(1, 2), new Uint8Array(8));
      expect(e.journal.seq, 'the journal goes on past the recorded seq').toBeGreaterThan(far);
      let k = 3;
      // 400-byte values while far from the end, then two sized to land exactly (a value is at most 58 u64s here)
      while (root.keys.u64sRemaining() - packed > 2 * (fillerHdr + 58)) await s.put('kv', pos(1, k++), new Uint8Array(400).fill(1));
      const rest = root.keys.u64sRemaining() - packed - 2 * fillerHdr;
      const a = Math.ceil(rest / 2);
      expect(rest - a, 'the last fillers are of allowed sizes').toBeGreaterThanOrEqual(0);
      for (const u64s of [a, rest - a]) await s.put('kv', pos(1, k++), new Uint8Array(u64s * 8).fill(2));
      expect(e.roots[0]!.node, 'still one leaf').toBe(root);
      expect(root.keys.u64sRemaining(), 'room for the key packed, not unpacked').toBe(packed);
      const lost = e.counters.commitRoomLost;
      await s.put('kv', pos(1, 1), new Uint8Array(8).fill(7));
      expect(e.counters.commitRoomLost, 'the commit counted again after its reservation').toBeGreaterThan(lost);
      expect(e.roots[0]!.node!.level, 'the leaf split').toBe(1);
      expect(await s.get('kv', pos(1, 1))).toEqual(new Uint8Array(8).fill(7));
      for (let i = 2; i < k; i++) expect((await s.get('kv', pos(1, i)))?.length, `key ${i}`).toBeGreaterThan(0);
      expect(await s.fsck()).toEqual([]);
      await s.close();
      const s2 = await Store.openDevice(MemDevice.fromImage(dev.image()), { cacheSize: 2 << 20 });
      expect(await s2.get('kv', pos(1, 1))).toEqual(new Uint8Array(8).fill(7));
      expect(await s2.fsck()).toEqual([]);
      await s2.close();
    } finally {
      await s.close().catch(() => {});
    }
  });
});
