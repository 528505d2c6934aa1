// Fork with real microVMs: each fork continues from the moment of the fork
// with the source's files and running processes, gets its own identity and
// its own disk, and the source runs on.
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { backingChain } from '../src/guest/cache-pins.js';
import { sandboxTest, TestDaemon } from './fixture.js';

describe('fork (real QEMU microVM)', () => {
  const daemon = new TestDaemon();
  const it = sandboxTest(daemon);
  beforeAll(() => daemon.start());
  afterAll(() => daemon.destroy());
  const exec = (id: string, cmd: string[]) => daemon.api.exec(id, cmd);

  it('starts forks that continue from this moment, each with its own identity and disk', async ({ newSandbox }) => {
    const source = await newSandbox({ metadata: { role: 'source' } });
    await exec(source.id, [
      'sh',
      '-c',
      'echo before-fork > /root/state; (n=0; while true; do n=$((n+1)); echo $n > /root/counter.new; mv /root/counter.new /root/counter; sleep 0.2; done) > /dev/null 2>&1 &',
    ]);

    const forks = await daemon.api.fork(source.id, 2);
    expect(forks).toHaveLength(2);
    for (const fork of forks) {
      expect(fork.state).toBe('running');
      expect(fork.metadata).toEqual({ role: 'source' });
      expect(fork.history?.at(-1)?.message).toBe(`forked from ${source.id}`);
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

    // Each fork's disk is an overlay of its own on one shared copy of the source's disk at the fork.
    const sharedDisks = () => fs.readdirSync(path.join(daemon.stateDir, 'disks')).map((name) => path.join(daemon.stateDir, 'disks', name));
    const diskBelow = (id: string) => backingChain(path.join(daemon.stateDir, 'sandboxes', id, 'overlay.qcow2'))[0];
    expect(sharedDisks()).toHaveLength(1);
    for (const fork of forks) expect(diskBelow(fork.id)).toBe(sharedDisks()[0]);
    // A fork of a fork is built on that copy too, and outlives its source and the fork it came from.
    const grandchild = (await daemon.api.fork(forks[0]!.id, 1))[0]!.id;
    expect(sharedDisks()).toHaveLength(2);
    for (const id of [source.id, forks[0]!.id]) await daemon.api.removeSandbox(id);
    await daemon.api.pause(grandchild);
    await daemon.api.resume(grandchild);
    expect((await exec(grandchild, ['cat', '/root/state'])).stdout).toBe('fork-only\n');
    expect((await exec(forks[1]!.id, ['cat', '/root/state'])).stdout).toBe('before-fork\n');
    // The shared copies go with their last user.
    for (const id of [forks[1]!.id, grandchild]) await daemon.api.removeSandbox(id);
    expect(sharedDisks()).toEqual([]);
  });

  it('refuses bad counts and sandboxes that do not run', async ({ sandbox }) => {
    for (const count of [0, 17, 1.5]) {
      const res = await daemon.request('POST', `/v1/sandboxes/${sandbox.id}/fork`, { count });
      expect(res.status, String(count)).toBe(400);
    }
    await daemon.api.pause(sandbox.id);
    expect((await daemon.request('POST', `/v1/sandboxes/${sandbox.id}/fork`, {})).body.error.code).toBe('sandbox_not_running');
  });
});
