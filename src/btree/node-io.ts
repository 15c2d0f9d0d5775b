// SPDX-License-Identifier: GPL-2.0-only
/*
 * Node read validation and write preparation (bcachefs btree_io.c: the parts
 * that look at bytes; the cache does the I/O).
 *
 * Read (nodeReadValidate), on the bucket image in keys.data:
 *   1. node header: magic + checksum (ERR_CHECKSUM), then version, format and
 *      fields against the pointer that led here (ERR_TOPOLOGY on mismatch);
 *   2. bsets from NODE_HDR_BYTES, each at the block boundary after the
 *      previous one, while a bset with this node's seq, its own offset and a
 *      good checksum is found. The first bset failing ends the node: a torn
 *      append loses only itself. Errors instead (ERR_CHECKSUM):
 *      - the first bset (written together with the header) failing;
 *      - a failing bset followed by a valid one further on (that is
 *        corruption, not a tear: appends are serialized, nothing follows a
 *        torn one);
 *      - a failing bset whose own header checks out (so it was written: its
 *        keys are damaged or were torn) holding keys older than the journal
 *        can replay (its journal seq min below opts.tornFloor). An append
 *        the crash interrupted holds only keys the journal still has: the
 *        node pinned their seqs until the write completed, and every durable
 *        entry's last_seq is at or below the pins. So a bset below the floor
 *        was written whole once, and losing it would silently bring back
 *        what it overwrote;
 *      - any bset failing, or none found, before the end the pointer
 *        records (expect.sectorsWritten, bcachefs btree_ptr_v2
 *        .sectors_written): the parent learns how far the node is written
 *        only once a flush covers that write (engine.ts, pointer updates), so
 *        a bset inside that end was on stable storage. This catches what the
 *        journal cannot: damage to a bset header's checked bytes, a zeroed
 *        block, a write the device acknowledged and lost. Past that end (the
 *        newest writes, whose pointer update is not durable yet) the rules
 *        above decide;
 *   3. a bset whose journal seq is blacklisted or newer than maxJournalSeq is
 *      skipped (its keys ignored) and the walk goes on;
 *   4. keys of accepted bsets are checked (well formed, type allowed at this
 *      level, inside [minKey, maxKey], strictly increasing): ERR_TOPOLOGY.
 *      The same pass records each key's offset and position summary
 *      (KeyRuns) for the merge;
 *   5. writtenBytes = block-rounded end of the last accepted or skipped bset;
 *      NodeKeys.loadSorted makes the node searchable without another walk of
 *      the keys: one bset, or more than MAX_SETS, are merged into one sorted
 *      set; 2..MAX_SETS stay in place as sets (bcachefs sorts every read
 *      down to one; a cold node's one lookup does not repay the merge), and
 *      the aux trees are built.
 *
 * Nothing here allocates per key; messages are built only on failure.
 *
 * Write (nodeWritePrepare / nodeWriteDone): the writable set is sealed in
 * place (bset header + checksum; the node header too on the first write), the
 * tail up to the block boundary zeroed, the headers re-checked (the read-side
 * checks, paired), and the block-aligned bytes handed to the caller. Inserts
 * may go on into a new writable set after the sealed one while the write is
 * in flight; nodeWriteDone then advances writtenBytes and merges the written
 * sets in memory.
 */

import { wordsCmp, wordsToText } from './bpos.js';
import { KEY_TYPE, KEY_TYPE_NR, KEY_HDR_PACKED, KEY_HDR_PAD_SHIFT, KEY_HDR_RESERVED_MASK, KEY_HDR_TYPE_SHIFT, UNPACKED_VALUE_OFFSET, UNPACKED_W_VERSION_HI, BTREE_PTR_VALUE_BYTES, PTR_SECTOR_BYTES, keyBytesFor, keyHdrPad, keyHdrType, keyTypeName } from './bkey.js';
import { KeyRuns, NodeKeys } from './bset.js';
import { BSET_HDR_BYTES, NODE_HDR_BYTES, bsetEnd, bsetHeaderCheck, bsetHeaderEncode, bsetHeaderIntact, bsetJournalSeq, bsetJournalSeqMin, nodeHeaderDecode, nodeHeaderEncode, roundUp, type NodeHeader } from '../format/btree-node.js';

export interface NodeReadExpect {
  btreeId: number;
  level: number;
  minKey: Uint32Array;
  maxKey: Uint32Array;
  seq: number;
  /** Sectors (512 B) the pointer says the node is written to; 0 or absent: not known. */
  sectorsWritten?: number;
}

export interface NodeReadOpts {
  isSeqBlacklisted?: (journalSeq: number) => boolean;
  maxJournalSeq?: number;
  /**
   * The oldest journal seq recovery could replay when the store was opened
   * (the newest entry's last_seq; past the newest seq after a clean
   * shutdown): a failing bset whose intact header says it holds older keys
   * is damage, not a torn append. 0 (default): every failing last bset is
   * taken for a torn append.
   */
  tornFloor?: number;
}

/**
 * blacklistedSeqs: the journal seqs of the bsets skipped as blacklisted (null
 * when none): they stay in the bucket until the node is rewritten, so the
 * blacklist must keep them (journal/blacklist.ts, BlacklistHolders).
 */
export type NodeReadResult =
  | { ok: true; bsetsRead: number; bsetsSkipped: number; blacklistedSeqs: number[] | null; torn: boolean }
  | { ok: false; code: 'ERR_CHECKSUM' | 'ERR_TOPOLOGY'; message: string };

/** Who the node is, for messages (built only when something is wrong). */
function where(e: NodeReadExpect): string {
  return `btree ${e.btreeId} level ${e.level} node ${e.seq.toString(16)}`;
}

/** The first field of the header that differs from the pointer, and the node the bucket holds instead (which one it is tells a stale pointer from a lost write). */
function mismatch(e: NodeReadExpect, field: string, found: string, want: string, hdr: NodeHeader): NodeReadResult {
  const held = `btree ${hdr.btreeId} level ${hdr.level} node ${hdr.seq.toString(16)} ${wordsToText(hdr.minKey, 0)} - ${wordsToText(hdr.maxKey, 0)}`;
  return { ok: false, code: 'ERR_TOPOLOGY', message: `${where(e)}: node header at byte 0: ${field} ${found} does not match the pointer's ${want} (the bucket holds ${held})` };
}

/**
 * Check the keys of one bset in data[start, end): null or what is wrong.
 * Shared by read (after checksum) and write (before checksum). One pass,
 * nothing allocated unless a key is bad. A read passes `runs`: each key's
 * offset and summary are appended to it, one run per bset, for the merge
 * (NodeKeys.loadSorted).
 *
 * The pass is the lean form of bsetKeysDiagnose's checks (every key of a
 * node read goes through it: a cold lookup's largest cost after the read
 * itself): when it finds anything wrong, bsetKeysDiagnose walks the bset
 * again for the message.
 */
export function bsetKeysInvalid(keys: NodeKeys, start: number, end: number, runs?: KeyRuns): string | null {
  const d32 = keys.d32;
  const f = keys.format;
  const packedValueOffset = 4 + 4 * f.fieldWords;
  const mul = f.sumMul, sw = f.sumWord, sh = f.sumShift, sh2 = f.sumShift2, exact = f.sumExact;
  const packedMinU64s = keyBytesFor(packedValueOffset, 0) >>> 3;
  const unpackedMinU64s = keyBytesFor(UNPACKED_VALUE_OFFSET, 0) >>> 3;
  const leaf = keys.level === 0;
  /*
   * The imported constants the loop uses, as locals: V8 reloads (and checks)
   * an imported binding at every use, and those loads cost the loop a
   * quarter of its time.
   */
  const typeShift = KEY_HDR_TYPE_SHIFT, padShift = KEY_HDR_PAD_SHIFT, packedBit = KEY_HDR_PACKED, reservedMask = KEY_HDR_RESERVED_MASK;
  const typesNr = KEY_TYPE_NR, deleted = KEY_TYPE.deleted, btreePtr = KEY_TYPE.btree_ptr, ptrValueBytes = BTREE_PTR_VALUE_BYTES;
  const unpackedValueOffset = UNPACKED_VALUE_OFFSET, versionHiWord = UNPACKED_W_VERSION_HI;
  /* a check without runs collects into the node's scratch runs, unused */
  const into = runs ?? keys.keyRuns();
  const offs = into.offs, sums = into.sums;
  let n = into.n;
  let prev = -1;
  let prevSum = -1;
  for (let k = start; k < end; ) {
    const w = k >>> 2;
    const hdr = d32[w]!;
    const u64s = hdr & 0xffff;
    const next = k + (u64s << 3);
    const type = (hdr >>> typeShift) & 0xff;
    const packed = (hdr & packedBit) !== 0;
    if (u64s === 0 || next > end || (hdr & reservedMask) !== 0 || type >= typesNr || u64s < (packed ? packedMinU64s : unpackedMinU64s)) break;
    const vlen = (u64s << 3) - (packed ? packedValueOffset : unpackedValueOffset) - ((hdr >>> padShift) & 7);
    if (vlen < 0) break;
    if (type === deleted) {
      if (vlen !== 0) break;
    } else if (type === btreePtr) {
      if (leaf || vlen !== ptrValueBytes) break;
    } else if (!leaf) break;
    let x = -1;
    if (packed) x = d32[w + 1]! * mul + ((d32[w + 1 + sw]! >>> sh) >>> sh2);
    else if (d32[w + versionHiWord]! >= 0x200000) break;
    if (prev >= 0) {
      if (x >= 0 && prevSum >= 0 && (exact || x !== prevSum)) {
        if (x <= prevSum) break;
      } else if (keys.keyCmpKey(prev, k) >= 0) break;
    }
    prev = k;
    prevSum = x;
    offs[n] = k;
    sums[n++] = x;
    k = next;
  }
  /*
   * All keys passed when the last one ends the bset. Keys strictly increase,
   * so the first and last bound the range check (outside the loop: the
   * compares inside it cost V8's code for the loop a third of its speed).
   */
  const whole = (prev >= 0 ? prev + ((d32[prev >>> 2]! & 0xffff) << 3) : start) === end;
  if (!whole || (prev >= 0 && (keys.keyCmpPos(start, keys.minKey, 0) < 0 || keys.keyCmpPos(prev, keys.maxKey, 0) > 0))) {
    /* the two disagreeing would be a bug (the tests hold them to one verdict): refuse the bset, never throw from a read */
    return bsetKeysDiagnose(keys, start, end) ?? `keys at bytes ${start}..${end} failed the check, and no single key was found wrong`;
  }
  into.n = n;
  into.endRun();
  return null;
}

/** What bsetKeysInvalid found wrong, walking the bset again key by key (null: nothing). Exported for the tests that hold the two to the same verdict. */
export function bsetKeysDiagnose(keys: NodeKeys, start: number, end: number): string | null {
  const d32 = keys.d32;
  const f = keys.format;
  const packedValueOffset = 4 + 4 * f.fieldWords;
  /* order: packed keys by summary (BkeyFormat.sumMul), the rest by keyCmpKey */
  const mul = f.sumMul, sw = f.sumWord, sh = f.sumShift, sh2 = f.sumShift2, exact = f.sumExact;
  let prevSum = -1;
  const packedMin = keyBytesFor(packedValueOffset, 0);
  const unpackedMin = keyBytesFor(UNPACKED_VALUE_OFFSET, 0);
  const leaf = keys.level === 0;
  let prev = -1;
  for (let k = start; k < end; ) {
    const hdr = d32[k >>> 2]!;
    const bytes = (hdr & 0xffff) << 3;
    if (bytes === 0 || k + bytes > end) return `${keyAt(k)}: size ${bytes} runs past the bset end ${end}`;
    if (hdr & KEY_HDR_RESERVED_MASK) return `${keyAt(k)}: reserved header bits set`;
    const type = keyHdrType(hdr);
    if (type >= KEY_TYPE_NR) return `${keyAt(k)}: unknown key type ${type}`;
    const packed = (hdr & KEY_HDR_PACKED) !== 0;
    if (bytes < (packed ? packedMin : unpackedMin)) return `${keyAt(k)}: ${bytes} bytes is too small for a ${packed ? 'packed' : 'unpacked'} key`;
    const vlen = bytes - (packed ? packedValueOffset : UNPACKED_VALUE_OFFSET) - keyHdrPad(hdr);
    if (vlen < 0) return `${keyAt(k)}: bad pad ${keyHdrPad(hdr)}`;
    if (!packed && d32[(k >>> 2) + UNPACKED_W_VERSION_HI]! >= 0x200000) return `${keyAt(k)}: version >= 2^53`;
    if (type === KEY_TYPE.deleted && vlen !== 0) return `${keyAt(k)}: whiteout with a ${vlen}-byte value`;
    if (type === KEY_TYPE.btree_ptr) {
      if (vlen !== BTREE_PTR_VALUE_BYTES) return `${keyAt(k)}: btree_ptr value of ${vlen} bytes`;
      if (leaf) return `${keyAt(k)}: btree_ptr in a leaf`;
    } else if (!leaf && type !== KEY_TYPE.deleted) {
      return `${keyAt(k)}: ${keyTypeName(type)} key in an interior node`;
    }
    /* keys strictly increase, so the first and last bound the range check */
    const outside = (prev < 0 && keys.keyCmpPos(k, keys.minKey, 0) < 0) || (k + bytes >= end && keys.keyCmpPos(k, keys.maxKey, 0) > 0);
    if (outside) {
      const p = keys.keyUnpack(k).p;
      return `${keyAt(k)}: position ${wordsToText(p, 0)} outside the node range ${wordsToText(keys.minKey, 0)} - ${wordsToText(keys.maxKey, 0)}`;
    }
    const x = packed ? d32[(k >>> 2) + 1]! * mul + ((d32[(k >>> 2) + 1 + sw]! >>> sh) >>> sh2) : -1;
    if (prev >= 0 && (x >= 0 && prevSum >= 0 && (exact || x !== prevSum) ? x <= prevSum : keys.keyCmpKey(prev, k) >= 0)) {
      return `${keyAt(k)}: keys out of order (${wordsToText(keys.keyUnpack(prev).p, 0)} then ${wordsToText(keys.keyUnpack(k).p, 0)})`;
    }
    prev = k;
    prevSum = x;
    k += bytes;
  }
  return null;
}

function keyAt(k: number): string {
  return `key at byte ${k}`;
}

/** First block-aligned offset at or after `from` holding a valid bset of this node, or -1. */
function findValidBsetAfter(data: Uint8Array, from: number, blockSizeBytes: number, seq: number): number {
  for (let o = roundUp(from, blockSizeBytes); o + BSET_HDR_BYTES <= data.length; o += blockSizeBytes) {
    if (bsetHeaderCheck(data, o, seq) === 'ok') return o;
  }
  return -1;
}

/**
 * Validate a node just read into keys.data (see the notes above) and make it
 * ready for lookups. On failure the node must not be used.
 */
export function nodeReadValidate(keys: NodeKeys, expect: NodeReadExpect, opts: NodeReadOpts = {}): NodeReadResult {
  const data = keys.data;
  const h = nodeHeaderDecode(data);
  if (!h.ok) return { ok: false, code: h.code, message: `${where(expect)}: ${h.message}` };
  const hdr = h.hdr;
  if (hdr.btreeId !== expect.btreeId) return mismatch(expect, 'btree id', String(hdr.btreeId), String(expect.btreeId), hdr);
  if (hdr.level !== expect.level) return mismatch(expect, 'level', String(hdr.level), String(expect.level), hdr);
  if (hdr.seq !== expect.seq) return mismatch(expect, 'node seq', hdr.seq.toString(16), expect.seq.toString(16), hdr);
  if (wordsCmp(hdr.minKey, 0, expect.minKey, 0) !== 0) return mismatch(expect, 'min key', wordsToText(hdr.minKey, 0), wordsToText(expect.minKey, 0), hdr);
  if (wordsCmp(hdr.maxKey, 0, expect.maxKey, 0) !== 0) return mismatch(expect, 'max key', wordsToText(hdr.maxKey, 0), wordsToText(expect.maxKey, 0), hdr);
  keys.setHeaderFromDisk(hdr);

  const block = keys.blockSizeBytes;
  const runs = keys.keyRuns();
  let off = NODE_HDR_BYTES;
  let written = 0;
  let read = 0;
  let skipped = 0;
  let blacklistedSeqs: number[] | null = null;
  let torn = false;
  /* how far the pointer says the node is written: every byte before it was flushed */
  const ptrWritten = (expect.sectorsWritten ?? 0) * PTR_SECTOR_BYTES;
  if (ptrWritten > data.length) return { ok: false, code: 'ERR_CHECKSUM', message: `${where(expect)}: the pointer says ${ptrWritten} bytes are written, past the node size ${data.length}` };
  while (off + BSET_HDR_BYTES <= data.length) {
    const chk = bsetHeaderCheck(data, off, hdr.seq);
    if (chk !== 'ok') {
      if (off === NODE_HDR_BYTES) return { ok: false, code: 'ERR_CHECKSUM', message: `${where(expect)}: first bset at byte ${off}: ${chk.replace('_', ' ')}` };
      if (off < ptrWritten) return { ok: false, code: 'ERR_CHECKSUM', message: `${where(expect)}: bset at byte ${off}: ${chk.replace('_', ' ')}, inside the ${ptrWritten} bytes the pointer says are written (damaged, or a write the device lost)` };
      const later = findValidBsetAfter(data, off + 1, block, hdr.seq);
      if (later >= 0) return { ok: false, code: 'ERR_CHECKSUM', message: `${where(expect)}: bset at byte ${off}: ${chk.replace('_', ' ')}, but a valid bset follows at byte ${later}` };
      if (bsetHeaderIntact(chk)) {
        /* written, keys bad: a torn append only if the journal still has its keys (or they were never acknowledged) */
        const jmax = bsetJournalSeq(data, off);
        const jmin = bsetJournalSeqMin(data, off);
        const blacklisted = opts.isSeqBlacklisted !== undefined && opts.isSeqBlacklisted(jmax);
        const unacked = opts.maxJournalSeq !== undefined && jmax > opts.maxJournalSeq;
        const floor = opts.tornFloor ?? 0;
        if (jmin !== 0 && jmin < floor && !blacklisted && !unacked) {
          return {
            ok: false,
            code: 'ERR_CHECKSUM',
            message: `${where(expect)}: bset at byte ${off} (journal seqs ${jmin}..${jmax}): ${chk.replace('_', ' ')}; the journal no longer holds these keys (it replays from seq ${floor}), so this is damage, not an interrupted write`,
          };
        }
        /* a holder of blacklisted seqs, as a skipped bset is: the blacklist gc rewrites the node */
        if (blacklisted) (blacklistedSeqs ??= []).push(jmax);
        torn = true;
      }
      break;
    }
    const end = bsetEnd(data, off);
    const jseq = bsetJournalSeq(data, off);
    const blacklisted = opts.isSeqBlacklisted !== undefined && opts.isSeqBlacklisted(jseq);
    const skip = blacklisted || (opts.maxJournalSeq !== undefined && jseq > opts.maxJournalSeq);
    if (skip) {
      skipped++;
      if (blacklisted) (blacklistedSeqs ??= []).push(jseq);
    } else {
      const start = off + BSET_HDR_BYTES;
      const err = bsetKeysInvalid(keys, start, end, runs);
      if (err !== null) return { ok: false, code: 'ERR_TOPOLOGY', message: `${where(expect)}: bset at byte ${off} (journal seq ${jseq}): ${err}` };
      runs.setRunBset(off, end);
      read++;
    }
    written = roundUp(end, block);
    off = written;
  }
  if (written < ptrWritten) return { ok: false, code: 'ERR_CHECKSUM', message: `${where(expect)}: bsets end at byte ${written}, short of the ${ptrWritten} bytes the pointer says are written (damaged, or a write the device lost)` };
  keys.loadSorted(runs, written);
  return { ok: true, bsetsRead: read, bsetsSkipped: skipped, blacklistedSeqs, torn };
}

export interface NodeWrite {
  /** Where in the bucket the bytes go. */
  offsetBytes: number;
  /** Block-aligned view of keys.data; must not change until nodeWriteDone. */
  bytes: Uint8Array;
  /** Highest journal seq of the keys written (the bset's journal seq). */
  journalSeq: number;
}

/**
 * Seal the writable set for writing. null: nothing unwritten (the node is
 * clean; pins on it can go). Throws if a write is already in flight.
 */
export function nodeWritePrepare(keys: NodeKeys): NodeWrite | null {
  const s = keys.sealableSet();
  if (s < 0) {
    keys.dropEmptyWritable();
    return null;
  }
  const data = keys.data;
  const first = keys.writtenBytes === 0;
  const hdrOff = keys.setHdrOf(s);
  const start = keys.setStartOf(s);
  const end = keys.setEndOf(s);
  if (first !== (hdrOff === NODE_HDR_BYTES)) throw new Error(`write prepare: set at ${hdrOff} with ${keys.writtenBytes} bytes written`);
  const journalSeq = keys.unwrittenJournalSeqMax;

  /* Paired with the read side: what goes out must pass the read checks. */
  const err = bsetKeysInvalid(keys, start, end);
  if (err !== null) throw new Error(`write prepare: btree ${keys.btreeId} level ${keys.level}: bset at byte ${hdrOff}: ${err}`);

  if (first) {
    nodeHeaderEncode(data, { btreeId: keys.btreeId, level: keys.level, seq: keys.seq, minKey: keys.minKey, maxKey: keys.maxKey, format: keys.format });
    const back = nodeHeaderDecode(data);
    if (!back.ok || back.hdr.seq !== keys.seq || !back.hdr.format.equals(keys.format)) throw new Error('write prepare: node header does not read back');
  }
  bsetHeaderEncode(data, hdrOff, keys.seq, journalSeq, (end - start) >>> 3, keys.unwrittenJournalSeqMin);
  const sealedEnd = roundUp(end, keys.blockSizeBytes);
  data.fill(0, end, sealedEnd);
  const chk = bsetHeaderCheck(data, hdrOff, keys.seq);
  if (chk !== 'ok') throw new Error(`write prepare: bset at byte ${hdrOff} does not read back: ${chk}`);

  const offsetBytes = first ? 0 : hdrOff;
  keys.sealWritable(s, sealedEnd, journalSeq);
  return { offsetBytes, bytes: data.subarray(offsetBytes, sealedEnd), journalSeq };
}

/** The write from nodeWritePrepare completed: advance writtenBytes, merge the written sets. */
export function nodeWriteDone(keys: NodeKeys): void {
  keys.writeDone();
}

/** Can the node take another append at all (else the caller rewrites it into a new bucket)? */
export function nodeCanAppend(keys: NodeKeys, u64s = 1): boolean {
  return keys.bytesAvailableForAppend() >= u64s * 8;
}
