// How requests reach capsuled: the Transport interface the client talks to, and
// its HTTP/1.1 implementation over a unix socket or TCP (node:http). It knows
// nothing of the REST API; it moves bytes and turns socket failures into ConnectionError.
import type http from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { agentFor, originOf, requestFunctionFor, tlsConnectionError, type DaemonAddress } from './daemon-tls.js';
import { ConnectionError } from './errors.js';

export interface TransportRequest {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** Path and query, e.g. `/v1/sandboxes?all=true`. */
  path: string;
  headers?: Record<string, string>;
  /**
   * A string or bytes are sent with their Content-Length; an async iterable is
   * streamed as it yields (chunked unless the headers give a Content-Length),
   * at the pace the daemon reads it.
   */
  body?: string | Uint8Array | AsyncIterable<Uint8Array>;
  /** Aborting it destroys the request and its response; the promise or the body rejects with `signal.reason`. */
  signal?: AbortSignal;
}

export interface TransportResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** The response body as it arrives. Iterating it after an abort rejects with the abort reason. */
  body: AsyncIterable<Uint8Array>;
  /** Stops reading and releases the connection (safe to call more than once). */
  cancel(): void;
}

export interface Transport {
  request(request: TransportRequest): Promise<TransportResponse>;
  /** Where this transport connects, for messages: `unix:/run/capsule/capsuled.sock`. */
  readonly address: string;
  close(): void;
}

/** Where capsuled is (TCP: TLS unless `tls: false`); `apiKey` is sent as X-API-Key (needed over TCP). */
export type HttpTransportOptions = DaemonAddress;

const connectErrorCodes = new Set(['ENOENT', 'ECONNREFUSED', 'EACCES', 'EPERM', 'ENOTSOCK', 'EHOSTUNREACH', 'ENOTFOUND', 'ETIMEDOUT']);

function isStreamedBody(body: string | Uint8Array | AsyncIterable<Uint8Array>): body is AsyncIterable<Uint8Array> {
  return typeof body !== 'string' && !(body instanceof Uint8Array);
}

export class HttpTransport implements Transport {
  readonly address: string;
  readonly #target: { socketPath: string } | { host: string; port: number };
  readonly #apiKey: string | undefined;
  readonly #agent: http.Agent;
  readonly #request: typeof http.request;

  constructor(address: HttpTransportOptions) {
    this.#target = 'socketPath' in address ? { socketPath: address.socketPath } : { host: address.host, port: address.port };
    this.#apiKey = address.apiKey;
    this.#agent = agentFor(address, { keepAlive: true });
    this.#request = requestFunctionFor(address);
    this.address = 'socketPath' in address ? `unix:${address.socketPath}` : originOf(address);
  }

  request(request: TransportRequest): Promise<TransportResponse> {
    return this.#attempt(request, true);
  }

  #attempt(request: TransportRequest, mayRetry: boolean): Promise<TransportResponse> {
    const { signal } = request;
    if (signal?.aborted) return Promise.reject(signal.reason);

    return new Promise<TransportResponse>((resolve, reject) => {
      const req = this.#request({
        ...this.#target,
        agent: this.#agent,
        method: request.method,
        path: request.path,
        headers: {
          ...request.headers,
          ...(this.#apiKey !== undefined ? { 'x-api-key': this.#apiKey } : {}),
          ...(request.body === undefined || isStreamedBody(request.body)
            ? {}
            : { 'content-length': String(Buffer.byteLength(request.body)) }),
        },
      });
      const streamed = request.body !== undefined && isStreamedBody(request.body) ? request.body : undefined;
      let bodyFailure: unknown;
      let response: http.IncomingMessage | undefined;
      const onAbort = () => {
        req.destroy(signal?.reason);
        response?.destroy(signal?.reason);
      };
      const detachAbort = () => signal?.removeEventListener('abort', onAbort);
      signal?.addEventListener('abort', onAbort, { once: true });

      req.on('error', (error: NodeJS.ErrnoException) => {
        detachAbort();
        if (signal?.aborted) reject(signal.reason);
        else if (bodyFailure !== undefined) reject(bodyFailure);
        // The daemon closed an idle keep-alive connection just as we reused it; the
        // request never reached it, so sending it again is safe (Node's documented
        // remedy). EPIPE is the same race seen from the write side.
        else if (
          mayRetry &&
          streamed === undefined &&
          response === undefined &&
          req.reusedSocket &&
          (error.code === 'ECONNRESET' || error.code === 'EPIPE')
        )
          resolve(this.#attempt(request, false));
        else reject(this.#connectionError(error, response !== undefined));
      });
      req.on('response', (res) => {
        response = res;
        res.on('close', detachAbort);
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: this.#bodyOf(res, signal),
          cancel: () => res.destroy(),
        });
      });
      if (streamed === undefined) req.end(request.body);
      // A body that fails to produce its bytes (a local file unreadable midway)
      // fails the request with its own error; the daemon sees a cut upload.
      else {
        const source = async function* () {
          try {
            for await (const chunk of streamed) yield chunk;
          } catch (error) {
            bodyFailure = error ?? new Error('the request body failed');
            throw error;
          }
        };
        pipeline(Readable.from(source(), { objectMode: false }), req).catch(() => undefined);
      }
    });
  }

  close(): void {
    this.#agent.destroy();
  }

  async *#bodyOf(res: http.IncomingMessage, signal: AbortSignal | undefined): AsyncGenerator<Uint8Array> {
    try {
      for await (const chunk of res) yield chunk as Buffer;
      // A response cut short (daemon died mid-body) ends without an error on some Node versions.
      if (!res.complete) throw this.#connectionError(undefined, true);
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      if (error instanceof ConnectionError) throw error;
      throw this.#connectionError(error as NodeJS.ErrnoException, true);
    } finally {
      res.destroy();
    }
  }

  #connectionError(error: NodeJS.ErrnoException | undefined, afterResponse: boolean): ConnectionError {
    const tlsError = afterResponse ? undefined : tlsConnectionError(error, this.address);
    if (tlsError) return tlsError;
    const code = error?.code;
    if (!afterResponse && code !== undefined && connectErrorCodes.has(code)) {
      const permission = code === 'EACCES' || code === 'EPERM';
      return new ConnectionError('daemon_unreachable', `Cannot reach capsuled at ${this.address} (${code})`, {
        hint: permission
          ? 'You lack permission on the socket: run as root or as a member of the group that owns it'
          : 'Start the daemon with `capsule daemon start`',
        cause: error,
      });
    }
    return new ConnectionError('connection_lost', `The connection to capsuled at ${this.address} broke${code ? ` (${code})` : ''}`, {
      hint: 'Check that capsuled is still running with `capsule daemon status`',
      cause: error,
    });
  }
}
