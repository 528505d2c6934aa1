// Sandboxes restored from a template's warm snapshot (real QEMU microVMs): each
// clone gets its own identity, clock and randomness; a broken snapshot fails
// one create clearly, leaks nothing, and later creates boot cold.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import type { Sandbox } from '@capsule/protocol';
import { eventually, it, sandboxTest, sharedCacheDir, TestDaemon } from './fixture.js';

const restored = (sandbox: Sandbox) => /restored from the warm snapshot/.test(sandbox.history?.at(-1)?.message ?? '');

describe('sandboxes from a warm snapshot (real QEMU microVM)', () => {
  const daemon = new TestDaemon({ CAPSULE_WARM_POOL_SIZE: '1' });
  const it = sandboxTest(daemon);
  beforeAll(async () => {
    await daemon.start();
    await daemon.waitForWarmSnapshot(120_000);
  });
  afterAll(() => daemon.destroy());
  const exec = (id: string, cmd: string[]) => daemon.api.exec(id, cmd);

  it('restores clones that differ in hostname, randomness and files, with the clock set and env applied', async ({ newSandbox }) => {
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const sandbox = await newSandbox({ env: { CLONE: String(i) } });
      expect(restored(sandbox), JSON.stringify(sandbox.history)).toBe(true);
      ids.push(sandbox.id);
    }
    const probe = [
      'python3',
      '-c',
      'import os, socket, time; print(socket.gethostname(), os.urandom(16).hex(), time.time(), os.environ.get("CLONE"))',
    ];
    const outputs = await Promise.all(ids.map((id) => exec(id, probe)));
    const [a, b] = outputs.map((o) => o.stdout.trim().split(' '));
    expect(a![0]).toBe(ids[0]!.replace('_', '-'));
    expect(b![0]).toBe(ids[1]!.replace('_', '-'));
    expect(a![1]).not.toBe(b![1]);
    for (const clock of [a![2], b![2]]) expect(Math.abs(Number(clock) - Date.now() / 1000)).toBeLessThan(15); // set at restore (an unset clock is the snapshot's, minutes off); 5 s was missed by 0.3 s under load
    expect([a![3], b![3]]).toEqual(['0', '1']);

    await exec(ids[0]!, ['sh', '-c', 'echo mine > /root/only-here']);
    expect((await exec(ids[1]!, ['cat', '/root/only-here'])).exitCode).not.toBe(0);
    expect((await exec(ids[0]!, ['cat', '/root/only-here'])).stdout).toBe('mine\n');
  });

  it('boots cold when a create asks for other resources than the snapshot has', async ({ newSandbox }) => {
    expect((await newSandbox({ memoryMiB: 256 })).history?.at(-1)?.message).toBe('booted cold');
  });

  it('keeps the snapshot files unchanged by the sandboxes restored from it', async ({ sandbox }) => {
    expect(restored(sandbox), JSON.stringify(sandbox.history)).toBe(true);
    const [snapshotDir] = fs.readdirSync(path.join(sharedCacheDir, 'snapshots')).filter((n) => n.startsWith('base-'));
    const files = ['memory', 'state', 'disk.qcow2'].map((f) => path.join(sharedCacheDir, 'snapshots', snapshotDir!, f));
    const before = files.map((f) => fs.statSync(f).mtimeMs);
    // Dirty guest memory and disk in a restored sandbox: neither may reach the snapshot.
    await exec(sandbox.id, ['sh', '-c', 'head -c 50000000 /dev/urandom > /root/big; python3 -c "b = bytearray(64 << 20)"; sync']);
    expect(files.map((f) => fs.statSync(f).mtimeMs)).toEqual(before);
  });

  it('stops its warm-pool VMs when the daemon stops', async () => {
    await eventually(() => (daemon.qemuPids().length > 0 ? true : undefined), 60_000, 'the pool to refill');
    await daemon.stop();
    expect(daemon.qemuPids()).toEqual([]);
    expect(daemon.runtimeLeftovers()).toEqual([]);
  });
});

describe('a warm snapshot build cut short by the daemon stopping (real QEMU microVM)', () => {
  // A private cache with the real kernel, kit and rootfs and no snapshot: the daemon starts building one.
  const cacheDir = fs.mkdtempSync('/tmp/capsule-test-cache-');
  const daemon = new TestDaemon({ CAPSULE_CACHE_DIR: cacheDir, CAPSULE_WARM_POOL_SIZE: '0' });
  afterAll(async () => {
    await daemon.destroy();
    fs.rmSync(cacheDir, { recursive: true, force: true });
  });

  it('stops the template VM and removes the half-written snapshot', async () => {
    fs.copyFileSync(path.join(sharedCacheDir, 'guest-manifest.json'), path.join(cacheDir, 'guest-manifest.json'));
    await daemon.start();
    const snapshots = path.join(cacheDir, 'snapshots');
    await eventually(
      () => (daemon.qemuPids().length > 0 && fs.readdirSync(snapshots).some((n) => n.includes('.tmp-')) ? true : undefined),
      60_000,
      'the build to start its VM',
    );
    await daemon.stop();
    // It ended by itself, not by the fixture's SIGKILL after 10 s: the build was stopped, not waited for.
    expect(daemon.ended).toEqual({ code: 0, signal: null });
    expect(daemon.qemuPids()).toEqual([]);
    expect(fs.readdirSync(snapshots)).toEqual([]);
  });
});

describe('a corrupt warm snapshot (real QEMU microVM)', () => {
  // A private cache with the real kernel, kit and rootfs and a copy of the real
  // snapshot whose device state is cut short.
  const cacheDir = fs.mkdtempSync('/tmp/capsule-test-cache-');
  const daemon = new TestDaemon({ CAPSULE_CACHE_DIR: cacheDir, CAPSULE_WARM_POOL_SIZE: '0' });

  beforeAll(async () => {
    fs.copyFileSync(path.join(sharedCacheDir, 'guest-manifest.json'), path.join(cacheDir, 'guest-manifest.json'));
    for (const file of ['accel-probe.json']) {
      if (fs.existsSync(path.join(sharedCacheDir, file))) fs.copyFileSync(path.join(sharedCacheDir, file), path.join(cacheDir, file));
    }
    const snapshots = path.join(sharedCacheDir, 'snapshots');
    // The shared cache may hold other checkouts' snapshots too (an older initramfs with the same kit, say):
    // take the one made with this manifest's kit and initramfs.
    const manifest = JSON.parse(fs.readFileSync(path.join(sharedCacheDir, 'guest-manifest.json'), 'utf8')) as {
      kit: string;
      initramfs: string;
    };
    const name = fs
      .readdirSync(snapshots)
      .filter((n) => n.startsWith('base-') && fs.existsSync(path.join(snapshots, n, 'snapshot.json')))
      .find((n) => {
        const { machine } = JSON.parse(fs.readFileSync(path.join(snapshots, n, 'snapshot.json'), 'utf8')) as {
          machine: { kitDisk: string; initramfs: string };
        };
        return machine.kitDisk === manifest.kit && machine.initramfs === manifest.initramfs;
      });
    fs.mkdirSync(path.join(cacheDir, 'snapshots', name!), { recursive: true });
    for (const file of ['snapshot.json', 'disk.qcow2', 'memory']) {
      fs.copyFileSync(path.join(snapshots, name!, file), path.join(cacheDir, 'snapshots', name!, file));
    }
    const state = fs.readFileSync(path.join(snapshots, name!, 'state'));
    fs.writeFileSync(path.join(cacheDir, 'snapshots', name!, 'state'), state.subarray(0, Math.floor(state.length / 3)));
    await daemon.start();
    await eventually(
      async () => ((await daemon.api.templates())[0]?.warmSnapshot === 'ready' ? true : undefined),
      30_000,
      'the snapshot to load',
    );
  });
  afterAll(async () => {
    await daemon.destroy();
    fs.rmSync(cacheDir, { recursive: true, force: true });
  });

  it('fails the create with vm_start_failed, leaks nothing, and boots the next one cold', async () => {
    const res = await daemon.request('POST', '/v1/sandboxes', {});
    expect(res.status, res.text).toBe(500);
    expect(res.body.error.code).toBe('vm_start_failed');
    expect(res.body.error.message).toMatch(/restor/i);
    const [failed] = await daemon.api.sandboxes();
    expect(failed).toMatchObject({ state: 'error', stateReason: 'start_failed' });
    expect(daemon.qemuPids()).toEqual([]);
    expect(daemon.runtimeLeftovers()).toEqual([]);

    expect((await daemon.api.templates())[0]?.warmSnapshot).toBe('failed');
    expect((await daemon.api.createSandbox()).history?.at(-1)?.message).toBe('booted cold');
  });
});
