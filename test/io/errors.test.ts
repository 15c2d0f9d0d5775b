// SPDX-License-Identifier: GPL-2.0-only
/*
 * Every public error code src/io raises, each produced for real, over both
 * backends: ERR_NOT_FOUND_DEVICE, ERR_LOCKED (same process and a second
 * process; a lock left behind by an exited holder is waited for),
 * ERR_NO_DIRECT_IO (a ramfs mount, which refuses O_DIRECT),
 * ERR_IO (device shrunk under us; FaultDevice), ERR_INVALID_ARG,
 * ERR_READ_ONLY, ERR_CLOSED.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BlockDevice } from '../../src/io/block-device.js';
import { FaultDevice } from '../../src/io/fault-device.js';
import { addonPath } from '../../src/native/index.js';
import { ramfsSkipReason, withRamfs } from '../helpers/loop.js';
import { expectCode, freshDir, IO_BACKENDS } from './fixtures.js';

const ramfsReason = ramfsSkipReason();
if (ramfsReason) console.log(`ERR_NO_DIRECT_IO test skipped: ${ramfsReason}; no unprivileged file system here refuses O_DIRECT (tmpfs accepts it since Linux 6.6)`);

const haveFlock = spawnSync('sh', ['-c', 'command -v flock']).status === 0;
if (!haveFlock) console.log('flock(1) is not installed: the flock(1) second-process checks are skipped (the node child check still runs)');

/**
 * A child process group that holds an exclusive flock on path until killed;
 * resolves once the lock is held. flock(1) -o keeps the lock fd out of the
 * command it runs, and kill() signals the whole group it started.
 */
async function lockHolder(path: string): Promise<{ kill: () => Promise<void> }> {
  const child = spawn('flock', ['--exclusive', '--close', path, 'sh', '-c', 'echo locked; exec sleep 600'], {
    stdio: ['ignore', 'pipe', 'inherit'],
    detached: true,
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => d.toString().includes('locked') && resolve());
    child.on('exit', (code) => reject(new Error(`flock exited early (${code})`)));
  });
  return {
    kill: () =>
      new Promise<void>((resolve) => {
        child.removeAllListeners('exit');
        child.on('exit', () => resolve());
        process.kill(-child.pid!, 'SIGTERM');
      }),
  };
}

describe.each(IO_BACKENDS)('src/io errors (io: %s)', (io) => {
  const tmp = freshDir('sixtree-err-');
  afterAll(() => tmp.cleanup());
  const file = (name: string, sizeBytes = 1 << 20): string => {
    const p = join(tmp.dir, `${io}-${name}.img`);
    writeFileSync(p, new Uint8Array(sizeBytes));
    return p;
  };

  it('ERR_NOT_FOUND_DEVICE for a missing path without createSizeBytes', async () => {
    const p = join(tmp.dir, `${io}-missing.img`);
    const e = await expectCode(() => BlockDevice.open(p, { io }), 'ERR_NOT_FOUND_DEVICE');
    expect(e.message).toContain(p);
    expect(e.details.path).toBe(p);
    expect(existsSync(p)).toBe(false);
    await expectCode(() => BlockDevice.open(join(tmp.dir, 'no-such-dir', 'x.img'), { io, createSizeBytes: 1 << 20 }), 'ERR_NOT_FOUND_DEVICE');
    await expectCode(() => BlockDevice.open(p, { io, readOnly: true }), 'ERR_NOT_FOUND_DEVICE');
  });

  it('ERR_LOCKED for a second open in the same process; lock: false skips the lock', async () => {
    const p = file('locked');
    const a = BlockDevice.open(p, { io });
    const e = await expectCode(() => BlockDevice.open(p, { io }), 'ERR_LOCKED');
    expect(e.message).toContain(p);
    expect(e.message).toContain('already open in this process');
    await expectCode(() => BlockDevice.open(p, { io, readOnly: true }), 'ERR_LOCKED');
    const c = BlockDevice.open(p, { io, lock: false });
    await c.close();
    await a.close();
    const b = BlockDevice.open(p, { io }); // released on close
    await b.close();
  });

  it.skipIf(!haveFlock)('ERR_LOCKED while another process holds the lock, and our lock excludes other processes', async () => {
    const p = file('locked2');
    const holder = await lockHolder(p);
    try {
      await expectCode(() => BlockDevice.open(p, { io }), 'ERR_LOCKED');
      // a live holder: openWaiting does not wait either
      const t0 = Date.now();
      await expectCode(() => BlockDevice.openWaiting(p, { io }), 'ERR_LOCKED');
      expect(Date.now() - t0).toBeLessThan(1000);
    } finally {
      await holder.kill();
    }
    const dev = BlockDevice.open(p, { io });
    try {
      // flock(1) -n fails with the conflict exit code while we hold the store.
      expect(spawnSync('flock', ['--nonblock', '--conflict-exit-code', '99', p, 'true']).status).toBe(99);
    } finally {
      await dev.close();
    }
    expect(spawnSync('flock', ['--nonblock', '--conflict-exit-code', '99', p, 'true']).status).toBe(0);
  });

  it('waits for a lock its holder left behind at exit (its open file still referenced, as io_uring operations in flight keep it), then takes it', async () => {
    const p = file('locked-exited');
    /* the holder locks, hands the locked file to a process living ~0.8 s (stdio fd 3), and exits */
    const script = `
      const a = require(${JSON.stringify(addonPath())});
      const fd = a.open(${JSON.stringify(p)}, true, false);
      a.lock(fd);
      require('node:child_process').spawn('sleep', ['0.8'], { stdio: ['ignore', 'ignore', 'ignore', fd], detached: true }).unref();
      console.log(process.pid);`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    /* the lock is still there, named after the exited holder */
    expect(spawnSync('sh', ['-c', `grep -c ' FLOCK .* ${r.stdout.trim()} ' /proc/locks`], { encoding: 'utf8' }).stdout.trim()).not.toBe('0');
    // open() does not wait: ERR_LOCKED, saying the holders exited
    expect(() => BlockDevice.open(p, { io })).toThrow(expect.objectContaining({ code: 'ERR_LOCKED', details: expect.objectContaining({ holdersExited: true }) }));
    // openWaiting waits without blocking the event loop
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    const t0 = Date.now();
    const dev = await BlockDevice.openWaiting(p, { io });
    const waitedMs = Date.now() - t0;
    clearInterval(timer);
    expect(ticks).toBeGreaterThan(3);
    await dev.close();
    expect(waitedMs).toBeGreaterThan(100);
    expect(waitedMs).toBeLessThan(5000);
  });

  it('a second node process opening the store through the shim gets EWOULDBLOCK', async () => {
    const p = file('locked3');
    const dev = BlockDevice.open(p, { io });
    try {
      const script = `
        const a = require(${JSON.stringify(addonPath())});
        const fd = a.open(${JSON.stringify(p)}, true, false);
        try { a.lock(fd); console.log('LOCKED_OK'); } catch (e) { console.log(e.code); }`;
      const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(['EAGAIN', 'EWOULDBLOCK']).toContain(r.stdout.trim());
    } finally {
      await dev.close();
    }
  });

  it.skipIf(ramfsReason !== undefined)('ERR_NO_DIRECT_IO on a file system that refuses O_DIRECT (ramfs)', async () => {
    await withRamfs(async (dir) => {
      const existing = join(dir, 'store.img');
      writeFileSync(existing, new Uint8Array(1 << 16));
      const e = await expectCode(() => BlockDevice.open(existing, { io }), 'ERR_NO_DIRECT_IO');
      expect(e.message).toContain(existing);
      await expectCode(() => BlockDevice.open(existing, { io, readOnly: true }), 'ERR_NO_DIRECT_IO');
      // A file we would have created is not left behind.
      const fresh = join(dir, 'fresh.img');
      await expectCode(() => BlockDevice.open(fresh, { io, createSizeBytes: 1 << 20 }), 'ERR_NO_DIRECT_IO');
      expect(existsSync(fresh)).toBe(false);
    });
  });

  it('ERR_IO from the kernel: reading where the file no longer reaches', async () => {
    const p = file('shrunk', 1 << 20);
    const dev = BlockDevice.open(p, { io });
    const buf = dev.allocBuffer(4096);
    const { truncateSync } = await import('node:fs');
    truncateSync(p, 4096);
    const e = await expectCode(() => dev.read(buf, 1 << 19), 'ERR_IO');
    expect(e.details).toMatchObject({ path: p, offset: 1 << 19, length: 4096, errno: 'ENODATA' });
    expect(e.message).toBe(`read failed on ${p} at offset ${1 << 19} length 4096: ENODATA`);
    dev.freeBuffer(buf);
    await dev.close();
  });

  it('ERR_IO from FaultDevice matches the real device error', async () => {
    const p = file('fault', 1 << 20);
    const dev = BlockDevice.open(p, { io });
    const fd = await FaultDevice.wrap(dev);
    const buf = fd.allocBuffer(4096);
    fd.rules.failRead = (off) => off === 8192;
    const e = await expectCode(() => fd.read(buf, 8192), 'ERR_IO');
    expect(e.details).toMatchObject({ path: p, offset: 8192, length: 4096, errno: 'EIO' });
    expect(e.message).toBe(`read failed on ${p} at offset 8192 length 4096: EIO`);
    await fd.read(buf, 0);
    fd.failNext('flush');
    const f = await expectCode(() => fd.flush(), 'ERR_IO');
    expect(f.details.errno).toBe('EIO');
    fd.freeBuffer(buf);
    await fd.close();
  });

  it('ERR_INVALID_ARG for bad open arguments', async () => {
    const p = file('args');
    await expectCode(() => BlockDevice.open('', { io }), 'ERR_INVALID_ARG');
    await expectCode(() => BlockDevice.open(42 as never, { io }), 'ERR_INVALID_ARG');
    await expectCode(() => BlockDevice.open('a\0b', { io }), 'ERR_INVALID_ARG');
    const u = await expectCode(() => BlockDevice.open(p, { io, sizeBytes: 4096 } as never), 'ERR_INVALID_ARG');
    expect(u.message).toContain('opts.sizeBytes');
    await expectCode(() => BlockDevice.open(p, { io: 'uv' as never }), 'ERR_INVALID_ARG');
    await expectCode(() => BlockDevice.open(p, { io, readOnly: 'yes' as never }), 'ERR_INVALID_ARG');
    await expectCode(() => BlockDevice.open(p, { io, batch: 'aio' as never }), 'ERR_INVALID_ARG');
    await expectCode(() => BlockDevice.open(p, null as never), 'ERR_INVALID_ARG');
    const dir = join(tmp.dir, `${io}-a-directory`);
    mkdirSync(dir);
    const d = await expectCode(() => BlockDevice.open(dir, { io, readOnly: true }), 'ERR_INVALID_ARG');
    expect(d.message).toContain('a regular file or a block device');
    await expectCode(() => BlockDevice.open(dir, { io }), 'ERR_INVALID_ARG');
  });

  it('ERR_READ_ONLY and ERR_CLOSED', async () => {
    const p = file('ro');
    const dev = BlockDevice.open(p, { io, readOnly: true });
    const buf = dev.allocBuffer(4096);
    const e = await expectCode(() => dev.write(buf, 0), 'ERR_READ_ONLY');
    expect(e.message).toContain(p);
    await dev.close();
    await expectCode(() => dev.read(buf, 0), 'ERR_CLOSED');
    await expectCode(() => dev.submit([]), 'ERR_CLOSED');
    dev.freeBuffer(buf);
  });
});
