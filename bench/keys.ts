// SPDX-License-Identifier: GPL-2.0-only
/*
 * Keys and values every store is benchmarked with (owned here, nowhere else).
 *
 * A KeySet is an array of u64 keys, indexed 0..count-1, held twice:
 *  - u64: BigUint64Array of the key values (sixtree: pos(0, key));
 *  - be:  the same keys as 8-byte big-endian byte strings (peers), so that
 *         byte order equals numeric order in every store.
 * Workloads address keys by index; converting an index to a store's key is a
 * typed-array read, the same small cost for every store.
 *
 * Two kinds:
 *  - 'seq':  key(i) = i (dense, ascending);
 *  - 'rand': key(i) = a 64-bit permutation of i (a 4-round Feistel network
 *            over two 32-bit halves, so keys are distinct by construction and
 *            spread over the whole u64 range, as bcachefs's get_random_u64()).
 *            Index order is therefore a random key order.
 *
 * Values are 8..64 bytes (mean 36), a deterministic function of (index,
 * version): a view into one fixed pseudo-random pool, never allocated per op.
 * Every store gets the same bytes for the same (index, version).
 */

export type KeysetKind = 'rand' | 'seq';

export const valueBytesMin = 8;
export const valueBytesMax = 64;
const valuePoolBytes = 1 << 16;
const feistelKeys = [0x9e3779b9, 0x7f4a7c15, 0x85ebca6b, 0xc2b2ae35];

/** murmur3 fmix32: a cheap, well-mixing 32-bit bijection. */
export function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

export class KeySet {
  readonly kind: KeysetKind;
  readonly count: number;
  readonly u64: BigUint64Array;
  readonly be: Buffer;

  constructor(kind: KeysetKind, count: number) {
    this.kind = kind;
    this.count = count;
    this.u64 = new BigUint64Array(count);
    this.be = Buffer.allocUnsafe(count * 8);
    const words = new Uint32Array(this.u64.buffer);
    const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
    for (let i = 0; i < count; i++) {
      let hi = 0;
      let lo = i >>> 0;
      if (kind === 'rand') {
        hi = Math.floor(i / 0x1_0000_0000) >>> 0;
        for (const k of feistelKeys) {
          const f = mix32((lo ^ k) >>> 0);
          const next = (hi ^ f) >>> 0;
          hi = lo;
          lo = next;
        }
      }
      words[2 * i + (littleEndian ? 1 : 0)] = hi;
      words[2 * i + (littleEndian ? 0 : 1)] = lo;
      this.be.writeUInt32BE(hi, 8 * i);
      this.be.writeUInt32BE(lo, 8 * i + 4);
    }
  }

  /** The key at index i as a bigint (sixtree's offset). */
  key(i: number): bigint {
    return this.u64[i]!;
  }

  /** The key at index i as 8 big-endian bytes (a view, not a copy). */
  keyBytes(i: number): Buffer {
    return this.be.subarray(8 * i, 8 * i + 8);
  }
}

/** Fixed pseudo-random bytes the values are cut from. */
const valuePool: Buffer = (() => {
  const pool = Buffer.allocUnsafe(valuePoolBytes + valueBytesMax);
  for (let i = 0; i < pool.length; i += 4) pool.writeUInt32LE(mix32(i + 0x1234567), i);
  return pool;
})();

/** The value for key index i at a version (0 = as loaded, 1.. = overwrites). */
export function valueOf(i: number, version: number): Buffer {
  const h = mix32((i ^ Math.imul(version + 1, 0x9e3779b9)) >>> 0);
  const lengthBytes = valueBytesMin + (h % (valueBytesMax - valueBytesMin + 1));
  const offsetBytes = mix32(h) % valuePoolBytes;
  return valuePool.subarray(offsetBytes, offsetBytes + lengthBytes);
}

/** xorshift32: the harness's only source of randomness (fixed seed: runs repeat). */
export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0 || 1;
  }

  /** A uniform integer in [0, n), n <= 2^32. */
  below(n: number): number {
    let x = this.state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.state = x >>> 0;
    return Math.floor((this.state / 0x1_0000_0000) * n);
  }
}
