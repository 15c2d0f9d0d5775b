// SPDX-License-Identifier: GPL-2.0-only
import { describe, expect, it } from 'vitest';
import { SixtreeError } from '../../src/errors.js';
import {
  BLACKLIST_RANGES_MAX,
  BTREES_MAX,
  EXTENT_SIZE_BOUND_UNKNOWN,
  decodeSuperblock,
  encodeSuperblock,
  layoutFromSuperblock,
  newSuperblock,
  readSuperblock,
  superblockToText,
  validateSuperblock,
  writeSuperblock,
  type Superblock,
} from '../../src/format/superblock.js';
import { BUCKETS_MIN, GiB, KiB, MiB, SB_BYTES, SB_OFFSETS_BYTES, computeLayout, journalBytesDefault } from '../../src/layout.js';
import { crc32c } from '../../src/util/crc32c.js';
import { TestDevice } from '../journal/helpers.js';

const DEV_BYTES = 64 * MiB;

function layout() {
  return computeLayout({ deviceBytes: DEV_BYTES, nodeBytes: 256 * KiB, blockBytes: 4 * KiB });
}

function sample(): Superblock {
  const sb = newSuperblock(layout(), [{ name: 'alloc' }, { name: 'extents', extents: true }, { name: 'dirents_32_chars_long_name_abcde' }]);
  sb.btrees[0]!.root = { bucket: 3, seq: 2 ** 52 - 1, level: 2 };
  sb.btrees[1]!.root = { bucket: 0, seq: 12345, level: 0 };
  sb.blacklist = [
    { start: 10, end: 17 },
    { start: 30, end: 30 },
  ];
  sb.clean = false;
  sb.cleanJournalSeq = 99;
  sb.cleanJournalOffsetBytes = 8 * KiB;
  return sb;
}

async function expectCode(p: Promise<unknown>, code: string): Promise<SixtreeError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(SixtreeError);
    expect((e as SixtreeError).code).toBe(code);
    return e as SixtreeError;
  }
  throw new Error(`expected ${code}, resolved`);
}

/** Re-checksum a copy in the image after editing it. */
function rechecksum(img: Uint8Array, off: number): void {
  const v = new DataView(img.buffer, img.byteOffset + off, SB_BYTES);
  const bytes = v.getUint32(12, true);
  v.setUint32(16, 0, true);
  v.setUint32(16, crc32c(img.subarray(off, off + bytes)), true);
}

describe('computeLayout()', () => {
  it('places superblocks, journal and buckets in order, aligned', () => {
    const l = layout();
    expect(l.sbOffsetsBytes).toEqual([4096, 8192]);
    expect(l.journalOffsetBytes).toBe(12 * KiB);
    expect(l.journalBytes).toBe(4 * MiB); // 64 MiB / 32 = 2 MiB, clamped up to 4 MiB
    expect(l.bucketOffsetBytes % l.nodeBytes).toBe(0);
    expect(l.bucketOffsetBytes).toBeGreaterThanOrEqual(l.journalOffsetBytes + l.journalBytes);
    expect(l.bucketOffsetBytes + l.nrBuckets * l.nodeBytes).toBeLessThanOrEqual(DEV_BYTES);
    expect(l.journalEntryBytesMax).toBe(512 * KiB);
  });

  it('scales the default journal with the device and clamps it', () => {
    expect(journalBytesDefault(64 * GiB, 4096)).toBe(1 * GiB);
    expect(journalBytesDefault(1024 * GiB, 4096)).toBe(1 * GiB);
    expect(journalBytesDefault(256 * MiB, 4096)).toBe(8 * MiB);
    expect(journalBytesDefault(16 * MiB, 4096)).toBe(4 * MiB);
  });

  it('ERR_TOO_SMALL names the minimum size', () => {
    let err: unknown;
    try {
      computeLayout({ deviceBytes: 8 * MiB, nodeBytes: 256 * KiB, blockBytes: 4096 });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SixtreeError);
    const e = err as SixtreeError;
    expect(e.code).toBe('ERR_TOO_SMALL');
    const min = e.details.minBytes as number;
    expect(e.message).toContain(String(min));
    // exactly the minimum works, one node less does not
    expect(computeLayout({ deviceBytes: min, nodeBytes: 256 * KiB, blockBytes: 4096, journalBytes: 4 * MiB }).nrBuckets).toBe(BUCKETS_MIN);
    expect(() => computeLayout({ deviceBytes: min - 1, nodeBytes: 256 * KiB, blockBytes: 4096, journalBytes: 4 * MiB })).toThrow(/at least/);
  });

  it('rejects bad sizes with ERR_INVALID_ARG', () => {
    const ok = { deviceBytes: DEV_BYTES, nodeBytes: 256 * KiB, blockBytes: 4096 };
    for (const bad of [
      { ...ok, nodeBytes: 3000 },
      { ...ok, nodeBytes: 2 * MiB },
      { ...ok, blockBytes: 256 },
      { ...ok, blockBytes: 8192, nodeBytes: 4096 },
      { ...ok, journalBytes: 4096 },
      { ...ok, journalBytes: 1 * MiB + 512 },
    ]) {
      expect(() => computeLayout(bad), JSON.stringify(bad)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    }
  });
});

describe('superblock encode/decode', () => {
  it('round-trips every field', () => {
    const sb = sample();
    const buf = encodeSuperblock(sb);
    const c = decodeSuperblock(buf, 4096);
    expect(c.status).toBe('ok');
    expect(c.sb).toEqual(sb);
    expect(layoutFromSuperblock(c.sb!)).toEqual(layout());
  });

  it('holds the largest table in one copy', () => {
    const sb = newSuperblock(
      layout(),
      Array.from({ length: BTREES_MAX }, (_, i) => ({ name: `b${i}`.padEnd(32, 'x') })),
    );
    sb.blacklist = Array.from({ length: BLACKLIST_RANGES_MAX }, (_, i) => ({ start: 10 * i + 1, end: 10 * i + 5 }));
    const c = decodeSuperblock(encodeSuperblock(sb), 0);
    expect(c.status).toBe('ok');
    expect(c.sb!.btrees.length).toBe(BTREES_MAX);
    expect(c.sb!.blacklist.length).toBe(BLACKLIST_RANGES_MAX);
  });

  it('keeps the extent size bound; a superblock written before the field (flag clear) reads as 2^32-1', () => {
    const sb = sample();
    expect(sb.extentSizeBound).toBe(0);
    sb.extentSizeBound = 4096;
    const img = encodeSuperblock(sb);
    expect(decodeSuperblock(img, 0).sb!.extentSizeBound).toBe(4096);
    // as an older writer left it: flag bit 1 clear, the reserved bytes zero
    const v = new DataView(img.buffer, img.byteOffset, SB_BYTES);
    v.setUint32(20, v.getUint32(20, true) & ~2, true);
    v.setUint32(120, 0, true);
    rechecksum(img, 0);
    const c = decodeSuperblock(img, 0);
    expect(c.status).toBe('ok');
    expect(c.sb!.extentSizeBound).toBe(EXTENT_SIZE_BOUND_UNKNOWN);
    expect(superblockToText(c.sb!)).toMatch(new RegExp(`extent size bound:\\s+${EXTENT_SIZE_BOUND_UNKNOWN}`));
  });

  it('validates before writing', () => {
    const bad: Array<(s: Superblock) => void> = [
      (s) => (s.btrees[0]!.name = 'Bad'),
      (s) => (s.btrees[1]!.name = s.btrees[0]!.name),
      (s) => (s.btrees[0]!.root = { bucket: s.nrBuckets, seq: 1, level: 0 }),
      (s) => (s.btrees[0]!.root = { bucket: 1, seq: 2 ** 52, level: 0 }),
      (s) => (s.blacklist = [{ start: 5, end: 9 }, { start: 10, end: 12 }]), // adjacent: should have been merged
      (s) => (s.blacklist = [{ start: 9, end: 5 }]),
      (s) => (s.nodeBytes = 3000),
      (s) => (s.nrBuckets = 1),
      (s) => (s.btrees = []),
    ];
    for (const f of bad) {
      const s = sample();
      f(s);
      expect(validateSuperblock(s)).not.toBeNull();
      expect(() => encodeSuperblock(s)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    }
  });

  it('superblockToText names the fields', () => {
    const t = superblockToText(sample());
    for (const w of ['uuid', 'node size', 'journal', 'alloc', 'extents', 'blacklist', '10..17', 'root bucket 3']) expect(t).toContain(w);
  });
});

describe('readSuperblock() / writeSuperblock()', () => {
  it('round-trips through a device and bumps seq on each write', async () => {
    const dev = new TestDevice(DEV_BYTES);
    const sb = sample();
    await writeSuperblock(dev, sb);
    expect(sb.seq).toBe(1);
    const r = await readSuperblock(dev);
    expect(r).toEqual(sb);
    sb.clean = true;
    await writeSuperblock(dev, sb);
    expect((await readSuperblock(dev)).seq).toBe(2);
    expect((await readSuperblock(dev)).clean).toBe(true);
    expect(dev.buffersOutstanding).toBe(0);
  });

  it('writes copy 0, flushes, then copy 1, flushes', async () => {
    const dev = new TestDevice(DEV_BYTES);
    await writeSuperblock(dev, sample());
    expect(dev.log.filter((o) => o.op !== 'read').map((o) => `${o.op}${o.op === 'write' ? '@' + o.offsetBytes : ''}`)).toEqual([
      `write@${SB_OFFSETS_BYTES[0]}`,
      'flush',
      `write@${SB_OFFSETS_BYTES[1]}`,
      'flush',
    ]);
  });

  it('a corrupt copy falls back to the other, either way', async () => {
    for (const bad of [0, 1]) {
      const dev = new TestDevice(DEV_BYTES);
      const sb = sample();
      await writeSuperblock(dev, sb);
      dev.img[SB_OFFSETS_BYTES[bad] + 200] ^= 0x40;
      const r = await readSuperblock(dev);
      expect(r).toEqual(sb);
    }
  });

  it('takes the newer valid copy (a torn second write leaves the new one in copy 0)', async () => {
    const dev = new TestDevice(DEV_BYTES);
    const sb = sample();
    await writeSuperblock(dev, sb); // seq 1 in both
    const old = dev.img.slice(SB_OFFSETS_BYTES[1], SB_OFFSETS_BYTES[1] + SB_BYTES);
    sb.cleanJournalSeq = 1234;
    await writeSuperblock(dev, sb); // seq 2 in both
    // crash during the copy-1 write: copy 1 still holds seq 1
    dev.img.set(old, SB_OFFSETS_BYTES[1]);
    const r = await readSuperblock(dev);
    expect(r.seq).toBe(2);
    expect(r.cleanJournalSeq).toBe(1234);
    // and the other way round: copy 0 old, copy 1 new
    const dev2 = new TestDevice(DEV_BYTES);
    const sb2 = sample();
    await writeSuperblock(dev2, sb2);
    const old0 = dev2.img.slice(SB_OFFSETS_BYTES[0], SB_OFFSETS_BYTES[0] + SB_BYTES);
    sb2.cleanJournalSeq = 77;
    await writeSuperblock(dev2, sb2);
    dev2.img.set(old0, SB_OFFSETS_BYTES[0]);
    expect((await readSuperblock(dev2)).cleanJournalSeq).toBe(77);
  });

  it('both copies corrupt: ERR_CHECKSUM naming both offsets', async () => {
    const dev = new TestDevice(DEV_BYTES);
    await writeSuperblock(dev, sample());
    dev.img[SB_OFFSETS_BYTES[0] + 64] ^= 1;
    const bytes = new DataView(dev.img.buffer).getUint32(SB_OFFSETS_BYTES[1] + 12, true);
    dev.img[SB_OFFSETS_BYTES[1] + bytes - 1] ^= 1;
    const e = await expectCode(readSuperblock(dev), 'ERR_CHECKSUM');
    expect(e.message).toContain(String(SB_OFFSETS_BYTES[0]));
    expect(e.message).toContain(String(SB_OFFSETS_BYTES[1]));
  });

  it('zeros: ERR_BAD_MAGIC', async () => {
    const e = await expectCode(readSuperblock(new TestDevice(DEV_BYTES)), 'ERR_BAD_MAGIC');
    expect(e.message).toContain('not a sixtree store');
  });

  it('unsupported version: ERR_VERSION', async () => {
    const dev = new TestDevice(DEV_BYTES);
    await writeSuperblock(dev, sample());
    for (const off of SB_OFFSETS_BYTES) {
      new DataView(dev.img.buffer).setUint32(off + 8, 99, true);
      rechecksum(dev.img, off);
    }
    const e = await expectCode(readSuperblock(dev), 'ERR_VERSION');
    expect(e.message).toContain('99');
  });

  it('a newer-version copy that is older than a valid one is ignored', async () => {
    const dev = new TestDevice(DEV_BYTES);
    const sb = sample();
    await writeSuperblock(dev, sb);
    const off = SB_OFFSETS_BYTES[1];
    new DataView(dev.img.buffer).setUint32(off + 8, 99, true);
    new DataView(dev.img.buffer).setUint32(off + 24, 0, true); // seq 0 < 1
    rechecksum(dev.img, off);
    expect((await readSuperblock(dev)).seq).toBe(1);
  });

  it('device smaller than the store: ERR_TOO_SMALL', async () => {
    const dev = new TestDevice(DEV_BYTES);
    await writeSuperblock(dev, sample());
    const small = TestDevice.fromImage(dev.img.slice(0, DEV_BYTES / 2));
    await expectCode(readSuperblock(small), 'ERR_TOO_SMALL');
  });

  it('a checksum-valid copy with an impossible field is not used', async () => {
    const dev = new TestDevice(DEV_BYTES);
    const sb = sample();
    await writeSuperblock(dev, sb);
    const off = SB_OFFSETS_BYTES[0];
    new DataView(dev.img.buffer).setUint32(off + 52, 3000, true); // nodeBytes
    new DataView(dev.img.buffer).setUint32(off + 24, 5, true); // and claims to be newer
    rechecksum(dev.img, off);
    expect(await readSuperblock(dev)).toEqual(sb);
  });
});
