// SPDX-License-Identifier: GPL-2.0-only
/*
 * DelayDevice: wraps another Device and makes its asynchronous operations
 * take random, seeded amounts of time, so that they start late and complete
 * out of order. A test tool (the stress campaign's --io-delay, the tests): a
 * real device's completions come in any order and after any wait, and the
 * engine drops its locks while it waits for a read; a file on a quiet
 * machine completes in order and quickly, and hides the races that need a
 * slow read (session 25's stale-pointer read, docs/cache.md: one a random
 * read delay found at the 6th store, that weeks of plain runs had not).
 *
 * Each read, write and flush waits twice: before the inner device sees it
 * (a write not yet on the device, a read that will see what is written
 * meanwhile) and after it completed (the caller hears of it late). Each wait
 * is, with probability `share`, one of:
 *   - a hop: one promise tick (reorders against work queued in the same turn);
 *   - turns: 1-3 event-loop turns (setImmediate);
 *   - a timer: 0 to maxMs milliseconds (setTimeout);
 * else none. submit() runs its operations one by one, each with its own
 * waits, and resolves when all finished (rejects with the first failure in
 * array order, after all finished), as the interface says. A flush covers
 * what the inner device has completed when the flush reaches it, as a real
 * device's does: a write still waiting before the device is not covered.
 *
 * Synchronous calls, buffers and the device's properties pass through. close()
 * waits for the operations still running (their buffers are in use), then
 * closes the inner device.
 */
import { invalidArg } from '../errors.js';
import { Printbuf } from '../util/printbuf.js';
import { checkOps } from './block-device.js';
import { DeviceWrapper, type Device, type IoOp } from './device.js';

export interface DelayOpts {
  /** Numbers in [0, 1), seeded by the caller for runs that replay (default Math.random). */
  random?: () => number;
  /** Probability that a wait is taken (each operation has two); 0..1, default 0.5. */
  share?: number;
  /** The longest timer wait, milliseconds; default 2. */
  maxMs?: number;
}

export interface DelayCounters {
  /** Asynchronous operations started (a submit's operations counted one by one). */
  ops: number;
  /** Waits taken, by kind. */
  hops: number;
  turns: number;
  timers: number;
  /** Most operations running at once. */
  runningMax: number;
}

export class DelayDevice extends DeviceWrapper implements Device {
  readonly counters: DelayCounters = { ops: 0, hops: 0, turns: 0, timers: 0, runningMax: 0 };
  private readonly random: () => number;
  private readonly share: number;
  private readonly maxMs: number;
  private readonly running = new Set<Promise<unknown>>();

  constructor(inner: Device, opts: DelayOpts = {}) {
    if (inner === null || typeof inner !== 'object' || typeof inner.read !== 'function') throw invalidArg('inner', inner, 'a Device');
    if (opts === null || typeof opts !== 'object') throw invalidArg('opts', opts, 'an object');
    const share = opts.share ?? 0.5;
    if (typeof share !== 'number' || !(share >= 0 && share <= 1)) throw invalidArg('opts.share', share, 'a number in [0, 1]');
    const maxMs = opts.maxMs ?? 2;
    if (typeof maxMs !== 'number' || !(maxMs >= 0 && maxMs <= 10_000)) throw invalidArg('opts.maxMs', maxMs, 'a number of milliseconds in [0, 10000]');
    if (opts.random !== undefined && typeof opts.random !== 'function') throw invalidArg('opts.random', opts.random, 'a function returning numbers in [0, 1)');
    super(inner);
    this.random = opts.random ?? Math.random;
    this.share = share;
    this.maxMs = maxMs;
  }

  /** Operations started and not yet finished. */
  get runningNow(): number {
    return this.running.size;
  }

  readSync(buf: Uint8Array, offsetBytes: number): void {
    this.inner.readSync(buf, offsetBytes);
  }
  writeSync(buf: Uint8Array, offsetBytes: number): void {
    this.inner.writeSync(buf, offsetBytes);
  }

  read(buf: Uint8Array, offsetBytes: number): Promise<void> {
    return this.delayed(() => this.inner.read(buf, offsetBytes));
  }
  write(buf: Uint8Array, offsetBytes: number): Promise<void> {
    return this.delayed(() => this.inner.write(buf, offsetBytes));
  }
  flush(): Promise<void> {
    return this.delayed(() => this.inner.flush());
  }

  async submit(ops: readonly IoOp[]): Promise<void> {
    checkOps(this, ops);
    const done = await Promise.allSettled(ops.map((op) => (op.op === 'write' ? this.write(op.buf, op.offsetBytes) : this.read(op.buf, op.offsetBytes))));
    for (const d of done) if (d.status === 'rejected') throw d.reason;
  }

  async close(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
    await this.inner.close();
  }

  toText(): string {
    const out = new Printbuf();
    out.line(`DelayDevice over ${this.inner.path}`);
    out.nested((o) => {
      o.field('waits', `share ${this.share}, timers up to ${this.maxMs} ms`);
      const c = this.counters;
      o.field('ops', `${c.ops} (running ${this.running.size}, at most ${c.runningMax})`);
      o.field('waited', `hops ${c.hops}, turns ${c.turns}, timers ${c.timers}`);
      o.print(this.inner.toText());
    });
    return out.toString();
  }

  /** fn between two waits, counted as running from the call to the end of the second wait. */
  private delayed(fn: () => Promise<void>): Promise<void> {
    this.counters.ops++;
    const p = (async () => {
      await this.wait();
      try {
        await fn();
      } finally {
        await this.wait();
      }
    })();
    this.running.add(p);
    if (this.running.size > this.counters.runningMax) this.counters.runningMax = this.running.size;
    const forget = (): void => {
      this.running.delete(p);
    };
    p.then(forget, forget);
    return p;
  }

  private async wait(): Promise<void> {
    if (this.random() >= this.share) return;
    const x = this.random();
    if (x < 1 / 3) {
      this.counters.hops++;
      await Promise.resolve();
    } else if (x < 2 / 3) {
      this.counters.turns++;
      const n = 1 + Math.floor(this.random() * 3);
      for (let i = 0; i < n; i++) await new Promise<void>((resolve) => setImmediate(resolve));
    } else {
      this.counters.timers++;
      const ms = this.random() * this.maxMs;
      await new Promise<void>((resolve) => setTimeout(resolve, ms));
    }
  }
}
