// The request/response protocol the two example servers speak (and the load
// generator in bench/frames.mjs). Every message is a frame: a u32be length,
// then the payload
//
//   request:  u8 op | u32be id | body
//   response: u8 op | u32be id | body
//
// op ECHO (1): the response body is the request body.
// op BYTES (2): the request body is a u32be count n; the response body is n
//   bytes of PATTERN (byte i is i & 0xff), "give me n bytes".
// Responses to one connection's requests go out in request order.
export const ECHO = 1;
export const BYTES = 2;
/** op + id */
export const HEAD = 5;
/** The largest body a BYTES request may ask for. */
export const MAX_BYTES = 16 * 1024 * 1024;
/** The largest request a server accepts. */
export const MAX_REQUEST = 16 * 1024 * 1024 + HEAD;

let pattern: Buffer | null = null;

/** `n` bytes of the BYTES pattern (a view of one shared, read-only Buffer). */
export function patternBytes(n: number): Buffer {
  if (pattern === null) {
    pattern = Buffer.allocUnsafeSlow(MAX_BYTES);
    for (let i = 0; i < MAX_BYTES; i++) pattern[i] = i & 0xff;
  }
  return pattern.subarray(0, n);
}

/** Port and host from the command line: `--port N` (default 7070; 0 picks one), `--host H`. */
export function listenAddress(argv: string[]): { port: number; host: string } {
  const value = (name: string) => {
    const index = argv.indexOf(name);
    return index >= 0 ? argv[index + 1] : undefined;
  };
  return { port: Number(value('--port') ?? 7070), host: value('--host') ?? '127.0.0.1' };
}
