import { afterEach, describe, expect, it } from 'vitest';
import { CommandExitError } from './errors.js';
import { Sandbox } from './sandbox.js';
import { sendError, sendJson, startStandInDaemon, type StandInDaemon } from './testing/stand-in-daemon.js';

let daemon: StandInDaemon | undefined;
afterEach(async () => {
  await daemon?.close();
  daemon = undefined;
});

const info = {
  id: 'sb_abc',
  name: null,
  template: 'base',
  state: 'running',
  stateReason: 'user',
  vcpus: 1,
  memoryMiB: 512,
  accel: 'tcg',
  metadata: {},
  createdAt: '2026-01-01T00:00:00Z',
};
const b64 = (bytes: Buffer | string) => Buffer.from(bytes).toString('base64');

/** Streams "ü" split across two stdout events, some stderr, then the exit code in the request's `X_EXIT`. */
async function startScriptedDaemon() {
  daemon = await startStandInDaemon((request, res) => {
    if (request.method === 'POST' && request.url === '/v1/sandboxes')
      return sendJson(res, 201, { ...info, template: JSON.parse(request.body).template ?? 'base' });
    if (request.method === 'GET' && request.url === '/v1/sandboxes/sb_abc') return sendJson(res, 200, { ...info, state: 'paused' });
    if (request.method === 'DELETE' && request.url === '/v1/sandboxes/sb_abc') return void res.writeHead(204).end();
    if (request.method === 'DELETE') return sendError(res, 404, 'sandbox_not_found', 'No such sandbox');
    if (request.url === '/v1/sandboxes/sb_abc/exec/stream') {
      const exitCode = Number(JSON.parse(request.body).env?.X_EXIT ?? 0);
      const u = Buffer.from('ü');
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      for (const event of [
        { type: 'start', pid: 9 },
        { type: 'stdout', data: b64(Buffer.concat([Buffer.from('gr'), u.subarray(0, 1)])) },
        { type: 'stdout', data: b64(Buffer.concat([u.subarray(1), Buffer.from('n\n')])) },
        { type: 'stderr', data: b64('careful\n') },
        { type: 'exit', exitCode, durationMs: 5 },
      ])
        res.write(`${JSON.stringify(event)}\n`);
      return void res.end();
    }
    return sendError(res, 404, 'not_found', `no route ${request.method} ${request.url}`);
  });
  return daemon;
}

describe('Sandbox with a stand-in daemon', () => {
  it('creates a sandbox, runs a shell command through bash -lc and collects its decoded output', async () => {
    const daemon = await startScriptedDaemon();
    const sandbox = await Sandbox.create('python', { socketPath: daemon.socketPath, memoryMiB: 1024 });
    expect(sandbox.id).toBe('sb_abc');
    expect(sandbox.info.template).toBe('python');
    expect(JSON.parse(daemon.requests[0]?.body ?? '')).toEqual({ template: 'python', memoryMiB: 1024 });

    const stdoutChunks: string[] = [];
    const result = await sandbox.commands.run('echo grün', { onStdout: (data) => stdoutChunks.push(data), cwd: '/tmp' });
    expect(result).toEqual({ exitCode: 0, stdout: 'grün\n', stderr: 'careful\n', durationMs: 5 });
    expect(stdoutChunks.join('')).toBe('grün\n');
    expect(JSON.parse(daemon.requests[1]?.body ?? '')).toEqual({ cmd: ['/bin/bash', '-lc', 'echo grün'], cwd: '/tmp', timeoutMs: 60_000 });

    await sandbox.commands.run(['ls', '-l'], { timeoutMs: 0 });
    expect(JSON.parse(daemon.requests[2]?.body ?? '')).toEqual({ cmd: ['ls', '-l'], timeoutMs: 0 });

    expect((await sandbox.getInfo()).state).toBe('paused');
    expect(sandbox.info.state).toBe('paused');
    await sandbox.kill();
    sandbox.client.close();
  });

  it('hands byte callbacks the output exactly as written, a character split across chunks included', async () => {
    const daemon = await startScriptedDaemon();
    const sandbox = await Sandbox.connect('sb_abc', { socketPath: daemon.socketPath });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    await sandbox.commands.run('echo grün', {
      onStdoutBytes: (data) => stdout.push(Buffer.from(data)),
      onStderrBytes: (data) => stderr.push(Buffer.from(data)),
    });
    expect(stdout).toEqual([Buffer.from([0x67, 0x72, 0xc3]), Buffer.from([0xbc, 0x6e, 0x0a])]);
    expect(Buffer.concat(stderr).toString()).toBe('careful\n');
    sandbox.client.close();
  });

  it('throws CommandExitError carrying exit code and output on a non-zero exit', async () => {
    const daemon = await startScriptedDaemon();
    const sandbox = await Sandbox.connect('sb_abc', { socketPath: daemon.socketPath });
    const error = await sandbox.commands.run('exit 4', { env: { X_EXIT: '4' } }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CommandExitError);
    expect(error).toMatchObject({ exitCode: 4, stdout: 'grün\n', stderr: 'careful\n', message: 'Command exited with code 4: careful' });
    sandbox.client.close();
  });

  it('Sandbox.kill resolves false for a sandbox that does not exist', async () => {
    const daemon = await startScriptedDaemon();
    expect(await Sandbox.kill('sb_abc', { socketPath: daemon.socketPath })).toBe(true);
    expect(await Sandbox.kill('sb_gone', { socketPath: daemon.socketPath })).toBe(false);
  });

  it('asks for no internet at create as E2B spells it, and switches it and the egress lists later', async () => {
    const bodies: { url: string; body: unknown }[] = [];
    daemon = await startStandInDaemon((request, res) => {
      bodies.push({ url: request.url ?? '', body: JSON.parse(request.body || 'null') });
      return sendJson(res, request.url === '/v1/sandboxes' ? 201 : 200, info);
    });
    const sandbox = await Sandbox.create({ socketPath: daemon.socketPath, allowInternetAccess: false });
    await sandbox.setInternetAccess(true);
    await sandbox.setEgressRules({ deny: ['0.0.0.0/0'], allow: ['10.0.0.0/8'] });
    expect(bodies).toEqual([
      { url: '/v1/sandboxes', body: { internet: false } },
      { url: '/v1/sandboxes/sb_abc/network', body: { internet: true } },
      { url: '/v1/sandboxes/sb_abc/network', body: { egress: { deny: ['0.0.0.0/0'], allow: ['10.0.0.0/8'] } } },
    ]);
  });
});

describe('Sandbox ports with a stand-in daemon', () => {
  it("computes getHost as e2b does, and fetches through the path form with the sandbox's traffic token", async () => {
    const portInfo = { ...info, ports: [], domain: 'capsule.example:3000', trafficAccessToken: 'tok' };
    daemon = await startStandInDaemon((request, res, req) => {
      if (request.url === '/v1/sandboxes/sb_abc') return sendJson(res, 200, portInfo);
      if (request.url === '/v1/sandboxes/sb_abc/ports/8000/hi?x=1') {
        // The service's own 404 is the caller's to read, not an error.
        res.writeHead(404, { 'content-type': 'text/plain' });
        return void res.end(`token=${String(req.headers['e2b-traffic-access-token'])}`);
      }
      if (request.url === '/v1/sandboxes/sb_abc/ports/9999/') {
        res.setHeader('x-capsule-error', 'port_not_listening');
        return sendError(res, 502, 'port_not_listening', 'nothing listens on port 9999 in the sandbox');
      }
      return sendError(res, 404, 'not_found', `no route ${request.method} ${request.url}`);
    });
    const sandbox = await Sandbox.connect('sb_abc', { socketPath: daemon.socketPath });
    expect(sandbox.getHost(8000)).toBe('8000-sb_abc.capsule.example:3000');
    expect(sandbox.trafficAccessToken).toBe('tok');
    const answer = await sandbox.fetch(8000, '/hi?x=1');
    expect(answer.status).toBe(404);
    const chunks: Uint8Array[] = [];
    for await (const chunk of answer.body) chunks.push(chunk);
    expect(Buffer.concat(chunks).toString()).toBe('token=tok');
    await expect(sandbox.fetch(9999)).rejects.toMatchObject({ code: 'port_not_listening', status: 502 });
    await expect(sandbox.fetch(70000)).rejects.toMatchObject({ code: 'invalid_argument' });
    sandbox.client.close();
  });
});
