// POST /capsule/tunnel?port=N (Capsule's, not envd's): relays one TCP
// connection to a port on the guest's loopback over one HTTP/2 stream, so that
// the host reaches services inside the sandbox without any network device.
// Never holds more than `maxTunnels` connections and never buffers without
// flow control: each side is paused while the other cannot take more.

import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { constants as h2 } from 'node:http2';
import net from 'node:net';
import { maxAgentTunnels, tunnelErrorHeader } from '@capsule/protocol/agent';
import { createLogger } from './log.js';
import { discardRestOfBody, type PlainHttpHandler } from './plain-http.js';

const log = createLogger('tunnel');

/** How long connecting to a guest port may take; loopback answers at once unless the listener's backlog is full. */
const CONNECT_TIMEOUT_MS = 10_000;

export interface TunnelRouteOptions {
  maxTunnels?: number;
  connectTimeoutMs?: number;
}

type TunnelFailure = 'refused' | 'limit' | 'bad_port' | 'failed';

function refuse(request: Http2ServerRequest, response: Http2ServerResponse, status: number, kind: TunnelFailure, message: string): void {
  const body = JSON.stringify({ code: status, message });
  response.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    [tunnelErrorHeader]: kind,
  });
  response.end(body);
  discardRestOfBody(request);
}

/** The port of `?port=N`, 1-65535, or undefined. */
export function tunnelPort(url: string | undefined): number | undefined {
  const raw = new URL(url ?? '/', 'http://agent').searchParams.get('port');
  if (raw === null || !/^\d{1,5}$/.test(raw)) return undefined;
  const port = Number(raw);
  return port >= 1 && port <= 65535 ? port : undefined;
}

/**
 * Bytes read from the service at a time. Under TCG each chunk costs the guest
 * a trip through the HTTP/2 session and a port write, far more than its
 * bytes; the socket's default 64 KiB reads made that cost the limit.
 */
const READ_CHUNK_BYTES = 1024 * 1024;

/** A connected socket whose reads go to `onData` (a copy each), paused while it returns false. */
type ReadSink = { onData: (chunk: Buffer) => boolean };

/**
 * Connects to `port` on 127.0.0.1, then on ::1 when IPv4 is refused (a
 * service bound to `localhost` may have only the IPv6 loopback).
 */
let readBuffer: Buffer | undefined;

function connectLoopback(port: number, timeoutMs: number, sink: ReadSink): Promise<net.Socket> {
  // One read buffer for every tunnel: each read is copied out before the callback returns.
  readBuffer ??= Buffer.allocUnsafe(READ_CHUNK_BYTES);
  const buffer = readBuffer;
  const attempt = (host: string) =>
    new Promise<net.Socket>((resolve, reject) => {
      // Half-open allowed: the host may finish sending (e.g. an upload) while the service still answers.
      const socket = net.connect({
        host,
        port,
        allowHalfOpen: true,
        onread: { buffer, callback: (bytes: number, into: Uint8Array) => sink.onData(Buffer.from(into.subarray(0, bytes))) },
      });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(Object.assign(new Error(`connecting to ${host}:${port} timed out after ${timeoutMs} ms`), { code: 'ETIMEDOUT' }));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeListener('error', reject);
        resolve(socket);
      });
      socket.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
  return attempt('127.0.0.1').catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'ECONNREFUSED') throw error;
    return attempt('::1').catch(() => {
      throw error;
    });
  });
}

export function createTunnelRoute(options: TunnelRouteOptions = {}): PlainHttpHandler {
  const maxTunnels = options.maxTunnels ?? maxAgentTunnels;
  const connectTimeoutMs = options.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
  let open = 0;

  return async (request, response) => {
    if (request.method !== 'POST') {
      response.writeHead(405, { allow: 'POST' });
      response.end();
      discardRestOfBody(request);
      return;
    }
    const port = tunnelPort(request.url);
    if (port === undefined) return refuse(request, response, 400, 'bad_port', 'port must be a whole number from 1 to 65535');
    if (open >= maxTunnels) return refuse(request, response, 429, 'limit', `the agent already holds ${maxTunnels} tunnels`);
    open++;
    let released = false;
    const release = () => {
      if (!released) {
        released = true;
        open--;
      }
    };
    // The host may give up while we connect: then the connection is dropped as soon as it is made.
    request.stream.once('close', release);

    // The service's bytes go straight to the HTTP/2 stream; reading pauses while the host is behind (flow control).
    const out = response.stream;
    let socket: net.Socket | undefined;
    const sink: ReadSink = {
      onData: (chunk) => {
        if (out.destroyed) return false;
        if (!response.headersSent) response.writeHead(200, { 'cache-control': 'no-store' });
        if (out.write(chunk)) return true;
        out.once('drain', () => socket?.resume());
        return false;
      },
    };
    try {
      socket = await connectLoopback(port, connectTimeoutMs, sink);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (request.stream.destroyed) return release();
      release();
      if (code === 'ECONNREFUSED') return refuse(request, response, 502, 'refused', `nothing listens on port ${port} in the sandbox`);
      if (code === 'ETIMEDOUT')
        return refuse(request, response, 504, 'failed', `port ${port} accepted no connection within ${connectTimeoutMs} ms`);
      return refuse(request, response, 502, 'failed', `connecting to port ${port} failed: ${(error as Error).message}`);
    }
    if (request.stream.destroyed) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    log.debug(`tunnel to port ${port} open (${open} open)`);
    if (!response.headersSent) response.writeHead(200, { 'cache-control': 'no-store' });

    // A reset on either side resets the other, so the far end sees a failure rather than a clean end.
    socket.on('error', (error) => {
      log.debug(`tunnel to port ${port}: ${error.message}`);
      if (!request.stream.destroyed) request.stream.close(h2.NGHTTP2_CANCEL);
    });
    const connected = socket;
    request.stream.once('close', () => connected.destroy());
    request.stream.on('error', () => connected.destroy());
    connected.once('end', () => out.end());
    // pipe() carries backpressure toward the service (the socket's buffer); the sink above toward the host.
    request.pipe(connected);
  };
}
