// SPDX-License-Identifier: GPL-2.0-only
/*
 * Keys (bcachefs bkey / bkey_i).
 *
 * BkeyI is the unpacked, allocated form used outside a node: by updates, the
 * journal, splits. Inside a node keys live as bytes (bset.ts) and are read
 * through handles.
 *
 * Every key, packed or not, starts with one header word (an LE u32):
 *   bits  0..15  u64s   total key size in u64s (header + fields + value + pad)
 *   bits 16..23  type   KEY_TYPES number
 *   bits 24..26  pad    zero bytes after the value up to the u64 boundary
 *   bit  27      packed 1: fields packed in the node's format (bkey-format.ts)
 *   bits 28..31  zero
 * The value's length is u64s * 8 - valueOffset - pad; values have any byte
 * length and start on a u32 boundary right after the fields.
 *
 * Unpacked key (the form the journal carries; bkeyEncode/bkeyDecode), u32 words:
 *   0     header (packed = 0)
 *   1..5  position: inode hi, inode lo, offset hi, offset lo, snapshot
 *   6     size
 *   7..8  version hi, version lo (journal seq, < 2^53)
 *   9..   value (byte offset 36), then zero pad to a multiple of 8 bytes
 * Packed key: header, then format.fieldWords words of packed fields, then the
 * value at byte 4 + 4 * fieldWords.
 *
 * Every u32 is little-endian on disk; the u64 fields are split into two u32
 * words, most significant first, so that positions compare word by word.
 */

import { BPOS_WORDS, U32_MAX, wordsCmp, wordsToText } from './bpos.js';

/* ---------------------------------------------------------------------------
 * Key types: one table; numbers, names and toText derive from it.
 */

/** The table: number = index. */
export const KEY_TYPE_TABLE = [
  { name: 'deleted', nr: 0 }, // whiteout: hides older keys at its position
  { name: 'value', nr: 1 }, // a normal key with a value
  { name: 'extent', nr: 2 }, // key at the END of an extent; size = extent length
  { name: 'btree_ptr', nr: 3 }, // interior node pointer; value = BtreePtr
] as const;

export type KeyTypeName = (typeof KEY_TYPE_TABLE)[number]['name'];

/** Name -> number, derived from the table: KEY_TYPES.deleted === 0. */
export const KEY_TYPES = Object.freeze(Object.fromEntries(KEY_TYPE_TABLE.map((t) => [t.name, t.nr])) as { readonly [K in KeyTypeName]: number });
/** Alias of KEY_TYPES. */
export const KEY_TYPE = KEY_TYPES;

KEY_TYPE_TABLE.forEach((t, i) => {
  if (t.nr !== i) throw new Error(`KEY_TYPE_TABLE: ${t.name} has nr ${t.nr} at index ${i}`);
});

export const KEY_TYPE_NR = KEY_TYPE_TABLE.length;

export function keyTypeName(type: number): string {
  return KEY_TYPE_TABLE[type]?.name ?? `invalid_type_${type}`;
}

/* ---------------------------------------------------------------------------
 * Header word.
 */

export const KEY_HDR_U64S_MASK = 0xffff;
export const KEY_HDR_TYPE_SHIFT = 16;
export const KEY_HDR_PAD_SHIFT = 24;
export const KEY_HDR_PACKED = 1 << 27;
export const KEY_HDR_RESERVED_MASK = 0xf0000000;
export const KEY_U64S_MAX = 0xffff;

export function keyHdr(u64s: number, type: number, pad: number, packed: boolean): number {
  return (u64s | (type << KEY_HDR_TYPE_SHIFT) | (pad << KEY_HDR_PAD_SHIFT) | (packed ? KEY_HDR_PACKED : 0)) >>> 0;
}

export function keyHdrU64s(h: number): number {
  return h & KEY_HDR_U64S_MASK;
}

export function keyHdrType(h: number): number {
  return (h >>> KEY_HDR_TYPE_SHIFT) & 0xff;
}

export function keyHdrPad(h: number): number {
  return (h >>> KEY_HDR_PAD_SHIFT) & 7;
}

export function keyHdrPacked(h: number): boolean {
  return (h & KEY_HDR_PACKED) !== 0;
}

/** u32 words of fields in an unpacked key (position 5, size 1, version 2). */
export const UNPACKED_FIELD_WORDS = 8;
/** Byte offset of the value in an unpacked key. */
export const UNPACKED_VALUE_OFFSET = 4 + 4 * UNPACKED_FIELD_WORDS;
export const UNPACKED_W_POS = 1;
export const UNPACKED_W_SIZE = 6;
export const UNPACKED_W_VERSION_HI = 7;
export const UNPACKED_W_VERSION_LO = 8;

/** Bytes of a key whose value starts at valueOffset: rounded up to u64s. */
export function keyBytesFor(valueOffset: number, valueBytes: number): number {
  return (valueOffset + valueBytes + 7) & ~7;
}

/* ---------------------------------------------------------------------------
 * BkeyI.
 */

export interface BkeyI {
  type: number;
  /** 5 words: inode hi, inode lo, offset hi, offset lo, snapshot. */
  p: Uint32Array;
  /** Extent size (u32); 0 for other key types. */
  size: number;
  /** Journal seq of the commit that wrote the key (integer < 2^53). */
  version: number;
  value: Uint8Array;
}

const EMPTY = new Uint8Array(0);

export function bkeyNew(type: number, p: Uint32Array, opts: { pi?: number; size?: number; version?: number; value?: Uint8Array } = {}): BkeyI {
  const pi = opts.pi ?? 0;
  return {
    type,
    p: p.slice(pi, pi + BPOS_WORDS),
    size: opts.size ?? 0,
    version: opts.version ?? 0,
    value: opts.value ?? EMPTY,
  };
}

/** A normal key with a value. */
export function bkeyValue(p: Uint32Array, value: Uint8Array, version = 0): BkeyI {
  return bkeyNew(KEY_TYPE.value, p, { value, version });
}

/** A whiteout (deletion) at p. */
export function bkeyWhiteout(p: Uint32Array, version = 0, size = 0): BkeyI {
  return bkeyNew(KEY_TYPE.deleted, p, { version, size });
}

/** An extent ending at pEnd of `size` units. */
export function bkeyExtent(pEnd: Uint32Array, size: number, value: Uint8Array, version = 0): BkeyI {
  return bkeyNew(KEY_TYPE.extent, pEnd, { size, value, version });
}

export function bkeyBtreePtr(pMax: Uint32Array, ptr: BtreePtr, version = 0): BkeyI {
  return bkeyNew(KEY_TYPE.btree_ptr, pMax, { value: btreePtrEncode(ptr), version });
}

export function bkeyIsWhiteout(k: BkeyI): boolean {
  return k.type === KEY_TYPE.deleted;
}

export function bkeyCmp(a: BkeyI, b: BkeyI): number {
  return wordsCmp(a.p, 0, b.p, 0);
}

/** Largest value a key may carry in a node of this size (the unpacked key is at most 1/8 of the node). */
export function maxValueBytesForNode(nodeSizeBytes: number): number {
  return Math.min(nodeSizeBytes / 8, KEY_U64S_MAX * 8) - UNPACKED_VALUE_OFFSET;
}

/** Checks a BkeyI's fields; null if fine, else what is wrong. */
export function bkeyInvalid(k: BkeyI): string | null {
  if (!Number.isInteger(k.type) || k.type < 0 || k.type >= KEY_TYPE_NR) return `bad key type ${k.type}`;
  if (!(k.p instanceof Uint32Array) || k.p.length < BPOS_WORDS) return 'position must be a Uint32Array of 5 words';
  if (!Number.isInteger(k.size) || k.size < 0 || k.size > U32_MAX) return `bad size ${k.size}`;
  if (!Number.isSafeInteger(k.version) || k.version < 0) return `bad version ${k.version}`;
  if (!(k.value instanceof Uint8Array)) return 'value must be a Uint8Array';
  if (keyBytesFor(UNPACKED_VALUE_OFFSET, k.value.length) > KEY_U64S_MAX * 8) return `value of ${k.value.length} bytes too large`;
  if (k.type === KEY_TYPE.btree_ptr && k.value.length !== BTREE_PTR_VALUE_BYTES) return `btree_ptr value must be ${BTREE_PTR_VALUE_BYTES} bytes, got ${k.value.length}`;
  if (k.type === KEY_TYPE.deleted && k.value.length !== 0) return 'whiteout with a value';
  return null;
}

/* ---------------------------------------------------------------------------
 * Unpacked encoding (journal, tests).
 */

export function bkeyEncodedBytes(k: BkeyI): number {
  return keyBytesFor(UNPACKED_VALUE_OFFSET, k.value.length);
}

/* bkeyEncode's view of the buffer it last wrote to: a commit encodes all its keys into one buffer, through one view. */
let encodeDst: Uint8Array | null = null;
let encodeView: DataView | null = null;

/** Write k unpacked at dst[off..]; returns the bytes written (a multiple of 8). */
export function bkeyEncode(k: BkeyI, dst: Uint8Array, off: number): number {
  const bytes = bkeyEncodedBytes(k);
  const vlen = k.value.length;
  const pad = bytes - UNPACKED_VALUE_OFFSET - vlen;
  if (off < 0 || off + bytes > dst.length) throw new RangeError(`bkeyEncode: ${bytes} bytes at ${off} do not fit in ${dst.length}`);
  if (encodeDst !== dst) {
    encodeView = new DataView(dst.buffer, dst.byteOffset, dst.byteLength);
    encodeDst = dst;
  }
  const dv = encodeView!;
  dv.setUint32(off, keyHdr(bytes >>> 3, k.type, pad, false), true);
  for (let i = 0; i < BPOS_WORDS; i++) dv.setUint32(off + 4 * (UNPACKED_W_POS + i), k.p[i]!, true);
  dv.setUint32(off + 4 * UNPACKED_W_SIZE, k.size, true);
  dv.setUint32(off + 4 * UNPACKED_W_VERSION_HI, Math.floor(k.version / 0x1_0000_0000), true);
  dv.setUint32(off + 4 * UNPACKED_W_VERSION_LO, k.version >>> 0, true);
  dst.set(k.value, off + UNPACKED_VALUE_OFFSET);
  dst.fill(0, off + UNPACKED_VALUE_OFFSET + vlen, off + bytes);
  return bytes;
}

/** null if src[off .. off + avail) starts with a well-formed unpacked key, else why not. */
export function bkeyDecodeCheck(src: Uint8Array, off: number, avail: number): string | null {
  if (avail < UNPACKED_VALUE_OFFSET) return `key truncated: ${avail} bytes`;
  const dv = new DataView(src.buffer, src.byteOffset + off, UNPACKED_VALUE_OFFSET);
  const hdr = dv.getUint32(0, true);
  const bytes = keyHdrU64s(hdr) * 8;
  if (keyHdrPacked(hdr)) return 'packed key where an unpacked key was expected';
  if (hdr & KEY_HDR_RESERVED_MASK) return 'reserved header bits set';
  if (bytes < keyBytesFor(UNPACKED_VALUE_OFFSET, 0) || bytes > avail) return `bad key size ${bytes} (have ${avail})`;
  if (bytes - UNPACKED_VALUE_OFFSET - keyHdrPad(hdr) < 0) return 'bad pad';
  if (keyHdrType(hdr) >= KEY_TYPE_NR) return `bad key type ${keyHdrType(hdr)}`;
  const vhi = dv.getUint32(4 * UNPACKED_W_VERSION_HI, true);
  if (vhi >= 0x200000) return 'version >= 2^53';
  return null;
}

/** Read an unpacked key (the value is copied). The caller checked it with bkeyDecodeCheck. */
export function bkeyDecode(src: Uint8Array, off: number): BkeyI {
  const dv = new DataView(src.buffer, src.byteOffset + off);
  const hdr = dv.getUint32(0, true);
  const bytes = keyHdrU64s(hdr) * 8;
  const vlen = bytes - UNPACKED_VALUE_OFFSET - keyHdrPad(hdr);
  const p = new Uint32Array(BPOS_WORDS);
  for (let i = 0; i < BPOS_WORDS; i++) p[i] = dv.getUint32(4 * (UNPACKED_W_POS + i), true);
  return {
    type: keyHdrType(hdr),
    p,
    size: dv.getUint32(4 * UNPACKED_W_SIZE, true),
    version: dv.getUint32(4 * UNPACKED_W_VERSION_HI, true) * 0x1_0000_0000 + dv.getUint32(4 * UNPACKED_W_VERSION_LO, true),
    value: src.slice(off + UNPACKED_VALUE_OFFSET, off + UNPACKED_VALUE_OFFSET + vlen),
  };
}

/* ---------------------------------------------------------------------------
 * Btree pointer value (type btree_ptr). The key's own position is the child's
 * max key. Layout (BTREE_PTR_VALUE_BYTES = 36, LE):
 *   0   u32     bucket
 *   4   u32     seq lo
 *   8   u32     seq hi (seq < 2^52: the child's random node seq, its hash value)
 *   12  u32     bits 0-7: level of the child; bits 8-31: how far the child
 *               was written as of this pointer, in 512-byte sectors (bcachefs
 *               btree_ptr_v2.sectors_written; 0: not known, as in pointers
 *               written before it was kept). A read of the child fails
 *               unless its bsets reach that far.
 *   16  u32[5]  child's min key (words, most significant first)
 */

export interface BtreePtr {
  bucket: number;
  seq: number;
  level: number;
  minKey: Uint32Array;
  /** Sectors (512 B) of the child on disk as of this pointer; 0 or absent: not known. */
  sectorsWritten?: number;
}

/** The unit of BtreePtr.sectorsWritten. */
export const PTR_SECTOR_BYTES = 512;
/** Largest sectorsWritten a pointer holds (24 bits: 8 GiB, past any node size). */
export const PTR_SECTORS_MAX = 0xff_ffff;
const PTR_LEVEL_MASK = 0xff;
const PTR_SECTORS_SHIFT = 8;

export const BTREE_PTR_VALUE_BYTES = 36;
const PTR_OFF_BUCKET = 0;
const PTR_OFF_SEQ_LO = 4;
const PTR_OFF_SEQ_HI = 8;
const PTR_OFF_LEVEL = 12;
const PTR_OFF_MIN_KEY = 16;
export const NODE_SEQ_MAX = 2 ** 52 - 1;

export function btreePtrEncode(ptr: BtreePtr, dst = new Uint8Array(BTREE_PTR_VALUE_BYTES), off = 0): Uint8Array {
  if (!Number.isInteger(ptr.seq) || ptr.seq < 0 || ptr.seq > NODE_SEQ_MAX) throw new RangeError(`btree_ptr seq ${ptr.seq} not a 52-bit integer`);
  const dv = new DataView(dst.buffer, dst.byteOffset + off, BTREE_PTR_VALUE_BYTES);
  dv.setUint32(PTR_OFF_BUCKET, ptr.bucket, true);
  dv.setUint32(PTR_OFF_SEQ_LO, ptr.seq >>> 0, true);
  dv.setUint32(PTR_OFF_SEQ_HI, Math.floor(ptr.seq / 0x1_0000_0000), true);
  const sectors = ptr.sectorsWritten ?? 0;
  if (!Number.isInteger(ptr.level) || ptr.level < 0 || ptr.level > PTR_LEVEL_MASK) throw new RangeError(`btree_ptr level ${ptr.level} outside [0, ${PTR_LEVEL_MASK}]`);
  if (!Number.isInteger(sectors) || sectors < 0 || sectors > PTR_SECTORS_MAX) throw new RangeError(`btree_ptr sectors written ${sectors} outside [0, ${PTR_SECTORS_MAX}]`);
  dv.setUint32(PTR_OFF_LEVEL, (ptr.level | (sectors << PTR_SECTORS_SHIFT)) >>> 0, true);
  for (let i = 0; i < BPOS_WORDS; i++) dv.setUint32(PTR_OFF_MIN_KEY + 4 * i, ptr.minKey[i]!, true);
  return dst;
}

/** Decode a pointer value; into `out` (no allocation) when given. */
export function btreePtrDecode<T extends BtreePtr = BtreePtr>(value: Uint8Array, out?: T): T {
  return btreePtrDecodeAt(value, 0, out);
}

/** Decode a pointer value stored at buf[off..] (e.g. inside a node's data), into `out` when given. */
export function btreePtrDecodeAt<T extends BtreePtr = BtreePtr>(buf: Uint8Array, off: number, out?: T): T {
  const r = (out ?? { bucket: 0, seq: 0, level: 0, minKey: new Uint32Array(BPOS_WORDS), sectorsWritten: 0 }) as T;
  r.bucket = u32At(buf, off + PTR_OFF_BUCKET);
  r.seq = u32At(buf, off + PTR_OFF_SEQ_HI) * 0x1_0000_0000 + u32At(buf, off + PTR_OFF_SEQ_LO);
  const lw = u32At(buf, off + PTR_OFF_LEVEL);
  r.level = lw & PTR_LEVEL_MASK;
  r.sectorsWritten = lw >>> PTR_SECTORS_SHIFT;
  for (let i = 0; i < BPOS_WORDS; i++) r.minKey[i] = u32At(buf, off + PTR_OFF_MIN_KEY + 4 * i);
  return r;
}

function u32At(b: Uint8Array, off: number): number {
  return (b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16) | (b[off + 3]! << 24)) >>> 0;
}

/** The child's seq straight from a pointer value (cache hash lookups); no allocation. */
export function btreePtrSeq(value: Uint8Array, off = 0): number {
  return u32At(value, off + PTR_OFF_SEQ_HI) * 0x1_0000_0000 + u32At(value, off + PTR_OFF_SEQ_LO);
}

export function btreePtrToText(ptr: BtreePtr): string {
  return `bucket ${ptr.bucket} seq ${ptr.seq.toString(16)} level ${ptr.level}${ptr.sectorsWritten ? ` written ${ptr.sectorsWritten * PTR_SECTOR_BYTES}` : ''} min ${wordsToText(ptr.minKey, 0)}`;
}

/* ---------------------------------------------------------------------------
 * toText.
 */

function valueToText(v: Uint8Array): string {
  const n = Math.min(v.length, 16);
  let s = '';
  for (let i = 0; i < n; i++) s += v[i]!.toString(16).padStart(2, '0');
  return v.length > n ? `${s}…` : s;
}

export function bkeyToText(k: BkeyI): string {
  let s = `${keyTypeName(k.type)} ${wordsToText(k.p, 0)}`;
  if (k.size !== 0 || k.type === KEY_TYPE.extent) s += ` size ${k.size}`;
  s += ` ver ${k.version}`;
  if (k.type === KEY_TYPE.btree_ptr && k.value.length === BTREE_PTR_VALUE_BYTES) s += `: ${btreePtrToText(btreePtrDecode(k.value))}`;
  else if (k.value.length) s += ` len ${k.value.length} ${valueToText(k.value)}`;
  return s;
}
