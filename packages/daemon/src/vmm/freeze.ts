// Freezing a VM into the layout of a warm snapshot: its RAM as a memory file
// and its devices as a small state file saved without that RAM. The running
// VM's state goes over a socket into a second QEMU that waits for it with a
// *shared* memory file and never runs; that one then saves its devices with
// x-ignore-shared. Restores map the memory file privately (copy on write), so
// any number of VMs can start from one frozen state without reading a stream.
// It never decides what happens to the source VM afterwards: it is left stopped.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { errorMessage } from '../errors.js';
import { runCommand, terminateGroup } from '../launcher.js';
import { loadVmState, migrateBetween, saveVmState } from './migration.js';
import type { QmpClient } from './qmp.js';
import { startVm, stopVm, VmRuntimePaths, type VmSpec } from './qemu.js';

/** Where a frozen state lives: both files are fsynced before a freeze returns. */
export interface FrozenVm {
  /** Guest RAM, written through a shared mapping; to be mapped privately, never written again. */
  memory: string;
  /** Device state without RAM (a migration stream saved with x-ignore-shared). */
  state: string;
}

export function frozenFiles(dir: string): FrozenVm {
  return { memory: path.join(dir, 'memory'), state: path.join(dir, 'state') };
}

export function fsyncFile(file: string): void {
  const fd = fs.openSync(file, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Whether a machine's RAM is a memory backend (object `mem`): only then can its
 * state be loaded into a QEMU whose RAM is a memory file, because RAM blocks are
 * matched by name. Sandboxes booted before every VM had one do not.
 */
export function canFreeze(machine: VmSpec): boolean {
  return machine.memoryBackend !== undefined;
}

/**
 * Stops the VM behind `source` and writes its whole state into `dir` (created
 * here, owner-only) as `memory` and `state`. `machine` is the VM's own spec and
 * `sourcePaths` its runtime files; `runtimeDir` holds the helper QEMU's
 * sockets for the few moments it lives. The helper never runs guest code and
 * is always gone when this returns.
 */
export async function freezeVm(
  source: QmpClient,
  sourcePaths: VmRuntimePaths,
  machine: VmSpec,
  dir: string,
  runtimeDir: string,
): Promise<FrozenVm> {
  return await freezeInto(machine, dir, runtimeDir, (helper, paths) => migrateBetween(source, sourcePaths, helper, paths));
}

/**
 * The same from a whole-state stream file (what pause writes): the stream is
 * loaded into the helper instead of a running VM's state. `signal` ends the
 * helper early; the promise then rejects and nothing is left in `dir`'s files.
 */
export async function freezeStateFile(
  stateFile: string,
  machine: VmSpec,
  dir: string,
  runtimeDir: string,
  signal: AbortSignal,
): Promise<FrozenVm> {
  return await freezeInto(machine, dir, runtimeDir, (helper, paths) => loadVmState(helper, paths, stateFile, false), signal);
}

async function freezeInto(
  machine: VmSpec,
  dir: string,
  runtimeDir: string,
  load: (helper: QmpClient, paths: VmRuntimePaths) => Promise<void>,
  signal?: AbortSignal,
): Promise<FrozenVm> {
  const files = frozenFiles(dir);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tag = randomBytes(4).toString('hex');
  const paths = new VmRuntimePaths(path.join(runtimeDir, `freeze-${tag}`));
  // The helper needs a root disk to exist; the saved devices name none of its contents, and restores attach the real one.
  const scratchDisk = path.join(dir, `.scratch-${tag}.qcow2`);
  let helper: { pid: number; qmp: QmpClient } | undefined;
  const onAbort = () => {
    if (helper) void terminateGroup(helper.pid, 0);
  };
  signal?.addEventListener('abort', onAbort);
  try {
    await runCommand('qemu-img', ['create', '-q', '-f', 'qcow2', scratchDisk, '64M']);
    signal?.throwIfAborted();
    helper = await startVm(
      {
        ...machine,
        id: `freeze-${tag}`,
        rootDisk: scratchDisk,
        memoryBackend: { type: 'file', path: files.memory, shared: true },
        incoming: true,
        // The helper never runs, so its NIC needs no network. A TAP device belongs to the source's
        // QEMU alone; a user-mode NIC stays user-mode, because its saved state includes slirp's own,
        // but outside the sandboxes' namespace, which a restarted daemon has not made again yet.
        ...(machine.nic?.type === 'tap' && { nic: { type: 'none' } }),
        ...(machine.nic?.type === 'user' && { nic: { type: 'user' } }),
      },
      paths,
    );
    signal?.throwIfAborted();
    await load(helper.qmp, paths);
    await saveVmState(helper.qmp, paths, files.state, true);
    await stopVm(helper.pid, helper.qmp);
    helper.qmp.close();
    helper = undefined;
    signal?.throwIfAborted();
    fsyncFile(files.memory);
    fsyncFile(files.state);
    fs.chmodSync(files.memory, 0o600);
    fs.chmodSync(files.state, 0o600);
    return files;
  } catch (err) {
    throw new Error(`freezing the VM state failed: ${signal?.aborted ? 'cancelled' : errorMessage(err)}`);
  } finally {
    signal?.removeEventListener('abort', onAbort);
    if (helper) await stopVm(helper.pid, helper.qmp);
    helper?.qmp.close();
    fs.rmSync(paths.dir, { recursive: true, force: true });
    fs.rmSync(scratchDisk, { force: true });
  }
}
