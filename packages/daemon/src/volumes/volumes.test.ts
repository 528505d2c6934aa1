import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../config.js';
import { CapsuleError } from '../errors.js';
import { silentLogger } from '../log.js';
import { Store } from '../store/store.js';
import { Volumes } from './volumes.js';

const MIB = 1024 * 1024;

/** The block count and size of the ext4 filesystem in `file`, as e2fsprogs reads it (no mount). */
function filesystemBytes(file: string): number {
  const header = execFileSync('dumpe2fs', ['-h', file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const blocks = Number(/^Block count:\s+(\d+)/m.exec(header)?.[1]);
  const blockSize = Number(/^Block size:\s+(\d+)/m.exec(header)?.[1]);
  return blocks * blockSize;
}

async function codeOf(work: Promise<unknown>): Promise<string | undefined> {
  try {
    await work;
    return undefined;
  } catch (err) {
    return err instanceof CapsuleError ? err.code : `not a CapsuleError: ${String(err)}`;
  }
}

describe('volumes on disk (real mkfs.ext4, e2fsck and resize2fs; no VM)', () => {
  let work: string;
  let store: Store;
  let volumes: Volumes;
  beforeEach(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-volumes-unit-'));
    store = await Store.open(':memory:');
    volumes = new Volumes(store, { ...loadConfig({ CAPSULE_STATE_DIR: work }), diskReserveMiB: 0 }, silentLogger);
  });
  afterEach(async () => {
    await store.close();
    fs.rmSync(work, { recursive: true, force: true });
  });
  const file = (name: string) => path.join(work, 'volumes', `${name}.ext4`);

  it('makes a sparse ext4 file of the size asked, and lists it', async () => {
    const volume = await volumes.create('data', '128M');
    expect(volume).toMatchObject({ name: 'data', sizeBytes: 128 * MIB, attachments: [] });
    expect(fs.statSync(file('data')).size).toBe(128 * MIB);
    expect(filesystemBytes(file('data'))).toBe(128 * MIB);
    expect(volume.diskBytes).toBeLessThan(16 * MIB);
    expect((await volumes.list()).map((v) => v.name)).toEqual(['data']);
    expect(await codeOf(volumes.create('data', '128M'))).toBe('name_taken');
  });

  it('sweeps what a create cut short by a crash left, and removes volumes with their file', async () => {
    fs.mkdirSync(path.join(work, 'volumes'));
    fs.writeFileSync(`${file('data')}.tmp-999999`, 'half a filesystem');
    await volumes.create('data', '64M');
    expect(fs.readdirSync(path.join(work, 'volumes'))).toEqual(['data.ext4']);
    await volumes.remove('data');
    expect(fs.existsSync(file('data'))).toBe(false);
    expect(await codeOf(volumes.describe('data'))).toBe('volume_not_found');
    expect(await codeOf(volumes.remove('data'))).toBe('volume_not_found');
  });

  it('grows the file and its filesystem, and never shrinks', async () => {
    await volumes.create('data', '64M');
    expect((await volumes.resize('data', '256M')).sizeBytes).toBe(256 * MIB);
    expect(filesystemBytes(file('data'))).toBe(256 * MIB);
    // Clean after the resize: e2fsck -n throws on any problem it finds.
    execFileSync('e2fsck', ['-f', '-n', file('data')], { stdio: 'ignore' });
    expect(await codeOf(volumes.resize('data', '128M'))).toBe('invalid_argument');
    expect(await codeOf(volumes.resize('nope', '1G'))).toBe('volume_not_found');
  });

  it('snapshots a volume and restores the snapshot as a new volume, byte for byte, the source going on unchanged', async () => {
    await volumes.create('data', '64M');
    const source = path.join(work, 'greeting');
    // Files written into the filesystem with debugfs, as a guest would write them (no mount).
    const put = (volume: string, text: string) => {
      fs.writeFileSync(source, text);
      execFileSync('debugfs', ['-w', '-R', `write ${source} greeting`, file(volume)], { stdio: 'ignore' });
    };
    const read = (image: string) =>
      execFileSync('debugfs', ['-R', 'cat greeting', image], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const sha = (image: string) => createHash('sha256').update(fs.readFileSync(image)).digest('hex');
    put('data', 'before\n');
    const before = sha(file('data'));
    const snapshot = await volumes.snapshot('data', 'first');
    expect(snapshot).toMatchObject({ volume: 'data', name: 'first', sizeBytes: 64 * MIB });
    expect(snapshot.diskBytes).toBeLessThan(16 * MIB);
    expect(await codeOf(volumes.snapshot('data', 'first'))).toBe('name_taken');
    expect((await volumes.snapshot('data', undefined)).name).toMatch(/^\d{8}-\d{6}$/);
    execFileSync('debugfs', ['-w', '-R', 'rm greeting', file('data')], { stdio: 'ignore' });
    put('data', 'after\n');

    const restored = await volumes.restore('data', 'first', 'copy');
    expect(restored).toMatchObject({ name: 'copy', sizeBytes: 64 * MIB, attachments: [] });
    expect(sha(file('copy'))).toBe(before);
    expect(read(file('copy'))).toBe('before\n');
    expect(read(file('data'))).toBe('after\n');
    expect(await codeOf(volumes.restore('data', 'first', 'copy'))).toBe('name_taken');
    expect(await codeOf(volumes.restore('data', 'nope', 'other'))).toBe('not_found');
    expect((await volumes.snapshots('data')).map((s) => s.name)).toContain('first');

    await volumes.removeSnapshot('data', 'first');
    expect((await volumes.snapshots('data')).map((s) => s.name)).not.toContain('first');
    // A volume's removal takes its snapshots; volumes restored from them stay.
    await volumes.remove('data');
    expect(fs.existsSync(path.join(work, 'volumes', 'snapshots', 'data'))).toBe(false);
    expect(read(file('copy'))).toBe('before\n');
  });

  it('refuses names that are no file name of its own, before touching the disk', async () => {
    expect(await codeOf(volumes.create('../escape', '64M'))).toBe('invalid_argument');
    expect(await codeOf(volumes.describe('../escape'))).toBe('invalid_argument');
    expect(fs.existsSync(path.join(work, 'escape.ext4'))).toBe(false);
  });
});
