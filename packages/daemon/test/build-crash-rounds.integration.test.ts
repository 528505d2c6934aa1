// The daemon killed with SIGKILL at random points of a template build, round
// after round: after each restart no build sandbox, QEMU, runtime folder or
// temporary template of the interrupted build is left, no half-made template
// is listed, and the same build then runs to its end and gives a template
// whose sandboxes have the build's files. (crash-rounds.integration.test.ts
// does the same for fork, snapshot and pause.)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { eventually, it, TestDaemon } from './fixture.js';

/** How long a restart may take on a loaded host (see crash-rounds). */
const START_TIMEOUT_MS = 120_000;
const ROUNDS = 6;

describe('kill -9 mid template build (real QEMU microVMs)', () => {
  // No warm pool: every QEMU here is a build's or a test sandbox's, so any other is a leak.
  const daemon = new TestDaemon({ CAPSULE_WARM_POOL_SIZE: '0' });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'capsule-build-crash-'));
  const capsulefile = (round: number) => `FROM base\nRUN echo round-${round} > /root/built; sleep 2\nRUN echo second >> /root/built\n`;
  const build = (name: string, round: number) =>
    daemon.request('POST', '/v1/templates/build', { name, capsulefile: capsulefile(round), contextDir: work });

  beforeAll(async () => {
    await daemon.start(START_TIMEOUT_MS);
    await daemon.waitForWarmSnapshot(600_000);
  }, 700_000);
  afterAll(async () => {
    await daemon.destroy();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it(`attack: ${ROUNDS} kills of the daemon mid build leave no build sandbox, QEMU or half-made template, and the build then succeeds`, async () => {
    const outcomes: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const name = `built-${round}`;
      const request = build(name, round).catch((err: Error) => ({ status: 0, text: err.message }));
      // From before the build sandbox boots to the last step.
      await sleep(Math.floor(Math.random() * 6000));
      await daemon.kill9();
      const answer = await request;
      await daemon.start(START_TIMEOUT_MS);

      // The build's sandbox ended with its build: none is running or reattaching.
      const running = await eventually(
        async () => {
          const all = await daemon.api.sandboxes();
          return all.some((s) => s.stateMessage?.includes('reattaching')) ? undefined : all;
        },
        120_000,
        'adoption to finish',
      );
      expect({ round, running: running.map((s) => s.id) }).toEqual({ round, running: [] });
      await eventually(
        () => (daemon.qemuPids().length === 0 ? true : undefined),
        30_000,
        `round ${round}: no QEMU left (${daemon.qemuPids()})`,
      );
      expect(daemon.runtimeLeftovers(), `round ${round}`).toEqual([]);
      // Listed templates are whole: the base, or this build if it had finished before the kill.
      const names = (await daemon.api.templates()).map((t) => t.name).sort();
      expect(names.filter((n) => n !== 'base' && n !== name)).toEqual([]);
      outcomes.push(`${answer.status}:${names.includes(name) ? 'built' : 'none'}`);

      // A build that had finished before the kill left a whole template: it goes, and the build runs again
      // to its end; the template's sandboxes have its files.
      if (names.includes(name)) await daemon.api.removeTemplate(name);
      const events = (await build(name, round)).text.trim().split('\n');
      const last = JSON.parse(events.at(-1) ?? '{}') as { type?: string };
      expect(last, `round ${round}: ${JSON.stringify(last)}`).toMatchObject({ type: 'done' });
      const sandbox = await daemon.api.createSandbox({ template: name });
      expect((await daemon.api.exec(sandbox.id, ['cat', '/root/built'])).stdout).toBe(`round-${round}\nsecond\n`);
      await daemon.api.removeSandbox(sandbox.id);
      await daemon.api.removeTemplate(name);
    }
    console.log(`outcomes (HTTP status before the kill:template after the restart): ${outcomes.join(' ')}`);
    expect(daemon.log()).not.toMatch(/adopt_failed/);
  }, 3_600_000);
});
