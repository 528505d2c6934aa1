// Large /files transfers through the VM's bulk port (agent/bulk-channel.ts):
// the proxy still sends the request to the agent over HTTP/2, which applies
// every rule (user, path, permissions, ownership, envd's errors), but the body
// bytes go over the bulk port, copied in the guest by a C helper rather than
// through the agent's JS per HTTP/2 frame. Anything unusual (compressed,
// unknown length, small, multipart, ranges) stays on HTTP/2.
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { constants as h2, type ClientHttp2Stream, type IncomingHttpHeaders as Http2Headers } from 'node:http2';
import { bulkHeaders, bulkMinBytes } from '@capsule/protocol/agent';
import type { BulkTransfer } from '../agent/bulk-channel.js';
import { agentResponse, cancelWithClient, responseHeadersForClient, sendAgentResponse, type ProxyFailure } from './agent-proxy.js';

const mediaType = (value: string | undefined) => (value ?? '').split(';')[0]!.trim().toLowerCase();

function isFilesPath(agentPath: string): boolean {
  return agentPath === '/files' || agentPath.startsWith('/files?');
}

/** The body size of an upload the bulk port may carry: a raw octet-stream body of known, large length. */
export function bulkUploadSize(method: string | undefined, agentPath: string, headers: IncomingHttpHeaders): number | undefined {
  if (method !== 'POST' || !isFilesPath(agentPath)) return undefined;
  if (mediaType(headers['content-type']) !== 'application/octet-stream') return undefined;
  const encoding = mediaType(headers['content-encoding']);
  if (encoding !== '' && encoding !== 'identity') return undefined;
  if (headers['transfer-encoding'] !== undefined) return undefined;
  const length = headers['content-length'];
  if (length === undefined || !/^\d{1,15}$/.test(length)) return undefined;
  const size = Number(length);
  return size >= bulkMinBytes ? size : undefined;
}

/** Whether to offer the agent the bulk port for a download (it decides, knowing the file). */
export function offersBulkDownload(method: string | undefined, agentPath: string, headers: IncomingHttpHeaders): boolean {
  return method === 'GET' && isFilesPath(agentPath) && headers.range === undefined;
}

export interface BulkOutcome {
  direction: 'upload' | 'download';
  /** Bytes that went over the bulk port; 0 when the agent answered without it. */
  bytes: number;
}

/**
 * An upload: the request goes to the agent without a body (`stream` was opened
 * with the transfer's headers), the body to the bulk port. The answer is the
 * agent's, once its helper wrote the file.
 */
export async function relayBulkUpload(req: IncomingMessage, res: ServerResponse, stream: ClientHttp2Stream, transfer: BulkTransfer, size: number): Promise<BulkOutcome> {
  const cancel = cancelWithClient(res, stream);
  stream.end();
  let uploaded = false;
  let answered = false;
  const upload = transfer.upload(req, size).then(
    () => (uploaded = true),
    () => {
      if (!answered) cancel(); // the agent's helper goes with its request
    },
  );
  const { status, headers } = await agentResponse(stream);
  answered = true;
  // The agent answers a success once its helper wrote every byte (all handed over by now, bar the last callback).
  if (status === 200) await upload;
  // The agent is done with the port either way; let go of it before the client has the answer.
  transfer.release();
  if (!uploaded) {
    // A refusal, before the agent took the body: the rest of it is read and dropped, so the answer reaches the client.
    await upload;
    req.resume();
  }
  await sendAgentResponse(res, stream, status, headers);
  return { direction: 'upload', bytes: uploaded && status === 200 ? size : 0 };
}

/**
 * A download: the agent either takes the bulk port (its answer names the
 * transfer and the size, with no body) or answers as usual over HTTP/2.
 */
export async function relayBulkDownload(req: IncomingMessage, res: ServerResponse, stream: ClientHttp2Stream, transfer: BulkTransfer): Promise<BulkOutcome> {
  const cancel = cancelWithClient(res, stream);
  stream.end();
  req.resume();
  const { status, headers } = await agentResponse(stream);
  if (headers[bulkHeaders.id] === undefined) {
    transfer.release();
    await sendAgentResponse(res, stream, status, headers);
    return { direction: 'download', bytes: 0 };
  }
  const size = bulkSize(headers);
  if (status !== 200 || headers[bulkHeaders.id] !== transfer.id || size === undefined) {
    cancel();
    throw { status: 502, message: "the sandbox's agent answered a bulk download with an invalid head" } satisfies ProxyFailure;
  }
  // The HTTP/2 stream carries no body; it ends when the agent's helper is done,
  // or is reset when the helper failed: then no more bytes are coming.
  stream.resume();
  stream.once('close', () => {
    if (stream.rstCode !== h2.NGHTTP2_NO_ERROR) transfer.release();
  });
  res.writeHead(200, { ...responseHeadersForClient(headers), 'content-length': String(size) });
  try {
    await transfer.download(res, size);
  } catch {
    cancel();
    res.destroy();
    return { direction: 'download', bytes: 0 };
  }
  // Let go of the port before the client can have the last byte, so that its
  // next transfer finds it free (the agent waits for its helper to exit).
  transfer.release();
  res.end();
  return { direction: 'download', bytes: size };
}

function bulkSize(headers: Http2Headers): number | undefined {
  const text = headers[bulkHeaders.size];
  if (typeof text !== 'string' || !/^\d{1,15}$/.test(text)) return undefined;
  return Number(text);
}
