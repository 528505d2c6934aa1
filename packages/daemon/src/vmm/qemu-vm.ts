// One running VM as this daemon holds it: QEMU's pid and QMP connection, the
// agent client and the console capture. Booting, restoring and stopping a VM
// go through here so that sandboxes, warm-pool VMs and template builds all do
// them the same way. It never touches the store.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bulkProtocolVersion } from '@capsule/protocol/agent';
import { AgentClient, type AgentInitRequest } from '../agent/client.js';
import { BulkChannel } from '../agent/bulk-channel.js';
import { errorMessage } from '../errors.js';
import { capDetachedLog, isProcessAlive, tailOfFile, terminateGroup } from '../launcher.js';
import { ConsoleLog, readConsoleLog } from './console-log.js';
import { restoreVmState } from './migration.js';
import type { QmpClient, QmpEvent } from './qmp.js';
import { startVm, stopVm, type VmRuntimePaths, type VmSpec } from './qemu.js';

export const AGENT_PORT_DEVICE_ID = 'agent-port';
const INIT_TIMEOUT_MS = 10_000;
/**
 * QEMU runs below the daemon's CPU priority: guests that keep every core busy
 * (many guests under TCG, or a hostile one spinning) must not starve the API
 * or a restarting daemon's reattaching. Nice is per thread on Linux, so each
 * of QEMU's threads is set; threads it starts later inherit it.
 */
export const VM_NICE = 10;

function lowerCpuPriority(pid: number): void {
  let threads: string[];
  try {
    threads = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return; // Gone already: its exit is noticed elsewhere.
  }
  for (const tid of threads) {
    try {
      os.setPriority(Number(tid), VM_NICE);
    } catch {
      // A thread that exited meanwhile.
    }
  }
}
const FIRST_INIT_ATTEMPT_MS = 1000;
const MAX_INIT_ATTEMPT_MS = 5000;
/** QEMU's own log (runtime folder, often tmpfs): a guest can make QEMU warn, so it is kept near this size. */
const QEMU_LOG_LIMIT_BYTES = 256 * 1024;
const QEMU_LOG_CHECK_MS = 5000;

export class LiveVm {
  /** Set while the daemon itself is stopping the VM, so its exit is not a crash. */
  stopping = false;
  /** Set until the agent first answered; a VM that dies meanwhile is its starter's failure to report. */
  booting = true;
  readonly agent: AgentClient;
  /** The bulk port for large /files transfers, when the machine has one. */
  readonly bulk: BulkChannel | undefined;
  private readonly console: ConsoleLog;
  private readonly qemuLogCap: NodeJS.Timeout;

  constructor(
    readonly pid: number,
    readonly qmp: QmpClient,
    readonly paths: VmRuntimePaths,
    readonly consoleLogFile: string,
    bulkPort: VmSpec['bulkPort'],
  ) {
    this.agent = new AgentClient(paths.agentSocket);
    // A machine launched before framed uploads (`true`, version 1) gets downloads only.
    this.bulk = bulkPort ? new BulkChannel(paths.bulkSocket, { uploads: bulkPort === bulkProtocolVersion }) : undefined;
    this.console = new ConsoleLog(paths.consoleSocket, consoleLogFile);
    this.console.attach();
    this.qemuLogCap = setInterval(() => capDetachedLog(paths.qemuLog, QEMU_LOG_LIMIT_BYTES), QEMU_LOG_CHECK_MS).unref();
    lowerCpuPriority(pid);
  }

  /** Starts QEMU for `spec` and attaches to it; the guest boots (or waits for a restore, with `spec.incoming`). */
  static async launch(spec: VmSpec, paths: VmRuntimePaths, consoleLogFile: string): Promise<LiveVm> {
    fs.mkdirSync(path.dirname(consoleLogFile), { recursive: true, mode: 0o700 });
    const { pid, qmp } = await startVm(spec, paths);
    return new LiveVm(pid, qmp, paths, consoleLogFile, spec.bulkPort);
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
   * After `launch` with `incoming`: loads a saved state and lets the guest run.
   * A warm snapshot's state has no RAM (it is the mapped memory file); a paused
   * sandbox's has all of it (`ramInState`). `beforeRun` sets up the loaded VM
   * (its network) before the guest runs. The agent is not asked whether it is
   * up: the caller's `initGuest` is the first request, and waits for it.
   */
  async restore(stateFile: string, ramInState = false, beforeRun?: () => Promise<void>): Promise<void> {
    await restoreVmState(this.qmp, stateFile, !ramInState, beforeRun).catch((err: unknown) => {
      // QEMU says why a state does not load (a device that differs) only in its own log.
      const log = tailOfFile(this.paths.qemuLog, 1024).trim();
      throw new Error(`${errorMessage(err)}${log ? `: ${log.split('\n').slice(-3).join(' | ')}` : ''}`);
    });
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
   * Tells a restored guest who it is now: time, entropy, hostname, env; retried
   * until `deadline`, each try on a fresh session. Right after a restore this
   * is the agent's first request, and it can fail or hang: bytes the guest was
   * writing when it was saved may reach the new connection first and break its
   * session. /init is safe to repeat.
   */
  async initGuest(request: AgentInitRequest, deadline = Date.now() + INIT_TIMEOUT_MS): Promise<void> {
    // Under TCG a restored guest's first answer takes a few hundred ms (it translates its code anew):
    // a first try is given a second, and each retry twice as long, so a lost request costs one second, not the deadline.
    for (let attemptMs = FIRST_INIT_ATTEMPT_MS; ; attemptMs = Math.min(2 * attemptMs, MAX_INIT_ATTEMPT_MS)) {
      try {
        // Stamped at each try: a retry must not set the guest's clock to when the first one was sent.
        const stamped = request.timestamp === undefined ? request : { ...request, timestamp: new Date().toISOString() };
        await this.agent.init(stamped, Math.max(1, Math.min(attemptMs, deadline - Date.now())));
        this.booting = false;
        return;
      } catch (err) {
        if (Date.now() >= deadline || !this.alive) throw new Error(`the guest agent did not take /init: ${errorMessage(err)}`);
        this.agent.close();
        await new Promise((r) => setTimeout(r, 20));
      }
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
    clearInterval(this.qemuLogCap);
    this.qmp.close();
  }

  /** Stops QEMU (QMP quit, then signals) and detaches. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.alive) await stopVm(this.pid, this.qmp);
    await this.console.finish();
    this.detach();
  }

  /** For a VM whose QMP connection cannot be had: signals only. */
  static async kill(pid: number): Promise<void> {
    await terminateGroup(pid, 2000);
  }
}
