// Who an operation runs as: the Unix user named by the request (envd's
// `Authorization: Basic base64(user:)` convention) resolved from /etc/passwd.
// Looks at passwd on every call, because users can be added inside a running
// sandbox (re-reading it only when it changed: parsing it per exec is a
// measurable share of an exec under TCG); must never trust a name it could not resolve.

import { readFileSync, statSync } from 'node:fs';
import { Code, ConnectError } from '@connectrpc/connect';

export interface UnixUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

export const PASSWD_PATH = '/etc/passwd';

export function parsePasswd(text: string): UnixUser[] {
  const users: UnixUser[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const [name, , uid, gid, , home, shell] = line.split(':');
    const uidNumber = Number(uid);
    const gidNumber = Number(gid);
    if (!name || !Number.isInteger(uidNumber) || !Number.isInteger(gidNumber) || uid === '' || gid === '') continue;
    users.push({ name, uid: uidNumber, gid: gidNumber, home: home || '/', shell: shell || '/bin/sh' });
  }
  return users;
}

/** The last passwd read, with what identifies that version of the file. */
let parsedPasswd: { path: string; version: string; users: UnixUser[] } | undefined;

export function lookupUser(name: string, passwdPath = PASSWD_PATH): UnixUser | undefined {
  let users: UnixUser[];
  try {
    const stat = statSync(passwdPath, { bigint: true });
    // Any edit, rename over it or truncation changes one of these.
    const version = `${stat.ino}:${stat.size}:${stat.mtimeNs}:${stat.ctimeNs}`;
    if (parsedPasswd?.path === passwdPath && parsedPasswd.version === version) {
      users = parsedPasswd.users;
    } else {
      users = parsePasswd(readFileSync(passwdPath, 'utf8'));
      // File times are coarse (a clock tick): a file changed this recently may
      // change again without its version changing, so it is not kept ("racy git").
      const settled = Date.now() - Number(stat.mtimeNs / 1_000_000n) > 2000;
      parsedPasswd = settled ? { path: passwdPath, version, users } : undefined;
    }
  } catch {
    return undefined;
  }
  return users.find((user) => user.name === name);
}

/**
 * The user name in a `Basic base64(user:password)` header, or undefined when
 * there is no usable header (envd then falls back to the default user too).
 */
export function usernameFromAuthorization(header: string | null | undefined): string | undefined {
  if (!header) return undefined;
  const match = /^basic\s+([A-Za-z0-9+/=_-]+)\s*$/i.exec(header);
  if (!match?.[1]) return undefined;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  const name = colon === -1 ? decoded : decoded.slice(0, colon);
  return name === '' ? undefined : name;
}

/** The user a request runs as; errors are Connect errors the client sees. */
export function resolveRequestUser(authorization: string | null, defaultUser: string, passwdPath = PASSWD_PATH): UnixUser {
  const requested = usernameFromAuthorization(authorization);
  const name = requested ?? defaultUser;
  const user = lookupUser(name, passwdPath);
  if (!user) {
    throw new ConnectError(
      requested === undefined ? `invalid default user: '${name}'` : `invalid username: '${name}'`,
      Code.Unauthenticated,
    );
  }
  return user;
}
