// A sandbox's metrics history on a real daemon with a real microVM, sampled
// every 500 ms: points accumulate in time order, a busy guest shows more CPU
// than an idle one, ranges are checked, the official e2b SDK's getMetrics gets
// the series, `capsule stats` lists the sandbox, and the history goes with it.
import type { Sandbox, SandboxMetrics, SandboxMetricsPoint } from '@capsule/protocol';
import { Sandbox as E2bSandbox } from 'e2b';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { eventually, it, runCli, TestDaemon } from './fixture.js';

const INTERVAL_MS = 500;

describe('metrics history (real daemon, real microVM)', () => {
  const daemon = new TestDaemon({ CAPSULE_METRICS_INTERVAL_MS: String(INTERVAL_MS), CAPSULE_LISTEN: 'http://127.0.0.1:0' });
  const saved = { ...process.env };
  let sandbox: Sandbox;

  beforeAll(async () => {
    await daemon.start();
    sandbox = await daemon.api.createSandbox({ timeoutMs: 10 * 60_000 });
  });
  afterAll(async () => {
    process.env = saved;
    await daemon.destroy();
  });

  const history = async (query = ''): Promise<SandboxMetrics> => {
    const res = await daemon.request<SandboxMetrics>('GET', `/v1/sandboxes/${sandbox.id}/metrics${query}`);
    expect(res.status, res.text).toBe(200);
    return res.body;
  };
  const mean = (points: SandboxMetricsPoint[]) =>
    points.reduce((sum, point) => sum + (point.cpuPercent ?? 0), 0) / Math.max(points.length, 1);

  it('gains a point every interval, oldest first, with the host view on each and the guest view on some', async () => {
    const series = await eventually(
      async () => {
        const found = await history();
        return found.points.length >= 7 ? found : undefined;
      },
      30_000,
      'seven points',
    );
    expect(series).toMatchObject({ sandboxId: sandbox.id, intervalMs: INTERVAL_MS, guestEveryPoints: 3, retentionMs: 3600 * INTERVAL_MS });
    const times = series.points.map((point) => Date.parse(point.timestamp));
    expect(times).toEqual([...times].sort((a, b) => a - b));
    const last = series.points.at(-1);
    expect(last?.cpuSeconds).toBeGreaterThan(0);
    expect(last?.memoryRssBytes).toBeGreaterThan(16 * 1024 * 1024);
    expect(last?.memoryPrivateBytes).toBeGreaterThan(0);
    expect(last?.diskAllocatedBytes).toBeGreaterThan(0);
    const guest = series.points.find((point) => point.guest)?.guest;
    expect(guest?.cpuCount).toBe(sandbox.vcpus);
    expect(guest?.memTotalBytes).toBeGreaterThan(0.8 * sandbox.memoryMiB * 1024 * 1024);
    expect(guest?.diskTotalBytes).toBeGreaterThan(guest?.diskUsedBytes ?? Infinity);
    expect(series.points.filter((point) => point.guest).length).toBeLessThan(series.points.length);

    // A window in the middle: only its points, by Unix seconds or ISO times alike.
    const middle = times[Math.floor(times.length / 2)] ?? 0;
    const bySeconds = await history(`?start=${(middle - 1000) / 1000}&end=${(middle + 1000) / 1000}`);
    const byIso = await history(`?start=${new Date(middle - 1000).toISOString()}&end=${new Date(middle + 1000).toISOString()}`);
    expect(bySeconds.points.length).toBeGreaterThan(0);
    expect(bySeconds.points.length).toBeLessThan(series.points.length);
    expect(byIso.points).toEqual(bySeconds.points);
  });

  it('refuses a bad range with a hint, and an unknown sandbox with 404', async () => {
    const backwards = await daemon.request('GET', `/v1/sandboxes/${sandbox.id}/metrics?start=1765000100&end=1765000000`);
    expect(backwards.status).toBe(400);
    expect(backwards.body.error).toMatchObject({ code: 'invalid_argument', hint: expect.stringMatching(/Unix seconds/) });
    expect((await daemon.request('GET', `/v1/sandboxes/${sandbox.id}/metrics?start=soon`)).status).toBe(400);
    expect((await daemon.request('GET', '/v1/sandboxes/sb_nosuchsandbox/metrics')).status).toBe(404);
  });

  it('shows a busy guest using more CPU than an idle one', async () => {
    // Idle first: a few points with nothing running in the guest.
    await new Promise((resolve) => setTimeout(resolve, 6 * INTERVAL_MS));
    const idleEnd = Date.now();
    const idle = (await history(`?start=${(idleEnd - 3000) / 1000}`)).points.filter((point) => point.cpuPercent !== undefined);
    const busyStart = Date.now();
    await daemon.api.exec(sandbox.id, ['sh', '-c', 'end=$(($(date +%s) + 5)); while [ "$(date +%s)" -lt "$end" ]; do :; done']);
    const busy = (await history(`?start=${(busyStart + 1500) / 1000}&end=${(Date.now() - 500) / 1000}`)).points;
    expect(idle.length).toBeGreaterThan(2);
    expect(busy.length).toBeGreaterThan(2);
    // Not a multiple: on a loaded host the busy guest gets less of a core (17% against an idle 4% was seen).
    expect(mean(busy)).toBeGreaterThan(mean(idle) + 5);
    const busyGuest = busy.filter((point) => point.guest).map((point) => point.guest?.cpuUsedPct ?? 0);
    expect(Math.max(...busyGuest)).toBeGreaterThan(50);
  });

  it("serves the series to the official e2b SDK's getMetrics, within its start and end", async () => {
    const { tcpAddress } = await daemon.api.info();
    process.env.E2B_API_URL = `http://${tcpAddress}`;
    process.env.E2B_SANDBOX_URL = `http://${tcpAddress}`;
    process.env.E2B_API_KEY = (await daemon.api.createApiKey('e2b-metrics')).key;
    const all = await E2bSandbox.getMetrics(sandbox.id);
    expect(all.length).toBeGreaterThan(2);
    expect(all[0]).toMatchObject({ cpuCount: sandbox.vcpus, memTotal: expect.any(Number), diskTotal: expect.any(Number) });
    expect(all[0]?.timestamp).toBeInstanceOf(Date);
    const times = all.map((metric) => metric.timestamp.getTime());
    expect(times).toEqual([...times].sort((a, b) => a - b));
    const start = new Date((times[1] ?? 0) - 100);
    const recent = await E2bSandbox.getMetrics(sandbox.id, { start, end: new Date() });
    // The SDK sends whole seconds: everything from the second that holds `start`.
    expect(recent.length).toBeGreaterThan(0);
    expect(recent.every((metric) => metric.timestamp.getTime() >= Math.floor(start.getTime() / 1000) * 1000)).toBe(true);
  });

  it('is listed by `capsule stats --no-stream --json`, and in the table', async () => {
    const json = await runCli(daemon, ['stats', '--no-stream', '--json'], 60_000);
    expect(json.status, json.stderr).toBe(0);
    const rows = JSON.parse(json.stdout) as { id: string; state: string; memoryLimitBytes: number; point: SandboxMetricsPoint | null }[];
    const row = rows.find((candidate) => candidate.id === sandbox.id);
    expect(row).toMatchObject({ state: 'running', memoryLimitBytes: sandbox.memoryMiB * 1024 * 1024 });
    expect(row?.point?.memoryRssBytes).toBeGreaterThan(0);
    const table = await runCli(daemon, ['stats', '--no-stream', sandbox.id], 60_000);
    expect(table.status, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/^SANDBOX ID\s+NAME\s+CPU %\s+MEM USAGE \/ LIMIT/);
    expect(table.stdout).toContain(sandbox.id);
  });

  it('drops the history with the sandbox', async () => {
    await daemon.request('DELETE', `/v1/sandboxes/${sandbox.id}`);
    await eventually(async () => ((await history()).points.length === 0 ? true : undefined), 10_000, 'the history to go');
  });
});
