// SPDX-License-Identifier: GPL-2.0-only
/*
 * DelayDevice: operations wait before they reach the inner device and after
 * they complete, so they complete late and out of order; data, submit()'s
 * all-finished-then-first-failure rule, a flush that does not cover a write
 * still waiting, and close() waiting for what runs. Then a store on a real
 * file through it: concurrent writers and readers under a small cache (reads
 * that complete after other transactions changed the tree), every value
 * read back, fsck clean, and again after reopen.
 */
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BlockDevice } from '../../src/io/block-device.js';
import { DelayDevice } from '../../src/io/delay-device.js';
import { FaultDevice } from '../../src/io/fault-device.js';
import { MemDevice } from '../../src/io/mem-device.js';
import { Store, pos } from '../../src/index.js';
import { expectCode, freshDir, Rng } from './fixtures.js';

/** share 1, and every wait a timer of `ms` (the kind draw 0.9 is a timer; the length draw is ms / maxMs). */
function timerEach(ms: number, maxMs = 10): () => number {
  const frac = ms / maxMs;
  let i = 0;
  // per wait: the share draw (0: taken), the kind draw (0.9: timer), the length draw
  return () => [0, 0.9, frac][i++ % 3]!;
}

const sector = 512;

describe('DelayDevice', () => {
  it('reads return the inner data; with waits on, many reads at once complete out of their start order', async () => {
    const rng = new Rng(7);
    const img = rng.fill(new Uint8Array(64 * sector));
    const inner = MemDevice.fromImage(img, { alignBytes: sector });
    const r = new Rng(11);
    const dev = new DelayDevice(inner, { share: 1, maxMs: 3, random: () => r.u32() / 0x1_0000_0000 });
    const order: number[] = [];
    const bufs = Array.from({ length: 64 }, () => dev.allocBuffer(sector));
    await Promise.all(bufs.map((b, i) => dev.read(b, i * sector).then(() => order.push(i))));
    bufs.forEach((b, i) => expect(Buffer.compare(b, img.subarray(i * sector, (i + 1) * sector)), `block ${i}`).toBe(0));
    expect(order.slice().sort((a, b) => a - b)).toEqual(bufs.map((_, i) => i));
    let inversions = 0;
    for (let i = 1; i < order.length; i++) if (order[i]! < order[i - 1]!) inversions++;
    expect(inversions).toBeGreaterThan(5);
    const c = dev.counters;
    expect(c.ops).toBe(64);
    expect(c.hops + c.turns + c.timers).toBe(128); // share 1: both waits of every read
    expect(c.hops).toBeGreaterThan(0);
    expect(c.turns).toBeGreaterThan(0);
    expect(c.timers).toBeGreaterThan(0);
    expect(c.runningMax).toBe(64);
    expect(dev.runningNow).toBe(0);
    expect(dev.toText()).toMatch(/^DelayDevice over memory:\d+\n\s+waits:\s+share 1, timers up to 3 ms\n\s+ops:\s+64 \(running 0, at most 64\)\n\s+waited:\s+hops \d+, turns \d+, timers \d+\n\s+MemDevice/);
  });

  it('share 0 takes no waits and passes everything through', async () => {
    const inner = MemDevice.create(16 * sector, { alignBytes: sector });
    const dev = new DelayDevice(inner, { share: 0 });
    const b = dev.allocBuffer(sector);
    b.fill(9);
    await dev.write(b, 3 * sector);
    await dev.flush();
    const c = dev.allocBuffer(sector);
    dev.readSync(c, 3 * sector);
    expect(c[0]).toBe(9);
    expect(dev.counters).toMatchObject({ ops: 2, hops: 0, turns: 0, timers: 0 });
    expect(dev.stats).toBe(inner.stats);
    expect(dev.sizeBytes).toBe(inner.sizeBytes);
    expect(dev.alignBytes).toBe(sector);
    expect(dev.kind).toBe('memory');
  });

  it('a write waits before it reaches the device: a read meanwhile sees the old data, and a flush meanwhile does not cover it', async () => {
    const inner = MemDevice.create(16 * sector, { alignBytes: sector });
    const fault = await FaultDevice.wrap(inner);
    // the write: both waits 5 ms timers; the reads and the flush: no waits (share draw 0.99)
    const waits = timerEach(5);
    let next: () => number = waits;
    const dev = new DelayDevice(fault, { share: 0.5, maxMs: 10, random: () => next() });
    const b = dev.allocBuffer(sector);
    b.fill(0xab);
    const written = dev.write(b, 2 * sector);
    await new Promise((r) => setTimeout(r, 1));
    next = () => 0.99;
    const seen = dev.allocBuffer(sector);
    await dev.read(seen, 2 * sector);
    expect(seen[0]).toBe(0); // not on the device yet
    await dev.flush();
    expect(fault.durableImage()[2 * sector]).toBe(0); // the flush did not cover it
    next = waits;
    await written;
    next = () => 0.99;
    await dev.read(seen, 2 * sector);
    expect(seen[0]).toBe(0xab);
    await dev.flush();
    expect(fault.durableImage()[2 * sector]).toBe(0xab);
  });

  it('submit() resolves once every operation finished, and rejects with the first failure in array order after all of them finished', async () => {
    const inner = MemDevice.create(32 * sector, { alignBytes: sector });
    const fault = await FaultDevice.wrap(inner, { failWrite: (off) => off === 5 * sector || off === 9 * sector });
    const r = new Rng(3);
    const dev = new DelayDevice(fault, { share: 1, maxMs: 2, random: () => r.u32() / 0x1_0000_0000 });
    const ops = Array.from({ length: 12 }, (_, i) => {
      const buf = dev.allocBuffer(sector);
      buf.fill(i + 1);
      return { op: 'write' as const, buf, offsetBytes: i * sector };
    });
    let err: unknown;
    await dev.submit(ops).catch((e) => (err = e));
    expect(dev.runningNow).toBe(0); // all finished before the rejection
    expect(err).toMatchObject({ code: 'ERR_IO', details: expect.objectContaining({ offset: 5 * sector }) });
    // the others were written
    const c = dev.allocBuffer(sector);
    for (let i = 0; i < 12; i++) {
      await dev.read(c, i * sector);
      expect(c[0], `block ${i}`).toBe(i === 5 || i === 9 ? 0 : i + 1);
    }
    await expectCode(() => dev.submit([{ op: 'erase' as 'read', buf: c, offsetBytes: 0 }]), 'ERR_INVALID_ARG');
  });

  it('close() waits for the operations still running, then closes the inner device', async () => {
    const inner = MemDevice.create(16 * sector, { alignBytes: sector });
    const dev = new DelayDevice(inner, { share: 1, maxMs: 10, random: timerEach(8) });
    const b = dev.allocBuffer(sector);
    let done = false;
    void dev.read(b, 0).then(() => (done = true));
    await dev.close();
    expect(done).toBe(true);
    expect(inner.toText()).toMatch(/closed/);
  });

  it('refuses bad options with ERR_INVALID_ARG', async () => {
    const inner = MemDevice.create(16 * sector, { alignBytes: sector });
    await expectCode(() => new DelayDevice(inner, { share: 2 }), 'ERR_INVALID_ARG');
    await expectCode(() => new DelayDevice(inner, { maxMs: -1 }), 'ERR_INVALID_ARG');
    await expectCode(() => new DelayDevice(inner, { random: 3 as unknown as () => number }), 'ERR_INVALID_ARG');
    await expectCode(() => new DelayDevice(null as unknown as MemDevice), 'ERR_INVALID_ARG');
  });
});

describe('a store through DelayDevice on a file', () => {
  const tmp = freshDir('sixtree-delay-');
  afterAll(() => tmp.cleanup());

  it('concurrent writers and readers under a cache of a few nodes: every value reads back, fsck is clean, and again after reopen', async () => {
    const file = join(tmp.dir, 'store.img');
    await Store.format(file, { size: 32 << 20, nodeSize: 4096, btrees: [{ name: 'kv' }] });
    const r = new Rng(2026);
    const open = async (seed: number) => {
      const w = new Rng(seed);
      const dev = new DelayDevice(BlockDevice.open(file), { share: 0.6, maxMs: 1, random: () => w.u32() / 0x1_0000_0000 });
      return { dev, store: await Store.openDevice(dev, { cacheSize: 200 << 10 }) };
    };
    let { dev, store } = await open(1);
    const want = new Map<number, string>();
    const val = (k: number, round: number) => new TextEncoder().encode(`k${k}r${round}`.padEnd(40 + (k % 60), '.'));
    const dec = (v: Uint8Array | undefined) => (v === undefined ? undefined : new TextDecoder().decode(v).replace(/\.+$/, ''));
    const keys = 1600;
    for (let round = 0; round < 2; round++) {
      // writer w owns the keys k with k % 16 === w, so what it was told is what each key holds
      const writers = Array.from({ length: 16 }, async (_, w) => {
        for (let i = 0; i < 30; i++) {
          const batch = [...new Set(Array.from({ length: 1 + r.below(8) }, () => r.below(keys / 16) * 16 + w))];
          await store.transact(async (tx) => {
            for (const k of batch) tx.put('kv', pos(1, k), val(k, round));
          });
          for (const k of batch) want.set(k, `k${k}r${round}`);
          if (w % 4 === 0 && i % 10 === 0) for (const k of batch.slice(0, 2)) {
            await store.del('kv', pos(1, k));
            want.delete(k);
          }
        }
      });
      const readers = Array.from({ length: 8 }, async () => {
        for (let i = 0; i < 80; i++) {
          const k = r.below(keys);
          const v = dec(await store.get('kv', pos(1, k)));
          if (v !== undefined) expect(v).toMatch(new RegExp(`^k${k}r\\d$`));
        }
      });
      await Promise.all([...writers, ...readers]);
    }
    const check = async () => {
      // every key in one scan (a get per key waits for a device read per leaf, with waits)
      const got = new Map<number, string | undefined>();
      for await (const e of store.range('kv')) got.set(Number(e.pos.offset), dec(e.value));
      expect([...got.keys()].sort((a, b) => a - b)).toEqual([...want.keys()].sort((a, b) => a - b));
      for (const [k, v] of want) expect(got.get(k), `key ${k}`).toBe(v);
      // and a sample by get
      for (let k = 0; k < keys; k += 37) expect(dec(await store.get('kv', pos(1, k))), `key ${k}`).toBe(want.get(k));
      expect(await store.fsck()).toEqual([]);
    };
    await check();
    expect(dev.counters.timers + dev.counters.turns + dev.counters.hops).toBeGreaterThan(100);
    expect(store.stats().cache.evictions).toBeGreaterThan(0); // the tree does not fit: reads go on during the run
    await store.close();
    ({ dev, store } = await open(2));
    await check();
    await store.close();
  }, 120_000);
});
