// Pause and resume: a paused sandbox has no QEMU, only its saved state (a
// whole-state stream, later turned into a mapped memory file by
// paused-memory.ts) and its disk overlay. A pause that fails leaves the VM
// running as it was; a resume that fails ends the sandbox in `error`, with
// nothing of the attempt left running.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { CapsuleError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { egressPolicyOf } from '../network/egress-policy.js';
import type { SandboxNetworks } from '../network/sandbox-networks.js';
import type { SandboxRecord, Store } from '../store/store.js';
import { canFreeze, frozenFiles } from '../vmm/freeze.js';
import type { VmSpec } from '../vmm/qemu.js';
import { testOnlyDelay } from '../test-only-delay.js';
import type { PausedMemoryConverter } from './paused-memory.js';
import type { PublishedPorts } from './published-ports.js';
import type { SandboxVm } from './sandbox-vm.js';
import { expiryFrom, RESTORE_TIMEOUT_MS, type SandboxVms } from './sandbox-vms.js';

/**
 * The machine to load a whole saved state (pause, fork) into: the same one,
 * waiting for the state. The state carries all of RAM, so a memory backend
 * keeps its name but needs no file.
 */
export function wholeStateRestoreSpec(machine: VmSpec): VmSpec {
  return { ...machine, incoming: true, ...(machine.memoryBackend ? { memoryBackend: { type: 'ram' as const } } : {}) };
}

/**
 * Stops the guest and writes its memory and devices to `file` (fsynced,
 * owner-only). The agent connection is closed first: no session of it may be
 * mid-write in the guest when it is frozen.
 */
export async function saveWholeVm(vm: SandboxVm, file: string): Promise<void> {
  vm.agent.close();
  await vm.handle.saveState(file, { withRam: true });
  const fd = fs.openSync(file, 'r');
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  fs.chmodSync(file, 0o600);
}

export class PauseResume {
  /** Sandboxes being resumed: a conversion restarted now would run a helper on the state the resume reads, and could put an old state back in place after it. */
  private readonly resuming = new Set<string>();

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
    private readonly vms: SandboxVms,
    private readonly networks: SandboxNetworks,
    private readonly ports: PublishedPorts,
    private readonly pausedMemory: PausedMemoryConverter,
  ) {}

  /**
   * Saves the whole VM (memory, devices) into the sandbox's folder, written to
   * a temporary name, fsynced and renamed, then ends QEMU: a paused sandbox
   * holds no RAM. Its disk overlay stays where it is. If saving fails, the VM
   * is resumed as it was, or recorded as failed if QEMU died meanwhile.
   * A stream to a file is written in a third of the time it takes to freeze
   * the memory into a mappable file (vmm/freeze.ts), so pause writes the
   * stream and the conversion runs afterwards (paused-memory.ts).
   * Returns the sandbox's id.
   */
  async pause(idOrName: string, reason = 'user'): Promise<string> {
    const { record, vm } = await this.vms.runningVm(idOrName);
    const id = record.id;
    if (vm.stopping || this.vms.isFreezing(id))
      throw new CapsuleError('sandbox_not_running', `sandbox ${id} is being paused, stopped, forked or snapshotted`, {
        hint: 'wait for that to finish',
      });
    const target = this.vms.pauseStateFile(id);
    const temp = `${target}.tmp`;
    const machine = this.vms.readMachine(id);
    vm.stopping = true;
    try {
      await saveWholeVm(vm, temp);
      await testOnlyDelay('PAUSE');
      fs.renameSync(temp, target);
    } catch (err) {
      fs.rmSync(temp, { force: true });
      if (vm.alive && vm.handle.connected) {
        await vm.handle.resume().catch(() => undefined);
        vm.stopping = false;
        throw new CapsuleError('internal', `pausing sandbox ${id} failed, it runs on: ${errorMessage(err)}`);
      }
      await this.vms.fail(id, 'crash', `the VM exited while it was being paused: ${errorMessage(err)}`);
      throw new CapsuleError('sandbox_not_running', `sandbox ${id} died while it was being paused`, { hint: `see \`capsule logs ${id}\`` });
    }
    // Held here too (tests): the state is in place and QEMU still runs.
    await testOnlyDelay('PAUSE');
    await vm.stop();
    this.vms.live.delete(id);
    await this.ports.release(id);
    fs.rmSync(this.vms.runtimePaths(id).dir, { recursive: true, force: true });
    await this.store.transition(id, 'paused', reason, undefined, { expires_at: null, desired_state: 'paused' });
    if (canFreeze(machine)) this.pausedMemory.start(id, machine, target, this.vms.pausedDir(id));
    return id;
  }

  /**
   * At daemon start: converts again each paused state whose conversion a
   * daemon stop or crash cut off (paused-memory.ts), after removing what that
   * conversion had half written. A conversion that had finished but not yet
   * removed its stream loses the stream: the mapped state is complete.
   * A sandbox being resumed is left alone: its resume reads the stream (and
   * cancels a conversion started before it).
   */
  async restartConversions(): Promise<void> {
    const paused = await this.store.sandboxesInStates(['paused']);
    await testOnlyDelay('RESTART_CONVERSIONS');
    for (const record of paused) {
      const id = record.id;
      if (this.resuming.has(id)) continue;
      const stream = this.vms.pauseStateFile(id);
      const target = this.vms.pausedDir(id);
      fs.rmSync(`${target}.tmp`, { recursive: true, force: true });
      if (!fs.existsSync(stream)) continue;
      const frozen = frozenFiles(target);
      if (fs.existsSync(frozen.state) && fs.existsSync(frozen.memory)) {
        fs.rmSync(stream, { force: true });
        continue;
      }
      try {
        const machine = this.vms.readMachine(id);
        if (canFreeze(machine)) this.pausedMemory.start(id, machine, stream, target);
      } catch (err) {
        // Its resume reads the stream, or reports what is missing.
        this.log.warn({ sandbox: id, err: errorMessage(err) }, 'could not restart the conversion of a paused state');
      }
    }
  }

  /**
   * Starts a paused sandbox's VM again from its saved state, clock corrected,
   * lifetime restarted. A missing or unreadable state ends the sandbox in
   * `error` with the reason; nothing of the attempt is left running.
   * Returns the sandbox's id.
   */
  async resume(idOrName: string): Promise<string> {
    const record = await this.vms.require(idOrName);
    const id = record.id;
    if (record.state !== 'paused') {
      throw new CapsuleError('sandbox_not_running', `sandbox ${id} is ${record.state}, not paused`, {
        hint: 'only paused sandboxes can be resumed',
      });
    }
    if (this.resuming.has(id))
      throw new CapsuleError('sandbox_not_running', `sandbox ${id} is being resumed`, { hint: 'wait for that to finish' });
    this.resuming.add(id);
    try {
      return await this.resumeVm(id, record);
    } finally {
      this.resuming.delete(id);
    }
  }

  private async resumeVm(id: string, record: SandboxRecord): Promise<string> {
    const started = Date.now();
    // Its host ports first: one taken while it was paused refuses the resume, and it stays paused.
    await this.ports.bind(id);
    // A conversion still under way is dropped: reading the stream is quicker than waiting for it.
    await this.pausedMemory.cancel(id);
    const stateFile = this.vms.pauseStateFile(id);
    const frozen = frozenFiles(this.vms.pausedDir(id));
    let mapped = false;
    let restoredMs = 0;
    try {
      const saved = this.vms.readMachine(id);
      mapped = fs.existsSync(frozen.state) && fs.existsSync(frozen.memory);
      if (!mapped && !fs.existsSync(stateFile)) throw new Error(`its saved state is missing from ${this.vms.stateDir(id)}`);
      const vm = this.vms.track(
        id,
        await this.vms.launch(
          id,
          mapped
            ? { ...saved, memoryBackend: { type: 'file', path: frozen.memory, shared: false }, incoming: true }
            : wholeStateRestoreSpec(saved),
        ),
      );
      // The policy may have changed while the sandbox was paused.
      await testOnlyDelay('RESUME');
      await vm.handle.restore(mapped ? frozen.state : stateFile, !mapped, () => this.networks.apply(id, vm.handle, egressPolicyOf(record)));
      restoredMs = Date.now() - started;
      await vm.initGuest(
        { timestamp: new Date().toISOString(), entropy: randomBytes(64).toString('hex') },
        Date.now() + RESTORE_TIMEOUT_MS,
      );
    } catch (err) {
      const message = errorMessage(err);
      await this.vms.fail(id, 'resume_failed', message);
      throw new CapsuleError('vm_start_failed', `sandbox ${id} failed to resume: ${message.split('\n')[0]}`, {
        hint: `see \`capsule inspect ${id}\` and \`capsule logs ${id}\``,
        cause: err,
      });
    }
    const tookMs = Date.now() - started;
    const initMs = tookMs - restoredMs;
    this.log.info({ sandbox: id, mapped, restoredMs, initMs }, 'sandbox resumed');
    // Where the time went, for `inspect` (and the benchmark): QEMU started with the state loaded, then the guest's first answer.
    const message = `resumed in ${tookMs} ms: state restored in ${restoredMs} ms, guest initialised in ${initMs} ms`;
    // Recorded running before the saved state goes: a daemon killed in between adopts the VM (and removes the state then).
    await this.store.transition(id, 'running', 'user', message, { expires_at: expiryFrom(record.timeout_ms), desired_state: 'running' });
    // A mapped memory file stays readable to the VM after its name is gone; the next pause writes a new state.
    fs.rmSync(this.vms.pausedDir(id), { recursive: true, force: true });
    fs.rmSync(stateFile, { force: true });
    return id;
  }
}
