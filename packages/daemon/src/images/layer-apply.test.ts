import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { makeTar, type TestTarEntry } from '../../test/oci/tar-writer.js';
import { LayerApplier } from './layer-apply.js';

let dir: string;
let root: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-layer-'));
  root = path.join(dir, 'root');
  fs.mkdirSync(root);
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

async function applyLayers(...layers: TestTarEntry[][]): Promise<LayerApplier> {
  const applier = new LayerApplier(root);
  for (const layer of layers) await applier.apply(Readable.from([makeTar(layer)]));
  return applier;
}

const read = (p: string) => fs.readFileSync(path.join(root, p), 'utf8');
const exists = (p: string) => {
  try {
    fs.lstatSync(path.join(root, p));
    return true;
  } catch {
    return false;
  }
};

describe('LayerApplier', () => {
  it('applies files, folders, modes and owners, and later layers win', async () => {
    await applyLayers(
      [
        { path: 'etc/', type: 'directory' },
        { path: 'etc/motd', content: 'one' },
        { path: 'usr/bin/tool', content: '#!/bin/sh\n', mode: 0o4755, uid: 1000, gid: 1001 },
      ],
      [{ path: './etc/motd', content: 'two', mode: 0o600 }],
    );
    expect(read('etc/motd')).toBe('two');
    expect(fs.statSync(path.join(root, 'etc/motd')).mode & 0o7777).toBe(0o600);
    const tool = fs.statSync(path.join(root, 'usr/bin/tool'));
    expect(tool.mode & 0o7777).toBe(0o4755);
    if (process.getuid?.() === 0) expect([tool.uid, tool.gid]).toEqual([1000, 1001]);
  });

  it('removes whited-out files and clears opaque folders of lower layers only', async () => {
    await applyLayers(
      [
        { path: 'a/keep', content: 'k' },
        { path: 'a/gone', content: 'g' },
        { path: 'b/old1', content: '1' },
        { path: 'b/sub/old2', content: '2' },
      ],
      [{ path: 'a/.wh.gone' }, { path: 'b/', type: 'directory' }, { path: 'b/.wh..wh..opq' }, { path: 'b/new', content: 'n' }],
    );
    expect(exists('a/keep')).toBe(true);
    expect(exists('a/gone')).toBe(false);
    expect(exists('a/.wh.gone')).toBe(false);
    expect(fs.readdirSync(path.join(root, 'b'))).toEqual(['new']);
  });

  it('makes hard links, keeps symlinks verbatim and creates FIFOs and device nodes', async () => {
    await applyLayers([
      { path: 'bin/busybox', content: 'BB', mode: 0o755 },
      { path: 'bin/ls', type: 'hardlink', linkpath: 'bin/busybox' },
      { path: 'bin/sh', type: 'symlink', linkpath: '/bin/busybox' },
      { path: 'run/pipe', type: 'fifo', mode: 0o644 },
      { path: 'dev/null', type: 'char', devmajor: 1, devminor: 3, mode: 0o666 },
    ]);
    expect(fs.statSync(path.join(root, 'bin/ls')).ino).toBe(fs.statSync(path.join(root, 'bin/busybox')).ino);
    expect(fs.readlinkSync(path.join(root, 'bin/sh'))).toBe('/bin/busybox');
    expect(fs.lstatSync(path.join(root, 'run/pipe')).isFIFO()).toBe(true);
    const dev = fs.lstatSync(path.join(root, 'dev/null'));
    expect(dev.isCharacterDevice()).toBe(true);
    expect(dev.mode & 0o777).toBe(0o666);
  });

  it('refuses an entry whose name climbs out of the root, writing nothing outside', async () => {
    await expect(applyLayers([{ path: '../evil', content: 'x' }])).rejects.toMatchObject({ code: 'image_invalid' });
    await expect(applyLayers([{ path: 'a/../../evil', content: 'x' }])).rejects.toThrow(/outside the image's root/);
    await expect(applyLayers([{ path: 'x/.wh...', content: '' }])).rejects.toThrow(/outside/);
    expect(fs.readdirSync(dir)).toEqual(['root']);
  });

  it('never follows a symlink out of the root: absolute and relative links resolve inside it', async () => {
    const outside = path.join(dir, 'outside');
    fs.mkdirSync(outside);
    await applyLayers(
      [
        { path: 'abs', type: 'symlink', linkpath: outside },
        { path: 'rel', type: 'symlink', linkpath: '../../../../outside' },
        { path: 'lib', type: 'symlink', linkpath: 'usr/lib' },
      ],
      [
        { path: 'abs/written-through-absolute', content: 'a' },
        { path: 'rel/written-through-relative', content: 'r' },
        { path: 'lib/libc.so', content: 'c' },
      ],
    );
    expect(fs.readdirSync(outside)).toEqual([]);
    // Inside the root, `/tmp/...` and `../../outside` are folders of the image.
    expect(read(path.join(outside, 'written-through-absolute'))).toBe('a');
    expect(read('outside/written-through-relative')).toBe('r');
    expect(read('usr/lib/libc.so')).toBe('c');
  });

  it('a file entry replaces a symlink instead of writing through it', async () => {
    const victim = path.join(dir, 'victim');
    fs.writeFileSync(victim, 'safe');
    await applyLayers(
      [{ path: 'etc/passwd', type: 'symlink', linkpath: victim }],
      [{ path: 'etc/passwd', content: 'root:x:0:0::/root:/bin/sh\n' }],
    );
    expect(fs.readFileSync(victim, 'utf8')).toBe('safe');
    expect(read('etc/passwd')).toMatch(/^root:/);
  });

  it('keeps extended attributes', async () => {
    const applier = await applyLayers([{ path: 'bin/ping', content: 'p', xattrs: { 'user.capsule': 'yes' } }]);
    expect(applier.stats.xattrsSkipped).toBe(0);
    expect(execFileSync('getfattr', ['--only-values', '-n', 'user.capsule', path.join(root, 'bin/ping')], { encoding: 'utf8' })).toBe(
      'yes',
    );
  });

  it('reports an entry the file system refuses (a hard link to a folder) as an invalid image', async () => {
    await expect(
      applyLayers([
        { path: 'dir/', type: 'directory' },
        { path: 'link', type: 'hardlink', linkpath: 'dir' },
      ]),
    ).rejects.toMatchObject({
      code: 'image_invalid',
      message: expect.stringContaining('"link" cannot be applied'),
    });
  });

  it('reports a corrupt archive as invalid input', async () => {
    const tar = makeTar([{ path: 'a', content: 'x' }]);
    tar[0] = 0x41; // breaks the header checksum
    await expect(new LayerApplier(root).apply(Readable.from([tar]))).rejects.toThrow(/checksum/);
  });
});
