// SPDX-License-Identifier: GPL-2.0-only
/*
 * Journal write (bcachefs journal_io.c, write side): finishing an entry and
 * putting it on stable storage.
 *
 * An entry's buffer holds the header space and the sub-entries the
 * reservations added. Finishing it appends, in this order:
 *   - one btree_root sub-entry per btree, from getRoots(seq): the roots as of
 *     this entry (the reader takes the last btree_root per btree). Not the
 *     roots at write time: an interior update journaled in a later entry may
 *     have made a new root already, and an entry naming that root without
 *     the update's keys would make recovery replay older keys onto it;
 *   - one blacklist sub-entry per blacklisted range intersecting the entry's
 *     [lastSeq, seq] window;
 * then the header and checksum, and zeroes the padding up to the block size.
 *
 * Writing is one O_DIRECT write of the padded entry followed by a flush
 * (dev.writeFlush where the device has it: both on one worker thread).
 * journal.ts never starts the next entry's write before this one's flush has
 * completed: entry S+1 is never on disk without entry S being durable, so the
 * reader never finds a newer entry whose predecessors were lost in flight.
 */

import {
  BLACKLIST_PAYLOAD_BYTES,
  JSET_ENTRY,
  JSET_HEADER_BYTES,
  jsetBlacklistWrite,
  jsetEntryBytes,
  jsetEntryWrite,
  jsetSeal,
} from '../format/journal-format.js';
import { writeThenFlush, type Device } from '../io/device.js';
import { roundUp } from '../layout.js';
import type { JournalSeqBlacklist } from './blacklist.js';

export interface JournalRoot {
  btreeId: number;
  level: number;
  /** The root pointer as the engine encodes it (opaque to the journal). */
  ptr: Uint8Array;
}

export interface EntryFinishCtx {
  uuid: Uint8Array;
  blockBytes: number;
  nrBtrees: number;
  rootPtrBytesMax: number;
  /** The roots as of entry `seq` (a root change journaled in a later entry must not show in this one). */
  getRoots: (seq: number) => readonly JournalRoot[];
  blacklist: JournalSeqBlacklist;
}

/** Bytes the roots of every btree take in an entry, at most. */
export function rootsBytesMax(nrBtrees: number, rootPtrBytesMax: number): number {
  return nrBtrees * jsetEntryBytes(rootPtrBytesMax);
}

export function blacklistEntriesBytes(nrRanges: number): number {
  return nrRanges * jsetEntryBytes(BLACKLIST_PAYLOAD_BYTES);
}

/**
 * Finish the entry in data[0, usedBytes): roots, blacklist, header, checksum,
 * padding. `blacklistRangesMax` is how many ranges were budgeted when the entry
 * was opened. Returns the checksummed length and the padded size on disk.
 */
export function journalEntryFinish(
  data: Uint8Array,
  usedBytes: number,
  seq: number,
  lastSeq: number,
  ctx: EntryFinishCtx,
  blacklistRangesMax: number,
): { bytes: number; sizeBytes: number } {
  let off = usedBytes;
  const roots = ctx.getRoots(seq);
  if (roots.length > ctx.nrBtrees) throw new Error(`journal entry ${seq}: getRoots() returned ${roots.length} roots, at most ${ctx.nrBtrees} (nrBtrees)`);
  for (const r of roots) {
    if (r.ptr.length > ctx.rootPtrBytesMax) throw new Error(`journal entry ${seq}: root pointer of btree ${r.btreeId} is ${r.ptr.length} bytes, at most ${ctx.rootPtrBytesMax} (rootPtrBytesMax)`);
    off = jsetEntryWrite(data, off, JSET_ENTRY.btree_root, r.btreeId, r.level, r.ptr);
  }
  const ranges = ctx.blacklist.intersecting(lastSeq, seq);
  if (ranges.length > blacklistRangesMax) throw new Error(`journal entry ${seq}: ${ranges.length} blacklist ranges, budgeted ${blacklistRangesMax}`);
  for (const r of ranges) off = jsetBlacklistWrite(data, off, r.start, r.end);
  const sizeBytes = roundUp(off, ctx.blockBytes);
  if (sizeBytes > data.length) throw new Error(`journal entry ${seq}: ${off} bytes overflow the ${data.length} byte buffer`);
  data.fill(0, off, sizeBytes);
  jsetSeal(data, { seq, lastSeq, bytes: off, uuid: ctx.uuid, timeMs: Date.now() });
  return { bytes: off, sizeBytes };
}

/** Smallest entry: header, every root, the given number of blacklist ranges; padded. */
export function journalEntryBytesMin(ctx: { blockBytes: number; nrBtrees: number; rootPtrBytesMax: number }, nrRanges: number): number {
  return roundUp(JSET_HEADER_BYTES + rootsBytesMax(ctx.nrBtrees, ctx.rootPtrBytesMax) + blacklistEntriesBytes(nrRanges), ctx.blockBytes);
}

/** Write the padded entry at journal-relative offsetBytes and flush. */
export async function journalEntryWrite(dev: Device, journalOffsetBytes: number, data: Uint8Array, offsetBytes: number, sizeBytes: number): Promise<void> {
  await writeThenFlush(dev, data.subarray(0, sizeBytes), journalOffsetBytes + offsetBytes);
}

/** journalEntryWrite on this thread (the device must have writeFlushSync). */
export function journalEntryWriteSync(dev: Device, journalOffsetBytes: number, data: Uint8Array, offsetBytes: number, sizeBytes: number): void {
  dev.writeFlushSync!(data.subarray(0, sizeBytes), journalOffsetBytes + offsetBytes);
}
