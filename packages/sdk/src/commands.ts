// `sandbox.commands`: running commands in a sandbox the way E2B's SDK does
// (string → `/bin/bash -lc`, output callbacks, CommandExitError on failure).
// A foreground run streams from the daemon's exec endpoint; background runs,
// reattaching, listing, stdin and signals go to the agent's process service.
import type { ExecRequest } from '@capsule/protocol';
import { connectCallOptions, type AgentRequestOptions, type SandboxAgent } from './agent-call.js';
import {
  type CommandHandle,
  openProcessHandle,
  outputCallbacksOf,
  ProcessControls,
  type CommandResult,
  type OutputCallbacks,
} from './command-handle.js';
import { CommandExitError } from './errors.js';
import type { ProcessSignal } from './process-exit.js';

export type { CommandResult } from './command-handle.js';

/** Default limit on a command's run time, as in E2B; pass 0 for none. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 60_000;

export interface CommandRunOptions extends Omit<OutputCallbacks, 'onPty'> {
  env?: Record<string, string>;
  cwd?: string;
  user?: string;
  /**
   * Sent to the command's stdin, which is then closed. Without it a
   * background command's stdin stays open for sendStdin() until closeStdin().
   */
  stdin?: string;
  /** The command is killed after this long; 0 means no limit. Default 60 s. */
  timeoutMs?: number;
  /** How long to wait for the command to start. */
  requestTimeoutMs?: number;
  /**
   * Aborts the run. A foreground command is left running, as after Ctrl-C of
   * a client; a background handle is disconnected (the command keeps running).
   */
  signal?: AbortSignal;
  /** Return a CommandHandle as soon as the command started, instead of waiting for it. */
  background?: boolean;
}

export interface CommandConnectOptions extends AgentRequestOptions, Omit<OutputCallbacks, 'onPty'> {
  /** Stop following after this long, in ms (the command is not killed); 0 or unset: none. */
  timeoutMs?: number;
}

/** A process the agent started and that still runs. */
export interface ProcessInfo {
  pid: number;
  /** The tag it was started with, if any. */
  tag: string | undefined;
  cmd: string;
  args: string[];
  envs: Record<string, string>;
  cwd: string | undefined;
}

/** A string is a shell command line; an array is argv, run without a shell. */
export function toArgv(cmd: string | readonly string[]): string[] {
  return typeof cmd === 'string' ? ['/bin/bash', '-lc', cmd] : [...cmd];
}

export class Commands {
  readonly #agent: SandboxAgent;
  readonly #controls: ProcessControls;

  /** @internal */
  constructor(agent: SandboxAgent) {
    this.#agent = agent;
    this.#controls = new ProcessControls(agent);
  }

  /**
   * Runs a command and waits for it to end. Resolves on exit code 0; throws
   * CommandExitError (with exitCode, stdout, stderr) on any other ending.
   * With `background: true`, resolves as soon as the command started, with a
   * CommandHandle; the command outlives this client.
   *
   * @example
   * const { stdout } = await sandbox.commands.run('ls -la /app');
   * const server = await sandbox.commands.run('python3 -m http.server', { background: true, onStdout: console.log });
   */
  run(cmd: string | readonly string[], options?: CommandRunOptions & { background?: false }): Promise<CommandResult>;
  run(cmd: string | readonly string[], options: CommandRunOptions & { background: true }): Promise<CommandHandle>;
  run(cmd: string | readonly string[], options?: CommandRunOptions): Promise<CommandResult | CommandHandle>;
  async run(cmd: string | readonly string[], options: CommandRunOptions = {}): Promise<CommandResult | CommandHandle> {
    if (options.background) return await this.#startInBackground(cmd, options);
    const request: ExecRequest = {
      cmd: toArgv(cmd),
      timeoutMs: options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
      ...(options.env && { env: options.env }),
      ...(options.cwd !== undefined && { cwd: options.cwd }),
      ...(options.user !== undefined && { user: options.user }),
      ...(options.stdin !== undefined && { stdin: options.stdin }),
    };
    // One decoder per stream keeps a UTF-8 character split across two events whole.
    const decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
    const output = { stdout: '', stderr: '' };
    const callbacks = { stdout: options.onStdout, stderr: options.onStderr };
    const byteCallbacks = { stdout: options.onStdoutBytes, stderr: options.onStderrBytes };

    const events = this.#agent.client.execStream(this.#agent.sandboxId, request, {
      ...(options.signal && { signal: options.signal }),
      ...(options.requestTimeoutMs !== undefined && { requestTimeoutMs: options.requestTimeoutMs }),
    });
    for await (const event of events) {
      if (event.type === 'stdout' || event.type === 'stderr') {
        const bytes = Buffer.from(event.data, 'base64');
        if (bytes.length > 0) await byteCallbacks[event.type]?.(bytes);
        const text = decoders[event.type].decode(bytes, { stream: true });
        if (text === '') continue;
        output[event.type] += text;
        await callbacks[event.type]?.(text);
      } else if (event.type === 'exit') {
        for (const stream of ['stdout', 'stderr'] as const) {
          const rest = decoders[stream].decode();
          if (rest) {
            output[stream] += rest;
            await callbacks[stream]?.(rest);
          }
        }
        const result: CommandResult = {
          exitCode: event.exitCode,
          ...(event.signal !== undefined && { signal: event.signal }),
          stdout: output.stdout,
          stderr: output.stderr,
          durationMs: event.durationMs,
        };
        if (result.exitCode !== 0 || result.signal !== undefined) throw new CommandExitError(result);
        return result;
      }
    }
    // execStream throws when the stream ends without `exit`; this is unreachable.
    throw new Error('exec stream ended without an exit event');
  }

  /**
   * The processes the sandbox's agent started that still run (commands, PTYs, the template's start command).
   *
   * @example
   * for (const p of await sandbox.commands.list()) console.log(p.pid, p.cmd, p.args.join(' '));
   */
  async list(options: AgentRequestOptions = {}): Promise<ProcessInfo[]> {
    let answer;
    try {
      answer = await this.#agent.connection.process.list({}, connectCallOptions(options, this.#agent.requestTimeoutMs));
    } catch (error) {
      throw await this.#agent.failure(error, 'list processes', options.signal);
    }
    return answer.processes.map((process) => ({
      pid: process.pid,
      tag: process.tag,
      cmd: process.config?.cmd ?? '',
      args: process.config?.args ?? [],
      envs: process.config?.envs ?? {},
      cwd: process.config?.cwd,
    }));
  }

  /**
   * Follows a running process again (after its client went away or
   * disconnected): output from now on, and its end. Earlier output is not replayed.
   *
   * @throws NotFoundError when no such process runs.
   * @example
   * const handle = await sandbox.commands.connect(pid, { onStdout: console.log });
   * await handle.wait();
   */
  async connect(pid: number, options: CommandConnectOptions = {}): Promise<CommandHandle> {
    return await openProcessHandle(
      this.#agent,
      `follow process ${pid}`,
      (callOptions) => this.#agent.connection.process.connect({ process: { selector: { case: 'pid', value: pid } } }, callOptions),
      options,
      outputCallbacksOf(options),
    );
  }

  /**
   * Ends a process by pid: SIGKILL, or `killSignal: 'SIGTERM'`. Resolves false when no such process runs.
   *
   * @example
   * await sandbox.commands.kill(pid, { killSignal: 'SIGTERM' });
   */
  async kill(pid: number, options: AgentRequestOptions & { killSignal?: ProcessSignal } = {}): Promise<boolean> {
    return await this.#controls.signal(pid, options.killSignal ?? 'SIGKILL', options);
  }

  /**
   * Writes to a process's stdin (a background command keeps it open until closeStdin).
   *
   * @example
   * await sandbox.commands.sendStdin(pid, 'yes\n');
   */
  async sendStdin(pid: number, data: string | Uint8Array, options: AgentRequestOptions = {}): Promise<void> {
    await this.#controls.sendStdin(pid, data, options);
  }

  /** Closes a process's stdin: it reads end of file. */
  async closeStdin(pid: number, options: AgentRequestOptions = {}): Promise<void> {
    await this.#controls.closeStdin(pid, options);
  }

  async #startInBackground(cmd: string | readonly string[], options: CommandRunOptions): Promise<CommandHandle> {
    const [program = '', ...args] = toArgv(cmd);
    const handle = await openProcessHandle(
      this.#agent,
      `run ${program}`,
      (callOptions) =>
        this.#agent.connection.process.start(
          {
            process: { cmd: program, args, envs: options.env ?? {}, ...(options.cwd !== undefined && { cwd: options.cwd }) },
            stdin: true,
          },
          callOptions,
        ),
      { ...options, timeoutMs: options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS },
      outputCallbacksOf(options),
    );
    if (options.stdin !== undefined) {
      const requestOptions = options.signal ? { signal: options.signal } : {};
      await handle.sendStdin(options.stdin, requestOptions);
      await handle.closeStdin(requestOptions);
    }
    return handle;
  }
}
