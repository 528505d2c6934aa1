// The daemon's agent client against hostile stand-in guests (raw sockets that
// send garbage or nothing): it must fail the call, never the daemon.
import fs from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AgentClient, cancelAgentStream } from './client.js';

const servers: net.Server[] = [];
afterEach(() => {
  for (const server of servers.splice(0)) server.close();
});

async function standInGuest(onConnection: (socket: net.Socket) => void): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agent-client-'));
  const socketPath = path.join(dir, 'agent.sock');
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    onConnection(socket);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return socketPath;
}

describe('agent client with a hostile stand-in guest', () => {
  it('fails a health check against garbage and survives closing afterwards', async () => {
    // A stray HTTP/2 DATA frame where the server preface should be.
    const socketPath = await standInGuest((s) => s.write(Buffer.from([0, 0, 7, 0, 0, 0, 0, 0, 3, 2, 0, 0, 0, 2, 123, 125])));
    const agent = new AgentClient(socketPath);
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown) => uncaught.push(err);
    process.on('uncaughtException', onUncaught);
    try {
      await expect(agent.health(2000)).rejects.toThrow();
      agent.close();
      await new Promise((r) => setTimeout(r, 300));
      expect(uncaught).toEqual([]);
    } finally {
      process.off('uncaughtException', onUncaught);
    }
  });

  it('times out a health check against a guest that never answers', async () => {
    const socketPath = await standInGuest(() => undefined);
    const agent = new AgentClient(socketPath);
    const started = Date.now();
    await expect(agent.health(300)).rejects.toThrow(/timed out/);
    expect(Date.now() - started).toBeLessThan(5000);
    agent.close();
  });

  it('survives a guest that breaks a working session (the restore case), on the next call and on close', async () => {
    // A real HTTP/2 agent for /health; then the raw connection turns to garbage.
    const agentServer = http2.createServer((_req, res) => res.writeHead(204).end());
    const raw: net.Socket[] = [];
    const socketPath = await standInGuest((s) => {
      raw.push(s);
      agentServer.emit('connection', s);
    });
    const agent = new AgentClient(socketPath);
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown) => uncaught.push(err);
    process.on('uncaughtException', onUncaught);
    try {
      await agent.health(2000);
      for (const s of raw) s.write(Buffer.alloc(64, 0xff));
      await expect(agent.init({}, 2000)).rejects.toThrow();
      agent.close();
      await new Promise((r) => setTimeout(r, 300));
      expect(uncaught).toEqual([]);
    } finally {
      process.off('uncaughtException', onUncaught);
      agentServer.close();
    }
  });
});

describe('cancelling an agent stream (stand-in guest)', () => {
  // An upload the daemon gives up on (its client left) while the guest is not reading it: the reset must
  // reach nghttp2 before Node lets go of the stream, or Node 20 can loop forever on the stream's queued body.
  const guestThatNeverReads = async () => {
    const opened = deferred<string>();
    const reset = new Promise<number>((resolve) => {
      const agentServer = http2.createServer();
      agentServer.on('stream', (stream) => stream.once('close', () => resolve(stream.rstCode)));
      servers.push(agentServer as unknown as net.Server);
      void standInGuest((s) => agentServer.emit('connection', s)).then((socketPath) => opened.resolve(socketPath));
    });
    return { agent: new AgentClient(await opened.promise), reset };
  };

  for (const how of ['cancelAgentStream', 'destroy() by the code it was handed to'] as const) {
    it(`a client that leaves mid-upload resets the agent stream with CANCEL, then Node lets go of it (${how})`, async () => {
      const { agent, reset } = await guestThatNeverReads();
      try {
        const stream = await agent.openStream('POST', '/files?path=/tmp/x', { 'content-type': 'application/octet-stream' });
        stream.write(Buffer.alloc(256 * 1024)); // more than the guest's window: writes stay queued
        if (how === 'cancelAgentStream') cancelAgentStream(stream);
        else stream.destroy(new Error('the client left'));
        expect(stream.closed).toBe(true);
        expect(await reset).toBe(http2.constants.NGHTTP2_CANCEL);
        await new Promise((resolve) => (stream.destroyed ? resolve(undefined) : stream.once('close', resolve)));
        expect(stream.destroyed).toBe(true);
      } finally {
        agent.close();
      }
    });
  }
});

function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}
