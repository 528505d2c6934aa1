// One cgroup per VM (memory, CPU and pids limits; the kernel's OOM counter),
// under one parent group per daemon, on cgroup v2 or v1 as the host has it.
// It never touches a group outside its parent (on v2 it may only switch on a
// missing controller in the hierarchy root), and never kills a process:
// removing a group is an rmdir, which the kernel refuses while one is inside.
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const CGROUP_ROOT = '/sys/fs/cgroup';

/** The controllers a VM's group is limited by; a host lacking any of them has no usable cgroups. */
export const VM_CONTROLLERS = ['memory', 'cpu', 'pids'] as const;
export type VmController = (typeof VM_CONTROLLERS)[number];

/**
 * QEMU's own memory beyond the guest's RAM and TCG's code buffer, which a
 * VM's memory limit allows on top of its RAM. Measured by `node
 * bench/vmm-overhead.mjs` (bench/README.md, "VMM memory overhead"): guests
 * of 256, 512 and 1024 MiB filling their RAM with python3 under QEMU 7.2 and
 * TCG held 79-85 MiB besides the guest's RAM and the code buffer after a cold
 * boot, 53 MiB restored from a warm snapshot. The rest of 128 is for the
 * kernel's charges to the group (page tables, sockets).
 */
export const VMM_OVERHEAD_MIB = 128;

const MiB = 1024 * 1024;

/** The memory limit of a VM with `guestMiB` of RAM, in bytes. */
export function memoryLimitFor(guestMiB: number, overheadMiB: number = VMM_OVERHEAD_MIB): number {
  return (guestMiB + overheadMiB) * MiB;
}

export interface CgroupSetup {
  /** 2: unified hierarchy with memory, cpu and pids; 1: one v1 hierarchy per controller; 'none': neither is usable. */
  version: 1 | 2 | 'none';
  /** The controllers the host offers (v2: the root's cgroup.controllers; otherwise the v1 hierarchies mounted). */
  controllers: string[];
  root: string;
}

/** How the host's cgroups are laid out under `root`; never throws. */
export function detectCgroups(root: string = CGROUP_ROOT): CgroupSetup {
  const v2Controllers = readTextIfPresent(path.join(root, 'cgroup.controllers'))?.split(/\s+/).filter(Boolean);
  if (v2Controllers && VM_CONTROLLERS.every((c) => v2Controllers.includes(c)))
    return { version: 2, controllers: v2Controllers.sort(), root };
  const v1Controllers = v1Hierarchies(root);
  // A mounted hierarchy, not an empty folder, has cgroup.procs (its root group has no limit files to look for).
  if (VM_CONTROLLERS.every((c) => fs.existsSync(path.join(root, c, 'cgroup.procs'))))
    return { version: 1, controllers: v1Controllers, root };
  return { version: 'none', controllers: v2Controllers?.sort() ?? v1Controllers, root };
}

/** The v1 controller hierarchies mounted under `root` (`cpu,cpuacct` counts as both; `unified` and named ones are not controllers). */
function v1Hierarchies(root: string): string[] {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(root, { withFileTypes: true });
  } catch {
    return [];
  }
  const names = entries
    .filter((entry) => entry.isDirectory() || entry.isSymbolicLink())
    .flatMap((entry) => entry.name.split(','))
    .filter((name) => name !== 'unified' && name !== 'systemd' && !name.startsWith('name='));
  return [...new Set(names)].sort();
}

export interface VmLimits {
  memoryBytes: number;
  vcpus: number;
  /** Most processes and threads the group may hold at once. */
  pids: number;
}

type ControllerPaths = Record<VmController, string>;

/** The daemon's parent group: every VM's group is a child of it. */
export class VmCgroups {
  private constructor(
    readonly version: 1 | 2,
    /** The parent's folder in each controller's hierarchy (one folder for all on v2). */
    readonly paths: ControllerPaths,
  ) {}

  /** Opens the parent group `parentName` (made if missing); throws when the host has no usable cgroups. */
  static open(parentName: string, setup: CgroupSetup = detectCgroups()): VmCgroups {
    checkName(parentName);
    if (setup.version === 'none')
      throw new Error(`no usable cgroups under ${setup.root}: a VM's group needs the ${VM_CONTROLLERS.join(', ')} controllers`);
    const paths = controllerPaths(setup.version, setup.root, parentName);
    for (const folder of new Set(Object.values(paths))) fs.mkdirSync(folder, { recursive: true });
    if (setup.version === 2) {
      // A child group gets a controller only when its parent hands it down, and so on from the root.
      enableControllers(setup.root);
      enableControllers(paths.memory);
    }
    return new VmCgroups(setup.version, paths);
  }

  /** Makes (or reuses) the group of VM `vmName` and writes its limits. */
  create(vmName: string, limits: VmLimits): VmCgroup {
    for (const [what, value] of Object.entries(limits))
      if (!Number.isSafeInteger(value) || value <= 0) throw new Error(`cgroup limit ${what} must be a positive whole number, not ${value}`);
    const group = this.group(vmName);
    for (const folder of new Set(Object.values(group.paths))) fs.mkdirSync(folder, { recursive: true });
    const period = 100_000;
    const quota = limits.vcpus * period;
    if (this.version === 2) {
      writeControl(group.paths.memory, 'memory.max', limits.memoryBytes);
      writeControlIfPresent(group.paths.memory, 'memory.swap.max', 0);
      // The whole group goes at once when it runs out: no jail helper left behind a killed QEMU.
      writeControlIfPresent(group.paths.memory, 'memory.oom.group', 1);
      writeControl(group.paths.cpu, 'cpu.max', `${quota} ${period}`);
    } else {
      // Memory plus swap held to the same figure: no swapping past the limit. The kernel
      // refuses a memory limit above memsw's, so when a reused group's limit goes up, memsw goes first.
      const memsw = fs.existsSync(path.join(group.paths.memory, 'memory.memsw.limit_in_bytes'));
      const raising = memsw && limits.memoryBytes > group.memoryLimitBytes();
      if (raising) writeControl(group.paths.memory, 'memory.memsw.limit_in_bytes', limits.memoryBytes);
      writeControl(group.paths.memory, 'memory.limit_in_bytes', limits.memoryBytes);
      if (memsw && !raising) writeControl(group.paths.memory, 'memory.memsw.limit_in_bytes', limits.memoryBytes);
      writeControl(group.paths.cpu, 'cpu.cfs_period_us', period);
      writeControl(group.paths.cpu, 'cpu.cfs_quota_us', quota);
    }
    writeControl(group.paths.pids, 'pids.max', limits.pids);
    return group;
  }

  /** The group of VM `vmName` if it exists (a VM adopted after a daemon restart), without writing anything. */
  existing(vmName: string): VmCgroup | undefined {
    const group = this.group(vmName);
    return fs.existsSync(group.paths.memory) ? group : undefined;
  }

  /**
   * Removes the groups of VMs not in `keep` that no process is in any more
   * (the leftovers of VMs that died with a daemon down); a group still
   * holding a process is left alone. Returns the names removed.
   */
  sweep(keep: ReadonlySet<string>): string[] {
    const removed = new Set<string>();
    for (const folder of new Set(Object.values(this.paths))) {
      let entries: fs.Dirent[];
      try {
        entries = fs.readdirSync(folder, { withFileTypes: true });
      } catch {
        continue;
      }
      for (const entry of entries) {
        if (!entry.isDirectory() || keep.has(entry.name) || !VALID_NAME.test(entry.name)) continue;
        try {
          fs.rmdirSync(path.join(folder, entry.name));
          removed.add(entry.name);
        } catch (err) {
          if (errnoCode(err) !== 'EBUSY' && errnoCode(err) !== 'ENOENT') throw err;
        }
      }
    }
    return [...removed].sort();
  }

  private group(vmName: string): VmCgroup {
    checkName(vmName);
    const paths = Object.fromEntries(VM_CONTROLLERS.map((c) => [c, path.join(this.paths[c], vmName)])) as ControllerPaths;
    return new VmCgroup(vmName, this.version, paths);
  }
}

/** One VM's group. */
export class VmCgroup {
  constructor(
    readonly name: string,
    readonly version: 1 | 2,
    /** The group's folder in each controller's hierarchy (one folder for all on v2). */
    readonly paths: ControllerPaths,
  ) {}

  /** Moves process `pid`, all its threads with it, into the group in every hierarchy. */
  addProcess(pid: number): void {
    if (!Number.isSafeInteger(pid) || pid <= 0) throw new Error(`not a process id: ${pid}`);
    for (const folder of new Set(Object.values(this.paths))) writeControl(folder, 'cgroup.procs', pid);
  }

  /** Whether the kernel's OOM killer has killed a process of this group (its oom_kill counter). */
  oomKilled(): boolean {
    const text = readTextIfPresent(path.join(this.paths.memory, this.version === 2 ? 'memory.events' : 'memory.oom_control'));
    const count = /^oom_kill (\d+)$/m.exec(text ?? '')?.[1];
    return count !== undefined && Number(count) > 0;
  }

  /** The memory limit the kernel applies (rounded to pages), in bytes; Infinity when there is none. */
  memoryLimitBytes(): number {
    const file = path.join(this.paths.memory, this.version === 2 ? 'memory.max' : 'memory.limit_in_bytes');
    const text = fs.readFileSync(file, 'utf8').trim();
    // v1 says "no limit" with a huge page-rounded number rather than a word.
    return text === 'max' || Number(text) >= 2 ** 62 ? Number.POSITIVE_INFINITY : Number(text);
  }

  /**
   * Removes the group. The kernel refuses (EBUSY) until the processes that
   * were in it are reaped, which may lag their kill a little: that is retried
   * for `timeoutMs`. A group already gone is no error.
   */
  async remove(timeoutMs = 2000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (const folder of new Set(Object.values(this.paths))) {
      for (;;) {
        try {
          fs.rmdirSync(folder);
          break;
        } catch (err) {
          if (errnoCode(err) === 'ENOENT') break;
          if (errnoCode(err) !== 'EBUSY' || Date.now() > deadline) throw err;
          await sleep(20);
        }
      }
    }
  }
}

/** A name is one path segment of letters, digits, `_` and `-`: never `..`, a `/`, or a control file's dotted name. */
const VALID_NAME = /^[A-Za-z0-9_-]{1,100}$/;

function checkName(name: string): void {
  if (!VALID_NAME.test(name)) throw new Error(`not a valid cgroup name: ${JSON.stringify(name)} (letters, digits, _ and - only)`);
}

function controllerPaths(version: 1 | 2, root: string, name: string): ControllerPaths {
  return Object.fromEntries(
    VM_CONTROLLERS.map((c) => [c, version === 2 ? path.join(root, name) : path.join(root, c, name)]),
  ) as ControllerPaths;
}

/** Hands memory, cpu and pids down from the v2 group at `folder` to its children, writing only what is missing. */
function enableControllers(folder: string): void {
  const enabled = readTextIfPresent(path.join(folder, 'cgroup.subtree_control'))?.split(/\s+/) ?? [];
  const missing = VM_CONTROLLERS.filter((c) => !enabled.includes(c));
  if (missing.length > 0) writeControl(folder, 'cgroup.subtree_control', missing.map((c) => `+${c}`).join(' '));
}

function writeControl(folder: string, file: string, value: string | number): void {
  fs.writeFileSync(path.join(folder, file), String(value));
}

function writeControlIfPresent(folder: string, file: string, value: string | number): void {
  if (fs.existsSync(path.join(folder, file))) writeControl(folder, file, value);
}

/** A file's text, or undefined when it cannot be read (kernel files that exist only with some features). */
export function readTextIfPresent(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

function errnoCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException).code;
}
