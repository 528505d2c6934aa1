// A restored sandbox's SSH identity: memory and disk restored under a new
// hostname (a fork, a snapshot template's sandbox) hold the SSH server and host
// keys of the sandbox that was saved, which must not answer for this one. Keys
// carry the hostname they were made for (`capsule@NAME`, see the daemon's
// ssh-server.ts); others are ended and removed here, and the daemon's SSH start
// makes new ones. Never shells out.

import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';

export interface SshIdentityPaths {
  /** Where sshd wrote its pid (Debian's default). */
  pidFile: string;
  /** The folder of the `ssh_host_*` key files. */
  keysDir: string;
}

export const GUEST_SSH_IDENTITY: SshIdentityPaths = { pidFile: '/run/sshd.pid', keysDir: '/etc/ssh' };

/**
 * Ends the SSH server and removes the host keys unless they were made for
 * `hostname`. A restart of the same sandbox (booted under the template's name,
 * then told its own) keeps them, and the pins clients made of them.
 */
export async function retireOtherSshIdentity(paths: SshIdentityPaths, hostname: string): Promise<void> {
  const publicKey = await readFile(join(paths.keysDir, 'ssh_host_ed25519_key.pub'), 'utf8').catch(() => undefined);
  if (publicKey === undefined || publicKey.trim().split(/\s+/)[2] === `capsule@${hostname}`) return;
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
