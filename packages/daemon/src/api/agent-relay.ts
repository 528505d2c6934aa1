// How one request crosses between an API client's HTTP/1.1 and a sandbox
// agent's HTTP/2: which headers may cross (never the daemon's credentials or
// routing headers), and the relay of both bodies with backpressure, so neither
// a fast client nor a flooding guest makes the daemon buffer. Deciding which
// sandbox a request is for, and whether it may go, is agent-proxy.ts's job.
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import type { ClientHttp2Stream, IncomingHttpHeaders as Http2Headers, OutgoingHttpHeaders } from 'node:http2';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { TRAFFIC_TOKEN_HEADER } from '@capsule/protocol';
import { bulkHeaders } from '@capsule/protocol/agent';
import { cancelAgentStream } from '../agent/client.js';
import { basicAuthForUser } from '../agent/exec.js';

/** The header form's sandbox id (e2b's SDK names a sandbox's agent by it). */
export const SANDBOX_ID_HEADER = 'e2b-sandbox-id';
export const ACCESS_TOKEN_HEADER = 'x-access-token';

/** Hop-by-hop headers (RFC 9110 §7.6.1) and those HTTP/2 forbids; never forwarded either way. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'te',
  'trailer',
  'host',
  'http2-settings',
]);
/**
 * The daemon's credentials and routing headers: the guest never sees them;
 * and the bulk port's, which only the daemon may send or see. Cookies too:
 * the agent uses none, so any a client sends were meant for someone else.
 */
const DAEMON_ONLY = new Set([
  SANDBOX_ID_HEADER,
  'e2b-sandbox-port',
  ACCESS_TOKEN_HEADER,
  TRAFFIC_TOKEN_HEADER,
  'x-api-key',
  'cookie',
  bulkHeaders.id,
  bulkHeaders.size,
]);

/**
 * `Authorization` reaches the agent only as envd's way of naming the user:
 * Basic with a user name and an empty password. Anything else (a Bearer API
 * key, a Basic password) is a credential the guest must never see.
 */
function namesUserOnly(authorization: string | string[]): boolean {
  const basic = typeof authorization === 'string' ? /^Basic ([A-Za-z0-9+/=]{1,400})$/.exec(authorization) : null;
  return basic !== null && /^[^:]*:$/.test(Buffer.from(basic[1] ?? '', 'base64').toString('utf8'));
}

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

/**
 * The head of an agent's answer as the client gets it: the guest's headers,
 * and what keeps a browser from running the guest's bytes as a page of the
 * daemon's origin, where the dashboard's session cookie works (a file served
 * as text/html, opened from the file browser): a sandboxing CSP with nothing
 * allowed, and no content sniffing. API clients ignore both.
 */
export function guestAnswerHeaders(headers: Http2Headers): Record<string, string | string[]> {
  return {
    ...responseHeadersForClient(headers),
    'content-security-policy': "sandbox; default-src 'none'",
    'x-content-type-options': 'nosniff',
  };
}

/** The agent's status, if it is a real HTTP status; a guest could send anything. */
export function validStatus(value: unknown): number | undefined {
  const status = Number(value);
  return Number.isInteger(status) && status >= 200 && status <= 599 ? status : undefined;
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
    stream.once('error', (err: Error) =>
      reject({ status: 502, message: `the sandbox's agent failed the request: ${err.message}` } satisfies ProxyFailure),
    );
    stream.once('close', () =>
      reject({ status: 502, message: "the sandbox's agent closed the request without an answer" } satisfies ProxyFailure),
    );
  });
  const status = validStatus(headers[':status']);
  if (status === undefined) {
    cancelAgentStream(stream);
    throw {
      status: 502,
      message: `the sandbox's agent sent an invalid HTTP status (${String(headers[':status']).slice(0, 20)})`,
    } satisfies ProxyFailure;
  }
  return { status, headers };
}

/** Relays the agent's answer (head, body, trailers) to the client. */
export async function sendAgentResponse(
  res: ServerResponse,
  stream: ClientHttp2Stream,
  status: number,
  headers: Http2Headers,
): Promise<void> {
  stream.on('trailers', (trailers: Http2Headers) => res.addTrailers(responseHeadersForClient(trailers)));
  res.writeHead(status, guestAnswerHeaders(headers));
  try {
    await pipeline(stream, res);
  } catch {
    // Either side went away mid-answer: nothing more can be told to the client.
    res.destroy();
  }
}
