// The virtio-serial session loop, against a simulated port (no VM here):
// sessions per host connection, EOF handling, dropped writes, and the whole
// agent server surviving host reconnects with its processes.
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { createClient } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildAgent } from '../test/agent-fixture.js';
import { FakeVirtioPort } from '../test/fake-virtio-port.js';
import { AgentDefaults } from './agent-defaults.js';
import {
  HTTP2_CLIENT_PREFACE,
  joinReads,
  newConnectionOffset,
  runPortSessions,
  type BlockingPort,
  type PortConnectionStream,
} from './port-session-loop.js';

const quietLog = { info() {}, warn() {}, error() {}, debug() {} };
const stops: AbortController[] = [];

afterEach(() => {
  for (const stop of stops.splice(0)) stop.abort();
});

function startLoop(port: FakeVirtioPort, onSession: (stream: PortConnectionStream) => void) {
  const stop = new AbortController();
  stops.push(stop);
  const done = runPortSessions({ port, onSession, pollIntervalMs: 5, errorBackoffMs: 5, signal: stop.signal, log: quietLog });
  return { stop, done };
}

async function waitFor(condition: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

function received(stream: Duplex): Buffer[] {
  const chunks: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => chunks.push(chunk));
  return chunks;
}

describe('runPortSessions with a simulated virtio port', () => {
  it('polls without starting a session while no host is connected', async () => {
    const port = new FakeVirtioPort();
    const sessions: PortConnectionStream[] = [];
    startLoop(port, (stream) => sessions.push(stream));
    await sleep(100);
    expect(sessions).toHaveLength(0);
    // Polling every 5 ms: a handful of empty reads, not a busy loop.
    expect(port.emptyReads).toBeGreaterThan(3);
    expect(port.emptyReads).toBeLessThan(60);
  });

  it('starts a session per host connection, with the first bytes first, and ends it on EOF', async () => {
    const port = new FakeVirtioPort();
    const sessions: PortConnectionStream[] = [];
    const seen: Buffer[][] = [];
    startLoop(port, (stream) => {
      sessions.push(stream);
      seen.push(received(stream));
    });

    const host1 = port.connectHost();
    host1.write('preface-1');
    await waitFor(() => sessions.length === 1 && seen[0]!.length > 0, 'first session');
    host1.write('more-1');
    await waitFor(() => Buffer.concat(seen[0]!).toString() === 'preface-1more-1', 'second chunk');

    // The guest answers on the session; the host receives it.
    const toHost1 = received(host1);
    sessions[0]!.write('reply-1');
    await waitFor(() => Buffer.concat(toHost1).toString() === 'reply-1', 'reply on host 1');

    port.disconnectHost();
    await waitFor(() => sessions[0]!.destroyed, 'first session to end');
    // Writes of the dead session are dropped, not errors, and never reach a later host.
    sessions[0]!.write('late-1');
    await sleep(20);
    expect(sessions[0]!.errored).toBeNull();

    const host2 = port.connectHost();
    const toHost2 = received(host2);
    host2.write('preface-2');
    await waitFor(() => sessions.length === 2 && seen[1]!.length > 0, 'second session');
    expect(Buffer.concat(seen[1]!).toString()).toBe('preface-2');
    sessions[1]!.write('reply-2');
    await waitFor(() => Buffer.concat(toHost2).toString() === 'reply-2', 'reply on host 2');
    expect(Buffer.concat(port.writtenPerHost[1]!).toString()).toBe('reply-2');
  });

  it('hands a batch of reads over as one push, keeping EOFs and new prefaces between reads apart', async () => {
    const preface = HTTP2_CLIENT_PREFACE.toString('latin1');
    const batches = [
      // Session 1 in three reads; EOF; session 2 whose host reconnected without an EOF into session 3.
      [`${preface}a`, 'b', 'c', '', `${preface}x`, 'y', `${preface}z`].map((read) => Buffer.from(read, 'latin1')),
    ];
    const port: BlockingPort = {
      async readBatch() {
        const next = batches.shift();
        if (next) return next;
        await sleep(5);
        return [Buffer.alloc(0)];
      },
      async write() {},
    };
    const stop = new AbortController();
    stops.push(stop);
    const sessions: PortConnectionStream[] = [];
    const seen: Buffer[][] = [];
    void runPortSessions({
      port,
      onSession: (stream) => (sessions.push(stream), seen.push(received(stream))),
      pollIntervalMs: 5,
      signal: stop.signal,
      log: quietLog,
    });
    await waitFor(() => sessions.length === 3 && sessions[2]!.destroyed, 'three sessions, all ended');
    expect(seen.map((chunks) => chunks.map((chunk) => chunk.toString('latin1')))).toEqual([
      [`${preface}abc`],
      [`${preface}xy`],
      [`${preface}z`],
    ]);
  });

  it('joins adjacent views of one buffer without a copy, and copies anything else', () => {
    const batch = Buffer.alloc(6); // its own ArrayBuffer, not a slice of the shared pool
    batch.write('abcdef');
    const adjacent = joinReads([batch.subarray(0, 2), batch.subarray(2, 5)], 5);
    expect(adjacent.toString()).toBe('abcde');
    expect(adjacent.buffer).toBe(batch.buffer);
    const apart = joinReads([batch.subarray(0, 2), batch.subarray(3, 5)], 4);
    expect(apart.toString()).toBe('abde');
    expect(apart.buffer).not.toBe(batch.buffer);
    expect(joinReads([Buffer.from('x'), Buffer.from('y')], 2).toString()).toBe('xy');
  });

  it('drops writes that fail because the host went away, without erroring the session', async () => {
    const port = new FakeVirtioPort();
    const sessions: PortConnectionStream[] = [];
    startLoop(port, (stream) => sessions.push(stream));
    const host = port.connectHost();
    host.write('hello');
    await waitFor(() => sessions.length === 1, 'session');
    const session = sessions[0]!;
    // The write is in flight when the host disappears (the fake fails it).
    session.write('into the void');
    port.disconnectHost();
    await waitFor(() => port.failedWrites > 0 || session.destroyed, 'write to fail or session to end');
    await sleep(20);
    expect(session.errored).toBeNull();
  });

  it('survives a write that blocks until the next host (the kernel driver does that), whose bytes then come first', async () => {
    const port = new FakeVirtioPort('block');
    const sessions: PortConnectionStream[] = [];
    startLoop(port, (stream) => sessions.push(stream));
    const host1 = port.connectHost();
    host1.write('hello');
    await waitFor(() => sessions.length === 1, 'first session');
    port.disconnectHost();
    sessions[0]!.write('stale'); // caught by the disconnect: blocks in the "kernel"
    await sleep(20);
    const host2 = port.connectHost();
    const toHost2 = received(host2);
    host2.write('preface-2');
    await waitFor(() => sessions.length === 2, 'second session');
    sessions[1]!.write('fresh');
    await waitFor(() => Buffer.concat(toHost2).toString() === 'stalefresh', 'bytes on host 2');
    sessions[0]!.write('dropped'); // written after the session ended: never sent
    await sleep(20);
    expect(Buffer.concat(toHost2).toString()).toBe('stalefresh');
  });

  it('discards what a session the server gave up on receives, until the host reconnects', async () => {
    const port = new FakeVirtioPort();
    const sessions: PortConnectionStream[] = [];
    const seen: Buffer[][] = [];
    startLoop(port, (stream) => {
      sessions.push(stream);
      seen.push(received(stream));
      if (sessions.length === 1) stream.destroy(); // what the HTTP/2 server does with a bad preface
    });
    const host1 = port.connectHost();
    host1.write('garbage');
    await waitFor(() => sessions.length === 1, 'first session');
    host1.write('more garbage is read and discarded');
    await sleep(20);
    expect(sessions).toHaveLength(1);
    port.disconnectHost();
    const emptyReadsBefore = port.emptyReads;
    await waitFor(() => port.emptyReads > emptyReadsBefore, 'the loop to see no host');
    const host2 = port.connectHost();
    host2.write('fresh');
    await waitFor(() => sessions.length === 2 && seen[1]!.length > 0, 'a new session after reconnect');
    expect(Buffer.concat(seen[1]!).toString()).toBe('fresh');
  });

  it('starts a new session when a new HTTP/2 preface arrives without an EOF in between', async () => {
    const port = new FakeVirtioPort();
    const sessions: PortConnectionStream[] = [];
    const seen: Buffer[][] = [];
    startLoop(port, (stream) => {
      sessions.push(stream);
      seen.push(received(stream));
    });
    const host1 = port.connectHost();
    host1.write(Buffer.concat([HTTP2_CLIENT_PREFACE, Buffer.from('first')]));
    await waitFor(() => sessions.length === 1 && seen[0]!.length > 0, 'first session');
    // Disconnect and reconnect before the loop's next read returns.
    port.disconnectHost();
    const host2 = port.connectHost();
    host2.write(Buffer.concat([HTTP2_CLIENT_PREFACE, Buffer.from('second')]));
    await waitFor(() => sessions.length === 2 && seen[1]!.length > 0, 'second session');
    expect(sessions[0]!.destroyed).toBe(true);
    expect(Buffer.concat(seen[1]!).subarray(HTTP2_CLIENT_PREFACE.length).toString()).toBe('second');
  });

  it('finds a new preface anywhere in a read once the session is dead, and only at the start while alive', () => {
    const withLeftovers = Buffer.concat([Buffer.from('old tail'), HTTP2_CLIENT_PREFACE, Buffer.from('x')]);
    expect(newConnectionOffset(withLeftovers, false)).toBe(8);
    expect(newConnectionOffset(withLeftovers, true)).toBe(-1);
    expect(newConnectionOffset(Buffer.concat([HTTP2_CLIENT_PREFACE, Buffer.from('x')]), true)).toBe(0);
    expect(newConnectionOffset(Buffer.from('frames'), false)).toBe(-1);
  });
});

describe('the agent server behind a simulated virtio port', () => {
  let modules: {
    server: typeof import('./server.js');
    processService: typeof import('./process-service.js');
    protocol: typeof import('@capsule/protocol/agent');
  };

  beforeAll(async () => {
    await buildAgent(); // @capsule/protocol/agent resolves to its built dist
    modules = {
      server: await import('./server.js'),
      processService: await import('./process-service.js'),
      protocol: await import('@capsule/protocol/agent'),
    };
  }, 120_000);

  /** An agent server behind a simulated port, and a way to connect a fresh host (a new client) to it. */
  async function serverBehindPort(port: FakeVirtioPort) {
    const table = new modules.processService.ProcessTable();
    const server = modules.server.createAgentServer({
      processService: modules.processService.createProcessService(table, {
        defaults: new AgentDefaults((await import('node:os')).userInfo().username),
      }),
    });
    startLoop(port, (stream) => server.emit('connection', stream));
    const connectHost = () =>
      createClient(
        modules.protocol.Process,
        createConnectTransport({
          httpVersion: '2',
          baseUrl: 'http://agent',
          nodeOptions: { createConnection: () => port.connectHost() as unknown as net.Socket },
        }),
      );
    return { table, server, connectHost };
  }

  it('serves a new HTTP/2 connection after each host reconnect, and processes survive', async () => {
    const { Signal } = modules.protocol;
    const port = new FakeVirtioPort();
    const { table, server, connectHost: clientOverHost } = await serverBehindPort(port);

    try {
      const first = clientOverHost();
      const tag = `background-${Date.now()}`;
      const stream = first.start({ process: { cmd: 'sleep', args: ['30'] }, tag })[Symbol.asyncIterator]();
      const started = await stream.next();
      expect(started.value?.event?.event.case).toBe('start');

      // The daemon goes away (restart, kill -9): the agent sees EOF.
      port.disconnectHost();
      await expect(stream.next()).rejects.toThrow();

      const second = clientOverHost();
      const listed = await second.list({});
      expect(listed.processes.map((info) => info.tag)).toContain(tag);
      const ending = (async () => {
        const events: string[] = [];
        for await (const response of second.connect({ process: { selector: { case: 'tag', value: tag } } })) {
          events.push(response.event?.event.case ?? 'none');
          if (response.event?.event.case === 'end') events.push(response.event.event.value.status);
        }
        return events;
      })();
      await sleep(50);
      await second.sendSignal({ process: { selector: { case: 'tag', value: tag } }, signal: Signal.SIGKILL });
      expect(await ending).toEqual(['start', 'end', 'signal: killed']);
      port.disconnectHost();
    } finally {
      table.signalAll('SIGKILL');
      server.close();
    }
  }, 30_000);

  it('serves a new host after a restore from a snapshot taken while a host was connected (no EOF ever comes)', async () => {
    const { Signal } = modules.protocol;
    const port = new FakeVirtioPort('block');
    const { table, server, connectHost: clientOverHost } = await serverBehindPort(port);
    try {
      const tag = `snapshotted-${Date.now()}`;
      // The old session keeps writing (keepalives every second) into the void after the "restore".
      const stream = clientOverHost()
        .start({ process: { cmd: 'sleep', args: ['30'] }, tag }, { headers: { 'keepalive-ping-interval': '1' } })
        [Symbol.asyncIterator]();
      expect((await stream.next()).value?.event?.event.case).toBe('start');
      port.forgetHostWithoutEof();
      await sleep(1300);

      const restored = clientOverHost();
      expect((await restored.list({})).processes.map((info) => info.tag)).toContain(tag);
      await restored.sendSignal({ process: { selector: { case: 'tag', value: tag } }, signal: Signal.SIGKILL });
      port.disconnectHost();
    } finally {
      table.signalAll('SIGKILL');
      server.close();
    }
  }, 20_000);

  it('releases a dropped stream, so its process is not held back by a reader that is gone', async () => {
    const port = new FakeVirtioPort();
    const { table, server, connectHost: client } = await serverBehindPort(port);
    try {
      const tag = `chatty-${Date.now()}`;
      // Writes 4 MB after the first stream is gone: more than one reader may
      // hold, so a leaked subscription would pause it forever.
      const stream = client()
        .start({ process: { cmd: '/bin/sh', args: ['-c', 'sleep 0.3; head -c 4000000 /dev/zero; sleep 0.3'] }, tag })
        [Symbol.asyncIterator]();
      expect((await stream.next()).value?.event?.event.case).toBe('start');
      port.disconnectHost();
      await expect(stream.next()).rejects.toThrow();

      let ended: string | undefined;
      for await (const response of client().connect({ process: { selector: { case: 'tag', value: tag } } })) {
        if (response.event?.event.case === 'end') ended = response.event.event.value.status;
      }
      expect(ended).toBe('exit status 0');
      port.disconnectHost();
    } finally {
      table.signalAll('SIGKILL');
      server.close();
    }
  }, 20_000);
});
