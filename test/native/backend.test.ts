// SPDX-License-Identifier: GPL-2.0-only
/*
 * NativeBackend, both implementations: memory regions (alignment, one free
 * path, finalizers, no double free), native argument guards, errno names,
 * batches with per-op results on both engines.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterAll, describe, expect, it } from 'vitest';
import { addonPath, defaultBackendName, gather, isNativeError, loadBackend, napiAddon, type NativeBackend } from '../../src/native/index.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

/** Collects garbage until done() holds (bounded number of rounds; no timing assumption). */
async function collectUntil(done: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !done(); i++) {
    gc();
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 5));
  }
}

function nativeCode(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (isNativeError(e)) return `${e.code}/${e.syscall}`;
    throw e;
  }
  throw new Error('expected a native error');
}

async function nativeCodeAsync(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn();
  } catch (e) {
    if (isNativeError(e)) return `${e.code}/${e.syscall}`;
    throw e;
  }
  throw new Error('expected a native error');
}

const dir = mkdtempSync(join(tmpdir(), 'sixtree-native-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe.each(['napi', 'koffi'] as const)('NativeBackend %s', (name) => {
  const b: NativeBackend = loadBackend(name);
  /** The live-region counter this backend's aligned buffers move. */
  const alignedLive = () => (name === 'napi' ? b.memStats().alignedLive : b.memStats().mmapLive);

  it('is cached and describes itself', () => {
    expect(loadBackend(name)).toBe(b);
    expect(b.name).toBe(name);
    expect(b.sectorBytes).toBe(512);
    expect(b.pageBytes).toBeGreaterThanOrEqual(4096);
    expect(b.uringDepth).toBeGreaterThan(0);
    expect(typeof b.uringSupported()).toBe('boolean');
    expect(b.errnoName(5)).toBe('EIO');
    expect(b.errnoName(-2)).toBe('ENOENT');
    expect(b.errnoName(b.noDirectIoErrno)).toBe('ENODIRECT');
  });

  it('allocAligned() returns zeroed memory at the requested alignment', () => {
    for (const align of [512, 1024, 4096]) {
      for (const size of [512, 4096, 12_288, 1 << 20]) {
        const ab = b.allocAligned(size, align);
        expect(ab.byteLength).toBe(size);
        expect(b.addressOf(ab)! % align).toBe(0);
        const u = new Uint8Array(ab);
        expect(u.every((x) => x === 0)).toBe(true);
        u.fill(0xa5);
        expect(u[size - 1]).toBe(0xa5);
        b.freeAligned(ab);
        expect(b.addressOf(ab)).toBeUndefined();
      }
    }
  });

  it('allocAligned() aligns node-sized buffers past the page size (napi; koffi stops at the page size)', () => {
    const base = alignedLive();
    // 64 KiB and up come from their own mapping: alignment above the page trims it
    for (const [size, align] of [[65_536, 65_536], [262_144, 1 << 20], [300_000, 131_072], [65_535, 65_536]] as const) {
      if (align > b.pageBytes && name !== 'napi') {
        expect(nativeCode(() => b.allocAligned(size, align))).toBe('EINVAL/argument');
        continue;
      }
      const ab = b.allocAligned(size, align);
      expect(b.addressOf(ab)! % align).toBe(0);
      const u = new Uint8Array(ab);
      expect(u.every((x) => x === 0)).toBe(true);
      u.fill(0x5a);
      expect(u[0]! + u[size - 1]!).toBe(0xb4);
      expect(alignedLive()).toBe(base + 1);
      b.freeAligned(ab);
      expect(alignedLive()).toBe(base);
    }
  });

  it('frees each region exactly once: explicit free or finalizer, never both', async () => {
    let settle = 0;
    await collectUntil(() => ++settle > 5); // settle earlier garbage
    const base = alignedLive();
    const baseMmap = b.memStats().mmapLive;
    let kept: ArrayBuffer[] = [];
    // heap-sized and mapped (64 KiB and up) buffers, freed either way
    for (let i = 0; i < 300; i++) kept.push(b.allocAligned(i % 5 === 4 ? 262_144 : 4096 * (1 + (i % 4)), 4096));
    expect(alignedLive()).toBe(base + 300);
    // Half freed explicitly, then every reference dropped.
    for (let i = 0; i < 300; i += 2) b.freeAligned(kept[i]!);
    if (name === 'napi') {
      expect(alignedLive()).toBe(base + 150);
      expect(kept[0]!.byteLength).toBe(0); // detached: JS can no longer reach the memory
    }
    expect(nativeCode(() => b.freeAligned(kept[0]!))).toBe('EINVAL/argument'); // double free refused
    kept = [];
    await collectUntil(() => alignedLive() <= base);
    expect(alignedLive()).toBe(base); // below base would mean a double free
    // mmap regions the same way.
    let maps: ArrayBuffer[] = Array.from({ length: 50 }, () => b.mmapAnon(10_000));
    expect(b.memStats().mmapLive).toBe(baseMmap + 50);
    new Uint8Array(maps[3]!)[9999] = 1;
    for (let i = 0; i < 50; i += 5) b.munmap(maps[i]!);
    maps = [];
    await collectUntil(() => b.memStats().mmapLive <= baseMmap);
    expect(b.memStats().mmapLive).toBe(baseMmap);
  });

  it('refuses to free what it did not allocate, or with the wrong function', () => {
    expect(nativeCode(() => b.freeAligned(new ArrayBuffer(4096)))).toBe('EINVAL/argument');
    expect(nativeCode(() => b.freeAligned('x' as never))).toBe('EINVAL/argument');
    const m = b.mmapAnon(4096);
    expect(nativeCode(() => b.freeAligned(m))).toBe('EINVAL/argument');
    b.munmap(m);
    const a = b.allocAligned(4096, 4096);
    expect(nativeCode(() => b.munmap(a))).toBe('EINVAL/argument');
    b.freeAligned(a);
    expect(nativeCode(() => b.allocAligned(0, 4096))).toBe('EINVAL/argument');
    expect(nativeCode(() => b.allocAligned(4096, 3000))).toBe('EINVAL/argument');
    expect(nativeCode(() => b.mmapAnon(-1))).toBe('EINVAL/argument');
  });

  it('refuses to free a region with asynchronous I/O in flight (EBUSY)', async () => {
    const path = join(dir, `${name}-busy.img`);
    const fd = b.open(path, true, true);
    b.extend(fd, 1 << 20);
    const buf = new Uint8Array(b.allocAligned(65_536, 4096));
    const p = b.pread(fd, buf, 0);
    expect(nativeCode(() => b.freeAligned(buf.buffer as ArrayBuffer))).toBe('EBUSY/free');
    await p;
    const q = b.batch(fd, 'serial', [{ op: 'read', buf, offsetBytes: 0 }]);
    expect(nativeCode(() => b.freeAligned(buf.buffer as ArrayBuffer))).toBe('EBUSY/free');
    await q;
    b.freeAligned(buf.buffer as ArrayBuffer);
    b.close(fd);
  });

  it('guards every argument of its I/O calls (EINVAL before any syscall)', async () => {
    const path = join(dir, `${name}-guard.img`);
    const fd = b.open(path, true, true);
    b.extend(fd, 1 << 20);
    const good = new Uint8Array(b.allocAligned(4096, 4096));
    const plain = new Uint8Array(4096);
    for (const [what, fn] of [
      ['fd -1', () => b.preadSync(-1, good, 0)],
      ['fd 1.5', () => b.preadSync(1.5, good, 0)],
      ['fd string', () => b.pwriteSync('3' as never, good, 0)],
      ['buf not typed', () => b.preadSync(fd, [1, 2] as never, 0)],
      ['buf unaligned length', () => b.preadSync(fd, good.subarray(0, 1000), 0)],
      ['buf unaligned address', () => b.preadSync(fd, good.subarray(8, 520), 0)],
      ['buf empty', () => b.preadSync(fd, good.subarray(0, 0), 0)],
      ['offset unaligned', () => b.pwriteSync(fd, good, 100)],
      ['offset negative', () => b.pwriteSync(fd, good, -512)],
      ['offset NaN', () => b.pwriteSync(fd, good, NaN)],
      ['offset too big', () => b.pwriteSync(fd, good, 2 ** 54)],
      ['open empty path', () => b.open('', false, false)],
      ['open NUL path', () => b.open('a\0b', false, false)],
    ] as [string, () => unknown][]) {
      expect(nativeCode(fn), what).toBe('EINVAL/argument');
    }
    // Asynchronous calls only take memory from this backend (it must outlive the call).
    expect(await nativeCodeAsync(async () => b.pread(fd, plain, 0))).toBe('EINVAL/argument');
    expect(await nativeCodeAsync(async () => b.batch(fd, 'serial', [{ op: 'read', buf: plain, offsetBytes: 0 }]))).toBe('EINVAL/argument');
    expect(await nativeCodeAsync(async () => b.batch(fd, 'serial', [{ op: 'read', buf: good, offsetBytes: 3 }]))).toBe('EINVAL/argument');
    // Kernel errors come back with their errno name.
    expect(nativeCode(() => b.preadSync(987_654, good, 0))).toBe('EBADF/pread');
    expect(await nativeCodeAsync(() => b.fdatasync(987_654))).toBe('EBADF/fdatasync');
    expect(nativeCode(() => b.open(join(dir, 'nope', 'x'), false, false))).toBe('ENOENT/open');
    b.freeAligned(good.buffer as ArrayBuffer);
    b.close(fd);
  });

  it('pwriteDatasync writes, then flushes, in one call; it names the step that failed', async () => {
    const path = join(dir, `${name}-wsync.img`);
    const fd = b.open(path, true, true);
    b.extend(fd, 1 << 20);
    const buf = new Uint8Array(b.allocAligned(8192, 4096)).fill(0x5a);
    await b.pwriteDatasync(fd, buf, 16_384);
    const back = new Uint8Array(b.allocAligned(8192, 4096));
    b.preadSync(fd, back, 16_384);
    expect(back.every((x) => x === 0x5a)).toBe(true);
    expect(await nativeCodeAsync(async () => b.pwriteDatasync(fd, new Uint8Array(4096), 0))).toBe('EINVAL/argument');
    expect(await nativeCodeAsync(() => b.pwriteDatasync(987_654, buf, 0))).toBe('EBADF/pwrite');
    // /dev/null takes the write and refuses fdatasync: the error names fdatasync, with its own errno
    const devNull = openSync('/dev/null', 'w');
    try {
      expect(await nativeCodeAsync(() => b.pwriteDatasync(devNull, buf, 0))).toBe('EINVAL/fdatasync');
    } finally {
      closeSync(devNull);
    }
    b.freeAligned(buf.buffer as ArrayBuffer);
    b.freeAligned(back.buffer as ArrayBuffer);
    b.close(fd);
  });

  it('reports file geometry and extends without shrinking', () => {
    const path = join(dir, `${name}-geo.img`);
    writeFileSync(path, new Uint8Array(10_000));
    const fd = b.open(path, true, false);
    expect(b.fdKind(fd)).toBe('file');
    expect(b.sizeBytes(fd)).toBe(10_000);
    const align = b.alignBytes(fd);
    expect(align).toBeGreaterThanOrEqual(512);
    b.extend(fd, 1 << 20);
    expect(b.sizeBytes(fd)).toBe(1 << 20);
    b.extend(fd, 4096);
    expect(b.sizeBytes(fd)).toBe(1 << 20);
    b.close(fd);
  });

  const uring = b.uringSupported();
  for (const engine of ['uring', 'serial'] as const) {
    it.skipIf(engine === 'uring' && !uring)(`batch('${engine}') returns one result per op: 0 or -errno`, async () => {
      const path = join(dir, `${name}-${engine}.img`);
      const fd = b.open(path, true, true);
      b.extend(fd, 1 << 20);
      const nr = 3 * b.uringDepth + 7; // more ops than a ring keeps in flight
      const bufs = Array.from({ length: nr }, (_, i) => new Uint8Array(b.allocAligned(4096, 4096)).fill(i & 0xff));
      const w = await b.batch(
        fd,
        engine,
        bufs.map((buf, i) => ({ op: 'write' as const, buf, offsetBytes: (i % 256) * 4096 })),
      );
      expect(Array.from(w).every((r) => r === 0)).toBe(true);
      truncateSync(path, 8192);
      const r = await b.batch(fd, engine, [
        { op: 'read', buf: bufs[0]!, offsetBytes: 0 },
        { op: 'read', buf: bufs[1]!, offsetBytes: 512 * 1024 },
        { op: 'read', buf: bufs[2]!, offsetBytes: 4096 },
      ]);
      expect(Array.from(r)).toEqual([0, -61 /* ENODATA */, 0]);
      expect(b.errnoName(r[1]!)).toBe('ENODATA');
      bufs.forEach((x) => b.freeAligned(x.buffer as ArrayBuffer));
      b.close(fd);
    });
  }
});

describe('napi addon', () => {
  it('survives explicit free + GC in a fresh process under MALLOC_CHECK_=3 (no double free)', () => {
    const script = `
      const a = require(${JSON.stringify(addonPath())});
      (async () => {
        for (let round = 0; round < 20; round++) {
          let keep = [];
          for (let i = 0; i < 500; i++) keep.push(a.allocAligned(4096 * (1 + (i % 3)), 4096));
          for (let i = 0; i < keep.length; i += 3) a.freeAligned(keep[i]);
          for (let i = 1; i < 50; i += 7) a.munmap(a.mmapAnon(8192));
          keep = [];
          global.gc();
          await new Promise((r) => setImmediate(r));
        }
        for (let i = 0; i < 20 && a.memStats().alignedLive > 0; i++) { global.gc(); await new Promise((r) => setTimeout(r, 5)); }
        console.log(JSON.stringify(a.memStats()));
      })();`;
    const r = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8', env: { ...process.env, MALLOC_CHECK_: '3' } });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ alignedLive: 0, mmapLive: 0 });
  });

  it('guards its raw exports', () => {
    const a = napiAddon();
    expect(nativeCode(() => a.batch(0, true, [], new Float64Array(1), new Uint8Array(0)))).toBe('EINVAL/argument');
    expect(nativeCode(() => a.batch(0, true, [], [] as never, new Uint8Array(0)))).toBe('EINVAL/argument');
    expect(nativeCode(() => a.batch(0, 'yes' as never, [], new Float64Array(0), new Uint8Array(0)))).toBe('EINVAL/argument');
    expect(nativeCode(() => a.open('/tmp', 'rw' as never, false))).toBe('EINVAL/argument');
    expect(nativeCode(() => a.regionAddress(new Uint8Array(4) as never))).toBe('EINVAL/argument');
    expect(a.regionAddress(new ArrayBuffer(8))).toBeUndefined();
    expect(nativeCode(() => a.crc32c(new Uint16Array(4) as never))).toBe('EINVAL/argument');
  });
});

describe('gather()', () => {
  it('copies the spans one after another, memcpy per span', () => {
    const src = Uint8Array.from({ length: 64 }, (_, i) => i);
    const dst = new Uint8Array(32).fill(0xee);
    const spans = new Uint32Array([40, 4, 0, 3, 10, 0, 60, 4, 99, 99]);
    expect(gather(dst, 2, src, spans, 4)).toBe(11);
    expect(Array.from(dst.subarray(0, 14))).toEqual([0xee, 0xee, 40, 41, 42, 43, 0, 1, 2, 60, 61, 62, 63, 0xee]);
    expect(gather(dst, 0, src, spans, 0)).toBe(0);
    /* views count from their own start */
    const inner = new Uint8Array(src.buffer, 8, 16);
    expect(gather(dst, 0, inner, new Uint32Array([15, 1]), 1)).toBe(1);
    expect(dst[0]).toBe(23);
  });

  it('refuses spans outside src, totals past dst, overlap with the destination and bad arguments (EINVAL)', () => {
    const buf = new Uint8Array(64);
    const src = new Uint8Array(64);
    for (const [what, fn] of [
      ['span past src', () => gather(buf, 0, src, new Uint32Array([60, 8]), 1)],
      ['offset past src', () => gather(buf, 0, src, new Uint32Array([2 ** 32 - 4, 8]), 1)],
      ['total past dst', () => gather(buf, 40, src, new Uint32Array([0, 16, 16, 16]), 2)],
      ['dstOff past dst', () => gather(buf, 65, src, new Uint32Array(0), 0)],
      ['span overlaps the destination', () => gather(buf, 0, buf, new Uint32Array([4, 8]), 1)],
      ['span overlaps the destination (other view)', () => gather(buf.subarray(16), 0, buf, new Uint32Array([18, 4]), 1)],
      ['nr past spans', () => gather(buf, 0, src, new Uint32Array([0, 1]), 2)],
      ['spans not u32', () => gather(buf, 0, src, new Int32Array([0, 1]) as never, 1)],
      ['dst not u8', () => gather(new Uint16Array(8) as never, 0, src, new Uint32Array([0, 1]), 1)],
      ['nr negative', () => gather(buf, 0, src, new Uint32Array([0, 1]), -1)],
    ] as [string, () => unknown][]) {
      expect(nativeCode(fn), what).toBe('EINVAL/argument');
    }
    /* a span beside the destination range is fine, in the same buffer too */
    expect(gather(buf, 0, buf, new Uint32Array([8, 8]), 1)).toBe(8);
    expect(gather(buf.subarray(16), 0, buf, new Uint32Array([20, 4]), 1)).toBe(4);
  });
});

describe('napi addon event ring (async pread/pwrite)', () => {
  const a = napiAddon();
  const b = loadBackend('napi');
  const uring = b.uringSupported();

  /** Runs fn with pread/pwrite on the ring (true) or the thread pool (false). */
  async function withRing<T>(on: boolean, fn: () => Promise<T>): Promise<T> {
    a.useEventRing(on);
    try {
      return await fn();
    } finally {
      a.useEventRing(true);
    }
  }

  it('reports its engine: uring where io_uring works, pool when turned off', () => {
    expect(a.asyncEngine()).toBe(uring ? 'uring' : 'pool');
    a.useEventRing(false);
    expect(a.asyncEngine()).toBe('pool');
    a.useEventRing(true);
    expect(b.asyncEngine()).toBe(a.asyncEngine());
    expect(loadBackend('koffi').asyncEngine()).toBe('pool');
    expect(nativeCode(() => a.useEventRing('yes' as never))).toBe('EINVAL/argument');
  });

  for (const ring of [true, false]) {
    it.skipIf(ring && !uring)(`${ring ? 'ring' : 'pool'}: more concurrent ops than the ring holds move the right bytes; errors come back per op`, async () => {
      await withRing(ring, async () => {
        const path = join(dir, `ring-${ring}.img`);
        const fd = b.open(path, true, true);
        b.extend(fd, 1 << 20);
        const nr = 2 * b.uringDepth + 5; // past the ring's depth: the rest goes to the pool
        const bufs = Array.from({ length: nr }, (_, i) => new Uint8Array(b.allocAligned(4096, 4096)).fill((i * 7) & 0xff));
        const before = a.eventRingStats();
        await Promise.all(bufs.map((buf, i) => b.pwrite(fd, buf, (i % 256) * 4096)));
        const after = a.eventRingStats();
        expect(after.inflight).toBe(0);
        if (ring) {
          /* the ring took what it holds, the pool the rest (the ring may have drained some meanwhile) */
          expect(after.ring - before.ring).toBeGreaterThanOrEqual(b.uringDepth);
          expect(after.pool - before.pool).toBeGreaterThan(0);
          expect(after.ring - before.ring + after.pool - before.pool).toBe(nr);
        } else {
          expect(after.ring).toBe(before.ring);
          expect(after.pool - before.pool).toBe(nr);
        }
        bufs.forEach((buf) => buf.fill(0));
        await Promise.all(bufs.map((buf, i) => b.pread(fd, buf, (i % 256) * 4096)));
        // ops i and i + 256 share an offset (nr < 512): both read what the later write left
        bufs.forEach((buf, i) => {
          const last = i % 256 + 256 < nr ? i % 256 + 256 : i % 256;
          expect(buf.every((x) => x === ((last * 7) & 0xff)), `op ${i}`).toBe(true);
        });
        // a read past the end is a short read; a bad fd fails with EBADF; both per op
        truncateSync(path, 8192);
        const results = await Promise.allSettled([b.pread(fd, bufs[0]!, 0), b.pread(fd, bufs[1]!, 512 * 1024), b.pread(987_654, bufs[2]!, 0), b.pwrite(987_654, bufs[3]!, 0)]);
        expect(results.map((r) => (r.status === 'fulfilled' ? 'ok' : `${(r.reason as { code: string }).code}/${(r.reason as { syscall: string }).syscall}`))).toEqual([
          'ok',
          'ENODATA/pread',
          'EBADF/pread',
          'EBADF/pwrite',
        ]);
        // no region stays pinned: every buffer frees
        bufs.forEach((x) => b.freeAligned(x.buffer as ArrayBuffer));
        b.close(fd);
      });
    });
  }

  it.skipIf(!uring)('hands the kernel what one loop turn queued in one io_uring_enter (the first of a busy turn at once); a lone read, or one queued from a timer, is not held back', async () => {
    const path = join(dir, 'ring-batch.img');
    writeFileSync(path, Buffer.alloc(1 << 20, 5));
    const fd = b.open(path, false, false);
    const bufs = Array.from({ length: 48 }, () => new Uint8Array(b.allocAligned(4096, 4096)));
    try {
      // 48 reads started in one turn on an idle ring: the first at once, the other 47 together
      let before = a.eventRingStats();
      await Promise.all(bufs.map((buf, i) => b.pread(fd, buf, i * 4096)));
      let after = a.eventRingStats();
      expect(after.ring - before.ring).toBe(48);
      expect(after.submits - before.submits).toBe(2);
      expect(bufs.every((buf) => buf.every((x) => x === 5))).toBe(true);
      // one read at a time: one submission each, none waits for company
      before = a.eventRingStats();
      for (let i = 0; i < 5; i++) await b.pread(fd, bufs[i]!, i * 4096);
      after = a.eventRingStats();
      expect(after.submits - before.submits).toBe(5);
      // queued from a timer callback (the loop's first phase) and from setImmediate (after the poll phase)
      for (const schedule of [(f: () => void) => setTimeout(f, 1), (f: () => void) => setImmediate(f)]) {
        bufs[0]!.fill(0);
        await new Promise<void>((resolve, reject) => schedule(() => void b.pread(fd, bufs[0]!, 0).then(() => resolve(), reject)));
        expect(bufs[0]!.every((x) => x === 5)).toBe(true);
      }
      expect(a.eventRingStats().inflight).toBe(0);
    } finally {
      bufs.forEach((x) => b.freeAligned(x.buffer as ArrayBuffer));
      b.close(fd);
    }
  });

  it.skipIf(!uring)('keeps the loop alive exactly while I/O is in flight; a worker ending with reads in flight waits for them and frees their records', () => {
    const script = `
      const { Worker, isMainThread } = require('node:worker_threads');
      const a = require(${JSON.stringify(addonPath())});
      const fs = require('node:fs');
      const path = ${JSON.stringify(join(dir, 'ring-exit.img'))};
      if (isMainThread) fs.writeFileSync(path, Buffer.alloc(1 << 20, 1));
      const fd = a.open(path, false, false);
      const bufs = Array.from({ length: 32 }, () => new Uint8Array(a.allocAligned(16384, 4096)));
      if (isMainThread) {
        // no await: only the reads in flight keep the process alive until they resolve
        let done = 0;
        for (const buf of bufs) a.pread(fd, buf, 0).then(() => { if (++done === bufs.length && buf[0] === 1) console.log(a.asyncEngine(), 'read'); });
        // the worker's teardown frees the records of the reads it left in flight: none stays alive
        new Worker(__filename.endsWith('[eval]') ? process.argv[1] : __filename, { eval: false }).on('exit', (c) => setTimeout(() => console.log('worker', c, 'records', a.eventRingStats().recordsLive), 50));
      } else {
        for (const buf of bufs) a.pread(fd, buf, 0);
        process.exit(0); // ends the worker with its reads in flight
      }`;
    const file = join(dir, 'ring-exit.js');
    writeFileSync(file, script);
    const r = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.split('\n').filter(Boolean).sort()).toEqual(['uring read', 'worker 0 records 0']);
  });
});

describe('napi addon: a worker exiting with reads in flight on its own buffers', () => {
  const uring = loadBackend('napi').uringSupported();
  it.skipIf(!uring)('does not free a buffer the kernel is still reading into: no crash, every record freed (6 workers)', () => {
    // Before the fix the worker's environment finalized its ArrayBuffers (freeing their memory)
    // while its ring still had reads in flight into them: the kernel wrote into freed heap
    // memory, and most runs aborted in node's buffer cleanup.
    const script = `
      const { Worker, isMainThread } = require('node:worker_threads');
      const a = require(${JSON.stringify(addonPath())});
      const fs = require('node:fs');
      const path = ${JSON.stringify(join(dir, 'ring-orphan.img'))};
      if (isMainThread) {
        fs.writeFileSync(path, Buffer.alloc(1 << 20, 1));
        new Worker(__filename).on('exit', (c) => setTimeout(() => console.log('worker', c, 'records', a.eventRingStats().recordsLive), 50));
      } else {
        const fd = a.open(path, false, false);
        for (let i = 0; i < 32; i++) a.pread(fd, new Uint8Array(a.allocAligned(16384, 4096)), 0);
        process.exit(0);
      }`;
    const file = join(dir, 'ring-orphan.js');
    writeFileSync(file, script);
    for (let run = 0; run < 6; run++) {
      const r = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 30_000 });
      expect({ run, status: r.status, stdout: r.stdout.trim() }, r.stderr).toEqual({ run, status: 0, stdout: 'worker 0 records 0' });
    }
  });
});

describe('backend selection', () => {
  it("defaults to 'napi'; env SIXTREE_IO picks the default; an explicit io option wins", async () => {
    const { BlockDevice } = await import('../../src/io/block-device.js');
    const saved = process.env.SIXTREE_IO;
    const path = join(dir, 'select.img');
    writeFileSync(path, new Uint8Array(1 << 16));
    try {
      delete process.env.SIXTREE_IO;
      expect(defaultBackendName()).toBe('napi');
      expect(loadBackend()).toBe(loadBackend('napi'));
      process.env.SIXTREE_IO = 'koffi';
      expect(loadBackend()).toBe(loadBackend('koffi'));
      let dev = BlockDevice.open(path);
      expect(dev.backend.name).toBe('koffi');
      await dev.close();
      dev = BlockDevice.open(path, { io: 'napi' });
      expect(dev.backend.name).toBe('napi');
      await dev.close();
      process.env.SIXTREE_IO = 'libaio';
      expect(() => loadBackend()).toThrow(/SIXTREE_IO/);
      expect(() => loadBackend('libaio' as never)).toThrow(/io: got "libaio"/);
    } finally {
      if (saved === undefined) delete process.env.SIXTREE_IO;
      else process.env.SIXTREE_IO = saved;
    }
  });
});
