// A process running in the sandbox as the agent streams it (Start or Connect):
// CommandHandle, and openProcessHandle, which opens such a stream, waits for
// the process's pid and hands the rest to a handle. Shared by
// `sandbox.commands` and anything else built on process streams (a PTY).
// Closing a stream never ends the process: only kill() does.
import type { ConnectResponse, ProcessEvent, StartResponse } from '@capsule/protocol/agent';
import { Signal } from '@capsule/protocol/agent';
import { connectCallOptions, type AgentRequestOptions, type AgentUserOptions, type SandboxAgent } from './agent-call.js';
import { formatSeconds } from './deadline.js';
import { CapsuleError, CommandExitError, NotFoundError, TimeoutError } from './errors.js';
import { outcomeOf, type ProcessSignal } from './process-exit.js';

/** How a command ended. */
export interface CommandResult {
  exitCode: number;
  /** Set when the command was ended by a signal, e.g. "SIGKILL" after timeoutMs. */
  signal?: string;
  stdout: string;
  stderr: string;
  durationMs: number;
}

/** Output as it arrives. A callback that returns a promise is awaited before the next output is read. */
export interface OutputCallbacks {
  /** Output decoded as UTF-8 (a character split across chunks is kept whole). */
  onStdout?: (data: string) => unknown;
  onStderr?: (data: string) => unknown;
  /** Output as the process wrote it, byte for byte: for binary output, or to pass it on unchanged. */
  onStdoutBytes?: (data: Uint8Array) => unknown;
  onStderrBytes?: (data: Uint8Array) => unknown;
  /** Raw terminal output of a process started with a PTY. */
  onPty?: (data: Uint8Array) => unknown;
}

/** The callbacks `options` sets, and no others (so none is set to undefined). */
export function outputCallbacksOf(options: OutputCallbacks): OutputCallbacks {
  return Object.fromEntries(
    (['onStdout', 'onStderr', 'onStdoutBytes', 'onStderrBytes', 'onPty'] as const)
      .filter((name) => options[name] !== undefined)
      .map((name) => [name, options[name]]),
  );
}

/** A handle keeps at most this many characters of each stream; callbacks see all output. */
export const MAX_KEPT_OUTPUT_CHARS = 16 * 1024 * 1024;

const signals: Record<ProcessSignal, Signal> = { SIGKILL: Signal.SIGKILL, SIGTERM: Signal.SIGTERM };

export function toWireSignal(signal: ProcessSignal): Signal {
  return signals[signal];
}

type ProcessStream = AsyncIterator<StartResponse | ConnectResponse>;

/** What a handle does to its process, by pid, through the agent. */
export class ProcessControls {
  readonly #agent: SandboxAgent;

  constructor(agent: SandboxAgent) {
    this.#agent = agent;
  }

  /** Sends a signal; false when there is no such process (the sandbox itself missing is an error). */
  async signal(pid: number, signal: ProcessSignal, options: AgentRequestOptions = {}): Promise<boolean> {
    try {
      await this.#agent.connection.process.sendSignal(
        { process: { selector: { case: 'pid', value: pid } }, signal: toWireSignal(signal) },
        connectCallOptions(options, this.#agent.requestTimeoutMs),
      );
      return true;
    } catch (error) {
      const failure = await this.#agent.failure(error, `send ${signal} to process ${pid}`, options.signal);
      if (failure instanceof NotFoundError && failure.code === 'not_found') return false;
      throw failure;
    }
  }

  async sendStdin(pid: number, data: string | Uint8Array, options: AgentRequestOptions = {}): Promise<void> {
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    try {
      await this.#agent.connection.process.sendInput(
        { process: { selector: { case: 'pid', value: pid } }, input: { input: { case: 'stdin', value: bytes } } },
        connectCallOptions(options, this.#agent.requestTimeoutMs),
      );
    } catch (error) {
      throw await this.#agent.failure(error, `write to the stdin of process ${pid}`, options.signal);
    }
  }

  async closeStdin(pid: number, options: AgentRequestOptions = {}): Promise<void> {
    try {
      await this.#agent.connection.process.closeStdin(
        { process: { selector: { case: 'pid', value: pid } } },
        connectCallOptions(options, this.#agent.requestTimeoutMs),
      );
    } catch (error) {
      throw await this.#agent.failure(error, `close the stdin of process ${pid}`, options.signal);
    }
  }
}

export interface OpenProcessOptions extends AgentUserOptions {
  /** The stream's limit in ms (for Start, the agent then kills the process); 0 or unset: none. */
  timeoutMs?: number;
}

/**
 * Opens a process stream with `open`, waits for its start event and returns a
 * handle that reads the rest. The caller's signal aborts the opening and,
 * later, disconnects the handle (the process keeps running).
 */
export async function openProcessHandle(
  agent: SandboxAgent,
  what: string,
  open: (callOptions: ReturnType<typeof connectCallOptions>) => AsyncIterable<StartResponse | ConnectResponse>,
  options: OpenProcessOptions,
  callbacks: OutputCallbacks,
): Promise<CommandHandle> {
  const controller = new AbortController();
  const forwardAbort = () => controller.abort(options.signal?.reason);
  if (options.signal?.aborted) forwardAbort();
  options.signal?.addEventListener('abort', forwardAbort, { once: true });
  const detach = () => options.signal?.removeEventListener('abort', forwardAbort);
  // requestTimeoutMs bounds the wait for the start event only, not the process.
  const startTimeoutMs = options.requestTimeoutMs ?? agent.requestTimeoutMs;
  let startTimedOut = false;
  const startTimer =
    startTimeoutMs > 0
      ? setTimeout(() => {
          startTimedOut = true;
          controller.abort();
        }, startTimeoutMs)
      : undefined;
  let stream: ProcessStream;
  let first: IteratorResult<StartResponse | ConnectResponse>;
  try {
    stream = open(connectCallOptions({ ...options, signal: controller.signal }, 0, { timeoutMs: options.timeoutMs }))[
      Symbol.asyncIterator
    ]();
    first = await stream.next();
  } catch (error) {
    detach();
    if (startTimedOut)
      throw new TimeoutError('request_timeout', `${what}: the sandbox's agent did not answer within ${formatSeconds(startTimeoutMs)}`, {
        hint: 'the sandbox may be overloaded; raise requestTimeoutMs',
      });
    throw await agent.failure(error, what, options.signal);
  } finally {
    clearTimeout(startTimer);
  }
  const start = first.done ? undefined : first.value.event?.event;
  if (start?.case !== 'start') {
    controller.abort();
    detach();
    throw new CapsuleError('protocol_error', `the sandbox's agent did not report the process's start (${what})`);
  }
  return new CommandHandle(start.value.pid, stream, {
    agent,
    what,
    controls: new ProcessControls(agent),
    disconnect: () => controller.abort(),
    onFinished: detach,
    callbacks,
    signal: options.signal,
  });
}

interface HandleWiring {
  agent: SandboxAgent;
  what: string;
  controls: ProcessControls;
  disconnect: () => void;
  onFinished: () => void;
  callbacks: OutputCallbacks;
  signal: AbortSignal | undefined;
}

/**
 * A command running in the sandbox: its output so far, and wait(), kill(),
 * sendStdin() and disconnect(). Made by `sandbox.commands.run(cmd, { background: true })`
 * and `sandbox.commands.connect(pid)`.
 */
export class CommandHandle {
  /** The process's pid in the sandbox (for `commands.connect`, `commands.kill`). */
  readonly pid: number;
  #stdout = '';
  #stderr = '';
  #result: CommandResult | undefined;
  #disconnected = false;
  readonly #wiring: HandleWiring;
  readonly #done: Promise<CommandResult>;

  /** @internal Use `sandbox.commands`. */
  constructor(pid: number, events: ProcessStream, wiring: HandleWiring) {
    this.pid = pid;
    this.#wiring = wiring;
    this.#done = this.#read(events);
    // wait() may never be called; its rejection must not go unhandled.
    this.#done.catch(() => undefined);
  }

  /** Output so far (at most MAX_KEPT_OUTPUT_CHARS are kept). */
  get stdout(): string {
    return this.#stdout;
  }

  get stderr(): string {
    return this.#stderr;
  }

  /** The exit code once the command ended; undefined while it runs. */
  get exitCode(): number | undefined {
    return this.#result?.exitCode;
  }

  /**
   * Waits for the command to end. Resolves on exit code 0; throws
   * CommandExitError on any other ending, CapsuleError `disconnected` after
   * disconnect(), TimeoutError when its timeoutMs ran out.
   *
   * @example
   * const server = await sandbox.commands.run('python3 -m http.server 8000', { background: true });
   * // ...
   * await server.kill();
   */
  async wait(): Promise<CommandResult> {
    const result = await this.#done;
    if (result.exitCode !== 0 || result.signal !== undefined) throw new CommandExitError(result);
    return result;
  }

  /** Ends the command (SIGKILL unless told otherwise); false when it had already ended. */
  async kill(options: AgentRequestOptions & { killSignal?: ProcessSignal } = {}): Promise<boolean> {
    return await this.#wiring.controls.signal(this.pid, options.killSignal ?? 'SIGKILL', options);
  }

  /** Writes to the command's stdin. */
  async sendStdin(data: string | Uint8Array, options: AgentRequestOptions = {}): Promise<void> {
    await this.#wiring.controls.sendStdin(this.pid, data, options);
  }

  /** Closes the command's stdin: it reads end of file. */
  async closeStdin(options: AgentRequestOptions = {}): Promise<void> {
    await this.#wiring.controls.closeStdin(this.pid, options);
  }

  /**
   * Stops following the command; it keeps running in the sandbox, and
   * `sandbox.commands.connect(pid)` follows it again. No callback fires after this.
   */
  disconnect(): void {
    this.#disconnected = true;
    this.#wiring.disconnect();
  }

  async #read(events: ProcessStream): Promise<CommandResult> {
    const { callbacks } = this.#wiring;
    const startedAt = Date.now();
    // One decoder per stream keeps a UTF-8 character split across two events whole.
    const decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
    const deliver = async (stream: 'stdout' | 'stderr', text: string) => {
      if (text === '' || this.#disconnected) return;
      if (stream === 'stdout') this.#stdout = keep(this.#stdout, text);
      else this.#stderr = keep(this.#stderr, text);
      await (stream === 'stdout' ? callbacks.onStdout : callbacks.onStderr)?.(text);
    };
    try {
      for (;;) {
        let next: IteratorResult<StartResponse | ConnectResponse>;
        try {
          next = await events.next();
        } catch (error) {
          if (this.#disconnected)
            throw new CapsuleError('disconnected', `stopped following process ${this.pid}; it may still run`, {
              hint: 'follow it again with sandbox.commands.connect(pid)',
            });
          throw await this.#wiring.agent.failure(error, this.#wiring.what, this.#wiring.signal);
        }
        if (next.done) {
          throw new CapsuleError('connection_lost', `the stream of process ${this.pid} ended before the process did`, {
            hint: 'follow it again with sandbox.commands.connect(pid)',
          });
        }
        const event: ProcessEvent['event'] | undefined = next.value.event?.event;
        if (event?.case === 'data') {
          const output = event.value.output;
          if (output.case === 'stdout' || output.case === 'stderr') {
            const onBytes = output.case === 'stdout' ? callbacks.onStdoutBytes : callbacks.onStderrBytes;
            if (output.value.length > 0 && !this.#disconnected) await onBytes?.(output.value);
            await deliver(output.case, decoders[output.case].decode(output.value, { stream: true }));
          } else if (output.case === 'pty' && !this.#disconnected) await callbacks.onPty?.(output.value);
        } else if (event?.case === 'end') {
          await deliver('stdout', decoders.stdout.decode());
          await deliver('stderr', decoders.stderr.decode());
          const outcome = outcomeOf(event.value);
          if (outcome.kind === 'failed')
            throw new CapsuleError('exec_failed', `process ${this.pid} failed: ${outcome.message}`, {
              hint: 'check that the program exists in the sandbox and is executable',
            });
          this.#result = {
            exitCode: outcome.exitCode,
            ...(outcome.signal !== undefined && { signal: outcome.signal }),
            stdout: this.#stdout,
            stderr: this.#stderr,
            durationMs: Date.now() - startedAt,
          };
          return this.#result;
        }
      }
    } finally {
      this.#wiring.disconnect();
      this.#wiring.onFinished();
    }
  }
}

function keep(kept: string, more: string): string {
  if (kept.length >= MAX_KEPT_OUTPUT_CHARS) return kept;
  return kept.length + more.length <= MAX_KEPT_OUTPUT_CHARS ? kept + more : kept + more.slice(0, MAX_KEPT_OUTPUT_CHARS - kept.length);
}
