// Warm snapshots of templates. A template VM is booted with its RAM in a
// shared memory file; once its agent answers, its device state is saved and
// its disk frozen. Sandboxes are then restores: they map the memory file
// privately (copy on write, so all of a template's sandboxes share its pages),
// load the device state and write to an overlay over the frozen disk. A
// snapshot is keyed by every input it depends on and rebuilt when one changes.
// A template with a START command has it running (and READY passed) when the
// snapshot is taken, so its sandboxes start with the service up.
import fs from 'node:fs';
import path from 'node:path';
import { bulkProtocolVersion } from '@capsule/protocol/agent';
import { CapsuleError, errorMessage } from '../errors.js';
import { runCommand } from '../launcher.js';
import type { Logger } from '../log.js';
import { CacheKey } from '../guest/cache-key.js';
import { commitPath, pruneSiblings, tempSibling, writeFileAtomic } from '../guest/files.js';
import { GuestAgent } from '../agent/guest-agent.js';
import type { TemplateRecord } from '../store/store.js';
import { removeConsoleLog } from '../vmm/console-log.js';
import type { VmHandle } from '../vmm/driver.js';
import { AGENT_PORT_DEVICE_ID, qemuDriver } from '../vmm/qemu-vm.js';
import { VmRuntimePaths, type Accel, type VmSpec } from '../vmm/qemu.js';
import { hostTscKhz } from '../vmm/tsc.js';
import { collectExec, execEvents } from '../agent/exec.js';
import { startTemplateService, type TemplateService } from './template-service.js';

/**
 * Bump when the VM's machine options change: old snapshots cannot be restored
 * into new machines. v2: a virtio-net NIC (its device state is in the snapshot).
 * v3: the bulk virtio-serial port.
 */
const FORMAT = 'warm-v3';
const BOOT_TIMEOUT_MS = 180_000;

export interface WarmSnapshot {
  template: string;
  key: string;
  dir: string;
  /** Guest RAM; mapped privately by every restore, never written after the build. */
  memory: string;
  /** Device state (QEMU migration stream without RAM). */
  state: string;
  /** The template VM's disk when it was snapshotted; the read-only backing of sandbox overlays. */
  disk: string;
  vcpus: number;
  memoryMiB: number;
  /** The machine the snapshot was taken of; restores must use the same. */
  machine: Pick<VmSpec, 'accel' | 'kernel' | 'initramfs' | 'kitDisk' | 'hostname' | 'tscKhz' | 'bulkPort'>;
  createdAt: string;
}

export interface WarmSnapshotInputs {
  template: TemplateRecord;
  accel: Accel;
  qemuVersion: string;
  tscKhz: number | undefined;
  /** START and READY, run before the snapshot is taken. */
  service: TemplateService | undefined;
}

/** The inputs of `template`'s warm snapshot on this host: TCG guests also depend on the host's TSC frequency. */
export async function warmSnapshotInputs(
  template: TemplateRecord,
  accel: Accel,
  qemuVersion: string,
  service?: TemplateService,
): Promise<WarmSnapshotInputs> {
  return { template, accel, qemuVersion, tscKhz: accel === 'tcg' ? await hostTscKhz() : undefined, service };
}

export function warmSnapshotKey(inputs: WarmSnapshotInputs): string {
  const t = inputs.template;
  // Artefact file names already carry their content keys; sizes guard against a file rewritten in place.
  const key = new CacheKey()
    .add('format', FORMAT)
    .add('accel', inputs.accel)
    .add('qemu', inputs.qemuVersion)
    .add('tsc', String(inputs.tscKhz ?? ''));
  for (const [label, file] of [
    ['kernel', t.kernel],
    ['initramfs', t.initramfs],
    ['kit', t.kit],
    ['rootfs', t.rootfs],
  ] as const) {
    key.add(label, `${file}:${fs.statSync(file).size}`);
  }
  if (inputs.service) key.add('service', JSON.stringify(inputs.service));
  return key.add('vcpus', String(t.default_vcpus)).add('memory', String(t.default_memory_mib)).digest();
}

export function snapshotsDir(cacheDir: string): string {
  return path.join(cacheDir, 'snapshots');
}

/** Whether `name` is the folder of one of `template`'s warm snapshots (`<template>-<key>`, not another template's). */
export function isSnapshotOf(template: string, name: string): boolean {
  return name.startsWith(`${template}-`) && /^[0-9a-f]{16}$/.test(name.slice(template.length + 1));
}

/**
 * The snapshot for these inputs if one was built and finished. Finding it
 * marks it used and removes the template's snapshots of older inputs (another
 * kernel, agent or QEMU) that nobody pins, within the shared cache's grace
 * (guest/files.ts pruneSiblings): each is a few hundred MiB.
 */
export function loadWarmSnapshot(cacheDir: string, inputs: WarmSnapshotInputs): WarmSnapshot | undefined {
  const name = `${inputs.template.name}-${warmSnapshotKey(inputs)}`;
  const dir = path.join(snapshotsDir(cacheDir), name);
  let snapshot: Omit<WarmSnapshot, 'dir' | 'memory' | 'state' | 'disk'>;
  try {
    snapshot = JSON.parse(fs.readFileSync(path.join(dir, 'snapshot.json'), 'utf8')) as typeof snapshot;
  } catch {
    return undefined;
  }
  const files = { dir, memory: path.join(dir, 'memory'), state: path.join(dir, 'state'), disk: path.join(dir, 'disk.qcow2') };
  if (![files.memory, files.state, files.disk].every((f) => fs.existsSync(f))) return undefined;
  pruneSiblings(snapshotsDir(cacheDir), (other) => isSnapshotOf(inputs.template.name, other), name);
  return { ...snapshot, ...files };
}

/** Where the VMs that boot templates for their warm snapshots keep their sockets and pid files. */
function templateVmRuntimeDir(runtimeDir: string): string {
  return path.join(runtimeDir, 'builds');
}

/**
 * Kills the template VMs a daemon that died left booting for a warm snapshot,
 * and removes their folders: nothing else would, and a new build of the same
 * template would meet the old VM on its sockets. Runs before any build.
 */
export async function removeOrphanTemplateVms(runtimeDir: string, log: Logger): Promise<void> {
  const dir = templateVmRuntimeDir(runtimeDir);
  if (!fs.existsSync(dir)) return;
  for (const name of fs.readdirSync(dir)) {
    const pid = qemuDriver.findRunning(new VmRuntimePaths(path.join(dir, name)), templateVmId(name));
    if (pid !== undefined) {
      log.warn({ template: name, pid }, 'killing a template VM a previous capsuled left booting');
      await qemuDriver.kill(pid);
    }
    fs.rmSync(path.join(dir, name), { recursive: true, force: true });
  }
}

function templateVmId(name: string): string {
  return `template-${name}`;
}

/**
 * Boots the template once and snapshots it; concurrent builders each write
 * their own temp folder. An abort (the daemon stopping) stops the template VM,
 * so the build fails at once and removes what it wrote.
 */
export async function buildWarmSnapshot(
  cacheDir: string,
  runtimeDir: string,
  inputs: WarmSnapshotInputs,
  log: Logger,
  signal?: AbortSignal,
): Promise<WarmSnapshot> {
  signal?.throwIfAborted();
  const key = warmSnapshotKey(inputs);
  const t = inputs.template;
  const name = `${t.name}-${key}`;
  const dir = path.join(snapshotsDir(cacheDir), name);
  const temp = tempSibling(dir);
  const paths = new VmRuntimePaths(path.join(templateVmRuntimeDir(runtimeDir), name));
  fs.mkdirSync(temp, { recursive: true });
  const machine: WarmSnapshot['machine'] = {
    accel: inputs.accel,
    kernel: t.kernel,
    initramfs: t.initramfs,
    kitDisk: t.kit,
    hostname: 'capsule',
    tscKhz: inputs.tscKhz,
    bulkPort: bulkProtocolVersion,
  };
  const started = Date.now();
  let vm: VmHandle | undefined;
  let agent: GuestAgent | undefined;
  const stopOnAbort = () => void vm?.stop();
  signal?.addEventListener('abort', stopOnAbort, { once: true });
  try {
    await runCommand('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', t.rootfs, path.join(temp, 'disk.qcow2')]);
    vm = await qemuDriver.launch(
      {
        id: templateVmId(name),
        ...machine,
        vcpus: t.default_vcpus,
        memoryMiB: t.default_memory_mib,
        rootDisk: path.join(temp, 'disk.qcow2'),
        agentPortId: AGENT_PORT_DEVICE_ID,
        memoryBackend: { type: 'file', path: path.join(temp, 'memory'), shared: true },
        // The NIC's device state goes into the snapshot, so restores must have one too. It is
        // plugged into nothing here, so that no backend's state is saved with it: each restore
        // plugs it into its own (user-mode or TAP).
        nic: { type: 'none' },
      },
      paths,
      path.join(temp, 'console.log'),
    );
    signal?.throwIfAborted();
    agent = new GuestAgent(vm.guestPorts, () => vm?.alive === true);
    const bootDeadline = Date.now() + BOOT_TIMEOUT_MS;
    await vm.waitForAgentPort(bootDeadline);
    await agent.waitUntilHealthy(bootDeadline);
    if (inputs.service) {
      await startTemplateService(
        agent.client,
        inputs.service,
        AbortSignal.timeout(BOOT_TIMEOUT_MS + (inputs.service.ready?.timeoutMs ?? 0)),
      );
      // One round trip after START's stream was let go: the agent has seen it end, so nothing of it is in flight when the VM is frozen.
      await collectExec(execEvents(agent.client, { cmd: ['true'] }, AbortSignal.timeout(BOOT_TIMEOUT_MS)));
    }
    // Leave the agent idle and disconnected, so no write of this session is
    // pending in the guest when it is frozen; restores connect afresh.
    agent.close();
    await new Promise((r) => setTimeout(r, 100));
    await vm.saveState(path.join(temp, 'state'), { withRam: false });
    await vm.stop();
    vm = undefined;
    for (const file of ['memory', 'state', 'disk.qcow2']) {
      const fd = fs.openSync(path.join(temp, file), 'r');
      fs.fsyncSync(fd);
      fs.closeSync(fd);
    }
    removeConsoleLog(path.join(temp, 'console.log'));
    const snapshot: Omit<WarmSnapshot, 'dir' | 'memory' | 'state' | 'disk'> = {
      template: t.name,
      key,
      vcpus: t.default_vcpus,
      memoryMiB: t.default_memory_mib,
      machine,
      createdAt: new Date().toISOString(),
    };
    writeFileAtomic(path.join(temp, 'snapshot.json'), JSON.stringify(snapshot, null, 2));
    signal?.throwIfAborted();
    commitPath(temp, dir);
    log.info({ template: t.name, key, ms: Date.now() - started }, 'warm snapshot built');
    const loaded = loadWarmSnapshot(cacheDir, inputs);
    if (!loaded) throw new Error('the snapshot was written but cannot be read back');
    return loaded;
  } catch (err) {
    // A START or READY that failed is the user's to fix: its message (with their output) is the whole story.
    if (err instanceof CapsuleError && err.code === 'template_start_failed') throw err;
    const consoleTail = vm?.consoleTail() ?? '';
    throw new Error(
      `building the warm snapshot of template ${t.name} failed: ${errorMessage(err)}${consoleTail ? `\nguest console:\n${consoleTail}` : ''}`,
    );
  } finally {
    signal?.removeEventListener('abort', stopOnAbort);
    agent?.close();
    if (vm) await vm.stop();
    fs.rmSync(paths.dir, { recursive: true, force: true });
    fs.rmSync(temp, { recursive: true, force: true });
  }
}
