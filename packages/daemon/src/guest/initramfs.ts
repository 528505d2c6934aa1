// The initramfs: static busybox, Capsule's init script and the virtio modules.
// Small on purpose: it only has to find the disks and hand over to tini.
import fs from 'node:fs';
import path from 'node:path';
import { runCommand } from '../launcher.js';
import { guestInitScript } from '../repo-paths.js';
import { CacheKey } from './cache-key.js';
import { writeCpio, type CpioEntry } from './cpio.js';
import { pruneSiblings, writeFileAtomic } from './files.js';
import type { GuestKernel } from './kernel.js';

const BUSYBOX = '/bin/busybox';

export async function ensureInitramfs(cacheDir: string, kernel: GuestKernel, report: (msg: string) => void): Promise<string> {
  const key = new CacheKey()
    .add('format', 'initramfs-v1')
    .addFile('init', guestInitScript)
    .addFile('busybox', BUSYBOX)
    .add('kernel', kernel.version);
  for (const m of kernel.modules) key.addFile(path.basename(m), m);
  const name = `initramfs-${key.digest()}.cpio`;
  const dir = path.join(cacheDir, 'initramfs');
  const target = path.join(dir, name);
  if (fs.existsSync(target)) return target;

  report('building the initramfs');
  const { stdout } = await runCommand(BUSYBOX, ['--list']);
  const applets = stdout
    .split('\n')
    .map((s) => s.trim())
    .filter((s) => s !== '' && s !== 'busybox');
  const entries: CpioEntry[] = [
    ...['bin', 'dev', 'proc', 'sys', 'newroot', 'etc', 'etc/capsule', 'lib', 'lib/modules'].map(
      (p): CpioEntry => ({ kind: 'dir', path: p, mode: 0o755 }),
    ),
    { kind: 'file', path: 'init', mode: 0o755, data: fs.readFileSync(guestInitScript) },
    { kind: 'file', path: 'bin/busybox', mode: 0o755, data: fs.readFileSync(BUSYBOX) },
    ...applets.map((a): CpioEntry => ({ kind: 'symlink', path: `bin/${a}`, target: 'busybox' })),
    {
      kind: 'file',
      path: 'etc/capsule/modules',
      mode: 0o644,
      data: Buffer.from(kernel.modules.map((m) => `${path.basename(m, '.ko')}\n`).join('')),
    },
    ...kernel.modules.map(
      (m): CpioEntry => ({ kind: 'file', path: `lib/modules/${path.basename(m)}`, mode: 0o644, data: fs.readFileSync(m) }),
    ),
  ];
  writeFileAtomic(target, writeCpio(entries));
  pruneSiblings(dir, (other) => other.startsWith('initramfs-'), name);
  return target;
}
