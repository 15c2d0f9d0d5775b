// SPDX-License-Identifier: GPL-2.0-only
/*
 * Lock costs: uncontended six lock / unlock per type, relock, the locking
 * layer on top (LocksHeld bookkeeping, reader adjustment for write), the
 * awaited fast path, and a contended hand-off for scale.
 *
 * Each sample runs opsPerSample operations, so the numbers are per operation
 * and not dominated by the harness. A second part counts garbage collections
 * during millions of uncontended lock/unlock pairs: zero scavenges means the
 * path does not allocate (a loop that allocates is run as a control).
 *
 *   npx tsc -p tsconfig.json && node dist/bench/locks.js [timeMs]
 */

import { PerformanceObserver } from 'node:perf_hooks';
import { Bench } from 'tinybench';
import {
  LockOwnerBase,
  nodeLock,
  nodeRelock,
  nodeTryLock,
  nodeTryLockWrite,
  nodeUnlock,
  nodeUnlockWrite,
} from '../src/btree/locking.js';
import { SixLock, SixLockType } from '../src/util/six.js';

const { read, intent, write } = SixLockType;
const opsPerSample = 1000;
const timeMs = Number(process.argv[2] ?? 500);

interface Row {
  name: string;
  nsPerOp: number;
  p50: number;
  p99: number;
  samples: number;
}

async function benchLocks(): Promise<Row[]> {
  const bench = new Bench({ name: 'locks', time: timeMs, warmupTime: 100 });
  const a = new LockOwnerBase(1, 1);
  const b = new LockOwnerBase(2, 2);

  {
    const l = new SixLock();
    bench.add('six read tryLock+unlock', () => {
      for (let i = 0; i < opsPerSample; i++) {
        l.tryLock(read, a);
        l.unlock(read, a);
      }
    });
  }
  {
    const l = new SixLock();
    bench.add('six intent tryLock+unlock', () => {
      for (let i = 0; i < opsPerSample; i++) {
        l.tryLock(intent, a);
        l.unlock(intent, a);
      }
    });
  }
  {
    const l = new SixLock();
    l.tryLock(intent, a);
    bench.add('six write tryLock+unlock (intent held)', () => {
      for (let i = 0; i < opsPerSample; i++) {
        l.tryLock(write, a);
        l.unlock(write, a);
      }
    });
  }
  {
    const l = new SixLock();
    bench.add('six read relock+unlock', () => {
      for (let i = 0; i < opsPerSample; i++) {
        l.relock(read, l.seq, a);
        l.unlock(read, a);
      }
    });
  }
  {
    const l = new SixLock();
    const others = Array.from({ length: 8 }, (_, i) => new LockOwnerBase(10 + i, 10 + i));
    for (const o of others) l.tryLock(read, o);
    bench.add('six read tryLock+unlock, 8 other readers', () => {
      for (let i = 0; i < opsPerSample; i++) {
        l.tryLock(read, a);
        l.unlock(read, a);
      }
    });
  }
  {
    const l = new SixLock();
    bench.add('nodeTryLock+nodeUnlock read', () => {
      for (let i = 0; i < opsPerSample; i++) {
        nodeTryLock(a, l, read);
        nodeUnlock(a, l, read);
      }
    });
  }
  {
    const l = new SixLock();
    bench.add('nodeTryLock+nodeUnlock intent', () => {
      for (let i = 0; i < opsPerSample; i++) {
        nodeTryLock(a, l, intent);
        nodeUnlock(a, l, intent);
      }
    });
  }
  {
    const l = new SixLock();
    const w = new LockOwnerBase(3, 3);
    nodeTryLock(w, l, read);
    nodeTryLock(w, l, intent);
    bench.add('nodeTryLockWrite+nodeUnlockWrite (own read held)', () => {
      for (let i = 0; i < opsPerSample; i++) {
        nodeTryLockWrite(w, l);
        nodeUnlockWrite(w, l);
      }
    });
  }
  {
    const l = new SixLock();
    bench.add('nodeRelock+nodeUnlock read', () => {
      for (let i = 0; i < opsPerSample; i++) {
        nodeRelock(a, l, read, l.seq);
        nodeUnlock(a, l, read);
      }
    });
  }
  {
    const l = new SixLock();
    bench.add('await nodeLock+nodeUnlock read', async () => {
      for (let i = 0; i < opsPerSample; i++) {
        await nodeLock(a, l, read);
        nodeUnlock(a, l, read);
      }
    });
  }
  {
    const l = new SixLock();
    /* a and b pass intent back and forth: every op is a queued wait plus a hand-off */
    bench.add('contended intent hand-off (promise path)', async () => {
      nodeTryLock(a, l, intent);
      let holder = a;
      for (let i = 0; i < opsPerSample; i++) {
        const next = holder === a ? b : a;
        const p = nodeLock(next, l, intent);
        nodeUnlock(holder, l, intent);
        await p;
        holder = next;
      }
      nodeUnlock(holder, l, intent);
    });
  }

  await bench.run();
  return bench.tasks.map((t) => {
    const r = t.result;
    if (r.state !== 'completed') throw new Error(`${t.name}: ${r.state}`);
    const scale = 1e6 / opsPerSample; /* ms per sample -> ns per op */
    return {
      name: t.name,
      nsPerOp: r.latency.mean * scale,
      p50: r.latency.p50 * scale,
      p99: r.latency.p99 * scale,
      samples: r.latency.samplesCount,
    };
  });
}

/**
 * Garbage collections seen while running fn: a loop that does not allocate
 * triggers none. fn runs once first so JIT compilation is not counted.
 */
async function gcCount(fn: () => void | Promise<void>): Promise<number> {
  await fn();
  await new Promise<void>((res) => setTimeout(res, 50));
  let n = 0;
  const obs = new PerformanceObserver((list) => {
    n += list.getEntries().length;
  });
  obs.observe({ entryTypes: ['gc'] });
  await fn();
  await new Promise<void>((res) => setTimeout(res, 50));
  obs.disconnect();
  return n;
}

async function benchAllocation(): Promise<{ name: string; ops: number; gcs: number }[]> {
  const ops = 5_000_000;
  const a = new LockOwnerBase(1, 1);
  const l = new SixLock();
  const out: { name: string; ops: number; gcs: number }[] = [];
  out.push({
    name: 'six read+intent+write lock/unlock',
    ops,
    gcs: await gcCount(() => {
      for (let i = 0; i < ops; i++) {
        l.tryLock(read, a);
        l.tryLock(intent, a);
        l.unlock(read, a);
        l.tryLock(write, a);
        l.unlock(write, a);
        l.unlock(intent, a);
      }
    }),
  });
  out.push({
    name: 'nodeTryLock/nodeRelock/nodeUnlock',
    ops,
    gcs: await gcCount(() => {
      for (let i = 0; i < ops; i++) {
        nodeTryLock(a, l, intent);
        nodeRelock(a, l, read, l.seq);
        nodeTryLockWrite(a, l);
        nodeUnlockWrite(a, l);
        nodeUnlock(a, l, read);
        nodeUnlock(a, l, intent);
      }
    }),
  });
  out.push({
    name: 'await nodeLock (fast path; V8 await internals)',
    ops: ops / 10,
    gcs: await gcCount(async () => {
      for (let i = 0; i < ops / 10; i++) {
        await nodeLock(a, l, read);
        nodeUnlock(a, l, read);
      }
    }),
  });
  const sink: object[] = [];
  out.push({
    name: 'control: one small object per op',
    ops,
    gcs: await gcCount(() => {
      for (let i = 0; i < ops; i++) sink[i & 15] = { i };
    }),
  });
  return out;
}

const allocation = await benchAllocation();
const rows = await benchLocks();
console.log(`sixtree lock costs, node ${process.version}, ${opsPerSample} ops per sample, ${timeMs} ms per task`);
console.table(
  rows.map((r) => ({
    task: r.name,
    'ns/op mean': r.nsPerOp.toFixed(1),
    'ns/op p50': r.p50.toFixed(1),
    'ns/op p99': r.p99.toFixed(1),
    samples: r.samples,
  })),
);
console.log('garbage collections during uncontended lock/unlock (0 = no allocation):');
console.table(allocation);
