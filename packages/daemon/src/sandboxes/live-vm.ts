// One running VM as this daemon holds it: QEMU's pid and QMP connection, the
// agent client and the console capture. Booting, restoring and stopping a VM
// go through here so that sandboxes, warm-pool VMs and template builds all do
// them the same way. It never touches the store.
import fs from 'node:fs';
import path from 'node:path';
import { AgentClient, type AgentInitRequest } from '../agent/client.js';
import { BulkChannel } from '../agent/bulk-channel.js';
import { errorMessage } from '../errors.js';
import { isProcessAlive, tailOfFile, terminateGroup } from '../launcher.js';
import { ConsoleLog, readConsoleLog } from '../vmm/console-log.js';
import { restoreVmState } from '../vmm/migration.js';
import type { QmpClient, QmpEvent } from '../vmm/qmp.js';
import { startVm, stopVm, type VmRuntimePaths, type VmSpec } from '../vmm/qemu.js';

export const AGENT_PORT_DEVICE_ID = 'agent-port';
const INIT_TIMEOUT_MS = 10_000;

export class LiveVm {
  /** Set while the daemon itself is stopping the VM, so its exit is not a crash. */
  stopping = false;
  /** Set until the agent first answered; a VM that dies meanwhile is its starter's failure to report. */
  booting = true;
  readonly agent: AgentClient;
  /** The bulk port for large /files transfers, when the machine has one. */
  readonly bulk: BulkChannel | undefined;
  private readonly console: ConsoleLog;

  constructor(
    readonly pid: number,
    readonly qmp: QmpClient,
    readonly paths: VmRuntimePaths,
    readonly consoleLogFile: string,
    bulkPort: boolean,
  ) {
    this.agent = new AgentClient(paths.agentSocket);
    this.bulk = bulkPort ? new BulkChannel(paths.bulkSocket) : undefined;
    this.console = new ConsoleLog(paths.consoleSocket, consoleLogFile);
    this.console.attach();
  }

  /** Starts QEMU for `spec` and attaches to it; the guest boots (or waits for a restore, with `spec.incoming`). */
  static async launch(spec: VmSpec, paths: VmRuntimePaths, consoleLogFile: string): Promise<LiveVm> {
    fs.mkdirSync(path.dirname(consoleLogFile), { recursive: true, mode: 0o700 });
    const { pid, qmp } = await startVm(spec, paths);
    return new LiveVm(pid, qmp, paths, consoleLogFile, spec.bulkPort === true);
  }

  get alive(): boolean {
    return isProcessAlive(this.pid);
  }

  /** After a cold boot: waits for the guest to open the agent port, then for the agent to answer. */
  async waitForBoot(deadline: number): Promise<void> {
    const portOpen = (event: QmpEvent) => event.event === 'VSERPORT_CHANGE' && event.data?.id === AGENT_PORT_DEVICE_ID && event.data?.open === true;
    try {
      await this.qmp.waitForEvent(portOpen, Math.max(1, deadline - Date.now()));
    } catch (err) {
      throw new Error(`the guest agent did not start: ${errorMessage(err)}`);
    }
    await this.waitForHealthyAgent(deadline);
    this.booting = false;
  }

  /**
   * After `launch` with `incoming`: loads a saved state and lets the guest run,
   * then waits for the agent. A warm snapshot's state has no RAM (it is the
   * mapped memory file); a paused sandbox's has all of it (`ramInState`).
   * `beforeRun` sets up the loaded VM (its network) before the guest runs.
   */
  async restore(stateFile: string, deadline: number, ramInState = false, beforeRun?: () => Promise<void>): Promise<void> {
    await restoreVmState(this.qmp, stateFile, !ramInState, beforeRun).catch((err: unknown) => {
      // QEMU says why a state does not load (a device that differs) only in its own log.
      const log = tailOfFile(this.paths.qemuLog, 1024).trim();
      throw new Error(`${errorMessage(err)}${log ? `: ${log.split('\n').slice(-3).join(' | ')}` : ''}`);
    });
    await this.waitForHealthyAgent(deadline);
    this.booting = false;
  }

  /**
   * Retries the agent's health check until `deadline`. A retry matters after a
   * reconnect too: a write the guest had in flight when the previous host side
   * left may arrive first on the new connection and break that HTTP/2 session.
   */
  async waitForHealthyAgent(deadline: number): Promise<void> {
    for (;;) {
      try {
        await this.agent.health(Math.max(1, Math.min(5000, deadline - Date.now())));
        return;
      } catch (err) {
        if (Date.now() >= deadline || !this.alive) throw new Error(`the guest agent did not answer: ${errorMessage(err)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  /**
   * Tells a restored guest who it is now: time, entropy, hostname, env. Tried
   * again once on a fresh session if the first fails: bytes the guest was
   * writing when it was saved can still break the session right after a
   * restore, and /init is safe to repeat.
   */
  async initGuest(request: AgentInitRequest): Promise<void> {
    try {
      await this.agent.init(request, INIT_TIMEOUT_MS);
    } catch {
      this.agent.close();
      await this.waitForHealthyAgent(Date.now() + INIT_TIMEOUT_MS);
      await this.agent.init(request, INIT_TIMEOUT_MS);
    }
  }

  /** The last `maxBytes` of the console, for error messages. */
  consoleTail(maxBytes = 2048): string {
    return readConsoleLog(this.consoleLogFile, maxBytes).toString('utf8').trim();
  }

  /** Lets go of the VM without stopping it (daemon shutdown: the next daemon adopts it). */
  detach(): void {
    this.agent.close();
    this.console.detach();
    this.qmp.close();
  }

  /** Stops QEMU (QMP quit, then signals) and detaches. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.alive) await stopVm(this.pid, this.qmp);
    this.detach();
  }

  /** For a VM whose QMP connection cannot be had: signals only. */
  static async kill(pid: number): Promise<void> {
    await terminateGroup(pid, 2000);
  }
}
