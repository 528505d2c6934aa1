// The official e2b SDK, unchanged, against capsuled and real microVMs: the
// daemon's TCP listener serves e2b's control-plane API (E2B_API_URL) and
// proxies the agent API by the E2b-Sandbox-Id header (E2B_SANDBOX_URL). Plain
// HTTP, asked for by name: this process cannot trust the daemon's self-signed
// certificate (NODE_EXTRA_CA_CERTS is read when node starts); the same SDK over
// TLS runs in a child process in tcp-tls.integration.test.ts.
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { AuthenticationError, CommandExitError, NotFoundError, Sandbox, SandboxNotFoundError, type FilesystemEvent } from 'e2b';
import { eventually, it, TestDaemon } from './fixture.js';

describe('the e2b SDK against capsuled (real QEMU microVMs)', () => {
  const daemon = new TestDaemon({ CAPSULE_LISTEN: 'http://127.0.0.1:0' });
  const saved = { ...process.env };
  let apiKey: string;
  let sandbox: Sandbox;

  beforeAll(async () => {
    await daemon.start();
    const { tcpAddress } = await daemon.api.info();
    apiKey = (await daemon.api.createApiKey('e2b-test')).key;
    // Exactly how a user points the e2b SDK at capsuled.
    process.env.E2B_API_URL = `http://${tcpAddress}`;
    process.env.E2B_SANDBOX_URL = `http://${tcpAddress}`;
    process.env.E2B_API_KEY = apiKey;
    sandbox = await Sandbox.create('base', { timeoutMs: 10 * 60_000, metadata: { suite: 'e2b' }, envs: { FROM_CREATE: 'yes' } });
  });
  afterAll(async () => {
    await sandbox?.kill().catch(() => undefined);
    process.env = saved;
    await daemon.destroy();
  });

  it('runs commands: output, exit codes, stderr, env, cwd and user', async () => {
    const result = await sandbox.commands.run('echo "$FROM_CREATE $EXTRA"; pwd; id -un', {
      envs: { EXTRA: 'extra' },
      cwd: '/tmp',
      user: 'root',
    });
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toBe('yes extra\n/tmp\nroot\n');
    expect((await sandbox.commands.run('id -un')).stdout.trim()).toBe('user');

    const err = await sandbox.commands.run('echo oops >&2; exit 7').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandExitError);
    expect((err as CommandExitError).exitCode).toBe(7);
    expect((err as CommandExitError).stderr).toBe('oops\n');
  });

  it('reconnects to a background process after its first client went away, and feeds stdin', async () => {
    const handle = await sandbox.commands.run('read line; echo "got $line"; sleep 1; echo finished', { background: true, stdin: true });
    await handle.disconnect();
    expect((await sandbox.commands.list()).map((p) => p.pid)).toContain(handle.pid);
    await sandbox.commands.sendStdin(handle.pid, 'hello\n');
    const again = await sandbox.commands.connect(handle.pid);
    const result = await again.wait();
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toContain('finished');
  });

  it('writes and reads back a 100 MiB file with the same checksum', async () => {
    const data = randomBytes(100 * 1024 * 1024);
    const path = '/home/user/big.bin';
    await sandbox.files.write(path, new Blob([data]));
    const back = await sandbox.files.read(path, { format: 'bytes' });
    expect(back.length).toBe(data.length);
    expect(createHash('sha256').update(back).digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
    const sum = await sandbox.commands.run(`sha256sum ${path} | cut -d' ' -f1`);
    expect(sum.stdout.trim()).toBe(createHash('sha256').update(data).digest('hex'));
    await sandbox.files.remove(path);
  });

  it('streams a file up from a ReadableStream and back as a stream, and takes a gzip upload', async () => {
    // A ReadableStream goes up as chunked octet-stream (the bulk port, no length known); gzip over HTTP/2.
    const chunks = Array.from({ length: 24 }, () => randomBytes(1024 * 1024));
    const expected = createHash('sha256');
    for (const chunk of chunks) expected.update(chunk);
    let next = 0;
    const source = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (next < chunks.length) controller.enqueue(chunks[next++]!);
        else controller.close();
      },
    });
    await sandbox.files.write('/home/user/streamed.bin', source);
    const back = await sandbox.files.read('/home/user/streamed.bin', { format: 'stream' });
    const got = createHash('sha256');
    let length = 0;
    for await (const piece of back as unknown as AsyncIterable<Uint8Array>) {
      got.update(piece);
      length += piece.length;
    }
    expect(length).toBe(24 * 1024 * 1024);
    expect(got.digest('hex')).toBe(expected.digest('hex'));

    await sandbox.files.write('/home/user/zipped.txt', 'compressed on the way '.repeat(1000), { gzip: true });
    expect(await sandbox.files.read('/home/user/zipped.txt')).toBe('compressed on the way '.repeat(1000));
    await sandbox.files.remove('/home/user/streamed.bin');
    await sandbox.files.remove('/home/user/zipped.txt');
  });

  it('lists, watches, renames and removes files', async () => {
    await sandbox.files.makeDir('/home/user/w/sub');
    const events: FilesystemEvent[] = [];
    const watch = await sandbox.files.watchDir('/home/user/w', (e) => void events.push(e), { recursive: true });
    await sandbox.files.write('/home/user/w/sub/a.txt', 'alpha');
    await eventually(() => events.find((e) => e.name.endsWith('a.txt')), 20_000, 'a watch event for a.txt');
    await watch.stop();

    const entries = await sandbox.files.list('/home/user/w', { depth: 2 });
    expect(entries.map((e) => e.path).sort()).toEqual(['/home/user/w/sub', '/home/user/w/sub/a.txt']);
    await sandbox.files.rename('/home/user/w/sub/a.txt', '/home/user/w/b.txt');
    expect(await sandbox.files.read('/home/user/w/b.txt')).toBe('alpha');
    expect(await sandbox.files.exists('/home/user/w/sub/a.txt')).toBe(false);
    await sandbox.files.remove('/home/user/w');
    expect(await sandbox.files.exists('/home/user/w')).toBe(false);
  });

  it('reports missing files and processes as not found', async () => {
    await expect(sandbox.files.read('/no/such/file')).rejects.toBeInstanceOf(NotFoundError);
    await expect(sandbox.commands.kill(999_999)).resolves.toBe(false);
  });

  it("computes getHost from the daemon's domain, and that host with the traffic token reaches the sandbox's ports", async () => {
    const host = sandbox.getHost(8080);
    expect(host).toBe(`8080-${sandbox.sandboxId}.localhost`);
    expect(sandbox.trafficAccessToken).toBeTruthy();
    // Nothing listens on 8080: the daemon's 502 shows the request was routed to that port and the token accepted.
    const answer = await new Promise<http.IncomingMessage>((resolve, reject) => {
      http
        .get(`${process.env.E2B_SANDBOX_URL}/`, { headers: { host, 'e2b-traffic-access-token': sandbox.trafficAccessToken! } }, resolve)
        .on('error', reject);
    });
    answer.resume();
    expect(answer.statusCode).toBe(502);
    expect(answer.headers['x-capsule-error']).toBe('port_not_listening');
  });

  it('lists, inspects and times sandboxes through the control plane', async () => {
    const listed = await Sandbox.list({ query: { metadata: { suite: 'e2b' } } }).nextItems();
    expect(listed.map((s) => s.sandboxId)).toEqual([sandbox.sandboxId]);
    expect(listed[0]?.state).toBe('running');
    const info = await sandbox.getInfo();
    expect(info.templateId).toBe('base');
    expect(info.metadata).toEqual({ suite: 'e2b' });
    const [metric] = await sandbox.getMetrics();
    expect(metric?.cpuCount).toBe(1);
    expect(metric?.memTotal).toBeGreaterThan(400 * 1024 * 1024);
    expect(metric?.diskTotal).toBeGreaterThan(metric?.diskUsed ?? Infinity);
    await sandbox.setTimeout(120_000);
    expect((await daemon.api.sandbox(sandbox.sandboxId)).timeoutMs).toBe(120_000);
  });

  it('pauses and resumes through connect, keeping files', async () => {
    await sandbox.files.write('/home/user/kept.txt', 'still here');
    await sandbox.pause();
    expect((await daemon.api.sandbox(sandbox.sandboxId)).state).toBe('paused');
    const resumed = await Sandbox.connect(sandbox.sandboxId);
    expect(await resumed.files.read('/home/user/kept.txt')).toBe('still here');
  });

  it('creates a sandbox without internet access and switches it on with updateNetwork', async () => {
    const offline = await Sandbox.create('base', { allowInternetAccess: false });
    try {
      // The host holds the guest's link down while its network is off.
      const carrier = async () => (await offline.commands.run('cat /sys/class/net/e*/carrier')).stdout.trim();
      expect((await offline.getInfo()).allowInternetAccess).toBe(false);
      expect(await carrier()).toBe('0');
      await offline.updateNetwork({ allowInternetAccess: true });
      expect((await offline.getInfo()).allowInternetAccess).toBe(true);
      expect(await carrier()).toBe('1');
    } finally {
      await offline.kill();
    }
  });

  it('refuses a wrong API key and a wrong sandbox access token, and reports unknown sandboxes', async () => {
    await expect(Sandbox.list({ apiKey: `e2b_${'0'.repeat(40)}` }).nextItems()).rejects.toBeInstanceOf(AuthenticationError);
    // A forged access token for a real sandbox: the proxy refuses it.
    const forged = await fetch(`${process.env.E2B_SANDBOX_URL}/health`, {
      headers: { 'E2b-Sandbox-Id': sandbox.sandboxId, 'X-Access-Token': 'forged' },
    });
    expect(forged.status).toBe(401);
    await expect(Sandbox.connect('sb_doesnotexist')).rejects.toBeInstanceOf(SandboxNotFoundError);
    expect(await Sandbox.kill('sb_doesnotexist')).toBe(false);
  });
});
