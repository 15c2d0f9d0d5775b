// SPDX-License-Identifier: GPL-2.0-only
/*
 * The 'koffi' backend: no N-API code of ours on the call path.
 *
 *  - libc directly where that is enough: pread, pwrite (sync, with the
 *    short-transfer/EINTR loop here), fdatasync (sync), close, flock.
 *  - The blockio_* C functions of build/Release/sixtree.node (loaded with
 *    dlopen by koffi, not as an addon) for the rest: open with O_DIRECT
 *    detection, sizes and alignment (ioctls, statx), mmap, crc32c, io_uring
 *    batches, and every asynchronous call (koffi's .async runs them on a
 *    worker thread; blockio returns -errno, since errno does not travel back
 *    from a worker).
 *
 * Memory: koffi.view() ArrayBuffers cannot be detached from JS, so a freed
 * view could still be touched. Every region (aligned buffers included; page
 * alignment satisfies any alignBytes up to the page size) is therefore an
 * anonymous mapping with this life cycle:
 *   live --explicit free--> retired (pages dropped at once, range PROT_NONE:
 *   a stray access faults instead of corrupting reused memory)
 *   live|retired --ArrayBuffer collected--> unmapped (FinalizationRegistry).
 * blockio_munmap runs exactly once per region, from the registry callback.
 * A region with asynchronous I/O in flight cannot be freed (EBUSY); the
 * pending call's closure keeps its view reachable.
 */
import type * as KoffiModule from 'koffi';
import {
  addonPath,
  nativeError,
  nodeRequire,
  type NativeBackend,
  type NativeBatchEngine,
  type NativeErrorShape,
  type NativeIoOp,
} from './backend.js';

type Koffi = typeof KoffiModule;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Fn = ((...args: any[]) => any) & { async: (...args: any[]) => void };

interface Region {
  ptr: unknown;
  address: number;
  mapBytes: number;
  kind: 'aligned' | 'mmap';
  inflight: number;
}

export function createKoffiBackend(): NativeBackend {
  const koffi = nodeRequire('koffi') as Koffi;
  const lib = koffi.load(addonPath());
  const libc = koffi.load('libc.so.6');
  const fn = (l: ReturnType<Koffi['load']>, decl: string): Fn => l.func(decl) as Fn;

  const c = {
    pread: fn(libc, 'int64_t pread(int fd, void *buf, uint64_t count, int64_t offset)'),
    pwrite: fn(libc, 'int64_t pwrite(int fd, const void *buf, uint64_t count, int64_t offset)'),
    fdatasync: fn(libc, 'int fdatasync(int fd)'),
    close: fn(libc, 'int close(int fd)'),
    flock: fn(libc, 'int flock(int fd, int op)'),
  };
  const b = {
    errnoNoDirectIo: fn(lib, 'int blockio_errno_no_direct_io(void)'),
    errnoShortRead: fn(lib, 'int blockio_errno_short_read(void)'),
    sectorBytes: fn(lib, 'int blockio_sector_bytes(void)'),
    pageBytes: fn(lib, 'int blockio_page_bytes(void)'),
    lockFlags: fn(lib, 'int blockio_lock_flags(void)'),
    errnoName: fn(lib, 'const char *blockio_errno_name(int err)'),
    open: fn(lib, 'int blockio_open(const char *path, int writable, int create)'),
    extend: fn(lib, 'int blockio_extend(int fd, int64_t size_bytes)'),
    fdKind: fn(lib, 'const char *blockio_fd_kind(int fd)'),
    sizeBytes: fn(lib, 'int64_t blockio_size_bytes(int fd)'),
    alignBytes: fn(lib, 'int64_t blockio_align_bytes(int fd)'),
    preadFull: fn(lib, 'int64_t blockio_pread_full(int fd, void *buf, uint64_t len, int64_t offset)'),
    pwriteFull: fn(lib, 'int64_t blockio_pwrite_full(int fd, const void *buf, uint64_t len, int64_t offset)'),
    fdatasync: fn(lib, 'int blockio_fdatasync(int fd)'),
    pwriteDatasync: fn(lib, 'int64_t blockio_pwrite_datasync(int fd, const void *buf, uint64_t len, int64_t offset)'),
    stepFlushBit: fn(lib, 'int blockio_step_flush_bit(void)'),
    batchUring: fn(
      lib,
      'int blockio_batch_uring(int fd, uint32_t nr, const uint8_t *is_write, const uint64_t *addrs, const uint32_t *lens, const int64_t *offsets, int32_t *results)',
    ),
    batchSerial: fn(
      lib,
      'int blockio_batch_serial(int fd, uint32_t nr, const uint8_t *is_write, const uint64_t *addrs, const uint32_t *lens, const int64_t *offsets, int32_t *results)',
    ),
    uringSupported: fn(lib, 'int blockio_uring_supported(void)'),
    uringDepth: fn(lib, 'int blockio_uring_depth(void)'),
    mmapAnon: fn(lib, 'void *blockio_mmap_anon(uint64_t size_bytes)'),
    mmapRetire: fn(lib, 'int blockio_mmap_retire(void *p, uint64_t size_bytes)'),
    munmap: fn(lib, 'int blockio_munmap(void *p, uint64_t size_bytes)'),
    alignedLive: fn(lib, 'int64_t blockio_aligned_live(void)'),
    mmapLive: fn(lib, 'int64_t blockio_mmap_live(void)'),
    crc32c: fn(lib, 'uint32_t blockio_crc32c(uint32_t seed, const void *buf, uint64_t len)'),
    crc32cImpl: fn(lib, 'const char *blockio_crc32c_impl(void)'),
  };

  const EINTR = koffi.os.errno.EINTR!;
  const EINVAL = koffi.os.errno.EINVAL!;
  const EBUSY = koffi.os.errno.EBUSY!;
  const sectorBytes = b.sectorBytes() as number;
  const pageBytes = b.pageBytes() as number;
  const shortReadErrno = b.errnoShortRead() as number;
  const lockFlags = b.lockFlags() as number;
  const stepFlushBit = b.stepFlushBit() as number;

  const errnoName = (errno: number): string => b.errnoName(errno) as string;
  const fail = (errno: number, syscall: string, detail?: string): NativeErrorShape =>
    nativeError(Math.abs(errno), errnoName(errno), syscall, detail);
  const argError = (msg: string): NativeErrorShape => {
    const e = nativeError(EINVAL, errnoName(EINVAL), 'argument');
    e.message = `EINVAL: ${msg}`;
    return e;
  };

  const regions = new WeakMap<ArrayBufferLike, Region>();
  const unmapper = new FinalizationRegistry<{ ptr: unknown; mapBytes: number }>((held) => {
    b.munmap(held.ptr, held.mapBytes);
  });

  function checkFd(fd: unknown): number {
    if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff) throw argError('fd must be an integer >= 0');
    return fd;
  }

  function checkOffset(off: unknown): number {
    if (typeof off !== 'number' || !Number.isSafeInteger(off) || off < 0 || off % sectorBytes)
      throw argError(`offsetBytes must be an integer >= 0 and a multiple of ${sectorBytes}`);
    return off;
  }

  /** The buffer's region, checked: a live view of ours, sector-aligned address and length. */
  function checkBuf(buf: unknown, name: string): Region {
    if (!(buf instanceof Uint8Array)) throw argError(`${name} must be a Uint8Array`);
    const r = regions.get(buf.buffer);
    if (r === undefined) throw argError(`${name} must come from allocAligned() or mmapAnon() and not be freed`);
    if (buf.length === 0 || buf.length % sectorBytes || (r.address + buf.byteOffset) % sectorBytes)
      throw argError(`${name} address and length must be multiples of ${sectorBytes}`);
    return r;
  }

  function rwSync(write: boolean, fd: number, buf: Uint8Array, off: number): void {
    checkFd(fd);
    checkBuf(buf, 'buf');
    checkOffset(off);
    const call = write ? c.pwrite : c.pread;
    const len = buf.length;
    let done = 0;
    while (done < len) {
      const n = call(fd, done === 0 ? buf : buf.subarray(done), len - done, off + done) as number;
      if (n < 0) {
        const errno = koffi.errno();
        if (errno === EINTR) continue;
        throw fail(errno, write ? 'pwrite' : 'pread');
      }
      done += n;
      // Same rule as blockio_pread_full: an early end (or one off the sector grid) is end of device.
      if (n === 0 || (done < len && done % sectorBytes)) throw fail(write ? koffi.os.errno.EIO! : shortReadErrno, write ? 'pwrite' : 'pread');
    }
  }

  /*
   * koffi refuses more than max_async_calls (256) running or queued calls and
   * its limit cannot be raised once a library is loaded: calls beyond
   * asyncCallsMax wait in this queue instead.
   */
  const asyncCallsMax = 128;
  let asyncCallsRunning = 0;
  const asyncQueue: (() => void)[] = [];

  /**
   * Runs f.async(...args) with regions pinned (from now until it completes,
   * queued time included); resolves with its non-negative result. koffi holds
   * no reference to buffer arguments while the worker runs: the callback
   * below does (args, keepAlive), so no view is collected mid-call.
   */
  function callAsync(f: Fn, syscall: string, pinned: Region[], args: unknown[], keepAlive?: unknown): Promise<number> {
    for (const r of pinned) r.inflight++;
    return new Promise((resolve, reject) => {
      const start = (): void => {
        asyncCallsRunning++;
        try {
          f.async(...args, (err: unknown, res: number) => {
            void args;
            void keepAlive;
            finish();
            if (err) reject(err);
            else if (res < 0) reject(fail(res, syscall));
            else resolve(res);
          });
        } catch (e) {
          finish();
          reject(e);
        }
      };
      const finish = (): void => {
        for (const r of pinned) r.inflight--;
        asyncCallsRunning--;
        asyncQueue.shift()?.();
      };
      if (asyncCallsRunning < asyncCallsMax) start();
      else asyncQueue.push(start);
    });
  }

  function wrap(ptr: unknown, sizeBytes: number, mapBytes: number, kind: Region['kind']): ArrayBuffer {
    const ab = koffi.view(ptr, sizeBytes);
    regions.set(ab, { ptr, address: Number(koffi.address(ptr)), mapBytes, kind, inflight: 0 });
    unmapper.register(ab, { ptr, mapBytes });
    return ab;
  }

  function mapRegion(sizeBytes: unknown, kind: Region['kind']): ArrayBuffer {
    if (typeof sizeBytes !== 'number' || !Number.isSafeInteger(sizeBytes) || sizeBytes < 1) throw argError('sizeBytes must be an integer >= 1');
    const mapBytes = Math.ceil(sizeBytes / pageBytes) * pageBytes;
    const ptr = b.mmapAnon(mapBytes);
    if (ptr === null) throw fail(koffi.errno(), 'mmap');
    return wrap(ptr, sizeBytes, mapBytes, kind);
  }

  function retire(ab: unknown, kind: Region['kind']): void {
    if (!(ab instanceof ArrayBuffer)) throw argError('buffer must be an ArrayBuffer');
    const r = regions.get(ab);
    if (r === undefined || r.kind !== kind)
      throw argError(kind === 'aligned' ? 'buffer was not allocated by allocAligned() or is already freed' : 'buffer was not mapped by mmapAnon() or is already freed');
    if (r.inflight) throw fail(EBUSY, 'free', 'asynchronous I/O in flight on this buffer');
    const rc = b.mmapRetire(r.ptr, r.mapBytes) as number;
    if (rc < 0) throw fail(rc, 'mmap');
    regions.delete(ab);
  }

  return {
    name: 'koffi',
    sectorBytes,
    pageBytes,
    noDirectIoErrno: b.errnoNoDirectIo() as number,
    uringDepth: b.uringDepth() as number,
    crc32cImpl: b.crc32cImpl() as string,

    open(path, writable, create) {
      if (typeof path !== 'string' || path === '' || path.includes('\0')) throw argError('path must be a non-empty string without NUL bytes');
      const fd = b.open(path, writable ? 1 : 0, create ? 1 : 0) as number;
      if (fd < 0) throw fail(fd, 'open', path);
      return fd;
    },
    close(fd) {
      // Linux releases the descriptor even when close reports EINTR: never retry.
      if ((c.close(checkFd(fd)) as number) < 0) {
        const errno = koffi.errno();
        if (errno !== EINTR) throw fail(errno, 'close');
      }
    },
    lock(fd) {
      checkFd(fd);
      while ((c.flock(fd, lockFlags) as number) < 0) {
        const errno = koffi.errno();
        if (errno !== EINTR) throw fail(errno, 'flock');
      }
    },
    extend(fd, sizeBytes) {
      if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) throw argError('sizeBytes must be an integer >= 0');
      const r = b.extend(checkFd(fd), sizeBytes) as number;
      if (r < 0) throw fail(r, 'fallocate');
    },
    fdKind(fd) {
      const k = b.fdKind(checkFd(fd)) as 'file' | 'block' | 'other' | null;
      if (k === null) throw fail(koffi.os.errno.EBADF!, 'fstat');
      return k;
    },
    sizeBytes(fd) {
      const r = b.sizeBytes(checkFd(fd)) as number;
      if (r < 0) throw fail(r, 'size');
      return r;
    },
    alignBytes(fd) {
      const r = b.alignBytes(checkFd(fd)) as number;
      if (r < 0) throw fail(r, 'statx');
      return r;
    },

    preadSync: (fd, buf, off) => rwSync(false, fd, buf, off),
    pwriteSync: (fd, buf, off) => rwSync(true, fd, buf, off),
    fdatasyncSync(fd) {
      checkFd(fd);
      while ((c.fdatasync(fd) as number) < 0) {
        const errno = koffi.errno();
        if (errno !== EINTR) throw fail(errno, 'fdatasync');
      }
    },
    async pread(fd, buf, off) {
      const r = checkBuf(buf, 'buf');
      await callAsync(b.preadFull, 'pread', [r], [checkFd(fd), buf, buf.length, checkOffset(off)]);
    },
    async pwrite(fd, buf, off) {
      const r = checkBuf(buf, 'buf');
      await callAsync(b.pwriteFull, 'pwrite', [r], [checkFd(fd), buf, buf.length, checkOffset(off)]);
    },
    async fdatasync(fd) {
      await callAsync(b.fdatasync, 'fdatasync', [], [checkFd(fd)]);
    },
    async pwriteDatasync(fd, buf, off) {
      const r = checkBuf(buf, 'buf');
      // the C call marks a failing fdatasync with stepFlushBit in the errno
      await callAsync(b.pwriteDatasync, 'pwrite', [r], [checkFd(fd), buf, buf.length, checkOffset(off)]).catch((e: NativeErrorShape) => {
        if (!(e.errno & stepFlushBit)) throw e;
        throw fail(e.errno & ~stepFlushBit, 'fdatasync');
      });
    },
    async batch(fd: number, engine: NativeBatchEngine, ops: readonly NativeIoOp[]): Promise<Int32Array> {
      checkFd(fd);
      const nr = ops.length;
      // Fresh ArrayBuffers: always off the V8 heap, so their addresses hold while the worker runs.
      const isWrite = new Uint8Array(new ArrayBuffer(nr));
      const addrs = new BigUint64Array(new ArrayBuffer(nr * 8));
      const lens = new Uint32Array(new ArrayBuffer(nr * 4));
      const offsets = new BigInt64Array(new ArrayBuffer(nr * 8));
      const results = new Int32Array(new ArrayBuffer(nr * 4));
      const pinned: Region[] = [];
      for (let i = 0; i < nr; i++) {
        const op = ops[i]!;
        const r = checkBuf(op.buf, `ops[${i}].buf`);
        isWrite[i] = op.op === 'write' ? 1 : 0;
        addrs[i] = BigInt(r.address + op.buf.byteOffset);
        lens[i] = op.buf.length;
        offsets[i] = BigInt(checkOffset(op.offsetBytes));
        pinned.push(r);
      }
      const f = engine === 'uring' ? b.batchUring : b.batchSerial;
      await callAsync(f, engine === 'uring' ? 'io_uring_enter' : 'batch', pinned, [fd, nr, isWrite, addrs, lens, offsets, results], ops);
      return results;
    },
    uringSupported: () => (b.uringSupported() as number) !== 0,
    asyncEngine: () => 'pool',

    allocAligned(sizeBytes, alignBytes) {
      if (!Number.isSafeInteger(alignBytes) || alignBytes < 8 || alignBytes & (alignBytes - 1) || alignBytes > pageBytes)
        throw argError(`alignBytes must be a power of two in [8, ${pageBytes}]`);
      return mapRegion(sizeBytes, 'aligned');
    },
    freeAligned: (ab) => retire(ab, 'aligned'),
    mmapAnon: (sizeBytes) => mapRegion(sizeBytes, 'mmap'),
    munmap: (ab) => retire(ab, 'mmap'),
    addressOf: (ab) => regions.get(ab)?.address,
    memStats: () => ({ alignedLive: b.alignedLive() as number, mmapLive: b.mmapLive() as number }),

    crc32c(data, seed = 0, start = 0, end = data?.length) {
      if (!(data instanceof Uint8Array)) throw argError('data must be a Uint8Array');
      if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw argError('seed must be an integer in [0, 2^32-1]');
      if (!Number.isInteger(end) || end < 0 || end > data.length) throw argError(`end must be an integer in [0, ${data.length}], got ${end}`);
      if (!Number.isInteger(start) || start < 0 || start > end) throw argError(`start must be an integer in [0, ${end}], got ${start}`);
      return b.crc32c(seed, start === 0 && end === data.length ? data : data.subarray(start, end), end - start) as number;
    },
    errnoName,
  };
}
