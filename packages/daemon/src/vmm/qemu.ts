// The QEMU `microvm` machine: builds the command line, starts QEMU detached (so
// a daemon restart never takes VMs down), and stops it gracefully then by
// force. The driver interface over it is driver.ts; its handle is qemu-vm.ts.
import fs from 'node:fs';
import path from 'node:path';
import { isProcessAlive, runCommand, spawnDetached, tailOfFile, terminateGroup, waitForExit } from '../launcher.js';
import { AGENT_PORT_NAME, BULK_PORT_NAME } from '@capsule/protocol/agent';
import { GUEST_NETWORK, type NicBackend } from '../guest-network.js';
import { activeJail } from './jail.js';
import { QmpClient } from './qmp.js';
import { tcgCodeBufferMiB } from './tcg-code-buffer.js';

export const QEMU_BINARY = process.env.CAPSULE_QEMU ?? 'qemu-system-x86_64';

export type Accel = 'kvm' | 'tcg';

/** A volume's disk as the VM gets it: a raw ext4 file the guest's init mounts at `mount`, finding it by `serial`. */
export interface VolumeDrive {
  file: string;
  /** `capsule-vol-N`: at most 20 characters (virtio-blk's limit). */
  serial: string;
  /** An absolute guest path without spaces, commas or colons (volumes/volume-rules.ts). */
  mount: string;
  readOnly: boolean;
}

export interface VmSpec {
  /** Sandbox id; written into QEMU's command line so a pid can be recognised as ours. */
  id: string;
  accel: Accel;
  vcpus: number;
  memoryMiB: number;
  kernel: string;
  initramfs: string;
  kitDisk: string;
  rootDisk: string;
  hostname: string;
  /** QEMU device id of the agent port; named in the VSERPORT_CHANGE events. */
  agentPortId: string;
  /**
   * A second virtio-serial port for the bytes of large /files transfers
   * (bulk.sock). Absent in machines recorded before it existed: a restore
   * must have the devices of the state it loads, so those keep HTTP/2 only.
   * The number is the version of the port's contract its agent speaks
   * (@capsule/protocol/agent `bulkProtocolVersion`); `true`, version 1.
   */
  bulkPort?: boolean | number | undefined;
  /** Host TSC frequency for TCG guests (see tsc.ts); undefined leaves the guest to calibrate. */
  tscKhz?: number | undefined;
  /**
   * Guest RAM as a memory backend object named `mem` instead of the machine's
   * own RAM. A `file` with `shared` writes go to the file (a template VM whose
   * memory becomes the warm snapshot); a private file mapping reads the file
   * and copies on write, so sandboxes restored from one snapshot share its
   * pages and never change it. `ram` is plain memory under the same name, for
   * resuming such a sandbox from a full memory image.
   */
  memoryBackend?: { type: 'file'; path: string; shared: boolean } | { type: 'ram' } | undefined;
  /** Start paused, waiting for `migrate-incoming` (a restore) instead of booting. */
  incoming?: boolean;
  /**
   * The guest's NIC and what it is plugged into; none for a VM without a
   * network (the KVM probe). A restore must have a NIC when the snapshot's VM
   * had one, but its backend may differ: netdev options are not migrated.
   */
  nic?: NicBackend | undefined;
  /**
   * Volumes, after every other device: a machine with none has the devices
   * (and so the saved states) of one recorded before volumes existed. The
   * guest mounts them at its boot, so a VM with volumes is never a restore of
   * a snapshot taken without them.
   */
  volumes?: VolumeDrive[] | undefined;
}

/** QEMU ids of the NIC and its backend: `set_link` names the NIC. */
export const NIC_DEVICE_ID = 'nic0';
const NETDEV_ID = 'net0';

/** QEMU option values are comma-separated: a comma inside a value is written twice. */
export function optionValue(value: string): string {
  return value.replace(/,/g, ',,');
}

/** The transient files of one VM: sockets, pid file and QEMU's own log. */
export class VmRuntimePaths {
  constructor(readonly dir: string) {}
  get qmpSocket(): string {
    return path.join(this.dir, 'qmp.sock');
  }
  get agentSocket(): string {
    return path.join(this.dir, 'agent.sock');
  }
  get bulkSocket(): string {
    return path.join(this.dir, 'bulk.sock');
  }
  get consoleSocket(): string {
    return path.join(this.dir, 'console.sock');
  }
  /** Where the daemon listens for the state QEMU sends out (migration.ts). */
  get migrationOutSocket(): string {
    return path.join(this.dir, 'migrate-out.sock');
  }
  /**
   * Where QEMU listens for a state coming in. Apart from the other: QEMU
   * removes the socket it listened on a moment after the load, and must not
   * take a save's socket with it.
   */
  get migrationInSocket(): string {
    return path.join(this.dir, 'migrate-in.sock');
  }
  get pidFile(): string {
    return path.join(this.dir, 'qemu.pid');
  }
  get qemuLog(): string {
    return path.join(this.dir, 'qemu.log');
  }
}

/** The kernel option guest/init reads: `capsule.net=ADDRESS/PREFIX,GATEWAY,DNS,MAC`. */
export function guestNetworkKernelArg(): string {
  const n = GUEST_NETWORK;
  return `capsule.net=${n.address}/${n.prefixLength},${n.gateway},${n.dns},${n.mac}`;
}

/** QEMU's -netdev and -device arguments for the guest NIC on `backend`. */
export function nicArgs(backend: NicBackend): string[] {
  const n = GUEST_NETWORK;
  const device = `virtio-net-device,mac=${n.mac},id=${NIC_DEVICE_ID}`;
  if (backend.type === 'none') return ['-device', device];
  const netdev =
    backend.type === 'user'
      ? // Same addresses as the guest is configured with; IPv6 off so that every sandbox has exactly the address above.
        `user,id=${NETDEV_ID},ipv4=on,ipv6=off,net=10.0.2.0/${n.prefixLength},host=${n.gateway},dns=${n.dns}`
      : // No vnet header: the NIC then offers the guest the same features as on user-mode networking, so a
        // device state saved on one (the warm snapshot) loads into the other.
        `tap,id=${NETDEV_ID},ifname=${backend.ifname},script=no,downscript=no,vnet_hdr=off`;
  return ['-netdev', netdev, '-device', `${device},netdev=${NETDEV_ID}`];
}

export function kernelCommandLine(spec: Pick<VmSpec, 'hostname' | 'accel' | 'tscKhz' | 'nic' | 'volumes'>): string {
  const args = ['console=ttyS0', 'quiet', 'panic=-1', 'reboot=t', 'random.trust_cpu=on', `capsule.hostname=${spec.hostname}`];
  if (spec.nic) args.push(guestNetworkKernelArg());
  // guest/init mounts each: `capsule.volume=SERIAL,PATH,rw|ro`.
  for (const volume of spec.volumes ?? []) args.push(`capsule.volume=${volume.serial},${volume.mount},${volume.readOnly ? 'ro' : 'rw'}`);
  if (spec.accel === 'tcg' && spec.tscKhz !== undefined) args.push(`tsc_early_khz=${spec.tscKhz}`, 'tsc=reliable');
  // Under TCG each piece of machine code V8 generates is translated again by QEMU, which costs more
  // than interpreting the agent's short request paths: --jitless took about a quarter off the guest
  // CPU per exec and made no upload slower. Under KVM the JIT is plain native code and stays on.
  if (spec.accel === 'tcg') args.push('capsule.jitless=1');
  return args.join(' ');
}

/** `pidFile: false` when the daemon writes QEMU's pid itself (a jailed QEMU knows only its namespace's pid, 1). */
export function qemuArgs(spec: VmSpec, paths: VmRuntimePaths, options: { pidFile?: boolean } = {}): string[] {
  const backend = spec.memoryBackend;
  const memory =
    backend?.type === 'file'
      ? [
          '-object',
          `memory-backend-file,id=mem,size=${spec.memoryMiB}M,mem-path=${optionValue(backend.path)},share=${backend.shared ? 'on' : 'off'}`,
        ]
      : backend?.type === 'ram'
        ? ['-object', `memory-backend-ram,id=mem,size=${spec.memoryMiB}M`]
        : [];
  return [
    '-name',
    spec.id,
    '-M',
    `microvm,acpi=on,x-option-roms=off,rtc=on${backend ? ',memory-backend=mem' : ''}`,
    '-accel',
    // TCG's translated code is QEMU's memory too, and grows with every new guest code path: bounded, so the cgroup's
    // limit holds and an idle sandbox keeps less of it (tcg-code-buffer.ts).
    spec.accel === 'tcg' ? `tcg,tb-size=${tcgCodeBufferMiB()}` : spec.accel,
    '-cpu',
    spec.accel === 'kvm' ? 'host' : 'max',
    '-smp',
    String(spec.vcpus),
    '-m',
    `${spec.memoryMiB}M`,
    ...memory,
    '-nodefaults',
    '-no-user-config',
    '-nographic',
    '-no-reboot',
    // QEMU's own seccomp filter: no spawning (migration streams go through sockets), no setuid,
    // no changing priorities or affinities, no syscalls that only obsolete devices need.
    '-sandbox',
    'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
    // A restore replaces all of RAM, and a booted guest never reads the kernel or its command line
    // again (QEMU hands them over through fw_cfg, whose contents are not part of the saved state):
    // reading and copying a 14 MiB kernel was half of QEMU's start-up before a restore could begin.
    ...(spec.incoming ? [] : ['-kernel', spec.kernel, '-initrd', spec.initramfs, '-append', kernelCommandLine(spec)]),
    '-drive',
    `id=root,file=${optionValue(spec.rootDisk)},format=qcow2,if=none,discard=unmap`,
    '-device',
    'virtio-blk-device,drive=root,serial=capsule-root',
    '-drive',
    `id=kit,file=${optionValue(spec.kitDisk)},format=raw,if=none,readonly=on`,
    '-device',
    'virtio-blk-device,drive=kit,serial=capsule-kit',
    '-object',
    'rng-random,id=rng0,filename=/dev/urandom',
    '-device',
    'virtio-rng-device,rng=rng0',
    ...(spec.nic ? nicArgs(spec.nic) : []),
    '-device',
    'virtio-serial-device',
    '-chardev',
    `socket,id=agent,path=${optionValue(paths.agentSocket)},server=on,wait=off`,
    '-device',
    `virtserialport,chardev=agent,name=${AGENT_PORT_NAME},id=${spec.agentPortId}`,
    ...(spec.bulkPort
      ? [
          '-chardev',
          `socket,id=bulk,path=${optionValue(paths.bulkSocket)},server=on,wait=off`,
          '-device',
          `virtserialport,chardev=bulk,name=${BULK_PORT_NAME},id=bulk-port`,
        ]
      : []),
    ...(spec.volumes ?? []).flatMap((volume, index) => [
      '-drive',
      `id=vol${index},file=${optionValue(volume.file)},format=raw,if=none${volume.readOnly ? ',readonly=on' : ',discard=unmap'}`,
      '-device',
      `virtio-blk-device,drive=vol${index},serial=${volume.serial}`,
    ]),
    '-chardev',
    `socket,id=console,path=${optionValue(paths.consoleSocket)},server=on,wait=off`,
    '-serial',
    'chardev:console',
    '-qmp',
    `unix:${optionValue(paths.qmpSocket)},server=on,wait=off`,
    ...(options.pidFile === false ? [] : ['-pidfile', paths.pidFile]),
    ...(spec.incoming ? ['-incoming', 'defer'] : []),
  ];
}

/** Starts QEMU (in its jail when one is in use) and returns its pid and a connected QMP client. */
export async function startVm(spec: VmSpec, paths: VmRuntimePaths): Promise<{ pid: number; qmp: QmpClient }> {
  fs.mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
  // A tap device is opened by name in QEMU's own network namespace, and slirp's sockets are made in it:
  // QEMU starts inside the sandbox's network namespace. nsenter execs the next program, so the pid stays QEMU's.
  const netns = spec.nic?.type === 'tap' || spec.nic?.type === 'user' ? spec.nic.netns : undefined;
  const outer = netns ? ['nsenter', `--net=${netns}`, '--'] : [];
  const jail = activeJail();
  let pid: number;
  if (jail) {
    pid = await jail.spawn(spec, paths.dir, outer, [QEMU_BINARY, ...qemuArgs(spec, paths, { pidFile: false })], paths.qemuLog);
    fs.writeFileSync(paths.pidFile, `${pid}\n`, { mode: 0o644 });
  } else {
    const [command, ...args] = [...outer, QEMU_BINARY, ...qemuArgs(spec, paths)] as [string, ...string[]];
    pid = await spawnDetached(command, args, { logFile: paths.qemuLog });
  }
  try {
    const qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: 10_000, isAlive: () => isProcessAlive(pid) });
    return { pid, qmp };
  } catch (err) {
    await terminateGroup(pid, 1000);
    jail?.release(spec.id);
    const log = tailOfFile(paths.qemuLog).trim();
    throw new Error(`Failed to launch QEMU: ${(err as Error).message}${log ? `\n${log}` : ''}`);
  }
}

/** Reads the pid file and checks that the process is the QEMU of sandbox `id`. */
export function findRunningVm(paths: VmRuntimePaths, id: string): number | undefined {
  let pid: number;
  try {
    pid = Number(fs.readFileSync(paths.pidFile, 'utf8').trim());
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0 || !isProcessAlive(pid)) return undefined;
  try {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    const nameAt = argv.indexOf('-name');
    return nameAt >= 0 && argv[nameAt + 1] === id ? pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Every QEMU whose QMP socket lies under `dir`, with its VM id: found by its
 * command line, so also one whose pid file was never written (a daemon killed
 * while launching it).
 */
export function findVmsUnder(dir: string): { pid: number; id: string }[] {
  const qmpPrefix = `unix:${optionValue(`${dir}/`)}`;
  const found: { pid: number; id: string }[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue; // Gone while listed.
    }
    if (!path.basename(argv[0] ?? '').startsWith('qemu-system')) continue;
    const qmp = argv[argv.indexOf('-qmp') + 1];
    const id = argv[argv.indexOf('-name') + 1];
    if (qmp?.startsWith(qmpPrefix) && id) found.push({ pid: Number(entry), id });
  }
  return found;
}

/** Asks QEMU to quit over QMP, then falls back to signals. Resolves when it is gone, its jail with it. */
export async function stopVm(pid: number, qmp: QmpClient | undefined): Promise<void> {
  const launcher = jailLauncherOf(pid);
  if (qmp && !qmp.isClosed) {
    try {
      await Promise.race([qmp.execute('quit'), new Promise((r) => setTimeout(r, 2000))]);
    } catch {
      // The connection closing is what a successful quit looks like.
    }
    if (await waitForExit(pid, 3000)) return await afterVmExit(launcher);
  }
  await terminateGroup(pid, 3000);
  await afterVmExit(launcher);
}

/** Ends a VM by signals alone (no QMP connection to it). */
export async function killVm(pid: number): Promise<void> {
  const launcher = jailLauncherOf(pid);
  await terminateGroup(pid, 2000);
  await afterVmExit(launcher);
}

/**
 * A jailed QEMU's parent, bubblewrap's outer process, which sits in the VM's
 * network namespace too and leaves it a moment after QEMU: a stop that
 * returned before it did left a namespace that looked in use.
 */
function jailLauncherOf(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return fs.readFileSync(`/proc/${parent}/comm`, 'utf8').trim() === 'bwrap' ? parent : undefined;
  } catch {
    return undefined; // Gone already.
  }
}

async function afterVmExit(launcher: number | undefined): Promise<void> {
  if (launcher !== undefined) await waitForExit(launcher, 2000);
  activeJail()?.sweep();
}

export async function qemuVersion(): Promise<string> {
  const { stdout } = await runCommand(QEMU_BINARY, ['--version']);
  return /version\s+(\S+)/.exec(stdout)?.[1] ?? stdout.split('\n')[0] ?? 'unknown';
}
