// `sandbox.commands`: running commands in a sandbox the way E2B's SDK does
// (string → `/bin/bash -lc`, output callbacks, CommandExitError on failure).
// It streams from the daemon so that callbacks see output as it happens.
import type { ExecRequest } from '@capsule/protocol';
import type { CapsuleClient } from './client.js';
import { CommandExitError } from './errors.js';

/** Default limit on a command's run time, as in E2B; pass 0 for none. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 60_000;

export interface CommandRunOptions {
  onStdout?: (data: string) => void;
  onStderr?: (data: string) => void;
  env?: Record<string, string>;
  cwd?: string;
  user?: string;
  /** Sent to the command's stdin, which is then closed. */
  stdin?: string;
  /** The daemon kills the command after this long; 0 means no limit. Default 60 s. */
  timeoutMs?: number;
  /** How long to wait for the daemon to start the command. */
  requestTimeoutMs?: number;
  signal?: AbortSignal;
}

export interface CommandResult {
  exitCode: number;
  /** Set when the command was ended by a signal, e.g. "SIGKILL" after timeoutMs. */
  signal?: string;
  stdout: string;
  stderr: string;
  durationMs: number;
}

/** A string is a shell command line; an array is argv, run without a shell. */
export function toArgv(cmd: string | readonly string[]): string[] {
  return typeof cmd === 'string' ? ['/bin/bash', '-lc', cmd] : [...cmd];
}

export class Commands {
  readonly #client: CapsuleClient;
  readonly #sandboxId: string;

  constructor(client: CapsuleClient, sandboxId: string) {
    this.#client = client;
    this.#sandboxId = sandboxId;
  }

  /**
   * Runs a command and waits for it to end. Resolves on exit code 0; throws
   * CommandExitError (with exitCode, stdout, stderr) on any other ending.
   */
  async run(cmd: string | readonly string[], options: CommandRunOptions = {}): Promise<CommandResult> {
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

    const events = this.#client.execStream(this.#sandboxId, request, {
      ...(options.signal && { signal: options.signal }),
      ...(options.requestTimeoutMs !== undefined && { requestTimeoutMs: options.requestTimeoutMs }),
    });
    for await (const event of events) {
      if (event.type === 'stdout' || event.type === 'stderr') {
        const text = decoders[event.type].decode(Buffer.from(event.data, 'base64'), { stream: true });
        if (text === '') continue;
        output[event.type] += text;
        callbacks[event.type]?.(text);
      } else if (event.type === 'exit') {
        for (const stream of ['stdout', 'stderr'] as const) {
          const rest = decoders[stream].decode();
          if (rest) {
            output[stream] += rest;
            callbacks[stream]?.(rest);
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
}
