// REST routes of templates: list, create from an image, build from a
// Capsulefile (answering application/x-ndjson BuildEvents, ndjson-stream.ts),
// inspect and remove. The template logic is templates/templates.ts's; here only
// requests and answers.
import fs from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { BuildEvent, BuildTemplateRequest, CreateTemplateRequest, Template, TemplateDetails, TemplateList } from '@capsule/protocol';
import { CapsuleError } from '../errors.js';
import type { Templates } from '../templates/templates.js';
import { BUILD_CONTEXT_CONTENT_TYPE, readContextCapsulefile, unpackBuildContext } from './build-context-upload.js';
import { hostPathRefusal, realHostPath } from './host-paths.js';
import { streamEvents } from './ndjson-stream.js';
import { type ApiRoute, imageErrorResponses, route } from './routes.js';

const NameParams = {
  type: 'object',
  properties: { name: { type: 'string', minLength: 1, maxLength: 128 } },
  required: ['name'],
} as const;

/** `viaTcp` tells a TCP client's request from a local one's. */
export function templateRoutes(templates: Templates, viaTcp: (req: IncomingMessage) => boolean): ApiRoute[] {
  return [
    route({
      method: 'GET',
      url: '/v1/templates',
      schema: { response: { 200: TemplateList } },
      handler: async () => ({ templates: await templates.list() }),
    }),
    route<{ Body: CreateTemplateRequest }>({
      method: 'POST',
      url: '/v1/templates',
      schema: {
        body: CreateTemplateRequest,
        description:
          "Builds a template from an image in the store: its root filesystem now, its warm snapshot in the background (see the template's warmSnapshot).",
        response: { 201: Template, ...imageErrorResponses },
      },
      handler: async (request, reply) => reply.code(201).send(await templates.create(request.body)),
    }),
    route<{ Body: BuildTemplateRequest | AsyncIterable<Buffer>; Querystring: { name?: string; capsulefile?: string } }>({
      method: 'POST',
      url: '/v1/templates/build',
      schema: {
        body: {
          content: {
            'application/json': { schema: BuildTemplateRequest },
            [BUILD_CONTEXT_CONTENT_TYPE]: {
              schema: { description: 'the build folder as a tar stream (plain files and folders), its Capsulefile inside' },
            },
          },
        },
        querystring: {
          type: 'object',
          properties: {
            name: { ...BuildTemplateRequest.properties.name, description: 'with a tar body: the template to build' },
            capsulefile: {
              type: 'string',
              minLength: 1,
              maxLength: 4096,
              description: 'with a tar body: the Capsulefile’s path inside it (default Capsulefile)',
            },
          },
        },
        description:
          'Builds a template from a Capsulefile: its steps run in a sandbox booted from its FROM. Answers application/x-ndjson BuildEvents. ' +
          'COPY sources come from `contextDir`, a folder on the daemon’s host (unix socket only), or from the body sent as application/x-tar with ?name=.',
        response: {
          200: { description: 'BuildEvent lines', content: { 'application/x-ndjson': { schema: BuildEvent } } },
          ...imageErrorResponses,
        },
      },
      handler: async (request, reply) => {
        templates.assertBuildRoom();
        let build: BuildTemplateRequest;
        let uploaded: string | undefined;
        if (isAsyncIterable(request.body)) {
          const name = request.query.name;
          if (name === undefined)
            throw new CapsuleError('invalid_argument', 'a build context upload needs the template name', {
              hint: 'add ?name=TEMPLATE to the URL',
            });
          uploaded = templates.newBuildContextDir();
          try {
            await unpackBuildContext(request.body, uploaded);
            build = {
              name,
              capsulefile: readContextCapsulefile(uploaded, request.query.capsulefile ?? 'Capsulefile'),
              contextDir: uploaded,
            };
          } catch (err) {
            fs.rmSync(uploaded, { recursive: true, force: true });
            throw err;
          }
        } else {
          build = request.body;
          if (build.contextDir !== undefined) {
            if (viaTcp(request.raw))
              throw hostPathRefusal(
                'contextDir',
                `upload the build folder instead: POST /v1/templates/build?name=NAME with Content-Type: ${BUILD_CONTEXT_CONTENT_TYPE} and the folder as a tar`,
              );
            build = { ...build, contextDir: realHostPath(build.contextDir) };
          }
        }
        reply.hijack();
        try {
          await streamEvents<BuildEvent>(reply.raw, async (emit, signal) => ({
            type: 'done',
            template: await templates.build(build, emit, signal),
          }));
        } finally {
          if (uploaded) fs.rmSync(uploaded, { recursive: true, force: true });
        }
      },
    }),
    route<{ Params: { name: string } }>({
      method: 'GET',
      url: '/v1/templates/:name',
      schema: {
        params: NameParams,
        description: 'One template: its source, image digest, start and ready commands, warm snapshot state (and why it failed) and sizes.',
        response: { 200: TemplateDetails, ...imageErrorResponses },
      },
      handler: async (request) => await templates.inspect(request.params.name),
    }),
    route<{ Params: { name: string } }>({
      method: 'DELETE',
      url: '/v1/templates/:name',
      schema: {
        params: NameParams,
        description: 'Removes a template built from an image; its running sandboxes keep running.',
        response: imageErrorResponses,
      },
      handler: async (request, reply) => {
        await templates.remove(request.params.name);
        return reply.code(204).send();
      },
    }),
  ];
}

function isAsyncIterable(value: unknown): value is AsyncIterable<Buffer> {
  return typeof value === 'object' && value !== null && Symbol.asyncIterator in value;
}
