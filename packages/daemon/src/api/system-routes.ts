// The daemon's own routes: /health (the one route a TCP client may call
// without a key, so a load balancer can probe it), the OpenAPI document,
// /v1/info, /v1/system/config, /v1/system/df and /metrics. None of them changes a sandbox or says anything secret.
// (The swagger import brings its schema fields, such as hide, and app.swagger() into Fastify's types.)
import type {} from '@fastify/swagger';
import { DaemonInfo, DaemonSettingsReport, DiskUsage } from '@capsule/protocol';
import type { ScrapeTimeMetrics } from './metrics.js';
import { route, type ApiRoute } from './routes.js';

export function systemRoutes(
  info: () => DaemonInfo,
  settings: () => DaemonSettingsReport,
  diskUsage: () => Promise<DiskUsage>,
  metrics: ScrapeTimeMetrics,
): ApiRoute[] {
  return [
    route({ method: 'GET', url: '/health', schema: { hide: true }, handler: async () => ({ status: 'ok' }) }),
    route({ method: 'GET', url: '/openapi.json', schema: { hide: true }, handler: async (request) => request.server.swagger() }),
    route({ method: 'GET', url: '/v1/info', schema: { response: { 200: DaemonInfo } }, handler: async () => info() }),
    route({
      method: 'GET',
      url: '/v1/system/config',
      schema: {
        description:
          'Each capsuled setting as this daemon took it at its start: the value, whether it came from the environment, the config file or the default, and what it resolved to where that differs (docs/configuration.md).',
        response: { 200: DaemonSettingsReport },
      },
      handler: async () => settings(),
    }),
    route({
      method: 'GET',
      url: '/v1/system/df',
      schema: {
        description:
          "Disk space the daemon's data takes, by kind: sandboxes, templates, images, volumes and the build cache: cached build steps and e2b's uploaded build files (allocated blocks; a file linked twice counts once).",
        response: { 200: DiskUsage },
      },
      handler: async () => await diskUsage(),
    }),
    route({
      method: 'GET',
      url: '/metrics',
      schema: {
        description:
          "The daemon's metrics in Prometheus' text format: its process, API requests and errors, sandbox operations, warm pools, and each running sandbox's CPU, memory and disk as the host measured them at most one sampling interval ago (see docs/api.md).",
        response: {
          200: { description: 'Prometheus text exposition format 0.0.4', content: { 'text/plain': { schema: { type: 'string' } } } },
        },
      },
      handler: async (_request, reply) => reply.type(metrics.contentType).send(await metrics.scrape()),
    }),
  ];
}
