import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { writeCpio } from './cpio.js';

describe('writeCpio', () => {
  it('writes an archive that busybox cpio unpacks to the same tree', () => {
    const archive = writeCpio([
      { kind: 'dir', path: 'bin', mode: 0o755 },
      { kind: 'file', path: 'init', mode: 0o755, data: Buffer.from('#!/bin/sh\necho hi\n') },
      { kind: 'file', path: 'bin/odd', mode: 0o600, data: Buffer.from('abc') },
      { kind: 'symlink', path: 'bin/sh', target: 'busybox' },
    ]);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cpio-test-'));
    try {
      execFileSync('busybox', ['cpio', '-i', '-d'], { cwd: dir, input: archive, stdio: ['pipe', 'ignore', 'ignore'] });
      expect(fs.readFileSync(path.join(dir, 'init'), 'utf8')).toBe('#!/bin/sh\necho hi\n');
      expect(fs.statSync(path.join(dir, 'init')).mode & 0o777).toBe(0o755);
      expect(fs.statSync(path.join(dir, 'bin/odd')).mode & 0o777).toBe(0o600);
      expect(fs.readlinkSync(path.join(dir, 'bin/sh'))).toBe('busybox');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('is reproducible whatever the order of its entries', () => {
    const a = { kind: 'file' as const, path: 'a', mode: 0o644, data: Buffer.from('1') };
    const b = { kind: 'file' as const, path: 'b', mode: 0o644, data: Buffer.from('22') };
    expect(writeCpio([a, b]).equals(writeCpio([b, a]))).toBe(true);
    expect(writeCpio([a, b]).length % 4).toBe(0);
  });
});
