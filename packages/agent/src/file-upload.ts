// POST /files: multipart "file" parts or one octet-stream body, written with
// envd's rules (path from the query or the filename, parents created, owned
// by the user, 507 when full). Each file streams into a temp file renamed over
// the target: never held in memory, never half-written under its name.

import { lstat, open, realpath, rename, stat, unlink } from 'node:fs/promises';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { basename, dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { bulkUploadContentType } from '@capsule/protocol/agent';
import type { AgentDefaults } from './agent-defaults.js';
import { bulkIdOf, type BulkPort } from './bulk-port.js';
import { ensureDirectories, NotADirectoryError } from './ensure-dirs.js';
import { resolveFilesPath, type FilesRequest } from './files-request.js';
import { createLogger, describeError } from './log.js';
import { boundaryFromContentType, MultipartError, MultipartReader, parseHeaderParameters } from '@capsule/protocol/multipart';
import { HttpError } from './plain-http.js';
import { recentUploads, uploadTempName } from './upload-marks.js';
import type { UnixUser } from './users.js';

const log = createLogger('files');

interface UploadedEntry {
  path: string;
  name: string;
  type: 'file';
}

const errorCode = (error: unknown) => (error as NodeJS.ErrnoException | undefined)?.code;

function isDiskFull(error: unknown): boolean {
  return errorCode(error) === 'ENOSPC' || errorCode(error) === 'EDQUOT';
}

/** What went wrong while a body was being read or written, as an HTTP error. */
function uploadError(error: unknown, what: string): HttpError {
  if (error instanceof HttpError) return error;
  if (error instanceof MultipartError) return new HttpError(400, `error reading form: ${error.message}`);
  if (isDiskFull(error)) return new HttpError(507, 'not enough disk space available');
  if (typeof errorCode(error) === 'string' && errorCode(error)!.startsWith('Z_')) {
    return new HttpError(400, `error decompressing request body: ${describeError(error)}`);
  }
  return new HttpError(500, `${what}: ${describeError(error)}`);
}

/**
 * Streams `body` into `target` (through a symlink to its target, as envd's
 * open(O_TRUNC) would), owned by `user`; an existing file keeps its mode.
 * A function body fills the open file itself (the bulk port's helper).
 */
export async function writeUploadedFile(
  target: string,
  body: AsyncIterable<Buffer> | ((fd: number) => Promise<void>),
  user: UnixUser,
): Promise<void> {
  try {
    await ensureDirectories(dirname(target), user);
  } catch (error) {
    if (error instanceof NotADirectoryError) throw new HttpError(500, `error ensuring directories: ${error.message}`);
    throw uploadError(error, 'error ensuring directories');
  }
  const existing = await stat(target).catch((error: unknown) => {
    if (errorCode(error) === 'ENOENT') return undefined;
    throw new HttpError(500, `error getting file info: ${describeError(error)}`);
  });
  if (existing?.isDirectory()) throw new HttpError(400, `path is a directory: ${target}`);
  const isLink = await lstat(target).then(
    (info) => info.isSymbolicLink(),
    () => false,
  );
  const finalPath = isLink ? await realpath(target).catch(() => target) : target;
  const mode = existing?.isFile() ? existing.mode & 0o7777 : 0o644;

  const temp = join(dirname(finalPath), uploadTempName());
  let handle;
  try {
    handle = await open(temp, 'wx', 0o600);
  } catch (error) {
    if (isDiskFull(error)) throw new HttpError(507, `not enough inodes available: ${describeError(error)}`);
    throw new HttpError(500, `error opening file: ${describeError(error)}`);
  }
  let renamed = false;
  try {
    await handle.chown(user.uid, user.gid);
    await handle.chmod(mode);
    if (typeof body === 'function') {
      await body(handle.fd);
    } else {
      // The stream closes the handle when it ends (a handle with a stream still
      // attached would make close() wait forever).
      const output = handle.createWriteStream();
      handle = undefined;
      await pipeline(body, output);
    }
    recentUploads.mark(finalPath);
    await rename(temp, finalPath);
    renamed = true;
  } catch (error) {
    throw uploadError(error, 'error writing file');
  } finally {
    await handle?.close().catch(() => {});
    if (!renamed) await unlink(temp).catch(() => {});
  }
}

function duplicatePathError(path: string, uploaded: UploadedEntry[]): HttpError {
  const others = uploaded.map((entry) => entry.path).filter((other) => other !== path);
  let message = `you cannot upload multiple files to the same path '${path}' in one upload request, only the first specified file was uploaded`;
  if (others.length > 1) message += `, also the following files were uploaded: ${others.join(', ')}`;
  return new HttpError(400, message);
}

export async function serveFileUpload(
  request: Http2ServerRequest,
  response: Http2ServerResponse,
  files: FilesRequest,
  defaults: AgentDefaults,
  bulkPort?: BulkPort,
): Promise<void> {
  const bulkId = bulkIdOf(request.headers);
  if (bulkId !== undefined) return await serveBulkUpload(request, response, files, defaults, bulkId, bulkPort);
  const contentEncoding = parseHeaderParameters(request.headers['content-encoding'] ?? '').type;
  if (contentEncoding !== '' && contentEncoding !== 'identity' && contentEncoding !== 'gzip') {
    throw new HttpError(400, `error decompressing request body: unsupported Content-Encoding: ${contentEncoding}, supported: [gzip]`);
  }
  const contentType = request.headers['content-type'];
  const mediaType = parseHeaderParameters(contentType ?? '').type;
  const raw = mediaType === 'application/octet-stream';
  if (!raw && !mediaType.startsWith('multipart/')) {
    throw new HttpError(400, `unsupported content type: ${contentType ?? ''}, expected multipart/form-data or application/octet-stream`);
  }
  if (raw && files.rawPath === undefined) throw new HttpError(400, 'path query parameter is required for raw body upload');
  const boundary = raw ? undefined : safely(() => boundaryFromContentType(contentType));

  // Iterators that do not destroy the request when a write fails: it must
  // live on to carry the error response.
  const gunzip = contentEncoding === 'gzip' ? createGunzip() : undefined;
  if (gunzip) request.pipe(gunzip);
  const body = (gunzip ?? request).iterator({ destroyOnReturn: false }) as AsyncIterableIterator<Buffer>;
  const source: AsyncIterable<Buffer> = { [Symbol.asyncIterator]: () => body };

  const uploaded: UploadedEntry[] = [];
  try {
    if (raw) {
      const path = resolveFilesPath(files.rawPath ?? '', files.user, defaults);
      await writeUploadedFile(path, source, files.user);
      uploaded.push({ path, name: basename(path), type: 'file' });
    } else {
      const reader = new MultipartReader(source, boundary ?? '');
      for (let part = await nextPart(reader); part; part = await nextPart(reader)) {
        if (part.name !== 'file') continue; // other form fields are skipped, as envd does
        const requested = files.rawPath ?? part.filename;
        if (requested === undefined) {
          throw new HttpError(400, 'error getting multipart custom part file name: filename not found in Content-Disposition header');
        }
        const path = resolveFilesPath(requested, files.user, defaults);
        if (uploaded.some((entry) => entry.path === path)) throw duplicatePathError(path, uploaded);
        await writeUploadedFile(path, part.body(), files.user);
        uploaded.push({ path, name: basename(path), type: 'file' });
      }
    }
  } catch (error) {
    // Detach from the body (without destroying it) so the rest can be drained.
    await body.return?.();
    if (gunzip) {
      request.unpipe(gunzip);
      gunzip.destroy();
    }
    throw uploadError(error, 'error reading form');
  }
  log.debug(`uploaded ${uploaded.map((entry) => entry.path).join(', ')} as ${files.user.name}`);
  const json = JSON.stringify(uploaded);
  response.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json) });
  response.end(json);
}

/**
 * An upload whose body the daemon sends on the bulk port (the file's bytes,
 * taken out of a multipart body by the daemon if it was one): the same path,
 * ownership and error rules, the bytes copied by the helper.
 */
async function serveBulkUpload(
  request: Http2ServerRequest,
  response: Http2ServerResponse,
  files: FilesRequest,
  defaults: AgentDefaults,
  bulkId: string,
  bulkPort: BulkPort | undefined,
): Promise<void> {
  if (parseHeaderParameters(request.headers['content-type'] ?? '').type !== bulkUploadContentType) {
    throw new HttpError(400, `a bulk upload must be sent as ${bulkUploadContentType}`);
  }
  if (!bulkPort) throw new HttpError(500, 'this agent has no bulk port');
  if (files.rawPath === undefined) throw new HttpError(400, 'path query parameter is required for raw body upload');
  const path = resolveFilesPath(files.rawPath, files.user, defaults);
  // The daemon cancels the stream when its client goes away: the helper goes with it.
  const gone = new AbortController();
  response.stream.once('close', () => gone.abort());
  request.resume();
  try {
    await writeUploadedFile(path, (fd) => bulkPort.receive(bulkId, fd, gone.signal), files.user);
  } catch (error) {
    throw uploadError(error, 'error writing file');
  }
  log.debug(`uploaded ${path} through the bulk port as ${files.user.name}`);
  const json = JSON.stringify([{ path, name: basename(path), type: 'file' }]);
  response.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json) });
  response.end(json);
}

async function nextPart(reader: MultipartReader) {
  try {
    return await reader.nextPart();
  } catch (error) {
    throw uploadError(error, 'error reading form');
  }
}

function safely<T>(fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    throw uploadError(error, 'error parsing multipart form');
  }
}
