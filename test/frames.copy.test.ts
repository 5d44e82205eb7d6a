// The payload copy: Node's native copy where a load-time probe finds it, else
// Buffer#copy (e.g. under --pending-deprecation, where process.binding would
// warn). Both must deliver the same bytes: a differential test across the two.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { probe } from './fixtures/frames-copy-probe';

describe('FrameAssembler payload copy', () => {
  it('gives the same frames with Node\'s native copy and with Buffer#copy (--pending-deprecation), and no warning', () => {
    const here = probe();
    expect(here.kind).toBe('node-native');
    expect(here.frames).toBe(500);
    const child = spawnSync(process.execPath, ['--pending-deprecation', '--import', 'tsx', path.join(__dirname, 'fixtures', 'frames-copy-probe.ts')], {
      cwd: path.join(__dirname, '..'), encoding: 'utf8',
    });
    expect(child.status, child.stderr).toBe(0);
    const there = JSON.parse(child.stdout) as ReturnType<typeof probe>;
    expect(there.kind).toBe('buffer-copy');
    expect(there).toEqual({ ...here, kind: 'buffer-copy' });
    expect(child.stderr).not.toContain('DEP0111');
  });
});
