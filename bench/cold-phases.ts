// SPDX-License-Identifier: GPL-2.0-only
/*
 * Where a cold lookup's time goes, at queue depth 1, and how much of its
 * JavaScript the wait for the read itself costs.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/cold-phases.js [--runs 3]
 *       [--seconds 4] [--keys 100k] [--dir /tmp]
 *
 * The store and the shared options are bench/cold-store.ts's (the cold
 * rand_lookup jobs' kind of tree, a cache of ~600 KiB plus one node, so that
 * nearly every lookup misses at the leaf). Each run is a fresh process;
 * `--runs` of each kind alternate:
 *
 *   file      awaited store.get() one at a time on the file. The napi backend's
 *             pread is wrapped to take times, so each lookup that made exactly
 *             one read splits into: JavaScript before the read (the walk,
 *             buffers, starting it), the submitting call (io_uring_enter and
 *             the device notification it causes), the wait, and JavaScript
 *             after it (of which validation, from stats().cache.readValidateUs,
 *             the rest: the walk to the value and the promise hops). The
 *             wrapper adds a promise hop of its own to "the wait".
 *   memory    the same lookups on a MemDevice holding the same image (reads are
 *             a memcpy, nothing waits): microseconds per lookup back to back,
 *             then with the thread asleep 150 us before each (Atomics.wait, so
 *             the CPU idles as in a read's wait), then busy 150 us before each
 *             (a spin). The difference between the first and the second is what
 *             idling costs the lookup's JavaScript on this machine.
 *
 * Printed: one line per run, then medians. Timing only, nothing asserted.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Store } from '../src/index.js';
import { MemDevice } from '../src/io/mem-device.js';
import { loadBackend } from '../src/native/index.js';
import { loadToolStore, toolArgs, toolCacheBaseBytes, toolNodeSize, toolPos } from './cold-store.js';
import { KeySet } from './keys.js';
import { median } from './measure.js';

const cacheBytes = toolCacheBaseBytes + toolNodeSize;
const pauseUs = 150;

interface FileRun {
  kind: 'file';
  lookupsPerSec: number;
  /** Of the lookups that made exactly one read (us each). */
  before: number;
  submit: number;
  wait: number;
  after: number;
  validate: number;
  total: number;
  oneReadShare: number;
}

interface MemoryRun {
  kind: 'memory';
  backToBack: number;
  afterSleep: number;
  afterSpin: number;
}

/** Lookups of random loaded keys for `ms` (after a 1 s warm-up); `each` runs before every lookup. Returns the lookups measured and the time they took. */
async function lookups(s: Store, keys: KeySet, ms: number, onLookup: (t: number) => void, each?: () => void): Promise<{ ops: number; elapsedMs: number }> {
  let x = 0x2545f491;
  let ops = 0;
  let start = 0;
  for (const [phase, len] of [['warm', 1000], ['measure', ms]] as const) {
    start = performance.now();
    const end = start + len;
    while (performance.now() < end) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      const i = x % keys.count;
      each?.();
      const t = performance.now();
      if ((await s.get('b', toolPos(keys, i))) === undefined) throw new Error(`key ${i} missing`);
      if (phase === 'measure') {
        onLookup(performance.now() - t);
        ops++;
      }
    }
  }
  return { ops, elapsedMs: performance.now() - start };
}

async function runFile(file: string, keyCount: number, seconds: number): Promise<FileRun> {
  const keys = new KeySet('rand', keyCount);
  const backend = loadBackend('napi');
  const pread = backend.pread;
  let reads = 0;
  let tCall = 0;
  let tReturn = 0;
  let tDone = 0;
  backend.pread = (fd, buf, off) => {
    tCall = performance.now();
    const p = pread(fd, buf, off);
    tReturn = performance.now();
    reads++;
    return p.then(() => {
      tDone = performance.now();
    });
  };
  const s = await Store.open(file, { cacheSize: cacheBytes, io: 'napi' });
  const sum = { before: 0, submit: 0, wait: 0, after: 0, validate: 0, total: 0 };
  let oneRead = 0;
  let readsBefore = 0;
  let validateBefore = 0;
  let tStart = 0;
  const cache = s.engine.cache;
  const { ops, elapsedMs } = await lookups(
    s,
    keys,
    seconds * 1000,
    (ms) => {
      const validate = cache.readValidateUs;
      if (reads === readsBefore + 1) {
        oneRead++;
        sum.before += tCall - tStart;
        sum.submit += tReturn - tCall;
        sum.wait += tDone - tReturn;
        sum.after += tStart + ms - tDone;
        sum.validate += (validate - validateBefore) / 1000; // us -> ms, as the other sums
        sum.total += ms;
      }
    },
    () => {
      readsBefore = reads;
      validateBefore = cache.readValidateUs;
      tStart = performance.now();
    },
  );
  await s.close();
  backend.pread = pread;
  const us = (v: number): number => (v * 1000) / Math.max(1, oneRead);
  return { kind: 'file', lookupsPerSec: (ops * 1000) / elapsedMs, before: us(sum.before), submit: us(sum.submit), wait: us(sum.wait), after: us(sum.after), validate: us(sum.validate), total: us(sum.total), oneReadShare: oneRead / Math.max(1, ops) };
}

async function runMemory(file: string, keyCount: number, seconds: number): Promise<MemoryRun> {
  const keys = new KeySet('rand', keyCount);
  const s = await Store.openDevice(MemDevice.fromImage(readFileSync(file), { path: `memory copy of ${file}` }), { cacheSize: cacheBytes });
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  const modes: Array<[keyof Omit<MemoryRun, 'kind'>, (() => void) | undefined]> = [
    ['backToBack', undefined],
    ['afterSleep', () => Atomics.wait(sleeper, 0, 0, pauseUs / 1000)],
    [
      'afterSpin',
      () => {
        const end = performance.now() + pauseUs / 1000;
        while (performance.now() < end);
      },
    ],
  ];
  const out: MemoryRun = { kind: 'memory', backToBack: 0, afterSleep: 0, afterSpin: 0 };
  for (const [mode, each] of modes) {
    let total = 0;
    const { ops } = await lookups(s, keys, (seconds * 1000) / 3, (ms) => (total += ms), each);
    out[mode] = (total * 1000) / ops;
  }
  await s.close();
  return out;
}

const f1 = (v: number): string => v.toFixed(1).padStart(6);

function fileLine(r: FileRun): string {
  return (
    `file    ${Math.round(r.lookupsPerSec).toString().padStart(5)} lookups/s; per lookup with one read (${Math.round(r.oneReadShare * 100)}%), us:` +
    ` before ${f1(r.before)}  submit ${f1(r.submit)}  wait ${f1(r.wait)}  after ${f1(r.after)} (validation ${f1(r.validate)})  total ${f1(r.total)}`
  );
}

function memoryLine(r: MemoryRun): string {
  return `memory  us per lookup: back to back ${f1(r.backToBack)}  after a ${pauseUs} us sleep ${f1(r.afterSleep)}  after a ${pauseUs} us spin ${f1(r.afterSpin)}`;
}

async function main(): Promise<void> {
  const args = toolArgs('node dist/bench/cold-phases.js [--runs 3] [--seconds 4] [--keys 100k] [--dir /tmp]', { runs: '3' });
  if (args === null) return;
  const { keyCount, seconds } = args;
  if (args.child) {
    /* a run in a fresh process: file,kind */
    const [file, kind] = args.child.split(',');
    const r = kind === 'file' ? await runFile(file!, keyCount, seconds) : await runMemory(file!, keyCount, seconds);
    process.stdout.write(JSON.stringify(r));
    return;
  }
  const runs = Number(args.own.runs);
  const dir = mkdtempSync(join(args.dir, 'sixtree-cold-phases-'));
  const file = join(dir, 'store.img');
  try {
    await loadToolStore(file, keyCount);
    console.log(`store: ${keyCount} keys, 16 KiB nodes, in ${file}; cache ${Math.round(cacheBytes / 1024)} KiB; ${runs} runs of each kind, ${seconds} s each`);
    const self = fileURLToPath(import.meta.url);
    const files: FileRun[] = [];
    const mems: MemoryRun[] = [];
    for (let i = 0; i < runs; i++) {
      for (const kind of ['file', 'memory'] as const) {
        const out = execFileSync(process.execPath, [self, '--child', `${file},${kind}`, '--keys', String(keyCount), '--seconds', String(seconds)], { encoding: 'utf8' });
        const r = JSON.parse(out) as FileRun | MemoryRun;
        if (r.kind === 'file') files.push(r);
        else mems.push(r);
        console.log(r.kind === 'file' ? fileLine(r) : memoryLine(r));
      }
    }
    const med = <T,>(rs: T[], k: keyof T): number => median(rs.map((r) => r[k] as number));
    console.log('medians:');
    console.log(fileLine({ kind: 'file', lookupsPerSec: med(files, 'lookupsPerSec'), before: med(files, 'before'), submit: med(files, 'submit'), wait: med(files, 'wait'), after: med(files, 'after'), validate: med(files, 'validate'), total: med(files, 'total'), oneReadShare: med(files, 'oneReadShare') }));
    console.log(memoryLine({ kind: 'memory', backToBack: med(mems, 'backToBack'), afterSleep: med(mems, 'afterSleep'), afterSpin: med(mems, 'afterSpin') }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
