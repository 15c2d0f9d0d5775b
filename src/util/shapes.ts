// SPDX-License-Identifier: GPL-2.0-only
/*
 * shapes.ts: why a store keeps some finished objects reachable.
 *
 * V8's optimized code checks the objects it handles against their hidden
 * classes (maps), and holds those maps weakly. The map a class's objects end
 * up with after their constructor is reachable only from objects that have
 * it: the links to it from the constructor's first map are weak too. A
 * transaction's objects (its Transaction and BtreeTrans, their paths and
 * path levels, overlays and TxCtx, its journal reservation, the format
 * states of node builds) live only while it runs. So a full garbage
 * collection while a store is idle (V8's memory reducer runs them after an
 * idle spell; or a collection the application forces) frees those maps, and
 * V8 throws away every optimized function that named them (`node
 * --trace-deopt`: "weak objects"; 21-57 functions after bench/idle-burst.ts's
 * mix of commits, puts, lookups and scans, among them transCommit, putKey,
 * settle, journalAddKeys, the path, lock and iterator functions). The next
 * burst then runs on unoptimized code while they compile again: batched
 * commits at about two thirds of their warm rate (docs/benchmarks.md, *A
 * burst after an idle spell*).
 *
 * So each store keeps the last object of each such class it made (a
 * ShapeKeeper, one per engine, so that nothing outlives its store): its
 * last transaction attempt (BtreeTrans.shed drops the attempt's updates and
 * read set first; through it its paths, path levels and TxCtx), its last
 * overlay, tx.iter() iterator and range() iterator, its journal's last
 * released reservation. Format states, which hold nothing of a store, are
 * kept by their module. Keeping costs a map write per transaction attempt,
 * overlay, iterator, reservation and format state.
 */

/** Off: nothing is kept (bench/idle-burst.ts measures both ways). */
export const shapeKeeping = { on: true };

/** The last object kept of each class. */
export class ShapeKeeper {
  private readonly byClass = new Map<unknown, object>();

  keep(obj: object): void {
    if (shapeKeeping.on) this.byClass.set(obj.constructor, obj);
  }

  /** @internal The object kept of class cls, if any (tests). */
  kept<T extends object>(cls: abstract new (...args: never[]) => T): T | undefined {
    return this.byClass.get(cls) as T | undefined;
  }

  toText(): string {
    const names = [...this.byClass.keys()].map((c) => (c as { name?: string }).name ?? '?');
    return `shapes kept: ${names.length ? names.join(', ') : 'none'}`;
  }
}
