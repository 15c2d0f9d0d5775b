// SPDX-License-Identifier: GPL-2.0-only
/*
 * Journal seq blacklist gc (src/journal/blacklist-gc.ts): a blacklisted range
 * is kept while a node on disk still holds a bset in it or the journal may
 * need it, and dropped (and the superblock rewritten) once neither holds.
 *
 *  - An unclean open blacklists a range; after the gc walk, writes that move
 *    last_seq past it, and a clean close, the superblock has no range left,
 *    the data is intact and fsck is clean.
 *  - A node whose bucket holds a bset with a blacklisted seq (built here by
 *    blacklisting the seq of a bset already written, as a crash would have
 *    left a bset the journal never made durable): it is registered when read,
 *    rewritten into a new bucket by the gc, the range is dropped, and the
 *    skipped keys stay gone after reopening (dropping the range with the old
 *    bucket still reachable would have brought them back).
 *  - A walk under concurrent writers, splits and merges finishes and the
 *    registry holds the nodes it should.
 */
import { describe, expect, it } from 'vitest';
import { NodeIter } from '../../src/btree/bset.js';
import { KEY_TYPE, btreePtrDecode } from '../../src/btree/bkey.js';
import { BSET_HDR_BYTES, NODE_HDR_BYTES, bsetEnd, bsetHeaderCheck, bsetJournalSeq, nodeHeaderDecode, roundUp } from '../../src/format/btree-node.js';
import { readSuperblock, writeSuperblock, type Superblock } from '../../src/format/superblock.js';
import { FaultDevice } from '../../src/io/fault-device.js';
import { MemDevice } from '../../src/io/mem-device.js';
import { bucketToOffset } from '../../src/layout.js';
import { wordsToBpos } from '../../src/btree/bpos.js';
import { Store } from '../../src/store.js';

const KV = [{ name: 'kv' }];

function val(tag: number, len = 40): Uint8Array {
  const b = new Uint8Array(len);
  new DataView(b.buffer).setUint32(0, tag, true);
  for (let i = 4; i < len; i++) b[i] = (tag * 31 + i) & 0xff;
  return b;
}

function same(a: Uint8Array | undefined, b: Uint8Array): boolean {
  return !!a && a.length === b.length && Buffer.compare(a, b) === 0;
}

/** The journal seqs of the bsets in a bucket, as the node reader walks them. */
function bsetSeqs(img: Uint8Array, offset: number, nodeBytes: number, blockBytes: number): number[] {
  const data = img.subarray(offset, offset + nodeBytes);
  const h = nodeHeaderDecode(data);
  if (!h.ok) throw new Error(`no node at ${offset}: ${h.message}`);
  const out: number[] = [];
  for (let off = NODE_HDR_BYTES; off + BSET_HDR_BYTES <= data.length; ) {
    if (bsetHeaderCheck(data, off, h.hdr.seq) !== 'ok') break;
    out.push(bsetJournalSeq(data, off));
    off = roundUp(bsetEnd(data, off), blockBytes);
  }
  return out;
}

/** Buckets of the root's children (the root must be interior). */
function childBuckets(store: Store): number[] {
  const root = store.engine.roots[0]!.node!;
  const it = new NodeIter();
  const out: number[] = [];
  it.initStart(root.keys);
  for (let h = it.peek(); h >= 0; it.advance(), h = it.peek()) {
    if (root.keys.keyType(h) === KEY_TYPE.btree_ptr) out.push(btreePtrDecode(root.keys.keyValue(h)).bucket);
  }
  return out;
}


/** A disk image reopened on a fresh MemDevice each time (a closed store closes its device). */
class Disk {
  dev: MemDevice;
  constructor(public img: Uint8Array) {
    this.dev = MemDevice.fromImage(img);
  }
  static async formatted(sizeBytes = 16 << 20): Promise<Disk> {
    const mem = MemDevice.create(sizeBytes);
    await Store.formatDevice(mem, { btrees: KV, nodeSize: 4096, blockSize: 512, journalSize: 1 << 20 });
    return new Disk(mem.image());
  }
  async open(opts: { cacheSize?: number; readOnly?: boolean } = {}): Promise<Store> {
    this.dev = MemDevice.fromImage(this.img);
    return Store.openDevice(this.dev, { cacheSize: 2 << 20, ...opts });
  }
  async close(store: Store): Promise<void> {
    await store.close();
    this.img = this.dev.image();
  }
  async superblock(): Promise<Superblock> {
    return readSuperblock(MemDevice.fromImage(this.img));
  }
  async setSuperblock(sb: Superblock): Promise<void> {
    const d = MemDevice.fromImage(this.img);
    await writeSuperblock(d, sb);
    this.img = d.image();
  }
}

describe('journal seq blacklist gc', () => {
  /** A store with `n` keys and a crash image of it (taken before close): the image's next open is unclean. */
  async function crashed(n: number, batch = 1): Promise<{ disk: Disk; expected: Map<number, Uint8Array> }> {
    const mem = MemDevice.create(32 << 20);
    await Store.formatDevice(mem, { btrees: KV, nodeSize: 4096, blockSize: 512, journalSize: 1 << 20 });
    const fd = await FaultDevice.wrap(mem);
    const s1 = await Store.openDevice(fd, { cacheSize: 2 << 20 });
    const expected = new Map<number, Uint8Array>();
    for (let i = 0; i < n; i += batch) {
      await s1.transact((tx) => {
        for (let k = i; k < i + batch; k++) {
          tx.put('kv', { inode: 1, offset: k }, val(k));
          expected.set(k, val(k));
        }
      });
    }
    const img = fd.crashImage();
    await s1.close();
    return { disk: new Disk(img), expected };
  }

  it('an unclean open blacklists a range; once the walk is done and last_seq has passed it, it is dropped and persisted', async () => {
    const { disk, expected } = await crashed(600);
    const s2 = await disk.open();
    expect(s2.engine.blacklist.length, 'the unclean open blacklists the seqs after the newest entry').toBe(1);
    const range = s2.engine.blacklist.toArray()[0]!;
    expect((await readSuperblock(disk.dev)).blacklist).toEqual([range]);
    await s2.engine.blacklistGcRun();
    const st = s2.stats().blacklist;
    expect(st.walkDone).toBe(true);
    expect(st.nodesWalked as number).toBeGreaterThan(1);
    expect(st.holders, 'no node on disk holds a bset from after the crash (log before data)').toBe(0);
    for (let i = 600; i < 700; i++) {
      await s2.put('kv', { inode: 1, offset: i }, val(i));
      expected.set(i, val(i));
    }
    await s2.flush();
    await s2.put('kv', { inode: 1, offset: 700 }, val(700));
    expected.set(700, val(700));
    expect(s2.engine.journal.lastSeqOndisk).toBeGreaterThan(range.end);
    await s2.engine.blacklistGc.dropCheck();
    // dropped here or by the writeback timer's check already
    expect(s2.stats().blacklist.rangesDropped).toBe(1);
    expect(s2.engine.blacklist.length).toBe(0);
    expect((await readSuperblock(disk.dev)).blacklist, 'the drop is persisted at once').toEqual([]);
    // a crash right after the drop: recovery blacklists anew and loses nothing
    const crashAfterDrop = new Disk(disk.dev.image());
    await disk.close(s2);
    const s4 = await crashAfterDrop.open();
    try {
      expect(s4.engine.blacklist.length).toBe(1);
      expect(s4.engine.blacklist.toArray()[0]!.start).toBeGreaterThan(range.end);
      for (const [k, v] of expected) expect(same(await s4.get('kv', { inode: 1, offset: k }), v), `key ${k} after a crash following the drop`).toBe(true);
      expect(await s4.fsck()).toEqual([]);
    } finally {
      await s4.close();
    }

    const s3 = await disk.open();
    try {
      expect(s3.engine.blacklist.length).toBe(0);
      for (const [k, v] of expected) expect(same(await s3.get('kv', { inode: 1, offset: k }), v), `key ${k}`).toBe(true);
      expect(await s3.fsck()).toEqual([]);
    } finally {
      await s3.close();
    }
  });

  it('a clean close drops a range the walk found unheld (the close moves last_seq past it)', async () => {
    const { disk, expected } = await crashed(50);
    const s2 = await disk.open();
    expect(s2.engine.blacklist.length).toBe(1);
    await s2.engine.blacklistGcRun();
    await s2.put('kv', { inode: 1, offset: 99 }, val(99));
    expected.set(99, val(99));
    await disk.close(s2);
    expect((await disk.superblock()).blacklist).toEqual([]);
    const s3 = await disk.open();
    try {
      for (const [k, v] of expected) expect(same(await s3.get('kv', { inode: 1, offset: k }), v), `key ${k}`).toBe(true);
      expect(await s3.fsck()).toEqual([]);
    } finally {
      await s3.close();
    }
  });

  for (const depth of [1, 2] as const) {
    it(`a node (depth ${depth}: ${depth === 1 ? 'the root leaf' : 'a leaf under the root'}) holding a blacklisted bset is rewritten; the range goes; its keys stay gone`, async () => {
      const disk = await Disk.formatted();
      const base = depth === 1 ? 20 : 400;
      const s1 = await disk.open();
      for (let i = 0; i < base; i++) await s1.put('kv', { inode: 1, offset: i * 10 }, val(i));
      await s1.flush();
      expect(s1.stats().btrees.kv!.depth).toBe(depth);
      // a second bset in one leaf: keys between existing ones, written by flush()
      const target = depth === 1 ? s1.engine.roots[0]!.node!.bucket : childBuckets(s1)[1]!;
      const firstOfTarget = depth === 1 ? 0 : (() => {
        const root = s1.engine.roots[0]!.node!;
        const it = new NodeIter();
        it.initStart(root.keys);
        for (let h = it.peek(); h >= 0; it.advance(), h = it.peek()) {
          const p = btreePtrDecode(root.keys.keyValue(h));
          if (p.bucket === target) return Number(wordsToBpos(p.minKey).offset);
        }
        throw new Error('target not found');
      })();
      const extra: number[] = [];
      for (let k = firstOfTarget + 1; extra.length < 5; k += 10) {
        extra.push(k);
        await s1.put('kv', { inode: 1, offset: k }, val(100000 + k));
      }
      await s1.flush();
      const layout = s1.engine.layout;
      await disk.close(s1);

      const seqs = bsetSeqs(disk.img, bucketToOffset(layout, target), 4096, 512);
      expect(seqs.length, `bsets in bucket ${target}`).toBeGreaterThanOrEqual(2);
      const bad = seqs[seqs.length - 1]!;
      // as if a crash had lost the journal entries of that bset: blacklist its seq
      await disk.setSuperblock({ ...(await disk.superblock()), blacklist: [{ start: bad, end: bad }] });

      const s2 = await disk.open();
      for (const k of extra) expect(await s2.get('kv', { inode: 1, offset: k }), `key ${k} of the blacklisted bset`).toBeUndefined();
      await s2.engine.blacklistGcRun();
      let st = s2.stats().blacklist;
      expect(st.walkDone).toBe(true);
      expect(st.nodesRewritten, 'the holder is rewritten').toBe(1);
      expect(st.holders, 'its old bucket left the registry once the rewrite was durable').toBe(0);
      expect(s2.engine.alloc.stateOf(target), 'the old bucket is unreachable').not.toBe('used');
      // last_seq on disk must pass the range too (an old seq: any new entry does)
      await s2.put('kv', { inode: 2, offset: 0 }, val(7));
      await s2.flush();
      await s2.engine.blacklistGc.dropCheck();
      st = s2.stats().blacklist;
      expect(st.ranges).toBe(0);
      expect(st.rangesDropped).toBe(1);
      expect(await s2.fsck()).toEqual([]);
      await disk.close(s2);
      expect((await disk.superblock()).blacklist).toEqual([]);

      const s3 = await disk.open();
      try {
        for (const k of extra) expect(await s3.get('kv', { inode: 1, offset: k }), `key ${k} must not come back`).toBeUndefined();
        for (let i = 0; i < base; i++) expect(same(await s3.get('kv', { inode: 1, offset: i * 10 }), val(i)), `key ${i * 10}`).toBe(true);
        expect(same(await s3.get('kv', { inode: 2, offset: 0 }), val(7))).toBe(true);
        expect(await s3.fsck()).toEqual([]);
      } finally {
        await s3.close();
      }
    });
  }

  it('a range a node still holds is kept (read-only open: no gc, no walk), the keys stay skipped', async () => {
    const disk = await Disk.formatted();
    const s1 = await disk.open();
    for (let i = 0; i < 10; i++) await s1.put('kv', { inode: 1, offset: i * 2 }, val(i));
    await s1.flush();
    await s1.put('kv', { inode: 1, offset: 1 }, val(1000));
    await s1.flush();
    const layout = s1.engine.layout;
    await disk.close(s1);
    const sb = await disk.superblock();
    const seqs = bsetSeqs(disk.img, bucketToOffset(layout, sb.btrees[0]!.root!.bucket), 4096, 512);
    const bad = seqs[seqs.length - 1]!;
    await disk.setSuperblock({ ...sb, blacklist: [{ start: bad, end: bad }] });
    const s2 = await disk.open({ readOnly: true });
    try {
      expect(await s2.get('kv', { inode: 1, offset: 1 })).toBeUndefined();
      const st = s2.stats().blacklist;
      expect(st.holders, 'the read registered the root leaf').toBe(1);
      expect(st.walkDone).toBe(false);
      expect(await s2.engine.blacklistGc.dropCheck({ persist: false })).toBe(0);
      expect(s2.engine.blacklist.length).toBe(1);
      expect(s2.engine.toText()).toContain(`seqs ${bad}`);
    } finally {
      await disk.close(s2);
    }
    expect((await disk.superblock()).blacklist).toEqual([{ start: bad, end: bad }]);
  });

  it('the walk runs under concurrent writers (splits, merges) and finishes; fsck clean', async () => {
    const { disk, expected } = await crashed(2000, 4);
    const s2 = await disk.open({ cacheSize: 512 << 10 });
    try {
      const writers = Array.from({ length: 4 }, async (_, w) => {
        for (let i = 0; i < 300; i++) {
          const k = 5000 + w * 1000 + i;
          await s2.put('kv', { inode: 1, offset: k }, val(k, 200));
          expected.set(k, val(k, 200));
          if (i % 3 === 0) {
            const lo = w * 400 + (i % 40);
            await s2.transact((tx) => tx.delRange('kv', { inode: 1, offset: lo }, { inode: 1, offset: lo + 3 }));
            for (let d = lo; d < lo + 3; d++) expected.delete(d);
          }
        }
      });
      await Promise.all([s2.engine.blacklistGcRun(), ...writers]);
      const st = s2.stats().blacklist;
      expect(st.walkDone).toBe(true);
      expect(st.errors).toBe(0);
      expect(await s2.fsck()).toEqual([]);
      for (const [k, v] of expected) expect(same(await s2.get('kv', { inode: 1, offset: k }), v), `key ${k}`).toBe(true);
    } finally {
      await s2.close();
    }
  });
});
