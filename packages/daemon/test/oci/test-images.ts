// Builds OCI images for tests from tar entries: layers (gzip, zstd or plain),
// configs, manifests and indexes, pushed to a TestRegistry or written as a
// `docker save` tarball or an OCI layout. Every image carries a random marker
// file so its digests are new on each run and never already in the shared cache.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import type { TestDaemon } from '../fixture.js';
import { makeTar, type TestTarEntry } from './tar-writer.js';
import { sha256, type TestRegistry } from './test-registry.js';

export const MEDIA = {
  index: 'application/vnd.oci.image.index.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  config: 'application/vnd.oci.image.config.v1+json',
} as const;

export interface TestLayer {
  blob: Buffer;
  diffId: string;
  mediaType: string;
}

export function layer(entries: TestTarEntry[], compression: 'gzip' | 'zstd' | 'none' = 'gzip'): TestLayer {
  const tar = makeTar(entries);
  const blob = compression === 'gzip' ? gzipSync(tar) : compression === 'zstd' ? execFileSync('zstd', ['-q', '-c'], { input: tar }) : tar;
  const suffix = compression === 'gzip' ? '+gzip' : compression === 'zstd' ? '+zstd' : '';
  return { blob, diffId: sha256(tar), mediaType: `application/vnd.oci.image.layer.v1.tar${suffix}` };
}

export interface TestImage {
  config: Buffer;
  layers: TestLayer[];
  manifest: Buffer;
  digest: string;
}

export function image(
  layers: TestLayer[],
  config: { Env?: string[]; User?: string; WorkingDir?: string; Entrypoint?: string[]; Cmd?: string[] } = {},
  architecture = 'amd64',
): TestImage {
  const finalConfig = Buffer.from(
    JSON.stringify({
      architecture,
      os: 'linux',
      config: { ...config, Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', ...(config.Env ?? [])] },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.manifest,
      config: { mediaType: MEDIA.config, digest: sha256(finalConfig), size: finalConfig.length },
      layers: layers.map((l) => ({ mediaType: l.mediaType, digest: sha256(l.blob), size: l.blob.length })),
    }),
  );
  return { config: finalConfig, layers, manifest, digest: sha256(manifest) };
}

export function marker(): TestTarEntry {
  return { path: 'etc/capsule-test-marker', content: randomBytes(16).toString('hex') };
}

export async function pushImage(registry: TestRegistry, repository: string, tag: string, img: TestImage): Promise<string> {
  await registry.pushBlob(repository, img.config);
  for (const l of img.layers) await registry.pushBlob(repository, l.blob);
  return await registry.pushManifest(repository, tag, img.manifest, MEDIA.manifest);
}

/** Pushes the images and an index naming them with their platforms. */
export async function pushIndex(
  registry: TestRegistry,
  repository: string,
  tag: string,
  entries: { img: TestImage; architecture: string }[],
): Promise<string> {
  for (const { img } of entries) await pushImage(registry, repository, img.digest, img);
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.index,
      manifests: entries.map(({ img, architecture }) => ({
        mediaType: MEDIA.manifest,
        digest: img.digest,
        size: img.manifest.length,
        platform: { os: 'linux', architecture },
      })),
    }),
  );
  return await registry.pushManifest(repository, tag, index, MEDIA.index);
}

/** A `docker save` tarball of the image (uncompressed layers, as docker writes them). */
export function dockerSaveTar(img: TestImage, repoTag: string, extra: TestTarEntry[] = []): Buffer {
  const layerTars = img.layers.map((l, i) => ({ path: `layer${i}/layer.tar`, content: l.blob }));
  const manifest = [{ Config: 'config.json', RepoTags: [repoTag], Layers: layerTars.map((l) => l.path) }];
  return makeTar([
    { path: 'config.json', content: img.config },
    ...layerTars,
    { path: 'manifest.json', content: JSON.stringify(manifest) },
    ...extra,
  ]);
}

/** An OCI layout folder holding the image, tagged `ref`. */
export function writeOciLayout(dir: string, img: TestImage, ref: string): void {
  const blobs = path.join(dir, 'blobs', 'sha256');
  fs.mkdirSync(blobs, { recursive: true });
  for (const bytes of [img.config, img.manifest, ...img.layers.map((l) => l.blob)])
    fs.writeFileSync(path.join(blobs, sha256(bytes).slice(7)), bytes);
  fs.writeFileSync(path.join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  fs.writeFileSync(
    path.join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: MEDIA.manifest,
          digest: img.digest,
          size: img.manifest.length,
          annotations: { 'io.containerd.image.name': ref, 'org.opencontainers.image.ref.name': 'latest' },
        },
      ],
    }),
  );
}

/**
 * Removes every template built from an image and every image of a test
 * daemon, so that the shared cache keeps none of its blobs, root filesystems
 * or warm snapshots.
 */
export async function removeAllImages(daemon: TestDaemon): Promise<void> {
  for (const img of await daemon.api.images()) {
    for (const template of img.templates) await daemon.request('DELETE', `/v1/templates/${template}`);
    await daemon.request('DELETE', `/v1/images/${img.digest}`);
  }
}

const WEB_IMAGE_APPLETS = ['sh', 'cat', 'echo', 'true', 'mkdir', 'dirname', 'base64', 'sync', 'httpd', 'wget', 'sleep', 'test', 'date'];

/** A busybox image that serves /srv/www with httpd; its Entrypoint + Cmd serve it on port 8081. */
export function webImage(): TestImage {
  return image(
    [
      layer([
        marker(),
        { path: 'bin/busybox', content: fs.readFileSync('/bin/busybox'), mode: 0o755 },
        ...WEB_IMAGE_APPLETS.map((name) => ({ path: `bin/${name}`, type: 'symlink' as const, linkpath: '/bin/busybox' })),
        { path: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\n' },
        { path: 'etc/group', content: 'root:x:0:\n' },
        { path: 'srv/www/index.html', content: 'hello from httpd\n' },
        { path: 'tmp/', type: 'directory', mode: 0o1777 },
      ]),
    ],
    { Entrypoint: ['/bin/httpd', '-f', '-h', '/srv/www'], Cmd: ['-p', '8081'] },
  );
}
