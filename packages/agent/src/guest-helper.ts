// Talks to the kit's capsule-guest-helper (a static binary: the system calls
// node cannot make) for what a restore must fix: the wall clock and the
// kernel's random pool. The helper runs for the agent's whole life, so a
// restore costs a line on a pipe, not a process start. Never through a shell.

import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';

export const DEFAULT_GUEST_HELPER_PATH = '/opt/capsule/bin/capsule-guest-helper';
/** A static binary doing two syscalls: anything slower than this is stuck. */
const HELPER_TIMEOUT_MS = 10_000;

export interface GuestHelperRequest {
  /** Nanoseconds since the epoch to set CLOCK_REALTIME to. */
  setClockNs?: bigint | undefined;
  /** Hex bytes to credit to the CRNG before reseeding it. */
  reseedHex?: string | undefined;
}

/** The helper's argv: `settime S N` and/or `reseed HEX`, in that order. */
export function guestHelperArgs(request: GuestHelperRequest): string[] {
  const args: string[] = [];
  if (request.setClockNs !== undefined) {
    const seconds = request.setClockNs / 1_000_000_000n;
    const nanos = request.setClockNs % 1_000_000_000n;
    args.push('settime', seconds.toString(), nanos.toString());
  }
  if (request.reseedHex !== undefined) args.push('reseed', request.reseedHex);
  return args;
}

export class GuestHelperError extends Error {
  override name = 'GuestHelperError';
}

/**
 * The helper run once as `capsule-guest-helper serve`, answering one line per
 * request. Started when the agent starts, so it is already running in a warm
 * snapshot: under TCG a process start costs tens of milliseconds, which a
 * restore's /init must not pay. Requests are answered in order, one at a time;
 * a helper that dies or does not answer is started anew for the next request.
 */
export class GuestHelper {
  private child: ChildProcessWithoutNullStreams | undefined;
  private buffered = '';
  private stderrTail = '';
  private waiting: ((line: string | Error) => void) | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(readonly helperPath: string) {}

  /** Starts the helper now; failures surface on the first request. */
  start(): void {
    if (this.child) return;
    // An empty environment: the helper needs none, and the agent's must not leak into it.
    const child = spawn(this.helperPath, ['serve'], { env: {}, stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    this.buffered = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => this.onOutput(chunk));
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      this.stderrTail = (this.stderrTail + chunk).slice(-500);
    });
    child.stdin.on('error', () => undefined);
    const gone = (why: string) => {
      if (this.child !== child) return;
      this.child = undefined;
      this.waiting?.(new GuestHelperError(`capsule-guest-helper (${this.helperPath}) ${why}`));
      this.waiting = undefined;
    };
    child.on('error', (error: NodeJS.ErrnoException) => gone(`could not start (${error.code ?? error.message})`));
    child.on('exit', (code, signal) => gone(signal ? `was killed by ${signal}` : `exited with status ${code}`));
  }

  /** Resolves when the helper answered "ok"; does nothing when there is nothing to do. */
  run(request: GuestHelperRequest): Promise<void> {
    const args = guestHelperArgs(request);
    if (args.length === 0) return Promise.resolve();
    const result = this.queue.then(() => this.send(args));
    this.queue = result.catch(() => undefined);
    return result;
  }

  stop(): void {
    this.child?.kill('SIGKILL');
    this.child = undefined;
  }

  private async send(args: string[]): Promise<void> {
    this.start();
    const child = this.child;
    if (!child) throw new GuestHelperError(`capsule-guest-helper (${this.helperPath}) is not running`);
    const what = args.filter((arg) => arg === 'settime' || arg === 'reseed').join(' + ');
    this.stderrTail = '';
    const answer = await new Promise<string | Error>((resolve) => {
      const timer = setTimeout(() => {
        // A late answer must never be taken for the next request's: start afresh.
        this.stop();
        resolve(new GuestHelperError(`capsule-guest-helper (${this.helperPath}) ${what} timed out after ${HELPER_TIMEOUT_MS} ms`));
      }, HELPER_TIMEOUT_MS);
      this.waiting = (line) => {
        clearTimeout(timer);
        resolve(line);
      };
      child.stdin.write(`${args.join(' ')}\n`);
    });
    this.waiting = undefined;
    if (answer instanceof Error) throw answer;
    if (answer !== 'ok') {
      // The helper's answer and stderr name the command, never its arguments: no entropy leaks.
      const detail = this.stderrTail.trim().split('\n').slice(-3).join('; ');
      throw new GuestHelperError(`capsule-guest-helper (${this.helperPath}) ${what} failed: ${answer}${detail ? `: ${detail}` : ''}`);
    }
  }

  private onOutput(chunk: string): void {
    this.buffered += chunk;
    for (let newline = this.buffered.indexOf('\n'); newline >= 0; newline = this.buffered.indexOf('\n')) {
      const line = this.buffered.slice(0, newline).trim();
      this.buffered = this.buffered.slice(newline + 1);
      const waiting = this.waiting;
      this.waiting = undefined;
      waiting?.(line);
    }
    if (this.buffered.length > 4096) this.buffered = '';
  }
}
