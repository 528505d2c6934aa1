// The image store as the API sees it: pull from a registry, import an archive,
// list, remove (collecting blobs no image uses), and each image's root
// filesystem. An image is recorded only once all its blobs are cached and
// verified, so a failed pull or import never lists a partial image. Templates
// built from images are templates/'s: nothing here knows what a template is made of.
import fs from 'node:fs';
import path from 'node:path';
import type { Image, ImageEvent } from '@capsule/protocol';
import type { DaemonConfig } from '../config.js';
import { assertDiskRoom } from '../disk-admission.js';
import { CapsuleError } from '../errors.js';
import { diskBytes } from '../guest/files.js';
import { isProcessAlive } from '../launcher.js';
import type { Logger } from '../log.js';
import { recordResourceEvent } from '../store/events.js';
import { deleteImage, deleteImageRef, findImageDigest } from '../store/images.js';
import type { Store } from '../store/store.js';
import { importArchive } from './archive-import.js';
import { BlobStore } from './blob-store.js';
import { holdFile, releaseFile, sweepUnheld } from '../guest/cache-holds.js';
import { fetchImage, type FetchedImage, type LayerConsumer } from './fetch-image.js';
import { listImages, referencedBlobs, saveImage, templatesOfImage, type StoredImage } from './image-records.js';
import { buildImageRootfs, imageRootfsPath, type ImageDefaults } from './image-rootfs.js';
import { formatReference, isDigest, parseReference } from './reference.js';
import { loadRegistrySettings, RegistryClient, type RegistryCredentials } from './registry-client.js';

/** Cache files no daemon has held for this long are collected (a daemon whose state was deleted, a test's). */
const UNHELD_GRACE_MS = 24 * 60 * 60 * 1000;

export interface ImageOperationOptions {
  onEvent?: (event: ImageEvent) => void;
  signal?: AbortSignal;
}

export class ImageService {
  readonly blobs: BlobStore;
  private readonly holds: string;
  private readonly rootfsHolds: string;

  constructor(
    private readonly store: Store,
    private readonly config: DaemonConfig,
    private readonly log: Logger,
  ) {
    this.blobs = new BlobStore(path.join(config.cacheDir, 'images', 'blobs'));
    this.holds = path.join(config.stateDir, 'images', 'blobs');
    this.rootfsHolds = path.join(config.stateDir, 'images', 'rootfs');
  }

  /** Per-registry settings: $CAPSULE_REGISTRIES_FILE, else registries.json in the state folder. */
  registrySettingsFile(): string {
    return process.env.CAPSULE_REGISTRIES_FILE ?? path.join(this.config.stateDir, 'registries.json');
  }

  /**
   * Collects cache files no daemon holds, and removes staging folders left by
   * daemons that died mid-import or mid-build (their pid is in the name; the cache is shared).
   */
  async start(): Promise<void> {
    await this.sweepUnheldFiles();
    // Temp folders of daemons that are gone (the cache is shared by every daemon on the host).
    const tmpDir = this.tmpDir;
    for (const name of fs.existsSync(tmpDir) ? fs.readdirSync(tmpDir) : []) {
      const pid = Number(/^(?:rootfs|import|context)-(\d+)-/.exec(name)?.[1]);
      if (pid > 0 && pid !== process.pid && !isProcessAlive(pid))
        void fs.promises.rm(path.join(tmpDir, name), { recursive: true, force: true });
    }
  }

  /**
   * Blobs and root filesystems no daemon has held for a while, and the defaults
   * files of removed root filesystems. What this daemon's own images and
   * templates use stays even when unheld: a hold is a hard link, which cannot be
   * made when the state and cache folders are on different filesystems.
   */
  private async sweepUnheldFiles(): Promise<void> {
    const used = await this.filesInUse();
    sweepUnheld(this.blobs.dir, UNHELD_GRACE_MS, (file) => !used.has(file));
    const rootfsDir = path.join(this.config.cacheDir, 'images', 'rootfs');
    sweepUnheld(rootfsDir, UNHELD_GRACE_MS, (file) => file.endsWith('.ext4') && !used.has(file));
    for (const name of fs.existsSync(rootfsDir) ? fs.readdirSync(rootfsDir) : []) {
      if (name.endsWith('.defaults.json') && !fs.existsSync(path.join(rootfsDir, name.slice(0, -'.defaults.json'.length))))
        fs.rmSync(path.join(rootfsDir, name), { force: true });
    }
  }

  /** The cache files this daemon's records name: every stored image's blobs and root filesystem, every template's root filesystem. */
  private async filesInUse(): Promise<Set<string>> {
    const used = new Set([...(await referencedBlobs(this.store))].map((digest) => this.blobs.path(digest)));
    for (const image of await listImages(this.store)) used.add(imageRootfsPath(this.config.cacheDir, image.digest));
    for (const template of await this.store.listTemplates()) used.add(template.rootfs);
    return used;
  }

  /** Where imports, root filesystems and uploaded build contexts are unpacked; what a dead daemon left is swept at start. */
  get tmpDir(): string {
    return path.join(this.config.cacheDir, 'images', 'tmp');
  }

  /**
   * Refuses an operation that writes blobs, root filesystems or build steps
   * (cache folder) and their holds (state folder) when either is low on disk;
   * routes that stream call it before their 200, so the refusal is a 507.
   */
  assertDiskRoom(operation: string): void {
    assertDiskRoom(this.config, operation, [this.config.cacheDir, this.config.stateDir]);
  }

  async pull(refText: string, credentials: RegistryCredentials | undefined, options: ImageOperationOptions = {}): Promise<Image> {
    this.assertDiskRoom('pull an image');
    const ref = parseReference(refText);
    const settings = loadRegistrySettings(this.registrySettingsFile())[ref.registry] ?? {};
    const client = new RegistryClient(ref, settings, credentials, this.log, options.signal);
    const name = formatReference(ref);
    const started = Date.now();
    const image = await fetchImage(
      client,
      this.blobs,
      ref.digest ?? ref.tag ?? 'latest',
      name,
      (event) => options.onEvent?.(event),
      this.unpackWhileFetching(options),
    );
    await this.record(image, name, 'registry');
    this.log.info({ image: name, digest: image.digest, ms: Date.now() - started }, 'image pulled');
    return await this.describe(image.digest);
  }

  async import(file: string, tag: string | undefined, options: ImageOperationOptions = {}): Promise<Image> {
    const name = tag === undefined ? undefined : formatReference(parseReference(tag));
    this.assertDiskRoom('import an image');
    await this.sweepUnheldFiles();
    const { image, ref } = await importArchive(
      file,
      this.blobs,
      this.tmpDir,
      name,
      (event) => options.onEvent?.(event),
      this.unpackWhileFetching(options),
    );
    await this.record(image, ref, 'archive');
    return await this.describe(image.digest);
  }

  /**
   * Images are unpacked into their root filesystem while their layers
   * download (each layer as soon as it and those below it are in), so a pull
   * is ready to become a template; an image whose layers cannot be unpacked
   * safely fails its pull and is never listed.
   */
  private unpackWhileFetching(options: ImageOperationOptions): LayerConsumer {
    return async (image, layerReady) => {
      const { rootfs } = await buildImageRootfs(image, this.blobs, this.config.cacheDir, this.log, {
        layerReady,
        onUnpacked: (index, layers) => options.onEvent?.({ type: 'unpacked', index, layers }),
      });
      holdFile(rootfs, this.rootfsHolds);
    };
  }

  private async record(image: FetchedImage, ref: string | undefined, source: 'registry' | 'archive'): Promise<void> {
    for (const digest of [image.digest, image.manifest.config.digest, ...image.manifest.layers.map((l) => l.digest)]) {
      holdFile(this.blobs.path(digest), this.holds);
    }
    await saveImage(this.store, image, ref, source);
    await recordResourceEvent(this.store, {
      type: source === 'registry' ? 'image.pulled' : 'image.imported',
      image: ref ?? image.digest,
      reason: 'user',
      message: image.digest,
    });
  }

  async list(): Promise<Image[]> {
    return await listImages(this.store);
  }

  async requireDigest(refOrDigest: string): Promise<{ digest: string; ref: string | undefined }> {
    const ref = isDigest(refOrDigest) ? undefined : formatReference(parseReference(refOrDigest));
    const digest = (await findImageDigest(this.store, refOrDigest)) ?? (ref ? await findImageDigest(this.store, ref) : undefined);
    if (!digest) {
      throw new CapsuleError('image_not_found', `no image ${refOrDigest} in the store`, {
        hint: 'see `capsule image ls`, or `capsule image pull` it first',
      });
    }
    return { digest, ref };
  }

  async describe(refOrDigest: string): Promise<Image> {
    const { digest } = await this.requireDigest(refOrDigest);
    const image = (await listImages(this.store)).find((i) => i.digest === digest);
    if (!image) throw new CapsuleError('image_not_found', `no image ${refOrDigest} in the store`);
    return image;
  }

  /**
   * Removes a reference (or, by digest, the image with all its references).
   * When no reference is left the image goes, and blobs no image uses are collected.
   */
  async remove(refOrDigest: string): Promise<void> {
    const { digest, ref } = await this.requireDigest(refOrDigest);
    const byRef = ref !== undefined && (await findImageDigest(this.store, ref)) === digest && !isDigest(refOrDigest);
    const image = (await listImages(this.store)).find((i) => i.digest === digest);
    const lastRef = !byRef || (image?.refs.length ?? 0) <= 1;
    if (lastRef) {
      const templates = await templatesOfImage(this.store, digest);
      if (templates.length > 0) {
        throw new CapsuleError(
          'image_in_use',
          `image ${refOrDigest} is used by template${templates.length > 1 ? 's' : ''} ${templates.join(', ')}`,
          {
            hint: `remove ${templates.length > 1 ? 'them' : 'it'} first with \`capsule template rm\``,
          },
        );
      }
    }
    if (byRef) await deleteImageRef(this.store, ref, digest);
    else await deleteImage(this.store, digest);
    await recordResourceEvent(this.store, { type: 'image.removed', image: refOrDigest, reason: 'user', message: digest });
    if (lastRef) this.collectGarbage(await referencedBlobs(this.store), digest);
  }

  /**
   * Garbage collection: images no reference names and no template uses (a
   * tag moved to a new image leaves its old one so), then this daemon's holds
   * on blobs and root filesystems nothing stored uses (deleted once no daemon
   * holds them). Build steps are pruned with it (templates/templates.ts prune).
   */
  async prune(): Promise<{ blobs: number; rootfs: number; bytes: number }> {
    const images = await listImages(this.store);
    for (const image of images) {
      if (image.refs.length > 0 || image.templates.length > 0) continue;
      await deleteImage(this.store, image.digest);
      await recordResourceEvent(this.store, { type: 'image.removed', image: image.digest, reason: 'prune' });
    }
    const used = await referencedBlobs(this.store);
    let blobs = 0;
    let bytes = 0;
    for (const name of fs.existsSync(this.holds) ? fs.readdirSync(this.holds) : []) {
      const file = this.blobs.path(`sha256:${name}`);
      if (used.has(`sha256:${name}`)) continue;
      const size = diskBytes(file);
      if (releaseFile(file, this.holds)) {
        blobs++;
        bytes += size;
      }
    }
    const liveImages = new Set((await listImages(this.store)).map((i) => imageRootfsPath(this.config.cacheDir, i.digest)));
    const templates = new Set((await this.store.listTemplates()).map((t) => t.rootfs));
    let rootfs = 0;
    for (const name of fs.existsSync(this.rootfsHolds) ? fs.readdirSync(this.rootfsHolds) : []) {
      const file = path.join(this.config.cacheDir, 'images', 'rootfs', name);
      if (liveImages.has(file) || templates.has(file)) continue;
      const size = diskBytes(file);
      if (releaseFile(file, this.rootfsHolds)) {
        fs.rmSync(`${file}.defaults.json`, { force: true });
        rootfs++;
        bytes += size;
      }
    }
    return { blobs, rootfs, bytes };
  }

  /** Drops this daemon's hold on blobs no stored image uses, and the image's root filesystem. */
  private collectGarbage(used: Set<string>, removedDigest: string): void {
    let removed = 0;
    for (const name of fs.existsSync(this.holds) ? fs.readdirSync(this.holds) : []) {
      const digest = `sha256:${name}`;
      if (!used.has(digest) && releaseFile(this.blobs.path(digest), this.holds)) removed++;
    }
    const rootfs = imageRootfsPath(this.config.cacheDir, removedDigest);
    if (releaseFile(rootfs, this.rootfsHolds)) fs.rmSync(`${rootfs}.defaults.json`, { force: true });
    this.log.info({ image: removedDigest, blobsRemoved: removed }, 'image removed');
  }

  /** The root filesystem of a stored image (built now unless cached) and this daemon's hold on it. */
  async rootfsOf(stored: StoredImage): Promise<{ rootfs: string; defaults: ImageDefaults }> {
    const fetched: FetchedImage = {
      digest: stored.digest,
      manifest: { mediaType: '', config: { mediaType: '', digest: stored.configDigest, size: 0 }, layers: stored.layers },
      config: stored.config,
      sizeBytes: 0,
    };
    const started = Date.now();
    const built = await buildImageRootfs(fetched, this.blobs, this.config.cacheDir, this.log);
    holdFile(built.rootfs, this.rootfsHolds);
    this.log.info({ image: stored.digest, ms: Date.now() - started }, 'root filesystem of image ready');
    return built;
  }

  /** Holds a root filesystem made from an image elsewhere (a template build's), so that prune keeps it while a template uses it. */
  holdRootfs(file: string): void {
    holdFile(file, this.rootfsHolds);
  }

  /** Drops this daemon's hold on a root filesystem no template uses any more. */
  releaseRootfs(file: string): void {
    releaseFile(file, this.rootfsHolds);
  }
}
