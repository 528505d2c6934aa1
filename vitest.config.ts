import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['packages/*/src/**/*.test.ts', 'packages/*/test/**/*.test.ts', 'bench/lib/*.test.mjs'],
    // Integration tests boot real microVMs under TCG: generous per-test time,
    // and at most two files at once on a two-core machine.
    testTimeout: 180_000,
    hookTimeout: 180_000,
    maxWorkers: 2,
    minWorkers: 1,
    reporters: ['default', './scripts/summary-reporter.ts'],
  },
});
