// Runs a tool (e2fsck, resize2fs, qemu-img) on files that a guest or a client
// wrote: they are hostile, and a filesystem or disk image is input to a
// parser, so the tool runs as nobody, without capabilities, in a mount
// namespace that holds only the system's programs and those files. It never
// runs such a tool as root on the host, unless the operator switched
// confinement off.
import fs from 'node:fs';
import { type RunResult, runCommand } from '../launcher.js';

/** Who the tool runs as: owns the files only while the tool runs. */
const NOBODY = 65534;

/** A host file the tool gets, at `/<inside>` in its namespace; bound read-only unless `writable`. */
export interface ConfinedFile {
  path: string;
  inside: string;
  writable: boolean;
}

/** `signal` stops the tool; `input` is its stdin. */
export interface ConfinedRunOptions {
  signal?: AbortSignal;
  input?: string;
}

/**
 * Runs the argv `tool(paths)` gets, `paths` being where `files` are for the
 * tool (in order). `confine` false (CAPSULE_JAIL=off: every QEMU runs as root
 * anyway) runs it as it is, on the host's paths.
 */
export async function runConfined(
  files: ConfinedFile[],
  tool: (paths: string[]) => string[],
  confine: boolean,
  { signal, input }: ConfinedRunOptions = {},
): Promise<RunResult> {
  if (!confine) {
    const [command = '', ...args] = tool(files.map((file) => file.path));
    return await runCommand(command, args, { signal, input });
  }
  const [command = '', ...args] = tool(files.map((file) => `/${file.inside}`));
  const owners = files.map((file) => fs.statSync(file.path));
  try {
    for (const file of files) fs.chownSync(file.path, NOBODY, NOBODY);
    return await runCommand(
      'bwrap',
      [
        ...['--ro-bind', '/usr', '/usr', '--symlink', 'usr/lib', '/lib', '--symlink', 'usr/lib64', '/lib64'],
        ...['--symlink', 'usr/bin', '/bin', '--symlink', 'usr/sbin', '/sbin', '--dev', '/dev', '--proc', '/proc'],
        ...files.flatMap((file) => [file.writable ? '--bind' : '--ro-bind', file.path, `/${file.inside}`]),
        ...['--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-net', '--die-with-parent'],
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
        ...['--', command, ...args],
      ],
      { signal, input },
    );
  } finally {
    for (const [i, file] of files.entries()) {
      const owner = owners[i];
      if (!owner) continue;
      fs.chownSync(file.path, owner.uid, owner.gid);
      fs.chmodSync(file.path, owner.mode & 0o7777);
    }
  }
}

/** Runs an e2fsprogs tool (argv, the file's path appended) on a volume file, which it may write. */
export async function onVolumeFile(file: string, tool: string[], confine: boolean): Promise<void> {
  await runConfined([{ path: file, inside: 'volume.ext4', writable: true }], ([inside = '']) => [...tool, inside], confine);
}
