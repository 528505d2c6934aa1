// The blob and root filesystem cache is shared by every daemon on the host, so
// one daemon must never delete what another still uses. Each daemon holds the
// cache files it uses by a hard link in its own state folder; a cache file
// whose only link left is its own is used by nobody and may go.
import fs from 'node:fs';
import path from 'node:path';

/** Links `cacheFile` into `holdDir` (by default under its own name); a no-op when already held. */
export function holdFile(cacheFile: string, holdDir: string, name = path.basename(cacheFile)): void {
  const hold = path.join(holdDir, name);
  fs.mkdirSync(holdDir, { recursive: true, mode: 0o700 });
  try {
    fs.linkSync(cacheFile, hold);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // EXDEV: state and cache on different filesystems; the file is then kept only by the
    // records of the daemon that sweeps (images/image-service.ts), and by the sweep's grace.
    if (code !== 'EEXIST' && code !== 'EXDEV') throw err;
  }
}

/** Drops this daemon's hold and deletes the cache file if no daemon holds it any more. */
export function releaseFile(cacheFile: string, holdDir: string): boolean {
  const hold = path.join(holdDir, path.basename(cacheFile));
  if (!fs.existsSync(hold)) return false; // never held (EXDEV): another daemon may use it
  fs.rmSync(hold, { force: true });
  try {
    if (fs.statSync(cacheFile).nlink === 1) {
      fs.rmSync(cacheFile, { force: true });
      return true;
    }
  } catch {
    // Already gone.
  }
  return false;
}

/**
 * Deletes cache files below `dir` that no daemon holds and that nobody has
 * linked or unlinked for `graceMs` (ctime changes with the link count): left
 * by daemons whose state folder went away. The grace covers pulls in progress,
 * whose blobs are held only once the whole image is in; files that are held
 * from the moment they exist (forks' shared disks) need none.
 */
export function sweepUnheld(dir: string, graceMs?: number, include: (file: string) => boolean = () => true): number {
  let removed = 0;
  const walk = (d: string) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      const file = path.join(d, entry.name);
      if (entry.isDirectory()) walk(file);
      else if (entry.isFile() && include(file)) {
        try {
          const stat = fs.statSync(file);
          if (stat.nlink === 1 && (graceMs === undefined || Date.now() - stat.ctimeMs > graceMs)) {
            fs.rmSync(file, { force: true });
            removed++;
          }
        } catch {
          // Gone meanwhile.
        }
      }
    }
  };
  walk(dir);
  return removed;
}
