// The one place capsuled starts child processes (QEMU, mkfs, qemu-img, apt…).
// Each child gets its own process group so a kill reaches its whole tree, its
// output is logged line by line as `[pid=N]` and the last lines are kept so a
// failure can say why; lines, captures and detached children's logs are all
// bounded, whatever a child prints. Never spawn a child anywhere else.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { silentLogger, type Logger } from './log.js';

const RECENT_LINES = 40;
/** Longest line kept or logged; a longer one (or one a child never ends) goes out in pieces of this size. */
export const MAX_LINE_CHARS = 4096;
const MAX_CAPTURE_BYTES = 16 * 1024 * 1024;

export class LaunchError extends Error {
  constructor(
    message: string,
    readonly recentOutput: string[],
    readonly exitCode: number | null = null,
  ) {
    super(recentOutput.length > 0 ? `${message}\n${recentOutput.map((l) => `  ${l}`).join('\n')}` : message);
    this.name = 'LaunchError';
  }
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  input?: string | Buffer;
  timeoutMs?: number;
  signal?: AbortSignal;
  log?: Logger;
  /** Open file descriptors the child gets as its fds 3, 4, … (e.g. handles it reaches as /proc/self/fd/N). */
  inheritFds?: number[];
  /** Called for every output line, e.g. to show progress. */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

const liveGroups = new Set<number>();
let exitHookInstalled = false;

/** Children of one-shot commands die with the daemon; installed only while any live. */
function trackGroup(pid: number): void {
  liveGroups.add(pid);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', killLiveGroups);
  }
}

function untrackGroup(pid: number): void {
  liveGroups.delete(pid);
  if (liveGroups.size === 0 && exitHookInstalled) {
    exitHookInstalled = false;
    process.off('exit', killLiveGroups);
  }
}

function killLiveGroups(): void {
  for (const pid of liveGroups) signalGroup(pid, 'SIGKILL');
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}

/** Splits a byte stream into lines and keeps the most recent ones. */
class LineTail {
  readonly recent: string[] = [];
  private partial = '';

  constructor(private readonly onLine: (line: string) => void) {}

  push(chunk: string): void {
    const lines = (this.partial + chunk).split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) this.add(line);
    // A line that never ends must not grow here: its whole pieces go out as lines of their own.
    while (this.partial.length > MAX_LINE_CHARS) {
      this.add(this.partial.slice(0, MAX_LINE_CHARS));
      this.partial = this.partial.slice(MAX_LINE_CHARS);
    }
  }

  end(): void {
    if (this.partial !== '') this.add(this.partial);
    this.partial = '';
  }

  private add(line: string): void {
    if (line.length > MAX_LINE_CHARS) {
      for (let at = 0; at < line.length; at += MAX_LINE_CHARS) this.add(line.slice(at, at + MAX_LINE_CHARS));
      return;
    }
    const clean = line.replace(/\r$/, '');
    this.recent.push(clean);
    if (this.recent.length > RECENT_LINES) this.recent.shift();
    this.onLine(clean);
  }
}

/** Runs a command to completion; rejects with a LaunchError that quotes its last output lines. */
export async function runCommand(file: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  const log = options.log ?? silentLogger;
  const child = spawn(file, args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe', ...(options.inheritFds ?? [])],
    detached: true,
  });
  const name = file.split('/').pop() ?? file;
  const outputs = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
  let captured = 0;
  const tail = new LineTail((line) => log.debug({ component: name }, `[pid=${child.pid}] ${line}`));
  const streams = ['stdout', 'stderr'] as const;
  for (const stream of streams) {
    const lineTail = options.onLine ? new LineTail((line) => options.onLine?.(line, stream)) : undefined;
    child[stream]?.on('data', (chunk: Buffer) => {
      if (captured < MAX_CAPTURE_BYTES) {
        outputs[stream].push(chunk);
        captured += chunk.length;
      }
      const text = chunk.toString('utf8');
      tail.push(text);
      lineTail?.push(text);
    });
    child[stream]?.on('end', () => lineTail?.end());
  }
  if (options.input !== undefined) child.stdin?.end(options.input);

  return await new Promise<RunResult>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    let stopReason: string | undefined;
    const stop = (reason: string) => {
      stopReason = reason;
      if (child.pid !== undefined) void terminateGroup(child.pid, 2000);
    };
    const onAbort = () => stop('aborted');
    options.signal?.addEventListener('abort', onAbort, { once: true });
    if (options.timeoutMs) timer = setTimeout(() => stop(`timed out after ${options.timeoutMs} ms`), options.timeoutMs);
    if (child.pid !== undefined) trackGroup(child.pid);

    const finish = () => {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      if (child.pid !== undefined) untrackGroup(child.pid);
      tail.end();
    };
    child.on('error', (err) => {
      finish();
      reject(new LaunchError(`Failed to launch ${name}: ${err.message}`, tail.recent));
    });
    child.on('close', (code, signal) => {
      finish();
      if (stopReason !== undefined) {
        reject(new LaunchError(`${name} ${stopReason}`, tail.recent, code));
      } else if (code === 0) {
        resolve({
          stdout: Buffer.concat(outputs.stdout).toString('utf8'),
          stderr: Buffer.concat(outputs.stderr).toString('utf8'),
        });
      } else {
        const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
        reject(new LaunchError(`${name} ${how}`, tail.recent, code));
      }
    });
  });
}

/**
 * Streams `input` through a filter command (e.g. `zstd -d`) and returns its
 * stdout. The returned stream errors with a LaunchError quoting the filter's
 * stderr when it fails; destroying it ends the child's whole group.
 */
export function filterThrough(file: string, args: string[], input: Readable, options: { log?: Logger } = {}): Readable {
  const log = options.log ?? silentLogger;
  const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  const name = file.split('/').pop() ?? file;
  const output = new PassThrough();
  const tail = new LineTail((line) => log.debug({ component: name }, `[pid=${child.pid}] ${line}`));
  child.stderr.on('data', (chunk: Buffer) => tail.push(chunk.toString('utf8')));
  if (child.pid !== undefined) trackGroup(child.pid);
  let failed = false;
  const fail = (err: Error) => {
    if (failed) return;
    failed = true;
    output.destroy(err);
  };
  // A reader that stops early (an error further down) must not leave the child behind.
  output.on('close', () => {
    if (child.exitCode === null && child.pid !== undefined) signalGroup(child.pid, 'SIGKILL');
  });
  pipeline(input, child.stdin).catch((err: Error) => {
    if ((err as NodeJS.ErrnoException).code !== 'EPIPE') fail(err);
  });
  child.stdout.pipe(output, { end: false });
  child.on('error', (err) => fail(new LaunchError(`Failed to launch ${name}: ${err.message}`, tail.recent)));
  child.on('close', (code, signal) => {
    if (child.pid !== undefined) untrackGroup(child.pid);
    tail.end();
    if (code === 0) output.end();
    else fail(new LaunchError(`${name} ${signal ? `was killed by ${signal}` : `exited with code ${code}`}`, tail.recent, code));
  });
  return output;
}

export interface DetachedOptions {
  /** Where the child's stdout and stderr go; it must outlive the daemon, so no pipes. */
  logFile: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

/**
 * Starts a long-lived child (a VM) in its own session, writing to a log file,
 * so that it survives the daemon being restarted or killed. Resolves with its pid.
 */
export async function spawnDetached(file: string, args: string[], options: DetachedOptions): Promise<number> {
  const fd = fs.openSync(options.logFile, 'a', 0o600);
  try {
    const child: ChildProcess = spawn(file, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', fd, fd],
      detached: true,
    });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', (err) => reject(new LaunchError(`Failed to launch ${file}: ${err.message}`, [])));
    });
    child.unref();
    if (child.pid === undefined) throw new LaunchError(`Failed to launch ${file}: no pid`, []);
    return child.pid;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Keeps a log that a detached child appends to (spawnDetached) near
 * `limitBytes`: past it, its newest half goes to `<file>.1` and the file is
 * emptied; the child's O_APPEND descriptor writes on at the new end. Call it
 * from time to time while the child runs: a guest can make its VMM log.
 */
export function capDetachedLog(file: string, limitBytes: number): void {
  try {
    if (fs.statSync(file).size <= limitBytes) return;
    fs.writeFileSync(`${file}.1`, tailOfFile(file, Math.floor(limitBytes / 2)), { mode: 0o600 });
    fs.truncateSync(file, 0);
  } catch {
    // Gone with its child.
  }
}

/** True while the process exists and is not a zombie. */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Polls until the process is gone; resolves false if it is still alive after `timeoutMs`. */
export async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isProcessAlive(pid)) {
    if (Date.now() >= deadline) return false;
    await sleep(20);
  }
  return true;
}

/** SIGTERM to the whole group, then SIGKILL after `graceMs`. Resolves when it is gone. */
export async function terminateGroup(pid: number, graceMs: number): Promise<void> {
  signalGroup(pid, 'SIGTERM');
  if (await waitForExit(pid, graceMs)) return;
  signalGroup(pid, 'SIGKILL');
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // Gone between the two calls.
  }
  await waitForExit(pid, 5000);
}

/** The last `maxBytes` of a log file, for error messages; empty if unreadable. */
export function tailOfFile(file: string, maxBytes = 4096): string {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const length = Math.min(size, maxBytes);
      const buf = Buffer.alloc(length);
      fs.readSync(fd, buf, 0, length, size - length);
      return buf.toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return '';
  }
}
