import { describe, expect, it } from 'vitest';
import {
  DELIVERIES_KEPT_PER_WEBHOOK,
  insertDelivery,
  insertWebhook,
  listDeliveries,
  recordResourceEvent,
  RESOURCE_EVENTS_KEPT,
} from './events.js';
import { Store } from './store.js';

describe('event history retention (real SQLite, in memory)', () => {
  it('keeps template and image events bounded by count', async () => {
    const store = await Store.open(':memory:');
    for (let i = 0; i < 3; i++) await recordResourceEvent(store, { type: 'template.created', template: `t${i}`, reason: 'user' });
    await store.db
      .updateTable('resource_events')
      .set({ id: RESOURCE_EVENTS_KEPT + 10 })
      .where('template', '=', 't2')
      .execute();
    await recordResourceEvent(store, { type: 'template.removed', template: 't2', reason: 'user' });
    const left = await store.db.selectFrom('resource_events').select('template').execute();
    expect(left.map((r) => r.template)).toEqual(['t2', 't2']);
    await store.close();
  });
});

describe('the webhook delivery log (real SQLite, in memory)', () => {
  it("keeps each webhook's newest deliveries, whatever the others log", async () => {
    const store = await Store.open(':memory:');
    for (const id of ['wh_a', 'wh_b'])
      await insertWebhook(store, { id, url: 'http://127.0.0.1/', secret: 's', events: '[]', created_at: 'now' });
    for (let i = 0; i < DELIVERIES_KEPT_PER_WEBHOOK + 5; i++) {
      await insertDelivery(store, 'wh_a', `s${i}`, 'sandbox.created');
      await insertDelivery(store, 'wh_b', `s${i}`, 'sandbox.created');
    }
    const kept = await listDeliveries(store, 'wh_a', 1000);
    expect(kept).toHaveLength(DELIVERIES_KEPT_PER_WEBHOOK);
    expect(kept[0]?.event_id).toBe(`s${DELIVERIES_KEPT_PER_WEBHOOK + 4}`);
    await store.close();
  });
});
