// What GET and POST /files share: the user (the `username` query parameter
// as envd has it, else the Basic auth header, else the default user) and the
// target path resolved for that user. Errors are HttpErrors with envd's
// statuses (401 unknown user, 400 bad path). Must never trust an unresolved name.

import type { Http2ServerRequest } from 'node:http2';
import type { AgentDefaults } from './agent-defaults.js';
import { HttpError } from './plain-http.js';
import { expandAndResolvePath, InvalidPathError } from './user-path.js';
import { lookupUser, usernameFromAuthorization, type UnixUser } from './users.js';

/** The query string is the only unbounded part of a /files request line. */
const MAX_QUERY_BYTES = 16 * 1024;

export interface FilesRequest {
  user: UnixUser;
  /** The `path` parameter as sent (undefined when absent). */
  rawPath: string | undefined;
  query: URLSearchParams;
}

export function parseFilesRequest(request: Http2ServerRequest, defaults: AgentDefaults, passwdPath: string): FilesRequest {
  const target = request.url ?? '/';
  const queryStart = target.indexOf('?');
  const queryText = queryStart === -1 ? '' : target.slice(queryStart + 1);
  if (queryText.length > MAX_QUERY_BYTES) throw new HttpError(400, `query string is longer than ${MAX_QUERY_BYTES} bytes`);
  const query = new URLSearchParams(queryText);
  const name = query.get('username') ?? usernameFromAuthorization(request.headers.authorization) ?? defaults.user;
  const user = lookupUser(name, passwdPath);
  if (!user) throw new HttpError(401, `error looking up user '${name}': unknown user ${name}`);
  return { user, rawPath: query.get('path') ?? undefined, query };
}

export function resolveFilesPath(path: string, user: UnixUser, defaults: AgentDefaults): string {
  try {
    return expandAndResolvePath(path, user, defaults.workdir);
  } catch (error) {
    if (error instanceof InvalidPathError) {
      throw new HttpError(400, `error expanding and resolving path '${path.slice(0, 256)}': ${error.message}`);
    }
    throw error;
  }
}
