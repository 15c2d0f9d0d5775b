// SPDX-License-Identifier: GPL-2.0-only
/*
 * Entry point of src/native: picks and caches backends, and exports crc32c.
 *
 * loadBackend(name?) returns the one instance per backend name for the
 * process (loading the addon or koffi on first use). crc32c() is the
 * checksum the on-disk format uses; it always goes through the napi addon
 * (the cheapest native call) regardless of the I/O backend in use.
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

let crcFn: ((data: Uint8Array, seed?: number) => number) | undefined;

/**
 * CRC-32C (Castagnoli) of data. seed is a previous result, for chaining:
 * crc32c(b, crc32c(a)) === crc32c(concat(a, b)).
 */
export function crc32c(data: Uint8Array, seed = 0): number {
  return (crcFn ??= napiAddon().crc32c)(data, seed);
}
