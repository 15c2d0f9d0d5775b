// SPDX-License-Identifier: GPL-2.0-only
/*
 * Btree node locking for transactions, and deadlock avoidance by cycle
 * detection (bcachefs fs/btree/locking.c, translated).
 *
 * What this file owns
 *   - LockOwner: what a transaction must carry to take node locks (id, start
 *     seq, the wait it is blocked in, the locks it holds).
 *   - nodeLock / nodeRelock / nodeUnlock / nodeLockWrite / nodeUnlockAll: every
 *     node lock a transaction takes goes through these, so LocksHeld is exact
 *     and restart can drop everything.
 *   - The waits-for graph walk run before any wait (checkForDeadlock), victim
 *     choice, and one counter per restart reason.
 *
 * Waits-for graph
 *   Vertices are owners; a pending waiter has an edge to each owner it waits
 *   for (SixLock.waiterBlockers: the writer for a reader, the intent holder for
 *   an intent waiter, every reader for a writer). Only waiting owners have
 *   out-edges. A transaction about to wait walks depth-first from itself,
 *   depth bounded by lockGraphDepthMax (8, bcachefs's lock_graph size):
 *     - an owner already on the walk's stack closes a cycle: the youngest
 *       owner in the cycle (largest startSeq, then largest ownerId) is the
 *       victim; if that is the caller it gets the restart code and never
 *       sleeps, otherwise the victim's wait is aborted (its lock() resolves
 *       with the code, restartPending is set) and the walk is repeated;
 *     - a chain deeper than the bound is treated as a cycle over the chain
 *       (transaction_restart_deadlock_recursion_limit), as bcachefs does.
 *   The oldest transaction alive is never a victim (except to the one
 *   holding the starvation gate, which never is while another owner of the
 *   cycle can be), and a restarting transaction keeps its startSeq, so every
 *   transaction eventually finishes.
 *
 * Why checking at wait time finds every cycle (one JS thread, no lost wakeups)
 *   The graph gains edges only when (a) an owner starts waiting: it runs the
 *   check itself, and any new cycle passes through it; or (b) a lock is granted,
 *   a reader count is added back, or a hold is incremented: the owner gaining
 *   the hold is running, not waiting, so it has no out-edges; a cycle through
 *   it can only close when it later waits, and then (a) applies. Aborting a
 *   victim only removes edges. So between two checks the graph stays acyclic.
 *
 * Owner protocol
 *   - Transactions are sequential: an owner is in at most one wait.
 *   - waitingOn is set while a wait is pending; the waiter's own state says
 *     whether it is still pending, so a granted-but-not-yet-resumed owner is
 *     already "running" for the graph.
 *   - On any restart code the owner calls nodeUnlockAll() before retrying.
 *
 * Kernel mechanisms not carried over: per-cpu lock graph, RCU protection of
 * trans->paths, wake_up_process of victims, lock_may_not_fail. A victim here
 * is always blocked in lock(), so aborting its wait is the wakeup.
 */

import { ERR, RESTART, RESTART_CODES, errMatches, errName } from '../errors.js';
import { Printbuf } from '../util/printbuf.js';
import {
  SixLock,
  SixLockType,
  SixWaitState,
  sixLockTypeName,
  type SixLockOwner,
  type SixLockWaiter,
} from '../util/six.js';

const READ = SixLockType.read;
const INTENT = SixLockType.intent;
const WRITE = SixLockType.write;

/** Maximum depth of the waits-for walk (bcachefs: ARRAY_SIZE(lock_graph.g)). */
export const lockGraphDepthMax = 8;
/** Victims aborted by one check before the caller restarts itself instead: large, so the oldest transaction always wins (a pile of readers waiting on it is one victim each). */
export const deadlockAbortsMax = 4096;

/* ---------------------------------------------------------------------------
 * Owner.
 */

/** What a transaction implements to take node locks. */
export interface LockOwner extends SixLockOwner {
  readonly ownerId: number;
  /** Smaller is older. Kept across restarts, so a restarting transaction ages and wins. */
  readonly startSeq: number;
  /** The wait this owner is blocked in, if any (check waitingOn.state). */
  waitingOn: SixLockWaiter | null;
  /**
   * Optional: this owner holds the starvation gate (Engine.starvationGateClose):
   * it is never chosen as a deadlock victim while another owner of the cycle
   * or chain can be (the others restart and wait at the gate, so it runs alone).
   */
  runsAlone?(): boolean;
  /** Restart code set when chosen as a deadlock victim; cleared once delivered. */
  restartPending: number;
  /** Every node lock this owner holds, in acquisition order. */
  readonly locksHeld: LocksHeld;
  /**
   * Optional, for a wait that lasts (see LockWaitWatch): null, or the watch
   * that decides whether a wait is watched and checks it. The Store sets it
   * on its transactions.
   */
  waitWatch?: LockWaitWatch | null;
  /** A watched wait's epoch and index in locking.ts's list (watchIndex -1 or absent: none). */
  watchEpoch?: number;
  watchIndex?: number;
  toText(): string;
}

/**
 * A check for a lock wait that lasts (Store: a write made from inside a
 * transact() callback, waiting for the enclosing transaction). A wait begun
 * while active() is registered; one still pending after lockWaitWatchMs is
 * woken (its wait aborted with WAIT_CHECK, nothing else changes) so that
 * check() runs on the waiter's own async stack. Non-zero: the owner's lock
 * call returns that code. Zero: it waits again, at the back of the queue,
 * unwatched. Waits that end sooner cost a few field writes, no promise.
 */
export interface LockWaitWatch {
  active(): boolean;
  check(): number;
}

/** How long a watched wait lasts before its check: one to two of these (ms). */
export const lockWaitWatchMs = 250;
/** Aborts a watched wait for its check: never a restart code. */
const WAIT_CHECK = -0x7ffe;
/**
 * Watched waits: the owners waiting, each with the epoch its wait began in
 * (LockOwner.watchEpoch) and its index here (watchIndex; removal swaps the
 * last one in, so the array never holds an owner whose wait ended). The
 * timer advances the epoch every lockWaitWatchMs and wakes the waits begun
 * before its last tick. A wait costs a push, a swap and a few field writes:
 * no clock read, no Map (a Map churning through 64 waiters cost contended
 * read-modify-write 20% of its CPU, and so did an array that kept ended
 * waits' owners alive until the next tick).
 */
let watchEpoch = 1;
const watched: LockOwner[] = [];
let watchTimer: ReturnType<typeof setTimeout> | null = null;

function watchTimerArm(): void {
  if (watchTimer !== null) return;
  watchTimer = setTimeout(watchTimerFire, lockWaitWatchMs);
  watchTimer.unref?.();
}

function watchRemove(owner: LockOwner): void {
  const i = owner.watchIndex ?? -1;
  if (i < 0) return;
  const last = watched.pop()!;
  if (last !== owner) {
    watched[i] = last;
    last.watchIndex = i;
  }
  owner.watchIndex = -1;
}

function watchTimerFire(): void {
  watchTimer = null;
  const cur = watchEpoch++;
  for (let i = watched.length - 1; i >= 0; i--) {
    const owner = watched[i]!;
    if ((owner.watchEpoch ?? cur) >= cur) continue;
    watchRemove(owner);
    const w = owner.waitingOn;
    if (w !== null && w.state === SixWaitState.waiting) w.lock.abortWait(w, WAIT_CHECK);
  }
  if (watched.length > 0) watchTimerArm();
}

/**
 * Register the wait the owner just began, if its watch wants it (no
 * promise, no await: a wait costs the same microtasks watched or not).
 * True: once the wait resolves the caller ends it (watchRemove), and a
 * WAIT_CHECK result goes to lockWaitCheck().
 */
function lockWaitWatchBegin(owner: LockOwner): boolean {
  const watch = owner.waitWatch;
  if (!watch || !watch.active()) return false;
  const w = owner.waitingOn;
  if (w === null || w.state !== SixWaitState.waiting) return false;
  owner.watchEpoch = watchEpoch;
  owner.watchIndex = watched.length;
  watched.push(owner);
  watchTimerArm();
  return true;
}

/**
 * A watched wait was woken for its check (it resolved with WAIT_CHECK; the
 * caller has ended it): run the owner's check on its own stack, the
 * caller's. Non-zero is the lock call's result; zero waits again (again()
 * begins it), unwatched.
 */
async function lockWaitCheck(owner: LockOwner, again: () => Promise<number>): Promise<number> {
  const code = owner.waitWatch!.check();
  return code !== 0 ? code : await again();
}

/**
 * The locks an owner holds: (lock, type) pairs in acquisition order, one
 * entry per hold. Arrays are reused: adding and removing does not allocate
 * once they have grown.
 */
export class LocksHeld {
  private locks: (SixLock | null)[] = [];
  private types: SixLockType[] = [];
  nr = 0;

  add(lock: SixLock, type: SixLockType): void {
    this.locks[this.nr] = lock;
    this.types[this.nr] = type;
    this.nr++;
  }

  /** Remove the most recent (lock, type) hold; false if there is none. */
  remove(lock: SixLock, type: SixLockType): boolean {
    const i = this.find(lock, type);
    if (i < 0) return false;
    const nr = this.nr;
    for (let j = i + 1; j < nr; j++) {
      this.locks[j - 1] = this.locks[j]!;
      this.types[j - 1] = this.types[j]!;
    }
    this.locks[nr - 1] = null;
    this.nr = nr - 1;
    return true;
  }

  /** Change the most recent (lock, from) hold to `to`, keeping its place. */
  convert(lock: SixLock, from: SixLockType, to: SixLockType): void {
    const i = this.find(lock, from);
    if (i < 0) throw new Error(`locking: no ${sixLockTypeName(from)} hold to convert`);
    this.types[i] = to;
  }

  /** Holds of (lock, type). */
  count(lock: SixLock, type: SixLockType): number {
    let n = 0;
    for (let i = 0; i < this.nr; i++) if (this.locks[i] === lock && this.types[i] === type) n++;
    return n;
  }

  lockAt(i: number): SixLock {
    return this.locks[i]!;
  }

  typeAt(i: number): SixLockType {
    return this.types[i]!;
  }

  clear(): void {
    for (let i = 0; i < this.nr; i++) this.locks[i] = null;
    this.nr = 0;
  }

  toText(out: Printbuf = new Printbuf()): string {
    if (this.nr === 0) out.line('locks held: none');
    else {
      out.line(`locks held: ${this.nr}`);
      out.nested((o) => {
        for (let i = 0; i < this.nr; i++) o.line(`${sixLockTypeName(this.types[i]!)} seq ${this.locks[i]!.seq}`);
      });
    }
    return out.toString();
  }

  private find(lock: SixLock, type: SixLockType): number {
    for (let i = this.nr - 1; i >= 0; i--) if (this.locks[i] === lock && this.types[i] === type) return i;
    return -1;
  }
}

/** A plain LockOwner: the engine's transaction may extend it; tests and benches use it. */
export class LockOwnerBase implements LockOwner {
  waitingOn: SixLockWaiter | null = null;
  restartPending = 0;
  readonly locksHeld = new LocksHeld();

  constructor(
    readonly ownerId: number,
    public startSeq: number,
  ) {}

  toText(): string {
    return lockOwnerToText(this);
  }
}

export function lockOwnerToText(owner: LockOwner, out: Printbuf = new Printbuf()): string {
  out.line(`owner#${owner.ownerId} start seq ${owner.startSeq}`);
  out.nested((o) => {
    const w = owner.waitingOn;
    o.line(`waiting on: ${w !== null && w.state === SixWaitState.waiting ? `${sixLockTypeName(w.type)} (lock seq ${w.lock.seq})` : 'nothing'}`);
    if (owner.restartPending !== 0) o.line(`restart pending: ${errName(owner.restartPending)}`);
    owner.locksHeld.toText(o);
  });
  return out.toString();
}

/* ---------------------------------------------------------------------------
 * Counters: one per restart reason, plus the cycle detector's own.
 */
export class LockingCounters {
  /** Restarts delivered to owners, indexed by internal error code. */
  readonly restarts = new Float64Array(Math.max(...RESTART_CODES) + 1);
  graphWalks = 0;
  cyclesFound = 0;
  recursionLimitHits = 0;
  /** Victims other than the checking owner whose wait was aborted. */
  victimsAborted = 0;
  /** Text of the last cycle found, for debugging. */
  lastCycle = '';

  reset(): void {
    this.restarts.fill(0);
    this.graphWalks = 0;
    this.cyclesFound = 0;
    this.recursionLimitHits = 0;
    this.victimsAborted = 0;
    this.lastCycle = '';
  }

  /** Flat snapshot for stats(): restart_<reason> for every reason, then the detector's counters. */
  toObject(): Record<string, number> {
    const o: Record<string, number> = {};
    for (const c of RESTART_CODES) o[`restart_${errName(c).replace(/^transaction_restart_/, '')}`] = this.restarts[c]!;
    o['lock_graph_walks'] = this.graphWalks;
    o['lock_cycles_found'] = this.cyclesFound;
    o['lock_graph_recursion_limit'] = this.recursionLimitHits;
    o['lock_victims_aborted'] = this.victimsAborted;
    return o;
  }

  toText(out: Printbuf = new Printbuf()): string {
    for (const [k, v] of Object.entries(this.toObject())) if (v !== 0) out.field(k, v, 40);
    if (this.lastCycle !== '') out.line(`last cycle: ${this.lastCycle}`);
    return out.toString();
  }
}

export const lockingCounters = new LockingCounters();

/** Count a restart by reason and return its code: `return countRestart(ERR.transaction_restart_relock_path)`. */
export function countRestart(code: number): number {
  if (!errMatches(code, RESTART)) throw new Error(`locking: ${errName(code)} is not a restart`);
  lockingCounters.restarts[code]!++;
  return code;
}

/* ---------------------------------------------------------------------------
 * Locking.
 */

const lockOkPromise: Promise<number> = Promise.resolve(0);

/**
 * Take another hold of a lock the owner already holds, if the wanted type
 * allows it (bcachefs btree_node_lock_increment): read under own read or
 * intent, intent under own intent. Ignores a pending writer, which is what
 * keeps an owner from waiting behind a writer that waits for the owner.
 */
function nodeLockIncrement(owner: LockOwner, lock: SixLock, type: SixLockType): boolean {
  if (type === READ) {
    if (lock.writeHeld || (lock.intentOwner !== owner && lock.readCountOf(owner) === 0)) return false;
  } else if (type !== INTENT || lock.intentOwner !== owner) {
    return false;
  }
  lock.increment(type, owner);
  return true;
}

/** Take `type` on a node now, or return false. Never waits, never allocates. */
export function nodeTryLock(owner: LockOwner, lock: SixLock, type: SixLockType): boolean {
  if (type === WRITE) return nodeTryLockWrite(owner, lock);
  if (!lock.tryLock(type, owner) && !nodeLockIncrement(owner, lock, type)) return false;
  owner.locksHeld.add(lock, type);
  return true;
}

/**
 * Lock a node (bcachefs btree_node_lock): trylock or increment; otherwise
 * check for deadlock and wait. Resolves 0 with the lock held, or a restart
 * code (the caller then drops everything with nodeUnlockAll and restarts).
 * The uncontended path returns a shared resolved promise: no allocation.
 */
export function nodeLock(owner: LockOwner, lock: SixLock, type: SixLockType): Promise<number> {
  if (type === WRITE) return nodeLockWrite(owner, lock);
  if (nodeTryLock(owner, lock, type)) return lockOkPromise;
  return nodeLockWait(owner, lock, type);
}

/**
 * The contended half of nodeLock and nodeLockWrite: wait (watched if the
 * owner's watch wants it), then record the hold. A write lock first
 * discounts the owner's own read holds (they must not block it) and tries
 * again before queueing (lock(): its reads may have been all that was in
 * the way); read and intent come here right after a failed trylock.
 */
async function nodeLockWait(owner: LockOwner, lock: SixLock, type: SixLockType): Promise<number> {
  const n = type === WRITE ? lock.readCountOf(owner) : 0;
  if (n !== 0) lock.readerCountAdjust(owner, -n);
  const wait = type === WRITE ? lock.lock(WRITE, owner, nodeLockShouldSleep) : lock.lockSlowpath(type, owner, nodeLockShouldSleep);
  const watched = lockWaitWatchBegin(owner);
  let ret = await wait;
  if (watched) {
    watchRemove(owner);
    // (lock(), not lockSlowpath(): the lock may be free by now)
    if (ret === WAIT_CHECK) ret = await lockWaitCheck(owner, () => lock.lock(type, owner, nodeLockShouldSleep));
  }
  if (n !== 0) lock.readerCountAdjust(owner, n);
  return nodeLockFinish(owner, lock, type, ret);
}

function nodeLockShouldSleep(w: SixLockWaiter): number {
  const owner = w.owner as LockOwner;
  owner.waitingOn = w;
  return checkForDeadlock(owner);
}

function nodeLockFinish(owner: LockOwner, lock: SixLock, type: SixLockType, ret: number): number {
  owner.waitingOn = null;
  if (ret === 0) {
    owner.locksHeld.add(lock, type);
    return 0;
  }
  owner.restartPending = 0;
  return countRestart(ret);
}

/**
 * Retake a node lock dropped earlier, if the node was not write-locked since
 * `seq` was read and the lock is takeable without waiting (bcachefs
 * btree_node_relock). False means: the node changed or is busy; restart.
 */
export function nodeRelock(owner: LockOwner, lock: SixLock, type: SixLockType, seq: number): boolean {
  if (type === WRITE) throw new Error('locking: write locks are not relocked; relock intent, then nodeLockWrite');
  if (lock.seq === seq && (lock.tryLock(type, owner) || nodeLockIncrement(owner, lock, type))) {
    owner.locksHeld.add(lock, type);
    return true;
  }
  lock.counters.relockFail++;
  return false;
}

/** Drop one hold of `type` on a node. */
export function nodeUnlock(owner: LockOwner, lock: SixLock, type: SixLockType): void {
  if (!owner.locksHeld.remove(lock, type)) throw new Error(`locking: owner#${owner.ownerId} does not hold ${sixLockTypeName(type)}`);
  lock.unlock(type, owner);
}

/**
 * One of the owner's read holds on the node becomes intent, without waiting
 * (bcachefs btree_node_upgrade). If the owner already holds intent through
 * another path, the intent hold is incremented. False: someone else holds
 * intent; the caller restarts with transaction_restart_upgrade.
 */
export function nodeTryUpgrade(owner: LockOwner, lock: SixLock): boolean {
  if (lock.intentOwner === owner) {
    lock.increment(INTENT, owner);
    lock.unlock(READ, owner);
  } else if (!lock.tryUpgrade(owner)) {
    return false;
  }
  owner.locksHeld.convert(lock, READ, INTENT);
  return true;
}

/** One intent hold becomes a read hold. */
export function nodeDowngrade(owner: LockOwner, lock: SixLock): void {
  lock.downgrade(owner);
  owner.locksHeld.convert(lock, INTENT, READ);
}

/**
 * Write-lock a node whose intent lock the owner holds, now or never. The
 * owner's own read holds (other paths on the same node) are subtracted for
 * the attempt and added back after (bcachefs six_lock_readers_add).
 */
export function nodeTryLockWrite(owner: LockOwner, lock: SixLock): boolean {
  const n = lock.readCountOf(owner);
  if (n !== 0) lock.readerCountAdjust(owner, -n);
  const ok = lock.tryLock(WRITE, owner);
  if (n !== 0) lock.readerCountAdjust(owner, n);
  if (ok) owner.locksHeld.add(lock, WRITE);
  return ok;
}

/**
 * Write-lock a node whose intent lock the owner holds (bcachefs
 * btree_node_lock_write): waits for other readers to leave, with the deadlock
 * check. Resolves 0 with write held, or a restart code
 * (transaction_restart_would_deadlock_write when this owner is the victim).
 * The caller must not await between 0 and nodeUnlockWrite().
 */
export function nodeLockWrite(owner: LockOwner, lock: SixLock): Promise<number> {
  if (nodeTryLockWrite(owner, lock)) return lockOkPromise;
  return nodeLockWait(owner, lock, WRITE);
}

/** Release write; intent stays. The node's seq moved: paths must save lock.seq again. */
export function nodeUnlockWrite(owner: LockOwner, lock: SixLock): void {
  nodeUnlock(owner, lock, WRITE);
}

/**
 * Drop every node lock the owner holds, newest first (so write goes before
 * the intent under it), and clear restartPending: the first step of a restart.
 */
export function nodeUnlockAll(owner: LockOwner, keep?: ReadonlySet<SixLock>): void {
  const held = owner.locksHeld;
  if (keep === undefined) {
    for (let i = held.nr - 1; i >= 0; i--) held.lockAt(i).unlock(held.typeAt(i), owner);
    held.clear();
  } else {
    const kept: Array<[SixLock, SixLockType]> = [];
    for (let i = held.nr - 1; i >= 0; i--) {
      const lock = held.lockAt(i);
      if (keep.has(lock)) kept.push([lock, held.typeAt(i)]);
      else lock.unlock(held.typeAt(i), owner);
    }
    held.clear();
    for (let i = kept.length - 1; i >= 0; i--) held.add(kept[i]![0], kept[i]![1]);
  }
  owner.restartPending = 0;
}

/* ---------------------------------------------------------------------------
 * Cycle detection (bcachefs bch2_check_for_deadlock).
 */

/** Result of a waits-for walk: a cycle, or a chain longer than the depth bound. */
export interface LockCycle {
  owners: LockOwner[];
  tooDeep: boolean;
}

const graphStack: LockOwner[] = [];
const graphBlockers: SixLockOwner[][] = [];
let graphVisited: Set<LockOwner> = new Set();
let graphTooDeep = false;

function ownerIsWaiting(o: LockOwner): boolean {
  const w = o.waitingOn;
  return w !== null && w.state === SixWaitState.waiting;
}

/** Depth-first from `x` (waiting); returns the cycle or too-deep chain, or null. */
function lockGraphDescend(x: LockOwner, depthMax: number): LockOwner[] | null {
  const depth = graphStack.length;
  graphStack.push(x);
  const blockers = (graphBlockers[depth] ??= []);
  blockers.length = 0;
  const w = x.waitingOn!;
  w.lock.waiterBlockers(w, blockers);

  for (let b = 0; b < blockers.length; b++) {
    const y = blockers[b] as LockOwner;
    const i = graphStack.indexOf(y);
    if (i >= 0) return graphStack.slice(i);
    if (graphVisited.has(y)) continue;
    if (!ownerIsWaiting(y)) {
      graphVisited.add(y);
      continue;
    }
    if (graphStack.length >= depthMax) {
      graphTooDeep = true;
      return graphStack.slice();
    }
    const r = lockGraphDescend(y, depthMax);
    if (r !== null) return r;
  }
  graphStack.pop();
  blockers.length = 0;
  graphVisited.add(x);
  return null;
}

/**
 * Walk the waits-for graph from a waiting owner without acting on it. Null:
 * no cycle reachable within depthMax. Used by checkForDeadlock and by
 * debugging/tests (pass a large depthMax for an exact answer).
 */
export function lockGraphFindCycle(owner: LockOwner, depthMax: number = lockGraphDepthMax): LockCycle | null {
  if (!ownerIsWaiting(owner)) return null;
  graphStack.length = 0;
  graphVisited = new Set();
  graphTooDeep = false;
  const owners = lockGraphDescend(owner, depthMax);
  graphStack.length = 0;
  for (const b of graphBlockers) b.length = 0;
  graphVisited = new Set();
  return owners === null ? null : { owners, tooDeep: graphTooDeep };
}

/**
 * Youngest owner: largest startSeq, ties broken by largest ownerId; never the
 * owner holding the starvation gate if there is another. Without that
 * exception a starving transaction younger than a chain of waiters deeper
 * than lockGraphDepthMax (64 writers on a few hot leaves, intent reads) was
 * the victim of every wait it began: it restarted at once, without sleeping,
 * 10,000 times in well under a second, and failed with ERR_TOO_MANY_RESTARTS
 * (the stress campaign, seed 1006); the gate it held kept no one already
 * running from forming the chain again.
 */
function lockCycleVictim(owners: LockOwner[]): LockOwner {
  let v: LockOwner | null = null;
  for (const o of owners) {
    if (o.runsAlone?.()) continue;
    if (v === null || o.startSeq > v.startSeq || (o.startSeq === v.startSeq && o.ownerId > v.ownerId)) v = o;
  }
  return v ?? owners[0]!;
}

export function lockCycleToText(c: LockCycle): string {
  const chain = c.owners
    .map((o) => `owner#${o.ownerId}(start ${o.startSeq}) wants ${o.waitingOn === null ? '?' : sixLockTypeName(o.waitingOn.type)}`)
    .join(' -> ');
  return c.tooDeep ? `chain deeper than ${lockGraphDepthMax}: ${chain}` : `${chain} -> owner#${c.owners[0]!.ownerId}`;
}

/**
 * Before `owner` (already queued, waitingOn set) sleeps: break every cycle
 * through it. Returns 0 to sleep, or the restart code if `owner` itself is the
 * victim. Other victims get restartPending and an aborted wait.
 */
export function checkForDeadlock(owner: LockOwner): number {
  for (let round = 0; round < deadlockAbortsMax; round++) {
    lockingCounters.graphWalks++;
    const c = lockGraphFindCycle(owner, lockGraphDepthMax);
    if (c === null) return 0;

    if (c.tooDeep) lockingCounters.recursionLimitHits++;
    else lockingCounters.cyclesFound++;
    lockingCounters.lastCycle = lockCycleToText(c);

    const victim = lockCycleVictim(c.owners);
    const w = victim.waitingOn!;
    const code = c.tooDeep
      ? ERR.transaction_restart_deadlock_recursion_limit
      : w.type === WRITE
        ? ERR.transaction_restart_would_deadlock_write
        : ERR.transaction_restart_would_deadlock;
    if (victim === owner) return code;

    victim.restartPending = code;
    lockingCounters.victimsAborted++;
    w.lock.abortWait(w, code);
  }
  return ERR.transaction_restart_would_deadlock;
}

/** Flat snapshot of the locking counters for stats(). */
export function lockingStats(): Record<string, number> {
  return lockingCounters.toObject();
}
