// The CAPSULE_* settings capsuled reads, by name, with their defaults: the
// daemon refuses any other name in its config file, and `capsule daemon
// install` writes them, commented out, into a new one (the template here).
// Names and defaults only: docs/configuration.md says what each means, and the
// daemon alone parses values.

export interface DaemonSetting {
  name: string;
  /** The default as it would be written in the file; empty when there is none (the setting is off). */
  defaultValue: string;
  /** A few words for the commented template; docs/configuration.md has the whole story. */
  summary: string;
}

/** Where capsuled looks for its settings unless CAPSULE_CONFIG_FILE names another file. */
export const DEFAULT_DAEMON_CONFIG_FILE = '/etc/capsule/capsuled.env';

export const DAEMON_SETTINGS: readonly DaemonSetting[] = [
  { name: 'CAPSULE_STATE_DIR', defaultValue: '/var/lib/capsule', summary: 'database, sandbox disks, templates, the daemon log' },
  { name: 'CAPSULE_RUNTIME_DIR', defaultValue: '/run/capsule', summary: 'sockets and pid files' },
  { name: 'CAPSULE_CACHE_DIR', defaultValue: '/var/cache/capsule', summary: 'guest kit, root filesystems, image blobs' },
  { name: 'CAPSULE_SOCKET', defaultValue: '', summary: 'the API socket; unset: capsuled.sock in the runtime folder (tell clients too)' },
  { name: 'CAPSULE_ACCEL', defaultValue: 'auto', summary: 'kvm, tcg or auto' },
  { name: 'CAPSULE_BOOT_TIMEOUT_MS', defaultValue: '120000', summary: 'how long a cold boot may take' },
  { name: 'CAPSULE_MEMORY_BUDGET_MIB', defaultValue: '', summary: "guest memory for all sandboxes; unset: twice the host's RAM" },
  { name: 'CAPSULE_DISK_RESERVE_MIB', defaultValue: '1024', summary: 'free disk kept under the state and cache folders' },
  {
    name: 'CAPSULE_METRICS_INTERVAL_MS',
    defaultValue: '5000',
    summary: 'how often each sandbox is sampled for its metrics history; 0: never',
  },
  { name: 'CAPSULE_WARM_SNAPSHOTS', defaultValue: 'on', summary: 'off: every create boots cold' },
  { name: 'CAPSULE_WARM_POOL_SIZE', defaultValue: '1', summary: 'restored VMs kept ready per template, at least (0: no pool)' },
  { name: 'CAPSULE_WARM_POOL_MAX', defaultValue: '10', summary: 'how far a warm pool grows when creates find it empty' },
  { name: 'CAPSULE_WARM_POOL_IDLE_MS', defaultValue: '300000', summary: 'a grown warm pool shrinks back after this long without a create' },
  {
    name: 'CAPSULE_BUILD_UPLOADS_MAX_IDLE_MS',
    defaultValue: '3600000',
    summary: 'e2b build uploads no build used for this long are pruned',
  },
  { name: 'CAPSULE_JAIL', defaultValue: 'on', summary: 'off: run every QEMU as root, unconfined' },
  { name: 'CAPSULE_JAIL_IDS', defaultValue: '900000-999999', summary: 'the uids and group jailed QEMUs run as' },
  { name: 'CAPSULE_TCG_CODE_BUFFER_MIB', defaultValue: '64', summary: "under TCG, each QEMU's buffer of translated guest code" },
  { name: 'CAPSULE_VMM_OVERHEAD_MIB', defaultValue: '', summary: "memory a jailed QEMU may use beyond its guest's RAM" },
  { name: 'CAPSULE_NETWORK', defaultValue: 'user', summary: 'user or tap' },
  { name: 'CAPSULE_TAP_POOL', defaultValue: '10.201.0.0/16', summary: 'addresses of the host-side links' },
  { name: 'CAPSULE_LOG_LEVEL', defaultValue: 'info', summary: "the daemon's log level" },
  { name: 'CAPSULE_DOMAIN', defaultValue: 'localhost', summary: 'sandbox ports by host name: <port>-<sandbox id>.<domain>' },
  { name: 'CAPSULE_LISTEN', defaultValue: '', summary: 'also serve the API on TCP, e.g. 127.0.0.1:3000 (API keys required)' },
  { name: 'CAPSULE_TLS_CERT', defaultValue: '', summary: 'PEM certificate for TLS on TCP; unset: a self-signed one' },
  { name: 'CAPSULE_TLS_KEY', defaultValue: '', summary: "the certificate's PEM key" },
  {
    name: 'CAPSULE_REGISTRIES_FILE',
    defaultValue: '',
    summary: 'per-registry mirrors and credentials; unset: registries.json in the state folder',
  },
  { name: 'CAPSULE_QEMU', defaultValue: 'qemu-system-x86_64', summary: 'the QEMU binary' },
  { name: 'CAPSULE_AGENT_BUNDLE', defaultValue: '', summary: 'the guest agent bundle; unset: the one built in this checkout' },
];

/** The config file `capsule daemon install` writes when there is none: every setting, commented out at its default. */
export function renderDaemonConfigTemplate(): string {
  const lines = DAEMON_SETTINGS.map(
    (s) => `# ${s.name}=${s.defaultValue}${' '.repeat(Math.max(1, 44 - s.name.length - s.defaultValue.length))}# ${s.summary}`,
  );
  return `# capsuled's settings, read by capsuled when it starts: restart it after a change
# (systemctl restart capsuled). One NAME=VALUE a line; # starts a comment.
# A variable set in capsuled's own environment wins over this file.
# Every setting is described in docs/configuration.md; below, the defaults.
# Keep this file root's (owned by root, writable by root only): capsuled
# refuses it otherwise, since it may hold secrets.

${lines.join('\n')}
`;
}
