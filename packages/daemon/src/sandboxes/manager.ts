// The sandbox lifecycle: create (claim a warm-pool VM, restore the template's
// warm snapshot, or boot cold), list, exec, remove; and, at daemon start,
// adopting VMs that kept running while the daemon was down. The store says
// what each sandbox is; the OS (pid files, /proc) says what is true now, and
// the two are reconciled here, nowhere else.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { CreateSandboxRequest, ExecEvent, ExecRequest, ExecResult, Sandbox, SandboxState, SetNetworkRequest } from '@capsule/protocol';
import { limits } from '@capsule/protocol';
import type { DaemonConfig } from '../config.js';
import { CapsuleError, errorMessage } from '../errors.js';
import { runCommand, tailOfFile } from '../launcher.js';
import type { Logger } from '../log.js';
import type { SandboxRecord, Store, TemplateRecord } from '../store/store.js';
import { writeFileAtomic } from '../guest/files.js';
import { saveVmState } from '../vmm/migration.js';
import { canFreeze, frozenFiles } from '../vmm/freeze.js';
import { PausedMemoryConverter } from './paused-memory.js';
import { freezeRunningVm, loadSnapshotTemplate, removeSnapshotTemplate, snapshotTemplateDir, snapshotToTemplate } from './snapshot.js';
import { buildWarmSnapshot, loadWarmSnapshot, warmSnapshotInputs, type WarmSnapshot } from '../templates/warm-snapshot.js';
import { templateImageDefaults, templateService, type TemplateImageDefaults } from '../images/image-records.js';
import { startTemplateService } from '../templates/template-service.js';
import type { AccelChoice } from '../vmm/accel.js';
import { readConsoleLog } from '../vmm/console-log.js';
import { QmpClient } from '../vmm/qmp.js';
import { findRunningVm, VmRuntimePaths, type VmSpec } from '../vmm/qemu.js';
import { hostTscKhz } from '../vmm/tsc.js';
import { collectExec, execEvents } from './exec.js';
import { hostnameFor, newSandboxId } from './ids.js';
import { AGENT_PORT_DEVICE_ID, LiveVm } from './live-vm.js';
import type { AgentClient } from '../agent/client.js';
import type { BulkChannel } from '../agent/bulk-channel.js';
import { admissionProblem, readHostMemory, vmMemoryUse } from './memory.js';
import { WarmPool, type PooledVm } from './warm-pool.js';
import { egressPolicyColumns, egressPolicyFrom, egressPolicyOf, OPEN_POLICY, type EgressPolicy } from '../network/egress-policy.js';
import { SandboxNetworks } from '../network/sandbox-networks.js';
import { PublishedPorts } from './published-ports.js';
import { Tunnels } from './tunnels.js';

const DEFAULT_TEMPLATE = 'base';
const LIVENESS_INTERVAL_MS = 2000;
const RESTORE_TIMEOUT_MS = 60_000;
/** Fork copies restored at once: a restore keeps a core busy, so more than the host has only queues. */
const FORK_RESTORE_CONCURRENCY = Math.max(1, Math.min(4, os.cpus().length));
const REAPER_INTERVAL_MS = 1000;

/**
 * The machine to load a whole saved state (pause, fork) into: the same one,
 * waiting for the state. The state carries all of RAM, so a memory backend
 * keeps its name but needs no file.
 */
function wholeStateRestoreSpec(machine: VmSpec): VmSpec {
  return { ...machine, incoming: true, ...(machine.memoryBackend ? { memoryBackend: { type: 'ram' as const } } : {}) };
}

/** When a timeout of `timeoutMs` started now runs out; null for none. */
function expiryFrom(timeoutMs: number): string | null {
  return timeoutMs > 0 ? new Date(Date.now() + timeoutMs).toISOString() : null;
}

export type WarmSnapshotState = 'ready' | 'building' | 'failed' | 'disabled';


export class SandboxManager {
  private readonly live = new Map<string, LiveVm>();
  private reaping = false;
  private readonly warm = new Map<string, { state: WarmSnapshotState; snapshot?: WarmSnapshot; error?: string }>();
  private readonly pools = new Map<string, WarmPool>();
  private livenessTimer: NodeJS.Timeout | undefined;
  private readonly pausedMemory: PausedMemoryConverter;
  /** Sandboxes being frozen for a fork or a snapshot: one freeze (or pause) of a VM at a time. */
  private readonly freezing = new Set<string>();
  private reaperTimer: NodeJS.Timeout | undefined;
  private readonly networks: SandboxNetworks;
  /** Connections to ports inside sandboxes, over their agents (see tunnels.ts). */
  readonly tunnels = new Tunnels((idOrName) => this.agentOf(idOrName));
  private readonly ports: PublishedPorts;

  constructor(
    private readonly store: Store,
    private readonly config: DaemonConfig,
    private readonly accel: AccelChoice,
    private readonly log: Logger,
    /** Part of every warm snapshot's key: a snapshot restores only into the QEMU that took it. */
    private readonly qemuVersion: string,
    /** Each sandbox's traffic access token, for its ports (see api/credentials.ts). */
    private readonly trafficTokens: { trafficTokenFor(id: string): string },
  ) {
    this.networks = new SandboxNetworks({ mode: config.network, tapPool: config.tapPool, stateDir: config.stateDir }, store, log);
    this.ports = new PublishedPorts(store, this.tunnels, log);
    this.pausedMemory = new PausedMemoryConverter(this.freezeRuntimeDir, log);
  }

  get runningCount(): number {
    return this.live.size;
  }

  runtimePaths(id: string): VmRuntimePaths {
    return new VmRuntimePaths(path.join(this.config.runtimeDir, 'sandboxes', id));
  }

  stateDir(id: string): string {
    return path.join(this.config.stateDir, 'sandboxes', id);
  }

  /** Adopts VMs that outlived the previous daemon and removes what no sandbox owns. */
  async start(): Promise<void> {
    await this.ports.load();
    for (const record of await this.store.sandboxesInStates(['starting', 'running'])) {
      await this.adopt(record);
    }
    for (const record of await this.store.sandboxesInStates(['running'])) {
      // A port taken while the daemon was down cannot fail anything now: the sandbox runs on without it.
      await this.ports.bind(record.id).catch((err: unknown) => this.log.error({ sandbox: record.id, err: errorMessage(err) }, 'could not publish a port again'));
    }
    this.removeOrphans();
    // Networks of sandboxes that neither run nor wait paused are leftovers (a crash, warm-pool VMs).
    await this.networks.start(async (id) => this.live.has(id) || (await this.store.getSandbox(id))?.state === 'paused');
    this.livenessTimer = setInterval(() => this.checkLiveness(), LIVENESS_INTERVAL_MS);
    this.livenessTimer.unref();
    this.reaperTimer = setInterval(() => void this.reapExpired(), REAPER_INTERVAL_MS);
    this.reaperTimer.unref();
    for (const template of await this.store.listTemplates()) void this.prepareWarmSnapshot(template);
  }

  /** Lets go of every sandbox's VM without stopping it (a new daemon adopts them); stops warm-pool VMs. */
  async shutdown(): Promise<void> {
    clearInterval(this.livenessTimer);
    clearInterval(this.reaperTimer);
    for (const vm of this.live.values()) vm.detach();
    this.live.clear();
    await this.ports.releaseAll();
    await this.pausedMemory.cancelAll();
    await Promise.all([...this.pools.values()].map((pool) => pool.close()));
  }

  /** Whether a template has a warm snapshot: `ready`, `building`, `failed` or `disabled`. */
  warmSnapshotState(template: string): WarmSnapshotState {
    return this.config.warmSnapshots ? (this.warm.get(template)?.state ?? 'building') : 'disabled';
  }

  /** A template's warm snapshot: its state, its folder once ready, why it failed if it did. */
  warmSnapshotInfo(template: string): { state: WarmSnapshotState; dir?: string; error?: string } {
    const warm = this.warm.get(template);
    return { state: this.warmSnapshotState(template), ...(warm?.snapshot ? { dir: warm.snapshot.dir } : {}), ...(warm?.error ? { error: warm.error } : {}) };
  }

  /** Starts serving a template added while the daemon runs (one built from an image): its warm snapshot is built now. */
  addTemplate(template: TemplateRecord): void {
    void this.prepareWarmSnapshot(template);
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

  /** Loads or builds a template's warm snapshot, then fills its warm pool. Failures leave the template cold. */
  private async prepareWarmSnapshot(template: TemplateRecord): Promise<void> {
    if (!this.config.warmSnapshots) return;
    this.warm.set(template.name, { state: 'building' });
    try {
      const snapshotDir = await snapshotTemplateDir(this.store, template.name);
      // A template made by `capsule snapshot` has nothing to boot: its snapshot is loaded as it is, or the template is unusable.
      const snapshot = snapshotDir !== undefined ? loadSnapshotTemplate(snapshotDir, this.qemuVersion) : await this.loadOrBuildWarmSnapshot(template);
      this.warm.set(template.name, { state: 'ready', snapshot });
      if (this.config.warmPoolSize > 0) {
        const pool = new WarmPool(template.name, this.config.warmPoolSize, () => this.restoreIntoPool(snapshot), this.log, () =>
          this.admit(snapshot.memoryMiB).then(
            () => true,
            () => false,
          ),
        );
        this.pools.set(template.name, pool);
        pool.fill();
      }
    } catch (err) {
      this.warm.set(template.name, { state: 'failed', error: errorMessage(err) });
      this.log.error({ template: template.name, err: errorMessage(err) }, 'no warm snapshot; sandboxes of this template boot cold');
    }
  }

  /** The warm snapshot of a template's current inputs: from the shared cache, else built by booting the template once. */
  private async loadOrBuildWarmSnapshot(template: TemplateRecord): Promise<WarmSnapshot> {
    const inputs = await warmSnapshotInputs(template, this.accel.accel, this.qemuVersion, await templateService(this.store, template.name));
    return (
      loadWarmSnapshot(this.config.cacheDir, inputs) ??
      (await buildWarmSnapshot(this.config.cacheDir, this.config.runtimeDir, inputs, this.log).catch((err: unknown) => {
        // Another daemon sharing the cache may have finished the same build first.
        const built = loadWarmSnapshot(this.config.cacheDir, inputs);
        if (built) return built;
        throw err;
      }))
    );
  }

  private async adopt(record: SandboxRecord): Promise<void> {
    const paths = this.runtimePaths(record.id);
    const pid = findRunningVm(paths, record.id);
    if (record.state === 'starting') {
      if (pid !== undefined) await LiveVm.kill(pid);
      await this.removeVmFiles(record.id);
      await this.store.transition(record.id, 'error', 'daemon_restart', 'capsuled stopped while this sandbox was starting');
      return;
    }
    if (pid === undefined) {
      const reason = fs.existsSync(paths.dir) ? 'crash' : 'host_restart';
      const message = reason === 'crash' ? 'the VM exited while capsuled was not running' : 'the host restarted';
      await this.removeVmFiles(record.id);
      await this.store.transition(record.id, 'error', reason, message);
      this.log.warn({ sandbox: record.id, reason }, 'sandbox lost while the daemon was down');
      return;
    }
    try {
      const qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: 5000 });
      // A machine recorded before the bulk port, or none at all: HTTP/2 only.
      const bulkPort = fs.existsSync(this.machineFile(record.id)) && this.readMachine(record.id).bulkPort === true;
      const vm = this.track(record.id, new LiveVm(pid, qmp, paths, this.consoleLogFile(record.id), bulkPort));
      await vm.waitForHealthyAgent(Date.now() + 15_000);
      vm.booting = false;
      this.log.info({ sandbox: record.id, pid }, 'adopted running sandbox');
    } catch (err) {
      this.log.error({ sandbox: record.id, err: errorMessage(err) }, 'could not adopt sandbox; stopping it');
      await this.fail(record.id, 'adopt_failed', `capsuled could not reattach to the VM: ${errorMessage(err)}`);
    }
  }

  private removeOrphans(): void {
    const dir = path.join(this.config.runtimeDir, 'sandboxes');
    if (!fs.existsSync(dir)) return;
    for (const id of fs.readdirSync(dir)) {
      if (this.live.has(id)) continue;
      const pid = findRunningVm(this.runtimePaths(id), id);
      // Left over by a crashed daemon: a sandbox being created, or a warm-pool VM.
      if (pid !== undefined) this.log.warn({ sandbox: id, pid }, 'killing a VM that no sandbox owns');
      void (pid !== undefined ? LiveVm.kill(pid) : Promise.resolve()).then(() => {
        fs.rmSync(path.join(dir, id), { recursive: true, force: true });
        void this.store.getSandbox(id).then((record) => {
          if (!record) fs.rmSync(this.stateDir(id), { recursive: true, force: true });
        });
      });
    }
  }

  private consoleLogFile(id: string): string {
    return path.join(this.stateDir(id), 'console.log');
  }

  /** Registers a sandbox's VM and watches for it exiting behind the daemon's back. */
  private track(id: string, vm: LiveVm): LiveVm {
    this.live.set(id, vm);
    vm.qmp.on('close', () => {
      if (!vm.stopping) void this.onVmGone(id, vm);
    });
    return vm;
  }

  private checkLiveness(): void {
    for (const [id, vm] of this.live) {
      if (!vm.stopping && !vm.alive) void this.onVmGone(id, vm);
    }
  }

  /** The VM went away without the daemon asking: record it as a crash and clean up. */
  private async onVmGone(id: string, vm: LiveVm): Promise<void> {
    if (this.live.get(id) !== vm || vm.stopping || vm.booting) return;
    vm.stopping = true;
    const qemuLog = tailOfFile(this.runtimePaths(id).qemuLog, 1024).trim();
    const detail = qemuLog ? `: ${qemuLog.split('\n').slice(-3).join(' | ')}` : '';
    this.log.warn({ sandbox: id, pid: vm.pid }, 'VM exited unexpectedly');
    await this.fail(id, 'crash', `the VM exited unexpectedly${detail}`);
  }

  /** Stops whatever is left of a VM, removes its files (not its console log) and records the error. */
  private async fail(id: string, reason: string, message: string): Promise<void> {
    await this.ports.release(id, true);
    const vm = this.live.get(id);
    if (vm) {
      await vm.stop();
      this.live.delete(id);
    }
    await this.removeVmFiles(id);
    await this.store.transition(id, 'error', reason, message);
  }

  /** Removes what a VM used besides its console log: its network, runtime folder, disk overlay and saved state. */
  private async removeVmFiles(id: string): Promise<void> {
    await this.networks.release(id).catch((err: unknown) => this.log.error({ sandbox: id, err: errorMessage(err) }, 'could not free the network of a sandbox'));
    fs.rmSync(this.runtimePaths(id).dir, { recursive: true, force: true });
    for (const file of ['overlay.qcow2', 'pause.state', 'pause.state.tmp', 'paused', 'paused.tmp']) fs.rmSync(path.join(this.stateDir(id), file), { recursive: true, force: true });
  }

  async create(request: CreateSandboxRequest): Promise<Sandbox> {
    const templateName = request.template ?? DEFAULT_TEMPLATE;
    const template = await this.store.getTemplate(templateName);
    if (!template) {
      const known = (await this.store.listTemplates()).map((t) => t.name);
      throw new CapsuleError('template_not_found', `template "${templateName}" does not exist`, {
        hint: known.length > 0 ? `known templates: ${known.join(', ')}` : 'run `capsuled prepare` to build the base template',
      });
    }
    for (const file of [template.kernel, template.initramfs, template.kit, template.rootfs]) {
      if (!fs.existsSync(file)) {
        throw new CapsuleError('template_not_ready', `template "${templateName}" is missing ${file}`, { hint: 'run `capsuled prepare` to rebuild it' });
      }
    }
    const vcpus = request.vcpus ?? template.default_vcpus;
    const memoryMiB = request.memoryMiB ?? template.default_memory_mib;
    this.validateResources(vcpus, memoryMiB);
    const egress = egressPolicyFrom(request, this.networks.listsSupported);
    // A template built from an image gives its config's Env, User and WorkingDir; the request's env wins.
    const imageDefaults = await templateImageDefaults(this.store, templateName);
    const env = imageDefaults ? { ...imageDefaults.env, ...request.env } : request.env;
    if (request.name !== undefined && (await this.store.getSandbox(request.name))) {
      throw new CapsuleError('name_taken', `a sandbox named "${request.name}" already exists`, { hint: 'pick another name or remove that sandbox first' });
    }

    const createdAt = new Date();
    const snapshot = this.usableSnapshot(templateName, vcpus, memoryMiB);
    if (!snapshot) await this.refuseColdSnapshotTemplate(templateName);
    const pool = snapshot ? this.pools.get(templateName) : undefined;
    await this.admit(pool && pool.readyCount > 0 ? 0 : memoryMiB);
    // Host ports are bound before anything starts: a conflict refuses the create here.
    const ports = await this.ports.reserve(request.ports);
    const pooled = pool?.take();
    const id = pooled?.id ?? newSandboxId();
    const timeoutMs = request.timeoutMs ?? limits.defaultTimeoutMs;
    await this.store.insertSandbox({
      id,
      name: request.name ?? null,
      template: templateName,
      state: 'starting',
      state_reason: 'user',
      state_message: null,
      vcpus,
      memory_mib: memoryMiB,
      accel: this.accel.accel,
      metadata: JSON.stringify(request.metadata ?? {}),
      env: JSON.stringify(env ?? {}),
      created_at: createdAt.toISOString(),
      boot_ms: null,
      timeout_ms: timeoutMs,
      on_timeout: request.onTimeout ?? 'kill',
      // The clock starts when the sandbox runs (below), not while it boots.
      expires_at: null,
      ...egressPolicyColumns(egress),
    }).catch(async (err: unknown) => {
      // Nothing of this sandbox is recorded: give back what it took.
      await ports.release();
      await pooled?.discard();
      throw err;
    });
    try {
      await this.ports.commit(id, ports);
      let how: string;
      if (pooled) {
        this.track(id, pooled.vm);
        // Restored before this request said what its network may do.
        await this.networks.apply(id, pooled.vm.qmp, egress);
        how = `restored from the warm snapshot of ${templateName} ahead of time`;
      } else if (snapshot) {
        await this.restoreVm(id, snapshot, egress, (vm) => this.track(id, vm)).catch((err: unknown) => {
          // The snapshot itself may be bad: later creates boot cold rather than fail the same way.
          this.abandonWarmSnapshot(templateName, err);
          throw err;
        });
        how = `restored from the warm snapshot of ${templateName}`;
      } else {
        await this.bootVm(id, template, vcpus, memoryMiB, egress);
        how = 'booted cold';
      }
      const vm = this.live.get(id);
      if (!vm) throw new Error('the VM went away while starting');
      const startedMs = Date.now() - createdAt.getTime();
      // A restored guest is a copy of the template VM: tell it who it is now.
      if (snapshot || imageDefaults) await vm.initGuest(this.initRequest(id, env, imageDefaults));
      // A restored sandbox has the template's START running already; a cold one starts it now.
      const service = snapshot ? undefined : await templateService(this.store, templateName);
      if (service) await startTemplateService(vm.agent, { ...service, env: env ?? {} });
      const bootMs = Date.now() - createdAt.getTime();
      await this.store.transition(id, 'running', 'user', how, { boot_ms: bootMs, expires_at: expiryFrom(timeoutMs) });
      this.log.info({ sandbox: id, pid: vm.pid, bootMs, startedMs, initMs: bootMs - startedMs, how }, 'sandbox running');
    } catch (err) {
      await ports.release();
      const consoleTail = readConsoleLog(this.consoleLogFile(id), 2048).toString('utf8').trim();
      const message = errorMessage(err);
      await this.fail(id, 'start_failed', consoleTail ? `${message}\nguest console:\n${consoleTail}` : message);
      if (err instanceof CapsuleError && err.code === 'template_start_failed') throw err;
      throw new CapsuleError('vm_start_failed', `sandbox ${id} failed to start: ${message.split('\n')[0]}`, {
        hint: `see \`capsule logs ${id}\` for the guest console`,
        cause: err,
      });
    }
    return await this.get(id);
  }

  /** A template made by `capsule snapshot` only restores: its disk is a moment of a running system, its memory the point of it. */
  private async refuseColdSnapshotTemplate(template: string): Promise<void> {
    if ((await snapshotTemplateDir(this.store, template)) === undefined) return;
    const warm = this.warm.get(template);
    if (warm?.snapshot) {
      throw new CapsuleError('invalid_argument', `template "${template}" is a snapshot of ${warm.snapshot.vcpus} vCPU(s) and ${warm.snapshot.memoryMiB} MiB; sandboxes from it keep those`, {
        hint: 'leave out --cpus and --memory',
      });
    }
    throw new CapsuleError('template_not_ready', `template "${template}" cannot be restored: ${warm?.error ?? this.warmSnapshotState(template)}`, {
      hint: warm?.state === 'failed' ? `remove it with \`capsule template rm ${template}\`` : 'try again in a moment',
    });
  }

  /**
   * A restore from this snapshot failed (a corrupt or missing file): later
   * creates of the template boot cold instead of failing the same way, until a
   * daemon restart loads or rebuilds the snapshot.
   */
  private abandonWarmSnapshot(template: string, err: unknown): void {
    this.warm.set(template, { state: 'failed', error: errorMessage(err) });
    const pool = this.pools.get(template);
    this.pools.delete(template);
    void pool?.close();
    this.log.error({ template, err: errorMessage(err) }, 'restoring the warm snapshot failed; this template boots cold from now on');
  }

  private machineFile(id: string): string {
    return path.join(this.stateDir(id), 'machine.json');
  }

  private pauseStateFile(id: string): string {
    return path.join(this.stateDir(id), 'pause.state');
  }

  /**
   * Starts QEMU for sandbox `id` with its NIC plugged into the sandbox's own
   * network backend (never one a spec was copied from: a TAP device is one
   * VM's), first recording its machine: a resume must rebuild the same one.
   */
  private async launch(id: string, spec: Omit<VmSpec, 'nic'>): Promise<LiveVm> {
    const machine: VmSpec = { ...spec, nic: await this.networks.backendFor(id) };
    writeFileAtomic(this.machineFile(id), JSON.stringify({ ...machine, incoming: false }), 0o600);
    return await LiveVm.launch(machine, this.runtimePaths(id), this.consoleLogFile(id));
  }

  /** A paused sandbox's state as a memory file + device state, once converted (paused-memory.ts). */
  private pausedDir(id: string): string {
    return path.join(this.stateDir(id), 'paused');
  }

  private readMachine(id: string): VmSpec {
    return JSON.parse(fs.readFileSync(this.machineFile(id), 'utf8')) as VmSpec;
  }

  /** Where helper VMs of a freeze keep their sockets: among the sandboxes', so a daemon crash leaves no orphan unremoved. */
  private get freezeRuntimeDir(): string {
    return path.join(this.config.runtimeDir, 'sandboxes');
  }

  /**
   * Saves the whole VM (memory, devices) into the sandbox's folder, written to
   * a temporary name, fsynced and renamed, then ends QEMU: a paused sandbox
   * holds no RAM. Its disk overlay stays where it is. If saving fails, the VM
   * is resumed as it was, or recorded as failed if QEMU died meanwhile.
   * A stream to a file is written in a third of the time it takes to freeze
   * the memory into a mappable file (vmm/freeze.ts), so pause writes the
   * stream and the conversion runs afterwards (paused-memory.ts).
   */
  async pause(idOrName: string, reason = 'user'): Promise<Sandbox> {
    const { record, vm } = await this.runningVm(idOrName);
    const id = record.id;
    if (vm.stopping || this.freezing.has(id)) throw new CapsuleError('sandbox_not_running', `sandbox ${id} is being paused, stopped, forked or snapshotted`, { hint: 'wait for that to finish' });
    const target = this.pauseStateFile(id);
    const temp = `${target}.tmp`;
    const machine = this.readMachine(id);
    vm.stopping = true;
    try {
      await this.saveWholeVm(vm, temp);
      fs.renameSync(temp, target);
    } catch (err) {
      fs.rmSync(temp, { force: true });
      if (vm.alive && !vm.qmp.isClosed) {
        await vm.qmp.execute('cont').catch(() => undefined);
        vm.stopping = false;
        throw new CapsuleError('internal', `pausing sandbox ${id} failed, it runs on: ${errorMessage(err)}`);
      }
      await this.fail(id, 'crash', `the VM exited while it was being paused: ${errorMessage(err)}`);
      throw new CapsuleError('sandbox_not_running', `sandbox ${id} died while it was being paused`, { hint: `see \`capsule logs ${id}\`` });
    }
    await vm.stop();
    this.live.delete(id);
    await this.ports.release(id);
    fs.rmSync(this.runtimePaths(id).dir, { recursive: true, force: true });
    await this.store.transition(id, 'paused', reason, undefined, { expires_at: null });
    if (canFreeze(machine)) this.pausedMemory.start(id, machine, target, this.pausedDir(id));
    return await this.get(id);
  }

  /**
   * Stops the guest and writes its memory and devices to `file` (fsynced,
   * owner-only). The agent connection is closed first: no session of it may be
   * mid-write in the guest when it is frozen.
   */
  private async saveWholeVm(vm: LiveVm, file: string): Promise<void> {
    vm.agent.close();
    await saveVmState(vm.qmp, file, false);
    const fd = fs.openSync(file, 'r');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.chmodSync(file, 0o600);
  }

  /**
   * Starts `count` sandboxes that each continue from this moment of a running
   * sandbox. The source stops only while its memory and devices are frozen
   * into one memory file and its disk overlay is copied, then runs on; every
   * fork maps that file privately (so they share its pages) with its own copy
   * of the disk, then /init gives it its own hostname, entropy and clock.
   */
  async fork(idOrName: string, count: number): Promise<Sandbox[]> {
    const { record, vm } = await this.runningVm(idOrName);
    await this.admit(record.memory_mib * count);
    return await this.whileFreezing(record.id, vm, () => this.forkFrozen(record, vm, count));
  }

  /** Runs `work` (which freezes the VM) unless the VM is already being frozen, paused or stopped. */
  private async whileFreezing<T>(id: string, vm: LiveVm, work: () => Promise<T>): Promise<T> {
    if (vm.stopping || this.freezing.has(id)) {
      throw new CapsuleError('sandbox_not_running', `sandbox ${id} is being paused, stopped, forked or snapshotted`, { hint: 'wait for that to finish' });
    }
    this.freezing.add(id);
    try {
      return await work();
    } finally {
      this.freezing.delete(id);
    }
  }

  private async forkFrozen(record: SandboxRecord, vm: LiveVm, count: number): Promise<Sandbox[]> {
    const work = path.join(this.config.stateDir, 'forks', `${record.id}-${Date.now()}`);
    fs.mkdirSync(work, { recursive: true, mode: 0o700 });
    const disk = path.join(work, 'overlay.qcow2');
    const copyDisk = () => fs.copyFileSync(path.join(this.stateDir(record.id), 'overlay.qcow2'), disk);
    try {
      const machine = this.readMachine(record.id);
      let restoreSpec: (id: string, overlay: string) => VmSpec;
      let stateFile: string;
      let ramInState: boolean;
      if (canFreeze(machine)) {
        const frozen = await freezeRunningVm(vm, machine, path.join(work, 'frozen'), this.freezeRuntimeDir, copyDisk);
        restoreSpec = (id, overlay) => ({ ...machine, id, rootDisk: overlay, memoryBackend: { type: 'file', path: frozen.memory, shared: false }, incoming: true });
        stateFile = frozen.state;
        ramInState = false;
      } else {
        stateFile = path.join(work, 'vm.state');
        try {
          await this.saveWholeVm(vm, stateFile);
          // The VM is stopped and its disk flushed: the overlay is consistent with the saved memory.
          copyDisk();
        } finally {
          await vm.qmp.execute('cont').catch(() => undefined);
          await vm.waitForHealthyAgent(Date.now() + RESTORE_TIMEOUT_MS).catch(() => undefined);
        }
        restoreSpec = (id, overlay) => wholeStateRestoreSpec({ ...machine, id, rootDisk: overlay });
        ramInState = true;
      }
      // Restoring keeps a core busy: one per core at a time.
      const forks: Sandbox[] = [];
      let next = 0;
      let failure: unknown;
      const worker = async () => {
        while (next < count && failure === undefined) {
          next++;
          try {
            forks.push(await this.startFork(record, disk, (id, overlay) => restoreSpec(id, overlay), stateFile, ramInState));
          } catch (err) {
            failure ??= err;
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(count, FORK_RESTORE_CONCURRENCY) }, worker));
      // Forks that started before a failure stay, as they did when forks started one by one.
      if (failure !== undefined) throw failure;
      return forks;
    } finally {
      // Forks keep their private mappings of the memory file; nothing reads it again.
      fs.rmSync(work, { recursive: true, force: true });
    }
  }

  private async startFork(source: SandboxRecord, disk: string, spec: (id: string, overlay: string) => VmSpec, stateFile: string, ramInState: boolean): Promise<Sandbox> {
    const id = newSandboxId();
    const createdAt = new Date();
    await this.store.insertSandbox({
      ...source,
      id,
      name: null,
      state: 'starting',
      state_reason: 'user',
      state_message: null,
      created_at: createdAt.toISOString(),
      boot_ms: null,
      expires_at: null,
    });
    try {
      fs.mkdirSync(this.stateDir(id), { recursive: true, mode: 0o700 });
      const overlay = path.join(this.stateDir(id), 'overlay.qcow2');
      fs.copyFileSync(disk, overlay);
      const vm = this.track(id, await this.launch(id, spec(id, overlay)));
      await vm.restore(stateFile, Date.now() + RESTORE_TIMEOUT_MS, ramInState, () => this.networks.apply(id, vm.qmp, egressPolicyOf(source)));
      await vm.initGuest(this.initRequest(id, undefined));
      await this.store.transition(id, 'running', 'user', `forked from ${source.id}`, {
        boot_ms: Date.now() - createdAt.getTime(),
        expires_at: expiryFrom(source.timeout_ms),
      });
    } catch (err) {
      const message = errorMessage(err);
      await this.fail(id, 'start_failed', message);
      throw new CapsuleError('vm_start_failed', `fork ${id} of ${source.id} failed to start: ${message.split('\n')[0]}`, { hint: `see \`capsule logs ${id}\``, cause: err });
    }
    return await this.get(id);
  }

  /**
   * Turns a running sandbox's current state into a new warm template (see
   * snapshot.ts); the sandbox runs on. Sandboxes created from the template
   * continue from this moment, each with its own identity.
   */
  async snapshot(idOrName: string, templateName: string): Promise<TemplateRecord> {
    const { record, vm } = await this.runningVm(idOrName);
    const template = await this.whileFreezing(record.id, vm, () =>
      snapshotToTemplate(
        this.store,
        { id: record.id, vm, machine: this.readMachine(record.id), overlay: path.join(this.stateDir(record.id), 'overlay.qcow2') },
        templateName,
        { templatesDir: path.join(this.config.stateDir, 'templates'), runtimeDir: this.freezeRuntimeDir },
        this.qemuVersion,
      ),
    );
    this.log.info({ sandbox: record.id, template: templateName }, 'sandbox snapshotted as a template');
    await this.prepareWarmSnapshot(template);
    return template;
  }

  /**
   * Removes a template made by `capsule snapshot`; false for other templates.
   * Refused while sandboxes made from it live: their disks are overlays on its
   * disk, which a resume (or an adopting daemon) opens again.
   */
  async removeSnapshotTemplate(name: string): Promise<boolean> {
    const dir = await snapshotTemplateDir(this.store, name);
    if (dir === undefined) return false;
    const users = (await this.store.sandboxesInStates(['starting', 'running', 'paused'])).filter((s) => s.template === name).map((s) => s.id);
    if (users.length > 0) {
      throw new CapsuleError('template_in_use', `template "${name}" is used by ${users.length} sandbox(es): ${users.join(', ')}`, {
        hint: `their disks are built on it; remove them first (capsule rm ${users.join(' ')})`,
      });
    }
    await this.forgetTemplate(name);
    await removeSnapshotTemplate(this.store, name, dir);
    return true;
  }

  /**
   * Starts a paused sandbox's VM again from its saved state, clock corrected,
   * lifetime restarted. A missing or unreadable state ends the sandbox in
   * `error` with the reason; nothing of the attempt is left running.
   */
  async resume(idOrName: string): Promise<Sandbox> {
    const record = await this.require(idOrName);
    const id = record.id;
    if (record.state !== 'paused') {
      throw new CapsuleError('sandbox_not_running', `sandbox ${id} is ${record.state}, not paused`, { hint: 'only paused sandboxes can be resumed' });
    }
    const started = Date.now();
    // Its host ports first: one taken while it was paused refuses the resume, and it stays paused.
    await this.ports.bind(id);
    // A conversion still under way is dropped: reading the stream is quicker than waiting for it.
    await this.pausedMemory.cancel(id);
    const stateFile = this.pauseStateFile(id);
    const frozen = frozenFiles(this.pausedDir(id));
    let mapped = false;
    let restoredMs = 0;
    try {
      const saved = this.readMachine(id);
      mapped = fs.existsSync(frozen.state) && fs.existsSync(frozen.memory);
      if (!mapped && !fs.existsSync(stateFile)) throw new Error(`its saved state is missing from ${this.stateDir(id)}`);
      const vm = this.track(
        id,
        await this.launch(id, mapped ? { ...saved, memoryBackend: { type: 'file', path: frozen.memory, shared: false }, incoming: true } : wholeStateRestoreSpec(saved)),
      );
      // The policy may have changed while the sandbox was paused.
      await vm.restore(mapped ? frozen.state : stateFile, Date.now() + RESTORE_TIMEOUT_MS, !mapped, () => this.networks.apply(id, vm.qmp, egressPolicyOf(record)));
      restoredMs = Date.now() - started;
      await vm.initGuest({ timestamp: new Date().toISOString(), entropy: randomBytes(64).toString('hex') });
    } catch (err) {
      const message = errorMessage(err);
      await this.fail(id, 'resume_failed', message);
      throw new CapsuleError('vm_start_failed', `sandbox ${id} failed to resume: ${message.split('\n')[0]}`, { hint: `see \`capsule inspect ${id}\` and \`capsule logs ${id}\``, cause: err });
    }
    // A mapped memory file stays readable to the VM after its name is gone; the next pause writes a new state.
    fs.rmSync(this.pausedDir(id), { recursive: true, force: true });
    fs.rmSync(stateFile, { force: true });
    this.log.info({ sandbox: id, mapped, restoredMs, initMs: Date.now() - started - restoredMs }, 'sandbox resumed');
    await this.store.transition(id, 'running', 'user', `resumed in ${Date.now() - started} ms`, { expires_at: expiryFrom(record.timeout_ms) });
    return await this.get(id);
  }

  /** The template's warm snapshot, if it is ready and was taken with these resources. */
  private usableSnapshot(template: string, vcpus: number, memoryMiB: number): WarmSnapshot | undefined {
    const snapshot = this.warm.get(template)?.snapshot;
    return snapshot && snapshot.vcpus === vcpus && snapshot.memoryMiB === memoryMiB ? snapshot : undefined;
  }

  private initRequest(id: string, env: Record<string, string> | undefined, imageDefaults?: TemplateImageDefaults) {
    return {
      timestamp: new Date().toISOString(),
      hostname: hostnameFor(id),
      entropy: randomBytes(64).toString('hex'),
      ...(env && Object.keys(env).length > 0 ? { envVars: env } : {}),
      ...(imageDefaults ? { defaultUser: imageDefaults.user, ...(imageDefaults.workdir ? { defaultWorkdir: imageDefaults.workdir } : {}) } : {}),
    };
  }

  private async createOverlay(id: string, backing: string, backingFormat: 'raw' | 'qcow2'): Promise<string> {
    const overlay = path.join(this.stateDir(id), 'overlay.qcow2');
    fs.mkdirSync(this.stateDir(id), { recursive: true, mode: 0o700 });
    await runCommand('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', backingFormat, '-b', backing, overlay]);
    return overlay;
  }

  /** Boots a fresh VM from the template's kernel and disk and waits for its agent. */
  private async bootVm(id: string, template: TemplateRecord, vcpus: number, memoryMiB: number, egress: EgressPolicy): Promise<void> {
    const spec: VmSpec = {
      id,
      accel: this.accel.accel,
      vcpus,
      memoryMiB,
      kernel: template.kernel,
      initramfs: template.initramfs,
      kitDisk: template.kit,
      // A build resumed from a cached step boots from that step's qcow2 disk.
      rootDisk: await this.createOverlay(id, template.rootfs, template.rootfs.endsWith('.qcow2') ? 'qcow2' : 'raw'),
      hostname: hostnameFor(id),
      agentPortId: AGENT_PORT_DEVICE_ID,
      bulkPort: true,
      tscKhz: await hostTscKhz(),
      // RAM as the named backend every restore uses, so that this VM can be frozen into a memory file (vmm/freeze.ts).
      memoryBackend: { type: 'ram' },
    };
    const vm = this.track(id, await this.launch(id, spec));
    // Set while the guest is still in its kernel: nothing of the sandbox's own has run yet.
    await this.networks.apply(id, vm.qmp, egress);
    await vm.waitForBoot(Date.now() + this.config.bootTimeoutMs);
  }

  /**
   * Restores a VM from a warm snapshot into sandbox `id`'s folders: an overlay
   * over the snapshot's disk, its memory file mapped privately. `onLaunched`
   * sees the VM as soon as QEMU runs, so a failure can always stop it.
   */
  private async restoreVm(id: string, snapshot: WarmSnapshot, egress: EgressPolicy, onLaunched: (vm: LiveVm) => void): Promise<LiveVm> {
    const spec: VmSpec = {
      id,
      ...snapshot.machine,
      vcpus: snapshot.vcpus,
      memoryMiB: snapshot.memoryMiB,
      rootDisk: await this.createOverlay(id, snapshot.disk, 'qcow2'),
      agentPortId: AGENT_PORT_DEVICE_ID,
      memoryBackend: { type: 'file', path: snapshot.memory, shared: false },
      incoming: true,
    };
    const vm = await this.launch(id, spec);
    onLaunched(vm);
    await vm.restore(snapshot.state, Date.now() + RESTORE_TIMEOUT_MS, false, () => this.networks.apply(id, vm.qmp, egress));
    return vm;
  }

  /** A VM for the warm pool: restored and warmed up, not in the store until a create claims it. */
  private async restoreIntoPool(snapshot: WarmSnapshot): Promise<PooledVm> {
    const id = newSandboxId();
    let launched: LiveVm | undefined;
    const discard = async () => {
      await launched?.stop();
      await this.removeVmFiles(id);
      fs.rmSync(this.stateDir(id), { recursive: true, force: true });
    };
    try {
      // Pool VMs start with the network open; a claim applies the create's policy.
      const vm = await this.restoreVm(id, snapshot, OPEN_POLICY, (v) => (launched = v));
      // Run once what a claim runs, so TCG has translated those paths already:
      // the first /init and the first exec after a restore each cost ~10x more.
      await vm.initGuest(this.initRequest(id, undefined));
      await collectExec(execEvents(vm.agent, { cmd: ['true'] }, AbortSignal.timeout(RESTORE_TIMEOUT_MS)));
      return { id, vm, discard };
    } catch (err) {
      await discard();
      throw err;
    }
  }

  private validateResources(vcpus: number, memoryMiB: number): void {
    const hostCpus = os.cpus().length;
    if (!Number.isInteger(vcpus) || vcpus < limits.minVcpus || vcpus > Math.min(limits.maxVcpus, hostCpus)) {
      throw new CapsuleError('invalid_argument', `vcpus must be a whole number from ${limits.minVcpus} to ${Math.min(limits.maxVcpus, hostCpus)}, got ${vcpus}`, {
        hint: `this host has ${hostCpus} CPUs`,
      });
    }
    if (!Number.isInteger(memoryMiB) || memoryMiB < limits.minMemoryMiB || memoryMiB > limits.maxMemoryMiB) {
      throw new CapsuleError('invalid_argument', `memory must be from ${limits.minMemoryMiB} to ${limits.maxMemoryMiB} MiB, got ${memoryMiB}`, {
        hint: 'pass the memory in MiB, e.g. 512',
      });
    }
    const budget = this.memoryBudgetMiB();
    if (memoryMiB > budget) {
      throw new CapsuleError('insufficient_resources', `${memoryMiB} MiB is more than this host lets sandboxes use (${budget} MiB)`, {
        hint: 'ask for less memory, or raise CAPSULE_MEMORY_BUDGET_MIB',
      });
    }
  }

  /** Guest memory all sandboxes together may have: the setting, else twice the host's RAM (clones share pages). */
  private memoryBudgetMiB(): number {
    return this.config.memoryBudgetMiB || 2 * Math.floor(os.totalmem() / 1048576);
  }

  /** Refuses a create that would overcommit the host (see memory.ts), before anything is started. */
  private async admit(addedMiB: number): Promise<void> {
    const active = await this.store.sandboxesInStates(['starting', 'running']);
    let committedMiB = active.reduce((sum, record) => sum + record.memory_mib, 0);
    for (const [template, pool] of this.pools) committedMiB += pool.readyCount * (this.warm.get(template)?.snapshot?.memoryMiB ?? 0);
    const problem = admissionProblem({ addedMiB, committedMiB, budgetMiB: this.memoryBudgetMiB(), host: readHostMemory() });
    if (problem) {
      throw new CapsuleError('insufficient_resources', `not enough memory for another sandbox: ${problem}`, {
        hint: 'remove or pause sandboxes, ask for less memory, or raise CAPSULE_MEMORY_BUDGET_MIB',
      });
    }
  }

  async list(includeKilled: boolean): Promise<Sandbox[]> {
    return (await this.store.listSandboxes({ includeKilled })).map((r) => this.toApi(r));
  }

  async get(idOrName: string): Promise<Sandbox> {
    const record = await this.require(idOrName);
    const history = await this.store.history(record.id);
    const vm = this.live.get(record.id);
    const memoryUse = vm ? vmMemoryUse(vm.pid) : undefined;
    return {
      ...this.toApi(record),
      ...(memoryUse ? { memoryUse } : {}),
      history: history.map((h) => ({ state: h.state as SandboxState, reason: h.reason, ...(h.message ? { message: h.message } : {}), at: h.at })),
    };
  }

  private async require(idOrName: string): Promise<SandboxRecord> {
    const record = await this.store.getSandbox(idOrName);
    if (!record) {
      throw new CapsuleError('sandbox_not_found', `sandbox "${idOrName}" does not exist`, { hint: 'list sandboxes with `capsule ls`' });
    }
    return record;
  }

  private toApi(record: SandboxRecord): Sandbox {
    const vm = this.live.get(record.id);
    return {
      id: record.id,
      name: record.name,
      template: record.template,
      state: record.state as SandboxState,
      stateReason: record.state_reason,
      ...(record.state_message ? { stateMessage: record.state_message } : {}),
      vcpus: record.vcpus,
      memoryMiB: record.memory_mib,
      accel: record.accel as 'kvm' | 'tcg',
      metadata: JSON.parse(record.metadata) as Record<string, string>,
      createdAt: record.created_at,
      ...(record.boot_ms !== null ? { bootMs: record.boot_ms } : {}),
      ...(vm ? { pid: vm.pid } : {}),
      timeoutMs: record.timeout_ms,
      onTimeout: record.on_timeout,
      ...(record.expires_at ? { expiresAt: record.expires_at } : {}),
      network: this.networks.describe(record.id, egressPolicyOf(record)),
      ports: this.ports.of(record.id),
      domain: this.config.domain,
      trafficAccessToken: this.trafficTokens.trafficTokenFor(record.id),
    };
  }

  /** Stops the VM (if any) and removes the sandbox's files; the record stays as `killed`, with `reason`. */
  async remove(idOrName: string, reason = 'user'): Promise<void> {
    const record = await this.require(idOrName);
    if (record.state === 'killed') return;
    if (record.state === 'starting') {
      throw new CapsuleError('sandbox_not_running', `sandbox ${record.id} is still starting`, { hint: 'remove it once its create request has returned' });
    }
    await this.ports.release(record.id, true);
    const vm = this.live.get(record.id);
    if (vm) {
      await vm.stop();
      this.live.delete(record.id);
    }
    await this.pausedMemory.cancel(record.id);
    await this.removeVmFiles(record.id);
    fs.rmSync(this.stateDir(record.id), { recursive: true, force: true });
    await this.store.transition(record.id, 'killed', reason, undefined, { expires_at: null });
  }

  /** Gives a running sandbox a new lifetime counted from now (0: none). */
  async setTimeout(idOrName: string, timeoutMs: number): Promise<Sandbox> {
    const { record } = await this.runningVm(idOrName);
    await this.store.setTimeout(record.id, timeoutMs, expiryFrom(timeoutMs));
    return await this.get(record.id);
  }

  /** Restarts a running sandbox's timeout from now, keeping its length. */
  async keepAlive(idOrName: string): Promise<Sandbox> {
    const { record } = await this.runningVm(idOrName);
    return await this.setTimeout(record.id, record.timeout_ms);
  }

  /**
   * Changes a sandbox's egress policy: at once on a running sandbox, on resume
   * for a paused one. The store is written only once the VM has it.
   */
  async setNetwork(idOrName: string, request: SetNetworkRequest): Promise<Sandbox> {
    const record = await this.require(idOrName);
    const policy = egressPolicyFrom(request, this.networks.listsSupported, egressPolicyOf(record));
    if (record.state === 'running') {
      const { vm } = await this.runningVm(record.id);
      await this.networks.apply(record.id, vm.qmp, policy);
    } else if (record.state !== 'paused') {
      throw new CapsuleError('sandbox_not_running', `sandbox ${record.id} is ${record.state}`, { hint: 'the network of running and paused sandboxes can be changed' });
    }
    await this.store.setNetworkPolicy(record.id, egressPolicyColumns(policy));
    this.log.info({ sandbox: record.id, internet: policy.internet, allow: policy.allow, deny: policy.deny }, 'sandbox network changed');
    return await this.get(record.id);
  }

  /** Kills (or pauses, if asked at create) running sandboxes whose timeout has passed; runs every second. */
  private async reapExpired(): Promise<void> {
    // A pause can take longer than a tick: the next tick must not start a second one.
    if (this.reaping) return;
    this.reaping = true;
    try {
      for (const record of await this.store.expiredSandboxes(new Date())) {
        this.log.info({ sandbox: record.id, timeoutMs: record.timeout_ms, action: record.on_timeout }, 'sandbox timed out');
        const done = record.on_timeout === 'pause' ? this.pause(record.id, 'timeout') : this.remove(record.id, 'timeout');
        await done.catch((err: unknown) => this.log.error({ sandbox: record.id, err: errorMessage(err) }, `could not ${record.on_timeout} a timed-out sandbox`));
      }
    } finally {
      this.reaping = false;
    }
  }

  private async runningVm(idOrName: string): Promise<{ record: SandboxRecord; vm: LiveVm }> {
    const record = await this.require(idOrName);
    const vm = this.live.get(record.id);
    if (record.state !== 'running' || !vm) {
      throw new CapsuleError('sandbox_not_running', `sandbox ${record.id} is ${record.state}, not running`, {
        hint:
          record.state === 'error'
            ? `it failed: ${record.state_message ?? record.state_reason}`
            : record.state === 'paused'
              ? `resume it first: capsule resume ${record.id}`
              : 'create a new sandbox',
      });
    }
    return { record, vm };
  }

  /**
   * Freezes a running sandbox's root disk as it is now and sends later writes
   * to a new qcow2 overlay at `file` (over the frozen one). Flush the guest
   * (`sync`) first. Template builds cache each step's disk this way.
   */
  async snapshotRootDisk(idOrName: string, file: string): Promise<void> {
    const { vm } = await this.runningVm(idOrName);
    await vm.qmp.execute('blockdev-snapshot-sync', { device: 'root', 'snapshot-file': file, format: 'qcow2' });
  }

  /** The agent of a running sandbox, for the API's proxy to it. */
  async agentOf(idOrName: string): Promise<{ id: string; agent: AgentClient; bulk: BulkChannel | undefined }> {
    const { record, vm } = await this.runningVm(idOrName);
    return { id: record.id, agent: vm.agent, bulk: vm.bulk };
  }

  /** Exec events for a command; the sandbox's own env vars sit under the request's. */
  async execStream(idOrName: string, request: ExecRequest, signal: AbortSignal): Promise<AsyncGenerator<ExecEvent>> {
    const { record, vm } = await this.runningVm(idOrName);
    const env = { ...(JSON.parse(record.env) as Record<string, string>), ...request.env };
    return execEvents(vm.agent, { ...request, env }, signal);
  }

  async exec(idOrName: string, request: ExecRequest, signal: AbortSignal): Promise<ExecResult> {
    return await collectExec(await this.execStream(idOrName, request, signal));
  }

  async consoleLog(idOrName: string): Promise<Buffer> {
    const record = await this.require(idOrName);
    return readConsoleLog(this.consoleLogFile(record.id));
  }
}
