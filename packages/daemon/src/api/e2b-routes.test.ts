import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import type { Sandbox } from '@capsule/protocol';
import { CapsuleError } from '../errors.js';
import { SandboxTokens } from './credentials.js';
import { e2bErrorHandler, e2bState, pageOf, parseMetadataFilter, toE2bListed, toE2bMetric, toE2bSandbox } from './e2b-routes.js';
import { guestMetricsOf } from './usage-sampler.js';

const sandbox: Sandbox = {
  id: 'sb_x',
  name: null,
  template: 'base',
  state: 'running',
  stateReason: 'user',
  vcpus: 1,
  memoryMiB: 512,
  accel: 'tcg',
  metadata: { team: 'a' },
  createdAt: '2026-11-25T10:00:00.000Z',
  timeoutMs: 300_000,
  onTimeout: 'kill',
  desiredState: 'running',
  expiresAt: '2026-11-25T10:05:00.000Z',
  network: { mode: 'user', internet: true, allow: [], deny: [], guestAddress: '10.0.2.15/24', gateway: '10.0.2.2', dns: '10.0.2.3' },
  ports: [],
  domain: 'capsule.test:3000',
  trafficAccessToken: 'traffic-token',
};

describe('e2b shapes', () => {
  it('maps states to running/paused and hides failed or killed sandboxes', () => {
    expect(e2bState({ ...sandbox, state: 'starting' })).toBe('running');
    expect(e2bState({ ...sandbox, state: 'paused' })).toBe('paused');
    expect(e2bState({ ...sandbox, state: 'error' })).toBeUndefined();
    expect(e2bState({ ...sandbox, state: 'killed' })).toBeUndefined();
  });

  it('hands out the sandbox access token with a created sandbox', () => {
    const tokens = new SandboxTokens(Buffer.alloc(32, 7));
    expect(toE2bSandbox(sandbox, tokens)).toMatchObject({
      sandboxID: 'sb_x',
      templateID: 'base',
      envdAccessToken: tokens.tokenFor('sb_x'),
    });
  });

  it("gives e2b's getHost the daemon's domain and the sandbox's traffic token", () => {
    const tokens = new SandboxTokens(Buffer.alloc(32, 7));
    expect(toE2bSandbox(sandbox, tokens)).toMatchObject({ domain: 'capsule.test:3000', trafficAccessToken: 'traffic-token' });
  });

  it('lists with start, end (never for no timeout), resources and volume mounts', () => {
    expect(toE2bListed(sandbox, [{ name: 'data', path: '/mnt/data' }])).toMatchObject({
      startedAt: sandbox.createdAt,
      endAt: sandbox.expiresAt,
      cpuCount: 1,
      memoryMB: 512,
      state: 'running',
      volumeMounts: [{ name: 'data', path: '/mnt/data' }],
    });
    const { expiresAt: _, ...noTimeout } = sandbox;
    expect(toE2bListed({ ...noTimeout, timeoutMs: 0 }, []).endAt).toBe('9999-12-31T23:59:59.999Z');
  });

  it('parses the metadata filter', () => {
    expect(parseMetadataFilter('team=a&env=prod%20x')).toEqual({ team: 'a', env: 'prod x' });
    expect(parseMetadataFilter(undefined)).toEqual({});
  });

  it('pages with opaque tokens and refuses forged ones', () => {
    const items = [1, 2, 3, 4, 5];
    const first = pageOf(items, 2, undefined);
    expect(first.page).toEqual([1, 2]);
    const second = pageOf(items, 2, first.next);
    expect(second.page).toEqual([3, 4]);
    const last = pageOf(items, 2, second.next);
    expect(last).toEqual({ page: [5] });
    expect(() => pageOf(items, 2, 'bm90LWEtbnVtYmVy')).toThrow(/nextToken/);
  });

  it("turns the agent's metrics into e2b's sample and refuses what a hostile guest could send", () => {
    const agent = {
      ts: 1_795_600_000,
      cpu_count: 1,
      cpu_used_pct: 12.5,
      mem_total: 512e6,
      mem_used: 100e6,
      disk_total: 2e9,
      disk_used: 3e8,
    };
    expect(toE2bMetric(new Date(1_795_600_000_000).toISOString(), guestMetricsOf(agent))).toEqual({
      timestamp: new Date(1_795_600_000_000).toISOString(),
      timestampUnix: 1_795_600_000,
      cpuCount: 1,
      cpuUsedPct: 12.5,
      memUsed: 100e6,
      memTotal: 512e6,
      memCache: 0,
      diskUsed: 3e8,
      diskTotal: 2e9,
    });
    for (const bad of [null, 'x', { ...agent, mem_used: 'lots' }, { ...agent, cpu_count: -1 }, { ...agent, disk_total: Infinity }]) {
      expect(() => guestMetricsOf(bad)).toThrow(/metrics/);
    }
  });

  it("answers Capsule's errors in e2b's shape, its stable code leading the message and the hint ending it", async () => {
    const app = Fastify();
    app.setErrorHandler(e2bErrorHandler);
    app.get('/named', () => {
      throw new CapsuleError('name_taken', 'a template named "x" already exists', { hint: 'pick another name' });
    });
    app.get('/plain', () => {
      throw new CapsuleError('template_not_found', 'template "x" does not exist');
    });
    const named = await app.inject({ method: 'GET', url: '/named' });
    expect(named.statusCode).toBe(409);
    expect(named.json()).toEqual({ code: 409, message: 'name_taken: a template named "x" already exists (pick another name)' });
    expect((await app.inject({ method: 'GET', url: '/plain' })).json()).toEqual({
      code: 404,
      message: 'template_not_found: template "x" does not exist',
    });
    await app.close();
  });
});
