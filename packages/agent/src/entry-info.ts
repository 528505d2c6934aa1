// One filesystem entry as envd reports it in EntryInfo: lstat'ed (a symlink
// is described as itself, with its resolved target and the target's type and
// permission bits), Go's `ls -l`-style permission string, owner and group
// names. Reads only; must never follow a symlink for anything but its target.

import type { BigIntStats } from 'node:fs';
import { lstat, realpath, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { FileType, type EntryInfoSchema } from '@capsule/protocol/agent';
import type { AccountNames } from './account-names.js';

export type EntryInfoInit = MessageInitShape<typeof EntryInfoSchema>;

const S_IFMT = 0o170000;
const S_IFSOCK = 0o140000;
const S_IFLNK = 0o120000;
const S_IFREG = 0o100000;
const S_IFBLK = 0o060000;
const S_IFDIR = 0o040000;
const S_IFCHR = 0o020000;
const S_IFIFO = 0o010000;
const S_ISUID = 0o4000;
const S_ISGID = 0o2000;
const S_ISVTX = 0o1000;

/**
 * Go's os.FileMode.String() for a Unix st_mode, which is what envd sends as
 * `permissions`: type letters (d, L, D, p, S, u, g, c, t in Go's order, "-"
 * when none), then rwx triplets. A symlink is "Lrwxrwxrwx", a sticky
 * directory "dtrwxrwxrwx", a setuid program "urwxr-xr-x".
 */
export function goFileModeString(mode: number): string {
  const type = mode & S_IFMT;
  let letters = '';
  if (type === S_IFDIR) letters += 'd';
  if (type === S_IFLNK) letters += 'L';
  if (type === S_IFBLK || type === S_IFCHR) letters += 'D';
  if (type === S_IFIFO) letters += 'p';
  if (type === S_IFSOCK) letters += 'S';
  if (mode & S_ISUID) letters += 'u';
  if (mode & S_ISGID) letters += 'g';
  if (type === S_IFCHR) letters += 'c';
  if (mode & S_ISVTX) letters += 't';
  let bits = '';
  for (let shift = 8; shift >= 0; shift -= 1) bits += mode & (1 << shift) ? 'rwx'[(8 - shift) % 3] : '-';
  return (letters || '-') + bits;
}

/** envd's FileType: only regular files and directories have one. */
export function fileTypeOfMode(mode: number): FileType {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return FileType.FILE;
    case S_IFDIR:
      return FileType.DIRECTORY;
    default:
      return FileType.UNSPECIFIED;
  }
}

function timestampOf(nanoseconds: bigint): { seconds: bigint; nanos: number } | undefined {
  if (nanoseconds === 0n) return undefined; // Go's zero time: envd leaves the field unset
  return { seconds: nanoseconds / 1_000_000_000n, nanos: Number(nanoseconds % 1_000_000_000n) };
}

/** EntryInfo from an lstat result; `path` is reported as given. */
export async function entryInfoFromStats(path: string, stats: BigIntStats, names: AccountNames): Promise<EntryInfoInit> {
  const mode = Number(stats.mode);
  let type = fileTypeOfMode(mode);
  let permissionBits = mode & 0o777;
  let symlinkTarget: string | undefined;
  const isSymlink = (mode & S_IFMT) === S_IFLNK;
  if (isSymlink) {
    // Like Go's EvalSymlinks: the fully resolved absolute path; the link's own
    // path when it dangles or loops. Type and mode are the target's.
    symlinkTarget = await realpath(path).catch(() => path);
    try {
      const target = await stat(path, { bigint: true });
      type = fileTypeOfMode(Number(target.mode));
      permissionBits = Number(target.mode) & 0o777;
    } catch {
      type = FileType.UNSPECIFIED;
      permissionBits = 0;
    }
  }
  return {
    name: path === '/' ? '/' : basename(path),
    type,
    path,
    size: stats.size,
    mode: permissionBits,
    permissions: goFileModeString(mode),
    owner: names.owner(Number(stats.uid)),
    group: names.group(Number(stats.gid)),
    modifiedTime: timestampOf(stats.mtimeNs),
    symlinkTarget,
    isSymlink,
  };
}

/** EntryInfo for a path; rejects with the lstat error (ENOENT when it is gone). */
export async function readEntryInfo(path: string, names: AccountNames): Promise<EntryInfoInit> {
  return entryInfoFromStats(path, await lstat(path, { bigint: true }), names);
}
