// SPDX-License-Identifier: GPL-2.0-only
/*
 * Test helpers for the superblock, allocator and journal tests: a pure-JS
 * in-memory Device that records write/flush ordering and builds crash images,
 * and a seeded PRNG.
 *
 * TestDevice semantics (a disk with a volatile write cache):
 *  - write() copies into the current image at once and is "pending" (lost or
 *    kept, whole or torn, at a crash) until a flush() issued after it completes;
 *  - flush() makes durable exactly the writes issued before it was called;
 *  - crashImage() = durable image + any subset of pending writes, each
 *    optionally torn at sector granularity;
 *  - latencyMs > 0 makes write/flush complete after a timer (in-flight
 *    windows for group commit); 0 completes on a later macrotask.
 */

import type { Device, DeviceStats, IoOp } from '../../src/io/device.js';
import { JSET_ENTRY, jsetEntryBytes } from '../../src/format/journal-format.js';
import { JournalSeqBlacklist } from '../../src/journal/blacklist.js';
import { Journal, type JournalOptions, type JournalRes } from '../../src/journal/journal.js';
import { readJournal, type JournalReadResult } from '../../src/journal/read.js';
import { computeLayout, type Layout } from '../../src/layout.js';

/** The shared seeded PRNG (mulberry32). */
import { Prng } from '../format/prng.js';
export { Prng };

export interface LogOp {
  op: 'write' | 'flush' | 'read';
  offsetBytes: number;
  lengthBytes: number;
  /** Index of the write (writes only). */
  writeId: number;
}

interface Pending {
  id: number;
  offsetBytes: number;
  data: Uint8Array;
}

export interface TestDeviceOpts {
  alignBytes?: number;
  latencyMs?: number;
  path?: string;
  readOnly?: boolean;
}

export class TestDevice implements Device {
  readonly path: string;
  readonly kind = 'memory' as const;
  readonly sizeBytes: number;
  readonly alignBytes: number;
  readOnly: boolean;
  readonly stats: DeviceStats = { reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, flushes: 0 };
  /** The image as reads see it (pending writes applied). */
  readonly img: Uint8Array;
  /** The image as of the last completed flush. */
  readonly durable: Uint8Array;
  pending: Pending[] = [];
  readonly log: LogOp[] = [];
  latencyMs: number;
  /** Called after each write/flush is issued (for taking crash snapshots). */
  onOp: ((op: LogOp) => void) | null = null;
  /** Return true to fail this write with EIO. */
  failWrite: ((offsetBytes: number, lengthBytes: number) => boolean) | null = null;
  /** Buffers handed out and not freed. */
  buffersOutstanding = 0;
  private writeIds = 0;

  constructor(sizeBytes: number, opts: TestDeviceOpts = {}) {
    this.alignBytes = opts.alignBytes ?? 512;
    if (sizeBytes % this.alignBytes !== 0) throw new Error('TestDevice: size must be a multiple of alignBytes');
    this.sizeBytes = sizeBytes;
    this.img = new Uint8Array(sizeBytes);
    this.durable = new Uint8Array(sizeBytes);
    this.latencyMs = opts.latencyMs ?? 0;
    this.path = opts.path ?? 'test:mem';
    this.readOnly = opts.readOnly ?? false;
  }

  /** A device whose durable and current image are `image`. */
  static fromImage(image: Uint8Array, opts: TestDeviceOpts = {}): TestDevice {
    const d = new TestDevice(image.length, opts);
    d.img.set(image);
    d.durable.set(image);
    return d;
  }

  private check(buf: Uint8Array, off: number): void {
    if (off % this.alignBytes !== 0 || buf.length % this.alignBytes !== 0) throw new Error(`TestDevice: unaligned I/O at ${off} length ${buf.length} (align ${this.alignBytes})`);
    if (off < 0 || off + buf.length > this.sizeBytes) throw new Error(`TestDevice: I/O at ${off} length ${buf.length} outside ${this.sizeBytes}`);
  }

  private later(): Promise<void> {
    return new Promise((r) => (this.latencyMs > 0 ? setTimeout(r, this.latencyMs) : setImmediate(r)));
  }

  allocBuffer(sizeBytes: number): Uint8Array {
    if (sizeBytes % this.alignBytes !== 0) throw new Error(`TestDevice: buffer size ${sizeBytes} not aligned`);
    this.buffersOutstanding++;
    return new Uint8Array(sizeBytes);
  }

  freeBuffer(_buf: Uint8Array): void {
    this.buffersOutstanding--;
  }

  readSync(buf: Uint8Array, off: number): void {
    this.check(buf, off);
    buf.set(this.img.subarray(off, off + buf.length));
    this.stats.reads++;
    this.stats.bytesRead += buf.length;
    this.log.push({ op: 'read', offsetBytes: off, lengthBytes: buf.length, writeId: -1 });
  }

  writeSync(buf: Uint8Array, off: number): void {
    this.check(buf, off);
    if (this.readOnly) throw new Error('TestDevice: read-only');
    if (this.failWrite?.(off, buf.length)) {
      const e = new Error(`EIO writing ${buf.length} bytes at ${off}`) as Error & { code: string };
      e.code = 'EIO';
      throw e;
    }
    const id = this.writeIds++;
    this.img.set(buf, off);
    this.pending.push({ id, offsetBytes: off, data: buf.slice() });
    this.stats.writes++;
    this.stats.bytesWritten += buf.length;
    const op: LogOp = { op: 'write', offsetBytes: off, lengthBytes: buf.length, writeId: id };
    this.log.push(op);
    this.onOp?.(op);
  }

  async read(buf: Uint8Array, off: number): Promise<void> {
    this.readSync(buf, off);
    await this.later();
  }

  async write(buf: Uint8Array, off: number): Promise<void> {
    this.writeSync(buf, off);
    await this.later();
  }

  async submit(ops: readonly IoOp[]): Promise<void> {
    for (const o of ops) (o.op === 'read' ? this.readSync(o.buf, o.offsetBytes) : this.writeSync(o.buf, o.offsetBytes));
    await this.later();
  }

  async flush(): Promise<void> {
    const covered = this.pending.length;
    const op: LogOp = { op: 'flush', offsetBytes: 0, lengthBytes: 0, writeId: this.writeIds - 1 };
    this.log.push(op);
    this.onOp?.(op);
    await this.later();
    const done = this.pending.slice(0, covered);
    this.pending = this.pending.slice(covered);
    for (const p of done) this.durable.set(p.data, p.offsetBytes);
    this.stats.flushes++;
  }

  async close(): Promise<void> {}

  toText(): string {
    return `TestDevice ${this.path}: ${this.sizeBytes} bytes, ${this.pending.length} pending writes\n`;
  }

  /** Snapshot of durable + pending for building crash images later. */
  snapshot(): CrashSnapshot {
    return { durable: this.durable.slice(), pending: this.pending.map((p) => ({ id: p.id, offsetBytes: p.offsetBytes, data: p.data.slice() })) };
  }
}

export interface CrashSnapshot {
  durable: Uint8Array;
  pending: Pending[];
}

/**
 * A crash image: the durable image plus each pending write kept with
 * probability keepP, a kept write torn (only a random prefix of sectors
 * landed) with probability tearP.
 */
export function crashImage(s: CrashSnapshot, rng: Prng, keepP = 0.5, tearP = 0.3, sectorBytes = 512): Uint8Array {
  const img = s.durable.slice();
  for (const p of s.pending) {
    if (!rng.bool(keepP)) continue;
    if (rng.bool(tearP)) {
      const sectors = p.data.length / sectorBytes;
      // any subset of sectors may land; keep it simple: a random prefix, or a random set
      if (rng.bool()) {
        const n = rng.int(sectors);
        img.set(p.data.subarray(0, n * sectorBytes), p.offsetBytes);
      } else {
        for (let i = 0; i < sectors; i++) if (rng.bool()) img.set(p.data.subarray(i * sectorBytes, (i + 1) * sectorBytes), p.offsetBytes + i * sectorBytes);
      }
    } else {
      img.set(p.data, p.offsetBytes);
    }
  }
  return img;
}

/** Let timers and I/O callbacks run. */
export function tick(ms = 0): Promise<void> {
  return new Promise((r) => (ms > 0 ? setTimeout(r, ms) : setImmediate(r)));
}

/* ---------------------------------------------------------------------------
 * A journal on a TestDevice, with a model of what was committed.
 */

export const UUID = Uint8Array.from({ length: 16 }, (_, i) => (i * 37 + 11) & 0xff);

export interface Env {
  dev: TestDevice;
  layout: Layout;
  roots: Array<{ btreeId: number; level: number; ptr: Uint8Array }>;
  blacklist: JournalSeqBlacklist;
}

export function makeEnv(opts: { journalBytes?: number; latencyMs?: number; blockBytes?: number } = {}): Env {
  const blockBytes = opts.blockBytes ?? 4096;
  const journalBytes = opts.journalBytes ?? 256 * 1024;
  const layout = computeLayout({ deviceBytes: 16384 + journalBytes + 64 * 4096 + 65536, nodeBytes: 4096 * Math.max(1, blockBytes / 4096), blockBytes, journalBytes });
  const dev = new TestDevice(layout.deviceBytes, { latencyMs: opts.latencyMs ?? 0 });
  const roots = [0, 1].map((id) => ({ btreeId: id, level: 0, ptr: Uint8Array.from({ length: 16 }, (_, i) => id * 16 + i) }));
  return { dev, layout, roots, blacklist: new JournalSeqBlacklist() };
}

export function openJournal(env: Env, opts: Partial<JournalOptions> = {}): Journal {
  return new Journal(env.dev, env.layout, {
    uuid: UUID,
    nrBtrees: 2,
    getRoots: () => env.roots,
    rootPtrBytesMax: 32,
    blacklist: env.blacklist,
    ...opts,
  });
}

export function read(env: Env, image?: Uint8Array, blacklist: JournalSeqBlacklist | undefined = env.blacklist): Promise<JournalReadResult> {
  const dev = image ? TestDevice.fromImage(image) : env.dev;
  return readJournal(dev, env.layout, { uuid: UUID, blacklist, chunkBytes: 64 * 1024 });
}

/** Per seq, the btree_keys payloads in add order. */
export class Model {
  bySeq = new Map<number, Uint8Array[]>();
  record(seq: number, payload: Uint8Array): void {
    let l = this.bySeq.get(seq);
    if (!l) this.bySeq.set(seq, (l = []));
    l.push(payload);
  }
  /** Check an entry read back against what was committed in its seq. Returns a problem or null. */
  check(e: { seq: number; entries: Array<{ type: number; btreeId: number; level: number; payload: Uint8Array }> }): string | null {
    const got = e.entries.filter((s) => s.type === JSET_ENTRY.btree_keys).map((s) => s.payload);
    const want = this.bySeq.get(e.seq) ?? [];
    if (got.length !== want.length) return `seq ${e.seq}: ${got.length} key sub-entries, want ${want.length}`;
    for (let i = 0; i < got.length; i++) {
      if (Buffer.compare(got[i]!, want[i]!) !== 0) return `seq ${e.seq}: sub-entry ${i} differs`;
    }
    return null;
  }
}

/** One transaction: reserve, add n random payloads, optional hook before release, release. */
export async function commit(j: Journal, model: Model, rng: Prng, opts: { n?: number; maxBytes?: number; beforeRelease?: (res: JournalRes) => void } = {}): Promise<number> {
  const n = opts.n ?? rng.range(1, 3);
  const payloads = Array.from({ length: n }, () => rng.bytes(rng.range(1, opts.maxBytes ?? 1500)));
  const res = await j.reserve(payloads.reduce((s, p) => s + jsetEntryBytes(p.length), 0));
  for (const p of payloads) {
    res.add('btree_keys', rng.int(2), 0, p);
    model.record(res.seq, p);
  }
  opts.beforeRelease?.(res);
  j.release(res);
  return res.seq;
}
