// capsule-guest-helper, built here as prepare builds it, with input that never
// reaches a system call: these tests run on the host and must not change its
// clock or entropy pool.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { guestHelperSource } from '../repo-paths.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'guest-helper-'));
const helper = path.join(dir, 'capsule-guest-helper');
execFileSync('gcc', ['-static', '-O2', '-Wall', '-Werror', '-s', '-o', helper, guestHelperSource]);
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('capsule-guest-helper', () => {
  it('refuses malformed commands with exit status 2', () => {
    for (const args of [[], ['bogus'], ['settime', '1'], ['settime', 'x', '0'], ['settime', '1', '1000000000'], ['reseed', 'abc'], ['reseed', 'zz']]) {
      expect(spawnSync(helper, args).status, args.join(' ')).toBe(2);
    }
  });

  it('answers one line per request in serve mode, and ends with its input', () => {
    const input = ['reseed zz', '', 'settime 1 x', 'nonsense', `reseed ${'ab'.repeat(600)}`, 'x'.repeat(3000)].join('\n') + '\n';
    const res = spawnSync(helper, ['serve'], { input, encoding: 'utf8', timeout: 5000 });
    expect(res.status).toBe(0);
    expect(res.stdout.trim().split('\n')).toEqual([
      'error: reseed failed (code 2)',
      'error: settime failed (code 2)',
      'error: nonsense failed (code 2)',
      'error: reseed failed (code 2)',
      'error: line too long',
    ]);
  });
});
