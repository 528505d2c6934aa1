// e2b's snapshot and template-name endpoints (create, list and delete a
// snapshot; does a template name exist) mapped onto Capsule's snapshot
// templates: an e2b snapshot IS the template `capsule snapshot` makes, its id
// the template's name. Freezing and removing belong to the sandbox manager and
// templates/, never to this file.
import { randomBytes } from 'node:crypto';
import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { CreateTemplateRequest } from '@capsule/protocol';
import { CapsuleError } from '../errors.js';
import type { SandboxManager } from '../sandboxes/manager.js';
import type { Templates } from '../templates/templates.js';
import { liveE2bSandbox, PAGE_LIMIT_MAX, pageOf } from './e2b-routes.js';
import { untaggedTemplateName } from './e2b-template-build-routes.js';
import { route, type ApiRoute } from './routes.js';

const TemplateName = CreateTemplateRequest.properties.name;

// Names are checked by the handler, not the schema, so that a bad one is refused with Capsule's code and hint.
const SnapshotBody = Type.Object({ name: Type.Optional(Type.String({ maxLength: 256 })) });
type SnapshotBody = Static<typeof SnapshotBody>;
const SnapshotListQuery = Type.Object({
  sandboxID: Type.Optional(Type.String({ maxLength: 128 })),
  name: Type.Optional(Type.String({ maxLength: 256 })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: PAGE_LIMIT_MAX })),
  nextToken: Type.Optional(Type.String({ maxLength: 512 })),
});
type SnapshotListQuery = Static<typeof SnapshotListQuery>;
const SandboxParams = Type.Object({ sandboxID: Type.String({ minLength: 1, maxLength: 128 }) });
type SandboxParams = Static<typeof SandboxParams>;
const TemplateParams = Type.Object({ templateID: Type.String({ minLength: 1, maxLength: 256 }) });
type TemplateParams = Static<typeof TemplateParams>;
const AliasParams = Type.Object({ alias: Type.String({ minLength: 1, maxLength: 256 }) });
type AliasParams = Static<typeof AliasParams>;

/** e2b's SnapshotInfo: Capsule's templates have one name and no tags, so the id is the name. */
export function toE2bSnapshot(template: string) {
  return { snapshotID: template, names: [template] };
}

/** The template name a snapshot is given: the one asked for, checked as every template name is, or a fresh one. */
export function snapshotTemplateName(requested: string | undefined): string {
  if (requested === undefined) return `snapshot-${randomBytes(4).toString('hex')}`;
  if (!Value.Check(TemplateName, requested)) {
    throw new CapsuleError('invalid_argument', `"${requested}" cannot name a snapshot`, {
      hint: `a snapshot is a Capsule template: its name is 1 to 63 ${TemplateName.description}, starting with a letter or digit`,
    });
  }
  return requested;
}

/** e2b's snapshot routes; like e2bRoutes, they need e2bErrorHandler in their scope. */
export function e2bSnapshotRoutes(manager: SandboxManager, templates: Templates): ApiRoute[] {
  const tags = ['e2b'];
  return [
    // The sandbox runs on (e2b pauses it meanwhile; Capsule stops it only for the moment of the freeze).
    route<{ Params: SandboxParams; Body: SnapshotBody }>({
      method: 'POST',
      url: '/sandboxes/:sandboxID/snapshots',
      schema: { tags, params: SandboxParams, body: SnapshotBody },
      handler: async (request, reply) => {
        const name = snapshotTemplateName(request.body?.name);
        const sandbox = await liveE2bSandbox(manager, request.params.sandboxID);
        const template = await manager.snapshot(sandbox.id, name);
        return reply.code(201).send(toE2bSnapshot(template.name));
      },
    }),

    route<{ Querystring: SnapshotListQuery }>({
      method: 'GET',
      url: '/snapshots',
      schema: { tags, querystring: SnapshotListQuery },
      handler: async (request, reply) => {
        const { sandboxID, name, limit, nextToken } = request.query;
        const matching = (await templates.listSnapshots()).filter(
          (s) => (sandboxID === undefined || s.sourceSandbox === sandboxID) && (name === undefined || s.name === name),
        );
        const { page, next } = pageOf(matching, limit ?? PAGE_LIMIT_MAX, nextToken);
        if (next) void reply.header('x-next-token', next);
        return page.map((s) => toE2bSnapshot(s.name));
      },
    }),

    // How e2b deletes a snapshot (and a template): Capsule's own removal, which refuses while sandboxes made from it live.
    route<{ Params: TemplateParams }>({
      method: 'DELETE',
      url: '/templates/:templateID',
      schema: { tags, params: TemplateParams },
      handler: async (request, reply) => {
        await templates.remove(request.params.templateID);
        return reply.code(204).send();
      },
    }),

    // Template.exists: 404 when no template has the name (`name:default` is the name; other tags are refused).
    route<{ Params: AliasParams }>({
      method: 'GET',
      url: '/templates/aliases/:alias',
      schema: { tags, params: AliasParams },
      handler: async (request) => {
        const template = await templates.inspect(untaggedTemplateName(request.params.alias));
        return { templateID: template.name, public: false };
      },
    }),
  ];
}
