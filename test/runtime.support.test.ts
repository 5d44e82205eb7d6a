// Which runtimes are tested, and the note every other one gets: the Node
// majors of TESTED_NODE_MAJORS run the whole suite; any other version, Bun
// and Deno get one process warning (code IOBUF_UNTESTED_RUNTIME) when iobuf
// loads, instead of differing silently. package.json's engines and the README
// name the same majors.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { TESTED_NODE_MAJORS, untestedRuntimeNote } from '../lib/runtime';
import { lastJsonLine, runFixture } from './helpers/memory-proc';

const repo = path.join(__dirname, '..');

describe('tested runtimes', () => {
  it('are Node 20, 22, 24 and 26, and this run is on one of them', () => {
    expect(TESTED_NODE_MAJORS).toEqual([20, 22, 24, 26]);
    expect(TESTED_NODE_MAJORS).toContain(Number(process.versions.node.split('.')[0]));
  });

  it('package.json engines and the README say the same majors', () => {
    const pkg = JSON.parse(readFileSync(path.join(repo, 'package.json'), 'utf8'));
    expect(pkg.engines.node).toBe(TESTED_NODE_MAJORS.map((major) => `^${major}.0.0`).join(' || '));
    const readme = readFileSync(path.join(repo, 'README.md'), 'utf8');
    expect(readme).toContain('Node 20, 22, 24 and 26');
  });

  it('untestedRuntimeNote: null for each tested major, a note naming the version for anything else', () => {
    for (const node of ['20.0.0', '22.23.5', '24.22.3', '26.12.1']) expect(untestedRuntimeNote({ node })).toBeNull();
    for (const node of ['18.20.4', '19.9.0', '21.7.3', '23.11.0', '25.2.1', '27.0.0', '28.1.0']) {
      expect(untestedRuntimeNote({ node })).toMatch(
        new RegExp(`^iobuf is tested on Node 20, 22, 24 and 26; Node ${node.replace(/\./g, '\\.')} is not tested`),
      );
    }
    // Bun reports a tested Node version (26.3.0 in Bun 1.4): Bun is what counts.
    expect(untestedRuntimeNote({ node: '26.3.0', bun: '1.4.5' })).toMatch(
      /on Bun 1\.4\.5 only a smoke test of every part runs.*'data' events/,
    );
    expect(untestedRuntimeNote({ node: '22.0.0', deno: '2.5.0' })).toMatch(/Deno 2\.5\.0 is not tested/);
  });
});

describe('the note at load (a child with process.versions replaced before it loads iobuf)', () => {
  const warningsFor = (versions: object) => {
    const result = runFixture('runtime-note.js', [JSON.stringify(versions)]);
    expect({ status: result.status, signal: result.signal }).toEqual({ status: 0, signal: null });
    return lastJsonLine<Array<{ name: string; code: string; message: string }>>(result);
  };

  it('a tested major: no warning', () => {
    expect(warningsFor({})).toEqual([]);
  });

  it('an untested major: exactly one warning, code IOBUF_UNTESTED_RUNTIME', () => {
    const warnings = warningsFor({ node: '27.1.0' });
    expect(warnings).toEqual([{ name: 'Warning', code: 'IOBUF_UNTESTED_RUNTIME', message: untestedRuntimeNote({ node: '27.1.0' }) }]);
  });

  it('Bun (whatever Node version it reports): exactly one warning', () => {
    const warnings = warningsFor({ node: '26.3.0', bun: '1.4.5' });
    expect(warnings.map((warning) => warning.code)).toEqual(['IOBUF_UNTESTED_RUNTIME']);
  });
});
