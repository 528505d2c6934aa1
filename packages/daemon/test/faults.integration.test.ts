// Faults with real VMs: the daemon killed with SIGKILL and restarted adopts its
// sandboxes; a VM killed behind the daemon's back is detected; a guest that
// cannot boot and bad requests fail cleanly and leak nothing.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { eventually, it, sandboxTest, sharedCacheDir, TestDaemon } from './fixture.js';

describe('daemon restarts and VM crashes (real QEMU microVM)', () => {
  const daemon = new TestDaemon();
  const it = sandboxTest(daemon);
  beforeAll(() => daemon.start());
  afterAll(() => daemon.destroy());

  it('adopts running sandboxes after capsuled is killed with SIGKILL', async ({ newSandbox }) => {
    const { id, pid } = await newSandbox({ name: 'survivor' });
    await daemon.api.exec(id, ['sh', '-c', 'echo before > /root/mark']);

    await daemon.kill9();
    expect(daemon.qemuPids()).toContain(pid);
    await daemon.start();

    expect(await daemon.api.sandbox('survivor')).toMatchObject({ id, state: 'running', pid });
    expect((await daemon.api.exec(id, ['cat', '/root/mark'])).stdout).toBe('before\n');
  });

  it('marks a sandbox whose QEMU was killed behind its back as error/crash and cleans up', async ({ sandbox }) => {
    const { id, pid } = sandbox;
    process.kill(pid!, 'SIGKILL');
    const state = await eventually(
      async () => {
        const current = await daemon.api.sandbox(id);
        return current.state === 'error' ? current : undefined;
      },
      15_000,
      'the crash to be noticed',
    );
    expect(state.stateReason).toBe('crash');
    expect(state.stateMessage).toMatch(/exited unexpectedly/);
    expect(daemon.leftoversOf(id)).toEqual([]);
    await daemon.api.removeSandbox(id);
  });

  it('marks a sandbox whose VM died while capsuled was down as error on the next start', async ({ sandbox }) => {
    const { id, pid } = sandbox;
    await daemon.kill9();
    process.kill(pid!, 'SIGKILL');
    await eventually(() => (daemon.qemuPids().includes(pid!) ? undefined : true), 5000, 'QEMU to exit');
    await daemon.start();
    expect(await daemon.api.sandbox(id)).toMatchObject({ state: 'error', stateReason: 'crash' });
    expect(daemon.leftoversOf(id)).toEqual([]);
  });
});

describe('bad input leaks nothing (real QEMU microVM)', () => {
  // A second template whose root disk is not a filesystem: the guest's init
  // fails to mount it and powers off, which is what a broken image looks like.
  const cacheDir = fs.mkdtempSync('/tmp/capsule-test-cache-');
  // Cold boots only, so that every VM here is one the test asked for.
  const daemon = new TestDaemon({ CAPSULE_CACHE_DIR: cacheDir, CAPSULE_BOOT_TIMEOUT_MS: '60000', CAPSULE_WARM_SNAPSHOTS: 'off' });

  beforeAll(async () => {
    const manifest = JSON.parse(fs.readFileSync(path.join(sharedCacheDir, 'guest-manifest.json'), 'utf8'));
    const broken = path.join(cacheDir, 'broken.img');
    fs.writeFileSync(broken, Buffer.alloc(8 * 1024 * 1024));
    manifest.templates.broken = { rootfs: broken };
    fs.writeFileSync(path.join(cacheDir, 'guest-manifest.json'), JSON.stringify(manifest));
    await daemon.start();
  });
  afterAll(async () => {
    await daemon.destroy();
    fs.rmSync(cacheDir, { recursive: true, force: true });
  });

  const refused = async (body: unknown, status: number, code: string) => {
    const res = await daemon.request('POST', '/v1/sandboxes', body);
    expect(res.status, res.text).toBe(status);
    expect(res.body.error.code).toBe(code);
    expect(res.body.error.message).toBeTruthy();
    return res.body.error;
  };

  it('refuses unknown templates, bad resources and unknown fields with stable codes', async () => {
    expect((await refused({ template: 'nope' }, 404, 'template_not_found')).hint).toMatch(/base/);
    await refused({ memoryMiB: 0 }, 400, 'invalid_argument');
    await refused({ memoryMiB: 10_000_000 }, 400, 'invalid_argument');
    await refused({ vcpus: 0 }, 400, 'invalid_argument');
    await refused({ vcpus: 4096 }, 400, 'invalid_argument');
    await refused({ vcpus: 1.5 }, 400, 'invalid_argument');
    await refused({ name: 'Bad Name!' }, 400, 'invalid_argument');
    await refused({ colour: 'blue' }, 400, 'invalid_argument');
    expect(daemon.qemuPids()).toEqual([]);
    expect(await daemon.api.sandboxes(true)).toEqual([]);
  });

  it('answers unknown sandboxes and routes with not-found codes', async () => {
    for (const [method, url] of [
      ['GET', '/v1/sandboxes/sb_doesnotexist'],
      ['DELETE', '/v1/sandboxes/sb_doesnotexist'],
      ['GET', '/v1/sandboxes/sb_doesnotexist/logs'],
    ] as const) {
      const res = await daemon.request(method, url);
      expect(res.status, url).toBe(404);
      expect(res.body.error.code).toBe('sandbox_not_found');
    }
    const exec = await daemon.request('POST', '/v1/sandboxes/sb_doesnotexist/exec', { cmd: ['true'] });
    expect(exec.body.error.code).toBe('sandbox_not_found');
    const route = await daemon.request('GET', '/v1/nothing-here');
    expect(route.status).toBe(404);
    expect(route.body.error.code).toBe('not_found');
  });

  it('reports a guest that cannot boot as vm_start_failed, keeps its console, leaks nothing', async () => {
    const res = await daemon.request('POST', '/v1/sandboxes', { template: 'broken' });
    expect(res.status, res.text).toBe(500);
    expect(res.body.error.code).toBe('vm_start_failed');
    expect(res.body.error.hint).toMatch(/capsule logs/);
    const [sandbox] = await daemon.api.sandboxes();
    expect(sandbox).toMatchObject({ state: 'error', stateReason: 'start_failed' });
    expect(await daemon.api.consoleLog(sandbox!.id)).toContain('capsule-init: error');
    expect(daemon.qemuPids()).toEqual([]);
    expect(daemon.runtimeLeftovers()).toEqual([]);
    expect(fs.existsSync(path.join(daemon.stateDir, 'sandboxes', sandbox!.id, 'overlay.qcow2'))).toBe(false);
  });

  it('keeps the API socket private to its owner', () => {
    expect(fs.statSync(daemon.socketPath).mode & 0o777).toBe(0o600);
  });

  it('publishes an OpenAPI document naming every route', async () => {
    const res = await daemon.request('GET', '/openapi.json');
    expect(res.status).toBe(200);
    expect(Object.keys(res.body.paths)).toEqual(
      expect.arrayContaining([
        '/v1/sandboxes',
        '/v1/sandboxes/{id}',
        '/v1/sandboxes/{id}/exec',
        '/v1/sandboxes/{id}/exec/stream',
        '/v1/sandboxes/{id}/logs',
        '/v1/info',
        '/v1/templates',
      ]),
    );
  });

  it('leaves no QEMU behind when stopped', async () => {
    await daemon.stop();
    const out = execFileSync('sh', ['-c', `ps -eo args | grep -c '[q]emu-system.*${daemon.root}' || true`])
      .toString()
      .trim();
    expect(out).toBe('0');
  });
});

describe('several boots at once (real QEMU microVM)', () => {
  const daemon = new TestDaemon();
  const it = sandboxTest(daemon);
  beforeAll(() => daemon.start());
  afterAll(() => daemon.destroy());

  // Under TCG on a loaded host the guest kernel's TSC calibration used to fail
  // and hang the boot; three concurrent boots on two cores reproduced it.
  it('boots three sandboxes concurrently, each answering with its own hostname', async ({ newSandbox }) => {
    const created = await Promise.all([1, 2, 3].map(() => newSandbox()));
    const hostnames = await Promise.all(created.map(async ({ id }) => (await daemon.api.exec(id, ['hostname'])).stdout.trim()));
    expect(hostnames.sort()).toEqual(created.map(({ id }) => id.replace('_', '-')).sort());
    await Promise.all(created.map(({ id }) => daemon.api.removeSandbox(id)));
    for (const { id } of created) expect(daemon.leftoversOf(id)).toEqual([]);
  });
});

describe('admission control (real QEMU microVM)', () => {
  // Room for two 512 MiB sandboxes' guest memory, not three; no warm pool, so every VM is one the test made.
  const daemon = new TestDaemon({ CAPSULE_MEMORY_BUDGET_MIB: '1100', CAPSULE_WARM_POOL_SIZE: '0' });
  const it = sandboxTest(daemon);
  beforeAll(() => daemon.start());
  afterAll(() => daemon.destroy());

  it('refuses a create past the memory budget with 429 capacity, starting nothing, and admits again after a removal', async ({
    newSandbox,
  }) => {
    const first = await newSandbox();
    await newSandbox();
    const refused = await daemon.request('POST', '/v1/sandboxes', {});
    expect(refused.status, refused.text).toBe(429);
    expect(refused.body.error.code).toBe('capacity');
    expect(refused.headers['retry-after']).toBe('2');
    expect(refused.body.error.message).toMatch(/budget of 1100 MiB/);
    expect(refused.body.error.hint).toMatch(/remove or pause/);
    expect(daemon.qemuPids()).toHaveLength(2);
    expect(await daemon.api.sandboxes(true)).toHaveLength(2);

    const { memoryUse } = await daemon.api.sandbox(first.id);
    expect(memoryUse?.rssMiB).toBeGreaterThan(0);
    expect(memoryUse!.privateMiB + memoryUse!.sharedMiB).toBeLessThanOrEqual(memoryUse!.rssMiB + 1);

    await daemon.api.pause(first.id);
    await newSandbox();
  });
});
