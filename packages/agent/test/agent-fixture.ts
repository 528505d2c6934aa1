// Test fixture: builds capsule-agent exactly as it ships (the package's
// bundle script) when the build is stale, starts it on
// a unix socket and hands out Connect clients for it. Stops the agent (and so
// every process it started) afterwards; prints the agent's log when asked.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { createConnectTransport } from '@connectrpc/connect-node';
import type { Transport } from '@connectrpc/connect';
import { afterAll, afterEach, beforeAll } from 'vitest';

export const agentPackageDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const repoRoot = resolve(agentPackageDir, '..', '..');
export const agentBundlePath = join(agentPackageDir, 'dist', 'capsule-agent.cjs');

const buildLockDir = join(agentPackageDir, 'node_modules', '.cache', 'capsule-agent-test-build.lock');

/** Test files run in parallel workers; builds must not overlap. */
async function withBuildLock<T>(fn: () => T): Promise<T> {
  mkdirSync(dirname(buildLockDir), { recursive: true });
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      mkdirSync(buildLockDir);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      // A lock older than two minutes belongs to a dead run.
      if (Date.now() - statSync(buildLockDir, { throwIfNoEntry: false })!.mtimeMs > 120_000) {
        rmSync(buildLockDir, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) throw new Error('timed out waiting for another test worker to build the agent');
      await sleep(100);
    }
  }
  try {
    return fn();
  } finally {
    rmSync(buildLockDir, { recursive: true, force: true });
  }
}

function newestSourceMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSourceMtime(path));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts')) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

const mtime = (path: string) => statSync(path, { throwIfNoEntry: false })?.mtimeMs ?? 0;

/**
 * True when the bundle and @capsule/protocol's dist are newer than their
 * sources. scripts/setup builds both before the suite runs, and daemon tests
 * may be copying the bundle into a guest meanwhile: rewrite it only when stale.
 */
function agentBuildIsFresh(): boolean {
  const protocolDir = join(repoRoot, 'packages', 'protocol');
  const protocolSources = newestSourceMtime(join(protocolDir, 'src'));
  const agentSources = Math.max(
    newestSourceMtime(join(agentPackageDir, 'src')),
    protocolSources,
    mtime(join(agentPackageDir, 'package.json')),
  );
  // tsc -b re-emits only the files that changed, but always rewrites its build info.
  const protocolBuiltAt = mtime(join(protocolDir, 'dist', 'agent.js')) > 0 ? mtime(join(protocolDir, 'tsconfig.tsbuildinfo')) : 0;
  return protocolBuiltAt >= protocolSources && mtime(agentBundlePath) >= agentSources;
}

let built: Promise<void> | undefined;

/** Runs the package's bundle script (which builds @capsule/protocol's dist too) when stale; once per worker. */
export function buildAgent(): Promise<void> {
  built ??= withBuildLock(() => {
    if (agentBuildIsFresh()) return;
    execFileSync('npm', ['run', '--silent', '-w', '@capsule/agent', 'bundle'], { cwd: repoRoot, stdio: 'pipe' });
  });
  return built;
}

export interface RunningAgent {
  socketPath: string;
  pid: number;
  /** The agent's own temp folder (removed by stop()). */
  dir: string;
  /** Where POST /init writes the hostname: a file here, never the host's. */
  hostnameFile: string;
  /**
   * A transport on a fresh HTTP/2 connection; `sockets` records its sockets.
   * `json` speaks Connect's JSON encoding, as the e2b SDK does.
   */
  connectTransport(sockets?: net.Socket[], options?: { json?: boolean }): Transport;
  /** A raw HTTP/2 session for the plain-HTTP routes (/init, /files); close it when done. */
  http2Session(): http2.ClientHttp2Session;
  /** The agent's resident set size now, from /proc. */
  rssBytes(): number;
  log(): string;
  isRunning(): boolean;
  stop(): Promise<void>;
}

export interface StartAgentOptions {
  /** Extra environment (e.g. CAPSULE_GUEST_HELPER pointing at a stand-in). */
  env?: Record<string, string>;
}

export async function startAgent(extraArgs: string[] = [], options: StartAgentOptions = {}): Promise<RunningAgent> {
  await buildAgent();
  const dir = mkdtempSync(join(tmpdir(), 'capsule-agent-test-'));
  const socketPath = join(dir, 'agent.sock');
  const hostnameFile = join(dir, 'hostname');
  writeFileSync(hostnameFile, 'before-init\n');
  let output = '';
  const child: ChildProcess = spawn(process.execPath, [agentBundlePath, '--listen', `unix:${socketPath}`, ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      // Tests run as root on the host: /init must never set the host's clock,
      // CRNG or hostname. A helper that does not exist fails loudly instead.
      CAPSULE_GUEST_HELPER: join(dir, 'no-guest-helper-in-tests'),
      CAPSULE_HOSTNAME_FILE: hostnameFile,
      ...options.env,
    },
  });
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  let exited = false;
  child.on('exit', () => (exited = true));

  const deadline = Date.now() + 10_000;
  for (;;) {
    if (exited) throw new Error(`capsule-agent exited during startup:\n${output}`);
    const ready = await new Promise<boolean>((done) => {
      const probe = net.connect(socketPath);
      probe.once('connect', () => {
        probe.destroy();
        done(true);
      });
      probe.once('error', () => done(false));
    });
    if (ready) break;
    if (Date.now() > deadline) throw new Error(`capsule-agent did not listen on ${socketPath}:\n${output}`);
    await sleep(25);
  }

  return {
    socketPath,
    pid: child.pid!,
    dir,
    hostnameFile,
    connectTransport(sockets, options) {
      return createConnectTransport({
        httpVersion: '2',
        baseUrl: 'http://agent',
        useBinaryFormat: !options?.json,
        nodeOptions: {
          createConnection: () => {
            const socket = net.connect(socketPath);
            sockets?.push(socket);
            return socket;
          },
        },
      });
    },
    http2Session: () => http2.connect('http://agent', { createConnection: () => net.connect(socketPath) }),
    rssBytes() {
      const kib = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1]);
      return kib * 1024;
    },
    log: () => output,
    isRunning: () => !exited,
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        const killAt = Date.now() + 5000;
        while (!exited && Date.now() < killAt) await sleep(20);
        if (!exited) child.kill('SIGKILL');
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * One agent for a whole test file: started before its tests (then handed to
 * `onStarted`, which sets up the file's clients), its log printed after each
 * failed test, stopped after all of them. A file's own afterAll, registered
 * later, runs before the stop.
 */
export function useAgentForFile(onStarted: (agent: RunningAgent) => void, extraArgs: string[] = [], options: StartAgentOptions = {}): void {
  let agent: RunningAgent | undefined;
  beforeAll(async () => {
    agent = await startAgent(extraArgs, options);
    onStarted(agent);
  }, 120_000);
  afterEach((context) => {
    if (context.task.result?.state === 'fail' && agent) console.error(`--- capsule-agent log ---\n${agent.log()}`);
  });
  afterAll(async () => {
    await agent?.stop();
  });
}
