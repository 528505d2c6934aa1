// Paths on the daemon's host that a request names (an archive to import, a
// build folder): only local clients (the unix socket) may name them, and they
// are resolved through their links. Never reads or writes what they name.
import fs from 'node:fs';
import { CapsuleError } from '../errors.js';

/**
 * A folder or file on the daemon's host, named by a local client (the unix
 * socket): resolved through its links, so that what is read is what the
 * operator sees. TCP clients never name host paths (hostPathRefusal).
 */
export function realHostPath(named: string): string {
  try {
    return fs.realpathSync(named);
  } catch {
    throw new CapsuleError('invalid_argument', `${named.slice(0, 500)}: no such file or folder on the daemon's host`);
  }
}

export function hostPathRefusal(what: string, hint: string): CapsuleError {
  return new CapsuleError(
    'permission_denied',
    `${what} names a path on the daemon's host, which only local clients (the unix socket) may do`,
    { hint },
  );
}
