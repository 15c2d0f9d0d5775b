// SPDX-License-Identifier: GPL-2.0-only
/*
 * tx.delRange on a key btree (commit.ts overlayExpandKeys): at commit the
 * btree's live keys in [start, end) are read leaf by leaf and become
 * whiteouts, merged with the transaction's own puts and dels (which win at
 * their positions). The ranges here are cut at the leaves' edges (ending at
 * a leaf's max key, just past it, starting at its min key), reach over many
 * leaves, over leaves that must be read first (the cache emptied before
 * each transaction: flushed, then shrunk), and hold pending puts that must survive. Every step is
 * checked against a model, and the whole again after a reopen. And
 * store.clear, which deletes a range of any size in as many such commits as
 * it takes.
 */

import { afterEach, describe, expect, it } from 'vitest';
import { POS_MAX, Store, bposCmp, pos, type Bpos } from '../../src/index.js';
import { bposSuccessor } from '../../src/btree/bpos.js';
import { readU64le, tmpStore, u64le, type TmpStore } from '../helpers/store.js';
import { FaultDevice } from '../../src/io/fault-device.js';
import { MemDevice } from '../../src/io/mem-device.js';

let t: TmpStore | null = null;
afterEach(async () => {
  await t?.cleanup();
  t = null;
});

/** The model: offset (inode 0, snapshot 0) -> the tag its value holds. */
type Model = Map<bigint, number>;

interface Leaf {
  minKey: Bpos;
  maxKey: Bpos;
}

async function leaves(s: Store): Promise<Leaf[]> {
  return s.transact(async (tx) => {
    const out: Leaf[] = [];
    const it = tx.iter('kv');
    for (let n = await it.peekNode(); n; n = await it.nextNode()) out.push({ minKey: n.minKey, maxKey: n.maxKey });
    return out;
  });
}

function modelDelRange(m: Model, a: Bpos, b: Bpos): void {
  for (const off of [...m.keys()]) {
    const p = pos(0, off);
    if (bposCmp(a, p) <= 0 && bposCmp(p, b) < 0) m.delete(off);
  }
}

async function expectModel(s: Store, m: Model, what: string): Promise<void> {
  const got: Array<[bigint, number]> = [];
  for await (const e of s.range('kv')) {
    expect(e.pos.inode, what).toBe(0n);
    expect(e.pos.snapshot, what).toBe(0);
    got.push([e.pos.offset, Number(readU64le(e.value))]);
  }
  const want = [...m.entries()].sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  expect(got.length, what).toBe(want.length);
  expect(got, what).toEqual(want);
}

describe('delRange over leaves', () => {
  it('ranges cut at leaf edges, over many leaves and leaves not cached, with pending puts and dels, match a model', async () => {
    t = await tmpStore({ nodeSize: 4096, cacheSize: 512 << 10 });
    const s = t.store;
    const m: Model = new Map();
    let tag = 1;
    // even offsets 0..39998 (a tree larger than the cache): odd offsets are free for pending puts inside ranges
    for (let base = 0n; base < 40000n; base += 8000n) {
      await s.transact((tx) => {
        for (let off = base; off < base + 8000n; off += 2n) {
          tx.put('kv', pos(0, off), u64le(tag));
          m.set(off, tag++);
        }
      });
    }
    await s.flush();
    expect((await leaves(s)).length).toBeGreaterThan(150);

    const reads0 = s.stats().io.reads;
    for (let round = 0; round < 12; round++) {
      const ls = await leaves(s);
      const j = (round * 7) % Math.max(1, ls.length - 4);
      const leaf = ls[j]!;
      await s.flush();
      s.shrink(1 << 20);
      await s.transact((tx) => {
        switch (round % 4) {
          case 0:
            // a whole leaf but its max key (the end is exclusive)
            tx.delRange('kv', leaf.minKey, leaf.maxKey);
            modelDelRange(m, leaf.minKey, leaf.maxKey);
            break;
          case 1:
            // exactly the leaf's max key, ending where the next leaf starts
            tx.delRange('kv', leaf.maxKey, bposSuccessor(leaf.maxKey));
            modelDelRange(m, leaf.maxKey, bposSuccessor(leaf.maxKey));
            break;
          case 2: {
            // four leaves, with puts inside (new and existing offsets) after the range, and one before it that it removes
            const a = leaf.minKey;
            const b = ls[Math.min(j + 3, ls.length - 1)]!.maxKey;
            const inside = [a.offset + 1n, a.offset + 2n, b.offset - 1n];
            tx.put('kv', pos(0, a.offset + 3n), u64le(tag++));
            tx.delRange('kv', a, b);
            modelDelRange(m, a, b);
            for (const off of inside) {
              tx.put('kv', pos(0, off), u64le(tag));
              m.set(off, tag++);
            }
            break;
          }
          case 3: {
            // two ranges in one transaction with a kept gap, a del after them and a put past the last key
            const a = leaf.minKey;
            const mid = pos(0, a.offset + 40n);
            const gapEnd = pos(0, a.offset + 60n);
            const b = pos(0, a.offset + 300n);
            tx.delRange('kv', a, mid);
            tx.delRange('kv', gapEnd, b);
            modelDelRange(m, a, mid);
            modelDelRange(m, gapEnd, b);
            tx.del('kv', pos(0, a.offset + 302n));
            m.delete(a.offset + 302n);
            tx.put('kv', pos(0, 1_000_001n), u64le(tag));
            m.set(1_000_001n, tag++);
            break;
          }
        }
      });
      await expectModel(s, m, `round ${round}`);
    }
    // the cache was emptied before each transaction: its expansion read the leaves it walked
    expect(s.stats().io.reads).toBeGreaterThan(reads0);

    // everything but the first and the last key: in one transaction that is more deletions
    // than a journal entry holds (512 KiB in this 64 MiB store's 4 MiB journal, 40 bytes
    // each): rejected, nothing of it applied
    const keys = [...m.keys()].sort((x, y) => (x < y ? -1 : 1));
    const first = keys[0]!, last = keys[keys.length - 1]!;
    expect(m.size).toBeGreaterThan(14000);
    await s.flush();
    s.shrink(1 << 20);
    await expect(s.transact((tx) => tx.delRange('kv', pos(0, first + 1n), pos(0, last)))).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG',
      message: expect.stringMatching(/exceeds the largest entry payload .* commit fewer keys per transaction/),
    });
    await expectModel(s, m, 'after the rejected range');
    // so in ranges of 4,000 offsets (2,000 keys)
    for (let a = first + 1n; a < last; a += 4000n) {
      const b = a + 4000n < last ? a + 4000n : last;
      await s.transact((tx) => tx.delRange('kv', pos(0, a), pos(0, b)));
    }
    modelDelRange(m, pos(0, first + 1n), pos(0, last));
    expect(m.size).toBe(2);
    await expectModel(s, m, 'all but the ends');

    await s.flush();
    await t.reopen();
    await expectModel(t.store, m, 'after reopen');
  });
});

describe('store.clear', () => {
  it('deletes a range larger than a journal entry holds, commit by commit; a commit the entry refuses is halved', async () => {
    t = await tmpStore({ nodeSize: 4096 });
    const s = t.store;
    const m: Model = new Map();
    for (let base = 0n; base < 40000n; base += 8000n) {
      await s.transact((tx) => {
        for (let off = base; off < base + 8000n; off += 2n) {
          tx.put('kv', pos(0, off), u64le(Number(off)));
          m.set(off, Number(off));
        }
      });
    }
    // 5,000 keys: more than the default commit size (a quarter of the 512 KiB entry: ~3,270 deletions)
    const c0 = s.stats().transactions;
    await s.clear('kv', { start: pos(0, 1001), end: pos(0, 11001) });
    modelDelRange(m, pos(0, 1001), pos(0, 11001));
    const c1 = s.stats().transactions;
    expect(c1.clearCommits - c0.clearCommits).toBeGreaterThanOrEqual(2);
    expect(c1.clearCommitsHalved - c0.clearCommitsHalved).toBe(0);
    await expectModel(s, m, 'after clear');

    // 14,500 keys (580 KB of deletions) asked for in one commit: the entry refuses, halved until it fits
    await s.clear('kv', { start: pos(0, 11001), keysPerCommit: 1_000_000 });
    modelDelRange(m, pos(0, 11001), POS_MAX);
    expect(s.stats().transactions.clearCommitsHalved - c1.clearCommitsHalved).toBeGreaterThan(0);
    await expectModel(s, m, 'after the halved clear');
    expect(m.size).toBe(501);

    await s.flush();
    await t.reopen();
    await expectModel(t.store, m, 'after reopen');
  });

  it('without end takes POS_MAX too; start >= end does nothing; options are checked', async () => {
    t = await tmpStore({ nodeSize: 4096 });
    const s = t.store;
    await s.transact((tx) => {
      for (let i = 0; i < 50; i++) tx.put('kv', pos(1, i), u64le(i));
      tx.put('kv', POS_MAX, u64le(99));
    });
    await s.clear('kv', { start: pos(1, 30), end: pos(1, 20) });
    await s.clear('kv', { start: pos(1, 30), end: pos(1, 30) });
    const count = async (): Promise<number> => {
      let n = 0;
      for await (const _ of s.range('kv')) n++;
      return n;
    };
    expect(await count()).toBe(51);
    await s.clear('kv', { start: pos(1, 30) });
    expect(await count()).toBe(30);
    expect(await s.get('kv', POS_MAX)).toBeUndefined();
    await s.clear('kv', { keysPerCommit: 7 });
    expect(await count()).toBe(0);
    await expect(s.clear('kv', { keysPerCommit: 0 })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    await expect(s.clear('kv', { stop: pos(1, 1) } as unknown as { end: Bpos })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    await expect(s.clear('nope')).rejects.toMatchObject({ code: 'ERR_UNKNOWN_BTREE' });
    await t.reopen({ readOnly: true });
    await expect(t.store.clear('kv')).rejects.toMatchObject({ code: 'ERR_READ_ONLY' });
  });

  it('on an extents btree, in commits of 7 keys, leaves what one delRange leaves (snapshots, extents cut at the edges)', async () => {
    t = await tmpStore({ nodeSize: 4096, btrees: [{ name: 'a', extents: true }, { name: 'b', extents: true }] });
    const s = t.store;
    // the same extents in both: snapshot 0 extents of 5..20, snapshot 3 ones of 50 overlapping them
    for (const bt of ['a', 'b']) {
      let off = 0;
      for (let batch = 0; batch < 6; batch++) {
        await s.transact((tx) => {
          for (let i = 0; i < 400; i++) {
            const size = 5 + ((off * 7) % 16);
            tx.putExtent(bt, pos(2, off), size, u64le(off));
            if (i % 10 === 0) tx.putExtent(bt, pos(2, off + 3, 3), 50, u64le(off + 1));
            off += size;
          }
        });
      }
    }
    const entries = async (bt: string): Promise<string[]> => {
      const out: string[] = [];
      for await (const e of s.range(bt)) out.push(`${e.start!.offset}:${e.start!.snapshot}+${e.size} vo=${e.valueOffset} v=${readU64le(e.value)}`);
      return out;
    };
    expect(await entries('a')).toEqual(await entries('b'));
    const start = pos(2, 1003), end = pos(2, 25007, 1);
    await s.clear('a', { start, end, keysPerCommit: 7 });
    await s.transact((tx) => tx.delRange('b', start, end));
    expect(s.stats().transactions.clearCommits).toBeGreaterThan(100);
    const after = await entries('a');
    expect(after).toEqual(await entries('b'));
    expect(after.length).toBeGreaterThan(100);
    expect(await s.fsck()).toEqual([]);
  });

  it('a device failure part-way leaves a prefix of the range deleted, also after recovery', async () => {
    const mem = MemDevice.create(8 << 20);
    await Store.formatDevice(mem, { btrees: [{ name: 'kv' }], nodeSize: 4096, blockSize: 512, journalSize: 256 << 10 });
    let flushes = -1;
    // the sixth flush after the clear starts fails: a commit's journal entry is not durable
    const fd = await FaultDevice.wrap(mem, { failFlush: () => flushes >= 0 && ++flushes === 6 });
    const s = await Store.openDevice(fd, { cacheSize: 1 << 20 });
    try {
      for (let i = 0; i < 3000; i += 500) {
        await s.transact((tx) => {
          for (let k = i; k < i + 500; k++) tx.put('kv', pos(1, k), u64le(k));
        });
      }
      await s.flush();
      flushes = 0;
      await expect(s.clear('kv', { start: pos(1, 100), end: pos(1, 2900) })).rejects.toMatchObject({ code: 'ERR_IO' });
      // 32 KiB journal entries: a few hundred deletions a commit, so some commits were durable
      expect(s.stats().transactions.clearCommits).toBeGreaterThanOrEqual(2);
    } finally {
      await s.close().catch(() => {});
    }
    const r = await Store.openDevice(MemDevice.fromImage(fd.durableImage()), { cacheSize: 1 << 20 });
    try {
      const present: boolean[] = [];
      for (let k = 0; k < 3000; k++) {
        const v = await r.get('kv', pos(1, k));
        present.push(v !== undefined);
        if (v) expect(readU64le(v)).toBe(BigInt(k));
      }
      // outside the range: untouched; inside: [100, p) gone, [p, 2900) there
      for (let k = 0; k < 100; k++) expect(present[k], `key ${k}`).toBe(true);
      for (let k = 2900; k < 3000; k++) expect(present[k], `key ${k}`).toBe(true);
      const p = present.indexOf(true, 100);
      expect(p).toBeGreaterThan(100);
      expect(p).toBeLessThan(2900);
      for (let k = p; k < 2900; k++) expect(present[k], `key ${k} (prefix ends at ${p})`).toBe(true);
      expect(await r.fsck()).toEqual([]);
    } finally {
      await r.close();
    }
  });
});
