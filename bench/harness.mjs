// What every benchmark case shares: a private folder for everything a run
// starts (daemons, VMs, containers, unpacked root filesystems), private
// daemons with an API client, and a cleanup that kills everything started
// under that folder, also on Ctrl-C or SIGTERM. A run never touches the
// user's own daemon (/run/capsule) or sandboxes.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Daemon settings of each kind of start the cases compare. */
export const daemonProfiles = {
  /** Warm snapshots off: every create boots the guest. */
  cold: { CAPSULE_WARM_SNAPSHOTS: 'off' },
  /** Warm snapshots on, no warm pool: a create restores the snapshot on demand. */
  restore: { CAPSULE_WARM_POOL_SIZE: '0' },
  /** The default: one restored, warmed-up VM waits for the next create, more once creates find none. */
  pool: { CAPSULE_WARM_POOL_SIZE: '1' },
  /** `pool` with room for only six 512 MiB guests: creates past that are refused (the creates case). */
  budget: { CAPSULE_WARM_POOL_SIZE: '1', CAPSULE_MEMORY_BUDGET_MIB: '3072' },
  /** `restore` without the metrics history (CAPSULE_METRICS_INTERVAL_MS=0): the baseline of what sampling costs. */
  'restore-unsampled': { CAPSULE_WARM_POOL_SIZE: '0', CAPSULE_METRICS_INTERVAL_MS: '0' },
  /** `pool` serving e2b's API on loopback TCP (plain HTTP, API keys): the e2b SDK's own front door (the e2b-build case). */
  e2b: { CAPSULE_WARM_POOL_SIZE: '1', CAPSULE_LISTEN: 'http://127.0.0.1:0' },
  /** `restore` with every QEMU unconfined (CAPSULE_JAIL=off): the baseline of what the jail costs. */
  'restore-unjailed': { CAPSULE_WARM_POOL_SIZE: '0', CAPSULE_JAIL: 'off' },
};

/** Whether process `pid` belongs to the run under `root`: its command line names the folder, or it runs inside it (chroot or cwd). */
function startedUnder(pid, root) {
  try {
    if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(root)) return true;
    for (const link of ['root', 'cwd']) {
      const target = fs.readlinkSync(`/proc/${pid}/${link}`);
      if (target === root || target.startsWith(`${root}/`)) return true;
    }
  } catch {
    // Gone meanwhile, or a kernel thread.
  }
  return false;
}

export function parentPid(pid) {
  try {
    // The command name in /proc/PID/stat is in parentheses and may contain spaces; the ppid is the second field after it.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

/**
 * The processes of the run under `root` and all their descendants: a
 * container's process sees only its own root and names no host path, but it
 * is a child of a conmon that does.
 */
export function processesUnder(root) {
  const pids = fs
    .readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .map(Number)
    .filter((pid) => pid !== process.pid);
  const found = new Set(pids.filter((pid) => startedUnder(pid, root)));
  const parents = new Map(pids.map((pid) => [pid, parentPid(pid)]));
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, ppid] of parents) {
      if (!found.has(pid) && found.has(ppid)) {
        found.add(pid);
        grew = true;
      }
    }
  }
  return [...found];
}

/** Sends SIGKILL to every process of `root` until none is left or `timeoutMs` passed; returns the pids still there. */
function killAllUnder(root, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = processesUnder(root);
    if (pids.length === 0 || Date.now() > deadline) return pids;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50); // a synchronous pause: cleanup also runs in signal handlers
  }
}

export class ApiError extends Error {}

/** One private capsuled and a client for its API. */
export class Daemon {
  constructor(run, name, dir, child) {
    this.run = run;
    this.name = name;
    this.dir = dir;
    this.child = child;
    this.socketPath = path.join(dir, 'capsuled.sock');
    this.stateDir = path.join(dir, 'state');
  }

  request(method, urlPath, body) {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = http.request(
        { socketPath: this.socketPath, method, path: urlPath, headers: payload ? { 'content-type': 'application/json' } : {} },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c) => (text += c));
          res.on('end', () => {
            let parsed;
            try {
              parsed = text ? JSON.parse(text) : undefined;
            } catch {
              parsed = text;
            }
            resolve({ status: res.statusCode, body: parsed });
          });
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  }

  /** A request that must answer `status`; anything else throws with the daemon's error. */
  async call(method, urlPath, body, status = 200) {
    const res = await this.request(method, urlPath, body);
    if (res.status !== status) throw new ApiError(`${method} ${urlPath} answered ${res.status}: ${JSON.stringify(res.body)}`);
    return res.body;
  }

  create(body = {}) {
    return this.call('POST', '/v1/sandboxes', { timeoutMs: 30 * 60_000, ...body }, 201);
  }

  /** Runs `cmd` in sandbox `id`; throws unless it exited 0. */
  async exec(id, cmd) {
    const result = await this.call('POST', `/v1/sandboxes/${id}/exec`, { cmd });
    if (result.exitCode !== 0) throw new Error(`${cmd.join(' ')} exited ${result.exitCode}: ${result.stderr}`);
    return result;
  }

  remove(id) {
    return this.call('DELETE', `/v1/sandboxes/${id}`, undefined, 204);
  }

  /**
   * Stops every VM the daemon runs, then the daemon. In that order: a daemon
   * detaches from running sandboxes when it stops and keeps their network
   * namespace, link and nft table for the next daemon; with its VMs gone first
   * it removes them itself.
   */
  async stop() {
    const left = killAllUnder(this.dir, 10_000).filter((pid) => pid !== this.child.pid);
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      await new Promise((resolve) => this.child.once('exit', resolve));
    }
    this.run.children.delete(this.child);
    left.push(...killAllUnder(this.dir, 10_000));
    if (left.length > 0) throw new Error(`processes of daemon ${this.name} would not die: ${left.join(', ')}`);
  }
}

export class BenchRun {
  constructor() {
    this.root = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-bench-'));
    this.children = new Set();
    /** Synchronous steps that undo what cannot be found by folder alone (e.g. `podman rm`); run first by cleanup. */
    this.cleanupSteps = [];
    this.cleanedUp = false;
    this.onSignal = (signal) => {
      process.stderr.write(`\nbench: ${signal}, cleaning up\n`);
      const left = this.cleanup();
      if (left.length > 0) process.stderr.write(`bench: processes left: ${left.join(', ')}\n`);
      process.exit(signal === 'SIGINT' ? 130 : 143);
    };
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, this.onSignal);
  }

  /** Kills every process started under this run's folder, then removes it. Idempotent; returns the pids that survived (none, normally). */
  cleanup() {
    if (this.cleanedUp) return [];
    this.cleanedUp = true;
    for (const step of this.cleanupSteps.reverse()) {
      try {
        step();
      } catch (err) {
        process.stderr.write(`bench: a cleanup step failed: ${err.message}\n`);
      }
    }
    for (const child of this.children) child.kill('SIGKILL');
    const left = killAllUnder(this.root, 10_000);
    if (left.length === 0) fs.rmSync(this.root, { recursive: true, force: true });
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.off(signal, this.onSignal);
    return left;
  }

  /**
   * Pins the guest kit for this run: hard links to the kernel, initramfs, kit
   * and root filesystems named by the shared cache's manifest, in a private
   * cache folder with its own manifest. Another checkout's `capsuled prepare`
   * may replace those files in the shared cache mid-run; the links keep the
   * very same files (same inodes, same page cache) for this run. The daemons'
   * warm snapshot is built once per run in the private folder.
   */
  pinGuestKit(sharedCacheDir) {
    const manifest = JSON.parse(fs.readFileSync(path.join(sharedCacheDir, 'guest-manifest.json'), 'utf8'));
    this.cacheDir = path.join(this.root, 'cache');
    const pin = (file) => {
      const dest = path.join(this.cacheDir, path.relative(sharedCacheDir, file));
      fs.mkdirSync(path.dirname(dest), { recursive: true });
      try {
        fs.linkSync(file, dest);
      } catch (err) {
        if (err.code !== 'EXDEV') throw err;
        fs.copyFileSync(file, dest); // another file system: a copy, read the same way
      }
      return dest;
    };
    const pinned = {
      ...manifest,
      kernel: pin(manifest.kernel),
      initramfs: pin(manifest.initramfs),
      kit: pin(manifest.kit),
      templates: Object.fromEntries(Object.entries(manifest.templates).map(([name, t]) => [name, { ...t, rootfs: pin(t.rootfs) }])),
    };
    fs.writeFileSync(path.join(this.cacheDir, 'guest-manifest.json'), JSON.stringify(pinned, null, 2));
    const probe = path.join(sharedCacheDir, 'accel-probe.json');
    if (fs.existsSync(probe)) fs.copyFileSync(probe, path.join(this.cacheDir, 'accel-probe.json'));
    return pinned;
  }

  /**
   * Starts a private capsuled with `env` and waits until its templates' warm
   * snapshots are settled. `launchPrefix` runs it through another command,
   * e.g. `nsenter --net=… --` to put it in a network namespace.
   */
  async startDaemon(name, env, launchPrefix = []) {
    const dir = path.join(this.root, name);
    fs.mkdirSync(dir, { recursive: true });
    const logFile = path.join(dir, 'capsuled.log');
    const log = fs.openSync(logFile, 'a');
    const [command, ...args] = [...launchPrefix, process.execPath, path.join(repo, 'packages/daemon/dist/main.js')];
    const child = spawn(command, args, {
      env: {
        ...process.env,
        CAPSULE_STATE_DIR: path.join(dir, 'state'),
        CAPSULE_RUNTIME_DIR: path.join(dir, 'run'),
        CAPSULE_SOCKET: path.join(dir, 'capsuled.sock'),
        CAPSULE_LOG_LEVEL: 'warn',
        ...(this.cacheDir ? { CAPSULE_CACHE_DIR: this.cacheDir } : {}),
        ...env,
      },
      stdio: ['ignore', log, log],
    });
    fs.closeSync(log);
    this.children.add(child);
    const daemon = new Daemon(this, name, dir, child);
    const deadline = Date.now() + 300_000; // the first daemon of a run builds the warm snapshot
    for (;;) {
      if (child.exitCode !== null)
        throw new Error(`capsuled (${name}) exited with ${child.exitCode}: ${fs.readFileSync(logFile, 'utf8').slice(-2000)}`);
      let warm;
      try {
        warm = (await daemon.request('GET', '/v1/templates')).body.templates.find((t) => t.name === 'base')?.warmSnapshot;
      } catch {
        // Not listening yet.
      }
      if (warm === 'failed')
        throw new Error(
          `the base template's warm snapshot failed (daemon ${name}); its log ends:\n${fs.readFileSync(logFile, 'utf8').slice(-2000)}`,
        );
      if (warm !== undefined && warm !== 'building') return daemon;
      if (Date.now() > deadline)
        throw new Error(`capsuled (${name}) did not get ready; its log ends:\n${fs.readFileSync(logFile, 'utf8').slice(-2000)}`);
      await sleep(50);
    }
  }
}

/** Runs `fn` `warmups + runs` times, one after another, and returns the `runs` values it resolved with after the warm-ups. */
export async function repeat({ runs, warmups }, fn) {
  const samples = [];
  for (let i = 0; i < warmups + runs; i++) {
    const value = await fn(i);
    if (i >= warmups) samples.push(value);
  }
  return samples;
}

/** Wall time of `fn` in milliseconds. */
export async function timed(fn) {
  const started = performance.now();
  await fn();
  return performance.now() - started;
}

/** A create request to the first exec result (`echo ready`), as a user sees a start; the sandbox is removed outside the timing. */
export async function createToFirstOutput(daemon) {
  let id;
  const elapsed = await timed(async () => {
    id = (await daemon.create()).id;
    const result = await daemon.exec(id, ['echo', 'ready']);
    if (result.stdout !== 'ready\n') throw new Error(`echo ready printed ${JSON.stringify(result.stdout)}`);
  });
  await daemon.remove(id);
  return elapsed;
}

/** Writes `bytes` of incompressible data to `file` and fsyncs it: what any pause must at least do with its state. */
export function writeAndSync(file, bytes) {
  const chunk = Buffer.alloc(1 << 20);
  for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((Math.random() * 2 ** 32) >>> 0, i);
  const fd = fs.openSync(file, 'w');
  try {
    for (let written = 0; written < bytes; written += chunk.length) fs.writeSync(fd, chunk, 0, Math.min(chunk.length, bytes - written));
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export function runSync(file, args, options = {}) {
  return execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...options });
}
