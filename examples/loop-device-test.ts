// SPDX-License-Identifier: GPL-2.0-only
/*
 * loop-device-test: an integration test to copy into your own project. It runs
 * a store on a real block device, /dev/loopN, backed by a file:
 *
 *   1. create a 64 MiB backing file in a fresh temporary directory;
 *   2. attach it: losetup -f --show --direct-io=on FILE (prints /dev/loopN);
 *   3. format /dev/loopN (a block device: no size needed), open, write 2000
 *      keys in transactions, close; reopen, read every key back, fsck; close;
 *   4. finally: detach exactly the device step 2 attached (after checking it
 *      is still backed by our file), and remove the temporary directory.
 *
 * Loop devices need root. Without root (or without losetup or loop support)
 * it prints why it skips and exits 0.
 *
 * Run:  sudo node dist/examples/loop-device-test.js
 * In your own project, import from 'sixtree' instead of '../src/index.js'.
 */

import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, realpathSync, rmSync, writeFileSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { Store, pos } from '../src/index.js';

const BACKING_BYTES = 64 * 1024 * 1024;
const KEYS = 2000;
const KEYS_PER_TRANSACTION = 100;

export interface LoopTestResult {
  /** Why the test did not run (not root, no losetup, no loop support). */
  skipped?: string;
  /** The device it attached and detached. */
  device?: string;
  backingFile?: string;
  keys?: number;
  fsckProblems?: string[];
}

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

/** Why this cannot run here, or null. */
export function skipReason(): string | null {
  const uid = process.getuid?.();
  if (uid !== 0) return `loop devices need root (running as uid ${uid}); run it with sudo`;
  try {
    run('losetup', ['--version']);
  } catch {
    return 'losetup (util-linux) is not installed';
  }
  if (!existsSync('/dev/loop-control')) return '/dev/loop-control is missing: no loop device support in this kernel or container';
  return null;
}

/** Backing file of dev as losetup reports it ('' if none). */
function backingFileOf(dev: string): string {
  try {
    return run('losetup', ['--list', '--noheadings', '--output', 'BACK-FILE', dev]);
  } catch {
    return '';
  }
}

function value(i: number): Uint8Array {
  return new TextEncoder().encode(`value of key ${i}`);
}

async function exercise(device: string, log: (t: string) => void): Promise<{ keys: number; fsckProblems: string[] }> {
  await Store.format(device, { nodeSize: 64 * 1024, btrees: [{ name: 'kv' }] });
  log(`formatted ${device}\n`);
  let store = await Store.open(device);
  try {
    for (let i = 0; i < KEYS; i += KEYS_PER_TRANSACTION) {
      await store.transact((tx) => {
        for (let j = i; j < i + KEYS_PER_TRANSACTION; j++) tx.put('kv', pos(1, j), value(j));
      });
    }
  } finally {
    await store.close();
  }
  log(`wrote ${KEYS} keys, closed\n`);

  store = await Store.open(device);
  try {
    let keys = 0;
    for await (const e of store.range('kv')) {
      const want = new TextDecoder().decode(value(Number(e.pos.offset)));
      const got = new TextDecoder().decode(e.value);
      if (got !== want) throw new Error(`key 1:${e.pos.offset}: read ${JSON.stringify(got)}, wrote ${JSON.stringify(want)}`);
      keys++;
    }
    if (keys !== KEYS) throw new Error(`read back ${keys} keys, wrote ${KEYS}`);
    const fsckProblems = await store.fsck();
    log(`reopened: ${keys} keys read back, fsck: ${fsckProblems.length ? fsckProblems.join('; ') : 'clean'}\n`);
    return { keys, fsckProblems };
  } finally {
    await store.close();
  }
}

export async function main(opts: { log?: (text: string) => void } = {}): Promise<LoopTestResult> {
  const log = opts.log ?? ((t: string) => process.stdout.write(t));
  const why = skipReason();
  if (why) {
    log(`loop-device-test: skipped: ${why}\n`);
    return { skipped: why };
  }
  const dir = mkdtempSync(join(tmpdir(), 'sixtree-loop-'));
  const backingFile = join(realpathSync(dir), 'backing.img');
  let device: string | null = null;
  try {
    writeFileSync(backingFile, '');
    truncateSync(backingFile, BACKING_BYTES);
    device = run('losetup', ['-f', '--show', '--direct-io=on', backingFile]);
    if (!/^\/dev\/loop\d+$/.test(device)) throw new Error(`losetup printed ${JSON.stringify(device)}, not /dev/loopN`);
    log(`attached ${backingFile} as ${device}\n`);
    const r = await exercise(device, log);
    return { device, backingFile, ...r };
  } finally {
    if (device !== null) {
      // detach exactly what we attached, and only while it is still ours
      const back = backingFileOf(device);
      if (back.startsWith(backingFile)) {
        run('losetup', ['-d', device]);
        log(`detached ${device}\n`);
      } else log(`not detaching ${device}: ${back ? `it is now backed by ${back}, not ${backingFile}` : 'it is no longer attached'}\n`);
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Run as a program (node dist/examples/...), not imported. */
function isMainModule(): boolean {
  try {
    return !!process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href;
  } catch {
    return false;
  }
}

if (isMainModule()) {
  try {
    const r = await main();
    if (r.fsckProblems?.length) process.exitCode = 1;
  } catch (e) {
    console.error(`loop-device-test: failed: ${(e as Error).message}`);
    process.exitCode = 1;
  }
}
