// REST routes of the image store and of templates built from images. Pulls
// and imports answer application/x-ndjson progress events ending with `done`
// or `error`, so a client can draw a progress bar; the rest is plain JSON.
import fs from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  BuildEvent,
  BuildTemplateRequest,
  CreateTemplateRequest,
  ErrorResponse,
  Image,
  ImageEvent,
  ImageList,
  ImportImageRequest,
  PruneResult,
  PullImageRequest,
  Template,
  TemplateDetails,
} from '@capsule/protocol';
import type { FastifyInstance } from 'fastify';
import { CapsuleError, errorMessage } from '../errors.js';
import type { ImageService } from '../images/image-service.js';
import { parseReference } from '../images/reference.js';
import { BUILD_CONTEXT_CONTENT_TYPE, readContextCapsulefile, unpackBuildContext } from './build-context-upload.js';

/**
 * A folder or file on the daemon's host, named by a local client (the unix
 * socket): resolved through its links, so that what is read is what the
 * operator sees. TCP clients never name host paths (hostPathRefusal).
 */
function realHostPath(named: string): string {
  try {
    return fs.realpathSync(named);
  } catch {
    throw new CapsuleError('invalid_argument', `${named.slice(0, 500)}: no such file or folder on the daemon's host`);
  }
}

function hostPathRefusal(what: string, hint: string): CapsuleError {
  return new CapsuleError('permission_denied', `${what} names a path on the daemon's host, which only local clients (the unix socket) may do`, { hint });
}

const errorResponses = { 400: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse, 422: ErrorResponse, 500: ErrorResponse, 502: ErrorResponse };
const RefParams = {
  type: 'object',
  properties: { ref: { type: 'string', minLength: 1, maxLength: 600 } },
  required: ['ref'],
} as const;
const NameParams = {
  type: 'object',
  properties: { name: { type: 'string', minLength: 1, maxLength: 128 } },
  required: ['name'],
} as const;
const ndjsonResponse = { 200: { description: 'ImageEvent lines', content: { 'application/x-ndjson': { schema: ImageEvent } } }, ...errorResponses };

type StreamEvent = ImageEvent | BuildEvent;

/**
 * Runs an operation that reports events and streams them as NDJSON lines;
 * the last one is the operation's `done` event or an `error`.
 */
async function streamEvents<E extends StreamEvent>(res: ServerResponse, run: (emit: (event: E) => Promise<void> | undefined, signal: AbortSignal) => Promise<E>): Promise<void> {
  const controller = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) controller.abort(new Error('the client disconnected'));
  });
  res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
  let lastProgress = 0;
  const emit = (event: StreamEvent): Promise<void> | undefined => {
    if (res.destroyed) return undefined;
    // Progress is thinned to a few lines a second; a slow client must not hold the pull back.
    if (event.type === 'progress' && event.doneBytes !== event.totalBytes && Date.now() - lastProgress < 100) return undefined;
    if (event.type === 'progress') lastProgress = Date.now();
    if (res.write(`${JSON.stringify(event)}\n`)) return undefined;
    // The client is behind: a producer that can wait (a build's output) waits for it to catch up or go.
    return new Promise((resolve) => {
      const settle = () => {
        res.off('drain', settle).off('close', settle);
        resolve();
      };
      res.once('drain', settle).once('close', settle);
    });
  };
  try {
    emit(await run(emit, controller.signal));
  } catch (err) {
    const e = err instanceof CapsuleError ? err : new CapsuleError('internal', errorMessage(err));
    emit({ type: 'error', code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) });
  }
  res.end();
}

/** `viaTcp` tells a TCP client's request from a local one's. */
export function registerImageRoutes(app: FastifyInstance, images: ImageService, viaTcp: (req: IncomingMessage) => boolean): void {
  // A build context upload's body is read as a stream by its route, bounded there; never buffered whole.
  app.addContentTypeParser(BUILD_CONTEXT_CONTENT_TYPE, (_request, payload, done) => done(null, payload));

  app.get('/v1/images', { schema: { response: { 200: ImageList } } }, async () => ({ images: await images.list() }));

  app.get<{ Params: { ref: string } }>(
    '/v1/images/:ref',
    { schema: { params: RefParams, description: 'One image by reference (URL-encoded) or digest.', response: { 200: Image, ...errorResponses } } },
    async (request) => await images.describe(request.params.ref),
  );

  app.delete<{ Params: { ref: string } }>(
    '/v1/images/:ref',
    {
      schema: {
        params: RefParams,
        description: 'Removes a reference, or by digest the image; blobs no image uses any more are deleted. Refused while a template uses the image.',
        response: errorResponses,
      },
    },
    async (request, reply) => {
      await images.remove(request.params.ref);
      return reply.code(204).send();
    },
  );

  app.post(
    '/v1/images/prune',
    {
      schema: {
        description: 'Garbage collection: images no reference names and no template uses, blobs and root filesystems nothing stored uses, and every cached build step.',
        response: { 200: PruneResult, ...errorResponses },
      },
    },
    async () => await images.prune(),
  );

  app.post<{ Body: PullImageRequest }>(
    '/v1/images/pull',
    { schema: { body: PullImageRequest, description: 'Pulls an image from its registry into the store.', response: ndjsonResponse } },
    async (request, reply) => {
      const { ref, username, password } = request.body;
      parseReference(ref); // a bad reference is a 400, before the stream starts
      images.assertDiskRoom('pull an image');
      reply.hijack();
      const credentials = username !== undefined ? { username, password: password ?? '' } : undefined;
      await streamEvents<ImageEvent>(reply.raw, async (emit, signal) => ({ type: 'done', image: await images.pull(ref, credentials, { onEvent: emit, signal }) }));
    },
  );

  app.post<{ Body: ImportImageRequest }>(
    '/v1/images/import',
    { schema: { body: ImportImageRequest, description: 'Imports a `docker save` tarball, an OCI archive or an OCI layout folder on the daemon’s host.', response: ndjsonResponse } },
    async (request, reply) => {
      if (viaTcp(request.raw)) throw hostPathRefusal('an import', 'push the image to a registry and pull it, or import it on the host through the unix socket (`capsule image import`)');
      if (request.body.tag !== undefined) parseReference(request.body.tag);
      images.assertDiskRoom('import an image');
      const file = realHostPath(request.body.path);
      reply.hijack();
      await streamEvents<ImageEvent>(reply.raw, async (emit, signal) => ({ type: 'done', image: await images.import(file, request.body.tag, { onEvent: emit, signal }) }));
    },
  );

  app.post<{ Body: CreateTemplateRequest }>(
    '/v1/templates',
    {
      schema: {
        body: CreateTemplateRequest,
        description: "Builds a template from an image in the store: its root filesystem now, its warm snapshot in the background (see the template's warmSnapshot).",
        response: { 201: Template, ...errorResponses },
      },
    },
    async (request, reply) => reply.code(201).send(await images.createTemplate(request.body)),
  );

  app.post<{ Body: BuildTemplateRequest | AsyncIterable<Buffer>; Querystring: { name?: string; capsulefile?: string } }>(
    '/v1/templates/build',
    {
      schema: {
        body: {
          content: {
            'application/json': { schema: BuildTemplateRequest },
            [BUILD_CONTEXT_CONTENT_TYPE]: { schema: { description: 'the build folder as a tar stream (plain files and folders), its Capsulefile inside' } },
          },
        },
        querystring: {
          type: 'object',
          properties: {
            name: { ...BuildTemplateRequest.properties.name, description: 'with a tar body: the template to build' },
            capsulefile: { type: 'string', minLength: 1, maxLength: 4096, description: 'with a tar body: the Capsulefile’s path inside it (default Capsulefile)' },
          },
        },
        description:
          'Builds a template from a Capsulefile: its steps run in a sandbox booted from its FROM. Answers application/x-ndjson BuildEvents. ' +
          'COPY sources come from `contextDir`, a folder on the daemon’s host (unix socket only), or from the body sent as application/x-tar with ?name=.',
        response: { 200: { description: 'BuildEvent lines', content: { 'application/x-ndjson': { schema: BuildEvent } } }, ...errorResponses },
      },
    },
    async (request, reply) => {
      images.assertDiskRoom('build a template');
      let build: BuildTemplateRequest;
      let uploaded: string | undefined;
      if (isAsyncIterable(request.body)) {
        const name = request.query.name;
        if (name === undefined) throw new CapsuleError('invalid_argument', 'a build context upload needs the template name', { hint: 'add ?name=TEMPLATE to the URL' });
        uploaded = images.newBuildContextDir();
        try {
          await unpackBuildContext(request.body, uploaded);
          build = { name, capsulefile: readContextCapsulefile(uploaded, request.query.capsulefile ?? 'Capsulefile'), contextDir: uploaded };
        } catch (err) {
          fs.rmSync(uploaded, { recursive: true, force: true });
          throw err;
        }
      } else {
        build = request.body;
        if (build.contextDir !== undefined) {
          if (viaTcp(request.raw)) throw hostPathRefusal('contextDir', `upload the build folder instead: POST /v1/templates/build?name=NAME with Content-Type: ${BUILD_CONTEXT_CONTENT_TYPE} and the folder as a tar`);
          build = { ...build, contextDir: realHostPath(build.contextDir) };
        }
      }
      reply.hijack();
      try {
        await streamEvents<BuildEvent>(reply.raw, async (emit, signal) => ({ type: 'done', template: await images.buildTemplate(build, emit, signal) }));
      } finally {
        if (uploaded) fs.rmSync(uploaded, { recursive: true, force: true });
      }
    },
  );

  app.get<{ Params: { name: string } }>(
    '/v1/templates/:name',
    {
      schema: {
        params: NameParams,
        description: 'One template: its source, image digest, start and ready commands, warm snapshot state (and why it failed) and sizes.',
        response: { 200: TemplateDetails, ...errorResponses },
      },
    },
    async (request) => await images.inspectTemplate(request.params.name),
  );

  app.delete<{ Params: { name: string } }>(
    '/v1/templates/:name',
    { schema: { params: NameParams, description: 'Removes a template built from an image; its running sandboxes keep running.', response: errorResponses } },
    async (request, reply) => {
      await images.removeTemplate(request.params.name);
      return reply.code(204).send();
    },
  );
}

function isAsyncIterable(value: unknown): value is AsyncIterable<Buffer> {
  return typeof value === 'object' && value !== null && Symbol.asyncIterator in value;
}
