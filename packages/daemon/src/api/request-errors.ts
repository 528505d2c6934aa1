// What the HTTP layers (Fastify, Node's parser) say about a malformed request,
// as the daemon's own error: a client's mistake is always invalid_argument
// with a hint, never an `internal` 500. It must never turn a server fault into
// a 4xx: only errors that carry a 4xx status of their own are the client's.
import { CapsuleError } from '../errors.js';

/** A framework error that blames the request (schema, body syntax, media type, size), as invalid_argument; undefined for anything else. */
export function requestErrorOf(err: unknown): CapsuleError | undefined {
  const e = err as { validation?: unknown; statusCode?: unknown; message?: unknown } | undefined;
  const status = typeof e?.statusCode === 'number' ? e.statusCode : undefined;
  if (!e || (!e.validation && (status === undefined || status < 400 || status > 499))) return undefined;
  const message = status === 413 ? 'the request body is too large' : String(e.message ?? 'the request is malformed').slice(0, 500);
  return new CapsuleError('invalid_argument', message, {
    hint: status === 415 ? 'send the body as application/json' : 'see /openapi.json for the request schema',
  });
}

/** The daemon's error an error answers as: a CapsuleError as it is, a request's fault as invalid_argument; undefined for a bug (answered `internal`). */
export function capsuleErrorOf(err: unknown): CapsuleError | undefined {
  return err instanceof CapsuleError ? err : requestErrorOf(err);
}
