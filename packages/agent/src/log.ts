// The agent's logging: one line per event on stderr, which the guest console
// carries to the host's serial log. Wire traces are opt-in by namespace
// (`DEBUG=capsule:agent:*`). Logging must never throw and never use stdout.

type Level = 'info' | 'warn' | 'error';

function write(level: Level, namespace: string, message: string): void {
  try {
    process.stderr.write(`${new Date().toISOString()} ${level} [${namespace}] ${message}\n`);
  } catch {
    // stderr gone (console detached): nothing sensible left to do.
  }
}

export function describeError(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string, error?: unknown): void;
  /** Only printed when DEBUG enables this logger's namespace. */
  debug(message: string): void;
}

function debugPatterns(): RegExp[] {
  const spec = process.env.DEBUG ?? '';
  return spec
    .split(/[\s,]+/)
    .filter(Boolean)
    .map((pattern) => new RegExp(`^${pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`));
}

export function createLogger(namespace: string): Logger {
  const fullNamespace = `capsule:agent:${namespace}`;
  const debugEnabled = debugPatterns().some((pattern) => pattern.test(fullNamespace));
  return {
    info: (message) => write('info', namespace, message),
    warn: (message) => write('warn', namespace, message),
    error: (message, error) => write('error', namespace, error === undefined ? message : `${message}: ${describeError(error)}`),
    debug: (message) => {
      if (debugEnabled) write('info', namespace, message);
    },
  };
}
