// SPDX-License-Identifier: GPL-2.0-only
/*
 * On-disk layout of a btree node (bcachefs struct btree_node + struct bset).
 *
 * A node occupies one bucket of nodeSizeBytes. The first write puts the node
 * header at offset 0 and the first bset right after it; every later write
 * appends one bset at the next block boundary. All integers are LE; u64s are
 * lo u32 then hi u32, except positions, which are 5 u32 words most
 * significant first (see bkey.ts).
 *
 * Node header (NODE_HDR_BYTES = 128):
 *   0    u32     magic NODE_MAGIC
 *   4    u32     crc32c of bytes [8, 128)
 *   8    u16     header format version (NODE_FORMAT_VERSION)
 *   10   u8      btree id
 *   11   u8      level (0 = leaf)
 *   12   u32     flags (zero)
 *   16   u64     node seq (< 2^52; random, the node's hash value; every bset repeats it)
 *   24   u32[5]  min key
 *   44   u32[5]  max key
 *   64   48 B    key format (bkey-format.ts)
 *   112  16 B    zero
 *
 * Bset header (BSET_HDR_BYTES = 48), keys follow it:
 *   0    u32     crc32c of bytes [4, 48 + u64s * 8) of this bset (header + keys)
 *   4    u32     magic BSET_MAGIC
 *   8    u64     node seq (must equal the header's)
 *   16   u64     journal seq: highest journal seq of the keys (< 2^53)
 *   24   u32     byte offset of this bset header inside the node
 *   28   u32     u64s of keys following the header
 *   32   u64     journal seq min: lowest journal seq of the keys (0: unknown)
 *   40   u32     crc32c of bytes [4, 40): the header alone
 *   44   u32     zero
 * A bset ends at 48 + u64s * 8; the bytes up to the next block boundary are
 * zero and not covered by any checksum. The first bset starts at
 * NODE_HDR_BYTES; later ones at block-aligned offsets.
 *
 * The header's own checksum tells a bset whose keys are damaged from one that
 * was never written: a header that checks out was written whole (a header
 * never spans a block, and blocks are written whole), so a bad checksum over
 * the keys is either a torn append (the keys' later blocks never reached the
 * disk) or damage, and the journal seq range decides which (node-io.ts).
 */

import { crc32c } from '../util/crc32c.js';
import { BkeyFormat, FORMAT_BYTES, formatDecode, formatEncode } from './bkey-format.js';

export const NODE_MAGIC = 0x4e545853; // "SXTN"
export const BSET_MAGIC = 0x54455342; // "BSET"
export const NODE_FORMAT_VERSION = 2;

export const NODE_HDR_BYTES = 128;
const NH_MAGIC = 0;
const NH_CSUM = 4;
const NH_CSUM_START = 8;
const NH_VERSION = 8;
const NH_BTREE_ID = 10;
const NH_LEVEL = 11;
const NH_FLAGS = 12;
const NH_SEQ = 16;
const NH_MIN_KEY = 24;
const NH_MAX_KEY = 44;
const NH_FORMAT = 64;
const NH_RESERVED = NH_FORMAT + FORMAT_BYTES;

export const BSET_HDR_BYTES = 48;
const BS_CSUM = 0;
const BS_CSUM_START = 4;
const BS_MAGIC = 4;
const BS_SEQ = 8;
const BS_JOURNAL_SEQ = 16;
const BS_OFFSET = 24;
const BS_U64S = 28;
const BS_JOURNAL_SEQ_MIN = 32;
const BS_HDR_CSUM = 40;
const BS_ZERO = 44;

/* Layout relations, asserted once. */
if (NH_RESERVED > NODE_HDR_BYTES || NODE_HDR_BYTES % 8 !== 0 || BSET_HDR_BYTES % 8 !== 0) throw new Error('btree-node layout');

const TWO32 = 0x1_0000_0000;

/* Reads go through these instead of a DataView: a node read checks a header per bset, and a DataView per check costs more than the check. */
function u32le(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

function u64le(b: Uint8Array, o: number): number {
  return u32le(b, o + 4) * TWO32 + u32le(b, o);
}

function setU64(dv: DataView, off: number, v: number): void {
  dv.setUint32(off, v >>> 0, true);
  dv.setUint32(off + 4, Math.floor(v / TWO32), true);
}

function dvOf(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

export interface NodeHeader {
  btreeId: number;
  level: number;
  seq: number;
  minKey: Uint32Array;
  maxKey: Uint32Array;
  format: BkeyFormat;
}

/** null if the fields can be encoded, else what is wrong (paired with nodeHeaderDecode's checks). */
export function nodeHeaderInvalid(h: NodeHeader): string | null {
  if (!Number.isInteger(h.btreeId) || h.btreeId < 0 || h.btreeId > 255) return `btree id ${h.btreeId} not a u8`;
  if (!Number.isInteger(h.level) || h.level < 0 || h.level > 255) return `level ${h.level} not a u8`;
  if (!Number.isInteger(h.seq) || h.seq < 0 || h.seq >= 2 ** 52) return `node seq ${h.seq} not a 52-bit integer`;
  for (let i = 0; i < 5; i++) {
    if (h.minKey[i] !== h.maxKey[i]) {
      if (h.minKey[i]! > h.maxKey[i]!) return 'min key > max key';
      break;
    }
  }
  return h.format.validate();
}

/** Write the node header (with its checksum) at data[0..NODE_HDR_BYTES). */
export function nodeHeaderEncode(data: Uint8Array, h: NodeHeader): void {
  const err = nodeHeaderInvalid(h);
  if (err !== null) throw new Error(`node header: ${err}`);
  data.fill(0, 0, NODE_HDR_BYTES);
  const dv = dvOf(data);
  dv.setUint32(NH_MAGIC, NODE_MAGIC, true);
  dv.setUint16(NH_VERSION, NODE_FORMAT_VERSION, true);
  dv.setUint8(NH_BTREE_ID, h.btreeId);
  dv.setUint8(NH_LEVEL, h.level);
  dv.setUint32(NH_FLAGS, 0, true);
  setU64(dv, NH_SEQ, h.seq);
  for (let i = 0; i < 5; i++) {
    dv.setUint32(NH_MIN_KEY + 4 * i, h.minKey[i]!, true);
    dv.setUint32(NH_MAX_KEY + 4 * i, h.maxKey[i]!, true);
  }
  formatEncode(h.format, data, NH_FORMAT);
  dv.setUint32(NH_CSUM, crc32c(data, 0, NH_CSUM_START, NODE_HDR_BYTES), true);
}

export type NodeHeaderResult = { ok: true; hdr: NodeHeader } | { ok: false; code: 'ERR_CHECKSUM' | 'ERR_TOPOLOGY'; message: string };

/** Read and check the node header: magic and checksum (ERR_CHECKSUM), version, reserved bytes and format (ERR_TOPOLOGY). */
export function nodeHeaderDecode(data: Uint8Array): NodeHeaderResult {
  if (data.length < NODE_HDR_BYTES) return { ok: false, code: 'ERR_CHECKSUM', message: `node buffer of ${data.length} bytes < header` };
  const magic = u32le(data, NH_MAGIC);
  if (magic !== NODE_MAGIC) return { ok: false, code: 'ERR_CHECKSUM', message: `node header at byte 0: bad magic 0x${magic.toString(16)}` };
  const want = u32le(data, NH_CSUM);
  const got = crc32c(data, 0, NH_CSUM_START, NODE_HDR_BYTES);
  if (want !== got) return { ok: false, code: 'ERR_CHECKSUM', message: `node header at byte 0: checksum 0x${got.toString(16)} != stored 0x${want.toString(16)}` };
  const version = data[NH_VERSION]! | (data[NH_VERSION + 1]! << 8);
  if (version !== NODE_FORMAT_VERSION) return { ok: false, code: 'ERR_TOPOLOGY', message: `node header: unsupported format version ${version}` };
  if (u32le(data, NH_FLAGS) !== 0) return { ok: false, code: 'ERR_TOPOLOGY', message: 'node header: unknown flags set' };
  for (let i = NH_RESERVED; i < NODE_HDR_BYTES; i++) if (data[i] !== 0) return { ok: false, code: 'ERR_TOPOLOGY', message: `node header: reserved byte ${i} not zero` };
  const format = formatDecode(data, NH_FORMAT);
  if (typeof format === 'string') return { ok: false, code: 'ERR_TOPOLOGY', message: `node header: ${format}` };
  const minKey = new Uint32Array(5);
  const maxKey = new Uint32Array(5);
  for (let i = 0; i < 5; i++) {
    minKey[i] = u32le(data, NH_MIN_KEY + 4 * i);
    maxKey[i] = u32le(data, NH_MAX_KEY + 4 * i);
  }
  const hdr: NodeHeader = {
    btreeId: data[NH_BTREE_ID]!,
    level: data[NH_LEVEL]!,
    seq: u64le(data, NH_SEQ),
    minKey,
    maxKey,
    format,
  };
  const err = nodeHeaderInvalid(hdr);
  if (err !== null) return { ok: false, code: 'ERR_TOPOLOGY', message: `node header: ${err}` };
  return { ok: true, hdr };
}

/* ---------------------------------------------------------------------------
 * Bset header.
 */

/**
 * Bset checks, in the order bsetHeaderCheck applies them. Up to
 * bad_header_checksum nothing says this node wrote a bset here; from
 * bad_length on the header is this node's, written whole, and what follows
 * it is wrong.
 */
export const BSET_CHECK = ['ok', 'beyond_node', 'bad_magic', 'bad_seq', 'bad_offset', 'bad_header_checksum', 'bad_length', 'bad_checksum'] as const;
export type BsetCheck = (typeof BSET_CHECK)[number];

/** Did bsetHeaderCheck find this node's header, written whole, over keys that fail? */
export function bsetHeaderIntact(c: BsetCheck): boolean {
  return c === 'bad_length' || c === 'bad_checksum';
}

/**
 * Seal a bset: write its header at data[off..], the header's checksum and the
 * checksum over header + keys. The keys (u64s * 8 bytes) must already be in
 * place after the header. journalSeqMin: the lowest journal seq of the keys
 * (0 when not known).
 */
export function bsetHeaderEncode(data: Uint8Array, off: number, nodeSeq: number, journalSeq: number, u64s: number, journalSeqMin = 0): void {
  if (off % 8 !== 0 || off + BSET_HDR_BYTES + u64s * 8 > data.length) throw new Error(`bset at ${off} of ${u64s} u64s does not fit the node`);
  if (!Number.isSafeInteger(journalSeq) || journalSeq < 0) throw new Error(`bset journal seq ${journalSeq}`);
  if (!Number.isSafeInteger(journalSeqMin) || journalSeqMin < 0 || journalSeqMin > journalSeq) throw new Error(`bset journal seq min ${journalSeqMin} (max ${journalSeq})`);
  const dv = dvOf(data);
  dv.setUint32(off + BS_MAGIC, BSET_MAGIC, true);
  setU64(dv, off + BS_SEQ, nodeSeq);
  setU64(dv, off + BS_JOURNAL_SEQ, journalSeq);
  dv.setUint32(off + BS_OFFSET, off, true);
  dv.setUint32(off + BS_U64S, u64s, true);
  setU64(dv, off + BS_JOURNAL_SEQ_MIN, journalSeqMin);
  dv.setUint32(off + BS_HDR_CSUM, crc32c(data, 0, off + BS_CSUM_START, off + BS_HDR_CSUM), true);
  dv.setUint32(off + BS_ZERO, 0, true);
  dv.setUint32(off + BS_CSUM, crc32c(data, 0, off + BS_CSUM_START, off + BSET_HDR_BYTES + u64s * 8), true);
}

/** Is there a valid bset of this node at data[off..]? Reads only as much as it needs to decide. */
export function bsetHeaderCheck(data: Uint8Array, off: number, nodeSeq: number): BsetCheck {
  if (off + BSET_HDR_BYTES > data.length) return 'beyond_node';
  if (u32le(data, off + BS_MAGIC) !== BSET_MAGIC) return 'bad_magic';
  if (u64le(data, off + BS_SEQ) !== nodeSeq) return 'bad_seq';
  if (u32le(data, off + BS_OFFSET) !== off) return 'bad_offset';
  if (crc32c(data, 0, off + BS_CSUM_START, off + BS_HDR_CSUM) !== u32le(data, off + BS_HDR_CSUM) || u32le(data, off + BS_ZERO) !== 0) return 'bad_header_checksum';
  const u64s = u32le(data, off + BS_U64S);
  if (off + BSET_HDR_BYTES + u64s * 8 > data.length) return 'bad_length';
  const got = crc32c(data, 0, off + BS_CSUM_START, off + BSET_HDR_BYTES + u64s * 8);
  if (got !== u32le(data, off + BS_CSUM)) return 'bad_checksum';
  return 'ok';
}

export function bsetU64s(data: Uint8Array, off: number): number {
  return u32le(data, off + BS_U64S);
}

export function bsetJournalSeq(data: Uint8Array, off: number): number {
  return u64le(data, off + BS_JOURNAL_SEQ);
}

/** The lowest journal seq of the bset's keys, 0 if not known. */
export function bsetJournalSeqMin(data: Uint8Array, off: number): number {
  return u64le(data, off + BS_JOURNAL_SEQ_MIN);
}

/** Byte offset just past a bset (header + keys), not rounded. */
export function bsetEnd(data: Uint8Array, off: number): number {
  return off + BSET_HDR_BYTES + bsetU64s(data, off) * 8;
}

export function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}
