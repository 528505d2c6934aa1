// The one way a REST route is declared: an entry of a route table (method,
// URL pattern, schema, handler) that a resource's module returns and server.ts
// hands to Fastify. Route modules only describe routes; they never register
// them, listen, or check credentials (server.ts does, for every route alike).
import { ErrorResponse } from '@capsule/protocol';
import type {
  FastifyInstance,
  RawReplyDefaultExpression,
  RawRequestDefaultExpression,
  RawServerDefault,
  RouteGenericInterface,
  RouteOptions,
} from 'fastify';

export type ApiRoute = RouteOptions;

/** A route table entry; `Types` types its handler's params, query and body, which its schema checks before the handler runs. */
export function route<Types extends RouteGenericInterface = RouteGenericInterface>(
  options: RouteOptions<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression, Types>,
): ApiRoute {
  // A table holds routes of different Types; those only type the handler for its author (its schema is what Fastify checks).
  return options as unknown as ApiRoute;
}

/** Hands a route table to Fastify (or to one of its scopes), in the table's order, which is the OpenAPI document's. */
export function addRoutes(app: FastifyInstance, routes: ApiRoute[]): void {
  for (const apiRoute of routes) app.route(apiRoute);
}

/** A route's `:id` (a sandbox's id or name, an API key's id). */
export const IdParams = {
  type: 'object',
  properties: { id: { type: 'string', minLength: 1, maxLength: 128 } },
  required: ['id'],
} as const;

export const errorResponses = { 400: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse, 500: ErrorResponse, 502: ErrorResponse };

/** The error answers of the image and template routes: those and 422, an image or a build step that is at fault (image_invalid, build_step_failed...). */
export const imageErrorResponses = { ...errorResponses, 422: ErrorResponse };
