// The dashboard's one way to the daemon: same-origin fetches that carry the
// session cookie (the browser adds it; scripts never see it) and, on every
// request that changes something, the session's CSRF token. Errors come back
// as ApiError with the daemon's stable code. Types only from @capsule/protocol.
import type { DashboardSession, ErrorBody } from '@capsule/protocol';

const CSRF_HEADER = 'x-csrf-token';
let csrfToken: string | undefined;

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** Called when the daemon says the session is gone, so the page can show the sign-in form. */
let onSignedOut: () => void = () => undefined;
export function whenSignedOut(handler: () => void): void {
  onSignedOut = handler;
}

export async function request<T>(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<T> {
  const response = await send(method, path, body, contentType);
  if (response.status === 204) return undefined as T;
  const type = response.headers.get('content-type') ?? '';
  return (type.includes('json') ? await response.json() : await response.text()) as T;
}

/** Sends a request with the CSRF token on mutations; an answer that is not 2xx throws its ApiError. */
async function send(method: string, path: string, body: unknown, contentType: string): Promise<Response> {
  const headers: Record<string, string> = {};
  if (method !== 'GET' && csrfToken) headers[CSRF_HEADER] = csrfToken;
  let payload: BodyInit | undefined;
  if (body instanceof Blob) {
    payload = body;
    headers['content-type'] = contentType;
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers['content-type'] = 'application/json';
  }
  const response = await fetch(path, { method, headers, body: payload ?? null, credentials: 'same-origin' });
  if (!response.ok) {
    const error = await errorOf(response);
    if (error.status === 401 && !path.startsWith('/v1/dashboard/session')) onSignedOut();
    throw error;
  }
  return response;
}

/**
 * A POST whose answer is application/x-ndjson (a build's or a pull's events):
 * each line is handed to `onEvent` as it arrives, so a log shows live.
 */
export async function streamEvents<T>(path: string, body: unknown, onEvent: (event: T) => void): Promise<void> {
  const response = await send('POST', path, body, 'application/json');
  if (!response.body) throw new ApiError(response.status, 'http_error', 'the answer has no body');
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffered += value;
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) if (line.trim() !== '') onEvent(JSON.parse(line) as T);
  }
  if (buffered.trim() !== '') onEvent(JSON.parse(buffered) as T);
}

async function errorOf(response: Response): Promise<ApiError> {
  const text = await response.text();
  try {
    const body = JSON.parse(text) as Partial<ErrorBody>;
    if (body.error) return new ApiError(response.status, body.error.code, body.error.message);
  } catch {
    // Not the daemon's error shape: show what came.
  }
  return new ApiError(response.status, 'http_error', text.slice(0, 200) || `HTTP ${response.status}`);
}

/** The current session, if this browser has one; remembers its CSRF token. */
export async function currentSession(): Promise<DashboardSession | undefined> {
  try {
    const session = await request<DashboardSession>('GET', '/v1/dashboard/session');
    csrfToken = session.csrfToken;
    return session;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return undefined;
    throw error;
  }
}

export async function signIn(apiKey: string): Promise<void> {
  const session = await request<DashboardSession>('POST', '/v1/dashboard/session', { apiKey });
  csrfToken = session.csrfToken;
}

export async function signOut(): Promise<void> {
  await request('DELETE', '/v1/dashboard/session');
  csrfToken = undefined;
}

/** A sandbox agent's path (its files, its RPCs) through the daemon's proxy. */
export function agentPath(sandboxId: string, path: string): string {
  return `/v1/sandboxes/${encodeURIComponent(sandboxId)}/envd${path}`;
}

export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
