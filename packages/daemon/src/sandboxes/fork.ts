// Fork and snapshot: both freeze a running sandbox for a moment (one freeze of
// a VM at a time) and continue from that moment elsewhere: forks as new
// sandboxes, a snapshot as a new warm template (snapshot.ts). The source
// always runs on afterwards.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { DaemonConfig } from '../config.js';
import { CapsuleError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { egressPolicyOf } from '../network/egress-policy.js';
import type { SandboxNetworks } from '../network/sandbox-networks.js';
import type { SandboxRecord, Store, TemplateRecord } from '../store/store.js';
import { holdFile, sweepUnheld } from '../guest/cache-holds.js';
import type { WarmSnapshots } from '../templates/warm-snapshots.js';
import { canFreeze } from '../vmm/freeze.js';
import type { VmSpec } from '../vmm/qemu.js';
import { newSandboxId } from './ids.js';
import { testOnlyDelay } from '../test-only-delay.js';
import { saveWholeVm, wholeStateRestoreSpec } from './pause-resume.js';
import type { SandboxVm } from './sandbox-vm.js';
import { expiryFrom, initRequest, RESTORE_TIMEOUT_MS, type SandboxVms } from './sandbox-vms.js';
import { freezeRunningVm, snapshotToTemplate } from './snapshot.js';

/**
 * A fork or snapshot copies the sandbox's memory and disk, not its volumes: a
 * copy of a guest that has a volume mounted would be a second writer (or a
 * reader of a disk it cannot have), so sandboxes with volumes are refused.
 */
function refuseWithVolumes(machine: VmSpec, id: string, doing: string): void {
  const names = (machine.volumes ?? []).map((volume) => path.basename(volume.file, '.ext4'));
  if (names.length === 0) return;
  throw new CapsuleError('volume_in_use', `cannot ${doing} sandbox ${id}: it has volumes attached (${names.join(', ')})`, {
    hint: 'a copy would write to the same volume; create a new sandbox and attach the volume read-only, or copy the data yourself',
  });
}

/** Fork copies restored at once: a restore keeps a core busy, so more than the host has only queues. */
const FORK_RESTORE_CONCURRENCY = Math.max(1, Math.min(4, os.cpus().length));

export class SandboxForks {
  constructor(
    private readonly store: Store,
    private readonly config: DaemonConfig,
    private readonly log: Logger,
    /** Part of every warm snapshot's key: a snapshot restores only into the QEMU that took it. */
    private readonly qemuVersion: string,
    private readonly vms: SandboxVms,
    private readonly warm: WarmSnapshots,
    private readonly networks: SandboxNetworks,
    /** Runs `work` holding `memoryMiB` more guest memory, or refuses if the host has no room for it (memory.ts). */
    private readonly whileReserved: <T>(memoryMiB: number, work: () => Promise<T>) => Promise<T>,
  ) {}

  /**
   * Starts `count` sandboxes that each continue from this moment of a running
   * sandbox. The source stops only while its memory and devices are frozen
   * into one memory file and its disk overlay is copied, then runs on; every
   * fork maps that file privately (so they share its pages), and its disk is
   * an overlay of its own on that one copy; then /init gives it its own
   * hostname, entropy and clock.
   * Returns the forks' ids.
   */
  async fork(idOrName: string, count: number): Promise<string[]> {
    const { record, vm } = await this.vms.runningVm(idOrName);
    refuseWithVolumes(this.vms.readMachine(record.id), record.id, 'fork');
    return await this.whileReserved(record.memory_mib * count, () =>
      this.vms.whileFreezing(record.id, vm, () => this.forkFrozen(record, vm, count)),
    );
  }

  private async forkFrozen(record: SandboxRecord, vm: SandboxVm, count: number): Promise<string[]> {
    const work = path.join(this.config.stateDir, 'forks', `${record.id}-${Date.now()}`);
    fs.mkdirSync(work, { recursive: true, mode: 0o700 });
    // The source's disk at this moment, shared read-only by every fork (each pins it: sandbox-vms.ts launch);
    // the work folder pins it until the forks have, and it goes with its last fork.
    const disk = path.join(this.vms.sharedDisksDir, `${path.basename(work)}.qcow2`);
    const copyDisk = async () => {
      await testOnlyDelay('FORK');
      fs.mkdirSync(this.vms.sharedDisksDir, { recursive: true, mode: 0o700 });
      fs.copyFileSync(path.join(this.vms.stateDir(record.id), 'overlay.qcow2'), disk);
      fs.chmodSync(disk, 0o400);
      holdFile(disk, work, 'disk.pin');
    };
    try {
      const machine = this.vms.readMachine(record.id);
      let restoreSpec: (id: string, overlay: string) => VmSpec;
      let stateFile: string;
      let ramInState: boolean;
      if (canFreeze(machine)) {
        const frozen = await freezeRunningVm(vm, machine, path.join(work, 'frozen'), this.vms.freezeRuntimeDir, copyDisk);
        restoreSpec = (id, overlay) => ({
          ...machine,
          id,
          rootDisk: overlay,
          memoryBackend: { type: 'file', path: frozen.memory, shared: false },
          incoming: true,
        });
        stateFile = frozen.state;
        ramInState = false;
      } else {
        stateFile = path.join(work, 'vm.state');
        try {
          await saveWholeVm(vm, stateFile);
          // The VM is stopped and its disk flushed: the overlay is consistent with the saved memory.
          await copyDisk();
        } finally {
          await vm.handle.resume().catch(() => undefined);
          await vm.waitForHealthyAgent(Date.now() + RESTORE_TIMEOUT_MS).catch(() => undefined);
        }
        restoreSpec = (id, overlay) => wholeStateRestoreSpec({ ...machine, id, rootDisk: overlay });
        ramInState = true;
      }
      // Restoring keeps a core busy: one per core at a time.
      const forks: string[] = [];
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
      sweepUnheld(this.vms.sharedDisksDir);
    }
  }

  private async startFork(
    source: SandboxRecord,
    disk: string,
    spec: (id: string, overlay: string) => VmSpec,
    stateFile: string,
    ramInState: boolean,
  ): Promise<string> {
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
      desired_state: 'running',
      // Its guest makes host keys of its own (ssh-server.ts): the parent's are not its.
      ssh_host_keys: null,
    });
    try {
      const overlay = await this.vms.createOverlay(id, disk, 'qcow2');
      const vm = this.vms.track(id, await this.vms.launch(id, spec(id, overlay)));
      await vm.handle.restore(stateFile, ramInState, () => this.networks.apply(id, vm.handle, egressPolicyOf(source)));
      await vm.initGuest(initRequest(id, undefined), Date.now() + RESTORE_TIMEOUT_MS);
      await this.store.transition(id, 'running', 'user', `forked from ${source.id}`, {
        boot_ms: Date.now() - createdAt.getTime(),
        expires_at: expiryFrom(source.timeout_ms),
      });
    } catch (err) {
      const message = errorMessage(err);
      await this.vms.fail(id, 'start_failed', message);
      throw new CapsuleError('vm_start_failed', `fork ${id} of ${source.id} failed to start: ${message.split('\n')[0]}`, {
        hint: `see \`capsule logs ${id}\``,
        cause: err,
      });
    }
    return id;
  }

  /**
   * Turns a running sandbox's current state into a new warm template (see
   * snapshot.ts); the sandbox runs on. Sandboxes created from the template
   * continue from this moment, each with its own identity.
   */
  async snapshot(idOrName: string, templateName: string): Promise<TemplateRecord> {
    const { record, vm } = await this.vms.runningVm(idOrName);
    refuseWithVolumes(this.vms.readMachine(record.id), record.id, 'snapshot');
    const template = await this.vms.whileFreezing(record.id, vm, () =>
      snapshotToTemplate(
        this.store,
        { id: record.id, vm, machine: this.vms.readMachine(record.id), overlay: path.join(this.vms.stateDir(record.id), 'overlay.qcow2') },
        templateName,
        {
          templatesDir: path.join(this.config.stateDir, 'templates'),
          runtimeDir: this.vms.freezeRuntimeDir,
          cacheDir: this.config.cacheDir,
        },
        this.qemuVersion,
      ),
    );
    this.log.info({ sandbox: record.id, template: templateName }, 'sandbox snapshotted as a template');
    await this.warm.prepareWarmSnapshot(template);
    return template;
  }
}
