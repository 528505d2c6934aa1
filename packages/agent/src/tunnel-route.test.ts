// POST /capsule/tunnel against the bundled agent on a unix socket: bytes both
// ways to a TCP server on this host's loopback (standing in for the guest's),
// half-close, a refused port answered at once, bad ports, and 4 MiB relayed
// through a reader that pauses (backpressure, not buffering).
import { randomBytes } from 'node:crypto';
import type http2 from 'node:http2';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tunnelErrorHeader } from '@capsule/protocol/agent';
import { useAgentForFile, type RunningAgent } from '../test/agent-fixture.js';
import { plainRequest, startRequest } from '../test/plain-http-client.js';
import { tunnelPort } from './tunnel-route.js';

let agent: RunningAgent;
let session: http2.ClientHttp2Session;
let echo: net.Server;
let echoPort = 0;

useAgentForFile((started) => {
  agent = started;
  session = agent.http2Session();
});

beforeAll(async () => {
  // Echoes what it gets, upper-cased, and ends its side when the client ends its own.
  echo = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('data', (chunk: Buffer) => socket.write(chunk.toString('latin1').toUpperCase(), 'latin1'));
    socket.on('end', () => socket.end('<bye>'));
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
  echoPort = (echo.address() as net.AddressInfo).port;
});

afterAll(async () => {
  session?.close();
  await new Promise((resolve) => echo.close(resolve));
});

/** A free loopback port: bound, then released. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('tunnelPort', () => {
  it('takes 1-65535 only', () => {
    expect(tunnelPort('/capsule/tunnel?port=80')).toBe(80);
    expect(tunnelPort('/capsule/tunnel?port=65535')).toBe(65535);
    for (const bad of ['0', '65536', '-1', '8.5', 'abc', '', '0x50', '123456'])
      expect(tunnelPort(`/capsule/tunnel?port=${bad}`)).toBeUndefined();
    expect(tunnelPort('/capsule/tunnel')).toBeUndefined();
  });
});

describe('POST /capsule/tunnel', () => {
  it('relays bytes both ways and passes a half-close on', async () => {
    const { status, stream } = await startRequest(session, { method: 'POST', path: `/capsule/tunnel?port=${echoPort}`, body: undefined });
    // startRequest ended our side at once (no body): the server saw EOF and said goodbye.
    expect(status).toBe(200);
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).toString()).toBe('<bye>');
  });

  it('carries a conversation before the end', async () => {
    const stream = session.request({ ':method': 'POST', ':path': `/capsule/tunnel?port=${echoPort}` });
    const headers = await new Promise<http2.IncomingHttpHeaders>((resolve) => stream.once('response', resolve));
    expect(headers[':status']).toBe(200);
    stream.write('hello ');
    const first = await new Promise<Buffer>((resolve) => stream.once('data', resolve));
    expect(first.toString()).toBe('HELLO ');
    stream.end('world');
    const rest: Buffer[] = [];
    for await (const chunk of stream) rest.push(chunk as Buffer);
    expect(Buffer.concat(rest).toString()).toBe('WORLD<bye>');
  });

  it('answers 502 "refused" at once when nothing listens', async () => {
    const port = await closedPort();
    const response = await plainRequest(session, { method: 'POST', path: `/capsule/tunnel?port=${port}` });
    expect(response.status).toBe(502);
    expect(response.headers[tunnelErrorHeader]).toBe('refused');
    expect(response.json()).toMatchObject({ code: 502, message: `nothing listens on port ${port} in the sandbox` });
  });

  it('refuses ports out of range and other methods', async () => {
    for (const port of ['0', '70000', 'x']) {
      const response = await plainRequest(session, { method: 'POST', path: `/capsule/tunnel?port=${port}` });
      expect(response.status).toBe(400);
      expect(response.headers[tunnelErrorHeader]).toBe('bad_port');
    }
    expect((await plainRequest(session, { method: 'GET', path: `/capsule/tunnel?port=${echoPort}` })).status).toBe(405);
  });

  it('relays 4 MiB to a reader that stops for a while, and the data arrives intact', async () => {
    const sink = net.createServer((socket) => {
      const payload = randomBytes(4 * 1024 * 1024);
      socket.on('error', () => undefined);
      socket.end(payload);
      (sink as net.Server & { payload?: Buffer }).payload = payload;
    });
    await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
    try {
      const port = (sink.address() as net.AddressInfo).port;
      const { status, stream } = await startRequest(session, { method: 'POST', path: `/capsule/tunnel?port=${port}` });
      expect(status).toBe(200);
      stream.pause();
      await sleep(300);
      const chunks: Buffer[] = [];
      for await (const chunk of stream) chunks.push(chunk as Buffer);
      expect(Buffer.concat(chunks).equals((sink as net.Server & { payload?: Buffer }).payload!)).toBe(true);
    } finally {
      await new Promise((resolve) => sink.close(resolve));
    }
  });
});
