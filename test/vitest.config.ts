import { defineConfig } from 'vitest/config';

/**
 * Two projects: `default` runs every test on the default backend (the
 * node-addon-api addon); `koffi` runs the suites that drive a store's I/O
 * end to end again with SIXTREE_IO=koffi (the engine's calls through koffi:
 * the API, recovery after kill -9, a full journal, a full device, device
 * errors, damaged images). The native and BlockDevice suites test both
 * backends themselves. `SIXTREE_IO=koffi npm test` runs everything on koffi.
 */
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
    reporters: ['default'],
    projects: [
      { extends: true, test: { name: 'default', include: ['test/**/*.test.ts'] } },
      { extends: true, test: { name: 'koffi', include: KOFFI_AGAIN, env: { SIXTREE_IO: 'koffi' } } },
    ],
  },
});
