// SPDX-License-Identifier: GPL-2.0-only
/*
 * FaultDevice: wraps another Device to build crash images and inject EIO.
 *
 * State:
 *  - durable: a copy of the inner device's contents as of the last successful
 *    flush(). Read once from the inner device by wrap(), then maintained
 *    incrementally: a successful flush applies the writes it covers, in order.
 *  - pending: every write that completed on the inner device since the last
 *    successful flush, in completion order (offset + a copy of the data).
 *    A submit() records its writes in array order once the inner submit
 *    resolves; if the inner submit rejects, none of its writes are recorded.
 *  - A flush covers the writes pending when it was called; writes that
 *    complete while it runs stay pending. A failed flush leaves all pending.
 *
 * crashImage({ include, torn }) = durable + the chosen pending writes applied
 * in pending order; include is a list of pending indexes or a predicate
 * (default: none, i.e. nothing unflushed survived). torn = { index, keepBytes }
 * applies pending write `index` cut after keepBytes (a multiple of the
 * 512-byte sector, 0..length): the prefix survives, the rest of that range
 * keeps its older contents. torn wins over include for the same index.
 *
 * Injection (checked after argument validation, before the inner device is
 * touched; an injected failure does not reach the inner device and is not
 * recorded): rules.failRead(offsetBytes, lengthBytes), rules.failWrite(...),
 * rules.failFlush(), and failNext(kind, count) for the next count operations
 * of a kind. Each raises the same ERR_IO SixtreeError a real device gives
 * (errno EIO, path, offset, length). In submit(), each op is checked on its
 * own; the others still run, then submit() rejects with the first failure.
 */
import { invalidArg, ioError, SixtreeError } from '../errors.js';
import { loadBackend } from '../native/index.js';
import { Printbuf } from '../util/printbuf.js';
import { checkIoRange } from './aligned.js';
import { checkOps, statsToText } from './block-device.js';
import { DeviceWrapper, type Device, type IoOp } from './device.js';

export interface FaultRules {
  failRead?: (offsetBytes: number, lengthBytes: number) => boolean;
  failWrite?: (offsetBytes: number, lengthBytes: number) => boolean;
  failFlush?: () => boolean;
}

export type FaultKind = 'read' | 'write' | 'flush';

export interface PendingWrite {
  readonly offsetBytes: number;
  readonly data: Uint8Array;
}

export interface CrashImageOpts {
  include?: readonly number[] | ((index: number) => boolean);
  torn?: { index: number; keepBytes: number };
}

/** Largest inner-device chunk wrap() reads at once. */
const wrapReadBytesMax = 1 << 20;

export class FaultDevice extends DeviceWrapper implements Device {
  rules: FaultRules;
  /** Failures injected so far, per kind. */
  readonly injected: Record<FaultKind, number> = { read: 0, write: 0, flush: 0 };

  private durable: Uint8Array;
  private pending: PendingWrite[] = [];
  private failNextNr: Record<FaultKind, number> = { read: 0, write: 0, flush: 0 };

  private constructor(inner: Device, durable: Uint8Array, rules: FaultRules) {
    super(inner);
    this.durable = durable;
    this.rules = rules;
  }

  /** Wraps inner, reading its whole contents as the initial durable image. */
  static async wrap(inner: Device, rules: FaultRules = {}): Promise<FaultDevice> {
    if (inner === null || typeof inner !== 'object' || typeof inner.read !== 'function') throw invalidArg('inner', inner, 'a Device');
    const durable = new Uint8Array(inner.sizeBytes);
    if (inner.sizeBytes > 0) {
      const chunkBytes = Math.min(inner.sizeBytes, wrapReadBytesMax - (wrapReadBytesMax % inner.alignBytes));
      const buf = inner.allocBuffer(chunkBytes);
      try {
        for (let off = 0; off < inner.sizeBytes; off += chunkBytes) {
          const len = Math.min(chunkBytes, inner.sizeBytes - off);
          const view = len === chunkBytes ? buf : buf.subarray(0, len);
          await inner.read(view, off);
          durable.set(view, off);
        }
      } finally {
        inner.freeBuffer(buf);
      }
    }
    return new FaultDevice(inner, durable, rules);
  }

  /** Writes completed since the last successful flush. */
  get pendingWrites(): number {
    return this.pending.length;
  }

  /** Offsets and lengths of the pending writes, in order. */
  pendingList(): { offsetBytes: number; lengthBytes: number }[] {
    return this.pending.map((w) => ({ offsetBytes: w.offsetBytes, lengthBytes: w.data.length }));
  }

  /** Fail the next count operations of kind (in addition to the rules). */
  failNext(kind: FaultKind, count = 1): void {
    if (kind !== 'read' && kind !== 'write' && kind !== 'flush') throw invalidArg('kind', kind, "'read', 'write' or 'flush'");
    if (!Number.isSafeInteger(count) || count < 0) throw invalidArg('count', count, 'a non-negative integer');
    this.failNextNr[kind] = count;
  }

  /** Drop all rules and failNext counts. */
  clearFaults(): void {
    this.rules = {};
    this.failNextNr = { read: 0, write: 0, flush: 0 };
  }

  /** A copy of the contents as of the last successful flush. */
  durableImage(): Uint8Array {
    return this.durable.slice();
  }

  crashImage(opts: CrashImageOpts = {}): Uint8Array {
    if (opts === null || typeof opts !== 'object') throw invalidArg('opts', opts, 'an object');
    const n = this.pending.length;
    const { include, torn } = opts;
    let chosen: (i: number) => boolean;
    if (include === undefined) chosen = () => false;
    else if (typeof include === 'function') chosen = include;
    else if (Array.isArray(include)) {
      for (const i of include) if (!Number.isSafeInteger(i) || i < 0 || i >= n) throw invalidArg('include[]', i, `a pending write index in [0, ${n})`);
      const set = new Set(include);
      chosen = (i) => set.has(i);
    } else throw invalidArg('include', include, 'an array of pending write indexes or a predicate');

    if (torn !== undefined) {
      if (torn === null || typeof torn !== 'object') throw invalidArg('torn', torn, 'an object { index, keepBytes }');
      if (!Number.isSafeInteger(torn.index) || torn.index < 0 || torn.index >= n) throw invalidArg('torn.index', torn.index, `a pending write index in [0, ${n})`);
      const sector = loadBackend().sectorBytes;
      const len = this.pending[torn.index]!.data.length;
      if (!Number.isSafeInteger(torn.keepBytes) || torn.keepBytes < 0 || torn.keepBytes > len || torn.keepBytes % sector !== 0)
        throw invalidArg('torn.keepBytes', torn.keepBytes, `a multiple of ${sector} in [0, ${len}]`);
    }

    const img = this.durable.slice();
    this.pending.forEach((w, i) => {
      if (torn !== undefined && i === torn.index) img.set(w.data.subarray(0, torn.keepBytes), w.offsetBytes);
      else if (chosen(i)) img.set(w.data, w.offsetBytes);
    });
    return img;
  }

  readSync(buf: Uint8Array, offsetBytes: number): void {
    checkIoRange(this, buf, offsetBytes);
    this.inject('read', offsetBytes, buf.length);
    this.inner.readSync(buf, offsetBytes);
  }

  writeSync(buf: Uint8Array, offsetBytes: number): void {
    this.checkWrite(buf, offsetBytes);
    this.inject('write', offsetBytes, buf.length);
    this.inner.writeSync(buf, offsetBytes);
    this.record(buf, offsetBytes);
  }

  async read(buf: Uint8Array, offsetBytes: number): Promise<void> {
    checkIoRange(this, buf, offsetBytes);
    this.inject('read', offsetBytes, buf.length);
    await this.inner.read(buf, offsetBytes);
  }

  async write(buf: Uint8Array, offsetBytes: number): Promise<void> {
    this.checkWrite(buf, offsetBytes);
    this.inject('write', offsetBytes, buf.length);
    await this.inner.write(buf, offsetBytes);
    this.record(buf, offsetBytes);
  }

  async submit(ops: readonly IoOp[]): Promise<void> {
    checkOps(this, ops);
    ops.forEach((op, i) => {
      if (op.op === 'write' && this.readOnly) throw this.readOnlyError();
      checkIoRange(this, op.buf, op.offsetBytes, `ops[${i}].buf`);
    });
    let failed: SixtreeError | undefined;
    const run: IoOp[] = [];
    for (const op of ops) {
      try {
        this.inject(op.op, op.offsetBytes, op.buf.length);
        run.push(op);
      } catch (e) {
        failed ??= e as SixtreeError;
      }
    }
    if (run.length > 0) {
      await this.inner.submit(run);
      for (const op of run) if (op.op === 'write') this.record(op.buf, op.offsetBytes);
    }
    if (failed !== undefined) throw failed;
  }

  async flush(): Promise<void> {
    this.inject('flush');
    const covered = this.pending.length;
    await this.inner.flush();
    for (const w of this.pending.slice(0, covered)) this.durable.set(w.data, w.offsetBytes);
    this.pending = this.pending.slice(covered);
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  toText(): string {
    const out = new Printbuf();
    out.line(`FaultDevice over ${this.inner.path}`);
    out.nested((o) => {
      o.field('pendingWrites', this.pending.length);
      o.field('injected', `read ${this.injected.read}, write ${this.injected.write}, flush ${this.injected.flush}`);
      o.field('failNext', `read ${this.failNextNr.read}, write ${this.failNextNr.write}, flush ${this.failNextNr.flush}`);
      const r = Object.keys(this.rules).filter((k) => this.rules[k as keyof FaultRules] !== undefined);
      o.field('rules', r.length ? r.join(', ') : 'none');
      statsToText(o, this.stats);
      o.print(this.inner.toText());
    });
    return out.toString();
  }

  private checkWrite(buf: Uint8Array, offsetBytes: number): void {
    if (this.readOnly) throw this.readOnlyError();
    checkIoRange(this, buf, offsetBytes);
  }

  private inject(kind: FaultKind, offsetBytes?: number, lengthBytes?: number): void {
    let fail = false;
    if (this.failNextNr[kind] > 0) {
      this.failNextNr[kind]--;
      fail = true;
    } else if (kind === 'read') fail = this.rules.failRead?.(offsetBytes!, lengthBytes!) ?? false;
    else if (kind === 'write') fail = this.rules.failWrite?.(offsetBytes!, lengthBytes!) ?? false;
    else fail = this.rules.failFlush?.() ?? false;
    if (!fail) return;
    this.injected[kind]++;
    throw ioError(kind, 'EIO', this.path, offsetBytes, lengthBytes);
  }

  private record(buf: Uint8Array, offsetBytes: number): void {
    // a copy even of a Buffer (whose slice() is a view)
    this.pending.push({ offsetBytes, data: new Uint8Array(buf) });
  }

  private readOnlyError(): SixtreeError {
    return new SixtreeError('ERR_READ_ONLY', `${this.path} is open read-only; writes are refused`, { path: this.path });
  }
}
