// SPDX-License-Identifier: GPL-2.0-only
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BkeyI, KEY_TYPES, bkeyBtreePtr, bkeyExtent, bkeyValue, bkeyWhiteout } from '../../src/btree/bkey.js';
import { KeyBuffers, NodeIter, NodeKeys, RO_FILTER_AFTER, bsetDebug, roFilterCounters } from '../../src/btree/bset.js';
import { nodeReadValidate, nodeWriteDone, nodeWritePrepare } from '../../src/btree/node-io.js';
import { BkeyFormat, formatFromKeys, formatFromRange } from '../../src/format/bkey-format.js';
import { Prng, bigToPos, posOf, posToBig, property, randPos } from '../format/prng.js';

const POS_MIN = posOf(0, 0, 0);
const POS_MAX = new Uint32Array(5).fill(0xffffffff);

function mk(nodeSize = 4096, block = 512): NodeKeys {
  const k = new NodeKeys(nodeSize, block);
  k.attach(new Uint8Array(nodeSize), new Uint8Array(NodeKeys.auxBytes(nodeSize)));
  return k;
}

function fresh(nodeSize = 4096, opts: { min?: Uint32Array; max?: Uint32Array; format?: BkeyFormat; block?: number; level?: number } = {}): NodeKeys {
  const k = mk(nodeSize, opts.block ?? 512);
  k.initEmpty({ btreeId: 1, level: opts.level ?? 0, minKey: opts.min ?? POS_MIN, maxKey: opts.max ?? POS_MAX, seq: 0xabcdef12345, format: opts.format });
  return k;
}

interface MKey {
  type: number;
  value: Uint8Array;
  version: number;
  size: number;
}

type Model = Map<bigint, MKey>;

/** Everything the iterator returns, in order (whiteouts included). */
function listAll(keys: NodeKeys): { pos: bigint; h: number; type: number }[] {
  const it = new NodeIter();
  it.initStart(keys);
  const out: { pos: bigint; h: number; type: number }[] = [];
  const p = new Uint32Array(5);
  for (let h = it.peek(); h >= 0; it.advance(), h = it.peek()) {
    keys.keyPosTo(h, p, 0);
    out.push({ pos: posToBig(p), h, type: keys.keyType(h) });
  }
  return out;
}

function expectMatchesModel(keys: NodeKeys, model: Model): void {
  const all = listAll(keys);
  for (let i = 1; i < all.length; i++) expect(all[i]!.pos > all[i - 1]!.pos).toBe(true);
  const live = all.filter((e) => e.type !== KEY_TYPES.deleted);
  const want = [...model.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  expect(live.map((e) => e.pos)).toEqual(want);
  for (const e of live) {
    const m = model.get(e.pos)!;
    expect(keys.keyType(e.h)).toBe(m.type);
    expect(keys.keyVersion(e.h)).toBe(m.version);
    expect(keys.keySize(e.h)).toBe(m.size);
    expect(Buffer.from(keys.keyValue(e.h)).equals(Buffer.from(m.value))).toBe(true);
  }
  expect(keys.nrKeys).toBe(model.size);
  keys.verify();
}

function sortedModelKeys(model: Model): bigint[] {
  return [...model.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** Check searches against a linear scan of the merged view, and per set. */
function checkSearches(keys: NodeKeys, r: Prng, pool: Uint32Array[], n = 40): void {
  const all = listAll(keys);
  const it = new NodeIter();
  const p = new Uint32Array(5);
  for (let i = 0; i < n; i++) {
    const base = r.bool(0.7) && pool.length ? pool[r.int(pool.length)]! : randPos(r);
    const sb = posToBig(base) + BigInt(r.pick([-1, 0, 0, 1]));
    if (sb < 0n || sb >= 1n << 160n) continue;
    const s = bigToPos(sb);
    const strict = r.bool(0.3);
    if (strict) it.initAfter(keys, s, 0);
    else it.init(keys, s, 0);
    const want = all.find((e) => (strict ? e.pos > sb : e.pos >= sb));
    const h = it.peek();
    if (!want) expect(h).toBe(-1);
    else {
      expect(h).toBe(want.h);
      keys.keyPosTo(h, p, 0);
      expect(posToBig(p)).toBe(want.pos);
    }
    /* previous key from a searched position */
    const idx = want ? all.indexOf(want) : all.length;
    const prev = it.peekPrev();
    expect(prev).toBe(idx > 0 ? all[idx - 1]!.h : -1);
    /* per-set lower bound against a linear walk */
    keys.prepareSearch(s, 0);
    for (let set = 0; set < keys.nsets; set++) {
      let k = keys.setStartOf(set);
      while (k < keys.setEndOf(set) && (strict ? keys.keyCmpPos(k, s, 0) <= 0 : keys.keyCmpPos(k, s, 0) < 0)) k = keys.keyNext(k);
      expect(keys.lowerBound(set, s, 0, strict)).toBe(k);
    }
  }
}

function checkBackward(keys: NodeKeys): void {
  const all = listAll(keys);
  const it = new NodeIter();
  it.initEnd(keys);
  expect(it.peek()).toBe(-1);
  const back: number[] = [];
  for (let h = it.peekPrev(); h >= 0; h = it.peekPrev()) {
    it.rewind();
    expect(it.peek()).toBe(h);
    back.push(h);
  }
  expect(back.reverse()).toEqual(all.map((e) => e.h));
  /* rewind then advance is the identity */
  if (all.length > 2) {
    it.initStart(keys);
    it.advance();
    it.advance();
    it.rewind();
    expect(it.peek()).toBe(all[1]!.h);
  }
}

function applyModel(model: Model, k: BkeyI): void {
  const b = posToBig(k.p);
  if (k.type === KEY_TYPES.deleted) model.delete(b);
  else model.set(b, { type: k.type, value: k.value.slice(), version: k.version, size: k.size });
}

beforeAll(() => {
  bsetDebug.checks = true;
});
afterAll(() => {
  bsetDebug.checks = false;
});

describe('NodeKeys#attachBuffers() / KeyBuffers', () => {
  it('checks the buffers once and attaches their views as they are; detach leaves nothing behind', () => {
    const nodeSize = 4096;
    expect(() => new KeyBuffers(new Uint8Array(2048), new Uint8Array(NodeKeys.auxBytes(nodeSize)), nodeSize)).toThrow(/node size/);
    expect(() => new KeyBuffers(new Uint8Array(nodeSize), new Uint8Array(64), nodeSize)).toThrow(/aux is 64 bytes/);
    expect(() => new KeyBuffers(new Uint8Array(nodeSize + 4).subarray(4), new Uint8Array(NodeKeys.auxBytes(nodeSize)), nodeSize)).toThrow(/aligned/);
    const bufs = new KeyBuffers(new Uint8Array(nodeSize), new Uint8Array(NodeKeys.auxBytes(nodeSize)), nodeSize);
    const a = new NodeKeys(nodeSize, 512);
    expect(() => new NodeKeys(8192, 512).attachBuffers(bufs)).toThrow(/node size/);
    a.attachBuffers(bufs);
    expect(a.data).toBe(bufs.data);
    expect(a.d32).toBe(bufs.d32);
    expect(a.aux32).toBe(bufs.aux32);
    expect(a.auxF64).toBe(bufs.auxF64);
    a.initEmpty({ btreeId: 1, level: 0, minKey: POS_MIN, maxKey: POS_MAX, seq: 7 });
    expect(a.insertKey(bkeyValue(posOf(1, 2), new Uint8Array([9]), 1))).toBe(true);
    /* the buffers move to another node (the cache's buffer move): same bytes, nothing copied */
    a.detach();
    expect(a.attached).toBe(false);
    expect(a.data.length + a.d32.length + a.aux32.length + a.auxF64.length).toBe(0);
    const b = new NodeKeys(nodeSize, 512);
    b.attachBuffers(bufs);
    expect(b.attached).toBe(true);
    expect(b.nsets).toBe(0);
    expect(b.data).toBe(bufs.data);
  });
});

describe('NodeKeys#insertKey()', () => {
  it('inserts, replaces and deletes in a fresh node', () => {
    const keys = fresh();
    const model: Model = new Map();
    const ops: BkeyI[] = [
      bkeyValue(posOf(1, 10), new Uint8Array([1, 2, 3]), 1),
      bkeyValue(posOf(1, 5), new Uint8Array([4]), 2),
      bkeyValue(posOf(1, 10), new Uint8Array(20).fill(9), 3),
      bkeyWhiteout(posOf(1, 5), 4),
      bkeyWhiteout(posOf(7, 7), 5),
    ];
    for (const k of ops) {
      expect(keys.insertKey(k)).toBe(true);
      applyModel(model, k);
      expectMatchesModel(keys, model);
    }
    /* nothing written: deletions remove, no whiteouts */
    expect(keys.nrWhiteouts).toBe(0);
    expect(keys.nrKeys).toBe(1);
    expect(keys.unwrittenJournalSeqMax).toBe(4);
  });

  it('keeps a whiteout only for keys in written sets', () => {
    const keys = fresh();
    for (let i = 0; i < 10; i++) keys.insertKey(bkeyValue(posOf(1, i), new Uint8Array([i]), 1));
    const w = nodeWritePrepare(keys)!;
    expect(w.offsetBytes).toBe(0);
    nodeWriteDone(keys);
    expect(keys.nsets).toBe(1);
    keys.insertKey(bkeyValue(posOf(1, 100), new Uint8Array([1]), 2));
    keys.insertKey(bkeyWhiteout(posOf(1, 100), 3)); // unwritten: just removed
    expect(keys.nrWhiteouts).toBe(0);
    keys.insertKey(bkeyWhiteout(posOf(1, 3), 4)); // written: whiteout
    expect(keys.nrWhiteouts).toBe(1);
    expect(keys.nrKeys).toBe(9);
    keys.insertKey(bkeyValue(posOf(1, 3), new Uint8Array([33]), 5)); // whiteout replaced by a value
    expect(keys.nrWhiteouts).toBe(0);
    expect(keys.nrKeys).toBe(10);
    keys.insertKey(bkeyWhiteout(posOf(1, 3), 6)); // and back
    keys.insertKey(bkeyWhiteout(posOf(1, 3), 7)); // deleting a whiteout again is a no-op on counts
    expect(keys.nrWhiteouts).toBe(1);
    expect(keys.nrKeys).toBe(9);
    const it = new NodeIter();
    it.init(keys, posOf(1, 3), 0);
    expect(keys.keyType(it.peek())).toBe(KEY_TYPES.deleted);
    it.advance();
    const p = new Uint32Array(5);
    keys.keyPosTo(it.peek(), p, 0);
    expect(posToBig(p)).toBe(posToBig(posOf(1, 4)));
  });

  it('returns false when full and leaves the node unchanged', () => {
    const keys = fresh(4096);
    let i = 0;
    for (; ; i++) {
      const before = keys.u64sRemaining();
      const k = bkeyValue(posOf(2, i), new Uint8Array(40), 1);
      const need = keys.keyU64sPacked(k);
      if (!keys.insertKey(k)) {
        expect(need).toBeGreaterThan(before);
        break;
      }
    }
    const snapshot = listAll(keys).map((e) => e.pos);
    expect(keys.insertKey(bkeyValue(posOf(2, 1_000_000), new Uint8Array(40), 1))).toBe(false);
    expect(listAll(keys).map((e) => e.pos)).toEqual(snapshot);
    expect(keys.nrKeys).toBe(i);
    keys.verify();
    /* a replacement of the same size still fits */
    expect(keys.insertKey(bkeyValue(posOf(2, 0), new Uint8Array(40).fill(1), 2))).toBe(true);
  });

  it('stores keys that do not fit the format unpacked', () => {
    const f = formatFromKeys([{ p: posOf(3, 0), size: 0, version: 1 }, { p: posOf(3, 100), size: 0, version: 1 }]);
    const keys = fresh(4096, { format: f });
    keys.insertKey(bkeyValue(posOf(3, 50), new Uint8Array([1]), 1));
    keys.insertKey(bkeyValue(posOf(3, 5000), new Uint8Array([2]), 1)); // offset beyond the format
    keys.insertKey(bkeyValue(posOf(3, 60), new Uint8Array([3]), 2 ** 40)); // version beyond
    keys.insertKey(bkeyExtent(posOf(3, 70), 8, new Uint8Array([4]), 1)); // size beyond (0 bits + padding)
    expect(keys.packedKeys + keys.unpackedKeys).toBe(4);
    expect(keys.unpackedKeys).toBeGreaterThanOrEqual(2);
    const it = new NodeIter();
    it.init(keys, posOf(3, 55), 0);
    const h = it.peek();
    expect(keys.keyVersion(h)).toBe(2 ** 40);
    expect(keys.keyIsPacked(h)).toBe(false);
    expect(keys.keyU64sPacked(bkeyValue(posOf(3, 1), new Uint8Array(0), 1))).toBeLessThan(keys.keyU64sPacked(bkeyValue(posOf(4, 1), new Uint8Array(0), 1)));
  });

  it('gives zero-copy value views', () => {
    const keys = fresh();
    keys.insertKey(bkeyValue(posOf(1, 1), new Uint8Array([5, 6, 7]), 1));
    const it = new NodeIter();
    it.initStart(keys);
    const v = keys.keyValue(it.peek());
    expect(v.buffer).toBe(keys.data.buffer);
    expect(Array.from(v)).toEqual([5, 6, 7]);
    expect(keys.keyUnpack(it.peek()).value.buffer).not.toBe(keys.data.buffer);
  });

  it('contentGen moves with every change of the keys, even a deletion that leaves no whiteout (ChildIndex relies on it)', () => {
    const keys = fresh(4096, { level: 1 });
    const ptr = { bucket: 77, seq: 12345, level: 0, minKey: posOf(0, 0) };
    let gen = keys.contentGen;
    const moved = (): boolean => {
      const g = keys.contentGen;
      const m = g !== gen;
      gen = g;
      return m;
    };
    keys.insertKey(bkeyBtreePtr(posOf(9, 9), ptr, 2));
    expect(moved()).toBe(true);
    keys.insertKey(bkeyBtreePtr(posOf(19, 9), ptr, 2));
    expect(moved()).toBe(true);
    // the pointer at 9:9 is unwritten: deleting it removes it, no whiteout written
    const before = keys.nrWhiteouts;
    keys.insertKey(bkeyWhiteout(posOf(9, 9), 3));
    expect(keys.nrWhiteouts).toBe(before);
    expect(moved()).toBe(true);
    // the same for a run of keys (insertKeys)
    keys.insertKeys([4, 5, 6, 7, 8].map((i) => bkeyBtreePtr(posOf(20 + i, 0), ptr, 4)));
    expect(moved()).toBe(true);
    keys.insertKeys([4, 5, 6, 7, 8].map((i) => bkeyWhiteout(posOf(20 + i, 0), 5)));
    expect(moved()).toBe(true);
    // searching does not move it
    keys.findExact(posOf(19, 9));
    expect(moved()).toBe(false);
  });

  it('decodes btree pointers in place', () => {
    const keys = fresh(4096, { level: 1 });
    const ptr = { bucket: 77, seq: 2 ** 52 - 5, level: 0, minKey: posOf(3, 4, 5) };
    keys.insertKey(bkeyBtreePtr(posOf(9, 9), ptr, 2));
    const it = new NodeIter();
    it.init(keys, posOf(5, 0), 0);
    const h = it.peek();
    expect(keys.keyType(h)).toBe(KEY_TYPES.btree_ptr);
    const out = { bucket: 0, seq: 0, level: 9, minKey: new Uint32Array(5), maxKey: new Uint32Array(5), btreeId: 0 };
    expect(keys.keyBtreePtr(h, out)).toBe(out);
    expect(out).toMatchObject({ bucket: 77, seq: ptr.seq, level: 0 });
    expect(Array.from(out.minKey)).toEqual(Array.from(ptr.minKey));
    expect(keys.keyBtreePtrSeq(h)).toBe(ptr.seq);
    expect(keys.keyValueStart(h) + keys.keyValueBytes(h)).toBeLessThanOrEqual(keys.keyNext(h));
  });

  it('rejects keys outside the node range', () => {
    const keys = fresh(4096, { min: posOf(5, 0), max: posOf(6, 0) });
    expect(() => keys.insertKey(bkeyValue(posOf(4, 9), new Uint8Array(0)))).toThrow(/outside/);
    expect(() => keys.insertKey(bkeyValue(posOf(6, 1), new Uint8Array(0)))).toThrow(/outside/);
  });
});

describe('NodeKeys: the read-only filter for puts', () => {
  /** A 64 KiB node whose written set holds keys 0, 2, 4, ... of inode 5 (and a writable set on top). */
  function written(n: number, extra?: BkeyI): NodeKeys {
    const keys = fresh(65536);
    for (let i = 0; i < n; i++) expect(keys.insertKey(bkeyValue(posOf(5, 2 * i), new Uint8Array([i & 255]), 1))).toBe(true);
    if (extra) expect(keys.insertKey(extra)).toBe(true);
    nodeWritePrepare(keys);
    nodeWriteDone(keys);
    return keys;
  }

  it('puts of fresh keys skip the read-only search once the node took enough of them; overwrites, deletions and the counts stay exact', () => {
    const keys = written(600);
    const model: Model = new Map();
    for (let i = 0; i < 600; i++) model.set(posToBig(posOf(5, 2 * i)), { type: KEY_TYPES.value, value: new Uint8Array([i & 255]), version: 1, size: 0 });
    const c0 = { ...roFilterCounters };
    const r = new Prng(91);
    // fresh keys (odd offsets), overwrites of written ones (even), and deletions, in runs as a commit inserts them
    for (let round = 0; round < 30; round++) {
      const run = new Map<bigint, BkeyI>();
      for (let j = 0; j < 12; j++) {
        const off = r.int(1200);
        const k = off % 2 === 1 || r.bool(0.6) ? bkeyValue(posOf(5, off), new Uint8Array([round]), 2 + round) : bkeyWhiteout(posOf(5, off), 2 + round);
        run.set(posToBig(k.p), k);
      }
      const sorted = [...run.values()].sort((a, b) => (posToBig(a.p) < posToBig(b.p) ? -1 : 1));
      if (round % 2) expect(keys.insertKeys(sorted)).toBe(true);
      else for (const k of sorted) expect(keys.insertKey(k)).toBe(true);
      for (const k of sorted) applyModel(model, k);
      // verify() (bsetDebug.checks) recounts every key: an overwrite the filter wrongly skipped would count twice
      expectMatchesModel(keys, model);
    }
    expect(roFilterCounters.builds - c0.builds).toBe(1);
    expect(keys.toText()).toMatch(/put filter: +\d+ bytes over the read-only sets/);
    expect(roFilterCounters.skips - c0.skips).toBeGreaterThan(80);
    // the overwrites all went through (2 bits per key of 8: a few fresh keys go through too)
    expect(roFilterCounters.passes - c0.passes).toBeGreaterThan(30);
    // a write seals the writable set (the keys just put, overwrites among
    // them) into a new read-only set: the filter takes its keys and stays
    nodeWritePrepare(keys);
    nodeWriteDone(keys);
    const c1 = { ...roFilterCounters };
    expect(c1.carried - c0.carried).toBeGreaterThanOrEqual(1);
    // overwrites of keys that only the sealed set holds: the filter must let every one through
    const sealedOnly: bigint[] = [];
    for (let off = 1; off < 1200 && sealedOnly.length < 10; off += 2) if (model.has(posToBig(posOf(5, off)))) sealedOnly.push(posToBig(posOf(5, off)));
    expect(sealedOnly.length).toBeGreaterThan(3);
    for (const big of sealedOnly) {
      const k = bkeyValue(bigToPos(big), new Uint8Array([77]), 60);
      expect(keys.insertKey(k)).toBe(true);
      applyModel(model, k);
    }
    expectMatchesModel(keys, model);
    expect(roFilterCounters.passes - c1.passes).toBeGreaterThanOrEqual(sealedOnly.length);
    // fresh keys are still answered by the filter, with no rebuild
    for (let i = 0; i < 20; i++) {
      const k = bkeyValue(posOf(5, 5001 + 2 * i), new Uint8Array([1]), 61);
      expect(keys.insertKey(k)).toBe(true);
      applyModel(model, k);
    }
    expect(roFilterCounters.builds).toBe(c1.builds);
    expect(roFilterCounters.skips - c1.skips).toBeGreaterThan(10);
    expectMatchesModel(keys, model);
    keys.verify();
  });

  it('the filter is carried through writes until its keys double, then built again', () => {
    const keys = written(300);
    const c0 = { ...roFilterCounters };
    let next = 1;
    const putFresh = (n: number): void => {
      for (let i = 0; i < n; i++, next += 2) expect(keys.insertKey(bkeyValue(posOf(5, next), new Uint8Array([1]), 2))).toBe(true);
    };
    putFresh(RO_FILTER_AFTER + 1);
    expect(roFilterCounters.builds - c0.builds).toBe(1);
    const built = keys.toText().match(/put filter: +(\d+) bytes/)![1];
    // writes of a few hundred keys each: carried while the keys fit twice the size it was built for
    let carried = 0;
    for (let w = 0; w < 12 && roFilterCounters.builds - c0.builds === 1; w++) {
      const before = roFilterCounters.carried;
      nodeWritePrepare(keys);
      nodeWriteDone(keys);
      carried += roFilterCounters.carried - before;
      putFresh(RO_FILTER_AFTER + 40);
    }
    expect(carried).toBeGreaterThan(0);
    // it was built again, larger, for the grown sets
    expect(roFilterCounters.builds - c0.builds).toBe(2);
    expect(Number(keys.toText().match(/put filter: +(\d+) bytes/)![1])).toBeGreaterThan(Number(built));
    keys.verify();
  });

  it('a read-only set holding an unpacked key is not filtered (that key could be at a position the format holds)', () => {
    // a version beyond the format keeps the key unpacked, at a position the format packs
    const f = formatFromKeys([{ p: posOf(5, 0), size: 0, version: 1 }, { p: posOf(5, 100_000), size: 0, version: 1 }]);
    const keys = fresh(65536, { format: f });
    for (let i = 0; i < 400; i++) keys.insertKey(bkeyValue(posOf(5, 2 * i), new Uint8Array([1]), 1));
    keys.insertKey(bkeyValue(posOf(5, 7777), new Uint8Array([9]), 2 ** 40));
    expect(keys.unpackedKeys).toBe(1);
    nodeWritePrepare(keys);
    nodeWriteDone(keys);
    const c0 = { ...roFilterCounters };
    for (let i = 0; i < RO_FILTER_AFTER + 20; i++) keys.insertKey(bkeyValue(posOf(5, 1001 + 2 * i), new Uint8Array([2]), 3));
    expect(roFilterCounters.unfilterable - c0.unfilterable).toBe(1);
    expect(keys.toText()).toContain('none (an unpacked read-only key)');
    expect(roFilterCounters.builds).toBe(c0.builds);
    expect(roFilterCounters.skips).toBe(c0.skips);
    // the unpacked key is found and replaced by a put at its position
    const before = keys.nrKeys;
    keys.insertKey(bkeyValue(posOf(5, 7777), new Uint8Array([10]), 4));
    expect(keys.nrKeys).toBe(before);
    keys.verify();
  });
});

describe('NodeIter', () => {
  it('merges three sets, newest winning on equal positions', () => {
    const keys = fresh(16384);
    for (let i = 0; i < 30; i++) keys.insertKey(bkeyValue(posOf(1, i * 3), new Uint8Array([0]), 1));
    nodeWritePrepare(keys);
    nodeWriteDone(keys); // set 0 written
    for (let i = 0; i < 30; i += 2) keys.insertKey(bkeyValue(posOf(1, i * 3), new Uint8Array([1]), 2));
    for (let i = 1; i < 30; i += 4) keys.insertKey(bkeyWhiteout(posOf(1, i * 3), 2));
    nodeWritePrepare(keys); // set 1 sealed, write in flight
    for (let i = 0; i < 30; i += 3) keys.insertKey(bkeyValue(posOf(1, i * 3), new Uint8Array([2]), 3));
    for (let i = 0; i < 90; i += 7) keys.insertKey(bkeyValue(posOf(1, i * 3 + 1), new Uint8Array([2]), 3));
    expect(keys.nsets).toBe(3);
    const model: Model = new Map();
    for (let i = 0; i < 30; i++) model.set(posToBig(posOf(1, i * 3)), { type: 1, value: new Uint8Array([i % 3 === 0 ? 2 : i % 2 === 0 ? 1 : 0]), version: i % 3 === 0 ? 3 : i % 2 === 0 ? 2 : 1, size: 0 });
    for (let i = 1; i < 30; i += 4) if (i % 3 !== 0) model.delete(posToBig(posOf(1, i * 3)));
    for (let i = 0; i < 90; i += 7) model.set(posToBig(posOf(1, i * 3 + 1)), { type: 1, value: new Uint8Array([2]), version: 3, size: 0 });
    expectMatchesModel(keys, model);
    const r = new Prng(3);
    checkSearches(keys, r, [...model.keys()].map(bigToPos), 200);
    checkBackward(keys);
    nodeWriteDone(keys);
    expect(keys.nsets).toBe(2);
    expectMatchesModel(keys, model);
    checkBackward(keys);
  });

  it('aux search equals a linear search for random contents', () => {
    /* both kinds of summary (BkeyFormat.sumExact) must be covered: exact (narrow formats) and word compares on ties (wide ones) */
    const seen = { exact: 0, inexact: 0, windowed: 0, windowExact: 0 };
    property('aux-search', 80, (r) => {
      const nodeSize = r.pick([4096, 16384, 65536]);
      /*
       * a third of the time positions clustered in a few inodes and a 40-bit
       * offset range: formats of <= 53 position bits; a fifth of the time a
       * run of nearby offsets in one inode (sequential keys): in the wide
       * format of a range reaching POS_MAX their sets search with windows
       */
      const clustered = r.bool(0.33);
      const run = !clustered && r.bool(0.3);
      const base = r.int(2 ** 30) * 2 ** 20;
      const spread = 2 ** r.range(0, 40);
      const pool = Array.from({ length: r.range(10, 400) }, () =>
        clustered ? posOf(r.int(4), r.int(2 ** 20) * 2 ** 20 + r.int(2 ** 20), r.int(3)) : run ? posOf(7, base + r.int(spread), r.int(2)) : randPos(r),
      );
      /* half the time a narrow format from some of the positions: unpacked keys, lossy searches */
      const narrow = r.bool(0.5) ? formatFromKeys(pool.slice(0, r.range(1, pool.length)).map((p) => ({ p, size: 0, version: 1 }))) : undefined;
      const keys = fresh(nodeSize, { format: narrow });
      seen[keys.format.sumExact ? 'exact' : 'inexact']++;
      const model: Model = new Map();
      let version = 1;
      const phases = r.range(1, 3);
      for (let ph = 0; ph < phases; ph++) {
        for (let i = 0, n = r.int(300); i < n; i++) {
          const p = pool[r.int(pool.length)]!;
          const k = r.bool(0.75) ? bkeyValue(p, r.bytes(r.int(24)), version++) : bkeyWhiteout(p, version++);
          if (keys.keyU64sPacked(k) + 8 > keys.u64sRemaining()) break;
          expect(keys.insertKey(k)).toBe(true);
          applyModel(model, k);
        }
        if (ph < phases - 1) {
          const w = nodeWritePrepare(keys);
          if (w && (ph === 0 || r.bool(0.5))) nodeWriteDone(keys);
        }
      }
      expectMatchesModel(keys, model);
      for (let set = 0; set < keys.nsets; set++) {
        if (!keys.setWindowed(set)) continue;
        seen.windowed++;
        if (/exact\)/.test(keys.toText())) seen.windowExact++;
      }
      checkSearches(keys, r, pool, 60);
      checkBackward(keys);
    });
    expect(seen.exact).toBeGreaterThan(5);
    expect(seen.inexact).toBeGreaterThan(5);
    expect(seen.windowed).toBeGreaterThan(5);
    expect(seen.windowExact).toBeGreaterThan(2);
  });
});

describe('NodeKeys model test', () => {
  it('random inserts, overwrites, deletions, writes and rewrites match a sorted model', () => {
    property('model', 12, (r) => {
      const nodeSize = r.pick([4096, 16384, 65536]);
      const narrow = r.bool(0.5);
      const lo = narrow ? posOf(7, 0) : POS_MIN;
      const hi = narrow ? posOf(7, 1_000_000) : POS_MAX;
      let keys = fresh(nodeSize, { min: lo, max: hi });
      const pool = Array.from({ length: r.range(20, 500) }, () => (narrow ? posOf(7, r.int(1_000_001), 0) : randPos(r)));
      const model: Model = new Map();
      let disk = new Uint8Array(nodeSize);
      let durable: Model = new Map();
      let sealed: Model | null = null;
      let version = 1;
      let rewrites = 0;
      for (let op = 0; op < 1500; op++) {
        const x = r.int(100);
        if (x < 60) {
          const p = pool[r.int(pool.length)]!;
          const k = r.bool(0.2) ? bkeyExtent(p, r.int(1000), r.bytes(r.int(40)), version++) : bkeyValue(p, r.bytes(r.int(r.bool(0.1) ? 200 : 30)), version++);
          if (!keys.insertKey(k)) {
            /* full: finish any write, rewrite into a fresh node (sortInto) and retry */
            if (keys.writeInFlight) {
              nodeWriteDone(keys);
              durable = sealed!;
            }
            const w = nodeWritePrepare(keys);
            if (w) {
              disk.set(w.bytes, w.offsetBytes);
              nodeWriteDone(keys);
            }
            const fkeys = [...model.entries()].map(([p, m]) => ({ p: bigToPos(p), size: m.size, version: m.version }));
            fkeys.push({ p: k.p, size: k.size, version: k.version });
            const n2 = fresh(nodeSize, { min: lo, max: hi, format: formatFromKeys(fkeys) });
            expect(keys.sortInto(n2)).toBe(model.size);
            expect(n2.unpackedKeys).toBe(0);
            keys = n2;
            disk = new Uint8Array(nodeSize);
            durable = new Map();
            sealed = null;
            rewrites++;
            if (!keys.insertKey(k)) continue; // live keys fill the node: the caller would split
          }
          applyModel(model, k);
        } else if (x < 85) {
          const p = pool[r.int(pool.length)]!;
          const k = bkeyWhiteout(p, version++);
          if (!keys.insertKey(k)) continue; // no room for the whiteout: skip (model unchanged)
          applyModel(model, k);
        } else if (x < 92) {
          if (keys.writeInFlight) {
            nodeWriteDone(keys);
            durable = sealed!;
            sealed = null;
          } else {
            const w = nodeWritePrepare(keys);
            if (w) {
              expect(w.offsetBytes % 512).toBe(0);
              expect(w.bytes.length % 512).toBe(0);
              disk.set(w.bytes, w.offsetBytes);
              sealed = new Map(model);
            }
          }
        } else if (x < 94) {
          if (!keys.writeInFlight) {
            /* read the bucket back: must equal the model as of the last completed write */
            const k2 = mk(nodeSize);
            k2.data.set(disk);
            if (keys.writtenBytes > 0) {
              const res = nodeReadValidate(k2, { btreeId: 1, level: 0, minKey: lo, maxKey: hi, seq: keys.seq });
              expect(res.ok).toBe(true);
              expectMatchesModel(k2, durable);
              expect(k2.writtenBytes).toBe(keys.writtenBytes);
            }
          }
        } else if (x < 96) {
          checkSearches(keys, r, pool, 20);
        } else if (x < 97) {
          checkBackward(keys);
        } else {
          expectMatchesModel(keys, model);
        }
      }
      expectMatchesModel(keys, model);
      expect(keys.nrKeys).toBe(sortedModelKeys(model).length);
      expect(rewrites).toBeGreaterThanOrEqual(0);
    });
  });
});

describe('NodeKeys#compact() / sortInto() / liveKeysMedian()', () => {
  function filled(r: Prng, nodeSize = 65536): { keys: NodeKeys; model: Model } {
    const keys = fresh(nodeSize);
    const model: Model = new Map();
    let v = 1;
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 300; i++) {
        const k = r.bool(0.8) ? bkeyValue(posOf(r.int(4), r.int(2000)), r.bytes(r.int(20)), v++) : bkeyWhiteout(posOf(r.int(4), r.int(2000)), v++);
        if (keys.insertKey(k)) applyModel(model, k);
      }
      nodeWritePrepare(keys);
      nodeWriteDone(keys);
    }
    return { keys, model };
  }

  it('compaction preserves the live content and drops whiteouts', () => {
    property('compact', 10, (r) => {
      const { keys, model } = filled(r);
      for (let i = 0; i < 50; i++) {
        const k = bkeyWhiteout(posOf(r.int(4), r.int(2000)), 10_000 + i);
        keys.insertKey(k);
        applyModel(model, k);
      }
      expect(() => keys.compact()).toThrow(/unwritten/);
      nodeWritePrepare(keys);
      expect(() => keys.compact()).toThrow(/in flight/);
      nodeWriteDone(keys);
      keys.compact();
      expect(keys.nsets).toBe(1);
      expect(keys.nrWhiteouts).toBe(0);
      expectMatchesModel(keys, model);
      checkBackward(keys);
    });
  });

  it('sortInto copies a range, repacking when formats differ', () => {
    property('sortInto', 10, (r) => {
      const { keys, model } = filled(r);
      const all = sortedModelKeys(model);
      const a = all[r.int(all.length)]!, b = all[r.int(all.length)]!;
      const [from, to] = a < b ? [a, b] : [b, a];
      for (const fmt of ['same', 'range', 'keys'] as const) {
        const sub = new Map([...model].filter(([p]) => p >= from && p <= to));
        const f = fmt === 'same' ? keys.format : fmt === 'range' ? formatFromRange(bigToPos(from), bigToPos(to)) : formatFromKeys([...sub.entries()].map(([p, m]) => ({ p: bigToPos(p), size: m.size, version: m.version })));
        const dst = fresh(65536, { min: bigToPos(from), max: bigToPos(to), format: f });
        expect(keys.sortInto(dst, bigToPos(from), bigToPos(to))).toBe(sub.size);
        expectMatchesModel(dst, sub);
        if (fmt === 'keys') expect(dst.unpackedKeys).toBe(0);
        expect(dst.unwrittenJournalSeqMax).toBe(Math.max(0, ...[...sub.values()].map((m) => m.version)));
      }
      const tiny = fresh(4096);
      if (keys.liveU64s * 8 > 4096) expect(keys.sortInto(tiny)).toBe(-1);
    });
  });

  it('sortInto and NodeIter#limitTo stop at a range end in every set (written, in flight, writable, whiteouts)', () => {
    property('sortInto sets', 10, (r) => {
      const { keys, model } = filled(r);
      let v = 20_000;
      /* a set in flight and a writable set over it, both with whiteouts */
      for (const seal of [true, false]) {
        for (let i = 0; i < 150; i++) {
          const k = r.bool(0.7) ? bkeyValue(posOf(r.int(4), r.int(2000)), r.bytes(r.int(20)), v++) : bkeyWhiteout(posOf(r.int(4), r.int(2000)), v++);
          if (keys.insertKey(k)) applyModel(model, k);
        }
        if (seal) nodeWritePrepare(keys);
      }
      expect(keys.nsets).toBe(3);
      for (let j = 0; j < 8; j++) {
        /* ends anywhere: at keys, between them, reversed (nothing) */
        const from = posOf(r.int(4), r.int(2000)), to = posOf(r.int(4), r.int(2000), r.int(2));
        const lo = posToBig(from), hi = posToBig(to);
        const sub = new Map([...model].filter(([p]) => p >= lo && p <= hi));
        const dst = fresh(65536, { min: lo <= hi ? from : to, max: lo <= hi ? to : from, format: keys.format });
        expect(keys.sortInto(dst, from, to)).toBe(sub.size);
        expectMatchesModel(dst, sub);
        /* buildFromRange (the same format's merge of spans) builds the same node, byte for byte */
        const dst2 = fresh(65536, { min: lo <= hi ? from : to, max: lo <= hi ? to : from, format: keys.format });
        expect(dst2.buildFromRange(keys, from, to)).toBe(sub.size);
        expectMatchesModel(dst2, sub);
        expect(dst2.toText()).toBe(dst.toText());
        expect(dst2.usedBytes()).toBe(dst.usedBytes());
        expect(Buffer.from(dst2.data.subarray(0, dst2.usedBytes())).equals(Buffer.from(dst.data.subarray(0, dst.usedBytes())))).toBe(true);
        /* into a node too small: -1, nothing in it */
        if (sub.size > 200) {
          const small = fresh(4096, { min: lo <= hi ? from : to, max: lo <= hi ? to : from, format: keys.format });
          expect(small.buildFromRange(keys, from, to)).toBe(-1);
          expect(small.nrKeys).toBe(0);
          small.verify();
        }
        /* limitTo returns what a walk comparing every key with the end returns */
        const it = new NodeIter();
        it.init(keys, from, 0);
        it.limitTo(to, 0);
        const ref = new NodeIter();
        ref.init(keys, from, 0);
        for (let h = ref.peek(); h >= 0 && keys.keyCmpPos(h, to, 0) <= 0; ref.advance(), h = ref.peek()) {
          expect(it.peek()).toBe(h);
          it.advance();
        }
        expect(it.peek()).toBe(-1);
      }
      nodeWriteDone(keys);
    });
  });

  it('computeFormat packs every live key of a range', () => {
    property('computeFormat', 6, (r) => {
      const { keys, model } = filled(r);
      const all = sortedModelKeys(model);
      const a = all[r.int(all.length)]!, b = all[r.int(all.length)]!;
      const [from, to] = a < b ? [a, b] : [b, a];
      const f = keys.computeFormat(bigToPos(from), bigToPos(to), { versionMax: 1_000_000 });
      const dst = fresh(65536, { min: bigToPos(from), max: bigToPos(to), format: f });
      const n = keys.sortInto(dst, bigToPos(from), bigToPos(to));
      expect(dst.unpackedKeys).toBe(0);
      expect(dst.packedKeys).toBe(n);
      /* a later key with a journal seq up to versionMax still packs */
      if (n > 0) {
        const p = bigToPos(from);
        expect(dst.keyU64sPacked(bkeyValue(p, new Uint8Array(0), 1_000_000))).toBeLessThan(5);
      }
    });
  });

  it('liveKeysMedian splits the live u64s in two halves', () => {
    property('median', 10, (r) => {
      const { keys, model } = filled(r);
      const m = new Uint32Array(5);
      expect(keys.liveKeysMedian(m)).toBe(true);
      const pivot = posToBig(m);
      expect(model.has(pivot)).toBe(true);
      const left = fresh(65536);
      const right = fresh(65536);
      keys.sortInto(left, POS_MIN, m);
      const succ = bigToPos(pivot + 1n);
      keys.sortInto(right, succ, POS_MAX);
      expect(left.nrKeys + right.nrKeys).toBe(model.size);
      expect(Math.abs(left.liveU64s - right.liveU64s)).toBeLessThanOrEqual(2 * 40);
    });
    expect(fresh().liveKeysMedian(new Uint32Array(5))).toBe(false);
  });
});

describe('NodeKeys#toText()', () => {
  it('prints header fields, counts and sets', () => {
    const keys = fresh(4096, { min: posOf(1, 0), max: posOf(1, 1000) });
    keys.insertKey(bkeyValue(posOf(1, 1), new Uint8Array([1]), 1));
    const t = keys.toText();
    expect(t).toContain('level:');
    expect(t).toContain('1 live (1 packed, 0 unpacked)');
    expect(t).toContain('writable');
    const it = new NodeIter();
    it.initStart(keys);
    expect(keys.keyToText(it.peek())).toBe('value 1:1:0 ver 1 u64s 3 packed len 1');
  });
});
