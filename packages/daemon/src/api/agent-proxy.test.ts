import { describe, expect, it } from 'vitest';
import { agentTarget, connectCodeOf } from './agent-proxy.js';
import { guestAnswerHeaders, requestHeadersForAgent, responseHeadersForClient, validStatus } from './agent-relay.js';

describe('agentTarget', () => {
  it('routes the path form to the agent path after /envd, query kept', () => {
    expect(agentTarget('/v1/sandboxes/sb_1/envd/files?path=/etc/hosts', {})).toEqual({
      sandboxId: 'sb_1',
      path: '/files?path=/etc/hosts',
      form: 'path',
    });
    expect(agentTarget('/v1/sandboxes/sb_1/envd/process.Process/Start', {})).toEqual({
      sandboxId: 'sb_1',
      path: '/process.Process/Start',
      form: 'path',
    });
    expect(agentTarget('/v1/sandboxes/sb_1/envd', {})).toEqual({ sandboxId: 'sb_1', path: '/', form: 'path' });
  });

  it('routes by the E2b-Sandbox-Id header with the path as is', () => {
    expect(agentTarget('/health', { 'e2b-sandbox-id': 'sb_2' })).toEqual({ sandboxId: 'sb_2', path: '/health', form: 'header' });
  });

  it("leaves the daemon's own routes alone", () => {
    expect(agentTarget('/v1/sandboxes/sb_1', {})).toBeUndefined();
    expect(agentTarget('/v1/sandboxes/sb_1/envdx/files', {})).toBeUndefined();
    expect(agentTarget('/v1/sandboxes/sb_1/exec', {})).toBeUndefined();
  });
});

describe('headers across the proxy', () => {
  it('keeps what the agent needs and drops hop-by-hop headers and daemon credentials', () => {
    const out = requestHeadersForAgent({
      'content-type': 'application/connect+json',
      authorization: 'Basic dXNlcjo=',
      connection: 'keep-alive',
      host: 'localhost:3000',
      'transfer-encoding': 'chunked',
      'x-api-key': 'e2b_secret',
      'x-access-token': 'token',
      'e2b-sandbox-id': 'sb_1',
    });
    expect(out).toEqual({ 'content-type': 'application/connect+json', authorization: 'Basic dXNlcjo=' });
  });

  it("a client's API key as a bearer, a Basic password, cookies and the traffic token never reach the agent", () => {
    const key = `e2b_${'a'.repeat(40)}`;
    const leaked = requestHeadersForAgent({
      authorization: `Bearer ${key}`,
      cookie: 'session=1',
      'e2b-traffic-access-token': 'traffic',
      'x-api-key': key,
      'x-access-token': 'envd',
    });
    expect(leaked).toEqual({});
    expect(requestHeadersForAgent({ authorization: `Basic ${Buffer.from('user:secret').toString('base64')}` })).toEqual({});
    // With the e2b convention, a stripped bearer leaves the default user, as if none was named.
    expect(requestHeadersForAgent({ authorization: `Bearer ${key}` }, 'user').authorization).toBe(
      `Basic ${Buffer.from('user:').toString('base64')}`,
    );
  });

  it('refuses a malformed percent-encoding or a non-path target with invalid_argument', () => {
    expect(() => agentTarget('/v1/sandboxes/%/envd/health', {})).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
    expect(() => agentTarget('*', { 'e2b-sandbox-id': 'sb_1' })).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
    expect(() => agentTarget('http://x/health', { 'e2b-sandbox-id': 'sb_1' })).toThrow(
      expect.objectContaining({ code: 'invalid_argument' }),
    );
  });

  it('names the default user only when the client named none', () => {
    expect(requestHeadersForAgent({}, 'user').authorization).toBe(`Basic ${Buffer.from('user:').toString('base64')}`);
    expect(requestHeadersForAgent({ authorization: 'Basic cm9vdDo=' }, 'user').authorization).toBe('Basic cm9vdDo=');
    expect(requestHeadersForAgent({}).authorization).toBeUndefined();
  });

  it('strips pseudo-headers, hop-by-hop headers and cookies from what a guest answers', () => {
    expect(
      responseHeadersForClient({
        ':status': '200',
        'content-type': 'text/plain',
        connection: 'close',
        'set-cookie': ['a=b'],
        'x-api-key': 'x',
      }),
    ).toEqual({ 'content-type': 'text/plain' });
  });

  it("never lets a guest's answer run as a page of the daemon's origin, where the dashboard's session works", () => {
    // A hostile guest's file, opened from the dashboard's file browser, must not run script that reads the CSRF token.
    const headers = guestAnswerHeaders({
      ':status': '200',
      'content-type': 'text/html',
      'content-security-policy': 'script-src *',
      'x-content-type-options': 'sniff-away',
    });
    expect(headers['content-type']).toBe('text/html');
    expect(headers['content-security-policy']).toBe("sandbox; default-src 'none'");
    expect(headers['x-content-type-options']).toBe('nosniff');
  });

  it('accepts only real HTTP statuses from a guest', () => {
    expect(validStatus(200)).toBe(200);
    expect(validStatus('404')).toBe(404);
    for (const bad of [0, 99, 199, 600, 'abc', undefined, 200.5]) expect(validStatus(bad)).toBeUndefined();
  });
});

describe('connectCodeOf', () => {
  it("names the daemon's refusals in Connect's codes", () => {
    expect(connectCodeOf('sandbox_not_found')).toBe('not_found');
    expect(connectCodeOf('sandbox_not_running')).toBe('failed_precondition');
    expect(connectCodeOf('unauthenticated')).toBe('unauthenticated');
    expect(connectCodeOf('agent_unavailable')).toBe('unavailable');
    expect(connectCodeOf('internal')).toBe('internal');
  });
});
