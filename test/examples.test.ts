// SPDX-License-Identifier: GPL-2.0-only
/*
 * The examples in examples/, run for real and quickly: kv-service (HTTP on
 * 127.0.0.1, a few requests, stopped; restarted on the same store to see the
 * data survive), extent-map (the final block map, trims and valueOffsets),
 * and loop-device-test only as root (it attaches a loop device and must
 * detach exactly that one).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main as extentMap, type MapRow } from '../examples/extent-map.js';
import { main as kvService } from '../examples/kv-service.js';
import { main as loopDeviceTest, skipReason as loopSkipReason } from '../examples/loop-device-test.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sixtree-examples-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('examples/kv-service.ts', () => {
  it('serves PUT, GET, DELETE and a paged listing, and keeps the data across a restart', async () => {
    const path = join(dir, 'kv.img');
    let svc = await kvService({ path });
    try {
      expect(svc.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const put = (key: string, body: string) => fetch(`${svc.url}/kv/${encodeURIComponent(key)}`, { method: 'PUT', body });
      expect((await put('greeting', 'hello')).status).toBe(201);
      expect((await put('greeting', 'hello again')).status).toBe(204);
      expect((await put('a key/with slash', 'x')).status).toBe(201);
      expect((await put('third', '3')).status).toBe(201);

      const got = await fetch(`${svc.url}/kv/greeting`);
      expect(got.status).toBe(200);
      expect(await got.text()).toBe('hello again');
      expect(await (await fetch(`${svc.url}/kv/${encodeURIComponent('a key/with slash')}`)).text()).toBe('x');
      expect((await fetch(`${svc.url}/kv/missing`)).status).toBe(404);

      // pages of two, in position (hash) order, until next is null
      const keys: string[] = [];
      let next: string | null = null;
      let pages = 0;
      do {
        const res: Response = await fetch(`${svc.url}/kv?limit=2${next ? `&after=${next}` : ''}`);
        const page = (await res.json()) as { keys: Array<{ key: string; bytes: number }>; next: string | null };
        keys.push(...page.keys.map((k) => k.key));
        next = page.next;
        pages++;
      } while (next && pages < 10);
      expect(keys.sort()).toEqual(['a key/with slash', 'greeting', 'third']);

      expect((await fetch(`${svc.url}/kv/third`, { method: 'DELETE' })).status).toBe(204);
      expect((await fetch(`${svc.url}/kv/third`, { method: 'DELETE' })).status).toBe(404);
      expect((await fetch(`${svc.url}/kv/third`)).status).toBe(404);

      const big = await put('big', 'x'.repeat(svc.store.maxValueSize));
      expect(big.status).toBe(413);
    } finally {
      await svc.close();
    }

    svc = await kvService({ path });
    try {
      expect(await (await fetch(`${svc.url}/kv/greeting`)).text()).toBe('hello again');
      expect((await fetch(`${svc.url}/kv/third`)).status).toBe(404);
    } finally {
      await svc.close();
    }
  });
});

describe('examples/extent-map.ts', () => {
  it('prints the block map: overwrites split and trim extents, pieces keep their value with a valueOffset', async () => {
    let text = '';
    const rows = await extentMap({ path: join(dir, 'extents.img'), log: (t) => (text += t) });
    const ext = (start: bigint, end: bigint, value: bigint, valueOffset: bigint): MapRow => ({ start, end, hole: false, value, valueOffset, device: value + valueOffset });
    expect(rows).toEqual([
      ext(0n, 8n, 1000n, 0n),
      { start: 8n, end: 12n, hole: true },
      ext(12n, 20n, 1000n, 12n),
      ext(20n, 40n, 7000n, 0n),
      ext(40n, 64n, 1000n, 40n),
      ext(64n, 90n, 5000n, 0n),
      ext(90n, 100n, 9000n, 0n),
    ]);
    expect(text).toContain('3. overwrite [20, 40) at device 7000: the first extent is split\n');
    expect(text).toContain('  file [40, 64)    -> device [1040, 1064) value 1000, valueOffset 40\n');
    expect(text).toContain('  file [8, 12)     hole\n');
    expect(text).toContain('  pos 90: start 64 size 26 value 5000 valueOffset 0\n');
  });
});

const notRoot = process.getuid?.() !== 0;
const loopReason = loopSkipReason();
if (notRoot) console.log(`examples/loop-device-test.ts: the loop device run is skipped: ${loopReason}`);

describe.skipIf(notRoot)('examples/loop-device-test.ts as root (it attaches a loop device)', () => {
  it.skipIf(loopReason !== null)(`formats and uses a store on /dev/loopN, then detaches exactly that device${loopReason ? ` (skipped: ${loopReason})` : ''}`, async () => {
    let text = '';
    const r = await loopDeviceTest({ log: (t) => (text += t) });
    expect(r.skipped).toBeUndefined();
    expect(r.device).toMatch(/^\/dev\/loop\d+$/);
    expect(r.keys).toBe(2000);
    expect(r.fsckProblems).toEqual([]);
    expect(text).toContain(`attached ${r.backingFile} as ${r.device}\n`);
    expect(text).toContain(`detached ${r.device}\n`);
    // nothing is left attached to our backing file
    const list = execFileSync('losetup', ['--list', '--noheadings', '--output', 'NAME,BACK-FILE'], { encoding: 'utf8' });
    expect(list).not.toContain(r.backingFile!);
  });

});

// The no-root path runs in every environment: in-process when we are not
// root, else the compiled example run as uid 65534.
describe('examples/loop-device-test.ts without root', () => {
  it('says why it skips, exits 0 and attaches nothing', async () => {
    if (notRoot) {
      let text = '';
      const r = await loopDeviceTest({ log: (t) => (text += t) });
      expect(r).toEqual({ skipped: loopReason });
      expect(text).toBe(`loop-device-test: skipped: ${loopReason}\n`);
      return;
    }
    const script = fileURLToPath(new URL('../dist/examples/loop-device-test.js', import.meta.url));
    const r = spawnSync(process.execPath, [script], { uid: 65534, gid: 65534, cwd: tmpdir(), encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('loop-device-test: skipped: loop devices need root (running as uid 65534); run it with sudo\n');
  });
});
