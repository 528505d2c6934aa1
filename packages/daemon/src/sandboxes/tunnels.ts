// Tunnels to ports inside sandboxes: one HTTP/2 stream on the sandbox's agent
// channel per TCP connection, so ports work without any guest network device.
// Every user of a port (the HTTP proxy, port-forward, published ports) opens
// its tunnels here, which bounds how many one sandbox holds at once.
import type { Duplex, Readable } from 'node:stream';
import type { AgentClient } from '../agent/client.js';
import { CapsuleError } from '../errors.js';

/** Tunnels one sandbox may hold open at once (the agent has its own, higher limit). */
export const MAX_TUNNELS_PER_SANDBOX = 256;
/** How long the agent may take to connect to the port. */
const OPEN_TIMEOUT_MS = 10_000;

export type AgentLookup = (idOrName: string) => Promise<{ id: string; agent: AgentClient }>;

/** A port number as a user or a URL gives it: a whole number from 1 to 65535. */
export function parseGuestPort(value: string | number): number {
  const port = typeof value === 'number' ? value : /^\d{1,5}$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new CapsuleError('invalid_argument', `a port is a whole number from 1 to 65535, got "${String(value).slice(0, 32)}"`);
  }
  return port;
}

export class Tunnels {
  private readonly open = new Map<string, number>();

  constructor(
    private readonly agentOf: AgentLookup,
    private readonly maxPerSandbox = MAX_TUNNELS_PER_SANDBOX,
  ) {}

  /** Tunnels open now to sandbox `id`. */
  openCount(id: string): number {
    return this.open.get(id) ?? 0;
  }

  /**
   * A duplex of a new TCP connection to `port` inside the sandbox. Rejects with
   * sandbox_not_found / sandbox_not_running, too_many_tunnels, or
   * port_not_listening (nothing listens there).
   */
  async connect(idOrName: string, port: number): Promise<{ id: string; stream: Duplex }> {
    const { id, agent } = await this.agentOf(idOrName);
    const count = this.openCount(id);
    if (count >= this.maxPerSandbox) {
      throw new CapsuleError('too_many_tunnels', `sandbox ${id} already has ${count} open connections to its ports`, {
        hint: 'close some connections and retry',
      });
    }
    this.open.set(id, count + 1);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      const left = this.openCount(id) - 1;
      if (left > 0) this.open.set(id, left);
      else this.open.delete(id);
    };
    try {
      const stream = await agent.openTunnel(port, OPEN_TIMEOUT_MS);
      stream.once('close', release);
      if (stream.destroyed) release();
      return { id, stream };
    } catch (err) {
      release();
      throw err;
    }
  }
}

/** How long a tunnel may carry no bytes either way before it is closed. */
export interface TunnelIdleLimits {
  /** Both sides open: a quiet SSH session or WebSocket is normal for a while. */
  idleMs: number;
  /** One side has ended: the other is only finishing, or gone without saying so. */
  halfClosedIdleMs: number;
}

export const defaultTunnelIdleLimits: TunnelIdleLimits = { idleMs: 30 * 60_000, halfClosedIdleMs: 60_000 };

/**
 * Relays a client connection and a tunnel both ways until either closes:
 * pipe() carries backpressure and half-closes; a failure or close on one side
 * ends the other, so neither is left open alone. A tunnel with no bytes
 * either way for its idle limit is closed too, so that a peer that vanished
 * (or half-closed and left) does not hold it, and its slot, forever.
 */
export function joinToTunnel(client: Duplex, tunnel: Duplex, limits: TunnelIdleLimits = defaultTunnelIdleLimits): void {
  let stopWatching = () => {};
  const closeBoth = () => {
    stopWatching();
    client.destroy();
    tunnel.destroy();
  };
  stopWatching = closeWhenIdle([client, tunnel], limits, closeBoth);
  client.on('error', closeBoth);
  tunnel.on('error', closeBoth);
  client.once('close', closeBoth);
  tunnel.once('close', closeBoth);
  client.pipe(tunnel);
  tunnel.pipe(client);
}

/**
 * Calls `close` once none of `readables` has given a byte for the idle
 * limit: `idleMs` while all are open, `halfClosedIdleMs` once one has ended.
 * Returns the function that stops watching, for the caller to call when it
 * is done (a request's stream may emit 'close' long before its answer is).
 */
export function closeWhenIdle(readables: Readable[], limits: TunnelIdleLimits, close: () => void): () => void {
  let lastActivity = Date.now();
  let halfClosed = false;
  let timer: NodeJS.Timeout | undefined;
  const limit = () => (halfClosed ? limits.halfClosedIdleMs : limits.idleMs);
  const watch = (delayMs: number) => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      const idle = Date.now() - lastActivity;
      if (idle >= limit()) close();
      else watch(limit() - idle);
    }, delayMs);
    timer.unref();
  };
  const touch = () => {
    lastActivity = Date.now();
  };
  const onEnd = () => {
    halfClosed = true;
    watch(Math.max(0, limit() - (Date.now() - lastActivity)));
  };
  for (const readable of readables) {
    // A 'data' listener sees every chunk without changing how the stream flows: its consumer (a pipe) set that already or does next.
    readable.on('data', touch);
    readable.once('end', onEnd);
  }
  watch(limit());
  return () => clearTimeout(timer);
}
