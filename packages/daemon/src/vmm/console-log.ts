// Captures a VM's serial console into a size-bounded log: the live file is
// rotated to `.1` once it passes the limit, so at most twice the limit is kept.
// The guest is hostile: its console is read one chunk at a time, written off
// the event loop (libuv's pool), and no faster than a fixed rate; past it the
// daemon stops reading and QEMU holds the guest's UART (the guest slows
// itself, never the daemon). While no daemon is attached QEMU drops console
// output instead of blocking. Never buffer more than one chunk per VM here.
// A time index beside it (time-index.ts) says when each second's output began,
// for `logs --since`, without the guest's text changing.
import fs from 'node:fs';
import net from 'node:net';
import { offsetSince, removeTimeIndex, TimeIndex } from '../time-index.js';

export const CONSOLE_LOG_LIMIT_BYTES = 1024 * 1024;
/** Console bytes a guest may have logged per second; a boot writes a few KiB, so only a flood ever waits. */
export const CONSOLE_BYTES_PER_SECOND = 256 * 1024;

export class ConsoleLog {
  private socket: net.Socket | undefined;
  private fd: number | undefined;
  private size = 0;
  private readonly times: TimeIndex;
  private windowStart = 0;
  private windowBytes = 0;
  private resumeTimer: NodeJS.Timeout | undefined;
  private writing = false;
  /** Resolves when the chunk in the pool is written (or at once). */
  private written: Promise<void> = Promise.resolve();
  /** Set by finish: the VM is gone, so its last bytes are read without the rate limit. */
  private draining = false;

  constructor(
    private readonly socketPath: string,
    private readonly logFile: string,
    private readonly limitBytes = CONSOLE_LOG_LIMIT_BYTES,
    private readonly bytesPerSecond = CONSOLE_BYTES_PER_SECOND,
  ) {
    this.times = new TimeIndex(logFile);
  }

  attach(): void {
    this.openLog();
    const socket = net.connect(this.socketPath);
    socket.on('data', (chunk: Buffer) => this.take(socket, chunk));
    socket.on('error', () => socket.destroy());
    this.socket = socket;
  }

  /**
   * For a VM that has exited: reads what it wrote last (a failing boot's
   * reason) up to the end of its console, at full speed, for at most
   * `timeoutMs`, then detaches. A plain detach would drop what sat unread.
   */
  async finish(timeoutMs = 1000): Promise<void> {
    const socket = this.socket;
    if (socket && !socket.destroyed) {
      this.draining = true;
      clearTimeout(this.resumeTimer);
      if (!this.writing) socket.resume();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, timeoutMs);
        socket.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
      });
      // The last chunk may still be in the pool when the socket closes.
      await this.written;
    }
    this.detach();
  }

  detach(): void {
    clearTimeout(this.resumeTimer);
    this.socket?.destroy();
    this.socket = undefined;
    // A write still in the pool closes the file when it is done (see take).
    if (this.fd !== undefined && !this.writing) fs.closeSync(this.fd);
    this.fd = undefined;
  }

  private openLog(): void {
    this.fd = fs.openSync(this.logFile, 'a', 0o600);
    this.size = fs.fstatSync(this.fd).size;
  }

  /** Writes one chunk with reading paused, then reads on at once or, past the rate, when the second is over. */
  private take(socket: net.Socket, data: Buffer): void {
    if (this.fd === undefined) return;
    socket.pause();
    // A single chunk larger than the limit keeps only its newest bytes.
    const chunk = data.length > this.limitBytes ? data.subarray(data.length - this.limitBytes) : data;
    if (this.size + chunk.length > this.limitBytes || this.times.full) this.rotate();
    this.times.mark(this.size);
    const fd = this.fd;
    this.size += chunk.length;
    this.writing = true;
    let done = () => {};
    this.written = new Promise<void>((resolve) => (done = resolve));
    fs.write(fd, chunk, (err) => {
      this.writing = false;
      done();
      if (this.fd !== fd) {
        // Detached meanwhile.
        fs.close(fd, () => undefined);
        return;
      }
      if (err) return void socket.destroy();
      this.resumeWithinRate(socket, chunk.length);
    });
  }

  private rotate(): void {
    // Only called between writes (reading is paused while one is in the pool).
    if (this.fd !== undefined) fs.closeSync(this.fd);
    fs.renameSync(this.logFile, `${this.logFile}.1`);
    this.times.rotated();
    this.openLog();
  }

  private resumeWithinRate(socket: net.Socket, written: number): void {
    const now = Date.now();
    if (now - this.windowStart >= 1000) {
      this.windowStart = now;
      this.windowBytes = 0;
    }
    this.windowBytes += written;
    if (this.draining || this.windowBytes < this.bytesPerSecond) return void socket.resume();
    this.resumeTimer = setTimeout(() => socket.resume(), this.windowStart + 1000 - now);
    this.resumeTimer.unref();
  }
}

/** Deletes a console log: the live and the rotated file and their time indexes. */
export function removeConsoleLog(logFile: string): void {
  fs.rmSync(logFile, { force: true });
  fs.rmSync(`${logFile}.1`, { force: true });
  removeTimeIndex(logFile);
}

/**
 * The last `maxBytes` of the console, across the rotated and the live file;
 * with `sinceMs`, only what was written from then on (to the second).
 */
export function readConsoleLog(logFile: string, maxBytes = CONSOLE_LOG_LIMIT_BYTES, sinceMs?: number): Buffer {
  const older = readOrEmpty(`${logFile}.1`);
  let all = Buffer.concat([older, readOrEmpty(logFile)]);
  if (sinceMs !== undefined) all = all.subarray(offsetSince(logFile, sinceMs, older.length) ?? all.length);
  return all.length > maxBytes ? all.subarray(all.length - maxBytes) : all;
}

function readOrEmpty(file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch {
    return Buffer.alloc(0); // Not written yet.
  }
}
