// SPDX-License-Identifier: GPL-2.0-only
/*
 * Fill, then delete everything: the tree shrinks back to one leaf and every
 * node bucket but the roots' is free again (interior.ts maybeMerge: either
 * sibling, interior levels, degenerate nodes past the hysteresis, parents
 * compacted for the new pointer, root collapse). Each case fills a tree of
 * depth 3 or more in 4 KiB nodes (in order, in reverse order or at random),
 * deletes every key one way (ascending, descending, random, delRange in
 * chunks or over everything; kv and extents), then checks after flush()
 * (interior updates and merge checks complete) and again after a reopen:
 * depth 1, exactly the buckets of the empty store in use, none pending, fsck
 * (topology and bucket accounting) clean, nothing left to iterate; and the
 * store still takes keys. bench/fill-delete.ts does the same at millions of
 * keys.
 */

import { afterEach, describe, expect, it } from 'vitest';
import { pos, Store } from '../../src/index.js';
import { MemDevice } from '../../src/io/mem-device.js';
import { Prng } from '../format/prng.js';
import { readU64le, tmpStore, u64le, type TmpStore } from '../helpers/store.js';

let t: TmpStore | null = null;
afterEach(async () => {
  await t?.cleanup();
  t = null;
});

/** Extent size (and spacing) in the extents btree. */
const EXTENT_SIZE = 8;
/** Value bytes: the key as a u64, then padding. */
const VALUE_BYTES = 16;

function value(k: number): Uint8Array {
  const v = new Uint8Array(VALUE_BYTES);
  v.set(u64le(k));
  return v;
}

type Order = 'asc' | 'desc' | 'random';

/** 0..n-1 in `order` (random: seeded). */
function keysIn(n: number, order: Order, seed = n): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  if (order === 'desc') a.reverse();
  if (order === 'random') {
    const prng = new Prng(seed);
    for (let i = n - 1; i > 0; i--) {
      const j = prng.int(i + 1);
      [a[i], a[j]] = [a[j]!, a[i]!];
    }
  }
  return a;
}

/** Put `keys` in transactions of `batch` (kv: value = the key; ext: extents of EXTENT_SIZE). */
async function fill(s: Store, btree: 'kv' | 'ext', keys: number[], batch: number, inode = 1): Promise<void> {
  for (let i = 0; i < keys.length; i += batch) {
    const part = keys.slice(i, i + batch);
    await s.transact((tx) => {
      for (const k of part) {
        if (btree === 'ext') tx.putExtent('ext', pos(inode, k * EXTENT_SIZE), EXTENT_SIZE, value(k));
        else tx.put('kv', pos(inode, k), value(k));
      }
    });
  }
}

/** Delete kv keys in the order given, `batch` per transaction. */
async function delBatches(s: Store, keys: number[], batch: number): Promise<void> {
  for (let i = 0; i < keys.length; i += batch) {
    const part = keys.slice(i, i + batch);
    await s.transact((tx) => {
      for (const k of part) tx.del('kv', pos(1, k));
    });
  }
}

/** delRange over chunks of `chunk` keys (extents: of `chunk` extents), the chunks in `order`. */
async function delRanges(s: Store, btree: 'kv' | 'ext', n: number, chunk: number, order: Order, inode = 1): Promise<void> {
  const scale = btree === 'ext' ? EXTENT_SIZE : 1;
  for (const c of keysIn(Math.ceil(n / chunk), order, 5)) {
    await s.transact((tx) => tx.delRange(btree, pos(inode, c * chunk * scale), pos(inode, Math.min(n, (c + 1) * chunk) * scale)));
  }
}

async function entries(s: Store, btree: string): Promise<number> {
  let n = 0;
  for await (const _ of s.range(btree)) n++;
  return n;
}

/** The tree is one leaf, the buckets in use are the empty store's, fsck clean, nothing to iterate. */
async function expectShrunk(s: Store, btree: string, usedEmpty: number): Promise<void> {
  await s.flush();
  const st = s.stats();
  expect(st.btrees[btree]!.depth).toBe(1);
  expect(st.alloc.used).toBe(usedEmpty);
  expect(st.alloc.pending).toBe(0);
  expect(st.interior.pending).toBe(0);
  expect(st.interior.mergesQueued).toBe(0);
  expect(await s.fsck()).toEqual([]);
  expect(await entries(s, btree)).toBe(0);
}

interface Case {
  btree: 'kv' | 'ext';
  keys: number;
  fillOrder: Order;
  /** Keys per fill transaction. */
  fillBatch?: number;
  depthMin?: number;
  nodeSize?: number;
  journalSize?: number;
  del: (s: Store, n: number) => Promise<void>;
}

/**
 * Fill, check the depth, delete, check the shrink (and that merges at every
 * level and root collapses did it), reopen and check again, then use the
 * store once more (2000 keys in and out).
 */
async function fillDeleteCheck(o: Case): Promise<void> {
  t = await tmpStore({ nodeSize: o.nodeSize ?? 4096, sizeBytes: 128 << 20, ...(o.journalSize ? { journalSize: o.journalSize } : {}) });
  let s = t.store;
  // the empty store: one root leaf per btree
  const usedEmpty = s.stats().alloc.used!;
  expect(usedEmpty).toBe(2);
  await fill(s, o.btree, keysIn(o.keys, o.fillOrder), o.fillBatch ?? (o.fillOrder === 'random' ? 128 : 250));
  await s.flush();
  const full = s.stats();
  const depth = full.btrees[o.btree]!.depth;
  expect(depth).toBeGreaterThanOrEqual(o.depthMin ?? 3);
  expect(await entries(s, o.btree)).toBe(o.keys);

  await o.del(s, o.keys);
  await expectShrunk(s, o.btree, usedEmpty);
  const st = s.stats();
  // every level above the leaves merged or collapsed away
  expect(st.interior.mergesLevel0! - full.interior.mergesLevel0!).toBeGreaterThan(0);
  if (depth >= 3) expect(st.interior.mergesLevel1! - (full.interior.mergesLevel1 ?? 0)).toBeGreaterThan(0);
  expect(st.interior.collapses! - full.interior.collapses!).toBeGreaterThanOrEqual(depth - 1);
  expect(st.interior.mergeErrors).toBe(0);

  s = await t.reopen();
  await expectShrunk(s, o.btree, usedEmpty);
  await fill(s, o.btree, keysIn(2000, 'asc'), 500, 3);
  expect(await entries(s, o.btree)).toBe(2000);
  await s.transact((tx) => tx.delRange(o.btree, pos(0, 0), pos(4, 0)));
  await expectShrunk(s, o.btree, usedEmpty);
}

describe('Store: fill, then delete everything (4 KiB nodes)', () => {
  it('30k keys filled in order, deleted in ascending order, 1000 per transaction', async () => {
    await fillDeleteCheck({ btree: 'kv', keys: 30_000, fillOrder: 'asc', del: (s, n) => delBatches(s, keysIn(n, 'asc'), 1000) });
  });

  it('10k keys filled in reverse order, deleted in descending order (merges with the previous sibling)', async () => {
    await fillDeleteCheck({ btree: 'kv', keys: 10_000, fillOrder: 'desc', del: (s, n) => delBatches(s, keysIn(n, 'desc'), 256) });
  });

  it('10k keys filled in order, deleted in descending order', async () => {
    await fillDeleteCheck({ btree: 'kv', keys: 10_000, fillOrder: 'asc', del: (s, n) => delBatches(s, keysIn(n, 'desc'), 500) });
  });

  it('10k keys filled in reverse order, deleted in ascending order, one key per transaction', async () => {
    await fillDeleteCheck({
      btree: 'kv',
      keys: 10_000,
      fillOrder: 'desc',
      del: async (s, n) => {
        for (const k of keysIn(n, 'asc')) await s.del('kv', pos(1, k));
      },
    });
  });

  it('10k keys filled at random, deleted at random, 128 per transaction', async () => {
    await fillDeleteCheck({ btree: 'kv', keys: 10_000, fillOrder: 'random', del: (s, n) => delBatches(s, keysIn(n, 'random', 7), 128) });
  });

  it('10k keys filled at random, delRange over chunks of 100 in random order', async () => {
    await fillDeleteCheck({ btree: 'kv', keys: 10_000, fillOrder: 'random', del: (s, n) => delRanges(s, 'kv', n, 100, 'random') });
  });

  it('10k keys filled in order, one delRange over everything', async () => {
    // one transaction deleting 10k keys: a journal whose entries take it
    await fillDeleteCheck({ btree: 'kv', keys: 10_000, fillOrder: 'asc', journalSize: 16 << 20, del: (s) => s.transact((tx) => tx.delRange('kv', pos(0, 0), pos(2, 0))) });
  });

  it('10k extents filled at random, delRange over chunks of 64 in random order', async () => {
    await fillDeleteCheck({ btree: 'ext', keys: 10_000, fillOrder: 'random', del: (s, n) => delRanges(s, 'ext', n, 64, 'random') });
  });

  it('10k extents filled in order, delRange over chunks of 500 in descending order', async () => {
    await fillDeleteCheck({ btree: 'ext', keys: 10_000, fillOrder: 'asc', del: (s, n) => delRanges(s, 'ext', n, 500, 'desc') });
  });

  it('8k keys filled at random, single deletes at random, 64 in flight, with readers, a scanner and a writer meanwhile', async () => {
    await fillDeleteCheck({
      btree: 'kv',
      keys: 8_000,
      fillOrder: 'random',
      del: async (s, n) => {
        // per key: 0 present, 1 delete issued, 2 delete resolved
        const state = new Uint8Array(n);
        const order = keysIn(n, 'random', 11);
        let next = 0;
        let deleting = true;
        const deleter = async () => {
          while (next < n) {
            const k = order[next++]!;
            state[k] = 1;
            await s.del('kv', pos(1, k));
            state[k] = 2;
          }
        };
        const prng = new Prng(12);
        let reads = 0;
        const reader = async () => {
          while (deleting) {
            const k = prng.int(n);
            const before = state[k]!;
            const v = await s.get('kv', pos(1, k));
            const after = state[k]!;
            if (before === 2) expect(v).toBeUndefined();
            if (after === 0) expect(v && readU64le(v)).toBe(BigInt(k));
            reads++;
            // a cached get resolves in microtasks: let the deleters run (and keep the checks few)
            await new Promise((r) => setTimeout(r, 1));
          }
        };
        const scanner = async () => {
          // an iterator inside a transaction sees a consistent tree while merges go on
          while (deleting) {
            const start = prng.int(n);
            await s.transact(async (tx) => {
              const it = tx.iter('kv', pos(1, start), { end: pos(2, 0) });
              let last = -1;
              for (let i = 0; i < 200; i++) {
                const e = await it.next();
                if (!e) break;
                const k = Number(e.pos.offset);
                expect(k).toBeGreaterThan(last);
                expect(readU64le(e.value)).toBe(BigInt(k));
                last = k;
              }
            });
            await new Promise((r) => setTimeout(r, 1));
          }
        };
        // new keys elsewhere (inode 2) split nodes while the deletions merge them
        const written = new Set<number>();
        const writer = async () => {
          const wp = new Prng(13);
          while (deleting) {
            const ks = Array.from({ length: 16 }, () => wp.int(4 * n));
            await s.transact((tx) => {
              for (const k of ks) tx.put('kv', pos(2, k), value(k));
            });
            for (const k of ks) written.add(k);
          }
        };
        const others = [reader(), reader(), scanner(), writer()];
        await Promise.all(Array.from({ length: 64 }, deleter));
        deleting = false;
        await Promise.all(others);
        expect(reads).toBeGreaterThan(0);
        expect(written.size).toBeGreaterThan(0);
        let left = 0;
        for await (const e of s.range('kv')) {
          expect(Number(e.pos.inode)).toBe(2);
          expect(written.has(Number(e.pos.offset))).toBe(true);
          expect(readU64le(e.value)).toBe(e.pos.offset);
          left++;
        }
        expect(left).toBe(written.size);
        await delRanges(s, 'kv', 4 * n, 500, 'random', 2);
      },
    });
  });
});

describe('Store: deleting most keys merges underfull siblings', () => {
  it('10k keys filled at random, 95% deleted at random: far fewer nodes, keys intact, fsck clean', async () => {
    t = await tmpStore({ nodeSize: 4096, sizeBytes: 128 << 20 });
    const s = t.store;
    const n = 10_000;
    await fill(s, 'kv', keysIn(n, 'random'), 128);
    await s.flush();
    const full = s.stats();
    const keep = (k: number) => k % 20 === 0;
    await delBatches(s, keysIn(n, 'random', 3).filter((k) => !keep(k)), 128);
    await s.flush();
    const st = s.stats();
    // leaves about 3% full were merged (under 1/3 - 1/8 of a node together)
    expect(st.alloc.used!).toBeLessThan(full.alloc.used! / 3);
    expect(st.interior.merges! - full.interior.merges!).toBeGreaterThan(0);
    // most deletions did not need a check (the sibling estimates said no)
    expect(st.interior.mergeChecks! - full.interior.mergeChecks!).toBeLessThan(n / 4);
    expect(await s.fsck()).toEqual([]);
    let count = 0;
    for await (const e of s.range('kv')) {
      const k = Number(e.pos.offset);
      expect(keep(k)).toBe(true);
      expect(readU64le(e.value)).toBe(BigInt(k));
      count++;
    }
    expect(count).toBe(n / 20);
  });
});

describe('a delRange emptying a node that is full and written whole', () => {
  it('rewrites it compacted instead of failing to split (ERR_TOPOLOGY "no key to split at")', async () => {
    // 98 keys of 48-byte values in one commit into the empty root: the split gives one leaf
    // exactly a fresh node's worth (49 keys of 10 u64s: 490, with 48-byte bset headers), and
    // the new leaves are written whole
    t = await tmpStore({ btrees: [{ name: 'kv' }], nodeSize: 4096, blockSize: 512 });
    const s = t.store;
    const n = 98;
    await s.transact((tx) => {
      for (let i = 0; i < n; i++) tx.put('kv', pos(1, i), new Uint8Array(48).fill(i));
    });
    await s.flush();
    const fresh = s.engine.interior.nodeU64sFresh;
    const full = [...s.engine.cache.live].filter((b) => b && b.hashVal !== 0 && b.level === 0 && b.keys.liveU64s === fresh);
    expect(full.length, 'precondition: a leaf holding exactly a fresh node of keys').toBe(1);
    expect(full[0]!.keys.u64sRemaining()).toBe(0);
    // every key deleted by one commit: whiteouts do not fit, and nothing is left to split at
    await s.transact((tx) => tx.delRange('kv', pos(1, 0), pos(1, n)));
    for await (const e of s.range('kv')) throw new Error(`key ${e.pos.offset} survived the delRange`);
    expect(await s.fsck()).toEqual([]);
    const s2 = await t.reopen();
    for await (const e of s2.range('kv')) throw new Error(`key ${e.pos.offset} came back after reopening`);
  });
});

describe('leaves split off a node without keys', () => {
  it('pack the keys the commit then puts in them (their version field starts at the journal seq, not at its headroom)', async () => {
    // the first commit of many keys splits the empty root before inserting: the halves' formats
    // are computed over no keys; their version field used to start at seq + 2^24, so every key
    // of the commit went in unpacked (56 + 8 bytes per key instead of 8 + 8 here)
    t = await tmpStore({ btrees: [{ name: 'kv' }], nodeSize: 4096, blockSize: 512 });
    const s = t.store;
    await s.transact((tx) => {
      for (let i = 0; i < 200; i++) tx.put('kv', pos(1, i), new Uint8Array(8).fill(i));
    });
    const leaves = [...s.engine.cache.live].filter((b) => b && b.hashVal !== 0 && b.level === 0);
    expect(leaves.length).toBeGreaterThan(1);
    for (const b of leaves) expect(b!.keys.unpackedKeys, b!.keys.toText()).toBe(0);
    expect(await s.fsck()).toEqual([]);
  });
});

describe('sequential inserts (appends at the end of their nodes)', () => {
  it('split where the streams run: the nodes they leave behind stay fuller than halves leave them (3/8), and no stubs', async () => {
    // two streams appending side by side (a log per inode): each stream's last leaf takes
    // its appends, the one of inode 1 in the middle of the tree, inode 2's at its end
    t = await tmpStore({ btrees: [{ name: 'kv' }], nodeSize: 4096, blockSize: 512 });
    const s = t.store;
    const n = 1500;
    for (let i = 0; i < n; i += 10) {
      await s.transact((tx) => {
        for (let k = i; k < i + 10; k++) {
          tx.put('kv', pos(1, k), value(k));
          tx.put('kv', pos(2, k), value(k));
        }
      });
    }
    await s.flush();
    const fresh = s.engine.interior.nodeU64sFresh;
    const leaves = [...s.engine.cache.live].filter((b) => b && b.hashVal !== 0 && b.level === 0).sort((a, b) => Number(a!.keys.minKey[1]! - b!.keys.minKey[1]!) || a!.keys.minKey[3]! - b!.keys.minKey[3]!);
    expect(leaves.length).toBeGreaterThan(20);
    // each stream's last leaf may be part full; every other leaf was left behind by an append split
    const lastOf = (inode: number) => leaves.filter((b) => b!.keys.minKey[1]! <= inode).pop();
    const behind = leaves.filter((b) => b !== lastOf(1) && b !== lastOf(2));
    const fills = behind.map((b) => b!.keys.liveU64s / fresh);
    const text = `fills ${fills.map((f) => f.toFixed(2)).join(' ')}`;
    // halves leave them at about 3/8 (0.37); no stub either (the keys of inode 2 the stream of
    // inode 1 runs into ride along with it, or get a node of their own once they are many)
    expect(fills.reduce((a, f) => a + f, 0) / fills.length, text).toBeGreaterThan(0.5);
    expect(Math.min(...fills), text).toBeGreaterThan(0.2);
    expect(s.engine.interior.counters.splits).toBeLessThan(leaves.length + 5);
    // and every key is there, in order
    const got: string[] = [];
    for await (const e of s.range('kv')) got.push(`${e.pos.inode}:${e.pos.offset}`);
    expect(got).toEqual([...Array.from({ length: n }, (_, k) => `1:${k}`), ...Array.from({ length: n }, (_, k) => `2:${k}`)]);
    expect(await s.fsck()).toEqual([]);
  });
});

describe('a stream filling a gap between keys (sparse keys first, each gap then filled in order)', () => {
  it('leaves no stub: the gap ends inside the node, so it is split in halves, not at the stream', async () => {
    // the append split at the end of a bounded gap left the gap's last keys alone in a node that
    // nothing ever goes into again (found by fault hunting: 84 of 341 leaves under 15% full)
    const mem = MemDevice.create(64 << 20);
    await Store.formatDevice(mem, { btrees: [{ name: 'kv' }], nodeSize: 4096, blockSize: 512 });
    const s = await Store.openDevice(mem, { cacheSize: 32 << 20 });
    try {
      const GAP = 100;
      const N = 40 * GAP;
      const v = new Uint8Array(24);
      for (let o = 0; o < N; o += GAP) await s.put('kv', pos(1, o), v);
      for (let g = N - GAP; g >= 0; g -= GAP) for (let o = g + 1; o < g + GAP; o++) await s.put('kv', pos(1, o), v);
      await s.flush();
      const fresh = s.engine.interior.nodeU64sFresh;
      const fills = [...s.engine.cache.live].filter((b) => b && b.hashVal !== 0 && b.level === 0).map((b) => b!.keys.liveU64s / fresh);
      expect(fills.filter((f) => f < 0.15), `fills ${fills.map((f) => f.toFixed(2)).join(' ')}`).toEqual([]);
      let n = 0;
      for await (const e of s.range('kv')) expect(e.pos.offset).toBe(BigInt(n++));
      expect(n).toBe(N);
      expect(await s.fsck()).toEqual([]);
    } finally {
      await s.close();
    }
  });
});
