// GET /files: streams one file to the client, as envd does: 404 when it is
// missing, 400 for a directory, gzip when Accept-Encoding prefers it, a
// single byte Range and If-Modified-Since otherwise. Must never hold a whole
// file in memory: bytes flow from disk at the pace the client reads them.

import { stat, open } from 'node:fs/promises';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { extname } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { constants as zlibConstants, createGzip } from 'node:zlib';
import { bulkHeaders, bulkMinBytes } from '@capsule/protocol/agent';
import type { AgentDefaults } from './agent-defaults.js';
import { bulkIdOf, type BulkPort } from './bulk-port.js';
import { resolveFilesPath, type FilesRequest } from './files-request.js';
import { createLogger, describeError } from './log.js';
import { HttpError } from './plain-http.js';

const log = createLogger('files');

/**
 * Bytes read from disk at a time: each chunk costs the guest a read, a trip
 * through the HTTP/2 session and a port write, far more under TCG than its
 * bytes; 64 KiB (the default) made that per-chunk cost the limit.
 */
const READ_CHUNK_BYTES = 1024 * 1024;

// The extensions users actually download; anything else is octet-stream
// (envd asks Go's mime table and sniffs the content; nothing reads this closely).
const CONTENT_TYPES: Record<string, string> = {
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/markdown; charset=utf-8',
  '.csv': 'text/csv; charset=utf-8',
  '.html': 'text/html; charset=utf-8',
  '.htm': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.json': 'application/json',
  '.xml': 'text/xml; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
  '.pdf': 'application/pdf',
  '.wasm': 'application/wasm',
  '.zip': 'application/zip',
  '.gz': 'application/gzip',
  '.tar': 'application/x-tar',
};

export function contentTypeFor(path: string): string {
  return CONTENT_TYPES[extname(path).toLowerCase()] ?? 'application/octet-stream';
}

/** The codings an Accept-Encoding header offers, best first. */
function encodingOffers(acceptEncoding: string): Array<{ coding: string; quality: number }> {
  return acceptEncoding
    .split(',')
    .map((part) => {
      const [coding = '', ...params] = part.split(';').map((piece) => piece.trim());
      const qParam = params.find((param) => param.toLowerCase().startsWith('q='));
      const quality = qParam === undefined ? 1 : Number(qParam.slice(2));
      return { coding: coding.toLowerCase(), quality: Number.isFinite(quality) ? quality : 1 };
    })
    .filter((offer) => offer.coding !== '')
    .sort((a, b) => b.quality - a.quality);
}

/** Whether the client takes an unencoded body: unless it refuses identity (q=0), or `*;q=0` without naming identity. */
export function acceptsIdentity(acceptEncoding: string | undefined): boolean {
  const offers = encodingOffers(acceptEncoding ?? '');
  const identity = offers.find((offer) => offer.coding === 'identity') ?? offers.find((offer) => offer.coding === '*');
  return identity === undefined || identity.quality > 0;
}

/**
 * envd's choice of content coding: the highest-quality supported one
 * (gzip), identity when preferred or nothing matches; 400 only when identity
 * is refused (q=0) and gzip is not acceptable either.
 */
export function chooseEncoding(acceptEncoding: string | undefined): 'gzip' | 'identity' {
  if (!acceptEncoding) return 'identity';
  const offers = encodingOffers(acceptEncoding);
  const identityRefused = offers.some((offer) => offer.coding === 'identity' && offer.quality === 0);
  for (const offer of offers) {
    if (offer.quality === 0) continue;
    if (offer.coding === 'identity') return 'identity';
    if (offer.coding === '*') return identityRefused ? 'gzip' : 'identity';
    if (offer.coding === 'gzip') return 'gzip';
  }
  if (!identityRefused) return 'identity';
  throw new HttpError(400, 'error parsing Accept-Encoding: no acceptable encoding found, supported: [gzip]');
}

/** One `bytes=a-b` range within `size`; undefined to serve it all; 'unsatisfiable' for 416. */
export function parseByteRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | undefined {
  const match = header === undefined ? null : /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match || (match[1] === '' && match[2] === '')) return undefined; // multiple ranges or junk: the whole file
  if (match[1] === '') {
    const suffix = Number(match[2]);
    if (suffix === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(match[1]);
  const end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1);
  if (start >= size || end < start) return 'unsatisfiable';
  return { start, end };
}

export async function serveFileDownload(
  request: Http2ServerRequest,
  response: Http2ServerResponse,
  files: FilesRequest,
  defaults: AgentDefaults,
  bulkPort?: BulkPort,
): Promise<void> {
  const bulkId = bulkIdOf(request.headers);
  const path = resolveFilesPath(files.rawPath ?? '', files.user, defaults);
  let info;
  try {
    info = await stat(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new HttpError(404, `path '${path}' does not exist`);
    throw new HttpError(500, `error checking if path exists '${path}': ${describeError(error)}`);
  }
  if (info.isDirectory()) throw new HttpError(400, `path '${path}' is a directory`);
  // A FIFO or a device would stream forever (or block): not a file to download.
  if (!info.isFile()) throw new HttpError(400, `path '${path}' is not a regular file`);

  const headers = request.headers;
  let encoding = chooseEncoding(headers['accept-encoding']);
  // Like envd (Go's ServeContent): ranges and conditionals are served unencoded.
  if (headers.range || headers['if-modified-since'] || headers['if-none-match'] || headers['if-range']) encoding = 'identity';
  // A large file the daemon offered to take over the bulk port goes there
  // unencoded when the client accepts that (fetch clients ask for gzip by
  // default): compressing in the guest costs far more than the bytes saved
  // between the guest and the host next to it.
  const bulk =
    bulkId !== undefined &&
    request.method === 'GET' &&
    !headers.range &&
    info.size >= bulkMinBytes &&
    acceptsIdentity(headers['accept-encoding']) &&
    bulkPort?.open() === true
      ? { id: bulkId, port: bulkPort }
      : undefined;
  if (bulk) encoding = 'identity';

  const lastModified = new Date(Math.floor(info.mtimeMs / 1000) * 1000);
  const common = {
    'content-type': contentTypeFor(path),
    'last-modified': lastModified.toUTCString(),
    vary: 'Accept-Encoding',
  };
  const ifModifiedSince = Date.parse(headers['if-modified-since'] ?? '');
  if (!headers.range && Number.isFinite(ifModifiedSince) && lastModified.getTime() <= ifModifiedSince) {
    response.writeHead(304, { 'last-modified': common['last-modified'], vary: common.vary });
    response.end();
    return;
  }

  let file;
  try {
    file = await open(path, 'r');
  } catch (error) {
    throw new HttpError(500, `error opening file '${path}': ${describeError(error)}`);
  }
  try {
    if (encoding === 'gzip') {
      response.writeHead(200, { ...common, 'content-encoding': 'gzip' });
      if (request.method === 'HEAD') {
        response.end();
        return;
      }
      // Level 1: under software emulation compression is guest CPU time on
      // the transfer's critical path; the stream stays standard gzip.
      await pipeline(file.createReadStream(), createGzip({ level: zlibConstants.Z_BEST_SPEED }), response);
      return;
    }
    // /proc and /sys files say size 0 and still have content: stream to EOF.
    const size = info.size;
    const range = size > 0 ? parseByteRange(headers.range, size) : undefined;
    if (range === 'unsatisfiable') {
      response.writeHead(416, { ...common, 'content-range': `bytes */${size}` });
      response.end();
      return;
    }
    if (bulk) {
      // The body goes on the bulk port; the stream ends once all of it is written there.
      response.writeHead(200, { ...common, 'accept-ranges': 'bytes', [bulkHeaders.id]: bulk.id, [bulkHeaders.size]: String(size) });
      const gone = new AbortController();
      response.stream.once('close', () => gone.abort());
      await bulk.port.send(bulk.id, size, file.fd, gone.signal);
      response.end();
      return;
    }
    const start = range?.start ?? 0;
    const end = range?.end ?? size - 1;
    response.writeHead(range ? 206 : 200, {
      ...common,
      'accept-ranges': 'bytes',
      ...(size > 0 ? { 'content-length': end - start + 1 } : {}),
      ...(range ? { 'content-range': `bytes ${start}-${end}/${size}` } : {}),
    });
    if (request.method === 'HEAD') {
      response.end();
      return;
    }
    // Bounded by the size we announced, so a file growing meanwhile cannot overrun Content-Length.
    await pipeline(file.createReadStream({ start, ...(size > 0 ? { end } : {}), highWaterMark: READ_CHUNK_BYTES }), response);
  } catch (error) {
    // The client went away, or the disk failed mid-file: headers are out, the stream is cut.
    log.debug(`download of ${path} ended early: ${describeError(error)}`);
    if (!response.stream.destroyed) response.stream.close(0x2 /* INTERNAL_ERROR */);
  } finally {
    // Usually closed already by its read stream; close() of a closed handle is a no-op.
    await file.close().catch(() => {});
  }
}
