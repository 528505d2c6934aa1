// The host checks behind `capsule doctor`: QEMU, KVM and the accelerator the
// daemon chose, the guest kernel, free disk, what TAP networking needs, whether
// VMMs are jailed and the daemon's socket. Each check reports ok/warn/fail with a line of advice; none
// of them changes the host.
import { execFile } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { access, statfs } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import type { CapsuleClient, DaemonInfo, JailSupport } from '@capsule/sdk';
import { isDaemonDown, stateDir } from './daemon-process.js';
import { formatBytes } from './human-format.js';

export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface CheckResult {
  name: string;
  status: CheckStatus;
  detail: string;
}

export const LOW_DISK_BYTES = 5 * 1024 ** 3;

export function cacheDir(): string {
  return process.env['CAPSULE_CACHE_DIR'] || '/var/cache/capsule';
}

export async function checkQemu(binary = 'qemu-system-x86_64'): Promise<CheckResult> {
  try {
    const { stdout } = await promisify(execFile)(binary, ['--version'], { timeout: 10_000 });
    return { name: 'qemu', status: 'ok', detail: stdout.split('\n')[0]?.trim() || binary };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT')
      return { name: 'qemu', status: 'fail', detail: `${binary} not found on PATH (Debian/Ubuntu: apt-get install qemu-system-x86)` };
    return { name: 'qemu', status: 'fail', detail: `${binary} --version failed: ${(error as Error).message.split('\n')[0]}` };
  }
}

/** Combines what /dev/kvm looks like here with what the daemon, which probes KVM by booting, decided. */
export async function checkAccel(info: DaemonInfo | undefined, kvmDevice = '/dev/kvm'): Promise<CheckResult> {
  if (info?.accel === 'kvm') return { name: 'kvm', status: 'ok', detail: `capsuled uses KVM (${info.accelReason})` };
  if (info?.accel === 'tcg') return { name: 'kvm', status: 'warn', detail: `capsuled uses TCG, sandboxes run slower: ${info.accelReason}` };
  try {
    await access(kvmDevice, fsConstants.R_OK | fsConstants.W_OK);
    return { name: 'kvm', status: 'ok', detail: `${kvmDevice} is usable (capsuled probes whether KVM really works when it starts)` };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { name: 'kvm', status: 'warn', detail: `no ${kvmDevice}: sandboxes will run under TCG, slower` };
    return {
      name: 'kvm',
      status: 'warn',
      detail: `${kvmDevice} exists but cannot be opened here (${code}): capsuled needs read/write access for KVM`,
    };
  }
}

/** The guest kit that `capsuled prepare` builds: its manifest at `guest/manifest.json` or `guest-manifest.json` in the cache dir. */
export async function checkGuestKernel(folder = cacheDir()): Promise<CheckResult> {
  for (const manifest of [path.join(folder, 'guest', 'manifest.json'), path.join(folder, 'guest-manifest.json')]) {
    try {
      await access(manifest, fsConstants.R_OK);
      return { name: 'guest kernel', status: 'ok', detail: `manifest at ${manifest}` };
    } catch {
      // try the next place
    }
  }
  return {
    name: 'guest kernel',
    status: 'fail',
    detail: `no guest kernel manifest in ${folder}: run \`capsuled prepare\` (CAPSULE_CACHE_DIR picks another folder)`,
  };
}

/** Free space where sandboxes' disks go; the state dir may not exist yet, so its nearest existing parent is measured. */
export async function checkDiskSpace(folder = stateDir()): Promise<CheckResult> {
  let measured = path.resolve(folder);
  for (;;) {
    try {
      const stats = await statfs(measured);
      const free = stats.bavail * stats.bsize;
      const status: CheckStatus = free < LOW_DISK_BYTES ? 'warn' : 'ok';
      return {
        name: 'disk',
        status,
        detail: `${formatBytes(free)} free at ${measured}${status === 'warn' ? ` (below ${formatBytes(LOW_DISK_BYTES)}; templates and sandboxes need room)` : ''}`,
      };
    } catch (error) {
      const parent = path.dirname(measured);
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || parent === measured) {
        return { name: 'disk', status: 'fail', detail: `cannot measure free space at ${folder}: ${(error as Error).message}` };
      }
      measured = parent;
    }
  }
}

/** What TAP networking needs from the host, as checkTapNetworking looks at it. */
export interface TapProbes {
  isRoot: boolean;
  tunDevice: string;
  /** Whether `tool` runs (its version option). */
  hasTool: (tool: 'ip' | 'nft' | 'nsenter') => Promise<boolean>;
}

function hostTapProbes(): TapProbes {
  const versionOption = { ip: '-V', nft: '--version', nsenter: '--version' } as const;
  return {
    isRoot: process.getuid?.() === 0,
    tunDevice: '/dev/net/tun',
    hasTool: async (tool) =>
      await promisify(execFile)(tool, [versionOption[tool]], { timeout: 10_000 }).then(
        () => true,
        () => false,
      ),
  };
}

/**
 * TAP networking (CAPSULE_NETWORK=tap) needs root, /dev/net/tun, ip, nft and
 * nsenter. A daemon in TAP mode that lacks them does not start, so this is
 * mostly for whoever is about to switch: with user-mode networking (the
 * default) what is missing is only reported, not a warning.
 */
export async function checkTapNetworking(info: DaemonInfo | undefined, probes: TapProbes = hostTapProbes()): Promise<CheckResult> {
  const missing: string[] = [];
  if (!probes.isRoot) missing.push('root');
  try {
    await access(probes.tunDevice, fsConstants.R_OK | fsConstants.W_OK);
  } catch {
    missing.push(probes.tunDevice);
  }
  for (const tool of ['ip', 'nft', 'nsenter'] as const) if (!(await probes.hasTool(tool))) missing.push(tool);
  const needs = `needs ${missing.join(', ')} (Debian: apt-get install iproute2 nftables util-linux; run as root)`;
  if (info?.network === 'tap') {
    return missing.length === 0
      ? { name: 'network', status: 'ok', detail: 'capsuled uses TAP networking' }
      : { name: 'network', status: 'fail', detail: `capsuled uses TAP networking but this host ${needs}` };
  }
  // A daemon that cannot isolate user-mode sandboxes says so; that is a warning whatever TAP mode would need.
  if (info?.networkWarning)
    return { name: 'network', status: 'warn', detail: `capsuled uses user-mode networking, NOT isolated: ${info.networkWarning}` };
  const mode = info ? 'capsuled uses user-mode networking' : 'user-mode networking unless CAPSULE_NETWORK=tap';
  return {
    name: 'network',
    status: 'ok',
    detail: missing.length === 0 ? `${mode}; TAP mode would work here too` : `${mode}; TAP mode ${needs}`,
  };
}

/** What the jail needs that the host lacks, each with what to do about it. */
function jailSupportLacking(support: JailSupport): string[] {
  const lacking: string[] = [];
  if (!support.userNamespaces) lacking.push('user namespaces (sysctl user.max_user_namespaces > 0)');
  if (support.cgroup.version === 'none') lacking.push('cgroups with memory, cpu and pids');
  if (!support.seccomp) lacking.push('seccomp (a kernel built with CONFIG_SECCOMP)');
  if (!support.bubblewrap) lacking.push('bubblewrap (apt-get install bubblewrap)');
  return lacking;
}

function describeJailSupport(support: JailSupport): string {
  const cgroup = support.cgroup.version === 'none' ? 'no usable cgroups' : `cgroup v${support.cgroup.version}`;
  const controllers = support.cgroup.controllers.length > 0 ? ` (${support.cgroup.controllers.join(', ')})` : '';
  return [
    `user namespaces ${support.userNamespaces ? 'yes' : 'no'}`,
    `${cgroup}${controllers}`,
    `seccomp ${support.seccomp ? 'yes' : 'no'}`,
    support.bubblewrap ? `bubblewrap ${support.bubblewrap}` : 'no bubblewrap',
  ].join(', ');
}

/**
 * Whether the daemon jails each sandbox's QEMU, and what the host offers for
 * it. A daemon with the jail off fails nothing but is always a warning, in
 * capitals: every QEMU then runs as root and unconfined.
 */
export function checkJail(info: DaemonInfo | undefined): CheckResult {
  if (!info)
    return {
      name: 'jail',
      status: 'warn',
      detail: 'unknown while capsuled is not running: it reports whether it jails VMMs and what this host supports',
    };
  // A daemon from before the jail sends no `jail`: its VMMs are not jailed.
  const jail = info.jail;
  if (!jail)
    return {
      name: 'jail',
      status: 'warn',
      detail: `JAIL OFF: capsuled ${info.version} predates jailing; every QEMU runs as root, unconfined`,
    };
  const { enabled, support } = jail;
  const lacking = jailSupportLacking(support);
  if (!enabled) {
    const advice = lacking.length === 0 ? 'This host could jail them: unset CAPSULE_JAIL' : `Jailing here needs ${lacking.join(', ')}`;
    return {
      name: 'jail',
      status: 'warn',
      detail: `JAIL OFF (CAPSULE_JAIL=off): every QEMU runs as root, unconfined and without limits; a guest that escapes QEMU owns this host. ${advice}. Host: ${describeJailSupport(support)}`,
    };
  }
  if (lacking.length > 0)
    return {
      name: 'jail',
      status: 'fail',
      detail: `capsuled jails VMMs but this host lacks ${lacking.join(', ')}; sandboxes may not start (CAPSULE_JAIL=off runs them unconfined)`,
    };
  return { name: 'jail', status: 'ok', detail: `capsuled jails each sandbox's QEMU; host: ${describeJailSupport(support)}` };
}

/** Whether capsuled answers; not running is a warning (the CLI starts it on demand), a refusing socket a failure. */
export async function checkDaemon(client: CapsuleClient): Promise<{ result: CheckResult; info: DaemonInfo | undefined }> {
  try {
    const info = await client.info({ requestTimeoutMs: 10_000 });
    return {
      result: { name: 'daemon', status: 'ok', detail: `capsuled ${info.version} answers on ${client.transport.address} (pid ${info.pid})` },
      info,
    };
  } catch (error) {
    if (isDaemonDown(error)) {
      return {
        result: {
          name: 'daemon',
          status: 'warn',
          detail: `capsuled is not running on ${client.transport.address} (commands start it; or \`capsule daemon start\`)`,
        },
        info: undefined,
      };
    }
    const hint = (error as { hint?: string }).hint;
    return {
      result: { name: 'daemon', status: 'fail', detail: `${(error as Error).message}${hint ? ` (${hint})` : ''}` },
      info: undefined,
    };
  }
}

export async function runAllChecks(client: CapsuleClient): Promise<CheckResult[]> {
  const daemon = await checkDaemon(client);
  const [qemu, accel, guest, disk, network] = await Promise.all([
    checkQemu(),
    checkAccel(daemon.info),
    checkGuestKernel(),
    checkDiskSpace(),
    checkTapNetworking(daemon.info),
  ]);
  return [qemu, accel, guest, disk, network, checkJail(daemon.info), daemon.result];
}

export function formatCheck(check: CheckResult): string {
  return `${check.status.padEnd(4)}  ${check.name}: ${check.detail}`;
}
