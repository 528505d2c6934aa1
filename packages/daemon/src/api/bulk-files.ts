// Large /files transfers through the VM's bulk port (agent/bulk-channel.ts):
// the proxy still sends the request to the agent over HTTP/2, which applies
// every rule (user, path, permissions, ownership, envd's errors), but the body
// bytes go over the bulk port, copied in the guest by a C helper rather than
// through the agent's JS per HTTP/2 frame. An upload goes there when it is
// large or of unknown length, not compressed, names its path in the query, and
// is either raw or multipart with the file as its first part (the daemon
// takes the file's bytes out of the form, and checks the rest of it). Anything
// else (compressed, small, other forms, ranges) stays on HTTP/2.
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { constants as h2, type ClientHttp2Stream, type IncomingHttpHeaders as Http2Headers } from 'node:http2';
import { Readable } from 'node:stream';
import { bulkHeaders, bulkMinBytes } from '@capsule/protocol/agent';
import {
  boundaryFromContentType,
  MultipartError,
  MultipartReader,
  parseHeaderParameters,
  type MultipartPart,
} from '@capsule/protocol/multipart';
import type { BulkTransfer } from '../agent/bulk-channel.js';
import { CapsuleError } from '../errors.js';
import { agentResponse, cancelWithClient, guestAnswerHeaders, sendAgentResponse, type ProxyFailure } from './agent-relay.js';

const mediaType = (value: string | undefined) => parseHeaderParameters(value ?? '').type;

/** Bytes of a multipart body read, at most, to find its first part's headers. */
const PEEK_MAX_BYTES = 64 * 1024;

function isFilesPath(agentPath: string): boolean {
  return agentPath === '/files' || agentPath.startsWith('/files?');
}

export type BulkUploadKind = 'raw' | 'multipart';

/**
 * Whether an upload may go over the bulk port, judged on its head: `raw` (an
 * octet-stream body) or `multipart` (if its first part turns out to be the
 * file, see {@link splitUpload}).
 */
export function bulkUploadKind(method: string | undefined, agentPath: string, headers: IncomingHttpHeaders): BulkUploadKind | undefined {
  if (method !== 'POST' || !isFilesPath(agentPath)) return undefined;
  if (!new URLSearchParams(agentPath.slice('/files'.length)).has('path')) return undefined;
  const encoding = mediaType(headers['content-encoding']);
  if (encoding !== '' && encoding !== 'identity') return undefined;
  const length = headers['content-length'];
  if (length === undefined) {
    if (headers['transfer-encoding'] === undefined) return undefined; // no body
  } else if (!/^\d{1,15}$/.test(length) || Number(length) < bulkMinBytes) {
    return undefined;
  }
  const type = mediaType(headers['content-type']);
  if (type === 'application/octet-stream') return 'raw';
  if (type !== 'multipart/form-data') return undefined;
  try {
    boundaryFromContentType(headers['content-type']);
  } catch {
    return undefined; // the agent says what is wrong with it
  }
  return 'multipart';
}

/**
 * A request body read by several parties in turn: the upload, then, if it
 * stopped early, {@link drain}. (Leaving a loop over {@link chunks} early
 * leaves the rest of the body unread rather than ending it.)
 */
export class RequestBody {
  private readonly source: AsyncIterator<Buffer>;

  constructor(req: Readable) {
    this.source = req.iterator({ destroyOnReturn: false });
  }

  async *chunks(): AsyncGenerator<Buffer, void, undefined> {
    for (;;) {
      const next = await this.source.next();
      if (next.done) return;
      yield next.value;
    }
  }

  /** Reads and drops the rest, so that an early answer reaches a client that is still sending. */
  drain(): void {
    void (async () => {
      for await (const chunk of this.chunks()) void chunk;
    })().catch(() => undefined);
  }
}

/**
 * Where an upload's bytes go: `file`, the bytes for the bulk port (a raw body,
 * or a multipart body's first part, the rest of the form read and checked
 * behind it); or `relay`, what to send over HTTP/2 in place of the request
 * (what was read of it to decide, then the rest).
 */
export async function splitUpload(
  req: IncomingMessage,
  kind: BulkUploadKind,
): Promise<{ file: AsyncIterable<Buffer>; body: RequestBody } | { relay: Readable }> {
  const body = new RequestBody(req);
  if (kind === 'raw') return { file: body.chunks(), body };
  const seen: Buffer[] = [];
  let seenBytes = 0;
  let peeking = true;
  const recorded = async function* () {
    for await (const chunk of body.chunks()) {
      if (peeking) {
        seen.push(chunk);
        seenBytes += chunk.length;
        if (seenBytes > PEEK_MAX_BYTES) throw new Error('no part header near the start');
      }
      yield chunk;
    }
  };
  const reader = new MultipartReader(recorded(), boundaryFromContentType(req.headers['content-type']));
  const first = await reader.nextPart().catch(() => undefined);
  if (first?.name === 'file') {
    peeking = false;
    seen.length = 0;
    return { file: fileThenRest(reader, first), body };
  }
  return {
    relay: Readable.from(
      (async function* () {
        yield* seen;
        yield* body.chunks();
      })(),
    ),
  };
}

/** A form's file part, then the rest of the form: other fields are skipped, as the agent does; a second file is refused. */
async function* fileThenRest(reader: MultipartReader, file: MultipartPart): AsyncGenerator<Buffer, void, undefined> {
  try {
    yield* file.body();
    for (let part = await reader.nextPart(); part; part = await reader.nextPart()) {
      if (part.name === 'file')
        throw new CapsuleError('invalid_argument', 'error reading form: an upload to one path (?path=) carries one file part');
    }
  } catch (error) {
    if (error instanceof MultipartError) throw new CapsuleError('invalid_argument', `error reading form: ${error.message}`);
    throw error;
  }
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
 * with the transfer's headers), the file's bytes to the bulk port. The answer
 * is the agent's, once its helper wrote the file; or, when the client's form
 * turned out malformed, a CapsuleError (the agent's request is cancelled and
 * its file dropped).
 */
export async function relayBulkUpload(
  res: ServerResponse,
  stream: ClientHttp2Stream,
  transfer: BulkTransfer,
  upload: { file: AsyncIterable<Buffer>; body: RequestBody },
): Promise<BulkOutcome> {
  const cancel = cancelWithClient(res, stream);
  stream.end();
  let failure: unknown;
  let answered = false;
  const sent = transfer.upload(upload.file).then(
    (bytes) => bytes,
    (error: unknown) => {
      failure = error;
      if (!answered) cancel(); // the agent's helper goes with its request
      return undefined;
    },
  );
  let answer;
  try {
    answer = await agentResponse(stream);
  } catch (error) {
    upload.body.drain();
    throw failure instanceof CapsuleError ? failure : error;
  }
  answered = true;
  // The agent answers a success once its helper had the end frame: every byte is handed over by now, bar the last callback.
  const bytes = answer.status === 200 ? await sent : undefined;
  // The agent is done with the port either way; let go of it before the client has the answer.
  transfer.release();
  // A refusal, before the agent took the body: the rest of it is read and dropped, so the answer reaches the client.
  if (bytes === undefined) upload.body.drain();
  await sendAgentResponse(res, stream, answer.status, answer.headers);
  return { direction: 'upload', bytes: bytes ?? 0 };
}

/**
 * A download: the agent either takes the bulk port (its answer names the
 * transfer and the size, with no body) or answers as usual over HTTP/2.
 */
export async function relayBulkDownload(
  req: IncomingMessage,
  res: ServerResponse,
  stream: ClientHttp2Stream,
  transfer: BulkTransfer,
): Promise<BulkOutcome> {
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
  res.writeHead(200, { ...guestAnswerHeaders(headers), 'content-length': String(size) });
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
