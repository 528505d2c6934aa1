import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { makeTar, type TestTarEntry } from '../../test/oci/tar-writer.js';
import { CapsuleError } from '../errors.js';
import { E2bBuildFiles } from './e2b-build-files.js';

const HASH = 'c'.repeat(64);
const MAX_IDLE_MS = 60_000;

describe('E2bBuildFiles: uploaded COPY files, hostile input kept in bounds and inside its folder', () => {
  let root: string;
  let files: E2bBuildFiles;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-e2b-files-'));
    fs.mkdirSync(path.join(root, 'tmp'));
    files = new E2bBuildFiles(path.join(root, 'uploads'), () => fs.mkdtempSync(path.join(root, 'tmp', 'upload-')), MAX_IDLE_MS, {
      maxBytes: 4096,
      maxEntries: 10,
    });
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  const refusal = async (body: Buffer | AsyncIterable<Buffer>, hash = HASH): Promise<string> => {
    const err = await files.receive(hash, Buffer.isBuffer(body) ? Readable.from([body]) : body).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CapsuleError);
    expect((err as CapsuleError).code).toBe('invalid_argument');
    // Nothing is left behind, and a refused upload never counts as present.
    expect(fs.readdirSync(path.join(root, 'tmp'))).toEqual([]);
    expect(fs.existsSync(path.join(root, 'evil'))).toBe(false);
    if (/^[0-9a-f]{64}$/.test(hash)) expect(files.has(hash)).toBe(false);
    return (err as CapsuleError).message;
  };

  it('unpacks a gzipped tar (the SDK’s default) and a plain one under their hashes', async () => {
    const entries: TestTarEntry[] = [
      { path: 'app', type: 'directory' },
      { path: 'app/server.py', content: 'print(1)\n' },
    ];
    expect(files.has(HASH)).toBe(false);
    await files.receive(HASH, Readable.from([gzipSync(makeTar(entries))]));
    expect(files.has(HASH)).toBe(true);
    expect(fs.readFileSync(path.join(root, 'uploads', HASH, 'app/server.py'), 'utf8')).toBe('print(1)\n');
    const plain = 'd'.repeat(64);
    await files.receive(plain, Readable.from([makeTar([{ path: 'a.txt', content: 'a' }])]));
    expect(fs.readFileSync(path.join(root, 'uploads', plain, 'a.txt'), 'utf8')).toBe('a');
    // A second upload of a hash present is dropped: the first one stays.
    await files.receive(plain, Readable.from([makeTar([{ path: 'a.txt', content: 'b' }])]));
    expect(fs.readFileSync(path.join(root, 'uploads', plain, 'a.txt'), 'utf8')).toBe('a');
  });

  it('refuses a hash that is not 64 hex digits, which would be a path', async () => {
    for (const hash of ['../evil', 'C'.repeat(64), '', `${'c'.repeat(63)}/`]) {
      expect(() => files.folderOf(hash)).toThrow(/is not a files hash/);
      expect(await refusal(makeTar([{ path: 'a', content: 'a' }]), hash)).toMatch(/is not a files hash/);
    }
  });

  it('refuses entries climbing out of the folder, absolute paths and links, gzipped or not', async () => {
    const attacks: TestTarEntry[][] = [
      [{ path: '../evil', content: 'x' }],
      [{ path: 'app/../../evil', content: 'x' }],
      [{ path: '/tmp/evil', content: 'x' }],
      [{ path: 'link', type: 'symlink', linkpath: '../../evil' }],
      [
        { path: 'link', type: 'symlink', linkpath: '/etc' },
        { path: 'link/passwd', content: 'x' },
      ],
      [{ path: 'hard', type: 'hardlink', linkpath: '/etc/passwd' }],
    ];
    for (const entries of attacks) {
      expect(await refusal(makeTar(entries))).toMatch(/outside the context|absolute path|links, devices and fifos are refused/);
      expect(await refusal(gzipSync(makeTar(entries)))).toMatch(/outside the context|absolute path|links, devices and fifos are refused/);
    }
  });

  it('refuses more files or bytes than its limits, and a gzip bomb before it is inflated whole', async () => {
    expect(await refusal(makeTar(Array.from({ length: 11 }, (_, i) => ({ path: `f${i}`, content: 'x' }))))).toMatch(/more than 10 entries/);
    expect(await refusal(gzipSync(makeTar([{ path: 'big', content: Buffer.alloc(8192) }])))).toMatch(/larger than/);
    // 16 MiB of zeros in ~16 KiB, under the upload's own cap: after a tar's end marker the zeros are read, and must be counted.
    const bomb = gzipSync(Buffer.concat([makeTar([{ path: 'a', content: 'a' }]), Buffer.alloc(16 * 1024 * 1024)]), { level: 9 });
    expect(bomb.length).toBeLessThan(4096 + 10 * 1536);
    expect(await refusal(bomb)).toMatch(/larger than/);
    expect(await refusal(Buffer.alloc(64 * 1024, 1))).toMatch(/malformed|larger than/);
  });

  it('refuses a body that is not gzip past its magic bytes, or ends in the middle', async () => {
    expect(await refusal(Buffer.from([0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8]))).toMatch(/not a valid gzip stream/);
    const tar = makeTar([{ path: 'a.txt', content: Buffer.alloc(2000, 1) }]);
    expect(await refusal(tar.subarray(0, 1024))).toMatch(/end of/);
  });

  it('prunes uploads unused for the max idle time, never one a build under way holds, and counts a present answer as a use', async () => {
    const other = 'd'.repeat(64);
    for (const hash of [HASH, other]) await files.receive(hash, Readable.from([makeTar([{ path: 'a.txt', content: hash }])]));
    const old = (hash: string) => {
      const past = new Date(Date.now() - 2 * MAX_IDLE_MS);
      fs.utimesSync(path.join(root, 'uploads', hash), past, past);
    };
    // Just uploaded: kept.
    expect(files.prune()).toBe(0);

    old(HASH);
    old(other);
    const release = files.hold([HASH, HASH, 'not-a-hash']);
    expect(files.prune()).toBe(1);
    expect([files.has(HASH), fs.existsSync(path.join(root, 'uploads', other))]).toEqual([true, false]);

    // The build's end is the upload's last use: kept for the idle time from then, then pruned.
    old(HASH);
    release();
    expect(files.has(HASH)).toBe(true);
    expect(files.prune(Date.now() + MAX_IDLE_MS)).toBe(1);
    expect(files.has(HASH)).toBe(false);
  });
});
