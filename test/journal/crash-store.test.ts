// SPDX-License-Identifier: GPL-2.0-only
/*
 * Crash consistency of the whole store (DESIGN.md, "Durability"): after a
 * crash at any point, every transaction whose transact() resolved is present
 * with its latest value, no transaction is partly visible, and fsck is clean.
 *
 *  1. Random workloads (bench/crash-campaign.ts, runCrashCheck): concurrent
 *     single- and multi-key transactions, overwrites, deletes, delRange,
 *     putExtent, big transactions that split nodes, a read-modify-write
 *     counter; a small cache (nodes evicted and written back) and a small
 *     journal (it wraps). At crash points taken while transactions are in
 *     flight, images are built from the flushed writes plus none / all /
 *     a prefix / a random subset of the unflushed writes, and a torn last
 *     write; each is recovered and checked exactly. At least 1000 images.
 *     SIXTREE_CRASH_SEED=<n> replays a run; failing images are written under
 *     os.tmpdir()/sixtree-crash-images.
 *  2. Focused reproductions of recovery bugs found by (1), small and
 *     deterministic.
 *  3. Device errors (FaultDevice EIO on write, flush, read): the failing
 *     call rejects with ERR_IO, the store stays readable, and nothing
 *     acknowledged is lost (the durable image is recovered and checked).
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { campaignRunOpts, describeFailure, runCrashCheck, type CrashCheckOpts, type CrashCheckResult } from '../../bench/crash-campaign.js';
import { SixtreeError } from '../../src/errors.js';
import { FaultDevice } from '../../src/io/fault-device.js';
import { MemDevice } from '../../src/io/mem-device.js';
import { Store } from '../../src/store.js';
import { bucketToOffset } from '../../src/layout.js';

const BTREES = [{ name: 'kv' }, { name: 'ext', extents: true }];
const SEED = process.env.SIXTREE_CRASH_SEED !== undefined ? Number(process.env.SIXTREE_CRASH_SEED) >>> 0 : 0x5eed;
const DUMP_DIR = join(tmpdir(), 'sixtree-crash-images');
/** Crash images checked by the random runs of this file. */
const IMAGES_MIN = 1000;

/* ------------------------------------------------------------------ helpers */

function val(tag: number, len = 40): Uint8Array {
  const b = new Uint8Array(len);
  new DataView(b.buffer).setUint32(0, tag, true);
  for (let i = 4; i < len; i++) b[i] = (tag * 31 + i) & 0xff;
  return b;
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  return !!a && !!b && a.length === b.length && Buffer.compare(a, b) === 0;
}

/** A fresh store on a MemDevice seen through a FaultDevice. */
async function faultStore(o: { deviceBytes?: number; journalBytes?: number; cacheBytes?: number; btrees?: typeof BTREES } = {}): Promise<{ store: Store; fd: FaultDevice; mem: MemDevice }> {
  const mem = MemDevice.create(o.deviceBytes ?? 8 << 20);
  await Store.formatDevice(mem, { btrees: o.btrees ?? BTREES, nodeSize: 4096, blockSize: 512, journalSize: o.journalBytes ?? 256 << 10 });
  const fd = await FaultDevice.wrap(mem);
  const store = await Store.openDevice(fd, { cacheSize: o.cacheBytes ?? 1 << 20 });
  return { store, fd, mem };
}

/** Recover img and return the keys that do not hold their expected value, plus fsck's findings. */
async function recoverAndCheck(img: Uint8Array, expected: Map<number, Uint8Array>, cacheBytes = 1 << 20): Promise<{ missing: number[]; fsck: string[] }> {
  const s = await Store.openDevice(MemDevice.fromImage(img), { cacheSize: cacheBytes });
  try {
    const missing: number[] = [];
    for (const [k, v] of expected) if (!sameBytes(await s.get('kv', { inode: 1, offset: k }), v)) missing.push(k);
    return { missing, fsck: await s.fsck() };
  } finally {
    await s.close().catch(() => {});
  }
}

async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(`${what}: no answer within ${ms} ms (hang)`)), ms)))]);
  } finally {
    clearTimeout(t);
  }
}

async function expectIoError(p: Promise<unknown>): Promise<SixtreeError> {
  const e = await p.then(
    () => null,
    (x: unknown) => x,
  );
  expect(e, 'expected a rejection with ERR_IO').toBeInstanceOf(SixtreeError);
  expect((e as SixtreeError).code).toBe('ERR_IO');
  return e as SixtreeError;
}

/* ------------------------------------------------------------------ 1. random workloads */

// Randomized crash images over a concurrent workload (bench/crash-campaign.ts),
// at a size CI can afford: two runs, a few hundred images each, every image
// recovered (and some recovered twice) and checked. The bigger campaigns run
// with `npm run test:crash` or `node dist/bench/crash-campaign.js --count N`.
// The seeds are the ones that found the last bugs fixed (a root recorded in
// an entry older than its update's keys, a path walking another btree's node
// after Node reuse; blockSize == nodeSize rewrites every node on each write).
describe('recovery: randomized crash images (small campaign, at least 1,000 images)', () => {
  let images = 0;
  let tornBsets = 0;
  for (const c of [
    { name: '512-byte blocks, 4 KiB nodes (seed 24302)', seed: 24302, blockBytes: 512, journalBytes: 256 << 10 },
    // some rounds end with a clean close and a reopen, with crash points during the close
    { name: '512-byte blocks, 4 KiB nodes, clean closes between rounds (seed 24303)', seed: 24303, blockBytes: 512, journalBytes: 256 << 10, closes: 0.2 },
    { name: 'blockSize == nodeSize = 4 KiB (seed 24305)', seed: 24305, blockBytes: 4096, journalBytes: 1 << 20 },
    { name: 'blockSize == nodeSize = 4 KiB (seed 24315)', seed: 24315, blockBytes: 4096, journalBytes: 1 << 20 },
    { name: 'wipes (delRange over most keys: merges, root collapses; seed 300)', seed: 300, blockBytes: 512, journalBytes: 256 << 10, wipe: 0.25 },
    // the device's operations wait at random before and after (DelayDevice): writes complete
    // out of issue order, and the crash images take the unflushed writes in completion order
    // (recoveries of its images wait too; fewer rounds keep it near the others' time)
    { name: 'I/O completing late and out of order (seed 26001, with wipes)', seed: 26001, blockBytes: 512, journalBytes: 256 << 10, wipe: 0.2, ioDelay: { share: 0.5, maxMs: 1 }, rounds: 28 },
  ]) {
    it(c.name, async () => {
      const res = await runCrashCheck({
        seed: c.seed,
        rounds: c.rounds ?? 40,
        cacheBytes: 512 << 10,
        journalBytes: c.journalBytes,
        blockBytes: c.blockBytes,
        ...(c.wipe ? { wipeProbability: c.wipe } : {}),
        ...(c.ioDelay ? { ioDelay: c.ioDelay } : {}),
        ...(c.closes ? { closeProbability: c.closes } : {}),
      });
      expect(res.failures.map(describeFailure), `crash images failing (seed ${c.seed})`).toEqual([]);
      if (c.wipe) expect(res.merges, 'the wipe rounds must make the live store merge').toBeGreaterThan(0);
      if (c.closes) {
        expect(res.midRunCloses, 'rounds must have ended with a close').toBeGreaterThan(0);
        expect(res.closeCrashPoints, 'crash points during the clean closes').toBeGreaterThan(0);
      }
      images += res.images;
      tornBsets += res.tornBsets;
    }, 300_000);
  }
  // A failing device (bench/crash-campaign.ts --faults): in a third of the rounds each read,
  // write and flush fails with EIO with probability 0.3 while the transactions run. Calls may
  // fail only with ERR_IO; the store is then closed and opened again from what the device
  // holds and from its durable image: every acknowledged transaction there, the others wholly
  // or not at all, fsck clean; the run goes on with the reopened store.
  it('a device failing at random (EIO on reads, writes and flushes; seed 26511)', async () => {
    const res = await runCrashCheck({ seed: 26511, rounds: 30, cacheBytes: 512 << 10, journalBytes: 256 << 10, blockBytes: 512, faultProbability: 0.3, faultRate: 0.3 });
    expect(res.failures.map(describeFailure), 'failures (seed 26511)').toEqual([]);
    expect(res.faultRounds).toBeGreaterThan(3);
    expect(res.faultsInjected, 'the device must have failed').toBeGreaterThan(3);
    expect(res.callsFailedIo, 'calls must have failed with ERR_IO').toBeGreaterThan(3);
    images += res.images;
  }, 300_000);
  it('checked at least 1,000 crash images in all', () => {
    expect(images).toBeGreaterThanOrEqual(1000);
  });
  it('recoveries read past torn node appends (a bset header intact over keys that are not): the tear rule is exercised', () => {
    expect(tornBsets).toBeGreaterThan(0);
  });
});

/* ------------------------------------------------------------------ 2. reproductions */

describe('reproduction: a delRange emptying a full node written whole (campaign, --wipe 0.2)', () => {
  // The bigger campaign's run for seed 1500 (campaignRunOpts: its parameters as the CLI draws them)
  // found, on the live store, a wipe transaction failing with ERR_TOPOLOGY "cannot split: no key
  // to split at": a node as full as a fresh node can be, written whole, had every key deleted by
  // one commit. Whiteouts did not fit, a compacted rewrite was judged no help (it was measured
  // before the deletions), and a split had no key left to split at. The fix is in interior.ts
  // (splitForInsert, rewriteHelps); the deterministic reproduction is in
  // test/btree/shrink.test.ts ("full and written whole"). This run guards the neighbourhood: the
  // same campaign settings, wipes emptying leaves, merges. (Its rounds used to depend on timing:
  // the checks of crash images drew from the workload's plan. They do not any more, and seed 1500's
  // plan now wipes too little to merge; seed 1503's merges about 19 leaves and collapses the root.)
  it('the run is clean', async () => {
    const res = await runCrashCheck(campaignRunOpts(1503, 20, 0.2));
    expect(res.failures.map(describeFailure), 'crash images failing (seed 1503)').toEqual([]);
    expect(res.merges).toBeGreaterThan(0);
  }, 120_000);
});


describe('campaign: one seed plans the same rounds every run', () => {
  // How many crash images a round checks depends on timing; the transactions a recovered image
  // takes are drawn aside (planAside), so the live workload's later rounds stay the seed's own.
  it('two runs of one seed make the same transactions and end with the same keys', async () => {
    const a = await runCrashCheck(campaignRunOpts(1500, 12, 0.2));
    const b = await runCrashCheck(campaignRunOpts(1500, 12, 0.2));
    expect(a.failures.concat(b.failures).map(describeFailure)).toEqual([]);
    expect({ txns: b.txns, keys: b.keys, rounds: b.rounds }).toEqual({ txns: a.txns, keys: a.keys, rounds: a.rounds });
  }, 120_000);
});

describe('recovery: reproductions', () => {
  it('a transaction writing two btrees commits, and the store takes the next one', async () => {
    // journal reservation must count one sub-entry header per (btree, level) run
    const { store } = await faultStore();
    try {
      await within(
        store.transact((tx) => {
          tx.put('kv', { inode: 1, offset: 1 }, val(1, 8));
          tx.putExtent('ext', { inode: 1, offset: 10 }, 4, val(2, 16));
        }),
        5000,
        'transact writing kv and ext',
      );
      await within(store.put('kv', { inode: 9, offset: 9 }, val(3, 4)), 5000, 'the next put');
      expect(sameBytes(await store.get('kv', { inode: 1, offset: 1 }), val(1, 8))).toBe(true);
    } finally {
      await within(store.close(), 5000, 'close').catch(() => {});
    }
  });

  it('pointer keys journaled into the root are replayed (leaf splits under a written root)', async () => {
    const { store, fd } = await faultStore({ cacheBytes: 4 << 20 });
    const expected = new Map<number, Uint8Array>();
    let n = 0;
    // depth 2, everything written
    for (; n < 200; n++) await store.put('kv', { inode: 1, offset: n }, (expected.set(n, val(n)), val(n)));
    await store.flush();
    // more keys: the rightmost leaf splits, the root gets new pointer keys (journaled, root not written)
    for (; n < 300; n++) await store.put('kv', { inode: 1, offset: n }, (expected.set(n, val(n)), val(n)));
    const r = await recoverAndCheck(fd.crashImage(), expected);
    await store.close();
    expect(r.missing, 'acknowledged keys lost by recovery').toEqual([]);
    expect(r.fsck).toEqual([]);
  });

  it('pointer keys of a level a root collapse took away are not replayed into the level grown back', async () => {
    // fill kv (depth 2: level-1 pointer keys journaled), delete everything
    // (merges journal more level-1 keys, then the root collapses to a leaf),
    // fill again (the root splits once: a new level 1 of other nodes) and crash
    // with all of it in the journal window (the ext root leaf stays dirty,
    // its writes failing, so its pin holds the window open): the old level-1
    // keys name freed buckets and must not go into the new level 1 (the
    // crash campaign with --wipe 0.25, seeds 300..302, found recoveries with
    // children that did not tile their parent and pointers to reused buckets)
    const mem = MemDevice.create(8 << 20);
    await Store.formatDevice(mem, { btrees: BTREES, nodeSize: 4096, blockSize: 512, journalSize: 1 << 20 });
    let extRootOffset = -1;
    const fd = await FaultDevice.wrap(mem, { failWrite: (off) => extRootOffset >= 0 && off >= extRootOffset && off < extRootOffset + 4096 });
    const store = await Store.openDevice(fd, { cacheSize: 4 << 20 });
    const expected = new Map<number, Uint8Array>();
    try {
      extRootOffset = bucketToOffset(store.engine.layout, 1);
      await store.transact((tx) => tx.putExtent('ext', { inode: 1, offset: 0 }, 8, val(1)));
      for (let i = 0; i < 300; i += 10) {
        await store.transact((tx) => {
          for (let k = i; k < i + 10; k++) tx.put('kv', { inode: 1, offset: k }, val(k));
        });
      }
      expect(store.stats().btrees.kv!.depth).toBe(2);
      for (let i = 0; i < 300; i += 10) await store.transact((tx) => tx.delRange('kv', { inode: 1, offset: i }, { inode: 1, offset: i + 10 }));
      // the merges run after each deleting call: wait for them without a flush
      // (it would write every node it can and move the journal window on)
      const busy = () => {
        const st = store.stats();
        return st.btrees.kv!.depth > 1 || st.interior.mergesQueued! > 0 || st.interior.pending! > 0;
      };
      for (let i = 0; i < 2000 && busy(); i++) await new Promise((r) => setTimeout(r, 5));
      expect(store.stats().btrees.kv!.depth).toBe(1);
      expect(store.stats().interior.collapses).toBeGreaterThan(0);
      // one root split (the new root's keys are in its node, not the journal):
      // a stale pointer at the last position would replace its last child
      const splits = store.stats().interior.splits!;
      for (let i = 0; store.stats().btrees.kv!.depth === 1 && i < 1000; i += 5) {
        await store.transact((tx) => {
          for (let k = i; k < i + 5; k++) tx.put('kv', { inode: 2, offset: k }, (expected.set(k, val(k + 1000)), val(k + 1000)));
        });
      }
      expect(store.stats().btrees.kv!.depth).toBe(2);
      expect(store.stats().interior.splits! - splits).toBe(1);
      const img = fd.crashImage();
      const s = await Store.openDevice(MemDevice.fromImage(img), { cacheSize: 1 << 20 });
      try {
        expect(s.stats().writeback.replayedKeysStale).toBeGreaterThan(0);
        const missing: number[] = [];
        for (const [k, v] of expected) if (!sameBytes(await s.get('kv', { inode: 2, offset: k }), v)) missing.push(k);
        expect(missing, 'acknowledged keys lost by recovery').toEqual([]);
        for (let k = 0; k < 300; k++) expect(await s.get('kv', { inode: 1, offset: k })).toBeUndefined();
        expect(await s.fsck()).toEqual([]);
      } finally {
        await s.close().catch(() => {});
      }
    } finally {
      extRootOffset = -1;
      await within(store.close(), 10_000, 'close').catch(() => {});
    }
  });

  it('recovery of a depth-3 tree does not read interior nodes through stale on-disk pointers', async () => {
    // every write reached the disk (MemDevice image): the on-disk root still
    // points at level-1 nodes whose buckets were since reused; the journal
    // window holds the newer pointers
    const mem = MemDevice.create(32 << 20);
    await Store.formatDevice(mem, { btrees: [{ name: 'kv' }], nodeSize: 4096, blockSize: 512, journalSize: 1 << 20 });
    const store = await Store.openDevice(mem, { cacheSize: 1 << 20 });
    const expected = new Map<number, Uint8Array>();
    for (let i = 0; i < 1000; i++) {
      await store.transact((tx) => {
        for (let k = 0; k < 4; k++) {
          expected.set(i * 4 + k, val(i, 40));
          tx.put('kv', { inode: 1, offset: i * 4 + k }, val(i, 40));
        }
      });
    }
    expect(store.stats().btrees.kv!.depth).toBe(3);
    const img = mem.image();
    await store.close();
    const r = await recoverAndCheck(img, expected, 2 << 20);
    expect(r.missing.length, 'acknowledged keys lost by recovery').toBe(0);
    expect(r.fsck).toEqual([]);
  });

  it('a journal entry persisted without the node writes issued before it (no flush between them) still recovers', async () => {
    // A disk may persist unflushed writes in any order. New nodes of a split
    // are written, then the journal entry with the pointers to them (and a
    // last_seq that no longer covers keys those nodes hold); only a flush
    // issued between the two (bcachefs: REQ_PREFLUSH on journal writes) makes
    // the entry safe to reach the disk first. Node writes still in flight
    // when an entry is started are not waited for: the images below include
    // journal entries persisted without them.
    const { store, fd } = await faultStore({ journalBytes: 1 << 20, cacheBytes: 4 << 20, btrees: [{ name: 'kv' }] });
    const layout = store.engine.layout;
    const inJournal = (off: number) => off >= layout.journalOffsetBytes && off < layout.journalOffsetBytes + layout.journalBytes;
    const images: Array<{ img: Uint8Array; acked: number; pending: string }> = [];
    let acked = 0;
    // the property that makes such an image recoverable: no journal write is
    // issued while a node write the engine saw complete before the journal
    // started the entry (computed its last_seq: the entry relies on such
    // writes) is still unflushed (preflush). Node writes still in flight
    // then, or completing during the preflush, are no part of it: no entry
    // relies on them. The engine counts a completion (counters.nodeWrites)
    // in the continuation that drops the node's pin; MemDevice completes
    // writes in order, so the first `seen` completions are the ones it saw.
    let journalWrites = 0;
    let nodeWrites = 0;
    let seen = 0;
    const nodeDone: number[] = [];
    const engine = store.engine as unknown as { counters: { nodeWrites: number } };
    const journal = store.engine.journal as unknown as { startWrite(b: unknown): void };
    const startWrite = journal.startWrite.bind(journal);
    journal.startWrite = (b: unknown) => {
      seen = engine.counters.nodeWrites;
      startWrite(b);
    };
    const unsafe: string[] = [];
    const write = fd.write.bind(fd);
    fd.write = async (buf: Uint8Array, off: number) => {
      if (inJournal(off)) {
        journalWrites++;
        // a pending write at an offset is its latest write there
        const earlier = fd.pendingList().filter((w) => !inJournal(w.offsetBytes) && nodeDone.lastIndexOf(w.offsetBytes) < seen);
        if (earlier.length) unsafe.push(`journal write at ${off} with ${earlier.length} unflushed node writes completed before its entry started`);
        return write(buf, off);
      }
      nodeWrites++;
      await write(buf, off);
      nodeDone.push(off);
    };
    const flush = fd.flush.bind(fd);
    fd.flush = async () => {
      const list = fd.pendingList();
      // at most one image per flush: the journal write(s) persisted, the earlier node writes not
      if (images.length < 20 && list.some((w) => !inJournal(w.offsetBytes)) && list.some((w) => inJournal(w.offsetBytes))) {
        images.push({ img: fd.crashImage({ include: (i) => inJournal(list[i]!.offsetBytes) }), acked, pending: list.map((w) => (inJournal(w.offsetBytes) ? 'journal' : 'node')).join(',') });
      }
      await flush();
    };
    const expected = new Map<number, Uint8Array>();
    for (let n = 0; n < 400; n++) {
      await store.put('kv', { inode: 1, offset: n }, val(n));
      expected.set(n, val(n));
      acked = n + 1;
    }
    await within(store.close(), 10_000, 'close').catch(() => {});
    expect(nodeWrites, 'the workload must write nodes').toBeGreaterThan(0);
    expect(journalWrites, 'the workload must write journal entries').toBeGreaterThan(0);
    expect(unsafe, 'journal writes issued over unflushed node writes').toEqual([]);
    // images where a later node write is still unflushed with the journal persisted: recover them too
    const bad: string[] = [];
    for (const { img, acked: a, pending } of images) {
      const want = new Map([...expected].filter(([k]) => k < a));
      try {
        const r = await recoverAndCheck(img, want);
        if (r.missing.length || r.fsck.length) bad.push(`after ${a} puts, unflushed [${pending}], only the journal persisted: ${r.missing.length} acknowledged keys lost, fsck ${JSON.stringify(r.fsck.slice(0, 2))}`);
      } catch (e) {
        bad.push(`after ${a} puts, unflushed [${pending}], only the journal persisted: recovery failed: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    expect(bad, `${bad.length} of ${images.length} images`).toEqual([]);
  });

  it('a node append torn after its header block is taken for a tear (its keys replayed), in the first recovery and in a second one before anything is written', async () => {
    // The read takes a failing last bset whose header checks out for a torn
    // append only if its keys are at or after the journal's replay floor
    // (else it is damage: ERR_CHECKSUM). Every tear here must pass: the
    // node's pin kept the floor at or below its keys.
    const { store, fd } = await faultStore({ journalBytes: 1 << 20, cacheBytes: 4 << 20, btrees: [{ name: 'kv' }] });
    const layout = store.engine.layout;
    const inBuckets = (off: number) => off >= layout.bucketOffsetBytes;
    const images: Array<{ img: Uint8Array; expected: Map<number, Uint8Array> }> = [];
    const expected = new Map<number, Uint8Array>();
    const flush = fd.flush.bind(fd);
    fd.flush = async () => {
      const list = fd.pendingList();
      list.forEach((w, t) => {
        // an append (not a node's first write, at the bucket's start) of more than one block
        if (!inBuckets(w.offsetBytes) || (w.offsetBytes - layout.bucketOffsetBytes) % layout.nodeBytes === 0 || w.lengthBytes <= 512) return;
        if (images.length < 12) images.push({ img: fd.crashImage({ include: (i) => i < t, torn: { index: t, keepBytes: 512 } }), expected: new Map(expected) });
      });
      await flush();
    };
    for (let n = 0; n < 40; n++) expected.set(n, val(n));
    await store.transact((tx) => {
      for (const [k, v] of expected) tx.put('kv', { inode: 1, offset: k }, v);
    });
    await store.flush();
    for (let round = 1; round <= 12; round++) {
      const vals: Array<[number, Uint8Array]> = [];
      for (let k = round % 2; k < 40; k += 2) vals.push([k, val(1000 * round + k)]);
      await store.transact((tx) => {
        for (const [k, v] of vals) tx.put('kv', { inode: 1, offset: k }, v);
      });
      for (const [k, v] of vals) expected.set(k, v);
      await store.flush();
    }
    await store.close();
    expect(images.length, 'torn appends captured').toBeGreaterThan(5);
    let torn = 0;
    for (const { img, expected: want } of images) {
      // first recovery: through a FaultDevice, so a crash right after it can be taken too
      const fd2 = await FaultDevice.wrap(MemDevice.fromImage(img));
      const s = await Store.openDevice(fd2, { cacheSize: 1 << 20 });
      for (const [k, v] of want) expect(sameBytes(await s.get('kv', { inode: 1, offset: k }), v), `key ${k} after recovery`).toBe(true);
      torn += s.stats().cache.counters.tornBsets;
      // second recovery: crashed before any node write (only what recovery flushed survives)
      const again = await recoverAndCheck(fd2.crashImage(), want);
      expect(again.missing).toEqual([]);
      expect(again.fsck).toEqual([]);
      expect(await s.fsck()).toEqual([]);
      await s.close();
      // and after the clean close: the torn bset was overwritten by the write of the replayed keys
      const r = await recoverAndCheck(fd2.crashImage(), want);
      expect(r.missing).toEqual([]);
      expect(r.fsck).toEqual([]);
    }
    expect(torn, 'tears taken as such (stats().cache.counters.tornBsets)').toBeGreaterThanOrEqual(images.length);
  });

  it('blockSize = nodeSize: a key put right after flush() survives a crash', async () => {
    // written nodes cannot take an append (one block per node): the next insert rewrites them
    const mem = MemDevice.create(8 << 20);
    await Store.formatDevice(mem, { btrees: [{ name: 'kv' }], nodeSize: 4096, blockSize: 4096, journalSize: 1 << 20 });
    const fd = await FaultDevice.wrap(mem);
    const store = await Store.openDevice(fd, { cacheSize: 4 << 20 });
    const expected = new Map<number, Uint8Array>();
    let n = 0;
    for (; n < 50; n++) await store.put('kv', { inode: 1, offset: n }, (expected.set(n, val(n)), val(n)));
    await store.flush();
    for (; n < 150; n++) await store.put('kv', { inode: 1, offset: n }, (expected.set(n, val(n)), val(n)));
    const r = await recoverAndCheck(fd.crashImage(), expected);
    await within(store.close(), 10_000, 'close').catch(() => {});
    expect(r.missing, 'acknowledged keys lost by recovery').toEqual([]);
    expect(r.fsck).toEqual([]);
  });

  it('a long sequential workload through a FaultDevice with a small cache completes', { timeout: 60_000 }, async () => {
    // the shrinker must not pick nodes that an interior update already unhashed
    const { store } = await faultStore({ deviceBytes: 32 << 20, journalBytes: 1 << 20, cacheBytes: 1 << 20, btrees: [{ name: 'kv' }] });
    let i = 0;
    try {
      for (; i < 4000; i++) {
        await store.transact((tx) => {
          for (let k = 0; k < 4; k++) tx.put('kv', { inode: 1, offset: i * 4 + k }, val(i, 40));
        });
      }
    } catch (e) {
      throw new Error(`transaction ${i} failed: ${e instanceof Error ? e.message : String(e)}`);
    } finally {
      await within(store.close(), 10_000, 'close').catch(() => {});
    }
  });

  it('journal reclaim waits for interior updates instead of failing with ERR_NO_SPACE', { timeout: 60_000 }, async () => {
    // 256 KiB journal, one key per transaction: the journal wraps many times;
    // splits pin entries until their update completes
    const { store } = await faultStore({ journalBytes: 256 << 10, cacheBytes: 4 << 20 });
    let i = 0;
    try {
      for (; i < 1500; i++) await store.put('kv', { inode: 1, offset: i }, val(i));
    } catch (e) {
      throw new Error(`put ${i} failed: ${e instanceof Error ? e.message : String(e)}`);
    } finally {
      await within(store.close(), 10_000, 'close').catch(() => {});
    }
  });
});

/* ------------------------------------------------------------------ 3. device errors */

describe('device errors (FaultDevice EIO)', () => {
  /** A store with `n` acknowledged keys 0..n-1 (value tag = key). */
  async function withKeys(n: number): Promise<{ store: Store; fd: FaultDevice; mem: MemDevice; expected: Map<number, Uint8Array> }> {
    const { store, fd, mem } = await faultStore({ cacheBytes: 512 << 10 });
    const expected = new Map<number, Uint8Array>();
    for (let i = 0; i < n; i += 4) {
      await within(
        store.transact((tx) => {
          for (let k = i; k < i + 4 && k < n; k++) {
            tx.put('kv', { inode: 1, offset: k }, val(k));
            expected.set(k, val(k));
          }
        }),
        10_000,
        `loading: transaction of keys ${i}..${i + 3}`,
      );
    }
    return { store, fd, mem, expected };
  }

  async function expectReadable(store: Store, expected: Map<number, Uint8Array>): Promise<void> {
    for (const [k, v] of expected) expect(sameBytes(await within(store.get('kv', { inode: 1, offset: k }), 10_000, `get ${k}`), v), `key ${k} readable`).toBe(true);
  }

  /** The failed transaction's keys: all visible or none (it was never acknowledged). */
  function allOrNone(missing: number[], failedKeys: number[]): boolean {
    const m = new Set(missing);
    return failedKeys.every((k) => m.has(k)) || failedKeys.every((k) => !m.has(k));
  }

  it('every write failing: transact() rejects with ERR_IO, the store stays readable, nothing acknowledged is lost', async () => {
    const { store, fd, expected } = await withKeys(400);
    fd.rules = { failWrite: () => true };
    const failedKeys = [1000, 1001, 1002];
    await expectIoError(
      within(
        store.transact((tx) => {
          for (const k of failedKeys) tx.put('kv', { inode: 1, offset: k }, val(k));
        }),
        10_000,
        'transact with failing writes',
      ),
    );
    expect(fd.injected.write).toBeGreaterThan(0);
    await expectReadable(store, expected);
    // later writes fail too (the journal is stopped) or succeed; never anything but ERR_IO
    fd.clearFaults();
    await within(store.put('kv', { inode: 1, offset: 2000 }, val(2000)), 10_000, 'put after the failure').catch((e: unknown) => {
      expect((e as SixtreeError).code).toBe('ERR_IO');
    });
    const img = fd.durableImage();
    await within(store.close(), 10_000, 'close').catch(() => {});
    const withFailed = new Map(expected);
    for (const k of failedKeys) withFailed.set(k, val(k));
    const r = await recoverAndCheck(img, withFailed);
    expect(r.missing.filter((k) => !failedKeys.includes(k)), 'acknowledged keys lost').toEqual([]);
    expect(allOrNone(r.missing, failedKeys), 'the failed transaction is all or nothing').toBe(true);
    expect(r.fsck).toEqual([]);
  });

  it('the journal write failing once: transact() rejects with ERR_IO, nothing acknowledged is lost', async () => {
    const { store, fd, expected } = await withKeys(200);
    await store.flush();
    fd.failNext('write');
    const e = await expectIoError(within(store.put('kv', { inode: 1, offset: 5000 }, val(5000)), 10_000, 'put with the next write failing'));
    expect(e.details.committed, 'applied, its journal write failed: outcome unknown').toBe('unknown');
    // the journal stopped: later writes are refused before anything is applied
    const refused = await expectIoError(store.put('kv', { inode: 1, offset: 5001 }, val(5001)));
    expect(refused.details.committed, 'refused: not committed').toBe(false);
    await expectReadable(store, expected);
    const img = fd.crashImage({ include: () => true });
    await within(store.close(), 10_000, 'close').catch(() => {});
    const r = await recoverAndCheck(img, expected);
    expect(r.missing).toEqual([]);
    expect(r.fsck).toEqual([]);
  });

  it('a flush failing: transact() rejects with ERR_IO, the store stays readable, nothing acknowledged is lost', async () => {
    const { store, fd, expected } = await withKeys(400);
    fd.failNext('flush');
    const failedKeys = [3000, 3001];
    const e = await expectIoError(
      within(
        store.transact((tx) => {
          for (const k of failedKeys) tx.put('kv', { inode: 1, offset: k }, val(k));
        }),
        10_000,
        'transact with a failing flush',
      ),
    );
    expect(e.details.committed).toBe('unknown');
    expect(fd.injected.flush).toBe(1);
    await expectReadable(store, expected);
    const withFailed = new Map(expected);
    for (const k of failedKeys) withFailed.set(k, val(k));
    // the failed transaction's entry was written but never flushed: lost or kept, whole
    for (const img of [fd.crashImage(), fd.crashImage({ include: () => true })]) {
      const r = await recoverAndCheck(img, withFailed);
      expect(r.missing.filter((k) => !failedKeys.includes(k)), 'acknowledged keys lost').toEqual([]);
      expect(allOrNone(r.missing, failedKeys), 'the failed transaction is all or nothing').toBe(true);
      expect(r.fsck).toEqual([]);
    }
    await within(store.close(), 10_000, 'close').catch(() => {});
  });

  it('node writes failing: flush() rejects with ERR_IO, commits stay durable through the journal', async () => {
    const { store, fd, expected } = await withKeys(400);
    // buckets (btree nodes) start after the journal
    const bucketsStart = store.engine.layout.bucketOffsetBytes;
    fd.rules = { failWrite: (off) => off >= bucketsStart };
    const more = new Map<number, Uint8Array>();
    const errors: unknown[] = [];
    for (let k = 400; k < 600; k++) {
      try {
        await store.put('kv', { inode: 1, offset: k }, val(k));
        more.set(k, val(k));
      } catch (e) {
        errors.push(e);
      }
    }
    for (const e of errors) expect((e as SixtreeError).code, String(e)).toBe('ERR_IO');
    await expectIoError(within(store.flush(), 10_000, 'flush with failing node writes'));
    expect(fd.injected.write).toBeGreaterThan(0);
    await expectReadable(store, expected);
    const all = new Map([...expected, ...more]);
    const r = await recoverAndCheck(fd.durableImage(), all);
    expect(r.missing, 'acknowledged keys lost').toEqual([]);
    expect(r.fsck).toEqual([]);
    fd.clearFaults();
    await within(store.close(), 10_000, 'close').catch(() => {});
  });

  it('a node a split made failing its write: the store refuses writes from then on, naming the error (bcachefs goes read-only); reads go on; recovery has every acknowledged key', async () => {
    const { store, fd, mem, expected } = await withKeys(400);
    const bucketsStart = store.engine.layout.bucketOffsetBytes;
    const failedBefore = store.stats().interior.updatesFailed;
    fd.rules = { failWrite: (off) => off >= bucketsStart };
    const acked = new Map(expected);
    let first: unknown = null;
    for (let k = 400; k < 5000 && first === null; k++) {
      try {
        await within(store.put('kv', { inode: 1, offset: k }, val(k)), 10_000, `put ${k}`);
        acked.set(k, val(k));
      } catch (e) {
        first = e;
      }
    }
    expect(first, 'a put failed once a split could not write its nodes').toBeInstanceOf(SixtreeError);
    expect((first as SixtreeError).code).toBe('ERR_IO');
    expect(store.stats().interior.updatesFailed, 'the split (an interior update) failed').toBeGreaterThan(failedBefore);
    // the device works again, but the store's writes stay stopped, and say why
    fd.clearFaults();
    const refused = await expectIoError(store.put('kv', { inode: 1, offset: 9999 }, val(9999)));
    expect(refused.message).toMatch(/refuses writes after a device error: .*EIO/);
    await expectIoError(within(store.flush(), 10_000, 'flush after the failed split'));
    await expectReadable(store, acked);
    await expectIoError(within(store.close(), 10_000, 'close after the failed split'));
    const r = await recoverAndCheck(mem.image(), acked);
    expect(r.missing, 'acknowledged keys lost').toEqual([]);
    expect(r.fsck).toEqual([]);
  });

  it('a node write that failed is retried without the keys put after it, and those keep the node dirty: a clean close loses nothing acknowledged', async () => {
    const { store, fd, mem } = await faultStore();
    const bucketsStart = store.engine.layout.bucketOffsetBytes;
    await store.put('kv', { inode: 1, offset: 1 }, val(1));
    await within(store.flush(), 10_000, 'flush');
    await store.put('kv', { inode: 1, offset: 2 }, val(2)); // the leaf dirty: key 2 unwritten
    fd.rules = { failWrite: (off) => off >= bucketsStart };
    await expectIoError(within(store.flush(), 10_000, 'flush with failing node writes'));
    expect(store.stats().cache.dirty, 'the leaf stays dirty after its write failed').toBe(1);
    fd.clearFaults();
    // acknowledged after the failed write: in the leaf's writable set, behind the bytes the failed write sealed
    await store.put('kv', { inode: 1, offset: 3 }, val(3));
    await within(store.flush(), 10_000, 'flush with a healthy device');
    expect(store.stats().cache.dirty).toBe(0);
    await within(store.close(), 10_000, 'close');
    // the clean superblock: nothing is replayed, the keys come from the nodes
    const r = await recoverAndCheck(mem.image(), new Map([1, 2, 3].map((k) => [k, val(k)])));
    expect(r.missing, 'acknowledged keys lost').toEqual([]);
    expect(r.fsck).toEqual([]);
  });

  it('close() while node writes fail rejects with ERR_IO and leaves the store to recovery, which has every key', async () => {
    const { store, fd, mem } = await faultStore();
    const bucketsStart = store.engine.layout.bucketOffsetBytes;
    await store.put('kv', { inode: 1, offset: 1 }, val(1));
    await within(store.flush(), 10_000, 'flush');
    await store.put('kv', { inode: 1, offset: 2 }, val(2));
    fd.rules = { failWrite: (off) => off >= bucketsStart };
    await expectIoError(within(store.close(), 10_000, 'close with failing node writes'));
    const r = await recoverAndCheck(mem.image(), new Map([1, 2].map((k) => [k, val(k)])));
    expect(r.missing, 'acknowledged keys lost').toEqual([]);
    expect(r.fsck).toEqual([]);
  });

  it('recovery failing at one of its device operations (reads, writes, flushes): open rejects with ERR_IO and leaves nothing running; the next open recovers every key', { timeout: 60_000 }, async () => {
    // a crash image whose open must replay: keys only in the journal, leaves split
    const { store, fd, expected } = await withKeys(600);
    const img = fd.crashImage({ include: () => true });
    await within(store.close(), 10_000, 'close').catch(() => {});
    // count the opening's reads and writes, then fail each of a spread of them in turn
    const probe = await FaultDevice.wrap(MemDevice.fromImage(img));
    let reads = 0;
    let writes = 0;
    let flushes = 0;
    probe.rules = { failRead: () => (reads++, false), failWrite: () => (writes++, false), failFlush: () => (flushes++, false) };
    const s0 = await Store.openDevice(probe, { cacheSize: 512 << 10 });
    const opsAtOpen = { reads, writes, flushes };
    await s0.close();
    expect(opsAtOpen.reads, 'the open reads').toBeGreaterThan(3);
    expect(opsAtOpen.writes, 'the open writes (replay, the blacklist, the superblock)').toBeGreaterThan(0);
    const points: Array<['read' | 'write' | 'flush', number]> = [];
    for (const n of [1, 2, 3, Math.floor(opsAtOpen.reads / 2), opsAtOpen.reads]) points.push(['read', n]);
    for (const n of new Set([1, 2, Math.ceil(opsAtOpen.writes / 2), opsAtOpen.writes])) points.push(['write', n]);
    for (const n of new Set([1, opsAtOpen.flushes])) if (n > 0) points.push(['flush', n]);
    let failedOpens = 0;
    for (const [kind, n] of points) {
      const mem = MemDevice.fromImage(img);
      const dev = await FaultDevice.wrap(mem);
      let seen = 0;
      const failNth = () => ++seen === n;
      dev.rules = kind === 'read' ? { failRead: failNth } : kind === 'write' ? { failWrite: failNth } : { failFlush: failNth };
      let ops = 0;
      const count = dev.rules;
      dev.rules = {
        failRead: (o, l) => (ops++, count.failRead?.(o, l) ?? false),
        failWrite: (o, l) => (ops++, count.failWrite?.(o, l) ?? false),
        failFlush: () => (ops++, count.failFlush?.() ?? false),
      };
      const what = `${kind} ${n} failing`;
      let s: Store | null = null;
      try {
        s = await within(Store.openDevice(dev, { cacheSize: 512 << 10 }), 10_000, `open, ${what}`);
      } catch (e) {
        expect(e, what).toBeInstanceOf(SixtreeError);
        expect((e as SixtreeError).code, `${what}: ${String(e)}`).toBe('ERR_IO');
        failedOpens++;
        // nothing of the failed open goes on touching the device
        const after = ops;
        await new Promise((r) => setTimeout(r, 50));
        expect(ops, `${what}: device operations after the open rejected`).toBe(after);
      }
      if (s) await within(s.close(), 10_000, `close, ${what}`);
      const r = await recoverAndCheck(mem.image(), expected);
      expect(r.missing, `${what}: keys lost`).toEqual([]);
      expect(r.fsck, what).toEqual([]);
    }
    console.log(`recovery failure points: ${JSON.stringify(points)} of ${JSON.stringify(opsAtOpen)}; ${failedOpens} opens failed`);
    expect(failedOpens, 'most failure points make the open fail').toBeGreaterThan(points.length / 2);
  });

  it("an ERR_IO the callback throws is the caller's own object, marked not committed", async () => {
    const { store } = await faultStore();
    const mine = new SixtreeError('ERR_IO', 'the callback gave up');
    const got = await store
      .transact((tx) => {
        tx.put('kv', { inode: 1, offset: 1 }, val(1));
        throw mine;
      })
      .then(
        () => null,
        (e: unknown) => e,
      );
    expect(got, 'the same object').toBe(mine);
    expect(mine.details.committed).toBe(false);
    expect(await store.get('kv', { inode: 1, offset: 1 })).toBeUndefined();
    await store.close();
  });

  it('a read failing: get() rejects with ERR_IO, and works again once the device does', { timeout: 60_000 }, async () => {
    const { store, fd, expected } = await withKeys(2000);
    await within(store.flush(), 10_000, 'flush');
    store.shrink();
    fd.rules = { failRead: () => true };
    let failed = 0;
    for (const k of [0, 500, 1000, 1500, 1999]) {
      const v = await within(store.get('kv', { inode: 1, offset: k }), 10_000, `get ${k} with failing reads`).catch((e: unknown) => {
        expect((e as SixtreeError).code).toBe('ERR_IO');
        failed++;
        return null;
      });
      if (v !== null) expect(sameBytes(v, expected.get(k))).toBe(true);
    }
    expect(failed, 'some reads must have gone to the device').toBeGreaterThan(0);
    // writing transactions whose read fails: nothing of them was applied
    store.shrink();
    let rmwFailed = 0;
    for (const k of [777, 1234, 1777, 333, 1555]) {
      const w = await within(
        store.transact(async (tx) => {
          const v = await tx.get('kv', { inode: 1, offset: k });
          tx.put('kv', { inode: 1, offset: k }, v ?? val(0));
        }),
        10_000,
        `a read-modify-write of key ${k} with failing reads`,
      ).then(
        () => null,
        (e: unknown) => e as SixtreeError,
      );
      if (w === null) continue; // its leaf was cached
      expect(w.code).toBe('ERR_IO');
      expect(w.details.committed, 'failed at a read: not committed').toBe(false);
      rmwFailed++;
    }
    expect(rmwFailed, 'some read-modify-writes must have read from the device').toBeGreaterThan(0);
    fd.clearFaults();
    await expectReadable(store, expected);
    await within(store.close(), 10_000, 'close');
  });
});
