import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { makeTar, type TestTarEntry } from '../../test/oci/tar-writer.js';
import { readContextCapsulefile, unpackBuildContext } from './build-context-upload.js';

describe('unpackBuildContext: an uploaded build context, bounded and kept inside its folder', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
  });
  const unpack = async (entries: TestTarEntry[], limits = { maxBytes: 1024, maxEntries: 10 }) => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-context-test-'));
    dirs.push(root);
    const dir = path.join(root, 'context');
    fs.mkdirSync(dir);
    await unpackBuildContext(Readable.from([makeTar(entries)]), dir, limits);
    return { root, dir };
  };

  it('unpacks plain files and folders, modes without set-id bits', async () => {
    const { dir } = await unpack([
      { path: './Capsulefile', content: 'FROM base\n' },
      { path: 'app/', type: 'directory' },
      { path: 'app/run.sh', content: 'echo hi\n', mode: 0o4755 },
    ]);
    expect(readContextCapsulefile(dir, 'Capsulefile')).toBe('FROM base\n');
    expect(fs.readFileSync(path.join(dir, 'app/run.sh'), 'utf8')).toBe('echo hi\n');
    expect(fs.statSync(path.join(dir, 'app/run.sh')).mode & 0o7777).toBe(0o755);
  });

  it('refuses more entries or bytes than its limits, a fifo, a device and a path given twice, as invalid_argument', async () => {
    const many = Array.from({ length: 11 }, (_, i) => ({ path: `f${i}`, content: 'x' }));
    for (const entries of [
      many,
      [{ path: 'big', content: Buffer.alloc(2048) }],
      [{ path: 'p', type: 'fifo' }],
      [{ path: 'd', type: 'char' }],
      [
        { path: 'a', content: '1' },
        { path: 'a', content: '2' },
      ],
    ] as TestTarEntry[][]) {
      await expect(unpack(entries)).rejects.toMatchObject({ code: 'invalid_argument' });
    }
  });

  it('refuses a truncated archive as invalid_argument, not image_invalid', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-context-test-'));
    dirs.push(dir);
    const tar = makeTar([{ path: 'a', content: 'x'.repeat(600) }]);
    await expect(unpackBuildContext(Readable.from([tar.subarray(0, 700)]), dir)).rejects.toMatchObject({ code: 'invalid_argument' });
  });

  it('finds no Capsulefile outside the context or that is not a plain file', async () => {
    const { dir } = await unpack([{ path: 'sub', type: 'directory' }]);
    for (const name of ['Capsulefile', '../Capsulefile', '/etc/passwd', 'sub'])
      expect(() => readContextCapsulefile(dir, name), name).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
  });
});
