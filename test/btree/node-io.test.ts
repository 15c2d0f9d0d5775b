// SPDX-License-Identifier: GPL-2.0-only
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BkeyI, KEY_TYPES, PTR_SECTOR_BYTES, bkeyBtreePtr, bkeyValue, bkeyWhiteout } from '../../src/btree/bkey.js';
import { MAX_SETS, NodeKeys, bsetDebug } from '../../src/btree/bset.js';
import { NodeReadExpect, NodeReadOpts, NodeReadResult, bsetKeysDiagnose, bsetKeysInvalid, nodeCanAppend, nodeReadValidate, nodeWriteDone, nodeWritePrepare } from '../../src/btree/node-io.js';
import { BSET_HDR_BYTES, NODE_HDR_BYTES, bsetEnd, bsetHeaderEncode, bsetJournalSeq, bsetJournalSeqMin, bsetU64s, nodeHeaderDecode, nodeHeaderEncode } from '../../src/format/btree-node.js';
import { Prng, bigToPos, posOf, posToBig, property, randPos } from '../format/prng.js';
import { forEachLiveKey } from '../helpers/node-keys.js';

const POS_MIN = posOf(0, 0, 0);
const POS_MAX = new Uint32Array(5).fill(0xffffffff);
const SEQ = 0x123456789abc;
const SECTOR = 512;

type Model = Map<bigint, { value: Uint8Array; version: number }>;

function mk(nodeSize: number, block: number): NodeKeys {
  const k = new NodeKeys(nodeSize, block);
  k.attach(new Uint8Array(nodeSize), new Uint8Array(NodeKeys.auxBytes(nodeSize)));
  return k;
}

function apply(m: Model, k: BkeyI): void {
  const b = posToBig(k.p);
  if (k.type === KEY_TYPES.deleted) m.delete(b);
  else m.set(b, { value: k.value.slice(), version: k.version });
}

function contents(keys: NodeKeys): Model {
  const out: Model = new Map();
  forEachLiveKey(keys, (pos, h) => out.set(pos, { value: keys.keyValue(h).slice(), version: keys.keyVersion(h) }));
  return out;
}

function expectModel(keys: NodeKeys, m: Model): void {
  const got = contents(keys);
  expect([...got.keys()].sort()).toEqual([...m.keys()].sort());
  for (const [p, v] of m) {
    expect(got.get(p)!.version).toBe(v.version);
    expect(Buffer.from(got.get(p)!.value).equals(Buffer.from(v.value))).toBe(true);
  }
  keys.verify();
}

interface Append {
  offset: number;
  bytes: number;
  /** End of the bset's header + keys (what its checksum covers). */
  bsetEnd: number;
  journalSeq: number;
  before: Model;
  after: Model;
  diskBefore: Uint8Array;
}

/** A node with its bucket on a simulated disk. */
class Sim {
  keys: NodeKeys;
  disk: Uint8Array;
  model: Model = new Map();
  appends: Append[] = [];
  version = 1;
  readonly expect: NodeReadExpect;

  constructor(
    readonly nodeSize = 16384,
    readonly block = 4096,
    min: Uint32Array = POS_MIN,
    max: Uint32Array = POS_MAX,
    readonly level = 0,
  ) {
    this.keys = mk(nodeSize, block);
    this.keys.initEmpty({ btreeId: 3, level, minKey: min, maxKey: max, seq: SEQ });
    this.disk = new Uint8Array(nodeSize);
    this.expect = { btreeId: 3, level, minKey: min, maxKey: max, seq: SEQ };
  }

  insert(k: BkeyI): boolean {
    if (!this.keys.insertKey(k)) return false;
    apply(this.model, k);
    return true;
  }

  randomOps(r: Prng, n: number, inodes = 3, spread = 500): void {
    for (let i = 0; i < n; i++) {
      const p = posOf(r.int(inodes), r.int(spread));
      if (r.bool(0.7)) this.insert(bkeyValue(p, r.bytes(r.int(30)), this.version++));
      else this.insert(bkeyWhiteout(p, this.version++));
    }
  }

  write(): Append | null {
    const before = this.appends.length ? this.appends[this.appends.length - 1]!.after : new Map();
    const diskBefore = this.disk.slice();
    const w = nodeWritePrepare(this.keys);
    if (!w) return null;
    this.disk.set(w.bytes, w.offsetBytes);
    const hdrOff = w.offsetBytes === 0 ? NODE_HDR_BYTES : w.offsetBytes;
    const a = { offset: w.offsetBytes, bytes: w.bytes.length, bsetEnd: bsetEnd(this.disk, hdrOff), journalSeq: w.journalSeq, before, after: new Map(this.model), diskBefore };
    nodeWriteDone(this.keys);
    this.appends.push(a);
    return a;
  }

  read(disk = this.disk, opts: NodeReadOpts = {}, expect = this.expect) {
    const k = mk(this.nodeSize, this.block);
    k.data.set(disk);
    return { keys: k, res: nodeReadValidate(k, expect, opts) };
  }
}

beforeAll(() => {
  bsetDebug.checks = true;
});
afterAll(() => {
  bsetDebug.checks = false;
});

describe('nodeWritePrepare() / nodeReadValidate()', () => {
  it('round-trips several appended bsets with whiteouts, and appends after a read', () => {
    property('roundtrip', 8, (r) => {
      const [nodeSize, block] = r.pick([[16384, 512], [65536, 512], [65536, 4096]] as const);
      const sim = new Sim(nodeSize, block);
      for (let round = 0; round < 5; round++) {
        sim.randomOps(r, r.range(1, 60));
        sim.insert(bkeyValue(posOf(9, round), r.bytes(5), sim.version++));
        const a = sim.write();
        expect(a).not.toBeNull();
        expect(a!.offset % sim.block).toBe(0);
        expect(a!.bytes % sim.block).toBe(0);
        expect(sim.keys.writtenBytes).toBe(a!.offset + a!.bytes);
        const { keys, res } = sim.read();
        expect(res).toMatchObject({ ok: true, bsetsRead: round + 1, bsetsSkipped: 0 });
        expectModel(keys, sim.model);
        expect(keys.writtenBytes).toBe(sim.keys.writtenBytes);
        /* 2..MAX_SETS bsets stay sets (whiteouts and all); one, or more than fit, are merged */
        const kept = round + 1 >= 2 && round + 1 <= MAX_SETS;
        expect(keys.nsets).toBe(kept ? round + 1 : 1);
        expect(keys.readSets).toBe(kept);
        /* the same image merged on read (bcachefs's way): the same view and counts */
        bsetDebug.keepReadSets = false;
        const merged = sim.read().keys;
        bsetDebug.keepReadSets = true;
        expect(merged.nsets).toBe(1);
        expect(merged.nrWhiteouts).toBe(0);
        expectModel(merged, sim.model);
        expect([keys.nrKeys, keys.liveU64s, keys.packedKeys, keys.unpackedKeys]).toEqual([merged.nrKeys, merged.liveU64s, merged.packedKeys, merged.unpackedKeys]);
      }
      /* continue on the node as read back from disk */
      const { keys } = sim.read();
      sim.keys = keys;
      sim.randomOps(r, 30);
      const a = sim.write()!;
      expect(a.offset).toBe(sim.appends[sim.appends.length - 2]!.offset + sim.appends[sim.appends.length - 2]!.bytes);
      const again = sim.read();
      expect(again.res.ok).toBe(true);
      expectModel(again.keys, sim.model);
    });
  });

  it('takes inserts into a node whose read kept its bsets: merged first, then appended and read back', () => {
    property('kept sets', 8, (r) => {
      const [nodeSize, block] = r.pick([[16384, 512], [65536, 4096]] as const);
      const sim = new Sim(nodeSize, block);
      const appends = r.range(2, MAX_SETS);
      for (let i = 0; i < appends; i++) {
        sim.randomOps(r, r.range(1, 60));
        sim.insert(bkeyValue(posOf(9, i), r.bytes(5), sim.version++));
        /* the lowest position, in the newest set: its first key */
        if (i === appends - 1) sim.insert(bkeyValue(posOf(0, 0), r.bytes(5), sim.version++));
        expect(sim.write()).not.toBeNull();
      }
      const { keys, res } = sim.read();
      expect(res).toMatchObject({ ok: true, bsetsRead: appends });
      expect(keys.readSets).toBe(true);
      /* the counts were left to their first use: they are right when asked */
      expect(keys.nrKeys).toBe(sim.model.size);
      /* room for an append is what it would be after the merge, not 0 for want of a set slot */
      expect(keys.u64sRemaining()).toBe(Math.max(0, nodeSize - keys.writtenBytes - BSET_HDR_BYTES) >>> 3);
      sim.keys = keys;
      /* the first insert replaces the newest set's first key (its handle is taken before the merge would move it), the next deletes a key of the oldest */
      expect(sim.insert(bkeyValue(posOf(0, 0), r.bytes(9), sim.version++))).toBe(true);
      expect(keys.readSets).toBe(false);
      expect(sim.insert(bkeyWhiteout(posOf(9, 0), sim.version++))).toBe(true);
      expect(keys.nrKeys).toBe(sim.model.size);
      sim.randomOps(r, r.range(1, 30));
      expect(keys.nsets).toBeLessThanOrEqual(2);
      expectModel(keys, sim.model);
      expect(sim.write()).not.toBeNull();
      const again = sim.read();
      expect(again.res).toMatchObject({ ok: true, bsetsRead: appends + 1 });
      expectModel(again.keys, sim.model);
    });
  });

  it('writes an empty new node (header + empty bset) and reads it back', () => {
    const sim = new Sim(4096, 512);
    const a = sim.write()!;
    expect(a.offset).toBe(0);
    expect(a.bytes).toBe(512);
    expect(nodeWritePrepare(sim.keys)).toBeNull(); // clean now
    const { keys, res } = sim.read();
    expect(res.ok).toBe(true);
    expect(keys.nrKeys).toBe(0);
    expect(keys.writtenBytes).toBe(512);
    const hdr = nodeHeaderDecode(sim.disk);
    expect(hdr.ok && hdr.hdr.seq).toBe(SEQ);
  });

  it('lets inserts continue while a write is in flight', () => {
    const sim = new Sim(16384, 512);
    sim.insert(bkeyValue(posOf(1, 1), new Uint8Array([1]), 1));
    const w = nodeWritePrepare(sim.keys)!;
    const sealed = w.bytes.slice();
    sim.insert(bkeyValue(posOf(1, 1), new Uint8Array([2]), 2));
    sim.insert(bkeyValue(posOf(1, 0), new Uint8Array([3]), 3));
    sim.insert(bkeyWhiteout(posOf(1, 1), 4));
    expect(sim.keys.nrWhiteouts).toBe(1); // the sealed key counts as written
    expect(Buffer.from(w.bytes).equals(Buffer.from(sealed))).toBe(true); // sealed bytes did not move
    expect(() => nodeWritePrepare(sim.keys)).toThrow(/in flight/);
    sim.disk.set(w.bytes, w.offsetBytes);
    nodeWriteDone(sim.keys);
    expectModel(sim.keys, sim.model);
    const w2 = nodeWritePrepare(sim.keys)!;
    expect(w2.offsetBytes).toBe(512);
    expect(w2.journalSeq).toBe(4);
    sim.disk.set(w2.bytes, w2.offsetBytes);
    nodeWriteDone(sim.keys);
    const { keys, res } = sim.read();
    expect(res.ok).toBe(true);
    expectModel(keys, sim.model);
  });

  it('reports when the node cannot take another append', () => {
    const sim = new Sim(4096, 512);
    let i = 0;
    while (sim.keys.bytesAvailableForAppend() > 0) {
      sim.insert(bkeyValue(posOf(1, i++), new Uint8Array(8), i));
      if (sim.keys.u64sRemaining() < 8 || i % 20 === 0) sim.write();
      if (i > 1000) throw new Error('never filled');
    }
    expect(nodeCanAppend(sim.keys)).toBe(false);
    expect(sim.keys.u64sRemaining()).toBe(0);
    expect(sim.insert(bkeyValue(posOf(2, 0), new Uint8Array(0), 1))).toBe(false);
    const { keys, res } = sim.read();
    expect(res.ok).toBe(true);
    expectModel(keys, sim.model);
    expect(keys.writtenBytes).toBe(4096);
  });
});

describe('nodeReadValidate() failures', () => {
  function built(r: Prng, nodeSize = 16384, block = 512): Sim {
    const sim = new Sim(nodeSize, block);
    for (let i = 0; i < 4; i++) {
      sim.randomOps(r, r.range(5, 40));
      sim.write();
    }
    return sim;
  }

  it('a torn last append (cut at every sector) loses only that append', () => {
    property('torn', 6, (r) => {
      const sim = built(r, 16384, 4096);
      const last = sim.appends[sim.appends.length - 1]!;
      for (const stale of ['zero', 'random', 'old']) {
        const base = last.diskBefore.slice();
        if (stale === 'random') base.set(r.bytes(sim.nodeSize - last.offset), last.offset);
        if (stale === 'old') base.set(sim.disk.subarray(0, sim.nodeSize - last.offset), last.offset); // old copies of this node's bytes
        for (let c = 0; c * SECTOR <= last.bytes; c++) {
          const disk = base.slice();
          disk.set(sim.disk.subarray(last.offset, last.offset + c * SECTOR), last.offset);
          const complete = last.offset + c * SECTOR >= last.bsetEnd;
          /* no floor, and the floor the engine passes after such a crash: at or below the bset's lowest seq (its keys were pinned) */
          const jmin = bsetJournalSeqMin(sim.disk, last.offset);
          expect(jmin).toBeGreaterThan(0);
          for (const opts of [{}, { tornFloor: jmin }]) {
            const { keys, res } = sim.read(disk, opts);
            expect(res.ok).toBe(true);
            if (res.ok) expect(res.torn).toBe(!complete && c > 0);
            expectModel(keys, complete ? last.after : last.before);
            expect(keys.writtenBytes).toBe(complete ? last.offset + last.bytes : last.offset);
          }
        }
      }
    });
  });

  it('detects a flipped byte anywhere in a header or bset', () => {
    const r = new Prng(11);
    const sim = built(r, 16384, 512);
    const n = sim.appends.length;
    const flip = (off: number) => {
      const d = sim.disk.slice();
      d[off] ^= 1 << r.int(8);
      return sim.read(d);
    };
    for (let off = 0; off < NODE_HDR_BYTES; off++) {
      const { res } = flip(off);
      expect(res.ok).toBe(false);
      if (!res.ok) expect(res.code).toBe('ERR_CHECKSUM');
    }
    sim.appends.forEach((a, i) => {
      const start = i === 0 ? NODE_HDR_BYTES : a.offset;
      for (let off = start; off < a.bsetEnd; off += i === 0 ? 1 : 3) {
        const { keys, res } = flip(off);
        if (i === n - 1) {
          /* the last bset, with no floor: taken for a torn append */
          expect(res.ok).toBe(true);
          expectModel(keys, a.before);
        } else {
          expect(res.ok).toBe(false);
          if (!res.ok) {
            expect(res.code).toBe('ERR_CHECKSUM');
            expect(res.message).toContain(`btree 3 level 0`);
            expect(res.message).toContain(i === 0 ? 'first bset at byte 128' : `bset at byte ${a.offset}`);
          }
        }
      }
      /* the zero tail after a bset is not covered: no effect */
      if (a.bsetEnd < a.offset + a.bytes) {
        const { keys, res } = flip(a.bsetEnd);
        expect(res.ok).toBe(true);
        expectModel(keys, sim.model);
      }
    });
  });

  it('a failing last bset whose header checks out: a tear while the journal holds its keys, damage once it does not', () => {
    property('last bset', 6, (r) => {
      const [nodeSize, block] = r.pick([[16384, 512], [65536, 4096]] as const);
      const sim = built(r, nodeSize, block);
      const a = sim.appends[sim.appends.length - 1]!;
      const prev = sim.appends[sim.appends.length - 2]!;
      const jmin = bsetJournalSeqMin(sim.disk, a.offset);
      const jmax = bsetJournalSeq(sim.disk, a.offset);
      /* the header records the lowest and highest version (journal seq) of the keys inserted since the write before */
      expect(jmin).toBeGreaterThan(prev.journalSeq);
      expect(jmin).toBeLessThanOrEqual(jmax);
      expect(jmax).toBe(a.journalSeq);
      const flipped = (off: number) => {
        const d = sim.disk.slice();
        d[off]! ^= 1 << r.int(8);
        return d;
      };
      const keysAt = r.range(a.offset + BSET_HDR_BYTES, a.bsetEnd);
      for (const off of [keysAt, a.offset + r.int(4)]) {
        /* the keys (or the checksum over them) damaged; the header's own checksum still holds */
        const d = flipped(off);
        for (const floor of [0, 1, jmin]) {
          const { keys, res } = sim.read(d, { tornFloor: floor });
          expect(res).toMatchObject({ ok: true, torn: true, blacklistedSeqs: null });
          expectModel(keys, a.before);
        }
        const { res } = sim.read(d, { tornFloor: jmin + 1 });
        expect(res.ok).toBe(false);
        if (!res.ok) {
          expect(res.code).toBe('ERR_CHECKSUM');
          expect(res.message).toContain(`bset at byte ${a.offset} (journal seqs ${jmin}..${jmax}): bad checksum`);
          expect(res.message).toContain(`replays from seq ${jmin + 1}`);
          expect(res.message).toContain('damage, not an interrupted write');
        }
        /* keys never acknowledged (blacklisted, or past the journal's end): dropping them loses nothing */
        let bl = sim.read(d, { tornFloor: jmax + 1, isSeqBlacklisted: (q) => q === jmax });
        expect(bl.res).toMatchObject({ ok: true, torn: true, blacklistedSeqs: [jmax] });
        expectModel(bl.keys, a.before);
        bl = sim.read(d, { tornFloor: jmax + 1, maxJournalSeq: jmax - 1 });
        expect(bl.res).toMatchObject({ ok: true, torn: true });
      }
      /* the header itself damaged: nothing says the bset was written (not caught; docs/format-node.md) */
      const { keys, res } = sim.read(flipped(r.range(a.offset + 4, a.offset + BSET_HDR_BYTES)), { tornFloor: jmax + 1 });
      expect(res).toMatchObject({ ok: true, torn: false });
      expectModel(keys, a.before);
      /* an intact node reads whole whatever the floor */
      const whole = sim.read(sim.disk, { tornFloor: jmax + 1 });
      expect(whole.res).toMatchObject({ ok: true, torn: false, bsetsRead: sim.appends.length });
      expectModel(whole.keys, sim.model);
    });
  });

  it('the pointer\'s recorded length: any bset failing or missing before it is an error; past it the tear rules decide', () => {
    property('pointer length', 6, (r) => {
      const [nodeSize, block] = r.pick([[16384, 512], [65536, 4096]] as const);
      const sim = built(r, nodeSize, block);
      const n = sim.appends.length;
      const a = sim.appends[n - 1]!;
      const end = a.offset + a.bytes;
      const sectors = (bytes: number) => bytes / PTR_SECTOR_BYTES;
      const withLen = (bytes: number) => ({ ...sim.expect, sectorsWritten: sectors(bytes) });
      /* intact: reads whole at any recorded length up to its end */
      for (const len of [0, PTR_SECTOR_BYTES, a.offset, end]) {
        const { keys, res } = sim.read(sim.disk, {}, withLen(len));
        expect(res).toMatchObject({ ok: true, bsetsRead: n });
        expectModel(keys, sim.model);
      }
      /* a length past what the node holds: data missing */
      if (end < nodeSize) {
        const over = sim.read(sim.disk, {}, withLen(end + PTR_SECTOR_BYTES));
        expect(over.res.ok).toBe(false);
        if (!over.res.ok) {
          expect(over.res.code).toBe('ERR_CHECKSUM');
          /* the walk meets the empty block after the last bset */
          expect(over.res.message).toContain(`bset at byte ${end}: bad magic, inside the ${end + PTR_SECTOR_BYTES} bytes the pointer says are written`);
        }
      }
      const huge = sim.read(sim.disk, {}, withLen(nodeSize + block));
      expect(huge.res).toMatchObject({ ok: false, code: 'ERR_CHECKSUM' });
      if (!huge.res.ok) expect(huge.res.message).toContain(`past the node size ${nodeSize}`);
      /* the last bset damaged three ways, each of which reads as never written or torn without the length */
      const damaged: Array<[string, Uint8Array]> = [];
      let d = sim.disk.slice();
      d[r.range(a.offset + 4, a.offset + BSET_HDR_BYTES)]! ^= 1 << r.int(8);
      damaged.push(['header', d]);
      d = sim.disk.slice();
      d.fill(0, a.offset, end);
      damaged.push(['zeroed (a lost write)', d]);
      d = sim.disk.slice();
      d[r.range(a.offset + BSET_HDR_BYTES, a.bsetEnd)]! ^= 1 << r.int(8);
      damaged.push(['keys', d]);
      for (const [what, disk] of damaged) {
        /* recorded: an error, whatever the journal floor says */
        const rec = sim.read(disk, { tornFloor: 0 }, withLen(end));
        expect(rec.res.ok, what).toBe(false);
        if (!rec.res.ok) {
          expect(rec.res.code).toBe('ERR_CHECKSUM');
          expect(rec.res.message).toContain(`bset at byte ${a.offset}`);
          expect(rec.res.message).toContain(`inside the ${end} bytes the pointer says are written`);
        }
        /* recorded only up to the bset before (its pointer update not durable yet): the tear rules, as without a length */
        const before = sim.read(disk, { tornFloor: 0 }, withLen(a.offset));
        expect(before.res.ok, what).toBe(true);
        expectModel(before.keys, a.before);
      }
      /* an earlier bset damaged with the recorded length short of it is still an error (a valid bset follows) */
      if (n >= 3) {
        const mid = sim.appends[n - 2]!;
        d = sim.disk.slice();
        d[r.range(mid.offset + 4, mid.offset + BSET_HDR_BYTES)]! ^= 1 << r.int(8);
        expect(sim.read(d, {}, withLen(0)).res).toMatchObject({ ok: false, code: 'ERR_CHECKSUM' });
      }
    });
  });

  it('a header that does not match the pointer is a topology error', () => {
    const sim = new Sim(4096, 512, posOf(1, 0), posOf(2, 0), 1);
    sim.write();
    const e = sim.expect;
    const cases: [string, object][] = [
      ['btree id', { ...e, btreeId: 4 }],
      ['level', { ...e, level: 0 }],
      ['node seq', { ...e, seq: SEQ + 1 }],
      ['min key', { ...e, minKey: posOf(1, 1) }],
      ['max key', { ...e, maxKey: posOf(2, 0, 1) }],
    ];
    for (const [field, exp] of cases) {
      const { res } = sim.read(sim.disk, {}, exp as typeof e);
      expect(res.ok).toBe(false);
      if (!res.ok) {
        expect(res.code).toBe('ERR_TOPOLOGY');
        expect(res.message).toContain(field);
        expect(res.message).toContain('byte 0');
        // and which node the bucket holds instead
        expect(res.message).toContain(`the bucket holds btree ${e.btreeId} level ${e.level} node ${SEQ.toString(16)}`);
      }
    }
    expect(sim.read().res.ok).toBe(true);
  });

  it('keys out of order, outside the range or of the wrong kind are topology errors', () => {
    /* the whole key space (a 160-bit format: order by words on summary ties) and one inode (an exact format: order by summaries) */
    for (const [min, max, exact] of [[POS_MIN, POS_MAX, false], [posOf(5, 0), posOf(5, 1000), true]] as const) {
      const s = new Sim(16384, 512, min, max);
      expect(s.keys.format.sumExact).toBe(exact);
      for (let i = 0; i < 10; i++) s.insert(bkeyValue(posOf(5, i), new Uint8Array(8), 1));
      s.write();
      const hdrOff = NODE_HDR_BYTES;
      const u64s = bsetU64s(s.disk, hdrOff);
      const kb = (u64s * 8) / 10; // equal-size keys
      /* swap keys 3 and 4 and reseal the bset with a good checksum */
      const d = s.disk.slice();
      const k3 = d.slice(hdrOff + BSET_HDR_BYTES + 3 * kb, hdrOff + BSET_HDR_BYTES + 4 * kb);
      d.copyWithin(hdrOff + BSET_HDR_BYTES + 3 * kb, hdrOff + BSET_HDR_BYTES + 4 * kb, hdrOff + BSET_HDR_BYTES + 5 * kb);
      d.set(k3, hdrOff + BSET_HDR_BYTES + 4 * kb);
      bsetHeaderEncode(d, hdrOff, SEQ, 1, u64s);
      const { res } = s.read(d);
      expect(res.ok).toBe(false);
      if (!res.ok) {
        expect(res.code).toBe('ERR_TOPOLOGY');
        expect(res.message).toMatch(/out of order/);
        expect(res.message).toContain(`key at byte ${hdrOff + BSET_HDR_BYTES + 4 * kb}`);
      }
      /* duplicate key */
      const d2 = s.disk.slice();
      d2.copyWithin(hdrOff + BSET_HDR_BYTES + 4 * kb, hdrOff + BSET_HDR_BYTES + 3 * kb, hdrOff + BSET_HDR_BYTES + 4 * kb);
      bsetHeaderEncode(d2, hdrOff, SEQ, 1, u64s);
      const r2 = s.read(d2).res;
      expect(!r2.ok && r2.code).toBe('ERR_TOPOLOGY');
      if (!r2.ok) expect(r2.message).toMatch(/out of order/);
      expect(s.read().res.ok).toBe(true);
    }
    const sim = new Sim(16384, 512);
    for (let i = 0; i < 10; i++) sim.insert(bkeyValue(posOf(5, i), new Uint8Array(8), 1));
    sim.write();
    let res: NodeReadResult;
    /* a narrower range in the header (and pointer): keys fall outside */
    const d3 = sim.disk.slice();
    const h = nodeHeaderDecode(d3);
    if (!h.ok) throw new Error('header');
    nodeHeaderEncode(d3, { ...h.hdr, maxKey: posOf(5, 5) });
    ({ res } = sim.read(d3, {}, { ...sim.expect, maxKey: posOf(5, 5) }));
    expect(res.ok).toBe(false);
    if (!res.ok) {
      expect(res.code).toBe('ERR_TOPOLOGY');
      expect(res.message).toMatch(/outside the node range/);
    }
    /* a btree pointer in a leaf */
    const leaf = new Sim(4096, 512);
    leaf.insert(bkeyBtreePtr(posOf(1, 1), { bucket: 1, seq: 5, level: 0, minKey: POS_MIN }));
    expect(() => leaf.write()).toThrow(/btree_ptr in a leaf/); // refused before it reaches the disk
    const inner = new Sim(4096, 512, POS_MIN, POS_MAX, 1);
    inner.insert(bkeyBtreePtr(posOf(1, 1), { bucket: 1, seq: 5, level: 0, minKey: POS_MIN }));
    inner.write();
    expect(inner.read().res.ok).toBe(true);
  });

  it('the key check and its diagnosis agree on every damaged key (random words of headers and keys changed, resealed)', () => {
    /* bsetKeysInvalid is a lean pass that asks bsetKeysDiagnose for the message: a key only one of them refuses would be
       accepted on read, or throw an internal error; packed and unpacked keys, leaves and interior nodes, exact and inexact formats */
    let refused = 0;
    property('key check vs diagnosis', 400, (r, run) => {
      const level = run % 4 === 3 ? 1 : 0;
      const exact = run % 2 === 0;
      const s = exact ? new Sim(16384, 512, posOf(5, 0), posOf(5, 100000), level) : new Sim(16384, 512, POS_MIN, POS_MAX, level);
      for (let i = 0; i < 20 + r.int(40); i++) {
        const p = exact ? posOf(5, r.int(100000)) : randPos(r);
        if (level === 0) s.insert(r.bool(0.85) ? bkeyValue(p, r.bytes(r.int(40)), s.version++) : bkeyWhiteout(p, s.version++));
        else s.insert(bkeyBtreePtr(p, { bucket: 1 + r.int(100), seq: 1 + r.int(1000), level: 0, minKey: POS_MIN }));
      }
      s.write();
      const hdrOff = NODE_HDR_BYTES;
      const u64s = bsetU64s(s.disk, hdrOff);
      const start = hdrOff + BSET_HDR_BYTES;
      const d = s.disk.slice();
      const d32 = new Uint32Array(d.buffer);
      /* the keys' header words (size, type, pad, packed bit, reserved bits) */
      const heads: number[] = [];
      for (let o = start; o < start + u64s * 8; o += (d32[o >>> 2]! & 0xffff) << 3) heads.push(o >>> 2);
      /* 1-3 words of the keys: a key's header word (half the time) or any word */
      for (let n = 1 + r.int(3); n > 0; n--) {
        const w = r.bool(0.5) ? heads[r.int(heads.length)]! : (start >>> 2) + r.int(u64s * 2);
        const bit = 1 << r.int(32);
        d32[w] = r.bool(0.5) ? (d32[w]! ^ bit) >>> 0 : r.u32();
      }
      bsetHeaderEncode(d, hdrOff, SEQ, 1, u64s);
      const k = mk(16384, 512);
      k.data.set(d);
      const hdr = nodeHeaderDecode(k.data);
      if (!hdr.ok) throw new Error(hdr.message);
      k.setHeaderFromDisk(hdr.hdr);
      const why = bsetKeysDiagnose(k, start, start + u64s * 8);
      const fast = bsetKeysInvalid(k, start, start + u64s * 8);
      expect(fast).toBe(why);
      if (why !== null) refused++;
      /* and the whole read says the same (a bset it refuses is a topology error, never a crash) */
      const res = nodeReadValidate(k, s.expect);
      expect(res.ok).toBe(why === null);
      if (!res.ok) expect(res.code).toBe('ERR_TOPOLOGY');
    });
    /* most changes are caught; the rest changed a value or kept the order */
    expect(refused).toBeGreaterThan(200);
  });

  it('skips blacklisted bsets and bsets newer than maxJournalSeq', () => {
    const r = new Prng(5);
    const sim = new Sim(65536, 4096);
    sim.randomOps(r, 40);
    const a1 = sim.write()!;
    sim.randomOps(r, 40);
    const a2 = sim.write()!;
    expect(a2.journalSeq).toBeGreaterThan(a1.journalSeq);
    /* recovery: a2's journal seq was never durable */
    const bl = (s: number) => s === a2.journalSeq;
    let { keys, res } = sim.read(sim.disk, { isSeqBlacklisted: bl });
    expect(res).toMatchObject({ ok: true, bsetsRead: 1, bsetsSkipped: 1 });
    expectModel(keys, a1.after);
    expect(keys.writtenBytes).toBe(a2.offset + a2.bytes); // the skipped bset still takes its space
    ({ keys, res } = sim.read(sim.disk, { maxJournalSeq: a2.journalSeq - 1 }));
    expect(res).toMatchObject({ ok: true, bsetsSkipped: 1 });
    expectModel(keys, a1.after);
    /* new updates after recovery append behind the skipped bset */
    sim.keys = keys;
    sim.model = new Map(a1.after);
    sim.randomOps(r, 40);
    const a3 = sim.write()!;
    expect(a3.offset).toBe(a2.offset + a2.bytes);
    ({ keys, res } = sim.read(sim.disk, { isSeqBlacklisted: bl }));
    expect(res).toMatchObject({ ok: true, bsetsRead: 2, bsetsSkipped: 1 });
    expectModel(keys, sim.model);
  });
});

describe('NodeKeys.toText()', () => {
  it('names sets and the write state', () => {
    const sim = new Sim(4096, 512);
    sim.insert(bkeyValue(posOf(1, 1), new Uint8Array(3), 7));
    nodeWritePrepare(sim.keys);
    const t = sim.keys.toText();
    expect(t).toContain('write in flight');
    expect(t).toContain('writing up to');
    void bigToPos;
  });
});
