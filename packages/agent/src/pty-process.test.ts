// PTY processes as the e2b SDK drives them (Start with `pty`, SendInput and
// StreamInput with pty bytes, Update to resize, Connect, SendSignal): the
// bundled agent, with node-pty's addon beside it, on a unix socket.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
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

type EndEvent = Extract<ProcessEvent['event'], { case: 'end' }>['value'];

/** One Start or Connect stream of a terminal: its output as text, and waiting for what should appear in it. */
class TerminalStream {
  output = '';
  pid: number | undefined;
  end: EndEvent | undefined;
  readonly kinds = new Set<string>();
  readonly done: Promise<void>;
  private searchedUpTo = 0;
  private waiters: Array<{ text: string; resolve: () => void; reject: (error: Error) => void }> = [];
  private readonly started: Promise<number>;
  private onStart: ((pid: number) => void) | undefined;

  constructor(events: AsyncIterable<{ event?: ProcessEvent }>) {
    this.started = new Promise((resolve) => (this.onStart = resolve));
    this.done = this.consume(events).finally(() => {
      for (const waiter of this.waiters.splice(0)) {
        waiter.reject(new Error(`stream ended before ${JSON.stringify(waiter.text)} appeared; output: ${JSON.stringify(this.output)}`));
      }
    });
    this.done.catch(() => undefined);
  }

  pidWhenStarted(): Promise<number> {
    return this.started;
  }

  /** Resolves once `text` appears after the previous match. */
  waitFor(text: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiters.push({ text, resolve, reject });
      this.check();
    });
  }

  private check(): void {
    const waiter = this.waiters[0];
    if (!waiter) return;
    const at = this.output.indexOf(waiter.text, this.searchedUpTo);
    if (at < 0) return;
    this.searchedUpTo = at + waiter.text.length;
    this.waiters.shift();
    waiter.resolve();
    this.check();
  }

  private async consume(events: AsyncIterable<{ event?: ProcessEvent }>): Promise<void> {
    for await (const response of events) {
      const event = response.event?.event;
      if (!event) continue;
      if (event.case === 'start') {
        this.pid = event.value.pid;
        this.onStart?.(event.value.pid);
      } else if (event.case === 'data') {
        this.kinds.add(event.value.output.case ?? 'none');
        this.output += Buffer.from(event.value.output.value ?? new Uint8Array()).toString();
        this.check();
      } else if (event.case === 'end') {
        this.end = event.value;
      }
    }
  }
}

function startTerminal(
  script: string,
  options: { rows?: number; cols?: number; tag?: string; headers?: Record<string, string>; envs?: Record<string, string> } = {},
  signal?: AbortSignal,
): TerminalStream {
  const request: MessageInitShape<typeof StartRequestSchema> = {
    process: { cmd: '/bin/sh', args: ['-c', script], envs: options.envs ?? {}, cwd: '/tmp' },
    pty: { size: { rows: options.rows ?? 24, cols: options.cols ?? 80 } },
    tag: options.tag,
  };
  return new TerminalStream(client.start(request, { headers: options.headers, signal }));
}

const byPid = (pid: number) => ({ selector: { case: 'pid' as const, value: pid } });
const typeInto = (pid: number, text: string) =>
  client.sendInput({ process: byPid(pid), input: { input: { case: 'pty', value: Buffer.from(text) } } });

async function expectConnectError(promise: Promise<unknown>, code: Code): Promise<ConnectError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(ConnectError);
  expect((error as ConnectError).code).toBe(code);
  return error as ConnectError;
}

describe('a process on a pseudo-terminal', () => {
  it('has a controlling terminal of the requested size, TERM, and its output as pty data', async () => {
    const session = startTerminal('test -t 0 && test -t 1 && test -t 2 && echo "isatty yes"; stty size; echo "term=$TERM"; tty; stty -a', {
      rows: 33,
      cols: 101,
    });
    await session.done;
    expect(session.output).toContain('isatty yes\r\n');
    expect(session.output).toContain('33 101\r\n');
    expect(session.output).toContain('term=xterm-256color\r\n');
    expect(session.output).toMatch(/\/dev\/pts\/\d+\r\n/);
    // UTF-8 input editing is on (a backspace erases a whole character).
    expect(session.output).toMatch(/(^|\s)iutf8(\s|$)/);
    expect([...session.kinds]).toEqual(['pty']);
    expect(session.end).toMatchObject({ exitCode: 0, exited: true, status: 'exit status 0' });
  });

  it('keeps the TERM the request names', async () => {
    const session = startTerminal('echo "term=$TERM"', { envs: { TERM: 'vt100' } });
    await session.done;
    expect(session.output).toContain('term=vt100\r\n');
  });

  it('reports the exit code and a kill in the end event', async () => {
    const exited = startTerminal('exit 7');
    await exited.done;
    expect(exited.end).toMatchObject({ exitCode: 7, exited: true, status: 'exit status 7', error: 'exit status 7' });

    const killed = startTerminal('echo ready; exec sleep 60');
    await killed.waitFor('ready');
    await client.sendSignal({ process: byPid(await killed.pidWhenStarted()), signal: Signal.SIGKILL });
    await killed.done;
    expect(killed.end).toMatchObject({ exitCode: -1, exited: false, status: 'signal: killed' });
  });

  it('echoes what SendInput and StreamInput type, and ends on Ctrl-D', async () => {
    const session = new TerminalStream(client.start({ process: { cmd: 'cat' }, pty: { size: { rows: 24, cols: 80 } } }));
    const pid = await session.pidWhenStarted();
    await typeInto(pid, 'hello\n');
    // The terminal echoes the line (with ONLCR), then cat writes it back.
    await session.waitFor('hello\r\nhello\r\n');

    async function* typed() {
      yield { event: { case: 'start' as const, value: { process: byPid(pid) } } };
      yield { event: { case: 'data' as const, value: { input: { input: { case: 'pty' as const, value: Buffer.from('streamed\n') } } } } };
    }
    await client.streamInput(typed());
    await session.waitFor('streamed\r\nstreamed\r\n');

    await typeInto(pid, '\x04');
    await session.done;
    expect(session.end).toMatchObject({ exitCode: 0, exited: true });
  });

  it("runs an interactive login bash the way the e2b SDK's pty.create starts it", async () => {
    const session = new TerminalStream(
      client.start(
        {
          process: { cmd: '/bin/bash', args: ['-i', '-l'], envs: { TERM: 'xterm-256color' }, cwd: '/tmp' },
          pty: { size: { rows: 24, cols: 80 } },
        },
        { headers: { 'keepalive-ping-interval': '50' }, timeoutMs: 60_000 },
      ),
    );
    const pid = await session.pidWhenStarted();
    await typeInto(pid, 'echo "answer=$((6 * 7)) interactive=$-"\n');
    await session.waitFor('answer=42 interactive=');
    await typeInto(pid, 'exit 3\n');
    await session.done;
    expect(session.output).toMatch(/answer=42 interactive=\S*i/);
    expect(session.end).toMatchObject({ exitCode: 3, exited: true });
  });

  it('resizes the terminal with Update: stty size follows and SIGWINCH reaches the process', async () => {
    // `read` may return early when the trap runs: the loop reads until "go".
    const script =
      'stty size; trap \'echo "winch $(stty size)"\' WINCH; echo ready; until [ "$line" = go ]; do read line; done; echo "after $(stty size)"';
    const session = startTerminal(script, { rows: 24, cols: 80 });
    await session.waitFor('24 80\r\n');
    await session.waitFor('ready');
    const pid = await session.pidWhenStarted();
    await client.update({ process: byPid(pid), pty: { size: { rows: 50, cols: 132 } } });
    await typeInto(pid, 'go\n');
    await session.done;
    expect(session.output).toContain('winch 50 132\r\n');
    expect(session.output).toContain('after 50 132\r\n');
    expect(session.end?.exitCode).toBe(0);
  });

  it('is found again by Connect, by tag and by pid, after the stream that started it went away', async () => {
    const tag = `terminal-${Date.now()}`;
    const abandon = new AbortController();
    const first = startTerminal('echo first; read line; echo "got $line"; exit 3', { tag }, abandon.signal);
    await first.waitFor('first');
    const pid = await first.pidWhenStarted();
    abandon.abort();
    await first.done.catch(() => undefined);

    const listed = (await client.list({})).processes.find((info) => info.tag === tag);
    expect(listed?.pid).toBe(pid);
    const byTag = new TerminalStream(client.connect({ process: { selector: { case: 'tag', value: tag } } }));
    const byPidStream = new TerminalStream(client.connect({ process: byPid(pid) }));
    expect(await byTag.pidWhenStarted()).toBe(pid);
    expect(await byPidStream.pidWhenStarted()).toBe(pid);

    await typeInto(pid, 'abc\n');
    await Promise.all([byTag.done, byPidStream.done]);
    for (const stream of [byTag, byPidStream]) {
      expect(stream.output).toContain('got abc\r\n');
      expect(stream.end).toMatchObject({ exitCode: 3, exited: true });
    }
    await expectConnectError(
      client
        .connect({ process: byPid(pid) })
        [Symbol.asyncIterator]()
        .next(),
      Code.NotFound,
    );
  });

  it('runs as the requested user and group, with no supplementary groups', async () => {
    if (process.getuid?.() !== 0) return; // switching users needs a root agent
    let nobody: { uid: number; gid: number };
    try {
      nobody = {
        uid: Number(execFileSync('id', ['-u', 'nobody']).toString()),
        gid: Number(execFileSync('id', ['-g', 'nobody']).toString()),
      };
    } catch {
      return; // no such user on this host
    }
    const headers = { authorization: `Basic ${Buffer.from('nobody:').toString('base64')}` };
    const session = startTerminal('echo "ids $(id -u) $(id -G)"', { headers });
    await session.done;
    expect(session.output).toContain(`ids ${nobody.uid} ${nobody.gid}\r\n`);
  });

  it("refuses input, resizes and CloseStdin that do not fit the process, with envd's codes", async () => {
    const session = startTerminal('echo ready; read line');
    await session.waitFor('ready');
    const pid = await session.pidWhenStarted();
    const stdinToTerminal = await expectConnectError(
      client.sendInput({ process: byPid(pid), input: { input: { case: 'stdin', value: Buffer.from('x') } } }),
      Code.Internal,
    );
    expect(stdinToTerminal.rawMessage).toContain('tty assigned to process');
    await expectConnectError(client.closeStdin({ process: byPid(pid) }), Code.Unknown);
    await expectConnectError(client.update({ process: byPid(pid), pty: { size: { rows: 70_000, cols: 80 } } }), Code.InvalidArgument);
    // An Update without a size changes nothing.
    await client.update({ process: byPid(pid) });
    await typeInto(pid, '\n');
    await session.done;

    const piped = new TerminalStream(client.start({ process: { cmd: 'cat' }, stdin: true, tag: `piped-${Date.now()}` }));
    const pipedPid = await piped.pidWhenStarted();
    const ptyToPipe = await expectConnectError(typeInto(pipedPid, 'x'), Code.Internal);
    expect(ptyToPipe.rawMessage).toContain('tty not assigned to process');
    await expectConnectError(client.update({ process: byPid(pipedPid), pty: { size: { rows: 10, cols: 10 } } }), Code.Internal);
    await client.closeStdin({ process: byPid(pipedPid) });
    await piped.done;
    expect(piped.end?.exitCode).toBe(0);

    await expectConnectError(
      new TerminalStream(client.start({ process: { cmd: 'true' }, pty: { size: { rows: 24, cols: 100_000 } } })).done,
      Code.InvalidArgument,
    );
  });

  it('holds a fast writer back while nobody reads, then delivers every byte', async () => {
    const totalBytes = 24 * 1024 * 1024;
    const events = client
      .start({
        process: { cmd: 'head', args: ['-c', String(totalBytes), '/dev/zero'], cwd: '/tmp' },
        pty: { size: { rows: 24, cols: 80 } },
      })
      [Symbol.asyncIterator]();
    const first = await events.next();
    const pid = first.value?.event?.event.case === 'start' ? first.value.event.event.value.pid : undefined;
    expect(pid).toBeGreaterThan(0);
    // Not reading for a while: the agent holds about 1 MiB for us, the
    // terminal and the transports a little more; `head` must be blocked.
    await sleep(1500);
    const io = existsSync(`/proc/${pid}/io`) ? readFileSync(`/proc/${pid}/io`, 'utf8') : `wchar: ${totalBytes}`;
    expect(Number(/wchar:\s+(\d+)/.exec(io)?.[1])).toBeLessThan(12 * 1024 * 1024);
    const rest = new TerminalStream({ [Symbol.asyncIterator]: () => events });
    await rest.done;
    expect(rest.output.length).toBe(totalBytes);
    expect(rest.end?.exitCode).toBe(0);
  }, 60_000);

  it('delivers the end of the output of processes that exit right after writing it', async () => {
    for (let round = 0; round < 10; round += 1) {
      const bytes = 2 * 1024 * 1024 + round * 4099;
      const session = new TerminalStream(
        client.start({
          process: { cmd: 'head', args: ['-c', String(bytes), '/dev/zero'], cwd: '/tmp' },
          pty: { size: { rows: 24, cols: 80 } },
        }),
      );
      await session.done;
      expect(session.output.length).toBe(bytes);
    }
  }, 60_000);

  it('leaves no descriptor or thread behind once terminals end, however they end', async () => {
    const counts = () => ({
      fds: readdirSync(`/proc/${agent.pid}/fd`).length,
      threads: readdirSync(`/proc/${agent.pid}/task`).length,
    });
    // Warm up: the first terminal loads the addon and starts the thread pool.
    await startTerminal('true').done;
    const before = counts();
    for (let round = 0; round < 4; round += 1) {
      await startTerminal('echo done').done;
      // A background child still holding the terminal when the shell exits.
      await startTerminal('sleep 30 & echo started').done;
      const killed = startTerminal('echo ready; exec sleep 60');
      await killed.waitFor('ready');
      await client.sendSignal({ process: byPid(await killed.pidWhenStarted()), signal: Signal.SIGKILL });
      await killed.done;
      // A Start stream given up on while its process runs: the process ends later on its own.
      const abandon = new AbortController();
      const abandoned = startTerminal('echo ready; read line', {}, abandon.signal);
      await abandoned.waitFor('ready');
      const pid = await abandoned.pidWhenStarted();
      abandon.abort();
      await abandoned.done.catch(() => undefined);
      await typeInto(pid, '\n');
    }
    // Exit threads are joined and descriptors closed just after the end events.
    const deadline = Date.now() + 10_000;
    let after = counts();
    while ((after.fds > before.fds || after.threads > before.threads) && Date.now() < deadline) {
      await sleep(50);
      after = counts();
    }
    expect(after.fds).toBeLessThanOrEqual(before.fds);
    expect(after.threads).toBeLessThanOrEqual(before.threads);
  }, 60_000);
});
