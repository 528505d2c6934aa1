// Turns a fetched image into a root filesystem for our guests: each layer is
// decompressed (gzip in-process, zstd through Debian's `zstd`) and read once
// to check its diff_id and its bounds (image-limits.ts), and only then applied
// to a staging folder: a layer that is not what the config says, or a bomb,
// never writes a byte. The folder gets what the guest needs (a root account,
// /etc/hosts, the working folder) and is packed by `mkfs.ext4 -d`. The image
// is cached by manifest digest.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pipeline, type Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { CapsuleError } from '../errors.js';
import { CacheKey } from '../guest/cache-key.js';
import { folderToExt4 } from '../guest/rootfs.js';
import { filterThrough } from '../launcher.js';
import type { Logger } from '../log.js';
import type { BlobStore } from './blob-store.js';
import type { FetchedImage } from './fetch-image.js';
import { layerByteAllowance } from './image-limits.js';
import { LayerApplier } from './layer-apply.js';
import { sniffCompression } from './manifest.js';
import { readTar } from './tar-reader.js';

/** Free space in every sandbox disk on top of the image, as for the base template. */
const HEADROOM_MIB = 2048;
const FORMAT = 'image-rootfs-v1';

export interface ImageDefaults {
  env: Record<string, string>;
  /** A user name that exists in the image's /etc/passwd. */
  user: string;
  workdir: string | undefined;
}

export function imageRootfsPath(cacheDir: string, manifestDigest: string): string {
  const key = new CacheKey().add('format', FORMAT).add('image', manifestDigest).add('headroom', String(HEADROOM_MIB)).digest();
  return path.join(cacheDir, 'images', 'rootfs', `${manifestDigest.slice(7, 19)}-${key}.ext4`);
}

async function openLayer(file: string, log: Logger): Promise<Readable> {
  const fd = fs.openSync(file, 'r');
  const head = Buffer.alloc(4);
  fs.readSync(fd, head, 0, 4, 0);
  fs.closeSync(fd);
  const raw = fs.createReadStream(file, { highWaterMark: 1024 * 1024 });
  switch (sniffCompression(head)) {
    case 'gzip':
      // pipeline: destroying the returned stream (a layer refused half-way) closes the file too.
      return pipeline(raw, createGunzip({ chunkSize: 256 * 1024 }), () => undefined);
    case 'zstd':
      return filterThrough('zstd', ['-d', '-c', '-q'], raw, { log });
    case 'none':
      return raw;
  }
}

/** The decompressed stream, cut off (and the decompressor stopped) once it passes `allowance` bytes. */
async function* bounded(
  stream: Readable,
  allowance: number,
  layerDigest: string,
  hash?: ReturnType<typeof createHash>,
): AsyncGenerator<Buffer> {
  let total = 0;
  try {
    for await (const chunk of stream) {
      total += (chunk as Buffer).length;
      if (total > allowance) {
        throw new CapsuleError('image_invalid', `the layer ${layerDigest} unpacks to more than ${allowance} bytes`, {
          hint: 'the layer is a decompression bomb or far larger than Capsule accepts; see the image limits in the docs',
        });
      }
      hash?.update(chunk as Buffer);
      yield chunk as Buffer;
    }
  } finally {
    stream.destroy();
  }
}

/**
 * Reads a layer through without writing anything: its uncompressed size, its
 * tar headers (entry count, pax and xattr sizes) and its digest, which must
 * be the config's diff_id. What passes here is what gets applied.
 */
async function checkLayer(file: string, layerDigest: string, diffId: string | undefined, index: number, log: Logger): Promise<void> {
  const hash = createHash('sha256');
  const allowance = layerByteAllowance(fs.statSync(file).size);
  for await (const { body } of readTar(bounded(await openLayer(file, log), allowance, layerDigest, hash))) void body; // bodies are skipped unread
  const actual = `sha256:${hash.digest('hex')}`;
  if (actual !== diffId) {
    throw new CapsuleError(
      'image_digest_mismatch',
      `layer ${index} (${layerDigest}) unpacks to ${actual}, but the image config's diff_id says ${diffId}`,
      {
        hint: 'the image is corrupt or hostile; none of the layer was applied',
      },
    );
  }
}

export function envRecord(env: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of env) {
    const eq = item.indexOf('=');
    if (eq > 0) out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

function isLink(file: string): boolean {
  try {
    return fs.lstatSync(file).isSymbolicLink();
  } catch {
    return false;
  }
}

function readRegularFile(file: string): string | undefined {
  try {
    return fs.lstatSync(file).isFile() ? fs.readFileSync(file, 'utf8') : undefined;
  } catch {
    return undefined;
  }
}

/** Creates missing folders below the root as a container runtime would; never through a symlink, never above the root. */
function ensureFolder(root: string, folder: string): void {
  let dir = root;
  for (const part of folder.split('/').filter((p) => p !== '' && p !== '.')) {
    if (part === '..') throw new CapsuleError('image_invalid', `the image's folder ${folder} climbs out of the root`);
    dir = path.join(dir, part);
    let stat: fs.Stats | undefined;
    try {
      stat = fs.lstatSync(dir);
    } catch {
      stat = undefined;
    }
    if (stat === undefined) fs.mkdirSync(dir, { mode: 0o755 });
    else if (!stat.isDirectory()) return; // a symlink or file: the guest resolves it at run time
  }
}

/**
 * What the guest needs that an image may lack: an /etc/passwd with root (the
 * agent runs commands as named users), /etc/hosts, and the image's user and
 * working folder. Returns the user name the agent should default to.
 */
function prepareForGuest(root: string, userSpec: string | undefined, workdir: string | undefined): string {
  const etc = path.join(root, 'etc');
  ensureFolder(root, 'etc');
  if (!fs.lstatSync(etc).isDirectory()) throw new CapsuleError('image_invalid', "the image's /etc is not a folder");
  const passwdFile = path.join(etc, 'passwd');
  let passwd = readRegularFile(passwdFile);
  if (passwd === undefined || !/^root:/m.test(passwd)) {
    fs.rmSync(passwdFile, { force: true });
    passwd = `root:x:0:0:root:/root:/bin/sh\n${passwd ?? ''}`;
    fs.writeFileSync(passwdFile, passwd, { mode: 0o644 });
  }
  if (readRegularFile(path.join(etc, 'group')) === undefined) {
    fs.rmSync(path.join(etc, 'group'), { force: true });
    fs.writeFileSync(path.join(etc, 'group'), 'root:x:0:\n', { mode: 0o644 });
  }
  if (readRegularFile(path.join(etc, 'hosts')) === undefined && !isLink(path.join(etc, 'hosts')))
    fs.writeFileSync(path.join(etc, 'hosts'), '127.0.0.1 localhost\n::1 localhost\n', { mode: 0o644 });
  // Mount points guest/init uses (the kit at /opt/capsule), so the guest never has to create them.
  for (const folder of ['opt/capsule', 'dev', 'proc', 'sys', 'tmp', 'run', 'root']) ensureFolder(root, folder);
  if (workdir !== undefined) ensureFolder(root, workdir);

  const [userPart = '', groupPart] = (userSpec ?? '').split(':');
  if (userPart === '' || userPart === 'root' || userPart === '0') return 'root';
  const entries = passwd.split('\n').map((line) => line.split(':'));
  if (/^\d+$/.test(userPart)) {
    const found = entries.find((e) => e[2] === userPart);
    if (found?.[0]) return found[0];
    // An id without a passwd entry is allowed by container runtimes; the agent needs a name.
    const name = `uid${userPart}`;
    fs.appendFileSync(
      passwdFile,
      `${passwd.endsWith('\n') ? '' : '\n'}${name}:x:${userPart}:${/^\d+$/.test(groupPart ?? '') ? groupPart : userPart}::/:/bin/sh\n`,
    );
    return name;
  }
  if (!entries.some((e) => e[0] === userPart)) {
    throw new CapsuleError('image_invalid', `the image's User "${userSpec}" is not in its /etc/passwd`, {
      hint: 'fix the image config or its /etc/passwd',
    });
  }
  return userPart;
}

/** Builds (or finds in the cache) the ext4 root filesystem of an image. */
export async function buildImageRootfs(
  image: FetchedImage,
  blobs: BlobStore,
  cacheDir: string,
  log: Logger,
  options: { layerReady?: (index: number) => Promise<void>; onUnpacked?: (index: number, count: number) => void } = {},
): Promise<{ rootfs: string; defaults: ImageDefaults }> {
  const target = imageRootfsPath(cacheDir, image.digest);
  const defaultsFile = `${target}.defaults.json`;
  if (fs.existsSync(target) && fs.existsSync(defaultsFile)) {
    return { rootfs: target, defaults: JSON.parse(fs.readFileSync(defaultsFile, 'utf8')) as ImageDefaults };
  }
  const tmpDir = path.join(cacheDir, 'images', 'tmp');
  fs.mkdirSync(tmpDir, { recursive: true });
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const staging = fs.mkdtempSync(path.join(tmpDir, `rootfs-${process.pid}-`));
  const root = path.join(staging, 'root');
  fs.mkdirSync(root, { mode: 0o755 });
  try {
    const applier = new LayerApplier(root);
    for (const [index, layer] of image.manifest.layers.entries()) {
      await options.layerReady?.(index);
      const file = blobs.path(layer.digest);
      await checkLayer(file, layer.digest, image.config.diffIds[index], index, log);
      await applier.apply(bounded(await openLayer(file, log), layerByteAllowance(fs.statSync(file).size), layer.digest));
      options.onUnpacked?.(index, image.manifest.layers.length);
    }
    if (applier.stats.xattrsSkipped > 0)
      log.warn({ image: image.digest, skipped: applier.stats.xattrsSkipped }, 'some extended attributes could not be kept');
    const user = prepareForGuest(root, image.config.user, image.config.workingDir);
    const defaults: ImageDefaults = { env: envRecord(image.config.env), user, workdir: image.config.workingDir };
    await folderToExt4(root, target, 'capsule-root', HEADROOM_MIB);
    fs.writeFileSync(defaultsFile, JSON.stringify(defaults));
    // Deleting thousands of files is nobody's wait: the staging folder goes in the background.
    void fs.promises
      .rm(staging, { recursive: true, force: true })
      .catch((err: unknown) => log.warn({ staging, err: String(err) }, 'could not remove a staging folder'));
    return { rootfs: target, defaults };
  } catch (err) {
    fs.rmSync(staging, { recursive: true, force: true });
    throw err;
  }
}
