// Turns a path from a request into an absolute path the way envd does: empty
// means the default workdir (else home), `~` and `~/x` are the user's home,
// anything relative is under the user's home. Pure string work: must never
// touch the filesystem, so callers decide what a missing path means.

import { isAbsolute, join, resolve } from 'node:path';
import type { UnixUser } from './users.js';

/** Linux PATH_MAX: longer paths cannot be opened anyway. */
export const MAX_PATH_BYTES = 4096;

/** A path the request got wrong; each route maps it to its own error (InvalidArgument, HTTP 400). */
export class InvalidPathError extends Error {
  override name = 'InvalidPathError';
}

export function expandAndResolvePath(path: string, user: UnixUser, defaultWorkdir: string | undefined): string {
  if (Buffer.byteLength(path) > MAX_PATH_BYTES) {
    throw new InvalidPathError(`path is longer than ${MAX_PATH_BYTES} bytes`);
  }
  if (path.includes('\0')) throw new InvalidPathError('path must not contain NUL bytes');
  let expanded = path === '' ? (defaultWorkdir ?? '') : path;
  if (expanded === '~' || expanded.startsWith('~/')) expanded = join(user.home, expanded.slice(1));
  else if (expanded.startsWith('~')) {
    throw new InvalidPathError(`failed to expand path '${expanded}' for user '${user.name}': cannot expand user-specific home dir`);
  }
  // resolve() also normalises `a/../b`, as Go's filepath.Abs does for envd.
  return isAbsolute(expanded) ? resolve(expanded) : resolve(user.home, expanded);
}
