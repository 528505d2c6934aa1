// The start-up sweep of the shared cache keeps what this daemon's own records
// use even when it holds no link to it: a state folder on another filesystem
// than the cache cannot hold by hard link (guest/cache-holds.ts), and its
// templates' root filesystems must not go a day later.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../config.js';
import { silentLogger } from '../log.js';
import { Store } from '../store/store.js';
import { insertTemplate } from '../store/templates.js';
import { ImageService } from './image-service.js';

const DAY_MS = 24 * 60 * 60 * 1000;

describe('ImageService start-up sweep', () => {
  let root: string;
  let store: Store;

  beforeEach(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-image-sweep-'));
    store = await Store.open(path.join(root, 'capsule.db'));
  });
  afterEach(async () => {
    vi.useRealTimers();
    await store.close();
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('keeps an unheld root filesystem a recorded template uses, and removes one nothing uses, after the grace', async () => {
    const config = loadConfig({ CAPSULE_STATE_DIR: path.join(root, 'state'), CAPSULE_CACHE_DIR: path.join(root, 'cache') });
    const rootfsDir = path.join(config.cacheDir, 'images', 'rootfs');
    fs.mkdirSync(rootfsDir, { recursive: true });
    // Neither has a hold: as when the state folder is on another filesystem than the cache.
    const used = path.join(rootfsDir, 'build-0000000000000001.ext4');
    const unused = path.join(rootfsDir, 'build-0000000000000002.ext4');
    for (const file of [used, unused]) fs.writeFileSync(file, 'ext4');
    await insertTemplate(store, {
      name: 'built',
      kernel: '/k',
      initramfs: '/i',
      kit: '/kit',
      rootfs: used,
      default_vcpus: 1,
      default_memory_mib: 256,
      created_at: new Date().toISOString(),
    });
    // A day and more later (a file's ctime cannot be set back).
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + DAY_MS + 60_000);
    await new ImageService(store, config, silentLogger).start();
    expect(fs.existsSync(used)).toBe(true);
    expect(fs.existsSync(unused)).toBe(false);
  });
});
