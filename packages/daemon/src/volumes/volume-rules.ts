// What makes a volume request acceptable: its name (it becomes a file name),
// its size, and the mount paths of one sandbox's volumes (they travel on the
// guest's kernel command line); and the command that gives a new volume to
// the guest's default user. Pure functions; they never touch the store or a file.
import path from 'node:path';
import { limits, parseSizeMiB, VOLUME_NAME_PATTERN, type VolumeMountRequest } from '@capsule/protocol';
import { CapsuleError } from '../errors.js';

const NAME = new RegExp(VOLUME_NAME_PATTERN);
/** Guest folders the guest's init or the kit mount something of their own on (or over) after the volumes. */
const RESERVED_MOUNTS = ['/proc', '/sys', '/dev', '/run', '/tmp', '/opt/capsule'];
/** No space, comma or colon: the kernel command line splits at spaces, `capsule.volume=` at commas, `-v` at colons. */
const MOUNT_PATH = /^[A-Za-z0-9._@+/-]+$/;

export function assertVolumeName(name: string): void {
  if (!NAME.test(name))
    throw new CapsuleError('invalid_argument', `"${name}" is not a volume name`, {
      hint: 'use up to 63 lower-case letters, digits and `-`, starting and ending with a letter or digit',
    });
}

/** A volume size as given (`10G`, `512M`; undefined: the default) → MiB, within the limits. */
export function volumeSizeMiB(size: string | undefined): number {
  if (size === undefined) return limits.defaultVolumeMiB;
  const mib = parseSizeMiB(size);
  if (mib === undefined)
    throw new CapsuleError('invalid_argument', `"${size}" is not a size in whole MiB`, { hint: 'examples: 512M, 10G, 1.5G' });
  if (mib < limits.minVolumeMiB || mib > limits.maxVolumeMiB)
    throw new CapsuleError(
      'invalid_argument',
      `a volume must be from ${limits.minVolumeMiB} MiB to ${limits.maxVolumeMiB / 1024 ** 2} TiB`,
      {
        hint: `got ${mib} MiB`,
      },
    );
  return mib;
}

/** A mount path made canonical (`/data/`, `/data/./x/..` → `/data`); refused when it is no place a volume may go. */
export function normaliseMountPath(mount: string): string {
  const refuse = (why: string) =>
    new CapsuleError('invalid_argument', `cannot mount a volume at "${mount}": ${why}`, { hint: 'use an absolute path such as /data' });
  if (!mount.startsWith('/')) throw refuse('the path must be absolute');
  if (!MOUNT_PATH.test(mount)) throw refuse('use only letters, digits and . _ @ + - /');
  const normal = path.posix.normalize(mount).replace(/\/+$/, '');
  if (normal === '') throw refuse('it would hide the whole root filesystem');
  if (normal.length > limits.maxMountPathLength) throw refuse(`the path is longer than ${limits.maxMountPathLength} characters`);
  const reserved = RESERVED_MOUNTS.find((folder) => normal === folder || normal.startsWith(`${folder}/`));
  if (reserved) throw refuse(`${reserved} belongs to the guest's own mounts`);
  return normal;
}

/** One sandbox's volume requests, their paths canonical; refuses a volume twice, a path twice, or one path inside another. */
export function checkVolumeMounts(requests: VolumeMountRequest[]): Required<VolumeMountRequest>[] {
  if (requests.length > limits.maxVolumesPerSandbox)
    throw new CapsuleError('invalid_argument', `a sandbox may attach at most ${limits.maxVolumesPerSandbox} volumes`);
  const checked = requests.map((request) => {
    assertVolumeName(request.name);
    return { name: request.name, mount: normaliseMountPath(request.mount), readOnly: request.readOnly ?? false };
  });
  for (const [i, a] of checked.entries()) {
    for (const b of checked.slice(i + 1)) {
      if (a.name === b.name)
        throw new CapsuleError('invalid_argument', `volume "${a.name}" is attached twice`, { hint: 'attach each volume once' });
      if (a.mount === b.mount || b.mount.startsWith(`${a.mount}/`) || a.mount.startsWith(`${b.mount}/`))
        throw new CapsuleError('invalid_argument', `the mounts ${a.mount} and ${b.mount} overlap`, {
          hint: 'mount each volume at its own folder, none inside another',
        });
    }
  }
  return checked;
}

/**
 * The guest command (run as root) that gives each of `mounts` to `user`, only
 * where the folder is still root's and empty but for lost+found: a new
 * volume's root, as mkfs made it. Undefined when there is nothing to give
 * (no read-write mount, or the user is root).
 */
export function giveFreshFoldersCommand(user: string | undefined, mounts: string[]): string[] | undefined {
  if (mounts.length === 0 || user === undefined || user === 'root' || user === '0' || user.startsWith('0:')) return undefined;
  const script =
    'owner=$1; shift; for dir; do [ "$(stat -c %u "$dir")" = 0 ] || continue; ' +
    '[ -z "$(ls -A "$dir" | grep -vx lost+found)" ] || continue; chown "$owner" "$dir" || exit 1; done';
  // `user:` takes the user's login group too; an image's USER may be `uid:gid` already.
  return ['/bin/sh', '-c', script, 'sh', user.includes(':') ? user : `${user}:`, ...mounts];
}
