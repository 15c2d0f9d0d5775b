// SPDX-License-Identifier: GPL-2.0-only
/*
 * In-node key storage costs (bset.ts, bkey-format.ts, node-io.ts):
 *  - lookup in a cached node: the aux search tree (NodeIter.init: the
 *    search's position summary, Eytzinger descent over the group heads'
 *    summaries, scan one group) against a plain binary search over the packed
 *    keys (a key offset table + packed compares, the search packed with
 *    formatPackPos), and against the same binary search comparing position
 *    summaries as the tree does (formatPosSummary + packedPosSummary), both
 *    hot (one node) and cold (a random node out of COLD_MIB of nodes per
 *    lookup). The baselines' offset tables (4 bytes a key) sit outside the
 *    aux budget, in their own arrays;
 *  - lookup in the writable set (rw lookup table), iteration, inserts,
 *    read+validate, sortInto, write prepare, pack/unpack, crc32c.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/bset.js [--quick]
 *
 * Keys: one inode, distinct random 40-bit offsets, 16-byte values, journal
 * seqs over a range of 50; the node's format comes from its keys (as after a
 * split), so every key is packed. Each tinybench task runs a batch of
 * operations on precomputed inputs; the table shows ns per operation (the
 * task's median latency divided by the batch: the median resists the noise
 * of a shared machine better than the mean).
 */

import { Bench } from 'tinybench';
import { bkeyValue, type BkeyI } from '../src/btree/bkey.js';
import { AUX_GROUP_BYTES, NodeIter, NodeKeys, bsetDebug } from '../src/btree/bset.js';
import { nodeReadValidate, nodeWriteDone, nodeWritePrepare } from '../src/btree/node-io.js';
import { BkeyFormat, formatFromKeys, formatFromRange, formatPackFields, formatPackPos, formatPosSummary, formatUnpackPos, packedPosCmp, packedPosSummary } from '../src/format/bkey-format.js';
import { crc32c } from '../src/util/crc32c.js';

const quick = process.argv.includes('--quick');
const TIME_MS = quick ? 150 : 500;
const BATCH = 1024;
const BLOCK = 4096;
const COLD_MIB = quick ? 64 : 128;
const POS_MIN = new Uint32Array(5);
const POS_MAX = new Uint32Array(5).fill(0xffffffff);

/* deterministic PRNG (mulberry32) */
let seed = 12345;
function u32(): number {
  let t = (seed = (seed + 0x6d2b79f5) >>> 0);
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return (t ^ (t >>> 14)) >>> 0;
}

function pos(inode: number, offHi: number, offLo: number): Uint32Array {
  return Uint32Array.of(0, inode, offHi, offLo, 0);
}

function mk(nodeSize: number): NodeKeys {
  const k = new NodeKeys(nodeSize, BLOCK);
  k.attach(new Uint8Array(nodeSize), new Uint8Array(NodeKeys.auxBytes(nodeSize)));
  return k;
}

function fresh(nodeSize: number, f: BkeyFormat, seq: number): NodeKeys {
  const k = mk(nodeSize);
  k.initEmpty({ btreeId: 0, level: 0, minKey: POS_MIN, maxKey: POS_MAX, seq, format: f });
  return k;
}

/** Sorted distinct random positions (one inode, 40-bit offsets) with 16-byte values. */
function makeKeys(n: number): BkeyI[] {
  const set = new Set<number>();
  while (set.size < n) set.add(u32() * 256 + (u32() & 0xff));
  const offs = [...set].sort((a, b) => a - b);
  return offs.map((o, i) => bkeyValue(pos(1, Math.floor(o / 2 ** 32), o >>> 0), new Uint8Array(16).fill(i & 0xff), 1000 + (i % 50)));
}

/** A written, cached node (one read-only set with its Eytzinger tree) ~90% full, and its keys. */
function buildNode(nodeSize: number) {
  const ks = makeKeys(Math.floor((nodeSize * 0.9) / 32));
  const f = formatFromKeys(ks);
  const keys = fresh(nodeSize, f, 77);
  const inserted = ks.filter((k) => keys.insertKey(k));
  nodeWritePrepare(keys);
  nodeWriteDone(keys);
  return { keys, ks: inserted, f };
}

/** Key offsets of set 0: the binary-search baseline's table. */
function keyOffsets(keys: NodeKeys): Uint32Array {
  const out: number[] = [];
  for (let k = keys.setStartOf(0); k < keys.setEndOf(0); k = keys.keyNext(k)) out.push(k);
  return Uint32Array.from(out);
}

const sp = new Uint32Array(8);

/** Baseline: first key >= search by binary search over the packed keys of a one-set node. */
function binarySearch(keys: NodeKeys, offs: Uint32Array, search: Uint32Array): number {
  const f = keys.format;
  const d32 = keys.d32;
  formatPackPos(f, search, 0, sp, 0);
  let lo = 0, hi = offs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (packedPosCmp(f, d32, (offs[mid]! >>> 2) + 1, sp, 0) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo < offs.length ? offs[lo]! : -1;
}

/** Baseline 2: the same search comparing position summaries (exact formats: the bench's keys always give one). */
function binarySearchSum(keys: NodeKeys, offs: Uint32Array, search: Uint32Array): number {
  const f = keys.format;
  const d32 = keys.d32;
  const y = formatPosSummary(f, search, 0);
  let lo = 0, hi = offs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (packedPosSummary(f, d32, (offs[mid]! >>> 2) + 1) < y) lo = mid + 1;
    else hi = mid;
  }
  return lo < offs.length ? offs[lo]! : -1;
}

interface Row {
  bench: string;
  node: string;
  nsPerOp: number;
  note: string;
}

const rows: Row[] = [];
let sink = 0;

type Task = { name: string; node: string; ops: number; fn: () => void; note?: string };

async function run(tasks: Task[]): Promise<void> {
  const b = new Bench({ time: TIME_MS, warmupTime: Math.min(200, TIME_MS) });
  for (const t of tasks) b.add(`${t.name} [${t.node}]`, t.fn);
  await b.run();
  for (const t of tasks) {
    const r = b.getTask(`${t.name} [${t.node}]`)!.result as { latency?: { p50: number } } | undefined;
    rows.push({ bench: t.name, node: t.node, nsPerOp: ((r?.latency?.p50 ?? NaN) * 1e6) / t.ops, note: t.note ?? '' });
  }
}

async function main(): Promise<void> {
  console.log(`node ${process.version}, AUX_GROUP_BYTES ${AUX_GROUP_BYTES}, batch ${BATCH}, ${TIME_MS} ms per task, cold set ${COLD_MIB} MiB${quick ? ' (quick)' : ''}`);
  for (const nodeSize of [4096, 65536, 262144]) {
    const label = `${nodeSize / 1024} KiB`;
    const { keys, ks, f } = buildNode(nodeSize);
    const offs = keyOffsets(keys);
    /* searches: half hit a key, half fall between keys */
    const searches: Uint32Array[] = [];
    for (let i = 0; i < BATCH; i++) {
      const s = ks[u32() % ks.length]!.p.slice();
      if (i & 1) s[3] = (s[3]! + 1) >>> 0;
      searches.push(s);
    }
    const it = new NodeIter();
    if (!f.sumExact) throw new Error('bench keys: expected a format with exact summaries');
    for (const s of searches) {
      it.init(keys, s, 0);
      if (it.peek() !== binarySearch(keys, offs, s) || it.peek() !== binarySearchSum(keys, offs, s)) throw new Error('aux search and binary search disagree');
    }
    const note = `${offs.length} keys, ${((keys.liveU64s * 8) / offs.length).toFixed(0)} B/key, pos ${f.posBits} bits`;

    /* cold: many copies of the node, a random one per lookup */
    const nNodes = Math.max(2, Math.floor((COLD_MIB << 20) / nodeSize));
    const nodes: NodeKeys[] = [];
    const tables: Uint32Array[] = [];
    for (let i = 0; i < nNodes; i++) {
      const k = fresh(nodeSize, f, 100 + i);
      keys.sortInto(k);
      writeOut(k);
      nodes.push(k);
      tables.push(keyOffsets(k));
    }
    const pick = Uint32Array.from({ length: BATCH }, () => u32() % nNodes);
    const coldNote = `${nNodes} nodes (${COLD_MIB} MiB), random node per lookup`;

    await run([
      { name: 'lookup hot: aux tree (NodeIter.init)', node: label, ops: BATCH, note, fn: () => {
        for (let i = 0; i < BATCH; i++) {
          it.init(keys, searches[i]!, 0);
          sink += it.peek();
        }
      } },
      { name: 'lookup hot: aux tree (lowerBound alone)', node: label, ops: BATCH, note: 'without the iterator', fn: () => {
        for (let i = 0; i < BATCH; i++) {
          keys.prepareSearch(searches[i]!, 0);
          sink += keys.lowerBound(0, searches[i]!, 0, false);
        }
      } },
      { name: 'lookup hot: binary search, packed keys', node: label, ops: BATCH, note: 'offset table + packed compares', fn: () => {
        for (let i = 0; i < BATCH; i++) sink += binarySearch(keys, offs, searches[i]!);
      } },
      { name: 'lookup hot: binary search, summaries', node: label, ops: BATCH, note: 'offset table + summary compares', fn: () => {
        for (let i = 0; i < BATCH; i++) sink += binarySearchSum(keys, offs, searches[i]!);
      } },
      { name: 'lookup cold: aux tree (NodeIter.init)', node: label, ops: BATCH, note: coldNote, fn: () => {
        for (let i = 0; i < BATCH; i++) {
          it.init(nodes[pick[i]!]!, searches[i]!, 0);
          sink += it.peek();
        }
      } },
      { name: 'lookup cold: aux tree (lowerBound alone)', node: label, ops: BATCH, note: 'without the iterator', fn: () => {
        for (let i = 0; i < BATCH; i++) {
          const k = nodes[pick[i]!]!;
          k.prepareSearch(searches[i]!, 0);
          sink += k.lowerBound(0, searches[i]!, 0, false);
        }
      } },
      { name: 'lookup cold: binary search, packed keys', node: label, ops: BATCH, note: coldNote, fn: () => {
        for (let i = 0; i < BATCH; i++) sink += binarySearch(nodes[pick[i]!]!, tables[pick[i]!]!, searches[i]!);
      } },
      { name: 'lookup cold: binary search, summaries', node: label, ops: BATCH, note: coldNote, fn: () => {
        for (let i = 0; i < BATCH; i++) sink += binarySearchSum(nodes[pick[i]!]!, tables[pick[i]!]!, searches[i]!);
      } },
      { name: 'iterate (NodeIter.advance + peek)', node: label, ops: BATCH, fn: () => {
        it.initStart(keys);
        for (let i = 0; i < BATCH; i++) {
          if (it.peek() < 0) it.initStart(keys);
          sink += it.peek();
          it.advance();
        }
      } },
    ]);
    /*
     * cold, in the format of a rightmost node (range to POS_MAX: 160 position
     * bits, every summary equal over these keys): its sets search with
     * summary windows; the same nodes built without windows for comparison
     */
    const wide = formatFromRange(POS_MIN, POS_MAX);
    const wideNodes = (windows: boolean): NodeKeys[] => {
      bsetDebug.windows = windows;
      try {
        return Array.from({ length: Math.max(2, nNodes >>> 1) }, (_, i) => {
          const k = fresh(nodeSize, wide, 300 + i);
          keys.sortInto(k);
          writeOut(k);
          return k;
        });
      } finally {
        bsetDebug.windows = true;
      }
    };
    for (const [windows, name] of [[true, 'lookup cold: wide format, summary windows'], [false, 'lookup cold: wide format, no windows']] as const) {
      const wn = wideNodes(windows);
      if (wn[0]!.setWindowed(0) !== windows) throw new Error(`wide-format node: windowed ${wn[0]!.setWindowed(0)}, expected ${windows}`);
      await run([
        { name, node: label, ops: BATCH, note: `${wn.length} nodes, format of a range to POS_MAX (${wide.posBits} position bits)`, fn: () => {
          for (let i = 0; i < BATCH; i++) {
            it.init(wn[pick[i]! % wn.length]!, searches[i]!, 0);
            sink += it.peek();
          }
        } },
      ]);
    }
    nodes.length = 0;
    tables.length = 0;

    /* the writable set: the same keys, unwritten */
    const rw = fresh(nodeSize, f, 78);
    for (const k of ks) rw.insertKey(k);
    const it2 = new NodeIter();
    /* inserts in random order into a fresh node, restarting when all are in */
    const shuffled = ks.slice();
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = u32() % (i + 1);
      [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
    }
    const ins = fresh(nodeSize, f, 79);
    let ii = 0;
    await run([
      { name: 'lookup hot: writable set (rw table)', node: label, ops: BATCH, fn: () => {
        for (let i = 0; i < BATCH; i++) {
          it2.init(rw, searches[i]!, 0);
          sink += it2.peek();
        }
      } },
      { name: 'insertKey, random order', node: label, ops: BATCH, note: 'avg over filling an empty node', fn: () => {
        for (let i = 0; i < BATCH; i++) {
          if (ii >= shuffled.length) {
            ins.initEmpty({ btreeId: 0, level: 0, minKey: POS_MIN, maxKey: POS_MAX, seq: 79, format: f });
            ii = 0;
          }
          ins.insertKey(shuffled[ii++]!);
        }
      } },
    ]);

    /* read + validate: the image of a node written in 4 appends */
    const img = fresh(nodeSize, f, 80);
    const disk = new Uint8Array(nodeSize);
    for (let q = 0; q < 4; q++) {
      for (let i = q; i < ks.length; i += 4) img.insertKey(ks[i]!);
      const w = nodeWritePrepare(img);
      if (w) {
        disk.set(w.bytes, w.offsetBytes);
        nodeWriteDone(img);
      }
    }
    const rd = mk(nodeSize);
    const expect = { btreeId: 0, level: 0, minKey: POS_MIN, maxKey: POS_MAX, seq: 80 };
    const wn = mk(nodeSize);
    const build = () => {
      wn.initEmpty({ btreeId: 0, level: 0, minKey: POS_MIN, maxKey: POS_MAX, seq: 81, format: f });
      keys.sortInto(wn);
    };
    await run([
      { name: 'node read+validate (4 bsets)', node: label, ops: 1, note: `per node, ${img.nrKeys} keys, ${img.writtenBytes / 1024} KiB`, fn: () => {
        rd.data.set(disk);
        const r = nodeReadValidate(rd, expect);
        if (!r.ok) throw new Error(r.message);
      } },
      { name: 'sortInto (split/rewrite build)', node: label, ops: 1, note: 'per node, same format: raw copies', fn: build },
      { name: 'sortInto + write prepare + done', node: label, ops: 1, note: 'per node', fn: () => {
        build();
        nodeWritePrepare(wn);
        nodeWriteDone(wn);
      } },
    ]);
  }

  /* pack / unpack / checksum */
  const ks = makeKeys(BATCH);
  const f = formatFromKeys(ks);
  const buf = new Uint32Array(16);
  const out = new Uint32Array(5);
  const packed = ks.map((k) => {
    const d = new Uint32Array(f.fieldWords);
    formatPackFields(f, k.p, 0, k.size, k.version, d, 0);
    return d;
  });
  const data = new Uint8Array(256 * 1024);
  for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
  await run([
    { name: 'pack key (formatPackFields)', node: '-', ops: BATCH, note: f.toText(), fn: () => {
      for (let i = 0; i < BATCH; i++) formatPackFields(f, ks[i]!.p, 0, ks[i]!.size, ks[i]!.version, buf, 0);
    } },
    { name: 'pack search (formatPackPos)', node: '-', ops: BATCH, fn: () => {
      for (let i = 0; i < BATCH; i++) formatPackPos(f, ks[i]!.p, 0, buf, 0);
    } },
    { name: 'unpack position (formatUnpackPos)', node: '-', ops: BATCH, fn: () => {
      for (let i = 0; i < BATCH; i++) formatUnpackPos(f, packed[i]!, 0, out, 0);
    } },
    { name: 'crc32c (util/crc32c: native), per KiB', node: '-', ops: 256, note: '256 KiB buffers', fn: () => {
      sink += crc32c(data);
    } },
  ]);

  const w = Math.max(...rows.map((r) => r.bench.length));
  console.log(`${'bench'.padEnd(w)}  ${'node'.padStart(7)}  ${'ns/op'.padStart(10)}  note`);
  for (const r of rows) console.log(`${r.bench.padEnd(w)}  ${r.node.padStart(7)}  ${r.nsPerOp.toFixed(r.nsPerOp < 100 ? 1 : 0).padStart(10)}  ${r.note}`);
  if (sink === 0.5) console.log(sink);
}

function writeOut(k: NodeKeys): void {
  nodeWritePrepare(k);
  nodeWriteDone(k);
}

void main();
