// SPDX-License-Identifier: GPL-2.0-only
import { describe, expect, it } from 'vitest';
import { Allocator } from '../src/alloc.js';
import { SixtreeError } from '../src/errors.js';
import { Prng } from './journal/helpers.js';

function noSpace(a: Allocator): SixtreeError {
  try {
    a.alloc();
  } catch (e) {
    expect(e).toBeInstanceOf(SixtreeError);
    return e as SixtreeError;
  }
  throw new Error('alloc() succeeded on a full allocator');
}

describe('Allocator#alloc()', () => {
  it('hands out the lowest free bucket until full, then ERR_NO_SPACE naming device and counts', () => {
    const a = new Allocator(100, { deviceName: '/dev/loop7' });
    for (let i = 0; i < 100; i++) expect(a.alloc()).toBe(i);
    expect(a.nrFree).toBe(0);
    expect(a.nrUsed).toBe(100);
    expect(a.tryAlloc()).toBe(-1);
    const e = noSpace(a);
    expect(e.code).toBe('ERR_NO_SPACE');
    expect(e.message).toContain('/dev/loop7');
    expect(e.message).toContain('100 buckets');
    expect(e.message).toContain('100 used');
    expect(a.counters.noSpace).toBe(1);
    a.free(57);
    a.free(3);
    expect(a.alloc()).toBe(3);
    expect(a.alloc()).toBe(57);
    expect(a.verify()).toBeNull();
  });

  it("holds `reserve` buckets back from 'normal' allocations; 'no_growth' ones take them", () => {
    const a = new Allocator(64, { deviceName: 'dev', reserve: 8 });
    for (let i = 0; i < 56; i++) expect(a.alloc()).toBe(i);
    expect(a.tryAlloc()).toBe(-1);
    const e = noSpace(a);
    expect(e.code).toBe('ERR_NO_SPACE');
    expect(e.message).toContain('the last 8 free are held back');
    for (let i = 56; i < 64; i++) expect(a.alloc('no_growth')).toBe(i);
    expect(a.counters.reserveAllocs).toBe(8);
    expect(a.tryAlloc('no_growth')).toBe(-1);
    a.freeAfter(3, 0);
    expect(a.tryAlloc()).toBe(-1);
    expect(a.tryAlloc('no_growth')).toBe(3);
    expect(() => new Allocator(8, { reserve: 8 })).toThrow(SixtreeError);
    expect(a.verify()).toBeNull();
  });

  it('lowest-first holds across words and summary words (random churn vs a model)', () => {
    const rng = new Prng(7);
    const n = 5000;
    const a = new Allocator(n);
    const used = new Set<number>();
    for (let step = 0; step < 40_000; step++) {
      if (used.size < n && (used.size === 0 || rng.bool(0.55))) {
        let lowest = 0;
        while (used.has(lowest)) lowest++;
        const b = a.alloc();
        expect(b).toBe(lowest);
        used.add(b);
      } else {
        const arr = [...used];
        const b = arr[rng.int(arr.length)]!;
        a.free(b);
        used.delete(b);
      }
    }
    expect(a.nrUsed).toBe(used.size);
    expect(a.verify()).toBeNull();
  });
});

describe('Allocator#freeAfter()', () => {
  it('a bucket becomes reusable only once the journal is durable through the seq', () => {
    const a = new Allocator(4);
    for (let i = 0; i < 4; i++) a.alloc();
    a.freeAfter(1, 10);
    a.freeAfter(2, 12);
    expect(a.nrPending).toBe(2);
    expect(a.stateOf(1)).toBe('pending');
    expect(a.tryAlloc()).toBe(-1);
    expect(a.journalDurable(9)).toBe(0);
    expect(a.tryAlloc()).toBe(-1);
    expect(a.journalDurable(10)).toBe(1);
    expect(a.alloc()).toBe(1);
    expect(a.tryAlloc()).toBe(-1);
    expect(a.journalDurable(15)).toBe(1);
    expect(a.alloc()).toBe(2);
    expect(a.verify()).toBeNull();
  });

  it('frees at once when the seq is already durable', () => {
    const a = new Allocator(2, { journalDurableSeq: 5 });
    a.alloc();
    a.freeAfter(0, 5);
    expect(a.nrPending).toBe(0);
    expect(a.isFree(0)).toBe(true);
  });

  it('never releases early with seqs out of order', () => {
    const a = new Allocator(3);
    a.alloc();
    a.alloc();
    a.freeAfter(0, 20);
    a.freeAfter(1, 10);
    a.journalDurable(15);
    expect(a.isFree(0)).toBe(false); // needs 20
    a.journalDurable(20);
    expect(a.isFree(0)).toBe(true);
    expect(a.isFree(1)).toBe(true);
  });

  it('rejects freeing a bucket that is not used', () => {
    const a = new Allocator(2);
    expect(() => a.free(0)).toThrow(/not used/);
    a.alloc();
    a.freeAfter(0, 3);
    expect(() => a.freeAfter(0, 4)).toThrow(/pending/);
    expect(() => a.free(5)).toThrow(/outside/);
  });
});

describe('Allocator rebuild and checkAgainst()', () => {
  it('markUsed rebuilds the map; alloc skips marked buckets; double marks are reported', () => {
    const a = new Allocator(70);
    const tree = [0, 1, 5, 31, 32, 33, 64, 69];
    for (const b of tree) expect(a.markUsed(b)).toBe(true);
    expect(a.markUsed(5)).toBe(false);
    expect(a.nrUsed).toBe(tree.length);
    const got: number[] = [];
    for (let b = a.tryAlloc(); b >= 0; b = a.tryAlloc()) got.push(b);
    expect(got.length).toBe(70 - tree.length);
    expect(got.filter((b) => tree.includes(b))).toEqual([]);
    expect(got).toEqual([...got].sort((x, y) => x - y));
  });

  it('checkAgainst finds leaked and doubly-owned buckets; pending ones are neither', () => {
    const a = new Allocator(10);
    for (const b of [1, 2, 3, 4]) a.markUsed(b);
    a.freeAfter(4, 9);
    expect(a.checkAgainst([1, 2, 3]).ok).toBe(true);
    const r = a.checkAgainst([1, 2, 7]);
    expect(r.ok).toBe(false);
    expect(r.leaked).toEqual([3]);
    expect(r.referencedNotUsed).toEqual([7]);
    expect(a.toText()).toContain('pending');
  });
});
