// The daemon killed with SIGKILL at random points of fork, snapshot and pause,
// round after round: after each restart the source runs and answers with its
// files (a pause that had saved its state ends paused, and resumes), and no
// fork or snapshot temp folder, runtime folder or QEMU of the interrupted
// operation is left. The test-only delay hooks hold each operation at the
// moment the source is stopped, so that many kills land there. Slow: run it
// alone with
//   npx vitest run packages/daemon/test/crash-rounds.integration.test.ts
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { eventually, it, TestDaemon } from './fixture.js';

/** How long a restart may take on a loaded host (see the rounds below). */
const START_TIMEOUT_MS = 120_000;
const ROUNDS = 30;
const OPERATIONS = ['fork', 'snapshot', 'pause'] as const;
/** How long each operation is held with its source stopped, and a pause again once its state is in place (test-only hooks, src/test-only-delay.ts). */
const HOLD_MS = 2000;

describe('kill -9 mid fork, snapshot and pause (real QEMU microVMs)', () => {
  // No warm pool: every QEMU here is a sandbox's, so any other is a leak.
  const daemon = new TestDaemon({
    CAPSULE_WARM_POOL_SIZE: '0',
    CAPSULE_TEST_DELAY_FORK_MS: String(HOLD_MS),
    CAPSULE_TEST_DELAY_SNAPSHOT_MS: String(HOLD_MS),
    CAPSULE_TEST_DELAY_PAUSE_MS: String(HOLD_MS),
  });
  beforeAll(async () => {
    await daemon.start(START_TIMEOUT_MS);
    await daemon.waitForWarmSnapshot(600_000);
  }, 700_000);
  afterAll(() => daemon.destroy());

  const exec = (id: string, cmd: string[]) => daemon.api.exec(id, cmd);

  it('attack: a QMP socket held elsewhere when the daemon restarts got the VM killed ("no QMP greeting") — it is retried, the VM lives, and is adopted once free', async () => {
    const { id, pid } = await daemon.api.createSandbox({ name: 'held' });
    await daemon.kill9();
    // QEMU serves one QMP client at a time: this one takes the slot, as a second daemon did.
    const holder = net.connect(path.join(daemon.runtimeDir, 'sandboxes', id, 'qmp.sock'));
    await new Promise((resolve, reject) => holder.once('data', resolve).once('error', reject));
    const logBefore = daemon.log().length;
    await daemon.start(START_TIMEOUT_MS);
    await eventually(
      () => (new RegExp(`"sandbox":"${id}"[^\\n]*QMP did not answer; trying again`).test(daemon.log().slice(logBefore)) ? true : undefined),
      120_000,
      'a QMP retry',
    );
    expect(await daemon.api.sandbox(id)).toMatchObject({ state: 'running', stateMessage: 'reattaching after daemon restart', pid });
    expect(daemon.qemuPids(id)).toEqual([pid]);
    holder.destroy();
    expect((await exec(id, ['echo', 'alive'])).stdout).toBe('alive\n');
    expect(await daemon.api.sandbox(id)).toMatchObject({ state: 'running', pid });
    await daemon.api.removeSandbox(id);
  }, 600_000);

  it('attack: a QEMU whose launch a kill -9 cut short before its pid file was written ran on forever — the next start finds it by its command line and kills it', async () => {
    await daemon.kill9();
    // What a jailed launch leaves when the daemon dies before recording the pid: a QEMU in the
    // runtime folder with no pid file (a real QEMU, with no machine to run).
    const folder = path.join(daemon.runtimeDir, 'sandboxes', 'sb_orphanlaunch');
    fs.mkdirSync(folder, { recursive: true });
    const orphan = spawn(
      'qemu-system-x86_64',
      ['-M', 'none', '-nodefaults', '-nographic', '-name', 'sb_orphanlaunch', '-qmp', `unix:${folder}/qmp.sock,server=on,wait=off`],
      { detached: true, stdio: 'ignore' },
    );
    orphan.unref();
    await eventually(() => (daemon.qemuPids('sb_orphanlaunch').length === 1 ? true : undefined), 30_000, 'the orphan to run');
    await daemon.start(START_TIMEOUT_MS);
    await eventually(() => (daemon.qemuPids('sb_orphanlaunch').length === 0 ? true : undefined), 30_000, 'the orphan to be killed');
    await eventually(() => (fs.existsSync(folder) ? undefined : true), 30_000, 'its folder to be removed');
  }, 300_000);

  it(`attack: ${ROUNDS} kills of the daemon mid operation lose no sandbox and leak nothing`, async () => {
    const { id: source } = await daemon.api.createSandbox({ name: 'source' });
    expect((await exec(source, ['sh', '-c', 'echo kept > /root/mark; sync'])).exitCode).toBe(0);
    const outcomes: string[] = [];

    for (let round = 0; round < ROUNDS; round++) {
      const operation = OPERATIONS[round % OPERATIONS.length]!;
      const path_ = operation === 'fork' ? 'fork' : operation === 'snapshot' ? 'snapshot' : 'pause';
      const body = operation === 'fork' ? { count: 1 } : operation === 'snapshot' ? { template: `snap-${round}` } : {};
      const request = daemon
        .request('POST', `/v1/sandboxes/${source}/${path_}`, body)
        .catch((err: Error) => ({ status: 0, text: err.message, body: undefined }));
      // Anywhere from before the source stops to after the operation would have finished.
      await sleep(Math.floor(Math.random() * (2 * HOLD_MS + 3000)));
      await daemon.kill9();
      const answer = await request;
      // Node alone took 33 s to start while adopt-many's 30 VMs ran beside this file: what is tested is that it serves, not how soon.
      await daemon.start(START_TIMEOUT_MS);

      const after = await eventually(
        async () => {
          const current = await daemon.api.sandbox(source);
          return current.stateMessage?.includes('reattaching') ? undefined : current;
        },
        120_000,
        'the source to be reattached',
      );
      outcomes.push(`${operation}:${answer.status}:${after.state}`);
      if (after.state === 'paused') {
        const resumed = await daemon.request('POST', `/v1/sandboxes/${source}/resume`);
        expect(resumed.status, `round ${round}: ${resumed.text}`).toBe(200);
      } else {
        expect({ round, operation, state: after.state, reason: after.stateReason }).toMatchObject({ state: 'running' });
      }
      const mark = await exec(source, ['cat', '/root/mark']);
      expect({ round, operation, stdout: mark.stdout }).toEqual({ round, operation, stdout: 'kept\n' });

      // What the interrupted operation made and finished is removed; what it left half-made must be gone already.
      for (const s of await daemon.api.sandboxes()) {
        if (s.id !== source && s.state !== 'killed') await daemon.api.removeSandbox(s.id);
      }
      for (const t of await daemon.api.templates()) {
        if (t.name.startsWith('snap-')) await daemon.api.removeTemplate(t.name);
      }
      const sourcePid = (await daemon.api.sandbox(source)).pid;
      await eventually(
        () => (daemon.qemuPids().every((pid) => pid === sourcePid) ? true : undefined),
        30_000,
        `round ${round}: only the source's QEMU to be left (${daemon.qemuPids()})`,
      );
      expect(daemon.runtimeLeftovers(), `round ${round}`).toEqual([source]);
      const forks = path.join(daemon.stateDir, 'forks');
      expect(fs.existsSync(forks) ? fs.readdirSync(forks) : [], `round ${round}`).toEqual([]);
      const templatesDir = path.join(daemon.stateDir, 'templates');
      expect(fs.existsSync(templatesDir) ? fs.readdirSync(templatesDir) : [], `round ${round}`).toEqual([]);
    }
    console.log(`outcomes (operation:HTTP status before the kill:state after the restart): ${outcomes.join(' ')}`);
    expect(daemon.log()).not.toMatch(/adopt_failed/);
  }, 3_600_000);
});

describe('a resume racing the conversions a restart redoes (real QEMU microVMs)', () => {
  /** The restart lists paused sandboxes, then is held this long; the resume's restore is held longer, so they overlap. */
  const CONVERSIONS_HOLD_MS = 1000;
  const RESUME_HOLD_MS = 4000;
  const daemon = new TestDaemon({
    CAPSULE_WARM_POOL_SIZE: '0',
    CAPSULE_TEST_DELAY_RESTART_CONVERSIONS_MS: String(CONVERSIONS_HOLD_MS),
    CAPSULE_TEST_DELAY_RESUME_MS: String(RESUME_HOLD_MS),
  });
  beforeAll(async () => {
    await daemon.start(START_TIMEOUT_MS);
    await daemon.waitForWarmSnapshot(600_000);
  }, 700_000);
  afterAll(() => daemon.destroy());

  it('attack: a paused state whose conversion a restart redid while the sandbox was being resumed ran a helper QEMU beside the resumed VM (a stray in CI) and could put an old state in place — the resume wins', async () => {
    const { id } = await daemon.api.createSandbox({ name: 'converted' });
    expect((await daemon.request('POST', `/v1/sandboxes/${id}/pause`)).status).toBe(200);
    // Paused, so the only QEMU is the helper converting its state (paused-memory.ts): a kill now leaves the conversion to redo.
    await eventually(() => (daemon.qemuPids().length > 0 ? true : undefined), 60_000, 'the conversion helper to start');
    await daemon.kill9();
    await daemon.start(START_TIMEOUT_MS);
    const resume = daemon.request('POST', `/v1/sandboxes/${id}/resume`);
    let mostQemus = 0;
    let resumed = false;
    void resume.finally(() => (resumed = true));
    while (!resumed) {
      mostQemus = Math.max(mostQemus, daemon.qemuPids().length);
      await sleep(50);
    }
    const answer = await resume;
    expect(answer.status, answer.text).toBe(200);
    const { pid } = await daemon.api.sandbox(id);
    await sleep(2000);
    expect({ mostQemus, now: daemon.qemuPids() }).toEqual({ mostQemus: 1, now: [pid] });
    expect(fs.existsSync(path.join(daemon.stateDir, 'sandboxes', id, 'paused'))).toBe(false);
    expect((await daemon.api.exec(id, ['echo', 'alive'])).stdout).toBe('alive\n');
    await daemon.api.removeSandbox(id);
  }, 600_000);
});
