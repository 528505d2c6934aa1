// Declared workloads and the reconciler that keeps each one as its spec says:
// one sandbox per workload (no lifetime), its command supervised in the VM,
// health-checked, restarted with exponential backoff until maxRetries, then
// Degraded (crash_loop). Driven by applies, the command's end, its sandbox's
// state changes and health failures, plus a periodic resync; all that it
// knows lives in the store, so a daemon restart (even kill -9) resumes it and
// touches no running workload. One workload's actions run one at a time.
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
  type WorkloadConditionType,
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
import { deleteWorkload, getWorkload, insertWorkload, listWorkloads, updateWorkload, type WorkloadRecord } from '../store/workloads.js';
import type { Templates } from '../templates/templates.js';
import type { Volumes } from '../volumes/volumes.js';
import { runHealthProbe } from './health-probe.js';
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
/** Metadata key that marks a workload's sandbox. */
export const WORKLOAD_METADATA_KEY = 'capsule.workload';

/** Spec fields that a running sandbox cannot take on: a change to one of them replaces it. */
const VM_FIELDS = ['template', 'image', 'command', 'env', 'workdir', 'user', 'resources', 'ports', 'volumes', 'network'] as const;

/**
 * The template an image workload's sandboxes start from: one per image, and
 * one more for the image's own Entrypoint + Cmd as its START (a workload
 * without a command of its own), so workloads of one image share it.
 */
export function imageTemplateName(image: string, withStart: boolean): string {
  return `workload-image-${createHash('sha256').update(`${image}\n${withStart}`).digest('hex').slice(0, 16)}`;
}

export function vmHashOf(spec: WorkloadSpec): string {
  const fields = VM_FIELDS.map((field) => [field, field === 'volumes' ? spec.volumes.map(({ sizeMiB: _, ...v }) => v) : spec[field]]);
  return createHash('sha256').update(JSON.stringify(fields)).digest('hex').slice(0, 32);
}

/** What is alive for one workload in this daemon only: rebuilt from the store after a restart. */
interface Runtime {
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

type ConditionChange = Partial<Record<WorkloadConditionType, { status: boolean; reason: string; message?: string | undefined }>>;

export class Workloads {
  private readonly runtimes = new Map<string, Runtime>();
  /** Each workload's chain of actions, so that two never run at once. */
  private readonly queues = new Map<string, Promise<void>>();
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

  private runtimeOf(name: string): Runtime {
    let runtime = this.runtimes.get(name);
    if (!runtime) {
      runtime = { healthFailures: 0 };
      this.runtimes.set(name, runtime);
    }
    return runtime;
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
    return new ServiceLog(path.join(this.stateDir, 'workloads', name));
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
    for (const row of await listWorkloads(this.store).catch(() => [])) {
      // A workload with an action queued is looked at after it anyway.
      if (!this.queues.has(row.name)) void this.enqueue(row.name, 'resync', () => this.reconcile(row.name));
    }
  }

  /** A state change of a workload's sandbox that the daemon did not make for it: a crash, an OOM kill, a removal by hand. */
  private onRecordedEvent(event: RecordedEvent): void {
    if (event.kind !== 'sandbox' || (event.state !== 'error' && event.state !== 'killed')) return;
    for (const [name, runtime] of this.runtimes) {
      if (runtime.sandboxId !== event.sandboxId) continue;
      delete runtime.sandboxId;
      this.quiesce(runtime);
      void this.enqueue(name, 'failure', () =>
        this.recordFailure(name, event.reason, event.message ?? `its sandbox ${event.sandboxId} became ${event.state}`),
      );
    }
  }

  private async event(name: string, type: string, reason: string, message?: string): Promise<void> {
    await recordResourceEvent(this.store, { type, workload: name, reason, ...(message ? { message } : {}) });
  }

  private async setConditions(
    row: WorkloadRecord,
    change: ConditionChange,
    extra: Parameters<typeof updateWorkload>[2] = {},
  ): Promise<void> {
    const now = new Date().toISOString();
    // Read again: an apply writes conditions outside the workload's queue, and a stale copy must not undo them.
    const conditions = JSON.parse((await getWorkload(this.store, row.name))?.conditions ?? row.conditions) as WorkloadCondition[];
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
    row.conditions = JSON.stringify(next);
    await updateWorkload(this.store, row.name, { conditions: row.conditions, ...extra });
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
      const old = JSON.parse(row.spec) as WorkloadSpec;
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
      if (change?.action === 'create') {
        await insertWorkload(this.store, {
          name: spec.name,
          ...fields,
          sandbox_id: null,
          sandbox_hash: null,
          restarts: 0,
          failures: 0,
          conditions: JSON.stringify(initialConditions(now)),
          last_exit: null,
          created_at: now,
          updated_at: now,
        });
        await this.event(spec.name, 'workload.created', 'apply', `from ${request.source ?? 'an apply'}`);
      } else if (change?.action === 'replace' || change?.action === 'update') {
        const row = await getWorkload(this.store, spec.name);
        if (!row) continue;
        // A new spec gets a new chance: its failures and a crash loop are forgotten.
        await this.setConditions(
          row,
          { Degraded: { status: false, reason: 'applied' }, Progressing: { status: true, reason: change.action } },
          { ...fields, failures: 0 },
        );
        const runtime = this.runtimeOf(spec.name);
        delete runtime.retryAt;
        // New health settings take effect from the next check.
        clearTimeout(runtime.healthTimer);
        delete runtime.healthTimer;
        await this.event(spec.name, 'workload.applied', 'apply', `${change.action}: ${change.fields.join(', ')}`);
      } else {
        await updateWorkload(this.store, spec.name, { source: fields.source });
      }
      void this.enqueue(spec.name, 'apply', () => this.reconcile(spec.name));
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
        const otherSpec = JSON.parse(other.spec) as WorkloadSpec;
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

  // ---- the reconciler ----

  /** Brings one workload closer to its spec; called after every event that may have moved it away. */
  private async reconcile(name: string): Promise<void> {
    const row = await getWorkload(this.store, name);
    const runtime = this.runtimeOf(name);
    if (!row) {
      this.quiesce(runtime);
      this.runtimes.delete(name);
      return;
    }
    const spec = JSON.parse(row.spec) as WorkloadSpec;
    let sandbox = row.sandbox_id ? await this.store.getSandbox(row.sandbox_id) : undefined;

    if (row.state === 'stopped') {
      this.quiesce(runtime);
      if (sandbox && (sandbox.state === 'running' || sandbox.state === 'paused')) {
        await this.manager.stop(sandbox.id, 'workload_stopped');
        await this.event(name, 'workload.stopped', 'user', `its sandbox ${sandbox.id} is stopped, its disk and volumes kept`);
      }
      if (conditionOf(row, 'Ready')?.reason !== 'stopped')
        await this.setConditions(row, {
          Ready: { status: false, reason: 'stopped' },
          Progressing: { status: false, reason: 'stopped' },
          Degraded: { status: false, reason: 'stopped' },
        });
      return;
    }
    if (isSettled(row)) return;
    if (runtime.retryAt !== undefined && Date.now() < runtime.retryAt) return;

    if (sandbox && row.sandbox_hash !== row.spec_hash && sandbox.state !== 'killed') {
      // Drift: the old VM goes first, so that an exclusive volume and the host ports are free for the new one.
      this.quiesce(runtime);
      delete runtime.sandboxId;
      await this.manager.remove(sandbox.id, 'drift');
      await this.event(name, 'workload.replaced', 'drift', `sandbox ${sandbox.id} removed: its spec changed`);
      sandbox = undefined;
    }
    if (sandbox && (sandbox.state === 'error' || sandbox.state === 'killed')) {
      this.quiesce(runtime);
      delete runtime.sandboxId;
      if (sandbox.state === 'error') await this.manager.remove(sandbox.id, 'replaced');
      sandbox = undefined;
    }
    if (!sandbox) {
      await this.setConditions(row, { Ready: { status: false, reason: 'starting' }, Progressing: { status: true, reason: 'creating' } });
      const created = await this.createSandbox(spec).catch(async (err: unknown) => {
        await this.removeFailedCreates(name);
        await this.recordFailure(name, 'create_failed', errorMessage(err));
        return undefined;
      });
      if (!created) return;
      await updateWorkload(this.store, name, { sandbox_id: created, sandbox_hash: row.spec_hash });
      await this.event(name, 'workload.started', 'apply', `sandbox ${created} created`);
      this.runtimeOf(name).sandboxId = created;
      return await this.startService(name, spec, created, 'start');
    }
    if (sandbox.state === 'stopped' || sandbox.state === 'paused') {
      await this.setConditions(row, { Ready: { status: false, reason: 'starting' }, Progressing: { status: true, reason: 'starting' } });
      if (sandbox.state === 'stopped') await this.manager.start(sandbox.id, 'workload_started');
      else await this.manager.resume(sandbox.id);
      await this.event(
        name,
        'workload.started',
        'state_running',
        `sandbox ${sandbox.id} ${sandbox.state === 'stopped' ? 'started' : 'resumed'}`,
      );
      runtime.sandboxId = sandbox.id;
      // A resumed VM still runs its command (its memory came back): it is followed, not started twice.
      return await this.startService(name, spec, sandbox.id, sandbox.state === 'stopped' ? 'start' : 'attach');
    }
    if (sandbox.state !== 'running') return; // starting: its create is still under way.
    runtime.sandboxId = sandbox.id;
    if (spec.command && !runtime.command) return await this.startService(name, spec, sandbox.id, 'attach');
    if (!spec.command && !runtime.startedAt) return await this.startService(name, spec, sandbox.id, 'attach');
    // An apply that changed only the health check stopped the old one.
    if (spec.health && !runtime.healthTimer) this.scheduleHealthCheck(name, spec, 0);
    await this.forgetFailuresIfStable(name, runtime);
  }

  /** A create that failed leaves its sandbox in `error` (for history); the workload's are removed, so that only its live one is listed. */
  private async removeFailedCreates(name: string): Promise<void> {
    for (const sandbox of await this.manager.list(false)) {
      if (sandbox.state === 'error' && sandbox.metadata[WORKLOAD_METADATA_KEY] === name)
        await this.manager.remove(sandbox.id, 'start_failed').catch(() => undefined);
    }
  }

  private async createSandbox(spec: WorkloadSpec): Promise<string> {
    for (const volume of spec.volumes) {
      if (volume.sizeMiB !== undefined && !(await getVolume(this.store, volume.name)))
        await this.volumes.create(volume.name, `${volume.sizeMiB}M`);
    }
    const request: CreateSandboxRequest = {
      template: await this.templateOf(spec),
      ...(spec.resources.cpus !== undefined ? { vcpus: spec.resources.cpus } : {}),
      ...(spec.resources.memoryMiB !== undefined ? { memoryMiB: spec.resources.memoryMiB } : {}),
      env: spec.env,
      metadata: { [WORKLOAD_METADATA_KEY]: spec.name },
      // A workload's sandbox lasts: only the workload ends it.
      timeoutMs: 0,
      internet: spec.network.internet,
      ...(spec.network.egress.allow.length + spec.network.egress.deny.length > 0 ? { egress: spec.network.egress } : {}),
      ports: spec.ports.map((p) => ({ guestPort: p.guest, hostPort: p.host, ...(p.hostIp ? { hostIp: p.hostIp } : {}) })),
      volumes: spec.volumes.map((v) => ({ name: v.name, mount: v.mount, readOnly: v.readOnly })),
    };
    return (await this.manager.create(request)).id;
  }

  /**
   * Starts (or, after a daemon restart, finds again) the workload's command
   * in its running sandbox, and its health checks. Without a health check it
   * is Ready once its command runs.
   */
  private async startService(name: string, spec: WorkloadSpec, sandboxId: string, how: 'start' | 'attach'): Promise<void> {
    const runtime = this.runtimeOf(name);
    runtime.sandboxId = sandboxId;
    const log = this.logOf(name);
    if (spec.command) {
      const { agent } = await this.manager.agentOf(sandboxId);
      let command = how === 'attach' ? ServiceCommand.attach(agent, log) : undefined;
      if (command && (await Promise.race([command.started.then(() => 'started'), command.ended.then(() => 'ended')])) === 'ended') {
        const end = await command.ended;
        // Its process ended while no daemon followed it: that is a failure like any exit.
        if (end.kind === 'exited')
          return await this.recordFailure(name, 'exited', `exited with code ${end.exitCode} (${end.status})`, end.exitCode);
        if (end.kind === 'lost') throw new Error(`could not follow its command: ${end.message}`);
        command = undefined;
      }
      if (!command) {
        log.note(`starting ${JSON.stringify(spec.command)} in sandbox ${sandboxId}`);
        command = ServiceCommand.start(agent, { ...spec, command: spec.command }, log);
        const first = await Promise.race([command.started.then(() => undefined), command.ended]);
        if (first) {
          const message =
            first.kind === 'lost' ? first.message : first.kind === 'exited' ? `exited with code ${first.exitCode}` : 'not started';
          return await this.recordFailure(name, 'exited', `its command did not start: ${message}`);
        }
        runtime.startedAt = Date.now();
      }
      runtime.startedAt ??= Date.now();
      runtime.command = command;
      void command.ended.then((end) => {
        if (!command.detached) void this.enqueue(name, 'command end', () => this.onCommandEnd(name, command, end));
      });
    } else {
      runtime.startedAt = Date.now();
    }
    runtime.healthFailures = 0;
    const row = await getWorkload(this.store, name);
    if (!row) return;
    if (spec.health) {
      await this.setConditions(row, { Progressing: { status: true, reason: 'health_pending', message: 'waiting for its health check' } });
      this.scheduleHealthCheck(name, spec, 0);
    } else {
      await this.markReady(row);
    }
  }

  private async markReady(row: WorkloadRecord): Promise<void> {
    if (conditionOf(row, 'Ready')?.status) return;
    await this.setConditions(row, {
      Ready: { status: true, reason: 'running' },
      Progressing: { status: false, reason: 'ready' },
      Degraded: { status: false, reason: 'ready' },
    });
    await this.event(row.name, 'workload.ready', 'ready', `sandbox ${row.sandbox_id} serves it`);
  }

  private async onCommandEnd(name: string, command: ServiceCommand, end: Awaited<ServiceCommand['ended']>): Promise<void> {
    const runtime = this.runtimeOf(name);
    if (runtime.command !== command) return;
    delete runtime.command;
    clearTimeout(runtime.healthTimer);
    delete runtime.healthTimer;
    if (end.kind === 'exited') {
      this.logOf(name).note(`the command exited with code ${end.exitCode} (${end.status})`);
      return await this.recordFailure(name, 'exited', `its command exited with code ${end.exitCode} (${end.status})`, end.exitCode);
    }
    // The stream was cut: the VM may be gone (its sandbox's error event says so) or the agent restarted; look again soon.
    setTimeout(() => void this.enqueue(name, 'lost stream', () => this.reconcile(name)), LOST_STREAM_RETRY_MS).unref();
  }

  private scheduleHealthCheck(name: string, spec: WorkloadSpec, delayMs: number): void {
    const runtime = this.runtimeOf(name);
    clearTimeout(runtime.healthTimer);
    runtime.healthTimer = setTimeout(() => void this.enqueue(name, 'health check', () => this.checkHealth(name, spec)), delayMs);
    runtime.healthTimer.unref();
  }

  private async checkHealth(name: string, spec: WorkloadSpec): Promise<void> {
    const runtime = this.runtimeOf(name);
    const health = spec.health;
    if (!health || !runtime.sandboxId || runtime.healthTimer === undefined) return;
    const result = await runHealthProbe(this.manager, runtime.sandboxId, health.probe, health.timeoutMs);
    const row = await getWorkload(this.store, name);
    if (row?.state !== 'running' || runtime.healthTimer === undefined) return;
    const inStartPeriod = Date.now() - (runtime.startedAt ?? 0) < health.startPeriodMs;
    if (result.ok) {
      runtime.healthFailures = 0;
      await this.markReady(row);
      await this.forgetFailuresIfStable(name, runtime);
    } else if (!inStartPeriod || conditionOf(row, 'Ready')?.status) {
      runtime.healthFailures++;
      if (runtime.healthFailures >= health.retries) {
        const message = `${runtime.healthFailures} health checks failed in a row; the last: ${result.message ?? 'failed'}`;
        await this.event(name, 'workload.unhealthy', 'health', message);
        this.logOf(name).note(message);
        const command = runtime.command;
        this.quiesce(runtime);
        // The process is killed; the restart below starts it again (the VM stays).
        await command?.kill();
        return await this.recordFailure(name, 'unhealthy', message);
      }
    }
    this.scheduleHealthCheck(name, spec, health.intervalMs);
  }

  private async forgetFailuresIfStable(name: string, runtime: Runtime): Promise<void> {
    if (runtime.startedAt === undefined || Date.now() - runtime.startedAt < STABLE_AFTER_MS) return;
    const row = await getWorkload(this.store, name);
    if (row && row.failures > 0 && conditionOf(row, 'Ready')?.status) await updateWorkload(this.store, name, { failures: 0 });
  }

  /**
   * A failure of the workload (its command ended, its VM went away, its
   * health check failed, its sandbox could not be made): restart it after a
   * backoff that doubles with each failure in a row, or give up (crash_loop)
   * past maxRetries, or not at all when the policy says so.
   */
  private async recordFailure(name: string, reason: string, message: string, exitCode?: number): Promise<void> {
    const row = await getWorkload(this.store, name);
    if (!row || row.state === 'stopped') return;
    const spec = JSON.parse(row.spec) as WorkloadSpec;
    const runtime = this.runtimeOf(name);
    const command = runtime.command;
    this.quiesce(runtime);
    command?.detach();
    delete runtime.startedAt;
    const lastExit = JSON.stringify({ reason, ...(exitCode !== undefined ? { exitCode } : {}), message, at: new Date().toISOString() });
    const succeeded = reason === 'exited' && exitCode === 0;
    if (spec.restart.policy === 'never' || (spec.restart.policy === 'on-failure' && succeeded)) {
      await this.setConditions(
        row,
        {
          Ready: { status: false, reason: succeeded ? 'completed' : 'exited', message },
          Progressing: { status: false, reason: 'not_restarted', message: `restart policy ${spec.restart.policy}` },
          ...(succeeded ? {} : { Degraded: { status: true, reason: 'exited', message } }),
        },
        { last_exit: lastExit },
      );
      await this.event(
        name,
        succeeded ? 'workload.stopped' : 'workload.degraded',
        reason,
        `${message}; not restarted (policy ${spec.restart.policy})`,
      );
      return;
    }
    const failures = row.failures + 1;
    if (failures > spec.restart.maxRetries) {
      const why = `${failures} failures in a row (maxRetries ${spec.restart.maxRetries}); the last: ${message}`;
      await this.setConditions(
        row,
        {
          Ready: { status: false, reason },
          Progressing: { status: false, reason: 'crash_loop' },
          Degraded: { status: true, reason: 'crash_loop', message: why },
        },
        { failures, last_exit: lastExit },
      );
      await this.event(name, 'workload.degraded', 'crash_loop', why);
      this.logOf(name).note(`not restarted any more: ${why}`);
      return;
    }
    const delayMs = Math.min(spec.restart.backoffMs * 2 ** (failures - 1), MAX_BACKOFF_MS);
    runtime.retryAt = Date.now() + delayMs;
    runtime.retryTimer = setTimeout(() => {
      delete runtime.retryAt;
      void this.enqueue(name, 'restart', () => this.restartAfterFailure(name));
    }, delayMs);
    runtime.retryTimer.unref();
    await this.setConditions(
      row,
      {
        Ready: { status: false, reason, message },
        Progressing: { status: true, reason: 'backoff', message: `restarting in ${Math.round(delayMs / 100) / 10} s` },
      },
      { failures, restarts: row.restarts + 1, last_exit: lastExit },
    );
    await this.event(name, 'workload.restarted', reason, `${message}; restart ${failures} of ${spec.restart.maxRetries} in ${delayMs} ms`);
  }

  /** After a backoff: the command again in the same VM, or a new VM when the old one is gone. */
  private async restartAfterFailure(name: string): Promise<void> {
    const row = await getWorkload(this.store, name);
    if (row?.state !== 'running' || isSettled(row)) return;
    const spec = JSON.parse(row.spec) as WorkloadSpec;
    const sandbox = row.sandbox_id ? await this.store.getSandbox(row.sandbox_id) : undefined;
    if (sandbox?.state === 'running' && row.sandbox_hash === row.spec_hash) {
      if (spec.command) return await this.startService(name, spec, sandbox.id, 'start');
      // Without a command of its own, its service is the template's: a restart is the VM's.
      await this.manager.restart(sandbox.id);
      return await this.startService(name, spec, sandbox.id, 'attach');
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
    const spec = JSON.parse(row.spec) as WorkloadSpec;
    const sandbox = row.sandbox_id ? await this.store.getSandbox(row.sandbox_id) : undefined;
    return {
      name: row.name,
      ...(row.source ? { source: row.source } : {}),
      template: spec.template ?? imageTemplateName(spec.image as string, spec.command === undefined),
      ...(spec.image !== undefined ? { image: spec.image } : {}),
      state: row.state === 'stopped' ? 'stopped' : 'running',
      conditions: JSON.parse(row.conditions) as WorkloadCondition[],
      restarts: row.restarts,
      ...(row.last_exit ? { lastExit: JSON.parse(row.last_exit) as NonNullable<Workload['lastExit']> } : {}),
      sandboxes: sandbox ? [{ id: sandbox.id, state: sandbox.state }] : [],
      ports: spec.ports,
      volumes: spec.volumes.map((v) => ({ name: v.name, mount: v.mount, readOnly: v.readOnly })),
      spec,
      createdAt: row.created_at,
      updatedAt: row.updated_at,
    };
  }

  /** Removes a workload, its sandbox and its log; its volumes stay. */
  async remove(name: string, reason = 'user'): Promise<void> {
    await this.require(name);
    await this.enqueue(name, 'remove', async () => {
      const row = await getWorkload(this.store, name);
      if (!row) return;
      const runtime = this.runtimeOf(name);
      this.quiesce(runtime);
      delete runtime.sandboxId;
      const sandbox = row.sandbox_id ? await this.store.getSandbox(row.sandbox_id) : undefined;
      if (sandbox && sandbox.state !== 'killed') await this.manager.remove(sandbox.id, 'workload_removed');
      await deleteWorkload(this.store, name);
      this.runtimes.delete(name);
      this.logOf(name).remove();
      await this.event(name, 'workload.removed', reason, sandbox ? `sandbox ${sandbox.id} removed` : undefined);
    });
  }

  /** Sets what the workload should be (`capsule workload stop|start`); start also forgets its failures. */
  async setState(name: string, state: 'running' | 'stopped'): Promise<Workload> {
    const row = await this.require(name);
    await this.enqueue(name, state === 'running' ? 'start' : 'stop', async () => {
      if (state === 'running') {
        const runtime = this.runtimeOf(name);
        delete runtime.retryAt;
        await this.setConditions(row, { Degraded: { status: false, reason: 'started' } }, { state, failures: 0 });
      } else await updateWorkload(this.store, name, { state });
      await this.reconcile(name);
    });
    return await this.get(name);
  }

  /** Restarts the workload's VM now (its command with it), and forgets its failures. */
  async restart(name: string): Promise<Workload> {
    const row = await this.require(name);
    await this.enqueue(name, 'restart', async () => {
      const runtime = this.runtimeOf(name);
      this.quiesce(runtime);
      delete runtime.retryAt;
      delete runtime.startedAt;
      await this.setConditions(
        row,
        { Degraded: { status: false, reason: 'restarted' }, Ready: { status: false, reason: 'restarting' } },
        { failures: 0, restarts: row.restarts + 1 },
      );
      const sandbox = row.sandbox_id ? await this.store.getSandbox(row.sandbox_id) : undefined;
      if (row.state === 'running' && sandbox?.state === 'running') {
        await this.manager.restart(sandbox.id);
        await this.event(name, 'workload.restarted', 'user', `sandbox ${sandbox.id} restarted`);
        const spec = JSON.parse(row.spec) as WorkloadSpec;
        return await this.startService(name, spec, sandbox.id, 'attach');
      }
      await this.reconcile(name);
    });
    return await this.get(name);
  }

  /** The service's log: from a byte offset (a follower's), or its last lines. */
  async logs(name: string, options: { offset?: number | undefined; tail?: number | undefined }): Promise<{ data: Buffer; next: number }> {
    await this.require(name);
    return this.logOf(name).read(options);
  }
}

function initialConditions(now: string): WorkloadCondition[] {
  return [
    { type: 'Ready', status: false, reason: 'pending', since: now },
    { type: 'Progressing', status: true, reason: 'applied', since: now },
    { type: 'Degraded', status: false, reason: 'none', since: now },
  ];
}

function conditionOf(row: WorkloadRecord, type: WorkloadConditionType): WorkloadCondition | undefined {
  return (JSON.parse(row.conditions) as WorkloadCondition[]).find((c) => c.type === type);
}

/** A workload the reconciler leaves alone until someone acts: crash-looped, or ended under its restart policy. */
function isSettled(row: WorkloadRecord): boolean {
  return conditionOf(row, 'Degraded')?.status === true || conditionOf(row, 'Ready')?.reason === 'completed';
}

function specError(code: 'invalid_argument' | 'host_port_unavailable' | 'volume_in_use', problems: SpecProblem[]): CapsuleError {
  return new CapsuleError(code, `the workload file was not applied:\n${problems.map(formatSpecProblem).join('\n')}`, {
    hint: 'fix these and apply again; nothing was changed',
  });
}
