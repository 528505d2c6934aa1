// e2b's volume endpoints (create, list, get and delete a volume, and the
// file API on a volume no sandbox holds) mapped onto Capsule's volumes: an e2b
// volume IS a Capsule volume, its id the volume's name, so `volumeMounts` of
// an e2b create and `-v` of `capsule run` name the same disks. Disks, holders,
// their rules and their files belong to volumes/, never to this file.
import type { IncomingMessage } from 'node:http';
import { Type, type Static } from '@sinclair/typebox';
import type { Volume } from '@capsule/protocol';
import { collectExec, execEvents } from '../agent/exec.js';
import { CapsuleError } from '../errors.js';
import type { SandboxManager } from '../sandboxes/manager.js';
import { MAX_LIST_DEPTH, volumePath, type VolumeEntry } from '../volumes/volume-files.js';
import { giveFreshFoldersCommand, normaliseMountPath } from '../volumes/volume-rules.js';
import type { Volumes } from '../volumes/volumes.js';
import { E2B_DEFAULT_USER } from './agent-proxy.js';
import type { VolumeTokens } from './credentials.js';
import { route, type ApiRoute } from './routes.js';

// Names are checked by Volumes, not the schema, so that a bad one is refused with Capsule's code and hint.
const NewVolume = Type.Object({ name: Type.String({ maxLength: 256 }) });
type NewVolume = Static<typeof NewVolume>;
const VolumeParams = Type.Object({ volumeID: Type.String({ minLength: 1, maxLength: 256 }) });
type VolumeParams = Static<typeof VolumeParams>;

const ContentParams = Type.Object({ volumeID: Type.String({ minLength: 1, maxLength: 256 }) });
type ContentParams = Static<typeof ContentParams>;
const PathQuery = Type.Object({ path: Type.String({ maxLength: 4096 }) });
type PathQuery = Static<typeof PathQuery>;
const ListQuery = Type.Object({
  path: Type.String({ maxLength: 4096 }),
  depth: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_LIST_DEPTH })),
});
type ListQuery = Static<typeof ListQuery>;
const Owner = {
  uid: Type.Optional(Type.Integer({ minimum: 0, maximum: 0xffffffff })),
  gid: Type.Optional(Type.Integer({ minimum: 0, maximum: 0xffffffff })),
  mode: Type.Optional(Type.Integer({ minimum: 0, maximum: 0o7777 })),
};
const NewEntryQuery = Type.Object({ path: Type.String({ maxLength: 4096 }), ...Owner, force: Type.Optional(Type.Boolean()) });
type NewEntryQuery = Static<typeof NewEntryQuery>;
const MetadataBody = Type.Object(Owner);
type MetadataBody = Static<typeof MetadataBody>;

/** e2b's Volume: Capsule volumes have one name, which is their id. */
export function toE2bVolume(volume: Pick<Volume, 'name'>) {
  return { volumeID: volume.name, name: volume.name };
}

/**
 * e2b's VolumeAndToken: the token authorises the volume file API on that
 * volume. Its `domain` is left out, so the SDK keeps its own; the SDK sends
 * file calls to E2B_VOLUME_API_URL, which names the daemon.
 */
export function toE2bVolumeAndToken(volume: Pick<Volume, 'name' | 'createdAt'>, tokens: VolumeTokens) {
  return { ...toE2bVolume(volume), token: tokens.tokenFor(volume.name, volume.createdAt) };
}

/** e2b's VolumeEntryStat. */
function toE2bEntry(entry: VolumeEntry) {
  return {
    name: entry.name,
    path: entry.path,
    type: entry.type,
    size: entry.size,
    mode: entry.mode,
    uid: entry.uid,
    gid: entry.gid,
    atime: entry.atime.toISOString(),
    mtime: entry.mtime.toISOString(),
    ctime: entry.ctime.toISOString(),
    ...(entry.target !== undefined ? { target: entry.target } : {}),
  };
}

const GIVE_TIMEOUT_MS = 30_000;
/** The prefix of e2b's volume file API: its routes check the volume's own token (all e2b's SDK sends there), not an API key. */
const E2B_VOLUME_CONTENT_PREFIX = '/volumecontent/';

export function isE2bVolumeContentRoute(url: string | undefined): boolean {
  return url?.startsWith(E2B_VOLUME_CONTENT_PREFIX) === true;
}

/** The bearer token a request carries. */
function bearerToken(request: IncomingMessage): string | undefined {
  return /^Bearer (\S+)$/.exec(request.headers.authorization ?? '')?.[1];
}

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
export function e2bVolumeRoutes(volumes: Volumes, tokens: VolumeTokens, isViaTcp: (req: IncomingMessage) => boolean): ApiRoute[] {
  const tags = ['e2b'];
  const withToken = (volume: Volume) => toE2bVolumeAndToken(volume, tokens);
  /**
   * Over TCP a file call must carry the volume's token. An unknown volume and
   * a wrong token answer alike, so no name is learnt without a token.
   */
  const authorized = async (request: { raw: IncomingMessage }, name: string): Promise<string> => {
    if (!isViaTcp(request.raw)) return name;
    const volume = await volumes.describe(name).catch(() => undefined);
    if (!volume || !tokens.verify(volume.name, volume.createdAt, bearerToken(request.raw)))
      throw new CapsuleError('unauthenticated', `no volume "${name}" that this token opens`, {
        hint: "use the Volume that Volume.create or Volume.connect returned: it carries the volume's token",
      });
    return name;
  };
  const fileRoute = <Q, B = unknown>(
    method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE',
    url: string,
    querystring: unknown,
    handler: (name: string, query: Q, body: B) => Promise<unknown>,
    body?: unknown,
  ) =>
    route<{ Params: ContentParams; Querystring: Q; Body: B }>({
      method,
      url: `${E2B_VOLUME_CONTENT_PREFIX}:volumeID${url}`,
      schema: { tags, params: ContentParams, querystring, ...(body ? { body } : {}) },
      handler: async (request, reply) => {
        const answer = await handler(await authorized(request, request.params.volumeID), request.query as Q, request.body as B);
        return answer === undefined ? reply.code(204).send() : answer;
      },
    });
  return [
    // A new volume has Capsule's default size: e2b's create asks for none.
    route<{ Body: NewVolume }>({
      method: 'POST',
      url: '/volumes',
      schema: { tags, body: NewVolume },
      handler: async (request, reply) => reply.code(201).send(withToken(await volumes.create(request.body.name, undefined))),
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
      handler: async (request) => withToken(await volumes.describe(request.params.volumeID)),
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

    fileRoute<ListQuery>('GET', '/dir', ListQuery, async (name, query) =>
      (await volumes.onIdleVolumeFiles(name, `list volume "${name}"`, (files) => files.list(volumePath(query.path), query.depth ?? 1))).map(
        toE2bEntry,
      ),
    ),
    fileRoute<NewEntryQuery>('POST', '/dir', NewEntryQuery, async (name, query) =>
      toE2bEntry(
        await volumes.onIdleVolumeFiles(name, `make a folder in volume "${name}"`, (files) =>
          files.makeDir(volumePath(query.path), { ...ownerOf(query), force: query.force ?? false }),
        ),
      ),
    ),
    fileRoute<PathQuery>('GET', '/path', PathQuery, async (name, query) => {
      const path = volumePath(query.path);
      const entry = await volumes.onIdleVolumeFiles(name, `look at volume "${name}"`, (files) => files.stat(path));
      if (!entry) throw new CapsuleError('not_found', `no file or folder ${path} in the volume`);
      return toE2bEntry(entry);
    }),
    fileRoute<PathQuery, MetadataBody>(
      'PATCH',
      '/path',
      PathQuery,
      async (name, query, body) =>
        toE2bEntry(
          await volumes.onIdleVolumeFiles(name, `change a file of volume "${name}"`, (files) =>
            files.setMetadata(volumePath(query.path), ownerOf(body)),
          ),
        ),
      MetadataBody,
    ),
    fileRoute<PathQuery>('DELETE', '/path', PathQuery, async (name, query) => {
      await volumes.onIdleVolumeFiles(name, `remove from volume "${name}"`, (files) => files.remove(volumePath(query.path)));
      return undefined;
    }),
    route<{ Params: ContentParams; Querystring: PathQuery }>({
      method: 'GET',
      url: `${E2B_VOLUME_CONTENT_PREFIX}:volumeID/file`,
      schema: { tags, params: ContentParams, querystring: PathQuery },
      handler: async (request, reply) => {
        const name = await authorized(request, request.params.volumeID);
        const { entry, content } = await volumes.readFile(name, volumePath(request.query.path));
        return reply.header('content-type', 'application/octet-stream').header('content-length', entry.size).send(content);
      },
    }),
    // The body is any bytes (octet-stream), passed through as a stream and bounded by the volume's size.
    route<{ Params: ContentParams; Querystring: NewEntryQuery; Body: AsyncIterable<Buffer> | undefined }>({
      method: 'PUT',
      url: `${E2B_VOLUME_CONTENT_PREFIX}:volumeID/file`,
      schema: { tags, params: ContentParams, querystring: NewEntryQuery },
      handler: async (request) => {
        const name = await authorized(request, request.params.volumeID);
        const body = request.body !== undefined && Symbol.asyncIterator in request.body ? request.body : emptyUpload();
        const options = { ...ownerOf(request.query), force: request.query.force ?? false };
        return toE2bEntry(await volumes.writeFile(name, volumePath(request.query.path), body, options));
      },
    }),
  ];
}

/** The owner fields a request gave, and no others (the SDK sends them only when set). */
function ownerOf(given: { uid?: number; gid?: number; mode?: number }): { uid?: number; gid?: number; mode?: number } {
  return {
    ...(given.uid !== undefined ? { uid: given.uid } : {}),
    ...(given.gid !== undefined ? { gid: given.gid } : {}),
    ...(given.mode !== undefined ? { mode: given.mode } : {}),
  };
}

async function* emptyUpload(): AsyncIterable<Buffer> {}
