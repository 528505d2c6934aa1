import http from 'node:http';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { limitServer, requestBodyDeadline, serverOptions, type ServerLimits } from './server-limits.js';

const limits: ServerLimits = {
  headersTimeoutMs: 300,
  requestBodyTimeoutMs: 300,
  uploadBodyTimeoutMs: 300,
  maxHeaderBytes: 16 * 1024,
  maxConnections: 3,
  checkIntervalMs: 100,
};

/** Writes `bytes` (and, unless `keepOpen`, nothing more) and collects the answer until the server closes. */
function exchange(port: number, bytes: string, keepOpen = true): Promise<{ status: number; text: string }> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let text = '';
    socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
    const done = () => resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text });
    socket.on('end', () => {
      socket.destroy();
      done();
    });
    socket.on('error', done);
    socket.write(bytes);
    if (!keepOpen) socket.end();
  });
}

describe('server limits (a real http.Server on loopback, narrowed limits)', () => {
  const servers: http.Server[] = [];
  afterEach(async () => {
    for (const server of servers.splice(0)) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  async function serve(listener: http.RequestListener = (_req, res) => res.end('ok')): Promise<number> {
    const server = http.createServer(serverOptions(limits), listener);
    limitServer(server, limits);
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return (server.address() as net.AddressInfo).port;
  }

  it('a client that never finishes its request head (slowloris) is answered 408 request_timeout and closed', {
    timeout: 10_000,
  }, async () => {
    const port = await serve();
    const answer = await exchange(port, 'GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    expect(answer.status, answer.text).toBe(408);
    expect(answer.text).toContain('"request_timeout"');
  });

  it("a request head over the size limit is a 400 invalid_argument in the daemon's error shape", async () => {
    const port = await serve();
    const answer = await exchange(port, `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(20_000)}\r\n\r\n`);
    expect(answer.status, answer.text).toBe(400);
    expect(JSON.parse(answer.text.slice(answer.text.indexOf('{')))).toMatchObject({
      error: { code: 'invalid_argument', hint: expect.any(String) },
    });
  });

  it('a request Node cannot parse is a 400 invalid_argument with a hint, not a bare 400', async () => {
    const port = await serve();
    const answer = await exchange(port, 'GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n');
    expect(answer.status).toBe(400);
    expect(answer.text).toContain('"invalid_argument"');
  });

  it('a listener holds at most maxConnections: the next is closed at once, and a freed slot serves again', {
    timeout: 10_000,
  }, async () => {
    const port = await serve();
    const held = await Promise.all(
      Array.from(
        { length: limits.maxConnections },
        () =>
          new Promise<net.Socket>((resolve) => {
            const s = net.connect(port, '127.0.0.1', () => resolve(s));
          }),
      ),
    );
    // Held connections are counted once the server has accepted them; an answered request proves it for each.
    for (const socket of held) {
      socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      await new Promise((resolve) => socket.once('data', resolve));
    }
    const refused = await exchange(port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    expect(refused.status).toBe(0);
    held[0]?.destroy();
    await new Promise((resolve) => held[0]?.once('close', resolve));
    let served = 0;
    // The server learns of the freed slot a little after the client: try until it has.
    for (let attempt = 0; attempt < 50 && served !== 200; attempt++)
      served = (await exchange(port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).status;
    expect(served).toBe(200);
    for (const socket of held) socket.destroy();
  });

  it("a body trickled to the daemon's own routes is answered 408 request_timeout when its deadline passes", {
    timeout: 10_000,
  }, async () => {
    const port = await serve((req, res) => {
      requestBodyDeadline(req, res, limits.requestBodyTimeoutMs);
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    const answer = await exchange(
      port,
      'POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"te',
    );
    expect(answer.status, answer.text).toBe(408);
    expect(answer.text).toContain('"request_timeout"');
    // A whole body in time is served.
    expect((await exchange(port, 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}')).status).toBe(200);
  });
});
