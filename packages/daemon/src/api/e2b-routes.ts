// The control-plane endpoints the official e2b SDK calls (create, connect,
// list, get, kill, timeout, pause, resume, fork, metrics), with its JSON shapes and its
// error form `{code, message}`, mapped onto the sandbox manager. With
// E2B_API_URL and E2B_SANDBOX_URL pointed at capsuled, the e2b SDK runs
// unchanged; its calls to the agent go through the proxy (agent-proxy.ts).
// (The swagger import brings the OpenAPI fields of route schemas, such as tags, into Fastify's types.)
import type {} from '@fastify/swagger';
import { Type, type Static } from '@sinclair/typebox';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { httpStatusOf, limits, type GuestMetrics, type Sandbox } from '@capsule/protocol';
import { envdCompatVersion } from '@capsule/protocol/agent';
import { CapsuleError } from '../errors.js';
import { E2B_DEFAULT_USER } from './agent-proxy.js';
import { untaggedTemplateName } from './e2b-template-build-routes.js';
import { giveFreshVolumesToE2bUser } from './e2b-volume-routes.js';
import { requestErrorOf } from './request-errors.js';
import type { SandboxManager } from '../sandboxes/manager.js';
import type { Volumes } from '../volumes/volumes.js';
import type { SandboxTokens } from './credentials.js';
import { MetricsRangeQuery, parseMetricsRange } from './metrics-range.js';
import { route, type ApiRoute } from './routes.js';
import { guestMetricsOf, type UsageSampler } from './usage-sampler.js';

const CLIENT_ID = 'capsule';
/** e2b reports an end time for every sandbox; one without a timeout ends never. */
const NEVER = '9999-12-31T23:59:59.999Z';
const MAX_TIMEOUT_SECONDS = Math.floor(limits.maxTimeoutMs / 1000);
/** e2b's largest page, and the size of a page a list asks no limit for. */
export const PAGE_LIMIT_MAX = 100;
const METRICS_TIMEOUT_MS = 10_000;

const StringMap = Type.Record(Type.String(), Type.String());
const NewSandbox = Type.Object({
  templateID: Type.String({ minLength: 1, maxLength: 128 }),
  timeout: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_TIMEOUT_SECONDS })),
  metadata: Type.Optional(StringMap),
  envVars: Type.Optional(StringMap),
  autoPause: Type.Optional(Type.Boolean()),
  allow_internet_access: Type.Optional(Type.Boolean()),
  network: Type.Optional(
    Type.Object({ allowOut: Type.Optional(Type.Array(Type.String())), denyOut: Type.Optional(Type.Array(Type.String())) }),
  ),
  secure: Type.Optional(Type.Boolean()),
  /** e2b mounts volumes read-write only; names and paths are checked by volumes/ as a Capsule create's are. */
  volumeMounts: Type.Optional(
    Type.Array(Type.Object({ name: Type.String({ maxLength: 256 }), path: Type.String({ maxLength: 4096 }) }), {
      maxItems: limits.maxVolumesPerSandbox,
    }),
  ),
});
type NewSandbox = Static<typeof NewSandbox>;
/** e2b's network update: omitted fields are cleared. */
const NetworkBody = Type.Object({
  allow_internet_access: Type.Optional(Type.Boolean()),
  allowOut: Type.Optional(Type.Array(Type.String({ maxLength: 256 }), { maxItems: limits.maxEgressRules })),
  denyOut: Type.Optional(Type.Array(Type.String({ maxLength: 256 }), { maxItems: limits.maxEgressRules })),
});
const TimeoutBody = Type.Object({ timeout: Type.Integer({ minimum: 0, maximum: MAX_TIMEOUT_SECONDS }) });
const ConnectBody = Type.Object({ timeout: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_TIMEOUT_SECONDS })) });
const RefreshBody = Type.Object({ duration: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_TIMEOUT_SECONDS })) });
const ForkBody = Type.Object({
  count: Type.Optional(Type.Integer({ minimum: 1, maximum: limits.maxForks })),
  timeout: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_TIMEOUT_SECONDS })),
});
const ListQuery = Type.Object({
  metadata: Type.Optional(Type.String({ maxLength: 4096 })),
  state: Type.Optional(Type.String({ maxLength: 64 })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: PAGE_LIMIT_MAX })),
  nextToken: Type.Optional(Type.String({ maxLength: 512 })),
});
type ListQuery = Static<typeof ListQuery>;
const IdParams = Type.Object({ sandboxID: Type.String({ minLength: 1, maxLength: 128 }) });
type IdParams = Static<typeof IdParams>;

/** e2b's two states; sandboxes that are neither (failed, killed) are not e2b sandboxes. */
export function e2bState(sandbox: Sandbox): 'running' | 'paused' | undefined {
  if (sandbox.state === 'running' || sandbox.state === 'starting') return 'running';
  if (sandbox.state === 'paused') return 'paused';
  return undefined;
}

/** e2b's getHost(port) builds `${port}-${sandboxID}.${domain}` from this answer's domain: the daemon's CAPSULE_DOMAIN. */
export function toE2bSandbox(sandbox: Sandbox, tokens: SandboxTokens) {
  return {
    sandboxID: sandbox.id,
    templateID: sandbox.template,
    clientID: CLIENT_ID,
    envdVersion: envdCompatVersion,
    envdAccessToken: tokens.tokenFor(sandbox.id),
    trafficAccessToken: sandbox.trafficAccessToken,
    domain: sandbox.domain,
  };
}

/** e2b's SandboxVolumeMount: a volume's name and where the sandbox mounts it. */
export interface E2bVolumeMount {
  name: string;
  path: string;
}

export function toE2bListed(sandbox: Sandbox, volumeMounts: E2bVolumeMount[]) {
  return {
    sandboxID: sandbox.id,
    templateID: sandbox.template,
    ...(sandbox.name ? { alias: sandbox.name } : {}),
    clientID: CLIENT_ID,
    startedAt: sandbox.createdAt,
    endAt: sandbox.expiresAt ?? NEVER,
    cpuCount: sandbox.vcpus,
    memoryMB: sandbox.memoryMiB,
    diskSizeMB: 0,
    envdVersion: envdCompatVersion,
    metadata: sandbox.metadata,
    state: e2bState(sandbox) ?? 'paused',
    volumeMounts,
  };
}

/** One e2b metrics sample: the guest's view at a time. */
export function toE2bMetric(timestamp: string, guest: GuestMetrics) {
  const ms = Date.parse(timestamp);
  return {
    timestamp,
    timestampUnix: Math.floor(ms / 1000),
    cpuCount: guest.cpuCount,
    cpuUsedPct: guest.cpuUsedPct,
    memUsed: guest.memUsedBytes,
    memTotal: guest.memTotalBytes,
    // The agent does not report the page cache apart.
    memCache: 0,
    diskUsed: guest.diskUsedBytes,
    diskTotal: guest.diskTotalBytes,
  };
}

/** The `metadata` query of a list: `k=v&k2=v2`, itself URL-encoded once more by the SDK. */
export function parseMetadataFilter(query: string | undefined): Record<string, string> {
  if (!query) return {};
  const filter: Record<string, string> = {};
  for (const [key, value] of new URLSearchParams(query)) filter[key] = value;
  return filter;
}

/** Page tokens are the index of the next item in the list ordered by creation, opaque to clients. */
export function pageOf<T>(items: T[], limit: number, nextToken: string | undefined): { page: T[]; next?: string } {
  let start = 0;
  if (nextToken !== undefined) {
    start = Number(Buffer.from(nextToken, 'base64url').toString('utf8'));
    if (!Number.isInteger(start) || start < 0) throw new CapsuleError('invalid_argument', 'nextToken is not a token this server gave out');
  }
  const page = items.slice(start, start + limit);
  const end = start + page.length;
  return end < items.length ? { page, next: Buffer.from(String(end)).toString('base64url') } : { page };
}

function secondsToMs(seconds: number | undefined): number | undefined {
  return seconds === undefined ? undefined : seconds * 1000;
}

function sendE2bError(reply: FastifyReply, status: number, message: string): FastifyReply {
  return reply.code(status).type('application/json').send({ code: status, message });
}

/**
 * Errors of e2b's routes in e2b's shape, `{code, message}`: e2b's code is the
 * HTTP status, so Capsule's stable code leads the message and the hint ends it.
 */
export function e2bErrorHandler(err: FastifyError, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  if (err instanceof CapsuleError)
    return sendE2bError(reply, httpStatusOf(err.code), `${err.code}: ${err.message}${err.hint ? ` (${err.hint})` : ''}`);
  const requestError = requestErrorOf(err);
  if (requestError) return sendE2bError(reply, 400, requestError.message);
  request.log.error({ err }, 'unhandled error');
  return sendE2bError(reply, 500, err instanceof Error ? err.message : String(err));
}

/** A sandbox as e2b sees it: gone once failed or killed. */
export async function liveE2bSandbox(manager: SandboxManager, id: string): Promise<Sandbox> {
  const sandbox = await manager.get(id);
  if (e2bState(sandbox) === undefined) throw new CapsuleError('sandbox_not_found', `sandbox ${id} is ${sandbox.state}`);
  return sandbox;
}

/** e2b's routes; they need e2bErrorHandler in their scope. */
export function e2bRoutes(manager: SandboxManager, tokens: SandboxTokens, sampler: UsageSampler, volumes: Volumes): ApiRoute[] {
  const tags = ['e2b'];
  const live = (id: string) => liveE2bSandbox(manager, id);
  /** e2b's `volumeMounts` of each sandbox: the volumes it was created with, which it holds while it lives. */
  const volumeMountsOf = async (): Promise<(id: string) => E2bVolumeMount[]> => {
    const mounts = await volumes.mountsBySandbox();
    return (id) => (mounts.get(id) ?? []).map((m) => ({ name: m.volume, path: m.mount }));
  };

  const create = async (body: NewSandbox, reply: FastifyReply) => {
    const timeoutMs = secondsToMs(body.timeout);
    const sandbox = await manager.create({
      template: untaggedTemplateName(body.templateID),
      ...(body.metadata ? { metadata: body.metadata } : {}),
      ...(body.envVars ? { env: body.envVars } : {}),
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
      ...(body.autoPause ? { onTimeout: 'pause' as const } : {}),
      ...(body.allow_internet_access !== undefined ? { internet: body.allow_internet_access } : {}),
      ...(body.network?.allowOut || body.network?.denyOut
        ? { egress: { allow: body.network.allowOut ?? [], deny: body.network.denyOut ?? [] } }
        : {}),
      ...(body.volumeMounts ? { volumes: body.volumeMounts.map((mount) => ({ name: mount.name, mount: mount.path })) } : {}),
    });
    if (
      body.volumeMounts &&
      !(await giveFreshVolumesToE2bUser(
        manager,
        sandbox.id,
        body.volumeMounts.map((mount) => mount.path),
      ))
    )
      reply.log.warn({ sandbox: sandbox.id }, `could not give the new volumes to ${E2B_DEFAULT_USER}`);
    return reply.code(201).send(toE2bSandbox(sandbox, tokens));
  };

  const list = async (query: ListQuery, defaultStates: string[], reply: FastifyReply) => {
    const states = query.state ? query.state.split(',') : defaultStates;
    const filter = parseMetadataFilter(query.metadata);
    const matching = (await manager.list(false)).filter((s) => {
      const state = e2bState(s);
      return state !== undefined && states.includes(state) && Object.entries(filter).every(([k, v]) => s.metadata[k] === v);
    });
    const { page, next } = pageOf(matching, query.limit ?? PAGE_LIMIT_MAX, query.nextToken);
    if (next) void reply.header('x-next-token', next);
    const mountsOf = await volumeMountsOf();
    return page.map((sandbox) => toE2bListed(sandbox, mountsOf(sandbox.id)));
  };

  /** Resumes a paused sandbox (201) or extends a running one's timeout (200). */
  const connect = async (id: string, timeoutSeconds: number | undefined, reply: FastifyReply, refuseRunning: boolean) => {
    let sandbox = await live(id);
    let status = 200;
    if (sandbox.state === 'paused') {
      sandbox = await manager.resume(sandbox.id);
      status = 201;
    } else if (refuseRunning) {
      return sendE2bError(reply, 409, `sandbox ${sandbox.id} is already running`);
    }
    if (timeoutSeconds !== undefined) sandbox = await manager.setTimeout(sandbox.id, timeoutSeconds * 1000);
    return reply.code(status).send(toE2bSandbox(sandbox, tokens));
  };

  return [
    ...['/sandboxes', '/v2/sandboxes'].map((url) =>
      route<{ Body: NewSandbox }>({
        method: 'POST',
        url,
        schema: { tags, body: NewSandbox },
        handler: async (request, reply) => await create(request.body, reply),
      }),
    ),

    route<{ Querystring: ListQuery }>({
      method: 'GET',
      url: '/sandboxes',
      schema: { tags, querystring: ListQuery },
      handler: async (request, reply) => await list(request.query, ['running'], reply),
    }),
    route<{ Querystring: ListQuery }>({
      method: 'GET',
      url: '/v2/sandboxes',
      schema: { tags, querystring: ListQuery },
      handler: async (request, reply) => await list(request.query, ['running', 'paused'], reply),
    }),

    route<{ Params: IdParams }>({
      method: 'GET',
      url: '/sandboxes/:sandboxID',
      schema: { tags, params: IdParams },
      handler: async (request) => {
        const sandbox = await live(request.params.sandboxID);
        return {
          ...toE2bListed(sandbox, (await volumeMountsOf())(sandbox.id)),
          envdAccessToken: tokens.tokenFor(sandbox.id),
          trafficAccessToken: sandbox.trafficAccessToken,
          domain: sandbox.domain,
          allowInternetAccess: sandbox.network.internet,
        };
      },
    }),

    route<{ Params: IdParams; Body: Static<typeof NetworkBody> }>({
      method: 'PUT',
      url: '/sandboxes/:sandboxID/network',
      schema: { tags, params: IdParams, body: NetworkBody },
      handler: async (request, reply) => {
        const sandbox = await live(request.params.sandboxID);
        const body = request.body ?? {};
        await manager.setNetwork(sandbox.id, {
          internet: body.allow_internet_access ?? true,
          egress: { allow: body.allowOut ?? [], deny: body.denyOut ?? [] },
        });
        return reply.code(204).send();
      },
    }),

    // The points of the history that have the guest's view; with sampling off, the guest's current view only.
    route<{ Params: IdParams; Querystring: { start?: string; end?: string } }>({
      method: 'GET',
      url: '/sandboxes/:sandboxID/metrics',
      schema: { tags, params: IdParams, querystring: MetricsRangeQuery },
      handler: async (request) => {
        const window = parseMetricsRange(request.query, Date.now(), sampler.retentionMs);
        const sandbox = await live(request.params.sandboxID);
        if (sampler.intervalMs === 0) {
          const { agent } = await manager.agentOf(sandbox.id);
          return [toE2bMetric(new Date().toISOString(), guestMetricsOf(await agent.getJson('/metrics', METRICS_TIMEOUT_MS)))];
        }
        return sampler
          .history(sandbox.id, window.startMs, window.endMs)
          .flatMap((point) => (point.guest ? [toE2bMetric(point.timestamp, point.guest)] : []));
      },
    }),

    route<{ Params: IdParams }>({
      method: 'DELETE',
      url: '/sandboxes/:sandboxID',
      schema: { tags, params: IdParams },
      handler: async (request, reply) => {
        await live(request.params.sandboxID);
        await manager.remove(request.params.sandboxID);
        return reply.code(204).send();
      },
    }),

    route<{ Params: IdParams; Body: Static<typeof TimeoutBody> }>({
      method: 'POST',
      url: '/sandboxes/:sandboxID/timeout',
      schema: { tags, params: IdParams, body: TimeoutBody },
      handler: async (request, reply) => {
        await manager.setTimeout(request.params.sandboxID, request.body.timeout * 1000);
        return reply.code(204).send();
      },
    }),

    route<{ Params: IdParams; Body: Static<typeof RefreshBody> }>({
      method: 'POST',
      url: '/sandboxes/:sandboxID/refreshes',
      schema: { tags, params: IdParams, body: RefreshBody },
      handler: async (request, reply) => {
        const duration = request.body?.duration;
        if (duration === undefined) await manager.keepAlive(request.params.sandboxID);
        else await manager.setTimeout(request.params.sandboxID, duration * 1000);
        return reply.code(204).send();
      },
    }),

    route<{ Params: IdParams }>({
      method: 'POST',
      url: '/sandboxes/:sandboxID/pause',
      schema: { tags, params: IdParams },
      handler: async (request, reply) => {
        const sandbox = await live(request.params.sandboxID);
        if (sandbox.state === 'paused') return sendE2bError(reply, 409, `sandbox ${sandbox.id} is already paused`);
        await manager.pause(sandbox.id);
        return reply.code(204).send();
      },
    }),

    ...['/sandboxes/:sandboxID/connect', '/v2/sandboxes/:sandboxID/connect'].map((url) =>
      route<{ Params: IdParams; Body: Static<typeof ConnectBody> }>({
        method: 'POST',
        url,
        schema: { tags, params: IdParams, body: ConnectBody },
        handler: async (request, reply) => await connect(request.params.sandboxID, request.body?.timeout, reply, false),
      }),
    ),
    route<{ Params: IdParams; Body: Static<typeof ConnectBody> }>({
      method: 'POST',
      url: '/sandboxes/:sandboxID/resume',
      schema: { tags, params: IdParams, body: ConnectBody },
      handler: async (request, reply) => await connect(request.params.sandboxID, request.body?.timeout, reply, true),
    }),

    route<{ Params: IdParams; Body: Static<typeof ForkBody> }>({
      method: 'POST',
      url: '/sandboxes/:sandboxID/fork',
      schema: { tags, params: IdParams, body: ForkBody },
      handler: async (request, reply) => {
        const source = await live(request.params.sandboxID);
        const forks = await manager.fork(source.id, request.body?.count ?? 1);
        const timeoutMs = secondsToMs(request.body?.timeout);
        const results = [];
        for (const fork of forks) {
          const sandbox = timeoutMs === undefined ? fork : await manager.setTimeout(fork.id, timeoutMs);
          results.push({ sandbox: toE2bSandbox(sandbox, tokens) });
        }
        return reply.code(201).send(results);
      },
    }),
  ];
}
