// SPDX-License-Identifier: GPL-2.0-only
import { beforeEach, describe, expect, it } from 'vitest';
import { ERR, errMatches, errName, RESTART } from '../../src/errors.js';
import {
  checkForDeadlock,
  countRestart,
  lockGraphDepthMax,
  lockGraphFindCycle,
  lockingCounters,
  LockOwnerBase,
  nodeDowngrade,
  nodeLock,
  nodeLockWrite,
  nodeRelock,
  nodeTryLock,
  nodeTryLockWrite,
  nodeTryUpgrade,
  nodeUnlock,
  nodeUnlockAll,
  nodeUnlockWrite,
} from '../../src/btree/locking.js';
import { SixLock, SixLockCounters, SixLockType, SixWaitState } from '../../src/util/six.js';

const { read, intent, write } = SixLockType;

async function flush(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

/** Track a promise's settlement without awaiting it. */
function track(p: Promise<number>): { done: boolean; code: number } {
  const s = { done: false, code: -1 };
  void p.then((c) => {
    s.done = true;
    s.code = c;
  });
  return s;
}

let counters: SixLockCounters;
function newLock(): SixLock {
  return new SixLock(counters);
}

beforeEach(() => {
  counters = new SixLockCounters();
  lockingCounters.reset();
});

describe('nodeLock() / nodeUnlock() / nodeUnlockAll()', () => {
  it('takes locks on the fast path and records them on the owner', async () => {
    const a = new LockOwnerBase(1, 1);
    const l1 = newLock();
    const l2 = newLock();
    expect(await nodeLock(a, l1, read)).toBe(0);
    expect(await nodeLock(a, l2, intent)).toBe(0);
    expect(await nodeLock(a, l2, intent)).toBe(0); /* second path: increment */
    expect(await nodeLock(a, l2, read)).toBe(0);
    expect(a.locksHeld.nr).toBe(4);
    expect(l2.counts()).toEqual({ read: 1, intent: 2, write: 0 });
    nodeUnlock(a, l2, intent);
    expect(l2.intentCount).toBe(1);
    expect(a.toText()).toContain('locks held: 3');
    nodeUnlockAll(a);
    expect(a.locksHeld.nr).toBe(0);
    expect(l1.counts()).toEqual({ read: 0, intent: 0, write: 0 });
    expect(l2.counts()).toEqual({ read: 0, intent: 0, write: 0 });
    expect(() => nodeUnlock(a, l1, read)).toThrow();
  });

  it('waits, then holds the lock when it is handed over', async () => {
    const a = new LockOwnerBase(1, 1);
    const b = new LockOwnerBase(2, 2);
    const l = newLock();
    await nodeLock(a, l, intent);
    const s = track(nodeLock(b, l, intent));
    await flush();
    expect(s.done).toBe(false);
    expect(b.waitingOn?.state).toBe(SixWaitState.waiting);
    expect(b.toText()).toContain('waiting on: intent');
    nodeUnlockAll(a);
    await flush();
    expect(s).toEqual({ done: true, code: 0 });
    expect(b.waitingOn).toBe(null);
    expect(b.locksHeld.count(l, intent)).toBe(1);
  });

  it('nodeUnlockAll(keep) keeps the kept locks (a waiter on them gets nothing) and drops the rest', async () => {
    // a new node's lock while its allocator drops its other locks to wait for
    // memory: another owner still waiting on the recycled node must not get it
    const a = new LockOwnerBase(1, 1);
    const b = new LockOwnerBase(2, 2);
    const kept = newLock();
    const other = newLock();
    await nodeLock(a, other, read);
    await nodeLock(a, kept, intent);
    expect(await nodeLockWrite(a, kept)).toBe(0);
    const s = track(nodeLock(b, kept, read));
    await flush();
    expect(s.done).toBe(false);
    nodeUnlockAll(a, new Set([kept]));
    await flush();
    expect(s.done, 'the waiter did not get the kept lock').toBe(false);
    expect(a.locksHeld.nr).toBe(2);
    expect(a.locksHeld.count(kept, intent)).toBe(1);
    expect(kept.counts()).toEqual({ read: 0, intent: 1, write: 1 });
    expect(other.counts()).toEqual({ read: 0, intent: 0, write: 0 });
    nodeUnlockAll(a);
    await flush();
    expect(s).toEqual({ done: true, code: 0 });
    nodeUnlockAll(b);
  });

  it('a read on a node the owner already holds passes a pending writer', async () => {
    const a = new LockOwnerBase(1, 1);
    const w = new LockOwnerBase(2, 2);
    const l = newLock();
    await nodeLock(a, l, read);
    await nodeLock(w, l, intent);
    const sw = track(nodeLockWrite(w, l));
    await flush();
    expect(sw.done).toBe(false);
    expect(l.tryLock(read, a)).toBe(false);
    expect(await nodeLock(a, l, read)).toBe(0); /* increment, no deadlock */
    expect(l.readCountOf(a)).toBe(2);
    nodeUnlockAll(a);
    await flush();
    expect(sw).toEqual({ done: true, code: 0 });
    nodeUnlockAll(w);
  });
});

describe('nodeRelock()', () => {
  it('succeeds if the node was not written since seq', async () => {
    const a = new LockOwnerBase(1, 1);
    const b = new LockOwnerBase(2, 2);
    const l = newLock();
    await nodeLock(a, l, intent);
    const seq = l.seq;
    nodeUnlockAll(a);
    await nodeLock(b, l, read);
    expect(nodeRelock(a, l, intent, seq)).toBe(true);
    expect(nodeRelock(a, l, intent, seq)).toBe(true); /* second path: increment */
    expect(nodeRelock(a, l, read, seq)).toBe(true);
    expect(a.locksHeld.nr).toBe(3);
    expect(l.counts()).toEqual({ read: 2, intent: 2, write: 0 });
  });

  it('fails after an intervening write lock', async () => {
    const a = new LockOwnerBase(1, 1);
    const b = new LockOwnerBase(2, 2);
    const l = newLock();
    await nodeLock(a, l, read);
    const seq = l.seq;
    nodeUnlockAll(a);
    await nodeLock(b, l, intent);
    expect(await nodeLockWrite(b, l)).toBe(0);
    nodeUnlockWrite(b, l);
    nodeUnlockAll(b);
    expect(nodeRelock(a, l, read, seq)).toBe(false);
    expect(a.locksHeld.nr).toBe(0);
    expect(counters.relockFail).toBe(1);
    expect(nodeRelock(a, l, read, l.seq)).toBe(true);
  });
});

describe('nodeTryUpgrade() / nodeDowngrade()', () => {
  it('upgrades a read hold, or increments intent held through another path', async () => {
    const a = new LockOwnerBase(1, 1);
    const b = new LockOwnerBase(2, 2);
    const l = newLock();
    await nodeLock(a, l, read);
    await nodeLock(b, l, read);
    expect(nodeTryUpgrade(a, l)).toBe(true);
    expect(nodeTryUpgrade(b, l)).toBe(false);
    expect(a.locksHeld.count(l, intent)).toBe(1);
    await nodeLock(a, l, read);
    expect(nodeTryUpgrade(a, l)).toBe(true);
    expect(l.counts()).toEqual({ read: 1, intent: 2, write: 0 });
    nodeDowngrade(a, l);
    expect(a.locksHeld.count(l, read)).toBe(1);
    nodeUnlockAll(a);
    nodeUnlockAll(b);
    expect(l.counts()).toEqual({ read: 0, intent: 0, write: 0 });
  });
});

describe('nodeLockWrite()', () => {
  it('subtracts the owner\'s own read holds, then adds them back', async () => {
    const a = new LockOwnerBase(1, 1);
    const l = newLock();
    await nodeLock(a, l, read);
    await nodeLock(a, l, intent);
    expect(l.tryLock(write, a)).toBe(false);
    expect(await nodeLockWrite(a, l)).toBe(0);
    expect(l.counts()).toEqual({ read: 1, intent: 1, write: 1 });
    nodeUnlockWrite(a, l);
    expect(l.seq).toBe(2);
    nodeUnlockAll(a);
    expect(l.counts()).toEqual({ read: 0, intent: 0, write: 0 });
  });

  it('waits for other readers, with its own reads still subtracted', async () => {
    const a = new LockOwnerBase(1, 1);
    const r = new LockOwnerBase(2, 2);
    const l = newLock();
    await nodeLock(a, l, read);
    await nodeLock(a, l, intent);
    await nodeLock(r, l, read);
    expect(nodeTryLockWrite(a, l)).toBe(false);
    expect(l.readCountOf(a)).toBe(1);
    const s = track(nodeLockWrite(a, l));
    await flush();
    expect(s.done).toBe(false);
    expect(l.readCount).toBe(1);
    nodeUnlockAll(r);
    await flush();
    expect(s).toEqual({ done: true, code: 0 });
    expect(l.counts()).toEqual({ read: 1, intent: 1, write: 1 });
    nodeUnlockAll(a);
    expect(l.counts()).toEqual({ read: 0, intent: 0, write: 0 });
  });
});

describe('deadlock detection', () => {
  it('two owners locking two locks in opposite orders: the younger restarts at once', async () => {
    const a = new LockOwnerBase(1, 10);
    const b = new LockOwnerBase(2, 20);
    const l1 = newLock();
    const l2 = newLock();
    await nodeLock(a, l1, intent);
    await nodeLock(b, l2, intent);
    const sa = track(nodeLock(a, l2, intent));
    const sb = track(nodeLock(b, l1, intent));
    await flush();
    expect(sa.done).toBe(false);
    expect(sb).toEqual({ done: true, code: ERR.transaction_restart_would_deadlock });
    expect(b.locksHeld.nr).toBe(1);
    nodeUnlockAll(b);
    await flush();
    expect(sa).toEqual({ done: true, code: 0 });
    expect(lockingCounters.restarts[ERR.transaction_restart_would_deadlock]).toBe(1);
    expect(lockingCounters.cyclesFound).toBe(1);
    expect(lockingCounters.lastCycle).toContain('owner#2');
  });

  it('when the waiting owner is younger, its wait is aborted and the caller proceeds', async () => {
    const a = new LockOwnerBase(1, 30); /* younger */
    const b = new LockOwnerBase(2, 20);
    const l1 = newLock();
    const l2 = newLock();
    await nodeLock(a, l1, intent);
    await nodeLock(b, l2, intent);
    const sa = track(nodeLock(a, l2, intent));
    const sb = track(nodeLock(b, l1, intent));
    expect(a.restartPending).toBe(ERR.transaction_restart_would_deadlock);
    await flush();
    expect(sa).toEqual({ done: true, code: ERR.transaction_restart_would_deadlock });
    expect(a.restartPending).toBe(0);
    expect(sb.done).toBe(false);
    nodeUnlockAll(a); /* the victim drops its locks */
    await flush();
    expect(sb).toEqual({ done: true, code: 0 });
    expect(lockingCounters.victimsAborted).toBe(1);
  });

  it('three-way cycle: exactly one restart, the youngest', async () => {
    for (const youngest of [0, 1, 2]) {
      const owners = [0, 1, 2].map((i) => new LockOwnerBase(i + 1, i === youngest ? 100 : 10 + i));
      const locks = [newLock(), newLock(), newLock()];
      for (let i = 0; i < 3; i++) await nodeLock(owners[i]!, locks[i]!, intent);
      const s = [0, 1, 2].map((i) => track(nodeLock(owners[i]!, locks[(i + 1) % 3]!, intent)));
      await flush();
      const restarted = s.map((x, i) => (x.done && x.code !== 0 ? i : -1)).filter((i) => i >= 0);
      expect(restarted).toEqual([youngest]);
      expect(errMatches(s[youngest]!.code, ERR.transaction_restart_would_deadlock)).toBe(true);
      nodeUnlockAll(owners[youngest]!);
      await flush();
      /* the owner waiting for the victim's lock gets it; the rest follow as locks are released */
      for (let k = 0; k < 3; k++) {
        for (let i = 0; i < 3; i++) if (i !== youngest && s[i]!.done) nodeUnlockAll(owners[i]!);
        await flush();
      }
      for (let i = 0; i < 3; i++) if (i !== youngest) expect(s[i]).toEqual({ done: true, code: 0 });
      for (const o of owners) nodeUnlockAll(o);
      for (const l of locks) expect(l.counts()).toEqual({ read: 0, intent: 0, write: 0 });
    }
  });

  it('write lock against a reader waiting on the writer: would_deadlock_write for a young writer', async () => {
    const w = new LockOwnerBase(1, 50);
    const r = new LockOwnerBase(2, 5);
    const l1 = newLock();
    const l2 = newLock();
    await nodeLock(w, l1, intent);
    await nodeLock(w, l2, intent);
    await nodeLock(r, l1, read);
    const sr = track(nodeLock(r, l2, intent)); /* r waits for w's intent on l2 */
    const sw = track(nodeLockWrite(w, l1)); /* w waits for r's read on l1: cycle */
    await flush();
    expect(sw).toEqual({ done: true, code: ERR.transaction_restart_would_deadlock_write });
    expect(sr.done).toBe(false);
    expect(l1.writeHeld).toBe(false);
    nodeUnlockAll(w);
    await flush();
    expect(sr).toEqual({ done: true, code: 0 });
    nodeUnlockAll(r);
  });

  it('a reader queued behind a pending writer closes a cycle: the youngest is aborted', async () => {
    /* w waits for write on l1 (x reads l1); y waits for read on l1 behind the
     * pending writer; x then wants intent on l2, held by y: x -> y -> w -> x. */
    const w = new LockOwnerBase(1, 1);
    const x = new LockOwnerBase(2, 2);
    const y = new LockOwnerBase(3, 3);
    const l1 = newLock();
    const l2 = newLock();
    await nodeLock(w, l1, intent);
    await nodeLock(x, l1, read);
    await nodeLock(y, l2, intent);
    const sw = track(nodeLockWrite(w, l1));
    const sy = track(nodeLock(y, l1, read));
    await flush();
    expect(sw.done || sy.done).toBe(false);
    expect(lockingCounters.cyclesFound).toBe(0);
    const sx = track(nodeLock(x, l2, intent));
    await flush();
    expect(sy).toEqual({ done: true, code: ERR.transaction_restart_would_deadlock });
    expect(sx.done).toBe(false);
    nodeUnlockAll(y);
    await flush();
    expect(sx).toEqual({ done: true, code: 0 });
    nodeUnlockAll(x);
    await flush();
    expect(sw).toEqual({ done: true, code: 0 });
    nodeUnlockAll(w);
    expect(l1.counts()).toEqual({ read: 0, intent: 0, write: 0 });
  });

  it('restarted owners keep their startSeq, so they outrank newer transactions', async () => {
    const old = new LockOwnerBase(1, 1);
    const b = new LockOwnerBase(2, 2);
    const l1 = newLock();
    const l2 = newLock();
    /* round 1: b loses against old */
    await nodeLock(old, l1, intent);
    await nodeLock(b, l2, intent);
    const so = track(nodeLock(old, l2, intent));
    expect(await nodeLock(b, l1, intent)).toBe(ERR.transaction_restart_would_deadlock);
    nodeUnlockAll(b);
    await flush();
    expect(so.code).toBe(0);
    nodeUnlockAll(old);
    /* round 2: b (same startSeq) against a newer transaction c: c loses */
    const c = new LockOwnerBase(3, 3);
    await nodeLock(b, l1, intent);
    await nodeLock(c, l2, intent);
    const sb = track(nodeLock(b, l2, intent));
    expect(await nodeLock(c, l1, intent)).toBe(ERR.transaction_restart_would_deadlock);
    nodeUnlockAll(c);
    await flush();
    expect(sb.code).toBe(0);
    nodeUnlockAll(b);
  });

  /** Owners 1..n, owner i holding lock i (intent) and waiting for lock i+1 (built from the tail so each walk is short until the last); owner n runs. */
  async function waiterChain(n: number): Promise<{ owners: LockOwnerBase[]; locks: ReturnType<typeof newLock>[]; s: { done: boolean; code: number }[] }> {
    const owners = Array.from({ length: n }, (_, i) => new LockOwnerBase(i + 1, i + 1));
    const locks = Array.from({ length: n }, () => newLock());
    for (let i = 0; i < n; i++) await nodeLock(owners[i]!, locks[i]!, intent);
    const s: { done: boolean; code: number }[] = [];
    for (let i = n - 2; i >= 0; i--) s[i] = track(nodeLock(owners[i]!, locks[i + 1]!, intent));
    await flush();
    return { owners, locks, s };
  }

  it('a chain deeper than the walk bound restarts its youngest member', async () => {
    const n = lockGraphDepthMax + 2;
    const { owners, locks, s } = await waiterChain(n);
    expect(lockingCounters.recursionLimitHits).toBe(1);
    const restarted = s.map((x, i) => (x.done ? i : -1)).filter((i) => i >= 0);
    expect(restarted.length).toBe(1);
    expect(s[restarted[0]!]!.code).toBe(ERR.transaction_restart_deadlock_recursion_limit);
    /* everybody finishes once the tail owner and the victim let go */
    nodeUnlockAll(owners[restarted[0]!]!);
    nodeUnlockAll(owners[n - 1]!);
    for (let k = 0; k < n; k++) {
      await flush();
      for (let i = n - 2; i >= 0; i--) if (s[i]!.done) nodeUnlockAll(owners[i]!);
    }
    for (let i = 0; i < n - 1; i++) expect(s[i]!.done).toBe(true);
    for (const l of locks) expect(l.counts()).toEqual({ read: 0, intent: 0, write: 0 });
  });

  for (const gate of [false, true]) {
    it(`a young transaction at the head of a chain deeper than the walk bound ${gate ? 'holding the starvation gate sleeps: the youngest other member restarts' : 'restarts itself'}`, async () => {
      /* older owners 1..9: owner i holds lock i and waits for lock i+1; owner 9 runs */
      const n = lockGraphDepthMax + 1;
      const { owners, locks, s } = await waiterChain(n);
      expect(lockingCounters.recursionLimitHits).toBe(0);
      /* the youngest (start 100) wants lock 0: its walk is deeper than the bound */
      const young: LockOwnerBase & { runsAlone?: () => boolean } = new LockOwnerBase(100, 100);
      if (gate) young.runsAlone = () => true;
      const sy = track(nodeLock(young, locks[0]!, intent));
      await flush();
      expect(lockingCounters.recursionLimitHits).toBe(1);
      const restarted = s.map((x, i) => (x.done ? i : -1)).filter((i) => i >= 0);
      if (!gate) {
        expect(sy).toEqual({ done: true, code: ERR.transaction_restart_deadlock_recursion_limit });
        expect(restarted).toEqual([]);
      } else {
        /* the walk holds the gate holder and the next 7 (owners 1..7): the youngest of those restarts */
        expect(sy.done).toBe(false);
        expect(restarted).toEqual([lockGraphDepthMax - 2]);
        expect(s[restarted[0]!]!.code).toBe(ERR.transaction_restart_deadlock_recursion_limit);
        nodeUnlockAll(owners[restarted[0]!]!);
      }
      /* everybody finishes once the tail owner lets go */
      nodeUnlockAll(owners[n - 1]!);
      for (let k = 0; k < n + 1; k++) {
        await flush();
        for (let i = n - 2; i >= 0; i--) if (s[i]!.done) nodeUnlockAll(owners[i]!);
      }
      for (let i = 0; i < n - 1; i++) expect(s[i]!.done).toBe(true);
      if (gate) expect(sy).toEqual({ done: true, code: 0 });
      nodeUnlockAll(young);
      for (const l of locks) expect(l.counts()).toEqual({ read: 0, intent: 0, write: 0 });
    });
  }

  it('checkForDeadlock() is a no-op for an owner that is not waiting', () => {
    const a = new LockOwnerBase(1, 1);
    expect(checkForDeadlock(a)).toBe(0);
    expect(lockGraphFindCycle(a)).toBe(null);
  });

  it('countRestart() counts by reason and refuses non-restart codes', () => {
    expect(countRestart(ERR.transaction_restart_relock_path)).toBe(ERR.transaction_restart_relock_path);
    expect(lockingCounters.toObject()['restart_relock_path']).toBe(1);
    expect(() => countRestart(ERR.journal_full)).toThrow();
    expect(lockingCounters.toText()).toContain('restart_relock_path');
  });
});

/* ---------------------------------------------------------------------------
 * Randomized stress: 64 async actors, random lock sets, random awaits.
 */

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Hold {
  lock: number;
  type: SixLockType;
}

class Actor extends LockOwnerBase {
  holds: Hold[] = [];
  restartsThisTask = 0;
  restartsMax = 0;
  tasksDone = 0;
}

interface StressResult {
  steps: number;
  tasks: number;
  restarts: number;
  restartsMaxPerTask: number;
  byReason: Record<string, number>;
  writes: number;
  relocks: number;
}

async function stress(seed: number, actorsNr: number, locksNr: number, tasksPerActor: number): Promise<StressResult> {
  const locks = Array.from({ length: locksNr }, () => newLock());
  const versions = new Array<number>(locksNr).fill(0);
  const actors: Actor[] = [];
  let startSeq = 0;
  let steps = 0;
  let writes = 0;
  let relocks = 0;
  const byReason: Record<string, number> = {};

  function assert(cond: boolean, what: string): void {
    if (!cond) throw new Error(`stress seed ${seed} step ${steps}: ${what}`);
  }

  function heldByLayer(a: Actor): Hold[] {
    const out: Hold[] = [];
    for (let i = 0; i < a.locksHeld.nr; i++) out.push({ lock: locks.indexOf(a.locksHeld.lockAt(i)), type: a.locksHeld.typeAt(i) });
    return out;
  }

  function holdsKey(hs: Hold[]): string {
    return hs.map((h) => `${h.lock}:${h.type}`).sort().join(',');
  }

  /**
   * `self`, the running actor, compares what it has recorded with what the
   * lock layer recorded for it. Then, over every actor, the safety invariants,
   * and each lock's state against the holds. Other actors may sit between a
   * grant and their resumption: the lock layer's view (locksHeld, plus a
   * granted waiter not yet resumed) is exact at every point.
   */
  function check(self: Actor): void {
    steps++;
    assert(holdsKey(self.holds) === holdsKey(heldByLayer(self)), `owner#${self.ownerId}: holds ${holdsKey(self.holds)}, layer says ${holdsKey(heldByLayer(self))}`);
    const reads: Map<Actor, number>[] = locks.map(() => new Map());
    const intents: Map<Actor, number>[] = locks.map(() => new Map());
    const writers: Set<Actor>[] = locks.map(() => new Set());
    for (const a of actors) {
      const hs = heldByLayer(a);
      /* a wait granted but not yet resumed already holds the lock */
      const w = a.waitingOn;
      if (w !== null && w.state === SixWaitState.acquired) hs.push({ lock: locks.indexOf(w.lock), type: w.type });
      for (const h of hs) {
        if (h.type === read) reads[h.lock]!.set(a, (reads[h.lock]!.get(a) ?? 0) + 1);
        if (h.type === intent) intents[h.lock]!.set(a, (intents[h.lock]!.get(a) ?? 0) + 1);
        if (h.type === write) writers[h.lock]!.add(a);
      }
    }
    for (let i = 0; i < locksNr; i++) {
      const l = locks[i]!;
      /* never two intent holders */
      assert(intents[i]!.size <= 1, `lock ${i}: two intent holders`);
      /* never write without intent; never write with readers other than the writer */
      for (const wr of writers[i]!) {
        assert(intents[i]!.has(wr), `lock ${i}: write without intent`);
        for (const r of reads[i]!.keys()) assert(r === wr, `lock ${i}: write with another reader`);
      }
      /* the lock agrees with what the actors believe they hold */
      const [io, ic] = [...intents[i]!.entries()][0] ?? [null, 0];
      assert(l.intentOwner === io && l.intentCount === ic, `lock ${i}: intent holder differs from the actors' view`);
      assert(l.writeHeld === writers[i]!.size > 0, `lock ${i}: write state differs`);
      let readExpected = 0;
      for (const [a, n] of reads[i]!) {
        /* a writer waiting (or just woken) has its reads subtracted */
        const w = a.waitingOn;
        if (!(w !== null && w.type === write && w.lock === l)) readExpected += n;
      }
      assert(l.readCount === readExpected, `lock ${i}: read count ${l.readCount}, actors hold ${readExpected}`);
      assert(!l.writeHeld || (l.seq & 1) === 1, `lock ${i}: write held with even seq`);
    }
    /* no cycle in the waits-for graph at any await point */
    for (const a of actors) assert(lockGraphFindCycle(a, 1000) === null, `cycle through owner#${a.ownerId}`);
  }

  async function pause(rng: () => number): Promise<void> {
    const r = rng();
    if (r < 0.35) return Promise.resolve();
    if (r < 0.85) return new Promise<void>((res) => setImmediate(res));
    /* a deterministic "small timer": a few event loop turns */
    const turns = 2 + Math.floor(rng() * 6);
    for (let i = 0; i < turns; i++) await new Promise<void>((res) => setImmediate(res));
  }

  function drop(a: Actor): void {
    nodeUnlockAll(a);
    a.holds.length = 0;
  }

  /** One attempt at a task: 0 when done, or a restart code. */
  async function attempt(a: Actor, rng: () => number, plan: { lock: number; type: SixLockType; write: boolean }[], doRelock: boolean): Promise<number> {
    for (const p of plan) {
      /* trylock first, so a fast-path hold is recorded before anyone else runs */
      if (!nodeTryLock(a, locks[p.lock]!, p.type)) {
        const ret = await nodeLock(a, locks[p.lock]!, p.type);
        if (ret !== 0) return ret;
      }
      a.holds.push({ lock: p.lock, type: p.type });
      check(a);
      await pause(rng);
      check(a);
    }

    if (doRelock) {
      /* drop everything, as before I/O, and relock by seq */
      const saved = a.holds.map((h) => ({ ...h, seq: locks[h.lock]!.seq, version: versions[h.lock]! }));
      drop(a);
      check(a);
      await pause(rng);
      for (const s of saved) {
        if (!nodeRelock(a, locks[s.lock]!, s.type, s.seq)) return countRestart(ERR.transaction_restart_relock_path);
        assert(versions[s.lock] === s.version, 'relock succeeded on a changed node'); /* relock by seq means unchanged */
        a.holds.push({ lock: s.lock, type: s.type });
        check(a);
      }
      relocks++;
    }

    for (const p of plan) {
      if (!p.write) continue;
      const l = locks[p.lock]!;
      if (!nodeTryLockWrite(a, l)) {
        const ret = await nodeLockWrite(a, l);
        if (ret !== 0) return ret;
      }
      a.holds.push({ lock: p.lock, type: write });
      check(a);
      /* no await while write locked */
      versions[p.lock]!++;
      writes++;
      nodeUnlockWrite(a, l);
      a.holds.splice(a.holds.findIndex((h) => h.lock === p.lock && h.type === write), 1);
      check(a);
    }
    await pause(rng);
    return 0;
  }

  async function run(a: Actor, rng: () => number): Promise<void> {
    for (let t = 0; t < tasksPerActor; t++) {
      a.startSeq = ++startSeq;
      a.restartsThisTask = 0;
      const n = 1 + Math.floor(rng() * 4);
      const plan: { lock: number; type: SixLockType; write: boolean }[] = [];
      for (let i = 0; i < n; i++) {
        const lock = Math.floor(rng() * locksNr);
        const r = rng();
        const type = r < 0.5 ? read : intent;
        /* the same node through two paths, sometimes read then intent */
        if (plan.some((p) => p.lock === lock && p.type === intent) && type === intent) continue;
        plan.push({ lock, type, write: type === intent && rng() < 0.35 });
      }
      const doRelock = rng() < 0.15;
      for (;;) {
        /* like a traversal that found its nodes cached: only the first attempt drops and relocks */
        const ret = await attempt(a, rng, plan, doRelock && a.restartsThisTask === 0);
        if (ret === 0) break;
        expect(errMatches(ret, RESTART)).toBe(true);
        byReason[errName(ret)] = (byReason[errName(ret)] ?? 0) + 1;
        a.restartsThisTask++;
        drop(a);
        check(a);
        await pause(rng);
      }
      a.restartsMax = Math.max(a.restartsMax, a.restartsThisTask);
      drop(a);
      a.tasksDone++;
      check(a);
    }
  }

  for (let i = 0; i < actorsNr; i++) actors.push(new Actor(i + 1, 0));
  const done = Promise.all(actors.map((a, i) => run(a, mulberry32(seed * 1000 + i))));

  /* watchdog: if no step is made for 5 s, dump the state and fail */
  let lastSteps = -1;
  let timer: NodeJS.Timeout | undefined;
  const stalled = new Promise<never>((_, reject) => {
    timer = setInterval(() => {
      if (process.env['SIX_STRESS_DEBUG']) console.log(`steps ${steps} tasks ${actors.reduce((x, a) => x + a.tasksDone, 0)} reasons ${JSON.stringify(byReason)} ${JSON.stringify(lockingCounters.toObject())}`);
      if (steps !== lastSteps) {
        lastSteps = steps;
        return;
      }
      const dump = locks.map((l, i) => `lock ${i}: ${l.toText()}`).join('') + actors.filter((a) => a.tasksDone < tasksPerActor).map((a) => a.toText()).join('');
      reject(new Error(`stress seed ${seed}: no progress\n${dump}`));
    }, 5000);
  });
  try {
    await Promise.race([done, stalled]);
  } finally {
    clearInterval(timer);
  }

  for (const l of locks) {
    expect(l.counts()).toEqual({ read: 0, intent: 0, write: 0 });
    expect(l.waiters.length).toBe(0);
  }
  const restarts = Object.values(byReason).reduce((x, y) => x + y, 0);
  return {
    steps,
    tasks: actors.reduce((s, a) => s + a.tasksDone, 0),
    restarts,
    restartsMaxPerTask: Math.max(...actors.map((a) => a.restartsMax)),
    byReason,
    writes,
    relocks,
  };
}

describe('randomized stress', () => {
  const seeds = (process.env['SIX_STRESS_SEEDS'] ?? '1,2,3').split(',').map(Number);
  for (const seed of seeds) {
    it(`64 actors, 12 locks, seed ${seed}: invariants hold, everybody finishes`, async () => {
      const r = await stress(seed, 64, 12, Number(process.env['SIX_STRESS_TASKS'] ?? 40));
      console.log(`stress seed ${seed}: ${JSON.stringify(r)} locking: ${JSON.stringify({ walks: lockingCounters.graphWalks, cycles: lockingCounters.cyclesFound, deep: lockingCounters.recursionLimitHits, aborted: lockingCounters.victimsAborted })}`);
      expect(r.tasks).toBe(64 * Number(process.env['SIX_STRESS_TASKS'] ?? 40));
      expect(r.steps).toBeGreaterThan(5000);
      expect(r.restarts).toBeGreaterThan(0); /* the workload does conflict */
      /* no starvation: bounded restarts per task */
      expect(r.restartsMaxPerTask).toBeLessThanOrEqual(64);
    });
  }
});
