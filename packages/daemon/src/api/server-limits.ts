// Limits every API listener (unix socket and TCP) holds a client to: how
// long its request head and, on the daemon's own routes, its body may take,
// how large a head may be, how many connections one listener keeps, and the
// answer to a request Node's parser refuses. It must never limit how long an
// answer streams: process output, watches and tunnels last as long as they do.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type https from 'node:https';
import type { Duplex } from 'node:stream';
import { httpStatusOf, type ErrorBody } from '@capsule/protocol';
import { CapsuleError } from '../errors.js';

export interface ServerLimits {
  /** Time from a connection's (or a request's) start to the end of its head. */
  headersTimeoutMs: number;
  /** Time for the body of a request to the daemon's own routes (JSON, at most bodyLimit). */
  requestBodyTimeoutMs: number;
  /** Time for an upload's body (a build context as a tar stream, a volume image), bounded in size where it is read. */
  uploadBodyTimeoutMs: number;
  /** Largest request head, in bytes. */
  maxHeaderBytes: number;
  /** Connections one listener holds at once; more are closed as they come. */
  maxConnections: number;
  /** How often Node looks for requests past their head timeout. */
  checkIntervalMs: number;
}

export const defaultServerLimits: ServerLimits = {
  headersTimeoutMs: 20_000,
  requestBodyTimeoutMs: 60_000,
  uploadBodyTimeoutMs: 15 * 60_000,
  maxHeaderBytes: 16 * 1024,
  maxConnections: 1024,
  checkIntervalMs: 1_000,
};

/** Options for http.createServer that only creation can set. */
export function serverOptions(limits: ServerLimits): http.ServerOptions {
  return {
    maxHeaderSize: limits.maxHeaderBytes,
    headersTimeout: limits.headersTimeoutMs,
    // Node's whole-request limit would cut proxied uploads and client streams; the daemon's own routes get requestBodyDeadline instead.
    requestTimeout: 0,
    connectionsCheckingInterval: limits.checkIntervalMs,
  };
}

/** Applies the limits that are set on a created server, and answers what Node's parser refuses. */
export function limitServer(server: http.Server | https.Server, limits: ServerLimits): void {
  server.headersTimeout = limits.headersTimeoutMs;
  server.maxConnections = limits.maxConnections;
  server.on('clientError', answerClientError);
}

/** The daemon's error shape, written raw on a socket whose request could not be parsed (no response object exists). */
export function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed || !socket.writable) return void socket.destroy();
  const error =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? new CapsuleError('request_timeout', 'the request head did not arrive in time', { hint: 'send the whole request head at once' })
      : err.code === 'HPE_HEADER_OVERFLOW'
        ? new CapsuleError('invalid_argument', 'the request head is too large', { hint: 'keep headers under 16 KiB in all' })
        : new CapsuleError('invalid_argument', `the request could not be parsed (${err.code ?? 'malformed'})`, {
            hint: 'send well-formed HTTP/1.1',
          });
  const body = JSON.stringify({ error: { code: error.code, message: error.message, hint: error.hint ?? '' } } satisfies ErrorBody);
  const status = httpStatusOf(error.code);
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Error'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/**
 * Bounds the time a request to the daemon's own routes takes to arrive
 * whole: a client that trickles its body (slowloris) is answered 408 and
 * its connection closed, instead of holding a socket and a parser forever.
 */
export function requestBodyDeadline(req: IncomingMessage, res: ServerResponse, timeoutMs: number): void {
  if (req.complete) return;
  const timer = setTimeout(() => {
    if (req.complete) return;
    const error = new CapsuleError('request_timeout', `the request body did not arrive within ${Math.round(timeoutMs / 1000)} s`, {
      hint: 'send the body at once, or retry',
    });
    if (res.headersSent) return void req.socket.destroy();
    const body = JSON.stringify({ error: { code: error.code, message: error.message, hint: error.hint ?? '' } } satisfies ErrorBody);
    res.writeHead(httpStatusOf(error.code), { 'content-type': 'application/json', connection: 'close' });
    res.end(body, () => req.socket.destroy());
  }, timeoutMs);
  timer.unref();
  const clear = () => clearTimeout(timer);
  req.once('end', clear);
  req.once('close', clear);
}
