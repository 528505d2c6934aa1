// The peer a user might pick instead of Capsule: podman (Debian's 4.3) running
// the base template's own root filesystem, unpacked from its ext4 image, and
// the same commands. Out of the box podman fails on this kind of host (crun
// refuses hybrid cgroups; raising an rlimit needs CAP_SYS_RESOURCE, which root
// lacks here), so it runs configured for what the host allows: runc, the
// cgroupfs manager, rlimits no higher than the host's. Everything podman keeps
// (storage, runtime state) lives in the run's private folder.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parentPid, processesUnder, repeat, timed } from '../harness.mjs';
import { availableMiB, pssMiB } from '../lib/machine.mjs';

const CONF = `# Written by bench/cases/peer-podman.mjs: podman as this host allows it.
[containers]
# The defaults raise RLIMIT_NOFILE and RLIMIT_NPROC; without CAP_SYS_RESOURCE that fails.
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
# crun 1.8 refuses hosts with cgroup v1 and a hybrid cgroup2 mount; runc does not.
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
`;

function missingTools() {
  const missing = ['podman', 'runc', 'debugfs'].filter((tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0);
  return missing.length > 0 ? `${missing.join(', ')} not installed (bench/run installs them)` : undefined;
}

class Podman {
  constructor(ctx) {
    this.dir = path.join(ctx.run.root, 'podman');
    this.rootfs = path.join(this.dir, 'rootfs');
    fs.mkdirSync(this.rootfs, { recursive: true });
    fs.writeFileSync(path.join(this.dir, 'containers.conf'), CONF);
    this.env = { ...process.env, CONTAINERS_CONF: path.join(this.dir, 'containers.conf') };
    this.global = [
      '--root',
      path.join(this.dir, 'storage'),
      '--runroot',
      path.join(this.dir, 'run'),
      '--tmpdir',
      path.join(this.dir, 'tmp'),
      '--storage-driver',
      'vfs',
    ];
    // Containers are found by podman itself: a container's process names none of this folder.
    ctx.run.cleanupSteps.push(() =>
      spawnSync('podman', [...this.global, 'rm', '--force', '--all', '--time', '0'], { env: this.env, stdio: 'ignore', timeout: 60_000 }),
    );
  }

  /** The template's root filesystem as a folder, without mounting it: debugfs copies the files out of the ext4 image. */
  unpack(image) {
    const res = spawnSync('debugfs', ['-R', `rdump / ${this.rootfs}`, image], { encoding: 'utf8' });
    if (res.status !== 0 || !fs.existsSync(path.join(this.rootfs, 'usr/bin/true')))
      throw new Error(`debugfs could not unpack ${image}: ${res.stderr}`);
  }

  /** Runs podman to its end; throws with its stderr unless it exits 0. */
  run(args) {
    return new Promise((resolve, reject) => {
      const child = spawn('podman', [...this.global, ...args], { env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c) => (stdout += c));
      child.stderr.on('data', (c) => (stderr += c));
      child.once('error', reject);
      child.once('exit', (code) =>
        code === 0 ? resolve(stdout) : reject(new Error(`podman ${args.join(' ')} exited ${code}: ${stderr.trim()}`)),
      );
    });
  }

  /** `podman run --rm` of `echo ready`: milliseconds from the start of podman to "ready" on its stdout; resolves once podman has exited. */
  startToFirstOutput() {
    return new Promise((resolve, reject) => {
      const started = performance.now();
      const child = spawn('podman', [...this.global, 'run', '--rm', '--network', 'none', '--rootfs', this.rootfs, 'echo', 'ready'], {
        env: this.env,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let firstOutput;
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c) => {
        stdout += c;
        if (firstOutput === undefined && stdout.includes('ready\n')) firstOutput = performance.now() - started;
      });
      child.stderr.on('data', (c) => (stderr += c));
      child.once('error', reject);
      child.once('exit', (code) =>
        code === 0 && firstOutput !== undefined ? resolve(firstOutput) : reject(new Error(`podman run exited ${code}: ${stderr.trim()}`)),
      );
    });
  }

  startIdle(name) {
    return this.run(['run', '--detach', '--name', name, '--network', 'none', '--rootfs', this.rootfs, 'sleep', 'infinity']);
  }
}

const comm = (pid) => {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return undefined;
  }
};

/** What stays of the idle containers: each conmon and the container's process under it (podman itself has exited; its passing helpers are left out). */
function idleContainerProcesses(dir) {
  return processesUnder(dir).filter((pid) => comm(pid) === 'conmon' || comm(parentPid(pid)) === 'conmon');
}

/** Waits until exactly `count` idle containers' processes are left (an exec session's conmon may linger a moment), then a second more. */
async function settledContainerProcesses(dir, count) {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const pids = idleContainerProcesses(dir);
    if (pids.length === 2 * count) {
      await sleep(1000);
      const again = idleContainerProcesses(dir);
      if (again.length === 2 * count) return again;
    }
    if (Date.now() > deadline)
      throw new Error(`expected ${count} idle containers (a conmon and a process each), found ${pids.length} processes`);
    await sleep(100);
  }
}

export default {
  name: 'peer',
  position: 80,
  results: [
    { id: 'peer-start', title: 'podman: `podman run --rm` of `echo ready`, start to first output', unit: 'ms' },
    { id: 'peer-exec', title: 'podman: `podman exec` of `true` into a running container', unit: 'ms' },
    { id: 'peer-memory', title: 'podman: extra host memory per idle container (Pss of conmon and the container)', unit: 'MiB' },
    // Kernel memory (namespaces, mounts, page tables) is in no process's Pss; MemAvailable sees it, and everything else the host does meanwhile.
    { id: 'peer-memavailable', title: "podman: drop of the host's MemAvailable per idle container", unit: 'MiB' },
  ],
  unavailable: async () => missingTools(),
  async run(ctx) {
    const podman = new Podman(ctx);
    podman.unpack(ctx.manifest.templates.base.rootfs);
    ctx.log('podman: starts');
    const starts = await repeat(ctx, () => podman.startToFirstOutput());
    ctx.log('podman: execs');
    await podman.startIdle('bench-idle-0');
    const execs = await repeat({ runs: ctx.runs, warmups: Math.max(3, ctx.warmups) }, () =>
      timed(() => podman.run(['exec', 'bench-idle-0', 'true'])),
    );
    const n = ctx.densityCount;
    ctx.log(`podman: ${n} idle containers`);
    const before = pssMiB(await settledContainerProcesses(podman.dir, 1));
    const availableBefore = availableMiB();
    for (let i = 1; i <= n; i++) await podman.startIdle(`bench-idle-${i}`);
    const after = pssMiB(await settledContainerProcesses(podman.dir, n + 1));
    const availableDrop = (availableBefore - availableMiB()) / n;
    await podman.run(['rm', '--force', '--all', '--time', '0']);
    return {
      'peer-start': starts,
      'peer-exec': execs,
      'peer-memory': {
        samples: [(after - before) / n],
        title: `podman: extra host memory per idle container, ${n} at once (Pss of conmon and the container)`,
      },
      'peer-memavailable': { samples: [availableDrop], title: `podman: drop of the host's MemAvailable per idle container, ${n} at once` },
    };
  },
};
