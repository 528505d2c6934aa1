// Test helper: plain HTTP/2 requests to the agent's non-Connect routes
// (/init, /files), with the body as a Buffer or a stream, and the response
// either collected or handed over as a stream for slow readers.

import type http2 from 'node:http2';
import { Readable } from 'node:stream';

export interface PlainRequest {
  method?: string;
  path: string;
  headers?: Record<string, string>;
  body?: Buffer | string | Readable;
}

export interface PlainResponse {
  status: number;
  headers: http2.IncomingHttpHeaders;
  body: Buffer;
  /** The body parsed as JSON (throws when it is not). */
  json(): unknown;
}

/** Starts a request; resolves with the status and headers once they arrive, and the body stream. */
export function startRequest(session: http2.ClientHttp2Session, request: PlainRequest) {
  const stream = session.request({ ':method': request.method ?? 'GET', ':path': request.path, ...request.headers });
  const body = request.body;
  if (body instanceof Readable) body.pipe(stream);
  else stream.end(body);
  const response = new Promise<{ status: number; headers: http2.IncomingHttpHeaders; stream: http2.ClientHttp2Stream }>(
    (resolve, reject) => {
      stream.once('response', (headers) => resolve({ status: Number(headers[':status']), headers, stream }));
      stream.once('error', reject);
    },
  );
  return response;
}

export async function plainRequest(session: http2.ClientHttp2Session, request: PlainRequest): Promise<PlainResponse> {
  const { status, headers, stream } = await startRequest(session, request);
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  const bodyBuffer = Buffer.concat(chunks);
  return { status, headers, body: bodyBuffer, json: () => JSON.parse(bodyBuffer.toString('utf8')) };
}
