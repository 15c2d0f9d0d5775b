// SPDX-License-Identifier: GPL-2.0-only
/*
 * extent-map: a file's block map in an extents btree, the way a file system
 * keeps one (bcachefs's extents btree).
 *
 * File inode 42, counted in file blocks. An extent maps file blocks
 * [start, end) to device blocks; its value is the device block where the
 * extent as originally written begins (a u64). A later write over part of an
 * extent trims or splits the old one; each surviving piece keeps the value
 * and gets a valueOffset, how far into the original extent the piece starts.
 * So file block b of a piece lives at device block
 *     value + valueOffset + (b - start).
 * Extents are keyed by their end position (entry.pos); entry.start is
 * entry.pos - entry.size.
 *
 * Steps (the map is printed after each):
 *   1. write [0, 64)   -> device 1000     one extent
 *   2. write [64, 96)  -> device 5000
 *   3. write [20, 40)  -> device 7000     splits extent 1: [0,20) and [40,64) at valueOffset 40
 *   4. write [90, 100) -> device 9000     trims extent 2 to [64, 90)
 *   5. punch [8, 12)                       delRange: [0,20) becomes [0,8) and [12,20) at valueOffset 12
 *
 * Run:  node dist/examples/extent-map.js [store-path]
 *       (store-path: a new file; none: a temporary store, removed at the end)
 * In your own project, import from 'sixtree' instead of '../src/index.js'.
 */

import { mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { Store, pos, type Entry, type Hole } from '../src/index.js';

const BTREE = 'blockmap';
const FILE_INODE = 42;

export interface MapRow {
  /** File blocks [start, end). */
  start: bigint;
  end: bigint;
  hole: boolean;
  /** Extents: the value (device block of the original extent) and how far into it this piece starts. */
  value?: bigint;
  valueOffset?: bigint;
  /** Extents: the device block of file block `start`. */
  device?: bigint;
}

function u64(n: number | bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
  return b;
}

function readU64(b: Uint8Array): bigint {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(0, true);
}

/** Write file blocks [start, start + count) at device block `device`. */
async function writeBlocks(store: Store, start: number, count: number, device: number): Promise<void> {
  await store.transact((tx) => tx.putExtent(BTREE, pos(FILE_INODE, start), count, u64(device)));
}

/** The map of file blocks [0, fileBlocks), holes included, read with a slots iterator in one transaction. */
export async function blockMap(store: Store, fileBlocks: bigint): Promise<MapRow[]> {
  return store.transact(async (tx) => {
    // built inside the callback: a restart reruns it from the start
    const rows: MapRow[] = [];
    const it = tx.iter(BTREE, pos(FILE_INODE, 0), { slots: true });
    for (let s: Entry | Hole | null = await it.peekSlot(); s; s = await it.nextSlot()) {
      const start = s.start!.offset;
      if (s.pos.inode !== BigInt(FILE_INODE) || start >= fileBlocks) break;
      const end = s.pos.offset < fileBlocks ? s.pos.offset : fileBlocks;
      if ('hole' in s) rows.push({ start, end, hole: true });
      else {
        const value = readU64(s.value);
        rows.push({ start, end, hole: false, value, valueOffset: s.valueOffset!, device: value + s.valueOffset! });
      }
    }
    return rows;
  });
}

export function mapToText(rows: MapRow[]): string {
  const range = (a: bigint, b: bigint) => `[${a}, ${b})`.padEnd(11);
  return rows
    .map((r) =>
      r.hole
        ? `  file ${range(r.start, r.end)} hole\n`
        : `  file ${range(r.start, r.end)} -> device ${range(r.device!, r.device! + r.end - r.start)} value ${r.value}, valueOffset ${r.valueOffset}\n`,
    )
    .join('');
}

/** Run the steps on a store at `path` (default: a temporary one); returns the final map. */
export async function main(opts: { path?: string; log?: (text: string) => void } = {}): Promise<MapRow[]> {
  const log = opts.log ?? ((t: string) => process.stdout.write(t));
  const tmpDir = opts.path === undefined ? mkdtempSync(join(tmpdir(), 'sixtree-extent-map-')) : null;
  const path = opts.path ?? join(tmpDir!, 'extents.img');
  try {
    await Store.format(path, { size: 32 * 1024 * 1024, nodeSize: 16 * 1024, btrees: [{ name: BTREE, extents: true }] });
    const store = await Store.open(path);
    try {
      const show = async (what: string, fileBlocks: bigint) => {
        log(`${what}\n${mapToText(await blockMap(store, fileBlocks))}`);
      };
      await writeBlocks(store, 0, 64, 1000);
      await show('1. write file blocks [0, 64) at device 1000', 64n);
      await writeBlocks(store, 64, 32, 5000);
      await show('2. write [64, 96) at device 5000', 96n);
      await writeBlocks(store, 20, 20, 7000);
      await show('3. overwrite [20, 40) at device 7000: the first extent is split', 96n);
      await writeBlocks(store, 90, 10, 9000);
      await show('4. write [90, 100) at device 9000: the second extent is trimmed', 100n);
      await store.transact((tx) => tx.delRange(BTREE, pos(FILE_INODE, 8), pos(FILE_INODE, 12)));
      await show('5. punch a hole at [8, 12)', 100n);

      log('the raw entries (keyed by their end):\n');
      for await (const e of store.range(BTREE, { start: pos(FILE_INODE, 0), end: pos(FILE_INODE + 1, 0) })) {
        log(`  pos ${e.pos.offset}: start ${e.start!.offset} size ${e.size} value ${readU64(e.value)} valueOffset ${e.valueOffset}\n`);
      }
      return await blockMap(store, 100n);
    } finally {
      await store.close();
    }
  } finally {
    if (tmpDir) rmSync(tmpDir, { recursive: true, force: true });
  }
}

/** Run as a program (node dist/examples/...), not imported. */
function isMainModule(): boolean {
  try {
    return !!process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href;
  } catch {
    return false;
  }
}

if (isMainModule()) {
  const path = process.argv[2];
  await main(path ? { path } : {});
}
