// Hostile API clients against a real daemon (TCP with keys, and the unix
// socket): malformed requests answered with 4xx and a stable code, never a
// crash; client credentials never reaching a sandbox's agent or its ports.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestDaemon } from './fixture.js';

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
  const daemon = new TestDaemon({ CAPSULE_LISTEN: '127.0.0.1:0' });
  let tcp: { host: string; port: number };
  const overTcp = () => net.connect(tcp.port, tcp.host);

  beforeAll(async () => {
    await daemon.start();
    const info = await daemon.request('GET', '/v1/info');
    const [host, port] = (info.body.tcpAddress as string).split(':');
    tcp = { host: host ?? '', port: Number(port) };
  });

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
});
