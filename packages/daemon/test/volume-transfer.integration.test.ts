// Volumes through the official e2b SDK, unchanged, and moved with `capsule
// volume export` and `import`, against capsuled and real microVMs: a volume
// made with Volume.create is filled through e2b's volume file API, mounted by
// volumeMounts, written, and read back by the next sandbox, together with its
// exported-and-imported copy, checksums equal; export and the file API are
// refused while a sandbox holds the volume; a hostile upload makes no volume.
// Two VMs in all (each boots cold: it has volumes).
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { AuthenticationError, Sandbox, Volume, VolumeError, VolumeNotFoundError, VolumePathNotFoundError } from 'e2b';
import { it, runCli, TestDaemon } from './fixture.js';

/** A cold boot under TCG on a shared CPU takes longer than the SDK's default minute; the test has two (and an export and an import). */
const SLOW_CALL = { requestTimeoutMs: 240_000, timeoutMs: 10 * 60_000 };
const AS_ROOT = { user: 'root' as const };

describe('volumes through the e2b SDK, exported and imported (real QEMU microVMs)', () => {
  const daemon = new TestDaemon({ CAPSULE_LISTEN: 'http://127.0.0.1:0', CAPSULE_WARM_POOL_SIZE: '0' });
  const saved = { ...process.env };
  const sandboxes: Sandbox[] = [];

  beforeAll(async () => {
    await daemon.start();
    const { tcpAddress } = await daemon.api.info();
    process.env.E2B_API_URL = `http://${tcpAddress}`;
    process.env.E2B_SANDBOX_URL = `http://${tcpAddress}`;
    process.env.E2B_VOLUME_API_URL = `http://${tcpAddress}`;
    process.env.E2B_API_KEY = (await daemon.api.createApiKey('e2b-volumes')).key;
  });
  afterAll(async () => {
    for (const sandbox of sandboxes) await sandbox.kill().catch(() => undefined);
    process.env = saved;
    await daemon.destroy();
  });
  const create = async (volumeMounts: Record<string, Volume | string>) => {
    const sandbox = await Sandbox.create('base', { volumeMounts, ...SLOW_CALL });
    sandboxes.push(sandbox);
    return sandbox;
  };
  const sha256Of = async (sandbox: Sandbox, file: string) =>
    (await sandbox.commands.run(`sha256sum ${file} | cut -d' ' -f1`, AS_ROOT)).stdout.trim();

  it('creates, lists and gets a volume, mounts it, and the next sandbox reads what the first wrote, in it and in its imported copy', async () => {
    const volume = await Volume.create('e2b-data');
    expect(volume).toMatchObject({ volumeId: 'e2b-data', name: 'e2b-data' });
    expect(await Volume.list()).toEqual([{ volumeId: 'e2b-data', name: 'e2b-data' }]);
    expect(await Volume.getInfo('e2b-data')).toMatchObject({ volumeId: 'e2b-data', name: 'e2b-data' });
    await expect(Volume.create('e2b-data')).rejects.toThrow(/name_taken/);
    await expect(Volume.create('Not A Name')).rejects.toBeInstanceOf(VolumeError);
    // The volume file API, on a volume no sandbox holds yet (E2B_VOLUME_API_URL names the daemon).
    const seed = await Volume.create('e2b-seeded');
    expect(await seed.makeDir('/seed/deep', { force: true })).toMatchObject({ name: 'deep', path: '/seed/deep', type: 'directory' });
    const seeded = await seed.writeFile('/seed/deep/hello.txt', 'from the file API\n', { mode: 0o644 });
    expect(seeded).toMatchObject({ path: '/seed/deep/hello.txt', type: 'file', size: 18, mode: 0o644 });
    expect(seeded.mtime.getTime()).toBeGreaterThan(Date.now() - 10 * 60_000);
    await seed.writeFile('/seed/bytes.bin', new Blob([new Uint8Array([0, 1, 2, 255])]));
    expect(await seed.readFile('/seed/deep/hello.txt')).toBe('from the file API\n');
    expect([...(await seed.readFile('/seed/bytes.bin', { format: 'bytes' }))]).toEqual([0, 1, 2, 255]);
    expect((await seed.list('/seed', { depth: 2 })).map((e) => `${e.type} ${e.path}`)).toEqual([
      'file /seed/bytes.bin',
      'directory /seed/deep',
      'file /seed/deep/hello.txt',
    ]);
    expect(await seed.getInfo('/seed')).toMatchObject({ type: 'directory' });
    expect(await seed.exists('/seed/bytes.bin')).toBe(true);
    await seed.remove('/seed/bytes.bin');
    expect(await seed.exists('/seed/bytes.bin')).toBe(false);
    await expect(seed.readFile('/nothing/here')).rejects.toBeInstanceOf(VolumePathNotFoundError);
    await expect(seed.writeFile('/seed/deep/hello.txt', 'again')).rejects.toThrow(/exists already/);
    await expect(seed.readFile('/../etc/passwd')).rejects.toThrow(/may not hold "\.\."/);
    // Only the volume's own token opens it.
    await expect(seed.list('/', { token: 'not-the-token' })).rejects.toBeInstanceOf(AuthenticationError);

    const writer = await create({ '/mnt/data': volume, '/mnt/seeded': seed });
    expect((await writer.commands.run('cat /mnt/seeded/seed/deep/hello.txt')).stdout).toBe('from the file API\n');
    const mounts = [
      { name: 'e2b-data', path: '/mnt/data' },
      { name: 'e2b-seeded', path: '/mnt/seeded' },
    ];
    expect((await writer.getInfo()).volumeMounts).toEqual(mounts);
    expect((await Sandbox.list().nextItems()).find((s) => s.sandboxId === writer.sandboxId)?.volumeMounts).toEqual(mounts);
    // While a sandbox holds it, the file API says where to look instead.
    await expect(volume.list('/')).rejects.toThrow(/volume_in_use: .*use sandbox.files in that sandbox/);
    // As e2b's default user, `user`: a fresh volume is given to it.
    await writer.commands.run('head -c 3000000 /dev/urandom > /mnt/data/blob && sync');
    await writer.files.write('/mnt/data/note', 'kept\n');
    await writer.commands.run('sync');
    const written = await sha256Of(writer, '/mnt/data/blob');
    expect(written).toMatch(/^[0-9a-f]{64}$/);

    // Exported only while no sandbox writes it; deleting it is refused too.
    const work = path.join(daemon.root, 'transfer');
    fs.mkdirSync(work);
    const image = path.join(work, 'e2b-data.qcow2');
    const whileHeld = await runCli(daemon, ['volume', 'export', 'e2b-data', '-o', image]);
    expect(whileHeld.status).not.toBe(0);
    expect(whileHeld.stderr).toContain('cannot export volume "e2b-data" (a volume is exported while no sandbox writes it)');
    await expect(Volume.destroy('e2b-data')).rejects.toThrow(/volume_in_use/);
    await writer.kill();
    expect(await volume.readFile('/note')).toBe('kept\n');
    expect(await Volume.destroy('e2b-seeded')).toBe(true);

    const exported = await runCli(daemon, ['volume', 'export', 'e2b-data', '-o', image, '--verbose']);
    expect(exported.status, exported.stderr).toBe(0);
    expect(exported.stderr).toMatch(/Exporting e2b-data .* \/ /);
    expect(fs.readFileSync(image).subarray(0, 4).toString('latin1')).toBe('QFI\xfb');
    // Sparse and compressed: a 10 GiB volume holding 3 MB of random bytes.
    expect(fs.statSync(image).size).toBeLessThan(16 * 1024 * 1024);
    const imported = await runCli(daemon, ['volume', 'import', 'e2b-copy', image]);
    expect(imported.status, imported.stderr).toBe(0);
    expect(imported.stdout).toBe('e2b-copy\n');

    // A hostile upload (here: bytes that are no qcow2) makes no volume; the attacks are unit-tested in volume-image.test.ts.
    expect((await daemon.request('POST', '/v1/volumes/e2b-raw/import', undefined)).status).toBe(400);
    const garbage = path.join(work, 'garbage.qcow2');
    fs.writeFileSync(garbage, randomBytes(2 * 1024 * 1024));
    const notQcow2 = await runCli(daemon, ['volume', 'import', 'e2b-raw', garbage]);
    expect(notQcow2.status).not.toBe(0);
    expect(notQcow2.stderr).toContain('does not start as a qcow2 image');
    expect((await Volume.list()).map((v) => v.name).sort()).toEqual(['e2b-copy', 'e2b-data']);

    // The next sandbox mounts both by name: the e2b SDK's other form of volumeMounts.
    const reader = await create({ '/mnt/data': 'e2b-data', '/mnt/copy': 'e2b-copy' });
    expect(await sha256Of(reader, '/mnt/data/blob')).toBe(written);
    expect(await sha256Of(reader, '/mnt/copy/blob')).toBe(written);
    expect((await reader.commands.run('cat /mnt/copy/note', AS_ROOT)).stdout).toBe('kept\n');
    await reader.kill();

    expect(await Volume.destroy('e2b-copy')).toBe(true);
    expect(await Volume.destroy('e2b-copy')).toBe(false);
    await expect(Volume.getInfo('e2b-copy')).rejects.toBeInstanceOf(VolumeNotFoundError);
    expect(await Volume.list()).toEqual([{ volumeId: 'e2b-data', name: 'e2b-data' }]);
  }, 600_000);

  it('describes export and import in the OpenAPI document', async () => {
    const { paths } = (await daemon.request('GET', '/openapi.json')).body;
    expect(Object.keys(paths['/v1/volumes/{name}/export'].get.responses[200].content)).toEqual(['application/octet-stream']);
    expect(Object.keys(paths['/v1/volumes/{name}/import'].post.requestBody.content)).toEqual(['application/octet-stream']);
    expect(Object.keys(paths)).toEqual(expect.arrayContaining(['/volumes', '/volumes/{volumeID}']));
  });
});
