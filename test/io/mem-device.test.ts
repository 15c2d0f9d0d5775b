// SPDX-License-Identifier: GPL-2.0-only
/*
 * MemDevice: same rules as BlockDevice over an in-memory image.
 */
import { describe, expect, it } from 'vitest';
import { MemDevice } from '../../src/io/mem-device.js';
import { expectCode, IO_BACKENDS, Rng } from './fixtures.js';

describe.each(IO_BACKENDS)('MemDevice (io: %s)', (io) => {
  it('fromImage() copies the image in, image() copies it out', async () => {
    const img = new Rng(1).fill(new Uint8Array(16 * 4096));
    const dev = MemDevice.fromImage(img, { alignBytes: 4096, io });
    expect(dev.kind).toBe('memory');
    expect(dev.sizeBytes).toBe(img.length);
    expect(dev.alignBytes).toBe(4096);
    expect(dev.path).toMatch(/^memory:\d+$/);
    img.fill(0);
    const out = dev.image();
    expect(out.some((b) => b !== 0)).toBe(true);
    out.fill(1);
    const buf = dev.allocBuffer(4096);
    await dev.read(buf, 0);
    expect(buf.some((b) => b !== 1)).toBe(true);
    dev.freeBuffer(buf);
    // a Buffer image too (Buffer.slice() would be a view of it)
    const b = Buffer.from(new Rng(3).fill(new Uint8Array(4096)));
    const fromBuffer = MemDevice.fromImage(b, { alignBytes: 4096, io });
    const want = new Uint8Array(b);
    b.fill(0);
    expect(fromBuffer.image()).toEqual(want);
  });

  it('reads back what was written, sync, async and through submit() in order', async () => {
    const dev = MemDevice.create(1 << 20, { io, path: 'mem-test' });
    expect(dev.alignBytes).toBe(512);
    const rng = new Rng(2);
    const model = new Uint8Array(dev.sizeBytes);
    const a = rng.fill(dev.allocBuffer(4096));
    const b = rng.fill(dev.allocBuffer(4096));
    dev.writeSync(a, 8192);
    model.set(a, 8192);
    await dev.write(b, 1024);
    model.set(b, 1024);
    // submit applies in array order: the second write to 8192 wins.
    await dev.submit([
      { op: 'write', buf: b, offsetBytes: 8192 },
      { op: 'write', buf: a, offsetBytes: 8192 },
      { op: 'read', buf: b, offsetBytes: 8192 },
    ]);
    model.set(a, 8192);
    expect(Buffer.compare(b, a)).toBe(0);
    expect(Buffer.compare(dev.image(), model)).toBe(0);
    const r = dev.allocBuffer(4096);
    dev.readSync(r, 1024);
    expect(Buffer.compare(r, model.subarray(1024, 5120))).toBe(0);
    await dev.flush();
    expect(dev.stats).toEqual({ reads: 2, writes: 4, bytesRead: 8192, bytesWritten: 16384, flushes: 1 });
    expect(dev.toText()).toContain('MemDevice mem-test');
    [a, b, r].forEach((x) => dev.freeBuffer(x));
  });

  it('enforces the Device rules', async () => {
    const dev = MemDevice.create(64 * 1024, { io, alignBytes: 4096 });
    const buf = dev.allocBuffer(8192);
    await expectCode(() => dev.read(new Uint8Array(4096), 0), 'ERR_INVALID_ARG');
    await expectCode(() => dev.read(buf.subarray(512, 4608), 0), 'ERR_INVALID_ARG');
    await expectCode(() => dev.read(buf.subarray(0, 512), 0), 'ERR_INVALID_ARG');
    await expectCode(() => dev.read(buf, 512), 'ERR_INVALID_ARG');
    await expectCode(() => dev.read(buf, 64 * 1024 - 4096), 'ERR_INVALID_ARG');
    await expectCode(() => dev.submit([{ op: 'read', buf, offsetBytes: 1 }]), 'ERR_INVALID_ARG');
    await expectCode(() => MemDevice.create(1000, { io }), 'ERR_INVALID_ARG');
    await expectCode(() => MemDevice.create(4096, { io, alignBytes: 100 }), 'ERR_INVALID_ARG');
    await expectCode(() => MemDevice.create(4096, { io, alignBytes: 256 }), 'ERR_INVALID_ARG');
    await expectCode(() => MemDevice.fromImage('x' as never, { io }), 'ERR_INVALID_ARG');
    await expectCode(() => MemDevice.create(4096, { io: 'bad' as never }), 'ERR_INVALID_ARG');

    const ro = MemDevice.fromImage(new Uint8Array(8192), { io, readOnly: true });
    const rb = ro.allocBuffer(512);
    await ro.read(rb, 0);
    await expectCode(() => ro.write(rb, 0), 'ERR_READ_ONLY');
    await expectCode(() => ro.writeSync(rb, 0), 'ERR_READ_ONLY');
    await expectCode(() => ro.submit([{ op: 'write', buf: rb, offsetBytes: 0 }]), 'ERR_READ_ONLY');

    await dev.close();
    await expectCode(() => dev.read(buf, 0), 'ERR_CLOSED');
    dev.freeBuffer(buf);
    ro.freeBuffer(rb);
  });
});
