// SPDX-License-Identifier: GPL-2.0-only
/*
 * Shared pieces of the src/io tests: a seeded PRNG (failures reproduce),
 * fresh temporary directories under os.tmpdir() (ext4 here; never /dev/shm),
 * and "targets": a regular file or a loop device over a file, each opened
 * as a BlockDevice, with a way to shrink it under the open device.
 */
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { isSixtreeError, type SixtreeErrorCode } from '../../src/errors.js';
import { loopAttach, loopDetach, loopSetCapacity, type LoopOpts } from '../helpers/loop.js';

export const IO_BACKENDS = ['napi', 'koffi'] as const;

/** xorshift128+: deterministic random numbers from a seed. */
export class Rng {
  private s0: bigint;
  private s1: bigint;
  constructor(seed: number) {
    this.s0 = BigInt(seed) | 1n;
    this.s1 = 0x9e3779b97f4a7c15n;
    for (let i = 0; i < 8; i++) this.u32();
  }
  u32(): number {
    let x = this.s0;
    const y = this.s1;
    this.s0 = y;
    x ^= (x << 23n) & 0xffffffffffffffffn;
    this.s1 = x ^ y ^ (x >> 17n) ^ (y >> 26n);
    return Number((this.s1 + y) & 0xffffffffn);
  }
  /** Integer in [0, n). */
  below(n: number): number {
    return Math.floor((this.u32() / 0x100000000) * n);
  }
  fill(buf: Uint8Array): Uint8Array {
    const words = Math.floor(buf.length / 4);
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    for (let i = 0; i < words; i++) dv.setUint32(i * 4, this.u32(), true);
    for (let i = words * 4; i < buf.length; i++) buf[i] = this.u32() & 0xff;
    return buf;
  }
}

export function freshDir(prefix = 'sixtree-io-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export type TargetKind = 'file' | 'loop';

export interface Target {
  path: string;
  /** Shrink the device under an open BlockDevice to sizeBytes. */
  shrink(sizeBytes: number): void;
  cleanup(): void;
}

/** A zero-filled file of sizeBytes in dir, seen directly or through a loop device. */
export function makeTarget(kind: TargetKind, dir: string, name: string, sizeBytes: number, loopOpts: LoopOpts = {}): Target {
  const file = join(dir, `${name}.img`);
  writeFileSync(file, new Uint8Array(0));
  truncateSync(file, sizeBytes);
  if (kind === 'file') return { path: file, shrink: (n) => truncateSync(file, n), cleanup: () => rmSync(file, { force: true }) };
  const dev = loopAttach(file, loopOpts);
  return {
    path: dev,
    shrink(n) {
      truncateSync(file, n);
      loopSetCapacity(dev);
    },
    cleanup() {
      loopDetach(dev);
      rmSync(file, { force: true });
    },
  };
}

/** Runs fn and expects a SixtreeError with code; returns it for further checks. */
export async function expectCode(fn: () => unknown, code: SixtreeErrorCode): Promise<Error & { code: string; details: Record<string, unknown> }> {
  let caught: unknown;
  try {
    await fn();
  } catch (e) {
    caught = e;
  }
  if (!isSixtreeError(caught)) throw new Error(`expected SixtreeError ${code}, got ${caught === undefined ? 'no error' : String(caught)}`);
  expect(caught.code, caught.message).toBe(code);
  return caught as never;
}
