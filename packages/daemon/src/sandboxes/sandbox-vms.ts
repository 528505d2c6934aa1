// The sandboxes' VMs as this daemon holds them: which VM runs for which
// sandbox, where each keeps its files, launching one with its machine
// recorded, failing one cleanly, and, at daemon start, killing what no sandbox
// owns (reattaching the VMs that kept running is adoption.ts's). The store
// says what each sandbox is; the OS (pid files, /proc) says what is true now,
// and the two are reconciled here and in adoption.ts, nowhere else.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { DaemonConfig } from '../config.js';
import { CapsuleError, errorMessage } from '../errors.js';
import { backingChain, pinSharedFiles } from '../guest/cache-pins.js';
import { writeFileAtomic } from '../guest/files.js';
import { sweepUnheld } from '../guest/cache-holds.js';
import type { TemplateImageDefaults } from '../templates/template-records.js';
import { runCommand } from '../launcher.js';
import type { Logger } from '../log.js';
import type { SandboxNetworks } from '../network/sandbox-networks.js';
import type { SandboxRecord, Store } from '../store/store.js';
import type { VmmDriver } from '../vmm/driver.js';
import { qemuDriver } from '../vmm/qemu-vm.js';
import { VmRuntimePaths, type VmSpec } from '../vmm/qemu.js';
import { hostnameFor } from './ids.js';
import { SandboxAdoption } from './adoption.js';
import type { PublishedPorts } from './published-ports.js';
import { SandboxVm } from './sandbox-vm.js';

export const RESTORE_TIMEOUT_MS = 60_000;

/** When a timeout of `timeoutMs` started now runs out; null for none. */
export function expiryFrom(timeoutMs: number): string | null {
  return timeoutMs > 0 ? new Date(Date.now() + timeoutMs).toISOString() : null;
}

/** What /init tells a guest restored from a snapshot (or booted from an image): who it is now. */
export function initRequest(id: string, env: Record<string, string> | undefined, imageDefaults?: TemplateImageDefaults) {
  return {
    timestamp: new Date().toISOString(),
    hostname: hostnameFor(id),
    entropy: randomBytes(64).toString('hex'),
    ...(env && Object.keys(env).length > 0 ? { envVars: env } : {}),
    ...(imageDefaults
      ? { defaultUser: imageDefaults.user, ...(imageDefaults.workdir ? { defaultWorkdir: imageDefaults.workdir } : {}) }
      : {}),
  };
}

export class SandboxVms {
  readonly live = new Map<string, SandboxVm>();
  /** The VMM every sandbox's VM runs on. */
  readonly driver: VmmDriver = qemuDriver;
  /** VMs of the previous daemon being reattached (adoption.ts). */
  readonly adoption: SandboxAdoption;
  /** Sandboxes being frozen for a fork or a snapshot: one freeze (or pause) of a VM at a time. */
  private readonly freezing = new Set<string>();

  constructor(
    private readonly store: Store,
    private readonly config: DaemonConfig,
    private readonly log: Logger,
    private readonly networks: SandboxNetworks,
    private readonly ports: PublishedPorts,
  ) {
    this.adoption = new SandboxAdoption(store, log, this);
  }

  runtimePaths(id: string): VmRuntimePaths {
    return new VmRuntimePaths(path.join(this.config.runtimeDir, 'sandboxes', id));
  }

  stateDir(id: string): string {
    return path.join(this.config.stateDir, 'sandboxes', id);
  }

  consoleLogFile(id: string): string {
    return path.join(this.stateDir(id), 'console.log');
  }

  private machineFile(id: string): string {
    return path.join(this.stateDir(id), 'machine.json');
  }

  /** Whether a sandbox's machine was recorded (one launched before machines were has none). */
  hasMachine(id: string): boolean {
    return fs.existsSync(this.machineFile(id));
  }

  pauseStateFile(id: string): string {
    return path.join(this.stateDir(id), 'pause.state');
  }

  /** A paused sandbox's state as a memory file + device state, once converted (paused-memory.ts). */
  pausedDir(id: string): string {
    return path.join(this.stateDir(id), 'paused');
  }

  /** Where helper VMs of a freeze keep their sockets: among the sandboxes', so a daemon crash leaves no orphan unremoved. */
  get freezeRuntimeDir(): string {
    return path.join(this.config.runtimeDir, 'sandboxes');
  }

  /**
   * Kills the VMs in the runtime folder that are neither live nor in `keep`
   * (being reattached), and removes their files. They are found by their
   * command lines, not their pid files: a daemon killed while launching a VM
   * had not written its pid file yet.
   */
  removeOrphans(keep: Set<string>): void {
    // Shared disks whose last user went while no daemon ran (or a fork that a crash cut short).
    sweepUnheld(this.sharedDisksDir);
    const dir = path.join(this.config.runtimeDir, 'sandboxes');
    const owned = (id: string) => this.live.has(id) || keep.has(id);
    // Left over by a crashed daemon: a sandbox being created or started, a warm-pool VM, a freeze's helper.
    const orphans = this.driver.findAllUnder(dir).filter((vm) => !owned(vm.id));
    for (const { pid, id } of orphans) this.log.warn({ sandbox: id, pid }, 'killing a VM that no sandbox owns');
    const folders = fs.existsSync(dir) ? fs.readdirSync(dir).filter((id) => !owned(id)) : [];
    void Promise.all(orphans.map(({ pid }) => this.driver.kill(pid))).then(async () => {
      for (const id of folders) {
        fs.rmSync(path.join(dir, id), { recursive: true, force: true });
        if (!(await this.store.getSandbox(id))) fs.rmSync(this.stateDir(id), { recursive: true, force: true });
      }
    });
  }

  /** Registers a sandbox's VM and watches for it exiting behind the daemon's back. */
  track(id: string, vm: SandboxVm): SandboxVm {
    this.live.set(id, vm);
    vm.handle.onClose(() => {
      if (!vm.stopping) void this.onVmGone(id, vm);
    });
    return vm;
  }

  checkLiveness(): void {
    for (const [id, vm] of this.live) {
      if (!vm.stopping && !vm.alive) void this.onVmGone(id, vm);
    }
  }

  /** The VM went away without the daemon asking: record it as a crash and clean up. */
  private async onVmGone(id: string, vm: SandboxVm): Promise<void> {
    if (this.live.get(id) !== vm || vm.stopping || vm.booting) return;
    vm.stopping = true;
    if (vm.handle.killedForMemory()) {
      this.log.warn({ sandbox: id, pid: vm.pid }, 'VM killed by its memory limit');
      await this.fail(id, 'oom', 'the VM used more memory than its limit (guest RAM plus the VMM overhead) and was killed');
      return;
    }
    const vmmLog = vm.handle.logTail();
    const detail = vmmLog ? `: ${vmmLog}` : '';
    this.log.warn({ sandbox: id, pid: vm.pid }, 'VM exited unexpectedly');
    await this.fail(id, 'crash', `the VM exited unexpectedly${detail}`);
  }

  /** Stops whatever is left of a VM, removes its files (not its console log) and records the error. */
  async fail(id: string, reason: string, message: string): Promise<void> {
    await this.ports.release(id, true);
    const vm = this.live.get(id);
    if (vm) {
      await vm.stop();
      this.live.delete(id);
    }
    await this.removeVmFiles(id);
    await this.store.transition(id, 'error', reason, message);
  }

  /** Removes a paused sandbox's saved memory and devices (the stream, the mapped folder, and their temporaries). */
  removeSavedState(id: string): void {
    for (const file of ['pause.state', 'pause.state.tmp', 'paused', 'paused.tmp'])
      fs.rmSync(path.join(this.stateDir(id), file), { recursive: true, force: true });
  }

  /**
   * Removes what a VM used besides its console log: its network, runtime
   * folder, disk overlay and saved state. `keepRuntime` leaves the runtime
   * folder to removeOrphans, which kills a QEMU still running there first.
   */
  async removeVmFiles(id: string, options: { keepRuntime?: boolean } = {}): Promise<void> {
    await this.networks
      .release(id)
      .catch((err: unknown) => this.log.error({ sandbox: id, err: errorMessage(err) }, 'could not free the network of a sandbox'));
    if (!options.keepRuntime) fs.rmSync(this.runtimePaths(id).dir, { recursive: true, force: true });
    this.removeSavedState(id);
    for (const file of ['overlay.qcow2', 'pins']) fs.rmSync(path.join(this.stateDir(id), file), { recursive: true, force: true });
    sweepUnheld(this.sharedDisksDir);
  }

  /** Creates sandbox `id`'s disk: a qcow2 overlay of its own on `backing`, which is never written. */
  async createOverlay(id: string, backing: string, backingFormat: 'raw' | 'qcow2'): Promise<string> {
    const overlay = path.join(this.stateDir(id), 'overlay.qcow2');
    fs.mkdirSync(this.stateDir(id), { recursive: true, mode: 0o700 });
    await runCommand('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', backingFormat, '-b', backing, overlay]);
    return overlay;
  }

  /**
   * Frozen disks that several sandboxes' overlays are built on (a fork's
   * source at the moment of the fork): each is pinned by its users and goes
   * with the last of them.
   */
  get sharedDisksDir(): string {
    return path.join(this.config.stateDir, 'disks');
  }

  /**
   * Starts QEMU for sandbox `id` with its NIC plugged into the sandbox's own
   * network backend (never one a spec was copied from: a TAP device is one
   * VM's), first recording its machine: a resume must rebuild the same one.
   */
  async launch(id: string, spec: Omit<VmSpec, 'nic'>): Promise<SandboxVm> {
    const machine: VmSpec = { ...spec, nic: await this.networks.backendFor(id) };
    writeFileAtomic(this.machineFile(id), JSON.stringify({ ...machine, incoming: false }), 0o600);
    // A resume opens these again, maybe long after the cache would have pruned them; forks share their base disk.
    pinSharedFiles(
      [machine.kitDisk, ...backingChain(machine.rootDisk)],
      [this.config.cacheDir, this.sharedDisksDir],
      path.join(this.stateDir(id), 'pins'),
    );
    return new SandboxVm(await this.driver.launch(machine, this.runtimePaths(id), this.consoleLogFile(id)));
  }

  readMachine(id: string): VmSpec {
    return JSON.parse(fs.readFileSync(this.machineFile(id), 'utf8')) as VmSpec;
  }

  /** Runs `work` (which freezes the VM) unless the VM is already being frozen, paused or stopped. */
  async whileFreezing<T>(id: string, vm: SandboxVm, work: () => Promise<T>): Promise<T> {
    if (vm.stopping || this.freezing.has(id)) {
      throw new CapsuleError('sandbox_not_running', `sandbox ${id} is being paused, stopped, forked or snapshotted`, {
        hint: 'wait for that to finish',
      });
    }
    this.freezing.add(id);
    try {
      return await work();
    } finally {
      this.freezing.delete(id);
    }
  }

  /** Whether a fork or a snapshot is freezing sandbox `id` now. */
  isFreezing(id: string): boolean {
    return this.freezing.has(id);
  }

  async require(idOrName: string): Promise<SandboxRecord> {
    const record = await this.store.getSandbox(idOrName);
    if (!record) {
      throw new CapsuleError('sandbox_not_found', `sandbox "${idOrName}" does not exist`, { hint: 'list sandboxes with `capsule ls`' });
    }
    return record;
  }

  /** A running sandbox's VM; one being reattached after a daemon restart is waited for (adoption.ts). */
  async runningVm(idOrName: string): Promise<{ record: SandboxRecord; vm: SandboxVm }> {
    let record = await this.require(idOrName);
    if (this.adoption.isReattaching(record.id)) {
      await this.adoption.waitFor(record.id);
      record = await this.require(record.id);
    }
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
}
