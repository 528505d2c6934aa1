// REST routes of volumes (volumes/volumes.ts): create, list, inspect, remove
// and grow named disks, and their snapshots. Attaching one is part of a
// sandbox's create request.
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
