// SPDX-License-Identifier: GPL-2.0-only
/*
 * Per-node key format (bcachefs bkey_format): how the keys of one node are
 * packed.
 *
 * A key has five numeric fields, packed in this order (FIELDS):
 *   inode u64, offset u64, snapshot u32   -- the position
 *   size u32                              -- extent size (0 for other keys)
 *   version u53                           -- journal seq of the commit
 * The format gives each field a base (the smallest value it holds) and a bit
 * width; a packed field stores value - base in that many bits. A key whose
 * fields do not all fit is stored unpacked (a flag in its header, see bkey.ts).
 *
 * Packed fields form one bit string, MOST SIGNIFICANT BIT FIRST, in u32 words
 * (each word an LE u32 on disk): inode bits, then offset, snapshot, size,
 * version. Because the position fields come first and each is stored
 * big-end first, comparing the first `posBits` bits of two packed keys word by
 * word is the same as comparing their positions (bcachefs bkey_cmp_packed).
 * Nothing here uses BigInt: a u64 is (hi, lo) u32 halves.
 *
 * Invariants (formatValidate, checked on read and before write):
 *   bits[i] <= FIELD_MAX_BITS[i]; base + 2^bits - 1 <= 2^FIELD_MAX_BITS[i] - 1,
 *   so unpacking never overflows.
 *
 * On-disk encoding (FORMAT_BYTES = 48, inside the node header):
 *   0  u8[5]  bits per field (inode, offset, snapshot, size, version)
 *   5  u8[3]  zero
 *   8  u64[5] base per field, little-endian (lo u32 then hi u32)
 */

import { U32_MAX } from '../btree/bpos.js';
import { ShapeKeeper } from '../util/shapes.js';

/** The packed fields, in packing order. One table; indices derive from it. */
export const FIELDS = [
  { name: 'inode', maxBits: 64 },
  { name: 'offset', maxBits: 64 },
  { name: 'snapshot', maxBits: 32 },
  { name: 'size', maxBits: 32 },
  { name: 'version', maxBits: 53 },
] as const;

export const NR_FIELDS = FIELDS.length;
export const F_INODE = 0;
export const F_OFFSET = 1;
export const F_SNAPSHOT = 2;
export const F_SIZE = 3;
export const F_VERSION = 4;

export const FORMAT_BYTES = 48;
const FMT_OFF_BITS = 0;
const FMT_OFF_BASE = 8;

const TWO32 = 0x1_0000_0000;

/** Largest hi half a field may reach (the lo half may always be 0xffffffff). */
function fieldMaxHi(i: number): number {
  return FIELD_MAX_HI[i]!;
}

const FIELD_MAX_HI = FIELDS.map(({ maxBits: mb }) => (mb >= 64 ? U32_MAX : mb > 32 ? 2 ** (mb - 32) - 1 : 0));
/** 2^n - 1 for n in 0..32. */
const LOW_ONES = Array.from({ length: 33 }, (_, n) => 2 ** n - 1);

/** Does base + 2^bits - 1 stay within the field? */
function fieldRangeOk(i: number, baseHi: number, baseLo: number, bits: number): boolean {
  if (bits > FIELDS[i]!.maxBits) return false;
  const mHi = bits > 32 ? LOW_ONES[bits - 32]! : 0;
  const mLo = bits >= 32 ? U32_MAX : LOW_ONES[bits]!;
  const lo = baseLo + mLo;
  const hi = baseHi + mHi + (lo >= TWO32 ? 1 : 0);
  return hi <= fieldMaxHi(i);
}

function bitLen64(hi: number, lo: number): number {
  if (hi !== 0) return 64 - Math.clz32(hi);
  return 32 - Math.clz32(lo);
}

/** Position bits a summary holds (a double's integer precision). */
export const SUM_BITS = 53;

/*
 * Offsets of the per-field tables inside BkeyFormat.v (one typed array, so a
 * lookup in a cold node touches one small object, not six).
 */
export const FV_BITS = 0;
export const FV_BIT_OFFSET = NR_FIELDS;
export const FV_BASE_HI = 2 * NR_FIELDS;
export const FV_BASE_LO = 3 * NR_FIELDS;
export const FV_MAX_HI = 4 * NR_FIELDS;
export const FV_MAX_LO = 5 * NR_FIELDS;
const FV_WORDS = 6 * NR_FIELDS;

/*
 * The same offsets and field numbers as const enums for the hot paths: tsc
 * inlines them as literals, so V8 folds the index arithmetic (module-level
 * consts are loads from the module context).
 */
const enum V {
  BITS = 0,
  BIT_OFFSET = 5,
  BASE_HI = 10,
  BASE_LO = 15,
  MAX_HI = 20,
  MAX_LO = 25,
}
const enum Fi {
  INODE = 0,
  OFFSET = 1,
  SNAPSHOT = 2,
  SIZE = 3,
  VERSION = 4,
}
const enum Pk {
  EXACT = 0,
  FLOOR = 1,
  BELOW = 2,
}
if (V.BIT_OFFSET !== FV_BIT_OFFSET || V.MAX_LO !== FV_MAX_LO || NR_FIELDS !== 5 || Fi.VERSION !== F_VERSION) throw new Error('bkey-format: enum drift');

/*
 * A format's words come from small shared slabs: a Uint32Array of more than
 * 16 elements gets its own off-heap buffer (about 0.8 us to make, and
 * external memory the collector tracks), and every node read decodes a
 * format. A slab of FORMAT_SLAB_FORMATS formats (1 KiB) stays alive while
 * any of its formats does: at most that much per live format.
 */
const FORMAT_SLAB_FORMATS = 8;
let formatSlab: ArrayBuffer | null = null;
let formatSlabNext = FORMAT_SLAB_FORMATS;

function formatWords(): Uint32Array {
  if (formatSlabNext === FORMAT_SLAB_FORMATS) {
    formatSlab = new ArrayBuffer(FORMAT_SLAB_FORMATS * FV_WORDS * 4);
    formatSlabNext = 0;
  }
  return new Uint32Array(formatSlab!, formatSlabNext++ * FV_WORDS * 4, FV_WORDS);
}

export class BkeyFormat {
  /** All per-field numbers; the named views below alias it. */
  readonly v: Uint32Array;
  /* The named views of v, made on first use (a node read decodes a format; six subarrays would cost more than the rest of it). */
  private views: Uint32Array[] | null = null;
  /** inode + offset + snapshot bits. */
  readonly posBits: number;
  /** Whole u32 words of position bits, and bits in the last partial word. */
  readonly posFullWords: number;
  readonly posRemBits: number;
  /** u32 words holding the position bits (full + partial). */
  readonly posWords: number;
  /** u32 words of packed fields (all five). */
  readonly fieldWords: number;
  /** Total packed field bits. */
  readonly totalBits: number;
  /*
   * Position summaries (packedPosSummary; the search trees of bset.ts, in the
   * spirit of bcachefs's bkey_float mantissas): the first min(posBits, 53)
   * position bits of a packed key as one double, read from the packed words
   * d[w0..] as d[w0] * sumMul + (d[w0 + sumWord] >>> sumShift >>> sumShift2).
   * When sumExact (posBits <= 53) the summary is the position's offset from
   * the format's minimum, and summaries order positions exactly; otherwise a
   * smaller summary means a smaller position and equal summaries need
   * packedPosCmp.
   */
  readonly sumMul: number;
  readonly sumWord: number;
  readonly sumShift: number;
  readonly sumShift2: number;
  readonly sumExact: boolean;
  /* formatPosSummary's numbers (exact formats): the largest inode, offset and snapshot a position may have relative to the base, and 2^bits of offset and snapshot. */
  readonly sumMaxInode: number;
  readonly sumMaxOffset: number;
  readonly sumMaxSnapshot: number;
  readonly sumMulOffset: number;
  readonly sumMulSnapshot: number;

  constructor(bits: ArrayLike<number>, baseHi: ArrayLike<number>, baseLo: ArrayLike<number>) {
    const v = formatWords();
    this.v = v;
    let off = 0;
    for (let i = 0; i < NR_FIELDS; i++) {
      const b = bits[i]!;
      v[FV_BITS + i] = b;
      v[FV_BASE_HI + i] = baseHi[i]!;
      v[FV_BASE_LO + i] = baseLo[i]!;
      v[FV_BIT_OFFSET + i] = off;
      v[FV_MAX_HI + i] = b >= 64 ? U32_MAX : b > 32 ? LOW_ONES[b - 32]! : 0;
      v[FV_MAX_LO + i] = b >= 32 ? U32_MAX : LOW_ONES[b]!;
      off += b;
    }
    this.totalBits = off;
    this.posBits = v[FV_BITS + F_INODE]! + v[FV_BITS + F_OFFSET]! + v[FV_BITS + F_SNAPSHOT]!;
    this.posFullWords = this.posBits >>> 5;
    this.posRemBits = this.posBits & 31;
    this.posWords = (this.posBits + 31) >>> 5;
    this.fieldWords = (off + 31) >>> 5;
    const pb = this.posBits;
    this.sumExact = pb <= SUM_BITS;
    if (pb <= 32) {
      /* the first word alone, shifted right by 32 - posBits (two shifts: >>> 32 is >>> 0 in JS) */
      this.sumMul = 0;
      this.sumWord = 0;
      this.sumShift = Math.min(31, 32 - pb);
      this.sumShift2 = 32 - pb - this.sumShift;
    } else {
      const b = Math.min(pb, SUM_BITS);
      this.sumMul = 2 ** (b - 32);
      this.sumWord = 1;
      this.sumShift = 64 - b;
      this.sumShift2 = 0;
    }
    this.sumMaxInode = v[FV_MAX_HI + F_INODE]! * TWO32 + v[FV_MAX_LO + F_INODE]!;
    this.sumMaxOffset = v[FV_MAX_HI + F_OFFSET]! * TWO32 + v[FV_MAX_LO + F_OFFSET]!;
    this.sumMaxSnapshot = v[FV_MAX_LO + F_SNAPSHOT]!;
    this.sumMulOffset = this.sumMaxOffset + 1;
    this.sumMulSnapshot = this.sumMaxSnapshot + 1;
  }

  private view(at: number): Uint32Array {
    this.views ??= [FV_BITS, FV_BIT_OFFSET, FV_BASE_HI, FV_BASE_LO, FV_MAX_HI, FV_MAX_LO].map((o) => this.v.subarray(o, o + NR_FIELDS));
    return this.views[at / NR_FIELDS]!;
  }

  /** Bits per field (a view of v). */
  get bits(): Uint32Array {
    return this.view(FV_BITS);
  }

  get baseHi(): Uint32Array {
    return this.view(FV_BASE_HI);
  }

  get baseLo(): Uint32Array {
    return this.view(FV_BASE_LO);
  }

  /** Bit offset of each field inside the packed bit string. */
  get bitOffset(): Uint32Array {
    return this.view(FV_BIT_OFFSET);
  }

  /** Largest packed value per field, 2^bits - 1, as hi/lo halves. */
  get maxHi(): Uint32Array {
    return this.view(FV_MAX_HI);
  }

  get maxLo(): Uint32Array {
    return this.view(FV_MAX_LO);
  }

  /** null if valid, else what is wrong. */
  validate(): string | null {
    const v = this.v;
    for (let i = 0; i < NR_FIELDS; i++) {
      const b = v[FV_BITS + i]!;
      if (b > FIELDS[i]!.maxBits) return `field ${FIELDS[i]!.name}: ${b} bits > ${FIELDS[i]!.maxBits}`;
      if (!fieldRangeOk(i, v[FV_BASE_HI + i]!, v[FV_BASE_LO + i]!, b)) return `field ${FIELDS[i]!.name}: base + 2^${b} overflows the field`;
    }
    return null;
  }

  equals(o: BkeyFormat): boolean {
    if (o === this) return true;
    const a = this.v, b = o.v;
    for (let i = 0; i < NR_FIELDS; i++) {
      if (a[FV_BITS + i] !== b[FV_BITS + i] || a[FV_BASE_HI + i] !== b[FV_BASE_HI + i] || a[FV_BASE_LO + i] !== b[FV_BASE_LO + i]) return false;
    }
    return true;
  }

  toText(): string {
    const parts: string[] = [];
    for (let i = 0; i < NR_FIELDS; i++) {
      const hi = this.baseHi[i]!, lo = this.baseLo[i]!;
      const base = hi === 0 ? String(lo) : String((BigInt(hi) << 32n) | BigInt(lo));
      parts.push(`${FIELDS[i]!.name} ${base}+${this.bits[i]}b`);
    }
    return `${parts.join(', ')} (${this.totalBits} bits, ${this.fieldWords} words)`;
  }
}

/* ---------------------------------------------------------------------------
 * Computing a format (bcachefs bkey_format_state: update + done).
 */

/** Keeps the last format state made for its hidden class (src/util/shapes.ts): each lives only for its call. */
const formatShapes = new ShapeKeeper();

export class BkeyFormatState {
  private readonly minHi = new Uint32Array(NR_FIELDS).fill(U32_MAX);
  private readonly minLo = new Uint32Array(NR_FIELDS).fill(U32_MAX);
  private readonly maxHi = new Uint32Array(NR_FIELDS);
  private readonly maxLo = new Uint32Array(NR_FIELDS);
  private readonly seen = new Uint8Array(NR_FIELDS);

  constructor() {
    formatShapes.keep(this);
  }

  addField(i: number, hi: number, lo: number): void {
    if (!this.seen[i] || hi < this.minHi[i]! || (hi === this.minHi[i] && lo < this.minLo[i]!)) {
      this.minHi[i] = hi;
      this.minLo[i] = lo;
    }
    if (!this.seen[i] || hi > this.maxHi[i]! || (hi === this.maxHi[i] && lo > this.maxLo[i]!)) {
      this.maxHi[i] = hi;
      this.maxLo[i] = lo;
    }
    this.seen[i] = 1;
  }

  addNumber(i: number, v: number): void {
    this.addField(i, Math.floor(v / TWO32), v >>> 0);
  }

  /** Add a position given as 5 words. */
  addPos(w: Uint32Array, wi: number): void {
    this.addField(F_INODE, w[wi]!, w[wi + 1]!);
    this.addField(F_OFFSET, w[wi + 2]!, w[wi + 3]!);
    this.addField(F_SNAPSHOT, 0, w[wi + 4]!);
  }

  addKey(p: Uint32Array, pi: number, size: number, version: number): void {
    this.addPos(p, pi);
    this.addField(F_SIZE, 0, size);
    this.addNumber(F_VERSION, version);
  }

  /**
   * The format: per field base = min, bits = bit length of (max - min); then
   * the unused bits up to the next u32 word go to the fields most likely to
   * grow (version, size, snapshot, offset, inode), as bcachefs
   * bch2_bkey_format_done pads fields to use the slack.
   */
  done(): BkeyFormat {
    const bits = new Array<number>(NR_FIELDS).fill(0);
    const baseHi = new Array<number>(NR_FIELDS).fill(0);
    const baseLo = new Array<number>(NR_FIELDS).fill(0);
    let total = 0;
    for (let i = 0; i < NR_FIELDS; i++) {
      if (!this.seen[i]) continue;
      baseHi[i] = this.minHi[i]!;
      baseLo[i] = this.minLo[i]!;
      let dLo = this.maxLo[i]! - this.minLo[i]!;
      let dHi = this.maxHi[i]! - this.minHi[i]!;
      if (dLo < 0) {
        dLo += TWO32;
        dHi -= 1;
      }
      bits[i] = bitLen64(dHi, dLo);
      if (!fieldRangeOk(i, baseHi[i]!, baseLo[i]!, bits[i]!)) {
        /* base + 2^bits would overflow the field: lower the base so the
           range ends at the field's maximum (still <= min, still >= max) */
        const b = bits[i]!;
        const mHi = b > 32 ? 2 ** (b - 32) - 1 : 0;
        const mLo = b >= 32 ? U32_MAX : 2 ** b - 1;
        baseHi[i] = fieldMaxHi(i) - mHi;
        baseLo[i] = U32_MAX - mLo;
      }
      total += bits[i]!;
    }
    let extra = ((total + 31) & ~31) - total;
    for (const i of [F_VERSION, F_SIZE, F_SNAPSHOT, F_OFFSET, F_INODE]) {
      while (extra > 0 && fieldRangeOk(i, baseHi[i]!, baseLo[i]!, bits[i]! + 1)) {
        bits[i]!++;
        extra--;
      }
    }
    return new BkeyFormat(bits, baseHi, baseLo);
  }
}

export interface FormatRangeOpts {
  /** Largest extent size keys will carry (default 0: not an extents btree). */
  sizeMax?: number;
  /** Smallest journal seq keys will carry (default 0). */
  versionMin?: number;
  /** Largest journal seq keys will carry (default versionMin + 2^32 - 1). */
  versionMax?: number;
}

/**
 * Format for a new empty node covering [minKey, maxKey]: every position in the
 * range fits (fields below the first one where min and max differ are given
 * their full width).
 */
export function formatFromRange(minKey: Uint32Array, maxKey: Uint32Array, opts: FormatRangeOpts = {}): BkeyFormat {
  const s = new BkeyFormatState();
  s.addField(F_INODE, minKey[0]!, minKey[1]!);
  s.addField(F_INODE, maxKey[0]!, maxKey[1]!);
  const sameInode = minKey[0] === maxKey[0] && minKey[1] === maxKey[1];
  if (sameInode) {
    s.addField(F_OFFSET, minKey[2]!, minKey[3]!);
    s.addField(F_OFFSET, maxKey[2]!, maxKey[3]!);
  } else {
    s.addField(F_OFFSET, 0, 0);
    s.addField(F_OFFSET, U32_MAX, U32_MAX);
  }
  if (sameInode && minKey[2] === maxKey[2] && minKey[3] === maxKey[3]) {
    s.addField(F_SNAPSHOT, 0, minKey[4]!);
    s.addField(F_SNAPSHOT, 0, maxKey[4]!);
  } else {
    s.addField(F_SNAPSHOT, 0, 0);
    s.addField(F_SNAPSHOT, 0, U32_MAX);
  }
  s.addField(F_SIZE, 0, 0);
  s.addField(F_SIZE, 0, opts.sizeMax ?? 0);
  const vmin = opts.versionMin ?? 0;
  const vmax = Math.min(opts.versionMax ?? vmin + U32_MAX, Number.MAX_SAFE_INTEGER);
  s.addNumber(F_VERSION, vmin);
  s.addNumber(F_VERSION, vmax);
  return s.done();
}

/** A key's fields as formatFromKeys needs them. */
export interface FormatKeyLike {
  p: Uint32Array;
  size: number;
  version: number;
}

/** Smallest format holding every key given (bch2_bkey_format_update + done). */
export function formatFromKeys(keys: Iterable<FormatKeyLike>): BkeyFormat {
  const s = new BkeyFormatState();
  for (const k of keys) s.addKey(k.p, 0, k.size, k.version);
  return s.done();
}

/** The format that packs nothing (every key stays unpacked). */
export function formatNone(): BkeyFormat {
  return new BkeyFormat([0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]);
}

/* ---------------------------------------------------------------------------
 * Serialization (inside the node header; see the layout above).
 */

export function formatEncode(f: BkeyFormat, dst: Uint8Array, off: number): void {
  const dv = new DataView(dst.buffer, dst.byteOffset + off, FORMAT_BYTES);
  for (let i = 0; i < FORMAT_BYTES; i++) dst[off + i] = 0;
  for (let i = 0; i < NR_FIELDS; i++) {
    dv.setUint8(FMT_OFF_BITS + i, f.bits[i]!);
    dv.setUint32(FMT_OFF_BASE + i * 8, f.baseLo[i]!, true);
    dv.setUint32(FMT_OFF_BASE + i * 8 + 4, f.baseHi[i]!, true);
  }
}

/* formatDecode's fields on their way into a BkeyFormat (which copies them). */
const decodeBits = new Uint32Array(NR_FIELDS);
const decodeHi = new Uint32Array(NR_FIELDS);
const decodeLo = new Uint32Array(NR_FIELDS);

function u32le(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

/*
 * Decoded formats by their encoding. Every node read decodes its header's
 * format, and a node's format never changes while the node lives (a rewrite
 * makes a new node): a node read again after eviction finds its format
 * here (decoding and validating one cost ~3 us, a tenth of a cold read's
 * CPU). One format per hash slot, checked word by word; BkeyFormat is
 * immutable, so nodes share the object.
 */
const FORMAT_CACHE_SLOTS = 4096;
const FORMAT_WORDS = FORMAT_BYTES / 4;
const formatCacheWords = new Uint32Array(FORMAT_CACHE_SLOTS * FORMAT_WORDS);
const formatCache: (BkeyFormat | undefined)[] = new Array<BkeyFormat | undefined>(FORMAT_CACHE_SLOTS);
const formatDecodeWords = new Uint32Array(FORMAT_WORDS);
/** Formats found in the decode cache / decoded (all stores of the process). */
export const formatDecodeCounters = { hits: 0, decodes: 0 };

/** Decode and validate; returns the format or a string saying what is wrong. */
export function formatDecode(src: Uint8Array, off: number): BkeyFormat | string {
  if (off + FORMAT_BYTES > src.length) throw new RangeError(`formatDecode: ${FORMAT_BYTES} bytes at ${off} run past the buffer`);
  const w = formatDecodeWords;
  let h = 0x811c9dc5;
  for (let i = 0; i < FORMAT_WORDS; i++) {
    const x = u32le(src, off + 4 * i);
    w[i] = x;
    h = Math.imul(h ^ x, 0x01000193);
  }
  // (the multiply carries bits only upward: mix the high ones down before taking the low ones)
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  const slot = (h >>> 0) & (FORMAT_CACHE_SLOTS - 1);
  const cached = formatCache[slot];
  if (cached !== undefined) {
    const base = slot * FORMAT_WORDS;
    let same = true;
    for (let i = 0; i < FORMAT_WORDS && same; i++) same = formatCacheWords[base + i] === w[i];
    if (same) {
      formatDecodeCounters.hits++;
      return cached;
    }
  }
  const f = formatDecodeUncached(src, off);
  if (typeof f !== 'string') {
    formatDecodeCounters.decodes++;
    formatCache[slot] = f;
    formatCacheWords.set(w, slot * FORMAT_WORDS);
  }
  return f;
}

function formatDecodeUncached(src: Uint8Array, off: number): BkeyFormat | string {
  const bits = decodeBits, hi = decodeHi, lo = decodeLo;
  for (let i = 0; i < NR_FIELDS; i++) {
    bits[i] = src[off + FMT_OFF_BITS + i]!;
    lo[i] = u32le(src, off + FMT_OFF_BASE + i * 8);
    hi[i] = u32le(src, off + FMT_OFF_BASE + i * 8 + 4);
  }
  for (let i = NR_FIELDS; i < FMT_OFF_BASE; i++) if (src[off + i] !== 0) return `key format: reserved byte ${i} not zero`;
  const f = new BkeyFormat(bits, hi, lo);
  const err = f.validate();
  return err === null ? f : `key format: ${err}`;
}

/* ---------------------------------------------------------------------------
 * Bit string access. `w0` is the word index where the packed field bits start;
 * bit 0 is the most significant bit of word w0. Values of up to 32 bits.
 */

export function readBits(d: Uint32Array, w0: number, bitPos: number, n: number): number {
  if (n === 0) return 0;
  const wi = w0 + (bitPos >>> 5);
  const off = bitPos & 31;
  if (off + n <= 32) return ((d[wi]! << off) >>> 0) >>> (32 - n);
  const firstBits = 32 - off;
  const restBits = n - firstBits;
  const first = d[wi]! & ((1 << firstBits) - 1);
  return ((first << restBits) | (d[wi + 1]! >>> (32 - restBits))) >>> 0;
}

/** OR `v` (< 2^n) into the bit string; the target bits must be zero. */
export function writeBits(d: Uint32Array, w0: number, bitPos: number, n: number, v: number): void {
  if (n === 0) return;
  const wi = w0 + (bitPos >>> 5);
  const off = bitPos & 31;
  if (off + n <= 32) {
    d[wi] = d[wi]! | (v << (32 - off - n));
    return;
  }
  const restBits = off + n - 32;
  d[wi] = d[wi]! | (v >>> restBits);
  d[wi + 1] = d[wi + 1]! | (v << (32 - restBits));
}

/*
 * Field arithmetic. Hot paths work on locals (hi/lo halves) in straight-line
 * code: V8 keeps them in registers; a shared two-word result array costs
 * several times more.
 */

/** Does field i's value (hi, lo) fit the format (base <= value <= base + 2^bits - 1)? */
function fieldFits(v: Uint32Array, i: number, hi: number, lo: number): boolean {
  const bLo = v[V.BASE_LO + i]!;
  let dLo = lo - bLo;
  let dHi = hi - v[V.BASE_HI + i]!;
  if (dLo < 0) {
    dLo += 0x1_0000_0000;
    dHi -= 1;
  }
  if (dHi < 0) return false;
  const mHi = v[V.MAX_HI + i]!;
  return dHi < mHi || (dHi === mHi && dLo <= v[V.MAX_LO + i]!);
}

/** OR a field's relative value (hi, lo) of b bits at bit offset off. */
function putField(d: Uint32Array, w0: number, off: number, b: number, hi: number, lo: number): void {
  if (b > 32) {
    writeBits(d, w0, off, b - 32, hi);
    writeBits(d, w0, off + b - 32, 32, lo);
  } else {
    writeBits(d, w0, off, b, lo);
  }
}

/** Unpack 64-bit field i of packed bits at d[w0..] into out[oi] (hi), out[oi + 1] (lo). */
function unpackField64(v: Uint32Array, d: Uint32Array, w0: number, i: number, out: Uint32Array, oi: number): void {
  const b = v[V.BITS + i]!;
  const off = v[V.BIT_OFFSET + i]!;
  let hi = 0;
  let lo: number;
  if (b > 32) {
    hi = readBits(d, w0, off, b - 32);
    lo = readBits(d, w0, off + b - 32, 32);
  } else {
    lo = readBits(d, w0, off, b);
  }
  lo += v[V.BASE_LO + i]!;
  if (lo >= 0x1_0000_0000) {
    lo -= 0x1_0000_0000;
    hi += 1;
  }
  out[oi] = hi + v[V.BASE_HI + i]!;
  out[oi + 1] = lo;
}

/** Do these fields fit the format? */
export function formatKeyFits(f: BkeyFormat, p: Uint32Array, pi: number, size: number, version: number): boolean {
  const v = f.v;
  return (
    fieldFits(v, Fi.INODE, p[pi]!, p[pi + 1]!) &&
    fieldFits(v, Fi.OFFSET, p[pi + 2]!, p[pi + 3]!) &&
    fieldFits(v, Fi.SNAPSHOT, 0, p[pi + 4]!) &&
    fieldFits(v, Fi.SIZE, 0, size) &&
    fieldFits(v, Fi.VERSION, Math.floor(version / 0x1_0000_0000), version >>> 0)
  );
}

/** Does a version (journal seq) fit the format's version field? (formatKeyFits's last test, alone.) */
export function formatVersionFits(f: BkeyFormat, version: number): boolean {
  return fieldFits(f.v, Fi.VERSION, Math.floor(version / 0x1_0000_0000), version >>> 0);
}

/**
 * Pack the fields into d[w0 .. w0 + fieldWords) (overwritten). Returns false,
 * writing nothing, if they do not fit.
 */
export function formatPackFields(f: BkeyFormat, p: Uint32Array, pi: number, size: number, version: number, d: Uint32Array, w0: number): boolean {
  const v = f.v;
  let iLo = p[pi + 1]! - v[V.BASE_LO + Fi.INODE]!;
  let iHi = p[pi]! - v[V.BASE_HI + Fi.INODE]!;
  if (iLo < 0) {
    iLo += 0x1_0000_0000;
    iHi -= 1;
  }
  let oLo = p[pi + 3]! - v[V.BASE_LO + Fi.OFFSET]!;
  let oHi = p[pi + 2]! - v[V.BASE_HI + Fi.OFFSET]!;
  if (oLo < 0) {
    oLo += 0x1_0000_0000;
    oHi -= 1;
  }
  const sn = p[pi + 4]! - v[V.BASE_LO + Fi.SNAPSHOT]!;
  const sz = size - v[V.BASE_LO + Fi.SIZE]!;
  const vr = version - (v[V.BASE_HI + Fi.VERSION]! * 0x1_0000_0000 + v[V.BASE_LO + Fi.VERSION]!);
  const vHi = Math.floor(vr / 0x1_0000_0000), vLo = vr >>> 0;
  const imHi = v[V.MAX_HI + Fi.INODE]!, omHi = v[V.MAX_HI + Fi.OFFSET]!, vmHi = v[V.MAX_HI + Fi.VERSION]!;
  if (
    !(iHi >= 0 && (iHi < imHi || (iHi === imHi && iLo <= v[V.MAX_LO + Fi.INODE]!))) ||
    !(oHi >= 0 && (oHi < omHi || (oHi === omHi && oLo <= v[V.MAX_LO + Fi.OFFSET]!))) ||
    !(sn >= 0 && sn <= v[V.MAX_LO + Fi.SNAPSHOT]!) ||
    !(sz >= 0 && sz <= v[V.MAX_LO + Fi.SIZE]!) ||
    !(vr >= 0 && (vHi < vmHi || (vHi === vmHi && vLo <= v[V.MAX_LO + Fi.VERSION]!)))
  )
    return false;
  const n = f.fieldWords;
  for (let i = 0; i < n; i++) d[w0 + i] = 0;
  putField(d, w0, v[V.BIT_OFFSET + Fi.INODE]!, v[V.BITS + Fi.INODE]!, iHi, iLo);
  putField(d, w0, v[V.BIT_OFFSET + Fi.OFFSET]!, v[V.BITS + Fi.OFFSET]!, oHi, oLo);
  writeBits(d, w0, v[V.BIT_OFFSET + Fi.SNAPSHOT]!, v[V.BITS + Fi.SNAPSHOT]!, sn);
  writeBits(d, w0, v[V.BIT_OFFSET + Fi.SIZE]!, v[V.BITS + Fi.SIZE]!, sz);
  putField(d, w0, v[V.BIT_OFFSET + Fi.VERSION]!, v[V.BITS + Fi.VERSION]!, vHi, vLo);
  return true;
}

/**
 * Pack a position alone into out[oi .. oi + posWords) (bch2_bkey_pack_pos):
 * true only if it is exactly representable.
 */
export function formatPackPos(f: BkeyFormat, p: Uint32Array, pi: number, out: Uint32Array, oi: number): boolean {
  return formatPackPosLossy(f, p, pi, out, oi) === Pk.EXACT;
}

/* The slow path of formatPackPosLossy keeps per-field results here. */
const R = new Uint32Array(2);
const HI = 0;
const LO = 1;

function writeRel(f: BkeyFormat, d: Uint32Array, w0: number, i: number): void {
  putField(d, w0, f.v[V.BIT_OFFSET + i]!, f.v[V.BITS + i]!, R[HI]!, R[LO]!);
}

/** formatPackPosLossy results. */
export const PACK_EXACT = 0;
/** Not representable: out holds the greatest representable position below it. */
export const PACK_FLOOR = 1;
/** Below every representable position: out is zero. */
export const PACK_BELOW = 2;

/** Field i relative to its base into R: -1 below the base, 1 beyond the width, 0 fits. */
function fieldRelCmp(f: BkeyFormat, i: number, hi: number, lo: number): number {
  let dLo = lo - f.v[V.BASE_LO + i]!;
  let dHi = hi - f.v[V.BASE_HI + i]!;
  if (dLo < 0) {
    dLo += TWO32;
    dHi -= 1;
  }
  if (dHi < 0) return -1;
  const mHi = f.v[V.MAX_HI + i]!;
  if (dHi > mHi || (dHi === mHi && dLo > f.v[V.MAX_LO + i]!)) return 1;
  R[HI] = dHi;
  R[LO] = dLo;
  return 0;
}

/**
 * Pack a search position into out[oi .. oi + posWords), lossily
 * (bch2_bkey_pack_pos_lossy). PACK_EXACT: exact. PACK_FLOOR: the position is
 * not representable and out is the greatest representable position below it,
 * so for any packed key K: K >= search iff K > out. PACK_BELOW: every packed
 * key is above the search. Bits after the position bits are zero.
 */
export function formatPackPosLossy(f: BkeyFormat, p: Uint32Array, pi: number, out: Uint32Array, oi: number): number {
  const v = f.v;
  const pw = f.posWords;
  for (let i = 0; i < pw; i++) out[oi + i] = 0;
  /* value - base per field, then one range check for all three */
  let iLo = p[pi + 1]! - v[V.BASE_LO + Fi.INODE]!;
  let iHi = p[pi]! - v[V.BASE_HI + Fi.INODE]!;
  if (iLo < 0) {
    iLo += 0x1_0000_0000;
    iHi -= 1;
  }
  let oLo = p[pi + 3]! - v[V.BASE_LO + Fi.OFFSET]!;
  let oHi = p[pi + 2]! - v[V.BASE_HI + Fi.OFFSET]!;
  if (oLo < 0) {
    oLo += 0x1_0000_0000;
    oHi -= 1;
  }
  const sn = p[pi + 4]! - v[V.BASE_LO + Fi.SNAPSHOT]!;
  const imHi = v[V.MAX_HI + Fi.INODE]!, omHi = v[V.MAX_HI + Fi.OFFSET]!;
  if (
    iHi >= 0 && (iHi < imHi || (iHi === imHi && iLo <= v[V.MAX_LO + Fi.INODE]!)) &&
    oHi >= 0 && (oHi < omHi || (oHi === omHi && oLo <= v[V.MAX_LO + Fi.OFFSET]!)) &&
    sn >= 0 && sn <= v[V.MAX_LO + Fi.SNAPSHOT]!
  ) {
    putField(out, oi, v[V.BIT_OFFSET + Fi.INODE]!, v[V.BITS + Fi.INODE]!, iHi, iLo);
    putField(out, oi, v[V.BIT_OFFSET + Fi.OFFSET]!, v[V.BITS + Fi.OFFSET]!, oHi, oLo);
    writeBits(out, oi, v[V.BIT_OFFSET + Fi.SNAPSHOT]!, v[V.BITS + Fi.SNAPSHOT]!, sn);
    return Pk.EXACT;
  }
  return packPosInexact(f, p, pi, out, oi);
}

/** formatPackPosLossy when the position is not representable (out is zero). */
function packPosInexact(f: BkeyFormat, p: Uint32Array, pi: number, out: Uint32Array, oi: number): number {
  let field = Fi.INODE;
  let r = fieldRelCmp(f, Fi.INODE, p[pi]!, p[pi + 1]!);
  if (r === 0) {
    writeRel(f, out, oi, Fi.INODE);
    field = Fi.OFFSET;
    r = fieldRelCmp(f, Fi.OFFSET, p[pi + 2]!, p[pi + 3]!);
    if (r === 0) {
      writeRel(f, out, oi, Fi.OFFSET);
      field = Fi.SNAPSHOT;
      r = fieldRelCmp(f, Fi.SNAPSHOT, 0, p[pi + 4]!);
      if (r === 0) {
        writeRel(f, out, oi, Fi.SNAPSHOT);
        return Pk.EXACT;
      }
    }
  }
  if (r > 0) {
    /* beyond this field's range: this and the later fields at their maximum */
    for (let b = f.v[V.BIT_OFFSET + field]!, n = f.posBits - b; n > 0; ) {
      const c = n < 32 ? n : 32;
      writeBits(out, oi, b, c, c === 32 ? U32_MAX : 2 ** c - 1);
      b += c;
      n -= c;
    }
    return Pk.FLOOR;
  }
  /* below this field's base: decrement the prefix (the rest is zero, so it becomes all ones) */
  if (f.posBits === 0) return Pk.BELOW;
  let w = oi + ((f.posBits - 1) >>> 5);
  let sub = 2 ** (31 - ((f.posBits - 1) & 31));
  for (; w >= oi; w--) {
    const v = out[w]!;
    if (v >= sub) {
      out[w] = v - sub;
      return Pk.FLOOR;
    }
    out[w] = v - sub + TWO32;
    sub = 1;
  }
  for (let i = 0; i < f.posWords; i++) out[oi + i] = 0;
  return Pk.BELOW;
}

/** Unpack the position of packed fields at d[w0..] into out[oi .. oi+5). */
export function formatUnpackPos(f: BkeyFormat, d: Uint32Array, w0: number, out: Uint32Array, oi: number): void {
  const v = f.v;
  unpackField64(v, d, w0, Fi.INODE, out, oi);
  unpackField64(v, d, w0, Fi.OFFSET, out, oi + 2);
  out[oi + 4] = readBits(d, w0, v[V.BIT_OFFSET + Fi.SNAPSHOT]!, v[V.BITS + Fi.SNAPSHOT]!) + v[V.BASE_LO + Fi.SNAPSHOT]!;
}

export function formatUnpackSize(f: BkeyFormat, d: Uint32Array, w0: number): number {
  const v = f.v;
  return readBits(d, w0, v[V.BIT_OFFSET + Fi.SIZE]!, v[V.BITS + Fi.SIZE]!) + v[V.BASE_LO + Fi.SIZE]!;
}

export function formatUnpackVersion(f: BkeyFormat, d: Uint32Array, w0: number): number {
  const v = f.v;
  const b = v[V.BITS + Fi.VERSION]!;
  const off = v[V.BIT_OFFSET + Fi.VERSION]!;
  let hi = 0;
  let lo: number;
  if (b > 32) {
    hi = readBits(d, w0, off, b - 32);
    lo = readBits(d, w0, off + b - 32, 32);
  } else {
    lo = readBits(d, w0, off, b);
  }
  return (hi + v[V.BASE_HI + Fi.VERSION]!) * 0x1_0000_0000 + lo + v[V.BASE_LO + Fi.VERSION]!;
}

/**
 * Compare the positions of two packed keys in the same format: the first
 * posBits bits, word by word (bcachefs bkey_cmp_packed).
 */
export function packedPosCmp(f: BkeyFormat, a: Uint32Array, ai: number, b: Uint32Array, bi: number): number {
  const full = f.posFullWords;
  for (let i = 0; i < full; i++) {
    const x = a[ai + i]!, y = b[bi + i]!;
    if (x !== y) return x < y ? -1 : 1;
  }
  const rem = f.posRemBits;
  if (rem !== 0) {
    const x = a[ai + full]! >>> (32 - rem), y = b[bi + full]! >>> (32 - rem);
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

/**
 * The summary of the packed position at d[w0..] (see BkeyFormat.sumMul):
 * exact formats compare summaries instead of words; others compare words
 * only when the summaries are equal.
 */
export function packedPosSummary(f: BkeyFormat, d: Uint32Array, w0: number): number {
  return d[w0]! * f.sumMul + ((d[w0 + f.sumWord]! >>> f.sumShift) >>> f.sumShift2);
}

/**
 * Exact formats (sumExact): the summary of an unpacked position straight from
 * its words, without packing it; -1 if the format cannot represent the
 * position (the caller packs it lossily instead). Doubles hold every
 * intermediate exactly: each in-range field is below 2^53, and an
 * out-of-range one stays out of range however it rounds.
 */
export function formatPosSummary(f: BkeyFormat, p: Uint32Array, pi: number): number {
  const v = f.v;
  const ri = (p[pi]! - v[V.BASE_HI + Fi.INODE]!) * 0x1_0000_0000 + (p[pi + 1]! - v[V.BASE_LO + Fi.INODE]!);
  const ro = (p[pi + 2]! - v[V.BASE_HI + Fi.OFFSET]!) * 0x1_0000_0000 + (p[pi + 3]! - v[V.BASE_LO + Fi.OFFSET]!);
  const rs = p[pi + 4]! - v[V.BASE_LO + Fi.SNAPSHOT]!;
  if (!(ri >= 0 && ri <= f.sumMaxInode && ro >= 0 && ro <= f.sumMaxOffset && rs >= 0 && rs <= f.sumMaxSnapshot)) return -1;
  return (ri * f.sumMulOffset + ro) * f.sumMulSnapshot + rs;
}
