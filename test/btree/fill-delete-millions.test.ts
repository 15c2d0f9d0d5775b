// SPDX-License-Identifier: GPL-2.0-only
/*
 * Issue 7's scale check in npm test: a million keys filled in ascending and
 * in descending order (4 KiB nodes: depth 4, ~15k leaves), then every key
 * deleted; the tree must shrink back to one leaf with every bucket but the
 * roots' free, fsck clean, and the same after reopening. The work is done by
 * bench/fill-delete.ts (its checks set its exit status; it prints what it
 * found), run here as a child process on a file in the OS temp dir. About a
 * minute on an idle 2-core machine; `npm run bench:fill-delete` runs the same
 * at 2 million keys and more orders.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const SCRIPT = fileURLToPath(new URL('../../dist/bench/fill-delete.js', import.meta.url));
const KEYS = 1_000_000;

function run(args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SCRIPT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
  });
}

describe('fill to a million keys, delete everything', () => {
  it(`ascending and descending fills of ${KEYS.toLocaleString('en-US')} keys shrink back to one leaf, every other bucket free`, async () => {
    const r = await run(['--keys', String(KEYS), '--runs', 'asc,desc', '--node-size', '4096', '--batch', '1000', '--cache-mib', '64']);
    expect(r.code, r.out).toBe(0);
    // the script's own report: both runs reached depth >= 3 full, and ended with one node
    const fills = [...r.out.matchAll(/fill .*: depth (\d+), nodes (\d+)/g)].map((m) => ({ depth: Number(m[1]), nodes: Number(m[2]) }));
    expect(fills.length, r.out).toBe(2);
    for (const f of fills) {
      expect(f.depth).toBeGreaterThanOrEqual(3);
      expect(f.nodes).toBeGreaterThan(10_000);
    }
    const ends = [...r.out.matchAll(/(delete|reopen) .*: depth (\d+), nodes (\d+), buckets in use (\d+) \(pending (\d+)\), empty store (\d+); fsck clean/g)];
    expect(ends.length, r.out).toBe(4);
    for (const m of ends) {
      expect(Number(m[2]), m[0]).toBe(1);
      expect(Number(m[3]), m[0]).toBe(1);
      expect(Number(m[4]), m[0]).toBe(Number(m[6]));
      expect(Number(m[5]), m[0]).toBe(0);
    }
  }, 600_000);
});
