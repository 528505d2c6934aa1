// The jail every QEMU runs in (vmm/jail.ts), seen from the host: the process
// of a running sandbox runs as its own uid with no privileges, inside its own
// root folder, namespaces and limits; and a QEMU told to open a host file or
// to run a program (what a guest that took QEMU over would do) cannot.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { DEFAULT_TCG_CODE_BUFFER_MIB } from '../src/config.js';
import { readManifest } from '../src/guest/manifest.js';
import { VmCgroups } from '../src/vmm/cgroup.js';
import { useJail, VmJail } from '../src/vmm/jail.js';
import type { QmpClient } from '../src/vmm/qmp.js';
import { startVm, stopVm, VmRuntimePaths } from '../src/vmm/qemu.js';
import { eventually, it, sandboxTest, sharedCacheDir, TestDaemon } from './fixture.js';

function status(pid: number): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const line of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const at = line.indexOf(':');
    if (at > 0) fields[line.slice(0, at)] = line.slice(at + 1).trim();
  }
  return fields;
}

function sameFile(a: string, b: string): boolean {
  const x = fs.statSync(a);
  const y = fs.statSync(b);
  return x.dev === y.dev && x.ino === y.ino;
}

describe('the VMM jail (real QEMU microVMs)', () => {
  const daemon = new TestDaemon();
  const sandboxIt = sandboxTest(daemon);
  beforeAll(() => daemon.start(), 120_000);
  afterAll(() => daemon.destroy());

  sandboxIt(
    'a sandbox QEMU runs as its own uid, without privileges, in its own root folder, namespaces and limits',
    async ({ newSandbox }) => {
      const first = await newSandbox();
      const second = await newSandbox();
      const pid = first.pid as number;
      const s = status(pid);
      const uid = Number(s.Uid?.split(/\s+/)[0]);
      expect(uid).toBeGreaterThan(900000);
      expect(s.Uid).toBe(`${uid}\t${uid}\t${uid}\t${uid}`);
      expect(s.Gid?.split(/\s+/)[0]).toBe(String(uid));
      expect(s.Groups).toBe('900000');
      expect(s.NoNewPrivs).toBe('1');
      expect(s.Seccomp).toBe('2');
      expect(s.CapEff).toBe('0000000000000000');
      expect(s.CapBnd).toBe('0000000000000000');
      // Each VM its own uid, so one QEMU cannot signal, trace or open the files of another.
      expect(status(second.pid as number).Uid?.split(/\s+/)[0]).not.toBe(String(uid));

      const root = path.join(daemon.runtimeDir, 'jails', first.id, 'root');
      expect(sameFile(`/proc/${pid}/root`, root)).toBe(true);
      for (const ns of ['mnt', 'pid', 'ipc'])
        expect(fs.readlinkSync(`/proc/${pid}/ns/${ns}`)).not.toBe(fs.readlinkSync(`/proc/self/ns/${ns}`));
      // What it sees: the system's programs, its own files; not the host's secrets nor another sandbox's disk.
      expect(fs.existsSync(`/proc/${pid}/root/usr/bin`)).toBe(true);
      expect(fs.existsSync(`/proc/${pid}/root/etc/shadow`)).toBe(false);
      expect(fs.existsSync(`/proc/${pid}/root/root`)).toBe(false);
      const otherDisk = path.join(daemon.stateDir, 'sandboxes', second.id, 'overlay.qcow2');
      expect(fs.existsSync(otherDisk)).toBe(true);
      expect(fs.existsSync(`/proc/${pid}/root${otherDisk}`)).toBe(false);
      // Nothing of the daemon's environment (API keys, tokens): a PATH, and bubblewrap's PWD.
      expect(fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean).sort()).toEqual([
        'PATH=/usr/sbin:/usr/bin:/sbin:/bin',
        'PWD=/',
      ]);
      const limits = fs.readFileSync(`/proc/${pid}/limits`, 'utf8');
      expect(limits).toMatch(/Max open files\s+4096\s+4096/);
      expect(limits).toMatch(/Max core file size\s+0\s+0/);
      expect(limits).not.toMatch(/Max file size\s+unlimited/);

      // And it still is a working sandbox.
      expect((await daemon.api.exec(first.id, ['sh', '-c', 'echo jailed > /root/f && cat /root/f'])).stdout).toBe('jailed\n');
    },
  );

  sandboxIt('a removed sandbox leaves no jail folder and no uid claim', async ({ newSandbox }) => {
    const { id, pid } = await newSandbox();
    const uid = status(pid as number).Uid?.split(/\s+/)[0] as string;
    expect(fs.readlinkSync(path.join('/run/capsule-jail-uids', uid))).toBe(path.join(daemon.runtimeDir, 'jails', id));
    await daemon.api.removeSandbox(id);
    expect(fs.existsSync(path.join(daemon.runtimeDir, 'jails', id))).toBe(false);
    expect(fs.existsSync(path.join('/run/capsule-jail-uids', uid))).toBe(false);
  });
});

describe('a jailed QEMU taken over by its guest (real QEMU, QMP as the attacker)', () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-jail-'));
  const paths = new VmRuntimePaths(path.join(work, 'run', 'vm'));
  let vm: { pid: number; qmp: QmpClient } | undefined;

  beforeAll(async () => {
    const manifest = readManifest(sharedCacheDir);
    if (!manifest) throw new Error('no guest manifest: run scripts/setup');
    const disks = path.join(work, 'disks');
    fs.mkdirSync(disks);
    const rootDisk = path.join(disks, 'overlay.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', rootDisk, '64M']);
    // With its own allowance beyond guest RAM (CAPSULE_VMM_OVERHEAD_MIB), which its cgroup's limit must show.
    useJail(
      new VmJail({
        ids: { first: 980000, count: 1000 },
        runtimeDir: path.join(work, 'run'),
        diskRoots: [work],
        cgroups: VmCgroups.open('capsule'),
        overheadMiB: 32,
      }),
    );
    vm = await startVm(
      {
        id: 'attacker',
        accel: 'tcg',
        vcpus: 1,
        memoryMiB: 64,
        kernel: manifest.kernel,
        initramfs: manifest.initramfs,
        kitDisk: manifest.kit,
        rootDisk,
        hostname: 'attacker',
        agentPortId: 'agent-port',
        // Waiting for a state to load: the guest never runs, only QMP acts here.
        incoming: true,
      },
      paths,
    );
  }, 60_000);
  afterAll(async () => {
    if (vm) await stopVm(vm.pid, vm.qmp);
    vm?.qmp.close();
    useJail(undefined);
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('is held to guest RAM plus the allowance it was given', () => {
    const uid = status(vm?.pid as number).Uid?.split(/\s+/)[0];
    const limit = Number(fs.readFileSync(`/sys/fs/cgroup/memory/capsule/vm-${uid}/memory.limit_in_bytes`, 'utf8'));
    expect(limit).toBe((64 + 32) * 1024 * 1024);
  });

  it('cannot open a host file outside its jail', async () => {
    const qmp = vm?.qmp as QmpClient;
    for (const filename of ['/etc/passwd', '/etc/shadow', path.join(sharedCacheDir, 'guest-manifest.json')]) {
      await expect(
        qmp.execute('blockdev-add', { driver: 'file', filename, 'node-name': `n${filename.length}`, 'read-only': true }),
      ).rejects.toThrow(/No such file|Permission denied|Could not open/);
    }
  });

  it('cannot run a program', async () => {
    const qmp = vm?.qmp as QmpClient;
    const marker = path.join(work, 'run', 'vm', 'spawned');
    await qmp.execute('migrate-incoming', { uri: `exec:touch ${marker}` }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 1000));
    expect(fs.existsSync(marker)).toBe(false);
    // QEMU's seccomp filter kills it at the attempt; were it alive, no child (a forked helper) would be either.
    const children = `/proc/${vm?.pid}/task/${vm?.pid}/children`;
    if (fs.existsSync(children)) expect(fs.readFileSync(children, 'utf8').trim()).toBe('');
  });
});

describe('a guest that writes past its VM memory limit (real QEMU microVMs, cgroup limit)', () => {
  const daemon = new TestDaemon();
  const sandboxIt = sandboxTest(daemon);
  beforeAll(() => daemon.start(), 120_000);
  afterAll(() => daemon.destroy());

  sandboxIt('gets its QEMU killed by its own cgroup: error/oom, while another sandbox answers', async ({ newSandbox }) => {
    const hog = await newSandbox();
    const bystander = await newSandbox();
    const uid = status(hog.pid as number).Uid?.split(/\s+/)[0];
    const group = `/sys/fs/cgroup/memory/capsule/vm-${uid}`;
    expect(fs.readFileSync(`/proc/${hog.pid}/cgroup`, 'utf8')).toContain(`memory:/capsule/vm-${uid}`);
    const limit = Number(fs.readFileSync(path.join(group, 'memory.limit_in_bytes'), 'utf8'));
    // Guest RAM (512 MiB) plus QEMU's allowance (128 MiB and TCG's code buffer, CAPSULE_TCG_CODE_BUFFER_MIB's default).
    expect(limit).toBe((512 + 128 + DEFAULT_TCG_CODE_BUFFER_MIB) * 1024 * 1024);

    // A guest dirtying all its RAM stays within that limit by design, and its own kernel stops it first; to
    // see what crossing it does, the test lowers the limit to what QEMU uses now plus 32 MiB.
    const usage = Number(fs.readFileSync(path.join(group, 'memory.usage_in_bytes'), 'utf8'));
    fs.writeFileSync(path.join(group, 'memory.limit_in_bytes'), String(usage + 32 * 1024 * 1024));
    await daemon.api
      .exec(hog.id, ['sh', '-c', 'mkdir -p /hog && mount -t tmpfs -o size=300m none /hog && dd if=/dev/zero of=/hog/f bs=1M count=250'], {
        timeoutMs: 120_000,
      })
      .catch(() => undefined);
    const ended = await eventually(
      async () => {
        const current = await daemon.api.sandbox(hog.id);
        return current.state === 'error' ? current : undefined;
      },
      60_000,
      'the hog to be killed',
    );
    expect(ended.stateReason, ended.stateMessage).toBe('oom');
    expect((await daemon.api.exec(bystander.id, ['echo', 'alive'])).stdout).toBe('alive\n');
    // The killed VM's group went with it.
    await eventually(async () => (fs.existsSync(group) ? undefined : true), 15_000, 'its cgroup to be removed');
  });
});
