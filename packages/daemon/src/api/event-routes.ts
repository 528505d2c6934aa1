// REST routes of the event stream (`GET /v1/events`, Server-Sent Events) and
// of webhooks. Routes only: the stream is events/event-stream.ts's, deliveries
// are events/webhooks.ts's; credentials are checked by server.ts as for every route.
import { CreatedWebhook, CreateWebhookRequest, EventQuery, WebhookDeliveryList, WebhookList, CapsuleEvent } from '@capsule/protocol';
import { CapsuleError } from '../errors.js';
import { serveEventStream, type StreamStart } from '../events/event-stream.js';
import { parseCursor, parseFilter } from '../events/event-view.js';
import type { Webhooks } from '../events/webhooks.js';
import type { Store } from '../store/store.js';
import { errorResponses, IdParams, route, type ApiRoute } from './routes.js';

/** Entries of a delivery log one GET answers. */
const DELIVERIES_LISTED = 100;

export function eventRoutes(store: Store, webhooks: Webhooks): ApiRoute[] {
  return [
    route<{ Querystring: EventQuery }>({
      method: 'GET',
      url: '/v1/events',
      schema: {
        querystring: EventQuery,
        description:
          'Server-Sent Events: sandbox transitions, template and image events. Resumes after the event named by Last-Event-ID or `since` (an event id or an RFC 3339 time); without either, new events only.',
        response: {
          200: { description: 'CapsuleEvent messages', content: { 'text/event-stream': { schema: CapsuleEvent } } },
          ...errorResponses,
        },
      },
      handler: async (request, reply) => {
        const filter = parseFilter(request.query);
        const lastEventId = request.headers['last-event-id'];
        const start = streamStart(typeof lastEventId === 'string' && lastEventId !== '' ? lastEventId : request.query.since);
        reply.hijack();
        await serveEventStream(store, reply.raw, filter, start);
      },
    }),
    route({
      method: 'GET',
      url: '/v1/webhooks',
      schema: { response: { 200: WebhookList, ...errorResponses } },
      handler: async () => ({ webhooks: await webhooks.list() }),
    }),
    route<{ Body: CreateWebhookRequest }>({
      method: 'POST',
      url: '/v1/webhooks',
      schema: {
        body: CreateWebhookRequest,
        description: 'Registers a URL that receives events as signed POSTs; the secret is in this answer only.',
        response: { 201: CreatedWebhook, ...errorResponses },
      },
      handler: async (request, reply) => reply.code(201).send(await webhooks.add(request.body)),
    }),
    route<{ Params: { id: string } }>({
      method: 'DELETE',
      url: '/v1/webhooks/:id',
      schema: { params: IdParams, response: { ...errorResponses } },
      handler: async (request, reply) => {
        await webhooks.remove(request.params.id);
        return reply.code(204).send();
      },
    }),
    route<{ Params: { id: string } }>({
      method: 'GET',
      url: '/v1/webhooks/:id/deliveries',
      schema: {
        params: IdParams,
        description: `A webhook's newest ${DELIVERIES_LISTED} deliveries, newest first.`,
        response: { 200: WebhookDeliveryList, ...errorResponses },
      },
      handler: async (request) => ({ deliveries: await webhooks.deliveries(request.params.id, DELIVERIES_LISTED) }),
    }),
  ];
}

/** Where a stream starts from `since` or Last-Event-ID: an event id, an RFC 3339 time, or (absent) now. */
function streamStart(since: string | undefined): StreamStart {
  if (since === undefined || since === '') return 'now';
  const cursor = parseCursor(since);
  if (cursor) return { after: cursor };
  const ms = /^\d{4}-\d{2}-\d{2}T/.test(since) ? Date.parse(since) : Number.NaN;
  if (!Number.isNaN(ms)) return { at: new Date(ms).toISOString() };
  throw new CapsuleError('invalid_argument', `"${since.slice(0, 64)}" is neither an event id nor an RFC 3339 time`, {
    hint: 'pass the id of the last event seen (like 42-7) or a time like 2026-01-02T15:04:05Z',
  });
}
