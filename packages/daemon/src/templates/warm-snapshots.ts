// Each template's warm snapshot (loaded from the shared cache, built by booting
// the template once, or a `capsule snapshot` template's own) and its warm pool.
// A template whose snapshot cannot be had boots cold; this never starts a
// sandbox itself: pool VMs come from the function it is given (the create path's, sandboxes/create.ts).
import type { DaemonConfig } from '../config.js';
import { CapsuleError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { Store, TemplateRecord } from '../store/store.js';
import { getSnapshotTemplateDir, getTemplateImage } from '../store/templates.js';
import { loadSnapshotTemplate } from './snapshot-templates.js';
import { serviceOf } from './template-records.js';
import {
  buildWarmSnapshot,
  loadWarmSnapshot,
  removeOrphanTemplateVms,
  warmSnapshotInputs,
  warmSnapshotKey,
  type WarmSnapshot,
  type WarmSnapshotInputs,
} from './warm-snapshot.js';
import type { AccelChoice } from '../vmm/accel.js';
import { WarmPool, type PooledVm, type WarmPoolStatus } from './warm-pool.js';

export type WarmSnapshotState = 'ready' | 'building' | 'failed' | 'disabled';

export class WarmSnapshots {
  private readonly warm = new Map<string, { state: WarmSnapshotState; snapshot?: WarmSnapshot; error?: string }>();
  private readonly pools = new Map<string, WarmPool>();
  /**
   * Warm snapshots being built, by snapshot name (template and inputs' key). One
   * build per name: another would boot its VM in the same runtime folder (and
   * remove it on failing), and make the same snapshot. A template removed and
   * built again while its first snapshot is made asks for the same one.
   */
  private readonly builds = new Map<string, Promise<WarmSnapshot>>();
  private readonly stopping = new AbortController();
  /** A previous daemon's template VMs, gone before this one boots any (see removeOrphanTemplateVms). */
  private readonly orphansRemoved: Promise<void>;

  constructor(
    private readonly store: Store,
    private readonly config: DaemonConfig,
    private readonly accel: AccelChoice,
    private readonly log: Logger,
    /** Part of every warm snapshot's key: a snapshot restores only into the QEMU that took it. */
    private readonly qemuVersion: string,
    /** A VM for a pool, restored from `snapshot` and warmed up; refused when the host has no room (memory.ts). */
    private readonly restoreIntoPool: (snapshot: WarmSnapshot) => Promise<PooledVm>,
  ) {
    this.orphansRemoved = removeOrphanTemplateVms(config.runtimeDir, log).catch((err: unknown) =>
      log.error({ err: errorMessage(err) }, 'could not remove the template VMs a previous capsuled left'),
    );
  }

  /** Whether a template has a warm snapshot: `ready`, `building`, `failed` or `disabled`. */
  warmSnapshotState(template: string): WarmSnapshotState {
    return this.config.warmSnapshots ? (this.warm.get(template)?.state ?? 'building') : 'disabled';
  }

  /** A template's warm snapshot: its state, its folder once ready, why it failed if it did. */
  warmSnapshotInfo(template: string): { state: WarmSnapshotState; dir?: string; error?: string } {
    const warm = this.warm.get(template);
    return {
      state: this.warmSnapshotState(template),
      ...(warm?.snapshot ? { dir: warm.snapshot.dir } : {}),
      ...(warm?.error ? { error: warm.error } : {}),
    };
  }

  /** Stops keeping warm VMs of a template that was removed; its sandboxes run on. Returns its warm snapshot's folder, if any. */
  async forgetTemplate(name: string): Promise<string | undefined> {
    const pool = this.pools.get(name);
    const snapshotDir = this.warm.get(name)?.snapshot?.dir;
    this.pools.delete(name);
    this.warm.delete(name);
    await pool?.close();
    return snapshotDir;
  }

  /** Daemon shutdown: stops the builds under way (they remove what they wrote) and every pool's VMs. */
  async close(): Promise<void> {
    this.stopping.abort();
    await Promise.allSettled(this.builds.values());
    await Promise.all([...this.pools.values()].map((pool) => pool.close()));
  }

  /** Loads or builds a template's warm snapshot, then fills its warm pool. Failures leave the template cold. */
  async prepareWarmSnapshot(template: TemplateRecord): Promise<void> {
    if (!this.config.warmSnapshots) return;
    const preparing = { state: 'building' as const };
    this.warm.set(template.name, preparing);
    // The template may be removed while this runs (its disk with it), and the name taken by a new one:
    // this preparation's outcome is then no longer the name's, and a pool for it would never be closed.
    const superseded = () => this.warm.get(template.name) !== preparing;
    try {
      const snapshotDir = await getSnapshotTemplateDir(this.store, template.name);
      // A template made by `capsule snapshot` has nothing to boot: its snapshot is loaded as it is, or the template is unusable.
      const snapshot =
        snapshotDir !== undefined ? loadSnapshotTemplate(snapshotDir, this.qemuVersion) : await this.loadOrBuildWarmSnapshot(template);
      if (superseded()) return;
      this.warm.set(template.name, { state: 'ready', snapshot });
      if (this.config.warmPoolSize > 0 && !this.stopping.signal.aborted) {
        const sizing = { min: this.config.warmPoolSize, max: this.config.warmPoolMax, idleMs: this.config.warmPoolIdleMs };
        const pool = new WarmPool(template.name, sizing, () => this.restoreIntoPool(snapshot), this.log);
        this.pools.set(template.name, pool);
        pool.fill();
      }
    } catch (err) {
      if (superseded()) {
        this.log.info({ template: template.name, err: errorMessage(err) }, 'the template went while its warm snapshot was being made');
        return;
      }
      this.warm.set(template.name, { state: 'failed', error: errorMessage(err) });
      this.log.error({ template: template.name, err: errorMessage(err) }, 'no warm snapshot; sandboxes of this template boot cold');
    }
  }

  /** The warm snapshot of a template's current inputs: from the shared cache, else built by booting the template once. */
  private async loadOrBuildWarmSnapshot(template: TemplateRecord): Promise<WarmSnapshot> {
    const inputs = await warmSnapshotInputs(
      template,
      this.accel.accel,
      this.qemuVersion,
      serviceOf(await getTemplateImage(this.store, template.name)),
    );
    const loaded = loadWarmSnapshot(this.config.cacheDir, inputs);
    if (loaded) return loaded;
    const name = `${template.name}-${warmSnapshotKey(inputs)}`;
    const running = this.builds.get(name);
    if (running) return await running;
    const build = this.bootAndSnapshot(inputs);
    this.builds.set(name, build);
    try {
      return await build;
    } finally {
      this.builds.delete(name);
    }
  }

  /** Boots the template once for its snapshot (after the previous daemon's template VMs are gone). */
  private async bootAndSnapshot(inputs: WarmSnapshotInputs): Promise<WarmSnapshot> {
    await this.orphansRemoved;
    try {
      return await buildWarmSnapshot(this.config.cacheDir, this.config.runtimeDir, inputs, this.log, this.stopping.signal);
    } catch (err) {
      // Another daemon sharing the cache may have finished the same build first.
      const built = loadWarmSnapshot(this.config.cacheDir, inputs);
      if (built) return built;
      throw err;
    }
  }

  /** The template's warm snapshot, if it is ready and was taken with these resources. */
  usableSnapshot(template: string, vcpus: number, memoryMiB: number): WarmSnapshot | undefined {
    const snapshot = this.warm.get(template)?.snapshot;
    return snapshot && snapshot.vcpus === vcpus && snapshot.memoryMiB === memoryMiB ? snapshot : undefined;
  }

  /** The template's warm pool, if it has one. */
  poolOf(template: string): WarmPool | undefined {
    return this.pools.get(template);
  }

  /** Each template's warm pool: its size, target and claims, for /v1/info and /metrics. */
  poolStatuses(): WarmPoolStatus[] {
    return [...this.pools.values()].map((pool) => pool.status());
  }

  /** Discards the VMs waiting in every pool, so that a create the host had no memory for may have theirs; how many went. */
  async evictPools(): Promise<number> {
    const counts = await Promise.all([...this.pools.values()].map((pool) => pool.evict()));
    return counts.reduce((a, b) => a + b, 0);
  }

  /** A template made by `capsule snapshot` only restores: its disk is a moment of a running system, its memory the point of it. */
  async refuseColdSnapshotTemplate(template: string): Promise<void> {
    if ((await getSnapshotTemplateDir(this.store, template)) === undefined) return;
    const warm = this.warm.get(template);
    if (warm?.snapshot) {
      throw new CapsuleError(
        'invalid_argument',
        `template "${template}" is a snapshot of ${warm.snapshot.vcpus} vCPU(s) and ${warm.snapshot.memoryMiB} MiB; sandboxes from it keep those`,
        {
          hint: 'leave out --cpus and --memory',
        },
      );
    }
    throw new CapsuleError(
      'template_not_ready',
      `template "${template}" cannot be restored: ${warm?.error ?? this.warmSnapshotState(template)}`,
      {
        hint: warm?.state === 'failed' ? `remove it with \`capsule template rm ${template}\`` : 'try again in a moment',
      },
    );
  }

  /**
   * A restore from this snapshot failed (a corrupt or missing file): later
   * creates of the template boot cold instead of failing the same way, until a
   * daemon restart loads or rebuilds the snapshot.
   */
  abandonWarmSnapshot(template: string, err: unknown): void {
    this.warm.set(template, { state: 'failed', error: errorMessage(err) });
    const pool = this.pools.get(template);
    this.pools.delete(template);
    void pool?.close();
    this.log.error({ template, err: errorMessage(err) }, 'restoring the warm snapshot failed; this template boots cold from now on');
  }
}
