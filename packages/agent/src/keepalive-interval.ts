// How long a server stream (process Start/Connect, WatchDir) may stay quiet
// before it sends a KeepAlive: the client's `keepalive-ping-interval` header
// in seconds, as envd reads it. Must never return a value that spins or overflows a timer.

/** envd's default when the client names no keepalive interval. */
export const DEFAULT_KEEPALIVE_MS = 90_000;

export function keepaliveIntervalMs(requestHeader: Headers): number {
  const seconds = Number(requestHeader.get('keepalive-ping-interval'));
  return Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds, 86_400) * 1000 : DEFAULT_KEEPALIVE_MS;
}
