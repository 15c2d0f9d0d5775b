#!/usr/bin/env node
// SPDX-License-Identifier: GPL-2.0-only
/*
 * sixtree: the command line (format, info, list, fsck, bench).
 *
 * Owns: argument parsing (node:util parseArgs, one table of subcommands, each
 * with its help text and options), the translation of command-line values
 * (sizes like 64M, positions like 1:200:0, btree specs like files:extents)
 * into API calls, the output formats, and the exit status:
 *
 *   0  success
 *   1  a runtime failure: the library's SixtreeError (its code is printed),
 *      an I/O error, fsck finding problems, the benchmark failing
 *   2  a usage error found by the command line itself (unknown option,
 *      missing argument, a value that does not parse)
 *
 * Every failure is one line on stderr, `sixtree: <code>: <message>`; a stack
 * trace only with SIXTREE_DEBUG set. Progress for long work (format, opening
 * a store that replays its journal, fsck, a long list) goes to stderr and
 * only when stderr is a terminal; otherwise nothing but the result is
 * printed.
 *
 * Reading commands never write: info reads the superblock through a
 * read-only device without taking the store's lock; list and fsck open the
 * store readOnly (recovery replays the journal in memory, nothing is written
 * back). list and fsck do take the exclusive lock (ERR_LOCKED while another
 * process has the store open).
 */

import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';

import { Store } from './store.js';
import { SixtreeError } from './errors.js';
import { U32_MAX, U64_MAX, bposToText, pos, type Bpos } from './btree/bpos.js';
import type { Entry } from './btree/iter.js';
import { maxValueSizeFor } from './engine.js';
import { BlockDevice } from './io/block-device.js';
import { BTREE_NAME_RE, readSuperblock, readSuperblockCopies, superblockToText, uuidToText, type SbCopy, type Superblock } from './format/superblock.js';
import { IO_BACKEND_NAMES, isIoBackendName, type IoBackendName } from './native/index.js';
import { Printbuf, bytesToText } from './util/printbuf.js';

const EXIT_OK = 0;
const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

/** Progress appears only for work that takes longer than this. */
const PROGRESS_DELAY_MS = 300;
const PROGRESS_PERIOD_MS = 100;
/** list writes its output in chunks of about this size. */
const OUTPUT_CHUNK_BYTES = 64 * 1024;

/** A problem with the command line itself: exit status 2. */
class UsageError extends Error {
  constructor(
    message: string,
    readonly command: string | null,
  ) {
    super(message);
    this.name = 'UsageError';
  }
}

/* ------------------------------------------------------------ parsing values */

const SIZE_UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** "4096", "256K", "64M", "1G", "1GiB": bytes (binary units). */
function parseBytes(text: string, option: string, command: string): number {
  const m = /^(\d+)\s*([kmgt]?)(?:i?b)?$/i.exec(text.trim());
  const n = m ? Number(m[1]) * SIZE_UNITS[m[2]!.toLowerCase()]! : NaN;
  if (!Number.isSafeInteger(n) || n <= 0) throw new UsageError(`${option}: ${JSON.stringify(text)} is not a size (bytes, or a number with K, M, G or T: 4096, 256K, 64M, 1G)`, command);
  return n;
}

function parseU(text: string, max: bigint, what: string): bigint {
  const t = text.trim();
  if (/^(max|u64_max)$/i.test(t) && max === U64_MAX) return max;
  if (/^(max|u32_max)$/i.test(t) && max === BigInt(U32_MAX)) return max;
  if (!/^(\d+|0x[0-9a-f]+)$/i.test(t)) throw new Error(`${what} ${JSON.stringify(text)} is not a number`);
  const v = BigInt(t);
  if (v > max) throw new Error(`${what} ${t} is larger than ${max}`);
  return v;
}

/** "inode:offset[:snapshot]", each decimal, 0x hex or max (as bposToText prints U64_MAX/U32_MAX). */
function parsePos(text: string, option: string, command: string): Bpos {
  const parts = text.split(':');
  try {
    if (parts.length < 2 || parts.length > 3) throw new Error('expected inode:offset or inode:offset:snapshot');
    return pos(parseU(parts[0]!, U64_MAX, 'inode'), parseU(parts[1]!, U64_MAX, 'offset'), parts.length === 3 ? Number(parseU(parts[2]!, BigInt(U32_MAX), 'snapshot')) : 0);
  } catch (e) {
    throw new UsageError(`${option}: ${JSON.stringify(text)}: ${(e as Error).message} (a position is inode:offset[:snapshot], e.g. 1:200 or 1:200:0)`, command);
  }
}

/** "name" or "name:extents". */
function parseBtreeSpec(text: string, command: string): { name: string; extents: boolean } {
  const [name = '', kind, ...rest] = text.split(':');
  if (rest.length || (kind !== undefined && kind !== 'extents')) throw new UsageError(`--btree: ${JSON.stringify(text)}: expected name or name:extents`, command);
  if (!BTREE_NAME_RE.test(name)) throw new UsageError(`--btree: ${JSON.stringify(name)} is not a btree name (${BTREE_NAME_RE.source}: lower case, digits, _, at most 32 characters)`, command);
  return { name, extents: kind === 'extents' };
}

function parseIo(v: string | undefined, command: string): IoBackendName | undefined {
  if (v === undefined) return undefined;
  if (!isIoBackendName(v)) throw new UsageError(`--io: ${JSON.stringify(v)}: expected ${IO_BACKEND_NAMES.join(' or ')}`, command);
  return v;
}

function parseCount(text: string, option: string, command: string): number {
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(Number(text))) throw new UsageError(`${option}: ${JSON.stringify(text)} is not a non-negative integer`, command);
  return Number(text);
}

/* ------------------------------------------------------------ output */

let stdoutBroken = false;
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  // the reader went away (`sixtree list ... | head`): stop quietly
  if (e.code === 'EPIPE') stdoutBroken = true;
  else throw e;
});

async function out(text: string): Promise<void> {
  if (stdoutBroken || text.length === 0) return;
  if (process.stdout.write(text)) return;
  // wait for room, or for the reader to go away
  await new Promise<void>((resolve) => {
    const done = (): void => {
      for (const ev of ['drain', 'close', 'error'] as const) process.stdout.off(ev, done);
      resolve();
    };
    for (const ev of ['drain', 'close', 'error'] as const) process.stdout.once(ev, done);
  });
}

/**
 * A one-line progress indicator on stderr: shown only on a terminal and only
 * once the work has taken PROGRESS_DELAY_MS; erased when done.
 */
class Progress {
  private timer: NodeJS.Timeout | null = null;
  private shown = false;
  private readonly startMs = Date.now();

  constructor(
    private readonly label: string,
    private readonly status: () => string = () => '',
  ) {
    if (!process.stderr.isTTY) return;
    this.timer = setInterval(() => this.render(), PROGRESS_PERIOD_MS);
    this.timer.unref();
  }

  private render(): void {
    const elapsedMs = Date.now() - this.startMs;
    if (elapsedMs < PROGRESS_DELAY_MS) return;
    const width = process.stderr.columns || 80;
    const line = `${this.label} ${this.status()} ${(elapsedMs / 1000).toFixed(1)}s`.slice(0, width - 1);
    process.stderr.write(`\r\x1b[K${line}`);
    this.shown = true;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.shown) process.stderr.write('\r\x1b[K');
    this.shown = false;
  }
}

/** A text bar: [=====>     ] 45% */
function bar(fraction: number, widthChars = 24): string {
  const f = Math.min(Math.max(fraction, 0), 1);
  const done = Math.round(f * widthChars);
  return `[${'='.repeat(Math.max(done - 1, 0))}${done ? '>' : ''}${' '.repeat(widthChars - done)}] ${Math.floor(f * 100)}%`;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The value as text when it is valid UTF-8 without control characters (tab, newline aside), else null. */
function printable(v: Uint8Array): string | null {
  let s: string;
  try {
    s = utf8.decode(v);
  } catch {
    return null;
  }
  // eslint-disable-next-line no-control-regex
  return /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/.test(s) ? null : s;
}

function hex(v: Uint8Array): string {
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex');
}

function posJson(p: Bpos): { inode: string; offset: string; snapshot: number } {
  return { inode: p.inode.toString(), offset: p.offset.toString(), snapshot: p.snapshot };
}

function entryToText(e: Entry): string {
  const text = printable(e.value);
  const value = text !== null ? JSON.stringify(text) : `0x${hex(e.value)}`;
  if (e.start === undefined) return `${bposToText(e.pos)} ${value}\n`;
  return `${bposToText(e.start)}..${bposToText(e.pos)} size ${e.size} valueOffset ${e.valueOffset} ${value}\n`;
}

function entryToJson(e: Entry): string {
  const text = printable(e.value);
  const o: Record<string, unknown> = { pos: posJson(e.pos) };
  if (e.start !== undefined) {
    o.start = posJson(e.start);
    o.size = e.size!.toString();
    o.valueOffset = e.valueOffset!.toString();
  }
  o.value = hex(e.value);
  if (text !== null) o.utf8 = text;
  return JSON.stringify(o) + '\n';
}

/* ------------------------------------------------------------ commands */

interface Parsed {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

interface Command {
  summary: string;
  usage: string;
  options: NonNullable<ParseArgsConfig['options']>;
  /** Positional argument names; `...` at the end takes the rest. */
  positionals: string[];
  run(a: Parsed): Promise<number>;
}

const IO_OPTION_HELP = `  --io napi|koffi         I/O backend (default: env SIXTREE_IO, else napi)`;

const COMMANDS: Record<string, Command> = {
  format: {
    summary: 'create a new store on a file or block device',
    usage: `Usage: sixtree format <path> --btree name[:extents] [--btree ...] [options]

Creates a store: a file (created or grown to --size) or a block device.
Formatting over an existing store needs --force.

Options:
  --size <bytes>          device size; needed when <path> does not exist or is an
                          empty file (units K, M, G, T: 64M, 1G)
  --node-size <bytes>     btree node size, a power of two from 4K to 1M and a
                          multiple of the block size (default 256K)
  --block-size <bytes>    I/O block size, a power of two >= the device's sector
                          size (default max(4K, sector size))
  --journal-size <bytes>  journal size (default 1/32 of the device, 4M..1G)
  --btree name[:extents]  a btree (repeat for more; :extents makes it an extents
                          btree); names match ${BTREE_NAME_RE.source}
  --force                 format over an existing store (its contents are lost)
${IO_OPTION_HELP}
  --help                  this text

Example:
  sixtree format /var/lib/app/store.img --size 1G --node-size 256K --btree kv --btree files:extents
`,
    options: {
      size: { type: 'string' },
      'node-size': { type: 'string' },
      'block-size': { type: 'string' },
      'journal-size': { type: 'string' },
      btree: { type: 'string', multiple: true },
      force: { type: 'boolean' },
      io: { type: 'string' },
    },
    positionals: ['path'],
    run: cmdFormat,
  },
  info: {
    summary: 'print the superblock: sizes, layout, btrees and roots, clean flag',
    usage: `Usage: sixtree info <path> [--json]

Prints the superblock of the store at <path>: uuid, version, sizes, layout,
btrees (extents flag, root), clean-shutdown flag, journal seq blacklist, and
the state of both superblock copies. Reads only the superblock, read-only,
without taking the store's lock (works while the store is open elsewhere; a
running store's superblock says clean: no and its roots may be older than the
journal's).

Options:
  --json                  one JSON object instead of text
${IO_OPTION_HELP}
  --help                  this text
`,
    options: { json: { type: 'boolean' }, io: { type: 'string' } },
    positionals: ['path'],
    run: cmdInfo,
  },
  list: {
    summary: 'print the entries of a btree',
    usage: `Usage: sixtree list <path> <btree> [options]

Prints the entries of <btree> in [--start, --end), one per line:
  normal btrees:  inode:offset:snapshot value
  extents:        start..end size N valueOffset N value
A value is printed as a JSON string when it is printable UTF-8, else as 0x hex.
Opens the store read-only (a journal left by a crash is replayed in memory).

Options:
  --start inode:offset[:snapshot]   first position (inclusive; default 0:0:0)
  --end inode:offset[:snapshot]     end position (exclusive; default the end)
  --limit N               at most N entries
  --reverse               newest position first
  --json                  JSON lines: {"pos":{"inode":"1","offset":"2","snapshot":0},
                          "value":"<hex>","utf8":"<text, when printable>"}
                          (extents also start, size, valueOffset; u64s as strings)
${IO_OPTION_HELP}
  --help                  this text

Positions take decimal, 0x hex, or max.
`,
    options: {
      start: { type: 'string' },
      end: { type: 'string' },
      limit: { type: 'string' },
      reverse: { type: 'boolean' },
      json: { type: 'boolean' },
      io: { type: 'string' },
    },
    positionals: ['path', 'btree'],
    run: cmdList,
  },
  fsck: {
    summary: 'check a store: topology, key order, bucket accounting, journal',
    usage: `Usage: sixtree fsck <path>

Opens the store read-only (recovery replays the journal in memory; nothing is
written), walks every btree and checks that nodes tile their parents, keys are
in order, every bucket in the tree is allocated and nothing else is, and the
journal is consistent. Prints each problem found on stdout.

Exit status: 0 clean, 1 problems found (or the store could not be opened).

Options:
${IO_OPTION_HELP}
  --help                  this text
`,
    options: { io: { type: 'string' } },
    positionals: ['path'],
    run: cmdFsck,
  },
  bench: {
    summary: 'run the benchmark suite (node dist/bench/run.js)',
    usage: `Usage: sixtree bench [options]

Runs the benchmark suite, node dist/bench/run.js, passing every option through;
its exit status is sixtree's. The suite's own options follow.
`,
    options: {},
    positionals: ['...'],
    run: cmdBench,
  },
};

function mainUsage(): string {
  const p = new Printbuf();
  p.line('Usage: sixtree <command> [arguments] [options]');
  p.line();
  p.line('Commands:');
  p.nested((o) => {
    for (const [name, c] of Object.entries(COMMANDS)) o.line(`${name.padEnd(8)}${c.summary}`);
  });
  p.line();
  p.line("Run 'sixtree <command> --help' for a command's options.");
  p.line();
  p.line('Exit status: 0 success, 1 failure (the error code is printed: sixtree: <code>: <message>),');
  p.line('2 usage error. SIXTREE_DEBUG=1 adds stack traces.');
  return p.toString();
}

function parse(name: string, c: Command, args: string[]): Parsed {
  let r: ReturnType<typeof parseArgs>;
  try {
    r = parseArgs({ args, options: c.options, allowPositionals: true, strict: true });
  } catch (e) {
    const msg = (e as Error).message.split(/\.\s/)[0]!.replace(/\s+/g, ' ');
    throw new UsageError(msg.charAt(0).toLowerCase() + msg.slice(1), name);
  }
  const names = c.positionals;
  if (r.positionals.length < names.length) throw new UsageError(`missing <${names[r.positionals.length]}>`, name);
  if (r.positionals.length > names.length) throw new UsageError(`unexpected argument ${JSON.stringify(r.positionals[names.length])}`, name);
  return { values: r.values as Parsed['values'], positionals: r.positionals };
}

function str(v: Parsed['values'][string]): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** A path the reading commands need: a clear error when it is missing. */
function existingPath(path: string): string {
  if (!existsSync(path)) throw new SixtreeError('ERR_NOT_FOUND_DEVICE', `${path}: no such file or device`, { path });
  return path;
}

/** Store option names in a library message, as the command line spells them. */
const CLI_OPTION_NAMES: Array<[RegExp, string]> = [
  [/\b(?:opts\.)?nodeSize\b/g, '--node-size'],
  [/\b(?:opts\.)?blockSize\b/g, '--block-size'],
  [/\b(?:opts\.)?journalSize\b/g, '--journal-size'],
  [/\bopts\.size\b/g, '--size'],
  [/\bopts\.createSizeBytes\b/g, '--size'],
  [/\bopts\.btrees(\[\d+\](\.name)?)?/g, '--btree'],
  [/\bpass size\b/g, 'pass --size'],
  [/\bforce: true\b/g, '--force'],
];

function cliOptionNames(e: unknown): unknown {
  if (!(e instanceof SixtreeError)) return e;
  const message = CLI_OPTION_NAMES.reduce((m, [re, name]) => m.replace(re, name), e.message);
  return message === e.message ? e : new SixtreeError(e.code, message, e.details, { cause: e });
}

async function cmdFormat(a: Parsed): Promise<number> {
  const path = a.positionals[0]!;
  const specs = (a.values.btree as string[] | undefined) ?? [];
  if (specs.length === 0) throw new UsageError('at least one --btree name[:extents] is needed', 'format');
  const btrees = specs.map((s) => parseBtreeSpec(s, 'format'));
  const opts: { btrees: typeof btrees; size?: number; nodeSize?: number; blockSize?: number; journalSize?: number; force?: boolean; io?: IoBackendName } = { btrees };
  const size = str(a.values.size);
  if (size !== undefined) opts.size = parseBytes(size, '--size', 'format');
  const nodeSize = str(a.values['node-size']);
  if (nodeSize !== undefined) opts.nodeSize = parseBytes(nodeSize, '--node-size', 'format');
  const blockSize = str(a.values['block-size']);
  if (blockSize !== undefined) opts.blockSize = parseBytes(blockSize, '--block-size', 'format');
  const journalSize = str(a.values['journal-size']);
  if (journalSize !== undefined) opts.journalSize = parseBytes(journalSize, '--journal-size', 'format');
  if (a.values.force) opts.force = true;
  const io = parseIo(str(a.values.io), 'format');
  if (io) opts.io = io;

  const existed = existsSync(path);
  const progress = new Progress(`formatting ${path}`);
  try {
    await Store.format(path, opts);
  } catch (e) {
    // a file this command created and could not format is removed again
    if (!existed && existsSync(path)) rmSync(path, { force: true });
    throw cliOptionNames(e);
  } finally {
    progress.stop();
  }
  const { sb } = await superblockOf(path, io);
  await out(
    `formatted ${path}: ${bytesToText(sb.deviceBytes)}, node size ${bytesToText(sb.nodeBytes)}, block size ${sb.blockBytes}, ` +
      `journal ${bytesToText(sb.journalBytes)}, ${sb.nrBuckets} buckets, btrees ${sb.btrees.map((b) => b.name + (b.extents ? ' (extents)' : '')).join(', ')}; uuid ${uuidToText(sb.uuid)}\n`,
  );
  return EXIT_OK;
}

/** Both superblock copies and the one in use, read-only and without the store's lock. */
async function superblockOf(path: string, io: IoBackendName | undefined): Promise<{ sb: Superblock; copies: [SbCopy, SbCopy]; kind: string; deviceBytes: number }> {
  const dev = BlockDevice.open(existingPath(path), { readOnly: true, lock: false, ...(io ? { io } : {}) });
  try {
    const copies = await readSuperblockCopies(dev);
    const sb = await readSuperblock(dev);
    return { sb, copies, kind: dev.kind, deviceBytes: dev.sizeBytes };
  } finally {
    await dev.close();
  }
}

async function cmdInfo(a: Parsed): Promise<number> {
  const path = a.positionals[0]!;
  const { sb, copies, kind, deviceBytes } = await superblockOf(path, parseIo(str(a.values.io), 'info'));
  const maxValueSize = maxValueSizeFor(sb.nodeBytes);
  if (a.values.json) {
    await out(
      JSON.stringify({
        path,
        kind,
        deviceBytes,
        uuid: uuidToText(sb.uuid),
        version: sb.version,
        seq: sb.seq,
        created: new Date(sb.createdMs).toISOString(),
        sizeBytes: sb.deviceBytes,
        blockSize: sb.blockBytes,
        nodeSize: sb.nodeBytes,
        maxValueSize,
        journal: { offsetBytes: sb.journalOffsetBytes, bytes: sb.journalBytes },
        buckets: { offsetBytes: sb.bucketOffsetBytes, count: sb.nrBuckets },
        clean: sb.clean,
        cleanJournalSeq: sb.cleanJournalSeq,
        cleanJournalOffsetBytes: sb.cleanJournalOffsetBytes,
        blacklist: sb.blacklist,
        btrees: sb.btrees.map((b) => ({ id: b.id, name: b.name, extents: b.extents, root: b.root })),
        copies: copies.map((c) => ({ offsetBytes: c.offsetBytes, status: c.status, seq: c.seq, ...(c.status === 'ok' ? {} : { reason: c.reason }) })),
      }) + '\n',
    );
    return EXIT_OK;
  }
  const p = new Printbuf();
  p.field('path', `${path} (${kind}, ${bytesToText(deviceBytes)})`);
  p.print(superblockToText(sb));
  p.field('max value size', maxValueSize);
  p.line('superblock copies:');
  p.nested((o) => {
    for (const c of copies) o.line(`at ${c.offsetBytes}: ${c.status === 'ok' ? `ok, seq ${c.seq}` : `${c.status}: ${c.reason}`}`);
  });
  if (!sb.clean) p.line('note: not cleanly shut down (or open now): the journal holds newer roots; opening the store replays it');
  await out(p.toString());
  return EXIT_OK;
}

/** Open read-only, with progress on a terminal while recovery runs. */
async function openReadOnly(path: string, io: IoBackendName | undefined): Promise<Store> {
  const progress = new Progress(`opening ${path}`);
  try {
    return await Store.open(existingPath(path), { readOnly: true, ...(io ? { io } : {}) });
  } finally {
    progress.stop();
  }
}

async function cmdList(a: Parsed): Promise<number> {
  const [path, btree] = a.positionals as [string, string];
  const range: { start?: Bpos; end?: Bpos; reverse?: boolean; limit?: number } = {};
  const start = str(a.values.start);
  if (start !== undefined) range.start = parsePos(start, '--start', 'list');
  const end = str(a.values.end);
  if (end !== undefined) range.end = parsePos(end, '--end', 'list');
  const limit = str(a.values.limit);
  if (limit !== undefined) range.limit = parseCount(limit, '--limit', 'list');
  if (a.values.reverse) range.reverse = true;
  const io = parseIo(str(a.values.io), 'list');
  const format = a.values.json ? entryToJson : entryToText;

  const store = await openReadOnly(path, io);
  let n = 0;
  // a count on the terminal only when the entries themselves go elsewhere
  const progress = process.stdout.isTTY ? null : new Progress(`listing ${btree}`, () => `${n} entries`);
  try {
    let chunk = '';
    for await (const e of store.range(btree, range)) {
      chunk += format(e);
      n++;
      if (chunk.length >= OUTPUT_CHUNK_BYTES) {
        await out(chunk);
        chunk = '';
        if (stdoutBroken) break;
      }
    }
    await out(chunk);
  } finally {
    progress?.stop();
    await store.close();
  }
  return EXIT_OK;
}

async function cmdFsck(a: Parsed): Promise<number> {
  const path = a.positionals[0]!;
  const store = await openReadOnly(path, parseIo(str(a.values.io), 'fsck'));
  let problems: string[];
  try {
    const before = store.stats();
    const nodesTotal = Math.max(before.alloc.used ?? 0, 1);
    const seen = (): number => {
      const s = store.stats();
      return s.cache.hits + s.cache.misses - before.cache.hits - before.cache.misses;
    };
    const progress = new Progress(`fsck ${path}`, () => `${bar(seen() / nodesTotal)} ${seen()}/${nodesTotal} nodes`);
    try {
      problems = await store.fsck();
    } finally {
      progress.stop();
    }
    if (problems.length === 0) {
      const s = store.stats();
      const depths = Object.entries(s.btrees)
        .map(([name, b]) => `${name} depth ${b.depth}`)
        .join(', ');
      await out(`${path}: clean: ${store.btrees.length} btree${store.btrees.length === 1 ? '' : 's'} (${depths}), ${s.alloc.used} of ${s.alloc.buckets} buckets used, journal seq ${s.journal.seq}\n`);
    } else {
      await out(problems.map((l) => `${l}\n`).join(''));
    }
  } finally {
    await store.close();
  }
  if (problems.length) throw new CliFailure('ERR_FSCK', `${path}: ${problems.length} problem${problems.length === 1 ? '' : 's'} found`);
  return EXIT_OK;
}

/** A failure the command line reports itself (not a library error): exit status 1. */
class CliFailure extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'CliFailure';
  }
}

/** dist/bench/run.js, next to this file's dist/src/. */
function benchRunner(): string {
  return fileURLToPath(new URL('../bench/run.js', import.meta.url));
}

async function cmdBench(a: Parsed): Promise<number> {
  const runner = benchRunner();
  if (!existsSync(runner)) throw new CliFailure('ERR_NOT_FOUND', `${runner}: the benchmark runner is not built (npm run build:ts)`);
  const child = spawn(process.execPath, [runner, ...a.positionals], { stdio: 'inherit' });
  const forward = (sig: NodeJS.Signals) => () => child.kill(sig);
  const onInt = forward('SIGINT');
  const onTerm = forward('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  try {
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (c, s) => resolve([c, s]));
    });
    if (signal) return 128 + (osConstants.signals[signal] ?? 0);
    return code ?? EXIT_FAILURE;
  } finally {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
  }
}

/* ------------------------------------------------------------ main */

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(fileURLToPath(new URL('../../package.json', import.meta.url)), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

async function run(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined) throw new UsageError('no command given (format, info, list, fsck, bench)', null);
  if (name === '--help' || name === '-h' || name === 'help') {
    const topic = rest[0];
    if (topic !== undefined && COMMANDS[topic]) await out(COMMANDS[topic].usage);
    else await out(mainUsage());
    return EXIT_OK;
  }
  if (name === '--version' || name === '-V') {
    await out(`sixtree ${version()}\n`);
    return EXIT_OK;
  }
  const c = Object.hasOwn(COMMANDS, name) ? COMMANDS[name]! : undefined;
  if (!c) throw new UsageError(`unknown command ${JSON.stringify(name)} (format, info, list, fsck, bench)`, null);
  if (name === 'bench') {
    // everything goes to the runner; --help shows ours, then the runner's
    if (rest.includes('--help') || rest.includes('-h')) await out(c.usage + '\n');
    return c.run({ values: {}, positionals: rest });
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    await out(c.usage);
    return EXIT_OK;
  }
  return c.run(parse(name, c, rest));
}

function fail(code: string, message: string, e: unknown): void {
  process.stderr.write(`sixtree: ${code}: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
  if (process.env.SIXTREE_DEBUG && e instanceof Error) process.stderr.write(`${e.stack ?? ''}\n${e.cause instanceof Error ? `cause: ${e.cause.stack}\n` : ''}`);
}

function report(e: unknown): number {
  if (e instanceof UsageError) {
    fail('ERR_USAGE', `${e.message} (see 'sixtree ${e.command ? `${e.command} ` : ''}--help')`, e);
    return EXIT_USAGE;
  }
  if (e instanceof SixtreeError || e instanceof CliFailure) {
    fail(e.code, e.message, e);
    return EXIT_FAILURE;
  }
  const err = e as NodeJS.ErrnoException;
  fail(typeof err?.code === 'string' ? err.code : 'ERR_INTERNAL', err instanceof Error ? err.message : String(e), e);
  return EXIT_FAILURE;
}

process.on('unhandledRejection', (e) => {
  process.exitCode = report(e);
});

run(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.exitCode = report(e);
  },
);

