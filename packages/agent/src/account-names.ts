// Owner and group names for EntryInfo, from /etc/passwd and /etc/group, read
// at most once per request (a ListDir of thousands of entries must not read
// them thousands of times). Like envd, an id without a name is shown as the
// number. Must never throw: a missing file just means numbers.

import { readFileSync } from 'node:fs';
import { parsePasswd, PASSWD_PATH } from './users.js';

export const GROUP_PATH = '/etc/group';

/** gid -> name from /etc/group text (first entry wins, as getgrgid does). */
export function parseGroupNames(text: string): Map<number, string> {
  const names = new Map<number, string>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const [name, , gid] = line.split(':');
    const gidNumber = Number(gid);
    if (!name || gid === '' || !Number.isInteger(gidNumber) || names.has(gidNumber)) continue;
    names.set(gidNumber, name);
  }
  return names;
}

function readOrEmpty(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

export class AccountNames {
  private users: Map<number, string> | undefined;
  private groups: Map<number, string> | undefined;

  constructor(
    private readonly passwdPath = PASSWD_PATH,
    private readonly groupPath = GROUP_PATH,
  ) {}

  owner(uid: number): string {
    this.users ??= new Map(
      parsePasswd(readOrEmpty(this.passwdPath))
        .reverse()
        .map((user) => [user.uid, user.name]),
    );
    return this.users.get(uid) ?? String(uid);
  }

  group(gid: number): string {
    this.groups ??= parseGroupNames(readOrEmpty(this.groupPath));
    return this.groups.get(gid) ?? String(gid);
  }
}
