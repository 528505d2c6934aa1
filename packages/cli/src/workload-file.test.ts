import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readWorkloadFile } from './commands/workloads.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'workload-file-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function write(name: string, text: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return file;
}

describe('reading a workload file', () => {
  it("reads the README's example as written: two documents, both valid", () => {
    const readme = fs.readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
    const example = /### Workloads[\s\S]*?```yaml\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(example).toBeDefined();
    const documents = readWorkloadFile(write('readme.yaml', example ?? ''));
    expect(documents.map((d) => (d as { name: string }).name)).toEqual(['web', 'ticker']);
  });

  it('reads JSON, and skips an empty trailing document', () => {
    const documents = readWorkloadFile(write('one.json', '{"kind": "Workload", "name": "a", "template": "base"}\n---\n'));
    expect(documents).toHaveLength(1);
  });

  it('refuses YAML it cannot parse, naming the document', () => {
    expect(() => readWorkloadFile(write('bad.yaml', 'kind: Workload\n---\nname: [unclosed\n'))).toThrow(/document 2 is not valid YAML/);
  });

  it('refuses a document the spec checker refuses, naming the file, document and field', () => {
    const file = write('unknown.yaml', 'kind: Workload\nname: a\ntemplate: base\nreplica: 2\n');
    expect(() => readWorkloadFile(file)).toThrow(`${file}:\ndocument 1 (a): replica: unknown field`);
  });
});
