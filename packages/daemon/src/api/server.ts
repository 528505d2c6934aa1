// The REST API: Fastify on a unix socket (0600, so only the local user's
// clients reach it) and, when asked, on TCP where every call needs an API key
// (or, for a sandbox's agent, that sandbox's access token). Request validation
// comes from the TypeBox schemas in @capsule/protocol, and one error handler
// maps CapsuleError codes to HTTP. Requests for a sandbox's agent bypass the
// router and go to the proxy (agent-proxy.ts).
import fs from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex, Readable } from 'node:stream';
import path from 'node:path';
import fastifySwagger from '@fastify/swagger';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify';
import {
  ApiKeyList,
  CreateApiKeyRequest,
  CreatedApiKey,
  CreateSandboxRequest,
  DaemonInfo,
  ErrorResponse,
  ExecEvent,
  ExecRequest,
  ExecResult,
  ForkRequest,
  Sandbox,
  SandboxList,
  SetNetworkRequest,
  SetTimeoutRequest,
  SnapshotRequest,
  Template,
  httpStatusOf,
  type ErrorBody,
  type ErrorCode,
} from '@capsule/protocol';
import { cancelAgentStream } from '../agent/client.js';
import { CapsuleError, errorMessage } from '../errors.js';
import type { ImageService } from '../images/image-service.js';
import { registerImageRoutes } from './image-routes.js';
import { registerTemplateRoutes } from './template-routes.js';
import type { Logger } from '../log.js';
import type { SandboxManager } from '../sandboxes/manager.js';
import type { Templates } from '../templates/templates.js';
import type { Store } from '../store/store.js';
import { bulkHeaders, bulkUploadContentType } from '@capsule/protocol/agent';
import { bulkUploadKind, offersBulkDownload, relayBulkDownload, relayBulkUpload, splitUpload, type RequestBody } from './bulk-files.js';
import { ACCESS_TOKEN_HEADER, agentTarget, connectCodeOf, E2B_DEFAULT_USER, isValidSandboxId, relay, requestHeadersForAgent, type AgentTarget, type ProxyFailure } from './agent-proxy.js';
import type { ApiKeys, SandboxTokens } from './credentials.js';
import { registerE2bRoutes } from './e2b-routes.js';
import { requestErrorOf } from './request-errors.js';
import { BUILD_CONTEXT_CONTENT_TYPE } from './build-context-upload.js';
import { defaultServerLimits as serverLimits, limitServer, requestBodyDeadline, serverOptions } from './server-limits.js';
import { ENVD_PORT, portTarget, proxyToPort, upgradeToPort } from './port-proxy.js';

export interface ApiContext {
  manager: SandboxManager;
  images: ImageService;
  templates: Templates;
  store: Store;
  apiKeys: ApiKeys;
  tokens: SandboxTokens;
  info: () => DaemonInfo;
  log: Logger;
  version: string;
  /** Sandbox ports by host name: `<port>-<sandboxId>.<domain>`. */
  domain: string;
}

/** How long the agent may take to accept a proxied request (not to answer it). */
const AGENT_OPEN_TIMEOUT_MS = 10_000;

export interface Api {
  app: FastifyInstance;
  /** Serves the API on TCP too, over TLS when given a certificate; resolves to the address bound. */
  listenTcp(host: string, port: number, tls?: { cert: string; key: string }): Promise<string>;
  close(): Promise<void>;
}

/** The API key a TCP client presented: `X-API-Key` (what the e2b SDK sends) or a bearer token. */
function presentedApiKey(headers: http.IncomingHttpHeaders): string | undefined {
  const header = headers['x-api-key'];
  if (typeof header === 'string') return header;
  const bearer = /^Bearer (\S+)$/.exec(headers.authorization ?? '');
  return bearer?.[1];
}

const IdParams = {
  type: 'object',
  properties: { id: { type: 'string', minLength: 1, maxLength: 128 } },
  required: ['id'],
} as const;

const errorResponses = { 400: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse, 500: ErrorResponse, 502: ErrorResponse };

export async function buildApi(ctx: ApiContext): Promise<Api> {
  // Requests that came in over TCP; everything else came through the owner-only unix socket.
  const viaTcp = new WeakSet<IncomingMessage>();
  let route: http.RequestListener | undefined;
  const ports = { tunnels: ctx.manager.tunnels, tokens: ctx.tokens, apiKeys: ctx.apiKeys, domain: ctx.domain, log: ctx.log };
  /**
   * Everything before the router, robust by construction: whatever a request
   * makes it throw is that request's fault (a malformed URL, header or host
   * name), answered 400; a proxy that fails later answers for itself, and a
   * throw that escapes it still ends that request only, never the daemon.
   */
  const dispatch: http.RequestListener = (req, res) => {
    const tcp = viaTcp.has(req);
    let proxied: Promise<void> | undefined;
    try {
      const port = portTarget(req.url ?? '/', req.headers.host, ctx.domain);
      // e2b's envd port by host name is the sandbox's agent, as on e2b.
      if (port?.kind === 'http' && port.form === 'host' && port.port === ENVD_PORT) {
        proxied = proxyToAgent(ctx, { sandboxId: port.sandboxId, path: port.path, form: 'header' }, req, res, tcp);
      } else if (port) {
        proxied = proxyToPort(ports, port, req, res, tcp);
      } else {
        const target = agentTarget(req.url ?? '/', req.headers);
        if (target) proxied = proxyToAgent(ctx, target, req, res, tcp);
        else {
          // A build context upload may be large; its size is bounded where it is read (build-context-upload.ts).
          requestBodyDeadline(req, res, isBuildContextUpload(req) ? serverLimits.uploadBodyTimeoutMs : serverLimits.requestBodyTimeoutMs);
          route?.(req, res);
        }
      }
    } catch (err) {
      return sendMalformedRequestError(req, res, err);
    }
    proxied?.catch((err: unknown) => {
      ctx.log.error({ err: errorMessage(err), url: String(req.url).slice(0, 200) }, 'a proxied request failed outside its handler');
      if (!res.headersSent) sendPlainError(res, new CapsuleError('agent_unavailable', 'the request could not be proxied'));
      else res.destroy();
    });
  };
  const onUpgrade = (tcp: boolean) => (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    upgradeToPort(ports, req, socket, head, tcp).catch((err: unknown) => {
      ctx.log.error({ err: errorMessage(err) }, 'an upgrade failed outside its handler');
      socket.destroy();
    });
  };
  const tcpServers: (http.Server | https.Server)[] = [];

  const app = Fastify({
    serverFactory: (handler) => {
      route = handler;
      return createHttpServer(dispatch, onUpgrade(false));
    },
    // The server's own clientError listener (server-limits.ts) answers in the daemon's error shape; Fastify's would answer a second time.
    clientErrorHandler: () => undefined,
    // Requests are logged at debug level only; errors are logged by the error handler.
    loggerInstance: ctx.log.child({ component: 'api' }, { level: ctx.log.level === 'debug' || ctx.log.level === 'trace' ? ctx.log.level : 'warn' }) as FastifyBaseLogger,
    bodyLimit: 32 * 1024 * 1024,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true } },
  });
  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'capsuled', version: ctx.version, description: "Capsule's host daemon: sandboxes as microVMs." },
    },
  });

  app.setErrorHandler((err, request, reply) => {
    if (err instanceof CapsuleError) return sendError(reply, err);
    const requestError = requestErrorOf(err);
    if (requestError) return sendError(reply, requestError);
    request.log.error({ err }, 'unhandled error');
    return sendError(reply, new CapsuleError('internal', err instanceof Error ? err.message : String(err)));
  });
  app.setNotFoundHandler((request, reply) =>
    sendError(reply, new CapsuleError('not_found', `no route ${request.method} ${request.url}`, { hint: 'see /openapi.json for the routes' })),
  );

  app.addHook('onRequest', async (request) => {
    if (!viaTcp.has(request.raw) || request.url === '/health') return;
    if (!(await ctx.apiKeys.verify(presentedApiKey(request.headers)))) {
      throw new CapsuleError('unauthenticated', 'a valid API key is required over TCP', {
        hint: 'send it as X-API-Key; create one with `capsule apikey create NAME`',
      });
    }
  });

  app.get('/health', { schema: { hide: true } }, async () => ({ status: 'ok' }));
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  app.get('/v1/info', { schema: { response: { 200: DaemonInfo } } }, async () => ctx.info());

  registerTemplateRoutes(app, ctx.templates, (req) => viaTcp.has(req));
  registerImageRoutes(app, ctx.images, ctx.templates, (req) => viaTcp.has(req));

  app.post<{ Body: CreateSandboxRequest }>(
    '/v1/sandboxes',
    { schema: { body: CreateSandboxRequest, response: { 201: Sandbox, ...errorResponses } } },
    async (request, reply) => {
      const sandbox = await ctx.manager.create(request.body);
      return reply.code(201).send(sandbox);
    },
  );

  app.get<{ Querystring: { all?: boolean } }>(
    '/v1/sandboxes',
    { schema: { querystring: { type: 'object', properties: { all: { type: 'boolean' } } }, response: { 200: SandboxList } } },
    async (request) => ({ sandboxes: await ctx.manager.list(request.query.all === true) }),
  );

  app.get<{ Params: { id: string } }>(
    '/v1/sandboxes/:id',
    { schema: { params: IdParams, response: { 200: Sandbox, ...errorResponses } } },
    async (request) => await ctx.manager.get(request.params.id),
  );

  app.delete<{ Params: { id: string } }>(
    '/v1/sandboxes/:id',
    { schema: { params: IdParams, response: { ...errorResponses } } },
    async (request, reply) => {
      await ctx.manager.remove(request.params.id);
      return reply.code(204).send();
    },
  );

  app.post<{ Params: { id: string }; Body: ExecRequest }>(
    '/v1/sandboxes/:id/exec',
    { schema: { params: IdParams, body: ExecRequest, response: { 200: ExecResult, ...errorResponses } } },
    async (request, reply) => await ctx.manager.exec(request.params.id, request.body, abortOnClose(reply.raw)),
  );

  app.post<{ Params: { id: string }; Body: ExecRequest }>(
    '/v1/sandboxes/:id/exec/stream',
    {
      schema: {
        params: IdParams,
        body: ExecRequest,
        description: 'Streams application/x-ndjson, one ExecEvent per line; the last line is an `exit` or `error` event.',
        response: { 200: { description: 'ExecEvent lines', content: { 'application/x-ndjson': { schema: ExecEvent } } }, ...errorResponses },
      },
    },
    async (request, reply) => {
      const events = await ctx.manager.execStream(request.params.id, request.body, abortOnClose(reply.raw));
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
      for await (const event of events) {
        if (res.destroyed) break;
        // Waiting for drain is what carries backpressure from the client to the guest.
        if (!res.write(`${JSON.stringify(event)}\n`)) await new Promise((resolve) => res.once('drain', resolve).once('close', resolve));
      }
      res.end();
    },
  );

  app.post<{ Params: { id: string }; Body: SetTimeoutRequest }>(
    '/v1/sandboxes/:id/timeout',
    {
      schema: {
        params: IdParams,
        body: SetTimeoutRequest,
        description: 'Sets a running sandbox’s lifetime, counted from now; 0 removes the timeout.',
        response: { 200: Sandbox, ...errorResponses },
      },
    },
    async (request) => await ctx.manager.setTimeout(request.params.id, request.body.timeoutMs),
  );

  app.post<{ Params: { id: string } }>(
    '/v1/sandboxes/:id/keepalive',
    {
      schema: { params: IdParams, description: 'Restarts a running sandbox’s timeout from now, keeping its length.', response: { 200: Sandbox, ...errorResponses } },
    },
    async (request) => await ctx.manager.keepAlive(request.params.id),
  );

  app.post<{ Params: { id: string }; Body: SetNetworkRequest }>(
    '/v1/sandboxes/:id/network',
    {
      schema: {
        params: IdParams,
        body: SetNetworkRequest,
        description: 'Changes what a running or paused sandbox may reach: `internet` on or off, and (TAP mode) egress allow/deny lists.',
        response: { 200: Sandbox, ...errorResponses },
      },
    },
    async (request) => await ctx.manager.setNetwork(request.params.id, request.body),
  );

  app.post<{ Params: { id: string } }>(
    '/v1/sandboxes/:id/pause',
    {
      schema: {
        params: IdParams,
        description: "Saves the sandbox's memory and devices into its folder and ends its VM; its disk stays. A paused sandbox uses no RAM.",
        response: { 200: Sandbox, ...errorResponses },
      },
    },
    async (request) => await ctx.manager.pause(request.params.id),
  );

  app.post<{ Params: { id: string }; Body: ForkRequest }>(
    '/v1/sandboxes/:id/fork',
    {
      schema: {
        params: IdParams,
        body: ForkRequest,
        description: 'Starts `count` sandboxes that each continue from this moment of the sandbox, with its memory, processes and disk.',
        response: { 201: SandboxList, ...errorResponses },
      },
    },
    async (request, reply) => reply.code(201).send({ sandboxes: await ctx.manager.fork(request.params.id, request.body.count ?? 1) }),
  );

  app.post<{ Params: { id: string }; Body: SnapshotRequest }>(
    '/v1/sandboxes/:id/snapshot',
    {
      schema: {
        params: IdParams,
        body: SnapshotRequest,
        description: 'Makes the sandbox’s current state (memory, processes, disk) a new warm template; the sandbox runs on.',
        response: { 201: Template, ...errorResponses },
      },
    },
    async (request, reply) => reply.code(201).send(ctx.templates.view(await ctx.manager.snapshot(request.params.id, request.body.template))),
  );

  app.post<{ Params: { id: string } }>(
    '/v1/sandboxes/:id/resume',
    {
      schema: {
        params: IdParams,
        description: 'Starts a paused sandbox again where it stopped, with its clock corrected and its lifetime restarted.',
        response: { 200: Sandbox, ...errorResponses },
      },
    },
    async (request) => await ctx.manager.resume(request.params.id),
  );

  app.get<{ Params: { id: string } }>(
    '/v1/sandboxes/:id/logs',
    { schema: { params: IdParams, description: "The sandbox's serial console (text/plain, the last MiB or two)." } },
    async (request, reply) => {
      const log = await ctx.manager.consoleLog(request.params.id);
      return reply.type('text/plain; charset=utf-8').send(log);
    },
  );

  /** Keys are managed by the local user only: a key cannot mint or remove keys. */
  const localOnly = (request: { raw: IncomingMessage }) => {
    if (viaTcp.has(request.raw)) throw new CapsuleError('permission_denied', 'API keys are managed through the unix socket only', { hint: 'run `capsule apikey` on the host' });
  };
  app.get('/v1/api-keys', { schema: { response: { 200: ApiKeyList, ...errorResponses } } }, async (request) => {
    localOnly(request);
    return { keys: await ctx.apiKeys.list() };
  });
  app.post<{ Body: CreateApiKeyRequest }>(
    '/v1/api-keys',
    { schema: { body: CreateApiKeyRequest, description: 'Creates an API key for TCP clients; the key is in this answer only.', response: { 201: CreatedApiKey, ...errorResponses } } },
    async (request, reply) => {
      localOnly(request);
      return reply.code(201).send(await ctx.apiKeys.create(request.body.name, request.body.key));
    },
  );
  app.delete<{ Params: { id: string } }>('/v1/api-keys/:id', { schema: { params: IdParams, response: { ...errorResponses } } }, async (request, reply) => {
    localOnly(request);
    await ctx.apiKeys.remove(request.params.id);
    return reply.code(204).send();
  });

  await registerE2bRoutes(app, { manager: ctx.manager, tokens: ctx.tokens });

  return {
    app,
    async listenTcp(host, port, tls) {
      const server = createHttpServer((req, res) => {
        viaTcp.add(req);
        dispatch(req, res);
      }, onUpgrade(true), tls);
      tcpServers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => resolve());
      });
      const address = server.address() as AddressInfo;
      return `${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`;
    },
    async close() {
      for (const server of tcpServers) {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      }
      app.server.closeAllConnections();
      await app.close();
    },
  };
}

/**
 * An HTTP server with the timeouts Fastify gives its own (it does not set them
 * on a server from serverFactory): idle keep-alive connections live longer than
 * clients' pools keep them, so a client never reuses a socket the server is
 * closing; and the limits of server-limits.ts (head time and size, connections).
 * With a certificate it speaks only TLS: a plain request fails the handshake
 * before any header (or key) is read.
 */
function createHttpServer(
  listener: http.RequestListener,
  onUpgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void,
  tls?: { cert: string; key: string },
): http.Server | https.Server {
  // allowHalfOpen, as node:http sets for itself: a client's half-close (a tunnel's, a request sent with end()) must not cut the answer.
  const server = tls
    ? https.createServer({ ...serverOptions(serverLimits), cert: tls.cert, key: tls.key, allowHalfOpen: true }, listener)
    : http.createServer(serverOptions(serverLimits), listener);
  limitServer(server, serverLimits);
  // Upgrades (WebSocket, port-forward tunnels) are served for sandbox ports only.
  server.on('upgrade', onUpgrade);
  server.keepAliveTimeout = 72_000;
  return server;
}

/**
 * Forwards one request to a sandbox's agent. Over TCP the caller needs the
 * sandbox's access token or an API key. Errors take the shape the client
 * expects: ours for the path form, e2b's `{code, message}` for the header form
 * (where a missing or stopped sandbox is a 502, as e2b's own proxy answers).
 */
async function proxyToAgent(ctx: ApiContext, target: AgentTarget, req: IncomingMessage, res: ServerResponse, viaTcp: boolean): Promise<void> {
  const fail = (code: ErrorCode, message: string, hint?: string) => {
    if (res.headersSent) return void res.destroy();
    if (target.form === 'header') {
      const status = code === 'sandbox_not_found' || code === 'sandbox_not_running' ? 502 : httpStatusOf(code);
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ code: status, message: hint ? `${message} (${hint})` : message }));
    } else {
      // Both readers' shapes: ours (`error`) for REST clients, Connect's (`code`, `message`) for RPC clients.
      const body: ErrorBody & { code: string; message: string } = { error: { code, message, ...(hint ? { hint } : {}) }, code: connectCodeOf(code), message };
      res.writeHead(httpStatusOf(code), { 'content-type': 'application/json' }).end(JSON.stringify(body));
    }
  };
  const { sandboxId } = target;
  try {
    if (!isValidSandboxId(sandboxId)) return fail('invalid_argument', 'the sandbox id is malformed');
    if (viaTcp) {
      const token = req.headers[ACCESS_TOKEN_HEADER];
      const allowed = ctx.tokens.verify(sandboxId, typeof token === 'string' ? token : undefined) || (await ctx.apiKeys.verify(presentedApiKey(req.headers)));
      if (!allowed) return fail('unauthenticated', `a valid access token for sandbox ${sandboxId} or an API key is required`, 'send X-Access-Token (from the create answer) or X-API-Key');
    }
    const { agent, bulk } = await ctx.manager.agentOf(sandboxId);
    const headers = requestHeadersForAgent(req.headers, target.form === 'header' ? E2B_DEFAULT_USER : undefined);
    // Large /files bodies go over the VM's bulk port when it has one and it is free (bulk-files.ts).
    const uploadKind = bulk?.uploads ? bulkUploadKind(req.method, target.path, req.headers) : undefined;
    let transfer = uploadKind !== undefined || (bulk && offersBulkDownload(req.method, target.path, req.headers)) ? await bulk?.open() : undefined;
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
          timer = setTimeout(() => reject({ status: 502, message: `the sandbox's agent did not accept the request within ${AGENT_OPEN_TIMEOUT_MS} ms` } satisfies ProxyFailure), AGENT_OPEN_TIMEOUT_MS);
        }),
      ]).finally(() => clearTimeout(timer));
      if (!transfer) return void (await relay(body, res, stream));
      const started = Date.now();
      const outcome = upload ? await relayBulkUpload(res, stream, transfer, upload) : await relayBulkDownload(req, res, stream, transfer);
      if (outcome.bytes > 0) {
        ctx.log.debug({ sandbox: sandboxId, direction: outcome.direction, bytes: outcome.bytes, ms: Date.now() - started }, 'file transfer through the bulk port');
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

/** An error answer outside Fastify (a malformed port host name). */
function sendPlainError(res: ServerResponse, err: CapsuleError): void {
  if (res.headersSent) return void res.destroy();
  const body: ErrorBody = { error: { code: err.code, message: err.message, ...(err.hint ? { hint: err.hint } : {}) } };
  res.writeHead(httpStatusOf(err.code), { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(body));
}

/** The answer to a request the dispatcher could not make sense of: its own code when it has one, else invalid_argument. */
function sendMalformedRequestError(req: IncomingMessage, res: ServerResponse, err: unknown): void {
  req.resume(); // its body is not wanted, but must not hold the connection
  sendPlainError(
    res,
    err instanceof CapsuleError ? err : new CapsuleError('invalid_argument', `the request is malformed: ${errorMessage(err).slice(0, 200)}`, { hint: 'check the URL, its percent-encodings and the headers' }),
  );
}

function sendError(reply: FastifyReply, err: CapsuleError): FastifyReply {
  const body: ErrorBody = { error: { code: err.code, message: err.message, ...(err.hint ? { hint: err.hint } : {}) } };
  return reply.code(httpStatusOf(err.code)).type('application/json').send(body);
}

function isBuildContextUpload(req: IncomingMessage): boolean {
  return (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() === BUILD_CONTEXT_CONTENT_TYPE;
}

/** An AbortSignal that fires when the client goes away before the response is done. */
function abortOnClose(res: ServerResponse): AbortSignal {
  const controller = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) controller.abort(new Error('the client disconnected'));
  });
  return controller.signal;
}

/** Listens on the unix socket, replacing a stale one, readable by the owner only. */
export async function listenOnSocket({ app }: Api, socketPath: string): Promise<void> {
  fs.mkdirSync(path.dirname(socketPath), { recursive: true, mode: 0o755 });
  fs.rmSync(socketPath, { force: true });
  const oldMask = process.umask(0o177);
  try {
    await app.listen({ path: socketPath });
  } finally {
    process.umask(oldMask);
  }
  fs.chmodSync(socketPath, 0o600);
}
