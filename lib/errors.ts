// One error class for every state and OS failure, with a stable `code`.
// Argument errors are TypeError/RangeError with Node's own codes and a message
// of the form "Expected X for Y but received Z".

/**
 * Every `code` iobuf itself defines (docs/api.md "Errors" lists each; test/native.constants.test.ts
 * checks that the native addon throws no other). OS failures use the errno name ("ENOMEM").
 */
export const IOBUF_ERROR_CODES = [
  'ERR_IOBUF_DOUBLE_FREE',
  'ERR_IOBUF_FOREIGN_BUFFER',
  'ERR_IOBUF_DETACHED',
  'ERR_IOBUF_HUGE_PAGES_UNAVAILABLE',
  'ERR_IOBUF_UNSUPPORTED',
  'ERR_IOBUF_POOL_CLOSED',
  'ERR_IOBUF_BUDGET_TIMEOUT',
  'ERR_IOBUF_CLOSE_TIMEOUT',
  'ERR_IOBUF_DOUBLE_RELEASE',
  'ERR_IOBUF_RELEASED',
  'ERR_IOBUF_WOULD_DEADLOCK',
  'ERR_IOBUF_IOVEC_INVALID',
  'ERR_IOBUF_IOVEC_CLOSED',
  'ERR_IOBUF_IOVEC_FULL',
  'ERR_IOBUF_IOVEC_BUSY',
  'ERR_IOBUF_FRAME_TOO_LARGE',
  'ERR_IOBUF_FRAME_TRUNCATED',
  'ERR_IOBUF_FRAME_INVALID',
  'ERR_IOBUF_GATHERER_BUSY',
  'ERR_IOBUF_GATHERER_SPENT',
  'ERR_IOBUF_SOCKET_CLOSED',
  'ERR_IOBUF_BUDGET_EXHAUSTED',
  'ERR_IOBUF_WRITER_CLOSED',
  'ERR_IOBUF_INTERNAL',
  'ERR_IOBUF_URING_UNAVAILABLE',
  'ERR_IOBUF_URING_CLOSED',
] as const;

/** One of IOBUF_ERROR_CODES. */
export type IobufErrorCode = (typeof IOBUF_ERROR_CODES)[number];

export class IobufError extends Error {
  /** Stable identifier: an `ERR_IOBUF_*` code, or an errno name such as `ENOMEM`. */
  code!: string;
  /** Negative errno, as Node reports it, when the kernel refused. */
  errno?: number;
  /** The syscall the kernel refused. */
  syscall?: string;

  constructor(message: string, code?: string) {
    super(message);
    this.name = 'IobufError';
    if (code !== undefined) this.code = code;
  }
}

/** Node's AbortError for an aborted `signal` (`name` 'AbortError', `code` 'ABORT_ERR', `cause` the reason). */
export function abortError(signal: AbortSignal): Error & { code: string } {
  const error = new Error('The operation was aborted', { cause: signal.reason }) as Error & { code: string };
  error.name = 'AbortError';
  error.code = 'ABORT_ERR';
  return error;
}

/** A value as argument-error messages show it: `null`, `"text"`, `12n`, `an instance of Foo`, … */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'function') return `function ${value.name || '<anonymous>'}`;
  if (typeof value === 'object') {
    const name = (value as object).constructor?.name;
    return name ? `an instance of ${name}` : 'an object';
  }
  return String(value);
}

/** A TypeError/RangeError carrying one of Node's argument codes (`ERR_INVALID_ARG_TYPE`, …). */
export function codedError<E extends Error>(Kind: new (message: string) => E, code: string, message: string): E {
  return Object.assign(new Kind(message), { code });
}

/**
 * The one shape of every argument error: "Expected `expected` for `name` but
 * received `value`" (the value as describeValue shows it, unless `received`
 * says it in words, e.g. "a payload of 70000 bytes").
 */
export function argumentError<E extends Error>(
  Kind: new (message: string) => E,
  code: string,
  expected: string,
  name: string,
  value: unknown,
  received?: string,
): E {
  return codedError(Kind, code, `Expected ${expected} for ${name} but received ${received ?? describeValue(value)}`);
}

/** ERR_INVALID_ARG_TYPE: `value` is not of the kind `expected` says. */
export function invalidType(expected: string, name: string, value: unknown): TypeError {
  return argumentError(TypeError, 'ERR_INVALID_ARG_TYPE', expected, name, value);
}

/** ERR_INVALID_ARG_VALUE: the right kind of value, but not one that is accepted. */
export function invalidValue(expected: string, name: string, value: unknown, received?: string): TypeError {
  return argumentError(TypeError, 'ERR_INVALID_ARG_VALUE', expected, name, value, received);
}

/** ERR_OUT_OF_RANGE: a number (or a size) outside what is accepted. */
export function outOfRange(expected: string, name: string, value: unknown, received?: string): RangeError {
  return argumentError(RangeError, 'ERR_OUT_OF_RANGE', expected, name, value, received);
}

/** An integer in [min, max]; TypeError for a non-number, RangeError otherwise. */
export function validateInteger(value: unknown, name: string, min: number, max: number): asserts value is number {
  if (typeof value !== 'number') {
    throw argumentError(TypeError, 'ERR_INVALID_ARG_TYPE', 'an integer', name, value);
  }
  if (!Number.isInteger(value) || value < min || value > max) {
    throw argumentError(RangeError, 'ERR_OUT_OF_RANGE', `an integer from ${min} to ${max}`, name, value);
  }
}

/** A power of two in [min, max]. */
export function validatePowerOfTwo(value: unknown, name: string, min: number, max: number): asserts value is number {
  if (typeof value !== 'number') {
    throw argumentError(TypeError, 'ERR_INVALID_ARG_TYPE', 'a power of two', name, value);
  }
  // Numbers above 2^31 cannot use bit tricks; Math.log2 is exact for powers of two.
  if (!Number.isInteger(value) || value < min || value > max || !Number.isInteger(Math.log2(value))) {
    throw argumentError(RangeError, 'ERR_OUT_OF_RANGE', `a power of two from ${min} to ${max}`, name, value);
  }
}

export function validateBoolean(value: unknown, name: string): asserts value is boolean {
  if (typeof value !== 'boolean') {
    throw argumentError(TypeError, 'ERR_INVALID_ARG_TYPE', 'a boolean', name, value);
  }
}

export function validateOneOf<T extends string>(value: unknown, name: string, choices: readonly T[]): asserts value is T {
  if (!choices.includes(value as T)) {
    throw argumentError(TypeError, 'ERR_INVALID_ARG_VALUE', `one of ${choices.map((c) => `'${c}'`).join(', ')}`, name, value);
  }
}

/** `undefined` or a plain options object. */
export function validateOptions(value: unknown, name: string): asserts value is object | undefined {
  if (value !== undefined && (value === null || typeof value !== 'object')) {
    throw argumentError(TypeError, 'ERR_INVALID_ARG_TYPE', 'an object', name, value);
  }
}

export function validateView(value: unknown, name: string): asserts value is ArrayBufferView {
  if (!ArrayBuffer.isView(value)) {
    throw argumentError(TypeError, 'ERR_INVALID_ARG_TYPE', 'a Buffer, TypedArray or DataView', name, value);
  }
}

export function validateFunction(value: unknown, name: string): asserts value is (...args: never[]) => unknown {
  if (typeof value !== 'function') throw invalidType('a function', name, value);
}

export function validateString(value: unknown, name: string): asserts value is string {
  if (typeof value !== 'string') throw invalidType('a string', name, value);
}

/** An array (of `what`, for the message) with a length in [min, max]. */
export function validateArray(value: unknown, name: string, what: string, min = 0, max = 2 ** 32 - 1): asserts value is unknown[] {
  if (!Array.isArray(value)) throw invalidType(`an array of ${what}`, name, value);
  if (value.length < min || value.length > max) {
    const range = min === max ? `${min}` : `${min} to ${max}`;
    throw invalidValue(`an array of ${range} ${what}`, name, value, `an array of ${value.length}`);
  }
}

export function validateAbortSignal(value: unknown, name: string): asserts value is AbortSignal | undefined {
  if (value !== undefined && !(value instanceof AbortSignal)) throw invalidType('an AbortSignal', name, value);
}

/** An instance of `Class` (described as `expected`, e.g. 'a BufferPool'). */
export function validateInstance<T>(
  value: unknown,
  Class: abstract new (...args: never[]) => T,
  name: string,
  expected: string,
): asserts value is T {
  if (!(value instanceof Class)) throw invalidType(expected, name, value);
}
