import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { CGROUP_ROOT, detectCgroups, memoryLimitFor, VmCgroups } from './cgroup.js';

function fakeRoot(files: Record<string, string>, folders: string[] = []): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-cgroup-'));
  for (const folder of folders) fs.mkdirSync(path.join(root, folder), { recursive: true });
  for (const [file, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
    fs.writeFileSync(path.join(root, file), text);
  }
  return root;
}

describe('detectCgroups and VmCgroups on fake cgroup folders (plain files, no kernel behind them)', () => {
  const roots: string[] = [];
  const make = (files: Record<string, string>, folders?: string[]) => {
    const root = fakeRoot(files, folders);
    roots.push(root);
    return root;
  };
  afterAll(() => {
    for (const root of roots) fs.rmSync(root, { recursive: true, force: true });
  });

  it('finds v2 when the root offers memory, cpu and pids', () => {
    const root = make({ 'cgroup.controllers': 'cpuset cpu io memory hugetlb pids rdma misc\n' });
    expect(detectCgroups(root)).toEqual({
      version: 2,
      controllers: ['cpu', 'cpuset', 'hugetlb', 'io', 'memory', 'misc', 'pids', 'rdma'],
      root,
    });
  });

  it('finds v1 beside an empty cgroup2 mount (a hybrid host like this one)', () => {
    const root = make(
      {
        'unified/cgroup.controllers': '',
        'memory/cgroup.procs': '',
        'cpu,cpuacct/cgroup.procs': '',
        'pids/cgroup.procs': '',
      },
      ['systemd', 'blkio'],
    );
    fs.symlinkSync('cpu,cpuacct', path.join(root, 'cpu'));
    expect(detectCgroups(root)).toEqual({ version: 1, controllers: ['blkio', 'cpu', 'cpuacct', 'memory', 'pids'], root });
  });

  it('says none when a needed controller is missing, listing what there is', () => {
    const v2WithoutPids = make({ 'cgroup.controllers': 'cpu memory\n' });
    expect(detectCgroups(v2WithoutPids)).toEqual({ version: 'none', controllers: ['cpu', 'memory'], root: v2WithoutPids });
    const v1WithoutPids = make({ 'memory/cgroup.procs': '', 'cpu/cgroup.procs': '' }, ['pids']);
    expect(detectCgroups(v1WithoutPids).version).toBe('none');
    expect(detectCgroups(path.join(v1WithoutPids, 'missing'))).toMatchObject({ version: 'none', controllers: [] });
  });

  it('refuses to open a parent on a host without cgroups, and names that are not one plain path segment', () => {
    const root = make({});
    expect(() => VmCgroups.open('capsule', detectCgroups(root))).toThrow(/no usable cgroups/);
    const v2 = make({ 'cgroup.controllers': 'cpu memory pids', 'cgroup.subtree_control': '' });
    for (const bad of ['..', '../escape', 'a/b', '', 'memory.max', 'x'.repeat(101)])
      expect(() => VmCgroups.open(bad, detectCgroups(v2))).toThrow(/not a valid cgroup name/);
    const parent = VmCgroups.open('capsule', detectCgroups(v2));
    expect(fs.readFileSync(path.join(v2, 'cgroup.subtree_control'), 'utf8')).toBe('+memory +cpu +pids');
    expect(() => parent.create('../capsule-other', { memoryBytes: 1, vcpus: 1, pids: 1 })).toThrow(/not a valid cgroup name/);
    expect(() => parent.create('vm', { memoryBytes: 0, vcpus: 1, pids: 1 })).toThrow(/memoryBytes must be a positive/);
  });

  it("writes the files a v2 kernel takes: controllers handed down from the root, the limits in the VM's own folder", () => {
    const root = make({ 'cgroup.controllers': 'cpu memory pids', 'cgroup.subtree_control': 'cpu memory\n' });
    const parent = VmCgroups.open('capsule', detectCgroups(root));
    expect(fs.readFileSync(path.join(root, 'cgroup.subtree_control'), 'utf8')).toBe('+pids'); // only what was missing
    expect(fs.readFileSync(path.join(root, 'capsule/cgroup.subtree_control'), 'utf8')).toBe('+memory +cpu +pids');
    const group = parent.create('sb_1', { memoryBytes: 384 * 1024 * 1024, vcpus: 2, pids: 64 });
    const folder = path.join(root, 'capsule/sb_1');
    expect(group.paths).toEqual({ memory: folder, cpu: folder, pids: folder });
    const read = (file: string) => fs.readFileSync(path.join(folder, file), 'utf8');
    expect([read('memory.max'), read('cpu.max'), read('pids.max')]).toEqual([String(384 * 1024 * 1024), '200000 100000', '64']);
    group.addProcess(4242);
    expect(read('cgroup.procs')).toBe('4242');
  });

  it('writes the files v1 kernels take, one folder per controller', () => {
    const root = make({ 'memory/cgroup.procs': '', 'cpu/cgroup.procs': '', 'pids/cgroup.procs': '' });
    const group = VmCgroups.open('capsule', detectCgroups(root)).create('sb_1', { memoryBytes: 1 << 30, vcpus: 1, pids: 64 });
    expect(group.paths).toEqual({
      memory: path.join(root, 'memory/capsule/sb_1'),
      cpu: path.join(root, 'cpu/capsule/sb_1'),
      pids: path.join(root, 'pids/capsule/sb_1'),
    });
    const read = (controller: 'memory' | 'cpu' | 'pids', file: string) => fs.readFileSync(path.join(group.paths[controller], file), 'utf8');
    expect(read('memory', 'memory.limit_in_bytes')).toBe(String(1 << 30));
    expect(fs.existsSync(path.join(group.paths.memory, 'memory.memsw.limit_in_bytes'))).toBe(false); // only where the kernel has it
    expect([read('cpu', 'cpu.cfs_period_us'), read('cpu', 'cpu.cfs_quota_us'), read('pids', 'pids.max')]).toEqual([
      '100000',
      '100000',
      '64',
    ]);
    group.addProcess(4242);
    for (const controller of ['memory', 'cpu', 'pids'] as const) expect(read(controller, 'cgroup.procs')).toBe('4242');
  });

  it('adds the VMM overhead to the guest RAM', () => {
    expect(memoryLimitFor(512, 100)).toBe(612 * 1024 * 1024);
  });
});

/** Whether this process may make groups in the host's cgroups (root on a host that has them); the reason when not. */
function cgroupsUnwritable(): string | undefined {
  const setup = detectCgroups();
  if (setup.version === 'none') return `no usable cgroups under ${CGROUP_ROOT}`;
  const probe = path.join(CGROUP_ROOT, setup.version === 2 ? '' : 'memory', `capsule-probe-${process.pid}`);
  try {
    fs.mkdirSync(probe);
    fs.rmdirSync(probe);
    return undefined;
  } catch (err) {
    return `cannot make a cgroup here (${(err as NodeJS.ErrnoException).code}): needs root and a writable cgroupfs`;
  }
}
const unwritable = cgroupsUnwritable();

describe.skipIf(unwritable !== undefined)(`VmCgroups on this host's cgroups${unwritable ? ` (skipped: ${unwritable})` : ''}`, () => {
  const parentName = `capsule-test-${process.pid}`;
  const children: ChildProcess[] = [];
  let parent: VmCgroups | undefined;

  afterEach(() => {
    for (const child of children.splice(0)) child.kill('SIGKILL');
  });
  afterAll(async () => {
    if (!parent) return;
    for (const folder of new Set(Object.values(parent.paths))) {
      for (const name of fs.readdirSync(folder, { withFileTypes: true }).filter((e) => e.isDirectory()))
        fs.rmdirSync(path.join(folder, name.name));
      fs.rmdirSync(folder);
    }
  });

  const exited = (child: ChildProcess) =>
    new Promise<NodeJS.Signals | number | null>((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)));
  const procs = (folder: string) => fs.readFileSync(path.join(folder, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);

  it('writes the limits, moves a process in, and leaves nothing behind on remove', async () => {
    parent = VmCgroups.open(parentName);
    const group = parent.create('vm-sleep', { memoryBytes: 64 * 1024 * 1024, vcpus: 2, pids: 32 });
    expect(group.memoryLimitBytes()).toBe(64 * 1024 * 1024);
    const read = (controller: 'memory' | 'cpu' | 'pids', file: string) =>
      fs.readFileSync(path.join(group.paths[controller], file), 'utf8').trim();
    if (group.version === 1) {
      expect(read('cpu', 'cpu.cfs_quota_us')).toBe('200000');
      expect(read('cpu', 'cpu.cfs_period_us')).toBe('100000');
      if (fs.existsSync(path.join(group.paths.memory, 'memory.memsw.limit_in_bytes')))
        expect(read('memory', 'memory.memsw.limit_in_bytes')).toBe(String(64 * 1024 * 1024));
    } else expect(read('cpu', 'cpu.max')).toBe('200000 100000');
    expect(read('pids', 'pids.max')).toBe('32');
    // Made again (a VM's group reused), its limits go up and down.
    expect(parent.create('vm-sleep', { memoryBytes: 128 * 1024 * 1024, vcpus: 2, pids: 32 }).memoryLimitBytes()).toBe(128 * 1024 * 1024);
    expect(parent.create('vm-sleep', { memoryBytes: 64 * 1024 * 1024, vcpus: 2, pids: 32 }).memoryLimitBytes()).toBe(64 * 1024 * 1024);

    const sleeper = spawn('sleep', ['600'], { stdio: 'ignore' });
    children.push(sleeper);
    const pid = sleeper.pid as number;
    group.addProcess(pid);
    for (const folder of Object.values(group.paths)) expect(procs(folder)).toContain(pid);
    expect(group.oomKilled()).toBe(false);
    expect(parent.existing('vm-sleep')?.paths).toEqual(group.paths);

    // A group with a live process in it is neither swept nor removed.
    expect(parent.sweep(new Set())).toEqual([]);
    await expect(group.remove(100)).rejects.toThrow(/EBUSY/);
    const gone = exited(sleeper);
    sleeper.kill('SIGKILL');
    await gone;
    await group.remove();
    for (const folder of Object.values(group.paths)) expect(fs.existsSync(folder)).toBe(false);
    await group.remove(); // already gone: no error
    expect(parent.existing('vm-sleep')).toBeUndefined();
  });

  it('sees the kernel kill a memory hog inside its group, and nothing outside it', async () => {
    parent ??= VmCgroups.open(parentName);
    const group = parent.create('vm-hog', { memoryBytes: 64 * 1024 * 1024, vcpus: 1, pids: 32 });
    // It waits for a line on stdin, so that it allocates only once inside the group: 200 MiB, every page written.
    const hog = spawn(process.execPath, ['-e', "process.stdin.once('data', () => { Buffer.alloc(200 << 20).fill(1); process.exit(0); })"], {
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    children.push(hog);
    const outcome = exited(hog);
    group.addProcess(hog.pid as number);
    hog.stdin?.write('go\n');
    expect(await outcome).toBe('SIGKILL');
    expect(group.oomKilled()).toBe(true);
    await group.remove();
    for (const folder of Object.values(group.paths)) expect(fs.existsSync(folder)).toBe(false);
  });

  it('sweeps the empty groups of dead VMs and keeps the ones asked for', async () => {
    parent ??= VmCgroups.open(parentName);
    const limits = { memoryBytes: 32 * 1024 * 1024, vcpus: 1, pids: 8 };
    const kept = parent.create('vm-kept', limits);
    parent.create('vm-dead-1', limits);
    parent.create('vm-dead-2', limits);
    expect(parent.sweep(new Set(['vm-kept']))).toEqual(['vm-dead-1', 'vm-dead-2']);
    expect(parent.existing('vm-dead-1')).toBeUndefined();
    expect(parent.existing('vm-kept')).toBeDefined();
    await kept.remove();
  });
});
