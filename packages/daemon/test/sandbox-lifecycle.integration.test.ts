// Real microVMs end to end through the REST API: create, exec, delete; and
// what must never leak when things go wrong.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { eventually, sandboxTest, TestDaemon } from './fixture.js';

describe('sandbox lifecycle (real QEMU microVM)', () => {
  const daemon = new TestDaemon();
  const it = sandboxTest(daemon);
  // One sandbox for the tests that only read it: each boot costs seconds under TCG. The test that removes a sandbox has its own.
  let id = '';

  beforeAll(async () => {
    await daemon.start();
    id = (await daemon.api.createSandbox({ env: { FROM_CREATE: 'yes' }, metadata: { test: 'lifecycle' } })).id;
  });
  afterAll(async () => {
    await daemon.destroy();
  });

  /** For the answers that are not a command's result; `daemon.api.exec` for those that are. */
  const rawExec = (body: Record<string, unknown>, sandboxId = id) => daemon.request('POST', `/v1/sandboxes/${sandboxId}/exec`, body);

  it('creates a running sandbox with an id, metadata and its boot history', async () => {
    const sandbox = await daemon.api.sandbox(id);
    expect(sandbox.id).toMatch(/^sb_[a-z2-7]{20}$/);
    expect(sandbox.state).toBe('running');
    expect(sandbox.metadata).toEqual({ test: 'lifecycle' });
    expect(sandbox.bootMs).toBeGreaterThan(0);
    expect(sandbox.history?.map((h) => h.state)).toEqual(['starting', 'running']);
    expect(daemon.qemuPids()).toContain(sandbox.pid);
  });

  it('runs a command and returns its stdout, stderr and exit code', async () => {
    const result = await daemon.api.exec(id, ['sh', '-c', 'echo out; echo err >&2; exit 7']);
    expect(result).toMatchObject({ exitCode: 7, stdout: 'out\n', stderr: 'err\n', stdoutTruncated: false });
  });

  it('runs inside the guest kernel with the sandbox hostname, not on the host', async () => {
    const { stdout } = await daemon.api.exec(id, ['sh', '-c', 'uname -r; hostname; cat /etc/debian_version']);
    const [kernel, hostname, debian] = stdout.trim().split('\n');
    expect(kernel).toMatch(/cloud-amd64$/);
    expect(hostname).toBe(id.replace('_', '-'));
    expect(debian).toMatch(/^12\./);
  });

  it('passes env (sandbox-wide and per command) and cwd', async () => {
    const result = await daemon.api.exec(id, ['sh', '-c', 'echo "$FROM_CREATE $FROM_EXEC $(pwd)"'], {
      env: { FROM_EXEC: 'also' },
      cwd: '/tmp',
    });
    expect(result.stdout).toBe('yes also /tmp\n');
  });

  it('runs as another user when asked', async () => {
    const result = await daemon.api.exec(id, ['id', '-un'], { user: 'user' });
    expect(result.stdout).toBe('user\n');
  });

  it('feeds stdin', async () => {
    const result = await daemon.api.exec(id, ['python3', '-c', 'import sys; print(sys.stdin.read().upper())'], { stdin: 'hello' });
    expect(result.stdout).toBe('HELLO\n');
  });

  it('reports a signal-killed command as 128+N with the signal name', async () => {
    const result = await daemon.api.exec(id, ['sh', '-c', 'kill -TERM $$']);
    expect(result).toMatchObject({ exitCode: 143, signal: 'SIGTERM' });
  });

  it('kills a command that runs past its timeout', async () => {
    const started = Date.now();
    const res = await rawExec({ cmd: ['sleep', '60'], timeoutMs: 1000 });
    expect(res.status).toBe(504);
    expect(res.body.error.code).toBe('timeout');
    expect(Date.now() - started).toBeLessThan(30_000);
  });

  it('streams output as NDJSON events ending with exit', async () => {
    const res = await daemon.request('POST', `/v1/sandboxes/${id}/exec/stream`, {
      cmd: ['sh', '-c', 'printf a; sleep 0.2; printf b >&2; exit 2'],
    });
    expect(res.status).toBe(200);
    const events = res.text
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(events[0].type).toBe('start');
    const stdout = events
      .filter((e) => e.type === 'stdout')
      .map((e) => Buffer.from(e.data, 'base64').toString())
      .join('');
    const stderr = events
      .filter((e) => e.type === 'stderr')
      .map((e) => Buffer.from(e.data, 'base64').toString())
      .join('');
    expect([stdout, stderr]).toEqual(['a', 'b']);
    expect(events.at(-1)).toMatchObject({ type: 'exit', exitCode: 2 });
  });

  it('kills a streaming command when its client goes away', async () => {
    await new Promise<void>((resolve, reject) => {
      const req = http.request(
        {
          socketPath: daemon.socketPath,
          method: 'POST',
          path: `/v1/sandboxes/${id}/exec/stream`,
          headers: { 'content-type': 'application/json' },
        },
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
    const gone = await eventually(
      async () => {
        // pgrep exits 1 when nothing matches; its own command line does not start with "sleep".
        const result = await daemon.api.exec(id, ['pgrep', '-f', '^sleep 321$']);
        return result.exitCode === 1 ? true : undefined;
      },
      15_000,
      'the orphaned command to be killed',
    );
    expect(gone).toBe(true);
  });

  it('keeps large output intact', async () => {
    const { stdout } = await daemon.api.exec(id, ['sh', '-c', 'head -c 3000000 /dev/zero | tr "\\0" x']);
    expect(stdout.length).toBe(3_000_000);
    expect(stdout).toMatch(/^x+$/);
  });

  it('refuses a command that does not exist with exec_failed', async () => {
    const res = await rawExec({ cmd: ['definitely-not-a-program'] });
    expect(res.status).toBe(422);
    expect(res.body.error.code).toBe('exec_failed');
    expect(res.body.error.hint).toBeTruthy();
  });

  it('refuses an empty command', async () => {
    for (const cmd of [[], ['']]) {
      const res = await rawExec({ cmd });
      expect(res.status, JSON.stringify(cmd)).toBe(400);
      expect(res.body.error.code).toBe('invalid_argument');
    }
  });

  it('captures the serial console', async () => {
    await daemon.api.exec(id, ['sh', '-c', 'echo console-marker-$((6 * 7)) > /dev/console']);
    const console = await daemon.api.consoleLog(id);
    expect(console).toContain('console-marker-42');
    // The agent logs there too: after the execs above, nothing went wrong in it unhandled.
    expect(console).not.toMatch(/unhandled rejection|uncaught exception/);
  });

  it('deletes the sandbox: QEMU gone, files gone, record kept as killed', async ({ sandbox }) => {
    const { id } = sandbox;
    await daemon.api.removeSandbox(id);
    expect(daemon.qemuPids()).not.toContain(sandbox.pid);
    expect(daemon.leftoversOf(id)).toEqual([]);
    expect(fs.existsSync(path.join(daemon.stateDir, 'sandboxes', id))).toBe(false);
    const after = await daemon.api.sandbox(id);
    expect(after.state).toBe('killed');
    expect(after.history?.at(-1)).toMatchObject({ state: 'killed', reason: 'user' });
    expect((await daemon.api.sandboxes()).map((s) => s.id)).not.toContain(id);
    const exec2 = await rawExec({ cmd: ['true'] }, id);
    expect(exec2.status).toBe(409);
    expect(exec2.body.error.code).toBe('sandbox_not_running');
  });
});
