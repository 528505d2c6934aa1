import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { holdFile, releaseFile, sweepUnheld } from './cache-holds.js';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-holds-'));
  fs.mkdirSync(path.join(dir, 'cache'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('cache holds', () => {
  it('deletes a cache file only when the last daemon holding it lets go', () => {
    const file = path.join(dir, 'cache', 'blob');
    fs.writeFileSync(file, 'x');
    holdFile(file, path.join(dir, 'daemon-a'));
    holdFile(file, path.join(dir, 'daemon-b'));
    holdFile(file, path.join(dir, 'daemon-b')); // twice is once
    expect(releaseFile(file, path.join(dir, 'daemon-a'))).toBe(false);
    expect(fs.existsSync(file)).toBe(true);
    expect(releaseFile(file, path.join(dir, 'daemon-c'))).toBe(false); // never held there: not its to delete
    expect(releaseFile(file, path.join(dir, 'daemon-b'))).toBe(true);
    expect(fs.existsSync(file)).toBe(false);
  });

  it('sweeps files nobody holds once the grace period is over, never held ones', () => {
    const held = path.join(dir, 'cache', 'held');
    const orphan = path.join(dir, 'cache', 'orphan');
    fs.writeFileSync(held, 'h');
    fs.writeFileSync(orphan, 'o');
    holdFile(held, path.join(dir, 'daemon'));
    expect(sweepUnheld(path.join(dir, 'cache'), 60_000)).toBe(0);
    expect(sweepUnheld(path.join(dir, 'cache'), -1)).toBe(1);
    expect(fs.existsSync(orphan)).toBe(false);
    expect(fs.existsSync(held)).toBe(true);
  });
});
