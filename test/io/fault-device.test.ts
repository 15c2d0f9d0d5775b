// SPDX-License-Identifier: GPL-2.0-only
/*
 * FaultDevice: durable image, pending writes, crash images (subsets, torn
 * writes) checked byte for byte against an independent model, and injected
 * EIO on reads, writes, flushes and inside submit().
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BlockDevice } from '../../src/io/block-device.js';
import type { Device } from '../../src/io/device.js';
import { FaultDevice } from '../../src/io/fault-device.js';
import { MemDevice } from '../../src/io/mem-device.js';
import { expectCode, freshDir, IO_BACKENDS, Rng } from './fixtures.js';

interface W {
  off: number;
  data: Uint8Array;
}

/** The model: apply writes to a copy of base, in order; torn keeps a prefix of one. */
function apply(base: Uint8Array, writes: W[], chosen: (i: number) => boolean, torn?: { index: number; keepBytes: number }): Uint8Array {
  const img = base.slice();
  writes.forEach((w, i) => {
    if (torn && torn.index === i) {
      for (let k = 0; k < torn.keepBytes; k++) img[w.off + k] = w.data[k]!;
    } else if (chosen(i)) {
      for (let k = 0; k < w.data.length; k++) img[w.off + k] = w.data[k]!;
    }
  });
  return img;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

describe.each(IO_BACKENDS)('FaultDevice (io: %s)', (io) => {
  const sizeBytes = 64 * 1024;

  async function setup(): Promise<{ inner: MemDevice; fd: FaultDevice; initial: Uint8Array; rng: Rng }> {
    const rng = new Rng(42);
    const initial = rng.fill(new Uint8Array(sizeBytes));
    const inner = MemDevice.fromImage(initial, { io, alignBytes: 512 });
    const fd = await FaultDevice.wrap(inner);
    return { inner, fd, initial, rng };
  }

  /** Writes ws through fd with a mix of write(), writeSync() and submit(); returns them in recording order. */
  async function writeAll(fd: Device, ws: W[]): Promise<void> {
    for (let i = 0; i < ws.length; ) {
      const w = ws[i]!;
      const buf = fd.allocBuffer(w.data.length);
      buf.set(w.data);
      if (i % 3 === 0) {
        await fd.write(buf, w.off);
        i++;
      } else if (i % 3 === 1) {
        fd.writeSync(buf, w.off);
        i++;
      } else {
        const next = ws.slice(i, i + 2);
        const bufs = next.map((x) => {
          const b = fd.allocBuffer(x.data.length);
          b.set(x.data);
          return b;
        });
        await fd.submit(next.map((x, k) => ({ op: 'write' as const, buf: bufs[k]!, offsetBytes: x.off })));
        bufs.forEach((b) => fd.freeBuffer(b));
        i += next.length;
      }
      fd.freeBuffer(buf);
    }
  }

  it('starts with the inner contents as its durable image', async () => {
    const { fd, initial } = await setup();
    expect(same(fd.durableImage(), initial)).toBe(true);
    expect(fd.pendingWrites).toBe(0);
    expect(same(fd.crashImage(), initial)).toBe(true);
  });

  it('builds byte-exact crash images from any subset of the unflushed writes, in order', async () => {
    const { inner, fd, initial, rng } = await setup();
    const first: W[] = [
      { off: 0, data: rng.fill(new Uint8Array(1024)) },
      { off: 4096, data: rng.fill(new Uint8Array(4096)) },
    ];
    await writeAll(fd, first);
    expect(fd.pendingWrites).toBe(2);
    await fd.flush();
    expect(fd.pendingWrites).toBe(0);
    const durable = apply(initial, first, () => true);
    expect(same(fd.durableImage(), durable)).toBe(true);
    expect(same(inner.image(), durable)).toBe(true);

    // Overlapping unflushed writes, so order and choice both matter.
    const pending: W[] = [
      { off: 512, data: rng.fill(new Uint8Array(2048)) },
      { off: 4096 + 1024, data: rng.fill(new Uint8Array(1024)) },
      { off: 16_384, data: rng.fill(new Uint8Array(4096)) },
      { off: 18_432, data: rng.fill(new Uint8Array(4096)) },
      { off: 1024, data: rng.fill(new Uint8Array(512)) },
      { off: 32_768, data: rng.fill(new Uint8Array(8192)) },
      { off: 16_384, data: rng.fill(new Uint8Array(1024)) },
    ];
    await writeAll(fd, pending);
    expect(fd.pendingWrites).toBe(pending.length);
    expect(fd.pendingList()).toEqual(pending.map((w) => ({ offsetBytes: w.off, lengthBytes: w.data.length })));
    expect(same(fd.durableImage(), durable)).toBe(true);

    expect(same(fd.crashImage(), durable)).toBe(true);
    expect(same(fd.crashImage({ include: () => true }), inner.image())).toBe(true);
    // Every subset of the 7 pending writes.
    for (let mask = 0; mask < 1 << pending.length; mask++) {
      const chosen = (i: number) => ((mask >> i) & 1) === 1;
      const list = pending.map((_, i) => i).filter(chosen);
      const want = apply(durable, pending, chosen);
      expect(same(fd.crashImage({ include: list }), want), `mask ${mask}`).toBe(true);
      expect(same(fd.crashImage({ include: chosen }), want), `mask ${mask} (predicate)`).toBe(true);
    }
    // Torn writes at every sector boundary of each write, with the others in or out.
    for (let t = 0; t < pending.length; t++) {
      for (let keep = 0; keep <= pending[t]!.data.length; keep += 512) {
        for (const others of [() => false, () => true, (i: number) => i % 2 === 0]) {
          const torn = { index: t, keepBytes: keep };
          const got = fd.crashImage({ include: others, torn });
          expect(same(got, apply(durable, pending, others, torn)), `torn ${t} keep ${keep}`).toBe(true);
        }
      }
    }
    // A crash image replays on a MemDevice.
    const img = fd.crashImage({ include: [0, 2, 5], torn: { index: 3, keepBytes: 2048 } });
    const replay = MemDevice.fromImage(img, { io, alignBytes: 512 });
    const buf = replay.allocBuffer(4096);
    await replay.read(buf, 18_432);
    expect(same(buf.subarray(0, 2048), pending[3]!.data.subarray(0, 2048))).toBe(true);
    expect(same(buf.subarray(2048), durable.subarray(18_432 + 2048, 18_432 + 4096))).toBe(true);
    replay.freeBuffer(buf);

    await fd.flush();
    expect(fd.pendingWrites).toBe(0);
    expect(same(fd.durableImage(), inner.image())).toBe(true);
  });

  it('validates crash image arguments', async () => {
    const { fd, rng } = await setup();
    await writeAll(fd, [{ off: 0, data: rng.fill(new Uint8Array(2048)) }]);
    await expectCode(() => fd.crashImage({ include: [1] }), 'ERR_INVALID_ARG');
    await expectCode(() => fd.crashImage({ include: [-1] }), 'ERR_INVALID_ARG');
    await expectCode(() => fd.crashImage({ include: 'all' as never }), 'ERR_INVALID_ARG');
    await expectCode(() => fd.crashImage({ torn: { index: 1, keepBytes: 0 } }), 'ERR_INVALID_ARG');
    await expectCode(() => fd.crashImage({ torn: { index: 0, keepBytes: 100 } }), 'ERR_INVALID_ARG');
    await expectCode(() => fd.crashImage({ torn: { index: 0, keepBytes: 2560 } }), 'ERR_INVALID_ARG');
  });

  it('a flush covers only the writes completed before it was called', async () => {
    const { fd, inner, rng } = await setup();
    const a = rng.fill(fd.allocBuffer(4096));
    await fd.write(a, 0);
    const b = rng.fill(fd.allocBuffer(4096));
    const w = fd.write(b, 8192); // completes while the flush runs
    const f = fd.flush();
    await Promise.all([w, f]);
    expect(fd.pendingWrites).toBe(1);
    expect(fd.pendingList()[0]!.offsetBytes).toBe(8192);
    expect(same(fd.durableImage().subarray(0, 4096), a)).toBe(true);
    expect(same(fd.crashImage({ include: [0] }), inner.image())).toBe(true);
    fd.freeBuffer(a);
    fd.freeBuffer(b);
  });

  it('injects EIO into reads, writes and flushes by rule or by count', async () => {
    const { fd, inner, rng } = await setup();
    const buf = rng.fill(fd.allocBuffer(4096));
    const before = inner.image();

    fd.rules.failWrite = (off, len) => off === 8192 && len === 4096;
    const e = await expectCode(() => fd.write(buf, 8192), 'ERR_IO');
    expect(e.details).toMatchObject({ errno: 'EIO', offset: 8192, length: 4096, path: fd.path });
    expect(e.message).toBe(`write failed on ${fd.path} at offset 8192 length 4096: EIO`);
    await expectCode(() => fd.writeSync(buf, 8192), 'ERR_IO');
    expect(same(inner.image(), before)).toBe(true); // never reached the inner device
    expect(fd.pendingWrites).toBe(0); // and was not recorded
    await fd.write(buf, 0);
    expect(fd.pendingWrites).toBe(1);

    fd.failNext('write', 2);
    await expectCode(() => fd.write(buf, 0), 'ERR_IO');
    await expectCode(() => fd.write(buf, 0), 'ERR_IO');
    await fd.write(buf, 0);
    expect(fd.injected.write).toBe(4);

    fd.rules.failRead = (off) => off >= 32_768;
    await fd.read(buf, 0);
    const r = await expectCode(() => fd.read(buf, 32_768), 'ERR_IO');
    expect(r.message).toBe(`read failed on ${fd.path} at offset 32768 length 4096: EIO`);
    await expectCode(() => fd.readSync(buf, 40_960), 'ERR_IO');

    fd.rules.failFlush = () => true;
    const pendingBefore = fd.pendingWrites;
    const durableBefore = fd.durableImage();
    const f = await expectCode(() => fd.flush(), 'ERR_IO');
    expect(f.message).toBe(`flush failed on ${fd.path}: EIO`);
    expect(fd.pendingWrites).toBe(pendingBefore);
    expect(same(fd.durableImage(), durableBefore)).toBe(true);
    expect(fd.injected).toEqual({ read: 2, write: 4, flush: 1 });
    expect(fd.toText()).toContain('pendingWrites');

    fd.clearFaults();
    await fd.flush();
    expect(fd.pendingWrites).toBe(0);
    // Arguments are still checked first.
    fd.failNext('read', 1);
    await expectCode(() => fd.read(buf, 3), 'ERR_INVALID_ARG');
    fd.freeBuffer(buf);
  });

  it('submit() runs every op that is not failed, then rejects with the first failure', async () => {
    const { fd, inner, rng } = await setup();
    const bufs = Array.from({ length: 4 }, () => rng.fill(fd.allocBuffer(4096)));
    fd.rules.failWrite = (off) => off === 8192 || off === 12_288;
    const e = await expectCode(
      () => fd.submit(bufs.map((buf, i) => ({ op: 'write' as const, buf, offsetBytes: i * 4096 + 4096 }))),
      'ERR_IO',
    );
    expect(e.details.offset).toBe(8192);
    expect(fd.pendingList()).toEqual([
      { offsetBytes: 4096, lengthBytes: 4096 },
      { offsetBytes: 16_384, lengthBytes: 4096 },
    ]);
    const img = inner.image();
    expect(same(img.subarray(4096, 8192), bufs[0]!)).toBe(true);
    expect(same(img.subarray(16_384, 20_480), bufs[3]!)).toBe(true);
    expect(same(img.subarray(8192, 12_288), bufs[1]!)).toBe(false);
    bufs.forEach((b) => fd.freeBuffer(b));
  });

  it('refuses writes over a read-only device', async () => {
    const inner = MemDevice.create(8192, { io, readOnly: true });
    const fd = await FaultDevice.wrap(inner);
    const buf = fd.allocBuffer(512);
    await expectCode(() => fd.write(buf, 0), 'ERR_READ_ONLY');
    await expectCode(() => fd.submit([{ op: 'write', buf, offsetBytes: 0 }]), 'ERR_READ_ONLY');
    fd.freeBuffer(buf);
  });

  describe('over a BlockDevice file', () => {
    const tmp = freshDir('sixtree-fault-');
    afterAll(() => tmp.cleanup());

    it('keeps its images equal to the file contents', async () => {
      const path = join(tmp.dir, `${io}.img`);
      const dev = BlockDevice.open(path, { io, createSizeBytes: 256 * 1024 });
      const rng = new Rng(11);
      const seed = rng.fill(dev.allocBuffer(64 * 1024));
      await dev.write(seed, 0);
      await dev.flush();
      const fd = await FaultDevice.wrap(dev);
      expect(same(fd.durableImage(), readFileSync(path))).toBe(true);
      const a = rng.fill(fd.allocBuffer(8192));
      await fd.write(a, 4096);
      await fd.submit([{ op: 'write', buf: a, offsetBytes: 128 * 1024 }]);
      expect(same(fd.crashImage({ include: () => true }), readFileSync(path))).toBe(true);
      await fd.flush();
      expect(dev.stats.flushes).toBe(2);
      expect(same(fd.durableImage(), readFileSync(path))).toBe(true);
      fd.freeBuffer(a);
      fd.freeBuffer(seed);
      await fd.close();
    });
  });
});
