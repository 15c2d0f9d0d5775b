// SPDX-License-Identifier: GPL-2.0-only
/*
 * Store: the public API (API.md). Validates every argument and option in
 * TypeScript first (messages name the argument, the value and what is
 * allowed), runs transactions with the one restart loop, and hands the rest
 * to the Engine (engine.ts).
 *
 * transact(fn): a BtreeTrans per attempt; fn runs; its updates commit
 * atomically (one journal entry); a restart (lock conflict, deadlock victim,
 * node changed) reruns fn with a new BtreeTrans that keeps the start seq;
 * the promise resolves once the journal entry is durable.
 *
 * get(): first the engine's LookupNowait (no transaction: one synchronous
 * walk under read trylocks; a node not cached is read and the walk redone),
 * then, if that cannot answer, a one-get transaction. range(): RangeIterator,
 * a leaf of entries at a time.
 *
 * Calls from inside a transact() callback: a write of the same store there
 * (put, del, transact) is not part of the enclosing transaction, and when
 * it needs a lock that transaction holds (its reads' leaf locks) it waits
 * for it while the callback waits for the call: a deadlock. close() would
 * wait for the transaction to end. Each store has its own copy of the
 * function that runs a transaction's attempts and calls and awaits its
 * callback (transactGated), named for the store (sixtreeStore<n>Callback),
 * so a call made by a callback, before or after its awaits, has the
 * enclosing transaction's frame by that name on its synchronous or async
 * stack (V8's async stack traces follow awaits, not bare .then() chains: a
 * callback written with .then() goes unseen). A wrapper awaiting the
 * callback instead would cost a microtask per transaction, which contended
 * read-modify-write felt (-20%). Taking a stack costs ~10-20 us, too much
 * for every call while concurrent callbacks run, so:
 *   - a lock wait of a transaction of this store, begun while some callback
 *     of the store is running (callbacksRunning > 0), is watched: if it is
 *     still waiting after lockWaitWatchMs (locking.ts), it looks at its own stack once
 *     (nestedWatch): a second frame by the store's name (its own
 *     transaction's is the first) means it was made by a callback, and it
 *     fails with ERR_TX_NESTED (the wait aborted, bt.nestedError). A nested
 *     write that waits for nothing just commits;
 *   - close() looks at its stack at once (it always waits for the
 *     enclosing transaction; rare, so the cost does not matter).
 * Not watched: waits for an interior update's lock, at the starvation gate,
 * and for journal room. Reads (get, range, fsck) and flush() do not wait for
 * the enclosing transaction.
 */

import { ERR, SixtreeError, errName, isRestart, invalidArg } from './errors.js';
import { KEY_TYPE, UNPACKED_VALUE_OFFSET, bkeyNew, keyBytesFor, type BkeyI } from './btree/bkey.js';
import { BPOS_WORDS, POS_MAX, POS_MIN, U64_MAX, type Bpos, type PosLike, bposCmp, bposSuccessor, bposToText, posLikeToWords, posWords, toBpos, wordsToBpos } from './btree/bpos.js';
import { Iter, KEY_SIZE_MAX, LOOKUP_FALLBACK, type Entry, type IterOpts } from './btree/iter.js';
import { BTREE_MAX_DEPTH } from './btree/path.js';
import { EXTENT_VALUE_HEADER_BYTES, extentValueMake, xcmp, type XPos } from './btree/overlay.js';
import { BtreeTrans, transStartSeqNew } from './btree/trans.js';
import type { LockWaitWatch } from './btree/locking.js';
import { transCommit } from './btree/commit.js';
import { TxCtx, type MergeCheckPos } from './btree/interior.js';
import { Engine, STARVATION_RESTARTS, type EngineOpenOpts, type FormatOpts, type StoreStats } from './engine.js';

/** Restarts of one transact() call before ERR_TOO_MANY_RESTARTS. */
export const TRANSACT_RESTARTS_MAX = 10_000;

/** Stores made in this process: each names its transactGated after its number (see the notes at the top). */
let storeSerial = 0;

/** Stack frames taken when looking for a transaction's frame by the store's name. */
const NESTED_STACK_FRAMES = 200;

/** How many times `name` appears in the current (synchronous + async) stack. */
function stackFramesNamed(name: string): number {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = NESTED_STACK_FRAMES;
  const probe: { stack?: unknown } = {};
  try {
    Error.captureStackTrace(probe);
  } finally {
    Error.stackTraceLimit = limit;
  }
  // (a user's Error.prepareStackTrace may make it something else: then unseen)
  if (typeof probe.stack !== 'string') return 0;
  let n = 0;
  for (let i = probe.stack.indexOf(name); i >= 0; i = probe.stack.indexOf(name, i + name.length)) n++;
  return n;
}

/**
 * An ERR_IO that ends a writing call says whether it was committed
 * (details.committed): false when it failed before its keys were applied
 * (nothing of it is in the store: a retry is safe), 'unknown' when its
 * journal entry's write or flush failed after they were (as after a crash:
 * the next open finds it wholly or not at all). Other errors pass as they are.
 * An error the callback threw is the caller's own object (docs/api.md,
 * transact): it is marked in place; the engine's are copied.
 */
function ioOutcome(e: unknown, committed: false | 'unknown', inPlace = false): unknown {
  if (!(e instanceof SixtreeError) || e.code !== 'ERR_IO' || 'committed' in e.details) return e;
  if (inPlace) {
    e.details.committed = committed;
    return e;
  }
  return new SixtreeError('ERR_IO', e.message, { ...e.details, committed }, { cause: e });
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && (typeof v === 'object' || typeof v === 'function') && typeof (v as { then?: unknown }).then === 'function';
}

function checkOptions(opts: unknown, allowed: readonly string[], what: string): Record<string, unknown> {
  if (opts === undefined) return {};
  if (opts === null || typeof opts !== 'object' || Array.isArray(opts)) throw invalidArg(what, opts, 'an options object');
  for (const k of Object.keys(opts)) {
    if (!allowed.includes(k)) throw new SixtreeError('ERR_INVALID_ARG', `${what}: unknown option ${JSON.stringify(k)}; allowed: ${allowed.join(', ')}`, { argument: `${what}.${k}` });
  }
  return opts as Record<string, unknown>;
}

function checkPath(path: unknown): string {
  if (typeof path !== 'string' || path.length === 0) throw invalidArg('path', path, 'a non-empty string (file or block device path)');
  return path;
}

function checkValue(v: unknown, max: number): Uint8Array {
  if (!(v instanceof Uint8Array)) throw invalidArg('value', v, 'a Uint8Array (or Buffer)');
  if (v.length > max) throw new SixtreeError('ERR_VALUE_TOO_LARGE', `value: ${v.length} bytes; this store allows at most ${max} (store.maxValueSize)`, { length: v.length });
  return v;
}

/**
 * A private copy of a caller's value: what a put stores is the bytes at the
 * time of the call. (`slice()` would not do: on a Buffer it is a view.)
 */
function copyValue(v: Uint8Array): Uint8Array {
  return new Uint8Array(v);
}

export class Transaction {
  constructor(
    private readonly store: Store,
    /** @internal */ readonly bt: BtreeTrans,
  ) {}

  private live(): void {
    if (this.bt.done) throw new SixtreeError('ERR_TX_DONE', 'transaction used after its transact() callback returned');
  }

  private writable(): void {
    this.live();
    if (this.store.readOnly) throw new SixtreeError('ERR_READ_ONLY', 'write in a store opened readOnly');
  }

  /**
   * The value at p as this transaction sees it. opts.intent: take the leaf's
   * intent lock, as an update would (bcachefs BTREE_ITER_INTENT): for
   * read-modify-write, concurrent transactions on the same leaf then queue
   * at the read instead of deadlocking at the commit and restarting.
   */
  async get(btree: string, p: unknown, opts?: unknown): Promise<Uint8Array | undefined> {
    this.live();
    const id = this.store.btreeId(btree, false);
    const pos = toBpos(p, 'pos');
    let intent = false;
    if (opts !== undefined) {
      const o = checkOptions(opts, ['intent'], 'opts');
      if (o.intent !== undefined && typeof o.intent !== 'boolean') throw invalidArg('opts.intent', o.intent, 'a boolean');
      intent = o.intent === true;
    }
    const k = await this.bt.engine.txGet(this.bt, id, pos, intent);
    return k ? k.value.slice() : undefined;
  }

  put(btree: string, p: unknown, value: unknown): void {
    this.writable();
    const id = this.store.btreeId(btree, false);
    // the position straight to words: no bigint position made per put
    const w = new Uint32Array(BPOS_WORDS);
    posLikeToWords(p, 'pos', w, 0);
    const v = checkValue(value, this.store.maxValueSize);
    const k: BkeyI = { type: KEY_TYPE.value, p: w, size: 0, version: 0, value: copyValue(v) };
    this.bt.overlay(id).putKey(k);
  }

  /**
   * @internal put() of a value the caller already checked and copied, and
   * never changes (Store.put: its copy serves every attempt of its
   * transaction; one copy per put instead of two).
   */
  putOwned(btreeId: number, p: PosLike, value: Uint8Array): void {
    this.writable();
    const w = new Uint32Array(BPOS_WORDS);
    posLikeToWords(p, 'pos', w, 0);
    this.bt.overlay(btreeId).putKey({ type: KEY_TYPE.value, p: w, size: 0, version: 0, value });
  }

  del(btree: string, p: unknown): void {
    this.writable();
    const id = this.store.btreeId(btree, false);
    const w = new Uint32Array(BPOS_WORDS);
    posLikeToWords(p, 'pos', w, 0);
    this.bt.overlay(id).putKey(bkeyNew(KEY_TYPE.deleted, w));
  }

  putExtent(btree: string, start: unknown, size: unknown, value: unknown): void {
    this.writable();
    const id = this.store.btreeId(btree, true);
    const s = toBpos(start, 'start');
    let sz: bigint;
    if (typeof size === 'number' && Number.isSafeInteger(size) && size > 0) sz = BigInt(size);
    else if (typeof size === 'bigint' && size > 0n) sz = size;
    else throw invalidArg('size', size, 'a positive integer (a safe-integer number or a bigint)');
    if (s.offset + sz > U64_MAX) throw invalidArg('size', size, `an extent ending at or before offset 2^64-1 (start offset ${s.offset})`);
    const v = checkValue(value, this.store.maxValueSize);
    // one key per KEY_SIZE_MAX; all of them go in the commit's journal entry: refuse now what could never commit
    const pieces = (sz + BigInt(KEY_SIZE_MAX) - 1n) / BigInt(KEY_SIZE_MAX);
    if (pieces > 1n) {
      const maxBytes = this.store.engine.journal.maxReservationBytes;
      const pieceBytes = keyBytesFor(UNPACKED_VALUE_OFFSET, EXTENT_VALUE_HEADER_BYTES + v.length);
      if (pieces * BigInt(pieceBytes) > BigInt(maxBytes)) {
        throw invalidArg('size', size, `an extent of at most ${Math.floor(maxBytes / pieceBytes)} keys of 2^32-1 bytes (this one needs ${pieces}: one transaction's keys must fit one journal entry of ${maxBytes} bytes)`);
      }
    }
    const ov = this.bt.overlay(id);
    // keys hold at most KEY_SIZE_MAX: longer extents become several keys with valueOffsets
    let off = 0n;
    while (off < sz) {
      const piece = sz - off > BigInt(KEY_SIZE_MAX) ? BigInt(KEY_SIZE_MAX) : sz - off;
      const end: Bpos = { inode: s.inode, offset: s.offset + off + piece, snapshot: s.snapshot };
      ov.putExtent(bkeyNew(KEY_TYPE.extent, posWords(end), { size: Number(piece), value: extentValueMake(off, v) }));
      off += piece;
    }
  }

  delRange(btree: string, start: unknown, end: unknown): void {
    this.writable();
    const id = this.store.btreeId(btree, null);
    const s = toBpos(start, 'start');
    const e = toBpos(end, 'end');
    if (xcmp(s as XPos, e as XPos) >= 0) return;
    this.bt.overlay(id).addTombstone(s as XPos, e as XPos);
  }

  iter(btree: string, start?: unknown, opts?: unknown): Iter {
    this.live();
    const id = this.store.btreeId(btree, null);
    const o = checkOptions(opts, ['slots', 'intent', 'prefetch', 'end'], 'opts');
    const iopts: IterOpts = {};
    for (const k of ['slots', 'intent', 'prefetch'] as const) {
      if (o[k] !== undefined && typeof o[k] !== 'boolean') throw invalidArg(`opts.${k}`, o[k], 'a boolean');
      if (o[k] !== undefined) iopts[k] = o[k] as boolean;
    }
    if (o.end !== undefined) iopts.end = toBpos(o.end, 'opts.end');
    const s = start === undefined ? POS_MIN : toBpos(start, 'start');
    const it = new Iter(this.bt, () => this.live(), id, this.bt.engine.btrees[id]!.extents, s, iopts);
    // for V8's sake (src/util/shapes.ts)
    this.bt.engine.shapes.keep(it);
    return it;
  }
}

/** Store.format options (API.md). */
export interface StoreFormatOptions {
  btrees: Array<{ name: string; extents?: boolean }>;
  size?: number | bigint;
  nodeSize?: number;
  blockSize?: number;
  journalSize?: number;
  force?: boolean;
  io?: 'napi' | 'koffi';
}

/** Store.open options (API.md). */
export interface StoreOpenOptions {
  cacheSize?: number;
  readOnly?: boolean;
  io?: 'napi' | 'koffi';
  /** A commit that is the store's only call in flight writes and flushes its journal entry on the calling thread (docs/api.md). */
  inlineFlush?: boolean;
}

export interface RangeOpts {
  start?: PosLike;
  end?: PosLike;
  reverse?: boolean;
  limit?: number;
}

export interface ClearOpts {
  start?: PosLike;
  end?: PosLike;
  /** Keys one commit deletes at most (default: what a quarter of a journal entry holds). */
  keysPerCommit?: number;
}

/** Journal bytes of one deletion (an unpacked whiteout), for store.clear's commit size. */
const DELETION_JOURNAL_BYTES = keyBytesFor(UNPACKED_VALUE_OFFSET, 0);

/**
 * Where store.clear's next commit stops: [cur, stop) holds at most `budget`
 * keys. Whole leaves from cur's on while their keys (all of them: an upper
 * bound of the live ones) add up to the budget; if cur's own leaf has more,
 * the position after its budget-th live entry. `end` when the leaves taken
 * reach it.
 */
async function clearCommitEnd(tx: Transaction, btree: string, cur: Bpos, end: Bpos, budget: number): Promise<Bpos> {
  const it = tx.iter(btree, cur);
  let keys = 0;
  for (let n = await it.peekNode(); n; n = await it.nextNode()) {
    if (keys + n.keys > budget) {
      if (keys > 0) return bposCmp(n.minKey, end) < 0 ? n.minKey : end;
      // cur's leaf alone holds more: count its entries
      const e = tx.iter(btree, cur, { end });
      let last: Entry | null = null;
      let k = 0;
      for (let x = await e.peek(); x && k < budget; x = await e.next(), k++) last = x;
      return k < budget || !last || bposCmp(last.pos, POS_MAX) === 0 ? end : minBpos(bposSuccessor(last.pos), end);
    }
    keys += n.keys;
    if (bposCmp(n.maxKey, end) >= 0) return end;
  }
  return end;
}

function minBpos(a: Bpos, b: Bpos): Bpos {
  return bposCmp(a, b) <= 0 ? a : b;
}

/** Units of answers from cache (a get, or 16 range entries) between turns of the event loop (Store.cachedAnswer). */
export const CACHED_UNITS_PER_TURN = 1024;

export class Store {
  /** @internal */ readonly engine: Engine;
  readonly btrees: readonly string[];
  readonly nodeSize: number;
  readonly maxValueSize: number;
  readonly readOnly: boolean;
  private closed = false;
  private closing: Promise<void> | null = null;
  private inFlight = 0;
  private idle: Array<() => void> = [];
  /** Answers from cache since the event loop last had a turn, in units (cachedAnswer). */
  private unyielded = 0;
  /** A setImmediate is armed to reset unyielded at the next turn. */
  private turnWatch = false;
  /** transact() callbacks of this store running or awaited now (nestedCheck looks at the stack only then). */
  private callbacksRunning = 0;
  /** The name of this store's copy of transactGated (its frame on a nested call's stack). */
  private readonly runnerName: string;

  private constructor(engine: Engine, readOnly: boolean) {
    this.engine = engine;
    this.runnerName = `sixtreeStore${++storeSerial}Callback`;
    this.transactGated = Store.gatedFor(this);
    this.btrees = Object.freeze(engine.btrees.map((b) => b.name));
    this.nodeSize = engine.nodeSizeBytes;
    this.maxValueSize = engine.maxValueBytes;
    this.readOnly = readOnly;
  }

  static async format(path: string, opts: StoreFormatOptions): Promise<void> {
    const p = checkPath(path);
    const o = checkOptions(opts, ['btrees', 'size', 'nodeSize', 'blockSize', 'journalSize', 'force', 'io'], 'opts');
    if (opts === undefined) throw invalidArg('opts', opts, 'an options object with btrees');
    if (!Array.isArray(o.btrees) || o.btrees.length === 0) throw invalidArg('opts.btrees', o.btrees, 'a non-empty array of { name, extents? }');
    const names = new Set<string>();
    const btrees = o.btrees.map((b: unknown, i: number) => {
      const bo = checkOptions(b, ['name', 'extents'], `opts.btrees[${i}]`);
      if (typeof bo.name !== 'string' || !/^[a-z][a-z0-9_]{0,31}$/.test(bo.name)) throw invalidArg(`opts.btrees[${i}].name`, bo.name, 'a name matching /^[a-z][a-z0-9_]{0,31}$/');
      if (names.has(bo.name)) throw invalidArg(`opts.btrees[${i}].name`, bo.name, 'a name not used by another btree');
      names.add(bo.name);
      if (bo.extents !== undefined && typeof bo.extents !== 'boolean') throw invalidArg(`opts.btrees[${i}].extents`, bo.extents, 'a boolean');
      return { name: bo.name, extents: !!bo.extents };
    });
    const fo: FormatOpts = { btrees, force: false };
    if (o.size !== undefined) {
      if (!((typeof o.size === 'number' && Number.isSafeInteger(o.size) && o.size > 0) || (typeof o.size === 'bigint' && o.size > 0n && o.size <= BigInt(Number.MAX_SAFE_INTEGER))))
        throw invalidArg('opts.size', o.size, 'a positive integer number of bytes');
      fo.sizeBytes = Number(o.size);
    }
    const pow2 = (name: string, v: unknown, min: number, max: number): number => {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max || (v & (v - 1)) !== 0)
        throw invalidArg(name, v, `a power of two from ${min} to ${max}`);
      return v;
    };
    if (o.nodeSize !== undefined) fo.nodeSizeBytes = pow2('opts.nodeSize', o.nodeSize, 4096, 1 << 20);
    if (o.blockSize !== undefined) fo.blockSizeBytes = pow2('opts.blockSize', o.blockSize, 512, 1 << 16);
    if (fo.nodeSizeBytes && fo.blockSizeBytes && fo.nodeSizeBytes % fo.blockSizeBytes !== 0)
      throw invalidArg('opts.nodeSize', fo.nodeSizeBytes, `a multiple of blockSize (${fo.blockSizeBytes})`);
    if (o.journalSize !== undefined) {
      if (typeof o.journalSize !== 'number' || !Number.isSafeInteger(o.journalSize) || o.journalSize <= 0) throw invalidArg('opts.journalSize', o.journalSize, 'a positive integer number of bytes');
      fo.journalSizeBytes = o.journalSize;
    }
    if (o.force !== undefined && typeof o.force !== 'boolean') throw invalidArg('opts.force', o.force, 'a boolean');
    fo.force = !!o.force;
    if (o.io !== undefined) fo.io = checkIo(o.io);
    await Engine.format(p, fo);
  }

  static async open(path: string, opts?: StoreOpenOptions): Promise<Store> {
    const p = checkPath(path);
    const o = checkOptions(opts, ['cacheSize', 'readOnly', 'io', 'inlineFlush'], 'opts');
    const eo: EngineOpenOpts = { readOnly: false };
    if (o.cacheSize !== undefined) {
      if (typeof o.cacheSize !== 'number' || !Number.isSafeInteger(o.cacheSize) || o.cacheSize <= 0) throw invalidArg('opts.cacheSize', o.cacheSize, 'a positive integer number of bytes');
      eo.cacheSizeBytes = o.cacheSize;
    }
    if (o.readOnly !== undefined && typeof o.readOnly !== 'boolean') throw invalidArg('opts.readOnly', o.readOnly, 'a boolean');
    eo.readOnly = !!o.readOnly;
    if (o.io !== undefined) eo.io = checkIo(o.io);
    if (o.inlineFlush !== undefined && typeof o.inlineFlush !== 'boolean') throw invalidArg('opts.inlineFlush', o.inlineFlush, 'a boolean');
    const engine = await Engine.open(p, eo);
    const store = new Store(engine, eo.readOnly);
    if (o.inlineFlush) engine.inlineFlushWhen = () => store.inFlight <= 1;
    return store;
  }

  /**
   * Open a store on a Device object instead of a path (tests: MemDevice for
   * crash images, FaultDevice for injected failures). Not part of API.md.
   * @internal
   */
  static async openDevice(device: import('./io/device.js').Device, opts: { cacheSize?: number; readOnly?: boolean } = {}): Promise<Store> {
    const engine = await Engine.open(device.path, { device, readOnly: !!opts.readOnly, ...(opts.cacheSize ? { cacheSizeBytes: opts.cacheSize } : {}) });
    return new Store(engine, !!opts.readOnly);
  }

  /** Format a Device object (tests). @internal */
  static async formatDevice(device: import('./io/device.js').Device, opts: { btrees: Array<{ name: string; extents?: boolean }>; nodeSize?: number; blockSize?: number; journalSize?: number }): Promise<void> {
    await Engine.format(device.path, {
      device,
      force: true,
      btrees: opts.btrees.map((b) => ({ name: b.name, extents: !!b.extents })),
      ...(opts.nodeSize ? { nodeSizeBytes: opts.nodeSize } : {}),
      ...(opts.blockSize ? { blockSizeBytes: opts.blockSize } : {}),
      ...(opts.journalSize ? { journalSizeBytes: opts.journalSize } : {}),
    });
  }

  /** @internal btree name -> id; extents: true = must be extents, false = must not, null = either. */
  btreeId(name: unknown, extents: boolean | null): number {
    if (typeof name !== 'string') throw invalidArg('btree', name, `a btree name (${this.btrees.join(', ')})`);
    const id = this.btrees.indexOf(name);
    if (id < 0) throw new SixtreeError('ERR_UNKNOWN_BTREE', `btree ${JSON.stringify(name)} is not in this store (it has: ${this.btrees.join(', ')})`, { btree: name });
    const isExt = this.engine.btrees[id]!.extents;
    if (extents === true && !isExt) throw new SixtreeError('ERR_NOT_EXTENTS', `btree ${name} is not an extents btree: use put/get/del`, { btree: name });
    if (extents === false && isExt) throw new SixtreeError('ERR_IS_EXTENTS', `btree ${name} is an extents btree: use putExtent/delRange and iterators`, { btree: name });
    return id;
  }

  private checkOpen(): void {
    if (this.closed || this.closing) throw new SixtreeError('ERR_CLOSED', 'store is closed');
  }

  /** @internal Neither closing nor closed (range iterators check it for each entry). */
  isOpen(): boolean {
    return !this.closed && !this.closing;
  }

  private enter(): void {
    this.checkOpen();
    this.inFlight++;
  }

  private leave(): void {
    if (--this.inFlight === 0 && this.idle.length > 0) for (const w of this.idle.splice(0)) w();
  }

  /**
   * tx's attempt has ended: it is kept, shed of its updates, for V8's sake
   * (src/util/shapes.ts), and through it its BtreeTrans, paths and TxCtx.
   */
  private keepShapes(tx: Transaction): void {
    tx.bt.shed(this.engine.shapes);
    this.engine.shapes.keep(tx);
  }

  private nestedError(what: string): SixtreeError {
    this.engine.counters.nestedCallsRefused++;
    return new SixtreeError(
      'ERR_TX_NESTED',
      `${what} called inside a transact() callback of the same store waits for that transaction (its locks, or its end) while the callback waits for it; it is not part of that transaction: use the callback's tx instead, or call it after transact() resolves`,
      { call: what },
    );
  }

  /**
   * The watch for bt's lock waits (see the notes at the top). Every wait of
   * a transaction happens inside its own transactGated, so its stack shows
   * one frame by that name; a second is an enclosing transaction's.
   */
  private nestedWatch(bt: BtreeTrans, what: string): LockWaitWatch {
    return {
      active: () => this.callbacksRunning > 0,
      check: () => {
        if (stackFramesNamed(this.runnerName) <= 1) return 0;
        bt.nestedError = this.nestedError(what);
        return ERR.transaction_restart_would_deadlock;
      },
    };
  }

  async transact<T>(fn: (tx: Transaction) => Promise<T> | T): Promise<T> {
    if (typeof fn !== 'function') throw invalidArg('fn', fn, 'a function (tx) => ...');
    // awaited (not returned): the chain of awaits is what a nested call's stack shows
    return await this.transactRun(fn, true, 'store.transact()');
  }

  /**
   * A transaction, arguments checked. user: fn is the caller's, counted in
   * callbacksRunning while it runs; put, del and get's fallback pass their
   * own one-call callbacks (false). what: the call, for ERR_TX_NESTED.
   */
  private async transactRun<T>(fn: (tx: Transaction) => Promise<T> | T, user: boolean, what: string): Promise<T> {
    this.enter();
    try {
      return await this.transactInner(fn, user, what);
    } finally {
      this.leave();
    }
  }

  private async transactInner<T>(fn: (tx: Transaction) => Promise<T> | T, user: boolean, what: string): Promise<T> {
    const engine = this.engine;
    const startSeq = transStartSeqNew();
    const made = new TxCtx(engine.interior);
    let done: { result: T; shrunk: MergeCheckPos[] };
    try {
      done = await this.transactAttempts(fn, user, what, startSeq, made);
    } finally {
      // interior updates made by any attempt may now write their new nodes
      made.finish();
    }
    // merge checks for the leaves the commit shrank (after finish: the merge
    // runner needs the interior locks this call held; this may wait for it)
    if (done.shrunk.length) await engine.scheduleMerges(done.shrunk);
    return done.result;
  }

  private async transactAttempts<T>(fn: (tx: Transaction) => Promise<T> | T, user: boolean, what: string, startSeq: number, made: TxCtx): Promise<{ result: T; shrunk: MergeCheckPos[] }> {
    const gate = { held: false };
    try {
      return await this.transactGated(fn, user, what, startSeq, made, gate);
    } finally {
      if (gate.held) this.engine.starvationGateOpen(startSeq);
    }
  }

  /**
   * The attempts of one transact() call: this store's own copy, named
   * runnerName (see the notes at the top: a nested call's stack shows the
   * enclosing transaction's frame by that name, and nothing between it and
   * the callback costs a microtask).
   */
  private readonly transactGated: <T>(fn: (tx: Transaction) => Promise<T> | T, user: boolean, what: string, startSeq: number, made: TxCtx, gate: { held: boolean }) => Promise<{ result: T; shrunk: MergeCheckPos[] }>;

  private static gatedFor(store: Store): Store['transactGated'] {
    const gated = async function <T>(fn: (tx: Transaction) => Promise<T> | T, user: boolean, what: string, startSeq: number, made: TxCtx, gate: { held: boolean }): Promise<{ result: T; shrunk: MergeCheckPos[] }> {
      const engine = store.engine;
      // this call's restarts by reason (for the error if it never gets through)
      const reasons = new Map<number, number>();
      const restarted = (code: number) => {
        engine.countRestart(code);
        reasons.set(code, (reasons.get(code) ?? 0) + 1);
      };
      for (let restarts = 0; ; restarts++) {
        // a transaction that keeps restarting runs alone; the others wait for it here
        if (!gate.held && restarts >= STARVATION_RESTARTS) gate.held = engine.starvationGateClose(startSeq);
        if (!gate.held) {
          const w = engine.starvationGateWait(startSeq);
          if (w) {
            // never wait holding interior locks the starving one may need
            made.finish();
            await w;
          }
        }
        if (restarts > TRANSACT_RESTARTS_MAX) {
          const top = [...reasons].sort((a, b) => b[1] - a[1]).map(([c, n]) => `${errName(c)} ${n}`);
          throw new SixtreeError('ERR_TOO_MANY_RESTARTS', `transaction restarted more than ${TRANSACT_RESTARTS_MAX} times (${top.slice(0, 4).join(', ')})`, {
            restartReasons: Object.fromEntries([...reasons].map(([c, n]) => [errName(c), n])),
          });
        }
        const bt = new BtreeTrans(engine, startSeq, restarts);
        bt.txCtx = made;
        bt.waitWatch = store.nestedWatch(bt, what);
        const tx = new Transaction(store, bt);
        let result: T;
        let seq = 0;
        let shrunk: MergeCheckPos[] = [];
        let fnReturned = false;
        try {
          // a caller's callback is counted while it runs (the nested-call
          // watch); a synchronous one only during the call. This function,
          // named for the store, calls it and awaits it: its frame is on the
          // stack of whatever the callback calls (nestedWatch)
          let r: Promise<T> | T;
          if (user) {
            store.callbacksRunning++;
            try {
              r = fn(tx);
            } catch (e) {
              store.callbacksRunning--;
              throw e;
            }
          } else r = fn(tx);
          if (isThenable(r)) {
            try {
              result = await r;
            } finally {
              if (user) store.callbacksRunning--;
            }
          } else {
            if (user) store.callbacksRunning--;
            // a synchronous callback has returned now: the transaction is done at once
            bt.done = true;
            result = await r;
          }
          fnReturned = true;
          bt.done = true;
          if (bt.nestedError) throw bt.nestedError;
          if (bt.restartThrown) {
            restarted(bt.restartThrown);
            continue;
          }
          if (store.readOnly && bt.hasUpdates()) throw new SixtreeError('ERR_READ_ONLY', 'write in a store opened readOnly');
          const c = await transCommit(bt);
          if (c.ret) {
            if (bt.nestedError) throw bt.nestedError;
            restarted(c.ret);
            continue;
          }
          seq = c.seq;
          shrunk = c.shrunk;
        } catch (e) {
          bt.done = true;
          if (bt.nestedError) throw bt.nestedError;
          if (isRestart(e) || bt.restartThrown) {
            restarted(isRestart(e) ? e.restartCode : bt.restartThrown);
            continue;
          }
          // the callback threw: on what it read, which may be a state no
          // serial order has (an iterator drops the leaves it has passed,
          // a read that waits for I/O drops its locks; the read set is
          // checked only at commit). Its error goes to the caller only if
          // those reads still hold, as a commit would; else it runs again
          if (!fnReturned) {
            const ret = bt.readsValidate();
            if (ret) {
              engine.counters.callbackErrorsRestarted++;
              restarted(ret);
              continue;
            }
          }
          throw ioOutcome(e, false, !fnReturned);
        } finally {
          bt.unlockAll();
          store.keepShapes(tx);
        }
        if (seq) {
          try {
            await engine.journalWaitDurable(seq);
          } catch (e) {
            // applied to the cached nodes, its journal entry's write or flush failed
            throw ioOutcome(e, 'unknown');
          }
        }
        return { result: result!, shrunk };
      }
    };
    Object.defineProperty(gated, 'name', { value: store.runnerName });
    return gated;
  }

  /**
   * The value at p, or undefined, answered synchronously from cached nodes
   * (the same walk as get()'s first step, no promise). When the answer needs
   * a node read or a lock another transaction holds for writing, throws
   * ERR_WOULD_BLOCK, having started that node's read: await get() then.
   */
  getSync(btree: string, p: PosLike): Uint8Array | undefined {
    const v = this.lookupCached(btree, p);
    if (v !== LOOKUP_FALLBACK) return v ?? undefined;
    this.engine.lookupNowait.counters.syncWouldBlock++;
    const at = bposToText(toBpos(p, 'pos'));
    throw new SixtreeError('ERR_WOULD_BLOCK', `getSync: ${btree} ${at} needs a node read or a lock wait; use get()`, { btree, pos: at });
  }

  /**
   * get() and getSync()'s first step: arguments checked, then the engine's
   * LookupNowait walk (everything cached and unlocked: answered synchronously,
   * no transaction) at p, parsed straight into its words. pinRead: the caller
   * waits for the read a miss starts and must release it (get()).
   */
  private lookupCached(btree: string, p: PosLike, pinRead = false): Uint8Array | null | typeof LOOKUP_FALLBACK {
    this.checkOpen();
    const id = this.btreeId(btree, false);
    const lk = this.engine.lookupNowait;
    posLikeToWords(p, 'pos', lk.pos, 0);
    return lk.lookupAt(id, false, pinRead);
  }

  /**
   * An answer from cached nodes resolves without waiting for anything, so a
   * loop of awaited get()s or a range() over cached leaves would never let
   * the event loop run: I/O completions, commits included, would wait for
   * it to end (fault hunting: two reader loops starved a writer for two
   * minutes). After CACHED_UNITS_PER_TURN units of such answers with no turn
   * of the event loop, the next one waits for a turn (setImmediate): about
   * a millisecond of gets, or tens of thousands of range entries.
   */
  private cachedAnswer(units: number): Promise<void> | null {
    this.unyielded += units;
    if (this.unyielded >= CACHED_UNITS_PER_TURN) {
      this.unyielded = 0;
      this.engine.lookupNowait.counters.yields++;
      return new Promise((r) => setImmediate(r));
    }
    if (!this.turnWatch) {
      this.turnWatch = true;
      setImmediate(() => {
        this.turnWatch = false;
        this.unyielded = 0;
      });
    }
    return null;
  }

  /** One-operation transaction: the value at p, or undefined. Errors are rejections. */
  async get(btree: string, p: PosLike): Promise<Uint8Array | undefined> {
    let v = this.lookupCached(btree, p, true);
    if (v !== LOOKUP_FALLBACK) {
      const turn = this.cachedAnswer(1);
      if (turn) await turn;
      return v ?? undefined;
    }
    const lk = this.engine.lookupNowait;
    /*
     * A node was not cached: its read is under way, the node pinned for us.
     * Walk again once it is in; that walk may miss one level further down
     * (an interior node was read) and start the next read. A walk per level
     * at most, then the transaction, which waits for locks and reports errors.
     * The position is the one parsed at the call (the caller may change its
     * object meanwhile): its words, copied before the first await.
     */
    const words = lk.pos.slice(0, BPOS_WORDS);
    for (let walks = 0; walks <= BTREE_MAX_DEPTH && lk.readStarted !== null; walks++) {
      const read = lk.readStarted;
      let entered = false;
      try {
        this.enter();
        entered = true;
        await read.done;
        lk.pos.set(words);
        v = lk.lookupAt(this.btreeId(btree, false), true, true);
      } finally {
        lk.readRelease(read);
        if (entered) this.leave();
      }
      if (v !== LOOKUP_FALLBACK) return v ?? undefined;
    }
    const at = wordsToBpos(words);
    return await this.transactRun((tx) => tx.get(btree, at), false, 'store.get()');
  }

  /** One-operation transaction; resolves once durable. Errors are rejections. */
  async put(btree: string, p: PosLike, value: Uint8Array): Promise<void> {
    this.checkOpen();
    if (this.readOnly) throw new SixtreeError('ERR_READ_ONLY', 'put on a store opened readOnly');
    const id = this.btreeId(btree, false);
    toBpos(p, 'pos');
    // copied now: a restart runs the transaction again, after the caller may have reused its buffer
    const v = copyValue(checkValue(value, this.maxValueSize));
    return await this.transactRun((tx) => tx.putOwned(id, p, v), false, 'store.put()');
  }

  /** One-operation transaction; resolves once durable. Errors are rejections. */
  async del(btree: string, p: PosLike): Promise<void> {
    this.checkOpen();
    if (this.readOnly) throw new SixtreeError('ERR_READ_ONLY', 'del on a store opened readOnly');
    this.btreeId(btree, false);
    toBpos(p, 'pos');
    return await this.transactRun((tx) => tx.del(btree, p), false, 'store.del()');
  }

  /**
   * Delete [start, end) (extents: every extent's part inside it, in every
   * snapshot) in as many commits as it takes, each durable before the next
   * starts and each a tx.delRange of the leaves from where the last one
   * stopped, as many as a quarter of a journal entry can delete (one commit
   * must fit one entry: docs/api.md, transact). bcachefs's
   * bch2_btree_delete_range commits batch by batch too. Not atomic as a
   * whole: an error or a crash part-way leaves [start, p) deleted for some p.
   * A commit the journal entry still refuses (extents cut into pieces at its
   * edges carry their values) is tried again with half the keys. Without
   * `end` the key at POS_MAX goes too, as range() includes it.
   */
  async clear(btree: string, opts?: ClearOpts): Promise<void> {
    this.checkOpen();
    if (this.readOnly) throw new SixtreeError('ERR_READ_ONLY', 'clear on a store opened readOnly');
    const extents = this.engine.btrees[this.btreeId(btree, null)]!.extents;
    const o = checkOptions(opts, ['start', 'end', 'keysPerCommit'], 'opts');
    const start = o.start === undefined ? POS_MIN : toBpos(o.start, 'opts.start');
    const end = o.end === undefined ? POS_MAX : toBpos(o.end, 'opts.end');
    let budget = Math.max(1, Math.floor(this.engine.journal.maxReservationBytes / 4 / DELETION_JOURNAL_BYTES));
    if (o.keysPerCommit !== undefined) {
      if (typeof o.keysPerCommit !== 'number' || !Number.isInteger(o.keysPerCommit) || o.keysPerCommit < 1) throw invalidArg('opts.keysPerCommit', o.keysPerCommit, 'a positive integer');
      budget = o.keysPerCommit;
    }
    let cur = start;
    while (bposCmp(cur, end) < 0) {
      const from = cur;
      const n = budget;
      try {
        cur = await this.transactRun(
          async (tx) => {
            const stop = await clearCommitEnd(tx, btree, from, end, n);
            tx.delRange(btree, from, stop);
            return stop;
          },
          false,
          'store.clear()',
        );
        this.engine.counters.clearCommits++;
      } catch (e) {
        // more than one journal entry holds (the journal's own refusal, nothing applied): fewer keys
        if (e instanceof SixtreeError && e.code === 'ERR_INVALID_ARG' && (e.details as { maxBytes?: unknown } | undefined)?.maxBytes !== undefined && budget > 1) {
          budget = budget >> 1;
          this.engine.counters.clearCommitsHalved++;
          continue;
        }
        throw e;
      }
    }
    if (o.end === undefined && !extents) await this.transactRun((tx) => tx.del(btree, POS_MAX), false, 'store.clear()');
  }

  /** Entries in [start, end) (extents: overlapping it), leaf by leaf. */
  range(btree: string, opts?: RangeOpts): AsyncIterableIterator<Entry> {
    this.checkOpen();
    const id = this.btreeId(btree, null);
    const o = checkOptions(opts, ['start', 'end', 'reverse', 'limit'], 'opts');
    const start = o.start === undefined ? POS_MIN : toBpos(o.start, 'opts.start');
    const end = o.end === undefined ? POS_MAX : toBpos(o.end, 'opts.end');
    if (o.reverse !== undefined && typeof o.reverse !== 'boolean') throw invalidArg('opts.reverse', o.reverse, 'a boolean');
    let limit = Infinity;
    if (o.limit !== undefined) {
      if (typeof o.limit !== 'number' || !Number.isInteger(o.limit) || o.limit < 0) throw invalidArg('opts.limit', o.limit, 'a non-negative integer');
      limit = o.limit;
    }
    return this.rangeGen(id, start, end, !!o.reverse, limit, o.end !== undefined);
  }

  private rangeGen(id: number, start: Bpos, end: Bpos, reverse: boolean, limit: number, endGiven: boolean): AsyncIterableIterator<Entry> {
    const it = new RangeIterator(this, id, start, end, reverse, limit, endGiven);
    // for V8's sake (src/util/shapes.ts)
    this.engine.shapes.keep(it);
    return it;
  }

  /** @internal One leaf's worth of entries for RangeIterator, counted as an operation in flight (close() waits for it). */
  async rangeFill(
    id: number,
    cursor: { pos: Bpos; done: boolean; first: boolean },
    start: Bpos,
    end: Bpos,
    reverse: boolean,
    max: number,
    endGiven: boolean,
  ): Promise<Entry[]> {
    this.enter();
    let batch: Entry[];
    try {
      batch = await this.engine.rangeBatch(id, cursor, start, end, reverse, max, endGiven);
    } finally {
      this.leave();
    }
    // a batch that read nothing is a cached answer too (cachedAnswer): 16 entries a unit
    const turn = this.cachedAnswer(Math.ceil(batch.length / 16));
    if (turn) await turn;
    return batch;
  }

  async flush(): Promise<void> {
    this.enter();
    try {
      await this.engine.flush();
    } finally {
      this.leave();
    }
  }

  shrink(nr?: number): number {
    this.checkOpen();
    if (nr !== undefined && (typeof nr !== 'number' || !Number.isInteger(nr) || nr < 0)) throw invalidArg('nr', nr, 'a non-negative integer');
    return this.engine.shrink(nr ?? Number.MAX_SAFE_INTEGER);
  }

  stats(): StoreStats {
    this.checkOpen();
    return this.engine.stats();
  }

  toText(): string {
    this.checkOpen();
    return this.engine.toText();
  }

  /** fsck: check topology, key order, bucket accounting, journal. Returns the problems found (empty: clean). */
  async fsck(): Promise<string[]> {
    this.enter();
    try {
      return await this.engine.fsck();
    } finally {
      this.leave();
    }
  }

  /** Not async: a second call while the first runs returns the very same promise. */
  close(): Promise<void> {
    if (this.closed) return Promise.reject(new SixtreeError('ERR_CLOSED', 'store is closed'));
    // it would wait for the enclosing transaction to end: look at once (rare)
    if (this.callbacksRunning > 0 && stackFramesNamed(this.runnerName) > 0) return Promise.reject(this.nestedError('store.close()'));
    if (this.closing) return this.closing;
    this.closing = (async () => {
      while (this.inFlight > 0) await new Promise<void>((r) => this.idle.push(r));
      try {
        await this.engine.close();
      } finally {
        this.closed = true;
      }
    })();
    return this.closing;
  }
}


/**
 * store.range()'s iterator: entries are fetched a leaf at a time
 * (engine.rangeBatch) and handed out from the batch, each next() a resolved
 * promise (an async generator resumes a generator and allocates more per
 * entry). Calls to next() made while a batch is being fetched queue behind
 * it, so entries come out in order, as from a generator. return() ends it.
 */
class RangeIterator implements AsyncIterableIterator<Entry> {
  private batch: Entry[] = [];
  private i = 0;
  private n = 0;
  private finished = false;
  private fetching: Promise<unknown> | null = null;
  private readonly cursor: { pos: Bpos; done: boolean; first: boolean };

  constructor(
    private readonly store: Store,
    private readonly id: number,
    private readonly start: Bpos,
    private readonly end: Bpos,
    private readonly reverse: boolean,
    private readonly limit: number,
    private readonly endGiven: boolean,
  ) {
    this.cursor = { pos: reverse ? end : start, done: false, first: true };
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Entry> {
    return this;
  }

  next(): Promise<IteratorResult<Entry>> {
    if (this.fetching !== null) return this.fetching.then(() => this.next());
    if (!this.finished && !this.store.isOpen()) {
      // closing or closed: the rest of a fetched batch is not handed out either
      this.finished = true;
      this.batch = [];
      return Promise.reject(new SixtreeError('ERR_CLOSED', 'store is closed'));
    }
    if (this.i < this.batch.length && !this.finished) {
      this.n++;
      return Promise.resolve({ value: this.batch[this.i++]!, done: false });
    }
    if (this.finished || this.n >= this.limit || this.cursor.done) return this.finish();
    const f = this.store.rangeFill(this.id, this.cursor, this.start, this.end, this.reverse, this.limit - this.n, this.endGiven).then(
      (b) => {
        this.fetching = null;
        this.batch = b;
        this.i = 0;
      },
      (e: unknown) => {
        this.fetching = null;
        this.finished = true;
        this.batch = [];
        throw e;
      },
    );
    this.fetching = f.catch(() => undefined);
    return f.then(() => this.next());
  }

  return(): Promise<IteratorResult<Entry>> {
    return this.finish();
  }

  private finish(): Promise<IteratorResult<Entry>> {
    this.finished = true;
    this.batch = [];
    return Promise.resolve({ value: undefined, done: true });
  }
}

function checkIo(v: unknown): 'napi' | 'koffi' {
  if (v !== 'napi' && v !== 'koffi') throw invalidArg('opts.io', v, "'napi' or 'koffi'");
  return v;
}

