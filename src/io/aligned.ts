// SPDX-License-Identifier: GPL-2.0-only
/*
 * Aligned buffers and the argument rules every Device enforces.
 *
 * Owns: allocation of device buffers (through a NativeBackend: native,
 * aligned, zeroed memory), and checkIo(), the one place that says what a
 * valid I/O is (device.ts rules):
 *  - buf is a Uint8Array over a live region of the device's backend (from
 *    allocBuffer(), not freed), its first byte at an address that is a
 *    multiple of alignBytes;
 *  - buf.length and offsetBytes are multiples of alignBytes, length > 0;
 *  - [offsetBytes, offsetBytes + length) lies inside [0, sizeBytes).
 * Violations are ERR_INVALID_ARG naming the argument and the alignment.
 * Also: the translation of a backend's native error into a SixtreeError.
 */
import { invalidArg, ioError, SixtreeError } from '../errors.js';
import { isNativeError, type NativeBackend } from '../native/index.js';

/** Largest single buffer a device hands out (bounds allocation requests). */
export const bufferBytesMax = 1 << 30;

/** Largest number of operations accepted by one Device#submit() call. */
export const submitOpsMax = 1 << 16;

export interface IoTarget {
  readonly path: string;
  readonly sizeBytes: number;
  readonly alignBytes: number;
}

/** A zeroed buffer of sizeBytes whose address is a multiple of alignBytes. */
export function allocAlignedBuffer(backend: NativeBackend, sizeBytes: number, alignBytes: number): Uint8Array {
  if (typeof sizeBytes !== 'number' || !Number.isSafeInteger(sizeBytes) || sizeBytes < 1 || sizeBytes > bufferBytesMax)
    throw invalidArg('sizeBytes', sizeBytes, `an integer in [1, ${bufferBytesMax}]`);
  return new Uint8Array(backend.allocAligned(sizeBytes, alignBytes));
}

export function freeAlignedBuffer(backend: NativeBackend, buf: Uint8Array): void {
  if (!(buf instanceof Uint8Array)) throw invalidArg('buf', buf, 'a Uint8Array from allocBuffer()');
  if (backend.addressOf(buf.buffer) === undefined) throw invalidArg('buf', buf, 'a buffer from allocBuffer() that was not freed yet');
  try {
    backend.freeAligned(buf.buffer as ArrayBuffer);
  } catch (e) {
    if (isNativeError(e) && e.code === 'EBUSY')
      throw new SixtreeError('ERR_INVALID_ARG', 'buf: cannot free a buffer while an I/O on it is in flight', { argument: 'buf' }, { cause: e });
    throw e;
  }
}

/** Throws ERR_INVALID_ARG unless (buf, offsetBytes) is a valid I/O on target. */
export function checkIo(target: IoTarget, backend: NativeBackend, buf: unknown, offsetBytes: unknown, name = 'buf'): asserts buf is Uint8Array {
  if (!(buf instanceof Uint8Array)) throw invalidArg(name, buf, 'a Uint8Array from allocBuffer()');
  const base = backend.addressOf(buf.buffer);
  if (base === undefined) throw invalidArg(name, buf, `a buffer from allocBuffer() of this device's '${backend.name}' backend, not freed`);
  const address = base + buf.byteOffset;
  if (address % target.alignBytes !== 0)
    throw new SixtreeError(
      'ERR_INVALID_ARG',
      `${name}: address 0x${address.toString(16)} is not aligned to ${target.alignBytes} bytes (alignBytes of ${target.path})`,
      { argument: name, alignBytes: target.alignBytes },
    );
  checkIoRange(target, buf, offsetBytes, name);
}

/** The checks of checkIo() that need no backend: type, length, offset alignment and range. */
export function checkIoRange(target: IoTarget, buf: unknown, offsetBytes: unknown, name = 'buf'): asserts buf is Uint8Array {
  const align = target.alignBytes;
  if (!(buf instanceof Uint8Array)) throw invalidArg(name, buf, 'a Uint8Array from allocBuffer()');
  if (buf.length === 0 || buf.length % align !== 0)
    throw invalidArg(`${name}.length`, buf.length, `a positive multiple of ${align} (alignBytes of ${target.path})`);
  if (typeof offsetBytes !== 'number' || !Number.isSafeInteger(offsetBytes) || offsetBytes < 0 || offsetBytes % align !== 0)
    throw invalidArg('offsetBytes', offsetBytes, `a non-negative integer multiple of ${align} (alignBytes of ${target.path})`);
  if (offsetBytes + buf.length > target.sizeBytes)
    throw invalidArg('offsetBytes', offsetBytes, `offset + length (${buf.length}) <= ${target.sizeBytes}, the size of ${target.path}`);
}

/** A device failure as the public error: ERR_IO naming op, errno, path, offset, length. */
export function deviceError(e: unknown, op: string, path: string, offsetBytes?: number, lengthBytes?: number): unknown {
  if (!isNativeError(e)) return e;
  const err = ioError(op, e.code, path, offsetBytes, lengthBytes);
  (err as { cause?: unknown }).cause = e;
  return err;
}
