// REST routes of sandboxes: create, list, get, remove; exec (whole or
// streamed); timeout, keepalive, network; stop, start, restart, resources;
// pause, resume, fork, snapshot; the SSH server; the console log. Each is a thin mapping onto the sandbox manager, which owns
// every rule; a route never changes a sandbox by any other way.
import type { ServerResponse } from 'node:http';
import {
  CreateSandboxRequest,
  ExecEvent,
  ExecRequest,
  ExecResult,
  ForkRequest,
  Sandbox,
  SandboxList,
  SetNetworkRequest,
  SetResourcesRequest,
  SetTimeoutRequest,
  SnapshotRequest,
  SshServer,
  Template,
} from '@capsule/protocol';
import type { SandboxManager } from '../sandboxes/manager.js';
import type { Templates } from '../templates/templates.js';
import { errorResponses, IdParams, route, type ApiRoute } from './routes.js';
import { parseQueryTime } from './metrics-range.js';

export function sandboxRoutes(manager: SandboxManager, templates: Templates): ApiRoute[] {
  return [
    route<{ Body: CreateSandboxRequest }>({
      method: 'POST',
      url: '/v1/sandboxes',
      schema: { body: CreateSandboxRequest, response: { 201: Sandbox, ...errorResponses } },
      handler: async (request, reply) => {
        const sandbox = await manager.create(request.body);
        return reply.code(201).send(sandbox);
      },
    }),

    route<{ Querystring: { all?: boolean } }>({
      method: 'GET',
      url: '/v1/sandboxes',
      schema: { querystring: { type: 'object', properties: { all: { type: 'boolean' } } }, response: { 200: SandboxList } },
      handler: async (request) => ({ sandboxes: await manager.list(request.query.all === true) }),
    }),

    route<{ Params: { id: string } }>({
      method: 'GET',
      url: '/v1/sandboxes/:id',
      schema: { params: IdParams, response: { 200: Sandbox, ...errorResponses } },
      handler: async (request) => await manager.get(request.params.id),
    }),

    route<{ Params: { id: string } }>({
      method: 'DELETE',
      url: '/v1/sandboxes/:id',
      schema: { params: IdParams, response: { ...errorResponses } },
      handler: async (request, reply) => {
        await manager.remove(request.params.id);
        return reply.code(204).send();
      },
    }),

    route<{ Params: { id: string }; Body: ExecRequest }>({
      method: 'POST',
      url: '/v1/sandboxes/:id/exec',
      schema: { params: IdParams, body: ExecRequest, response: { 200: ExecResult, ...errorResponses } },
      handler: async (request, reply) => await manager.exec(request.params.id, request.body, abortOnClose(reply.raw)),
    }),

    route<{ Params: { id: string }; Body: ExecRequest }>({
      method: 'POST',
      url: '/v1/sandboxes/:id/exec/stream',
      schema: {
        params: IdParams,
        body: ExecRequest,
        description: 'Streams application/x-ndjson, one ExecEvent per line; the last line is an `exit` or `error` event.',
        response: {
          200: { description: 'ExecEvent lines', content: { 'application/x-ndjson': { schema: ExecEvent } } },
          ...errorResponses,
        },
      },
      handler: async (request, reply) => {
        const events = await manager.execStream(request.params.id, request.body, abortOnClose(reply.raw));
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
    }),

    route<{ Params: { id: string } }>({
      method: 'POST',
      url: '/v1/sandboxes/:id/ssh',
      schema: {
        params: IdParams,
        description:
          'Starts the sandbox’s SSH server unless it runs (host keys made in the guest for this sandbox alone) and returns its ' +
          'host keys; connect through a tunnel to port 22 (`/v1/sandboxes/{id}/tunnel/22`).',
        response: { 200: SshServer, ...errorResponses },
      },
      handler: async (request) => await manager.startSshServer(request.params.id),
    }),

    route<{ Params: { id: string }; Body: SetTimeoutRequest }>({
      method: 'POST',
      url: '/v1/sandboxes/:id/timeout',
      schema: {
        params: IdParams,
        body: SetTimeoutRequest,
        description: 'Sets a running sandbox’s lifetime, counted from now; 0 removes the timeout.',
        response: { 200: Sandbox, ...errorResponses },
      },
      handler: async (request) => await manager.setTimeout(request.params.id, request.body.timeoutMs),
    }),

    route<{ Params: { id: string } }>({
      method: 'POST',
      url: '/v1/sandboxes/:id/keepalive',
      schema: {
        params: IdParams,
        description: 'Restarts a running sandbox’s timeout from now, keeping its length.',
        response: { 200: Sandbox, ...errorResponses },
      },
      handler: async (request) => await manager.keepAlive(request.params.id),
    }),

    route<{ Params: { id: string }; Body: SetNetworkRequest }>({
      method: 'POST',
      url: '/v1/sandboxes/:id/network',
      schema: {
        params: IdParams,
        body: SetNetworkRequest,
        description: 'Changes what a running or paused sandbox may reach: `internet` on or off, and (TAP mode) egress allow/deny lists.',
        response: { 200: Sandbox, ...errorResponses },
      },
      handler: async (request) => await manager.setNetwork(request.params.id, request.body),
    }),

    route<{ Params: { id: string } }>({
      method: 'POST',
      url: '/v1/sandboxes/:id/pause',
      schema: {
        params: IdParams,
        description:
          "Saves the sandbox's memory and devices into its folder and ends its VM; its disk stays. A paused sandbox uses no RAM.",
        response: { 200: Sandbox, ...errorResponses },
      },
      handler: async (request) => await manager.pause(request.params.id),
    }),

    route<{ Params: { id: string }; Body: ForkRequest }>({
      method: 'POST',
      url: '/v1/sandboxes/:id/fork',
      schema: {
        params: IdParams,
        body: ForkRequest,
        description: 'Starts `count` sandboxes that each continue from this moment of the sandbox, with its memory, processes and disk.',
        response: { 201: SandboxList, ...errorResponses },
      },
      handler: async (request, reply) =>
        reply.code(201).send({ sandboxes: await manager.fork(request.params.id, request.body.count ?? 1) }),
    }),

    route<{ Params: { id: string }; Body: SnapshotRequest }>({
      method: 'POST',
      url: '/v1/sandboxes/:id/snapshot',
      schema: {
        params: IdParams,
        body: SnapshotRequest,
        description: 'Makes the sandbox’s current state (memory, processes, disk) a new warm template; the sandbox runs on.',
        response: { 201: Template, ...errorResponses },
      },
      handler: async (request, reply) =>
        reply.code(201).send(templates.view(await manager.snapshot(request.params.id, request.body.template))),
    }),

    route<{ Params: { id: string } }>({
      method: 'POST',
      url: '/v1/sandboxes/:id/resume',
      schema: {
        params: IdParams,
        description: 'Starts a paused sandbox again where it stopped, with its clock corrected and its lifetime restarted.',
        response: { 200: Sandbox, ...errorResponses },
      },
      handler: async (request) => await manager.resume(request.params.id),
    }),

    ...(['stop', 'start', 'restart'] as const).map((action) =>
      route<{ Params: { id: string } }>({
        method: 'POST',
        url: `/v1/sandboxes/:id/${action}`,
        schema: {
          params: IdParams,
          description: {
            stop: 'Asks the guest to flush and power off (then ends its VM after a grace period); the disk stays and no memory is used. Stopping a stopped sandbox does nothing.',
            start: 'Boots a stopped sandbox again from its own disk, with its current resources; its lifetime starts again.',
            restart: 'Stops a running sandbox and starts it again from its disk.',
          }[action],
          response: { 200: Sandbox, ...errorResponses },
        },
        handler: async (request) => await manager[action](request.params.id),
      }),
    ),

    route<{ Params: { id: string }; Body: SetResourcesRequest }>({
      method: 'PATCH',
      url: '/v1/sandboxes/:id/resources',
      schema: {
        params: IdParams,
        body: SetResourcesRequest,
        description: 'Changes a stopped sandbox’s vCPUs, memory or root disk size (grow only; its filesystem grows at the next start).',
        response: { 200: Sandbox, ...errorResponses },
      },
      handler: async (request) => await manager.setResources(request.params.id, request.body),
    }),

    route<{ Params: { id: string }; Querystring: { since?: string } }>({
      method: 'GET',
      url: '/v1/sandboxes/:id/logs',
      schema: {
        params: IdParams,
        querystring: {
          type: 'object',
          properties: {
            since: { type: 'string', maxLength: 64, description: 'only what the guest wrote from then on: Unix seconds or ISO 8601' },
          },
        },
        description: "The sandbox's serial console (text/plain, the last MiB or two).",
      },
      handler: async (request, reply) => {
        const since = request.query.since;
        const sinceMs =
          since === undefined || since === ''
            ? undefined
            : parseQueryTime(
                'since',
                since,
                'give since as Unix seconds (e.g. 1765000000) or an ISO 8601 time (e.g. 2026-12-07T15:00:00Z)',
              );
        const log = await manager.consoleLog(request.params.id, sinceMs);
        return reply.type('text/plain; charset=utf-8').send(log);
      },
    }),
  ];
}

/** An AbortSignal that fires when the client goes away before the response is done. */
function abortOnClose(res: ServerResponse): AbortSignal {
  const controller = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) controller.abort(new Error('the client disconnected'));
  });
  return controller.signal;
}
