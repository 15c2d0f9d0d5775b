// SPDX-License-Identifier: GPL-2.0-only
/*
 * What a write workload costs the store in writes, counted rather than timed
 * (counts do not move with the VM's noise, so two commits compare in one run
 * each): node writes, pointer updates (how far nodes are written, by level),
 * interior updates, journal entries and bytes written.
 *
 * A store on an in-memory device (MemDevice: same engine, no device timing),
 * --keys random keys loaded in commits of 1,000 and flushed, then --puts
 * single-key puts with --qd in flight and a flush; one JSON line of the
 * differences of stats() over the puts. Keys and order come from a fixed
 * seed, so a commit gives the same counts run after run.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/write-counts.js [--node-size 4096]
 *       [--keys 100000] [--puts 20000] [--qd 64]
 */

import { parseArgs } from 'node:util';
import { MemDevice } from '../src/io/mem-device.js';
import { Store, type StoreStats } from '../src/index.js';

const { values } = parseArgs({
  strict: true,
  options: {
    'node-size': { type: 'string', default: '4096' },
    keys: { type: 'string', default: '100000' },
    puts: { type: 'string', default: '20000' },
    qd: { type: 'string', default: '64' },
  },
});

function intArg(name: string, v: string | undefined, min: number, max: number): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new Error(`--${name}: ${v}; expected an integer in [${min}, ${max}]`);
  return n;
}

const nodeSize = intArg('node-size', values['node-size'], 4096, 1 << 20);
const keys = intArg('keys', values.keys, 1000, 10_000_000);
const puts = intArg('puts', values.puts, 1, 10_000_000);
const qd = intArg('qd', values.qd, 1, 4096);

const VALUE = new Uint8Array(40);
let x = 12345;
const nextOffset = (): number => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) % 10_000_000);

const mem = MemDevice.create(Math.max(512 << 20, keys * 64 * 8));
await Store.formatDevice(mem, { btrees: [{ name: 'kv' }], nodeSize, blockSize: 512, journalSize: 32 << 20 });
const store = await Store.openDevice(mem, { cacheSize: 64 << 20 });
for (let b = 0; b < keys; b += 1000) {
  await store.transact((tx) => {
    for (let i = b; i < Math.min(keys, b + 1000); i++) tx.put('kv', { inode: 1, offset: nextOffset() }, VALUE);
  });
}
await store.flush();

const before = store.stats();
const bytesBefore = mem.stats.bytesWritten;
let inFlight: Promise<void>[] = [];
for (let i = 0; i < puts; i++) {
  inFlight.push(store.put('kv', { inode: 1, offset: nextOffset() }, VALUE));
  if (inFlight.length >= qd) {
    await Promise.all(inFlight);
    inFlight = [];
  }
}
await Promise.all(inFlight);
await store.flush();
const after = store.stats();

const d = (f: (s: StoreStats) => number): number => f(after) - f(before);
console.log(
  JSON.stringify({
    nodeSize,
    keys,
    puts,
    qd,
    rootLevel: after.btrees['kv']!.rootLevel,
    nodeWrites: d((s) => s.writeback.nodeWrites),
    ptrUpdates: d((s) => s.writeback.ptrUpdates),
    ptrUpdatesRoot: d((s) => s.writeback.ptrUpdatesRoot),
    // absent before every level recorded lengths (829205f and earlier)
    ptrUpdatesInterior: d((s) => s.writeback.ptrUpdatesInterior ?? 0),
    splits: d((s) => s.interior.splits),
    rewrites: d((s) => s.interior.rewrites),
    journalEntries: d((s) => s.journal.entriesWritten),
    bytesWritten: mem.stats.bytesWritten - bytesBefore,
  }),
);
await store.close();
