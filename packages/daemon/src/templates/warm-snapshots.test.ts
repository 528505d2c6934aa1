// A template removed while its warm snapshot is being made: what that work
// finds is not recorded against the name, which a new template may take, and a
// template built again meanwhile shares the build under way instead of booting
// a second VM in its runtime folder. No VM: the build is a stand-in.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../config.js';
import { silentLogger } from '../log.js';
import { Store } from '../store/store.js';
import { buildWarmSnapshot, loadWarmSnapshot, type WarmSnapshot } from './warm-snapshot.js';
import { WarmSnapshots } from './warm-snapshots.js';

vi.mock('./warm-snapshot.js', async (importOriginal) => {
  const original = await importOriginal<typeof import('./warm-snapshot.js')>();
  return { ...original, buildWarmSnapshot: vi.fn(), loadWarmSnapshot: vi.fn(original.loadWarmSnapshot) };
});

describe('warm snapshots of removed templates', () => {
  let root: string;
  let store: Store;
  let warm: WarmSnapshots;

  beforeEach(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-warm-snapshots-'));
    store = await Store.open(path.join(root, 'capsule.db'));
    const config = loadConfig({
      CAPSULE_STATE_DIR: path.join(root, 'state'),
      CAPSULE_RUNTIME_DIR: path.join(root, 'run'),
      CAPSULE_CACHE_DIR: path.join(root, 'cache'),
      CAPSULE_WARM_POOL_SIZE: '0',
    });
    warm = new WarmSnapshots(store, config, { accel: 'tcg', reason: 'test' }, silentLogger, '7.2.0', () => {
      throw new Error('no pool in this test');
    });
  });
  afterEach(async () => {
    vi.clearAllMocks();
    await store.close();
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('does not record the outcome of a preparation whose template was removed meanwhile', async () => {
    const template = {
      name: 'gone',
      kernel: path.join(root, 'vmlinuz'),
      initramfs: path.join(root, 'initramfs'),
      kit: path.join(root, 'kit'),
      rootfs: path.join(root, 'removed-with-the-template.ext4'),
      default_vcpus: 1,
      default_memory_mib: 256,
      created_at: '',
    };
    const preparing = warm.prepareWarmSnapshot(template);
    await warm.forgetTemplate('gone');
    await preparing;
    expect(warm.warmSnapshotInfo('gone')).toEqual({ state: 'building' });
    expect(warm.usableSnapshot('gone', 1, 256)).toBeUndefined();
  });

  it('builds the snapshot of a template removed and built again meanwhile once, and records it for the new one', async () => {
    const file = (name: string) => {
      fs.writeFileSync(path.join(root, name), name);
      return path.join(root, name);
    };
    const template = {
      name: 'again',
      kernel: file('vmlinuz'),
      initramfs: file('initramfs'),
      kit: file('kit'),
      rootfs: file('build-0000000000000001.ext4'),
      default_vcpus: 1,
      default_memory_mib: 256,
      created_at: '',
    };
    const builds: ((snapshot: WarmSnapshot) => void)[] = [];
    vi.mocked(buildWarmSnapshot).mockImplementation(() => new Promise((resolve) => builds.push(resolve)));
    const first = warm.prepareWarmSnapshot(template);
    await vi.waitFor(() => expect(buildWarmSnapshot).toHaveBeenCalledTimes(1));
    await warm.forgetTemplate('again');
    const second = warm.prepareWarmSnapshot({ ...template, created_at: 'later' });
    // The second preparation found no snapshot in the cache: it then builds one, or joins the build under way.
    await vi.waitFor(() => expect(loadWarmSnapshot).toHaveBeenCalledTimes(2));
    const snapshot = { dir: path.join(root, 'snapshot'), vcpus: 1, memoryMiB: 256 } as WarmSnapshot;
    for (const finish of builds) finish(snapshot);
    await Promise.all([first, second]);
    expect(buildWarmSnapshot).toHaveBeenCalledTimes(1);
    expect(warm.warmSnapshotInfo('again')).toEqual({ state: 'ready', dir: snapshot.dir });
  });
});
