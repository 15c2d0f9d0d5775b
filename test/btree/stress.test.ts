// SPDX-License-Identifier: GPL-2.0-only
/*
 * Transactions under concurrency (docs/api.md, transact(): atomic and
 * serializable; a callback that throws commits nothing), checked by the
 * stress campaign (bench/stress-campaign.ts) at a size CI can afford: a few
 * seeds of a couple of seconds each, 4 KiB nodes and a cache a little above
 * its reserve, so leaves split, merge and are evicted under the transactions.
 * Each run checks bank transfers (every balance is its initial value plus the
 * acknowledged transfers, readers' totals are invariant), version chains (no
 * lost update, no dirty write, one serial order), and fsck, at the end and
 * after close and reopen; one seed runs through a window of device failures,
 * one is closed and reopened under load.
 * The bigger campaign: `npm run stress` or
 * `node dist/bench/stress-campaign.js --count N`.
 */

import { describe, expect, it } from 'vitest';
import { optsText, resultText, runStress, stressRunOpts, type StressOpts, type StressResult } from '../../bench/stress-campaign.js';

/** A run of seed's workload at a small size (4 KiB nodes, a cache a little above its reserve), `over` given: it must break no invariant. */
async function smallRun(seed: number, over: Partial<StressOpts>): Promise<StressResult> {
  const o = stressRunOpts(seed, { nodeSizeBytes: 4096, cacheBytes: 320 << 10, reopenCacheBytes: 320 << 10, deviceBytes: 64 << 20, ...over });
  const r = await runStress(o);
  expect(r.violations, `${optsText(o)}\n${resultText(r)}\n${r.dump}`).toEqual([]);
  return r;
}

describe('Store#transact() under the stress campaign (small)', () => {
  for (const c of [
    { seed: 71, accounts: 64, chains: 16, workers: 32 },
    { seed: 72, accounts: 512, chains: 64, workers: 16 },
    { seed: 73, accounts: 256, chains: 256, workers: 64 },
  ]) {
    it(`seed ${c.seed}: ${c.accounts} accounts, ${c.chains} chain keys, ${c.workers} workers, 4 KiB nodes, small cache`, async () => {
      const r = await smallRun(c.seed, { accounts: c.accounts, chains: c.chains, workers: c.workers, opsPerWorker: 60, secondsMax: 3 });
      expect(r.commits, 'the run must commit transactions').toBeGreaterThan(0);
    }, 60_000);
  }

  // Device operations that wait at random before and after (src/io/delay-device.ts): reads
  // complete late and out of order, so traversals drop their locks for reads that other
  // transactions' splits, merges and rewrites overtake (the race behind session 25's
  // stale-pointer read, docs/cache.md).
  it('seed 74: I/O completing late and out of order, 4 KiB nodes, a cache a little above its reserve', async () => {
    const r = await smallRun(74, {
      accounts: 4096,
      chains: 256,
      workers: 32,
      opsPerWorker: 40,
      secondsMax: 3,
      cacheBytes: 260 << 10,
      reopenCacheBytes: 260 << 10,
      ioDelay: { share: 0.5, maxMs: 0.5 },
    });
    expect(r.commits, 'the run must commit transactions').toBeGreaterThan(0);
    expect(r.evictions, 'the tree must not fit the cache: reads run under the workload').toBeGreaterThan(0);
    expect(r.ioWaits, 'the device must have made operations wait').toBeGreaterThan(100);
  }, 60_000);

  // A window of device failures (bench/stress-campaign.ts --faults): a transaction that rejects
  // with ERR_IO saying it was not committed must not have landed, and one of unknown outcome is
  // read back through the marker key each one writes; the reopened store must hold every
  // acknowledged one and the others wholly or not at all, and the workers run again on it. Its first runs showed a split whose node write failed leaving
  // the store half-working (commits into leaves went on, every later split failed with the old
  // write's error): now the store stops writing at once (test/journal/crash-store.test.ts).
  it('seed 75: device failures for a window of operations, then a reopen and a second workload', async () => {
    // bounded by the operations, not seconds: the fault window is drawn among them
    const r = await smallRun(75, { accounts: 256, chains: 64, workers: 16, opsPerWorker: 40, secondsMax: 30, deviceBytes: 32 << 20, faults: { rate: 0.05, ops: 60 } });
    expect(r.faultsInjected, 'the device must have failed').toBeGreaterThan(0);
    expect(r.ioErrors, 'operations must have met ERR_IO').toBeGreaterThan(0);
    expect(r.secondOps, 'the second workload ran on the reopened store').toBeGreaterThan(0);
  }, 60_000);

  // Reads alone failing (bench/stress-campaign.ts --fault-kinds read): the failures land in
  // lookups, scans, commits' reads, splits and merges of a tree that does not fit the cache;
  // a transaction told committed: false must not have landed, and no failed read may stop
  // the store's writes (the campaign counts a refusal as a violation).
  it('seed 77: node reads failing for a window of operations, the store writing on', async () => {
    // a tree past the cache (1024 accounts, 200 KiB: its reserve and a little): reads go on all through the window
    const small = { cacheBytes: 200 << 10, reopenCacheBytes: 200 << 10, deviceBytes: 32 << 20 };
    const r = await smallRun(77, { ...small, accounts: 1024, chains: 128, workers: 16, opsPerWorker: 40, secondsMax: 30, faults: { rate: 0.03, ops: 400, kinds: ['read'] } });
    expect(r.faultsInjected, 'reads must have failed').toBeGreaterThan(0);
    expect(r.ioErrors, 'operations must have met ERR_IO').toBeGreaterThan(0);
    expect(r.secondOps, 'the second workload ran on the reopened store').toBeGreaterThan(0);
  }, 60_000);

  // Closes under load (bench/stress-campaign.ts --closes): the store is closed three times
  // while the workers run (a server shutting down with requests in flight) and opened again
  // at once. close() waits for the calls in flight and resolves; a call meeting the closing
  // store rejects with ERR_CLOSED only, and a write that did so must not have landed (its
  // marker key is absent).
  it('seed 76: closed and reopened under load three times', async () => {
    // bounded by the operations, not seconds: the closes are drawn among them
    const r = await smallRun(76, { accounts: 256, chains: 64, workers: 32, opsPerWorker: 40, secondsMax: 30, deviceBytes: 32 << 20, closes: 3 });
    expect(r.closesUnderLoad, 'every close under load happened').toBe(3);
    expect(r.closedErrors, 'calls met the closing store').toBeGreaterThan(0);
  }, 60_000);

  // The shape that found lost updates (seed 1041): 4 KiB nodes of one 4 KiB
  // block (every commit to a written leaf replaces it), a cache at its
  // reserve (leaves read back all the time), 64 workers with intent reads on
  // 64 accounts. A traversal whose parent lock was lost during a fill kept
  // the child it had read, which an interior update could have replaced: its
  // reads went unchecked. Before the fix about 2 runs in 3 of 40 s lost an
  // update; this short run catches it less often (a race, not a replay).
  it('seed 1041: one-block 4 KiB nodes, cache at the reserve, 64 workers with intent reads on 64 accounts', async () => {
    const o = stressRunOpts(1041, { opsPerWorker: 150, secondsMax: 8, deviceBytes: 64 << 20 });
    const r = await runStress(o);
    expect(r.violations, `${optsText(o)}\n${resultText(r)}\n${r.dump}`).toEqual([]);
  }, 60_000);
});
