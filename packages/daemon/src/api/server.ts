// The REST API assembled: Fastify on a unix socket (0600, so only the local
// user's clients reach it) and, when asked, on TCP where every call needs an
// API key (or, for a sandbox's agent, that sandbox's access token); the server
// limits, one error handler mapping CapsuleError codes to HTTP, and the route
// tables of each resource's module. Over TCP a dashboard session cookie stands
// for a key (dashboard-sessions.ts). Requests for a sandbox's agent or port
// bypass the router and go to their proxy (agent-proxy.ts, port-proxy.ts), a
// terminal's WebSocket to terminal-socket.ts.
// No route is defined here, and nothing a request does may throw past dispatch.
import fs from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import path from 'node:path';
import fastifySwagger from '@fastify/swagger';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify';
import {
  type DaemonInfo,
  type DaemonSettingsReport,
  type DiskUsage,
  httpStatusOf,
  type ErrorBody,
  retryAfterSeconds,
} from '@capsule/protocol';
import { CapsuleError, errorMessage } from '../errors.js';
import type { ImageService } from '../images/image-service.js';
import { imageRoutes } from './image-routes.js';
import { templateRoutes } from './template-routes.js';
import type { Logger } from '../log.js';
import type { DaemonMetrics } from '../metrics.js';
import type { Webhooks } from '../events/webhooks.js';
import type { SandboxManager } from '../sandboxes/manager.js';
import type { Store } from '../store/store.js';
import type { Templates } from '../templates/templates.js';
import { dashboardDist } from '../repo-paths.js';
import { agentTarget, proxyToAgent, type AgentProxyContext } from './agent-proxy.js';
import { apiKeyRoutes } from './api-key-routes.js';
import { presentedApiKey, type ApiKeys, type SandboxTokens, type VolumeTokens } from './credentials.js';
import { dashboardRoutes, PUBLIC_DASHBOARD_ROUTES } from './dashboard-routes.js';
import { DashboardSessions } from './dashboard-sessions.js';
import { e2bErrorHandler, e2bRoutes } from './e2b-routes.js';
import { e2bSnapshotRoutes } from './e2b-snapshot-routes.js';
import { e2bVolumeRoutes, isE2bVolumeContentRoute } from './e2b-volume-routes.js';
import { E2bBuildFiles } from './e2b-build-files.js';
import { e2bBuildFileUploadRoute, e2bTemplateBuildRoutes, E2bTemplateBuilds } from './e2b-template-build-routes.js';
import { eventRoutes } from './event-routes.js';
import { capsuleErrorOf } from './request-errors.js';
import { instrumentApi, ScrapeTimeMetrics } from './metrics.js';
import { BUILD_CONTEXT_CONTENT_TYPE } from './build-context-upload.js';
import { defaultServerLimits as serverLimits, limitServer, requestBodyDeadline, serverOptions } from './server-limits.js';
import { ENVD_PORT, portTarget, proxyToPort, upgradeToPort } from './port-proxy.js';
import { addRoutes } from './routes.js';
import { sandboxMetricsRoutes } from './sandbox-metrics-routes.js';
import { sandboxRoutes } from './sandbox-routes.js';
import { systemRoutes } from './system-routes.js';
import { isTerminalUpgrade, upgradeToTerminal } from './terminal-socket.js';
import { VOLUME_IMAGE_CONTENT_TYPE, volumeRoutes } from './volume-routes.js';
import type { Volumes } from '../volumes/volumes.js';
import type { Workloads } from '../workloads/workloads.js';
import { workloadRoutes } from './workload-routes.js';
import { UsageSampler } from './usage-sampler.js';

export interface ApiContext {
  manager: SandboxManager;
  images: ImageService;
  templates: Templates;
  volumes: Volumes;
  workloads: Workloads;
  apiKeys: ApiKeys;
  tokens: SandboxTokens;
  /** Tokens of e2b's volume file API, one per volume. */
  volumeTokens: VolumeTokens;
  /** How long e2b's uploaded build files are kept once no build uses them. */
  buildUploadsMaxIdleMs: number;
  info: () => DaemonInfo;
  /** Each daemon setting, its source and what it resolved to (settings-report.ts). */
  settings: () => DaemonSettingsReport;
  /** Disk space the daemon's data takes, by kind (disk-usage.ts). */
  diskUsage: () => Promise<DiskUsage>;
  log: Logger;
  /** The daemon's registry, served at /metrics with what is read at scrape time (metrics.ts). */
  metrics: DaemonMetrics;
  /** How often the usage sampler takes a point of every running sandbox (0: never; usage-sampler.ts). */
  metricsIntervalMs: number;
  version: string;
  /** Sandbox ports by host name: `<port>-<sandboxId>.<domain>`. */
  domain: string;
  /** The event history the event stream reads, and the webhooks its events go to. */
  store: Store;
  webhooks: Webhooks;
  /** The built dashboard served at /ui; default the checkout's packages/dashboard/dist. */
  dashboardDir?: string;
}

export interface Api {
  app: FastifyInstance;
  /** Serves the API on TCP too, over TLS when given a certificate; resolves to the address bound. */
  listenTcp(host: string, port: number, tls?: { cert: string; key: string }): Promise<string>;
  close(): Promise<void>;
}

export async function buildApi(ctx: ApiContext): Promise<Api> {
  // Requests that came in over TCP; everything else came through the owner-only unix socket.
  const viaTcp = new WeakSet<IncomingMessage>();
  let route: http.RequestListener | undefined;
  const ports = { tunnels: ctx.manager.tunnels, tokens: ctx.tokens, apiKeys: ctx.apiKeys, domain: ctx.domain, log: ctx.log };
  // In memory: a daemon restart signs every dashboard out.
  const sessions = new DashboardSessions();
  const agentProxy: AgentProxyContext = { manager: ctx.manager, apiKeys: ctx.apiKeys, tokens: ctx.tokens, sessions, log: ctx.log };
  /** The one check of a TCP client's credentials: an API key, or a dashboard session (with its CSRF token for a mutation). */
  const authorize = async (req: IncomingMessage): Promise<void> => {
    if (await ctx.apiKeys.verify(presentedApiKey(req.headers))) return;
    if (sessions.authorizes(req.method ?? 'GET', req.headers)) return;
    throw new CapsuleError('unauthenticated', 'a valid API key is required over TCP', {
      hint: 'send it as X-API-Key; create one with `capsule apikey create NAME`',
    });
  };
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
        proxied = proxyToAgent(agentProxy, { sandboxId: port.sandboxId, path: port.path, form: 'header' }, req, res, tcp);
      } else if (port) {
        proxied = proxyToPort(ports, port, req, res, tcp);
      } else {
        const target = agentTarget(req.url ?? '/', req.headers);
        if (target) proxied = proxyToAgent(agentProxy, target, req, res, tcp);
        else {
          // An upload may be large; its size is bounded where it is read (build-context-upload.ts, volumes/volume-image.ts).
          requestBodyDeadline(req, res, isUpload(req) ? serverLimits.uploadBodyTimeoutMs : serverLimits.requestBodyTimeoutMs);
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
  const terminals = { agentOf: (id: string) => ctx.manager.agentOf(id), log: ctx.log };
  /** A terminal's path, unless the host name names a sandbox port: then the upgrade is that service's, whatever its path (as for requests). */
  const isForTerminal = (req: IncomingMessage): boolean => {
    if (!isTerminalUpgrade(req.url ?? '/')) return false;
    try {
      return portTarget(req.url ?? '/', req.headers.host, ctx.domain) === undefined;
    } catch {
      return false; // a malformed port host name: upgradeToPort answers it
    }
  };
  const onUpgrade = (tcp: boolean) => (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const upgraded = isForTerminal(req)
      ? upgradeToTerminal({ ...terminals, authorize: tcp ? authorize : async () => undefined }, req, socket, head)
      : upgradeToPort(ports, req, socket, head, tcp);
    upgraded.catch((err: unknown) => {
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
    loggerInstance: ctx.log.child(
      { component: 'api' },
      { level: ctx.log.level === 'debug' || ctx.log.level === 'trace' ? ctx.log.level : 'warn' },
    ) as FastifyBaseLogger,
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
    const known = capsuleErrorOf(err);
    if (known) return sendError(reply, known);
    request.log.error({ err }, 'unhandled error');
    return sendError(reply, new CapsuleError('internal', err instanceof Error ? err.message : String(err)));
  });
  // Thrown, not sent: it is answered by the error handler and counted as every error answer is (metrics.ts).
  app.setNotFoundHandler((request) => {
    throw new CapsuleError('not_found', `no route ${request.method} ${request.url}`, { hint: 'see /openapi.json for the routes' });
  });
  // Before any route, so that the e2b scope inherits its hooks too.
  instrumentApi(app, ctx.metrics);

  app.addHook('onRequest', async (request) => {
    // The matched route, not the URL: only the routes that answer without revealing anything go without a key.
    if (!viaTcp.has(request.raw) || request.url === '/health' || isE2bVolumeContentRoute(request.routeOptions.url)) return;
    if (PUBLIC_DASHBOARD_ROUTES.has(`${request.method} ${request.routeOptions.url}`)) return;
    await authorize(request.raw);
  });

  // Uploads (a build context, a volume image) are read as streams by their routes, bounded there; never buffered whole.
  for (const type of UPLOAD_CONTENT_TYPES) app.addContentTypeParser(type, (_request, payload, done) => done(null, payload));

  const isViaTcp = (req: IncomingMessage) => viaTcp.has(req);
  const listSandboxes = () => ctx.manager.list(false);
  const sampler = new UsageSampler(
    ctx.metricsIntervalMs,
    {
      listSandboxes,
      stateDir: (id) => ctx.manager.stateDir(id),
      askGuest: async (id, timeoutMs, maxBytes) => (await ctx.manager.agentOf(id)).agent.getJson('/metrics', timeoutMs, maxBytes),
    },
    ctx.log,
  );
  await sampler.start();
  addRoutes(app, [
    ...systemRoutes(
      ctx.info,
      ctx.settings,
      ctx.diskUsage,
      new ScrapeTimeMetrics(ctx.metrics, {
        listSandboxes,
        usageOf: (sandbox, pid) => sampler.currentUsage(sandbox, pid),
        warmPools: () => ctx.templates.warm.poolStatuses(),
      }),
    ),
    ...templateRoutes(ctx.templates, isViaTcp),
    ...imageRoutes(ctx.images, ctx.templates, isViaTcp),
    ...sandboxRoutes(ctx.manager, ctx.templates),
    ...sandboxMetricsRoutes(ctx.manager, sampler),
    ...apiKeyRoutes(ctx.apiKeys, isViaTcp),
    ...volumeRoutes(ctx.volumes),
    ...workloadRoutes(ctx.workloads),
    ...eventRoutes(ctx.store, ctx.webhooks),
    ...dashboardRoutes(sessions, ctx.apiKeys, ctx.dashboardDir ?? dashboardDist, isViaTcp),
  ]);

  // e2b's routes answer errors in e2b's shape, so they get a scope with an error handler of their own.
  const buildFiles = new E2bBuildFiles(
    ctx.templates.buildUploadsDir(),
    () => ctx.templates.newBuildContextDir(),
    ctx.buildUploadsMaxIdleMs,
  );
  // Uploads of builds a previous daemon ran: none of them is under way now.
  buildFiles.prune();
  const e2bBuilds = new E2bTemplateBuilds(ctx.templates, buildFiles, ctx.log);
  await app.register(async (scope) => {
    scope.setErrorHandler(e2bErrorHandler);
    addRoutes(scope, [
      ...e2bRoutes(ctx.manager, ctx.tokens, sampler, ctx.volumes),
      ...e2bSnapshotRoutes(ctx.manager, ctx.templates),
      ...e2bVolumeRoutes(ctx.volumes, ctx.volumeTokens, isViaTcp),
      ...e2bTemplateBuildRoutes(e2bBuilds, buildFiles, ctx.templates),
    ]);
    // The SDK uploads build files with no content type: in a scope of its own, any body reaches the route as a stream.
    await scope.register(async (uploads) => {
      uploads.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
      addRoutes(uploads, [e2bBuildFileUploadRoute(buildFiles, ctx.templates)]);
    });
  });

  return {
    app,
    async listenTcp(host, port, tls) {
      // Fastify sets up its routes' hooks at ready(), which listening on the socket does; TCP may come first.
      await app.ready();
      const server = createHttpServer(
        (req, res) => {
          viaTcp.add(req);
          dispatch(req, res);
        },
        onUpgrade(true),
        tls,
      );
      tcpServers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => resolve());
      });
      const address = server.address() as AddressInfo;
      return `${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`;
    },
    async close() {
      sampler.stop();
      await e2bBuilds.close();
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
  // Upgrades are served for sandbox ports (WebSocket, port-forward tunnels) and the dashboard's terminals.
  server.on('upgrade', onUpgrade);
  server.keepAliveTimeout = 72_000;
  return server;
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
    err instanceof CapsuleError
      ? err
      : new CapsuleError('invalid_argument', `the request is malformed: ${errorMessage(err).slice(0, 200)}`, {
          hint: 'check the URL, its percent-encodings and the headers',
        }),
  );
}

function sendError(reply: FastifyReply, err: CapsuleError): FastifyReply {
  const body: ErrorBody = { error: { code: err.code, message: err.message, ...(err.hint ? { hint: err.hint } : {}) } };
  const retryAfter = retryAfterSeconds[err.code];
  if (retryAfter !== undefined) reply.header('retry-after', String(retryAfter));
  return reply.code(httpStatusOf(err.code)).type('application/json').send(body);
}

const UPLOAD_CONTENT_TYPES = [BUILD_CONTEXT_CONTENT_TYPE, VOLUME_IMAGE_CONTENT_TYPE];

function isUpload(req: IncomingMessage): boolean {
  return UPLOAD_CONTENT_TYPES.includes((req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() ?? '');
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
