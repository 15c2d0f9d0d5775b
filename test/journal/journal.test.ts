// SPDX-License-Identifier: GPL-2.0-only
import { describe, expect, it } from 'vitest';
import { SixtreeError } from '../../src/errors.js';
import { JSET_ENTRY, jsetEntryBytes } from '../../src/format/journal-format.js';
import { JOURNAL_BUFS_MAX, JournalPin, journalStartEmpty } from '../../src/journal/journal.js';
import { JournalRing } from '../../src/journal/reclaim.js';
import { Model, Prng, commit, makeEnv, openJournal, read, tick } from './helpers.js';

function isErr(e: unknown, code: string): boolean {
  return e instanceof SixtreeError && e.code === code;
}

describe('Journal: write and read back', () => {
  it('many entries with random payloads through wraparound read back exactly', async () => {
    const env = makeEnv({ journalBytes: 128 * 1024 });
    const j = openJournal(env);
    const rng = new Prng(1);
    const model = new Model();
    const pins: JournalPin[] = [];
    let offsetsWrapped = 0;
    let prevEnd = 0;
    for (let i = 0; i < 600; i++) {
      const seq = await commit(j, model, rng, {
        n: rng.range(1, 4),
        maxBytes: 2500,
        beforeRelease: (res) => pins.push(j.pinAdd(res.seq)),
      });
      await j.waitDurable(seq);
      // keep the last 6 commits pinned (dirty nodes), drop older ones
      while (pins.length > 6) j.pinDrop(pins.shift()!);
      if (j.writeOffsetBytes < prevEnd) offsetsWrapped++;
      prevEnd = j.writeOffsetBytes;
      if (i % 37 === 0 || i === 599) {
        const r = await read(env);
        expect(r.newestSeq).toBe(seq);
        expect(r.lastSeq).toBeLessThanOrEqual(pins[0]!.seq);
        expect(r.entries.map((e) => e.seq)).toEqual(Array.from({ length: r.newestSeq - r.lastSeq + 1 }, (_, k) => r.lastSeq + k));
        for (const e of r.entries) expect(model.check(e)).toBeNull();
        expect(r.roots.map((x) => [x.btreeId, Buffer.from(x.ptr).toString('hex')])).toEqual(env.roots.map((x) => [x.btreeId, Buffer.from(x.ptr).toString('hex')]));
      }
    }
    expect(offsetsWrapped).toBeGreaterThan(3);
    expect(j.counters.entriesWritten).toBe(600);
    expect(j.counters.flushes).toBe(600);
    expect(j.counters.bytesWritten).toBeGreaterThan(5 * env.layout.journalBytes);
    // the writer never overlapped a live entry (it would have failed the journal)
    expect(j.failed).toBeNull();
    await j.close();
    expect(env.dev.buffersOutstanding).toBe(0);
  });

  it('roots come from getRoots() at write time and supersede an explicit btree_root in the entry', async () => {
    const env = makeEnv();
    const j = openJournal(env);
    const res = await j.reserve(jsetEntryBytes(16) + jsetEntryBytes(4));
    res.add('btree_root', 1, 3, new Uint8Array(16).fill(0xee));
    res.add('btree_keys', 0, 0, Uint8Array.of(1, 2, 3, 4));
    env.roots[1] = { btreeId: 1, level: 2, ptr: new Uint8Array(20).fill(0xab) };
    j.release(res);
    await j.waitDurable(res.seq);
    const r = await read(env);
    expect(r.roots.find((x) => x.btreeId === 1)).toEqual({ btreeId: 1, level: 2, ptr: new Uint8Array(20).fill(0xab) });
    expect(r.entries[0]!.entries.filter((s) => s.type === JSET_ENTRY.btree_root).length).toBe(3);
  });

  it('a transaction\'s keys stay in one entry and in add order, interleaved commits included', async () => {
    const env = makeEnv({ latencyMs: 1 });
    const j = openJournal(env);
    const model = new Model();
    const rng = new Prng(5);
    const first = await j.reserve(0); // hold everything from the first entry on
    j.pinAdd(first.seq);
    j.release(first);
    const seqs = await Promise.all(
      Array.from({ length: 40 }, async (_, i) => {
        await tick(rng.int(3));
        const res = await j.reserve(3 * jsetEntryBytes(8));
        for (let k = 0; k < 3; k++) {
          const p = new Uint8Array(8);
          new DataView(p.buffer).setUint32(0, i);
          new DataView(p.buffer).setUint32(4, k);
          res.add('btree_keys', 0, 0, p);
          model.record(res.seq, p);
          await tick(); // other transactions add in between
        }
        j.release(res);
        await j.waitDurable(res.seq);
        return res.seq;
      }),
    );
    const r = await read(env);
    for (const e of r.entries) expect(model.check(e)).toBeNull();
    // every transaction's three keys are in the entry of its seq
    for (let i = 0; i < 40; i++) {
      const e = r.entries.find((x) => x.seq === seqs[i])!;
      const mine = e.entries.filter((s) => s.type === JSET_ENTRY.btree_keys && new DataView(s.payload.buffer, s.payload.byteOffset).getUint32(0) === i);
      expect(mine.map((s) => new DataView(s.payload.buffer, s.payload.byteOffset).getUint32(4))).toEqual([0, 1, 2]);
    }
  });
});

describe('Journal: group commit', () => {
  it('64 concurrent commits share writes; each waitDurable resolves only after a flush covering it', async () => {
    const env = makeEnv({ latencyMs: 2 });
    const j = openJournal(env);
    const rng = new Prng(64);
    const model = new Model();
    const violations: string[] = [];
    const first = await j.reserve(0); // keep every entry readable
    j.pinAdd(first.seq);
    j.release(first);
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        await tick(rng.int(6));
        const seq = await commit(j, model, rng, { n: 1, maxBytes: 200 });
        await j.waitDurable(seq);
        // At this point the entry must be in the durable image (what survives power loss).
        const r = await read(env, env.dev.durable.slice());
        const e = r.entries.find((x) => x.seq === seq);
        if (!e) violations.push(`seq ${seq} acknowledged but not in the durable image (newest ${r.newestSeq})`);
        else if (model.check(e)) violations.push(model.check(e)!);
      }),
    );
    expect(violations).toEqual([]);
    expect(j.counters.commits).toBe(65); // 64 + the pinning one
    expect(j.counters.entriesWritten).toBeLessThan(64);
    expect(j.counters.commitsPerWrite.slice(1).reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    // Journal writes and flushes alternate: never two journal writes without a flush between.
    const jstart = env.layout.journalOffsetBytes;
    const jend = jstart + env.layout.journalBytes;
    let unflushed = 0;
    for (const op of env.dev.log) {
      if (op.op === 'write' && op.offsetBytes >= jstart && op.offsetBytes < jend) {
        expect(unflushed).toBe(0);
        unflushed++;
      } else if (op.op === 'flush') unflushed = 0;
    }
  });

  it('a commit that keeps its reservation open does not starve the others\' writes', async () => {
    const env = makeEnv({ latencyMs: 1 });
    const j = openJournal(env);
    const slow = await j.reserve(64);
    const model = new Model();
    const rng = new Prng(2);
    const seq = await commit(j, model, rng, { n: 1, maxBytes: 10 });
    expect(seq).toBe(slow.seq); // same open entry
    const done = j.waitDurable(seq);
    let resolved = false;
    void done.then(() => (resolved = true));
    await tick(10);
    expect(resolved).toBe(false); // its entry waits for the slow reservation
    // but new commits go to the next entry once the entry is sealed, and are written after it
    const seq2 = await commit(j, model, rng, { n: 1, maxBytes: 10 });
    expect(seq2).toBe(seq + 1);
    j.release(slow);
    await done;
    await j.waitDurable(seq2);
  });

  it('writeDelayMs holds the entry so more commits join', async () => {
    const env = makeEnv({ latencyMs: 0 });
    const j = openJournal(env, { writeDelayMs: 5 });
    const model = new Model();
    const rng = new Prng(3);
    await Promise.all(
      Array.from({ length: 10 }, async (_, i) => {
        await tick(i % 3);
        const s = await commit(j, model, rng, { n: 1, maxBytes: 50 });
        await j.waitDurable(s);
      }),
    );
    expect(j.counters.entriesWritten).toBeLessThanOrEqual(3);
  });
});

describe('Journal: reservations', () => {
  it('a reservation larger than an entry can hold: ERR_INVALID_ARG naming the limit', async () => {
    const env = makeEnv({ journalBytes: 128 * 1024 });
    const j = openJournal(env);
    await expect(j.reserve(j.maxReservationBytes + 1)).rejects.toSatisfy((e: unknown) => isErr(e, 'ERR_INVALID_ARG') && String((e as Error).message).includes(String(j.maxReservationBytes)));
    const r = await j.reserve(j.maxReservationBytes); // the largest fits
    r.add('btree_keys', 0, 0, new Uint8Array(j.maxReservationBytes - 8));
    j.release(r);
    await j.waitDurable(r.seq);
    const back = await read(env);
    expect(back.entries.at(-1)!.entries[0]!.payload.length).toBe(j.maxReservationBytes - 8);
  });

  it('add() past the reservation or after release throws', async () => {
    const env = makeEnv();
    const j = openJournal(env);
    const r = await j.reserve(jsetEntryBytes(8));
    expect(() => r.add('btree_keys', 0, 0, new Uint8Array(9))).toThrow(/left of the reservation/);
    r.add('btree_keys', 0, 0, new Uint8Array(8));
    j.release(r);
    expect(() => r.add('btree_keys', 0, 0, new Uint8Array(1))).toThrow(/after release/);
    expect(() => j.release(r)).toThrow(/twice/);
  });

  it('unused reserved bytes are not written: the entry is as small as what was added', async () => {
    const env = makeEnv({ journalBytes: 128 * 1024 });
    const j = openJournal(env);
    const a = await j.reserve(j.maxReservationBytes);
    a.add('btree_keys', 0, 0, new Uint8Array(8));
    j.release(a); // written (no write in flight)
    await j.waitDurable(a.seq);
    expect((await read(env)).entries.at(-1)!.sizeBytes).toBe(4096);
  });
});

describe('Journal: pins', () => {
  it('pins hold last_seq; dropping them lets the next entry record a newer one', async () => {
    const env = makeEnv();
    const j = openJournal(env);
    const rng = new Prng(9);
    const model = new Model();
    let pinA: JournalPin | null = null;
    const s1 = await commit(j, model, rng, { beforeRelease: (res) => (pinA = j.pinAdd(res.seq)) });
    await j.waitDurable(s1);
    for (let i = 0; i < 5; i++) await j.waitDurable(await commit(j, model, rng));
    let r = await read(env);
    expect(r.lastSeq).toBe(s1);
    expect(r.entries.length).toBe(6);
    expect(j.stats().lastSeq).toBe(s1);
    // pinUpdate moves it forward, never back
    j.pinUpdate(pinA!, s1 + 3);
    expect(pinA!.seq).toBe(s1 + 3);
    j.pinUpdate(pinA!, s1 + 1);
    expect(pinA!.seq).toBe(s1 + 3);
    // pinAdd keeps the older
    j.pinAdd(s1 + 5, pinA!);
    expect(pinA!.seq).toBe(s1 + 3);
    const copy = j.pinCopy(pinA!);
    j.pinDrop(pinA!);
    await j.flush(); // nothing new, but pins moved: an empty entry records last_seq
    r = await read(env);
    expect(r.lastSeq).toBe(s1 + 3);
    j.pinDrop(copy);
    await j.flush();
    r = await read(env);
    expect(r.lastSeq).toBe(r.newestSeq);
    expect(r.entries.length).toBe(1);
    const written = j.counters.entriesWritten;
    await j.flush(); // nothing new and nothing to advance: no write
    expect(j.counters.entriesWritten).toBe(written);
  });

  it('pinning a reclaimed seq is refused', async () => {
    const env = makeEnv();
    const j = openJournal(env);
    const rng = new Prng(1);
    const model = new Model();
    for (let i = 0; i < 3; i++) await j.waitDurable(await commit(j, model, rng));
    expect(() => j.pinAdd(1)).toThrow(/reclaimed/);
    expect(() => j.pinAdd(99)).toThrow(/newer than/);
  });
});

describe('Journal: ring full and reclaim', () => {
  it('waits for onReclaimNeeded, which drops pins, and proceeds', async () => {
    const env = makeEnv({ journalBytes: 64 * 1024 });
    const pins: JournalPin[] = [];
    const targets: number[] = [];
    const j = openJournal(env, {
      reclaimThreshold: 1, // no background calls: only urgent ones
      onReclaimNeeded: async (target) => {
        targets.push(target);
        await tick(1); // "write the dirty nodes"
        let dropped = false;
        while (pins.length && pins[0]!.seq < target) {
          j.pinDrop(pins.shift()!);
          dropped = true;
        }
        return dropped;
      },
    });
    const rng = new Prng(11);
    const model = new Model();
    for (let i = 0; i < 200; i++) {
      const s = await commit(j, model, rng, { n: 2, maxBytes: 1500, beforeRelease: (res) => pins.push(j.pinAdd(res.seq)) });
      await j.waitDurable(s);
    }
    expect(j.counters.reclaimWaits).toBeGreaterThan(0);
    expect(j.counters.reclaimCalls).toBe(targets.length);
    expect(targets.length).toBeGreaterThan(0);
    expect(j.counters.noSpace).toBe(0);
    const r = await read(env);
    expect(r.newestSeq).toBe(j.durableSeq);
    expect(r.lastSeq).toBeLessThanOrEqual(pins[0]!.seq);
    for (const e of r.entries) expect(model.check(e)).toBeNull();
  });

  it('background reclaim is asked once the ring passes reclaimThreshold', async () => {
    const env = makeEnv({ journalBytes: 64 * 1024 });
    const calls: boolean[] = [];
    const pins: JournalPin[] = [];
    const j = openJournal(env, {
      reclaimThreshold: 0.5,
      onReclaimNeeded: (target, info) => {
        calls.push(info.urgent);
        while (pins.length && pins[0]!.seq < target) j.pinDrop(pins.shift()!);
        return true;
      },
    });
    const rng = new Prng(12);
    const model = new Model();
    for (let i = 0; i < 60; i++) await j.waitDurable(await commit(j, model, rng, { n: 1, maxBytes: 3000, beforeRelease: (res) => pins.push(j.pinAdd(res.seq)) }));
    expect(calls.filter((u) => !u).length).toBeGreaterThan(0);
    expect(j.counters.reclaimBackgroundCalls).toBeGreaterThan(0);
  });

  it('nothing reclaimable: ERR_NO_SPACE naming the pinned seq', async () => {
    const env = makeEnv({ journalBytes: 64 * 1024 });
    let asked = 0;
    const j = openJournal(env, {
      reclaimThreshold: 1,
      onReclaimNeeded: () => {
        asked++;
        return false;
      },
    });
    const rng = new Prng(13);
    const model = new Model();
    const s1 = await commit(j, model, rng, { beforeRelease: (res) => j.pinAdd(res.seq) });
    let err: unknown = null;
    for (let i = 0; i < 100 && !err; i++) {
      try {
        await j.waitDurable(await commit(j, model, rng, { n: 2, maxBytes: 2000 }));
      } catch (e) {
        err = e;
      }
    }
    expect(isErr(err, 'ERR_NO_SPACE')).toBe(true);
    expect(String((err as Error).message)).toContain(`oldest pinned seq ${s1}`);
    expect(asked).toBeGreaterThan(0);
    expect(j.counters.noSpace).toBe(1);
    // everything acknowledged before is still readable
    const r = await read(env);
    expect(r.lastSeq).toBe(s1);
    for (const e of r.entries) expect(model.check(e)).toBeNull();
  });

  it('no callback at all: ERR_NO_SPACE once full', async () => {
    const env = makeEnv({ journalBytes: 64 * 1024 });
    const j = openJournal(env);
    const rng = new Prng(14);
    const model = new Model();
    await commit(j, model, rng, { beforeRelease: (res) => j.pinAdd(res.seq) });
    await expect(
      (async () => {
        for (let i = 0; i < 100; i++) await j.waitDurable(await commit(j, model, rng, { n: 2, maxBytes: 2000 }));
      })(),
    ).rejects.toSatisfy((e: unknown) => isErr(e, 'ERR_NO_SPACE'));
  });

  it('the interior share: ordinary commits that filled the ring leave room for an interior-update entry', async () => {
    const env = makeEnv({ journalBytes: 128 * 1024 });
    const j = openJournal(env);
    const rng = new Prng(16);
    const model = new Model();
    const s1 = await commit(j, model, rng, { beforeRelease: (res) => j.pinAdd(res.seq) });
    let err: unknown = null;
    for (let i = 0; i < 200 && !err; i++) {
      try {
        await j.waitDurable(await commit(j, model, rng, { n: 2, maxBytes: 2000 }));
      } catch (e) {
        err = e;
      }
    }
    expect(isErr(err, 'ERR_NO_SPACE')).toBe(true);
    const free = j.stats().bytesTotal - j.stats().bytesUsed;
    expect(free, 'normal commits stop short of the interior share').toBeGreaterThanOrEqual(j.interiorShareBytes);
    // an interior update's pointer keys still get in, and read back
    const payload = rng.bytes(600);
    const res = await j.reserve(jsetEntryBytes(payload.length), 'interior');
    res.add('btree_keys', 0, 1, payload);
    model.record(res.seq, payload);
    j.release(res);
    await j.waitDurable(res.seq);
    // and ordinary commits still do not
    await expect(j.reserve(jsetEntryBytes(100))).rejects.toSatisfy((e: unknown) => isErr(e, 'ERR_NO_SPACE'));
    const r = await read(env);
    expect(r.lastSeq).toBe(s1);
    expect(r.newestSeq).toBe(res.seq);
    for (const e of r.entries) expect(model.check(e)).toBeNull();
  });

  it('a callback that claims progress but never drops a pin times out with ERR_NO_SPACE', async () => {
    const env = makeEnv({ journalBytes: 64 * 1024 });
    const j = openJournal(env, { reclaimThreshold: 1, reclaimWaitMs: 150, onReclaimNeeded: () => true });
    const rng = new Prng(15);
    const model = new Model();
    await commit(j, model, rng, { beforeRelease: (res) => j.pinAdd(res.seq) });
    const t0 = performance.now();
    await expect(
      (async () => {
        for (let i = 0; i < 100; i++) await j.waitDurable(await commit(j, model, rng, { n: 2, maxBytes: 2000 }));
      })(),
    ).rejects.toSatisfy((e: unknown) => isErr(e, 'ERR_NO_SPACE') && /waited 150 ms/.test((e as Error).message));
    expect(performance.now() - t0).toBeLessThan(5000);
  });

  it(`at most ${JOURNAL_BUFS_MAX} entries are in memory: reserve waits for a write`, async () => {
    const env = makeEnv({ latencyMs: 3 });
    const j = openJournal(env);
    const held = [];
    // each reservation fills an entry on its own; keep them open so none can be written
    for (let i = 0; i < JOURNAL_BUFS_MAX; i++) held.push(await j.reserve(j.maxReservationBytes));
    let fifth = false;
    const p = j.reserve(64).then((r) => {
      fifth = true;
      return r;
    });
    await tick(10);
    expect(fifth).toBe(false);
    for (const r of held) j.release(r);
    const r5 = await p;
    expect(fifth).toBe(true);
    expect(j.counters.reservationWaits).toBe(1);
    j.release(r5);
    await j.flush();
  });
});

describe('Journal: flush, close, errors', () => {
  it('flush() makes everything reserved durable; close() refuses later use', async () => {
    const env = makeEnv({ latencyMs: 1 });
    const j = openJournal(env);
    const rng = new Prng(21);
    const model = new Model();
    const seqs = await Promise.all(Array.from({ length: 5 }, () => commit(j, model, rng)));
    await j.flush();
    expect(j.durableSeq).toBe(Math.max(...seqs));
    const st = await j.close();
    expect(st.seq).toBe(j.durableSeq);
    expect(st.writeOffsetBytes).toBe(j.writeOffsetBytes);
    await expect(j.reserve(8)).rejects.toSatisfy((e: unknown) => isErr(e, 'ERR_CLOSED'));
    expect(() => j.tryReserve(8)).toThrow(expect.objectContaining({ code: 'ERR_CLOSED' }));
  });

  it('a failed write stops the journal: waiters and later calls get ERR_IO', async () => {
    const env = makeEnv();
    const j = openJournal(env);
    const rng = new Prng(22);
    const model = new Model();
    await j.waitDurable(await commit(j, model, rng));
    env.dev.failWrite = () => true;
    const s = await commit(j, model, rng);
    await expect(j.waitDurable(s)).rejects.toSatisfy((e: unknown) => isErr(e, 'ERR_IO') && /EIO/.test((e as Error).message));
    await expect(j.reserve(8)).rejects.toSatisfy((e: unknown) => isErr(e, 'ERR_IO'));
    expect(j.counters.writeErrors).toBe(1);
    expect(j.toText()).toContain('error');
  });

  it('starts at a given seq and offset (clean start) and counts stats', async () => {
    const env = makeEnv();
    const j = openJournal(env, { start: journalStartEmpty(500, 8192 * 3) });
    const rng = new Prng(23);
    const model = new Model();
    const s = await commit(j, model, rng);
    expect(s).toBe(500);
    await j.waitDurable(s);
    const r = await read(env);
    expect(r.entries[0]!.offsetBytes).toBe(8192 * 3);
    expect(j.stats()).toEqual({ seq: 500, lastSeq: 500, bytesUsed: r.entries[0]!.sizeBytes, bytesTotal: env.layout.journalBytes });
    const t = j.toText();
    for (const w of ['seq:', 'last_seq:', 'entries written:', 'commits:', 'waits:']) expect(t).toContain(w);
  });
});

describe('JournalRing.overlapsLive', () => {
  it('finds exactly the entries a walk of every live entry finds, wrapped or not', () => {
    const rng = new Prng(77);
    for (let round = 0; round < 300; round++) {
      const journalBytes = 4096 * (16 + rng.int(200));
      // place entries one after another, wrapping to 0 when one does not fit, dropping the oldest as needed
      const entries: { seq: number; offsetBytes: number; sizeBytes: number }[] = [];
      let head = 0;
      let seq = 1;
      const n = 1 + rng.int(120);
      for (let i = 0; i < n; i++) {
        const size = 4096 * (1 + rng.int(6));
        let off = head;
        if (off + size > journalBytes) off = 0;
        // free what the new entry would overwrite (always the oldest first)
        while (entries.length && entries.some((e) => off < e.offsetBytes + e.sizeBytes && e.offsetBytes < off + size)) entries.shift();
        entries.push({ seq: seq++, offsetBytes: off, sizeBytes: size });
        head = off + size;
      }
      const ring = new JournalRing(journalBytes, head, entries);
      for (let q = 0; q < 40; q++) {
        const off = 4096 * rng.int(journalBytes / 4096);
        const size = 4096 * (1 + rng.int(8));
        const walk = entries.find((e) => off < e.offsetBytes + e.sizeBytes && e.offsetBytes < off + size) ?? null;
        const got = ring.overlapsLive(off, size);
        // both report an overlapping entry or both none (the one reported may differ when several overlap)
        expect(got === null, `round ${round} query ${off}+${size}`).toBe(walk === null);
        if (got) expect(off < got.offsetBytes + got.sizeBytes && got.offsetBytes < off + size).toBe(true);
      }
    }
  });
});
