import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { daemonDiskUsageSources, folderDiskBytes, measureDiskUsage } from './disk-usage.js';

let root: string | undefined;
afterEach(() => {
  if (root) fs.rmSync(root, { recursive: true, force: true });
  root = undefined;
});

describe('disk usage', () => {
  it('counts allocated blocks, a hard-linked file once, and no symlinked folder', async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-df-'));
    const a = path.join(root, 'a');
    const b = path.join(root, 'b');
    fs.mkdirSync(path.join(a, 'sub'), { recursive: true });
    fs.mkdirSync(b);
    fs.writeFileSync(path.join(a, 'sub', 'data'), Buffer.alloc(256 * 1024, 1));
    fs.linkSync(path.join(a, 'sub', 'data'), path.join(b, 'same-data'));
    fs.symlinkSync(a, path.join(b, 'link-to-a'));
    // A sparse file of 1 GiB holds nothing.
    fs.closeSync(fs.openSync(path.join(b, 'sparse'), 'w'));
    fs.truncateSync(path.join(b, 'sparse'), 1024 ** 3);

    const usage = await measureDiskUsage({
      sandboxes: { dirs: [a], count: async () => 2 },
      templates: { dirs: [b], count: async () => 1 },
      images: { dirs: [path.join(root, 'missing')], count: async () => 0 },
      volumes: { dirs: [], count: async () => 0 },
      buildCache: { dirs: [], count: async () => 0 },
    });
    expect(usage.sandboxes.count).toBe(2);
    expect(usage.sandboxes.diskBytes).toBeGreaterThanOrEqual(256 * 1024);
    // b holds the link to a's file (counted for a), a symlink and a sparse file: a few blocks at most.
    expect(usage.templates.diskBytes).toBeLessThan(64 * 1024);
    expect(usage.images).toEqual({ count: 0, diskBytes: 0 });
    expect(usage.totalBytes).toBe(usage.sandboxes.diskBytes + usage.templates.diskBytes);
    expect(await folderDiskBytes(b, new Set())).toBeGreaterThanOrEqual(256 * 1024);
  });

  it("counts e2b's uploaded build files in the build cache, beside the cached steps", async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-df-'));
    const cacheDir = path.join(root, 'cache');
    fs.mkdirSync(path.join(cacheDir, 'images', 'build-steps', 'step-1'), { recursive: true });
    fs.mkdirSync(path.join(cacheDir, 'images', 'build-uploads', 'c'.repeat(64)), { recursive: true });
    fs.writeFileSync(path.join(cacheDir, 'images', 'build-uploads', 'c'.repeat(64), 'site.tar'), Buffer.alloc(128 * 1024, 1));
    const none = async () => 0;
    const sources = daemonDiskUsageSources(
      { stateDir: path.join(root, 'state'), cacheDir },
      { sandboxes: none, templates: none, images: none, volumes: none },
    );
    const usage = await measureDiskUsage(sources);
    expect(usage.buildCache.count).toBe(2);
    expect(usage.buildCache.diskBytes).toBeGreaterThanOrEqual(128 * 1024);
  });
});
