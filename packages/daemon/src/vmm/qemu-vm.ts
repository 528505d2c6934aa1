// One running QEMU as this daemon holds it (the QEMU `VmHandle`): its pid and
// QMP connection, the console capture and QEMU's own log. Sandboxes,
// warm-pool VMs and template builds all boot, restore, save and stop VMs
// through here. It never talks to the guest agent and never touches the store.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { errorMessage } from '../errors.js';
import { capDetachedLog, isProcessAlive, runCommand, tailOfFile } from '../launcher.js';
import { ConsoleLog, readConsoleLog } from './console-log.js';
import type { GuestPorts, VmHandle, VmmDriver, VmRunState } from './driver.js';
import { freezeVm, type FrozenVm } from './freeze.js';
import { restoreVmState, saveVmState } from './migration.js';
import { activeJail } from './jail.js';
import { QmpClient, type QmpEvent } from './qmp.js';
import {
  findRunningVm,
  findVmsUnder,
  killVm,
  NIC_DEVICE_ID,
  qemuVersion,
  startVm,
  stopVm,
  type VmRuntimePaths,
  type VmSpec,
} from './qemu.js';

export const AGENT_PORT_DEVICE_ID = 'agent-port';

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
/** The uid and gid a process runs as (a jailed QEMU's own; root's otherwise). */
function processOwner(pid: number): { uid: number; gid: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const uid = Number(/^Uid:\s+\d+\s+(\d+)/m.exec(status)?.[1]);
  const gid = Number(/^Gid:\s+\d+\s+(\d+)/m.exec(status)?.[1]);
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new Error(`cannot read the owner of process ${pid}`);
  return { uid, gid };
}

/** QEMU's own log (runtime folder, often tmpfs): a guest can make QEMU warn, so it is kept near this size. */
const QEMU_LOG_LIMIT_BYTES = 256 * 1024;
const QEMU_LOG_CHECK_MS = 5000;

/** Migration states in which QEMU is still writing a state out (a pause's stream, a freeze). */
const MIGRATION_ACTIVE = new Set(['setup', 'active', 'device', 'pre-switchover', 'cancelling', 'postcopy-active', 'wait-unplug']);

export class QemuVm implements VmHandle {
  stopping = false;
  readonly guestPorts: GuestPorts;
  private readonly console: ConsoleLog;
  private readonly qemuLogCap: NodeJS.Timeout;

  constructor(
    readonly pid: number,
    private readonly qmp: QmpClient,
    private readonly paths: VmRuntimePaths,
    private readonly consoleLogFile: string,
    bulkPort: VmSpec['bulkPort'],
  ) {
    // `true` is a machine launched before the port's contract had versions: version 1.
    const bulkVersion = bulkPort === true ? 1 : bulkPort || undefined;
    this.guestPorts = {
      agentSocket: paths.agentSocket,
      bulk: bulkVersion ? { socket: paths.bulkSocket, version: bulkVersion } : undefined,
    };
    this.console = new ConsoleLog(paths.consoleSocket, consoleLogFile);
    this.console.attach();
    this.qemuLogCap = setInterval(() => capDetachedLog(paths.qemuLog, QEMU_LOG_LIMIT_BYTES), QEMU_LOG_CHECK_MS).unref();
    lowerCpuPriority(pid);
  }

  get alive(): boolean {
    return isProcessAlive(this.pid);
  }

  get connected(): boolean {
    return !this.qmp.isClosed;
  }

  async waitForAgentPort(deadline: number): Promise<void> {
    const portOpen = (event: QmpEvent) =>
      event.event === 'VSERPORT_CHANGE' && event.data?.id === AGENT_PORT_DEVICE_ID && event.data?.open === true;
    try {
      await this.qmp.waitForEvent(portOpen, Math.max(1, deadline - Date.now()));
    } catch (err) {
      throw new Error(`the guest agent did not start: ${errorMessage(err)}`);
    }
  }

  /**
   * A warm snapshot's state has no RAM (it is the mapped memory file); a paused
   * sandbox's has all of it. The agent is not asked whether it is up: the
   * caller's /init is the first request, and waits for it.
   */
  async restore(stateFile: string, ramInState: boolean, beforeRun?: () => Promise<void>): Promise<void> {
    await restoreVmState(this.qmp, this.paths, stateFile, !ramInState, beforeRun).catch((err: unknown) => {
      // QEMU says why a state does not load (a device that differs) only in its own log.
      const log = this.logTail();
      throw new Error(`${errorMessage(err)}${log ? `: ${log}` : ''}`);
    });
  }

  async saveState(file: string, options: { withRam: boolean }): Promise<void> {
    await saveVmState(this.qmp, this.paths, file, !options.withRam);
  }

  async freeze(machine: VmSpec, dir: string, helperRuntimeDir: string): Promise<FrozenVm> {
    return await freezeVm(this.qmp, this.paths, machine, dir, helperRuntimeDir);
  }

  async pause(): Promise<void> {
    await this.qmp.execute('stop');
  }

  async resume(): Promise<void> {
    await this.qmp.execute('cont');
  }

  async status(): Promise<VmRunState> {
    const { status } = await this.qmp.execute<{ status: string }>('query-status');
    return { running: status === 'running', detail: status };
  }

  async cancelSave(): Promise<void> {
    await this.qmp.execute('migrate_cancel').catch(() => undefined);
    for (const deadline = Date.now() + 10_000; Date.now() < deadline; ) {
      const migration = await this.qmp.execute<{ status?: string }>('query-migrate');
      if (!MIGRATION_ACTIVE.has(migration.status ?? '')) break;
      await sleep(50);
    }
  }

  /**
   * The daemon makes the new overlay and gives it to QEMU's uid: a jailed QEMU
   * can create nothing itself, and sees only its disk's folder, where `file`
   * must therefore lie.
   */
  async snapshotRootDisk(file: string): Promise<void> {
    const devices =
      await this.qmp.execute<{ device: string; inserted?: { image: { filename: string; 'virtual-size': number } } }[]>('query-block');
    const top = devices.find((d) => d.device === 'root')?.inserted?.image;
    if (!top) throw new Error('the VM has no root disk to snapshot');
    // -u: the top image is open (and locked) by QEMU; its size is given instead of read.
    await runCommand('qemu-img', [
      'create',
      '-q',
      '-u',
      '-f',
      'qcow2',
      '-F',
      'qcow2',
      '-b',
      top.filename,
      file,
      String(top['virtual-size']),
    ]);
    const { uid, gid } = processOwner(this.pid);
    fs.chownSync(file, uid, gid);
    await this.qmp.execute('blockdev-snapshot-sync', { device: 'root', 'snapshot-file': file, format: 'qcow2', mode: 'existing' });
  }

  async setLink(up: boolean): Promise<void> {
    await this.qmp.execute('set_link', { name: NIC_DEVICE_ID, up });
  }

  onClose(listener: () => void): void {
    this.qmp.on('close', listener);
  }

  killedForMemory(): boolean {
    return activeJail()?.oomKilled(this.pid) ?? false;
  }

  logTail(): string {
    const log = tailOfFile(this.paths.qemuLog, 1024).trim();
    return log ? log.split('\n').slice(-3).join(' | ') : '';
  }

  consoleTail(maxBytes = 2048): string {
    return readConsoleLog(this.consoleLogFile, maxBytes).toString('utf8').trim();
  }

  detach(): void {
    this.console.detach();
    clearInterval(this.qemuLogCap);
    this.qmp.close();
  }

  /** QMP quit, then signals. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.alive) await stopVm(this.pid, this.qmp);
    await this.console.finish();
    this.detach();
  }
}

/** The QEMU driver: every VM of this daemon runs on it. */
export const qemuDriver: VmmDriver = {
  capabilities: { stateWithoutRam: true, nicLink: true, liveDiskSnapshot: true },
  version: qemuVersion,
  async launch(spec, paths, consoleLogFile) {
    fs.mkdirSync(path.dirname(consoleLogFile), { recursive: true, mode: 0o700 });
    const { pid, qmp } = await startVm(spec, paths);
    return new QemuVm(pid, qmp, paths, consoleLogFile, spec.bulkPort);
  },
  findRunning: findRunningVm,
  findAllUnder: findVmsUnder,
  async reattach(pid, paths, consoleLogFile, bulkPort, options) {
    const qmp = await QmpClient.connect(paths.qmpSocket, options);
    return new QemuVm(pid, qmp, paths, consoleLogFile, bulkPort);
  },
  kill: killVm,
};
