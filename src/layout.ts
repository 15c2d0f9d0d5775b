// SPDX-License-Identifier: GPL-2.0-only
/*
 * Device layout: where the superblock copies, the journal ring and the node
 * buckets live. Pure arithmetic, no I/O.
 *
 *   0 KiB        reserved, never written (room for partition/boot labels, as
 *                bcachefs leaves the first 4 KiB alone)
 *   4 KiB        superblock copy 0   (SB_BYTES)
 *   8 KiB        superblock copy 1   (SB_BYTES)
 *   12 KiB       -> rounded up to blockBytes: journal ring (journalBytes)
 *   journal end  -> rounded up to nodeBytes: bucket 0, 1, ... nrBuckets-1
 *
 * The superblock offsets are fixed (a reader must find them before it knows
 * the block size), so the device's I/O alignment must divide 4 KiB. The
 * journal and bucket offsets are stored in the superblock; layoutFromSuperblock()
 * (format/superblock.ts) rebuilds a Layout from it and checks it against
 * computeLayout().
 *
 * Invariants (asserted by checkLayout):
 *  - every offset and size is a multiple of blockBytes; buckets start on a
 *    nodeBytes boundary; everything ends inside deviceBytes;
 *  - nrBuckets >= BUCKETS_MIN and < 2^32-1 (U32_MAX means "no bucket").
 */

import { SixtreeError, invalidArg } from './errors.js';
import { bytesToText } from './util/printbuf.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/** Byte offsets of the two superblock copies. */
export const SB_OFFSETS_BYTES: readonly [number, number] = [4 * KiB, 8 * KiB];
/** Size of one superblock copy (the on-disk structure is at most this long). */
export const SB_BYTES = 4 * KiB;
/** First byte after the superblock copies. */
export const SB_AREA_END_BYTES = SB_OFFSETS_BYTES[1] + SB_BYTES;

/** A store needs room for at least this many node buckets. */
export const BUCKETS_MIN = 64;
/** Bucket numbers are u32 on disk; U32_MAX is "none". */
export const BUCKETS_MAX = 0xffff_fffe;

export const NODE_BYTES_MIN = 4 * KiB;
export const NODE_BYTES_MAX = 1 * MiB;
export const BLOCK_BYTES_MIN = 512;
export const BLOCK_BYTES_MAX = 64 * KiB;

/** Default journal: deviceBytes / JOURNAL_DEFAULT_DIVISOR clamped to [min, max]. */
export const JOURNAL_DEFAULT_DIVISOR = 32;
export const JOURNAL_BYTES_DEFAULT_MIN = 4 * MiB;
export const JOURNAL_BYTES_DEFAULT_MAX = 1 * GiB;
/** Smallest journal accepted when given explicitly (tests, tiny devices). */
export const JOURNAL_BYTES_MIN = 64 * KiB;
export const JOURNAL_BLOCKS_MIN = 16;
/** Largest journal accepted (ring offsets stay far inside safe integers; the reader scans it all). */
export const JOURNAL_BYTES_MAX = 4 * GiB;
/** A journal entry is at most min(journalBytes / 8, 4 MiB). */
export const JOURNAL_ENTRY_DIVISOR = 8;
export const JOURNAL_ENTRY_BYTES_MAX = 4 * MiB;

export interface Layout {
  deviceBytes: number;
  blockBytes: number;
  nodeBytes: number;
  sbOffsetsBytes: readonly [number, number];
  sbBytes: number;
  journalOffsetBytes: number;
  journalBytes: number;
  /** Largest journal entry, header and padding included (multiple of blockBytes). */
  journalEntryBytesMax: number;
  bucketOffsetBytes: number;
  nrBuckets: number;
}

export interface LayoutOptions {
  deviceBytes: number;
  nodeBytes: number;
  blockBytes: number;
  /** Journal ring size; default scaled to the device (see journalBytesDefault). */
  journalBytes?: number;
}

export function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

export function roundDown(n: number, to: number): number {
  return Math.floor(n / to) * to;
}

export function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0 && n <= 2 ** 30;
}

/** The default journal size for a device: 1/32 of it, clamped to [4 MiB, 1 GiB], in whole blocks. */
export function journalBytesDefault(deviceBytes: number, blockBytes: number): number {
  const want = Math.min(Math.max(Math.floor(deviceBytes / JOURNAL_DEFAULT_DIVISOR), JOURNAL_BYTES_DEFAULT_MIN), JOURNAL_BYTES_DEFAULT_MAX);
  return Math.max(roundDown(want, blockBytes), blockBytes);
}

export function journalEntryBytesMax(journalBytes: number, blockBytes: number): number {
  return Math.max(roundDown(Math.min(Math.floor(journalBytes / JOURNAL_ENTRY_DIVISOR), JOURNAL_ENTRY_BYTES_MAX), blockBytes), blockBytes);
}

function checkSizes(o: LayoutOptions): void {
  if (!Number.isSafeInteger(o.deviceBytes) || o.deviceBytes <= 0) throw invalidArg('deviceBytes', o.deviceBytes, 'a positive safe integer');
  if (!isPow2(o.blockBytes) || o.blockBytes < BLOCK_BYTES_MIN || o.blockBytes > BLOCK_BYTES_MAX)
    throw invalidArg('blockSize', o.blockBytes, `a power of two in [${BLOCK_BYTES_MIN}, ${BLOCK_BYTES_MAX}]`);
  if (!isPow2(o.nodeBytes) || o.nodeBytes < NODE_BYTES_MIN || o.nodeBytes > NODE_BYTES_MAX)
    throw invalidArg('nodeSize', o.nodeBytes, `a power of two in [${NODE_BYTES_MIN}, ${NODE_BYTES_MAX}]`);
  if (o.nodeBytes < o.blockBytes) throw invalidArg('nodeSize', o.nodeBytes, `a multiple of blockSize (${o.blockBytes})`);
  if (o.journalBytes !== undefined) {
    const min = Math.max(JOURNAL_BYTES_MIN, JOURNAL_BLOCKS_MIN * o.blockBytes);
    if (!Number.isSafeInteger(o.journalBytes) || o.journalBytes < min || o.journalBytes > JOURNAL_BYTES_MAX || o.journalBytes % o.blockBytes !== 0)
      throw invalidArg('journalSize', o.journalBytes, `a multiple of blockSize (${o.blockBytes}) in [${min}, ${JOURNAL_BYTES_MAX}]`);
  }
}

/**
 * Compute where everything goes on a device of deviceBytes. ERR_INVALID_ARG for
 * bad sizes; ERR_TOO_SMALL (naming the minimum) when superblocks + journal +
 * BUCKETS_MIN buckets don't fit.
 */
export function computeLayout(o: LayoutOptions): Layout {
  checkSizes(o);
  const { deviceBytes, nodeBytes, blockBytes } = o;
  const journalBytes = o.journalBytes ?? journalBytesDefault(deviceBytes, blockBytes);
  const journalOffsetBytes = roundUp(SB_AREA_END_BYTES, blockBytes);
  const bucketOffsetBytes = roundUp(journalOffsetBytes + journalBytes, nodeBytes);
  const nrBuckets = Math.min(Math.max(Math.floor((deviceBytes - bucketOffsetBytes) / nodeBytes), 0), BUCKETS_MAX);
  if (nrBuckets < BUCKETS_MIN) {
    const minBytes = bucketOffsetBytes + BUCKETS_MIN * nodeBytes;
    throw new SixtreeError(
      'ERR_TOO_SMALL',
      `device of ${deviceBytes} bytes (${bytesToText(deviceBytes)}) is too small: it needs at least ${minBytes} bytes (${bytesToText(minBytes)}): ` +
        `superblocks ${bytesToText(SB_AREA_END_BYTES)} + journal ${bytesToText(journalBytes)}` +
        `${o.journalBytes === undefined ? ' (default)' : ''} + ${BUCKETS_MIN} buckets of nodeSize ${bytesToText(nodeBytes)}` +
        `; use a bigger device or a smaller journalSize/nodeSize`,
      { deviceBytes, minBytes, journalBytes, nodeBytes },
    );
  }
  const layout: Layout = {
    deviceBytes,
    blockBytes,
    nodeBytes,
    sbOffsetsBytes: SB_OFFSETS_BYTES,
    sbBytes: SB_BYTES,
    journalOffsetBytes,
    journalBytes,
    journalEntryBytesMax: journalEntryBytesMax(journalBytes, blockBytes),
    bucketOffsetBytes,
    nrBuckets,
  };
  const err = checkLayout(layout);
  if (err) throw new Error(`computeLayout: internal error: ${err}`);
  return layout;
}

/** Check a layout's invariants; returns a reason or null. Used on layouts rebuilt from a superblock. */
export function checkLayout(l: Layout): string | null {
  const { blockBytes: b, nodeBytes: n } = l;
  if (!isPow2(b) || b < BLOCK_BYTES_MIN || b > BLOCK_BYTES_MAX) return `block size ${b} is not a power of two in [${BLOCK_BYTES_MIN}, ${BLOCK_BYTES_MAX}]`;
  if (!isPow2(n) || n < NODE_BYTES_MIN || n > NODE_BYTES_MAX || n < b) return `node size ${n} is not a power of two in [${NODE_BYTES_MIN}, ${NODE_BYTES_MAX}] and >= block size ${b}`;
  if (l.journalOffsetBytes < SB_AREA_END_BYTES || l.journalOffsetBytes % b !== 0) return `journal offset ${l.journalOffsetBytes} overlaps the superblocks or is not block aligned`;
  if (l.journalBytes < JOURNAL_BLOCKS_MIN * b || l.journalBytes > JOURNAL_BYTES_MAX || l.journalBytes % b !== 0) return `journal size ${l.journalBytes} is not a multiple of the block size in [${JOURNAL_BLOCKS_MIN} blocks, ${JOURNAL_BYTES_MAX}]`;
  if (l.journalEntryBytesMax !== journalEntryBytesMax(l.journalBytes, b)) return `journal entry max ${l.journalEntryBytesMax} disagrees with the journal size`;
  if (l.bucketOffsetBytes < l.journalOffsetBytes + l.journalBytes || l.bucketOffsetBytes % n !== 0) return `bucket area offset ${l.bucketOffsetBytes} overlaps the journal or is not node aligned`;
  if (!Number.isInteger(l.nrBuckets) || l.nrBuckets < BUCKETS_MIN || l.nrBuckets > BUCKETS_MAX) return `bucket count ${l.nrBuckets} outside [${BUCKETS_MIN}, ${BUCKETS_MAX}]`;
  if (l.bucketOffsetBytes + l.nrBuckets * n > l.deviceBytes) return `buckets end at ${l.bucketOffsetBytes + l.nrBuckets * n}, past the device size ${l.deviceBytes}`;
  return null;
}

/** Byte offset of bucket b on the device. */
export function bucketToOffset(l: Layout, bucket: number): number {
  return l.bucketOffsetBytes + bucket * l.nodeBytes;
}

/** Bucket holding device byte offset `offsetBytes`, or -1 outside the bucket area. */
export function offsetToBucket(l: Layout, offsetBytes: number): number {
  if (offsetBytes < l.bucketOffsetBytes) return -1;
  const b = Math.floor((offsetBytes - l.bucketOffsetBytes) / l.nodeBytes);
  return b < l.nrBuckets ? b : -1;
}

export function layoutToText(l: Layout): string {
  const rows: Array<[string, string]> = [
    ['device', `${l.deviceBytes} (${bytesToText(l.deviceBytes)})`],
    ['block size', `${l.blockBytes}`],
    ['node size', `${l.nodeBytes} (${bytesToText(l.nodeBytes)})`],
    ['superblocks', `${l.sbOffsetsBytes[0]}, ${l.sbOffsetsBytes[1]} (${l.sbBytes} each)`],
    ['journal', `${l.journalOffsetBytes} + ${l.journalBytes} (${bytesToText(l.journalBytes)}), entries <= ${bytesToText(l.journalEntryBytesMax)}`],
    ['buckets', `${l.bucketOffsetBytes} + ${l.nrBuckets} x ${bytesToText(l.nodeBytes)}`],
  ];
  return rows.map(([k, v]) => `${(k + ':').padEnd(14)}${v}`).join('\n') + '\n';
}
