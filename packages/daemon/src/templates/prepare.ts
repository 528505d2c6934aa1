// `capsuled prepare`: builds or reuses everything a sandbox boots from (kernel,
// initramfs, kit disk, the base root filesystem), probes KVM, records the
// result in the guest manifest, and warms the base template (boots it once and
// snapshots it). Each step says what it did and how long it took.
import { ensureInitramfs } from '../guest/initramfs.js';
import { ensureKernel } from '../guest/kernel.js';
import { ensureKit } from '../guest/kit.js';
import { writeManifest, type GuestManifest } from '../guest/manifest.js';
import { ensureBaseRootfs } from '../guest/rootfs.js';
import { silentLogger } from '../log.js';
import { templatesFromManifest } from './defaults.js';
import { buildWarmSnapshot, loadWarmSnapshot, warmSnapshotInputs } from './warm-snapshot.js';
import { chooseAccel } from '../vmm/accel.js';
import { qemuVersion } from '../vmm/qemu.js';
import type { DaemonConfig } from '../config.js';

export async function prepareGuest(config: DaemonConfig, out: (line: string) => void): Promise<GuestManifest> {
  const steps = config.warmSnapshots ? 6 : 5;
  let step = 0;
  const run = async <T>(title: string, work: (report: (msg: string) => void) => Promise<T>, describe: (v: T) => string): Promise<T> => {
    step += 1;
    const started = Date.now();
    out(`[${step}/${steps}] ${title}`);
    const value = await work((msg) => out(`      ${msg}`));
    out(`      ${describe(value)} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    return value;
  };

  const kernel = await run(
    'guest kernel',
    (r) => ensureKernel(config.cacheDir, r),
    (k) => `kernel ${k.version}, ${k.modules.length} modules`,
  );
  const initramfs = await run(
    'initramfs',
    (r) => ensureInitramfs(config.cacheDir, kernel, r),
    (p) => p,
  );
  const kit = await run(
    'kit disk',
    (r) => ensureKit(config.cacheDir, r),
    (p) => p,
  );
  const rootfs = await run(
    'base template root filesystem',
    (r) => ensureBaseRootfs(config.cacheDir, r),
    (p) => p,
  );
  const qemu = await qemuVersion();
  const accel = await run(
    'accelerator',
    async () => chooseAccel({ requested: config.accel, cacheDir: config.cacheDir, kernel: kernel.vmlinuz, initramfs, qemuVersion: qemu }),
    (c) => `${c.accel.toUpperCase()}: ${c.reason}`,
  );
  const manifest: GuestManifest = {
    kernelVersion: kernel.version,
    kernel: kernel.vmlinuz,
    initramfs,
    kit,
    templates: { base: { rootfs } },
    builtAt: new Date().toISOString(),
  };
  if (config.warmSnapshots) {
    const [base] = templatesFromManifest(manifest);
    const inputs = await warmSnapshotInputs(base!, accel.accel, qemu);
    await run(
      'warm snapshot of the base template',
      async (report) => {
        const existing = loadWarmSnapshot(config.cacheDir, inputs);
        if (existing) return existing;
        report('booting the template once to snapshot it');
        return await buildWarmSnapshot(config.cacheDir, config.runtimeDir, inputs, silentLogger);
      },
      (snapshot) => snapshot.dir,
    );
  }
  writeManifest(config.cacheDir, manifest);
  return manifest;
}
