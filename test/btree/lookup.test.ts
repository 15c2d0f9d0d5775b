// SPDX-License-Identifier: GPL-2.0-only
/*
 * Point lookups without a transaction (iter.ts LookupNowait, store.get's
 * fast path) and synchronous traversal (BtreeTrans.traverseNowait, tx.get).
 *  - cached and unlocked: answered synchronously, counted, no commit;
 *  - a write-locked node or an evicted leaf: falls back to a transaction,
 *    which waits or reads, and returns the right value;
 *  - gets racing with writers (splits, overwrites, deletes) and evictions
 *    return exactly what some serial order allows: never a value of another
 *    key, never older than a commit that resolved before the get started.
 */

import { afterEach, describe, expect, it } from 'vitest';
import { pos, type Store } from '../../src/index.js';
import { LockOwnerBase, nodeTryLock, nodeTryLockWrite, nodeUnlock } from '../../src/btree/locking.js';
import { SixLockType } from '../../src/util/six.js';
import { LOOKUP_FALLBACK, btreeLookup } from '../../src/btree/iter.js';
import { BtreeTrans, transStartSeqNew } from '../../src/btree/trans.js';
import { TxCtx } from '../../src/btree/interior.js';
import { transCommit } from '../../src/btree/commit.js';
import { KEY_TYPE } from '../../src/btree/bkey.js';
import { posWords } from '../../src/btree/bpos.js';
import { ERR } from '../../src/errors.js';
import { prng, readU64le, tmpStore, type TmpStore } from '../helpers/store.js';

let t: TmpStore | null = null;
afterEach(async () => {
  await t?.cleanup();
  t = null;
});

/** Value of key k at version v: 16 bytes, the key then the version. */
function val(k: number, v: number): Uint8Array {
  const b = new Uint8Array(16);
  const dv = new DataView(b.buffer);
  dv.setBigUint64(0, BigInt(k), true);
  dv.setBigUint64(8, BigInt(v), true);
  return b;
}

function decode(b: Uint8Array): { k: number; v: number } {
  return { k: Number(readU64le(b.subarray(0, 8))), v: Number(readU64le(b.subarray(8, 16))) };
}

/** Keys 0..n-1 of inode 1 at version v, committed `per` at a time. */
async function loadKeys(s: Store, n: number, per: number, v: number): Promise<void> {
  for (let b = 0; b < n; b += per) {
    await s.transact((tx) => {
      for (let k = b; k < Math.min(n, b + per); k++) tx.put('kv', pos(1, k), val(k, v));
    });
  }
}

/** A store of 4 KiB nodes and a small cache holding keys 0..n-1 (value v), written and evicted: gets must read leaves. */
async function evictedStore(cacheSize: number, n: number, per: number, v: number): Promise<Store> {
  t = await tmpStore({ btrees: [{ name: 'kv' }], nodeSize: 4096, cacheSize });
  const s = t.store;
  await loadKeys(s, n, per, v);
  await s.flush();
  s.shrink();
  return s;
}

describe('Store#get() fast path', () => {
  it('cached and unlocked: answered without a transaction; missing and deleted keys read undefined', async () => {
    t = await tmpStore();
    const s = t.store;
    await s.transact((tx) => {
      for (let k = 0; k < 2000; k++) tx.put('kv', pos(1, k), val(k, 1));
    });
    await s.del('kv', pos(1, 7));
    const before = s.stats();
    for (let k = 0; k < 2000; k++) {
      const v = await s.get('kv', pos(1, k));
      if (k === 7) expect(v).toBeUndefined();
      else expect(decode(v!)).toEqual({ k, v: 1 });
    }
    expect(await s.get('kv', pos(1, 5000))).toBeUndefined();
    expect(await s.get('kv', pos(0, 3))).toBeUndefined();
    const after = s.stats();
    expect(after.lookups.fast - before.lookups.fast).toBe(2002);
    expect(after.transactions.commits).toBe(before.transactions.commits);
    // a returned value is a copy: changing it changes nothing stored
    const v = (await s.get('kv', pos(1, 3)))!;
    v.fill(0xff);
    expect(decode((await s.get('kv', pos(1, 3)))!)).toEqual({ k: 3, v: 1 });
  });

  it('a write-locked leaf: the get falls back, waits for the lock, then reads', async () => {
    t = await tmpStore();
    const s = t.store;
    await s.put('kv', pos(1, 1), val(1, 1));
    // one key: the root is the leaf
    const engine = s.engine;
    const leaf = engine.roots[0]!.node!;
    expect(leaf.level).toBe(0);
    const owner = new LockOwnerBase(1_000_000, 0);
    expect(nodeTryLock(owner, leaf.lock, SixLockType.intent)).toBe(true);
    expect(nodeTryLockWrite(owner, leaf.lock)).toBe(true);
    const before = s.stats().lookups;
    let done = false;
    const p = s.get('kv', pos(1, 1)).then((v) => {
      done = true;
      return v;
    });
    for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
    expect(done).toBe(false);
    expect(s.stats().lookups.fallbackLocked).toBe(before.fallbackLocked + 1);
    nodeUnlock(owner, leaf.lock, SixLockType.write);
    nodeUnlock(owner, leaf.lock, SixLockType.intent);
    expect(decode((await p)!)).toEqual({ k: 1, v: 1 });
  });

  it('evicted leaves: the get reads them (without a transaction, or through one when the first walk cannot)', async () => {
    const N = 6000;
    const s = await evictedStore(256 * 1024, N, 500, 2);
    const before = s.stats();
    const rnd = prng(7);
    for (let i = 0; i < 500; i++) {
      const k = Math.floor(rnd() * N);
      expect(decode((await s.get('kv', pos(1, k)))!)).toEqual({ k, v: 2 });
    }
    const after = s.stats();
    expect(after.lookups.fallbackUncached).toBeGreaterThan(before.lookups.fallbackUncached);
    expect(after.lookups.fastAfterRead).toBeGreaterThan(before.lookups.fastAfterRead);
    expect(after.cache.misses).toBeGreaterThan(before.cache.misses);
    expect(after.lookups.fast).toBeGreaterThan(before.lookups.fast);
    expect(after.transactions.commits).toBe(before.transactions.commits);
  });

  it('a get that reads looks up the position it was called with, whatever the caller does to its object meanwhile', async () => {
    const N = 6000;
    const s = await evictedStore(256 * 1024, N, 500, 3);
    const misses = s.stats().cache.misses;
    // a key whose leaf the shrink evicted (it keeps a reserve of nodes, and
    // which ones depends on the order writes completed in)
    const leafCached = (k: number) => {
      const w = posWords(pos(1, k));
      for (const n of s.engine.cache.liveNodes()) if (n.level === 0 && n.keys.keyInRange(w, 0)) return true;
      return false;
    };
    let k = 4321;
    while (leafCached(k)) k = (k + 577) % N;
    const p = { inode: 1n, offset: BigInt(k), snapshot: 0 };
    const got = s.get('kv', p);
    p.offset = 17n;
    expect(decode((await got)!)).toEqual({ k, v: 3 });
    expect(s.stats().cache.misses).toBeGreaterThan(misses);
  });

  it('a read started for a get stays pinned until its second walk: reads churning the whole cache in between leave it; released, it goes', async () => {
    // sequential keys fill their leaves (streamPivot): 12,000 keys to make a tree well past the cache
    const s = await evictedStore(256 * 1024, 12000, 500, 3);
    const lk = s.engine.lookupNowait;
    const p = pos(1, 4321);
    expect(lk.lookup(0, p, false, true)).toBe(false); // LOOKUP_FALLBACK: the leaf is not cached
    let r = lk.readStarted!;
    // interior nodes above it may be out of the cache too: each walk reads one more level
    while (r.node.level > 0) {
      await r.done;
      lk.readRelease(r);
      expect(lk.lookup(0, p, true, true)).toBe(false);
      r = lk.readStarted!;
    }
    expect(r.pinned).toBe(true);
    await r.done;
    const leaf = r.node;
    const seq = leaf.hashVal;
    expect(seq).not.toBe(0);
    /* reads of every other leaf churn the whole cache (64 nodes): all but the pinned leaf go */
    const churn = async (): Promise<void> => {
      for (let k = 0; k < 12000; k += 20) if (k < 4000 || k > 4700) expect(decode((await s.get('kv', pos(1, k)))!)).toEqual({ k, v: 3 });
    };
    const evictionsBefore = s.stats().cache.evictions;
    await churn();
    expect(s.stats().cache.evictions - evictionsBefore).toBeGreaterThan(64);
    expect(leaf.hashVal).toBe(seq);
    expect(s.stats().cache.notFreed.read_set).toBeGreaterThan(0);
    // the walk answers from the pinned leaf; the churn may have evicted an interior node
    // above it (one only keys 4000-4700 use): such a node is read again, never the leaf
    let v = lk.lookup(0, p, false, true);
    for (let reads = 0; v === LOOKUP_FALLBACK && reads < 4; reads++) {
      const r3 = lk.readStarted!;
      expect(r3.node.level, 'only interior nodes are read again').toBeGreaterThan(0);
      await r3.done;
      lk.readRelease(r3);
      v = lk.lookup(0, p, true, true);
    }
    expect(decode(v as Uint8Array)).toEqual({ k: 4321, v: 3 });
    lk.readRelease(r);
    lk.readRelease(r); // a second release changes nothing
    expect(leaf.readPins).toBe(0);
    await churn();
    expect(leaf.hashVal).not.toBe(seq);
    // a getSync miss starts its read unpinned: nothing waits to release it
    expect(() => s.getSync('kv', pos(1, 10))).toThrow(expect.objectContaining({ code: 'ERR_WOULD_BLOCK' }));
    const r2 = lk.readStarted!;
    expect(r2.pinned).toBe(false);
    await r2.done;
    expect(r2.node.readPins).toBe(0);
  });

  it('a miss on a full cache reclaims the next miss\'s buffers while its read is in flight: the next allocation evicts nothing', async () => {
    const s = await evictedStore(256 * 1024, 12000, 500, 3);
    const cache = s.engine.cache;
    const counter = (name: string): number => (s.stats().cache.counters as Record<string, number>)[name]!;
    // warm up until the cache is at its budget (the first misses may grow it)
    for (let k = 0; k < 12000; k += 97) await s.get('kv', pos(1, k));
    expect(cache.used).toBe(cache.usedMax);
    const validated = s.stats().cache.readValidateUs;
    let misses = 0;
    for (let k = 31; k < 12000 && misses < 40; k += 211) {
      const before = { evictions: counter('evictions'), refills: counter('spareRefills'), freeable: cache.freeable.count, reads: counter('reads') };
      const got = s.get('kv', pos(1, k)); // runs synchronously up to the read it issues
      const read = counter('reads') > before.reads;
      if (read) {
        misses++;
        // buffers were waiting on FREEABLE for this miss (left by the one before), and one node was reclaimed
        // for the next right after this read was issued; the budget holds
        if (misses > 1) expect(before.freeable).toBeGreaterThan(0);
        expect(cache.freeable.count).toBeGreaterThan(0);
        expect(counter('spareRefills') - before.refills).toBe(before.freeable > 0 ? 1 : 0);
        expect(counter('evictions') - before.evictions).toBe(1);
        expect(cache.used).toBeLessThanOrEqual(cache.usedMax);
      }
      expect(decode((await got)!)).toEqual({ k, v: 3 });
    }
    expect(misses).toBeGreaterThan(20);
    // each of those reads was validated, and the time it took is in the stats
    expect(s.stats().cache.readValidateUs).toBeGreaterThan(validated);
    expect(s.engine.cache.toText()).toMatch(/read validation: +\d+ us per read/);
  });

  it('64 gets in flight on a small cache: every miss is one read without a transaction (reads pinned, not read twice)', async () => {
    const N = 20000;
    const s = await evictedStore(512 * 1024, N, 1000, 4);
    const before = s.stats();
    const rnd = prng(11);
    let left = 3000;
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (left > 0) {
          left--;
          const k = Math.floor(rnd() * N);
          expect(decode((await s.get('kv', pos(1, k)))!)).toEqual({ k, v: 4 });
        }
      }),
    );
    const after = s.stats();
    const misses = after.cache.misses - before.cache.misses;
    expect(misses).toBeGreaterThan(1000);
    // every miss was a read a get started and then used: none went through a transaction
    const readsNowait = (x: typeof after): number => (x.cache.counters as Record<string, number>).readsNowait!;
    expect(readsNowait(after) - readsNowait(before)).toBe(misses);
    expect(after.transactions.commits).toBe(before.transactions.commits);
    // pins are all released
    expect([...s.engine.cache.live].filter((b) => b && b.readPins !== 0)).toEqual([]);
  });

  for (const cacheSize of [0, 256 * 1024]) {
    it(`gets racing with writers, splits, deletes${cacheSize ? ' and evictions' : ''}: values of the right key, never older than a resolved commit`, async () => {
      t = await tmpStore({ btrees: [{ name: 'kv' }], nodeSize: 4096, ...(cacheSize ? { cacheSize } : {}) });
      const s = t.store;
      const KEYS = 12_000;
      const WRITERS = 3;
      // writer w owns the keys k % WRITERS === w and commits one at a time, so
      // per key the version order is the commit order
      /** Per key: version of the last commit that resolved (negative: a delete), the highest started, the highest delete started. */
      const resolved = new Float64Array(KEYS);
      const started = new Float64Array(KEYS);
      const delStarted = new Float64Array(KEYS);
      let stop = false;
      let version = 0;
      const writer = async (w: number): Promise<void> => {
        const rnd = prng(100 + w);
        while (!stop) {
          const ks = [...new Set(Array.from({ length: 1 + Math.floor(rnd() * 100) }, () => Math.floor(rnd() * (KEYS / WRITERS)) * WRITERS + w))];
          const v = ++version;
          const del = rnd() < 0.1;
          for (const k of ks) {
            started[k] = v;
            if (del) delStarted[k] = v;
          }
          await s.transact((tx) => {
            for (const k of ks) {
              if (del) tx.del('kv', pos(1, k));
              else tx.put('kv', pos(1, k), val(k, v));
            }
          });
          for (const k of ks) resolved[k] = del ? -v : v;
        }
      };
      let gets = 0;
      const reader = async (seed: number): Promise<void> => {
        const rnd = prng(seed);
        while (!stop) {
          const k = Math.floor(rnd() * KEYS);
          const floor = resolved[k]!;
          const v = await s.get('kv', pos(1, k));
          // cached gets resolve at once: yield now and then, or the timers never run
          if (++gets % 64 === 0) await new Promise((r) => setImmediate(r));
          if (v === undefined) {
            // never written, deleted, or a delete started since
            expect(floor <= 0 || delStarted[k]! > floor).toBe(true);
            continue;
          }
          const d = decode(v);
          expect(d.k).toBe(k);
          if (floor > 0) expect(d.v).toBeGreaterThanOrEqual(floor);
          else expect(d.v).toBeGreaterThan(-floor);
          expect(d.v).toBeLessThanOrEqual(started[k]!);
        }
      };
      const evictor = async (): Promise<void> => {
        for (let round = 0; !stop; round++) {
          if (cacheSize) {
            // evicts the clean nodes (writeback writes dirty ones); a flush
            // now and then, though with the writers going it may take until
            // they stop
            if (round % 10 === 0) await s.flush();
            s.shrink();
          }
          await new Promise((r) => setTimeout(r, 2));
        }
      };
      const before = s.stats();
      const all = [writer(0), writer(1), writer(2), reader(11), reader(12), reader(13), reader(14), evictor()];
      // 1.5 s of racing, and on (up to 30 s, on a loaded machine) until the
      // gets raced with splits and, with a small cache, evictions
      const raced = () => {
        const now = s.stats();
        return gets > 100 && now.interior.splits! > before.interior.splits! && (!cacheSize || now.cache.evictions > before.cache.evictions);
      };
      await new Promise((r) => setTimeout(r, 1500));
      for (let waited = 0; !raced() && waited < 30_000; waited += 50) await new Promise((r) => setTimeout(r, 50));
      stop = true;
      await Promise.all(all);
      expect(gets).toBeGreaterThan(100);
      const after = s.stats();
      expect(after.lookups.fast).toBeGreaterThan(before.lookups.fast);
      expect(after.btrees.kv!.depth).toBeGreaterThan(1);
      expect(after.interior.splits!).toBeGreaterThan(before.interior.splits!);
      if (cacheSize) expect(after.cache.evictions).toBeGreaterThan(before.cache.evictions);
      if (process.env.SIXTREE_TEST_VERBOSE) console.log(after.lookups, after.cache.evictions, after.interior);
      // quiet now: every key reads what the last commit left
      for (let k = 0; k < KEYS; k++) {
        const v = await s.get('kv', pos(1, k));
        if (resolved[k]! <= 0) expect(v).toBeUndefined();
        else expect(decode(v!)).toEqual({ k, v: resolved[k] });
      }
      expect(await s.fsck()).toEqual([]);
    });
  }
});

describe('Store#getSync()', () => {
  it('answers from cached nodes like get(): values (copies), undefined for missing and deleted keys, plain or frozen positions', async () => {
    t = await tmpStore();
    const s = t.store;
    await s.transact((tx) => {
      for (let k = 0; k < 3000; k++) tx.put('kv', pos(1, k), val(k, 1));
    });
    await s.del('kv', pos(1, 9));
    const before = s.stats();
    for (let k = 0; k < 3000; k++) {
      // numbers, bigints and frozen pos() objects name the same position
      const v = k % 3 === 0 ? s.getSync('kv', pos(1, k)) : k % 3 === 1 ? s.getSync('kv', { inode: 1, offset: k }) : s.getSync('kv', { inode: 1n, offset: BigInt(k), snapshot: 0 });
      if (k === 9) expect(v).toBeUndefined();
      else expect(decode(v!)).toEqual({ k, v: 1 });
    }
    expect(s.getSync('kv', pos(1, 3000))).toBeUndefined();
    expect(s.getSync('kv', { inode: 1, offset: 5, snapshot: 1 })).toBeUndefined();
    expect(s.getSync('kv', pos(0, 5))).toBeUndefined();
    const v = s.getSync('kv', pos(1, 4))!;
    v.fill(0xff);
    expect(decode(s.getSync('kv', pos(1, 4))!)).toEqual({ k: 4, v: 1 });
    const after = s.stats();
    expect(after.lookups.fast - before.lookups.fast).toBe(3005);
    expect(after.lookups.syncWouldBlock).toBe(0);
    expect(after.transactions.commits).toBe(before.transactions.commits);
  });

  it('bad arguments throw what get() rejects with', async () => {
    t = await tmpStore({ btrees: [{ name: 'kv' }, { name: 'ext', extents: true }] });
    const s = t.store;
    const code = (f: () => unknown): string | undefined => {
      try {
        f();
      } catch (e) {
        return (e as { code?: string }).code;
      }
      return undefined;
    };
    expect(code(() => s.getSync('nope', pos(1, 1)))).toBe('ERR_UNKNOWN_BTREE');
    expect(code(() => s.getSync('ext', pos(1, 1)))).toBe('ERR_IS_EXTENTS');
    expect(code(() => s.getSync('kv', { inode: -1, offset: 1 }))).toBe('ERR_INVALID_ARG');
    expect(code(() => s.getSync('kv', { inode: 1, offset: 1.5 }))).toBe('ERR_INVALID_ARG');
    expect(code(() => s.getSync('kv', { inode: 1, offset: 2n ** 64n }))).toBe('ERR_INVALID_ARG');
    expect(code(() => s.getSync('kv', { inode: 1, offset: 1, snapshot: 2 ** 32 }))).toBe('ERR_INVALID_ARG');
    expect(code(() => s.getSync('kv', null as never))).toBe('ERR_INVALID_ARG');
    expect(code(() => s.getSync('kv', { inode: 1n } as never))).toBe('ERR_INVALID_ARG');
    await expect(s.get('kv', { inode: 1, offset: 1.5 })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    // the largest positions are valid
    await s.put('kv', { inode: 2n ** 64n - 1n, offset: 2n ** 64n - 1n, snapshot: 2 ** 32 - 1 }, val(1, 1));
    await s.put('kv', { inode: 0, offset: Number.MAX_SAFE_INTEGER }, val(2, 1));
    expect(decode(s.getSync('kv', { inode: 2n ** 64n - 1n, offset: 2n ** 64n - 1n, snapshot: 2 ** 32 - 1 })!)).toEqual({ k: 1, v: 1 });
    expect(decode(s.getSync('kv', { inode: 0n, offset: BigInt(Number.MAX_SAFE_INTEGER) })!)).toEqual({ k: 2, v: 1 });
    await s.close();
    expect(code(() => s.getSync('kv', pos(1, 1)))).toBe('ERR_CLOSED');
  });

  it('a node not cached or a write-locked leaf: ERR_WOULD_BLOCK; the read it started lets the next getSync answer', async () => {
    t = await tmpStore({ btrees: [{ name: 'kv' }], nodeSize: 4096, cacheSize: 256 * 1024 });
    let s = t.store;
    const N = 6000;
    await loadKeys(s, N, 500, 2);
    s = await t.reopen();
    let blocked = 0;
    const rnd = prng(3);
    for (let i = 0; i < 300; i++) {
      const k = Math.floor(rnd() * N);
      let v: Uint8Array | undefined;
      try {
        v = s.getSync('kv', pos(1, k));
      } catch (e) {
        expect((e as { code?: string }).code).toBe('ERR_WOULD_BLOCK');
        expect((e as Error).message).toMatch(/getSync: kv 1:\d+:0 needs a node read/);
        blocked++;
        v = await s.get('kv', pos(1, k));
      }
      expect(decode(v!)).toEqual({ k, v: 2 });
    }
    expect(blocked).toBeGreaterThan(0);
    expect(s.stats().lookups.syncWouldBlock).toBe(blocked);
    // a getSync that blocked started the read: once it is in, getSync answers
    s.shrink();
    let k0 = -1;
    for (let k = 0; k < N && k0 < 0; k += 97) {
      try {
        s.getSync('kv', pos(1, k));
      } catch {
        k0 = k;
      }
    }
    expect(k0).toBeGreaterThanOrEqual(0);
    for (let i = 0; i < 100; i++) {
      await new Promise((r) => setTimeout(r, 1));
      try {
        expect(decode(s.getSync('kv', pos(1, k0))!)).toEqual({ k: k0, v: 2 });
        break;
      } catch (e) {
        expect((e as { code?: string }).code).toBe('ERR_WOULD_BLOCK');
        if (i === 99) throw new Error('the read getSync started never made the key answerable');
      }
    }
    // a write-locked leaf
    const leafOf = s.engine.roots[0]!.node!;
    expect(leafOf.level).toBeGreaterThan(0);
    await s.put('kv', pos(1, 1), val(1, 3));
    const owner = new LockOwnerBase(1_000_000, 0);
    const root = s.engine.roots[0]!.node!;
    expect(nodeTryLock(owner, root.lock, SixLockType.intent)).toBe(true);
    expect(nodeTryLockWrite(owner, root.lock)).toBe(true);
    expect(() => s.getSync('kv', pos(1, 1))).toThrow(expect.objectContaining({ code: 'ERR_WOULD_BLOCK' }));
    nodeUnlock(owner, root.lock, SixLockType.write);
    nodeUnlock(owner, root.lock, SixLockType.intent);
    expect(decode(s.getSync('kv', pos(1, 1))!)).toEqual({ k: 1, v: 3 });
  });

  it('interior child indexes follow splits, merges and root changes (depth 3 and back to 1)', async () => {
    t = await tmpStore({ btrees: [{ name: 'kv' }], nodeSize: 4096 });
    const s = t.store;
    const N = 20_000;
    const rnd = prng(21);
    const order = Array.from({ length: N }, (_, i) => i).sort(() => rnd() - 0.5);
    const live = new Uint8Array(N);
    const check = (): void => {
      for (let k = 0; k < N; k += 7) {
        const v = s.getSync('kv', pos(1, k));
        if (live[k]) expect(decode(v!)).toEqual({ k, v: 1 });
        else expect(v).toBeUndefined();
      }
    };
    for (let i = 0; i < N; i += 1000) {
      await s.transact((tx) => {
        for (const k of order.slice(i, i + 1000)) tx.put('kv', pos(1, k), val(k, 1));
      });
      for (const k of order.slice(i, i + 1000)) live[k] = 1;
      check();
    }
    expect(s.stats().btrees.kv!.depth).toBeGreaterThanOrEqual(3);
    const built = s.stats().lookups.childIndexBuilds;
    expect(built).toBeGreaterThan(0);
    // unchanged interior nodes are not decoded again
    check();
    expect(s.stats().lookups.childIndexBuilds).toBe(built);
    for (let i = 0; i < N; i += 1000) {
      await s.transact((tx) => {
        for (const k of order.slice(i, i + 1000)) tx.del('kv', pos(1, k));
      });
      for (const k of order.slice(i, i + 1000)) live[k] = 0;
      await s.flush();
      check();
    }
    const st = s.stats();
    expect(st.btrees.kv!.depth).toBe(1);
    expect(st.interior.merges! + st.interior.collapses!).toBeGreaterThan(0);
    expect(st.lookups.syncWouldBlock).toBe(0);
  });
});

describe('Transaction#get() synchronous traversal', () => {
  it('tx.get on cached nodes traverses without waiting and reads what the transaction wrote', async () => {
    t = await tmpStore();
    const s = t.store;
    await s.transact((tx) => {
      for (let k = 0; k < 3000; k++) tx.put('kv', pos(2, k), val(k, 3));
    });
    const before = s.stats().writeback;
    await s.transact(async (tx) => {
      for (let k = 0; k < 3000; k += 37) expect(decode((await tx.get('kv', pos(2, k)))!)).toEqual({ k, v: 3 });
      tx.put('kv', pos(2, 5), val(5, 4));
      expect(decode((await tx.get('kv', pos(2, 5)))!)).toEqual({ k: 5, v: 4 });
    });
    const after = s.stats().writeback;
    expect(after.traversesNowait!).toBeGreaterThan(before.traversesNowait!);
    expect(decode((await s.get('kv', pos(2, 5)))!)).toEqual({ k: 5, v: 4 });
  });
});

describe('a traversal whose parent was unlocked and changed during a fill', () => {
  it('walks again from what still holds and reads the pointer anew: no restart, no error (docs/cache.md, step 2)', async () => {
    const N = 6000;
    const s = await evictedStore(256 * 1024, N, 500, 2);
    const cache = s.engine.cache;
    const nodeGet = cache.nodeGet;
    // the cache's answer when trans.parentHeld() is false: its pointer may be stale
    const lostFor = new Set<number>();
    const gets = new Map<number, number>();
    cache.nodeGet = function (this: typeof cache, ...args: Parameters<typeof nodeGet>): ReturnType<typeof nodeGet> {
      const [, ptr, level] = args;
      if (level === 0) gets.set(ptr.seq, (gets.get(ptr.seq) ?? 0) + 1);
      if (level === 0 && !lostFor.has(ptr.seq)) {
        lostFor.add(ptr.seq);
        return Promise.resolve(ERR.btree_node_fill_parent_lost);
      }
      return nodeGet.apply(this, args);
    };
    try {
      const before = s.stats().transactions;
      let attempts = 0;
      await s.transact(async (tx) => {
        attempts++;
        for (const k of [17, 2500, 5999]) expect(decode((await tx.get('kv', pos(1, k)))!)).toEqual({ k, v: 2 });
      });
      expect(attempts).toBe(1);
      expect(s.stats().transactions.restarts).toBe(before.restarts);
      // leaves not cached were refused once each (a cached one is found without nodeGet)
      expect(lostFor.size).toBeGreaterThan(0);
      // each refusal was followed by another walk down to the same leaf, which read it
      for (const seq of lostFor) expect(gets.get(seq)).toBe(2);
    } finally {
      cache.nodeGet = nodeGet;
    }
  });
});

describe('leaves read back with their appends kept as sets', () => {
  it('gets, scans (both ways), updates, deletes and splits on them agree with a model, before and after a reopen', async () => {
    t = await tmpStore({ btrees: [{ name: 'kv' }], nodeSize: 16384, cacheSize: 640 * 1024 });
    let s = t.store;
    const N = 20000;
    const model = new Map<number, number>();
    /* every key, then two passes of updates, each flushed: leaves get a second and third append */
    for (const [pass, step] of [[0, 1], [1, 7], [2, 5]] as const) {
      for (let b = 0; b < N; b += 300) {
        await s.transact((tx) => {
          for (let k = b; k < Math.min(N, b + 300); k += step) {
            tx.put('kv', pos(1, k), val(k, pass));
            model.set(k, pass);
          }
        });
      }
      await s.flush();
    }
    const check = async (st: Store): Promise<void> => {
      const rnd = prng(11);
      for (let i = 0; i < 600; i++) {
        const k = Math.floor(rnd() * (N + 50));
        const got = await st.get('kv', pos(1, k));
        if (model.has(k)) expect(decode(got!)).toEqual({ k, v: model.get(k) });
        else expect(got).toBeUndefined();
      }
      const want = [...model.keys()].sort((a, b) => a - b);
      const fwd: number[] = [];
      for await (const e of st.range('kv')) {
        const { k, v } = decode(e.value);
        expect(v).toBe(model.get(k));
        fwd.push(k);
      }
      expect(fwd).toEqual(want);
      const back: number[] = [];
      for await (const e of st.range('kv', { reverse: true })) back.push(decode(e.value).k);
      expect(back).toEqual(want.reverse());
    };
    s.shrink();
    const kept0 = s.stats().readSets.kept;
    await check(s);
    expect(s.stats().readSets.kept).toBeGreaterThan(kept0);
    /* writes into leaves read that way: each is merged before its first insert */
    s.shrink();
    const merged0 = s.stats().readSets.merged;
    const splits0 = s.stats().interior.splits ?? 0;
    const rnd = prng(5);
    for (let round = 0; round < 20; round++) {
      await s.transact((tx) => {
        for (let i = 0; i < 150; i++) {
          const k = Math.floor(rnd() * N * 2);
          if (model.has(k) && rnd() < 0.4) {
            tx.del('kv', pos(1, k));
            model.delete(k);
          } else {
            tx.put('kv', pos(1, k), val(k, 10 + round));
            model.set(k, 10 + round);
          }
        }
      });
    }
    expect(s.stats().readSets.merged).toBeGreaterThan(merged0);
    expect(s.stats().interior.splits ?? 0).toBeGreaterThan(splits0);
    await check(s);
    await s.flush();
    s = await t.reopen({ cacheSize: 640 * 1024 });
    await check(s);
    expect(await s.fsck()).toEqual([]);
  });
});

describe('Store#range() iterator', () => {
  it('next() calls made before earlier ones resolve get the entries in order, across leaves; return() ends it', async () => {
    t = await tmpStore();
    const s = t.store;
    await s.transact((tx) => {
      for (let k = 0; k < 1500; k++) tx.put('kv', pos(3, k), val(k, 1));
    });
    const it = s.range('kv', { start: pos(3, 0), end: pos(4, 0) });
    // all at once: the first ones wait for the first leaf, the later ones for later leaves
    const rs = await Promise.all(Array.from({ length: 1501 }, () => it.next()));
    expect(rs.slice(0, 1500).map((r) => (r.done ? -1 : decode(r.value.value).k))).toEqual(Array.from({ length: 1500 }, (_, k) => k));
    expect(rs[1500]!.done).toBe(true);
    const it2 = s.range('kv', { start: pos(3, 10), reverse: true, end: pos(3, 900), limit: 1000 });
    const a = await it2.next();
    expect(Number(a.value.pos.offset)).toBe(899);
    expect(await it2.return!()).toEqual({ value: undefined, done: true });
    expect((await it2.next()).done).toBe(true);
    let n = 0;
    for await (const e of s.range('kv', { start: pos(3, 100) })) {
      expect(decode(e.value).k).toBe(100 + n);
      if (++n === 700) break;
    }
    expect(n).toBe(700);
  });

  it('a scan running while the store closes: close() waits for the leaf being read; later next() calls reject ERR_CLOSED', async () => {
    t = await tmpStore();
    const s = t.store;
    await s.transact((tx) => {
      for (let k = 0; k < 1500; k++) tx.put('kv', pos(3, k), val(k, 1));
    });
    const it = s.range('kv');
    expect((await it.next()).done).toBe(false);
    const closing = s.close();
    let err: unknown;
    try {
      for (;;) if ((await it.next()).done) break;
    } catch (e) {
      err = e;
    }
    await closing;
    expect((err as { code?: string }).code).toBe('ERR_CLOSED');
  });
});

describe("a commit's paths (leafIterLazy)", () => {
  it('a path a commit traversed without searching its leaf is searched when a lookup of the same transaction reuses it', async () => {
    t = await tmpStore({ btrees: [{ name: 'kv' }], nodeSize: 16384 });
    const s = t.store;
    await loadKeys(s, 300, 100, 1);
    const engine = s.engine;
    const id = 0;
    const bt = new BtreeTrans(engine, transStartSeqNew(), 0);
    bt.txCtx = new TxCtx(engine.interior);
    try {
      // a commit of keys spread over the leaf: its intent paths end unsearched
      for (let k = 0; k < 300; k += 7) bt.overlay(id).putKey({ type: KEY_TYPE.value, p: posWords(pos(1, k)), size: 0, version: 0, value: val(k, 2) });
      const c = await transCommit(bt);
      expect(c.ret).toBe(0);
      await engine.journalWaitDurable(c.seq);
      expect(bt.paths.some((p) => p.leafIterLazy)).toBe(true);
      // intent lookups take paths of the same kind: getPath hands over a commit's path, which must search its leaf
      for (const k of [0, 1, 150, 151, 294, 299]) {
        const got = await btreeLookup(bt, id, posWords(pos(1, k)), true);
        expect(got, `key ${k}`).not.toBeNull();
        expect(decode(got!.value)).toEqual({ k, v: k % 7 === 0 ? 2 : 1 });
      }
      expect(await btreeLookup(bt, id, posWords(pos(1, 1000)), true)).toBeNull();
    } finally {
      bt.unlockAll();
      bt.txCtx.finish();
    }
  });
});
