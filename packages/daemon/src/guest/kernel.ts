// The guest kernel: Debian's cloud kernel, whose current version is resolved
// through apt (the package's version suffix changes over time), downloaded as a
// .deb and unpacked into the cache. It is never installed into the host's /boot.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCommand } from '../launcher.js';
import { commitPath } from './files.js';
import { moduleLoadOrder, moduleName, readModuleDepends } from './kernel-modules.js';

export const KERNEL_META_PACKAGE = 'linux-image-cloud-amd64';

/** Drivers the initramfs loads; their dependencies are found from the modules themselves. */
export const GUEST_MODULES = ['virtio_mmio', 'virtio_blk', 'virtio_console', 'virtio_rng', 'virtio_net'];

export interface GuestKernel {
  version: string;
  dir: string;
  vmlinuz: string;
  /** Module files in load order. */
  modules: string[];
}

/** Parses `apt-cache depends` output for the versioned kernel package. */
export function parseKernelPackage(aptCacheDepends: string): string | undefined {
  const match = /Depends:\s+(linux-image-[0-9][^\s]*)/.exec(aptCacheDepends);
  return match?.[1];
}

async function resolveKernelPackage(): Promise<string | undefined> {
  try {
    const { stdout } = await runCommand('apt-cache', ['depends', KERNEL_META_PACKAGE]);
    return parseKernelPackage(stdout);
  } catch {
    return undefined;
  }
}

/** The unpacked kernel in `dir`, if it holds the modules GUEST_MODULES names (an older unpack may lack some). */
function loadCached(dir: string): GuestKernel | undefined {
  const metaFile = path.join(dir, 'kernel.json');
  if (!fs.existsSync(metaFile)) return undefined;
  const meta = JSON.parse(fs.readFileSync(metaFile, 'utf8')) as { version: string; modules: string[]; wanted?: string[] };
  if (JSON.stringify(meta.wanted ?? []) !== JSON.stringify(GUEST_MODULES)) return undefined;
  return {
    version: meta.version,
    dir,
    vmlinuz: path.join(dir, 'vmlinuz'),
    modules: meta.modules.map((m) => path.join(dir, 'modules', m)),
  };
}

/**
 * Returns the guest kernel, downloading it when the version apt names is not
 * cached yet. Without apt lists (offline), the newest cached kernel is used.
 */
export async function ensureKernel(cacheDir: string, report: (msg: string) => void): Promise<GuestKernel> {
  const kernelsDir = path.join(cacheDir, 'kernels');
  const pkg = await resolveKernelPackage();
  if (pkg === undefined) {
    const cached = fs.existsSync(kernelsDir) ? fs.readdirSync(kernelsDir).sort().reverse() : [];
    for (const name of cached) {
      const kernel = loadCached(path.join(kernelsDir, name));
      if (kernel) return kernel;
    }
    throw new Error(`cannot resolve ${KERNEL_META_PACKAGE} with apt-cache; run apt-get update`);
  }
  const version = pkg.replace(/^linux-image-/, '');
  const dir = path.join(kernelsDir, version);
  const cached = loadCached(dir);
  if (cached) return cached;

  report(`downloading ${pkg}`);
  fs.mkdirSync(kernelsDir, { recursive: true });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-kernel-'));
  try {
    await runCommand('apt-get', ['download', '-o', 'APT::Sandbox::User=root', pkg], { cwd: work, timeoutMs: 600_000 });
    const deb = fs.readdirSync(work).find((f) => f.endsWith('.deb'));
    if (!deb) throw new Error(`apt-get download ${pkg} produced no .deb`);
    const unpacked = path.join(work, 'x');
    await runCommand('dpkg-deb', ['-x', path.join(work, deb), unpacked]);
    const staged = path.join(kernelsDir, `.${version}.tmp-${process.pid}`);
    fs.rmSync(staged, { recursive: true, force: true });
    fs.mkdirSync(path.join(staged, 'modules'), { recursive: true });
    fs.copyFileSync(path.join(unpacked, 'boot', `vmlinuz-${version}`), path.join(staged, 'vmlinuz'));
    fs.copyFileSync(path.join(unpacked, 'boot', `config-${version}`), path.join(staged, 'config'));

    const byName = new Map<string, string>();
    const walk = (d: string) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.name.endsWith('.ko')) byName.set(moduleName(e.name), p);
      }
    };
    walk(path.join(unpacked, 'lib', 'modules', version));
    const order = moduleLoadOrder(GUEST_MODULES, (name) => {
      const file = byName.get(name);
      return file === undefined ? undefined : readModuleDepends(fs.readFileSync(file));
    });
    const files = order.map((name) => {
      const file = `${name}.ko`;
      fs.copyFileSync(byName.get(name) as string, path.join(staged, 'modules', file));
      return file;
    });
    fs.writeFileSync(
      path.join(staged, 'kernel.json'),
      JSON.stringify({ version, package: pkg, modules: files, wanted: GUEST_MODULES }, null, 2),
    );
    commitPath(staged, dir);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  const kernel = loadCached(dir);
  if (!kernel) throw new Error(`kernel ${version} was unpacked but its metadata is missing`);
  return kernel;
}
