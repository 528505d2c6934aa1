// The daemon's client of one guest agent: Connect RPC over HTTP/2 over the
// VM's virtio-serial port (a unix socket on the host). Everything the guest
// sends is bounded here (message size) before any of it reaches an API client.
import {
  constants as h2,
  type ClientHttp2Stream,
  type Http2Session,
  type IncomingHttpHeaders as Http2Headers,
  type OutgoingHttpHeaders,
} from 'node:http2';
import net from 'node:net';
import { createClient, type Client } from '@connectrpc/connect';
import { createConnectTransport, Http2SessionManager } from '@connectrpc/connect-node';
import { Process, agentHttpPaths, tunnelErrorHeader, type AgentInitRequest } from '@capsule/protocol/agent';
import { CapsuleError } from '../errors.js';

export type { AgentInitRequest };

/** The largest single message accepted from a guest. */
const MAX_AGENT_MESSAGE_BYTES = 4 * 1024 * 1024;
const AUTHORITY = 'http://capsule-agent';
/**
 * HTTP/2 flow-control window for what the guest sends (downloads, output).
 * With the default 64 KiB every 64 KiB waits a round trip through the guest,
 * slow under TCG. This bounds what one agent can make the daemon buffer.
 */
const FLOW_WINDOW_BYTES = 8 * 1024 * 1024;

export class AgentClient {
  readonly process: Client<typeof Process>;
  private readonly sessions: Http2SessionManager;
  private readonly sockets = new Set<net.Socket>();

  constructor(socketPath: string) {
    this.sessions = new Http2SessionManager(
      AUTHORITY,
      { pingIdleConnection: false },
      {
        createConnection: () => {
          const socket = net.connect(socketPath);
          this.sockets.add(socket);
          socket.once('close', () => this.sockets.delete(socket));
          return socket;
        },
        // The guest is not trusted: cap what it may make us buffer per header block.
        maxHeaderListPairs: 256,
        maxSessionMemory: 64,
        // No server push: a guest must not be able to open streams toward the daemon.
        settings: { initialWindowSize: FLOW_WINDOW_BYTES, enablePush: false },
      },
    );
    const transport = createConnectTransport({
      baseUrl: AUTHORITY,
      httpVersion: '2',
      sessionManager: this.sessions,
      readMaxBytes: MAX_AGENT_MESSAGE_BYTES,
      useBinaryFormat: true,
    });
    this.process = createClient(Process, transport);
  }

  /** Resolves when the agent answers GET /health with a 2xx within `timeoutMs`. */
  async health(timeoutMs: number): Promise<void> {
    await this.plainRequest('GET', '/health', undefined, timeoutMs);
  }

  /**
   * POST /init: what a restored guest must be told before anyone uses it (the
   * time, fresh entropy, its hostname, the sandbox's env vars). Rejects unless
   * the agent answers 2xx within `timeoutMs`.
   */
  async init(body: AgentInitRequest, timeoutMs: number): Promise<void> {
    await this.plainRequest('POST', '/init', Buffer.from(JSON.stringify(body)), timeoutMs);
  }

  /**
   * GET of a small JSON document from the agent (e.g. /metrics): rejects
   * unless it answers 2xx within `timeoutMs` with at most `maxBytes` of JSON.
   * The caller still validates the shape: the guest is not trusted.
   */
  async getJson(path: string, timeoutMs: number, maxBytes = 64 * 1024): Promise<unknown> {
    const what = `agent GET ${path}`;
    const stream = await withTimeout(this.request('GET', path, {}), timeoutMs, what);
    try {
      const body = await withTimeout(
        new Promise<Buffer>((resolve, reject) => {
          const chunks: Buffer[] = [];
          let size = 0;
          let status = 0;
          stream.once('response', (headers) => (status = Number(headers[':status'])));
          stream.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > maxBytes) reject(new Error(`${what} answered more than ${maxBytes} bytes`));
            else chunks.push(chunk);
          });
          stream.once('end', () =>
            status >= 200 && status <= 299 ? resolve(Buffer.concat(chunks)) : reject(new Error(`${what} answered HTTP ${status}`)),
          );
          stream.once('error', reject);
          stream.end();
        }),
        timeoutMs,
        what,
      );
      return JSON.parse(body.toString('utf8')) as unknown;
    } finally {
      stream.close();
    }
  }

  /** A plain-HTTP call to the agent whose answer is only its status; anything but 2xx rejects. */
  private async plainRequest(method: 'GET' | 'POST', path: string, body: Buffer | undefined, timeoutMs: number): Promise<void> {
    const what = `agent ${method} ${path}`;
    const headers = body ? { 'content-type': 'application/json', 'content-length': body.length } : {};
    const stream = await withTimeout(this.request(method, path, headers), timeoutMs, what);
    try {
      const status = await withTimeout(
        new Promise<number>((resolve, reject) => {
          stream.once('response', (responseHeaders) => resolve(Number(responseHeaders[':status'])));
          stream.once('error', reject);
          stream.once('close', () => reject(new Error(`the agent closed the stream of ${what}`)));
          stream.end(body);
        }),
        timeoutMs,
        what,
      );
      if (status < 200 || status > 299) throw new Error(`${what} answered HTTP ${status}`);
    } finally {
      stream.close();
      stream.resume();
    }
  }

  /**
   * Opens a raw HTTP/2 request to the agent, for the API's proxy: the caller
   * writes the body and reads the response. Reuses the one session.
   */
  async openStream(method: string, path: string, headers: OutgoingHttpHeaders): Promise<ClientHttp2Stream> {
    return await this.request(method, path, headers);
  }

  /**
   * Every stream of the session, opened here: its errors (a guest may reset
   * any stream) are read by its user's own listeners, and this one keeps them
   * from being unhandled, also on a stream whose opener gave up waiting
   * (withTimeout) before it was handed over, where nobody else listens.
   */
  private async request(method: string, path: string, headers: OutgoingHttpHeaders): Promise<ClientHttp2Stream> {
    const stream = await this.sessions.request(method, path, headers, {});
    stream.on('error', () => undefined);
    cancelInsteadOfDestroy(stream);
    guardSession(stream);
    return stream;
  }

  /**
   * Opens a tunnel to TCP `port` on the guest's loopback (the agent's
   * /capsule/tunnel): resolves with the HTTP/2 stream once the agent is
   * connected, as a duplex of the connection's bytes. Refusals become
   * CapsuleErrors: `port_not_listening` when nothing listens,
   * `too_many_tunnels` at the agent's limit; the guest's words are bounded.
   */
  async openTunnel(port: number, timeoutMs: number): Promise<ClientHttp2Stream> {
    const what = `agent tunnel to port ${port}`;
    const stream = await withTimeout(this.request('POST', `${agentHttpPaths.tunnel}?port=${port}`, {}), timeoutMs, what);
    try {
      const headers = await withTimeout(
        new Promise<Http2Headers>((resolve, reject) => {
          stream.once('response', resolve);
          stream.once('error', reject);
          stream.once('close', () => reject(new Error(`the agent closed the ${what} without an answer`)));
        }),
        timeoutMs,
        what,
      );
      const status = Number(headers[':status']);
      if (status === 200) return stream;
      const message = await readSmallText(stream, 1024, timeoutMs);
      const kind = headers[tunnelErrorHeader];
      if (kind === 'refused') {
        throw new CapsuleError('port_not_listening', `nothing listens on port ${port} in the sandbox`, {
          hint: 'start the service inside the sandbox first, listening on 127.0.0.1 or 0.0.0.0',
        });
      }
      if (kind === 'limit' || status === 429)
        throw new CapsuleError('too_many_tunnels', `the sandbox's agent holds too many open tunnels`, {
          hint: 'close some connections to the sandbox and retry',
        });
      if (kind === 'bad_port' || status === 400) throw new CapsuleError('invalid_argument', `port must be from 1 to 65535, got ${port}`);
      throw new CapsuleError('agent_unavailable', `the ${what} failed (HTTP ${status}${message ? `: ${message}` : ''})`);
    } catch (err) {
      cancelAgentStream(stream);
      if (err instanceof CapsuleError) throw err;
      throw new CapsuleError('agent_unavailable', `the sandbox's agent could not open a tunnel: ${(err as Error).message}`);
    }
  }

  /**
   * Closes the connection to the agent. The sockets are destroyed rather than
   * the session manager aborted: abort() drops the manager's error listeners,
   * and a session that then fails (a guest sending garbage) would emit an
   * unhandled 'error' and take the daemon down.
   */
  close(): void {
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }
}

/**
 * How long a cancelled agent stream may wait for its reset to go out. A guest
 * that stops reading its port keeps it waiting; after this its whole
 * connection is closed instead (the next call opens a new one).
 */
const RESET_GRACE_MS = 10_000;
const awaitingReset = new WeakSet<ClientHttp2Stream>();

/**
 * Cancels an agent stream: RST_STREAM CANCEL, after which Node destroys the
 * stream itself once nghttp2 has closed it. Never destroy() an agent stream
 * nghttp2 still holds: Node 20's http2 (20.13 and later, nodejs/node#52952)
 * queues a reset behind a write in progress, and a stream destroyed in
 * between loses it while nghttp2 still has the stream's body. nghttp2 then
 * asks Node for that stream's next bytes, gets 0 without end-of-stream, and
 * asks again forever in one synchronous loop that fills memory until the
 * daemon dies. A client breaking off an upload did exactly that.
 */
export function cancelAgentStream(stream: ClientHttp2Stream): void {
  if (stream.destroyed) return;
  if (!stream.closed) stream.close(h2.NGHTTP2_CANCEL);
  if (awaitingReset.has(stream)) return;
  awaitingReset.add(stream);
  const session = stream.session;
  const fallback = setTimeout(() => {
    if (!stream.destroyed) session?.destroy();
  }, RESET_GRACE_MS).unref();
  stream.once('close', () => clearTimeout(fallback));
}

/**
 * Makes destroy() on an agent stream a cancel (see cancelAgentStream) until
 * nghttp2 has closed the stream, for the code that destroys streams it was
 * handed, once or several times: the proxies' pipelines, the HTTP client over
 * a tunnel, a tunnel's relay. Node's own destroy, which follows nghttp2's
 * close, runs at once (Node counts on it: deferring it wedged the session).
 */
function cancelInsteadOfDestroy(stream: ClientHttp2Stream): void {
  const destroyNow = stream.destroy.bind(stream);
  stream.destroy = (error?: Error) => {
    if (stream.destroyed) return stream;
    // A session going down takes all its streams with it, nghttp2's side included: nothing can loop.
    if (!stream.session || stream.session.destroyed || closedByNghttp2(stream)) return destroyNow(error);
    cancelAgentStream(stream);
    return stream;
  };
}

let streamStateKey: symbol | undefined;

/**
 * Whether nghttp2 has closed the stream: Node's handler of nghttp2's close
 * marks the stream's private state (`fd = -1`) just before it destroys the
 * stream. Where that state cannot be found (another Node), a stream closed
 * on our side counts, as it did before.
 */
function closedByNghttp2(stream: ClientHttp2Stream): boolean {
  streamStateKey ??= Object.getOwnPropertySymbols(stream).find((key) => key.description === 'state');
  const state = streamStateKey ? (stream as unknown as Record<symbol, { fd?: number } | undefined>)[streamStateKey] : undefined;
  return state ? state.fd === -1 : stream.closed;
}

const guarded = new WeakSet<Http2Session>();

/**
 * Prepares a stream's session once: the session-wide flow-control window (the
 * per-stream one is in the settings), and an 'error' listener of our own. The
 * session manager stops listening once it has given up on a session, and a
 * session that errors after that (a guest sending garbage, a socket destroyed
 * by close()) would otherwise emit an unhandled 'error' and end the daemon.
 * Such errors reach the streams in use anyway.
 */
function guardSession(stream: ClientHttp2Stream): void {
  const session = stream.session;
  if (!session || guarded.has(session)) return;
  guarded.add(session);
  session.on('error', () => undefined);
  // Node makes a stream object of its own for headers that arrive on a stream the daemon already let go of
  // (or one the guest pushes); nobody listens to it, so its reset would be an unhandled error.
  session.on('stream', (orphan: ClientHttp2Stream) => orphan.on('error', () => undefined).destroy());
  if (!session.destroyed) session.setLocalWindowSize(FLOW_WINDOW_BYTES);
}

async function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} timed out after ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** What a refusing agent said, as printable text of at most `maxBytes` (the guest is not trusted). */
async function readSmallText(stream: ClientHttp2Stream, maxBytes: number, timeoutMs: number): Promise<string> {
  const body = await withTimeout(
    new Promise<Buffer>((resolve) => {
      const chunks: Buffer[] = [];
      let size = 0;
      stream.on('data', (chunk: Buffer) => {
        if (size < maxBytes) chunks.push(chunk.subarray(0, maxBytes - size));
        size += chunk.length;
        if (size >= maxBytes) resolve(Buffer.concat(chunks));
      });
      stream.once('end', () => resolve(Buffer.concat(chunks)));
      stream.once('error', () => resolve(Buffer.concat(chunks)));
      stream.once('close', () => resolve(Buffer.concat(chunks)));
    }),
    timeoutMs,
    "reading the agent's refusal",
  ).catch(() => Buffer.alloc(0));
  let text = body.toString('utf8');
  try {
    const parsed = JSON.parse(text) as { message?: unknown };
    if (typeof parsed.message === 'string') text = parsed.message;
  } catch {
    // Not JSON: the raw text, cleaned below.
  }
  return text.replace(/[^\x20-\x7e]/g, '?').slice(0, 200);
}
