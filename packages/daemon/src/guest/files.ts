// Small filesystem helpers for building artefacts: every artefact is written
// under a temporary name and renamed into place, so a crash mid-build never
// leaves a half-written file that a later run would take as good.
import fs from 'node:fs';
import path from 'node:path';
import { isPinned } from './cache-pins.js';

/** The name tempSibling gives a temp beside its target: `.<target>.tmp-<pid>-<ms>`. */
const TEMP_NAME = /^\..+\.tmp-(\d+)(?:-\d+)?$/;

export function tempSibling(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.tmp-${process.pid}-${Date.now()}`);
}

/** Writes `data` to `target` atomically (temp file, fsync, rename). */
export function writeFileAtomic(target: string, data: string | Buffer, mode = 0o644): void {
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const temp = tempSibling(target);
  const fd = fs.openSync(temp, 'w', mode);
  try {
    fs.writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(temp, target);
}

/** Moves a finished temp file or folder into place, replacing what was there. */
export function commitPath(temp: string, target: string): void {
  fs.rmSync(target, { recursive: true, force: true });
  fs.renameSync(temp, target);
}

/** Total bytes of regular files below `dir` (symlinks not followed). */
export function treeBytes(dir: string): number {
  let total = 0;
  const walk = (d: string) => {
    for (const entry of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, entry.name);
      if (entry.isDirectory()) walk(p);
      else if (entry.isFile()) total += fs.lstatSync(p).size;
    }
  };
  walk(dir);
  return total;
}

/** Artefacts another checkout on the host may still be using are kept this long after their last use. */
const SIBLING_GRACE_MS = 24 * 60 * 60 * 1000;
/** However recently used, no more than this many old artefacts of one kind are kept. */
const MAX_KEPT_SIBLINGS = 4;

/** A temp untouched this long whose pid is gone is abandoned: no build takes an hour (and a pid of another namespace may look gone). */
const ABANDONED_TEMP_MS = 60 * 60 * 1000;

/** Whether a temp name's writer has exited: a build that crashed or was killed left it. */
function writerGone(name: string): boolean {
  const pid = TEMP_NAME.exec(name)?.[1];
  if (pid === undefined) return false;
  try {
    process.kill(Number(pid), 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/**
 * Marks `keep` as just used and removes its older siblings (the names
 * `isSibling` accepts, other versions of the same artefact): those unused for a
 * day, and any beyond the few most recently used. The cache is shared by every
 * checkout and daemon on the host, so an artefact that differs from ours may be
 * another checkout's current one: removing it at once would break that one.
 * A sibling a paused sandbox or a snapshot still needs is pinned (cache-pins.ts) and stays.
 * Temps whose writer is gone and that were not touched for an hour go too.
 */
export function pruneSiblings(dir: string, isSibling: (name: string) => boolean, keep: string, now = Date.now()): void {
  if (!fs.existsSync(dir)) return;
  const keepPath = path.join(dir, keep);
  if (fs.existsSync(keepPath)) fs.utimesSync(keepPath, new Date(now), new Date(now));
  const names = fs.readdirSync(dir);
  const others = names
    .filter((name) => isSibling(name) && name !== keep)
    .map((name) => ({ name, usedAt: fs.statSync(path.join(dir, name)).mtimeMs }))
    .sort((a, b) => b.usedAt - a.usedAt);
  others.forEach(({ name, usedAt }, index) => {
    if ((index >= MAX_KEPT_SIBLINGS || now - usedAt > SIBLING_GRACE_MS) && !isPinned(path.join(dir, name)))
      fs.rmSync(path.join(dir, name), { recursive: true, force: true });
  });
  for (const name of names) {
    if (writerGone(name) && now - fs.statSync(path.join(dir, name)).mtimeMs > ABANDONED_TEMP_MS)
      fs.rmSync(path.join(dir, name), { recursive: true, force: true });
  }
}

/** Disk space a file takes (sparse files count only what is allocated); 0 when missing. */
export function diskBytes(file: string): number {
  try {
    return fs.statSync(file).blocks * 512;
  } catch {
    return 0;
  }
}
