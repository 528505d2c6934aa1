// GET /metrics against the bundled agent on a unix socket: envd's JSON shape
// with values that agree with this host, plus the parsing and CPU arithmetic.
import type http2 from 'node:http2';
import { cpus, totalmem } from 'node:os';
import { statfsSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { useAgentForFile, type RunningAgent } from '../test/agent-fixture.js';
import { plainRequest } from '../test/plain-http-client.js';
import { cpuUsedPercent, parseMeminfo, parseProcStat } from './metrics-route.js';

let agent: RunningAgent;
let session: http2.ClientHttp2Session;

useAgentForFile((started) => {
  agent = started;
  session = agent.http2Session();
});

afterAll(() => {
  session?.close();
});

describe('GET /metrics', () => {
  it("answers envd's fields with this machine's CPU, memory and root disk", async () => {
    const before = Math.floor(Date.now() / 1000);
    const response = await plainRequest(session, { path: '/metrics' });
    expect(response.status).toBe(200);
    expect(response.headers['content-type']).toBe('application/json');
    const metrics = response.json() as Record<string, number>;
    expect(Object.keys(metrics).sort()).toEqual(
      ['cpu_count', 'cpu_used_pct', 'disk_total', 'disk_used', 'mem_total', 'mem_total_mib', 'mem_used', 'mem_used_mib', 'ts'].sort(),
    );
    for (const value of Object.values(metrics)) expect(typeof value).toBe('number');
    expect(metrics.ts).toBeGreaterThanOrEqual(before);
    expect(metrics.cpu_count).toBe(cpus().length);
    expect(metrics.cpu_used_pct).toBeGreaterThanOrEqual(0);
    expect(metrics.cpu_used_pct).toBeLessThanOrEqual(100);
    expect(metrics.mem_total).toBe(totalmem());
    expect(metrics.mem_total_mib).toBe(Math.floor(totalmem() / 1048576));
    expect(metrics.mem_used).toBeGreaterThan(0);
    expect(metrics.mem_used).toBeLessThan(metrics.mem_total!);
    const root = statfsSync('/');
    expect(metrics.disk_total).toBe(root.blocks * root.bsize);
    expect(metrics.disk_used).toBeGreaterThan(0);
    expect(metrics.disk_used).toBeLessThanOrEqual(metrics.disk_total!);

    // A second call measures CPU use since the first, and stays in range.
    const again = (await plainRequest(session, { path: '/metrics' })).json() as Record<string, number>;
    expect(again.cpu_used_pct).toBeGreaterThanOrEqual(0);
    expect(again.cpu_used_pct).toBeLessThanOrEqual(100);
  });

  it('refuses other methods', async () => {
    const response = await plainRequest(session, { method: 'POST', path: '/metrics', body: '{}' });
    expect(response.status).toBe(405);
    expect(response.headers.allow).toBe('GET, HEAD');
  });
});

describe('metrics arithmetic', () => {
  it('reads the aggregate cpu line and counts the logical CPUs', () => {
    const stat = ['cpu  100 0 50 800 50 0 0 0 0 0', 'cpu0 50 0 25 400 25 0 0 0 0 0', 'cpu1 50 0 25 400 25 0 0 0 0 0', 'intr 1 2 3'].join(
      '\n',
    );
    expect(parseProcStat(stat)).toEqual({ sample: { total: 1000, idle: 850 }, cpuCount: 2 });
    expect(() => parseProcStat('intr 1 2 3')).toThrow(/no cpu line/);
  });

  it('computes busy time between samples with two decimals, never outside 0-100', () => {
    expect(cpuUsedPercent({ total: 1000, idle: 850 }, { total: 1300, idle: 1050 })).toBe(33.33);
    expect(cpuUsedPercent({ total: 1000, idle: 850 }, { total: 1000, idle: 850 })).toBe(0);
    expect(cpuUsedPercent({ total: 1000, idle: 850 }, { total: 1100, idle: 850 })).toBe(100);
  });

  it('reads MemTotal and MemAvailable in bytes', () => {
    expect(parseMeminfo('MemTotal:       2048 kB\nMemFree:  10 kB\nMemAvailable:   1024 kB\n')).toEqual({
      total: 2048 * 1024,
      available: 1024 * 1024,
    });
    expect(() => parseMeminfo('MemTotal: 1 kB\n')).toThrow(/MemAvailable/);
  });
});
