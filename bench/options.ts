// SPDX-License-Identifier: GPL-2.0-only
/*
 * Command-line values shared by the bench's entry points (run.ts,
 * targets.ts): counts (100k, 1M), node sizes (16k..1M), milliseconds and
 * lists, each checked with a message naming the option; UsageError marks a
 * bad option (exit status 2).
 */

export class UsageError extends Error {}

export function parseCount(s: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)([kKmM]?)$/.exec(s.trim());
  if (!m) throw new UsageError(`${what}: "${s}" is not a count (e.g. 100000, 100k, 1M)`);
  const n = Number(m[1]) * (m[2] === '' ? 1 : /k/i.test(m[2]!) ? 1e3 : 1e6);
  if (!Number.isInteger(n) || n < 100 || n > 1e9) throw new UsageError(`${what}: ${s} must be an integer in 100..10^9`);
  return n;
}

export function parseSize(s: string, what: string): number {
  const m = /^(\d+)([kKmM]?)(?:i?[bB])?$/.exec(s.trim());
  if (!m) throw new UsageError(`${what}: "${s}" is not a size (e.g. 16k, 256k, 1M)`);
  const n = Number(m[1]) * (m[2] === '' ? 1 : /k/i.test(m[2]!) ? 1024 : 1 << 20);
  if (n < 4096 || n > 1 << 20 || (n & (n - 1)) !== 0) throw new UsageError(`${what}: ${s} must be a power of two from 4k to 1M`);
  return n;
}

export function parseMs(s: string | undefined, what: string, dflt: number): number {
  if (s === undefined) return dflt;
  const n = Number(s);
  if (!Number.isFinite(n) || n < 0 || n > 3_600_000) throw new UsageError(`${what}: ${s} must be milliseconds in 0..3600000`);
  return n;
}

export function parseList<T extends string>(s: string, allowed: readonly T[], what: string): T[] {
  const items = s.split(',').map((x) => x.trim()).filter(Boolean);
  for (const x of items) if (!(allowed as readonly string[]).includes(x)) throw new UsageError(`${what}: unknown "${x}"; expected one of ${allowed.join(', ')}`);
  if (!items.length) throw new UsageError(`${what}: empty list`);
  return [...new Set(items)] as T[];
}

/**
 * The options both entry points take, as node:util parseArgs declares them
 * (each adds its own): the sizes of a job, where its files go, where the
 * results go.
 */
export const commonOptionSpecs = {
  quick: { type: 'boolean' },
  keys: { type: 'string' },
  'node-size': { type: 'string' },
  io: { type: 'string' },
  time: { type: 'string' },
  warmup: { type: 'string' },
  'limit-time': { type: 'string' },
  dir: { type: 'string' },
  out: { type: 'string' },
  json: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/**
 * An entry point's run: its options parsed (bad ones: a line on stderr and
 * exit status 2; --help: the text, 0), then main with them; its result is
 * the exit status, a throw is reported (stack included) with status 1.
 */
export function runEntryPoint<O>(name: string, help: string, parse: (argv: string[]) => O | 'help', main: (opts: O) => Promise<number>): void {
  let opts: O | 'help';
  try {
    opts = parse(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${name}: ${(err as Error).message} (see --help)\n`);
    process.exitCode = 2;
    return;
  }
  if (opts === 'help') {
    process.stdout.write(help);
    process.exitCode = 0;
    return;
  }
  main(opts).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`${name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
