// `capsule snapshot` with real microVMs: a running sandbox's state becomes a
// warm template whose sandboxes continue from that moment (files, running
// processes) with their own identity; the source runs on; the template
// survives a daemon restart, is removed by `template rm`, and a corrupt
// snapshot fails its restores cleanly.
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { it, TestDaemon } from './fixture.js';

describe('snapshot a sandbox as a template (real QEMU microVM)', () => {
  // No warm pool: every VM here is one the test asked for.
  const daemon = new TestDaemon({ CAPSULE_WARM_POOL_SIZE: '0' });
  beforeAll(() => daemon.start());
  afterAll(() => daemon.destroy());
  const exec = (id: string, cmd: string[]) => daemon.api.exec(id, cmd);
  const counter = async (id: string) => Number((await exec(id, ['cat', '/root/counter'])).stdout);
  const template = async (name: string) => (await daemon.api.templates()).find((t) => t.name === name);
  // The tests follow one source and its snapshot template through their life, in order: a snapshot writes the
  // guest's whole memory, too slow under TCG to make again for every test.
  let sourceId = '';
  let fromSnapshot: string[] = [];

  it('makes a warm template whose sandboxes continue from that moment with their own identity, the source running on', async () => {
    const source = await daemon.api.createSandbox({ timeoutMs: 0 });
    sourceId = source.id;
    await exec(sourceId, [
      'sh',
      '-c',
      'echo at-snapshot > /root/state; sync; (n=0; while true; do n=$((n+1)); echo $n > /root/counter.new; mv /root/counter.new /root/counter; sleep 0.2; done) > /dev/null 2>&1 &',
    ]);

    expect(await daemon.api.snapshot(sourceId, 'snap-a')).toMatchObject({
      name: 'snap-a',
      ready: true,
      warmSnapshot: 'ready',
      defaultMemoryMiB: source.memoryMiB,
    });
    expect(await template('snap-a')).toMatchObject({ warmSnapshot: 'ready' });

    // The source runs on and its later writes are its own.
    const before = await counter(sourceId);
    await exec(sourceId, ['sh', '-c', 'echo after-snapshot > /root/state']);

    const created = await Promise.all([1, 2].map(() => daemon.api.createSandbox({ template: 'snap-a', env: { WHO: 'clone' } })));
    fromSnapshot = created.map((c) => c.id);
    for (const id of fromSnapshot) {
      expect((await daemon.api.sandbox(id)).history?.at(-1)?.message).toBe('restored from the warm snapshot of snap-a');
      expect((await exec(id, ['cat', '/root/state'])).stdout).toBe('at-snapshot\n');
      expect((await exec(id, ['sh', '-c', 'echo $WHO'])).stdout).toBe('clone\n');
    }
    const ids = [sourceId, ...fromSnapshot];
    expect(await Promise.all(ids.map(async (id) => (await exec(id, ['hostname'])).stdout.trim()))).toEqual(
      ids.map((id) => id.replace('_', '-')),
    );
    const randomness = await Promise.all(
      ids.map(async (id) => (await exec(id, ['sh', '-c', 'head -c 16 /dev/urandom | od -An -tx1'])).stdout),
    );
    expect(new Set(randomness).size).toBe(3);
    // The counting process started before the snapshot runs in every copy.
    const counts = await Promise.all(ids.map(counter));
    await sleep(1500);
    const later = await Promise.all(ids.map(counter));
    later.forEach((value, i) => expect(value, ids[i]).toBeGreaterThan(counts[i]!));
    expect(later[0]).toBeGreaterThan(before);
    const clocks = await Promise.all(fromSnapshot.map(async (id) => Number((await exec(id, ['date', '+%s'])).stdout)));
    for (const clock of clocks) expect(Math.abs(clock - Date.now() / 1000)).toBeLessThan(5);
  });

  it('refuses a taken name, a bad name, other resources and sandboxes that do not run', async () => {
    const taken = await daemon.request('POST', `/v1/sandboxes/${sourceId}/snapshot`, { template: 'snap-a' });
    expect(taken.status).toBe(409);
    expect(taken.body.error.code).toBe('name_taken');
    expect((await daemon.request('POST', `/v1/sandboxes/${sourceId}/snapshot`, { template: 'Bad Name' })).status).toBe(400);
    expect((await daemon.request('POST', `/v1/sandboxes/${sourceId}/snapshot`, {})).status).toBe(400);
    expect((await daemon.request('POST', '/v1/sandboxes/sb_nope/snapshot', { template: 'x' })).body.error.code).toBe('sandbox_not_found');
    const resized = await daemon.request('POST', '/v1/sandboxes', { template: 'snap-a', memoryMiB: 256 });
    expect(resized.status, resized.text).toBe(400);
    expect(resized.body.error.message).toMatch(/snapshot of 1 vCPU\(s\) and 512 MiB/);
    const other = await daemon.api.createSandbox();
    await daemon.api.pause(other.id);
    expect((await daemon.request('POST', `/v1/sandboxes/${other.id}/snapshot`, { template: 'snap-b' })).body.error.code).toBe(
      'sandbox_not_running',
    );
    await daemon.api.removeSandbox(other.id);
    expect(await template('snap-b')).toBeUndefined();
  });

  it('keeps the template across a daemon restart, loading its snapshot rather than rebuilding it', async () => {
    await daemon.kill9();
    await daemon.start();
    const ready = async () => (await template('snap-a'))?.warmSnapshot;
    for (let i = 0; i < 100 && (await ready()) === 'building'; i++) await sleep(100);
    expect(await ready()).toBe('ready');
    expect(
      daemon
        .log()
        .split('\n')
        .filter((line) => line.includes('warm snapshot built') && line.includes('snap-a')),
    ).toEqual([]);
    const created = await daemon.api.createSandbox({ template: 'snap-a' });
    expect((await exec(created.id, ['cat', '/root/state'])).stdout).toBe('at-snapshot\n');
    await daemon.api.removeSandbox(created.id);
  });

  it('fails restores of a corrupt snapshot cleanly: error with the reason, no stray QEMU, later creates refused', async () => {
    await daemon.api.snapshot(sourceId, 'snap-corrupt');
    const dir = fs.readdirSync(path.join(daemon.stateDir, 'templates')).find((d) => d.startsWith('snap-corrupt-'));
    fs.writeFileSync(path.join(daemon.stateDir, 'templates', dir!, 'state'), Buffer.alloc(4096, 0x5a));
    const before = daemon.qemuPids().length;

    const failed = await daemon.request('POST', '/v1/sandboxes', { template: 'snap-corrupt' });
    expect(failed.status, failed.text).toBe(500);
    expect(failed.body.error.code).toBe('vm_start_failed');
    const sandbox = (await daemon.api.sandboxes()).find((s) => s.template === 'snap-corrupt');
    expect(sandbox).toMatchObject({ state: 'error', stateReason: 'start_failed' });
    expect(sandbox!.stateMessage).toMatch(/restoring the VM state failed/);
    expect(daemon.leftoversOf(sandbox!.id)).toEqual([]);
    expect(daemon.qemuPids().length).toBe(before);

    // A snapshot template never falls back to booting its disk cold.
    const again = await daemon.request('POST', '/v1/sandboxes', { template: 'snap-corrupt' });
    expect(again.status, again.text).toBe(409);
    expect(again.body.error.code).toBe('template_not_ready');
    expect(again.body.error.hint).toMatch(/template rm snap-corrupt/);
    expect(daemon.qemuPids().length).toBe(before);
    expect((await daemon.request('DELETE', '/v1/templates/snap-corrupt')).status).toBe(204);
  });

  it('refuses template rm while sandboxes made from it live, then removes the template and its files', async () => {
    const dirs = () => fs.readdirSync(path.join(daemon.stateDir, 'templates')).filter((d) => d.startsWith('snap-'));
    expect(dirs()).toHaveLength(1);
    const refused = await daemon.request('DELETE', '/v1/templates/snap-a');
    expect(refused.status, refused.text).toBe(409);
    expect(refused.body.error).toMatchObject({ code: 'template_in_use', hint: expect.stringContaining(fromSnapshot[0]!) });
    expect(await template('snap-a')).toMatchObject({ warmSnapshot: 'ready' });
    // A paused one counts too: its resume reopens its disk, an overlay on the template's.
    await daemon.api.pause(fromSnapshot[0]!);
    await daemon.api.resume(fromSnapshot[0]!);
    expect((await exec(fromSnapshot[0]!, ['cat', '/root/state'])).stdout).toBe('at-snapshot\n');
    for (const id of fromSnapshot) await daemon.api.removeSandbox(id);

    expect((await daemon.request('DELETE', '/v1/templates/snap-a')).status).toBe(204);
    expect(await template('snap-a')).toBeUndefined();
    expect(dirs()).toEqual([]);
    expect((await daemon.request('POST', '/v1/sandboxes', { template: 'snap-a' })).body.error.code).toBe('template_not_found');
    // The source never depended on the template.
    expect((await exec(sourceId, ['cat', '/root/state'])).stdout).toBe('after-snapshot\n');
    await daemon.api.removeSandbox(sourceId);
    expect(daemon.qemuPids()).toEqual([]);
  });
});
