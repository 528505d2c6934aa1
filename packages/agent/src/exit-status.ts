// How a process ended, told the way envd (Go's os.ProcessState) tells it, so
// clients that parse "exit status 1" or "signal: killed" keep working.
// Pure formatting: must never touch the process itself.

import { constants } from 'node:os';

export interface ExitInfo {
  /** The exit code, or -1 when a signal ended the process. */
  exitCode: number;
  /** True when the process exited by itself (not by a signal). */
  exited: boolean;
  /** "exit status N" or "signal: <description>". */
  status: string;
  /** Set when the process did not succeed; the same text as `status`. */
  error?: string;
}

// Go's descriptions of the Linux signals (syscall's signal table); the
// numbers are Linux x86/arm64 ones, which is what guests run.
const signalDescriptions: Record<number, string> = {
  1: 'hangup',
  2: 'interrupt',
  3: 'quit',
  4: 'illegal instruction',
  5: 'trace/breakpoint trap',
  6: 'aborted',
  7: 'bus error',
  8: 'floating point exception',
  9: 'killed',
  10: 'user defined signal 1',
  11: 'segmentation fault',
  12: 'user defined signal 2',
  13: 'broken pipe',
  14: 'alarm clock',
  15: 'terminated',
  16: 'stack fault',
  17: 'child exited',
  18: 'continued',
  19: 'stopped (signal)',
  20: 'stopped',
  21: 'stopped (tty input)',
  22: 'stopped (tty output)',
  23: 'urgent I/O condition',
  24: 'CPU time limit exceeded',
  25: 'file size limit exceeded',
  26: 'virtual timer expired',
  27: 'profiling timer expired',
  28: 'window changed',
  29: 'I/O possible',
  30: 'power failure',
  31: 'bad system call',
};

export function describeSignal(signal: NodeJS.Signals | number): string {
  const number = typeof signal === 'number' ? signal : constants.signals[signal];
  if (number === undefined) return String(signal);
  return signalDescriptions[number] ?? `signal ${number}`;
}

export function describeExit(code: number | null, signal: NodeJS.Signals | null): ExitInfo {
  if (signal !== null) {
    const status = `signal: ${describeSignal(signal)}`;
    return { exitCode: -1, exited: false, status, error: status };
  }
  const exitCode = code ?? -1;
  const status = `exit status ${exitCode}`;
  return exitCode === 0 ? { exitCode, exited: true, status } : { exitCode, exited: true, status, error: status };
}
