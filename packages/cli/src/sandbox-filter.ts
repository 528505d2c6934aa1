// `capsule ls --filter KEY=VALUE`, as docker reads it: filters on one key are
// alternatives (state=running or state=paused), filters on different keys must
// all hold. Applied here to the list the daemon returned; it never hides an
// unknown key (that is a usage error, not an empty list).
import type { Sandbox } from '@capsule/protocol';
import { InvalidArgumentError } from 'commander';

const FILTER_KEYS = ['id', 'name', 'state', 'template', 'label'] as const;
export type SandboxFilterKey = (typeof FILTER_KEYS)[number];
export type SandboxFilters = Partial<Record<SandboxFilterKey, string[]>>;

/** commander's collector for a repeatable `--filter`. */
export function collectFilter(text: string, filters: SandboxFilters = {}): SandboxFilters {
  const equals = text.indexOf('=');
  const key = text.slice(0, equals) as SandboxFilterKey;
  const value = text.slice(equals + 1);
  if (equals <= 0 || value === '' || !FILTER_KEYS.includes(key))
    throw new InvalidArgumentError(`expected KEY=VALUE with KEY one of ${FILTER_KEYS.join(', ')} (label=K or label=K=V)`);
  return { ...filters, [key]: [...(filters[key] ?? []), value] };
}

function matchesOne(sandbox: Sandbox, key: SandboxFilterKey, value: string): boolean {
  switch (key) {
    case 'id':
      return sandbox.id.startsWith(value);
    case 'name':
      return sandbox.name === value;
    case 'state':
      return sandbox.state === value;
    case 'template':
      return sandbox.template === value;
    case 'label': {
      // The sandbox's metadata are its labels: `label=team` asks for the key, `label=team=web` for its value too.
      const equals = value.indexOf('=');
      if (equals === -1) return Object.hasOwn(sandbox.metadata, value);
      const labelKey = value.slice(0, equals);
      return Object.hasOwn(sandbox.metadata, labelKey) && sandbox.metadata[labelKey] === value.slice(equals + 1);
    }
  }
}

/** commander's collector for `-m K=V`, docker's shorthand for a label filter. */
export function collectLabelFilter(text: string, filters: SandboxFilters = {}): SandboxFilters {
  if (!text.includes('=')) throw new InvalidArgumentError('expected KEY=VALUE, a metadata entry');
  return collectFilter(`label=${text}`, filters);
}

/** Both filter options' conditions in one: a key's values from either are alternatives. */
export function mergeFilters(...sets: (SandboxFilters | undefined)[]): SandboxFilters {
  const merged: SandboxFilters = {};
  for (const set of sets)
    for (const [key, values] of Object.entries(set ?? {}) as [SandboxFilterKey, string[]][])
      merged[key] = [...(merged[key] ?? []), ...values];
  return merged;
}

export function parseLimit(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a whole number of at least 1');
  return n;
}

/** The `limit` sandboxes created last, newest first, as `docker ps -n` lists; all of them, in the order given, without a limit. */
export function lastCreated(sandboxes: readonly Sandbox[], limit: number | undefined): Sandbox[] {
  if (limit === undefined) return [...sandboxes];
  return [...sandboxes].sort((a, b) => b.createdAt.localeCompare(a.createdAt)).slice(0, limit);
}

export function filterSandboxes(sandboxes: readonly Sandbox[], filters: SandboxFilters): Sandbox[] {
  const conditions = Object.entries(filters) as [SandboxFilterKey, string[]][];
  return sandboxes.filter((sandbox) => conditions.every(([key, values]) => values.some((value) => matchesOne(sandbox, key, value))));
}
