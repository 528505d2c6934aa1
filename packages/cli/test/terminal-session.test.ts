// `capsule exec -it` and `capsule shell` as a person uses them, and `exec -i` with piped input: the built CLI
// runs on a real terminal here (node-pty), against a STAND-IN daemon that
// answers /health and GET /v1/sandboxes/sb-test itself and forwards
// /v1/sandboxes/sb-test/envd/* to the real bundled agent, as capsuled's proxy
// will. Checks raw keystrokes, resizes, the exit code and the terminal left
// as it was found.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import type http2 from 'node:http2';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as nodePty from 'node-pty';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '../../agent/test/agent-fixture.js';
import { screen, startStandInDaemon, type StandInDaemon } from '../../agent/test/stand-in-daemon.js';
import { cliMain } from '../../daemon/test/fixture.js';

const SANDBOX = 'sb-test';
let agent: RunningAgent;
let agentSession: http2.ClientHttp2Session;
let daemon: StandInDaemon;
let home: string;

beforeAll(async () => {
  agent = await startAgent();
  agentSession = agent.http2Session();
  daemon = await startStandInDaemon(agentSession, SANDBOX);
  home = mkdtempSync(path.join(tmpdir(), 'capsule-cli-pty-'));
}, 120_000);

afterEach((context) => {
  if (context.task.result?.state === 'fail') console.error(`--- capsule-agent log ---\n${agent.log()}`);
});

afterAll(async () => {
  await daemon?.close();
  agentSession?.close();
  await agent?.stop();
  if (home) rmSync(home, { recursive: true, force: true });
});

/**
 * `capsule ARGS` on a terminal of 100x30 here, followed by `stty -a` on the
 * same terminal so that the test can see the mode capsule left it in.
 */
function onLocalTerminal(args: string[]) {
  const quoted = ['node', cliMain, '--socket', daemon.socketPath, ...args].map((arg) => `'${arg.replace(/'/g, `'\\''`)}'`).join(' ');
  const term = nodePty.spawn('/bin/sh', ['-c', `${quoted}; echo "capsule-exit=$?"; stty -a`], {
    cols: 100,
    rows: 30,
    cwd: home,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', TERM: 'xterm-256color', HOME: home },
  });
  const shown = screen();
  term.onData(shown.add);
  const exited = new Promise<void>((resolve) => term.onExit(() => resolve()));
  return {
    term,
    screen: shown.text,
    waitFor: shown.waitFor,
    exited,
  };
}

describe('capsule exec -it and capsule shell (stand-in daemon, real agent, real terminals)', () => {
  it('sends raw keystrokes, follows a resize, exits with the remote code and restores the terminal', async () => {
    const session = onLocalTerminal([
      'exec',
      '-it',
      SANDBOX,
      '--',
      '/bin/sh',
      '-c',
      // `read` may return early when the trap runs: the loop reads until "hi".
      'trap "echo winched" WINCH; echo "term=$TERM"; stty size; until [ "$line" = hi ]; do read line; done; echo "got $line $(stty size)"; exit 3',
    ]);
    await session.waitFor('30 100');
    session.term.resize(120, 40);
    await session.waitFor('winched');
    // Raw mode: the Enter key's \r travels as typed, and the remote terminal makes it a newline.
    session.term.write('hi\r');
    await session.exited;
    const screen = session.screen();
    expect(screen).toContain('term=xterm-256color');
    expect(screen).toContain('got hi 40 120');
    expect(screen).toContain('capsule-exit=3');
    // `stty -a` after capsule: the local terminal is cooked again.
    const after = screen.slice(screen.indexOf('capsule-exit=3'));
    expect(after).toMatch(/(^|\s)icanon(\s|$)/);
    expect(after).toMatch(/(^|\s)echo(\s|$)/);
  });

  it('passes Ctrl-C to the remote process instead of ending capsule', async () => {
    const session = onLocalTerminal([
      'exec',
      '-it',
      SANDBOX,
      '--',
      '/bin/sh',
      '-c',
      'trap "echo caught-int; exit 0" INT; echo ready; while :; do sleep 1; done',
    ]);
    await session.waitFor('ready');
    session.term.write('\x03');
    await session.exited;
    expect(session.screen()).toContain('caught-int');
    expect(session.screen()).toContain('capsule-exit=0');
  });

  it('on SIGTERM kills the remote process, restores the terminal and exits 143', async () => {
    const session = onLocalTerminal(['exec', '-it', SANDBOX, '--', '/bin/sh', '-c', 'echo ready; exec sleep 60']);
    await session.waitFor('ready');
    const capsulePid = Number(
      execFileSync('pgrep', ['-P', String(session.term.pid), '-f', cliMain])
        .toString()
        .trim()
        .split('\n')[0],
    );
    process.kill(capsulePid, 'SIGTERM');
    await session.exited;
    const screen = session.screen();
    expect(screen).toContain('capsule-exit=143');
    expect(screen.slice(screen.indexOf('capsule-exit=143'))).toMatch(/(^|\s)icanon(\s|$)/);
    // The remote `sleep` is gone with it.
    const listed = await new Promise<string>((resolve) => {
      const request = agentSession.request({ ':method': 'POST', ':path': '/process.Process/List', 'content-type': 'application/json' });
      let body = '';
      request.on('data', (chunk: Buffer) => (body += chunk.toString()));
      request.on('end', () => resolve(body));
      request.end('{}');
    });
    expect(listed).not.toContain('sleep');
  });

  it('opens a login shell with `capsule shell` and returns its exit code', async () => {
    const session = onLocalTerminal(['shell', SANDBOX, '--cwd', '/tmp']);
    session.term.write('echo "in=$(pwd) n=$((6 * 7))"\r');
    await session.waitFor('in=/tmp n=42');
    session.term.write('exit 7\r');
    await session.exited;
    expect(session.screen()).toContain('capsule-exit=7');
  });

  it('refuses --timeout on a terminal session as a usage error', async () => {
    const session = onLocalTerminal(['exec', '-it', '--timeout', '5s', SANDBOX, '--', 'true']);
    await session.exited;
    expect(session.screen()).toContain('--timeout does not apply to a terminal session');
    expect(session.screen()).toContain('capsule-exit=2');
  });
});

describe('capsule exec -i (stand-in daemon, real agent, piped stdin)', () => {
  /** `capsule exec -i ARGS` with `input` piped to it, its stdout kept as bytes. */
  function piped(args: string[], input: Buffer) {
    const child = spawn(process.execPath, [cliMain, '--socket', daemon.socketPath, 'exec', '-i', SANDBOX, '--', ...args], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home },
    });
    const stdout: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    // A command that stops reading early closes the pipe under us: that is not a failure here.
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
    return new Promise<{ status: number | null; stdout: Buffer; stderr: string }>((resolve) =>
      child.once('close', (status) => resolve({ status, stdout: Buffer.concat(stdout), stderr })),
    );
  }

  it('sends piped input to the command byte for byte, then end of file', async () => {
    // Bytes that are not UTF-8 (lone continuation bytes, 0xff) come back unchanged, as does a 3 MiB stream.
    const binary = Buffer.concat([Buffer.from([0x00, 0xff, 0x80, 0xc3]), Buffer.alloc(3 * 1024 * 1024, 'abc\n')]);
    const echoed = await piped(['cat'], binary);
    expect(echoed.stderr).toBe('');
    expect(echoed.status).toBe(0);
    expect(echoed.stdout.equals(binary)).toBe(true);
    const counted = await piped(['/bin/sh', '-c', 'wc -c; exit 4'], Buffer.from('data\n'));
    expect(counted).toMatchObject({ status: 4, stdout: Buffer.from('5\n') });
  });

  it('ends when the command does, however much input is left', async () => {
    const result = await piped(['head', '-c', '3'], Buffer.alloc(8 * 1024 * 1024, 'x'));
    expect(result).toMatchObject({ status: 0, stdout: Buffer.from('xxx') });
  });
});
