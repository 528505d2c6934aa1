// Services inside a sandbox reached through capsuled (real QEMU microVMs, no
// guest network device: everything rides the agent's virtio-serial channel).
// A python3 web server and a python3 WebSocket echo server run in the guest;
// they are reached by host name, by path, through `capsule port-forward` and
// through a published host port, which follows pause, resume and a daemon
// restart. Refusals: nothing listening (502), bad ports and host names (400),
// no or a wrong token over TCP (401/403), a taken host port (409), and the
// per-sandbox tunnel limit (429).
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import type { Duplex } from 'node:stream';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { CapsuleClient } from '@capsule/sdk';
import { cliMain, daemonMain, eventually, it, TestDaemon } from './fixture.js';

const DOMAIN = 'capsule.test';
const WEB_PORT = 8000;
const WS_PORT = 9001;
const HOLD_PORT = 9002;
const CLOSED_PORT = 9999;

const WS_ECHO = String.raw`
import base64, hashlib, socket, struct, threading
def serve(c):
    f = c.makefile('rb')
    request = f.readline().split()
    key = b''
    while True:
        line = f.readline().strip()
        if not line: break
        name, _, value = line.partition(b':')
        if name.strip().lower() == b'sec-websocket-key': key = value.strip()
    accept = base64.b64encode(hashlib.sha1(key + b'258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest())
    c.sendall(b'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ' + accept + b'\r\n\r\n')
    while True:
        head = f.read(2)
        if len(head) < 2: return
        opcode, n = head[0] & 15, head[1] & 127
        if n == 126: n = struct.unpack('>H', f.read(2))[0]
        elif n == 127: n = struct.unpack('>Q', f.read(8))[0]
        mask = f.read(4) if head[1] & 128 else b'\0\0\0\0'
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(f.read(n)))
        if opcode == 8: return c.close()
        reply = request[1] + b' ' + data
        c.sendall(bytes([128 | opcode]) + (bytes([len(reply)]) if len(reply) < 126 else b'\x7e' + struct.pack('>H', len(reply))) + reply)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', ${WS_PORT}))
s.listen(64)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
`;

// Accepts connections and holds them, answering nothing: for the tunnel limit.
const HOLDER = `
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', ${HOLD_PORT}))
s.listen(1024)
held = []
while True: held.append(s.accept()[0])
`;

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function get(
  target: { socketPath: string } | { host: string; port: number },
  path: string,
  headers: Record<string, string> = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ ...target, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** A WebSocket round trip by hand (node 20 has no client): handshake, one masked text frame, its echo. */
async function websocketEcho(
  connect: () => net.Socket,
  path: string,
  headers: Record<string, string>,
  text: string,
): Promise<{ status: string; echo?: string }> {
  const socket = connect();
  await once(socket, 'connect');
  const key = randomBytes(16).toString('base64');
  const lines = Object.entries({
    ...headers,
    Upgrade: 'websocket',
    Connection: 'Upgrade',
    'Sec-WebSocket-Key': key,
    'Sec-WebSocket-Version': '13',
  }).map(([k, v]) => `${k}: ${v}\r\n`);
  socket.write(`GET ${path} HTTP/1.1\r\n${lines.join('')}\r\n`);
  let buffer = Buffer.alloc(0);
  const more = async () => {
    const [chunk] = (await once(socket, 'data')) as [Buffer];
    buffer = Buffer.concat([buffer, chunk]);
  };
  try {
    while (!buffer.includes('\r\n\r\n')) await more();
    const end = buffer.indexOf('\r\n\r\n');
    const head = buffer.subarray(0, end).toString('latin1');
    buffer = buffer.subarray(end + 4);
    const status = head.split('\r\n')[0] ?? '';
    if (!status.includes(' 101 ')) return { status };
    const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
    expect(head.toLowerCase()).toContain(`sec-websocket-accept: ${accept.toLowerCase()}`);
    const payload = Buffer.from(text);
    const mask = randomBytes(4);
    socket.write(Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, payload.map((b, i) => b ^ (mask[i % 4] ?? 0))]));
    while (buffer.length < 2 || buffer.length < 2 + (buffer[1] ?? 0)) await more();
    return { status, echo: buffer.subarray(2, 2 + (buffer[1] ?? 0)).toString('utf8') };
  } finally {
    socket.destroy();
  }
}

describe('ports through the daemon (real QEMU microVMs, no guest network)', () => {
  const daemon = new TestDaemon({ CAPSULE_LISTEN: 'http://127.0.0.1:0', CAPSULE_DOMAIN: DOMAIN });
  let client: CapsuleClient;
  let tcp: { host: string; port: number };
  let apiKey: string;
  let id: string;
  let token: string;
  let published: number;
  const unix = () => ({ socketPath: daemon.socketPath });
  const exec = async (cmd: string, stdin?: string) => {
    const result = await daemon.api.exec(id, ['bash', '-c', cmd], stdin !== undefined ? { stdin } : {});
    expect(result.exitCode, result.stderr).toBe(0);
    return result.stdout;
  };
  const startServers = async () => {
    await exec(`setsid python3 -m http.server ${WEB_PORT} --bind 127.0.0.1 --directory /tmp/www > /tmp/http.log 2>&1 < /dev/null &`);
    await exec('setsid python3 /tmp/ws.py > /tmp/ws.log 2>&1 < /dev/null &');
    await exec('setsid python3 /tmp/holder.py > /tmp/holder.log 2>&1 < /dev/null &');
    let last: Answer | undefined;
    await eventually(
      async () => ((last = await get(unix(), `/v1/sandboxes/${id}/ports/${WEB_PORT}/hello.txt`)).status === 200 ? true : undefined),
      90_000,
      'the web server',
    ).catch(async (err: unknown) => {
      const guest = await daemon.request('POST', `/v1/sandboxes/${id}/exec`, {
        cmd: ['bash', '-c', 'cat /tmp/*.log; ps ax | grep [p]ython'],
      });
      throw new Error(`${String(err)}; last answer ${last?.status} ${last?.body}; in the guest: ${guest.text}`);
    });
  };

  beforeAll(async () => {
    await daemon.start();
    const info = await daemon.api.info();
    expect(info.domain).toBe(DOMAIN);
    const [host, port] = (info.tcpAddress ?? '').split(':');
    tcp = { host: host ?? '', port: Number(port) };
    apiKey = (await daemon.api.createApiKey('ports')).key;
    client = new CapsuleClient({ socketPath: daemon.socketPath });
    const created = await daemon.api.createSandbox({ timeoutMs: 0, ports: [{ guestPort: WEB_PORT }] });
    id = created.id;
    token = created.trafficAccessToken;
    expect(created.domain).toBe(DOMAIN);
    expect(created.ports).toHaveLength(1);
    expect(created.ports[0]).toMatchObject({ hostIp: '127.0.0.1', guestPort: WEB_PORT });
    published = created.ports[0]!.hostPort;
    await exec('mkdir -p /tmp/www && cat > /tmp/www/hello.txt', 'hello from the guest\n');
    await exec('cat > /tmp/ws.py', WS_ECHO);
    await exec('cat > /tmp/holder.py', HOLDER);
    await startServers();
  }, 240_000);

  afterAll(async () => {
    client?.close();
    await daemon.destroy();
  });

  it('serves a port by host name `<port>-<id>.<domain>`', async () => {
    const answer = await get(unix(), '/hello.txt', { host: `${WEB_PORT}-${id}.${DOMAIN}:3000` });
    expect(answer.status).toBe(200);
    expect(answer.body).toBe('hello from the guest\n');
  });

  it('serves a port by path, the rest of the path going to the service', async () => {
    const answer = await get(unix(), `/v1/sandboxes/${id}/ports/${WEB_PORT}/hello.txt`);
    expect(answer.status).toBe(200);
    expect(answer.body).toBe('hello from the guest\n');
    const missing = await get(unix(), `/v1/sandboxes/${id}/ports/${WEB_PORT}/nope.txt`);
    // The service's own 404, not one of the daemon's.
    expect(missing.status).toBe(404);
    expect(missing.headers['x-capsule-error']).toBeUndefined();
  });

  it('fetches through the SDK, which sends the traffic token', async () => {
    const response = await client.fetchPort(id, WEB_PORT, '/hello.txt');
    expect(response.status).toBe(200);
    const chunks: Uint8Array[] = [];
    for await (const chunk of response.body) chunks.push(chunk);
    expect(Buffer.concat(chunks).toString()).toBe('hello from the guest\n');
    await expect(client.fetchPort(id, CLOSED_PORT)).rejects.toMatchObject({ code: 'port_not_listening' });
  });

  it('relays a WebSocket both ways, by host name and by path', async () => {
    const byHost = await websocketEcho(() => net.connect(daemon.socketPath), '/chat', { Host: `${WS_PORT}-${id}.${DOMAIN}` }, 'ping');
    expect(byHost).toEqual({ status: 'HTTP/1.1 101 Switching Protocols', echo: '/chat ping' });
    const byPath = await websocketEcho(
      () => net.connect(tcp.port, tcp.host),
      `/v1/sandboxes/${id}/ports/${WS_PORT}/room`,
      { Host: 'x', 'e2b-traffic-access-token': token },
      'pong',
    );
    expect(byPath).toEqual({ status: 'HTTP/1.1 101 Switching Protocols', echo: '/room pong' });
  });

  it('answers 502 port_not_listening, with a hint, when nothing listens', async () => {
    for (const answer of [
      await get(unix(), `/v1/sandboxes/${id}/ports/${CLOSED_PORT}/`),
      await get(unix(), '/', { host: `${CLOSED_PORT}-${id}.${DOMAIN}` }),
    ]) {
      expect(answer.status).toBe(502);
      expect(answer.headers['x-capsule-error']).toBe('port_not_listening');
      expect(JSON.parse(answer.body).error).toMatchObject({ code: 'port_not_listening', hint: expect.stringContaining('listening') });
    }
    const ws = await websocketEcho(() => net.connect(daemon.socketPath), '/', { Host: `${CLOSED_PORT}-${id}.${DOMAIN}` }, 'x');
    expect(ws.status).toBe('HTTP/1.1 502 Bad Gateway');
  });

  it('refuses bad ports, malformed host names and unknown sandboxes with stable codes', async () => {
    const cases: Array<[string, Record<string, string>, number, string]> = [
      [`/v1/sandboxes/${id}/ports/0/`, {}, 400, 'invalid_argument'],
      [`/v1/sandboxes/${id}/ports/65536/`, {}, 400, 'invalid_argument'],
      ['/', { host: `70000-${id}.${DOMAIN}` }, 400, 'invalid_argument'],
      ['/', { host: `www.${DOMAIN}` }, 400, 'invalid_argument'],
      ['/', { host: `80-${id}.x.${DOMAIN}` }, 400, 'invalid_argument'],
      ['/v1/sandboxes/sb_aaaaaaaaaaaaaaaaaaaa/ports/80/', {}, 404, 'sandbox_not_found'],
      ['/', { host: `80-sb_aaaaaaaaaaaaaaaaaaaa.${DOMAIN}` }, 404, 'sandbox_not_found'],
    ];
    for (const [path, headers, status, code] of cases) {
      const answer = await get(unix(), path, headers);
      expect(answer.status, `${path} ${JSON.stringify(headers)}`).toBe(status);
      expect(JSON.parse(answer.body).error.code).toBe(code);
    }
    // The daemon's own API is still served by its usual host names.
    expect((await get(unix(), '/v1/info', { host: DOMAIN })).status).toBe(200);
  });

  it('over TCP needs the traffic token or an API key, and refuses another sandbox’s token', async () => {
    const other = await daemon.api.createSandbox({ timeoutMs: 0 });
    await daemon.api.removeSandbox(other.id);
    const path = `/v1/sandboxes/${id}/ports/${WEB_PORT}/hello.txt`;
    const none = await get(tcp, path);
    expect(none.status).toBe(401);
    expect(none.headers['x-capsule-error']).toBe('unauthenticated');
    const foreign = await get(tcp, path, { 'e2b-traffic-access-token': other.trafficAccessToken });
    expect(foreign.status).toBe(403);
    expect(JSON.parse(foreign.body).error.code).toBe('permission_denied');
    expect((await get(tcp, '/hello.txt', { host: `${WEB_PORT}-${id}.${DOMAIN}`, 'e2b-traffic-access-token': 'forged' })).status).toBe(403);
    expect((await get(tcp, path, { 'e2b-traffic-access-token': token })).body).toBe('hello from the guest\n');
    expect((await get(tcp, path, { 'x-api-key': apiKey })).status).toBe(200);
    expect((await get(tcp, '/hello.txt', { host: `${WEB_PORT}-${id}.${DOMAIN}`, 'e2b-traffic-access-token': token })).status).toBe(200);
  });

  it('forwards a local port with `capsule port-forward`, and Ctrl-C closes it', async () => {
    const child = spawn(process.execPath, [cliMain, 'port-forward', '--socket', daemon.socketPath, id, `0:${WEB_PORT}`], {
      env: { ...daemon.env, CAPSULED_BIN: daemonMain },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    try {
      const [line] = (await once(child.stdout, 'data')) as [Buffer];
      const [host, port] = line.toString().trim().split(':');
      const target = { host: host ?? '', port: Number(port) };
      for (let i = 0; i < 3; i++) expect((await get(target, '/hello.txt')).body).toBe('hello from the guest\n');
      child.kill('SIGINT');
      const [code] = (await once(child, 'exit')) as [number];
      expect(code, stderr).toBe(0);
      await expect(get(target, '/hello.txt')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('bounds the tunnels one sandbox holds: the next is refused with too_many_tunnels, and they come back once closed', async () => {
    // Over TCP, so that a tunnel can be reset (a unix socket only ends).
    const overTcp = new CapsuleClient({ ...tcp, apiKey, tls: false });
    const tunnels: Duplex[] = [];
    try {
      // A few at a time: a slow guest (TCG on a busy host) accepts hundreds at once only slowly.
      while (tunnels.length < 256) {
        const batch = await Promise.allSettled(Array.from({ length: 16 }, () => overTcp.openPortTunnel(id, HOLD_PORT)));
        for (const outcome of batch) if (outcome.status === 'fulfilled') tunnels.push(outcome.value);
        const failed = batch.find((outcome) => outcome.status === 'rejected');
        if (failed) throw failed.reason;
      }
      await expect(overTcp.openPortTunnel(id, HOLD_PORT)).rejects.toMatchObject({ code: 'too_many_tunnels', status: 429 });
      const refused = await get(unix(), `/v1/sandboxes/${id}/ports/${WEB_PORT}/hello.txt`);
      expect(refused.status).toBe(429);
    } finally {
      // A reset, not an end: the holder never closes its side, so a half-close would (rightly) keep each tunnel open.
      for (const tunnel of tunnels) (tunnel as net.Socket).resetAndDestroy();
      overTcp.close();
    }
    await eventually(
      async () => ((await get(unix(), `/v1/sandboxes/${id}/ports/${WEB_PORT}/hello.txt`)).status === 200 ? true : undefined),
      30_000,
      'tunnels released',
    );
  });

  it('serves the published host port, refuses a create that asks for it again, and keeps it across pause, resume and a daemon restart', async () => {
    const direct = { host: '127.0.0.1', port: published };
    expect((await get(direct, '/hello.txt')).body).toBe('hello from the guest\n');

    const before = (await daemon.api.sandboxes()).length;
    const clash = await daemon.request('POST', '/v1/sandboxes', { ports: [{ hostPort: published, guestPort: 80 }] });
    expect(clash.status).toBe(409);
    expect(clash.body.error).toMatchObject({ code: 'host_port_unavailable', hint: expect.any(String) });
    expect(await daemon.api.sandboxes()).toHaveLength(before);

    await daemon.api.pause(id);
    await expect(get(direct, '/hello.txt')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    await daemon.api.resume(id);
    expect((await get(direct, '/hello.txt')).body).toBe('hello from the guest\n');

    await daemon.stop();
    await expect(get(direct, '/hello.txt')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    await daemon.start();
    expect((await get(direct, '/hello.txt')).body).toBe('hello from the guest\n');
    expect((await daemon.api.sandbox(id)).ports).toEqual([{ hostIp: '127.0.0.1', hostPort: published, guestPort: WEB_PORT }]);

    await daemon.api.removeSandbox(id);
    await expect(get(direct, '/hello.txt')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  }, 120_000);
});
