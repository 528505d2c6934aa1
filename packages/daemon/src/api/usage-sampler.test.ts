import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Sandbox } from '@capsule/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../log.js';
import { TAP_IFNAME } from '../network/tap-network.js';
import {
  cpuPercentBetween,
  GUEST_EVERY_POINTS,
  HISTORY_SPAN_MS,
  parseStatusMemory,
  UsageSampler,
  type UsageSources,
} from './usage-sampler.js';

const guestAnswer = { ts: 1, cpu_count: 2, cpu_used_pct: 40, mem_total: 512e6, mem_used: 100e6, disk_total: 2e9, disk_used: 3e8 };

describe('UsageSampler', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-sampler-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  // This test process stands in for a sandbox's QEMU: its /proc files are real.
  const running = { id: 'sb_run', template: 'base', state: 'running', pid: process.pid, network: { mode: 'user' } } as Sandbox;
  const paused = { id: 'sb_paused', template: 'base', state: 'paused' } as Sandbox;

  const samplerWith = (sources: Partial<UsageSources>, intervalMs = 5000) =>
    new UsageSampler(
      intervalMs,
      { listSandboxes: async () => [running, paused], stateDir: (id) => path.join(dir, id), askGuest: async () => guestAnswer, ...sources },
      silentLogger,
    );

  it('keeps 30 minutes of points at 5 s, and never more than 3600 points at a shorter interval', () => {
    expect(samplerWith({}).retentionMs).toBe(HISTORY_SPAN_MS);
    expect(samplerWith({}, 100).retentionMs).toBe(3600 * 100);
    expect(samplerWith({}, 0).retentionMs).toBe(0);
  });

  it("takes a point of each running sandbox per tick, with the guest's view on every few points", async () => {
    let asked = 0;
    const sampler = samplerWith({
      askGuest: async () => {
        asked += 1;
        return guestAnswer;
      },
    });
    const t0 = Date.UTC(2026, 0, 1);
    for (let i = 0; i < 7; i += 1) await sampler.tick(t0 + i * 5000);
    const points = sampler.history('sb_run', t0, t0 + 60_000);
    expect(points.map((p) => Date.parse(p.timestamp))).toEqual([0, 1, 2, 3, 4, 5, 6].map((i) => t0 + i * 5000));
    expect(points[0]?.cpuPercent).toBeUndefined();
    expect(points[1]?.cpuPercent).toBeGreaterThanOrEqual(0);
    expect(points[1]?.cpuSeconds).toBeGreaterThan(0);
    expect(points[1]?.memoryRssBytes).toBeGreaterThan(0);
    expect(points.map((p) => p.guest !== undefined)).toEqual([0, 1, 2, 3, 4, 5, 6].map((i) => i % GUEST_EVERY_POINTS === 0));
    expect(points[0]?.guest).toEqual({
      cpuCount: 2,
      cpuUsedPct: 40,
      memUsedBytes: 100e6,
      memTotalBytes: 512e6,
      diskUsedBytes: 3e8,
      diskTotalBytes: 2e9,
    });
    expect(asked).toBe(3);
    // A paused sandbox has no QEMU to read.
    expect(sampler.history('sb_paused', t0, t0 + 60_000)).toEqual([]);
    expect(sampler.history('sb_run', t0 + 5000, t0 + 10_000)).toHaveLength(2);
  });

  it('forgets a sandbox once it is no longer listed', async () => {
    let listed = [running];
    const sampler = samplerWith({ listSandboxes: async () => listed });
    await sampler.tick(1_000_000);
    expect(sampler.history('sb_run', 0, Infinity)).toHaveLength(1);
    listed = [];
    await sampler.tick(1_005_000);
    listed = [running];
    await sampler.tick(1_010_000);
    expect(sampler.history('sb_run', 0, Infinity).map((p) => p.timestamp)).toEqual([new Date(1_010_000).toISOString()]);
  });

  it('keeps the point without a guest view when the guest answers nonsense or fails, and never runs two ticks at once', async () => {
    let release: () => void = () => {};
    const slowGuest = new Promise<void>((resolve) => (release = resolve));
    const answers = [async () => ({ ...guestAnswer, mem_used: -1 }), async () => await slowGuest.then(() => guestAnswer)];
    const sampler = samplerWith({ askGuest: async () => await (answers.shift() ?? (async () => guestAnswer))() }, 1000);
    await sampler.tick(1_000_000);
    expect(sampler.history('sb_run', 0, Infinity)[0]?.guest).toBeUndefined();
    await sampler.tick(1_001_000);
    await sampler.tick(1_002_000);
    const waiting = sampler.tick(1_003_000);
    await sampler.tick(1_004_000); // skipped: the previous tick still waits on its guest
    release();
    await waiting;
    const points = sampler.history('sb_run', 0, Infinity);
    expect(points.map((p) => Date.parse(p.timestamp))).toEqual([1_000_000, 1_001_000, 1_002_000, 1_003_000]);
    expect(points[3]?.guest?.cpuCount).toBe(2);
  });

  it("answers /metrics' reads from a fresh point of the same QEMU, else from the host", async () => {
    const sampler = samplerWith({});
    await sampler.tick(Date.now());
    const newest = sampler.history('sb_run', 0, Infinity)[0];
    expect(sampler.currentUsage(running, process.pid).cpuSeconds).toBe(newest?.cpuSeconds);
    // Another QEMU (the sandbox was stopped and started): the point is not its own.
    expect(sampler.currentUsage(running, 999_999_999).cpuSeconds).toBeUndefined();
  });
});

// Root only: a namespace with a tap named as a TAP sandbox's, and a process in it standing in for its QEMU.
describe.skipIf(process.getuid?.() !== 0)('UsageSampler and a TAP sandbox (root)', () => {
  const ns = `captest-sampler-${process.pid}`;
  let stand: ChildProcess | undefined;
  beforeAll(async () => {
    execFileSync('ip', ['netns', 'add', ns]);
    execFileSync('ip', ['-n', ns, 'tuntap', 'add', 'dev', TAP_IFNAME, 'mode', 'tap']);
    stand = spawn('ip', ['netns', 'exec', ns, 'sleep', '60'], { stdio: 'ignore' });
    // `ip netns exec` execs sleep: the pid is the process in the namespace once it has switched.
    await eventuallyInNamespace(stand.pid!, ns);
  });
  afterAll(() => {
    stand?.kill('SIGKILL');
    execFileSync('ip', ['netns', 'delete', ns]);
  });

  it("reads a TAP sandbox's NIC from its QEMU's namespace, and never a user-mode one's", async () => {
    const tapSandbox = { id: 'sb_tap', template: 'base', state: 'running', pid: stand!.pid!, network: { mode: 'tap' } } as Sandbox;
    const sampler = new UsageSampler(
      5000,
      { listSandboxes: async () => [tapSandbox], stateDir: () => '/nonexistent', askGuest: async () => guestAnswer },
      silentLogger,
    );
    expect(sampler.currentUsage(tapSandbox, tapSandbox.pid!)).toMatchObject({ networkReceivedBytes: 0, networkTransmittedBytes: 0 });
    // The same namespace under a user-mode sandbox: a device of that name there is not its NIC.
    const userSandbox = { ...tapSandbox, network: { mode: 'user' } } as Sandbox;
    expect(sampler.currentUsage(userSandbox, tapSandbox.pid!)).toMatchObject({
      networkReceivedBytes: undefined,
      networkTransmittedBytes: undefined,
    });
  });
});

/** Waits until process `pid` runs in network namespace `ns`. */
async function eventuallyInNamespace(pid: number, ns: string): Promise<void> {
  const target = fs.statSync(`/run/netns/${ns}`).ino;
  for (let i = 0; i < 100; i += 1) {
    try {
      if (fs.statSync(`/proc/${pid}/ns/net`).ino === target) return;
    } catch {
      // Not started yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`process ${pid} never entered ${ns}`);
}

describe('cpuPercentBetween', () => {
  it('is CPU seconds over wall seconds in percent of one core, unknown without a previous point', () => {
    const previous = { at: 0, cpuSeconds: 10, cpuPercent: undefined, rssBytes: 0, privateBytes: 0, diskBytes: 0 };
    expect(cpuPercentBetween(previous, 11.5, 1000)).toBe(150);
    expect(cpuPercentBetween(previous, 10, 5000)).toBe(0);
    expect(cpuPercentBetween(undefined, 11, 1000)).toBeUndefined();
    expect(cpuPercentBetween(previous, undefined, 1000)).toBeUndefined();
    expect(cpuPercentBetween(previous, 11, 0)).toBeUndefined();
  });
});

describe('parseStatusMemory', () => {
  it("reads VmRSS and RssAnon of /proc/PID/status in bytes; a gone process's or a kernel thread's reads as unknown", () => {
    const status = 'Name:\tqemu-system-x86\nVmRSS:\t  409600 kB\nRssAnon:\t  102400 kB\nRssFile:\t  307200 kB\n';
    expect(parseStatusMemory(status)).toEqual({ rssBytes: 409600 * 1024, privateBytes: 102400 * 1024 });
    expect(parseStatusMemory('Name:\tkthreadd\nState:\tS (sleeping)\n')).toBeUndefined();
    expect(parseStatusMemory(undefined)).toBeUndefined();
  });
});
