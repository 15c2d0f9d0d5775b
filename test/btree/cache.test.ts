// SPDX-License-Identifier: GPL-2.0-only
/*
 * BtreeCache (src/btree/cache.ts), named after the seed's functions.
 *
 * Real nodes (NodeKeys + nodeWritePrepare) on an in-memory device that counts
 * reads per offset, can hold reads in flight (hold()) and fail them (EIO);
 * transactions are LockOwners with real six locks through locking.ts. No
 * timers: "in flight" is a read held at the device.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BtreeCache, NOT_FREED_REASONS, cacheSizeBytesDefault } from '../../src/btree/cache.js';
import { NodeKeys } from '../../src/btree/bset.js';
import { nodeWriteDone, nodeWritePrepare } from '../../src/btree/node-io.js';
import { bkeyValue } from '../../src/btree/bkey.js';
import { pos, posWords } from '../../src/btree/bpos.js';
import { LockOwnerBase, lockingCounters, nodeLock, nodeRelock, nodeUnlock, nodeUnlockAll } from '../../src/btree/locking.js';
import { NodeFlag, type Node } from '../../src/btree/node.js';
import { LOCK_INTENT, LOCK_READ, type BtreePtr, type CacheTrans, type LockType } from '../../src/btree/types.js';
import { ERR, SixtreeError } from '../../src/errors.js';
import type { Device, DeviceStats, IoOp } from '../../src/io/device.js';
import { SixLockType } from '../../src/util/six.js';

/* ---------------------------------------------------------------------------
 * Harness.
 */

/** An in-memory Device: plain buffers, reads counted per offset, held, or failed. */
class TestDevice implements Device {
  readonly path = 'test:cache';
  readonly kind = 'memory' as const;
  readonly alignBytes = 512;
  readonly readOnly = false;
  readonly stats: DeviceStats = { reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, flushes: 0 };
  readonly img: Uint8Array;
  readonly sizeBytes: number;
  readonly readsAt = new Map<number, number>();
  readonly failReads = new Set<number>();
  private readonly live = new Set<Uint8Array>();
  private gate: Promise<void> | null = null;
  buffersAllocated = 0;

  constructor(sizeBytes: number) {
    this.sizeBytes = sizeBytes;
    this.img = new Uint8Array(sizeBytes);
  }

  get buffersLive(): number {
    return this.live.size;
  }

  allocBuffer(sizeBytes: number): Uint8Array {
    const b = new Uint8Array(sizeBytes);
    this.live.add(b);
    this.buffersAllocated++;
    return b;
  }

  freeBuffer(buf: Uint8Array): void {
    if (!this.live.delete(buf)) throw new Error('freeBuffer: buffer freed twice or not ours');
  }

  /** Reads wait until the returned function (or releaseHold) is called. */
  hold(): () => void {
    let open!: () => void;
    this.gate = new Promise<void>((r) => {
      open = r;
    });
    this.releaseHold = () => {
      this.gate = null;
      open();
    };
    return this.releaseHold;
  }

  releaseHold: () => void = () => {};

  async read(buf: Uint8Array, offsetBytes: number): Promise<void> {
    this.stats.reads++;
    this.readsAt.set(offsetBytes, (this.readsAt.get(offsetBytes) ?? 0) + 1);
    if (this.gate !== null) await this.gate;
    else await Promise.resolve();
    if (this.failReads.has(offsetBytes)) throw Object.assign(new Error(`EIO: i/o error, read at ${offsetBytes}`), { code: 'EIO' });
    buf.set(this.img.subarray(offsetBytes, offsetBytes + buf.length));
    this.stats.bytesRead += buf.length;
  }

  async write(buf: Uint8Array, offsetBytes: number): Promise<void> {
    this.writeSync(buf, offsetBytes);
  }

  async submit(ops: readonly IoOp[]): Promise<void> {
    for (const op of ops) await (op.op === 'read' ? this.read(op.buf, op.offsetBytes) : this.write(op.buf, op.offsetBytes));
  }

  readSync(buf: Uint8Array, offsetBytes: number): void {
    buf.set(this.img.subarray(offsetBytes, offsetBytes + buf.length));
  }

  writeSync(buf: Uint8Array, offsetBytes: number): void {
    this.stats.writes++;
    this.stats.bytesWritten += buf.length;
    this.img.set(buf, offsetBytes);
  }

  async flush(): Promise<void> {
    this.stats.flushes++;
  }

  async close(): Promise<void> {}

  toText(): string {
    return `test device ${this.sizeBytes} bytes`;
  }
}

/** A transaction as the cache sees it: real locks through locking.ts, relock by seq. */
class FakeTrans extends LockOwnerBase implements CacheTrans {
  private saved: { node: Node; type: LockType; seq: number }[] = [];
  private readonly byLock = new Map<unknown, Node>();
  failRelock = false;
  /** What parentHeld() says: false as if the node the pointer came from had been unlocked and changed. */
  parentOk = true;

  constructor(id: number) {
    super(id, id);
  }

  async lockNode(node: Node, type: LockType): Promise<number> {
    this.byLock.set(node.lock, node);
    return nodeLock(this, node.lock, type as SixLockType);
  }

  unlockNode(node: Node, type: LockType): void {
    nodeUnlock(this, node.lock, type as SixLockType);
  }

  unlock(): void {
    for (let i = 0; i < this.locksHeld.nr; i++) {
      const lock = this.locksHeld.lockAt(i);
      const type = this.locksHeld.typeAt(i);
      const node = this.byLock.get(lock);
      if (node !== undefined && type !== SixLockType.write) this.saved.push({ node, type: type as LockType, seq: lock.seq });
    }
    nodeUnlockAll(this);
  }

  relock(): number {
    if (this.restartPending) return this.restartPending;
    const saved = this.saved;
    this.saved = [];
    if (this.failRelock && saved.length !== 0) return ERR.transaction_restart_relock_path;
    for (const s of saved) if (!nodeRelock(this, s.node.lock, s.type as SixLockType, s.seq)) return ERR.transaction_restart_relock_path;
    return 0;
  }

  parentHeld(): boolean {
    return this.parentOk;
  }

  /** Keep track of a node the cache locked for us (so unlock() can save it). */
  note(node: Node): Node {
    this.byLock.set(node.lock, node);
    return node;
  }
}

/** The engine's node write, as the cache expects it; 'hold' keeps writes in flight until release(). */
class TestWriter {
  readonly calls: Node[] = [];
  mode: 'auto' | 'hold' | 'fail' = 'auto';
  /** Fail the writes for which this says so (in 'auto' mode). */
  shouldFail: () => boolean = () => false;
  private pending: (() => void)[] = [];
  cache!: BtreeCache;

  readonly nodeWrite = (b: Node): Promise<void> => {
    this.calls.push(b);
    if (this.mode === 'fail' || this.shouldFail()) return Promise.reject(new Error('write failed'));
    this.cache.clearDirty(b);
    b.set(NodeFlag.write_in_flight);
    let resolve!: () => void;
    const p = new Promise<void>((r) => {
      resolve = r;
    });
    b.writeDone = p;
    const done = (): void => {
      b.clear(NodeFlag.write_in_flight);
      b.writeDone = null;
      resolve();
    };
    if (this.mode === 'hold') this.pending.push(done);
    else queueMicrotask(done);
    return p;
  };

  release(): void {
    const p = this.pending;
    this.pending = [];
    for (const done of p) done();
  }
}

const blockSizeBytes = 4096;

function ptrFor(i: number, opts: { btreeId?: number; seqBase?: number } = {}): BtreePtr {
  return {
    btreeId: opts.btreeId ?? 0,
    level: 0,
    bucket: i + 1,
    seq: (opts.seqBase ?? 0x5eed000) + i,
    minKey: posWords(pos(0, i * 100)),
    maxKey: posWords(pos(0, i * 100 + 99)),
    sectorsWritten: 0,
  };
}

interface Harness {
  dev: TestDevice;
  cache: BtreeCache;
  writer: TestWriter;
  nodeSizeBytes: number;
  auxLive: Set<Uint8Array>;
  ptr: (i: number) => BtreePtr;
  offset: (i: number) => number;
}

let harnesses: Harness[] = [];

function setup(opts: { nodeSizeBytes?: number; budgetBytes?: number; nodes?: number; nrBtrees?: number; keysPerNode?: number } = {}): Harness {
  const nodeSizeBytes = opts.nodeSizeBytes ?? 16384;
  const n = opts.nodes ?? 64;
  const dev = new TestDevice((n + 2) * nodeSizeBytes);
  const writer = new TestWriter();
  const auxLive = new Set<Uint8Array>();
  const cache = new BtreeCache({
    device: dev,
    nodeSizeBytes,
    blockSizeBytes,
    budgetBytes: opts.budgetBytes ?? 4 << 20,
    nrBtrees: opts.nrBtrees ?? 2,
    bucketOffset: (bucket) => bucket * nodeSizeBytes,
    nodeWrite: writer.nodeWrite,
    auxAlloc: (bytes) => {
      const b = new Uint8Array(bytes);
      auxLive.add(b);
      return b;
    },
    auxFree: (b) => {
      if (!auxLive.delete(b)) throw new Error('auxFree: freed twice or not ours');
    },
  });
  writer.cache = cache;

  /* node images: node i in bucket i + 1, keys i*100 .. */
  const keys = new NodeKeys(nodeSizeBytes, blockSizeBytes);
  keys.attach(new Uint8Array(nodeSizeBytes), new Uint8Array(NodeKeys.auxBytes(nodeSizeBytes)));
  const value = new Uint8Array(16).fill(7);
  for (let i = 0; i < n; i++) {
    const p = ptrFor(i);
    keys.initEmpty({ btreeId: p.btreeId, level: 0, minKey: p.minKey, maxKey: p.maxKey, seq: p.seq });
    for (let j = 0; j < (opts.keysPerNode ?? 8); j++) keys.insertKey(bkeyValue(posWords(pos(0, i * 100 + j)), value, 1));
    const w = nodeWritePrepare(keys)!;
    dev.img.set(w.bytes, p.bucket * nodeSizeBytes + w.offsetBytes);
    nodeWriteDone(keys);
  }
  const h: Harness = { dev, cache, writer, nodeSizeBytes, auxLive, ptr: (i) => ptrFor(i), offset: (i) => ptrFor(i).bucket * nodeSizeBytes };
  harnesses.push(h);
  return h;
}

/** Read node i with a transaction and let go of it. */
async function readNode(h: Harness, t: FakeTrans, i: number): Promise<Node> {
  const b = await h.cache.nodeGet(t, h.ptr(i), 0, LOCK_READ);
  if (typeof b === 'number') throw new Error(`nodeGet returned ${b}`);
  t.unlockNode(b, LOCK_READ);
  return b;
}

function clearAccessed(cache: BtreeCache): void {
  for (const b of cache.liveNodes()) b.clear(NodeFlag.accessed);
}

async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}

beforeEach(() => {
  harnesses = [];
  lockingCounters.reset();
});

afterEach(async () => {
  /* every harness must exit cleanly: all buffers freed exactly once */
  for (const h of harnesses) {
    h.dev.releaseHold();
    h.writer.release();
    for (const b of h.cache.liveNodes()) {
      b.clear(NodeFlag.noevict | NodeFlag.write_blocked | NodeFlag.will_make_reachable);
      h.cache.clearDirty(b);
    }
    await h.cache.cacheExit();
    expect(h.dev.buffersLive).toBe(0);
    expect(h.auxLive.size).toBe(0);
  }
});

/* ---------------------------------------------------------------------------
 * Tests.
 */

describe('BtreeCache#recalcReserve()', () => {
  it('is 16, +8 without a root for btree 0, +8 per btree whose root is interior', () => {
    const { cache } = setup({ nrBtrees: 3 });
    expect(cache.reserve).toBe(24);
    cache.setRootInfo(0, 0);
    expect(cache.reserve).toBe(16);
    cache.setRootInfo(0, 2);
    expect(cache.reserve).toBe(24);
    cache.setRootInfo(1, 1);
    cache.setRootInfo(2, 0);
    expect(cache.reserve).toBe(32);
    cache.setRootInfo(1, null);
    expect(cache.reserve).toBe(24);
    cache.setRootInfo(0, null);
    expect(cache.reserve).toBe(24); /* +8 no root, and btree 0's level no longer counts */
  });

  it('allocates the reserve at init, FREEABLE', () => {
    const { cache } = setup();
    const s = cache.stats();
    expect(s.nodes).toBe(24);
    expect(s.freeable).toBe(24);
    expect(s.bytes).toBe(24 * cache.nodeBytes);
    expect(cache.nodeCountOnList('live')).toBe(0);
  });

  it('refuses a budget below the largest reserve: ERR_CACHE_TOO_SMALL', () => {
    const min = BtreeCache.budgetBytesMin(16384, 2);
    expect(min).toBe(BtreeCache.reserveMax(2) * (16384 + NodeKeys.auxBytes(16384)));
    expect(BtreeCache.reserveMax(2)).toBe(40);
    expect(() => BtreeCache.checkBudget(min - 1, 16384, 2)).toThrow(expect.objectContaining({ code: 'ERR_CACHE_TOO_SMALL' }));
    expect(() => setup({ budgetBytes: min - 1 })).toThrow(SixtreeError);
    expect(() => BtreeCache.checkBudget(cacheSizeBytesDefault, 256 << 10, 8)).not.toThrow();
  });
});

describe('BtreeCache#nodeGet()', () => {
  it('reads a node on a miss, then hits by hash and by slot', async () => {
    const h = setup();
    const t = new FakeTrans(1);
    const b = await h.cache.nodeGet(t, h.ptr(3), 0, LOCK_READ);
    expect(typeof b).not.toBe('number');
    const n = b as Node;
    expect(n.hashVal).toBe(h.ptr(3).seq);
    expect(n.keys.nrKeys).toBe(8);
    expect(n.lock.readCountOf(t)).toBe(1);
    t.unlockNode(n, LOCK_READ);

    const again = (await h.cache.nodeGet(t, h.ptr(3), 0, LOCK_INTENT)) as Node;
    expect(again).toBe(n);
    t.unlockNode(n, LOCK_INTENT);
    const fast = (await h.cache.nodeGet(t, h.ptr(3), 0, LOCK_READ, n.slot)) as Node;
    expect(fast).toBe(n);
    t.unlockNode(n, LOCK_READ);
    const s = h.cache.stats();
    // both hits are fast: the second through the slot hint of its seq (slotHint), the third through the slot given
    expect([s.misses, s.hits, s.counters.hitsFast, s.reads]).toEqual([1, 2, 2, 1]);
    expect(h.dev.readsAt.get(h.offset(3))).toBe(1);
    expect(t.locksHeld.nr).toBe(0);
  });

  it('nodeGetNowait() hits without awaiting, and declines what needs the slow path', async () => {
    const h = setup();
    const t = new FakeTrans(1);
    expect(h.cache.nodeGetNowait(t, h.ptr(1), 0, LOCK_READ)).toBeNull(); /* not cached */
    const n = await readNode(h, t, 1);
    expect(h.cache.nodeGetNowait(t, h.ptr(1), 0, LOCK_READ, n.slot)).toBe(n);
    t.unlockNode(n, LOCK_READ);
    const other = new FakeTrans(2);
    expect(await nodeLock(other, n.lock, SixLockType.intent)).toBe(0);
    expect(h.cache.nodeGetNowait(t, h.ptr(1), 0, LOCK_INTENT)).toBeNull(); /* intent busy */
    nodeUnlock(other, n.lock, SixLockType.intent);
  });

  it('two transactions filling the same node at once read it once', async () => {
    const h = setup();
    const t1 = new FakeTrans(1);
    const t2 = new FakeTrans(2);
    const release = h.dev.hold();
    const p1 = h.cache.nodeGet(t1, h.ptr(5), 0, LOCK_READ);
    const p2 = h.cache.nodeGet(t2, h.ptr(5), 0, LOCK_READ);
    await settle();
    const b = h.cache.cacheFind(h.ptr(5).seq)!;
    expect(b.has(NodeFlag.read_in_flight)).toBe(true);
    release();
    const [b1, b2] = await Promise.all([p1, p2]);
    expect(b1).toBe(b);
    expect(b2).toBe(b);
    expect(b.has(NodeFlag.read_in_flight)).toBe(false);
    expect(h.dev.readsAt.get(h.offset(5))).toBe(1);
    expect(b.lock.readCount).toBe(2);
    t1.unlockNode(b, LOCK_READ);
    t2.unlockNode(b, LOCK_READ);
  });

  it('detects a node evicted and reused while a path held its pointer (hash_val recheck)', async () => {
    const h = setup();
    const t1 = new FakeTrans(1);
    const updater = new FakeTrans(2);
    const a = await readNode(h, t1, 2);

    /* an update holds the node write locked; t1 comes through the slot and waits for its lock */
    expect(await nodeLock(updater, a.lock, SixLockType.intent)).toBe(0);
    expect(await nodeLock(updater, a.lock, SixLockType.write)).toBe(0);
    const p = h.cache.nodeGet(t1, h.ptr(2), 0, LOCK_READ, a.slot);
    await settle();
    /* the update frees the node (FREEABLE, unhashed), the cache reuses the object for another node */
    h.cache.freeInmem(a);
    nodeUnlock(updater, a.lock, SixLockType.write);
    nodeUnlock(updater, a.lock, SixLockType.intent);
    const r = (await p) as Node;
    expect(typeof r).toBe('object');
    expect(r.hashVal).toBe(h.ptr(2).seq);
    expect(h.cache.stats().counters.nodeReused).toBe(1);
    expect(h.dev.readsAt.get(h.offset(2))).toBe(2); /* read again: the old copy was gone */
    t1.unlockNode(r, LOCK_READ);

    /* the slot now holds some other node: the pre-lock check sends the lookup to the hash */
    const slot = r.slot;
    h.cache.freeInmem(r);
    await readNode(h, t1, 7); /* takes r's buffers: r's object goes to FREED */
    await readNode(h, t1, 8); /* takes r's object */
    const occupant = h.cache.nodeBySlot(slot)!;
    expect(occupant.hashVal).toBe(h.ptr(8).seq);
    const again = (await h.cache.nodeGet(t1, h.ptr(2), 0, LOCK_READ, slot)) as Node;
    expect(again.hashVal).toBe(h.ptr(2).seq);
    expect(h.cache.stats().counters.nodeReused).toBe(1);
    t1.unlockNode(again, LOCK_READ);
  });

  it('restarts with lock_node_reused when the node changed and the transaction cannot relock', async () => {
    const h = setup();
    const t1 = new FakeTrans(1);
    const parentHolder = await readNode(h, t1, 0);
    const updater = new FakeTrans(2);
    const a = await readNode(h, t1, 1);
    /* t1 holds a "parent" lock it will have to relock */
    expect(await t1.lockNode(parentHolder, LOCK_READ)).toBe(0);
    expect(await nodeLock(updater, a.lock, SixLockType.intent)).toBe(0);
    expect(await nodeLock(updater, a.lock, SixLockType.write)).toBe(0);
    const p = h.cache.nodeGet(t1, h.ptr(1), 0, LOCK_READ, a.slot);
    await settle();
    h.cache.freeInmem(a);
    t1.failRelock = true;
    t1.unlock(); /* what a relock failure looks like: the saved parent cannot be retaken */
    nodeUnlock(updater, a.lock, SixLockType.write);
    nodeUnlock(updater, a.lock, SixLockType.intent);
    expect(await p).toBe(ERR.transaction_restart_lock_node_reused);
    expect(a.lock.readCount).toBe(0);
  });

  it('returns relock_after_fill when the transaction cannot relock after the read', async () => {
    const h = setup();
    const t = new FakeTrans(1);
    const parent = await readNode(h, t, 0);
    expect(await t.lockNode(parent, LOCK_READ)).toBe(0);
    const release = h.dev.hold();
    const p = h.cache.nodeGet(t, h.ptr(9), 0, LOCK_READ);
    await settle();
    expect(t.locksHeld.nr).toBe(0); /* locks dropped before I/O */
    /* someone writes the parent meanwhile: its seq moves */
    const w = new FakeTrans(3);
    expect(await nodeLock(w, parent.lock, SixLockType.intent)).toBe(0);
    expect(await nodeLock(w, parent.lock, SixLockType.write)).toBe(0);
    nodeUnlock(w, parent.lock, SixLockType.write);
    nodeUnlock(w, parent.lock, SixLockType.intent);
    release();
    expect(await p).toBe(ERR.transaction_restart_relock_after_fill);
    expect(t.locksHeld.nr).toBe(0);
    /* the node itself was read fine and stays cached */
    expect(h.cache.cacheFind(h.ptr(9).seq)).toBeDefined();
  });
});

describe('BtreeCache: a pointer whose parent is no longer locked', () => {
  // bch2_btree_node_fill relocks the parent before reading, and relocks again
  // before it looks at the read: a pointer taken from a node that was
  // unlocked and changed may name a node replaced since, its bucket reused
  it('reads nothing through it: the traversal is told to walk again (fillParentLost), not given an error', async () => {
    const h = setup();
    const t = new FakeTrans(1);
    t.parentOk = false;
    expect(await h.cache.nodeGet(t, h.ptr(5), 0, LOCK_READ)).toBe(ERR.btree_node_fill_parent_lost);
    expect(h.dev.readsAt.get(h.offset(5))).toBeUndefined();
    expect(h.cache.cacheFind(h.ptr(5).seq)).toBeUndefined();
    expect(h.cache.stats().counters.fillParentLost).toBe(1);
    expect(t.locksHeld.nr).toBe(0);
    t.parentOk = true;
    expect((await readNode(h, t, 5)).hashVal).toBe(h.ptr(5).seq);
  });

  it('a read that fails after the parent was lost during it is not reported; with the parent held the same read fails', async () => {
    const h = setup();
    const t = new FakeTrans(1);
    // a stale pointer: its bucket now holds another node (node 3's bucket, another range and seq)
    const stale = { ...h.ptr(3), seq: 0x5eed999 };
    const release = h.dev.hold();
    const p = h.cache.nodeGet(t, stale, 0, LOCK_READ);
    await settle();
    t.parentOk = false; /* the parent changed while the read was in flight */
    release();
    expect(await p).toBe(ERR.btree_node_fill_parent_lost);
    expect(h.cache.stats().readErrors).toBe(1); /* the read did fail, and the node is out of the hash */
    expect(h.cache.cacheFind(stale.seq)).toBeUndefined();
    t.parentOk = true;
    await expect(h.cache.nodeGet(t, stale, 0, LOCK_READ)).rejects.toMatchObject({ code: 'ERR_TOPOLOGY' });
    expect(t.locksHeld.nr).toBe(0);
  });

  it('a lookup that waited on another transaction\'s read and lost its parent meanwhile gets fillParentLost, not that read\'s error', async () => {
    const h = setup();
    const t1 = new FakeTrans(1);
    const t2 = new FakeTrans(2);
    const stale = { ...h.ptr(4), seq: 0x5eed998 };
    const release = h.dev.hold();
    const p1 = h.cache.nodeGet(t1, stale, 0, LOCK_READ).catch((x: unknown) => x);
    await settle();
    const p2 = h.cache.nodeGet(t2, stale, 0, LOCK_READ).catch((x: unknown) => x);
    await settle();
    t2.parentOk = false;
    release();
    expect(await p1).toMatchObject({ code: 'ERR_TOPOLOGY' });
    expect(await p2).toBe(ERR.btree_node_fill_parent_lost);
    expect(h.dev.readsAt.get(h.offset(4))).toBe(1);
    expect(t1.locksHeld.nr + t2.locksHeld.nr).toBe(0);
  });
});

describe('BtreeCache#nodeFill()', () => {
  it('loses the hash insert race to another fill and backs off to the hash', async () => {
    const h = setup();
    const t1 = new FakeTrans(1);
    const t2 = new FakeTrans(2);
    const release = h.dev.hold();
    const f1 = h.cache.nodeFill(t1, h.ptr(4), 0, LOCK_READ);
    const f2 = h.cache.nodeFill(t2, h.ptr(4), 0, LOCK_READ);
    expect(await f2).toBeNull();
    expect(h.cache.stats().counters.fillRaces).toBe(1);
    release();
    const b = (await f1) as Node;
    expect(b.hashVal).toBe(h.ptr(4).seq);
    expect(h.dev.readsAt.get(h.offset(4))).toBe(1);
    t1.unlockNode(b, LOCK_READ);
    /* the loser's node went back to FREEABLE with its buffers */
    expect(h.cache.stats().nodes).toBe(24);
  });
});

describe('BtreeCache read errors', () => {
  it('corrupt data -> ERR_CHECKSUM, node out of the hash, the cache consistent, a re-read after repair works', async () => {
    const h = setup();
    const t = new FakeTrans(1);
    const off = h.offset(6);
    const saved = h.dev.img.slice(off, off + h.nodeSizeBytes);
    h.dev.img[off + 128 + 40] ^= 0xff; /* a key byte of the first bset */
    const e = await h.cache.nodeGet(t, h.ptr(6), 0, LOCK_READ).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(SixtreeError);
    expect((e as SixtreeError).code).toBe('ERR_CHECKSUM');
    expect((e as SixtreeError).details).toMatchObject({ btree: 'btree 0', level: 0, bucket: 7, offset: off });
    expect((e as SixtreeError).message).toMatch(/bucket 7 offset/);
    expect(h.cache.cacheFind(h.ptr(6).seq)).toBeUndefined();
    expect(t.locksHeld.nr).toBe(0);
    const s = h.cache.stats();
    expect(s.readErrors).toBe(1);
    expect(s.nodes).toBe(24);
    expect(h.cache.nodeCountOnList('live')).toBe(0);

    h.dev.img.set(saved, off);
    const b = (await h.cache.nodeGet(t, h.ptr(6), 0, LOCK_READ)) as Node;
    expect(b.keys.nrKeys).toBe(8);
    expect(b.has(NodeFlag.read_error)).toBe(false);
    t.unlockNode(b, LOCK_READ);
  });

  it('pointer mismatch -> ERR_TOPOLOGY (header) and a bad level -> ERR_TOPOLOGY (pointer check)', async () => {
    const h = setup();
    const t = new FakeTrans(1);
    const bad = { ...h.ptr(3), minKey: posWords(pos(0, 1)) };
    await expect(h.cache.nodeGet(t, bad, 0, LOCK_READ)).rejects.toMatchObject({ code: 'ERR_TOPOLOGY' });
    const otherBtree = { ...h.ptr(3), btreeId: 1 };
    await expect(h.cache.nodeGet(t, otherBtree, 0, LOCK_READ)).rejects.toMatchObject({ code: 'ERR_TOPOLOGY' });
    await expect(h.cache.nodeGet(t, h.ptr(3), 1, LOCK_READ)).rejects.toMatchObject({ code: 'ERR_TOPOLOGY' });
    expect(h.cache.stats().readErrors).toBe(2);
    expect(h.cache.cacheFind(h.ptr(3).seq)).toBeUndefined();
    /* the right pointer still works */
    const b = await readNode(h, t, 3);
    expect(b.hashVal).toBe(h.ptr(3).seq);
  });

  it('EIO -> ERR_IO naming the offset; every waiter on that read gets the error', async () => {
    const h = setup();
    const t1 = new FakeTrans(1);
    const t2 = new FakeTrans(2);
    h.dev.failReads.add(h.offset(8));
    const release = h.dev.hold();
    const p1 = h.cache.nodeGet(t1, h.ptr(8), 0, LOCK_READ).catch((x: unknown) => x);
    const p2 = h.cache.nodeGet(t2, h.ptr(8), 0, LOCK_READ).catch((x: unknown) => x);
    await settle();
    release();
    const [e1, e2] = await Promise.all([p1, p2]);
    expect(e1).toMatchObject({ code: 'ERR_IO', details: { bucket: 9, offset: h.offset(8) } });
    expect(e2).toBe(e1);
    expect(h.dev.readsAt.get(h.offset(8))).toBe(1);
    expect(t1.locksHeld.nr + t2.locksHeld.nr).toBe(0);
    expect(h.cache.cacheFind(h.ptr(8).seq)).toBeUndefined();
    /* the failed node is FREEABLE and reusable once nobody holds it */
    h.dev.failReads.clear();
    const b = await readNode(h, t1, 8);
    expect(b.has(NodeFlag.read_error)).toBe(false);
  });

  it('nodeGetNoiter() reports read errors the same way', async () => {
    const h = setup();
    const owner = new LockOwnerBase(9, 9);
    h.dev.failReads.add(h.offset(2));
    await expect(h.cache.nodeGetNoiter(owner, h.ptr(2), 0)).rejects.toMatchObject({ code: 'ERR_IO' });
    expect(owner.locksHeld.nr).toBe(0);
    h.dev.failReads.clear();
    const b = (await h.cache.nodeGetNoiter(owner, h.ptr(2), 0)) as Node;
    expect(b.lock.readCountOf(owner)).toBe(1);
    nodeUnlock(owner, b.lock, SixLockType.read);
    expect(await h.cache.nodeGetNoiter(owner, h.ptr(3), 0, { nofill: true })).toBeNull();
  });
});

describe('BtreeCache#cacheScan()', () => {
  it('leaves 3 FREEABLE nodes and touches at most nr (the seed counts the touch before the free)', async () => {
    const h = setup();
    const owner = new LockOwnerBase(1, 1);
    /* 30 owned nodes made FREEABLE again: 24 from the reserve + 6 new */
    const nodes: Node[] = [];
    for (let i = 0; i < 30; i++) nodes.push((await h.cache.nodeMemAlloc(owner))!);
    for (const b of nodes) {
      h.cache.freeInmem(b);
      nodeUnlock(owner, b.lock, SixLockType.write);
      nodeUnlock(owner, b.lock, SixLockType.intent);
    }
    h.cache.setRootInfo(0, 0); /* reserve 16 */
    expect(h.cache.cacheCount()).toBe(14);
    const kept = [...h.cache.freeable].slice(0, 3);
    expect(h.cache.cacheScan(100)).toBe(13); /* nr = can_free = 14; the 14th touch stops */
    expect(h.cache.stats().notFreed.cache_reserve).toBe(86);
    expect(h.cache.freeable.count).toBe(17);
    for (const b of kept) expect(b.list).toBe('freeable');
    /* with only the 3 kept beyond what the reserve allows, nothing more goes */
    h.cache.setRootInfo(0, null);
    h.cache.setRootInfo(1, 3); /* reserve 32: can_free 1 */
    expect(h.cache.cacheScan(100)).toBe(0);
  });

  it('clears accessed bits before evicting (second chance)', async () => {
    const h = setup();
    const t = new FakeTrans(1);
    for (let i = 0; i < 40; i++) await readNode(h, t, i);
    h.cache.setRootInfo(0, 0); /* reserve 16, used 40 */
    clearAccessed(h.cache);
    const order = [...h.cache.liveNodes()];
    order[0]!.set(NodeFlag.accessed);
    order[2]!.set(NodeFlag.accessed);
    expect(h.cache.cacheScan(4)).toBe(2); /* touches 4: two spared, two freed */
    expect(order[0]!.list).toBe('live');
    expect(order[2]!.list).toBe('live');
    expect(order[1]!.list).toBe('freed');
    expect(order[3]!.list).toBe('freed');
    expect(order[0]!.has(NodeFlag.accessed)).toBe(false);
    const s = h.cache.stats();
    expect(s.notFreed.access_bit).toBe(2);
    expect(s.evictions).toBe(2);
    /* the clock moved on: the next scan starts after the nodes it just looked at */
    expect(h.cache.live.head).toBe(order[4]);
    expect(h.cache.live.tail).toBe(order[2]);
    /* spared once, not twice: brought back under the clock hand, they go */
    for (const b of [order[2]!, order[0]!]) {
      h.cache.live.remove(b);
      h.cache.live.addHead(b);
    }
    expect(h.cache.cacheScan(2)).toBe(2);
    expect(order[0]!.list).toBe('freed');
    expect(order[2]!.list).toBe('freed');
  });

  it('never evicts pinned / dirty / locked / in-flight / noevict / write_blocked / will_make_reachable nodes; counts each refusal', async () => {
    const h = setup();
    const t = new FakeTrans(1);
    const other = new FakeTrans(2);
    for (let i = 0; i < 40; i++) await readNode(h, t, i);
    h.cache.setRootInfo(0, 0); /* reserve 16: can_free 24 */
    const order = [...h.cache.liveNodes()];
    const [pinned, dirty, readLocked, intentLocked, writing, noevict, blocked, reachable] = order;
    h.cache.setPinned(1, 0, { btreeId: 0, pos: posWords(pos(0, 0)) }, { btreeId: 0, pos: pinned!.keys.maxKey });
    h.cache.setDirty(dirty!);
    expect(await nodeLock(other, readLocked!.lock, SixLockType.read)).toBe(0);
    expect(await nodeLock(other, intentLocked!.lock, SixLockType.intent)).toBe(0);
    h.writer.mode = 'hold';
    h.cache.setDirty(writing!);
    void h.writer.nodeWrite(writing!); /* the engine writing it */
    noevict!.set(NodeFlag.noevict);
    blocked!.set(NodeFlag.write_blocked);
    reachable!.set(NodeFlag.will_make_reachable);
    /* a read in flight: a prefetch held at the device, moved to the clock hand */
    const release = h.dev.hold();
    expect(h.cache.nodePrefetch(t, h.ptr(50), 0)).toBe(0);
    const inFlight = h.cache.cacheFind(h.ptr(50).seq)!;
    h.cache.live.remove(inFlight);
    h.cache.live.addHead(inFlight);
    clearAccessed(h.cache);

    const can = h.cache.cacheCount(); /* 40 read + 1 prefetched - 16 */
    expect(can).toBe(25);
    const freed = h.cache.cacheScan(100); /* nr = can touches */
    expect(freed).toBe(can - 9);
    for (const b of [inFlight, pinned, dirty, readLocked, intentLocked, writing, noevict, blocked, reachable]) expect(b!.list).toBe('live');
    const nf = h.cache.stats().notFreed;
    expect(nf).toMatchObject({
      pinned: 1,
      dirty: 1,
      lock_write: 1,
      lock_intent: 1,
      write_in_flight: 1,
      read_in_flight: 1,
      noevict: 1,
      write_blocked: 1,
      will_make_reachable: 1,
    });
    expect(Object.keys(nf)).toEqual(NOT_FREED_REASONS.map(([n]) => n));
    /* dirty + nr >= 3/4 of the cache: the scan started the dirty node's write */
    expect(h.writer.calls).toContain(dirty);

    release();
    h.writer.release();
    await settle();
    nodeUnlock(other, readLocked!.lock, SixLockType.read);
    nodeUnlock(other, intentLocked!.lock, SixLockType.intent);
    h.cache.clearPinned();
  });

  it('starts writes of dirty nodes it passes when dirty + nr >= 3/4 of the cache', async () => {
    const h = setup();
    const t = new FakeTrans(1);
    for (let i = 0; i < 40; i++) await readNode(h, t, i);
    h.cache.setRootInfo(0, 0);
    clearAccessed(h.cache);
    const order = [...h.cache.liveNodes()];
    h.writer.mode = 'hold';
    /* 20 dirty + 5 < 30 (3/4 of 40): refusals only */
    for (let i = 0; i < 20; i++) h.cache.setDirty(order[i]!);
    expect(h.cache.cacheScan(5)).toBe(0);
    expect(h.writer.calls.length).toBe(0);
    expect(h.cache.stats().notFreed.dirty).toBe(5);
    /* 25 dirty + 5 >= 30: the next five dirty nodes get their writes started */
    for (let i = 20; i < 25; i++) h.cache.setDirty(order[i]!);
    expect(h.cache.cacheScan(5)).toBe(0);
    expect(h.writer.calls).toEqual(order.slice(5, 10));
    expect(h.cache.stats().counters.scanWrites).toBe(5);
    expect(h.cache.dirty).toBe(20);
    h.writer.release();
    await settle();
    /* written and clean now: the next pass over them frees them */
    for (const b of order) h.cache.clearDirty(b);
  });

  it('shrink() and memoryPressure() free what the reserve allows', async () => {
    const h = setup();
    const t = new FakeTrans(1);
    for (let i = 0; i < 40; i++) await readNode(h, t, i);
    h.cache.setRootInfo(0, 0);
    expect(h.cache.memoryPressure('moderate')).toBe(0); /* everything was just used: the scan only clears bits */
    clearAccessed(h.cache);
    expect(h.cache.memoryPressure('moderate')).toBe(3); /* an eighth of 24 */
    expect(h.cache.memoryPressure('critical')).toBe(11); /* half of 21 */
    const before = h.cache.stats().nodes;
    const freed = h.cache.shrink();
    expect(h.cache.stats().nodes).toBe(before - freed);
    expect(h.cache.stats().nodes).toBe(16);
    expect(h.cache.shrink()).toBe(0);
  });
});

describe('BtreeCache cannibalize', () => {
  it('cannibalizeLock(): one transaction at a time, waiters woken on unlock', async () => {
    const h = setup();
    const t1 = new FakeTrans(1);
    const t2 = new FakeTrans(2);
    expect(h.cache.cannibalizeLock(t1)).toBe(0);
    expect(h.cache.cannibalizeLock(t1)).toBe(0);
    expect(h.cache.cannibalizeLock(t2)).toBe(ERR.btree_cache_cannibalize_lock_blocked);
    expect(h.cache.cannibalizeLock(t2, true)).toBe(ERR.btree_cache_cannibalize_lock_blocked);
    let woken = false;
    void h.cache.cannibalizeWait().then(() => {
      woken = true;
    });
    const waiter = h.cache.cannibalizeLockWait(t2);
    await settle();
    expect(woken).toBe(false);
    h.cache.cannibalizeUnlock(t2); /* not the holder: nothing */
    expect(h.cache.cannibalizeLockOwner).toBe(t1);
    h.cache.cannibalizeUnlock(t1);
    await waiter;
    expect(woken).toBe(true);
    expect(h.cache.cannibalizeLockOwner).toBe(t2);
    h.cache.cannibalizeUnlock(t2);
    await expect(h.cache.cannibalizeWait()).resolves.toBeUndefined();
  });

  it('past the budget with nothing clean: fill fails until the transaction holds the lock, then cannibalizes, writing a dirty node', async () => {
    const budget = BtreeCache.budgetBytesMin(16384, 2); /* exactly 40 nodes */
    const h = setup({ budgetBytes: budget });
    const t = new FakeTrans(1);
    for (let i = 0; i < 40; i++) await readNode(h, t, i);
    expect(h.cache.stats().bytes).toBe(budget);
    for (const b of h.cache.liveNodes()) h.cache.setDirty(b);
    h.writer.mode = 'fail'; /* writes the shrinker starts fail: nodes stay dirty */
    expect(await h.cache.nodeGet(t, h.ptr(45), 0, LOCK_READ)).toBe(ERR.transaction_restart_fill_mem_alloc_fail);
    expect(h.cache.stats().counters.memAllocFail).toBe(1);

    /* the shrinker's writes keep failing; only the cannibalize's own write goes through */
    h.writer.mode = 'auto';
    h.writer.shouldFail = () => h.cache.stats().counters.reclaimWrites === 0;
    t.unlock();
    await h.cache.cannibalizeLockWait(t);
    const head = h.cache.live.head!;
    const b = (await h.cache.nodeGet(t, h.ptr(45), 0, LOCK_READ)) as Node;
    expect(b.hashVal).toBe(h.ptr(45).seq);
    expect(b).toBe(head); /* the clock hand's node, written first */
    const s = h.cache.stats();
    expect(s.cannibalized).toBe(1);
    expect(s.counters.reclaimWrites).toBe(1);
    expect(h.writer.calls.at(-1)).toBe(head);
    expect(s.bytes).toBeLessThanOrEqual(budget);
    t.unlockNode(b, LOCK_READ);
    h.cache.cannibalizeUnlock(t);
  });
});

describe('BtreeCache spare refill', () => {
  it('after each read the clock looks at no more than 64 nodes for the next miss\'s buffers, and goes on from there next time', async () => {
    const nodeSizeBytes = 4096;
    const h = setup({ nodeSizeBytes, budgetBytes: 200 * (nodeSizeBytes + NodeKeys.auxBytes(nodeSizeBytes)), nodes: 260 });
    const t = new FakeTrans(1);
    for (let i = 0; i < 200; i++) await readNode(h, t, i);
    expect(h.cache.used).toBe(h.cache.usedMax);
    /* one more read: the cache is full; afterwards buffers wait on FREEABLE */
    await readNode(h, t, 200);
    expect(h.cache.freeable.count).toBe(1);
    /* every cached node used again: the clock finds no node without its accessed bit */
    for (const b of [...h.cache.liveNodes()]) {
      const got = await h.cache.nodeGet(t, { ...h.ptr(b.bucket - 1) }, 0, LOCK_READ);
      if (typeof got === 'number') throw new Error(`nodeGet returned ${got}`);
      t.unlockNode(got, LOCK_READ);
    }
    const counters = (): Record<string, number> => h.cache.stats().counters as Record<string, number>;
    const accessBit = (): number => h.cache.stats().notFreed.access_bit;
    /* this read takes the waiting buffers; its refill clears 64 accessed bits, frees nothing */
    let bits = accessBit();
    let refills = counters().spareRefills!;
    await readNode(h, t, 201);
    expect(accessBit() - bits).toBe(64);
    expect(counters().spareRefills! - refills).toBe(0);
    expect(h.cache.freeable.count).toBe(0);
    /* the next read's allocation sweeps on (the rest of the bits), then takes the first node whose bit was cleared */
    bits = accessBit();
    refills = counters().spareRefills!;
    const evictions = h.cache.stats().evictions;
    await readNode(h, t, 202);
    expect(accessBit() - bits).toBeGreaterThanOrEqual(h.cache.usedMax - 64 - 2);
    expect(h.cache.stats().evictions - evictions).toBe(2); // one for this read, one refill for the next
    expect(counters().spareRefills! - refills).toBe(1);
    expect(h.cache.stats().bytes).toBeLessThanOrEqual(h.cache.stats().budgetBytes);
  });
});

describe('BtreeCache memory bound', () => {
  it('with an 8 MiB budget and many distinct nodes read in turn, node memory never exceeds the budget', async () => {
    const nodeSizeBytes = 64 << 10;
    const h = setup({ nodeSizeBytes, budgetBytes: 8 << 20, nodes: 300, keysPerNode: 32 });
    const t = new FakeTrans(1);
    let bytesMax = 0;
    for (let i = 0; i < 300; i++) {
      const b = await readNode(h, t, i);
      expect(b.keys.nrKeys).toBe(32);
      if (i % 3 === 0) h.cache.nodePrefetch(t, h.ptr((i + 7) % 300), 0);
      bytesMax = Math.max(bytesMax, h.cache.stats().bytes);
    }
    await settle();
    const s = h.cache.stats();
    expect(bytesMax).toBeLessThanOrEqual(8 << 20);
    expect(s.nodes).toBeLessThanOrEqual(h.cache.usedMax);
    expect(s.evictions).toBeGreaterThan(150);
    expect(s.counters.memAllocFail).toBe(0);
    expect(s.cannibalized).toBe(0);
    expect(h.dev.buffersAllocated).toBeLessThanOrEqual(h.cache.usedMax);
  });
});

describe('BtreeCache#nodePrefetch()', () => {
  it('reads ahead without blocking, bounded in flight; a later lookup hits', async () => {
    const h = setup();
    const t = new FakeTrans(1);
    const release = h.dev.hold();
    for (let i = 0; i < 20; i++) expect(h.cache.nodePrefetch(t, h.ptr(i), 0)).toBe(0);
    const s = h.cache.stats();
    expect(s.prefetches).toBe(16);
    expect(s.counters.prefetchSkipped).toBe(4);
    release();
    await settle();
    const b = (await h.cache.nodeGet(t, h.ptr(3), 0, LOCK_READ)) as Node;
    t.unlockNode(b, LOCK_READ);
    expect(h.dev.readsAt.get(h.offset(3))).toBe(1);
    expect(h.cache.stats().hits).toBe(1);
    expect(h.cache.nodePrefetch(t, h.ptr(3), 0)).toBe(0); /* cached: nothing */
    expect(h.cache.stats().prefetches).toBe(16);
  });
});

describe('BtreeCache#nodeEvict()', () => {
  it('writes a dirty node, waits, then drops it; noevict refuses', async () => {
    const h = setup();
    const t = new FakeTrans(1);
    const b = await readNode(h, t, 4);
    h.cache.setDirty(b);
    expect(await h.cache.nodeEvict(t, h.ptr(4))).toBe(0);
    expect(h.writer.calls).toEqual([b]);
    expect(b.list).toBe('freed');
    expect(h.cache.cacheFind(h.ptr(4).seq)).toBeUndefined();
    expect(h.cache.dirty).toBe(0);
    const c = await readNode(h, t, 5);
    c.set(NodeFlag.noevict);
    expect(await h.cache.nodeEvict(null, h.ptr(5))).toBe(ERR.btree_node_reclaim_refused);
    expect(await h.cache.nodeEvict(null, h.ptr(33))).toBe(0); /* not cached */
  });
});

describe('BtreeCache#nodeMemAlloc() / hashInsert() / setDirty()', () => {
  it('hands out a locked node for a new btree node, hashes it, keeps the dirty counter', async () => {
    const h = setup();
    const t = new FakeTrans(1);
    const b = (await h.cache.nodeMemAlloc(t))!;
    expect(b.list).toBe('none');
    expect(b.lock.heldBy(SixLockType.intent, t)).toBe(1);
    expect(b.lock.heldBy(SixLockType.write, t)).toBe(1);
    expect(h.cache.nodeCountOnList('none')).toBe(1);
    const p = ptrFor(60);
    b.btreeId = 0;
    b.level = 0;
    b.bucket = p.bucket;
    b.keys.initEmpty({ btreeId: 0, level: 0, minKey: p.minKey, maxKey: p.maxKey, seq: p.seq });
    expect(h.cache.hashInsert(b, p.seq)).toBe(true);
    expect(h.cache.hashInsert((await h.cache.nodeMemAlloc(t))!, p.seq)).toBe(false);
    h.cache.setDirty(b);
    h.cache.setDirty(b);
    expect(h.cache.dirty).toBe(1);
    expect([...h.cache.liveNodes()]).toEqual([b]);
    nodeUnlock(t, b.lock, SixLockType.write);
    nodeUnlock(t, b.lock, SixLockType.intent);
    const got = (await h.cache.nodeGet(t, p, 0, LOCK_READ)) as Node;
    expect(got).toBe(b);
    t.unlockNode(b, LOCK_READ);
    h.cache.clearDirty(b);
    expect(h.cache.dirty).toBe(0);
    expect(h.cache.nodeToText(b)).toMatch(/^l 0 .* - .*:\n/);
    expect(h.cache.toText()).toMatch(/nr nodes/);
  });
});

describe('BtreeCache#cacheExit()', () => {
  it('frees every buffer exactly once; asserts nothing dirty unless the journal failed', async () => {
    const h = setup();
    const t = new FakeTrans(1);
    for (let i = 0; i < 30; i++) await readNode(h, t, i);
    h.cache.shrink();
    const b = h.cache.cacheFind(h.ptr(29).seq)!;
    h.cache.setDirty(b);
    await expect(h.cache.cacheExit()).rejects.toThrow(/1 dirty nodes/);
    expect(h.dev.buffersLive).toBe(0);
    expect(h.auxLive.size).toBe(0);
    const c = h.cache.stats().counters;
    expect(c.buffersAllocated).toBe(c.buffersFreed);
    harnesses = harnesses.filter((x) => x !== h);

    const h2 = setup();
    await readNode(h2, t, 1);
    h2.cache.setDirty(h2.cache.cacheFind(h2.ptr(1).seq)!);
    await h2.cache.cacheExit({ journalFailed: true });
    expect(h2.dev.buffersLive).toBe(0);
    harnesses = harnesses.filter((x) => x !== h2);
  });
});
