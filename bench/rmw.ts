// SPDX-License-Identifier: GPL-2.0-only
/*
 * Read-modify-write contention: ACTORS concurrent actors each run ROUNDS
 * transactions that read a counter, yield, and write it back incremented;
 * COUNTERS counters in one leaf, so every commit contends with the others.
 * Run with plain reads (tx.get) and with intent reads (tx.get(..., { intent:
 * true })); prints commits/s and restarts per commit, and checks the sums.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/rmw.js [--actors 64] [--rounds 100] [--counters 8]
 *
 * A plain read takes a read lock; two transactions that both read the leaf
 * and then commit wait for each other's read lock (a deadlock the youngest
 * breaks by restarting). An intent read queues the second transaction at its
 * read instead. A transaction that restarted once reads with intent anyway.
 */

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Store, pos } from '../src/index.js';

function enc(n: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, n, true);
  return b;
}

function dec(b: Uint8Array): bigint {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(0, true);
}

async function run(intent: boolean, actors: number, rounds: number, counters: number): Promise<string> {
  const dir = mkdtempSync(path.join(tmpdir(), 'sixtree-rmw-'));
  try {
    const file = path.join(dir, 'store.img');
    await Store.format(file, { btrees: [{ name: 'kv' }], size: 64 << 20, nodeSize: 4096, blockSize: 512 });
    const s = await Store.open(file);
    await s.transact((tx) => {
      for (let c = 0; c < counters; c++) tx.put('kv', pos(1, c), enc(0n));
    });
    const before = s.stats().transactions;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: actors }, async (_, a) => {
        for (let r = 0; r < rounds; r++) {
          const c = (a + r) % counters;
          await s.transact(async (tx) => {
            const v = dec((await tx.get('kv', pos(1, c), { intent }))!);
            await Promise.resolve();
            tx.put('kv', pos(1, c), enc(v + 1n));
          });
        }
      }),
    );
    const ms = performance.now() - t0;
    let sum = 0n;
    for (let c = 0; c < counters; c++) sum += dec((await s.get('kv', pos(1, c)))!);
    const after = s.stats().transactions;
    await s.close();
    const n = actors * rounds;
    if (sum !== BigInt(n)) throw new Error(`lost updates: sum ${sum}, expected ${n}`);
    const restarts = after.restarts - before.restarts;
    return `${intent ? 'intent reads' : 'plain reads '}  ${Math.round((n / ms) * 1000)
      .toString()
      .padStart(6)} commits/s  ${(restarts / n).toFixed(2).padStart(6)} restarts/commit  sum ok (${n})`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const { values } = parseArgs({
  options: {
    actors: { type: 'string', default: '64' },
    rounds: { type: 'string', default: '100' },
    counters: { type: 'string', default: '8' },
  },
});
const actors = Number(values.actors);
const rounds = Number(values.rounds);
const counters = Number(values.counters);
console.log(`read-modify-write: ${actors} actors x ${rounds} increments of ${counters} counters in one leaf (4 KiB nodes, file-backed store)`);
for (const intent of [false, true]) console.log(await run(intent, actors, rounds, counters));
