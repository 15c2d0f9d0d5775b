// SPDX-License-Identifier: GPL-2.0-only
/*
 * API contract suite (/work/shared/API.md), through the public exports only
 * (src/index.ts). Short behaviour-level checks of every public method of
 * Store, Transaction, Iter and the position helpers, and every error code
 * reachable from the public API, each produced for real: instanceof
 * SixtreeError, its .code, and a message naming the argument/value/path.
 *
 * On-disk corruption (ERR_VERSION, ERR_CHECKSUM) is made with plain fs writes
 * on a closed store, the offsets taken from the byte layout documented in
 * src/format/superblock.ts and src/format/btree-node.ts. ERR_LOCKED and crash
 * recovery use a real second node process that imports dist/src/index.js
 * (the suite runs tsc first, as test/cli.test.ts does).
 *
 * Not reachable from the public API (see the report / notes below):
 *  - ERR_TOO_MANY_RESTARTS: restarts only come from internal lock conflicts;
 *    no public call makes a transaction restart on demand.
 *  - ERR_NO_DIRECT_IO, ERR_IO, ERR_NO_SPACE, ERR_TOPOLOGY: need a special file
 *    system, a failing device or a full store; covered by test/io and test/journal.
 */
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { closeSync, existsSync, fsyncSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  Iter,
  POS_MAX,
  POS_MIN,
  PUBLIC_CODES,
  SixtreeError,
  Store,
  Transaction,
  bposCmp,
  bposPredecessor,
  bposSuccessor,
  bposToText,
  pos,
  type Bpos,
  type Entry,
  type Hole,
  type NodeInfo,
  type PosLike,
} from '../src/index.js';
import { prng, tmpStore, type TmpStore } from './helpers/store.js';
import { BlockDevice } from '../src/io/block-device.js';
import { ext4SkipReason, loopSkipReason, withExt4Mounted, withLoop, withScratchImage } from './helpers/loop.js';
import { FaultDevice } from '../src/io/fault-device.js';
import { NodeKeys } from '../src/btree/bset.js';
import { btreePtrDecode } from '../src/btree/bkey.js';

const loopReason = loopSkipReason();
if (loopReason) console.log(`4096-byte-sector loop device: skipped (${loopReason})`);
const ext4Reason = ext4SkipReason();
if (ext4Reason) console.log(`ERR_DEVICE_BUSY on a mounted loop device: skipped (${ext4Reason})`);

const DIST_INDEX = fileURLToPath(new URL('../dist/src/index.js', import.meta.url));
const U64_MAX = (1n << 64n) - 1n;
const U32_MAX = 0xffffffff;
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array | undefined): string | undefined => (b === undefined ? undefined : new TextDecoder().decode(b));
const BTREES = [{ name: 'kv' }, { name: 'ext', extents: true }];

/* ------------------------------------------------------------------ helpers */

/**
 * Run f (sync throw or rejection both count), expect a SixtreeError with this
 * code whose message contains every string in `mentions`.
 */
async function expectCode(f: () => unknown, code: string, ...mentions: string[]): Promise<SixtreeError> {
  let threw = false;
  let err: unknown;
  try {
    await f();
  } catch (e) {
    threw = true;
    err = e;
  }
  expect(threw, `expected ${code}, but the call succeeded`).toBe(true);
  expect(err).toBeInstanceOf(Error);
  expect(err, `expected a SixtreeError ${code}, got ${String(err)}`).toBeInstanceOf(SixtreeError);
  const se = err as SixtreeError;
  expect(se.code, se.message).toBe(code);
  expect((PUBLIC_CODES as readonly string[]).includes(se.code)).toBe(true);
  expect(typeof se.message).toBe('string');
  expect(se.message.length).toBeGreaterThan(0);
  for (const m of mentions) expect(se.message, `message of ${code} should name ${JSON.stringify(m)}`).toContain(m);
  return se;
}

async function drain<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const e of it) out.push(e);
  return out;
}

const posText = (p: Bpos): string => `${p.inode}:${p.offset}:${p.snapshot}`;
const keysOf = (es: Array<Entry | Hole | null>): string[] => es.map((e) => (e === null ? 'null' : ('hole' in e ? 'hole ' : '') + posText(e.pos)));

function expectPos(p: Bpos | undefined, inode: bigint | number, offset: bigint | number, snapshot = 0): void {
  expect(p).toBeDefined();
  expect(p!.inode).toBe(BigInt(inode));
  expect(p!.offset).toBe(BigInt(offset));
  expect(p!.snapshot).toBe(snapshot);
}

/** Castagnoli CRC-32C (the superblock checksum), table-driven. */
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();
function crc32c(b: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < b.length; i++) c = CRC_TABLE[(c ^ b[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/* Superblock layout (src/format/superblock.ts): two 4 KiB copies at 4 KiB and 8 KiB. */
const SB_OFFSETS = [4096, 8192] as const;
const SB_BYTES = 4096;
const SB_VERSION_OFF = 8;
const SB_LEN_OFF = 12;
const SB_CSUM_OFF = 16;

function readAt(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(length);
    expect(readSync(fd, b, 0, length, offset)).toBe(length);
    return b;
  } finally {
    closeSync(fd);
  }
}

function writeAt(path: string, offset: number, data: Uint8Array): void {
  const fd = openSync(path, 'r+');
  try {
    expect(writeSync(fd, data, 0, data.length, offset)).toBe(data.length);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Edit a superblock copy and reseal its checksum (checking first that our crc32c agrees with the stored one). */
function editSuperblock(path: string, copy: 0 | 1, edit: (v: DataView) => void): void {
  const off = SB_OFFSETS[copy];
  const b = readAt(path, off, SB_BYTES);
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const len = v.getUint32(SB_LEN_OFF, true);
  const stored = v.getUint32(SB_CSUM_OFF, true);
  v.setUint32(SB_CSUM_OFF, 0, true);
  expect(crc32c(b.subarray(0, len)), 'test crc32c must match the stored superblock checksum').toBe(stored);
  edit(v);
  v.setUint32(SB_CSUM_OFF, 0, true);
  v.setUint32(SB_CSUM_OFF, crc32c(b.subarray(0, len)), true);
  writeAt(path, off, b);
}

/* A child node process using the built package. */
interface Child {
  proc: ChildProcessWithoutNullStreams;
  /** Resolves with the first stdout line equal to / starting with `prefix`. */
  line(prefix: string): Promise<string>;
  exit: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

function child(body: string): Child {
  const script = `const { Store, pos, SixtreeError } = await import(${JSON.stringify(pathToFileURL(DIST_INDEX).href)});\n${body}`;
  const proc = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const waiters: Array<{ prefix: string; resolve: (l: string) => void }> = [];
  const scan = (): void => {
    for (const l of stdout.split('\n')) {
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (l.startsWith(waiters[i]!.prefix)) waiters.splice(i, 1)[0]!.resolve(l);
      }
    }
  };
  proc.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    scan();
  });
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exit = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    proc.on('error', reject);
    proc.on('close', (code) => {
      for (const w of waiters.splice(0)) w.resolve(`<exited ${code}: ${stderr.trim()}>`);
      resolve({ code, stdout, stderr });
    });
  });
  return {
    proc,
    exit,
    line(prefix) {
      return new Promise((resolve) => {
        waiters.push({ prefix, resolve });
        scan();
      });
    },
  };
}

let scratch: string;
let scratchN = 0;
/** A fresh path under the suite's scratch directory (not created). */
const freshPath = (): string => join(scratch, `s${scratchN++}.img`);

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'sixtree-api-'));
  if (!existsSync(DIST_INDEX)) throw new Error(`${DIST_INDEX} missing: run npx tsc -p tsconfig.json first`);
});
afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

/** Format a small store at a fresh path (4 KiB nodes, 512 B blocks, 16 MiB). */
async function formatSmall(path = freshPath(), extra: Record<string, unknown> = {}): Promise<string> {
  await Store.format(path, { btrees: BTREES, size: 16 << 20, nodeSize: 4096, blockSize: 512, ...extra });
  return path;
}

/* ================================================================ positions */

describe('positions: pos, POS_MIN, POS_MAX, bposCmp', () => {
  it('pos() builds an immutable Bpos with bigint inode/offset and snapshot 0 by default', () => {
    const p = pos(1, 2);
    expectPos(p, 1, 2, 0);
    expect(typeof p.inode).toBe('bigint');
    expect(typeof p.offset).toBe('bigint');
    expect(typeof p.snapshot).toBe('number');
    expect(Object.isFrozen(p)).toBe(true);
    expectPos(pos(7n, 9n, 3), 7, 9, 3);
    expectPos(pos(U64_MAX, U64_MAX, U32_MAX), U64_MAX, U64_MAX, U32_MAX);
    expectPos(pos(Number.MAX_SAFE_INTEGER, 0), BigInt(Number.MAX_SAFE_INTEGER), 0);
  });

  it('bposToText, bposSuccessor, bposPredecessor take any PosLike and validate it (ERR_INVALID_ARG, never a TypeError or a made-up answer)', async () => {
    expect(bposToText({ inode: 1, offset: 2 })).toBe('1:2:0');
    expect(bposSuccessor({ inode: 1, offset: 2 })).toEqual(pos(1, 2, 1));
    expect(bposPredecessor({ inode: 1n, offset: 2n, snapshot: 0 })).toEqual(pos(1, 1, U32_MAX));
    const bad: unknown[] = [null, undefined, { inode: -1, offset: 0 }, { inode: 2n ** 64n, offset: 0n }, Object.freeze({ inode: 1n, offset: -1n, snapshot: 0 }), { inode: 1, offset: 0, snapshot: 2 ** 32 }];
    for (const b of bad) {
      for (const f of [bposToText, bposSuccessor, bposPredecessor] as Array<(p: unknown) => unknown>) await expectCode(() => f(b), 'ERR_INVALID_ARG');
    }
  });

  it('POS_MIN is 0:0:0 and POS_MAX is 2^64-1 : 2^64-1 : 2^32-1', () => {
    expectPos(POS_MIN, 0, 0, 0);
    expectPos(POS_MAX, U64_MAX, U64_MAX, U32_MAX);
  });

  it('bposCmp orders by inode, then offset, then snapshot and returns exactly -1, 0 or 1', () => {
    expect(bposCmp(pos(1, 5), pos(1, 5))).toBe(0);
    expect(bposCmp(pos(1, 5), pos(2, 0))).toBe(-1);
    expect(bposCmp(pos(2, 0), pos(1, 99))).toBe(1);
    expect(bposCmp(pos(1, 5), pos(1, 6))).toBe(-1);
    expect(bposCmp(pos(1, 6, 0), pos(1, 5, 9))).toBe(1);
    expect(bposCmp(pos(1, 5, 1), pos(1, 5, 2))).toBe(-1);
    expect(bposCmp(pos(1, 5, 2), pos(1, 5, 1))).toBe(1);
    expect(bposCmp(POS_MIN, POS_MAX)).toBe(-1);
    expect(bposCmp(POS_MAX, POS_MIN)).toBe(1);
    // large values compare as unsigned 64-bit, not as doubles
    expect(bposCmp(pos(0, U64_MAX - 1n), pos(0, U64_MAX))).toBe(-1);
    // PosLike: plain objects, numbers, snapshot defaulting to 0
    expect(bposCmp({ inode: 3, offset: 4 }, pos(3, 4, 0))).toBe(0);
    expect(bposCmp({ inode: 3n, offset: 4, snapshot: 1 }, { inode: 3, offset: 4n })).toBe(1);
  });

  describe('ERR_INVALID_ARG for anything but u64 inode/offset and u32 snapshot', () => {
    const bad: Array<[string, () => unknown, string[]]> = [
      ['negative inode', () => pos(-1, 0), ['inode', '-1']],
      ['negative bigint offset', () => pos(0, -1n), ['offset', '-1']],
      ['fractional inode', () => pos(1.5, 0), ['inode', '1.5']],
      ['fractional offset', () => pos(0, 0.25), ['offset', '0.25']],
      ['NaN inode', () => pos(NaN, 0), ['inode', 'NaN']],
      ['Infinity offset', () => pos(0, Infinity), ['offset', 'Infinity']],
      ['inode 2^64 (bigint)', () => pos(1n << 64n, 0), ['inode', '18446744073709551616']],
      ['offset 2^64 (bigint)', () => pos(0, 1n << 64n), ['offset', '18446744073709551616']],
      ['inode 2^64 (number)', () => pos(2 ** 64, 0), ['inode']],
      ['string inode', () => pos('1' as unknown as number, 0), ['inode', '"1"']],
      ['null offset', () => pos(0, null as unknown as number), ['offset', 'null']],
      ['undefined inode', () => pos(undefined as unknown as number, 0), ['inode', 'undefined']],
      ['negative snapshot', () => pos(0, 0, -1), ['snapshot', '-1']],
      ['fractional snapshot', () => pos(0, 0, 0.5), ['snapshot', '0.5']],
      ['snapshot 2^32', () => pos(0, 0, 2 ** 32), ['snapshot', '4294967296']],
      ['string snapshot', () => pos(0, 0, '0' as unknown as number), ['snapshot']],
      ['bposCmp: negative inode in a PosLike', () => bposCmp({ inode: -1, offset: 0 }, POS_MIN), ['inode', '-1']],
      ['bposCmp: offset too large in a PosLike', () => bposCmp(POS_MIN, { inode: 0n, offset: 1n << 64n }), ['offset']],
      ['bposCmp: missing offset', () => bposCmp({ inode: 1 } as unknown as PosLike, POS_MIN), ['offset', 'undefined']],
      ['bposCmp: bad snapshot', () => bposCmp({ inode: 1, offset: 1, snapshot: 2 ** 32 }, POS_MIN), ['snapshot']],
      ['bposCmp: null', () => bposCmp(null as unknown as PosLike, POS_MIN), ['null']],
      ['bposCmp: a string', () => bposCmp(POS_MIN, '1:2:0' as unknown as PosLike), ['1:2:0']],
    ];
    for (const [name, f, mentions] of bad) {
      it(name, async () => {
        await expectCode(f, 'ERR_INVALID_ARG', ...mentions);
      });
    }
  });
});

/* ================================================================ format / open */

describe('Store.format and Store.open', () => {
  it('format creates a store of the given size; open exposes btrees, nodeSize, maxValueSize', async () => {
    const path = freshPath();
    await Store.format(path, { btrees: BTREES, size: 16 << 20, nodeSize: 8192, blockSize: 512 });
    expect(statSync(path).size).toBe(16 << 20);
    const store = await Store.open(path);
    try {
      expect([...store.btrees]).toEqual(['kv', 'ext']);
      expect(store.nodeSize).toBe(8192);
      expect(Number.isInteger(store.maxValueSize)).toBe(true);
      expect(store.maxValueSize).toBeGreaterThan(0);
      expect(store.maxValueSize).toBeLessThan(store.nodeSize);
    } finally {
      await store.close();
    }
  });

  it('size as a bigint; nodeSize defaults to 256 KiB; journalSize accepted; extents flag optional', async () => {
    const path = freshPath();
    await Store.format(path, { btrees: [{ name: 'a' }, { name: 'b_2', extents: false }, { name: 'c', extents: true }], size: 64n << 20n, blockSize: 4096, journalSize: 1 << 20 });
    const store = await Store.open(path, { cacheSize: 32 << 20 });
    try {
      expect(store.nodeSize).toBe(256 * 1024);
      expect([...store.btrees]).toEqual(['a', 'b_2', 'c']);
      await store.put('a', pos(1, 1), enc('x'));
      expect(dec(await store.get('a', pos(1, 1)))).toBe('x');
    } finally {
      await store.close();
    }
  });

  it('format over an existing empty regular file uses size to extend it', async () => {
    const path = freshPath();
    writeFileSync(path, new Uint8Array(0));
    await formatSmall(path);
    expect(statSync(path).size).toBe(16 << 20);
    const store = await Store.open(path);
    await store.close();
  });

  it('format writes a file\'s whole journal ring (no unwritten extent left for a commit\'s fdatasync to convert)', async () => {
    const path = freshPath();
    await formatSmall(path);
    const sb = readAt(path, SB_OFFSETS[0], SB_BYTES);
    const journalOffset = Number(sb.readBigUInt64LE(64));
    const journalBytes = Number(sb.readBigUInt64LE(72));
    expect(journalBytes).toBeGreaterThan(0);
    // filefrag (e2fsprogs) lists the extents, flagging those allocated but never written
    const out = execFileSync('filefrag', ['-v', '-b4096', path], { encoding: 'utf8' });
    const unwritten: Array<[number, number]> = [];
    for (const m of out.matchAll(/^\s*\d+:\s+(\d+)\.\.\s*(\d+):.*unwritten/gm)) unwritten.push([Number(m[1]) * 4096, (Number(m[2]) + 1) * 4096]);
    const overlapping = unwritten.filter(([a, b]) => a < journalOffset + journalBytes && b > journalOffset);
    expect(overlapping).toEqual([]);
  });

  it('ERR_EXISTS formatting over a store without force; force: true formats a fresh empty store', async () => {
    const path = await formatSmall();
    const s1 = await Store.open(path);
    await s1.put('kv', pos(1, 1), enc('old'));
    await s1.close();
    await expectCode(() => Store.format(path, { btrees: BTREES }), 'ERR_EXISTS', path);
    await expectCode(() => Store.format(path, { btrees: BTREES, force: false }), 'ERR_EXISTS', path);
    // the store is untouched
    const s2 = await Store.open(path);
    expect(dec(await s2.get('kv', pos(1, 1)))).toBe('old');
    await s2.close();
    await Store.format(path, { btrees: [{ name: 'other' }], nodeSize: 4096, blockSize: 512, force: true });
    const s3 = await Store.open(path);
    try {
      expect([...s3.btrees]).toEqual(['other']);
      expect(await drain(s3.range('other'))).toEqual([]);
    } finally {
      await s3.close();
    }
  });

  it('ERR_NOT_FOUND_DEVICE: format without size, or open, of a missing path', async () => {
    const path = join(scratch, 'missing', 'nothing.img');
    await expectCode(() => Store.format(path, { btrees: BTREES }), 'ERR_NOT_FOUND_DEVICE', path);
    await expectCode(() => Store.open(path), 'ERR_NOT_FOUND_DEVICE', path);
    const path2 = freshPath();
    await expectCode(() => Store.open(path2, { readOnly: true }), 'ERR_NOT_FOUND_DEVICE', path2);
    expect(existsSync(path2)).toBe(false);
  });

  it('ERR_TOO_SMALL: a device too small for the layout; a store whose device shrank', async () => {
    await expectCode(() => Store.format(freshPath(), { btrees: BTREES, size: 1 << 20 }), 'ERR_TOO_SMALL');
    await expectCode(() => Store.format(freshPath(), { btrees: BTREES, size: 64 * 1024, nodeSize: 4096, blockSize: 512 }), 'ERR_TOO_SMALL', String(64 * 1024));
    const path = await formatSmall();
    truncateSync(path, 8 << 20);
    await expectCode(() => Store.open(path), 'ERR_TOO_SMALL', path);
  });

  it('ERR_BAD_MAGIC: open of a file that is not a sixtree store', async () => {
    const path = freshPath();
    writeFileSync(path, Buffer.alloc(1 << 20, 0));
    await expectCode(() => Store.open(path), 'ERR_BAD_MAGIC', path);
    const path2 = freshPath();
    writeFileSync(path2, Buffer.alloc(1 << 20, 0x5a));
    await expectCode(() => Store.open(path2, { readOnly: true }), 'ERR_BAD_MAGIC', path2);
    // a file smaller than one block: its usable size is 0, and the message says why
    const path3 = freshPath();
    writeFileSync(path3, Buffer.alloc(100, 1));
    await expectCode(() => Store.open(path3), 'ERR_BAD_MAGIC', path3, 'whole 512-byte blocks');
  });

  it('ERR_VERSION: a superblock (checksum valid) written by another format version', async () => {
    const path = await formatSmall();
    const before = new DataView(readAt(path, SB_OFFSETS[0], 16).buffer);
    expect(before.getUint32(SB_VERSION_OFF, true)).toBe(2);
    // a store of the earlier format (32-byte bset headers) and one of a later format
    for (const other of [1, 3]) {
      for (const copy of [0, 1] as const) editSuperblock(path, copy, (v) => v.setUint32(SB_VERSION_OFF, other, true));
      const e = await expectCode(() => Store.open(path), 'ERR_VERSION', path, `version ${other}, this code reads version 2`);
      expect(e.message).toMatch(/offset (4096|8192)/);
    }
    const e = await expectCode(() => Store.open(path), 'ERR_VERSION', path, 'version 3');
    expect(e.message).toMatch(/offset (4096|8192)/);
    await expectCode(() => Store.open(path, { readOnly: true }), 'ERR_VERSION', path);
  });

  it('ERR_CHECKSUM: both superblock copies corrupt (one corrupt copy is survived)', async () => {
    const path = await formatSmall();
    const s = await Store.open(path);
    await s.put('kv', pos(1, 1), enc('v'));
    await s.close();
    // copy 0 corrupt: the store still opens from copy 1
    const b0 = readAt(path, SB_OFFSETS[0] + 40, 1);
    writeAt(path, SB_OFFSETS[0] + 40, new Uint8Array([b0[0]! ^ 0xff]));
    const s2 = await Store.open(path, { readOnly: true });
    expect(dec(await s2.get('kv', pos(1, 1)))).toBe('v');
    await s2.close();
    // both corrupt: ERR_CHECKSUM naming both offsets
    const b1 = readAt(path, SB_OFFSETS[1] + 40, 1);
    writeAt(path, SB_OFFSETS[1] + 40, new Uint8Array([b1[0]! ^ 0xff]));
    await expectCode(() => Store.open(path), 'ERR_CHECKSUM', path, '4096', '8192');
  });

  it('ERR_CACHE_TOO_SMALL: cacheSize below the reserve', async () => {
    const path = await formatSmall();
    await expectCode(() => Store.open(path, { cacheSize: 4096 }), 'ERR_CACHE_TOO_SMALL', 'cacheSize', '4096');
    await expectCode(() => Store.open(path, { cacheSize: 1, readOnly: true }), 'ERR_CACHE_TOO_SMALL', 'cacheSize');
    // and the failed open left no lock behind
    const s = await Store.open(path, { cacheSize: 8 << 20 });
    expect(s.stats().cache.budgetBytes).toBe(8 << 20);
    await s.close();
  });

  it('without the io option a store uses the backend SIXTREE_IO names, else napi (the koffi test project runs this file on koffi)', async () => {
    const path = await formatSmall(freshPath());
    const s = await Store.open(path);
    const want = process.env.SIXTREE_IO === 'koffi' ? 'koffi' : 'napi';
    expect(s.engine.dev.toText()).toMatch(new RegExp(`io: +${want}, `));
    expect(s.toText()).toMatch(new RegExp(`device: .*, io ${want}\n`));
    await s.close();
  });

  it("io: 'koffi' and 'napi' backends both open the store", async () => {
    const path = await formatSmall(freshPath(), { io: 'koffi' });
    for (const io of ['koffi', 'napi'] as const) {
      const s = await Store.open(path, { io });
      await s.put('kv', pos(1, 1), enc(io));
      expect(dec(await s.get('kv', pos(1, 1)))).toBe(io);
      await s.close();
    }
  });

  describe('ERR_INVALID_ARG: Store.format arguments and options', () => {
    const ok = { btrees: BTREES, size: 16 << 20, nodeSize: 4096, blockSize: 512 };
    const bad: Array<[string, (p: string) => unknown, string[]]> = [
      ['path not a string', () => Store.format(42 as unknown as string, ok), ['path', '42']],
      ['empty path', () => Store.format('', ok), ['path']],
      ['opts missing', (p) => (Store.format as (p: string, o?: unknown) => Promise<void>)(p), ['opts']],
      ['opts not an object', (p) => Store.format(p, 'kv' as unknown as typeof ok), ['opts', '"kv"']],
      ['misspelled option nodesize', (p) => Store.format(p, { ...ok, nodesize: 4096 } as unknown as typeof ok), ['nodesize']],
      ['misspelled option blocksize', (p) => Store.format(p, { ...ok, blocksize: 512 } as unknown as typeof ok), ['blocksize']],
      ['misspelled option btree', (p) => Store.format(p, { btree: BTREES, size: 16 << 20 } as unknown as typeof ok), ['btree']],
      ['misspelled btree option extent', (p) => Store.format(p, { ...ok, btrees: [{ name: 'e', extent: true }] } as unknown as typeof ok), ['extent']],
      ['btrees empty', (p) => Store.format(p, { ...ok, btrees: [] }), ['btrees']],
      ['btrees not an array', (p) => Store.format(p, { ...ok, btrees: 'kv' } as unknown as typeof ok), ['btrees']],
      ['btree name with capitals', (p) => Store.format(p, { ...ok, btrees: [{ name: 'Kv' }] }), ['name', '"Kv"']],
      ['btree name starting with a digit', (p) => Store.format(p, { ...ok, btrees: [{ name: '1kv' }] }), ['name', '"1kv"']],
      ['btree name of 33 characters', (p) => Store.format(p, { ...ok, btrees: [{ name: 'a'.repeat(33) }] }), ['name']],
      ['btree name missing', (p) => Store.format(p, { ...ok, btrees: [{}] } as unknown as typeof ok), ['name']],
      ['duplicate btree names', (p) => Store.format(p, { ...ok, btrees: [{ name: 'kv' }, { name: 'kv', extents: true }] }), ['name', '"kv"']],
      ['extents not a boolean', (p) => Store.format(p, { ...ok, btrees: [{ name: 'kv', extents: 1 }] } as unknown as typeof ok), ['extents']],
      ['size 0', (p) => Store.format(p, { ...ok, size: 0 }), ['size', '0']],
      ['size negative', (p) => Store.format(p, { ...ok, size: -4096 }), ['size', '-4096']],
      ['size fractional', (p) => Store.format(p, { ...ok, size: 1.5e6 + 0.5 }), ['size']],
      ['size not a multiple of the device block', (p) => Store.format(p, { ...ok, size: (16 << 20) + 100 }), ['opts.size', 'multiple of 512']],
      ['size a string', (p) => Store.format(p, { ...ok, size: '16M' } as unknown as typeof ok), ['size', '"16M"']],
      ['size negative bigint', (p) => Store.format(p, { ...ok, size: -1n }), ['size']],
      ['nodeSize not a power of two', (p) => Store.format(p, { ...ok, nodeSize: 5000 }), ['nodeSize', '5000']],
      ['nodeSize below 4 KiB', (p) => Store.format(p, { ...ok, nodeSize: 2048 }), ['nodeSize', '2048']],
      ['nodeSize above 1 MiB', (p) => Store.format(p, { ...ok, nodeSize: 2 << 20 }), ['nodeSize', String(2 << 20)]],
      ['nodeSize a string', (p) => Store.format(p, { ...ok, nodeSize: '4096' } as unknown as typeof ok), ['nodeSize']],
      ['nodeSize not a multiple of blockSize', (p) => Store.format(p, { ...ok, nodeSize: 4096, blockSize: 8192 }), ['nodeSize', 'blockSize']],
      ['blockSize not a power of two', (p) => Store.format(p, { ...ok, blockSize: 1000 }), ['blockSize', '1000']],
      ['blockSize below 512', (p) => Store.format(p, { ...ok, blockSize: 256 }), ['blockSize', '256']],
      ['blockSize 0', (p) => Store.format(p, { ...ok, blockSize: 0 }), ['blockSize']],
      ['journalSize negative', (p) => Store.format(p, { ...ok, journalSize: -1 }), ['journalSize']],
      ['force not a boolean', (p) => Store.format(p, { ...ok, force: 'yes' } as unknown as typeof ok), ['force', '"yes"']],
    ];
    for (const [name, f, mentions] of bad) {
      it(name, async () => {
        const p = freshPath();
        await expectCode(() => f(p), 'ERR_INVALID_ARG', ...mentions);
        expect(existsSync(p), 'a rejected format must not create the file').toBe(false);
      });
    }
  });

  it('inlineFlush: a commit alone in flight is written and flushed inline; overlapping commits still share entries; without it nothing is inline', async () => {
    const path = await formatSmall();
    for (const inlineFlush of [true, false]) {
      const store = await Store.open(path, { inlineFlush });
      try {
        const j0 = store.stats().journal;
        for (let i = 0; i < 50; i++) await store.put('kv', pos(7, i), enc(`v${i}`));
        const j1 = store.stats().journal;
        // one entry per put; inline unless a node write completed since the last flush (then a preflush comes first, asynchronously)
        expect(j1.entriesWritten - j0.entriesWritten).toBeGreaterThanOrEqual(50);
        if (inlineFlush) expect(j1.inlineWrites - j0.inlineWrites).toBeGreaterThanOrEqual(40);
        else expect(j1.inlineWrites).toBe(0);
        await Promise.all(Array.from({ length: 64 }, (_, i) => store.put('kv', pos(8, i), enc(`w${i}`))));
        const j2 = store.stats().journal;
        // group commit: far fewer entries than commits; only a commit left alone at the end may go inline
        expect(j2.entriesWritten - j1.entriesWritten).toBeLessThan(32);
        expect(j2.inlineWrites - j1.inlineWrites).toBeLessThanOrEqual(2);
      } finally {
        await store.close();
      }
      const again = await Store.open(path);
      try {
        expect(dec(await again.get('kv', pos(7, 49)))).toBe('v49');
        expect(dec(await again.get('kv', pos(8, 63)))).toBe('w63');
      } finally {
        await again.close();
      }
    }
  });

  it('a commit whose keys overflow several leaves splits them all in one round (stats().transactions.splitRounds), and every key is there after', async () => {
    const path = await formatSmall();
    const store = await Store.open(path);
    try {
      // leaves about half full: 1,500 keys of 24-byte values in 4 KiB nodes
      await store.transact((tx) => {
        for (let i = 0; i < 1500; i++) tx.put('kv', pos(11, i * 100), new Uint8Array(24).fill(1));
      });
      const s0 = store.stats();
      // then 30 more keys next to every 100th one: each leaf gets more than it has room for
      await store.transact((tx) => {
        for (let i = 0; i < 1500; i += 50) for (let j = 1; j <= 30; j++) tx.put('kv', pos(11, i * 100 + j), new Uint8Array(24).fill(2));
      });
      const s1 = store.stats();
      const splits = s1.interior.splits! - s0.interior.splits!;
      const rounds = s1.transactions.splitRounds - s0.transactions.splitRounds;
      expect(splits).toBeGreaterThanOrEqual(10);
      // one round per split before: now a round splits every leaf short of room (a parent split can take another)
      expect(rounds).toBeGreaterThanOrEqual(1);
      expect(rounds).toBeLessThanOrEqual(3);
      for (let i = 0; i < 1500; i += 50) {
        expect((await store.get('kv', pos(11, i * 100)))![0]).toBe(1);
        expect((await store.get('kv', pos(11, i * 100 + 30)))![0]).toBe(2);
      }
    } finally {
      await store.close();
    }
  });

  it("a commit's journal write is submitted before its leaves take the keys (the flush overlaps the apply), unless node writes need a preflush", async () => {
    // 64 KiB nodes: the 1,000 keys fit one leaf, so no split writes nodes (a node write completed makes the next entry preflush)
    const path = await formatSmall(freshPath(), { nodeSize: 65536 });
    const store = await Store.open(path);
    const dev = store.engine.dev as BlockDevice;
    const events: string[] = [];
    const writeFlush = dev.writeFlush.bind(dev);
    dev.writeFlush = (buf: Uint8Array, off: number) => {
      events.push('journal write');
      return writeFlush(buf, off);
    };
    const insertKeys = NodeKeys.prototype.insertKeys;
    NodeKeys.prototype.insertKeys = function (this: NodeKeys, ...a: Parameters<NodeKeys['insertKeys']>) {
      // the commit's run of 50 keys (a split's interior update inserts pointers too, in its own entry)
      const [keys, from = 0, to = keys.length] = a;
      if (to - from === 50) events.push('insert');
      return insertKeys.apply(this, a);
    };
    try {
      let submittedFirst = 0;
      for (let c = 0; c < 20; c++) {
        events.length = 0;
        const preflushes = store.engine.counters.journalPreflushes;
        await store.transact((tx) => {
          for (let i = 0; i < 50; i++) tx.put('kv', pos(9, c * 50 + i), enc(`c${c}`));
        });
        expect(events).toContain('journal write');
        expect(events).toContain('insert');
        // (a commit may also find the previous entry's write still in flight, the open entry's write from
        // the store's open for one: it then joins the next write, group commit)
        if (store.engine.counters.journalPreflushes === preflushes && events.indexOf('journal write') < events.indexOf('insert')) submittedFirst++;
      }
      expect(submittedFirst).toBeGreaterThanOrEqual(15);
    } finally {
      NodeKeys.prototype.insertKeys = insertKeys;
      await store.close();
    }
    const again = await Store.open(path);
    try {
      expect(dec(await again.get('kv', pos(9, 999)))).toBe('c19');
    } finally {
      await again.close();
    }
  });

  describe('ERR_INVALID_ARG: Store.open arguments and options', () => {
    let path: string;
    beforeAll(async () => {
      path = await formatSmall();
    });
    const bad: Array<[string, (p: string) => unknown, string[]]> = [
      ['path not a string', () => Store.open(7 as unknown as string), ['path', '7']],
      ['empty path', () => Store.open(''), ['path']],
      ['opts not an object', (p) => Store.open(p, 5 as unknown as object), ['opts', '5']],
      ['opts null', (p) => Store.open(p, null as unknown as object), ['opts', 'null']],
      ['misspelled option cachesize', (p) => Store.open(p, { cachesize: 1 << 20 } as unknown as object), ['cachesize']],
      ['misspelled option readonly', (p) => Store.open(p, { readonly: true } as unknown as object), ['readonly']],
      ['cacheSize negative', (p) => Store.open(p, { cacheSize: -1 }), ['cacheSize', '-1']],
      ['cacheSize fractional', (p) => Store.open(p, { cacheSize: 1e6 + 0.5 }), ['cacheSize']],
      ['cacheSize a string', (p) => Store.open(p, { cacheSize: '64M' } as unknown as object), ['cacheSize', '"64M"']],
      ['readOnly not a boolean', (p) => Store.open(p, { readOnly: 1 } as unknown as object), ['readOnly', '1']],
      ['io unknown backend', (p) => Store.open(p, { io: 'posix' } as unknown as object), ['io', '"posix"']],
      ['inlineFlush not a boolean', (p) => Store.open(p, { inlineFlush: 'yes' } as unknown as object), ['inlineFlush', '"yes"']],
    ];
    for (const [name, f, mentions] of bad) {
      it(name, async () => {
        await expectCode(() => f(path), 'ERR_INVALID_ARG', ...mentions);
      });
    }
    it('after all those rejections the store still opens (no lock leaked)', async () => {
      const s = await Store.open(path);
      await s.close();
    });
  });
});

/* ================================================================ Store methods */

describe('Store methods', () => {
  let t: TmpStore;
  let store: Store;
  beforeAll(async () => {
    t = await tmpStore({ sizeBytes: 16 << 20 });
    store = t.store;
  });
  afterAll(async () => {
    await t.cleanup();
  });

  it('a loop of awaited get()s answered from cache, or a range() over cached leaves, still lets I/O completions in: a put issued before it resolves long before it ends', async () => {
    await store.transact((tx) => {
      for (let i = 0; i < 3000; i++) tx.put('kv', pos(77, i), enc(`c${i}`));
    });
    const y0 = store.stats().lookups.yields;
    const N = 200_000;
    let i = 0;
    let putDoneAt = -1;
    const put = store.put('kv', pos(78, 1), enc('w')).then(() => {
      putDoneAt = i;
    });
    // every get is answered from cache: without a turn of the event loop now and then, the put's journal write completes only after the loop
    for (; i < N; i++) await store.get('kv', pos(77, i % 3000));
    await put;
    expect(putDoneAt).toBeGreaterThanOrEqual(0);
    expect(putDoneAt).toBeLessThan(N - 10_000);
    expect(store.stats().lookups.yields).toBeGreaterThan(y0);
    // the same for a scan: 3,000 entries 60 times over, a put issued first
    let seen = 0;
    let put2DoneAt = -1;
    const put2 = store.put('kv', pos(78, 2), enc('w')).then(() => {
      put2DoneAt = seen;
    });
    for (let r = 0; r < 60; r++) for await (const e of store.range('kv', { start: pos(77, 0), end: pos(77, 3000) })) seen += e.value.length > 0 ? 1 : 0;
    await put2;
    expect(seen).toBe(180_000);
    expect(put2DoneAt).toBeGreaterThanOrEqual(0);
    expect(put2DoneAt).toBeLessThan(seen - 10_000);
  });

  it('put / get / del: one-operation transactions; missing keys read undefined; PosLike objects accepted', async () => {
    expect(await store.get('kv', pos(1, 1))).toBeUndefined();
    await expect(store.put('kv', pos(1, 1), enc('one'))).resolves.toBeUndefined();
    const v = await store.get('kv', pos(1, 1));
    expect(v).toBeInstanceOf(Uint8Array);
    expect(dec(v)).toBe('one');
    // plain PosLike objects, number or bigint fields, snapshot defaulting to 0
    expect(dec(await store.get('kv', { inode: 1, offset: 1 }))).toBe('one');
    expect(dec(await store.get('kv', { inode: 1n, offset: 1n, snapshot: 0 }))).toBe('one');
    expect(await store.get('kv', pos(1, 1, 1))).toBeUndefined();
    // overwrite; a Buffer is a Uint8Array; empty values are values
    await store.put('kv', { inode: 1, offset: 1 }, Buffer.from('two'));
    expect(dec(await store.get('kv', pos(1, 1)))).toBe('two');
    await store.put('kv', pos(1, 2), new Uint8Array(0));
    const empty = await store.get('kv', pos(1, 2));
    expect(empty).toBeInstanceOf(Uint8Array);
    expect(empty!.length).toBe(0);
    await expect(store.del('kv', pos(1, 1))).resolves.toBeUndefined();
    expect(await store.get('kv', pos(1, 1))).toBeUndefined();
    await store.del('kv', pos(1, 99)); // deleting a missing key is not an error
    // the store keeps its own copy of the value
    const buf = enc('mine');
    await store.put('kv', pos(1, 3), buf);
    buf[0] = 0;
    expect(dec(await store.get('kv', pos(1, 3)))).toBe('mine');
    // extreme positions
    await store.put('kv', POS_MAX, enc('max'));
    await store.put('kv', POS_MIN, enc('min'));
    expect(dec(await store.get('kv', POS_MAX))).toBe('max');
    expect(dec(await store.get('kv', { inode: U64_MAX, offset: U64_MAX, snapshot: U32_MAX }))).toBe('max');
    expect(dec(await store.get('kv', POS_MIN))).toBe('min');
  });

  it('values up to maxValueSize are stored by put and by putExtent', async () => {
    const big = new Uint8Array(store.maxValueSize).fill(7);
    await store.put('kv', pos(2, 0), big);
    expect(await store.get('kv', pos(2, 0))).toEqual(big);
    await store.transact((tx) => tx.put('kv', pos(2, 1), big));
    expect((await store.get('kv', pos(2, 1)))!.length).toBe(store.maxValueSize);
    // API.md: "maxValueSize: values larger than this: ERR_VALUE_TOO_LARGE" -- so a value of exactly maxValueSize is accepted for extents too
    await store.transact((tx) => tx.putExtent('ext', pos(2, 0), 16, big));
    const [e] = await drain(store.range('ext', { start: pos(2, 0), end: pos(3, 0) }));
    expect(e!.value.length).toBe(store.maxValueSize);
  });

  it('range: start inclusive, end exclusive, reverse, limit; entries carry pos and value', async () => {
    await store.transact((tx) => {
      for (let i = 0; i < 10; i++) tx.put('kv', pos(5, i), enc(`v${i}`));
    });
    const all = await drain(store.range('kv', { start: pos(5, 0), end: pos(6, 0) }));
    expect(all.map((e) => Number(e.pos.offset))).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(all.every((e) => e.pos.inode === 5n && e.pos.snapshot === 0)).toBe(true);
    expect(all.map((e) => dec(e.value))).toEqual(all.map((_, i) => `v${i}`));
    expect(all[0]!.start).toBeUndefined();
    const mid = await drain(store.range('kv', { start: pos(5, 3), end: pos(5, 6) }));
    expect(mid.map((e) => Number(e.pos.offset))).toEqual([3, 4, 5]);
    const rev = await drain(store.range('kv', { start: pos(5, 3), end: pos(5, 6), reverse: true }));
    expect(rev.map((e) => Number(e.pos.offset))).toEqual([5, 4, 3]);
    const lim = await drain(store.range('kv', { start: pos(5, 2), limit: 3 }));
    expect(lim.map((e) => Number(e.pos.offset))).toEqual([2, 3, 4]);
    const revLim = await drain(store.range('kv', { end: pos(6, 0), reverse: true, limit: 2 }));
    expect(revLim.map((e) => Number(e.pos.offset))).toEqual([9, 8]);
    expect(await drain(store.range('kv', { start: pos(5, 0), limit: 0 }))).toEqual([]);
    expect(await drain(store.range('kv', { start: pos(5, 6), end: pos(5, 6) }))).toEqual([]);
    // PosLike objects as start/end (API.md: range opts take PosLike; the declared RangeOpts type
    // says Bpos, so the cast: the type-level check is in api-types.test.ts); no opts is the whole btree
    const pl = await drain(store.range('kv', { start: { inode: 5, offset: 8 } as PosLike as Bpos, end: { inode: 5n, offset: 10n } as PosLike as Bpos }));
    expect(pl.map((e) => Number(e.pos.offset))).toEqual([8, 9]);
    const whole = await drain(store.range('kv'));
    expect(whole.length).toBeGreaterThanOrEqual(10);
    for (let i = 1; i < whole.length; i++) expect(bposCmp(whole[i - 1]!.pos, whole[i]!.pos)).toBe(-1);
    // an AsyncIterableIterator
    const it = store.range('kv', { start: pos(5, 0), end: pos(5, 2) });
    expect(it[Symbol.asyncIterator]()).toBe(it);
    expect((await it.next()).value.pos.offset).toBe(0n);
    expect((await it.next()).value.pos.offset).toBe(1n);
    expect((await it.next()).done).toBe(true);
  });

  it('range over an extents btree returns extents with start, size and valueOffset', async () => {
    await store.transact((tx) => tx.putExtent('ext', pos(6, 100), 50, enc('E')));
    const es = await drain(store.range('ext', { start: pos(6, 0), end: pos(7, 0) }));
    expect(es).toHaveLength(1);
    const e = es[0]!;
    expectPos(e.pos, 6, 150);
    expectPos(e.start, 6, 100);
    expect(e.size).toBe(50n);
    expect(e.valueOffset).toBe(0n);
    expect(dec(e.value)).toBe('E');
    // an extent overlapping [start, end) is returned
    const overl = await drain(store.range('ext', { start: pos(6, 120), end: pos(6, 130) }));
    expect(overl.map((x) => posText(x.pos))).toEqual(['6:150:0']);
  });

  it('flush: committed data on stable storage and no dirty nodes left', async () => {
    await store.put('kv', pos(7, 1), enc('f'));
    const before = store.stats();
    await expect(store.flush()).resolves.toBeUndefined();
    const after = store.stats();
    expect(after.cache.dirty).toBe(0);
    expect(after.io.flushes).toBeGreaterThan(before.io.flushes);
    expect(after.io.writes).toBeGreaterThan(before.io.writes);
  });

  it('shrink: returns how many nodes were freed, at most nr', async () => {
    await store.flush();
    expect(store.shrink(0)).toBe(0);
    const n1 = store.shrink(1);
    expect(Number.isInteger(n1)).toBe(true);
    expect(n1).toBeGreaterThanOrEqual(0);
    expect(n1).toBeLessThanOrEqual(1);
    const n = store.shrink();
    expect(Number.isInteger(n)).toBe(true);
    expect(n).toBeGreaterThanOrEqual(0);
    // the store still works after shrinking
    expect(dec(await store.get('kv', pos(7, 1)))).toBe('f');
  });

  it('stats(): every field API.md lists, plain JSON-serialisable numbers', async () => {
    const s0 = store.stats();
    await store.put('kv', pos(8, 1), enc('s'));
    await store.get('kv', pos(8, 1));
    const s = store.stats();
    const num = (v: unknown): void => {
      expect(typeof v).toBe('number');
      expect(Number.isFinite(v)).toBe(true);
      expect(v as number).toBeGreaterThanOrEqual(0);
    };
    for (const k of ['nodes', 'dirty', 'bytes', 'budgetBytes', 'reserve', 'hits', 'misses', 'evictions', 'cannibalized'] as const) num(s.cache[k]);
    expect(typeof s.cache.notFreed).toBe('object');
    expect(s.cache.notFreed).not.toBeNull();
    for (const v of Object.values(s.cache.notFreed)) num(v);
    for (const k of ['reads', 'writes', 'bytesRead', 'bytesWritten', 'flushes'] as const) num(s.io[k]);
    for (const k of ['seq', 'lastSeq', 'bytesUsed', 'bytesTotal'] as const) num(s.journal[k]);
    for (const k of ['commits', 'restarts'] as const) num(s.transactions[k]);
    // meaning, coarsely
    expect(s.cache.nodes).toBeGreaterThan(0);
    expect(s.cache.reserve).toBeGreaterThan(0);
    expect(s.cache.bytes).toBeGreaterThanOrEqual(s.cache.nodes * store.nodeSize);
    expect(s.cache.budgetBytes).toBeGreaterThan(0);
    expect(s.journal.bytesTotal).toBeGreaterThan(0);
    expect(s.journal.bytesUsed).toBeLessThanOrEqual(s.journal.bytesTotal);
    expect(s.journal.lastSeq).toBeLessThanOrEqual(s.journal.seq);
    expect(s.journal.seq).toBeGreaterThan(s0.journal.seq);
    expect(s.transactions.commits).toBeGreaterThan(s0.transactions.commits);
    expect(s.cache.hits + s.cache.misses).toBeGreaterThan(0);
    // plain and JSON-serialisable (no bigint, no class instances, no cycles)
    const json = JSON.stringify(s);
    expect(JSON.parse(json)).toEqual(s);
    expect(Object.getPrototypeOf(s)).toBe(Object.prototype);
    // a snapshot, not a live view
    const copy = JSON.parse(json);
    await store.put('kv', pos(8, 2), enc('s'));
    expect(s.transactions.commits).toBe(copy.transactions.commits);
  });

  it('toText(): a non-empty human-readable dump naming the btrees', () => {
    const text = store.toText();
    expect(typeof text).toBe('string');
    expect(text.trim().length).toBeGreaterThan(0);
    expect(text).toContain('kv');
    expect(text).toContain('ext');
    expect(text).toMatch(/journal/i);
    expect(text).toMatch(/cache/i);
  });

  it('btrees is read-only', () => {
    expect([...store.btrees]).toEqual(['kv', 'ext']);
    expect(() => (store.btrees as string[]).push('x')).toThrow();
    expect([...store.btrees]).toEqual(['kv', 'ext']);
  });
});

/* ================================================================ transactions */

describe('Store.transact and Transaction', () => {
  let t: TmpStore;
  let store: Store;
  beforeAll(async () => {
    t = await tmpStore({ sizeBytes: 16 << 20 });
    store = t.store;
  });
  afterAll(async () => {
    await t.cleanup();
  });

  it('transact resolves with fn’s value (sync or async fn) and passes a Transaction', async () => {
    expect(await store.transact(() => 42)).toBe(42);
    expect(await store.transact(async (tx) => (tx instanceof Transaction ? 'tx' : 'no'))).toBe('tx');
    const obj = { a: 1 };
    expect(await store.transact(() => obj)).toBe(obj);
  });

  it('put/get/del are buffered, seen by the transaction’s own reads, and commit atomically', async () => {
    await store.put('kv', pos(1, 3), enc('pre'));
    const res = await store.transact(async (tx) => {
      expect(tx.put('kv', pos(1, 1), enc('a'))).toBeUndefined();
      tx.put('kv', { inode: 1, offset: 2 }, enc('b'));
      expect(tx.del('kv', pos(1, 3))).toBeUndefined();
      const seen = [dec(await tx.get('kv', pos(1, 1))), dec(await tx.get('kv', pos(1, 2))), await tx.get('kv', pos(1, 3))];
      // not visible outside before commit
      return seen;
    });
    expect(res).toEqual(['a', 'b', undefined]);
    expect(dec(await store.get('kv', pos(1, 1)))).toBe('a');
    expect(dec(await store.get('kv', pos(1, 2)))).toBe('b');
    expect(await store.get('kv', pos(1, 3))).toBeUndefined();
  });

  it('a put stores the bytes it was given (Buffers too); values the transaction reads back are copies', async () => {
    const b = Buffer.from('aaaa');
    const u = enc('uuuu');
    const ext = Buffer.from('eeee');
    await store.transact(async (tx) => {
      tx.put('kv', pos(9, 1), b);
      tx.put('kv', pos(9, 2), u);
      tx.putExtent('ext', pos(9, 0), 4, ext);
      // the caller reuses its buffers before the commit
      b.fill(0x62);
      u.fill(0x76);
      ext.fill(0x66);
      // and scribbles on what its own reads return
      (await tx.get('kv', pos(9, 1)))!.fill(0x78);
      for (const e of await drain(tx.iter('kv', pos(9, 0), { end: pos(9, 3) }))) e.value.fill(0x79);
      for (const e of await drain(tx.iter('ext', pos(9, 0), { end: pos(9, 4) }))) e.value.fill(0x7a);
      expect(dec(await tx.get('kv', pos(9, 1)))).toBe('aaaa');
    });
    expect(dec(await store.get('kv', pos(9, 1)))).toBe('aaaa');
    expect(dec(await store.get('kv', pos(9, 2)))).toBe('uuuu');
    const [e] = await drain(store.range('ext', { start: pos(9, 0), end: pos(9, 4) }));
    expect(dec(e!.value)).toBe('eeee');
    // Store.put: the same, two of them in flight
    const c = Buffer.from('cccc');
    const d = Buffer.from('dddd');
    const first = store.put('kv', pos(9, 3), c);
    const second = store.put('kv', pos(9, 4), d);
    c.fill(0x7a);
    d.fill(0x7a);
    await Promise.all([first, second]);
    expect(dec(await store.get('kv', pos(9, 3)))).toBe('cccc');
    expect(dec(await store.get('kv', pos(9, 4)))).toBe('dddd');
  });

  it('if fn throws, nothing is committed and transact rejects with that same error', async () => {
    const boom = new Error('boom');
    await expect(
      store.transact(async (tx) => {
        tx.put('kv', pos(2, 1), enc('never'));
        tx.putExtent('ext', pos(2, 0), 10, enc('never'));
        throw boom;
      }),
    ).rejects.toBe(boom);
    expect(await store.get('kv', pos(2, 1))).toBeUndefined();
    expect(await drain(store.range('ext', { start: pos(2, 0), end: pos(3, 0) }))).toEqual([]);
    // a SixtreeError thrown inside fn (here ERR_UNKNOWN_BTREE) also rolls back
    await expectCode(
      () =>
        store.transact((tx) => {
          tx.put('kv', pos(2, 2), enc('never'));
          tx.put('nope', pos(2, 2), enc('never'));
        }),
      'ERR_UNKNOWN_BTREE',
      'nope',
    );
    expect(await store.get('kv', pos(2, 2))).toBeUndefined();
  });

  it('concurrent read-modify-write transactions on one key never lose an update', async () => {
    const k = pos(3, 0);
    await store.put('kv', k, enc('0'));
    const N = 12;
    await Promise.all(
      Array.from({ length: N }, () =>
        store.transact(async (tx) => {
          const v = Number(dec(await tx.get('kv', k)));
          await new Promise((r) => setImmediate(r));
          tx.put('kv', k, enc(String(v + 1)));
        }),
      ),
    );
    expect(dec(await store.get('kv', k))).toBe(String(N));
  });

  it('putExtent and extent overwrite: older extents are trimmed or split, keeping their value and valueOffset', async () => {
    await store.transact((tx) => {
      expect(tx.putExtent('ext', pos(9, 0), 64, enc('A'))).toBeUndefined();
    });
    await store.transact((tx) => tx.putExtent('ext', { inode: 9, offset: 16 }, 8n, enc('B')));
    const es = await drain(store.range('ext', { start: pos(9, 0), end: pos(10, 0) }));
    expect(es.map((e) => [posText(e.start!), posText(e.pos), e.size, e.valueOffset, dec(e.value)])).toEqual([
      ['9:0:0', '9:16:0', 16n, 0n, 'A'],
      ['9:16:0', '9:24:0', 8n, 0n, 'B'],
      ['9:24:0', '9:64:0', 40n, 24n, 'A'],
    ]);
  });

  it('delRange: [start, end) on a key btree; trims extents at the edges; start >= end does nothing', async () => {
    await store.transact((tx) => {
      for (let i = 1; i <= 5; i++) tx.put('kv', pos(4, i), enc(`${i}`));
    });
    await store.transact((tx) => expect(tx.delRange('kv', pos(4, 2), pos(4, 4))).toBeUndefined());
    expect((await drain(store.range('kv', { start: pos(4, 0), end: pos(5, 0) }))).map((e) => Number(e.pos.offset))).toEqual([1, 4, 5]);
    await store.transact((tx) => {
      tx.delRange('kv', pos(4, 5), pos(4, 1)); // start > end
      tx.delRange('kv', pos(4, 4), pos(4, 4)); // empty
    });
    expect((await drain(store.range('kv', { start: pos(4, 0), end: pos(5, 0) }))).map((e) => Number(e.pos.offset))).toEqual([1, 4, 5]);

    await store.transact((tx) => tx.putExtent('ext', pos(11, 0), 100, enc('X')));
    await store.transact((tx) => tx.delRange('ext', { inode: 11, offset: 10 }, { inode: 11, offset: 20 }));
    const es = await drain(store.range('ext', { start: pos(11, 0), end: pos(12, 0) }));
    expect(es.map((e) => [posText(e.start!), posText(e.pos), e.size, e.valueOffset, dec(e.value)])).toEqual([
      ['11:0:0', '11:10:0', 10n, 0n, 'X'],
      ['11:20:0', '11:100:0', 80n, 20n, 'X'],
    ]);
    // seen by the transaction's own reads
    const inside = await store.transact(async (tx) => {
      tx.delRange('kv', pos(4, 0), pos(5, 0));
      return [await tx.get('kv', pos(4, 1)), await tx.get('kv', pos(4, 4))];
    });
    expect(inside).toEqual([undefined, undefined]);
  });

  it('a transaction may open many iterators', async () => {
    const n = await store.transact(async (tx) => {
      const its = Array.from({ length: 20 }, () => tx.iter('kv', pos(3, 0)));
      let found = 0;
      for (const it of its) if ((await it.peek())?.pos.inode === 3n) found++;
      return found;
    });
    expect(n).toBe(20);
  });
});

describe('transaction size bounds', () => {
  it('putExtent of a size more keys than one journal entry holds: ERR_INVALID_ARG at the call, without building them; sizes above 2^53 as numbers: ERR_INVALID_ARG', async () => {
    const t = await tmpStore({ sizeBytes: 16 << 20 });
    try {
      const s = t.store;
      const one = new Uint8Array([1]);
      // 2^63 bytes would be 2^31 keys of 2^32-1: this threw the process out of memory, 2^50 blocked it for a minute
      for (const size of [2n ** 63n, 2n ** 50n]) await expectCode(() => s.transact((tx) => tx.putExtent('ext', pos(1, 0), size, one)), 'ERR_INVALID_ARG', 'journal entry');
      await expectCode(() => s.transact((tx) => tx.putExtent('ext', pos(1, 0), 2 ** 53, one)), 'ERR_INVALID_ARG', 'safe-integer');
      // 2^36 bytes: 17 keys, one transaction
      await s.transact((tx) => tx.putExtent('ext', pos(1, 0), 2n ** 36n, one));
      const got: Entry[] = [];
      for await (const e of s.range('ext')) got.push(e);
      expect(got.length).toBe(17);
      expect(got[got.length - 1]!.pos.offset).toBe(2n ** 36n);
    } finally {
      await t.cleanup();
    }
  });

  it('1000 random keys over a tree of ~1000 leaves commit in one transaction; past 1024 paths: ERR_INVALID_ARG, and the store goes on', async () => {
    const t = await tmpStore({ btrees: [{ name: 'kv' }], sizeBytes: 64 << 20, nodeSize: 4096, cacheSize: 2 << 20 });
    try {
      const s = t.store;
      const v = new Uint8Array(100);
      const N = 36_000;
      for (let b = 0; b < N; b += 2000) {
        await s.transact((tx) => {
          for (let k = b; k < b + 2000; k++) tx.put('kv', pos(1, k * 16), v);
        });
      }
      const leaves = s.stats().alloc.used!;
      expect(leaves, 'a tree of about a thousand nodes').toBeGreaterThan(900);
      // 1000 keys spread over every leaf, in one commit
      const r = prng(0x1e5);
      const keys = new Set<number>();
      while (keys.size < 1000) keys.add(Math.floor(r() * N) * 16 + 1);
      await s.transact((tx) => {
        for (const k of keys) tx.put('kv', pos(1, k), v);
      });
      for (const k of [...keys].slice(0, 50)) expect(await s.get('kv', pos(1, k))).toEqual(v);
      // reading more leaves than a transaction may hold paths for
      const err = await s
        .transact(async (tx) => {
          for (let k = 0; k < N; k += 16) await tx.get('kv', pos(1, k * 16));
        })
        .then(
          () => null,
          (e: unknown) => e,
        );
      expect(err).toBeInstanceOf(SixtreeError);
      expect((err as SixtreeError).code).toBe('ERR_INVALID_ARG');
      expect((err as Error).message).toMatch(/more than 1024 btree paths.*smaller transactions/);
      await s.put('kv', pos(2, 0), v);
      expect(await s.get('kv', pos(2, 0))).toEqual(v);
      expect(await s.fsck()).toEqual([]);
    } finally {
      await t.cleanup();
    }
  }, 120_000);
});

/* ================================================================ iterators */

describe('Iter', () => {
  let t: TmpStore;
  let store: Store;
  beforeAll(async () => {
    t = await tmpStore({ sizeBytes: 16 << 20 });
    store = t.store;
    await store.transact((tx) => {
      tx.put('kv', pos(3, 1), enc('a'));
      tx.put('kv', pos(3, 2), enc('b'));
      tx.put('kv', pos(3, 5), enc('c'));
      tx.putExtent('ext', pos(7, 10), 10, enc('E1'));
      tx.putExtent('ext', pos(7, 30), 5, enc('E2'));
    });
  });
  afterAll(async () => {
    await t.cleanup();
  });

  it('pos, peek, next, setPos, peekPrev, prev on a key btree', async () => {
    await store.transact(async (tx) => {
      const it = tx.iter('kv', pos(3, 0));
      expect(it).toBeInstanceOf(Iter);
      expectPos(it.pos, 3, 0);
      const e = await it.peek();
      expectPos(e!.pos, 3, 1);
      expect(dec(e!.value)).toBe('a');
      expectPos((await it.peek())!.pos, 3, 1); // peek does not move
      expectPos((await it.next())!.pos, 3, 2);
      expectPos((await it.next())!.pos, 3, 5);
      expect(await it.next()).toBeNull();

      it.setPos(pos(3, 4));
      expectPos(it.pos, 3, 4);
      expectPos((await it.peek())!.pos, 3, 5);
      expectPos((await it.peekPrev())!.pos, 3, 2); // last key at or before pos
      expectPos((await it.prev())!.pos, 3, 1);
      expect(await it.prev()).toBeNull();
      it.setPos({ inode: 3, offset: 2 });
      expectPos((await it.peekPrev())!.pos, 3, 2);
      it.setPos(POS_MIN);
      expect(await it.peekPrev()).toBeNull();
      it.setPos(pos(4, 0));
      expect(await it.peek()).toBeNull();
    });
  });

  it('sees the transaction’s own pending updates; opts.end bounds it', async () => {
    await store.transact(async (tx) => {
      tx.put('kv', pos(3, 3), enc('new'));
      tx.del('kv', pos(3, 2));
      const got = await drain(tx.iter('kv', pos(3, 0)));
      expect(got.map((e) => [posText(e.pos), dec(e.value)])).toEqual([
        ['3:1:0', 'a'],
        ['3:3:0', 'new'],
        ['3:5:0', 'c'],
      ]);
      const bounded = await drain(tx.iter('kv', pos(3, 0), { end: pos(3, 5) }));
      expect(bounded.map((e) => posText(e.pos))).toEqual(['3:1:0', '3:3:0']);
      throw new Error('rollback');
    }).catch((e: Error) => expect(e.message).toBe('rollback'));
    expect(dec(await store.get('kv', pos(3, 2)))).toBe('b');
  });

  it('[Symbol.asyncIterator] walks from pos; iter() without start starts at POS_MIN; intent and prefetch accepted', async () => {
    const all = await store.transact(async (tx) => {
      const it = tx.iter('kv');
      expectPos(it.pos, 0, 0);
      return drain(it);
    });
    expect(all.map((e) => posText(e.pos))).toEqual(['3:1:0', '3:2:0', '3:5:0']);
    const again = await store.transact(async (tx) => drain(tx.iter('kv', pos(3, 2), { intent: true, prefetch: true, slots: false })));
    expect(again.map((e) => posText(e.pos))).toEqual(['3:2:0', '3:5:0']);
  });

  it('slots mode on a key btree: peekSlot gives the key at pos or a hole; nextSlot steps one offset', async () => {
    await store.transact(async (tx) => {
      const it = tx.iter('kv', pos(3, 1), { slots: true });
      const s1 = await it.peekSlot();
      expect('hole' in s1).toBe(false);
      expectPos(s1.pos, 3, 1);
      expect(dec((s1 as Entry).value)).toBe('a');
      const s2 = await it.nextSlot();
      expectPos(s2!.pos, 3, 2);
      expect('hole' in s2!).toBe(false);
      const s3 = await it.nextSlot();
      expect(s3).toMatchObject({ hole: true });
      expectPos(s3!.pos, 3, 3);
      it.setPos(pos(3, 5));
      expect(dec(((await it.peekSlot()) as Entry).value)).toBe('c');
    });
  });

  it('extents: peek gives the first extent ending after pos, with start/size/valueOffset; next/prev move by extent', async () => {
    await store.transact(async (tx) => {
      const it = tx.iter('ext', pos(7, 15));
      const e = await it.peek();
      expectPos(e!.pos, 7, 20);
      expectPos(e!.start, 7, 10);
      expect(e!.size).toBe(10n);
      expect(e!.valueOffset).toBe(0n);
      expect(dec(e!.value)).toBe('E1');
      const e2 = await it.next();
      expectPos(e2!.pos, 7, 35);
      expectPos(e2!.start, 7, 30);
      expect(await it.next()).toBeNull();
      it.setPos(pos(7, 20)); // an extent ending exactly at pos does not cover it
      expectPos((await it.peek())!.pos, 7, 35);
      it.setPos(pos(7, 32));
      expectPos((await it.peekPrev())!.pos, 7, 35);
      expectPos((await it.prev())!.pos, 7, 20);
      expect(await it.prev()).toBeNull();
    });
  });

  it('extents in slots mode: holes up to the next extent, then the extent', async () => {
    await store.transact(async (tx) => {
      const it = tx.iter('ext', pos(7, 0), { slots: true });
      const h = (await it.peekSlot()) as Hole;
      expect(h.hole).toBe(true);
      expectPos(h.start, 7, 0);
      expectPos(h.pos, 7, 10);
      expect(h.size).toBe(10n);
      const e = (await it.nextSlot()) as Entry;
      expect('hole' in e).toBe(false);
      expectPos(e.start, 7, 10);
      expectPos(e.pos, 7, 20);
      const h2 = (await it.nextSlot()) as Hole;
      expect(h2.hole).toBe(true);
      expectPos(h2.start, 7, 20);
      expectPos(h2.pos, 7, 30);
      expect(h2.size).toBe(10n);
      const e2 = (await it.nextSlot()) as Entry;
      expectPos(e2.pos, 7, 35);
      const h3 = (await it.nextSlot()) as Hole;
      expect(h3.hole).toBe(true);
      expectPos(h3.start, 7, 35);
    });
  });

  it('peekNode / nextNode walk the leaves in key order', async () => {
    const t2 = await tmpStore({ sizeBytes: 16 << 20 });
    try {
      const N = 400;
      await t2.store.transact((tx) => {
        for (let i = 0; i < N; i++) tx.put('kv', pos(1, i), new Uint8Array(100).fill(i & 255));
      });
      const nodes = await t2.store.transact(async (tx) => {
        const it = tx.iter('kv');
        const out: NodeInfo[] = [];
        let n = await it.peekNode();
        while (n) {
          out.push(n);
          n = await it.nextNode();
        }
        return out;
      });
      expect(nodes.length).toBeGreaterThan(1);
      expectPos(nodes[0]!.minKey, 0, 0, 0);
      expect(bposCmp(nodes.at(-1)!.maxKey, POS_MAX)).toBe(0);
      let keys = 0;
      for (const [i, n] of nodes.entries()) {
        expect(n.level).toBe(0);
        expect(n.keys).toBeGreaterThan(0);
        expect(n.bytes).toBeGreaterThan(0);
        expect(n.bytes).toBeLessThanOrEqual(t2.store.nodeSize);
        expect(bposCmp(n.minKey, n.maxKey)).toBeLessThanOrEqual(0);
        if (i > 0) expect(bposCmp(nodes[i - 1]!.maxKey, n.minKey)).toBe(-1);
        keys += n.keys;
      }
      expect(keys).toBe(N);
    } finally {
      await t2.cleanup();
    }
  });

  it('a small btree is one leaf covering everything', async () => {
    const info = await store.transact(async (tx) => {
      const it = tx.iter('kv');
      const a = await it.peekNode();
      const b = await it.nextNode();
      return { a, b };
    });
    expect(info.a).toMatchObject({ level: 0, keys: 3 });
    expect(bposCmp(info.a!.minKey, POS_MIN)).toBe(0);
    expect(bposCmp(info.a!.maxKey, POS_MAX)).toBe(0);
    expect(info.b).toBeNull();
  });
});

/* ================================================================ errors on a live store */

describe('errors on a live store', () => {
  let t: TmpStore;
  let store: Store;
  beforeAll(async () => {
    t = await tmpStore({ sizeBytes: 16 << 20 });
    store = t.store;
    await store.put('kv', pos(1, 1), enc('x'));
  });
  afterAll(async () => {
    await t.cleanup();
  });

  describe('ERR_INVALID_ARG', () => {
    const v = enc('v');
    const cases: Array<[string, () => unknown, string[]]> = [
      ['get: negative inode', () => store.get('kv', { inode: -1, offset: 0 }), ['inode', '-1']],
      ['get: fractional offset', () => store.get('kv', { inode: 1, offset: 2.5 }), ['offset', '2.5']],
      ['get: offset 2^64', () => store.get('kv', { inode: 1n, offset: 1n << 64n }), ['offset', '18446744073709551616']],
      ['get: snapshot 2^32', () => store.get('kv', { inode: 1, offset: 1, snapshot: 2 ** 32 }), ['snapshot', '4294967296']],
      ['get: position a string', () => store.get('kv', '1:1' as unknown as PosLike), ['"1:1"']],
      ['get: position null', () => store.get('kv', null as unknown as PosLike), ['null']],
      ['get: missing offset', () => store.get('kv', { inode: 1 } as unknown as PosLike), ['offset']],
      ['get: btree not a string', () => store.get(1 as unknown as string, pos(1, 1)), ['btree']],
      ['put: negative offset', () => store.put('kv', { inode: 1, offset: -5 }, v), ['offset', '-5']],
      ['put: value a string', () => store.put('kv', pos(1, 1), 'text' as unknown as Uint8Array), ['value', '"text"']],
      ['put: value an array', () => store.put('kv', pos(1, 1), [1, 2] as unknown as Uint8Array), ['value']],
      ['put: value missing', () => store.put('kv', pos(1, 1), undefined as unknown as Uint8Array), ['value', 'undefined']],
      ['del: inode a string', () => store.del('kv', { inode: 'x' as unknown as number, offset: 0 }), ['inode', '"x"']],
      ['range: misspelled option revers', () => store.range('kv', { revers: true } as unknown as object), ['revers']],
      ['range: misspelled option lmit', () => store.range('kv', { lmit: 1 } as unknown as object), ['lmit']],
      ['range: limit negative', () => store.range('kv', { limit: -1 }), ['limit', '-1']],
      ['range: limit fractional', () => store.range('kv', { limit: 1.5 }), ['limit', '1.5']],
      ['range: reverse not a boolean', () => store.range('kv', { reverse: 'yes' } as unknown as object), ['reverse', '"yes"']],
      ['range: bad start', () => store.range('kv', { start: { inode: -1n, offset: 0n } as unknown as Bpos }), ['start', 'inode']],
      ['range: bad end', () => store.range('kv', { end: { inode: 0n, offset: 0.5 } as unknown as Bpos }), ['end', 'offset']],
      ['range: opts not an object', () => store.range('kv', 3 as unknown as object), ['opts']],
      ['transact: fn not a function', () => store.transact('nope' as unknown as () => void), ['fn', '"nope"']],
      ['shrink: negative', () => store.shrink(-1), ['nr', '-1']],
      ['shrink: fractional', () => store.shrink(0.5), ['nr', '0.5']],
      ['tx.get: bad position', () => store.transact((tx) => tx.get('kv', { inode: 1.25, offset: 0 })), ['inode', '1.25']],
      ['tx.put: bad position', () => store.transact((tx) => tx.put('kv', { inode: 1, offset: 0, snapshot: -1 }, v)), ['snapshot', '-1']],
      ['tx.put: bad value', () => store.transact((tx) => tx.put('kv', pos(1, 1), 5 as unknown as Uint8Array)), ['value', '5']],
      ['tx.del: bad position', () => store.transact((tx) => tx.del('kv', { inode: 1n << 64n, offset: 0 })), ['inode']],
      ['tx.putExtent: size 0', () => store.transact((tx) => tx.putExtent('ext', pos(1, 0), 0, v)), ['size', '0']],
      ['tx.putExtent: size negative', () => store.transact((tx) => tx.putExtent('ext', pos(1, 0), -3n, v)), ['size', '-3']],
      ['tx.putExtent: size fractional', () => store.transact((tx) => tx.putExtent('ext', pos(1, 0), 1.5, v)), ['size', '1.5']],
      ['tx.putExtent: size a string', () => store.transact((tx) => tx.putExtent('ext', pos(1, 0), '8' as unknown as number, v)), ['size', '"8"']],
      ['tx.putExtent: extent past offset 2^64-1', () => store.transact((tx) => tx.putExtent('ext', pos(1, U64_MAX - 4n), 10, v)), ['size']],
      ['tx.putExtent: bad start', () => store.transact((tx) => tx.putExtent('ext', { inode: -2, offset: 0 }, 1, v)), ['start', 'inode']],
      ['tx.putExtent: bad value', () => store.transact((tx) => tx.putExtent('ext', pos(1, 0), 1, null as unknown as Uint8Array)), ['value', 'null']],
      ['tx.delRange: bad start', () => store.transact((tx) => tx.delRange('kv', { inode: 0, offset: -1 }, pos(2, 0))), ['start', 'offset']],
      ['tx.delRange: bad end', () => store.transact((tx) => tx.delRange('kv', pos(0, 0), 'end' as unknown as PosLike)), ['end']],
      ['tx.iter: misspelled option slot', () => store.transact((tx) => tx.iter('kv', POS_MIN, { slot: true } as unknown as object)), ['slot']],
      ['tx.iter: misspelled option Intent', () => store.transact((tx) => tx.iter('kv', POS_MIN, { Intent: true } as unknown as object)), ['Intent']],
      ['tx.iter: slots not a boolean', () => store.transact((tx) => tx.iter('kv', POS_MIN, { slots: 1 } as unknown as object)), ['slots', '1']],
      ['tx.iter: bad end', () => store.transact((tx) => tx.iter('kv', POS_MIN, { end: { inode: 0, offset: -1 } })), ['end', 'offset']],
      ['tx.iter: bad start', () => store.transact((tx) => tx.iter('kv', { inode: 0.5, offset: 0 })), ['start', 'inode']],
      ['iter.setPos: bad position', () => store.transact((tx) => tx.iter('kv').setPos({ inode: 1, offset: 1, snapshot: 0.5 })), ['snapshot', '0.5']],
    ];
    for (const [name, f, mentions] of cases) {
      it(name, async () => {
        await expectCode(f, 'ERR_INVALID_ARG', ...mentions);
      });
    }
    it('nothing was written by the rejected calls', async () => {
      expect(dec(await store.get('kv', pos(1, 1)))).toBe('x');
      expect(await drain(store.range('ext'))).toEqual([]);
    });
  });

  it('ERR_UNKNOWN_BTREE: every call that takes a btree name', async () => {
    const v = enc('v');
    const calls: Array<() => unknown> = [
      () => store.get('nope', pos(1, 1)),
      () => store.put('nope', pos(1, 1), v),
      () => store.del('nope', pos(1, 1)),
      () => store.range('nope'),
      () => store.transact((tx) => tx.get('nope', pos(1, 1))),
      () => store.transact((tx) => tx.put('nope', pos(1, 1), v)),
      () => store.transact((tx) => tx.del('nope', pos(1, 1))),
      () => store.transact((tx) => tx.putExtent('nope', pos(1, 1), 1, v)),
      () => store.transact((tx) => tx.delRange('nope', pos(1, 1), pos(1, 2))),
      () => store.transact((tx) => tx.iter('nope')),
      () => store.get('KV', pos(1, 1)),
    ];
    for (const f of calls) await expectCode(f, 'ERR_UNKNOWN_BTREE');
    await expectCode(() => store.get('nope', pos(1, 1)), 'ERR_UNKNOWN_BTREE', '"nope"');
  });

  it('ERR_NOT_EXTENTS: putExtent on a key btree', async () => {
    await expectCode(() => store.transact((tx) => tx.putExtent('kv', pos(1, 0), 8, enc('v'))), 'ERR_NOT_EXTENTS', 'kv');
  });

  it('ERR_IS_EXTENTS: key calls on an extents btree', async () => {
    const v = enc('v');
    await expectCode(() => store.get('ext', pos(1, 1)), 'ERR_IS_EXTENTS', 'ext');
    await expectCode(() => store.put('ext', pos(1, 1), v), 'ERR_IS_EXTENTS', 'ext');
    await expectCode(() => store.del('ext', pos(1, 1)), 'ERR_IS_EXTENTS', 'ext');
    await expectCode(() => store.transact((tx) => tx.get('ext', pos(1, 1))), 'ERR_IS_EXTENTS', 'ext');
    await expectCode(() => store.transact((tx) => tx.put('ext', pos(1, 1), v)), 'ERR_IS_EXTENTS', 'ext');
    await expectCode(() => store.transact((tx) => tx.del('ext', pos(1, 1))), 'ERR_IS_EXTENTS', 'ext');
  });

  it('ERR_VALUE_TOO_LARGE: values larger than maxValueSize', async () => {
    const max = store.maxValueSize;
    const big = new Uint8Array(max + 1);
    await expectCode(() => store.put('kv', pos(1, 2), big), 'ERR_VALUE_TOO_LARGE', String(max + 1), String(max));
    await expectCode(() => store.transact((tx) => tx.put('kv', pos(1, 2), big)), 'ERR_VALUE_TOO_LARGE', String(max + 1));
    await expectCode(() => store.transact((tx) => tx.putExtent('ext', pos(1, 0), 4, big)), 'ERR_VALUE_TOO_LARGE', String(max + 1));
    await expectCode(() => store.put('kv', pos(1, 2), new Uint8Array(10 * store.nodeSize)), 'ERR_VALUE_TOO_LARGE');
    expect(await store.get('kv', pos(1, 2))).toBeUndefined();
  });

  it('ERR_TX_DONE: a transaction, and its iterators, used after transact resolved', async () => {
    let saved: Transaction | undefined;
    let savedIter: Iter | undefined;
    await store.transact(async (tx) => {
      saved = tx;
      savedIter = tx.iter('kv', pos(1, 0));
      await savedIter.peek();
    });
    const tx = saved!;
    const it = savedIter!;
    const v = enc('late');
    await expectCode(() => tx.get('kv', pos(1, 1)), 'ERR_TX_DONE');
    await expectCode(() => tx.put('kv', pos(1, 1), v), 'ERR_TX_DONE');
    await expectCode(() => tx.del('kv', pos(1, 1)), 'ERR_TX_DONE');
    await expectCode(() => tx.putExtent('ext', pos(1, 0), 1, v), 'ERR_TX_DONE');
    await expectCode(() => tx.delRange('kv', pos(1, 0), pos(2, 0)), 'ERR_TX_DONE');
    await expectCode(() => tx.iter('kv'), 'ERR_TX_DONE');
    await expectCode(() => it.peek(), 'ERR_TX_DONE');
    await expectCode(() => it.next(), 'ERR_TX_DONE');
    await expectCode(() => it.peekPrev(), 'ERR_TX_DONE');
    await expectCode(() => it.prev(), 'ERR_TX_DONE');
    await expectCode(() => it.peekSlot(), 'ERR_TX_DONE');
    await expectCode(() => it.nextSlot(), 'ERR_TX_DONE');
    await expectCode(() => it.peekNode(), 'ERR_TX_DONE');
    await expectCode(() => it.nextNode(), 'ERR_TX_DONE');
    await expectCode(() => it.setPos(pos(1, 1)), 'ERR_TX_DONE');
    await expectCode(() => drain(it), 'ERR_TX_DONE');
    // also after a transaction that rejected
    await store.transact((t2) => {
      saved = t2;
      throw new Error('x');
    }).catch(() => {});
    await expectCode(() => saved!.put('kv', pos(1, 1), v), 'ERR_TX_DONE');
    // nothing leaked into the store
    expect(dec(await store.get('kv', pos(1, 1)))).toBe('x');
  });

  it('ERR_TX_DONE: a transaction used after fn returned while its commit is in flight', async () => {
    let saved: Transaction | undefined;
    const p = store.transact((tx) => {
      saved = tx;
      tx.put('kv', pos(1, 5), enc('in'));
    });
    let lateErr: unknown;
    try {
      saved!.put('kv', pos(1, 6), enc('late')); // fn has returned: transact() is awaiting it
    } catch (e) {
      lateErr = e;
    }
    await p;
    expect(dec(await store.get('kv', pos(1, 5)))).toBe('in');
    // the late write must neither be accepted nor end up in the commit
    expect(await store.get('kv', pos(1, 6)), 'a put made after fn returned was committed').toBeUndefined();
    expect(lateErr, 'a put made after fn returned was accepted').toBeInstanceOf(SixtreeError);
    expect((lateErr as SixtreeError).code).toBe('ERR_TX_DONE');
  });

  /*
   * A write of the same store made by a transact() callback is not part of
   * that transaction; when it needs a lock that transaction holds (its
   * read's leaf) it waits for it while the callback waits for the write,
   * and close() waits for the transaction to end. Without the checks these
   * calls never returned (the test's timer would fire instead).
   */
  describe('ERR_TX_NESTED: writes of the same store from inside a transact() callback', () => {
    const hangGuard = <T>(p: Promise<T>): Promise<T> =>
      Promise.race([p, new Promise<never>((_, rej) => setTimeout(() => rej(new Error('the nested call hung (deadlock)')), 5000).unref())]);

    it('put, del and transact waiting for the enclosing transaction\'s lock, and close: refused; the enclosing transaction commits', async () => {
      await store.put('kv', pos(1, 20), enc('outer'));
      const refusedBefore = store.stats().transactions.nestedCallsRefused;
      const nested: Array<[string, () => Promise<unknown>]> = [
        ['store.put()', () => store.put('kv', pos(1, 20), enc('inner'))],
        ['store.del()', () => store.del('kv', pos(1, 20))],
        ['store.transact()', () => store.transact((t2) => t2.put('kv', pos(1, 21), enc('inner')))],
        ['store.close()', () => store.close()],
      ];
      for (const [what, call] of nested) {
        // the callback's read holds the leaf: the write would wait for it
        const r = await hangGuard(
          store.transact(async (tx) => {
            expect(dec(await tx.get('kv', pos(1, 20)))).toBe('outer');
            const e = await expectCode(call, 'ERR_TX_NESTED', what, 'tx');
            tx.put('kv', pos(1, 22), enc(`after ${what}`));
            return e.details.call;
          }),
        );
        expect(r).toBe(what);
      }
      // the refused calls changed nothing; the enclosing transactions committed
      expect(dec(await store.get('kv', pos(1, 20)))).toBe('outer');
      expect(await store.get('kv', pos(1, 21))).toBeUndefined();
      expect(dec(await store.get('kv', pos(1, 22)))).toBe('after store.close()');
      expect(store.stats().transactions.nestedCallsRefused - refusedBefore).toBe(4);
    });

    it('a write from outside that waits longer than the watch for a callback\'s lock is not nested: it waits on and commits after the callback\'s transaction', async () => {
      await store.put('kv', pos(1, 27), enc('0'));
      const refusedBefore = store.stats().transactions.nestedCallsRefused;
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      let got!: () => void;
      const hasLock = new Promise<void>((r) => (got = r));
      const outer = store.transact(async (tx) => {
        await tx.get('kv', pos(1, 27), { intent: true });
        got();
        await held;
        tx.put('kv', pos(1, 27), enc('outer'));
      });
      await hasLock;
      // the intent lock is held by a callback still running: this put waits past the watch's 250-500 ms
      const order: string[] = [];
      const inner = store.put('kv', pos(1, 27), enc('outside')).then(() => order.push('outside'));
      await new Promise((r) => setTimeout(r, 700));
      expect(order, 'the outside put went through while the callback held the lock').toEqual([]);
      release();
      await outer.then(() => order.push('outer'));
      await hangGuard(inner);
      expect(order).toEqual(['outer', 'outside']);
      expect(dec(await store.get('kv', pos(1, 27)))).toBe('outside');
      expect(store.stats().transactions.nestedCallsRefused - refusedBefore).toBe(0);
    });

    it('from the synchronous part of a callback that holds no lock: a write waits for nothing and commits (not part of the transaction); close is refused', async () => {
      let closeErr: unknown;
      await hangGuard(
        store.transact((tx) => {
          const p = store.put('kv', pos(1, 25), enc('beside'));
          const c = store.close();
          c.catch((e) => (closeErr = e));
          tx.put('kv', pos(1, 26), enc('in'));
          return Promise.all([p, c.catch(() => undefined)]);
        }),
      );
      expect((closeErr as SixtreeError | undefined)?.code).toBe('ERR_TX_NESTED');
      expect(dec(await store.get('kv', pos(1, 25)))).toBe('beside');
      expect(dec(await store.get('kv', pos(1, 26)))).toBe('in');
    });

    it('a callback nested two calls deep (a helper awaited by the callback) is seen', async () => {
      const helper = async (): Promise<void> => {
        await new Promise((r) => setImmediate(r));
        await store.put('kv', pos(1, 24), enc('deep'));
      };
      await hangGuard(
        store.transact(async (tx) => {
          await tx.get('kv', pos(1, 24));
          await expectCode(helper, 'ERR_TX_NESTED', 'store.put()');
        }),
      );
      expect(await store.get('kv', pos(1, 24))).toBeUndefined();
    });

    it('reads, flush and fsck from a callback are allowed; so are calls while an unrelated callback is pending, and writes of another store', async () => {
      await store.put('kv', pos(1, 30), enc('a'));
      const got = await hangGuard(
        store.transact(async (tx) => {
          await tx.get('kv', pos(1, 30));
          const v = await store.get('kv', pos(1, 30));
          const all: string[] = [];
          for await (const e of store.range('kv', { start: pos(1, 30), end: pos(1, 31) })) all.push(dec(e.value)!);
          await store.flush();
          expect(await store.fsck()).toEqual([]);
          return [dec(v), ...all];
        }),
      );
      expect(got).toEqual(['a', 'a']);

      // another flow's put while a callback waits on a timer: not nested, it goes through
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const outer = store.transact(async (tx) => {
        await gate;
        tx.put('kv', pos(1, 31), enc('outer'));
      });
      await store.put('kv', pos(1, 32), enc('independent'));
      release();
      await outer;
      expect(dec(await store.get('kv', pos(1, 31)))).toBe('outer');
      expect(dec(await store.get('kv', pos(1, 32)))).toBe('independent');

      // a second store written from this store's callback: allowed
      const other = await tmpStore({ sizeBytes: 16 << 20 });
      try {
        await hangGuard(
          store.transact(async (tx) => {
            await tx.get('kv', pos(1, 30));
            await other.store.put('kv', pos(9, 9), enc('other'));
            // while the other store's callback runs, this store's put is still nested
            await other.store.transact(async (t2) => {
              await t2.get('kv', pos(9, 9));
              await expectCode(() => store.put('kv', pos(1, 33), enc('x')), 'ERR_TX_NESTED');
            });
          }),
        );
        expect(dec(await other.store.get('kv', pos(9, 9)))).toBe('other');
        expect(await store.get('kv', pos(1, 33))).toBeUndefined();
      } finally {
        await other.cleanup();
      }
    });
  });
});

/* ================================================================ read-only, close, reopen */

describe('readOnly, close, reopen', () => {
  let t: TmpStore;
  afterEach(async () => {
    await t?.cleanup();
  });

  it('a range iterator stops handing out entries once close() starts (ERR_CLOSED), its fetched batch included', async () => {
    t = await tmpStore({ sizeBytes: 16 << 20 });
    const s = t.store;
    await s.transact((tx) => {
      for (let i = 0; i < 50; i++) tx.put('kv', pos(1, i), enc(`v${i}`));
    });
    const it = s.range('kv');
    expect((await it.next()).done).toBe(false);
    const closing = s.close();
    await expectCode(() => it.next(), 'ERR_CLOSED');
    await closing;
  });

  it('a second close() while the first runs returns the same promise; one after it has finished rejects with ERR_CLOSED', async () => {
    t = await tmpStore({ sizeBytes: 16 << 20 });
    const s = t.store;
    await s.put('kv', pos(1, 1), enc('x'));
    const a = s.close();
    const b = s.close();
    expect(b).toBe(a);
    await a;
    await expectCode(() => s.close(), 'ERR_CLOSED');
  });

  it('close() after a device error: rejects with ERR_IO, still releases the device and its lock; reads went on; the next open recovers every commit', async () => {
    t = await tmpStore({ sizeBytes: 16 << 20 });
    await t.store.close();
    const bd = BlockDevice.open(t.path);
    const fd = await FaultDevice.wrap(bd);
    const store = await Store.openDevice(fd, { cacheSize: 1 << 20 });
    for (let i = 0; i < 50; i++) await store.put('kv', pos(1, i), enc(`v${i}`));
    fd.failNext('write'); // the next device write, the journal entry of this put
    await expectCode(() => store.put('kv', pos(1, 1000), enc('lost')), 'ERR_IO');
    // the journal stopped: writes are refused, reads go on
    await expectCode(() => store.put('kv', pos(1, 1001), enc('refused')), 'ERR_IO');
    expect(dec(await store.get('kv', pos(1, 7)))).toBe('v7');
    await expectCode(() => store.close(), 'ERR_IO');
    expect(bd.closed).toBe(true);
    // the lock went with the device: this process opens the store again, and recovery finds every acknowledged put
    const again = await Store.open(t.path);
    for (let i = 0; i < 50; i++) expect(dec(await again.get('kv', pos(1, i)))).toBe(`v${i}`);
    expect(await again.get('kv', pos(1, 1001))).toBeUndefined();
    expect(await again.fsck()).toEqual([]);
    t.store = again;
  });

  it('ERR_READ_ONLY: every write on a store opened readOnly; reads work', async () => {
    t = await tmpStore({ sizeBytes: 16 << 20 });
    await t.store.put('kv', pos(1, 1), enc('ro'));
    await t.store.transact((tx) => tx.putExtent('ext', pos(1, 0), 8, enc('e')));
    const store = await t.reopen({ readOnly: true });
    expect(dec(await store.get('kv', pos(1, 1)))).toBe('ro');
    expect(await drain(store.range('ext'))).toHaveLength(1);
    expect(await store.transact(async (tx) => dec(await tx.get('kv', pos(1, 1))))).toBe('ro');
    const v = enc('w');
    await expectCode(() => store.put('kv', pos(1, 2), v), 'ERR_READ_ONLY');
    await expectCode(() => store.del('kv', pos(1, 1)), 'ERR_READ_ONLY');
    await expectCode(() => store.transact((tx) => tx.put('kv', pos(1, 2), v)), 'ERR_READ_ONLY');
    await expectCode(() => store.transact((tx) => tx.del('kv', pos(1, 1))), 'ERR_READ_ONLY');
    await expectCode(() => store.transact((tx) => tx.putExtent('ext', pos(2, 0), 4, v)), 'ERR_READ_ONLY');
    await expectCode(() => store.transact((tx) => tx.delRange('kv', POS_MIN, POS_MAX)), 'ERR_READ_ONLY');
    await store.flush();
    expect(typeof store.shrink()).toBe('number');
    expect(dec(await store.get('kv', pos(1, 1)))).toBe('ro');
    await store.close();
    // the file was not changed by a read-only session: a normal open still sees everything
    const rw = await t.reopen();
    expect(dec(await rw.get('kv', pos(1, 1)))).toBe('ro');
  });

  it('reopen after close keeps the data of both btrees', async () => {
    t = await tmpStore({ sizeBytes: 16 << 20 });
    await t.store.transact((tx) => {
      for (let i = 0; i < 50; i++) tx.put('kv', pos(1, i), enc(`v${i}`));
      tx.putExtent('ext', pos(2, 0), 100, enc('E'));
    });
    await t.store.del('kv', pos(1, 7));
    await t.store.close();
    const s = await Store.open(t.path);
    t.store = s;
    expect(dec(await s.get('kv', pos(1, 49)))).toBe('v49');
    expect(await s.get('kv', pos(1, 7))).toBeUndefined();
    expect(await drain(s.range('kv'))).toHaveLength(49);
    const ext = await drain(s.range('ext'));
    expect(ext.map((e) => [posText(e.start!), posText(e.pos), dec(e.value)])).toEqual([['2:0:0', '2:100:0', 'E']]);
  });

  it('ERR_CLOSED: every call on a closed store, close twice included', async () => {
    t = await tmpStore({ sizeBytes: 16 << 20 });
    const store = t.store;
    let savedTx: Transaction | undefined;
    await store.transact((tx) => {
      savedTx = tx;
    });
    await expect(store.close()).resolves.toBeUndefined();
    const v = enc('v');
    await expectCode(() => store.close(), 'ERR_CLOSED');
    await expectCode(() => store.get('kv', pos(1, 1)), 'ERR_CLOSED');
    await expectCode(() => store.put('kv', pos(1, 1), v), 'ERR_CLOSED');
    await expectCode(() => store.del('kv', pos(1, 1)), 'ERR_CLOSED');
    await expectCode(() => store.range('kv'), 'ERR_CLOSED');
    await expectCode(() => store.transact(() => 1), 'ERR_CLOSED');
    await expectCode(() => store.flush(), 'ERR_CLOSED');
    await expectCode(() => store.shrink(), 'ERR_CLOSED');
    await expectCode(() => store.stats(), 'ERR_CLOSED');
    await expectCode(() => store.toText(), 'ERR_CLOSED');
    // a transaction from before the close stays done
    await expectCode(() => savedTx!.get('kv', pos(1, 1)), 'ERR_TX_DONE');
    // properties stay readable
    expect([...store.btrees]).toEqual(['kv', 'ext']);
  });

  it('close waits for the operations in flight, then later calls fail with ERR_CLOSED', async () => {
    t = await tmpStore({ sizeBytes: 16 << 20 });
    const store = t.store;
    const writes = Array.from({ length: 5 }, (_, i) => store.put('kv', pos(1, i), enc(`w${i}`)));
    const closing = store.close();
    await expectCode(() => store.put('kv', pos(1, 9), enc('late')), 'ERR_CLOSED');
    await Promise.all(writes);
    await closing;
    const s = await Store.open(t.path);
    t.store = s;
    expect((await drain(s.range('kv'))).map((e) => dec(e.value))).toEqual(['w0', 'w1', 'w2', 'w3', 'w4']);
  });
});

/* ================================================================ processes: lock and recovery */

describe('a second process', () => {
  let t: TmpStore | undefined;
  afterEach(async () => {
    await t?.cleanup();
    t = undefined;
  });

  it('ERR_LOCKED: the store is open in this process; a second open in another process fails', async () => {
    t = await tmpStore({ sizeBytes: 16 << 20 });
    const c = child(`
      try { const s = await Store.open(${JSON.stringify(t.path)}); console.log('OPENED'); await s.close(); }
      catch (e) { console.log('RESULT ' + JSON.stringify({ sixtree: e instanceof SixtreeError, error: e instanceof Error, code: e.code, message: e.message })); }
      try { const s = await Store.open(${JSON.stringify(t.path)}, { readOnly: true }); console.log('OPENED_RO'); await s.close(); }
      catch (e) { console.log('RESULT_RO ' + JSON.stringify({ code: e.code })); }`);
    const r = await c.exit;
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    expect(line, r.stdout).toBeDefined();
    const res = JSON.parse(line!.slice('RESULT '.length)) as { sixtree: boolean; error: boolean; code: string; message: string };
    expect(res).toMatchObject({ sixtree: true, error: true, code: 'ERR_LOCKED' });
    expect(res.message).toContain(t.path);
    expect(r.stdout).toContain('RESULT_RO {"code":"ERR_LOCKED"}');
  });

  it('ERR_LOCKED: another process holds the store; this process gets the error, then opens once it is released', async () => {
    t = await tmpStore({ sizeBytes: 16 << 20 });
    await t.store.put('kv', pos(1, 1), enc('parent'));
    await t.store.close();
    const c = child(`
      const s = await Store.open(${JSON.stringify(t.path)});
      await s.put('kv', pos(1, 2), new TextEncoder().encode('child'));
      console.log('READY');
      process.stdin.resume();
      process.stdin.on('end', async () => { await s.close(); console.log('CLOSED'); });`);
    try {
      expect(await c.line('READY')).toBe('READY');
      await expectCode(() => Store.open(t!.path), 'ERR_LOCKED', t.path);
      await expectCode(() => Store.open(t!.path, { readOnly: true }), 'ERR_LOCKED', t.path);
    } finally {
      c.proc.stdin.end();
    }
    const r = await c.exit;
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('CLOSED');
    t.store = await Store.open(t.path);
    expect(dec(await t.store.get('kv', pos(1, 1)))).toBe('parent');
    expect(dec(await t.store.get('kv', pos(1, 2)))).toBe('child');
  });

  it('ERR_LOCKED: a second open in the same process', async () => {
    t = await tmpStore({ sizeBytes: 16 << 20 });
    await expectCode(() => Store.open(t!.path), 'ERR_LOCKED', t.path);
    // the first handle is unaffected
    await t.store.put('kv', pos(1, 1), enc('still'));
    expect(dec(await t.store.get('kv', pos(1, 1)))).toBe('still');
  });

  it.skipIf(ext4Reason !== undefined)('ERR_DEVICE_BUSY: format and open refuse a mounted block device, and the file system on it is untouched', async () => {
    await withScratchImage('sixtree-busy-', 64 << 20, async (img) => {
      await withLoop(img, async (dev) => {
        await withExt4Mounted(dev, async (mnt) => {
          writeFileSync(join(mnt, 'precious'), 'keep me');
          execFileSync('sync');
          for (const force of [false, true]) {
            const e = await expectCode(() => Store.format(dev, { nodeSize: 64 * 1024, btrees: [{ name: 'kv' }], force }), 'ERR_DEVICE_BUSY', dev);
            expect(e.message).toContain('mounted');
          }
          await expectCode(() => Store.open(dev), 'ERR_DEVICE_BUSY', dev);
          /* a read-only open writes nothing: it gets as far as the superblock, which is ext4's */
          await expectCode(() => Store.open(dev, { readOnly: true }), 'ERR_BAD_MAGIC', dev);
        });
        /* unmounted: ext4 checks clean (nothing of ours landed), then the device is free to format */
        execFileSync('e2fsck', ['-f', '-n', dev], { stdio: 'pipe' });
        await Store.format(dev, { nodeSize: 64 * 1024, btrees: [{ name: 'kv' }], force: true });
        const s = await Store.open(dev);
        await s.put('kv', pos(1, 1), enc('ours now'));
        await s.close();
      });
    });
  });

  it('open runs recovery: writes resolved before a process exited without close are there', async () => {
    t = await tmpStore({ sizeBytes: 16 << 20 });
    await t.store.close();
    const c = child(`
      const s = await Store.open(${JSON.stringify(t.path)});
      const e = new TextEncoder();
      for (let i = 0; i < 20; i++) await s.put('kv', pos(1, i), e.encode('r' + i));
      await s.transact((tx) => tx.putExtent('ext', pos(3, 0), 10, e.encode('X')));
      console.log('WRITTEN');
      process.exit(0);`);
    const r = await c.exit;
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('WRITTEN');
    t.store = await Store.open(t.path);
    const kv = await drain(t.store.range('kv'));
    expect(kv.map((e) => dec(e.value))).toEqual(Array.from({ length: 20 }, (_, i) => `r${i}`));
    expect((await drain(t.store.range('ext'))).map((e) => posText(e.pos))).toEqual(['3:10:0']);
  });
});

/* ================================================================ corrupt node */

/** Superblock copy 0: blockBytes @48, nodeBytes @52, bucketOffsetBytes @80, nrBuckets @88 (src/format/superblock.ts). */
function storeGeometry(path: string): { sb: Buffer; blockBytes: number; nodeBytes: number; bucketOffset: number; nrBuckets: number } {
  const sb = readAt(path, SB_OFFSETS[0], SB_BYTES);
  return { sb, blockBytes: sb.readUInt32LE(48), nodeBytes: sb.readUInt32LE(52), bucketOffset: Number(sb.readBigUInt64LE(80)), nrBuckets: sb.readUInt32LE(88) };
}

describe('ERR_CHECKSUM: a corrupt node', () => {
  it('reads that need the node fail with ERR_CHECKSUM (offset named); other leaves and btrees keep working', async () => {
    const t = await tmpStore({ sizeBytes: 16 << 20 });
    try {
      const N = 400;
      await t.store.transact((tx) => {
        for (let i = 0; i < N; i++) tx.put('kv', pos(1, i), new Uint8Array(100).fill(i & 255));
        tx.putExtent('ext', pos(1, 0), 10, enc('safe'));
      });
      await t.store.close();

      const { sb, nodeBytes, bucketOffset, nrBuckets } = storeGeometry(t.path);
      const extRoot = sb.readUInt32LE(128 + 48 + 4);
      // Node header (src/format/btree-node.ts): magic u32 @0, btree id u8 @10, level u8 @11, min key u32[5] @24.
      const fd = openSync(t.path, 'r+');
      let magic = -1;
      let corrupted = 0;
      try {
        const hdr = Buffer.alloc(512);
        const first = Buffer.alloc(4);
        readSync(fd, first, 0, 4, bucketOffset + extRoot * nodeBytes);
        magic = first.readUInt32LE(0);
        for (let b = 0; b < nrBuckets; b++) {
          const off = bucketOffset + b * nodeBytes;
          readSync(fd, hdr, 0, hdr.length, off);
          if (hdr.readUInt32LE(0) !== magic || hdr[10] !== 0 || hdr[11] !== 0) continue;
          if (hdr.subarray(24, 44).every((x) => x === 0)) continue; // the leaf starting at POS_MIN stays good
          // flip a byte of the first bset's journal seq (128 + 16): its checksum no longer matches
          const x = Buffer.from([hdr[128 + 16]! ^ 0xff]);
          writeSync(fd, x, 0, 1, off + 128 + 16);
          corrupted++;
        }
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      expect(corrupted, 'the kv btree should have split into several leaves').toBeGreaterThan(0);

      const s = await Store.open(t.path);
      t.store = s;
      // the first leaf is intact
      expect((await s.get('kv', pos(1, 0)))![0]).toBe(0);
      // the last key lives in a corrupted leaf
      await expectCode(() => s.get('kv', pos(1, N - 1)), 'ERR_CHECKSUM', 'offset');
      await expectCode(() => drain(s.range('kv')), 'ERR_CHECKSUM');
      await expectCode(() => s.put('kv', pos(1, N - 2), enc('w')), 'ERR_CHECKSUM');
      // other btrees are unaffected and writable
      expect((await drain(s.range('ext'))).map((e) => dec(e.value))).toEqual(['safe']);
      await s.transact((tx) => tx.putExtent('ext', pos(2, 0), 10, enc('more')));
      expect(await drain(s.range('ext'))).toHaveLength(2);
      // and the process is alive and the store usable for the intact leaf
      expect((await s.get('kv', pos(1, 1)))![0]).toBe(1);
    } finally {
      await t.cleanup();
    }
  });
});

/**
 * Byte offset in the store file of the last bset of the leaf ending at
 * POS_MAX, which must hold an appended bset (two or more). Node header: magic
 * @0, level @11, max key u32[5] @44; bsets from 128, each at the block after
 * the previous one: magic "BSET" @4, offset @24, u64s @28, 48-byte header
 * (src/format/btree-node.ts).
 */
/** The offset of the last bset of the live rightmost node at `level` (a leaf by default), which must have an appended bset. */
function lastNodeAppendOffset(path: string, level = 0): number {
  const { nodeBytes, blockBytes, bucketOffset, nrBuckets } = storeGeometry(path);
  const fd = openSync(path, 'r');
  let lastBset = -1;
  let newestSeq = -1n;
  try {
    const node = Buffer.alloc(nodeBytes);
    for (let b = 0; b < nrBuckets; b++) {
      const off = bucketOffset + b * nodeBytes;
      readSync(fd, node, 0, nodeBytes, off);
      if (node.readUInt32LE(0) !== 0x4e545853 || node[11] !== level) continue;
      if (!node.subarray(44, 64).every((x) => x === 0xff)) continue; // the rightmost node: max key POS_MAX
      let bsets = 0;
      let last = -1;
      for (let o = 128; o + 48 <= nodeBytes && node.readUInt32LE(o + 4) === 0x54455342 && node.readUInt32LE(o + 24) === o; bsets++) {
        last = o;
        o = Math.ceil((o + 48 + node.readUInt32LE(o + 28) * 8) / blockBytes) * blockBytes;
      }
      // stale copies of nodes replaced since can sit in free buckets, appends and all: the
      // live node is the one whose last bset holds the newest keys (its header's journal seq)
      const seq = bsets >= 2 ? node.readBigUInt64LE(last + 16) : -1n;
      if (seq > newestSeq) {
        newestSeq = seq;
        lastBset = off + last;
      }
    }
  } finally {
    closeSync(fd);
  }
  expect(lastBset, `the rightmost level ${level} node should hold an appended bset`).toBeGreaterThan(0);
  return lastBset;
}

describe('ERR_CHECKSUM: a damaged last bset', () => {
  /** Keys (1, 0..N-1) written and flushed, then (1, N-1) overwritten and (1, N-2) deleted: an append to the last leaf; closed cleanly. Returns the append's offset. */
  const N = 400;
  async function closedWithLastAppend(t: TmpStore): Promise<number> {
    await t.store.transact((tx) => {
      for (let i = 0; i < N; i++) tx.put('kv', pos(1, i), new Uint8Array(100).fill(i & 255));
    });
    await t.store.flush();
    // committed after the leaves were written: they go into one more bset (an append) of the last leaf
    await t.store.put('kv', pos(1, N - 1), enc('new'));
    await t.store.del('kv', pos(1, N - 2));
    await t.store.close();
    return lastNodeAppendOffset(t.path);
  }

  /** The damaged leaf refuses its reads with the pointer's length named; fsck reports it alone and walks on; other leaves read. */
  async function expectLastLeafRefused(s: Store): Promise<void> {
    await expectCode(() => s.get('kv', pos(1, N - 2)), 'ERR_CHECKSUM', 'the pointer says are written');
    // fsck names the node and the code, and walks on: that one problem only (its bucket still counts as in the tree)
    const problems = await s.fsck();
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^btree kv level 0 bucket \d+: ERR_CHECKSUM: .*the pointer says are written/);
    expect((await s.get('kv', pos(1, 0)))![0]).toBe(0);
    expect(s.stats().cache.counters.tornBsets).toBe(0);
  }

  it('a leaf whose last append is damaged after a clean close fails its reads: the updates it holds are not silently undone', async () => {
    const t = await tmpStore({ sizeBytes: 16 << 20 });
    try {
      const lastBset = await closedWithLastAppend(t);
      const fd = openSync(t.path, 'r+');
      try {
        // one bit of its first key (inside the keys: the header's own checksum still holds)
        const x = Buffer.alloc(1);
        readSync(fd, x, 0, 1, lastBset + 48 + 4);
        x[0]! ^= 0x10;
        writeSync(fd, x, 0, 1, lastBset + 48 + 4);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }

      const s = await Store.open(t.path);
      t.store = s;
      // before: the leaf read as it was before the append, 'new' back to its old value and the deleted key back
      // the parent's pointer records how far the leaf is written (a clean close updated it)
      const e = await expectCode(() => s.get('kv', pos(1, N - 1)), 'ERR_CHECKSUM', 'the pointer says are written');
      expect(e.message).toContain('bad checksum');
      await expectLastLeafRefused(s);
    } finally {
      await t.cleanup();
    }
  });

  // What the journal cannot tell from a torn append: the bset reads as never
  // written. The parent's pointer says how far the leaf is written.
  it.each([
    ['its header hit (the bset offset field: the bset reads as never written)', 'header'],
    ['its block zeroed (a write the device acknowledged and lost)', 'zeroed'],
  ])('a leaf whose last append has %s fails its reads after a clean close', async (_what, kind) => {
    const t = await tmpStore({ sizeBytes: 16 << 20 });
    try {
      const lastBset = await closedWithLastAppend(t);
      const { blockBytes } = storeGeometry(t.path);
      const fd = openSync(t.path, 'r+');
      try {
        if (kind === 'header') {
          const x = Buffer.alloc(1);
          readSync(fd, x, 0, 1, lastBset + 24);
          x[0]! ^= 0x08;
          writeSync(fd, x, 0, 1, lastBset + 24);
        } else {
          writeSync(fd, Buffer.alloc(blockBytes), 0, blockBytes, lastBset);
        }
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }

      const s = await Store.open(t.path);
      t.store = s;
      // without the recorded length the leaf read as before the append: 'new' gone, the deleted key back, no error
      await expectCode(() => s.get('kv', pos(1, N - 1)), 'ERR_CHECKSUM', 'the pointer says are written');
      await expectLastLeafRefused(s);
    } finally {
      await t.cleanup();
    }
  });

  it('an interior node below the root whose last append is lost after a clean close: open refuses with ERR_CHECKSUM, the pointers it added are not silently undone', async () => {
    // 4 KiB nodes: 4,000 keys of 100 bytes make a tree of three levels
    const t = await tmpStore({ sizeBytes: 32 << 20 });
    try {
      const M = 4000;
      for (let b = 0; b < M; b += 500) {
        await t.store.transact((tx) => {
          for (let i = b; i < b + 500; i++) tx.put('kv', pos(1, i), new Uint8Array(100).fill(i & 255));
        });
      }
      await t.store.flush();
      // new keys past the end split the last leaf: its parent takes the new pointers in an append
      await t.store.transact((tx) => {
        for (let i = M; i < M + 60; i++) tx.put('kv', pos(1, i), enc(`tail ${i}`));
      });
      expect(t.store.stats().btrees['kv']!.rootLevel, 'a root above interior nodes').toBe(2);
      await t.store.close();
      const lastBset = lastNodeAppendOffset(t.path, 1);
      const { blockBytes } = storeGeometry(t.path);
      const fd = openSync(t.path, 'r+');
      try {
        writeSync(fd, Buffer.alloc(blockBytes), 0, blockBytes, lastBset); // a write the device acknowledged and lost
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      // open walks the interior levels (the allocator is rebuilt from the tree): it refuses, naming the
      // node. With no length recorded (before), the lost append read as never written, like a torn
      // one: here the journal, still holding the split's pointer keys, put them back; once it no
      // longer holds them, the node reads as its older self without the new leaves' pointers
      const e = await Store.open(t.path).then(
        () => null,
        (x: unknown) => x,
      );
      expect(e).toBeInstanceOf(SixtreeError);
      expect((e as SixtreeError).code).toBe('ERR_CHECKSUM');
      expect((e as SixtreeError).message).toMatch(/level 1 bucket \d+ .*inside the \d+ bytes the pointer says are written/);
    } finally {
      await t.cleanup();
    }
  });

  it('pointers record how far their nodes are written: stats count the updates, and a store reopened reads every node against them', async () => {
    const t = await tmpStore({ sizeBytes: 16 << 20 });
    try {
      for (let r = 0; r < 6; r++) {
        await t.store.transact((tx) => {
          for (let i = 0; i < 300; i++) tx.put('kv', pos(1, (i * 7 + r) % 2000), new Uint8Array(60).fill(r));
        });
        await t.store.flush();
      }
      const c = t.store.stats().writeback;
      expect(c.ptrUpdates).toBeGreaterThan(0);
      expect(c.ptrUpdatesRoot).toBeGreaterThan(0);
      expect(c.ptrUpdatesDropped).toBe(0);
      // the first write of a node a split made: its pointer is journaled by the split, without a length
      expect(c.ptrUpdatesUnjournaled).toBeGreaterThan(0);
      expect(c.ptrUpdatesInterior).toBeGreaterThan(0);
      expect(t.store.toText()).toMatch(/pointer updates:\s+\d+ \(roots \d+, interior \d+\)/);
      await t.store.close();
      const s = await Store.open(t.path);
      t.store = s;
      expect(await s.fsck()).toEqual([]);
      expect(s.stats().cache.counters.tornBsets).toBe(0);
      // a clean close leaves every length recorded: each node's pointer (the root's in the journal) says exactly how far its node is written
      type Walk = (id: number, minLevel: number, visit: (n: { keys: { writtenBytes: number } } | null, info: { ptr: Uint8Array; level: number }) => void) => Promise<void>;
      const engine = s.engine as unknown as { walkTree: Walk; roots: Array<{ journalPtr: Uint8Array; node: { keys: { writtenBytes: number } } }> };
      let nodes = 0;
      const levels = new Set<number>();
      await engine.walkTree.call(engine, 0, 0, (n, info) => {
        // the walk starts at the root, whose length is in the journal (checked below)
        if (nodes++ === 0) return;
        expect(btreePtrDecode(info.ptr).sectorsWritten! * 512).toBe(n!.keys.writtenBytes);
        levels.add(info.level);
      });
      expect(nodes).toBeGreaterThan(3);
      expect([...levels].sort()).toEqual([0, 1]); // leaves and interior nodes below the root
      expect(btreePtrDecode(engine.roots[0]!.journalPtr).sectorsWritten! * 512).toBe(engine.roots[0]!.node.keys.writtenBytes);
    } finally {
      await t.cleanup();
    }
  });
});

/* ================================================================ promise-returning calls */

describe('promise-returning calls report errors by rejecting', () => {
  it('get/put/del/transact/flush/close return a rejected promise rather than throwing synchronously', async () => {
    const t = await tmpStore({ sizeBytes: 16 << 20 });
    try {
      const s = t.store;
      const calls: Array<[string, () => Promise<unknown>, string]> = [
        ['get unknown btree', () => s.get('nope', pos(1, 1)), 'ERR_UNKNOWN_BTREE'],
        ['put bad position', () => s.put('kv', { inode: -1, offset: 0 }, enc('v')), 'ERR_INVALID_ARG'],
        ['put value too large', () => s.put('kv', pos(1, 1), new Uint8Array(s.maxValueSize + 1)), 'ERR_VALUE_TOO_LARGE'],
        ['del on an extents btree', () => s.del('ext', pos(1, 1)), 'ERR_IS_EXTENTS'],
        ['transact with a non-function', () => s.transact(5 as unknown as () => void), 'ERR_INVALID_ARG'],
      ];
      const syncThrows: string[] = [];
      const check = async (name: string, f: () => Promise<unknown>, code: string): Promise<void> => {
        let p: Promise<unknown> | undefined;
        try {
          p = f();
        } catch (e) {
          syncThrows.push(`${name}: threw ${(e as SixtreeError).code} synchronously`);
          return;
        }
        expect(p).toBeInstanceOf(Promise);
        await expect(p, name).rejects.toMatchObject({ code });
      };
      for (const [name, f, code] of calls) await check(name, f, code);
      await s.close();
      const closed: Array<[string, () => Promise<unknown>]> = [
        ['get after close', () => s.get('kv', pos(1, 1))],
        ['put after close', () => s.put('kv', pos(1, 1), enc('v'))],
        ['del after close', () => s.del('kv', pos(1, 1))],
        ['transact after close', () => s.transact(() => 1)],
        ['flush after close', () => s.flush()],
        ['close after close', () => s.close()],
      ];
      for (const [name, f] of closed) await check(name, f, 'ERR_CLOSED');
      expect(syncThrows).toEqual([]);
    } finally {
      await t.cleanup();
    }
  });
});

describe('SixtreeError', () => {
  it('is an Error subclass with a stable code from the documented table', async () => {
    const e = await expectCode(() => pos(-1, 0), 'ERR_INVALID_ARG');
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('SixtreeError');
    expect(typeof e.stack).toBe('string');
    expect([...PUBLIC_CODES].sort()).toEqual(
      [
        'ERR_INVALID_ARG', 'ERR_NOT_FOUND_DEVICE', 'ERR_NO_DIRECT_IO', 'ERR_TOO_SMALL', 'ERR_EXISTS', 'ERR_BAD_MAGIC', 'ERR_VERSION',
        'ERR_LOCKED', 'ERR_CHECKSUM', 'ERR_TOPOLOGY', 'ERR_IO', 'ERR_NO_SPACE', 'ERR_CACHE_TOO_SMALL', 'ERR_VALUE_TOO_LARGE',
        'ERR_UNKNOWN_BTREE', 'ERR_NOT_EXTENTS', 'ERR_IS_EXTENTS', 'ERR_READ_ONLY', 'ERR_CLOSED', 'ERR_TX_DONE', 'ERR_TOO_MANY_RESTARTS',
        // additions beyond API.md's table (docs/api.md)
        'ERR_WOULD_BLOCK', 'ERR_TX_NESTED', 'ERR_DEVICE_BUSY',
      ].sort(),
    );
  });
});

describe.skipIf(loopReason !== undefined)('on a read-only loop device', () => {
  it('a writable open or format is ERR_READ_ONLY at once (not a failed write); readOnly opens read the store', async () => {
    await withScratchImage('sixtree-rodev-', 64 << 20, async (img) => {
      await withLoop(img, async (dev) => {
        await Store.format(dev, { nodeSize: 16 * 1024, btrees: [{ name: 'kv' }] });
        const s = await Store.open(dev);
        await s.put('kv', pos(1, 1), enc('written before'));
        await s.close();
      });
      const before = readFileSync(img);
      await withLoop(
        img,
        async (dev) => {
          for (const open of [() => Store.open(dev), () => Store.format(dev, { nodeSize: 16 * 1024, btrees: [{ name: 'kv' }], force: true })]) {
            const e = await expectCode(open, 'ERR_READ_ONLY', dev);
            expect(e.message).toContain('readOnly: true');
          }
          const s = await Store.open(dev, { readOnly: true });
          expect(dec(await s.get('kv', pos(1, 1)))).toBe('written before');
          await s.close();
        },
        { readOnly: true },
      );
      expect(readFileSync(img).equals(before)).toBe(true);
    });
  });
});

describe.skipIf(ext4Reason !== undefined)('on a read-only file system', () => {
  it('a writable open of a store file is ERR_READ_ONLY; readOnly opens read it', async () => {
    await withScratchImage('sixtree-rofs-', 64 << 20, async (img) => {
      await withLoop(img, async (dev) => {
        await withExt4Mounted(dev, async (mnt, remountReadOnly) => {
          const file = join(mnt, 'store.img');
          await Store.format(file, { size: 16 << 20, nodeSize: 16 * 1024, btrees: [{ name: 'kv' }] });
          const s = await Store.open(file);
          await s.put('kv', pos(1, 1), enc('on ext4'));
          await s.close();
          remountReadOnly();
          const e = await expectCode(() => Store.open(file), 'ERR_READ_ONLY', file);
          expect(e.message).toContain('readOnly: true');
          const r = await Store.open(file, { readOnly: true });
          expect(dec(await r.get('kv', pos(1, 1)))).toBe('on ext4');
          await r.close();
        });
      });
    });
  });
});

describe.skipIf(loopReason !== undefined)('on a loop device with 4096-byte logical sectors (as a 4Kn disk)', () => {
  it('formats, commits, reopens and checks clean; a blockSize below the sector size is ERR_INVALID_ARG', async () => {
    await withScratchImage('sixtree-4kn-', 64 << 20, async (img) => {
      await withLoop(
        img,
        async (dev) => {
          const e = await expectCode(() => Store.format(dev, { nodeSize: 16 * 1024, blockSize: 512, btrees: [{ name: 'kv' }] }), 'ERR_INVALID_ARG', dev);
          expect(e.message).toContain('4096');
          await Store.format(dev, { nodeSize: 16 * 1024, btrees: [{ name: 'kv' }, { name: 'files', extents: true }] });
          let s = await Store.open(dev, { cacheSize: 4 << 20 });
          /* enough keys for splits (16 KiB nodes), a group of concurrent commits, an extent */
          for (let b = 0; b < 10; b++) await s.transact(async (tx) => { for (let i = 0; i < 500; i++) tx.put('kv', pos(1, b * 500 + i), enc(`v${b * 500 + i}`)); });
          await Promise.all(Array.from({ length: 32 }, (_, i) => s.put('kv', pos(2, i), enc(`c${i}`))));
          await s.transact(async (tx) => { tx.putExtent('files', pos(7, 0), 8192, new Uint8Array([1, 2, 3])); });
          await s.close();
          s = await Store.open(dev, { cacheSize: 4 << 20 });
          let n = 0;
          for await (const _ of s.range('kv', {})) n++;
          expect(n).toBe(5032);
          expect(dec(await s.get('kv', pos(1, 4321)))).toBe('v4321');
          expect(dec(await s.get('kv', pos(2, 31)))).toBe('c31');
          expect(await s.fsck()).toEqual([]);
          await s.close();
        },
        { sectorBytes: 4096 },
      );
    });
  });
});
