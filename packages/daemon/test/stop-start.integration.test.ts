// Machines that last: a sandbox stopped and started keeps its disk (files,
// installed programs); resources change only while it is stopped and show
// inside after the next start; a lifetime can end in a stop; and a simulated
// host reboot (daemon and every QEMU killed, runtime folder gone) brings back
// the sandboxes that ran, with their files, and leaves stopped and paused ones
// as they were. Real QEMU microVMs, real daemon.
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { eventually, it, TestDaemon } from './fixture.js';

const START_TIMEOUT_MS = 120_000;

describe('stop, start, resources and host reboots (real QEMU microVMs)', () => {
  const daemon = new TestDaemon({ CAPSULE_WARM_POOL_SIZE: '0' });
  beforeAll(async () => {
    await daemon.start(START_TIMEOUT_MS);
    await daemon.waitForWarmSnapshot(600_000);
  }, 700_000);
  afterAll(() => daemon.destroy());

  const sh = async (id: string, script: string) => {
    const result = await daemon.api.exec(id, ['sh', '-c', script], { user: 'root' });
    expect(result.exitCode, result.stderr).toBe(0);
    return result.stdout;
  };
  const post = async (id: string, action: string) => {
    const res = await daemon.request('POST', `/v1/sandboxes/${id}/${action}`);
    expect(res.status, res.text).toBe(200);
    return res.body;
  };

  it('a stopped sandbox keeps its files and programs, holds no VM, and starts again from its disk', async () => {
    const { id } = await daemon.api.createSandbox({ name: 'lasting', timeoutMs: 0 });
    await sh(
      id,
      'echo kept > /root/data && printf "#!/bin/sh\\necho installed\\n" > /usr/local/bin/tool && chmod +x /usr/local/bin/tool && sync',
    );

    const stopped = await post(id, 'stop');
    expect(stopped).toMatchObject({ state: 'stopped', desiredState: 'stopped' });
    expect(stopped.pid).toBeUndefined();
    expect(daemon.qemuPids(id)).toEqual([]);
    expect(daemon.log()).toMatch(new RegExp(`"sandbox":"${id}"[^\\n]*"how":"powered off by its guest"`));
    // Stopping again is a no-op; exec is refused with a hint.
    expect((await daemon.request('POST', `/v1/sandboxes/${id}/stop`)).status).toBe(200);
    const refused = await daemon.request('POST', `/v1/sandboxes/${id}/exec`, { cmd: ['true'] });
    expect(refused.status).toBe(409);

    const started = await post(id, 'start');
    expect(started).toMatchObject({ state: 'running', desiredState: 'running' });
    expect(daemon.qemuPids(id)).toEqual([started.pid]);
    expect(await sh(id, 'cat /root/data; tool; hostname')).toBe(
      `kept\ninstalled\n${(await daemon.api.sandbox(id)).id.replace(/_/g, '-')}\n`,
    );
    const history = (await daemon.api.sandbox(id)).history?.map((h) => h.state);
    expect(history).toEqual(['starting', 'running', 'stopped', 'stopped', 'running']);

    const restarted = await post(id, 'restart');
    expect(restarted.state).toBe('running');
    expect(restarted.pid).not.toBe(started.pid);
    expect(await sh(id, 'cat /root/data')).toBe('kept\n');
    await daemon.api.removeSandbox(id);
  }, 600_000);

  it('a volume stays attached and mounted through a stop and a start', async () => {
    const created = await daemon.request('POST', '/v1/sandboxes', {
      timeoutMs: 0,
      volumes: [{ name: 'kept-through-stop', mount: '/data' }],
    });
    expect(created.status, created.text).toBe(201);
    const id = created.body.id as string;
    await sh(id, 'echo on-volume > /data/f && sync');
    await post(id, 'stop');
    await post(id, 'start');
    expect(await sh(id, 'cat /data/f; grep -c " /data ext4 " /proc/mounts')).toBe('on-volume\n1\n');
    await daemon.api.removeSandbox(id);
    expect((await daemon.request('DELETE', '/v1/volumes/kept-through-stop')).status).toBe(204);
  }, 600_000);

  it('resources change only while stopped, the disk only grows, and the guest sees the new CPUs, memory and disk', async () => {
    const { id } = await daemon.api.createSandbox({ timeoutMs: 0 });
    const diskBefore = Number(await sh(id, "df -B1M --output=size / | tail -1 | tr -d ' '"));
    const whileRunning = await daemon.request('PATCH', `/v1/sandboxes/${id}/resources`, { vcpus: 2 });
    expect(whileRunning.status).toBe(409);
    expect(whileRunning.body).toMatchObject({ error: { code: 'sandbox_not_stopped' } });

    await post(id, 'stop');
    const shrink = await daemon.request('PATCH', `/v1/sandboxes/${id}/resources`, { diskMiB: 64 });
    expect(shrink.status).toBe(400);
    const nothing = await daemon.request('PATCH', `/v1/sandboxes/${id}/resources`, {});
    expect(nothing.status).toBe(400);
    const set = await daemon.request('PATCH', `/v1/sandboxes/${id}/resources`, { vcpus: 2, memoryMiB: 768, diskMiB: diskBefore + 1024 });
    expect(set.status, set.text).toBe(200);
    expect(set.body).toMatchObject({ vcpus: 2, memoryMiB: 768, state: 'stopped' });

    await post(id, 'start');
    expect(await sh(id, 'nproc')).toBe('2\n');
    const memTotalMiB = Number((await sh(id, "awk '/MemTotal/ { print $2 }' /proc/meminfo")).trim()) / 1024;
    expect(memTotalMiB).toBeGreaterThan(600);
    expect(memTotalMiB).toBeLessThanOrEqual(768);
    const diskAfter = Number(await sh(id, "df -B1M --output=size / | tail -1 | tr -d ' '"));
    expect(diskAfter).toBeGreaterThan(diskBefore + 900);
    await daemon.api.removeSandbox(id);
  }, 600_000);

  it('a lifetime can end in a stop, and the sandbox starts again with its lifetime restarted', async () => {
    const { id } = await daemon.api.createSandbox({ timeoutMs: 2000, onTimeout: 'stop' });
    await sh(id, 'echo before > /root/mark && sync');
    const stopped = await eventually(
      async () => {
        const s = await daemon.api.sandbox(id);
        return s.state === 'stopped' ? s : undefined;
      },
      120_000,
      'the timeout to stop it',
    );
    expect(stopped).toMatchObject({ stateReason: 'timeout', desiredState: 'stopped' });
    await post(id, 'start');
    await daemon.request('POST', `/v1/sandboxes/${id}/timeout`, { timeoutMs: 0 });
    expect(await sh(id, 'cat /root/mark')).toBe('before\n');
    await daemon.api.removeSandbox(id);
  }, 600_000);

  it('after a simulated host reboot the sandboxes that ran come back with their files; stopped and paused ones stay so', async () => {
    const running: string[] = [];
    for (let i = 0; i < 3; i++) {
      const { id } = await daemon.api.createSandbox({ timeoutMs: 0 });
      await sh(id, `echo file-${i} > /root/mine && sync`);
      running.push(id);
    }
    const { id: stoppedId } = await daemon.api.createSandbox({ timeoutMs: 0 });
    await post(stoppedId, 'stop');
    const { id: pausedId } = await daemon.api.createSandbox({ timeoutMs: 0 });
    await post(pausedId, 'pause');
    // A lifetime that runs out while the host is down: its action (kill) is done at the restart instead.
    const { id: expiring } = await daemon.api.createSandbox({ timeoutMs: 8000 });
    const expiresAt = Date.now() + 8000;

    // The reboot: the daemon and every QEMU die at once, and /run goes with the host.
    await daemon.kill9();
    for (const pid of daemon.qemuPids()) process.kill(pid, 'SIGKILL');
    await eventually(() => (daemon.qemuPids().length === 0 ? true : undefined), 30_000, 'every QEMU to be gone');
    fs.rmSync(daemon.runtimeDir, { recursive: true, force: true });
    await sleep(Math.max(0, expiresAt + 1000 - Date.now()));
    await daemon.start(START_TIMEOUT_MS);

    for (const [i, id] of running.entries()) {
      const back = await eventually(
        async () => {
          const s = await daemon.api.sandbox(id);
          return s.state === 'running' ? s : undefined;
        },
        300_000,
        `${id} to run again`,
      );
      expect(back.history?.some((h) => h.state === 'stopped' && h.reason === 'host_restart')).toBe(true);
      expect(back.history?.at(-1)).toMatchObject({ state: 'running', reason: 'host_restart' });
      expect(await sh(id, 'cat /root/mine')).toBe(`file-${i}\n`);
    }
    expect(await daemon.api.sandbox(stoppedId)).toMatchObject({ state: 'stopped', desiredState: 'stopped' });
    expect(await daemon.api.sandbox(pausedId)).toMatchObject({ state: 'paused', desiredState: 'paused' });
    expect((await post(pausedId, 'resume')).state).toBe('running');
    expect(await daemon.api.sandbox(expiring)).toMatchObject({ state: 'killed', stateReason: 'timeout' });
    for (const id of [...running, stoppedId, pausedId]) await daemon.api.removeSandbox(id);
  }, 1_200_000);
});
