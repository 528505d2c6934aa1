import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { WorkloadInfo } from '@capsule/sdk';
import { describeWorkload, readWorkloadFile, workloadTable } from './commands/workloads.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'workload-file-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function write(name: string, text: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return file;
}

describe('reading a workload file', () => {
  it("reads the README's example as written: three documents, all valid", () => {
    const readme = fs.readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
    const example = /### Workloads[\s\S]*?```yaml\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(example).toBeDefined();
    const documents = readWorkloadFile(write('readme.yaml', example ?? ''));
    expect(documents.map((d) => (d as { name: string }).name)).toEqual(['web', 'ticker', 'api']);
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

describe('showing a workload of several replicas', () => {
  const at = '2026-01-01T12:00:00.000Z';
  const replica = (id: string, replica: number, ready: boolean, upToDate = true) => ({
    id,
    state: 'running',
    replica,
    ready,
    phase: ready ? 'ready' : 'health_pending',
    upToDate,
    restarts: replica,
  });
  const api: WorkloadInfo = {
    name: 'api',
    template: 'base',
    state: 'running',
    conditions: [
      { type: 'Ready', status: true, reason: 'running', message: '2 of 2 replicas ready', since: at },
      { type: 'Progressing', status: true, reason: 'rolling', since: at },
      { type: 'Degraded', status: false, reason: 'none', since: at },
    ],
    restarts: 1,
    replicas: 2,
    sandboxes: [replica('sb_old', 0, true, false), replica('sb_a', 1, true), replica('sb_b', 2, false)],
    ports: [],
    volumes: [],
    spec: {},
    createdAt: at,
    updatedAt: at,
  };

  it('counts ready replicas against the replicas asked for, and names each sandbox with its replica', () => {
    expect(workloadTable([api], Date.parse(at)).split('\n')[1]).toMatch(/^api\s+Ready \(rolling\)\s+2\/2\s+1\s+sb_old,sb_a,sb_b\s/);
    const described = describeWorkload(api, Date.parse(at));
    expect(described).toMatch(/^Replicas\s+2 of 2 ready$/m);
    expect(described).toContain(
      'sb_old (replica 0: running, ready, older spec), sb_a (replica 1: running, ready, 1 restart), sb_b (replica 2: running, health_pending, 2 restarts)',
    );
  });
});
