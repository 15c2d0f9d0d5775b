// SPDX-License-Identifier: GPL-2.0-only
import { describe, expect, it } from 'vitest';
import {
  BTREE_PTR_VALUE_BYTES,
  KEY_TYPES,
  KEY_TYPE_TABLE,
  UNPACKED_VALUE_OFFSET,
  bkeyBtreePtr,
  bkeyDecode,
  bkeyDecodeCheck,
  bkeyEncode,
  bkeyEncodedBytes,
  bkeyExtent,
  bkeyInvalid,
  bkeyToText,
  bkeyValue,
  bkeyWhiteout,
  PTR_SECTORS_MAX,
  btreePtrDecode,
  btreePtrSeq,
  keyTypeName,
  maxValueBytesForNode,
} from '../../src/btree/bkey.js';
import { posOf, property, randPos } from '../format/prng.js';

describe('KEY_TYPES', () => {
  it('derives names and numbers from one table', () => {
    expect(KEY_TYPES).toEqual({ deleted: 0, value: 1, extent: 2, btree_ptr: 3 });
    KEY_TYPE_TABLE.forEach((t, i) => {
      expect(t.nr).toBe(i);
      expect(keyTypeName(i)).toBe(t.name);
    });
    expect(keyTypeName(99)).toMatch(/invalid/);
  });
});

describe('bkeyEncode() / bkeyDecode()', () => {
  it('round-trips random keys, 8-byte aligned', () => {
    property('encode', 300, (r) => {
      const type = r.pick([KEY_TYPES.value, KEY_TYPES.extent, KEY_TYPES.deleted]);
      const k = {
        type,
        p: randPos(r),
        size: type === KEY_TYPES.extent ? r.u32() : 0,
        version: r.int(2 ** 53),
        value: type === KEY_TYPES.deleted ? new Uint8Array(0) : r.bytes(r.int(70)),
      };
      expect(bkeyInvalid(k)).toBeNull();
      const n = bkeyEncodedBytes(k);
      expect(n % 8).toBe(0);
      expect(n).toBeGreaterThanOrEqual(UNPACKED_VALUE_OFFSET + k.value.length);
      const buf = new Uint8Array(n + 16).fill(0xee);
      expect(bkeyEncode(k, buf, 8)).toBe(n);
      expect(buf[8 + n]).toBe(0xee);
      expect(bkeyDecodeCheck(buf, 8, n)).toBeNull();
      const d = bkeyDecode(buf, 8);
      expect(d.type).toBe(k.type);
      expect(Array.from(d.p)).toEqual(Array.from(k.p));
      expect(d.size).toBe(k.size);
      expect(d.version).toBe(k.version);
      expect(Array.from(d.value)).toEqual(Array.from(k.value));
    });
  });

  it('bkeyDecodeCheck rejects truncated and malformed keys', () => {
    const k = bkeyValue(posOf(1, 2), new Uint8Array([1, 2, 3]), 9);
    const buf = new Uint8Array(bkeyEncodedBytes(k));
    bkeyEncode(k, buf, 0);
    expect(bkeyDecodeCheck(buf, 0, buf.length - 8)).toMatch(/size|truncated/);
    const big = new Uint8Array(64);
    bkeyEncode(bkeyValue(posOf(1, 2), new Uint8Array(12)), big, 0);
    expect(bkeyDecodeCheck(big, 0, 40)).toMatch(/size/);
    expect(bkeyDecodeCheck(buf, 0, 20)).toMatch(/truncated/);
    const bad = buf.slice();
    bad[2] = 77; // type
    expect(bkeyDecodeCheck(bad, 0, bad.length)).toMatch(/type/);
    const packed = buf.slice();
    packed[3] |= 0x08;
    expect(bkeyDecodeCheck(packed, 0, packed.length)).toMatch(/packed/);
  });

  it('bkeyInvalid catches bad fields', () => {
    expect(bkeyInvalid({ ...bkeyValue(posOf(1, 1), new Uint8Array(1)), version: 2 ** 53 })).toMatch(/version/);
    expect(bkeyInvalid({ ...bkeyWhiteout(posOf(1, 1)), value: new Uint8Array(1) })).toMatch(/whiteout/);
    expect(bkeyInvalid({ ...bkeyValue(posOf(1, 1), new Uint8Array(1)), type: 9 })).toMatch(/type/);
    expect(bkeyInvalid({ ...bkeyValue(posOf(1, 1), new Uint8Array(1)), type: KEY_TYPES.btree_ptr })).toMatch(/btree_ptr/);
  });
});

describe('btree pointers', () => {
  it('encode and decode, into a caller object too', () => {
    const ptr = { bucket: 123456, seq: 2 ** 52 - 3, level: 2, minKey: posOf(7, 8, 9), sectorsWritten: 0 };
    const k = bkeyBtreePtr(posOf(9, 9, 9), ptr, 5);
    expect(k.value.length).toBe(BTREE_PTR_VALUE_BYTES);
    const d = btreePtrDecode(k.value);
    expect(d).toEqual(ptr);
    const out = { bucket: 0, seq: 0, level: 0, minKey: new Uint32Array(5), maxKey: new Uint32Array(5), btreeId: 4 };
    expect(btreePtrDecode(k.value, out)).toBe(out);
    expect(out.seq).toBe(ptr.seq);
    expect(Array.from(out.minKey)).toEqual(Array.from(ptr.minKey));
    expect(btreePtrSeq(k.value)).toBe(ptr.seq);
    expect(bkeyToText(k)).toContain('bucket 123456');
    expect(() => bkeyBtreePtr(posOf(1, 1), { ...ptr, seq: 2 ** 52 })).toThrow();
  });

  it('carry how far the child is written beside its level; pointers written before read as not known', () => {
    for (const [level, sectors] of [[0, 1], [3, 8192], [255, PTR_SECTORS_MAX], [1, 0]] as const) {
      const ptr = { bucket: 9, seq: 77, level, minKey: posOf(1, 2), sectorsWritten: sectors };
      const d = btreePtrDecode(bkeyBtreePtr(posOf(5, 5), ptr).value);
      expect(d).toEqual(ptr);
    }
    /* no length given: 0 */
    expect(btreePtrDecode(bkeyBtreePtr(posOf(5, 5), { bucket: 9, seq: 77, level: 2, minKey: posOf(1, 2) }).value).sectorsWritten).toBe(0);
    /* the older layout: the level word held the level alone */
    const old = bkeyBtreePtr(posOf(5, 5), { bucket: 9, seq: 77, level: 2, minKey: posOf(1, 2) }).value;
    expect(new DataView(old.buffer, old.byteOffset).getUint32(12, true)).toBe(2);
    expect(btreePtrDecode(old)).toMatchObject({ level: 2, sectorsWritten: 0 });
    expect(bkeyToText(bkeyBtreePtr(posOf(5, 5), { bucket: 9, seq: 77, level: 1, minKey: posOf(1, 2), sectorsWritten: 3 }))).toContain('written 1536');
    expect(() => bkeyBtreePtr(posOf(1, 1), { bucket: 9, seq: 77, level: 256, minKey: posOf(1, 2) })).toThrow(RangeError);
    expect(() => bkeyBtreePtr(posOf(1, 1), { bucket: 9, seq: 77, level: 1, minKey: posOf(1, 2), sectorsWritten: PTR_SECTORS_MAX + 1 })).toThrow(RangeError);
    expect(() => bkeyBtreePtr(posOf(1, 1), { bucket: 9, seq: 77, level: 1, minKey: posOf(1, 2), sectorsWritten: 1.5 })).toThrow(RangeError);
  });
});

describe('bkeyToText() / maxValueBytesForNode()', () => {
  it('prints type, position, size and version', () => {
    expect(bkeyToText(bkeyExtent(posOf(1, 100), 8, new Uint8Array([0xab]), 3))).toBe('extent 1:100:0 size 8 ver 3 len 1 ab');
    expect(bkeyToText(bkeyWhiteout(posOf(2, 3, 4), 7))).toBe('deleted 2:3:4 ver 7');
  });

  it('keeps an unpacked key within 1/8 of the node', () => {
    for (const n of [4096, 65536, 262144]) {
      const v = maxValueBytesForNode(n);
      expect(bkeyEncodedBytes(bkeyValue(posOf(0, 0), new Uint8Array(v)))).toBe(n / 8);
      expect(bkeyEncodedBytes(bkeyValue(posOf(0, 0), new Uint8Array(v + 1)))).toBeGreaterThan(n / 8);
    }
  });
});
