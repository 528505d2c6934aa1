// The SDK's error family. Wire codes from the daemon (see @capsule/protocol
// errors.ts) are mapped to classes in `errorClassByWireCode` and nowhere else;
// errors that happen on this side of the socket carry their own local codes.
import type { ErrorCode } from '@capsule/protocol';

/** Codes for failures detected by the client itself, never sent by the daemon. */
export type LocalErrorCode =
  | 'daemon_unreachable'
  /** The daemon's TLS certificate is not the pinned or trusted one. */
  | 'tls_untrusted'
  | 'connection_lost'
  | 'request_timeout'
  | 'protocol_error'
  | 'command_exit'
  /** A command handle was disconnected before the command ended. */
  | 'disconnected'
  /** A file read as text or bytes is larger than the client accepts whole. */
  | 'file_too_large';

/**
 * Codes of failures reported by a sandbox's agent (envd's Connect codes and
 * /files statuses) that have no daemon code of their own; see agent-errors.ts.
 */
export type AgentErrorCode =
  | 'already_exists'
  | 'failed_precondition'
  | 'resource_exhausted'
  | 'unimplemented'
  | 'not_enough_space'
  | 'canceled';

export interface CapsuleErrorDetails {
  hint?: string | undefined;
  /** HTTP status of the response that carried the error, when there was one. */
  status?: number | undefined;
  cause?: unknown;
}

export class CapsuleError extends Error {
  override name = 'CapsuleError';
  /** A wire code from the daemon, a LocalErrorCode, or a code this SDK version does not know yet. */
  readonly code: ErrorCode | LocalErrorCode | AgentErrorCode | (string & {});
  readonly hint: string | undefined;
  readonly status: number | undefined;

  constructor(code: CapsuleError['code'], message: string, details: CapsuleErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    this.hint = details.hint;
    this.status = details.status;
  }
}

export class NotFoundError extends CapsuleError {
  override name = 'NotFoundError';
}

export class InvalidArgumentError extends CapsuleError {
  override name = 'InvalidArgumentError';
}

/** The daemon gave up on an operation (`timeout`), or it did not answer within `requestTimeoutMs`. */
export class TimeoutError extends CapsuleError {
  override name = 'TimeoutError';
}

/** The daemon could not be reached, or the connection broke mid-response. */
export class ConnectionError extends CapsuleError {
  override name = 'ConnectionError';
}

/** A command ran and ended with a non-zero exit code or a signal. */
export class CommandExitError extends CapsuleError {
  override name = 'CommandExitError';
  readonly exitCode: number;
  readonly signal: string | undefined;
  readonly stdout: string;
  readonly stderr: string;

  constructor(result: { exitCode: number; signal?: string | undefined; stdout: string; stderr: string }) {
    const how = result.signal ? `was killed by ${result.signal}` : `exited with code ${result.exitCode}`;
    const lastStderrLine = result.stderr.trimEnd().split('\n').pop();
    super('command_exit', `Command ${how}${lastStderrLine ? `: ${lastStderrLine}` : ''}`);
    this.exitCode = result.exitCode;
    this.signal = result.signal;
    this.stdout = result.stdout;
    this.stderr = result.stderr;
  }
}

type WireErrorClass = new (code: string, message: string, details?: CapsuleErrorDetails) => CapsuleError;

/**
 * The one table from wire codes to classes. It is keyed by every ErrorCode, so
 * a code added to the protocol fails to compile here until it is mapped.
 */
const errorClassByWireCode: Record<ErrorCode, WireErrorClass> = {
  invalid_argument: InvalidArgumentError,
  unauthenticated: CapsuleError,
  permission_denied: CapsuleError,
  not_found: NotFoundError,
  sandbox_not_found: NotFoundError,
  template_not_found: NotFoundError,
  name_taken: CapsuleError,
  sandbox_not_running: CapsuleError,
  sandbox_not_stopped: CapsuleError,
  template_not_ready: CapsuleError,
  template_in_use: CapsuleError,
  exec_failed: CapsuleError,
  insufficient_resources: CapsuleError,
  vm_start_failed: CapsuleError,
  agent_unavailable: CapsuleError,
  agent_protocol_error: CapsuleError,
  timeout: TimeoutError,
  internal: CapsuleError,
  image_not_found: NotFoundError,
  image_in_use: CapsuleError,
  image_invalid: CapsuleError,
  image_digest_mismatch: CapsuleError,
  image_platform_unsupported: CapsuleError,
  registry_auth_failed: CapsuleError,
  registry_unreachable: CapsuleError,
  build_step_failed: CapsuleError,
  port_not_listening: CapsuleError,
  host_port_unavailable: CapsuleError,
  too_many_tunnels: CapsuleError,
  template_start_failed: CapsuleError,
  insufficient_storage: CapsuleError,
  request_timeout: TimeoutError,
  sandbox_reattaching: CapsuleError,
  volume_not_found: NotFoundError,
  volume_in_use: CapsuleError,
  csrf_token_invalid: CapsuleError,
  workload_not_found: NotFoundError,
  ssh_unavailable: CapsuleError,
  capacity: CapsuleError,
};

/** Builds the typed error for a `{code, message, hint}` the daemon sent. */
export function errorFromWire(wire: { code: string; message: string; hint?: string | undefined }, status?: number): CapsuleError {
  const ErrorClass = Object.hasOwn(errorClassByWireCode, wire.code) ? errorClassByWireCode[wire.code as ErrorCode] : CapsuleError;
  return new ErrorClass(wire.code, wire.message, { hint: wire.hint, status });
}
