// Pulling and importing images against a real registry (Debian's
// docker-registry on a loopback port) and converting them to root
// filesystems, through a real daemon's REST API. No VM boots here (warm
// snapshots off); the template built from an image runs in a VM in
// image-template.integration.test.ts.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { imageRootfsPath } from '../src/images/image-rootfs.js';
import { it, sharedCacheDir, TestDaemon } from './fixture.js';
import { dockerSaveTar, image, layer, marker, pushImage, pushIndex, removeAllImages, writeOciLayout } from './oci/test-images.js';
import { TestRegistry } from './oci/test-registry.js';
import { makeTar } from './oci/tar-writer.js';

const blobCache = path.join(sharedCacheDir, 'images', 'blobs', 'sha256');
const cached = (digest: string) => fs.existsSync(path.join(blobCache, digest.slice(7)));
const partial = (digest: string) => fs.existsSync(path.join(sharedCacheDir, 'images', 'blobs', 'partial', digest.slice(7)));

interface ImageEvent {
  type: string;
  code?: string;
  message?: string;
  image?: { digest: string; refs: string[]; templates: string[] };
  digest?: string;
}

function events(text: string): ImageEvent[] {
  return text
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as ImageEvent);
}

/** Lists a folder of an ext4 image with debugfs (no mount needed). */
function ext4List(rootfs: string, dir: string): string {
  return execFileSync('debugfs', ['-R', `ls -l ${dir}`, rootfs], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
}
function ext4Cat(rootfs: string, file: string): string {
  return execFileSync('debugfs', ['-R', `cat ${file}`, rootfs], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
}

describe('images from a real registry (docker-registry on loopback)', () => {
  let registry: TestRegistry;
  let daemon: TestDaemon;
  const settingsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-registries-'));

  beforeAll(async () => {
    registry = await TestRegistry.start();
    // The first mirror is down: pulls must fall back to the registry itself.
    fs.writeFileSync(
      path.join(settingsDir, 'registries.json'),
      JSON.stringify({ registries: { [registry.host]: { mirrors: ['http://127.0.0.1:9'] } } }),
    );
    daemon = new TestDaemon({ CAPSULE_WARM_SNAPSHOTS: 'off', CAPSULE_REGISTRIES_FILE: path.join(settingsDir, 'registries.json') });
    await daemon.start();
  });
  afterAll(async () => {
    if (daemon) await removeAllImages(daemon);
    await daemon?.destroy();
    await registry?.stop();
    fs.rmSync(settingsDir, { recursive: true, force: true });
  });

  const pull = async (ref: string, extra: Record<string, string> = {}) =>
    events((await daemon.request('POST', '/v1/images/pull', { ref, ...extra })).text);
  const template = (name: string, imageRef: string) => daemon.request('POST', '/v1/templates', { name, image: imageRef });

  it('pulls a multi-layer image through a manifest list, applying whiteouts, and builds its root filesystem', async () => {
    const amd64 = image(
      [
        layer(
          [
            marker(),
            { path: 'etc/', type: 'directory' },
            { path: 'etc/gone', content: 'x' },
            { path: 'opt/old/a', content: 'a' },
            { path: 'opt/old/b', content: 'b' },
          ],
          'gzip',
        ),
        layer(
          [
            { path: 'etc/.wh.gone' },
            { path: 'opt/old/', type: 'directory' },
            { path: 'opt/old/.wh..wh..opq' },
            { path: 'opt/old/c', content: 'c' },
          ],
          'zstd',
        ),
        layer(
          [
            { path: 'srv/data', content: 'owned', uid: 1234, gid: 5678, mode: 0o640 },
            { path: 'srv/link', type: 'hardlink', linkpath: 'srv/data' },
          ],
          'none',
        ),
      ],
      { Env: ['GREETING=hello'], WorkingDir: '/srv/work' },
    );
    const arm64 = image([layer([marker()])], {}, 'arm64');
    await pushIndex(registry, 'test/multi', 'v1', [
      { img: arm64, architecture: 'arm64' },
      { img: amd64, architecture: 'amd64' },
    ]);

    const pulled = await pull(`${registry.host}/test/multi:v1`);
    const done = pulled.at(-1)!;
    expect(done.type, JSON.stringify(done)).toBe('done');
    expect(done.image!.digest).toBe(amd64.digest);
    expect(done.image!.refs).toEqual([`${registry.host}/test/multi:v1`]);
    expect(pulled.some((e) => e.type === 'progress')).toBe(true);
    expect(pulled.filter((e) => e.type === 'unpacked').length).toBe(3);
    expect(cached(arm64.digest)).toBe(false);

    const res = await template('multi', `${registry.host}/test/multi:v1`);
    expect(res.status, res.text).toBe(201);
    const rootfs = await daemon.api.template('multi');
    expect(rootfs.ready).toBe(true);
    const file = imageRootfsPath(sharedCacheDir, amd64.digest);
    expect(rootfs.rootfsBytes).toBe(fs.statSync(file).size);
    expect(ext4List(file, '/etc')).not.toMatch(/\bgone\b/);
    expect(ext4List(file, '/opt/old')).toMatch(/\bc\b/);
    expect(ext4List(file, '/opt/old')).not.toMatch(/\s[ab]\s*$/m);
    expect(ext4List(file, '/srv')).toMatch(/100640 \(1\)\s+1234\s+5678/);
    expect(ext4Cat(file, '/srv/link')).toBe('owned');
    expect(ext4List(file, '/srv')).toMatch(/\bwork\b/);
    expect(ext4Cat(file, '/etc/passwd')).toMatch(/^root:/);

    expect((await daemon.api.images()).find((i) => i.digest === amd64.digest)?.templates).toEqual(['multi']);
    const inUse = await daemon.request('DELETE', `/v1/images/${encodeURIComponent(`${registry.host}/test/multi:v1`)}`);
    expect(inUse.status).toBe(409);
    expect(inUse.body.error.code).toBe('image_in_use');

    // Only templates built from images can be removed; then the image, its root filesystem and its blobs go.
    expect((await daemon.request('DELETE', '/v1/templates/base')).body.error.code).toBe('invalid_argument');
    await daemon.api.removeTemplate('multi');
    expect((await daemon.api.templates()).some((t) => t.name === 'multi')).toBe(false);
    const layerDigests = JSON.parse(amd64.manifest.toString()).layers.map((l: { digest: string }) => l.digest) as string[];
    expect(layerDigests.every(cached)).toBe(true);
    await daemon.api.removeImage(`${registry.host}/test/multi:v1`);
    expect(layerDigests.some(cached)).toBe(false);
    expect(fs.existsSync(file)).toBe(false);
    expect((await daemon.api.images()).some((i) => i.digest === amd64.digest)).toBe(false);
  });

  it('says which platforms an image has when it has no linux/amd64', async () => {
    const arm = image([layer([marker()])], {}, 'arm64');
    await pushIndex(registry, 'test/armonly', 'v1', [{ img: arm, architecture: 'arm64' }]);
    const done = (await pull(`${registry.host}/test/armonly:v1`)).at(-1)!;
    expect(done).toMatchObject({ type: 'error', code: 'image_platform_unsupported' });
    expect(done.message).toMatch(/no image for linux\/amd64/);
    expect((await daemon.api.images()).some((i) => i.refs.some((r) => r.includes('armonly')))).toBe(false);
  });

  it('refuses a blob whose bytes do not match its digest, and caches nothing of it', async () => {
    const img = image([layer([marker(), { path: 'bin/tool', content: 'x'.repeat(5000) }])]);
    await pushImage(registry, 'test/corrupt', 'v1', img);
    const layerDigest = `sha256:${execFileSync('sha256sum', { input: img.layers[0]!.blob, encoding: 'utf8' }).split(' ')[0]}`;
    const data = registry.blobDataPath(layerDigest);
    const bytes = fs.readFileSync(data);
    bytes[bytes.length - 10] = bytes[bytes.length - 10]! ^ 0xff;
    fs.writeFileSync(data, bytes);

    const done = (await pull(`${registry.host}/test/corrupt:v1`)).at(-1)!;
    expect(done).toMatchObject({ type: 'error', code: 'image_digest_mismatch' });
    expect(cached(layerDigest)).toBe(false);
    expect(partial(layerDigest)).toBe(false);
    expect((await daemon.api.images()).some((i) => i.digest === img.digest)).toBe(false);
  });

  it('resumes a broken download from its partial file instead of starting over', async () => {
    const img = image([layer([marker(), { path: 'big', content: Buffer.alloc(64 * 1024, 7) }], 'none')]);
    await pushImage(registry, 'test/resume', 'v1', img);
    const blob = img.layers[0]!.blob;
    const layerDigest = `sha256:${execFileSync('sha256sum', { input: blob, encoding: 'utf8' }).split(' ')[0]}`;
    // The first half is already here from an earlier, interrupted pull...
    const partialDir = path.join(sharedCacheDir, 'images', 'blobs', 'partial');
    fs.mkdirSync(partialDir, { recursive: true });
    const half = Math.floor(blob.length / 2);
    fs.writeFileSync(path.join(partialDir, layerDigest.slice(7)), blob.subarray(0, half));
    // ...and the registry's copy of that half is now wrong: only a resumed download can succeed.
    const data = registry.blobDataPath(layerDigest);
    const bytes = fs.readFileSync(data);
    bytes.fill(0, 0, half);
    fs.writeFileSync(data, bytes);

    const done = (await pull(`${registry.host}/test/resume:v1`)).at(-1)!;
    expect(done.type, JSON.stringify(done)).toBe('done');
    expect(cached(layerDigest)).toBe(true);
    expect(partial(layerDigest)).toBe(false);
  });

  it('refuses a layer with a path escaping the root and writes nothing outside it', async () => {
    const img = image([
      layer([marker(), { path: 'ok', content: 'fine' }]),
      layer([{ path: '../../escaped-by-capsule-test', content: 'x' }]),
    ]);
    await pushImage(registry, 'test/escape', 'v1', img);
    const tmp = path.join(sharedCacheDir, 'images', 'tmp');
    const before = fs.existsSync(tmp) ? fs.readdirSync(tmp) : [];
    const done = (await pull(`${registry.host}/test/escape:v1`)).at(-1)!;
    expect(done).toMatchObject({ type: 'error', code: 'image_invalid' });
    expect(done.message).toMatch(/"..\/..\/escaped-by-capsule-test" points outside the image's root/);
    for (const dir of [path.join(sharedCacheDir, 'images'), tmp, sharedCacheDir]) {
      expect(fs.existsSync(path.join(dir, 'escaped-by-capsule-test'))).toBe(false);
    }
    expect(fs.readdirSync(tmp).filter((d) => !before.includes(d))).toEqual([]);
    expect(fs.existsSync(imageRootfsPath(sharedCacheDir, img.digest))).toBe(false);
    expect((await daemon.api.images()).some((i) => i.digest === img.digest)).toBe(false);
    const res = await template('escape', `${registry.host}/test/escape:v1`);
    expect(res.status).toBe(404);
    expect(res.body.error.code).toBe('image_not_found');
  });

  it('answers a basic-auth challenge with the given credentials (a basic-auth gate in front of the registry)', async () => {
    const img = image([layer([marker()])]);
    await pushImage(registry, 'test/basic', 'v1', img);
    const gate = await registry.startBasicAuthProxy({ username: 'alice', password: 'pa55' });
    const ref = `${gate}/test/basic:v1`;
    expect((await pull(ref)).at(-1)).toMatchObject({ type: 'error', code: 'registry_auth_failed' });
    expect((await pull(ref, { username: 'alice', password: 'nope' })).at(-1)).toMatchObject({
      type: 'error',
      code: 'registry_auth_failed',
    });
    const ok = (await pull(ref, { username: 'alice', password: 'pa55' })).at(-1)!;
    expect(ok.type, JSON.stringify(ok)).toBe('done');
    expect(ok.image!.digest).toBe(img.digest);
  });

  it('reports unknown images and unreachable registries with stable codes', async () => {
    expect((await pull(`${registry.host}/test/nothing-here:v1`)).at(-1)).toMatchObject({ type: 'error', code: 'image_not_found' });
    expect((await pull('127.0.0.1:9/test/x:v1')).at(-1)).toMatchObject({ type: 'error', code: 'registry_unreachable' });
    const bad = await daemon.request('POST', '/v1/images/pull', { ref: 'Not A Ref' });
    expect(bad.status).toBe(400);
  });

  it('imports docker save tarballs and OCI layouts, and removes images with their blobs', async () => {
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-import-'));
    try {
      const saved = image([layer([marker(), { path: 'hello', content: 'from docker save' }], 'none')]);
      fs.writeFileSync(path.join(work, 'saved.tar'), dockerSaveTar(saved, 'example/saved:1'));
      const imported = events((await daemon.request('POST', '/v1/images/import', { path: path.join(work, 'saved.tar') })).text).at(-1)!;
      expect(imported.type, JSON.stringify(imported)).toBe('done');
      expect(imported.image!.refs).toEqual(['docker.io/example/saved:1']);

      const oci = image([layer([marker(), { path: 'hello', content: 'from an OCI layout' }])]);
      writeOciLayout(path.join(work, 'layout'), oci, 'example.com/oci/app:2');
      execFileSync('tar', ['-C', path.join(work, 'layout'), '-cf', path.join(work, 'oci.tar'), '.']);
      const fromArchive = events((await daemon.request('POST', '/v1/images/import', { path: path.join(work, 'oci.tar') })).text).at(-1)!;
      expect(fromArchive.type, JSON.stringify(fromArchive)).toBe('done');
      expect(fromArchive.image).toMatchObject({ digest: oci.digest, refs: ['example.com/oci/app:2'] });

      fs.writeFileSync(path.join(work, 'evil.tar'), makeTar([{ path: '../evil-import', content: 'x' }]));
      const evil = events((await daemon.request('POST', '/v1/images/import', { path: path.join(work, 'evil.tar') })).text).at(-1)!;
      expect(evil).toMatchObject({ type: 'error', code: 'image_invalid' });
      fs.writeFileSync(path.join(work, 'junk.tar'), 'this is not a tarball at all, not even close'.repeat(20));
      expect(events((await daemon.request('POST', '/v1/images/import', { path: path.join(work, 'junk.tar') })).text).at(-1)).toMatchObject({
        type: 'error',
        code: 'image_invalid',
      });

      const layerDigest = `sha256:${execFileSync('sha256sum', { input: oci.layers[0]!.blob, encoding: 'utf8' }).split(' ')[0]}`;
      expect(cached(layerDigest)).toBe(true);
      await daemon.api.removeImage(oci.digest);
      expect(cached(layerDigest)).toBe(false);
      expect((await daemon.request('GET', `/v1/images/${oci.digest}`)).body.error.code).toBe('image_not_found');
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  });
});

describe('a registry behind token auth (docker-registry + a token server in the test)', () => {
  let registry: TestRegistry;
  let daemon: TestDaemon;
  const auth = { username: 'capsule', password: 's3cret' };

  beforeAll(async () => {
    registry = await TestRegistry.start({ auth });
    daemon = new TestDaemon({ CAPSULE_WARM_SNAPSHOTS: 'off' });
    await daemon.start();
  });
  afterAll(async () => {
    if (daemon) await removeAllImages(daemon);
    await daemon?.destroy();
    await registry?.stop();
  });

  it('pulls with the right credentials through the WWW-Authenticate flow and refuses wrong or missing ones', async () => {
    const img = image([layer([marker()])]);
    await pushImage(registry, 'private/app', 'v1', img);
    const ref = `${registry.host}/private/app:v1`;
    const pull = async (body: Record<string, string>) =>
      events((await daemon.request('POST', '/v1/images/pull', { ref, ...body })).text).at(-1)!;

    expect(await pull({})).toMatchObject({ type: 'error', code: 'registry_auth_failed' });
    expect(await pull({ username: auth.username, password: 'wrong' })).toMatchObject({ type: 'error', code: 'registry_auth_failed' });
    const before = registry.tokenRequests;
    const ok = await pull(auth);
    expect(ok.type, JSON.stringify(ok)).toBe('done');
    expect(ok.image!.digest).toBe(img.digest);
    expect(registry.tokenRequests).toBeGreaterThan(before);
  });
});
