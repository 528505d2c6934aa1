// Fork with real microVMs: each fork continues from the moment of the fork
// with the source's files and running processes, gets its own identity and
// its own disk, and the source runs on.
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { TestDaemon } from './fixture.js';

describe('fork (real QEMU microVM)', () => {
  const daemon = new TestDaemon();
  beforeAll(() => daemon.start());
  afterAll(() => daemon.destroy());
  const exec = async (id: string, cmd: string[]) => (await daemon.request('POST', `/v1/sandboxes/${id}/exec`, { cmd })).body;

  it('starts forks that continue from this moment, each with its own identity and disk', async () => {
    onTestFailed(() => console.error(`capsuled log:\n${daemon.log()}`));
    const { body: source } = await daemon.request('POST', '/v1/sandboxes', { metadata: { role: 'source' } });
    await exec(source.id, ['sh', '-c', 'echo before-fork > /root/state; (n=0; while true; do n=$((n+1)); echo $n > /root/counter; sleep 0.2; done) > /dev/null 2>&1 &']);

    const res = await daemon.request('POST', `/v1/sandboxes/${source.id}/fork`, { count: 2 });
    expect(res.status, res.text).toBe(201);
    const forks = res.body.sandboxes as { id: string; state: string; metadata: Record<string, string>; history: { message?: string }[] }[];
    expect(forks).toHaveLength(2);
    for (const fork of forks) {
      expect(fork.state).toBe('running');
      expect(fork.metadata).toEqual({ role: 'source' });
      expect(fork.history.at(-1)?.message).toBe(`forked from ${source.id}`);
    }

    const ids = [source.id, ...forks.map((f) => f.id)];
    const hostnames = await Promise.all(ids.map(async (id) => (await exec(id, ['hostname'])).stdout.trim()));
    expect(hostnames).toEqual(ids.map((id) => id.replace('_', '-')));
    for (const id of ids) expect((await exec(id, ['cat', '/root/state'])).stdout).toBe('before-fork\n');

    // The counting process runs on in the forks and in the source.
    const before = await Promise.all(ids.map(async (id) => Number((await exec(id, ['cat', '/root/counter'])).stdout)));
    await sleep(1500);
    const after = await Promise.all(ids.map(async (id) => Number((await exec(id, ['cat', '/root/counter'])).stdout)));
    after.forEach((value, i) => expect(value, ids[i]).toBeGreaterThan(before[i]!));

    // Disks are separate from the moment of the fork on.
    await exec(forks[0]!.id, ['sh', '-c', 'echo fork-only > /root/state']);
    expect((await exec(source.id, ['cat', '/root/state'])).stdout).toBe('before-fork\n');
    expect((await exec(forks[1]!.id, ['cat', '/root/state'])).stdout).toBe('before-fork\n');
    const randomness = await Promise.all(ids.map(async (id) => (await exec(id, ['head', '-c', '16', '/dev/urandom'])).stdout));
    expect(new Set(randomness).size).toBe(3);

    for (const id of ids) expect((await daemon.request('DELETE', `/v1/sandboxes/${id}`)).status).toBe(204);
  });

  it('refuses bad counts and sandboxes that do not run', async () => {
    const { body: sandbox } = await daemon.request('POST', '/v1/sandboxes', {});
    for (const count of [0, 17, 1.5]) {
      const res = await daemon.request('POST', `/v1/sandboxes/${sandbox.id}/fork`, { count });
      expect(res.status, String(count)).toBe(400);
    }
    await daemon.request('POST', `/v1/sandboxes/${sandbox.id}/pause`);
    expect((await daemon.request('POST', `/v1/sandboxes/${sandbox.id}/fork`, {})).body.error.code).toBe('sandbox_not_running');
    await daemon.request('DELETE', `/v1/sandboxes/${sandbox.id}`);
  });
});
