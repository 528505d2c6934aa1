// REST routes of volumes (volumes/volumes.ts): create, list, inspect, remove
// and grow named disks, their snapshots, export and import. Attaching one is
// part of a sandbox's create request.
import {
  CreateVolumeRequest,
  CreateVolumeSnapshotRequest,
  ResizeVolumeRequest,
  RestoreVolumeSnapshotRequest,
  Volume,
  VolumeList,
  VolumeSnapshot,
  VolumeSnapshotList,
} from '@capsule/protocol';
import { CapsuleError } from '../errors.js';
import type { Volumes } from '../volumes/volumes.js';
import { type ApiRoute, errorResponses, route } from './routes.js';

const NameParams = {
  type: 'object',
  properties: { name: { type: 'string', minLength: 1, maxLength: 63 } },
  required: ['name'],
} as const;
const SnapshotParams = {
  type: 'object',
  properties: { name: NameParams.properties.name, snapshot: { type: 'string', minLength: 1, maxLength: 63 } },
  required: ['name', 'snapshot'],
} as const;

/** What an export answers and an import takes: a qcow2 image, streamed; the server hands such bodies to the route unread. */
export const VOLUME_IMAGE_CONTENT_TYPE = 'application/octet-stream';

function isAsyncIterable(body: unknown): body is AsyncIterable<Buffer> {
  return typeof body === 'object' && body !== null && Symbol.asyncIterator in body;
}

export function volumeRoutes(volumes: Volumes): ApiRoute[] {
  return [
    route<{ Body: CreateVolumeRequest }>({
      method: 'POST',
      url: '/v1/volumes',
      schema: {
        body: CreateVolumeRequest,
        description: 'Creates an empty ext4 volume (a sparse file on the daemon’s host).',
        response: { 201: Volume, ...errorResponses },
      },
      handler: async (request, reply) => reply.code(201).send(await volumes.create(request.body.name, request.body.size)),
    }),
    route({
      method: 'GET',
      url: '/v1/volumes',
      schema: { response: { 200: VolumeList } },
      handler: async () => ({ volumes: await volumes.list() }),
    }),
    route<{ Params: { name: string } }>({
      method: 'GET',
      url: '/v1/volumes/:name',
      schema: {
        params: NameParams,
        description: 'One volume and the live sandboxes that hold it.',
        response: { 200: Volume, ...errorResponses },
      },
      handler: async (request) => await volumes.describe(request.params.name),
    }),
    route<{ Params: { name: string } }>({
      method: 'DELETE',
      url: '/v1/volumes/:name',
      schema: {
        params: NameParams,
        description: 'Deletes a volume and its data. Refused (`volume_in_use`) while a running, paused or stopped sandbox holds it.',
        response: errorResponses,
      },
      handler: async (request, reply) => {
        await volumes.remove(request.params.name);
        return reply.code(204).send();
      },
    }),
    route<{ Params: { name: string }; Body: ResizeVolumeRequest }>({
      method: 'POST',
      url: '/v1/volumes/:name/resize',
      schema: {
        params: NameParams,
        body: ResizeVolumeRequest,
        description: 'Grows a volume and its filesystem. Offline: refused (`volume_in_use`) while a sandbox holds it.',
        response: { 200: Volume, ...errorResponses },
      },
      handler: async (request) => await volumes.resize(request.params.name, request.body.size),
    }),
    route<{ Params: { name: string }; Body: CreateVolumeSnapshotRequest }>({
      method: 'POST',
      url: '/v1/volumes/:name/snapshots',
      schema: {
        params: NameParams,
        body: CreateVolumeSnapshotRequest,
        description: 'Copies the volume as it is now. Refused (`volume_in_use`) while a sandbox holds it read-write.',
        response: { 201: VolumeSnapshot, ...errorResponses },
      },
      handler: async (request, reply) => reply.code(201).send(await volumes.snapshot(request.params.name, request.body?.name)),
    }),
    route<{ Params: { name: string } }>({
      method: 'GET',
      url: '/v1/volumes/:name/export',
      schema: {
        params: NameParams,
        description:
          'The volume as a compressed qcow2 image (Content-Length known before it is sent), which `POST /v1/volumes/{name}/import` takes back. ' +
          'Refused (`volume_in_use`) while a sandbox holds it read-write.',
        response: {
          200: { description: 'a qcow2 image', content: { [VOLUME_IMAGE_CONTENT_TYPE]: { schema: { type: 'string', format: 'binary' } } } },
          ...errorResponses,
        },
      },
      handler: async (request, reply) => {
        const { bytes, image } = await volumes.export(request.params.name);
        return reply
          .type(VOLUME_IMAGE_CONTENT_TYPE)
          .header('content-length', bytes)
          .header('content-disposition', `attachment; filename="${request.params.name}.qcow2"`)
          .send(image);
      },
    }),
    route<{ Params: { name: string }; Body: unknown }>({
      method: 'POST',
      url: '/v1/volumes/:name/import',
      schema: {
        params: NameParams,
        body: {
          content: {
            [VOLUME_IMAGE_CONTENT_TYPE]: { schema: { description: 'a qcow2 image of an ext4 filesystem, as an export wrote it' } },
          },
        },
        description:
          'Makes the volume `name` from an uploaded qcow2 image. The upload is checked as hostile input: bounded in size, qcow2 only, ' +
          'no backing or data file, a volume’s size, a clean ext4 filesystem; on any failure no volume is made.',
        response: { 201: Volume, ...errorResponses },
      },
      handler: async (request, reply) => {
        if (!isAsyncIterable(request.body))
          throw new CapsuleError('invalid_argument', `send the image as the body, with Content-Type: ${VOLUME_IMAGE_CONTENT_TYPE}`);
        // A refused upload may still be arriving: Node reads the rest and drops it (within the upload body timeout), so
        // the client, still sending, gets the answer; closing the connection instead would often reset it unread.
        return reply.code(201).send(await volumes.import(request.params.name, request.body));
      },
    }),
    route<{ Params: { name: string } }>({
      method: 'GET',
      url: '/v1/volumes/:name/snapshots',
      schema: {
        params: NameParams,
        description: 'A volume’s snapshots, oldest first.',
        response: { 200: VolumeSnapshotList, ...errorResponses },
      },
      handler: async (request) => ({ snapshots: await volumes.snapshots(request.params.name) }),
    }),
    route<{ Params: { name: string; snapshot: string } }>({
      method: 'DELETE',
      url: '/v1/volumes/:name/snapshots/:snapshot',
      schema: { params: SnapshotParams, description: 'Deletes a snapshot.', response: errorResponses },
      handler: async (request, reply) => {
        await volumes.removeSnapshot(request.params.name, request.params.snapshot);
        return reply.code(204).send();
      },
    }),
    route<{ Params: { name: string; snapshot: string }; Body: RestoreVolumeSnapshotRequest }>({
      method: 'POST',
      url: '/v1/volumes/:name/snapshots/:snapshot/restore',
      schema: {
        params: SnapshotParams,
        body: RestoreVolumeSnapshotRequest,
        description: 'Makes a new volume from the snapshot; the snapshot’s own volume is left as it is.',
        response: { 201: Volume, ...errorResponses },
      },
      handler: async (request, reply) =>
        reply.code(201).send(await volumes.restore(request.params.name, request.params.snapshot, request.body.volume)),
    }),
  ];
}
