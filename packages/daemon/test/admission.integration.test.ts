// Admission with a real daemon and real microVMs: the memory budget holds when
// many requests race for it (creates, forks, resumes), refused requests hold
// nothing back, and with less free disk than the reserve every operation that
// writes to disk is refused before it writes anything.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { type ApiResponse, eventually, it, sandboxTest, TestDaemon } from './fixture.js';

/** Every file and folder under `dir`, relative to it. */
function treeOf(dir: string): string[] {
  const found: string[] = [];
  const walk = (sub: string) => {
    for (const entry of fs.readdirSync(path.join(dir, sub), { withFileTypes: true })) {
      const rel = path.join(sub, entry.name);
      found.push(rel);
      if (entry.isDirectory()) walk(rel);
    }
  };
  walk('');
  return found.sort();
}

/** The host is full for now: 429 `capacity`, with when to retry. */
function expectRefusedForMemory(res: ApiResponse): void {
  expect(res.status, res.text).toBe(429);
  expect(res.body.error.code).toBe('capacity');
  expect(res.body.error.hint).toMatch(/retry in a few seconds.*CAPSULE_MEMORY_BUDGET_MIB/);
  expect(res.headers['retry-after']).toBe('2');
}

describe('memory admission races (real QEMU microVM)', () => {
  // A budget for exactly two sandboxes of the base template (512 MiB each), one of them the warm pool's VM until a create claims it.
  const daemon = new TestDaemon({ CAPSULE_MEMORY_BUDGET_MIB: '1024', CAPSULE_WARM_POOL_SIZE: '1' });
  beforeAll(async () => {
    await daemon.start();
    await daemon.waitForWarmSnapshot(600_000, 1);
    // Its QEMU runs before it is warmed up and ready to be claimed.
    await eventually(() => (daemon.log().includes('warm pool VM ready') ? true : undefined), 300_000, 'the warm pool VM');
  }, 960_000);
  afterAll(() => daemon.destroy());

  it('20 parallel creates with a budget for two start exactly two sandboxes', async () => {
    // Each publishes a host port: binding it is real I/O between the memory check and the sandbox's row, the window a race needs.
    const results = await Promise.all(
      Array.from({ length: 20 }, () => daemon.request('POST', '/v1/sandboxes', { timeoutMs: 0, ports: [{ guestPort: 8080 }] })),
    );
    const created = results.filter((r) => r.status === 201);
    expect(results.map((r) => r.status).sort()).toEqual([201, 201, ...Array<number>(18).fill(429)]);
    for (const refused of results.filter((r) => r.status !== 201)) expectRefusedForMemory(refused);
    expect(daemon.qemuPids()).toHaveLength(2);
    // The 18 refusals hold nothing back: with one sandbox gone, a create fits again, and only one.
    const poolReadies = () => daemon.log().split('warm pool VM ready').length;
    const readiesBefore = poolReadies();
    expect((await daemon.request('DELETE', `/v1/sandboxes/${created[0]!.body.id}`)).status).toBe(204);
    // The freed memory goes to the warm pool's refill first; a create that came while that VM warmed up found the
    // pool empty and the budget taken (all three 429 on a loaded host): the creates come once it is ready.
    await eventually(() => (poolReadies() > readiesBefore ? true : undefined), 300_000, 'the warm pool to refill');
    const again = await Promise.all([1, 2, 3].map(() => daemon.request('POST', '/v1/sandboxes', { timeoutMs: 0 })));
    expect(again.map((r) => r.status).sort()).toEqual([201, 429, 429]);
  }, 600_000);
});

describe('memory admission of resumes and forks (real QEMU microVM)', () => {
  // The same budget for two, without a warm pool: every VM is one a test asked for.
  const daemon = new TestDaemon({ CAPSULE_MEMORY_BUDGET_MIB: '1024', CAPSULE_WARM_POOL_SIZE: '0' });
  const it = sandboxTest(daemon);
  beforeAll(async () => {
    await daemon.start();
    await daemon.waitForWarmSnapshot(600_000);
  }, 660_000);
  afterAll(() => daemon.destroy());
  const runningIds = async () => (await daemon.api.sandboxes()).filter((s) => s.state === 'running').map((s) => s.id);

  it('a resume past the budget is refused and the sandbox stays paused', async ({ newSandbox }) => {
    const { id: paused } = await newSandbox({ timeoutMs: 0 });
    const { id: other } = await newSandbox({ timeoutMs: 0 });
    await daemon.api.pause(paused);
    const taker = await newSandbox({ timeoutMs: 0 });
    expectRefusedForMemory(await daemon.request('POST', `/v1/sandboxes/${paused}/resume`));
    expect((await daemon.api.sandbox(paused)).state).toBe('paused');
    expect((await runningIds()).sort()).toEqual([other, taker.id].sort());
    // With room again it resumes.
    await daemon.api.removeSandbox(taker.id);
    await daemon.api.resume(paused);
  }, 600_000);

  it('a fork of N reserves N, and a create racing a fork for the last place loses or wins whole', async ({ newSandbox }) => {
    // The test before killed its sandboxes (the fixture does): the source is the one running.
    const { id: source } = await newSandbox({ timeoutMs: 0 });
    // One place left: a fork of two does not fit.
    expectRefusedForMemory(await daemon.request('POST', `/v1/sandboxes/${source}/fork`, { count: 2 }));
    expect(await runningIds()).toEqual([source]);
    // A fork of one and a create race for that place: exactly one gets it.
    const [fork, create] = await Promise.all([
      daemon.request('POST', `/v1/sandboxes/${source}/fork`, { count: 1 }),
      daemon.request('POST', '/v1/sandboxes', { timeoutMs: 0 }),
    ]);
    expect([fork.status, create.status].sort(), `${fork.text}\n${create.text}`).toEqual([201, 429]);
    expectRefusedForMemory(fork.status === 429 ? fork : create);
    expect(await runningIds()).toHaveLength(2);
    expect(daemon.qemuPids()).toHaveLength(2);
  }, 600_000);
});

describe('disk admission (real QEMU microVM)', () => {
  const daemon = new TestDaemon({ CAPSULE_WARM_POOL_SIZE: '0' });
  let sandbox = '';
  beforeAll(async () => {
    await daemon.start();
    await daemon.waitForWarmSnapshot(600_000);
    const created = await daemon.request('POST', '/v1/sandboxes', { timeoutMs: 0 });
    if (created.status !== 201) throw new Error(created.text);
    sandbox = created.body.id as string;
    // The same daemon again, now keeping more disk free than this host has: the running sandbox is adopted.
    await daemon.stop();
    daemon.extraEnv.CAPSULE_DISK_RESERVE_MIB = String(1024 * 1024 * 1024);
    await daemon.start();
  }, 660_000);
  afterAll(() => daemon.destroy());

  it('with free disk below the reserve, create, pause, fork, snapshot, pull and build are refused with 507 and write nothing', async () => {
    expect((await daemon.request('GET', `/v1/sandboxes/${sandbox}`)).body.state).toBe('running');
    const before = treeOf(daemon.stateDir);
    const attempts: Record<string, ApiResponse> = {
      create: await daemon.request('POST', '/v1/sandboxes', {}),
      pause: await daemon.request('POST', `/v1/sandboxes/${sandbox}/pause`),
      fork: await daemon.request('POST', `/v1/sandboxes/${sandbox}/fork`, { count: 1 }),
      snapshot: await daemon.request('POST', `/v1/sandboxes/${sandbox}/snapshot`, { template: 'snap-low-disk' }),
      pull: await daemon.request('POST', '/v1/images/pull', { ref: '127.0.0.1:9/nothing/here:latest' }),
      build: await daemon.request('POST', '/v1/templates/build', { name: 'low-disk', capsulefile: 'FROM base\nRUN true\n' }),
    };
    for (const [operation, res] of Object.entries(attempts)) {
      expect(res.status, `${operation}: ${res.text}`).toBe(507);
      expect(res.body.error.code, operation).toBe('insufficient_storage');
      expect(res.body.error.hint, operation).toMatch(/CAPSULE_DISK_RESERVE_MIB/);
    }
    expect(treeOf(daemon.stateDir)).toEqual(before);
    // Nothing was started, and the sandbox runs on.
    expect(daemon.qemuPids()).toHaveLength(1);
    expect((await daemon.request('POST', `/v1/sandboxes/${sandbox}/exec`, { cmd: ['true'] })).body.exitCode).toBe(0);
    expect((await daemon.request('GET', '/v1/sandboxes')).body.sandboxes).toHaveLength(1);
  }, 300_000);
});
