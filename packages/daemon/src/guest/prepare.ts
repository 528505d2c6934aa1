// `capsuled prepare`: builds or reuses everything a sandbox boots from (kernel,
// initramfs, kit disk, the base root filesystem), probes KVM, and records the
// result in the guest manifest. Each step says what it did and how long it took.
import { ensureInitramfs } from './initramfs.js';
import { ensureKernel } from './kernel.js';
import { ensureKit } from './kit.js';
import { writeManifest, type GuestManifest } from './manifest.js';
import { ensureBaseRootfs } from './rootfs.js';
import { chooseAccel } from '../vmm/accel.js';
import { qemuVersion } from '../vmm/qemu.js';
import type { DaemonConfig } from '../config.js';

export async function prepareGuest(config: DaemonConfig, out: (line: string) => void): Promise<GuestManifest> {
  const steps = 5;
  let step = 0;
  const run = async <T>(title: string, work: (report: (msg: string) => void) => Promise<T>, describe: (v: T) => string): Promise<T> => {
    step += 1;
    const started = Date.now();
    out(`[${step}/${steps}] ${title}`);
    const value = await work((msg) => out(`      ${msg}`));
    out(`      ${describe(value)} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    return value;
  };

  const kernel = await run('guest kernel', (r) => ensureKernel(config.cacheDir, r), (k) => `kernel ${k.version}, ${k.modules.length} modules`);
  const initramfs = await run('initramfs', (r) => ensureInitramfs(config.cacheDir, kernel, r), (p) => p);
  const kit = await run('kit disk', (r) => ensureKit(config.cacheDir, r), (p) => p);
  const rootfs = await run('base template root filesystem', (r) => ensureBaseRootfs(config.cacheDir, r), (p) => p);
  await run(
    'accelerator',
    async () => chooseAccel({ requested: config.accel, cacheDir: config.cacheDir, kernel: kernel.vmlinuz, initramfs, qemuVersion: await qemuVersion() }),
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
  writeManifest(config.cacheDir, manifest);
  return manifest;
}
