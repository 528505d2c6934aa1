// A restored sandbox's SSH identity: memory and disk restored under a new
// hostname (a fork, a snapshot template's sandbox) hold the SSH server and host
// keys of the sandbox that was saved, which must not answer for this one. They
// are ended and removed here; the daemon's SSH start makes new keys. Never shells out.

import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';

export interface SshIdentityPaths {
  /** Where sshd wrote its pid (Debian's default). */
  pidFile: string;
  /** The folder of the `ssh_host_*` key files. */
  keysDir: string;
}

export const GUEST_SSH_IDENTITY: SshIdentityPaths = { pidFile: '/run/sshd.pid', keysDir: '/etc/ssh' };

export async function retireSshIdentity(paths: SshIdentityPaths): Promise<void> {
  const pid = Number((await readFile(paths.pidFile, 'utf8').catch(() => '')).trim());
  if (Number.isInteger(pid) && pid > 1) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // Not running: nothing listens with the old keys.
    }
  }
  const names = await readdir(paths.keysDir).catch(() => [] as string[]);
  await Promise.all(names.filter((name) => name.startsWith('ssh_host_')).map((name) => rm(join(paths.keysDir, name), { force: true })));
}
