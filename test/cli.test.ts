// SPDX-License-Identifier: GPL-2.0-only
/*
 * The sixtree command (src/cli.ts), run for real: `node dist/src/cli.js ...`
 * in a child process on a fresh file under os.tmpdir(). The test suite runs
 * tsc first, so dist/ holds this tree's build.
 *
 * Covers: format -> info -> list (after writing keys with the API) -> fsck
 * clean; usage errors (exit 2, one line); runtime errors (exit 1, one line
 * `sixtree: <code>: <message>`, no stack trace); --help of every subcommand;
 * nothing on stderr when it is not a terminal and all went well.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store, pos } from '../src/index.js';

const CLI = fileURLToPath(new URL('../dist/src/cli.js', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run the CLI in the test's directory; SIXTREE_DEBUG unset unless given. */
function sixtree(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  if (!('SIXTREE_DEBUG' in env)) delete childEnv.SIXTREE_DEBUG;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: dir, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** One line `sixtree: <code>: <message>`, nothing else. */
function expectOneErrorLine(r: Run, code: string): string {
  expect(r.stderr).toMatch(new RegExp(`^sixtree: ${code}: \\S.*\\n$`));
  expect(r.stderr.split('\n')).toHaveLength(2);
  expect(r.stderr).not.toMatch(/^\s+at /m);
  return r.stderr;
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sixtree-cli-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('sixtree format -> info -> list -> fsck', () => {
  let path: string;
  let uuid: string;

  beforeAll(async () => {
    path = join(dir, 'store.img');
    const r = await sixtree(['format', path, '--size', '64M', '--node-size', '64K', '--block-size', '4096', '--btree', 'kv', '--btree', 'ext:extents']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^formatted .*store\.img: 64\.0 MiB, node size 64\.0 KiB, block size 4096, journal 4\.00 MiB, \d+ buckets, btrees kv, ext \(extents\); uuid [0-9a-f-]{36}\n$/);
    uuid = /uuid ([0-9a-f-]{36})/.exec(r.stdout)![1]!;

    // keys written with the API, one transaction per btree
    const store = await Store.open(path);
    await store.transact((tx) => {
      for (let i = 0; i < 3; i++) tx.put('kv', pos(1, i), new TextEncoder().encode(`value ${i}`));
      tx.put('kv', pos(2, 0), new Uint8Array([0, 1, 255]));
      tx.put('kv', pos(2, 1, 7), new TextEncoder().encode('two\nlines'));
    });
    await store.transact((tx) => {
      tx.putExtent('ext', pos(9, 0), 64, new TextEncoder().encode('A'));
      tx.putExtent('ext', pos(9, 16), 8, new TextEncoder().encode('B'));
    });
    await store.close();
  });

  it('info prints the superblock', async () => {
    const r = await sixtree(['info', path]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`uuid:                   ${uuid}\n`);
    expect(r.stdout).toContain('version:                2\n');
    expect(r.stdout).toContain('device size:            67108864 (64.0 MiB)\n');
    expect(r.stdout).toContain('block size:             4096\n');
    expect(r.stdout).toContain('node size:              65536 (64.0 KiB)\n');
    expect(r.stdout).toMatch(/^clean: +yes \(journal seq \d+, continues at \d+\)$/m);
    expect(r.stdout).toContain('blacklist:              (none)\n');
    expect(r.stdout).toMatch(/^ {2}0 kv: root bucket \d+ seq \d+ level 0$/m);
    expect(r.stdout).toMatch(/^ {2}1 ext \(extents\): root bucket \d+ seq \d+ level 0$/m);
    expect(r.stdout).toMatch(/^ {2}at 4096: ok, seq \d+$/m);
    expect(r.stdout).toMatch(/^ {2}at 8192: ok, seq \d+$/m);
  });

  it('info --json', async () => {
    const r = await sixtree(['info', path, '--json']);
    expect(r.code).toBe(0);
    const info = JSON.parse(r.stdout);
    expect(info).toMatchObject({
      uuid,
      version: 2,
      sizeBytes: 64 * 1024 * 1024,
      blockSize: 4096,
      nodeSize: 65536,
      clean: true,
      blacklist: [],
      btrees: [
        { id: 0, name: 'kv', extents: false, root: { level: 0 } },
        { id: 1, name: 'ext', extents: true, root: { level: 0 } },
      ],
      copies: [
        { offsetBytes: 4096, status: 'ok' },
        { offsetBytes: 8192, status: 'ok' },
      ],
    });
    const store = await Store.open(path, { readOnly: true });
    expect(info.maxValueSize).toBe(store.maxValueSize);
    await store.close();
  });

  it('list prints entries, printable values as strings, others as hex', async () => {
    const r = await sixtree(['list', path, 'kv']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(['1:0:0 "value 0"', '1:1:0 "value 1"', '1:2:0 "value 2"', '2:0:0 0x0001ff', '2:1:7 "two\\nlines"', ''].join('\n'));
  });

  it('list of an extents btree shows start, end, size and valueOffset', async () => {
    const r = await sixtree(['list', path, 'ext']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      ['9:0:0..9:16:0 size 16 valueOffset 0 "A"', '9:16:0..9:24:0 size 8 valueOffset 0 "B"', '9:24:0..9:64:0 size 40 valueOffset 24 "A"', ''].join('\n'),
    );
    const part = await sixtree(['list', path, 'ext', '--start', '9:20', '--end', '9:30']);
    expect(part.stdout).toBe(['9:16:0..9:24:0 size 8 valueOffset 0 "B"', '9:24:0..9:64:0 size 40 valueOffset 24 "A"', ''].join('\n'));
  });

  it('list --start --end --reverse --limit', async () => {
    const r = await sixtree(['list', path, 'kv', '--start', '1:1', '--end', '2:1:7', '--reverse']);
    expect(r.stdout).toBe(['2:0:0 0x0001ff', '1:2:0 "value 2"', '1:1:0 "value 1"', ''].join('\n'));
    const lim = await sixtree(['list', path, 'kv', '--limit', '2', '--start', '0x1:0x1']);
    expect(lim.stdout).toBe(['1:1:0 "value 1"', '1:2:0 "value 2"', ''].join('\n'));
    const none = await sixtree(['list', path, 'kv', '--start', 'max:max']);
    expect(none.code).toBe(0);
    expect(none.stdout).toBe('');
  });

  it('list --json prints JSON lines', async () => {
    const r = await sixtree(['list', path, 'kv', '--json', '--limit', '4']);
    const lines = r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l));
    expect(lines[0]).toEqual({ pos: { inode: '1', offset: '0', snapshot: 0 }, value: '76616c75652030', utf8: 'value 0' });
    expect(lines[3]).toEqual({ pos: { inode: '2', offset: '0', snapshot: 0 }, value: '0001ff' });
    const ext = await sixtree(['list', path, 'ext', '--json', '--reverse', '--limit', '1']);
    expect(JSON.parse(ext.stdout)).toEqual({
      pos: { inode: '9', offset: '64', snapshot: 0 },
      start: { inode: '9', offset: '24', snapshot: 0 },
      size: '40',
      valueOffset: '24',
      value: '41',
      utf8: 'A',
    });
  });

  it('fsck of a clean store exits 0', async () => {
    const r = await sixtree(['fsck', path]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^.*store\.img: clean: 2 btrees \(kv depth 1, ext depth 1\), \d+ of \d+ buckets used, journal seq \d+\n$/);
  });

  it('info works while another process has the store open; list and fsck report ERR_LOCKED', async () => {
    const store = await Store.open(path);
    try {
      const info = await sixtree(['info', path]);
      expect(info.code).toBe(0);
      expect(info.stdout).toMatch(/^clean: +no$/m);
      expect(info.stdout).toContain('note: not cleanly shut down (or open now)');
      const list = await sixtree(['list', path, 'kv']);
      expect(list.code).toBe(1);
      expect(expectOneErrorLine(list, 'ERR_LOCKED')).toContain('is open in another process');
      const fsck = await sixtree(['fsck', path]);
      expect(fsck.code).toBe(1);
      expectOneErrorLine(fsck, 'ERR_LOCKED');
    } finally {
      await store.close();
    }
  });

  it('format over a store needs --force', async () => {
    const copy = join(dir, 'again.img');
    const f = await sixtree(['format', copy, '--size', '32M', '--node-size', '16K', '--btree', 'kv']);
    expect(f.code).toBe(0);
    const r = await sixtree(['format', copy, '--size', '32M', '--btree', 'kv']);
    expect(r.code).toBe(1);
    expect(expectOneErrorLine(r, 'ERR_EXISTS')).toContain('pass --force');
    const forced = await sixtree(['format', copy, '--size', '32M', '--node-size', '16K', '--btree', 'other', '--force']);
    expect(forced.code).toBe(0);
    const info = JSON.parse((await sixtree(['info', copy, '--json'])).stdout);
    expect(info.btrees.map((b: { name: string }) => b.name)).toEqual(['other']);
  });
});

describe('usage errors: exit 2, one line', () => {
  const cases: Array<[string, string[], RegExp]> = [
    ['no command', [], /no command given/],
    ['unknown command', ['frobnicate'], /unknown command "frobnicate"/],
    ['unknown option', ['info', 'x.img', '--bogus'], /unknown option '--bogus'.*sixtree info --help/],
    ['missing path', ['info'], /missing <path>/],
    ['missing btree', ['list', 'x.img'], /missing <btree>/],
    ['extra argument', ['fsck', 'a.img', 'b.img'], /unexpected argument "b\.img"/],
    ['format without --btree', ['format', 'x.img', '--size', '64M'], /at least one --btree/],
    ['bad btree spec', ['format', 'x.img', '--btree', 'kv:tree'], /--btree: "kv:tree": expected name or name:extents/],
    ['bad btree name', ['format', 'x.img', '--btree', 'Bad'], /--btree: "Bad" is not a btree name/],
    ['bad size', ['format', 'x.img', '--btree', 'kv', '--size', '12Q'], /--size: "12Q" is not a size/],
    ['option without its value', ['format', 'x.img', '--btree', 'kv', '--size'], /option '--size <value>' argument missing/],
    ['bad position', ['list', 'x.img', 'kv', '--start', '1:z'], /--start: "1:z": offset "z" is not a number/],
    ['position out of range', ['list', 'x.img', 'kv', '--end', '1:2:4294967296'], /snapshot 4294967296 is larger than 4294967295/],
    ['bad limit', ['list', 'x.img', 'kv', '--limit=-1'], /--limit: "-1" is not a non-negative integer/],
    ['option value that looks like an option', ['list', 'x.img', 'kv', '--limit', '-1'], /option '--limit' argument is ambiguous \(/],
    ['bad io backend', ['info', 'x.img', '--io', 'fast'], /--io: "fast": expected napi or koffi/],
  ];
  for (const [name, args, message] of cases) {
    it(name, async () => {
      const r = await sixtree(args);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      expect(expectOneErrorLine(r, 'ERR_USAGE')).toMatch(message);
    });
  }
  it('nothing is created by a rejected format', () => {
    expect(existsSync(join(dir, 'x.img'))).toBe(false);
  });
});

describe('runtime errors: exit 1, one line, no stack trace', () => {
  it('info on a file that is not a store: ERR_BAD_MAGIC', async () => {
    const junk = join(dir, 'junk.bin');
    writeFileSync(junk, Buffer.alloc(64 * 1024, 0x5a));
    const r = await sixtree(['info', junk]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(expectOneErrorLine(r, 'ERR_BAD_MAGIC')).toContain('junk.bin: not a sixtree store');
  });

  it('SIXTREE_DEBUG adds the stack trace', async () => {
    const junk = join(dir, 'junk.bin');
    const r = await sixtree(['info', junk], { SIXTREE_DEBUG: '1' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^sixtree: ERR_BAD_MAGIC: .*\nSixtreeError: .*\n\s+at /);
  });

  it('a missing path: ERR_NOT_FOUND_DEVICE', async () => {
    for (const args of [['info', join(dir, 'nope.img')], ['list', join(dir, 'nope.img'), 'kv'], ['fsck', join(dir, 'nope.img')]]) {
      const r = await sixtree(args);
      expect(r.code).toBe(1);
      expect(expectOneErrorLine(r, 'ERR_NOT_FOUND_DEVICE')).toContain('nope.img: no such file or device');
    }
    const f = await sixtree(['format', join(dir, 'nope.img'), '--btree', 'kv']);
    expect(f.code).toBe(1);
    expect(expectOneErrorLine(f, 'ERR_NOT_FOUND_DEVICE')).toContain('pass --size to create it');
  });

  it('a device too small: ERR_TOO_SMALL, and the file it created is removed', async () => {
    const small = join(dir, 'small.img');
    const r = await sixtree(['format', small, '--size', '1M', '--btree', 'kv']);
    expect(r.code).toBe(1);
    expect(expectOneErrorLine(r, 'ERR_TOO_SMALL')).toContain('is too small');
    expect(existsSync(small)).toBe(false);
  });

  it('an option the store rejects: ERR_INVALID_ARG naming the command-line option', async () => {
    const r = await sixtree(['format', join(dir, 'bad.img'), '--size', '64M', '--node-size', '3000', '--btree', 'kv']);
    expect(r.code).toBe(1);
    expect(expectOneErrorLine(r, 'ERR_INVALID_ARG')).toContain('--node-size: got 3000; expected a power of two');
  });

  it('an unknown btree: ERR_UNKNOWN_BTREE', async () => {
    const p = join(dir, 'unknown.img');
    expect((await sixtree(['format', p, '--size', '32M', '--node-size', '16K', '--btree', 'kv'])).code).toBe(0);
    const r = await sixtree(['list', p, 'nope']);
    expect(r.code).toBe(1);
    expect(expectOneErrorLine(r, 'ERR_UNKNOWN_BTREE')).toContain('btree "nope" is not in this store (it has: kv)');
  });

  it('fsck of a store whose root node is corrupt: exit 1 with ERR_CHECKSUM', async () => {
    const p = join(dir, 'corrupt.img');
    expect((await sixtree(['format', p, '--size', '32M', '--node-size', '16K', '--btree', 'kv'])).code).toBe(0);
    const info = JSON.parse((await sixtree(['info', p, '--json'])).stdout);
    const rootOffset = info.buckets.offsetBytes + info.btrees[0].root.bucket * info.nodeSize;
    const fd = openSync(p, 'r+');
    try {
      const b = Buffer.alloc(64);
      readSync(fd, b, 0, 64, rootOffset);
      for (let i = 16; i < 64; i++) b[i] = b[i]! ^ 0xff;
      writeSync(fd, b, 0, 64, rootOffset);
    } finally {
      closeSync(fd);
    }
    const r = await sixtree(['fsck', p]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expectOneErrorLine(r, 'ERR_CHECKSUM');
  });
});

describe('--help', () => {
  for (const cmd of ['format', 'info', 'list', 'fsck']) {
    it(`sixtree ${cmd} --help`, async () => {
      const r = await sixtree([cmd, '--help']);
      expect(r.code).toBe(0);
      expect(r.stderr).toBe('');
      expect(r.stdout).toMatch(new RegExp(`^Usage: sixtree ${cmd} `));
      expect(r.stdout).toContain('--help');
    });
  }

  it('sixtree bench --help shows the runner options', async () => {
    const r = await sixtree(['bench', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: sixtree bench \[options\]/);
    expect(r.stdout).toContain('--quick');
  });

  it('sixtree --help lists the commands; help <command> shows its usage', async () => {
    const r = await sixtree(['--help']);
    expect(r.code).toBe(0);
    for (const cmd of ['format', 'info', 'list', 'fsck', 'bench']) expect(r.stdout).toMatch(new RegExp(`^  ${cmd} `, 'm'));
    const h = await sixtree(['help', 'list']);
    expect(h.stdout).toMatch(/^Usage: sixtree list <path> <btree>/);
    const v = await sixtree(['--version']);
    expect(v.stdout).toMatch(/^sixtree \d+\.\d+\.\d+\n$/);
  });
});
