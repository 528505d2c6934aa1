// Starting and stopping capsuled from the CLI: finding its binary, launching it
// detached with its output in a log file, waiting until /health answers, and
// stopping it by the pid it reports. It never signals a process it did not ask about.
import { spawn } from 'node:child_process';
import { accessSync, constants as fsConstants, mkdirSync, openSync, closeSync, readSync, renameSync, statSync, fstatSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type CapsuleClient, CapsuleError, ConnectionError, type DaemonInfo } from '@capsule/sdk';
import { DAEMON_EXIT_ALREADY_RUNNING, defaultSocketPath } from '@capsule/protocol';

/** A first start probes the accelerator (it boots a tiny guest once); later starts answer within a second or two. */
export const DAEMON_START_TIMEOUT_MS = 90_000;
export const DAEMON_STOP_TIMEOUT_MS = 30_000;
const HEALTH_POLL_INTERVAL_MS = 100;
const LOG_TAIL_BYTES = 4096;
/** A log past this size at launch is moved to `capsuled.log.1` (replacing the previous one). */
export const LOG_ROTATE_BYTES = 16 * 1024 * 1024;

export function stateDir(): string {
  return process.env['CAPSULE_STATE_DIR'] || '/var/lib/capsule';
}

export function daemonLogPath(): string {
  return path.join(stateDir(), 'capsuled.log');
}

/**
 * Keeps the daemon log bounded across launches: a daemon started by the CLI
 * appends to one file for its whole life, so at each launch a file past
 * LOG_ROTATE_BYTES becomes `.1` and the new daemon starts a fresh one.
 */
export function rotateLogIfLarge(logPath: string, limitBytes = LOG_ROTATE_BYTES): boolean {
  try {
    if (statSync(logPath).size <= limitBytes) return false;
  } catch {
    return false; // No log yet.
  }
  renameSync(logPath, `${logPath}.1`);
  return true;
}

/** `$CAPSULED_BIN`, else `capsuled` on PATH; undefined when neither exists. */
export function findCapsuledBinary(): string | undefined {
  const configured = process.env['CAPSULED_BIN'];
  if (configured) return configured;
  for (const folder of (process.env['PATH'] ?? '').split(path.delimiter)) {
    if (!folder) continue;
    const candidate = path.join(folder, 'capsuled');
    try {
      accessSync(candidate, fsConstants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** True when the error means "nothing answers on the socket", as opposed to a daemon that answered badly. */
export function isDaemonDown(error: unknown): boolean {
  return error instanceof ConnectionError && error.code === 'daemon_unreachable' && !/\(EACCES|\(EPERM/.test(error.message);
}

/** The daemon's info, or undefined when no daemon answers. */
export async function daemonInfoIfRunning(client: CapsuleClient): Promise<DaemonInfo | undefined> {
  try {
    return await client.info({ requestTimeoutMs: 10_000 });
  } catch (error) {
    if (isDaemonDown(error)) return undefined;
    throw error;
  }
}

function readLogTail(logPath: string, fromOffset: number): string {
  try {
    const fd = openSync(logPath, 'r');
    try {
      const size = fstatSync(fd).size;
      const start = Math.max(fromOffset, size - LOG_TAIL_BYTES);
      const buffer = Buffer.alloc(Math.max(0, size - start));
      readSync(fd, buffer, 0, buffer.length, start);
      return buffer.toString('utf8').trimEnd().split('\n').slice(-15).join('\n');
    } finally {
      closeSync(fd);
    }
  } catch {
    return '';
  }
}

function launchFailure(message: string, logPath: string, logOffset: number): CapsuleError {
  const tail = readLogTail(logPath, logOffset);
  const indentedTail = tail
    ? `\n${tail
        .split('\n')
        .map((line) => `  ${line}`)
        .join('\n')}`
    : '';
  return new CapsuleError('daemon_start_failed', `Failed to launch capsuled: ${message}${indentedTail}`, {
    hint: `See the full log in ${logPath}`,
  });
}

/**
 * Launches capsuled detached (it outlives this process) with stdout and stderr
 * appended to the log file, and resolves when /health answers on the client's
 * socket. When systemd runs capsuled on that socket, it refuses instead: a
 * second daemon of the CLI's would hold the state folder the service needs.
 */
export async function startDaemon(
  client: CapsuleClient,
  { socketPath, onLaunch, onWaitForOther }: { socketPath?: string | undefined; onLaunch?: () => void; onWaitForOther?: () => void } = {},
): Promise<void> {
  const { serviceOwnsDaemon } = await import('./service-install.js');
  if (serviceOwnsDaemon(socketPath ?? defaultSocketPath(process.env))) {
    throw new CapsuleError(
      'daemon_not_running',
      'capsuled is not running, and it is a systemd service here, so capsule does not start one itself',
      {
        hint: 'Start it with `systemctl start capsuled`; `journalctl -u capsuled` shows why it stopped',
      },
    );
  }
  const binary = findCapsuledBinary();
  if (binary === undefined) {
    throw new CapsuleError('daemon_not_found', `capsuled is not running on ${client.transport.address} and its binary was not found`, {
      hint: 'Install Capsule so that `capsuled` is on PATH, or set CAPSULED_BIN to its path',
    });
  }
  try {
    accessSync(binary, fsConstants.R_OK);
  } catch (error) {
    throw new CapsuleError(
      'daemon_not_found',
      `capsuled is not running and CAPSULED_BIN=${binary} cannot be read (${(error as NodeJS.ErrnoException).code})`,
      {
        hint: 'Point CAPSULED_BIN at the capsuled executable, or unset it to use `capsuled` on PATH',
      },
    );
  }
  const logPath = daemonLogPath();
  let logFd: number;
  try {
    // The state folder holds the daemon's database and secret: the owner's only (the daemon tightens it too).
    mkdirSync(path.dirname(logPath), { recursive: true, mode: 0o700 });
    rotateLogIfLarge(logPath);
    logFd = openSync(logPath, 'a', 0o600);
  } catch (error) {
    throw new CapsuleError('daemon_start_failed', `Cannot open the daemon log ${logPath}: ${(error as Error).message}`, {
      hint: 'Run as root, or set CAPSULE_STATE_DIR to a folder you can write',
    });
  }
  const logOffset = fstatSync(logFd).size;
  // A daemon built from this repository is a .js file that is not executable; run it with this node.
  onLaunch?.();
  const [command, args] = /\.[cm]?js$/.test(binary) ? [process.execPath, [binary]] : [binary, []];
  const child = spawn(command, args, {
    detached: true,
    stdio: ['ignore', logFd, logFd],
    env: socketPath === undefined ? process.env : { ...process.env, CAPSULE_SOCKET: socketPath },
  });
  closeSync(logFd);
  let exited: string | undefined;
  let otherDaemonStarting = false;
  child.on('exit', (code, signal) => {
    // Another capsuled holds the state folder (started by another capsule, or by hand) and is still starting: wait for it.
    if (code === DAEMON_EXIT_ALREADY_RUNNING) {
      otherDaemonStarting = true;
      onWaitForOther?.();
      return;
    }
    exited = signal ? `it was killed by ${signal}` : `it exited with code ${code}`;
  });
  child.on('error', (error) => (exited = `could not run ${binary} (${(error as NodeJS.ErrnoException).code ?? error.message})`));
  child.unref();

  const deadline = Date.now() + DAEMON_START_TIMEOUT_MS;
  for (;;) {
    try {
      await client.health({ requestTimeoutMs: 2000 });
      return;
    } catch (error) {
      if (!isDaemonDown(error)) throw error;
    }
    // Another capsule may have started a daemon at the same moment; ours then exits, theirs answers.
    if (exited !== undefined) {
      await sleep(HEALTH_POLL_INTERVAL_MS);
      if (
        await client.health({ requestTimeoutMs: 2000 }).then(
          () => true,
          () => false,
        )
      )
        return;
      throw launchFailure(`${exited}, and nothing answers on ${client.transport.address}`, logPath, logOffset);
    }
    if (Date.now() > deadline) {
      const who = otherDaemonStarting ? 'the capsuled already running on this state folder' : `it (pid ${child.pid})`;
      throw launchFailure(
        `${who} did not answer on ${client.transport.address} within ${DAEMON_START_TIMEOUT_MS / 1000} s`,
        logPath,
        logOffset,
      );
    }
    await sleep(HEALTH_POLL_INTERVAL_MS);
  }
}

function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Sends SIGTERM to the daemon's pid and waits until that process is gone. */
export async function stopDaemon(info: DaemonInfo): Promise<void> {
  try {
    process.kill(info.pid, 'SIGTERM');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ESRCH') return;
    throw new CapsuleError('daemon_stop_failed', `Cannot signal capsuled (pid ${info.pid}): ${code}`, {
      hint: code === 'EPERM' ? 'Run as the user that started capsuled (usually root)' : undefined,
    });
  }
  const deadline = Date.now() + DAEMON_STOP_TIMEOUT_MS;
  while (processIsAlive(info.pid)) {
    if (Date.now() > deadline) {
      throw new CapsuleError(
        'daemon_stop_failed',
        `capsuled (pid ${info.pid}) is still running ${DAEMON_STOP_TIMEOUT_MS / 1000} s after SIGTERM`,
        {
          hint: `Look at ${daemonLogPath()}; \`kill -KILL ${info.pid}\` stops it without cleanup`,
        },
      );
    }
    await sleep(HEALTH_POLL_INTERVAL_MS);
  }
}
