// The agent's HTTP/2 server: envd's Connect services plus its plain-HTTP
// routes, independent of the transport (virtio-serial port or unix socket)
// that feeds it connections. Must never let one bad connection or request
// take the process down: every session and request error is logged and
// contained.

import http2 from 'node:http2';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import type { ServiceImpl } from '@connectrpc/connect';
import { Filesystem, Process, agentHttpPaths } from '@capsule/protocol/agent';
import { createLogger, describeError } from './log.js';

const log = createLogger('server');

/** Largest request message accepted (stdin chunks are the big ones). */
export const MAX_REQUEST_MESSAGE_BYTES = 16 * 1024 * 1024;

export interface AgentServerOptions {
  processService: ServiceImpl<typeof Process>;
}

type NodeHandler = ReturnType<typeof connectNodeAdapter>;

const servePlainHttp: NodeHandler = (request, response) => {
  const path = new URL(request.url ?? '/', 'http://agent').pathname;
  if (path === agentHttpPaths.health) {
    if (request.method === 'GET' || request.method === 'HEAD') {
      response.writeHead(204);
      response.end();
    } else {
      response.writeHead(405, { allow: 'GET, HEAD' });
      response.end();
    }
    return;
  }
  response.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
  response.end(`no route for ${request.method ?? 'GET'} ${path}\n`);
};

export function createAgentServer(options: AgentServerOptions): http2.Http2Server {
  const handleConnect = connectNodeAdapter({
    routes(router) {
      router.service(Process, options.processService);
      // Registered without methods: every Filesystem call answers
      // Unimplemented until the filesystem service lands.
      router.service(Filesystem, {});
    },
    fallback: servePlainHttp,
    readMaxBytes: MAX_REQUEST_MESSAGE_BYTES,
    // The link is a local virtio port: compressing costs guest CPU (slow
    // under TCG) and saves nothing. envd's clients do not compress requests.
    acceptCompression: [],
  });

  const server = http2.createServer((request, response) => {
    try {
      handleConnect(request, response);
    } catch (error) {
      log.error(`${request.method} ${request.url} failed`, error);
      if (!response.headersSent) response.writeHead(500);
      response.end();
    }
  });
  server.on('session', (session) => {
    log.debug('HTTP/2 session opened');
    session.on('close', () => log.debug('HTTP/2 session closed'));
  });
  // Node forwards every session's 'error' here. A peer that goes away is
  // routine (the daemon restarts, the host socket closes), not a warning.
  server.on('sessionError', (error: NodeJS.ErrnoException) => {
    if (error.code === 'ECONNRESET' || error.code === 'EPIPE') log.debug(`HTTP/2 peer went away: ${error.code}`);
    else log.warn(`HTTP/2 session error: ${describeError(error)}`);
  });
  server.on('error', (error) => log.error('HTTP/2 server error', error));
  return server;
}
