// The one table of Capsule's error codes. The daemon maps each code to an HTTP
// status here and nowhere else; clients map the same codes back to typed
// errors. Codes are stable: add new ones, never rename or reuse old ones.

export const errorCodes = {
  invalid_argument: 400,
  unauthenticated: 401,
  permission_denied: 403,
  not_found: 404,
  sandbox_not_found: 404,
  template_not_found: 404,
  name_taken: 409,
  sandbox_not_running: 409,
  /** Its resources change only while it is stopped. */
  sandbox_not_stopped: 409,
  template_not_ready: 409,
  template_in_use: 409,
  exec_failed: 422,
  insufficient_resources: 507,
  vm_start_failed: 500,
  agent_unavailable: 502,
  agent_protocol_error: 502,
  timeout: 504,
  internal: 500,
  image_not_found: 404,
  image_in_use: 409,
  image_invalid: 422,
  image_digest_mismatch: 422,
  image_platform_unsupported: 422,
  registry_auth_failed: 403,
  registry_unreachable: 502,
  build_step_failed: 422,
  /** Nothing listens on that port inside the sandbox (a proxied request or a tunnel). */
  port_not_listening: 502,
  /** A published host port is taken by another sandbox or process. */
  host_port_unavailable: 409,
  /** The sandbox already has as many open tunnels (proxied connections) as allowed. */
  too_many_tunnels: 429,
  template_start_failed: 422,
  /** Free disk under the state or cache folder is below the reserve the daemon keeps (CAPSULE_DISK_RESERVE_MIB). */
  insufficient_storage: 507,
  /** The client took too long to send its request (its head, or a body to the daemon's own routes). */
  request_timeout: 408,
  /** The daemon restarted and has not reattached to this running sandbox yet: retry shortly. */
  sandbox_reattaching: 503,
  volume_not_found: 404,
  /** A live sandbox holds the volume (one writer, or readers only), or a fork or snapshot would copy a writer. */
  volume_in_use: 409,
  /** A dashboard session's mutation came without its CSRF token (X-CSRF-Token), or with another session's. */
  csrf_token_invalid: 403,
  workload_not_found: 404,
  /** The sandbox has no SSH server to start (its template lacks OpenSSH's sshd). */
  ssh_unavailable: 422,
  /**
   * The host has no room for one more sandbox right now (the memory budget, or the host's free
   * memory, is taken by others): retry after the Retry-After seconds, or once sandboxes end.
   * A request that could never fit is `insufficient_resources` instead.
   */
  capacity: 429,
} as const;

/** Seconds a client should wait before retrying, sent as Retry-After with these codes. */
export const retryAfterSeconds: Partial<Record<ErrorCode, number>> = {
  capacity: 2,
  sandbox_reattaching: 1,
  too_many_tunnels: 1,
};

export type ErrorCode = keyof typeof errorCodes;

export function httpStatusOf(code: ErrorCode): number {
  return errorCodes[code];
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(errorCodes, value);
}

/** The JSON body of every error response. */
export interface ErrorBody {
  error: { code: ErrorCode; message: string; hint?: string };
}
