// Turns a virtio-serial port's byte stream into a series of HTTP/2
// connections: the host side of the port is a unix socket that the daemon
// connects and disconnects at will, and each connection is a fresh HTTP/2
// session. A read of 0 bytes is "host not connected" (or just went away).
// Must never end a process or crash on a port error, and never write one
// session's bytes into the next.

import { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLogger, describeError, type Logger } from './log.js';

/** The port as the loop sees it: blocking reads and writes. */
export interface BlockingPort {
  /** Fills buffer; resolves 0 while the host side is not connected. */
  read(buffer: Buffer): Promise<number>;
  /** Writes all of data, or rejects (e.g. EPIPE/ENODEV while the host is away). */
  write(data: Uint8Array): Promise<void>;
}

/**
 * One host connection as a Duplex for `http2Server.emit('connection', ...)`.
 * Writes go straight to the port; once the connection is over they are
 * dropped, so a late write of an old session cannot reach a new host.
 */
export class PortConnectionStream extends Duplex {
  private connected = true;
  private readWanted = true;
  private onReadWanted: (() => void) | undefined;
  private lastWrite: Promise<void> = Promise.resolve();
  private writeInFlight = false;
  private writeFailureLogged = false;

  constructor(
    private readonly port: BlockingPort,
    private readonly log: Logger,
  ) {
    super({ allowHalfOpen: false });
  }

  get isConnected(): boolean {
    return this.connected && !this.destroyed;
  }

  override _read(): void {
    this.readWanted = true;
    this.onReadWanted?.();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.writeToPort(chunk, callback);
  }

  // HTTP/2 emits many small frames; one port write (one threadpool round
  // trip, one virtqueue buffer) for all of them is much cheaper.
  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (error?: Error | null) => void): void {
    this.writeToPort(chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map(({ chunk }) => chunk)), callback);
  }

  private writeToPort(data: Buffer, callback: (error?: Error | null) => void): void {
    if (!this.isConnected) {
      callback();
      return;
    }
    this.writeInFlight = true;
    this.lastWrite = this.port.write(data).then(
      () => {
        this.writeInFlight = false;
        callback();
      },
      (error: unknown) => {
        this.writeInFlight = false;
        // The host may vanish mid-write; the read side notices and ends the
        // session. Report once, drop the bytes, never fail the stream.
        if (!this.writeFailureLogged) this.log.warn(`write to port failed, dropping output: ${describeError(error)}`);
        this.writeFailureLogged = true;
        callback();
      },
    );
  }

  override _final(callback: (error?: Error | null) => void): void {
    // A port cannot be half-closed; the host ends the connection.
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.connected = false;
    this.onReadWanted?.();
    callback(error);
  }

  /** Hands bytes from the host to the session; resolves when it wants more. */
  async deliver(data: Buffer): Promise<void> {
    if (!this.isConnected) return; // session already dead: discard until the host reconnects
    this.readWanted = false;
    if (this.push(data)) return;
    await new Promise<void>((resolve) => {
      if (this.readWanted || !this.isConnected) {
        resolve();
        return;
      }
      this.onReadWanted = () => {
        this.onReadWanted = undefined;
        resolve();
      };
    });
  }

  /**
   * The host went away: end the session; resolves once no write is in flight.
   * The virtio console driver blocks writes while no host is connected, so a
   * write caught by the disconnect completes only when the next host
   * connects, and its bytes (at most one write) reach that host first.
   */
  async hostDisconnected(): Promise<void> {
    this.connected = false;
    this.destroy();
    if (this.writeInFlight) {
      this.log.warn('a write was in flight when the host left; the next host connection may start with its stale bytes');
    }
    await this.lastWrite;
  }
}

export interface PortSessionLoopOptions {
  port: BlockingPort;
  /** Receives each new host connection (typically `server.emit('connection', stream)`). */
  onSession: (stream: PortConnectionStream) => void;
  /** How often to look for a host while none is connected. */
  pollIntervalMs?: number;
  readBufferBytes?: number;
  /** Pause after a failed read, so a broken port does not spin. */
  errorBackoffMs?: number;
  /** Stops the loop after the read in progress returns. */
  signal?: AbortSignal;
  log?: Logger;
}

/** What every HTTP/2 client sends first (RFC 9113, section 3.4). */
export const HTTP2_CLIENT_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/**
 * Where a new host connection starts in `chunk`, or -1. If the host
 * disconnects and reconnects between two of our reads, no read returns 0:
 * the new client's preface is the only sign. A live session only looks at
 * the start of a read (the preface cannot begin mid-frame there in
 * practice); a dead one, which discards everything anyway, looks anywhere.
 */
export function newConnectionOffset(chunk: Buffer, sessionAlive: boolean): number {
  if (sessionAlive) return chunk.subarray(0, HTTP2_CLIENT_PREFACE.length).equals(HTTP2_CLIENT_PREFACE) ? 0 : -1;
  return chunk.indexOf(HTTP2_CLIENT_PREFACE);
}

export async function runPortSessions(options: PortSessionLoopOptions): Promise<void> {
  const { port, onSession, signal } = options;
  const pollIntervalMs = options.pollIntervalMs ?? 10;
  const errorBackoffMs = options.errorBackoffMs ?? 100;
  const log = options.log ?? createLogger('port');
  const buffer = Buffer.allocUnsafe(options.readBufferBytes ?? 64 * 1024);
  let connections = 0;
  let lastReadError = '';
  let stream: PortConnectionStream | undefined;

  const readPort = async (): Promise<number | undefined> => {
    try {
      const count = await port.read(buffer);
      lastReadError = '';
      return count;
    } catch (error) {
      const message = describeError(error);
      if (message !== lastReadError) log.warn(`read from port failed: ${message}`);
      lastReadError = message;
      return undefined;
    }
  };

  const endSession = async (why: string): Promise<void> => {
    if (!stream) return;
    log.info(`host connection ${connections} ended: ${why}`);
    const ending = stream;
    stream = undefined;
    await ending.hostDisconnected();
  };

  const startSession = async (firstBytes: Buffer): Promise<void> => {
    connections += 1;
    log.info(`host connected (connection ${connections})`);
    const started = new PortConnectionStream(port, log);
    stream = started;
    try {
      onSession(started);
    } catch (error) {
      log.error('could not start a session for the host connection', error);
    }
    await started.deliver(firstBytes);
  };

  while (!signal?.aborted) {
    const count = await readPort();
    if (count === undefined) {
      await endSession('read failed');
      await sleep(errorBackoffMs);
      continue;
    }
    if (count === 0) {
      // EOF: no host (poll for one), or the host just went away.
      if (stream) await endSession('host disconnected');
      else await sleep(pollIntervalMs);
      continue;
    }
    // Copied: `buffer` is reused by the next read while these bytes may still
    // be queued in the stream.
    const chunk = Buffer.from(buffer.subarray(0, count));
    if (!stream) {
      await startSession(chunk);
      continue;
    }
    const offset = newConnectionOffset(chunk, stream.isConnected);
    if (offset === -1) {
      await stream.deliver(chunk); // dropped if the server already gave up on this session
      continue;
    }
    await endSession('a new connection began without an EOF in between');
    await startSession(chunk.subarray(offset));
  }
  await endSession('agent stopping');
}
