// SPDX-License-Identifier: GPL-2.0-only
/*
 * Split pivots (interior.ts splitPivot). splitPivotBySets finds the middle
 * of a node with one search per set at candidate positions instead of
 * walking its keys; checked against a model of the live keys the node holds
 * once the commit's incoming keys are in:
 *  - the pivot lies in the node's range, below its max key;
 *  - neither half gets more than half of the bytes the sets and the
 *    incoming keys hold, but the first by the slack (so both fit a node);
 *    with no dead keys, the first half holds at least half the live bytes;
 *  - when another set's keys crowd between two candidates it gives up and
 *    the walk (splitPivotByWalk) decides; so it does for interior nodes,
 *    which must split at a live pointer.
 */
import { describe, expect, it } from 'vitest';
import { KEY_TYPES, bkeyBtreePtr, bkeyValue, bkeyWhiteout, type BkeyI } from '../../src/btree/bkey.js';
import { NodeKeys } from '../../src/btree/bset.js';
import { forEachLiveKey } from '../helpers/node-keys.js';
import { nodeWriteDone, nodeWritePrepare } from '../../src/btree/node-io.js';
import { PIVOT_SLACK_DEN, splitPivot, splitPivotBySets, splitPivotByWalk } from '../../src/btree/interior.js';
import { posOf, posToBig, property } from '../format/prng.js';

const NODE = 65536;

function fresh(level = 0): NodeKeys {
  const k = new NodeKeys(NODE, 512);
  k.attach(new Uint8Array(NODE), new Uint8Array(NodeKeys.auxBytes(NODE)));
  k.initEmpty({ btreeId: 1, level, minKey: posOf(1, 0), maxKey: posOf(1, 1_000_000), seq: 0x1234567 });
  return k;
}

function written(keys: NodeKeys): void {
  nodeWritePrepare(keys);
  nodeWriteDone(keys);
}

/** Live bytes by position once `incoming` is applied, and the bytes splitPivotBySets counts (every key of every set, every incoming non-deletion). */
function model(keys: NodeKeys, incoming: readonly BkeyI[]): { live: Map<bigint, number>; counted: number } {
  const live = new Map<bigint, number>();
  forEachLiveKey(keys, (pos, h) => live.set(pos, keys.keyU64s(h) * 8));
  let counted = 0;
  for (let s = 0; s < keys.nsets; s++) counted += keys.setEndOf(s) - keys.setStartOf(s);
  for (const k of incoming) {
    if (k.type === KEY_TYPES.deleted) {
      live.delete(posToBig(k.p));
      continue;
    }
    live.set(posToBig(k.p), keys.keyU64sPacked(k) * 8);
    counted += keys.keyU64sPacked(k) * 8;
  }
  return { live, counted };
}

function halves(live: Map<bigint, number>, pivot: Uint32Array): [number, number] {
  const pv = posToBig(pivot);
  let left = 0;
  let right = 0;
  for (const [p, b] of live) {
    if (p <= pv) left += b;
    else right += b;
  }
  return [left, right];
}

describe('split pivots', () => {
  it('by sets: inside the node, each half within half the bytes (the first half within the slack), as the walk would (random nodes of up to three sets, whiteouts, overwrites, incoming keys)', () => {
    property('pivot by sets', 40, (r) => {
      const keys = fresh();
      let v = 1;
      const put = (k: BkeyI): void => {
        if (!keys.insertKey(k)) throw new Error('full');
      };
      const offset = (): number => r.int(1_000_000);
      const n0 = 400 + r.int(600);
      for (let i = 0; i < n0; i++) put(bkeyValue(posOf(1, offset()), r.bytes(r.int(40)), v++));
      written(keys);
      const dead = r.bool(0.5);
      for (let set = 0; set < 1 + r.int(2); set++) {
        for (let i = 0; i < 50 + r.int(300); i++) {
          // fresh keys, and (dead) whiteouts and overwrites of keys the sets hold
          put(dead && r.bool(0.3) ? bkeyWhiteout(posOf(1, offset()), v++) : bkeyValue(posOf(1, offset()), r.bytes(r.int(40)), v++));
        }
        if (set === 0 && r.bool(0.5)) nodeWritePrepare(keys);
      }
      const byPos = new Map<bigint, BkeyI>();
      for (let i = 0; i < r.int(60); i++) {
        const k = !dead || r.bool(0.8) ? bkeyValue(posOf(1, offset()), r.bytes(r.int(40)), v++) : bkeyWhiteout(posOf(1, offset()), v++);
        byPos.set(posToBig(k.p), k);
      }
      const incoming = [...byPos.values()].sort((a, b) => (posToBig(a.p) < posToBig(b.p) ? -1 : 1));
      const { live, counted } = model(keys, incoming);
      const pivot = splitPivotBySets(keys, incoming);
      const walked = splitPivotByWalk(keys, incoming);
      expect(walked).not.toBeNull();
      if (pivot === null) return;
      expect(posToBig(pivot) >= posToBig(keys.minKey) && posToBig(pivot) < posToBig(keys.maxKey)).toBe(true);
      const [left, right] = halves(live, pivot);
      const slack = NODE / PIVOT_SLACK_DEN;
      expect(left).toBeLessThanOrEqual(counted / 2 + slack);
      expect(right).toBeLessThanOrEqual(counted / 2);
      if (!dead && incoming.every((k) => k.type !== KEY_TYPES.deleted)) {
        // every byte counted is live (but for incoming keys replacing stored ones): the first half holds at least half
        const replaced = incoming.filter((k) => live.has(posToBig(k.p))).length * 64;
        expect(left + replaced).toBeGreaterThanOrEqual(counted / 2 - replaced);
      }
      expect(splitPivot(keys, incoming)).toEqual(pivot);
    });
  });

  it('by sets gives up when another set crowds between two candidates; the walk splits at the middle', () => {
    const keys = fresh();
    // the written set: 1,500 keys 100 apart (about 48 KiB)
    for (let i = 0; i < 1500; i++) expect(keys.insertKey(bkeyValue(posOf(1, 100 * i), new Uint8Array(16), 1))).toBe(true);
    written(keys);
    // the writable set: 400 keys (about 13 KiB, over twice the slack) all between two written keys in the middle (snapshots of one offset)
    for (let j = 1; j <= 400; j++) expect(keys.insertKey(bkeyValue(posOf(1, 75_000, j), new Uint8Array(16), 2))).toBe(true);
    expect(splitPivotBySets(keys, [])).toBeNull();
    const pivot = splitPivot(keys, []);
    expect(pivot).not.toBeNull();
    const { live } = model(keys, []);
    const [left, right] = halves(live, pivot!);
    expect(Math.abs(left - right)).toBeLessThanOrEqual(64);
  });

  it('interior nodes: by sets leaves the pivot to the walk, which splits at a live pointer, never at a deleted one', () => {
    const keys = fresh(1);
    const ptr = (max: number) => bkeyBtreePtr(posOf(1, max), { bucket: 7 + max, seq: 1000 + max, level: 0, minKey: posOf(1, max - 9) }, 1);
    for (let i = 1; i <= 600; i++) expect(keys.insertKey(ptr(10 * i))).toBe(true);
    written(keys);
    // pointers around the middle deleted (children merged away): whiteouts in a newer set
    for (let i = 250; i <= 350; i++) expect(keys.insertKey(bkeyWhiteout(posOf(1, 10 * i), 2))).toBe(true);
    expect(splitPivotBySets(keys, [])).toBeNull();
    const pivot = splitPivot(keys, [])!;
    const off = posToBig(pivot) - posToBig(posOf(1, 0));
    const at = Number(off >> 32n) / 10; // the pointer index at the pivot (offset field, above the snapshot word)
    expect(at < 250 || at > 350).toBe(true);
  });

  it('interior nodes: pointers coming in as a stream into one gap (journal replay) still split at a live pointer', () => {
    // the stream rule (a sequential stream splits at the gap's end, just before
    // the next key) picks a position that is no child's max key: an interior
    // node split there leaves the next child's range reaching below the right
    // half's min key
    const keys = fresh(1);
    const ptr = (max: number) => bkeyBtreePtr(posOf(1, max), { bucket: 7 + max, seq: 1000 + max, level: 0, minKey: posOf(1, max - 9) }, 1);
    const live = new Set<bigint>();
    for (let i = 1; i <= 100; i++) {
      expect(keys.insertKey(ptr(10 * i))).toBe(true);
      live.add(posToBig(posOf(1, 10 * i)));
    }
    for (let i = 0; i < 100; i++) {
      expect(keys.insertKey(ptr(500_000 + 10 * i))).toBe(true);
      live.add(posToBig(posOf(1, 500_000 + 10 * i)));
    }
    written(keys);
    const incoming = [ptr(1010), ptr(1020)];
    for (const k of incoming) live.add(posToBig(k.p));
    const pivot = splitPivot(keys, incoming);
    expect(pivot).not.toBeNull();
    expect(live.has(posToBig(pivot!))).toBe(true);
  });
});
