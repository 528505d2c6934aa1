// Captures a VM's serial console into a size-bounded log: the live file is
// rotated to `.1` once it passes the limit, so at most twice the limit is kept.
// While no daemon is attached QEMU drops console output instead of blocking.
import fs from 'node:fs';
import net from 'node:net';

export const CONSOLE_LOG_LIMIT_BYTES = 1024 * 1024;

export class ConsoleLog {
  private socket: net.Socket | undefined;
  private fd: number | undefined;
  private size = 0;

  constructor(
    private readonly socketPath: string,
    private readonly logFile: string,
    private readonly limitBytes = CONSOLE_LOG_LIMIT_BYTES,
  ) {}

  attach(): void {
    this.openLog();
    const socket = net.connect(this.socketPath);
    socket.on('data', (chunk: Buffer) => this.write(chunk));
    socket.on('error', () => socket.destroy());
    this.socket = socket;
  }

  detach(): void {
    this.socket?.destroy();
    this.socket = undefined;
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }

  private openLog(): void {
    this.fd = fs.openSync(this.logFile, 'a', 0o600);
    this.size = fs.fstatSync(this.fd).size;
  }

  private write(data: Buffer): void {
    if (this.fd === undefined) return;
    // A single chunk larger than the limit keeps only its newest bytes.
    const chunk = data.length > this.limitBytes ? data.subarray(data.length - this.limitBytes) : data;
    if (this.size + chunk.length > this.limitBytes) {
      fs.closeSync(this.fd);
      fs.renameSync(this.logFile, `${this.logFile}.1`);
      this.openLog();
    }
    fs.writeSync(this.fd, chunk);
    this.size += chunk.length;
  }
}

/** The last `maxBytes` of the console, across the rotated and the live file. */
export function readConsoleLog(logFile: string, maxBytes = CONSOLE_LOG_LIMIT_BYTES): Buffer {
  const parts: Buffer[] = [];
  for (const file of [`${logFile}.1`, logFile]) {
    try {
      parts.push(fs.readFileSync(file));
    } catch {
      // Not written yet.
    }
  }
  const all = Buffer.concat(parts);
  return all.length > maxBytes ? all.subarray(all.length - maxBytes) : all;
}
