// SPDX-License-Identifier: GPL-2.0-only
/*
 * kv-service: a tiny key-value service over HTTP on a sixtree store.
 *
 *   PUT    /kv/<key>        store the request body         201 created, 204 replaced
 *   GET    /kv/<key>        the value                      200, 404
 *   DELETE /kv/<key>        remove it                      204, 404
 *   GET    /kv?limit=N&after=<cursor>
 *                           keys in position (hash) order, a page at a time:
 *                           {"keys":[{"key":"a","bytes":3}],"next":"<cursor>"|null}
 *
 * Keys are strings. A key lives at inode = the first 8 bytes of sha256(key),
 * offset = a small slot number (0 unless two keys share a hash); the record
 * holds the key itself (u16 length, key bytes) and then the value, so a hash
 * collision is told apart by comparing keys. Every request is one
 * transaction: reading the slots of an inode and writing one is atomic, and
 * the callback has no side effects, so a restart can rerun it freely.
 *
 * Run:  node dist/examples/kv-service.js [store-path] [port]
 *       (no path: a temporary 64 MiB store, removed on exit; port 0 = any)
 *       curl -X PUT --data-binary hello http://127.0.0.1:PORT/kv/greeting
 * In your own project, import from 'sixtree' instead of '../src/index.js'.
 */

import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { SixtreeError, Store, pos, type Bpos, type Transaction } from '../src/index.js';

const BTREE = 'kv';
const KEY_BYTES_MAX = 1024;
const LIST_LIMIT_DEFAULT = 100;
const LIST_LIMIT_MAX = 1000;

export interface KvServiceOpts {
  /** Store path; formatted when missing. Default: a temporary file, removed by close(). */
  path?: string;
  /** Default 0: any free port. */
  port?: number;
}

export interface KvService {
  /** http://127.0.0.1:PORT */
  url: string;
  store: Store;
  close(): Promise<void>;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

function keyInode(key: string): bigint {
  return createHash('sha256').update(key).digest().readBigUInt64BE(0);
}

/** [u16 key length][key][value] */
function recordMake(key: Uint8Array, value: Uint8Array): Uint8Array {
  const r = new Uint8Array(2 + key.length + value.length);
  new DataView(r.buffer).setUint16(0, key.length, true);
  r.set(key, 2);
  r.set(value, 2 + key.length);
  return r;
}

function recordKey(r: Uint8Array): string {
  const n = new DataView(r.buffer, r.byteOffset, r.byteLength).getUint16(0, true);
  return dec.decode(r.subarray(2, 2 + n));
}

function recordValue(r: Uint8Array): Uint8Array {
  const n = new DataView(r.buffer, r.byteOffset, r.byteLength).getUint16(0, true);
  return r.subarray(2 + n);
}

/** The slot holding key, and the first free slot after the inode's last one. */
async function findSlot(tx: Transaction, key: string): Promise<{ at: Bpos | null; free: Bpos; record: Uint8Array | null }> {
  const inode = keyInode(key);
  const it = tx.iter(BTREE, pos(inode, 0));
  let free = 0n;
  for (let e = await it.peek(); e && e.pos.inode === inode; e = await it.next()) {
    if (recordKey(e.value) === key) return { at: e.pos, free: pos(inode, free), record: e.value };
    free = e.pos.offset + 1n;
  }
  return { at: null, free: pos(inode, free), record: null };
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function readBody(req: IncomingMessage, maxBytes: number): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > maxBytes) throw new HttpError(413, `value larger than ${maxBytes} bytes`);
    chunks.push(c as Buffer);
  }
  return new Uint8Array(Buffer.concat(chunks));
}

function keyFrom(url: URL): string {
  let key: string;
  try {
    key = decodeURIComponent(url.pathname.slice('/kv/'.length));
  } catch {
    throw new HttpError(400, 'key is not valid percent-encoding');
  }
  const bytes = enc.encode(key).length;
  if (bytes === 0 || bytes > KEY_BYTES_MAX) throw new HttpError(400, `a key is 1 to ${KEY_BYTES_MAX} bytes of UTF-8`);
  return key;
}

function parseCursor(s: string | null): Bpos | undefined {
  if (s === null) return undefined;
  const m = /^(\d+):(\d+)$/.exec(s);
  if (!m) throw new HttpError(400, 'after: expected a cursor inode:offset from an earlier page');
  return pos(BigInt(m[1]!), BigInt(m[2]!) + 1n);
}

async function handle(store: Store, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://localhost');
  if (url.pathname === '/kv' && req.method === 'GET') {
    const limitText = url.searchParams.get('limit');
    const limit = limitText === null ? LIST_LIMIT_DEFAULT : Number(limitText);
    if (!Number.isInteger(limit) || limit < 1 || limit > LIST_LIMIT_MAX) throw new HttpError(400, `limit: 1 to ${LIST_LIMIT_MAX}`);
    const start = parseCursor(url.searchParams.get('after'));
    const keys: Array<{ key: string; bytes: number }> = [];
    let last: Bpos | null = null;
    for await (const e of store.range(BTREE, { ...(start ? { start } : {}), limit })) {
      keys.push({ key: recordKey(e.value), bytes: recordValue(e.value).length });
      last = e.pos;
    }
    const next = keys.length === limit && last ? `${last.inode}:${last.offset}` : null;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys, next }));
    return;
  }
  if (!url.pathname.startsWith('/kv/')) throw new HttpError(404, 'not found: use /kv/<key> or /kv');
  const key = keyFrom(url);
  switch (req.method) {
    case 'GET': {
      const record = await store.transact(async (tx) => (await findSlot(tx, key)).record);
      if (!record) throw new HttpError(404, `no key ${JSON.stringify(key)}`);
      res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(recordValue(record));
      return;
    }
    case 'PUT': {
      const keyBytes = enc.encode(key);
      const value = await readBody(req, store.maxValueSize - 2 - keyBytes.length);
      const record = recordMake(keyBytes, value);
      const created = await store.transact(async (tx) => {
        const s = await findSlot(tx, key);
        tx.put(BTREE, s.at ?? s.free, record);
        return s.at === null;
      });
      res.writeHead(created ? 201 : 204).end();
      return;
    }
    case 'DELETE': {
      const found = await store.transact(async (tx) => {
        const s = await findSlot(tx, key);
        if (s.at) tx.del(BTREE, s.at);
        return s.at !== null;
      });
      if (!found) throw new HttpError(404, `no key ${JSON.stringify(key)}`);
      res.writeHead(204).end();
      return;
    }
    default:
      throw new HttpError(405, `method ${req.method} not allowed`);
  }
}

function sendError(res: ServerResponse, e: unknown): void {
  const [status, code] =
    e instanceof HttpError ? [e.status, 'HTTP'] : e instanceof SixtreeError ? [e.code === 'ERR_VALUE_TOO_LARGE' ? 413 : 500, e.code] : [500, 'ERR_INTERNAL'];
  if (res.headersSent) return void res.destroy();
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ code, message: (e as Error).message }));
}

/** Start the service: format the store if needed, open it, listen on 127.0.0.1. */
export async function main(opts: KvServiceOpts = {}): Promise<KvService> {
  let tmpDir: string | null = null;
  let path = opts.path;
  if (path === undefined) {
    tmpDir = mkdtempSync(join(tmpdir(), 'sixtree-kv-service-'));
    path = join(tmpDir, 'kv.img');
  }
  if (!existsSync(path)) await Store.format(path, { size: 64 * 1024 * 1024, nodeSize: 64 * 1024, btrees: [{ name: BTREE }] });
  const store = await Store.open(path);
  const server: Server = createServer((req, res) => {
    handle(store, req, res).catch((e: unknown) => sendError(res, e));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    store,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await store.close();
      if (tmpDir) rmSync(tmpDir, { recursive: true, force: true });
    },
  };
}

/** Run as a program (node dist/examples/...), not imported. */
function isMainModule(): boolean {
  try {
    return !!process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href;
  } catch {
    return false;
  }
}

if (isMainModule()) {
  const [path, port] = process.argv.slice(2);
  const svc = await main({ ...(path ? { path } : {}), ...(port ? { port: Number(port) } : {}) });
  console.log(`kv-service on ${svc.url} (store ${svc.store.btrees.join(', ')}, values up to ${svc.store.maxValueSize} bytes); Ctrl-C stops it`);
  console.log(`  curl -X PUT --data-binary hello ${svc.url}/kv/greeting; curl ${svc.url}/kv/greeting; curl '${svc.url}/kv?limit=10'`);
  const stop = () => {
    svc.close().then(
      () => process.exit(0),
      (e: unknown) => {
        console.error(e);
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
