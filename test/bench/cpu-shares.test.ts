// SPDX-License-Identifier: GPL-2.0-only
/*
 * The bench harness's "busy machine" accounting (bench/report.ts cpuShares):
 * other processes, kernel threads and interrupts, hypervisor steal, each a
 * share of the machine's CPU time while a job ran.
 */
import { describe, expect, it } from 'vitest';
import { busyNote, cpuShares, cpuSnapshot, type CpuSnapshot } from '../../bench/report.js';

function snap(s: Partial<CpuSnapshot>): CpuSnapshot {
  return { taskTicks: 0, irqTicks: 0, stealTicks: 0, totalTicks: 0, ownTicks: 0, kthreadTicks: new Map(), ...s };
}

describe('cpuShares', () => {
  it('counts as others only task time that is neither ours nor a kernel thread', () => {
    const a = snap({ taskTicks: 100, irqTicks: 10, stealTicks: 5, totalTicks: 1000, ownTicks: 40, kthreadTicks: new Map([[10, 7], [11, 3], [12, 50]]) });
    /* +200 ticks in all: task +120 (own +60, kthreads +30: pid 10 +5, pid 11 +20, new pid 13 +5; pid 12 gone), irq +10, steal +20 */
    const b = snap({ taskTicks: 220, irqTicks: 20, stealTicks: 25, totalTicks: 1200, ownTicks: 100, kthreadTicks: new Map([[10, 12], [11, 23], [13, 5]]) });
    const s = cpuShares(a, b)!;
    expect(s.others).toBeCloseTo(30 / 200);
    expect(s.kernel).toBeCloseTo(40 / 200);
    expect(s.steal).toBeCloseTo(20 / 200);
  });

  it('is undefined without both snapshots or without time passing, and never negative', () => {
    const a = snap({ totalTicks: 100 });
    expect(cpuShares(undefined, a)).toBeUndefined();
    expect(cpuShares(a, a)).toBeUndefined();
    const s = cpuShares(a, snap({ totalTicks: 200, taskTicks: 10, ownTicks: 30 }))!;
    expect(s.others).toBe(0);
  });

  it('reads this machine: ours is not others', () => {
    const a = cpuSnapshot()!;
    expect(a).toBeDefined();
    expect(a.kthreadTicks.size).toBeGreaterThan(0);
    const t0 = performance.now();
    let x = 0;
    while (performance.now() - t0 < 300) x += Math.sqrt(x + 1);
    const b = cpuSnapshot()!;
    expect(b.ownTicks - a.ownTicks).toBeGreaterThan(0);
    const s = cpuShares(a, b)!;
    for (const v of [s.others, s.kernel, s.steal]) expect(v).toBeGreaterThanOrEqual(0);
    expect(s.others + s.kernel + s.steal).toBeLessThanOrEqual(1);
  });
});

describe('busyNote', () => {
  it('names what took the CPU, above 10% only', () => {
    expect(busyNote({ otherCpuShare: 0.05, stealCpuShare: 0.02 })).toBeUndefined();
    expect(busyNote({})).toBeUndefined();
    expect(busyNote({ otherCpuShare: 0.16 })).toBe('busy machine: others used 16% CPU');
    expect(busyNote({ otherCpuShare: 0.02, stealCpuShare: 0.31 })).toBe('busy machine: hypervisor steal 31%');
    expect(busyNote({ otherCpuShare: 0.2, stealCpuShare: 0.12 })).toBe('busy machine: others used 20% CPU, hypervisor steal 12%');
  });
});
