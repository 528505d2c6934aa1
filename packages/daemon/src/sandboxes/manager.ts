// The sandbox lifecycle: create (boot a microVM and wait for its agent), list,
// exec, remove; and, at daemon start, adopting VMs that kept running while the
// daemon was down. The store says what each sandbox is; the OS (pid files,
// /proc) says what is true now, and the two are reconciled here, nowhere else.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { CreateSandboxRequest, ExecEvent, ExecRequest, ExecResult, Sandbox, SandboxState } from '@capsule/protocol';
import { limits } from '@capsule/protocol';
import { AgentClient } from '../agent/client.js';
import type { DaemonConfig } from '../config.js';
import { CapsuleError, errorMessage } from '../errors.js';
import { isProcessAlive, runCommand, tailOfFile, terminateGroup } from '../launcher.js';
import type { Logger } from '../log.js';
import type { SandboxRecord, Store } from '../store/store.js';
import type { AccelChoice } from '../vmm/accel.js';
import { ConsoleLog, readConsoleLog } from '../vmm/console-log.js';
import type { QmpClient, QmpEvent } from '../vmm/qmp.js';
import { QmpClient as Qmp } from '../vmm/qmp.js';
import { findRunningVm, startVm, stopVm, VmRuntimePaths, type VmSpec } from '../vmm/qemu.js';
import { hostTscKhz } from '../vmm/tsc.js';
import { collectExec, execEvents } from './exec.js';
import { hostnameFor, newSandboxId } from './ids.js';

const DEFAULT_TEMPLATE = 'base';
const AGENT_PORT_DEVICE_ID = 'agent-port';
const LIVENESS_INTERVAL_MS = 2000;

/** What is attached to one running VM while this daemon runs. */
interface LiveVm {
  pid: number;
  qmp: QmpClient | undefined;
  agent: AgentClient;
  console: ConsoleLog;
  /** Set while the daemon itself is stopping the VM, so its exit is not a crash. */
  stopping: boolean;
  /** Set until the agent first answered; a VM that dies meanwhile is the create's failure to report. */
  booting: boolean;
}

export class SandboxManager {
  private readonly live = new Map<string, LiveVm>();
  private livenessTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: Store,
    private readonly config: DaemonConfig,
    private readonly accel: AccelChoice,
    private readonly log: Logger,
  ) {}

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
    for (const record of await this.store.sandboxesInStates(['starting', 'running'])) {
      await this.adopt(record);
    }
    this.removeOrphans();
    this.livenessTimer = setInterval(() => this.checkLiveness(), LIVENESS_INTERVAL_MS);
    this.livenessTimer.unref();
  }

  /** Lets go of every VM without stopping it: a new daemon adopts them. */
  shutdown(): void {
    clearInterval(this.livenessTimer);
    for (const vm of this.live.values()) this.detach(vm);
    this.live.clear();
  }

  private async adopt(record: SandboxRecord): Promise<void> {
    const paths = this.runtimePaths(record.id);
    const pid = findRunningVm(paths, record.id);
    if (record.state === 'starting') {
      if (pid !== undefined) await terminateGroup(pid, 2000);
      this.removeVmFiles(record.id);
      await this.store.transition(record.id, 'error', 'daemon_restart', 'capsuled stopped while this sandbox was starting');
      return;
    }
    if (pid === undefined) {
      const reason = fs.existsSync(paths.dir) ? 'crash' : 'host_restart';
      const message = reason === 'crash' ? 'the VM exited while capsuled was not running' : 'the host restarted';
      this.removeVmFiles(record.id);
      await this.store.transition(record.id, 'error', reason, message);
      this.log.warn({ sandbox: record.id, reason }, 'sandbox lost while the daemon was down');
      return;
    }
    try {
      const qmp = await Qmp.connect(paths.qmpSocket, { timeoutMs: 5000 });
      const vm = this.attach(record.id, pid, qmp);
      await this.waitForHealthyAgent(record.id, vm, Date.now() + 15_000);
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
      if (pid !== undefined) {
        this.log.warn({ sandbox: id, pid }, 'killing a VM that no sandbox owns');
        void terminateGroup(pid, 2000).then(() => fs.rmSync(path.join(dir, id), { recursive: true, force: true }));
      } else {
        fs.rmSync(path.join(dir, id), { recursive: true, force: true });
      }
    }
  }

  private attach(id: string, pid: number, qmp: QmpClient): LiveVm {
    const paths = this.runtimePaths(id);
    const console = new ConsoleLog(paths.consoleSocket, path.join(this.stateDir(id), 'console.log'));
    console.attach();
    const vm: LiveVm = { pid, qmp, agent: new AgentClient(paths.agentSocket), console, stopping: false, booting: true };
    this.live.set(id, vm);
    qmp.on('close', () => {
      if (!vm.stopping) void this.onVmGone(id, vm);
    });
    return vm;
  }

  private detach(vm: LiveVm): void {
    vm.agent.close();
    vm.console.detach();
    vm.qmp?.close();
  }

  private checkLiveness(): void {
    for (const [id, vm] of this.live) {
      if (!vm.stopping && !isProcessAlive(vm.pid)) void this.onVmGone(id, vm);
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
    const vm = this.live.get(id);
    if (vm) {
      vm.stopping = true;
      if (isProcessAlive(vm.pid)) await stopVm(vm.pid, vm.qmp);
      this.detach(vm);
      this.live.delete(id);
    }
    this.removeVmFiles(id);
    await this.store.transition(id, 'error', reason, message);
  }

  private removeVmFiles(id: string): void {
    fs.rmSync(this.runtimePaths(id).dir, { recursive: true, force: true });
    fs.rmSync(path.join(this.stateDir(id), 'overlay.qcow2'), { force: true });
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
    if (request.name !== undefined && (await this.store.getSandbox(request.name))) {
      throw new CapsuleError('name_taken', `a sandbox named "${request.name}" already exists`, { hint: 'pick another name or remove that sandbox first' });
    }

    const id = newSandboxId();
    const createdAt = new Date();
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
      env: JSON.stringify(request.env ?? {}),
      created_at: createdAt.toISOString(),
      boot_ms: null,
    });
    const paths = this.runtimePaths(id);
    const overlay = path.join(this.stateDir(id), 'overlay.qcow2');
    try {
      fs.mkdirSync(this.stateDir(id), { recursive: true, mode: 0o700 });
      await runCommand('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', template.rootfs, overlay]);
      const spec: VmSpec = {
        id,
        accel: this.accel.accel,
        vcpus,
        memoryMiB,
        kernel: template.kernel,
        initramfs: template.initramfs,
        kitDisk: template.kit,
        rootDisk: overlay,
        hostname: hostnameFor(id),
        agentPortId: AGENT_PORT_DEVICE_ID,
        tscKhz: await hostTscKhz(),
      };
      const { pid, qmp } = await startVm(spec, paths);
      const vm = this.attach(id, pid, qmp);
      await this.waitForAgent(id, vm, qmp);
      vm.booting = false;
      const bootMs = Date.now() - createdAt.getTime();
      await this.store.transition(id, 'running', 'user', undefined, { boot_ms: bootMs });
      this.log.info({ sandbox: id, pid, bootMs }, 'sandbox running');
    } catch (err) {
      const consoleTail = readConsoleLog(path.join(this.stateDir(id), 'console.log'), 2048).toString('utf8').trim();
      const message = errorMessage(err);
      await this.fail(id, 'start_failed', consoleTail ? `${message}\nguest console:\n${consoleTail}` : message);
      throw new CapsuleError('vm_start_failed', `sandbox ${id} failed to start: ${message.split('\n')[0]}`, {
        hint: `see \`capsule logs ${id}\` for the guest console`,
        cause: err,
      });
    }
    return await this.get(id);
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
    const hostMiB = Math.floor(os.totalmem() / 1048576);
    const budget = this.config.memoryBudgetMiB || Math.floor(hostMiB * 0.9);
    if (memoryMiB > budget) {
      throw new CapsuleError('insufficient_resources', `${memoryMiB} MiB is more than this host lets sandboxes use (${budget} MiB)`, {
        hint: 'ask for less memory, or raise CAPSULE_MEMORY_BUDGET_MIB',
      });
    }
  }

  /** Waits for the guest to open the agent port, then for the agent to answer. */
  private async waitForAgent(id: string, vm: LiveVm, qmp: QmpClient): Promise<void> {
    const deadline = Date.now() + this.config.bootTimeoutMs;
    const remaining = () => Math.max(1, deadline - Date.now());
    const portOpen = (event: QmpEvent) => event.event === 'VSERPORT_CHANGE' && event.data?.id === AGENT_PORT_DEVICE_ID && event.data?.open === true;
    try {
      await qmp.waitForEvent(portOpen, remaining());
    } catch (err) {
      throw new Error(`the guest agent did not start: ${errorMessage(err)}`);
    }
    await this.waitForHealthyAgent(id, vm, deadline);
  }

  /**
   * Retries the agent's health check until `deadline`. A retry matters after a
   * reconnect too: a write the guest had in flight when the previous host side
   * left may arrive first on the new connection and break that HTTP/2 session.
   */
  private async waitForHealthyAgent(id: string, vm: LiveVm, deadline: number): Promise<void> {
    for (;;) {
      try {
        await vm.agent.health(Math.max(1, Math.min(5000, deadline - Date.now())));
        return;
      } catch (err) {
        if (Date.now() >= deadline || !isProcessAlive(vm.pid)) throw new Error(`the guest agent did not answer: ${errorMessage(err)}`);
        this.log.debug({ sandbox: id, err: errorMessage(err) }, 'agent not ready yet');
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  async list(includeKilled: boolean): Promise<Sandbox[]> {
    return (await this.store.listSandboxes({ includeKilled })).map((r) => this.toApi(r));
  }

  async get(idOrName: string): Promise<Sandbox> {
    const record = await this.require(idOrName);
    const history = await this.store.history(record.id);
    return {
      ...this.toApi(record),
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
    };
  }

  /** Stops the VM (if any) and removes the sandbox's files; the record stays as `killed`. */
  async remove(idOrName: string): Promise<void> {
    const record = await this.require(idOrName);
    if (record.state === 'killed') return;
    if (record.state === 'starting') {
      throw new CapsuleError('sandbox_not_running', `sandbox ${record.id} is still starting`, { hint: 'remove it once its create request has returned' });
    }
    const vm = this.live.get(record.id);
    if (vm) {
      vm.stopping = true;
      await stopVm(vm.pid, vm.qmp);
      this.detach(vm);
      this.live.delete(record.id);
    }
    this.removeVmFiles(record.id);
    fs.rmSync(this.stateDir(record.id), { recursive: true, force: true });
    await this.store.transition(record.id, 'killed', 'user');
  }

  private async runningVm(idOrName: string): Promise<{ record: SandboxRecord; vm: LiveVm }> {
    const record = await this.require(idOrName);
    const vm = this.live.get(record.id);
    if (record.state !== 'running' || !vm) {
      throw new CapsuleError('sandbox_not_running', `sandbox ${record.id} is ${record.state}, not running`, {
        hint: record.state === 'error' ? `it failed: ${record.state_message ?? record.state_reason}` : 'create a new sandbox',
      });
    }
    return { record, vm };
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
    return readConsoleLog(path.join(this.stateDir(record.id), 'console.log'));
  }
}
