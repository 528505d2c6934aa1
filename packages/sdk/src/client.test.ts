import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { CapsuleClient, type ExecStreamEvent } from './client.js';
import { type CapsuleError, ConnectionError, InvalidArgumentError, NotFoundError, TimeoutError } from './errors.js';
import { sendError, sendJson, startStandInDaemon, type StandInDaemon, type StandInHandler } from './testing/stand-in-daemon.js';

let daemon: StandInDaemon | undefined;
let client: CapsuleClient | undefined;

async function clientFor(handler: StandInHandler, options: { requestTimeoutMs?: number; maxStreamLineBytes?: number } = {}) {
  daemon = await startStandInDaemon(handler);
  client = new CapsuleClient({ socketPath: daemon.socketPath, ...options });
  return { daemon, client };
}

afterEach(async () => {
  client?.close();
  await daemon?.close();
  client = undefined;
  daemon = undefined;
});

async function collect(events: AsyncIterable<ExecStreamEvent>): Promise<ExecStreamEvent[]> {
  const seen: ExecStreamEvent[] = [];
  for await (const event of events) seen.push(event);
  return seen;
}

const sandbox = {
  id: 'sb_abc',
  name: 'my box',
  template: 'base',
  state: 'running',
  stateReason: 'user',
  vcpus: 1,
  memoryMiB: 512,
  accel: 'tcg',
  metadata: {},
  createdAt: '2026-01-01T00:00:00Z',
};

describe('CapsuleClient with a stand-in daemon', () => {
  it('sends JSON bodies, encodes ids and reads JSON answers', async () => {
    const { daemon, client } = await clientFor((request, res) => {
      if (request.method === 'POST' && request.url === '/v1/sandboxes') return sendJson(res, 201, sandbox);
      if (request.url === '/v1/sandboxes?all=true') return sendJson(res, 200, { sandboxes: [sandbox] });
      if (request.method === 'DELETE') return void res.writeHead(204).end();
      if (request.url === '/v1/sandboxes/my%20box/logs') return void res.writeHead(200, { 'content-type': 'text/plain' }).end('boot log\n');
      return sendError(res, 404, 'not_found', 'no route');
    });
    expect(await client.createSandbox({ template: 'base', memoryMiB: 512 })).toEqual(sandbox);
    expect(JSON.parse(daemon.requests[0]?.body ?? '')).toEqual({ template: 'base', memoryMiB: 512 });
    expect(await client.listSandboxes({ all: true })).toEqual([sandbox]);
    expect(await client.deleteSandbox('sb_abc')).toBeUndefined();
    expect(await client.logs('my box')).toBe('boot log\n');
    await expect(client.getSandbox('')).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  it('maps error responses to typed errors with code, message, hint and status', async () => {
    const { client } = await clientFor((request, res) => {
      if (request.url.endsWith('/missing'))
        return sendError(res, 404, 'sandbox_not_found', 'No sandbox "missing"', 'List them with `capsule ls`');
      if (request.url === '/v1/sandboxes') return sendError(res, 400, 'invalid_argument', 'memoryMiB must be at least 128');
      if (request.url === '/v1/templates') return void res.writeHead(502, { 'content-type': 'text/html' }).end('<h1>Bad gateway</h1>');
      if (request.url === '/v1/info') return void res.writeHead(404).end();
      return sendError(res, 409, 'sandbox_not_running', 'It is paused');
    });
    const notFound = await client.getSandbox('missing').catch((e: unknown) => e);
    expect(notFound).toBeInstanceOf(NotFoundError);
    expect(notFound).toMatchObject({ name: 'NotFoundError', code: 'sandbox_not_found', status: 404, hint: 'List them with `capsule ls`' });
    await expect(client.createSandbox({ memoryMiB: 1 })).rejects.toMatchObject({
      name: 'InvalidArgumentError',
      code: 'invalid_argument',
      status: 400,
    });
    await expect(client.listTemplates()).rejects.toMatchObject({
      code: 'internal',
      status: 502,
      message: expect.stringContaining('Bad gateway'),
    });
    await expect(client.info()).rejects.toBeInstanceOf(NotFoundError);
    const conflict = await client.exec('x', { cmd: ['true'] }).catch((e: unknown) => e);
    expect(conflict).toMatchObject({ name: 'CapsuleError', code: 'sandbox_not_running', status: 409 });
  });

  it('parses a streamed exec whose lines are split across chunks', async () => {
    const { client } = await clientFor(async (_request, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      const body = [
        { type: 'start', pid: 7 },
        { type: 'stdout', data: Buffer.from('héllo\n').toString('base64') },
        { type: 'progress', percent: 50 },
        { type: 'stderr', data: Buffer.from('oops').toString('base64') },
        { type: 'exit', exitCode: 3, durationMs: 12 },
      ]
        .map((event) => `${JSON.stringify(event)}\n`)
        .join('');
      for (let offset = 0; offset < body.length; offset += 7) {
        res.write(body.slice(offset, offset + 7));
        await sleep(1);
      }
      res.end();
    });
    const events = await collect(client.execStream('sb_abc', { cmd: ['sh', '-c', 'x'] }));
    expect(events.map((event) => event.type)).toEqual(['start', 'stdout', 'stderr', 'exit']);
    expect(events[1]).toEqual({ type: 'stdout', data: Buffer.from('héllo\n').toString('base64') });
    expect(events[3]).toEqual({ type: 'exit', exitCode: 3, durationMs: 12 });
  });

  it('throws an error event of the stream as a typed error', async () => {
    const { client } = await clientFor((_request, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.end('{"type":"error","code":"timeout","message":"The command did not start in time","hint":"retry"}\n');
    });
    const error = await collect(client.execStream('sb_abc', { cmd: ['true'] })).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TimeoutError);
    expect(error).toMatchObject({ code: 'timeout', hint: 'retry' });
  });

  it('throws when the stream ends without an exit event, or sends an oversized line', async () => {
    const { daemon, client } = await clientFor((_request, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.end('{"type":"start","pid":1}\n');
    });
    await expect(collect(client.execStream('sb_abc', { cmd: ['true'] }))).rejects.toMatchObject({
      name: 'ConnectionError',
      code: 'connection_lost',
    });

    const small = new CapsuleClient({ socketPath: daemon.socketPath, maxStreamLineBytes: 100 });
    daemon.handle((_request, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.end(`{"type":"stdout","data":"${'A'.repeat(200)}"}\n`);
    });
    await expect(collect(small.execStream('sb_abc', { cmd: ['true'] }))).rejects.toMatchObject({ code: 'protocol_error' });
    small.close();
  });

  it('stops a pending request when its signal aborts, and rejects with the abort reason', async () => {
    let sawClose = false;
    const { client } = await clientFor((_request, res) => {
      res.on('close', () => (sawClose = true)); // never answers
    });
    const controller = new AbortController();
    const pending = client.createSandbox({}, { signal: controller.signal });
    await sleep(50);
    controller.abort();
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
    await sleep(50);
    expect(sawClose).toBe(true);
    await expect(client.health({ signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
  });

  it('stops a stream midway when its signal aborts', async () => {
    const { client } = await clientFor((_request, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.write('{"type":"start","pid":1}\n'); // and then nothing
    });
    const controller = new AbortController();
    const seen: string[] = [];
    const consuming = (async () => {
      for await (const event of client.execStream('sb_abc', { cmd: ['sleep', '9'] }, { signal: controller.signal })) {
        seen.push(event.type);
        controller.abort(new Error('user gave up'));
      }
    })();
    await expect(consuming).rejects.toThrow('user gave up');
    expect(seen).toEqual(['start']);
  });

  it('gives up after requestTimeoutMs with a TimeoutError, but not while a stream is flowing', async () => {
    const { client } = await clientFor(
      async (request, res) => {
        if (request.url === '/v1/info') return; // never answers
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.write('{"type":"start","pid":1}\n');
        await sleep(300);
        res.end('{"type":"exit","exitCode":0,"durationMs":300}\n');
      },
      { requestTimeoutMs: 100 },
    );
    const error = await client.info().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TimeoutError);
    expect(error).toMatchObject({ code: 'request_timeout', message: expect.stringContaining('GET /v1/info') });
    const events = await collect(client.execStream('sb_abc', { cmd: ['sleep', '0.3'] }));
    expect(events.at(-1)?.type).toBe('exit');
  });
});

describe('CapsuleClient without a daemon', () => {
  it('reports a missing socket or a refused connection as ConnectionError with a hint to start the daemon', async () => {
    const folder = mkdtempSync(path.join(tmpdir(), 'capsule-no-daemon-'));
    try {
      const missing = new CapsuleClient({ socketPath: path.join(folder, 'absent.sock') });
      const error = await missing.info().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ConnectionError);
      expect(error).toMatchObject({ code: 'daemon_unreachable', hint: expect.stringContaining('capsule daemon start') });
      expect((error as CapsuleError).message).toContain('ENOENT');

      const notListening = path.join(folder, 'stale.sock');
      writeFileSync(notListening, '');
      const refused = await new CapsuleClient({ socketPath: notListening }).health().catch((e: unknown) => e);
      expect(refused).toMatchObject({
        name: 'ConnectionError',
        code: 'daemon_unreachable',
        message: expect.stringContaining('ECONNREFUSED'),
      });
    } finally {
      rmSync(folder, { recursive: true, force: true });
    }
  });

  it('reports a daemon that dies mid-response as a lost connection', async () => {
    const { client } = await clientFor((_request, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
      res.write('{"status":');
      setTimeout(() => res.destroy(), 20);
    });
    await expect(client.health()).rejects.toMatchObject({ name: 'ConnectionError', code: 'connection_lost' });
  });
});

describe('getSandboxMetrics', () => {
  it('asks for the history between two times as ISO times, and for all of it without them', async () => {
    const history = { sandboxId: 'sb_abc', intervalMs: 5000, guestEveryPoints: 3, retentionMs: 1_800_000, points: [] };
    const { daemon, client } = await clientFor((_request, res) => sendJson(res, 200, history));
    const start = new Date('2026-12-07T15:00:00Z');
    expect(await client.getSandboxMetrics('my box', { start, end: new Date('2026-12-07T15:30:00Z') })).toEqual(history);
    await client.getSandboxMetrics('sb_abc');
    expect(daemon.requests.map((request) => request.url)).toEqual([
      '/v1/sandboxes/my%20box/metrics?start=2026-12-07T15%3A00%3A00.000Z&end=2026-12-07T15%3A30%3A00.000Z',
      '/v1/sandboxes/sb_abc/metrics',
    ]);
  });
});
