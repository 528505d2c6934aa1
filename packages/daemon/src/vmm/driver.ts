// The one door to a virtual machine monitor: starting a VM, reattaching to one
// a previous daemon left running, and a handle per running VM for everything
// the daemon asks of it. Nothing outside vmm/ speaks a VMM's own protocol, and
// nothing here knows about sandboxes, templates or the store.
//
// QEMU (qemu-vm.ts) is the one driver. How the others would map, unbuilt:
// - Firecracker: launch = configure over its API socket, then InstanceStart;
//   restore = PUT /snapshot/load into a fresh process (a File memory backend,
//   mapped privately); pause/resume = PATCH /vm Paused/Resumed; saveState and
//   freeze = PUT /snapshot/create, which always writes memory and state apart
//   (stateWithoutRam false); no link switch or live disk snapshot (nicLink,
//   liveDiskSnapshot false); the agent port is a vsock behind a unix socket.
// - Cloud Hypervisor: vm.create + vm.boot; vm.pause/vm.resume; saveState and
//   freeze = vm.snapshot into a folder, restore = vm.restore from it; setLink by
//   unplugging the NIC (vm.remove-device) and plugging it again (vm.add-net).
// In both a snapshot is one synchronous call: cancelSave has nothing to end.
import type { FrozenVm } from './freeze.js';
import type { VmRuntimePaths, VmSpec } from './qemu.js';

/** What a driver can do beyond launching, restoring, pausing and stopping; a handle asked for a missing one rejects. */
export interface VmmCapabilities {
  /** `saveState` with `withRam: false`: RAM that lives in a shared memory file is left out of the state. */
  stateWithoutRam: boolean;
  /** `setLink`: the guest's NIC can be cut and reconnected while it runs. */
  nicLink: boolean;
  /** `snapshotRootDisk`: a running VM's disk can be frozen and its writes sent to a new overlay. */
  liveDiskSnapshot: boolean;
}

/** Whether the guest runs, and the VMM's own word for its state (for logs). */
export interface VmRunState {
  running: boolean;
  detail: string;
}

export interface VmmDriver {
  readonly capabilities: VmmCapabilities;
  /** The VMM's version; a saved state restores only into the version that wrote it. */
  version(): Promise<string>;
  /**
   * Starts a VM for `spec` and attaches to it: the guest boots, or, with
   * `spec.incoming`, waits for `VmHandle.restore`. The console is captured
   * into `consoleLogFile`.
   */
  launch(spec: VmSpec, paths: VmRuntimePaths, consoleLogFile: string): Promise<VmHandle>;
  /** The pid of VM `id` if one runs with these runtime files (left by an earlier daemon), else undefined. */
  findRunning(paths: VmRuntimePaths, id: string): number | undefined;
  /** Every VM running with its runtime files under `dir`, pid file or not. */
  findAllUnder(dir: string): { pid: number; id: string }[];
  /**
   * Attaches to VM `pid` found running; `isAlive` going false ends the
   * attempt. `bulkPort` is the one of the VM's recorded spec.
   */
  reattach(
    pid: number,
    paths: VmRuntimePaths,
    consoleLogFile: string,
    bulkPort: VmSpec['bulkPort'],
    options: { timeoutMs: number; isAlive: () => boolean },
  ): Promise<VmHandle>;
  /** Ends a VM this daemon holds no handle of: signals only. */
  kill(pid: number): Promise<void>;
}

/** Where the guest's agent ports come out on the host. */
export interface GuestPorts {
  /** The agent's HTTP/2 port, a unix socket. */
  agentSocket: string;
  /** The port for large /files transfers and the version of its contract, when the machine has one. */
  bulk: { socket: string; version: number } | undefined;
}

/** One running VM as this daemon holds it. */
export interface VmHandle {
  readonly pid: number;
  readonly alive: boolean;
  /** Set while the daemon itself is stopping (or saving) the VM, so its exit is not a crash. */
  stopping: boolean;
  /** Whether the daemon's control connection to the VMM is open (it closes when the VM exits or is let go). */
  readonly connected: boolean;
  readonly guestPorts: GuestPorts;
  /** Resolves once the guest opened its agent port; rejects at `deadline` or if the VM exits. */
  waitForAgentPort(deadline: number): Promise<void>;
  /**
   * After `launch` with `incoming`: loads a saved state and lets the guest run.
   * `ramInState` says whether the state holds RAM (else it is the mapped memory
   * file). `beforeRun` sets up the loaded VM (its network) before the guest runs.
   */
  restore(stateFile: string, ramInState: boolean, beforeRun?: () => Promise<void>): Promise<void>;
  /** Stops the guest and writes its state to `file`; without RAM, memory in a shared file is left out. The guest stays stopped. */
  saveState(file: string, options: { withRam: boolean }): Promise<void>;
  /**
   * Stops the guest and writes its whole state into `dir` as a memory file and
   * a device state (freeze.ts); `machine` is its spec. The guest stays stopped.
   */
  freeze(machine: VmSpec, dir: string, helperRuntimeDir: string): Promise<FrozenVm>;
  pause(): Promise<void>;
  /** Lets a stopped guest run again. */
  resume(): Promise<void>;
  status(): Promise<VmRunState>;
  /** Ends a save or freeze cut short (by a daemon that died), waiting until the VMM has let go of it. */
  cancelSave(): Promise<void>;
  /** Freezes the root disk as it is now; later writes go to a new qcow2 overlay at `file`. */
  snapshotRootDisk(file: string): Promise<void>;
  /** Connects or cuts the guest's NIC; the guest cannot undo a cut. */
  setLink(up: boolean): Promise<void>;
  /** Calls `listener` once when the daemon's connection to the VMM closes (the VM exited, or was let go). */
  onClose(listener: () => void): void;
  /** Whether the VM's memory limit (its cgroup) is what ended it. */
  killedForMemory(): boolean;
  /** The last lines the VMM itself logged (why it exited, why a state did not load), joined by ' | '. */
  logTail(): string;
  /** The last `maxBytes` of the guest console, for error messages. */
  consoleTail(maxBytes?: number): string;
  /** Lets go of the VM without stopping it (daemon shutdown: the next daemon reattaches it). */
  detach(): void;
  /** Stops the VM (gracefully, then by force) and detaches. */
  stop(): Promise<void>;
}
