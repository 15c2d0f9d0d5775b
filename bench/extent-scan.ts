// SPDX-License-Identifier: GPL-2.0-only
/*
 * What reading past a position costs in an extents btree: the reads that
 * look up to the store's extent size bound past an end or a hole's start
 * (keys sit at their extent's end, so another snapshot's extent can start
 * before a position though its key comes after later ones).
 *
 * One inode, --extents extents of 8 offsets each, every other 8 offsets a
 * hole (a block map with holes), one snapshot; with --big N one extent of N
 * offsets in another inode raises the bound (rounded up to a power of two).
 * Then, each for --ms milliseconds, ms per call:
 *   range-end      store.range over 100 extents in the middle, with an end
 *   range-end-rev  the same, reverse
 *   iter-end       tx.iter with that end, peek/next to null
 *   slots          tx.iter slots walk of 200 slots (100 extents, 100 holes)
 *
 *   npx tsc -p tsconfig.json && node dist/bench/extent-scan.js [--extents 200000]
 *       [--big 0] [--ms 1000] [--path FILE]
 */

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Store, pos, type Entry, type Hole, type Transaction } from '../src/index.js';

const EXTENT = 8n;
const STRIDE = 16n;
const VALUE = new Uint8Array(16).fill(0x5a);
const WINDOW = 100n;

const { values } = parseArgs({
  strict: true,
  options: {
    extents: { type: 'string', default: '200000' },
    big: { type: 'string', default: '0' },
    ms: { type: 'string', default: '1000' },
    path: { type: 'string' },
  },
});

function intArg(name: string, v: string | undefined, min: number, max: number): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new Error(`--${name}: ${v}; expected an integer in [${min}, ${max}]`);
  return n;
}

const extentsNr = intArg('extents', values.extents, 1000, 10_000_000);
const big = intArg('big', values.big, 0, 0xffffffff);
const ms = intArg('ms', values.ms, 10, 600_000);

async function timed(name: string, once: () => Promise<number>): Promise<void> {
  const expect = await once();
  let calls = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    const got = await once();
    if (got !== expect) throw new Error(`${name}: ${got} items, the first call had ${expect}`);
    calls++;
  }
  const per = (performance.now() - t0) / calls;
  console.log(`${name.padEnd(14)} ${per.toFixed(3).padStart(10)} ms per call  (${expect} items, ${calls} calls)`);
}

async function main(): Promise<void> {
  const dir = values.path ? null : mkdtempSync(join(tmpdir(), 'sixtree-extent-scan-'));
  const path = values.path ?? join(dir!, 'store.img');
  try {
    await Store.format(path, { btrees: [{ name: 'ext', extents: true }], size: 1024 * 1024 * 1024, force: true });
    const s = await Store.open(path, { cacheSize: 128 << 20 });
    try {
      for (let i = 0; i < extentsNr; i += 1000) {
        await s.transact((tx: Transaction) => {
          for (let j = i; j < Math.min(extentsNr, i + 1000); j++) tx.putExtent('ext', pos(1, BigInt(j) * STRIDE), Number(EXTENT), VALUE);
        });
      }
      if (big > 0) await s.transact((tx: Transaction) => tx.putExtent('ext', pos(2, 0), big, VALUE));
      await s.flush();
      console.log(`${extentsNr} extents of ${EXTENT} (holes of ${STRIDE - EXTENT} between), extent size bound ${s.stats().transactions.extentSizeBound}`);
      const mid = (BigInt(extentsNr) / 2n) * STRIDE;
      const start = pos(1, mid);
      const end = pos(1, mid + WINDOW * STRIDE);
      const count = async (it: AsyncIterable<unknown>): Promise<number> => {
        let n = 0;
        for await (const _ of it) n++;
        return n;
      };
      await timed('range-end', () => count(s.range('ext', { start, end })));
      await timed('range-end-rev', () => count(s.range('ext', { start, end, reverse: true })));
      await timed('iter-end', () =>
        s.transact(async (tx: Transaction) => {
          const it = tx.iter('ext', start, { end });
          let n = 0;
          for (let e = await it.peek(); e; e = await it.next()) n++;
          return n;
        }),
      );
      await timed('slots', () =>
        s.transact(async (tx: Transaction) => {
          const it = tx.iter('ext', start, { slots: true });
          let n = 0;
          for (let sl: Entry | Hole | null = await it.peekSlot(); sl && n < 2 * Number(WINDOW); sl = await it.nextSlot()) n++;
          return n;
        }),
      );
    } finally {
      await s.close();
    }
  } finally {
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}

await main();
