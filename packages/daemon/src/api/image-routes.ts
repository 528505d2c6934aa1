// REST routes of the image store. Pulls and imports answer
// application/x-ndjson progress events ending with `done` or `error`
// (ndjson-stream.ts), so a client can draw a progress bar; the rest is plain JSON.
import type { IncomingMessage } from 'node:http';
import { Image, ImageEvent, ImageList, ImportImageRequest, PruneResult, PullImageRequest } from '@capsule/protocol';
import type { ImageService } from '../images/image-service.js';
import { parseReference } from '../images/reference.js';
import type { Templates } from '../templates/templates.js';
import { hostPathRefusal, realHostPath } from './host-paths.js';
import { streamEvents } from './ndjson-stream.js';
import { type ApiRoute, imageErrorResponses, route } from './routes.js';

const RefParams = {
  type: 'object',
  properties: { ref: { type: 'string', minLength: 1, maxLength: 600 } },
  required: ['ref'],
} as const;
const ndjsonResponse = {
  200: { description: 'ImageEvent lines', content: { 'application/x-ndjson': { schema: ImageEvent } } },
  ...imageErrorResponses,
};

/** `viaTcp` tells a TCP client's request from a local one's; `templates` prunes build steps with the images. */
export function imageRoutes(images: ImageService, templates: Templates, viaTcp: (req: IncomingMessage) => boolean): ApiRoute[] {
  return [
    route({
      method: 'GET',
      url: '/v1/images',
      schema: { response: { 200: ImageList } },
      handler: async () => ({ images: await images.list() }),
    }),
    route<{ Params: { ref: string } }>({
      method: 'GET',
      url: '/v1/images/:ref',
      schema: {
        params: RefParams,
        description: 'One image by reference (URL-encoded) or digest.',
        response: { 200: Image, ...imageErrorResponses },
      },
      handler: async (request) => await images.describe(request.params.ref),
    }),
    route<{ Params: { ref: string } }>({
      method: 'DELETE',
      url: '/v1/images/:ref',
      schema: {
        params: RefParams,
        description:
          'Removes a reference, or by digest the image; blobs no image uses any more are deleted. Refused while a template uses the image.',
        response: imageErrorResponses,
      },
      handler: async (request, reply) => {
        await images.remove(request.params.ref);
        return reply.code(204).send();
      },
    }),
    route({
      method: 'POST',
      url: '/v1/images/prune',
      schema: {
        description:
          'Garbage collection: images no reference names and no template uses, blobs and root filesystems nothing stored uses, and every cached build step.',
        response: { 200: PruneResult, ...imageErrorResponses },
      },
      handler: async () => await templates.prune(),
    }),
    route<{ Body: PullImageRequest }>({
      method: 'POST',
      url: '/v1/images/pull',
      schema: { body: PullImageRequest, description: 'Pulls an image from its registry into the store.', response: ndjsonResponse },
      handler: async (request, reply) => {
        const { ref, username, password } = request.body;
        parseReference(ref); // a bad reference is a 400, before the stream starts
        images.assertDiskRoom('pull an image');
        reply.hijack();
        const credentials = username !== undefined ? { username, password: password ?? '' } : undefined;
        await streamEvents<ImageEvent>(reply.raw, async (emit, signal) => ({
          type: 'done',
          image: await images.pull(ref, credentials, { onEvent: emit, signal }),
        }));
      },
    }),
    route<{ Body: ImportImageRequest }>({
      method: 'POST',
      url: '/v1/images/import',
      schema: {
        body: ImportImageRequest,
        description: 'Imports a `docker save` tarball, an OCI archive or an OCI layout folder on the daemon’s host.',
        response: ndjsonResponse,
      },
      handler: async (request, reply) => {
        if (viaTcp(request.raw))
          throw hostPathRefusal(
            'an import',
            'push the image to a registry and pull it, or import it on the host through the unix socket (`capsule image import`)',
          );
        if (request.body.tag !== undefined) parseReference(request.body.tag);
        images.assertDiskRoom('import an image');
        const file = realHostPath(request.body.path);
        reply.hijack();
        await streamEvents<ImageEvent>(reply.raw, async (emit, signal) => ({
          type: 'done',
          image: await images.import(file, request.body.tag, { onEvent: emit, signal }),
        }));
      },
    }),
  ];
}
