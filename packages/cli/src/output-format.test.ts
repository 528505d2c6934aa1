import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { addOutputOptions, compileTemplate, formatOutput, toYaml } from './output-format.js';

const sandboxes = [
  { id: 'sb_1', name: 'web', state: 'running', metadata: { team: 'a' }, ports: [] },
  { id: 'sb_2', name: null, state: 'paused', metadata: {}, ports: [{ hostPort: 8080, guestPort: 80 }] },
];
const views = { table: () => 'TABLE\n', wide: () => 'WIDE\n' };

describe('output formats', () => {
  it('prints the human view by default, the wide one on -o wide', () => {
    expect(formatOutput(sandboxes, {}, views)).toBe('TABLE\n');
    expect(formatOutput(sandboxes, { output: 'wide' }, views)).toBe('WIDE\n');
    expect(formatOutput(sandboxes, { output: 'wide' }, { table: () => 'ONLY\n' })).toBe('ONLY\n');
  });

  it('prints the objects unchanged as JSON on -o json and on the older --json', () => {
    expect(JSON.parse(formatOutput(sandboxes, { output: 'json' }, views))).toEqual(sandboxes);
    expect(formatOutput(sandboxes, { json: true }, views)).toBe(formatOutput(sandboxes, { output: 'json' }, views));
  });

  it('writes YAML with block lists and maps, quoting what YAML would misread', () => {
    expect(formatOutput(sandboxes, { output: 'yaml' }, views)).toBe(
      [
        '- id: sb_1',
        '  name: web',
        '  state: running',
        '  metadata:',
        '    team: a',
        '  ports: []',
        '- id: sb_2',
        '  name: null',
        '  state: paused',
        '  metadata: {}',
        '  ports:',
        '    - hostPort: 8080',
        '      guestPort: 80',
        '',
      ].join('\n'),
    );
    expect(toYaml({ a: 'true', b: '8080', c: '127.0.0.1:80', d: 'two words', e: 'x: y', f: '' })).toBe(
      'a: "true"\nb: "8080"\nc: "127.0.0.1:80"\nd: two words\ne: "x: y"\nf: ""\n',
    );
    expect(toYaml([[1, 2], []])).toBe('- - 1\n  - 2\n- []\n');
  });

  it('renders a docker-style template per object, fields matched case-insensitively', () => {
    expect(formatOutput(sandboxes, { format: '{{.ID}}\\t{{.name}}' }, views)).toBe('sb_1\tweb\nsb_2\t<none>\n');
    expect(formatOutput(sandboxes[0], { format: '{{json .metadata}} {{.metadata.team}} {{.missing}}' }, views)).toBe(
      '{"team":"a"} a <none>\n',
    );
    expect(compileTemplate('{{.}}')('x')).toBe('x');
    expect(() => compileTemplate('{{.id')).toThrow(/without its }}/);
    expect(() => compileTemplate('{{range .ports}}')).toThrow(/is not {{.field}}/);
  });

  it('refuses --json together with -o or --format', () => {
    const parse = (...args: string[]) =>
      addOutputOptions(new Command('ls'), { wide: true })
        .exitOverride()
        .configureOutput({ writeErr: () => undefined })
        .parse(args, { from: 'user' })
        .opts();
    expect(parse('-o', 'wide')).toEqual({ output: 'wide' });
    expect(() => parse('--json', '-o', 'yaml')).toThrow(/cannot be used with/);
    expect(() => parse('-o', 'xml')).toThrow(/Allowed choices are json, yaml, wide/);
  });
});
