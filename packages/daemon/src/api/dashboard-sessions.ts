// The dashboard's browser sessions: opened by an API key or by a one-time
// sign-in token, carried by an HttpOnly SameSite=Strict cookie, each with a
// CSRF token that every mutation must echo in a header. Kept in memory only: a
// daemon restart signs every browser out (they sign in again). Never stores a
// session id or a sign-in token as is (only their hashes), and never lets a
// cookie alone change anything.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { CSRF_HEADER, DASHBOARD_SIGN_IN_PATH, SESSION_COOKIE, type DashboardSession, type SignInToken } from '@capsule/protocol';
import { CapsuleError } from '../errors.js';

export const SESSION_TTL_MS = 12 * 60 * 60 * 1000;
export const SIGN_IN_TOKEN_TTL_MS = 60_000;
/** Bounds on what the maps may hold, the oldest going first; only a holder of an API key (or of the unix socket) can add to them. */
const MAX_SESSIONS = 1000;
const MAX_SIGN_IN_TOKENS = 100;
/** Methods that only read; any other method with a session cookie needs the CSRF token. */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * The Content-Security-Policy of every dashboard answer: scripts and
 * connections only from the daemon itself, nothing inline, no framing. Styles
 * may be inline because xterm.js writes its cell metrics and theme into
 * <style> elements at run time; a style cannot run code.
 */
export const DASHBOARD_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

interface Session {
  csrfToken: string;
  expiresAt: number;
}

export interface OpenedSession {
  /** The cookie's value; shown once, here. */
  id: string;
  session: DashboardSession;
}

export class DashboardSessions {
  /** By the SHA-256 of the session id. */
  private readonly sessions = new Map<string, Session>();
  /** Expiry times by the SHA-256 of the token. */
  private readonly signInTokens = new Map<string, number>();

  constructor(private readonly now: () => number = Date.now) {}

  open(): OpenedSession {
    this.dropExpired();
    const id = randomBytes(32).toString('base64url');
    const session: Session = { csrfToken: randomBytes(32).toString('base64url'), expiresAt: this.now() + SESSION_TTL_MS };
    this.sessions.set(hashOf(id), session);
    dropOldest(this.sessions, MAX_SESSIONS);
    return { id, session: view(session) };
  }

  /** A token that opens one session within SIGN_IN_TOKEN_TTL_MS; what `capsule dashboard` puts in the URL it opens. */
  issueSignInToken(): SignInToken {
    this.dropExpired();
    const token = randomBytes(32).toString('base64url');
    const expiresAt = this.now() + SIGN_IN_TOKEN_TTL_MS;
    this.signInTokens.set(hashOf(token), expiresAt);
    dropOldest(this.signInTokens, MAX_SIGN_IN_TOKENS);
    return { token, path: `${DASHBOARD_SIGN_IN_PATH}?token=${token}`, expiresAt: new Date(expiresAt).toISOString() };
  }

  /** Opens a session for a sign-in token, which is spent whether or not it was still valid; undefined when it was not. */
  redeemSignInToken(token: string): OpenedSession | undefined {
    const key = hashOf(token);
    const expiresAt = this.signInTokens.get(key);
    this.signInTokens.delete(key);
    if (expiresAt === undefined || expiresAt <= this.now()) return undefined;
    return this.open();
  }

  /** The live session the request's cookie names, if any. */
  sessionOf(headers: IncomingHttpHeaders): DashboardSession | undefined {
    const found = this.find(headers);
    return found && view(found);
  }

  close(headers: IncomingHttpHeaders): void {
    const id = cookieValue(headers.cookie, SESSION_COOKIE);
    if (id !== undefined) this.sessions.delete(hashOf(id));
  }

  /**
   * Whether the request's session cookie lets it through: false when it has no
   * live session; for a mutation, throws csrf_token_invalid unless it carries
   * that session's CSRF token, because a browser sends the cookie whoever made
   * the page that sends the request.
   */
  authorizes(method: string, headers: IncomingHttpHeaders): boolean {
    const session = this.find(headers);
    if (!session) return false;
    if (SAFE_METHODS.has(method.toUpperCase())) return true;
    const presented = headers[CSRF_HEADER];
    if (typeof presented === 'string' && sameSecret(presented, session.csrfToken)) return true;
    throw new CapsuleError('csrf_token_invalid', "this request changes something and lacks its session's CSRF token", {
      hint: `send the token from GET /v1/dashboard/session as ${CSRF_HEADER}`,
    });
  }

  private find(headers: IncomingHttpHeaders): Session | undefined {
    const id = cookieValue(headers.cookie, SESSION_COOKIE);
    if (id === undefined) return undefined;
    const key = hashOf(id);
    const session = this.sessions.get(key);
    if (!session) return undefined;
    if (session.expiresAt <= this.now()) {
      this.sessions.delete(key);
      return undefined;
    }
    return session;
  }

  private dropExpired(): void {
    const now = this.now();
    for (const [key, session] of this.sessions) if (session.expiresAt <= now) this.sessions.delete(key);
    for (const [key, expiresAt] of this.signInTokens) if (expiresAt <= now) this.signInTokens.delete(key);
  }
}

/** The Set-Cookie value of a session; `secure` when the browser reached the daemon over TLS. Max-Age 0 signs out. */
export function sessionCookie(id: string, maxAgeMs: number, secure: boolean): string {
  return [
    `${SESSION_COOKIE}=${id}`,
    'Path=/',
    `Max-Age=${Math.floor(maxAgeMs / 1000)}`,
    'HttpOnly',
    'SameSite=Strict',
    ...(secure ? ['Secure'] : []),
  ].join('; ');
}

/** The name of one part of a Cookie header, trimmed; a part without `=` is named by all of it. */
function cookieNameOf(part: string): string {
  const eq = part.indexOf('=');
  return (eq === -1 ? part : part.slice(0, eq)).trim();
}

/** A cookie's value from a Cookie header; undefined when absent. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && cookieNameOf(part) === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * A Cookie header without the cookie `name`, read by the same rule as
 * cookieValue (what the session lookup finds, the port proxy takes out).
 */
export function withoutCookie(header: string, name: string): string {
  return header
    .split(';')
    .map((part) => part.trim())
    .filter((part) => part !== '' && cookieNameOf(part) !== name)
    .join('; ');
}

function view(session: Session): DashboardSession {
  return { csrfToken: session.csrfToken, expiresAt: new Date(session.expiresAt).toISOString() };
}

function hashOf(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

function sameSecret(got: string, want: string): boolean {
  const a = Buffer.from(got);
  const b = Buffer.from(want);
  return a.length === b.length && timingSafeEqual(a, b);
}

function dropOldest<V>(map: Map<string, V>, max: number): void {
  for (const key of map.keys()) {
    if (map.size <= max) return;
    map.delete(key);
  }
}
