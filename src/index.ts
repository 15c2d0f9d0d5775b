// SPDX-License-Identifier: GPL-2.0-only
/*
 * sixtree: public exports only (API.md).
 */

export { Store, Transaction, type ClearOpts, type RangeOpts, type StoreFormatOptions, type StoreOpenOptions } from './store.js';
export { Iter, type Entry, type Hole, type NodeInfo, type IterOpts } from './btree/iter.js';
export {
  pos,
  POS_MIN,
  POS_MAX,
  bposCmp,
  bposToText,
  bposSuccessor,
  bposPredecessor,
  type Bpos,
  type PosLike,
} from './btree/bpos.js';
export { SixtreeError, PUBLIC_CODES, type SixtreeErrorCode, type SixtreeErrorDetails } from './errors.js';
export type { StoreStats } from './engine.js';
