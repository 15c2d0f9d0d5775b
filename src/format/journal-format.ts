// SPDX-License-Identifier: GPL-2.0-only
/*
 * Journal entry on-disk layout (bcachefs struct jset / struct jset_entry, own
 * layout). Encoding, decoding and validation only; no I/O.
 *
 * An entry starts on a block boundary inside the journal ring and occupies
 * roundUp(bytes, blockBytes); the padding is zero and not checksummed.
 * Little-endian.
 *
 *   Entry header (JSET_HEADER_BYTES = 64):
 *     off  size  field
 *       0     8  magic "sixtreeJ"
 *       8     4  version
 *      12     4  bytes: header + sub-entries (the checksummed length)
 *      16     4  csum: crc32c of [0, bytes) with this field zero
 *      20     4  flags, zero
 *      24     8  seq
 *      32     8  lastSeq: oldest entry still needed when this one was written (<= seq)
 *      40    16  uuid of the store (entries left by an earlier format don't match)
 *      56     8  timeMs: wall clock when written (diagnostics only)
 *      64        sub-entries, back to back
 *
 *   Sub-entry (JSET_ENTRY_HEADER_BYTES = 8, then the payload zero-padded to 8):
 *       0     1  type (JSET_ENTRY_TYPES)
 *       1     1  level
 *       2     2  btreeId
 *       4     4  payloadBytes (unpadded)
 *       8        payload
 *
 *   Payloads:
 *     btree_keys  keys encoded by the engine (bkeyEncode); opaque here
 *     btree_root  the root pointer as the engine encodes it; opaque here
 *     blacklist   u64 start, u64 end (inclusive): a blacklisted seq range
 *                 intersecting this entry's [lastSeq, seq] window
 */

import { crc32c } from '../util/crc32c.js';

export const JOURNAL_MAGIC = new TextEncoder().encode('sixtreeJ');
export const JOURNAL_VERSION = 1;
export const JSET_HEADER_BYTES = 64;
export const JSET_ENTRY_HEADER_BYTES = 8;

const JSET = {
  magic: 0,
  version: 8,
  bytes: 12,
  csum: 16,
  flags: 20,
  seq: 24,
  lastSeq: 32,
  uuid: 40,
  timeMs: 56,
} as const;

const JSET_ENTRY_FIELD = { type: 0, level: 1, btreeId: 2, payloadBytes: 4 } as const;

/** Sub-entry types: one table; codes are index + 1 (0 is never valid). */
export const JSET_ENTRY_TYPE_NAMES = ['btree_keys', 'btree_root', 'blacklist'] as const;
export type JsetEntryTypeName = (typeof JSET_ENTRY_TYPE_NAMES)[number];
export const JSET_ENTRY = Object.freeze(Object.fromEntries(JSET_ENTRY_TYPE_NAMES.map((n, i) => [n, i + 1])) as { readonly [K in JsetEntryTypeName]: number });

export function jsetEntryTypeName(type: number): string {
  return JSET_ENTRY_TYPE_NAMES[type - 1] ?? `unknown_${type}`;
}

export const BLACKLIST_PAYLOAD_BYTES = 16;
export const BTREE_ID_MAX = 0xffff;
export const LEVEL_MAX = 0xff;

/** Bytes a sub-entry with a payload of payloadBytes takes in an entry. */
export function jsetEntryBytes(payloadBytes: number): number {
  return JSET_ENTRY_HEADER_BYTES + ((payloadBytes + 7) & ~7);
}

export interface JsetEntry {
  type: number;
  btreeId: number;
  level: number;
  payload: Uint8Array;
}

export interface JsetHeader {
  version: number;
  bytes: number;
  csum: number;
  seq: number;
  lastSeq: number;
  uuid: Uint8Array;
  timeMs: number;
}

function getU64(v: DataView, off: number): number {
  const lo = v.getUint32(off, true);
  const hi = v.getUint32(off + 4, true);
  if (hi >= 0x20_0000) return Number.NaN;
  return hi * 0x1_0000_0000 + lo;
}

function setU64(v: DataView, off: number, n: number): void {
  v.setUint32(off, n % 0x1_0000_0000, true);
  v.setUint32(off + 4, Math.floor(n / 0x1_0000_0000), true);
}

function view(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Append a sub-entry at buf[off]; returns the offset after it (padding zeroed). Pass `v` (a view of buf) to avoid allocating. */
export function jsetEntryWrite(buf: Uint8Array, off: number, type: number, btreeId: number, level: number, payload: Uint8Array, v: DataView = view(buf)): number {
  v.setUint8(off + JSET_ENTRY_FIELD.type, type);
  v.setUint8(off + JSET_ENTRY_FIELD.level, level);
  v.setUint16(off + JSET_ENTRY_FIELD.btreeId, btreeId, true);
  v.setUint32(off + JSET_ENTRY_FIELD.payloadBytes, payload.length, true);
  buf.set(payload, off + JSET_ENTRY_HEADER_BYTES);
  const end = off + jsetEntryBytes(payload.length);
  buf.fill(0, off + JSET_ENTRY_HEADER_BYTES + payload.length, end);
  return end;
}

/** Append a blacklist sub-entry. */
export function jsetBlacklistWrite(buf: Uint8Array, off: number, start: number, end: number): number {
  const p = new Uint8Array(BLACKLIST_PAYLOAD_BYTES);
  const pv = view(p);
  setU64(pv, 0, start);
  setU64(pv, 8, end);
  return jsetEntryWrite(buf, off, JSET_ENTRY.blacklist, 0, 0, p);
}

export function jsetBlacklistRead(e: JsetEntry): { start: number; end: number } {
  const v = view(e.payload);
  return { start: getU64(v, 0), end: getU64(v, 8) };
}

/**
 * Fill in the header of an entry whose sub-entries occupy [JSET_HEADER_BYTES, bytes)
 * and set its checksum. Validates the fields first (paired with jsetHeaderRead).
 */
export function jsetSeal(buf: Uint8Array, h: { seq: number; lastSeq: number; bytes: number; uuid: Uint8Array; timeMs: number }): void {
  if (!Number.isSafeInteger(h.seq) || h.seq < 1 || !Number.isSafeInteger(h.lastSeq) || h.lastSeq < 1 || h.lastSeq > h.seq)
    throw new Error(`jsetSeal: bad seq ${h.seq} / lastSeq ${h.lastSeq}`);
  if (h.bytes < JSET_HEADER_BYTES || h.bytes > buf.length || h.bytes % 8 !== 0) throw new Error(`jsetSeal: bad length ${h.bytes}`);
  if (h.uuid.length !== 16) throw new Error('jsetSeal: uuid must be 16 bytes');
  const v = view(buf);
  buf.set(JOURNAL_MAGIC, JSET.magic);
  v.setUint32(JSET.version, JOURNAL_VERSION, true);
  v.setUint32(JSET.bytes, h.bytes, true);
  v.setUint32(JSET.csum, 0, true);
  v.setUint32(JSET.flags, 0, true);
  setU64(v, JSET.seq, h.seq);
  setU64(v, JSET.lastSeq, h.lastSeq);
  buf.set(h.uuid, JSET.uuid);
  setU64(v, JSET.timeMs, h.timeMs);
  v.setUint32(JSET.csum, crc32c(buf, 0, 0, h.bytes), true);
}

export type JsetProbe =
  | { status: 'none' }
  | { status: 'bad'; reason: string; seq: number }
  | { status: 'version'; version: number; seq: number }
  | { status: 'ok'; header: JsetHeader };

function uuidEq(buf: Uint8Array, off: number, uuid: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (buf[off + i] !== uuid[i]) return false;
  return true;
}

/**
 * Look at the header at buf[0..]: 'none' when there is no entry of this store
 * (no magic, or another store's uuid), 'bad' when the header is implausible,
 * 'ok' with the decoded header otherwise. `avail` is how many bytes may follow
 * in the ring (bounds `bytes`). The checksum is checked by jsetVerify().
 */
export function jsetProbe(buf: Uint8Array, uuid: Uint8Array, entryBytesMax: number, avail: number): JsetProbe {
  if (buf[0] !== JOURNAL_MAGIC[0]) return { status: 'none' };
  for (let i = 0; i < JOURNAL_MAGIC.length; i++) if (buf[JSET.magic + i] !== JOURNAL_MAGIC[i]) return { status: 'none' };
  if (!uuidEq(buf, JSET.uuid, uuid)) return { status: 'none' };
  const v = view(buf);
  const seq = getU64(v, JSET.seq);
  const version = v.getUint32(JSET.version, true);
  if (version !== JOURNAL_VERSION) return { status: 'version', version, seq };
  const bytes = v.getUint32(JSET.bytes, true);
  const lastSeq = getU64(v, JSET.lastSeq);
  if (bytes < JSET_HEADER_BYTES || bytes % 8 !== 0 || bytes > entryBytesMax || bytes > avail)
    return { status: 'bad', reason: `length ${bytes} outside [${JSET_HEADER_BYTES}, ${Math.min(entryBytesMax, avail)}]`, seq };
  if (!(seq >= 1) || !(lastSeq >= 1) || lastSeq > seq) return { status: 'bad', reason: `seq ${seq} / last_seq ${lastSeq} invalid`, seq };
  return {
    status: 'ok',
    header: { version, bytes, csum: v.getUint32(JSET.csum, true), seq, lastSeq, uuid: buf.slice(JSET.uuid, JSET.uuid + 16), timeMs: getU64(v, JSET.timeMs) },
  };
}

/** Verify the checksum of the entry in buf[0, h.bytes). Restores the buffer. */
export function jsetVerify(buf: Uint8Array, h: JsetHeader): boolean {
  const v = view(buf);
  v.setUint32(JSET.csum, 0, true);
  const c = crc32c(buf, 0, 0, Math.min(h.bytes, buf.length));
  v.setUint32(JSET.csum, h.csum, true);
  return c === h.csum;
}

/** Decode the sub-entries of a verified entry; payloads are views into buf. Returns a reason string on malformed content. */
export function jsetEntries(buf: Uint8Array, h: JsetHeader): JsetEntry[] | string {
  const v = view(buf);
  const out: JsetEntry[] = [];
  let off = JSET_HEADER_BYTES;
  while (off < h.bytes) {
    if (off + JSET_ENTRY_HEADER_BYTES > h.bytes) return `sub-entry header at ${off} runs past the entry end ${h.bytes}`;
    const type = v.getUint8(off + JSET_ENTRY_FIELD.type);
    const payloadBytes = v.getUint32(off + JSET_ENTRY_FIELD.payloadBytes, true);
    const end = off + jsetEntryBytes(payloadBytes);
    if (end > h.bytes) return `sub-entry at ${off} (${payloadBytes} bytes) runs past the entry end ${h.bytes}`;
    if (type < 1 || type > JSET_ENTRY_TYPE_NAMES.length) return `sub-entry at ${off} has unknown type ${type}`;
    if (type === JSET_ENTRY.blacklist && payloadBytes !== BLACKLIST_PAYLOAD_BYTES) return `blacklist sub-entry at ${off} has ${payloadBytes} bytes`;
    out.push({
      type,
      btreeId: v.getUint16(off + JSET_ENTRY_FIELD.btreeId, true),
      level: v.getUint8(off + JSET_ENTRY_FIELD.level),
      payload: buf.subarray(off + JSET_ENTRY_HEADER_BYTES, off + JSET_ENTRY_HEADER_BYTES + payloadBytes),
    });
    off = end;
  }
  return out;
}

export function jsetEntryToText(e: JsetEntry): string {
  if (e.type === JSET_ENTRY.blacklist) {
    const r = jsetBlacklistRead(e);
    return `blacklist ${r.start}..${r.end}`;
  }
  return `${jsetEntryTypeName(e.type)} btree ${e.btreeId} level ${e.level}: ${e.payload.length} bytes`;
}
