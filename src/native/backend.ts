// SPDX-License-Identifier: GPL-2.0-only
/*
 * NativeBackend: the one seam between sixtree and native code.
 *
 * src/native/ is the only place that loads the addon or koffi. Two
 * implementations of one interface:
 *  - 'napi'  (napi.ts):  the node-addon-api wrapper in build/Release/sixtree.node;
 *  - 'koffi' (koffi.ts): koffi calling libc directly (pread, pwrite, fdatasync,
 *    close, flock) and the blockio_* C functions of the same .node file.
 * The backend is picked by option (io: 'napi' | 'koffi'), else by the env
 * variable SIXTREE_IO, else 'napi'. Each backend is loaded once and cached.
 *
 * Contract shared by both (argument checks of the public layer happen in
 * src/io before any call here; backends still guard their own arguments):
 *  - Failures throw an Error with .code (errno name, e.g. 'EIO', 'ENOENT'),
 *    .errno (positive number) and .syscall: see isNativeError(). O_DIRECT
 *    refused by the file system is errno === backend.noDirectIoErrno.
 *  - Buffers passed to I/O are Uint8Arrays over memory from allocAligned()
 *    or mmapAnon() of the same backend; addressOf() knows exactly those
 *    (undefined once freed). Each region has one free path: the explicit
 *    free, or the finalizer when the ArrayBuffer is collected unfreed.
 *    Freeing a region with asynchronous I/O in flight throws EBUSY.
 *  - Numbers are used for offsets and sizes (exact up to 2^53).
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { invalidArg } from '../errors.js';

export const IO_BACKEND_NAMES = ['napi', 'koffi'] as const;
export type IoBackendName = (typeof IO_BACKEND_NAMES)[number];

/** How a batch runs natively: io_uring, or one operation after another on a worker thread. */
export type NativeBatchEngine = 'uring' | 'serial';

export interface NativeIoOp {
  op: 'read' | 'write';
  buf: Uint8Array;
  offsetBytes: number;
}

export interface NativeMemStats {
  /** Live blockio_alloc_aligned() allocations (process wide). */
  alignedLive: number;
  /** Live blockio_mmap_anon() mappings (process wide). */
  mmapLive: number;
}

export interface NativeBackend {
  readonly name: IoBackendName;
  /** Linux sector size: the floor of every alignment and the unit of a torn write. */
  readonly sectorBytes: number;
  readonly pageBytes: number;
  /** errno value of "the file system refuses O_DIRECT" (a private code of the shim). */
  readonly noDirectIoErrno: number;
  /** Most operations one io_uring batch keeps in flight. */
  readonly uringDepth: number;
  /** 'sse4.2' or 'table'. */
  readonly crc32cImpl: string;

  /** Opens with O_DIRECT|O_CLOEXEC; create: create a missing regular file. Returns the fd. */
  open(path: string, writable: boolean, create: boolean): number;
  close(fd: number): void;
  /** flock(LOCK_EX|LOCK_NB); throws EWOULDBLOCK (EAGAIN) when another open holds it. */
  lock(fd: number): void;
  /** Grows a regular file to sizeBytes (never shrinks). */
  extend(fd: number, sizeBytes: number): void;
  fdKind(fd: number): 'file' | 'block' | 'other';
  sizeBytes(fd: number): number;
  alignBytes(fd: number): number;

  preadSync(fd: number, buf: Uint8Array, offsetBytes: number): void;
  pwriteSync(fd: number, buf: Uint8Array, offsetBytes: number): void;
  fdatasyncSync(fd: number): void;
  pread(fd: number, buf: Uint8Array, offsetBytes: number): Promise<void>;
  pwrite(fd: number, buf: Uint8Array, offsetBytes: number): Promise<void>;
  fdatasync(fd: number): Promise<void>;
  /**
   * pwrite, then fdatasync, as one call (one worker-thread hand-off instead
   * of two: the journal's durable entry write). A failing fdatasync rejects
   * with syscall 'fdatasync'.
   */
  pwriteDatasync(fd: number, buf: Uint8Array, offsetBytes: number): Promise<void>;
  /**
   * Where pread/pwrite run: 'uring' (napi: the event ring, io_uring whose
   * completions wake the event loop directly) or 'pool' (a worker thread).
   */
  asyncEngine(): 'uring' | 'pool';
  /** Runs every op to completion; resolves to one result per op: 0 or -errno. */
  batch(fd: number, engine: NativeBatchEngine, ops: readonly NativeIoOp[]): Promise<Int32Array>;
  uringSupported(): boolean;

  /** Zeroed memory whose address is a multiple of alignBytes. */
  allocAligned(sizeBytes: number, alignBytes: number): ArrayBuffer;
  freeAligned(ab: ArrayBuffer): void;
  /** Zeroed anonymous mapping (page aligned). */
  mmapAnon(sizeBytes: number): ArrayBuffer;
  munmap(ab: ArrayBuffer): void;
  /** Address of a live region from this backend, else undefined. */
  addressOf(ab: ArrayBufferLike): number | undefined;
  memStats(): NativeMemStats;

  /** CRC-32C of data[start, end) (default: all of it), chained from seed (default 0). */
  crc32c(data: Uint8Array, seed?: number, start?: number, end?: number): number;
  errnoName(errno: number): string;
}

export interface NativeErrorShape extends Error {
  code: string;
  errno: number;
  syscall: string;
}

/** An Error carrying an errno from either backend. */
export function isNativeError(e: unknown): e is NativeErrorShape {
  return (
    e instanceof Error &&
    typeof (e as Partial<NativeErrorShape>).code === 'string' &&
    typeof (e as Partial<NativeErrorShape>).errno === 'number'
  );
}

export function nativeError(errno: number, code: string, syscall: string, detail?: string): NativeErrorShape {
  const e = new Error(`${code}: ${syscall} failed${detail ? ` (${detail})` : ''}`) as NativeErrorShape;
  e.code = code;
  e.errno = errno;
  e.syscall = syscall;
  return e;
}

/* ---------------------------------------------------------------------------
 * Loading.
 */

const ADDON_RELATIVE_PATH = join('build', 'Release', 'sixtree.node');

let addonPathCached: string | undefined;

/** build/Release/sixtree.node of the package this file belongs to (src/ or dist/src/). */
export function addonPath(): string {
  if (addonPathCached !== undefined) return addonPathCached;
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; ) {
    const candidate = join(dir, ADDON_RELATIVE_PATH);
    if (existsSync(candidate)) return (addonPathCached = candidate);
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw new Error(`sixtree native addon not found (${ADDON_RELATIVE_PATH} above ${fileURLToPath(import.meta.url)}); run "npm install" or "npx node-gyp rebuild"`);
}

export const nodeRequire = createRequire(import.meta.url);

export function isIoBackendName(v: unknown): v is IoBackendName {
  return typeof v === 'string' && (IO_BACKEND_NAMES as readonly string[]).includes(v);
}

/** The backend used when no option says otherwise: env SIXTREE_IO, else 'napi'. */
export function defaultBackendName(): IoBackendName {
  const env = process.env.SIXTREE_IO;
  if (env === undefined || env === '') return 'napi';
  if (!isIoBackendName(env)) throw invalidArg('SIXTREE_IO', env, IO_BACKEND_NAMES.join(' or '));
  return env;
}
