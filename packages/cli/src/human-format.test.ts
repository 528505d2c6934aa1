import type { Sandbox as SandboxInfo } from '@capsule/protocol';
import { describe, expect, it } from 'vitest';
import { ansiPaint } from './terminal-color.js';
import {
  describeDaemon,
  describeSandbox,
  fileTable,
  formatAge,
  formatBytes,
  formatElapsed,
  formatMemoryMiB,
  formatModifiedTime,
  formatTimeLeft,
  processTable,
  renderTable,
  sandboxTable,
  shellQuote,
  templateTable,
} from './human-format.js';

const now = Date.parse('2026-01-01T12:00:00Z');
const sandbox: SandboxInfo = {
  id: 'sb_7k2m9q',
  name: null,
  template: 'base',
  state: 'running',
  stateReason: 'user',
  vcpus: 2,
  memoryMiB: 1536,
  accel: 'tcg',
  metadata: { owner: 'ann' },
  createdAt: '2026-01-01T11:57:00Z',
  bootMs: 4810,
  onTimeout: 'kill',
  desiredState: 'running',
  timeoutMs: 300_000,
  expiresAt: '2026-01-01T12:02:00Z',
  network: { mode: 'user', internet: true, allow: [], deny: [], guestAddress: '10.0.2.15/24', gateway: '10.0.2.2', dns: '10.0.2.3' },
  ports: [{ hostIp: '127.0.0.1', hostPort: 8080, guestPort: 80 }],
  domain: 'localhost',
  trafficAccessToken: 'token',
  history: [
    { state: 'starting', reason: 'user', at: '2026-01-01T11:57:00Z' },
    { state: 'running', reason: 'agent_ready', at: '2026-01-01T11:57:05Z' },
  ],
};

describe('templates table', () => {
  it('shows whether each template has a warm snapshot', () => {
    const template = {
      name: 'base',
      ready: true,
      rootfsBytes: 2 ** 30,
      defaultVcpus: 1,
      defaultMemoryMiB: 512,
      createdAt: '2026-01-01T11:00:00Z',
      warmSnapshot: 'ready' as const,
    };
    expect(templateTable([template, { ...template, name: 'py', warmSnapshot: 'building' }], now).split('\n')).toEqual([
      'NAME   READY   WARM SNAPSHOT   CPUS   MEM    DISK      AGE',
      'base   yes     ready           1      512M   1.0 GiB   1h',
      'py     yes     building        1      512M   1.0 GiB   1h',
      '',
    ]);
  });
});

describe('time left', () => {
  it('counts down to the expiry, and shows none as -', () => {
    expect(formatTimeLeft('2026-01-01T12:02:00Z', now)).toBe('2m');
    expect(formatTimeLeft('2026-01-01T12:00:30Z', now)).toBe('30s');
    expect(formatTimeLeft('2026-01-01T11:59:00Z', now)).toBe('0s');
    expect(formatTimeLeft(undefined, now)).toBe('-');
  });
});

describe('human formatting', () => {
  it('formats ages, sizes and durations compactly', () => {
    expect(formatAge('2026-01-01T11:59:15Z', now)).toBe('45s');
    expect(formatAge('2026-01-01T11:57:00Z', now)).toBe('3m');
    expect(formatAge('2026-01-01T09:00:00Z', now)).toBe('3h');
    expect(formatAge('2025-12-27T12:00:00Z', now)).toBe('5d');
    expect(formatAge('2026-01-01T12:00:09Z', now)).toBe('0s');
    expect(formatAge('never', now)).toBe('-');
    expect(formatMemoryMiB(512)).toBe('512M');
    expect(formatMemoryMiB(1024)).toBe('1G');
    expect(formatMemoryMiB(1536)).toBe('1.5G');
    expect(formatBytes(900)).toBe('900 B');
    expect(formatBytes(5 * 1024 ** 3)).toBe('5.0 GiB');
    expect(formatElapsed(850)).toBe('850 ms');
    expect(formatElapsed(4810)).toBe('4.8 s');
    expect(formatElapsed(125_000)).toBe('2m 5s');
  });

  it('aligns table columns to the widest cell', () => {
    expect(
      renderTable(
        ['A', 'LONG'],
        [
          ['xyz', '1'],
          ['q', '22'],
        ],
      ),
    ).toBe('A     LONG\nxyz   1\nq     22\n');
  });

  it('renders the ls table', () => {
    const killed = {
      ...sandbox,
      id: 'sb_2',
      name: 'web',
      memoryMiB: 512,
      state: 'killed' as const,
      expiresAt: undefined,
      network: { ...sandbox.network, internet: false },
    };
    expect(sandboxTable([sandbox, killed], { now })).toBe(
      [
        'ID          NAME   TEMPLATE   STATE     CPUS   MEM    NET   AGE   TIME LEFT',
        'sb_7k2m9q   -      base       running   2      1.5G   on    3m    2m',
        'sb_2        web    base       killed    2      512M   off   3m    -',
        '',
      ].join('\n'),
    );
  });

  it('adds the address, ports and metadata in the wide ls table', () => {
    const lines = sandboxTable([sandbox], { now, wide: true }).split('\n');
    expect(lines[0]).toMatch(/TIME LEFT {3}ADDRESS +PORTS +METADATA$/);
    expect(lines[1]).toMatch(/2m +10\.0\.2\.15\/24 +127\.0\.0\.1:8080->80 +owner=ann$/);
  });

  it('colors the state without shifting the columns', () => {
    const plain = sandboxTable([sandbox], { now });
    const colored = sandboxTable([sandbox], { now, paint: ansiPaint });
    expect(colored).toContain('\x1b[32mrunning\x1b[39m');
    expect(colored.replace(/\x1b\[[0-9;]*m/g, '')).toBe(plain);
  });

  it('renders inspect with history', () => {
    const text = describeSandbox(sandbox, now);
    expect(text).toContain('State      running (user)');
    expect(text).toContain('Network    on (user mode, 10.0.2.15/24 via 10.0.2.2, DNS 10.0.2.3)');
    expect(text).toContain('Metadata   owner=ann');
    expect(text).toContain('Boot       4.8 s');
    expect(text).toContain('Ports      127.0.0.1:8080->80');
    expect(text).toContain('Hosts      <port>-sb_7k2m9q.localhost');
    expect(text).toMatch(/History\n {2}AT +STATE +REASON +MESSAGE\n {2}2026-01-01T11:57:00Z +starting +user\n/);
  });
});

describe('file and process tables', () => {
  it('shows modification times like ls -l: the time this year, the year otherwise', () => {
    expect(formatModifiedTime(new Date('2026-01-01T09:05:00Z'), now)).toBe('Jan  1 09:05');
    expect(formatModifiedTime(new Date('2024-11-25T09:05:00Z'), now)).toBe('Nov 25  2024');
    expect(formatModifiedTime(undefined, now)).toBe('-');
  });

  it('lists entries with their link targets', () => {
    const base = {
      permissions: '-rw-r--r--',
      owner: 'root',
      group: 'root',
      size: 3,
      modifiedTime: new Date('2026-01-01T09:05:00Z'),
      isSymlink: false,
      symlinkTarget: undefined,
    };
    expect(
      fileTable(
        [
          { ...base, path: '/a' },
          { ...base, path: '/l', permissions: 'Lrwxrwxrwx', isSymlink: true, symlinkTarget: '/a' },
        ],
        now,
      ),
    ).toBe(
      'PERMISSIONS   OWNER   GROUP   SIZE   MODIFIED (UTC)   PATH\n' +
        '-rw-r--r--    root    root    3      Jan  1 09:05     /a\n' +
        'Lrwxrwxrwx    root    root    3      Jan  1 09:05     /l -> /a\n',
    );
    expect(fileTable([], now)).toBe('');
  });

  it('quotes command lines so that they read back as the same arguments', () => {
    expect(shellQuote(['sleep', '600'])).toBe('sleep 600');
    expect(shellQuote(['/bin/bash', '-lc', "echo 'hi' there"])).toBe(`/bin/bash -lc 'echo '\\''hi'\\'' there'`);
    expect(shellQuote(['printf', ''])).toBe("printf ''");
  });

  it('lists processes by pid', () => {
    expect(
      processTable([
        { pid: 20, tag: undefined, cmd: 'sleep', args: ['9'], cwd: undefined },
        { pid: 3, tag: 'start', cmd: 'node', args: ['app.js'], cwd: '/app' },
      ]),
    ).toBe('PID   TAG     CWD    COMMAND\n3     start   /app   node app.js\n20    -       -      sleep 9\n');
  });
});

describe('daemon status', () => {
  const info = {
    version: '0.1.0',
    pid: 42,
    accel: 'tcg',
    accelReason: 'no /dev/kvm',
    qemuVersion: '8.2.2',
    stateDir: '/var/lib/capsule',
    runtimeDir: '/run/capsule',
    socketPath: '/run/capsule/capsuled.sock',
    domain: 'localhost',
    sandboxesRunning: 0,
    startedAt: new Date(0).toISOString(),
  } as const;

  it('shows the TCP address and the fingerprint clients pin', () => {
    const text = describeDaemon(
      {
        ...info,
        tcpAddress: '127.0.0.1:3000',
        tls: { fingerprintSha256: 'AB:CD', certificatePath: '/var/lib/capsule/tls.crt', generated: true },
      },
      0,
    );
    expect(text).toMatch(/TCP +https:\/\/127\.0\.0\.1:3000\n/);
    expect(text).toMatch(/TLS SHA-256 +AB:CD\n/);
    expect(text).toContain('/var/lib/capsule/tls.crt (self-signed, made by capsuled)');
  });

  it('says so when the TCP listener is plain HTTP', () => {
    expect(describeDaemon({ ...info, tcpAddress: '127.0.0.1:3000' }, 0)).toContain(
      'http://127.0.0.1:3000 (plain HTTP: API keys travel in cleartext)',
    );
    expect(describeDaemon(info, 0)).not.toContain('TCP');
  });
});
