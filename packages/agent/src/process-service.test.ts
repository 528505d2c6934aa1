// The process service as the daemon sees it: the bundled agent on a unix
// socket, driven by a Connect client over HTTP/2.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Code, ConnectError, createClient, type Client } from '@connectrpc/connect';
import { describe, expect, it } from 'vitest';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { Process, Signal, type ProcessEvent, type StartRequestSchema } from '@capsule/protocol/agent';
import { useAgentForFile, type RunningAgent } from '../test/agent-fixture.js';

let agent: RunningAgent;
let client: Client<typeof Process>;

useAgentForFile((started) => {
  agent = started;
  client = createClient(Process, agent.connectTransport());
});

interface Collected {
  pid: number | undefined;
  stdout: Buffer;
  stderr: Buffer;
  end: Extract<ProcessEvent['event'], { case: 'end' }>['value'] | undefined;
  kinds: string[];
  largestData: number;
}

async function collect(
  events: AsyncIterable<{ event?: ProcessEvent }>,
  onEvent?: (event: ProcessEvent) => void | Promise<void>,
): Promise<Collected> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const result: Collected = { pid: undefined, stdout: Buffer.alloc(0), stderr: Buffer.alloc(0), end: undefined, kinds: [], largestData: 0 };
  for await (const response of events) {
    const event = response.event;
    if (!event) throw new Error('response without event');
    result.kinds.push(event.event.case ?? 'none');
    switch (event.event.case) {
      case 'start':
        result.pid = event.event.value.pid;
        break;
      case 'data': {
        const output = event.event.value.output;
        if (output.case === 'stdout') out.push(Buffer.from(output.value));
        if (output.case === 'stderr') err.push(Buffer.from(output.value));
        result.largestData = Math.max(result.largestData, output.value?.length ?? 0);
        break;
      }
      case 'end':
        result.end = event.event.value;
        break;
    }
    await onEvent?.(event);
  }
  result.stdout = Buffer.concat(out);
  result.stderr = Buffer.concat(err);
  return result;
}

function run(request: MessageInitShape<typeof StartRequestSchema>, headers?: Record<string, string>) {
  return collect(client.start(request, { headers }));
}

const sh = (script: string, extra: { envs?: Record<string, string>; cwd?: string } = {}) => ({
  process: { cmd: '/bin/sh', args: ['-c', script], ...extra },
});

async function expectConnectError(promise: Promise<unknown>, code: Code): Promise<ConnectError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(ConnectError);
  expect((error as ConnectError).code).toBe(code);
  return error as ConnectError;
}

describe('process.Process/Start', () => {
  it('streams the start event first and reports exit codes like envd', async () => {
    const failed = await run(sh('exit 3'));
    expect(failed.kinds[0]).toBe('start');
    expect(failed.kinds.at(-1)).toBe('end');
    expect(failed.pid).toBeGreaterThan(0);
    expect(failed.end).toMatchObject({ exitCode: 3, exited: true, status: 'exit status 3', error: 'exit status 3' });

    const succeeded = await run({ process: { cmd: 'true' } });
    expect(succeeded.end).toMatchObject({ exitCode: 0, exited: true, status: 'exit status 0' });
    expect(succeeded.end?.error).toBeUndefined();
  });

  it('keeps stdout and stderr apart', async () => {
    const result = await run(sh('printf out1; printf err1 >&2; printf out2; printf err2 >&2'));
    expect(result.stdout.toString()).toBe('out1out2');
    expect(result.stderr.toString()).toBe('err1err2');
  });

  it('gives the process the default environment plus the request envs', async () => {
    const result = await run(
      sh('printf "%s|%s|%s|%s|%s" "$FOO" "$LANG" "$HOME" "$PATH" "$USER"', { envs: { FOO: 'bar baz', LANG: 'C.UTF-8' } }),
    );
    const me = userInfo();
    expect(result.stdout.toString()).toBe(
      `bar baz|C.UTF-8|${me.homedir}|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|${me.username}`,
    );
  });

  it('looks the command up on the PATH the request sets', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'capsule-agent-path-'));
    try {
      execFileSync('sh', ['-c', `printf '#!/bin/sh\\necho from-custom-path\\n' > ${dir}/capsule-hello && chmod +x ${dir}/capsule-hello`]);
      const result = await run({ process: { cmd: 'capsule-hello', envs: { PATH: `${dir}:/usr/bin:/bin` } } });
      expect(result.stdout.toString()).toBe('from-custom-path\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('runs in the requested cwd, and in the home directory without one', async () => {
    const dir = realpathSync(mkdtempSync(join(tmpdir(), 'capsule-agent-cwd-')));
    try {
      expect((await run({ process: { cmd: 'pwd', cwd: dir } })).stdout.toString()).toBe(`${dir}\n`);
      expect((await run({ process: { cmd: 'pwd' } })).stdout.toString()).toBe(`${realpathSync(userInfo().homedir)}\n`);
      const error = await expectConnectError(run({ process: { cmd: 'pwd', cwd: join(dir, 'missing') } }), Code.InvalidArgument);
      expect(error.rawMessage).toContain('does not exist');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('answers a command that does not exist with an error, and keeps serving', async () => {
    const error = await expectConnectError(run({ process: { cmd: 'capsule-no-such-command' } }), Code.InvalidArgument);
    expect(error.rawMessage).toContain('executable file not found');
    expect((await expectConnectError(run({ process: { cmd: '/no/such/binary' } }), Code.InvalidArgument)).rawMessage).toContain(
      'no such file or directory',
    );
    // A file that is there but not executable is told apart: clients exit 126 for it, 127 for a missing one.
    expect((await expectConnectError(run({ process: { cmd: '/etc/passwd' } }), Code.InvalidArgument)).rawMessage).toContain(
      'permission denied',
    );
    await expectConnectError(run({ process: { cmd: '' } }), Code.InvalidArgument);
    expect((await run({ process: { cmd: 'true' } })).end?.exitCode).toBe(0);
  });

  it('delivers 20 MB of output complete and in order, in events of at most 64 KiB', async () => {
    const expected = execFileSync('seq', ['1', '2600000'], { maxBuffer: 64 * 1024 * 1024 });
    expect(expected.length).toBeGreaterThan(19_000_000);
    const result = await run({ process: { cmd: 'seq', args: ['1', '2600000'] } });
    expect(result.stdout.length).toBe(expected.length);
    expect(createHash('sha256').update(result.stdout).digest('hex')).toBe(createHash('sha256').update(expected).digest('hex'));
    expect(result.largestData).toBeLessThanOrEqual(64 * 1024);
    expect(result.end?.exitCode).toBe(0);
  }, 60_000);

  it('pauses a fast writer while its reader is not reading, then delivers everything', async () => {
    const totalBytes = 48 * 1024 * 1024;
    const events = client.start({ process: { cmd: 'head', args: ['-c', String(totalBytes), '/dev/urandom'] } })[Symbol.asyncIterator]();
    const first = await events.next();
    const pid = first.value?.event?.event.case === 'start' ? first.value.event.event.value.pid : undefined;
    expect(pid).toBeGreaterThan(0);
    // Not reading for a while: the agent may hold about 1 MiB for us and the
    // transports their windows; `head` must be blocked well before the end.
    await sleep(1500);
    // A process that already finished wrote everything: not held back at all.
    const io = existsSync(`/proc/${pid}/io`) ? readFileSync(`/proc/${pid}/io`, 'utf8') : `wchar: ${totalBytes}`;
    const written = Number(/wchar:\s+(\d+)/.exec(io)?.[1]);
    expect(written).toBeLessThan(16 * 1024 * 1024);
    const rest = await collect({ [Symbol.asyncIterator]: () => events });
    expect(rest.stdout.length).toBe(totalBytes);
    expect(rest.end?.exitCode).toBe(0);
  }, 60_000);

  it('sends keepalives while the process is quiet', async () => {
    const result = await run(sh('sleep 1.6'), { 'keepalive-ping-interval': '1' });
    expect(result.kinds.filter((kind) => kind === 'keepalive').length).toBeGreaterThanOrEqual(1);
    expect(result.kinds.at(-1)).toBe('end');
  });

  it('speaks the Connect JSON encoding the e2b SDK uses', async () => {
    const jsonClient = createClient(Process, agent.connectTransport(undefined, { json: true }));
    const result = await collect(
      jsonClient.start(
        { process: { cmd: '/bin/sh', args: ['-c', 'printf "\\001\\377"; exit 7'] }, stdin: false },
        { headers: { 'keepalive-ping-interval': '50' } },
      ),
    );
    expect([...result.stdout]).toEqual([1, 255]);
    expect(result.end).toMatchObject({ exitCode: 7, exited: true, status: 'exit status 7' });
  });

  it('runs as the user named in the Basic authorization header', async () => {
    const me = userInfo();
    const basic = (name: string) => ({ authorization: `Basic ${Buffer.from(`${name}:`).toString('base64')}` });
    const result = await run({ process: { cmd: 'id', args: ['-u'] } }, basic(me.username));
    expect(result.stdout.toString().trim()).toBe(String(me.uid));
    await expectConnectError(run({ process: { cmd: 'true' } }, basic('capsule-no-such-user')), Code.Unauthenticated);
  });
});

describe('stdin, signals, List and Connect', () => {
  it('feeds stdin through SendInput until CloseStdin', async () => {
    const tag = `cat-${Date.now()}`;
    const done = run({ process: { cmd: 'cat' }, tag, stdin: true });
    await waitForTag(tag);
    await client.sendInput({
      process: { selector: { case: 'tag', value: tag } },
      input: { input: { case: 'stdin', value: Buffer.from('hello ') } },
    });
    await client.sendInput({
      process: { selector: { case: 'tag', value: tag } },
      input: { input: { case: 'stdin', value: Buffer.from('agent') } },
    });
    await client.closeStdin({ process: { selector: { case: 'tag', value: tag } } });
    const result = await done;
    expect(result.stdout.toString()).toBe('hello agent');
    expect(result.end?.exitCode).toBe(0);
  });

  it('gives a process without stdin an empty one', async () => {
    const result = await run({ process: { cmd: 'cat' }, stdin: false });
    expect(result.stdout.length).toBe(0);
    expect(result.end?.exitCode).toBe(0);
  });

  it('kills a process with SendSignal', async () => {
    const started = Date.now();
    const result = await collect(client.start({ process: { cmd: 'sleep', args: ['30'] } }), async (event) => {
      if (event.event.case === 'start') {
        await client.sendSignal({ process: { selector: { case: 'pid', value: event.event.value.pid } }, signal: Signal.SIGKILL });
      }
    });
    expect(result.end).toMatchObject({ exitCode: -1, exited: false, status: 'signal: killed' });
    expect(Date.now() - started).toBeLessThan(10_000);
    await expectConnectError(
      client.sendSignal({ process: { selector: { case: 'pid', value: result.pid! } }, signal: Signal.SIGKILL }),
      Code.NotFound,
    );
  });

  it('lists running processes and attaches to one with Connect', async () => {
    const tag = `reader-${Date.now()}`;
    const started = run({ process: { cmd: '/bin/sh', args: ['-c', 'read line; echo "got $line"; echo oops >&2'] }, tag, stdin: true });
    const pid = await waitForTag(tag);
    const listed = await client.list({});
    expect(listed.processes.find((info) => info.pid === pid)?.config?.cmd).toBe('/bin/sh');

    const attached = collect(client.connect({ process: { selector: { case: 'tag', value: tag } } }));
    await sleep(200); // let Connect subscribe before the output exists
    await client.sendInput({
      process: { selector: { case: 'pid', value: pid } },
      input: { input: { case: 'stdin', value: Buffer.from('abc\n') } },
    });
    const [viaStart, viaConnect] = await Promise.all([started, attached]);
    for (const result of [viaStart, viaConnect]) {
      expect(result.pid).toBe(pid);
      expect(result.stdout.toString()).toBe('got abc\n');
      expect(result.stderr.toString()).toBe('oops\n');
      expect(result.end?.exitCode).toBe(0);
    }
    expect((await client.list({})).processes.some((info) => info.pid === pid)).toBe(false);
    await expectConnectError(collect(client.connect({ process: { selector: { case: 'pid', value: pid } } })), Code.NotFound);
  });
});

describe('connections', () => {
  it('keeps processes running when a client connection drops, and serves the next one', async () => {
    const sockets: net.Socket[] = [];
    const first = createClient(Process, agent.connectTransport(sockets));
    const tag = `survivor-${Date.now()}`;
    const stream = first.start({ process: { cmd: 'sleep', args: ['30'] }, tag })[Symbol.asyncIterator]();
    const startEvent = (await stream.next()).value as { event?: ProcessEvent } | undefined;
    expect(startEvent?.event?.event.case).toBe('start');
    expect(sockets.length).toBe(1);
    sockets[0]!.destroy();
    await expect(stream.next()).rejects.toThrow();

    const second = createClient(Process, agent.connectTransport());
    const survivor = (await second.list({})).processes.find((info) => info.tag === tag);
    expect(survivor).toBeDefined();
    const ended = collect(second.connect({ process: { selector: { case: 'tag', value: tag } } }));
    await sleep(100);
    await second.sendSignal({ process: { selector: { case: 'tag', value: tag } }, signal: Signal.SIGTERM });
    expect((await ended).end).toMatchObject({ exited: false, status: 'signal: terminated' });
  });

  it('rejects malformed requests and protocol garbage without going down', async () => {
    const session = http2.connect('http://agent', { createConnection: () => net.connect(agent.socketPath) });
    try {
      const request = (path: string, method: string, headers: Record<string, string> = {}, body?: Buffer) =>
        new Promise<{ status: number; body: string }>((resolve, reject) => {
          const stream = session.request({ ':path': path, ':method': method, ...headers });
          let text = '';
          let status = 0;
          stream.on('response', (responseHeaders) => (status = Number(responseHeaders[':status'])));
          stream.on('data', (chunk: Buffer) => (text += chunk.toString()));
          stream.on('end', () => resolve({ status, body: text }));
          stream.on('error', reject);
          stream.end(body);
        });

      const garbage = await request(
        '/process.Process/List',
        'POST',
        { 'content-type': 'application/proto' },
        Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]),
      );
      expect(garbage.status).toBeGreaterThanOrEqual(400);
      expect(JSON.parse(garbage.body)).toHaveProperty('code');

      const badJson = await request('/process.Process/List', 'POST', { 'content-type': 'application/json' }, Buffer.from('{"nope": '));
      expect(badJson.status).toBeGreaterThanOrEqual(400);

      expect((await request('/health', 'GET')).status).toBe(204);
      expect((await request('/no/such/route', 'GET')).status).toBe(404);
    } finally {
      session.close();
    }

    // Not HTTP/2 at all.
    await new Promise<void>((resolve) => {
      const socket = net.connect(agent.socketPath, () => socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
      socket.on('data', () => {});
      socket.on('error', () => resolve());
      socket.on('close', () => resolve());
      setTimeout(() => {
        socket.destroy();
        resolve();
      }, 2000).unref();
    });

    expect(agent.isRunning()).toBe(true);
    expect((await run({ process: { cmd: 'true' } })).end?.exitCode).toBe(0);
  });
});

async function waitForTag(tag: string): Promise<number> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const found = (await client.list({})).processes.find((info) => info.tag === tag);
    if (found) return found.pid;
    if (Date.now() > deadline) throw new Error(`no process tagged ${tag}`);
    await sleep(20);
  }
}
