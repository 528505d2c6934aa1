// Terminals in a real microVM through capsuled's agent proxy, from every
// client: @capsule/sdk's sandbox.pty, the official e2b SDK's sandbox.pty
// (unchanged, over TCP with an API key), and `capsule exec -it` / `capsule
// shell` run on a real local terminal (node-pty). One sandbox serves all but
// `capsule run -it`, which makes its own.
import * as nodePty from 'node-pty';
import { Sandbox as E2bSandbox } from 'e2b';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { CommandExitError, Sandbox } from '../../sdk/src/index.js';
import { screen } from '../../agent/test/stand-in-daemon.js';
import { cliMain, daemonMain, TestDaemon } from '../../daemon/test/fixture.js';

describe('terminals in a real microVM, through the daemon', () => {
  const daemon = new TestDaemon({ CAPSULE_LISTEN: 'http://127.0.0.1:0' });
  let sandbox: Sandbox;

  beforeAll(async () => {
    await daemon.start();
    sandbox = await Sandbox.create({
      template: 'base',
      timeoutMs: 10 * 60_000,
      socketPath: daemon.socketPath,
      metadata: { suite: 'terminal' },
    });
  });
  afterAll(async () => {
    await sandbox?.kill().catch(() => undefined);
    await daemon.destroy();
  });
  const printLogOnFailure = () => onTestFailed(() => console.error(`capsuled log:\n${daemon.log()}`));

  it('@capsule/sdk: a terminal whose stty size follows a resize, input, the exit code and kill', async () => {
    printLogOnFailure();
    const shown = screen();
    const handle = await sandbox.pty.create({
      cols: 90,
      rows: 30,
      user: 'user',
      cmd: ['/bin/bash', '-c', 'echo "$(id -un) $(pwd) $(stty size)"; read line; echo "got $line $(stty size)"; exit 6'],
      onData: (data) => shown.add(data),
    });
    await shown.waitFor('user /home/user 30 90');
    await handle.resize({ cols: 132, rows: 50 });
    await handle.sendInput('hello\n');
    const error = await handle.wait().catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(CommandExitError);
    expect((error as CommandExitError).exitCode).toBe(6);
    expect(shown.text()).toContain('got hello 50 132');

    const sleeper = await sandbox.pty.create({ cols: 80, rows: 24, cmd: ['sleep', '60'] });
    expect(await sleeper.kill()).toBe(true);
    expect(((await sleeper.wait().catch((caught: unknown) => caught)) as CommandExitError).signal).toBe('SIGKILL');
  });

  it("the e2b SDK's sandbox.pty, unchanged: create, sendInput, resize, kill", async () => {
    printLogOnFailure();
    const info = await daemon.request<{ tcpAddress: string }>('GET', '/v1/info');
    const created = await daemon.request<{ key: string }>('POST', '/v1/api-keys', { name: 'terminal-test' });
    expect(created.status, created.text).toBe(201);
    const saved = { ...process.env };
    process.env.E2B_API_URL = `http://${info.body.tcpAddress}`;
    process.env.E2B_SANDBOX_URL = `http://${info.body.tcpAddress}`;
    process.env.E2B_API_KEY = created.body.key;
    try {
      const e2b = await E2bSandbox.connect(sandbox.id);
      const shown = screen();
      const terminal = await e2b.pty.create({ cols: 100, rows: 25, onData: (data) => shown.add(data) });
      const encoder = new TextEncoder();
      await e2b.pty.sendInput(terminal.pid, encoder.encode('echo "A=$(stty size)=$TERM=$(id -un)"\n'));
      await shown.waitFor('A=25 100=xterm-256color=user');
      await e2b.pty.resize(terminal.pid, { cols: 140, rows: 45 });
      await e2b.pty.sendInput(terminal.pid, encoder.encode('echo "B=$(stty size)="\n'));
      await shown.waitFor('B=45 140=');
      expect(await e2b.pty.kill(terminal.pid)).toBe(true);
      await terminal.wait().catch(() => undefined);
      expect((await e2b.commands.list()).map((process) => process.pid)).not.toContain(terminal.pid);
    } finally {
      process.env = saved;
    }
  });

  it('capsule exec -it, capsule shell and capsule run -it on a real local terminal', async () => {
    printLogOnFailure();
    const run = (args: string[]) => {
      const quoted = [process.execPath, cliMain, ...args].map((arg) => `'${arg.replace(/'/g, `'\\''`)}'`).join(' ');
      const term = nodePty.spawn('/bin/sh', ['-c', `${quoted}; echo "capsule-exit=$?"; stty -a`], {
        cols: 100,
        rows: 30,
        env: { ...daemon.env, CAPSULED_BIN: daemonMain, TERM: 'xterm-256color' },
      });
      const shown = screen();
      term.onData((data) => shown.add(data));
      const exited = new Promise<void>((resolve) => term.onExit(() => resolve()));
      return { term, shown, exited };
    };

    const exec = run([
      'exec',
      '-it',
      sandbox.id,
      '--',
      '/bin/sh',
      '-c',
      'trap "echo winched" WINCH; stty size; until [ "$l" = go ]; do read l; done; echo "after $(stty size)"; exit 9',
    ]);
    await exec.shown.waitFor('30 100');
    exec.term.resize(120, 40);
    await exec.shown.waitFor('winched');
    exec.term.write('go\r');
    await exec.exited;
    expect(exec.shown.text()).toContain('after 40 120');
    expect(exec.shown.text()).toContain('capsule-exit=9');
    expect(exec.shown.text().slice(exec.shown.text().indexOf('capsule-exit=9'))).toMatch(/(^|\s)icanon(\s|$)/);

    const shell = run(['shell', sandbox.id, '--user', 'user']);
    shell.term.write('echo "in=$(pwd) as=$(id -un)"\r');
    await shell.shown.waitFor('in=/home/user as=user');
    shell.term.write('exit 4\r');
    await shell.exited;
    expect(shell.shown.text()).toContain('capsule-exit=4');

    // run -it: a new sandbox, this terminal attached to its command, removed when the command ends.
    const fresh = run(['run', '-it', '--', '/bin/sh', '-c', 'until [ "$l" = go ]; do read l; done; echo "ran $(stty size)"; exit 5']);
    fresh.term.write('go\r');
    await fresh.exited;
    expect(fresh.shown.text()).toContain('ran 30 100');
    expect(fresh.shown.text()).toContain('capsule-exit=5');
    const left = await daemon.request<{ sandboxes: { id: string }[] }>('GET', '/v1/sandboxes');
    expect(left.body.sandboxes.map((listed) => listed.id)).toEqual([sandbox.id]);
  });
});
