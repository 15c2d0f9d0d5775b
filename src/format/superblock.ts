// SPDX-License-Identifier: GPL-2.0-only
/*
 * Superblock: on-disk layout, read (pick the newer valid copy) and write (both
 * copies, a flush between them). bcachefs super-io.c, own layout.
 *
 * Two identical copies at SB_OFFSETS_BYTES (layout.ts). writeSuperblock()
 * increments sb.seq, writes copy 0, flushes, writes copy 1, flushes: a crash
 * tears at most one copy, and the other one is either the old or the new
 * superblock, never garbage. readSuperblock() validates both and takes the
 * valid one with the higher seq.
 *
 * Byte layout (little-endian). The first 24 bytes never move between versions,
 * so a reader can check magic, length and checksum before it knows the
 * version; everything after them belongs to SB_VERSION.
 *
 *   off  size  field
 *     0     8  magic "sixtreeS"
 *     8     4  version
 *    12     4  bytes: encoded length (128 + 48 * nrBtrees + 16 * nrBlacklist)
 *    16     4  csum: crc32c of [0, bytes) with this field zero
 *    20     4  flags: bit 0 clean shutdown; bit 1 the extent size bound at 120 is kept
 *    24     8  seq: incremented by every write
 *    32    16  uuid
 *    48     4  blockBytes
 *    52     4  nodeBytes
 *    56     8  deviceBytes
 *    64     8  journalOffsetBytes
 *    72     8  journalBytes
 *    80     8  bucketOffsetBytes
 *    88     4  nrBuckets
 *    92     2  nrBtrees
 *    94     2  nrBlacklist
 *    96     8  cleanJournalSeq: newest journal seq at clean shutdown (0: none)
 *   104     8  cleanJournalOffsetBytes: where the journal continues, relative to its area
 *   112     8  createdMs: format time, ms since the epoch
 *   120     4  extentSizeBound: no extent key of any extents btree is larger (flag
 *              bit 1; a store without it, written before the field: 2^32-1). Raised,
 *              and written here, before a commit with a larger extent is journaled.
 *   124     4  reserved, zero
 *   128        btree table, nrBtrees x 48 bytes:
 *                0 u8 id (= index)   1 u8 flags (bit 0 extents, bit 1 has root)
 *                2 u8 name length    3 u8 root level
 *                4 u32 root bucket   8 u64 root node seq (< 2^52)
 *               16 name, 32 bytes, zero padded (ASCII /^[a-z][a-z0-9_]{0,31}$/)
 *     ...      journal seq blacklist, nrBlacklist x 16 bytes: u64 start, u64 end (inclusive)
 *
 * The roots stored here are the roots of a store whose journal is empty
 * (format, clean shutdown). After a crash the newest journal entry's roots win.
 */

import { randomBytes } from 'node:crypto';

import { SixtreeError, invalidArg } from '../errors.js';
import type { Device } from '../io/device.js';
import { SB_AREA_END_BYTES, SB_BYTES, SB_OFFSETS_BYTES, checkLayout, journalEntryBytesMax, type Layout } from '../layout.js';
import { crc32c } from '../util/crc32c.js';
import { Printbuf, bytesToText } from '../util/printbuf.js';

export const SB_MAGIC = new TextEncoder().encode('sixtreeS');
/** 2: bset headers carry their keys' lowest journal seq and a checksum of their own (btree-node.ts, node format 2). */
export const SB_VERSION = 2;
export const BTREES_MAX = 32;
export const BTREE_NAME_BYTES_MAX = 32;
export const BTREE_NAME_RE = /^[a-z][a-z0-9_]{0,31}$/;
/** Deepest btree level a root may have (bcachefs allows 4; we leave room). */
export const BTREE_LEVEL_MAX = 31;
/** Bound on the persisted journal seq blacklist. */
export const BLACKLIST_RANGES_MAX = 64;
/** Node seqs are 52-bit (they fit a double exactly). */
export const NODE_SEQ_LIMIT = 2 ** 52;

/* Field offsets: named once. */
const SB = {
  magic: 0,
  version: 8,
  bytes: 12,
  csum: 16,
  flags: 20,
  seq: 24,
  uuid: 32,
  blockBytes: 48,
  nodeBytes: 52,
  deviceBytes: 56,
  journalOffsetBytes: 64,
  journalBytes: 72,
  bucketOffsetBytes: 80,
  nrBuckets: 88,
  nrBtrees: 92,
  nrBlacklist: 94,
  cleanJournalSeq: 96,
  cleanJournalOffsetBytes: 104,
  createdMs: 112,
  extentSizeBound: 120,
  reserved: 124,
  btrees: 128,
} as const;
const SB_HEADER_BYTES = SB.btrees;
const SB_BTREE = { id: 0, flags: 1, nameLen: 2, rootLevel: 3, rootBucket: 4, rootSeq: 8, name: 16, bytes: 48 } as const;
const SB_BLACKLIST = { start: 0, end: 8, bytes: 16 } as const;
const SB_FLAG_CLEAN = 1;
const SB_FLAG_EXTENT_SIZE_BOUND = 2;
/** The extent size bound of a store written before the field existed: any size a key holds (KEY_SIZE_MAX). */
export const EXTENT_SIZE_BOUND_UNKNOWN = 0xffffffff;
const SB_BTREE_FLAG_EXTENTS = 1;
const SB_BTREE_FLAG_HAS_ROOT = 2;

/** Size of an encoded superblock. */
export function sbEncodedBytes(nrBtrees: number, nrBlacklist: number): number {
  return SB_HEADER_BYTES + nrBtrees * SB_BTREE.bytes + nrBlacklist * SB_BLACKLIST.bytes;
}

// The largest superblock must fit its slot.
if (sbEncodedBytes(BTREES_MAX, BLACKLIST_RANGES_MAX) > SB_BYTES) throw new Error('superblock: SB_BYTES too small for BTREES_MAX/BLACKLIST_RANGES_MAX');

export interface SbRoot {
  bucket: number;
  /** Node seq, 52-bit. */
  seq: number;
  level: number;
}

export interface SbBtree {
  id: number;
  name: string;
  extents: boolean;
  /** Root of this btree when the journal is empty; null before the first root exists. */
  root: SbRoot | null;
}

export interface SeqRange {
  start: number;
  /** Inclusive. */
  end: number;
}

export interface Superblock {
  version: number;
  uuid: Uint8Array;
  /** Write sequence number; writeSuperblock() increments it. */
  seq: number;
  blockBytes: number;
  nodeBytes: number;
  deviceBytes: number;
  journalOffsetBytes: number;
  journalBytes: number;
  bucketOffsetBytes: number;
  nrBuckets: number;
  btrees: SbBtree[];
  clean: boolean;
  cleanJournalSeq: number;
  cleanJournalOffsetBytes: number;
  /** Blacklisted journal seq ranges, sorted, disjoint, not adjacent. */
  blacklist: SeqRange[];
  createdMs: number;
  /**
   * No extent key in the store is larger (offsets). Lets a scan for the
   * extents crossing a position stop: keys sit at their extent's end, and
   * with several snapshots in one inode an extent can come after others
   * that start past that position (engine.extentSizeBoundRaise).
   */
  extentSizeBound: number;
}

/** A superblock for a freshly formatted store: clean, journal empty, no blacklist. */
export function newSuperblock(layout: Layout, btrees: Array<{ name: string; extents?: boolean; root?: SbRoot | null }>, uuid?: Uint8Array): Superblock {
  const id = uuid ?? new Uint8Array(randomBytes(16));
  const sb: Superblock = {
    version: SB_VERSION,
    uuid: id,
    seq: 0,
    blockBytes: layout.blockBytes,
    nodeBytes: layout.nodeBytes,
    deviceBytes: layout.deviceBytes,
    journalOffsetBytes: layout.journalOffsetBytes,
    journalBytes: layout.journalBytes,
    bucketOffsetBytes: layout.bucketOffsetBytes,
    nrBuckets: layout.nrBuckets,
    btrees: btrees.map((b, i) => ({ id: i, name: b.name, extents: b.extents ?? false, root: b.root ?? null })),
    clean: true,
    cleanJournalSeq: 0,
    cleanJournalOffsetBytes: 0,
    blacklist: [],
    createdMs: Date.now(),
    extentSizeBound: 0,
  };
  const err = validateSuperblock(sb);
  if (err) throw invalidArg('btrees', btrees, `a valid btree table (${err})`);
  return sb;
}

export function layoutFromSuperblock(sb: Superblock): Layout {
  return {
    deviceBytes: sb.deviceBytes,
    blockBytes: sb.blockBytes,
    nodeBytes: sb.nodeBytes,
    sbOffsetsBytes: SB_OFFSETS_BYTES,
    sbBytes: SB_BYTES,
    journalOffsetBytes: sb.journalOffsetBytes,
    journalBytes: sb.journalBytes,
    journalEntryBytesMax: journalEntryBytesMax(sb.journalBytes, sb.blockBytes),
    bucketOffsetBytes: sb.bucketOffsetBytes,
    nrBuckets: sb.nrBuckets,
  };
}

function isSafeU(n: unknown, limit = Number.MAX_SAFE_INTEGER): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= limit;
}

/** Check every field; returns the first problem found, or null. Run right after decode and right before encode. */
export function validateSuperblock(sb: Superblock): string | null {
  if (sb.version !== SB_VERSION) return `version ${sb.version}, this code reads ${SB_VERSION}`;
  if (!(sb.uuid instanceof Uint8Array) || sb.uuid.length !== 16) return 'uuid is not 16 bytes';
  if (!isSafeU(sb.seq)) return `seq ${sb.seq} is not a safe non-negative integer`;
  if (!isSafeU(sb.deviceBytes)) return `device size ${sb.deviceBytes} invalid`;
  const lerr = checkLayout(layoutFromSuperblock(sb));
  if (lerr) return lerr;
  const n = sb.btrees.length;
  if (n < 1 || n > BTREES_MAX) return `${n} btrees, expected 1..${BTREES_MAX}`;
  const names = new Set<string>();
  for (let i = 0; i < n; i++) {
    const b = sb.btrees[i]!;
    if (b.id !== i) return `btree ${i} has id ${b.id}`;
    if (typeof b.name !== 'string' || !BTREE_NAME_RE.test(b.name)) return `btree ${i} name ${JSON.stringify(b.name)} does not match ${BTREE_NAME_RE}`;
    if (names.has(b.name)) return `btree name ${b.name} appears twice`;
    names.add(b.name);
    if (b.root) {
      const r = b.root;
      if (!isSafeU(r.bucket) || r.bucket >= sb.nrBuckets) return `btree ${b.name} root bucket ${r.bucket} outside [0, ${sb.nrBuckets})`;
      if (!isSafeU(r.seq, NODE_SEQ_LIMIT - 1)) return `btree ${b.name} root node seq ${r.seq} is not a 52-bit integer`;
      if (!isSafeU(r.level, BTREE_LEVEL_MAX)) return `btree ${b.name} root level ${r.level} outside [0, ${BTREE_LEVEL_MAX}]`;
    }
  }
  if (sb.blacklist.length > BLACKLIST_RANGES_MAX) return `${sb.blacklist.length} blacklist ranges, at most ${BLACKLIST_RANGES_MAX}`;
  let prevEnd = -2;
  for (const r of sb.blacklist) {
    if (!isSafeU(r.start) || !isSafeU(r.end) || r.start < 1 || r.start > r.end) return `blacklist range ${r.start}..${r.end} invalid`;
    if (r.start <= prevEnd + 1) return `blacklist range ${r.start}..${r.end} not sorted, disjoint and apart from the previous one`;
    prevEnd = r.end;
  }
  if (!isSafeU(sb.cleanJournalSeq)) return `clean journal seq ${sb.cleanJournalSeq} invalid`;
  if (!Number.isInteger(sb.extentSizeBound) || sb.extentSizeBound < 0 || sb.extentSizeBound > EXTENT_SIZE_BOUND_UNKNOWN) return `extent size bound ${sb.extentSizeBound} invalid`;
  if (!isSafeU(sb.cleanJournalOffsetBytes) || sb.cleanJournalOffsetBytes >= sb.journalBytes || sb.cleanJournalOffsetBytes % sb.blockBytes !== 0)
    return `clean journal offset ${sb.cleanJournalOffsetBytes} not a block offset inside the journal (${sb.journalBytes} bytes)`;
  if (!isSafeU(sb.createdMs)) return `creation time ${sb.createdMs} invalid`;
  return null;
}

/* --- little-endian helpers (u64 as a safe integer) --- */

function getU64(v: DataView, off: number): number {
  const lo = v.getUint32(off, true);
  const hi = v.getUint32(off + 4, true);
  if (hi >= 0x20_0000) return Number.NaN; // > 2^53: not representable; validate rejects NaN
  return hi * 0x1_0000_0000 + lo;
}

function setU64(v: DataView, off: number, n: number): void {
  v.setUint32(off, n % 0x1_0000_0000, true);
  v.setUint32(off + 4, Math.floor(n / 0x1_0000_0000), true);
}

/** Encode into `out` (at least SB_BYTES, zeroed here past the encoded bytes). Validates first. */
export function encodeSuperblock(sb: Superblock, out: Uint8Array = new Uint8Array(SB_BYTES)): Uint8Array {
  const err = validateSuperblock(sb);
  if (err) throw new SixtreeError('ERR_INVALID_ARG', `refusing to write an invalid superblock: ${err}`);
  const bytes = sbEncodedBytes(sb.btrees.length, sb.blacklist.length);
  out.fill(0, 0, SB_BYTES);
  const v = new DataView(out.buffer, out.byteOffset, SB_BYTES);
  out.set(SB_MAGIC, SB.magic);
  v.setUint32(SB.version, sb.version, true);
  v.setUint32(SB.bytes, bytes, true);
  v.setUint32(SB.flags, (sb.clean ? SB_FLAG_CLEAN : 0) | SB_FLAG_EXTENT_SIZE_BOUND, true);
  v.setUint32(SB.extentSizeBound, sb.extentSizeBound, true);
  setU64(v, SB.seq, sb.seq);
  out.set(sb.uuid, SB.uuid);
  v.setUint32(SB.blockBytes, sb.blockBytes, true);
  v.setUint32(SB.nodeBytes, sb.nodeBytes, true);
  setU64(v, SB.deviceBytes, sb.deviceBytes);
  setU64(v, SB.journalOffsetBytes, sb.journalOffsetBytes);
  setU64(v, SB.journalBytes, sb.journalBytes);
  setU64(v, SB.bucketOffsetBytes, sb.bucketOffsetBytes);
  v.setUint32(SB.nrBuckets, sb.nrBuckets, true);
  v.setUint16(SB.nrBtrees, sb.btrees.length, true);
  v.setUint16(SB.nrBlacklist, sb.blacklist.length, true);
  setU64(v, SB.cleanJournalSeq, sb.cleanJournalSeq);
  setU64(v, SB.cleanJournalOffsetBytes, sb.cleanJournalOffsetBytes);
  setU64(v, SB.createdMs, sb.createdMs);
  let off = SB.btrees;
  const enc = new TextEncoder();
  for (const b of sb.btrees) {
    const name = enc.encode(b.name);
    v.setUint8(off + SB_BTREE.id, b.id);
    v.setUint8(off + SB_BTREE.flags, (b.extents ? SB_BTREE_FLAG_EXTENTS : 0) | (b.root ? SB_BTREE_FLAG_HAS_ROOT : 0));
    v.setUint8(off + SB_BTREE.nameLen, name.length);
    v.setUint8(off + SB_BTREE.rootLevel, b.root?.level ?? 0);
    v.setUint32(off + SB_BTREE.rootBucket, b.root?.bucket ?? 0xffff_ffff, true);
    setU64(v, off + SB_BTREE.rootSeq, b.root?.seq ?? 0);
    out.set(name, off + SB_BTREE.name);
    off += SB_BTREE.bytes;
  }
  for (const r of sb.blacklist) {
    setU64(v, off + SB_BLACKLIST.start, r.start);
    setU64(v, off + SB_BLACKLIST.end, r.end);
    off += SB_BLACKLIST.bytes;
  }
  if (off !== bytes) throw new Error(`encodeSuperblock: wrote ${off} bytes, expected ${bytes}`);
  v.setUint32(SB.csum, crc32c(out, 0, 0, bytes), true);
  return out;
}

export type SbCopyStatus = 'ok' | 'no_magic' | 'bad_checksum' | 'bad_version' | 'invalid';

export interface SbCopy {
  offsetBytes: number;
  status: SbCopyStatus;
  /** Why the copy was rejected (status !== 'ok'). */
  reason: string;
  sb: Superblock | null;
  /** Version and seq as read, when the checksum verified. */
  version: number;
  seq: number;
}

/** Decode one copy held in `buf` (SB_BYTES) read from offsetBytes. Never throws for bad content. */
export function decodeSuperblock(buf: Uint8Array, offsetBytes: number): SbCopy {
  const copy: SbCopy = { offsetBytes, status: 'no_magic', reason: '', sb: null, version: 0, seq: 0 };
  const v = new DataView(buf.buffer, buf.byteOffset, SB_BYTES);
  for (let i = 0; i < SB_MAGIC.length; i++) {
    if (buf[SB.magic + i] !== SB_MAGIC[i]) {
      copy.reason = `no superblock magic at byte offset ${offsetBytes}`;
      return copy;
    }
  }
  const bytes = v.getUint32(SB.bytes, true);
  if (bytes < SB_HEADER_BYTES || bytes > SB_BYTES) {
    copy.status = 'bad_checksum';
    copy.reason = `superblock at byte offset ${offsetBytes}: length ${bytes} outside [${SB_HEADER_BYTES}, ${SB_BYTES}]`;
    return copy;
  }
  const stored = v.getUint32(SB.csum, true);
  v.setUint32(SB.csum, 0, true);
  const computed = crc32c(buf, 0, 0, Math.min(bytes, buf.length));
  v.setUint32(SB.csum, stored, true);
  if (stored !== computed) {
    copy.status = 'bad_checksum';
    copy.reason = `superblock at byte offset ${offsetBytes}: checksum ${hex32(stored)} != computed ${hex32(computed)}`;
    return copy;
  }
  copy.version = v.getUint32(SB.version, true);
  copy.seq = getU64(v, SB.seq);
  if (copy.version !== SB_VERSION) {
    copy.status = 'bad_version';
    copy.reason = `superblock at byte offset ${offsetBytes}: format version ${copy.version}, this code reads version ${SB_VERSION}`;
    return copy;
  }
  const nrBtrees = v.getUint16(SB.nrBtrees, true);
  const nrBlacklist = v.getUint16(SB.nrBlacklist, true);
  if (sbEncodedBytes(nrBtrees, nrBlacklist) !== bytes) {
    copy.status = 'invalid';
    copy.reason = `superblock at byte offset ${offsetBytes}: length ${bytes} disagrees with ${nrBtrees} btrees and ${nrBlacklist} blacklist ranges`;
    return copy;
  }
  const dec = new TextDecoder();
  const btrees: SbBtree[] = [];
  let off = SB.btrees;
  for (let i = 0; i < nrBtrees; i++, off += SB_BTREE.bytes) {
    const flags = v.getUint8(off + SB_BTREE.flags);
    const nameLen = Math.min(v.getUint8(off + SB_BTREE.nameLen), BTREE_NAME_BYTES_MAX);
    btrees.push({
      id: v.getUint8(off + SB_BTREE.id),
      name: dec.decode(buf.subarray(off + SB_BTREE.name, off + SB_BTREE.name + nameLen)),
      extents: (flags & SB_BTREE_FLAG_EXTENTS) !== 0,
      root:
        flags & SB_BTREE_FLAG_HAS_ROOT
          ? { bucket: v.getUint32(off + SB_BTREE.rootBucket, true), seq: getU64(v, off + SB_BTREE.rootSeq), level: v.getUint8(off + SB_BTREE.rootLevel) }
          : null,
    });
  }
  const blacklist: SeqRange[] = [];
  for (let i = 0; i < nrBlacklist; i++, off += SB_BLACKLIST.bytes) {
    blacklist.push({ start: getU64(v, off + SB_BLACKLIST.start), end: getU64(v, off + SB_BLACKLIST.end) });
  }
  const sb: Superblock = {
    version: copy.version,
    uuid: buf.slice(SB.uuid, SB.uuid + 16),
    seq: copy.seq,
    blockBytes: v.getUint32(SB.blockBytes, true),
    nodeBytes: v.getUint32(SB.nodeBytes, true),
    deviceBytes: getU64(v, SB.deviceBytes),
    journalOffsetBytes: getU64(v, SB.journalOffsetBytes),
    journalBytes: getU64(v, SB.journalBytes),
    bucketOffsetBytes: getU64(v, SB.bucketOffsetBytes),
    nrBuckets: v.getUint32(SB.nrBuckets, true),
    btrees,
    clean: (v.getUint32(SB.flags, true) & SB_FLAG_CLEAN) !== 0,
    cleanJournalSeq: getU64(v, SB.cleanJournalSeq),
    cleanJournalOffsetBytes: getU64(v, SB.cleanJournalOffsetBytes),
    blacklist,
    createdMs: getU64(v, SB.createdMs),
    extentSizeBound: v.getUint32(SB.flags, true) & SB_FLAG_EXTENT_SIZE_BOUND ? v.getUint32(SB.extentSizeBound, true) : EXTENT_SIZE_BOUND_UNKNOWN,
  };
  const err = validateSuperblock(sb);
  if (err) {
    copy.status = 'invalid';
    copy.reason = `superblock at byte offset ${offsetBytes}: ${err}`;
    return copy;
  }
  copy.status = 'ok';
  copy.sb = sb;
  return copy;
}

function hex32(n: number): string {
  return '0x' + (n >>> 0).toString(16).padStart(8, '0');
}

function checkDeviceAlign(dev: Device): void {
  if (SB_BYTES % dev.alignBytes !== 0 || SB_OFFSETS_BYTES[0] % dev.alignBytes !== 0)
    throw new SixtreeError('ERR_INVALID_ARG', `${dev.path}: I/O alignment ${dev.alignBytes} does not divide the superblock size ${SB_BYTES}`, { path: dev.path });
}

/** Read and decode both copies (for fsck and `sixtree info`). */
export async function readSuperblockCopies(dev: Device): Promise<[SbCopy, SbCopy]> {
  checkDeviceAlign(dev);
  if (dev.sizeBytes < SB_AREA_END_BYTES) {
    throw new SixtreeError('ERR_BAD_MAGIC', `${dev.path}: not a sixtree store: ${dev.sizeBytes} bytes in whole ${dev.alignBytes}-byte blocks cannot hold a superblock (it needs ${SB_AREA_END_BYTES})`, { path: dev.path });
  }
  const buf = dev.allocBuffer(SB_AREA_END_BYTES - SB_OFFSETS_BYTES[0]);
  try {
    await dev.read(buf, SB_OFFSETS_BYTES[0]);
    const base = SB_OFFSETS_BYTES[0];
    return [
      decodeSuperblock(buf.subarray(SB_OFFSETS_BYTES[0] - base, SB_OFFSETS_BYTES[0] - base + SB_BYTES), SB_OFFSETS_BYTES[0]),
      decodeSuperblock(buf.subarray(SB_OFFSETS_BYTES[1] - base, SB_OFFSETS_BYTES[1] - base + SB_BYTES), SB_OFFSETS_BYTES[1]),
    ];
  } finally {
    dev.freeBuffer(buf);
  }
}

/**
 * Read the superblock: the valid copy with the higher seq. If the newest copy
 * whose checksum verifies has a version we don't read: ERR_VERSION. No valid
 * copy but some magic: ERR_CHECKSUM naming both offsets. No magic: ERR_BAD_MAGIC.
 * A store formatted for more bytes than the device has: ERR_TOO_SMALL.
 */
export async function readSuperblock(dev: Device): Promise<Superblock> {
  const copies = await readSuperblockCopies(dev);
  // Newest checksum-valid copy decides between "use it" and ERR_VERSION.
  const verified = copies.filter((c) => c.status === 'ok' || c.status === 'bad_version' || c.status === 'invalid');
  verified.sort((a, b) => (b.seq || 0) - (a.seq || 0));
  const ok = copies.filter((c) => c.status === 'ok').sort((a, b) => b.seq - a.seq);
  if (verified.length && verified[0]!.status === 'bad_version') {
    const c = verified[0]!;
    throw new SixtreeError('ERR_VERSION', `${dev.path}: ${c.reason}`, { path: dev.path, offset: c.offsetBytes, version: c.version });
  }
  if (ok.length === 0) {
    if (copies.every((c) => c.status === 'no_magic')) {
      throw new SixtreeError('ERR_BAD_MAGIC', `${dev.path}: not a sixtree store (no superblock magic at byte offsets ${SB_OFFSETS_BYTES.join(' and ')})`, { path: dev.path });
    }
    throw new SixtreeError('ERR_CHECKSUM', `${dev.path}: no valid superblock: ${copies.map((c) => c.reason).join('; ')}`, {
      path: dev.path,
      offset: copies[0].offsetBytes,
      offsets: copies.map((c) => c.offsetBytes),
    });
  }
  const sb = ok[0]!.sb!;
  if (sb.deviceBytes > dev.sizeBytes) {
    throw new SixtreeError('ERR_TOO_SMALL', `${dev.path}: the store was formatted for ${sb.deviceBytes} bytes but the device has only ${dev.sizeBytes}`, {
      path: dev.path,
      deviceBytes: dev.sizeBytes,
      minBytes: sb.deviceBytes,
    });
  }
  return sb;
}

/**
 * Write both copies: sb.seq is incremented (in the object passed), copy 0
 * written and flushed, then copy 1 written and flushed.
 */
export async function writeSuperblock(dev: Device, sb: Superblock): Promise<void> {
  checkDeviceAlign(dev);
  if (dev.readOnly) throw new SixtreeError('ERR_READ_ONLY', `${dev.path}: cannot write the superblock on a read-only device`, { path: dev.path });
  sb.seq += 1;
  const buf = dev.allocBuffer(SB_BYTES);
  try {
    try {
      encodeSuperblock(sb, buf);
    } catch (e) {
      sb.seq -= 1;
      throw e;
    }
    await dev.write(buf, SB_OFFSETS_BYTES[0]);
    await dev.flush();
    await dev.write(buf, SB_OFFSETS_BYTES[1]);
    await dev.flush();
  } finally {
    dev.freeBuffer(buf);
  }
}

export function uuidToText(u: Uint8Array): string {
  const h = Array.from(u, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function superblockToText(sb: Superblock): string {
  const out = new Printbuf();
  out.field('uuid', uuidToText(sb.uuid));
  out.field('version', sb.version);
  out.field('seq', sb.seq);
  out.field('created', new Date(sb.createdMs).toISOString());
  out.field('device size', `${sb.deviceBytes} (${bytesToText(sb.deviceBytes)})`);
  out.field('block size', sb.blockBytes);
  out.field('node size', `${sb.nodeBytes} (${bytesToText(sb.nodeBytes)})`);
  out.field('journal', `offset ${sb.journalOffsetBytes}, ${sb.journalBytes} bytes (${bytesToText(sb.journalBytes)})`);
  out.field('buckets', `offset ${sb.bucketOffsetBytes}, ${sb.nrBuckets} buckets`);
  out.field('clean', sb.clean ? `yes (journal seq ${sb.cleanJournalSeq}, continues at ${sb.cleanJournalOffsetBytes})` : 'no');
  out.field('extent size bound', sb.extentSizeBound);
  out.field('blacklist', sb.blacklist.length ? sb.blacklist.map((r) => `${r.start}..${r.end}`).join(', ') : '(none)');
  out.line('btrees:');
  out.nested((o) => {
    for (const b of sb.btrees) {
      const root = b.root ? `root bucket ${b.root.bucket} seq ${b.root.seq} level ${b.root.level}` : 'no root';
      o.line(`${b.id} ${b.name}${b.extents ? ' (extents)' : ''}: ${root}`);
    }
  });
  return out.toString();
}
