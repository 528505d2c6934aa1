// Reaching services inside sandboxes through the daemon, over tunnels on the
// agent channel (no guest network needed). Three ways in:
//   by host name: Host `<port>-<sandboxId>.<domain>` (e2b's getHost), any path
//   by path:      /v1/sandboxes/{id}/ports/{port}/<path>
//   raw TCP:      an Upgrade of /v1/sandboxes/{id}/tunnel/{port} (port-forward)
// HTTP requests are spoken as HTTP/1.1 over the tunnel (one tunnel per request);
// upgrades (WebSocket) become byte relays once the service's answer head is rewritten. Over TCP the caller needs the
// sandbox's traffic token or an API key. The daemon's own refusals carry
// PORT_ERROR_HEADER so that they read apart from the service's answers.
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  httpStatusOf,
  PORT_ERROR_HEADER,
  PORT_TUNNEL_UPGRADE,
  TRAFFIC_TOKEN_HEADER,
  type ErrorBody,
  type ErrorCode,
  SESSION_COOKIE,
} from '@capsule/protocol';
import { CapsuleError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { closeWhenIdle, defaultTunnelIdleLimits, joinToTunnel, parseGuestPort, type Tunnels } from '../sandboxes/tunnels.js';
import { decodePathSegment, isValidSandboxId } from './agent-proxy.js';
import { withoutCookie } from './dashboard-sessions.js';
import { ACCESS_TOKEN_HEADER } from './agent-relay.js';
import type { ApiKeys, SandboxTokens } from './credentials.js';

/** The port e2b's SDK reaches envd on: by host name it means the sandbox's agent, as with e2b. */
export const ENVD_PORT = 49983;

const PATH_FORM = /^\/v1\/sandboxes\/([^/?#]{1,128})\/ports\/([^/?#]*)(\/[^?#]*)?(\?.*)?$/;
const TUNNEL_FORM = /^\/v1\/sandboxes\/([^/?#]{1,128})\/tunnel\/([^/?#]*)\/?$/;
const HOST_LABEL = /^(\d{1,5})-([a-z0-9][a-z0-9_-]{0,127})$/;

/** Hop-by-hop headers (RFC 9110 §7.6.1): never forwarded either way on a plain request. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'transfer-encoding',
  'upgrade',
  'te',
  'trailer',
  'expect',
]);
/** The daemon's credentials: the service never sees them. */
const CREDENTIALS = new Set([TRAFFIC_TOKEN_HEADER, 'x-api-key', ACCESS_TOKEN_HEADER]);
/**
 * `Authorization` belongs to the service, except when it carries a daemon API
 * key (the form e2b clients send as a bearer): that one is never passed on.
 */
const DAEMON_KEY_BEARER = /^\s*Bearer\s+e2b_[0-9a-f]{32,128}\s*$/i;

export type PortTarget =
  | { kind: 'http'; sandboxId: string; port: number; path: string; form: 'host' | 'path' }
  | { kind: 'tunnel'; sandboxId: string; port: number };

/** A request that names a port but badly: answered with this error. */
export class PortTargetError extends CapsuleError {}

/** The domain's host name, without a port. */
function hostOnly(host: string): string {
  return host.replace(/:\d{1,5}$/, '');
}

/**
 * Whether a request is for a sandbox's port, and which. Undefined for
 * everything else (the daemon's own API, the agent proxy); throws
 * PortTargetError for a port request that is malformed.
 */
export function portTarget(url: string, host: string | undefined, domain: string): PortTarget | undefined {
  const byPath = PATH_FORM.exec(url);
  if (byPath) {
    const sandboxId = decodedSegment(byPath[1] ?? '');
    return { kind: 'http', sandboxId, port: guestPort(byPath[2] ?? ''), path: `${byPath[3] || '/'}${byPath[4] ?? ''}`, form: 'path' };
  }
  const tunnel = TUNNEL_FORM.exec(url);
  if (tunnel) return { kind: 'tunnel', sandboxId: decodedSegment(tunnel[1] ?? ''), port: guestPort(tunnel[2] ?? '') };

  if (host === undefined) return undefined;
  const name = hostOnly(host.trim().toLowerCase());
  const suffix = `.${hostOnly(domain)}`;
  if (!name.endsWith(suffix)) return undefined;
  const label = name.slice(0, -suffix.length);
  const match = HOST_LABEL.exec(label);
  if (!match) {
    throw new PortTargetError('invalid_argument', `"${label.slice(0, 80)}" is not a sandbox port host name`, {
      hint: `reach a port as <port>-<sandboxId>.${domain}`,
    });
  }
  return {
    kind: 'http',
    sandboxId: match[2] ?? '',
    port: guestPort(match[1] ?? ''),
    path: url.startsWith('/') ? url : `/${url}`,
    form: 'host',
  };
}

function decodedSegment(value: string): string {
  try {
    return decodePathSegment(value);
  } catch (err) {
    throw new PortTargetError('invalid_argument', (err as CapsuleError).message, { hint: (err as CapsuleError).hint });
  }
}

function guestPort(value: string): number {
  try {
    return parseGuestPort(value);
  } catch (err) {
    throw new PortTargetError('invalid_argument', (err as Error).message, { hint: 'ports inside a sandbox are from 1 to 65535' });
  }
}

export interface PortProxyContext {
  tunnels: Tunnels;
  tokens: SandboxTokens;
  apiKeys: ApiKeys;
  domain: string;
  log: Logger;
}

/**
 * Over TCP: the sandbox's traffic token, or an API key in X-API-Key. Not
 * `Authorization`, which belongs to the service behind the port.
 */
async function authorize(ctx: PortProxyContext, sandboxId: string, headers: IncomingHttpHeaders): Promise<void> {
  const token = headers[TRAFFIC_TOKEN_HEADER];
  const key = headers['x-api-key'];
  if (typeof key === 'string' && (await ctx.apiKeys.verify(key))) return;
  if (typeof token === 'string') {
    if (ctx.tokens.verifyTraffic(sandboxId, token)) return;
    throw new CapsuleError('permission_denied', `that traffic access token does not open sandbox ${sandboxId}`, {
      hint: `send the trafficAccessToken of sandbox ${sandboxId} (capsule inspect shows it)`,
    });
  }
  throw new CapsuleError('unauthenticated', `reaching sandbox ${sandboxId}'s ports over TCP needs its traffic access token or an API key`, {
    hint: `send ${TRAFFIC_TOKEN_HEADER} (the sandbox's trafficAccessToken) or X-API-Key`,
  });
}

function errorParts(err: unknown): { status: number; code: ErrorCode; body: string } {
  const capsule =
    err instanceof CapsuleError
      ? err
      : new CapsuleError('agent_unavailable', `the sandbox's port could not be reached: ${errorMessage(err)}`);
  const body: ErrorBody = { error: { code: capsule.code, message: capsule.message, ...(capsule.hint ? { hint: capsule.hint } : {}) } };
  return { status: httpStatusOf(capsule.code), code: capsule.code, body: JSON.stringify(body) };
}

function sendError(res: ServerResponse, err: unknown): void {
  if (res.headersSent) return void res.destroy();
  const { status, code, body } = errorParts(err);
  res
    .writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      [PORT_ERROR_HEADER]: code,
      'cache-control': 'no-store',
    })
    .end(body);
}

/** An error answer written raw on an upgrade's socket (no response object exists there). */
function sendRawError(socket: Duplex, err: unknown): void {
  const { status, code, body } = errorParts(err);
  const head =
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Error'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
    `${PORT_ERROR_HEADER}: ${code}\r\nconnection: close\r\n\r\n`;
  socket.end(head + body);
}

/** The client's headers for the service: credentials and hop-by-hop ones out, the X-Forwarded-* set in. */
export function headersForService(req: IncomingMessage, keepUpgrade: boolean): Array<[string, string]> {
  const named = new Set(
    String(req.headers.connection ?? '')
      .toLowerCase()
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '' && s !== 'upgrade'),
  );
  const out: Array<[string, string]> = [];
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = (raw[i] ?? '').toLowerCase();
    const value = raw[i + 1] ?? '';
    if (CREDENTIALS.has(name) || name.startsWith('x-forwarded-') || named.has(name)) continue;
    if (name === 'authorization' && DAEMON_KEY_BEARER.test(value)) continue;
    if (name === 'cookie') {
      // A browser signed in to the dashboard sends its session cookie to every path of the daemon's
      // origin, ports by path included: a service never gets that credential of the daemon.
      const cookies = withoutCookie(value, SESSION_COOKIE);
      if (cookies !== '') out.push([raw[i] ?? name, cookies]);
      continue;
    }
    if (HOP_BY_HOP.has(name) && !(keepUpgrade && (name === 'connection' || name === 'upgrade'))) continue;
    out.push([raw[i] ?? name, value]);
  }
  const forwardedFor = req.socket.remoteAddress;
  if (forwardedFor) out.push(['X-Forwarded-For', forwardedFor]);
  if (req.headers.host) out.push(['X-Forwarded-Host', req.headers.host]);
  out.push(['X-Forwarded-Proto', 'http']);
  return out;
}

/**
 * The service's response headers for the client: nothing hop-by-hop, as raw
 * name/value pairs (repeats kept), cookies scoped to this sandbox's port.
 */
function headersForClient(upstream: IncomingMessage, target: PortTarget & { kind: 'http' }, keepUpgrade = false): string[] {
  const out: string[] = [];
  const raw = upstream.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = (raw[i] ?? '').toLowerCase();
    if (name === PORT_ERROR_HEADER) continue;
    if (HOP_BY_HOP.has(name) && !(keepUpgrade && (name === 'connection' || name === 'upgrade'))) continue;
    const value = raw[i + 1] ?? '';
    out.push(raw[i] ?? name, name === 'set-cookie' ? scopedCookie(value, target) : value);
  }
  return out;
}

/**
 * A sandbox's cookie, kept to that sandbox's port: its `Domain` is dropped (a
 * host-only cookie of `<port>-<id>.<domain>`, never one for the domain its
 * siblings share), and by path its `Path` is put under the port's own prefix,
 * since every sandbox is served on the daemon's one host name there.
 */
export function scopedCookie(setCookie: string, target: { form: 'host' | 'path'; sandboxId: string; port: number }): string {
  const [pair = '', ...attributes] = setCookie.split(';');
  const attributeName = (attribute: string) => (attribute.split('=')[0] ?? '').trim().toLowerCase();
  const kept = attributes.filter((a) => attributeName(a) !== 'domain' && (target.form === 'host' || attributeName(a) !== 'path'));
  if (target.form === 'path') {
    const own = attributes.find((a) => attributeName(a) === 'path');
    const servicePath = own?.slice(own.indexOf('=') + 1).trim() ?? '';
    kept.push(
      ` Path=/v1/sandboxes/${encodeURIComponent(target.sandboxId)}/ports/${target.port}${servicePath.startsWith('/') ? servicePath : '/'}`,
    );
  }
  return [pair, ...kept].join(';');
}

async function openTunnel(
  ctx: PortProxyContext,
  sandboxId: string,
  port: number,
  headers: IncomingHttpHeaders,
  viaTcp: boolean,
): Promise<Duplex> {
  if (!isValidSandboxId(sandboxId)) throw new CapsuleError('invalid_argument', 'the sandbox id is malformed');
  if (viaTcp) await authorize(ctx, sandboxId, headers);
  return (await ctx.tunnels.connect(sandboxId, port)).stream;
}

/** Answers one plain HTTP request for a sandbox's port. */
export async function proxyToPort(
  ctx: PortProxyContext,
  target: PortTarget,
  req: IncomingMessage,
  res: ServerResponse,
  viaTcp: boolean,
): Promise<void> {
  if (target.kind === 'tunnel') {
    return sendError(
      res,
      new CapsuleError('invalid_argument', 'a tunnel is opened with an HTTP Upgrade', {
        hint: `send Connection: Upgrade and Upgrade: ${PORT_TUNNEL_UPGRADE}`,
      }),
    );
  }
  let tunnel: Duplex;
  try {
    tunnel = await openTunnel(ctx, target.sandboxId, target.port, req.headers, viaTcp);
  } catch (err) {
    req.resume();
    return sendError(res, err);
  }
  if (res.destroyed) return void tunnel.destroy();
  const upstream = http.request({
    method: req.method ?? 'GET',
    path: target.path,
    headers: [...headersForService(req, false).flat(), 'Connection', 'close'],
    // HTTP/1.1 spoken over the tunnel stream: one connection inside the guest per request.
    createConnection: () => tunnel as unknown as net.Socket,
  });
  // A request and its answer carry no bytes for the idle limit: the service or the client is gone without saying so.
  // A request's body ends early and normally, so the half-closed limit does not apply here.
  const stopWatching = closeWhenIdle(
    [req, tunnel],
    { idleMs: defaultTunnelIdleLimits.idleMs, halfClosedIdleMs: defaultTunnelIdleLimits.idleMs },
    () => {
      upstream.destroy();
      tunnel.destroy();
      res.destroy();
    },
  );
  res.once('close', () => {
    stopWatching();
    if (!res.writableFinished) upstream.destroy();
    tunnel.destroy();
  });
  upstream.once('error', (err) => {
    if (!res.headersSent) {
      sendError(
        res,
        new CapsuleError(
          'port_not_listening',
          `the service on port ${target.port} closed the connection without an answer: ${err.message}`,
          { hint: 'is it an HTTP server? raw TCP needs `capsule port-forward`' },
        ),
      );
    } else res.destroy();
  });
  upstream.once('response', (answer) => {
    const status = answer.statusCode ?? 0;
    try {
      if (status < 200 || status > 599) throw new Error(`invalid status ${status}`);
      res.writeHead(status, answer.statusMessage, headersForClient(answer, target));
    } catch (err) {
      answer.destroy();
      return sendError(
        res,
        new CapsuleError(
          'agent_protocol_error',
          `the service on port ${target.port} sent an answer that cannot be forwarded: ${errorMessage(err)}`,
        ),
      );
    }
    pipeline(answer, res).catch(() => res.destroy());
  });
  pipeline(req, upstream).catch(() => upstream.destroy());
}

/**
 * Handles an HTTP Upgrade: a WebSocket (or any upgrade) to a sandbox's port,
 * the request head rewritten and the rest relayed as bytes; or a raw tunnel
 * (port-forward), answered 101 and relayed. Anything else is refused.
 */
export async function upgradeToPort(
  ctx: PortProxyContext,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  viaTcp: boolean,
): Promise<void> {
  socket.on('error', () => undefined);
  let target: PortTarget | undefined;
  try {
    target = portTarget(req.url ?? '/', req.headers.host, ctx.domain);
  } catch (err) {
    return sendRawError(socket, err);
  }
  if (!target)
    return sendRawError(
      socket,
      new CapsuleError('not_found', `no upgrade is served at ${String(req.url).slice(0, 200)}`, {
        hint: 'upgrades are served for sandbox ports only',
      }),
    );
  let tunnel: Duplex;
  try {
    tunnel = await openTunnel(ctx, target.sandboxId, target.port, req.headers, viaTcp);
  } catch (err) {
    return sendRawError(socket, err);
  }
  if (socket.destroyed) return void tunnel.destroy();
  if (target.kind === 'http') return upgradeService(target, req, socket, head, tunnel);
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: ${PORT_TUNNEL_UPGRADE}\r\n\r\n`);
  if (head.length > 0) tunnel.write(head);
  joinToTunnel(socket, tunnel);
}

/**
 * An upgrade (a WebSocket) to a service: the request goes as HTTP/1.1 over
 * the tunnel and Node's HTTP parser reads the service's answer, so that its
 * head is rewritten like any answer's (cookies kept to this sandbox's port)
 * before the bytes after it are relayed both ways. An answer other than 101
 * is relayed as a plain answer, and the connection closed after it.
 */
function upgradeService(target: PortTarget & { kind: 'http' }, req: IncomingMessage, socket: Duplex, head: Buffer, tunnel: Duplex): void {
  const upstream = http.request({
    method: req.method ?? 'GET',
    path: target.path,
    headers: headersForService(req, true).flat(),
    createConnection: () => tunnel as unknown as net.Socket,
  });
  const abandon = () => {
    upstream.destroy();
    tunnel.destroy();
    socket.destroy();
  };
  // Until the service answers, a client or service that goes quiet and away is let go like any tunnel's.
  const stopWatching = closeWhenIdle([socket, tunnel], defaultTunnelIdleLimits, abandon);
  socket.once('close', abandon);
  upstream.once('upgrade', (answer: IncomingMessage, upgraded: Duplex, rest: Buffer) => {
    stopWatching();
    socket.off('close', abandon);
    socket.write(responseHead(answer, headersForClient(answer, target, true)));
    if (rest.length > 0) socket.write(rest);
    if (head.length > 0) upgraded.write(head);
    joinToTunnel(socket, upgraded);
  });
  upstream.once('response', (answer) => {
    stopWatching();
    socket.write(responseHead(answer, [...headersForClient(answer, target), 'Connection', 'close']));
    answer.pipe(socket);
  });
  upstream.once('error', (err) => {
    stopWatching();
    sendRawError(
      socket,
      new CapsuleError('port_not_listening', `the service on port ${target.port} closed the connection without an answer: ${err.message}`),
    );
    tunnel.destroy();
  });
  upstream.end();
}

/** An HTTP/1.1 response head for a raw socket, from a parsed answer and the header pairs to send. */
function responseHead(answer: IncomingMessage, rawHeaders: string[]): string {
  const lines: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) lines.push(`${rawHeaders[i]}: ${rawHeaders[i + 1]}\r\n`);
  return `HTTP/1.1 ${answer.statusCode ?? 502} ${answer.statusMessage ?? ''}\r\n${lines.join('')}\r\n`;
}
