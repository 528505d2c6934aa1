import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Sandbox } from '@capsule/protocol';
import parsePrometheusTextFormat, { type ParsedFamily } from 'parse-prometheus-text-format';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CapsuleError } from '../errors.js';
import { silentLogger } from '../log.js';
import { DaemonMetrics } from '../metrics.js';
import { parseCpuTicks, readQemuUsage } from './usage-sampler.js';
import { buildApi, type Api, type ApiContext } from './server.js';

/** The value of the sample of family `name` whose labels include `labels`, or undefined when there is none. */
function sample(families: ParsedFamily[], name: string, labels: Record<string, string> = {}): number | undefined {
  const family = families.find((f) => f.name === name);
  const found = family?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
  return found?.value === undefined ? undefined : Number(found.value);
}

describe('parseCpuTicks', () => {
  it('adds utime and stime, whatever the command name holds', () => {
    const stat = '4242 (qemu (x) 1 2) S 1 4242 4242 0 -1 4194560 5000 0 0 0 1234 567 0 0 20 0 3 0 100 1000 200';
    expect(parseCpuTicks(stat)).toBe(1234 + 567);
    expect(parseCpuTicks(undefined)).toBeUndefined();
    expect(parseCpuTicks('garbage')).toBeUndefined();
  });
});

describe('readQemuUsage', () => {
  it("reads a live process's CPU time and memory and a file's allocated blocks; a gone process reads as unknown", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-usage-'));
    const overlay = path.join(dir, 'overlay.qcow2');
    fs.writeFileSync(overlay, Buffer.alloc(1024 * 1024, 1));
    const usage = readQemuUsage(process.pid, overlay, 100);
    expect(usage.cpuSeconds).toBeGreaterThan(0);
    expect(usage.rssBytes).toBeGreaterThan(10 * 1024 * 1024);
    expect(usage.privateBytes).toBeGreaterThan(0);
    expect(usage.privateBytes).toBeLessThanOrEqual(usage.rssBytes ?? 0);
    expect(usage.diskBytes).toBeGreaterThanOrEqual(1024 * 1024);
    expect(readQemuUsage(999_999_999, path.join(dir, 'missing'), 100)).toEqual({
      cpuSeconds: undefined,
      rssBytes: undefined,
      privateBytes: undefined,
      diskBytes: undefined,
    });
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

describe('DaemonMetrics', () => {
  it('keeps a registry of its own and times only operations that succeed', async () => {
    const one = new DaemonMetrics();
    const other = new DaemonMetrics();
    await one.timeOperation('pause', async () => 'paused');
    await expect(
      one.timeOperation('pause', async () => {
        throw new Error('no');
      }),
    ).rejects.toThrow('no');
    const families = parsePrometheusTextFormat(await one.registry.metrics());
    const pause = families.find((f) => f.name === 'capsule_sandbox_operation_seconds');
    expect(pause?.type).toBe('HISTOGRAM');
    expect(pause?.metrics[0]?.buckets?.['+Inf']).toBe('1');
    expect(sample(families, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(parsePrometheusTextFormat(await other.registry.metrics()).find((f) => f.name === 'capsule_sandbox_operation_seconds')).toEqual(
      expect.objectContaining({ metrics: [] }),
    );
  });
});

describe('GET /metrics', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-metrics-'));
  const metrics = new DaemonMetrics();
  const running = { id: 'sb_run', template: 'base', state: 'running', pid: process.pid, network: { mode: 'user' } } as Sandbox;
  const paused = { id: 'sb_paused', template: 'py', state: 'paused' } as Sandbox;
  let sandboxes: Sandbox[] = [running, paused];
  let api: Api;

  beforeAll(async () => {
    fs.mkdirSync(path.join(dir, running.id));
    fs.writeFileSync(path.join(dir, running.id, 'overlay.qcow2'), Buffer.alloc(256 * 1024, 1));
    const ctx = {
      manager: {
        list: async () => sandboxes,
        stateDir: (id: string) => path.join(dir, id),
        get: async (id: string) => {
          throw new CapsuleError('sandbox_not_found', `no sandbox ${id}`);
        },
        create: async () => {
          throw new CapsuleError('insufficient_resources', 'not enough memory for another sandbox');
        },
      },
      templates: {
        warm: { poolStatuses: () => [{ template: 'base', ready: 2, target: 3 }] },
        buildUploadsDir: () => path.join(dir, 'uploads'),
      },
      images: {},
      apiKeys: { verify: async () => false },
      tokens: {},
      info: () => ({}),
      log: silentLogger,
      metrics,
      // Off: the scrape reads the host itself.
      metricsIntervalMs: 0,
      version: 'test',
      domain: 'localhost',
    } as unknown as ApiContext;
    api = await buildApi(ctx);
  });

  afterAll(async () => {
    await api?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const scrape = async () => {
    const res = await api.app.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toContain('text/plain');
    return parsePrometheusTextFormat(res.body);
  };

  it("reads each running sandbox's QEMU at scrape time, labelled by sandbox and template, and counts sandboxes by state", async () => {
    const families = await scrape();
    const labels = { sandbox: 'sb_run', template: 'base' };
    expect(sample(families, 'capsule_sandbox_cpu_seconds_total', labels)).toBeGreaterThan(0);
    expect(sample(families, 'capsule_sandbox_memory_rss_bytes', labels)).toBeGreaterThan(0);
    expect(sample(families, 'capsule_sandbox_memory_private_bytes', labels)).toBeGreaterThan(0);
    expect(sample(families, 'capsule_sandbox_disk_allocated_bytes', labels)).toBeGreaterThanOrEqual(256 * 1024);
    // A paused sandbox has no QEMU: counted, never measured.
    expect(sample(families, 'capsule_sandbox_memory_rss_bytes', { sandbox: 'sb_paused' })).toBeUndefined();
    expect(sample(families, 'capsule_sandboxes', { state: 'running', template: 'base' })).toBe(1);
    expect(sample(families, 'capsule_sandboxes', { state: 'paused', template: 'py' })).toBe(1);
    expect(sample(families, 'capsule_warm_pool_ready_vms', { template: 'base' })).toBe(2);
    expect(sample(families, 'capsule_warm_pool_target_vms', { template: 'base' })).toBe(3);
  });

  it('drops the series of a sandbox that is gone at the next scrape', async () => {
    sandboxes = [paused];
    const families = await scrape();
    expect(sample(families, 'capsule_sandbox_cpu_seconds_total', { sandbox: 'sb_run' })).toBeUndefined();
    expect(sample(families, 'capsule_sandboxes', { state: 'running' })).toBeUndefined();
    sandboxes = [running, paused];
  });

  it('is in the OpenAPI document', async () => {
    const res = await api.app.inject({ method: 'GET', url: '/openapi.json' });
    expect(Object.keys(res.json().paths)).toContain('/metrics');
    expect(Object.keys(res.json().paths)).toContain('/v1/sandboxes/{id}/metrics');
  });

  it('refuses a history range that is not one with a hint, before looking the sandbox up', async () => {
    const res = await api.app.inject({ method: 'GET', url: '/v1/sandboxes/sb_run/metrics?start=20&end=10' });
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toMatchObject({ code: 'invalid_argument', hint: expect.stringMatching(/ISO 8601/) });
  });

  it('counts requests by route template, never by raw URL, and error answers by code', async () => {
    await api.app.inject({ method: 'GET', url: '/v1/sandboxes/sb_one' });
    await api.app.inject({ method: 'GET', url: '/v1/sandboxes/sb_two' });
    await api.app.inject({ method: 'GET', url: '/no/such/route' });
    await api.app.inject({ method: 'POST', url: '/v1/sandboxes', payload: {} });
    const families = await scrape();
    const byRoute = { method: 'GET', route: '/v1/sandboxes/:id', status: '404' };
    expect(sample(families, 'capsule_http_requests_total', byRoute)).toBe(2);
    expect(families.find((f) => f.name === 'capsule_http_requests_total')?.metrics.some((m) => m.labels?.route?.includes('sb_'))).toBe(
      false,
    );
    expect(sample(families, 'capsule_http_requests_total', { route: 'unmatched', status: '404' })).toBe(1);
    expect(sample(families, 'capsule_api_errors_total', { code: 'sandbox_not_found' })).toBe(2);
    expect(sample(families, 'capsule_api_errors_total', { code: 'not_found' })).toBe(1);
    expect(sample(families, 'capsule_api_errors_total', { code: 'insufficient_resources' })).toBe(1);
    expect(sample(families, 'capsule_admission_refusals_total', { reason: 'memory' })).toBe(1);
    expect(families.find((f) => f.name === 'capsule_http_request_duration_seconds')?.type).toBe('HISTOGRAM');
  });
});
