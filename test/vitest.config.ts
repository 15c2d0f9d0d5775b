import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

/**
 * Two projects: `default` runs every test on the default backend (the
 * node-addon-api addon); `koffi` runs the suites that drive a store's I/O
 * end to end again with SIXTREE_IO=koffi (the engine's calls through koffi:
 * the API, recovery after kill -9, a full journal, a full device, device
 * errors, damaged images). The native and BlockDevice suites test both
 * backends themselves. `SIXTREE_IO=koffi npm test` runs everything on koffi.
 *
 * Two test files run at once even on two cores (vitest's default there is
 * one): much of the suite waits on the device, timers and child processes.
 * On this 2-core VM the whole suite took 617 s one file at a time and 391 s
 * two at a time (each file ~35% slower). Files share nothing: each makes its
 * own store files and loop devices.
 */
const WORKERS = Math.max(2, Math.min(4, availableParallelism()));
const KOFFI_AGAIN = [
  'test/api.test.ts',
  'test/journal/kill9.test.ts',
  'test/journal/journal-full.test.ts',
  'test/full-device.test.ts',
  'test/io/errors.test.ts',
  'test/corruption-fuzz.test.ts',
];

export default defineConfig({
  test: {
    root: new URL('..', import.meta.url).pathname,
    testTimeout: 120_000,
    hookTimeout: 60_000,
    pool: 'forks',
    maxWorkers: WORKERS,
    reporters: ['default'],
    projects: [
      { extends: true, test: { name: 'default', include: ['test/**/*.test.ts'] } },
      { extends: true, test: { name: 'koffi', include: KOFFI_AGAIN, env: { SIXTREE_IO: 'koffi' } } },
    ],
  },
});
