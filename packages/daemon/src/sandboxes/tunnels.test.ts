import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { PassThrough } from 'node:stream';
import { closeWhenIdle, joinToTunnel } from './tunnels.js';

/**
 * Two real TCP connections on loopback, both ends half-open capable as the
 * daemon's are: `client` (a user) ↔ `clientSide`, and `tunnelSide` ↔
 * `service` (standing in for the HTTP/2 tunnel stream to the guest).
 */
async function connectionPair(): Promise<{ near: net.Socket; far: net.Socket; close: () => void }> {
  const server = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const far = net.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  const near = await accepted;
  return { near, far, close: () => server.close() };
}

/**
 * Resolves when the other end of `socket` is gone: with allowHalfOpen a peer's
 * close arrives as 'end' (or a reset), and this end stays open until told.
 */
const peerGone = (socket: net.Socket) =>
  new Promise<void>((resolve) => {
    if (socket.readableEnded || socket.destroyed) return resolve();
    socket
      .once('end', () => resolve())
      .once('error', () => resolve())
      .once('close', () => resolve());
  });

describe('joinToTunnel idle limits (real sockets, both sides half-open capable)', () => {
  const cleanups: Array<() => void> = [];
  afterEach(() => {
    for (const cleanup of cleanups.splice(0)) cleanup();
  });

  async function joined(limits: { idleMs: number; halfClosedIdleMs: number }) {
    const user = await connectionPair();
    const guest = await connectionPair();
    cleanups.push(user.close, guest.close, () => [user.near, user.far, guest.near, guest.far].forEach((s) => s.destroy()));
    joinToTunnel(user.near, guest.far, limits);
    return { client: user.far, service: guest.near };
  }

  it('a half-open tunnel (the client ended, the service never does) is closed after its half-closed idle limit', {
    timeout: 10_000,
  }, async () => {
    const { client, service } = await joined({ idleMs: 3_600_000, halfClosedIdleMs: 200 });
    service.on('data', () => undefined);
    client.end('bye');
    await Promise.all([peerGone(client), peerGone(service)]);
  });

  it('a silent open tunnel is closed after its idle limit', { timeout: 10_000 }, async () => {
    const { client, service } = await joined({ idleMs: 200, halfClosedIdleMs: 100 });
    client.on('data', () => undefined);
    service.on('data', () => undefined);
    await Promise.all([peerGone(client), peerGone(service)]);
  });

  it('relays both ways and half-closes, and an idle limit never cuts a tunnel that carries bytes', async () => {
    const { client, service } = await joined({ idleMs: 300, halfClosedIdleMs: 300 });
    const received: string[] = [];
    service.on('data', (chunk: Buffer) => {
      received.push(chunk.toString());
      service.write(chunk); // an echo keeps it busy
    });
    let echoed = '';
    client.on('data', (chunk: Buffer) => (echoed += chunk.toString()));
    // Ten round trips, each waiting for its echo: the tunnel is never silent for long, whatever the machine's speed.
    for (let i = 0; i < 10; i++) {
      client.write(`${i};`);
      while (!echoed.includes(`${i};`)) await new Promise((resolve) => client.once('data', resolve));
    }
    expect(echoed).toBe('0;1;2;3;4;5;6;7;8;9;');
    const ended = new Promise((resolve) => service.once('end', resolve));
    client.end();
    await ended;
    service.end();
    await peerGone(client);
  });

  it('a proxied request whose service never answers (no bytes either way) is closed after the idle limit', {
    timeout: 10_000,
  }, async () => {
    const request = new PassThrough();
    const answer = new PassThrough();
    request.end('GET / HTTP/1.1\r\n\r\n'); // the request is all sent; then nothing more comes from either side
    request.resume();
    answer.resume();
    await new Promise<void>((resolve) => closeWhenIdle([request, answer], { idleMs: 200, halfClosedIdleMs: 200 }, resolve));
  });
});
