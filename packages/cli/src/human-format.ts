// Turns daemon objects into the text people read: tables, ages, sizes and the
// `inspect` view. Pure functions of their inputs (the clock is a parameter), so
// tests pin the output; `--json` output never goes through here.
import type {
  ApiKey,
  DaemonInfo,
  Sandbox as SandboxInfo,
  SandboxNetwork,
  SandboxState,
  Template,
  TemplateDetails,
} from '@capsule/protocol';
import { noPaint, visibleLength, type Color, type Paint } from './terminal-color.js';

/** Left-aligned columns separated by three spaces, like docker's tables; colored cells are padded by what shows. */
export function renderTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => visibleLength(row[column] ?? ''))));
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, column) =>
        column === cells.length - 1 ? cell : cell + ' '.repeat(Math.max(0, (widths[column] ?? 0) - visibleLength(cell))),
      )
      .join('   ')
      .trimEnd();
  return `${[line(header), ...rows.map(line)].join('\n')}\n`;
}

/** `45s`, `3m`, `2h`, `5d` since `isoTime`; `-` for an unreadable time. */
export function formatAge(isoTime: string, now: number = Date.now()): string {
  const then = Date.parse(isoTime);
  if (Number.isNaN(then)) return '-';
  const seconds = Math.max(0, Math.floor((now - then) / 1000));
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86_400)}d`;
}

/** `512M`, `1G`, `1.5G` for a size in MiB. */
export function formatMemoryMiB(mib: number): string {
  if (mib >= 1024) return `${Number((mib / 1024).toFixed(1))}G`;
  return `${mib}M`;
}

/** `900 B`, `1.5 KiB`, `4.0 GiB`. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** `850 ms`, `4.8 s`, `2m 5s`. */
export function formatElapsed(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)}m ${Math.round((ms % 60_000) / 1000)}s`;
}

/** Time left until `isoTime` (`4m`, `0s` once passed), or `-` when there is none. */
export function formatTimeLeft(isoTime: string | undefined, now: number = Date.now()): string {
  if (isoTime === undefined) return '-';
  const then = Date.parse(isoTime);
  if (Number.isNaN(then)) return '-';
  return formatAge(new Date(now).toISOString(), then);
}

const STATE_COLORS: Partial<Record<SandboxState, Color>> = {
  running: 'green',
  starting: 'yellow',
  paused: 'yellow',
  stopped: 'grey',
  error: 'red',
  killed: 'grey',
};

/** `capsule ls`; `wide` adds the ports, the guest address and the metadata; `paint` colors the state. */
export function sandboxTable(
  sandboxes: readonly SandboxInfo[],
  { now = Date.now(), wide = false, paint = noPaint }: { now?: number; wide?: boolean; paint?: Paint } = {},
): string {
  const header = ['ID', 'NAME', 'TEMPLATE', 'STATE', 'CPUS', 'MEM', 'NET', 'AGE', 'TIME LEFT'];
  return renderTable(
    wide ? [...header, 'ADDRESS', 'PORTS', 'METADATA'] : header,
    sandboxes.map((sandbox) => {
      const color = STATE_COLORS[sandbox.state];
      const row = [
        sandbox.id,
        sandbox.name ?? '-',
        sandbox.template,
        color ? paint(sandbox.state, color) : sandbox.state,
        String(sandbox.vcpus),
        formatMemoryMiB(sandbox.memoryMiB),
        sandbox.network.internet ? (sandbox.network.allow.length + sandbox.network.deny.length > 0 ? 'rules' : 'on') : 'off',
        formatAge(sandbox.createdAt, now),
        formatTimeLeft(sandbox.expiresAt, now),
      ];
      if (!wide) return row;
      const metadata = Object.entries(sandbox.metadata);
      return [
        ...row,
        sandbox.network.guestAddress || '-',
        sandbox.ports.map((port) => `${port.hostIp}:${port.hostPort}->${port.guestPort}`).join(',') || '-',
        metadata.map(([key, value]) => `${key}=${value}`).join(',') || '-',
      ];
    }),
  );
}

export function templateTable(templates: readonly Template[], now: number = Date.now()): string {
  return renderTable(
    ['NAME', 'READY', 'WARM SNAPSHOT', 'CPUS', 'MEM', 'DISK', 'AGE'],
    templates.map((template) => [
      template.name,
      template.ready ? 'yes' : 'no',
      template.warmSnapshot,
      String(template.defaultVcpus),
      formatMemoryMiB(template.defaultMemoryMiB),
      formatBytes(template.rootfsBytes),
      formatAge(template.createdAt, now),
    ]),
  );
}

/** The human view of `capsule apikey ls`: the keys themselves are never shown again. */
export function apiKeyTable(keys: readonly ApiKey[], now: number = Date.now()): string {
  return renderTable(
    ['ID', 'NAME', 'KEY', 'CREATED', 'LAST USED'],
    keys.map((key) => [
      key.id,
      key.name,
      key.mask,
      formatAge(key.createdAt, now),
      key.lastUsedAt ? formatAge(key.lastUsedAt, now) : 'never',
    ]),
  );
}

/** `Key   value` lines, the keys padded to one width (the `inspect` views). */
export function keyValueLines(pairs: readonly (readonly [string, string])[]): string[] {
  const width = Math.max(...pairs.map(([key]) => key.length));
  return pairs.map(([key, value]) => `${key.padEnd(width)}   ${value}`);
}

/** `on (user mode, 10.0.2.15/24 via 10.0.2.2, DNS 10.0.2.3)`, with the egress lists when there are any. */
export function describeNetwork(network: SandboxNetwork): string {
  const lists = [
    ...(network.allow.length > 0 ? [`allow ${network.allow.join(' ')}`] : []),
    ...(network.deny.length > 0 ? [`deny ${network.deny.join(' ')}`] : []),
  ];
  const where = `${network.mode} mode, ${network.guestAddress} via ${network.gateway}, DNS ${network.dns}${network.hostAddress ? `, host side ${network.hostAddress}` : ''}`;
  return `${network.internet ? 'on' : 'off'}${lists.length > 0 ? `, ${lists.join(', ')}` : ''} (${where})`;
}

/** The human view of `capsule inspect`. */
export function describeSandbox(sandbox: SandboxInfo, now: number = Date.now()): string {
  const state = `${sandbox.state} (${sandbox.stateReason}${sandbox.stateMessage ? `: ${sandbox.stateMessage}` : ''})`;
  const pairs: [string, string][] = [
    ['ID', sandbox.id],
    ['Name', sandbox.name ?? '-'],
    ['Template', sandbox.template],
    ['State', state],
    ['CPUs', String(sandbox.vcpus)],
    ['Memory', formatMemoryMiB(sandbox.memoryMiB)],
    ['Accel', sandbox.accel],
    ['Created', `${sandbox.createdAt} (${formatAge(sandbox.createdAt, now)} ago)`],
  ];
  if (sandbox.bootMs !== undefined) pairs.push(['Boot', formatElapsed(sandbox.bootMs)]);
  if (sandbox.pid !== undefined) pairs.push(['PID', String(sandbox.pid)]);
  if (sandbox.memoryUse)
    pairs.push(['Host memory', `${sandbox.memoryUse.privateMiB} MiB private, ${sandbox.memoryUse.sharedMiB} MiB shared`]);
  pairs.push(['Network', describeNetwork(sandbox.network)]);
  pairs.push([
    'Timeout',
    sandbox.timeoutMs > 0 ? `${formatElapsed(sandbox.timeoutMs)}, ${formatTimeLeft(sandbox.expiresAt)} left` : 'none',
  ]);
  if (sandbox.ports.length > 0) pairs.push(['Ports', sandbox.ports.map((p) => `${p.hostIp}:${p.hostPort}->${p.guestPort}`).join(', ')]);
  pairs.push(['Hosts', `<port>-${sandbox.id}.${sandbox.domain}`]);
  const metadata = Object.entries(sandbox.metadata);
  pairs.push(['Metadata', metadata.length === 0 ? '-' : metadata.map(([key, value]) => `${key}=${value}`).join(', ')]);
  const lines = keyValueLines(pairs);
  if (sandbox.history && sandbox.history.length > 0) {
    lines.push('History');
    const rows = sandbox.history.map((transition) => [transition.at, transition.state, transition.reason, transition.message ?? '']);
    lines.push(
      ...renderTable(
        ['  AT', 'STATE', 'REASON', 'MESSAGE'],
        rows.map(([at, ...rest]) => [`  ${at}`, ...rest]),
      )
        .trimEnd()
        .split('\n'),
    );
  }
  return `${lines.join('\n')}\n`;
}

/** A command as a Capsulefile writes it: the shell form's text, else the exec form's JSON array. */
function capsulefileCommand(argv: readonly string[]): string {
  return argv.length === 3 && argv[0] === '/bin/sh' && argv[1] === '-c' ? argv[2]! : JSON.stringify(argv);
}

/** The human view of `capsule template inspect`. */
export function describeTemplate(template: TemplateDetails, now: number = Date.now()): string {
  const source = { base: 'base (built by capsuled prepare)', image: 'image', capsulefile: 'Capsulefile' }[template.source];
  const pairs: [string, string][] = [
    ['Name', template.name],
    ['Source', template.from ? `${source}: ${template.from}` : source],
    ['Image', template.imageDigest ?? '-'],
    ['Start', template.startCommand ? capsulefileCommand(template.startCommand) : '-'],
    [
      'Ready',
      template.readyCommand
        ? `${capsulefileCommand(template.readyCommand)} (retried for ${formatElapsed(template.readyTimeoutMs ?? 0)})`
        : '-',
    ],
    ['User', template.user ?? '-'],
    ['Workdir', template.workdir ?? '-'],
    [
      'Env',
      Object.keys(template.env).length === 0
        ? '-'
        : Object.entries(template.env)
            .map(([key, value]) => `${key}=${value}`)
            .join(', '),
    ],
    ['CPUs', String(template.defaultVcpus)],
    ['Memory', formatMemoryMiB(template.defaultMemoryMiB)],
    ['Root disk', `${template.rootfs} (${formatBytes(template.rootfsBytes)}, ${formatBytes(template.rootfsDiskBytes)} on disk)`],
    [
      'Warm snapshot',
      `${template.warmSnapshot}${template.warmSnapshotDiskBytes !== undefined ? ` (${formatBytes(template.warmSnapshotDiskBytes)} on disk)` : ''}`,
    ],
    ['Created', `${template.createdAt} (${formatAge(template.createdAt, now)} ago)`],
  ];
  const lines = keyValueLines(pairs);
  if (template.warmSnapshotError) lines.push('Warm snapshot error', ...template.warmSnapshotError.split('\n').map((line) => `  ${line}`));
  return `${lines.join('\n')}\n`;
}

/** The human view of `capsule daemon status`; `service`: how systemd runs it, for this host's default daemon only. */
export function describeDaemon(info: DaemonInfo, now: number = Date.now(), service?: string): string {
  return `${keyValueLines([
    ['capsuled', `${info.version}, running (pid ${info.pid}, up ${formatAge(info.startedAt, now)})`],
    ['Accel', `${info.accel} (${info.accelReason})`],
    ['QEMU', info.qemuVersion],
    ['Sandboxes', `${info.sandboxesRunning} running`],
    ['Socket', info.socketPath],
    ...(info.tcpAddress
      ? [
          [
            'TCP',
            `${info.tls ? 'https' : 'http'}://${info.tcpAddress}${info.tls ? '' : ' (plain HTTP: API keys travel in cleartext)'}`,
          ] as [string, string],
        ]
      : []),
    ...(info.tls
      ? [
          ['TLS SHA-256', info.tls.fingerprintSha256] as [string, string],
          ['TLS cert', `${info.tls.certificatePath}${info.tls.generated ? ' (self-signed, made by capsuled)' : ''}`] as [string, string],
        ]
      : []),
    ['State dir', info.stateDir],
    ['Runtime dir', info.runtimeDir],
    ...(service === undefined ? [] : [['Service', service] as [string, string]]),
  ]).join('\n')}\n`;
}

/** `Nov 25 14:02` for this year, `Nov 25  2025` otherwise, like `ls -l`; `-` when unknown. */
export function formatModifiedTime(time: Date | undefined, now: number = Date.now()): string {
  if (time === undefined || Number.isNaN(time.getTime())) return '-';
  const month = time.toLocaleString('en-US', { month: 'short', timeZone: 'UTC' });
  const day = String(time.getUTCDate()).padStart(2, ' ');
  if (time.getUTCFullYear() === new Date(now).getUTCFullYear()) {
    return `${month} ${day} ${String(time.getUTCHours()).padStart(2, '0')}:${String(time.getUTCMinutes()).padStart(2, '0')}`;
  }
  return `${month} ${day}  ${time.getUTCFullYear()}`;
}

export interface FileRow {
  path: string;
  permissions: string;
  owner: string;
  group: string;
  size: number;
  modifiedTime: Date | undefined;
  isSymlink: boolean;
  symlinkTarget: string | undefined;
}

/** `capsule files ls`: one `ls -l`-style line per entry (times in UTC). */
export function fileTable(entries: readonly FileRow[], now: number = Date.now()): string {
  if (entries.length === 0) return '';
  return renderTable(
    ['PERMISSIONS', 'OWNER', 'GROUP', 'SIZE', 'MODIFIED (UTC)', 'PATH'],
    entries.map((entry) => [
      entry.permissions,
      entry.owner,
      entry.group,
      String(entry.size),
      formatModifiedTime(entry.modifiedTime, now),
      entry.isSymlink && entry.symlinkTarget !== undefined ? `${entry.path} -> ${entry.symlinkTarget}` : entry.path,
    ]),
  );
}

export interface ProcessRow {
  pid: number;
  tag: string | undefined;
  cmd: string;
  args: readonly string[];
  cwd: string | undefined;
}

/** A command line as a shell would take it back: arguments with spaces or quotes are single-quoted. */
export function shellQuote(args: readonly string[]): string {
  return args.map((arg) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** `capsule ps`: the processes the sandbox's agent runs. */
export function processTable(processes: readonly ProcessRow[]): string {
  return renderTable(
    ['PID', 'TAG', 'CWD', 'COMMAND'],
    [...processes]
      .sort((a, b) => a.pid - b.pid)
      .map((process) => [String(process.pid), process.tag ?? '-', process.cwd ?? '-', shellQuote([process.cmd, ...process.args])]),
  );
}
