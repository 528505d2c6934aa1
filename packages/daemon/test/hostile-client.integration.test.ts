// Hostile API clients against a real daemon (TCP with keys, and the unix
// socket): malformed requests answered with 4xx and a stable code, never a
// crash; client credentials never reaching a sandbox's agent or its ports.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CapsuleClient } from '@capsule/sdk';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { eventually, it, sharedCacheDir, TestDaemon } from './fixture.js';
import { daemonEndpoints, runFuzz } from './fuzz/api-fuzzer.mjs';
import { makeTar, type TestTarEntry } from './oci/tar-writer.js';

/** A service for the guest: answers every GET with the headers it got (as JSON) and sets cookies, one scoped to the daemon's domain. */
const HEADER_ECHO = `
import http.server, json
class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == '/ws':
            # A WebSocket handshake whose answer sets cookies, one for the daemon's whole domain; then a first frame's bytes.
            self.protocol_version = 'HTTP/1.1'
            self.send_response(101)
            self.send_header('Upgrade', 'websocket')
            self.send_header('Connection', 'Upgrade')
            self.send_header('Set-Cookie', 'sibling=1; Domain=localhost; Path=/')
            self.send_header('Set-Cookie', 'own=1; Path=/')
            self.end_headers()
            self.wfile.write(b'after-the-handshake')
            self.close_connection = True
            return
        body = json.dumps([[k.lower(), v] for k, v in self.headers.items()]).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Set-Cookie', 'sibling=1; Domain=localhost; Path=/')
        self.send_header('Set-Cookie', 'parent=1; Path=/; domain=.LOCALHOST; HttpOnly')
        self.send_header('Set-Cookie', 'own=1; Path=/')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(('127.0.0.1', 8000), Echo).serve_forever()
`;
const ECHO_PORT = 8000;

function rssKiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
}

/** One raw HTTP/1.1 exchange (the request written as given, bytes and all); resolves to the status line and the body. */
function rawExchange(connect: () => net.Socket, request: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect();
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text });
    });
    socket.write(request);
  });
}

describe('hostile API clients (real daemon, TCP and unix socket)', () => {
  const daemon = new TestDaemon({ CAPSULE_LISTEN: 'http://127.0.0.1:0' });
  let tcp: { host: string; port: number };
  let apiKey: string;
  let id: string;
  let accessToken: string;
  let trafficToken: string;
  const overTcp = () => net.connect(tcp.port, tcp.host);
  const exec = async (cmd: string, stdin?: string) => {
    const result = await daemon.api.exec(id, ['bash', '-c', cmd], stdin !== undefined ? { stdin } : {});
    expect(result.exitCode, result.stderr).toBe(0);
    return result.stdout;
  };
  /** A GET over TCP to the echo service by `path` with `headers`; the headers the service saw, and the Set-Cookie lines that came back. */
  const echoOverTcp = async (path: string, headers: Record<string, string>) => {
    const lines = Object.entries({ Host: 'localhost', Connection: 'close', ...headers }).map(([k, v]) => `${k}: ${v}\r\n`);
    const answer = await rawExchange(overTcp, `GET ${path} HTTP/1.1\r\n${lines.join('')}\r\n`);
    expect(answer.status, answer.text).toBe(200);
    const [head = '', body = ''] = answer.text.split('\r\n\r\n');
    const seen = new Map((JSON.parse(body) as Array<[string, string]>).map(([k, v]) => [k, v]));
    const cookies = head
      .split('\r\n')
      .filter((line) => /^set-cookie:/i.test(line))
      .map((line) => line.slice(line.indexOf(':') + 1).trim());
    return { seen, cookies };
  };

  beforeAll(async () => {
    await daemon.start();
    const [host, port] = ((await daemon.api.info()).tcpAddress ?? '').split(':');
    tcp = { host: host ?? '', port: Number(port) };
    apiKey = (await daemon.api.createApiKey('hostile')).key;
    const created = await daemon.api.createSandbox({ timeoutMs: 0 });
    id = created.id;
    trafficToken = created.trafficAccessToken;
    accessToken = (await daemon.request('GET', `/sandboxes/${id}`)).body.envdAccessToken;
    expect(accessToken).toBeTruthy();
    await exec('cat > /tmp/echo.py', HEADER_ECHO);
    await exec('setsid python3 /tmp/echo.py > /tmp/echo.log 2>&1 < /dev/null &');
    await eventually(
      async () => ((await daemon.request('GET', `/v1/sandboxes/${id}/ports/${ECHO_PORT}/`)).status === 200 ? true : undefined),
      90_000,
      'the echo service',
    );
  }, 240_000);

  afterAll(async () => {
    await daemon.destroy();
  });

  it('a bad percent-encoding in an agent path, unauthenticated over TCP, is a 400 and the daemon lives on', async () => {
    const pid = daemon.pid;
    const answer = await rawExchange(overTcp, 'GET /v1/sandboxes/%/envd/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expect(answer.status, answer.text).toBe(400);
    expect(answer.text).toContain('"invalid_argument"');
    expect(daemon.ended).toBeUndefined();
    expect((await daemon.request('GET', '/health')).status).toBe(200);
    expect(daemon.pid).toBe(pid);
  });

  it('a seeded fuzz run of 10,000 hostile requests over TCP and the socket leaves the same daemon, no undocumented 5xx, RSS near its start', async () => {
    const pid = daemon.pid ?? 0;
    const endpoints = daemonEndpoints({ tcpHost: tcp.host, tcpPort: tcp.port, socketPath: daemon.socketPath });
    const target = { sandboxId: id, apiKey, accessToken, trafficToken, domain: 'localhost' };
    // A first round warms the daemon up (JIT, pools), so that RSS is compared from a settled start.
    await runFuzz({ seed: 7, requests: 500, timeLimitMs: 20_000, endpoints, target });
    const rssBefore = rssKiB(pid);
    const seed = Number(process.env.CAPSULE_FUZZ_SEED ?? 20261207);
    const result = await runFuzz({ seed, requests: 10_000, timeLimitMs: 55_000, endpoints, target });
    console.log(
      `fuzz seed ${seed}: ${JSON.stringify({ sent: result.sent, byStatus: result.byStatus, byOutcome: result.byOutcome, byKind: result.byKind })}`,
    );
    expect(result.undocumented, JSON.stringify(result.undocumented.slice(0, 5), null, 1)).toEqual([]);
    expect(result.sent).toBe(10_000);
    expect(daemon.ended).toBeUndefined();
    expect(daemon.pid).toBe(pid);
    expect((await daemon.request('GET', '/health')).status).toBe(200);
    // The sandbox that took the agent and port traffic still works.
    expect(await exec('echo alive')).toBe('alive\n');
    // Memory back near its start: a generous margin, GC runs when it likes.
    const rssAfter = await eventually(
      async () => {
        const now = rssKiB(pid);
        return now < rssBefore + 96 * 1024 ? now : (await sleep(500), undefined);
      },
      20_000,
      `daemon RSS back within 96 MiB of ${rssBefore} KiB`,
    );
    console.log(`daemon RSS ${Math.round(rssBefore / 1024)} MiB before, ${Math.round(rssAfter / 1024)} MiB after`);
  }, 180_000);

  it("20,000 agent requests with lying and cut-short bodies never stop the daemon (Node 20's http2 loop, nodejs/node#52952) nor reach another sandbox", async () => {
    // Seed 424242 narrowed to agent requests hung the old daemon within seconds: an upload broken off by
    // its client reset the agent stream under queued body bytes, and nghttp2 looped on it, filling memory.
    // The attack goes to a sandbox of its own; the echo sandbox stands for every other tenant.
    const pid = daemon.pid ?? 0;
    const attacked = await daemon.api.createSandbox({ timeoutMs: 0 });
    try {
      const endpoints = daemonEndpoints({ tcpHost: tcp.host, tcpPort: tcp.port, socketPath: daemon.socketPath });
      const attackedToken = (await daemon.request('GET', `/sandboxes/${attacked.id}`)).body.envdAccessToken;
      const target = {
        sandboxId: attacked.id,
        apiKey,
        accessToken: attackedToken,
        trafficToken: attacked.trafficAccessToken,
        domain: 'localhost',
      };
      const rssBefore = rssKiB(pid);
      const result = await runFuzz({
        seed: 424242,
        requests: 20_000,
        timeLimitMs: 100_000,
        endpoints,
        target,
        kinds: ['agent-path', 'agent-header'],
      });
      console.log(`agent fuzz: ${JSON.stringify({ sent: result.sent, byStatus: result.byStatus, byOutcome: result.byOutcome })}`);
      expect(result.unanswered, JSON.stringify(result.unanswered.slice(0, 3), null, 1)).toEqual([]);
      expect(result.sent).toBe(20_000);
      expect(daemon.pid).toBe(pid);
      expect((await daemon.request('GET', '/health')).status).toBe(200);
      expect(await exec('echo alive')).toBe('alive\n');
      await eventually(
        async () => (rssKiB(pid) < rssBefore + 96 * 1024 ? true : (await sleep(500), undefined)),
        20_000,
        `daemon RSS back within 96 MiB of ${rssBefore} KiB`,
      );
    } finally {
      await daemon.api.removeSandbox(attacked.id);
    }
  }, 180_000);

  it("the client's API key and tokens never reach a sandbox's port service (by path, by host name, over an upgrade)", async () => {
    const credentials = {
      'X-API-Key': apiKey,
      Authorization: `Bearer ${apiKey}`,
      'X-Access-Token': accessToken,
      'e2b-traffic-access-token': trafficToken,
    };
    for (const [path, host] of [
      [`/v1/sandboxes/${id}/ports/${ECHO_PORT}/`, 'localhost'],
      ['/', `${ECHO_PORT}-${id}.localhost`],
    ] as const) {
      const { seen } = await echoOverTcp(path, { ...credentials, Host: host, 'X-Own-Header': 'kept' });
      expect(seen.get('x-own-header'), path).toBe('kept');
      for (const name of ['x-api-key', 'authorization', 'x-access-token', 'e2b-traffic-access-token'])
        expect(seen.get(name), `${name} via ${path}`).toBeUndefined();
      expect([...seen.values()].join('\n')).not.toContain(apiKey);
    }
    // An upgrade is relayed as bytes after its head; the head is rewritten all the same.
    const upgraded = await rawExchange(
      overTcp,
      `GET /v1/sandboxes/${id}/ports/${ECHO_PORT}/ HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        `${Object.entries(credentials)
          .map(([k, v]) => `${k}: ${v}\r\n`)
          .join('')}\r\n`,
    );
    expect(upgraded.text).toContain('"upgrade"');
    expect(upgraded.text).not.toContain(apiKey);
    expect(upgraded.text).not.toContain(accessToken);
    expect(upgraded.text).not.toContain(trafficToken);
  });

  it('a port service cannot set cookies for its sibling sandboxes’ host names (Set-Cookie Domain dropped, Path kept under the port)', async () => {
    const byHost = await echoOverTcp('/', { 'X-API-Key': apiKey, Host: `${ECHO_PORT}-${id}.localhost` });
    expect(byHost.cookies).toHaveLength(3);
    for (const cookie of byHost.cookies) expect(cookie, cookie).not.toMatch(/domain/i);
    expect(byHost.cookies).toContain('sibling=1; Path=/');
    expect(byHost.cookies).toContain('parent=1; Path=/; HttpOnly');
    expect(byHost.cookies).toContain('own=1; Path=/');
    // By path every sandbox shares the daemon's host name: the cookie's path is the port's own prefix.
    const byPath = await echoOverTcp(`/v1/sandboxes/${id}/ports/${ECHO_PORT}/`, { 'X-API-Key': apiKey });
    for (const cookie of byPath.cookies) expect(cookie, cookie).not.toMatch(/domain/i);
    expect(byPath.cookies).toContain(`own=1; Path=/v1/sandboxes/${id}/ports/${ECHO_PORT}/`);
  });

  it('a port service cannot set cookies for its siblings through a WebSocket handshake either (101 head rewritten, bytes after it relayed)', async () => {
    const handshake = (path: string, host: string) =>
      rawExchange(
        overTcp,
        `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-API-Key: ${apiKey}\r\n\r\n`,
      );
    for (const [path, host, ownPath] of [
      ['/ws', `${ECHO_PORT}-${id}.localhost`, '/'],
      [`/v1/sandboxes/${id}/ports/${ECHO_PORT}/ws`, 'localhost', `/v1/sandboxes/${id}/ports/${ECHO_PORT}/`],
    ] as const) {
      const answer = await handshake(path, host);
      expect(answer.status, answer.text).toBe(101);
      const [head = '', rest = ''] = answer.text.split('\r\n\r\n');
      const cookies = head
        .split('\r\n')
        .filter((line) => /^set-cookie:/i.test(line))
        .map((line) => line.slice(line.indexOf(':') + 1).trim());
      expect(cookies, head).toHaveLength(2);
      for (const cookie of cookies) expect(cookie, cookie).not.toMatch(/domain/i);
      expect(cookies).toContain(`own=1; Path=${ownPath}`);
      expect(head).toMatch(/^upgrade: websocket$/im);
      expect(rest).toBe('after-the-handshake');
    }
  });

  /** A POST over TCP with the API key; the status and the whole answer. */
  const postOverTcp = async (urlPath: string, contentType: string, body: Buffer) => {
    const head = `POST ${urlPath} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: ${apiKey}\r\nContent-Type: ${contentType}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
    return await rawExchange(overTcp, Buffer.concat([Buffer.from(head), body]).toString('latin1'));
  };

  it("any key holder reads host files: a build contextDir and an image import path over TCP are refused 403, the host's files never read", async () => {
    const decoy = path.join(daemon.root, 'shadow-decoy');
    fs.writeFileSync(decoy, 'root:$6$decoy:19000:0:99999:7:::\n', { mode: 0o600 });
    const build = await postOverTcp(
      '/v1/templates/build',
      'application/json',
      Buffer.from(JSON.stringify({ name: 'leak', capsulefile: 'FROM base\nCOPY passwd /leak\n', contextDir: '/etc' })),
    );
    expect(build.status, build.text).toBe(403);
    expect(build.text).toContain('"permission_denied"');
    expect(build.text).toContain('application/x-tar');
    const imported = await postOverTcp('/v1/images/import', 'application/json', Buffer.from(JSON.stringify({ path: decoy })));
    expect(imported.status, imported.text).toBe(403);
    expect(imported.text).toContain('"permission_denied"');
    expect(imported.text).not.toContain('decoy:19000');
    // Over the unix socket, the local user's paths still work (a missing one is a 400 before anything is read).
    const local = await daemon.request('POST', '/v1/images/import', { path: path.join(daemon.root, 'missing.tar') });
    expect(local.status, local.text).toBe(400);
  });

  it('a build context with a traversal, an absolute path or a symlink escape, uploaded over TCP, is refused 400 and nothing is written outside', async () => {
    const outside = path.join(daemon.root, 'escaped');
    const capsulefile: TestTarEntry = { path: 'Capsulefile', content: 'FROM base\nCOPY x /x\n' };
    for (const [what, entries] of [
      ['../ traversal', [capsulefile, { path: '../escaped', content: 'pwned' }]],
      ['nested traversal', [capsulefile, { path: 'a/../../escaped', content: 'pwned' }]],
      ['absolute path', [capsulefile, { path: outside, content: 'pwned' }]],
      [
        'symlink escape',
        [capsulefile, { path: 'link', type: 'symlink', linkpath: daemon.root }, { path: 'link/escaped', content: 'pwned' }],
      ],
      ['hard link', [capsulefile, { path: 'hard', type: 'hardlink', linkpath: '/etc/passwd' }]],
    ] as Array<[string, TestTarEntry[]]>) {
      const answer = await postOverTcp('/v1/templates/build?name=escape', 'application/x-tar', makeTar(entries));
      expect(answer.status, `${what}: ${answer.text}`).toBe(400);
      expect(answer.text, what).toContain('"invalid_argument"');
      expect(fs.existsSync(outside), what).toBe(false);
    }
    expect(fs.readdirSync('/tmp').filter((name) => name.startsWith(`capsule-build-context-${daemon.pid}-`))).toEqual([]);
  });

  it('a build context uploaded as a tar over TCP (the SDK with a key) builds the template, COPY reading from the upload', async () => {
    // Unique content, so that no cached step of an earlier run stands in for this one.
    const hello = `hello from the upload ${process.pid}-${Date.now()}\n`;
    const tar = makeTar([
      { path: 'Capsulefile', content: 'FROM base\nCOPY app /srv/app\nRUN cat /srv/app/hello.txt\n' },
      { path: 'app', type: 'directory' },
      { path: 'app/hello.txt', content: hello },
    ]);
    const client = new CapsuleClient({ host: tcp.host, port: tcp.port, apiKey, tls: false });
    try {
      // The upload is unpacked in the image cache's temp folder, which a restarted daemon sweeps, and removed after the build.
      const tmpDir = path.join(sharedCacheDir, 'images', 'tmp');
      const uploadFolders = () =>
        fs.existsSync(tmpDir) ? fs.readdirSync(tmpDir).filter((name) => name.startsWith(`context-${daemon.pid}-`)) : [];
      let foldersDuringBuild: string[] = [];
      const logs: string[] = [];
      const template = await client.buildTemplateFromContext('uploaded', tar, {
        onEvent: (event) => {
          if (foldersDuringBuild.length === 0) foldersDuringBuild = uploadFolders();
          if (event.type === 'log') logs.push(event.text);
        },
      });
      expect(template.name).toBe('uploaded');
      expect(logs.join('')).toContain(hello);
      expect(foldersDuringBuild).toHaveLength(1);
      // Removed once the build's answer is sent, so a moment after the client has it.
      await eventually(() => (uploadFolders().length === 0 ? true : undefined), 10_000, 'the upload folder removed');
    } finally {
      client.close();
    }
  }, 300_000);
});
