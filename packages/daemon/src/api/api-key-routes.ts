// REST routes of API keys, the credentials TCP clients present. Keys are
// managed by the local user only (the unix socket): a key must never be able
// to mint, list or remove keys.
import type { IncomingMessage } from 'node:http';
import { ApiKeyList, CreateApiKeyRequest, CreatedApiKey } from '@capsule/protocol';
import { CapsuleError } from '../errors.js';
import type { ApiKeys } from './credentials.js';
import { errorResponses, IdParams, route, type ApiRoute } from './routes.js';

/** `viaTcp` tells a TCP client's request from a local one's. */
export function apiKeyRoutes(apiKeys: ApiKeys, viaTcp: (req: IncomingMessage) => boolean): ApiRoute[] {
  const localOnly = (request: { raw: IncomingMessage }) => {
    if (viaTcp(request.raw))
      throw new CapsuleError('permission_denied', 'API keys are managed through the unix socket only', {
        hint: 'run `capsule apikey` on the host',
      });
  };
  return [
    route({
      method: 'GET',
      url: '/v1/api-keys',
      schema: { response: { 200: ApiKeyList, ...errorResponses } },
      handler: async (request) => {
        localOnly(request);
        return { keys: await apiKeys.list() };
      },
    }),
    route<{ Body: CreateApiKeyRequest }>({
      method: 'POST',
      url: '/v1/api-keys',
      schema: {
        body: CreateApiKeyRequest,
        description: 'Creates an API key for TCP clients; the key is in this answer only.',
        response: { 201: CreatedApiKey, ...errorResponses },
      },
      handler: async (request, reply) => {
        localOnly(request);
        return reply.code(201).send(await apiKeys.create(request.body.name, request.body.key));
      },
    }),
    route<{ Params: { id: string } }>({
      method: 'DELETE',
      url: '/v1/api-keys/:id',
      schema: { params: IdParams, response: { ...errorResponses } },
      handler: async (request, reply) => {
        localOnly(request);
        await apiKeys.remove(request.params.id);
        return reply.code(204).send();
      },
    }),
  ];
}
