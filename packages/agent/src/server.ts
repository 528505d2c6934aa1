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
import { sendJsonError, type PlainHttpHandler } from './plain-http.js';

const log = createLogger('server');

/** Largest request message accepted (stdin chunks are the big ones). */
export const MAX_REQUEST_MESSAGE_BYTES = 16 * 1024 * 1024;
/** Header block a client may send (the HTTP/2 SETTINGS we advertise); /files paths travel in it. */
export const MAX_HEADER_LIST_BYTES = 64 * 1024;

export interface AgentServerOptions {
  processService: ServiceImpl<typeof Process>;
  /** Without it every Filesystem call answers Unimplemented. */
  filesystemService?: ServiceImpl<typeof Filesystem>;
  /** Plain-HTTP routes by path (/init, /files); /health is built in. */
  routes?: Partial<Record<string, PlainHttpHandler>>;
}

type NodeHandler = ReturnType<typeof connectNodeAdapter>;

function plainHttp(routes: Partial<Record<string, PlainHttpHandler>>): NodeHandler {
  return (nodeRequest, nodeResponse) => {
    // This server only speaks HTTP/2, so the adapter hands us HTTP/2 objects.
    const request = nodeRequest as http2.Http2ServerRequest;
    const response = nodeResponse as http2.Http2ServerResponse;
    const path = new URL(request.url ?? '/', 'http://agent').pathname;
    if (path === agentHttpPaths.health) {
      if (request.method === 'GET' || request.method === 'HEAD') {
        response.writeHead(204, { 'cache-control': 'no-store' });
        response.end();
      } else {
        response.writeHead(405, { allow: 'GET, HEAD' });
        response.end();
      }
      return;
    }
    const route = routes[path];
    if (!route) {
      response.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
      response.end(`no route for ${request.method ?? 'GET'} ${path}\n`);
      return;
    }
    Promise.resolve()
      .then(() => route(request, response))
      .catch((error: unknown) => {
        log.error(`${request.method} ${path} failed`, error);
        if (!response.stream.destroyed) sendJsonError(request, response, 500, describeError(error));
      });
  };
}

/**
 * HTTP/2 flow-control window for what the host sends (uploads, stdin). With
 * the default 64 KiB, every 64 KiB waits a round trip through a guest that is
 * slow under TCG; a large window keeps the virtio port busy instead.
 */
const FLOW_WINDOW_BYTES = 8 * 1024 * 1024;

export function createAgentServer(options: AgentServerOptions): http2.Http2Server {
  const handleConnect = connectNodeAdapter({
    routes(router) {
      router.service(Process, options.processService);
      // Registered without methods when absent: calls answer Unimplemented.
      router.service(Filesystem, options.filesystemService ?? {});
    },
    fallback: plainHttp(options.routes ?? {}),
    readMaxBytes: MAX_REQUEST_MESSAGE_BYTES,
    // The link is a local virtio port: compressing costs guest CPU (slow
    // under TCG) and saves nothing. envd's clients do not compress requests.
    acceptCompression: [],
  });

  const server = http2.createServer(
    { maxHeaderListPairs: 128, settings: { maxHeaderListSize: MAX_HEADER_LIST_BYTES, initialWindowSize: FLOW_WINDOW_BYTES } },
    (request, response) => {
      try {
        handleConnect(request, response);
      } catch (error) {
        log.error(`${request.method} ${request.url} failed`, error);
        if (!response.headersSent) response.writeHead(500);
        response.end();
      }
    },
  );
  server.on('session', (session) => {
    log.debug('HTTP/2 session opened');
    session.setLocalWindowSize(FLOW_WINDOW_BYTES);
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
