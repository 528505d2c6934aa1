// Runs an e2fsprogs tool (e2fsck, resize2fs) on a volume file that a guest
// wrote: the guest is hostile, and a filesystem image is input to a parser,
// so the tool runs as nobody, without capabilities, in a mount namespace that
// holds only the system's programs and that one file. It never runs such a
// tool as root on the host, unless the operator switched confinement off.
import fs from 'node:fs';
import { runCommand } from '../launcher.js';

/** Who the tool runs as: owns the file only while the tool runs. */
const NOBODY = 65534;
/** Where the file is in the tool's namespace. */
const INSIDE = '/volume.ext4';

/**
 * Runs `tool` (argv, the file's path appended) on `file`. `confine` false
 * (CAPSULE_JAIL=off: every QEMU runs as root anyway) runs it as it is.
 */
export async function onVolumeFile(file: string, tool: string[], confine: boolean): Promise<void> {
  const [command = '', ...args] = tool;
  if (!confine) {
    await runCommand(command, [...args, file]);
    return;
  }
  const { uid, gid, mode } = fs.statSync(file);
  fs.chownSync(file, NOBODY, NOBODY);
  try {
    await runCommand('bwrap', [
      ...['--ro-bind', '/usr', '/usr', '--symlink', 'usr/lib', '/lib', '--symlink', 'usr/lib64', '/lib64'],
      ...['--symlink', 'usr/bin', '/bin', '--symlink', 'usr/sbin', '/sbin', '--dev', '/dev', '--proc', '/proc'],
      ...['--bind', file, INSIDE, '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-net', '--die-with-parent'],
      ...['--clearenv', '--setenv', 'PATH', '/usr/sbin:/usr/bin', '--'],
      ...[
        'setpriv',
        `--reuid=${NOBODY}`,
        `--regid=${NOBODY}`,
        '--clear-groups',
        '--inh-caps=-all',
        '--bounding-set=-all',
        '--no-new-privs',
      ],
      ...['--', command, ...args, INSIDE],
    ]);
  } finally {
    fs.chownSync(file, uid, gid);
    fs.chmodSync(file, mode & 0o7777);
  }
}
