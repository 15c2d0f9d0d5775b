// SPDX-License-Identifier: GPL-2.0-only
/*
 * MemDevice: a Device over an image held in memory.
 *
 * Used to replay crash images (FaultDevice#crashImage()) fast and to run the
 * layers above src/io without a file. It follows every BlockDevice rule, so
 * code that works here works on a real device: buffers still come from the
 * native backend's aligned memory, offsets and lengths are checked against
 * alignBytes and sizeBytes, readOnly refuses writes, closed refuses all.
 *
 * Semantics: reads and writes copy between the caller's buffer and the image
 * at once (the async forms resolve on a later microtask); submit() applies
 * its ops in array order; flush() only counts. image() returns a copy; the
 * device never aliases the caller's image either.
 */
import { invalidArg, SixtreeError } from '../errors.js';
import { loadBackend, type IoBackendName, type NativeBackend } from '../native/index.js';
import { Printbuf } from '../util/printbuf.js';
import { allocAlignedBuffer, checkIo, freeAlignedBuffer } from './aligned.js';
import { checkOps, statsToText } from './block-device.js';
import type { Device, DeviceStats, IoOp } from './device.js';

export interface MemDeviceOpts {
  /** Alignment of buffers, offsets and lengths; default the backend's sector size (512). */
  alignBytes?: number;
  /** Backend whose aligned memory backs the buffers; default as BlockDevice. */
  io?: IoBackendName;
  readOnly?: boolean;
  /** Name used in messages; default memory:<n>. */
  path?: string;
}

let memDevicesNr = 0;

export class MemDevice implements Device {
  readonly path: string;
  readonly kind = 'memory' as const;
  readonly sizeBytes: number;
  readonly alignBytes: number;
  readonly readOnly: boolean;
  readonly stats: DeviceStats = { reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, flushes: 0 };
  readonly backend: NativeBackend;

  private img: Uint8Array;
  private closed = false;

  private constructor(img: Uint8Array, opts: MemDeviceOpts) {
    if (opts === null || typeof opts !== 'object') throw invalidArg('opts', opts, 'an object');
    this.backend = loadBackend(opts.io);
    const align = opts.alignBytes ?? this.backend.sectorBytes;
    if (!Number.isSafeInteger(align) || align < this.backend.sectorBytes || align > this.backend.pageBytes || (align & (align - 1)) !== 0)
      throw invalidArg('opts.alignBytes', align, `a power of two in [${this.backend.sectorBytes}, ${this.backend.pageBytes}]`);
    if (img.length % align !== 0) throw invalidArg('image length', img.length, `a multiple of alignBytes ${align}`);
    if (opts.readOnly !== undefined && typeof opts.readOnly !== 'boolean') throw invalidArg('opts.readOnly', opts.readOnly, 'a boolean');
    this.img = img;
    this.sizeBytes = img.length;
    this.alignBytes = align;
    this.readOnly = opts.readOnly ?? false;
    this.path = opts.path ?? `memory:${++memDevicesNr}`;
  }

  /** A zeroed device of sizeBytes. */
  static create(sizeBytes: number, opts: MemDeviceOpts = {}): MemDevice {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) throw invalidArg('sizeBytes', sizeBytes, 'a non-negative integer');
    return new MemDevice(new Uint8Array(sizeBytes), opts);
  }

  /** A device whose contents are a copy of img. */
  static fromImage(img: Uint8Array, opts: MemDeviceOpts = {}): MemDevice {
    if (!(img instanceof Uint8Array)) throw invalidArg('img', img, 'a Uint8Array');
    // new Uint8Array(img), not img.slice(): on a Buffer slice() is a view
    return new MemDevice(new Uint8Array(img), opts);
  }

  /** A copy of the current contents. */
  image(): Uint8Array {
    return this.img.slice();
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
    this.copyOut(buf, offsetBytes);
  }

  writeSync(buf: Uint8Array, offsetBytes: number): void {
    this.checkWritable();
    checkIo(this, this.backend, buf, offsetBytes);
    this.copyIn(buf, offsetBytes);
  }

  async read(buf: Uint8Array, offsetBytes: number): Promise<void> {
    this.readSync(buf, offsetBytes);
    await Promise.resolve();
  }

  async write(buf: Uint8Array, offsetBytes: number): Promise<void> {
    this.writeSync(buf, offsetBytes);
    await Promise.resolve();
  }

  async submit(ops: readonly IoOp[]): Promise<void> {
    this.checkOpen();
    checkOps(this, ops);
    ops.forEach((op, i) => {
      if (op.op === 'write' && this.readOnly) throw this.readOnlyError();
      checkIo(this, this.backend, op.buf, op.offsetBytes, `ops[${i}].buf`);
    });
    for (const op of ops) {
      if (op.op === 'write') this.copyIn(op.buf, op.offsetBytes);
      else this.copyOut(op.buf, op.offsetBytes);
    }
    await Promise.resolve();
  }

  async flush(): Promise<void> {
    this.checkOpen();
    if (!this.readOnly) this.stats.flushes++;
    await Promise.resolve();
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  toText(): string {
    const out = new Printbuf();
    out.line(`MemDevice ${this.path}${this.closed ? ' (closed)' : ''}`);
    out.nested((o) => {
      o.field('sizeBytes', this.sizeBytes);
      o.field('alignBytes', this.alignBytes);
      o.field('readOnly', this.readOnly);
      statsToText(o, this.stats);
    });
    return out.toString();
  }

  private copyOut(buf: Uint8Array, offsetBytes: number): void {
    buf.set(this.img.subarray(offsetBytes, offsetBytes + buf.length));
    this.stats.reads++;
    this.stats.bytesRead += buf.length;
  }

  private copyIn(buf: Uint8Array, offsetBytes: number): void {
    this.img.set(buf, offsetBytes);
    this.stats.writes++;
    this.stats.bytesWritten += buf.length;
  }

  private checkOpen(): void {
    if (this.closed) throw new SixtreeError('ERR_CLOSED', `${this.path}: device is closed`, { path: this.path });
  }

  private checkWritable(): void {
    this.checkOpen();
    if (this.readOnly) throw this.readOnlyError();
  }

  private readOnlyError(): SixtreeError {
    return new SixtreeError('ERR_READ_ONLY', `${this.path} is open read-only; writes are refused`, { path: this.path });
  }
}
