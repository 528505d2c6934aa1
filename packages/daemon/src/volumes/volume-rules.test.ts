import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { limits, parseSizeMiB } from '@capsule/protocol';
import { describe, expect, it } from 'vitest';
import { CapsuleError } from '../errors.js';
import { conflictingHolder } from './volumes.js';
import { assertVolumeName, checkVolumeMounts, giveFreshFoldersCommand, normaliseMountPath, volumeSizeMiB } from './volume-rules.js';

/** The error code `work` throws, or undefined when it does not throw. */
function codeOf(work: () => unknown): string | undefined {
  try {
    work();
    return undefined;
  } catch (err) {
    return err instanceof CapsuleError ? err.code : `not a CapsuleError: ${String(err)}`;
  }
}

describe('volume names', () => {
  it('takes DNS labels and refuses what could escape the volumes folder or read ambiguously', () => {
    for (const name of ['data', 'a', 'pg-16', `a${'b'.repeat(62)}`]) expect(codeOf(() => assertVolumeName(name))).toBeUndefined();
    for (const name of ['', 'Data', '-data', 'data-', '../x', 'a/b', 'a.b', 'a_b', 'a:b', `a${'b'.repeat(63)}`])
      expect(
        codeOf(() => assertVolumeName(name)),
        name,
      ).toBe('invalid_argument');
  });
});

describe('volume sizes', () => {
  it('reads units as powers of 1024 and a bare number as MiB', () => {
    expect(parseSizeMiB('10G')).toBe(10240);
    expect(parseSizeMiB('1.5GiB')).toBe(1536);
    expect(parseSizeMiB('512m')).toBe(512);
    expect(parseSizeMiB('300')).toBe(300);
    expect(parseSizeMiB('1T')).toBe(1024 * 1024);
    expect(parseSizeMiB('1.1M')).toBeUndefined();
    expect(parseSizeMiB('10 GB x')).toBeUndefined();
    expect(parseSizeMiB('-1G')).toBeUndefined();
  });

  it('gives the default when none is asked for and refuses sizes outside the limits', () => {
    expect(volumeSizeMiB(undefined)).toBe(limits.defaultVolumeMiB);
    expect(volumeSizeMiB('64M')).toBe(64);
    expect(codeOf(() => volumeSizeMiB('63M'))).toBe('invalid_argument');
    expect(codeOf(() => volumeSizeMiB('5T'))).toBe('invalid_argument');
    expect(codeOf(() => volumeSizeMiB('lots'))).toBe('invalid_argument');
  });
});

describe('volume mount paths', () => {
  it('makes paths canonical', () => {
    expect(normaliseMountPath('/data/')).toBe('/data');
    expect(normaliseMountPath('/srv//app/./db/../db')).toBe('/srv/app/db');
  });

  it('refuses relative paths, the root, guest-owned folders and characters the kernel command line or -v would split at', () => {
    for (const mount of [
      'data',
      '/',
      '//',
      '/..',
      '/proc',
      '/sys/x',
      '/dev',
      '/run/a',
      '/tmp',
      '/opt/capsule/bin',
      '/a b',
      '/a,b',
      '/a:b',
      `/${'a'.repeat(limits.maxMountPathLength)}`,
    ])
      expect(
        codeOf(() => normaliseMountPath(mount)),
        mount,
      ).toBe('invalid_argument');
    expect(normaliseMountPath('/opt/capsules')).toBe('/opt/capsules');
  });

  it('refuses a volume twice, a path twice, or one mount inside another', () => {
    expect(
      checkVolumeMounts([
        { name: 'a', mount: '/a/' },
        { name: 'b', mount: '/b', readOnly: true },
      ]),
    ).toEqual([
      { name: 'a', mount: '/a', readOnly: false },
      { name: 'b', mount: '/b', readOnly: true },
    ]);
    expect(
      codeOf(() =>
        checkVolumeMounts([
          { name: 'a', mount: '/a' },
          { name: 'a', mount: '/b' },
        ]),
      ),
    ).toBe('invalid_argument');
    expect(
      codeOf(() =>
        checkVolumeMounts([
          { name: 'a', mount: '/a' },
          { name: 'b', mount: '/a/' },
        ]),
      ),
    ).toBe('invalid_argument');
    expect(
      codeOf(() =>
        checkVolumeMounts([
          { name: 'a', mount: '/a/b' },
          { name: 'b', mount: '/a' },
        ]),
      ),
    ).toBe('invalid_argument');
    expect(
      checkVolumeMounts([
        { name: 'a', mount: '/ab' },
        { name: 'b', mount: '/a' },
      ]),
    ).toHaveLength(2);
    const tooMany = Array.from({ length: limits.maxVolumesPerSandbox + 1 }, (_, i) => ({ name: `v${i}`, mount: `/v${i}` }));
    expect(codeOf(() => checkVolumeMounts(tooMany))).toBe('invalid_argument');
  });
});

describe('who may attach a volume', () => {
  const reader = { read_only: 1 };
  const writer = { read_only: 0 };

  it('lets readers share, and keeps a writer alone', () => {
    expect(conflictingHolder(true, [])).toBeUndefined();
    expect(conflictingHolder(true, [reader, reader])).toBeUndefined();
    expect(conflictingHolder(false, [])).toBeUndefined();
    expect(conflictingHolder(false, [reader])).toBe(reader);
    expect(conflictingHolder(true, [reader, writer])).toBe(writer);
  });
});

describe('giving a new volume to the default user', () => {
  it('asks nothing of a root user or of read-only sandboxes', () => {
    expect(giveFreshFoldersCommand(undefined, ['/data'])).toBeUndefined();
    expect(giveFreshFoldersCommand('root', ['/data'])).toBeUndefined();
    expect(giveFreshFoldersCommand('0:0', ['/data'])).toBeUndefined();
    expect(giveFreshFoldersCommand('app', [])).toBeUndefined();
  });

  it.runIf(process.getuid?.() === 0)(
    'gives only folders that are still root-owned and empty but for lost+found (run here, as root)',
    () => {
      const work = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-volume-owner-'));
      try {
        const fresh = path.join(work, 'fresh');
        const used = path.join(work, 'used');
        const given = path.join(work, 'given');
        for (const dir of [fresh, used, given]) fs.mkdirSync(path.join(dir, 'lost+found'), { recursive: true });
        fs.writeFileSync(path.join(used, 'db'), '');
        fs.chownSync(given, 1234, 1234);
        const cmd = giveFreshFoldersCommand('65534:65534', [fresh, used, given]) ?? [];
        execFileSync(cmd[0] ?? '', cmd.slice(1));
        expect(fs.statSync(fresh)).toMatchObject({ uid: 65534, gid: 65534 });
        expect(fs.statSync(used)).toMatchObject({ uid: 0 });
        expect(fs.statSync(given)).toMatchObject({ uid: 1234 });
      } finally {
        fs.rmSync(work, { recursive: true, force: true });
      }
    },
  );
});
