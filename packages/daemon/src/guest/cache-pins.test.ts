import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sweepUnheld } from './cache-holds.js';
import { backingChain, isPinned, pinSharedFiles } from './cache-pins.js';
import { pruneSiblings } from './files.js';

// Real images made by qemu-img, as the daemon makes them.
const qcow2Over = (image: string, backing: string, format: 'raw' | 'qcow2') =>
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', format, '-b', backing, image]);

describe('cache pins', () => {
  let root: string;
  let cache: string;
  let sandbox: string;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-pins-'));
    cache = path.join(root, 'cache');
    sandbox = path.join(root, 'state', 'sb_1');
    for (const dir of [path.join(cache, 'rootfs'), path.join(cache, 'snapshots', 'base-1'), path.join(cache, 'kit'), sandbox])
      fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(cache, 'rootfs', 'base-old.ext4'), Buffer.alloc(4096));
    fs.writeFileSync(path.join(cache, 'kit', 'kit-old.ext4'), 'kit');
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('follows a qcow2 backing chain, relative names from the naming image', () => {
    const disk = path.join(cache, 'snapshots', 'base-1', 'disk.qcow2');
    qcow2Over(disk, '../../rootfs/base-old.ext4', 'raw');
    const overlay = path.join(sandbox, 'overlay.qcow2');
    qcow2Over(overlay, disk, 'qcow2');
    expect(backingChain(overlay)).toEqual([disk, path.join(cache, 'rootfs', 'base-old.ext4')]);
    expect(backingChain(path.join(cache, 'rootfs', 'base-old.ext4'))).toEqual([]);
    expect(backingChain(path.join(root, 'missing.qcow2'))).toEqual([]);
  });

  it('stops at a bounded depth on a chain that loops', () => {
    const image = path.join(root, 'loop.qcow2');
    qcow2Over(image, path.join(cache, 'rootfs', 'base-old.ext4'), 'raw');
    // Rewrite the backing name (same length) so that the image names itself.
    const header = fs.readFileSync(image);
    const offset = Number(header.readBigUInt64BE(8));
    const size = header.readUInt32BE(16);
    const self = Buffer.from(`./${'/'.repeat(size - 2 - 'loop.qcow2'.length)}loop.qcow2`);
    fs.writeFileSync(image, Buffer.concat([header.subarray(0, offset), self, header.subarray(offset + size)]));
    expect(backingChain(image).length).toBe(16);
  });

  it('keeps pinned artefacts from the pruner until the pins go', () => {
    const disk = path.join(cache, 'snapshots', 'base-1', 'disk.qcow2');
    qcow2Over(disk, path.join(cache, 'rootfs', 'base-old.ext4'), 'raw');
    const overlay = path.join(sandbox, 'overlay.qcow2');
    qcow2Over(overlay, disk, 'qcow2');
    const pins = path.join(sandbox, 'pins');
    const kit = path.join(cache, 'kit', 'kit-old.ext4');
    const files = [kit, ...backingChain(overlay), overlay];
    pinSharedFiles(files, [cache], pins);
    pinSharedFiles(files, [cache], pins); // again: a resume launches the same VM
    // The sandbox's own overlay is not the cache's: not pinned.
    expect(fs.readdirSync(pins).sort()).toEqual([
      'cache__kit__kit-old.ext4',
      'cache__rootfs__base-old.ext4',
      'cache__snapshots__base-1__disk.qcow2',
    ]);
    expect(isPinned(kit)).toBe(true);
    expect(isPinned(path.join(cache, 'snapshots', 'base-1'))).toBe(true);

    const twoDaysLater = Date.now() + 48 * 60 * 60 * 1000;
    pruneSiblings(path.join(cache, 'kit'), (name) => name.startsWith('kit-'), 'kit-new.ext4', twoDaysLater);
    pruneSiblings(path.join(cache, 'rootfs'), (name) => name.startsWith('base-'), 'base-new.ext4', twoDaysLater);
    expect(fs.existsSync(kit)).toBe(true);
    expect(fs.existsSync(path.join(cache, 'rootfs', 'base-old.ext4'))).toBe(true);

    fs.rmSync(pins, { recursive: true });
    pruneSiblings(path.join(cache, 'kit'), (name) => name.startsWith('kit-'), 'kit-new.ext4', twoDaysLater);
    pruneSiblings(path.join(cache, 'rootfs'), (name) => name.startsWith('base-'), 'base-new.ext4', twoDaysLater);
    expect(fs.existsSync(kit)).toBe(false);
    expect(fs.existsSync(path.join(cache, 'rootfs', 'base-old.ext4'))).toBe(false);
  });

  it('removes shared files once nobody pins them', () => {
    const shared = path.join(root, 'state', 'disks');
    fs.mkdirSync(shared);
    for (const name of ['a.qcow2', 'b.qcow2']) fs.writeFileSync(path.join(shared, name), name);
    pinSharedFiles([path.join(shared, 'a.qcow2')], [cache, shared], path.join(sandbox, 'pins'));
    expect(fs.readdirSync(path.join(sandbox, 'pins'))).toEqual(['disks__a.qcow2']);
    expect(sweepUnheld(shared)).toBe(1);
    expect(fs.readdirSync(shared)).toEqual(['a.qcow2']);
    fs.rmSync(path.join(sandbox, 'pins'), { recursive: true });
    expect(sweepUnheld(shared)).toBe(1);
    expect(fs.readdirSync(shared)).toEqual([]);
    expect(sweepUnheld(path.join(root, 'missing'))).toBe(0);
  });
});
