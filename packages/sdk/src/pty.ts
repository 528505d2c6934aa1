// `sandbox.pty`: interactive terminals in a sandbox, shaped like E2B's
// `sandbox.pty` (create, sendInput, resize, kill, and a handle to wait on).
// It speaks the agent's `process.Process` service through the sandbox's agent
// connection (capsuled's envd path), with the options and error mapping that
// commands and files share; the process outlives the handle unless killed.
import type { Client } from '@connectrpc/connect';
import { Signal, signalFromStatus, type Process } from '@capsule/protocol/agent';
import { connectCallOptions, type AgentRequestOptions, type SandboxAgent } from './agent-call.js';
import { CommandExitError, TimeoutError } from './errors.js';

/** What runs on a terminal unless `cmd` says otherwise: E2B's interactive login shell. */
export const DEFAULT_PTY_COMMAND: readonly string[] = ['/bin/bash', '-i', '-l'];
/** Default limit on a terminal's life, as in E2B; pass 0 for none. */
export const DEFAULT_PTY_TIMEOUT_MS = 60_000;
/** How long to wait for the process to start, unless requestTimeoutMs says otherwise. */
const DEFAULT_START_TIMEOUT_MS = 60_000;

export interface PtySize {
  cols: number;
  rows: number;
}

export interface PtyCreateOptions extends PtySize {
  /** Everything the terminal shows, as it comes. */
  onData?: (data: Uint8Array) => void;
  /** argv to run; default `/bin/bash -i -l`. */
  cmd?: readonly string[];
  /** Environment variables; TERM is `xterm-256color` unless set here. */
  envs?: Record<string, string>;
  cwd?: string;
  /** Unix user to run as; default the sandbox's default user. */
  user?: string;
  /** The agent kills the process after this long; 0 means never. Default 60 s. */
  timeoutMs?: number;
  /** How long to wait for the process to start. Default 60 s. */
  requestTimeoutMs?: number;
  signal?: AbortSignal;
}

export interface PtyResult {
  exitCode: number;
  /** Set when a signal ended the process, e.g. "SIGKILL". */
  signal?: string;
}

type CallOptions = AgentRequestOptions;

type EndEvent = { exitCode: number; exited: boolean; status: string };

const byPid = (pid: number) => ({ selector: { case: 'pid' as const, value: pid } });

/** "signal: killed" → "SIGKILL", from the agent's status text; a description no signal has stays as it is. */
function signalName(status: string): string | undefined {
  return signalFromStatus(status) ?? /^signal: (.+)$/.exec(status)?.[1];
}

/** A process on a terminal: its pid, input, size, and its end. */
export class PtyHandle {
  readonly pid: number;
  readonly #pty: Pty;
  readonly #ended: Promise<PtyResult>;
  readonly #stop: AbortController;

  constructor(pid: number, pty: Pty, ended: Promise<PtyResult>, stop: AbortController) {
    this.pid = pid;
    this.#pty = pty;
    this.#ended = ended;
    this.#stop = stop;
    ended.catch(() => undefined);
  }

  /** Resolves when the process exits with 0; throws CommandExitError for any other ending. */
  async wait(): Promise<PtyResult> {
    const result = await this.#ended;
    if (result.exitCode !== 0 || result.signal !== undefined) {
      throw new CommandExitError({ exitCode: result.exitCode, signal: result.signal, stdout: '', stderr: '' });
    }
    return result;
  }

  sendInput(data: Uint8Array | string, options?: CallOptions): Promise<void> {
    return this.#pty.sendInput(this.pid, data, options);
  }

  resize(size: PtySize, options?: CallOptions): Promise<void> {
    return this.#pty.resize(this.pid, size, options);
  }

  /** SIGKILL; false when the process was already gone. */
  kill(options?: CallOptions): Promise<boolean> {
    return this.#pty.kill(this.pid, options);
  }

  /** Stops receiving output; the process keeps running. */
  disconnect(): void {
    this.#stop.abort();
  }
}

export class Pty {
  readonly #agent: SandboxAgent;

  constructor(agent: SandboxAgent) {
    this.#agent = agent;
  }

  get #rpc(): Client<typeof Process> {
    return this.#agent.connection.process;
  }

  /** Starts a process on a new terminal of the given size and resolves once it runs. */
  async create(options: PtyCreateOptions): Promise<PtyHandle> {
    const [cmd, ...args] = options.cmd ?? DEFAULT_PTY_COMMAND;
    if (cmd === undefined) throw new TypeError('cmd must name a program');
    const stop = new AbortController();
    const forwardAbort = () => stop.abort(options.signal?.reason);
    if (options.signal?.aborted) forwardAbort();
    options.signal?.addEventListener('abort', forwardAbort, { once: true });
    const startWithin = options.requestTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
    const startTimer =
      startWithin > 0
        ? setTimeout(
            () => stop.abort(new TimeoutError('request_timeout', `the terminal's process did not start within ${startWithin / 1000} s`)),
            startWithin,
          )
        : undefined;
    const timeoutMs = options.timeoutMs ?? DEFAULT_PTY_TIMEOUT_MS;
    const events = this.#rpc
      .start(
        {
          process: { cmd, args, envs: { TERM: 'xterm-256color', ...options.envs }, ...(options.cwd !== undefined && { cwd: options.cwd }) },
          pty: { size: { cols: options.cols, rows: options.rows } },
        },
        { ...connectCallOptions({ user: options.user }, 0, { timeoutMs: timeoutMs > 0 ? timeoutMs : undefined }), signal: stop.signal },
      )
      [Symbol.asyncIterator]();
    let pid: number;
    try {
      const first = await events.next();
      const event = first.done ? undefined : first.value.event?.event;
      if (event?.case !== 'start') throw new Error('the agent did not start the process');
      pid = event.value.pid;
    } catch (error) {
      options.signal?.removeEventListener('abort', forwardAbort);
      throw await this.#agent.failure(error, 'start a terminal', stop.signal);
    } finally {
      clearTimeout(startTimer);
    }
    const ended = (async (): Promise<PtyResult> => {
      try {
        for (;;) {
          const next = await events.next();
          if (next.done) break;
          const event = next.value.event?.event;
          if (event?.case === 'data' && event.value.output.case === 'pty') options.onData?.(event.value.output.value);
          else if (event?.case === 'end') return toResult(event.value);
        }
        throw new Error('the terminal stream ended without an end event');
      } catch (error) {
        throw await this.#agent.failure(error, `follow terminal process ${pid}`, stop.signal);
      } finally {
        options.signal?.removeEventListener('abort', forwardAbort);
      }
    })();
    return new PtyHandle(pid, this, ended, stop);
  }

  /** Types into the terminal of process `pid`. */
  async sendInput(pid: number, data: Uint8Array | string, options: CallOptions = {}): Promise<void> {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    await this.#call(`type into terminal process ${pid}`, options, (callOptions) =>
      this.#rpc.sendInput({ process: byPid(pid), input: { input: { case: 'pty', value: bytes } } }, callOptions),
    );
  }

  /** A new terminal size; the process gets SIGWINCH. */
  async resize(pid: number, size: PtySize, options: CallOptions = {}): Promise<void> {
    await this.#call(`resize terminal process ${pid}`, options, (callOptions) =>
      this.#rpc.update({ process: byPid(pid), pty: { size: { cols: size.cols, rows: size.rows } } }, callOptions),
    );
  }

  /** SIGKILL to process `pid`; false when there was no such process. */
  async kill(pid: number, options: CallOptions = {}): Promise<boolean> {
    try {
      await this.#call(`kill terminal process ${pid}`, options, (callOptions) =>
        this.#rpc.sendSignal({ process: byPid(pid), signal: Signal.SIGKILL }, callOptions),
      );
      return true;
    } catch (error) {
      if ((error as { code?: unknown }).code === 'not_found') return false;
      throw error;
    }
  }

  async #call<T>(what: string, options: CallOptions, call: (callOptions: ReturnType<typeof connectCallOptions>) => Promise<T>): Promise<T> {
    try {
      return await call(connectCallOptions(options, this.#agent.requestTimeoutMs));
    } catch (error) {
      throw await this.#agent.failure(error, what, options.signal);
    }
  }
}

function toResult(end: EndEvent): PtyResult {
  const signal = end.exited ? undefined : signalName(end.status);
  return { exitCode: end.exitCode, ...(signal !== undefined && { signal }) };
}
