// The daemon's own routes: /health (the one route a TCP client may call
// without a key, so a load balancer can probe it), the OpenAPI document, and
// /v1/info. None of them touches a sandbox or says anything secret.
// (The swagger import brings its schema fields, such as hide, and app.swagger() into Fastify's types.)
import type {} from '@fastify/swagger';
import { DaemonInfo } from '@capsule/protocol';
import { route, type ApiRoute } from './routes.js';

export function systemRoutes(info: () => DaemonInfo): ApiRoute[] {
  return [
    route({ method: 'GET', url: '/health', schema: { hide: true }, handler: async () => ({ status: 'ok' }) }),
    route({ method: 'GET', url: '/openapi.json', schema: { hide: true }, handler: async (request) => request.server.swagger() }),
    route({ method: 'GET', url: '/v1/info', schema: { response: { 200: DaemonInfo } }, handler: async () => info() }),
  ];
}
