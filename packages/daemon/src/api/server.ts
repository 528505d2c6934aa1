// The REST API: Fastify on a unix socket (0600, so only the local user's
// clients reach it), request validation from the TypeBox schemas in
// @capsule/protocol, and one error handler mapping CapsuleError codes to HTTP.
import fs from 'node:fs';
import type { ServerResponse } from 'node:http';
import path from 'node:path';
import fastifySwagger from '@fastify/swagger';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify';
import {
  CreateSandboxRequest,
  DaemonInfo,
  ErrorResponse,
  ExecEvent,
  ExecRequest,
  ExecResult,
  ForkRequest,
  Sandbox,
  SandboxList,
  SetTimeoutRequest,
  TemplateList,
  httpStatusOf,
  type ErrorBody,
} from '@capsule/protocol';
import { CapsuleError } from '../errors.js';
import type { ImageService } from '../images/image-service.js';
import { registerImageRoutes } from './image-routes.js';
import type { Logger } from '../log.js';
import type { SandboxManager } from '../sandboxes/manager.js';
import type { Store } from '../store/store.js';

export interface ApiContext {
  manager: SandboxManager;
  images: ImageService;
  store: Store;
  info: () => DaemonInfo;
  log: Logger;
  version: string;
}

const IdParams = {
  type: 'object',
  properties: { id: { type: 'string', minLength: 1, maxLength: 128 } },
  required: ['id'],
} as const;

const errorResponses = { 400: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse, 500: ErrorResponse, 502: ErrorResponse };

export async function buildApi(ctx: ApiContext): Promise<FastifyInstance> {
  const app = Fastify({
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
    const fastifyErr = err as { validation?: unknown; statusCode?: number; message: string };
    if (fastifyErr.validation || fastifyErr.statusCode === 400) {
      return sendError(reply, new CapsuleError('invalid_argument', fastifyErr.message, { hint: 'see /openapi.json for the request schema' }));
    }
    if (fastifyErr.statusCode === 413) {
      return sendError(reply, new CapsuleError('invalid_argument', 'the request body is too large'));
    }
    request.log.error({ err }, 'unhandled error');
    return sendError(reply, new CapsuleError('internal', err instanceof Error ? err.message : String(err)));
  });
  app.setNotFoundHandler((request, reply) =>
    sendError(reply, new CapsuleError('not_found', `no route ${request.method} ${request.url}`, { hint: 'see /openapi.json for the routes' })),
  );

  app.get('/health', { schema: { hide: true } }, async () => ({ status: 'ok' }));
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  app.get('/v1/info', { schema: { response: { 200: DaemonInfo } } }, async () => ctx.info());

  app.get('/v1/templates', { schema: { response: { 200: TemplateList } } }, async () => {
    const templates = await ctx.store.listTemplates();
    return {
      templates: templates.map((t) => ({
        name: t.name,
        ready: [t.kernel, t.initramfs, t.kit, t.rootfs].every((f) => fs.existsSync(f)),
        rootfsBytes: fileSize(t.rootfs),
        defaultVcpus: t.default_vcpus,
        defaultMemoryMiB: t.default_memory_mib,
        createdAt: t.created_at,
        warmSnapshot: ctx.manager.warmSnapshotState(t.name),
      })),
    };
  });

  registerImageRoutes(app, ctx.images);

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

  return app;
}

function sendError(reply: FastifyReply, err: CapsuleError): FastifyReply {
  const body: ErrorBody = { error: { code: err.code, message: err.message, ...(err.hint ? { hint: err.hint } : {}) } };
  return reply.code(httpStatusOf(err.code)).type('application/json').send(body);
}

/** An AbortSignal that fires when the client goes away before the response is done. */
function abortOnClose(res: ServerResponse): AbortSignal {
  const controller = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) controller.abort(new Error('the client disconnected'));
  });
  return controller.signal;
}

function fileSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

/** Listens on the unix socket, replacing a stale one, readable by the owner only. */
export async function listenOnSocket(app: FastifyInstance, socketPath: string): Promise<void> {
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
