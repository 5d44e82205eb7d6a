// The numbers and names lib/ and native/ both know, written once on each side:
// the iovec entry layout (lib/iovec/entries.ts, native/iovec.h), the pool's
// shared-block layout (lib/pool/shared.ts and lib/portable.ts, native/pool.h)
// and the error codes (lib/errors.ts and docs/api.md, native/*.cc). The addon
// reports its layouts; what it does not report is read from native/'s text.
// A change on one side only fails here, not as corrupted memory or as a code
// no list or document names.
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { native } from '../lib/binding';
import { IOBUF_ERROR_CODES } from '../lib/errors';
import { BOUNDS_HEADER_BYTES, IOVEC_ENTRY_BYTES, MAX_IOVEC_CAPACITY, Op } from '../lib/iovec/entries';
import { LAYOUT_VERSION, MAGIC, MAX_CLASS_ROWS, MAX_THREADS, RING, layout } from '../lib/pool/shared';
import { MAX_CLASS_ROWS as PORTABLE_MAX_CLASS_ROWS, MIN_CLASS_ROWS as PORTABLE_MIN_CLASS_ROWS, portableBinding } from '../lib/portable';

const root = path.join(__dirname, '..');
const read = (file: string) => readFileSync(path.join(root, file), 'utf8');

/** Every file of `dir` (recursively) whose name matches `pattern`, relative to the root. */
function sources(dir: string, pattern: RegExp): string[] {
  return readdirSync(path.join(root, dir), { recursive: true, encoding: 'utf8' })
    .filter((name) => pattern.test(name))
    .map((name) => path.join(dir, name))
    .sort();
}

/** Each match of `pattern`'s first group in `files`, with where it was found. */
function occurrences(files: string[], pattern: RegExp): { code: string; at: string }[] {
  const found: { code: string; at: string }[] = [];
  for (const file of files) {
    read(file)
      .split('\n')
      .forEach((line, index) => {
        for (const match of line.matchAll(pattern)) found.push({ code: match[1], at: `${file}:${index + 1}` });
      });
  }
  return found;
}

/** Where each code is used that `known` lacks, e.g. ['ERR_IOBUF_X at native/a.cc:12']. */
function unknown(found: { code: string; at: string }[], known: readonly string[]): string[] {
  return found.filter(({ code }) => !known.includes(code)).map(({ code, at }) => `${code} at ${at}`);
}

/** docs/api.md from "## Errors" to the next "## " heading. */
function errorsSection(): string {
  const docs = read('docs/api.md');
  const start = docs.indexOf('\n## Errors\n');
  expect(start).toBeGreaterThan(0);
  const end = docs.indexOf('\n## ', start + 1);
  return docs.slice(start, end < 0 ? undefined : end);
}

/**
 * native/pool.h's `constexpr int… kName = expression;` values and `enum Word`'s
 * members, by name. The expressions are integers, names defined above them,
 * `+ - * <<` and parentheses.
 */
function poolHeader(): { constants: Map<string, number>; words: Map<string, number> } {
  const text = read('native/pool.h');
  const constants = new Map<string, number>();
  for (const [, name, expression] of text.matchAll(/^constexpr int(?:32_t)? (k\w+) = ([^;]+);/gm)) {
    constants.set(name, evaluate(expression, constants));
  }
  const body = /^enum Word : int \{([^}]*)\}/m.exec(text)?.[1] ?? '';
  const words = new Map<string, number>();
  for (const [, name, value] of body.matchAll(/(k\w+) = (\d+),/g)) words.set(name, Number(value));
  return { constants, words };
}

function evaluate(expression: string, names: Map<string, number>): number {
  const tokens = expression.match(/0x[\da-fA-F]+|\d+|k\w+|<<|[-+*()]|\S/g) ?? [];
  let at = 0;
  const atom = (): number => {
    const token = tokens[at++];
    if (token === '(') {
      const value = shift();
      if (tokens[at++] !== ')') throw new Error(`pool.h: expected ) in ${expression}`);
      return value;
    }
    if (/^(0x[\da-fA-F]+|\d+)$/.test(token)) return Number(token);
    const value = names.get(token);
    if (value === undefined) throw new Error(`pool.h: cannot evaluate ${token} in ${expression}`);
    return value;
  };
  const product = (): number => {
    let value = atom();
    while (tokens[at] === '*') {
      at++;
      value *= atom();
    }
    return value;
  };
  const sum = (): number => {
    let value = product();
    while (tokens[at] === '+' || tokens[at] === '-') value = tokens[at++] === '+' ? value + product() : value - product();
    return value;
  };
  const shift = (): number => {
    let value = sum();
    while (tokens[at] === '<<') {
      at++;
      value *= 2 ** sum();
    }
    return value;
  };
  const value = shift();
  if (at !== tokens.length) throw new Error(`pool.h: cannot evaluate ${expression}`);
  return value;
}

describe('constants mirrored between lib/ and native/', () => {
  it('the iovec entry layout: entry size, bounds header, largest capacity and the operation numbers', () => {
    expect(native.iovecLayout).toEqual({
      entryBytes: IOVEC_ENTRY_BYTES,
      boundsHeaderBytes: BOUNDS_HEADER_BYTES,
      maxCapacity: MAX_IOVEC_CAPACITY,
      ops: {
        readv: Op.READV,
        writev: Op.WRITEV,
        preadv: Op.PREADV,
        pwritev: Op.PWRITEV,
        writevAll: Op.WRITEV_ALL,
        pwritevAll: Op.PWRITEV_ALL,
      },
    });
    expect(native.iovecEntryBytes).toBe(16);
  });

  it("the pool's shared block: magic, version, word indexes, region offsets and sizes", () => {
    expect(native.poolLayout).toEqual(layout);
    expect(layout.magic).toBe(MAGIC);
    expect(layout.version).toBe(LAYOUT_VERSION);
    expect(layout.ring).toBe(RING);
    expect(layout.maxThreads).toBe(MAX_THREADS);
    expect(MAX_CLASS_ROWS).toBe(65);
  });

  it("lib/portable.ts's copy of the shared block's layout (it cannot import lib/pool/shared.ts: an import cycle)", () => {
    expect(portableBinding('a test').poolLayout).toEqual(layout);
    expect(portableBinding('a test').poolLayout).toEqual(native.poolLayout);
  });

  it('native/pool.h as text: its constants and control words, including those the addon does not report', () => {
    const { constants, words } = poolHeader();
    // Found at all (a changed declaration style would otherwise check nothing).
    expect(constants.size).toBeGreaterThanOrEqual(10);
    expect(words.size).toBe(12);
    expect({
      magic: constants.get('kMagic'),
      version: constants.get('kVersion'),
      controlWords: constants.get('kControlWords'),
      ring: constants.get('kRing'),
      maxThreads: constants.get('kMaxThreads'),
      regionStates: constants.get('kRegionStates'),
      classFields: constants.get('kClassFields'),
      threadFields: constants.get('kThreadFields'),
    }).toEqual({
      magic: layout.magic,
      version: layout.version,
      controlWords: layout.controlWords,
      ring: layout.ring,
      maxThreads: layout.maxThreads,
      regionStates: layout.regionStates,
      classFields: layout.classFields,
      threadFields: layout.threadFields,
    });
    // Not in the addon's poolLayout: the class rows a block may have.
    expect(constants.get('kMinClassRows')).toBe(PORTABLE_MIN_CLASS_ROWS);
    expect(constants.get('kMaxClassRows')).toBe(PORTABLE_MAX_CLASS_ROWS);
    expect(constants.get('kMaxClassRows')).toBe(MAX_CLASS_ROWS);
    // enum Word: kClosed → closed, …; the magic and version words are 0 and 1.
    const named = new Map([...words].map(([name, value]) => [name[1].toLowerCase() + name.slice(2), value]));
    expect(named.get('magicWord')).toBe(0);
    expect(named.get('versionWord')).toBe(1);
    named.delete('magicWord');
    named.delete('versionWord');
    expect(Object.fromEntries(named)).toEqual(layout.words);
  });
});

describe('error codes: native/, lib/errors.ts and docs/api.md agree', () => {
  const nativeSources = sources('native', /\.(cc|h)$/);

  it('every "ERR_IOBUF_…" string literal in native/*.cc and *.h is in IOBUF_ERROR_CODES', () => {
    const found = occurrences(nativeSources, /"(ERR_IOBUF_\w*)/g);
    // The extraction found the codes at all: 22 literals of 10 codes when this was written.
    expect(nativeSources.length).toBeGreaterThanOrEqual(10);
    expect(found.length).toBeGreaterThanOrEqual(20);
    expect(new Set(found.map(({ code }) => code)).size).toBeGreaterThanOrEqual(8);
    expect(unknown(found, IOBUF_ERROR_CODES)).toEqual([]);
  });

  // Quoted: the comments of lib/ write codes in backquotes (`ERR_IOBUF_*`).
  it("every 'ERR_IOBUF_…' string literal in lib/ is in IOBUF_ERROR_CODES", () => {
    const found = occurrences(sources('lib', /\.ts$/), /['"](ERR_IOBUF_\w*)/g);
    expect(found.length).toBeGreaterThanOrEqual(50);
    expect(unknown(found, IOBUF_ERROR_CODES)).toEqual([]);
  });

  it('the table of docs/api.md "Errors" has a row for each code of IOBUF_ERROR_CODES, and no other', () => {
    const documented = [...errorsSection().matchAll(/^\| `(ERR_IOBUF_\w*)` \|/gm)].map((match) => match[1]);
    expect(IOBUF_ERROR_CODES.length).toBeGreaterThanOrEqual(20);
    expect(new Set(IOBUF_ERROR_CODES).size).toBe(IOBUF_ERROR_CODES.length);
    expect([...documented].sort()).toEqual([...IOBUF_ERROR_CODES].sort());
    // And the rest of docs/api.md names no code outside the list.
    expect(unknown(occurrences(['docs/api.md'], /(ERR_IOBUF_\w*)/g), IOBUF_ERROR_CODES)).toEqual([]);
  });

  // Node's own codes for argument errors. lib/ has no runtime list of them: they
  // are the codes of lib/errors.ts invalidType, invalidValue and outOfRange, as
  // the first table of docs/api.md "Errors" documents them. The native addon
  // may throw these (it checks what JavaScript cannot cheaply) and no others.
  const NODE_ARGUMENT_CODES = ['ERR_INVALID_ARG_TYPE', 'ERR_INVALID_ARG_VALUE', 'ERR_OUT_OF_RANGE'];

  it('the Node-style codes native/ throws are the argument codes lib/ throws and docs/api.md documents', () => {
    const found = occurrences(nativeSources, /"(ERR_(?!IOBUF_)\w*)"/g);
    // ERR_OUT_OF_RANGE (errors.cc, views.cc) and ERR_INVALID_ARG_VALUE (pool.cc) when this was written.
    expect(found.length).toBeGreaterThanOrEqual(3);
    expect(unknown(found, NODE_ARGUMENT_CODES)).toEqual([]);
    const errorsTs = read('lib/errors.ts');
    const section = errorsSection();
    for (const code of NODE_ARGUMENT_CODES) {
      expect(errorsTs, code).toContain(`'${code}'`);
      expect(section, code).toContain(`\`${code}\``);
    }
  });
});
