// SPDX-License-Identifier: GPL-2.0-only
/*
 * The installed version of a package, for the report (a result names exactly
 * what it measured). Reads the package.json found by walking up from the
 * resolved entry point, so packages whose `exports` hide package.json work
 * too; for sixtree itself, the package.json above this file.
 */

import { readFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The version in the nearest package.json named `name` at or above dir, if any. */
function versionAbove(dir: string, name: string): string | undefined {
  for (;;) {
    const file = path.join(dir, 'package.json');
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === name && pkg.version) return pkg.version;
    }
    const parent = path.dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

export function packageVersion(name: string): string {
  // This package itself (sixtree): its own package.json, above this file.
  const own = versionAbove(path.dirname(fileURLToPath(import.meta.url)), name);
  if (own) return own;
  try {
    return versionAbove(path.dirname(createRequire(import.meta.url).resolve(name)), name) ?? 'unknown';
  } catch {
    return 'unknown';
  }
}
