// SPDX-License-Identifier: GPL-2.0-only
/*
 * Node cache costs (src/btree/cache.ts), against the device's own read:
 *
 *   hit, nodeGetNowait by slot   synchronous: slot -> node, checks, trylock (+ unlock)
 *   hit, nodeGet by slot         the btree_node_mem_ptr fast path, awaited (+ unlock)
 *   hit, nodeGet by hash         the Map lookup path, awaited (+ unlock)
 *   miss, nodeGet                round-robin over more nodes than the budget holds:
 *                                clock reclaim + one bucket read + nodeReadValidate
 *   validate only                nodeReadValidate of an image already in memory
 *   device read                  a plain node-sized read of the same buckets
 *
 * Nodes are full leaf nodes (keys of 16-byte values until the node is ~3/4
 * used), written to a file opened O_DIRECT (BlockDevice), aux memory from the
 * native mmapAnon. One transaction, queue depth 1.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/cache.js [--node-size 65536]
 *       [--nodes 512] [--time-ms 1000] [--path FILE] [--io napi|koffi]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { BtreeCache } from '../src/btree/cache.js';
import { NodeKeys } from '../src/btree/bset.js';
import { bkeyValue } from '../src/btree/bkey.js';
import { pos, posWords } from '../src/btree/bpos.js';
import { LockOwnerBase, nodeLock, nodeRelock, nodeUnlock, nodeUnlockAll } from '../src/btree/locking.js';
import type { Node } from '../src/btree/node.js';
import { nodeReadValidate, nodeWriteDone, nodeWritePrepare } from '../src/btree/node-io.js';
import { LOCK_READ, type BtreePtr, type CacheTrans, type LockType } from '../src/btree/types.js';
import { BlockDevice } from '../src/io/block-device.js';
import type { IoBackendName } from '../src/native/index.js';
import { SixLockType } from '../src/util/six.js';

const { values } = parseArgs({
  options: {
    'node-size': { type: 'string', default: '65536' },
    nodes: { type: 'string', default: '512' },
    'time-ms': { type: 'string', default: '1000' },
    path: { type: 'string' },
    io: { type: 'string' },
  },
});
const nodeSizeBytes = Number(values['node-size']);
const nodesNr = Number(values.nodes);
const timeMs = Number(values['time-ms']);
const blockSizeBytes = 4096;

/** A transaction as the cache sees it (the engine's BtreeTrans needs a whole engine). */
class BenchTrans extends LockOwnerBase implements CacheTrans {
  private saved: { node: Node; type: LockType; seq: number }[] = [];
  private readonly byLock = new Map<unknown, Node>();
  lockNode(node: Node, type: LockType): Promise<number> {
    this.byLock.set(node.lock, node);
    return nodeLock(this, node.lock, type as SixLockType);
  }
  unlockNode(node: Node, type: LockType): void {
    nodeUnlock(this, node.lock, type as SixLockType);
  }
  unlock(): void {
    for (let i = 0; i < this.locksHeld.nr; i++) {
      const node = this.byLock.get(this.locksHeld.lockAt(i));
      if (node) this.saved.push({ node, type: this.locksHeld.typeAt(i) as LockType, seq: node.lock.seq });
    }
    nodeUnlockAll(this);
  }
  parentHeld(): boolean {
    return true;
  }
  relock(): number {
    const s = this.saved;
    this.saved = [];
    for (const x of s) if (!nodeRelock(this, x.node.lock, x.type as SixLockType, x.seq)) return 1;
    return 0;
  }
}

function ptrFor(i: number): BtreePtr {
  return { btreeId: 0, level: 0, bucket: i + 1, seq: 0x5eed000 + i, minKey: posWords(pos(0, i * 100000)), maxKey: posWords(pos(0, i * 100000 + 99999)), sectorsWritten: 0 };
}

interface Row {
  name: string;
  nsPerOp: number;
  p50Us: number;
  p99Us: number;
  ops: number;
}

function pct(sorted: Float64Array, p: number): number {
  return sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

/** Run `op` (one call = `perCall` operations) for timeMs after a warmup; per-call latency samples. */
async function measure(name: string, perCall: number, op: () => Promise<void> | void): Promise<Row> {
  const warmEnd = performance.now() + Math.min(200, timeMs / 5);
  while (performance.now() < warmEnd) await op();
  const samples: number[] = [];
  const start = performance.now();
  const end = start + timeMs;
  let calls = 0;
  for (let now = start; now < end; ) {
    const t0 = performance.now();
    await op();
    now = performance.now();
    samples.push((now - t0) * 1000);
    calls++;
  }
  const elapsed = performance.now() - start;
  const sorted = Float64Array.from(samples).sort();
  return { name, nsPerOp: (elapsed * 1e6) / (calls * perCall), p50Us: pct(sorted, 0.5) / perCall, p99Us: pct(sorted, 0.99) / perCall, ops: calls * perCall };
}

async function main(): Promise<void> {
  const dir = values.path === undefined ? mkdtempSync(join(tmpdir(), 'sixtree-bench-cache-')) : null;
  const path = values.path ?? join(dir!, 'cache.img');
  const dev = BlockDevice.open(path, { createSizeBytes: (nodesNr + 2) * nodeSizeBytes, io: values.io as IoBackendName | undefined });
  try {
    /* node images */
    const keys = new NodeKeys(nodeSizeBytes, blockSizeBytes);
    const img = dev.allocBuffer(nodeSizeBytes);
    keys.attach(img, new Uint8Array(NodeKeys.auxBytes(nodeSizeBytes)));
    const value = new Uint8Array(16).fill(0x5a);
    let keysPerNode = 0;
    for (let i = 0; i < nodesNr; i++) {
      const p = ptrFor(i);
      img.fill(0);
      keys.initEmpty({ btreeId: 0, level: 0, minKey: p.minKey, maxKey: p.maxKey, seq: p.seq });
      let j = 0;
      while (keys.usedBytes() < nodeSizeBytes * 0.75 && keys.insertKey(bkeyValue(posWords(pos(0, i * 100000 + j)), value, 1))) j++;
      keysPerNode = j;
      const w = nodeWritePrepare(keys)!;
      await dev.write(img.subarray(0, w.offsetBytes + w.bytes.length), p.bucket * nodeSizeBytes);
      nodeWriteDone(keys);
    }
    await dev.flush();

    const backend = dev.backend;
    const mk = (budgetBytes: number): BtreeCache =>
      new BtreeCache({
        device: dev,
        nodeSizeBytes,
        blockSizeBytes,
        budgetBytes,
        nrBtrees: 1,
        bucketOffset: (b) => b * nodeSizeBytes,
        nodeWrite: async () => {},
        auxAlloc: (n) => new Uint8Array(backend.mmapAnon(n)),
        auxFree: (b) => backend.munmap(b.buffer as ArrayBuffer),
      });
    const t = new BenchTrans(1, 1);
    const rows: Row[] = [];

    /* hits: a cache holding a working set of `hot` nodes */
    const nodeBytes = nodeSizeBytes + NodeKeys.auxBytes(nodeSizeBytes);
    const hot = Math.min(nodesNr, 256);
    const big = mk(Math.max((hot + 64) * nodeBytes, BtreeCache.budgetBytesMin(nodeSizeBytes, 1)));
    const slots = new Int32Array(hot);
    for (let i = 0; i < hot; i++) {
      const b = (await big.nodeGet(t, ptrFor(i), 0, LOCK_READ)) as Node;
      slots[i] = b.slot;
      t.unlockNode(b, LOCK_READ);
    }
    const ptrs = Array.from({ length: nodesNr }, (_, i) => ptrFor(i));
    const batch = 1000;
    let k = 0;
    rows.push(
      await measure('hit, nodeGetNowait by slot (sync)', batch, () => {
        for (let n = 0; n < batch; n++) {
          const i = k++ % hot;
          const b = big.nodeGetNowait(t, ptrs[i]!, 0, LOCK_READ, slots[i]!)!;
          t.unlockNode(b, LOCK_READ);
        }
      }),
    );
    rows.push(
      await measure('hit, nodeGet by slot (mem_ptr)', batch, async () => {
        for (let n = 0; n < batch; n++) {
          const i = k++ % hot;
          const b = (await big.nodeGet(t, ptrs[i]!, 0, LOCK_READ, slots[i]!)) as Node;
          t.unlockNode(b, LOCK_READ);
        }
      }),
    );
    rows.push(
      await measure('hit, nodeGet by hash', batch, async () => {
        for (let n = 0; n < batch; n++) {
          const i = k++ % hot;
          const b = (await big.nodeGet(t, ptrs[i]!, 0, LOCK_READ)) as Node;
          t.unlockNode(b, LOCK_READ);
        }
      }),
    );
    const hitStats = big.stats();
    await big.cacheExit();

    /* misses: round robin over more nodes than the budget holds */
    const small = mk(Math.max(Math.floor(nodesNr / 4) * nodeBytes, BtreeCache.budgetBytesMin(nodeSizeBytes, 1)));
    if (small.usedMax >= nodesNr) throw new Error('bench: --nodes too small for a miss workload');
    rows.push(
      await measure('miss, nodeGet (reclaim + read + validate)', 1, async () => {
        const b = await small.nodeGet(t, ptrs[k++ % nodesNr]!, 0, LOCK_READ);
        if (typeof b === 'number') throw new Error(`nodeGet: ${b}`);
        t.unlockNode(b, LOCK_READ);
      }),
    );
    const missStats = small.stats();
    await small.cacheExit();

    /* validate only, and the device's own read */
    const vkeys = new NodeKeys(nodeSizeBytes, blockSizeBytes);
    const vbuf = dev.allocBuffer(nodeSizeBytes);
    vkeys.attach(vbuf, new Uint8Array(NodeKeys.auxBytes(nodeSizeBytes)));
    const images = Array.from({ length: 8 }, () => new Uint8Array(nodeSizeBytes));
    for (let i = 0; i < images.length; i++) {
      await dev.read(vbuf, ptrFor(i).bucket * nodeSizeBytes);
      images[i]!.set(vbuf);
    }
    rows.push(
      await measure('validate only (nodeReadValidate)', 1, () => {
        const i = k++ % images.length;
        vbuf.set(images[i]!);
        const p = ptrs[i]!;
        const r = nodeReadValidate(vkeys, { btreeId: 0, level: 0, minKey: p.minKey, maxKey: p.maxKey, seq: p.seq });
        if (!r.ok) throw new Error(r.message);
      }),
    );
    rows.push(
      await measure('device read, node-sized (baseline)', 1, async () => {
        await dev.read(vbuf, ptrs[k++ % nodesNr]!.bucket * nodeSizeBytes);
      }),
    );
    dev.freeBuffer(vbuf);
    dev.freeBuffer(img);

    console.log(`node cache, node ${nodeSizeBytes >> 10} KiB (${keysPerNode} keys), ${nodesNr} nodes, ${dev.kind} ${dev.path} (${dev.backend.name}), ${timeMs} ms per case`);
    console.log(`${'case'.padEnd(44)}${'ns/op'.padStart(12)}${'p50 us'.padStart(10)}${'p99 us'.padStart(10)}${'ops'.padStart(11)}`);
    for (const r of rows) {
      console.log(`${r.name.padEnd(44)}${r.nsPerOp.toFixed(0).padStart(12)}${r.p50Us.toFixed(2).padStart(10)}${r.p99Us.toFixed(2).padStart(10)}${String(r.ops).padStart(11)}`);
    }
    console.log(`hits: ${hitStats.hits} (fast ${hitStats.counters.hitsFast}); misses run: ${missStats.misses} misses, ${missStats.evictions} evictions, ${missStats.cannibalized} cannibalized, budget ${missStats.budgetBytes} bytes (${small.usedMax} nodes)`);
  } finally {
    await dev.close();
    if (dir !== null) rmSync(dir, { recursive: true, force: true });
  }
}

await main();
