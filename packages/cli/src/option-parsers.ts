// Parsers for the CLI's option values (env and metadata K=V pairs, memory
// sizes, CPU counts, durations). Pure functions: they throw commander's
// InvalidArgumentError, which commander reports as a usage error (exit 2).
import { limits, parseSizeMiB, VOLUME_NAME_PATTERN, type PortRequest, type VolumeMountRequest } from '@capsule/protocol';
import { InvalidArgumentError } from 'commander';

/** `512` (MiB), `512M`, `512MiB`, `1G`, `1.5GiB`, `1T` → MiB, within the daemon's limits. */
export function parseMemoryMiB(value: string): number {
  return sizeWithin(value, 'memory', limits.minMemoryMiB, limits.maxMemoryMiB);
}

/** A root disk size, like memory's (`20G`); the daemon checks it only grows. */
export function parseDiskMiB(value: string): number {
  return sizeWithin(value, 'disk', 1, limits.maxDiskMiB);
}

function sizeWithin(value: string, what: string, minMiB: number, maxMiB: number): number {
  const mib = parseSizeMiB(value);
  if (mib === undefined) throw new InvalidArgumentError(`"${value}" is not a ${what} size in whole MiB (examples: 512, 512M, 2G)`);
  if (mib < minMiB || mib > maxMiB) throw new InvalidArgumentError(`${what} must be between ${minMiB} MiB and ${maxMiB / 1024} GiB`);
  return mib;
}

/** Collects a repeatable CIDR option (`--egress-allow 10.0.0.0/8 --egress-allow 1.2.3.4`); the daemon checks each. */
export function collectCidr(value: string, previous: string[] | undefined): string[] {
  if (!/^\d{1,3}(\.\d{1,3}){3}(\/\d{1,2})?$/.test(value))
    throw new InvalidArgumentError(`"${value}" is not an IPv4 network (examples: 10.0.0.0/8, 1.2.3.4)`);
  return [...(previous ?? []), value];
}

/** `on` or `off` → true or false. */
export function parseOnOff(value: string): boolean {
  if (value === 'on') return true;
  if (value === 'off') return false;
  throw new InvalidArgumentError(`"${value}" is not on or off`);
}

/** A fork count: a whole number from 1 to limits.maxForks. */
export function parseForkCount(value: string): number {
  if (!/^\s*\d+\s*$/.test(value)) throw new InvalidArgumentError(`"${value}" is not a whole number`);
  const count = Number(value);
  if (count < 1 || count > limits.maxForks) throw new InvalidArgumentError(`the count must be between 1 and ${limits.maxForks}`);
  return count;
}

/** `logs --tail N`: a whole number of lines. */
export function parseLineCount(value: string): number {
  if (!/^\s*\d+\s*$/.test(value)) throw new InvalidArgumentError(`"${value}" is not a whole number of lines`);
  return Number(value);
}

export function parseCpuCount(value: string): number {
  if (!/^\s*\d+\s*$/.test(value)) throw new InvalidArgumentError(`"${value}" is not a whole number of CPUs`);
  const cpus = Number(value);
  if (cpus < limits.minVcpus || cpus > limits.maxVcpus) {
    throw new InvalidArgumentError(`CPUs must be between ${limits.minVcpus} and ${limits.maxVcpus}`);
  }
  return cpus;
}

const MS_PER_UNIT: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** `500ms`, `30s`, `5m`, `1h`, `1m30s`, or a bare number of seconds → milliseconds. `0` means none. */
export function parseDurationMs(value: string): number {
  const text = value.trim();
  if (/^\d+(?:\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000);
  const parts = [...text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)];
  if (parts.length === 0 || parts.map((part) => part[0]).join('') !== text) {
    throw new InvalidArgumentError(`"${value}" is not a duration (examples: 30s, 5m, 1h30m, 500ms)`);
  }
  return Math.round(parts.reduce((total, part) => total + Number(part[1]) * (MS_PER_UNIT[part[2] ?? 's'] ?? 1000), 0));
}

/** `--since`: a duration back from now (`10m`, `1h30m`) or an RFC 3339 time (`2026-01-01T12:00:00Z`) → an ISO time. */
export function parseSinceTime(value: string, now: number = Date.now()): string {
  const text = value.trim();
  if (/^\d{4}-\d{2}-\d{2}T/.test(text)) {
    const ms = Date.parse(text);
    if (Number.isNaN(ms)) throw new InvalidArgumentError(`"${value}" is not a time (example: 2026-01-01T12:00:00Z)`);
    return new Date(ms).toISOString();
  }
  return new Date(now - parseDurationMs(text)).toISOString();
}

/** Splits `KEY=VALUE` at the first `=`; the value may be empty or contain `=`. */
export function parseKeyValue(value: string, what: string): [string, string] {
  const equals = value.indexOf('=');
  if (equals <= 0) throw new InvalidArgumentError(`${what} "${value}" must look like KEY=VALUE`);
  return [value.slice(0, equals), value.slice(equals + 1)];
}

/**
 * For repeated `--env`: `K=V` sets K; a bare `K` copies K from this shell's
 * environment, as `docker run -e K` does, and is an error when K is not set here.
 */
export function collectEnv(value: string, previous: Record<string, string> = {}): Record<string, string> {
  if (!value.includes('=')) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(value)) throw new InvalidArgumentError(`--env "${value}" must look like KEY=VALUE or KEY`);
    const local = process.env[value];
    if (local === undefined) throw new InvalidArgumentError(`--env ${value}: no value given and ${value} is not set in this shell`);
    return { ...previous, [value]: local };
  }
  const [key, envValue] = parseKeyValue(value, '--env');
  return { ...previous, [key]: envValue };
}

/** For repeated `--metadata K=V`. */
export function collectMetadata(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const [key, metadataValue] = parseKeyValue(value, '--metadata');
  return { ...previous, [key]: metadataValue };
}

/** The signals `capsule kill` can send (the agent's process service knows these two). */
const KILL_SIGNALS: Record<string, 'SIGKILL' | 'SIGTERM'> = { KILL: 'SIGKILL', '9': 'SIGKILL', TERM: 'SIGTERM', '15': 'SIGTERM' };

/** `KILL`, `SIGKILL`, `9`, `TERM`, `SIGTERM`, `15` (any case) → the signal's name. */
export function parseKillSignal(value: string): 'SIGKILL' | 'SIGTERM' {
  const signal = KILL_SIGNALS[value.trim().toUpperCase().replace(/^SIG/, '')];
  if (!signal) throw new InvalidArgumentError(`"${value}" is not a signal the sandbox's agent can send (KILL or TERM)`);
  return signal;
}

/** A listing depth: a whole number ≥ 1. */
export function parseDepth(value: string): number {
  if (!/^\s*\d+\s*$/.test(value) || Number(value) < 1)
    throw new InvalidArgumentError(`"${value}" is not a depth (a whole number, 1 or more)`);
  return Number(value);
}

/** A pid: a whole number ≥ 1. */
export function parsePid(value: string): number {
  if (!/^\s*\d+\s*$/.test(value) || Number(value) < 1 || Number(value) > 2 ** 32 - 1)
    throw new InvalidArgumentError(`"${value}" is not a process id`);
  return Number(value);
}

function portNumber(text: string, what: string, allowZero: boolean): number {
  const port = /^\d{1,5}$/.test(text) ? Number(text) : NaN;
  if (!(port >= (allowZero ? 0 : 1) && port <= 65535))
    throw new InvalidArgumentError(`${what} "${text}" must be a port from ${allowZero ? 0 : 1} to 65535`);
  return port;
}

/**
 * For repeated `-p`, as docker's: `GUEST` (a free host port), `HOST:GUEST`,
 * or `IP:HOST:GUEST` (IPv6 in brackets); host port 0 picks a free one.
 */
export function collectPublish(value: string, previous: PortRequest[] = []): PortRequest[] {
  if (previous.length >= limits.maxPublishedPorts)
    throw new InvalidArgumentError(`at most ${limits.maxPublishedPorts} ports can be published`);
  const shape = `"${value}" must look like GUEST, HOST:GUEST or IP:HOST:GUEST (e.g. 8080:80)`;
  let rest = value.trim().replace(/\/tcp$/, '');
  let hostIp: string | undefined;
  const v6 = /^\[([0-9a-fA-F:.]+)\]:(.*)$/.exec(rest);
  if (v6) {
    hostIp = v6[1];
    rest = v6[2] ?? '';
  }
  const parts = rest.split(':');
  if (parts.length === 3 && hostIp === undefined) hostIp = parts.shift();
  if (
    parts.length > 2 ||
    (v6 && parts.length !== 2) ||
    parts.some((p) => !/^\d+$/.test(p)) ||
    (hostIp !== undefined && !/^[0-9a-fA-F:.]+$/.test(hostIp))
  ) {
    throw new InvalidArgumentError(shape);
  }
  const guest = parts.pop() ?? '';
  const host = parts.pop();
  const request: PortRequest = {
    guestPort: portNumber(guest, 'the sandbox port', false),
    ...(host !== undefined ? { hostPort: portNumber(host, 'the host port', true) } : {}),
    ...(hostIp !== undefined ? { hostIp } : {}),
  };
  return [...previous, request];
}

/** For repeated `-v`, as docker's: `NAME:/PATH` or `NAME:/PATH:ro` (`:rw` is the default). */
export function collectVolume(value: string, previous: VolumeMountRequest[] = []): VolumeMountRequest[] {
  if (previous.length >= limits.maxVolumesPerSandbox)
    throw new InvalidArgumentError(`at most ${limits.maxVolumesPerSandbox} volumes can be attached`);
  const [name = '', mount = '', mode, ...extra] = value.split(':');
  if (
    !new RegExp(VOLUME_NAME_PATTERN).test(name) ||
    !mount.startsWith('/') ||
    (mode !== undefined && mode !== 'ro' && mode !== 'rw') ||
    extra.length > 0
  )
    throw new InvalidArgumentError(
      `"${value}" must look like NAME:/PATH or NAME:/PATH:ro (a volume name is lower-case letters, digits and -)`,
    );
  return [...previous, { name, mount, ...(mode === 'ro' ? { readOnly: true } : {}) }];
}

/** A volume size (`10G`, `512M`, a bare number is MiB), checked against the limits; the daemon takes the text. */
export function parseVolumeSize(value: string): string {
  const mib = parseSizeMiB(value);
  if (mib === undefined) throw new InvalidArgumentError(`"${value}" is not a size in whole MiB (examples: 512M, 10G)`);
  if (mib < limits.minVolumeMiB || mib > limits.maxVolumeMiB)
    throw new InvalidArgumentError(`a volume must be from ${limits.minVolumeMiB} MiB to ${limits.maxVolumeMiB / 1024 ** 2} TiB`);
  return value.trim();
}

/** `capsule port-forward`'s `[LOCAL:]REMOTE`; LOCAL defaults to REMOTE, 0 picks a free one. */
export function parseForwardSpec(value: string): { localPort: number; remotePort: number } {
  const match = /^(?:(\d+):)?(\d+)$/.exec(value.trim());
  if (!match) throw new InvalidArgumentError(`"${value}" must look like REMOTE or LOCAL:REMOTE (e.g. 8080:80)`);
  const remotePort = portNumber(match[2] ?? '', 'the sandbox port', false);
  return { remotePort, localPort: match[1] !== undefined ? portNumber(match[1], 'the local port', true) : remotePort };
}
