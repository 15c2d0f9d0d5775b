/*
 * Errors.
 *
 * Two kinds, kept apart on purpose (bcachefs errcode.h; undici errors.js):
 *
 *  - SixtreeError: the only thing the public API throws. A stable string `code`
 *    from PUBLIC_CODES and a message naming what was wrong and where.
 *
 *  - Internal codes: small integers from one table (INTERNAL_ERRORS) with parent
 *    links, e.g. transaction_restart_would_deadlock -> transaction_restart.
 *    Internal functions return them as values (0 = ok); errMatches(code, parent)
 *    walks the parent chain. A restart that has to cross user code (the user's
 *    transact() callback) travels as a TransactionRestart throwable that carries
 *    the code; transact()'s one retry loop catches it and never lets it out.
 */

export const PUBLIC_CODES = [
  'ERR_INVALID_ARG',
  'ERR_NOT_FOUND_DEVICE',
  'ERR_NO_DIRECT_IO',
  'ERR_TOO_SMALL',
  'ERR_EXISTS',
  'ERR_BAD_MAGIC',
  'ERR_VERSION',
  'ERR_LOCKED',
  'ERR_DEVICE_BUSY',
  'ERR_CHECKSUM',
  'ERR_TOPOLOGY',
  'ERR_IO',
  'ERR_NO_SPACE',
  'ERR_CACHE_TOO_SMALL',
  'ERR_VALUE_TOO_LARGE',
  'ERR_UNKNOWN_BTREE',
  'ERR_NOT_EXTENTS',
  'ERR_IS_EXTENTS',
  'ERR_READ_ONLY',
  'ERR_CLOSED',
  'ERR_TX_DONE',
  'ERR_TX_NESTED',
  'ERR_TOO_MANY_RESTARTS',
  'ERR_WOULD_BLOCK',
] as const;

export type SixtreeErrorCode = (typeof PUBLIC_CODES)[number];

export interface SixtreeErrorDetails {
  path?: string;
  btree?: string;
  level?: number;
  pos?: string;
  offset?: number;
  length?: number;
  errno?: string;
  [key: string]: unknown;
}

export class SixtreeError extends Error {
  readonly code: SixtreeErrorCode;
  readonly details: SixtreeErrorDetails;

  constructor(code: SixtreeErrorCode, message: string, details: SixtreeErrorDetails = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SixtreeError';
    this.code = code;
    this.details = details;
  }

  toText(): string {
    return `${this.code}: ${this.message}`;
  }
}

export function isSixtreeError(e: unknown, code?: SixtreeErrorCode): e is SixtreeError {
  return e instanceof SixtreeError && (code === undefined || e.code === code);
}

/* ---------------------------------------------------------------------------
 * Internal error codes: one table, parents by name. Index in the table = code.
 * Code 0 is "ok".
 */
const INTERNAL_ERROR_TABLE = [
  ['ok', null],
  ['transaction_restart', null],
  ['transaction_restart_relock', 'transaction_restart'],
  ['transaction_restart_relock_path', 'transaction_restart_relock'],
  ['transaction_restart_relock_path_intent', 'transaction_restart_relock'],
  ['transaction_restart_relock_after_fill', 'transaction_restart_relock'],
  ['transaction_restart_relock_parent_for_fill', 'transaction_restart_relock'],
  ['transaction_restart_relock_key_cache_fill', 'transaction_restart_relock'],
  ['transaction_restart_lock_node_reused', 'transaction_restart'],
  ['transaction_restart_would_deadlock', 'transaction_restart'],
  ['transaction_restart_would_deadlock_write', 'transaction_restart_would_deadlock'],
  ['transaction_restart_deadlock_recursion_limit', 'transaction_restart_would_deadlock'],
  ['transaction_restart_upgrade', 'transaction_restart'],
  ['transaction_restart_mem_realloced', 'transaction_restart'],
  ['transaction_restart_in_traverse_all', 'transaction_restart'],
  ['transaction_restart_too_many_iters', 'transaction_restart'],
  ['transaction_restart_split_race', 'transaction_restart'],
  ['transaction_restart_node_changed', 'transaction_restart'],
  ['transaction_restart_fill_mem_alloc_fail', 'transaction_restart'],
  ['transaction_restart_journal_reclaim', 'transaction_restart'],
  ['transaction_restart_journal_preres_get', 'transaction_restart'],
  ['transaction_restart_key_changed', 'transaction_restart'],
  ['transaction_restart_write_blocked', 'transaction_restart'],
  ['transaction_restart_nested', 'transaction_restart'],
  ['btree_cache_cannibalize_lock_blocked', null],
  ['btree_node_reclaim_refused', null],
  ['btree_insert_need_split', null],
  ['btree_insert_need_journal_res', null],
  ['node_read_error', null],
  ['btree_node_fill_parent_lost', null],
  ['journal_full', null],
] as const;

export type InternalErrorName = (typeof INTERNAL_ERROR_TABLE)[number][0];

const INTERNAL_ERROR_PARENT: number[] = [];
const INTERNAL_ERROR_NAMES: string[] = [];
const INTERNAL_ERROR_CODE = new Map<string, number>();
INTERNAL_ERROR_TABLE.forEach(([name], i) => {
  INTERNAL_ERROR_NAMES.push(name);
  INTERNAL_ERROR_CODE.set(name, i);
});
INTERNAL_ERROR_TABLE.forEach(([, parent], i) => {
  INTERNAL_ERROR_PARENT[i] = parent === null ? -1 : INTERNAL_ERROR_CODE.get(parent)!;
});

/** Numeric code of an internal error name. */
export function errCode(name: InternalErrorName): number {
  return INTERNAL_ERROR_CODE.get(name)!;
}

export function errName(code: number): string {
  return INTERNAL_ERROR_NAMES[code] ?? `unknown_error_${code}`;
}

/** True if `code` is `parent` or descends from it. */
export function errMatches(code: number, parent: number): boolean {
  for (let c = code; c > 0; c = INTERNAL_ERROR_PARENT[c]!) {
    if (c === parent) return true;
  }
  return false;
}

export const ERR = Object.freeze(
  Object.fromEntries(INTERNAL_ERROR_TABLE.map(([name], i) => [name, i])) as { readonly [K in InternalErrorName]: number },
);

export const RESTART = ERR.transaction_restart;

/** Every restart code, in table order (for per-reason counters). */
export const RESTART_CODES: readonly number[] = INTERNAL_ERROR_TABLE.map((_, i) => i).filter((i) => i !== RESTART && errMatches(i, RESTART));

/**
 * A restart on its way out through user code. transact() catches it and runs the
 * callback again; it never reaches the caller of transact().
 */
export class TransactionRestart extends Error {
  readonly restartCode: number;
  constructor(restartCode: number, message?: string) {
    super(message ?? errName(restartCode));
    this.name = 'TransactionRestart';
    this.restartCode = restartCode;
  }
}

export function isRestart(e: unknown): e is TransactionRestart {
  return e instanceof TransactionRestart;
}

/** Map a Node/system errno string (EIO, ENOSPC...) to the public error for a device failure. */
export function ioError(op: string, errno: string, path: string, offset?: number, length?: number): SixtreeError {
  const where = offset === undefined ? '' : ` at offset ${offset}${length === undefined ? '' : ` length ${length}`}`;
  return new SixtreeError('ERR_IO', `${op} failed on ${path}${where}: ${errno}`, { path, offset, length, errno });
}

export function invalidArg(name: string, value: unknown, allowed: string): SixtreeError {
  return new SixtreeError('ERR_INVALID_ARG', `${name}: got ${describeValue(value)}; expected ${allowed}`, { argument: name });
}

export function describeValue(v: unknown): string {
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'string') return JSON.stringify(v.length > 64 ? v.slice(0, 64) + '…' : v);
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (v instanceof Uint8Array) return `${v.constructor.name}(${v.length})`;
  if (Array.isArray(v)) return `array(${v.length})`;
  if (typeof v === 'function') return 'a function';
  return typeof v === 'object' ? `an object (${Object.prototype.toString.call(v).slice(8, -1)})` : typeof v;
}
