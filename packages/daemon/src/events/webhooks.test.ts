import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { signWebhookBody } from './webhook-signature.js';
import { checkWebhookUrl, retryDelayMs, webhookPayload } from './webhooks.js';

describe('webhook signatures', () => {
  it('are an HMAC-SHA256 of "<t>.<body>" keyed by the secret, with t beside it', () => {
    const body = '{"id":"s1"}';
    const expected = createHmac('sha256', 'whsec_test').update(`1700000000.${body}`).digest('hex');
    expect(signWebhookBody('whsec_test', 1700000000, body)).toBe(`t=1700000000,v1=${expected}`);
  });

  it('change with the timestamp, so an old signature does not sign a replay at another time', () => {
    expect(signWebhookBody('s', 1, 'b')).not.toBe(signWebhookBody('s', 2, 'b').replace('t=2', 't=1'));
  });
});

describe('webhook retries', () => {
  const limits = { firstRetryDelayMs: 1000, maxRetryDelayMs: 10_000 };
  it('double the wait after each failed attempt, up to the cap', () => {
    expect([1, 2, 3, 4, 5, 6].map((attempt) => retryDelayMs(attempt, limits))).toEqual([1000, 2000, 4000, 8000, 10_000, 10_000]);
  });
});

describe('webhook URLs', () => {
  it('must be http or https', () => {
    expect(checkWebhookUrl('https://example.com/hook')).toBe('https://example.com/hook');
    expect(checkWebhookUrl('http://127.0.0.1:8080/x')).toBe('http://127.0.0.1:8080/x');
    for (const url of ['file:///etc/passwd', 'ftp://example.com/', 'gopher://x/', 'unix:/run/capsule/capsuled.sock', 'not a url']) {
      expect(() => checkWebhookUrl(url)).toThrow(/must be http or https|is not a URL/);
    }
  });

  it('may not carry credentials', () => {
    expect(() => checkWebhookUrl('https://user:pw@example.com/')).toThrow(/user name or password/);
  });
});

describe('webhook payloads', () => {
  it("use E2B's lifecycle field names for a sandbox event", () => {
    const payload = webhookPayload({
      kind: 'sandbox',
      id: 7,
      sandboxId: 'sb_1',
      template: 'base',
      state: 'killed',
      reason: 'timeout',
      message: null,
      at: '2026-01-01T00:00:00.000Z',
    });
    expect(payload).toEqual({
      version: 'v1',
      id: 's7',
      type: 'sandbox.killed',
      timestamp: '2026-01-01T00:00:00.000Z',
      sandboxId: 'sb_1',
      sandboxTemplateId: 'base',
      eventData: { state: 'killed', reason: 'timeout' },
    });
  });

  it('name the template or image of a resource event in eventData', () => {
    const payload = webhookPayload({
      kind: 'resource',
      id: 2,
      type: 'image.pulled',
      template: null,
      image: 'docker.io/library/alpine:3',
      workload: null,
      reason: 'user',
      message: 'sha256:ab',
      at: '2026-01-01T00:00:00.000Z',
    });
    expect(payload.id).toBe('r2');
    expect(payload.eventData).toEqual({ reason: 'user', message: 'sha256:ab', image: 'docker.io/library/alpine:3' });
  });
});
