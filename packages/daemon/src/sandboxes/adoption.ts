// Reattaching to the VMs a previous daemon left running (it stopped, or was
// killed at any point, even mid pause, fork or snapshot). The API serves while
// this runs: sandboxes not yet reattached say so, and calls that need their VM
// wait for it. It never kills a VM whose VMM still runs: a control socket that
// does not answer is tried again, and only a VMM whose pid is gone is dead.
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CapsuleError, errorMessage } from '../errors.js';
import { isProcessAlive } from '../launcher.js';
import type { Logger } from '../log.js';
import type { SandboxRecord, Store } from '../store/store.js';
import type { VmHandle } from '../vmm/driver.js';
import type { VmSpec } from '../vmm/qemu.js';
import { SandboxVm } from './sandbox-vm.js';
import type { SandboxVms } from './sandbox-vms.js';

/** What a sandbox not yet reattached says in its `stateMessage`. */
export const REATTACHING_MESSAGE = 'reattaching after daemon restart';
/** VMs reattached at once: each is a VMM handshake and an agent health check, cheap unless the host is loaded. */
const ADOPT_CONCURRENCY = 8;
/** One attempt to reattach; a VMM may serve one control connection at a time (QEMU does), so a busy one is tried again after this. */
const REATTACH_ATTEMPT_MS = 10_000;
/** How long an adopted VM's agent is given to answer before it is adopted anyway (it runs; it is not killed for being slow). */
const AGENT_ANSWER_MS = 60_000;
/** How long a call on a sandbox being reattached waits for it before answering `sandbox_reattaching`. */
const CALL_WAIT_MS = 20_000;

interface PendingAdoption {
  /** Whether a worker has taken it (else dropping it settles it at once). */
  started: boolean;
  settled: Promise<void>;
  settle: () => void;
  abort: AbortController;
  pid: number | undefined;
}

export class SandboxAdoption {
  private closing = false;
  /** Running sandboxes whose VM is not reattached yet; `settled` resolves once this daemon is done trying. */
  private readonly pending = new Map<string, PendingAdoption>();

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
    private readonly vms: SandboxVms,
  ) {}

  isReattaching(id: string): boolean {
    return this.pending.has(id);
  }

  /** The pid of a sandbox's QEMU while it is being reattached (a live one's comes from its SandboxVm). */
  reattachingPid(id: string): number | undefined {
    return this.pending.get(id)?.pid;
  }

  /**
   * Before the API serves: notes every running sandbox as reattaching, and
   * ends those no daemon can finish: sandboxes caught `starting` and template
   * build sandboxes (their build died with the daemon). Returns the ids whose
   * VMs must be kept; everything else in the runtime folder is an orphan.
   */
  async prepare(): Promise<Set<string>> {
    const keep = new Set<string>();
    for (const record of await this.store.sandboxesInStates(['starting', 'running'])) {
      if ((JSON.parse(record.metadata) as Record<string, string>)['capsule.build'] === 'true') {
        // A build sandbox lives as long as its build, which ended with the previous daemon, and
        // goes without a trace (starting or running): nobody asked for it, so nobody is told.
        await this.vms.removeVmFiles(record.id, { keepRuntime: true });
        fs.rmSync(this.vms.stateDir(record.id), { recursive: true, force: true });
        await this.store.transition(record.id, 'killed', 'daemon_restart', 'its template build ended with the previous capsuled', {
          expires_at: null,
        });
      } else if (record.state === 'starting') {
        await this.vms.removeVmFiles(record.id, { keepRuntime: true });
        await this.store.transition(record.id, 'error', 'daemon_restart', 'capsuled stopped while this sandbox was starting');
      } else {
        const pid = this.vms.driver.findRunning(this.vms.runtimePaths(record.id), record.id);
        // A VM that is gone is known at once (and costs nothing to settle); only live ones wait for a worker.
        if (pid === undefined) {
          await this.settleGone(record);
          continue;
        }
        keep.add(record.id);
        let settle = () => {};
        const settled = new Promise<void>((resolve) => (settle = resolve));
        this.pending.set(record.id, { started: false, settled, settle, abort: new AbortController(), pid });
      }
    }
    return keep;
  }

  /** Reattaches every sandbox `prepare` kept, a few at a time; `afterEach` runs once each is settled, live or not. Resolves when all are settled. */
  async run(afterEach: (id: string) => Promise<void>): Promise<void> {
    const ids = [...this.pending.keys()];
    const started = Date.now();
    let next = 0;
    const worker = async () => {
      while (next < ids.length && !this.closing) {
        const id = ids[next++]!;
        const entry = this.pending.get(id);
        if (!entry) continue; // Removed before its turn came.
        entry.started = true;
        try {
          await this.adoptOne(id, entry.abort.signal);
        } catch (err) {
          this.log.error({ sandbox: id, err: errorMessage(err) }, 'reattaching a sandbox failed; its VM is left as it is');
        } finally {
          this.pending.delete(id);
          entry.settle();
        }
        await afterEach(id).catch((err: unknown) => this.log.error({ sandbox: id, err: errorMessage(err) }, 'after reattaching a sandbox'));
      }
    };
    await Promise.all(Array.from({ length: Math.min(ADOPT_CONCURRENCY, ids.length) }, worker));
    if (ids.length > 0)
      this.log.info(
        { sandboxes: ids.length, live: ids.filter((id) => this.vms.live.has(id)).length, ms: Date.now() - started },
        'reattached sandboxes',
      );
  }

  /** Waits (up to CALL_WAIT_MS) for a sandbox being reattached; a call on it then finds its VM, or answers 503. */
  async waitFor(id: string): Promise<void> {
    const entry = this.pending.get(id);
    if (!entry) return;
    const settled = await Promise.race([entry.settled.then(() => true), sleep(CALL_WAIT_MS, false, { ref: false })]);
    if (!settled) {
      throw new CapsuleError('sandbox_reattaching', `sandbox ${id} is still being reattached after a daemon restart`, {
        hint: 'try again in a few seconds',
      });
    }
  }

  /** Stops reattaching `id` (it is being removed) and returns the pid of its QEMU, if one still runs and was not adopted. */
  async cancel(id: string): Promise<number | undefined> {
    const entry = this.pending.get(id);
    if (!entry) return undefined;
    this.drop(id, entry);
    await entry.settled;
    return this.vms.live.has(id) ? undefined : this.vms.driver.findRunning(this.vms.runtimePaths(id), id);
  }

  /** Daemon shutdown: stops every adoption under way (the VMs run on for the next daemon). */
  async close(): Promise<void> {
    this.closing = true;
    const entries = [...this.pending.entries()];
    for (const [id, entry] of entries) this.drop(id, entry);
    await Promise.all(entries.map(([, entry]) => entry.settled));
  }

  /** Aborts an adoption under way; one whose turn has not come is settled at once. */
  private drop(id: string, entry: PendingAdoption): void {
    entry.abort.abort();
    if (!entry.started) {
      this.pending.delete(id);
      entry.settle();
    }
  }

  private async adoptOne(id: string, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return;
    const record = await this.vms.require(id);
    const paths = this.vms.runtimePaths(id);
    const pid = this.vms.driver.findRunning(paths, id);
    if (pid === undefined) return await this.settleGone(record);
    const bulkPort = this.vms.hasMachine(id) ? this.vms.readMachine(id).bulkPort : undefined;
    let handle: VmHandle;
    try {
      handle = await this.reattachWhileAlive(id, pid, bulkPort, signal);
    } catch (err) {
      if (signal.aborted) return;
      this.log.warn({ sandbox: id, err: errorMessage(err) }, 'its QEMU exited while being reattached');
      return await this.settleGone(record);
    }
    const vm = new SandboxVm(handle);
    try {
      if ((await this.continueInterruptedFreeze(id, handle)) === 'paused') {
        await vm.stop();
        await this.settlePaused(id);
        this.log.info({ sandbox: id }, 'a pause cut short by the daemon stopping finished as paused');
        return;
      }
    } catch (err) {
      if (!vm.alive) {
        vm.detach();
        return await this.settleGone(record);
      }
      // A VM that runs is adopted whatever its VMM said: its sandbox is the user's.
      this.log.error({ sandbox: id, err: errorMessage(err) }, 'could not check whether a reattached VM runs');
    }
    this.vms.track(id, vm);
    try {
      await vm.waitForHealthyAgent(Date.now() + AGENT_ANSWER_MS);
    } catch (err) {
      this.log.warn({ sandbox: id, err: errorMessage(err) }, 'reattached a VM whose agent does not answer yet');
    }
    vm.booting = false;
    this.log.info({ sandbox: id, pid }, 'adopted running sandbox');
  }

  /**
   * QEMU serves one QMP client at a time: while anything else holds its socket
   * the driver's reattach does not get through. That is tried again, for as
   * long as the VM's process lives; only its pid going away ends the attempt.
   */
  private async reattachWhileAlive(id: string, pid: number, bulkPort: VmSpec['bulkPort'], signal: AbortSignal): Promise<VmHandle> {
    const isAlive = () => isProcessAlive(pid) && !signal.aborted;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.vms.driver.reattach(pid, this.vms.runtimePaths(id), this.vms.consoleLogFile(id), bulkPort, {
          timeoutMs: REATTACH_ATTEMPT_MS,
          isAlive,
        });
      } catch (err) {
        if (signal.aborted) throw new Error('cancelled');
        if (!isProcessAlive(pid)) throw err;
        this.log.warn({ sandbox: id, pid, attempt, err: errorMessage(err) }, 'QMP did not answer; trying again (the VM runs)');
        await sleep(Math.min(5000, 250 * attempt), undefined, { signal }).catch(() => undefined);
      }
    }
  }

  /**
   * A VM the previous daemon had stopped to pause, fork or snapshot it, and
   * died before letting it go on. A pause whose state was saved and renamed
   * into place ends as `paused` (returned); anything else is cancelled and the
   * guest continues. A leftover of a finished resume is removed.
   */
  private async continueInterruptedFreeze(id: string, vm: VmHandle): Promise<'running' | 'paused'> {
    const pauseState = this.vms.pauseStateFile(id);
    const status = await vm.status();
    if (status.running) {
      // A resume that ran the guest but had not removed its state yet.
      fs.rmSync(pauseState, { force: true });
      fs.rmSync(this.vms.pausedDir(id), { recursive: true, force: true });
      return 'running';
    }
    if (fs.existsSync(pauseState)) return 'paused';
    await vm.cancelSave();
    fs.rmSync(`${pauseState}.tmp`, { force: true });
    await vm.resume();
    this.log.warn({ sandbox: id, was: status.detail }, 'continued a VM the previous daemon had stopped mid pause, fork or snapshot');
    return 'running';
  }

  /** A sandbox whose pause had saved its state when the daemon stopped: paused, its VM's runtime folder gone. */
  private async settlePaused(id: string): Promise<void> {
    fs.rmSync(this.vms.runtimePaths(id).dir, { recursive: true, force: true });
    await this.store.transition(id, 'paused', 'daemon_restart', 'capsuled stopped while pausing this sandbox, after its state was saved', {
      expires_at: null,
      desired_state: 'paused',
    });
  }

  /**
   * A running sandbox whose QEMU is gone: paused if its pause had saved the
   * state; stopped with its disk after a host restart (its runtime folder is
   * gone with the host's /run; the manager starts it again); else an error.
   */
  private async settleGone(record: SandboxRecord): Promise<void> {
    const id = record.id;
    const paths = this.vms.runtimePaths(id);
    if (fs.existsSync(this.vms.pauseStateFile(id))) return await this.settlePaused(id);
    if (!fs.existsSync(paths.dir) && this.vms.hasMachine(id)) {
      // Its network goes with the others no sandbox runs in (SandboxNetworks.start), and comes back at its start.
      await this.store.transition(id, 'stopped', 'host_restart', 'the host restarted while it ran', { expires_at: record.expires_at });
      this.log.warn({ sandbox: id }, 'sandbox stopped by a host restart; it is started again');
      return;
    }
    const reason = fs.existsSync(paths.dir) ? 'crash' : 'host_restart';
    const message = reason === 'crash' ? 'the VM exited while capsuled was not running' : 'the host restarted';
    await this.vms.removeVmFiles(id);
    await this.store.transition(id, 'error', reason, message);
    this.log.warn({ sandbox: id, reason }, 'sandbox lost while the daemon was down');
  }
}

/** Folders a fork or a snapshot writes while it runs; none runs before the daemon serves, so what is there is a crash's. */
export function sweepInterruptedWork(stateDir: string, snapshotDirs: Set<string>, log: Logger): void {
  const remove = (dir: string) => {
    log.warn({ dir }, 'removing what an interrupted fork or snapshot left');
    fs.rmSync(dir, { recursive: true, force: true });
  };
  const forks = path.join(stateDir, 'forks');
  for (const name of fs.existsSync(forks) ? fs.readdirSync(forks) : []) remove(path.join(forks, name));
  const templates = path.join(stateDir, 'templates');
  for (const name of fs.existsSync(templates) ? fs.readdirSync(templates) : []) {
    const dir = path.join(templates, name);
    // A temp folder, or one renamed into place whose template row was never written.
    if (!snapshotDirs.has(dir)) remove(dir);
  }
}
