// SPDX-License-Identifier: GPL-2.0-only
import { describe, expect, it } from 'vitest';
import { SixtreeError } from '../../src/errors.js';
import { JSET_HEADER_BYTES } from '../../src/format/journal-format.js';
import { JournalSeqBlacklist } from '../../src/journal/blacklist.js';
import type { Journal } from '../../src/journal/journal.js';
import { journalReadToText, readJournal } from '../../src/journal/read.js';
import { Model, Prng, UUID, commit, makeEnv, openJournal, read, type Env } from './helpers.js';

/** n entries, all pinned from the first (so the newest's window covers them all). */
async function writeEntries(env: Env, n: number, seed = 1): Promise<{ j: Journal; model: Model }> {
  const j = openJournal(env);
  const rng = new Prng(seed);
  const model = new Model();
  for (let i = 0; i < n; i++) {
    const s = await commit(j, model, rng, { n: rng.range(1, 3), maxBytes: 3000, beforeRelease: (res) => i === 0 && j.pinAdd(res.seq) });
    await j.waitDurable(s);
  }
  return { j, model };
}

async function code(p: Promise<unknown>): Promise<SixtreeError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof SixtreeError) return e;
    throw e;
  }
  throw new Error('resolved');
}

describe('readJournal()', () => {
  it('an empty journal (fresh store) is fine', async () => {
    const env = makeEnv();
    const r = await read(env);
    expect(r).toMatchObject({ entries: [], newestSeq: 0, lastSeq: 0, roots: [], nextWriteOffsetBytes: 0 });
    expect(journalReadToText(r)).toContain('empty');
  });

  it('reads with few large reads (one per chunk, plus the window)', async () => {
    const env = makeEnv({ journalBytes: 256 * 1024 });
    await writeEntries(env, 10);
    const r = await read(env);
    expect(r.entries.length).toBe(10);
    // 64 KiB chunks over 256 KiB + straddling entries + window runs
    expect(r.scan.reads).toBeLessThanOrEqual(4 + 4 + 4);
    expect(r.scan.validEntries).toBe(10);
  });

  it('ignores entries of another store (uuid) left in the area', async () => {
    const env = makeEnv();
    await writeEntries(env, 5);
    expect((await read(env)).entries.length).toBe(5);
    // the same bytes seen by a store with another uuid (formatted over this one): no entries
    const r = await readJournal(env.dev, env.layout, { uuid: UUID.map((b) => b ^ 1) });
    expect(r.newestSeq).toBe(0);
  });

  it('a torn tail entry is the end of the journal', async () => {
    const env = makeEnv();
    const { model } = await writeEntries(env, 8);
    const before = await read(env);
    const last = before.entries.at(-1)!;
    // tear it: the second half of its blocks never landed (or a bit flipped in its payload)
    const at = env.layout.journalOffsetBytes + last.offsetBytes + JSET_HEADER_BYTES + 8;
    env.dev.img[at] ^= 0xff;
    const r = await read(env);
    expect(r.newestSeq).toBe(last.seq - 1);
    expect(r.entries.map((e) => e.seq)).toEqual(before.entries.slice(0, -1).map((e) => e.seq));
    for (const e of r.entries) expect(model.check(e)).toBeNull();
    expect(r.nextWriteOffsetBytes).toBe(last.offsetBytes);
    expect(r.scan.badChecksums).toBe(1);
  });

  it('a corrupt entry inside the window: ERR_CHECKSUM with its byte offset', async () => {
    const env = makeEnv();
    await writeEntries(env, 8);
    const before = await read(env);
    const victim = before.entries[3]!;
    const devOff = env.layout.journalOffsetBytes + victim.offsetBytes;
    env.dev.img[devOff + JSET_HEADER_BYTES + 3] ^= 0x10;
    const e = await code(read(env));
    expect(e.code).toBe('ERR_CHECKSUM');
    expect(e.details.offset).toBe(devOff);
    expect(e.message).toContain(String(devOff));
    expect(e.message).toContain(`seq ${victim.seq}`);
    expect(e.message).toContain('checksum mismatch');
  });

  it('a missing (zeroed) entry inside the window: ERR_CHECKSUM where it should be', async () => {
    const env = makeEnv();
    await writeEntries(env, 8);
    const before = await read(env);
    const victim = before.entries[5]!;
    const devOff = env.layout.journalOffsetBytes + victim.offsetBytes;
    env.dev.img.fill(0, devOff, devOff + victim.sizeBytes);
    const e = await code(read(env));
    expect(e.code).toBe('ERR_CHECKSUM');
    expect(e.details.offset).toBe(devOff);
    expect(e.message).toContain(`journal entry seq ${victim.seq} is missing`);
  });

  it('entries before the window may be corrupt: they are not needed', async () => {
    const env = makeEnv();
    const j = openJournal(env);
    const rng = new Prng(3);
    const model = new Model();
    for (let i = 0; i < 6; i++) await j.waitDurable(await commit(j, model, rng));
    const full = await read(env);
    expect(full.entries.length).toBe(1); // nothing pinned: the newest needs only itself
    // corrupt an older entry still in the area
    env.dev.img[env.layout.journalOffsetBytes + JSET_HEADER_BYTES + 1] ^= 1;
    const r = await read(env);
    expect(r.newestSeq).toBe(full.newestSeq);
  });

  it('a header claiming an impossible length is skipped block by block', async () => {
    const env = makeEnv();
    await writeEntries(env, 3);
    const r0 = await read(env);
    const tail = env.layout.journalOffsetBytes + r0.nextWriteOffsetBytes;
    // copy a valid header to the tail and give it a huge length: not an entry
    env.dev.img.copyWithin(tail, env.layout.journalOffsetBytes, env.layout.journalOffsetBytes + JSET_HEADER_BYTES);
    new DataView(env.dev.img.buffer).setUint32(tail + 12, 1 << 30, true);
    const r = await read(env);
    expect(r.newestSeq).toBe(r0.newestSeq);
    expect(r.scan.badHeaders).toBe(1);
  });

  it('blacklisted entries are ignored and blacklisted gaps in the window are accepted', async () => {
    const env = makeEnv();
    await writeEntries(env, 8);
    const before = await read(env);
    // blacklist the newest: it is ignored, the one before becomes the newest
    const bl = new JournalSeqBlacklist([{ start: before.newestSeq, end: before.newestSeq }]);
    const r = await read(env, undefined, bl);
    expect(r.newestSeq).toBe(before.newestSeq - 1);
    // a zeroed entry in the window is fine if its seq is blacklisted
    const victim = before.entries[2]!;
    const devOff = env.layout.journalOffsetBytes + victim.offsetBytes;
    env.dev.img.fill(0, devOff, devOff + victim.sizeBytes);
    await expect(read(env, undefined, new JournalSeqBlacklist())).rejects.toThrow(/missing/);
    const r2 = await read(env, undefined, new JournalSeqBlacklist([{ start: victim.seq, end: victim.seq }]));
    expect(r2.entries.map((e) => e.seq)).not.toContain(victim.seq);
    expect(r2.entries.length).toBe(7);
  });

  it('an entry of a newer journal version: ERR_VERSION', async () => {
    const env = makeEnv();
    await writeEntries(env, 2);
    const r0 = await read(env);
    const off = env.layout.journalOffsetBytes + r0.entries.at(-1)!.offsetBytes;
    new DataView(env.dev.img.buffer).setUint32(off + 8, 2, true);
    const e = await code(read(env));
    expect(e.code).toBe('ERR_VERSION');
    expect(e.message).toContain(String(off));
  });

  it('works with a 512-byte block size and a 4 KiB-aligned device', async () => {
    const env = makeEnv({ blockBytes: 512 });
    const { model } = await writeEntries(env, 30, 4);
    const r = await read(env);
    expect(r.entries.length).toBe(30);
    for (const e of r.entries) {
      expect(e.offsetBytes % 512).toBe(0);
      expect(model.check(e)).toBeNull();
    }
  });
});
