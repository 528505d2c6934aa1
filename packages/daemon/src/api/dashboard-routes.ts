// REST routes of the web dashboard: its sign-in (an API key, or a one-time
// token that the local user mints with `capsule dashboard`), its session, and
// its static files under /ui with a strict Content-Security-Policy. Routes
// only: sessions are dashboard-sessions.ts's, and the credentials of every
// other route are checked by server.ts. Never serves a file outside the
// dashboard's dist folder.
import fs from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { DASHBOARD_PATH, DASHBOARD_SIGN_IN_PATH, DashboardSession, SignInRequest, SignInToken } from '@capsule/protocol';
import { CapsuleError } from '../errors.js';
import type { ApiKeys } from './credentials.js';
import { DASHBOARD_CSP, type DashboardSessions, SESSION_TTL_MS, sessionCookie, type OpenedSession } from './dashboard-sessions.js';
import { errorResponses, route, type ApiRoute } from './routes.js';

/** Routes a TCP client may call with neither an API key nor a session: the dashboard's files and its sign-in. */
export const PUBLIC_DASHBOARD_ROUTES = new Set([
  `GET ${DASHBOARD_PATH}`,
  `GET ${DASHBOARD_PATH}/*`,
  `GET ${DASHBOARD_SIGN_IN_PATH}`,
  'POST /v1/dashboard/session',
]);

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
};

const SignInTokenQuery = {
  type: 'object',
  properties: { token: { type: 'string', maxLength: 128 } },
  additionalProperties: false,
} as const;

/** `distDir` is the built dashboard (packages/dashboard/dist); `viaTcp` tells a TCP client's request from a local one's. */
export function dashboardRoutes(
  sessions: DashboardSessions,
  apiKeys: ApiKeys,
  distDir: string,
  viaTcp: (req: IncomingMessage) => boolean,
): ApiRoute[] {
  const startSession = (request: FastifyRequest, reply: FastifyReply, opened: OpenedSession) =>
    reply.header('set-cookie', sessionCookie(opened.id, SESSION_TTL_MS, isTls(request.raw)));
  return [
    route<{ Body: SignInRequest }>({
      method: 'POST',
      url: '/v1/dashboard/session',
      schema: {
        body: SignInRequest,
        description: 'Signs a browser in with an API key: sets the session cookie and answers its CSRF token.',
        response: { 201: DashboardSession, ...errorResponses },
      },
      handler: async (request, reply) => {
        if (!(await apiKeys.verify(request.body.apiKey)))
          throw new CapsuleError('unauthenticated', 'that API key is not valid', { hint: 'create one with `capsule apikey create NAME`' });
        const opened = sessions.open();
        return startSession(request, reply, opened).code(201).send(opened.session);
      },
    }),
    route({
      method: 'GET',
      url: '/v1/dashboard/session',
      schema: {
        description: "The session of the request's cookie, with its CSRF token (for a page loaded after sign-in).",
        response: { 200: DashboardSession, ...errorResponses },
      },
      handler: async (request) => {
        const session = sessions.sessionOf(request.headers);
        if (!session) throw new CapsuleError('unauthenticated', 'this browser is not signed in', { hint: 'sign in with an API key' });
        return session;
      },
    }),
    route({
      method: 'DELETE',
      url: '/v1/dashboard/session',
      schema: { description: 'Signs the browser out.', response: { ...errorResponses } },
      handler: async (request, reply) => {
        sessions.close(request.headers);
        return reply
          .header('set-cookie', sessionCookie('', 0, isTls(request.raw)))
          .code(204)
          .send();
      },
    }),
    route({
      method: 'POST',
      url: '/v1/dashboard/sign-in-tokens',
      schema: {
        description: 'A one-time token that signs a browser in at its path, once, within a minute (the unix socket only).',
        response: { 201: SignInToken, ...errorResponses },
      },
      handler: async (request, reply) => {
        // Whoever holds a session or a key must not be able to mint more sessions than they already have.
        if (viaTcp(request.raw))
          throw new CapsuleError('permission_denied', 'sign-in tokens are made through the unix socket only', {
            hint: 'run `capsule dashboard` on the host',
          });
        return reply.code(201).send(sessions.issueSignInToken());
      },
    }),
    route<{ Querystring: { token?: string } }>({
      method: 'GET',
      url: DASHBOARD_SIGN_IN_PATH,
      schema: { hide: true, querystring: SignInTokenQuery },
      handler: async (request, reply) => {
        const opened = request.query.token ? sessions.redeemSignInToken(request.query.token) : undefined;
        securityHeaders(reply);
        // Either way the token leaves the address bar (and the history) at once.
        if (!opened) return reply.redirect(`${DASHBOARD_PATH}/?sign-in=expired`, 303);
        return startSession(request, reply, opened).redirect(`${DASHBOARD_PATH}/`, 303);
      },
    }),
    route({
      method: 'GET',
      url: DASHBOARD_PATH,
      schema: { hide: true },
      handler: async (_request, reply) => securityHeaders(reply).redirect(`${DASHBOARD_PATH}/`, 308),
    }),
    route<{ Params: { '*': string } }>({
      method: 'GET',
      url: `${DASHBOARD_PATH}/*`,
      schema: { hide: true },
      handler: async (request, reply) => serveDashboardFile(distDir, request.params['*'], securityHeaders(reply)),
    }),
  ];
}

/**
 * A file of the built dashboard; a path without an extension is one of the
 * page's own routes (/ui/sandboxes/sb_x), answered with index.html. Hashed
 * assets are cached for good; index.html is revalidated, so a new build shows.
 */
export async function serveDashboardFile(distDir: string, relative: string, reply: FastifyReply): Promise<FastifyReply> {
  const root = path.resolve(distDir);
  const wanted = path.resolve(root, `.${path.posix.normalize(`/${relative}`)}`);
  if (wanted !== root && !wanted.startsWith(`${root}${path.sep}`)) throw new CapsuleError('not_found', 'no such dashboard file');
  const extension = path.extname(wanted);
  const file = extension === '' ? path.join(root, 'index.html') : wanted;
  let body: Buffer;
  try {
    body = await fs.readFile(file);
  } catch {
    if (file.endsWith('index.html'))
      throw new CapsuleError('not_found', 'the dashboard is not built', { hint: 'run `npm run build` in the Capsule checkout' });
    throw new CapsuleError('not_found', `no dashboard file ${relative.slice(0, 200)}`);
  }
  const immutable = relative.startsWith('assets/');
  return reply
    .type(CONTENT_TYPES[path.extname(file)] ?? 'application/octet-stream')
    .header('cache-control', immutable ? 'public, max-age=31536000, immutable' : 'no-cache')
    .send(body);
}

/** What every dashboard page and file is answered with: the CSP, no sniffing, no framing, no referrer. */
function securityHeaders(reply: FastifyReply): FastifyReply {
  return reply.headers({
    'content-security-policy': DASHBOARD_CSP,
    'x-content-type-options': 'nosniff',
    'x-frame-options': 'DENY',
    'referrer-policy': 'no-referrer',
    'cross-origin-opener-policy': 'same-origin',
  });
}

function isTls(req: IncomingMessage): boolean {
  return (req.socket as TLSSocket).encrypted === true;
}
