// SPDX-License-Identifier: GPL-2.0-only
/*
 * BlockDevice: a regular file, loop device or raw block device opened with
 * O_DIRECT through a NativeBackend ('napi' or 'koffi').
 *
 * Owns: the file descriptor and its exclusive lock, the device geometry
 * (sizeBytes, alignBytes), the I/O counters, and the mapping of native
 * failures to SixtreeErrors:
 *   missing path (no createSizeBytes)   ERR_NOT_FOUND_DEVICE
 *   file system refuses O_DIRECT        ERR_NO_DIRECT_IO
 *   lock held by another open           ERR_LOCKED (openWaiting waits while only
 *                                       exited processes hold it: lockTake)
 *   block device in use by the system   ERR_DEVICE_BUSY (claimBlockDevice)
 *   writable open of a read-only device ERR_READ_ONLY (the shim checks BLKROGET;
 *   or file system                      a file system answers EROFS itself)
 *   write/submit-write on readOnly      ERR_READ_ONLY
 *   bad buffer/offset/length/option     ERR_INVALID_ARG (checked here, before native code)
 *   anything the kernel reports         ERR_IO (errno, path, offset, length)
 *   call after close()                  ERR_CLOSED
 *
 * Geometry: alignBytes is the direct-I/O alignment the shim reports (never
 * below 512). sizeBytes is the file or device size rounded down to
 * alignBytes: a file's unaligned tail is not addressable with O_DIRECT.
 * createSizeBytes creates a missing file and grows a shorter one (never
 * shrinks); on a block device it only checks the device is large enough.
 *
 * A writable, locked open of a block device also claims it: a second
 * descriptor opened O_EXCL, held until close(). The kernel refuses that open
 * (EBUSY) while the device is mounted, a swap, RAID or LVM member, or claimed
 * by another program (mkfs tools open devices the same way), so format and
 * open never write over a file system in use, and nothing can mount the
 * device while the store has it. The flock is taken first: another sixtree
 * holding the store still reads as ERR_LOCKED.
 *
 * States: open --close()--> closing (waits for in-flight async I/O; new
 * calls fail with ERR_CLOSED) --> closed (fd released). close() is
 * idempotent. Buffers from allocBuffer() outlive the device; free them with
 * freeBuffer() (or leave them to the garbage collector).
 *
 * submit() engines ('batch' option): 'uring' (io_uring, all ops in flight up
 * to the ring depth), 'serial' (one op after another on one worker thread),
 * 'pool' (one async call per op on libuv's thread pool); 'auto' = 'uring'
 * where the kernel allows it, else 'pool'.
 */
import { closeSync, constants as fsConstants, openSync, readFileSync, statSync } from 'node:fs';
import { invalidArg, SixtreeError, ioError } from '../errors.js';
import { isNativeError, loadBackend, IO_BACKEND_NAMES, isIoBackendName, type IoBackendName, type NativeBackend } from '../native/index.js';
import { Printbuf } from '../util/printbuf.js';
import { allocAlignedBuffer, checkIo, deviceError, freeAlignedBuffer, submitOpsMax } from './aligned.js';
import type { Device, DeviceStats, IoOp } from './device.js';

export const BATCH_MODES = ['auto', 'uring', 'serial', 'pool'] as const;
export type BatchMode = (typeof BATCH_MODES)[number];

export interface BlockDeviceOpenOpts {
  /** Open O_RDONLY; writes fail with ERR_READ_ONLY. */
  readOnly?: boolean;
  /** Create the file if missing and grow it to this size (bytes, a multiple of alignBytes). */
  createSizeBytes?: number;
  /** Native backend; default env SIXTREE_IO, else 'napi'. */
  io?: IoBackendName;
  /** Take the exclusive lock (default true). */
  lock?: boolean;
  /** How submit() runs; default 'auto'. */
  batch?: BatchMode;
}

const OPEN_OPTS = ['readOnly', 'createSizeBytes', 'io', 'lock', 'batch'] as const;

/** How long open() waits for a lock whose holders have all exited (their I/O still in flight), and how often it tries. */
const lockWaitExitedMs = 10_000;
const lockRetryMs = 5;
const lockUnseenTriesMax = 20;

/** Most async calls the 'pool' submit engine keeps in flight per submit(). */
const poolOpsInflightMax = 64;

export class BlockDevice implements Device {
  readonly path: string;
  readonly kind: 'file' | 'block';
  readonly sizeBytes: number;
  readonly alignBytes: number;
  readonly readOnly: boolean;
  readonly stats: DeviceStats = { reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, flushes: 0 };
  /** The engine submit() uses ('auto' resolved). */
  readonly batchMode: Exclude<BatchMode, 'auto'>;
  readonly backend: NativeBackend;

  private fd: number;
  /** The O_EXCL descriptor claiming a block device (claimBlockDevice), or -1. */
  private claimFd: number;
  private closing = false;
  private inflight = 0;
  private drained: (() => void) | undefined;

  private constructor(
    backend: NativeBackend,
    fd: number,
    path: string,
    kind: 'file' | 'block',
    sizeBytes: number,
    alignBytes: number,
    readOnly: boolean,
    batchMode: Exclude<BatchMode, 'auto'>,
    claimFd: number,
  ) {
    this.backend = backend;
    this.fd = fd;
    this.claimFd = claimFd;
    this.path = path;
    this.kind = kind;
    this.sizeBytes = sizeBytes;
    this.alignBytes = alignBytes;
    this.readOnly = readOnly;
    this.batchMode = batchMode;
  }

  /**
   * open(), waiting (without blocking the event loop) while the lock is held
   * only by processes that have exited, up to lockWaitExitedMs: their
   * in-flight I/O finishes, the kernel drops their file, the lock goes. A
   * lock a live process holds is ERR_LOCKED at once.
   */
  static async openWaiting(path: string, opts: BlockDeviceOpenOpts = {}): Promise<BlockDevice> {
    const deadline = Date.now() + lockWaitExitedMs;
    let unseen = 0;
    for (;;) {
      try {
        return BlockDevice.open(path, opts);
      } catch (e) {
        const d = e instanceof SixtreeError && e.code === 'ERR_LOCKED' ? e.details : null;
        const again = d !== null && d.retryable === true && (d.holdersExited === true ? Date.now() < deadline : unseen++ < lockUnseenTriesMax);
        if (!again) {
          if (d?.holdersExited === true) throw new SixtreeError('ERR_LOCKED', `${(e as Error).message}, for more than ${lockWaitExitedMs} ms`, d, { cause: e });
          throw e;
        }
      }
      await sleepMs(lockRetryMs);
    }
  }

  static open(path: string, opts: BlockDeviceOpenOpts = {}): BlockDevice {
    if (typeof path !== 'string' || path.length === 0 || path.includes('\0')) throw invalidArg('path', path, 'a non-empty string without NUL bytes');
    if (opts === null || typeof opts !== 'object') throw invalidArg('opts', opts, 'an object');
    for (const key of Object.keys(opts))
      if (!(OPEN_OPTS as readonly string[]).includes(key)) throw invalidArg(`opts.${key}`, key, `one of ${OPEN_OPTS.join(', ')}`);
    const readOnly = opts.readOnly ?? false;
    const lock = opts.lock ?? true;
    const batch = opts.batch ?? 'auto';
    if (typeof readOnly !== 'boolean') throw invalidArg('opts.readOnly', readOnly, 'a boolean');
    if (typeof lock !== 'boolean') throw invalidArg('opts.lock', lock, 'a boolean');
    if (!(BATCH_MODES as readonly string[]).includes(batch)) throw invalidArg('opts.batch', batch, BATCH_MODES.map((m) => `'${m}'`).join(', '));
    if (opts.io !== undefined && !isIoBackendName(opts.io)) throw invalidArg('opts.io', opts.io, IO_BACKEND_NAMES.map((n) => `'${n}'`).join(' or '));
    const create = opts.createSizeBytes;
    if (create !== undefined) {
      if (typeof create !== 'number' || !Number.isSafeInteger(create) || create <= 0)
        throw invalidArg('opts.createSizeBytes', create, 'a positive integer number of bytes');
      if (readOnly) throw invalidArg('opts.createSizeBytes', create, 'undefined when readOnly is true');
    }

    const backend = loadBackend(opts.io);
    let fd: number;
    try {
      fd = backend.open(path, !readOnly, create !== undefined);
    } catch (e) {
      throw openError(backend, e, path, create !== undefined);
    }

    let claimFd = -1;
    try {
      if (lock) lockTake(backend, fd, path);
      const kind = backend.fdKind(fd);
      if (kind === 'other') throw invalidArg('path', path, 'a regular file or a block device');
      if (kind === 'block' && lock && !readOnly) claimFd = claimBlockDevice(path);
      const alignBytes = backend.alignBytes(fd);
      if (create !== undefined) {
        if (create % alignBytes !== 0) throw invalidArg('opts.createSizeBytes', create, `a multiple of ${alignBytes} (alignBytes of ${path})`);
        if (kind === 'file') backend.extend(fd, create);
      }
      const rawBytes = backend.sizeBytes(fd);
      if (kind === 'block' && create !== undefined && rawBytes < create)
        throw new SixtreeError('ERR_TOO_SMALL', `${path}: block device has ${rawBytes} bytes, createSizeBytes asks for ${create}`, { path });
      const sizeBytes = rawBytes - (rawBytes % alignBytes);
      const batchMode = batch === 'auto' ? (backend.uringSupported() ? 'uring' : 'pool') : batch;
      if (batchMode === 'uring' && !backend.uringSupported())
        throw invalidArg('opts.batch', batch, `'serial', 'pool' or 'auto': io_uring is not available on this system`);
      return new BlockDevice(backend, fd, path, kind, sizeBytes, alignBytes, readOnly, batchMode, claimFd);
    } catch (e) {
      backend.close(fd);
      if (claimFd >= 0) closeSync(claimFd);
      if (isNativeError(e)) throw ioError('open', e.code, path);
      throw e;
    }
  }

  get closed(): boolean {
    return this.closing;
  }

  allocBuffer(sizeBytes: number): Uint8Array {
    return allocAlignedBuffer(this.backend, sizeBytes, this.alignBytes);
  }

  freeBuffer(buf: Uint8Array): void {
    freeAlignedBuffer(this.backend, buf);
  }

  readSync(buf: Uint8Array, offsetBytes: number): void {
    this.checkOpen();
    checkIo(this, this.backend, buf, offsetBytes);
    try {
      this.backend.preadSync(this.fd, buf, offsetBytes);
    } catch (e) {
      throw deviceError(e, 'read', this.path, offsetBytes, buf.length);
    }
    this.stats.reads++;
    this.stats.bytesRead += buf.length;
  }

  writeSync(buf: Uint8Array, offsetBytes: number): void {
    this.checkWritable();
    checkIo(this, this.backend, buf, offsetBytes);
    try {
      this.backend.pwriteSync(this.fd, buf, offsetBytes);
    } catch (e) {
      throw deviceError(e, 'write', this.path, offsetBytes, buf.length);
    }
    this.stats.writes++;
    this.stats.bytesWritten += buf.length;
  }

  async read(buf: Uint8Array, offsetBytes: number): Promise<void> {
    this.checkOpen();
    checkIo(this, this.backend, buf, offsetBytes);
    this.inflight++;
    try {
      await this.backend.pread(this.fd, buf, offsetBytes);
    } catch (e) {
      throw deviceError(e, 'read', this.path, offsetBytes, buf.length);
    } finally {
      this.opDone();
    }
    this.stats.reads++;
    this.stats.bytesRead += buf.length;
  }

  async write(buf: Uint8Array, offsetBytes: number): Promise<void> {
    this.checkWritable();
    checkIo(this, this.backend, buf, offsetBytes);
    this.inflight++;
    try {
      await this.backend.pwrite(this.fd, buf, offsetBytes);
    } catch (e) {
      throw deviceError(e, 'write', this.path, offsetBytes, buf.length);
    } finally {
      this.opDone();
    }
    this.stats.writes++;
    this.stats.bytesWritten += buf.length;
  }

  async submit(ops: readonly IoOp[]): Promise<void> {
    this.checkOpen();
    checkOps(this, ops);
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i]!;
      if (op.op === 'write' && this.readOnly) throw this.readOnlyError();
      checkIo(this, this.backend, op.buf, op.offsetBytes, `ops[${i}].buf`);
    }
    if (ops.length === 0) return;

    this.inflight++;
    let failed: unknown;
    try {
      if (this.batchMode === 'pool') {
        const errors = await this.submitPool(ops);
        for (let i = 0; i < ops.length; i++) {
          const op = ops[i]!;
          if (errors[i] === undefined) this.count(op);
          else failed ??= deviceError(errors[i], op.op, this.path, op.offsetBytes, op.buf.length);
        }
      } else {
        let results: Int32Array;
        try {
          results = await this.backend.batch(this.fd, this.batchMode, ops);
        } catch (e) {
          throw deviceError(e, 'submit', this.path);
        }
        results.forEach((res, i) => {
          const op = ops[i]!;
          if (res === 0) this.count(op);
          else failed ??= ioError(op.op, this.backend.errnoName(res), this.path, op.offsetBytes, op.buf.length);
        });
      }
    } finally {
      this.opDone();
    }
    if (failed !== undefined) throw failed;
  }

  async writeFlush(buf: Uint8Array, offsetBytes: number): Promise<void> {
    this.checkWritable();
    checkIo(this, this.backend, buf, offsetBytes);
    this.inflight++;
    // the write counts once it completed: also when only the fdatasync after it failed
    let written = true;
    try {
      await this.backend.pwriteDatasync(this.fd, buf, offsetBytes);
      this.stats.flushes++;
    } catch (e) {
      written = (e as { syscall?: string }).syscall === 'fdatasync';
      throw written ? deviceError(e, 'flush', this.path) : deviceError(e, 'write', this.path, offsetBytes, buf.length);
    } finally {
      this.opDone();
      if (written) {
        this.stats.writes++;
        this.stats.bytesWritten += buf.length;
      }
    }
  }

  writeFlushSync(buf: Uint8Array, offsetBytes: number): void {
    this.writeSync(buf, offsetBytes);
    this.checkOpen();
    try {
      this.backend.fdatasyncSync(this.fd);
    } catch (e) {
      throw deviceError(e, 'flush', this.path);
    }
    this.stats.flushes++;
  }

  async flush(): Promise<void> {
    this.checkOpen();
    if (this.readOnly) return;
    this.inflight++;
    try {
      await this.backend.fdatasync(this.fd);
    } catch (e) {
      throw deviceError(e, 'flush', this.path);
    } finally {
      this.opDone();
    }
    this.stats.flushes++;
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (this.inflight > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    const fd = this.fd;
    this.fd = -1;
    const claimFd = this.claimFd;
    this.claimFd = -1;
    try {
      this.backend.close(fd);
    } catch (e) {
      throw deviceError(e, 'close', this.path);
    } finally {
      /* after the I/O descriptor: the device stays claimed until nothing of ours can write to it */
      if (claimFd >= 0) closeSync(claimFd);
    }
  }

  toText(): string {
    const out = new Printbuf();
    out.line(`BlockDevice ${this.path}${this.closing ? ' (closed)' : ''}`);
    out.nested((o) => {
      o.field('kind', this.kind === 'block' ? `block${this.claimFd >= 0 ? ' (claimed O_EXCL)' : ''}` : this.kind);
      o.field('io', `${this.backend.name}, async: ${this.backend.asyncEngine()}, submit: ${this.batchMode}`);
      o.field('sizeBytes', this.sizeBytes);
      o.field('alignBytes', this.alignBytes);
      o.field('readOnly', this.readOnly);
      o.field('inflight', this.inflight);
      statsToText(o, this.stats);
    });
    return out.toString();
  }

  /** The 'pool' engine: one async call per op, at most poolOpsInflightMax at a time. */
  private async submitPool(ops: readonly IoOp[]): Promise<unknown[]> {
    const errors: unknown[] = new Array<unknown>(ops.length).fill(undefined);
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < ops.length) {
        const i = next++;
        const op = ops[i]!;
        try {
          if (op.op === 'write') await this.backend.pwrite(this.fd, op.buf, op.offsetBytes);
          else await this.backend.pread(this.fd, op.buf, op.offsetBytes);
        } catch (e) {
          errors[i] = e;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(ops.length, poolOpsInflightMax) }, lane));
    return errors;
  }

  private count(op: IoOp): void {
    if (op.op === 'write') {
      this.stats.writes++;
      this.stats.bytesWritten += op.buf.length;
    } else {
      this.stats.reads++;
      this.stats.bytesRead += op.buf.length;
    }
  }

  private opDone(): void {
    if (--this.inflight === 0 && this.drained) {
      this.drained();
      this.drained = undefined;
    }
  }

  private checkOpen(): void {
    if (this.closing) throw new SixtreeError('ERR_CLOSED', `${this.path}: device is closed`, { path: this.path });
  }

  private checkWritable(): void {
    this.checkOpen();
    if (this.readOnly) throw this.readOnlyError();
  }

  private readOnlyError(): SixtreeError {
    return new SixtreeError('ERR_READ_ONLY', `${this.path} is open read-only; writes are refused`, { path: this.path });
  }
}

/**
 * Take the store lock, or throw ERR_LOCKED. A process that died with
 * io_uring operations in flight keeps the lock past its exit: each operation
 * holds the open file, and with it the flock, until the kernel has finished
 * it. That lock still guards the store (no write of the dead process can land
 * after it is released). When every holder /proc/locks names has exited, or
 * it names none (the lock went between the two looks), the error says so
 * (details.retryable): BlockDevice.openWaiting tries again, asynchronously.
 */
function lockTake(backend: NativeBackend, fd: number, path: string): void {
  try {
    backend.lock(fd);
    return;
  } catch (e) {
    if (!isNativeError(e) || (e.code !== 'EWOULDBLOCK' && e.code !== 'EAGAIN')) throw e;
    const holders = lockHolders(path);
    const exited = holders !== null && holders.length > 0 && holders.every((pid) => !processAlive(pid));
    const unseen = holders !== null && holders.length === 0;
    const why = exited ? `held past their exit by process ${holders!.join(', ')}: I/O of theirs still in flight` : 'exclusive lock held';
    const where = holders !== null && holders.includes(process.pid) ? 'already open in this process' : 'open in another process';
    throw new SixtreeError('ERR_LOCKED', `${path} is ${where} (${why})`, { path, errno: e.code, retryable: exited || unseen, holdersExited: exited }, { cause: e });
  }
}

/**
 * Claim a block device for a writable open: an O_EXCL descriptor (no I/O on
 * it), or ERR_DEVICE_BUSY when the kernel says the device is in use (see the
 * notes at the top).
 */
function claimBlockDevice(path: string): number {
  try {
    return openSync(path, fsConstants.O_RDONLY | fsConstants.O_EXCL);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EBUSY') {
      throw new SixtreeError(
        'ERR_DEVICE_BUSY',
        `${path} is in use by the system (mounted, a swap, RAID or LVM member, or held exclusively by another program); sixtree will not write to it`,
        { path, errno: code },
        { cause: e },
      );
    }
    throw ioError('open', code ?? 'EIO', path);
  }
}

function sleepMs(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Pids holding a FLOCK on path's inode according to /proc/locks, or null when that cannot be read. */
function lockHolders(path: string): number[] | null {
  let text: string;
  let dev: bigint;
  let ino: bigint;
  try {
    const st = statSync(path, { bigint: true });
    dev = st.dev;
    ino = st.ino;
    text = readFileSync('/proc/locks', 'utf8');
  } catch {
    return null;
  }
  /* glibc's dev_t encoding: major in bits 8-19 and 32-43, minor in bits 0-7 and 20-31 */
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  const id = `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${ino}`;
  const pids: number[] = [];
  for (const line of text.split('\n')) {
    /* "1: FLOCK  ADVISORY  WRITE 8368 fe:00:2205043 0 EOF" */
    const f = line.trim().split(/\s+/);
    if (f[1] === 'FLOCK' && f[5] === id) pids.push(Number(f[4]));
  }
  return pids;
}

/** Is pid a process that has not exited (a zombie has)? */
function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return true;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function openError(backend: NativeBackend, e: unknown, path: string, create: boolean): unknown {
  if (!isNativeError(e)) return e;
  if (e.code === 'ENOENT' || e.code === 'ENOTDIR')
    return new SixtreeError(
      'ERR_NOT_FOUND_DEVICE',
      create ? `${path}: cannot create it, a parent directory does not exist` : `${path}: no such file or device (give createSizeBytes to create a file)`,
      { path, errno: e.code },
      { cause: e },
    );
  if (e.errno === backend.noDirectIoErrno)
    return new SixtreeError('ERR_NO_DIRECT_IO', `${path}: the file system refuses O_DIRECT; put the store on a file system or device that supports direct I/O`, { path }, { cause: e });
  if (e.code === 'EISDIR' || e.code === 'ENODEV') return invalidArg('path', path, 'a regular file or a block device');
  if (e.code === 'EROFS')
    return new SixtreeError('ERR_READ_ONLY', `${path} is read-only (a read-only block device, or a file on a read-only file system): open it with readOnly: true`, { path, errno: e.code }, { cause: e });
  const err = ioError('open', e.code, path);
  (err as { cause?: unknown }).cause = e;
  return err;
}

/** Shape checks of a submit() argument shared by every Device. */
export function checkOps(target: { path: string }, ops: unknown): asserts ops is readonly IoOp[] {
  if (!Array.isArray(ops)) throw invalidArg('ops', ops, 'an array of { op, buf, offsetBytes }');
  if (ops.length > submitOpsMax) throw invalidArg('ops.length', ops.length, `at most ${submitOpsMax} operations per submit() on ${target.path}`);
  ops.forEach((op: unknown, i) => {
    if (op === null || typeof op !== 'object') throw invalidArg(`ops[${i}]`, op, 'an object { op, buf, offsetBytes }');
    const kind = (op as IoOp).op;
    if (kind !== 'read' && kind !== 'write') throw invalidArg(`ops[${i}].op`, kind, "'read' or 'write'");
  });
}

export function statsToText(out: Printbuf, stats: DeviceStats): void {
  out.field('reads', `${stats.reads} (${stats.bytesRead} bytes)`);
  out.field('writes', `${stats.writes} (${stats.bytesWritten} bytes)`);
  out.field('flushes', stats.flushes);
}
