// Stop and start: a stopped sandbox has no VM and holds no memory; its disk
// overlay, recorded machine and pinned base files stay, and start boots it
// cold from its own disk (the template's kernel, the sandbox's overlay). Stop
// asks the guest to flush and power off and kills QEMU only after a grace
// period; either way what the guest had fsynced is on the disk. A start that
// fails leaves the sandbox stopped with its disk, never removes it.
import fs from 'node:fs';
import path from 'node:path';
import type { SetResourcesRequest } from '@capsule/protocol';
import { collectExec, execEvents } from '../agent/exec.js';
import { CapsuleError, errorMessage } from '../errors.js';
import { qcow2VirtualSize } from '../guest/cache-pins.js';
import { runCommand, waitForExit } from '../launcher.js';
import type { Logger } from '../log.js';
import { egressPolicyOf } from '../network/egress-policy.js';
import type { SandboxNetworks } from '../network/sandbox-networks.js';
import type { SandboxRecord, Store } from '../store/store.js';
import type { Templates } from '../templates/templates.js';
import { startTemplateService } from '../templates/template-service.js';
import type { PausedMemoryConverter } from './paused-memory.js';
import type { PublishedPorts } from './published-ports.js';
import type { SandboxVm } from './sandbox-vm.js';
import { expiryFrom, initRequest, RESTORE_TIMEOUT_MS, type SandboxVms } from './sandbox-vms.js';

/** How long the guest gets to flush its disks; a guest that does not answer is powered off by QEMU anyway. */
const FLUSH_TIMEOUT_MS = 15_000;
/** How long QEMU gets to exit once the guest was told to power off, before it is made to quit. */
const POWER_OFF_WAIT_MS = 5_000;
/** Marks a root disk grown while stopped: its filesystem is grown at the next start. */
const GROW_MARK = 'grow-filesystem';

export class StopStart {
  constructor(
    private readonly store: Store,
    private readonly log: Logger,
    private readonly vms: SandboxVms,
    private readonly networks: SandboxNetworks,
    private readonly ports: PublishedPorts,
    private readonly pausedMemory: PausedMemoryConverter,
    private readonly templates: Templates,
    private readonly bootTimeoutMs: number,
  ) {}

  /**
   * Stops a running (or paused) sandbox: its VM ends, its disk stays. A
   * paused sandbox loses its saved memory (it was stopped, not paused).
   * Stopping a stopped sandbox does nothing. Returns its id.
   */
  async stop(idOrName: string, reason = 'user'): Promise<string> {
    const record = await this.vms.require(idOrName);
    const id = record.id;
    if (record.state === 'stopped') {
      await this.store.transition(id, 'stopped', record.state_reason, record.state_message ?? undefined, { desired_state: 'stopped' });
      return id;
    }
    if (record.state === 'paused') {
      await this.pausedMemory.cancel(id);
      this.vms.removeSavedState(id);
    } else {
      const { vm } = await this.vms.runningVm(id);
      if (vm.stopping || this.vms.isFreezing(id))
        throw new CapsuleError('sandbox_not_running', `sandbox ${id} is being paused, stopped, forked or snapshotted`, {
          hint: 'wait for that to finish',
        });
      vm.stopping = true;
      const how = await this.shutDown(vm);
      this.vms.live.delete(id);
      this.log.info({ sandbox: id, how }, 'sandbox stopped');
    }
    await this.ports.release(id);
    await this.networks.release(id);
    fs.rmSync(this.vms.runtimePaths(id).dir, { recursive: true, force: true });
    await this.store.transition(id, 'stopped', reason, undefined, { expires_at: null, desired_state: 'stopped' });
    return id;
  }

  /**
   * The guest syncs its disks (bounded: a hostile or hung guest cannot hold
   * the stop), remounts them read-only and powers off; QEMU is made to quit
   * if it has not exited after that. QEMU flushes its own disk cache as it
   * quits, so what the guest synced is on the host's disk in every case.
   */
  private async shutDown(vm: SandboxVm): Promise<string> {
    const guestExec = (cmd: string[], timeoutMs: number) =>
      collectExec(execEvents(vm.agent, { cmd, user: 'root' }, AbortSignal.timeout(timeoutMs)));
    let how = 'powered off by its guest';
    try {
      const flushed = await guestExec(['sync'], FLUSH_TIMEOUT_MS);
      if (flushed.exitCode !== 0) throw new Error(`sync exited with ${flushed.exitCode}`);
      // The emergency remount (u) is queued work: given a moment before the power goes (o).
      await guestExec(['sh', '-c', 'echo u > /proc/sysrq-trigger; sleep 0.5; echo o > /proc/sysrq-trigger'], POWER_OFF_WAIT_MS).catch(
        () => undefined, // The guest going away mid-answer is what success looks like.
      );
      if (!(await waitForExit(vm.pid, POWER_OFF_WAIT_MS))) how = 'made to quit after its guest did not power off';
    } catch (err) {
      how = `made to quit: its guest did not flush (${errorMessage(err)})`;
    }
    await vm.stop();
    return how;
  }

  /**
   * Boots a stopped sandbox again from its own disk, with the resources it
   * has now, and tells its guest who it is; its lifetime starts again. The
   * caller holds its memory's reservation. Returns its id.
   */
  async start(idOrName: string, reason = 'user'): Promise<string> {
    const record = await this.vms.require(idOrName);
    const id = record.id;
    if (record.state === 'running') return id;
    if (record.state !== 'stopped') {
      throw new CapsuleError('sandbox_not_running', `sandbox ${id} is ${record.state}, not stopped`, {
        hint: record.state === 'paused' ? `resume it: capsule resume ${id}` : 'only stopped sandboxes can be started',
      });
    }
    if (this.vms.live.has(id))
      throw new CapsuleError('sandbox_not_running', `sandbox ${id} is being started`, { hint: 'wait for that to finish' });
    const started = Date.now();
    await this.ports.bind(id);
    let vm: SandboxVm | undefined;
    let bootedMs = 0;
    try {
      const machine = this.vms.readMachine(id);
      vm = this.vms.track(
        id,
        await this.vms.launch(id, {
          ...machine,
          vcpus: record.vcpus,
          memoryMiB: record.memory_mib,
          incoming: false,
          // The RAM backend a freeze needs (fork, snapshot); a warm snapshot's memory file is no part of a cold boot.
          memoryBackend: { type: 'ram' },
        }),
      );
      await this.networks.apply(id, vm.handle, egressPolicyOf(record));
      await vm.waitForBoot(Date.now() + this.bootTimeoutMs);
      bootedMs = Date.now() - started;
      const { imageDefaults, service } = await this.templates.guestSetupOf(record.template);
      const env = JSON.parse(record.env) as Record<string, string>;
      await vm.initGuest(initRequest(id, env, imageDefaults), Date.now() + RESTORE_TIMEOUT_MS);
      await this.growFilesystemIfMarked(id, vm);
      if (service) await startTemplateService(vm.agent, { ...service, env });
    } catch (err) {
      const message = errorMessage(err);
      if (vm) {
        vm.stopping = true;
        await vm.stop();
      }
      this.vms.live.delete(id);
      await this.ports.release(id);
      await this.networks.release(id);
      fs.rmSync(this.vms.runtimePaths(id).dir, { recursive: true, force: true });
      await this.store.transition(id, 'stopped', 'start_failed', message);
      throw new CapsuleError('vm_start_failed', `sandbox ${id} failed to start: ${message.split('\n')[0]}`, {
        hint: `it is stopped with its disk; see \`capsule logs ${id}\``,
        cause: err,
      });
    }
    const bootMs = Date.now() - started;
    this.log.info({ sandbox: id, bootMs, bootedMs, reason }, 'sandbox started');
    await this.store.transition(id, 'running', reason, `booted from its own disk in ${bootMs} ms`, {
      boot_ms: bootMs,
      expires_at: expiryFrom(record.timeout_ms),
      desired_state: 'running',
    });
    return id;
  }

  /** Changes a stopped sandbox's CPUs, memory or disk for its next start (validated by the caller); the disk only grows. */
  async setResources(record: SandboxRecord, request: SetResourcesRequest): Promise<void> {
    const id = record.id;
    if (record.state !== 'stopped') {
      throw new CapsuleError('sandbox_not_stopped', `sandbox ${id} is ${record.state}: its resources change only while it is stopped`, {
        hint: `stop it first: capsule stop ${id}`,
      });
    }
    if (request.diskMiB !== undefined) {
      const overlay = path.join(this.vms.stateDir(id), 'overlay.qcow2');
      const currentBytes = qcow2VirtualSize(overlay);
      if (currentBytes === undefined) throw new Error(`cannot read the size of ${overlay}`);
      const wantedBytes = request.diskMiB * 1024 * 1024;
      if (wantedBytes < currentBytes) {
        throw new CapsuleError('invalid_argument', `the disk is ${Math.ceil(currentBytes / 1048576)} MiB; it can grow, not shrink`, {
          hint: 'ask for a size at least as large as the current one',
        });
      }
      if (wantedBytes > currentBytes) {
        await runCommand('qemu-img', ['resize', '-q', '-f', 'qcow2', overlay, String(wantedBytes)]);
        fs.writeFileSync(path.join(this.vms.stateDir(id), GROW_MARK), '', { mode: 0o600 });
      }
    }
    await this.store.setResources(id, { vcpus: request.vcpus ?? record.vcpus, memory_mib: request.memoryMiB ?? record.memory_mib });
  }

  /**
   * After a disk grew while stopped: grows the root filesystem to fill it,
   * online (ext4). A guest without resize2fs keeps its old size, with a
   * warning; the mark stays so that the next start tries again.
   */
  private async growFilesystemIfMarked(id: string, vm: SandboxVm): Promise<void> {
    const mark = path.join(this.vms.stateDir(id), GROW_MARK);
    if (!fs.existsSync(mark)) return;
    const grown = await collectExec(
      execEvents(
        vm.agent,
        // The root device is whatever the initramfs mounted as /: read from the guest's own mount table.
        { cmd: ['sh', '-c', 'resize2fs "$(awk \'$2 == "/" { print $1 }\' /proc/mounts)"'], user: 'root' },
        AbortSignal.timeout(RESTORE_TIMEOUT_MS),
      ),
    );
    if (grown.exitCode === 0) fs.rmSync(mark, { force: true });
    else this.log.warn({ sandbox: id, stderr: grown.stderr.slice(0, 500) }, 'could not grow the root filesystem to the new disk size');
  }
}
