// Captures a VM's serial console into a size-bounded log: the live file is
// rotated to `.1` once it passes the limit, so at most twice the limit is kept.
// The guest is hostile: its console is read one chunk at a time, written off
// the event loop (libuv's pool), and no faster than a fixed rate; past it the
// daemon stops reading and QEMU holds the guest's UART (the guest slows
// itself, never the daemon). While no daemon is attached QEMU drops console
// output instead of blocking. Never buffer more than one chunk per VM here.
// Beside each file a `.times` file marks when its bytes were written (a line
// `OFFSET MS` for the first write of each second), so that `logs --since`
// finds where a moment starts without the guest's text changing.
import fs from 'node:fs';
import net from 'node:net';

export const CONSOLE_LOG_LIMIT_BYTES = 1024 * 1024;
/** Console bytes a guest may have logged per second; a boot writes a few KiB, so only a flood ever waits. */
export const CONSOLE_BYTES_PER_SECOND = 256 * 1024;
/**
 * Time marks a file may have: a guest writing a byte every second must not
 * grow an index without end, so past this many the live file is rotated early
 * (about 300 KiB of marks; 4.5 hours of such a trickle per file).
 */
export const MAX_TIME_MARKS = 16384;

export class ConsoleLog {
  private socket: net.Socket | undefined;
  private fd: number | undefined;
  private size = 0;
  private timesFd: number | undefined;
  /** The second of the live file's newest time mark (none yet after open: the first write makes one), and how many it has. */
  private lastMarkSecond = -1;
  private marks = 0;
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
  ) {}

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
    if (this.timesFd !== undefined) fs.closeSync(this.timesFd);
    this.timesFd = undefined;
  }

  private openLog(): void {
    this.fd = fs.openSync(this.logFile, 'a', 0o600);
    this.size = fs.fstatSync(this.fd).size;
    const times = timesFile(this.logFile);
    this.timesFd = fs.openSync(times, 'a', 0o600);
    this.lastMarkSecond = -1;
    // A daemon attaching again goes on with the marks the last one wrote (at most MAX_TIME_MARKS lines, read once).
    this.marks = fs.readFileSync(times, 'latin1').split('\n').length - 1;
  }

  /** Notes that the bytes from `offset` on were written now (a small synchronous append, at most once a second). */
  private markTime(offset: number): void {
    const now = Date.now();
    const second = Math.floor(now / 1000);
    if (this.timesFd === undefined || second === this.lastMarkSecond) return;
    this.lastMarkSecond = second;
    this.marks += 1;
    fs.writeSync(this.timesFd, `${offset} ${now}\n`);
  }

  /** Writes one chunk with reading paused, then reads on at once or, past the rate, when the second is over. */
  private take(socket: net.Socket, data: Buffer): void {
    if (this.fd === undefined) return;
    socket.pause();
    // A single chunk larger than the limit keeps only its newest bytes.
    const chunk = data.length > this.limitBytes ? data.subarray(data.length - this.limitBytes) : data;
    if (this.size + chunk.length > this.limitBytes || this.marks >= MAX_TIME_MARKS) this.rotate();
    this.markTime(this.size);
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
    if (this.timesFd !== undefined) fs.closeSync(this.timesFd);
    fs.renameSync(this.logFile, `${this.logFile}.1`);
    fs.renameSync(timesFile(this.logFile), timesFile(`${this.logFile}.1`));
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

function timesFile(logFile: string): string {
  return `${logFile}.times`;
}

/** Deletes a console log: the live and the rotated file and their time marks. */
export function removeConsoleLog(logFile: string): void {
  for (const file of [logFile, `${logFile}.1`]) {
    fs.rmSync(file, { force: true });
    fs.rmSync(timesFile(file), { force: true });
  }
}

/**
 * The last `maxBytes` of the console, across the rotated and the live file;
 * with `sinceMs`, only what was written from then on (from the first time mark
 * at or after it: to the second).
 */
export function readConsoleLog(logFile: string, maxBytes = CONSOLE_LOG_LIMIT_BYTES, sinceMs?: number): Buffer {
  const parts: Buffer[] = [];
  let found = sinceMs === undefined;
  for (const file of [`${logFile}.1`, logFile]) {
    let bytes: Buffer;
    try {
      bytes = fs.readFileSync(file);
    } catch {
      continue; // Not written yet.
    }
    if (!found) {
      const offset = firstOffsetSince(file, sinceMs as number);
      if (offset === undefined) continue;
      found = true;
      bytes = bytes.subarray(Math.min(offset, bytes.length));
    }
    parts.push(bytes);
  }
  const all = Buffer.concat(parts);
  return all.length > maxBytes ? all.subarray(all.length - maxBytes) : all;
}

/** The offset of `file`'s first time mark at or after `sinceMs`; undefined when it has none (all it holds is older). */
function firstOffsetSince(file: string, sinceMs: number): number | undefined {
  let text: string;
  try {
    text = fs.readFileSync(timesFile(file), 'utf8');
  } catch {
    return undefined; // A log of a release before time marks: nothing in it can be placed in time.
  }
  for (const line of text.split('\n')) {
    const [offset, ms] = line.split(' ').map(Number);
    if (Number.isSafeInteger(offset) && Number.isSafeInteger(ms) && (ms as number) >= sinceMs) return offset;
  }
  return undefined;
}
