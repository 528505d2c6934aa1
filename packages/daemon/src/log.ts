// Structured logs for the daemon (pino, to stderr). Child processes and wire
// traces log under their own `component` so they can be filtered.
import { destination, pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string): Logger {
  return pino({ level, base: { pid: process.pid } }, destination(2));
}

/** A logger that drops everything, for unit tests and one-shot tools. */
export const silentLogger: Logger = pino({ level: 'silent' });
