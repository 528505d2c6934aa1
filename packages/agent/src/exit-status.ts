// How a process ended, told the way envd (Go's os.ProcessState) tells it, so
// clients that parse "exit status 1" or "signal: killed" keep working.
// Pure formatting: must never touch the process itself.

import { constants } from 'node:os';
import { goSignalDescriptions } from '@capsule/protocol/agent';

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

export function describeSignal(signal: NodeJS.Signals | number): string {
  const number = typeof signal === 'number' ? signal : constants.signals[signal];
  if (number === undefined) return String(signal);
  return goSignalDescriptions[number] ?? `signal ${number}`;
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
