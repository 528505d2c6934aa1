import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { rotateLogIfLarge } from './daemon-process.js';

describe('rotateLogIfLarge', () => {
  const dirs: string[] = [];
  afterEach(() => dirs.splice(0).forEach((dir) => fs.rmSync(dir, { recursive: true, force: true })));
  const logIn = () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-log-'));
    dirs.push(dir);
    return path.join(dir, 'capsuled.log');
  };

  it('moves a log past the limit to .1, replacing the older one', () => {
    const log = logIn();
    fs.writeFileSync(`${log}.1`, 'oldest');
    fs.writeFileSync(log, 'x'.repeat(101));
    expect(rotateLogIfLarge(log, 100)).toBe(true);
    expect(fs.existsSync(log)).toBe(false);
    expect(fs.readFileSync(`${log}.1`, 'utf8')).toBe('x'.repeat(101));
  });

  it('leaves a small log and a missing log alone', () => {
    const log = logIn();
    expect(rotateLogIfLarge(log, 100)).toBe(false);
    fs.writeFileSync(log, 'x'.repeat(100));
    expect(rotateLogIfLarge(log, 100)).toBe(false);
    expect(fs.readFileSync(log, 'utf8')).toHaveLength(100);
  });
});
