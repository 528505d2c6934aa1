// The sandbox lifecycle as the API and the daemon see it: one facade over the
// create path (create.ts), pause and resume (pause-resume.ts), fork and
// snapshot (fork.ts) and the VMs themselves (sandbox-vms.ts); here: daemon
// start and shutdown, reading sandboxes, removing them, their timeouts,
// network and exec. Templates and their warm snapshots and pools are
// templates/'s; this is what they run their build sandboxes and pool VMs through.
import type {
  CreateSandboxRequest,
  ExecEvent,
  ExecRequest,
  ExecResult,
  Sandbox,
  SandboxState,
  SetNetworkRequest,
  SetResourcesRequest,
  SshServer,
} from '@capsule/protocol';
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { DaemonConfig } from '../config.js';
import { assertDiskRoom } from '../disk-admission.js';
import { CapsuleError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { secondsSince, type DaemonMetrics } from '../metrics.js';
import type { SandboxRecord, Store, TemplateRecord } from '../store/store.js';
import { listSnapshotTemplateDirs } from '../store/templates.js';
import type { SandboxRunner, Templates } from '../templates/templates.js';
import type { PooledVm } from '../templates/warm-pool.js';
import type { WarmSnapshot } from '../templates/warm-snapshot.js';
import type { WarmSnapshots } from '../templates/warm-snapshots.js';
import type { AccelChoice } from '../vmm/accel.js';
import { readConsoleLog } from '../vmm/console-log.js';
import type { VmRuntimePaths } from '../vmm/qemu.js';
import { collectExec, execEvents } from '../agent/exec.js';
import type { AgentClient } from '../agent/client.js';
import type { BulkChannel } from '../agent/bulk-channel.js';
import { vmMemoryUse } from './memory.js';
import { egressPolicyColumns, egressPolicyFrom, egressPolicyOf } from '../network/egress-policy.js';
import { SandboxNetworks } from '../network/sandbox-networks.js';
import { REATTACHING_MESSAGE, sweepInterruptedWork } from './adoption.js';
import { SandboxCreator } from './create.js';
import { SandboxForks } from './fork.js';
import { PauseResume } from './pause-resume.js';
import { PausedMemoryConverter } from './paused-memory.js';
import { PublishedPorts } from './published-ports.js';
import { expiryFrom, SandboxVms } from './sandbox-vms.js';
import { hostKeysFromStart, SSH_START_OUTPUT_LIMIT_BYTES, SSH_START_TIMEOUT_MS, START_SSH_SERVER_SCRIPT } from './ssh-server.js';
import { StopStart } from './stop-start.js';
import { Tunnels } from './tunnels.js';
import type { Volumes } from '../volumes/volumes.js';

const LIVENESS_INTERVAL_MS = 2000;
const REAPER_INTERVAL_MS = 1000;

export class SandboxManager implements SandboxRunner {
  private reaping = false;
  private shuttingDown = false;
  private livenessTimer: NodeJS.Timeout | undefined;
  private readonly pausedMemory: PausedMemoryConverter;
  private reaperTimer: NodeJS.Timeout | undefined;
  private readonly networks: SandboxNetworks;
  /** Connections to ports inside sandboxes, over their agents (see tunnels.ts). */
  readonly tunnels = new Tunnels((idOrName) => this.agentOf(idOrName));
  private readonly ports: PublishedPorts;
  private readonly vms: SandboxVms;
  private readonly warm: WarmSnapshots;
  private readonly creator: SandboxCreator;
  private readonly pausing: PauseResume;
  private readonly stopping: StopStart;
  private readonly forks: SandboxForks;
  /** SSH server starts under way, one per sandbox: two at once would make two sets of keys. */
  private readonly sshStarts = new Map<string, Promise<SshServer>>();

  constructor(
    private readonly store: Store,
    private readonly config: DaemonConfig,
    accel: AccelChoice,
    private readonly log: Logger,
    /** Part of every warm snapshot's key: a snapshot restores only into the QEMU that took it. */
    qemuVersion: string,
    /** Each sandbox's traffic access token, for its ports (see api/credentials.ts). */
    private readonly trafficTokens: { trafficTokenFor(id: string): string },
    templates: Templates,
    /** Where create, exec, pause, resume, fork and snapshot record their durations. */
    private readonly metrics: DaemonMetrics,
    volumes: Volumes,
  ) {
    this.networks = new SandboxNetworks(
      {
        mode: config.network,
        tapPool: config.tapPool,
        stateDir: config.stateDir,
        tapGroup: config.jail ? config.jailIds.first : undefined,
      },
      store,
      log,
    );
    this.ports = new PublishedPorts(store, this.tunnels, log);
    this.vms = new SandboxVms(store, config, log, this.networks, this.ports);
    this.pausedMemory = new PausedMemoryConverter(this.vms.freezeRuntimeDir, log);
    this.warm = templates.warm;
    this.creator = new SandboxCreator(store, config, accel, log, this.vms, templates, this.networks, this.ports, metrics, volumes);
    this.pausing = new PauseResume(store, log, this.vms, this.networks, this.ports, this.pausedMemory);
    this.stopping = new StopStart(store, log, this.vms, this.networks, this.ports, this.pausedMemory, templates, config.bootTimeoutMs);
    this.forks = new SandboxForks(store, config, log, qemuVersion, this.vms, this.warm, this.networks, (memoryMiB, work) =>
      this.creator.memory.whileReserved(memoryMiB, work),
    );
  }

  /** Set when sandboxes are not kept off the host and private networks (user mode without root). */
  get networkWarning(): string | undefined {
    return this.networks.isolationWarning;
  }

  get runningCount(): number {
    return this.vms.live.size;
  }

  runtimePaths(id: string): VmRuntimePaths {
    return this.vms.runtimePaths(id);
  }

  stateDir(id: string): string {
    return this.vms.stateDir(id);
  }

  /**
   * Before the API serves, and quick whatever runs: notes the VMs that
   * outlived the previous daemon (reattached by `reattach`, after the API
   * serves), kills and removes what no sandbox owns, sweeps what an
   * interrupted fork or snapshot left.
   */
  async beforeServing(): Promise<void> {
    await this.ports.load();
    const keep = await this.vms.adoption.prepare();
    // Published ports listen from the moment the API serves: a connection waits for its sandbox to be reattached, as any call does.
    // A port taken while the daemon was down cannot fail anything now: the sandbox runs on without it.
    for (const id of keep)
      await this.ports
        .bind(id)
        .catch((err: unknown) => this.log.error({ sandbox: id, err: errorMessage(err) }, 'could not publish a port again'));
    sweepInterruptedWork(this.config.stateDir, new Set(await listSnapshotTemplateDirs(this.store)), this.log);
    this.vms.removeOrphans(keep);
    // Networks of sandboxes that neither run nor wait paused are leftovers (a crash, warm-pool VMs).
    await this.networks.start(async (id) => this.vms.live.has(id) || keep.has(id) || (await this.store.getSandbox(id))?.state === 'paused');
    this.livenessTimer = setInterval(() => this.vms.checkLiveness(), LIVENESS_INTERVAL_MS);
    this.livenessTimer.unref();
    this.reaperTimer = setInterval(() => void this.reapExpired(), REAPER_INTERVAL_MS);
    this.reaperTimer.unref();
  }

  /**
   * While the API serves: reattaches the previous daemon's VMs (adoption.ts),
   * finishes paused-state conversions a crash cut
   * off, then builds warm snapshots and pools.
   */
  async reattach(): Promise<void> {
    // A sandbox that could not be reattached lets go of the ports start published for it.
    await this.vms.adoption.run(async (id) => {
      if (!this.vms.live.has(id)) await this.ports.release(id);
    });
    if (this.shuttingDown) return;
    // A conversion the previous daemon left unfinished: its helper QEMU was an orphan (beforeServing); the rest is redone.
    await this.pausing.restartConversions();
    await this.startAfterHostRestart();
    for (const template of await this.store.listTemplates()) void this.warm.prepareWarmSnapshot(template);
  }

  /** Lets go of every sandbox's VM without stopping it (a new daemon adopts them); stops warm-pool VMs. */
  async shutdown(): Promise<void> {
    clearInterval(this.livenessTimer);
    clearInterval(this.reaperTimer);
    this.shuttingDown = true;
    await this.vms.adoption.close();
    for (const vm of this.vms.live.values()) vm.detach();
    this.vms.live.clear();
    await this.ports.releaseAll();
    await this.pausedMemory.cancelAll();
    await this.warm.close();
    await this.networks.stop();
  }

  /** A VM for a template's warm pool (see create.ts); templates call it, this manager never does. */
  async restoreIntoPool(snapshot: WarmSnapshot): Promise<PooledVm> {
    return await this.creator.restoreIntoPool(snapshot);
  }

  async create(request: CreateSandboxRequest): Promise<Sandbox> {
    return await this.get(await this.creator.create(request));
  }

  async pause(idOrName: string, reason = 'user'): Promise<Sandbox> {
    assertDiskRoom(this.config, 'pause a sandbox', [this.config.stateDir]);
    return await this.get(await this.metrics.timeOperation('pause', () => this.pausing.pause(idOrName, reason)));
  }

  async resume(idOrName: string): Promise<Sandbox> {
    const record = await this.vms.require(idOrName);
    const resume = () => this.metrics.timeOperation('resume', () => this.pausing.resume(record.id));
    // A paused sandbox holds no memory: resuming it is admitted like a create (resuming anything else is refused there).
    return await this.get(await (record.state === 'paused' ? this.creator.memory.whileReserved(record.memory_mib, resume) : resume()));
  }

  /** Stops a running or paused sandbox: its VM ends, its disk stays; it uses no memory until started. */
  async stop(idOrName: string, reason = 'user'): Promise<Sandbox> {
    return await this.get(await this.metrics.timeOperation('stop', () => this.stopping.stop(idOrName, reason)));
  }

  /** Boots a stopped sandbox from its own disk; admitted like a create. */
  async start(idOrName: string, reason = 'user'): Promise<Sandbox> {
    const record = await this.vms.require(idOrName);
    assertDiskRoom(this.config, 'start a sandbox', [this.config.stateDir]);
    const start = () => this.metrics.timeOperation('start', () => this.stopping.start(record.id, reason));
    return await this.get(await (record.state === 'stopped' ? this.creator.memory.whileReserved(record.memory_mib, start) : start()));
  }

  /** Stops a running sandbox and starts it again (a stopped one is just started). */
  async restart(idOrName: string): Promise<Sandbox> {
    const record = await this.vms.require(idOrName);
    if (record.state === 'running') await this.stopping.stop(record.id);
    return await this.start(record.id);
  }

  /** A stopped sandbox's CPUs, memory and disk from its next start. */
  async setResources(idOrName: string, request: SetResourcesRequest): Promise<Sandbox> {
    const record = await this.vms.require(idOrName);
    if (request.vcpus !== undefined || request.memoryMiB !== undefined)
      this.creator.validateResources(request.vcpus ?? record.vcpus, request.memoryMiB ?? record.memory_mib);
    await this.stopping.setResources(record, request);
    this.log.info({ sandbox: record.id, ...request }, 'sandbox resources changed');
    return await this.get(record.id);
  }

  /**
   * After a host reboot: starts again each sandbox that was running when the
   * host went down (adoption stopped it with the reason host_restart), unless
   * its lifetime ran out meanwhile: then its timeout action is done instead.
   */
  private async startAfterHostRestart(): Promise<void> {
    const now = new Date().toISOString();
    for (const record of await this.store.sandboxesInStates(['stopped'])) {
      if (this.shuttingDown) return;
      if (record.desired_state !== 'running' || record.state_reason !== 'host_restart') continue;
      const expired = record.expires_at !== null && record.expires_at <= now;
      const action = expired ? record.on_timeout : 'start';
      this.log.info({ sandbox: record.id, action }, 'bringing back a sandbox that ran before the host restarted');
      const done =
        action === 'kill'
          ? this.remove(record.id, 'timeout')
          : action === 'start'
            ? this.start(record.id, 'host_restart')
            : // Nothing of its memory survived the reboot: a pause at timeout becomes a stop, its disk kept.
              this.stopping.stop(record.id, 'timeout');
      await done.catch((err: unknown) => this.log.error({ sandbox: record.id, err: errorMessage(err) }, `could not ${action} it`));
    }
  }

  async fork(idOrName: string, count: number): Promise<Sandbox[]> {
    assertDiskRoom(this.config, 'fork a sandbox', [this.config.stateDir]);
    const forks: Sandbox[] = [];
    for (const id of await this.metrics.timeOperation('fork', () => this.forks.fork(idOrName, count))) forks.push(await this.get(id));
    return forks;
  }

  async snapshot(idOrName: string, templateName: string): Promise<TemplateRecord> {
    assertDiskRoom(this.config, 'snapshot a sandbox', [this.config.stateDir, this.config.cacheDir]);
    return await this.metrics.timeOperation('snapshot', () => this.forks.snapshot(idOrName, templateName));
  }

  async list(includeKilled: boolean): Promise<Sandbox[]> {
    return (await this.store.listSandboxes({ includeKilled })).map((r) => this.toApi(r));
  }

  async get(idOrName: string): Promise<Sandbox> {
    const record = await this.vms.require(idOrName);
    const history = await this.store.history(record.id);
    const vm = this.vms.live.get(record.id);
    const memoryUse = vm ? vmMemoryUse(vm.pid) : undefined;
    return {
      ...this.toApi(record),
      ...(memoryUse ? { memoryUse } : {}),
      history: history.map((h) => ({
        state: h.state as SandboxState,
        reason: h.reason,
        ...(h.message ? { message: h.message } : {}),
        at: h.at,
      })),
    };
  }

  private toApi(record: SandboxRecord): Sandbox {
    const vm = this.vms.live.get(record.id);
    const reattaching = this.vms.adoption.isReattaching(record.id);
    const pid = vm?.pid ?? (reattaching ? this.vms.adoption.reattachingPid(record.id) : undefined);
    return {
      id: record.id,
      name: record.name,
      template: record.template,
      state: record.state as SandboxState,
      stateReason: record.state_reason,
      ...(reattaching ? { stateMessage: REATTACHING_MESSAGE } : record.state_message ? { stateMessage: record.state_message } : {}),
      vcpus: record.vcpus,
      memoryMiB: record.memory_mib,
      accel: record.accel as 'kvm' | 'tcg',
      metadata: JSON.parse(record.metadata) as Record<string, string>,
      createdAt: record.created_at,
      ...(record.boot_ms !== null ? { bootMs: record.boot_ms } : {}),
      ...(pid !== undefined ? { pid } : {}),
      timeoutMs: record.timeout_ms,
      onTimeout: record.on_timeout,
      desiredState: record.desired_state,
      ...(record.expires_at ? { expiresAt: record.expires_at } : {}),
      network: this.networks.describe(record.id, egressPolicyOf(record)),
      ports: this.ports.of(record.id),
      domain: this.config.domain,
      trafficAccessToken: this.trafficTokens.trafficTokenFor(record.id),
      ...(record.ssh_host_keys !== null ? { sshHostKeys: JSON.parse(record.ssh_host_keys) as string[] } : {}),
    };
  }

  /** Stops the VM (if any) and removes the sandbox's files; the record stays as `killed`, with `reason`. */
  async remove(idOrName: string, reason = 'user'): Promise<void> {
    const record = await this.vms.require(idOrName);
    if (record.state === 'killed') return;
    if (record.state === 'starting') {
      throw new CapsuleError('sandbox_not_running', `sandbox ${record.id} is still starting`, {
        hint: 'remove it once its create request has returned',
      });
    }
    await this.ports.release(record.id, true);
    // One still being reattached is not waited for: its QEMU is stopped by pid.
    const unadoptedPid = await this.vms.adoption.cancel(record.id);
    if (unadoptedPid !== undefined) await this.vms.driver.kill(unadoptedPid);
    const vm = this.vms.live.get(record.id);
    if (vm) {
      await vm.stop();
      this.vms.live.delete(record.id);
    }
    await this.pausedMemory.cancel(record.id);
    await this.vms.removeVmFiles(record.id);
    fs.rmSync(this.vms.stateDir(record.id), { recursive: true, force: true });
    await this.store.transition(record.id, 'killed', reason, undefined, { expires_at: null });
  }

  /** Gives a running sandbox a new lifetime counted from now (0: none). */
  async setTimeout(idOrName: string, timeoutMs: number): Promise<Sandbox> {
    const { record } = await this.vms.runningVm(idOrName);
    await this.store.setTimeout(record.id, timeoutMs, expiryFrom(timeoutMs));
    return await this.get(record.id);
  }

  /** Restarts a running sandbox's timeout from now, keeping its length. */
  async keepAlive(idOrName: string): Promise<Sandbox> {
    const { record } = await this.vms.runningVm(idOrName);
    return await this.setTimeout(record.id, record.timeout_ms);
  }

  /**
   * Changes a sandbox's egress policy: at once on a running sandbox, on resume
   * for a paused one. The store is written only once the VM has it.
   */
  async setNetwork(idOrName: string, request: SetNetworkRequest): Promise<Sandbox> {
    const record = await this.vms.require(idOrName);
    const policy = egressPolicyFrom(request, this.networks.listsSupported, egressPolicyOf(record));
    if (record.state === 'running') {
      const { vm } = await this.vms.runningVm(record.id);
      await this.networks.apply(record.id, vm.handle, policy);
    } else if (record.state !== 'paused') {
      throw new CapsuleError('sandbox_not_running', `sandbox ${record.id} is ${record.state}`, {
        hint: 'the network of running and paused sandboxes can be changed',
      });
    }
    await this.store.setNetworkPolicy(record.id, egressPolicyColumns(policy));
    this.log.info({ sandbox: record.id, internet: policy.internet, allow: policy.allow, deny: policy.deny }, 'sandbox network changed');
    return await this.get(record.id);
  }

  /** Kills (or pauses or stops, if asked at create) running sandboxes whose timeout has passed; runs every second. */
  private async reapExpired(): Promise<void> {
    // A pause can take longer than a tick: the next tick must not start a second one.
    if (this.reaping) return;
    this.reaping = true;
    try {
      for (const record of await this.store.expiredSandboxes(new Date())) {
        this.log.info({ sandbox: record.id, timeoutMs: record.timeout_ms, action: record.on_timeout }, 'sandbox timed out');
        const done =
          record.on_timeout === 'pause'
            ? this.pause(record.id, 'timeout')
            : record.on_timeout === 'stop'
              ? this.stop(record.id, 'timeout')
              : this.remove(record.id, 'timeout');
        await done.catch((err: unknown) =>
          this.log.error({ sandbox: record.id, err: errorMessage(err) }, `could not ${record.on_timeout} a timed-out sandbox`),
        );
      }
    } finally {
      this.reaping = false;
    }
  }

  /**
   * Freezes a running sandbox's root disk as it is now and sends later writes
   * to a new qcow2 overlay at `file` (over the frozen one). Flush the guest
   * (`sync`) first. Template builds cache each step's disk this way.
   */
  async snapshotRootDisk(idOrName: string, file: string): Promise<void> {
    const { vm } = await this.vms.runningVm(idOrName);
    await vm.handle.snapshotRootDisk(file);
  }

  /** The agent of a running sandbox, for the API's proxy to it. */
  async agentOf(idOrName: string): Promise<{ id: string; agent: AgentClient; bulk: BulkChannel | undefined }> {
    const { record, vm } = await this.vms.runningVm(idOrName);
    return { id: record.id, agent: vm.agent, bulk: vm.bulk };
  }

  /** Exec events for a command; the sandbox's own env vars sit under the request's. */
  async execStream(idOrName: string, request: ExecRequest, signal: AbortSignal): Promise<AsyncGenerator<ExecEvent>> {
    const { record, vm } = await this.vms.runningVm(idOrName);
    const env = { ...(JSON.parse(record.env) as Record<string, string>), ...request.env };
    return this.timedToStart(execEvents(vm.agent, { ...request, env }, signal));
  }

  /** Passes an exec's events on, recording the time until its process started. */
  private async *timedToStart(events: AsyncGenerator<ExecEvent>): AsyncGenerator<ExecEvent> {
    const started = performance.now();
    for await (const event of events) {
      if (event.type === 'start') this.metrics.operationSeconds.observe({ operation: 'exec_start' }, secondsSince(started));
      yield event;
    }
  }

  async exec(idOrName: string, request: ExecRequest, signal: AbortSignal): Promise<ExecResult> {
    return await collectExec(await this.execStream(idOrName, request, signal));
  }

  /**
   * Starts a running sandbox's SSH server unless it runs already (ssh-server.ts)
   * and records the host keys the guest made for it, which clients pin.
   */
  async startSshServer(idOrName: string): Promise<SshServer> {
    const { record, vm } = await this.vms.runningVm(idOrName);
    const under = this.sshStarts.get(record.id);
    if (under) return await under;
    const start = (async () => {
      const request = { cmd: ['/bin/sh', '-c', START_SSH_SERVER_SCRIPT], user: 'root', timeoutMs: SSH_START_TIMEOUT_MS };
      const result = await collectExec(
        execEvents(vm.agent, request, AbortSignal.timeout(2 * SSH_START_TIMEOUT_MS)),
        SSH_START_OUTPUT_LIMIT_BYTES,
      );
      const hostKeys = hostKeysFromStart(result, record.id);
      if (record.ssh_host_keys !== JSON.stringify(hostKeys)) await this.store.setSshHostKeys(record.id, hostKeys);
      return { hostKeys };
    })();
    this.sshStarts.set(record.id, start);
    try {
      return await start;
    } finally {
      this.sshStarts.delete(record.id);
    }
  }

  /** The console's last MiB or two; with `sinceMs`, only what the guest wrote from then on. */
  async consoleLog(idOrName: string, sinceMs?: number): Promise<Buffer> {
    const record = await this.vms.require(idOrName);
    return readConsoleLog(this.vms.consoleLogFile(record.id), undefined, sinceMs);
  }
}
