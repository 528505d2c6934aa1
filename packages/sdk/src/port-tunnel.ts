// A raw TCP connection to a port inside a sandbox, through capsuled: an HTTP
// Upgrade of /v1/sandboxes/{id}/tunnel/{port} on the daemon's socket, after
// which the connection carries the port's bytes both ways (what
// `capsule port-forward` relays). The daemon's refusals become typed errors.
import type { Duplex } from 'node:stream';
import { PORT_TUNNEL_UPGRADE, TRAFFIC_TOKEN_HEADER } from '@capsule/protocol';
import { agentFor, originOf, requestFunctionFor, tlsConnectionError, type DaemonAddress } from './daemon-tls.js';
import { CapsuleError, ConnectionError, InvalidArgumentError, errorFromWire } from './errors.js';

const MAX_ERROR_BYTES = 64 * 1024;

export interface PortTunnelOptions {
  signal?: AbortSignal;
  /** The sandbox's token, which opens its ports over TCP without an API key. */
  trafficAccessToken?: string;
}

/** Throws invalid_argument unless `port` is a port a sandbox can listen on. */
export function checkGuestPort(port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    throw new InvalidArgumentError('invalid_argument', `a port is from 1 to 65535, got ${port}`);
}

/** Opens a connection to `port` inside sandbox `idOrName`; resolves once the sandbox side is connected. */
export function openPortTunnel(address: DaemonAddress, idOrName: string, port: number, options: PortTunnelOptions = {}): Promise<Duplex> {
  try {
    checkGuestPort(port);
  } catch (err) {
    return Promise.reject(err);
  }
  const target = 'socketPath' in address ? { socketPath: address.socketPath } : { host: address.host, port: address.port };
  const where = 'socketPath' in address ? `unix:${address.socketPath}` : originOf(address);
  return new Promise<Duplex>((resolve, reject) => {
    // A pool of its own, not kept alive: an upgraded connection leaves it at once.
    const agent = agentFor(address, { keepAlive: false });
    const req = requestFunctionFor(address)({
      ...target,
      agent,
      method: 'GET',
      path: `/v1/sandboxes/${encodeURIComponent(idOrName)}/tunnel/${port}`,
      headers: {
        connection: 'Upgrade',
        upgrade: PORT_TUNNEL_UPGRADE,
        ...(address.apiKey !== undefined ? { 'x-api-key': address.apiKey } : {}),
        ...(options.trafficAccessToken !== undefined ? { [TRAFFIC_TOKEN_HEADER]: options.trafficAccessToken } : {}),
      },
      ...(options.signal ? { signal: options.signal } : {}),
    });
    req.once('upgrade', (_response, socket, head) => {
      if (head.length > 0) socket.unshift(head);
      resolve(socket);
    });
    req.once('response', (response) => {
      const chunks: Buffer[] = [];
      let size = 0;
      response.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size <= MAX_ERROR_BYTES) chunks.push(chunk);
      });
      response.once('end', () => {
        const status = response.statusCode ?? 0;
        try {
          const wire = (
            JSON.parse(Buffer.concat(chunks).toString('utf8')) as { error?: { code?: unknown; message?: unknown; hint?: unknown } }
          ).error;
          if (typeof wire?.code === 'string' && typeof wire.message === 'string') {
            return reject(
              errorFromWire(
                { code: wire.code, message: wire.message, hint: typeof wire.hint === 'string' ? wire.hint : undefined },
                status,
              ),
            );
          }
        } catch {
          // Not the daemon's JSON: described below.
        }
        reject(
          new CapsuleError('protocol_error', `capsuled answered the tunnel request with HTTP ${status} instead of switching protocols`, {
            status,
          }),
        );
      });
      response.once('error', (error) =>
        reject(new ConnectionError('connection_lost', `The connection to capsuled at ${where} broke`, { cause: error })),
      );
    });
    req.once('error', (error: NodeJS.ErrnoException) => {
      if (options.signal?.aborted) return reject(options.signal.reason);
      const tlsError = tlsConnectionError(error, where);
      if (tlsError) return reject(tlsError);
      reject(
        new ConnectionError('daemon_unreachable', `Cannot reach capsuled at ${where} (${error.code ?? error.message})`, {
          hint: 'Start the daemon with `capsule daemon start`',
          cause: error,
        }),
      );
    });
    req.end();
  });
}
