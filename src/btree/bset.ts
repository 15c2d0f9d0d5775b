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
 *   - written sets (on disk, read-only in memory). After a completed write or
 *     compact() the written sets are merged into set 0, with whiteouts and
 *     shadowed keys dropped (the disk still has them, and a read applies them
 *     again). A read merges too, except a read of 2..MAX_SETS bsets: those
 *     stay in place as sets (readSets), whiteouts and all, until the first
 *     insert merges them (a cold node serves a lookup or two before it is
 *     evicted: the merge would be most of its read's JavaScript);
 *   - a sealed set whose write is in flight (read-only; bytes must not move);
 *   - the writable set (last), holding unwritten keys, at nextBsetOffset().
 * Newer sets win over older ones at equal positions; whiteouts (type deleted)
 * in a newer set hide older keys.
 *
 * Key handles are byte offsets of keys in data. Any insertKey, write
 * prepare/done, compact or read invalidates all handles and iterators.
 *
 * Aux buffer (u32 words). Words [0, AUX_META_WORDS): the per-set numbers
 * (set offsets, states, table positions; enum M), one 8-word row per set,
 * then each read-only set's summary window (enum W, below). Then per set,
 * rebuilt by rebuildAux() whenever sets change shape:
 *   read-only set: keys are cut into groups, a new group starting at the first
 *   PACKED key once AUX_GROUP_BYTES of keys have passed (bcachefs: one
 *   bkey_float per cacheline). The group heads form an Eytzinger tree
 *   (1-based, implicit): their position summaries (f64, n + 1 slots), then
 *   their offsets (u32, n + 1 words). A summary (BkeyFormat.sumMul) is the
 *   first min(posBits, 53) bits of the packed position as one double, read
 *   straight from the packed words: the descent compares one f64 per level,
 *   and the group scan compares a summary computed from two words per key,
 *   nothing unpacked. With posBits <= 53 (exact formats) summaries order
 *   positions exactly; wider formats compare the words on a summary tie
 *   (bcachefs falls back to a full compare the same way when a bkey_float's
 *   mantissa cannot decide). A set whose keys span far fewer bits than the
 *   format (the rightmost node's format reaches POS_MAX) takes its summaries
 *   from the bits after its keys' common prefix instead (its window, W);
 *   writable set: an in-order lookup table of (unpacked position, offset)
 *   entries, one per AUX_RW_GROUP_BYTES (bcachefs rw_aux_tree), fixed up
 *   incrementally by each insert: every group is at least AUX_RW_GROUP_BYTES
 *   long unless it is the only one, so the table never outgrows its share.
 * Both stay within AUX_WORDS_PER_GROUP words per AUX_GROUP_BYTES of keys:
 * auxBytes() is about 9.4% of the node size.
 *
 * A search is prepared once per node (prepareSearch): the position's
 * summary, computed from the unpacked position when the format is exact and
 * the position representable, else from the position packed lossily
 * (bcachefs bch2_bkey_pack_pos_lossy: when not representable, the greatest
 * representable position below it, and compares become strict). Then each
 * set is searched: the tree descent (or a bisection of the rw table), then a
 * scan of one group; unpacked keys are compared unpacked. The prepared search
 * is module state: prepareSearch() then lowerBound() on the same node, no
 * await in between (NodeIter.init does both).
 *
 * A read of one bset, or of more than MAX_SETS, merges the accepted bsets
 * into set 0 (mergeRuns); 2..MAX_SETS stay sets (keepReadSets: their search
 * trees filled from what the validation collected). node-io collects
 * every key's offset and summary while it validates (KeyRuns), the runs are
 * merged pairwise on those arrays down to two, and one pass merges those,
 * drops whiteouts and shadowed keys, counts the keys, picks the group heads
 * (so the search tree is filled without another walk) and collects the
 * spans of keys adjacent in data, which one native gather (memcpy per span)
 * copies.
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
  FV_BASE_HI,
  FV_BASE_LO,
  FV_MAX_HI,
  FV_MAX_LO,
  FormatRangeOpts,
  PACK_BELOW,
  PACK_EXACT,
  SUM_BITS,
  PACK_FLOOR,
  formatFromRange,
  formatKeyFits,
  formatPackFields,
  formatPackPosLossy,
  formatPosSummary,
  formatUnpackPos,
  formatUnpackSize,
  formatUnpackVersion,
  packedPosCmp,
  packedPosSummary,
} from '../format/bkey-format.js';
import { BSET_HDR_BYTES, NODE_HDR_BYTES, roundUp } from '../format/btree-node.js';
import { gather } from '../native/index.js';
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
export const bsetDebug = {
  checks: false,
  /** Read-only sets may search with summary windows (W); bench/bset.ts turns it off to measure without. */
  windows: true,
  /** A read of 2..MAX_SETS bsets keeps them as sets (NodeKeys.keepReadSets); off: it merges them, as bcachefs does. */
  keepReadSets: true,
};

/** Reads that kept their bsets as sets, and how many of those nodes were merged later for an insert (stats). */
export const readSetCounters = { kept: 0, merged: 0 };

function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/*
 * Per-set numbers at the start of the aux buffer (aux32): one row of M.ROW
 * words per set, set s at s * M.ROW, so a lookup in a one-set node reads one
 * 32-byte row (one cache line of the mmap'd aux). A const enum: tsc inlines
 * the numbers, so index arithmetic folds in hot paths.
 */
const enum M {
  HDR = 0,
  START = 1,
  END = 2,
  STATE = 3,
  AUX_OFF = 4, // aux word offset of the set's tables
  AUX_N = 5, // groups
  EYTZ_OFF = 6, // read-only sets: aux word offset of the Eytzinger head offsets
  EYTZ_SUM = 7, // read-only sets: aux word offset (even) of the Eytzinger head summaries (f64)
  ROW = 8,
}
/*
 * A read-only set's summary window (fillRoTree), one row per set after the
 * M rows. A format spanning much more than its keys (the rightmost node of a
 * level: its range ends at POS_MAX, so inode, offset and snapshot get their
 * full width) gives summaries that are all equal over the keys it holds:
 * every search step then compares packed words. Like bcachefs's bkey_float,
 * whose mantissa starts at the first bit where a tree node's keys differ, a
 * set whose keys are all packed takes its summaries from the position bits
 * after the prefix its first and last keys share: (word WS & MASK) *
 * 2^(32 - SH) + (word WS + SW >>> SH), as BkeyFormat.sumMul with a start word
 * and the prefix masked off (SW = 0: the window ends inside word WS, whose
 * bits above it are one constant for the set, and the first term drops).
 * The prefix itself is kept in the row: a search whose packed position has
 * another prefix is below or above every key of the set, decided from the
 * row alone (no key read, which in a cold node is a cache miss).
 */
const enum W {
  ON = 0, // 1: the set searches with its window
  WS = 1, // first packed word of the window
  MASK = 2, // the window's bits of that word
  SW = 3, // 0: the window ends in the first word; 1: it reaches the next
  SH = 4, // bits shifted off the last word (< 32)
  EXACT = 5, // 1: window summaries order the set's positions exactly
  PREFIX = 8, // the keys' shared packed words 0..WS (word WS: its bits above the window only)
  ROW = 16,
}
const WIN_BASE = MAX_SETS * M.ROW;
/** Aux words reserved for the per-set numbers and windows; the tables start after them (320 bytes in: cache-line aligned when aux is). */
const AUX_META_WORDS = 80;
if (WIN_BASE + MAX_SETS * W.ROW > AUX_META_WORDS) throw new Error('bset: aux meta rows overflow');
/** A window is used when it makes the set's summaries exact or skips at least this many prefix bits. */
const WIN_MIN_SKIP = 16;
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
/* The prepared search (prepareSearch): PACK_* mode, packed into the node's format (inexact formats and lossy searches only). */
const searchPacked = new Uint32Array(8);
let searchMode = PACK_EXACT;
/** Its summary (BkeyFormat.sumMul; -1 for PACK_BELOW), in a typed array: a double in a module `let` is boxed anew at every store. */
const searchSum = new Float64Array(1);
const scrA = new Uint32Array(BPOS_WORDS);
const scrB = new Uint32Array(BPOS_WORDS);
const scrFields = new Uint32Array(16);
/* mergeRuns' output before it goes back into data (and its byte view), the spans it copies; group heads (buildRoTree, mergeRuns): offsets and summaries. */
let mergeScratch = new Uint32Array(0);
let mergeScratch8 = new Uint8Array(0);
let spanScratch = new Uint32Array(0);
let headScratch = new Uint32Array(0);
let headSumScratch = new Float64Array(0);

function scratchWords(bytes: number): Uint32Array {
  if (mergeScratch.length < bytes >>> 2) {
    mergeScratch = new Uint32Array(bytes >>> 2);
    mergeScratch8 = new Uint8Array(mergeScratch.buffer);
  }
  return mergeScratch;
}

/** Room for the (offset, length) pairs of one span per key of a node of nodeSizeBytes. */
function scratchSpans(nodeSizeBytes: number): Uint32Array {
  const n = 2 * (nodeSizeBytes >>> 3);
  if (spanScratch.length < n) spanScratch = new Uint32Array(n);
  return spanScratch;
}

/** The largest value field i of format f packs (base + 2^bits - 1), as a number (exact below 2^53). */
function formatFieldMax(f: BkeyFormat, i: number): number {
  const v = f.v;
  return (v[FV_BASE_HI + i]! + v[FV_MAX_HI + i]!) * 0x1_0000_0000 + v[FV_BASE_LO + i]! + v[FV_MAX_LO + i]!;
}

/* insertKeys' copy of the lookup table entries it rebuilds. */
let rwScratchWords = new Uint32Array(0);

function rwScratch(entries: number): Uint32Array {
  if (rwScratchWords.length < entries * AUX_ENTRY_WORDS) rwScratchWords = new Uint32Array(Math.max(entries * AUX_ENTRY_WORDS, 2 * rwScratchWords.length));
  return rwScratchWords;
}

/** insertKeys: runs shorter than this go key by key. */
export const INSERT_KEYS_MERGE_MIN = 4;

/*
 * Read-only position filter (findOlder). A put must find the key it shadows
 * in the read-only sets (to count it out), and for a fresh key that search
 * (an Eytzinger descent and a group scan per set, cache misses in a big
 * node) finds nothing. A node that takes many puts between two changes of
 * its read-only sets gets a filter over their keys' positions (8-16 bits
 * per key, two set per key from one hash of the position, roFilterHash): a
 * put whose two bits are not both set has no older key there. Only puts
 * use it: a deletion always searches (whether it needs a whiteout decides
 * what reads see; a filter bug must not be able to bring a deleted key
 * back), and only exact searches (a search the format
 * cannot hold matches no packed key; a set holding an unpacked key is not
 * filtered). The filter is rebuilt for a new generation of read-only sets
 * (roGen: bumped wherever their search tables are built) once
 * RO_FILTER_AFTER searches were made against it; dropping a set never
 * hurts it (a superset filter only lets more searches through).
 */
/** findOlder searches against one generation of read-only sets before a filter is built for it. */
export const RO_FILTER_AFTER = 64;
/** Filter bits per read-only key (a power-of-two total, at least RO_FILTER_BITS_MIN). */
const RO_FILTER_BITS_PER_KEY = 8;
const RO_FILTER_BITS_MIN = 1024;

/** Filter counters of all nodes of the process (stats().putFilter): searches answered, let through, filters built, generations not filtered, filters kept for a new generation (roFilterCarry). */
export const roFilterCounters = { skips: 0, builds: 0, passes: 0, unfilterable: 0, carried: 0 };

/**
 * A position's filter hash. Exact formats: from its summary (the position's
 * offset from the format's base, one number). Others: from its packed
 * position words (a summary would lose the low bits: positions sharing
 * their first 53 bits, one inode's keys in a node with a wide format, would
 * all share one). d[w..] holds the packed position (posWords words; bits
 * past posBits in the last one belong to other fields and are masked off).
 */
function roFilterHash(f: BkeyFormat, y: number, d: Uint32Array, w: number): number {
  let h: number;
  if (f.sumExact) {
    const hi = Math.floor(y / 4294967296);
    h = ((y - hi * 4294967296) >>> 0) ^ Math.imul(hi, 0x9e3779b1);
  } else {
    h = 0x165667b1;
    for (let i = 0; i < f.posFullWords; i++) h = Math.imul(h ^ d[w + i]!, 0x9e3779b1) ^ (h >>> 16);
    if (f.posRemBits !== 0) h = Math.imul(h ^ (d[w + f.posFullWords]! >>> (32 - f.posRemBits)), 0x9e3779b1) ^ (h >>> 16);
  }
  return h;
}

/**
 * The filter word for hash h (below wordMask + 1), and the key's two bits
 * in it (roFilterWordBits): both in one 32-bit word, so a probe is one
 * memory access (a blocked Bloom filter; at 8 bits per key about 6% false
 * positives, against 5% with the bits anywhere).
 */
function roFilterWord(h: number, wordMask: number): number {
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 15;
  let h2 = Math.imul(h, 0xc2b2ae35);
  h2 ^= h2 >>> 13;
  roFilterWordBits = (1 << (h2 >>> 27)) | (1 << ((h2 >>> 22) & 31));
  return h & wordMask;
}
let roFilterWordBits = 0;
/** buildFromRange: each source set's first key in the range. */
const rangeScratch = new Int32Array(MAX_SETS);
/* insertKeys' per-key plan: place in the writable set, visible older key, flags, sizes. */
const insertPlan = { off: new Int32Array(0), older: new Int32Array(0), flags: new Uint8Array(0), newBytes: new Int32Array(0), oldBytes: new Int32Array(0) };

function insertScratch(n: number): typeof insertPlan {
  if (insertPlan.off.length < n) {
    const m = Math.max(n, 2 * insertPlan.off.length, 64);
    insertPlan.off = new Int32Array(m);
    insertPlan.older = new Int32Array(m);
    insertPlan.flags = new Uint8Array(m);
    insertPlan.newBytes = new Int32Array(m);
    insertPlan.oldBytes = new Int32Array(m);
  }
  return insertPlan;
}

/** Room for the group heads of one set of a node of nodeSizeBytes. */
function scratchHeads(nodeSizeBytes: number): Uint32Array {
  const n = nodeSizeBytes / AUX_GROUP_BYTES + 2;
  if (headScratch.length < n) headScratch = new Uint32Array(n);
  return headScratch;
}

function scratchHeadSums(nodeSizeBytes: number): Float64Array {
  const n = nodeSizeBytes / AUX_GROUP_BYTES + 2;
  if (headSumScratch.length < n) headSumScratch = new Float64Array(n);
  return headSumScratch;
}

/** The format of a node never initialized: any position. */
const FORMAT_DEFAULT = formatFromRange(new Uint32Array(5), new Uint32Array(5).fill(0xffffffff));

/**
 * Sorted runs of keys to merge (NodeKeys.mergeRuns): the key offsets and
 * their summaries (BkeyFormat.sumMul; -1 for an unpacked key), run after
 * run, oldest first; run r is [bound[r], bound[r + 1]). One module scratch
 * (NodeKeys.keyRuns()), filled and merged within one synchronous call: a
 * node read fills it while it validates the bsets (node-io bsetKeysInvalid),
 * so the merge needs no walk of its own. Room for nodeSizeBytes / 8 keys (a
 * key is at least 8 bytes): 24 bytes per entry over both halves.
 */
export class KeyRuns {
  offs = new Uint32Array(0);
  sums = new Float64Array(0);
  /** The other half of the merge rounds' ping-pong. */
  offs2 = new Uint32Array(0);
  sums2 = new Float64Array(0);
  n = 0;
  readonly bound: number[] = [0];
  /**
   * A read's runs are bsets in place: run r's bset header at setHdr[r], its
   * keys [setHdr[r] + BSET_HDR_BYTES, setEnd[r]) (node-io setRunBset). Empty
   * when the runs are not bsets in place (mergeRoSets, buildFromRange).
   */
  readonly setHdr: number[] = [];
  readonly setEnd: number[] = [];

  reset(nodeSizeBytes: number): this {
    const cap = nodeSizeBytes >>> 3;
    if (this.offs.length < cap) {
      this.offs = new Uint32Array(cap);
      this.sums = new Float64Array(cap);
      this.offs2 = new Uint32Array(cap);
      this.sums2 = new Float64Array(cap);
    }
    this.n = 0;
    this.bound.length = 1;
    this.setHdr.length = 0;
    this.setEnd.length = 0;
    return this;
  }

  /** The run just closed is the bset whose header is at hdr and whose keys end at end. */
  setRunBset(hdr: number, end: number): void {
    this.setHdr.push(hdr);
    this.setEnd.push(end);
  }

  /** Close the run of the entries added since the last one. */
  endRun(): void {
    this.bound.push(this.n);
  }
}

const keyRunsScratch = new KeyRuns();
/** What mergeRuns counted, and how many group heads it left in scratchHeads / scratchHeadSums. */
const mergeOut = { nrKeys: 0, liveU64s: 0, packedKeys: 0, heads: 0, last: 0, seqMin: 0, seqMax: 0 };

/**
 * Copy n words from src[si..] to dst[di..], forwards (so dst may overlap src
 * when di <= si). A function of its own: V8 compiles the loop tighter than
 * when it sits inside a big one.
 */
function copyWords(dst: Uint32Array, di: number, src: Uint32Array, si: number, n: number): void {
  for (let j = 0; j < n; j++) dst[di + j] = src[si + j]!;
}

/**
 * NodeKeys.mergeRuns: merge the sorted entries [a, m) (older) and [m, e)
 * (newer) of offs/sums into dO/dS from o; at equal positions only the newer
 * key is kept. Summaries decide unless a key is unpacked or (inexact
 * formats) they tie. Returns the end in dO.
 */
function mergePair(keys: NodeKeys, offs: Uint32Array, sums: Float64Array, a: number, m: number, e: number, dO: Uint32Array, dS: Float64Array, o: number): number {
  let b = m;
  while (a < m && b < e) {
    const xa = sums[a]!, xb = sums[b]!;
    let c: number;
    if (xa >= 0 && xb >= 0 && xa !== xb) c = xa < xb ? -1 : 1;
    else c = xa >= 0 && xb >= 0 && keys.format.sumExact ? 0 : keys.keyCmpKey(offs[a]!, offs[b]!);
    if (c < 0) {
      dO[o] = offs[a]!;
      dS[o++] = xa;
      a++;
    } else {
      dO[o] = offs[b]!;
      dS[o++] = xb;
      b++;
      if (c === 0) a++;
    }
  }
  for (; a < m; a++, o++) {
    dO[o] = offs[a]!;
    dS[o] = sums[a]!;
  }
  for (; b < e; b++, o++) {
    dO[o] = offs[b]!;
    dS[o] = sums[b]!;
  }
  return o;
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

/* What a detached NodeKeys points at. */
const EMPTY_U8 = new Uint8Array(0);
const EMPTY_U32 = new Uint32Array(0);
const EMPTY_F64 = new Float64Array(0);

/**
 * A node's data and aux buffers with the typed views NodeKeys works through,
 * checked and made once per buffer pair: the node cache keeps one per pair
 * and moves it between nodes, so attaching a node allocates nothing.
 */
export class KeyBuffers {
  readonly d32: Uint32Array;
  readonly aux32: Uint32Array;
  readonly auxF64: Float64Array;

  constructor(
    readonly data: Uint8Array,
    readonly aux: Uint8Array,
    nodeSizeBytes: number,
  ) {
    if (data.length !== nodeSizeBytes) throw new RangeError(`attach: data is ${data.length} bytes, node size is ${nodeSizeBytes}`);
    if (aux.length < NodeKeys.auxBytes(nodeSizeBytes)) throw new RangeError(`attach: aux is ${aux.length} bytes, need ${NodeKeys.auxBytes(nodeSizeBytes)}`);
    if (data.byteOffset % 8 !== 0 || aux.byteOffset % 8 !== 0) throw new RangeError('attach: buffers must be 8-byte aligned');
    this.d32 = new Uint32Array(data.buffer, data.byteOffset, data.length >>> 2);
    this.aux32 = new Uint32Array(aux.buffer, aux.byteOffset, aux.length >>> 2);
    this.auxF64 = new Float64Array(aux.buffer, aux.byteOffset, aux.length >>> 3);
  }
}

export class NodeKeys {
  readonly nodeSizeBytes: number;
  readonly blockSizeBytes: number;

  data: Uint8Array = EMPTY_U8;
  /** u32 view of data (internal; for node-io and benches). */
  d32: Uint32Array = EMPTY_U32;
  /** u32 view of aux (internal): per-set numbers, then the search tables. */
  aux32: Uint32Array = EMPTY_U32;
  /** f64 view of aux (internal): the search trees' summaries. */
  auxF64: Float64Array = EMPTY_F64;
  /* The format's summary numbers (BkeyFormat.sumMul), copied here for the hot paths. */
  private sumMul = 0;
  private sumWord = 0;
  private sumShift = 0;
  private sumShift2 = 0;
  private sumExact = true;
  attached = false;

  /* Node header fields. */
  btreeId = 0;
  level = 0;
  readonly minKey = new Uint32Array(BPOS_WORDS);
  readonly maxKey = new Uint32Array(BPOS_WORDS);
  seq = 0;
  format: BkeyFormat = FORMAT_DEFAULT;

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
    return this.aux32[s * M.ROW + M.HDR]!;
  }

  /** Byte offset of set s's first key. */
  setStartOf(s: number): number {
    return this.aux32[s * M.ROW + M.START]!;
  }

  /** Byte offset just past set s's last key. */
  setEndOf(s: number): number {
    return this.aux32[s * M.ROW + M.END]!;
  }

  private rwCapacity = 0;

  writeInFlight = false;
  /** End (block aligned) of the set being written. */
  inFlightEnd = 0;
  inFlightJournalSeq = 0;
  /** Journal seqs of keys inserted since the writable set was started (0 = none). */
  unwrittenJournalSeqMax = 0;
  unwrittenJournalSeqMin = 0;

  /** Generation of the read-only sets' contents (see RO_FILTER_AFTER). */
  private roGen = 0;
  /** findOlder searches made against generation roSearchesGen. */
  private roSearches = 0;
  private roSearchesGen = -1;
  /** The filter and the generation it was built for (-1: none). */
  private roFilter: Uint32Array | null = null;
  private roFilterGen = -1;
  /** Filter words - 1 (a power of two words). */
  private roFilterMask = 0;
  /** Keys hashed into the filter (counted once per set added, so keys carried through merges stay counted). */
  private roFilterKeys = 0;

  /*
   * Counts of the visible view (newest key per position), through accessors:
   * a read that keeps its bsets as sets (readSets) leaves them stale, and
   * the first use counts them (recount).
   */
  private nrKeysN = 0;
  private liveU64sN = 0;
  private packedKeysN = 0;
  private unpackedKeysN = 0;
  private nrWhiteoutsN = 0;
  private countsStale = false;
  /**
   * The read-only sets are the bsets a read kept in place, unmerged
   * (loadSorted): a node read for a lookup or two is not worth the merge.
   * They are merged before the first insert (mergeReadSets), so a node that
   * takes keys has the layout every write path expects.
   */
  readSets = false;

  get nrKeys(): number {
    if (this.countsStale) this.recount();
    return this.nrKeysN;
  }
  set nrKeys(v: number) {
    this.nrKeysN = v;
  }
  get liveU64s(): number {
    if (this.countsStale) this.recount();
    return this.liveU64sN;
  }
  set liveU64s(v: number) {
    this.liveU64sN = v;
  }
  get packedKeys(): number {
    if (this.countsStale) this.recount();
    return this.packedKeysN;
  }
  set packedKeys(v: number) {
    this.packedKeysN = v;
  }
  get unpackedKeys(): number {
    if (this.countsStale) this.recount();
    return this.unpackedKeysN;
  }
  set unpackedKeys(v: number) {
    this.unpackedKeysN = v;
  }
  /** Whiteouts stored in any set. */
  get nrWhiteouts(): number {
    if (this.countsStale) this.recount();
    return this.nrWhiteoutsN;
  }
  set nrWhiteouts(v: number) {
    this.nrWhiteoutsN = v;
  }


  constructor(nodeSizeBytes: number, blockSizeBytes: number) {
    if (!isPow2(blockSizeBytes) || blockSizeBytes < BLOCK_SIZE_MIN) throw new RangeError(`blockSizeBytes: ${blockSizeBytes}; expected a power of two >= ${BLOCK_SIZE_MIN}`);
    if (!isPow2(nodeSizeBytes) || nodeSizeBytes < NODE_SIZE_MIN || nodeSizeBytes > NODE_SIZE_MAX || nodeSizeBytes < blockSizeBytes)
      throw new RangeError(`nodeSizeBytes: ${nodeSizeBytes}; expected a power of two in [${NODE_SIZE_MIN}, ${NODE_SIZE_MAX}] and >= the block size`);
    this.nodeSizeBytes = nodeSizeBytes;
    this.blockSizeBytes = blockSizeBytes;
    this.setFormat(FORMAT_DEFAULT);
  }

  /** Aux memory one node of this size needs. */
  static auxBytes(nodeSizeBytes: number): number {
    /*
     * Read-only sets: 3 words (f64 summary + u32 offset) per group of
     * AUX_GROUP_BYTES; the writable set: 6 words per AUX_RW_GROUP_BYTES.
     * Both stay within 3 words per AUX_GROUP_BYTES of keys, plus per set one
     * partial group, the unused slot 0 of an Eytzinger array and one word
     * aligning the summaries.
     */
    const words = AUX_META_WORDS + AUX_WORDS_PER_GROUP * Math.ceil(nodeSizeBytes / AUX_GROUP_BYTES) + MAX_SETS * 2 * 6 + 16;
    return roundUp(words * 4, 64);
  }

  attach(data: Uint8Array, aux: Uint8Array): void {
    this.attachBuffers(new KeyBuffers(data, aux, this.nodeSizeBytes));
  }

  /** attach() with the views made already (the node cache keeps one KeyBuffers per buffer pair): allocates nothing. */
  attachBuffers(bufs: KeyBuffers): void {
    if (bufs.data.length !== this.nodeSizeBytes) throw new RangeError(`attach: data is ${bufs.data.length} bytes, node size is ${this.nodeSizeBytes}`);
    this.contentGen++;
    this.data = bufs.data;
    this.d32 = bufs.d32;
    this.aux32 = bufs.aux32;
    this.auxF64 = bufs.auxF64;
    this.attached = true;
    this.nsets = 0;
    this.readSets = false;
    this.countsStale = false;
    this.roGen++;
  }

  detach(): void {
    this.contentGen++;
    this.data = EMPTY_U8;
    this.d32 = EMPTY_U32;
    this.aux32 = EMPTY_U32;
    this.auxF64 = EMPTY_F64;
    this.attached = false;
    this.nsets = 0;
    this.readSets = false;
    this.countsStale = false;
    this.writeInFlight = false;
    this.roGen++;
    this.roFilter = null;
    this.roFilterGen = -1;
  }

  private setHeaderFields(h: { btreeId: number; level: number; minKey: Uint32Array; maxKey: Uint32Array; seq: number; format: BkeyFormat }): void {
    this.contentGen++;
    this.btreeId = h.btreeId;
    this.level = h.level;
    wordsCopy(this.minKey, 0, h.minKey, 0);
    wordsCopy(this.maxKey, 0, h.maxKey, 0);
    this.seq = h.seq;
    this.setFormat(h.format);
  }

  private setFormat(f: BkeyFormat): void {
    this.format = f;
    this.sumMul = f.sumMul;
    this.sumWord = f.sumWord;
    this.sumShift = f.sumShift;
    this.sumShift2 = f.sumShift2;
    this.sumExact = f.sumExact;
  }

  private resetCounts(): void {
    this.countsStale = false;
    this.readSets = false;
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
    if (pa && pb) {
      const x = this.keySum(a), y = this.keySum(b);
      if (x !== y) return x < y ? -1 : 1;
      return this.sumExact ? 0 : packedPosCmp(this.format, d, wa + 1, d, wb + 1);
    }
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
   * Prepare a search for this node (module state, used by the lowerBound,
   * cmpSearch and findExact calls that follow on the same node): the search
   * position's summary in the node's format (BkeyFormat.sumMul), computed
   * straight from the position when the format's summaries are exact, else
   * from the position packed lossily (bcachefs bch2_bkey_pack_pos_lossy:
   * when not representable, the greatest representable position below it,
   * PACK_FLOOR, or below every packed key, PACK_BELOW: summary -1).
   */
  prepareSearch(search: Uint32Array, si: number): void {
    const f = this.format;
    if (f.sumExact) {
      const y = formatPosSummary(f, search, si);
      if (y >= 0) {
        searchMode = PACK_EXACT;
        searchSum[0] = y;
        return;
      }
    }
    searchMode = formatPackPosLossy(f, search, si, searchPacked, 0);
    searchSum[0] = searchMode === PACK_BELOW ? -1 : packedPosSummary(f, searchPacked, 0);
  }

  /** Summary of packed key h's position (the node's format). */
  private keySum(h: number): number {
    const w = (h >>> 2) + 1;
    return this.d32[w]! * this.sumMul + ((this.d32[w + this.sumWord]! >>> this.sumShift) >>> this.sumShift2);
  }

  /**
   * Packed key h against the prepared search when their summaries are equal
   * and the format's summaries are not exact: the words decide.
   */
  private keyCmpSearchWords(h: number): number {
    return packedPosCmp(this.format, this.d32, (h >>> 2) + 1, searchPacked, 0);
  }

  /** Compare key h with the prepared search position (never 0 unless equal). */
  private cmpSearch(h: number, search: Uint32Array, si: number): number {
    const w = h >>> 2;
    const d = this.d32;
    if (d[w]! & (1 << 27)) {
      /* PACK_BELOW: searchSum is -1, below every summary */
      const x = this.keySum(h), y = searchSum[0]!;
      let c = x < y ? -1 : x > y ? 1 : this.sumExact ? 0 : this.keyCmpSearchWords(h);
      /* PACK_FLOOR: the key equal to the floor is below the search */
      if (searchMode === PACK_FLOOR && c === 0) c = -1;
      return c;
    }
    return wordsCmp(d, w + UNPACKED_W_POS, search, si);
  }

  /**
   * First key of set s with pos >= search (strict: > search), or the set's
   * end. prepareSearch(search) must have been called.
   *
   * Read-only sets: an Eytzinger descent over the group heads' summaries,
   * one f64 compare per level (exact formats: the strict or floor "<="
   * folded into the search summary as + 1), then a scan of one group
   * comparing summaries computed from the packed words; unpacked keys
   * compare unpacked. Inexact formats break summary ties with the words.
   */
  lowerBound(s: number, search: Uint32Array, si: number, strict: boolean): number {
    const aux = this.aux32;
    const row = s * M.ROW;
    const n = aux[row + M.AUX_N]!;
    let k = aux[row + M.START]!;
    const end = aux[row + M.END]!;
    const y = searchSum[0]!;
    /* go past keys equal to the search: strict, or a floor search (key == floor < search) */
    const le = strict || searchMode !== PACK_EXACT ? 1 : 0;
    const exact = this.sumExact;
    if (n > 0) {
      if (aux[row + M.STATE] === SET_WRITABLE) {
        const base = aux[row + M.AUX_OFF]!;
        const lim = strict ? 1 : 0;
        let lo = 0, hi = n;
        while (lo < hi) {
          const mid = (lo + hi) >>> 1;
          if (wordsCmp(aux, base + mid * E.WORDS, search, si) < lim) lo = mid + 1;
          else hi = mid;
        }
        if (lo > 0) k = aux[base + (lo - 1) * E.WORDS + E.OFF]!;
      } else if (aux[WIN_BASE + s * W.ROW + W.ON]) {
        return this.lowerBoundWindow(s, strict);
      } else {
        k = this.eytzDescend(row, n, y, le, exact, k);
      }
    }
    /* scan: packed keys by summary, unpacked ones unpacked */
    const d = this.d32;
    const mul = this.sumMul, sw = this.sumWord, sh = this.sumShift, sh2 = this.sumShift2;
    const lim = strict ? 1 : 0;
    if (exact) {
      const y1 = y + le;
      while (k < end) {
        const w = k >>> 2;
        const hdr = d[w]!;
        if (hdr & (1 << 27)) {
          if (d[w + 1]! * mul + ((d[w + 1 + sw]! >>> sh) >>> sh2) >= y1) break;
        } else if (wordsCmp(d, w + UNPACKED_W_POS, search, si) >= lim) {
          break;
        }
        k += (hdr & 0xffff) << 3;
      }
      return k;
    }
    while (k < end) {
      const w = k >>> 2;
      const hdr = d[w]!;
      if (hdr & (1 << 27)) {
        const x = d[w + 1]! * mul + ((d[w + 1 + sw]! >>> sh) >>> sh2);
        if (x > y || (x === y && this.keyCmpSearchWords(k) >= le)) break;
      } else if (wordsCmp(d, w + UNPACKED_W_POS, search, si) >= lim) {
        break;
      }
      k += (hdr & 0xffff) << 3;
    }
    return k;
  }

  /** The key before h in set s, or -1 if h is the set's first key. */
  prevKey(s: number, h: number): number {
    const start = this.aux32[s * M.ROW + M.START]!;
    if (h <= start) return -1;
    const aux = this.aux32;
    const n = this.aux32[s * M.ROW + M.AUX_N]!;
    let k = start;
    if (n > 0) {
      if (this.aux32[s * M.ROW + M.STATE] === SET_WRITABLE) {
        const base = this.aux32[s * M.ROW + M.AUX_OFF]!;
        let lo = 0, hi = n;
        while (lo < hi) {
          const mid = (lo + hi) >>> 1;
          if (aux[base + mid * E.WORDS + E.OFF]! < h) lo = mid + 1;
          else hi = mid;
        }
        if (lo > 0) k = aux[base + (lo - 1) * E.WORDS + E.OFF]!;
      } else {
        /* the heads' offsets are in key order too: descend by offset */
        const eOff = this.aux32[s * M.ROW + M.EYTZ_OFF]!;
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

  /**
   * The Eytzinger descent of a read-only set's tree (row: its M row, n > 0
   * heads) for summary y: where the group scan starts, `start` when every
   * head is above the search. Goes right past heads below the search (at or
   * below, le): i collects the path (1 = right); the last right turn is i
   * with its trailing left turns and that 1 dropped. Exact summaries fold
   * le into y; inexact ones compare the words on a tie.
   */
  private eytzDescend(row: number, n: number, y: number, le: number, exact: boolean, start: number): number {
    const aux = this.aux32;
    const t = this.auxF64;
    const b = aux[row + M.EYTZ_SUM]! >>> 1;
    const eOff = aux[row + M.EYTZ_OFF]!;
    let i = 1;
    if (exact) {
      const y1 = y + le;
      while (i <= n) i = 2 * i + (t[b + i]! < y1 ? 1 : 0);
    } else {
      while (i <= n) {
        const x = t[b + i]!;
        i = 2 * i + (x < y || (x === y && this.keyCmpSearchWords(aux[eOff + i]!) < le) ? 1 : 0);
      }
    }
    const best = i >>> (32 - Math.clz32(i & -i));
    /* the head itself is below the search: start after it */
    return best > 0 ? this.keyNext(aux[eOff + best]!) : start;
  }

  /**
   * lowerBound on a read-only set with a summary window (W). The search is
   * packed (prepareSearch packs lossily for inexact formats, the only ones
   * with windows: searchPacked holds the greatest representable position at
   * or below it). A packed search with another prefix than the set's keys is
   * below all of them (lowerBound: the set's start) or above all (its end):
   * a key above the floor is above the search too. With the same prefix, the
   * descent and the scan run on window summaries.
   */
  private lowerBoundWindow(s: number, strict: boolean): number {
    const aux = this.aux32;
    const row = s * M.ROW;
    const start = aux[row + M.START]!, end = aux[row + M.END]!;
    if (searchMode === PACK_BELOW) return start;
    const wr = WIN_BASE + s * W.ROW;
    const ws = aux[wr + W.WS]!, mask = aux[wr + W.MASK]!, sw = aux[wr + W.SW]!, sh = aux[wr + W.SH]!;
    for (let i = 0; i <= ws; i++) {
      const a = (i === ws ? searchPacked[i]! & ~mask : searchPacked[i]!) >>> 0, p = aux[wr + W.PREFIX + i]!;
      if (a !== p) return a < p ? start : end;
    }
    const mul = sw ? 2 ** (32 - sh) : 0;
    const y = ((searchPacked[ws]! & mask) >>> 0) * mul + (searchPacked[ws + sw]! >>> sh);
    const le = strict || searchMode !== PACK_EXACT ? 1 : 0;
    const exact = aux[wr + W.EXACT] === 1;
    const n = aux[row + M.AUX_N]!;
    let k = n > 0 ? this.eytzDescend(row, n, y, le, exact, start) : start;
    /* scan: every key of a windowed set is packed */
    const d = this.d32;
    if (exact) {
      const y1 = y + le;
      while (k < end) {
        const w = (k >>> 2) + 1 + ws;
        if (((d[w]! & mask) >>> 0) * mul + (d[w + sw]! >>> sh) >= y1) break;
        k += (d[k >>> 2]! & 0xffff) << 3;
      }
      return k;
    }
    while (k < end) {
      const w = (k >>> 2) + 1 + ws;
      const x = ((d[w]! & mask) >>> 0) * mul + (d[w + sw]! >>> sh);
      if (x > y || (x === y && this.keyCmpSearchWords(k) >= le)) break;
      k += (d[k >>> 2]! & 0xffff) << 3;
    }
    return k;
  }

  /** Does read-only set s search with a summary window (W)? */
  setWindowed(s: number): boolean {
    return s < this.nsets && this.aux32[s * M.ROW + M.STATE] !== SET_WRITABLE && this.aux32[WIN_BASE + s * W.ROW + W.ON] === 1;
  }

  /** The prefix bits set s's window skips (setWindowed). */
  setWindowSkip(s: number): number {
    const wr = WIN_BASE + s * W.ROW;
    const m = this.aux32[wr + W.MASK]!;
    return 32 * this.aux32[wr + W.WS]! + (m === 0xffffffff ? 0 : Math.clz32(m));
  }

  /** Window summary of packed key h in set s (see W). */
  private keySumWindow(s: number, h: number): number {
    const aux = this.aux32;
    const wr = WIN_BASE + s * W.ROW;
    const sw = aux[wr + W.SW]!, sh = aux[wr + W.SH]!;
    const w = (h >>> 2) + 1 + aux[wr + W.WS]!;
    return ((this.d32[w]! & aux[wr + W.MASK]!) >>> 0) * (sw ? 2 ** (32 - sh) : 0) + (this.d32[w + sw]! >>> sh);
  }

  /**
   * Decide set s's summary window (W) from its first and last keys: on only
   * for an inexact format, a set of packed keys only, when skipping the
   * prefix they share makes the summaries exact or skips WIN_MIN_SKIP bits.
   */
  private setWindow(s: number, allPacked: boolean, last: number): boolean {
    const aux = this.aux32;
    const wr = WIN_BASE + s * W.ROW;
    aux[wr + W.ON] = 0;
    const f = this.format;
    if (f.sumExact || !allPacked || !bsetDebug.windows) return false;
    const start = aux[s * M.ROW + M.START]!;
    if (last <= start) return false;
    const d = this.d32;
    const a = (start >>> 2) + 1, z = (last >>> 2) + 1;
    const pb = f.posBits;
    let skip = pb;
    for (let i = 0; i < f.posWords; i++) {
      let x = (d[a + i]! ^ d[z + i]!) >>> 0;
      /* bits past the position in its last word belong to other fields */
      if (i === f.posFullWords) x = f.posRemBits === 0 ? 0 : (x >>> (32 - f.posRemBits)) << (32 - f.posRemBits);
      if (x !== 0) {
        skip = 32 * i + Math.clz32(x);
        break;
      }
    }
    if (skip >= pb) return false;
    const rem = pb - skip;
    const ws = skip >>> 5, b = skip & 31;
    let sw: number, sh: number, bits: number;
    if (rem <= 32 - b) {
      /* the window ends in its first word: shift off what follows (the prefix bits above it are one constant) */
      sw = 0;
      sh = 32 - b - rem;
      bits = rem;
    } else {
      /* the rest of the first word, then up to 53 bits in all from the next */
      const k = Math.min(32, rem - (32 - b), SUM_BITS - (32 - b));
      sw = 1;
      sh = 32 - k;
      bits = 32 - b + k;
    }
    const exact = bits >= rem;
    if (!exact && skip < WIN_MIN_SKIP) return false;
    aux[wr + W.WS] = ws;
    aux[wr + W.MASK] = b === 0 ? 0xffffffff : 0xffffffff >>> b;
    aux[wr + W.SW] = sw;
    aux[wr + W.SH] = sh;
    aux[wr + W.EXACT] = exact ? 1 : 0;
    for (let i = 0; i <= ws; i++) aux[wr + W.PREFIX + i] = (i === ws ? d[a + i]! & ~aux[wr + W.MASK]! : d[a + i]!) >>> 0;
    aux[wr + W.ON] = 1;
    return true;
  }

  /**
   * The newest key exactly at the prepared search position among the
   * read-only sets, or -1. forPut: the caller is a put (not a deletion),
   * which may be answered by the read-only filter (RO_FILTER_AFTER).
   */
  private findOlder(search: Uint32Array, si: number, forPut = false): number {
    const last = this.hasWritable() ? this.nsets - 2 : this.nsets - 1;
    if (last < 0) return -1;
    if (forPut && searchMode === PACK_EXACT && this.roFilterAbsent()) {
      roFilterCounters.skips++;
      return -1;
    }
    for (let s = last; s >= 0; s--) {
      const k = this.lowerBound(s, search, si, false);
      if (k < this.aux32[s * M.ROW + M.END]! && this.cmpSearch(k, search, si) === 0) return k;
    }
    return -1;
  }

  /**
   * Does the read-only filter say no read-only key has the prepared (exact)
   * search's position? Counts the search toward building one.
   */
  private roFilterAbsent(): boolean {
    if (this.roFilterGen !== this.roGen) {
      if (this.roSearchesGen !== this.roGen) {
        this.roSearchesGen = this.roGen;
        this.roSearches = 0;
      }
      if (++this.roSearches < RO_FILTER_AFTER || !this.roFilterBuild()) return false;
    }
    const w = roFilterWord(roFilterHash(this.format, searchSum[0]!, searchPacked, 0), this.roFilterMask);
    if ((this.roFilter![w]! & roFilterWordBits) !== roFilterWordBits) return true;
    roFilterCounters.passes++;
    return false;
  }

  /** Build the read-only filter for this generation (false, and none for it, if a read-only key is unpacked). */
  private roFilterBuild(): boolean {
    const last = this.hasWritable() ? this.nsets - 2 : this.nsets - 1;
    // the node's visible keys and whiteouts: about the read-only keys (more keys only raise the false positives)
    const keys = this.nrKeys + this.nrWhiteouts;
    let bits = RO_FILTER_BITS_MIN;
    while (bits < keys * RO_FILTER_BITS_PER_KEY && bits < 1 << 26) bits *= 2;
    const words = bits >>> 5;
    let f = this.roFilter;
    if (f === null || f.length < words || f.length > 4 * words) f = new Uint32Array(words);
    else f.fill(0, 0, words);
    this.roFilter = f;
    this.roFilterMask = words - 1;
    this.roFilterKeys = 0;
    for (let s = 0; s <= last; s++) {
      if (!this.roFilterAddSet(s)) {
        // an unpacked key: not for this generation (its searches never reach the count again)
        roFilterCounters.unfilterable++;
        this.roSearches = -Infinity;
        return false;
      }
    }
    this.roFilterGen = this.roGen;
    roFilterCounters.builds++;
    return true;
  }

  /** Set set s's keys' bits in the filter; false at the first unpacked key (the filter is then unusable). */
  private roFilterAddSet(s: number): boolean {
    const f = this.roFilter!;
    const mask = this.roFilterMask;
    const d = this.d32;
    const exact = this.format.sumExact;
    const row = s * M.ROW;
    let n = 0;
    for (let k = this.aux32[row + M.START]!, end = this.aux32[row + M.END]!; k < end; k += (d[k >>> 2]! & 0xffff) << 3) {
      if ((d[k >>> 2]! & (1 << 27)) === 0) return false;
      const w = roFilterWord(roFilterHash(this.format, exact ? this.keySum(k) : 0, d, (k >>> 2) + 1), mask);
      f[w] = f[w]! | roFilterWordBits;
      n++;
    }
    this.roFilterKeys += n;
    return true;
  }

  /**
   * Whether the filter is current now: read before the read-only sets
   * change, handed to roFilterCarry after.
   */
  private roFilterCurrent(): boolean {
    return this.roFilter !== null && this.roFilterGen === this.roGen;
  }

  /**
   * The read-only sets changed (a new generation) but the filter, current
   * before (wasCurrent), still covers them: their keys are a subset of
   * before's (a merge drops whiteouts and shadowed keys), plus set `added`'s
   * if given (the sealed writable set), whose keys are added. It is kept for
   * the new generation, so a node written often keeps filtering without a
   * rebuild per write; dropped instead when the added set holds an unpacked
   * key, or when it has taken twice the keys it was sized for (false
   * positives grow; the next generation builds it again).
   */
  private roFilterCarry(wasCurrent: boolean, added = -1): void {
    if (!wasCurrent) return;
    if (added >= 0 && !this.roFilterAddSet(added)) {
      roFilterCounters.unfilterable++;
      return;
    }
    if (this.roFilterKeys * RO_FILTER_BITS_PER_KEY > 2 * 32 * (this.roFilterMask + 1)) return;
    this.roFilterGen = this.roGen;
    roFilterCounters.carried++;
  }

  /** Newest key at position p in any set (whiteouts included), or -1. */
  findExact(p: Uint32Array, pi = 0): number {
    this.prepareSearch(p, pi);
    for (let s = this.nsets - 1; s >= 0; s--) {
      const k = this.lowerBound(s, p, pi, false);
      if (k < this.aux32[s * M.ROW + M.END]! && this.cmpSearch(k, p, pi) === 0) return k;
    }
    return -1;
  }

  /* -------------------------------------------------------------------------
   * Sets.
   */

  /** Lowest version (journal seq) of a key not yet on disk: in the writable set or a sealed one being written (0: none). Debug checks only: walks the keys. */
  unwrittenVersionMin(): number {
    let min = 0;
    for (let s = 0; s < this.nsets; s++) {
      const state = this.aux32[s * M.ROW + M.STATE]!;
      if (state !== SET_WRITABLE && state !== SET_SEALED) continue;
      for (let k = this.aux32[s * M.ROW + M.START]!, end = this.aux32[s * M.ROW + M.END]!; k < end; k = this.keyNext(k)) {
        const v = this.keyVersion(k);
        if (v > 0 && (min === 0 || v < min)) min = v;
      }
    }
    return min;
  }

  /** Keys in the writable set (inserted since the last seal, not yet in any write). */
  hasUnwrittenKeys(): boolean {
    return this.hasWritable() && this.aux32[(this.nsets - 1) * M.ROW + M.END]! > this.aux32[(this.nsets - 1) * M.ROW + M.START]!;
  }

  hasWritable(): boolean {
    return this.nsets > 0 && this.aux32[(this.nsets - 1) * M.ROW + M.STATE] === SET_WRITABLE;
  }

  /** Where the next bset (its header) goes. */
  nextBsetOffset(): number {
    if (this.writeInFlight) return this.inFlightEnd;
    return this.writtenBytes === 0 ? NODE_HDR_BYTES : this.writtenBytes;
  }

  /** u64s of key space left in the writable set (or in a new one). */
  u64sRemaining(): number {
    if (this.hasWritable()) return (this.nodeSizeBytes - this.aux32[(this.nsets - 1) * M.ROW + M.END]!) >>> 3;
    /* a read's sets are merged before the first insert: the writable set will have a slot */
    if (this.nsets >= MAX_SETS && !this.readSets) return 0;
    return Math.max(0, this.nodeSizeBytes - this.nextBsetOffset() - BSET_HDR_BYTES) >>> 3;
  }

  /** Bytes of the bucket in use: everything up to the end of the last set. */
  usedBytes(): number {
    if (this.nsets === 0) return this.writtenBytes;
    const last = this.nsets - 1;
    const end = this.aux32[last * M.ROW + M.STATE] === SET_WRITABLE ? this.aux32[last * M.ROW + M.END]! : roundUp(this.aux32[last * M.ROW + M.END]!, this.blockSizeBytes);
    return Math.max(end, this.writtenBytes);
  }

  /** Key bytes a fresh bset appended now could hold (0: the node cannot take another append). */
  bytesAvailableForAppend(): number {
    const off = this.hasWritable() ? this.aux32[(this.nsets - 1) * M.ROW + M.HDR]! : this.nextBsetOffset();
    return Math.max(0, this.nodeSizeBytes - off - BSET_HDR_BYTES);
  }

  private startWritable(): boolean {
    if (this.readSets) throw new Error('startWritable: the sets a read kept are not merged (mergeReadSets first)');
    if (this.nsets >= MAX_SETS) return false;
    const hdr = this.nextBsetOffset();
    if (hdr + BSET_HDR_BYTES + 8 > this.nodeSizeBytes) return false;
    const s = this.nsets++;
    this.aux32[s * M.ROW + M.HDR] = hdr;
    this.aux32[s * M.ROW + M.START] = this.aux32[s * M.ROW + M.END] = hdr + BSET_HDR_BYTES;
    this.aux32[s * M.ROW + M.STATE] = SET_WRITABLE;
    this.aux32[s * M.ROW + M.AUX_N] = 0;
    this.aux32[s * M.ROW + M.AUX_OFF] = s === 0 ? AUX_META_WORDS : this.auxRoEnd(s - 1);
    this.rwCapacity = Math.floor((this.aux32.length - this.aux32[s * M.ROW + M.AUX_OFF]!) / E.WORDS);
    if (this.rwCapacity < Math.floor((this.nodeSizeBytes - this.aux32[s * M.ROW + M.START]!) / AUX_RW_GROUP_BYTES) + 1) throw new Error('aux: buffer too small for the rw table');
    this.unwrittenJournalSeqMax = this.unwrittenJournalSeqMin = 0;
    return true;
  }

  /** First aux word after the read-only set s's tables. */
  private auxRoEnd(s: number): number {
    return this.aux32[s * M.ROW + M.EYTZ_OFF]! + this.aux32[s * M.ROW + M.AUX_N]! + 1;
  }

  /* -------------------------------------------------------------------------
   * Aux trees.
   */

  /** Rebuild every set's aux table from the keys. */
  rebuildAux(): void {
    let w = AUX_META_WORDS;
    for (let s = 0; s < this.nsets; s++) {
      this.aux32[s * M.ROW + M.AUX_OFF] = w;
      if (this.aux32[s * M.ROW + M.STATE] === SET_WRITABLE) {
        this.rwCapacity = Math.floor((this.aux32.length - w) / E.WORDS);
        const need = Math.floor((this.nodeSizeBytes - this.aux32[s * M.ROW + M.START]!) / AUX_RW_GROUP_BYTES) + 1;
        if (this.rwCapacity < need) throw new Error(`aux: rw table capacity ${this.rwCapacity} < ${need}`);
        this.buildRwTable(s);
      } else {
        w = this.buildRoTree(s, w);
      }
    }
  }

  /**
   * Aux tables of a read-only set at aux word w. Keys are cut into groups, a
   * new group starting at the first packed key once AUX_GROUP_BYTES have
   * passed; the group heads form an Eytzinger tree (1-based, slot 0 unused):
   * their summaries (f64 at an even word, so a set starting at
   * AUX_META_WORDS has the tree's first three levels in one cache line), then
   * their offsets (u32). Returns the first word after the tables.
   */
  private buildRoTree(s: number, w: number): number {
    const d = this.d32;
    const row = s * M.ROW;
    const start = this.aux32[row + M.START]!, end = this.aux32[row + M.END]!;
    const heads = scratchHeads(this.nodeSizeBytes);
    const sums = scratchHeadSums(this.nodeSizeBytes);
    let n = 0;
    let gstart = -AUX_GROUP_BYTES;
    let allPacked = true;
    let last = start;
    for (let k = start; k < end; k += (d[k >>> 2]! & 0xffff) << 3) {
      last = k;
      if (!(d[k >>> 2]! & (1 << 27))) allPacked = false;
      else if (k - gstart >= AUX_GROUP_BYTES) {
        heads[n] = k;
        sums[n++] = this.keySum(k);
        gstart = k;
      }
    }
    return this.fillRoTree(s, w, n, sums, allPacked, last);
  }

  /**
   * buildRoTree's second half: the tables of read-only set s at aux word w
   * from its n group heads in key order (offsets in scratchHeads, summaries
   * in sums). Returns the first word after the tables.
   */
  private fillRoTree(s: number, w: number, n: number, sums: Float64Array, allPacked: boolean, last: number): number {
    this.roGen++;
    const aux = this.aux32;
    const row = s * M.ROW;
    const heads = scratchHeads(this.nodeSizeBytes);
    if (this.format.posBits === 0) n = 0; /* every packed key at one position: nothing to search */
    if (this.setWindow(s, allPacked, last)) for (let j = 0; j < n; j++) sums[j] = this.keySumWindow(s, heads[j]!);
    const eSum = w + (w & 1);
    const eOff = eSum + 2 * (n + 1);
    const endW = eOff + n + 1;
    if (endW > aux.length) throw new Error('aux: buffer too small');
    aux[row + M.AUX_N] = n;
    aux[row + M.EYTZ_SUM] = eSum;
    aux[row + M.EYTZ_OFF] = eOff;
    if (n === 0) return endW;
    const t = this.auxF64;
    const b = eSum >>> 1;
    /* in-order walk of the implicit tree 1..n, handing out the heads in key order */
    let i = 1;
    while (2 * i <= n) i *= 2;
    for (let j = 0; j < n; j++) {
      aux[eOff + i] = heads[j]!;
      t[b + i] = sums[j]!;
      /* in-order successor */
      if (2 * i + 1 <= n) {
        i = 2 * i + 1;
        while (2 * i <= n) i *= 2;
      } else {
        while (i & 1) i >>>= 1;
        i >>>= 1;
      }
    }
    if (i !== 0) throw new Error('aux: in-order walk did not end at the root');
    return endW;
  }

  private buildRwTable(s: number): void {
    const aux = this.aux32;
    const base = this.aux32[s * M.ROW + M.AUX_OFF]!;
    const start = this.aux32[s * M.ROW + M.START]!, end = this.aux32[s * M.ROW + M.END]!;
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
    this.aux32[s * M.ROW + M.AUX_N] = n;
  }

  private rwEntryOff(j: number): number {
    return this.aux32[this.aux32[(this.nsets - 1) * M.ROW + M.AUX_OFF]! + j * E.WORDS + E.OFF]!;
  }

  /** Index of the last rw entry with offset <= o (-1 if none). */
  private rwEntryAt(o: number): number {
    const aux = this.aux32;
    const base = this.aux32[(this.nsets - 1) * M.ROW + M.AUX_OFF]!;
    let lo = 0, hi = this.aux32[(this.nsets - 1) * M.ROW + M.AUX_N]!;
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
    const base = this.aux32[s * M.ROW + M.AUX_OFF]!;
    const n = this.aux32[s * M.ROW + M.AUX_N]!;
    if (n >= this.rwCapacity) throw new Error('aux: rw table full');
    const e = base + j * E.WORDS;
    aux.copyWithin(e + E.WORDS, e, base + n * E.WORDS);
    this.keyPosTo(k, aux, e);
    aux[e + E.OFF] = k;
    this.aux32[s * M.ROW + M.AUX_N] = n + 1;
  }

  private rwRemoveEntry(j: number): void {
    const s = this.nsets - 1;
    const base = this.aux32[s * M.ROW + M.AUX_OFF]!;
    const n = this.aux32[s * M.ROW + M.AUX_N]!;
    const e = base + j * E.WORDS;
    this.aux32.copyWithin(e, e + E.WORDS, base + n * E.WORDS);
    this.aux32[s * M.ROW + M.AUX_N] = n - 1;
  }

  private rwGroupSpan(j: number): number {
    const s = this.nsets - 1;
    const next = j + 1 < this.aux32[s * M.ROW + M.AUX_N]! ? this.rwEntryOff(j + 1) : this.aux32[s * M.ROW + M.END]!;
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
    const n = this.aux32[(this.nsets - 1) * M.ROW + M.AUX_N]!;
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
    const base = this.aux32[s * M.ROW + M.AUX_OFF]!;
    const delta = newBytes - oldBytes;
    let n = this.aux32[s * M.ROW + M.AUX_N]!;
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
        const emptied = o >= this.aux32[s * M.ROW + M.END]! || (j + 1 < n && this.rwEntryOff(j + 1) === o);
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
    this.accountHdr(this.d32[h >>> 2]!, sign);
  }

  /** accountAdd for a key given by its header word (insertKeys: a key that went aside). */
  private accountHdr(hdr: number, sign: number): void {
    /* the fields, not the accessors: inserts run on merged nodes, whose counts are never stale */
    this.nrKeysN += sign;
    this.liveU64sN += sign * (hdr & 0xffff);
    if (hdr & (1 << 27)) this.packedKeysN += sign;
    else this.unpackedKeysN += sign;
  }

  private noteJournalSeqInternal(seq: number): void {
    if (seq === 0) return;
    if (seq > this.unwrittenJournalSeqMax) this.unwrittenJournalSeqMax = seq;
    if (this.unwrittenJournalSeqMin === 0 || seq < this.unwrittenJournalSeqMin) this.unwrittenJournalSeqMin = seq;
  }

  /** Raise the journal seq the next written bset will carry (e.g. a new node holding keys of commit `seq`). */
  noteJournalSeq(seq: number): void {
    if (this.readSets) this.mergeReadSets();
    if (!this.hasWritable() && !this.startWritable()) throw new Error('noteJournalSeq: no room for a writable set');
    this.noteJournalSeqInternal(seq);
  }

  /** Write k at offset o (space already made), packed if `packed`. */
  private writeKey(o: number, type: number, p: Uint32Array, pi: number, size: number, version: number, value: Uint8Array, packed: boolean): number {
    this.contentGen++;
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
   * Bumped by every key insert (updates, whiteouts, building a node), never
   * by compaction or writes: a transaction's read set compares it to tell
   * whether a leaf's contents changed since it read them.
   */
  modSeq = 0;

  /**
   * Bumped whenever key bytes are written (insert, append, a header read or
   * built, buffers attached or detached), never by compaction or sorting in
   * place: with the node's hashVal it names the keys a decoded copy was made
   * from (iter.ts ChildIndex).
   */
  contentGen = 0;

  private keySizeMaxGen = -1;
  private keySizeMaxVal = 0;

  /**
   * The largest size of any key in the node's sets (extents: the longest
   * extent; shadowed keys and whiteouts counted too, so an upper bound of
   * the visible ones), from a walk of the sets, kept until key bytes are
   * written again (contentGen: compaction and sorting in place only drop
   * keys). Scans for extents reaching back over a position pass over the
   * rest of a leaf whose keys end further past it than this
   * (iter.ts extentScanSkip).
   */
  keySizeMax(): number {
    if (this.keySizeMaxGen === this.contentGen) return this.keySizeMaxVal;
    let m = 0;
    for (let s = 0; s < this.nsets; s++) {
      const end = this.aux32[s * M.ROW + M.END]!;
      for (let h = this.aux32[s * M.ROW + M.START]!; h < end; h = this.keyNext(h)) {
        const z = this.keySize(h);
        if (z > m) m = z;
      }
    }
    this.keySizeMaxVal = m;
    this.keySizeMaxGen = this.contentGen;
    return m;
  }

  /**
   * u64s inserting k may take from the room left (the commit's space check,
   * deciding as insertKey does): a deletion needs room for a whiteout only
   * when a read-only set holds a live key at its position (otherwise it takes
   * nothing, or gives room back); any other key at most its packed size.
   * Searches the node for deletions only.
   */
  insertU64s(k: BkeyI): number {
    if (k.type !== KEY_TYPE.deleted) return this.keyU64sPacked(k);
    this.prepareSearch(k.p, 0);
    const older = this.findOlder(k.p, 0);
    return older >= 0 && !this.keyIsWhiteout(older) ? this.keyU64sPacked(k) : 0;
  }

  /**
   * insertKey and insertKeys' first step for one key: checked (well formed
   * under bsetDebug, inside the node's range), then the newest key at its
   * position among the read-only sets, or -1 (the search is left prepared).
   */
  private olderOf(k: BkeyI, who: string): number {
    if (bsetDebug.checks) {
      const err = bkeyInvalid(k);
      if (err !== null) throw new Error(`${who}: ${err}`);
    }
    if (!this.keyInRange(k.p, 0)) throw new RangeError(`${who}: ${wordsToText(k.p, 0)} outside node range ${wordsToText(this.minKey, 0)}..${wordsToText(this.maxKey, 0)}`);
    this.prepareSearch(k.p, 0);
    return this.findOlder(k.p, 0, k.type !== KEY_TYPE.deleted);
  }

  /**
   * Insert k into the writable set (bcachefs bch2_bset_insert + the needs
   * whiteout logic of bch2_btree_bset_insert_key). Replaces a key at the same
   * position in the writable set; a deletion leaves a whiteout only if a
   * read-only set holds a live key there. Returns false (node unchanged) if
   * it does not fit.
   */
  insertKey(k: BkeyI): boolean {
    if (this.readSets) this.mergeReadSets();
    this.modSeq++;
    this.contentGen++;
    const older = this.olderOf(k, 'insertKey');
    const isDel = k.type === KEY_TYPE.deleted;
    const olderLive = older >= 0 && !this.keyIsWhiteout(older);
    if (!this.hasWritable()) {
      if (isDel && !olderLive) return true;
      if (!this.startWritable()) return false;
    }
    const s = this.nsets - 1;
    const end = this.aux32[s * M.ROW + M.END]!;
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
    if (exists && this.keyIsWhiteout(o)) this.nrWhiteoutsN--;
    if (delta !== 0) this.data.copyWithin(o + newBytes, o + oldBytes, end);
    this.aux32[s * M.ROW + M.END] = end + delta;
    if (newBytes) {
      this.writeKey(o, k.type, k.p, 0, k.size, k.version, value, packed);
      if (isDel) this.nrWhiteoutsN++;
      else this.accountAdd(o, 1);
    }
    this.rwFix(o, oldBytes, newBytes);
    this.noteJournalSeqInternal(k.version);
    if (bsetDebug.checks) this.verify();
    return true;
  }

  /**
   * Insert keys[from, to) (sorted by position) into the writable set: the
   * node ends exactly as insertKey on each key in turn would leave it (same
   * bytes, counts, journal seqs, modSeq), but a run of keys costs
   * one pass over the writable set (bcachefs inserts key by key; a commit of
   * many keys into one leaf here merges them in, the way a node write's
   * sort merges sets): each key's older key and place in the writable set
   * are found first, nothing changed; then the writable set from the first
   * place on is rebuilt with the new keys, and its lookup table once: in
   * place from the end backwards when no key's place moves left (inserts,
   * growing replacements: each old span moves once), else through a copy
   * aside. Short runs, and runs holding one position
   * more than once, go key by key (a merge copies the tail twice; one
   * memmove per key is cheaper for a few keys).
   * Returns false, the node unchanged, if the keys do not fit together.
   */
  insertKeys(keys: readonly BkeyI[], from = 0, to = keys.length): boolean {
    /* before any handle into the read-only sets is taken: the merge moves keys */
    if (this.readSets) this.mergeReadSets();
    const nr = to - from;
    if (nr < INSERT_KEYS_MERGE_MIN) return this.insertKeysEach(keys, from, to);
    const sc = insertScratch(nr);
    const hadWritable = this.hasWritable();
    /* 1. per key: the older visible key and the place in the writable set; nothing changes */
    let s = this.nsets - 1;
    let end = hadWritable ? this.aux32[s * M.ROW + M.END]! : 0;
    let delta = 0;
    /* the lowest running delta: negative when some key's place moves left (a replacement by a smaller key, a removal) */
    let deltaMin = 0;
    let needWritable = false;
    for (let i = 0; i < nr; i++) {
      const k = keys[from + i]!;
      /* positions not strictly ascending (journal replay: one position in several entries): key by key */
      if (i > 0 && wordsCmp(keys[from + i - 1]!.p, 0, k.p, 0) >= 0) return this.insertKeysEach(keys, from, to);
      const older = this.olderOf(k, 'insertKeys');
      const isDel = k.type === KEY_TYPE.deleted;
      const olderLive = older >= 0 && !this.keyIsWhiteout(older);
      let o = -1;
      let exists = false;
      if (hadWritable) {
        o = this.lowerBound(s, k.p, 0, false);
        exists = o < end && this.cmpSearch(o, k.p, 0) === 0;
      }
      let newBytes = 0;
      let packed = false;
      if (!isDel || olderLive) {
        packed = formatKeyFits(this.format, k.p, 0, k.size, k.version);
        newBytes = keyBytesFor(packed ? 4 + 4 * this.format.fieldWords : UNPACKED_VALUE_OFFSET, isDel ? 0 : k.value.length);
        needWritable = true;
      }
      const oldBytes = exists ? this.keyBytes(o) : 0;
      delta += newBytes - oldBytes;
      if (delta < deltaMin) deltaMin = delta;
      sc.off[i] = o;
      sc.older[i] = exists ? o : older;
      /* bits: 1 exists, 2 packed, 4 nothing to do (insertKey returns early) */
      sc.flags[i] = (exists ? 1 : 0) | (packed ? 2 : 0) | (!exists && newBytes === 0 ? 4 : 0);
      sc.newBytes[i] = newBytes;
      sc.oldBytes[i] = oldBytes;
    }
    if (!hadWritable) {
      if (!needWritable) {
        this.modSeq += nr;
        this.contentGen++;
        return true;
      }
      /* room first: a set started and left empty would change the node */
      if (this.nextBsetOffset() + BSET_HDR_BYTES + delta > this.nodeSizeBytes || !this.startWritable()) return false;
      s = this.nsets - 1;
      end = this.aux32[s * M.ROW + M.END]!;
      for (let i = 0; i < nr; i++) sc.off[i] = end;
    }
    if (end + delta > this.nodeSizeBytes) return false;

    /* 2. merge the keys into the writable set from the first place on */
    this.modSeq += nr;
    this.contentGen++;
    let first = -1;
    for (let i = 0; i < nr && first < 0; i++) if (!(sc.flags[i]! & 4)) first = sc.off[i]!;
    if (first < 0) return true;
    const aux = this.aux32;
    const row = s * M.ROW;
    const start = aux[row + M.START]!;
    const newEnd = end + delta;
    /*
     * The lookup table: entries before `first` stay; the old entries after it
     * go aside too. Group heads for the rest are picked from candidates in
     * key order, the old heads (moved) and the new keys, their positions
     * known without unpacking: a candidate becomes a head once a group's
     * worth of bytes passed since the last head and a group's worth remains.
     */
    const tbase = aux[row + M.AUX_OFF]!;
    const nOld = aux[row + M.AUX_N]!;
    let kept = 0;
    while (kept < nOld && aux[tbase + kept * E.WORDS + E.OFF]! < first) kept++;
    const oldEntries = rwScratch(nOld - kept + nr + 1);
    oldEntries.set(aux.subarray(tbase + kept * E.WORDS, tbase + nOld * E.WORDS));
    let nEntries = kept;
    let gstart = kept > 0 ? aux[tbase + (kept - 1) * E.WORDS + E.OFF]! : -AUX_RW_GROUP_BYTES;
    const cand = (off: number, pw: Uint32Array, pi: number): void => {
      if (nEntries === 0 && off !== start) {
        /* the set's first key (already back in place) heads the first group */
        this.keyPosTo(start, aux, tbase);
        aux[tbase + E.OFF] = start;
        nEntries = 1;
        gstart = start;
      }
      if (nEntries > 0 && (off - gstart < AUX_RW_GROUP_BYTES || newEnd - off < AUX_RW_GROUP_BYTES)) return;
      const e = tbase + nEntries++ * E.WORDS;
      wordsCopy(aux, e, pw, pi);
      aux[e + E.OFF] = off;
      gstart = off;
    };
    let oj = 0;
    const oN = nOld - kept;
    const data = this.data;
    /* old keys at [lo, hi) (old offsets) end up `shift` bytes further: their table heads are candidates */
    const oldCands = (lo: number, hi: number, shift: number): void => {
      while (oj < oN && oldEntries[oj * E.WORDS + E.OFF]! < lo) oj++;
      for (; oj < oN && oldEntries[oj * E.WORDS + E.OFF]! < hi; oj++) cand(oldEntries[oj * E.WORDS + E.OFF]! + shift, oldEntries, oj * E.WORDS);
    };
    let out: number;
    if (deltaMin >= 0) {
      /*
       * No key's place moves left: the set is rebuilt in place from its end
       * backwards, each old span between two new keys moved once (going
       * aside and back moved it twice). First, in key order with nothing
       * moved yet: the replaced keys counted out, the table's candidates.
       */
      let cur = first;
      let shift = 0;
      for (let i = 0; i < nr; i++) {
        const f = sc.flags[i]!;
        if (f & 4) continue;
        const o = sc.off[i]!;
        if (o > cur) {
          oldCands(cur, o, shift);
          cur = o;
        }
        this.insertKeysCountOut(sc.older[i]!, f);
        const ob = f & 1 ? sc.oldBytes[i]! : 0;
        cur += ob;
        const nb = sc.newBytes[i]!;
        if (nb) cand(o + shift, keys[from + i]!.p, 0);
        shift += nb - ob;
      }
      if (end > cur) oldCands(cur, end, shift);
      /* then from the end: the old span right of each key moves by the shift after the key, then the key goes in */
      let spanEnd = end;
      let shiftAfter = delta;
      for (let i = nr - 1; i >= 0; i--) {
        const f = sc.flags[i]!;
        if (f & 4) continue;
        const k = keys[from + i]!;
        const o = sc.off[i]!;
        const ob = f & 1 ? sc.oldBytes[i]! : 0;
        const nb = sc.newBytes[i]!;
        if (spanEnd > o + ob && shiftAfter > 0) data.copyWithin(o + ob + shiftAfter, o + ob, spanEnd);
        const at = o + shiftAfter - (nb - ob);
        if (nb) this.insertKeysWrite(at, k, f);
        this.noteJournalSeqInternal(k.version);
        spanEnd = o;
        shiftAfter = at - o;
      }
      out = newEnd;
    } else {
      /* some place moves left: the set from `first` on goes aside and comes back merged with the keys */
      const aside = scratchWords(this.nodeSizeBytes);
      const asideBytes = new Uint8Array(aside.buffer, 0, end - first);
      asideBytes.set(data.subarray(first, end));
      out = first;
      let cur = first;
      /* old keys [cur, o) come back at out */
      const copyOld = (o: number): void => {
        data.set(asideBytes.subarray(cur - first, o - first), out);
        oldCands(cur, o, out - cur);
        out += o - cur;
        cur = o;
      };
      for (let i = 0; i < nr; i++) {
        const f = sc.flags[i]!;
        if (f & 4) continue;
        const k = keys[from + i]!;
        const o = sc.off[i]!;
        if (o > cur) copyOld(o);
        /* the visible key it replaces (read before anything moved: handles are the old offsets) */
        this.insertKeysCountOut(sc.older[i]!, f, f & 1 ? aside[(sc.older[i]! - first) >>> 2]! : -1);
        if (f & 1) cur += sc.oldBytes[i]!;
        const nb = sc.newBytes[i]!;
        if (nb) {
          this.insertKeysWrite(out, k, f);
          cand(out, k.p, 0);
          out += nb;
        }
        this.noteJournalSeqInternal(k.version);
      }
      if (end > cur) copyOld(end);
    }
    if (out !== newEnd) throw new Error(`insertKeys: merged set ends at ${out}, expected ${newEnd}`);
    aux[row + M.END] = out;
    if (nEntries === 0 && out > start) {
      this.keyPosTo(start, aux, tbase);
      aux[tbase + E.OFF] = start;
      nEntries = 1;
    }
    /* a kept group the keys after it shrank below a group: it joins the one before */
    while (nEntries > 1 && newEnd - aux[tbase + (nEntries - 1) * E.WORDS + E.OFF]! < AUX_RW_GROUP_BYTES) nEntries--;
    aux[row + M.AUX_N] = nEntries;
    if (bsetDebug.checks) this.verify();
    return true;
  }

  /**
   * insertKeys: count out the visible key a new key replaces (handle visOld,
   * -1 for none; flags bit 1: it is in the writable set, a whiteout there
   * counted in nrWhiteouts). hdr: its header word if not read from data
   * (the key has gone aside).
   */
  private insertKeysCountOut(visOld: number, flags: number, hdr = -1): void {
    if (visOld < 0) return;
    const h = hdr >= 0 ? hdr : this.d32[visOld >>> 2]!;
    if (((h >>> 16) & 0xff) !== KEY_TYPE.deleted) this.accountHdr(h, -1);
    else if (flags & 1) this.nrWhiteoutsN--;
  }

  /** insertKeys: write key k at byte `at` of the writable set and count it in (flags bit 2: packed). */
  private insertKeysWrite(at: number, k: BkeyI, flags: number): void {
    const isDel = k.type === KEY_TYPE.deleted;
    this.writeKey(at, k.type, k.p, 0, k.size, k.version, isDel ? EMPTY : k.value, (flags & 2) !== 0);
    if (isDel) this.nrWhiteoutsN++;
    else this.accountAdd(at, 1);
  }

  /** insertKeys one key at a time (the room for all of them checked first). */
  private insertKeysEach(keys: readonly BkeyI[], from: number, to: number): boolean {
    const before = this.u64sRemaining();
    let need = 0;
    for (let i = from; i < to; i++) need += this.insertU64s(keys[i]!);
    if (need > before) return false;
    for (let i = from; i < to; i++) if (!this.insertKey(keys[i]!)) throw new Error('insertKeys: a key did not fit after the room check');
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
    const o = this.aux32[s * M.ROW + M.END]!;
    let bytes: number;
    if (sameFormat) {
      /* a key is packed exactly when it fits the format: same bytes here */
      this.contentGen++;
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
    this.aux32[s * M.ROW + M.END] = o + bytes;
    if (this.keyIsWhiteout(o)) this.nrWhiteoutsN++;
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
   * append: dst may hold keys already, all sorting before these (a merge
   * copies the left sibling, then the right one).
   */
  sortInto(dst: NodeKeys, from?: Uint32Array, to?: Uint32Array, append = false): number {
    if (!append && dst.hasWritable() && dst.aux32[(dst.nsets - 1) * M.ROW + M.END] !== dst.aux32[(dst.nsets - 1) * M.ROW + M.START]) throw new Error('sortInto: destination is not empty');
    const it = new NodeIter();
    if (from) it.init(this, from, 0);
    else it.initStart(this);
    if (to) it.limitTo(to, 0);
    const same = this.format === dst.format || this.format.equals(dst.format);
    let n = 0;
    let last = -1;
    for (let h = it.peek(); h >= 0; it.advance(), h = it.peek()) {
      if (this.keyIsWhiteout(h)) continue;
      const o = dst.hasWritable() ? dst.aux32[(dst.nsets - 1) * M.ROW + M.END]! : -1;
      if (!dst.appendFrom(this, h, same)) {
        dst.appendDone();
        return -1;
      }
      if (bsetDebug.checks && last >= 0 && dst.keyCmpKey(last, o < 0 ? dst.aux32[(dst.nsets - 1) * M.ROW + M.START]! : o) >= 0) throw new Error('sortInto: keys out of order');
      last = o < 0 ? dst.aux32[(dst.nsets - 1) * M.ROW + M.START]! : o;
      n++;
    }
    dst.appendDone();
    if (bsetDebug.checks) dst.verify();
    return n;
  }

  /**
   * sortInto(dst = this) for a fresh node in src's own format (a split's
   * halves, as a rule): the keys of each of src's sets in [from, to]
   * (inclusive) are collected as runs and merged as a read merges bsets
   * (mergeRuns: newest wins, whiteouts dropped, spans of adjacent keys
   * copied natively), not copied one by one. The same keys in the same
   * writable set as sortInto; returns how many, or -1 if they do not fit
   * (this is then left empty).
   */
  buildFromRange(src: NodeKeys, from: Uint32Array, to: Uint32Array): number {
    if (src === this) throw new Error('buildFromRange: source and destination are one node');
    if (this.format !== src.format && !this.format.equals(src.format)) throw new Error('buildFromRange: formats differ (sortInto repacks)');
    if (!this.hasWritable() && !this.startWritable()) return -1;
    const s = this.nsets - 1;
    const row = s * M.ROW;
    const start = this.aux32[row + M.START]!;
    if (this.aux32[row + M.END] !== start || this.nrKeys !== 0) throw new Error('buildFromRange: destination is not empty');
    const runs = src.keyRuns();
    const lo = rangeScratch;
    src.prepareSearch(from, 0);
    for (let t = 0; t < src.nsets; t++) lo[t] = src.lowerBound(t, from, 0, false);
    src.prepareSearch(to, 0);
    for (let t = 0; t < src.nsets; t++) {
      const hi = src.lowerBound(t, to, 0, true);
      src.collectRun(runs, lo[t]!, Math.max(lo[t]!, hi));
    }
    const end = src.mergeRuns(runs, start, this);
    this.contentGen++;
    if (end < 0) return -1;
    this.aux32[row + M.END] = end;
    this.nrKeys = mergeOut.nrKeys;
    this.liveU64s = mergeOut.liveU64s;
    this.packedKeys = mergeOut.packedKeys;
    this.unpackedKeys = mergeOut.nrKeys - mergeOut.packedKeys;
    if (mergeOut.seqMax !== 0) {
      this.noteJournalSeqInternal(mergeOut.seqMin);
      this.noteJournalSeqInternal(mergeOut.seqMax);
    }
    this.buildRwTable(s);
    if (bsetDebug.checks) this.verify();
    return mergeOut.nrKeys;
  }

  /**
   * Format for a new node holding this node's live keys in [from, to]
   * (bcachefs bch2_btree_calc_format): the smallest format that packs them
   * all, widened to reach `extra` fields (e.g. versionMax: the journal seq
   * new keys will carry, so later inserts stay packed).
   */
  computeFormat(from?: Uint32Array, to?: Uint32Array, extra: FormatExtra = {}): BkeyFormat {
    const st = new BkeyFormatState();
    this.formatAddLive(st, from, to);
    return formatStateDone(st, extra);
  }

  /**
   * May a new node holding some of this node's live keys keep this node's
   * format instead of `fitted`, the one computed for them (sortInto then
   * copies the keys as they are, nothing repacked)? Yes when every live key
   * is packed here, keys packed in either take as many words (so the new
   * node fills exactly as it would), this format gives exact summaries if
   * `fitted` does, and it still packs versions up to versionMin (the new
   * node's later keys).
   */
  formatReusable(fitted: BkeyFormat, versionMin: number): boolean {
    const f = this.format;
    if (f === fitted) return true;
    if (this.unpackedKeys !== 0 || f.fieldWords !== fitted.fieldWords || (fitted.sumExact && !f.sumExact)) return false;
    return formatFieldMax(f, F_VERSION) >= versionMin && formatFieldMax(f, F_SIZE) >= formatFieldMax(fitted, F_SIZE);
  }

  /**
   * formatReusable without computing the fitted format (no walk over the
   * keys): a new node's fitted format covers both ends of its range [from,
   * to] and versions from its oldest key (no newer than versionNow, the
   * journal's seq) to versionMax, so when a format covering just that needs
   * as many words as this one, and is inexact if this one is, the fitted
   * one cannot do better. (A node built without keys could get fewer words,
   * but a version field that starts at versionMax: its keys would all go in
   * unpacked.)
   */
  formatReusableForRange(from: Uint32Array, to: Uint32Array, versionNow: number, versionMax: number, sizeMax: number, versionMin: number): boolean {
    const f = this.format;
    if (this.unpackedKeys !== 0 || formatFieldMax(f, F_VERSION) < versionMin || formatFieldMax(f, F_SIZE) < sizeMax) return false;
    const st = new BkeyFormatState();
    st.addPos(from, 0);
    st.addPos(to, 0);
    st.addNumber(F_VERSION, versionNow);
    st.addNumber(F_VERSION, versionMax);
    if (sizeMax) {
      st.addNumber(F_SIZE, 0);
      st.addNumber(F_SIZE, sizeMax);
    }
    if (st.done().fieldWords < f.fieldWords) return false;
    if (f.sumExact) return true;
    /* position bits the range alone needs (before any padding) */
    const bitLen = (a: bigint, b: bigint): number => (a === b ? 0 : (a > b ? a - b : b - a).toString(2).length);
    const w = (p: Uint32Array, i: number): bigint => (BigInt(p[i]!) << 32n) | BigInt(p[i + 1]!);
    const posBits = bitLen(w(from, 0), w(to, 0)) + bitLen(w(from, 2), w(to, 2)) + bitLen(BigInt(from[4]!), BigInt(to[4]!));
    return posBits > SUM_BITS;
  }

  /** computeFormat for the live keys of several nodes together (a merge of siblings). */
  static computeFormatOf(srcs: readonly NodeKeys[], extra: FormatExtra = {}): BkeyFormat {
    const st = new BkeyFormatState();
    for (const src of srcs) src.formatAddLive(st);
    return formatStateDone(st, extra);
  }

  /** Add the live keys in [from, to] (default: all) to a format being computed. */
  private formatAddLive(st: BkeyFormatState, from?: Uint32Array, to?: Uint32Array): void {
    const it = new NodeIter();
    if (from) it.init(this, from, 0);
    else it.initStart(this);
    if (to) it.limitTo(to, 0);
    const p = new Uint32Array(BPOS_WORDS);
    for (let h = it.peek(); h >= 0; it.advance(), h = it.peek()) {
      if (this.keyIsWhiteout(h)) continue;
      this.keyPosTo(h, p, 0);
      st.addKey(p, 0, this.keySize(h), this.keyVersion(h));
    }
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

  /** The node's KeyRuns scratch, empty (node-io fills it while validating a read; mergeRoSets by collectRun). */
  keyRuns(): KeyRuns {
    return keyRunsScratch.reset(this.nodeSizeBytes);
  }

  /** Append the keys of data[start, end) to runs as one run. */
  private collectRun(runs: KeyRuns, start: number, end: number): void {
    const offs = runs.offs, sums = runs.sums;
    let n = runs.n;
    for (let k = start; k < end; k = this.keyNext(k)) {
      offs[n] = k;
      sums[n++] = this.keySumOrNone(k);
    }
    runs.n = n;
    runs.endRun();
  }

  /**
   * Merge the runs (oldest first; each strictly sorted) into one run at
   * dstOff, newest key winning at equal positions, whiteouts and shadowed
   * keys dropped (everything merged must be on disk). Returns the end
   * offset. As it copies, it counts the keys into mergeOut and collects the
   * group heads buildRoTree would choose, so a read needs no further walk.
   * into: the node whose data takes the result (this by default; another
   * one for buildFromRange, whose keys need not be on disk, and then -1
   * when they do not fit, and the journal seqs of the keys copied go into
   * mergeOut.seqMin/seqMax).
   */
  mergeRuns(runs: KeyRuns, dstOff: number, into: NodeKeys = this): number {
    const nr = runs.bound.length - 1;
    let offs = runs.offs, sums = runs.sums;
    /*
     * Merge pairwise, adjacent runs at a time, until two runs are left: one
     * compare per key and round (log2 of the runs), equal positions settled
     * by that compare (the newer run's key wins; merging adjacent runs keeps
     * "newer" on the right). Whiteouts go through the rounds (they hide
     * older keys) and are dropped below. The last two runs are merged by
     * the copying pass itself, with the same compare, so a read of two or
     * three bsets (the common case) walks its entries once less.
     */
    if (nr > 2) {
      let dO = runs.offs2, dS = runs.sums2;
      const bound = runs.bound;
      for (let r0 = nr; r0 > 2; ) {
        let o = 0;
        let w = 0;
        for (let r = 0; r < r0; r += 2) {
          if (r + 1 < r0) {
            o = mergePair(this, offs, sums, bound[r]!, bound[r + 1]!, bound[r + 2]!, dO, dS, o);
          } else {
            for (let i = bound[r]!, e = bound[r + 1]!; i < e; i++, o++) {
              dO[o] = offs[i]!;
              dS[o] = sums[i]!;
            }
          }
          /* bound[w + 1] <= bound[r + 1]: only entries already read are overwritten */
          bound[++w] = o;
        }
        r0 = w;
        bound.length = w + 1;
        const to = offs, ts = sums;
        offs = dO;
        sums = dS;
        dO = to;
        dS = ts;
      }
    }
    /* the older run [0, m), the newer [m, e) (empty when one run is left) */
    const e = runs.bound[runs.bound.length - 1] ?? 0;
    const m = runs.bound.length > 2 ? runs.bound[1]! : e;
    /*
     * Copy the survivors to dstOff. One run moving down (a read of one bset,
     * or set 0 with whiteouts) copies in place, forwards; several runs go
     * through scratch: the loop only collects spans of keys adjacent in data
     * (runs of one bset between newer keys), copied natively in one call.
     */
    const d = this.d32;
    const other = into !== this;
    let seqMin = 0, seqMax = 0;
    const inPlace = !other && nr === 1 && (e === 0 || dstOff <= offs[0]!);
    const out = inPlace ? d : scratchWords(this.nodeSizeBytes);
    const spans = inPlace ? spanScratch : scratchSpans(this.nodeSizeBytes);
    const base = inPlace ? dstOff >>> 2 : 0;
    let o = base;
    const heads = scratchHeads(this.nodeSizeBytes);
    const headSums = scratchHeadSums(this.nodeSizeBytes);
    let nh = 0;
    let gstart = -AUX_GROUP_BYTES;
    let nrKeys = 0, liveU64s = 0, packedKeys = 0, lastAt = dstOff;
    /* the open span: words [spanStart, spanEnd) of data; ns spans closed */
    let spanStart = 0, spanEnd = 0, ns = 0;
    /* the module constants and fields the loop reads, as locals (V8 reloads them at every use otherwise) */
    const deleted = KEY_TYPE.deleted, groupBytes = AUX_GROUP_BYTES, sumExact = this.sumExact;
    for (let a = 0, b = m; a < m || b < e; ) {
      /* the next entry of the two runs' merge, as mergePair picks it */
      let i: number;
      if (b >= e) i = a++;
      else if (a >= m) i = b++;
      else {
        const xa = sums[a]!, xb = sums[b]!;
        let c: number;
        if (xa >= 0 && xb >= 0 && xa !== xb) c = xa < xb ? -1 : 1;
        else c = xa >= 0 && xb >= 0 && sumExact ? 0 : this.keyCmpKey(offs[a]!, offs[b]!);
        if (c < 0) i = a++;
        else {
          i = b++;
          if (c === 0) a++;
        }
      }
      const k = offs[i]!;
      const w = k >>> 2;
      const hdr = d[w]!;
      if (((hdr >>> 16) & 0xff) === deleted) continue;
      const u64s = hdr & 0xffff;
      const at = dstOff + ((o - base) << 2);
      if (hdr & (1 << 27)) {
        packedKeys++;
        if (at - gstart >= groupBytes) {
          heads[nh] = at;
          headSums[nh++] = sums[i]!;
          gstart = at;
        }
      }
      nrKeys++;
      liveU64s += u64s;
      lastAt = at;
      if (other) {
        const v = this.keyVersion(k);
        if (v !== 0) {
          if (v > seqMax) seqMax = v;
          if (seqMin === 0 || v < seqMin) seqMin = v;
        }
      }
      if (inPlace) {
        if (o !== w) copyWords(out, o, d, w, u64s << 1);
      } else if (w === spanEnd) {
        spanEnd += u64s << 1;
      } else {
        if (spanEnd > spanStart) {
          spans[2 * ns] = spanStart << 2;
          spans[2 * ns++ + 1] = (spanEnd - spanStart) << 2;
        }
        spanStart = w;
        spanEnd = w + (u64s << 1);
      }
      o += u64s << 1;
    }
    if (!inPlace) {
      if (spanEnd > spanStart) {
        spans[2 * ns] = spanStart << 2;
        spans[2 * ns++ + 1] = (spanEnd - spanStart) << 2;
      }
      if (other) {
        if (dstOff + (o << 2) > into.nodeSizeBytes) return -1;
        if (gather(into.data, dstOff, this.data, spans, ns) !== o << 2) throw new Error('mergeRuns: gather copied the wrong length');
      } else {
        if (gather(mergeScratch8, 0, this.data, spans, ns) !== o << 2) throw new Error('mergeRuns: gather copied the wrong length');
        d.set(out.subarray(0, o), dstOff >>> 2);
      }
    }
    mergeOut.nrKeys = nrKeys;
    mergeOut.liveU64s = liveU64s;
    mergeOut.packedKeys = packedKeys;
    mergeOut.heads = nh;
    mergeOut.last = lastAt;
    mergeOut.seqMin = seqMin;
    mergeOut.seqMax = seqMax;
    return dstOff + ((o - base) << 2);
  }

  /** keySum for a packed key, -1 for an unpacked one. */
  private keySumOrNone(h: number): number {
    const w = h >>> 2;
    const d = this.d32;
    return d[w]! & (1 << 27) ? d[w + 1]! * this.sumMul + ((d[w + 1 + this.sumWord]! >>> this.sumShift) >>> this.sumShift2) : -1;
  }

  /**
   * Merge the read-only sets into set 0 (after a write or a read). Returns
   * false if there was nothing to do (one set in place, no whiteouts).
   */
  private mergeRoSets(): boolean {
    this.readSets = false;
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
    this.roGen++;
    const runs = this.keyRuns();
    for (let s = 0; s < nro; s++) this.collectRun(runs, this.aux32[s * M.ROW + M.START]!, this.aux32[s * M.ROW + M.END]!);
    const start = NODE_HDR_BYTES + BSET_HDR_BYTES;
    const end = this.mergeRuns(runs, start);
    const hadWritable = this.hasWritable();
    const w = this.nsets - 1;
    const wHdr = this.aux32[w * M.ROW + M.HDR]!, wStart = this.aux32[w * M.ROW + M.START]!, wEnd = this.aux32[w * M.ROW + M.END]!;
    this.aux32[M.HDR] = NODE_HDR_BYTES;
    this.aux32[M.START] = start;
    this.aux32[M.END] = end;
    this.aux32[M.STATE] = SET_WRITTEN;
    this.nsets = 1;
    if (hadWritable) {
      this.aux32[1 * M.ROW + M.HDR] = wHdr;
      this.aux32[1 * M.ROW + M.START] = wStart;
      this.aux32[1 * M.ROW + M.END] = wEnd;
      this.aux32[1 * M.ROW + M.STATE] = SET_WRITABLE;
      this.nsets = 2;
    }
    return true;
  }

  /** Recompute the counts from the keys. */
  recount(): void {
    this.countsStale = false;
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
      for (let k = this.aux32[s * M.ROW + M.START]!; k < this.aux32[s * M.ROW + M.END]!; k = this.keyNext(k)) if (this.keyIsWhiteout(k)) this.nrWhiteouts++;
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
      if (this.aux32[s * M.ROW + M.END]! > this.aux32[s * M.ROW + M.START]!) throw new Error('compact: node has unwritten keys');
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

  /**
   * After a read: merge the accepted bsets' keys (runs, filled while they
   * were validated) into set 0, then its search tree and counts from what
   * the merge collected.
   */
  loadSorted(runs: KeyRuns, writtenBytes: number): void {
    this.writtenBytes = writtenBytes;
    const nr = runs.bound.length - 1;
    if (nr > 1 && nr <= MAX_SETS && runs.setHdr.length === nr && bsetDebug.keepReadSets) {
      this.keepReadSets(runs);
      return;
    }
    const start = NODE_HDR_BYTES + BSET_HDR_BYTES;
    const end = this.mergeRuns(runs, start);
    this.nsets = 1;
    this.aux32[M.HDR] = NODE_HDR_BYTES;
    this.aux32[M.START] = start;
    this.aux32[M.END] = end;
    this.aux32[M.STATE] = SET_WRITTEN;
    this.set0FromMerge();
    if (bsetDebug.checks) this.verify();
  }

  /** Set 0 just merged (mergeRuns, nothing after it): its search tree and the node's counts from what the merge collected. */
  private set0FromMerge(): void {
    this.aux32[M.AUX_OFF] = AUX_META_WORDS;
    this.fillRoTree(0, AUX_META_WORDS, mergeOut.heads, scratchHeadSums(this.nodeSizeBytes), mergeOut.packedKeys === mergeOut.nrKeys, mergeOut.last);
    this.countsStale = false;
    this.nrKeys = mergeOut.nrKeys;
    this.liveU64s = mergeOut.liveU64s;
    this.packedKeys = mergeOut.packedKeys;
    this.unpackedKeys = mergeOut.nrKeys - mergeOut.packedKeys;
    this.nrWhiteouts = 0;
  }

  /**
   * loadSorted for a read of 2..MAX_SETS bsets: each stays where it is as a
   * read-only set (whiteouts and shadowed keys included: newer sets win, as
   * after a write), its search tree filled from the offsets and summaries
   * the validation collected, without another walk of the keys. The counts
   * are left to their first use (a lookup needs none); the first insert
   * merges (mergeReadSets).
   */
  private keepReadSets(runs: KeyRuns): void {
    const nr = runs.bound.length - 1;
    const offs = runs.offs, sums = runs.sums;
    const heads = scratchHeads(this.nodeSizeBytes);
    const headSums = scratchHeadSums(this.nodeSizeBytes);
    const groupBytes = AUX_GROUP_BYTES;
    let w = AUX_META_WORDS;
    this.nsets = nr;
    for (let r = 0; r < nr; r++) {
      const row = r * M.ROW;
      const hdr = runs.setHdr[r]!;
      this.aux32[row + M.HDR] = hdr;
      this.aux32[row + M.START] = hdr + BSET_HDR_BYTES;
      this.aux32[row + M.END] = runs.setEnd[r]!;
      this.aux32[row + M.STATE] = SET_WRITTEN;
      this.aux32[row + M.AUX_OFF] = w;
      /* buildRoTree's group heads, from the collected entries (a summary < 0: an unpacked key) */
      let n = 0;
      let gstart = -groupBytes;
      let allPacked = true;
      let last = hdr + BSET_HDR_BYTES;
      for (let i = runs.bound[r]!, e = runs.bound[r + 1]!; i < e; i++) {
        const k = offs[i]!;
        const x = sums[i]!;
        last = k;
        if (x < 0) allPacked = false;
        else if (k - gstart >= groupBytes) {
          heads[n] = k;
          headSums[n++] = x;
          gstart = k;
        }
      }
      w = this.fillRoTree(r, w, n, headSums, allPacked, last);
    }
    this.readSets = true;
    this.countsStale = true;
    readSetCounters.kept++;
    if (bsetDebug.checks) this.verify();
  }

  /** Merge the sets a read kept (keepReadSets) into set 0, as a read that merges leaves the node. */
  private mergeReadSets(): void {
    this.mergeRoSets();
    this.set0FromMerge();
    readSetCounters.merged++;
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
    if (this.aux32[s * M.ROW + M.END] === this.aux32[s * M.ROW + M.START] && this.writtenBytes > 0) return -1;
    return s;
  }

  sealWritable(s: number, sealedEnd: number, journalSeq: number): void {
    this.aux32[s * M.ROW + M.STATE] = SET_SEALED;
    this.writeInFlight = true;
    this.inFlightEnd = sealedEnd;
    this.inFlightJournalSeq = journalSeq;
    this.unwrittenJournalSeqMax = this.unwrittenJournalSeqMin = 0;
    const filtered = this.roFilterCurrent();
    this.rebuildAux();
    this.roFilterCarry(filtered, s);
  }

  /** An empty writable set with nothing to write: forget its seqs (node is clean). */
  dropEmptyWritable(): void {
    if (this.hasWritable() && this.aux32[(this.nsets - 1) * M.ROW + M.END] === this.aux32[(this.nsets - 1) * M.ROW + M.START]) this.unwrittenJournalSeqMax = this.unwrittenJournalSeqMin = 0;
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
    for (let s = 0; s < this.nsets; s++) if (this.aux32[s * M.ROW + M.STATE] === SET_SEALED) this.aux32[s * M.ROW + M.STATE] = SET_WRITTEN;
  }

  /** After writeDoneDeferred: merge the written sets in memory (keys move; the caller holds the write lock). */
  compactWritten(): void {
    if (this.writeInFlight) return;
    /* An empty writable set started during the write keeps its place only if it has keys. */
    if (this.hasWritable()) {
      const s = this.nsets - 1;
      if (this.aux32[s * M.ROW + M.END] === this.aux32[s * M.ROW + M.START]) {
        this.nsets--;
        this.unwrittenJournalSeqMax = this.unwrittenJournalSeqMin = 0;
      }
    }
    /*
     * The sealed set's tree was built at seal time: nothing to redo unless
     * sets merged. Then set 0 gets the tree of the group heads the merge
     * picked, the writable set's lookup table moves behind it (its keys do
     * not move), and the counts stay: the visible keys are the same, only
     * whiteouts and shadowed keys the disk holds are gone from memory.
     */
    const rw = this.hasWritable() ? this.nsets - 1 : -1;
    const rwN = rw >= 0 ? this.aux32[rw * M.ROW + M.AUX_N]! : 0;
    const rwOff = rw >= 0 ? this.aux32[rw * M.ROW + M.AUX_OFF]! : 0;
    const rwSaved = rwScratch(rwN);
    if (rwN) rwSaved.set(this.aux32.subarray(rwOff, rwOff + rwN * E.WORDS));
    const filtered = this.roFilterCurrent();
    if (this.mergeRoSets()) {
      this.aux32[M.AUX_OFF] = AUX_META_WORDS;
      const w = this.fillRoTree(0, AUX_META_WORDS, mergeOut.heads, scratchHeadSums(this.nodeSizeBytes), mergeOut.packedKeys === mergeOut.nrKeys, mergeOut.last);
      if (this.hasWritable()) {
        const row = (this.nsets - 1) * M.ROW;
        this.aux32[row + M.AUX_OFF] = w;
        this.rwCapacity = Math.floor((this.aux32.length - w) / E.WORDS);
        const need = Math.floor((this.nodeSizeBytes - this.aux32[row + M.START]!) / AUX_RW_GROUP_BYTES) + 1;
        if (this.rwCapacity < need) throw new Error(`aux: rw table capacity ${this.rwCapacity} < ${need}`);
        this.aux32.set(rwSaved.subarray(0, rwN * E.WORDS), w);
        this.aux32[row + M.AUX_N] = rwN;
        let whiteouts = 0;
        for (let k = this.aux32[row + M.START]!, end = this.aux32[row + M.END]!; k < end; k = this.keyNext(k)) if (this.keyIsWhiteout(k)) whiteouts++;
        this.nrWhiteouts = whiteouts;
      } else {
        this.nrWhiteouts = 0;
      }
      this.roFilterCarry(filtered);
    }
    if (bsetDebug.checks) this.verify();
  }

  /* -------------------------------------------------------------------------
   * Checks and printing.
   */

  /** Expensive consistency check: order, range, aux tables, counts. Throws on failure. */
  verify(): void {
    const sizeMax = this.keySizeMaxGen === this.contentGen ? this.keySizeMaxVal : -1;
    for (let s = 0; s < this.nsets; s++) {
      let prev = -1;
      for (let k = this.aux32[s * M.ROW + M.START]!; k < this.aux32[s * M.ROW + M.END]!; k = this.keyNext(k)) {
        if (this.keyU64s(k) === 0) throw new Error(`verify: zero-size key at ${k}`);
        if (sizeMax >= 0 && this.keySize(k) > sizeMax) throw new Error(`verify: key at ${k} of size ${this.keySize(k)} above the kept keySizeMax ${sizeMax} (contentGen not bumped)`);
        if (prev >= 0 && this.keyCmpKey(prev, k) >= 0) throw new Error(`verify: set ${s} out of order at ${k}`);
        this.keyPosTo(k, scrA, 0);
        if (!this.keyInRange(scrA, 0)) throw new Error(`verify: key ${wordsToText(scrA, 0)} outside node range`);
        prev = k;
      }
      if (prev >= 0 && this.keyNext(prev) !== this.aux32[s * M.ROW + M.END]) throw new Error(`verify: set ${s} end mismatch`);
      const n = this.aux32[s * M.ROW + M.AUX_N]!;
      if (this.aux32[s * M.ROW + M.STATE] === SET_WRITABLE) {
        const base = this.aux32[s * M.ROW + M.AUX_OFF]!;
        if ((n === 0) !== (this.aux32[s * M.ROW + M.START] === this.aux32[s * M.ROW + M.END])) throw new Error('verify: rw table emptiness');
        for (let j = 0; j < n; j++) {
          const e = base + j * E.WORDS;
          const off = this.aux32[e + E.OFF]!;
          if (j === 0 && off !== this.aux32[s * M.ROW + M.START]) throw new Error('verify: rw entry 0 not at set start');
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
    if (this.roFilterGen === this.roGen) out.field('put filter', `${(this.roFilterMask + 1) * 4} bytes over the read-only sets (${this.roFilterKeys} keys)`);
    else if (this.roSearchesGen === this.roGen) out.field('put filter', this.roSearches < 0 ? 'none (an unpacked read-only key)' : `none yet (${this.roSearches} of ${RO_FILTER_AFTER} searches)`);
    return out;
  }

  toText(out = new Printbuf()): string {
    this.toTextFields(out);
    out.field('sets', this.readSets ? `${this.nsets} (as read, not merged)` : this.nsets);
    out.nested((o) => {
      for (let s = 0; s < this.nsets; s++) {
        let n = 0;
        for (let k = this.aux32[s * M.ROW + M.START]!; k < this.aux32[s * M.ROW + M.END]!; k = this.keyNext(k)) n++;
        o.line(`${s}: ${SET_STATE_NAMES[this.aux32[s * M.ROW + M.STATE]!]} at ${this.aux32[s * M.ROW + M.HDR]} keys ${this.aux32[s * M.ROW + M.START]}..${this.aux32[s * M.ROW + M.END]} (${n} keys, ${this.aux32[s * M.ROW + M.AUX_N]} aux groups${this.setWindowed(s) ? `, summary window from bit ${this.setWindowSkip(s)}${this.aux32[WIN_BASE + s * W.ROW + W.EXACT] ? ', exact' : ''}` : ''})`);
      }
    });
    return out.toString();
  }
}

const EMPTY = new Uint8Array(0);

/** What a new node's format must reach beyond the keys it starts with (computeFormat). */
export interface FormatExtra {
  /** The journal seq now: new keys carry it or later (without it, a node built with no keys would pack no version below versionMax). */
  versionNow?: number;
  versionMax?: number;
  sizeMax?: number;
  positions?: Uint32Array[];
}

function formatStateDone(st: BkeyFormatState, extra: FormatExtra): BkeyFormat {
  if (extra.versionNow !== undefined) st.addNumber(F_VERSION, extra.versionNow);
  if (extra.versionMax !== undefined) st.addNumber(F_VERSION, extra.versionMax);
  if (extra.sizeMax !== undefined) st.addNumber(F_SIZE, extra.sizeMax);
  for (const q of extra.positions ?? []) st.addPos(q, 0);
  return st.done();
}

/* ---------------------------------------------------------------------------
 * Node iterator (bcachefs btree_node_iter): merges the sets in key order; at
 * equal positions the newest set's key is returned and older ones skipped.
 * Whiteouts are returned (type deleted); callers skip them.
 *
 * State: for each set, the first key at or after the iterator's position,
 * and where the set stops: its end, or (limitTo) its first key past a
 * range's end. `winner` is the set holding the current key, `mask` the sets
 * whose current key is at that same position (advance steps all of them).
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
    for (let s = 0; s < this.n; s++) this.end[s] = meta[s * M.ROW + M.END]!;
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
    for (let s = 0; s < this.n; s++) this.cur[s] = keys.aux32[s * M.ROW + M.START]!;
    this.computeWinner();
  }

  /**
   * Stop after the keys at or before `search` (a range's inclusive end): each
   * set's end becomes its first key past it, found once by the set's search,
   * so walking the range compares no key with its end. After an init.
   */
  limitTo(search: Uint32Array, si: number): void {
    const keys = this.keys!;
    keys.prepareSearch(search, si);
    for (let s = 0; s < this.n; s++) {
      const e = keys.lowerBound(s, search, si, true);
      if (e < this.end[s]!) this.end[s] = e;
    }
    this.computeWinner();
  }

  initEnd(keys: NodeKeys): void {
    this.setup(keys);
    for (let s = 0; s < this.n; s++) this.cur[s] = this.end[s]!;
    this.winner = -1;
    this.mask = 0;
  }

  private computeWinner(): void {
    if (this.n === 1) {
      /* one set (most nodes, after a read or a write): no merging */
      const live = this.cur[0]! < this.end[0]!;
      this.winner = live ? 0 : -1;
      this.mask = live ? 1 : 0;
      return;
    }
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
