// Real microVMs end to end through the REST API: create, exec, delete; and
// what must never leak when things go wrong.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { eventually, TestDaemon } from './fixture.js';

describe('sandbox lifecycle (real QEMU microVM)', () => {
  const daemon = new TestDaemon();
  let id = '';

  beforeAll(async () => {
    await daemon.start();
    const res = await daemon.request('POST', '/v1/sandboxes', { env: { FROM_CREATE: 'yes' }, metadata: { test: 'lifecycle' } });
    expect(res.status, res.text).toBe(201);
    id = res.body.id;
  });
  afterAll(async () => {
    await daemon.destroy();
  });
  const printLogOnFailure = () => onTestFailed(() => console.error(`capsuled log:\n${daemon.log()}`));

  const exec = (body: Record<string, unknown>) => daemon.request('POST', `/v1/sandboxes/${id}/exec`, body);

  it('creates a running sandbox with an id, metadata and its boot history', async () => {
    printLogOnFailure();
    const res = await daemon.request('GET', `/v1/sandboxes/${id}`);
    expect(res.status).toBe(200);
    expect(res.body.id).toMatch(/^sb_[a-z2-7]{20}$/);
    expect(res.body.state).toBe('running');
    expect(res.body.metadata).toEqual({ test: 'lifecycle' });
    expect(res.body.bootMs).toBeGreaterThan(0);
    expect(res.body.history.map((h: { state: string }) => h.state)).toEqual(['starting', 'running']);
    expect(daemon.qemuPids()).toContain(res.body.pid);
  });

  it('runs a command and returns its stdout, stderr and exit code', async () => {
    printLogOnFailure();
    const res = await exec({ cmd: ['sh', '-c', 'echo out; echo err >&2; exit 7'] });
    expect(res.status, res.text).toBe(200);
    expect(res.body).toMatchObject({ exitCode: 7, stdout: 'out\n', stderr: 'err\n', stdoutTruncated: false });
  });

  it('runs inside the guest kernel with the sandbox hostname, not on the host', async () => {
    const res = await exec({ cmd: ['sh', '-c', 'uname -r; hostname; cat /etc/debian_version'] });
    const [kernel, hostname, debian] = res.body.stdout.trim().split('\n');
    expect(kernel).toMatch(/cloud-amd64$/);
    expect(hostname).toBe(id.replace('_', '-'));
    expect(debian).toMatch(/^12\./);
  });

  it('passes env (sandbox-wide and per command) and cwd', async () => {
    const res = await exec({ cmd: ['sh', '-c', 'echo "$FROM_CREATE $FROM_EXEC $(pwd)"'], env: { FROM_EXEC: 'also' }, cwd: '/tmp' });
    expect(res.body.stdout).toBe('yes also /tmp\n');
  });

  it('runs as another user when asked', async () => {
    const res = await exec({ cmd: ['id', '-un'], user: 'user' });
    expect(res.body.stdout).toBe('user\n');
  });

  it('feeds stdin', async () => {
    const res = await exec({ cmd: ['python3', '-c', 'import sys; print(sys.stdin.read().upper())'], stdin: 'hello' });
    expect(res.body.stdout).toBe('HELLO\n');
  });

  it('reports a signal-killed command as 128+N with the signal name', async () => {
    const res = await exec({ cmd: ['sh', '-c', 'kill -TERM $$'] });
    expect(res.body).toMatchObject({ exitCode: 143, signal: 'SIGTERM' });
  });

  it('kills a command that runs past its timeout', async () => {
    const started = Date.now();
    const res = await exec({ cmd: ['sleep', '60'], timeoutMs: 1000 });
    expect(res.status).toBe(504);
    expect(res.body.error.code).toBe('timeout');
    expect(Date.now() - started).toBeLessThan(30_000);
  });

  it('streams output as NDJSON events ending with exit', async () => {
    const res = await daemon.request('POST', `/v1/sandboxes/${id}/exec/stream`, { cmd: ['sh', '-c', 'printf a; sleep 0.2; printf b >&2; exit 2'] });
    expect(res.status).toBe(200);
    const events = res.text.trim().split('\n').map((l) => JSON.parse(l));
    expect(events[0].type).toBe('start');
    const stdout = events.filter((e) => e.type === 'stdout').map((e) => Buffer.from(e.data, 'base64').toString()).join('');
    const stderr = events.filter((e) => e.type === 'stderr').map((e) => Buffer.from(e.data, 'base64').toString()).join('');
    expect([stdout, stderr]).toEqual(['a', 'b']);
    expect(events.at(-1)).toMatchObject({ type: 'exit', exitCode: 2 });
  });

  it('kills a streaming command when its client goes away', async () => {
    await new Promise<void>((resolve, reject) => {
      const req = http.request(
        { socketPath: daemon.socketPath, method: 'POST', path: `/v1/sandboxes/${id}/exec/stream`, headers: { 'content-type': 'application/json' } },
        (res) => {
          res.once('data', () => {
            req.destroy(); // The first line is the start event: the command is running.
            resolve();
          });
        },
      );
      req.on('error', () => undefined);
      req.end(JSON.stringify({ cmd: ['sleep', '321'] }));
      setTimeout(() => reject(new Error('no start event')), 30_000);
    });
    const gone = await eventually(async () => {
      // pgrep exits 1 when nothing matches; its own command line does not start with "sleep".
      const res = await exec({ cmd: ['pgrep', '-f', '^sleep 321$'] });
      return res.body.exitCode === 1 ? true : undefined;
    }, 15_000, 'the orphaned command to be killed');
    expect(gone).toBe(true);
  });

  it('keeps large output intact', async () => {
    const res = await exec({ cmd: ['sh', '-c', 'head -c 3000000 /dev/zero | tr "\\0" x'] });
    expect(res.body.stdout.length).toBe(3_000_000);
    expect(res.body.stdout).toMatch(/^x+$/);
  });

  it('refuses a command that does not exist with exec_failed', async () => {
    const res = await exec({ cmd: ['definitely-not-a-program'] });
    expect(res.status).toBe(422);
    expect(res.body.error.code).toBe('exec_failed');
    expect(res.body.error.hint).toBeTruthy();
  });

  it('refuses an empty command', async () => {
    for (const cmd of [[], ['']]) {
      const res = await exec({ cmd });
      expect(res.status, JSON.stringify(cmd)).toBe(400);
      expect(res.body.error.code).toBe('invalid_argument');
    }
  });

  it('captures the serial console', async () => {
    await exec({ cmd: ['sh', '-c', 'echo console-marker-$((6 * 7)) > /dev/console'] });
    const res = await daemon.request('GET', `/v1/sandboxes/${id}/logs`);
    expect(res.status).toBe(200);
    expect(res.text).toContain('console-marker-42');
  });

  it('deletes the sandbox: QEMU gone, files gone, record kept as killed', async () => {
    printLogOnFailure();
    const before = (await daemon.request('GET', `/v1/sandboxes/${id}`)).body.pid as number;
    const res = await daemon.request('DELETE', `/v1/sandboxes/${id}`);
    expect(res.status).toBe(204);
    expect(daemon.qemuPids()).not.toContain(before);
    expect(daemon.leftoversOf(id)).toEqual([]);
    expect(fs.existsSync(path.join(daemon.stateDir, 'sandboxes', id))).toBe(false);
    const after = await daemon.request('GET', `/v1/sandboxes/${id}`);
    expect(after.body.state).toBe('killed');
    expect(after.body.history.at(-1)).toMatchObject({ state: 'killed', reason: 'user' });
    const listed = await daemon.request('GET', '/v1/sandboxes');
    expect(listed.body.sandboxes.map((s: { id: string }) => s.id)).not.toContain(id);
    const exec2 = await exec({ cmd: ['true'] });
    expect(exec2.status).toBe(409);
    expect(exec2.body.error.code).toBe('sandbox_not_running');
  });
});
