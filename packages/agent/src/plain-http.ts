// Small pieces every plain-HTTP route (/init, /files) shares: envd's JSON
// error shape `{ code, message }`, a bounded body reader and a drain for
// requests answered early. Must never buffer a body without a limit.

import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { createLogger } from './log.js';

const log = createLogger('http');

export type PlainHttpHandler = (request: Http2ServerRequest, response: Http2ServerResponse) => void | Promise<void>;

/** An error a route answers with its own HTTP status and message. */
export class HttpError extends Error {
  override name = 'HttpError';
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** envd's error body (its OpenAPI `Error` schema). */
export function sendJsonError(request: Http2ServerRequest, response: Http2ServerResponse, status: number, message: string): void {
  if (response.headersSent) {
    // Too late for a status: cut the stream so the client sees a failure, not a short success.
    log.warn(`${request.method} ${request.url} failed after the response began: ${message}`);
    response.stream.close(0x2 /* INTERNAL_ERROR */);
    return;
  }
  const body = JSON.stringify({ code: status, message });
  response.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  response.end(body);
  discardRestOfBody(request);
}

/** Reads the whole body, refusing (413) more than maxBytes, declared or sent. */
export async function readBoundedBody(request: Http2ServerRequest, maxBytes: number): Promise<Buffer> {
  const declared = Number(request.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBytes) {
    throw new HttpError(413, `request body is ${declared} bytes; at most ${maxBytes} are accepted`);
  }
  // Events rather than `for await`: leaving an async iterator early destroys
  // the stream, and the 413 could then never be sent.
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const cleanup = () => {
      request.off('data', onData);
      request.off('end', onEnd);
      request.off('error', onError);
      request.off('aborted', onAborted);
    };
    const onData = (chunk: Buffer) => {
      total += chunk.length;
      if (total > maxBytes) {
        cleanup();
        request.pause();
        reject(new HttpError(413, `request body is larger than ${maxBytes} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(Buffer.concat(chunks));
    };
    const onError = (error: Error) => {
      cleanup();
      reject(error);
    };
    const onAborted = () => onError(new Error('the client aborted the request'));
    request.on('data', onData);
    request.on('end', onEnd);
    request.on('error', onError);
    request.on('aborted', onAborted);
  });
}

/** After an early answer, the rest of the upload is read and dropped, so the client can finish sending. */
export function discardRestOfBody(request: Http2ServerRequest): void {
  if (request.readableEnded || request.destroyed) return;
  request.on('error', () => {});
  request.resume();
}
