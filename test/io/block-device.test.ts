// SPDX-License-Identifier: GPL-2.0-only
/*
 * BlockDevice: one suite run over both native backends (napi, koffi) and
 * both targets (a regular file; a loop device with direct I/O when root).
 */
import { execFileSync } from 'node:child_process';
import { closeSync, constants as fsConstants, openSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlockDevice, type BatchMode } from '../../src/io/block-device.js';
import type { IoOp } from '../../src/io/device.js';
import { loadBackend } from '../../src/native/index.js';
import { loopSkipReason } from '../helpers/loop.js';
import { expectCode, freshDir, IO_BACKENDS, makeTarget, Rng, type Target, type TargetKind } from './fixtures.js';

const loopReason = loopSkipReason();
if (loopReason) console.log(`BlockDevice loop-device runs skipped: ${loopReason}`);

const TARGETS: { kind: TargetKind; skip: boolean }[] = [
  { kind: 'file', skip: false },
  { kind: 'loop', skip: loopReason !== undefined },
];

const deviceBytes = 64 << 20;

describe.each(IO_BACKENDS)('BlockDevice (io: %s)', (io) => {
  const uring = loadBackend(io).uringSupported();
  const engines: { mode: BatchMode; skip: boolean }[] = [
    { mode: 'uring', skip: !uring },
    { mode: 'serial', skip: false },
    { mode: 'pool', skip: false },
  ];
  if (!uring) console.log(`io_uring is not available here: submit() 'uring' engine tests skipped (fallback engines still run)`);

  for (const { kind, skip } of TARGETS) {
    describe.skipIf(skip)(`on a ${kind}`, () => {
      const tmp = freshDir();
      let target: Target;
      let dev: BlockDevice;
      let n = 0;

      afterAll(() => tmp.cleanup());
      beforeEach(() => {
        target = makeTarget(kind, tmp.dir, `t${n++}`, deviceBytes);
        dev = BlockDevice.open(target.path, { io });
      });
      afterEach(async () => {
        await dev.close();
        target.cleanup();
      });

      it('reports geometry', () => {
        expect(dev.kind).toBe(kind === 'file' ? 'file' : 'block');
        expect(dev.sizeBytes).toBe(deviceBytes);
        expect(dev.alignBytes).toBeGreaterThanOrEqual(512);
        expect(dev.alignBytes & (dev.alignBytes - 1)).toBe(0);
        expect(dev.readOnly).toBe(false);
        expect(dev.backend.name).toBe(io);
      });

      it('reads back random data written at 1000 random aligned offsets', async () => {
        const rng = new Rng(1000 + n);
        const model = new Uint8Array(dev.sizeBytes);
        const align = dev.alignBytes;
        const blocks = dev.sizeBytes / align;
        const maxBlocks = 16;
        const bufs = new Map<number, Uint8Array>();
        const bufOf = (len: number): Uint8Array => {
          let b = bufs.get(len);
          if (!b) bufs.set(len, (b = dev.allocBuffer(len)));
          return b;
        };
        const writes: { off: number; len: number }[] = [];
        for (let i = 0; i < 1000; i++) {
          const nb = 1 + rng.below(maxBlocks);
          const off = rng.below(blocks - nb + 1) * align;
          const len = nb * align;
          const buf = rng.fill(bufOf(len));
          if (i % 2 === 0) dev.writeSync(buf, off);
          else await dev.write(buf, off);
          model.set(buf, off);
          writes.push({ off, len });
        }
        for (const [i, { off, len }] of writes.entries()) {
          const buf = bufOf(len);
          buf.fill(0xee);
          if (i % 2 === 0) await dev.read(buf, off);
          else dev.readSync(buf, off);
          expect(Buffer.compare(buf, model.subarray(off, off + len)), `write ${i} at ${off}+${len}`).toBe(0);
        }
        // The whole device, including never-written zeros.
        const chunk = dev.allocBuffer(1 << 20);
        for (let off = 0; off < dev.sizeBytes; off += chunk.length) {
          await dev.read(chunk, off);
          expect(Buffer.compare(chunk, model.subarray(off, off + chunk.length)), `chunk at ${off}`).toBe(0);
        }
        dev.freeBuffer(chunk);
        for (const b of bufs.values()) dev.freeBuffer(b);
        expect(dev.stats.writes).toBe(1000);
        expect(dev.stats.bytesWritten).toBe(writes.reduce((s, w) => s + w.len, 0));
      });

      it('runs 64 concurrent async operations', async () => {
        const rng = new Rng(64);
        const len = 4 * dev.alignBytes;
        const src = Array.from({ length: 64 }, () => rng.fill(dev.allocBuffer(len)));
        const dst = Array.from({ length: 64 }, () => dev.allocBuffer(len));
        const off = (i: number) => i * 1024 * 1024 + dev.alignBytes * (i % 7);
        await Promise.all(src.map((b, i) => dev.write(b, off(i))));
        await dev.flush();
        await Promise.all(dst.map((b, i) => dev.read(b, off(i))));
        dst.forEach((b, i) => expect(Buffer.compare(b, src[i]!), `op ${i}`).toBe(0));
        // Reads and writes in flight together, on disjoint ranges.
        const more = Array.from({ length: 32 }, () => rng.fill(dev.allocBuffer(len)));
        await Promise.all([
          ...more.map((b, i) => dev.write(b, off(i) + 512 * 1024)),
          ...dst.slice(0, 32).map((b, i) => dev.read(b, off(32 + i))),
        ]);
        dst.slice(0, 32).forEach((b, i) => expect(Buffer.compare(b, src[32 + i]!)).toBe(0));
        expect(dev.stats.flushes).toBe(1);
        [...src, ...dst, ...more].forEach((b) => dev.freeBuffer(b));
      });

      for (const { mode, skip: noEngine } of engines) {
        it.skipIf(noEngine)(`submit() batches with the '${mode}' engine`, async () => {
          await dev.close();
          dev = BlockDevice.open(target.path, { io, batch: mode });
          expect(dev.batchMode).toBe(mode);
          const rng = new Rng(7);
          const align = dev.alignBytes;
          const nr = 300; // more than one ring's depth
          const len = (i: number) => align * (1 + (i % 8));
          const off = (i: number) => i * 64 * 1024;
          const src = Array.from({ length: nr }, (_, i) => rng.fill(dev.allocBuffer(len(i))));
          await dev.submit(src.map((buf, i): IoOp => ({ op: 'write', buf, offsetBytes: off(i) })));
          const dst = Array.from({ length: nr }, (_, i) => dev.allocBuffer(len(i)));
          await dev.submit(dst.map((buf, i): IoOp => ({ op: 'read', buf, offsetBytes: off(i) })));
          dst.forEach((b, i) => expect(Buffer.compare(b, src[i]!), `op ${i}`).toBe(0));
          // One batch mixing reads and writes on disjoint ranges.
          const fresh = Array.from({ length: 50 }, () => rng.fill(dev.allocBuffer(align)));
          await dev.submit([
            ...fresh.map((buf, i): IoOp => ({ op: 'write', buf, offsetBytes: off(i) + 32 * 1024 })),
            ...dst.slice(100, 150).map((buf, i): IoOp => ({ op: 'read', buf, offsetBytes: off(i + 100) })),
          ]);
          dst.slice(100, 150).forEach((b, i) => expect(Buffer.compare(b, src[i + 100]!)).toBe(0));
          const check = dev.allocBuffer(align);
          for (let i = 0; i < 50; i++) {
            dev.readSync(check, off(i) + 32 * 1024);
            expect(Buffer.compare(check, fresh[i]!)).toBe(0);
          }
          expect(dev.stats.writes).toBe(nr + 50);
          expect(dev.stats.reads).toBe(nr + 50 + 50);
          await dev.submit([]);
          [...src, ...dst, ...fresh, check].forEach((b) => dev.freeBuffer(b));
        });

        it.skipIf(noEngine)(`submit() with the '${mode}' engine runs every op, then rejects with the first failure`, async () => {
          await dev.close();
          dev = BlockDevice.open(target.path, { io, batch: mode });
          const align = dev.alignBytes;
          const bufs = Array.from({ length: 4 }, (_, i) => dev.allocBuffer(align).fill(i + 1));
          await dev.submit(bufs.map((buf, i): IoOp => ({ op: 'write', buf, offsetBytes: i * align })));
          target.shrink(1 << 20);
          const ok = dev.allocBuffer(align);
          const past = dev.allocBuffer(align);
          const e = await expectCode(
            () =>
              dev.submit([
                { op: 'read', buf: ok, offsetBytes: align },
                { op: 'read', buf: past, offsetBytes: 8 << 20 },
                { op: 'read', buf: bufs[0]!, offsetBytes: 2 * align },
              ]),
            'ERR_IO',
          );
          expect(e.details.offset).toBe(8 << 20);
          expect(e.details.length).toBe(align);
          expect(e.details.errno).toBe('ENODATA');
          expect(e.message).toContain(target.path);
          // The other ops ran.
          expect(ok[0]).toBe(2);
          expect(bufs[0]![0]).toBe(3);
          [...bufs, ok, past].forEach((b) => dev.freeBuffer(b));
        });
      }

      it('raises ERR_IO naming errno, offset and length when the device shrinks under it', async () => {
        const buf = dev.allocBuffer(dev.alignBytes * 2);
        await dev.write(buf, 32 << 20);
        target.shrink(16 << 20);
        const e = await expectCode(() => dev.read(buf, 32 << 20), 'ERR_IO');
        expect(e.details).toMatchObject({ path: target.path, offset: 32 << 20, length: buf.length, errno: 'ENODATA' });
        expect(e.message).toMatch(/read failed on .* at offset 33554432 length \d+: ENODATA/);
        const s = await expectCode(() => dev.readSync(buf, 32 << 20), 'ERR_IO');
        expect(s.details.errno).toBe('ENODATA');
        // Inside the new size everything still works.
        await dev.read(buf, 0);
        dev.freeBuffer(buf);
      });

      it('opens read-only and refuses writes', async () => {
        const rng = new Rng(3);
        const w = rng.fill(dev.allocBuffer(dev.alignBytes));
        dev.writeSync(w, 0);
        await dev.flush();
        await dev.close();
        dev = BlockDevice.open(target.path, { io, readOnly: true });
        expect(dev.readOnly).toBe(true);
        const r = dev.allocBuffer(dev.alignBytes);
        await dev.read(r, 0);
        expect(Buffer.compare(r, w)).toBe(0);
        await expectCode(() => dev.write(r, 0), 'ERR_READ_ONLY');
        await expectCode(() => dev.writeSync(r, 0), 'ERR_READ_ONLY');
        await expectCode(() => dev.submit([{ op: 'read', buf: r, offsetBytes: 0 }, { op: 'write', buf: r, offsetBytes: 0 }]), 'ERR_READ_ONLY');
        await dev.submit([{ op: 'read', buf: r, offsetBytes: 0 }]);
        await dev.flush();
        expect(dev.stats.writes).toBe(0);
        dev.freeBuffer(r);
        dev.freeBuffer(w);
      });

      it('rejects every misaligned or out-of-range argument with ERR_INVALID_ARG', async () => {
        const align = dev.alignBytes;
        const big = dev.allocBuffer(4 * align);
        const cases: [string, Uint8Array | unknown, unknown, RegExp][] = [
          ['plain Uint8Array', new Uint8Array(align), 0, /buf: .*allocBuffer/],
          ['Node Buffer', Buffer.alloc(align), 0, /buf: .*allocBuffer/],
          ['not a buffer', 'hello', 0, /buf: .*Uint8Array/],
          ['misaligned address', big.subarray(8, 8 + align), 0, new RegExp(`not aligned to ${align} bytes`)],
          ['length not a multiple', big.subarray(0, align + 1), 0, new RegExp(`buf.length: .*multiple of ${align}`)],
          ['empty', big.subarray(0, 0), 0, new RegExp(`buf.length: .*multiple of ${align}`)],
          ['offset not a multiple', big.subarray(0, align), align / 2, new RegExp(`offsetBytes: .*multiple of ${align}`)],
          ['offset 1', big.subarray(0, align), 1, /offsetBytes: got 1;/],
          ['negative offset', big.subarray(0, align), -align, /offsetBytes/],
          ['fractional offset', big.subarray(0, align), 0.5, /offsetBytes/],
          ['NaN offset', big.subarray(0, align), NaN, /offsetBytes/],
          ['bigint offset', big.subarray(0, align), 0n, /offsetBytes/],
          ['offset at the end', big.subarray(0, align), dev.sizeBytes, /offsetBytes: .*<= /],
          ['range past the end', big, dev.sizeBytes - align, /offsetBytes: .*<= /],
          ['huge offset', big.subarray(0, align), 2 ** 60, /offsetBytes/],
        ];
        for (const [what, buf, off, msg] of cases) {
          for (const call of [
            () => dev.read(buf as Uint8Array, off as number),
            () => dev.write(buf as Uint8Array, off as number),
            () => dev.readSync(buf as Uint8Array, off as number),
            () => dev.writeSync(buf as Uint8Array, off as number),
            () => dev.submit([{ op: 'read', buf: buf as Uint8Array, offsetBytes: off as number }]),
          ]) {
            const e = await expectCode(call, 'ERR_INVALID_ARG');
            expect(e.message, what).toMatch(msg);
          }
        }
        // submit() names the op that is wrong.
        const e = await expectCode(
          () =>
            dev.submit([
              { op: 'read', buf: big.subarray(0, align), offsetBytes: 0 },
              { op: 'read', buf: big.subarray(0, align), offsetBytes: 3 },
            ]),
          'ERR_INVALID_ARG',
        );
        expect(e.message).toMatch(/offsetBytes/);
        await expectCode(() => dev.submit([{ op: 'erase' as 'read', buf: big, offsetBytes: 0 }]), 'ERR_INVALID_ARG');
        await expectCode(() => dev.submit('ops' as never), 'ERR_INVALID_ARG');
        // A freed buffer, and a buffer of the other backend.
        const freed = dev.allocBuffer(align);
        dev.freeBuffer(freed);
        await expectCode(() => dev.read(freed, 0), 'ERR_INVALID_ARG');
        await expectCode(() => dev.freeBuffer(freed), 'ERR_INVALID_ARG');
        const other = loadBackend(io === 'napi' ? 'koffi' : 'napi');
        const foreign = new Uint8Array(other.allocAligned(align, align));
        const f = await expectCode(() => dev.read(foreign, 0), 'ERR_INVALID_ARG');
        expect(f.message).toContain(`'${io}' backend`);
        other.freeAligned(foreign.buffer as ArrayBuffer);
        await expectCode(() => dev.allocBuffer(0), 'ERR_INVALID_ARG');
        await expectCode(() => dev.allocBuffer(1.5), 'ERR_INVALID_ARG');
        // Nothing reached the device.
        expect(dev.stats).toEqual({ reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, flushes: 0 });
        dev.freeBuffer(big);
      });

      it('refuses to free a buffer while an I/O on it is in flight', async () => {
        const buf = dev.allocBuffer(dev.alignBytes);
        const p = dev.read(buf, 0);
        await expectCode(() => dev.freeBuffer(buf), 'ERR_INVALID_ARG');
        await p;
        dev.freeBuffer(buf);
      });

      it('counts I/O in stats and prints itself', async () => {
        const buf = dev.allocBuffer(dev.alignBytes);
        dev.writeSync(buf, 0);
        await dev.write(buf, dev.alignBytes);
        await dev.read(buf, 0);
        dev.readSync(buf, 0);
        await dev.flush();
        expect(dev.stats).toEqual({ reads: 2, writes: 2, bytesRead: 2 * buf.length, bytesWritten: 2 * buf.length, flushes: 1 });
        const text = dev.toText();
        expect(text).toContain(target.path);
        expect(text).toContain(`${io}, async: ${dev.backend.asyncEngine()}, submit: ${dev.batchMode}`);
        expect(text).toMatch(/reads:\s+2/);
        dev.freeBuffer(buf);
      });

      it('waits for in-flight I/O on close() and then refuses calls with ERR_CLOSED', async () => {
        const bufs = Array.from({ length: 16 }, () => dev.allocBuffer(dev.alignBytes));
        const ops = bufs.map((b, i) => dev.write(b, i * dev.alignBytes));
        await dev.close();
        await Promise.all(ops); // all completed before the fd was closed
        expect(dev.stats.writes).toBe(16);
        await expectCode(() => dev.read(bufs[0]!, 0), 'ERR_CLOSED');
        await expectCode(() => dev.writeSync(bufs[0]!, 0), 'ERR_CLOSED');
        await expectCode(() => dev.flush(), 'ERR_CLOSED');
        await dev.close(); // idempotent
        bufs.forEach((b) => dev.freeBuffer(b)); // buffers outlive the device
      });
    });
  }

  describe('on a regular file', () => {
    const tmp = freshDir();
    afterAll(() => tmp.cleanup());
    let dev: BlockDevice | undefined;
    afterEach(async () => {
      await dev?.close();
      dev = undefined;
    });

    it('creates a missing file at createSizeBytes', async () => {
      const { existsSync, statSync } = await import('node:fs');
      const path = `${tmp.dir}/${io}-new.img`;
      expect(existsSync(path)).toBe(false);
      dev = BlockDevice.open(path, { io, createSizeBytes: 1 << 20 });
      expect(statSync(path).size).toBe(1 << 20);
      expect(dev.sizeBytes).toBe(1 << 20);
      const buf = dev.allocBuffer(4096);
      await dev.read(buf, (1 << 20) - 4096);
      expect(buf.every((b) => b === 0)).toBe(true);
      dev.freeBuffer(buf);
    });

    it('extends a shorter file on create, keeping its data, and never shrinks', async () => {
      const { writeFileSync, statSync } = await import('node:fs');
      const path = `${tmp.dir}/${io}-grow.img`;
      const head = new Rng(5).fill(new Uint8Array(8192));
      writeFileSync(path, head);
      dev = BlockDevice.open(path, { io, createSizeBytes: 4 << 20 });
      expect(statSync(path).size).toBe(4 << 20);
      const buf = dev.allocBuffer(8192);
      await dev.read(buf, 0);
      expect(Buffer.compare(buf, head)).toBe(0);
      dev.freeBuffer(buf);
      await dev.close();
      dev = BlockDevice.open(path, { io, createSizeBytes: 1 << 20 });
      expect(dev.sizeBytes).toBe(4 << 20);
      expect(statSync(path).size).toBe(4 << 20);
    });

    it('opens short files: sizeBytes rounds down to alignBytes, the tail is unreachable', async () => {
      const { writeFileSync } = await import('node:fs');
      const path = `${tmp.dir}/${io}-short.img`;
      const data = new Rng(9).fill(new Uint8Array(5000));
      writeFileSync(path, data);
      dev = BlockDevice.open(path, { io });
      const align = dev.alignBytes;
      expect(dev.sizeBytes).toBe(5000 - (5000 % align));
      const buf = dev.allocBuffer(align);
      const last = dev.sizeBytes - align;
      await dev.read(buf, last);
      expect(Buffer.compare(buf, data.subarray(last, last + align))).toBe(0);
      await expectCode(() => dev!.read(buf, dev!.sizeBytes), 'ERR_INVALID_ARG');
      dev.freeBuffer(buf);
      await dev.close();

      const empty = `${tmp.dir}/${io}-empty.img`;
      writeFileSync(empty, new Uint8Array(0));
      dev = BlockDevice.open(empty, { io });
      expect(dev.sizeBytes).toBe(0);
      const b = dev.allocBuffer(align);
      await expectCode(() => dev!.read(b, 0), 'ERR_INVALID_ARG');
      dev.freeBuffer(b);
    });

    it('rejects a createSizeBytes that is not a multiple of alignBytes, or with readOnly', async () => {
      const path = `${tmp.dir}/${io}-odd.img`;
      await expectCode(() => BlockDevice.open(path, { io, createSizeBytes: (1 << 20) + 100 }), 'ERR_INVALID_ARG');
      await expectCode(() => BlockDevice.open(path, { io, createSizeBytes: 1 << 20, readOnly: true }), 'ERR_INVALID_ARG');
      await expectCode(() => BlockDevice.open(path, { io, createSizeBytes: -1 }), 'ERR_INVALID_ARG');
      await expectCode(() => BlockDevice.open(path, { io, createSizeBytes: 2 ** 60 }), 'ERR_INVALID_ARG');
    });
  });

  describe.skipIf(loopReason !== undefined)('on a loop device', () => {
    const tmp = freshDir();
    afterAll(() => tmp.cleanup());

    it('fails with ERR_TOO_SMALL when createSizeBytes exceeds the block device', async () => {
      const t = makeTarget('loop', tmp.dir, `${io}-small`, 1 << 20);
      try {
        await expectCode(() => BlockDevice.open(t.path, { io, createSizeBytes: 2 << 20 }), 'ERR_TOO_SMALL');
        const dev = BlockDevice.open(t.path, { io, createSizeBytes: 1 << 20 });
        expect(dev.kind).toBe('block');
        expect(dev.sizeBytes).toBe(1 << 20);
        await dev.close();
      } finally {
        t.cleanup();
      }
    });

    it('a writable open of a read-only block device is ERR_READ_ONLY; a read-only open works', async () => {
      const t = makeTarget('loop', tmp.dir, `${io}-ro`, 1 << 20, { readOnly: true });
      try {
        const e = await expectCode(() => BlockDevice.open(t.path, { io }), 'ERR_READ_ONLY');
        expect(e.details.errno).toBe('EROFS');
        const dev = BlockDevice.open(t.path, { io, readOnly: true });
        const buf = dev.allocBuffer(dev.alignBytes);
        dev.readSync(buf, 0);
        await dev.close();
      } finally {
        t.cleanup();
      }
    });

    it('a second device node for the same device (not the same inode: the flock cannot see it) is ERR_DEVICE_BUSY while open', async () => {
      const t = makeTarget('loop', tmp.dir, `${io}-alias`, 1 << 20);
      const alias = join(tmp.dir, `${io}-alias.node`);
      try {
        const rdev = statSync(t.path).rdev;
        const major = Number((BigInt(rdev) >> 8n) & 0xfffn) | Number((BigInt(rdev) >> 32n) & ~0xfffn);
        const minor = Number(BigInt(rdev) & 0xffn) | Number((BigInt(rdev) >> 12n) & ~0xffn);
        execFileSync('mknod', [alias, 'b', String(major), String(minor)]);
        expect(statSync(alias).rdev).toBe(rdev);
        const dev = BlockDevice.open(t.path, { io });
        await expectCode(() => BlockDevice.open(alias, { io }), 'ERR_DEVICE_BUSY');
        await dev.close();
        const other = BlockDevice.open(alias, { io });
        await expectCode(() => BlockDevice.open(t.path, { io }), 'ERR_DEVICE_BUSY');
        await other.close();
      } finally {
        rmSync(alias, { force: true });
        t.cleanup();
      }
    });

    it('claims the device while open writable: ERR_DEVICE_BUSY when another holder has it exclusively', async () => {
      const t = makeTarget('loop', tmp.dir, `${io}-claim`, 1 << 20);
      let other = -1;
      try {
        /* another program's exclusive open (what mount, mkfs, md and LVM hold) */
        other = openSync(t.path, fsConstants.O_RDONLY | fsConstants.O_EXCL);
        const err = await expectCode(() => BlockDevice.open(t.path, { io }), 'ERR_DEVICE_BUSY');
        expect(err.message).toContain('in use by the system');
        expect(err.details.errno).toBe('EBUSY');
        /* reading does not need the claim; lock: false opts out of it (and of the flock) */
        const ro = BlockDevice.open(t.path, { io, readOnly: true });
        await ro.close();
        const unlocked = BlockDevice.open(t.path, { io, lock: false });
        await unlocked.close();
        closeSync(other);
        other = -1;

        const dev = BlockDevice.open(t.path, { io });
        expect(dev.toText()).toContain('block (claimed O_EXCL)');
        /* held until close(): nothing else can claim (or mount) the device meanwhile */
        expect(() => openSync(t.path, fsConstants.O_RDONLY | fsConstants.O_EXCL)).toThrow(expect.objectContaining({ code: 'EBUSY' }));
        /* a second open of ours still reads as the store lock, not as a busy device */
        await expectCode(() => BlockDevice.open(t.path, { io }), 'ERR_LOCKED');
        await dev.close();
        closeSync(openSync(t.path, fsConstants.O_RDONLY | fsConstants.O_EXCL));
      } finally {
        if (other >= 0) closeSync(other);
        t.cleanup();
      }
    });
  });
});
