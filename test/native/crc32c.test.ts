// SPDX-License-Identifier: GPL-2.0-only
/*
 * crc32c: RFC 3720 vectors, random buffers against a bitwise JS reference,
 * chained seeds; over both backends, the exported crc32c, and the table
 * fallback (forced in a child process, as on a CPU without SSE4.2).
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { addonPath, crc32c as nativeCrc32c, loadBackend } from '../../src/native/index.js';
import { crc32c as utilCrc32c } from '../../src/util/crc32c.js';

/** Bitwise CRC-32C, the definition itself (reflected polynomial 0x82F63B78). */
function crc32cRef(data: Uint8Array, seed = 0): number {
  let crc = ~seed >>> 0;
  for (const byte of data) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return ~crc >>> 0;
}

const VECTORS: [string, Uint8Array, number][] = [
  ['32 bytes of zeros', new Uint8Array(32), 0x8a9136aa],
  ['32 bytes of 0xFF', new Uint8Array(32).fill(0xff), 0x62a8ab43],
  ['0..31 ascending', Uint8Array.from({ length: 32 }, (_, i) => i), 0x46dd794e],
  ['31..0 descending', Uint8Array.from({ length: 32 }, (_, i) => 31 - i), 0x113fdb5c],
  ['"123456789"', new TextEncoder().encode('123456789'), 0xe3069283],
  ['empty', new Uint8Array(0), 0],
];

function randomBytes(seed: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

const IMPLS: [string, (d: Uint8Array, seed?: number, start?: number, end?: number) => number][] = [
  ['napi backend', (d, s, a, b) => loadBackend('napi').crc32c(d, s, a, b)],
  ['koffi backend', (d, s, a, b) => loadBackend('koffi').crc32c(d, s, a, b)],
  ['src/native crc32c', nativeCrc32c],
  ['src/util/crc32c', utilCrc32c],
];

describe.each(IMPLS)('crc32c (%s)', (_name, crc) => {
  it.each(VECTORS)('matches RFC 3720: %s', (_what, data, want) => {
    expect(crc(data)).toBe(want);
    expect(crc32cRef(data)).toBe(want);
  });

  it('matches the bitwise reference on random buffers of every length and alignment', () => {
    const big = randomBytes(12345, 70_000);
    for (let len = 0; len < 300; len++) {
      for (const start of [0, 1, 3, 7]) {
        const d = big.subarray(start, start + len);
        expect(crc(d), `len ${len} start ${start}`).toBe(crc32cRef(d));
      }
    }
    /* around the three-lane strides (3 x 256, 3 x 1024, 3 x 4096 bytes) and a node */
    for (const len of [767, 768, 769, 1000, 3071, 3072, 3080, 4096, 4097, 12_287, 12_288, 12_296, 15_360 + 776, 16_384, 65_536, 69_999]) {
      const d = big.subarray(1, 1 + len);
      expect(crc(d), `len ${len}`).toBe(crc32cRef(d));
    }
  });

  it('chains through the seed', () => {
    const data = randomBytes(99, 10_000);
    const whole = crc(data);
    for (const cut of [0, 1, 8, 511, 4096, 9999, 10_000]) {
      const a = data.subarray(0, cut);
      const b = data.subarray(cut);
      expect(crc(b, crc(a)), `cut ${cut}`).toBe(whole);
    }
    // Many small pieces.
    let acc = 0;
    for (let i = 0; i < data.length; i += 37) acc = crc(data.subarray(i, i + 37), acc);
    expect(acc).toBe(whole);
    expect(crc(new Uint8Array(0), 0xdeadbeef)).toBe(0xdeadbeef);
    expect(crc(data, 0x12345678)).toBe(crc32cRef(data, 0x12345678));
  });

  it('checksums a range [start, end) as the subarray would', () => {
    const big = randomBytes(777, 20_000);
    const view = big.subarray(5, 19_000);
    for (const [a, b] of [[0, 0], [0, 1], [3, 3], [0, 48], [128, 176], [7, 4103], [100, 12_389], [0, view.length], [view.length, view.length]] as const) {
      expect(crc(view, 0, a, b), `[${a}, ${b})`).toBe(crc32cRef(view.subarray(a, b)));
      expect(crc(view, 0xabc, a, b), `[${a}, ${b}) seeded`).toBe(crc32cRef(view.subarray(a, b), 0xabc));
    }
    expect(crc(view, 0, 17)).toBe(crc32cRef(view.subarray(17)));
    expect(crc(view, 0, undefined, 40)).toBe(crc32cRef(view.subarray(0, 40)));
  });

  it('rejects a range outside the data or backwards', () => {
    const d = new Uint8Array(64);
    expect(() => crc(d, 0, 0, 65)).toThrow(/end/);
    expect(() => crc(d, 0, 10, 5)).toThrow(/start/);
    expect(() => crc(d, 0, -1, 5)).toThrow(/start/);
    expect(() => crc(d, 0, 1.5, 5)).toThrow(/start/);
  });

  it('rejects non-Uint8Array data and bad seeds', () => {
    expect(() => crc('abc' as never)).toThrow(/Uint8Array/);
    expect(() => crc(new Uint8Array(4), -1)).toThrow(/seed/);
    expect(() => crc(new Uint8Array(4), 2 ** 32)).toThrow(/seed/);
    expect(() => crc(new Uint16Array(4) as never)).toThrow(/Uint8Array/);
    expect(() => crc(new DataView(new ArrayBuffer(4)) as never)).toThrow(/Uint8Array/);
    expect(() => crc(new Uint8Array(4), '1' as never)).toThrow(/seed/);
    expect(() => crc(new Uint8Array(4), 0, null as never, 2)).toThrow(/start/);
    expect(() => crc(new Uint8Array(4), 0, 0, '2' as never)).toThrow(/end/);
    // undefined is the default, as if absent
    expect(crc(new Uint8Array([1, 2, 3]), undefined, undefined, undefined)).toBe(crc32cRef(new Uint8Array([1, 2, 3])));
  });
});

describe('crc32c implementations', () => {
  it('uses SSE4.2 when the CPU has it', async () => {
    const { readFileSync } = await import('node:fs');
    const has = /\bsse4_2\b/.test(readFileSync('/proc/cpuinfo', 'utf8'));
    expect(loadBackend('napi').crc32cImpl).toBe(has ? 'sse4.2' : 'table');
    expect(loadBackend('koffi').crc32cImpl).toBe(loadBackend('napi').crc32cImpl);
  });

  it('the table fallback gives the same results (child process with SIXTREE_CRC32C_TABLE=1)', () => {
    const script = `
      const a = require(${JSON.stringify(addonPath())});
      const out = { impl: a.crc32cImpl, v: [] };
      let x = 7;
      for (const len of [0, 1, 7, 8, 9, 31, 32, 33, 100, 4096, 65537]) {
        const d = new Uint8Array(len);
        for (let i = 0; i < len; i++) { x = (x * 1103515245 + 12345) >>> 0; d[i] = x >>> 24; }
        out.v.push([Buffer.from(d).toString('base64'), a.crc32c(d), a.crc32c(d.subarray(len > 3 ? 3 : 0), 0xabcdef)]);
      }
      out.v.push(['', a.crc32c(Buffer.from('123456789')), 0]);
      console.log(JSON.stringify(out));`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, SIXTREE_CRC32C_TABLE: '1' } });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { impl: string; v: [string, number, number][] };
    expect(out.impl).toBe('table');
    const last = out.v.pop()!;
    expect(last[1]).toBe(0xe3069283);
    for (const [b64, whole, tail] of out.v) {
      const d = new Uint8Array(Buffer.from(b64, 'base64'));
      expect(whole).toBe(crc32cRef(d));
      expect(whole).toBe(nativeCrc32c(d));
      expect(tail).toBe(crc32cRef(d.subarray(d.length > 3 ? 3 : 0), 0xabcdef));
    }
  });
});
