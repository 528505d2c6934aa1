// The systemd unit that runs capsuled as a service: its one source. `capsule
// daemon install` writes it with the real paths of node and capsuled, and
// packaging/systemd/capsuled.service is it with the paths scripts/setup makes
// (a test keeps the two equal). It never names a path systemd would read otherwise.

/** Where scripts/setup links capsuled; its `#!/usr/bin/env node` finds node on systemd's default PATH. */
export const SETUP_CAPSULED_PATH = '/usr/local/bin/capsuled';

/** Paths systemd takes literally in ExecStart: no spaces, quotes, `%` specifiers or `$` variables. */
const PLAIN_PATH = /^\/[A-Za-z0-9/._+@-]+$/;

/** The unit's text; `execStart` is the daemon's command line before `serve` (absolute paths). */
export function renderServiceUnit(execStart: readonly string[]): string {
  for (const part of execStart) {
    if (!PLAIN_PATH.test(part))
      throw new Error(
        `cannot put ${JSON.stringify(part)} in a systemd unit: only absolute paths of letters, digits and ./_+@- are written`,
      );
  }
  return `# capsuled, Capsule's host daemon, as a systemd service. Written by
# \`capsule daemon install\`, which rewrites it: change it with
# \`systemctl edit capsuled\` (a drop-in), not here. capsuled reads its settings
# from /etc/capsule/capsuled.env itself (docs/service.md), so there is no
# EnvironmentFile=: systemd would read the same file by other rules (a
# trailing \`# comment\` becomes part of the value) and its reading would win.

[Unit]
Description=Capsule host daemon (microVM sandboxes)
# TAP networking and TCP listening want the host's network up; the user-mode
# default does not mind.
Wants=network-online.target
After=network-online.target local-fs.target
# A start that keeps failing (a bad setting) stops being retried after 5 tries
# in a minute; \`systemctl reset-failed capsuled\` allows more.
StartLimitIntervalSec=60
StartLimitBurst=5

[Service]
Type=simple
ExecStart=${[...execStart, 'serve'].join(' ')}
Restart=on-failure
RestartSec=2s
# Sandboxes outlive the daemon: a new capsuled adopts the VMs that run, so
# stopping or restarting the service must signal capsuled alone. systemd's
# default (control-group) would kill everything left in the unit's cgroup.
# capsuled moves each jailed QEMU into a cgroup of its own under capsule/ at
# the top of the hierarchy (packages/daemon/src/vmm/cgroup.ts). On cgroup v2
# that takes it out of this unit's, which alone would keep it alive; but the
# bubblewrap process waiting on it stays here, and so does every QEMU when
# CAPSULE_JAIL=off or the host has no usable cgroups. On cgroup v1 systemd
# tracks units in its own name=systemd hierarchy, which capsuled does not
# touch, so there every QEMU stays in this unit. \`process\` leaves them all;
# systemd then logs "left-over process" for them at the next start, as expected.
KillMode=process
# capsuled's stop leaves its VMs alone; if it hangs, SIGKILL (to capsuled only) after this.
TimeoutStopSec=30s
# A socket or two per sandbox (QMP, agent, console) and every client connection.
LimitNOFILE=1048576
# The unit's task count holds capsuled's threads, the bubblewrap waiters and
# unjailed QEMUs with their vCPU threads; each jailed VM's own cgroup caps its tasks.
TasksMax=infinity
# No sandboxing directives on purpose. capsuled is what confines the
# sandboxes: it runs as root to make network namespaces, TAP devices,
# nftables rules, cgroups and bubblewrap jails, and everything it starts
# inherits what this unit imposes. ProtectSystem=, ProtectHome=, PrivateTmp=,
# PrivateDevices= and the like run the service in a private mount namespace,
# which would hide from the host and from the next capsuled the bind mounts
# \`ip netns add\` pins each sandbox's network namespace with under /run/netns
# (a restarted daemon must find them to adopt its VMs). Capability, seccomp
# and device filters (CapabilityBoundingSet=, SystemCallFilter=,
# ProtectClock=, DeviceAllow=) would reach every QEMU and jail helper.
# Each QEMU is confined by its own jail instead (docs/security.md).

[Install]
WantedBy=multi-user.target
`;
}
