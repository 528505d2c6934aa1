// Loading a template's warm snapshot prunes that template's snapshots of older
// inputs, as the shared cache's other artefacts are (guest/files.ts), and
// leaves pinned ones and other templates' alone. No VM: folders stand in.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isSnapshotOf, loadWarmSnapshot, snapshotsDir, warmSnapshotKey, type WarmSnapshotInputs } from './warm-snapshot.js';

describe('warm snapshots in the shared cache', () => {
  let cache: string;
  let inputs: WarmSnapshotInputs;
  const days = (n: number) => new Date(Date.now() - n * 24 * 60 * 60 * 1000);
  /** A finished snapshot folder, last used `age` ago. */
  const snapshotFolder = (name: string, age: Date) => {
    const dir = path.join(snapshotsDir(cache), name);
    fs.mkdirSync(dir, { recursive: true });
    for (const file of ['memory', 'state', 'disk.qcow2']) fs.writeFileSync(path.join(dir, file), file);
    fs.writeFileSync(path.join(dir, 'snapshot.json'), JSON.stringify({ template: name.split('-')[0], vcpus: 1, memoryMiB: 512 }));
    fs.utimesSync(dir, age, age);
    return dir;
  };

  beforeEach(() => {
    cache = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-warm-'));
    const artefact = (name: string) => {
      fs.writeFileSync(path.join(cache, name), name);
      return path.join(cache, name);
    };
    const template = {
      name: 'base',
      kernel: artefact('vmlinuz'),
      initramfs: artefact('initramfs'),
      kit: artefact('kit'),
      rootfs: artefact('rootfs'),
      default_vcpus: 1,
      default_memory_mib: 512,
      created_at: '',
    };
    inputs = { template, accel: 'tcg', qemuVersion: '7.2.0', tscKhz: 2_000_000, service: undefined };
  });
  afterEach(() => fs.rmSync(cache, { recursive: true, force: true }));

  it("tells a template's snapshot folders from another template's", () => {
    expect(isSnapshotOf('base', 'base-0123456789abcdef')).toBe(true);
    expect(isSnapshotOf('base', 'base-x-0123456789abcdef')).toBe(false);
    expect(isSnapshotOf('base', '.base-0123456789abcdef.tmp-1-2')).toBe(false);
    expect(isSnapshotOf('base-x', 'base-x-0123456789abcdef')).toBe(true);
  });

  it('removes the old snapshots of the template nobody pins, keeps pinned ones and other templates', () => {
    const current = snapshotFolder(`base-${warmSnapshotKey(inputs)}`, days(3));
    const stale = snapshotFolder('base-00000000000000aa', days(2));
    const pinned = snapshotFolder('base-00000000000000bb', days(2));
    fs.linkSync(path.join(pinned, 'disk.qcow2'), path.join(cache, 'a-paused-sandbox-pin'));
    const other = snapshotFolder('base-x-00000000000000cc', days(2));

    const snapshot = loadWarmSnapshot(cache, inputs);
    expect(snapshot?.dir).toBe(current);
    expect(fs.existsSync(stale)).toBe(false);
    expect(fs.existsSync(pinned)).toBe(true);
    expect(fs.existsSync(other)).toBe(true);
    // Marked as just used, so other checkouts sharing the cache keep it.
    expect(Date.now() - fs.statSync(current).mtimeMs).toBeLessThan(60_000);
  });

  it('finds nothing, and prunes nothing, when the current snapshot is missing or unfinished', () => {
    const stale = snapshotFolder('base-00000000000000aa', days(2));
    expect(loadWarmSnapshot(cache, inputs)).toBeUndefined();
    const current = snapshotFolder(`base-${warmSnapshotKey(inputs)}`, days(0));
    fs.rmSync(path.join(current, 'state'));
    expect(loadWarmSnapshot(cache, inputs)).toBeUndefined();
    expect(fs.existsSync(stale)).toBe(true);
  });
});
