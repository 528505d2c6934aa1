// How a command that prints daemon objects prints them: its human table or view
// by default, `-o wide` for more columns, `-o json|yaml` for the objects as the
// daemon sent them, `--format '{{.id}}'` for one line per object. One module, so
// every listing spells these flags and their meaning the same way.
// It never decides what a table holds: the commands pass their own views.
import { Option, type Command } from 'commander';
import { InvalidArgumentError } from '@capsule/sdk';

export interface OutputOptions {
  output?: 'json' | 'yaml' | 'wide';
  format?: string;
  /** The `--json` of earlier releases: the same as `-o json`. */
  json?: boolean;
}

/** The human views of one command's result; `wide` defaults to `table`. */
export interface HumanViews {
  table: () => string;
  wide?: () => string;
}

/** Adds `-o, --output`, `--format` and `--json`; `wide` only where the command has a wide view. */
export function addOutputOptions(command: Command, { wide = false }: { wide?: boolean } = {}): Command {
  return command
    .addOption(
      new Option('-o, --output <format>', `print ${wide ? 'more columns (wide), or ' : ''}the daemon's objects as json or yaml`).choices(
        wide ? ['json', 'yaml', 'wide'] : ['json', 'yaml'],
      ),
    )
    .addOption(
      new Option('--format <template>', "print each object through a template: '{{.id}} {{.state}}', '{{json .metadata}}'").conflicts(
        'output',
      ),
    )
    .addOption(new Option('--json', 'the same as -o json').conflicts(['output', 'format']));
}

/** True when the command prints its human view (no -o json|yaml, no --format, no --json). */
export function isHumanOutput(options: OutputOptions): boolean {
  return !options.json && options.format === undefined && (options.output === undefined || options.output === 'wide');
}

export function printOutput(value: unknown, options: OutputOptions, views: HumanViews): void {
  process.stdout.write(formatOutput(value, options, views));
}

export function formatOutput(value: unknown, options: OutputOptions, views: HumanViews): string {
  if (options.format !== undefined) {
    const render = compileTemplate(options.format);
    return (Array.isArray(value) ? value : [value]).map((item) => `${render(item)}\n`).join('');
  }
  if (options.json || options.output === 'json') return `${JSON.stringify(value, null, 2)}\n`;
  if (options.output === 'yaml') return toYaml(value);
  if (options.output === 'wide') return (views.wide ?? views.table)();
  return views.table();
}

/**
 * A docker-style `--format` template: `{{.field}}` (a dotted path, matched
 * case-insensitively, so `{{.ID}}` finds `id`), `{{.}}`, `{{json .path}}`,
 * and `\t` / `\n` as tab and newline. Anything else between braces is an error.
 */
export function compileTemplate(template: string): (value: unknown) => string {
  const text = template.replace(/\\t/g, '\t').replace(/\\n/g, '\n');
  const parts: ((value: unknown) => string)[] = [];
  let rest = text;
  for (let open = rest.indexOf('{{'); open !== -1; open = rest.indexOf('{{')) {
    const close = rest.indexOf('}}', open);
    if (close === -1) throw formatError(template, 'a {{ without its }}');
    const literal = rest.slice(0, open);
    parts.push(() => literal);
    const action = rest.slice(open + 2, close).trim();
    const match = /^(json\s+)?(\.[A-Za-z0-9_.]*)$/.exec(action);
    if (!match) throw formatError(template, `{{${action}}} is not {{.field}} or {{json .field}}`);
    const path = match[2]!.split('.').filter((key) => key !== '');
    const asJson = match[1] !== undefined;
    parts.push((value) => {
      const found = lookUp(value, path);
      if (asJson) return JSON.stringify(found ?? null);
      if (found === undefined || found === null) return '<none>';
      return typeof found === 'object' ? JSON.stringify(found) : String(found);
    });
    rest = rest.slice(close + 2);
  }
  const tail = rest;
  parts.push(() => tail);
  return (value) => parts.map((part) => part(value)).join('');
}

function formatError(template: string, why: string): InvalidArgumentError {
  return new InvalidArgumentError('invalid_argument', `--format '${template}': ${why}`, {
    hint: "e.g. --format '{{.id}}\\t{{.state}}'; see -o json for the field names",
  });
}

function lookUp(value: unknown, path: readonly string[]): unknown {
  let current = value;
  for (const key of path) {
    if (current === null || typeof current !== 'object') return undefined;
    const record = current as Record<string, unknown>;
    const exact = Object.hasOwn(record, key) ? key : Object.keys(record).find((candidate) => candidate.toLowerCase() === key.toLowerCase());
    if (exact === undefined) return undefined;
    current = record[exact];
  }
  return current;
}

/** YAML for JSON-shaped data: block maps and lists, strings quoted only when YAML would read them as something else. */
export function toYaml(value: unknown): string {
  const lines = yamlLines(JSON.parse(JSON.stringify(value ?? null)) as unknown, '');
  return `${lines.join('\n')}\n`;
}

function yamlLines(value: unknown, indent: string): string[] {
  if (Array.isArray(value)) {
    if (value.length === 0) return [`${indent}[]`];
    return value.flatMap((item) => {
      const [first = '', ...more] = yamlLines(item, `${indent}  `);
      return [`${indent}- ${first.slice(indent.length + 2)}`, ...more];
    });
  }
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value);
    if (entries.length === 0) return [`${indent}{}`];
    return entries.flatMap(([key, item]) => {
      const name = `${indent}${yamlScalar(key)}:`;
      if (item !== null && typeof item === 'object' && Object.keys(item).length > 0) return [name, ...yamlLines(item, `${indent}  `)];
      return [`${name} ${yamlLines(item, '')[0]}`];
    });
  }
  return [`${indent}${yamlScalar(value)}`];
}

function yamlScalar(value: unknown): string {
  if (typeof value !== 'string') return JSON.stringify(value);
  // Plain only when it cannot be read back as a number, boolean, null or YAML syntax; JSON's quoting is valid YAML.
  const plain =
    /^[A-Za-z_/][A-Za-z0-9_./@+-]*(?: [A-Za-z0-9_./@+()-]+)*$/.test(value) && !/^(true|false|null|yes|no|on|off|y|n|~)$/i.test(value);
  return plain ? value : JSON.stringify(value);
}
