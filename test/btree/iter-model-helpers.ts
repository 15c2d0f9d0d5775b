// SPDX-License-Identifier: GPL-2.0-only
/*
 * Shared helpers of the iterator model tests (iter-model.test.ts, normal
 * btree; iter-model-extents.test.ts, extents btree): encoded positions,
 * tagged values, the seeded random source and the call trace printed when a
 * check fails.
 *
 * Positions are encoded as one bigint (inode << 96 | offset << 32 | snapshot),
 * so bpos order is bigint order and bpos successor/predecessor are +1/-1.
 *
 * SIXTREE_ITER_SEED=<n>[,<n>...] replays seeds instead of a test's own list (a
 * failure prints its seed with the calls of the failing sequence);
 * SIXTREE_ITER_TX sets the number of checking transactions.
 */

import type { Bpos } from '../../src/index.js';
import { prng } from '../helpers/store.js';

export const SEED_DEFAULT = 0x5eed1;
/** The seeds to run: SIXTREE_ITER_SEED if given, else the test's own list. */
export function seedsToRun(own: readonly number[]): number[] {
  const env = process.env.SIXTREE_ITER_SEED;
  if (env === undefined || env === '') return own.slice();
  return env.split(',').map((x) => Number(x.trim()));
}
export const TXS = Number(process.env.SIXTREE_ITER_TX ?? 100);

export const U32_MAX = 0xffff_ffffn;
export const U64_MAX = 0xffff_ffff_ffff_ffffn;
export const ENC_MAX = (1n << 160n) - 1n;

/* ------------------------------------------------------------------------
 * Positions and values.
 */

export function enc(inode: bigint, offset: bigint, snapshot: bigint | number): bigint {
  return (inode << 96n) | (offset << 32n) | BigInt(snapshot);
}
export function dec(x: bigint): Bpos {
  return { inode: x >> 96n, offset: (x >> 32n) & U64_MAX, snapshot: Number(x & U32_MAX) };
}
export function fmtEnc(x: bigint): string {
  const p = dec(x);
  return `${p.inode}:${p.offset}:${p.snapshot}`;
}
export function fmtPos(p: Bpos): string {
  return `${p.inode}:${p.offset}:${p.snapshot}`;
}

/** The value written with a tag: 4-byte tag, then a tag-dependent tail of tag-dependent length. */
export function val(tag: number): Uint8Array {
  const b = new Uint8Array(4 + (tag % 29));
  new DataView(b.buffer).setUint32(0, tag, true);
  for (let i = 4; i < b.length; i++) b[i] = (tag * 7 + i) & 0xff;
  return b;
}
export function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}

/** Random helpers over the shared seeded PRNG. Each transaction body draws from its own
 *  Rand seeded outside it, so a restarted transaction replays the same calls. */
export class Rand {
  readonly f: () => number;
  constructor(seed: number) {
    this.f = prng(seed);
  }
  r(): number {
    return this.f();
  }
  int(n: number): number {
    return Math.floor(this.f() * n);
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!;
  }
  seed(): number {
    return this.int(0x1_0000_0000);
  }
}

/** Index of the first element >= x. */
export function lowerBound(a: readonly bigint[], x: bigint): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Call trace of the current sequence, printed with the seed when a check fails. */
export class Trace {
  lines: string[] = [];
  constructor(readonly seed: number) {}
  reset(head: string): void {
    this.lines = [head];
  }
  add(s: string): void {
    this.lines.push(s);
  }
  msg(): string {
    return `seed=${this.seed} (replay: SIXTREE_ITER_SEED=${this.seed})\n  ${this.lines.slice(-60).join('\n  ')}`;
  }
}
