// SPDX-License-Identifier: GPL-2.0-only
/*
 * The store and the command line the narrower cold-lookup tools share
 * (bench/read-sets.ts, bench/cold-phases.ts): the cold rand_lookup jobs'
 * kind of tree (16 KiB nodes, random keys with 8..64-byte values from
 * bench/keys.ts, loaded 1,000 per commit, so most leaves end up written in
 * one to three appends), reopened by each run with a cache of ~600 KiB
 * (about 7% of a 100k-key tree) so that nearly every lookup misses at the
 * leaf. Each run is a fresh process (`--child`), started by the parent.
 */
import { tmpdir } from 'node:os';
import { parseArgs } from 'node:util';
import { Store, type Bpos } from '../src/index.js';
import { KeySet, valueOf } from './keys.js';
import { parseCount } from './options.js';

export const toolNodeSize = 16384;
/** The cache a run reopens the store with, before a node per lookup in flight. */
export const toolCacheBaseBytes = 600 << 10;

export function toolPos(keys: KeySet, i: number): Bpos {
  return { inode: 0n, offset: keys.u64[i]!, snapshot: 0 };
}

/** Format `file` (256 MiB) with one btree 'b' and load `keyCount` random keys, 1,000 per commit. */
export async function loadToolStore(file: string, keyCount: number): Promise<void> {
  const keys = new KeySet('rand', keyCount);
  await Store.format(file, { btrees: [{ name: 'b' }], nodeSize: toolNodeSize, force: true, size: 256 << 20 });
  const s = await Store.open(file, { cacheSize: 64 << 20 });
  for (let start = 0; start < keyCount; start += 1000) {
    await s.transact((tx) => {
      for (let i = start; i < Math.min(keyCount, start + 1000); i++) tx.put('b', toolPos(keys, i), valueOf(i, 0));
    });
  }
  await s.close();
}

export interface ToolArgs {
  /** The tool's own options, as given (strings). */
  own: Record<string, string>;
  seconds: number;
  keyCount: number;
  dir: string;
  /** Set in a child run: what the parent passed to --child. */
  child: string | undefined;
}

/**
 * Parse the shared options (--seconds 4, --keys 100k, --dir tmpdir, --child,
 * --help) and the tool's own string options with their defaults. null: help
 * was printed.
 */
export function toolArgs(usage: string, own: Record<string, string>): ToolArgs | null {
  const ownSpecs = Object.fromEntries(Object.entries(own).map(([k, d]) => [k, { type: 'string' as const, default: d }]));
  const { values } = parseArgs({
    options: {
      ...ownSpecs,
      seconds: { type: 'string', default: '4' },
      keys: { type: 'string', default: '100k' },
      dir: { type: 'string', default: tmpdir() },
      child: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(usage);
    return null;
  }
  const v = values as Record<string, string | boolean | undefined>;
  return {
    own: Object.fromEntries(Object.keys(own).map((k) => [k, String(v[k])])),
    seconds: Number(v.seconds),
    keyCount: parseCount(String(v.keys), '--keys'),
    dir: String(v.dir),
    child: v.child === undefined ? undefined : String(v.child),
  };
}
