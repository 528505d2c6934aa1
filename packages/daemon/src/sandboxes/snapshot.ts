// Saved states of running sandboxes in the warm-snapshot layout (memory file +
// device state, see vmm/freeze.ts): what fork restores N times and what
// `capsule snapshot` turns into a template (templates/snapshot-templates.ts
// describes, records, loads and removes those). Every folder is written under
// a temporary name, fsynced and renamed, so a crash never leaves a
// half-written snapshot that is taken as good.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { CapsuleError, errorMessage } from '../errors.js';
import { pinSharedFiles } from '../guest/cache-pins.js';
import { commitPath } from '../guest/files.js';
import { runCommand } from '../launcher.js';
import type { Store, TemplateRecord } from '../store/store.js';
import { recordSnapshotTemplate, writeSnapshotTemplateMeta, type SnapshotTemplateMeta } from '../templates/snapshot-templates.js';
import { checkTemplateName } from '../templates/template-build.js';
import { fsyncFile, type FrozenVm } from '../vmm/freeze.js';
import type { VmSpec } from '../vmm/qemu.js';
import { testOnlyDelay } from '../test-only-delay.js';
import type { SandboxVm } from './sandbox-vm.js';

const AGENT_RECONNECT_TIMEOUT_MS = 60_000;

/**
 * Freezes a running sandbox's VM into `dir`; `whileStopped` runs with the guest
 * stopped and its disk flushed (to copy the disk consistently with the memory).
 * The VM then runs on, and its agent is reconnected at once, so that a write
 * left over from the old connection breaks this health check, not a user's call.
 */
export async function freezeRunningVm(
  vm: SandboxVm,
  machine: VmSpec,
  dir: string,
  runtimeDir: string,
  whileStopped: () => Promise<void> | void,
): Promise<FrozenVm> {
  // No agent session may be mid-write in the guest when it is frozen: restores connect afresh.
  vm.agent.close();
  try {
    const frozen = await vm.handle.freeze(machine, dir, runtimeDir);
    await whileStopped();
    return frozen;
  } finally {
    await vm.handle.resume().catch(() => undefined);
    await vm.waitForHealthyAgent(Date.now() + AGENT_RECONNECT_TIMEOUT_MS).catch(() => undefined);
  }
}

export interface SnapshotSource {
  id: string;
  vm: SandboxVm;
  /** The sandbox's machine (machine.json). */
  machine: VmSpec;
  /** The sandbox's disk overlay. */
  overlay: string;
}

/**
 * Turns a running sandbox's current state into template `name`: its memory and
 * devices frozen, its disk copied while the guest is stopped and then
 * flattened into one qcow2 (so the template depends on no other template's
 * files), all under `templatesDir`. The sandbox runs on. Returns the record,
 * already in the store.
 */
export async function snapshotToTemplate(
  store: Store,
  source: SnapshotSource,
  name: string,
  dirs: { templatesDir: string; runtimeDir: string; cacheDir: string },
  qemuVersion: string,
): Promise<TemplateRecord> {
  // A snapshot named like a build's temporary template would be swept away with them when the daemon starts.
  checkTemplateName(name);
  if (await store.getTemplate(name)) {
    throw new CapsuleError('name_taken', `a template named "${name}" already exists`, {
      hint: 'pick another name or `capsule template rm` it first',
    });
  }
  const machine = source.machine;
  if (!machine.memoryBackend) {
    throw new CapsuleError('invalid_argument', `sandbox ${source.id} was booted by an older capsuled and cannot be snapshotted`, {
      hint: 'snapshot a sandbox created since capsuled was upgraded',
    });
  }
  const dir = path.join(dirs.templatesDir, `${name}-${randomBytes(4).toString('hex')}`);
  const temp = path.join(dirs.templatesDir, `.${path.basename(dir)}.tmp`);
  const overlayCopy = path.join(temp, 'overlay.qcow2');
  try {
    await freezeRunningVm(source.vm, machine, temp, dirs.runtimeDir, async () => {
      await testOnlyDelay('SNAPSHOT');
      fs.copyFileSync(source.overlay, overlayCopy);
    });
    // The copy's backing chain leads into another template's files, which may be removed; the template gets its own disk.
    await runCommand('qemu-img', ['convert', '-q', '-O', 'qcow2', overlayCopy, path.join(temp, 'disk.qcow2')]);
    fs.rmSync(overlayCopy);
    fsyncFile(path.join(temp, 'disk.qcow2'));
    const createdAt = new Date().toISOString();
    const meta: SnapshotTemplateMeta = {
      template: name,
      key: `snapshot-of-${source.id}`,
      vcpus: machine.vcpus,
      memoryMiB: machine.memoryMiB,
      machine: {
        accel: machine.accel,
        kernel: machine.kernel,
        initramfs: machine.initramfs,
        kitDisk: machine.kitDisk,
        hostname: machine.hostname,
        tscKhz: machine.tscKhz,
        bulkPort: machine.bulkPort,
      },
      createdAt,
      qemuVersion,
      sourceSandbox: source.id,
    };
    writeSnapshotTemplateMeta(temp, meta);
    // Every restore of the template attaches this kit, whatever the cache's own kit is by then.
    pinSharedFiles([machine.kitDisk], [dirs.cacheDir], path.join(temp, 'pins'));
    commitPath(temp, dir);
    const record: TemplateRecord = {
      name,
      kernel: machine.kernel,
      initramfs: machine.initramfs,
      kit: machine.kitDisk,
      rootfs: path.join(dir, 'disk.qcow2'),
      default_vcpus: machine.vcpus,
      default_memory_mib: machine.memoryMiB,
      created_at: createdAt,
    };
    await recordSnapshotTemplate(store, record, source.id, dir);
    return record;
  } catch (err) {
    fs.rmSync(temp, { recursive: true, force: true });
    if (err instanceof CapsuleError) throw err;
    throw new CapsuleError('internal', `snapshotting sandbox ${source.id} failed: ${errorMessage(err)}`, {
      hint: 'the sandbox runs on; try again',
      cause: err,
    });
  }
}
