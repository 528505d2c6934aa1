// The attack of issue 14, item 1: a layer gives a file extended attributes
// (a file capability, trusted.* or user.*) and then, later in the layer or in
// a later one, turns a folder on that file's path into a symlink to a host
// folder. Whatever the order of entries, nothing outside the staging folder
// may change, in bytes or in xattrs. Real file system, real setfattr.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { makeTar, type TestTarEntry } from '../../test/oci/tar-writer.js';
import { LayerApplier } from './layer-apply.js';

const isRoot = process.getuid?.() === 0;

/** A v2 file capability granting cap_net_raw, effective: what `setcap cap_net_raw+ep` writes. */
const CAP_NET_RAW = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
const HOSTILE_XATTRS = { 'user.pwned': 'yes', ...(isRoot ? { 'security.capability': CAP_NET_RAW, 'trusted.pwned': 'yes' } : {}) };

// Fixed for the file, since the hostile layers below name the host folder in their symlinks.
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-xattr-escape-'));
const root = path.join(dir, 'staging', 'root');
const decoy = path.join(dir, 'host');

beforeEach(() => {
  for (const child of fs.readdirSync(dir)) fs.rmSync(path.join(dir, child), { recursive: true, force: true });
  fs.mkdirSync(root, { recursive: true });
  // The "host folder" the image aims at: files named like the layer's, so a path-based write would land.
  fs.mkdirSync(path.join(decoy, 'sub'), { recursive: true });
  for (const name of ['f', 'g', 'h', 'sub/f']) fs.writeFileSync(path.join(decoy, name), `host file ${name}\n`, { mode: 0o644 });
  execFileSync('setfattr', ['-n', 'user.host', '-v', 'original', path.join(decoy, 'f')]);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Everything observable about a tree, without following symlinks: types, modes, owners, bytes and every xattr. */
function snapshot(top: string): Record<string, string> {
  const out: Record<string, string> = {};
  const visit = (file: string) => {
    const st = fs.lstatSync(file);
    const xattrs = execFileSync('getfattr', ['-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', file], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l !== '' && !l.startsWith('#'))
      .sort()
      .join(' ');
    const content = st.isFile()
      ? createHash('sha256').update(fs.readFileSync(file)).digest('hex')
      : st.isSymbolicLink()
        ? fs.readlinkSync(file)
        : '';
    out[path.relative(top, file) || '.'] = `${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.size} ${st.mtimeMs} ${content} [${xattrs}]`;
    if (st.isDirectory()) for (const child of fs.readdirSync(file).sort()) visit(path.join(file, child));
  };
  visit(top);
  return out;
}

async function applyLayers(layers: TestTarEntry[][]): Promise<LayerApplier> {
  const applier = new LayerApplier(root);
  for (const layer of layers) await applier.apply(Readable.from([makeTar(layer)]));
  return applier;
}

const fileWithXattrs = (p: string): TestTarEntry => ({ path: p, content: 'image file\n', mode: 0o755, xattrs: HOSTILE_XATTRS });
const toHost = (p: string): TestTarEntry => ({ path: p, type: 'symlink', linkpath: decoy });

const attacks: Record<string, TestTarEntry[][]> = {
  'a later entry of the same layer turns the parent into a symlink to the host': [
    [{ path: 'a/', type: 'directory' }, fileWithXattrs('a/f'), toHost('a')],
  ],
  'a later layer turns the parent into a symlink to the host': [[fileWithXattrs('a/f'), fileWithXattrs('a/sub/f')], [toHost('a')]],
  'a hard link to a symlink replaces the parent': [
    [toHost('s'), fileWithXattrs('a/f'), { path: 'a/h', type: 'hardlink', linkpath: 'a/f', xattrs: HOSTILE_XATTRS }],
    [{ path: '.wh.a' }, { path: 'a', type: 'hardlink', linkpath: 's' }],
  ],
  'the folder is made opaque, then replaced by a symlink': [
    [fileWithXattrs('a/f')],
    [{ path: 'a/.wh..wh..opq' }, fileWithXattrs('a/g'), toHost('a')],
  ],
  'the folder is whited out, then replaced by a symlink': [
    [fileWithXattrs('a/f'), { path: 'a/', type: 'directory', xattrs: { 'user.dir': 'yes' } }],
    [{ path: '.wh.a' }, toHost('a')],
  ],
  'entries written through symlinked parent folders (absolute and relative)': [
    [
      toHost('abs'),
      { path: 'rel', type: 'symlink', linkpath: `../../../../../../..${decoy}` },
      { path: 'nest', type: 'symlink', linkpath: 'abs/sub' },
    ],
    [
      fileWithXattrs('abs/f'),
      fileWithXattrs('rel/g'),
      fileWithXattrs('nest/f'),
      { path: 'abs/sub/', type: 'directory', xattrs: { 'user.dir': 'yes' } },
    ],
  ],
};

describe('an image cannot change host files through extended attributes', () => {
  for (const [name, layers] of Object.entries(attacks)) {
    it(`${name}: every file outside the staging folder stays byte- and xattr-identical`, async () => {
      const before = snapshot(decoy);
      const outsideBefore = fs.readdirSync(dir).sort();
      await applyLayers(layers).catch(() => undefined); // refusing the layer is fine; touching the host is not
      expect(snapshot(decoy)).toEqual(before);
      expect(fs.readdirSync(dir).sort()).toEqual(outsideBefore);
    });
  }

  it('keeps user.* and (as root) security.capability on regular files, and refuses every other namespace', async () => {
    const applier = await applyLayers([
      [
        {
          path: 'bin/ping',
          content: 'p',
          mode: 0o755,
          xattrs: { 'user.keep': 'yes', ...HOSTILE_XATTRS, 'security.selinux': 'system_u:object_r:bin_t:s0' },
        },
        { path: 'etc/', type: 'directory', xattrs: { 'user.folder': 'yes', ...(isRoot ? { 'security.capability': CAP_NET_RAW } : {}) } },
      ],
    ]);
    const names = (p: string) =>
      execFileSync('getfattr', ['-h', '-d', '-m', '-', '--absolute-names', path.join(root, p)], { encoding: 'utf8' })
        .split('\n')
        .filter((l) => l.includes('='))
        .map((l) => l.split('=')[0])
        .sort();
    expect(names('bin/ping')).toEqual(isRoot ? ['security.capability', 'user.keep', 'user.pwned'] : ['user.keep', 'user.pwned']);
    expect(names('etc')).toEqual(['user.folder']);
    expect(applier.stats.xattrsSkipped).toBe(isRoot ? 3 : 1); // trusted.pwned and security.selinux on the file, the capability on the folder
    if (isRoot) expect(execFileSync('getcap', [path.join(root, 'bin/ping')], { encoding: 'utf8' })).toMatch(/cap_net_raw[=+]ep/);
  });
});
