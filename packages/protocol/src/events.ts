// The event stream's and the webhooks' contract: what `GET /v1/events` sends
// as Server-Sent Events, what a webhook receives, and the webhook routes'
// schemas. Nothing here may import daemon or client code.
import { Type, type Static } from '@sinclair/typebox';
import { SandboxState } from './api.js';

/** Every event type; a filter may also name a family (`sandbox`, `template`, `image`). */
export const EVENT_TYPES = [
  'sandbox.created',
  'sandbox.running',
  'sandbox.paused',
  'sandbox.stopped',
  'sandbox.error',
  'sandbox.killed',
  'template.created',
  'template.built',
  'template.removed',
  'image.pulled',
  'image.imported',
  'image.removed',
  'workload.applied',
  'workload.pulling',
  'workload.created',
  'workload.replaced',
  'workload.scaled',
  'workload.restarted',
  'workload.ready',
  'workload.unhealthy',
  'workload.degraded',
  'workload.stopped',
  'workload.started',
  'workload.removed',
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export const EVENT_FAMILIES = ['sandbox', 'template', 'image', 'workload'] as const;

export const CapsuleEvent = Type.Object({
  /** Opaque; resume after this event with `Last-Event-ID` or `?since=`. */
  id: Type.String(),
  type: Type.String({ description: EVENT_TYPES.join(', ') }),
  at: Type.String({ format: 'date-time' }),
  sandboxId: Type.Optional(Type.String()),
  /** The sandbox's template, or the template the event is about. */
  template: Type.Optional(Type.String()),
  /** The image reference (or digest) the event is about. */
  image: Type.Optional(Type.String()),
  /** The workload the event is about. */
  workload: Type.Optional(Type.String()),
  /** A sandbox event's new state. */
  state: Type.Optional(SandboxState),
  reason: Type.String({ description: 'user, timeout, crash, oom, host_restart, snapshot, ...' }),
  message: Type.Optional(Type.String()),
});
export type CapsuleEvent = Static<typeof CapsuleEvent>;

/** The query of `GET /v1/events`; each filter is a comma-separated list (any of them matches). */
export const EventQuery = Type.Object(
  {
    sandbox: Type.Optional(Type.String({ maxLength: 4096 })),
    template: Type.Optional(Type.String({ maxLength: 4096 })),
    type: Type.Optional(Type.String({ maxLength: 4096 })),
    /** An event id (events after it) or an RFC 3339 time (events at or after it); without it, new events only. */
    since: Type.Optional(Type.String({ maxLength: 64 })),
  },
  { additionalProperties: false },
);
export type EventQuery = Static<typeof EventQuery>;

/** The SSE event name of the stream's last message when the daemon cuts a client that reads too slowly: resume from the last id. */
export const EVENT_STREAM_OVERFLOW = 'overflow';

/** The header a webhook delivery is signed in: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`. */
export const WEBHOOK_SIGNATURE_HEADER = 'capsule-signature';

/** A webhook delivery's body: E2B's lifecycle-webhook field names where they map, Capsule's event types. */
export const WebhookPayload = Type.Object({
  version: Type.Literal('v1'),
  /** The event's id; a retried delivery keeps it, so receivers can drop repeats. */
  id: Type.String(),
  type: Type.String(),
  timestamp: Type.String({ format: 'date-time' }),
  sandboxId: Type.Optional(Type.String()),
  sandboxTemplateId: Type.Optional(Type.String()),
  eventData: Type.Object({
    state: Type.Optional(SandboxState),
    reason: Type.String(),
    message: Type.Optional(Type.String()),
    template: Type.Optional(Type.String()),
    image: Type.Optional(Type.String()),
    workload: Type.Optional(Type.String()),
  }),
});
export type WebhookPayload = Static<typeof WebhookPayload>;

export const Webhook = Type.Object({
  id: Type.String(),
  url: Type.String(),
  /** Event types or families it receives; empty: every event. */
  events: Type.Array(Type.String()),
  createdAt: Type.String({ format: 'date-time' }),
});
export type Webhook = Static<typeof Webhook>;

export const WebhookList = Type.Object({ webhooks: Type.Array(Webhook) });
export type WebhookList = Static<typeof WebhookList>;

export const CreateWebhookRequest = Type.Object(
  {
    url: Type.String({ minLength: 1, maxLength: 2048 }),
    /** The signing secret; without one the daemon makes one, shown in the answer only. */
    secret: Type.Optional(Type.String({ minLength: 16, maxLength: 256 })),
    events: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 32 })),
  },
  { additionalProperties: false },
);
export type CreateWebhookRequest = Static<typeof CreateWebhookRequest>;

/** The answer to a create: the only time the secret is shown. */
export const CreatedWebhook = Type.Composite([Webhook, Type.Object({ secret: Type.String() })]);
export type CreatedWebhook = Static<typeof CreatedWebhook>;

export const WebhookDelivery = Type.Object({
  id: Type.Integer(),
  eventId: Type.String(),
  eventType: Type.String(),
  /** pending: queued or waiting for a retry; delivered: a 2xx answer; failed: out of attempts (or capsuled stopped first). */
  status: Type.Union([Type.Literal('pending'), Type.Literal('delivered'), Type.Literal('failed')]),
  attempts: Type.Integer(),
  /** The HTTP status of the last attempt, when the receiver answered. */
  httpStatus: Type.Optional(Type.Integer()),
  /** Why the last attempt failed. */
  error: Type.Optional(Type.String()),
  createdAt: Type.String({ format: 'date-time' }),
  updatedAt: Type.String({ format: 'date-time' }),
});
export type WebhookDelivery = Static<typeof WebhookDelivery>;

export const WebhookDeliveryList = Type.Object({ deliveries: Type.Array(WebhookDelivery) });
export type WebhookDeliveryList = Static<typeof WebhookDeliveryList>;
