import type { Sandbox as SandboxInfo } from '@capsule/protocol';
import { describe, expect, it } from 'vitest';
import { describeSandbox, formatAge, formatBytes, formatElapsed, formatMemoryMiB, formatTimeLeft, renderTable, sandboxTable, templateTable } from './human-format.js';

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
  timeoutMs: 300_000,
  expiresAt: '2026-01-01T12:02:00Z',
  history: [
    { state: 'starting', reason: 'user', at: '2026-01-01T11:57:00Z' },
    { state: 'running', reason: 'agent_ready', at: '2026-01-01T11:57:05Z' },
  ],
};

describe('templates table', () => {
  it('shows whether each template has a warm snapshot', () => {
    const template = { name: 'base', ready: true, rootfsBytes: 2 ** 30, defaultVcpus: 1, defaultMemoryMiB: 512, createdAt: '2026-01-01T11:00:00Z', warmSnapshot: 'ready' as const };
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
    expect(renderTable(['A', 'LONG'], [['xyz', '1'], ['q', '22']])).toBe('A     LONG\nxyz   1\nq     22\n');
  });

  it('renders the ls table', () => {
    const killed = { ...sandbox, id: 'sb_2', name: 'web', memoryMiB: 512, state: 'killed' as const, expiresAt: undefined };
    expect(sandboxTable([sandbox, killed], now)).toBe(
      [
        'ID          NAME   TEMPLATE   STATE     CPUS   MEM    AGE   TIME LEFT',
        'sb_7k2m9q   -      base       running   2      1.5G   3m    2m',
        'sb_2        web    base       killed    2      512M   3m    -',
        '',
      ].join('\n'),
    );
  });

  it('renders inspect with history', () => {
    const text = describeSandbox(sandbox, now);
    expect(text).toContain('State      running (user)');
    expect(text).toContain('Metadata   owner=ann');
    expect(text).toContain('Boot       4.8 s');
    expect(text).toMatch(/History\n {2}AT +STATE +REASON +MESSAGE\n {2}2026-01-01T11:57:00Z +starting +user\n/);
  });
});
