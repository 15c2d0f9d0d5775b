// SPDX-License-Identifier: GPL-2.0-only
/*
 * Test helpers that need root: loop devices and a ramfs mount.
 *
 * Loop devices: loopAttach() runs `losetup -f --show --direct-io=on FILE`
 * and remembers the device and its backing file; loopDetach() detaches only
 * a device this process attached (and only while it still has that backing
 * file). withLoop() detaches in finally, and a process 'exit' hook detaches
 * whatever is left, so a failing test never leaks a device. Nothing here
 * touches loop devices it did not attach.
 *
 * ramfs: withRamfs() mounts a ramfs (a file system without O_DIRECT support)
 * on a fresh temporary directory and unmounts it in finally.
 *
 * ext4: withExt4Mounted() makes an ext4 file system on a loop device this
 * process attached, mounts it on a fresh temporary directory and unmounts it
 * in finally (the device in use by the system, as a disk's mounted partition).
 *
 * Without root, or without losetup / loop support, *SkipReason() returns a
 * sentence saying why; tests use it with describe.skipIf / it.skipIf.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, realpathSync, rmdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

const attached = new Map<string, string>();

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

function which(cmd: string): boolean {
  try {
    run('sh', ['-c', `command -v ${cmd}`]);
    return true;
  } catch {
    return false;
  }
}

let loopReasonCached: string | null | undefined;

/** Why loop-device tests cannot run here, or undefined when they can. */
export function loopSkipReason(): string | undefined {
  if (loopReasonCached === undefined) {
    if (!isRoot) loopReasonCached = `loop devices need root (uid ${process.getuid?.()}); run the tests as root to cover /dev/loopN`;
    else if (!which('losetup')) loopReasonCached = 'losetup (util-linux) is not installed';
    else if (!existsSync('/dev/loop-control')) loopReasonCached = '/dev/loop-control is missing: no loop device support in this kernel or container';
    else loopReasonCached = null;
  }
  return loopReasonCached ?? undefined;
}

/** Why ramfs tests cannot run here, or undefined when they can. */
export function ramfsSkipReason(): string | undefined {
  if (!isRoot) return `mounting ramfs needs root (uid ${process.getuid?.()})`;
  if (!which('mount')) return 'mount is not installed';
  return undefined;
}

/** Why an ext4 file system cannot be made and mounted on a loop device here, or undefined. */
export function ext4SkipReason(): string | undefined {
  const loop = loopSkipReason();
  if (loop) return loop;
  if (!which('mkfs.ext4') || !which('e2fsck')) return 'mkfs.ext4 or e2fsck (e2fsprogs) is not installed';
  if (!which('mount')) return 'mount is not installed';
  return undefined;
}

export interface LoopOpts {
  /** Logical sector size (default 512). */
  sectorBytes?: number;
  /** Attach read-only (losetup -r). */
  readOnly?: boolean;
}

/** Attaches file to a free loop device with direct I/O; returns /dev/loopN. */
export function loopAttach(file: string, opts: LoopOpts = {}): string {
  const real = realpathSync(file);
  const dev = run('losetup', ['-f', '--show', '--direct-io=on', ...(opts.sectorBytes ? ['--sector-size', String(opts.sectorBytes)] : []), ...(opts.readOnly ? ['-r'] : []), real]);
  if (!dev.startsWith('/dev/loop')) throw new Error(`losetup printed ${JSON.stringify(dev)}`);
  attached.set(dev, real);
  return dev;
}

/** Backing file of dev as losetup reports it ('' if none). */
function backingFile(dev: string): string {
  try {
    return run('losetup', ['--list', '--noheadings', '--output', 'BACK-FILE', dev]);
  } catch {
    return '';
  }
}

/** Detaches dev; only devices attached by loopAttach() in this process. */
export function loopDetach(dev: string): void {
  const file = attached.get(dev);
  if (file === undefined) throw new Error(`refusing to detach ${dev}: this process did not attach it`);
  attached.delete(dev);
  const back = backingFile(dev);
  if (back !== '' && !back.startsWith(file)) throw new Error(`refusing to detach ${dev}: its backing file is now ${back}, not ${file}`);
  run('losetup', ['-d', dev]);
}

/** Detaches every device this process attached and has not detached yet. */
export function loopDetachAll(): void {
  for (const dev of [...attached.keys()]) {
    try {
      loopDetach(dev);
    } catch (e) {
      process.stderr.write(`loopDetachAll: ${(e as Error).message}\n`);
    }
  }
}

process.on('exit', loopDetachAll);

export async function withLoop<T>(file: string, fn: (dev: string) => Promise<T> | T, opts: LoopOpts = {}): Promise<T> {
  const dev = loopAttach(file, opts);
  try {
    return await fn(dev);
  } finally {
    loopDetach(dev);
  }
}

/** A sparse file of `bytes` (to back a loop device) in a fresh temp directory named `prefix`..., removed after fn. */
export async function withScratchImage<T>(prefix: string, bytes: number, fn: (img: string) => Promise<T> | T): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  try {
    const img = join(dir, 'disk.img');
    writeFileSync(img, '');
    truncateSync(img, bytes);
    return await fn(img);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Re-reads the backing file size (losetup -c), e.g. after truncating it. */
export function loopSetCapacity(dev: string): void {
  if (!attached.has(dev)) throw new Error(`refusing to resize ${dev}: this process did not attach it`);
  run('losetup', ['-c', dev]);
}

/**
 * mkfs.ext4 on dev (a loop device this process attached), mounted on a fresh
 * directory for fn; unmounted after. remountReadOnly: fn gets a second
 * callback that remounts the file system read-only.
 */
export async function withExt4Mounted<T>(dev: string, fn: (dir: string, remountReadOnly: () => void) => Promise<T> | T): Promise<T> {
  if (!attached.has(dev)) throw new Error(`refusing to make a file system on ${dev}: this process did not attach it`);
  run('mkfs.ext4', ['-q', '-F', dev]);
  const dir = mkdtempSync(join(tmpdir(), 'sixtree-ext4-'));
  run('mount', [dev, dir]);
  try {
    return await fn(dir, () => run('mount', ['-o', 'remount,ro', dir]));
  } finally {
    run('umount', [dir]);
    rmdirSync(dir);
  }
}

export async function withRamfs<T>(fn: (dir: string) => Promise<T> | T): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'sixtree-ramfs-'));
  run('mount', ['-t', 'ramfs', '-o', 'size=16m', 'sixtree-ramfs', dir]);
  try {
    return await fn(dir);
  } finally {
    run('umount', [dir]);
    rmdirSync(dir);
  }
}
