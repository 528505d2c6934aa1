// The image store as the API sees it: pull from a registry, import an archive,
// list, remove (collecting blobs no image uses), and templates built from
// images. An image is recorded only once all its blobs are cached and
// verified, so a failed pull or import never lists a partial image.
import fs from 'node:fs';
import path from 'node:path';
import type { BuildTemplateRequest, CreateTemplateRequest, Image, ImageEvent, PruneResult, Template, TemplateDetails } from '@capsule/protocol';
import type { DaemonConfig } from '../config.js';
import { assertDiskRoom } from '../disk-admission.js';
import { CapsuleError } from '../errors.js';
import type { GuestManifest } from '../guest/manifest.js';
import { isProcessAlive } from '../launcher.js';
import type { Logger } from '../log.js';
import type { SandboxManager } from '../sandboxes/manager.js';
import { snapshotTemplateDir } from '../sandboxes/snapshot.js';
import { deleteImage, deleteImageRef, findImageDigest } from '../store/images.js';
import type { Store, TemplateRecord } from '../store/store.js';
import { deleteTemplate, deleteTemplatesWithPrefix, getTemplateImage, insertImageTemplate, setTemplateGuestKit } from '../store/templates.js';
import { TEMPLATE_DEFAULTS } from '../templates/defaults.js';
import { importArchive } from './archive-import.js';
import { BlobStore } from './blob-store.js';
import { holdFile, releaseFile, sweepUnheld } from '../guest/cache-holds.js';
import { fetchImage, type FetchedImage, type LayerConsumer } from './fetch-image.js';
import {
  imageTemplateNames,
  listImages,
  loadImage,
  referencedBlobs,
  saveImage,
  templateImageDefaults,
  templateService,
  templatesOfImage,
  type TemplateImageDefaults,
} from './image-records.js';
import { buildImageRootfs, imageRootfsPath } from './image-rootfs.js';
import { formatReference, isDigest, parseReference } from './reference.js';
import { BuildStepCache } from './build-step-cache.js';
import { BUILD_TEMPLATE_PREFIXES, checkTemplateName, TemplateBuilder, temporaryTemplateName, type BuildBase, type BuildEmit, type ServiceCommands } from './template-build.js';
import { DEFAULT_READY_TIMEOUT_MS } from './capsulefile.js';
import { loadRegistrySettings, RegistryClient, type RegistryCredentials } from './registry-client.js';

/** Cache files no daemon has held for this long are collected (a daemon whose state was deleted, a test's). */
const UNHELD_GRACE_MS = 24 * 60 * 60 * 1000;

/** What made a template: an image (`template create`) or a Capsulefile (`template build`), and its service. */
interface TemplateSource {
  kind: 'image' | 'capsulefile';
  /** The image reference, or the Capsulefile's FROM. */
  from: string;
  service: ServiceCommands | undefined;
}

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
    private readonly manager: SandboxManager,
    private readonly guest: GuestManifest,
    private readonly log: Logger,
  ) {
    this.blobs = new BlobStore(path.join(config.cacheDir, 'images', 'blobs'));
    this.holds = path.join(config.stateDir, 'images', 'blobs');
    this.rootfsHolds = path.join(config.stateDir, 'images', 'rootfs');
  }

  /** Per-registry settings: $CAPSULE_REGISTRIES_FILE, else registries.json in the state folder. */
  private registrySettingsFile(): string {
    return process.env.CAPSULE_REGISTRIES_FILE ?? path.join(this.config.stateDir, 'registries.json');
  }

  /**
   * Points templates built from images at the current guest kit after
   * `capsuled prepare` rebuilt it, and removes staging folders left by
   * daemons that died mid-build (their pid is in the name; the cache is shared).
   */
  async start(): Promise<void> {
    this.sweepUnheldFiles();
    // Temp folders of daemons that are gone (the cache is shared by every daemon on the host).
    const tmpDir = this.tmpDir;
    for (const name of fs.existsSync(tmpDir) ? fs.readdirSync(tmpDir) : []) {
      const pid = Number(/^(?:rootfs|import|context)-(\d+)-/.exec(name)?.[1]);
      if (pid > 0 && pid !== process.pid && !isProcessAlive(pid)) void fs.promises.rm(path.join(tmpDir, name), { recursive: true, force: true });
    }
    // Templates and overlays of builds that a daemon stopped in the middle of (none runs before start).
    for (const prefix of BUILD_TEMPLATE_PREFIXES) await deleteTemplatesWithPrefix(this.store, prefix);
    new BuildStepCache(this.stepsDir()).removeAbandonedOverlays();
    for (const name of await imageTemplateNames(this.store)) {
      await setTemplateGuestKit(this.store, name, { kernel: this.guest.kernel, initramfs: this.guest.initramfs, kit: this.guest.kit });
    }
  }

  /** Blobs and root filesystems no daemon has held for a while, and the defaults files of removed root filesystems. */
  private sweepUnheldFiles(): void {
    sweepUnheld(this.blobs.dir, UNHELD_GRACE_MS);
    const rootfsDir = path.join(this.config.cacheDir, 'images', 'rootfs');
    sweepUnheld(rootfsDir, UNHELD_GRACE_MS, (name) => name.endsWith('.ext4'));
    for (const name of fs.existsSync(rootfsDir) ? fs.readdirSync(rootfsDir) : []) {
      if (name.endsWith('.defaults.json') && !fs.existsSync(path.join(rootfsDir, name.slice(0, -'.defaults.json'.length)))) fs.rmSync(path.join(rootfsDir, name), { force: true });
    }
  }

  /**
   * Refuses an operation that writes blobs, root filesystems or build steps
   * (cache folder) and their holds (state folder) when either is low on disk;
   * routes that stream call it before their 200, so the refusal is a 507.
   */
  /** Where imports, root filesystems and uploaded build contexts are unpacked; what a dead daemon left is swept at start. */
  private get tmpDir(): string {
    return path.join(this.config.cacheDir, 'images', 'tmp');
  }

  /** An empty owner-only folder for a build context uploaded over the API; the caller removes it after the build. */
  newBuildContextDir(): string {
    fs.mkdirSync(this.tmpDir, { recursive: true });
    return fs.mkdtempSync(path.join(this.tmpDir, `context-${process.pid}-`));
  }

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
    const image = await fetchImage(client, this.blobs, ref.digest ?? ref.tag ?? 'latest', name, (event) => options.onEvent?.(event), this.unpackWhileFetching(options));
    await this.record(image, name, 'registry');
    this.log.info({ image: name, digest: image.digest, ms: Date.now() - started }, 'image pulled');
    return await this.describe(image.digest);
  }

  async import(file: string, tag: string | undefined, options: ImageOperationOptions = {}): Promise<Image> {
    const name = tag === undefined ? undefined : formatReference(parseReference(tag));
    this.assertDiskRoom('import an image');
    this.sweepUnheldFiles();
    const { image, ref } = await importArchive(file, this.blobs, this.tmpDir, name, (event) => options.onEvent?.(event), this.unpackWhileFetching(options));
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
  }

  async list(): Promise<Image[]> {
    return await listImages(this.store);
  }

  private async requireDigest(refOrDigest: string): Promise<{ digest: string; ref: string | undefined }> {
    const ref = isDigest(refOrDigest) ? undefined : formatReference(parseReference(refOrDigest));
    const digest = (await findImageDigest(this.store, refOrDigest)) ?? (ref ? await findImageDigest(this.store, ref) : undefined);
    if (!digest) {
      throw new CapsuleError('image_not_found', `no image ${refOrDigest} in the store`, { hint: 'see `capsule image ls`, or `capsule image pull` it first' });
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
        throw new CapsuleError('image_in_use', `image ${refOrDigest} is used by template${templates.length > 1 ? 's' : ''} ${templates.join(', ')}`, {
          hint: `remove ${templates.length > 1 ? 'them' : 'it'} first with \`capsule template rm\``,
        });
      }
    }
    if (byRef) await deleteImageRef(this.store, ref, digest);
    else await deleteImage(this.store, digest);
    if (lastRef) this.collectGarbage(await referencedBlobs(this.store), digest);
  }

  /**
   * Garbage collection: images no reference names and no template uses (a
   * tag moved to a new image leaves its old one so), then this daemon's holds
   * on blobs and root filesystems nothing stored uses (deleted once no daemon
   * holds them), then every cached build step.
   */
  async prune(): Promise<PruneResult> {
    const images = await listImages(this.store);
    for (const image of images) if (image.refs.length === 0 && image.templates.length === 0) await deleteImage(this.store, image.digest);
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
    const steps = new BuildStepCache(this.stepsDir()).prune();
    const result = { blobs, rootfs, buildSteps: steps.entries, bytes: bytes + steps.bytes };
    this.log.info(result, 'image store pruned');
    return result;
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

  /** Builds a template from a stored image (its root filesystem, then its warm snapshot in the background). */
  async createTemplate(request: CreateTemplateRequest): Promise<Template> {
    checkTemplateName(request.name);
    this.assertDiskRoom('build a template');
    if (await this.store.getTemplate(request.name)) {
      throw new CapsuleError('name_taken', `a template named "${request.name}" already exists`, { hint: 'pick another name or `capsule template rm` it first' });
    }
    const { digest } = await this.requireDigest(request.image);
    const stored = await loadImage(this.store, digest);
    if (!stored) throw new CapsuleError('image_not_found', `no image ${request.image} in the store`);
    const missing = [stored.digest, stored.configDigest, ...stored.layers.map((l) => l.digest)].filter((d) => !this.blobs.has(d));
    if (missing.length > 0) {
      throw new CapsuleError('image_invalid', `image ${request.image} is missing ${missing.length} blob(s) in the cache`, { hint: 'pull or import it again' });
    }
    const service = await this.requestedService(request, digest);
    const { rootfs, defaults } = await this.imageRootfs(digest, stored);
    return await this.recordTemplate(request.name, rootfs, { imageDigest: digest, ...defaults }, { kind: 'image', from: request.image, service }, request);
  }

  /** A create's start and ready commands; `start: "image"` is the image config's Entrypoint + Cmd. */
  private async requestedService(request: CreateTemplateRequest, digest: string): Promise<ServiceCommands | undefined> {
    if (request.start === undefined) {
      if (request.ready !== undefined || request.readyTimeoutMs !== undefined) {
        throw new CapsuleError('invalid_argument', 'a ready check needs a start command', { hint: 'pass start too (--start in the CLI)' });
      }
      return undefined;
    }
    const start = request.start === 'image' ? await this.builder().imageStartCommand(digest, request.image) : request.start;
    const ready = request.ready ? { cmd: request.ready, timeoutMs: request.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS } : undefined;
    return { start, ...(ready ? { ready } : {}) };
  }

  private builder(): TemplateBuilder {
    return new TemplateBuilder(this.store, this.manager, path.join(this.config.cacheDir, 'images', 'rootfs'), this.stepsDir(), this.log);
  }

  private stepsDir(): string {
    return path.join(this.config.cacheDir, 'images', 'build-steps');
  }

  /** The root filesystem of a stored image (built now unless cached) and this daemon's hold on it. */
  private async imageRootfs(digest: string, stored: NonNullable<Awaited<ReturnType<typeof loadImage>>>) {
    const fetched: FetchedImage = {
      digest,
      manifest: { mediaType: '', config: { mediaType: '', digest: stored.configDigest, size: 0 }, layers: stored.layers },
      config: stored.config,
      sizeBytes: 0,
    };
    const started = Date.now();
    const built = await buildImageRootfs(fetched, this.blobs, this.config.cacheDir, this.log);
    holdFile(built.rootfs, this.rootfsHolds);
    this.log.info({ image: digest, ms: Date.now() - started }, 'root filesystem of image ready');
    return built;
  }

  /** Records a template with its defaults and starts building its warm snapshot. */
  private async recordTemplate(
    name: string,
    rootfs: string,
    defaults: TemplateImageDefaults,
    source: TemplateSource,
    resources: { vcpus?: number | undefined; memoryMiB?: number | undefined },
  ): Promise<Template> {
    const record = await this.recordTemplateRow(name, rootfs, defaults, source, resources);
    this.manager.addTemplate(record);
    return this.templateView(record);
  }

  /** Builds a template from a Capsulefile (see template-build.ts); events carry each step and its output. */
  async buildTemplate(request: BuildTemplateRequest, emit: BuildEmit, signal: AbortSignal): Promise<Template> {
    checkTemplateName(request.name);
    this.assertDiskRoom('build a template');
    if (await this.store.getTemplate(request.name)) {
      throw new CapsuleError('name_taken', `a template named "${request.name}" already exists`, { hint: 'pick another name or `capsule template rm` it first' });
    }
    const result = await this.builder().build({ name: request.name, capsulefile: request.capsulefile, contextDir: request.contextDir }, (from, log) => this.buildBase(from, log), emit, signal);
    holdFile(result.rootfs, this.rootfsHolds);
    return await this.recordTemplate(request.name, result.rootfs, { ...result.defaults, imageDigest: result.imageDigest ?? '' }, { kind: 'capsulefile', from: result.from, service: result.service }, {
      vcpus: result.base.default_vcpus,
      memoryMiB: result.base.default_memory_mib,
    });
  }

  /** What a build's FROM boots: a template as it is, or an image (pulled if missing) through a template made for the build. */
  private async buildBase(from: string, emit: BuildEmit): Promise<BuildBase> {
    const template = await this.store.getTemplate(from);
    if (template) {
      const defaults = await templateImageDefaults(this.store, from);
      return { template, defaults, imageDigest: defaults?.imageDigest || null, release: async () => {} };
    }
    let digest = isDigest(from) ? await findImageDigest(this.store, from) : await findImageDigest(this.store, formatReference(parseReference(from)));
    if (!digest) {
      emit({ type: 'step', index: 0, instruction: `pulling ${from}` });
      digest = (await this.pull(from, undefined)).digest;
    }
    const stored = await loadImage(this.store, digest);
    if (!stored) throw new CapsuleError('image_not_found', `no image ${from} in the store`);
    const { rootfs, defaults } = await this.imageRootfs(digest, stored);
    const name = temporaryTemplateName();
    const imageDefaults = { imageDigest: digest, ...defaults };
    const record = await this.recordTemplateRow(name, rootfs, imageDefaults, { kind: 'image', from, service: undefined });
    return {
      template: record,
      defaults: imageDefaults,
      imageDigest: digest,
      release: async () => {
        await deleteTemplate(this.store, name);
      },
    };
  }

  /** The template's rows, without a warm snapshot (what a build boots from has none). */
  private async recordTemplateRow(
    name: string,
    rootfs: string,
    defaults: TemplateImageDefaults,
    source: TemplateSource,
    resources: { vcpus?: number | undefined; memoryMiB?: number | undefined } = {},
  ): Promise<TemplateRecord> {
    const record: TemplateRecord = {
      name,
      kernel: this.guest.kernel,
      initramfs: this.guest.initramfs,
      kit: this.guest.kit,
      rootfs,
      default_vcpus: resources.vcpus ?? TEMPLATE_DEFAULTS.vcpus,
      default_memory_mib: resources.memoryMiB ?? TEMPLATE_DEFAULTS.memoryMiB,
      created_at: new Date().toISOString(),
    };
    await insertImageTemplate(this.store, record, {
      template: name,
      image_digest: defaults.imageDigest || null,
      image_ref: source.from,
      env: JSON.stringify(defaults.env),
      user: defaults.user,
      workdir: defaults.workdir ?? null,
      start_cmd: source.service ? JSON.stringify(source.service.start) : null,
      ready_cmd: source.service?.ready ? JSON.stringify(source.service.ready.cmd) : null,
      ready_timeout_ms: source.service?.ready?.timeoutMs ?? null,
      source_kind: source.kind,
    });
    return record;
  }

  /** Removes a template built from an image, a Capsulefile or a snapshot, once no sandbox made from it lives. */
  async removeTemplate(name: string): Promise<void> {
    const template = await this.store.getTemplate(name);
    if (!template) throw new CapsuleError('template_not_found', `template "${name}" does not exist`, { hint: 'see `capsule templates`' });
    if (!(await imageTemplateNames(this.store)).includes(name) && (await snapshotTemplateDir(this.store, name)) === undefined) {
      throw new CapsuleError('invalid_argument', `template "${name}" was not built from an image or a Capsulefile`, {
        hint: 'only templates made by `capsule template create --image`, `capsule template build` or `capsule snapshot` can be removed',
      });
    }
    await this.manager.assertTemplateUnused(name);
    if (await this.manager.removeSnapshotTemplate(name)) return;
    const snapshotDir = await this.manager.forgetTemplate(name);
    await deleteTemplate(this.store, name);
    if (snapshotDir) fs.rmSync(snapshotDir, { recursive: true, force: true });
    // A build's root filesystem belongs to the templates built with it (an image's goes with the image).
    if (path.basename(template.rootfs).startsWith('build-') && !(await this.store.listTemplates()).some((t) => t.rootfs === template.rootfs)) {
      releaseFile(template.rootfs, this.rootfsHolds);
    }
  }

  /** One template in full: where it came from, what its VM runs, its warm snapshot and sizes. */
  async inspectTemplate(name: string): Promise<TemplateDetails> {
    const template = await this.store.getTemplate(name);
    if (!template) throw new CapsuleError('template_not_found', `template "${name}" does not exist`, { hint: 'see `capsule templates`' });
    const row = await getTemplateImage(this.store, name);
    const service = await templateService(this.store, name);
    const warm = this.manager.warmSnapshotInfo(name);
    return {
      ...this.templateView(template),
      source: row ? (row.source_kind === 'capsulefile' ? 'capsulefile' : 'image') : 'base',
      ...(row ? { from: row.image_ref } : {}),
      ...(row?.image_digest ? { imageDigest: row.image_digest } : {}),
      ...(service ? { startCommand: service.start } : {}),
      ...(service?.ready ? { readyCommand: service.ready.cmd, readyTimeoutMs: service.ready.timeoutMs } : {}),
      env: row ? (JSON.parse(row.env) as Record<string, string>) : {},
      ...(row ? { user: row.user } : {}),
      ...(row?.workdir ? { workdir: row.workdir } : {}),
      rootfs: template.rootfs,
      rootfsDiskBytes: diskBytes(template.rootfs),
      ...(warm.error ? { warmSnapshotError: warm.error } : {}),
      ...(warm.dir ? { warmSnapshotDiskBytes: ['memory', 'state', 'disk.qcow2'].reduce((sum, f) => sum + diskBytes(path.join(warm.dir!, f)), 0) } : {}),
    };
  }

  templateView(t: TemplateRecord): Template {
    return {
      name: t.name,
      ready: [t.kernel, t.initramfs, t.kit, t.rootfs].every((f) => fs.existsSync(f)),
      rootfsBytes: fs.existsSync(t.rootfs) ? fs.statSync(t.rootfs).size : 0,
      defaultVcpus: t.default_vcpus,
      defaultMemoryMiB: t.default_memory_mib,
      createdAt: t.created_at,
      warmSnapshot: this.manager.warmSnapshotState(t.name),
    };
  }
}

/** Disk space a file takes (sparse files count only what is allocated); 0 when missing. */
function diskBytes(file: string): number {
  try {
    return fs.statSync(file).blocks * 512;
  } catch {
    return 0;
  }
}
