// Rows of the event history and the webhooks: template, image and workload events
// (resource_events, kept bounded here), reading sandbox_events and
// resource_events in id order for the event stream's catch-up, and webhooks
// with their delivery log. Rows only: what an event means is events/'s business.
import type { Selectable } from 'kysely';
import type { ResourceEventRecorded, SandboxEventRecorded } from './event-feed.js';
import type { WebhookDeliveryRow, WebhookRow } from './schema.js';
import type { Store } from './store.js';

export type WebhookRecord = Selectable<WebhookRow>;
export type WebhookDeliveryRecord = Selectable<WebhookDeliveryRow>;

/** resource_events keeps its newest rows up to this many ... */
export const RESOURCE_EVENTS_KEPT = 10_000;
/** ... and none older than this. */
export const RESOURCE_EVENTS_MAX_AGE_MS = 30 * 24 * 3600_000;
/** Each webhook's delivery log keeps its newest rows up to this many. */
export const DELIVERIES_KEPT_PER_WEBHOOK = 200;

/** Records a template or image event, drops what retention no longer keeps, and tells the store's feed. */
export async function recordResourceEvent(
  store: Store,
  event: { type: string; template?: string; image?: string; workload?: string; reason: string; message?: string },
): Promise<void> {
  const at = new Date().toISOString();
  const row = {
    type: event.type,
    template: event.template ?? null,
    image: event.image ?? null,
    workload: event.workload ?? null,
    reason: event.reason,
    message: event.message ?? null,
    at,
  };
  const id = await store.db.transaction().execute(async (tx) => {
    const inserted = await tx.insertInto('resource_events').values(row).executeTakeFirstOrThrow();
    const newId = Number(inserted.insertId);
    const oldest = new Date(Date.parse(at) - RESOURCE_EVENTS_MAX_AGE_MS).toISOString();
    await tx
      .deleteFrom('resource_events')
      .where((eb) => eb.or([eb('id', '<=', newId - RESOURCE_EVENTS_KEPT), eb('at', '<', oldest)]))
      .execute();
    return newId;
  });
  store.feed.publish({ kind: 'resource', id, ...row });
}

/** Sandbox events after id `afterId`, oldest first, at most `limit`. */
export async function sandboxEventsAfter(store: Store, afterId: number, limit: number): Promise<SandboxEventRecorded[]> {
  const rows = await store.db
    .selectFrom('sandbox_events')
    .innerJoin('sandboxes', 'sandboxes.id', 'sandbox_events.sandbox_id')
    .select([
      'sandbox_events.id',
      'sandbox_events.sandbox_id',
      'sandboxes.template',
      'sandbox_events.state',
      'sandbox_events.reason',
      'sandbox_events.message',
      'sandbox_events.at',
    ])
    .where('sandbox_events.id', '>', afterId)
    .orderBy('sandbox_events.id', 'asc')
    .limit(limit)
    .execute();
  return rows.map((r) => ({
    kind: 'sandbox',
    id: r.id,
    sandboxId: r.sandbox_id,
    template: r.template,
    state: r.state,
    reason: r.reason,
    message: r.message,
    at: r.at,
  }));
}

/** Template and image events after id `afterId`, oldest first, at most `limit`. */
export async function resourceEventsAfter(store: Store, afterId: number, limit: number): Promise<ResourceEventRecorded[]> {
  const rows = await store.db
    .selectFrom('resource_events')
    .selectAll()
    .where('id', '>', afterId)
    .orderBy('id', 'asc')
    .limit(limit)
    .execute();
  return rows.map((r) => ({ kind: 'resource', ...r }));
}

/** The newest ids of both histories, or, with `before`, the newest of rows recorded before that time (0 for none). */
export async function lastEventIds(store: Store, before?: string): Promise<{ sandbox: number; resource: number }> {
  let sandbox = store.db.selectFrom('sandbox_events').select((eb) => eb.fn.max('id').as('id'));
  let resource = store.db.selectFrom('resource_events').select((eb) => eb.fn.max('id').as('id'));
  if (before !== undefined) {
    sandbox = sandbox.where('at', '<', before);
    resource = resource.where('at', '<', before);
  }
  return { sandbox: (await sandbox.executeTakeFirst())?.id ?? 0, resource: (await resource.executeTakeFirst())?.id ?? 0 };
}

export async function insertWebhook(store: Store, row: WebhookRecord): Promise<void> {
  await store.db.insertInto('webhooks').values(row).execute();
}

export async function listWebhooks(store: Store): Promise<WebhookRecord[]> {
  return await store.db.selectFrom('webhooks').selectAll().orderBy('created_at').execute();
}

export async function getWebhook(store: Store, id: string): Promise<WebhookRecord | undefined> {
  return await store.db.selectFrom('webhooks').selectAll().where('id', '=', id).executeTakeFirst();
}

/** True when a webhook was removed (its delivery log goes with it). */
export async function deleteWebhook(store: Store, id: string): Promise<boolean> {
  const result = await store.db.deleteFrom('webhooks').where('id', '=', id).executeTakeFirst();
  return result.numDeletedRows > 0n;
}

/** Logs a new pending delivery and trims the webhook's log to its newest rows; returns the row's id. */
export async function insertDelivery(store: Store, webhookId: string, eventId: string, eventType: string): Promise<number> {
  const at = new Date().toISOString();
  return await store.db.transaction().execute(async (tx) => {
    const inserted = await tx
      .insertInto('webhook_deliveries')
      .values({
        webhook_id: webhookId,
        event_id: eventId,
        event_type: eventType,
        status: 'pending',
        attempts: 0,
        http_status: null,
        error: null,
        created_at: at,
        updated_at: at,
      })
      .executeTakeFirstOrThrow();
    const oldestKept = await tx
      .selectFrom('webhook_deliveries')
      .select('id')
      .where('webhook_id', '=', webhookId)
      .orderBy('id', 'desc')
      .offset(DELIVERIES_KEPT_PER_WEBHOOK - 1)
      .limit(1)
      .executeTakeFirst();
    if (oldestKept) await tx.deleteFrom('webhook_deliveries').where('webhook_id', '=', webhookId).where('id', '<', oldestKept.id).execute();
    return Number(inserted.insertId);
  });
}

export async function updateDelivery(
  store: Store,
  id: number,
  update: Pick<WebhookDeliveryRecord, 'status' | 'attempts' | 'http_status' | 'error'>,
): Promise<void> {
  await store.db
    .updateTable('webhook_deliveries')
    .set({ ...update, updated_at: new Date().toISOString() })
    .where('id', '=', id)
    .execute();
}

/** A webhook's deliveries, newest first. */
export async function listDeliveries(store: Store, webhookId: string, limit: number): Promise<WebhookDeliveryRecord[]> {
  return await store.db
    .selectFrom('webhook_deliveries')
    .selectAll()
    .where('webhook_id', '=', webhookId)
    .orderBy('id', 'desc')
    .limit(limit)
    .execute();
}

/** Marks the deliveries still pending (their queue died with a previous daemon) failed, with `error`. */
export async function failPendingDeliveries(store: Store, error: string): Promise<void> {
  await store.db
    .updateTable('webhook_deliveries')
    .set({ status: 'failed', error, updated_at: new Date().toISOString() })
    .where('status', '=', 'pending')
    .execute();
}
