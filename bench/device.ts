// SPDX-License-Identifier: GPL-2.0-only
/*
 * bench/device.ts: the device's own limit, measured in-process through the
 * shim (BlockDevice over either backend), so store numbers can be read
 * against it.
 *
 *   node dist/bench/device.js [--device PATH] [--json OUT] [--duration-ms N]
 *                             [--size-mib N] [--no-loop] [--allow-write]
 *
 * Default target: a fresh 1 GiB file under os.tmpdir(), written in full first
 * (that pass is the sequential-write measurement; ext4 serves reads of
 * unwritten blocks as zero-fills without I/O, which would measure memset).
 * As root, the same file is then attached as a loop device with direct I/O
 * and measured again; the device attached here is detached in finally.
 * --device PATH measures an existing file or block device instead, reads only
 * (unless --allow-write).
 *
 * Matrix: random reads of 4/16/64/256 KiB at queue depth 1 and 32; per backend
 * (napi, koffi): sync (qd1), async (one promise per op, `qd` lanes), batch
 * (submit() of `qd` ops at a time: io_uring, and the serial fallback at
 * 4 KiB); sequential read and write bandwidth (1 MiB blocks, qd 8 batches).
 * Latency: per op for sync/async; per batch for batch modes (each op of a
 * batch completes within it). Async calls run where the backend runs them
 * (backend.asyncEngine(), reported as the async engine): napi on its event
 * ring (io_uring, completions wake the event loop), else and with koffi on
 * libuv's thread pool (UV_THREADPOOL_SIZE, default 4, which then bounds the
 * async lanes' real concurrency and is reported with the results).
 *
 * Prints a table; writes JSON to bench/results/device-<time>.json (or --json).
 * Exports measureRandomReads() for the main bench harness (bench/limit.ts).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { BlockDevice, type BatchMode } from '../src/io/block-device.js';
import type { IoOp } from '../src/io/device.js';
import { crc32c, loadBackend, type IoBackendName } from '../src/native/index.js';

export type MeasureMode = 'auto' | 'sync' | 'async' | 'batch';

export interface MeasureRandomReadsOpts {
  /** A file or block device path (opened read-only, without the store lock) ... */
  path?: string;
  /** ... or an open device to use as is. */
  device?: BlockDevice;
  blockBytes: number;
  queueDepth: number;
  durationMs: number;
  io?: IoBackendName;
  /** 'auto': async at queue depth 1, batch above. */
  mode?: MeasureMode;
  /** submit() engine for mode 'batch' (default: the device's, i.e. io_uring where available). */
  batch?: Exclude<BatchMode, 'auto'>;
  /** Reads land in [0, spanBytes) (default: the whole device). */
  spanBytes?: number;
}

export interface MeasureResult {
  mode: Exclude<MeasureMode, 'auto'>;
  engine: string;
  io: IoBackendName;
  blockBytes: number;
  queueDepth: number;
  ops: number;
  elapsedMs: number;
  opsPerSec: number;
  mibPerSec: number;
  /** Latency percentiles in microseconds: per op (sync, async) or per batch (batch). */
  p50Us: number;
  p99Us: number;
  latency: 'op' | 'batch';
}

const latencySamplesMax = 1 << 18;

class Latencies {
  private samples = new Float64Array(latencySamplesMax);
  private seen = 0;
  add(us: number): void {
    if (this.seen < latencySamplesMax) this.samples[this.seen] = us;
    else {
      const j = Math.floor(Math.random() * (this.seen + 1));
      if (j < latencySamplesMax) this.samples[j] = us;
    }
    this.seen++;
  }
  percentiles(): { p50: number; p99: number } {
    const n = Math.min(this.seen, latencySamplesMax);
    const s = this.samples.slice(0, n).sort();
    const at = (q: number) => (n ? s[Math.min(n - 1, Math.floor(q * n))]! : NaN);
    return { p50: at(0.5), p99: at(0.99) };
  }
}

/** Random-read throughput and latency of a device: the harness's view of the device limit. */
export async function measureRandomReads(opts: MeasureRandomReadsOpts): Promise<MeasureResult> {
  const { blockBytes, queueDepth, durationMs } = opts;
  const mode: Exclude<MeasureMode, 'auto'> = opts.mode === undefined || opts.mode === 'auto' ? (queueDepth > 1 ? 'batch' : 'async') : opts.mode;
  if (mode === 'sync' && queueDepth !== 1) throw new Error('mode sync runs at queue depth 1 only');
  const own = opts.device === undefined;
  const dev =
    opts.device ??
    BlockDevice.open(opts.path!, { io: opts.io, readOnly: true, lock: false, ...(opts.batch ? { batch: opts.batch } : {}) });
  if (blockBytes % dev.alignBytes) throw new Error(`blockBytes ${blockBytes} is not a multiple of ${dev.alignBytes}`);
  const span = Math.min(opts.spanBytes ?? dev.sizeBytes, dev.sizeBytes);
  const slots = Math.floor(span / blockBytes);
  if (slots < 1) throw new Error(`device ${dev.path} is smaller than one ${blockBytes}-byte block`);
  const bufs = Array.from({ length: queueDepth }, () => dev.allocBuffer(blockBytes));
  const lat = new Latencies();
  const offset = () => Math.floor(Math.random() * slots) * blockBytes;
  let ops = 0;
  const start = performance.now();
  const end = start + durationMs;
  try {
    if (mode === 'sync') {
      const buf = bufs[0]!;
      for (let t = start; t < end; ) {
        dev.readSync(buf, offset());
        const now = performance.now();
        lat.add((now - t) * 1000);
        t = now;
        ops++;
      }
    } else if (mode === 'async') {
      await Promise.all(
        bufs.map(async (buf) => {
          for (let t = performance.now(); t < end; ) {
            await dev.read(buf, offset());
            const now = performance.now();
            lat.add((now - t) * 1000);
            t = now;
            ops++;
          }
        }),
      );
    } else {
      const batch: IoOp[] = bufs.map((buf) => ({ op: 'read', buf, offsetBytes: 0 }));
      for (let t = start; t < end; ) {
        for (const op of batch) op.offsetBytes = offset();
        await dev.submit(batch);
        const now = performance.now();
        lat.add((now - t) * 1000);
        t = now;
        ops += batch.length;
      }
    }
  } finally {
    bufs.forEach((b) => dev.freeBuffer(b));
    if (own) await dev.close();
  }
  const elapsedMs = performance.now() - start;
  const { p50, p99 } = lat.percentiles();
  return {
    mode,
    engine: mode === 'batch' ? dev.batchMode : mode === 'async' ? dev.backend.asyncEngine() : mode,
    io: dev.backend.name,
    blockBytes,
    queueDepth,
    ops,
    elapsedMs,
    opsPerSec: (ops * 1000) / elapsedMs,
    mibPerSec: (ops * blockBytes * 1000) / elapsedMs / (1 << 20),
    p50Us: p50,
    p99Us: p99,
    latency: mode === 'batch' ? 'batch' : 'op',
  };
}

export interface SequentialResult {
  op: 'read' | 'write';
  io: IoBackendName;
  engine: string;
  blockBytes: number;
  queueDepth: number;
  bytes: number;
  elapsedMs: number;
  mibPerSec: number;
}

/**
 * Sequential bandwidth: [0, totalBytes) in blockBytes pieces, queueDepth
 * pieces per submit(). Writes end with a flush (counted in the time).
 * Stops early after durationMs when given.
 */
export async function measureSequential(opts: {
  device: BlockDevice;
  op: 'read' | 'write';
  blockBytes: number;
  queueDepth: number;
  totalBytes: number;
  durationMs?: number;
}): Promise<SequentialResult> {
  const { device: dev, op, blockBytes, queueDepth } = opts;
  const total = Math.min(opts.totalBytes, dev.sizeBytes - (dev.sizeBytes % blockBytes));
  const bufs = Array.from({ length: queueDepth }, (_, i) => {
    const b = dev.allocBuffer(blockBytes);
    if (op === 'write') for (let k = 0; k < b.length; k += 4096) b[k] = (i * 31 + k) & 0xff;
    return b;
  });
  const start = performance.now();
  const end = opts.durationMs === undefined ? Infinity : start + opts.durationMs;
  let bytes = 0;
  try {
    while (bytes < total && performance.now() < end) {
      const batch: IoOp[] = [];
      for (let i = 0; i < queueDepth && bytes + i * blockBytes < total; i++) batch.push({ op, buf: bufs[i]!, offsetBytes: bytes + i * blockBytes });
      await dev.submit(batch);
      bytes += batch.length * blockBytes;
    }
    if (op === 'write') await dev.flush();
  } finally {
    bufs.forEach((b) => dev.freeBuffer(b));
  }
  const elapsedMs = performance.now() - start;
  return { op, io: dev.backend.name, engine: dev.batchMode, blockBytes, queueDepth, bytes, elapsedMs, mibPerSec: (bytes * 1000) / elapsedMs / (1 << 20) };
}

/* ---------------------------------------------------------------------------
 * The command.
 */

interface Row {
  target: string;
  what: string;
  io: IoBackendName | '-';
  mode: string;
  blockBytes: number;
  queueDepth: number;
  opsPerSec?: number;
  mibPerSec: number;
  p50Us?: number;
  p99Us?: number;
}

const randomBlockSizes = [4096, 16_384, 65_536, 262_144];

async function randomMatrix(target: string, path: string, durationMs: number, ios: readonly IoBackendName[], rows: Row[], log: (r: Row) => void): Promise<void> {
  const uring = loadBackend('napi').uringSupported();
  for (const io of ios) {
    for (const blockBytes of randomBlockSizes) {
      const runs: { mode: Exclude<MeasureMode, 'auto'>; qd: number; batch?: Exclude<BatchMode, 'auto'> }[] = [
        { mode: 'sync', qd: 1 },
        { mode: 'async', qd: 1 },
        { mode: 'async', qd: 32 },
        ...(uring ? [{ mode: 'batch' as const, qd: 32, batch: 'uring' as const }] : []),
        ...(blockBytes === 4096 ? [{ mode: 'batch' as const, qd: 32, batch: 'serial' as const }] : []),
      ];
      for (const r of runs) {
        const m = await measureRandomReads({ path, io, blockBytes, queueDepth: r.qd, durationMs, mode: r.mode, ...(r.batch ? { batch: r.batch } : {}) });
        const row: Row = {
          target,
          what: 'randread',
          io,
          mode: m.mode === 'batch' ? `batch:${m.engine}` : m.mode,
          blockBytes,
          queueDepth: r.qd,
          opsPerSec: m.opsPerSec,
          mibPerSec: m.mibPerSec,
          p50Us: m.p50Us,
          p99Us: m.p99Us,
        };
        rows.push(row);
        log(row);
      }
    }
  }
}

async function sequentialPair(target: string, path: string, io: IoBackendName, write: boolean, totalBytes: number, durationMs: number | undefined, rows: Row[], log: (r: Row) => void): Promise<void> {
  const dev = BlockDevice.open(path, { io, readOnly: !write, lock: false });
  try {
    for (const op of write ? (['write', 'read'] as const) : (['read'] as const)) {
      const s = await measureSequential({ device: dev, op, blockBytes: 1 << 20, queueDepth: 8, totalBytes, ...(durationMs ? { durationMs } : {}) });
      const row: Row = { target, what: `seq${op}`, io, mode: `batch:${s.engine}`, blockBytes: s.blockBytes, queueDepth: s.queueDepth, mibPerSec: s.mibPerSec };
      rows.push(row);
      log(row);
    }
  } finally {
    await dev.close();
  }
}

function fmt(n: number | undefined, digits = 0): string {
  return n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(digits);
}

function header(): string {
  return `${'target'.padEnd(8)} ${'what'.padEnd(9)} ${'io'.padEnd(5)} ${'mode'.padEnd(13)} ${'block'.padStart(6)} ${'qd'.padStart(3)} ${'ops/s'.padStart(9)} ${'MiB/s'.padStart(8)} ${'p50 µs'.padStart(8)} ${'p99 µs'.padStart(8)}`;
}

function rowText(r: Row): string {
  const block = r.blockBytes >= 1 << 20 ? `${r.blockBytes >> 20}M` : `${r.blockBytes >> 10}K`;
  return `${r.target.padEnd(8)} ${r.what.padEnd(9)} ${r.io.padEnd(5)} ${r.mode.padEnd(13)} ${block.padStart(6)} ${String(r.queueDepth).padStart(3)} ${fmt(r.opsPerSec).padStart(9)} ${fmt(r.mibPerSec, 1).padStart(8)} ${fmt(r.p50Us, 1).padStart(8)} ${fmt(r.p99Us, 1).padStart(8)}`;
}

function packageRoot(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'bench'))) return dir;
    if (dirname(dir) === dir) return process.cwd();
  }
}

export async function runDeviceBench(argv: string[]): Promise<{ rows: Row[]; jsonPath: string }> {
  const { values } = parseArgs({
    args: argv,
    options: {
      device: { type: 'string' },
      json: { type: 'string' },
      'duration-ms': { type: 'string' },
      'size-mib': { type: 'string' },
      'no-loop': { type: 'boolean' },
      'allow-write': { type: 'boolean' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) {
    console.log('usage: node dist/bench/device.js [--device PATH] [--json OUT] [--duration-ms N] [--size-mib N] [--no-loop] [--allow-write]');
    return { rows: [], jsonPath: '' };
  }
  const durationMs = Number(values['duration-ms'] ?? 500);
  const sizeBytes = Number(values['size-mib'] ?? 1024) * (1 << 20);
  const rows: Row[] = [];
  const log = (r: Row) => console.log(rowText(r));
  const ios = ['napi', 'koffi'] as const;
  const napi = loadBackend('napi');
  const meta = {
    date: new Date().toISOString(),
    node: process.version,
    uvThreadpoolSize: process.env.UV_THREADPOOL_SIZE ?? '4 (default)',
    uring: napi.uringSupported(),
    crc32cImpl: napi.crc32cImpl,
    durationMs,
  };
  console.log(`device bench: io_uring ${meta.uring ? 'available' : 'not available'}; UV_THREADPOOL_SIZE ${meta.uvThreadpoolSize}; ${durationMs} ms per random-read run`);
  console.log(header());

  let tmp: string | undefined;
  try {
    if (values.device) {
      const path = resolve(values.device);
      await randomMatrix('device', path, durationMs, ios, rows, log);
      for (const io of ios) await sequentialPair('device', path, io, values['allow-write'] ?? false, 1 << 30, 2000, rows, log);
    } else {
      tmp = mkdtempSync(join(tmpdir(), 'sixtree-bench-device-'));
      const file = join(tmp, 'device.img');
      const dev = BlockDevice.open(file, { createSizeBytes: sizeBytes, io: 'napi' });
      await dev.close();
      // napi writes the whole file (this fills it for the reads); koffi writes and reads 256 MiB.
      await sequentialPair('file', file, 'napi', true, sizeBytes, undefined, rows, log);
      await sequentialPair('file', file, 'koffi', true, 256 << 20, undefined, rows, log);
      await randomMatrix('file', file, durationMs, ios, rows, log);
      const root = typeof process.getuid === 'function' && process.getuid() === 0;
      if (!values['no-loop'] && root && existsSync('/dev/loop-control')) {
        const loop = execFileSync('losetup', ['-f', '--show', '--direct-io=on', file], { encoding: 'utf8' }).trim();
        // Detach exactly this device, also when interrupted.
        let attached = true;
        const detach = () => {
          if (attached) execFileSync('losetup', ['-d', loop]);
          attached = false;
        };
        const onSignal = () => {
          detach();
          process.exit(130);
        };
        process.once('SIGINT', onSignal);
        process.once('SIGTERM', onSignal);
        try {
          await sequentialPair('loop', loop, 'napi', false, 256 << 20, undefined, rows, log);
          await randomMatrix('loop', loop, durationMs, ['napi'], rows, log);
        } finally {
          detach();
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
        }
      } else if (!values['no-loop']) console.log(`loop device runs skipped: ${root ? 'no /dev/loop-control' : 'not root'}`);
    }
    // The checksum the format uses, for scale.
    const data = napi.allocAligned(256 * 1024, 4096);
    const u = new Uint8Array(data);
    let n = 0;
    const t0 = performance.now();
    while (performance.now() - t0 < 200) {
      crc32c(u);
      n++;
    }
    const crcRow: Row = { target: '-', what: 'crc32c', io: '-', mode: napi.crc32cImpl, blockBytes: u.length, queueDepth: 1, opsPerSec: (n * 1000) / (performance.now() - t0), mibPerSec: (n * u.length * 1000) / (performance.now() - t0) / (1 << 20) };
    napi.freeAligned(data);
    rows.push(crcRow);
    log(crcRow);
  } finally {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }

  const jsonPath = values.json ? resolve(values.json) : join(packageRoot(), 'bench', 'results', `device-${meta.date.replace(/[:.]/g, '-')}.json`);
  mkdirSync(dirname(jsonPath), { recursive: true });
  writeFileSync(jsonPath, JSON.stringify({ meta, rows }, null, 2) + '\n');
  console.log(`wrote ${jsonPath}`);
  return { rows, jsonPath };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  runDeviceBench(process.argv.slice(2)).catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  });
}
