import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { pruneSiblings } from './files.js';

describe('pruneSiblings (the shared cache)', () => {
  let dir: string;
  const now = Date.parse('2026-11-25T12:00:00Z');
  const hour = 60 * 60 * 1000;
  const make = (name: string, ageMs: number) => {
    fs.writeFileSync(path.join(dir, name), name);
    const at = new Date(now - ageMs);
    fs.utimesSync(path.join(dir, name), at, at);
  };
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-prune-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("keeps another checkout's recent artefact and removes day-old ones", () => {
    make('kit-ours.ext4', 48 * hour);
    make('kit-theirs.ext4', hour);
    make('kit-stale.ext4', 25 * hour);
    make('rootfs-other.ext4', 100 * hour);
    pruneSiblings(dir, (name) => name.startsWith('kit-'), 'kit-ours.ext4', now);
    expect(fs.readdirSync(dir).sort()).toEqual(['kit-ours.ext4', 'kit-theirs.ext4', 'rootfs-other.ext4']);
    // The one in use is marked as just used.
    expect(fs.statSync(path.join(dir, 'kit-ours.ext4')).mtimeMs).toBe(now);
  });

  it('keeps at most four recently used others', () => {
    for (let i = 1; i <= 6; i++) make(`kit-${i}.ext4`, i * 60_000);
    pruneSiblings(dir, (name) => name.startsWith('kit-'), 'kit-new.ext4', now);
    expect(fs.readdirSync(dir).sort()).toEqual(['kit-1.ext4', 'kit-2.ext4', 'kit-3.ext4', 'kit-4.ext4']);
  });

  it('removes temps left by builds whose process is gone, not those of live ones', () => {
    const gone = 2 ** 22 + 1; // above Linux's largest pid: no such process
    fs.mkdirSync(path.join(dir, `.base-0123456789abcdef.tmp-${gone}-1764000000000`));
    fs.writeFileSync(path.join(dir, `.base-0123456789abcdef.tmp-${gone}-1764000000000`, 'memory'), 'x');
    make(`.kit-a.ext4.tmp-${gone}-1764000000000`, 2 * hour);
    make(`.kit-b.ext4.tmp-${gone}-1764000000001`, 10 * 60_000); // maybe another pid namespace's, still writing
    make(`.kit-c.ext4.tmp-${process.pid}-1764000000000`, 2 * hour);
    const old = new Date(now - 2 * hour);
    fs.utimesSync(path.join(dir, `.base-0123456789abcdef.tmp-${gone}-1764000000000`), old, old);
    pruneSiblings(dir, (name) => name.startsWith('kit-'), 'kit-new.ext4', now);
    expect(fs.readdirSync(dir).sort()).toEqual([`.kit-b.ext4.tmp-${gone}-1764000000001`, `.kit-c.ext4.tmp-${process.pid}-1764000000000`]);
  });
});
