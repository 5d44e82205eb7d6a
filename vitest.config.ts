import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // forks: each test file runs in a child process, so a file may use
    // --expose-gc, worker_threads and process-wide settings freely.
    // (vmForks/vmThreads break `instanceof` for errors thrown by the addon.)
    pool: 'forks',
    execArgv: ['--expose-gc'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    setupFiles: process.env.IOBUF_ASAN ? ['test/setup/asan.ts'] : [],
  },
});
