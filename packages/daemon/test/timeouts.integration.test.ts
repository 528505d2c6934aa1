// Sandbox timeouts with real microVMs: the reaper kills a sandbox when its
// lifetime runs out (also one that ran out while the daemon was down), a new
// timeout or a keepalive moves the deadline, and the history says why.
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { eventually, sandboxTest, TestDaemon } from './fixture.js';

describe('sandbox timeouts (real QEMU microVM)', () => {
  const daemon = new TestDaemon();
  const it = sandboxTest(daemon);
  beforeAll(() => daemon.start());
  afterAll(() => daemon.destroy());
  const get = (id: string) => daemon.api.sandbox(id);

  it('gives sandboxes a 5-minute timeout unless asked otherwise', async ({ sandbox }) => {
    expect(sandbox.timeoutMs).toBe(300_000);
    const left = Date.parse(sandbox.expiresAt!) - Date.now();
    expect(left).toBeGreaterThan(250_000);
    expect(left).toBeLessThanOrEqual(300_000);
    const none = await daemon.api.setTimeout(sandbox.id, 0);
    expect(none.expiresAt).toBeUndefined();
    expect(none.timeoutMs).toBe(0);
  });

  it('kills a sandbox whose timeout ran out, recording the reason, and leaves nothing', async ({ newSandbox }) => {
    const sandbox = await newSandbox({ timeoutMs: 2000 });
    const killed = await eventually(
      async () => {
        const s = await get(sandbox.id);
        return s.state === 'killed' ? s : undefined;
      },
      30_000,
      'the timeout',
    );
    expect(killed.history?.at(-1)).toMatchObject({ state: 'killed', reason: 'timeout' });
    expect(daemon.leftoversOf(sandbox.id)).toEqual([]);
  });

  it('pauses instead, when asked at create, keeping the sandbox resumable', async ({ newSandbox }) => {
    // Long enough for the exec below on a loaded host (at 2 s the pause came first, and cut it off).
    const sandbox = await newSandbox({ timeoutMs: 8000, onTimeout: 'pause' });
    expect(sandbox.onTimeout).toBe('pause');
    await daemon.api.exec(sandbox.id, ['sh', '-c', 'echo kept > /root/mark']);
    const paused = await eventually(
      async () => {
        const s = await get(sandbox.id);
        return s.state === 'paused' ? s : undefined;
      },
      60_000,
      'the timeout',
    );
    expect(paused.history?.at(-1)).toMatchObject({ state: 'paused', reason: 'timeout' });
    expect(daemon.qemuPids(sandbox.id)).toEqual([]);
    await daemon.api.resume(sandbox.id);
    // A resume restarts the 8 s lifetime; lift it so the check below cannot be paused again mid-way.
    await daemon.api.setTimeout(sandbox.id, 0);
    expect((await daemon.api.exec(sandbox.id, ['cat', '/root/mark'])).stdout).toBe('kept\n');
  });

  it('moves the deadline on a new timeout and on keepalive', async ({ newSandbox }) => {
    const sandbox = await newSandbox({ timeoutMs: 3000 });
    const longer = await daemon.api.setTimeout(sandbox.id, 6000);
    expect(Date.parse(longer.expiresAt!)).toBeGreaterThan(Date.parse(sandbox.expiresAt!));
    for (let i = 0; i < 4; i++) {
      await sleep(2000);
      expect((await daemon.api.keepAlive(sandbox.id)).timeoutMs).toBe(6000);
    }
    // Eight seconds after a 3-second timeout, kept alive all along.
    expect((await get(sandbox.id)).state).toBe('running');
    await eventually(async () => ((await get(sandbox.id)).state === 'killed' ? true : undefined), 30_000, 'the timeout');
  });

  it('refuses bad timeouts and timeouts of sandboxes that do not run', async ({ newSandbox }) => {
    const sandbox = await newSandbox({ timeoutMs: 0 });
    for (const timeoutMs of [-1, 1.5, 40 * 24 * 3600 * 1000]) {
      const res = await daemon.request('POST', `/v1/sandboxes/${sandbox.id}/timeout`, { timeoutMs });
      expect(res.status, String(timeoutMs)).toBe(400);
      expect(res.body.error.code).toBe('invalid_argument');
    }
    expect((await daemon.request('POST', '/v1/sandboxes', { timeoutMs: -5 })).status).toBe(400);
    expect((await daemon.request('POST', '/v1/sandboxes/sb_nope/keepalive')).body.error.code).toBe('sandbox_not_found');
    await daemon.api.removeSandbox(sandbox.id);
    const late = await daemon.request('POST', `/v1/sandboxes/${sandbox.id}/timeout`, { timeoutMs: 1000 });
    expect(late.status).toBe(409);
    expect(late.body.error.code).toBe('sandbox_not_running');
  });

  it('kills, after a restart, a sandbox whose timeout ran out while the daemon was down', async ({ newSandbox }) => {
    const sandbox = await newSandbox({ timeoutMs: 2000 });
    await daemon.kill9();
    await sleep(3000);
    expect(daemon.qemuPids(sandbox.id)).toHaveLength(1);
    await daemon.start();
    const killed = await eventually(
      async () => {
        const s = await get(sandbox.id);
        return s.state === 'killed' ? s : undefined;
      },
      30_000,
      'the timeout after the restart',
    );
    expect(killed.stateReason).toBe('timeout');
    expect(daemon.leftoversOf(sandbox.id)).toEqual([]);
  });
});
