/*
 * Device: the one interface every layer above src/io does its I/O through.
 *
 * Implementations:
 *  - BlockDevice (block-device.ts): a regular file, loop device or raw block
 *    device opened O_DIRECT through the native shim (napi or koffi backend).
 *  - MemDevice (mem-device.ts): an image in memory, for crash-image replays.
 *  - FaultDevice (fault-device.ts): wraps another Device, records writes since
 *    the last flush, builds crash images, injects EIO.
 *  - DelayDevice (delay-device.ts): wraps another Device, makes its operations
 *    wait at random (late, out-of-order completions).
 * The wrappers extend DeviceWrapper (below): the inner device's properties
 * and buffers, passed through.
 *
 * Rules (checked in TypeScript before any native call; ERR_INVALID_ARG):
 *  - buffers come from allocBuffer() (aligned to alignBytes);
 *  - offset and length are multiples of alignBytes, inside [0, sizeBytes).
 * A write is durable only after flush() resolves.
 */

export interface IoOp {
  /** 'read' fills buf from the device, 'write' writes buf to the device. */
  op: 'read' | 'write';
  buf: Uint8Array;
  offsetBytes: number;
}

export interface DeviceStats {
  reads: number;
  writes: number;
  bytesRead: number;
  bytesWritten: number;
  flushes: number;
}

export interface Device {
  readonly path: string;
  readonly kind: 'file' | 'block' | 'memory';
  readonly sizeBytes: number;
  /** Required alignment of buffer address, offset and length (logical block size / DIO alignment). */
  readonly alignBytes: number;
  readonly readOnly: boolean;
  readonly stats: DeviceStats;
  /** The native backend doing its I/O, where there is one (napi or koffi). */
  readonly backend?: { readonly name: string };

  /** An aligned, zeroed buffer; free it with freeBuffer() (a finalizer frees it otherwise). */
  allocBuffer(sizeBytes: number): Uint8Array;
  freeBuffer(buf: Uint8Array): void;

  read(buf: Uint8Array, offsetBytes: number): Promise<void>;
  write(buf: Uint8Array, offsetBytes: number): Promise<void>;
  /** Many reads/writes submitted at once; resolves when all completed (rejects on the first failure, after all finished). */
  submit(ops: readonly IoOp[]): Promise<void>;
  readSync(buf: Uint8Array, offsetBytes: number): void;
  writeSync(buf: Uint8Array, offsetBytes: number): void;
  /** Everything written before the call is on stable storage when this resolves (fdatasync). */
  flush(): Promise<void>;
  /**
   * write() then flush() as one operation, where the device does it cheaper
   * (a file or block device: one worker-thread hand-off instead of two).
   * Optional: callers fall back to write() then flush() (writeThenFlush).
   */
  writeFlush?(buf: Uint8Array, offsetBytes: number): Promise<void>;
  /** writeFlush on the calling thread, blocking it (a file or block device; optional). */
  writeFlushSync?(buf: Uint8Array, offsetBytes: number): void;
  close(): Promise<void>;
  toText(): string;
}

/** dev.writeFlush where the device has it, else write() then flush(). */
export async function writeThenFlush(dev: Device, buf: Uint8Array, offsetBytes: number): Promise<void> {
  if (dev.writeFlush) return dev.writeFlush(buf, offsetBytes);
  await dev.write(buf, offsetBytes);
  await dev.flush();
}

/** A Device over another one: its properties and buffers are the inner device's (FaultDevice, DelayDevice). */
export abstract class DeviceWrapper {
  constructor(readonly inner: Device) {}

  get path(): string {
    return this.inner.path;
  }
  get kind(): Device['kind'] {
    return this.inner.kind;
  }
  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }
  get alignBytes(): number {
    return this.inner.alignBytes;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  get stats(): DeviceStats {
    return this.inner.stats;
  }
  get backend(): { readonly name: string } | undefined {
    return this.inner.backend;
  }

  allocBuffer(sizeBytes: number): Uint8Array {
    return this.inner.allocBuffer(sizeBytes);
  }
  freeBuffer(buf: Uint8Array): void {
    this.inner.freeBuffer(buf);
  }
}
