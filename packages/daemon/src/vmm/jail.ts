// The jail every QEMU runs in (on unless CAPSULE_JAIL=off): its own uid and
// gid from a configured range, no_new_privs and no capabilities, a mount
// namespace whose root is a folder of this VM's own holding only the files its
// spec names (bound at their host paths, so no path in a spec, a QMP command or
// a qcow2 header changes), new pid and IPC namespaces, an empty environment
// and rlimits. bubblewrap builds the namespaces, setpriv drops to the uid and
// prlimit sets the limits, then each execs the next, so the pid is QEMU's.
// It decides nothing about what a VM may see beyond its spec, and it never
// follows a path a guest could have written without checking where it leads.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { errorMessage } from '../errors.js';
import { isProcessAlive } from '../launcher.js';
import { backingChain, qcow2VirtualSize } from '../guest/cache-pins.js';
import { memoryLimitFor, type VmCgroup, type VmCgroups, VMM_OVERHEAD_MIB } from './cgroup.js';
import type { VmSpec } from './qemu.js';
import { tcgCodeBufferMiB } from './tcg-code-buffer.js';

export interface JailSettings {
  /** The id range: its first id is the group all jailed VMs share (TAP devices, warm memory files), the rest are uids. */
  ids: { first: number; count: number };
  /** Holds `jails/<vm id>/` (the VM's root folder and its record). */
  runtimeDir: string;
  /** Folders a VM's disks and their backing files may lie in; a backing file elsewhere is refused. */
  diskRoots: string[];
  /** Host-wide uid claims, shared by every daemon on the host so that no two jails share a uid. */
  claimsDir?: string;
  /** A cgroup per VM; none on hosts without usable cgroups. */
  cgroups?: VmCgroups | undefined;
  /** Memory QEMU may use beyond guest RAM, in MiB; undefined: what cgroup.ts measured for the accelerator. */
  overheadMiB?: number | undefined;
}

/** What a VM needs inside its jail: derived from its spec only (jailMounts). */
export interface JailMounts {
  readOnly: string[];
  devices: string[];
  /** Files and folders the jailed uid owns (QEMU writes them): its disk, runtime folder, a shared memory file. */
  owned: string[];
  /** Files only opened read-write by QEMU 7.2 but never written (a private memory mapping): the shared group may write them. */
  groupWritable: string[];
  /**
   * Root-owned folders bound writable and made traversable (0711) but not
   * listable: QEMU writes only the files in them it owns, ones the daemon
   * made for it while it runs (a build's next disk overlay, snapshotRootDisk).
   */
  diskFolders: string[];
}

/** What a sealed file was when sealed (checkSeal). */
interface Seal {
  file: string;
  identity: string | undefined;
  content: string;
}

interface JailRecord {
  uid: number;
  pid?: number;
  createdAt: number;
}

const DEFAULT_CLAIMS_DIR = '/run/capsule-jail-uids';
/** A jail without a pid is a launch in progress for at most this long. */
const LAUNCH_GRACE_MS = 60_000;
const INFO_TIMEOUT_MS = 15_000;
/** QEMU's threads (vCPUs apart): main, RCU, I/O and a worker pool of up to 64; bubblewrap's own process. */
const MAX_TASKS = 128;
/** QEMU keeps a few dozen fds (disks, sockets, eventfds); far more is a leak or an attack. */
const MAX_OPEN_FILES = 4096;
/** A guest's log lines and state files are bounded too: nothing QEMU writes may exceed its disk plus its RAM plus this. */
const FILE_SIZE_SLACK_BYTES = 1024 ** 3;
const MAX_VIRTUAL_DISK_BYTES = 16 * 1024 ** 4;
const RESOLV_CONF = '/etc/resolv.conf';
/** The environment QEMU gets: nothing of the daemon's (API keys, tokens). */
const JAIL_PATH = '/usr/sbin:/usr/bin:/sbin:/bin';

export class VmJail {
  /** VMs whose released cgroup had OOM-killed them, for an exit noticed after the release. */
  private readonly releasedByOom = new Set<number>();
  /** Groups of devices the jailed QEMUs need besides their shared one (`kvm`). */
  private readonly extraGroups: number[] = [];

  constructor(readonly settings: JailSettings) {}

  get sharedGid(): number {
    return this.settings.ids.first;
  }

  private get jailsDir(): string {
    return path.join(this.settings.runtimeDir, 'jails');
  }

  private get sealsDir(): string {
    return path.join(this.settings.runtimeDir, 'jail-seals');
  }

  private get claimsDir(): string {
    return this.settings.claimsDir ?? DEFAULT_CLAIMS_DIR;
  }

  jailDir(id: string): string {
    if (!/^[\w.-]+$/.test(id) || id.startsWith('.')) throw new Error(`unsafe VM id for a jail: ${id}`);
    return path.join(this.jailsDir, id);
  }

  /** The folder a jailed VM sees as `/`. */
  private rootDir(id: string): string {
    return path.join(this.jailDir(id), 'root');
  }

  /**
   * Prepares the jail of the VM `spec` describes (its files, `runtimeDir`, its
   * limits) and starts it: `outer` is what runs before the jail (nsenter into
   * the network namespace); `vmm` is QEMU's argv. Resolves with QEMU's pid (in
   * the host's pid namespace) once it is in its cgroup; QEMU runs only after that.
   */
  async spawn(spec: VmSpec, runtimeDir: string, outer: string[], vmm: string[], logFile: string): Promise<number> {
    const { id } = spec;
    const mounts = jailMounts(spec, runtimeDir, this.settings.diskRoots);
    const overheadMiB = this.settings.overheadMiB ?? VMM_OVERHEAD_MIB + (spec.accel === 'tcg' ? tcgCodeBufferMiB() : 0);
    const existing = this.readRecord(id);
    if (existing?.pid !== undefined && isProcessAlive(existing.pid))
      throw new Error(`VM ${id} already runs in its jail (pid ${existing.pid})`);
    this.release(id, { force: true });
    const uid = this.claimUid(id);
    let cgroup: VmCgroup | undefined;
    let pid: number | undefined;
    try {
      this.writeRecord(id, { uid, createdAt: Date.now() });
      this.prepareFiles(mounts, uid);
      const root = this.rootDir(id);
      buildSkeleton(root, mounts);
      cgroup = this.settings.cgroups?.create(cgroupName(uid), {
        memoryBytes: memoryLimitFor(spec.memoryMiB, overheadMiB),
        // QEMU's own threads (its main loop and I/O, the vCPUs' device work) need CPU besides the vCPUs':
        // capped at the vCPUs alone, an exec round trip took 1.6 times as long (bench/cases/jail.mjs).
        vcpus: spec.vcpus + 1,
        pids: MAX_TASKS + spec.vcpus,
      });
      const argv = [
        ...outer,
        'bwrap',
        ...bwrapArgs(root, mounts),
        '--',
        'prlimit',
        `--nofile=${MAX_OPEN_FILES}`,
        '--core=0',
        `--fsize=${fileSizeLimit(spec)}`,
        '--',
        'setpriv',
        `--reuid=${uid}`,
        `--regid=${uid}`,
        `--groups=${[this.sharedGid, ...this.extraGroups].join(',')}`,
        '--inh-caps=-all',
        '--bounding-set=-all',
        '--no-new-privs',
        '--',
        ...vmm,
      ];
      pid = await spawnJailed(argv, logFile, async (child) => {
        this.writeRecord(id, { uid, pid: child, createdAt: Date.now() });
        cgroup?.addProcess(child);
      });
      return pid;
    } catch (err) {
      if (pid !== undefined) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
      this.release(id, { force: true });
      throw err;
    }
  }

  /** Whether the cgroup of the jailed QEMU `pid` killed it for want of memory (remembered past its jail's release). */
  oomKilled(pid: number): boolean {
    for (const id of this.jailIds()) {
      const record = this.readRecord(id);
      if (record?.pid === pid) return this.settings.cgroups?.existing(cgroupName(record.uid))?.oomKilled() ?? false;
    }
    return this.releasedByOom.has(pid);
  }

  /**
   * Removes VM `id`'s jail folder, cgroup and uid claim once its QEMU is gone
   * (`force`: whatever its record says). Returns whether nothing is left.
   */
  release(id: string, options: { force?: boolean } = {}): boolean {
    const record = this.readRecord(id);
    if (!options.force && record?.pid !== undefined && isProcessAlive(record.pid)) return false;
    if (!options.force && record?.pid === undefined && record && Date.now() - record.createdAt < LAUNCH_GRACE_MS) return false;
    if (record) {
      const cgroup = this.settings.cgroups?.existing(cgroupName(record.uid));
      if (record.pid !== undefined && cgroup?.oomKilled()) this.releasedByOom.add(record.pid);
      // Its processes are gone (else it would not be released), so the kernel lets it go at once or after their reaping.
      cgroup?.remove().catch(() => undefined);
      this.dropClaim(record.uid, id);
    }
    fs.rmSync(this.jailDir(id), { recursive: true, force: true });
    return true;
  }

  /** Releases every jail whose QEMU is gone (left by a crash, or by a VM that exited on its own), and seals of files gone. */
  sweep(): void {
    for (const id of this.jailIds()) {
      try {
        this.release(id);
      } catch {
        // One unreadable jail must not stop the others' release.
      }
    }
    for (const name of listDir(this.sealsDir)) {
      const seal = path.join(this.sealsDir, name);
      try {
        const { file, identity } = JSON.parse(fs.readFileSync(seal, 'utf8')) as Seal;
        if (fileIdentity(file) !== identity) fs.rmSync(seal, { force: true });
      } catch {
        fs.rmSync(seal, { force: true });
      }
    }
  }

  private jailIds(): string[] {
    return listDir(this.jailsDir);
  }

  private readRecord(id: string): JailRecord | undefined {
    try {
      return JSON.parse(fs.readFileSync(path.join(this.jailDir(id), 'jail.json'), 'utf8')) as JailRecord;
    } catch {
      return undefined;
    }
  }

  private writeRecord(id: string, record: JailRecord): void {
    fs.mkdirSync(this.jailDir(id), { recursive: true, mode: 0o755 });
    const file = path.join(this.jailDir(id), 'jail.json');
    fs.writeFileSync(`${file}.tmp`, JSON.stringify(record), { mode: 0o600 });
    fs.renameSync(`${file}.tmp`, file);
  }

  /**
   * A uid nobody on this host holds: a claim is a symlink named by the uid to
   * the jail folder holding it, made atomically; a claim whose folder is gone
   * is stale (a daemon died) and taken over.
   */
  private claimUid(id: string): number {
    fs.mkdirSync(this.claimsDir, { recursive: true, mode: 0o700 });
    const target = this.jailDir(id);
    const { first, count } = this.settings.ids;
    const start = Math.floor(Math.random() * (count - 1));
    for (let i = 0; i < count - 1; i++) {
      const uid = first + 1 + ((start + i) % (count - 1));
      const claim = path.join(this.claimsDir, String(uid));
      try {
        fs.symlinkSync(target, claim);
        return uid;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      if (!fs.existsSync(claim)) {
        // Stale: its jail folder is gone. Replace it in one step, so two claimants never both win.
        const temp = `${claim}.${process.pid}`;
        fs.rmSync(temp, { force: true });
        fs.symlinkSync(target, temp);
        fs.renameSync(temp, claim);
        if (fs.readlinkSync(claim) === target) return uid;
      }
    }
    throw new Error(`no free uid for a VM jail in ${first + 1}-${first + count - 1} (CAPSULE_JAIL_IDS)`);
  }

  private dropClaim(uid: number, id: string): void {
    const claim = path.join(this.claimsDir, String(uid));
    try {
      if (fs.readlinkSync(claim) === this.jailDir(id)) fs.unlinkSync(claim);
    } catch {
      // Never claimed, or taken over already.
    }
  }

  /** Gives the jailed uid what it writes, and the shared group what QEMU 7.2 must open read-write but only reads. */
  private prepareFiles(mounts: JailMounts, uid: number): void {
    for (const file of mounts.owned) {
      if (!fs.existsSync(file)) fs.closeSync(fs.openSync(file, 'a', 0o600));
      fs.chownSync(file, uid, uid);
    }
    for (const file of mounts.readOnly) this.makeReadable(file);
    for (const file of mounts.groupWritable) this.checkSeal(file);
    for (const folder of mounts.diskFolders) fs.chmodSync(folder, 0o711);
    for (const device of mounts.devices) this.shareDevice(device);
  }

  /**
   * A file bound read-only (a backing disk) must be readable by the jailed uid:
   * one only root may read (a fork's frozen disk in the state folder) becomes
   * root's and the jailed VMs' group's, read-only. Only jails that bind it see it.
   */
  private makeReadable(file: string): void {
    const stat = fs.statSync(file);
    if ((stat.mode & 0o004) !== 0 || (stat.gid === this.sharedGid && (stat.mode & 0o040) !== 0 && stat.uid === 0)) return;
    fs.chownSync(file, 0, this.sharedGid);
    fs.chmodSync(file, 0o640);
  }

  /**
   * A device a jailed QEMU opens (/dev/net/tun, /dev/kvm) is usually open to
   * everyone or to a group (Debian: tun 0666, kvm 0660 root:kvm); where only
   * root may open it, the jailed VMs' group is given it. /dev/net/tun alone
   * grants nothing: attaching to a TAP device needs owning it.
   */
  private shareDevice(device: string): void {
    const stat = fs.statSync(device);
    if ((stat.mode & 0o006) === 0o006) return;
    if ((stat.mode & 0o060) === 0o060 && (stat.gid === this.sharedGid || this.extraGroups.includes(stat.gid))) return;
    if ((stat.mode & 0o060) === 0o060 && stat.gid !== 0) {
      this.extraGroups.push(stat.gid);
      return;
    }
    fs.chownSync(device, stat.uid, this.sharedGid);
    fs.chmodSync(device, (stat.mode & 0o7777) | 0o060);
  }

  /**
   * QEMU 7.2 opens a private memory file (a warm snapshot's RAM, shared by
   * every sandbox restored from it) read-write though it never writes it, so
   * each jailed QEMU that maps it could. The file is sealed at its first use:
   * root's, the shared group's, its size and mtime recorded; a write moves
   * the mtime, which only root, its owner, may set back (ctime would also move
   * with a hard link, which the daemon and tests make), and the file is refused.
   */
  checkSeal(file: string): void {
    const seal = path.join(this.sealsDir, createHash('sha256').update(file).digest('hex'));
    let sealed: Seal | undefined;
    try {
      sealed = JSON.parse(fs.readFileSync(seal, 'utf8')) as Seal;
    } catch {
      // Not sealed yet.
    }
    if (sealed && sealed.identity === fileIdentity(file)) {
      if (contentStamp(file) !== sealed.content)
        throw new Error(`refusing ${file}: it changed after VMs were given it (a VM that escaped QEMU may have written it); rebuild it`);
      return;
    }
    // Only when needed: another daemon sharing the cache may have sealed it already.
    const stat = fs.statSync(file);
    if (stat.uid !== 0 || stat.gid !== this.sharedGid) fs.chownSync(file, 0, this.sharedGid);
    if ((stat.mode & 0o7777) !== 0o660) fs.chmodSync(file, 0o660);
    fs.mkdirSync(path.dirname(seal), { recursive: true, mode: 0o700 });
    fs.writeFileSync(seal, JSON.stringify({ file, identity: fileIdentity(file), content: contentStamp(file) } satisfies Seal), {
      mode: 0o600,
    });
  }
}

/** What changes when a file's bytes do: its size and modification time. */
function contentStamp(file: string): string {
  const stat = fs.statSync(file, { bigint: true });
  return `${stat.size}:${stat.mtimeNs}`;
}

/** Which file a path names: its inode and birth time (an inode number alone is reused once a file is deleted). */
function fileIdentity(file: string): string | undefined {
  const stat = fs.statSync(file, { bigint: true, throwIfNoEntry: false });
  return stat && `${stat.dev}:${stat.ino}:${stat.birthtimeNs}`;
}

function listDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

function cgroupName(uid: number): string {
  return `vm-${uid}`;
}

/** bubblewrap's arguments: the VM's root folder as `/`, the system's programs read-only, then the VM's own files. */
function bwrapArgs(root: string, mounts: JailMounts): string[] {
  const args = [
    '--bind',
    root,
    '/',
    '--dev',
    '/dev',
    '--proc',
    '/proc',
    '--ro-bind',
    '/usr',
    '/usr',
    '--symlink',
    'usr/lib',
    '/lib',
    '--symlink',
    'usr/lib64',
    '/lib64',
    '--symlink',
    'usr/bin',
    '/bin',
    '--ro-bind-try',
    '/etc/ld.so.cache',
    '/etc/ld.so.cache',
  ];
  for (const file of mounts.readOnly) args.push('--ro-bind', file, file);
  // A folder first: a file of it bound after it still mounts over the folder's own entry.
  for (const file of [...mounts.diskFolders, ...mounts.owned, ...mounts.groupWritable]) args.push('--bind', file, file);
  for (const device of mounts.devices) {
    // bubblewrap would make /dev/net owner-only, which the jailed uid could not cross.
    if (path.dirname(device) !== '/dev') args.push('--perms', '0755', '--dir', path.dirname(device));
    args.push('--dev-bind', device, device);
  }
  args.push('--unshare-pid', '--unshare-ipc', '--unshare-uts', '--new-session', '--as-pid-1', '--clearenv', '--setenv', 'PATH', JAIL_PATH);
  args.push('--info-fd', '3', '--block-fd', '4');
  return args;
}

/**
 * Makes every mount point in `root` before bubblewrap runs: bubblewrap would
 * make missing parents owner-only, which the jailed uid could not cross.
 */
function buildSkeleton(root: string, mounts: JailMounts): void {
  fs.mkdirSync(root, { recursive: true, mode: 0o755 });
  for (const dir of ['dev', 'proc', 'usr', 'etc']) fs.mkdirSync(path.join(root, dir), { recursive: true, mode: 0o755 });
  const targets = [...mounts.readOnly, ...mounts.diskFolders, ...mounts.owned, ...mounts.groupWritable, ...mounts.devices];
  for (const target of targets) {
    const inside = path.join(root, target);
    fs.mkdirSync(path.dirname(inside), { recursive: true, mode: 0o755 });
    if (fs.statSync(target).isDirectory()) fs.mkdirSync(inside, { recursive: true, mode: 0o755 });
    else if (!fs.existsSync(inside)) fs.writeFileSync(inside, '', { mode: 0o644 });
  }
  fs.closeSync(fs.openSync(path.join(root, 'etc', 'ld.so.cache'), 'a', 0o644));
}

/**
 * Starts the jail chain detached (it outlives the daemon), learns QEMU's pid
 * from bubblewrap's info fd, lets `beforeRun` place it (its cgroup), and only
 * then lets it exec QEMU.
 */
async function spawnJailed(argv: string[], logFile: string, beforeRun: (pid: number) => Promise<void>): Promise<number> {
  const log = fs.openSync(logFile, 'a', 0o600);
  try {
    const [command, ...args] = argv as [string, ...string[]];
    const child = spawn(command, args, { stdio: ['ignore', log, log, 'pipe', 'pipe'], detached: true, env: {} });
    const info = child.stdio[3] as Readable;
    const block = child.stdio[4] as Writable;
    try {
      const pid = await new Promise<number>((resolve, reject) => {
        let text = '';
        const fail = (why: string) => reject(new Error(`the VM jail did not start: ${why}`));
        const timer = setTimeout(() => fail('no answer from bubblewrap'), INFO_TIMEOUT_MS);
        child.once('error', (err) => fail(err.message));
        child.once('exit', (code) => fail(`bubblewrap exited with ${code}`));
        // Read to its end: closing our side while bubblewrap still writes would kill it with SIGPIPE.
        info.on('data', (chunk: Buffer) => {
          text += chunk.toString('utf8');
          if (text.length > 4096) fail('bubblewrap said too much');
        });
        info.on('end', () => {
          clearTimeout(timer);
          const match = /"child-pid"\s*:\s*(\d+)/.exec(text);
          if (match) resolve(Number(match[1]));
          else fail(`no pid in what bubblewrap said: ${text.slice(0, 200)}`);
        });
      });
      await beforeRun(pid);
      await new Promise<void>((resolve, reject) => block.write('go', (err) => (err ? reject(err) : resolve())));
      child.removeAllListeners('exit');
      child.unref();
      return pid;
    } catch (err) {
      if (child.pid !== undefined) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          // Gone already.
        }
      }
      throw new Error(errorMessage(err));
    } finally {
      info.destroy();
      block.destroy();
    }
  } finally {
    fs.closeSync(log);
  }
}

/**
 * The files a VM needs, from its spec: kernel, initramfs and kit read-only;
 * its disk writable and the disk's backing chain read-only; its memory file
 * (written when shared, opened read-write but never written when private);
 * its runtime folder (sockets); the disk's folder, where the daemon may give
 * it a new overlay while it runs; its volumes, owned when written, else
 * read-only. Every backing file must be a regular file in
 * one of `diskRoots`: a qcow2 header is written by QEMU, so a header that
 * names anything else is an attack, refused.
 */
export function jailMounts(
  spec: {
    kernel: string;
    initramfs: string;
    kitDisk: string;
    rootDisk: string;
    accel: string;
    memoryBackend?: { type: 'file'; path: string; shared: boolean } | { type: 'ram' } | undefined;
    nic?: { type: string } | undefined;
    volumes?: { file: string; readOnly: boolean }[] | undefined;
  },
  runtimeDir: string,
  diskRoots: string[],
): JailMounts {
  const chain = backingChain(spec.rootDisk);
  for (const file of chain) assertDiskFile(file, diskRoots);
  const memory = spec.memoryBackend?.type === 'file' ? spec.memoryBackend : undefined;
  const volumes = spec.volumes ?? [];
  return {
    // A user-mode NIC's DNS server forwards to the host's resolver, which QEMU reads from resolv.conf.
    readOnly: unique([
      spec.kernel,
      spec.initramfs,
      spec.kitDisk,
      ...chain,
      ...(spec.nic?.type === 'user' ? [RESOLV_CONF] : []),
      ...volumes.filter((v) => v.readOnly).map((v) => v.file),
    ]).filter((f) => fs.existsSync(f)),
    owned: [runtimeDir, spec.rootDisk, ...(memory?.shared ? [memory.path] : []), ...volumes.filter((v) => !v.readOnly).map((v) => v.file)],
    groupWritable: memory && !memory.shared ? [memory.path] : [],
    diskFolders: [path.dirname(spec.rootDisk)],
    devices: [...(spec.nic?.type === 'tap' ? ['/dev/net/tun'] : []), ...(spec.accel === 'kvm' ? ['/dev/kvm'] : [])],
  };
}

function assertDiskFile(file: string, roots: string[]): void {
  let real: string;
  try {
    real = fs.realpathSync(file);
  } catch {
    throw new Error(`a backing file of the VM's disk is missing: ${file}`);
  }
  const inside = roots.some((root) => real.startsWith(path.resolve(root) + path.sep));
  if (!inside || real !== path.resolve(file) || !fs.statSync(real).isFile())
    throw new Error(`refusing a disk whose backing file lies outside Capsule's disk folders: ${file}`);
}

function unique(files: string[]): string[] {
  return [...new Set(files)];
}

/** The most QEMU may write to one file: its largest disk's virtual size (a qcow2 header's, a raw volume's own, capped) plus RAM plus slack. */
export function fileSizeLimit(spec: Pick<VmSpec, 'rootDisk' | 'memoryMiB' | 'volumes'>): number {
  const sizes = [qcow2VirtualSize(spec.rootDisk) ?? MAX_VIRTUAL_DISK_BYTES, ...(spec.volumes ?? []).map((v) => fs.statSync(v.file).size)];
  const virtual = Math.min(Math.max(...sizes), MAX_VIRTUAL_DISK_BYTES);
  return virtual + spec.memoryMiB * 1024 * 1024 + FILE_SIZE_SLACK_BYTES;
}

let active: VmJail | undefined;
let sweeper: NodeJS.Timeout | undefined;
/** VMs that exit on their own (a guest powering off, a crash) leave their jail to this sweep. */
const SWEEP_INTERVAL_MS = 10_000;

/**
 * Sets the jail every VM of this process starts in (the daemon does, once, at
 * start, as it reads the QEMU binary from the environment); undefined runs
 * QEMU unconfined.
 */
export function useJail(jail: VmJail | undefined): void {
  active = jail;
  if (sweeper) clearInterval(sweeper);
  sweeper = jail ? setInterval(() => jail.sweep(), SWEEP_INTERVAL_MS).unref() : undefined;
  jail?.sweep();
}

export function activeJail(): VmJail | undefined {
  return active;
}
