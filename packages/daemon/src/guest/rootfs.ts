// Root filesystem images. The default template `base` is Debian 12 built from
// Debian's archive with mmdebstrap into a folder, then turned into an ext4
// image by `mkfs.ext4 -d` (no mounts, no loop devices). The image is the
// read-only base of every sandbox disk, so it is built with free space inside.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCommand } from '../launcher.js';
import { CacheKey } from './cache-key.js';
import { pruneSiblings, tempSibling, treeBytes } from './files.js';

export const BASE_PACKAGES = [
  'bash',
  'coreutils',
  'python3',
  'git',
  'curl',
  'ca-certificates',
  'procps',
  'iproute2',
  'passwd',
  // SSH into dev boxes (`capsule ssh`, scp, rsync, editors' remote mode); sshd only runs once asked for.
  'openssh-server',
  'openssh-sftp-server',
  'rsync',
];
const SUITE = 'bookworm';
const SOURCES = [
  `deb http://deb.debian.org/debian ${SUITE} main`,
  `deb http://deb.debian.org/debian ${SUITE}-updates main`,
  `deb http://deb.debian.org/debian-security ${SUITE}-security main`,
];
/** Free space given to every sandbox's disk on top of what the image holds. */
const HEADROOM_MIB = 2048;

/** Runs inside the new root before it is packed: the unprivileged user E2B's SDKs expect. */
const CUSTOMIZE = [
  'chroot "$1" useradd --create-home --shell /bin/bash --uid 1000 user',
  'echo "capsule" > "$1/etc/hostname"',
  'printf "127.0.0.1 localhost\\n::1 localhost\\n" > "$1/etc/hosts"',
  // The package made host keys: every sandbox of the image would share them. Each makes its own (ssh-server.ts).
  'rm -f "$1"/etc/ssh/ssh_host_*',
];

/** Size for an ext4 image holding `bytes` of files, with headroom; the file is sparse. */
export function ext4SizeMiB(bytes: number, headroomMiB: number): number {
  return Math.ceil((bytes * 1.25) / 1048576) + 64 + headroomMiB;
}

/** Packs a folder into an ext4 image atomically. */
export async function folderToExt4(folder: string, target: string, label: string, headroomMiB = HEADROOM_MIB): Promise<void> {
  const temp = tempSibling(target);
  try {
    await runCommand('mkfs.ext4', ['-q', '-F', '-L', label, '-d', folder, temp, `${ext4SizeMiB(treeBytes(folder), headroomMiB)}M`]);
    fs.renameSync(temp, target);
  } finally {
    fs.rmSync(temp, { force: true });
  }
}

export async function ensureBaseRootfs(cacheDir: string, report: (msg: string) => void): Promise<string> {
  const key = new CacheKey()
    .add('format', 'rootfs-v1')
    .add('suite', SUITE)
    .add('sources', SOURCES.join('\n'))
    .add('packages', BASE_PACKAGES.join(','))
    .add('customize', CUSTOMIZE.join('\n'))
    .add('headroom', String(HEADROOM_MIB));
  const name = `base-${key.digest()}.ext4`;
  const dir = path.join(cacheDir, 'rootfs');
  const target = path.join(dir, name);
  if (fs.existsSync(target)) return target;

  report(`building the base root filesystem (Debian ${SUITE} with ${BASE_PACKAGES.join(', ')})`);
  fs.mkdirSync(dir, { recursive: true });
  const staging = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-rootfs-'));
  try {
    await runCommand(
      'mmdebstrap',
      [
        '--variant=minbase',
        '--mode=root',
        `--include=${BASE_PACKAGES.join(',')}`,
        '--dpkgopt=path-exclude=/usr/share/man/*',
        '--dpkgopt=path-exclude=/usr/share/doc/*',
        '--dpkgopt=path-exclude=/usr/share/locale/*',
        '--dpkgopt=path-include=/usr/share/locale/locale.alias',
        ...CUSTOMIZE.map((hook) => `--customize-hook=${hook}`),
        SUITE,
        staging,
        ...SOURCES,
      ],
      {
        timeoutMs: 1_800_000,
        onLine: (line) => {
          if (/^I: /.test(line)) report(`  ${line.slice(3)}`);
        },
      },
    );
    report('packing the root filesystem into ext4');
    await folderToExt4(staging, target, 'capsule-root');
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
  }
  pruneSiblings(dir, (other) => other.startsWith('base-'), name);
  return target;
}
