// Integration-test fixtures: a private capsuled (the real built daemon, real
// QEMU, real guest) with its own state and runtime folders and the host's
// shared guest-kit cache, a client typed by @capsule/protocol, and per-test
// sandboxes. Teardown kills the daemon and every QEMU it left; the daemon's
// log and a sandbox's console are printed only when a test failed.
import type {
  CreatedApiKey,
  CreateSandboxRequest,
  DaemonInfo,
  ExecRequest,
  ExecResult,
  Image,
  ImageList,
  Sandbox,
  SandboxList,
  SetNetworkRequest,
  Template,
  TemplateDetails,
  TemplateList,
} from '@capsule/protocol';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { test } from 'vitest';
import { silentLogger } from '../src/log.js';
import { parseLinkNames, restoreForwarding, stateTag } from '../src/network/tap-network.js';

export const daemonMain = fileURLToPath(new URL('../dist/main.js', import.meta.url));
export const cliMain = fileURLToPath(new URL('../../cli/dist/main.js', import.meta.url));
export const sharedCacheDir = process.env.CAPSULE_CACHE_DIR ?? '/var/cache/capsule';

// biome-ignore lint/suspicious/noExplicitAny: the raw client, for bodies no schema describes (bad input, errors); typed calls go through daemon.api
export interface ApiResponse<T = any> {
  status: number;
  body: T;
  text: string;
  headers: http.IncomingHttpHeaders;
}

/** Daemons started in this test file and not yet destroyed: the ones whose log a failed test prints. */
const liveDaemons = new Set<TestDaemon>();

/** The end of a log that a failed test prints. */
function tail(log: string, lines = 200): string {
  return `(last ${lines} lines)\n${log
    .split('\n')
    .slice(-lines - 1)
    .join('\n')}`;
}

export class TestDaemon {
  /** The REST API with the protocol's types, for requests expected to succeed; `request` for the rest. */
  readonly api = new DaemonApi(this);
  readonly root: string;
  readonly stateDir: string;
  readonly runtimeDir: string;
  readonly socketPath: string;
  readonly logFile: string;
  private proc: ChildProcess | undefined;

  /** `launchPrefix` runs the daemon through another command, e.g. `nsenter --net=… --` to put it in a network namespace. */
  constructor(
    readonly extraEnv: Record<string, string> = {},
    readonly launchPrefix: string[] = [],
  ) {
    this.root = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-test-'));
    this.stateDir = path.join(this.root, 'state');
    this.runtimeDir = path.join(this.root, 'run');
    this.socketPath = path.join(this.runtimeDir, 'capsuled.sock');
    this.logFile = path.join(this.root, 'capsuled.log');
  }

  get env(): Record<string, string> {
    return {
      ...(process.env as Record<string, string>),
      CAPSULE_STATE_DIR: this.stateDir,
      CAPSULE_RUNTIME_DIR: this.runtimeDir,
      CAPSULE_CACHE_DIR: sharedCacheDir,
      CAPSULE_SOCKET: this.socketPath,
      CAPSULE_LOG_LEVEL: 'debug',
      // The host's /etc/capsule/capsuled.env is not the test's: none unless a test names one.
      CAPSULE_CONFIG_FILE: '',
      // A pool that grew under one test's creates would spend the suite's CPU refilling VMs no test
      // claims: pools keep their fixed size unless a test asks otherwise (warm-pool.integration.test.ts).
      CAPSULE_WARM_POOL_MAX: '0',
      ...this.extraEnv,
    };
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  /** How the daemon process ended: its exit code, or the signal that killed it (stop's SIGKILL after 10 s). */
  get ended(): { code: number | null; signal: NodeJS.Signals | null } | undefined {
    return this.proc && (this.proc.exitCode !== null || this.proc.signalCode !== null)
      ? { code: this.proc.exitCode, signal: this.proc.signalCode }
      : undefined;
  }

  /** Spawns the daemon and resolves once /health answers; `timeoutMs` for a host so loaded that even Node starts slowly. */
  async start(timeoutMs = 30_000): Promise<void> {
    const out = fs.openSync(this.logFile, 'a');
    const [command = process.execPath, ...prefixArgs] = this.launchPrefix;
    const args = this.launchPrefix.length > 0 ? [...prefixArgs, process.execPath, daemonMain] : [daemonMain];
    this.proc = spawn(command, args, { env: this.env, stdio: ['ignore', out, out] });
    fs.closeSync(out);
    liveDaemons.add(this);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const res = await this.request('GET', '/health');
        if (res.status === 200) return;
      } catch {
        // Not listening yet.
      }
      if (this.proc.exitCode !== null || Date.now() > deadline) {
        throw new Error(`capsuled did not start:\n${this.log()}`);
      }
      await sleep(50);
    }
  }

  /** SIGKILL, as a crash or an OOM kill would. */
  async kill9(): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGKILL');
    await exited;
  }

  async stop(): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    await Promise.race([exited, sleep(10_000).then(() => proc.kill('SIGKILL'))]);
  }

  log(): string {
    try {
      return fs.readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  // biome-ignore lint/suspicious/noExplicitAny: as ApiResponse's
  request<T = any>(method: string, urlPath: string, body?: unknown): Promise<ApiResponse<T>> {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const req = http.request(
        {
          socketPath: this.socketPath,
          method,
          path: urlPath,
          headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown = text;
            if ((res.headers['content-type'] ?? '').includes('application/json') && text !== '') parsed = JSON.parse(text);
            resolve({ status: res.statusCode ?? 0, body: parsed as T, text, headers: res.headers });
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  }

  /** QEMU processes whose command line points into this daemon's folders; with `id`, only that sandbox's. */
  qemuPids(id?: string): number[] {
    const pids: number[] = [];
    for (const entry of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const argv = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
        if (!argv[0]?.includes('qemu-system') || !argv.some((a) => a.includes(this.root))) continue;
        if (id === undefined || argv[argv.indexOf('-name') + 1] === id) pids.push(Number(entry));
      } catch {
        // Exited while we looked.
      }
    }
    return pids;
  }

  /**
   * Waits until the base template's warm snapshot is ready (failing at once if
   * it failed to build) and at least `pooledVms` QEMUs run: the warm pool's.
   */
  async waitForWarmSnapshot(timeoutMs: number, pooledVms = 0): Promise<void> {
    await eventually(
      async () => {
        const base = (await this.api.templates()).find((t) => t.name === 'base');
        if (!base) throw new Error('the daemon has no base template');
        if (base.warmSnapshot === 'failed') throw new Error('the warm snapshot failed to build');
        return base.warmSnapshot === 'ready' && this.qemuPids().length >= pooledVms ? true : undefined;
      },
      timeoutMs,
      pooledVms > 0 ? 'the warm snapshot and its pool' : 'the warm snapshot',
    );
  }

  /** Everything left in the runtime folder's sandboxes/ (sockets, pid files), warm-pool VMs included. */
  runtimeLeftovers(): string[] {
    const dir = path.join(this.runtimeDir, 'sandboxes');
    return fs.existsSync(dir) ? fs.readdirSync(dir) : [];
  }

  /** Whether anything of sandbox `id` is still running or on disk besides its console log. */
  leftoversOf(id: string): string[] {
    const left: string[] = [];
    if (this.qemuPids(id).length > 0) left.push('qemu process');
    if (this.runtimeLeftovers().includes(id)) left.push('runtime folder');
    if (fs.existsSync(path.join(this.stateDir, 'sandboxes', id, 'overlay.qcow2'))) left.push('overlay');
    return left;
  }

  async destroy(): Promise<void> {
    liveDaemons.delete(this);
    await this.stop();
    for (const pid of this.qemuPids()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
    await this.removeNetworkLeftovers();
    fs.rmSync(this.root, { recursive: true, force: true });
  }

  /**
   * A stopped daemon keeps its network namespaces, host links and nft table
   * while its VMs run (the next daemon adopts them); killing those VMs behind
   * its back, as destroy does, leaves them to the fixture. The namespaces are
   * named machine-wide wherever the daemon ran; its links, table and
   * forwarding setting are in the namespace it ran in, so a daemon started in
   * a test's namespace leaves those to the test, which deletes that namespace.
   */
  private async removeNetworkLeftovers(): Promise<void> {
    if (process.getuid?.() !== 0) return;
    const tag = stateTag(this.stateDir);
    const netnsDir = '/run/netns';
    for (const name of fs.existsSync(netnsDir) ? fs.readdirSync(netnsDir) : []) {
      if (name.startsWith(`capsule-${tag}-`)) spawnSync('ip', ['netns', 'delete', name]);
    }
    if (this.launchPrefix.length > 0) return;
    for (const link of parseLinkNames(spawnSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).stdout)) {
      if (link.startsWith(`cs${tag}`)) spawnSync('ip', ['link', 'delete', link]);
    }
    spawnSync('nft', ['delete', 'table', 'ip', `capsule_${tag}`], { stdio: 'ignore' });
    await restoreForwarding(silentLogger);
  }
}

/**
 * The daemon's routes as the protocol types them. Each call expects its
 * route's success status and returns the typed body; any other answer throws
 * with the status and text, so a test reads as the happy path it checks.
 */
export class DaemonApi {
  constructor(private readonly daemon: TestDaemon) {}

  private async expect<T>(status: number, method: string, urlPath: string, body?: unknown): Promise<T> {
    const res = await this.daemon.request<T>(method, urlPath, body);
    if (res.status !== status) throw new Error(`${method} ${urlPath} answered ${res.status}, not ${status}: ${res.text}`);
    return res.body;
  }

  info(): Promise<DaemonInfo> {
    return this.expect(200, 'GET', '/v1/info');
  }

  async templates(): Promise<Template[]> {
    return (await this.expect<TemplateList>(200, 'GET', '/v1/templates')).templates;
  }

  template(name: string): Promise<TemplateDetails> {
    return this.expect(200, 'GET', `/v1/templates/${name}`);
  }

  async removeTemplate(name: string): Promise<void> {
    await this.expect(204, 'DELETE', `/v1/templates/${name}`);
  }

  async images(): Promise<Image[]> {
    return (await this.expect<ImageList>(200, 'GET', '/v1/images')).images;
  }

  /** An image by digest, or by reference (URL-encoded here). */
  image(refOrDigest: string): Promise<Image> {
    return this.expect(200, 'GET', `/v1/images/${encodeURIComponent(refOrDigest)}`);
  }

  async removeImage(refOrDigest: string): Promise<void> {
    await this.expect(204, 'DELETE', `/v1/images/${encodeURIComponent(refOrDigest)}`);
  }

  /** A key for the TCP listener (through the unix socket, the only way keys are made). */
  createApiKey(name: string): Promise<CreatedApiKey> {
    return this.expect(201, 'POST', '/v1/api-keys', { name });
  }

  createSandbox(body: CreateSandboxRequest = {}): Promise<Sandbox> {
    return this.expect(201, 'POST', '/v1/sandboxes', body);
  }

  /** Running and paused sandboxes; with `all`, killed ones too. */
  async sandboxes(all = false): Promise<Sandbox[]> {
    return (await this.expect<SandboxList>(200, 'GET', all ? '/v1/sandboxes?all=true' : '/v1/sandboxes')).sandboxes;
  }

  sandbox(idOrName: string): Promise<Sandbox> {
    return this.expect(200, 'GET', `/v1/sandboxes/${idOrName}`);
  }

  async removeSandbox(idOrName: string): Promise<void> {
    await this.expect(204, 'DELETE', `/v1/sandboxes/${idOrName}`);
  }

  exec(idOrName: string, cmd: string[], options: Omit<ExecRequest, 'cmd'> = {}): Promise<ExecResult> {
    return this.expect(200, 'POST', `/v1/sandboxes/${idOrName}/exec`, { cmd, ...options });
  }

  pause(idOrName: string): Promise<Sandbox> {
    return this.expect(200, 'POST', `/v1/sandboxes/${idOrName}/pause`);
  }

  resume(idOrName: string): Promise<Sandbox> {
    return this.expect(200, 'POST', `/v1/sandboxes/${idOrName}/resume`);
  }

  setTimeout(idOrName: string, timeoutMs: number): Promise<Sandbox> {
    return this.expect(200, 'POST', `/v1/sandboxes/${idOrName}/timeout`, { timeoutMs });
  }

  keepAlive(idOrName: string): Promise<Sandbox> {
    return this.expect(200, 'POST', `/v1/sandboxes/${idOrName}/keepalive`);
  }

  setNetwork(idOrName: string, body: SetNetworkRequest): Promise<Sandbox> {
    return this.expect(200, 'POST', `/v1/sandboxes/${idOrName}/network`, body);
  }

  async fork(idOrName: string, count = 1): Promise<Sandbox[]> {
    return (await this.expect<SandboxList>(201, 'POST', `/v1/sandboxes/${idOrName}/fork`, { count })).sandboxes;
  }

  snapshot(idOrName: string, template: string): Promise<Template> {
    return this.expect(201, 'POST', `/v1/sandboxes/${idOrName}/snapshot`, { template });
  }

  /** The sandbox's serial console. */
  consoleLog(idOrName: string): Promise<string> {
    return this.expect(200, 'GET', `/v1/sandboxes/${idOrName}/logs`);
  }
}

/**
 * `it` for integration tests: when a test fails, the log tail of every daemon
 * this file started (and has not destroyed) is printed. Import it instead of
 * vitest's.
 */
// biome-ignore lint/suspicious/noConfusingVoidType: an automatic fixture gives its tests no value
export const it = test.extend<{ daemonLogsOnFailure: void }>({
  daemonLogsOnFailure: [
    async ({ onTestFailed }, use) => {
      onTestFailed(() => {
        for (const daemon of liveDaemons) console.error(`capsuled log of ${daemon.root} ${tail(daemon.log())}`);
      });
      await use();
    },
    { auto: true },
  ],
});

interface SandboxFixtures {
  /** Creates a sandbox that is killed after the test, like `sandbox`: for a test that needs more than one, or other options. */
  newSandbox: (options?: CreateSandboxRequest) => Promise<Sandbox>;
  /** A sandbox of the base template of this test's own, killed after it, pass or fail. */
  sandbox: Sandbox;
}

/**
 * `it` with per-test sandboxes on `daemon`: those a test asked for are killed
 * after it, pass or fail, and when it failed their console logs are printed
 * (with the daemon's log, as `it` does).
 */
export function sandboxTest(daemon: TestDaemon) {
  return it.extend<SandboxFixtures>({
    newSandbox: async ({ task }, use) => {
      const made: string[] = [];
      await use(async (options = {}) => {
        const sandbox = await daemon.api.createSandbox(options);
        made.push(sandbox.id);
        return sandbox;
      });
      // A test that left its daemon stopped leaves these VMs to the daemon's destroy.
      if (daemon.ended) return;
      const failed = task.result?.state === 'fail';
      for (const id of made) {
        if (failed) console.error(`console of sandbox ${id} ${tail(await daemon.api.consoleLog(id))}`);
        // 204 also when the test killed it already.
        const res = await daemon.request('DELETE', `/v1/sandboxes/${id}`);
        if (res.status !== 204) throw new Error(`killing sandbox ${id} after the test answered ${res.status}: ${res.text}`);
      }
    },
    sandbox: async ({ newSandbox }, use) => {
      await use(await newSandbox());
    },
  });
}

/**
 * Runs the built `capsule` CLI against `daemon` and collects its output. Not
 * spawnSync: a long CLI call (a build waiting for a warm snapshot) would block
 * the test worker's event loop until vitest's own RPC to it times out.
 */
export async function runCli(
  daemon: TestDaemon,
  args: string[],
  timeoutMs = 300_000,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [cliMain, ...args], {
    env: { ...daemon.env, CAPSULED_BIN: daemonMain },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out = { stdout: '', stderr: '' };
  child.stdout!.setEncoding('utf8').on('data', (c: string) => (out.stdout += c));
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (out.stderr += c));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const status = await new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  clearTimeout(timer);
  return { status, ...out };
}

/** Polls `check` until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function eventually<T>(
  check: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 15_000,
  what = 'condition',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** What `GET /v1/events` sends in its first two seconds (its catch-up), as text. */
export async function readEventStream(daemon: TestDaemon, urlPath: string): Promise<string> {
  return await new Promise((resolve, reject) => {
    let text = '';
    const req = http.request({ socketPath: daemon.socketPath, path: urlPath }, (res) => {
      res.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
      setTimeout(() => {
        req.destroy();
        resolve(text);
      }, 2000);
    });
    req.on('error', reject).end();
  });
}
