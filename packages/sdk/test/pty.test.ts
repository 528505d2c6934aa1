// sandbox.pty against the real bundled agent, reached through a STAND-IN for
// capsuled's envd proxy: an HTTP/1.1 server on a unix socket that forwards
// `/v1/sandboxes/sb-test/envd/<path>` to the agent over HTTP/2, as the daemon
// will. Everything else about the SDK (its transport, Connect, errors) is real.
import type http2 from 'node:http2';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '../../agent/test/agent-fixture.js';
import { screen, startStandInDaemon, type StandInDaemon } from '../../agent/test/stand-in-daemon.js';
import { SandboxAgent } from '../src/agent-call.js';
import { CapsuleClient, CommandExitError, NotFoundError, Pty } from '../src/index.js';

let agent: RunningAgent;
let agentSession: http2.ClientHttp2Session;
let proxy: StandInDaemon;
let client: CapsuleClient;

beforeAll(async () => {
  agent = await startAgent();
  agentSession = agent.http2Session();
  proxy = await startStandInDaemon(agentSession, 'sb-test');
  client = new CapsuleClient({ socketPath: proxy.socketPath });
}, 120_000);

afterEach((context) => {
  if (context.task.result?.state === 'fail') console.error(`--- capsule-agent log ---\n${agent.log()}`);
});

afterAll(async () => {
  client?.close();
  await proxy?.close();
  agentSession?.close();
  await agent?.stop();
});

describe('sandbox.pty through a stand-in envd proxy', () => {
  const pty = () => new Pty(new SandboxAgent(client, 'sb-test'));

  it('creates a terminal of the given size, types into it, resizes it, and reports the exit code', async () => {
    const shown = screen();
    const handle = await pty().create({
      cols: 90,
      rows: 30,
      cmd: ['/bin/sh', '-c', 'test -t 0 && echo "tty $TERM"; stty size; read line; echo "got $line $(stty size)"; exit 4'],
      cwd: '/tmp',
      onData: shown.add,
    });
    expect(handle.pid).toBeGreaterThan(0);
    await shown.waitFor('30 90');
    await handle.resize({ cols: 120, rows: 40 });
    await handle.sendInput('hello\n');
    const error = await handle.wait().catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(CommandExitError);
    expect((error as CommandExitError).exitCode).toBe(4);
    expect(shown.text()).toContain('tty xterm-256color\r\n');
    expect(shown.text()).toContain('got hello 40 120\r\n');
  });

  it('starts an interactive login bash by default and resolves wait() on exit 0', async () => {
    const shown = screen();
    const handle = await pty().create({ cols: 80, rows: 24, cwd: '/tmp', onData: shown.add });
    await handle.sendInput('echo "sum=$((40 + 2))"\n');
    await shown.waitFor('sum=42');
    await handle.sendInput('exit\n');
    expect(await handle.wait()).toEqual({ exitCode: 0 });
  });

  it('kills a terminal with SIGKILL, and says false for one that is gone', async () => {
    const handle = await pty().create({ cols: 80, rows: 24, cmd: ['sleep', '60'], cwd: '/tmp' });
    expect(await handle.kill()).toBe(true);
    const error = (await handle.wait().catch((caught: unknown) => caught)) as CommandExitError;
    expect(error).toBeInstanceOf(CommandExitError);
    expect(error.signal).toBe('SIGKILL');
    expect(await pty().kill(handle.pid)).toBe(false);
  });

  it('turns the daemon and agent refusals into typed errors', async () => {
    await expect(new Pty(new SandboxAgent(client, 'sb-missing')).create({ cols: 80, rows: 24 })).rejects.toMatchObject({
      code: 'sandbox_not_found',
    });
    await expect(pty().sendInput(999_999, 'x')).rejects.toBeInstanceOf(NotFoundError);
    await expect(pty().create({ cols: 80, rows: 24, cmd: ['no-such-program-here'] })).rejects.toMatchObject({ code: 'invalid_argument' });
  });
});
