// SPDX-License-Identifier: GPL-2.0-only
/*
 * A small journal under a tree two or three levels deep, written back to
 * back in big batches: every batch splits leaves, so the interior nodes are
 * nearly always write_blocked by an interior update under way, and they pin
 * the oldest journal entries. The ring fills; what frees it is writing those
 * interior nodes, which needs their updates journaled first.
 *
 * This used to end in ERR_NO_SPACE ("reclaim could not free any journal
 * entry"): the commit waiting for ring space held its own transaction's
 * update group open (so the blocked parent could never be written), and the
 * update's entry had to compete with the waiting commits for the same space.
 * Now: every interior update pre-reserves the ring space of its entry before
 * it changes anything (journal.ts JournalPreres; without room it completes
 * its group and waits), commits leave an interior share free, a commit that
 * only reclaim can serve completes its update groups before it waits, and
 * reclaim marks blocked nodes need_write (written the moment they are
 * unblocked) and waits for updates and writes under way (engine.ts
 * journalReclaim). The concurrent cases also hit the pre-reservation waits.
 */

import { describe, expect, it } from 'vitest';
import { pos } from '../../src/index.js';
import { Prng } from '../format/prng.js';
import { tmpStore } from '../helpers/store.js';

const VALUE_BYTES = 100;

function valueOf(k: number): Uint8Array {
  const v = new Uint8Array(VALUE_BYTES);
  new DataView(v.buffer).setUint32(0, k, true);
  v[VALUE_BYTES - 1] = k & 0xff;
  return v;
}

function shuffled(n: number, seed: number): number[] {
  const r = new Prng(seed);
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = r.int(i + 1);
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

describe('journal full under back-to-back splits', () => {
  for (const cfg of [
    { name: '16 KiB nodes, 512 KiB journal, 150 batches of 400 keys, one writer', nodeSize: 16384, journalSize: 512 * 1024, batches: 150, batch: 400, writers: 1 },
    { name: '16 KiB nodes, 512 KiB journal, 150 batches of 400 keys, 8 writers', nodeSize: 16384, journalSize: 512 * 1024, batches: 150, batch: 400, writers: 8 },
    { name: '8 KiB nodes, 256 KiB journal, 300 batches of 150 keys, 16 writers', nodeSize: 8192, journalSize: 256 * 1024, batches: 300, batch: 150, writers: 16 },
  ]) {
    it(cfg.name, async () => {
      const t = await tmpStore({ btrees: [{ name: 'kv' }], nodeSize: cfg.nodeSize, blockSize: 4096, journalSize: cfg.journalSize, cacheSize: 4 << 20 });
      try {
        const s = t.store;
        const order = shuffled(cfg.batches, 0x10f);
        let next = 0;
        let maxUsed = 0;
        await Promise.all(
          Array.from({ length: cfg.writers }, async () => {
            for (;;) {
              const bi = next++;
              if (bi >= order.length) return;
              const first = order[bi]! * cfg.batch;
              await s.transact((tx) => {
                for (let k = first; k < first + cfg.batch; k++) tx.put('kv', pos(0, k), valueOf(k));
              });
              maxUsed = Math.max(maxUsed, s.stats().journal.bytesUsed);
            }
          }),
        );
        const st = s.stats();
        const total = cfg.batches * cfg.batch;
        expect(st.btrees.kv!.depth, 'the tree has interior levels').toBeGreaterThanOrEqual(2);
        expect(st.transactions.keysCommitted).toBe(total);
        // the scenario really happened: the ring was nearly full, and writeback
        // had to wait for blocked interior nodes
        expect(maxUsed / cfg.journalSize, 'journal filled up').toBeGreaterThan(0.5);
        expect(st.writeback.nodeWritesWanted, 'writeback met write_blocked nodes').toBeGreaterThan(0);

        const check = async (): Promise<void> => {
          let n = 0;
          let bad = '';
          for await (const e of t.store.range('kv')) {
            if (!bad && (Number(e.pos.offset) !== n || Buffer.compare(e.value, valueOf(n)) !== 0)) bad = `entry ${n}: key ${e.pos.offset}`;
            n++;
          }
          expect(bad).toBe('');
          expect(n).toBe(total);
          expect(await t.store.fsck()).toEqual([]);
        };
        await check();
        await t.reopen();
        await check();
      } finally {
        await t.cleanup();
      }
    }, 120_000);
  }
});
