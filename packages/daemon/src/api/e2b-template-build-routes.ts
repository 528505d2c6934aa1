// e2b's template build endpoints (v2 builds): request a build, upload COPY
// files by hash, start the build, poll its status and logs. The steps are
// translated by e2b-template-build.ts and built by templates/ as any
// Capsulefile is; here only the e2b shapes and the record of builds, which
// lives in memory (a daemon restart forgets builds, never templates) and is
// bounded in builds and log lines.
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import type { FastifyRequest } from 'fastify';
import { CreateTemplateRequest, type BuildEvent } from '@capsule/protocol';
import { CapsuleError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { checkTemplateName } from '../templates/template-build.js';
import type { Templates } from '../templates/templates.js';
import { presentedApiKey } from './credentials.js';
import type { E2bBuildFiles } from './e2b-build-files.js';
import { E2bBuildStart, translateE2bBuild, type SourceKind } from './e2b-template-build.js';
import { route, type ApiRoute } from './routes.js';

/** Builds kept for status polls, running ones aside; the oldest of the others go first (requested and never started ones too). */
const BUILDS_KEPT = 64;
/** Log entries kept per build, and characters per entry: a step's output may be endless. */
const LOG_ENTRIES_MAX = 10_000;
const LOG_MESSAGE_CHARS = 4096;

type E2bBuildStatus = 'waiting' | 'building' | 'ready' | 'error';
interface LogEntry {
  timestamp: string;
  level: 'info' | 'error';
  message: string;
  step?: string;
}

interface E2bBuild {
  id: string;
  template: string;
  /** `built`: the disk is built and the template recorded; it is `ready` once its warm snapshot is. */
  phase: 'waiting' | 'building' | 'built' | 'ready' | 'error';
  resources: { vcpus?: number | undefined; memoryMiB?: number | undefined };
  logs: LogEntry[];
  reason?: { message: string; step: string };
  controller: AbortController;
  running?: Promise<void>;
}

const TemplateName = CreateTemplateRequest.properties.name;
const RequestBuildBody = Type.Object({
  name: Type.Optional(Type.String({ maxLength: 256 })),
  alias: Type.Optional(Type.String({ maxLength: 256 })),
  tags: Type.Optional(Type.Array(Type.String({ maxLength: 128 }), { maxItems: 64 })),
  cpuCount: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
  memoryMB: Type.Optional(Type.Integer({ minimum: 128, maximum: 1024 * 1024 })),
  minFreeDiskMb: Type.Optional(Type.Integer({ minimum: 0 })),
});
const BuildParams = Type.Object({
  templateID: Type.String({ minLength: 1, maxLength: 256 }),
  buildID: Type.String({ minLength: 1, maxLength: 64 }),
});
type BuildParams = Static<typeof BuildParams>;
const StatusQuery = Type.Object({ logsOffset: Type.Optional(Type.Integer({ minimum: 0 })) });
const AssignTagsBody = Type.Object({
  target: Type.String({ minLength: 1, maxLength: 256 }),
  tags: Type.Array(Type.String({ maxLength: 128 }), { minItems: 1, maxItems: 64 }),
});
const RemoveTagsBody = Type.Object({
  name: Type.String({ minLength: 1, maxLength: 256 }),
  tags: Type.Array(Type.String({ maxLength: 128 }), { minItems: 1, maxItems: 64 }),
});
const TemplateParams = Type.Object({ templateID: Type.String({ minLength: 1, maxLength: 256 }) });
const FileParams = Type.Object({ templateID: Type.String({ minLength: 1, maxLength: 256 }), hash: Type.String({ maxLength: 128 }) });
type FileParams = Static<typeof FileParams>;

/**
 * The one tag a Capsule template has. e2b tags a template's builds; Capsule
 * keeps one build per template name, a rebuild replacing it, which is what
 * e2b calls `name:default` (and `name` alone means).
 */
const DEFAULT_TAG = 'default';

function tagsNotSupported(tags: string[]): CapsuleError {
  return new CapsuleError(
    'invalid_argument',
    `template tags are not supported by Capsule, but for "${DEFAULT_TAG}": ${tags.map((t) => `"${t.slice(0, 64)}"`).join(', ')} cannot be given`,
    { hint: `a Capsule template keeps one build, its name alone (e2b's name:${DEFAULT_TAG}); build another name for another version` },
  );
}

/** `ref` without e2b's `:default` tag; any other tag is refused. */
export function untaggedTemplateName(ref: string): string {
  const colon = ref.indexOf(':');
  if (colon < 0) return ref;
  const tag = ref.slice(colon + 1);
  if (tag !== DEFAULT_TAG) throw tagsNotSupported([tag]);
  return ref.slice(0, colon);
}

function assertOnlyDefaultTag(tags: string[] | undefined): void {
  const others = (tags ?? []).filter((tag) => tag !== DEFAULT_TAG);
  if (others.length > 0) throw tagsNotSupported(others);
}

/** The template a build request names, checked as every template name is; of e2b's tags only `default` is taken. */
export function requestedTemplateName(body: Static<typeof RequestBuildBody>): string {
  const tagged = body.name ?? body.alias;
  if (!tagged) throw new CapsuleError('invalid_argument', 'a template build needs a name', { hint: 'Template.build(template, "name")' });
  const name = untaggedTemplateName(tagged);
  assertOnlyDefaultTag(body.tags);
  const shown = name.slice(0, 80);
  if (!Value.Check(TemplateName, name))
    throw new CapsuleError('invalid_argument', `"${shown}" cannot name a template`, {
      hint: `a template name is 1 to 63 ${TemplateName.description}, starting with a letter or digit`,
    });
  checkTemplateName(name);
  return name;
}

/** The builds e2b clients asked for: each runs in the background, its status and logs polled. */
export class E2bTemplateBuilds {
  private readonly builds = new Map<string, E2bBuild>();

  constructor(
    private readonly templates: Templates,
    private readonly files: E2bBuildFiles,
    private readonly log: Logger,
  ) {}

  request(template: string, resources: E2bBuild['resources']): E2bBuild {
    // Uploads are pruned as builds end and as new ones come, so ones no build started with do not stay for ever.
    this.files.prune();
    const idle = [...this.builds.values()].filter((b) => b.phase !== 'building');
    for (const old of idle.slice(0, Math.max(0, idle.length - BUILDS_KEPT + 1))) this.builds.delete(old.id);
    const build: E2bBuild = { id: randomUUID(), template, phase: 'waiting', resources, logs: [], controller: new AbortController() };
    this.builds.set(build.id, build);
    return build;
  }

  get(params: BuildParams): E2bBuild {
    const build = this.builds.get(params.buildID);
    if (!build || build.template !== params.templateID)
      throw new CapsuleError('not_found', `template ${params.templateID} has no build ${params.buildID}`, {
        hint: 'builds are kept in memory: a daemon restart forgets them; build again',
      });
    return build;
  }

  /** Translates the steps (refusing bad ones before anything runs) and starts the build. */
  start(build: E2bBuild, body: E2bBuildStart): void {
    if (build.phase !== 'waiting')
      throw new CapsuleError('invalid_argument', `build ${build.id} has already started`, { hint: 'request a new build for new steps' });
    const translated = translateE2bBuild(body, this.sourceKind);
    build.phase = 'building';
    const emit = this.emitter(build, translated.origins);
    const releaseUploads = this.files.hold((body.steps ?? []).flatMap((step) => (step.filesHash ? [step.filesHash] : [])));
    build.running = this.templates
      .buildSteps(
        {
          name: build.template,
          file: translated.file,
          contextDir: this.files.dir,
          noCacheFrom: translated.noCacheFrom,
          replace: true,
          credentials: translated.credentials,
          resources: build.resources,
        },
        emit.event,
        build.controller.signal,
      )
      .then(
        () => {
          releaseUploads();
          emit.flush();
          build.phase = 'built';
          this.append(build, { message: `template ${build.template} is built; taking its warm snapshot` });
        },
        (err: unknown) => {
          releaseUploads();
          emit.flush();
          this.fail(build, err, emit.failedStep());
        },
      );
  }

  /** e2b's TemplateBuildInfo, log entries from `logsOffset` on. */
  status(build: E2bBuild, logsOffset: number) {
    if (build.phase === 'built') {
      const warm = this.templates.warm.warmSnapshotInfo(build.template);
      if (warm.state === 'failed')
        this.fail(build, new CapsuleError('template_not_ready', `the warm snapshot failed: ${warm.error ?? 'unknown error'}`), 'finalize');
      else if (warm.state !== 'building') {
        build.phase = 'ready';
        this.append(build, { message: `template ${build.template} is ready` });
      }
    }
    const status: E2bBuildStatus = build.phase === 'built' ? 'building' : build.phase;
    return {
      buildID: build.id,
      templateID: build.template,
      status,
      logEntries: build.logs.slice(logsOffset),
      logs: [],
      ...(build.reason ? { reason: build.reason } : {}),
    };
  }

  /** Daemon shutdown: stops the builds under way (each removes its build sandbox). */
  async close(): Promise<void> {
    for (const build of this.builds.values()) build.controller.abort();
    await Promise.allSettled([...this.builds.values()].map((b) => b.running));
  }

  /** Uploaded sources are looked up under the uploads' folder only; the builder checks again as it copies. */
  private readonly sourceKind: SourceKind = (relative) => {
    const file = path.resolve(this.files.dir, relative);
    if (!file.startsWith(`${this.files.dir}${path.sep}`)) return undefined;
    const stat = fs.lstatSync(file, { throwIfNoEntry: false });
    return stat?.isFile() ? 'file' : stat?.isDirectory() ? 'directory' : undefined;
  };

  private fail(build: E2bBuild, err: unknown, step: string): void {
    build.phase = 'error';
    const message = err instanceof CapsuleError ? `${err.code}: ${err.message}${err.hint ? ` (${err.hint})` : ''}` : errorMessage(err);
    build.reason = { message, step };
    this.append(build, { level: 'error', message, step });
    this.log.info({ template: build.template, build: build.id, err: message }, 'e2b template build failed');
  }

  private append(build: E2bBuild, entry: Omit<LogEntry, 'timestamp' | 'level'> & { level?: LogEntry['level'] }): void {
    if (build.logs.length > LOG_ENTRIES_MAX) return;
    const message =
      build.logs.length === LOG_ENTRIES_MAX ? `(the build log is cut here: more than ${LOG_ENTRIES_MAX} lines)` : entry.message;
    build.logs.push({
      timestamp: new Date().toISOString(),
      level: entry.level ?? 'info',
      message: message.length > LOG_MESSAGE_CHARS ? `${message.slice(0, LOG_MESSAGE_CHARS)}…` : message,
      ...(entry.step ? { step: entry.step } : {}),
    });
  }

  /** Build events as e2b log lines, each with the e2b step it belongs to (`base` before the first). */
  private emitter(build: E2bBuild, origins: number[]) {
    let step = 'base';
    const partial = { stdout: '', stderr: '' };
    const flush = () => {
      for (const stream of ['stdout', 'stderr'] as const) {
        if (partial[stream] !== '') this.append(build, { message: partial[stream], step });
        partial[stream] = '';
      }
    };
    const event = (e: BuildEvent): void => {
      if (e.type === 'step') {
        flush();
        if (e.index > 0) step = String(origins[e.index - 1] ?? e.index);
        this.append(build, { message: `${e.cached ? 'CACHED ' : ''}${e.instruction}`, step });
      } else if (e.type === 'log') {
        const lines = (partial[e.stream] + e.text).split('\n');
        partial[e.stream] = lines.pop() ?? '';
        for (const line of lines) this.append(build, { message: line, step });
        // A line without its end may be endless: cut it where an entry ends.
        if (partial[e.stream].length > LOG_MESSAGE_CHARS) flush();
      }
    };
    return { event, flush, failedStep: () => step };
  }
}

function uploadUrl(request: FastifyRequest, params: FileParams): string {
  return `${request.protocol}://${request.headers.host ?? 'localhost'}/templates/${encodeURIComponent(params.templateID)}/files/${params.hash}`;
}

/** e2b's build routes but the upload (see e2bBuildFileUploadRoute); they need e2bErrorHandler in their scope. */
export function e2bTemplateBuildRoutes(builds: E2bTemplateBuilds, files: E2bBuildFiles, templates: Templates): ApiRoute[] {
  const tags = ['e2b'];
  return [
    route<{ Body: Static<typeof RequestBuildBody> }>({
      method: 'POST',
      url: '/v3/templates',
      schema: { tags, body: RequestBuildBody },
      handler: async (request, reply) => {
        const name = requestedTemplateName(request.body);
        templates.assertBuildRoom();
        const { cpuCount, memoryMB } = request.body;
        const build = builds.request(name, { vcpus: cpuCount, memoryMiB: memoryMB });
        return reply
          .code(202)
          .send({ templateID: name, buildID: build.id, names: [name], aliases: [name], tags: [DEFAULT_TAG], public: false });
      },
    }),

    // Tags: a template's one build is its `default` tag, and its build id (e2b's) is the template's name, as its id is.
    route<{ Params: Static<typeof TemplateParams> }>({
      method: 'GET',
      url: '/templates/:templateID/tags',
      schema: { tags, params: TemplateParams },
      handler: async (request) => {
        const template = await templates.inspect(untaggedTemplateName(request.params.templateID));
        return [{ tag: DEFAULT_TAG, buildID: template.name, createdAt: template.createdAt }];
      },
    }),
    // Assigning `default` to a template (or to its `name:default`) changes nothing, so it is answered; any other tag is refused.
    route<{ Body: Static<typeof AssignTagsBody> }>({
      method: 'POST',
      url: '/templates/tags',
      schema: { tags, body: AssignTagsBody },
      handler: async (request, reply) => {
        const name = untaggedTemplateName(request.body.target);
        assertOnlyDefaultTag(request.body.tags);
        const template = await templates.inspect(name);
        return reply.code(201).send({ buildID: template.name, tags: [DEFAULT_TAG] });
      },
    }),
    route<{ Body: Static<typeof RemoveTagsBody> }>({
      method: 'DELETE',
      url: '/templates/tags',
      schema: { tags, body: RemoveTagsBody },
      handler: async (request) => {
        untaggedTemplateName(request.body.name);
        assertOnlyDefaultTag(request.body.tags);
        throw new CapsuleError('invalid_argument', `the "${DEFAULT_TAG}" tag is the template itself and cannot be removed`, {
          hint: 'delete the template instead (`capsule template rm`, or DELETE /templates/{id})',
        });
      },
    }),

    // The upload goes to the same path; the SDK sends only the headers given here, so the caller's API key is handed back for it.
    route<{ Params: FileParams }>({
      method: 'GET',
      url: '/templates/:templateID/files/:hash',
      schema: { tags, params: FileParams },
      handler: async (request) => {
        if (files.has(request.params.hash)) return { present: true };
        const key = presentedApiKey(request.headers);
        return { present: false, url: uploadUrl(request, request.params), ...(key ? { headers: { 'X-API-Key': key } } : {}) };
      },
    }),

    route<{ Params: BuildParams; Body: E2bBuildStart }>({
      method: 'POST',
      url: '/v2/templates/:templateID/builds/:buildID',
      schema: { tags, params: BuildParams, body: E2bBuildStart },
      handler: async (request, reply) => {
        builds.start(builds.get(request.params), request.body);
        return reply.code(202).send();
      },
    }),

    route<{ Params: BuildParams; Querystring: Static<typeof StatusQuery> }>({
      method: 'GET',
      url: '/templates/:templateID/builds/:buildID/status',
      schema: { tags, params: BuildParams, querystring: StatusQuery },
      handler: async (request) => builds.status(builds.get(request.params), request.query.logsOffset ?? 0),
    }),
  ];
}

/** The upload of a COPY's files, a tar (gzipped or not) of any content type: its scope passes the body through as a stream. */
export function e2bBuildFileUploadRoute(files: E2bBuildFiles, templates: Templates): ApiRoute {
  return route<{ Params: FileParams; Body: AsyncIterable<Buffer> }>({
    method: 'PUT',
    url: '/templates/:templateID/files/:hash',
    schema: { tags: ['e2b'], params: FileParams },
    handler: async (request, reply) => {
      templates.assertBuildRoom();
      if (request.body === undefined || !(Symbol.asyncIterator in request.body))
        throw new CapsuleError('invalid_argument', 'the upload has no body', { hint: 'PUT the files as a tar' });
      await files.receive(request.params.hash, request.body);
      return reply.code(201).send();
    },
  });
}
