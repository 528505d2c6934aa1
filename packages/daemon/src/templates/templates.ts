// Templates as the API and the create path see them: made from an image
// (`template create`), a Capsulefile (`template build`) or a sandbox
// (`capsule snapshot`, recorded by snapshot-templates.ts), listed, inspected
// and removed; each with its warm snapshot and pool (warm-snapshots.ts). What
// it needs of sandboxes (a build sandbox, a pool VM) it is given as a
// SandboxRunner at wiring time (daemon.ts): it never imports sandboxes/.
import fs from 'node:fs';
import path from 'node:path';
import type {
  BuildTemplateRequest,
  CreateSandboxRequest,
  CreateTemplateRequest,
  ExecEvent,
  ExecRequest,
  PruneResult,
  Sandbox,
  Template,
  TemplateDetails,
} from '@capsule/protocol';
import type { DaemonConfig } from '../config.js';
import { CapsuleError } from '../errors.js';
import { diskBytes } from '../guest/files.js';
import type { GuestManifest } from '../guest/manifest.js';
import { loadImage } from '../images/image-records.js';
import type { ImageService } from '../images/image-service.js';
import type { RegistryCredentials } from '../images/registry-client.js';
import { formatReference, isDigest, parseReference } from '../images/reference.js';
import type { Logger } from '../log.js';
import type { DaemonMetrics } from '../metrics.js';
import { findImageDigest } from '../store/images.js';
import type { Store, TemplateRecord } from '../store/store.js';
import {
  deleteTemplate,
  deleteTemplatesWithPrefix,
  getSnapshotTemplateDir,
  getTemplateImage,
  insertImageTemplate,
  listSnapshotTemplateSources,
  listTemplateImages,
  setTemplateGuestKit,
} from '../store/templates.js';
import { recordResourceEvent } from '../store/events.js';
import type { AccelChoice } from '../vmm/accel.js';
import { BuildStepCache } from './build-step-cache.js';
import { DEFAULT_READY_TIMEOUT_MS, parseCapsulefile } from './capsulefile.js';
import { TEMPLATE_DEFAULTS } from './defaults.js';
import { removeSnapshotTemplate } from './snapshot-templates.js';
import { imageDefaultsOf, missingTemplateFile, serviceOf, type TemplateImageDefaults } from './template-records.js';
import {
  BUILD_TEMPLATE_PREFIXES,
  checkTemplateName,
  TemplateBuilder,
  temporaryTemplateName,
  type BuildBase,
  type BuildEmit,
  type BuildRequest,
  type ServiceCommands,
} from './template-build.js';
import type { TemplateService } from './template-service.js';
import type { WarmPool, PooledVm } from './warm-pool.js';
import type { WarmSnapshot } from './warm-snapshot.js';
import { WarmSnapshots } from './warm-snapshots.js';

/** What templates need of sandboxes; the sandbox manager provides it (daemon.ts wires it in). */
export interface SandboxRunner {
  /** A VM for a warm pool, restored from `snapshot` and warmed up; refused with `capacity` when the host has no room. */
  restoreIntoPool(snapshot: WarmSnapshot): Promise<PooledVm>;
  create(request: CreateSandboxRequest): Promise<Sandbox>;
  remove(id: string): Promise<void>;
  execStream(id: string, request: ExecRequest, signal: AbortSignal): Promise<AsyncIterable<ExecEvent>>;
  /** The folder of a sandbox's disk overlay. */
  stateDir(id: string): string;
  /** Freezes a running sandbox's root disk and sends later writes to a new qcow2 overlay at `file`. */
  snapshotRootDisk(id: string, file: string): Promise<void>;
}

/** Everything a create takes from its template, read once. */
export interface TemplateForCreate {
  record: TemplateRecord;
  vcpus: number;
  memoryMiB: number;
  /** What a template built from an image gives its sandboxes (Env, User, WorkingDir); undefined for other templates. */
  imageDefaults: TemplateImageDefaults | undefined;
  /** START and READY, which a sandbox booted cold runs (a restored one has them running already). */
  service: TemplateService | undefined;
  /** The warm snapshot to restore, when it is ready and was taken with these resources; else the sandbox boots cold. */
  snapshot: WarmSnapshot | undefined;
  /** The snapshot's pool of VMs restored ahead of time, if it has one. */
  pool: WarmPool | undefined;
}

/** A template build: its name, its steps (a BuildRequest), and how it is recorded. */
export interface TemplateBuildPlan extends BuildRequest {
  /** Removes a template of the same name once the new disk is built, instead of refusing the name. */
  replace?: boolean;
  /** For pulling the FROM image, when the store does not have it. */
  credentials?: RegistryCredentials | undefined;
  /** The new template's default resources; the FROM template's otherwise. */
  resources?: { vcpus?: number | undefined; memoryMiB?: number | undefined };
}

/** What made a template: an image (`template create`) or a Capsulefile (`template build`), and its service. */
interface TemplateSource {
  kind: 'image' | 'capsulefile';
  /** The image reference, or the Capsulefile's FROM. */
  from: string;
  service: ServiceCommands | undefined;
}

function templateNotFound(name: string, hint = 'see `capsule templates`'): CapsuleError {
  return new CapsuleError('template_not_found', `template "${name}" does not exist`, { hint });
}

export class Templates {
  readonly warm: WarmSnapshots;
  private runner: SandboxRunner | undefined;

  constructor(
    private readonly store: Store,
    private readonly config: DaemonConfig,
    accel: AccelChoice,
    /** Part of every warm snapshot's key: a snapshot restores only into the QEMU that took it. */
    qemuVersion: string,
    private readonly images: ImageService,
    private readonly guest: GuestManifest,
    private readonly log: Logger,
    /** Where builds record their durations. */
    private readonly metrics: DaemonMetrics,
  ) {
    this.warm = new WarmSnapshots(store, config, accel, log, qemuVersion, (snapshot) => this.sandboxes.restoreIntoPool(snapshot));
  }

  /** Given once, before the daemon serves: sandboxes are made after templates, and use them. */
  connectSandboxes(runner: SandboxRunner): void {
    this.runner = runner;
  }

  private get sandboxes(): SandboxRunner {
    if (!this.runner) throw new Error('templates were used before the sandboxes were connected');
    return this.runner;
  }

  /**
   * Before the API serves: removes the templates and overlays of builds that a
   * daemon stopped in the middle of (none runs before start), and points
   * templates built from images at the current guest kit after `capsuled
   * prepare` rebuilt it.
   */
  async start(): Promise<void> {
    for (const prefix of BUILD_TEMPLATE_PREFIXES) await deleteTemplatesWithPrefix(this.store, prefix);
    new BuildStepCache(this.stepsDir()).removeAbandoned();
    for (const { template } of await listTemplateImages(this.store)) {
      await setTemplateGuestKit(this.store, template, { kernel: this.guest.kernel, initramfs: this.guest.initramfs, kit: this.guest.kit });
    }
  }

  /**
   * Everything a create needs from its template: the record, the resources
   * (the request's, else the template's), image defaults, service, and the
   * warm snapshot and pool to restore from. Refuses a template that does not
   * exist or misses files; a create without a snapshot then asks
   * `warm.refuseColdSnapshotTemplate`, once its own checks have passed.
   */
  async resolveForCreate(
    name: string,
    requested: { vcpus?: number | undefined; memoryMiB?: number | undefined },
  ): Promise<TemplateForCreate> {
    const record = await this.store.getTemplate(name);
    if (!record) {
      const known = (await this.store.listTemplates()).map((t) => t.name);
      throw templateNotFound(
        name,
        known.length > 0 ? `known templates: ${known.join(', ')}` : 'run `capsuled prepare` to build the base template',
      );
    }
    const missing = missingTemplateFile(record);
    if (missing)
      throw new CapsuleError('template_not_ready', `template "${name}" is missing ${missing}`, {
        hint: 'run `capsuled prepare` to rebuild it',
      });
    const vcpus = requested.vcpus ?? record.default_vcpus;
    const memoryMiB = requested.memoryMiB ?? record.default_memory_mib;
    const snapshot = this.warm.usableSnapshot(name, vcpus, memoryMiB);
    return {
      record,
      vcpus,
      memoryMiB,
      ...(await this.guestSetupOf(name)),
      snapshot,
      pool: snapshot ? this.warm.poolOf(name) : undefined,
    };
  }

  /**
   * What a guest of template `name` is set up with once it runs: its image's
   * defaults (user, workdir, env) and its START service. Nothing for a
   * template removed since (a stopped sandbox keeps its own disk).
   */
  async guestSetupOf(name: string): Promise<{ imageDefaults: TemplateImageDefaults | undefined; service: TemplateService | undefined }> {
    const row = await getTemplateImage(this.store, name);
    return { imageDefaults: row ? imageDefaultsOf(row) : undefined, service: serviceOf(row) };
  }

  async list(): Promise<Template[]> {
    return (await this.store.listTemplates()).map((t) => this.view(t));
  }

  /** The templates made from snapshots of sandboxes, oldest first, each with the sandbox it is a moment of. */
  async listSnapshots(): Promise<{ name: string; sourceSandbox: string }[]> {
    return (await listSnapshotTemplateSources(this.store)).map((row) => ({ name: row.template, sourceSandbox: row.source_sandbox }));
  }

  /** A template as the API shows it in lists and answers. */
  view(t: TemplateRecord): Template {
    return {
      name: t.name,
      ready: missingTemplateFile(t) === undefined,
      rootfsBytes: fs.existsSync(t.rootfs) ? fs.statSync(t.rootfs).size : 0,
      defaultVcpus: t.default_vcpus,
      defaultMemoryMiB: t.default_memory_mib,
      createdAt: t.created_at,
      warmSnapshot: this.warm.warmSnapshotState(t.name),
    };
  }

  /** One template in full: where it came from, what its VM runs, its warm snapshot and sizes. */
  async inspect(name: string): Promise<TemplateDetails> {
    const template = await this.store.getTemplate(name);
    if (!template) throw templateNotFound(name);
    const row = await getTemplateImage(this.store, name);
    const service = serviceOf(row);
    const warm = this.warm.warmSnapshotInfo(name);
    return {
      ...this.view(template),
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
      ...(warm.dir
        ? { warmSnapshotDiskBytes: ['memory', 'state', 'disk.qcow2'].reduce((sum, f) => sum + diskBytes(path.join(warm.dir!, f)), 0) }
        : {}),
    };
  }

  /** Builds a template from a stored image (its root filesystem, then its warm snapshot in the background). */
  async create(request: CreateTemplateRequest): Promise<Template> {
    checkTemplateName(request.name);
    this.assertBuildRoom();
    await this.assertNameFree(request.name);
    const { digest } = await this.images.requireDigest(request.image);
    const stored = await loadImage(this.store, digest);
    if (!stored) throw new CapsuleError('image_not_found', `no image ${request.image} in the store`);
    const missing = [stored.digest, stored.configDigest, ...stored.layers.map((l) => l.digest)].filter((d) => !this.images.blobs.has(d));
    if (missing.length > 0) {
      throw new CapsuleError('image_invalid', `image ${request.image} is missing ${missing.length} blob(s) in the cache`, {
        hint: 'pull or import it again',
      });
    }
    const service = await this.requestedService(request, digest);
    const { rootfs, defaults } = await this.metrics.timeTemplateBuild('image', () => this.images.rootfsOf(stored));
    return await this.record(
      request.name,
      rootfs,
      { imageDigest: digest, ...defaults },
      { kind: 'image', from: request.image, service },
      request,
    );
  }

  /** Refuses a build when the cache or state folder is low on disk; the build route calls it before its 200, so the refusal is a 507. */
  assertBuildRoom(): void {
    this.images.assertDiskRoom('build a template');
  }

  private async assertNameFree(name: string): Promise<void> {
    if (await this.store.getTemplate(name)) {
      throw new CapsuleError('name_taken', `a template named "${name}" already exists`, {
        hint: 'pick another name or `capsule template rm` it first',
      });
    }
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
    return new TemplateBuilder(
      this.store,
      this.sandboxes,
      path.join(this.config.cacheDir, 'images', 'rootfs'),
      this.stepsDir(),
      this.images.tmpDir,
      this.log,
    );
  }

  private stepsDir(): string {
    return path.join(this.config.cacheDir, 'images', 'build-steps');
  }

  /** Records a template with its defaults and starts building its warm snapshot. */
  private async record(
    name: string,
    rootfs: string,
    defaults: TemplateImageDefaults,
    source: TemplateSource,
    resources: { vcpus?: number | undefined; memoryMiB?: number | undefined },
  ): Promise<Template> {
    const record = await this.recordRows(name, rootfs, defaults, source, resources);
    await recordResourceEvent(this.store, {
      type: source.kind === 'capsulefile' ? 'template.built' : 'template.created',
      template: name,
      reason: 'user',
      message: `from ${source.from}`,
    });
    void this.warm.prepareWarmSnapshot(record);
    return this.view(record);
  }

  /** Builds a template from a Capsulefile (see template-build.ts); events carry each step and its output. */
  async build(request: BuildTemplateRequest, emit: BuildEmit, signal: AbortSignal): Promise<Template> {
    return await this.buildSteps(
      { name: request.name, file: parseCapsulefile(request.capsulefile), contextDir: request.contextDir },
      emit,
      signal,
    );
  }

  /**
   * Builds a template from Capsulefile steps, however they were written (a
   * Capsulefile, or an e2b build translated by the api). With `replace`, a
   * template of that name is removed once the new one's disk is built (e2b
   * rebuilds a name in place); otherwise the name must be free.
   */
  async buildSteps(plan: TemplateBuildPlan, emit: BuildEmit, signal: AbortSignal): Promise<Template> {
    checkTemplateName(plan.name);
    this.assertBuildRoom();
    // A template the new one cannot replace is refused before the build, not after it.
    if (!plan.replace) await this.assertNameFree(plan.name);
    else if (await this.store.getTemplate(plan.name)) await this.assertRemovable(plan.name);
    const result = await this.metrics.timeTemplateBuild('capsulefile', () =>
      this.builder().build(plan, (from, log) => this.buildBase(from, log, plan.credentials), emit, signal),
    );
    this.images.holdRootfs(result.rootfs);
    // An unchanged rebuild has the old template's disk: it must stay held through the removal.
    if (plan.replace && (await this.store.getTemplate(plan.name))) {
      try {
        await this.remove(plan.name, result.rootfs);
      } catch (err) {
        if (!(await this.store.listTemplates()).some((t) => t.rootfs === result.rootfs)) this.images.releaseRootfs(result.rootfs);
        throw err;
      }
    }
    return await this.record(
      plan.name,
      result.rootfs,
      { ...result.defaults, imageDigest: result.imageDigest ?? '' },
      { kind: 'capsulefile', from: result.from, service: result.service },
      {
        vcpus: plan.resources?.vcpus ?? result.base.default_vcpus,
        memoryMiB: plan.resources?.memoryMiB ?? result.base.default_memory_mib,
      },
    );
  }

  /** What a build's FROM boots: a template as it is, or an image (pulled if missing) through a template made for the build. */
  private async buildBase(from: string, emit: BuildEmit, credentials: RegistryCredentials | undefined): Promise<BuildBase> {
    const template = await this.store.getTemplate(from);
    if (template) {
      const row = await getTemplateImage(this.store, from);
      const defaults = row ? imageDefaultsOf(row) : undefined;
      return { template, defaults, imageDigest: defaults?.imageDigest || null, release: async () => {} };
    }
    let digest = isDigest(from)
      ? await findImageDigest(this.store, from)
      : await findImageDigest(this.store, formatReference(parseReference(from)));
    if (!digest) {
      emit({ type: 'step', index: 0, instruction: `pulling ${from}` });
      digest = (await this.images.pull(from, credentials)).digest;
    }
    const stored = await loadImage(this.store, digest);
    if (!stored) throw new CapsuleError('image_not_found', `no image ${from} in the store`);
    const { rootfs, defaults } = await this.images.rootfsOf(stored);
    const name = temporaryTemplateName();
    const imageDefaults = { imageDigest: digest, ...defaults };
    const record = await this.recordRows(name, rootfs, imageDefaults, { kind: 'image', from, service: undefined });
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
  private async recordRows(
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

  /**
   * Removes a template built from an image, a Capsulefile or a snapshot, once
   * no sandbox made from it lives; `keptRootfs` is the disk of the template
   * replacing it, held whoever else uses it.
   */
  async remove(name: string, keptRootfs?: string): Promise<void> {
    const { template, snapshotTemplateDir } = await this.assertRemovable(name);
    const warmSnapshotDir = await this.warm.forgetTemplate(name);
    const removed = { type: 'template.removed', template: name, reason: 'user' };
    if (snapshotTemplateDir !== undefined) {
      await removeSnapshotTemplate(this.store, name, snapshotTemplateDir);
      await recordResourceEvent(this.store, removed);
      return;
    }
    await deleteTemplate(this.store, name);
    await recordResourceEvent(this.store, removed);
    if (warmSnapshotDir) fs.rmSync(warmSnapshotDir, { recursive: true, force: true });
    // A build's root filesystem belongs to the templates built with it (an image's goes with the image).
    if (
      path.basename(template.rootfs).startsWith('build-') &&
      template.rootfs !== keptRootfs &&
      !(await this.store.listTemplates()).some((t) => t.rootfs === template.rootfs)
    ) {
      this.images.releaseRootfs(template.rootfs);
    }
  }

  /** Refuses to remove a template that does not exist, that was not made by a user, or that sandboxes use. */
  private async assertRemovable(name: string): Promise<{ template: TemplateRecord; snapshotTemplateDir: string | undefined }> {
    const template = await this.store.getTemplate(name);
    if (!template) throw templateNotFound(name);
    const snapshotTemplateDir = await getSnapshotTemplateDir(this.store, name);
    if (!(await getTemplateImage(this.store, name)) && snapshotTemplateDir === undefined) {
      throw new CapsuleError('invalid_argument', `template "${name}" was not built from an image or a Capsulefile`, {
        hint: 'only templates made by `capsule template create --image`, `capsule template build` or `capsule snapshot` can be removed',
      });
    }
    await this.assertUnused(name);
    return { template, snapshotTemplateDir };
  }

  /**
   * Refuses to let a template go while sandboxes made from it live, paused and
   * stopped ones included: their disks are overlays on the template's disk (its warm
   * snapshot's, or the snapshot template's), which a resume, a fork or an
   * adopting daemon opens again.
   */
  private async assertUnused(name: string): Promise<void> {
    const users = (await this.store.sandboxesInStates(['starting', 'running', 'paused', 'stopped']))
      .filter((s) => s.template === name)
      .map((s) => s.id);
    if (users.length > 0) {
      throw new CapsuleError('template_in_use', `template "${name}" is used by ${users.length} sandbox(es): ${users.join(', ')}`, {
        hint: `their disks are built on it; remove them first (capsule rm ${users.join(' ')})`,
      });
    }
  }

  /** Where files uploaded for builds' COPY steps are kept by the e2b API, one folder per files hash. */
  buildUploadsDir(): string {
    return path.join(this.config.cacheDir, 'images', 'build-uploads');
  }

  /** An empty owner-only folder for a build context uploaded over the API; the caller removes it after the build. */
  newBuildContextDir(): string {
    fs.mkdirSync(this.images.tmpDir, { recursive: true });
    return fs.mkdtempSync(path.join(this.images.tmpDir, `context-${process.pid}-`));
  }

  /** The image store's garbage collection (images/image-service.ts), then every cached build step. */
  async prune(): Promise<PruneResult> {
    const images = await this.images.prune();
    const steps = new BuildStepCache(this.stepsDir()).prune();
    const result = { blobs: images.blobs, rootfs: images.rootfs, buildSteps: steps.entries, bytes: images.bytes + steps.bytes };
    this.log.info(result, 'image store pruned');
    return result;
  }
}
