// Where `capsule cp` reads or writes: `ID:/path` (or `NAME:path`) in a
// sandbox, anything else on this host. As with `docker cp`, a path that
// starts with `/`, `.` or `~` is always local, so `./a:b` is a local file.
// Pure; it never touches either filesystem.
import { posix } from 'node:path';

export type CopyLocation = { kind: 'sandbox'; sandbox: string; path: string } | { kind: 'local'; path: string };

const SANDBOX_PREFIX = /^([A-Za-z0-9][A-Za-z0-9_.-]{0,127}):(.*)$/s;

export function parseCopyLocation(argument: string): CopyLocation {
  if (/^[/.~]/.test(argument)) return { kind: 'local', path: argument };
  const match = SANDBOX_PREFIX.exec(argument);
  if (!match) return { kind: 'local', path: argument };
  return { kind: 'sandbox', sandbox: match[1] ?? '', path: match[2] ?? '' };
}

/**
 * Where an entry of a downloaded tree goes: `entryPath` (as the guest
 * reported it) relative to `remoteRoot`, under `localRoot`. Undefined for a
 * path outside the root, which only a lying guest sends: nothing it says may
 * place a file outside the destination.
 */
export function localPathFor(
  remoteRoot: string,
  entryPath: string,
  localRoot: string,
  join: (...parts: string[]) => string,
): string | undefined {
  const prefix = remoteRoot.endsWith('/') ? remoteRoot : `${remoteRoot}/`;
  if (!entryPath.startsWith(prefix)) return undefined;
  const relative = entryPath.slice(prefix.length);
  const parts = relative.split('/');
  if (relative === '' || parts.some((part) => part === '' || part === '.' || part === '..' || part.includes('\0'))) return undefined;
  return join(localRoot, ...parts);
}

/**
 * What a downloaded link points to. The agent reports a link's target
 * resolved (absolute); one inside the copied tree is made relative again, so
 * the copy's links point into the copy.
 */
export function linkTargetFor(resolvedTarget: string, linkPath: string, remoteRoot: string): string {
  const inTree = resolvedTarget === remoteRoot || resolvedTarget.startsWith(remoteRoot.endsWith('/') ? remoteRoot : `${remoteRoot}/`);
  return inTree ? posix.relative(posix.dirname(linkPath), resolvedTarget) || '.' : resolvedTarget;
}
