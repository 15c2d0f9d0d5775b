// SPDX-License-Identifier: GPL-2.0-only
/*
 * Crash images: the journal's durability promise is that every entry whose
 * waitDurable() resolved is found by readJournal() on any image made of all
 * flushed writes plus any subset (whole or torn) of the unflushed ones, as long
 * as something still pins it.
 */
import { describe, expect, it } from 'vitest';
import { JournalSeqBlacklist } from '../../src/journal/blacklist.js';
import { jsetEntryBytes } from '../../src/format/journal-format.js';
import { Journal, JournalPin, JournalPreres, journalRecoveryPlan, journalStartAfterRead } from '../../src/journal/journal.js';
import { Model, Prng, TestDevice, UUID, commit, crashImage, makeEnv, openJournal, read, type CrashSnapshot, type Env } from './helpers.js';

interface Snap {
  snap: CrashSnapshot;
  /** Acknowledged and still pinned when the crash happened. */
  required: number[];
  maxAcked: number;
}

class PinSet {
  pins: JournalPin[] = [];
  count(seq: number): number {
    return this.pins.filter((p) => p.seq === seq).length;
  }
}

/** Run a concurrent workload, snapshotting crash states along the way. */
async function workload(env: Env, seed: number, commits: number, snapP: number, reclaimThreshold: number): Promise<{ snaps: Snap[]; model: Model; j: Journal }> {
  const rng = new Prng(seed);
  const model = new Model();
  const pins = new PinSet();
  const acked = new Set<number>();
  let maxAcked = 0;
  const j = openJournal(env, {
    reclaimThreshold,
    onReclaimNeeded: async (target) => {
      await new Promise((r) => setImmediate(r));
      const before = pins.pins.length;
      pins.pins = pins.pins.filter((p) => {
        if (p.seq < target) {
          j.pinDrop(p);
          return false;
        }
        return true;
      });
      return pins.pins.length < before;
    },
  });
  const snaps: Snap[] = [];
  env.dev.onOp = () => {
    if (!rng.bool(snapP)) return;
    const pinned = new Set(pins.pins.map((p) => p.seq));
    snaps.push({ snap: env.dev.snapshot(), required: [...acked].filter((s) => pinned.has(s)), maxAcked });
  };
  let left = commits;
  const worker = async () => {
    while (left-- > 0) {
      const seq = await commit(j, model, rng, {
        n: rng.range(1, 3),
        maxBytes: rng.bool(0.1) ? 5000 : 600, // 3 x 5000 still fits a 16 KiB entry
        beforeRelease: (res) => {
          if (rng.bool(0.8)) pins.pins.push(j.pinAdd(res.seq));
        },
      });
      await j.waitDurable(seq);
      acked.add(seq);
      maxAcked = Math.max(maxAcked, seq);
      // writeback: now and then a node write drops some old pins
      if (rng.bool(0.2) && pins.pins.length > 4) {
        const n = rng.range(1, 3);
        for (let i = 0; i < n; i++) j.pinDrop(pins.pins.splice(rng.int(Math.min(4, pins.pins.length)), 1)[0]!);
      }
      if (rng.bool(0.3)) await new Promise((r) => setImmediate(r));
    }
  };
  await Promise.all(Array.from({ length: 6 }, worker));
  env.dev.onOp = null;
  return { snaps, model, j };
}

async function checkSnap(env: Env, s: Snap, model: Model, rng: Prng, images: number): Promise<string | null> {
  for (let i = 0; i < images; i++) {
    const img = i === 0 ? s.snap.durable : crashImage(s.snap, rng);
    let r;
    try {
      r = await read(env, img);
    } catch (e) {
      return `image ${i}: readJournal failed: ${(e as Error).message}`;
    }
    if (r.newestSeq < s.maxAcked) return `image ${i}: newest ${r.newestSeq} < acknowledged ${s.maxAcked}`;
    const have = new Set(r.entries.map((e) => e.seq));
    for (const q of s.required) if (!have.has(q)) return `image ${i}: acknowledged pinned seq ${q} missing (window ${r.lastSeq}..${r.newestSeq})`;
    for (const e of r.entries) {
      const p = model.check(e);
      if (p) return `image ${i}: ${p}`;
    }
  }
  return null;
}

describe('Journal crash images', () => {
  for (const [threshold, what] of [
    [1, 'the ring runs full and reserve() waits for reclaim'],
    [0.5, 'background reclaim keeps the ring half empty'],
  ] as const) {
    it(`every acknowledged, pinned entry survives any crash image (concurrent workload through wraparound; ${what})`, async () => {
      const env = makeEnv({ journalBytes: 128 * 1024 });
      const { snaps, model, j } = await workload(env, 42, 400, 0.3, threshold);
      expect(j.counters.bytesWritten).toBeGreaterThan(2 * env.layout.journalBytes); // wrapped
      expect(j.counters.entriesWritten).toBeLessThan(400); // group commit happened
      if (threshold === 1) expect(j.counters.reclaimCalls).toBeGreaterThan(0);
      else expect(j.counters.reclaimBackgroundCalls).toBeGreaterThan(0);
      expect(snaps.length).toBeGreaterThan(20);
      const rng = new Prng(99);
      const problems: string[] = [];
      for (const s of snaps) {
        const p = await checkSnap(env, s, model, rng, 4);
        if (p) problems.push(p);
      }
      expect(problems).toEqual([]);
    });
  }

  it('crash at every device operation of a sequential run, every subset of the pending writes', async () => {
    const env = makeEnv({ journalBytes: 64 * 1024 });
    const rng = new Prng(5);
    const model = new Model();
    const pins: JournalPin[] = [];
    const acked: number[] = [];
    const j = openJournal(env);
    const snaps: Snap[] = [];
    env.dev.onOp = () => snaps.push({ snap: env.dev.snapshot(), required: acked.filter((s) => pins.some((p) => p.seq === s)), maxAcked: acked.at(-1) ?? 0 });
    for (let i = 0; i < 60; i++) {
      const s = await commit(j, model, rng, { n: 1, maxBytes: 1800, beforeRelease: (res) => pins.push(j.pinAdd(res.seq)) });
      await j.waitDurable(s);
      acked.push(s);
      while (pins.length > 5) j.pinDrop(pins.shift()!);
    }
    env.dev.onOp = null;
    let images = 0;
    for (const s of snaps) {
      expect(s.snap.pending.length).toBeLessThanOrEqual(1); // one journal write in flight at most
      const variants = [s.snap.durable, crashImage(s.snap, rng, 1, 0), crashImage(s.snap, rng, 1, 1), crashImage(s.snap, rng, 1, 1)];
      for (const img of variants) {
        images++;
        expect(await checkSnap(env, { ...s, snap: { durable: img, pending: [] } }, model, rng, 1)).toBeNull();
      }
    }
    expect(images).toBeGreaterThan(200);
  });
});

describe('Journal recovery and the seq blacklist', () => {
  it('after a crash the journal continues past a blacklisted range; reads accept the gap', async () => {
    const env = makeEnv({ journalBytes: 256 * 1024 });
    const rng = new Prng(7);
    const model = new Model();
    const j = openJournal(env);
    let firstPin: JournalPin | null = null;
    const snapAt = 25;
    let snap: CrashSnapshot | null = null;
    for (let i = 0; i < 40; i++) {
      if (i === snapAt) snap = env.dev.snapshot();
      const s = await commit(j, model, rng, { beforeRelease: (res) => i === 0 && (firstPin = j.pinAdd(res.seq)) });
      await j.waitDurable(s);
    }
    expect(firstPin).not.toBeNull();
    // Crash image from the middle: entries after it were lost.
    const img = crashImage(snap!, rng, 1, 1);
    const dev2 = TestDevice.fromImage(img);
    const sbBlacklist = new JournalSeqBlacklist();
    const env2: Env = { ...env, dev: dev2, blacklist: sbBlacklist };
    const r = await read(env2, undefined, sbBlacklist);
    expect(r.newestSeq).toBeGreaterThanOrEqual(snapAt);
    const plan = journalRecoveryPlan({ clean: false, cleanJournalSeq: 0 }, r, sbBlacklist);
    expect(plan.clean).toBe(false);
    expect(plan.blacklisted).toEqual({ start: r.newestSeq + 1, end: r.newestSeq + 8 });
    expect(plan.nextSeq).toBe(r.newestSeq + 9);
    expect(sbBlacklist.isBlacklisted(r.newestSeq + 1)).toBe(true);
    // (the engine writes the superblock with sbBlacklist here)
    const model2 = new Model();
    for (const e of r.entries) for (const p of model.bySeq.get(e.seq) ?? []) model2.record(e.seq, p);
    const j2 = new Journal(dev2, env.layout, {
      uuid: UUID,
      nrBtrees: 2,
      getRoots: () => env.roots,
      rootPtrBytesMax: 32,
      blacklist: sbBlacklist,
      start: journalStartAfterRead(r, plan.nextSeq, { replayPins: true }),
    });
    // replay pins let the engine pin the replayed seqs
    const replayPin = j2.pinAdd(r.lastSeq);
    j2.replayDone();
    const newSeqs: number[] = [];
    for (let i = 0; i < 10; i++) {
      const s = await commit(j2, model2, rng);
      await j2.waitDurable(s);
      newSeqs.push(s);
    }
    expect(newSeqs[0]).toBe(plan.nextSeq);
    expect(newSeqs.every((s) => !sbBlacklist.isBlacklisted(s))).toBe(true);
    // The window now spans the old entries, the blacklisted gap and the new entries.
    const r2 = await read(env2, undefined, sbBlacklist);
    expect(r2.lastSeq).toBe(r.lastSeq);
    expect(r2.newestSeq).toBe(newSeqs.at(-1));
    expect(r2.entries.map((e) => e.seq)).toEqual([...r.entries.map((e) => e.seq), ...newSeqs]);
    for (const e of r2.entries) expect(model2.check(e)).toBeNull();
    // Even without the superblock's list, the entries carry the range that explains the gap.
    const r3 = await read(env2, undefined, new JournalSeqBlacklist());
    expect(r3.newestSeq).toBe(r2.newestSeq);
    expect(r3.blacklist).toContainEqual(plan.blacklisted);
    // Dropping the replay pin lets the journal forget the old entries.
    j2.pinDrop(replayPin);
    await j2.flush();
    const r4 = await read(env2, undefined, sbBlacklist);
    expect(r4.lastSeq).toBe(r4.newestSeq);
  });

  it('a second crash right after recovery (nothing new durable) still reads, and blacklists again', async () => {
    const env = makeEnv();
    const rng = new Prng(8);
    const model = new Model();
    const j = openJournal(env);
    for (let i = 0; i < 5; i++) await j.waitDurable(await commit(j, model, rng, { beforeRelease: (res) => i === 0 && j.pinAdd(res.seq) }));
    const bl = new JournalSeqBlacklist();
    const r = await read(env, undefined, bl);
    const plan = journalRecoveryPlan({ clean: false, cleanJournalSeq: 0 }, r, bl);
    const j2 = new Journal(env.dev, env.layout, { uuid: UUID, nrBtrees: 2, getRoots: () => env.roots, rootPtrBytesMax: 32, blacklist: bl, start: journalStartAfterRead(r, plan.nextSeq, { replayPins: true }) });
    const res = await j2.reserve(64);
    res.add('btree_keys', 0, 0, new Uint8Array(56));
    const snap = env.dev.snapshot(); // crash before that entry is written
    j2.release(res);
    await j2.waitDurable(res.seq);
    const img = snap.durable;
    const r2 = await read({ ...env, dev: TestDevice.fromImage(img) }, undefined, bl);
    expect(r2.newestSeq).toBe(r.newestSeq);
    const plan2 = journalRecoveryPlan({ clean: false, cleanJournalSeq: 0 }, r2, bl);
    // same newest: the same range again, merged
    expect(plan2.nextSeq).toBe(plan.nextSeq);
    expect(bl.length).toBe(1);
  });

  it('a crash with the ring as full as commits and interior updates may make it: replay still finds room for its interior updates, and frees entries as it goes', async () => {
    const env = makeEnv({ journalBytes: 256 * 1024 });
    const rng = new Prng(21);
    const model = new Model();
    const j = openJournal(env);
    const keys = new Uint8Array(200);
    /* an interior update as the engine makes one: a pre-reservation of a whole entry, converted at 'interior' */
    const interiorUpdate = async (jj: Journal, wait: boolean): Promise<boolean> => {
      const p = new JournalPreres();
      const bytes = jj.entryBytesFor(jsetEntryBytes(keys.length));
      if (!jj.preresTryGet(p, bytes)) {
        if (!wait) return false;
        await jj.preresWait(p, bytes);
      }
      const res = await jj.reserve(jsetEntryBytes(keys.length), 'interior', p);
      res.add('btree_keys', 0, 1, keys);
      jj.release(res);
      await jj.waitDurable(res.seq);
      return true;
    };
    // pin the first entry (a node never written): nothing can be reclaimed
    const first = await commit(j, model, rng, { beforeRelease: (res) => j.pinAdd(res.seq) });
    await j.waitDurable(first);
    // commits until ordinary commits find no room, then interior updates until they find none either
    while (await j.waitForRoom(1500, false)) await j.waitDurable(await commit(j, model, rng, { n: 1, maxBytes: 1200 }));
    let interior = 0;
    while (await interiorUpdate(j, false)) interior++;
    expect(interior).toBeGreaterThan(0);
    const full = j.stats();
    // outside recovery the reserve is kept: what the full ring left free is what a recovery may use
    expect(full.bytesTotal - full.bytesUsed).toBeGreaterThanOrEqual(j.recoveryReserveBytes);
    // the crash, and a recovery that pins every recovered entry until replay has put its keys in nodes
    const img = env.dev.snapshot().durable;
    const r = await read(env, img);
    const bl = new JournalSeqBlacklist();
    const plan = journalRecoveryPlan({ clean: false, cleanJournalSeq: 0 }, r, bl);
    const pinsOfNodes: JournalPin[] = [];
    let reclaims = 0;
    const j2: Journal = new Journal(TestDevice.fromImage(img), env.layout, {
      uuid: UUID,
      nrBtrees: 2,
      getRoots: () => env.roots,
      rootPtrBytesMax: 32,
      blacklist: bl,
      start: journalStartAfterRead(r, plan.nextSeq, { replayPins: true }),
      // reclaim "writes the nodes" holding the replayed keys: their pins go
      onReclaimNeeded: (target: number) => {
        reclaims++;
        while (pinsOfNodes.length && pinsOfNodes[0]!.seq < target) j2.pinDrop(pinsOfNodes.shift()!);
        return true;
      },
    });
    const seqs = r.entries.map((e) => e.seq);
    expect(seqs.length).toBeGreaterThan(20);
    // the first entry's keys split a node before any entry can be freed: the recovery reserve takes it
    expect(await interiorUpdate(j2, false)).toBe(true);
    pinsOfNodes.push(j2.pinAdd(seqs[0]!));
    // then each later entry in seq order: the replay pins before it go (the nodes holding
    // their keys pin them instead); every 4th entry's keys split a node, in room reclaim frees
    let splits = 1;
    for (const [i, s] of seqs.entries()) {
      if (i === 0) continue;
      j2.replayedBefore(s);
      pinsOfNodes.push(j2.pinAdd(s));
      if (i % 4 === 0) {
        await interiorUpdate(j2, true);
        splits++;
      }
    }
    expect(splits).toBeGreaterThan(5);
    j2.replayDone();
    expect(reclaims).toBeGreaterThan(0);
    expect(j2.counters.replayPinsDroppedEarly).toBe(seqs.length - 1);
    expect(j2.counters.noSpace).toBe(0);
  });

  it('a clean shutdown continues at newest + 1 without blacklisting', async () => {
    const env = makeEnv();
    const rng = new Prng(9);
    const model = new Model();
    const j = openJournal(env);
    for (let i = 0; i < 3; i++) await j.waitDurable(await commit(j, model, rng));
    const st = await j.close();
    const bl = new JournalSeqBlacklist();
    const r = await read(env, undefined, bl);
    expect(r.newestSeq).toBe(st.seq);
    expect(r.nextWriteOffsetBytes).toBe(st.writeOffsetBytes);
    const plan = journalRecoveryPlan({ clean: true, cleanJournalSeq: st.seq }, r, bl);
    expect(plan).toEqual({ nextSeq: st.seq + 1, clean: true, blacklisted: null, replay: false });
    expect(bl.length).toBe(0);
    // fresh store, unclean (crash before the first journal write): blacklist 1..8
    const plan0 = journalRecoveryPlan({ clean: false, cleanJournalSeq: 0 }, { ...r, entries: [], newestSeq: 0, lastSeq: 0 }, bl);
    expect(plan0.blacklisted).toEqual({ start: 1, end: 8 });
    expect(plan0.nextSeq).toBe(9);
  });
});

describe('JournalSeqBlacklist', () => {
  it('merges overlapping and adjacent ranges, keeps apart the rest', () => {
    const bl = new JournalSeqBlacklist();
    bl.add(10, 12);
    bl.add(20, 25);
    bl.add(13, 14); // adjacent to 10..12
    bl.add(30, 30);
    bl.add(24, 29); // overlaps 20..25, adjacent to 30
    expect(bl.toArray()).toEqual([
      { start: 10, end: 14 },
      { start: 20, end: 30 },
    ]);
    for (const [s, want] of [
      [9, false],
      [10, true],
      [14, true],
      [15, false],
      [19, false],
      [20, true],
      [30, true],
      [31, false],
    ] as const)
      expect(bl.isBlacklisted(s), String(s)).toBe(want);
    expect(bl.intersecting(12, 21)).toEqual([
      { start: 10, end: 14 },
      { start: 20, end: 30 },
    ]);
    expect(bl.intersecting(15, 19)).toEqual([]);
    expect(bl.dropBefore(15)).toBe(1);
    expect(bl.drop(20, 30)).toBe(true);
    expect(bl.length).toBe(0);
    expect(bl.toText()).toBe('(none)');
  });

  it('is bounded: ERR_NO_SPACE when full', () => {
    const bl = new JournalSeqBlacklist();
    for (let i = 0; i < 64; i++) bl.add(i * 10 + 1, i * 10 + 5);
    expect(() => bl.add(10_000, 10_001)).toThrow(expect.objectContaining({ code: 'ERR_NO_SPACE' }));
    bl.add(2, 3); // inside an existing range: still fine
    expect(bl.length).toBe(64);
  });
});
