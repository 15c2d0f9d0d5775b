// SPDX-License-Identifier: GPL-2.0-only
import { describe, expect, it } from 'vitest';
import { crc32c } from '../../src/util/crc32c.js';
import { Prng } from './prng.js';

function bitwise(data: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of data) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

describe('crc32c()', () => {
  it('matches the RFC 3720 vectors', () => {
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i))).toBe(0x46dd794e);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i))).toBe(0x113fdb5c);
    expect(crc32c(new TextEncoder().encode('123456789'))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(0))).toBe(0);
  });

  it('equals a bitwise reference and chains through its seed', () => {
    const r = new Prng(7);
    for (let i = 0; i < 200; i++) {
      const b = r.bytes(r.int(100));
      expect(crc32c(b)).toBe(bitwise(b));
      const cut = r.int(b.length + 1);
      expect(crc32c(b.subarray(cut), crc32c(b.subarray(0, cut)))).toBe(crc32c(b));
    }
  });
});
