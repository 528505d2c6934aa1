// When the bytes of a host-side log were written, for `logs --since`: beside
// LOG a LOG.times file of `OFFSET EPOCH-MS` lines, a mark for the first write
// of each second, so the log itself stays exactly what its writer sent (a
// guest's console, a workload's output). Used by the console log and the
// workload service log; each rotates its log once (LOG -> LOG.1) and its index
// with it. It never reads the log, only where moments begin in it.
import fs from 'node:fs';

/**
 * Marks one index may hold: a writer trickling a byte each second must not
 * grow it without end, so past this many the log owner rotates early (about
 * 300 KiB of marks; 4.5 hours of such a trickle).
 */
export const MAX_TIME_MARKS = 16384;

function timesFile(logFile: string): string {
  return `${logFile}.times`;
}

/** The index of one log; its owner calls `mark` before each append and `rotated` after renaming LOG to LOG.1. */
export class TimeIndex {
  /** The second of the newest mark; none after opening, so a new daemon's first write marks anew. */
  private lastSecond = -1;
  private marks: number;

  constructor(private readonly logFile: string) {
    // A daemon attaching again goes on with the marks the last one wrote (at most MAX_TIME_MARKS lines, read once).
    this.marks = readText(timesFile(logFile)).split('\n').length - 1;
  }

  /** True when the owner should rotate before its next append. */
  get full(): boolean {
    return this.marks >= MAX_TIME_MARKS;
  }

  /** Notes that the bytes from `offset` on were written at `ms` (a small append, at most once a second). */
  mark(offset: number, ms: number = Date.now()): void {
    const second = Math.floor(ms / 1000);
    if (second === this.lastSecond) return;
    this.lastSecond = second;
    this.marks += 1;
    fs.appendFileSync(timesFile(this.logFile), `${offset} ${ms}\n`, { mode: 0o600 });
  }

  /** After LOG became LOG.1: the index becomes LOG.1's (an older one goes), and LOG starts with none. */
  rotated(): void {
    fs.rmSync(timesFile(`${this.logFile}.1`), { force: true });
    if (fs.existsSync(timesFile(this.logFile))) fs.renameSync(timesFile(this.logFile), timesFile(`${this.logFile}.1`));
    this.lastSecond = -1;
    this.marks = 0;
  }
}

/**
 * Where output written at `sinceMs` or later begins in LOG.1 followed by LOG
 * (`olderBytes` is LOG.1's size), to the second: from the first write of
 * `sinceMs`'s second; undefined when nothing marked is that new.
 * Output written before a log had an index has no time, and never matches.
 */
export function offsetSince(logFile: string, sinceMs: number, olderBytes: number): number | undefined {
  for (const [file, base] of [
    [`${logFile}.1`, 0],
    [logFile, olderBytes],
  ] as const) {
    for (const line of readText(timesFile(file)).split('\n')) {
      const match = /^(\d+) (\d+)$/.exec(line);
      // A mark starts each second's output: from the mark of `sinceMs`'s own second on, nothing written since is missed.
      if (match && Number(match[2]) >= Math.floor(sinceMs / 1000) * 1000) return base + Number(match[1]);
    }
  }
  return undefined;
}

/** Deletes a log's indexes (LOG's and LOG.1's). */
export function removeTimeIndex(logFile: string): void {
  fs.rmSync(timesFile(logFile), { force: true });
  fs.rmSync(timesFile(`${logFile}.1`), { force: true });
}

function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'latin1');
  } catch {
    return '';
  }
}
