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
  /**
   * The reads done since the last call, in order (at least one): each
   * non-empty Buffer is what one read(2) returned, an empty one a read of 0
   * (the host side is not connected, or just went away). Batched because a
   * virtio console read returns at most 4 KiB, and handling each one on its
   * own costs more than the channel under TCG. The Buffers are the caller's
   * to keep (never reused by the port).
   */
  readBatch(): Promise<Buffer[]>;
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

/** The reads as one buffer; without a copy when they are adjacent views of one batch (see port-reader-thread.ts). */
export function joinReads(reads: Buffer[], totalBytes: number): Buffer {
  const first = reads[0];
  if (!first) return Buffer.alloc(0);
  let end = first.byteOffset + first.length;
  for (const read of reads.slice(1)) {
    if (read.buffer !== first.buffer || read.byteOffset !== end) return Buffer.concat(reads, totalBytes);
    end += read.length;
  }
  return Buffer.from(first.buffer, first.byteOffset, totalBytes);
}

/** Bytes of consecutive reads handed to a session in one push, at most. */
const MAX_DELIVERY_BYTES = 1024 * 1024;

export async function runPortSessions(options: PortSessionLoopOptions): Promise<void> {
  const { port, onSession, signal } = options;
  const pollIntervalMs = options.pollIntervalMs ?? 10;
  const errorBackoffMs = options.errorBackoffMs ?? 100;
  const log = options.log ?? createLogger('port');
  let connections = 0;
  let lastReadError = '';
  let stream: PortConnectionStream | undefined;
  // Reads for `stream` not yet handed over: one push for many 4 KiB reads.
  let undelivered: Buffer[] = [];
  let undeliveredBytes = 0;

  const readPort = async (): Promise<Buffer[] | undefined> => {
    try {
      const reads = await port.readBatch();
      lastReadError = '';
      return reads;
    } catch (error) {
      const message = describeError(error);
      if (message !== lastReadError) log.warn(`read from port failed: ${message}`);
      lastReadError = message;
      return undefined;
    }
  };

  const deliverUndelivered = async (): Promise<void> => {
    if (undelivered.length === 0) return;
    const data = joinReads(undelivered, undeliveredBytes);
    undelivered = [];
    undeliveredBytes = 0;
    await stream?.deliver(data); // dropped if the server already gave up on this session
  };

  const endSession = async (why: string): Promise<void> => {
    await deliverUndelivered();
    if (!stream) return;
    log.info(`host connection ${connections} ended: ${why}`);
    const ending = stream;
    stream = undefined;
    await ending.hostDisconnected();
  };

  const startSession = (): void => {
    connections += 1;
    log.info(`host connected (connection ${connections})`);
    const started = new PortConnectionStream(port, log);
    stream = started;
    try {
      onSession(started);
    } catch (error) {
      log.error('could not start a session for the host connection', error);
    }
  };

  const handleRead = async (chunk: Buffer): Promise<void> => {
    if (chunk.length === 0) {
      // EOF: no host (poll for one), or the host just went away.
      if (stream) await endSession('host disconnected');
      else await sleep(pollIntervalMs);
      return;
    }
    if (!stream) {
      startSession();
    } else {
      // Checked per read, as each read begins where the host's writes may.
      const offset = newConnectionOffset(chunk, stream.isConnected);
      if (offset !== -1) {
        await endSession('a new connection began without an EOF in between');
        startSession();
        chunk = chunk.subarray(offset);
      }
    }
    undelivered.push(chunk);
    undeliveredBytes += chunk.length;
    if (undeliveredBytes >= MAX_DELIVERY_BYTES) await deliverUndelivered();
  };

  while (!signal?.aborted) {
    const reads = await readPort();
    if (reads === undefined) {
      await endSession('read failed');
      await sleep(errorBackoffMs);
      continue;
    }
    for (const chunk of reads) await handleRead(chunk);
    await deliverUndelivered();
  }
  await endSession('agent stopping');
}
