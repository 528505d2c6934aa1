// The web dashboard's contract with the daemon: how a browser signs in (an API
// key, or a one-time token from `capsule dashboard`), the session cookie and
// CSRF header names, and the terminal WebSocket's messages. Nothing here may
// import daemon or client code.
import { Type, type Static } from '@sinclair/typebox';

/** Where the daemon serves the dashboard's files. */
export const DASHBOARD_PATH = '/ui';
/** The page that exchanges a one-time token (`?token=`) for a session, then sends the browser to the dashboard. */
export const DASHBOARD_SIGN_IN_PATH = '/ui/sign-in';
/** The session cookie: HttpOnly, so the page's scripts never read it. */
export const SESSION_COOKIE = 'capsule_session';
/** The header every mutation made with a session cookie must carry: the session's CSRF token. */
export const CSRF_HEADER = 'x-csrf-token';

export const SignInRequest = Type.Object({ apiKey: Type.String({ minLength: 1, maxLength: 256 }) }, { additionalProperties: false });
export type SignInRequest = Static<typeof SignInRequest>;

/** A signed-in browser's session, as the page sees it (the cookie itself stays out of its reach). */
export const DashboardSession = Type.Object({
  /** Sent back as X-CSRF-Token on every request that changes something. */
  csrfToken: Type.String(),
  expiresAt: Type.String({ format: 'date-time' }),
});
export type DashboardSession = Static<typeof DashboardSession>;

/** A one-time sign-in token (what `capsule dashboard` asks for): it opens one session, once, within a minute. */
export const SignInToken = Type.Object({
  token: Type.String(),
  /** The path to open on the daemon's TCP address: the sign-in page with the token. */
  path: Type.String(),
  expiresAt: Type.String({ format: 'date-time' }),
});
export type SignInToken = Static<typeof SignInToken>;

/**
 * The terminal WebSocket (`/v1/sandboxes/{id}/terminal?cols=&rows=`): binary
 * frames are the terminal's bytes both ways; text frames from the page are
 * these JSON messages. The socket closes with code 1000 and the exit code as
 * its reason when the shell ends.
 */
export interface TerminalResize {
  type: 'resize';
  cols: number;
  rows: number;
}
