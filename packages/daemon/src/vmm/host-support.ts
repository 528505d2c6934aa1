// What this host offers for jailing VMMs (user namespaces, cgroups, seccomp,
// bubblewrap), probed once at the daemon's start for /v1/info and `capsule
// doctor`. It only reads: it never changes the host, and never throws.
import fs from 'node:fs';
import path from 'node:path';
import type { JailSupport } from '@capsule/protocol';
import { runCommand } from '../launcher.js';
import { CGROUP_ROOT, detectCgroups, readTextIfPresent } from './cgroup.js';

export interface HostPaths {
  proc: string;
  cgroupRoot: string;
  bwrap: string;
}

const HOST: HostPaths = { proc: '/proc', cgroupRoot: CGROUP_ROOT, bwrap: 'bwrap' };

export async function probeJailSupport(paths: HostPaths = HOST): Promise<JailSupport> {
  const cgroups = detectCgroups(paths.cgroupRoot);
  const bubblewrap = await bubblewrapVersion(paths.bwrap);
  return {
    userNamespaces: userNamespaces(paths.proc),
    cgroup: { version: cgroups.version, controllers: cgroups.controllers },
    // The kernel prints a Seccomp line in every status file only when it was built with seccomp.
    seccomp: /^Seccomp:/m.test(readTextIfPresent(path.join(paths.proc, 'self/status')) ?? ''),
    ...(bubblewrap ? { bubblewrap } : {}),
  };
}

/** The kernel has user namespaces and allows some to be made (a limit of 0 turns them off). */
function userNamespaces(proc: string): boolean {
  const limit = Number(readTextIfPresent(path.join(proc, 'sys/user/max_user_namespaces'))?.trim());
  return fs.existsSync(path.join(proc, 'self/ns/user')) && limit > 0;
}

/** "bubblewrap 0.8.0" -> "0.8.0"; undefined when `bwrap` is missing or fails. */
async function bubblewrapVersion(bwrap: string): Promise<string | undefined> {
  try {
    const { stdout } = await runCommand(bwrap, ['--version'], { timeoutMs: 5000 });
    return stdout.trim().replace(/^bubblewrap\s+/, '') || undefined;
  } catch {
    return undefined;
  }
}
