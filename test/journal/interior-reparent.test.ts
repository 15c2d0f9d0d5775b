// SPDX-License-Identifier: GPL-2.0-only
/*
 * An interior update whose parent another update replaces before it is
 * journaled (bcachefs btree_update_reparent): its pointer keys live on only
 * in the replacing update's new nodes, which become reachable with that
 * update's entry. Until then the journal must keep the first update's entry
 * in the window; the node it went into in memory (dying) no longer pins it.
 *
 * Built step by step on a device whose node writes the test holds back
 * (each update waits for its new nodes' writes before it is journaled):
 *   G1  a leaf X under the root P splits into X1, X2 (pointers in P, in memory);
 *   G15 X2 merges with its next sibling Y into Y' (a whiteout at X2's max and
 *       a pointer at Y's max starting at X2's min: in P, in memory);
 *   G2  P is rewritten into P' (with both updates' pointers), and its write
 *       held back: P' is never reachable in the crash image;
 *   G1 then G15 are journaled (P is dying: no pin there), a key goes into
 *   X1 between them, and one more entry is written.
 * The crash image has G15's entry and that key's in the window. Without the
 * pin G1's entry fell out of it: the old P, with G15's pointer keys replayed
 * over it, had no child from X's min to X1's max, and replaying the key into
 * X1's range failed ("insertKey: ... outside node range" of Y', the crash
 * campaign's failure, seed 1910000 round 125 with wipes).
 */
import { describe, expect, it } from 'vitest';
import { NodeIter } from '../../src/btree/bset.js';
import { KEY_TYPE, btreePtrDecode } from '../../src/btree/bkey.js';
import { wordsToBpos } from '../../src/btree/bpos.js';
import type { BtreeUpdate } from '../../src/btree/interior.js';
import { FaultDevice } from '../../src/io/fault-device.js';
import { MemDevice } from '../../src/io/mem-device.js';
import { Store } from '../../src/store.js';

const KV = [{ name: 'kv' }];

function val(tag: number): Uint8Array {
  const b = new Uint8Array(40);
  new DataView(b.buffer).setUint32(0, tag, true);
  for (let i = 4; i < b.length; i++) b[i] = (tag * 31 + i) & 0xff;
  return b;
}

/** The root's children: [min offset, max offset, bucket] (one inode, offsets below 2^32). */
function children(store: Store): Array<{ min: bigint; max: bigint; bucket: number }> {
  const root = store.engine.roots[0]!.node!;
  const it = new NodeIter();
  const out: Array<{ min: bigint; max: bigint; bucket: number }> = [];
  const max = new Uint32Array(5);
  it.initStart(root.keys);
  for (let h = it.peek(); h >= 0; it.advance(), h = it.peek()) {
    if (root.keys.keyType(h) !== KEY_TYPE.btree_ptr) continue;
    const p = btreePtrDecode(root.keys.keyValue(h));
    root.keys.keyPosTo(h, max, 0);
    out.push({ min: wordsToBpos(p.minKey).offset, max: wordsToBpos(max).offset, bucket: p.bucket });
  }
  return out;
}

/** Wait (turns of the event loop, no clock) until cond holds. */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; !cond(); i++) {
    if (i > 100_000) throw new Error(`never: ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

describe('an interior update whose parent a later update replaced before it was journaled', () => {
  it('stays in the journal window until the replacing update is journaled', async () => {
    const mem = MemDevice.create(16 << 20);
    await Store.formatDevice(mem, { btrees: KV, nodeSize: 4096, blockSize: 512, journalSize: 1 << 20 });
    const fd = await FaultDevice.wrap(mem);
    // node writes to buckets `hold` names wait until released
    let hold: (bucket: number) => boolean = () => false;
    const held: Array<{ bucket: number; go: () => void }> = [];
    const release = () => {
      for (let i = held.length - 1; i >= 0; i--) {
        if (hold(held[i]!.bucket)) continue;
        held[i]!.go();
        held.splice(i, 1);
      }
    };
    let bucketOf = (_off: number) => -1;
    const write = fd.write.bind(fd);
    fd.write = async (buf, off) => {
      const b = bucketOf(off);
      if (b >= 0 && hold(b)) await new Promise<void>((go) => held.push({ bucket: b, go }));
      return write(buf, off);
    };
    const store = await Store.openDevice(fd, { cacheSize: 2 << 20 });
    const engine = store.engine;
    const L = engine.layout;
    bucketOf = (off) => (off >= L.bucketOffsetBytes ? Math.floor((off - L.bucketOffsetBytes) / L.nodeBytes) : -1);
    const expected = new Map<number, Uint8Array>();
    const put = async (offsets: number[]) => {
      await store.transact((tx) => {
        for (const o of offsets) {
          tx.put('kv', { inode: 1, offset: o }, val(o));
          expected.set(o, val(o));
        }
      });
    };
    const updateOf = (kind: BtreeUpdate['kind']): BtreeUpdate => {
      const u = engine.interior.pending.filter((x) => x.kind === kind);
      expect(u).toHaveLength(1);
      return u[0]!;
    };
    try {
      // a root with a few leaves, everything written
      for (let i = 0; i < 300; i += 50) await put(Array.from({ length: 50 }, (_, k) => (i + k) * 10));
      await store.flush();
      expect(engine.roots[0]!.node!.level).toBe(1);
      const before = children(store);
      expect(before.length).toBeGreaterThanOrEqual(5);
      const X = before[2]!;
      const Y = before[3]!;

      hold = () => true;
      // G1: X splits
      const xKeys = [...expected.keys()].filter((o) => BigInt(o) >= X.min && BigInt(o) <= X.max);
      await put(xKeys.map((o) => o + 5));
      const g1 = updateOf('split');
      const afterSplit = children(store);
      expect(afterSplit).toHaveLength(before.length + 1);
      const X1 = afterSplit[2]!;
      const X2 = afterSplit[3]!;
      expect([X1.min, X2.max]).toEqual([X.min, X.max]);

      // G15: X2 and Y shrink to one key each and merge
      const gone = [...expected.keys()].filter((o) => (BigInt(o) >= X2.min && BigInt(o) <= X2.max) || (BigInt(o) >= Y.min && BigInt(o) <= Y.max));
      const keep = [gone[0]!, gone[gone.length - 1]!];
      await store.transact((tx) => {
        for (const o of gone) {
          if (keep.includes(o)) continue;
          tx.del('kv', { inode: 1, offset: o });
          expected.delete(o);
        }
      });
      await (engine as unknown as { mergesIdle(): Promise<void> }).mergesIdle();
      const g15 = updateOf('merge');
      const afterMerge = children(store);
      expect(afterMerge).toHaveLength(before.length);
      const Ym = afterMerge[3]!;
      expect([afterMerge[2]!.bucket, Ym.min, Ym.max]).toEqual([X1.bucket, X2.min, Y.max]);

      // G2: P rewritten into P'
      const P = engine.roots[0]!.node!;
      await engine.runInternal(async (bt) => {
        const path = bt.pathNew(0, P.keys.minKey, 0, P.level, P.level + 1);
        return engine.interior.rewriteNode(bt, path, P.level, P.bucket, { done: false });
      });
      const Pnew = engine.roots[0]!.node!;
      expect(Pnew).not.toBe(P);
      const PnewBucket = Pnew.bucket;

      // G1 completes (its new nodes written, journaled, durable); P' and Y' stay unwritten
      hold = (b) => b === PnewBucket || b === Ym.bucket;
      release();
      await until(() => g1.state === 'done', 'G1 done');

      // a key into X1 (its write held: it stays in the journal), then G15 completes
      hold = (b) => b === PnewBucket || b === Ym.bucket || b === X1.bucket;
      await put([Number(X1.min) + 1]);
      hold = (b) => b === PnewBucket || b === X1.bucket;
      release();
      await until(() => g15.state === 'done', 'G15 done');
      // one more entry: its last_seq is the oldest pin
      await put([100_000]);

      const img = fd.crashImage();
      const s2 = await Store.openDevice(MemDevice.fromImage(img), { cacheSize: 2 << 20 });
      try {
        expect(await s2.fsck()).toEqual([]);
        const found = new Map<number, Uint8Array>();
        for await (const e of s2.range('kv')) found.set(Number(e.pos.offset), e.value);
        expect([...found.keys()].sort((a, b) => a - b)).toEqual([...expected.keys()].sort((a, b) => a - b));
        for (const [o, v] of expected) expect(found.get(o)).toEqual(v);
      } finally {
        await s2.close();
      }
    } finally {
      hold = () => false;
      release();
      await store.close();
    }
  });
});
