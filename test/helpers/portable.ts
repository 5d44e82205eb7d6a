// Portable mode in the tests: `IOBUF_PORTABLE=1 npm test -- …` (scripts/run-tests.mjs
// does it for the pure-JS parts' test files) runs them over lib/portable.ts.
// A test that needs what portable mode lacks (addresses, the kernel through
// the native addon, cleanup after worker.terminate()) skips there, with the
// reason in its name.
import { it } from 'vitest';

export const portable = process.env.IOBUF_PORTABLE === '1';

/** Why tests skip in portable mode, by what they need. */
export const NEEDS = {
  addresses: 'it compares or aligns addresses (addressOf), which JavaScript cannot see',
  kernel: 'it checks what the kernel did (/proc, RSS, O_DIRECT), through memory portable mode does not map',
  writev: 'it expects the direct writev path, which needs the native addon',
  registration: 'io_uring registration needs the native addon',
  terminate: 'a terminate()d worker cannot give back what it held without the native addon (the documented limit)',
  iovec: 'vectored I/O needs the native addon',
} as const;

/** `it`, or in portable mode `it.skip` with `reason` appended to the test's name. */
export function itNative(reason: string): typeof it {
  if (!portable) return it;
  const skipped = (name: string, ...rest: unknown[]) =>
    (it.skip as (name: string, ...rest: unknown[]) => void)(`${name} [skipped in portable mode: ${reason}]`, ...rest);
  return skipped as unknown as typeof it;
}
