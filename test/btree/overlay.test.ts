// SPDX-License-Identifier: GPL-2.0-only
/*
 * BtreeOverlay: keys put out of order are settled (sorted once by the
 * native u64 sort of summaries and indexes, ties on the words) into
 * position order, the last put at a position winning, exactly as a
 * comparator sort would leave them: positions differing only in their low
 * bits or snapshot (equal summaries), repeats, and batches large enough
 * that the index takes summary bits.
 */
import { describe, expect, it } from 'vitest';
import { KEY_TYPE, type BkeyI } from '../../src/btree/bkey.js';
import { wordsCmp, wordsToBpos } from '../../src/btree/bpos.js';
import { BtreeOverlay } from '../../src/btree/overlay.js';
import { property } from '../format/prng.js';

function key(p: Uint32Array, tag: number): BkeyI {
  return { type: KEY_TYPE.value, p, size: 0, version: 0, value: Uint8Array.of(tag & 0xff, tag >>> 8) };
}

/** The reference: a stable comparator sort by position, the last put at a position kept. */
function reference(keys: BkeyI[]): BkeyI[] {
  const sorted = keys.map((k, i) => [k, i] as const).sort((a, b) => wordsCmp(a[0].p, 0, b[0].p, 0) || a[1] - b[1]);
  return sorted.filter((x, j) => j + 1 >= sorted.length || wordsCmp(x[0].p, 0, sorted[j + 1]![0].p, 0) !== 0).map((x) => x[0]);
}

describe('BtreeOverlay#keys', () => {
  it('settles keys put in any order into position order, the last put at a position winning', () => {
    property('settle = stable sort', 40, (r, run) => {
      const n = [1, 2, 7, 300, 2049, 5000][run % 6]!;
      const ov = new BtreeOverlay(false);
      const all: BkeyI[] = [];
      const base = r.u32();
      for (let i = 0; i < n; i++) {
        // close positions (low offset bits, snapshot) share a summary; repeats
        const p = Uint32Array.of(0, run % 3 === 0 ? 7 : r.u32() % 3, base, r.u32() % 8 === 0 ? r.u32() % 4 : r.u32(), r.u32() % 3);
        const k = key(p, i);
        all.push(k);
        ov.putKey(k);
        if (r.u32() % 97 === 0) {
          const again = key(all[r.u32() % all.length]!.p, n + i);
          all.push(again);
          ov.putKey(again);
        }
      }
      const got = ov.keys;
      const want = reference(all);
      expect(got.length).toBe(want.length);
      for (let i = 0; i < want.length; i++) expect(got[i]).toBe(want[i]);
    });
  });

  it('merges a second batch into settled keys', () => {
    const ov = new BtreeOverlay(false);
    const all: BkeyI[] = [];
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 500; i++) {
        const k = key(Uint32Array.of(0, 1, (i * 7919 + round) % 613, round, 0), round * 1000 + i);
        all.push(k);
        ov.putKey(k);
      }
      const got = ov.keys;
      const want = reference(all);
      expect(got.map((k) => k.value[0]! | (k.value[1]! << 8))).toEqual(want.map((k) => k.value[0]! | (k.value[1]! << 8)));
    }
  });
});

describe('BtreeOverlay searches', () => {
  it('lowerBound, keyAt and posAt agree with the positions of keys put without one (made on demand from the words)', () => {
    property('searches = reference', 20, (r) => {
      const ov = new BtreeOverlay(false);
      const all: BkeyI[] = [];
      for (let i = 0; i < 200; i++) {
        const k = key(Uint32Array.of(r.u32() % 2, r.u32(), r.u32() % 4, r.u32() % 64, r.u32() % 2), i);
        all.push(k);
        ov.putKey(k);
      }
      const want = reference(all);
      for (let i = 0; i < want.length; i++) {
        const at = wordsToBpos(want[i]!.p, 0);
        expect(ov.posAt(i)).toEqual(at);
        expect(ov.keyAt(at)).toBe(want[i]);
        expect(ov.lowerBound(at)).toBe(i);
        expect(ov.lowerBound(at, true)).toBe(i + 1);
      }
      // a position between keys: not found, and both bounds land after the keys below it
      const probe = Uint32Array.of(r.u32() % 2, r.u32(), r.u32() % 4, r.u32() % 64, 2);
      const below = want.filter((k) => wordsCmp(k.p, 0, probe, 0) < 0).length;
      const bp = wordsToBpos(probe, 0);
      expect(ov.keyAt(bp)).toBeUndefined();
      expect(ov.lowerBound(bp)).toBe(below);
      expect(ov.lowerBound(bp, true)).toBe(below);
    });
  });

  it('a tombstone removes the keys in [start, end) and only those', () => {
    const ov = new BtreeOverlay(false);
    for (let i = 0; i < 20; i++) ov.putKey(key(Uint32Array.of(0, 1, 0, (i * 7) % 20, 0), i));
    ov.addTombstone(wordsToBpos(Uint32Array.of(0, 1, 0, 5, 0), 0), wordsToBpos(Uint32Array.of(0, 1, 0, 12, 0), 0));
    expect(ov.keys.map((k) => k.p[3])).toEqual([0, 1, 2, 3, 4, 12, 13, 14, 15, 16, 17, 18, 19]);
    expect(ov.covered(wordsToBpos(Uint32Array.of(0, 1, 0, 11, 9), 0))).toBe(true);
    expect(ov.covered(wordsToBpos(Uint32Array.of(0, 1, 0, 12, 0), 0))).toBe(false);
  });
});
