// SPDX-License-Identifier: GPL-2.0-only
/*
 * Entry point of src/native: picks and caches backends, and exports crc32c
 * and gather.
 *
 * loadBackend(name?) returns the one instance per backend name for the
 * process (loading the addon or koffi on first use). crc32c() is the
 * checksum the on-disk format uses, gather() the memory copy a node read's
 * merge uses; both always go through the napi addon (the cheapest native
 * call) regardless of the I/O backend in use.
 */
import { defaultBackendName, isIoBackendName, IO_BACKEND_NAMES, type IoBackendName, type NativeBackend } from './backend.js';
import { createKoffiBackend } from './koffi.js';
import { createNapiBackend, napiAddon } from './napi.js';
import { invalidArg } from '../errors.js';

export * from './backend.js';
export { napiAddon } from './napi.js';

const backends = new Map<IoBackendName, NativeBackend>();

/** The cached backend by name; default: env SIXTREE_IO, else 'napi'. */
export function loadBackend(name?: IoBackendName): NativeBackend {
  const which: unknown = name ?? defaultBackendName();
  if (!isIoBackendName(which)) throw invalidArg('io', which, IO_BACKEND_NAMES.map((n) => `'${n}'`).join(' or '));
  let b = backends.get(which);
  if (b === undefined) {
    b = which === 'napi' ? createNapiBackend() : createKoffiBackend();
    backends.set(which, b);
  }
  return b;
}

let crcFn: ((data: Uint8Array, seed?: number, start?: number, end?: number) => number) | undefined;

/**
 * CRC-32C (Castagnoli) of data[start, end) (default: all of it). seed is a
 * previous result, for chaining: crc32c(b, crc32c(a)) === crc32c(concat(a, b)).
 * A range costs no subarray (a typed array made per call: ~0.3 us, more than
 * the checksum of a bset header).
 */
export function crc32c(data: Uint8Array, seed = 0, start?: number, end?: number): number {
  return (crcFn ??= napiAddon().crc32c)(data, seed, start, end);
}

let gatherFn: ((dst: Uint8Array, dstOff: number, src: Uint8Array, spans: Uint32Array, nr: number) => number) | undefined;

/**
 * Copy nr spans of src one after another into dst from dstOff (memcpy per
 * span): span i starts spans[2i] bytes into src and is spans[2i + 1] bytes
 * long. Spans must lie inside src, fit dst and not overlap the destination
 * range (EINVAL otherwise). Returns the bytes copied.
 */
export function gather(dst: Uint8Array, dstOff: number, src: Uint8Array, spans: Uint32Array, nr: number): number {
  return (gatherFn ??= napiAddon().gather)(dst, dstOff, src, spans, nr);
}
