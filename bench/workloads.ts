// SPDX-License-Identifier: GPL-2.0-only
/*
 * The workloads: one table, named after bcachefs's btree perf tests
 * (fs/tests.c), plus batched and concurrent variants. Each entry says what
 * the store is loaded with, what one call does, how many keys a call
 * handles, how many calls are in flight, and how the result is checked.
 *
 * Every workload starts from the same state: a fresh store preloaded (untimed)
 * with `keys` keys, the 'rand' KeySet (random u64 keys) for rand_* and the
 * 'seq' KeySet (keys 0..N-1) for seq_*. Keys beyond N are the fresh keys
 * inserts use; an insert workload stops when they run out (the tree at most
 * doubles), which the report flags.
 *
 * "ops" are always keys: keys inserted, looked up, deleted or scanned. Latency
 * is per call; `latencyPer` names the call.
 */

import type { KeySet, KeysetKind } from './keys.js';
import { Rng, valueOf } from './keys.js';
import type { Driver, ScanDriver } from './measure.js';
import type { IoBackend, Regime, StoreAdapter, StoreName, WriteOp } from './stores/adapter.js';

export const workloadNames = [
  'rand_insert',
  'rand_insert_multi',
  'rand_insert_batch',
  'rand_insert_qd8',
  'rand_insert_qd64',
  'rand_lookup',
  'rand_lookup_qd8',
  'rand_lookup_qd64',
  'rand_mixed',
  'rand_delete',
  'seq_insert',
  'seq_lookup',
  'seq_overwrite',
  'seq_delete',
] as const;
export type WorkloadName = (typeof workloadNames)[number];

/** Keys per commit of the batched insert workload, and per range of seq_delete. */
export const batchKeys = 1000;
/** Keys per commit of rand_insert_multi (bcachefs's rand_insert_multi: 8). */
export const multiKeys = 8;

export interface WorkloadContext {
  store: StoreAdapter;
  keys: KeySet;
  /** Keys preloaded: indices [0, loaded). */
  loaded: number;
  rng: Rng;
}

export interface Checker {
  /** Lookups that found nothing (every lookup asks for a loaded key: must stay 0). */
  notFound: number;
  /** After the run: undefined when the store holds what the workload wrote, else what is wrong. */
  verify(): Promise<string | undefined>;
}

export interface WorkloadDef {
  name: WorkloadName;
  description: string;
  keyset: KeysetKind;
  queueDepth: number;
  keysPerCall: number;
  latencyPer: string;
  /** Device access pattern the workload is compared with (node-sized random reads), if any. */
  limitPattern?: 'randread';
  /** True when calls use fresh keys (KeySet gets room for them). */
  insertsNewKeys: boolean;
  build(ctx: WorkloadContext): { driver: Driver | ScanDriver; checker: Checker };
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array): boolean {
  return a !== undefined && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}

async function getValue(store: StoreAdapter, index: number): Promise<Uint8Array | undefined> {
  return store.get(index);
}

async function expectValue(store: StoreAdapter, index: number, version: number, what: string): Promise<string | undefined> {
  const v = await getValue(store, index);
  if (!sameBytes(v, valueOf(index, version))) return `${what}: key index ${index} reads ${v === undefined ? 'nothing' : `${v.length} other bytes`}, expected its value v${version}`;
  return undefined;
}

async function expectAbsent(store: StoreAdapter, index: number, what: string): Promise<string | undefined> {
  const v = await getValue(store, index);
  return v === undefined ? undefined : `${what}: key index ${index} still present`;
}

/** Inserts of fresh keys [loaded, count), keysPerCall per commit. */
function insertWorkload(ctx: WorkloadContext, keysPerCall: number): { driver: Driver; checker: Checker } {
  const { store, keys } = ctx;
  let next = ctx.loaded;
  const driver: Driver = {
    async: true,
    callsLeft: () => Math.floor((keys.count - 1 - next) / keysPerCall),
    async call() {
      const first = next;
      next += keysPerCall;
      if (keysPerCall === 1) {
        await store.put(first, valueOf(first, 0));
      } else {
        const ops: WriteOp[] = new Array(keysPerCall);
        for (let j = 0; j < keysPerCall; j++) ops[j] = { index: first + j, value: valueOf(first + j, 0) };
        await store.commit(ops);
      }
      return keysPerCall;
    },
  };
  const checker: Checker = {
    notFound: 0,
    async verify() {
      if (next === ctx.loaded) return 'no key was inserted';
      return (await expectValue(store, ctx.loaded, 0, 'first insert')) ?? (await expectValue(store, next - 1, 0, 'last insert'));
    },
  };
  return { driver, checker };
}

function isPromise<T>(v: T | Promise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown } | undefined)?.then === 'function';
}

function lookupWorkload(ctx: WorkloadContext): { driver: Driver; checker: Checker } {
  const { store, rng, loaded } = ctx;
  const checker: Checker = { notFound: 0, verify: async () => (checker.notFound ? `${checker.notFound} lookups of loaded keys found nothing` : undefined) };
  const found = (v: Uint8Array | undefined): number => {
    if (v === undefined) checker.notFound++;
    return 1;
  };
  const driver: Driver = store.syncReads
    ? {
        async: false,
        callsLeft: () => Infinity,
        call() {
          const v = store.get(rng.below(loaded));
          if (isPromise(v)) return v.then(found);
          return found(v);
        },
      }
    : {
        async: true,
        callsLeft: () => Infinity,
        async call() {
          if ((await store.get(rng.below(loaded))) === undefined) checker.notFound++;
          return 1;
        },
      };
  return { driver, checker };
}

const defs: readonly WorkloadDef[] = [
  {
    name: 'rand_insert',
    description: 'insert fresh random u64 keys, one key per commit',
    keyset: 'rand',
    queueDepth: 1,
    keysPerCall: 1,
    latencyPer: 'commit of 1 key',
    insertsNewKeys: true,
    build: (ctx) => insertWorkload(ctx, 1),
  },
  {
    name: 'rand_insert_multi',
    description: `insert fresh random keys, ${multiKeys} keys per commit`,
    keyset: 'rand',
    queueDepth: 1,
    keysPerCall: multiKeys,
    latencyPer: `commit of ${multiKeys} keys`,
    insertsNewKeys: true,
    build: (ctx) => insertWorkload(ctx, multiKeys),
  },
  {
    name: 'rand_insert_batch',
    description: `insert fresh random keys, ${batchKeys} keys per commit`,
    keyset: 'rand',
    queueDepth: 1,
    keysPerCall: batchKeys,
    latencyPer: `commit of ${batchKeys} keys`,
    insertsNewKeys: true,
    build: (ctx) => insertWorkload(ctx, batchKeys),
  },
  {
    name: 'rand_insert_qd8',
    description: 'rand_insert with 8 commits in flight',
    keyset: 'rand',
    queueDepth: 8,
    keysPerCall: 1,
    latencyPer: 'commit of 1 key',
    insertsNewKeys: true,
    build: (ctx) => insertWorkload(ctx, 1),
  },
  {
    name: 'rand_insert_qd64',
    description: 'rand_insert with 64 commits in flight',
    keyset: 'rand',
    queueDepth: 64,
    keysPerCall: 1,
    latencyPer: 'commit of 1 key',
    insertsNewKeys: true,
    build: (ctx) => insertWorkload(ctx, 1),
  },
  {
    name: 'rand_lookup',
    description: 'point lookups of random loaded keys, one at a time',
    keyset: 'rand',
    queueDepth: 1,
    keysPerCall: 1,
    latencyPer: 'lookup',
    limitPattern: 'randread',
    insertsNewKeys: false,
    build: lookupWorkload,
  },
  {
    name: 'rand_lookup_qd8',
    description: 'rand_lookup with 8 lookups in flight',
    keyset: 'rand',
    queueDepth: 8,
    keysPerCall: 1,
    latencyPer: 'lookup',
    limitPattern: 'randread',
    insertsNewKeys: false,
    build: lookupWorkload,
  },
  {
    name: 'rand_lookup_qd64',
    description: 'rand_lookup with 64 lookups in flight',
    keyset: 'rand',
    queueDepth: 64,
    keysPerCall: 1,
    latencyPer: 'lookup',
    limitPattern: 'randread',
    insertsNewKeys: false,
    build: lookupWorkload,
  },
  {
    name: 'rand_mixed',
    description: 'lookup of a random loaded key; every 4th iteration reads and updates it in one commit',
    keyset: 'rand',
    queueDepth: 1,
    keysPerCall: 1,
    latencyPer: 'lookup or lookup+update commit',
    insertsNewKeys: false,
    build(ctx) {
      const { store, rng, loaded } = ctx;
      let iteration = 0;
      let lastUpdated = -1;
      const checker: Checker = {
        notFound: 0,
        async verify() {
          if (checker.notFound) return `${checker.notFound} lookups of loaded keys found nothing`;
          return lastUpdated < 0 ? 'no update ran' : expectValue(store, lastUpdated, 1, 'last update');
        },
      };
      const driver: Driver = {
        async: true,
        callsLeft: () => Infinity,
        async call() {
          const index = rng.below(loaded);
          if ((iteration++ & 3) === 0) {
            await store.getThenPut(index, valueOf(index, 1));
            lastUpdated = index;
          } else if ((await store.get(index)) === undefined) {
            checker.notFound++;
          }
          return 1;
        },
      };
      return { driver, checker };
    },
  },
  {
    name: 'rand_delete',
    description: 'delete loaded keys in random order, one key per commit',
    keyset: 'rand',
    queueDepth: 1,
    keysPerCall: 1,
    latencyPer: 'commit of 1 delete',
    insertsNewKeys: false,
    build(ctx) {
      const { store, loaded } = ctx;
      let next = 0;
      const driver: Driver = {
        async: true,
        callsLeft: () => loaded - next,
        async call() {
          await store.del(next++);
          return 1;
        },
      };
      const checker: Checker = {
        notFound: 0,
        async verify() {
          if (next === 0) return 'no key was deleted';
          return (await expectAbsent(store, next - 1, 'last delete')) ?? (next < loaded ? expectValue(store, next, 0, 'first key not deleted') : undefined);
        },
      };
      return { driver, checker };
    },
  },
  {
    name: 'seq_insert',
    description: 'append keys N, N+1, ... after the loaded 0..N-1, one key per commit',
    keyset: 'seq',
    queueDepth: 1,
    keysPerCall: 1,
    latencyPer: 'commit of 1 key',
    insertsNewKeys: true,
    build: (ctx) => insertWorkload(ctx, 1),
  },
  {
    name: 'seq_lookup',
    description: 'full ordered scan of keys 0..N-1, repeated until the time budget',
    keyset: 'seq',
    queueDepth: 1,
    keysPerCall: 1,
    latencyPer: 'key (time between consecutive keys)',
    insertsNewKeys: false,
    build(ctx) {
      const { store, loaded } = ctx;
      let shortScans = 0;
      const driver: ScanDriver = {
        async scan(onEntry) {
          let stopped = false;
          const n = await store.scan(0, loaded, () => {
            const more = onEntry();
            if (!more) stopped = true;
            return more;
          });
          if (!stopped && n !== loaded) shortScans++;
          return n;
        },
      };
      return { driver, checker: { notFound: 0, verify: async () => (shortScans ? `${shortScans} complete scans did not return all ${loaded} keys` : undefined) } };
    },
  },
  {
    name: 'seq_overwrite',
    description: 'overwrite keys 0, 1, 2, ... in order (wrapping), one key per commit',
    keyset: 'seq',
    queueDepth: 1,
    keysPerCall: 1,
    latencyPer: 'commit of 1 key',
    insertsNewKeys: false,
    build(ctx) {
      const { store, loaded } = ctx;
      let next = 0;
      let lastIndex = -1;
      let lastVersion = 0;
      const driver: Driver = {
        async: true,
        callsLeft: () => Infinity,
        async call() {
          const index = next % loaded;
          const version = 1 + Math.floor(next / loaded);
          next++;
          await store.put(index, valueOf(index, version));
          lastIndex = index;
          lastVersion = version;
          return 1;
        },
      };
      return { driver, checker: { notFound: 0, verify: async () => (lastIndex < 0 ? 'no overwrite ran' : expectValue(store, lastIndex, lastVersion, 'last overwrite')) } };
    },
  },
  {
    name: 'seq_delete',
    description: `delete keys 0..N-1 as ranges of ${batchKeys} keys, one range per commit`,
    keyset: 'seq',
    queueDepth: 1,
    keysPerCall: batchKeys,
    latencyPer: `commit of a ${batchKeys}-key range delete`,
    insertsNewKeys: false,
    build(ctx) {
      const { store, loaded } = ctx;
      let next = 0;
      const driver: Driver = {
        async: true,
        callsLeft: () => Math.ceil((loaded - next) / batchKeys),
        async call() {
          const from = next;
          const to = Math.min(loaded, from + batchKeys);
          next = to;
          await store.deleteRange(from, to);
          return to - from;
        },
      };
      const checker: Checker = {
        notFound: 0,
        async verify() {
          if (next === 0) return 'no range was deleted';
          return (await expectAbsent(store, 0, 'first range')) ?? (await expectAbsent(store, next - 1, 'last range')) ?? (next < loaded ? expectValue(store, next, 0, 'first key not deleted') : undefined);
        },
      };
      return { driver, checker };
    },
  },
];

export const workloads: ReadonlyMap<WorkloadName, WorkloadDef> = new Map(defs.map((d) => [d.name, d]));

export function workloadDef(name: WorkloadName): WorkloadDef {
  const def = workloads.get(name);
  if (!def) throw new Error(`unknown workload ${name}`);
  return def;
}

/** Size of the KeySet a workload needs: the loaded keys, room for inserts, and one key past the end (range bounds). */
export function keysetCount(def: WorkloadDef, loaded: number): number {
  const insertBudget = def.insertsNewKeys ? Math.max(loaded, 64 * def.keysPerCall, 10_000) : 0;
  return loaded + insertBudget + 1;
}

/** One workload on one store, as the parent sends it to a worker. */
export interface WorkloadJob {
  kind: 'workload';
  workload: WorkloadName;
  store: StoreName;
  regime: Regime;
  /** Keys preloaded. */
  keyCount: number;
  nodeSizeBytes: number;
  io: IoBackend;
  /** sixtree: open with inlineFlush. */
  inlineFlush?: boolean;
  /** A fresh, empty directory for this job's files (run.ts creates it, and removes it after the child exits). */
  dir: string;
  devicePath?: string;
  deviceSizeBytes: number;
  cacheSizeBytes: number;
  timeMs: number;
  warmupMs: number;
}
