// One child process the agent started: spawning it in its own process group,
// on pipes or on a pseudo-terminal, fanning its output (stdout/stderr, or the
// terminal's) out to any number of subscribers (Start and Connect streams),
// input, resizes, signals and the end event. Must never buffer output without
// bound (a slow subscriber pauses the child's pipes or terminal), never let a
// process block because nobody listens (output with no subscriber is
// dropped), and never throw from a stream or child 'error' event.

import { spawn, type ChildProcess } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import type { Readable, Writable } from 'node:stream';
import { Code, ConnectError } from '@connectrpc/connect';
import { describeExit, type ExitInfo } from './exit-status.js';
import { describeCommand, type LaunchSpec } from './launch-spec.js';
import { createLogger, describeError } from './log.js';
import type { PseudoTerminal } from './pseudo-terminal.js';
import type { TerminalSize } from './terminal-size.js';
import type { UnixUser } from './users.js';

const log = createLogger('process');

/** Largest payload of one DataEvent. */
export const MAX_DATA_EVENT_BYTES = 64 * 1024;
/** A subscriber holding more than this unsent pauses the child's output... */
export const SUBSCRIBER_HIGH_WATER_BYTES = 1024 * 1024;
/** ...until every subscriber is back under this. */
export const SUBSCRIBER_LOW_WATER_BYTES = 256 * 1024;
/** Bounds the memory one process's fan-out can take. */
export const MAX_SUBSCRIBERS_PER_PROCESS = 32;
/** SendInput waits for the child to read once this much stdin is queued. */
const STDIN_HIGH_WATER_BYTES = 1024 * 1024;
/**
 * After the child exits, output still in its pipes (or terminal) is read
 * until they close or stay quiet this long. A background grandchild holding the pipe
 * open must not hold back the end event (envd does not wait for it either).
 */
const OUTPUT_SETTLE_MS = 50;
/**
 * After a terminal's process exits, the agent lets go of the slave side once
 * the terminal has been read empty (not paused, quiet this long); the
 * terminal's own end-of-output then ends the stream without a full settle.
 */
const TERMINAL_DRAINED_MS = 10;

export type OutputStreamName = 'stdout' | 'stderr' | 'pty';
/** Where input goes: the stdin pipe or the terminal (envd's ProcessInput cases). */
export type InputKind = 'stdin' | 'pty';

export type ProcessOutputEvent = { kind: OutputStreamName; data: Buffer } | { kind: 'end'; exit: ExitInfo };

function abortError(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new ConnectError('request aborted', Code.Canceled);
}

/** One reader's queue of a process's events, bounded by pausing the source. */
export class OutputSubscription {
  private readonly queue: ProcessOutputEvent[] = [];
  private wake: (() => void) | undefined;
  queuedBytes = 0;
  closed = false;

  constructor(private readonly owner: ManagedProcess) {}

  /** Called by the owning process only. */
  push(event: ProcessOutputEvent): void {
    if (this.closed) return;
    this.queue.push(event);
    if (event.kind !== 'end') this.queuedBytes += event.data.length;
    this.wake?.();
  }

  /** The next event, or 'idle' when none came for idleMs. Rejects on abort. */
  async next(idleMs: number, signal: AbortSignal): Promise<ProcessOutputEvent | 'idle'> {
    if (signal.aborted) throw abortError(signal);
    if (this.queue.length === 0) {
      const woke = await new Promise<boolean>((resolve) => {
        const onAbort = () => finish(false);
        const timer = setTimeout(() => finish(false), idleMs);
        const finish = (gotEvent: boolean) => {
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          this.wake = undefined;
          resolve(gotEvent);
        };
        this.wake = () => finish(true);
        signal.addEventListener('abort', onAbort, { once: true });
      });
      if (signal.aborted) throw abortError(signal);
      if (!woke) return 'idle';
    }
    const event = this.queue.shift();
    if (event === undefined) return 'idle';
    if (event.kind !== 'end') {
      this.queuedBytes -= event.data.length;
      this.owner.subscriberDrained();
    }
    return event;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.queue.length = 0;
    this.queuedBytes = 0;
    this.wake?.();
    this.owner.unsubscribe(this);
  }
}

export interface ManagedProcessOptions<Config> {
  spec: LaunchSpec;
  user: UnixUser;
  /** Keep a stdin pipe for SendInput; otherwise stdin is /dev/null. Ignored on a terminal. */
  stdin: boolean;
  /** Run on a pseudo-terminal of this size instead of pipes. */
  terminal?: TerminalSize | undefined;
  tag: string | undefined;
  /** The request's ProcessConfig, echoed back by List. */
  config: Config;
}

export class ManagedProcess<Config = unknown> {
  readonly pid: number;
  readonly tag: string | undefined;
  readonly config: Config;
  readonly command: string;
  private readonly outputs: Readable[] = [];
  /** The stdin pipe or the terminal; undefined without stdin. */
  private readonly input: Writable | undefined;
  private readonly terminal: PseudoTerminal | undefined;
  private readonly subscribers = new Set<OutputSubscription>();
  private readonly endListeners: Array<(exit: ExitInfo) => void> = [];
  private outputPaused = false;
  private openOutputs = 0;
  private lastOutputAt = 0;
  private exitInfo: ExitInfo | undefined;
  private settleTimer: NodeJS.Timeout | undefined;
  private endInfo: ExitInfo | undefined;
  private stdinOpen: boolean;

  /** Spawns the process; spawn failures are InvalidArgument errors, like envd's. */
  static async start<Config>(options: ManagedProcessOptions<Config>): Promise<ManagedProcess<Config>> {
    const { user } = options;
    const asAnotherUser = process.getuid?.() !== user.uid;
    if (asAnotherUser && process.getuid?.() !== 0) {
      throw new ConnectError(`cannot run as user '${user.name}': the agent is not running as root`, Code.PermissionDenied);
    }
    return options.terminal
      ? ManagedProcess.startOnTerminal(options, options.terminal, asAnotherUser)
      : ManagedProcess.startOnPipes(options, asAnotherUser);
  }

  private static async startOnTerminal<Config>(
    options: ManagedProcessOptions<Config>,
    size: TerminalSize,
    asAnotherUser: boolean,
  ): Promise<ManagedProcess<Config>> {
    const { spec, user } = options;
    // Loaded on first use: node-pty's native addon is only needed for terminals.
    const { PseudoTerminal } = await import('./pseudo-terminal.js');
    // The exit is reported through the event loop, so never before `proc` exists.
    let onExit: (code: number | null, signal: NodeJS.Signals | null) => void = () => undefined;
    let terminal: PseudoTerminal;
    try {
      terminal = PseudoTerminal.spawn({
        file: spec.file,
        args: spec.args,
        env: spec.env,
        cwd: spec.cwd,
        size,
        user: asAnotherUser ? { uid: user.uid, gid: user.gid } : undefined,
        onExit: (code, signal) => onExit(code, signal),
      });
    } catch (error) {
      throw new ConnectError(
        `error starting pty with command '${describeCommand({ cmd: spec.argv0, args: spec.args })}' in dir '${spec.cwd}' with '${size.cols}' cols and '${size.rows}' rows: ${describeError(error)}`,
        Code.InvalidArgument,
      );
    }
    const proc = new ManagedProcess(terminal.pid, options, [['pty', terminal.output]], terminal.input, terminal);
    onExit = (code, signal) => proc.childExited(code, signal);
    return proc;
  }

  private static async startOnPipes<Config>(
    options: ManagedProcessOptions<Config>,
    asAnotherUser: boolean,
  ): Promise<ManagedProcess<Config>> {
    const { spec, user } = options;
    let child: ChildProcess;
    try {
      child = spawn(spec.file, spec.args, {
        argv0: spec.argv0,
        cwd: spec.cwd,
        env: spec.env,
        // setsid(): the process leads its own group, so signals reach its
        // whole tree and it survives the agent's own session going away.
        detached: true,
        stdio: [options.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
        ...(asAnotherUser ? { uid: user.uid, gid: user.gid } : {}),
      });
    } catch (error) {
      throw new ConnectError(
        `error starting process '${describeCommand({ cmd: spec.argv0, args: spec.args })}': ${describeError(error)}`,
        Code.InvalidArgument,
      );
    }
    if (child.pid === undefined) {
      // libuv reports spawn failures synchronously but Node emits them on
      // the next tick; wait for that error to describe it.
      const error = await new Promise<unknown>((resolve) => child.once('error', resolve));
      const code = (error as NodeJS.ErrnoException).code;
      throw new ConnectError(
        `error starting process '${describeCommand({ cmd: spec.argv0, args: spec.args })}': ${describeError(error)}`,
        code === 'EAGAIN' || code === 'ENOMEM' || code === 'EMFILE' || code === 'ENFILE' ? Code.ResourceExhausted : Code.InvalidArgument,
      );
    }
    const pid = child.pid;
    const outputs: Array<[OutputStreamName, Readable | null]> = [
      ['stdout', child.stdout],
      ['stderr', child.stderr],
    ];
    const proc = new ManagedProcess(pid, options, outputs, child.stdin ?? undefined, undefined);
    child.on('error', (error) => log.warn(`[pid=${pid}] ${describeError(error)}`));
    child.on('exit', (code, signal) => proc.childExited(code, signal));
    return proc;
  }

  private constructor(
    pid: number,
    options: ManagedProcessOptions<Config>,
    outputs: Array<[OutputStreamName, Readable | null]>,
    input: Writable | undefined,
    terminal: PseudoTerminal | undefined,
  ) {
    this.pid = pid;
    this.tag = options.tag;
    this.config = options.config;
    this.command = describeCommand({ cmd: options.spec.argv0, args: options.spec.args });
    this.input = input;
    this.terminal = terminal;
    this.stdinOpen = terminal !== undefined || options.stdin;

    input?.on('error', (error) => log.debug(`[pid=${pid}] ${terminal ? 'terminal input' : 'stdin'}: ${describeError(error)}`));
    for (const [name, stream] of outputs) this.watchOutput(stream, name);
  }

  private childExited(code: number | null, signal: NodeJS.Signals | null): void {
    this.exitInfo = describeExit(code, signal);
    // The process is gone: like Go's cmd.Wait, stop offering its input.
    this.stdinOpen = false;
    if (!this.terminal) this.input?.destroy();
    this.scheduleSettleCheck();
    this.finishIfDone();
  }

  get ended(): boolean {
    return this.endInfo !== undefined;
  }

  /** Events from now on; after the end, just the end event. */
  subscribe(): OutputSubscription {
    const subscription = new OutputSubscription(this);
    if (this.endInfo !== undefined) {
      subscription.push({ kind: 'end', exit: this.endInfo });
      return subscription;
    }
    if (this.subscribers.size >= MAX_SUBSCRIBERS_PER_PROCESS) {
      throw new ConnectError(`process ${this.pid} already has ${MAX_SUBSCRIBERS_PER_PROCESS} connected streams`, Code.ResourceExhausted);
    }
    this.subscribers.add(subscription);
    return subscription;
  }

  onEnd(listener: (exit: ExitInfo) => void): void {
    if (this.endInfo !== undefined) listener(this.endInfo);
    else this.endListeners.push(listener);
  }

  /** Signals the process's whole group (it is the group leader). */
  kill(signal: NodeJS.Signals): void {
    try {
      process.kill(-this.pid, signal);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
      // The group is gone (or the process left it): try the process alone.
      try {
        process.kill(this.pid, signal);
      } catch (inner) {
        if ((inner as NodeJS.ErrnoException).code !== 'ESRCH') throw inner;
      }
    }
  }

  /** Input for the stdin pipe or the terminal, with envd's errors when `kind` is the other one. */
  async writeInput(kind: InputKind, data: Uint8Array, signal: AbortSignal): Promise<void> {
    if (kind === 'pty' && !this.terminal) {
      throw new ConnectError(
        'error writing to tty: tty not assigned to process — input should be written to the stdin, not the tty',
        Code.Internal,
      );
    }
    if (kind === 'stdin' && this.terminal) {
      throw new ConnectError(
        'error writing to stdin: tty assigned to process — input should be written to the pty, not the stdin',
        Code.Internal,
      );
    }
    const stdin = this.input;
    if (!this.stdinOpen || !stdin || stdin.destroyed || stdin.writableEnded) {
      throw new ConnectError(
        this.terminal ? 'error writing to tty: the process has ended' : 'error writing to stdin: stdin not enabled or closed',
        Code.Internal,
      );
    }
    stdin.write(data);
    if (stdin.writableLength <= STDIN_HIGH_WATER_BYTES) return;
    // The child is not reading: hold the caller rather than queue more.
    await new Promise<void>((resolve, reject) => {
      const done = () => {
        stdin.off('drain', done);
        stdin.off('close', done);
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = () => {
        done();
        reject(abortError(signal));
      };
      stdin.on('drain', done);
      stdin.on('close', done);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** EOF on stdin; closing twice is fine (envd agrees). A terminal has no stdin to close. */
  closeStdin(): void {
    if (this.terminal) {
      throw new ConnectError('error closing stdin: cannot close stdin for PTY process — send Ctrl+D (0x04) instead', Code.Unknown);
    }
    this.stdinOpen = false;
    this.input?.end();
  }

  /** A new terminal size; the kernel sends SIGWINCH to the terminal's foreground process group. */
  resize(size: TerminalSize): void {
    if (!this.terminal) throw new ConnectError('error resizing tty: tty not assigned to process', Code.Internal);
    try {
      this.terminal.resize(size);
    } catch (error) {
      throw new ConnectError(`error resizing tty: ${describeError(error)}`, Code.Internal);
    }
  }

  /** Called by a subscription after it handed an event on. */
  subscriberDrained(): void {
    if (!this.outputPaused) return;
    for (const subscriber of this.subscribers) {
      if (subscriber.queuedBytes > SUBSCRIBER_LOW_WATER_BYTES) return;
    }
    this.setOutputPaused(false);
  }

  unsubscribe(subscription: OutputSubscription): void {
    this.subscribers.delete(subscription);
    this.subscriberDrained();
  }

  private watchOutput(stream: Readable | null, name: OutputStreamName): void {
    if (!stream) return;
    this.outputs.push(stream);
    this.openOutputs += 1;
    stream.on('data', (chunk: Buffer) => this.dispatch(name, chunk));
    stream.on('error', (error) => log.debug(`[pid=${this.pid}] ${name}: ${describeError(error)}`));
    stream.on('close', () => {
      this.openOutputs -= 1;
      this.finishIfDone();
    });
  }

  private dispatch(name: OutputStreamName, chunk: Buffer): void {
    // Monotonic: /init may step the wall clock (by hours, after a restore).
    this.lastOutputAt = performance.now();
    // Nobody listening (or already ended): drop, so the process never blocks.
    if (this.endInfo !== undefined || this.subscribers.size === 0) return;
    let overHighWater = false;
    for (let offset = 0; offset < chunk.length; offset += MAX_DATA_EVENT_BYTES) {
      const piece = chunk.subarray(offset, offset + MAX_DATA_EVENT_BYTES);
      for (const subscriber of this.subscribers) {
        subscriber.push({ kind: name, data: piece });
        if (subscriber.queuedBytes > SUBSCRIBER_HIGH_WATER_BYTES) overHighWater = true;
      }
    }
    if (overHighWater) this.setOutputPaused(true);
  }

  private setOutputPaused(paused: boolean): void {
    if (this.outputPaused === paused) return;
    this.outputPaused = paused;
    log.debug(`[pid=${this.pid}] output ${paused ? 'paused: a reader is behind' : 'resumed'}`);
    for (const stream of this.outputs) {
      if (paused) stream.pause();
      else stream.resume();
    }
  }

  private scheduleSettleCheck(): void {
    clearTimeout(this.settleTimer);
    const draining = this.terminal?.holdsSlave === true;
    const quietMs = draining ? TERMINAL_DRAINED_MS : OUTPUT_SETTLE_MS;
    this.settleTimer = setTimeout(() => {
      // Timers run before the event loop polls for I/O: after a busy stretch
      // this fires before output the child wrote before exiting has been read.
      // Decide after one poll (setImmediate runs after it), so that output
      // counts as output, not as something to drop after the end.
      setImmediate(() => {
        if (this.endInfo !== undefined) return;
        const quietFor = performance.now() - this.lastOutputAt;
        if (this.outputPaused || quietFor < quietMs) {
          this.scheduleSettleCheck();
        } else if (draining) {
          this.terminal?.releaseSlave();
          this.scheduleSettleCheck();
        } else {
          this.finish();
        }
      });
    }, quietMs);
  }

  private finishIfDone(): void {
    if (this.exitInfo !== undefined && this.openOutputs <= 0) this.finish();
  }

  private finish(): void {
    if (this.endInfo !== undefined || this.exitInfo === undefined) return;
    const exit = this.exitInfo;
    this.endInfo = exit;
    clearTimeout(this.settleTimer);
    for (const subscriber of this.subscribers) subscriber.push({ kind: 'end', exit });
    this.subscribers.clear();
    // Whatever a surviving grandchild still writes to a pipe is read and
    // dropped; a terminal hangs up, as envd closes it after the exit.
    this.setOutputPaused(false);
    this.terminal?.close();
    log.debug(`[pid=${this.pid}] ended: ${exit.status}`);
    for (const listener of this.endListeners.splice(0)) {
      try {
        listener(exit);
      } catch (error) {
        log.error(`[pid=${this.pid}] end listener failed`, error);
      }
    }
  }
}
