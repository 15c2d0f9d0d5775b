// SPDX-License-Identifier: GPL-2.0-only
/*
 * NodeKeys#insertKeys(): a sorted run of keys inserted at once must leave the
 * node exactly as insertKey() on each key in turn: same bytes in every set,
 * same counts and journal seqs, same iteration order, same searches; with
 * overwrites and deletions of keys in the writable set and in written sets
 * (whiteouts), one position twice in a run (journal replay), extents, keys too wide for the format (unpacked), nodes with a
 * write in flight (three sets), and runs that do not fit (node unchanged).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BkeyI, KEY_TYPES, bkeyExtent, bkeyValue, bkeyWhiteout, keyTypeName } from '../../src/btree/bkey.js';
import { INSERT_KEYS_MERGE_MIN, NodeIter, NodeKeys, bsetDebug } from '../../src/btree/bset.js';
import { nodeWriteDone, nodeWritePrepare } from '../../src/btree/node-io.js';
import { formatFromRange } from '../../src/format/bkey-format.js';
import { posOf, property } from '../format/prng.js';

const POS_MAX = new Uint32Array(5).fill(0xffffffff);

function twin(nodeSize: number, versionMax: number): [NodeKeys, NodeKeys] {
  const min = posOf(3, 0);
  const max = posOf(3, 1n << 40n);
  const format = formatFromRange(min, max, { versionMax, sizeMax: 1 << 12 });
  const make = () => {
    const k = new NodeKeys(nodeSize, 512);
    k.attach(new Uint8Array(nodeSize), new Uint8Array(NodeKeys.auxBytes(nodeSize)));
    k.initEmpty({ btreeId: 1, level: 0, minKey: min, maxKey: max, seq: 0x1234567, format });
    return k;
  };
  return [make(), make()];
}

/** Everything the iterator returns (whiteouts included), as text. */
function listAll(keys: NodeKeys): string[] {
  const it = new NodeIter();
  it.initStart(keys);
  const out: string[] = [];
  for (let h = it.peek(); h >= 0; it.advance(), h = it.peek()) out.push(keys.keyToText(h));
  return out;
}

/** The largest size of a key the iterator returns. */
function visibleSizeMax(keys: NodeKeys): number {
  const it = new NodeIter();
  it.initStart(keys);
  let m = 0;
  for (let h = it.peek(); h >= 0; it.advance(), h = it.peek()) m = Math.max(m, keys.keySize(h));
  return m;
}

/** The node's observable state: sets (bytes), counts, seqs, iteration. */
function state(k: NodeKeys): unknown {
  // keys only: a writable set's header slot holds whatever was there until the set is sealed
  const sets: string[] = [];
  for (let s = 0; s < k.nsets; s++) sets.push(Buffer.from(k.data.subarray(k.setStartOf(s), k.setEndOf(s))).toString('hex'));
  return {
    sets,
    counts: [k.nrKeys, k.liveU64s, k.packedKeys, k.unpackedKeys, k.nrWhiteouts],
    seqs: [k.unwrittenJournalSeqMin, k.unwrittenJournalSeqMax],
    modSeq: k.modSeq,
    remaining: k.u64sRemaining(),
    all: listAll(k),
  };
}

function expectSameSearches(a: NodeKeys, b: NodeKeys, probes: Uint32Array[]): void {
  const ia = new NodeIter();
  const ib = new NodeIter();
  for (const p of probes) {
    ia.init(a, p, 0);
    ib.init(b, p, 0);
    const ha = ia.peek();
    const hb = ib.peek();
    expect(ha < 0 ? null : a.keyToText(ha)).toBe(hb < 0 ? null : b.keyToText(hb));
    expect(a.findExact(p) < 0).toBe(b.findExact(p) < 0);
  }
}

describe('NodeKeys#insertKeys()', () => {
  let saved: boolean;
  beforeAll(() => {
    saved = bsetDebug.checks;
    bsetDebug.checks = true;
  });
  afterAll(() => {
    bsetDebug.checks = saved;
  });

  it('leaves the node as insertKey() on each key would, through writes, overwrites and deletions', () => {
    property('insertKeys = insertKey each', 60, (r) => {
      const extents = r.bool(0.3);
      const nodeSize = r.pick([4096, 16384, 65536]);
      // small versionMax: later keys do not fit the format and go in unpacked
      const [a, b] = twin(nodeSize, r.pick([40, 1 << 20]));
      const used: bigint[] = [];
      let version = 1;
      for (let round = 0; round < 40; round++) {
        // a sorted run: fresh positions, positions used before (overwrites), deletions
        const n = r.pick([1, 2, INSERT_KEYS_MERGE_MIN, INSERT_KEYS_MERGE_MIN + 3, 40, 120]);
        const chosen = new Set<bigint>();
        for (let i = 0; i < n; i++) {
          const reuse = used.length > 0 && r.bool(0.4);
          chosen.add(reuse ? used[r.int(used.length)]! : BigInt(1 + r.int(1 << 20)));
        }
        const offs = [...chosen].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
        version += r.int(3);
        const run: BkeyI[] = offs.map((o) => {
          const p = posOf(3, o);
          if (r.bool(0.25)) return bkeyWhiteout(p, version);
          const value = new Uint8Array(r.int(40)).map(() => r.int(256));
          // extents: mostly short, now and then long (keySizeMax must follow)
          const size = r.bool(0.1) ? Math.max(1, Number(o % 3000n)) : 1 + Number(o % 7n);
          return extents ? bkeyExtent(p, Math.min(size, Number(o)), value, version) : bkeyValue(p, value, version);
        });
        // journal replay: one position from several entries, in entry order
        if (run.length > 1 && r.bool(0.2)) {
          const i = r.int(run.length);
          const p = run[i]!.p;
          run.splice(i + 1, 0, r.bool(0.5) ? bkeyWhiteout(p, version) : bkeyValue(p, new Uint8Array(r.int(40)), version));
        }
        for (const o of offs) used.push(o);
        // kept from here on: verify() (bsetDebug.checks, after every insert) fails if a write of keys leaves it stale
        a.keySizeMax();
        b.keySizeMax();
        const before = state(a);
        const ok = a.insertKeys(run);
        if (!ok) {
          // does not fit: nothing changed; the node is written and the run goes in after
          expect(state(a)).toEqual(before);
        } else {
          for (const k of run) expect(b.insertKey(k)).toBe(true);
          expect(state(a)).toEqual(state(b));
        }
        if (!ok || r.bool(0.15)) {
          // a write: seal the writable set, sometimes leave it in flight (three sets) for a while
          if (a.writeInFlight) for (const k of [a, b]) nodeWriteDone(k);
          const wa = nodeWritePrepare(a);
          const wb = nodeWritePrepare(b);
          expect(wa === null).toBe(wb === null);
          if (wa && (r.bool(0.7) || !ok)) for (const k of [a, b]) nodeWriteDone(k);
          expect(state(a)).toEqual(state(b));
          if (!ok && a.insertKeys(run)) for (const k of run) expect(b.insertKey(k)).toBe(true);
        } else if (a.writeInFlight && r.bool(0.5)) {
          for (const k of [a, b]) nodeWriteDone(k);
        }
        expect(state(a)).toEqual(state(b));
        expect(a.keySizeMax()).toBeGreaterThanOrEqual(visibleSizeMax(a));
        if (a.u64sRemaining() < 64 && !a.writeInFlight) return;
      }
      const probes = Array.from({ length: 50 }, () => (used.length && r.bool(0.7) ? posOf(3, used[r.int(used.length)]!) : posOf(3, r.int(1 << 20))));
      expectSameSearches(a, b, probes);
    });
  });

  it('deleting keys only written sets hold leaves whiteouts; deleting unwritten ones removes them', () => {
    const [a, b] = twin(16384, 1 << 20);
    const put = (o: number, v: number) => bkeyValue(posOf(3, o), new Uint8Array([o & 0xff, v]), v);
    const first = Array.from({ length: 20 }, (_, i) => put(10 * i + 10, 1));
    expect(a.insertKeys(first)).toBe(true);
    for (const k of first) b.insertKey(k);
    for (const k of [a, b]) {
      nodeWritePrepare(k);
      nodeWriteDone(k);
    }
    // unwritten keys at new positions, then a run deleting written, unwritten and absent keys
    const second = Array.from({ length: 10 }, (_, i) => put(10 * i + 15, 2));
    expect(a.insertKeys(second)).toBe(true);
    for (const k of second) b.insertKey(k);
    const dels = [10, 15, 20, 25, 27, 30, 999].map((o) => bkeyWhiteout(posOf(3, o), 3));
    expect(a.insertKeys(dels)).toBe(true);
    for (const k of dels) b.insertKey(k);
    expect(state(a)).toEqual(state(b));
    expect(a.nrWhiteouts, 'whiteouts for the written keys at 10, 20, 30 only').toBe(3);
    expect(a.nrKeys, "10, 20, 30 and 15, 25 gone; 27 and 999 were never there").toBe(20 + 10 - 5);
    const live = listAll(a).filter((t) => !t.startsWith(`${keyTypeName(KEY_TYPES.deleted)} `));
    expect(live.length).toBe(a.nrKeys);
  });

  it('keySizeMax follows the longest extent through runs, single inserts and writes', () => {
    const [a] = twin(16384, 1 << 20);
    const ext = (o: number, size: number) => bkeyExtent(posOf(3, o), size, new Uint8Array([o & 0xff]), 1);
    expect(a.keySizeMax()).toBe(0);
    expect(a.insertKeys([10, 20, 30, 40, 50].map((o) => ext(o, 4)))).toBe(true);
    expect(a.keySizeMax()).toBe(4);
    expect(a.insertKeys([110, 120, 230, 240, 250].map((o) => ext(o, o === 230 ? 100 : 4)))).toBe(true);
    expect(a.keySizeMax()).toBe(100);
    nodeWritePrepare(a);
    nodeWriteDone(a);
    expect(a.keySizeMax()).toBe(100);
    expect(a.insertKey(ext(2000, 1500))).toBe(true);
    expect(a.keySizeMax()).toBe(1500);
  });

  it('a run that does not fit returns false and changes nothing', () => {
    const [a] = twin(4096, 1 << 20);
    const big = Array.from({ length: 200 }, (_, i) => bkeyValue(posOf(3, i + 1), new Uint8Array(32), 1));
    const before = state(a);
    expect(a.insertKeys(big)).toBe(false);
    expect(state(a)).toEqual(before);
  });

  it('rejects keys outside the node range', () => {
    const [a] = twin(4096, 1 << 20);
    const run = [1, 2, 3, 4, 5].map((o) => bkeyValue(posOf(3, o), new Uint8Array(4), 1));
    run.push(bkeyValue(POS_MAX, new Uint8Array(4), 1));
    const before = state(a);
    expect(() => a.insertKeys(run)).toThrow(RangeError);
    expect(state(a)).toEqual(before);
  });
});
