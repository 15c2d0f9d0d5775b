// SPDX-License-Identifier: GPL-2.0-only
/* Test helpers over a node's keys (NodeKeys), without a store. */
import { NodeIter, type NodeKeys } from '../../src/btree/bset.js';
import { posToBig } from '../format/prng.js';

/** Call fn for each live key (whiteouts skipped) in position order, with its position as a bigint and its handle. */
export function forEachLiveKey(keys: NodeKeys, fn: (pos: bigint, h: number) => void): void {
  const it = new NodeIter();
  it.initStart(keys);
  const p = new Uint32Array(5);
  for (let h = it.peek(); h >= 0; it.advance(), h = it.peek()) {
    if (keys.keyIsWhiteout(h)) continue;
    keys.keyPosTo(h, p, 0);
    fn(posToBig(p), h);
  }
}
