// The dashboard's sign-in, session cookie, CSRF check and Content-Security-
// Policy, on the daemon's real API server over TCP. The sandbox manager is a
// STAND-IN that knows no sandbox: every check here happens before one is needed.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { CapsuleError } from '../errors.js';
import { silentLogger } from '../log.js';
import { DaemonMetrics } from '../metrics.js';
import { DashboardSessions, SIGN_IN_TOKEN_TTL_MS, SESSION_TTL_MS, sessionCookie } from './dashboard-sessions.js';
import { buildApi, type Api, type ApiContext } from './server.js';

const API_KEY = `e2b_${'7'.repeat(40)}`;

describe('dashboard sessions over TCP (manager stand-in)', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-dashboard-'));
  const dist = path.join(root, 'dist');
  let api: Api;
  let base: string;

  beforeAll(async () => {
    fs.mkdirSync(path.join(dist, 'assets'), { recursive: true });
    fs.writeFileSync(path.join(dist, 'index.html'), '<!doctype html><script type="module" src="/ui/assets/app.js"></script>');
    fs.writeFileSync(path.join(dist, 'assets', 'app.js'), 'console.log(1)');
    fs.writeFileSync(path.join(root, 'outside.txt'), 'secret');
    const ctx = {
      manager: {
        agentOf: async (id: string) => {
          throw new CapsuleError('sandbox_not_found', `no sandbox ${id}`);
        },
      },
      templates: { buildUploadsDir: () => path.join(root, 'uploads') },
      apiKeys: { verify: async (key: string | undefined) => key === API_KEY },
      tokens: { verify: () => false, verifyTraffic: () => false },
      info: () => ({}),
      log: silentLogger,
      metrics: new DaemonMetrics(),
      metricsIntervalMs: 0,
      version: 'test',
      domain: 'localhost',
      dashboardDir: dist,
    } as unknown as ApiContext;
    api = await buildApi(ctx);
    base = `http://${await api.listenTcp('127.0.0.1', 0)}`;
  });

  afterAll(async () => {
    await api?.close();
    fs.rmSync(root, { recursive: true, force: true });
  });

  const signIn = async () => {
    const response = await fetch(`${base}/v1/dashboard/session`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ apiKey: API_KEY }),
    });
    expect(response.status).toBe(201);
    const cookie = (response.headers.get('set-cookie') ?? '').split(';')[0] ?? '';
    const { csrfToken } = (await response.json()) as { csrfToken: string };
    return { cookie, csrfToken };
  };
  const codeOf = async (response: Response) => ((await response.json()) as { error: { code: string } }).error.code;

  it('a bad API key is refused 401 and sets no cookie', async () => {
    const response = await fetch(`${base}/v1/dashboard/session`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ apiKey: `e2b_${'8'.repeat(40)}` }),
    });
    expect(response.status).toBe(401);
    expect(await codeOf(response)).toBe('unauthenticated');
    expect(response.headers.get('set-cookie')).toBeNull();
  });

  it('a good API key opens a session: an HttpOnly, SameSite=Strict cookie (not Secure over plain HTTP) and a CSRF token', async () => {
    const response = await fetch(`${base}/v1/dashboard/session`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ apiKey: API_KEY }),
    });
    const cookie = response.headers.get('set-cookie') ?? '';
    expect(cookie).toMatch(/^capsule_session=[\w-]{40,};/);
    expect(cookie).toContain('HttpOnly');
    expect(cookie).toContain('SameSite=Strict');
    expect(cookie).toContain('Path=/');
    expect(cookie).not.toContain('Secure');
    expect(((await response.json()) as { csrfToken: string }).csrfToken).toMatch(/^[\w-]{40,}$/);
  });

  it('the cookie stands for a key on reads; a form post (not JSON) cannot sign in', async () => {
    const { cookie, csrfToken } = await signIn();
    const session = await fetch(`${base}/v1/dashboard/session`, { headers: { cookie } });
    expect(session.status).toBe(200);
    expect(((await session.json()) as { csrfToken: string }).csrfToken).toBe(csrfToken);
    expect((await fetch(`${base}/v1/dashboard/session`)).status).toBe(401);
    expect((await fetch(`${base}/v1/dashboard/session`, { headers: { cookie: 'capsule_session=forged' } })).status).toBe(401);
    const form = await fetch(`${base}/v1/dashboard/session`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `apiKey=${API_KEY}`,
    });
    expect(form.status).toBe(400);
    expect(form.headers.get('set-cookie')).toBeNull();
  });

  it('a mutation with the cookie but without its CSRF token is refused 403 csrf_token_invalid, on routes and on the agent proxy', async () => {
    const { cookie, csrfToken } = await signIn();
    const other = await signIn();
    const attempts: Record<string, string>[] = [{ cookie }, { cookie, 'x-csrf-token': other.csrfToken }, { cookie, 'x-csrf-token': '' }];
    for (const headers of attempts) {
      const route = await fetch(`${base}/v1/dashboard/session`, { method: 'DELETE', headers });
      expect(route.status).toBe(403);
      expect(await codeOf(route)).toBe('csrf_token_invalid');
      const upload = await fetch(`${base}/v1/sandboxes/sb_1/envd/files?path=/tmp/x`, { method: 'POST', headers, body: 'x' });
      expect(upload.status).toBe(403);
      expect(await codeOf(upload)).toBe('csrf_token_invalid');
    }
    // With the token the request goes through (to the stand-in, which knows no sandbox).
    const upload = await fetch(`${base}/v1/sandboxes/sb_1/envd/files?path=/tmp/x`, {
      method: 'POST',
      headers: { cookie, 'x-csrf-token': csrfToken },
      body: 'x',
    });
    expect(await codeOf(upload)).toBe('sandbox_not_found');
    const signOut = await fetch(`${base}/v1/dashboard/session`, { method: 'DELETE', headers: { cookie, 'x-csrf-token': csrfToken } });
    expect(signOut.status).toBe(204);
    expect(signOut.headers.get('set-cookie')).toContain('Max-Age=0');
    expect((await fetch(`${base}/v1/dashboard/session`, { headers: { cookie } })).status).toBe(401);
  });

  it('a one-time sign-in token is minted through the unix socket only and works once', async () => {
    const overTcp = await fetch(`${base}/v1/dashboard/sign-in-tokens`, { method: 'POST', headers: { 'x-api-key': API_KEY } });
    expect(overTcp.status).toBe(403);
    const minted = await api.app.inject({ method: 'POST', url: '/v1/dashboard/sign-in-tokens' });
    expect(minted.statusCode).toBe(201);
    const { path: signInPath } = minted.json<{ path: string }>();
    expect(signInPath).toMatch(/^\/ui\/sign-in\?token=[\w-]+$/);
    const first = await fetch(`${base}${signInPath}`, { redirect: 'manual' });
    expect(first.status).toBe(303);
    expect(first.headers.get('location')).toBe('/ui/');
    const cookie = (first.headers.get('set-cookie') ?? '').split(';')[0] ?? '';
    expect((await fetch(`${base}/v1/dashboard/session`, { headers: { cookie } })).status).toBe(200);
    const again = await fetch(`${base}${signInPath}`, { redirect: 'manual' });
    expect(again.status).toBe(303);
    expect(again.headers.get('location')).toBe('/ui/?sign-in=expired');
    expect(again.headers.get('set-cookie')).toBeNull();
  });

  it("serves the dashboard's files with a strict CSP, index.html for the page's own routes, and nothing outside its folder", async () => {
    for (const page of ['/ui/', '/ui/sandboxes/sb_1']) {
      const response = await fetch(`${base}${page}`);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toBe('text/html; charset=utf-8');
      const csp = response.headers.get('content-security-policy') ?? '';
      expect(csp).toContain("script-src 'self'");
      expect(csp).toContain("frame-ancestors 'none'");
      expect(csp).toContain("default-src 'none'");
      expect(/script-src[^;]*unsafe/.test(csp)).toBe(false);
      expect(response.headers.get('x-content-type-options')).toBe('nosniff');
      expect(await response.text()).toContain('/ui/assets/app.js');
    }
    const script = await fetch(`${base}/ui/assets/app.js`);
    expect(script.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(script.headers.get('cache-control')).toContain('immutable');
    expect((await fetch(`${base}/ui/assets/missing.js`)).status).toBe(404);
    for (const outside of ['/ui/..%2foutside.txt', '/ui/%2e%2e/outside.txt', '/ui/assets/..%2f..%2foutside.txt']) {
      const response = await fetch(`${base}${outside}`);
      expect(await response.text()).not.toContain('secret');
    }
    // The files are public (the sign-in form is one of them); the API behind them is not.
    expect((await fetch(`${base}/v1/sandboxes`)).status).toBe(401);
  });

  it("a terminal's WebSocket needs credentials, and one opened by another site's page is refused even with the cookie", async () => {
    const { cookie } = await signIn();
    const url = `${base.replace('http', 'ws')}/v1/sandboxes/sb_1/terminal`;
    const refusal = (headers: Record<string, string>) =>
      new Promise<number>((resolve) => {
        const socket = new WebSocket(url, { headers });
        socket.on('unexpected-response', (_request, response) => resolve(response.statusCode ?? 0));
        socket.on('open', () => resolve(101));
        socket.on('error', () => undefined);
      });
    expect(await refusal({})).toBe(401);
    expect(await refusal({ cookie, origin: 'http://evil.example' })).toBe(403);
    // The daemon's own page gets past both checks, to the stand-in that knows no sandbox.
    expect(await refusal({ cookie, origin: base })).toBe(404);
  });
});

describe('DashboardSessions', () => {
  it('a sign-in token expires after a minute, and a session after its lifetime', () => {
    let now = 1_000_000;
    const sessions = new DashboardSessions(() => now);
    const late = sessions.issueSignInToken();
    now += SIGN_IN_TOKEN_TTL_MS;
    expect(sessions.redeemSignInToken(late.token)).toBeUndefined();
    const opened = sessions.redeemSignInToken(sessions.issueSignInToken().token);
    expect(opened).toBeDefined();
    const cookie = { cookie: `other=1; capsule_session=${opened?.id}` };
    expect(sessions.authorizes('GET', cookie)).toBe(true);
    now += SESSION_TTL_MS;
    expect(sessions.authorizes('GET', cookie)).toBe(false);
  });

  it('marks the cookie Secure when the browser came over TLS', () => {
    expect(sessionCookie('abc', SESSION_TTL_MS, true)).toBe(
      'capsule_session=abc; Path=/; Max-Age=43200; HttpOnly; SameSite=Strict; Secure',
    );
  });

  it('holds a bounded number of sessions, dropping the oldest', () => {
    const sessions = new DashboardSessions();
    const first = sessions.open();
    for (let i = 0; i < 1000; i++) sessions.open();
    expect(sessions.authorizes('GET', { cookie: `capsule_session=${first.id}` })).toBe(false);
  });
});
