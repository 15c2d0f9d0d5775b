// SPDX-License-Identifier: GPL-2.0-only
/*
 * Crash images the crash campaign found (test/journal/fixtures, gzipped) and
 * the check a recovered store of theirs must pass: fsck clean, every kv key
 * readable by get as the scan returned it, the number of kv keys and ext
 * extents the campaign's store held, and a write that reads back.
 */
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { expect } from 'vitest';
import { pos } from '../../src/index.js';
import type { Store } from '../../src/store.js';

export function fixtureImage(name: string): Uint8Array {
  return new Uint8Array(gunzipSync(readFileSync(new URL(`./fixtures/${name}`, import.meta.url))));
}

export async function expectRecovered(store: Store, counts: { kv: number; ext: number }): Promise<void> {
  expect(await store.fsck()).toEqual([]);
  let kv = 0;
  for await (const e of store.range('kv')) {
    expect(await store.get('kv', e.pos)).toEqual(e.value);
    kv++;
  }
  let ext = 0;
  for await (const _ of store.range('ext')) ext++;
  expect({ kv, ext }).toEqual(counts);
  await store.put('kv', pos(7n, 7n), new Uint8Array([7]));
  expect(await store.get('kv', pos(7n, 7n))).toEqual(new Uint8Array([7]));
}
