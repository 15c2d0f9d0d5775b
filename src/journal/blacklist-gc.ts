// SPDX-License-Identifier: GPL-2.0-only
/*
 * Journal seq blacklist garbage collection (bcachefs
 * bch2_blacklist_entries_gc): drop blacklisted ranges nothing needs any more.
 *
 * A range [start, end] (added by an unclean open, blacklist.ts) is needed
 * while either
 *   - a node reachable on disk still has a bset with a seq in it in its
 *     bucket: read as valid, that bset would bring back updates the journal
 *     never made durable; or
 *   - the journal on disk may still need it to explain a gap: its end is not
 *     below the durable last_seq (no future window can reach a seq below it).
 *
 * The first is known from BlacklistHolders (every node read since open that
 * skipped blacklisted bsets; a bucket leaves when the update unlinking it is
 * durable), which is complete only once every node of the tree has been read
 * since open. So a run:
 *   1. walks every btree, reading every node (leaves too) under the btree's
 *      interior lock, so no pointer goes stale under the walk (splits and
 *      merges wait; leaf commits go on). Nodes replaced before or after the
 *      walk were read by whoever replaced them, so they are registered too;
 *   2. rewrites every holder still in the tree into a new bucket (an interior
 *      "rewrite" update, as for a compaction), so its old bucket and the
 *      blacklisted bsets in it become unreachable once that update is durable;
 *   3. waits for the rewrites to be durable (old buckets freed);
 *   4. drops the ranges neither holders nor the journal need, and persists
 *      the superblock.
 * Later drop checks (writeback timer, close) repeat step 4 only: once the walk
 * has been done, the registry stays exact for the rest of the open. A range
 * made by this open waits for last_seq on disk to pass it (writeback moves
 * it; a clean close always does).
 *
 * A run is started in the background after an open that finds ranges (not
 * read-only); close stops a walk under way at the next node and runs a last
 * drop check after its flush, so a clean close persists the shorter list.
 */

import { Printbuf } from '../util/printbuf.js';
import type { BlacklistHolder, BlacklistHolders, JournalSeqBlacklist } from './blacklist.js';
import type { SeqRange } from '../format/superblock.js';

/** What the gc needs from the engine. */
export interface BlacklistGcHost {
  readonly blacklist: JournalSeqBlacklist;
  readonly holders: BlacklistHolders;
  readonly nrBtrees: number;
  /** Read every node of the btree (levels >= 0) with its topology frozen; visit is called per node. Stops early when stop() says so. */
  walkBtreeFrozen(btreeId: number, visit: () => void, stop: () => boolean): Promise<void>;
  /** Rewrite the holder's node into a new bucket if it is still in the tree; true if rewritten. */
  rewriteNode(h: BlacklistHolder): Promise<boolean>;
  /** The rewrites durable: interior updates complete (old buckets freed), journal flushed. */
  makeDurable(): Promise<void>;
  /** last_seq of the newest journal entry on stable storage. */
  lastSeqOndisk(): number;
  /** Write the superblock with the blacklist as it is now. */
  persist(): Promise<void>;
}

export type BlacklistGcCounters = {
  runs: number;
  walksDone: number;
  nodesWalked: number;
  nodesRewritten: number;
  rangesDropped: number;
  dropChecks: number;
  errors: number;
};

export class BlacklistGc {
  readonly counters: BlacklistGcCounters = { runs: 0, walksDone: 0, nodesWalked: 0, nodesRewritten: 0, rangesDropped: 0, dropChecks: 0, errors: 0 };
  /** Every node of the tree has been read since open: the holder registry is exact. */
  walkDone = false;
  lastError: Error | null = null;
  private running: Promise<void> | null = null;
  private stopping = false;
  private persisting: Promise<void> = Promise.resolve();

  constructor(private readonly host: BlacklistGcHost) {}

  get isRunning(): boolean {
    return this.running !== null;
  }

  /** Start a run in the background (no-op if one is under way or nothing is blacklisted). Errors are kept, not thrown. */
  start(): void {
    if (this.running || this.stopping || this.host.blacklist.length === 0) return;
    this.running = this.run()
      .catch((e: unknown) => {
        this.counters.errors++;
        this.lastError = e instanceof Error ? e : new Error(String(e));
      })
      .finally(() => {
        this.running = null;
      });
  }

  /** Run to the end (starting one if none is under way); rethrows the run's error. */
  async runNow(): Promise<void> {
    if (this.running) await this.running;
    this.lastError = null;
    this.start();
    if (this.running) await this.running;
    if (this.lastError) throw this.lastError;
  }

  /** Close: stop a walk under way and wait for the run to end. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.running) await this.running;
    await this.persisting;
  }

  private async run(): Promise<void> {
    const host = this.host;
    this.counters.runs++;
    if (!this.walkDone) {
      for (let id = 0; id < host.nrBtrees; id++) {
        await host.walkBtreeFrozen(id, () => this.counters.nodesWalked++, () => this.stopping);
        if (this.stopping) return;
      }
      this.walkDone = true;
      this.counters.walksDone++;
    }
    let rewrote = 0;
    for (const h of host.holders.list()) {
      if (this.stopping) return;
      if (!h.seqs.some((s) => host.blacklist.isBlacklisted(s))) continue;
      if (await host.rewriteNode(h)) rewrote++;
    }
    this.counters.nodesRewritten += rewrote;
    if (this.stopping) return;
    if (rewrote || this.droppable().length < host.blacklist.length) await host.makeDurable();
    await this.dropCheck();
  }

  /** Ranges that can go now (only meaningful once the walk is done). */
  droppable(): SeqRange[] {
    if (!this.walkDone) return [];
    const lastSeq = this.host.lastSeqOndisk();
    return this.host.blacklist.toArray().filter((r) => r.end < lastSeq && !this.host.holders.holds(r.start, r.end));
  }

  /**
   * Drop what can go and persist the superblock if anything went. Cheap when
   * nothing can (no I/O); superblock writes are serialized.
   */
  async dropCheck(opts: { persist?: boolean } = {}): Promise<number> {
    // close persists the list itself (persist: false); nothing else may write the superblock then
    if (this.stopping && opts.persist !== false) return 0;
    this.counters.dropChecks++;
    const go = this.droppable();
    if (!go.length) return 0;
    for (const r of go) this.host.blacklist.drop(r.start, r.end);
    this.counters.rangesDropped += go.length;
    if (opts.persist !== false) {
      const p = this.persisting.then(() => this.host.persist());
      this.persisting = p.catch(() => {});
      await p;
    }
    return go.length;
  }

  stats(): BlacklistGcCounters & { ranges: number; holders: number; walkDone: boolean; running: boolean } {
    return { ...this.counters, ranges: this.host.blacklist.length, holders: this.host.holders.size, walkDone: this.walkDone, running: this.isRunning };
  }

  toText(): string {
    const out = new Printbuf();
    out.line(`journal seq blacklist: ${this.host.blacklist.toText()}`);
    out.nested((o) => {
      o.field('gc', `${this.isRunning ? 'running' : 'idle'}, walk ${this.walkDone ? 'done' : 'not done'}${this.lastError ? `, last error: ${this.lastError.message}` : ''}`);
      o.field('holders', this.host.holders.toText());
      o.field('counters', JSON.stringify(this.counters));
    });
    return out.toString();
  }
}
