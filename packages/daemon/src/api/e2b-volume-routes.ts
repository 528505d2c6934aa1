// e2b's volume endpoints (create, list, get and delete a volume) mapped onto
// Capsule's volumes: an e2b volume IS a Capsule volume, its id the volume's
// name, so `volumeMounts` of an e2b create and `-v` of `capsule run` name the
// same disks. Disks, holders and their rules belong to volumes/, never to
// this file. e2b's volume file API (reading a volume no sandbox holds) is not
// served: it answers e2b's error shape saying so.
import { Type, type Static } from '@sinclair/typebox';
import type { Volume } from '@capsule/protocol';
import { collectExec, execEvents } from '../agent/exec.js';
import type { SandboxManager } from '../sandboxes/manager.js';
import { giveFreshFoldersCommand, normaliseMountPath } from '../volumes/volume-rules.js';
import type { Volumes } from '../volumes/volumes.js';
import { E2B_DEFAULT_USER } from './agent-proxy.js';
import { route, type ApiRoute } from './routes.js';

// Names are checked by Volumes, not the schema, so that a bad one is refused with Capsule's code and hint.
const NewVolume = Type.Object({ name: Type.String({ maxLength: 256 }) });
type NewVolume = Static<typeof NewVolume>;
const VolumeParams = Type.Object({ volumeID: Type.String({ minLength: 1, maxLength: 256 }) });
type VolumeParams = Static<typeof VolumeParams>;

/** e2b's Volume: Capsule volumes have one name, which is their id. */
export function toE2bVolume(volume: Pick<Volume, 'name'>) {
  return { volumeID: volume.name, name: volume.name };
}

/**
 * e2b's VolumeAndToken. The token authorises e2b's volume file API, which
 * Capsule does not serve, so it is empty; its `domain` is left out, so the
 * SDK keeps its own.
 */
export function toE2bVolumeAndToken(volume: Pick<Volume, 'name'>) {
  return { ...toE2bVolume(volume), token: '' };
}

const GIVE_TIMEOUT_MS = 30_000;
/** The route of e2b's volume file API: a constant 501, so served without a key (e2b's SDK sends only the volume's token there). */
export const E2B_VOLUME_CONTENT_ROUTE = '/volumecontent/*';

/**
 * e2b's commands and files run as `user` unless told otherwise, where
 * Capsule's run as the template's user (root for the base template): so the
 * fresh volumes of an e2b create are given to `user` (those still root's and
 * empty only, as Capsule gives them to its default user). Resolves whether
 * they were; a template without that user keeps them root's.
 */
export async function giveFreshVolumesToE2bUser(manager: SandboxManager, sandboxId: string, paths: string[]): Promise<boolean> {
  const cmd = giveFreshFoldersCommand(E2B_DEFAULT_USER, paths.map(normaliseMountPath));
  if (!cmd) return true;
  const { agent } = await manager.agentOf(sandboxId);
  return (await collectExec(execEvents(agent, { cmd, user: 'root' }, AbortSignal.timeout(GIVE_TIMEOUT_MS)))).exitCode === 0;
}

/** e2b's volume routes; like e2bRoutes, they need e2bErrorHandler in their scope. */
export function e2bVolumeRoutes(volumes: Volumes): ApiRoute[] {
  const tags = ['e2b'];
  return [
    // A new volume has Capsule's default size: e2b's create asks for none.
    route<{ Body: NewVolume }>({
      method: 'POST',
      url: '/volumes',
      schema: { tags, body: NewVolume },
      handler: async (request, reply) => reply.code(201).send(toE2bVolumeAndToken(await volumes.create(request.body.name, undefined))),
    }),

    route({
      method: 'GET',
      url: '/volumes',
      schema: { tags },
      handler: async () => (await volumes.list()).map(toE2bVolume),
    }),

    route<{ Params: VolumeParams }>({
      method: 'GET',
      url: '/volumes/:volumeID',
      schema: { tags, params: VolumeParams },
      handler: async (request) => toE2bVolumeAndToken(await volumes.describe(request.params.volumeID)),
    }),

    // Refused (409 volume_in_use) while a live sandbox holds it, as Capsule's own removal is.
    route<{ Params: VolumeParams }>({
      method: 'DELETE',
      url: '/volumes/:volumeID',
      schema: { tags, params: VolumeParams },
      handler: async (request, reply) => {
        await volumes.remove(request.params.volumeID);
        return reply.code(204).send();
      },
    }),

    route({
      method: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'],
      url: E2B_VOLUME_CONTENT_ROUTE,
      schema: { tags, hide: true },
      // 501 in e2b's shape: no Capsule error code means "a part of e2b's API not served", and this is the only such part here.
      handler: async (_request, reply) =>
        reply.code(501).send({
          code: 501,
          message: "Capsule does not serve e2b's volume file API: mount the volume in a sandbox (volumeMounts) and use sandbox.files there",
        }),
    }),
  ];
}
