// SPDX-License-Identifier: GPL-2.0-only
/*
 * Type-level contract checks (/work/shared/API.md) of the exported types.
 *
 * Two layers:
 *  1. expectTypeOf assertions in this file. They are checked when the project
 *     compiles (`tsc -p tsconfig.json` includes test/), so a regression breaks
 *     the build; at run time they are no-ops. Only checks the declared types
 *     meet today belong here.
 *  2. Contract snippets compiled at test time with the TypeScript compiler API
 *     (in-memory files next to this one, never written to disk): code written
 *     against API.md's declarations must compile, and API.md's option types
 *     must reject misspelled options at compile time. A mismatch is an
 *     ordinary test failure that lists the compiler diagnostics, instead of
 *     a broken build.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import {
  Iter,
  POS_MAX,
  POS_MIN,
  SixtreeError,
  Store,
  Transaction,
  bposCmp,
  pos,
  type Bpos,
  type Entry,
  type Hole,
  type NodeInfo,
  type PosLike,
  type SixtreeErrorCode,
  type StoreStats,
} from '../src/index.js';

/* API.md's declarations, spelled out. */
interface ContractBpos {
  readonly inode: bigint;
  readonly offset: bigint;
  readonly snapshot: number;
}
type ContractPosLike = ContractBpos | { inode: bigint | number; offset: bigint | number; snapshot?: number };
interface ContractEntry {
  pos: ContractBpos;
  value: Uint8Array;
  start?: ContractBpos;
  size?: bigint;
  valueOffset?: bigint;
}
interface ContractHole {
  hole: true;
  pos: ContractBpos;
  start?: ContractBpos;
  size?: bigint;
}
interface ContractNodeInfo {
  level: number;
  minKey: ContractBpos;
  maxKey: ContractBpos;
  keys: number;
  bytes: number;
}

describe('exported types (compile-time, checked by tsc)', () => {
  it('positions: Bpos, PosLike, pos, POS_MIN, POS_MAX, bposCmp', () => {
    expectTypeOf<Bpos>().toEqualTypeOf<ContractBpos>();
    expectTypeOf<PosLike>().toEqualTypeOf<ContractPosLike>();
    expectTypeOf(pos).toEqualTypeOf<(inode: bigint | number, offset: bigint | number, snapshot?: number) => Bpos>();
    expectTypeOf(pos).toBeCallableWith(1, 2);
    expectTypeOf(pos).toBeCallableWith(1n, 2n, 3);
    expectTypeOf(pos).returns.toEqualTypeOf<Bpos>();
    expectTypeOf(POS_MIN).toEqualTypeOf<Bpos>();
    expectTypeOf(POS_MAX).toEqualTypeOf<Bpos>();
    expectTypeOf(bposCmp).toEqualTypeOf<(a: PosLike, b: PosLike) => -1 | 0 | 1>();
    expectTypeOf(bposCmp).toBeCallableWith({ inode: 1, offset: 2 }, pos(1, 2));
    // readonly fields
    expectTypeOf<Bpos>().not.toExtend<{ inode: bigint; offset: bigint; snapshot: number; x: 1 }>();
  });

  it('Entry, Hole, NodeInfo', () => {
    expectTypeOf<Entry>().toEqualTypeOf<ContractEntry>();
    expectTypeOf<Hole>().toEqualTypeOf<ContractHole>();
    expectTypeOf<NodeInfo>().toEqualTypeOf<ContractNodeInfo>();
  });

  it('Store.format / Store.open accept the documented arguments and resolve to void / Store', () => {
    expectTypeOf(Store.format).returns.toEqualTypeOf<Promise<void>>();
    expectTypeOf(Store.format).toBeCallableWith('/dev/x', { btrees: [{ name: 'kv' }] });
    expectTypeOf(Store.format).toBeCallableWith('/dev/x', {
      btrees: [{ name: 'kv' }, { name: 'ext', extents: true }],
      size: 1n << 30n,
      nodeSize: 1 << 18,
      blockSize: 4096,
      journalSize: 1 << 22,
      force: true,
    });
    expectTypeOf(Store.format).toBeCallableWith('/dev/x', { btrees: [{ name: 'kv' }], size: 64 << 20 });
    expectTypeOf(Store.open).returns.toEqualTypeOf<Promise<Store>>();
    expectTypeOf(Store.open).toBeCallableWith('/dev/x');
    expectTypeOf(Store.open).toBeCallableWith('/dev/x', { cacheSize: 1 << 26, readOnly: true, io: 'napi' });
    expectTypeOf(Store.open).toBeCallableWith('/dev/x', { io: 'koffi' });
  });

  it('Store members', () => {
    expectTypeOf<Store['btrees']>().toEqualTypeOf<readonly string[]>();
    expectTypeOf<Store['nodeSize']>().toEqualTypeOf<number>();
    expectTypeOf<Store['maxValueSize']>().toEqualTypeOf<number>();
    type S = Store;
    expectTypeOf<ReturnType<S['get']>>().toEqualTypeOf<Promise<Uint8Array | undefined>>();
    expectTypeOf<S['get']>().toBeCallableWith('kv', { inode: 1, offset: 2 });
    expectTypeOf<S['get']>().toBeCallableWith('kv', pos(1, 2));
    expectTypeOf<ReturnType<S['put']>>().toEqualTypeOf<Promise<void>>();
    expectTypeOf<S['put']>().toBeCallableWith('kv', { inode: 1n, offset: 2, snapshot: 3 }, new Uint8Array(1));
    expectTypeOf<S['put']>().toBeCallableWith('kv', pos(1, 2), Buffer.from('x'));
    expectTypeOf<ReturnType<S['del']>>().toEqualTypeOf<Promise<void>>();
    expectTypeOf<S['del']>().toBeCallableWith('kv', pos(1, 2));
    expectTypeOf<ReturnType<S['range']>>().toEqualTypeOf<AsyncIterableIterator<Entry>>();
    expectTypeOf<S['range']>().toBeCallableWith('kv');
    expectTypeOf<S['range']>().toBeCallableWith('kv', { start: pos(1, 0), end: POS_MAX, reverse: true, limit: 10 });
    // addition: store.clear
    expectTypeOf<ReturnType<S['clear']>>().toEqualTypeOf<Promise<void>>();
    expectTypeOf<S['clear']>().toBeCallableWith('kv');
    expectTypeOf<S['clear']>().toBeCallableWith('kv', { start: { inode: 1, offset: 0 }, end: POS_MAX, keysPerCommit: 100 });
    expectTypeOf<ReturnType<S['flush']>>().toEqualTypeOf<Promise<void>>();
    expectTypeOf<S['shrink']>().toEqualTypeOf<(nr?: number) => number>();
    expectTypeOf<ReturnType<S['stats']>>().toEqualTypeOf<StoreStats>();
    expectTypeOf<S['toText']>().toEqualTypeOf<() => string>();
    expectTypeOf<S['close']>().toEqualTypeOf<() => Promise<void>>();
    // transact<T>: the callback's (awaited) result type comes back
    const s = null as unknown as Store;
    const _t1 = () => s.transact(() => 42);
    const _t2 = () => s.transact(async (tx) => tx.get('kv', pos(1, 1)));
    const _t3 = () => s.transact((tx) => tx.put('kv', pos(1, 1), new Uint8Array(1)));
    expectTypeOf(_t1).returns.toEqualTypeOf<Promise<number>>();
    expectTypeOf(_t2).returns.toEqualTypeOf<Promise<Uint8Array | undefined>>();
    expectTypeOf(_t3).returns.toEqualTypeOf<Promise<void>>();
    expectTypeOf<Parameters<S['transact']>[0]>().parameter(0).toEqualTypeOf<Transaction>();
  });

  it('StoreStats has every field API.md lists', () => {
    expectTypeOf<StoreStats['cache']>().toExtend<{
      nodes: number;
      dirty: number;
      bytes: number;
      budgetBytes: number;
      reserve: number;
      hits: number;
      misses: number;
      evictions: number;
      cannibalized: number;
      notFreed: Record<string, number>;
    }>();
    expectTypeOf<StoreStats['io']>().toExtend<{ reads: number; writes: number; bytesRead: number; bytesWritten: number; flushes: number }>();
    expectTypeOf<StoreStats['journal']>().toExtend<{ seq: number; lastSeq: number; bytesUsed: number; bytesTotal: number }>();
    expectTypeOf<StoreStats['transactions']>().toExtend<{ commits: number; restarts: number }>();
  });

  it('Transaction methods', () => {
    type T = Transaction;
    expectTypeOf<ReturnType<T['get']>>().toEqualTypeOf<Promise<Uint8Array | undefined>>();
    expectTypeOf<T['get']>().toBeCallableWith('kv', { inode: 1, offset: 2 });
    expectTypeOf<ReturnType<T['put']>>().toEqualTypeOf<void>();
    expectTypeOf<T['put']>().toBeCallableWith('kv', pos(1, 2), new Uint8Array(1));
    expectTypeOf<ReturnType<T['del']>>().toEqualTypeOf<void>();
    expectTypeOf<T['del']>().toBeCallableWith('kv', { inode: 1n, offset: 2n });
    expectTypeOf<ReturnType<T['putExtent']>>().toEqualTypeOf<void>();
    expectTypeOf<T['putExtent']>().toBeCallableWith('ext', pos(1, 0), 10, new Uint8Array(1));
    expectTypeOf<T['putExtent']>().toBeCallableWith('ext', { inode: 1, offset: 0 }, 10n, new Uint8Array(1));
    expectTypeOf<ReturnType<T['delRange']>>().toEqualTypeOf<void>();
    expectTypeOf<T['delRange']>().toBeCallableWith('ext', pos(1, 0), { inode: 1, offset: 5 });
    expectTypeOf<ReturnType<T['iter']>>().toEqualTypeOf<Iter>();
    expectTypeOf<T['iter']>().toBeCallableWith('kv');
    expectTypeOf<T['iter']>().toBeCallableWith('kv', pos(1, 0));
    expectTypeOf<T['iter']>().toBeCallableWith('kv', { inode: 1, offset: 0 }, { slots: true, intent: false, prefetch: true, end: { inode: 2, offset: 0 } });
  });

  it('Iter methods', () => {
    type I = Iter;
    expectTypeOf<I['pos']>().toEqualTypeOf<Bpos>();
    expectTypeOf<I['peek']>().toEqualTypeOf<() => Promise<Entry | null>>();
    expectTypeOf<I['next']>().toEqualTypeOf<() => Promise<Entry | null>>();
    expectTypeOf<I['peekPrev']>().toEqualTypeOf<() => Promise<Entry | null>>();
    expectTypeOf<I['prev']>().toEqualTypeOf<() => Promise<Entry | null>>();
    expectTypeOf<I['peekSlot']>().toEqualTypeOf<() => Promise<Entry | Hole>>();
    expectTypeOf<I['nextSlot']>().toEqualTypeOf<() => Promise<Entry | Hole | null>>();
    expectTypeOf<ReturnType<I['setPos']>>().toEqualTypeOf<void>();
    expectTypeOf<I['setPos']>().toBeCallableWith(pos(1, 2));
    expectTypeOf<I['setPos']>().toBeCallableWith({ inode: 1, offset: 2 });
    expectTypeOf<I['peekNode']>().toEqualTypeOf<() => Promise<NodeInfo | null>>();
    expectTypeOf<I['nextNode']>().toEqualTypeOf<() => Promise<NodeInfo | null>>();
    expectTypeOf<I[typeof Symbol.asyncIterator]>().toEqualTypeOf<() => AsyncIterator<Entry>>();
    expectTypeOf<I>().toExtend<AsyncIterable<Entry>>();
  });

  it('SixtreeError', () => {
    expectTypeOf<SixtreeError>().toExtend<Error>();
    expectTypeOf<SixtreeError['code']>().toEqualTypeOf<SixtreeErrorCode>();
    expectTypeOf<'ERR_TX_DONE'>().toExtend<SixtreeErrorCode>();
    expectTypeOf<'ERR_TOO_MANY_RESTARTS'>().toExtend<SixtreeErrorCode>();
    expectTypeOf<'ERR_NOPE'>().not.toExtend<SixtreeErrorCode>();
  });
});

/* ------------------------------------------------------------------ layer 2 */

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..');

/** In-memory contract snippets, compiled as if they were files in test/. */
const SNIPPETS: Record<string, string> = {
  // Control: the harness resolves the package and does report a type error in it.
  control: `
    import { pos, type Bpos } from '../src/index.js';
    const b: Bpos = pos(1, 2);
    export const n: number = b.inode;
  `,
  // Code written against API.md's declarations must compile.
  'contract-usage': `
    import { Store, pos, POS_MIN, POS_MAX, bposCmp, SixtreeError, type PosLike, type Entry, type Bpos } from '../src/index.js';
    export async function use(path: string): Promise<void> {
      await Store.format(path, { btrees: [{ name: 'kv' }, { name: 'ext', extents: true }], size: 1n << 30n, nodeSize: 1 << 18, blockSize: 4096, journalSize: 1 << 22, force: true });
      const store: Store = await Store.open(path, { cacheSize: 64 << 20, readOnly: false, io: 'napi' });
      const p: PosLike = { inode: 1, offset: 2 };
      await store.put('kv', p, new Uint8Array(1));
      const v: Uint8Array | undefined = await store.get('kv', { inode: 1n, offset: 2n, snapshot: 0 });
      void v;
      // range opts take PosLike (API.md: start?: PosLike; end?: PosLike)
      const start: PosLike = { inode: 1, offset: 0 };
      for await (const e of store.range('kv', { start, end: { inode: 2, offset: 0 }, reverse: false, limit: 10 })) {
        const x: Entry = e;
        const b: Bpos = x.pos;
        void b;
      }
      for await (const e of store.range('ext', { start: POS_MIN, end: POS_MAX })) void e;
      const n: number = await store.transact(async (tx) => {
        tx.putExtent('ext', { inode: 1, offset: 0 }, 8, new Uint8Array(1));
        tx.delRange('ext', pos(1, 2), { inode: 1, offset: 4 });
        const it = tx.iter('kv', { inode: 1, offset: 0 }, { slots: false, intent: true, prefetch: false, end: { inode: 2, offset: 0 } });
        it.setPos({ inode: 1, offset: 1 });
        for await (const e of it) void e;
        return bposCmp(pos(1, 2), { inode: 1, offset: 3 });
      });
      void n;
      const err: unknown = null;
      if (err instanceof SixtreeError && err.code === 'ERR_LOCKED') return;
      await store.close();
    }
  `,
  // API.md gives Store.open/format precise parameter types; check they are exactly those.
  'open-format-signatures': `
    import { expectTypeOf } from 'vitest';
    import { Store } from '../src/index.js';
    type FormatOpts = {
      btrees: Array<{ name: string; extents?: boolean }>;
      size?: number | bigint;
      nodeSize?: number;
      blockSize?: number;
      journalSize?: number;
      force?: boolean;
    };
    type OpenOpts = { cacheSize?: number; readOnly?: boolean; io?: 'napi' | 'koffi'; inlineFlush?: boolean };
    expectTypeOf(Store.open).parameter(0).toEqualTypeOf<string>();
    expectTypeOf(Store.format).parameter(0).toEqualTypeOf<string>();
    // the documented option fields are all accepted (no required extras), and their types are the documented ones
    expectTypeOf<FormatOpts>().toExtend<Parameters<typeof Store.format>[1]>();
    expectTypeOf<OpenOpts>().toExtend<NonNullable<Parameters<typeof Store.open>[1]>>();
    expectTypeOf<NonNullable<Parameters<typeof Store.open>[1]>>().toMatchObjectType<OpenOpts>();
    // additions are allowed (API.md: "add to it freely"): sixtree's format also takes io
    expectTypeOf<Omit<Parameters<typeof Store.format>[1], 'io'>>().toMatchObjectType<FormatOpts>();
  `,
  // With API.md's option types, mistakes are compile errors (excess property checks, wrong types).
  'misuse-rejected': `
    import { Store, pos } from '../src/index.js';
    export async function misuse(path: string, store: Store): Promise<void> {
      // @ts-expect-error misspelled option name
      await Store.open(path, { cachesize: 1 });
      // @ts-expect-error wrong option type
      await Store.open(path, { readOnly: 'yes' });
      // @ts-expect-error path must be a string
      await Store.open(42);
      // @ts-expect-error misspelled option name
      await Store.format(path, { btrees: [{ name: 'kv' }], nodesize: 4096 });
      // @ts-expect-error btrees is required
      await Store.format(path, { size: 1 << 20 });
      // @ts-expect-error a position is not a string
      await store.get('kv', '1:2');
      // @ts-expect-error a value is a Uint8Array
      await store.put('kv', pos(1, 2), 'text');
      // @ts-expect-error misspelled range option
      store.range('kv', { revers: true });
    }
  `,
};

describe('contract snippets compiled with the TypeScript compiler', () => {
  const diagnostics = new Map<string, string[]>();

  beforeAll(() => {
    const cfgPath = join(ROOT, 'tsconfig.json');
    const cfg = ts.readConfigFile(cfgPath, ts.sys.readFile);
    if (cfg.error) throw new Error(ts.flattenDiagnosticMessageText(cfg.error.messageText, '\n'));
    const parsed = ts.parseJsonConfigFileContent(cfg.config, ts.sys, ROOT);
    const options: ts.CompilerOptions = { ...parsed.options, noEmit: true, skipLibCheck: true, noUnusedLocals: false };
    const files = new Map(Object.entries(SNIPPETS).map(([name, text]) => [join(HERE, `__contract_${name}__.ts`), text]));
    const host = ts.createCompilerHost(options, true);
    const getSourceFile = host.getSourceFile.bind(host);
    const fileExists = host.fileExists.bind(host);
    const readFile = host.readFile.bind(host);
    host.getSourceFile = (fileName, lang, onError, shouldCreate) => {
      const text = files.get(fileName);
      return text !== undefined ? ts.createSourceFile(fileName, text, lang, true) : getSourceFile(fileName, lang, onError, shouldCreate);
    };
    host.fileExists = (f) => files.has(f) || fileExists(f);
    host.readFile = (f) => files.get(f) ?? readFile(f);
    const program = ts.createProgram([...files.keys()], options, host);
    for (const [file] of files) {
      const sf = program.getSourceFile(file)!;
      const ds = [...program.getSyntacticDiagnostics(sf), ...program.getSemanticDiagnostics(sf)];
      const name = /__contract_(.*)__\.ts$/.exec(file)![1]!;
      diagnostics.set(
        name,
        ds.map((d) => {
          const line = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start).line + 1 : 0;
          const src = SNIPPETS[name]!.split('\n')[line - 1]?.trim() ?? '';
          return `line ${line}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n').split('\n')[0]} -- ${src}`;
        }),
      );
    }
  }, 60_000);

  it('control: the harness sees the package types (exactly one planted error)', () => {
    const d = diagnostics.get('control')!;
    expect(d).toHaveLength(1);
    expect(d[0]).toMatch(/bigint.*number/);
  });

  it('code written against API.md’s declarations compiles (range opts take PosLike, etc.)', () => {
    expect(diagnostics.get('contract-usage')).toEqual([]);
  });

  it('Store.open / Store.format parameters have API.md’s types', () => {
    expect(diagnostics.get('open-format-signatures')).toEqual([]);
  });

  it('API.md’s types reject misspelled options and wrong argument types at compile time', () => {
    expect(diagnostics.get('misuse-rejected')).toEqual([]);
  });
});
