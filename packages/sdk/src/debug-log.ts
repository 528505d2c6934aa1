// DEBUG-style namespaced tracing to stderr (`DEBUG=capsule:http`, `DEBUG=capsule:*`).
// Off unless asked for; it must never write to stdout, which belongs to the caller.

function namespaceEnabled(namespace: string, pattern: string | undefined): boolean {
  if (!pattern) return false;
  return pattern.split(/[\s,]+/).some((entry) => {
    if (!entry) return false;
    if (entry.endsWith('*')) return namespace.startsWith(entry.slice(0, -1));
    return entry === namespace;
  });
}

export type DebugLog = ((message: string) => void) & { enabled: boolean };

export function debugLog(namespace: string): DebugLog {
  const enabled = namespaceEnabled(namespace, process.env['DEBUG']);
  const log = (message: string) => {
    if (enabled) process.stderr.write(`${namespace} ${message}\n`);
  };
  return Object.assign(log, { enabled });
}
