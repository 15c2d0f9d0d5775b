// SPDX-License-Identifier: GPL-2.0-only
/*
 * The 'napi' backend: build/Release/sixtree.node loaded with require().
 *
 * A thin pass-through: native/addon.cc guards arguments, runs asynchronous
 * pread/pwrite on the environment's event ring (io_uring; libuv's thread
 * pool where that is not usable) and the other asynchronous calls on the
 * pool, and owns region lifetimes (explicit free detaches the ArrayBuffer;
 * the finalizer frees only unfreed regions).
 * The only state here is a WeakMap from each live region's ArrayBuffer to its
 * address, so addressOf() costs no native call.
 */
import { addonPath, nodeRequire, type NativeBackend, type NativeBatchEngine, type NativeIoOp } from './backend.js';

interface NapiAddon {
  open(path: string, writable: boolean, create: boolean): number;
  close(fd: number): void;
  lock(fd: number): void;
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
  pwriteDatasync(fd: number, buf: Uint8Array, offsetBytes: number): Promise<void>;
  batch(fd: number, uring: boolean, bufs: Uint8Array[], offsets: Float64Array, isWrite: Uint8Array): Promise<Int32Array>;
  uringSupported(): boolean;
  readonly uringDepth: number;
  useEventRing(enabled: boolean): void;
  asyncEngine(): 'uring' | 'pool';
  /** This environment's pread/pwrite calls by where they ran, and ring operations in flight. */
  eventRingStats(): { ring: number; pool: number; inflight: number; submits: number; recordsLive: number };
  allocAligned(sizeBytes: number, alignBytes: number): ArrayBuffer;
  freeAligned(ab: ArrayBuffer): void;
  mmapAnon(sizeBytes: number): ArrayBuffer;
  munmap(ab: ArrayBuffer): void;
  regionAddress(ab: ArrayBuffer): number | undefined;
  memStats(): { alignedLive: number; mmapLive: number };
  crc32c(data: Uint8Array, seed?: number, start?: number, end?: number): number;
  readonly crc32cImpl: string;
  gather(dst: Uint8Array, dstOff: number, src: Uint8Array, spans: Uint32Array, nr: number): number;
  errnoName(errno: number): string;
  readonly noDirectIoErrno: number;
  readonly sectorBytes: number;
  readonly pageBytes: number;
}

let addonCached: NapiAddon | undefined;

/** The raw addon (tests call it directly to check its own argument guards). */
export function napiAddon(): NapiAddon {
  return (addonCached ??= nodeRequire(addonPath()) as NapiAddon);
}

export function createNapiBackend(): NativeBackend {
  const a = napiAddon();
  const addresses = new WeakMap<ArrayBufferLike, number>();

  const track = (ab: ArrayBuffer): ArrayBuffer => {
    addresses.set(ab, a.regionAddress(ab)!);
    return ab;
  };

  return {
    name: 'napi',
    sectorBytes: a.sectorBytes,
    pageBytes: a.pageBytes,
    noDirectIoErrno: a.noDirectIoErrno,
    uringDepth: a.uringDepth,
    crc32cImpl: a.crc32cImpl,

    open: (path, writable, create) => a.open(path, writable, create),
    close: (fd) => a.close(fd),
    lock: (fd) => a.lock(fd),
    extend: (fd, sizeBytes) => a.extend(fd, sizeBytes),
    fdKind: (fd) => a.fdKind(fd),
    sizeBytes: (fd) => a.sizeBytes(fd),
    alignBytes: (fd) => a.alignBytes(fd),

    preadSync: (fd, buf, off) => a.preadSync(fd, buf, off),
    pwriteSync: (fd, buf, off) => a.pwriteSync(fd, buf, off),
    fdatasyncSync: (fd) => a.fdatasyncSync(fd),
    pread: (fd, buf, off) => a.pread(fd, buf, off),
    pwrite: (fd, buf, off) => a.pwrite(fd, buf, off),
    fdatasync: (fd) => a.fdatasync(fd),
    pwriteDatasync: (fd, buf, off) => a.pwriteDatasync(fd, buf, off),
    batch(fd: number, engine: NativeBatchEngine, ops: readonly NativeIoOp[]): Promise<Int32Array> {
      const nr = ops.length;
      const bufs = new Array<Uint8Array>(nr);
      const offsets = new Float64Array(nr);
      const isWrite = new Uint8Array(nr);
      for (let i = 0; i < nr; i++) {
        const op = ops[i]!;
        bufs[i] = op.buf;
        offsets[i] = op.offsetBytes;
        isWrite[i] = op.op === 'write' ? 1 : 0;
      }
      return a.batch(fd, engine === 'uring', bufs, offsets, isWrite);
    },
    uringSupported: () => a.uringSupported(),
    asyncEngine: () => a.asyncEngine(),

    allocAligned: (sizeBytes, alignBytes) => track(a.allocAligned(sizeBytes, alignBytes)),
    freeAligned(ab) {
      a.freeAligned(ab);
      addresses.delete(ab);
    },
    mmapAnon: (sizeBytes) => track(a.mmapAnon(sizeBytes)),
    munmap(ab) {
      a.munmap(ab);
      addresses.delete(ab);
    },
    addressOf: (ab) => addresses.get(ab),
    memStats: () => a.memStats(),

    crc32c: (data, seed, start, end) => a.crc32c(data, seed, start, end),
    errnoName: (errno) => a.errnoName(errno),
  };
}
