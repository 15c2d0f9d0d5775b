// SPDX-License-Identifier: GPL-2.0-only
/*
 * What one native I/O call costs the thread that makes it (the event loop's
 * thread), against what the whole call takes: on a VM whose system calls and
 * thread wake-ups are expensive, the synchronous part (until the promise is
 * returned) is time the event loop cannot run JavaScript.
 *
 *   node dist/bench/call-costs.js [--calls 300] [--path FILE] [--io napi|koffi]
 *
 * On a fresh 64 MiB file (O_DIRECT, written in full first), through
 * BlockDevice as the engine calls it, per size (16, 76 and 256 KiB: a cold
 * lookup's node, a batch commit's journal entry, a leaf write) and per call:
 * read and write on the backend's async engine (napi: its io_uring event
 * ring), the same on libuv's thread pool (napi with the event ring off),
 * writeFlush (the journal's write+flush, thread pool) and flush; each the
 * mean synchronous part, the mean whole call and the process CPU time per
 * call (all threads). Then a flush after 1 MiB of
 * node-sized writes, and a 76 KiB write+flush after it: what a journal write
 * that must flush node writes first costs the device.
 */

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { BlockDevice } from '../src/io/block-device.js';
import type { IoBackendName } from '../src/native/index.js';
import { napiAddon } from '../src/native/napi.js';

const { values } = parseArgs({
  options: {
    calls: { type: 'string', default: '300' },
    path: { type: 'string' },
    io: { type: 'string', default: 'napi' },
  },
});
const calls = Number(values.calls);
const io = values.io as IoBackendName;
const fileBytes = 64 << 20;
const sizes = [16 << 10, 76 << 10, 256 << 10];

interface Cost {
  syncUs: number;
  totalUs: number;
  cpuUs: number;
}

async function timeCalls(fn: (i: number) => Promise<unknown>): Promise<Cost> {
  let sync = 0;
  let total = 0;
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < calls; i++) {
    const a = performance.now();
    const p = fn(i);
    const m = performance.now();
    await p;
    const e = performance.now();
    sync += m - a;
    total += e - a;
  }
  const cpu = process.cpuUsage(cpu0);
  return { syncUs: (sync / calls) * 1000, totalUs: (total / calls) * 1000, cpuUs: (cpu.user + cpu.system) / calls };
}

function row(what: string, c: Cost): string {
  return `${what.padEnd(34)} ${c.syncUs.toFixed(0).padStart(7)} ${c.totalUs.toFixed(0).padStart(8)} ${c.cpuUs.toFixed(0).padStart(8)}`;
}

async function main(): Promise<void> {
  const dir = values.path ? null : mkdtempSync(join(tmpdir(), 'sixtree-call-costs-'));
  const path = values.path ?? join(dir!, 'calls.img');
  try {
    const dev = BlockDevice.open(path, { createSizeBytes: fileBytes, io });
    try {
      const fill = dev.allocBuffer(1 << 20);
      fill.fill(0x5a);
      for (let off = 0; off < fileBytes; off += fill.length) await dev.write(fill, off);
      await dev.flush();
      const slots = (size: number) => Math.floor(fileBytes / size);
      console.log(`native call costs, ${io}, ${calls} calls each, file ${path} (${dev.kind}, O_DIRECT)`);
      console.log(`${'call'.padEnd(34)} ${'sync us'.padStart(7)} ${'total us'.padStart(8)} ${'cpu us'.padStart(8)}`);
      for (const size of sizes) {
        const buf = dev.allocBuffer(size);
        buf.fill(1);
        const at = (i: number) => ((i * 7919) % slots(size)) * size;
        const engines: Array<[string, boolean]> = io === 'napi' ? [['ring', true], ['pool', false]] : [['pool', false]];
        for (const [engine, ring] of engines) {
          if (io === 'napi') napiAddon().useEventRing(ring);
          console.log(row(`${size >> 10} KiB read (${engine})`, await timeCalls((i) => dev.read(buf, at(i)))));
          console.log(row(`${size >> 10} KiB write (${engine})`, await timeCalls((i) => dev.write(buf, at(i)))));
        }
        if (io === 'napi') napiAddon().useEventRing(true);
        console.log(row(`${size >> 10} KiB writeFlush (pool)`, await timeCalls((i) => dev.writeFlush(buf, at(i)))));
        dev.freeBuffer(buf);
      }
      console.log(row('flush (pool)', await timeCalls(() => dev.flush())));

      // a flush after 1 MiB of node-sized writes, then a journal-sized write+flush
      const node = dev.allocBuffer(256 << 10);
      const entry = dev.allocBuffer(76 << 10);
      node.fill(3);
      entry.fill(7);
      let flushMs = 0;
      let entryMs = 0;
      const rounds = Math.max(1, Math.floor(calls / 10));
      for (let r = 0; r < rounds; r++) {
        await Promise.all([0, 1, 2, 3].map((k) => dev.write(node, (((r * 4 + k) * 7919) % slots(256 << 10)) * (256 << 10))));
        let a = performance.now();
        await dev.flush();
        flushMs += performance.now() - a;
        a = performance.now();
        await dev.writeFlush(entry, ((r * 104729) % slots(76 << 10)) * (76 << 10));
        entryMs += performance.now() - a;
      }
      console.log(`flush after 1 MiB of node writes: ${((flushMs / rounds) * 1000).toFixed(0)} us; then a 76 KiB write+flush: ${((entryMs / rounds) * 1000).toFixed(0)} us (${rounds} rounds)`);
    } finally {
      await dev.close();
    }
  } finally {
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}

await main();
