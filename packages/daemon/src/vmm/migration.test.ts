// Migration streams relayed by the daemon, against real QEMUs (microvm, paused
// before boot, no guest) running under the seccomp filter VMs get, and as
// another uid in a folder of their own when the test runs as root, like a
// jailed QEMU. A blob loaded into the source's RAM must come out of the target.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { terminateGroup } from '../launcher.js';
import { loadVmState, migrateBetween, saveVmState } from './migration.js';
import { qemuArgs, QEMU_BINARY, VmRuntimePaths, type VmSpec } from './qemu.js';
import { QmpClient } from './qmp.js';

const spec: VmSpec = {
  id: 'sb_x',
  accel: 'tcg',
  vcpus: 1,
  memoryMiB: 64,
  kernel: '/k/vmlinuz',
  initramfs: '/k/initrd',
  kitDisk: '/k/kit.ext4',
  rootDisk: '/s/overlay.qcow2',
  hostname: 'sb-x',
  agentPortId: 'agent-port',
};
const args = qemuArgs(spec, new VmRuntimePaths('/r'));
const sandboxOption = args[args.indexOf('-sandbox') + 1]!;
/** A uid/gid that is not the daemon's, as a jailed QEMU has (nobody). */
const qemuUid = process.getuid?.() === 0 ? 65534 : undefined;
const BLOB_ADDRESS = 0x100000;

interface TestVm {
  pid: number;
  qmp: QmpClient;
  paths: VmRuntimePaths;
  /** Every QMP command the code under test sent, with its arguments. */
  commands: string[];
}

const vms: TestVm[] = [];
const dirs: string[] = [];

function vmFolder(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mig-'));
  dirs.push(dir);
  if (qemuUid !== undefined) fs.chownSync(dir, qemuUid, qemuUid);
  return dir;
}

async function startQemu(extra: string[]): Promise<TestVm> {
  const paths = new VmRuntimePaths(vmFolder());
  const child = spawn(
    QEMU_BINARY,
    ['-M', 'microvm', '-accel', 'tcg', '-m', '64M', '-nodefaults', '-nographic', '-S', '-sandbox', sandboxOption, ...extra].concat([
      '-qmp',
      `unix:${paths.qmpSocket},server=on,wait=off`,
    ]),
    { stdio: 'ignore', detached: true, ...(qemuUid !== undefined && { uid: qemuUid, gid: qemuUid }) },
  );
  const pid = child.pid!;
  const qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: 10_000 });
  const vm: TestVm = { pid, qmp, paths, commands: [] };
  const execute = qmp.execute.bind(qmp);
  qmp.execute = <T>(command: string, args?: Record<string, unknown>) => {
    vm.commands.push(JSON.stringify({ command, args }));
    return execute<T>(command, args);
  };
  vms.push(vm);
  return vm;
}

/** A QEMU whose RAM holds a random blob at BLOB_ADDRESS. */
async function startQemuWithBlob(): Promise<{ source: TestVm; bytes: Buffer }> {
  const blob = path.join(vmFolder(), 'blob');
  const bytes = randomBytes(1024 * 1024);
  fs.writeFileSync(blob, bytes);
  if (qemuUid !== undefined) fs.chownSync(blob, qemuUid, qemuUid);
  return { source: await startQemu(['-device', `loader,file=${blob},addr=${BLOB_ADDRESS},force-raw=on`]), bytes };
}

async function blobIn(vm: TestVm, size: number): Promise<Buffer> {
  const dump = path.join(vm.paths.dir, 'dump');
  await vm.qmp.execute('pmemsave', { val: BLOB_ADDRESS, size, filename: dump });
  return fs.readFileSync(dump);
}

const openFds = () => fs.readdirSync('/proc/self/fd').length;

afterEach(async () => {
  for (const vm of vms.splice(0)) {
    vm.qmp.close();
    await terminateGroup(vm.pid, 0);
  }
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

describe('migration streams relayed by the daemon (real QEMU, seccomp on)', () => {
  it('saves a VM into a file and loads it into another, through sockets only', async () => {
    const { source, bytes } = await startQemuWithBlob();
    // A socket left by a daemon killed mid-save is in the way.
    fs.writeFileSync(source.paths.migrationOutSocket, '');
    const stateFile = path.join(vmFolder(), 'state');
    const fdsBefore = openFds();

    await saveVmState(source.qmp, source.paths, stateFile, false);

    expect(fs.statSync(stateFile).size).toBeGreaterThan(bytes.length);
    expect(fs.statSync(stateFile).mode & 0o777).toBe(0o600);
    expect(fs.existsSync(source.paths.migrationOutSocket)).toBe(false);
    expect(openFds()).toBe(fdsBefore);

    const target = await startQemu(['-incoming', 'defer']);
    const fdsBeforeLoad = openFds();
    await loadVmState(target.qmp, target.paths, stateFile, false);
    expect(openFds()).toBe(fdsBeforeLoad);
    // Saved again at once, as a freeze does with its helper: QEMU's removal of the socket it loaded
    // through must not take the one the save listens on.
    const again = path.join(path.dirname(stateFile), 'again');
    await saveVmState(target.qmp, target.paths, again, false);
    expect(fs.statSync(again).size).toBeGreaterThan(bytes.length);
    expect(await blobIn(target, bytes.length)).toEqual(bytes);
    for (const vm of [source, target]) {
      expect(vm.commands.join('\n')).not.toContain('exec:');
      expect(fs.readFileSync(`/proc/${vm.pid}/status`, 'utf8')).toMatch(/^Seccomp:\s+2$/m);
    }
  });

  it("moves a VM's state into another QEMU, relayed between their folders", async () => {
    const { source, bytes } = await startQemuWithBlob();
    const target = await startQemu(['-incoming', 'defer']);
    const fdsBefore = openFds();

    await migrateBetween(source.qmp, source.paths, target.qmp, target.paths);

    expect(await blobIn(target, bytes.length)).toEqual(bytes);
    expect(fs.existsSync(source.paths.migrationOutSocket)).toBe(false);
    expect(fs.existsSync(target.paths.migrationInSocket)).toBe(false);
    expect(openFds()).toBe(fdsBefore);
    expect([...source.commands, ...target.commands].join('\n')).not.toContain('exec:');
  });

  it('rejects a save whose file cannot be written, and leaves no socket, fd or migration behind', async () => {
    const source = await startQemu([]);
    const fdsBefore = openFds();

    await expect(saveVmState(source.qmp, source.paths, '/dev/full', false)).rejects.toThrow(/saving the VM state failed/);

    expect(fs.existsSync(source.paths.migrationOutSocket)).toBe(false);
    expect(openFds()).toBe(fdsBefore);
    // QEMU may have handed all of a small state to the socket (completed) before the write failed.
    const { status } = await source.qmp.execute<{ status?: string }>('query-migrate');
    expect(['completed', 'failed', 'cancelled']).toContain(status);
  });

  it('rejects the load of a corrupt state with the reason, leaving no socket or fd, the daemon unharmed', async () => {
    const target = await startQemu(['-incoming', 'defer']);
    const stateFile = path.join(vmFolder(), 'state');
    // Sent whole before QEMU reads it and gives up; QEMU then exits, dropping the connection with bytes
    // unread (a reset), which must not reach the daemon as an unhandled error (it did, 2 runs in 6).
    fs.writeFileSync(stateFile, Buffer.alloc(65536, 0xa5));
    const fdsBefore = openFds();

    await expect(loadVmState(target.qmp, target.paths, stateFile, false)).rejects.toThrow(/restoring the VM state failed|QEMU exited/);

    expect(fs.existsSync(target.paths.migrationInSocket)).toBe(false);
    expect(openFds()).toBeLessThanOrEqual(fdsBefore);
  });

  it('refuses a socket path longer than a unix socket can have, before stopping the VM', async () => {
    const source = await startQemu([]);
    const tooLong = new VmRuntimePaths(path.join(source.paths.dir, 'x'.repeat(100)));

    await expect(saveVmState(source.qmp, tooLong, path.join(source.paths.dir, 'state'), false)).rejects.toThrow(
      /longer than the 107 bytes/,
    );
    expect(source.commands).toEqual([]);
  });
});
