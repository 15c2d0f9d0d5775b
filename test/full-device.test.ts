// SPDX-License-Identifier: GPL-2.0-only
/*
 * A full device (README, "Standards": a full device gets a SixtreeError,
 * nothing committed is lost, the process does not crash), through the public
 * API on small file-backed stores:
 *   - writes fill every node bucket, then fail with ERR_NO_SPACE; every
 *     acknowledged write reads back, a failed commit left nothing;
 *   - on the full store, deleting works (deletions, their leaf rewrites and
 *     the merges after them may use the buckets held back from growth), and
 *     what it frees takes new writes;
 *   - all of it survives close and reopen; fsck stays clean;
 *   - the same with several writers hitting the full store at once;
 *   - a process killed (SIGKILL) while its writes fail for want of space:
 *     the store reopens (journal replay may take the buckets held back)
 *     with every acknowledged write, four kills over (a child program,
 *     test/helpers/full-child.ts, compiled: the suite runs tsc first).
 */

import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { SixtreeError, Store, pos } from '../src/index.js';
import { prng, tmpStore, type TmpStore } from './helpers/store.js';

const stores: TmpStore[] = [];
afterEach(async () => {
  while (stores.length) await stores.pop()!.cleanup();
});

/** 1.5 MiB with a 1 MiB journal: about 120 buckets of 4 KiB nodes. */
async function smallStore(): Promise<TmpStore> {
  const t = await tmpStore({ btrees: [{ name: 'kv' }], sizeBytes: 1536 << 10, nodeSize: 4096, blockSize: 512, journalSize: 1 << 20, cacheSize: 256 << 10 });
  stores.push(t);
  return t;
}

function valueFor(key: number, gen: number, rnd: () => number): Uint8Array {
  const v = new Uint8Array(8 + Math.floor(rnd() * 200));
  const dv = new DataView(v.buffer);
  dv.setUint32(0, key);
  dv.setUint32(4, gen);
  return v;
}

/** Random puts (1-8 keys a commit) from `writers` concurrent writers until `fullCommits` commits failed with ERR_NO_SPACE. */
async function fill(store: Store, model: Map<number, Uint8Array>, rnd: () => number, writers: number, fullCommits: number): Promise<{ acked: number; codes: Map<string, number> }> {
  let acked = 0;
  let full = 0;
  let gen = 0;
  const codes = new Map<string, number>();
  const writer = async (): Promise<void> => {
    for (let i = 0; i < 100_000 && full < fullCommits; i++) {
      const keys: Array<[number, Uint8Array]> = [];
      const n = 1 + Math.floor(rnd() * 8);
      for (let j = 0; j < n; j++) {
        const k = Math.floor(rnd() * 1_000_000);
        keys.push([k, valueFor(k, ++gen, rnd)]);
      }
      try {
        await store.transact((tx) => {
          for (const [k, v] of keys) tx.put('kv', pos(1, k), v);
        });
        for (const [k, v] of keys) model.set(k, v);
        acked++;
      } catch (e) {
        if (!(e instanceof SixtreeError)) throw e;
        codes.set(e.code, (codes.get(e.code) ?? 0) + 1);
        if (e.code !== 'ERR_NO_SPACE') throw e;
        full++;
      }
    }
  };
  await Promise.all(Array.from({ length: writers }, writer));
  return { acked, codes };
}

async function expectHolds(store: Store, model: Map<number, Uint8Array>): Promise<void> {
  let wrong = 0;
  for (const [k, v] of model) {
    const got = await store.get('kv', pos(1, k));
    if (!got || Buffer.compare(Buffer.from(got), Buffer.from(v)) !== 0) wrong++;
  }
  expect(wrong).toBe(0);
  let n = 0;
  for await (const e of store.range('kv')) {
    expect(model.has(Number(e.pos.offset))).toBe(true);
    n++;
  }
  expect(n).toBe(model.size);
  expect(await store.fsck()).toEqual([]);
}

describe('full device', () => {
  it('fills to ERR_NO_SPACE losing nothing; deleting on the full store frees room for new writes; all of it survives reopen', { timeout: 60_000 }, async () => {
    const t = await smallStore();
    const rnd = prng(41);
    const model = new Map<number, Uint8Array>();

    const first = await fill(t.store, model, rnd, 1, 20);
    expect(first.codes.get('ERR_NO_SPACE')).toBe(20);
    expect(first.acked).toBeGreaterThan(100);
    // nothing left to growth but the reserve (and less than a split's three buckets above it)
    const nodes = t.store.stats().alloc as { buckets: number; free: number; used: number; reserve: number };
    expect(nodes.reserve).toBeGreaterThan(0);
    expect(nodes.free).toBeLessThan(nodes.reserve + 3);
    await expectHolds(t.store, model);

    // delete every other key on the full store: each delete succeeds
    const keys = [...model.keys()];
    for (let i = 0; i < keys.length; i += 2) {
      await t.store.del('kv', pos(1, keys[i]!));
      model.delete(keys[i]!);
    }
    await t.store.flush();
    await expectHolds(t.store, model);

    // the room the deletions left in the nodes (rewrites reclaim it) taken
    // again, then everything deleted by delRange on the full store: the
    // merges after it give back every bucket but the root's
    const second = await fill(t.store, model, rnd, 1, 10);
    expect(second.acked).toBeGreaterThan(first.acked / 4);
    await expectHolds(t.store, model);
    await t.reopen();
    await expectHolds(t.store, model);
    // (in 25 transactions: the rewrites of one give their old buckets back
    // only when it ends, so one transaction can rewrite only as many leaves
    // as the reserve holds buckets)
    for (let i = 0; i < 25; i++) await t.store.transact((tx) => tx.delRange('kv', pos(1, i * 40_000), pos(1, (i + 1) * 40_000)));
    model.clear();
    await t.store.flush();
    await expectHolds(t.store, model);
    const empty = t.store.stats().alloc as { buckets: number; free: number };
    expect(empty.free).toBe(empty.buckets - 1);
    await t.reopen();
    await expectHolds(t.store, model);
  });

  it('several writers meeting the full store: only ERR_NO_SPACE, nothing acknowledged lost, deletes go through', { timeout: 60_000 }, async () => {
    const t = await smallStore();
    const rnd = prng(42);
    const model = new Map<number, Uint8Array>();
    const r = await fill(t.store, model, rnd, 8, 40);
    expect([...r.codes.keys()]).toEqual(['ERR_NO_SPACE']);
    await expectHolds(t.store, model);
    // concurrent deletes of a third of the keys, on the full store
    const keys = [...model.keys()].filter((_, i) => i % 3 === 0);
    await Promise.all(
      Array.from({ length: 8 }, async (_, w) => {
        for (let i = w; i < keys.length; i += 8) await t.store.del('kv', pos(1, keys[i]!));
      }),
    );
    for (const k of keys) model.delete(k);
    await expectHolds(t.store, model);
    await t.reopen();
    await expectHolds(t.store, model);
  });

  it('a process killed while its writes fail for want of space: the store reopens with every acknowledged write', { timeout: 120_000 }, async () => {
    const t = await smallStore();
    await t.store.close();
    const child = fileURLToPath(new URL('../dist/test/helpers/full-child.js', import.meta.url));
    const model = new Map<number, string>();
    for (let round = 0; round < 4; round++) {
      // run until the child has met ERR_NO_SPACE 20 times (or 30 s), then kill it
      const out = await new Promise<{ full: number; errors: string[] }>((resolve) => {
        const c = spawn(process.execPath, [child, t.path, String(100 + round), '4', round % 2 ? 'mixed' : 'put'], { stdio: ['ignore', 'pipe', 'inherit'] });
        const run = { full: 0, errors: [] as string[] };
        let buf = '';
        const timer = setTimeout(() => c.kill('SIGKILL'), 30_000);
        c.stdout.on('data', (d: Buffer) => {
          buf += d.toString();
          const lines = buf.split('\n');
          buf = lines.pop()!;
          for (const line of lines) {
            const [what, k, hex] = line.split(' ');
            if (what === 'put') model.set(Number(k), hex!);
            else if (what === 'del') model.delete(Number(k));
            else if (what === 'full' && ++run.full === 20) c.kill('SIGKILL');
            else if (what === 'error') run.errors.push(line);
          }
        });
        c.on('close', () => {
          clearTimeout(timer);
          resolve(run);
        });
      });
      expect(out.errors).toEqual([]);
      expect(out.full).toBeGreaterThanOrEqual(20);
      const s = await Store.open(t.path, { cacheSize: 256 << 10 });
      try {
        const wrong: string[] = [];
        for (const [k, hex] of model) {
          const got = await s.get('kv', pos(1, k));
          if (!got || Buffer.from(got).toString('hex') !== hex) wrong.push(`key ${k}: acknowledged ${hex.slice(0, 24)}..., found ${got ? `${Buffer.from(got).toString('hex').slice(0, 24)}...` : 'nothing'}`);
        }
        expect(wrong, `round ${round}: acknowledged writes not found after reopen (${model.size} keys)`).toEqual([]);
        expect(await s.fsck()).toEqual([]);
      } finally {
        await s.close();
      }
    }
    t.store = await Store.open(t.path); // for cleanup()
  });
});
