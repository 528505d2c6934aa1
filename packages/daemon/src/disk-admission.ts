// Disk admission: an operation that writes to the state or cache folder
// (create, pause, fork, snapshot, pull, build) is refused before it writes
// anything when free disk there is below the reserve the daemon keeps
// (CAPSULE_DISK_RESERVE_MIB). Only reads the file systems' counters.
import fs from 'node:fs';
import path from 'node:path';
import type { DaemonConfig } from './config.js';
import { CapsuleError } from './errors.js';

/** MiB that an unprivileged writer may still use on the file system holding `dir` (or its nearest existing parent). */
export function freeDiskMiB(dir: string): number {
  let existing = path.resolve(dir);
  while (!fs.existsSync(existing) && path.dirname(existing) !== existing) existing = path.dirname(existing);
  const stats = fs.statfsSync(existing);
  return Math.floor((stats.bavail * stats.bsize) / 1048576);
}

/** Refuses `operation` with `insufficient_storage` (507) when any of `dirs` has less free disk than the reserve. */
export function assertDiskRoom(config: Pick<DaemonConfig, 'diskReserveMiB'>, operation: string, dirs: string[]): void {
  if (config.diskReserveMiB === 0) return;
  for (const dir of dirs) {
    const freeMiB = freeDiskMiB(dir);
    if (freeMiB < config.diskReserveMiB) {
      throw new CapsuleError(
        'insufficient_storage',
        `cannot ${operation}: ${dir} has ${freeMiB} MiB of disk free, less than the ${config.diskReserveMiB} MiB capsuled keeps free`,
        {
          hint: 'free disk space there (remove sandboxes, `capsule image prune`), or lower CAPSULE_DISK_RESERVE_MIB (0 turns the check off)',
        },
      );
    }
  }
}
