// SPDX-License-Identifier: GPL-2.0-only
/*
 * Random damage to a store's image: whatever the damage, opening and using
 * the store either works with every answer right, or fails with a
 * SixtreeError naming the damage. Never a wrong value, never a key that was
 * not written, never another exception, never a hang.
 *
 * A store (two btrees, 4 KiB nodes of 512-byte blocks: most leaves hold
 * several appended bsets) is built on a MemDevice; its image is then damaged
 * in one of the sectors that hold data (a flipped bit, random bytes, zeros)
 * and opened again (recovery), every key read (get), each btree scanned
 * (range), fsck() run, a write committed and read back, and the store closed.
 *
 * Every pointer records how far its node is written (bcachefs
 * btree_ptr_v2.sectors_written, src/btree/bkey.ts), once a flush covers the
 * write (engine.ts, pointer updates): a bset missing before that end is an
 * error. So after a clean close no damage loses keys silently. The image of
 * a crash keeps two losses allowed without an error:
 * - damage to a bset header's checked bytes makes that bset read as never
 *   written; when it is a node's last bset and written after its pointer's
 *   newest update was journaled, nothing says otherwise;
 * - the journal's newest entry (docs/format-journal.md, Recovery: a damaged
 *   entry after the newest good one is taken for the torn end of the
 *   journal): its commits, acknowledged or not, are lost with it.
 * Only then: every such answer is checked against those two causes, and a
 * value the key never had is always a failure.
 */
import { describe, expect, it } from 'vitest';
import { Prng } from '../bench/prng.js';
import { SixtreeError } from '../src/errors.js';
import { MemDevice } from '../src/io/mem-device.js';
import { pos, type Bpos } from '../src/index.js';
import { Store } from '../src/store.js';
import { BSET_MAGIC } from '../src/format/btree-node.js';

const SECTOR = 512;
/** Damaged images per case; SIXTREE_FUZZ_RUNS and SIXTREE_FUZZ_SEED widen a campaign by hand. */
const RUNS = Number(process.env['SIXTREE_FUZZ_RUNS'] ?? 120);
const SEED = Number(process.env['SIXTREE_FUZZ_SEED'] ?? 0);
const BTREES = [{ name: 'a' }, { name: 'b' }];
/** What damage may be reported as: the data is wrong (checksum, structure, superblock). */
const DAMAGE_CODES = new Set(['ERR_CHECKSUM', 'ERR_TOPOLOGY', 'ERR_BAD_MAGIC', 'ERR_VERSION']);

/** Per btree: each key's current value, and every value it ever had (stale answers are allowed only with a damaged bset header). */
interface Model {
  current: Map<string, Map<bigint, string>>;
  history: Map<string, Map<bigint, Set<string>>>;
}

function valueText(btree: string, k: bigint, gen: number): string {
  return `${btree}:${k.toString(16)}:${gen}:${'v'.repeat(Number(k % 37n))}`;
}

/**
 * The store: keys loaded in commits of 1..60 keys with flushes between
 * (appends), overwrites and deletes; closed cleanly (clean: true) or left
 * with its last commits in the journal only (the image of a crash right
 * after they were acknowledged).
 */
async function buildImage(seed: number, clean: boolean): Promise<{ image: Uint8Array; model: Model }> {
  const rng = new Prng(seed);
  const mem = MemDevice.create(4 << 20);
  await Store.formatDevice(mem, { btrees: BTREES, nodeSize: 4096, blockSize: 512, journalSize: 256 << 10 });
  const store = await Store.openDevice(mem, { cacheSize: 256 << 10 });
  const model: Model = { current: new Map(BTREES.map((b) => [b.name, new Map()])), history: new Map(BTREES.map((b) => [b.name, new Map()])) };
  let gen = 0;
  for (let round = 0; round < 60; round++) {
    gen++;
    const n = 1 + rng.int(60);
    const ops: Array<{ btree: string; k: bigint; v: string | undefined }> = [];
    const touched = new Set<string>();
    for (let i = 0; i < n; i++) {
      const btree = rng.int(3) === 0 ? 'b' : 'a';
      const k = BigInt(rng.int(3000));
      if (touched.has(`${btree}/${k}`)) continue;
      touched.add(`${btree}/${k}`);
      const del = model.current.get(btree)!.has(k) && rng.int(5) === 0;
      ops.push({ btree, k, v: del ? undefined : valueText(btree, k, gen) });
    }
    await store.transact((tx) => {
      for (const o of ops) {
        if (o.v === undefined) tx.del(o.btree, pos(0n, o.k));
        else tx.put(o.btree, pos(0n, o.k), new TextEncoder().encode(o.v));
      }
    });
    for (const o of ops) {
      if (o.v === undefined) {
        model.current.get(o.btree)!.delete(o.k);
        continue;
      }
      model.current.get(o.btree)!.set(o.k, o.v);
      const h = model.history.get(o.btree)!;
      if (!h.has(o.k)) h.set(o.k, new Set());
      h.get(o.k)!.add(o.v);
    }
    if (round % 7 === 6 && (clean || round < 50)) await store.flush();
  }
  if (clean) {
    await store.close();
    return { image: mem.image(), model };
  }
  const image = mem.image();
  await store.close();
  return { image, model };
}

/** Bytes [4, 48) of every bset header in the image (the magic's word is not what the header checksum covers, the rest is). */
function bsetHeaderRanges(image: Uint8Array): Array<[number, number]> {
  const dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const out: Array<[number, number]> = [];
  for (let off = 0; off + 48 <= image.length; off += 8) if (dv.getUint32(off + 4, true) === BSET_MAGIC) out.push([off, off + 48]);
  return out;
}

/** Bytes [off, off + bytes) of the journal entry with the highest seq ("sixtreeJ" at a 512-byte boundary). */
function newestJournalEntry(image: Uint8Array): [number, number] | undefined {
  const dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const magic = new TextEncoder().encode('sixtreeJ');
  let best: [number, number] | undefined;
  let bestSeq = -1;
  for (let off = 0; off + 64 <= image.length; off += SECTOR) {
    if (!magic.every((b, i) => image[off + i] === b)) continue;
    const seq = Number(dv.getBigUint64(off + 24, true));
    if (seq > bestSeq) {
      bestSeq = seq;
      best = [off, off + dv.getUint32(off + 12, true)];
    }
  }
  return best;
}

interface Damage {
  kind: 'bit' | 'random' | 'zero';
  sector: number;
  /** Byte offsets changed. */
  bytes: number[];
}

function damage(image: Uint8Array, rng: Prng, usedSectors: number[]): { img: Uint8Array; d: Damage } {
  const img = image.slice();
  const sector = usedSectors[rng.int(usedSectors.length)]!;
  const base = sector * SECTOR;
  const kinds = ['bit', 'random', 'zero'] as const;
  const kind = kinds[rng.int(3)]!;
  if (kind === 'bit') {
    const at = base + rng.int(SECTOR);
    img[at] = img[at]! ^ (1 << rng.int(8));
  } else {
    for (let i = 0; i < SECTOR; i++) img[base + i] = kind === 'zero' ? 0 : rng.int(256);
  }
  const bytes: number[] = [];
  for (let i = base; i < base + SECTOR; i++) if (img[i] !== image[i]) bytes.push(i);
  return { img, d: { kind, sector, bytes } };
}

interface Outcome {
  /** Codes of the SixtreeErrors met, by step. */
  errors: string[];
  /** Keys read as absent that the model has, or with a value they had before (a get or a scan). */
  stale: number;
  opened: boolean;
  fsckProblems?: number;
}

function expectDamageError(e: unknown, step: string, d: Damage): string {
  if (!(e instanceof SixtreeError)) throw new Error(`${step} after ${d.kind} damage of sector ${d.sector}: not a SixtreeError: ${e instanceof Error ? e.stack : String(e)}`);
  /* after a first damage error the store may refuse what needs the damaged part again, or be closed by it */
  if (!DAMAGE_CODES.has(e.code) && e.code !== 'ERR_CLOSED' && e.code !== 'ERR_READ_ONLY') throw new Error(`${step} after ${d.kind} damage of sector ${d.sector}: ${e.code}: ${e.message}`);
  return `${step}:${e.code}`;
}

async function useDamaged(img: Uint8Array, model: Model, d: Damage): Promise<Outcome> {
  const out: Outcome = { errors: [], stale: 0, opened: false };
  let store: Store;
  try {
    store = await Store.openDevice(MemDevice.fromImage(img), { cacheSize: 256 << 10 });
  } catch (e) {
    out.errors.push(expectDamageError(e, 'open', d));
    return out;
  }
  out.opened = true;
  const where = (what: string) => `${what} after ${d.kind} damage of sector ${d.sector} (bytes ${d.bytes.slice(0, 4).join(',')}${d.bytes.length > 4 ? ',...' : ''})`;
  for (const [btree, keys] of model.current) {
    const history = model.history.get(btree)!;
    /* a value this key never had is wrong whatever the damage; one it had before is stale */
    const judge = (what: string, k: bigint, text: string | undefined): void => {
      if (text === keys.get(k)) return;
      if (text === undefined || history.get(k)?.has(text)) {
        out.stale++;
        return;
      }
      throw new Error(`${where(`${what} ${btree} ${k}`)}: ${JSON.stringify(text)}, never written there (now ${JSON.stringify(keys.get(k))})`);
    };
    for (let k = 0n; k < 3000n; k++) {
      let got: Uint8Array | undefined;
      try {
        got = await store.get(btree, pos(0n, k));
      } catch (e) {
        out.errors.push(expectDamageError(e, 'get', d));
        continue;
      }
      judge('get', k, got === undefined ? undefined : new TextDecoder().decode(got));
    }
    try {
      let prev: Bpos | undefined;
      for await (const e of store.range(btree)) {
        judge('range', e.pos.offset, new TextDecoder().decode(e.value));
        if (prev !== undefined && prev.offset >= e.pos.offset) throw new Error(`${where(`range ${btree}`)}: ${e.pos.offset} after ${prev.offset}`);
        prev = e.pos;
      }
    } catch (e) {
      if (e instanceof Error && e.message.includes(' damage of sector ')) throw e;
      out.errors.push(expectDamageError(e, 'range', d));
    }
  }
  try {
    const problems = await store.fsck();
    /* what the reads ran into, fsck reports */
    if (out.errors.length > 0 && problems.length === 0) throw new Error(`${where('fsck')}: no problem found, reads met ${out.errors.join(' ')}`);
    out.fsckProblems = problems.length;
  } catch (e) {
    if (e instanceof Error && e.message.includes(' damage of sector ')) throw e;
    out.errors.push(expectDamageError(e, 'fsck', d));
  }
  try {
    const v = new TextEncoder().encode('after damage');
    await store.put('a', pos(1n, 0n), v);
    const back = await store.get('a', pos(1n, 0n));
    if (back === undefined || new TextDecoder().decode(back) !== 'after damage') throw new Error(`${where('a write')}: read back ${back}`);
  } catch (e) {
    if (e instanceof Error && e.message.includes(' damage of sector ')) throw e;
    out.errors.push(expectDamageError(e, 'write', d));
  }
  try {
    await store.close();
  } catch (e) {
    out.errors.push(expectDamageError(e, 'close', d));
  }
  return out;
}

describe.each([
  ['closed cleanly', true, 0x5eed01],
  ['with its last commits in the journal only', false, 0x5eed02],
])('a damaged store image, %s', (_name, clean, seed) => {
  it(`opens and answers right, or fails with a damage code; a key is absent or stale only where ${clean ? 'the newest journal entry' : 'a bset header or the newest journal entry'} was hit (${RUNS} damaged images)`, async () => {
    const { image, model } = await buildImage(seed, clean);
    const untouched = await useDamaged(image, model, { kind: 'bit', sector: -1, bytes: [] });
    expect(untouched).toEqual({ errors: [], stale: 0, opened: true, fsckProblems: 0 });

    const used: number[] = [];
    for (let s = 0; s < image.length / SECTOR; s++) if (image.subarray(s * SECTOR, (s + 1) * SECTOR).some((x) => x !== 0)) used.push(s);
    const headers = bsetHeaderRanges(image);
    const hitsHeader = (d: Damage) => d.bytes.some((b) => headers.some(([lo, hi]) => b >= lo && b < hi));
    const newest = newestJournalEntry(image)!;
    expect(newest).toBeDefined();
    const hitsNewestEntry = (d: Damage) => d.bytes.some((b) => b >= newest[0] && b < newest[1]);

    const rng = new Prng(seed + 1 + SEED);
    const tally = { runs: 0, noEffect: 0, refusedAtOpen: 0, errorsAfterOpen: 0, silentLossBset: 0, silentLossJournal: 0 };
    const codes = new Map<string, number>();
    for (let i = 0; i < RUNS; i++) {
      const { img, d } = damage(image, rng, used);
      if (d.bytes.length === 0) continue;
      tally.runs++;
      const o = await useDamaged(img, model, d);
      for (const c of new Set(o.errors)) codes.set(c, (codes.get(c) ?? 0) + 1);
      if (o.stale > 0) {
        if (clean && !hitsNewestEntry(d)) throw new Error(`${o.stale} answers absent or stale without an error after ${d.kind} damage of sector ${d.sector} of a cleanly closed store, whose pointers record how far every node is written${hitsHeader(d) ? ' (the sector holds bset header bytes)' : ''}`);
        if (hitsHeader(d)) tally.silentLossBset++;
        else if (hitsNewestEntry(d)) tally.silentLossJournal++;
        else throw new Error(`${o.stale} answers absent or stale without an error after ${d.kind} damage of sector ${d.sector}, which holds no bset header bytes and is not in the newest journal entry`);
      }
      if (!o.opened) tally.refusedAtOpen++;
      else if (o.errors.length) tally.errorsAfterOpen++;
      else if (o.stale === 0) tally.noEffect++;
    }
    /*
     * The damage generator reaches live data (many used sectors are not:
     * journal entries already in the nodes, buckets of freed nodes).
     */
    expect(tally.refusedAtOpen + tally.errorsAfterOpen).toBeGreaterThan(tally.runs / 10);
    console.log(`damaged image (${clean ? 'clean' : 'journal tail'}): ${JSON.stringify(tally)}, ${used.length} used sectors, ${headers.length} bset headers; errors (step:code: images) ${JSON.stringify(Object.fromEntries(codes))}`);
  });
});
