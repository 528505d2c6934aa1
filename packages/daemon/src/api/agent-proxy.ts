// The daemon's reverse proxy to each sandbox's agent: which sandbox a request
// is for, whether its caller may reach it, and the request relayed to the
// agent (agent-relay.ts), its large /files bodies over the bulk port
// (bulk-files.ts). Two ways to name the sandbox:
//   by path:   /v1/sandboxes/{id}/envd/<agent path>   (our SDK and CLI)
//   by header: E2b-Sandbox-Id: {id}, the agent path as is (the e2b SDK pointed
//              at the daemon through E2B_SANDBOX_URL)
// The guest never sees a client's credentials, and a proxy failure answers
// its own request, never the daemon's other clients.
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { httpStatusOf, type ErrorBody, type ErrorCode } from '@capsule/protocol';
import { bulkHeaders, bulkUploadContentType } from '@capsule/protocol/agent';
import { cancelAgentStream } from '../agent/client.js';
import { CapsuleError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { SandboxManager } from '../sandboxes/manager.js';
import { ACCESS_TOKEN_HEADER, relay, requestHeadersForAgent, SANDBOX_ID_HEADER, type ProxyFailure } from './agent-relay.js';
import { bulkUploadKind, offersBulkDownload, relayBulkDownload, relayBulkUpload, splitUpload, type RequestBody } from './bulk-files.js';
import { presentedApiKey, type ApiKeys, type SandboxTokens } from './credentials.js';
import type { DashboardSessions } from './dashboard-sessions.js';

const PATH_FORM = /^\/v1\/sandboxes\/([^/?#]{1,128})\/envd(\/[^?#]*)?(\?.*)?$/;
const SANDBOX_ID = /^[A-Za-z0-9_.-]{1,128}$/;

/** How long the agent may take to accept a proxied request (not to answer it). */
const AGENT_OPEN_TIMEOUT_MS = 10_000;

/**
 * e2b's convention: a call that names no user runs as `user` (e2b SDKs stopped
 * sending it once envd learnt the default; our agent's own default is root).
 */
export const E2B_DEFAULT_USER = 'user';

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
  if (!url.startsWith('/'))
    throw new CapsuleError('invalid_argument', `"${url.slice(0, 80)}" is not a path the agent serves`, {
      hint: 'send the agent path, e.g. /health',
    });
  return { sandboxId: header, path: url, form: 'header' };
}

/** A percent-encoded path segment; a malformed encoding is the caller's error, not the daemon's. */
export function decodePathSegment(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    throw new CapsuleError('invalid_argument', `"${value.slice(0, 80)}" is not a valid URL path segment`, {
      hint: 'percent-encode the sandbox id, or name it plainly',
    });
  }
}

export function isValidSandboxId(id: string): boolean {
  return SANDBOX_ID.test(id);
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

export interface AgentProxyContext {
  manager: Pick<SandboxManager, 'agentOf'>;
  apiKeys: ApiKeys;
  tokens: SandboxTokens;
  /** A dashboard's browser reaches the agent (its file browser) with its session cookie. */
  sessions: Pick<DashboardSessions, 'authorizes'>;
  log: Logger;
}

/**
 * Forwards one request to a sandbox's agent. Over TCP the caller needs the
 * sandbox's access token, an API key or a dashboard session. Errors take the shape the client
 * expects: ours for the path form, e2b's `{code, message}` for the header form
 * (where a missing or stopped sandbox is a 502, as e2b's own proxy answers).
 */
export async function proxyToAgent(
  ctx: AgentProxyContext,
  target: AgentTarget,
  req: IncomingMessage,
  res: ServerResponse,
  viaTcp: boolean,
): Promise<void> {
  const fail = (code: ErrorCode, message: string, hint?: string) => {
    if (res.headersSent) return void res.destroy();
    if (target.form === 'header') {
      const status = code === 'sandbox_not_found' || code === 'sandbox_not_running' ? 502 : httpStatusOf(code);
      res
        .writeHead(status, { 'content-type': 'application/json' })
        .end(JSON.stringify({ code: status, message: hint ? `${message} (${hint})` : message }));
    } else {
      // Both readers' shapes: ours (`error`) for REST clients, Connect's (`code`, `message`) for RPC clients.
      const body: ErrorBody & { code: string; message: string } = {
        error: { code, message, ...(hint ? { hint } : {}) },
        code: connectCodeOf(code),
        message,
      };
      res.writeHead(httpStatusOf(code), { 'content-type': 'application/json' }).end(JSON.stringify(body));
    }
  };
  const { sandboxId } = target;
  try {
    if (!isValidSandboxId(sandboxId)) return fail('invalid_argument', 'the sandbox id is malformed');
    if (viaTcp) {
      const token = req.headers[ACCESS_TOKEN_HEADER];
      const allowed =
        ctx.tokens.verify(sandboxId, typeof token === 'string' ? token : undefined) ||
        (await ctx.apiKeys.verify(presentedApiKey(req.headers))) ||
        ctx.sessions.authorizes(req.method ?? 'GET', req.headers);
      if (!allowed)
        return fail(
          'unauthenticated',
          `a valid access token for sandbox ${sandboxId} or an API key is required`,
          'send X-Access-Token (from the create answer) or X-API-Key',
        );
    }
    const { agent, bulk } = await ctx.manager.agentOf(sandboxId);
    const headers = requestHeadersForAgent(req.headers, target.form === 'header' ? E2B_DEFAULT_USER : undefined);
    // Large /files bodies go over the VM's bulk port when it has one and it is free (bulk-files.ts).
    const uploadKind = bulk?.uploads ? bulkUploadKind(req.method, target.path, req.headers) : undefined;
    let transfer =
      uploadKind !== undefined || (bulk && offersBulkDownload(req.method, target.path, req.headers)) ? await bulk?.open() : undefined;
    let body: Readable = req;
    let upload: { file: AsyncIterable<Buffer>; body: RequestBody } | undefined;
    try {
      if (transfer && uploadKind !== undefined) {
        const split = await splitUpload(req, uploadKind);
        if ('file' in split) {
          upload = split;
        } else {
          body = split.relay;
          transfer.release();
          transfer = undefined;
        }
      }
      if (transfer) {
        headers[bulkHeaders.id] = transfer.id;
        if (upload) {
          delete headers['content-length']; // the HTTP/2 request has no body
          headers['content-type'] = bulkUploadContentType;
        }
      }
      const opened = agent.openStream(req.method ?? 'GET', target.path, headers);
      opened.then(
        (late) => {
          // A stream that opened after the client was answered (or left) is nobody's: reset it.
          if (res.writableEnded || res.destroyed) cancelAgentStream(late);
        },
        () => undefined,
      );
      let timer: NodeJS.Timeout | undefined;
      const stream = await Promise.race([
        opened,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject({
                status: 502,
                message: `the sandbox's agent did not accept the request within ${AGENT_OPEN_TIMEOUT_MS} ms`,
              } satisfies ProxyFailure),
            AGENT_OPEN_TIMEOUT_MS,
          );
        }),
      ]).finally(() => clearTimeout(timer));
      if (!transfer) return void (await relay(body, res, stream));
      const started = Date.now();
      const outcome = upload ? await relayBulkUpload(res, stream, transfer, upload) : await relayBulkDownload(req, res, stream, transfer);
      if (outcome.bytes > 0) {
        ctx.log.debug(
          { sandbox: sandboxId, direction: outcome.direction, bytes: outcome.bytes, ms: Date.now() - started },
          'file transfer through the bulk port',
        );
      }
    } finally {
      transfer?.release();
    }
  } catch (err) {
    if (err instanceof CapsuleError) return fail(err.code, err.message, err.hint);
    const failure = err as Partial<ProxyFailure>;
    if (typeof failure.status === 'number') return fail('agent_unavailable', failure.message ?? 'the agent failed');
    ctx.log.error({ sandbox: sandboxId, err: errorMessage(err) }, 'proxying to the agent failed');
    fail('agent_unavailable', `the sandbox's agent could not be reached: ${errorMessage(err)}`);
  }
}
