// The daemon's reverse proxy to each sandbox's agent: an HTTP/1.1 request from
// an API client becomes a request on the agent's HTTP/2 session, both bodies
// streamed with backpressure so neither a fast client nor a flooding guest
// makes the daemon buffer. Two ways to name the sandbox:
//   by path:   /v1/sandboxes/{id}/envd/<agent path>   (our SDK and CLI)
//   by header: E2b-Sandbox-Id: {id}, the agent path as is (the e2b SDK pointed
//              at the daemon through E2B_SANDBOX_URL)
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import type { ClientHttp2Stream, IncomingHttpHeaders as Http2Headers, OutgoingHttpHeaders } from 'node:http2';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { TRAFFIC_TOKEN_HEADER, type ErrorCode } from '@capsule/protocol';
import { bulkHeaders } from '@capsule/protocol/agent';
import { cancelAgentStream } from '../agent/client.js';
import { CapsuleError } from '../errors.js';
import { basicAuthForUser } from '../agent/exec.js';

export const SANDBOX_ID_HEADER = 'e2b-sandbox-id';
export const ACCESS_TOKEN_HEADER = 'x-access-token';
const PATH_FORM = /^\/v1\/sandboxes\/([^/?#]{1,128})\/envd(\/[^?#]*)?(\?.*)?$/;
const SANDBOX_ID = /^[A-Za-z0-9_.-]{1,128}$/;

export interface AgentTarget {
  sandboxId: string;
  /** The path and query to request from the agent. */
  path: string;
  /** Which client convention the request follows; errors are shaped for it. */
  form: 'path' | 'header';
}

/**
 * Whether a request is for a sandbox's agent, and which; undefined for the
 * daemon's own routes. Throws invalid_argument for one that names a sandbox badly.
 */
export function agentTarget(url: string, headers: IncomingHttpHeaders): AgentTarget | undefined {
  const byPath = PATH_FORM.exec(url);
  if (byPath) return { sandboxId: decodePathSegment(byPath[1] ?? ''), path: `${byPath[2] || '/'}${byPath[3] ?? ''}`, form: 'path' };
  const header = headers[SANDBOX_ID_HEADER];
  if (typeof header !== 'string') return undefined;
  // The agent is asked for an origin-form path only; `*` or an absolute URL means nothing there.
  if (!url.startsWith('/')) throw new CapsuleError('invalid_argument', `"${url.slice(0, 80)}" is not a path the agent serves`, { hint: 'send the agent path, e.g. /health' });
  return { sandboxId: header, path: url, form: 'header' };
}

/** A percent-encoded path segment; a malformed encoding is the caller's error, not the daemon's. */
export function decodePathSegment(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    throw new CapsuleError('invalid_argument', `"${value.slice(0, 80)}" is not a valid URL path segment`, { hint: 'percent-encode the sandbox id, or name it plainly' });
  }
}

export function isValidSandboxId(id: string): boolean {
  return SANDBOX_ID.test(id);
}

/** Hop-by-hop headers (RFC 9110 §7.6.1) and those HTTP/2 forbids; never forwarded either way. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'host', 'http2-settings']);
/**
 * The daemon's credentials and routing headers: the guest never sees them;
 * and the bulk port's, which only the daemon may send or see. Cookies too:
 * the agent uses none, so any a client sends were meant for someone else.
 */
const DAEMON_ONLY = new Set([SANDBOX_ID_HEADER, 'e2b-sandbox-port', ACCESS_TOKEN_HEADER, TRAFFIC_TOKEN_HEADER, 'x-api-key', 'cookie', bulkHeaders.id, bulkHeaders.size]);

/**
 * `Authorization` reaches the agent only as envd's way of naming the user:
 * Basic with a user name and an empty password. Anything else (a Bearer API
 * key, a Basic password) is a credential the guest must never see.
 */
function namesUserOnly(authorization: string | string[]): boolean {
  const basic = typeof authorization === 'string' ? /^Basic ([A-Za-z0-9+/=]{1,400})$/.exec(authorization) : null;
  return basic !== null && /^[^:]*:$/.test(Buffer.from(basic[1] ?? '', 'base64').toString('utf8'));
}

/**
 * e2b's convention: a call that names no user runs as `user` (e2b SDKs stopped
 * sending it once envd learnt the default; our agent's own default is root).
 */
export const E2B_DEFAULT_USER = 'user';

/** The client's headers as the agent gets them; `defaultUser` applies when the client named no user. */
export function requestHeadersForAgent(headers: IncomingHttpHeaders, defaultUser?: string): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || DAEMON_ONLY.has(name) || name.startsWith(':')) continue;
    if (name === 'authorization' && !namesUserOnly(value)) continue;
    out[name] = value;
  }
  if (defaultUser !== undefined && out.authorization === undefined) out.authorization = basicAuthForUser(defaultUser);
  return out;
}

/** The agent's response headers as the client gets them: no pseudo-headers, nothing hop-by-hop, nothing that could set daemon credentials. */
export function responseHeadersForClient(headers: Http2Headers): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name.startsWith(':') || HOP_BY_HOP.has(name) || DAEMON_ONLY.has(name) || name === 'set-cookie') continue;
    out[name] = value;
  }
  return out;
}

/** The agent's status, if it is a real HTTP status; a guest could send anything. */
export function validStatus(value: unknown): number | undefined {
  const status = Number(value);
  return Number.isInteger(status) && status >= 200 && status <= 599 ? status : undefined;
}

/**
 * The Connect code (as Connect's JSON error names it) for a daemon error, so
 * that Connect clients of the path form read the daemon's own refusals
 * (sandbox missing, stopped, no key) as typed errors rather than "unknown".
 */
export function connectCodeOf(code: ErrorCode): string {
  switch (code) {
    case 'invalid_argument':
      return 'invalid_argument';
    case 'unauthenticated':
      return 'unauthenticated';
    case 'permission_denied':
      return 'permission_denied';
    case 'sandbox_not_found':
    case 'not_found':
      return 'not_found';
    case 'sandbox_not_running':
      return 'failed_precondition';
    case 'agent_unavailable':
      return 'unavailable';
    case 'timeout':
      return 'deadline_exceeded';
    default:
      return 'internal';
  }
}

export interface ProxyFailure {
  status: number;
  message: string;
}

/**
 * Forwards the request's `body` to the agent on `stream` (already opened with
 * the method, path and headers) and the answer back to `res`. Resolves when both directions are
 * done; rejects with a ProxyFailure only while nothing has been sent to the
 * client yet, so the caller can still answer with an error.
 */
export async function relay(body: Readable, res: ServerResponse, stream: ClientHttp2Stream): Promise<void> {
  const cancel = cancelWithClient(res, stream);
  const upload = pipeline(body, stream).catch(() => cancel());
  const { status, headers } = await agentResponse(stream);
  await sendAgentResponse(res, stream, status, headers);
  await upload;
}

/** Closes the agent request when the client leaves (a client that leaves takes its agent request with it); returns the closer. */
export function cancelWithClient(res: ServerResponse, stream: ClientHttp2Stream): () => void {
  const cancel = () => cancelAgentStream(stream);
  res.once('close', cancel);
  // A late 'error' is never unhandled: AgentClient listens on every stream it opens.
  return cancel;
}

/** The agent's answer's status and headers; rejects with a ProxyFailure when there is none or it is not HTTP. */
export async function agentResponse(stream: ClientHttp2Stream): Promise<{ status: number; headers: Http2Headers }> {
  const headers = await new Promise<Http2Headers>((resolve, reject) => {
    stream.once('response', resolve);
    stream.once('error', (err: Error) => reject({ status: 502, message: `the sandbox's agent failed the request: ${err.message}` } satisfies ProxyFailure));
    stream.once('close', () => reject({ status: 502, message: "the sandbox's agent closed the request without an answer" } satisfies ProxyFailure));
  });
  const status = validStatus(headers[':status']);
  if (status === undefined) {
    cancelAgentStream(stream);
    throw { status: 502, message: `the sandbox's agent sent an invalid HTTP status (${String(headers[':status']).slice(0, 20)})` } satisfies ProxyFailure;
  }
  return { status, headers };
}

/** Relays the agent's answer (head, body, trailers) to the client. */
export async function sendAgentResponse(res: ServerResponse, stream: ClientHttp2Stream, status: number, headers: Http2Headers): Promise<void> {
  stream.on('trailers', (trailers: Http2Headers) => res.addTrailers(responseHeadersForClient(trailers)));
  res.writeHead(status, responseHeadersForClient(headers));
  try {
    await pipeline(stream, res);
  } catch {
    // Either side went away mid-answer: nothing more can be told to the client.
    res.destroy();
  }
}
