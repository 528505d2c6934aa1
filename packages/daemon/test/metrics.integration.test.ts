// GET /metrics on a real daemon with a real microVM: the scrape parses by the
// Prometheus text format's rules (a parser from npm, not a regex), a running
// sandbox's QEMU is measured on the host, requests move the request counters,
// and over TCP the route needs an API key like every other.
import http from 'node:http';
import parsePrometheusTextFormat, { type ParsedFamily } from 'parse-prometheus-text-format';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { sandboxTest, TestDaemon } from './fixture.js';

/** The value of the sample of family `name` whose labels include `labels`, or undefined when there is none. */
function sample(families: ParsedFamily[], name: string, labels: Record<string, string> = {}): number | undefined {
  const family = families.find((f) => f.name === name);
  const found = family?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
  return found?.value === undefined ? undefined : Number(found.value);
}

describe('GET /metrics (real daemon, real microVM)', () => {
  const daemon = new TestDaemon({ CAPSULE_LISTEN: 'http://127.0.0.1:0' });
  const it = sandboxTest(daemon);
  let apiKey = '';
  let tcp = { host: '', port: 0 };

  beforeAll(async () => {
    await daemon.start();
    apiKey = (await daemon.api.createApiKey('metrics')).key;
    const [host = '', port] = ((await daemon.api.info()).tcpAddress ?? '').split(':');
    tcp = { host, port: Number(port) };
  });
  afterAll(() => daemon.destroy());

  const scrape = async (): Promise<ParsedFamily[]> => {
    const res = await daemon.request('GET', '/metrics');
    expect(res.status).toBe(200);
    return parsePrometheusTextFormat(res.text);
  };

  /** A TCP request's status, with or without the key. */
  const tcpStatus = (urlPath: string, headers: Record<string, string>) =>
    new Promise<number>((resolve, reject) => {
      http
        .get({ ...tcp, path: urlPath, headers, agent: false }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        })
        .once('error', reject);
    });

  it("measures a running sandbox's QEMU on the host, labelled by sandbox and template", async ({ sandbox }) => {
    // Some work in the guest, so that its QEMU has CPU time to show under any accelerator.
    await daemon.api.exec(sandbox.id, ['sh', '-c', 'i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done']);
    const families = await scrape();
    const labels = { sandbox: sandbox.id, template: sandbox.template };
    expect(sample(families, 'capsule_sandbox_cpu_seconds_total', labels)).toBeGreaterThan(0);
    const rss = sample(families, 'capsule_sandbox_memory_rss_bytes', labels) ?? 0;
    expect(rss).toBeGreaterThan(16 * 1024 * 1024);
    const privateBytes = sample(families, 'capsule_sandbox_memory_private_bytes', labels) ?? 0;
    expect(privateBytes).toBeGreaterThan(0);
    expect(privateBytes).toBeLessThanOrEqual(rss);
    expect(sample(families, 'capsule_sandbox_disk_allocated_bytes', labels)).toBeGreaterThan(0);
    expect(sample(families, 'capsule_sandboxes', { state: 'running', template: sandbox.template })).toBeGreaterThanOrEqual(1);
    // The create and the exec were timed (a labelled histogram parses as its buckets).
    for (const name of ['capsule_sandbox_create_seconds', 'capsule_sandbox_operation_seconds']) {
      const family = families.find((f) => f.name === name);
      expect(family?.type).toBe('HISTOGRAM');
      expect(Number(family?.metrics[0]?.buckets?.['+Inf'])).toBeGreaterThanOrEqual(1);
    }
    expect(sample(families, 'process_resident_memory_bytes')).toBeGreaterThan(0);
  });

  it('counts a request by its route and status', async () => {
    const route = { method: 'GET', route: '/v1/info', status: '200' };
    const before = sample(await scrape(), 'capsule_http_requests_total', route) ?? 0;
    await daemon.api.info();
    expect(sample(await scrape(), 'capsule_http_requests_total', route)).toBe(before + 1);
  });

  it('needs an API key over TCP, as every route does', async () => {
    expect(await tcpStatus('/metrics', {})).toBe(401);
    expect(await tcpStatus('/metrics', { 'x-api-key': 'e2b_not_a_key' })).toBe(401);
    expect(await tcpStatus('/metrics', { 'x-api-key': apiKey })).toBe(200);
    expect(sample(await scrape(), 'capsule_api_errors_total', { code: 'unauthenticated' })).toBe(2);
  });
});
