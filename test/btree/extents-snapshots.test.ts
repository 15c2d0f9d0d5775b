// SPDX-License-Identifier: GPL-2.0-only
/*
 * Extents btrees: reverse range() at its end, and extents of several snapshots
 * sharing an inode (keys sort by inode, offset, snapshot, and an extent's key
 * sits at its end, so one snapshot's extents interleave with another's).
 * Found by a model fuzzer (reproductions of 2026-11-23).
 */
import { copyFileSync, rmSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BtreeTrans } from '../../src/btree/trans.js';
import { POS_MAX, Store, pos, type Entry, type Transaction } from '../../src/index.js';
import { tmpStore, type TmpStore } from '../helpers/store.js';

let t: TmpStore;
beforeEach(async () => {
  t = await tmpStore({ cacheSize: 256 * 1024 });
});
afterEach(async () => {
  await t.cleanup();
});

const b = (x: string): Uint8Array => new TextEncoder().encode(x);
/** [start..end) with snapshots, valueOffset, value. */
const fmt = (e: Entry): string => `[${e.start!.offset}:${e.start!.snapshot}..${e.pos.offset}:${e.pos.snapshot}) vo=${e.valueOffset} ${new TextDecoder().decode(e.value)}`;
async function all(it: AsyncIterable<Entry>): Promise<string[]> {
  const r: string[] = [];
  for await (const e of it) r.push(fmt(e));
  return r;
}

/** range() returns want, and again after a close and reopen; fsck is clean. */
async function expectRangeKeptAcrossReopen(want: string[]): Promise<void> {
  expect(await all(t.store.range('ext'))).toEqual(want);
  await t.reopen({ cacheSize: 256 * 1024 });
  expect(await all(t.store.range('ext'))).toEqual(want);
  expect(await t.store.engine.fsck()).toEqual([]);
}

describe('extents: reverse range() returns what the forward one does, reversed', () => {
  it('the extent ending exactly at end is in it', async () => {
    const s = t.store;
    await s.transact((tx) => {
      tx.putExtent('ext', pos(1, 0), 10, b('A'));
      tx.putExtent('ext', pos(1, 10), 10, b('B'));
      tx.putExtent('ext', pos(1, 20), 10, b('C'));
    });
    const fw = await all(s.range('ext', { end: pos(1, 20) }));
    expect(fw).toEqual(['[0:0..10:0) vo=0 A', '[10:0..20:0) vo=0 B']);
    expect(await all(s.range('ext', { end: pos(1, 20), reverse: true }))).toEqual(fw.slice().reverse());
    // with a limit, and starting inside the extent after it
    expect(await all(s.range('ext', { end: pos(1, 20), reverse: true, limit: 1 }))).toEqual(['[10:0..20:0) vo=0 B']);
    expect(await all(s.range('ext', { end: pos(1, 25), reverse: true }))).toEqual(['[20:0..30:0) vo=0 C', '[10:0..20:0) vo=0 B', '[0:0..10:0) vo=0 A']);
  });

  it('an extent straddling end is in it whatever end.snapshot is, also behind another snapshot extent ending first', async () => {
    const s = t.store;
    await s.transact((tx) => {
      tx.putExtent('ext', pos(1, 0), 10, b('A'));
      tx.putExtent('ext', pos(1, 10), 100, b('B')); // [10, 110)
      tx.putExtent('ext', pos(1, 20, 3), 40, b('Z')); // snapshot 3 [20, 60): its key comes before B's
    });
    for (const end of [pos(1, 50, 7), pos(1, 50), pos(1, 30, 3)]) {
      const fw = await all(s.range('ext', { end }));
      expect(fw).toEqual(['[0:0..10:0) vo=0 A', '[20:3..60:3) vo=0 Z', '[10:0..110:0) vo=0 B']);
      expect(await all(s.range('ext', { end, reverse: true })), `end ${end.offset}:${end.snapshot}`).toEqual(fw.slice().reverse());
    }
  });
});

describe('extents of several snapshots in one inode', () => {
  it("an extent write trims its own snapshot's older extent though another snapshot's extent lies inside it", async () => {
    const s = t.store;
    await s.transact((tx) => tx.putExtent('ext', pos(1, 0, 0), 100, b('A'))); // snapshot 0 [0, 100)
    await s.transact((tx) => tx.putExtent('ext', pos(1, 50, 1), 10, b('B'))); // snapshot 1 [50, 60)
    await s.transact((tx) => tx.putExtent('ext', pos(1, 10, 0), 10, b('C'))); // snapshot 0 [10, 20): splits A
    const want = ['[0:0..10:0) vo=0 A', '[10:0..20:0) vo=0 C', '[50:1..60:1) vo=0 B', '[20:0..100:0) vo=20 A'];
    await expectRangeKeptAcrossReopen(want);
  });

  it("a slots walk goes by its position's snapshot: another snapshot's extents are passed over", async () => {
    const s = t.store;
    await s.transact((tx) => {
      tx.putExtent('ext', pos(1, 10, 5), 10, b('X')); // snapshot 5 [10, 20)
      tx.putExtent('ext', pos(1, 30, 0), 10, b('A')); // snapshot 0 [30, 40)
    });
    const slots = await s.transact(async (tx) => {
      const it = tx.iter('ext', pos(1, 0, 0), { slots: true });
      const r: string[] = [];
      for (let sl = await it.peekSlot(); sl && sl.start!.offset < 100n && r.length < 10; sl = (await it.nextSlot())!) {
        r.push(`${'hole' in sl ? 'hole' : 'data'} ${sl.start!.offset}..${sl.pos.offset}:${sl.pos.snapshot}`);
      }
      return r;
    });
    // as a normal btree's slots (docs/api.md): the hole runs to the next extent of pos's snapshot
    expect(slots).toEqual(['hole 0..30:0', 'data 30..40:0', `hole 40..${40 + 0xffffffff}:0`]);
  });
  it("a slots walk of one snapshot finds its extent covering pos and its next extent's start though another snapshot's key comes first", async () => {
    const s = t.store;
    await s.transact((tx) => {
      tx.putExtent('ext', pos(1, 50, 3), 10, b('Z')); // snapshot 3 [50, 60): its key comes first
      tx.putExtent('ext', pos(1, 10, 0), 90, b('A')); // snapshot 0 [10, 100)
    });
    const walk = (from: ReturnType<typeof pos>): Promise<string[]> =>
      s.transact(async (tx) => {
        const it = tx.iter('ext', from, { slots: true });
        const r: string[] = [];
        for (let sl = await it.peekSlot(); sl && sl.start!.offset < 200n && r.length < 10; sl = (await it.nextSlot())!) {
          r.push(`${'hole' in sl ? 'hole' : 'data'} ${sl.start!.offset}..${sl.pos.offset}:${sl.pos.snapshot}`);
        }
        return r;
      });
    expect(await walk(pos(1, 0))).toEqual(['hole 0..10:0', 'data 10..100:0', `hole 100..${100 + 0xffffffff}:0`]);
    expect(await walk(pos(1, 15))).toEqual(['data 10..100:0', `hole 100..${100 + 0xffffffff}:0`]);
    expect(await walk(pos(1, 55, 3))).toEqual(['data 50..60:3', `hole 60..${60 + 0xffffffff}:3`]);
    expect(await walk(pos(1, 0, 3))).toEqual(['hole 0..50:3', 'data 50..60:3', `hole 60..${60 + 0xffffffff}:3`]);
  });

  it("an iterator's end does not stop at another snapshot's extent starting past it while a later key starts before it", async () => {
    const s = t.store;
    await s.transact((tx) => {
      tx.putExtent('ext', pos(1, 50, 3), 10, b('Z')); // snapshot 3 [50, 60)
      tx.putExtent('ext', pos(1, 10, 0), 90, b('A')); // snapshot 0 [10, 100)
      tx.putExtent('ext', pos(1, 120, 0), 10, b('B')); // snapshot 0 [120, 130)
    });
    const walk = (end: ReturnType<typeof pos>): Promise<string[]> =>
      s.transact(async (tx) => {
        const it = tx.iter('ext', pos(1, 0), { end });
        const r: string[] = [];
        for (let e = await it.peek(); e; e = await it.next()) r.push(fmt(e));
        return r;
      });
    expect(await walk(pos(1, 40))).toEqual(['[10:0..100:0) vo=0 A']);
    expect(await walk(pos(1, 55))).toEqual(['[50:3..60:3) vo=0 Z', '[10:0..100:0) vo=0 A']);
    expect(await walk(pos(1, 10))).toEqual([]);
    expect(await walk(pos(2, 0))).toEqual(['[50:3..60:3) vo=0 Z', '[10:0..100:0) vo=0 A', '[120:0..130:0) vo=0 B']);
    // the same as range() with that end
    expect(await all(s.range('ext', { start: pos(1, 0), end: pos(1, 40) }))).toEqual(['[10:0..100:0) vo=0 A']);
  });
});

describe('tx.iter over extents of several snapshots in one inode', () => {
  /** Snapshot 0 [0, 10) and [10, 110), snapshot 3 [20, 60) inside the second (its key comes first). */
  async function nested(): Promise<void> {
    await t.store.transact((tx) => {
      tx.putExtent('ext', pos(1, 0), 10, b('P'));
      tx.putExtent('ext', pos(1, 10), 100, b('A'));
      tx.putExtent('ext', pos(1, 20, 3), 40, b('Z'));
    });
  }
  async function walks(tx: Transaction): Promise<{ fw: string[]; rev: string[] }> {
    const fw: string[] = [];
    const f = tx.iter('ext');
    for (let e = await f.peek(); e; e = await f.next()) fw.push(fmt(e));
    const rev: string[] = [];
    const r = tx.iter('ext', POS_MAX);
    for (let e = await r.peekPrev(); e; e = await r.prev()) rev.push(fmt(e));
    return { fw, rev };
  }

  it("prev() returns the extent of another snapshot inside the one it steps back over (reverse = forward, reversed)", async () => {
    await nested();
    const { fw, rev } = await t.store.transact((tx) => walks(tx));
    expect(fw).toEqual(['[0:0..10:0) vo=0 P', '[20:3..60:3) vo=0 Z', '[10:0..110:0) vo=0 A']);
    expect(rev).toEqual(fw.slice().reverse());
    // pos still moves before the start of the entry prev() moved past
    const steps = await t.store.transact(async (tx) => {
      const it = tx.iter('ext', POS_MAX);
      const r: string[] = [`${fmt((await it.peekPrev())!)} @${it.pos.offset}`];
      for (let e = await it.prev(); e; e = await it.prev()) r.push(`${fmt(e)} @${it.pos.offset}:${it.pos.snapshot}`);
      return r;
    });
    expect(steps).toEqual([
      `[10:0..110:0) vo=0 A @${2n ** 64n - 1n}`,
      '[20:3..60:3) vo=0 Z @9:4294967295',
      '[0:0..10:0) vo=0 P @20:2',
    ]);
  });

  it('with a pending extent write cutting an extent that reaches over another snapshot extent: no piece skipped, either way', async () => {
    await nested();
    const { fw, rev } = await t.store.transact(async (tx) => {
      tx.putExtent('ext', pos(1, 40), 5, b('N')); // snapshot 0 [40, 45): A becomes [10, 40) and [45, 110)
      return walks(tx);
    });
    const want = ['[0:0..10:0) vo=0 P', '[10:0..40:0) vo=0 A', '[40:0..45:0) vo=0 N', '[20:3..60:3) vo=0 Z', '[45:0..110:0) vo=35 A'];
    expect(fw).toEqual(want);
    expect(rev).toEqual(want.slice().reverse());
  });

  it("with a pending extent write deleting such an extent's tail, the reverse walk still finds the other snapshot extent ending after what is left", async () => {
    await nested();
    const { fw, rev } = await t.store.transact(async (tx) => {
      tx.putExtent('ext', pos(1, 50), 150, b('W')); // snapshot 0 [50, 200): A becomes [10, 50)
      return walks(tx);
    });
    const want = ['[0:0..10:0) vo=0 P', '[10:0..50:0) vo=0 A', '[20:3..60:3) vo=0 Z', '[50:0..200:0) vo=0 W'];
    expect(fw).toEqual(want);
    expect(rev).toEqual(want.slice().reverse());
  });

  it('with a pending extent write deleting such an extent whole, the reverse walk still finds the other snapshot extent inside it', async () => {
    await nested();
    const { fw, rev } = await t.store.transact(async (tx) => {
      tx.putExtent('ext', pos(1, 5), 200, b('W')); // snapshot 0 [5, 205): A gone, P cut
      return walks(tx);
    });
    const want = ['[0:0..5:0) vo=0 P', '[20:3..60:3) vo=0 Z', '[5:0..205:0) vo=0 W'];
    expect(fw).toEqual(want);
    expect(rev).toEqual(want.slice().reverse());
  });
  it('with a pending delRange and extent write starting at one position, the reverse walk finds the piece the delRange leaves before it', async () => {
    await t.store.transact((tx) => {
      tx.putExtent('ext', pos(1, 300, 3), 9, b('Z')); // snapshot 3 [300, 309)
      tx.putExtent('ext', pos(1, 312, 3), 7, b('Y')); // snapshot 3 [312, 319)
      tx.putExtent('ext', pos(1, 304, 7), 16, b('A')); // snapshot 7 [304, 320)
    });
    const { fw, rev } = await t.store.transact(async (tx) => {
      tx.delRange('ext', pos(1, 309), pos(1, 316));
      tx.putExtent('ext', pos(1, 309), 10, b('N')); // snapshot 0 [309, 319): its range starts where the delRange's does
      return walks(tx);
    });
    const want = ['[300:3..309:3) vo=0 Z', '[304:7..309:7) vo=0 A', '[309:0..319:0) vo=0 N', '[316:3..319:3) vo=4 Y', '[316:7..320:7) vo=12 A'];
    expect(fw).toEqual(want);
    expect(rev).toEqual(want.slice().reverse());
  });

  it("with a pending delRange starting inside an extent whose key comes after another snapshot's: the piece before the range's start is seen, either way", async () => {
    // [start, end) of the range: A crosses start; Z (snapshot 3) is cut too. A start of
    // snapshot 5 reaches one offset further into lower snapshots (positions compare fully).
    const cases: Array<[ReturnType<typeof pos>, ReturnType<typeof pos>, string[]]> = [
      [pos(1, 15), pos(1, 30), ['[0:0..10:0) vo=0 P', '[10:0..15:0) vo=0 A', '[30:3..60:3) vo=10 Z', '[30:0..110:0) vo=20 A']],
      [pos(1, 15, 5), pos(1, 30), ['[0:0..10:0) vo=0 P', '[10:0..16:0) vo=0 A', '[30:3..60:3) vo=10 Z', '[30:0..110:0) vo=20 A']],
      [pos(1, 25), pos(1, 70), ['[0:0..10:0) vo=0 P', '[10:0..25:0) vo=0 A', '[20:3..25:3) vo=0 Z', '[70:0..110:0) vo=60 A']],
    ];
    for (const [start, end, want] of cases) {
      await t.store.transact((tx) => tx.delRange('ext', pos(0, 0), POS_MAX));
      await nested();
      const { fw, rev } = await t.store.transact(async (tx) => {
        tx.delRange('ext', start, end);
        return walks(tx);
      });
      const what = `delRange ${start.offset}:${start.snapshot}..${end.offset}`;
      expect(fw, what).toEqual(want);
      expect(rev, what).toEqual(want.slice().reverse());
      // and the commit left what the transaction saw
      expect(await all(t.store.range('ext')), what).toEqual(want);
    }
  });
});

describe('delRange over extents of several snapshots in one inode (the store keeps an extent size bound)', () => {
  it("cuts an extent whose key comes after another snapshot's extent starting past the range's end", async () => {
    const s = t.store;
    await s.transact((tx) => {
      tx.putExtent('ext', pos(1, 10), 100, b('A')); // snapshot 0 [10, 110)
      tx.putExtent('ext', pos(1, 55, 3), 5, b('Z')); // snapshot 3 [55, 60): its key comes before A's, its start past the range
    });
    await s.transact((tx) => tx.delRange('ext', pos(1, 30), pos(1, 50)));
    const want = ['[10:0..30:0) vo=0 A', '[55:3..60:3) vo=0 Z', '[50:0..110:0) vo=40 A'];
    await expectRangeKeptAcrossReopen(want);
  });

  it('the bound covers every extent committed, is on disk before the commit resolves, and fsck checks it', async () => {
    const s = t.store;
    expect(s.stats().transactions.extentSizeBound).toBe(0);
    await s.transact((tx) => tx.putExtent('ext', pos(1, 0), 100, b('A')));
    expect(s.stats().transactions.extentSizeBound).toBe(128);
    await s.transact((tx) => tx.putExtent('ext', pos(1, 200), 7, b('B')));
    expect(s.stats().transactions.extentSizeBound).toBe(128);
    expect(s.stats().transactions.extentSizeBoundRaises).toBe(1);
    // a crash image taken now (the store still open, the commit just resolved): the bound is in it
    await s.transact((tx) => tx.putExtent('ext', pos(2, 0, 5), 3000, b('C')));
    const copy = `${t.path}.crash`;
    copyFileSync(t.path, copy);
    const c = await Store.open(copy, { cacheSize: 256 * 1024 });
    try {
      expect(c.stats().transactions.extentSizeBound).toBe(4096);
      // and a delRange there cuts C
      await c.transact((tx) => tx.delRange('ext', pos(2, 100), pos(2, 200)));
      expect(await all(c.range('ext', { start: pos(2, 0) }))).toEqual(['[0:5..100:5) vo=0 C', '[200:5..3000:5) vo=200 C']);
      expect(await c.engine.fsck()).toEqual([]);
      // fsck names an extent the bound does not cover (the bound lowered in memory for the check)
      const sb = c.engine.sb;
      c.engine.sb = { ...sb, extentSizeBound: 1000 };
      try {
        const problems = await c.engine.fsck();
        expect(problems).toHaveLength(1);
        expect(problems[0]).toMatch(/^btree ext level 0 bucket \d+: extent ending at .* of size 2800 above the store's extent size bound 1000$/);
      } finally {
        c.engine.sb = sb;
      }
    } finally {
      await c.close();
      rmSync(copy, { force: true });
    }
  });

  it("store.range with an end reads only up to the bound past it, and a batch that read the bound before a raise runs again", async () => {
    const s = t.store;
    await s.transact((tx) => {
      tx.putExtent('ext', pos(1, 10), 100, b('A')); // [10, 110): the bound becomes 128
      tx.putExtent('ext', pos(1, 55, 3), 5, b('Z')); // snapshot 3 [55, 60): its key comes before A's
    });
    expect(s.stats().transactions.extentSizeBound).toBe(128);
    // the first batch sees the bound as it was before A's commit raised it (8): it stops
    // at Z's key (past 50 + 8), short of A's; then finds the bound changed and runs again
    let calls = 0;
    const spy = vi.spyOn(BtreeTrans.prototype, 'extentBoundUse').mockImplementation(function (this: BtreeTrans) {
      const stale = calls++ === 0;
      this.extentBoundSeen = stale ? 8 : this.engine.extentSizeBound;
      return this.extentBoundSeen;
    });
    const restarts0 = s.stats().transactions.restarts;
    let got: string[];
    try {
      got = await all(s.range('ext', { start: pos(1, 0), end: pos(1, 50) }));
    } finally {
      spy.mockRestore();
    }
    expect(got).toEqual(['[10:0..110:0) vo=0 A']);
    expect(calls).toBe(2);
    expect(s.stats().transactions.restarts).toBe(restarts0 + 1);
    expect(await all(s.range('ext', { start: pos(1, 0), end: pos(1, 50), reverse: true }))).toEqual(['[10:0..110:0) vo=0 A']);
  });

  it('scans past an end pass over leaves of short extents but find a long one reaching back from leaves further on', async () => {
    const s = t.store;
    // 2,000 extents of 8 in snapshot 0 (4 KiB nodes: some 20 leaves), and one of 12,000 in
    // snapshot 5 from offset 100: its key sits leaves after the range's end
    for (let i = 0; i < 2000; i += 500) {
      await s.transact((tx) => {
        for (let j = i; j < i + 500; j++) tx.putExtent('ext', pos(1, j * 8), 8, b('s'));
      });
    }
    await s.transact((tx) => tx.putExtent('ext', pos(1, 100, 5), 12000, b('L')));
    expect(s.stats().transactions.extentSizeBound).toBe(16384);
    const long = '[100:5..12100:5) vo=0 L';
    const want = [...Array.from({ length: 13 }, (_, i) => `[${i * 8}:0..${i * 8 + 8}:0) vo=0 s`), long];
    const end = pos(1, 104);
    expect(await all(s.range('ext', { end }))).toEqual(want);
    expect(await all(s.range('ext', { end, reverse: true }))).toEqual(want.slice().reverse());
    const viaIter = await s.transact(async (tx) => {
      const it = tx.iter('ext', pos(1, 0), { end });
      const r: string[] = [];
      for (let e = await it.peek(); e; e = await it.next()) r.push(fmt(e));
      return r;
    });
    expect(viaIter).toEqual(want);
    // a delRange up to there cuts it too (the commit's scan past the range's end)
    await s.transact((tx) => tx.delRange('ext', pos(1, 50), end));
    const after = await all(s.range('ext', { end: pos(1, 120) }));
    expect(after).toEqual([
      ...Array.from({ length: 6 }, (_, i) => `[${i * 8}:0..${i * 8 + 8}:0) vo=0 s`),
      '[48:0..50:0) vo=0 s',
      '[104:0..112:0) vo=0 s',
      '[112:0..120:0) vo=0 s',
      '[104:5..12100:5) vo=4 L',
    ]);
    expect(await s.fsck()).toEqual([]);
  });

  it('a commit whose scan stopped at a bound raised meanwhile (by another commit) runs again', async () => {
    const s = t.store;
    await s.transact((tx) => {
      tx.putExtent('ext', pos(1, 10), 100, b('A'));
      tx.putExtent('ext', pos(1, 55, 3), 5, b('Z'));
    });
    const engine = s.engine;
    const bound = engine.extentSizeBound;
    // another commit raises the bound right after this one's delRange scan read it
    const real = BtreeTrans.prototype.extentBoundUse;
    let raisedOnce = false;
    const spy = vi.spyOn(BtreeTrans.prototype, 'extentBoundUse').mockImplementation(function (this: BtreeTrans) {
      const b0 = real.call(this);
      if (!raisedOnce) {
        raisedOnce = true;
        engine.sb = { ...engine.sb, extentSizeBound: bound * 2 };
      }
      return b0;
    });
    let attempts = 0;
    const restarts0 = s.stats().transactions.restarts;
    try {
      await s.transact((tx) => {
        attempts++;
        tx.delRange('ext', pos(1, 30), pos(1, 50));
      });
    } finally {
      spy.mockRestore();
    }
    expect(attempts).toBe(2);
    expect(s.stats().transactions.restarts).toBe(restarts0 + 1);
    expect(await all(s.range('ext'))).toEqual(['[10:0..30:0) vo=0 A', '[55:3..60:3) vo=0 Z', '[50:0..110:0) vo=40 A']);
  });
});
