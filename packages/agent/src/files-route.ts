// The plain-HTTP `/files` route of envd: GET (and HEAD) downloads, POST
// uploads, with the user and path rules both share. Errors leave as envd's
// JSON `{ code, message }` with its statuses. Must never answer with a stack.

import type { AgentDefaults } from './agent-defaults.js';
import type { BulkPort } from './bulk-port.js';
import { serveFileDownload } from './file-download.js';
import { serveFileUpload } from './file-upload.js';
import { parseFilesRequest } from './files-request.js';
import { HttpError, sendJsonError, type PlainHttpHandler } from './plain-http.js';
import { PASSWD_PATH } from './users.js';

export interface FilesRouteOptions {
  defaults: AgentDefaults;
  passwdPath?: string;
  /** The VM's bulk port, for the large transfers the daemon moves there. */
  bulkPort?: BulkPort | undefined;
}

export function createFilesRoute(options: FilesRouteOptions): PlainHttpHandler {
  const passwdPath = options.passwdPath ?? PASSWD_PATH;
  return async (request, response) => {
    const method = request.method;
    if (method !== 'GET' && method !== 'HEAD' && method !== 'POST') {
      response.writeHead(405, { allow: 'GET, HEAD, POST' });
      response.end();
      return;
    }
    try {
      const files = parseFilesRequest(request, options.defaults, passwdPath);
      if (method === 'POST') await serveFileUpload(request, response, files, options.defaults, options.bulkPort);
      else await serveFileDownload(request, response, files, options.defaults, options.bulkPort);
    } catch (error) {
      if (!(error instanceof HttpError)) throw error;
      if (response.stream.destroyed) return; // the client is gone: nobody to tell
      sendJsonError(request, response, error.status, error.message);
    }
  };
}
