// SPDX-License-Identifier: GPL-2.0-only
/*
 * In-node key storage costs: lookups in a cached node (aux search tree vs a
 * plain binary search over the packed keys), iteration, pack/unpack, inserts,
 * node read+validate and write-prepare.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/bset.js [--quick]
 *
 * Each tinybench task runs a batch of BATCH operations on precomputed inputs;
 * the table reports ns per operation (task latency / BATCH).
 */

import { Bench } from 'tinybench';
import { bkeyValue } from '../src/btree/bkey.js';
import { AUX_GROUP_BYTES, NodeIter, NodeKeys } from '../src/btree/bset.js';
import { nodeReadValidate, nodeWriteDone, nodeWritePrepare } from '../src/btree/node-io.js';
import { BkeyFormat, formatFromKeys, formatPackFields, formatPackPos, formatUnpackPos, packedPosCmp } from '../src/format/bkey-format.js';
import { crc32c } from '../src/util/crc32c.js';

const quick = process.argv.includes('--quick');
const TIME_MS = quick ? 150 : 600;
const BATCH = 1024;
const BLOCK = 4096;
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

/** Sorted distinct random positions (one inode, 40-bit offsets) with 16-byte values. */
function makeKeys(n: number) {
  const set = new Set<number>();
  while (set.size < n) set.add(u32() * 256 + (u32() & 0xff));
  const offs = [...set].sort((a, b) => a - b);
  return offs.map((o, i) => bkeyValue(pos(1, Math.floor(o / 2 ** 32), o >>> 0), new Uint8Array(16).fill(i & 0xff), 1000 + (i % 50)));
}

/** A written, cached node (one read-only set with its Eytzinger tree) about 90% full. */
function buildNode(nodeSize: number) {
  let n = Math.floor(nodeSize / 40);
  for (;;) {
    const ks = makeKeys(n);
    const f = formatFromKeys(ks);
    const keys = mk(nodeSize);
    keys.initEmpty({ btreeId: 0, level: 0, minKey: pos(0, 0, 0), maxKey: POS_MAX, seq: 77, format: f });
    let ok = true;
    for (const k of ks) if (!keys.insertKey(k)) ok = false;
    if (ok && keys.usedBytes() > nodeSize * 0.85) {
      nodeWritePrepare(keys);
      nodeWriteDone(keys);
      return { keys, ks, f };
    }
    n = ok ? Math.floor(n * 1.1) : Math.floor(n * 0.95);
  }
}

/** Key offsets of set 0, for the binary-search baseline. */
function keyOffsets(keys: NodeKeys): Uint32Array {
  const out: number[] = [];
  for (let k = keys.setStart[0]!; k < keys.setEnd[0]!; k = keys.keyNext(k)) out.push(k);
  return Uint32Array.from(out);
}

/** Baseline: binary search over the packed keys (offset table + packed compares). */
function binarySearch(d32: Uint32Array, offs: Uint32Array, f: BkeyFormat, sp: Uint32Array): number {
  let lo = 0, hi = offs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (packedPosCmp(f, d32, (offs[mid]! >>> 2) + 1, sp, 0) < 0) lo = mid + 1;
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

async function run(tasks: [string, string, () => void, string?][]): Promise<void> {
  const b = new Bench({ time: TIME_MS, warmupTime: Math.min(200, TIME_MS) });
  for (const [name, , fn] of tasks) b.add(name, fn);
  await b.run();
  for (const [name, node, , note] of tasks) {
    const t = b.getTask(name)!;
    const r = t.result as { latency?: { mean: number } } | undefined;
    const ms = r?.latency?.mean ?? NaN;
    rows.push({ bench: name.replace(/ \[.*\]$/, ''), node, nsPerOp: (ms * 1e6) / BATCH, note: note ?? '' });
  }
}

async function main(): Promise<void> {
  console.log(`node ${process.version}, AUX_GROUP_BYTES ${AUX_GROUP_BYTES}, batch ${BATCH}, ${TIME_MS} ms per task${quick ? ' (quick)' : ''}`);
  const sp = new Uint32Array(8);
  for (const nodeSize of [4096, 65536, 262144]) {
    const label = `${nodeSize / 1024} KiB`;
    const { keys, ks, f } = buildNode(nodeSize);
    const offs = keyOffsets(keys);
    const d32 = new Uint32Array(keys.data.buffer, keys.data.byteOffset, keys.data.length >>> 2);
    /* searches: half hits, half misses between keys */
    const searches: Uint32Array[] = [];
    for (let i = 0; i < BATCH; i++) {
      const k = ks[u32() % ks.length]!;
      const s = k.p.slice();
      if (i & 1) s[3] = (s[3]! + 1) >>> 0;
      searches.push(s);
    }
    /* the two must agree */
    const it = new NodeIter();
    for (const s of searches) {
      it.init(keys, s, 0);
      formatPackPos(f, s, 0, sp, 0);
      if (it.peek() !== binarySearch(d32, offs, f, sp)) throw new Error('aux search and binary search disagree');
    }
    const note = `${offs.length} keys, ${(keys.liveU64s * 8 / offs.length).toFixed(0)} B/key, ${keys.unpackedKeys} unpacked`;
    let sink = 0;
    await run([
      [`lookup aux tree (NodeIter.init) [${label}]`, label, () => {
        for (let i = 0; i < BATCH; i++) {
          it.init(keys, searches[i]!, 0);
          sink += it.peek();
        }
      }, note],
      [`lookup binary search, packed keys [${label}]`, label, () => {
        for (let i = 0; i < BATCH; i++) {
          formatPackPos(f, searches[i]!, 0, sp, 0);
          sink += binarySearch(d32, offs, f, sp);
        }
      }, 'offset table + packed compares, same search packing'],
      [`iterate (NodeIter.advance) [${label}]`, label, () => {
        it.initStart(keys);
        for (let i = 0; i < BATCH; i++) {
          if (it.peek() < 0) it.initStart(keys);
          sink += it.peek();
          it.advance();
        }
      }],
      [`keyPosTo (unpack position) [${label}]`, label, () => {
        const out = new Uint32Array(5);
        for (let i = 0; i < BATCH; i++) {
          keys.keyPosTo(offs[i % offs.length]!, out, 0);
          sink += out[3]!;
        }
      }],
    ]);
    /* writable set lookups (rw lookup table): the same keys, unwritten */
    const rw = mk(nodeSize);
    rw.initEmpty({ btreeId: 0, level: 0, minKey: pos(0, 0, 0), maxKey: POS_MAX, seq: 78, format: f });
    for (const k of ks) rw.insertKey(k);
    const it2 = new NodeIter();
    await run([
      [`lookup rw table (writable set) [${label}]`, label, () => {
        for (let i = 0; i < BATCH; i++) {
          it2.init(rw, searches[i]!, 0);
          sink += it2.peek();
        }
      }],
    ]);
    /* inserts: random order into a fresh node, BATCH at a time (restart when full) */
    const shuffled = ks.slice().sort(() => (u32() & 1 ? 1 : -1));
    const ins = mk(nodeSize);
    let ii = 0;
    const reset = () => {
      ins.initEmpty({ btreeId: 0, level: 0, minKey: pos(0, 0, 0), maxKey: POS_MAX, seq: 79, format: f });
      ii = 0;
    };
    reset();
    await run([
      [`insertKey, random order [${label}]`, label, () => {
        for (let i = 0; i < BATCH; i++) {
          if (ii >= shuffled.length) reset();
          ins.insertKey(shuffled[ii++]!);
        }
      }, 'into the writable set, rw table kept incrementally'],
    ]);
    /* node read + validate: the image of a node written in 4 appends */
    const img = mk(nodeSize);
    img.initEmpty({ btreeId: 0, level: 0, minKey: pos(0, 0, 0), maxKey: POS_MAX, seq: 80, format: f });
    const disk = new Uint8Array(nodeSize);
    const quarter = Math.ceil(ks.length / 4);
    for (let q = 0; q < 4; q++) {
      for (let i = q; i < ks.length; i += 4) if (!img.insertKey(ks[i]!)) break;
      const w = nodeWritePrepare(img);
      if (w) {
        disk.set(w.bytes, w.offsetBytes);
        nodeWriteDone(img);
      }
    }
    void quarter;
    const rd = mk(nodeSize);
    const expect = { btreeId: 0, level: 0, minKey: pos(0, 0, 0), maxKey: POS_MAX, seq: 80 };
    const reads = Math.max(1, Math.floor(BATCH / (nodeSize / 4096)));
    const readNote = `${img.nrKeys} keys in ${img.writtenBytes / 1024} KiB; per node`;
    /* write prepare: a node whose writable set holds all keys (built by sortInto) */
    const src = keys;
    const wn = mk(nodeSize);
    const build = () => {
      wn.initEmpty({ btreeId: 0, level: 0, minKey: pos(0, 0, 0), maxKey: POS_MAX, seq: 81, format: f });
      src.sortInto(wn);
    };
    const tasks: [string, string, () => void, string?][] = [
      [`node read+validate [${label}]`, label, () => {
        for (let i = 0; i < reads; i++) {
          rd.data.set(disk);
          const r = nodeReadValidate(rd, expect);
          if (!r.ok) throw new Error(r.message);
        }
      }, readNote],
      [`sortInto (rewrite build) [${label}]`, label, () => {
        for (let i = 0; i < reads; i++) build();
      }, 'per node; raw copy, same format'],
      [`sortInto + write prepare + done [${label}]`, label, () => {
        for (let i = 0; i < reads; i++) {
          build();
          nodeWritePrepare(wn);
          nodeWriteDone(wn);
        }
      }, 'per node'],
    ];
    const b = new Bench({ time: TIME_MS, warmupTime: Math.min(200, TIME_MS) });
    for (const [name, , fn] of tasks) b.add(name, fn);
    await b.run();
    for (const [name, node, , note] of tasks) {
      const r = b.getTask(name)!.result as { latency?: { mean: number } } | undefined;
      rows.push({ bench: name.replace(/ \[.*\]$/, ''), node, nsPerOp: ((r?.latency?.mean ?? NaN) * 1e6) / reads, note: note ?? '' });
    }
    if (sink === 0.5) console.log(sink);
  }

  /* pack / unpack */
  const ks = makeKeys(BATCH);
  const f = formatFromKeys(ks);
  const buf = new Uint32Array(16);
  const out = new Uint32Array(5);
  const packed = ks.map((k) => {
    const d = new Uint32Array(f.fieldWords);
    formatPackFields(f, k.p, 0, k.size, k.version, d, 0);
    return d;
  });
  const data = new Uint8Array(1 << 20);
  for (let i = 0; i < data.length; i++) data[i] = i * 31;
  await run([
    ['pack (formatPackFields)', '-', () => {
      for (let i = 0; i < BATCH; i++) formatPackFields(f, ks[i]!.p, 0, ks[i]!.size, ks[i]!.version, buf, 0);
    }, f.toText()],
    ['unpack position (formatUnpackPos)', '-', () => {
      for (let i = 0; i < BATCH; i++) formatUnpackPos(f, packed[i]!, 0, out, 0);
    }],
    ['crc32c (JS), per KiB', '-', () => {
      for (let i = 0; i < BATCH; i += 256) crc32c(data.subarray(0, 256 * 1024));
    }, 'slice-by-8'],
  ]);

  const w = Math.max(...rows.map((r) => r.bench.length));
  console.log(`${'bench'.padEnd(w)}  ${'node'.padStart(8)}  ${'ns/op'.padStart(10)}  note`);
  for (const r of rows) console.log(`${r.bench.padEnd(w)}  ${r.node.padStart(8)}  ${r.nsPerOp.toFixed(r.nsPerOp < 100 ? 1 : 0).padStart(10)}  ${r.note}`);
}

void main();
