// A QMP client: reads the greeting, negotiates capabilities, matches replies to
// commands by id and surfaces asynchronous events. Lines are bounded so a
// misbehaving peer cannot grow the daemon's memory.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

const MAX_LINE_BYTES = 1024 * 1024;

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export class QmpError extends Error {
  constructor(
    message: string,
    readonly errorClass?: string,
  ) {
    super(message);
    this.name = 'QmpError';
  }
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  command: string;
}

export class QmpClient extends EventEmitter<{ event: [QmpEvent]; close: [] }> {
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private greeting: ((value: Record<string, unknown>) => void) | undefined;
  private closed = false;

  private constructor(private readonly socket: net.Socket) {
    super();
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.onClose());
  }

  /** Connects, retrying while QEMU has not created its socket yet. */
  static async connect(socketPath: string, options: { timeoutMs: number; isAlive?: () => boolean }): Promise<QmpClient> {
    const deadline = Date.now() + options.timeoutMs;
    for (;;) {
      try {
        const socket = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect(socketPath);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        const client = new QmpClient(socket);
        await client.handshake(Math.max(1000, deadline - Date.now()));
        return client;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        const retryable = code === 'ENOENT' || code === 'ECONNREFUSED';
        if (!retryable || Date.now() >= deadline || options.isAlive?.() === false) throw err;
        await sleep(5);
      }
    }
  }

  private async handshake(timeoutMs: number): Promise<void> {
    const greeting = new Promise<Record<string, unknown>>((resolve) => {
      this.greeting = resolve;
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new QmpError('no QMP greeting from QEMU')), timeoutMs);
    });
    const closed = new Promise<never>((_, reject) => {
      this.once('close', () => reject(new QmpError('QEMU closed the QMP socket during the handshake')));
    });
    try {
      await Promise.race([greeting, timeout, closed]);
      await Promise.race([this.execute('qmp_capabilities'), timeout, closed]);
    } catch (err) {
      this.close();
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Runs a QMP command; rejects with the QMP error description. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closed) return Promise.reject(new QmpError(`QMP connection closed before ${command}`));
    const id = `c${this.nextId++}`;
    const message = JSON.stringify(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id });
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, command });
      this.socket.write(`${message}\n`);
    });
  }

  /** Resolves with the first event matching `predicate`, or rejects after `timeoutMs`. */
  waitForEvent(predicate: (event: QmpEvent) => boolean, timeoutMs: number, signal?: AbortSignal): Promise<QmpEvent> {
    return new Promise<QmpEvent>((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        this.off('event', onEvent);
        this.off('close', onClose);
        signal?.removeEventListener('abort', onAbort);
      };
      const onEvent = (event: QmpEvent) => {
        if (predicate(event)) {
          cleanup();
          resolve(event);
        }
      };
      const onClose = () => {
        cleanup();
        reject(new QmpError('QEMU exited'));
      };
      const onAbort = () => {
        cleanup();
        reject(signal?.reason instanceof Error ? signal.reason : new QmpError('aborted'));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new QmpError(`timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.on('event', onEvent);
      this.once('close', onClose);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (this.closed) onClose();
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    for (let newline = this.buffer.indexOf('\n'); newline >= 0; newline = this.buffer.indexOf('\n')) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (line !== '') this.onMessage(line);
    }
    if (this.buffer.length > MAX_LINE_BYTES) {
      this.socket.destroy(new QmpError('QMP message over 1 MiB'));
    }
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    if ('QMP' in msg) {
      this.greeting?.(msg);
      this.greeting = undefined;
    } else if (typeof msg.event === 'string') {
      this.emit('event', msg as unknown as QmpEvent);
    } else if (typeof msg.id === 'string') {
      const pending = this.pending.get(msg.id);
      if (!pending) return;
      this.pending.delete(msg.id);
      if ('error' in msg) {
        const error = msg.error as { class?: string; desc?: string };
        pending.reject(new QmpError(`${pending.command}: ${error.desc ?? 'QMP error'}`, error.class));
      } else {
        pending.resolve(msg.return);
      }
    }
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    for (const pending of this.pending.values()) pending.reject(new QmpError(`QEMU closed the connection during ${pending.command}`));
    this.pending.clear();
    this.emit('close');
  }
}
