// The event stream and webhooks against a real daemon and real sandboxes: a
// client of GET /v1/events sees a sandbox's life with its reasons, a reconnect
// gets only what it missed, a receiver on loopback gets deliveries whose
// signature verifies, and a receiver that is down gets retries while the
// daemon goes on serving.
import { spawn } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { CapsuleClient, verifyWebhookSignature } from '@capsule/sdk';
import type { CapsuleEvent, CreatedWebhook, WebhookDelivery, WebhookPayload } from '@capsule/protocol';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { cliMain, eventually, it, TestDaemon } from './fixture.js';

/** A raw `GET /v1/events` on the daemon's socket: its messages as they arrive, parsed here (not by the SDK) to check the wire. */
class RawEventStream {
  readonly events: CapsuleEvent[] = [];
  readonly comments: string[] = [];
  #buffer = '';
  #request: http.ClientRequest | undefined;

  async open(daemon: TestDaemon, urlPath: string, headers: Record<string, string> = {}): Promise<http.IncomingMessage> {
    return await new Promise((resolve, reject) => {
      this.#request = http.request({ socketPath: daemon.socketPath, path: urlPath, headers }, (res) => {
        res.setEncoding('utf8').on('data', (chunk: string) => this.#feed(chunk));
        // Resolved once the stream's opening comment is in: from then on the daemon holds its subscription.
        const opened = () => (this.comments.length > 0 ? resolve(res) : setTimeout(opened, 10));
        opened();
      });
      this.#request.on('error', reject).end();
    });
  }

  #feed(chunk: string): void {
    this.#buffer += chunk;
    for (let end = this.#buffer.indexOf('\n\n'); end !== -1; end = this.#buffer.indexOf('\n\n')) {
      const block = this.#buffer.slice(0, end);
      this.#buffer = this.#buffer.slice(end + 2);
      if (block.startsWith(':')) this.comments.push(block);
      const data = block
        .split('\n')
        .filter((line) => line.startsWith('data: '))
        .map((line) => line.slice(6))
        .join('\n');
      const id = block.split('\n').find((line) => line.startsWith('id: '));
      if (data === '') continue;
      const event = JSON.parse(data) as CapsuleEvent;
      // The SSE id is what Last-Event-ID resumes from: the same as the event's own.
      expect(id).toBe(`id: ${event.id}`);
      this.events.push(event);
    }
  }

  close(): void {
    this.#request?.destroy();
  }
}

interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
}

describe('events and webhooks (real QEMU microVM)', () => {
  const daemon = new TestDaemon({ CAPSULE_LISTEN: 'http://127.0.0.1:0' });
  const received: Received[] = [];
  const receiver = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (c: string) => (body += c));
    req.on('end', () => {
      received.push({ headers: req.headers, body });
      res.writeHead(204).end();
    });
  });
  let receiverUrl = '';
  let refusedUrl = '';
  let client: CapsuleClient;

  beforeAll(async () => {
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;
    // A port that was just free and is closed again: connecting to it is refused.
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    refusedUrl = `http://127.0.0.1:${(closed.address() as AddressInfo).port}/down`;
    await new Promise((resolve) => closed.close(resolve));
    await daemon.start();
    client = new CapsuleClient({ socketPath: daemon.socketPath });
  });
  afterAll(async () => {
    client.close();
    await daemon.destroy();
    await new Promise((resolve) => receiver.close(resolve));
  });

  const secret = 'whsec_events_integration_test';
  let goodHook: CreatedWebhook;
  let downHook: CreatedWebhook;
  let sandboxId = '';
  const live = new RawEventStream();

  it('refuses a webhook URL that is not http or https', async () => {
    const res = await daemon.request('POST', '/v1/webhooks', { url: 'file:///etc/passwd' });
    expect(res.status).toBe(400);
    expect(res.body.error.message).toMatch(/http or https/);
  });

  it('streams a sandbox created, running and killed, each with its reason, to a client that was listening', async () => {
    goodHook = (await daemon.request<CreatedWebhook>('POST', '/v1/webhooks', { url: receiverUrl, secret, events: ['sandbox'] })).body;
    downHook = (await daemon.request<CreatedWebhook>('POST', '/v1/webhooks', { url: refusedUrl })).body;
    expect(goodHook.secret).toBe(secret);
    expect(downHook.secret).toMatch(/^whsec_/);

    await live.open(daemon, '/v1/events?type=sandbox');
    sandboxId = (await daemon.api.createSandbox()).id;
    await daemon.api.removeSandbox(sandboxId);
    const mine = await eventually(
      () => {
        const events = live.events.filter((e) => e.sandboxId === sandboxId);
        return events.some((e) => e.type === 'sandbox.killed') ? events : undefined;
      },
      15_000,
      'the killed event on the live stream',
    );
    expect(mine.map((e) => [e.type, e.state, e.reason])).toEqual([
      ['sandbox.created', 'starting', 'user'],
      ['sandbox.running', 'running', 'user'],
      ['sandbox.killed', 'killed', 'user'],
    ]);
    expect(mine.every((e) => e.template === 'base')).toBe(true);
    live.close();
  });

  it('resumes after Last-Event-ID (or ?since=) with only the events the client missed', async () => {
    const events = live.events.filter((e) => e.sandboxId === sandboxId);
    const afterCreated = events[0]!.id;

    const resumed = new RawEventStream();
    await resumed.open(daemon, `/v1/events?sandbox=${sandboxId}`, { 'last-event-id': afterCreated });
    await eventually(() => (resumed.events.length >= 2 ? true : undefined), 10_000, 'the resumed events');
    expect(resumed.events.map((e) => e.type)).toEqual(['sandbox.running', 'sandbox.killed']);
    expect(resumed.events.map((e) => e.id)).toEqual(events.slice(1).map((e) => e.id));
    resumed.close();

    // The SDK's iterator, resuming with `since`, reads the same.
    const seen: string[] = [];
    for await (const event of client.events({ since: afterCreated, sandboxes: [sandboxId] })) {
      seen.push(event.type);
      if (event.type === 'sandbox.killed') break;
    }
    expect(seen).toEqual(['sandbox.running', 'sandbox.killed']);
  });

  it('delivers signed webhooks that verify with the secret, in E2B’s field names', async () => {
    const mine = await eventually(
      () => {
        const bodies = received.filter((r) => (JSON.parse(r.body) as WebhookPayload).sandboxId === sandboxId);
        return bodies.length >= 3 ? bodies : undefined;
      },
      30_000,
      'three deliveries',
    );
    for (const delivery of mine) {
      expect(
        verifyWebhookSignature({ secret, signatureHeader: delivery.headers['capsule-signature'] as string, body: delivery.body }),
      ).toBe(true);
      // Signed with another secret, or with the body changed, it does not verify.
      expect(
        verifyWebhookSignature({
          secret: `${secret}x`,
          signatureHeader: delivery.headers['capsule-signature'] as string,
          body: delivery.body,
        }),
      ).toBe(false);
      expect(delivery.headers['content-type']).toBe('application/json');
    }
    const payloads = mine.map((r) => JSON.parse(r.body) as WebhookPayload);
    expect(payloads.map((p) => p.type)).toEqual(['sandbox.created', 'sandbox.running', 'sandbox.killed']);
    expect(payloads[2]).toMatchObject({
      version: 'v1',
      sandboxId,
      sandboxTemplateId: 'base',
      eventData: { state: 'killed', reason: 'user' },
    });

    const log = (await daemon.request<{ deliveries: WebhookDelivery[] }>('GET', `/v1/webhooks/${goodHook.id}/deliveries`)).body.deliveries;
    expect(log.filter((d) => d.status === 'delivered' && d.httpStatus === 204).length).toBeGreaterThanOrEqual(3);
  });

  it('retries a receiver that is down, logging why, while the daemon goes on serving', async () => {
    const retried = await eventually(
      async () => {
        const log = (await daemon.request<{ deliveries: WebhookDelivery[] }>('GET', `/v1/webhooks/${downHook.id}/deliveries`)).body
          .deliveries;
        return log.find((d) => d.attempts >= 2) ?? undefined;
      },
      30_000,
      'a second attempt at the receiver that is down',
    );
    expect(retried.status).toBe('pending');
    expect(retried.error).toMatch(/ECONNREFUSED/);

    expect((await daemon.request('GET', '/health')).status).toBe(200);
    const another = await daemon.api.createSandbox();
    expect(another.state).toBe('running');
    await daemon.api.removeSandbox(another.id);

    // Removed, it is listed no more and its log is gone with it.
    expect((await daemon.request('DELETE', `/v1/webhooks/${downHook.id}`)).status).toBe(204);
    expect((await daemon.request('DELETE', `/v1/webhooks/${downHook.id}`)).status).toBe(404);
    expect((await daemon.request<{ webhooks: { id: string }[] }>('GET', '/v1/webhooks')).body.webhooks.map((w) => w.id)).toEqual([
      goodHook.id,
    ]);
  });

  it('capsule events replays what --since asks for, as JSON lines, and ends cleanly on Ctrl-C', async () => {
    const child = spawn(process.execPath, [cliMain, 'events', '--since', '1h', '--filter', `sandbox=${sandboxId}`, '--json'], {
      env: daemon.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const closed = new Promise<number | null>((resolve) => child.once('close', resolve));
    await eventually(() => (stdout.split('\n').length > 3 ? true : undefined), 20_000, 'three events from the CLI');
    child.kill('SIGINT');
    expect(await closed, stderr).toBe(0);
    const types = stdout
      .trim()
      .split('\n')
      .map((line) => (JSON.parse(line) as CapsuleEvent).type);
    expect(types).toEqual(['sandbox.created', 'sandbox.running', 'sandbox.killed']);
  });

  it('streams template events: a snapshot made into a template, and its removal', async () => {
    const before = new Date().toISOString();
    const source = await daemon.api.createSandbox();
    await daemon.api.snapshot(source.id, 'events-snap');
    await daemon.api.removeSandbox(source.id);
    await daemon.api.removeTemplate('events-snap');
    const stream = new RawEventStream();
    await stream.open(daemon, `/v1/events?type=template&since=${encodeURIComponent(before)}`);
    await eventually(() => (stream.events.length >= 2 ? true : undefined), 10_000, 'two template events');
    stream.close();
    expect(stream.events.map((e) => [e.type, e.template, e.reason])).toEqual([
      ['template.created', 'events-snap', 'snapshot'],
      ['template.removed', 'events-snap', 'user'],
    ]);
  });

  it('asks for an API key over TCP, on the stream as on every route', async () => {
    const { tcpAddress } = await daemon.api.info();
    const [host, port] = (tcpAddress ?? '').split(':');
    const answer = (urlPath: string, headers: Record<string, string> = {}) =>
      new Promise<{ status?: number; type?: string }>((resolve, reject) => {
        http
          .get({ host, port: Number(port), path: urlPath, headers, agent: false }, (res) => {
            resolve({ status: res.statusCode, type: res.headers['content-type'] });
            res.destroy();
          })
          .on('error', reject);
      });
    expect((await answer('/v1/events')).status).toBe(401);
    expect((await answer('/v1/webhooks')).status).toBe(401);
    const { key } = await daemon.api.createApiKey('events');
    expect(await answer('/v1/events', { 'x-api-key': key })).toEqual({ status: 200, type: 'text/event-stream; charset=utf-8' });
  });
});
