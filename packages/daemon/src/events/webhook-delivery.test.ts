// Webhooks against a receiver on loopback and a real in-memory store, with
// retry delays shortened so that backoff runs in milliseconds.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { silentLogger } from '../log.js';
import { startingSandboxRow } from '../store/sandbox-row.test-fixture.js';
import { Store } from '../store/store.js';
import { defaultWebhookLimits, Webhooks } from './webhooks.js';

describe('webhook deliveries (loopback receiver, real SQLite in memory)', () => {
  let store: Store;
  let webhooks: Webhooks;
  let receiver: http.Server;
  let url = '';
  /** How the receiver answers each request, in order; 200 once they run out, `hang` never answers. */
  let answers: (number | 'hang')[] = [];
  const bodies: string[] = [];

  beforeEach(async () => {
    store = await Store.open(':memory:');
    // A generous attempt timeout: the CPU may be shared, and a late answer would count as a failed attempt.
    webhooks = new Webhooks(store, silentLogger, {
      ...defaultWebhookLimits,
      firstRetryDelayMs: 10,
      maxAttempts: 3,
      attemptTimeoutMs: 5_000,
    });
    await webhooks.start();
    answers = [];
    bodies.length = 0;
    receiver = http.createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8').on('data', (c: string) => (body += c));
      req.on('end', () => {
        bodies.push(body);
        const answer = answers.shift() ?? 200;
        if (answer !== 'hang') res.writeHead(answer).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/`;
  });
  afterEach(async () => {
    webhooks.stop();
    receiver.closeAllConnections();
    await new Promise((resolve) => receiver.close(resolve));
    await store.close();
  });

  /** The webhook's newest delivery once it reaches `status`. */
  const settled = (hookId: string, status: 'delivered' | 'failed') =>
    vi.waitFor(
      async () => {
        const [newest] = await webhooks.deliveries(hookId, 10);
        if (newest?.status !== status) throw new Error(`the newest delivery is ${newest?.status ?? 'not there'}`);
        return newest;
      },
      { timeout: 10_000, interval: 20 },
    );

  it('sends a webhook only the events it asked for', async () => {
    const hook = await webhooks.add({ url, events: ['sandbox.killed'] });
    await store.insertSandbox(startingSandboxRow('sb_a'));
    await store.transition('sb_a', 'running', 'user');
    await store.transition('sb_a', 'killed', 'timeout');
    const delivery = await settled(hook.id, 'delivered');
    expect(delivery).toMatchObject({ eventType: 'sandbox.killed', attempts: 1, httpStatus: 200 });
    expect(bodies.map((b) => (JSON.parse(b) as { type: string }).type)).toEqual(['sandbox.killed']);
  });

  it('retries after a failed answer until one succeeds, and gives up after the last attempt', async () => {
    const hook = await webhooks.add({ url, events: ['sandbox.created'] });
    answers = [500, 503];
    await store.insertSandbox(startingSandboxRow('sb_a'));
    const delivered = await settled(hook.id, 'delivered');
    expect(delivered).toMatchObject({ attempts: 3, httpStatus: 200 });

    answers = [500, 500, 500, 500];
    await store.insertSandbox(startingSandboxRow('sb_b'));
    const failed = await settled(hook.id, 'failed');
    expect(failed).toMatchObject({ attempts: 3, httpStatus: 500, error: 'the receiver answered HTTP 500' });
    // The same event each time, so a receiver can drop repeats.
    expect(new Set(bodies.slice(3).map((b) => (JSON.parse(b) as { id: string }).id)).size).toBe(1);
  });

  it('gives an attempt that gets no answer up after its timeout', async () => {
    webhooks.stop();
    webhooks = new Webhooks(store, silentLogger, { ...defaultWebhookLimits, firstRetryDelayMs: 10, maxAttempts: 3, attemptTimeoutMs: 300 });
    await webhooks.start();
    const hook = await webhooks.add({ url, events: ['sandbox.created'] });
    answers = ['hang', 'hang', 'hang'];
    await store.insertSandbox(startingSandboxRow('sb_a'));
    const failed = await settled(hook.id, 'failed');
    expect(failed).toMatchObject({ attempts: 3, error: 'no answer within 300 ms' });
  });

  it('drops deliveries beyond its queue rather than grow', async () => {
    webhooks.stop();
    webhooks = new Webhooks(store, silentLogger, {
      ...defaultWebhookLimits,
      maxQueued: 2,
      concurrency: 1,
      attemptTimeoutMs: 300,
      firstRetryDelayMs: 10,
    });
    await webhooks.start();
    const hook = await webhooks.add({ url });
    answers = ['hang'];
    for (const id of ['sb_a', 'sb_b', 'sb_c', 'sb_d']) await store.insertSandbox(startingSandboxRow(id));
    await settled(hook.id, 'delivered');
    await vi.waitFor(async () => expect((await webhooks.deliveries(hook.id, 10)).every((d) => d.status === 'delivered')).toBe(true));
    expect((await webhooks.deliveries(hook.id, 10)).length).toBe(2);
  });
});
