// SPDX-License-Identifier: GPL-2.0-only
/*
 * Transactions larger than the node cache, and starvation.
 *
 * A transaction whose leaves do not all fit in the cache must read some of
 * them with its locks dropped (or wait for memory or the cannibalize lock).
 * Three things made such a transaction restart forever (the crash
 * campaign's wipe rounds hit ERR_TOO_MANY_RESTARTS after 10,000 restarts,
 * and a lone delRange over ~270 leaves with a 128-node cache never
 * committed):
 *  - a node write's in-memory merge moves a leaf's lock seq without changing
 *    it: a path that had returned keys failed its relock and restarted; now
 *    the read set vouches for it (same node, same modification count);
 *  - the commit's own rewrite of a leaf its range deletes had scanned left
 *    the scanning path without a node: restart; the read set moves with the
 *    rewrite, so the path only traverses again;
 *  - waiting for the cannibalize lock dropped every lock, and the waiter's
 *    own leaves were then evicted: once a transaction keeps its locks for
 *    I/O it takes a free cannibalize lock without dropping them (the holder
 *    goes over the budget instead).
 * And a last line of defence: after STARVATION_RESTARTS restarts a
 * transaction closes the starvation gate and the others wait at the start of
 * their next attempt until it is done.
 */
import { describe, expect, it } from 'vitest';
import { COMMIT_FRUITLESS_ROUNDS_MAX } from '../../src/btree/commit.js';
import { NEED_RELOCK } from '../../src/btree/path.js';
import { BtreeTrans } from '../../src/btree/trans.js';
import { MemDevice } from '../../src/io/mem-device.js';
import { Store } from '../../src/store.js';

function u32(n: number, len = 40): Uint8Array {
  const b = new Uint8Array(len);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}
const num = (v: Uint8Array | undefined) => (v ? new DataView(v.buffer, v.byteOffset).getUint32(0, true) : 0);

/** Keys 0..n-1 of each inode, value 1, 250 per transaction. */
async function fill(s: Store, inodes: number[], n: number): Promise<void> {
  for (const inode of inodes) {
    for (let b = 0; b < n; b += 250) {
      await s.transact((tx) => {
        for (let k = b; k < b + 250; k++) tx.put('kv', { inode, offset: k }, u32(1));
      });
    }
  }
}

/** 3 inodes x n keys on 4 KiB nodes, 512 KiB cache (about 100 nodes): the tree is several times the cache. */
async function bigStore(n: number): Promise<Store> {
  const mem = MemDevice.create(64 << 20);
  await Store.formatDevice(mem, { btrees: [{ name: 'kv' }], nodeSize: 4096, blockSize: 512, journalSize: 8 << 20 });
  const s = await Store.openDevice(mem, { cacheSize: 512 << 10 });
  await fill(s, [1, 2, 3], n);
  return s;
}

describe('transactions larger than the cache', () => {
  it('one delRange transaction over ~270 leaves with a ~100-node cache commits (alone)', async () => {
    const s = await bigStore(3000);
    try {
      expect(s.stats().alloc.used as number, 'leaves well past the cache').toBeGreaterThan(250);
      let attempts = 0;
      await s.transact((tx) => {
        attempts++;
        for (const inode of [1, 2, 3]) tx.delRange('kv', { inode, offset: 0 }, { inode, offset: 3000 });
      });
      expect(attempts, 'a few attempts, not thousands').toBeLessThan(STARVATION_BOUND);
      for (const inode of [1, 2, 3]) for (let k = 0; k < 3000; k += 97) expect(await s.get('kv', { inode, offset: k })).toBeUndefined();
      expect(await s.fsck()).toEqual([]);
    } finally {
      await s.close();
    }
  }, 120_000);

  it('the same under 8 concurrent writers over those leaves, four times; serializable', async () => {
    const s = await bigStore(3000);
    try {
      for (let round = 0; round < 4; round++) {
        let done = false;
        let writes = 0;
        const writers = Array.from({ length: 8 }, async (_, w) => {
          let x = w * 7919 + round + 1;
          while (!done) {
            x = (x * 48271) % 2147483647;
            const inode = 1 + (x % 3);
            const k = (x >> 3) % 3000;
            await s.transact((tx) => {
              for (let j = 0; j < 4; j++) tx.put('kv', { inode, offset: k + j }, u32(2));
            });
            writes++;
          }
        });
        let attempts = 0;
        let sum = -1;
        await s
          .transact(async (tx) => {
            attempts++;
            // read one inode, delete the others, record the sum it saw
            let t = 0;
            const it = tx.iter('kv', { inode: 1, offset: 0 }, { end: { inode: 1, offset: 2999 } });
            for (let e = await it.next(); e; e = await it.next()) t += num(e.value);
            sum = t;
            tx.put('kv', { inode: 9, offset: round }, u32(t));
            for (const inode of [2, 3]) tx.delRange('kv', { inode, offset: 0 }, { inode, offset: 3000 });
          })
          .finally(() => {
            done = true;
          });
        await Promise.all(writers);
        expect(writes, 'the writers ran meanwhile').toBeGreaterThan(0);
        expect(attempts).toBeLessThan(STARVATION_BOUND);
        expect(num(await s.get('kv', { inode: 9, offset: round }))).toBe(sum);
        // refill what the round deleted
        await fill(s, [2, 3], 3000);
      }
      expect(await s.fsck()).toEqual([]);
    } finally {
      await s.close();
    }
  }, 300_000);

  it('a commit whose paths keep going stale restarts after a bounded number of rounds (so the gate can take over), then commits', async () => {
    const s = await bigStore(1000);
    const proto = BtreeTrans.prototype as unknown as { traverse(this: BtreeTrans, p: unknown): Promise<number> };
    const traverse = proto.traverse;
    try {
      // the first attempt: every traversal leaves the transaction's other paths stale, as
      // evictions under a transaction larger than the cache can (the loop that gained nothing)
      proto.traverse = async function (this: BtreeTrans, p: unknown): Promise<number> {
        const ret = await traverse.call(this, p);
        if (this.restartCount === 0) for (const q of this.paths) if (q !== p) q.uptodate = NEED_RELOCK;
        return ret;
      };
      const before = s.stats().transactions;
      await s.transact((tx) => {
        tx.put('kv', { inode: 1, offset: 5 }, u32(7));
        tx.put('kv', { inode: 3, offset: 995 }, u32(8));
      });
      const after = s.stats().transactions;
      expect(after.roundsGivenUp - before.roundsGivenUp).toBe(1);
      expect(after.restarts - before.restarts).toBeGreaterThanOrEqual(1);
      expect(COMMIT_FRUITLESS_ROUNDS_MAX).toBeLessThan(1000);
      expect(num(await s.get('kv', { inode: 1, offset: 5 }))).toBe(7);
      expect(num(await s.get('kv', { inode: 3, offset: 995 }))).toBe(8);
    } finally {
      proto.traverse = traverse;
      await s.close();
    }
  });

  it('the starvation gate: while a transaction holds it, the others wait at their next attempt', async () => {
    const s = await bigStore(250);
    try {
      const e = s.engine;
      const owner = 0x5eed;
      expect(e.starvationGateClose(owner)).toBe(true);
      expect(e.starvationGateClose(owner + 1), 'one holder at a time').toBe(false);
      let done = false;
      const p = s.put('kv', { inode: 5, offset: 5 }, u32(5)).then(() => (done = true));
      await new Promise((r) => setTimeout(r, 50));
      expect(done, 'the put waits at the gate').toBe(false);
      expect(s.stats().transactions.starvationWaits).toBeGreaterThan(0);
      // reads do not take part
      expect(num(await s.get('kv', { inode: 1, offset: 1 }))).toBe(1);
      e.starvationGateOpen(owner);
      await p;
      expect(done).toBe(true);
      expect(num(await s.get('kv', { inode: 5, offset: 5 }))).toBe(5);
    } finally {
      await s.close();
    }
  });
});

/** Attempts a transaction above should never need (the gate closes at 64 restarts). */
const STARVATION_BOUND = 64;
