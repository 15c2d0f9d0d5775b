// SPDX-License-Identifier: GPL-2.0-only
/*
 * The bcachefs unit tests (fs/bcachefs/tests.c) on the public iterator,
 * forward and reverse, with 4 KiB nodes so trees are several nodes deep.
 */

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { POS_MAX, bposCmp, bposSuccessor, pos, type Bpos } from '../../src/index.js';
import { tmpStore, u64le, readU64le, type TmpStore } from '../helpers/store.js';

let t: TmpStore;
beforeEach(async () => {
  t = await tmpStore();
});
afterEach(async () => {
  await t.cleanup();
});

const NR = 3000;

describe('Iter (bcachefs tests.c)', () => {
  it('test_delete: insert, delete through an iterator, gone', async () => {
    const s = t.store;
    await s.put('kv', pos(0, 0), u64le(1));
    await s.transact(async (tx) => {
      const it = tx.iter('kv', pos(0, 0), { intent: true });
      const e = await it.peek();
      expect(e?.pos.offset).toBe(0n);
      tx.del('kv', e!.pos);
    });
    expect(await s.get('kv', pos(0, 0))).toBeUndefined();
    await s.transact(async (tx) => {
      expect(await tx.iter('kv').peek()).toBeNull();
    });
  });

  it('test_delete_written: delete after the node was written needs a whiteout', async () => {
    const s = t.store;
    await s.put('kv', pos(0, 0), u64le(1));
    await s.flush();
    await s.del('kv', pos(0, 0));
    expect(await s.get('kv', pos(0, 0))).toBeUndefined();
    await s.flush();
    const st = await t.reopen();
    expect(await st.get('kv', pos(0, 0))).toBeUndefined();
    await st.transact(async (tx) => expect(await tx.iter('kv').peek()).toBeNull());
  });

  it('test_iterate: forward and reverse over many nodes', async () => {
    const s = t.store;
    for (let i = 0; i < NR; i += 250) {
      await s.transact((tx) => {
        for (let j = i; j < Math.min(NR, i + 250); j++) tx.put('kv', pos(0, j), u64le(j));
      });
    }
    await s.transact(async (tx) => {
      const it = tx.iter('kv');
      let i = 0;
      for (let e = await it.peek(); e; e = await it.next()) {
        expect(e.pos.offset).toBe(BigInt(i));
        expect(readU64le(e.value)).toBe(BigInt(i));
        i++;
      }
      expect(i).toBe(NR);
      const r = tx.iter('kv', POS_MAX);
      i = NR;
      for (let e = await r.peekPrev(); e; e = await r.prev()) {
        i--;
        expect(e.pos.offset).toBe(BigInt(i));
      }
      expect(i).toBe(0);
    });
    expect(s.stats().cache.nodes).toBeGreaterThan(3);
  });

  it('test_iterate_extents: forward and reverse', async () => {
    const s = t.store;
    await s.transact((tx) => {
      for (let i = 0; i < NR; i += 8) tx.putExtent('ext', pos(0, i), 8, u64le(i));
    });
    await s.transact(async (tx) => {
      const it = tx.iter('ext');
      let i = 0;
      for (let e = await it.peek(); e; e = await it.next()) {
        expect(e.start!.offset).toBe(BigInt(i));
        expect(e.pos.offset).toBe(BigInt(i + 8));
        expect(e.size).toBe(8n);
        i += 8;
      }
      expect(i).toBe(Math.ceil(NR / 8) * 8);
      const r = tx.iter('ext', POS_MAX);
      for (let e = await r.peekPrev(); e; e = await r.prev()) {
        i -= 8;
        expect(e.start!.offset).toBe(BigInt(i));
      }
      expect(i).toBe(0);
    });
  });

  it('test_iterate_slots: keys and holes', async () => {
    const s = t.store;
    await s.transact((tx) => {
      for (let i = 0; i < NR; i++) tx.put('kv', pos(0, i * 2), u64le(i));
    });
    await s.transact(async (tx) => {
      const it = tx.iter('kv');
      let i = 0;
      for (let e = await it.peek(); e; e = await it.next()) {
        expect(e.pos.offset).toBe(BigInt(i * 2));
        i++;
      }
      expect(i).toBe(NR);
      const sl = tx.iter('kv', pos(0, 0), { slots: true });
      let slot = await sl.peekSlot();
      for (let j = 0; j < NR * 2; j++) {
        expect(slot.pos.offset).toBe(BigInt(j));
        expect('hole' in slot).toBe(j % 2 === 1);
        slot = (await sl.nextSlot())!;
      }
    });
  });

  it('test_iterate_slots_extents: extents and the holes between them', async () => {
    const s = t.store;
    await s.transact((tx) => {
      for (let i = 0; i < NR; i += 16) tx.putExtent('ext', pos(0, i + 8), 8, u64le(i));
    });
    await s.transact(async (tx) => {
      const it = tx.iter('ext', pos(0, 0), { slots: true });
      let slot = await it.peekSlot();
      for (let i = 0; i < NR; i += 8) {
        const isHole = 'hole' in slot;
        expect(isHole).toBe((i / 8) % 2 === 0);
        expect(slot.start!.offset).toBe(BigInt(i));
        expect(slot.size).toBe(8n);
        slot = (await it.nextSlot())!;
      }
    });
  });

  it('test_peek_end: peek past the last key returns null, twice', async () => {
    const s = t.store;
    await s.put('kv', pos(0, 5), u64le(5));
    await s.transact(async (tx) => {
      const it = tx.iter('kv', pos(0, 0), { end: pos(0, 5) });
      expect(await it.peek()).toBeNull();
      expect(await it.peek()).toBeNull();
      const all = tx.iter('kv', pos(0, 6));
      expect(await all.peek()).toBeNull();
      expect(await all.peek()).toBeNull();
    });
  });

  it('test_peek_end_extents', async () => {
    const s = t.store;
    await s.transact((tx) => tx.putExtent('ext', pos(0, 16), 8, u64le(1)));
    await s.transact(async (tx) => {
      const it = tx.iter('ext', pos(0, 0), { end: pos(0, 16) });
      expect(await it.peek()).toBeNull();
      expect(await it.peek()).toBeNull();
      const past = tx.iter('ext', pos(0, 24));
      expect(await past.peek()).toBeNull();
    });
  });

  it('sees the transaction\'s own pending updates', async () => {
    const s = t.store;
    await s.transact((tx) => {
      for (let i = 0; i < 10; i++) tx.put('kv', pos(0, i), u64le(i));
    });
    await s.transact(async (tx) => {
      tx.put('kv', pos(0, 100), u64le(100));
      tx.del('kv', pos(0, 3));
      tx.delRange('kv', pos(0, 5), pos(0, 8));
      expect(await tx.get('kv', pos(0, 100))).toEqual(u64le(100));
      expect(await tx.get('kv', pos(0, 3))).toBeUndefined();
      expect(await tx.get('kv', pos(0, 6))).toBeUndefined();
      const seen: bigint[] = [];
      for await (const e of tx.iter('kv')) seen.push(e.pos.offset);
      expect(seen).toEqual([0n, 1n, 2n, 4n, 8n, 9n, 100n]);
    });
    const after: bigint[] = [];
    for await (const e of s.range('kv')) after.push(e.pos.offset);
    expect(after).toEqual([0n, 1n, 2n, 4n, 8n, 9n, 100n]);
  });

  it('peekNode / nextNode walk every leaf in order', async () => {
    const s = t.store;
    await s.transact((tx) => {
      for (let i = 0; i < NR; i++) tx.put('kv', pos(0, i), u64le(i));
    });
    await s.transact(async (tx) => {
      const it = tx.iter('kv');
      let n = await it.peekNode();
      let keys = 0;
      let leaves = 0;
      let prevMax: Bpos | null = null;
      while (n) {
        expect(n.level).toBe(0);
        if (prevMax !== null) expect(bposCmp(n.minKey, bposSuccessor(prevMax))).toBe(0);
        else expect(bposCmp(n.minKey, pos(0, 0))).toBe(0);
        prevMax = n.maxKey;
        keys += n.keys;
        leaves++;
        n = await it.nextNode();
      }
      expect(keys).toBe(NR);
      expect(leaves).toBeGreaterThan(2);
    });
  });
});
