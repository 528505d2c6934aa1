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

export function filterSandboxes(sandboxes: readonly Sandbox[], filters: SandboxFilters): Sandbox[] {
  const conditions = Object.entries(filters) as [SandboxFilterKey, string[]][];
  return sandboxes.filter((sandbox) => conditions.every(([key, values]) => values.some((value) => matchesOne(sandbox, key, value))));
}
