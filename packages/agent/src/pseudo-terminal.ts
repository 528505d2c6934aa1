// A process on a pseudo-terminal. node-pty's native addon does what node
// cannot (forkpty, TIOCSWINSZ, waiting for the child); reading, writing and
// closing the master side are done here rather than by node-pty's JS wrapper,
// which either decodes output as UTF-8 or, for raw bytes, leaves IUTF8 off,
// queues input without bound and retries it in a busy loop, and closes the
// terminal 200 ms after the exit even while a slow reader holds output back.
// Must never write to or resize the master after closing it: its descriptor
// number may already belong to another file.
//
// The agent also keeps the slave side open until the process has exited and
// its output has been read: once every slave descriptor is closed, Linux may
// fail a read of the master with EIO while output is still buffered, and the
// end of a process's output would be lost. ManagedProcess lets go of it
// (releaseSlave) once the terminal is drained.

/// <reference path="./node-pty-native.d.ts" />
import { closeSync, constants as fsConstants, openSync, write } from 'node:fs';
import { constants } from 'node:os';
import { Writable } from 'node:stream';
import tty from 'node:tty';
import native from 'node-pty/build/Release/pty.node';
import { createLogger, describeError } from './log.js';
import type { TerminalSize } from './terminal-size.js';

const log = createLogger('process');

/** How often input is retried while the terminal's input queue is full (the process is not reading). */
const FULL_TERMINAL_RETRY_MS = 10;

export interface PseudoTerminalOptions {
  /** Absolute path of the executable; it is also argv[0]. */
  file: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  size: TerminalSize;
  /** The user to switch to before exec; unset: the agent's own. */
  user?: { uid: number; gid: number } | undefined;
  onExit(code: number | null, signal: NodeJS.Signals | null): void;
}

function signalName(signal: number): NodeJS.Signals | null {
  if (signal <= 0) return null;
  const entry = Object.entries(constants.signals).find(([, number]) => number === signal);
  return (entry?.[0] as NodeJS.Signals | undefined) ?? null;
}

/** Input to the terminal: a Writable (so callers get writableLength and 'drain') over the master descriptor. */
class TerminalInput extends Writable {
  private writing = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly fd: number,
    private readonly isOpen: () => boolean,
  ) {
    super({ highWaterMark: 64 * 1024 });
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.writeFrom(chunk, 0, callback);
  }

  /** Calls `listener` once no write is in flight on the descriptor. */
  whenIdle(listener: () => void): void {
    if (this.writing) this.idleWaiters.push(listener);
    else listener();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    clearTimeout(this.retryTimer);
    callback(error);
  }

  private writeFrom(chunk: Buffer, offset: number, callback: (error?: Error | null) => void): void {
    if (this.destroyed) return;
    if (!this.isOpen()) {
      callback(new Error('the terminal is closed'));
      return;
    }
    this.writing = true;
    write(this.fd, chunk, offset, chunk.length - offset, null, (error, written) => {
      this.writing = false;
      for (const listener of this.idleWaiters.splice(0)) listener();
      if (this.destroyed) return;
      if (error?.code === 'EAGAIN') {
        this.retryTimer = setTimeout(() => this.writeFrom(chunk, offset, callback), FULL_TERMINAL_RETRY_MS);
      } else if (error) {
        callback(error);
      } else if (offset + written < chunk.length) {
        this.writeFrom(chunk, offset + written, callback);
      } else {
        callback();
      }
    });
  }
}

export class PseudoTerminal {
  readonly pid: number;
  /** Everything the process writes to its terminal; closes when the terminal hangs up. */
  readonly output: tty.ReadStream;
  /** What is typed into the terminal. */
  readonly input: TerminalInput;
  private readonly fd: number;
  /** The agent's own descriptor of the slave side (see the top of this file). */
  private slaveFd: number | undefined;
  private open = true;

  /** Throws node-pty's error when forkpty fails. */
  static spawn(options: PseudoTerminalOptions): PseudoTerminal {
    if (options.user && process.getuid?.() === 0) {
      // node-pty's child calls setgid and setuid but not setgroups, so it would
      // keep the agent's supplementary groups (root's). Dropping them from the
      // agent (root needs none) gives the child none, as libuv's spawn does.
      process.setgroups?.([]);
    }
    const env = Object.entries(options.env).map(([key, value]) => `${key}=${value}`);
    const forked = native.fork(
      options.file,
      options.args,
      env,
      options.cwd,
      options.size.cols,
      options.size.rows,
      options.user?.uid ?? -1,
      options.user?.gid ?? -1,
      true,
      '', // a helper only macOS uses
      (code, signal) => {
        const name = signalName(signal);
        options.onExit(name ? null : code, name);
      },
    );
    return new PseudoTerminal(forked.fd, forked.pid, forked.pty);
  }

  private constructor(fd: number, pid: number, slavePath: string) {
    this.fd = fd;
    this.pid = pid;
    try {
      // O_NOCTTY: the agent must never take the terminal as its own.
      this.slaveFd = openSync(slavePath, fsConstants.O_RDWR | fsConstants.O_NOCTTY);
    } catch (error) {
      log.warn(`[pid=${pid}] could not hold ${slavePath} open; the end of its output may be cut: ${describeError(error)}`);
    }
    // The stream owns the descriptor: destroying it closes the master.
    this.output = new tty.ReadStream(fd);
    this.input = new TerminalInput(fd, () => this.open);
    this.output.once('close', () => {
      this.open = false;
      this.input.destroy();
      this.releaseSlave();
    });
  }

  resize(size: TerminalSize): void {
    if (this.open) native.resize(this.fd, size.cols, size.rows);
  }

  /** Hangs up: the master closes (once no write is in flight), and what still runs on the terminal gets SIGHUP and EIO. */
  close(): void {
    if (!this.open) return;
    this.open = false;
    this.releaseSlave();
    this.input.destroy();
    this.input.whenIdle(() => this.output.destroy());
  }

  /** Whether the agent still holds the slave side open. */
  get holdsSlave(): boolean {
    return this.slaveFd !== undefined;
  }

  /** Lets go of the slave side: once no process has it open either, reading the master ends. */
  releaseSlave(): void {
    if (this.slaveFd === undefined) return;
    closeSync(this.slaveFd);
    this.slaveFd = undefined;
  }
}
