// A workload's service output on the host: one file per workload under the
// state folder, written as the command's output arrives, rotated once at a
// size cap (the current file and one older), so it survives VM and daemon
// restarts and never grows without bound. Beside it, a time index
// (time-index.ts) says when each second's output began, for `--since`; the
// output itself is kept as the service wrote it. It never reads the guest itself.
import fs from 'node:fs';
import path from 'node:path';
import { offsetSince, TimeIndex } from '../time-index.js';

/** The current file rotates to `.1` (replacing the older one) past this size. */
export const SERVICE_LOG_MAX_BYTES = 2 * 1024 * 1024;
/** A read returns at most this much (the end of what was asked). */
const MAX_READ_BYTES = 4 * 1024 * 1024;

export class ServiceLog {
  readonly file: string;
  private readonly times: TimeIndex;

  constructor(
    dir: string,
    private readonly maxBytes = SERVICE_LOG_MAX_BYTES,
    private readonly now: () => number = Date.now,
  ) {
    this.file = path.join(dir, 'service.log');
    this.times = new TimeIndex(this.file);
  }

  /**
   * Appends output (or a line of the reconciler's own, such as a restart),
   * marks its time in the index, and rotates both past the cap (or the
   * index's own).
   */
  append(data: Buffer | string): void {
    fs.mkdirSync(path.dirname(this.file), { recursive: true, mode: 0o700 });
    fs.appendFileSync(this.file, data, { mode: 0o600 });
    // One stat an append: where this output began is the size now less its own length.
    const size = fileSize(this.file);
    this.times.mark(size - Buffer.byteLength(data), this.now());
    if (size > this.maxBytes || this.times.full) {
      fs.renameSync(this.file, `${this.file}.1`);
      this.times.rotated();
    }
  }

  /** Marks an event of the service in its log, as a line of its own. */
  note(message: string): void {
    this.append(`[capsule ${new Date().toISOString()}] ${message}\n`);
  }

  /**
   * The log from byte `offset` of the current file (the older file first when
   * reading from 0), or from the first line written at `sinceMs` or later
   * (output written before the time index existed has no time, and is left
   * out), then its last `tail` lines; `next` is the offset to read from next
   * time. An offset past the end means the file rotated: read from 0.
   */
  read(options: { offset?: number | undefined; tail?: number | undefined; sinceMs?: number | undefined }): { data: Buffer; next: number } {
    const current = readOrEmpty(this.file);
    let offset = options.offset ?? 0;
    if (offset > current.length) offset = 0;
    let data: Buffer;
    if (options.offset !== undefined) data = current.subarray(offset);
    else {
      const older = readOrEmpty(`${this.file}.1`);
      data = Buffer.concat([older, current]);
      if (options.sinceMs !== undefined) {
        const start = offsetSince(this.file, options.sinceMs, older.length) ?? data.length;
        // From the start of the line that output began in.
        data = data.subarray(start > 0 ? data.lastIndexOf(0x0a, start - 1) + 1 : 0);
      }
    }
    if (options.tail !== undefined) data = lastLines(data, options.tail);
    if (data.length > MAX_READ_BYTES) data = data.subarray(data.length - MAX_READ_BYTES);
    return { data, next: current.length };
  }

  remove(): void {
    fs.rmSync(path.dirname(this.file), { recursive: true, force: true });
  }
}

function fileSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

function readOrEmpty(file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch {
    return Buffer.alloc(0);
  }
}

/** The last `count` lines of `data` (a final line without its newline counts). */
export function lastLines(data: Buffer, count: number): Buffer {
  if (count === 0) return Buffer.alloc(0);
  let end = data.length;
  if (end > 0 && data[end - 1] === 0x0a) end--;
  let start = end;
  for (let seen = 0; start > 0; ) {
    const newline = data.lastIndexOf(0x0a, start - 1);
    if (newline < 0) {
      start = 0;
      break;
    }
    if (++seen === count) {
      start = newline + 1;
      break;
    }
    start = newline;
  }
  return data.subarray(start);
}
