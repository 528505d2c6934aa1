// The workload spec (`capsule apply -f`): what one document of a workload file
// may hold, checked field by field into a normalised WorkloadSpec. The CLI
// checks a file with it before sending it, the daemon again before it changes
// anything. It never reads files or YAML: it is given the parsed documents.
import { limits, parseSizeMiB, VOLUME_NAME_PATTERN } from './api.js';

export type RestartPolicy = 'always' | 'on-failure' | 'never';

export type HealthProbe = { http: { port: number; path: string } } | { tcp: { port: number } } | { exec: string[] };

export interface WorkloadHealth {
  probe: HealthProbe;
  intervalMs: number;
  timeoutMs: number;
  /** Failures in a row that make the workload unhealthy (and restarted). */
  retries: number;
  /** After a start, failures in this window do not count. */
  startPeriodMs: number;
}

/** One workload, its defaults filled in. */
export interface WorkloadSpec {
  name: string;
  /** What its sandboxes start from: a template, or an OCI image (exactly one of the two). */
  template?: string;
  /** An image reference, pulled and made a template the first time a sandbox of it is made; without a command, its Entrypoint + Cmd is the service. */
  image?: string;
  /** argv of the supervised service; without it the template's own START is the service. */
  command?: string[];
  env: Record<string, string>;
  workdir?: string;
  user?: string;
  /** diskMiB: the root disk, grown from the template's (a sandbox is made at its template's size, then grown while stopped). */
  resources: { cpus?: number; memoryMiB?: number; diskMiB?: number };
  ports: { guest: number; host: number; hostIp?: string }[];
  volumes: { name: string; mount: string; sizeMiB?: number; readOnly: boolean }[];
  network: { internet: boolean; egress: { allow: string[]; deny: string[] } };
  restart: { policy: RestartPolicy; maxRetries: number; backoffMs: number };
  health?: WorkloadHealth;
  /** How many sandboxes run it; a change of this alone adds or removes sandboxes and replaces none. */
  replicas: number;
  state: 'running' | 'stopped';
}

/** One thing wrong with a file: its document (1-based), the workload's name when known, the field's path. */
export interface SpecProblem {
  document: number;
  name?: string;
  path: string;
  message: string;
}

export const WORKLOAD_NAME_PATTERN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
export const MAX_WORKLOADS_PER_APPLY = 64;
export const MAX_REPLICAS = 16;
const DEFAULT_RESTART = { policy: 'always', maxRetries: 5, backoffMs: 2000 } as const;
const DEFAULT_HEALTH = { intervalMs: 10_000, timeoutMs: 3_000, retries: 3, startPeriodMs: 0 } as const;
const MAX_DURATION_MS = 24 * 3600_000;
const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3600_000 };

/** `500ms`, `2s`, `1.5m`, `1h` → milliseconds; undefined when it is no duration. */
export function parseDurationMs(text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$/.exec(text);
  if (!match) return undefined;
  const ms = Math.round(Number(match[1]) * (DURATION_UNITS_MS[match[2]!] ?? 1));
  return Number.isSafeInteger(ms) ? ms : undefined;
}

/** Reads one document's fields; each reader records its problems and returns undefined for a bad value. */
class DocumentReader {
  readonly problems: SpecProblem[] = [];
  name: string | undefined;

  constructor(readonly document: number) {}

  problem(path: string, message: string): undefined {
    this.problems.push({ document: this.document, ...(this.name !== undefined ? { name: this.name } : {}), path, message });
    return undefined;
  }

  /** The object at `path` with only `allowed` keys; every other key is a problem. */
  object(value: unknown, path: string, allowed: readonly string[]): Record<string, unknown> | undefined {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return this.problem(path || '(document)', 'must be a mapping');
    const record = value as Record<string, unknown>;
    for (const key of Object.keys(record)) {
      if (!allowed.includes(key)) this.problem(join(path, key), `unknown field; known here: ${allowed.join(', ')}`);
    }
    return record;
  }

  string(value: unknown, path: string, options: { pattern?: RegExp; maxLength?: number; hint?: string } = {}): string | undefined {
    if (typeof value !== 'string' || value === '') return this.problem(path, 'must be a non-empty string');
    if (value.length > (options.maxLength ?? 4096)) return this.problem(path, `is longer than ${options.maxLength ?? 4096} characters`);
    if (options.pattern && !options.pattern.test(value))
      return this.problem(path, `"${value.slice(0, 80)}" ${options.hint ?? 'is malformed'}`);
    return value;
  }

  integer(value: unknown, path: string, min: number, max: number): number | undefined {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max)
      return this.problem(path, `must be a whole number from ${min} to ${max}`);
    return value;
  }

  boolean(value: unknown, path: string): boolean | undefined {
    if (typeof value !== 'boolean') return this.problem(path, 'must be true or false');
    return value;
  }

  duration(value: unknown, path: string, min = 0): number | undefined {
    const ms = typeof value === 'string' ? parseDurationMs(value) : undefined;
    if (ms === undefined || ms < min || ms > MAX_DURATION_MS)
      return this.problem(path, `must be a duration such as 500ms, 2s or 1m (at least ${min} ms, at most 24h)`);
    return ms;
  }

  size(value: unknown, path: string, min: number, max: number): number | undefined {
    const mib = typeof value === 'string' ? parseSizeMiB(value) : typeof value === 'number' ? parseSizeMiB(String(value)) : undefined;
    if (mib === undefined) return this.problem(path, `${JSON.stringify(value)} is no size: write 512M, 4G, 1.5GiB (a bare number is MiB)`);
    if (mib < min || mib > max) return this.problem(path, `${mib} MiB is outside ${min} MiB to ${max} MiB`);
    return mib;
  }

  stringList(value: unknown, path: string, max: number): string[] | undefined {
    if (!Array.isArray(value) || value.length === 0 || value.length > max)
      return this.problem(path, `must be a list of 1 to ${max} strings`);
    const items = value.map((item, i) => this.string(item, `${path}[${i}]`, { maxLength: 131072 }));
    return items.every((item) => item !== undefined) ? (items as string[]) : undefined;
  }
}

const join = (path: string, key: string) => (path ? `${path}.${key}` : key);

const TOP_FIELDS = [
  'kind',
  'name',
  'template',
  'image',
  'command',
  'env',
  'workdir',
  'user',
  'resources',
  'ports',
  'volumes',
  'network',
  'restart',
  'health',
  'replicas',
  'state',
] as const;

function readWorkload(doc: unknown, r: DocumentReader): WorkloadSpec | undefined {
  // The name first, so that every later problem can name the workload.
  if (typeof doc === 'object' && doc !== null && typeof (doc as { name?: unknown }).name === 'string')
    r.name = (doc as { name: string }).name;
  const raw = r.object(doc, '', TOP_FIELDS);
  if (!raw) return undefined;
  if (raw.kind !== 'Workload') r.problem('kind', 'must be "Workload"');
  const name = r.string(raw.name, 'name', { pattern: WORKLOAD_NAME_PATTERN, hint: 'is no DNS label (a-z, 0-9 and -, at most 63)' });
  if ((raw.template === undefined) === (raw.image === undefined)) r.problem('template', 'give either template or image, not both');
  const template = raw.template === undefined ? undefined : r.string(raw.template, 'template', { maxLength: 128 });
  const image = raw.image === undefined ? undefined : r.string(raw.image, 'image', { maxLength: 512 });
  const command = raw.command === undefined ? undefined : r.stringList(raw.command, 'command', limits.maxCommandArgs);
  const env: Record<string, string> = {};
  if (raw.env !== undefined) {
    const envMap = r.object(raw.env, 'env', Object.keys(typeof raw.env === 'object' && raw.env !== null ? raw.env : {}));
    for (const [key, value] of Object.entries(envMap ?? {})) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) r.problem(`env.${key}`, 'is no environment variable name');
      else if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') env[key] = String(value);
      else r.problem(`env.${key}`, 'must be a string');
    }
    if (Object.keys(env).length > limits.maxEnvVars) r.problem('env', `has more than ${limits.maxEnvVars} variables`);
  }
  const workdir = raw.workdir === undefined ? undefined : r.string(raw.workdir, 'workdir', { pattern: /^\//, hint: 'must be absolute' });
  const user = raw.user === undefined ? undefined : r.string(raw.user, 'user', { maxLength: 64 });

  const resources: WorkloadSpec['resources'] = {};
  if (raw.resources !== undefined) {
    const res = r.object(raw.resources, 'resources', ['cpus', 'memory', 'disk']);
    if (res?.cpus !== undefined) resources.cpus = r.integer(res.cpus, 'resources.cpus', limits.minVcpus, limits.maxVcpus);
    if (res?.memory !== undefined) resources.memoryMiB = r.size(res.memory, 'resources.memory', limits.minMemoryMiB, limits.maxMemoryMiB);
    if (res?.disk !== undefined) resources.diskMiB = r.size(res.disk, 'resources.disk', limits.minVolumeMiB, limits.maxDiskMiB);
  }

  const ports: WorkloadSpec['ports'] = [];
  if (raw.ports !== undefined) {
    if (!Array.isArray(raw.ports) || raw.ports.length > limits.maxPublishedPorts)
      r.problem('ports', `must be a list of at most ${limits.maxPublishedPorts} ports`);
    else
      raw.ports.forEach((item, i) => {
        const path = `ports[${i}]`;
        const port = r.object(item, path, ['guest', 'host', 'hostIp']);
        if (!port) return;
        const guest = r.integer(port.guest, `${path}.guest`, 1, 65535);
        const host = r.integer(port.host, `${path}.host`, 1, 65535);
        const hostIp = port.hostIp === undefined ? undefined : r.string(port.hostIp, `${path}.hostIp`, { maxLength: 64 });
        if (guest !== undefined && host !== undefined) ports.push({ guest, host, ...(hostIp !== undefined ? { hostIp } : {}) });
      });
  }

  const volumes: WorkloadSpec['volumes'] = [];
  if (raw.volumes !== undefined) {
    if (!Array.isArray(raw.volumes) || raw.volumes.length > limits.maxVolumesPerSandbox)
      r.problem('volumes', `must be a list of at most ${limits.maxVolumesPerSandbox} volumes`);
    else
      raw.volumes.forEach((item, i) => {
        const path = `volumes[${i}]`;
        const volume = r.object(item, path, ['name', 'mount', 'size', 'readOnly']);
        if (!volume) return;
        const volumeName = r.string(volume.name, `${path}.name`, {
          pattern: new RegExp(VOLUME_NAME_PATTERN),
          hint: 'is no volume name (a-z, 0-9 and -)',
        });
        const mount = r.string(volume.mount, `${path}.mount`, {
          pattern: /^\/./,
          maxLength: limits.maxMountPathLength,
          hint: 'must be an absolute path other than /',
        });
        const sizeMiB =
          volume.size === undefined ? undefined : r.size(volume.size, `${path}.size`, limits.minVolumeMiB, limits.maxVolumeMiB);
        const readOnly = volume.readOnly === undefined ? false : r.boolean(volume.readOnly, `${path}.readOnly`);
        if (volumes.some((v) => v.name === volumeName)) r.problem(`${path}.name`, `volume ${volumeName} is mounted twice`);
        if (volumeName && mount && readOnly !== undefined)
          volumes.push({ name: volumeName, mount, readOnly, ...(sizeMiB !== undefined ? { sizeMiB } : {}) });
      });
  }

  const network: WorkloadSpec['network'] = { internet: true, egress: { allow: [], deny: [] } };
  if (raw.network !== undefined) {
    const net = r.object(raw.network, 'network', ['internet', 'egress']);
    if (net?.internet !== undefined) network.internet = r.boolean(net.internet, 'network.internet') ?? true;
    if (net?.egress !== undefined) {
      const egress = r.object(net.egress, 'network.egress', ['allow', 'deny']);
      for (const list of ['allow', 'deny'] as const) {
        const value = egress?.[list];
        if (value === undefined) continue;
        if (!Array.isArray(value) || value.length > limits.maxEgressRules) {
          r.problem(`network.egress.${list}`, `must be a list of at most ${limits.maxEgressRules} CIDRs`);
          continue;
        }
        value.forEach((cidr, i) => {
          const ok = r.string(cidr, `network.egress.${list}[${i}]`, {
            pattern: /^\d{1,3}(\.\d{1,3}){3}(\/\d{1,2})?$/,
            hint: 'is no IPv4 CIDR',
          });
          if (ok) network.egress[list].push(ok);
        });
      }
    }
  }

  const restart: WorkloadSpec['restart'] = { ...DEFAULT_RESTART };
  if (raw.restart !== undefined) {
    const rs = r.object(raw.restart, 'restart', ['policy', 'maxRetries', 'backoff']);
    if (rs?.policy !== undefined) {
      if (rs.policy === 'always' || rs.policy === 'on-failure' || rs.policy === 'never') restart.policy = rs.policy;
      else r.problem('restart.policy', 'must be always, on-failure or never');
    }
    if (rs?.maxRetries !== undefined) restart.maxRetries = r.integer(rs.maxRetries, 'restart.maxRetries', 0, 1000) ?? restart.maxRetries;
    if (rs?.backoff !== undefined) restart.backoffMs = r.duration(rs.backoff, 'restart.backoff', 100) ?? restart.backoffMs;
  }

  let health: WorkloadHealth | undefined;
  if (raw.health !== undefined) {
    const h = r.object(raw.health, 'health', ['http', 'tcp', 'exec', 'interval', 'timeout', 'retries', 'startPeriod']);
    if (h) {
      const kinds = (['http', 'tcp', 'exec'] as const).filter((k) => h[k] !== undefined);
      let probe: HealthProbe | undefined;
      if (kinds.length !== 1) r.problem('health', 'needs exactly one of http, tcp or exec');
      else if (kinds[0] === 'http') {
        const http = r.object(h.http, 'health.http', ['port', 'path']);
        const port = r.integer(http?.port, 'health.http.port', 1, 65535);
        const path =
          http?.path === undefined ? '/' : r.string(http.path, 'health.http.path', { pattern: /^\//, hint: 'must start with /' });
        if (port !== undefined && path !== undefined) probe = { http: { port, path } };
      } else if (kinds[0] === 'tcp') {
        const tcp = r.object(h.tcp, 'health.tcp', ['port']);
        const port = r.integer(tcp?.port, 'health.tcp.port', 1, 65535);
        if (port !== undefined) probe = { tcp: { port } };
      } else {
        const cmd = r.stringList(h.exec, 'health.exec', limits.maxCommandArgs);
        if (cmd) probe = { exec: cmd };
      }
      const intervalMs = h.interval === undefined ? DEFAULT_HEALTH.intervalMs : r.duration(h.interval, 'health.interval', 500);
      const timeoutMs = h.timeout === undefined ? DEFAULT_HEALTH.timeoutMs : r.duration(h.timeout, 'health.timeout', 100);
      const retries = h.retries === undefined ? DEFAULT_HEALTH.retries : r.integer(h.retries, 'health.retries', 1, 100);
      const startPeriodMs = h.startPeriod === undefined ? DEFAULT_HEALTH.startPeriodMs : r.duration(h.startPeriod, 'health.startPeriod');
      if (probe && intervalMs !== undefined && timeoutMs !== undefined && retries !== undefined && startPeriodMs !== undefined)
        health = { probe, intervalMs, timeoutMs, retries, startPeriodMs };
    }
  }

  const replicas = raw.replicas === undefined ? 1 : r.integer(raw.replicas, 'replicas', 1, MAX_REPLICAS);
  if (replicas !== undefined && replicas > 1) {
    // A host port is bound by one VM, and a read-write volume is attached to one VM: neither can be shared by replicas.
    for (const [i, port] of ports.entries())
      r.problem(
        `ports[${i}].host`,
        `host port ${port.host} can serve one VM, not ${replicas} replicas: publish no host port, or use replicas: 1`,
      );
    volumes.forEach((volume, i) => {
      if (!volume.readOnly)
        r.problem(
          `volumes[${i}]`,
          `volume ${volume.name} is read-write and a volume has one writer, so it cannot be mounted by ${replicas} replicas: mount it readOnly: true, or use replicas: 1`,
        );
    });
  }
  let state: WorkloadSpec['state'] = 'running';
  if (raw.state !== undefined) {
    if (raw.state === 'running' || raw.state === 'stopped') state = raw.state;
    else r.problem('state', 'must be running or stopped');
  }

  if (r.problems.length > 0 || name === undefined || (template === undefined && image === undefined)) return undefined;
  return {
    name,
    ...(template !== undefined ? { template } : {}),
    ...(image !== undefined ? { image } : {}),
    ...(command ? { command } : {}),
    env,
    ...(workdir ? { workdir } : {}),
    ...(user ? { user } : {}),
    resources,
    ports,
    volumes,
    network,
    restart,
    ...(health ? { health } : {}),
    replicas: replicas ?? 1,
    state,
  };
}

/** Whether two published ports' addresses overlap (unset is 127.0.0.1, as for a sandbox; 0.0.0.0 takes every address). */
export function hostPortsClash(a: { host: number; hostIp?: string }, b: { host: number; hostIp?: string }): boolean {
  if (a.host !== b.host) return false;
  const ipA = a.hostIp ?? '127.0.0.1';
  const ipB = b.hostIp ?? '127.0.0.1';
  return ipA === ipB || ipA === '0.0.0.0' || ipB === '0.0.0.0';
}

/** Where a spec's volume `volume` clashes with `other`'s: two writers, or a writer and a reader. */
export function volumeClash(spec: WorkloadSpec, other: WorkloadSpec): { index: number; name: string } | undefined {
  for (const [index, volume] of spec.volumes.entries()) {
    const theirs = other.volumes.find((v) => v.name === volume.name);
    if (theirs && (!volume.readOnly || !theirs.readOnly)) return { index, name: volume.name };
  }
  return undefined;
}

/**
 * Every document of a file, checked alone and against each other (names,
 * host ports, read-write volumes). Specs only when there is no problem at all:
 * an apply with one bad document does nothing.
 */
export function checkWorkloadDocuments(documents: readonly unknown[]): { specs: WorkloadSpec[]; problems: SpecProblem[] } {
  const problems: SpecProblem[] = [];
  const specs: { spec: WorkloadSpec; document: number }[] = [];
  if (documents.length === 0) problems.push({ document: 0, path: '(file)', message: 'holds no workload' });
  if (documents.length > MAX_WORKLOADS_PER_APPLY)
    problems.push({ document: 0, path: '(file)', message: `holds more than ${MAX_WORKLOADS_PER_APPLY} workloads` });
  documents.forEach((doc, i) => {
    const reader = new DocumentReader(i + 1);
    const spec = readWorkload(doc, reader);
    problems.push(...reader.problems);
    if (spec) specs.push({ spec, document: i + 1 });
  });
  for (const [i, { spec, document }] of specs.entries()) {
    for (const { spec: earlier, document: earlierDocument } of specs.slice(0, i)) {
      const where = `document ${earlierDocument} (${earlier.name})`;
      if (earlier.name === spec.name) problems.push({ document, name: spec.name, path: 'name', message: `is also the name of ${where}` });
      spec.ports.forEach((port, p) => {
        if (earlier.ports.some((theirs) => hostPortsClash(port, theirs)))
          problems.push({
            document,
            name: spec.name,
            path: `ports[${p}].host`,
            message: `host port ${port.host} is also claimed by ${where}`,
          });
      });
      const clash = volumeClash(spec, earlier);
      if (clash)
        problems.push({
          document,
          name: spec.name,
          path: `volumes[${clash.index}]`,
          message: `volume ${clash.name} is also mounted by ${where}, and a volume has one writer or only readers`,
        });
    }
  }
  return { specs: problems.length === 0 ? specs.map((s) => s.spec) : [], problems };
}

/** A problem as one line: `document 2 (web): ports[0].host: host port 8080 is also claimed by ...`. */
export function formatSpecProblem(problem: SpecProblem): string {
  const where = problem.document === 0 ? 'file' : `document ${problem.document}${problem.name ? ` (${problem.name})` : ''}`;
  return `${where}: ${problem.path}: ${problem.message}`;
}
