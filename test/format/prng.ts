// SPDX-License-Identifier: GPL-2.0-only
/*
 * Seeded PRNG and a tiny property harness for the format/bset tests
 * (fast-check is not a dependency). A failing property reports its seed and
 * run index so it can be replayed with `property(name, runs, fn, seed)`.
 */

import { Prng } from '../../bench/prng.js';

export { Prng };

/** Run fn for `runs` seeds derived from `seed`; rethrow with the failing seed. */
export function property(name: string, runs: number, fn: (r: Prng, run: number) => void, seed = 0x5eed): void {
  for (let i = 0; i < runs; i++) {
    const s = (seed + Math.imul(i, 0x9e3779b1)) >>> 0;
    try {
      fn(new Prng(s), i);
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      err.message = `${name}: run ${i} seed 0x${s.toString(16)}: ${err.message}`;
      throw err;
    }
  }
}

/** Position words <-> bigint (reference comparisons in tests only). */
export function posToBig(w: Uint32Array, i = 0): bigint {
  return (BigInt(w[i]!) << 128n) | (BigInt(w[i + 1]!) << 96n) | (BigInt(w[i + 2]!) << 64n) | (BigInt(w[i + 3]!) << 32n) | BigInt(w[i + 4]!);
}

export function bigToPos(b: bigint): Uint32Array {
  const w = new Uint32Array(5);
  for (let i = 4; i >= 0; i--) {
    w[i] = Number(b & 0xffffffffn);
    b >>= 32n;
  }
  return w;
}

export function posOf(inode: bigint | number, offset: bigint | number, snapshot = 0): Uint32Array {
  return bigToPos((BigInt(inode) << 96n) | (BigInt(offset) << 32n) | BigInt(snapshot));
}

/** A random position with plenty of shared prefixes: small inodes/offsets mostly, sometimes huge. */
export function randPos(r: Prng): Uint32Array {
  const inode = r.bool(0.8) ? BigInt(r.int(8)) : (BigInt(r.u32()) << 32n) | BigInt(r.u32());
  const offset = r.bool(0.7) ? BigInt(r.int(1000)) : (BigInt(r.u32()) << 32n) | BigInt(r.u32());
  const snap = r.bool(0.8) ? 0 : r.bool(0.5) ? r.int(4) : r.u32();
  return posOf(inode, offset, snap);
}
