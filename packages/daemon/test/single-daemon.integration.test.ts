// One daemon per state folder: two started at the same moment leave exactly
// one serving, the other exits at once with a clear message and its own exit
// status; a daemon killed with SIGKILL leaves no stale lock behind.
// Real daemons, no VM (warm snapshots off).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { afterAll, describe, expect, onTestFailed } from 'vitest';
import { DAEMON_EXIT_ALREADY_RUNNING } from '@capsule/protocol';
import { daemonMain, eventually, it, runCli, TestDaemon } from './fixture.js';

/** Starts a capsuled on `daemon`'s folders, beside the fixture's own process; resolves with its exit status and output. */
function launch(daemon: TestDaemon) {
  const child = spawn(process.execPath, [daemonMain], { env: daemon.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (output += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (output += c));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, exited, output: () => output };
}

describe('one daemon per state folder (real daemons)', () => {
  const daemon = new TestDaemon({ CAPSULE_WARM_SNAPSHOTS: 'off' });
  const started: ReturnType<typeof launch>[] = [];
  afterAll(async () => {
    for (const s of started) s.child.kill('SIGKILL');
    await daemon.destroy();
  });

  it('attack: two daemons started at once both serve (and the second kills what the first adopts) — exactly one serves, the other exits non-zero saying why', async () => {
    const pair = [launch(daemon), launch(daemon)];
    started.push(...pair);
    onTestFailed(() => console.error(pair.map((p) => p.output()).join('\n----\n')));
    const info = await eventually(
      async () => {
        const res = await daemon.request('GET', '/v1/info').catch(() => undefined);
        return res?.status === 200 ? res.body : undefined;
      },
      30_000,
      'a daemon to serve',
    );
    const loser = pair.find((p) => p.child.pid !== info.pid)!;
    const winner = pair.find((p) => p.child.pid === info.pid)!;
    expect(loser).toBeDefined();
    expect(await loser.exited).toBe(DAEMON_EXIT_ALREADY_RUNNING);
    expect(loser.output()).toMatch(new RegExp(`another capsuled \\(pid ${info.pid}\\) already runs on this state folder`));
    expect(winner.child.exitCode).toBeNull();
    // The loser changed nothing: the winner still owns the socket.
    expect((await daemon.request('GET', '/v1/info')).body.pid).toBe(info.pid);
  });

  it('a daemon killed with SIGKILL leaves no stale lock: the next one starts', async () => {
    const first = started.find((s) => s.child.exitCode === null)!;
    const gone = first.exited;
    first.child.kill('SIGKILL');
    await gone;
    expect(fs.existsSync(`${daemon.stateDir}/capsuled.lock`)).toBe(true);
    await daemon.start();
    expect((await daemon.request('GET', '/v1/info')).body.pid).toBe(daemon.pid);
  });
});

describe("the CLI's auto-start and a daemon still starting (real daemon, real CLI)", () => {
  // The test-only hook holds the daemon between taking its lock and serving, as a slow start would.
  const daemon = new TestDaemon({ CAPSULE_WARM_SNAPSHOTS: 'off', CAPSULE_TEST_DELAY_SERVE_MS: '6000' });
  afterAll(() => daemon.destroy());

  it('attack: `capsule ls` while capsuled starts launches a second daemon — it waits for the starting one, says so, and one daemon serves', async () => {
    const first = daemon.start();
    const lockFile = `${daemon.stateDir}/capsuled.lock`;
    await eventually(
      () => (fs.existsSync(lockFile) && fs.readFileSync(lockFile, 'utf8').trim() !== '' ? true : undefined),
      20_000,
      'the first daemon to take its lock',
    );
    const ls = await runCli(daemon, ['ls', '--json'], 60_000);
    await first;
    expect(ls.stderr).toMatch(/capsuled is starting/);
    expect(ls.status, ls.stderr).toBe(0);
    expect(JSON.parse(ls.stdout)).toEqual([]);
    expect((await daemon.request('GET', '/v1/info')).body.pid).toBe(daemon.pid);
    // The one the CLI launched said why it left (its output goes to the state folder's log).
    expect(fs.readFileSync(`${daemon.stateDir}/capsuled.log`, 'utf8')).toMatch(
      /another capsuled \(pid \d+\) already runs on this state folder/,
    );
  });
});
