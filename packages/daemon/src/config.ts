// Where capsuled keeps things. Every location can be moved with an environment
// variable so tests can run a private daemon beside a user's one; the guest kit
// cache is shared on purpose, because rebuilding it is the slow part of setup.
import os from 'node:os';
import { defaultSocketPath } from '@capsule/protocol';

export interface DaemonConfig {
  /** Durable state: the database, sandbox disks, templates. */
  stateDir: string;
  /** Transient handles (sockets, pid files); wiped by a host reboot. */
  runtimeDir: string;
  /** Build cache shared by every daemon on the host: kernel, initramfs, kit, root filesystems. */
  cacheDir: string;
  socketPath: string;
  /** `kvm`, `tcg` or `auto` (probe once, cache the answer). */
  accel: 'kvm' | 'tcg' | 'auto';
  /** How long a cold boot may take before the create fails. */
  bootTimeoutMs: number;
  /** Host memory the daemon may hand to sandboxes, in MiB. */
  memoryBudgetMiB: number;
  /** Free disk, in MiB, below which anything that writes to the state or cache folder is refused (0: never). */
  diskReserveMiB: number;
  /** Build warm snapshots of templates and create sandboxes by restoring them. */
  warmSnapshots: boolean;
  /** Sandboxes restored ahead of time per warm template, at least (0: no pool, restore on demand). */
  warmPoolSize: number;
  /** How large a template's warm pool may grow under demand (never below warmPoolSize). */
  warmPoolMax: number;
  /** After this long without a create, a grown warm pool goes back to warmPoolSize. */
  warmPoolIdleMs: number;
  /** How long an upload of e2b's build files is kept once no build uses it (CAPSULE_BUILD_UPLOADS_MAX_IDLE_MS; 0: until its build ends). */
  buildUploadsMaxIdleMs: number;
  logLevel: string;
  /** How often every running sandbox's usage is sampled into its history (CAPSULE_METRICS_INTERVAL_MS, default 5000; 0: off). */
  metricsIntervalMs: number;
  /** Run each sandbox's QEMU jailed (own uid, namespaces, cgroup, seccomp); from CAPSULE_JAIL, on unless `off`. */
  jail: boolean;
  /** Sandbox networking: `user` (QEMU's user-mode stack, the default) or `tap` (root: namespace, tap, NAT). */
  network: 'user' | 'tap';
  /** TAP mode: the IPv4 pool each sandbox's /30 host link is allocated from (CAPSULE_TAP_POOL). */
  tapPool: string;
  /** Sandbox ports are served by host name as `<port>-<sandboxId>.<domain>`; from CAPSULE_DOMAIN, default `localhost`. */
  domain: string;
  /**
   * Also serve the API on TCP (API keys required there); from CAPSULE_LISTEN:
   * `host:port` or `https://host:port` serve TLS, `http://host:port` plain HTTP (asked for by name only).
   */
  listen?: TcpListen;
  /**
   * The ids jailed VMs run as (CAPSULE_JAIL_IDS, `FIRST-LAST`): FIRST is the
   * group they share, each VM gets a uid of its own from the rest. Host-wide:
   * two daemons on one host need ranges that do not overlap.
   */
  jailIds: { first: number; count: number };
  /**
   * Memory a jailed VM's QEMU may use beyond its guest's RAM before its cgroup
   * kills it (CAPSULE_VMM_OVERHEAD_MIB); unset: 128 MiB, plus the TCG code
   * buffer under TCG (vmm/cgroup.ts says how these were measured).
   */
  vmmOverheadMiB?: number;
  /** Under TCG, each QEMU's buffer of translated guest code (CAPSULE_TCG_CODE_BUFFER_MIB, vmm/tcg-code-buffer.ts). */
  tcgCodeBufferMiB: number;
  /** The operator's certificate and key for TLS on TCP (CAPSULE_TLS_CERT, CAPSULE_TLS_KEY); else one made in stateDir. */
  tlsCertFile?: string;
  tlsKeyFile?: string;
}

export interface TcpListen {
  host: string;
  port: number;
  /** False only when CAPSULE_LISTEN starts with `http://`: keys then cross the network in cleartext. */
  tls: boolean;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): DaemonConfig {
  const runtimeDir = env.CAPSULE_RUNTIME_DIR ?? '/run/capsule';
  const accel = env.CAPSULE_ACCEL ?? 'auto';
  if (accel !== 'kvm' && accel !== 'tcg' && accel !== 'auto') {
    throw new Error(`CAPSULE_ACCEL must be kvm, tcg or auto, not "${accel}"`);
  }
  const network = env.CAPSULE_NETWORK || 'user';
  if (network !== 'user' && network !== 'tap') {
    throw new Error(`CAPSULE_NETWORK must be user or tap, not "${network}"`);
  }
  const warmPoolSize = positiveInt(env.CAPSULE_WARM_POOL_SIZE, 1);
  return {
    stateDir: env.CAPSULE_STATE_DIR ?? '/var/lib/capsule',
    runtimeDir,
    cacheDir: env.CAPSULE_CACHE_DIR ?? '/var/cache/capsule',
    socketPath: defaultSocketPath(env),
    accel,
    bootTimeoutMs: positiveInt(env.CAPSULE_BOOT_TIMEOUT_MS, 120_000),
    memoryBudgetMiB: positiveInt(env.CAPSULE_MEMORY_BUDGET_MIB, 0),
    diskReserveMiB: positiveInt(env.CAPSULE_DISK_RESERVE_MIB, 1024),
    warmSnapshots: onOff(env.CAPSULE_WARM_SNAPSHOTS, true),
    warmPoolSize,
    warmPoolMax: Math.max(warmPoolSize, positiveInt(env.CAPSULE_WARM_POOL_MAX, 10)),
    warmPoolIdleMs: positiveInt(env.CAPSULE_WARM_POOL_IDLE_MS, 300_000),
    buildUploadsMaxIdleMs: positiveInt(env.CAPSULE_BUILD_UPLOADS_MAX_IDLE_MS, 3_600_000),
    logLevel: env.CAPSULE_LOG_LEVEL ?? 'info',
    metricsIntervalMs: positiveInt(env.CAPSULE_METRICS_INTERVAL_MS, 5000),
    jail: onOff(env.CAPSULE_JAIL, true),
    network,
    tapPool: env.CAPSULE_TAP_POOL || '10.201.0.0/16',
    domain: parseDomain(env.CAPSULE_DOMAIN || 'localhost'),
    jailIds: parseIdRange(env.CAPSULE_JAIL_IDS || '900000-999999'),
    tcgCodeBufferMiB: parseTcgCodeBuffer(env.CAPSULE_TCG_CODE_BUFFER_MIB),
    ...(env.CAPSULE_VMM_OVERHEAD_MIB ? { vmmOverheadMiB: positiveInt(env.CAPSULE_VMM_OVERHEAD_MIB, 0) } : {}),
    ...(env.CAPSULE_LISTEN ? { listen: parseListen(env.CAPSULE_LISTEN) } : {}),
    ...parseTlsFiles(env),
  };
}

/** Guest memory all sandboxes together may have: the setting, else twice the host's RAM (clones share pages). */
export function effectiveMemoryBudgetMiB(config: Pick<DaemonConfig, 'memoryBudgetMiB'>): number {
  return config.memoryBudgetMiB || 2 * Math.floor(os.totalmem() / 1048576);
}

/**
 * Under TCG each QEMU keeps its own translations of the guest code it ran:
 * QEMU 7.2 reserves 1 GiB for them, flushes them when full, and a guest that
 * runs enough different code fills it (bench/README.md, "VMM memory
 * overhead"). A restored sandbox translates about 46 MiB for its first
 * command, and more as it works: after 40 commands and a few python3 imports
 * one held 280-318 MiB (Pss) at 256, 193-205 MiB at 64, idle or not. At 64
 * the same work cost QEMU the same CPU (a python3 import 1.1-1.3 s against
 * 1.2 s, `true` 94-110 ms against 85-106 ms); at 32 every python3 import
 * flushed the buffer and took 3.5x as long (bench/README.md, "Density").
 */
export const DEFAULT_TCG_CODE_BUFFER_MIB = 64;

/** Below this QEMU would flush on nearly every command: exec of `true` took 448 ms at 16 MiB against 72 ms. */
export const MIN_TCG_CODE_BUFFER_MIB = 16;

function parseTcgCodeBuffer(value: string | undefined): number {
  const mib = positiveInt(value, DEFAULT_TCG_CODE_BUFFER_MIB);
  if (mib < MIN_TCG_CODE_BUFFER_MIB)
    throw new Error(
      `CAPSULE_TCG_CODE_BUFFER_MIB must be at least ${MIN_TCG_CODE_BUFFER_MIB} (smaller buffers retranslate on every command), not "${value}"`,
    );
  return mib;
}

function parseTlsFiles(env: NodeJS.ProcessEnv): { tlsCertFile?: string; tlsKeyFile?: string } {
  const cert = env.CAPSULE_TLS_CERT || undefined;
  const key = env.CAPSULE_TLS_KEY || undefined;
  if ((cert === undefined) !== (key === undefined))
    throw new Error('CAPSULE_TLS_CERT and CAPSULE_TLS_KEY go together: set both (PEM files) or neither');
  if (cert === undefined || key === undefined) return {};
  if (env.CAPSULE_LISTEN?.startsWith('http://'))
    throw new Error('CAPSULE_TLS_CERT is set but CAPSULE_LISTEN asks for plain http://; use https:// or drop the certificate');
  return { tlsCertFile: cert, tlsKeyFile: key };
}

/**
 * `host:port`, `[v6]:port` or `:port` (all interfaces), TLS unless prefixed
 * `http://` (`https://` may be written); port 0 picks a free one.
 */
export function parseListen(value: string): TcpListen {
  const scheme = /^(https?):\/\//.exec(value)?.[1];
  const match = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(scheme ? value.slice(scheme.length + 3) : value);
  const port = Number(match?.[3]);
  if (!match || port > 65535)
    throw new Error(
      `CAPSULE_LISTEN must be host:port, https://host:port or http://host:port (plain, no TLS), e.g. 127.0.0.1:3000, not "${value}"`,
    );
  return { host: match[1] ?? (match[2] || '0.0.0.0'), port, tls: scheme !== 'http' };
}

/** A host name, optionally with a port (`localhost:3000`, so that e2b's getHost gives a usable address). */
export function parseDomain(value: string): string {
  const domain = value.toLowerCase();
  if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:\d{1,5})?$/.test(domain) || domain.length > 200) {
    throw new Error(`CAPSULE_DOMAIN must be a host name, optionally with :port (e.g. capsule.example.com), not "${value}"`);
  }
  return domain;
}

function onOff(value: string | undefined, fallback: boolean): boolean {
  if (value === undefined || value === '') return fallback;
  if (value === 'on' || value === '1' || value === 'true') return true;
  if (value === 'off' || value === '0' || value === 'false') return false;
  throw new Error(`expected on or off, got "${value}"`);
}

function positiveInt(value: string | undefined, fallback: number): number {
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new Error(`expected a whole number, got "${value}"`);
  return n;
}

function parseIdRange(value: string): { first: number; count: number } {
  const match = /^(\d+)-(\d+)$/.exec(value.trim());
  const first = Number(match?.[1]);
  const last = Number(match?.[2]);
  if (!match || first < 1000 || last > 4_294_967_294 || last - first < 2)
    throw new Error(
      `CAPSULE_JAIL_IDS must be FIRST-LAST with 1000 <= FIRST, at least 3 ids and LAST below 2^32-1, e.g. 900000-999999, not "${value}"`,
    );
  return { first, count: last - first + 1 };
}
