// A template removed while its warm snapshot is being made: what that work
// finds (a failure here, as when the removal took the template's disk) is not
// recorded against the name, which a new template may take. No VM: the
// template's disk is missing, so the preparation fails before it would boot one.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../config.js';
import { silentLogger } from '../log.js';
import { Store } from '../store/store.js';
import { WarmSnapshots } from './warm-snapshots.js';

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
});
