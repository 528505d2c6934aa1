// Declared workloads and the reconciler that keeps each one as its spec says:
// `replicas` sandboxes per workload (no lifetime), each running the command
// supervised, health-checked, restarted with exponential backoff until
// maxRetries, then crash_loop; a spec change replaces the replicas one at a
// time (replica-plan.ts decides the steps). Driven by applies, the command's
// end, its sandboxes' state changes and health failures, plus a periodic
// resync; all that it knows lives in the store, so a daemon restart (even
// kill -9) resumes it and touches no running workload. One workload's actions
// run one at a time.
import { createHash } from 'node:crypto';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type ApplyWorkloadsRequest,
  type ApplyWorkloadsResult,
  type CreateSandboxRequest,
  checkWorkloadDocuments,
  formatSpecProblem,
  hostPortsClash,
  type SpecProblem,
  volumeClash,
  type Workload,
  type WorkloadChange,
  type WorkloadCondition,
  type WorkloadSpec,
} from '@capsule/protocol';
import { CapsuleError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { ImageService } from '../images/image-service.js';
import type { SandboxManager } from '../sandboxes/manager.js';
import type { RecordedEvent } from '../store/event-feed.js';
import { recordResourceEvent } from '../store/events.js';
import type { Store } from '../store/store.js';
import { getVolume } from '../store/volumes.js';
import {
  deleteReplica,
  deleteWorkload,
  getReplica,
  getWorkload,
  insertReplica,
  insertWorkload,
  listReplicas,
  listWorkloads,
  updateReplica,
  updateWorkload,
  type WorkloadRecord,
  type WorkloadReplicaRecord,
} from '../store/workloads.js';
import type { Templates } from '../templates/templates.js';
import type { Volumes } from '../volumes/volumes.js';
import { runHealthProbe } from './health-probe.js';
import { isSettled, nextReplicaStep, type ReplicaPhase, type ReplicaView, workloadConditions } from './replica-plan.js';
import { ServiceCommand } from './service-command.js';
import { ServiceLog } from './service-log.js';

/** Every workload is looked at this often, whatever happened. */
const RESYNC_INTERVAL_MS = 5_000;
/** The longest wait between two restarts, however many failures came before. */
const MAX_BACKOFF_MS = 5 * 60_000;
/** A service that ran this long (and passed its health check, when it has one) has its failures forgotten. */
const STABLE_AFTER_MS = 10_000;
/** After a follower lost its stream, the next look waits this long (the VM's end is noticed meanwhile). */
const LOST_STREAM_RETRY_MS = 3_000;
/** How long a daemon stop waits for the workloads' actions under way. */
const CLOSE_WAIT_MS = 5_000;
/** Replicas added or removed in one look at a workload, at most (each step is one replica). */
const MAX_STEPS_PER_RECONCILE = 64;
/** Metadata key that marks a workload's sandbox. */
export const WORKLOAD_METADATA_KEY = 'capsule.workload';
/** Metadata key that holds the number of the replica a workload's sandbox is. */
export const WORKLOAD_REPLICA_METADATA_KEY = 'capsule.workload.replica';

/** Spec fields that a running sandbox cannot take on: a change to one of them replaces it. */
const VM_FIELDS = ['template', 'image', 'command', 'env', 'workdir', 'user', 'resources', 'ports', 'volumes', 'network'] as const;

/** Names of templates the workloads make for images (and remove once no workload names the image). */
const IMAGE_TEMPLATE_PREFIX = 'workload-image-';

/**
 * The template an image workload's sandboxes start from: one per image, and
 * one more for the image's own Entrypoint + Cmd as its START (a workload
 * without a command of its own), so workloads of one image share it.
 */
export function imageTemplateName(image: string, withStart: boolean): string {
  return `${IMAGE_TEMPLATE_PREFIX}${createHash('sha256').update(`${image}\n${withStart}`).digest('hex').slice(0, 16)}`;
}

export function vmHashOf(spec: WorkloadSpec): string {
  const fields = VM_FIELDS.map((field) => [field, field === 'volumes' ? spec.volumes.map(({ sizeMiB: _, ...v }) => v) : spec[field]]);
  return createHash('sha256').update(JSON.stringify(fields)).digest('hex').slice(0, 32);
}

/** A stored spec, with the defaults of fields added since it was stored. */
function specOf(row: WorkloadRecord): WorkloadSpec {
  return { replicas: 1, ...(JSON.parse(row.spec) as Partial<WorkloadSpec>) } as WorkloadSpec;
}

/** Replicas that cannot run side by side: a host port and a read-write volume belong to one VM, so the old replica goes before its successor starts. */
function isExclusive(spec: WorkloadSpec): boolean {
  return spec.ports.length > 0 || spec.volumes.some((v) => !v.readOnly);
}

function viewOf(replica: WorkloadReplicaRecord, row: WorkloadRecord): ReplicaView {
  return { slot: replica.slot, upToDate: replica.spec_hash === row.spec_hash, phase: replica.phase, message: replica.message };
}

/** What is alive for one replica in this daemon only: rebuilt from the store after a restart. */
interface Runtime {
  readonly name: string;
  readonly slot: number;
  command?: ServiceCommand;
  /** The sandbox the command and the health checks run in. */
  sandboxId?: string;
  /** When its service last started (for the stable period and the health check's start period). */
  startedAt?: number;
  healthTimer?: NodeJS.Timeout;
  healthFailures: number;
  /** No restart before this time (the backoff). */
  retryAt?: number;
  retryTimer?: NodeJS.Timeout;
}

export class Workloads {
  /** By `name/slot`. */
  private readonly runtimes = new Map<string, Runtime>();
  /** Each workload's chain of actions, so that two never run at once. */
  private readonly queues = new Map<string, Promise<void>>();
  /** Each workload's service log, one writer for all its replicas (it keeps when its time index was last marked). */
  private readonly serviceLogs = new Map<string, ServiceLog>();
  private resyncTimer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void) | undefined;
  private closed = false;

  constructor(
    private readonly store: Store,
    private readonly manager: SandboxManager,
    private readonly templates: Templates,
    private readonly images: ImageService,
    private readonly volumes: Volumes,
    private readonly stateDir: string,
    private readonly log: Logger,
  ) {}

  /** Starts reconciling: the store's workloads at once, then on every event and resync. Call once the manager reattached its VMs. */
  start(): void {
    this.unsubscribe = this.store.feed.subscribe((event) => this.onRecordedEvent(event));
    this.resyncTimer = setInterval(() => void this.resync(), RESYNC_INTERVAL_MS);
    this.resyncTimer.unref();
    void this.resync();
  }

  /** Stops following and checking; every workload's VM and process run on (the next daemon picks them up). */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.resyncTimer);
    this.unsubscribe?.();
    for (const runtime of this.runtimes.values()) this.quiesce(runtime);
    // A create under way may take minutes: it is given a moment, not waited for (the next daemon reconciles what it left).
    await Promise.race([Promise.allSettled([...this.queues.values()]), sleep(CLOSE_WAIT_MS, undefined, { ref: false })]);
  }

  private runtimeOf(name: string, slot: number): Runtime {
    const key = `${name}/${slot}`;
    let runtime = this.runtimes.get(key);
    if (!runtime) {
      runtime = { name, slot, healthFailures: 0 };
      this.runtimes.set(key, runtime);
    }
    return runtime;
  }

  private runtimesOf(name: string): Runtime[] {
    return [...this.runtimes.values()].filter((runtime) => runtime.name === name);
  }

  private forgetRuntime(runtime: Runtime): void {
    this.quiesce(runtime);
    this.runtimes.delete(`${runtime.name}/${runtime.slot}`);
  }

  /** Stops following the command and checking health (the process and VM are left alone). */
  private quiesce(runtime: Runtime): void {
    runtime.command?.detach();
    delete runtime.command;
    clearTimeout(runtime.healthTimer);
    delete runtime.healthTimer;
    clearTimeout(runtime.retryTimer);
    delete runtime.retryTimer;
  }

  private logOf(name: string): ServiceLog {
    let log = this.serviceLogs.get(name);
    if (!log) {
      log = new ServiceLog(path.join(this.stateDir, 'workloads', name));
      this.serviceLogs.set(name, log);
    }
    return log;
  }

  /** Runs `work` after the workload's earlier actions; its failure is logged, never thrown to the queue. */
  private enqueue(name: string, what: string, work: () => Promise<void>): Promise<void> {
    const previous = this.queues.get(name) ?? Promise.resolve();
    const next = previous.then(async () => {
      if (this.closed) return;
      try {
        await work();
      } catch (err) {
        this.log.warn({ workload: name, err: errorMessage(err) }, `workload ${what} failed`);
      }
    });
    this.queues.set(name, next);
    void next.then(() => {
      if (this.queues.get(name) === next) this.queues.delete(name);
    });
    return next;
  }

  private async resync(): Promise<void> {
    const rows = await listWorkloads(this.store).catch(() => []);
    for (const row of rows) {
      // A workload with an action queued is looked at after it anyway.
      if (!this.queues.has(row.name)) void this.enqueue(row.name, 'resync', () => this.reconcile(row.name));
    }
    await this.removeUnusedImageTemplates(rows).catch((err: unknown) =>
      this.log.warn({ err: errorMessage(err) }, 'removing unused image templates failed'),
    );
  }

  /**
   * A template made for an image that no workload names any more (removed,
   * or changed to another image) goes once no sandbox uses it; the image
   * stays in the image store (`capsule image prune` takes it).
   */
  private async removeUnusedImageTemplates(rows: readonly WorkloadRecord[]): Promise<void> {
    const wanted = new Set(
      rows.map(specOf).flatMap((spec) => (spec.image !== undefined ? [imageTemplateName(spec.image, spec.command === undefined)] : [])),
    );
    for (const template of await this.store.listTemplates()) {
      if (!template.name.startsWith(IMAGE_TEMPLATE_PREFIX) || wanted.has(template.name)) continue;
      try {
        await this.templates.remove(template.name);
        this.log.info({ template: template.name }, 'removed the template of an image no workload uses');
      } catch (err) {
        // The old replicas of a rollout still run on it: it goes at a later resync.
        if (!(err instanceof CapsuleError && err.code === 'template_in_use')) throw err;
      }
    }
  }

  /** A state change of a replica's sandbox that the daemon did not make for it: a crash, an OOM kill, a removal by hand. */
  private onRecordedEvent(event: RecordedEvent): void {
    if (event.kind !== 'sandbox' || (event.state !== 'error' && event.state !== 'killed')) return;
    for (const runtime of this.runtimes.values()) {
      if (runtime.sandboxId !== event.sandboxId) continue;
      delete runtime.sandboxId;
      this.quiesce(runtime);
      void this.enqueue(runtime.name, 'failure', () =>
        this.recordFailure(
          runtime.name,
          runtime.slot,
          event.reason,
          event.message ?? `its sandbox ${event.sandboxId} became ${event.state}`,
        ),
      );
    }
  }

  private async event(name: string, type: string, reason: string, message?: string): Promise<void> {
    await recordResourceEvent(this.store, { type, workload: name, reason, ...(message ? { message } : {}) });
  }

  /**
   * The workload's conditions again from its replicas (replica-plan.ts says
   * how), each keeping its `since` while its status holds; `workload.ready`
   * when it becomes Ready.
   */
  private async refreshConditions(name: string): Promise<void> {
    const row = await getWorkload(this.store, name);
    if (!row) return;
    const spec = specOf(row);
    const replicas = await listReplicas(this.store, name);
    const change = workloadConditions(
      row.state === 'stopped' ? 'stopped' : 'running',
      spec.replicas,
      replicas.map((r) => viewOf(r, row)),
    );
    const now = new Date().toISOString();
    const conditions = JSON.parse(row.conditions) as WorkloadCondition[];
    const next = (['Ready', 'Progressing', 'Degraded'] as const).map((type): WorkloadCondition => {
      const old = conditions.find((c) => c.type === type) ?? { type, status: false, reason: 'pending', since: now };
      const wanted = change[type];
      if (!wanted) return old;
      return {
        type,
        status: wanted.status,
        reason: wanted.reason,
        ...(wanted.message ? { message: wanted.message } : {}),
        since: old.status === wanted.status ? old.since : now,
      };
    });
    const text = JSON.stringify(next);
    if (text === row.conditions) return;
    await updateWorkload(this.store, name, { conditions: text });
    const wasReady = conditions.find((c) => c.type === 'Ready')?.status === true;
    if (!wasReady && change.Ready?.status) await this.event(name, 'workload.ready', 'ready', change.Ready.message);
  }

  /** A replica's phase (and what else changed of it), then the workload's conditions. */
  private async setPhase(
    name: string,
    slot: number,
    phase: ReplicaPhase,
    message?: string,
    extra: Omit<Parameters<typeof updateReplica>[3], 'phase' | 'message'> = {},
  ): Promise<void> {
    await updateReplica(this.store, name, slot, { phase, message: message ?? null, ...extra });
    await this.refreshConditions(name);
  }

  // ---- apply ----

  /**
   * Checks every document, then the file against the other workloads and
   * sandboxes (host ports, read-write volumes); any problem refuses the whole
   * apply before anything changes. Then records the specs and lets the
   * reconciler act; dryRun only says what would change.
   */
  async apply(request: ApplyWorkloadsRequest): Promise<ApplyWorkloadsResult> {
    const { specs, problems } = checkWorkloadDocuments(request.documents);
    if (problems.length > 0) throw specError('invalid_argument', problems);
    const existing = await listWorkloads(this.store);
    const names = new Set(specs.map((s) => s.name));
    const pruned = request.prune && request.source ? existing.filter((row) => row.source === request.source && !names.has(row.name)) : [];
    const others = existing.filter((row) => !names.has(row.name) && !pruned.includes(row));
    const conflicts = await this.conflicts(specs, others);
    if (conflicts.problems.length > 0) throw specError(conflicts.code, conflicts.problems);

    const changes: WorkloadChange[] = specs.map((spec) => {
      const row = existing.find((r) => r.name === spec.name);
      if (!row) return { name: spec.name, action: 'create', fields: [] };
      const old = specOf(row);
      const fields = [...new Set([...Object.keys(old), ...Object.keys(spec)])].filter(
        (key) => JSON.stringify(old[key as keyof WorkloadSpec]) !== JSON.stringify(spec[key as keyof WorkloadSpec]),
      );
      const action = row.spec_hash !== vmHashOf(spec) ? 'replace' : fields.length > 0 ? 'update' : 'unchanged';
      return { name: spec.name, action, fields };
    });
    for (const row of pruned) changes.push({ name: row.name, action: 'remove', fields: [] });
    if (request.dryRun) return { dryRun: true, changes };

    const now = new Date().toISOString();
    for (const spec of specs) {
      const change = changes.find((c) => c.name === spec.name);
      const fields = {
        spec: JSON.stringify(spec),
        spec_hash: vmHashOf(spec),
        state: spec.state,
        source: request.source ?? null,
      };
      let changed = false;
      if (change?.action === 'create') {
        await insertWorkload(this.store, {
          name: spec.name,
          ...fields,
          conditions: JSON.stringify(initialConditions(now)),
          created_at: now,
          updated_at: now,
        });
        await this.event(spec.name, 'workload.created', 'apply', `from ${request.source ?? 'an apply'}`);
      } else if (change?.action === 'replace' || change?.action === 'update') {
        await updateWorkload(this.store, spec.name, fields);
        // Now, not when its queue gets to it: a waiting `apply --wait` must not see the old spec's Ready.
        await this.refreshConditions(spec.name);
        await this.event(spec.name, 'workload.applied', 'apply', `${change.action}: ${change.fields.join(', ')}`);
        changed = true;
      } else {
        await updateWorkload(this.store, spec.name, { source: fields.source });
      }
      void this.enqueue(spec.name, 'apply', async () => {
        // A new spec gets a new chance: its replicas' failures and crash loops are forgotten, new health settings checked from now.
        if (changed) await this.giveNewChance(spec.name);
        await this.reconcile(spec.name);
      });
    }
    for (const row of pruned) await this.remove(row.name, 'prune');
    return { dryRun: false, changes };
  }

  /** The file's host ports and read-write volumes against other workloads and against sandboxes that are no workload's of this file. */
  private async conflicts(
    specs: WorkloadSpec[],
    others: WorkloadRecord[],
  ): Promise<{ code: 'host_port_unavailable' | 'volume_in_use'; problems: SpecProblem[] }> {
    const problems: SpecProblem[] = [];
    let code: 'host_port_unavailable' | 'volume_in_use' = 'host_port_unavailable';
    // Workloads' sandboxes are checked through their workloads' specs above.
    const sandboxes = (await this.manager.list(false)).filter((s) => s.state !== 'error' && !s.metadata[WORKLOAD_METADATA_KEY]);
    specs.forEach((spec, index) => {
      const at = { document: index + 1, name: spec.name };
      for (const other of others) {
        const otherSpec = specOf(other);
        spec.ports.forEach((port, p) => {
          if (otherSpec.ports.some((theirs) => hostPortsClash(port, theirs)))
            problems.push({ ...at, path: `ports[${p}].host`, message: `host port ${port.host} is held by workload ${other.name}` });
        });
        const clash = volumeClash(spec, otherSpec);
        if (clash) {
          code = 'volume_in_use';
          problems.push({ ...at, path: `volumes[${clash.index}]`, message: `volume ${clash.name} is mounted by workload ${other.name}` });
        }
      }
      for (const sandbox of sandboxes) {
        spec.ports.forEach((port, p) => {
          if (sandbox.ports.some((theirs) => hostPortsClash(port, { host: theirs.hostPort, hostIp: theirs.hostIp })))
            problems.push({ ...at, path: `ports[${p}].host`, message: `host port ${port.host} is held by sandbox ${sandbox.id}` });
        });
      }
    });
    return { code, problems };
  }

  /** Forgets every replica's failures and backoff; a replica that was given up on is started again. */
  private async giveNewChance(name: string): Promise<void> {
    for (const runtime of this.runtimesOf(name)) {
      delete runtime.retryAt;
      clearTimeout(runtime.retryTimer);
      delete runtime.retryTimer;
      // New health settings take effect from the next check.
      clearTimeout(runtime.healthTimer);
      delete runtime.healthTimer;
    }
    for (const replica of await listReplicas(this.store, name)) {
      if (isSettled(replica.phase) || replica.phase === 'backoff')
        await this.setPhase(name, replica.slot, 'starting', 'given a new chance', { failures: 0 });
      else if (replica.failures > 0) await updateReplica(this.store, name, replica.slot, { failures: 0 });
    }
  }

  // ---- the reconciler ----

  /**
   * Brings one workload closer to its spec; called after every event that may
   * have moved it away: first the replicas themselves (which to add, which to
   * remove: replica-plan.ts), then each replica of the current spec.
   */
  private async reconcile(name: string): Promise<void> {
    const row = await getWorkload(this.store, name);
    if (!row) {
      for (const runtime of this.runtimesOf(name)) this.forgetRuntime(runtime);
      return;
    }
    const spec = specOf(row);
    if (row.state === 'stopped') {
      for (const replica of await listReplicas(this.store, name)) await this.stopReplica(name, replica);
      return await this.refreshConditions(name);
    }
    for (let step = 0; step < MAX_STEPS_PER_RECONCILE; step++) {
      const replicas = await listReplicas(this.store, name);
      const next = nextReplicaStep(await Promise.all(replicas.map((r) => this.liveViewOf(r, row))), spec.replicas, isExclusive(spec));
      if (next.action === 'remove') await this.removeReplica(name, replicas.find((r) => r.slot === next.slot)!, next.reason);
      else if (next.action === 'add') await this.addReplica(name, row, next.slot, replicas.length === 0 ? undefined : next.reason);
      else break;
    }
    for (const replica of await listReplicas(this.store, name)) {
      if (replica.spec_hash === row.spec_hash) await this.reconcileReplica(name, spec, replica);
    }
    await this.refreshConditions(name);
  }

  /**
   * A replica as the planner sees it: ready only while its sandbox runs. A
   * replica of an older spec is followed by no one after a daemon restart, so
   * its VM's end may not have reached its phase; the planner must not count it.
   */
  private async liveViewOf(replica: WorkloadReplicaRecord, row: WorkloadRecord): Promise<ReplicaView> {
    const view = viewOf(replica, row);
    if (view.phase !== 'ready') return view;
    const sandbox = replica.sandbox_id ? await this.store.getSandbox(replica.sandbox_id) : undefined;
    return sandbox?.state === 'running' ? view : { ...view, phase: 'starting' };
  }

  /** A new replica of the current spec (its sandbox is made next); `reason` for the event, none for a workload's first. */
  private async addReplica(name: string, row: WorkloadRecord, slot: number, reason: 'drift' | 'scale_up' | undefined): Promise<void> {
    const now = new Date().toISOString();
    await insertReplica(this.store, {
      workload: name,
      slot,
      sandbox_id: null,
      spec_hash: row.spec_hash,
      phase: 'starting',
      message: 'its sandbox is about to be made',
      restarts: 0,
      failures: 0,
      last_exit: null,
      created_at: now,
      updated_at: now,
    });
    await this.refreshConditions(name);
    if (reason === 'drift')
      await this.event(name, 'workload.replaced', 'drift', `replica ${slot} added, to take over from one of an older spec`);
    else if (reason === 'scale_up') await this.event(name, 'workload.scaled', 'scale_up', `replica ${slot} added`);
  }

  /** Removes a replica and its sandbox: an old spec's (drift) or one too many (scale_down). */
  private async removeReplica(name: string, replica: WorkloadReplicaRecord, reason: 'drift' | 'scale_down'): Promise<void> {
    const runtime = this.runtimeOf(name, replica.slot);
    // Forgotten first, so that its sandbox's end is not taken for a crash.
    this.forgetRuntime(runtime);
    const sandbox = replica.sandbox_id ? await this.store.getSandbox(replica.sandbox_id) : undefined;
    if (sandbox && sandbox.state !== 'killed') await this.manager.remove(sandbox.id, reason);
    await deleteReplica(this.store, name, replica.slot);
    await this.refreshConditions(name);
    const what = `replica ${replica.slot}${sandbox ? ` (sandbox ${sandbox.id})` : ''} removed`;
    if (reason === 'drift') await this.event(name, 'workload.replaced', 'drift', `${what}: its spec changed`);
    else await this.event(name, 'workload.scaled', 'scale_down', what);
  }

  private async stopReplica(name: string, replica: WorkloadReplicaRecord): Promise<void> {
    this.quiesce(this.runtimeOf(name, replica.slot));
    const sandbox = replica.sandbox_id ? await this.store.getSandbox(replica.sandbox_id) : undefined;
    if (sandbox && (sandbox.state === 'running' || sandbox.state === 'paused')) {
      await this.manager.stop(sandbox.id, 'workload_stopped');
      await this.event(
        name,
        'workload.stopped',
        'user',
        `replica ${replica.slot}: its sandbox ${sandbox.id} is stopped, its disk and volumes kept`,
      );
    }
    if (replica.phase !== 'stopped') await this.setPhase(name, replica.slot, 'stopped');
  }

  /** Brings one replica of the current spec to running: a sandbox made, started or resumed, its command followed, its health checked. */
  private async reconcileReplica(name: string, spec: WorkloadSpec, replica: WorkloadReplicaRecord): Promise<void> {
    const runtime = this.runtimeOf(name, replica.slot);
    if (isSettled(replica.phase)) return;
    if (runtime.retryAt !== undefined && Date.now() < runtime.retryAt) return;
    let sandbox = replica.sandbox_id ? await this.store.getSandbox(replica.sandbox_id) : undefined;
    if (sandbox && (sandbox.state === 'error' || sandbox.state === 'killed')) {
      this.quiesce(runtime);
      delete runtime.sandboxId;
      if (sandbox.state === 'error') await this.manager.remove(sandbox.id, 'replaced');
      sandbox = undefined;
    }
    if (!sandbox) {
      await this.setPhase(name, replica.slot, 'starting', 'its sandbox is being made');
      const created = await this.createSandbox(spec, replica.slot).catch(async (err: unknown) => {
        await this.removeFailedCreates(name);
        await this.recordFailure(name, replica.slot, 'create_failed', errorMessage(err));
        return undefined;
      });
      if (!created) return;
      // Removed meanwhile (a scale-down or the workload's removal cannot come while this runs, but a daemon stop can).
      if (!(await getReplica(this.store, name, replica.slot))) return await this.manager.remove(created, 'workload_removed');
      await updateReplica(this.store, name, replica.slot, { sandbox_id: created });
      await this.event(name, 'workload.started', 'apply', `replica ${replica.slot}: sandbox ${created} created`);
      runtime.sandboxId = created;
      return await this.startService(name, spec, replica.slot, created, 'start');
    }
    if (sandbox.state === 'stopped' || sandbox.state === 'paused') {
      await this.setPhase(name, replica.slot, 'starting', `its sandbox ${sandbox.id} is starting`);
      if (sandbox.state === 'stopped') await this.manager.start(sandbox.id, 'workload_started');
      else await this.manager.resume(sandbox.id);
      await this.event(
        name,
        'workload.started',
        'state_running',
        `replica ${replica.slot}: sandbox ${sandbox.id} ${sandbox.state === 'stopped' ? 'started' : 'resumed'}`,
      );
      runtime.sandboxId = sandbox.id;
      // A resumed VM still runs its command (its memory came back): it is followed, not started twice.
      return await this.startService(name, spec, replica.slot, sandbox.id, sandbox.state === 'stopped' ? 'start' : 'attach');
    }
    if (sandbox.state !== 'running') return; // starting: its create or start is still under way.
    runtime.sandboxId = sandbox.id;
    if (spec.command && !runtime.command) return await this.startService(name, spec, replica.slot, sandbox.id, 'attach');
    if (!spec.command && !runtime.startedAt) return await this.startService(name, spec, replica.slot, sandbox.id, 'attach');
    // An apply that changed only the health check stopped the old one.
    if (spec.health && !runtime.healthTimer) this.scheduleHealthCheck(runtime, spec, 0);
    await this.forgetFailuresIfStable(runtime);
  }

  /** A create that failed leaves its sandbox in `error` (for history); the workload's are removed, so that only its live ones are listed. */
  private async removeFailedCreates(name: string): Promise<void> {
    for (const sandbox of await this.manager.list(false)) {
      if (sandbox.state === 'error' && sandbox.metadata[WORKLOAD_METADATA_KEY] === name)
        await this.manager.remove(sandbox.id, 'start_failed').catch(() => undefined);
    }
  }

  private async createSandbox(spec: WorkloadSpec, slot: number): Promise<string> {
    for (const volume of spec.volumes) {
      if (volume.sizeMiB !== undefined && !(await getVolume(this.store, volume.name)))
        await this.volumes.create(volume.name, `${volume.sizeMiB}M`);
    }
    const request: CreateSandboxRequest = {
      template: await this.templateOf(spec),
      ...(spec.resources.cpus !== undefined ? { vcpus: spec.resources.cpus } : {}),
      ...(spec.resources.memoryMiB !== undefined ? { memoryMiB: spec.resources.memoryMiB } : {}),
      env: spec.env,
      metadata: { [WORKLOAD_METADATA_KEY]: spec.name, [WORKLOAD_REPLICA_METADATA_KEY]: String(slot) },
      // A workload's sandbox lasts: only the workload ends it.
      timeoutMs: 0,
      internet: spec.network.internet,
      ...(spec.network.egress.allow.length + spec.network.egress.deny.length > 0 ? { egress: spec.network.egress } : {}),
      ports: spec.ports.map((p) => ({ guestPort: p.guest, hostPort: p.host, ...(p.hostIp ? { hostIp: p.hostIp } : {}) })),
      volumes: spec.volumes.map((v) => ({ name: v.name, mount: v.mount, readOnly: v.readOnly })),
    };
    const { id } = await this.manager.create(request);
    if (spec.resources.diskMiB === undefined) return id;
    // A sandbox is made at its template's disk size; a larger root disk is grown while it is stopped, and its filesystem at the start.
    try {
      await this.manager.stop(id, 'workload_disk');
      await this.manager.setResources(id, { diskMiB: spec.resources.diskMiB });
      await this.manager.start(id, 'workload_disk');
    } catch (err) {
      // Not yet the replica's: nothing else would remove it.
      await this.manager.remove(id, 'start_failed').catch(() => undefined);
      throw err;
    }
    return id;
  }

  /**
   * Starts (or, after a daemon restart, finds again) a replica's command in
   * its running sandbox, and its health checks. Without a health check it is
   * ready once its command runs.
   */
  private async startService(name: string, spec: WorkloadSpec, slot: number, sandboxId: string, how: 'start' | 'attach'): Promise<void> {
    const runtime = this.runtimeOf(name, slot);
    runtime.sandboxId = sandboxId;
    const log = this.logOf(name);
    let followed = false;
    if (spec.command) {
      const { agent } = await this.manager.agentOf(sandboxId);
      let command = how === 'attach' ? ServiceCommand.attach(agent, log) : undefined;
      if (command && (await Promise.race([command.started.then(() => 'started'), command.ended.then(() => 'ended')])) === 'ended') {
        const end = await command.ended;
        // Its process ended while no daemon followed it: that is a failure like any exit.
        if (end.kind === 'exited')
          return await this.recordFailure(name, slot, 'exited', `exited with code ${end.exitCode} (${end.status})`, end.exitCode);
        if (end.kind === 'lost') throw new Error(`could not follow its command: ${end.message}`);
        command = undefined;
      }
      followed = command !== undefined;
      if (!command) {
        log.note(`replica ${slot}: starting ${JSON.stringify(spec.command)} in sandbox ${sandboxId}`);
        command = ServiceCommand.start(agent, { ...spec, command: spec.command }, log);
        const first = await Promise.race([command.started.then(() => undefined), command.ended]);
        if (first) {
          const message =
            first.kind === 'lost' ? first.message : first.kind === 'exited' ? `exited with code ${first.exitCode}` : 'not started';
          return await this.recordFailure(name, slot, 'exited', `its command did not start: ${message}`);
        }
        runtime.startedAt = Date.now();
      }
      runtime.startedAt ??= Date.now();
      runtime.command = command;
      void command.ended.then((end) => {
        if (!command.detached) void this.enqueue(name, 'command end', () => this.onCommandEnd(runtime, command, end));
      });
    } else {
      runtime.startedAt = Date.now();
      followed = how === 'attach';
    }
    runtime.healthFailures = 0;
    const replica = await getReplica(this.store, name, slot);
    if (!replica) return;
    if (!spec.health) return await this.markReady(runtime, sandboxId);
    // A replica found running as it was keeps its readiness until its health check says otherwise.
    if (!(followed && replica.phase === 'ready')) await this.setPhase(name, slot, 'health_pending', 'waiting for its health check');
    this.scheduleHealthCheck(runtime, spec, 0);
  }

  private async markReady(runtime: Runtime, sandboxId: string): Promise<void> {
    const replica = await getReplica(this.store, runtime.name, runtime.slot);
    if (!replica || replica.phase === 'ready') return;
    await this.setPhase(runtime.name, runtime.slot, 'ready', `sandbox ${sandboxId} serves it`);
    // A rolling replacement waits for this replica: its next step may be due.
    void this.enqueue(runtime.name, 'replica ready', () => this.reconcile(runtime.name));
  }

  private async onCommandEnd(runtime: Runtime, command: ServiceCommand, end: Awaited<ServiceCommand['ended']>): Promise<void> {
    if (runtime.command !== command) return;
    delete runtime.command;
    clearTimeout(runtime.healthTimer);
    delete runtime.healthTimer;
    if (end.kind === 'exited') {
      this.logOf(runtime.name).note(`replica ${runtime.slot}: the command exited with code ${end.exitCode} (${end.status})`);
      return await this.recordFailure(
        runtime.name,
        runtime.slot,
        'exited',
        `its command exited with code ${end.exitCode} (${end.status})`,
        end.exitCode,
      );
    }
    // The stream was cut: the VM may be gone (its sandbox's error event says so) or the agent restarted; look again soon.
    setTimeout(() => void this.enqueue(runtime.name, 'lost stream', () => this.reconcile(runtime.name)), LOST_STREAM_RETRY_MS).unref();
  }

  private scheduleHealthCheck(runtime: Runtime, spec: WorkloadSpec, delayMs: number): void {
    clearTimeout(runtime.healthTimer);
    runtime.healthTimer = setTimeout(() => void this.enqueue(runtime.name, 'health check', () => this.checkHealth(runtime, spec)), delayMs);
    runtime.healthTimer.unref();
  }

  private async checkHealth(runtime: Runtime, spec: WorkloadSpec): Promise<void> {
    const health = spec.health;
    const sandboxId = runtime.sandboxId;
    if (!health || !sandboxId || runtime.healthTimer === undefined) return;
    const result = await runHealthProbe(this.manager, sandboxId, health.probe, health.timeoutMs);
    const row = await getWorkload(this.store, runtime.name);
    const replica = await getReplica(this.store, runtime.name, runtime.slot);
    if (row?.state !== 'running' || !replica || runtime.healthTimer === undefined) return;
    const inStartPeriod = Date.now() - (runtime.startedAt ?? 0) < health.startPeriodMs;
    if (result.ok) {
      runtime.healthFailures = 0;
      await this.markReady(runtime, sandboxId);
      await this.forgetFailuresIfStable(runtime);
    } else if (!inStartPeriod || replica.phase === 'ready') {
      runtime.healthFailures++;
      if (runtime.healthFailures >= health.retries) {
        const message = `replica ${runtime.slot}: ${runtime.healthFailures} health checks failed in a row; the last: ${result.message ?? 'failed'}`;
        await this.event(runtime.name, 'workload.unhealthy', 'health', message);
        this.logOf(runtime.name).note(message);
        const command = runtime.command;
        this.quiesce(runtime);
        // The process is killed; the restart below starts it again (the VM stays).
        await command?.kill();
        return await this.recordFailure(runtime.name, runtime.slot, 'unhealthy', message);
      }
    }
    this.scheduleHealthCheck(runtime, spec, health.intervalMs);
  }

  private async forgetFailuresIfStable(runtime: Runtime): Promise<void> {
    if (runtime.startedAt === undefined || Date.now() - runtime.startedAt < STABLE_AFTER_MS) return;
    const replica = await getReplica(this.store, runtime.name, runtime.slot);
    if (replica && replica.failures > 0 && replica.phase === 'ready')
      await updateReplica(this.store, runtime.name, runtime.slot, { failures: 0 });
  }

  /**
   * A failure of a replica (its command ended, its VM went away, its health
   * check failed, its sandbox could not be made): restart it after a backoff
   * that doubles with each of its failures in a row, or give up (crash_loop)
   * past maxRetries, or not at all when the policy says so.
   */
  private async recordFailure(name: string, slot: number, reason: string, message: string, exitCode?: number): Promise<void> {
    const row = await getWorkload(this.store, name);
    const replica = await getReplica(this.store, name, slot);
    if (!row || !replica || row.state === 'stopped') return;
    const spec = specOf(row);
    const runtime = this.runtimeOf(name, slot);
    this.quiesce(runtime);
    delete runtime.startedAt;
    const lastExit = JSON.stringify({ reason, ...(exitCode !== undefined ? { exitCode } : {}), message, at: new Date().toISOString() });
    const succeeded = reason === 'exited' && exitCode === 0;
    if (spec.restart.policy === 'never' || (spec.restart.policy === 'on-failure' && succeeded)) {
      await this.setPhase(name, slot, succeeded ? 'completed' : 'exited', message, { last_exit: lastExit });
      await this.event(
        name,
        succeeded ? 'workload.stopped' : 'workload.degraded',
        reason,
        `replica ${slot}: ${message}; not restarted (policy ${spec.restart.policy})`,
      );
      return;
    }
    const failures = replica.failures + 1;
    if (failures > spec.restart.maxRetries) {
      const why = `${failures} failures in a row (maxRetries ${spec.restart.maxRetries}); the last: ${message}`;
      await this.setPhase(name, slot, 'crash_loop', why, { failures, last_exit: lastExit });
      await this.event(name, 'workload.degraded', 'crash_loop', `replica ${slot}: ${why}`);
      this.logOf(name).note(`replica ${slot}: not restarted any more: ${why}`);
      return;
    }
    const delayMs = Math.min(spec.restart.backoffMs * 2 ** (failures - 1), MAX_BACKOFF_MS);
    runtime.retryAt = Date.now() + delayMs;
    runtime.retryTimer = setTimeout(() => {
      delete runtime.retryAt;
      void this.enqueue(name, 'restart', () => this.restartAfterFailure(name, slot));
    }, delayMs);
    runtime.retryTimer.unref();
    await this.setPhase(name, slot, 'backoff', `${message}; restarting in ${Math.round(delayMs / 100) / 10} s`, {
      failures,
      restarts: replica.restarts + 1,
      last_exit: lastExit,
    });
    await this.event(
      name,
      'workload.restarted',
      reason,
      `replica ${slot}: ${message}; restart ${failures} of ${spec.restart.maxRetries} in ${delayMs} ms`,
    );
  }

  /** After a backoff: the command again in the same VM, or a new VM when the old one is gone. */
  private async restartAfterFailure(name: string, slot: number): Promise<void> {
    const row = await getWorkload(this.store, name);
    const replica = await getReplica(this.store, name, slot);
    if (row?.state !== 'running' || !replica || isSettled(replica.phase)) return;
    const spec = specOf(row);
    const sandbox = replica.sandbox_id ? await this.store.getSandbox(replica.sandbox_id) : undefined;
    if (sandbox?.state === 'running' && replica.spec_hash === row.spec_hash) {
      await this.setPhase(name, slot, 'starting', 'restarting after its backoff');
      if (spec.command) return await this.startService(name, spec, slot, sandbox.id, 'start');
      // Without a command of its own, its service is the template's: a restart is the VM's.
      await this.manager.restart(sandbox.id);
      return await this.startService(name, spec, slot, sandbox.id, 'attach');
    }
    await this.reconcile(name);
  }

  // ---- what the API asks ----

  async list(): Promise<Workload[]> {
    const rows = await listWorkloads(this.store);
    return await Promise.all(rows.map((row) => this.toApi(row)));
  }

  async get(name: string): Promise<Workload> {
    return await this.toApi(await this.require(name));
  }

  /**
   * A template workload's template; for an image workload, the template made
   * from its image (pulled unless the image store has it) the first time it is
   * needed, and kept for the next sandbox.
   */
  private async templateOf(spec: WorkloadSpec): Promise<string> {
    if (spec.template !== undefined) return spec.template;
    const image = spec.image as string;
    const name = imageTemplateName(image, spec.command === undefined);
    if (await this.store.getTemplate(name)) return name;
    const stored = await this.images.requireDigest(image).catch(() => undefined);
    if (!stored) {
      await this.event(spec.name, 'workload.pulling', 'image', `pulling ${image} to make template ${name} of it`);
      await this.images.pull(image, undefined);
    }
    try {
      await this.templates.create({ name, image, ...(spec.command === undefined ? { start: 'image' as const } : {}) });
    } catch (err) {
      // Another workload of the same image made it meanwhile.
      if (!(err instanceof CapsuleError && err.code === 'name_taken')) throw err;
    }
    return name;
  }

  private async require(name: string): Promise<WorkloadRecord> {
    const row = await getWorkload(this.store, name);
    if (!row) throw new CapsuleError('workload_not_found', `no workload named ${name}`, { hint: 'list them with `capsule workload ls`' });
    return row;
  }

  private async toApi(row: WorkloadRecord): Promise<Workload> {
    const spec = specOf(row);
    const replicas = await listReplicas(this.store, row.name);
    const sandboxes: Workload['sandboxes'] = [];
    for (const replica of replicas) {
      const sandbox = replica.sandbox_id ? await this.store.getSandbox(replica.sandbox_id) : undefined;
      if (sandbox)
        sandboxes.push({
          id: sandbox.id,
          state: sandbox.state,
          replica: replica.slot,
          ready: replica.phase === 'ready',
          phase: replica.phase,
          upToDate: replica.spec_hash === row.spec_hash,
          restarts: replica.restarts,
        });
    }
    const lastExit = replicas
      .map((r) => (r.last_exit ? (JSON.parse(r.last_exit) as NonNullable<Workload['lastExit']>) : undefined))
      .filter((exit) => exit !== undefined)
      .sort((a, b) => a.at.localeCompare(b.at))
      .at(-1);
    return {
      name: row.name,
      ...(row.source ? { source: row.source } : {}),
      template: spec.template ?? imageTemplateName(spec.image as string, spec.command === undefined),
      ...(spec.image !== undefined ? { image: spec.image } : {}),
      state: row.state === 'stopped' ? 'stopped' : 'running',
      conditions: JSON.parse(row.conditions) as WorkloadCondition[],
      restarts: replicas.reduce((sum, r) => sum + r.restarts, 0),
      ...(lastExit ? { lastExit } : {}),
      replicas: spec.replicas,
      sandboxes,
      ports: spec.ports,
      volumes: spec.volumes.map((v) => ({ name: v.name, mount: v.mount, readOnly: v.readOnly })),
      spec,
      createdAt: row.created_at,
      updatedAt: row.updated_at,
    };
  }

  /** Removes a workload, its sandboxes and its log; its volumes stay. */
  async remove(name: string, reason = 'user'): Promise<void> {
    await this.require(name);
    await this.enqueue(name, 'remove', async () => {
      if (!(await getWorkload(this.store, name))) return;
      const removed: string[] = [];
      for (const replica of await listReplicas(this.store, name)) {
        const runtime = this.runtimeOf(name, replica.slot);
        this.forgetRuntime(runtime);
        const sandbox = replica.sandbox_id ? await this.store.getSandbox(replica.sandbox_id) : undefined;
        if (sandbox && sandbox.state !== 'killed') await this.manager.remove(sandbox.id, 'workload_removed');
        if (sandbox) removed.push(sandbox.id);
      }
      await deleteWorkload(this.store, name);
      this.logOf(name).remove();
      this.serviceLogs.delete(name);
      await this.event(name, 'workload.removed', reason, removed.length > 0 ? `sandboxes ${removed.join(', ')} removed` : undefined);
    });
  }

  /** Sets what the workload should be (`capsule workload stop|start`); start also forgets its failures. */
  async setState(name: string, state: 'running' | 'stopped'): Promise<Workload> {
    await this.require(name);
    await this.enqueue(name, state === 'running' ? 'start' : 'stop', async () => {
      await updateWorkload(this.store, name, { state });
      if (state === 'running') await this.giveNewChance(name);
      await this.reconcile(name);
    });
    return await this.get(name);
  }

  /** Restarts the workload's VMs now, one replica after the other (their commands with them), and forgets their failures. */
  async restart(name: string): Promise<Workload> {
    await this.require(name);
    await this.enqueue(name, 'restart', async () => {
      const row = await getWorkload(this.store, name);
      if (!row) return;
      const spec = specOf(row);
      for (const replica of await listReplicas(this.store, name)) {
        // One of an older spec is on its way out: a rolling replacement removes it once its successor is ready.
        if (replica.spec_hash !== row.spec_hash) continue;
        const runtime = this.runtimeOf(name, replica.slot);
        this.quiesce(runtime);
        delete runtime.retryAt;
        delete runtime.startedAt;
        await this.setPhase(name, replica.slot, 'starting', 'restarting', { failures: 0, restarts: replica.restarts + 1 });
        const sandbox = replica.sandbox_id ? await this.store.getSandbox(replica.sandbox_id) : undefined;
        if (row.state === 'running' && sandbox?.state === 'running') {
          await this.manager.restart(sandbox.id);
          await this.event(name, 'workload.restarted', 'user', `replica ${replica.slot}: sandbox ${sandbox.id} restarted`);
          await this.startService(name, spec, replica.slot, sandbox.id, 'attach');
        }
      }
      await this.reconcile(name);
    });
    return await this.get(name);
  }

  /** The service's log: from a byte offset (a follower's), or what was written since a time, or its last lines. */
  async logs(
    name: string,
    options: { offset?: number | undefined; tail?: number | undefined; since?: string | undefined },
  ): Promise<{ data: Buffer; next: number }> {
    await this.require(name);
    const sinceMs = options.since === undefined ? undefined : Date.parse(options.since);
    if (sinceMs !== undefined && Number.isNaN(sinceMs))
      throw new CapsuleError('invalid_argument', `since: ${options.since} is no time`, {
        hint: 'give an RFC 3339 time such as 2026-01-01T12:00:00Z',
      });
    return this.logOf(name).read({ offset: options.offset, tail: options.tail, sinceMs });
  }
}

function initialConditions(now: string): WorkloadCondition[] {
  return [
    { type: 'Ready', status: false, reason: 'pending', since: now },
    { type: 'Progressing', status: true, reason: 'applied', since: now },
    { type: 'Degraded', status: false, reason: 'none', since: now },
  ];
}

function specError(code: 'invalid_argument' | 'host_port_unavailable' | 'volume_in_use', problems: SpecProblem[]): CapsuleError {
  return new CapsuleError(code, `the workload file was not applied:\n${problems.map(formatSpecProblem).join('\n')}`, {
    hint: 'fix these and apply again; nothing was changed',
  });
}
