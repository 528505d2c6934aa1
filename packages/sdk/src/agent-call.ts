// What every call to a sandbox's agent shares, for files, commands and PTYs
// alike: the options a caller may give (a signal, a request timeout, the Unix
// user) and how they become Connect call options and HTTP headers. The user
// travels as envd has it: `Authorization: Basic base64(user:)`.
import { Code, ConnectError, type CallOptions as ConnectCallOptions } from '@connectrpc/connect';
import { agentHeaders } from '@capsule/protocol/agent';
import type { AgentConnection } from './agent-connection.js';
import { errorFromAgentCall } from './agent-errors.js';
import type { CapsuleClient } from './client.js';
import { CapsuleError, InvalidArgumentError } from './errors.js';

export interface AgentRequestOptions {
  signal?: AbortSignal;
  /** How long to wait for the agent's answer, in ms; 0 means forever. Default: the client's requestTimeoutMs (60 s). */
  requestTimeoutMs?: number;
}

export interface AgentUserOptions extends AgentRequestOptions {
  /**
   * The Unix user the operation runs as in the sandbox: it owns what is
   * created, and relative paths and `~` are under its home. Default: the
   * sandbox's default user (root).
   */
  user?: string;
}

/** Idle streams (a quiet process, a watch) get a keepalive this often, in seconds. */
const STREAM_KEEPALIVE_SECONDS = 30;

export function userAuthorization(user: string | undefined): Record<string, string> {
  if (user === undefined) return {};
  if (user === '' || user.includes(':') || user.includes('\n')) {
    throw new InvalidArgumentError('invalid_argument', `invalid user name ${JSON.stringify(user.slice(0, 64))}`, {
      hint: 'name a Unix user of the sandbox, e.g. "root" or "user"',
    });
  }
  return { [agentHeaders.authorization]: `Basic ${Buffer.from(`${user}:`).toString('base64')}` };
}

/**
 * Connect options for one agent call: a unary call is bounded by
 * `requestTimeoutMs`; a stream (`timeoutMs`) by its own limit, or none.
 */
export function connectCallOptions(
  options: AgentUserOptions,
  defaultTimeoutMs: number,
  stream?: { timeoutMs: number | undefined },
): ConnectCallOptions {
  const timeoutMs = stream ? stream.timeoutMs : (options.requestTimeoutMs ?? defaultTimeoutMs);
  return {
    ...(options.signal && { signal: options.signal }),
    ...(timeoutMs !== undefined && timeoutMs > 0 && { timeoutMs }),
    headers: {
      ...userAuthorization(options.user),
      ...(stream && { [agentHeaders.keepalivePingInterval]: String(STREAM_KEEPALIVE_SECONDS) }),
    },
  };
}

/**
 * One sandbox's agent as files, commands (and PTYs) call it: the connection,
 * the client's request timeout, and the translation of failures into typed
 * errors. A stream the daemon refused before the agent saw it carries only an
 * HTTP status, and a refusal of a unary call only a Connect code; the daemon
 * is then asked what is wrong with the sandbox (one more request, on failures only).
 */
export class SandboxAgent {
  readonly client: CapsuleClient;
  readonly sandboxId: string;

  constructor(client: CapsuleClient, sandboxId: string) {
    this.client = client;
    this.sandboxId = sandboxId;
  }

  /** Made on first use, so that a Sandbox over a custom transport fails only when it reaches for the agent. */
  get connection(): AgentConnection {
    return this.client.agent(this.sandboxId);
  }

  get requestTimeoutMs(): number {
    return this.client.requestTimeoutMs;
  }

  /** The error to throw for a failed call; `what` says what was attempted (`stat /etc/x`). */
  async failure(error: unknown, what: string, signal?: AbortSignal): Promise<unknown> {
    const mapped = errorFromAgentCall(error, what, signal);
    // What the daemon's proxy answers for a sandbox that is missing (not found)
    // or not running (failed precondition), indistinguishable on the wire from
    // the agent's own answers; the daemon then says which it was.
    const maybeDaemon =
      error instanceof ConnectError &&
      (/^HTTP \d{3}$/.test(error.rawMessage) || error.code === Code.FailedPrecondition || error.code === Code.NotFound);
    if (maybeDaemon && !signal?.aborted) {
      return (await this.sandboxRefusal(signal)) ?? mapped;
    }
    return mapped;
  }

  /** Why the daemon would refuse calls to this sandbox's agent (missing, not running), or undefined when it runs. */
  async sandboxRefusal(signal?: AbortSignal): Promise<CapsuleError | undefined> {
    let info;
    try {
      info = await this.client.getSandbox(this.sandboxId, signal ? { signal } : {});
    } catch (error) {
      if (error instanceof CapsuleError) return error;
      throw error;
    }
    if (info.state === 'running') return undefined;
    return new CapsuleError('sandbox_not_running', `sandbox ${info.id} is ${info.state}, not running`, {
      hint: info.state === 'paused' ? `resume it with \`capsule resume ${info.id}\`` : undefined,
    });
  }
}
