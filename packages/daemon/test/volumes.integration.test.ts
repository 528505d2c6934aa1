// Volumes with real microVMs: data a sandbox wrote and fsynced is on the
// volume for the next sandbox, even when the first one's QEMU was killed
// (kill -9) right after; pause and resume keep the volume; one writer or many
// readers (volume_in_use names the holder); removal and resize refused while
// attached; a read-only attachment cannot write; a grown volume shows its new
// size inside; a snapshot restored as a new volume has the same data; a
// sandbox with a volume cannot be forked. Few sandboxes: each boots cold
// under TCG.
import type { Sandbox, Volume } from '@capsule/protocol';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { eventually, sandboxTest, TestDaemon } from './fixture.js';

const MIB = 1024 * 1024;

describe('volumes (real QEMU microVM)', () => {
  const daemon = new TestDaemon();
  const it = sandboxTest(daemon);
  beforeAll(() => daemon.start());
  afterAll(() => daemon.destroy());
  const exec = (id: string, script: string) => daemon.api.exec(id, ['sh', '-c', script]);
  /** The filesystem size the guest sees at `mount`, in MiB (df's 1M blocks, total). */
  const volume = async (name: string) => {
    const res = await daemon.request<Volume>('GET', `/v1/volumes/${name}`);
    expect(res.status).toBe(200);
    return res.body;
  };
  const guestSizeMiB = async (id: string, mount: string) =>
    Number((await exec(id, `df -m ${mount} | tail -1 | awk '{print $2}'`)).stdout.trim());

  it('keeps fsynced data across sandboxes and a killed QEMU, with one writer or many readers', async ({ newSandbox }) => {
    const created = await daemon.request<Volume>('POST', '/v1/volumes', { name: 'data', size: '256M' });
    expect(created.status).toBe(201);
    expect(created.body.sizeBytes).toBe(256 * MIB);
    expect((await daemon.request('POST', '/v1/volumes', { name: 'data' })).body.error.code).toBe('name_taken');

    const writer = await newSandbox({ name: 'writer', volumes: [{ name: 'data', mount: '/data/' }] });
    expect(await guestSizeMiB(writer.id, '/data')).toBeGreaterThan(200);
    expect((await exec(writer.id, 'echo before > /data/clean && sync /data/clean')).exitCode).toBe(0);

    // One writer: a second attach, read-write or read-only, names the holder.
    for (const readOnly of [false, true]) {
      const second = await daemon.request('POST', '/v1/sandboxes', { volumes: [{ name: 'data', mount: '/data', readOnly }] });
      expect(second.status).toBe(409);
      expect(second.body.error.code).toBe('volume_in_use');
      expect(second.body.error.message).toContain(writer.id);
    }
    const removal = await daemon.request('DELETE', '/v1/volumes/data');
    expect(removal.status).toBe(409);
    expect(removal.body.error.code).toBe('volume_in_use');
    expect((await daemon.request('POST', '/v1/volumes/data/resize', { size: '512M' })).body.error.code).toBe('volume_in_use');
    expect((await daemon.request('POST', '/v1/volumes/data/snapshots', { name: 'torn' })).body.error.code).toBe('volume_in_use');
    const holders = (await volume('data')).attachments;
    expect(holders).toEqual([{ sandboxId: writer.id, sandboxName: 'writer', mount: '/data', readOnly: false }]);
    expect((await daemon.request('POST', `/v1/sandboxes/${writer.id}/fork`, {})).body.error.code).toBe('volume_in_use');

    // Pause keeps the attachment (a paused holder still holds), and resume brings the volume back mounted.
    await daemon.api.pause(writer.id);
    const whilePaused = await daemon.request('POST', '/v1/sandboxes', { volumes: [{ name: 'data', mount: '/data', readOnly: true }] });
    expect(whilePaused.body.error.message).toContain('paused');
    await daemon.api.resume(writer.id);
    expect((await exec(writer.id, 'cat /data/clean')).stdout).toBe('before\n');

    // Written and fsynced, then the VM dies at once: no clean unmount, no flush by the daemon.
    expect((await exec(writer.id, 'head -c 1048576 /dev/urandom > /data/crash && sync /data/crash && md5sum /data/crash')).exitCode).toBe(
      0,
    );
    const sum = (await exec(writer.id, 'md5sum < /data/crash')).stdout.trim();
    for (const pid of daemon.qemuPids(writer.id)) process.kill(pid, 'SIGKILL');
    await eventually(
      async () => ((await daemon.api.sandbox(writer.id)).state !== 'running' ? true : undefined),
      30_000,
      'the crash noticed',
    );
    await daemon.api.removeSandbox(writer.id);
    expect((await volume('data')).attachments).toEqual([]);

    const grown = await daemon.request<Volume>('POST', '/v1/volumes/data/resize', { size: '512M' });
    expect(grown.status).toBe(200);
    expect(grown.body.sizeBytes).toBe(512 * MIB);
    expect((await daemon.request('POST', '/v1/volumes/data/resize', { size: '256M' })).body.error.code).toBe('invalid_argument');
    // A snapshot, taken once nobody writes, restored as a new volume that the next sandbox reads too.
    expect((await daemon.request('POST', '/v1/volumes/data/snapshots', { name: 'after-crash' })).status).toBe(201);
    expect((await daemon.request('POST', '/v1/volumes/data/snapshots/after-crash/restore', { volume: 'copy' })).status).toBe(201);

    // The next sandbox reads it read-only, and a volume it names that does not exist is made for it.
    const reader: Sandbox = await newSandbox({
      volumes: [
        { name: 'data', mount: '/mnt/data', readOnly: true },
        { name: 'fresh', mount: '/fresh' },
        { name: 'copy', mount: '/copy', readOnly: true },
      ],
    });
    expect((await exec(reader.id, 'cat /mnt/data/clean')).stdout).toBe('before\n');
    expect((await exec(reader.id, 'md5sum < /mnt/data/crash')).stdout.trim()).toBe(sum);
    expect((await exec(reader.id, 'md5sum < /copy/crash')).stdout.trim()).toBe(sum);
    expect((await exec(reader.id, 'touch /mnt/data/new')).exitCode).not.toBe(0);
    // Readers share what nobody writes; a writer waits for them all to go.
    const secondReader = await newSandbox({ volumes: [{ name: 'data', mount: '/data', readOnly: true }] });
    expect((await exec(secondReader.id, 'cat /data/clean')).stdout).toBe('before\n');
    const writerAgain = await daemon.request('POST', '/v1/sandboxes', { volumes: [{ name: 'data', mount: '/data' }] });
    expect(writerAgain.body.error.code).toBe('volume_in_use');
    await daemon.api.removeSandbox(secondReader.id);
    expect(await guestSizeMiB(reader.id, '/mnt/data')).toBeGreaterThan(450);
    expect((await exec(reader.id, 'echo ok > /fresh/file && cat /fresh/file')).stdout).toBe('ok\n');
    const fresh = await volume('fresh');
    expect(fresh.sizeBytes).toBe(10 * 1024 * MIB);
    expect(fresh.attachments.map((a) => a.sandboxId)).toEqual([reader.id]);
    const listed = (await daemon.request<{ volumes: Volume[] }>('GET', '/v1/volumes')).body.volumes.map((v) => v.name);
    expect(listed).toEqual(['copy', 'data', 'fresh']);

    // The reader's removal lets go of both.
    await daemon.api.removeSandbox(reader.id);
    expect((await daemon.request('DELETE', '/v1/volumes/fresh')).status).toBe(204);
    expect((await daemon.request('GET', '/v1/volumes/fresh')).body.error.code).toBe('volume_not_found');
  });

  it('lists the volume routes in the OpenAPI document', async () => {
    const paths = Object.keys((await daemon.request('GET', '/openapi.json')).body.paths);
    expect(paths).toEqual(expect.arrayContaining(['/v1/volumes', '/v1/volumes/{name}', '/v1/volumes/{name}/resize']));
  });
});
