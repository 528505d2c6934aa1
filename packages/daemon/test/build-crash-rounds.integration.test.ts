// The daemon killed with SIGKILL at points of a template build, round after
// round: while the build sandbox boots, during a step, while the last step is
// committed and flattened, and after the build finished. After each restart
// no build sandbox, QEMU, runtime folder or temporary template of the
// interrupted build is left, a template that is listed boots with the build's
// file, and the same build then runs to its end. (crash-rounds.integration.test.ts
// does the same for fork, snapshot and pause.) The suite runs a few rounds;
// the 30 run alone with
//   CAPSULE_TEST_BUILD_KILL_ROUNDS=30 npx vitest run packages/daemon/test/build-crash-rounds.integration.test.ts
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BuildEvent } from '@capsule/protocol';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { eventually, it, sharedCacheDir, TestDaemon } from './fixture.js';

/** How long a restart may take on a loaded host (see crash-rounds). */
const START_TIMEOUT_MS = 120_000;
const ROUNDS = Number(process.env.CAPSULE_TEST_BUILD_KILL_ROUNDS ?? 4);

/** Where in the build a round's kill lands: after this build event, plus up to `jitterMs`. */
const KILL_POINTS = [
  { phase: 'boot', after: (e: BuildEvent) => e.type === 'step' && e.index === 0, jitterMs: 1500 },
  { phase: 'step', after: (e: BuildEvent) => e.type === 'step' && e.index === 1, jitterMs: 2500 },
  { phase: 'commit', after: (e: BuildEvent) => e.type === 'step' && e.index === 2, jitterMs: 1500 },
  { phase: 'done', after: (e: BuildEvent) => e.type === 'done', jitterMs: 1000 },
] as const;

describe('kill -9 mid template build (real QEMU microVMs)', () => {
  // No warm pool: every QEMU here is a build's, a template's or a test sandbox's, so any other is a leak.
  const daemon = new TestDaemon({ CAPSULE_WARM_POOL_SIZE: '0' });
  // The build-step cache is shared by every daemon on the host: without a nonce of this run, a
  // Capsulefile built before (by an earlier run) would finish at once, and no kill would land mid-build.
  const nonce = randomBytes(6).toString('hex');
  const capsulefile = (round: number) => `FROM base\nRUN echo ${nonce}-${round} > /root/built; sleep 2\nRUN echo second >> /root/built\n`;
  const builtFile = (round: number) => `${nonce}-${round}\nsecond\n`;

  /** Starts a build and hands each event to `onEvent` as it streams; settles when the answer ends or breaks. */
  const build = (name: string, round: number, onEvent: (event: BuildEvent) => void = () => {}) =>
    new Promise<{ status: number; events: BuildEvent[] }>((resolve) => {
      const events: BuildEvent[] = [];
      let status = 0;
      const payload = Buffer.from(JSON.stringify({ name, capsulefile: capsulefile(round) }));
      const req = http.request(
        {
          socketPath: daemon.socketPath,
          method: 'POST',
          path: '/v1/templates/build',
          headers: { 'content-type': 'application/json', 'content-length': payload.length },
        },
        (res) => {
          status = res.statusCode ?? 0;
          let pending = '';
          res.setEncoding('utf8');
          res.on('data', (text: string) => {
            pending += text;
            for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
              const line = pending.slice(0, nl).trim();
              pending = pending.slice(nl + 1);
              if (line === '') continue;
              const event = JSON.parse(line) as BuildEvent;
              events.push(event);
              onEvent(event);
            }
          });
          res.on('end', () => resolve({ status, events }));
          res.on('error', () => resolve({ status, events }));
        },
      );
      req.on('error', () => resolve({ status, events }));
      req.end(payload);
    });

  /** Temp files and folders in the shared image cache named after daemon `pid` (a build's overlays, lease, root filesystem). */
  const cacheTempsOf = (pid: number) =>
    ['tmp', 'rootfs', 'build-steps'].flatMap((dir) => {
      const full = path.join(sharedCacheDir, 'images', dir);
      const names = fs.existsSync(full) ? fs.readdirSync(full) : [];
      return names.filter((name) => name.includes(`-${pid}-`)).map((name) => `${dir}/${name}`);
    });

  /** A sandbox of `template` has the file the build of `round` wrote. */
  const expectBuiltFile = async (template: string, round: number) => {
    const sandbox = await daemon.api.createSandbox({ template });
    try {
      expect((await daemon.api.exec(sandbox.id, ['cat', '/root/built'])).stdout).toBe(builtFile(round));
    } finally {
      await daemon.api.removeSandbox(sandbox.id);
    }
  };

  beforeAll(async () => {
    await daemon.start(START_TIMEOUT_MS);
    await daemon.waitForWarmSnapshot(600_000);
  }, 700_000);
  afterAll(() => daemon.destroy());

  it(`attack: ${ROUNDS} kills of the daemon mid build leave no build sandbox, QEMU or half-made template, and the build then succeeds`, async () => {
    const outcomes: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const point = KILL_POINTS[round % KILL_POINTS.length]!;
      const name = `built-${round}`;
      let reached: () => void = () => {};
      const pointReached = new Promise<void>((resolve) => {
        reached = resolve;
      });
      const answer = build(name, round, (event) => {
        if (point.after(event)) reached();
      });
      // A build that ended (failed) before its kill point: the kill lands after it.
      await Promise.race([pointReached, answer]);
      await sleep(Math.floor(Math.random() * point.jitterMs));
      // Every QEMU of this daemon now is the build's sandbox or the new template's VM booting for its warm snapshot.
      const killedVms = daemon.qemuPids();
      const killedPid = daemon.pid!;
      await daemon.kill9();
      const { events } = await answer;
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
      expect({ round, running: running.map((s) => `${s.id} ${JSON.stringify(s.metadata)}`) }).toEqual({ round, running: [] });
      await eventually(
        () => (killedVms.every((pid) => !daemon.qemuPids().includes(pid)) ? true : undefined),
        30_000,
        `round ${round}: the killed build's QEMUs gone (${killedVms} left: ${daemon.qemuPids()})`,
      );
      expect(daemon.runtimeLeftovers(), `round ${round}`).toEqual([]);
      // Swept in the background once the daemon serves.
      await eventually(
        () => (cacheTempsOf(killedPid).length === 0 ? true : undefined),
        30_000,
        `round ${round}: the killed daemon's temps in the cache gone (${cacheTempsOf(killedPid)})`,
      );
      // Listed templates are whole: the base, or this build if it had finished before the kill; no temporary one.
      const templates = await daemon.api.templates();
      expect(
        templates.map((t) => t.name).filter((n) => n !== 'base' && n !== name),
        `round ${round}`,
      ).toEqual([]);
      const listed = templates.find((t) => t.name === name);
      const finished = events.some((e) => e.type === 'done');
      outcomes.push(`${point.phase}:${finished ? 'done' : events.length}:${listed ? 'listed' : 'none'}`);
      // A build that answered done before the kill is kept.
      if (finished) expect(listed, `round ${round}: the finished build's template`).toBeDefined();
      if (listed) {
        expect(listed, `round ${round}`).toMatchObject({ ready: true });
        await expectBuiltFile(name, round);
        await daemon.api.removeTemplate(name);
      }

      // The same build then runs to its end (from whatever steps the killed one had cached).
      const rebuilt = await build(name, round);
      expect(rebuilt.events.at(-1), `round ${round}: ${JSON.stringify(rebuilt.events.at(-1))}`).toMatchObject({ type: 'done' });
      await expectBuiltFile(name, round);
      await daemon.api.removeTemplate(name);
    }
    console.log(`outcomes (kill point:events before the kill:template after the restart): ${outcomes.join(' ')}`);
    expect(daemon.log()).not.toMatch(/adopt_failed/);
    // Each round removes its template, maybe while its warm snapshot is still being made: that is no failure.
    expect(daemon.log()).not.toMatch(/no warm snapshot/);
  }, 3_600_000);
});
