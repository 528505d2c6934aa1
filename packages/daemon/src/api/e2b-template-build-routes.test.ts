import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { BuildEvent } from '@capsule/protocol';
import { describe, expect, it } from 'vitest';
import { CapsuleError } from '../errors.js';
import { silentLogger } from '../log.js';
import type { TemplateBuildPlan, Templates } from '../templates/templates.js';
import { E2bBuildFiles } from './e2b-build-files.js';
import { E2bTemplateBuilds, requestedTemplateName } from './e2b-template-build-routes.js';

/** A stub for templates/ (its builds boot VMs): it plays `events`, then ends as `outcome` says; the warm snapshot is as `warm` says. */
function stubTemplates(events: BuildEvent[], outcome: 'built' | Error, warm: { state: string; error?: string }) {
  const plans: TemplateBuildPlan[] = [];
  const templates = {
    buildSteps: async (plan: TemplateBuildPlan, emit: (e: BuildEvent) => void) => {
      plans.push(plan);
      for (const event of events) emit(event);
      if (outcome !== 'built') throw outcome;
      return {};
    },
    warm: { warmSnapshotInfo: () => warm },
  } as unknown as Templates;
  return { templates, plans };
}

// No uploads: its folder does not exist, and nothing here uploads.
const files = new E2bBuildFiles('/nonexistent/uploads', () => fs.mkdtempSync(path.join(os.tmpdir(), 'unused-')), 0);
const body = {
  fromTemplate: 'base',
  steps: [
    { type: 'ENV', args: ['A', '1', 'B', '2'] },
    { type: 'RUN', args: ['make'] },
  ],
};

async function run(events: BuildEvent[], outcome: 'built' | Error, warm: { state: string; error?: string } = { state: 'ready' }) {
  const { templates, plans } = stubTemplates(events, outcome, warm);
  const builds = new E2bTemplateBuilds(templates, files, silentLogger);
  const build = builds.request('web', { vcpus: 2 });
  builds.start(build, body);
  await builds.close();
  return { builds, build, plans };
}

describe('E2bTemplateBuilds (a stub builder): status and logs in e2b’s shapes', () => {
  it('hands the translated steps to the builder, replacing the name, and logs each line with the SDK’s step number', async () => {
    const { builds, build, plans } = await run(
      [
        { type: 'step', index: 0, instruction: 'booting a build sandbox from base' },
        { type: 'step', index: 1, instruction: 'ENV A=1', cached: true },
        { type: 'step', index: 3, instruction: 'RUN make' },
        { type: 'log', stream: 'stdout', text: 'one\ntw' },
        { type: 'log', stream: 'stdout', text: 'o\nthree' },
      ],
      'built',
    );
    expect(plans[0]).toMatchObject({ name: 'web', replace: true, contextDir: files.dir, resources: { vcpus: 2 } });
    expect(plans[0]!.file.steps).toHaveLength(3);
    const status = builds.status(build, 0);
    expect(status).toMatchObject({ buildID: build.id, templateID: 'web', status: 'ready', logs: [] });
    expect(status.logEntries.map((e) => [e.step, e.message])).toEqual([
      ['base', 'booting a build sandbox from base'],
      ['1', 'CACHED ENV A=1'],
      ['2', 'RUN make'],
      ['2', 'one'],
      ['2', 'two'],
      ['2', 'three'],
      [undefined, 'template web is built; taking its warm snapshot'],
      [undefined, 'template web is ready'],
    ]);
    // Polled from an offset, only what is new; the template stays ready.
    expect(builds.status(build, 8)).toMatchObject({ status: 'ready', logEntries: [] });
    expect(() => builds.start(build, body)).toThrow(/has already started/);
    expect(() => builds.get({ templateID: 'other', buildID: build.id })).toThrow(/has no build/);
  });

  it('reports a failing step as an error at the SDK’s step, and a failed warm snapshot at finalize', async () => {
    const failed = await run(
      [{ type: 'step', index: 3, instruction: 'RUN make' }],
      new CapsuleError('build_step_failed', 'step 3 (RUN make) exited with code 2', { hint: 'fix the step' }),
    );
    expect(failed.builds.status(failed.build, 0)).toMatchObject({
      status: 'error',
      reason: { step: '2', message: 'build_step_failed: step 3 (RUN make) exited with code 2 (fix the step)' },
    });
    const building = await run([], 'built', { state: 'building' });
    expect(building.builds.status(building.build, 0).status).toBe('building');
    const cold = await run([], 'built', { state: 'failed', error: 'READY never passed' });
    expect(cold.builds.status(cold.build, 0)).toMatchObject({
      status: 'error',
      reason: { step: 'finalize', message: expect.stringMatching(/template_not_ready: the warm snapshot failed: READY never passed/) },
    });
  });

  it('bounds a build’s log in lines and in characters per line', async () => {
    const flood: BuildEvent[] = [
      { type: 'log', stream: 'stdout', text: 'x\n'.repeat(20_000) },
      { type: 'log', stream: 'stderr', text: 'y'.repeat(10_000) },
    ];
    const { builds, build } = await run(flood, 'built');
    const entries = builds.status(build, 0).logEntries;
    expect(entries).toHaveLength(10_001);
    expect(entries.at(-1)!.message).toMatch(/the build log is cut here/);
    const long = await run([{ type: 'log', stream: 'stdout', text: 'y'.repeat(10_000) }], 'built');
    expect(long.builds.status(long.build, 0).logEntries.every((e) => e.message.length <= 4097)).toBe(true);
  });

  it('keeps the last 64 builds that are not running, requested and never started ones included, and every running one', () => {
    const builder = { buildSteps: () => new Promise(() => {}), warm: { warmSnapshotInfo: () => ({ state: 'building' }) } };
    const builds = new E2bTemplateBuilds(builder as unknown as Templates, files, silentLogger);
    const running = builds.request('web', {});
    builds.start(running, body);
    const requested = Array.from({ length: 70 }, () => builds.request('web', {}));
    const known = (build: { id: string }) => {
      try {
        return builds.get({ templateID: 'web', buildID: build.id }) === build;
      } catch {
        return false;
      }
    };
    expect(known(running)).toBe(true);
    expect(requested.filter(known)).toEqual(requested.slice(-64));
  });

  it('refuses names that are no template name, tags, and build-reserved names', () => {
    expect(requestedTemplateName({ name: 'web' })).toBe('web');
    expect(requestedTemplateName({ alias: 'web' })).toBe('web');
    expect(() => requestedTemplateName({})).toThrow(/needs a name/);
    // `name` is e2b's `name:default`, a Capsule template's one build; every other tag is refused.
    expect(requestedTemplateName({ name: 'web:default' })).toBe('web');
    expect(requestedTemplateName({ name: 'web', tags: ['default'] })).toBe('web');
    expect(() => requestedTemplateName({ name: 'web:v1' })).toThrow(/tags are not supported by Capsule, but for "default": "v1"/);
    expect(() => requestedTemplateName({ name: 'web:default:x' })).toThrow(/tags are not supported/);
    expect(() => requestedTemplateName({ name: 'web', tags: ['v1'] })).toThrow(/tags are not supported/);
    expect(() => requestedTemplateName({ name: 'Web App' })).toThrow(/cannot name a template/);
    expect(() => requestedTemplateName({ name: 'build-step-x' })).toThrow(/kept for template builds/);
  });
});
