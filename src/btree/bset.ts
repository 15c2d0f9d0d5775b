// SPDX-License-Identifier: GPL-2.0-only
/*
 * In-node key storage (bcachefs bset.c + the key-holding half of struct btree).
 *
 * NodeKeys owns nothing but views: the node cache hands it a data buffer of
 * nodeSizeBytes (the bucket's image) and an aux buffer of auxBytes() for the
 * search trees.
 *
 * Data buffer layout (offsets are the on-disk offsets, btree-node.ts):
 *   [0, NODE_HDR_BYTES)           node header (written by the first write)
 *   set 0 at NODE_HDR_BYTES       bset header slot + keys
 *   later sets at block-aligned offsets >= writtenBytes
 * A set is a run of keys sorted by position, strictly increasing, u64 aligned.
 * At most 3 sets exist in memory (MAX_SETS), oldest first:
 *   - written sets (on disk, read-only in memory). After a read, a completed
 *     write or compact() the written sets are merged into set 0, with
 *     whiteouts and shadowed keys dropped (the disk still has them, and a read
 *     applies them again);
 *   - a sealed set whose write is in flight (read-only; bytes must not move);
 *   - the writable set (last), holding unwritten keys, at nextBsetOffset().
 * Newer sets win over older ones at equal positions; whiteouts (type deleted)
 * in a newer set hide older keys.
 *
 * Key handles are byte offsets of keys in data. Any insertKey, write
 * prepare/done, compact or read invalidates all handles and iterators.
 *
 * Aux buffer (u32 words). Words [0, AUX_META_WORDS): the per-set numbers
 * (set offsets, states, table positions; enum M). Then per set, rebuilt by
 * rebuildAux() whenever sets change shape:
 *   read-only set: keys are cut into groups, a new group starting at the first
 *   PACKED key once roGroupBytes() of keys have passed (bcachefs: one
 *   bkey_float per cacheline). The group heads form an Eytzinger tree
 *   (1-based, implicit): their offsets (n + 1 words), then their packed
 *   positions (posWords words each, bits after the position zeroed), so the
 *   descent compares 1-2 words per level, branch-free for posWords <= 2;
 *   writable set: an in-order lookup table of (unpacked position, offset)
 *   entries, one per AUX_RW_GROUP_BYTES (bcachefs rw_aux_tree), fixed up
 *   incrementally by each insert: every group is at least AUX_RW_GROUP_BYTES
 *   long unless it is the only one, so the table never outgrows its share.
 * Both stay within AUX_WORDS_PER_GROUP words per AUX_GROUP_BYTES of keys:
 * auxBytes() is about 9.4% of the node size.
 *
 * A search packs the position once into the node's format (lossily, bcachefs
 * bch2_bkey_pack_pos_lossy: when not representable, the greatest
 * representable position below it, and compares become strict), descends the
 * tree (or bisects the table), then scans one group comparing packed keys
 * word by word; unpacked keys are compared unpacked. The prepared search is
 * module state: prepareSearch() then lowerBound() on the same node, no await
 * in between (NodeIter.init does both).
 */

import { BPOS_WORDS, wordsCmp, wordsCopy, wordsToText } from './bpos.js';
import {
  BkeyI,
  BtreePtr,
  KEY_TYPE,
  UNPACKED_VALUE_OFFSET,
  UNPACKED_W_POS,
  UNPACKED_W_SIZE,
  UNPACKED_W_VERSION_HI,
  UNPACKED_W_VERSION_LO,
  bkeyInvalid,
  btreePtrDecodeAt,
  btreePtrSeq,
  keyBytesFor,
  keyHdr,
  keyHdrPad,
  keyTypeName,
} from './bkey.js';
import {
  BkeyFormat,
  BkeyFormatState,
  F_SIZE,
  F_VERSION,
  FormatRangeOpts,
  PACK_BELOW,
  PACK_EXACT,
  formatFromRange,
  formatKeyFits,
  formatPackFields,
  formatPackPosLossy,
  formatUnpackPos,
  formatUnpackSize,
  formatUnpackVersion,
  packedPosCmp,
} from '../format/bkey-format.js';
import { BSET_HDR_BYTES, NODE_HDR_BYTES, roundUp } from '../format/btree-node.js';
import { Printbuf, bytesToText } from '../util/printbuf.js';

export const MAX_SETS = 3;
if (MAX_SETS !== 3) throw new Error('bset: M layout assumes 3 sets');
/** Bytes of keys per aux group (one tree entry each); tuned with bench/bset.ts. */
export const AUX_GROUP_BYTES = 128;
/** Bytes of keys per writable-set lookup table entry (6 words each). */
export const AUX_RW_GROUP_BYTES = 256;
/** Aux words per AUX_GROUP_BYTES of keys, for either kind of table (see auxBytes). */
const AUX_WORDS_PER_GROUP = 3;
export const AUX_ENTRY_WORDS = 6;

const NODE_SIZE_MIN = 4096;
const NODE_SIZE_MAX = 1 << 22;
const BLOCK_SIZE_MIN = 512;

/** Expensive consistency checks (set order, aux tables, counts); tests turn them on. */
export const bsetDebug = { checks: false };

function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/*
 * Per-set numbers at the start of the aux buffer (aux32): one row of
 * MAX_SETS per quantity. A const enum: tsc inlines the numbers, so index
 * arithmetic folds in hot paths.
 */
const enum M {
  HDR = 0,
  START = 3,
  END = 6,
  STATE = 9,
  AUX_OFF = 12, // aux word offset of the set's tables
  AUX_N = 15, // groups
  EYTZ_OFF = 18, // read-only sets: Eytzinger head offsets
  EYTZ_POS = 21, // read-only sets: Eytzinger packed head positions
  WORDS = 24,
}
/** Aux words reserved for the per-set numbers; the tables start after them. */
const AUX_META_WORDS = 32;
/* E.WORDS and the offset word inside an rw entry, inlined. */
const enum E {
  WORDS = 6,
  OFF = 5,
}

const SET_WRITTEN = 0;
const SET_SEALED = 1;
const SET_WRITABLE = 2;
const SET_STATE_NAMES = ['written', 'sealed (write in flight)', 'writable'];

/* Scratch (single-threaded, never held across calls). */
/* The prepared search (prepareSearch): packed into the node's format, PACK_* mode. */
const searchPacked = new Uint32Array(8);
let searchMode = PACK_EXACT;
const scrA = new Uint32Array(BPOS_WORDS);
const scrB = new Uint32Array(BPOS_WORDS);
const scrFields = new Uint32Array(16);
let mergeScratch = new Uint32Array(0);

function scratchWords(bytes: number): Uint32Array {
  if (mergeScratch.length < bytes >>> 2) mergeScratch = new Uint32Array(bytes >>> 2);
  return mergeScratch;
}

export interface NodeInit {
  btreeId: number;
  level: number;
  minKey: Uint32Array;
  maxKey: Uint32Array;
  seq: number;
  format?: BkeyFormat;
  /** Hints for the default format (formatFromRange). */
  formatOpts?: FormatRangeOpts;
}

export class NodeKeys {
  readonly nodeSizeBytes: number;
  readonly blockSizeBytes: number;

  data: Uint8Array = new Uint8Array(0);
  /** u32 view of data (internal; for node-io and benches). */
  d32: Uint32Array = new Uint32Array(0);
  /** u32 view of aux (internal): per-set numbers, then the search tables. */
  aux32: Uint32Array = new Uint32Array(0);
  attached = false;

  /* Node header fields. */
  btreeId = 0;
  level = 0;
  readonly minKey = new Uint32Array(BPOS_WORDS);
  readonly maxKey = new Uint32Array(BPOS_WORDS);
  seq = 0;
  format: BkeyFormat = formatFromRange(new Uint32Array(5), new Uint32Array(5).fill(0xffffffff));

  /** Bytes of the bucket on disk (block aligned; 0 for a node never written). */
  writtenBytes = 0;
  nsets = 0;
  /*
   * Per-set numbers (M.* + set index) live in the first AUX_META_WORDS words
   * of the aux buffer, right before the search tables: a lookup in a cold
   * node touches the aux lines it needs anyway.
   */

  /** Byte offset of set s's bset header slot. */
  setHdrOf(s: number): number {
    return this.aux32[M.HDR + s]!;
  }

  /** Byte offset of set s's first key. */
  setStartOf(s: number): number {
    return this.aux32[M.START + s]!;
  }

  /** Byte offset just past set s's last key. */
  setEndOf(s: number): number {
    return this.aux32[M.END + s]!;
  }

  private rwCapacity = 0;

  writeInFlight = false;
  /** End (block aligned) of the set being written. */
  inFlightEnd = 0;
  inFlightJournalSeq = 0;
  /** Journal seqs of keys inserted since the writable set was started (0 = none). */
  unwrittenJournalSeqMax = 0;
  unwrittenJournalSeqMin = 0;

  /* Counts of the visible view (newest key per position). */
  nrKeys = 0;
  liveU64s = 0;
  packedKeys = 0;
  unpackedKeys = 0;
  /** Whiteouts stored in any set. */
  nrWhiteouts = 0;


  constructor(nodeSizeBytes: number, blockSizeBytes: number) {
    if (!isPow2(blockSizeBytes) || blockSizeBytes < BLOCK_SIZE_MIN) throw new RangeError(`blockSizeBytes: ${blockSizeBytes}; expected a power of two >= ${BLOCK_SIZE_MIN}`);
    if (!isPow2(nodeSizeBytes) || nodeSizeBytes < NODE_SIZE_MIN || nodeSizeBytes > NODE_SIZE_MAX || nodeSizeBytes < blockSizeBytes)
      throw new RangeError(`nodeSizeBytes: ${nodeSizeBytes}; expected a power of two in [${NODE_SIZE_MIN}, ${NODE_SIZE_MAX}] and >= the block size`);
    this.nodeSizeBytes = nodeSizeBytes;
    this.blockSizeBytes = blockSizeBytes;
  }

  /** Aux memory one node of this size needs. */
  static auxBytes(nodeSizeBytes: number): number {
    /*
     * Read-only sets: (posWords + 1) words per group, groups of
     * AUX_GROUP_BYTES * ceil((posWords + 1) / 3) bytes; the writable set: 6
     * words per AUX_RW_GROUP_BYTES. Both stay within 3 words per
     * AUX_GROUP_BYTES of keys, plus per set one partial group and the unused
     * slot 0 of an Eytzinger array.
     */
    const words = AUX_META_WORDS + AUX_WORDS_PER_GROUP * Math.ceil(nodeSizeBytes / AUX_GROUP_BYTES) + MAX_SETS * 2 * 6 + 16;
    return roundUp(words * 4, 64);
  }

  attach(data: Uint8Array, aux: Uint8Array): void {
    if (data.length !== this.nodeSizeBytes) throw new RangeError(`attach: data is ${data.length} bytes, node size is ${this.nodeSizeBytes}`);
    if (aux.length < NodeKeys.auxBytes(this.nodeSizeBytes)) throw new RangeError(`attach: aux is ${aux.length} bytes, need ${NodeKeys.auxBytes(this.nodeSizeBytes)}`);
    if (data.byteOffset % 8 !== 0 || aux.byteOffset % 8 !== 0) throw new RangeError('attach: buffers must be 8-byte aligned');
    this.data = data;
    this.d32 = new Uint32Array(data.buffer, data.byteOffset, data.length >>> 2);
    this.aux32 = new Uint32Array(aux.buffer, aux.byteOffset, aux.length >>> 2);
    this.attached = true;
    this.nsets = 0;
  }

  detach(): void {
    this.data = new Uint8Array(0);
    this.d32 = new Uint32Array(0);
    this.aux32 = new Uint32Array(0);
    this.attached = false;
    this.nsets = 0;
    this.writeInFlight = false;
  }

  private setHeaderFields(h: { btreeId: number; level: number; minKey: Uint32Array; maxKey: Uint32Array; seq: number; format: BkeyFormat }): void {
    this.btreeId = h.btreeId;
    this.level = h.level;
    wordsCopy(this.minKey, 0, h.minKey, 0);
    wordsCopy(this.maxKey, 0, h.maxKey, 0);
    this.seq = h.seq;
    this.format = h.format;
  }

  private resetCounts(): void {
    this.nrKeys = this.liveU64s = this.packedKeys = this.unpackedKeys = this.nrWhiteouts = 0;
    this.unwrittenJournalSeqMax = this.unwrittenJournalSeqMin = 0;
    this.writeInFlight = false;
    this.inFlightEnd = this.inFlightJournalSeq = 0;
  }

  /** A fresh node, nothing written: one empty writable set. */
  initEmpty(init: NodeInit): void {
    if (!this.attached) throw new Error('initEmpty: no buffers attached');
    if (wordsCmp(init.minKey, 0, init.maxKey, 0) > 0) throw new RangeError('initEmpty: minKey > maxKey');
    if (!Number.isInteger(init.seq) || init.seq < 0 || init.seq >= 2 ** 52) throw new RangeError(`initEmpty: seq ${init.seq} not a 52-bit integer`);
    const format = init.format ?? formatFromRange(init.minKey, init.maxKey, init.formatOpts);
    const err = format.validate();
    if (err !== null) throw new RangeError(`initEmpty: bad format: ${err}`);
    this.setHeaderFields({ ...init, format });
    this.resetCounts();
    this.writtenBytes = 0;
    this.nsets = 0;
    this.startWritable();
    this.rebuildAux();
  }

  /* -------------------------------------------------------------------------
   * Key accessors by handle (byte offset of the key in data). None allocates
   * except keyUnpack.
   */

  keyU64s(h: number): number {
    return this.d32[h >>> 2]! & 0xffff;
  }

  keyBytes(h: number): number {
    return (this.d32[h >>> 2]! & 0xffff) << 3;
  }

  keyNext(h: number): number {
    return h + ((this.d32[h >>> 2]! & 0xffff) << 3);
  }

  keyType(h: number): number {
    return (this.d32[h >>> 2]! >>> 16) & 0xff;
  }

  keyIsWhiteout(h: number): boolean {
    return ((this.d32[h >>> 2]! >>> 16) & 0xff) === KEY_TYPE.deleted;
  }

  keyIsPacked(h: number): boolean {
    return (this.d32[h >>> 2]! & (1 << 27)) !== 0;
  }

  /** Write the key's position (5 words) to out[oi..]. */
  keyPosTo(h: number, out: Uint32Array, oi: number): void {
    const w = h >>> 2;
    if (this.d32[w]! & (1 << 27)) formatUnpackPos(this.format, this.d32, w + 1, out, oi);
    else wordsCopy(out, oi, this.d32, w + UNPACKED_W_POS);
  }

  /** Compare the key's position with words[wi..wi+5). */
  keyCmpPos(h: number, words: Uint32Array, wi: number): number {
    const w = h >>> 2;
    if (this.d32[w]! & (1 << 27)) {
      formatUnpackPos(this.format, this.d32, w + 1, scrA, 0);
      return wordsCmp(scrA, 0, words, wi);
    }
    return wordsCmp(this.d32, w + UNPACKED_W_POS, words, wi);
  }

  /** Compare the positions of two keys of this node. */
  keyCmpKey(a: number, b: number): number {
    const d = this.d32;
    const wa = a >>> 2, wb = b >>> 2;
    const pa = d[wa]! & (1 << 27), pb = d[wb]! & (1 << 27);
    if (pa && pb) return packedPosCmp(this.format, d, wa + 1, d, wb + 1);
    if (!pa && !pb) return wordsCmp(d, wa + UNPACKED_W_POS, d, wb + UNPACKED_W_POS);
    this.keyPosTo(a, scrA, 0);
    this.keyPosTo(b, scrB, 0);
    return wordsCmp(scrA, 0, scrB, 0);
  }

  keySize(h: number): number {
    const w = h >>> 2;
    if (this.d32[w]! & (1 << 27)) return formatUnpackSize(this.format, this.d32, w + 1);
    return this.d32[w + UNPACKED_W_SIZE]!;
  }

  keyVersion(h: number): number {
    const w = h >>> 2;
    if (this.d32[w]! & (1 << 27)) return formatUnpackVersion(this.format, this.d32, w + 1);
    return this.d32[w + UNPACKED_W_VERSION_HI]! * 0x1_0000_0000 + this.d32[w + UNPACKED_W_VERSION_LO]!;
  }

  private keyValueOffset(h: number): number {
    return this.d32[h >>> 2]! & (1 << 27) ? 4 + 4 * this.format.fieldWords : UNPACKED_VALUE_OFFSET;
  }

  /** Byte offset in data where the key's value starts (read it without a view). */
  keyValueStart(h: number): number {
    return h + this.keyValueOffset(h);
  }

  keyValueBytes(h: number): number {
    const hdr = this.d32[h >>> 2]!;
    return ((hdr & 0xffff) << 3) - this.keyValueOffset(h) - keyHdrPad(hdr);
  }

  /** The value as a view into data (valid until the node changes; allocates the view object only). */
  keyValue(h: number): Uint8Array {
    const off = h + this.keyValueOffset(h);
    return this.data.subarray(off, off + this.keyValueBytes(h));
  }

  /** Decode a btree_ptr key's value into out without allocating (the caller checked keyType). */
  keyBtreePtr<T extends BtreePtr>(h: number, out: T): T {
    return btreePtrDecodeAt(this.data, h + this.keyValueOffset(h), out);
  }

  /** A btree_ptr key's child seq (the cache's hash value), without allocating. */
  keyBtreePtrSeq(h: number): number {
    return btreePtrSeq(this.data, h + this.keyValueOffset(h));
  }

  keyUnpack(h: number): BkeyI {
    const p = new Uint32Array(BPOS_WORDS);
    this.keyPosTo(h, p, 0);
    return { type: this.keyType(h), p, size: this.keySize(h), version: this.keyVersion(h), value: this.keyValue(h).slice() };
  }

  keyToText(h: number): string {
    this.keyPosTo(h, scrA, 0);
    let s = `${keyTypeName(this.keyType(h))} ${wordsToText(scrA, 0)}`;
    const size = this.keySize(h);
    if (size) s += ` size ${size}`;
    s += ` ver ${this.keyVersion(h)} u64s ${this.keyU64s(h)}${this.keyIsPacked(h) ? ' packed' : ''}`;
    const vb = this.keyValueBytes(h);
    if (vb) s += ` len ${vb}`;
    return s;
  }

  /** u64s k would take in this node (packed if it fits the format). */
  keyU64sPacked(k: BkeyI): number {
    const vlen = k.type === KEY_TYPE.deleted ? 0 : k.value.length;
    const fits = formatKeyFits(this.format, k.p, 0, k.size, k.version);
    return keyBytesFor(fits ? 4 + 4 * this.format.fieldWords : UNPACKED_VALUE_OFFSET, vlen) >>> 3;
  }

  /* -------------------------------------------------------------------------
   * Searching.
   */

  /**
   * Pack the search position once (lossily: PACK_FLOOR/PACK_BELOW when it is
   * not representable); packed keys are then compared packed.
   */
  prepareSearch(search: Uint32Array, si: number): void {
    searchMode = formatPackPosLossy(this.format, search, si, searchPacked, 0);
  }

  /** Compare key h with the prepared search position (never 0 unless equal). */
  private cmpSearch(h: number, search: Uint32Array, si: number): number {
    const w = h >>> 2;
    const d = this.d32;
    if (d[w]! & (1 << 27)) {
      const mode = searchMode;
      if (mode === PACK_EXACT) return packedPosCmp(this.format, d, w + 1, searchPacked, 0);
      if (mode === PACK_BELOW) return 1;
      /* the search lies strictly between the floor and the next representable position */
      return packedPosCmp(this.format, d, w + 1, searchPacked, 0) <= 0 ? -1 : 1;
    }
    return wordsCmp(d, w + UNPACKED_W_POS, search, si);
  }

  /**
   * First key of set s with pos >= search (strict: > search), or the set's
   * end. prepareSearch(search) must have been called.
   */
  lowerBound(s: number, search: Uint32Array, si: number, strict: boolean): number {
    const aux = this.aux32;
    const n = this.aux32[M.AUX_N + s]!;
    let k = this.aux32[M.START + s]!;
    const lim = strict ? 1 : 0;
    if (n > 0) {
      if (this.aux32[M.STATE + s] === SET_WRITABLE) {
        const base = this.aux32[M.AUX_OFF + s]!;
        let lo = 0, hi = n;
        while (lo < hi) {
          const mid = (lo + hi) >>> 1;
          if (wordsCmp(aux, base + mid * E.WORDS, search, si) < lim) lo = mid + 1;
          else hi = mid;
        }
        if (lo > 0) k = aux[base + (lo - 1) * E.WORDS + E.OFF]!;
      } else if (searchMode !== PACK_BELOW) {
        let best = 0;
        /*
         * Eytzinger descent over the packed positions of the group heads
         * (all packed keys): remember the last head < search. With a floor
         * search, head < search iff head <= floor.
         */
        const pw = this.format.posWords;
        const pos = this.aux32[M.EYTZ_POS + s]!;
        const sp = searchPacked;
        /* go right when head < search, or head <= search (strict, or a floor search) */
        const le = strict || searchMode !== PACK_EXACT;
        let i = 1;
        if (pw <= 2) {
          /*
           * Branch-free descent: i collects the path (1 = right); the last
           * right turn is i with its trailing left turns and that 1 dropped.
           * x <= y is x < y + 1 (doubles hold u32 + 1 exactly).
           */
          if (pw === 1) {
            const y0 = sp[0]! + (le ? 1 : 0);
            while (i <= n) i = 2 * i + (aux[pos + i]! < y0 ? 1 : 0);
          } else {
            const y0 = sp[0]!, y1 = sp[1]! + (le ? 1 : 0);
            while (i <= n) {
              const e = pos + 2 * i;
              const x0 = aux[e]!;
              i = 2 * i + (x0 < y0 || (x0 === y0 && aux[e + 1]! < y1) ? 1 : 0);
            }
          }
          best = i >>> (32 - Math.clz32(i & -i));
        } else {
          const t = le ? 1 : 0;
          while (i <= n) {
            const e = pos + i * pw;
            let c = 0;
            for (let w = 0; w < pw; w++) {
              const x = aux[e + w]!, y = sp[w]!;
              if (x !== y) {
                c = x < y ? -1 : 1;
                break;
              }
            }
            if (c < t) {
              best = i;
              i = 2 * i + 1;
            } else {
              i = 2 * i;
            }
          }
        }
        /* the head itself is < search (<= for strict): start after it */
        if (best > 0) k = this.keyNext(aux[this.aux32[M.EYTZ_OFF + s]! + best]!);
      }
    }
    /* scan the group: packed keys against the packed search, unpacked ones unpacked */
    const end = this.aux32[M.END + s]!;
    const d = this.d32;
    const f = this.format;
    const mode = searchMode;
    const sp = searchPacked;
    const full = f.posFullWords;
    const rem = f.posRemBits;
    const sh = 32 - rem;
    /* packed compare result that stops the scan: >= lim (exact), > 0 (floor: key > floor) */
    const stop = mode === PACK_EXACT ? lim : 1;
    while (k < end) {
      const w = k >>> 2;
      const hdr = d[w]!;
      if (hdr & (1 << 27)) {
        if (mode === PACK_BELOW) break;
        let c = 0;
        for (let j = 0; j < full; j++) {
          const x = d[w + 1 + j]!, y = sp[j]!;
          if (x !== y) {
            c = x < y ? -1 : 1;
            break;
          }
        }
        if (c === 0 && rem !== 0) {
          const x = d[w + 1 + full]! >>> sh, y = sp[full]! >>> sh;
          if (x !== y) c = x < y ? -1 : 1;
        }
        if (c >= stop) break;
      } else if (wordsCmp(d, w + UNPACKED_W_POS, search, si) >= lim) {
        break;
      }
      k += (hdr & 0xffff) << 3;
    }
    return k;
  }

  /** The key before h in set s, or -1 if h is the set's first key. */
  prevKey(s: number, h: number): number {
    const start = this.aux32[M.START + s]!;
    if (h <= start) return -1;
    const aux = this.aux32;
    const n = this.aux32[M.AUX_N + s]!;
    let k = start;
    if (n > 0) {
      if (this.aux32[M.STATE + s] === SET_WRITABLE) {
        const base = this.aux32[M.AUX_OFF + s]!;
        let lo = 0, hi = n;
        while (lo < hi) {
          const mid = (lo + hi) >>> 1;
          if (aux[base + mid * E.WORDS + E.OFF]! < h) lo = mid + 1;
          else hi = mid;
        }
        if (lo > 0) k = aux[base + (lo - 1) * E.WORDS + E.OFF]!;
      } else {
        /* the heads' offsets are in key order too: descend by offset */
        const eOff = this.aux32[M.EYTZ_OFF + s]!;
        let i = 1, best = 0;
        while (i <= n) {
          if (aux[eOff + i]! < h) {
            best = i;
            i = 2 * i + 1;
          } else {
            i = 2 * i;
          }
        }
        if (best > 0) k = aux[eOff + best]!;
      }
    }
    for (;;) {
      const next = this.keyNext(k);
      if (next >= h) return k;
      k = next;
    }
  }

  /** The newest key exactly at the prepared search position among the read-only sets, or -1. */
  private findOlder(search: Uint32Array, si: number): number {
    const last = this.hasWritable() ? this.nsets - 2 : this.nsets - 1;
    for (let s = last; s >= 0; s--) {
      const k = this.lowerBound(s, search, si, false);
      if (k < this.aux32[M.END + s]! && this.cmpSearch(k, search, si) === 0) return k;
    }
    return -1;
  }

  /** Newest key at position p in any set (whiteouts included), or -1. */
  findExact(p: Uint32Array, pi = 0): number {
    this.prepareSearch(p, pi);
    for (let s = this.nsets - 1; s >= 0; s--) {
      const k = this.lowerBound(s, p, pi, false);
      if (k < this.aux32[M.END + s]! && this.cmpSearch(k, p, pi) === 0) return k;
    }
    return -1;
  }

  /* -------------------------------------------------------------------------
   * Sets.
   */

  hasWritable(): boolean {
    return this.nsets > 0 && this.aux32[M.STATE + this.nsets - 1] === SET_WRITABLE;
  }

  /** Where the next bset (its header) goes. */
  nextBsetOffset(): number {
    if (this.writeInFlight) return this.inFlightEnd;
    return this.writtenBytes === 0 ? NODE_HDR_BYTES : this.writtenBytes;
  }

  /** u64s of key space left in the writable set (or in a new one). */
  u64sRemaining(): number {
    if (this.hasWritable()) return (this.nodeSizeBytes - this.aux32[M.END + this.nsets - 1]!) >>> 3;
    if (this.nsets >= MAX_SETS) return 0;
    return Math.max(0, this.nodeSizeBytes - this.nextBsetOffset() - BSET_HDR_BYTES) >>> 3;
  }

  /** Bytes of the bucket in use: everything up to the end of the last set. */
  usedBytes(): number {
    if (this.nsets === 0) return this.writtenBytes;
    const last = this.nsets - 1;
    const end = this.aux32[M.STATE + last] === SET_WRITABLE ? this.aux32[M.END + last]! : roundUp(this.aux32[M.END + last]!, this.blockSizeBytes);
    return Math.max(end, this.writtenBytes);
  }

  /** Key bytes a fresh bset appended now could hold (0: the node cannot take another append). */
  bytesAvailableForAppend(): number {
    const off = this.hasWritable() ? this.aux32[M.HDR + this.nsets - 1]! : this.nextBsetOffset();
    return Math.max(0, this.nodeSizeBytes - off - BSET_HDR_BYTES);
  }

  private startWritable(): boolean {
    if (this.nsets >= MAX_SETS) return false;
    const hdr = this.nextBsetOffset();
    if (hdr + BSET_HDR_BYTES + 8 > this.nodeSizeBytes) return false;
    const s = this.nsets++;
    this.aux32[M.HDR + s] = hdr;
    this.aux32[M.START + s] = this.aux32[M.END + s] = hdr + BSET_HDR_BYTES;
    this.aux32[M.STATE + s] = SET_WRITABLE;
    this.aux32[M.AUX_N + s] = 0;
    this.aux32[M.AUX_OFF + s] = s === 0 ? AUX_META_WORDS : this.auxRoEnd(s - 1);
    this.rwCapacity = Math.floor((this.aux32.length - this.aux32[M.AUX_OFF + s]!) / E.WORDS);
    if (this.rwCapacity < Math.floor((this.nodeSizeBytes - this.aux32[M.START + s]!) / AUX_RW_GROUP_BYTES) + 1) throw new Error('aux: buffer too small for the rw table');
    this.unwrittenJournalSeqMax = this.unwrittenJournalSeqMin = 0;
    return true;
  }

  /** First aux word after the read-only set s's tables. */
  private auxRoEnd(s: number): number {
    return this.aux32[M.EYTZ_POS + s]! + (this.aux32[M.AUX_N + s]! + 1) * this.format.posWords;
  }

  /* -------------------------------------------------------------------------
   * Aux trees.
   */

  /** Rebuild every set's aux table from the keys. */
  rebuildAux(): void {
    let w = AUX_META_WORDS;
    for (let s = 0; s < this.nsets; s++) {
      this.aux32[M.AUX_OFF + s] = w;
      if (this.aux32[M.STATE + s] === SET_WRITABLE) {
        this.rwCapacity = Math.floor((this.aux32.length - w) / E.WORDS);
        const need = Math.floor((this.nodeSizeBytes - this.aux32[M.START + s]!) / AUX_RW_GROUP_BYTES) + 1;
        if (this.rwCapacity < need) throw new Error(`aux: rw table capacity ${this.rwCapacity} < ${need}`);
        this.buildRwTable(s);
      } else {
        w = this.buildRoTree(s, w);
      }
    }
  }

  /** Group bytes of read-only sets in this format: entries stay within AUX_WORDS_PER_GROUP words per AUX_GROUP_BYTES. */
  private roGroupBytes(): number {
    return AUX_GROUP_BYTES * Math.max(1, Math.ceil((this.format.posWords + 1) / AUX_WORDS_PER_GROUP));
  }

  /**
   * Aux tables of a read-only set at aux word w: the Eytzinger tree (1-based,
   * slot 0 unused) of its group heads: head offsets (n + 1 words), then
   * packed head positions ((n + 1) * posWords words, bits after the position
   * zeroed). Groups start only at packed keys so every head has a packed
   * position. Returns the first word after the tables.
   */
  private buildRoTree(s: number, w: number): number {
    const aux = this.aux32;
    const d = this.d32;
    const f = this.format;
    const start = this.aux32[M.START + s]!, end = this.aux32[M.END + s]!;
    const gbytes = this.roGroupBytes();
    const pw = f.posWords;
    /* count the groups first, then fill the tree by an in-order walk */
    let n = 0;
    let gstart = -gbytes;
    for (let k = start; k < end; k = this.keyNext(k)) {
      if (k - gstart >= gbytes && d[k >>> 2]! & (1 << 27)) {
        n++;
        gstart = k;
      }
    }
    if (pw === 0) n = 0; /* every packed key at one position: nothing to search */
    this.aux32[M.AUX_N + s] = n;
    const eOff = w;
    const ePos = eOff + n + 1;
    const endW = ePos + (n + 1) * pw;
    if (endW > aux.length) throw new Error('aux: buffer too small');
    this.aux32[M.EYTZ_OFF + s] = eOff;
    this.aux32[M.EYTZ_POS + s] = ePos;
    if (n === 0) return endW;
    const full = f.posFullWords;
    const mask = f.posRemBits ? (0xffffffff << (32 - f.posRemBits)) >>> 0 : 0;
    /* in-order walk of the implicit tree 1..n, handing out the heads in key order */
    let i = 1;
    while (2 * i <= n) i *= 2;
    gstart = -gbytes;
    for (let k = start; k < end; k = this.keyNext(k)) {
      if (!(k - gstart >= gbytes && d[k >>> 2]! & (1 << 27))) continue;
      gstart = k;
      aux[eOff + i] = k;
      const src = (k >>> 2) + 1;
      const dst = ePos + i * pw;
      for (let j = 0; j < full; j++) aux[dst + j] = d[src + j]!;
      if (mask) aux[dst + full] = d[src + full]! & mask;
      /* in-order successor */
      if (2 * i + 1 <= n) {
        i = 2 * i + 1;
        while (2 * i <= n) i *= 2;
      } else {
        while (i & 1) i >>>= 1;
        i >>>= 1;
      }
    }
    if (i !== 0) throw new Error('aux: group count changed');
    return endW;
  }

  private buildRwTable(s: number): void {
    const aux = this.aux32;
    const base = this.aux32[M.AUX_OFF + s]!;
    const start = this.aux32[M.START + s]!, end = this.aux32[M.END + s]!;
    let n = 0;
    let gstart = -AUX_RW_GROUP_BYTES;
    for (let k = start; k < end; k = this.keyNext(k)) {
      /* a group is closed only if what follows it can still make a full group */
      if (k - gstart >= AUX_RW_GROUP_BYTES && (n === 0 || end - k >= AUX_RW_GROUP_BYTES)) {
        const e = base + n++ * E.WORDS;
        this.keyPosTo(k, aux, e);
        aux[e + E.OFF] = k;
        gstart = k;
      }
    }
    this.aux32[M.AUX_N + s] = n;
  }

  private rwEntryOff(j: number): number {
    return this.aux32[this.aux32[M.AUX_OFF + this.nsets - 1]! + j * E.WORDS + E.OFF]!;
  }

  /** Index of the last rw entry with offset <= o (-1 if none). */
  private rwEntryAt(o: number): number {
    const aux = this.aux32;
    const base = this.aux32[M.AUX_OFF + this.nsets - 1]!;
    let lo = 0, hi = this.aux32[M.AUX_N + this.nsets - 1]!;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (aux[base + mid * E.WORDS + E.OFF]! <= o) lo = mid + 1;
      else hi = mid;
    }
    return lo - 1;
  }

  private rwInsertEntry(j: number, k: number): void {
    const s = this.nsets - 1;
    const aux = this.aux32;
    const base = this.aux32[M.AUX_OFF + s]!;
    const n = this.aux32[M.AUX_N + s]!;
    if (n >= this.rwCapacity) throw new Error('aux: rw table full');
    const e = base + j * E.WORDS;
    aux.copyWithin(e + E.WORDS, e, base + n * E.WORDS);
    this.keyPosTo(k, aux, e);
    aux[e + E.OFF] = k;
    this.aux32[M.AUX_N + s] = n + 1;
  }

  private rwRemoveEntry(j: number): void {
    const s = this.nsets - 1;
    const base = this.aux32[M.AUX_OFF + s]!;
    const n = this.aux32[M.AUX_N + s]!;
    const e = base + j * E.WORDS;
    this.aux32.copyWithin(e, e + E.WORDS, base + n * E.WORDS);
    this.aux32[M.AUX_N + s] = n - 1;
  }

  private rwGroupSpan(j: number): number {
    const s = this.nsets - 1;
    const next = j + 1 < this.aux32[M.AUX_N + s]! ? this.rwEntryOff(j + 1) : this.aux32[M.END + s]!;
    return next - this.rwEntryOff(j);
  }

  /** Split group j if it is over 2 groups long and a key boundary leaves both halves full. */
  private rwMaybeSplit(j: number): void {
    if (this.rwGroupSpan(j) <= 2 * AUX_RW_GROUP_BYTES) return;
    const gstart = this.rwEntryOff(j);
    const gend = gstart + this.rwGroupSpan(j);
    let k = gstart;
    while (k - gstart < AUX_RW_GROUP_BYTES) k = this.keyNext(k);
    if (gend - k >= AUX_RW_GROUP_BYTES) this.rwInsertEntry(j + 1, k);
  }

  /** Merge group j into a neighbour if it fell below a full group. */
  private rwMaybeMerge(j: number): void {
    const n = this.aux32[M.AUX_N + this.nsets - 1]!;
    if (n <= 1 || this.rwGroupSpan(j) >= AUX_RW_GROUP_BYTES) return;
    this.rwRemoveEntry(j > 0 ? j : 1);
  }

  /**
   * Fix the rw table after oldBytes at offset o were replaced by newBytes
   * (bcachefs bch2_bset_fix_lookup_table). Keys after o have moved.
   */
  private rwFix(o: number, oldBytes: number, newBytes: number): void {
    const s = this.nsets - 1;
    const aux = this.aux32;
    const base = this.aux32[M.AUX_OFF + s]!;
    const delta = newBytes - oldBytes;
    let n = this.aux32[M.AUX_N + s]!;
    if (n === 0) {
      if (newBytes > 0) this.rwInsertEntry(0, o);
      return;
    }
    const j = this.rwEntryAt(o);
    for (let i = j + 1; i < n; i++) aux[base + i * E.WORDS + E.OFF] = aux[base + i * E.WORDS + E.OFF]! + delta;
    const atHead = j >= 0 && this.rwEntryOff(j) === o;
    if (oldBytes === 0) {
      /* insert: a new head if it went in front of a group's first key */
      if (atHead) this.keyPosTo(o, aux, base + j * E.WORDS);
      this.rwMaybeSplit(j);
    } else if (newBytes === 0) {
      /* remove */
      if (atHead) {
        const emptied = o >= this.aux32[M.END + s]! || (j + 1 < n && this.rwEntryOff(j + 1) === o);
        if (emptied) {
          this.rwRemoveEntry(j);
          n--;
          return;
        }
        this.keyPosTo(o, aux, base + j * E.WORDS);
      }
      this.rwMaybeMerge(j);
    } else if (delta > 0) {
      this.rwMaybeSplit(j);
    } else if (delta < 0) {
      this.rwMaybeMerge(j);
    }
  }

  /* -------------------------------------------------------------------------
   * Updates.
   */

  private accountAdd(h: number, sign: number): void {
    this.nrKeys += sign;
    this.liveU64s += sign * this.keyU64s(h);
    if (this.keyIsPacked(h)) this.packedKeys += sign;
    else this.unpackedKeys += sign;
  }

  private noteJournalSeqInternal(seq: number): void {
    if (seq === 0) return;
    if (seq > this.unwrittenJournalSeqMax) this.unwrittenJournalSeqMax = seq;
    if (this.unwrittenJournalSeqMin === 0 || seq < this.unwrittenJournalSeqMin) this.unwrittenJournalSeqMin = seq;
  }

  /** Raise the journal seq the next written bset will carry (e.g. a new node holding keys of commit `seq`). */
  noteJournalSeq(seq: number): void {
    if (!this.hasWritable() && !this.startWritable()) throw new Error('noteJournalSeq: no room for a writable set');
    this.noteJournalSeqInternal(seq);
  }

  /** Write k at offset o (space already made), packed if `packed`. */
  private writeKey(o: number, type: number, p: Uint32Array, pi: number, size: number, version: number, value: Uint8Array, packed: boolean): number {
    const d = this.d32;
    const w = o >>> 2;
    const voff = packed ? 4 + 4 * this.format.fieldWords : UNPACKED_VALUE_OFFSET;
    const bytes = keyBytesFor(voff, value.length);
    const pad = bytes - voff - value.length;
    d[w] = keyHdr(bytes >>> 3, type, pad, packed);
    if (packed) {
      formatPackFields(this.format, p, pi, size, version, d, w + 1);
    } else {
      wordsCopy(d, w + UNPACKED_W_POS, p, pi);
      d[w + UNPACKED_W_SIZE] = size;
      d[w + UNPACKED_W_VERSION_HI] = Math.floor(version / 0x1_0000_0000);
      d[w + UNPACKED_W_VERSION_LO] = version >>> 0;
    }
    if (value.length) this.data.set(value, o + voff);
    if (pad) this.data.fill(0, o + voff + value.length, o + bytes);
    return bytes;
  }

  /** Would k's position be inside this node's range? */
  keyInRange(p: Uint32Array, pi = 0): boolean {
    return wordsCmp(p, pi, this.minKey, 0) >= 0 && wordsCmp(p, pi, this.maxKey, 0) <= 0;
  }

  /**
   * Insert k into the writable set (bcachefs bch2_bset_insert + the needs
   * whiteout logic of bch2_btree_bset_insert_key). Replaces a key at the same
   * position in the writable set; a deletion leaves a whiteout only if a
   * read-only set holds a live key there. Returns false (node unchanged) if
   * it does not fit.
   */
  insertKey(k: BkeyI): boolean {
    if (bsetDebug.checks) {
      const err = bkeyInvalid(k);
      if (err !== null) throw new Error(`insertKey: ${err}`);
    }
    if (!this.keyInRange(k.p, 0)) throw new RangeError(`insertKey: ${wordsToText(k.p, 0)} outside node range ${wordsToText(this.minKey, 0)}..${wordsToText(this.maxKey, 0)}`);
    const isDel = k.type === KEY_TYPE.deleted;
    this.prepareSearch(k.p, 0);
    const older = this.findOlder(k.p, 0);
    const olderLive = older >= 0 && !this.keyIsWhiteout(older);
    if (!this.hasWritable()) {
      if (isDel && !olderLive) return true;
      if (!this.startWritable()) return false;
    }
    const s = this.nsets - 1;
    const end = this.aux32[M.END + s]!;
    const o = this.lowerBound(s, k.p, 0, false);
    const exists = o < end && this.cmpSearch(o, k.p, 0) === 0;
    let newBytes = 0;
    let packed = false;
    const value = isDel ? EMPTY : k.value;
    if (!isDel || olderLive) {
      packed = formatKeyFits(this.format, k.p, 0, k.size, k.version);
      newBytes = keyBytesFor(packed ? 4 + 4 * this.format.fieldWords : UNPACKED_VALUE_OFFSET, value.length);
    }
    if (!exists && newBytes === 0) return true;
    const oldBytes = exists ? this.keyBytes(o) : 0;
    const delta = newBytes - oldBytes;
    if (end + delta > this.nodeSizeBytes) return false;

    const visOld = exists ? o : older;
    if (visOld >= 0 && !this.keyIsWhiteout(visOld)) this.accountAdd(visOld, -1);
    if (exists && this.keyIsWhiteout(o)) this.nrWhiteouts--;
    if (delta !== 0) this.data.copyWithin(o + newBytes, o + oldBytes, end);
    this.aux32[M.END + s] = end + delta;
    if (newBytes) {
      this.writeKey(o, k.type, k.p, 0, k.size, k.version, value, packed);
      if (isDel) this.nrWhiteouts++;
      else this.accountAdd(o, 1);
    }
    this.rwFix(o, oldBytes, newBytes);
    this.noteJournalSeqInternal(k.version);
    if (bsetDebug.checks) this.verify();
    return true;
  }

  /**
   * Append a key known to sort after every key of the writable set (sortInto).
   * Copies the raw bytes when `src` uses the same format. The rw lookup table
   * is left stale: the caller rebuilds it (appendDone).
   */
  private appendFrom(src: NodeKeys, h: number, sameFormat: boolean): boolean {
    if (!this.hasWritable() && !this.startWritable()) return false;
    const s = this.nsets - 1;
    const o = this.aux32[M.END + s]!;
    let bytes: number;
    if (sameFormat) {
      /* a key is packed exactly when it fits the format: same bytes here */
      bytes = src.keyBytes(h);
      if (o + bytes > this.nodeSizeBytes) return false;
      const d = this.d32, sd = src.d32;
      for (let i = 0, n = bytes >>> 2, w = o >>> 2, sw = h >>> 2; i < n; i++) d[w + i] = sd[sw + i]!;
    } else {
      src.keyPosTo(h, scrFields, 0);
      const size = src.keySize(h), version = src.keyVersion(h);
      const fits = formatKeyFits(this.format, scrFields, 0, size, version);
      const value = src.keyValue(h);
      bytes = keyBytesFor(fits ? 4 + 4 * this.format.fieldWords : UNPACKED_VALUE_OFFSET, value.length);
      if (o + bytes > this.nodeSizeBytes) return false;
      this.writeKey(o, src.keyType(h), scrFields, 0, size, version, value, fits);
    }
    this.aux32[M.END + s] = o + bytes;
    if (this.keyIsWhiteout(o)) this.nrWhiteouts++;
    else this.accountAdd(o, 1);
    this.noteJournalSeqInternal(this.keyVersion(o));
    return true;
  }

  /** After appendFrom calls: rebuild the writable set's lookup table. */
  private appendDone(): void {
    if (this.hasWritable()) this.buildRwTable(this.nsets - 1);
  }

  /**
   * Copy the live keys with from <= pos <= to (inclusive; defaults: the whole
   * node) into dst, a fresh node (initEmpty) whose range holds them,
   * repacking into dst's format. Returns the number of keys copied, or -1 if
   * dst ran out of space (dst is then partly filled: discard it).
   */
  sortInto(dst: NodeKeys, from?: Uint32Array, to?: Uint32Array): number {
    if (dst.hasWritable() && dst.aux32[M.END + dst.nsets - 1] !== dst.aux32[M.START + dst.nsets - 1]) throw new Error('sortInto: destination is not empty');
    const it = new NodeIter();
    if (from) it.init(this, from, 0);
    else it.initStart(this);
    const same = this.format === dst.format || this.format.equals(dst.format);
    let n = 0;
    let last = -1;
    for (let h = it.peek(); h >= 0; it.advance(), h = it.peek()) {
      if (to && this.keyCmpPos(h, to, 0) > 0) break;
      if (this.keyIsWhiteout(h)) continue;
      const o = dst.hasWritable() ? dst.aux32[M.END + dst.nsets - 1]! : -1;
      if (!dst.appendFrom(this, h, same)) {
        dst.appendDone();
        return -1;
      }
      if (bsetDebug.checks && last >= 0 && dst.keyCmpKey(last, o < 0 ? dst.aux32[M.START + dst.nsets - 1]! : o) >= 0) throw new Error('sortInto: keys out of order');
      last = o < 0 ? dst.aux32[M.START + dst.nsets - 1]! : o;
      n++;
    }
    dst.appendDone();
    if (bsetDebug.checks) dst.verify();
    return n;
  }

  /**
   * Format for a new node holding this node's live keys in [from, to]
   * (bcachefs bch2_btree_calc_format): the smallest format that packs them
   * all, widened to reach `extra` fields (e.g. versionMax: the journal seq
   * new keys will carry, so later inserts stay packed).
   */
  computeFormat(from?: Uint32Array, to?: Uint32Array, extra: { versionMax?: number; sizeMax?: number; positions?: Uint32Array[] } = {}): BkeyFormat {
    const st = new BkeyFormatState();
    const it = new NodeIter();
    if (from) it.init(this, from, 0);
    else it.initStart(this);
    const p = new Uint32Array(BPOS_WORDS);
    for (let h = it.peek(); h >= 0; it.advance(), h = it.peek()) {
      if (to && this.keyCmpPos(h, to, 0) > 0) break;
      if (this.keyIsWhiteout(h)) continue;
      this.keyPosTo(h, p, 0);
      st.addKey(p, 0, this.keySize(h), this.keyVersion(h));
    }
    if (extra.versionMax !== undefined) st.addNumber(F_VERSION, extra.versionMax);
    if (extra.sizeMax !== undefined) st.addNumber(F_SIZE, extra.sizeMax);
    for (const q of extra.positions ?? []) st.addPos(q, 0);
    return st.done();
  }

  /**
   * The position splitting the live keys into two halves of about equal u64s
   * (the last key of the first half), written to out; false if no live keys.
   */
  liveKeysMedian(out: Uint32Array, oi = 0): boolean {
    const it = new NodeIter();
    it.initStart(this);
    const half = this.liveU64s / 2;
    let acc = 0;
    let last = -1;
    for (let h = it.peek(); h >= 0; it.advance(), h = it.peek()) {
      if (this.keyIsWhiteout(h)) continue;
      acc += this.keyU64s(h);
      last = h;
      if (acc >= half) break;
    }
    if (last < 0) return false;
    this.keyPosTo(last, out, oi);
    return true;
  }

  /* -------------------------------------------------------------------------
   * Merging sets.
   */

  /**
   * Merge runs of keys [starts[i], ends[i]) of data (oldest run first; each
   * strictly sorted) into one run at dstOff, newest key winning at equal
   * positions, whiteouts and shadowed keys dropped. Returns the end offset.
   * Everything merged must be on disk (whiteouts are dropped).
   */
  mergeRuns(starts: number[], ends: number[], dstOff: number): number {
    const nr = starts.length;
    const scratch = scratchWords(this.nodeSizeBytes);
    const d = this.d32;
    let out = 0; /* words */
    if (nr === 1 && dstOff <= starts[0]!) {
      /* one run, moving down: copy the stretches between whiteouts in place */
      let o = dstOff;
      let runStart = starts[0]!;
      const end = ends[0]!;
      let k = runStart;
      while (k < end) {
        const hdr = d[k >>> 2]!;
        const next = k + ((hdr & 0xffff) << 3);
        if (((hdr >>> 16) & 0xff) === KEY_TYPE.deleted) {
          if (k > runStart) {
            if (o !== runStart) this.data.copyWithin(o, runStart, k);
            o += k - runStart;
          }
          runStart = next;
        }
        k = next;
      }
      if (end > runStart) {
        if (o !== runStart) this.data.copyWithin(o, runStart, end);
        o += end - runStart;
      }
      return o;
    }
    if (nr === 1) {
      for (let k = starts[0]!, end = ends[0]!; k < end; ) {
        const hdr = d[k >>> 2]!;
        const words = (hdr & 0xffff) << 1;
        if (((hdr >>> 16) & 0xff) !== KEY_TYPE.deleted) for (let i = 0, w = k >>> 2; i < words; i++) scratch[out++] = d[w + i]!;
        k += words << 2;
      }
    } else {
      /* binary heap of run indices: smallest position first, newest (higher) run first on ties */
      const cur = Int32Array.from(starts);
      const end = Int32Array.from(ends);
      const heap = new Int32Array(nr);
      let hn = 0;
      for (let i = 0; i < nr; i++) {
        if (cur[i]! >= end[i]!) continue;
        let j = hn++;
        heap[j] = i;
        while (j > 0) {
          const p = (j - 1) >>> 1;
          if (!this.runLess(cur, heap[j]!, heap[p]!)) break;
          const t = heap[j]!;
          heap[j] = heap[p]!;
          heap[p] = t;
          j = p;
        }
      }
      let last = -1;
      while (hn > 0) {
        const r = heap[0]!;
        const h = cur[r]!;
        const hdr = d[h >>> 2]!;
        const words = (hdr & 0xffff) << 1;
        if (last < 0 || this.keyCmpKey(h, last) !== 0) {
          if (((hdr >>> 16) & 0xff) !== KEY_TYPE.deleted) for (let i = 0, w = h >>> 2; i < words; i++) scratch[out++] = d[w + i]!;
          last = h;
        }
        cur[r] = h + (words << 2);
        if (cur[r]! >= end[r]!) heap[0] = heap[--hn]!;
        /* sift down */
        for (let i = 0; ; ) {
          const l = 2 * i + 1, rr = l + 1;
          let m = i;
          if (l < hn && this.runLess(cur, heap[l]!, heap[m]!)) m = l;
          if (rr < hn && this.runLess(cur, heap[rr]!, heap[m]!)) m = rr;
          if (m === i) break;
          const t = heap[i]!;
          heap[i] = heap[m]!;
          heap[m] = t;
          i = m;
        }
      }
    }
    const dw = dstOff >>> 2;
    for (let i = 0; i < out; i++) d[dw + i] = scratch[i]!;
    return dstOff + (out << 2);
  }

  /** mergeRuns heap order: run a's key before run b's (newer run first at equal positions). */
  private runLess(cur: Int32Array, a: number, b: number): boolean {
    const c = this.keyCmpKey(cur[a]!, cur[b]!);
    return c < 0 || (c === 0 && a > b);
  }

  /**
   * Merge the read-only sets into set 0 (after a write or a read). Returns
   * false if there was nothing to do (one set in place, no whiteouts).
   */
  private mergeRoSets(): boolean {
    const nro = this.hasWritable() ? this.nsets - 1 : this.nsets;
    if (nro === 0) return false;
    if (nro === 1 && this.aux32[M.START]! === NODE_HDR_BYTES + BSET_HDR_BYTES) {
      let whiteouts = false;
      const d = this.d32;
      for (let k = this.aux32[M.START]!, end = this.aux32[M.END]!; k < end; k += (d[k >>> 2]! & 0xffff) << 3) {
        if (((d[k >>> 2]! >>> 16) & 0xff) === KEY_TYPE.deleted) {
          whiteouts = true;
          break;
        }
      }
      if (!whiteouts) {
        this.aux32[M.STATE] = SET_WRITTEN;
        return false;
      }
    }
    const starts: number[] = [], ends: number[] = [];
    for (let s = 0; s < nro; s++) {
      starts.push(this.aux32[M.START + s]!);
      ends.push(this.aux32[M.END + s]!);
    }
    const start = NODE_HDR_BYTES + BSET_HDR_BYTES;
    const end = this.mergeRuns(starts, ends, start);
    const hadWritable = this.hasWritable();
    const w = this.nsets - 1;
    const wHdr = this.aux32[M.HDR + w]!, wStart = this.aux32[M.START + w]!, wEnd = this.aux32[M.END + w]!;
    this.aux32[M.HDR + 0] = NODE_HDR_BYTES;
    this.aux32[M.START + 0] = start;
    this.aux32[M.END + 0] = end;
    this.aux32[M.STATE + 0] = SET_WRITTEN;
    this.nsets = 1;
    if (hadWritable) {
      this.aux32[M.HDR + 1] = wHdr;
      this.aux32[M.START + 1] = wStart;
      this.aux32[M.END + 1] = wEnd;
      this.aux32[M.STATE + 1] = SET_WRITABLE;
      this.nsets = 2;
    }
    return true;
  }

  /** Recompute the counts from the keys. */
  recount(): void {
    this.nrKeys = this.liveU64s = this.packedKeys = this.unpackedKeys = this.nrWhiteouts = 0;
    if (this.nsets === 1) {
      /* one set: every key is visible */
      const d = this.d32;
      for (let k = this.aux32[M.START]!, end = this.aux32[M.END]!; k < end; ) {
        const hdr = d[k >>> 2]!;
        const u64s = hdr & 0xffff;
        if (((hdr >>> 16) & 0xff) === KEY_TYPE.deleted) this.nrWhiteouts++;
        else {
          this.nrKeys++;
          this.liveU64s += u64s;
          if (hdr & (1 << 27)) this.packedKeys++;
          else this.unpackedKeys++;
        }
        k += u64s << 3;
      }
      return;
    }
    for (let s = 0; s < this.nsets; s++) {
      for (let k = this.aux32[M.START + s]!; k < this.aux32[M.END + s]!; k = this.keyNext(k)) if (this.keyIsWhiteout(k)) this.nrWhiteouts++;
    }
    const it = new NodeIter();
    it.initStart(this);
    for (let h = it.peek(); h >= 0; it.advance(), h = it.peek()) if (!this.keyIsWhiteout(h)) this.accountAdd(h, 1);
  }

  /**
   * Merge all sets into one, dropping whiteouts and shadowed keys. Only when
   * everything is written (no unwritten keys, no write in flight).
   */
  compact(): void {
    if (this.writeInFlight) throw new Error('compact: write in flight');
    if (this.hasWritable()) {
      const s = this.nsets - 1;
      if (this.aux32[M.END + s]! > this.aux32[M.START + s]!) throw new Error('compact: node has unwritten keys');
      this.nsets--;
    }
    this.mergeRoSets();
    this.rebuildAux();
    this.recount();
    if (bsetDebug.checks) this.verify();
  }

  /* -------------------------------------------------------------------------
   * Node I/O support (node-io.ts drives these).
   */

  /** Install a header read from disk; sets, counts and aux are set by loadSorted. */
  setHeaderFromDisk(h: { btreeId: number; level: number; minKey: Uint32Array; maxKey: Uint32Array; seq: number; format: BkeyFormat }): void {
    this.setHeaderFields(h);
    this.resetCounts();
    this.nsets = 0;
  }

  /** After a read: merge the accepted bsets' keys into set 0. */
  loadSorted(starts: number[], ends: number[], writtenBytes: number): void {
    this.writtenBytes = writtenBytes;
    const start = NODE_HDR_BYTES + BSET_HDR_BYTES;
    const end = this.mergeRuns(starts, ends, start);
    this.nsets = 1;
    this.aux32[M.HDR + 0] = NODE_HDR_BYTES;
    this.aux32[M.START + 0] = start;
    this.aux32[M.END + 0] = end;
    this.aux32[M.STATE + 0] = SET_WRITTEN;
    this.rebuildAux();
    this.recount();
    if (bsetDebug.checks) this.verify();
  }

  /**
   * Seal the writable set for writing: returns its index, or -1 if there is
   * nothing to write. The caller writes the headers; sealWritableDone
   * finishes the state change.
   */
  sealableSet(): number {
    if (this.writeInFlight) throw new Error('write prepare: a write is already in flight');
    if (!this.hasWritable()) return -1;
    const s = this.nsets - 1;
    if (this.aux32[M.END + s] === this.aux32[M.START + s] && this.writtenBytes > 0) return -1;
    return s;
  }

  sealWritable(s: number, sealedEnd: number, journalSeq: number): void {
    this.aux32[M.STATE + s] = SET_SEALED;
    this.writeInFlight = true;
    this.inFlightEnd = sealedEnd;
    this.inFlightJournalSeq = journalSeq;
    this.unwrittenJournalSeqMax = this.unwrittenJournalSeqMin = 0;
    this.rebuildAux();
  }

  /** An empty writable set with nothing to write: forget its seqs (node is clean). */
  dropEmptyWritable(): void {
    if (this.hasWritable() && this.aux32[M.END + this.nsets - 1] === this.aux32[M.START + this.nsets - 1]) this.unwrittenJournalSeqMax = this.unwrittenJournalSeqMin = 0;
  }

  writeDone(): void {
    this.writeDoneDeferred();
    this.compactWritten();
  }

  /**
   * The write finished; keys stay where they are. For a write completion that
   * cannot take the node's write lock (readers may hold handles into it):
   * compactWritten() finishes the job later, under the write lock.
   */
  writeDoneDeferred(): void {
    if (!this.writeInFlight) throw new Error('write done: no write in flight');
    this.writtenBytes = this.inFlightEnd;
    this.writeInFlight = false;
    for (let s = 0; s < this.nsets; s++) if (this.aux32[M.STATE + s] === SET_SEALED) this.aux32[M.STATE + s] = SET_WRITTEN;
  }

  /** After writeDoneDeferred: merge the written sets in memory (keys move; the caller holds the write lock). */
  compactWritten(): void {
    if (this.writeInFlight) return;
    /* An empty writable set started during the write keeps its place only if it has keys. */
    if (this.hasWritable()) {
      const s = this.nsets - 1;
      if (this.aux32[M.END + s] === this.aux32[M.START + s]) {
        this.nsets--;
        this.unwrittenJournalSeqMax = this.unwrittenJournalSeqMin = 0;
      }
    }
    /* the sealed set's tree was built at seal time: nothing to redo unless sets merged */
    if (this.mergeRoSets()) {
      this.rebuildAux();
      this.recount();
    }
    if (bsetDebug.checks) this.verify();
  }

  /* -------------------------------------------------------------------------
   * Checks and printing.
   */

  /** Expensive consistency check: order, range, aux tables, counts. Throws on failure. */
  verify(): void {
    for (let s = 0; s < this.nsets; s++) {
      let prev = -1;
      for (let k = this.aux32[M.START + s]!; k < this.aux32[M.END + s]!; k = this.keyNext(k)) {
        if (this.keyU64s(k) === 0) throw new Error(`verify: zero-size key at ${k}`);
        if (prev >= 0 && this.keyCmpKey(prev, k) >= 0) throw new Error(`verify: set ${s} out of order at ${k}`);
        this.keyPosTo(k, scrA, 0);
        if (!this.keyInRange(scrA, 0)) throw new Error(`verify: key ${wordsToText(scrA, 0)} outside node range`);
        prev = k;
      }
      if (prev >= 0 && this.keyNext(prev) !== this.aux32[M.END + s]) throw new Error(`verify: set ${s} end mismatch`);
      const n = this.aux32[M.AUX_N + s]!;
      if (this.aux32[M.STATE + s] === SET_WRITABLE) {
        const base = this.aux32[M.AUX_OFF + s]!;
        if ((n === 0) !== (this.aux32[M.START + s] === this.aux32[M.END + s])) throw new Error('verify: rw table emptiness');
        for (let j = 0; j < n; j++) {
          const e = base + j * E.WORDS;
          const off = this.aux32[e + E.OFF]!;
          if (j === 0 && off !== this.aux32[M.START + s]) throw new Error('verify: rw entry 0 not at set start');
          if (j > 0 && off <= this.aux32[e - E.WORDS + E.OFF]!) throw new Error('verify: rw entries out of order');
          if (this.keyCmpPos(off, this.aux32, e) !== 0) throw new Error(`verify: rw entry ${j} position stale`);
          if (n > 1 && this.rwGroupSpan(j) < AUX_RW_GROUP_BYTES) throw new Error(`verify: rw group ${j} short`);
        }
      }
    }
    const save = [this.nrKeys, this.liveU64s, this.packedKeys, this.unpackedKeys, this.nrWhiteouts];
    this.recount();
    const now = [this.nrKeys, this.liveU64s, this.packedKeys, this.unpackedKeys, this.nrWhiteouts];
    if (save.some((v, i) => v !== now[i])) throw new Error(`verify: counts ${save} != recount ${now}`);
  }

  /** The fields the node cache prints for a node. */
  toTextFields(out: Printbuf): Printbuf {
    out.field('btree id', this.btreeId);
    out.field('level', this.level);
    out.field('range', `${wordsToText(this.minKey, 0)} - ${wordsToText(this.maxKey, 0)}`);
    out.field('seq', this.seq.toString(16));
    out.field('format', this.format.toText());
    out.field('written', `${bytesToText(this.writtenBytes)}${this.writeInFlight ? ` (writing up to ${bytesToText(this.inFlightEnd)})` : ''}`);
    out.field('used', `${bytesToText(this.usedBytes())} of ${bytesToText(this.nodeSizeBytes)}`);
    out.field('keys', `${this.nrKeys} live (${this.packedKeys} packed, ${this.unpackedKeys} unpacked), ${this.nrWhiteouts} whiteouts, ${this.liveU64s * 8} live bytes`);
    if (this.unwrittenJournalSeqMax) out.field('unwritten journal seq', `${this.unwrittenJournalSeqMin}..${this.unwrittenJournalSeqMax}`);
    return out;
  }

  toText(out = new Printbuf()): string {
    this.toTextFields(out);
    out.field('sets', this.nsets);
    out.nested((o) => {
      for (let s = 0; s < this.nsets; s++) {
        let n = 0;
        for (let k = this.aux32[M.START + s]!; k < this.aux32[M.END + s]!; k = this.keyNext(k)) n++;
        o.line(`${s}: ${SET_STATE_NAMES[this.aux32[M.STATE + s]!]} at ${this.aux32[M.HDR + s]} keys ${this.aux32[M.START + s]}..${this.aux32[M.END + s]} (${n} keys, ${this.aux32[M.AUX_N + s]} aux groups)`);
      }
    });
    return out.toString();
  }
}

const EMPTY = new Uint8Array(0);

/* ---------------------------------------------------------------------------
 * Node iterator (bcachefs btree_node_iter): merges the sets in key order; at
 * equal positions the newest set's key is returned and older ones skipped.
 * Whiteouts are returned (type deleted); callers skip them.
 *
 * State: for each set, the first key at or after the iterator's position.
 * `winner` is the set holding the current key, `mask` the sets whose current
 * key is at that same position (advance steps all of them).
 */

export class NodeIter {
  keys: NodeKeys | null = null;
  private n = 0;
  private readonly cur = new Int32Array(MAX_SETS);
  private readonly end = new Int32Array(MAX_SETS);
  private readonly prev = new Int32Array(MAX_SETS);
  private winner = -1;
  private mask = 0;

  private setup(keys: NodeKeys): void {
    this.keys = keys;
    this.n = keys.nsets;
    const meta = keys.aux32;
    for (let s = 0; s < this.n; s++) this.end[s] = meta[M.END + s]!;
  }

  /** First key with pos >= search. */
  init(keys: NodeKeys, search: Uint32Array, si: number): void {
    this.setup(keys);
    keys.prepareSearch(search, si);
    for (let s = 0; s < this.n; s++) this.cur[s] = keys.lowerBound(s, search, si, false);
    this.computeWinner();
  }

  /** First key with pos > search. */
  initAfter(keys: NodeKeys, search: Uint32Array, si: number): void {
    this.setup(keys);
    keys.prepareSearch(search, si);
    for (let s = 0; s < this.n; s++) this.cur[s] = keys.lowerBound(s, search, si, true);
    this.computeWinner();
  }

  initStart(keys: NodeKeys): void {
    this.setup(keys);
    for (let s = 0; s < this.n; s++) this.cur[s] = keys.aux32[M.START + s]!;
    this.computeWinner();
  }

  initEnd(keys: NodeKeys): void {
    this.setup(keys);
    for (let s = 0; s < this.n; s++) this.cur[s] = this.end[s]!;
    this.winner = -1;
    this.mask = 0;
  }

  private computeWinner(): void {
    const keys = this.keys!;
    let best = -1;
    let mask = 0;
    for (let s = 0; s < this.n; s++) {
      if (this.cur[s]! >= this.end[s]!) continue;
      if (best < 0) {
        best = s;
        mask = 1 << s;
        continue;
      }
      const c = keys.keyCmpKey(this.cur[s]!, this.cur[best]!);
      if (c < 0) {
        best = s;
        mask = 1 << s;
      } else if (c === 0) {
        best = s;
        mask |= 1 << s;
      }
    }
    this.winner = best;
    this.mask = mask;
  }

  /** Handle of the current key, or -1 at the end. */
  peek(): number {
    return this.winner < 0 ? -1 : this.cur[this.winner]!;
  }

  /** Which set the current key is in (-1 at the end). */
  peekSet(): number {
    return this.winner;
  }

  advance(): void {
    if (this.winner < 0) return;
    const keys = this.keys!;
    for (let s = 0; s < this.n; s++) if (this.mask & (1 << s)) this.cur[s] = keys.keyNext(this.cur[s]!);
    this.computeWinner();
  }

  /** Compute each set's previous key into prev[]; returns the winning set, -1 at the start. */
  private computePrev(): number {
    const keys = this.keys!;
    let best = -1;
    for (let s = 0; s < this.n; s++) {
      const p = keys.prevKey(s, this.cur[s]!);
      this.prev[s] = p;
      if (p < 0) continue;
      if (best < 0 || keys.keyCmpKey(p, this.prev[best]!) >= 0) best = s;
    }
    return best;
  }

  /** The key before the current position (newest at its position), -1 at the start. Does not move. */
  peekPrev(): number {
    const b = this.computePrev();
    return b < 0 ? -1 : this.prev[b]!;
  }

  /** Step back one key. */
  rewind(): void {
    const b = this.computePrev();
    if (b < 0) return;
    const keys = this.keys!;
    const target = this.prev[b]!;
    for (let s = 0; s < this.n; s++) {
      const p = this.prev[s]!;
      if (p >= 0 && (s === b || keys.keyCmpKey(p, target) === 0)) this.cur[s] = p;
    }
    this.computeWinner();
  }
}
