// SPDX-License-Identifier: GPL-2.0-only
import { describe, expect, it } from 'vitest';
import {
  BkeyFormat,
  BkeyFormatState,
  FORMAT_BYTES,
  NR_FIELDS,
  formatDecode,
  formatDecodeCounters,
  formatEncode,
  formatFromKeys,
  formatFromRange,
  formatKeyFits,
  formatPackFields,
  PACK_BELOW,
  PACK_EXACT,
  PACK_FLOOR,
  formatPackPos,
  formatPackPosLossy,
  formatPosSummary,
  formatUnpackPos,
  formatUnpackSize,
  formatUnpackVersion,
  packedPosCmp,
  packedPosSummary,
  readBits,
  writeBits,
} from '../../src/format/bkey-format.js';
import { Prng, bigToPos, posOf, posToBig, property, randPos } from './prng.js';

interface K {
  p: Uint32Array;
  size: number;
  version: number;
}

function randKey(r: Prng): K {
  return { p: randPos(r), size: r.bool(0.5) ? 0 : r.bool(0.8) ? r.int(256) : r.u32(), version: r.bool(0.5) ? r.int(1000) : r.int(2 ** 53) };
}

function randKeys(r: Prng, n: number): K[] {
  /* clustered keys, so that formats get narrow fields */
  const base = randKey(r);
  const out: K[] = [];
  for (let i = 0; i < n; i++) {
    if (r.bool(0.3)) out.push(randKey(r));
    else {
      const p = base.p.slice();
      p[3] = (p[3]! + r.int(5000)) >>> 0;
      p[4] = r.bool(0.9) ? p[4]! : r.int(10);
      out.push({ p, size: r.int(100), version: base.version + r.int(100) });
    }
  }
  return out;
}

function pack(f: BkeyFormat, k: K): Uint32Array | null {
  const d = new Uint32Array(f.fieldWords + 1);
  return formatPackFields(f, k.p, 0, k.size, k.version, d, 0) ? d : null;
}

describe('BkeyFormat', () => {
  it('packs and unpacks every key of formatFromKeys exactly', () => {
    property('roundtrip', 300, (r) => {
      const keys = randKeys(r, r.range(1, 40));
      const f = formatFromKeys(keys);
      expect(f.validate()).toBeNull();
      expect(f.fieldWords).toBe(Math.ceil(f.totalBits / 32));
      const out = new Uint32Array(5);
      for (const k of keys) {
        const d = pack(f, k);
        expect(d).not.toBeNull();
        formatUnpackPos(f, d!, 0, out, 0);
        expect(Array.from(out)).toEqual(Array.from(k.p));
        expect(formatUnpackSize(f, d!, 0)).toBe(k.size);
        expect(formatUnpackVersion(f, d!, 0)).toBe(k.version);
      }
    });
  });

  it('rejects keys outside the format without writing', () => {
    property('misfit', 200, (r) => {
      const keys = randKeys(r, r.range(1, 10));
      const f = formatFromKeys(keys);
      const other = randKey(r);
      const fits = formatKeyFits(f, other.p, 0, other.size, other.version);
      const d = new Uint32Array(f.fieldWords + 1).fill(0xdeadbeef);
      expect(formatPackFields(f, other.p, 0, other.size, other.version, d, 0)).toBe(fits);
      if (!fits) expect(Array.from(d).every((x) => x === 0xdeadbeef)).toBe(true);
      if (fits) {
        const out = new Uint32Array(5);
        formatUnpackPos(f, d, 0, out, 0);
        expect(Array.from(out)).toEqual(Array.from(other.p));
      }
      /* an inode below the base never fits */
      const base = (BigInt(f.baseHi[0]!) << 32n) | BigInt(f.baseLo[0]!);
      if (base > 0n) {
        const p = keys[0]!.p.slice();
        p[0] = Number((base - 1n) >> 32n);
        p[1] = Number((base - 1n) & 0xffffffffn);
        expect(formatKeyFits(f, p, 0, keys[0]!.size, keys[0]!.version)).toBe(false);
      }
    });
  });

  it('compares packed positions like unpacked ones', () => {
    property('cmp', 300, (r) => {
      const keys = randKeys(r, r.range(2, 30));
      const f = formatFromKeys(keys);
      const packed = keys.map((k) => pack(f, k)!);
      for (let i = 0; i < 60; i++) {
        const a = r.int(keys.length), b = r.int(keys.length);
        const want = Math.sign(Number(posToBig(keys[a]!.p) - posToBig(keys[b]!.p)));
        expect(packedPosCmp(f, packed[a]!, 0, packed[b]!, 0)).toBe(want);
      }
      /* a search position packed alone compares the same way */
      const s = new Uint32Array(8);
      for (let i = 0; i < 30; i++) {
        const q = r.bool(0.5) ? keys[r.int(keys.length)]!.p : randPos(r);
        if (!formatPackPos(f, q, 0, s, 0)) continue;
        const k = r.int(keys.length);
        const want = Math.sign(Number(posToBig(keys[k]!.p) - posToBig(q)));
        expect(packedPosCmp(f, packed[k]!, 0, s, 0)).toBe(want);
      }
    });
  });

  it('packs search positions lossily: floor below unrepresentable ones', () => {
    property('lossy', 300, (r) => {
      const keys = randKeys(r, r.range(1, 30));
      const f = formatFromKeys(keys);
      const packed = keys.map((k) => pack(f, k)!);
      const sp = new Uint32Array(8);
      const un = new Uint32Array(5);
      for (let i = 0; i < 40; i++) {
        let q: Uint32Array;
        const pick = r.int(4);
        if (pick === 0) q = keys[r.int(keys.length)]!.p;
        else if (pick === 1) q = bigToPos(posToBig(keys[r.int(keys.length)]!.p) + BigInt(r.pick([-1, 1, 2, -2, 1 << 20])));
        else q = randPos(r);
        if (q.some((x) => x > 0xffffffff)) continue;
        const mode = formatPackPosLossy(f, q, 0, sp, 0);
        const exact = formatPackPos(f, q, 0, new Uint32Array(8), 0);
        expect(mode === PACK_EXACT).toBe(exact);
        if (mode !== PACK_BELOW) {
          formatUnpackPos(f, sp, 0, un, 0);
          if (mode === PACK_EXACT) expect(posToBig(un)).toBe(posToBig(q));
          else expect(posToBig(un) < posToBig(q)).toBe(true);
        }
        if (mode === PACK_FLOOR) expect(mode).toBe(PACK_FLOOR);
        keys.forEach((k, j) => {
          const ge = posToBig(k.p) >= posToBig(q);
          const c = packedPosCmp(f, packed[j]!, 0, sp, 0);
          const got = mode === PACK_EXACT ? c >= 0 : mode === PACK_FLOOR ? c > 0 : true;
          expect(got).toBe(ge);
        });
      }
    });
  });

  it('position summaries order positions; exact formats need nothing else', () => {
    const seen = { exact: 0, inexact: 0 };
    property('summary', 300, (r) => {
      const keys = randKeys(r, r.range(2, 30));
      const f = formatFromKeys(keys);
      expect(f.sumExact).toBe(f.posBits <= 53);
      seen[f.sumExact ? 'exact' : 'inexact']++;
      const packed = keys.map((k) => pack(f, k)!);
      const sums = packed.map((d) => packedPosSummary(f, d, 0));
      for (let i = 0; i < 60; i++) {
        const a = r.int(keys.length), b = r.int(keys.length);
        const want = Math.sign(Number(posToBig(keys[a]!.p) - posToBig(keys[b]!.p)));
        const x = sums[a]!, y = sums[b]!;
        expect(x).toBeGreaterThanOrEqual(0);
        expect(Number.isInteger(x) && x < 2 ** 53).toBe(true);
        /* a smaller summary is a smaller position; exact formats: equal summaries are equal positions */
        if (x !== y) expect(Math.sign(x - y)).toBe(want);
        else if (f.sumExact) expect(want).toBe(0);
        else expect(packedPosCmp(f, packed[a]!, 0, packed[b]!, 0)).toBe(want);
      }
      /* searches: straight from the position (exact formats) = the packed position's summary; -1 iff not representable */
      const sp = new Uint32Array(8);
      for (let i = 0; i < 40; i++) {
        const q = r.bool(0.5) ? keys[r.int(keys.length)]!.p : r.bool(0.5) ? bigToPos(posToBig(keys[r.int(keys.length)]!.p) + BigInt(r.pick([-1, 1, 1 << 20]))) : randPos(r);
        if (q.some((x) => x > 0xffffffff)) continue;
        const exact = formatPackPos(f, q, 0, sp, 0);
        if (!f.sumExact) continue;
        const y = formatPosSummary(f, q, 0);
        expect(y >= 0).toBe(exact);
        if (exact) expect(y).toBe(packedPosSummary(f, sp, 0));
      }
    });
    expect(seen.exact).toBeGreaterThan(30);
    expect(seen.inexact).toBeGreaterThan(30);
  });

  it('formatFromRange fits every position of the range', () => {
    property('range', 200, (r) => {
      let a = posToBig(randPos(r)), b = posToBig(randPos(r));
      if (r.bool(0.3)) b = a + BigInt(r.int(100000));
      if (a > b) [a, b] = [b, a];
      if (b >= 1n << 160n) b = (1n << 160n) - 1n;
      const vmin = r.int(2 ** 40);
      const f = formatFromRange(bigToPos(a), bigToPos(b), { sizeMax: 1000, versionMin: vmin });
      expect(f.validate()).toBeNull();
      for (let i = 0; i < 20; i++) {
        const span = b - a;
        const x = a + (span === 0n ? 0n : ((BigInt(r.u32()) << 64n) | (BigInt(r.u32()) << 32n) | BigInt(r.u32())) % (span + 1n));
        const p = bigToPos(x);
        expect(formatKeyFits(f, p, 0, r.int(1001), vmin + r.int(2 ** 32))).toBe(true);
      }
    });
  });

  it('keeps a single inode node key small', () => {
    const f = formatFromRange(posOf(5, 0), posOf(5, 1_000_000), { versionMin: 100 });
    expect(f.bits[0]).toBe(0);
    expect(f.posBits).toBeLessThanOrEqual(52);
    expect(f.fieldWords).toBeLessThanOrEqual(3);
  });

  it('encodes and decodes; decode rejects invalid formats', () => {
    property('codec', 100, (r) => {
      const f = formatFromKeys(randKeys(r, 5));
      const buf = new Uint8Array(FORMAT_BYTES + 8);
      formatEncode(f, buf, 8);
      const g = formatDecode(buf, 8);
      expect(g).toBeInstanceOf(BkeyFormat);
      expect((g as BkeyFormat).equals(f)).toBe(true);
    });
    const buf = new Uint8Array(FORMAT_BYTES);
    formatEncode(formatFromRange(posOf(0, 0), posOf(0, 10)), buf, 0);
    const bad1 = buf.slice();
    bad1[2] = 33; // snapshot 33 bits
    expect(typeof formatDecode(bad1, 0)).toBe('string');
    const bad2 = buf.slice();
    bad2[0] = 64; // inode 64 bits ...
    bad2[8] = 1; // ... with a nonzero base overflows
    expect(typeof formatDecode(bad2, 0)).toBe('string');
    const bad3 = buf.slice();
    bad3[6] = 1; // reserved
    expect(typeof formatDecode(bad3, 0)).toBe('string');
  });

  it('decode cache: the same encoding gives the same (immutable) format object, any other encoding its own; invalid ones are never cached', () => {
    const r = new Prng(314);
    const encs: Uint8Array[] = [];
    const firsts: BkeyFormat[] = [];
    // more formats than the cache has slots: slots are shared and replaced, answers stay right
    for (let i = 0; i < 6000; i++) {
      const buf = new Uint8Array(FORMAT_BYTES);
      formatEncode(formatFromKeys(randKeys(r, 3)), buf, 0);
      encs.push(buf);
      firsts.push(formatDecode(buf, 0) as BkeyFormat);
    }
    const c0 = { ...formatDecodeCounters };
    for (let i = 0; i < encs.length; i++) {
      const g = formatDecode(encs[i]!.slice(), 0) as BkeyFormat;
      expect(g.equals(firsts[i]!)).toBe(true);
      const back = new Uint8Array(FORMAT_BYTES);
      formatEncode(g, back, 0);
      expect(back).toEqual(encs[i]);
    }
    // many came from the cache (a miss replaces its slot's format, so a second pass over more formats than slots hits ~a quarter)
    expect(formatDecodeCounters.hits - c0.hits).toBeGreaterThan(1000);
    expect(formatDecode(encs[5999]!, 0)).toBe(formatDecode(encs[5999]!.slice(), 0));
    // an invalid encoding is rejected every time, also right after its valid neighbour was cached
    const bad = encs[5999]!.slice();
    bad[6] = 1; // reserved byte
    expect(typeof formatDecode(bad, 0)).toBe('string');
    expect(typeof formatDecode(bad, 0)).toBe('string');
  });

  it('reads back what writeBits wrote at any bit position', () => {
    property('bits', 200, (r) => {
      const d = new Uint32Array(4);
      const vals: [number, number, number][] = [];
      let pos = 0;
      while (pos < 96) {
        const n = r.range(0, Math.min(32, 128 - pos));
        const v = n === 0 ? 0 : n === 32 ? r.u32() : r.u32() % 2 ** n;
        writeBits(d, 0, pos, n, v);
        vals.push([pos, n, v]);
        pos += n;
      }
      for (const [p, n, v] of vals) expect(readBits(d, 0, p, n)).toBe(v);
    });
  });

  it('BkeyFormatState pads fields up to a word without overflowing', () => {
    const s = new BkeyFormatState();
    s.addField(0, 0xffffffff, 0xfffffff0);
    s.addField(0, 0xffffffff, 0xffffffff);
    const f = s.done();
    expect(f.validate()).toBeNull();
    expect(f.bits[0]).toBe(4); // cannot widen: base + 2^5 would overflow u64
  });
});
