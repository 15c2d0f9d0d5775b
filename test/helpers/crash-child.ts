// SPDX-License-Identifier: GPL-2.0-only
/*
 * Child program of the kill -9 test (test/journal/kill9.test.ts), run from
 * its compiled form:
 *
 *   node dist/test/helpers/crash-child.js <store path> <first seq> <concurrency> [cacheSize [inline]]
 * (inline: open with inlineFlush)
 *
 * Opens the store (running recovery when the last child was killed), prints
 * "ready", then commits numbered transactions until it is killed: with
 * `concurrency` workers, each transaction takes the next seq and writes
 *
 *   kv (seq, k) for k in 0..KEYS_PER_TXN-1   value: valueOf(seq, k)
 *   kv LAST_KEY                             value: valueOf(seq, LAST_K)   (an overwrite)
 *
 * and prints "ack <seq>" as soon as its transact() resolved (stdout is a
 * pipe: writes are synchronous on Linux, so a printed ack reached the parent
 * even if the kill follows at once). Anything unexpected: "error <message>"
 * on stdout and exit code 3.
 */

import { Store } from '../../src/index.js';

export const KEYS_PER_TXN = 4;
/** The overwritten key: (0, 0) (seqs start far above 0). */
export const LAST_KEY = { inode: 0, offset: 0 } as const;
export const LAST_K = 0xffff;
const VALUE_MAGIC = 0x4b494c4c; // "KILL"

/** The value of key (seq, k): magic, seq, k, then bytes derived from them; 16..215 bytes long. */
export function valueOf(seq: number, k: number): Uint8Array {
  const len = 16 + ((seq * 7 + k * 13) % 200);
  const b = new Uint8Array(len);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, VALUE_MAGIC, true);
  dv.setUint32(4, seq, true);
  dv.setUint32(8, k, true);
  dv.setUint32(12, len, true);
  for (let i = 16; i < len; i++) b[i] = (seq + k * 31 + i * 7) & 0xff;
  return b;
}

/** seq and k of a value written by valueOf, or null when the bytes are not exactly such a value. */
export function parseValue(v: Uint8Array): { seq: number; k: number } | null {
  if (v.length < 16) return null;
  const dv = new DataView(v.buffer, v.byteOffset, v.byteLength);
  if (dv.getUint32(0, true) !== VALUE_MAGIC) return null;
  const seq = dv.getUint32(4, true);
  const k = dv.getUint32(8, true);
  const want = valueOf(seq, k);
  if (want.length !== v.length || Buffer.compare(want, v) !== 0) return null;
  return { seq, k };
}

async function main(): Promise<void> {
  const [path, firstArg, concArg, cacheArg, inlineArg] = process.argv.slice(2);
  const first = Number(firstArg);
  const concurrency = Number(concArg);
  if (!path || !Number.isSafeInteger(first) || first <= 0 || first >= 2 ** 32 || !Number.isSafeInteger(concurrency) || concurrency < 1) {
    process.stdout.write('error usage: crash-child.js <store path> <first seq> <concurrency> [cacheSize [inline]]\n');
    process.exit(2);
  }
  const store = await Store.open(path, { ...(cacheArg ? { cacheSize: Number(cacheArg) } : {}), ...(inlineArg === 'inline' ? { inlineFlush: true } : {}) });
  process.stdout.write('ready\n');
  let next = first;
  const worker = async (): Promise<never> => {
    for (;;) {
      const seq = next++;
      await store.transact((tx) => {
        for (let k = 0; k < KEYS_PER_TXN; k++) tx.put('kv', { inode: seq, offset: k }, valueOf(seq, k));
        tx.put('kv', LAST_KEY, valueOf(seq, LAST_K));
      });
      process.stdout.write(`ack ${seq}\n`);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

// only when run as a program (the test imports the value helpers)
if (process.argv[1] && /crash-child\.js$/.test(process.argv[1])) {
  main().catch((e: unknown) => {
    const msg = e instanceof Error ? `${(e as { code?: string }).code ?? e.name}: ${e.message}` : String(e);
    process.stdout.write(`error ${msg.replace(/\n/g, ' ')}\n`);
    process.exit(3);
  });
}
