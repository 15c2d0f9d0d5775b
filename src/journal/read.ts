// SPDX-License-Identifier: GPL-2.0-only
/*
 * Journal read (bcachefs journal_io.c, read side): find what recovery replays.
 *
 * 1. Scan the whole journal area in large aligned reads (chunkBytes). At every
 *    block boundary look for an entry header of this store (magic + uuid); a
 *    plausible header has its checksum verified (an entry straddling a chunk is
 *    read on its own) and the scan skips past a valid entry. Entries of another
 *    store (earlier format) and stale entries of old laps are harmless: the
 *    first are ignored by uuid, the second are older than any window below.
 * 2. The newest valid entry that is not blacklisted decides the window
 *    [newest.lastSeq, newest.seq]. Every seq in it must be present and valid,
 *    unless blacklisted (superblock list, or a range an entry of the window
 *    carries): a missing or corrupt one is ERR_CHECKSUM naming the byte offset
 *    where it should be. Never silently skipped: its keys may be needed.
 * 3. A torn or corrupt entry after the newest valid one is the end of the
 *    journal: its write was never acknowledged (journal.ts starts a write only
 *    after the previous one is durable).
 *
 * An empty journal (fresh store) gives no entries and newestSeq 0.
 */

import { SixtreeError } from '../errors.js';
import {
  JOURNAL_MAGIC,
  JSET_ENTRY,
  jsetBlacklistRead,
  jsetEntries,
  jsetProbe,
  jsetVerify,
  type JsetEntry,
  type JsetHeader,
} from '../format/journal-format.js';
import type { SeqRange } from '../format/superblock.js';
import type { Device } from '../io/device.js';
import { MiB, roundDown, roundUp, type Layout } from '../layout.js';
import type { JournalSeqBlacklist } from './blacklist.js';
import type { JournalRoot } from './write.js';

export const JOURNAL_READ_CHUNK_BYTES = 8 * MiB;

export interface JournalEntry {
  seq: number;
  lastSeq: number;
  /** Relative to the journal area. */
  offsetBytes: number;
  /** Padded size on disk. */
  sizeBytes: number;
  timeMs: number;
  /** Sub-entries in order; payloads are views into a private copy. */
  entries: JsetEntry[];
}

export interface JournalReadResult {
  /** The window [lastSeq, newestSeq] in seq order (blacklisted seqs absent). */
  entries: JournalEntry[];
  newestSeq: number;
  lastSeq: number;
  /** Roots recorded by the newest entry (the last btree_root per btree), by btreeId. */
  roots: JournalRoot[];
  /** Where the journal continues (journal-relative). */
  nextWriteOffsetBytes: number;
  /** Blacklisted ranges carried by the window's entries (merge them into the superblock's). */
  blacklist: SeqRange[];
  scan: {
    validEntries: number;
    badHeaders: number;
    badChecksums: number;
    blacklistedIgnored: number;
    reads: number;
    bytesRead: number;
  };
}

export interface ReadJournalOptions {
  /** The store's uuid (superblock). */
  uuid: Uint8Array;
  /** The superblock's blacklist. */
  blacklist?: JournalSeqBlacklist;
  chunkBytes?: number;
}

interface Candidate {
  offsetBytes: number;
  sizeBytes: number;
  header: JsetHeader;
}

interface BadSpot {
  offsetBytes: number;
  seq: number;
  reason: string;
}

export async function readJournal(dev: Device, layout: Layout, opts: ReadJournalOptions): Promise<JournalReadResult> {
  const J = layout.journalBytes;
  const B = layout.blockBytes;
  const base = layout.journalOffsetBytes;
  const chunkBytes = Math.min(J, Math.max(B, roundDown(opts.chunkBytes ?? JOURNAL_READ_CHUNK_BYTES, B)));
  const scan = { validEntries: 0, badHeaders: 0, badChecksums: 0, blacklistedIgnored: 0, reads: 0, bytesRead: 0 };
  const bySeq = new Map<number, Candidate>();
  const bad: BadSpot[] = [];
  const newerVersion: Array<{ offsetBytes: number; seq: number; version: number }> = [];
  const devOff = (rel: number) => base + rel;

  const read = async (buf: Uint8Array, rel: number) => {
    scan.reads++;
    scan.bytesRead += buf.length;
    await dev.read(buf, devOff(rel));
  };

  /* Pass 1: scan. */
  const chunk = dev.allocBuffer(chunkBytes);
  try {
    let o = 0;
    while (o < J) {
      const cstart = o;
      const clen = Math.min(chunkBytes, J - cstart);
      await read(chunk.subarray(0, clen), cstart);
      while (o < cstart + clen) {
        const rel = o - cstart;
        if (chunk[rel] !== JOURNAL_MAGIC[0]) {
          o += B; // fast path: most blocks are not entry starts
          continue;
        }
        const probe = jsetProbe(chunk.subarray(rel, clen), opts.uuid, layout.journalEntryBytesMax, J - o);
        if (probe.status === 'none') {
          o += B;
          continue;
        }
        if (probe.status === 'bad') {
          scan.badHeaders++;
          bad.push({ offsetBytes: o, seq: probe.seq, reason: probe.reason });
          o += B;
          continue;
        }
        if (probe.status === 'version') {
          newerVersion.push({ offsetBytes: o, seq: probe.seq, version: probe.version });
          o += B;
          continue;
        }
        const h = probe.header;
        const size = roundUp(h.bytes, B);
        let ok: boolean;
        if (rel + h.bytes <= clen) {
          ok = jsetVerify(chunk.subarray(rel, rel + h.bytes), h);
        } else {
          const tmp = dev.allocBuffer(size);
          try {
            await read(tmp, o);
            ok = jsetVerify(tmp, h);
          } finally {
            dev.freeBuffer(tmp);
          }
        }
        if (!ok) {
          scan.badChecksums++;
          bad.push({ offsetBytes: o, seq: h.seq, reason: `checksum mismatch (header says seq ${h.seq}, ${h.bytes} bytes)` });
          o += B;
          continue;
        }
        scan.validEntries++;
        const prev = bySeq.get(h.seq);
        // Two valid copies of one seq can't come from the writer; keep the first and note the second.
        if (prev) bad.push({ offsetBytes: o, seq: h.seq, reason: `second valid entry with seq ${h.seq} (first at ${devOff(prev.offsetBytes)})` });
        else bySeq.set(h.seq, { offsetBytes: o, sizeBytes: size, header: h });
        o += size;
      }
    }
  } finally {
    dev.freeBuffer(chunk);
  }

  /* Pass 2: newest non-blacklisted entry and its window. */
  let newest: Candidate | null = null;
  for (const c of bySeq.values()) {
    if (opts.blacklist?.isBlacklisted(c.header.seq)) continue;
    if (!newest || c.header.seq > newest.header.seq) newest = c;
  }
  const newerVer = newerVersion.filter((v) => !newest || v.seq > newest.header.lastSeq);
  if (newerVer.length) {
    const v = newerVer[0]!;
    throw new SixtreeError('ERR_VERSION', `${dev.path}: journal entry seq ${v.seq} at byte offset ${devOff(v.offsetBytes)} has format version ${v.version}, this code reads version 1`, {
      path: dev.path,
      offset: devOff(v.offsetBytes),
    });
  }
  if (!newest) {
    return { entries: [], newestSeq: 0, lastSeq: 0, roots: [], nextWriteOffsetBytes: 0, blacklist: [], scan };
  }
  const first = newest.header.lastSeq;
  const last = newest.header.seq;
  const window: Candidate[] = [];
  for (const c of bySeq.values()) {
    const s = c.header.seq;
    if (s < first || s > last) continue;
    if (opts.blacklist?.isBlacklisted(s)) {
      scan.blacklistedIgnored++;
      continue;
    }
    window.push(c);
  }
  window.sort((a, b) => a.offsetBytes - b.offsetBytes);

  // Read the window in runs of adjacent entries.
  const entries: JournalEntry[] = [];
  for (let i = 0; i < window.length; ) {
    let j = i + 1;
    let runBytes = window[i]!.sizeBytes;
    while (j < window.length && window[j]!.offsetBytes === window[j - 1]!.offsetBytes + window[j - 1]!.sizeBytes && runBytes + window[j]!.sizeBytes <= chunkBytes) {
      runBytes += window[j]!.sizeBytes;
      j++;
    }
    const dbuf = dev.allocBuffer(runBytes);
    let copy: Uint8Array;
    try {
      await read(dbuf, window[i]!.offsetBytes);
      copy = dbuf.slice();
    } finally {
      dev.freeBuffer(dbuf);
    }
    for (let k = i; k < j; k++) {
      const c = window[k]!;
      const at = c.offsetBytes - window[i]!.offsetBytes;
      const data = copy.subarray(at, at + c.header.bytes);
      const where = `journal entry seq ${c.header.seq} at byte offset ${devOff(c.offsetBytes)}`;
      if (!jsetVerify(data, c.header)) {
        throw new SixtreeError('ERR_CHECKSUM', `${dev.path}: ${where}: checksum mismatch on re-read`, { path: dev.path, offset: devOff(c.offsetBytes), seq: c.header.seq });
      }
      const subs = jsetEntries(data, c.header);
      if (typeof subs === 'string') {
        throw new SixtreeError('ERR_CHECKSUM', `${dev.path}: ${where}: invalid content: ${subs}`, { path: dev.path, offset: devOff(c.offsetBytes), seq: c.header.seq });
      }
      entries.push({ seq: c.header.seq, lastSeq: c.header.lastSeq, offsetBytes: c.offsetBytes, sizeBytes: c.sizeBytes, timeMs: c.header.timeMs, entries: subs });
    }
    i = j;
  }
  entries.sort((a, b) => a.seq - b.seq);

  // Blacklisted ranges the window carries explain gaps too.
  const carried: SeqRange[] = [];
  for (const e of entries) {
    for (const s of e.entries) if (s.type === JSET_ENTRY.blacklist) carried.push(jsetBlacklistRead(s));
  }
  const inCarried = (seq: number) => carried.some((r) => seq >= r.start && seq <= r.end);

  // Every seq of the window must be there.
  let k = 0;
  for (let s = first; s <= last; s++) {
    if (k < entries.length && entries[k]!.seq === s) {
      k++;
      continue;
    }
    if (opts.blacklist?.isBlacklisted(s) || inCarried(s)) continue;
    const prev = k > 0 ? entries[k - 1]! : null;
    const expected = prev && prev.seq === s - 1 ? prev.offsetBytes + prev.sizeBytes : -1;
    const near = bad.filter((b) => b.seq === s || b.offsetBytes === expected || (expected >= 0 && b.offsetBytes === 0));
    const at = near.length ? near[0]!.offsetBytes : expected >= 0 ? (expected >= J ? 0 : expected) : -1;
    const whereText =
      at >= 0
        ? `at byte offset ${devOff(at)}${expected >= 0 && at !== expected ? ` (or ${devOff(expected)})` : ''}`
        : `(its position is unknown: entry ${s - 1} is missing too)`;
    const why = near.length ? near.map((b) => `${b.reason} at ${devOff(b.offsetBytes)}`).join('; ') : 'no valid entry found there';
    throw new SixtreeError(
      'ERR_CHECKSUM',
      `${dev.path}: journal entry seq ${s} is missing or corrupt ${whereText}: ${why}; entry ${last} needs every entry from ${first}`,
      { path: dev.path, offset: at >= 0 ? devOff(at) : undefined, seq: s },
    );
  }

  const newestEntry = entries[entries.length - 1]!;
  const rootsById = new Map<number, JournalRoot>();
  for (const s of newestEntry.entries) {
    if (s.type === JSET_ENTRY.btree_root) rootsById.set(s.btreeId, { btreeId: s.btreeId, level: s.level, ptr: s.payload });
  }
  const roots = [...rootsById.values()].sort((a, b) => a.btreeId - b.btreeId);
  const end = newestEntry.offsetBytes + newestEntry.sizeBytes;
  return {
    entries,
    newestSeq: last,
    lastSeq: first,
    roots,
    nextWriteOffsetBytes: end >= J ? 0 : end,
    blacklist: carried,
    scan,
  };
}

/** One line per entry: seq, last_seq, offset, sub-entries (for `sixtree info --journal`). */
export function journalReadToText(r: JournalReadResult): string {
  if (!r.entries.length) return 'journal empty\n';
  const lines = [`journal: entries ${r.lastSeq}..${r.newestSeq}, continues at ${r.nextWriteOffsetBytes}`];
  for (const e of r.entries) {
    const counts = new Map<string, number>();
    for (const s of e.entries) {
      const n = s.type === JSET_ENTRY.btree_keys ? 'keys' : s.type === JSET_ENTRY.btree_root ? 'roots' : 'blacklist';
      counts.set(n, (counts.get(n) ?? 0) + 1);
    }
    lines.push(`  ${e.seq} last_seq ${e.lastSeq} @${e.offsetBytes}+${e.sizeBytes}: ${[...counts].map(([k, v]) => `${v} ${k}`).join(', ') || 'empty'}`);
  }
  return lines.join('\n') + '\n';
}
