// Failures of a sandbox's agent, as the SDK's typed errors: Connect codes of
// the process and filesystem services, and the HTTP statuses of /files (envd's
// `{code, message}` from the agent, or the daemon's own `{error}` when the
// proxy refused). These two tables are the only place agent failures are mapped.
import { Code, ConnectError } from '@connectrpc/connect';
import {
  CapsuleError,
  ConnectionError,
  InvalidArgumentError,
  NotFoundError,
  TimeoutError,
  errorFromWire,
  type AgentErrorCode,
  type CapsuleErrorDetails,
} from './errors.js';
import type { ErrorCode } from '@capsule/protocol';

type ErrorClass = new (code: string, message: string, details?: CapsuleErrorDetails) => CapsuleError;
interface Mapping {
  code: ErrorCode | AgentErrorCode;
  ErrorClass: ErrorClass;
  hint?: string;
}

const UNKNOWN_USER_HINT = 'name a user that exists in the sandbox (see its /etc/passwd), or leave `user` unset for the default';
const AGENT_DOWN_HINT = 'check the sandbox with `capsule inspect ID` and its console with `capsule logs ID`';

const byConnectCode: Record<Code, Mapping> = {
  [Code.Canceled]: { code: 'canceled', ErrorClass: CapsuleError },
  [Code.Unknown]: { code: 'internal', ErrorClass: CapsuleError },
  [Code.InvalidArgument]: { code: 'invalid_argument', ErrorClass: InvalidArgumentError },
  [Code.DeadlineExceeded]: { code: 'timeout', ErrorClass: TimeoutError },
  [Code.NotFound]: { code: 'not_found', ErrorClass: NotFoundError },
  [Code.AlreadyExists]: { code: 'already_exists', ErrorClass: CapsuleError },
  [Code.PermissionDenied]: { code: 'permission_denied', ErrorClass: CapsuleError },
  [Code.ResourceExhausted]: { code: 'resource_exhausted', ErrorClass: CapsuleError },
  // The daemon's proxy says this of a sandbox that is paused or stopped.
  [Code.FailedPrecondition]: {
    code: 'failed_precondition',
    ErrorClass: CapsuleError,
    hint: 'check the sandbox is running with `capsule inspect ID`',
  },
  [Code.Aborted]: { code: 'internal', ErrorClass: CapsuleError },
  [Code.OutOfRange]: { code: 'invalid_argument', ErrorClass: InvalidArgumentError },
  [Code.Unimplemented]: { code: 'unimplemented', ErrorClass: CapsuleError, hint: "the sandbox's agent does not support this call" },
  [Code.Internal]: { code: 'internal', ErrorClass: CapsuleError },
  [Code.Unavailable]: { code: 'agent_unavailable', ErrorClass: CapsuleError, hint: AGENT_DOWN_HINT },
  [Code.DataLoss]: { code: 'internal', ErrorClass: CapsuleError },
  [Code.Unauthenticated]: { code: 'unauthenticated', ErrorClass: CapsuleError, hint: UNKNOWN_USER_HINT },
};

const byFilesStatus: Record<number, Mapping> = {
  400: { code: 'invalid_argument', ErrorClass: InvalidArgumentError },
  401: { code: 'unauthenticated', ErrorClass: CapsuleError, hint: UNKNOWN_USER_HINT },
  403: { code: 'permission_denied', ErrorClass: CapsuleError },
  404: { code: 'not_found', ErrorClass: NotFoundError },
  502: { code: 'agent_unavailable', ErrorClass: CapsuleError, hint: AGENT_DOWN_HINT },
  504: { code: 'timeout', ErrorClass: TimeoutError },
  507: {
    code: 'not_enough_space',
    ErrorClass: CapsuleError,
    hint: 'free space in the sandbox, or create it from a template with a larger disk',
  },
};

/** Node's codes for a daemon that is not there at all. */
const unreachableCodes = new Set(['ENOENT', 'ECONNREFUSED', 'EACCES', 'EPERM', 'ENOTSOCK', 'EHOSTUNREACH', 'ENOTFOUND']);

/**
 * The error a caller sees for a failed agent call: the abort reason when the
 * caller's signal fired, a CapsuleError as is, a ConnectError mapped by its
 * code with `what` (e.g. `stat /etc/x`) in front of the agent's message.
 */
export function errorFromAgentCall(error: unknown, what: string, signal?: AbortSignal): unknown {
  if (signal?.aborted) return signal.reason;
  if (error instanceof CapsuleError) return error;
  if (!(error instanceof ConnectError)) return error;
  const causeCode = (error.cause as NodeJS.ErrnoException | undefined)?.code;
  if (error.code === Code.Unavailable && causeCode !== undefined && unreachableCodes.has(causeCode)) {
    return new ConnectionError('daemon_unreachable', `Cannot reach capsuled (${causeCode}) to ${what}`, {
      hint: 'Start the daemon with `capsule daemon start`',
      cause: error,
    });
  }
  const mapping = byConnectCode[error.code] ?? byConnectCode[Code.Unknown];
  return new mapping.ErrorClass(mapping.code, `${what}: ${error.rawMessage}`, { hint: mapping.hint, cause: error });
}

/** The error for a /files answer that is not a success, from its status and body (at most a few KiB are read). */
export function errorFromFilesResponse(status: number, bodyText: string, what: string): CapsuleError {
  let body: unknown;
  try {
    body = JSON.parse(bodyText);
  } catch {
    body = undefined;
  }
  const daemonError = (body as { error?: unknown } | undefined)?.error;
  if (typeof daemonError === 'object' && daemonError !== null) {
    const { code, message, hint } = daemonError as { code?: unknown; message?: unknown; hint?: unknown };
    if (typeof code === 'string' && typeof message === 'string') {
      return errorFromWire({ code, message, hint: typeof hint === 'string' ? hint : undefined }, status);
    }
  }
  const agentMessage = (body as { message?: unknown } | undefined)?.message;
  const detail = typeof agentMessage === 'string' ? agentMessage : bodyText.trim();
  const mapping: Mapping = byFilesStatus[status] ?? { code: 'internal', ErrorClass: CapsuleError };
  // The agent's text is the guest's: kept short, so a hostile one cannot flood a log line.
  return new mapping.ErrorClass(mapping.code, `${what}: ${detail.slice(0, 500) || `HTTP ${status}`}`, { hint: mapping.hint, status });
}
