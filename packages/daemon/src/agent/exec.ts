// Runs one command in a sandbox through its agent and turns the agent's
// process events into the REST API's exec events. Output is never buffered
// here: each event is handed on as it arrives, so a slow API client slows the
// guest process down (HTTP/2 flow control) instead of growing the daemon.
import { ConnectError, Code } from '@connectrpc/connect';
import type { ExecEvent, ExecRequest, ExecResult } from '@capsule/protocol';
import { isErrorCode, limits } from '@capsule/protocol';
import { exitCodeForSignal, Signal, signalFromStatus } from '@capsule/protocol/agent';
import type { AgentClient } from './client.js';
import { CapsuleError } from '../errors.js';

export function basicAuthForUser(user: string): string {
  return `Basic ${Buffer.from(`${user}:`).toString('base64')}`;
}

/** Yields API exec events for one command; the last one is always `exit` or `error`. */
export async function* execEvents(agent: AgentClient, request: ExecRequest, signal: AbortSignal): AsyncGenerator<ExecEvent> {
  const started = Date.now();
  const [cmd, ...args] = request.cmd;
  if (cmd === undefined || cmd === '')
    throw new CapsuleError('invalid_argument', 'the command is empty', { hint: 'pass the program and its arguments, e.g. ["echo", "hi"]' });
  const abort = new AbortController();
  let pid: number | undefined;
  // A client that goes away takes its command with it: nothing is left running unobserved.
  const onAbort = () => {
    if (pid !== undefined) void killQuietly(agent, pid);
    abort.abort(signal.reason);
  };
  signal.addEventListener('abort', onAbort, { once: true });
  let timedOut = false;
  const timer = request.timeoutMs
    ? setTimeout(() => {
        timedOut = true;
        if (pid !== undefined) void killQuietly(agent, pid);
        else abort.abort(new Error('timeout'));
      }, request.timeoutMs)
    : undefined;
  const headers: Record<string, string> = {};
  if (request.user !== undefined) headers.authorization = basicAuthForUser(request.user);
  try {
    const stream = agent.process.start(
      {
        process: { cmd, args, envs: request.env ?? {}, cwd: request.cwd },
        stdin: request.stdin !== undefined,
      },
      { signal: abort.signal, headers },
    );
    // The stream is read to its very end even after the end event: leaving its
    // last frame unread would leave the guest mid-write, and a write pending in
    // the guest when the connection goes (a snapshot, a daemon restart) reaches
    // the next connection and breaks it.
    let final: ExecEvent | undefined;
    for await (const response of stream) {
      const event = response.event?.event;
      if (!event || final) continue;
      switch (event.case) {
        case 'start':
          pid = event.value.pid;
          yield { type: 'start', pid };
          if (request.stdin !== undefined) await sendStdin(agent, pid, request.stdin);
          break;
        case 'data': {
          const output = event.value.output;
          if (output.case === 'stdout' || output.case === 'pty')
            yield { type: 'stdout', data: Buffer.from(output.value).toString('base64') };
          else if (output.case === 'stderr') yield { type: 'stderr', data: Buffer.from(output.value).toString('base64') };
          break;
        }
        case 'end':
          final = endEvent(event.value, timedOut ? request.timeoutMs : undefined, Date.now() - started);
          break;
        case 'keepalive':
          break;
      }
    }
    yield final ?? { type: 'error', code: 'agent_protocol_error', message: 'the agent ended the process stream without an end event' };
  } catch (err) {
    yield errorEvent(err, timedOut ? request.timeoutMs : undefined);
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
  }
}

/** The API event for the agent's end event. */
function endEvent(
  end: { exitCode: number; exited: boolean; status: string; error?: string | undefined },
  timedOutAfterMs: number | undefined,
  durationMs: number,
): ExecEvent {
  if (timedOutAfterMs !== undefined) {
    return {
      type: 'error',
      code: 'timeout',
      message: `the command ran longer than ${timedOutAfterMs} ms and was killed`,
      hint: 'raise timeoutMs, or 0 for no limit',
    };
  }
  const killedBy = end.exited ? undefined : signalFromStatus(end.status);
  if (killedBy) return { type: 'exit', exitCode: exitCodeForSignal(killedBy), signal: killedBy, durationMs };
  if (end.exited || end.exitCode >= 0) return { type: 'exit', exitCode: end.exitCode, durationMs };
  return {
    type: 'error',
    code: 'exec_failed',
    message: end.error ?? end.status,
    hint: 'check that the program exists in the sandbox and is executable',
  };
}

async function sendStdin(agent: AgentClient, pid: number, stdin: string): Promise<void> {
  const process = { selector: { case: 'pid' as const, value: pid } };
  if (stdin !== '') await agent.process.sendInput({ process, input: { input: { case: 'stdin', value: Buffer.from(stdin) } } });
  await agent.process.closeStdin({ process });
}

async function killQuietly(agent: AgentClient, pid: number): Promise<void> {
  try {
    await agent.process.sendSignal({ process: { selector: { case: 'pid', value: pid } }, signal: Signal.SIGKILL });
  } catch {
    // The process may have ended by itself meanwhile.
  }
}

/** Maps a failure of the agent call to an exec error event with a stable code. */
function errorEvent(err: unknown, timeoutMs: number | undefined): ExecEvent {
  if (timeoutMs !== undefined)
    return { type: 'error', code: 'timeout', message: `the command ran longer than ${timeoutMs} ms and was killed` };
  if (err instanceof CapsuleError) return { type: 'error', code: err.code, message: err.message, ...(err.hint ? { hint: err.hint } : {}) };
  if (err instanceof ConnectError) {
    switch (err.code) {
      case Code.NotFound:
        return { type: 'error', code: 'not_found', message: err.rawMessage, hint: 'check the command and cwd exist in the sandbox' };
      case Code.InvalidArgument:
        // The daemon validated the request's shape already, so this is the agent failing to start it.
        return {
          type: 'error',
          code: 'exec_failed',
          message: err.rawMessage,
          hint: 'check that the program exists in the sandbox and is executable',
        };
      case Code.PermissionDenied:
      case Code.Unauthenticated:
        return { type: 'error', code: 'invalid_argument', message: err.rawMessage, hint: 'check the user exists in the sandbox' };
      case Code.ResourceExhausted:
        return { type: 'error', code: 'agent_protocol_error', message: `the agent sent an oversized message: ${err.rawMessage}` };
      case Code.Canceled:
        return { type: 'error', code: 'timeout', message: 'the request was cancelled' };
      default:
        return {
          type: 'error',
          code: 'agent_unavailable',
          message: `the sandbox's agent failed: ${err.rawMessage}`,
          hint: 'see `capsule logs ID` for the guest console',
        };
    }
  }
  return { type: 'error', code: 'internal', message: err instanceof Error ? err.message : String(err) };
}

/** Collects a command's events into one result, keeping at most `limitBytes` per stream. */
export async function collectExec(events: AsyncIterable<ExecEvent>, limitBytes = limits.execOutputLimitBytes): Promise<ExecResult> {
  const out = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
  const size = { stdout: 0, stderr: 0 };
  const truncated = { stdout: false, stderr: false };
  for await (const event of events) {
    switch (event.type) {
      case 'stdout':
      case 'stderr': {
        const chunk = Buffer.from(event.data, 'base64');
        const room = limitBytes - size[event.type];
        if (chunk.length > room) truncated[event.type] = true;
        if (room > 0) {
          const kept = chunk.subarray(0, room);
          out[event.type].push(kept);
          size[event.type] += kept.length;
        }
        break;
      }
      case 'exit':
        return {
          exitCode: event.exitCode,
          ...(event.signal ? { signal: event.signal } : {}),
          stdout: Buffer.concat(out.stdout).toString('utf8'),
          stderr: Buffer.concat(out.stderr).toString('utf8'),
          stdoutTruncated: truncated.stdout,
          stderrTruncated: truncated.stderr,
          durationMs: event.durationMs,
        };
      case 'error':
        throw new CapsuleError(isErrorCode(event.code) ? event.code : 'internal', event.message, event.hint ? { hint: event.hint } : {});
      case 'start':
        break;
    }
  }
  throw new CapsuleError('agent_protocol_error', 'the exec stream ended without a result');
}
