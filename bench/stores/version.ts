// SPDX-License-Identifier: GPL-2.0-only
/*
 * The installed version of a package, for the report (a result names exactly
 * what it measured). Reads the package.json found by walking up from the
 * resolved entry point, so packages whose `exports` hide package.json work too.
 */

import { readFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

export function packageVersion(name: string): string {
  const require = createRequire(import.meta.url);
  try {
    let dir = path.dirname(require.resolve(name));
    for (;;) {
      const file = path.join(dir, 'package.json');
      if (existsSync(file)) {
        const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
        if (pkg.name === name && pkg.version) return pkg.version;
      }
      const parent = path.dirname(dir);
      if (parent === dir) return 'unknown';
      dir = parent;
    }
  } catch {
    return 'unknown';
  }
}
