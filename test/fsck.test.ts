// SPDX-License-Identifier: GPL-2.0-only
/*
 * fsck() finds what is wrong, not only that nothing is: each check is fed one
 * fault, made in memory on a store of depth 2 (the allocator's state, or the
 * bytes of a pointer key or a leaf's range in the cached nodes fsck walks),
 * and must name it; the fault undone, fsck is clean again. Damage on disk
 * (checksums) is covered by test/api.test.ts and test/corruption-fuzz.test.ts.
 */

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Store, pos } from '../src/index.js';
import { BlockDevice } from '../src/io/block-device.js';
import { FaultDevice } from '../src/io/fault-device.js';
import { KEY_TYPE, btreePtrDecode } from '../src/btree/bkey.js';
import { NodeIter } from '../src/btree/bset.js';
import type { Node } from '../src/btree/node.js';
import type { Engine } from '../src/engine.js';
import { tmpStore, type TmpStore } from './helpers/store.js';

let t: TmpStore;
let engine: Engine;
let root: Node;

beforeEach(async () => {
  t = await tmpStore({ btrees: [{ name: 'kv' }], nodeSize: 4096, sizeBytes: 32 * 1024 * 1024 });
  const value = new Uint8Array(64).fill(3);
  for (let b = 0; b < 10; b++) {
    await t.store.transact((tx) => {
      for (let i = 0; i < 60; i++) tx.put('kv', pos(1, b * 60 + i), value);
    });
  }
  await t.store.flush();
  engine = t.store.engine;
  root = engine.roots[0]!.node!;
  expect(root.level, 'the store should have a root above its leaves').toBe(1);
  expect(await engine.fsck()).toEqual([]);
});
afterEach(async () => {
  await t.cleanup();
});

/** The root's pointer keys: each one's value bytes (a view into the cached node: writes change it) and the child's bucket. */
function rootPointers(atLeast = 3): Array<{ value: Uint8Array; bucket: number }> {
  const keys = root.keys;
  const out: Array<{ value: Uint8Array; bucket: number }> = [];
  const it = new NodeIter();
  it.initStart(keys);
  for (let h = it.peek(); h >= 0; it.advance(), h = it.peek()) {
    if (keys.keyType(h) !== KEY_TYPE.btree_ptr) continue;
    const value = keys.keyValue(h);
    out.push({ value, bucket: btreePtrDecode(value).bucket });
  }
  expect(out.length).toBeGreaterThanOrEqual(atLeast);
  return out;
}

/** Run fn's fault, fsck, undo it, fsck again (clean). */
async function withFault(make: () => () => void): Promise<string[]> {
  const undo = make();
  let problems: string[];
  try {
    problems = await engine.fsck();
  } finally {
    undo();
  }
  expect(await engine.fsck()).toEqual([]);
  return problems;
}

describe('fsck() reports each kind of fault', () => {
  it('a bucket marked used that no pointer reaches (a leak)', async () => {
    let free = -1;
    for (let b = engine.sb.nrBuckets - 1; b >= 0 && free < 0; b--) if (engine.alloc.stateOf(b) === 'free') free = b;
    const problems = await withFault(() => {
      engine.alloc.markUsed(free);
      return () => engine.alloc.free(free);
    });
    expect(problems).toEqual([`bucket ${free}: marked used but not in the tree`]);
  });

  it('a bucket in the tree that the allocator has free (it would be handed out again)', async () => {
    const leaf = rootPointers()[1]!.bucket;
    const problems = await withFault(() => {
      engine.alloc.free(leaf);
      return () => engine.alloc.markUsed(leaf);
    });
    expect(problems).toEqual([`bucket ${leaf}: in the tree but free in the allocator`]);
  });

  it('two pointers to one bucket', async () => {
    const ptrs = rootPointers();
    const [a, b] = [ptrs[1]!, ptrs[2]!];
    const problems = await withFault(() => {
      const saved = b.value.slice(0, 4);
      new DataView(b.value.buffer, b.value.byteOffset).setUint32(0, a.bucket, true);
      expect(btreePtrDecode(b.value).bucket).toBe(a.bucket);
      return () => b.value.set(saved, 0);
    });
    expect(problems).toContain(`btree kv: bucket ${a.bucket} referenced twice`);
    // and the bucket the pointer lost now looks leaked
    expect(problems).toContain(`bucket ${b.bucket}: marked used but not in the tree`);
  });

  it('children that do not tile their parent (a pointer whose min key is off by one)', async () => {
    const p = rootPointers()[2]!;
    const minOffset = btreePtrDecode(p.value).minKey;
    const problems = await withFault(() => {
      // the min key's last word (the snapshot) one higher: a gap of one position before this child
      const off = p.value.length - 4;
      const saved = p.value.slice(off);
      const dv = new DataView(p.value.buffer, p.value.byteOffset);
      dv.setUint32(off, dv.getUint32(off, true) + 1, true);
      expect(btreePtrDecode(p.value).minKey).not.toEqual(minOffset);
      return () => p.value.set(saved, off);
    });
    expect(problems.some((l) => /^btree kv level 1 bucket \d+: child at bucket \d+ starts at .*children must tile the parent/.test(l)), problems.join('\n')).toBe(true);
    // the child itself disagrees with the pointer to it
    expect(problems.some((l) => l.includes(`node at bucket ${p.bucket} min key`) || l.includes(`bucket ${p.bucket}: ERR_TOPOLOGY`)), problems.join('\n')).toBe(true);
  });

  it('a leaf whose range disagrees with the pointer to it', async () => {
    const p = rootPointers()[1]!;
    const leaf = engine.cache.cacheFind(btreePtrDecode(p.value).seq);
    expect(leaf, 'the leaf should be cached').toBeDefined();
    const problems = await withFault(() => {
      // its max key moved down to its min key
      const saved = leaf!.keys.maxKey.slice();
      leaf!.keys.maxKey.set(leaf!.keys.minKey);
      return () => leaf!.keys.maxKey.set(saved);
    });
    // the node is not used: reported with its code, the walk goes on
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(new RegExp(`^btree kv level 0 bucket ${p.bucket}: ERR_TOPOLOGY: .*header doesn't match ptr`));
  });

  it("a leaf whose key counts disagree with its keys (the node's own check)", async () => {
    const p = rootPointers()[2]!;
    const leaf = engine.cache.cacheFind(btreePtrDecode(p.value).seq)!;
    const problems = await withFault(() => {
      // (verify recounts them, so undo sets the true count back)
      const count = leaf.keys.nrKeys;
      leaf.keys.nrKeys = count + 1;
      return () => (leaf.keys.nrKeys = count);
    });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(new RegExp(`^btree kv level 0 bucket ${p.bucket}: verify: counts .* != recount`));
  });
});

describe('fsck and a cache with no memory to spare', () => {
  // Found by the stress campaign with --io-delay (device operations taking milliseconds): an
  // fsck under load failed with ERR_IO "no cache memory". Its reads, made without a
  // transaction, found no node memory while a transaction held the cannibalize lock (writing
  // dirty nodes back and waiting for them), and gave up after 1,000 turns of the event loop:
  // a few milliseconds when nothing else runs. They now wait for the lock, as a transaction
  // does. Here the full cache is made by refusing every allocation that does not cannibalize,
  // and another owner holds the lock for 3,000 turns.
  it('its reads wait for the cannibalize lock held by another, however long, and then read', async () => {
    // reopened: only the root is cached, fsck reads every leaf
    const e = (await t.reopen()).engine;
    const cache = e.cache as unknown as { nodeMemAllocNowait: (...a: unknown[]) => unknown };
    const alloc = cache.nodeMemAllocNowait;
    let full = true;
    // only the cannibalize-lock holder's over-budget allocation (third argument true) gets memory while full
    cache.nodeMemAllocNowait = function (this: unknown, ...a: unknown[]) {
      if (full && a[2] !== true) return null;
      return alloc.apply(this, a);
    };
    const other = { id: -7 } as never;
    expect(e.cache.cannibalizeLock(other)).toBe(0);
    let turns = 0;
    const holder = (async () => {
      for (; turns < 3000; turns++) await new Promise((r) => setImmediate(r));
      full = false;
      e.cache.cannibalizeUnlock(other);
    })();
    try {
      const problems = await e.fsck();
      expect(turns, 'fsck finished only after the lock was released').toBe(3000);
      expect(problems).toEqual([]);
      expect(e.stats().cache.walkCannibalizeWaits).toBeGreaterThan(0);
    } finally {
      await holder;
      cache.nodeMemAllocNowait = alloc;
    }
  });
});

describe('fsck and a node the device cannot read', () => {
  // Found by the stress campaign with reads failing (--fault-kinds read, seed 28109): fsck
  // under load met an unreadable interior node and, not knowing the buckets below it,
  // reported each of them as "marked used but not in the tree", as if leaked.
  it('an interior node: one ERR_IO line for it and one for the bucket check it skips; no leaks reported', async () => {
    await t.cleanup();
    t = await tmpStore({ btrees: [{ name: 'kv' }], nodeSize: 4096, sizeBytes: 32 * 1024 * 1024 });
    const value = new Uint8Array(64).fill(5);
    for (let b = 0; t.store.engine.roots[0]!.node!.level < 2; b++) {
      await t.store.transact((tx) => {
        for (let i = 0; i < 500; i++) tx.put('kv', pos(1, b * 500 + i), value);
      });
    }
    await t.store.flush();
    engine = t.store.engine;
    root = engine.roots[0]!.node!;
    const bucket = rootPointers(2)[1]!.bucket;
    const at = engine.layout.bucketOffsetBytes + bucket * engine.nodeSizeBytes;
    await t.store.close();

    // the open reads the interior nodes (its bucket accounting): the node fails after that, once
    // out of the cache (every node the cache can drop, its reserve set aside for the moment)
    let failing = false;
    const fd = await FaultDevice.wrap(BlockDevice.open(t.path), { failRead: (off) => failing && off === at });
    const store = await Store.openDevice(fd, { cacheSize: 1 << 20 });
    let problems: string[];
    try {
      const cache = store.engine.cache;
      const reserve = cache.reserve;
      cache.reserve = 0;
      store.shrink();
      cache.reserve = reserve;
      failing = true;
      problems = await store.fsck();
      expect(fd.injected.read, 'the node was read, and failed').toBeGreaterThan(0);
    } finally {
      await store.close();
    }
    expect(problems).toHaveLength(2);
    expect(problems[0]).toMatch(new RegExp(`^btree kv level 1 bucket ${bucket}: ERR_IO: btree node read error`));
    expect(problems[1]).toBe('buckets: used buckets not checked against the tree: the tree below 1 node(s) could not be walked (ERR_IO)');
    // the device reads again: nothing was wrong with the store
    t.store = await Store.open(t.path);
    expect(await t.store.fsck()).toEqual([]);
  });
});
