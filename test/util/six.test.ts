// SPDX-License-Identifier: GPL-2.0-only
import { describe, expect, it } from 'vitest';
import { SixLock, SixLockCounters, SixLockType, SixWaitState, type SixLockOwner } from '../../src/util/six.js';

const { read, intent, write } = SixLockType;
const TYPES = [read, intent, write] as const;
const NAMES = ['read', 'intent', 'write'];

function owner(id: number): SixLockOwner {
  return { ownerId: id };
}

/** Settle pending promise callbacks. */
async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

function newLock(): SixLock {
  return new SixLock(new SixLockCounters());
}

/** Put `type` on the lock for `o` (write also takes the intent under it). */
function hold(lock: SixLock, type: number, o: SixLockOwner): void {
  if (type === write) {
    expect(lock.tryLock(intent, o)).toBe(true);
    expect(lock.tryLock(write, o)).toBe(true);
  } else {
    expect(lock.tryLock(type as SixLockType, o)).toBe(true);
  }
}

describe('SixLock#tryLock() compatibility', () => {
  /* expected[held][wanted]: same owner, then other owner. 'bug' = assertion (write without intent). */
  const expected: Record<string, Record<string, [string, string]>> = {
    read: { read: ['ok', 'ok'], intent: ['ok', 'ok'], write: ['bug', 'bug'] },
    intent: { read: ['ok', 'ok'], intent: ['fail', 'fail'], write: ['ok', 'bug'] },
    write: { read: ['fail', 'fail'], intent: ['fail', 'fail'], write: ['fail', 'bug'] },
  };

  for (const held of TYPES) {
    for (const wanted of TYPES) {
      for (const same of [true, false]) {
        const want = expected[NAMES[held]!]![NAMES[wanted]!]![same ? 0 : 1];
        it(`held ${NAMES[held]} by A, ${NAMES[wanted]} by ${same ? 'A' : 'B'}: ${want}`, () => {
          const lock = newLock();
          const a = owner(1);
          const b = owner(2);
          hold(lock, held, a);
          const before = lock.counts();
          const who = same ? a : b;
          if (want === 'bug') {
            expect(() => lock.tryLock(wanted, who)).toThrow(/without intent/);
            expect(lock.counts()).toEqual(before);
          } else if (want === 'fail') {
            expect(lock.tryLock(wanted, who)).toBe(false);
            expect(lock.counts()).toEqual(before);
          } else {
            expect(lock.tryLock(wanted, who)).toBe(true);
            expect(lock.heldBy(wanted, who)).toBeGreaterThan(0);
          }
        });
      }
    }
  }

  it('write is excluded by any read, including the writer\'s own', () => {
    const lock = newLock();
    const a = owner(1);
    const b = owner(2);
    lock.tryLock(intent, a);
    lock.tryLock(read, b);
    expect(lock.tryLock(write, a)).toBe(false);
    lock.unlock(read, b);
    lock.tryLock(read, a);
    expect(lock.tryLock(write, a)).toBe(false);
    lock.unlock(read, a);
    expect(lock.tryLock(write, a)).toBe(true);
    expect(lock.counts()).toEqual({ read: 0, intent: 1, write: 1 });
  });

  it('readerCountAdjust lets a writer ignore its own read holds', () => {
    const lock = newLock();
    const a = owner(1);
    lock.tryLock(read, a);
    lock.tryLock(read, a);
    lock.tryLock(intent, a);
    expect(lock.tryLock(write, a)).toBe(false);
    lock.readerCountAdjust(a, -2);
    expect(lock.tryLock(write, a)).toBe(true);
    lock.readerCountAdjust(a, 2);
    expect(lock.counts()).toEqual({ read: 2, intent: 1, write: 1 });
    expect(lock.readCountOf(a)).toBe(2);
    expect(lock.tryLock(read, owner(2))).toBe(false);
    lock.unlock(write, a);
    lock.unlock(read, a);
    lock.unlock(read, a);
    lock.unlock(intent, a);
    expect(lock.counts()).toEqual({ read: 0, intent: 0, write: 0 });
  });

  it('asserts on releases that do not match a hold', () => {
    const lock = newLock();
    const a = owner(1);
    const b = owner(2);
    expect(() => lock.unlock(read, a)).toThrow();
    lock.tryLock(intent, a);
    expect(() => lock.unlock(intent, b)).toThrow();
    lock.tryLock(write, a);
    expect(() => lock.unlock(intent, a)).toThrow(/while write locked/);
    expect(() => lock.unlock(write, b)).toThrow();
    expect(() => lock.increment(write, a)).toThrow();
  });
});

describe('SixLock seq and relock()', () => {
  it('seq is odd while write locked and moves on every write lock and unlock', () => {
    const lock = newLock();
    const a = owner(1);
    expect(lock.seq).toBe(0);
    lock.tryLock(read, a);
    lock.unlock(read, a);
    lock.tryLock(intent, a);
    expect(lock.seq).toBe(0);
    lock.tryLock(write, a);
    expect(lock.seq).toBe(1);
    lock.unlock(write, a);
    expect(lock.seq).toBe(2);
    lock.unlock(intent, a);
    expect(lock.seq).toBe(2);
  });

  it('relock succeeds when nothing was write locked since seq was read', () => {
    const lock = newLock();
    const a = owner(1);
    const b = owner(2);
    lock.tryLock(read, a);
    const seq = lock.seq;
    lock.unlock(read, a);
    /* others reading and intent-locking do not change the node */
    lock.tryLock(read, b);
    lock.tryLock(intent, b);
    lock.unlock(read, b);
    expect(lock.relock(read, seq, a)).toBe(true);
    /* takeable now is required: intent is held by b */
    expect(lock.relock(intent, seq, a)).toBe(false);
    lock.unlock(intent, b);
    expect(lock.relock(intent, seq, a)).toBe(true);
    expect(lock.counts()).toEqual({ read: 1, intent: 1, write: 0 });
    expect(lock.counters.relockFail).toBe(1);
  });

  it('relock fails after an intervening write lock', () => {
    const lock = newLock();
    const a = owner(1);
    const b = owner(2);
    lock.tryLock(intent, a);
    const seq = lock.seq;
    lock.unlock(intent, a);
    lock.tryLock(intent, b);
    lock.tryLock(write, b);
    expect(lock.relock(read, seq, a)).toBe(false);
    lock.unlock(write, b);
    lock.unlock(intent, b);
    expect(lock.relock(read, seq, a)).toBe(false);
    expect(lock.relock(intent, seq, a)).toBe(false);
    expect(lock.relock(intent, lock.seq, a)).toBe(true);
    expect(lock.counters.relockFail).toBe(3);
  });
});

describe('SixLock upgrade / downgrade / convert', () => {
  it('tryUpgrade turns one read hold into intent', () => {
    const lock = newLock();
    const a = owner(1);
    lock.tryLock(read, a);
    lock.tryLock(read, a);
    expect(lock.tryUpgrade(a)).toBe(true);
    expect(lock.counts()).toEqual({ read: 1, intent: 1, write: 0 });
    expect(lock.intentOwner).toBe(a);
  });

  it('tryUpgrade fails while another owner holds intent', () => {
    const lock = newLock();
    const a = owner(1);
    const b = owner(2);
    lock.tryLock(read, a);
    lock.tryLock(intent, b);
    expect(lock.tryUpgrade(a)).toBe(false);
    expect(lock.counters.upgradeFail).toBe(1);
    expect(lock.counts()).toEqual({ read: 1, intent: 1, write: 0 });
  });

  it('downgrade turns intent into read and hands intent to a waiter', async () => {
    const lock = newLock();
    const a = owner(1);
    const b = owner(2);
    lock.tryLock(intent, a);
    const p = lock.lock(intent, b);
    lock.downgrade(a);
    expect(lock.intentOwner).toBe(b);
    expect(lock.readCountOf(a)).toBe(1);
    expect(await p).toBe(0);
  });

  it('tryConvert', () => {
    const lock = newLock();
    const a = owner(1);
    lock.tryLock(read, a);
    expect(lock.tryConvert(read, read, a)).toBe(true);
    expect(lock.tryConvert(read, intent, a)).toBe(true);
    expect(lock.counts()).toEqual({ read: 0, intent: 1, write: 0 });
    expect(lock.tryConvert(intent, read, a)).toBe(true);
    expect(lock.counts()).toEqual({ read: 1, intent: 0, write: 0 });
    expect(() => lock.tryConvert(read, write, a)).toThrow();
  });
});

describe('SixLock#increment() recursion', () => {
  it('counts read and intent holds; the lock is free after the last unlock', async () => {
    const lock = newLock();
    const a = owner(1);
    const b = owner(2);
    lock.tryLock(intent, a);
    expect(lock.tryLock(intent, a)).toBe(false);
    lock.increment(intent, a);
    lock.increment(intent, a);
    lock.increment(read, a); /* read under own intent */
    lock.increment(read, a);
    expect(lock.counts()).toEqual({ read: 2, intent: 3, write: 0 });
    expect(lock.heldBy(intent, a)).toBe(3);

    const p = lock.lock(intent, b);
    let got = false;
    void p.then(() => (got = true));
    lock.unlock(intent, a);
    lock.unlock(intent, a);
    await flush();
    expect(got).toBe(false);
    expect(lock.intentOwner).toBe(a);
    lock.unlock(intent, a);
    expect(lock.intentOwner).toBe(b);
    expect(await p).toBe(0);
    lock.unlock(read, a);
    lock.unlock(read, a);
    expect(lock.counts()).toEqual({ read: 0, intent: 1, write: 0 });
    expect(() => lock.increment(read, a)).toThrow(/holding nothing/);
    expect(() => lock.increment(intent, a)).toThrow();
  });

  it('increment(read) passes a pending writer', async () => {
    const lock = newLock();
    const a = owner(1);
    const w = owner(2);
    lock.tryLock(read, a);
    lock.tryLock(intent, w);
    const p = lock.lock(write, w);
    expect(lock.tryLock(read, a)).toBe(false);
    lock.increment(read, a);
    expect(lock.readCountOf(a)).toBe(2);
    lock.unlock(read, a);
    lock.unlock(read, a);
    expect(lock.writeHeld).toBe(true);
    expect(await p).toBe(0);
  });
});

describe('SixLock#lock() waiting and hand-off', () => {
  it('hands intent to waiters in FIFO order, taken before the promise resolves', async () => {
    const lock = newLock();
    const [a, b, c, d, e] = [1, 2, 3, 4, 5].map(owner) as [SixLockOwner, SixLockOwner, SixLockOwner, SixLockOwner, SixLockOwner];
    lock.tryLock(intent, a);
    const order: number[] = [];
    const waits = [b, c, d].map((o) => lock.lock(intent, o).then((r) => (order.push(o.ownerId), r)));
    expect(lock.waiters.map((w) => w.owner.ownerId)).toEqual([2, 3, 4]);
    expect(lock.counters.contended[intent]).toBe(3);

    lock.unlock(intent, a);
    expect(lock.intentOwner).toBe(b); /* hand-off: nobody can steal it */
    expect(lock.tryLock(intent, e)).toBe(false);
    await flush();
    expect(order).toEqual([2]);
    lock.unlock(intent, b);
    expect(lock.intentOwner).toBe(c);
    lock.unlock(intent, c);
    expect(lock.intentOwner).toBe(d);
    await Promise.all(waits);
    expect(order).toEqual([2, 3, 4]);
    lock.unlock(intent, d);
    expect(lock.counts()).toEqual({ read: 0, intent: 0, write: 0 });
    expect(lock.waiters.length).toBe(0);
  });

  it('a pending writer blocks new readers; the writer is handed write when the last reader leaves', async () => {
    const lock = newLock();
    const w = owner(1);
    const r1 = owner(2);
    const r2 = owner(3);
    lock.tryLock(read, r1);
    lock.tryLock(intent, w);
    const pw = lock.lock(write, w);
    expect(lock.writeHeld).toBe(false);
    expect(lock.tryLock(read, r2)).toBe(false);
    const pr = lock.lock(read, r2);
    expect(lock.waiters.map((x) => x.type)).toEqual([write, read]);

    const seq = lock.seq;
    lock.unlock(read, r1);
    expect(lock.writeHeld).toBe(true);
    expect(lock.seq).toBe(seq + 1);
    expect(lock.readCountOf(r2)).toBe(0);
    expect(await pw).toBe(0);

    lock.unlock(write, w);
    expect(lock.readCountOf(r2)).toBe(1);
    expect(await pr).toBe(0);
  });

  it('wakes all waiting readers together when write is released', async () => {
    const lock = newLock();
    const w = owner(1);
    lock.tryLock(intent, w);
    lock.tryLock(write, w);
    const readers = [2, 3, 4, 5].map(owner);
    const ps = readers.map((r) => lock.lock(read, r));
    const pi = lock.lock(intent, owner(6));
    expect(lock.waiters.length).toBe(5);
    lock.unlock(write, w);
    expect(lock.readCount).toBe(4);
    expect(lock.waiters.map((x) => x.type)).toEqual([intent]);
    expect(await Promise.all(ps)).toEqual([0, 0, 0, 0]);
    lock.unlock(intent, w);
    expect(await pi).toBe(0);
  });

  it('abortWait resolves the wait with the code and removes the waiter', async () => {
    const lock = newLock();
    const a = owner(1);
    const b = owner(2);
    const c = owner(3);
    lock.tryLock(intent, a);
    const pb = lock.lock(intent, b);
    const pc = lock.lock(intent, c);
    const wb = lock.waiters[0]!;
    expect(lock.abortWait(wb, 42)).toBe(true);
    expect(wb.state).toBe(SixWaitState.aborted);
    expect(lock.abortWait(wb, 42)).toBe(false);
    expect(await pb).toBe(42);
    lock.unlock(intent, a);
    expect(lock.intentOwner).toBe(c);
    expect(await pc).toBe(0);
    expect(lock.counters.waitAborted[intent]).toBe(1);
  });

  it('aborting a pending writer lets the queued readers in', async () => {
    const lock = newLock();
    const w = owner(1);
    const r1 = owner(2);
    const r2 = owner(3);
    lock.tryLock(read, r1);
    lock.tryLock(intent, w);
    const pw = lock.lock(write, w);
    const pr = lock.lock(read, r2);
    lock.abortWait(lock.waiters[0]!, 7);
    expect(lock.readCountOf(r2)).toBe(1);
    expect(await pw).toBe(7);
    expect(await pr).toBe(0);
    expect(lock.writeHeld).toBe(false);
  });

  it('shouldSleep can abort the wait before anyone waits', async () => {
    const lock = newLock();
    const a = owner(1);
    const b = owner(2);
    lock.tryLock(intent, a);
    let seen = 0;
    const p = lock.lock(intent, b, (w) => {
      seen = w.owner.ownerId;
      return 9;
    });
    expect(seen).toBe(2);
    expect(lock.waiters.length).toBe(0);
    expect(await p).toBe(9);
  });

  it('asserts on waits that could never end', () => {
    const lock = newLock();
    const a = owner(1);
    lock.tryLock(intent, a);
    expect(() => lock.lock(intent, a)).toThrow(/increment/);
    lock.tryLock(write, a);
    expect(() => lock.lock(read, a)).toThrow(/while holding write/);
  });

  it('uncontended lock() returns one shared resolved promise', async () => {
    const lock = newLock();
    const a = owner(1);
    const p1 = lock.lock(read, a);
    const p2 = lock.lock(read, a);
    expect(p1).toBe(p2);
    expect(await p1).toBe(0);
    expect(lock.counters.acquired[read]).toBe(2);
    expect(lock.counters.contended[read]).toBe(0);
  });
});

describe('SixLock#toText()', () => {
  it('prints state, seq, holders and waiters', () => {
    const lock = newLock();
    const a = owner(1);
    lock.tryLock(read, a);
    lock.tryLock(intent, owner(2));
    void lock.lock(intent, owner(3));
    const t = lock.toText();
    expect(t).toContain('intent locked, seq 0');
    expect(t).toContain('owner#1 read x1');
    expect(t).toContain('owner#2 intent x1');
    expect(t).toContain('waiters: owner#3 intent');
    expect(lock.counters.toText()).toContain('contended_intent');
  });
});
