// SPDX-License-Identifier: GPL-2.0-only
/*
 * Six locks: shared / intent / exclusive locks with a sequence number, for one
 * Node process where "threads" are async transactions interleaving at `await`
 * (bcachefs fs/util/six.c, translated; no percpu reader mode, no spinning).
 *
 * What this file owns
 *   SixLock: the lock state, its holders (who holds which type how many times),
 *   its wait list, hand-off to waiters and abort of waits. It knows nothing about
 *   transactions or deadlocks: src/btree/locking.ts runs the cycle check through
 *   the `shouldSleep` hook of lock() and aborts victims with abortWait().
 *
 * Lock types and compatibility (held -> wanted, any owners)
 *              read   intent   write
 *   read        ok     ok      blocks (until every read hold is gone)
 *   intent      ok    blocks   --     (write needs intent held by the same owner)
 *   write     blocks  blocks  blocks
 *   The same owner is no exception: a second intent is taken with increment(),
 *   and an owner's own read holds block its write unless it subtracted them with
 *   readerCountAdjust() first (bcachefs six_lock_readers_add).
 *
 * Invariants (asserted where cheap)
 *   - writeHeld implies intentOwner !== null: write is taken only by the intent
 *     holder, and intent cannot be released while write is held.
 *   - writeHeld implies readCount === 0 at the moment write was taken; reads may
 *     be added back afterwards only by the writer itself (readerCountAdjust).
 *   - readCount === sum of readOwnerCounts[0 .. readOwnersNr).
 *   - At most one write waiter (it must be the intent holder), and while one is
 *     queued new readers fail (bcachefs's unfair rule: the pending writer has
 *     set SIX_LOCK_HELD_write already, so readers cannot starve it).
 *   - The wait list never holds a waiter whose lock is takeable: every release
 *     hands the lock straight to the waiters it unblocks.
 *
 * Sequence number
 *   seq is bumped when write is taken and when it is released: odd while
 *   write-locked. relock(type, seq) succeeds only if seq is unchanged (nothing
 *   was written since it was read) and the lock is takeable now, without waiting.
 *
 * Waiter state machine (SixLockWaiter.state)
 *   waiting --grant (hand-off: lock taken for it, then resolve(0))--> acquired
 *   waiting --abortWait(code) (removed, resolve(code))------------> aborted
 *   Release order: intent goes to the first intent waiter (FIFO); write goes to
 *   the single write waiter once the last read hold is gone; when write is
 *   released (or a pending writer aborts) every read waiter is granted at once.
 *
 * Performance
 *   tryLock/unlock/relock/increment never allocate: holders live in arrays
 *   reused across acquisitions, counters in typed arrays. lock() returns a
 *   shared, already resolved promise when the trylock succeeds; only the
 *   contended path creates a waiter and a promise.
 *
 * Kernel mechanisms not carried over: wait_lock spinlock, memory barriers, RCU
 * wait fifo and percpu reader counts are not needed in one JS thread; optimistic
 * spinning has nothing to spin on. bcachefs wakes the oldest intent waiter; here
 * intent waiters are served FIFO, deadlocks are broken by locking.ts instead.
 */

import { Printbuf } from './printbuf.js';

/** Anything that can hold a six lock: a transaction, a test actor. */
export interface SixLockOwner {
  readonly ownerId: number;
}

/* Lock types: one table, the names and numbers derive from it. */
export const SIX_LOCK_TYPE_NAMES = ['read', 'intent', 'write'] as const;
export type SixLockTypeName = (typeof SIX_LOCK_TYPE_NAMES)[number];
export const SixLockType = Object.freeze({ read: 0, intent: 1, write: 2 } as const);
export type SixLockType = (typeof SixLockType)[SixLockTypeName];
const READ = SixLockType.read;
const INTENT = SixLockType.intent;
const WRITE = SixLockType.write;

export function sixLockTypeName(type: number): string {
  return SIX_LOCK_TYPE_NAMES[type] ?? `type_${type}`;
}

/* Waiter states: one table. */
export const SIX_WAIT_STATE_NAMES = ['waiting', 'acquired', 'aborted'] as const;
export const SixWaitState = Object.freeze({ waiting: 0, acquired: 1, aborted: 2 } as const);
export type SixWaitState = (typeof SixWaitState)[(typeof SIX_WAIT_STATE_NAMES)[number]];

/**
 * Called by lock() after the waiter is queued and before anyone waits on it
 * (bcachefs six_lock_should_sleep_fn). A non-zero return aborts the wait: the
 * waiter is removed and lock() resolves with that code.
 */
export type SixLockShouldSleepFn = (waiter: SixLockWaiter) => number;

/** Resolved value of lock() when the lock was taken. */
export const SIX_LOCK_OK = 0;
/** Shared promise returned by lock() on the uncontended path: no allocation. */
const sixLockAcquiredPromise: Promise<number> = Promise.resolve(SIX_LOCK_OK);

/* ---------------------------------------------------------------------------
 * Counters: one object shared by many locks (a store passes its own; the
 * default is process-wide). Typed arrays indexed by lock type.
 */
export class SixLockCounters {
  /** Successful acquisitions per type: trylock, relock, increment, upgrade, hand-off. */
  readonly acquired = new Float64Array(3);
  /** lock() calls that had to queue, per type. */
  readonly contended = new Float64Array(3);
  /** Waits ended by abortWait() (deadlock victims, callers giving up), per type. */
  readonly waitAborted = new Float64Array(3);
  relockFail = 0;
  upgradeFail = 0;

  reset(): void {
    this.acquired.fill(0);
    this.contended.fill(0);
    this.waitAborted.fill(0);
    this.relockFail = 0;
    this.upgradeFail = 0;
  }

  /** Flat snapshot for stats(): acquired_read, contended_intent, relock_fail... */
  toObject(): Record<string, number> {
    const o: Record<string, number> = {};
    for (let t = 0; t < 3; t++) {
      const name = SIX_LOCK_TYPE_NAMES[t]!;
      o[`acquired_${name}`] = this.acquired[t]!;
      o[`contended_${name}`] = this.contended[t]!;
      o[`wait_aborted_${name}`] = this.waitAborted[t]!;
    }
    o['relock_fail'] = this.relockFail;
    o['upgrade_fail'] = this.upgradeFail;
    return o;
  }

  toText(out: Printbuf = new Printbuf()): string {
    for (const [k, v] of Object.entries(this.toObject())) out.field(k, v);
    return out.toString();
  }
}

/** Default counters for locks created without their own. */
export const sixLockCountersGlobal = new SixLockCounters();

/* ---------------------------------------------------------------------------
 * Waiter: one per contended lock() call.
 */
export class SixLockWaiter {
  state: SixWaitState = SixWaitState.waiting;
  /** Set by lock() right after construction (the promise executor runs synchronously). */
  resolve: (code: number) => void = noopResolve;

  constructor(
    readonly lock: SixLock,
    readonly owner: SixLockOwner,
    readonly type: SixLockType,
  ) {}

  toText(): string {
    return `owner#${this.owner.ownerId} wants ${sixLockTypeName(this.type)} (${SIX_WAIT_STATE_NAMES[this.state]})`;
  }
}

function noopResolve(_code: number): void {}

function sixBug(msg: string): never {
  throw new Error(`six lock: ${msg}`);
}

/* ---------------------------------------------------------------------------
 * The lock.
 */
export class SixLock {
  /** Bumped on write lock and on write unlock: odd while write-locked. */
  seq = 0;
  /** Total read holds, after readerCountAdjust(). */
  readCount = 0;
  /** Intent recursion depth (0 = not held). */
  intentCount = 0;
  intentOwner: SixLockOwner | null = null;
  writeHeld = false;

  /* Read holders: parallel arrays, entries [0, readOwnersNr) live, reused. */
  private readOwners: (SixLockOwner | null)[] = [];
  private readOwnerCounts: number[] = [];
  private readOwnersNr = 0;

  /* Wait list in arrival order; writeWaiter is also in it. */
  private waitList: SixLockWaiter[] = [];
  private writeWaiter: SixLockWaiter | null = null;

  readonly counters: SixLockCounters;

  constructor(counters: SixLockCounters = sixLockCountersGlobal) {
    this.counters = counters;
  }

  /* ---- trylock ----------------------------------------------------------- */

  /**
   * Take `type` now or return false; never waits, never allocates.
   * write asserts that `owner` holds intent.
   */
  tryLock(type: SixLockType, owner: SixLockOwner): boolean {
    switch (type) {
      case READ:
        if (this.writeHeld || this.writeWaiter !== null) return false;
        this.readAdd(owner, 1);
        break;
      case INTENT:
        if (this.intentOwner !== null) return false;
        this.intentOwner = owner;
        this.intentCount = 1;
        break;
      case WRITE:
        if (this.intentOwner !== owner) sixBug(`write lock by owner#${owner.ownerId} without intent`);
        if (this.writeHeld || this.readCount !== 0 || this.writeWaiter !== null) return false;
        this.writeHeld = true;
        this.seq++;
        break;
      default:
        sixBug(`bad lock type ${type}`);
    }
    this.counters.acquired[type]!++;
    return true;
  }

  /* ---- lock (may wait) --------------------------------------------------- */

  /**
   * Take `type`, waiting if needed. Resolves 0 once the lock is held (it is
   * taken for the waiter before the promise resolves), or with the code of
   * whoever aborted the wait (shouldSleep's return or abortWait()).
   */
  lock(type: SixLockType, owner: SixLockOwner, shouldSleep?: SixLockShouldSleepFn): Promise<number> {
    if (this.tryLock(type, owner)) return sixLockAcquiredPromise;
    return this.lockSlowpath(type, owner, shouldSleep);
  }

  /** The contended half of lock(): the caller's trylock just failed. */
  lockSlowpath(type: SixLockType, owner: SixLockOwner, shouldSleep?: SixLockShouldSleepFn): Promise<number> {
    /* Waits that could never end: the owner would wait on itself. */
    if (type === INTENT && this.intentOwner === owner) sixBug(`owner#${owner.ownerId} waits for intent it holds; use increment()`);
    if (type === READ && this.writeHeld && this.intentOwner === owner) sixBug(`owner#${owner.ownerId} waits for read while holding write`);
    if (type === WRITE && this.writeHeld) sixBug(`owner#${owner.ownerId} waits for write it holds`);

    this.counters.contended[type]!++;
    const w = new SixLockWaiter(this, owner, type);
    const p = new Promise<number>((resolve) => {
      w.resolve = resolve;
    });
    this.waitList.push(w);
    if (type === WRITE) this.writeWaiter = w;

    if (shouldSleep !== undefined) {
      const ret = shouldSleep(w);
      if (ret !== 0) this.abortWait(w, ret);
    }
    return p;
  }

  /**
   * End a pending wait: remove the waiter, resolve its lock() with `code`.
   * Returns false if the waiter was already granted or aborted. Removing a
   * pending writer lets the queued readers in.
   */
  abortWait(w: SixLockWaiter, code: number): boolean {
    if (w.state !== SixWaitState.waiting || w.lock !== this) return false;
    if (code === 0) sixBug('abortWait with code 0');
    const i = this.waitList.indexOf(w);
    if (i < 0) sixBug('waiter not on wait list');
    this.waitList.splice(i, 1);
    w.state = SixWaitState.aborted;
    this.counters.waitAborted[w.type]!++;
    if (w === this.writeWaiter) {
      this.writeWaiter = null;
      if (!this.writeHeld) this.wakeReaders();
    }
    w.resolve(code);
    return true;
  }

  /* ---- unlock ------------------------------------------------------------ */

  unlock(type: SixLockType, owner: SixLockOwner): void {
    switch (type) {
      case READ:
        this.readSub(owner, 1);
        if (this.readCount === 0 && this.writeWaiter !== null) this.grantWrite();
        return;
      case INTENT:
        if (this.intentOwner !== owner) sixBug(`intent unlock by owner#${owner.ownerId}, held by ${ownerName(this.intentOwner)}`);
        if (this.intentCount > 1) {
          this.intentCount--;
          return;
        }
        if (this.writeHeld) sixBug(`intent unlock by owner#${owner.ownerId} while write locked`);
        this.intentOwner = null;
        this.intentCount = 0;
        if (this.waitList.length !== 0) this.wakeIntent();
        return;
      case WRITE:
        if (!this.writeHeld || this.intentOwner !== owner) sixBug(`write unlock by owner#${owner.ownerId}, not the writer`);
        this.writeHeld = false;
        this.seq++;
        if (this.waitList.length !== 0) this.wakeReaders();
        return;
      default:
        sixBug(`bad lock type ${type}`);
    }
  }

  /* ---- relock, upgrade, downgrade, recursion ----------------------------- */

  /**
   * Retake `type` if nothing was write-locked since `seq` was read and the
   * lock is takeable now (bcachefs six_relock_type). Never waits.
   */
  relock(type: SixLockType, seq: number, owner: SixLockOwner): boolean {
    if (this.seq === seq && this.tryLock(type, owner)) return true;
    this.counters.relockFail++;
    return false;
  }

  /** read -> intent, if nobody holds intent. One of the owner's read holds becomes the intent hold. */
  tryUpgrade(owner: SixLockOwner): boolean {
    if (this.intentOwner !== null) {
      this.counters.upgradeFail++;
      return false;
    }
    this.readSub(owner, 1);
    this.intentOwner = owner;
    this.intentCount = 1;
    this.counters.acquired[INTENT]!++;
    return true;
  }

  /** intent -> read (bcachefs six_lock_downgrade: increment read, unlock intent). */
  downgrade(owner: SixLockOwner): void {
    this.increment(READ, owner);
    this.unlock(INTENT, owner);
  }

  /** read <-> intent; same type is a no-op. Returns false only for a failed upgrade. */
  tryConvert(from: SixLockType, to: SixLockType, owner: SixLockOwner): boolean {
    if (from === to) return true;
    if (from === READ && to === INTENT) return this.tryUpgrade(owner);
    if (from === INTENT && to === READ) {
      this.downgrade(owner);
      return true;
    }
    sixBug(`cannot convert ${sixLockTypeName(from)} to ${sixLockTypeName(to)}`);
  }

  /**
   * Take another hold of a lock the owner already has (bcachefs
   * six_lock_increment): read needs a read or intent hold, intent needs the
   * intent hold. Ignores waiters: a pending writer does not block it.
   */
  increment(type: SixLockType, owner: SixLockOwner): void {
    if (type === READ) {
      if (this.writeHeld) sixBug(`read increment by owner#${owner.ownerId} while write locked`);
      if (this.intentOwner !== owner && this.readCountOf(owner) === 0) sixBug(`read increment by owner#${owner.ownerId} holding nothing`);
      this.readAdd(owner, 1);
    } else if (type === INTENT) {
      if (this.intentOwner !== owner) sixBug(`intent increment by owner#${owner.ownerId}, held by ${ownerName(this.intentOwner)}`);
      this.intentCount++;
    } else {
      sixBug('write locks do not recurse');
    }
    this.counters.acquired[type]!++;
  }

  /**
   * Add `delta` (may be negative) to the owner's read holds (bcachefs
   * six_lock_readers_add). A writer subtracts its own reads before taking
   * write and adds them back after; the holds stay the owner's throughout.
   */
  readerCountAdjust(owner: SixLockOwner, delta: number): void {
    if (delta > 0) this.readAdd(owner, delta);
    else if (delta < 0) {
      this.readSub(owner, -delta);
      if (this.readCount === 0 && this.writeWaiter !== null) this.grantWrite();
    }
  }

  /* ---- queries ----------------------------------------------------------- */

  /** Read holds of `owner` (0 if none). */
  readCountOf(owner: SixLockOwner): number {
    const owners = this.readOwners;
    for (let i = 0; i < this.readOwnersNr; i++) if (owners[i] === owner) return this.readOwnerCounts[i]!;
    return 0;
  }

  /** Holds of `type` by `owner`: read count, intent recursion, write 0/1. */
  heldBy(type: SixLockType, owner: SixLockOwner): number {
    if (type === READ) return this.readCountOf(owner);
    if (this.intentOwner !== owner) return 0;
    return type === INTENT ? this.intentCount : this.writeHeld ? 1 : 0;
  }

  counts(): { read: number; intent: number; write: number } {
    return { read: this.readCount, intent: this.intentCount, write: this.writeHeld ? 1 : 0 };
  }

  /** Every hold: owner, type, count (debugging, allocates). */
  holders(): { owner: SixLockOwner; type: SixLockType; count: number }[] {
    const out: { owner: SixLockOwner; type: SixLockType; count: number }[] = [];
    for (let i = 0; i < this.readOwnersNr; i++) out.push({ owner: this.readOwners[i]!, type: READ, count: this.readOwnerCounts[i]! });
    if (this.intentOwner !== null) {
      out.push({ owner: this.intentOwner, type: INTENT, count: this.intentCount });
      if (this.writeHeld) out.push({ owner: this.intentOwner, type: WRITE, count: 1 });
    }
    return out;
  }

  /** Pending waiters in arrival order. */
  get waiters(): readonly SixLockWaiter[] {
    return this.waitList;
  }

  /**
   * Owners a pending waiter is waiting for: the edges of the waits-for graph.
   * read waits for the writer (holding or pending); intent for the intent
   * holder; write for every read holder (its own unadjusted reads included).
   * FIFO order adds no edges that matter: waiters ahead in the queue wait for
   * the same holder.
   */
  waiterBlockers(w: SixLockWaiter, out: SixLockOwner[]): void {
    if (w.state !== SixWaitState.waiting) return;
    switch (w.type) {
      case READ:
        if (this.writeHeld && this.intentOwner !== null) out.push(this.intentOwner);
        else if (this.writeWaiter !== null) out.push(this.writeWaiter.owner);
        return;
      case INTENT:
        if (this.intentOwner !== null) out.push(this.intentOwner);
        return;
      case WRITE:
        for (let i = 0; i < this.readOwnersNr; i++) out.push(this.readOwners[i]!);
        return;
    }
  }

  toText(out: Printbuf = new Printbuf()): string {
    const state = this.writeHeld ? 'write locked' : this.intentOwner !== null ? 'intent locked' : this.readCount !== 0 ? 'read locked' : 'unlocked';
    out.line(`six lock: ${state}, seq ${this.seq}, read ${this.readCount} intent ${this.intentCount} write ${this.writeHeld ? 1 : 0}`);
    out.nested((o) => {
      const h = this.holders();
      o.line(`holders: ${h.length === 0 ? 'none' : h.map((x) => `owner#${x.owner.ownerId} ${sixLockTypeName(x.type)} x${x.count}`).join(', ')}`);
      const w = this.waitList;
      o.line(`waiters: ${w.length === 0 ? 'none' : w.map((x) => `owner#${x.owner.ownerId} ${sixLockTypeName(x.type)}`).join(', ')}`);
    });
    return out.toString();
  }

  /* ---- internals --------------------------------------------------------- */

  private readAdd(owner: SixLockOwner, n: number): void {
    const owners = this.readOwners;
    const nr = this.readOwnersNr;
    for (let i = 0; i < nr; i++) {
      if (owners[i] === owner) {
        this.readOwnerCounts[i]! += n;
        this.readCount += n;
        return;
      }
    }
    owners[nr] = owner;
    this.readOwnerCounts[nr] = n;
    this.readOwnersNr = nr + 1;
    this.readCount += n;
  }

  private readSub(owner: SixLockOwner, n: number): void {
    const owners = this.readOwners;
    const counts = this.readOwnerCounts;
    const nr = this.readOwnersNr;
    for (let i = 0; i < nr; i++) {
      if (owners[i] !== owner) continue;
      const left = counts[i]! - n;
      if (left < 0) break;
      this.readCount -= n;
      if (left > 0) {
        counts[i] = left;
      } else {
        /* swap-remove; keep the slot so the array never shrinks */
        owners[i] = owners[nr - 1]!;
        counts[i] = counts[nr - 1]!;
        owners[nr - 1] = null;
        counts[nr - 1] = 0;
        this.readOwnersNr = nr - 1;
      }
      return;
    }
    sixBug(`read unlock by owner#${owner.ownerId}: holds ${this.readCountOf(owner)}, releasing ${n}`);
  }

  private grant(w: SixLockWaiter): void {
    w.state = SixWaitState.acquired;
    this.counters.acquired[w.type]!++;
    w.resolve(SIX_LOCK_OK);
  }

  /** Last read hold gone: the pending writer gets write. */
  private grantWrite(): void {
    const w = this.writeWaiter!;
    this.writeWaiter = null;
    this.waitList.splice(this.waitList.indexOf(w), 1);
    this.writeHeld = true;
    this.seq++;
    this.grant(w);
  }

  /** Intent released: hand it to the first intent waiter. */
  private wakeIntent(): void {
    const list = this.waitList;
    for (let i = 0; i < list.length; i++) {
      const w = list[i]!;
      if (w.type !== INTENT) continue;
      list.splice(i, 1);
      this.intentOwner = w.owner;
      this.intentCount = 1;
      this.grant(w);
      return;
    }
  }

  /** No writer holding or pending: every queued reader gets read, together. */
  private wakeReaders(): void {
    if (this.writeHeld || this.writeWaiter !== null) return;
    const list = this.waitList;
    let j = 0;
    for (let i = 0; i < list.length; i++) {
      const w = list[i]!;
      if (w.type === READ) {
        this.readAdd(w.owner, 1);
        this.grant(w);
      } else {
        list[j++] = w;
      }
    }
    list.length = j;
  }
}

function ownerName(o: SixLockOwner | null): string {
  return o === null ? 'nobody' : `owner#${o.ownerId}`;
}
