// `GET /v1/system/df`: how much disk the daemon's data takes, by kind, measured
// by walking the folders each kind lives in (allocated blocks, so sparse disks
// count what they hold; a file linked from two places counts once). It only
// reads: it never follows a symlink out of a folder and never changes a file.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { DiskUsage } from '@capsule/protocol';
import type { DaemonConfig } from './config.js';

/** One kind of data: the folders it lives in and how many there are. */
export interface DiskUsageSource {
  dirs: readonly string[];
  count: () => Promise<number>;
}

export type DiskUsageSources = Record<Exclude<keyof DiskUsage, 'totalBytes'>, DiskUsageSource>;

/** The allocated bytes under `dir` (0 when it does not exist); `seen` holds the inodes already counted. */
export async function folderDiskBytes(dir: string, seen: Set<string>): Promise<number> {
  let entries: import('node:fs').Dirent[];
  try {
    entries = await fs.readdir(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  let total = 0;
  for (const entry of entries) {
    const file = path.join(dir, entry.name);
    const stat = await fs.lstat(file).catch(() => undefined);
    if (stat === undefined) continue; // removed while we walked
    const inode = `${stat.dev}:${stat.ino}`;
    if (seen.has(inode)) continue;
    seen.add(inode);
    total += stat.blocks * 512;
    if (stat.isDirectory()) total += await folderDiskBytes(file, seen);
  }
  return total;
}

export async function measureDiskUsage(sources: DiskUsageSources): Promise<DiskUsage> {
  const seen = new Set<string>();
  const usage = { totalBytes: 0 } as DiskUsage;
  // One after another, so that a file linked from two kinds' folders is counted for the first.
  for (const [kind, source] of Object.entries(sources) as [keyof DiskUsageSources, DiskUsageSource][]) {
    let diskBytes = 0;
    for (const dir of source.dirs) diskBytes += await folderDiskBytes(dir, seen);
    usage[kind] = { count: await source.count(), diskBytes };
    usage.totalBytes += diskBytes;
  }
  return usage;
}

/** Where each kind lives in the state and cache folders; `count` says how many of each the daemon holds. */
export function daemonDiskUsageSources(
  { stateDir, cacheDir }: Pick<DaemonConfig, 'stateDir' | 'cacheDir'>,
  count: Record<'sandboxes' | 'templates' | 'images' | 'volumes', () => Promise<number>>,
): DiskUsageSources {
  const buildSteps = path.join(cacheDir, 'images', 'build-steps');
  // e2b's uploaded COPY files (api/e2b-build-files.ts) count with the steps: both are build inputs kept to be used again.
  const buildUploads = path.join(cacheDir, 'images', 'build-uploads');
  const entriesOf = async (dir: string) => (await fs.readdir(dir).catch(() => [])).length;
  return {
    sandboxes: { dirs: ['sandboxes', 'disks', 'forks'].map((dir) => path.join(stateDir, dir)), count: count.sandboxes },
    templates: { dirs: [path.join(stateDir, 'templates')], count: count.templates },
    images: {
      dirs: [path.join(cacheDir, 'images', 'blobs'), path.join(cacheDir, 'images', 'rootfs'), path.join(stateDir, 'images')],
      count: count.images,
    },
    volumes: { dirs: [path.join(stateDir, 'volumes')], count: count.volumes },
    buildCache: { dirs: [buildSteps, buildUploads], count: async () => (await entriesOf(buildSteps)) + (await entriesOf(buildUploads)) },
  };
}
