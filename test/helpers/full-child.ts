// SPDX-License-Identifier: GPL-2.0-only
/*
 * Child program of the full-device kill test (test/full-device.test.ts), run
 * from its compiled form:
 *
 *   node dist/test/helpers/full-child.js <store path> <seed> <concurrency> <put|mixed>
 *
 * Opens the store (recovery when the last child was killed), prints "ready",
 * then commits random transactions of 1-8 keys of btree kv at (1, k) until it
 * is killed: puts, or (mixed) also transactions of deletions. Each of the
 * concurrent workers has keys of its own (k % concurrency). After each
 * commit it prints one line per key, "put <k> <value hex>" or "del <k>" (a
 * pipe: the lines reach the parent even if the kill follows at once); after
 * each commit refused with ERR_NO_SPACE, "full". Anything else: "error
 * <message>" and exit code 3.
 */

import { SixtreeError, Store, pos } from '../../src/index.js';
import { Prng } from '../../bench/prng.js';

async function main(): Promise<void> {
  const [path, seedArg, concArg, mode] = process.argv.slice(2);
  const seed = Number(seedArg);
  const concurrency = Number(concArg);
  if (!path || !Number.isSafeInteger(seed) || !Number.isSafeInteger(concurrency) || concurrency < 1 || (mode !== 'put' && mode !== 'mixed')) {
    process.stdout.write('error usage: full-child.js <store path> <seed> <concurrency> <put|mixed>\n');
    process.exit(2);
  }
  const rnd = new Prng(seed);
  const store = await Store.open(path, { cacheSize: 256 << 10 });
  process.stdout.write('ready\n');
  // worker w writes only keys k with k % concurrency === w: the order of its lines is the
  // order of its commits, so the parent's model is exact (two workers' transactions on one
  // key, acknowledged together, would print in either order)
  const worker = async (w: number): Promise<never> => {
    for (;;) {
      const del = mode === 'mixed' && rnd.u32() % 4 === 0;
      const keys: Array<[number, Uint8Array]> = [];
      const n = 1 + (rnd.u32() % 8);
      for (let j = 0; j < n; j++) {
        const k = (rnd.u32() % Math.floor(1_000_000 / concurrency)) * concurrency + w;
        const v = new Uint8Array(8 + (rnd.u32() % 200));
        new DataView(v.buffer).setUint32(0, k);
        new DataView(v.buffer).setUint32(4, rnd.u32());
        keys.push([k, v]);
      }
      try {
        await store.transact((tx) => {
          for (const [k, v] of keys) {
            if (del) tx.del('kv', pos(1, k));
            else tx.put('kv', pos(1, k), v);
          }
        });
      } catch (e) {
        if (!(e instanceof SixtreeError) || e.code !== 'ERR_NO_SPACE') throw e;
        process.stdout.write('full\n');
        continue;
      }
      process.stdout.write(keys.map(([k, v]) => (del ? `del ${k}\n` : `put ${k} ${Buffer.from(v).toString('hex')}\n`)).join(''));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
}

if (process.argv[1] && /full-child\.js$/.test(process.argv[1])) {
  main().catch((e: unknown) => {
    const msg = e instanceof Error ? `${(e as { code?: string }).code ?? e.name}: ${e.message}` : String(e);
    process.stdout.write(`error ${msg.replace(/\n/g, ' ')}\n`);
    process.exit(3);
  });
}
