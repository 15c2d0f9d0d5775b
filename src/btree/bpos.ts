/*
 * Positions (bcachefs struct bpos): (inode u64, offset u64, snapshot u32),
 * ordered by inode, then offset, then snapshot.
 *
 * Two forms:
 *  - Bpos: the public, immutable object with bigint fields (API.md).
 *  - Words: the internal form, five u32 words [inodeHi, inodeLo, offsetHi,
 *    offsetLo, snapshot] inside any Uint32Array at an index. Comparing two
 *    word positions is five integer compares: no BigInt, no allocation. This is
 *    what the hot path (node search, iterators, path positions) uses.
 *
 * Conversions between the two allocate and belong at the API boundary.
 */

import { SixtreeError, describeValue } from '../errors.js';

export interface Bpos {
  readonly inode: bigint;
  readonly offset: bigint;
  readonly snapshot: number;
}

export type PosLike = Bpos | { inode: bigint | number; offset: bigint | number; snapshot?: number };

export const U64_MAX = (1n << 64n) - 1n;
export const U32_MAX = 0xffffffff;

/** Number of u32 words in the internal position form. */
export const BPOS_WORDS = 5;

function makeBpos(inode: bigint, offset: bigint, snapshot: number): Bpos {
  return Object.freeze({ inode, offset, snapshot });
}

export const POS_MIN: Bpos = makeBpos(0n, 0n, 0);
export const POS_MAX: Bpos = makeBpos(U64_MAX, U64_MAX, U32_MAX);

function u64Arg(name: string, v: unknown): bigint {
  if (typeof v === 'bigint') {
    if (v < 0n || v > U64_MAX) throw new SixtreeError('ERR_INVALID_ARG', `${name}: got ${v}n; expected an unsigned 64-bit integer (0 .. 2^64-1)`, { argument: name });
    return v;
  }
  if (typeof v === 'number') {
    if (!Number.isInteger(v) || v < 0 || v > Number.MAX_SAFE_INTEGER)
      throw new SixtreeError('ERR_INVALID_ARG', `${name}: got ${v}; expected a non-negative safe integer or a bigint up to 2^64-1`, { argument: name });
    return BigInt(v);
  }
  throw new SixtreeError('ERR_INVALID_ARG', `${name}: got ${describeValue(v)}; expected a bigint or a number`, { argument: name });
}

function u32Arg(name: string, v: unknown): number {
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= U32_MAX) return v;
  if (typeof v === 'bigint' && v >= 0n && v <= BigInt(U32_MAX)) return Number(v);
  throw new SixtreeError('ERR_INVALID_ARG', `${name}: got ${describeValue(v)}; expected an unsigned 32-bit integer (0 .. 4294967295)`, { argument: name });
}

/** Make a position; snapshot defaults to 0. Bad values: ERR_INVALID_ARG. */
export function pos(inode: bigint | number, offset: bigint | number, snapshot: number = 0): Bpos {
  return makeBpos(u64Arg('inode', inode), u64Arg('offset', offset), u32Arg('snapshot', snapshot));
}

/** Validate any PosLike and return a frozen Bpos. `name` is the argument name for messages. */
export function toBpos(p: unknown, name = 'pos'): Bpos {
  if (p === null || typeof p !== 'object') {
    throw new SixtreeError('ERR_INVALID_ARG', `${name}: got ${describeValue(p)}; expected a position { inode, offset, snapshot? } (use pos())`, { argument: name });
  }
  const o = p as { inode?: unknown; offset?: unknown; snapshot?: unknown };
  if (Object.isFrozen(o) && typeof o.inode === 'bigint' && typeof o.offset === 'bigint' && typeof o.snapshot === 'number' && o.inode >= 0n && o.inode <= U64_MAX && o.offset >= 0n && o.offset <= U64_MAX && Number.isInteger(o.snapshot) && o.snapshot >= 0 && o.snapshot <= U32_MAX) {
    return o as Bpos;
  }
  return makeBpos(u64Arg(`${name}.inode`, o.inode), u64Arg(`${name}.offset`, o.offset), o.snapshot === undefined ? 0 : u32Arg(`${name}.snapshot`, o.snapshot));
}

/**
 * Validate a PosLike and write its words into w[i..i+5) without making a
 * Bpos (the point-read fast path: no BigInt arithmetic, no allocation). Bad
 * values throw exactly as toBpos does.
 */
export function posLikeToWords(p: unknown, name: string, w: Uint32Array, i: number): void {
  if (p === null || typeof p !== 'object') toBpos(p, name);
  const o = p as { inode?: unknown; offset?: unknown; snapshot?: unknown };
  const inode = o.inode, offset = o.offset, snapshot = o.snapshot;
  if (!u64ToWords(inode, w, i) || !u64ToWords(offset, w, i + 2)) {
    toBpos(p, name);
    throw new Error('posLikeToWords: toBpos accepted a position posLikeToWords refused');
  }
  if (snapshot === undefined) w[i + 4] = 0;
  else if (typeof snapshot === 'number' && snapshot >= 0 && snapshot <= U32_MAX && Number.isInteger(snapshot)) w[i + 4] = snapshot;
  else w[i + 4] = u32Arg(`${name}.snapshot`, snapshot);
}

const TWO_32 = 4294967296;

/** A u64 argument (bigint or safe integer) into two words; false if it is not one. */
function u64ToWords(v: unknown, w: Uint32Array, i: number): boolean {
  if (typeof v === 'bigint') {
    if (v < 0n || v > U64_MAX) return false;
    u64Scratch[0] = v;
    w[i] = u64ScratchWords[HI]!;
    w[i + 1] = u64ScratchWords[LO]!;
    return true;
  }
  if (typeof v === 'number' && v >= 0 && v <= Number.MAX_SAFE_INTEGER && Number.isInteger(v)) {
    const hi = Math.floor(v / TWO_32);
    w[i] = hi;
    w[i + 1] = v - hi * TWO_32;
    return true;
  }
  return false;
}

/** Compare two positions: inode, then offset, then snapshot. */
export function bposCmp(a: PosLike, b: PosLike): -1 | 0 | 1 {
  const x = toBpos(a, 'a');
  const y = toBpos(b, 'b');
  if (x.inode !== y.inode) return x.inode < y.inode ? -1 : 1;
  if (x.offset !== y.offset) return x.offset < y.offset ? -1 : 1;
  if (x.snapshot !== y.snapshot) return x.snapshot < y.snapshot ? -1 : 1;
  return 0;
}

/** "inode:offset:snapshot"; a bad position: ERR_INVALID_ARG (toBpos). */
export function bposToText(p: PosLike): string {
  const q = toBpos(p, 'pos');
  const f = (v: bigint) => (v === U64_MAX ? 'U64_MAX' : v.toString());
  return `${f(q.inode)}:${f(q.offset)}:${q.snapshot === U32_MAX ? 'U32_MAX' : q.snapshot}`;
}

/* ---------------------------------------------------------------------------
 * Word form.
 */

/* u64 -> two u32 words through one shared buffer: no BigInt arithmetic (each shift allocates) */
const u64Scratch = new BigUint64Array(2);
const u64ScratchWords = new Uint32Array(u64Scratch.buffer);
const LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
/** Index of a u64's high (and low) u32 half in a Uint32Array over a BigUint64Array's buffer (host byte order). */
export const U64_WORD_HI = LE ? 1 : 0;
export const U64_WORD_LO = LE ? 0 : 1;
const HI = U64_WORD_HI;
const LO = U64_WORD_LO;

/** Write a Bpos into w[i..i+5). */
export function bposToWords(p: Bpos, w: Uint32Array, i = 0): void {
  u64Scratch[0] = p.inode;
  u64Scratch[1] = p.offset;
  const s = u64ScratchWords;
  w[i] = s[HI]!;
  w[i + 1] = s[LO]!;
  w[i + 2] = s[2 + HI]!;
  w[i + 3] = s[2 + LO]!;
  w[i + 4] = p.snapshot;
}

export function wordsToBpos(w: Uint32Array, i = 0): Bpos {
  const s = u64ScratchWords;
  s[HI] = w[i]!;
  s[LO] = w[i + 1]!;
  s[2 + HI] = w[i + 2]!;
  s[2 + LO] = w[i + 3]!;
  return makeBpos(u64Scratch[0]!, u64Scratch[1]!, w[i + 4]!);
}

/** A fresh 5-word position. */
export function posWords(p: Bpos = POS_MIN): Uint32Array {
  const w = new Uint32Array(BPOS_WORDS);
  bposToWords(p, w, 0);
  return w;
}

/** Compare positions in word form without allocating. */
export function wordsCmp(a: Uint32Array, ai: number, b: Uint32Array, bi: number): number {
  let x = a[ai]!, y = b[bi]!;
  if (x !== y) return x < y ? -1 : 1;
  x = a[ai + 1]!; y = b[bi + 1]!;
  if (x !== y) return x < y ? -1 : 1;
  x = a[ai + 2]!; y = b[bi + 2]!;
  if (x !== y) return x < y ? -1 : 1;
  x = a[ai + 3]!; y = b[bi + 3]!;
  if (x !== y) return x < y ? -1 : 1;
  x = a[ai + 4]!; y = b[bi + 4]!;
  if (x !== y) return x < y ? -1 : 1;
  return 0;
}

export function wordsCopy(dst: Uint32Array, di: number, src: Uint32Array, si: number): void {
  dst[di] = src[si]!;
  dst[di + 1] = src[si + 1]!;
  dst[di + 2] = src[si + 2]!;
  dst[di + 3] = src[si + 3]!;
  dst[di + 4] = src[si + 4]!;
}

/** A fresh copy of the position at w[i..] (allocates: not for hot paths). */
export function wordsClone(w: Uint32Array, i = 0): Uint32Array {
  const c = new Uint32Array(BPOS_WORDS);
  wordsCopy(c, 0, w, i);
  return c;
}

export function wordsIsMax(w: Uint32Array, i = 0): boolean {
  return w[i] === U32_MAX && w[i + 1] === U32_MAX && w[i + 2] === U32_MAX && w[i + 3] === U32_MAX && w[i + 4] === U32_MAX;
}

export function wordsIsMin(w: Uint32Array, i = 0): boolean {
  return w[i] === 0 && w[i + 1] === 0 && w[i + 2] === 0 && w[i + 3] === 0 && w[i + 4] === 0;
}

/** bpos_successor in place: the next position in (inode, offset, snapshot) order. Returns false at POS_MAX. */
export function wordsSuccessor(w: Uint32Array, i = 0): boolean {
  for (let j = i + 4; j >= i; j--) {
    if (w[j] !== U32_MAX) {
      w[j] = w[j]! + 1;
      return true;
    }
    w[j] = 0;
  }
  // wrapped: restore POS_MAX
  w.fill(U32_MAX, i, i + 5);
  return false;
}

/** bpos_predecessor in place. Returns false at POS_MIN. */
export function wordsPredecessor(w: Uint32Array, i = 0): boolean {
  for (let j = i + 4; j >= i; j--) {
    if (w[j] !== 0) {
      w[j] = w[j]! - 1;
      return true;
    }
    w[j] = U32_MAX;
  }
  w.fill(0, i, i + 5);
  return false;
}

export function wordsToText(w: Uint32Array, i = 0): string {
  return bposToText(wordsToBpos(w, i));
}

export function bposSuccessor(p: PosLike): Bpos {
  const w = posWords(toBpos(p, 'pos'));
  wordsSuccessor(w);
  return wordsToBpos(w);
}

export function bposPredecessor(p: PosLike): Bpos {
  const w = posWords(toBpos(p, 'pos'));
  wordsPredecessor(w);
  return wordsToBpos(w);
}
