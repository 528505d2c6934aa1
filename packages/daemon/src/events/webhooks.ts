// Webhooks: URLs that receive every event they ask for as a signed JSON POST.
// Deliveries run off a bounded in-memory queue with a few senders, each
// attempt under a timeout and retried with exponential backoff a bounded
// number of times, each logged in the store. They must never block or fail the
// write that made the event (the feed listener only enqueues), and a full
// queue drops a delivery (logged) rather than grow.
import { randomBytes } from 'node:crypto';
import { CapsuleError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { RecordedEvent } from '../store/event-feed.js';
import {
  deleteWebhook,
  failPendingDeliveries,
  getWebhook,
  insertDelivery,
  insertWebhook,
  listDeliveries,
  listWebhooks,
  updateDelivery,
  type WebhookDeliveryRecord,
  type WebhookRecord,
} from '../store/events.js';
import type { Store } from '../store/store.js';
import type { CreatedWebhook, CreateWebhookRequest, SandboxState, Webhook, WebhookDelivery, WebhookPayload } from '@capsule/protocol';
import { WEBHOOK_SIGNATURE_HEADER } from '@capsule/protocol';
import { checkEventTypes, eventType, matches, NO_FILTER, type EventFilter } from './event-view.js';
import { signWebhookBody } from './webhook-signature.js';

export interface WebhookLimits {
  /** Attempts per delivery, the first included. */
  maxAttempts: number;
  /** The wait before the first retry; each next one doubles, up to maxRetryDelayMs. */
  firstRetryDelayMs: number;
  maxRetryDelayMs: number;
  /** One attempt's time to connect, send and get the answer's head. */
  attemptTimeoutMs: number;
  /** Deliveries queued, in flight or waiting for a retry; more are dropped. */
  maxQueued: number;
  /** Attempts in flight at once. */
  concurrency: number;
}

export const defaultWebhookLimits: WebhookLimits = {
  maxAttempts: 6,
  firstRetryDelayMs: 2_000,
  maxRetryDelayMs: 5 * 60_000,
  attemptTimeoutMs: 10_000,
  maxQueued: 1_000,
  concurrency: 4,
};

/** How long to wait after failed attempt number `attempt` (1-based) before the next. */
export function retryDelayMs(attempt: number, limits: Pick<WebhookLimits, 'firstRetryDelayMs' | 'maxRetryDelayMs'>): number {
  return Math.min(limits.maxRetryDelayMs, limits.firstRetryDelayMs * 2 ** (attempt - 1));
}

/** A webhook URL must be http(s) with no credentials in it; anything else is refused before it is stored. */
export function checkWebhookUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new CapsuleError('invalid_argument', `"${text.slice(0, 100)}" is not a URL`, { hint: 'give an http:// or https:// URL' });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new CapsuleError('invalid_argument', `a webhook URL must be http or https, not ${url.protocol.replace(/:$/, '')}`, {
      hint: 'give an http:// or https:// URL',
    });
  }
  if (url.username !== '' || url.password !== '') {
    throw new CapsuleError('invalid_argument', 'a webhook URL may not carry a user name or password', {
      hint: 'the receiver authenticates deliveries by their signature (see docs/api.md)',
    });
  }
  return url.toString();
}

/** The body a webhook receives for an event. */
export function webhookPayload(event: RecordedEvent): WebhookPayload {
  const common = {
    version: 'v1' as const,
    // Unique per event across both histories (the stream's ids are cursors, which are not).
    id: `${event.kind === 'sandbox' ? 's' : 'r'}${event.id}`,
    type: eventType(event),
    timestamp: event.at,
  };
  const message = event.message !== null ? { message: event.message } : {};
  if (event.kind === 'sandbox') {
    return {
      ...common,
      sandboxId: event.sandboxId,
      sandboxTemplateId: event.template,
      eventData: { state: event.state as SandboxState, reason: event.reason, ...message },
    };
  }
  return {
    ...common,
    eventData: {
      reason: event.reason,
      ...message,
      ...(event.template !== null ? { template: event.template } : {}),
      ...(event.image !== null ? { image: event.image } : {}),
      ...(event.workload !== null ? { workload: event.workload } : {}),
    },
  };
}

interface Delivery {
  webhook: WebhookRecord;
  eventId: string;
  eventType: string;
  body: string;
  attempts: number;
  /** Its row in the delivery log, once written. */
  logId: Promise<number>;
}

export class Webhooks {
  /** What the feed listener matches against without reading the store. */
  #webhooks: { record: WebhookRecord; filter: EventFilter }[] = [];
  readonly #ready: Delivery[] = [];
  readonly #retryTimers = new Set<NodeJS.Timeout>();
  readonly #inFlight = new Set<AbortController>();
  #queued = 0;
  #unsubscribe: (() => void) | undefined;

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
    private readonly limits: WebhookLimits = defaultWebhookLimits,
  ) {}

  async start(): Promise<void> {
    await failPendingDeliveries(this.store, 'capsuled stopped before it was delivered');
    this.#webhooks = (await listWebhooks(this.store)).map(subscribed);
    this.#unsubscribe = this.store.feed.subscribe((event) => this.#enqueue(event));
  }

  /** Stops taking events and abandons queued deliveries (they stay `pending` until the next start marks them failed). */
  stop(): void {
    this.#unsubscribe?.();
    for (const timer of this.#retryTimers) clearTimeout(timer);
    this.#retryTimers.clear();
    for (const controller of this.#inFlight) controller.abort(new Error('capsuled is stopping'));
    this.#ready.length = 0;
  }

  async add(request: CreateWebhookRequest): Promise<CreatedWebhook> {
    const row: WebhookRecord = {
      id: `wh_${randomBytes(8).toString('hex')}`,
      url: checkWebhookUrl(request.url),
      secret: request.secret ?? `whsec_${randomBytes(24).toString('base64url')}`,
      events: JSON.stringify(checkEventTypes(request.events ?? [])),
      created_at: new Date().toISOString(),
    };
    await insertWebhook(this.store, row);
    this.#webhooks = [...this.#webhooks, subscribed(row)];
    return { ...view(row), secret: row.secret };
  }

  async list(): Promise<Webhook[]> {
    return (await listWebhooks(this.store)).map(view);
  }

  async remove(id: string): Promise<void> {
    if (!(await deleteWebhook(this.store, id))) throw webhookNotFound(id);
    this.#webhooks = this.#webhooks.filter((w) => w.record.id !== id);
  }

  /** A webhook's delivery log, newest first. */
  async deliveries(id: string, limit: number): Promise<WebhookDelivery[]> {
    if (!(await getWebhook(this.store, id))) throw webhookNotFound(id);
    return (await listDeliveries(this.store, id, limit)).map(deliveryView);
  }

  #enqueue(event: RecordedEvent): void {
    const wanting = this.#webhooks.filter((w) => matches(w.filter, event)).map((w) => w.record);
    if (wanting.length === 0) return;
    const payload = webhookPayload(event);
    const body = JSON.stringify(payload);
    for (const webhook of wanting) {
      if (this.#queued >= this.limits.maxQueued) {
        this.log.warn({ webhook: webhook.id, event: payload.id }, 'the webhook queue is full: a delivery was dropped');
        continue;
      }
      this.#queued++;
      const logId = insertDelivery(this.store, webhook.id, payload.id, payload.type);
      // Awaited by the delivery's first update; a failure here is only logged there.
      logId.catch(() => undefined);
      this.#ready.push({ webhook, eventId: payload.id, eventType: payload.type, body, attempts: 0, logId });
    }
    this.#pump();
  }

  #pump(): void {
    while (this.#inFlight.size < this.limits.concurrency && this.#ready.length > 0) {
      const delivery = this.#ready.shift()!;
      const controller = new AbortController();
      this.#inFlight.add(controller);
      void this.#attempt(delivery, controller)
        .catch((err: unknown) =>
          this.log.error({ webhook: delivery.webhook.id, err: errorMessage(err) }, 'a webhook delivery failed outside its attempt'),
        )
        .finally(() => {
          this.#inFlight.delete(controller);
          this.#pump();
        });
    }
  }

  async #attempt(delivery: Delivery, controller: AbortController): Promise<void> {
    if (!this.#webhooks.some((w) => w.record.id === delivery.webhook.id)) {
      this.#queued--; // removed meanwhile; its log went with it
      return;
    }
    delivery.attempts++;
    const outcome = await this.#post(delivery, controller.signal);
    if (controller.signal.aborted) return; // stopping: the row stays pending
    const delivered = outcome.status !== undefined && outcome.status >= 200 && outcome.status < 300;
    const lastAttempt = delivery.attempts >= this.limits.maxAttempts;
    const status = delivered ? 'delivered' : lastAttempt ? 'failed' : 'pending';
    await updateDelivery(this.store, await delivery.logId, {
      status,
      attempts: delivery.attempts,
      http_status: outcome.status ?? null,
      error: delivered ? null : (outcome.error ?? `the receiver answered HTTP ${outcome.status}`),
    }).catch((err: unknown) => this.log.warn({ webhook: delivery.webhook.id, err: errorMessage(err) }, 'could not log a webhook delivery'));
    if (status !== 'pending') {
      this.#queued--;
      if (status === 'failed')
        this.log.warn({ webhook: delivery.webhook.id, event: delivery.eventId }, 'a webhook delivery failed for good');
      return;
    }
    const timer = setTimeout(
      () => {
        this.#retryTimers.delete(timer);
        this.#ready.push(delivery);
        this.#pump();
      },
      retryDelayMs(delivery.attempts, this.limits),
    );
    timer.unref();
    this.#retryTimers.add(timer);
  }

  /** One POST; redirects are not followed (a 3xx is a failed attempt), the answer's body is not read. */
  async #post(delivery: Delivery, stopping: AbortSignal): Promise<{ status?: number; error?: string }> {
    const signal = AbortSignal.any([stopping, AbortSignal.timeout(this.limits.attemptTimeoutMs)]);
    try {
      const response = await fetch(delivery.webhook.url, {
        method: 'POST',
        redirect: 'manual',
        signal,
        headers: {
          'content-type': 'application/json',
          'user-agent': 'capsuled-webhooks',
          [WEBHOOK_SIGNATURE_HEADER]: signWebhookBody(delivery.webhook.secret, Math.floor(Date.now() / 1000), delivery.body),
          'capsule-event-id': delivery.eventId,
          'capsule-event-type': delivery.eventType,
          'capsule-delivery-attempt': String(delivery.attempts),
        },
        body: delivery.body,
      });
      await response.body?.cancel();
      return { status: response.status };
    } catch (err) {
      const cause = (err as { cause?: unknown }).cause;
      const reason =
        signal.aborted && !stopping.aborted ? `no answer within ${this.limits.attemptTimeoutMs} ms` : errorMessage(cause ?? err);
      return { error: reason.slice(0, 500) };
    }
  }
}

function subscribed(record: WebhookRecord): { record: WebhookRecord; filter: EventFilter } {
  return { record, filter: { ...NO_FILTER, types: JSON.parse(record.events) as string[] } };
}

function view(row: WebhookRecord): Webhook {
  return { id: row.id, url: row.url, events: JSON.parse(row.events) as string[], createdAt: row.created_at };
}

function deliveryView(row: WebhookDeliveryRecord): WebhookDelivery {
  return {
    id: row.id,
    eventId: row.event_id,
    eventType: row.event_type,
    status: row.status as WebhookDelivery['status'],
    attempts: row.attempts,
    ...(row.http_status !== null ? { httpStatus: row.http_status } : {}),
    ...(row.error !== null ? { error: row.error } : {}),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

function webhookNotFound(id: string): CapsuleError {
  return new CapsuleError('not_found', `no webhook ${id}`, { hint: 'list them with `capsule webhook ls`' });
}
