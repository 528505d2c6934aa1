// The create path: check the request and the host's room (memory reserved
// under one lock, free disk), then claim a warm-pool VM, restore the
// template's warm snapshot, or boot cold, and tell the guest who it is. Pool
// VMs are restored here too, ahead of time. A create that fails leaves nothing
// running, nothing of its VM on disk and none of the memory it reserved held.
import fs from 'node:fs';
import os from 'node:os';
import type { CreateSandboxRequest } from '@capsule/protocol';
import { DEFAULT_TEMPLATE, limits } from '@capsule/protocol';
import { bulkProtocolVersion } from '@capsule/protocol/agent';
import { effectiveMemoryBudgetMiB, type DaemonConfig } from '../config.js';
import { assertDiskRoom } from '../disk-admission.js';
import { CapsuleError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { CreateServedBy, DaemonMetrics } from '../metrics.js';
import { egressPolicyColumns, egressPolicyFrom, OPEN_POLICY, type EgressPolicy } from '../network/egress-policy.js';
import type { SandboxNetworks } from '../network/sandbox-networks.js';
import { isUniqueViolation, type Store, type TemplateRecord } from '../store/store.js';
import type { TemplateImageDefaults } from '../templates/template-records.js';
import type { Templates } from '../templates/templates.js';
import { startTemplateService, type TemplateService } from '../templates/template-service.js';
import type { PooledVm } from '../templates/warm-pool.js';
import type { WarmSnapshot } from '../templates/warm-snapshot.js';
import type { AccelChoice } from '../vmm/accel.js';
import { readConsoleLog } from '../vmm/console-log.js';
import type { VmSpec } from '../vmm/qemu.js';
import { hostTscKhz } from '../vmm/tsc.js';
import { collectExec, execEvents } from '../agent/exec.js';
import { hostnameFor, newSandboxId } from './ids.js';
import { SandboxVm } from './sandbox-vm.js';
import { AGENT_PORT_DEVICE_ID } from '../vmm/qemu-vm.js';
import { MemoryAdmission, type MemoryReservation } from './memory.js';
import { Turns } from '../turns.js';
import type { PortReservation, PublishedPorts } from './published-ports.js';
import { expiryFrom, initRequest, RESTORE_TIMEOUT_MS, type SandboxVms } from './sandbox-vms.js';
import { giveFreshFoldersCommand } from '../volumes/volume-rules.js';
import type { PlannedAttachment, Volumes } from '../volumes/volumes.js';

/** What a create has checked and taken before its memory reservation: everything its VM is started from. */
interface AdmittedCreate {
  templateName: string;
  template: TemplateRecord;
  vcpus: number;
  memoryMiB: number;
  egress: EgressPolicy;
  env: Record<string, string> | undefined;
  imageDefaults: TemplateImageDefaults | undefined;
  service: TemplateService | undefined;
  createdAt: Date;
  snapshot: WarmSnapshot | undefined;
  ports: PortReservation;
  pooled: PooledVm | undefined;
  volumes: PlannedAttachment[];
}

/** One answer for a name in use, whether the check before a create or the store's unique index caught it. */
function nameTaken(name: string): CapsuleError {
  return new CapsuleError('name_taken', `a sandbox named "${name}" already exists`, {
    hint: 'pick another name or remove that sandbox first',
  });
}

/** A turn for a create is waited for however long it takes: the create's own timeouts bound it. */
const NEVER_ABORTS = new AbortController().signal;

export class SandboxCreator {
  /**
   * Creates that restore on demand take turns through the restore and the
   * guest's first /init, as many at once as the host has CPUs: under TCG a
   * restored guest translates its code anew, and fifty of them at once shared
   * the CPU until each took as long as the whole burst (p50 58 s of 60 s).
   */
  private readonly restoreTurns = new Turns(Math.max(1, os.cpus().length));
  /** Every VM a sandbox or the warm pool starts reserves its memory here first. */
  readonly memory = new MemoryAdmission(
    async () => (await this.store.sandboxesInStates(['running'])).reduce((sum, record) => sum + record.memory_mib, 0),
    () => effectiveMemoryBudgetMiB(this.config),
  );

  constructor(
    private readonly store: Store,
    private readonly config: DaemonConfig,
    private readonly accel: AccelChoice,
    private readonly log: Logger,
    private readonly vms: SandboxVms,
    private readonly templates: Templates,
    private readonly networks: SandboxNetworks,
    private readonly ports: PublishedPorts,
    private readonly metrics: DaemonMetrics,
    private readonly volumes: Volumes,
  ) {}

  /** Creates a sandbox and returns its id once it runs. */
  async create(request: CreateSandboxRequest): Promise<string> {
    const templateName = request.template ?? DEFAULT_TEMPLATE;
    const resolved = await this.templates.resolveForCreate(templateName, request);
    const { record: template, vcpus, memoryMiB, imageDefaults, service } = resolved;
    this.validateResources(vcpus, memoryMiB);
    // The guest mounts its volumes as it boots: a warm snapshot's guest booted without them, so a create with volumes boots cold.
    const withVolumes = (request.volumes ?? []).length > 0;
    const snapshot = withVolumes ? undefined : resolved.snapshot;
    const pool = withVolumes ? undefined : resolved.pool;
    const egress = egressPolicyFrom(request, this.networks.listsSupported);
    // A template built from an image gives its config's Env, User and WorkingDir; the request's env wins.
    const env = imageDefaults ? { ...imageDefaults.env, ...request.env } : request.env;
    if (request.name !== undefined && (await this.store.getSandbox(request.name))) throw nameTaken(request.name);

    const createdAt = new Date();
    if (!snapshot) await this.templates.warm.refuseColdSnapshotTemplate(templateName);
    assertDiskRoom(this.config, 'create a sandbox', [this.config.stateDir]);
    // Checked (and missing ones made) before anything is taken that a refusal would have to give back.
    const volumes = await this.volumes.plan(request.volumes ?? []);
    // Host ports are bound before anything starts: a conflict refuses the create here.
    const ports = await this.ports.reserve(request.ports);
    const pooled = pool?.take();
    if (pool) this.metrics.warmPoolClaims.inc({ template: templateName, result: pooled ? 'hit' : 'miss' });
    // A pool VM's memory was reserved when the pool restored it; any other VM reserves its own now.
    const memory =
      pooled?.memory ??
      (await this.reserveMemory(memoryMiB).catch(async (err: unknown) => {
        await ports.release();
        throw err;
      }));
    try {
      return await this.createReserved(request, {
        templateName,
        template,
        vcpus,
        memoryMiB,
        egress,
        env,
        imageDefaults,
        service,
        createdAt,
        snapshot,
        ports,
        pooled,
        volumes,
      });
    } finally {
      memory.release();
    }
  }

  /**
   * Memory for a VM that is not from a pool. VMs waiting in warm pools give
   * theirs way: a create the host has no room for discards them and asks again.
   */
  private async reserveMemory(memoryMiB: number): Promise<MemoryReservation> {
    try {
      return await this.memory.reserve(memoryMiB);
    } catch (err) {
      if (!(err instanceof CapsuleError && err.code === 'capacity')) throw err;
      if ((await this.templates.warm.evictPools()) === 0) throw err;
      return await this.memory.reserve(memoryMiB);
    }
  }

  /** The create once its memory is reserved: the sandbox's row, then its VM; `running` or failed when it returns. */
  private async createReserved(request: CreateSandboxRequest, admitted: AdmittedCreate): Promise<string> {
    const { templateName, template, vcpus, memoryMiB, egress, env, imageDefaults, service, createdAt, snapshot, ports, pooled, volumes } =
      admitted;
    const id = pooled?.id ?? newSandboxId();
    const timeoutMs = request.timeoutMs ?? limits.defaultTimeoutMs;
    await this.store
      .insertSandbox({
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
        desired_state: 'running',
        // The clock starts when the sandbox runs (below), not while it boots.
        expires_at: null,
        ssh_host_keys: null,
        ...egressPolicyColumns(egress),
      })
      .catch(async (err: unknown) => {
        // Nothing of this sandbox is recorded: give back what it took.
        await ports.release();
        await pooled?.discard();
        // A create with the same name got in between the check above and here.
        if (request.name !== undefined && isUniqueViolation(err, 'sandboxes.name')) throw nameTaken(request.name);
        throw err;
      });
    let releaseRestoreTurn: (() => void) | undefined;
    try {
      await this.volumes.attach(id, volumes);
      await this.ports.commit(id, ports);
      let how: string;
      let servedBy: CreateServedBy;
      if (pooled) {
        const vm = this.vms.track(id, new SandboxVm(pooled.vm, pooled.guest));
        // Its guest answered /init and an exec in the pool, then waited there paused.
        vm.booting = false;
        // Restored before this request said what its network may do: that is applied before it runs again.
        await this.networks.apply(id, vm.handle, egress);
        await pooled.vm.resume();
        how = `restored from the warm snapshot of ${templateName} ahead of time`;
        servedBy = 'pool';
      } else if (snapshot) {
        releaseRestoreTurn = await this.restoreTurns.take(NEVER_ABORTS);
        await this.restoreVm(id, snapshot, egress, (vm) => this.vms.track(id, vm)).catch((err: unknown) => {
          // The snapshot itself may be bad: later creates boot cold rather than fail the same way.
          this.templates.warm.abandonWarmSnapshot(templateName, err);
          throw err;
        });
        how = `restored from the warm snapshot of ${templateName}`;
        servedBy = 'restored';
      } else {
        await this.bootVm(id, template, vcpus, memoryMiB, egress, volumes);
        how = 'booted cold';
        servedBy = 'booted';
      }
      const vm = this.vms.live.get(id);
      if (!vm) throw new Error('the VM went away while starting');
      const startedMs = Date.now() - createdAt.getTime();
      // A restored guest is a copy of the template VM: tell it who it is now.
      if (snapshot || imageDefaults) await vm.initGuest(initRequest(id, env, imageDefaults), Date.now() + RESTORE_TIMEOUT_MS);
      releaseRestoreTurn?.();
      await this.giveVolumesToDefaultUser(id, vm, volumes, imageDefaults?.user);
      // A restored sandbox has the template's START running already; a cold one starts it now.
      if (service && !snapshot) await startTemplateService(vm.agent, { ...service, env: env ?? {} });
      const bootMs = Date.now() - createdAt.getTime();
      await this.store.transition(id, 'running', 'user', how, { boot_ms: bootMs, expires_at: expiryFrom(timeoutMs) });
      this.metrics.createSeconds.observe({ served_by: servedBy }, bootMs / 1000);
      this.log.info({ sandbox: id, pid: vm.pid, bootMs, startedMs, initMs: bootMs - startedMs, how }, 'sandbox running');
    } catch (err) {
      await ports.release();
      const consoleTail = readConsoleLog(this.vms.consoleLogFile(id), 2048).toString('utf8').trim();
      const message = errorMessage(err);
      await this.vms.fail(id, 'start_failed', consoleTail ? `${message}\nguest console:\n${consoleTail}` : message);
      if (err instanceof CapsuleError && (err.code === 'template_start_failed' || err.code === 'volume_in_use')) throw err;
      throw new CapsuleError('vm_start_failed', `sandbox ${id} failed to start: ${message.split('\n')[0]}`, {
        hint: `see \`capsule logs ${id}\` for the guest console`,
        cause: err,
      });
    } finally {
      releaseRestoreTurn?.();
    }
    return id;
  }

  /** Boots a fresh VM from the template's kernel and disk and waits for its agent. */
  private async bootVm(
    id: string,
    template: TemplateRecord,
    vcpus: number,
    memoryMiB: number,
    egress: EgressPolicy,
    volumes: PlannedAttachment[],
  ): Promise<void> {
    const spec: VmSpec = {
      id,
      accel: this.accel.accel,
      vcpus,
      memoryMiB,
      kernel: template.kernel,
      initramfs: template.initramfs,
      kitDisk: template.kit,
      // A build resumed from a cached step boots from that step's qcow2 disk.
      rootDisk: await this.vms.createOverlay(id, template.rootfs, template.rootfs.endsWith('.qcow2') ? 'qcow2' : 'raw'),
      hostname: hostnameFor(id),
      agentPortId: AGENT_PORT_DEVICE_ID,
      bulkPort: bulkProtocolVersion,
      tscKhz: await hostTscKhz(),
      // RAM as the named backend every restore uses, so that this VM can be frozen into a memory file (vmm/freeze.ts).
      memoryBackend: { type: 'ram' },
      ...(volumes.length > 0 ? { volumes: volumes.map(({ file, serial, mount, readOnly }) => ({ file, serial, mount, readOnly })) } : {}),
    };
    const vm = this.vms.track(id, await this.vms.launch(id, spec));
    // Set while the guest is still in its kernel: nothing of the sandbox's own has run yet.
    await this.networks.apply(id, vm.handle, egress);
    await vm.waitForBoot(Date.now() + this.config.bootTimeoutMs);
  }

  /**
   * A new volume's root folder is root's (mkfs made it on the host): the first
   * sandbox that mounts it read-write gives it to its default user (an
   * image's USER; the agent's own default is root), so that user can write
   * it. Only a folder that is still root's and empty: a volume in use keeps
   * its owners.
   */
  private async giveVolumesToDefaultUser(id: string, vm: SandboxVm, volumes: PlannedAttachment[], user: string | undefined): Promise<void> {
    const cmd = giveFreshFoldersCommand(
      user,
      volumes.filter((volume) => !volume.readOnly).map((volume) => volume.mount),
    );
    if (!cmd) return;
    const result = await collectExec(execEvents(vm.agent, { cmd, user: 'root' }, AbortSignal.timeout(RESTORE_TIMEOUT_MS)));
    if (result.exitCode !== 0)
      this.log.warn({ sandbox: id, user, stderr: result.stderr.slice(0, 500) }, 'could not give new volumes to the default user');
  }

  /**
   * Restores a VM from a warm snapshot into sandbox `id`'s folders: an overlay
   * over the snapshot's disk, its memory file mapped privately. `onLaunched`
   * sees the VM as soon as QEMU runs, so a failure can always stop it.
   */
  private async restoreVm(
    id: string,
    snapshot: WarmSnapshot,
    egress: EgressPolicy,
    onLaunched: (vm: SandboxVm) => void,
  ): Promise<SandboxVm> {
    const spec: VmSpec = {
      id,
      ...snapshot.machine,
      vcpus: snapshot.vcpus,
      memoryMiB: snapshot.memoryMiB,
      rootDisk: await this.vms.createOverlay(id, snapshot.disk, 'qcow2'),
      agentPortId: AGENT_PORT_DEVICE_ID,
      memoryBackend: { type: 'file', path: snapshot.memory, shared: false },
      incoming: true,
    };
    const vm = await this.vms.launch(id, spec);
    onLaunched(vm);
    await vm.handle.restore(snapshot.state, false, () => this.networks.apply(id, vm.handle, egress));
    return vm;
  }

  /**
   * A VM for the warm pool: restored and warmed up, not in the store until a
   * create claims it. It holds its memory's reservation until the create that
   * claims it has it running, or until it is discarded.
   */
  async restoreIntoPool(snapshot: WarmSnapshot): Promise<PooledVm> {
    const memory = await this.memory.reserve(snapshot.memoryMiB);
    const id = newSandboxId();
    let launched: SandboxVm | undefined;
    const discard = async () => {
      try {
        await launched?.stop();
        await this.vms.removeVmFiles(id);
        fs.rmSync(this.vms.stateDir(id), { recursive: true, force: true });
      } finally {
        memory.release();
      }
    };
    try {
      // Pool VMs start with the network open; a claim applies the create's policy.
      const vm = await this.restoreVm(id, snapshot, OPEN_POLICY, (v) => (launched = v));
      // Run once what a claim runs, so TCG has translated those paths already:
      // the first /init and the first exec after a restore each cost ~10x more.
      await vm.initGuest(initRequest(id, undefined), Date.now() + RESTORE_TIMEOUT_MS);
      await collectExec(execEvents(vm.agent, { cmd: ['true'] }, AbortSignal.timeout(RESTORE_TIMEOUT_MS)));
      // Waiting costs no CPU: an idle guest still takes timer interrupts, which TCG pays for on the host.
      await vm.handle.pause();
      return { id, vm: vm.handle, guest: vm.guest, discard, memory };
    } catch (err) {
      await discard();
      throw err;
    }
  }

  validateResources(vcpus: number, memoryMiB: number): void {
    const hostCpus = os.cpus().length;
    if (!Number.isInteger(vcpus) || vcpus < limits.minVcpus || vcpus > Math.min(limits.maxVcpus, hostCpus)) {
      throw new CapsuleError(
        'invalid_argument',
        `vcpus must be a whole number from ${limits.minVcpus} to ${Math.min(limits.maxVcpus, hostCpus)}, got ${vcpus}`,
        {
          hint: `this host has ${hostCpus} CPUs`,
        },
      );
    }
    if (!Number.isInteger(memoryMiB) || memoryMiB < limits.minMemoryMiB || memoryMiB > limits.maxMemoryMiB) {
      throw new CapsuleError(
        'invalid_argument',
        `memory must be from ${limits.minMemoryMiB} to ${limits.maxMemoryMiB} MiB, got ${memoryMiB}`,
        {
          hint: 'pass the memory in MiB, e.g. 512',
        },
      );
    }
    const budget = effectiveMemoryBudgetMiB(this.config);
    if (memoryMiB > budget) {
      throw new CapsuleError('insufficient_resources', `${memoryMiB} MiB is more than this host lets sandboxes use (${budget} MiB)`, {
        hint: 'ask for less memory, or raise CAPSULE_MEMORY_BUDGET_MIB',
      });
    }
  }
}
